"""The organism's per-row costs for the cost plan (`benchmarks/costs.yaml`, `python -m esn.cost`): seconds per
(clip, condition) row of an intervention job, per clip of a capture job with attribution, and bytes per row of
a written intervention table — at the default organism's shape (random weights: the cost does not depend on
training), through the same library calls the jobs make, on 1 thread.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_row_cost.py [--clips 64] [--conditions 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from common import clips, device_info, write
from transformers import WhisperFeatureExtractor

from esn.capture import capture
from esn.interventions import Condition, evaluate
from esn.models.qwen_omni import QwenOmniAdapter
from esn.organism import OrganismConfig, build_model, build_tokenizer
from esn.tables import write_table

LABELS = ["neutral", "happy", "sad", "angry"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--conditions", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=1.5, help="clip length (the default corpora: 1-2 s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = OrganismConfig()
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size)
    adapter = QwenOmniAdapter(build_model(cfg, tok).eval(), tok, WhisperFeatureExtractor(feature_size=128), LABELS,
                              cfg.prompt, system_prompt="", source="random organism shape")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for i, wave in enumerate(clips(args.clips, args.seconds)):
            path = Path(tmp) / f"u{i:04d}.flac"
            sf.write(path, wave, 16000)
            rows.append({"utterance_id": f"u{i:04d}", "path": str(path), "emotion": LABELS[i % 4],
                         "speaker": f"s{i % 8}", "corpus": "bench", "duration_s": wave.size / 16000,
                         "split": "evaluation"})
        manifest = pd.DataFrame(rows)
        conditions = [Condition("deactivate", LABELS[k % 4], "random", fraction=0.05, neurons={
            l: np.flatnonzero(rng.random(cfg.mlp) < 0.05) for l in range(cfg.layers)}) for k in range(args.conditions)]
        evaluate(adapter, manifest.iloc[:4], conditions[:2], batch_size=32)  # warm-up
        t0 = time.perf_counter()
        table = evaluate(adapter, manifest, conditions, batch_size=32, max_rows=256)
        intervene_s = time.perf_counter() - t0
        write_table(table, Path(tmp) / "t.parquet", "interventions")
        table_bytes = (Path(tmp) / "t.parquet").stat().st_size
        t0 = time.perf_counter()
        capture(adapter, manifest, Path(tmp) / "s.zarr", groups=["audio", "prompt", "last"], batch_size=32,
                attribution=True)
        capture_s = time.perf_counter() - t0
    n_rows = args.clips * (args.conditions + 1)
    write("row_cost_organism", {
        **device_info(), "shape": {"layers": cfg.layers, "mlp": cfg.mlp, "hidden": cfg.hidden},
        "clips": args.clips, "seconds_per_clip": args.seconds, "conditions": args.conditions + 1,
        "intervene_s": round(intervene_s, 2), "intervene_row_s": round(intervene_s / n_rows, 6),
        "capture_s": round(capture_s, 2), "capture_clip_s_with_attribution": round(capture_s / args.clips, 5),
        "table_bytes_per_row": round(table_bytes / len(table), 1)})


if __name__ == "__main__":
    main()
