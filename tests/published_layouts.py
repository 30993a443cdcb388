"""Checkpoint folders laid out as the hub publishes them, written with transformers' own classes.

`save_pretrained` of transformers 5.x writes a newer layout than the published checkpoints (a nested
`processor_config.json`, `dtype`/`rope_parameters` in `config.json`, thinker-only Omni classes). A first
real load meets the published one, so the tests rebuild it at tiny size:

- Qwen2.5-Omni (`save_published_omni`): the WHOLE `Qwen2_5OmniForConditionalGeneration` (thinker +
  talker + token2wav; weight names `thinker.model.…`, `talker.…`, `token2wav.…`), sharded with an index,
  a 4.x-style composite `config.json` (`Qwen2_5OmniModel`, `torch_dtype`, `rope_theta` + `rope_scaling`
  with `mrope_section`), a pickled `spk_dict.pt` beside the weights (speaker prompts for speech output,
  never read by a text study), `chat_template.json` and a flat `preprocessor_config.json`.
- Audio Flamingo 3 and Qwen2-Audio (`publish_processor_files`): a flat `preprocessor_config.json` (the
  feature extractor's fields + `processor_class`) instead of the nested `processor_config.json`, and the
  processor's chat template in exactly one of `chat_template.json`, `chat_template.jinja` or
  `tokenizer_config.json`, as different uploads have it.

`benchmarks/make_fullsize_checkpoint.py` writes its 7B-shaped Omni checkpoint with `save_published_omni`.
Only transformers and torch are imported here, so the benchmark can import this module too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

#: Where a published checkpoint keeps its processor's chat template (one of these).
TEMPLATE_PLACES = ("chat_template.json", "chat_template.jinja", "tokenizer_config.json")

#: A talker and token2wav as small as their classes allow: the study never runs them, their weights only
#: have to be in the checkpoint under their own prefixes, as in the published one.
SMALL_TALKER = dict(vocab_size=64, embedding_size=None, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                    tts_text_start_token_id=1, tts_text_end_token_id=2, tts_text_pad_token_id=3,
                    tts_codec_start_token_id=60, tts_codec_end_token_id=61, tts_codec_pad_token_id=62,
                    tts_codec_mask_token_id=63, vision_start_token_id=4, vision_end_token_id=5,
                    audio_start_token_id=6, audio_end_token_id=7, audio_token_index=8, image_token_index=9,
                    video_token_index=10)
SMALL_TOKEN2WAV = dict(
    dit_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, emb_dim=16, ff_mult=1,
                    num_embeds=64, mel_dim=8, enc_emb_dim=16, enc_dim=16, enc_channels=[16, 16, 16, 16, 48],
                    enc_attention_channels=8, enc_se_channels=8, look_ahead_layers=[1], look_backward_layers=[0],
                    block_size=4),
    bigvgan_config=dict(mel_dim=8, upsample_initial_channel=16, resblock_kernel_sizes=[3],
                        resblock_dilation_sizes=[[1, 3, 5]], upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4]))


def whole_omni_config(thinker_config: Any) -> Any:
    """The composite `Qwen2_5OmniConfig` around a thinker config, with a small talker and token2wav."""
    from transformers import Qwen2_5OmniConfig

    talker = dict(SMALL_TALKER, embedding_size=thinker_config.text_config.hidden_size)
    return Qwen2_5OmniConfig(thinker_config=thinker_config.to_dict(), talker_config=talker,
                             token2wav_config=SMALL_TOKEN2WAV)


def _as_4x(node: Any) -> Any:
    """A 5.x config dict rewritten as transformers 4.x wrote it (`torch_dtype`; `rope_theta` and a
    `rope_scaling` that carries `mrope_section`, with the legacy `type` key)."""
    if isinstance(node, list):
        return [_as_4x(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "dtype":
            out["torch_dtype"] = value
        elif key == "rope_parameters" and isinstance(value, dict):
            rope = dict(value)
            out["rope_theta"] = rope.pop("rope_theta", 10000.0)
            kind = rope.get("rope_type", "default")
            out["rope_scaling"] = ({**rope, "rope_type": kind, "type": kind}
                                   if rope.get("mrope_section") or kind != "default" else None)
        else:
            out[key] = _as_4x(value)
    return out


def write_4x_config(folder: Path, architectures: list[str] | None = None) -> dict[str, Any]:
    """Rewrite `folder/config.json` in the 4.x style (optionally with published `architectures`)."""
    path = folder / "config.json"
    config = _as_4x(json.loads(path.read_text()))
    if architectures:
        config["architectures"] = architectures
    config["transformers_version"] = "4.50.0.dev0"
    path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return config


def publish_processor_files(folder: Path, template: str, place: str, processor_class: str,
                            feature_extractor: Any) -> None:
    """Processor files as published: a flat `preprocessor_config.json`, no nested `processor_config.json`,
    and `template` in exactly one of `TEMPLATE_PLACES`."""
    if place not in TEMPLATE_PLACES:
        raise ValueError(f"unknown template place {place!r}; one of {TEMPLATE_PLACES}")
    folder = Path(folder)
    (folder / "processor_config.json").unlink(missing_ok=True)
    for name in ("chat_template.json", "chat_template.jinja"):
        (folder / name).unlink(missing_ok=True)
    flat = {**feature_extractor.to_dict(), "processor_class": processor_class}
    (folder / "preprocessor_config.json").write_text(json.dumps(flat, indent=2, sort_keys=True))
    tok_path = folder / "tokenizer_config.json"
    tok_config = json.loads(tok_path.read_text())
    tok_config.pop("chat_template", None)
    tok_config["processor_class"] = processor_class
    if place == "tokenizer_config.json":
        tok_config["chat_template"] = template
    elif place == "chat_template.json":
        (folder / place).write_text(json.dumps({"chat_template": template}, indent=2))
    else:
        (folder / place).write_text(template)
    tok_path.write_text(json.dumps(tok_config, indent=2, sort_keys=True))


def save_published_omni(model: Any, folder: str | Path, tokenizer: Any, feature_extractor: Any, template: str,
                        *, max_shard_size: str = "5GB") -> Path:
    """Save a whole `Qwen2_5OmniForConditionalGeneration` as Qwen/Qwen2.5-Omni-7B is published (see the
    module docstring): prefixed, sharded weights, the 4.x composite config, `spk_dict.pt`, processor files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(folder)
    write_4x_config(folder, ["Qwen2_5OmniModel"])
    generator = torch.Generator().manual_seed(0)
    speakers = {name: {"cond": torch.randn(1, 192, generator=generator),
                       "ref_mel": torch.randn(1, 30, 80, generator=generator), "bos_token": bos}
                for name, bos in (("Chelsie", 2149), ("Ethan", 2150))}
    torch.save(speakers, folder / "spk_dict.pt")   # pickled, as published
    publish_processor_files(folder, template, "chat_template.json", "Qwen2_5OmniProcessor", feature_extractor)
    return folder


