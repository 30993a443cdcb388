"""Capture overhead and store write speed.

    .venv/bin/python benchmarks/bench_capture.py                         # the trained organism, CPU
    .venv/bin/python benchmarks/bench_capture.py --shape omni7b --device cuda --dtype bfloat16 --clips 16 --seconds 5

overhead = (forward with reducing hooks + one host copy) / (plain scoring forward), on the same batch;
store: MB/s of writing blocks of the measured statistics into a Zarr store (Blosc zstd-3, as capture does).
`--shape omni7b` builds RANDOM weights of the Qwen2.5-Omni-7B thinker's decoder shape (28 × 18944, hidden
3584; the audio encoder kept to 2 layers), which needs a GPU; `--layers 2` keeps two such layers for a CPU.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import clips, device_info, timed, write

from esn import store
from esn.capture import batch_statistics
from esn.models import load_adapter

GROUPS = ["audio", "prompt", "last"]
LABELS = ["neutral", "happy", "sad", "angry"]
PROMPT = "What emotion does the speaker express? Answer with one word."


def random_omni7b(device: str, dtype: str, layers: int = 28):
    """Random weights of the 7B thinker's decoder shape (`layers` of its 28), through the organism's builders."""
    from transformers import WhisperFeatureExtractor

    from esn.models.qwen_omni import QwenOmniAdapter
    from esn.organism import OrganismConfig, build_model, build_tokenizer

    cfg = OrganismConfig(hidden=3584, heads=28, kv_heads=4, mlp=18944, layers=layers, audio_d_model=1280,
                         audio_layers=2, audio_heads=20, audio_ffn=5120)
    tok = build_tokenizer(PROMPT, cfg.vocab_size)
    with torch.device(device):
        model = build_model(cfg, tok).to(getattr(torch, dtype)).eval()
    return QwenOmniAdapter(model, tok, WhisperFeatureExtractor(feature_size=128), LABELS, PROMPT, system_prompt=None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resources/models/organism")
    ap.add_argument("--shape", choices=["organism", "omni7b"], default="organism")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--store-dtype", default="float16")
    ap.add_argument("--block-size", type=int, default=256, help="utterances per store block (capture's default)")
    ap.add_argument("--layers", type=int, default=28, help="decoder layers of the omni7b shape (CPU: use 2)")
    args = ap.parse_args()
    if args.shape == "omni7b":
        adapter = random_omni7b(args.device, args.dtype, args.layers)
    else:
        adapter = load_adapter({"adapter": "qwen2_5_omni", "path": args.model, "dtype": args.dtype, "prompt": PROMPT},
                               LABELS, args.device)
    batch = adapter.to_device(adapter.build_batch(clips(args.clips, args.seconds)))

    @torch.no_grad()
    def plain() -> None:
        adapter.scorer.probabilities(adapter.decode_last(adapter.embed(batch))).cpu()

    def captured():
        return batch_statistics(adapter, batch, GROUPS, dtype=getattr(torch, args.store_dtype))

    t_plain, t_capture = timed(plain, 5), timed(captured, 5)
    stats = captured()

    tmp = Path(tempfile.mkdtemp())
    n_blocks, block = 4, args.block_size  # the batch's statistics tiled to full store blocks
    utter = pd.DataFrame({"utterance_id": [f"u{i}" for i in range(n_blocks * block)], "emotion": "happy",
                          "speaker": "s", "corpus": "c", "split": "identification", "duration_s": 1.0})
    layout = store.StoreLayout(len(utter), tuple(GROUPS), adapter.n_layers, adapter.n_neurons, tuple(LABELS),
                               args.store_dtype, block_size=block)
    g = store.create(tmp / "s.zarr", utter, layout, {})
    def tile(a: np.ndarray) -> np.ndarray:
        return np.resize(a, (block, *a.shape[1:]))

    values = {"mean_activation": tile(stats.mean_activation), "frac_positive": tile(stats.frac_positive),
              "n_positions": tile(stats.n_positions), "label_prob": tile(stats.label_prob)}
    t0 = time.perf_counter()
    for k in range(n_blocks):
        store.write_block(g, k, values)
    seconds = time.perf_counter() - t0
    nbytes = n_blocks * (values["mean_activation"].nbytes + values["frac_positive"].nbytes)
    on_disk = sum(p.stat().st_size for p in (tmp / "s.zarr").rglob("*") if p.is_file())
    shutil.rmtree(tmp)
    per_utt = (stats.mean_activation.nbytes + stats.frac_positive.nbytes) / args.clips
    write(f"capture_{args.shape}_{args.device}", {
        **device_info(), "shape": args.shape, "dtype": args.dtype, "store_dtype": args.store_dtype,
        "clips": args.clips, "seconds": args.seconds, "tokens": int(batch.attention_mask.shape[1]),
        "layers": adapter.n_layers, "neurons_per_layer": adapter.n_neurons, "position_groups": len(GROUPS),
        "plain_forward_s": round(t_plain, 4), "capture_forward_s": round(t_capture, 4),
        "capture_overhead": round(t_capture / t_plain, 3),
        "store_write_MB_per_s": round(nbytes / seconds / 1e6, 1),
        "store_bytes_per_utterance_raw": int(per_utt),
        "store_compression_ratio": round(nbytes / max(on_disk, 1), 3)})


if __name__ == "__main__":
    main()
