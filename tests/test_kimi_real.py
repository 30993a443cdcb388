"""The Kimi-Audio adapter against Kimi-Audio's REAL model class (`MoonshotKimiaForCausalLM`, unmodified,
from MoonshotAI/Kimi-Audio@349251e), loaded through `KimiAudioAdapter.load` at a tiny random size on CPU.

Runs when `ESN_KIMI_REMOTE_CODE` names a folder with the two source files (see tests/kimi_remote.py);
skipped otherwise, with a reason that says how to run it. The prompt streams come from the FAKE prompt
manager of tests/models_tiny.py (kimia_infer needs the GLM-4-voice tokenizer and whisper-large-v3
weights); the model — attention with grouped-query heads in fp16, the MIMO branch, the input merge, the
output tuple and the cache — is the real one. The last two tests check that FAKE against kimia_infer's
own prompt code (`ESN_KIMIA_INFER`: a Kimi-Audio checkout at 2607d51, the 2-argument constructor, or at
349251e, the 3-argument one), with only its speech tokenizer and whisper encoder stood in.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from kimi_remote import (ENV, KIMIA_ENV, KIMIA_SOURCES, SOURCE, check_files, file_hashes, how_to_run,
                         kimia_infer_commit, kimia_infer_folder, real_prompt_manager_module, remote_code_folder,
                         runtime_patches, tiny_config, write_checkpoint)
from models_tiny import (KIMI_SPECIALS, KIMI_SPEECH_CODES, KIMI_WHISPER_DIM, PROMPT, FakeKimiPromptManager,
                         FakeKimiTextTokenizer, install_prompt_manager, waves)

from esn.hooks import scaled
from esn.interventions import Condition, score_conditions
from esn.models import load_adapter
from esn.models.kimi_audio import KimiAudioAdapter
from esn.organism import build_tokenizer

LABELS = ["neutral", "happy", "sad", "angry"]
CLIPS = waves([0.5, 1.3, 0.8])          # different lengths: left padding is exercised
FOLDER = remote_code_folder()

pytestmark = pytest.mark.usefixtures("one_thread")
needs_remote_code = pytest.mark.skipif(FOLDER is None, reason=how_to_run())


@needs_remote_code
def test_remote_files_are_the_recorded_ones():
    """The files named by the environment are byte-identical to the recorded commit's (sha256)."""
    assert file_hashes(FOLDER) == {name: sha for name, (_, sha) in SOURCE["files"].items()}, f"{ENV}={FOLDER}"
    text = (FOLDER / "modeling_kimia.py").read_text()
    assert "Moonshot AI Team" in text and "MIT License" in text and "Apache License" in text  # header kept


@pytest.fixture(scope="module")
def kimi(tmp_path_factory):
    """(adapter, prompt manager, folder): the real class loaded through KimiAudioAdapter.load (fp32)."""
    check_files(FOLDER)
    mp = pytest.MonkeyPatch()
    with runtime_patches(mp):
        tok = build_tokenizer(PROMPT, 300)
        tok.add_tokens(KIMI_SPECIALS, special_tokens=True)
        offset = len(tok)
        config = tiny_config(offset + KIMI_SPEECH_CODES, tok.convert_tokens_to_ids("<|im_media_begin|>"),
                             tok.convert_tokens_to_ids("<|im_media_end|>"), offset, KIMI_WHISPER_DIM)
        folder = write_checkpoint(tmp_path_factory.mktemp("kimi_real"), FOLDER, config)
        prompt_manager = FakeKimiPromptManager(FakeKimiTextTokenizer(tok), offset)
        calls = []

        class KimiAPromptManager:  # kimia_infer's 3-argument constructor (since 2025-06-03), a FAKE body
            def __new__(cls, model_path, kimia_token_offset, kimia_text_audiodelaytokens):
                calls.append((model_path, kimia_token_offset, kimia_text_audiodelaytokens))
                return prompt_manager

        install_prompt_manager(mp, KimiAPromptManager)
        adapter = load_adapter({"adapter": "kimi_audio", "path": str(folder), "prompt": PROMPT, "dtype": "float32",
                                "trust_remote_code": True, "revision": SOURCE["commit"], "scoring": "first_token"},
                               LABELS)
        assert calls == [(str(folder), offset, 5)]
        yield adapter, prompt_manager, folder
    mp.undo()


