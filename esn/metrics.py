"""Recognition metrics per condition, and what an intervention did relative to the unmodified model.

All statistics come with bootstrap 95 % CIs: expanded percentile intervals (`percentile_levels`; the plain
percentile interval under-covers with 8 speakers). The resampled unit is a choice (`unit`): **speakers** by
default — the evaluation clips of a corpus come from few speakers and clips of one speaker are not
independent, so whole speakers are drawn with replacement and each clip weighs its speaker's
multiplicity (a cluster bootstrap) — or single utterances. Tables without speakers, or with one, fall
back to utterances with a logged warning; every table records the unit used (`bootstrap_unit`).
Resamples are shared by every condition (paired bootstrap), so a difference between conditions is
resampled as a difference.

Random controls come as R independent layer-matched draws (`draw` 0..R−1; −1 for every other
condition). Each selected row is set against the null they form: the draws' mean, sd, min and max;
the empirical p-value (1 + #draws at least as extreme) / (R + 1), one-sided in the direction of the
selected effect (its sign: draws ≤ it for a negative effect, ≥ it otherwise; the smallest possible
value is 1/(R+1)); and `vs_random` = selected − mean over draws with its paired bootstrap CI. In the
`summary` table each random draw is also set against the other draws (leave-one-out), so that how often a
random set passes a selected set's tests can be counted (`esn.claims`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import special

from esn.tables import ALL, CONDITION_KEYS, INJECTION_KEYS, TWIN_KEYS, selection_variant

log = logging.getLogger(__name__)

UNITS = ("speaker", "utterance")
#: Fewer speakers than this give coarse speaker-level intervals (few distinct resamples): said in the log.
FEW_SPEAKERS = 10
#: Columns that set a selected row against its random draws (NaN on every other row).
NULL_COLUMNS = ["random_draws", "random_mean", "random_sd", "random_min", "random_max", "p_value",
                "vs_random", "vs_random_lo", "vs_random_hi"]

CI = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
#: table-wide provenance columns: one value per table, copied onto every output table
CARRIED = ["scoring", "stream"]   # stream: where a steering table's vectors act (esn.steering)


def _pivot(table: pd.DataFrame, labels: list[str]
           ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[str], pd.Series | None]:
    """Conditions (rows of a frame), true labels [U], predictions [U, K] as label indices, utterance ids
    and each utterance's speaker (None when the table has none)."""
    if "draw" not in table:  # tables written before random controls had draws
        table = table.assign(draw=-1)
    index = {l: i for i, l in enumerate(labels)}
    conds = table[list(CONDITION_KEYS)].drop_duplicates().reset_index(drop=True)
    key = table[list(CONDITION_KEYS)].astype(str).agg("|".join, axis=1)
    conds_key = conds.astype(str).agg("|".join, axis=1).tolist()
    wide = pd.DataFrame({"u": table["utterance_id"], "k": key, "p": table["predicted"].map(index)}
                        ).pivot(index="u", columns="k", values="p")[conds_key]
    first = table.drop_duplicates("utterance_id").set_index("utterance_id").reindex(wide.index)
    if wide.isna().any().any():
        raise ValueError("intervention table is not complete: some (utterance, condition) rows are missing")
    speakers = first["speaker"] if "speaker" in first else None
    return conds, first["emotion"].map(index).to_numpy(), wide.to_numpy(dtype=int), list(wide.index), speakers


