"""Time `esn.selectors.select` on a synthetic store of the 7B shape (28 layers × 18 944 neurons).

    python benchmarks/bench_selectors.py [OUT_DIR] [--utterances 2048] [--reuse]

Writes `<OUT_DIR>/store7b.zarr` block by block (float16 activations, float32 attribution; ~2 GB per
float16 variable at 2048 utterances, so generation streams), then runs each selector in a fresh
subprocess (so peak RSS is that selector's own) and prints a table; results go to
`<OUT_DIR>/selectors.json`. Reads come from the page cache when the store fits in RAM: the numbers are
CPU/decompression-bound, not disk-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from esn import selectors, store

EMOTIONS = ("neutral", "happy", "sad", "angry")


def generate(path: Path, n: int, n_layers: int, n_neurons: int, block_size: int, seed: int = 0) -> float:
    """Write a finished store of random activations one block at a time; returns seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    utterances = pd.DataFrame({
        "utterance_id": [f"u{i:06d}" for i in range(n)], "emotion": rng.choice(EMOTIONS, n),
        "speaker": [f"s{i % 10}" for i in range(n)], "corpus": "synthetic",
        "split": rng.choice(["identification", "evaluation"], n, p=[0.8, 0.2]), "duration_s": 3.0})
    layout = store.StoreLayout(n, ("audio",), n_layers, n_neurons, EMOTIONS, "float16", block_size, attribution=True)
    partial = path.with_name(path.name + ".partial")
    g = store.create(partial, utterances, layout, {"model_family": "benchmark", "site": "act_fn",
                                                   "store_dtype": "float16", "attribution": "True"})
    shape = (n_layers, n_neurons)
    for k in range(layout.n_blocks):
        b = layout.block(k).stop - layout.block(k).start
        emotion = utterances["emotion"].to_numpy()[layout.block(k)]
        probs = rng.dirichlet(np.ones(len(EMOTIONS)), b).astype("float32")
        store.write_block(g, k, {
            "mean_activation": rng.standard_normal((b, 1, *shape), np.float32).astype(np.float16),
            "frac_positive": rng.random((b, 1, *shape), np.float32).astype(np.float16),
            "n_positions": rng.integers(25, 750, (b, 1)).astype("int32"),
            "attribution": rng.standard_normal((b, *shape), np.float32),
            "label_prob": probs,
            "predicted": np.array([EMOTIONS[i] for i in probs.argmax(1)], dtype=object),
            "correct": (np.array(EMOTIONS)[probs.argmax(1)] == emotion).astype("int8")})
        print(f"  block {k + 1}/{layout.n_blocks} written ({time.perf_counter() - t0:.0f} s)", flush=True)
    store.finalize(partial, path)
    return time.perf_counter() - t0


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child
    of the (large) generating process would report the parent's peak."""
    status = Path("/proc/self/status")
    if status.exists():
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM")) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(store_path: Path, selector: str) -> dict[str, float]:
    """One selector in this (fresh) process: wall time and peak RSS (before: after the imports)."""
    baseline_mb = peak_rss_mb()
    t0 = time.perf_counter()
    sel = selectors.select(store_path, selector)
    wall = time.perf_counter() - t0
    assert np.isfinite(sel["score"].values).any()
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak_rss_mb()), "rss_before_mb": round(baseline_mb),
            "n_utterances": int(sel["n_utterances"].sum())}


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default="benchmarks/out/", type=Path)
    ap.add_argument("--utterances", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--neurons", type=int, default=18944)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--selectors", nargs="+", default=list(selectors.SELECTORS))
    ap.add_argument("--repeat", type=int, default=3, help="fresh runs per selector; the table shows the fastest")
    ap.add_argument("--reuse", action="store_true", help="keep an existing store of the same shape")
    ap.add_argument("--run-one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = args.out / "store7b.zarr"
    if args.run_one:
        print(json.dumps(run_one(path, args.run_one)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    shape = (args.utterances, 1, args.layers, args.neurons)
    generated = None
    if not (args.reuse and path.exists() and store.open_store(path)["mean_activation"].shape == shape):
        print(f"generating {path}: {args.utterances} × {args.layers} × {args.neurons}, float16", flush=True)
        generated = round(generate(path, args.utterances, args.layers, args.neurons, args.block_size), 1)
    results = {}
    for name in args.selectors:
        runs = []
        for _ in range(args.repeat):
            proc = subprocess.run([sys.executable, __file__, str(args.out), "--run-one", name],
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        results[name] = {**min(runs, key=lambda r: r["wall_s"]), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                         "wall_s_runs": [r["wall_s"] for r in runs]}
        print(f"  {name}: {results[name]}", flush=True)
    report = {"store": str(path), "shape": dict(zip(("utterances", "positions", "layers", "neurons"), shape)),
              "store_gb_on_disk": round(disk_bytes(path) / 1e9, 2), "generate_s": generated,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "selectors": results}
    (args.out / "selectors.json").write_text(json.dumps(report, indent=2))
    print(f"\nstore {path}: {report['store_gb_on_disk']} GB on disk, {shape[0]} utterances "
          f"({results[next(iter(results))]['n_utterances']} in the identification split)")
    print(f"{'selector':<12}{'wall s (min)':>13}{'all runs':>22}{'peak RSS MB':>13}{'after imports':>15}")
    for name, r in results.items():
        runs = " ".join(f"{w:.1f}" for w in r["wall_s_runs"])
        print(f"{name:<12}{r['wall_s']:>13}{runs:>22}{r['peak_rss_mb']:>13}{r['rss_before_mb']:>15}")


if __name__ == "__main__":
    main()
