"""CPU-seconds of the population's two big costs with the Whisper-eared organism on the spoken corpora, and the
population's CPU total they imply — measured in CPU time (`time.process_time`, one thread), so a box shared with
other work inflates it far less than wall time:

  * a training step: `esn.organism.train_organism` on the config's corpora and recipe, run for `--steps` and for
    `--steps`/4 steps; the difference per step (encoding the clips and the held-out evaluation cancel out) — with
    the config's `organism.micro_batches` and, for comparison, with whole batches (1);
  * an intervention row (one clip under one condition): `esn.interventions.evaluate` on the shipped organism
    (assembled from resources/organism) over the evaluation split of one corpus, under `--conditions` random 5 %
    deactivation sets, the way an intervention job scores them.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_population_cost.py [--steps 40] [--conditions 20]

Needs the prepared corpora: .venv/bin/snakemake --cores 2 --configfile config/population.yaml
resources/corpora/synthetic/manifest.parquet resources/corpora/telephone/manifest.parquet
Writes benchmarks/out/population_cost.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from common import device_info, write

from esn.interventions import Condition, evaluate
from esn.models import load_adapter
from esn.organism import OrganismConfig, train_organism
from esn.prepare import load_manifest
from esn.shipped import assemble

ROOT = Path(__file__).resolve().parents[1]


def train_cpu(manifest: pd.DataFrame, labels: list[str], cfg: OrganismConfig, steps: int) -> float:
    """CPU-seconds of `train_organism` for `steps` steps (encoding and evaluation included)."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.process_time()
        train_organism(manifest, out, labels, OrganismConfig(**{**cfg.__dict__, "steps": steps}))
        return time.process_time() - t0


def row_cpu(model_dir: Path, spec: dict, manifest: pd.DataFrame, labels: list[str], n_conditions: int) -> dict:
    """CPU-seconds per (clip, condition) row of `evaluate` over `manifest` with `n_conditions` random sets."""
    adapter = load_adapter({**spec, "path": str(model_dir)}, labels)
    rng = np.random.default_rng(0)
    conditions = [Condition("deactivate", labels[i % len(labels)], "random", fraction=0.05,
                            neurons={layer: np.flatnonzero(rng.random(adapter.n_neurons) < 0.05)
                                     for layer in range(adapter.n_layers)}) for i in range(n_conditions)]
    evaluate(adapter, manifest.head(spec["batch_size"]), conditions[:1], batch_size=spec["batch_size"])  # warm-up
    t0 = time.process_time()
    evaluate(adapter, manifest, conditions, batch_size=spec["batch_size"])
    seconds = time.process_time() - t0
    return {"clips": len(manifest), "conditions": n_conditions + 1, "cpu_s": round(seconds, 1),
            "row_cpu_s": seconds / (len(manifest) * (n_conditions + 1))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--conditions", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("esn").setLevel(logging.WARNING)
    config = yaml.safe_load((ROOT / "config" / "population.yaml").read_text())
    names = config["organism"]["corpora"]
    labels = config["corpora"][names[0]]["classes"]
    manifest = pd.concat([load_manifest(ROOT / "resources" / "corpora" / c) for c in names], ignore_index=True)
    spec = config["models"]["organism"]
    known = {f.name for f in fields(OrganismConfig)}
    cfg = OrganismConfig(**{k: v for k, v in config["organism"].items() if k in known - {"threads"}},
                         prompt=spec["prompt"], seed=0, threads=1)

    short, long = max(args.steps // 4, 1), args.steps
    train = {}
    for pieces in sorted({1, cfg.micro_batches}):
        piece_cfg = OrganismConfig(**{**cfg.__dict__, "micro_batches": pieces})
        cpu = [train_cpu(manifest, labels, piece_cfg, n) for n in (short, long)]
        step = (cpu[1] - cpu[0]) / (long - short)
        train[pieces] = {"steps_measured": [short, long], "cpu_s": [round(c, 1) for c in cpu],
                         "step_cpu_s": round(step, 3), "fixed_cpu_s": round(cpu[0] - short * step, 1)}
    step_s, fixed_s = train[cfg.micro_batches]["step_cpu_s"], train[cfg.micro_batches]["fixed_cpu_s"]
    with tempfile.TemporaryDirectory() as tmp:
        assemble(ROOT / "resources" / "organism", Path(tmp) / "organism")
        evaluation = manifest[(manifest["split"] == "evaluation") & (manifest["corpus"] == names[0])]
        rows = row_cpu(Path(tmp) / "organism", spec, evaluation, labels, args.conditions)

    steps, organisms = config["organism"]["steps"], len(config["population"]["seeds"])
    studies, selectors = len(config["studies"]), len(config["selection"]["selectors"])
    sets = selectors * len(labels)  # one selected set per selector and emotion, each with its random draws
    train_total = organisms * (fixed_s + steps * step_s)

    def intervene_total(draws: int) -> float:
        return organisms * studies * (1 + sets * (1 + draws)) * len(evaluation) * rows["row_cpu_s"]

    result = {**device_info(), "threads": 1,
              "train_by_micro_batches": train,
              "train": {"micro_batches": cfg.micro_batches, "step_cpu_s": step_s, "fixed_cpu_s": fixed_s,
                        "organism_cpu_s": round(fixed_s + steps * step_s, 1), "steps": steps},
              "intervene": {**rows, "row_cpu_s": round(rows["row_cpu_s"], 5)},
              "population": {"organisms": organisms, "studies": studies, "sets_per_study": sets,
                             "train_cpu_s": round(train_total, 0),
                             "intervene_cpu_s_by_draws": {d: round(intervene_total(d), 0) for d in (1, 5, 9, 19)},
                             "minutes_on_2_cores_train_plus_intervene_by_draws": {
                                 d: round((train_total + intervene_total(d)) / 2 / 60, 1) for d in (1, 5, 9, 19)}}}
    write("population_cost", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
