"""Store and selection against corpus size: wall time and peak memory for 2.5k … 20k utterances.

    OMP_NUM_THREADS=1 python benchmarks/bench_scale_store.py /tmp/scale_store [--sizes 2500 5000 10000 20000]

Per size, a simulated store (`esn.planted`: 4 layers × 1 024 neurons, groups audio/prompt/last, attribution,
`capture.dtype`'s default float16, blocks of 256) is written with the project's store writer, then every selector
runs over it (`esn.selectors.select`, 5 random draws, as the workflow's main selection). Each step runs in a fresh
process, so its peak RSS (VmHWM) is its own; a write's time is the store writer's (create, blocks, finalize), the
simulation of the values apart (`simulate_s`). Neurons per layer are reduced, not utterances: what grows with the
corpus is what is measured. Linear time shows as a flat time per 1 000 utterances; flat memory as a peak that does
not grow with the corpus. Writes `benchmarks/out/scale_store.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
SELECTORS = ("lap", "lape", "mad", "cas", "attribution")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry a parent's peak over fork + exec)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def step(args: argparse.Namespace) -> dict:
    """One step in this fresh process: `write` a store of `n` utterances (the store writer's time, apart from the
    simulation's), or `select` with one selector."""
    from esn import planted
    from esn import selectors as S

    before = rss_mb()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if args.step == "write":
        planted.write_store(args.path, args.n, args.layers, args.neurons, dtype="float16", seed=0, timings=timings)
    else:
        sel = S.select(args.path, args.step, random_draws=5)
        assert np.isfinite(sel["score"].values).any()
    wall = time.perf_counter() - t0
    extra = {"simulate_s": timings["simulate_s"]} if timings else {}
    return {"wall_s": timings.get("write_s", round(wall, 3)), **extra,
            "peak_rss_mb": round(peak_rss_mb(), 1), "rss_after_imports_mb": round(before, 1)}


def run(path: Path, n: int, name: str, layers: int, neurons: int) -> dict:
    cmd = [sys.executable, __file__, str(path.parent), "--step", name, "--path", str(path), "--n", str(n),
           "--layers", str(layers), "--neurons", str(neurons)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def disk_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", type=Path, help="scratch folder for the stores")
    ap.add_argument("--sizes", nargs="+", type=int, default=[2500, 5000, 10000, 20000])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--neurons", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3, help="fresh runs per selector and size")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        print(json.dumps(step(args)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    load = list(os.getloadavg())
    rows = []
    for n in args.sizes:
        path = args.work / f"store_{n}.zarr"
        row = {"utterances": n, "write": run(path, n, "write", args.layers, args.neurons), "store_mb": disk_mb(path)}
        for name in SELECTORS:  # the fastest of `repeat` fresh runs (the box is shared), the largest peak
            runs = [run(path, n, name, args.layers, args.neurons) for _ in range(args.repeat)]
            row[name] = {**min(runs, key=lambda r: r["wall_s"]), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                         "wall_s_runs": [r["wall_s"] for r in runs]}
        rows.append(row)
        shutil.rmtree(path)
        print(json.dumps(row), flush=True)
    n = np.array([r["utterances"] for r in rows], float)
    fit = {}
    for name in ("write", *SELECTORS):  # wall = intercept + slope · utterances, least squares
        t = np.array([r[name]["wall_s"] for r in rows])
        slope, intercept = np.polyfit(n, t, 1)
        fit[name] = {"seconds_per_1000_utterances": round(slope * 1000, 4), "intercept_s": round(intercept, 3),
                     "max_relative_residual": round(float(np.max(np.abs(t - (intercept + slope * n)) / t)), 3)}
    per_k = {name: [round(r[name]["wall_s"] / r["utterances"] * 1000, 4) for r in rows]
             for name in ("write", *SELECTORS)}
    peak = {name: [r[name]["peak_rss_mb"] for r in rows] for name in ("write", *SELECTORS)}
    report = {"shape": {"layers": args.layers, "neurons": args.neurons, "groups": ["audio", "prompt", "last"],
                        "dtype": "float16", "attribution": True, "block_size": 256, "random_draws": 5,
                        "repeat": args.repeat},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
              "load_average_before_after": [load, list(os.getloadavg())],
              "rows": rows, "linear_fit": fit, "seconds_per_1000_utterances": per_k, "peak_rss_mb": peak,
              "time_ratio_largest_vs_smallest_per_utterance": {k: round(v[-1] / v[0], 2) for k, v in per_k.items()},
              "peak_rss_ratio_largest_vs_smallest": {k: round(v[-1] / v[0], 3) for k, v in peak.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_store.json").write_text(json.dumps(report, indent=2))
    print(f"{'utterances':>10} {'store MB':>9} " + " ".join(f"{s + ' s':>14}" for s in ("write", *SELECTORS)))
    for r in rows:
        print(f"{r['utterances']:>10} {r['store_mb']:>9} " + " ".join(
            f"{r[s]['wall_s']:>7.2f}/{r[s]['peak_rss_mb']:>5.0f}MB" for s in ("write", *SELECTORS)))


if __name__ == "__main__":
    main()