def save_weights_as(model: Any, folder: str | Path, names: list[tuple[str, str]], shard_tensors: int = 8) -> int:
    """Write `model`'s weights under explicit published names (`names`: (published prefix, model prefix)),
    sharded with an index, replacing any weight files in `folder`; independent of the name mapping the
    installed transformers applies when it saves. Returns the number of tensors written."""
    from safetensors.torch import save_file

    folder = Path(folder)
    for old in [*folder.glob("model*.safetensors"), folder / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        match = next(((pub, loaded) for pub, loaded in names if key.startswith(loaded)), None)
        if match is None:
            raise ValueError(f"no published name for {key}")
        tensors[match[0] + key[len(match[1]):]] = value.detach().contiguous()
    keys = sorted(tensors)
    shards = [keys[i:i + shard_tensors] for i in range(0, len(keys), shard_tensors)]
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: tensors[k] for k in shard}, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return len(tensors)


def saved_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder (one file or shards with an index), by its saved name."""
    from safetensors.torch import load_file

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    out: dict[str, torch.Tensor] = {}
    for name in files:
        out.update(load_file(folder / name))
    return out


def rename_weights(folder: str | Path, old: str, new: str) -> int:
    """Rename the prefix `old` of saved weight names to `new`, in the shards and the index; returns how many."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())

    def renamed(key: str) -> str:
        return new + key[len(old):] if key.startswith(old) else key

    count = 0
    for name in sorted(set(index["weight_map"].values())):
        tensors = load_file(folder / name)
        count += sum(k.startswith(old) for k in tensors)
        save_file({renamed(k): v for k, v in tensors.items()}, folder / name, metadata={"format": "pt"})
    index["weight_map"] = {renamed(k): v for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index, indent=2))
    return count
