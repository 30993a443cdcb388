"""A population of organisms: the same organism trained with different seeds, read as one experiment.

Floats differ across CPUs, so one trained organism is one draw from a distribution of models; the
variance that matters for a claim about ESNs is between models, not between the utterances of one
model. Each organism runs through capture, selection, interventions and metrics as its own model
(`population` in the config); this module gathers their tables, at the main set size, into

- `organism_table`: per organism × study × selector × target emotion (and `mean`, over targets): the
  self drop, the others' drop, specificity with its speaker-level CI, and the layer-matched random
  control (mean over draws, selected − random with its paired CI, empirical p-value);
- `knockout_table`: per organism × evaluation corpus × layer: UAR with that layer's MLP zeroed and its
  change from the unmodified model;
- `population_summary`: per claim, the mean over organisms with a bootstrap CI that resamples
  *organisms*, and "in k of N organisms the claim holds", where the claim is decided per organism by
  its own CI. The claims (`CLAIMS`) are one-sided and stated so that a reader can check them on any one
  organism's tables. Claims about sets carry their **base rate** — how often the organisms' random draws
  (`draws_table`) pass the same test — and a verdict against it (`esn.claims`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from esn import claims
from esn.tables import ALL, read_table, selection_variant, write_table

#: statistic -> (claim, how it is decided on one organism's row)
CLAIMS: dict[str, tuple[str, str]] = {
    "self": ("deactivating an emotion's set lowers that emotion's recall", "hi < 0"),
    "others": ("deactivating an emotion's set lowers the other emotions' recall", "hi < 0"),
    "specificity": ("the set is specific: its emotion loses more recall than the others", "hi < 0"),
    "vs_random": ("the set is more specific than a layer-matched random set", "vs_random_hi < 0"),
    "knockout": ("zeroing this layer's MLP lowers UAR", "change_hi < 0"),
    "heldout_uar": ("held-out UAR lies in the target window [0.70, 0.92]", "0.70 <= value <= 0.92"),
}
UAR_WINDOW = (0.70, 0.92)
ORGANISM_COLUMNS = ["organism", "seed", "identify", "evaluate", "selector", "target", "self", "others", "specificity",
                    "specificity_lo", "specificity_hi", "random_specificity", "vs_random", "vs_random_lo",
                    "vs_random_hi", "p_value", "random_draws", "bootstrap_unit"]


def _main_deactivation(frame: pd.DataFrame, fraction: float) -> pd.DataFrame:
    return frame[(frame["mode"] == "deactivate") & (selection_variant(frame) == ALL) & (frame["control"] == "selected")
                 & np.isclose(frame["fraction"].astype(float), fraction)]


#: the specificity row's columns against its random control (metrics.NULL_COLUMNS), as named here
_NULL = {"random_specificity": "random_mean", "vs_random": "vs_random", "vs_random_lo": "vs_random_lo",
         "vs_random_hi": "vs_random_hi", "p_value": "p_value", "random_draws": "random_draws"}


def _specificity_columns(spec: pd.Series, estimate: str) -> dict[str, object]:
    """Specificity with its CI and its random control, from a delta_recall (`estimate` = "delta_recall") or
    summary (`estimate` = "estimate") row."""
    return {"specificity": spec[estimate], "specificity_lo": spec["lo"], "specificity_hi": spec["hi"],
            **{name: spec.get(column, np.nan) for name, column in _NULL.items()},
            "bootstrap_unit": spec.get("bootstrap_unit", "")}


def organism_rows(delta: pd.DataFrame, summary: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """One organism's study and selector: a row per target emotion (from its `delta_recall` table) and one
    for the mean over targets (`target` = "mean", from its `summary` table), at the main set size."""
    d = _main_deactivation(delta, fraction)
    rows = []
    for target, t in d.groupby("target", sort=False):
        own = t[t["class"] == target].iloc[0]["delta_recall"]
        spec = t[t["class"] == "specificity"].iloc[0]
        rows.append({"target": target, "self": own, "others": own - spec["delta_recall"],
                     **_specificity_columns(spec, "delta_recall")})
    s = _main_deactivation(summary, fraction).set_index("statistic")
    if "specificity" in s.index:
        rows.append({"target": "mean", "self": s.loc["self", "estimate"], "others": s.loc["others", "estimate"],
                     **_specificity_columns(s.loc["specificity"], "estimate"),
                     "self_hi": s.loc["self", "hi"], "others_hi": s.loc["others", "hi"]})
    return pd.DataFrame(rows)


def organism_table(tables: Sequence[Mapping[str, object]], fraction: float) -> pd.DataFrame:
    """`tables`: one mapping per (organism, study, selector) with keys organism, seed, identify, evaluate,
    selector, delta (path or frame of its delta_recall table) and summary (likewise)."""
    frames = []
    for t in tables:
        delta, summary = (x if isinstance(x, pd.DataFrame) else read_table(x, kind)
                          for x, kind in ((t["delta"], "delta_recall"), (t["summary"], "summary")))
        rows = organism_rows(delta, summary, fraction)
        for key in ("organism", "seed", "identify", "evaluate", "selector"):
            rows[key] = t[key]
        frames.append(rows)
    out = pd.concat(frames, ignore_index=True)
    return out.reindex(columns=[*ORGANISM_COLUMNS, "self_hi", "others_hi"])


_STUDY = ("identify", "evaluate", "selector")
DRAW_COLUMNS = ["organism", "seed", "identify", "evaluate", "selector", "draw", "self", "self_hi", "others",
                "others_hi", "specificity", "specificity_hi", "vs_random", "vs_random_hi"]


def draws_table(tables: Sequence[Mapping[str, object]], fraction: float) -> pd.DataFrame:
    """Each organism's random draws at the main size, read like its selected set (`mean` over targets): self,
    others' drop and specificity with their upper bounds, and specificity against the other draws
    (`vs_random*`, leave-one-out) — the sets whose pass rate is each claim's base rate (`esn.claims`).
    `tables` as for `organism_table`."""
    rows = []
    for t in tables:
        summary = t["summary"] if isinstance(t["summary"], pd.DataFrame) else read_table(t["summary"], "summary")
        r = summary[(summary["mode"] == "deactivate") & (selection_variant(summary) == ALL)
                    & (summary["control"] == "random") & np.isclose(summary["fraction"].astype(float), fraction)]
        for draw, d in r.groupby("draw", sort=True):
            s = d.set_index("statistic")
            rows.append({**{k: t[k] for k in ("organism", "seed", *_STUDY)}, "draw": int(draw),
                         **{f"{x}{c}": s.loc[x, col] for x in ("self", "others", "specificity")
                            for c, col in (("", "estimate"), ("_hi", "hi"))},
                         "vs_random": s.loc["specificity"].get("vs_random", np.nan),
                         "vs_random_hi": s.loc["specificity"].get("vs_random_hi", np.nan)})
    return pd.DataFrame(rows, columns=DRAW_COLUMNS)


def knockout_table(tables: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """`tables`: one mapping per (organism, evaluation corpus) with keys organism, seed, evaluate and knockout
    (path or frame of its knockout table: the unmodified row and one row per knocked-out layer)."""
    rows = []
    for t in tables:
        k = t["knockout"] if isinstance(t["knockout"], pd.DataFrame) else read_table(t["knockout"], "knockout")
        base = k[k["mode"] == "none"].iloc[0]
        for _, r in k[k["mode"] == "knockout"].iterrows():
            rows.append({"organism": t["organism"], "seed": t["seed"], "evaluate": t["evaluate"],
                         "layer": int(r["layer"]), "uar": r["uar"], "uar_lo": r["uar_lo"], "uar_hi": r["uar_hi"],
                         "unmodified_uar": base["uar"], "change": r["uar_change"], "change_lo": r["uar_change_lo"],
                         "change_hi": r["uar_change_hi"]})
    return pd.DataFrame(rows)


def _bootstrap_mean(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean over organisms with a percentile CI from resampling organisms (NaN interval for one organism)."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    if len(values) == 1:
        return float(values[0]), np.nan, np.nan
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _null(k: int, organisms: pd.Series, draws: pd.DataFrame, statistic: str) -> dict[str, object]:
    """The claim's base rate over the random draws of `organisms` and the verdict of `esn.claims`: k of N
    against each organism's own random pass rate. No draws (or, for vs_random, fewer than two per organism,
    so none can be set against the others): no base rate and no verdict."""
    mine = draws[draws["organism"].isin(organisms)]
    mine = mine[mine[claims.criterion(statistic, wide=True)].notna()]
    if mine.empty:
        return {}
    passed = claims.passes(mine, statistic, wide=True)
    per = passed.groupby(mine["organism"]).agg(["sum", "size"])
    rates = [claims.null_rate(int(per.loc[o, "sum"]), int(per.loc[o, "size"])) if o in per.index else 1.0
             for o in organisms]
    p, holds = claims.verdict(k, rates)
    return {"random_passed": int(passed.sum()), "random_draws": len(mine), "base_rate": float(passed.mean()),
            "p_null": p, "verdict": "holds" if holds else "not above random"}


SUMMARY_NULL = ["random_passed", "random_draws", "base_rate", "p_null", "verdict"]


def population_summary(organisms: pd.DataFrame, knockout: pd.DataFrame, heldout: pd.DataFrame,
                       draws: pd.DataFrame | None = None, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per claim: mean over organisms, its bootstrap CI over organisms, N and k (organisms where it holds);
    for the claims about sets, the base rate (`random_passed` of `random_draws` draws pass the same test,
    `base_rate`), P(k or more) if selected sets passed like random ones (`p_null`) and the `verdict`
    (`esn.claims`): "holds" when that is ≤ 0.05.

    `organisms`: `organism_table`'s rows (the `mean` target is used); `knockout`: `knockout_table`'s rows;
    `heldout`: columns organism, corpus, heldout_uar (from each organism's metrics.json); `draws`:
    `draws_table`'s rows (None: no base rates)."""
    rng = np.random.default_rng(seed)
    draws = pd.DataFrame(columns=DRAW_COLUMNS) if draws is None else draws
    rows = []

    def add(group: Mapping[str, object], statistic: str, values: pd.Series, holds: pd.Series,
            null: Mapping[str, object] | None = None) -> None:
        mean, lo, hi = _bootstrap_mean(values.to_numpy(float), n_boot, rng)
        rows.append({**group, "statistic": statistic, "mean": mean, "lo": lo, "hi": hi,
                     "sd": float(values.std(ddof=1)) if len(values) > 1 else np.nan,
                     "k": int(holds.sum()), "n": int(len(values)), "claim": CLAIMS[statistic][0],
                     "holds_when": CLAIMS[statistic][1], **(null or {})})

    m = organisms[organisms["target"] == "mean"]
    for (identify, evaluate, selector), g in m.groupby(["identify", "evaluate", "selector"], sort=False):
        group = {"identify": identify, "evaluate": evaluate, "selector": selector, "layer": np.nan, "corpus": ""}
        mine = draws[(draws["identify"] == identify) & (draws["evaluate"] == evaluate)
                     & (draws["selector"] == selector)]
        for statistic in claims.CRITERIA:
            holds = claims.passes(g, statistic, wide=True)
            add(group, statistic, g[statistic], holds, _null(int(holds.sum()), g["organism"], mine, statistic))
    for (evaluate, layer), g in (knockout.groupby(["evaluate", "layer"], sort=True) if len(knockout) else []):
        add({"identify": "", "evaluate": evaluate, "selector": "", "layer": layer, "corpus": ""}, "knockout",
            g["change"], g["change_hi"] < 0)
    for corpus, g in (heldout.groupby("corpus", sort=True) if len(heldout) else []):
        lo, hi = UAR_WINDOW
        add({"identify": "", "evaluate": "", "selector": "", "layer": np.nan, "corpus": corpus}, "heldout_uar",
            g["heldout_uar"], g["heldout_uar"].between(lo, hi))
    out = pd.DataFrame(rows)
    return out.reindex(columns=[*(c for c in out.columns if c not in SUMMARY_NULL), *SUMMARY_NULL])