@needs_remote_code
def test_the_model_is_the_real_class_and_passes_the_self_check(kimi):
    adapter, _, _ = kimi
    model = adapter.model
    assert type(model).__name__ == "MoonshotKimiaForCausalLM"
    assert sys.modules[type(model).__module__].__file__.endswith("modeling_kimia.py")
    attn = model.model.layers[0].self_attn
    assert (attn.num_heads, attn.num_key_value_heads) == (4, 2)                    # grouped-query attention
    assert model.model.embed_tokens.padding_idx == model.config.pad_token_id == 0
    assert hasattr(model.model, "vq_adaptor") and model.config.use_whisper_feature
    assert adapter.self_check() <= 1e-4


@needs_remote_code
def test_left_padded_batch_equals_clip_by_clip_full_forwards(kimi):
    adapter, _, _ = kimi
    batch = adapter.build_batch(CLIPS)
    assert not batch.attention_mask[0].all() and batch.attention_mask[:, -1].all()  # left padding present
    with torch.no_grad():
        split = adapter.decode_last(adapter.embed(batch))
    one = torch.cat([adapter.full_forward_last(c) for c in CLIPS])
    assert torch.allclose(split, one, atol=1e-3, rtol=0), float((split - one).abs().max())
    assert torch.allclose(torch.softmax(split, -1), torch.softmax(one, -1), atol=1e-4, rtol=0)


def _forward(adapter, clip, **kw):
    c = adapter.builder.build(clip, adapter.prompt)
    return adapter.model(input_ids=c.audio_ids[None], text_input_ids=c.text_ids[None],
                         whisper_input_feature=[c.whisper[None]], is_continuous_mask=c.continuous[None],
                         position_ids=torch.arange(len(c.audio_ids))[None], **kw)


@needs_remote_code
@torch.no_grad()
def test_output_contract_text_from_the_main_layers_audio_from_the_mimo_branch(kimi):
    """Default return: CausalLMOutputWithPast with logits (audio, text); text = lm_head(norm(main layers)),
    audio = mimo_output(mimo_norm(MIMO layers)); the cache holds the main layers then the MIMO layers."""
    adapter, _, _ = kimi
    model, inner = adapter.model, adapter.model.model
    seen = {}
    hooks = [inner.layers[-1].register_forward_hook(lambda m, a, out: seen.__setitem__("main", out[0])),
             inner.mimo_layers[-1].register_forward_hook(lambda m, a, out: seen.__setitem__("mimo", out[0]))]
    try:
        out = _forward(adapter, CLIPS[0], use_cache=True)
    finally:
        for h in hooks:
            h.remove()
    assert type(out).__name__ == "CausalLMOutputWithPast" and isinstance(out.logits, tuple)
    audio_logits, text_logits = out.logits
    assert torch.allclose(text_logits, model.lm_head(inner.norm(seen["main"])), atol=1e-5, rtol=0)
    assert torch.allclose(audio_logits, model.mimo_output(inner.mimo_norm(seen["mimo"])), atol=1e-5, rtol=0)
    assert len(out.past_key_values) == len(inner.layers) + len(inner.mimo_layers)
    assert torch.allclose(adapter.full_forward_last(CLIPS[0]), text_logits[:, -1], atol=1e-6, rtol=0)


