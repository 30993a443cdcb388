"""Sharded intervention at growing numbers of evaluation utterances: wall time and peak memory per job.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale_intervene.py [--sizes 2500 5000 10000 20000]

The organism-shaped model (the real Qwen2.5-Omni thinker class, random weights; 3 decoder layers with 256 neurons
each: neurons and conditions reduced, not utterances) scores N synthetic utterances under 4 deactivation
conditions (one random 5 % set per emotion) plus the unmodified pass, as the workflow does: N / `--per-job`
shard jobs, each its own process (`evaluate(shard=(k, n), block_size, partial)` committing blocks), then one
merge (`esn.tables.merge_interventions`), also its own process. Utterances share a pool of clip files (the cost
per utterance does not depend on which audio it is). Written to benchmarks/out/scale_intervene.json: per size
the jobs' summed and longest wall time, each job's peak RSS, the merge's time and peak RSS, seconds per
utterance. Expect linear time and flat memory per shard job (a job's clips are fixed); the merge holds the
whole table, so its memory grows with the rows (~100 bytes per row in memory).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["neutral", "happy", "sad", "angry"]
POOL = 256


def manifest(n: int, pool: Path):
    import pandas as pd

    durations = pd.read_json(pool / "durations.json", typ="series")
    k = np.arange(n) % POOL
    return pd.DataFrame({"utterance_id": [f"u{i:06d}" for i in range(n)],
                         "path": [str(pool / f"c{j:03d}.flac") for j in k], "emotion": [LABELS[j % 4] for j in k], "speaker": [f"s{i % 97}" for i in range(n)],
                         "duration_s": durations.to_numpy()[k], "split": "evaluation"})


def make_pool(pool: Path) -> None:
    import soundfile as sf
    from common import clips

    pool.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    durations = {}
    for j in range(POOL):
        wave = clips(1, float(rng.uniform(1.0, 2.0)), seed=j)[0]
        sf.write(pool / f"c{j:03d}.flac", wave, 16000)
        durations[j] = wave.size / 16000
    (pool / "durations.json").write_text(json.dumps(durations))


def job(n_utt: int, shard: int, n_shards: int, pool: Path, out: Path, block: int) -> dict:
    """One shard job, as workflow/scripts/intervene.py runs it."""
    import torch
    from transformers import WhisperFeatureExtractor

    from esn.interventions import Condition, discard_partial, evaluate
    from esn.models.qwen_omni import QwenOmniAdapter
    from esn.organism import OrganismConfig, build_model, build_tokenizer
    from esn.tables import write_table

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = OrganismConfig(mlp=256)
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size)
    adapter = QwenOmniAdapter(build_model(cfg, tok).eval(), tok, WhisperFeatureExtractor(feature_size=128), LABELS,
                              cfg.prompt, system_prompt="", source="random organism shape")
    rng = np.random.default_rng(0)
    conditions = [Condition("deactivate", e, "random", fraction=0.05,
                            neurons={l: np.flatnonzero(rng.random(cfg.mlp) < 0.05) for l in range(cfg.layers)})
                  for e in LABELS]
    partial = out.with_suffix(".partial")
    table = evaluate(adapter, manifest(n_utt, pool), conditions, batch_size=32, max_rows=256, block_size=block,
                     shard=(shard, n_shards), partial=partial)
    write_table(table, out, "interventions")
    discard_partial(partial)
    return {"seconds": time.perf_counter() - t0, "rows": len(table),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def merge(paths: list[str], out: Path) -> dict:
    from esn.tables import merge_interventions, write_table

    t0 = time.perf_counter()
    table = merge_interventions(paths)
    write_table(table, out, "interventions")
    return {"seconds": time.perf_counter() - t0, "rows": len(table),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000, 20000])
    parser.add_argument("--per-job", type=int, default=2500, help="evaluation utterances per shard job")
    parser.add_argument("--block", type=int, default=256, help="intervention.block_size")
    parser.add_argument("--job", nargs=3, type=int, metavar=("N", "K", "SHARDS"), help=argparse.SUPPRESS)
    parser.add_argument("--merge", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(json.dumps(job(*args.job, args.pool, args.out, args.block)))
        return
    if args.merge:
        print(json.dumps(merge(args.merge, args.out)))
        return
    import torch

    from common import device_info, write

    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool"
        make_pool(pool)
        for n in args.sizes:
            shards = math.ceil(n / args.per_job)
            outs = [Path(tmp) / f"{n}-{k}-of-{shards}.parquet" for k in range(shards)]
            jobs = [child("--job", str(n), str(k), str(shards), "--pool", str(pool), "--out", str(o),
                          "--block", str(args.block)) for k, o in enumerate(outs)]
            merged = child("--merge", *map(str, outs), "--out", str(Path(tmp) / f"{n}.parquet"))
            assert merged["rows"] == n * 5 == sum(j["rows"] for j in jobs)
            results.append({"utterances": n, "shards": shards, "rows": merged["rows"],
                            "jobs_seconds": round(sum(j["seconds"] for j in jobs), 1),
                            "longest_job_seconds": round(max(j["seconds"] for j in jobs), 1),
                            "seconds_per_utterance": round(sum(j["seconds"] for j in jobs) / n, 5),
                            "job_peak_rss_mb": [round(j["peak_rss_mb"]) for j in jobs],
                            "merge_seconds": round(merged["seconds"], 2),
                            "merge_peak_rss_mb": round(merged["peak_rss_mb"])})
            print(results[-1], flush=True)
    write("scale_intervene", {**device_info(), "model": "organism shape, 3 layers x 256 neurons, random weights",
                              "conditions": "unmodified + 4 deactivations (random 5 % per layer)",
                              "per_job": args.per_job, "block_size": args.block, "results": results})


if __name__ == "__main__":
    main()
