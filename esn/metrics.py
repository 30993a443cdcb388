"""Recognition metrics per condition, and what an intervention did relative to the unmodified model.

All statistics come with bootstrap 95 % CIs over utterances. Resamples are shared by every condition
(paired bootstrap), so a difference between conditions is resampled as a difference.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

CONDITION_KEYS = ["mode", "variant", "control", "target", "fraction", "alpha", "layer"]
#: table-wide provenance columns: one value per table, copied onto every output table
CARRIED = ["scoring"]


def _pivot(table: pd.DataFrame, labels: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[str]]:
    """Conditions (rows of a frame), true labels [U] and predictions [U, K] as label indices."""
    index = {l: i for i, l in enumerate(labels)}
    conds = table[CONDITION_KEYS].drop_duplicates().reset_index(drop=True)
    key = table[CONDITION_KEYS].astype(str).agg("|".join, axis=1)
    conds_key = conds.astype(str).agg("|".join, axis=1).tolist()
    wide = pd.DataFrame({"u": table["utterance_id"], "k": key, "p": table["predicted"].map(index)}
                        ).pivot(index="u", columns="k", values="p")[conds_key]
    truth = table.drop_duplicates("utterance_id").set_index("utterance_id")["emotion"].reindex(wide.index)
    if wide.isna().any().any():
        raise ValueError("intervention table is not complete: some (utterance, condition) rows are missing")
    return conds, truth.map(index).to_numpy(), wide.to_numpy(dtype=int), list(wide.index)


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


def bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Row 0: the observed data (all ones); rows 1..n_boot: multinomial resamples of the utterances."""
    rng = np.random.default_rng(seed)
    w = np.ones((n_boot + 1, n))
    for r in range(1, n_boot + 1):
        w[r] = np.bincount(rng.integers(0, n, n), minlength=n)
    return w


def summarize(table: pd.DataFrame, labels: list[str], *, n_boot: int = 1000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Tables `conditions` (accuracy, UAR, macro-F1, per-class recall, target share, flip rate) and
    `delta_recall` (Δrecall[target, class] and specificity against the unmodified model), with CIs.
    Provenance columns (`CARRIED`, e.g. the label scoring) are copied onto every output table; a table
    mixing two values of one is refused (its conditions would not be comparable)."""
    carried = {}
    for col in (c for c in CARRIED if c in table.columns):
        values = table[col].unique()
        if len(values) != 1:
            raise ValueError(f"the table mixes {col} values {sorted(map(str, values))}: score all conditions alike")
        carried[col] = values[0]
    conds, y, pred, _ = _pivot(table, labels)
    C = len(labels)
    w = bootstrap_weights(len(y), n_boot, seed)
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

    def ci(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with warnings.catch_warnings():  # statistics undefined for a condition (e.g. flip rate of none) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return x[0], np.nanpercentile(x[1:], 2.5, axis=0), np.nanpercentile(x[1:], 97.5, axis=0)

    rows = conds.copy()
    for name, stat in {"accuracy": acc, "uar": recall.mean(-1), "macro_f1": f1.mean(-1), "flip_rate": flip}.items():
        rows[name], rows[f"{name}_lo"], rows[f"{name}_hi"] = ci(stat)
    t_share = np.take_along_axis(share, np.clip(target_idx, 0, None)[None, :, None], axis=-1)[..., 0]
    rows["target_share"], rows["target_share_lo"], rows["target_share_hi"] = ci(np.where(target_idx >= 0, t_share, np.nan))
    for c, label in enumerate(labels):
        rows[f"recall_{label}"] = recall[0, :, c]

    summary = _mean_over_targets(conds, target_idx, delta, ci)
    injection = _injection(conds, {"accuracy": acc, "uar": recall.mean(-1), "macro_f1": f1.mean(-1)}, recall, base,
                           labels, ci)
    long = []
    for k in range(len(conds)):
        e = target_idx[k]
        if e < 0:
            continue
        others = [c for c in range(C) if c != e]
        spec = delta[:, k, e] - delta[:, k, others].mean(-1)
        for c in range(C):
            est, lo, hi = ci(delta[:, k, c])
            long.append({**conds.iloc[k].to_dict(), "class": labels[c], "delta_recall": est, "lo": lo, "hi": hi})
        est, lo, hi = ci(spec)
        long.append({**conds.iloc[k].to_dict(), "class": "specificity", "delta_recall": est, "lo": lo, "hi": hi})
    out = {"conditions": rows, "delta_recall": pd.DataFrame(long), "summary": summary, "injection": injection}
    for frame in out.values():
        for col, value in carried.items():
            frame[col] = value
    return out


INJECTION_COLUMNS = ["strategy", "control", "fraction", "alpha", "statistic", "estimate", "lo", "hi",
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
            rows.append({"strategy": c["target"], "control": c["control"], "fraction": c["fraction"],
                         "alpha": c["alpha"], "statistic": name, "estimate": est, "lo": lo, "hi": hi,
                         "change": d, "change_lo": dlo, "change_hi": dhi})
    return pd.DataFrame(rows, columns=INJECTION_COLUMNS)


def _mean_over_targets(conds: pd.DataFrame, target_idx: np.ndarray, delta: np.ndarray, ci) -> pd.DataFrame:
    """Per (mode, variant, control, fraction, alpha): means over target emotions, resampled jointly (paired).

    self = mean_e Δrecall(e, e); others = mean_e mean_{c≠e} Δrecall(e, c); specificity = self − others;
    specificity_vs_random = mean_e [specificity_selected(e) − specificity_random(e)] (selected rows only).
    """
    C = delta.shape[-1]
    per = {}
    for k, e in enumerate(target_idx):
        if e < 0:
            continue
        others = [c for c in range(C) if c != e]
        key = tuple(conds.loc[k, ["mode", "variant", "control", "fraction", "alpha"]])
        per.setdefault(key, {})[int(e)] = (delta[:, k, e], delta[:, k, others].mean(-1))
    rows = []
    for (mode, variant, control, fraction, alpha), by_target in per.items():
        own = np.mean([v[0] for v in by_target.values()], axis=0)
        rest = np.mean([v[1] for v in by_target.values()], axis=0)
        stats = {"self": own, "others": rest, "specificity": own - rest}
        twin = per.get((mode, variant, "random", fraction, alpha)) if control == "selected" else None
        if twin is not None and set(twin) == set(by_target):
            diff = [(v[0] - v[1]) - (twin[e][0] - twin[e][1]) for e, v in by_target.items()]
            stats["specificity_vs_random"] = np.mean(diff, axis=0)
        for name, x in stats.items():
            est, lo, hi = ci(x)
            rows.append({"mode": mode, "variant": variant, "control": control, "fraction": fraction, "alpha": alpha,
                         "statistic": name, "estimate": est, "lo": lo, "hi": hi, "targets": len(by_target)})
    return pd.DataFrame(rows)


TRANSFER_COLUMNS = ["identify", "evaluate", "selector", "control", "target", "class", "delta_recall", "lo", "hi"]


def transfer_table(delta: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Δrecall (and specificity) of main-size deactivation per (identify, evaluate, selector, control, target,
    class) from the delta_recall tables of every study of a model (columns identify, evaluate, selector added)."""
    d = delta[(delta["mode"] == "deactivate") & (delta["variant"].fillna("all") == "all")
              & np.isclose(delta["fraction"].astype(float), fraction)]
    return d[TRANSFER_COLUMNS].sort_values(TRANSFER_COLUMNS[:6], kind="stable").reset_index(drop=True)