def heldout_table(metrics: Mapping[str, Mapping[str, object]]) -> pd.DataFrame:
    """Held-out UAR and accuracy per organism and corpus from each organism's metrics.json (parsed)."""
    rows = [{"organism": name, "corpus": corpus, "heldout_uar": c["heldout_uar"], "heldout_accuracy": c["heldout_accuracy"]}
            for name, m in metrics.items() for corpus, c in m["corpora"].items()]
    return pd.DataFrame(rows)


def claim_sentence(row: Mapping[str, object]) -> str:
    """"mad, identify synthetic → evaluate synthetic: the set is specific … in 4 of 5 organisms"."""
    parts = [row.get("selector"),
             f"identify {row['identify']} → evaluate {row['evaluate']}" if row.get("identify") else
             (f"on {row['evaluate']}" if row.get("evaluate") else ""),
             f"layer {int(row['layer'])}" if pd.notna(row.get("layer")) else "",
             row.get("corpus")]
    where = ", ".join(x for x in parts if isinstance(x, str) and x)
    sentence = f"{where}: {row['claim']} in {row['k']} of {row['n']} organisms"
    if pd.notna(row.get("base_rate")):
        sentence += (f"; random sets pass this test in {100 * row['base_rate']:.0f} % of"
                     f" {int(row['random_draws'])} draws (P = {row['p_null']:.2g}: {row['verdict']})")
    return sentence


