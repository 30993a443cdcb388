"""Residual vs MLP-output steering vectors vs neuron gain, at one layer and at each layer in turn (issue #25).

With `--run`, runs the default study's steering table four times (stream residual | mlp_output; layers: the
config's one layer | all) with Snakemake and copies each run's tables under `--out/<stream>-<layers>/`, beside
the reference selector's gain tables; then (always) prints and writes `--out/summary.csv`: per variant, layer and
α, the mean target share over targets (vector, random direction, gain on the reference selector's set) and the
other classes' mean recall change with its 95 % interval (the `summary` table's `others`).

    .venv/bin/python benchmarks/steering_streams.py --run --out benchmarks/out/steering_streams
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from esn.tables import read_table  # noqa: E402

VARIANTS = [("residual", "null"), ("mlp_output", "null"), ("residual", "all"), ("mlp_output", "all")]


def run(out: Path, model: str, corpus: str, selector: str, layer: int) -> None:
    tables = f"results/tables/interventions/{model}/{corpus}"
    steer = f"{tables}/steering/{corpus}"
    gain = f"{tables}/{selector}/{corpus}"
    for stream, layers in VARIANTS:
        name = f"{stream}-{layers}"
        (out / name).mkdir(parents=True, exist_ok=True)
        extra = out / name / "steering.yaml"
        extra.write_text(f"steering:\n  enabled: true\n  layer: {layer}\n  selector: {selector}\n"
                         f"  stream: {stream}\n  layers: {layers}\n")
        subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config/config.yaml",
                        str(extra), "--", f"{steer}.conditions.csv", f"{gain}.conditions.csv"], cwd=ROOT, check=True)
        for kind in ("conditions", "summary"):
            shutil.copyfile(ROOT / f"{steer}.{kind}.csv", out / name / f"steering.{kind}.csv")
            shutil.copyfile(ROOT / f"{gain}.{kind}.csv", out / f"gain.{kind}.csv")
        shutil.copyfile(ROOT / f"results/tables/steering/{model}/{corpus}/{corpus}.vectors.csv",
                        out / name / "vectors.csv")


def summarise(out: Path, fraction: float) -> pd.DataFrame:
    gc = read_table(out / "gain.conditions.csv", "conditions")
    gs = read_table(out / "gain.summary.csv", "summary")
    gc = gc[(gc["mode"] == "gain") & (gc["fraction"].round(6) == round(fraction, 6)) & (gc["variant"] == "all")]
    gs = gs[(gs["mode"] == "gain") & (gs["fraction"].round(6) == round(fraction, 6)) & (gs["variant"] == "all")]
    rows = []
    for stream, layers in VARIANTS:
        name = f"{stream}-{layers}"
        if not (out / name / "steering.conditions.csv").exists():
            continue
        sc = read_table(out / name / "steering.conditions.csv", "conditions")
        ss = read_table(out / name / "steering.summary.csv", "summary")
        sc, ss = sc[sc["mode"] == "steer"], ss[(ss["mode"] == "steer") & (ss["statistic"] == "others")]
        for (layer, alpha), part in sc.groupby(["layer", "alpha"]):
            share = part.groupby("control")["target_share"].mean()
            others = ss[(ss["layer"] == layer) & (ss["alpha"] == alpha)].set_index("control")
            g = gs[(gs["alpha"] == alpha) & (gs["statistic"] == "others") & (gs["control"] == "selected")]
            rows.append({"stream": stream, "layers": layers, "layer": layer, "alpha": alpha,
                         "share_vector": share.get("selected"), "share_random": share.get("random"),
                         "share_gain": gc[(gc["alpha"] == alpha) & (gc["control"] == "selected")]["target_share"]
                         .mean(),
                         "others_vector": others.at["selected", "estimate"],
                         "others_vector_lo": others.at["selected", "lo"],
                         "others_vector_hi": others.at["selected", "hi"],
                         "others_random": others.at["random", "estimate"],
                         "others_gain": g["estimate"].mean(), "others_gain_lo": g["lo"].mean(),
                         "others_gain_hi": g["hi"].mean()})
    table = pd.DataFrame(rows)
    table.to_csv(out / "summary.csv", index=False, float_format="%.3f")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/steering_streams")
    parser.add_argument("--run", action="store_true", help="run the four steering variants first (Snakemake)")
    parser.add_argument("--model", default="organism")
    parser.add_argument("--corpus", default="synthetic")
    parser.add_argument("--selector", default="mad")
    parser.add_argument("--layer", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.05)
    args = parser.parse_args()
    if args.run:
        run(args.out, args.model, args.corpus, args.selector, args.layer)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summarise(args.out, args.fraction).to_string(index=False))
