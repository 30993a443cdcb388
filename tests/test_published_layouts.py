"""Checkpoints laid out as the hub publishes them load through `load_adapter` with exactly their weights,
and a load that would leave the studied weights random is refused.

Each family's folder is rebuilt at tiny size with transformers' own classes (tests/published_layouts.py):
the whole Qwen2.5-Omni (thinker + talker + token2wav, prefixed and sharded, 4.x composite config,
`spk_dict.pt`), and Audio Flamingo 3 / Qwen2-Audio with a flat `preprocessor_config.json` and the chat
template in each place uploads keep it. The expected weights are read from the saved files and mapped to
the loaded names by the published naming written out here, not by transformers' own conversion.
"""

from __future__ import annotations

import json

import pytest
import torch
from models_tiny import PROMPT, build_af3, build_qwen2_audio, waves
from published_layouts import (TEMPLATE_PLACES, publish_processor_files, rename_weights, save_published_omni,
                               save_weights_as, saved_weights, whole_omni_config, write_4x_config)
from transformers import Qwen2_5OmniForConditionalGeneration, WhisperFeatureExtractor

from esn.models import load_adapter
from esn.models.base import study_weight_prefixes
from esn.organism import CHAT_TEMPLATE, OrganismConfig, build_model, build_tokenizer

LABELS = ["neutral", "happy", "sad", "angry"]

pytestmark = pytest.mark.usefixtures("one_thread")

#: Saved (published) name prefix -> loaded name prefix, per family: the published naming, written out.
OMNI_NAMES = [("thinker.model.", "model.language_model."), ("thinker.audio_tower.", "model.audio_tower."),
              ("thinker.visual.", "model.visual."), ("thinker.lm_head.", "lm_head.")]
PROCESSOR_FAMILY_NAMES = [("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
                          ("audio_tower.", "model.audio_tower."),
                          ("multi_modal_projector.", "model.multi_modal_projector.")]


def build_published_omni(folder, seed: int = 0):
    """A tiny whole Qwen2.5-Omni saved as Qwen/Qwen2.5-Omni-7B is published (shards of ~100 kB)."""
    cfg = OrganismConfig(prompt=PROMPT, vocab_size=300, audio_d_model=32, audio_layers=1, audio_heads=2,
                         audio_ffn=64, hidden=64, layers=2, heads=4, kv_heads=2, mlp=128)
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size)
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(whole_omni_config(build_model(cfg, tok).config))
    extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16_000, return_attention_mask=True)
    return save_published_omni(model, folder, tok, extractor, CHAT_TEMPLATE, max_shard_size="100KB")


def build_published_processor_family(family: str, folder, place: str):
    """A tiny AF3 or Qwen2-Audio folder with the published processor files and a 4.x config, sharded."""
    build = {"audio_flamingo3": build_af3, "qwen2_audio": build_qwen2_audio}[family]
    folder = build(folder)
    import transformers
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    template = processor.chat_template
    model_cls = {"audio_flamingo3": "AudioFlamingo3ForConditionalGeneration",
                 "qwen2_audio": "Qwen2AudioForConditionalGeneration"}[family]
    model = getattr(transformers, model_cls).from_pretrained(folder)
    save_weights_as(model, folder, PROCESSOR_FAMILY_NAMES)  # the published names, whatever this transformers saves
    write_4x_config(folder)
    publish_processor_files(folder, template, place, type(processor).__name__, processor.feature_extractor)
    return folder


@pytest.fixture(scope="module")
def published_omni(tmp_path_factory):
    return build_published_omni(tmp_path_factory.mktemp("omni_published"))