def write(out: Mapping[str, Path | str], frames: Mapping[str, pd.DataFrame]) -> None:
    """Each table (organisms, draws, knockout, heldout, summary) through the table contract (kind population_<name>)."""
    for key, frame in frames.items():
        write_table(frame, out[key], f"population_{key}")


def _verdict_cells(row: pd.Series) -> list[str]:
    """k of N, then the random draws that pass the same test, P(k or more of N) and the verdict."""
    cells = [f"{int(row['k'])} of {int(row['n'])}"]
    if pd.isna(row.get("base_rate")):
        return cells + ["", "", ""]
    return cells + [f"{int(row['random_passed'])} of {int(row['random_draws'])} ({100 * row['base_rate']:.0f} %)",
                    f"{row['p_null']:.2g}", str(row["verdict"])]


def claims_markdown(summary: pd.DataFrame) -> str:
    """The README's claim table from a population `summary`: per study and selector, the mean specificity over
    organisms (its CI resamples organisms), then "specific" and "more specific than random", each as k of N,
    the random draws that pass the same test, P and the verdict; then held-out UAR and layer knockout.
    `python -m esn.population SUMMARY_CSV` prints it, so the README's numbers are regenerated, not typed."""
    verdict = ["random sets passing", "P", "verdict"]
    columns = ["study", "selector", "mean specificity [95 % CI over organisms]", "specific: k of N", *verdict,
               "beats random: k of N", *verdict]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    sets = summary[summary["statistic"].isin(["specificity", "vs_random"])]
    for (identify, evaluate, selector), g in sets.groupby(["identify", "evaluate", "selector"], sort=False):
        s = g.set_index("statistic")
        spec, vs = s.loc["specificity"], s.loc["vs_random"]
        lines.append(f"| {identify} → {evaluate} | {selector} | {spec['mean']:+.2f} [{spec['lo']:+.2f}, {spec['hi']:+.2f}] | "
                     + " | ".join(_verdict_cells(spec) + _verdict_cells(vs)) + " |")
    lines += ["", "| claim | where | k of N | mean (sd) over organisms |", "|---|---|---|---|"]
    for _, r in summary[summary["statistic"] == "heldout_uar"].iterrows():
        lines.append(f"| {r['claim']} | {r['corpus']} | {int(r['k'])} of {int(r['n'])} | {r['mean']:.3f} ({r['sd']:.3f}) |")
    for _, r in summary[summary["statistic"] == "knockout"].iterrows():
        lines.append(f"| {r['claim']} | {r['evaluate']}, layer {int(r['layer'])} | {int(r['k'])} of {int(r['n'])} "
                     f"| {r['mean']:+.3f} ({r['sd']:.3f}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the README's claim table: python -m esn.population results/tables/population/<model>/summary.csv
    import sys

    print(claims_markdown(read_table(sys.argv[1], "population_summary")), end="")