@needs_remote_code
@torch.no_grad()
def test_hooking_the_last_main_layer_moves_only_text_and_a_mimo_layer_only_audio(kimi):
    adapter, _, _ = kimi
    inner = adapter.model.model
    base_audio, base_text = _forward(adapter, CLIPS[0], return_dict=False)[:2]

    def shifted(module):
        return module.register_forward_hook(lambda m, a, out: (out[0] + 0.5,) + tuple(out[1:]))

    for layer, moved, still in ((inner.layers[-1], 1, 0), (inner.mimo_layers[0], 0, 1)):
        handle = shifted(layer)
        try:
            logits = _forward(adapter, CLIPS[0], return_dict=False)[:2]
        finally:
            handle.remove()
        base = (base_audio, base_text)
        assert not torch.allclose(logits[moved], base[moved], atol=1e-3)
        assert torch.equal(logits[still], base[still])


@needs_remote_code
@torch.no_grad()
def test_attention_runs_in_fp16_for_fp32_weights_and_vq_adaptor_needs_whisper_features(kimi, monkeypatch):
    """Facts of the real class the fake does not have: the fp32 model hands fp16 q/k/v to flash-attn, and
    without `use_whisper_feature` there is no `vq_adaptor` (the adapter then skips the feature merge)."""
    import kimi_remote

    adapter, _, _ = kimi
    seen = []
    attention = kimi_remote._attention

    def spy(q, k, v, causal, scale):
        seen.append(q.dtype)
        return attention(q, k, v, causal, scale)

    monkeypatch.setattr(kimi_remote, "_attention", spy)
    adapter.full_forward_last(CLIPS[0])
    assert next(adapter.model.parameters()).dtype == torch.float32 and set(seen) == {torch.float16}
    config = type(adapter.model.config).from_dict({**adapter.model.config.to_dict(), "use_whisper_feature": False})
    bare = type(adapter.model)(config)
    assert not hasattr(bare.model, "vq_adaptor") and hasattr(adapter.model.model, "vq_adaptor")


@needs_remote_code
def test_hook_sites_are_exactly_the_main_layers(kimi):
    adapter, _, _ = kimi
    inner = adapter.model.model
    assert adapter.n_layers == len(inner.layers) == 3 and adapter.n_neurons == 128
    assert [m for m, _ in adapter.site_modules()] == [layer.mlp.act_fn for layer in inner.layers]
    mimo = {id(m) for layer in inner.mimo_layers for m in layer.modules()}
    assert not mimo & {id(m) for m, _ in adapter.site_modules()}