def mapped(saved: dict[str, torch.Tensor], names: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in saved.items():
        for old, new in names:
            if key.startswith(old):
                out[new + key[len(old):]] = value
    return out


def assert_studied_weights_equal_saved(adapter, folder, names) -> int:
    """Every weight of the studied parts equals the saved tensor of the same (published) name, cast to the
    load dtype, and every saved tensor of those parts arrived; returns how many were compared."""
    prefixes = study_weight_prefixes(adapter.model)
    expected = {k: v for k, v in mapped(saved_weights(folder), names).items() if k.startswith(tuple(prefixes))}
    loaded = {k: v for k, v in adapter.model.named_parameters() if k.startswith(tuple(prefixes))}
    assert set(loaded) == set(expected), sorted(set(loaded) ^ set(expected))[:10]
    for key, value in loaded.items():
        assert torch.equal(value.detach(), expected[key].to(value.dtype)), key
    return len(loaded)


# --- Qwen2.5-Omni: the whole model as published ---------------------------------------------------

def test_published_omni_layout_is_the_published_one(published_omni):
    """What the folder holds (the premise of the load tests below): prefixed shards with an index, a 4.x
    composite config, the talker and token2wav weights, spk_dict.pt, flat processor files."""
    files = {p.name for p in published_omni.iterdir()}
    assert {"model.safetensors.index.json", "spk_dict.pt", "chat_template.json", "preprocessor_config.json",
            "config.json"} <= files and "processor_config.json" not in files
    assert len([f for f in files if f.startswith("model-0")]) > 2
    saved = saved_weights(published_omni)
    assert {k.split(".")[0] for k in saved} == {"thinker", "talker", "token2wav"}
    config = json.loads((published_omni / "config.json").read_text())
    text = config["thinker_config"]["text_config"]
    assert config["architectures"] == ["Qwen2_5OmniModel"] and "torch_dtype" in config and "dtype" not in config
    assert text["rope_scaling"]["mrope_section"] and "rope_theta" in text and "rope_parameters" not in text
    assert "feature_size" in json.loads((published_omni / "preprocessor_config.json").read_text())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_published_omni_loads_with_its_saved_weights(published_omni, dtype, monkeypatch):
    """The thinker arrives from the whole model's shards, weight for weight, and spk_dict.pt is never
    unpickled (torch.load would raise)."""
    def no_unpickling(*args, **kwargs):
        raise AssertionError(f"torch.load called on {args[:1]}")

    monkeypatch.setattr(torch, "load", no_unpickling)
    adapter = load_adapter({"adapter": "qwen2_5_omni", "path": str(published_omni), "prompt": PROMPT, "dtype": dtype,
                            "system_prompt": ""}, LABELS)
    assert type(adapter.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert next(adapter.model.parameters()).dtype == getattr(torch, dtype)
    n = assert_studied_weights_equal_saved(adapter, published_omni, OMNI_NAMES)
    assert n > 40 and adapter.chat_template_source == "chat_template.json"
    probs = adapter.score(waves([0.6, 1.1]))
    assert probs.shape == (2, len(LABELS)) and torch.allclose(probs.float().sum(-1), torch.ones(2), atol=1e-2)


def test_renamed_thinker_prefix_is_refused(published_omni, tmp_path):
    """With the `thinker.` prefix renamed, transformers would initialise the whole thinker at random and only
    print a report; the load must fail and say which weights and which checkpoint."""
    import shutil

    folder = tmp_path / "renamed"
    shutil.copytree(published_omni, folder)
    assert rename_weights(folder, "thinker.", "brain.") > 40
    with pytest.raises(ValueError) as err:
        load_adapter({"adapter": "qwen2_5_omni", "path": str(folder), "prompt": PROMPT}, LABELS)
    message = str(err.value)
    assert str(folder) in message and "missing" in message and "random" in message
    assert "model.language_model.layers.0." in message or "model.audio_tower." in message or "lm_head.weight" in message


def test_fullsize_checkpoint_script_writes_the_published_layout(tmp_path):
    """benchmarks/make_fullsize_checkpoint.py's writer, at a tiny thinker shape: the whole model with
    `thinker.`-prefixed weights and the composite config, loaded in bf16 with its saved weights."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("make_fullsize_checkpoint", bench / "make_fullsize_checkpoint.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
    finally:
        sys.path.remove(str(bench))
    shape = {"layers": 2, "hidden": 64, "mlp": 128, "heads": 4, "kv_heads": 2, "audio_layers": 1,
             "audio_d_model": 32, "audio_heads": 2, "audio_ffn": 64}
    out = tmp_path / "fullsize"
    script.write_checkpoint(out, shape, build_tokenizer(PROMPT, 300), max_shard_size="200KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert {k.split(".")[0] for k in index["weight_map"]} == {"thinker", "talker", "token2wav"}
    assert (out / "spk_dict.pt").exists() and json.loads((out / "config.json").read_text())["thinker_config"]
    adapter = load_adapter({"adapter": "qwen2_5_omni", "path": str(out), "prompt": PROMPT, "dtype": "bfloat16"}, LABELS)
    assert (adapter.n_layers, adapter.n_neurons) == (2, 128)
    assert assert_studied_weights_equal_saved(adapter, out, OMNI_NAMES) > 40


# --- Audio Flamingo 3 and Qwen2-Audio as published ------------------------------------------------

@pytest.mark.parametrize("family", ["audio_flamingo3", "qwen2_audio"])
def test_published_processor_families_load_with_their_saved_weights(family, tmp_path):
    """Wherever the upload keeps the chat template, the prompt renders the same, in fp32 and bf16 alike."""
    rendered = {}
    for place in TEMPLATE_PLACES:
        folder = build_published_processor_family(family, tmp_path / place, place)
        files = {p.name for p in folder.iterdir()}
        assert "preprocessor_config.json" in files and "processor_config.json" not in files
        assert ({"chat_template.json", "chat_template.jinja"} & files) == ({place} - {"tokenizer_config.json"})
        for dtype in ("float32", "bfloat16"):
            adapter = load_adapter({"adapter": family, "path": str(folder), "prompt": PROMPT, "dtype": dtype}, LABELS)
            assert next(adapter.model.parameters()).dtype == getattr(torch, dtype)
            assert assert_studied_weights_equal_saved(adapter, folder, PROCESSOR_FAMILY_NAMES) > 20
            rendered[place, dtype] = adapter.chat_text()
            if family == "audio_flamingo3":  # no default template in its processor class: the tokenizer's is used
                expected = "tokenizer" if place == "tokenizer_config.json" else "processor"
                assert adapter.provenance()["chat_template_source"] == expected
    assert len(set(rendered.values())) == 1 and next(iter(rendered.values())).count(adapter.audio_token) == 1
    if family == "audio_flamingo3":  # the processor's template (AF3_CHAT_TEMPLATE), not the organism's
        assert rendered[place, dtype].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                                                 "<|im_start|>user\n<sound>")


def test_a_missing_or_unexpected_decoder_weight_is_refused(tmp_path):
    """One decoder weight deleted from the shards, or one extra weight under the decoder's prefix: refused,
    naming the key (in the model's naming) and the checkpoint."""
    from safetensors.torch import load_file, save_file

    folder = build_published_processor_family("audio_flamingo3", tmp_path / "af3", "chat_template.json")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    victim = "language_model.model.layers.1.mlp.down_proj.weight"
    shard = folder / index["weight_map"][victim]
    tensors = load_file(shard)
    extra = "language_model.model.layers.0.mlp.extra_proj.weight"
    save_file({**{k: v for k, v in tensors.items() if k != victim}, extra: torch.zeros(2, 2)}, shard,
              metadata={"format": "pt"})
    index["weight_map"][extra] = index["weight_map"].pop(victim)
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError) as err:
        load_adapter({"adapter": "audio_flamingo3", "path": str(folder), "prompt": PROMPT}, LABELS)
    message = str(err.value)
    assert str(folder) in message
    assert "1 missing: model.language_model.layers.1.mlp.down_proj.weight" in message
    assert "unexpected" in message and "extra_proj" in message