def _recall(weights: np.ndarray, y: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Recall [R, K, C] for resample weights [R, U] (utterance multiplicities)."""
    out = np.empty((weights.shape[0], pred.shape[1], n_labels))
    for c in range(n_labels):
        is_c = (y == c).astype(float)
        hit = (pred == c) & (y == c)[:, None]
        out[:, :, c] = (weights @ hit) / np.maximum(weights @ is_c, 1e-12)[:, None]
    return out


def _share(weights: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Share of predictions of each label [R, K, C]."""
    total = weights.sum(1)[:, None]
    return np.stack([(weights @ (pred == c)) / total for c in range(n_labels)], axis=-1)


def bootstrap_weights(n: int, n_boot: int, seed: int, clusters: np.ndarray | None = None) -> np.ndarray:
    """Row 0: the observed data (all ones); rows 1..n_boot: resamples as utterance multiplicities [n].

    Without `clusters`: multinomial resamples of the utterances. With `clusters` (a code 0..G−1 per
    utterance, e.g. its speaker): G clusters drawn with replacement, each utterance weighted by its
    cluster's multiplicity (constant within a cluster; the multiplicities sum to G).
    """
    rng = np.random.default_rng(seed)
    w = np.ones((n_boot + 1, n))
    if clusters is None:
        for r in range(1, n_boot + 1):
            w[r] = np.bincount(rng.integers(0, n, n), minlength=n)
        return w
    codes = np.asarray(clusters, np.intp)
    g = int(codes.max()) + 1
    for r in range(1, n_boot + 1):
        w[r] = np.bincount(rng.integers(0, g, g), minlength=g)[codes]
    return w


def percentile_levels(clusters: int, level: float = 0.95) -> tuple[float, float]:
    """The percentiles of the bootstrap distribution that bound a `level` interval over `clusters` independent
    units (speakers, or utterances): Hesterberg's expanded percentile interval, whose tail α′/2 = Φ(−√(G/(G−1))
    · t_{G−1}(1 − α/2)). The plain percentile interval (2.5, 97.5) is too narrow with few units — its
    resamples' spread is (G−1)/G of the variance and it ignores the t quantile; with 8 speakers it covered
    88 % instead of 95 % (benchmarks/bench_coverage.py). Bounds stay within the resampled values (an
    accuracy interval stays in [0, 1]); the levels tend to (2.5, 97.5) as G grows."""
    alpha = 1 - level
    if clusters < 2:
        return 100 * alpha / 2, 100 * (1 - alpha / 2)
    tail = float(special.ndtr(-np.sqrt(clusters / (clusters - 1)) * special.stdtrit(clusters - 1, 1 - alpha / 2)))
    return 100 * tail, 100 * (1 - tail)


def percentile_interval(x: np.ndarray, clusters: int, level: float = 0.95
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The estimate (row 0 of `x`, the observed data) and its expanded percentile interval over the resamples
    (rows 1..) at `percentile_levels(clusters, level)`: the interval every table of the study reports.
    NaN statistics (undefined for a condition) stay NaN."""
    lo_pct, hi_pct = percentile_levels(clusters, level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return x[0], np.nanpercentile(x[1:], lo_pct, axis=0), np.nanpercentile(x[1:], hi_pct, axis=0)


def bootstrap_unit(speakers: pd.Series | None, unit: str) -> tuple[np.ndarray | None, str]:
    """The cluster code per utterance (None: utterances) and the unit used: speakers where asked and the
    table has at least two; otherwise utterances, with a logged warning."""
    if unit not in UNITS:
        raise ValueError(f"bootstrap unit must be one of {UNITS}, not {unit!r}")
    if unit == "utterance":
        return None, "utterance"
    if speakers is None or speakers.isna().any() or speakers.nunique() < 2:
        found = "no speaker column" if speakers is None else f"{speakers.nunique()} speaker(s)"
        log.warning("bootstrap over speakers asked, but the table has %s: resampling utterances instead", found)
        return None, "utterance"
    if speakers.nunique() < FEW_SPEAKERS:
        log.warning("bootstrap over only %d speakers: intervals are coarse (few distinct resamples)",
                    speakers.nunique())
    return pd.factorize(speakers)[0], "speaker"


def versus_draws(selected: np.ndarray, draws: Sequence[np.ndarray], ci: CI) -> dict[str, float]:
    """A selected statistic [B] (row 0 observed, rows 1.. resamples) against R random draws, each [B]:
    the draws' mean, sd (ddof 1), min and max, the empirical one-sided p-value and selected − mean over
    draws with its paired CI (see the module docstring)."""
    stack = np.stack(draws)                                   # [R, B]
    observed, x = stack[:, 0], float(selected[0])
    extreme = observed <= x if x < 0 else observed >= x
    est, lo, hi = ci(selected - stack.mean(0))
    return {"random_draws": len(draws), "random_mean": float(observed.mean()),
            "random_sd": float(observed.std(ddof=1)) if len(draws) > 1 else np.nan,
            "random_min": float(observed.min()), "random_max": float(observed.max()),
            "p_value": (1 + int(extreme.sum())) / (len(draws) + 1),
            "vs_random": float(est), "vs_random_lo": float(lo), "vs_random_hi": float(hi)}


def _draws_of(conds: pd.DataFrame) -> dict[tuple, list[int]]:
    """Random-control condition rows per (mode, variant, target, fraction, alpha), in draw order."""
    out: dict[tuple, list[int]] = {}
    rand = conds[conds["control"] == "random"].sort_values("draw", kind="stable")
    for k, row in rand.iterrows():
        out.setdefault(tuple(row[list(TWIN_KEYS)]), []).append(int(k))
    return out


def summarize(table: pd.DataFrame, labels: list[str], *, n_boot: int = 1000, seed: int = 0,
              unit: str = "speaker") -> dict[str, pd.DataFrame]:
    """Tables `conditions` (accuracy, UAR, macro-F1, per-class recall, target share, flip rate),
    `delta_recall` (Δrecall[target, class] and specificity against the unmodified model) and `summary`
    (means over targets), with CIs resampling `unit` and, for selected sets, the null of the random draws;
    and `injection` (label-free injection strategies against the unmodified model).
    Provenance columns (`CARRIED`, e.g. the label scoring) are copied onto every output table; a table
    mixing two values of one is refused (its conditions would not be comparable)."""
    carried = {}
    for col in (c for c in CARRIED if c in table.columns):
        values = table[col].unique()
        if len(values) != 1:
            raise ValueError(f"the table mixes {col} values {sorted(map(str, values))}: score all conditions alike")
        carried[col] = values[0]
    conds, y, pred, _, speakers = _pivot(table, labels)
    clusters, used = bootstrap_unit(speakers, unit)
    C = len(labels)
    w = bootstrap_weights(len(y), n_boot, seed, clusters)
    recall = _recall(w, y, pred, C)                                   # [R, K, C]
    share = _share(w, pred, C)                                        # [R, K, C]
    acc = (w @ (pred == y[:, None])) / w.sum(1)[:, None]              # [R, K]
    precision = np.stack([(w @ ((pred == c) & (y == c)[:, None])) / np.maximum(w @ (pred == c), 1e-12)
                          for c in range(C)], axis=-1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    base = int(np.flatnonzero((conds["mode"] == "none").to_numpy())[0])
    delta = recall - recall[:, base:base + 1, :]                      # [R, K, C]
    # flip rate toward target e: among utterances the unmodified model did not call e, the share now called e
    target_idx = conds["target"].map({l: i for i, l in enumerate(labels)}).fillna(-1).astype(int).to_numpy()
    flip = np.full((w.shape[0], len(conds)), np.nan)
    for k, e in enumerate(target_idx):
        if e >= 0:
            moved = (pred[:, base] != e)
            flip[:, k] = (w @ (moved & (pred[:, k] == e))) / np.maximum(w @ moved, 1e-12)

    n_units = len(np.unique(clusters)) if clusters is not None else len(y)

    def ci(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return percentile_interval(x, n_units)

    rows = conds.copy()
    for name, stat in {"accuracy": acc, "uar": recall.mean(-1), "macro_f1": f1.mean(-1), "flip_rate": flip}.items():
        rows[name], rows[f"{name}_lo"], rows[f"{name}_hi"] = ci(stat)
    uar = recall.mean(-1)  # UAR change against the unmodified model, paired (the same resamples)
    rows["uar_change"], rows["uar_change_lo"], rows["uar_change_hi"] = ci(uar - uar[:, base:base + 1])
    t_share = np.take_along_axis(share, np.clip(target_idx, 0, None)[None, :, None], axis=-1)[..., 0]
    rows["target_share"], rows["target_share_lo"], rows["target_share_hi"] = ci(np.where(target_idx >= 0, t_share, np.nan))
    for c, label in enumerate(labels):
        rows[f"recall_{label}"] = recall[0, :, c]
    rows["bootstrap_unit"] = used

    draws = _draws_of(conds)
    injection = _injection(conds, {"accuracy": acc, "uar": recall.mean(-1), "macro_f1": f1.mean(-1)}, recall, base,
                           labels, ci).assign(bootstrap_unit=used)
    long = []
    for k in range(len(conds)):
        e = target_idx[k]
        if e < 0:
            continue
        others = [c for c in range(C) if c != e]
        per_class = {labels[c]: delta[:, k, c] for c in range(C)}
        per_class["specificity"] = delta[:, k, e] - delta[:, k, others].mean(-1)
        twins = draws.get(tuple(conds.loc[k, list(TWIN_KEYS)]), [])
        for c, x in per_class.items():
            est, lo, hi = ci(x)
            row = {**conds.iloc[k].to_dict(), "class": c, "delta_recall": est, "lo": lo, "hi": hi}
            if conds.loc[k, "control"] == "selected" and twins:
                twin_x = [delta[:, j, labels.index(c)] if c != "specificity"
                          else delta[:, j, e] - delta[:, j, others].mean(-1) for j in twins]
                row.update(versus_draws(x, twin_x, ci))
            long.append(row)
    delta_table = pd.DataFrame(long).reindex(columns=[*CONDITION_KEYS, "class", "delta_recall", "lo", "hi",
                                                      *NULL_COLUMNS]).assign(bootstrap_unit=used)
    summary = _mean_over_targets(conds, target_idx, delta, ci).assign(bootstrap_unit=used)
    out = {"conditions": rows, "delta_recall": delta_table, "summary": summary, "injection": injection}
    for frame in out.values():
        for col, value in carried.items():
            frame[col] = value
    return out


INJECTION_COLUMNS = ["strategy", "control", "draw", "fraction", "alpha", "statistic", "estimate", "lo", "hi",
                     "change", "change_lo", "change_hi"]


def _injection(conds: pd.DataFrame, stats: dict[str, np.ndarray], recall: np.ndarray, base: int, labels: list[str],
               ci) -> pd.DataFrame:
    """Label-free injection (mode `inject`): accuracy, UAR, macro-F1 and per-class recall of each strategy
    with its CI, and its change against the unmodified model with a paired CI (same resamples)."""
    stats = {**stats, **{f"recall_{l}": recall[..., c] for c, l in enumerate(labels)}}
    rows = []
    for k in np.flatnonzero((conds["mode"] == "inject").to_numpy()):
        c = conds.iloc[k]
        for name, x in stats.items():
            est, lo, hi = ci(x[:, k])
            d, dlo, dhi = ci(x[:, k] - x[:, base])
            rows.append({"strategy": c["target"], "control": c["control"], "draw": c["draw"],
                         "fraction": c["fraction"], "alpha": c["alpha"], "statistic": name, "estimate": est, "lo": lo, "hi": hi,
                         "change": d, "change_lo": dlo, "change_hi": dhi})
    return pd.DataFrame(rows, columns=INJECTION_COLUMNS)


def _mean_over_targets(conds: pd.DataFrame, target_idx: np.ndarray, delta: np.ndarray, ci: CI) -> pd.DataFrame:
    """Per (mode, variant, control, fraction, alpha, draw, layer): means over target emotions, resampled jointly
    (layer: -1 for neuron sets; the steered layer of a steering table with several).

    self = mean_e Δrecall(e, e); others = mean_e mean_{c≠e} Δrecall(e, c); specificity = self − others.
    Selected rows are set against the same statistic of each random draw over the same targets
    (`versus_draws`); specificity_vs_random = specificity − its mean over draws (selected rows only). Each
    random draw's row is set against the other R − 1 draws alike (leave-one-out), so the null columns say how
    often a random set passes the tests a selected set is held to.
    """
    C = delta.shape[-1]
    per: dict[tuple, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for k, e in enumerate(target_idx):
        if e < 0:
            continue
        others = [c for c in range(C) if c != e]
        key = tuple(conds.loc[k, [*INJECTION_KEYS, "layer"]])
        per.setdefault(key, {})[int(e)] = (delta[:, k, e], delta[:, k, others].mean(-1))

    def statistics(by_target: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        own = np.mean([v[0] for v in by_target.values()], axis=0)
        rest = np.mean([v[1] for v in by_target.values()], axis=0)
        return {"self": own, "others": rest, "specificity": own - rest}

    rows = []
    for (mode, variant, control, fraction, alpha, draw, layer), by_target in per.items():
        stats = statistics(by_target)
        # a selected set against every draw; a random draw against the other draws (leave-one-out: the rate at
        # which random sets pass the vs_random criterion, esn.claims)
        twins = [statistics(t) for (m, v, c, f, a, d, l), t in per.items()
                 if (m, v, c, f, a, l) == (mode, variant, "random", fraction, alpha, layer) and set(t) == set(by_target)
                 and not (control == "random" and d == draw)] if control in ("selected", "random") else []
        null = {name: versus_draws(x, [t[name] for t in twins], ci) for name, x in stats.items()} if twins else {}
        if twins and control == "selected":
            stats["specificity_vs_random"] = stats["specificity"] - np.mean([t["specificity"] for t in twins], axis=0)
        for name, x in stats.items():
            est, lo, hi = ci(x)
            rows.append({"mode": mode, "variant": variant, "control": control, "fraction": fraction, "alpha": alpha,
                         "draw": draw, "layer": layer, "statistic": name, "estimate": est, "lo": lo, "hi": hi,
                         "targets": len(by_target), **null.get(name, {})})
    return pd.DataFrame(rows).reindex(columns=[*INJECTION_KEYS, "layer", "statistic", "estimate", "lo", "hi", "targets",
                                               *NULL_COLUMNS])


TRANSFER_COLUMNS = ["identify", "evaluate", "selector", "control", "draw", "target", "class", "delta_recall", "lo",
                    "hi", "random_mean", "random_sd", "p_value", "vs_random", "vs_random_lo", "vs_random_hi",
                    "bootstrap_unit"]


def transfer_table(delta: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Δrecall (and specificity) of main-size deactivation per (identify, evaluate, selector, control, target,
    class) from the delta_recall tables of every study of a model (columns identify, evaluate, selector added)."""
    d = delta[(delta["mode"] == "deactivate") & (selection_variant(delta) == ALL)
              & np.isclose(delta["fraction"].astype(float), fraction)]
    return d.reindex(columns=TRANSFER_COLUMNS).sort_values(TRANSFER_COLUMNS[:7], kind="stable").reset_index(drop=True)