@needs_remote_code
def test_label_scoring_and_a_deactivation_condition_run_end_to_end(kimi):
    """Through the library's intervention runner: the unmodified row equals `score`, deactivating a quarter
    of every layer's neurons changes the label probabilities."""
    adapter, _, _ = kimi
    rng = np.random.default_rng(0)
    neurons = {l: np.sort(rng.choice(adapter.n_neurons, adapter.n_neurons // 4, replace=False))
               for l in range(adapter.n_layers)}
    probs = score_conditions(adapter, CLIPS, [Condition("none"), Condition("deactivate", target="sad", neurons=neurons)])
    assert probs.shape == (2, len(CLIPS), len(LABELS)) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    assert np.allclose(probs[0], adapter.score(CLIPS).numpy(), atol=1e-5)
    assert np.abs(probs[1] - probs[0]).max() > 1e-4
    ones = {l: torch.ones(len(CLIPS), adapter.n_neurons) for l in range(adapter.n_layers)}
    with torch.no_grad(), scaled(adapter.site_modules(), ones):
        assert torch.equal(adapter.score(CLIPS), adapter.score(CLIPS))


@needs_remote_code
def test_a_checkpoint_with_a_renamed_decoder_is_refused(kimi, tmp_path):
    """The weight check holds for remote code too: missing decoder weights are named, never random."""
    import shutil

    from published_layouts import saved_weights
    from safetensors.torch import save_file

    _, _, folder = kimi
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    weights = saved_weights(folder)
    (broken / "model.safetensors").unlink()
    save_file({k.replace("model.layers.2.", "model.block.2."): v for k, v in weights.items()},
              broken / "model.safetensors", metadata={"format": "pt"})
    mp = pytest.MonkeyPatch()
    try:
        with runtime_patches(mp):
            with pytest.raises(ValueError, match=r"model\.layers\.2\.mlp"):
                KimiAudioAdapter.load(str(broken), labels=LABELS, prompt=PROMPT, revision=SOURCE["commit"],
                                      trust_remote_code=True, dtype="float32", device="cpu", scoring="first_token")
    finally:
        mp.undo()


# --- kimia_infer's real prompt manager (ESN_KIMIA_INFER: a checkout at 2607d51 or 349251e) -------------

KIMIA = kimia_infer_folder()
needs_kimia_infer = pytest.mark.skipif(
    KIMIA is None, reason=f"kimia_infer's prompt code needs a checkout of MoonshotAI/Kimi-Audio at one of "
                          f"{sorted(KIMIA_SOURCES)}: set {KIMIA_ENV} to it (see tests/kimi_remote.py)")


@pytest.fixture()
def real_prompt_manager(monkeypatch):
    """(real KimiAPromptManager class, the recorded commit, the FAKE manager whose tokens it is given)."""
    from models_tiny import build_kimi_fake

    commit = kimia_infer_commit(KIMIA)
    model, fake = build_kimi_fake()
    module = real_prompt_manager_module(KIMIA, fake, monkeypatch)
    return module.KimiAPromptManager, commit, fake, model


@needs_kimia_infer
def test_real_prompt_manager_builds_the_streams_the_adapter_expects(real_prompt_manager, tmp_path):
    """With the same speech tokens and features, kimia_infer's own `get_prompt` lays out exactly the streams,
    continuous mask and features of the FAKE the CI tests use; `to_tensor()` has 3 or 5 tensors by commit."""
    import inspect

    from esn.models.kimi_audio import KimiaPromptBuilder

    cls, commit, fake, _ = real_prompt_manager
    params = list(inspect.signature(cls).parameters)
    three = "kimia_text_audiodelaytokens" in params
    assert three == (commit == SOURCE["commit"])
    real = cls("/nonexistent", fake.kimia_token_offset, 5) if three else cls("/nonexistent", fake.kimia_token_offset)
    for clip in CLIPS:
        built = {name: KimiaPromptBuilder(pm).build(clip, PROMPT) for name, pm in (("real", real), ("fake", fake))}
        for field in ("audio_ids", "text_ids", "continuous", "whisper"):
            assert torch.equal(getattr(built["real"], field), getattr(built["fake"], field)), (commit, field)
    import soundfile as sf

    sf.write(tmp_path / "clip.wav", CLIPS[0], 16000, subtype="FLOAT")
    content = real.get_prompt(KimiaPromptBuilder.messages(PROMPT, str(tmp_path / "clip.wav")), output_type="text")
    assert len(content.to_tensor()) == (5 if three else 3)


@needs_kimia_infer
def test_adapter_load_constructs_the_real_prompt_manager(real_prompt_manager, monkeypatch, tmp_path):
    """KimiAudioAdapter.load passes the third argument exactly when the class takes it, and scores with the
    real manager what it scores with the fake (model: the FAKE Kimi-Audio)."""
    import transformers

    from esn.models.kimi_audio import KimiaPromptBuilder

    cls, commit, fake, model = real_prompt_manager
    module = types.ModuleType("kimia_infer.api.prompt_manager")
    module.KimiAPromptManager = cls
    monkeypatch.setitem(sys.modules, "kimia_infer.api.prompt_manager", module)
    info = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: (model, info))
    adapter = KimiAudioAdapter.load(str(tmp_path), labels=LABELS, prompt=PROMPT, revision=SOURCE["commit"],
                                    trust_remote_code=True, dtype="float32", device="cpu", scoring="first_token")
    pm = adapter.builder.prompt_manager
    assert type(pm) is cls
    assert getattr(pm, "kimia_text_audiodelaytokens", None) == (
        model.config.kimia_mimo_audiodelaytokens if commit == SOURCE["commit"] else None)
    reference = KimiAudioAdapter(model, KimiaPromptBuilder(fake), LABELS, PROMPT, scoring="first_token")
    assert torch.equal(adapter.score(CLIPS), reference.score(CLIPS))
