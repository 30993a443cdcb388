"""Claims read against their own null: how often a random set passes the same test.

A claim such as "the set is specific" is decided on one organism by its own interval (`hi < 0`). A
layer-matched random set passes that test far more often than the nominal 2.5 % — a particular random set
can have a real, small effect, and the interval is conditional on the set — so "k of N" says little alone.
It is read against the **base rate**: the fraction of random draws that pass the same criterion.

The rule (`verdict`): under the null that selected sets pass like random ones, organism i passes with its
own random pass rate p_i, so k ~ Poisson-binomial(p_1 … p_N) (a binomial when the p_i are equal); the claim
**holds** when P(K ≥ k) ≤ 0.05, one-sided. p_i is estimated from the organism's R draws as (m_i + 1) / (R + 1)
(`null_rate`): R draws cannot show a rate below 1 / (R + 1), the same floor as the empirical p-value's. With
one organism the rule reduces to that p-value's floor: a pass holds only when (m + 1) / (R + 1) ≤ 0.05,
i.e. with R ≥ 19 draws of which none passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

ALPHA = 0.05
#: claim statistic -> the column of its row that must lie below 0 for the claim to pass (one organism, one set)
CRITERIA: dict[str, tuple[str, str]] = {
    "self": ("self", "hi"), "others": ("others", "hi"), "specificity": ("specificity", "hi"),
    "vs_random": ("specificity", "vs_random_hi"),
}


def tail_probability(k: int, rates: Sequence[float]) -> float:
    """P(K ≥ k) for K the number of successes of independent Bernoulli trials with success `rates`."""
    dist = np.array([1.0])
    for p in rates:
        dist = np.convolve(dist, [1.0 - p, p])
    return float(dist[k:].sum()) if k > 0 else 1.0


def null_rate(passed: int, draws: int) -> float:
    """The random pass rate used by the test: (m + 1) / (R + 1), never 0 for finitely many draws."""
    return (passed + 1) / (draws + 1)


def verdict(k: int, rates: Sequence[float], alpha: float = ALPHA) -> tuple[float, bool]:
    """(P(K ≥ k) under the random pass rates, whether the claim holds: that probability ≤ alpha)."""
    p = tail_probability(k, rates)
    return p, bool(p <= alpha)


def criterion(statistic: str, wide: bool = False) -> str:
    """The column that must lie below 0: in a `summary` table's row of statistic CRITERIA[statistic][0]
    (`wide` False), or in a table with one row per set and a column per statistic (`wide`: `specificity_hi`)."""
    row, column = CRITERIA[statistic]
    return f"{row}_{column}" if wide and column == "hi" else column


def passes(rows: pd.DataFrame, statistic: str, wide: bool = False) -> pd.Series:
    """Whether each row (one set: selected or one random draw) passes `statistic`'s criterion; a row whose
    criterion column is missing (NaN) does not pass."""
    return rows[criterion(statistic, wide)].astype(float) < 0


def run_claims(summary: pd.DataFrame) -> pd.DataFrame:
    """One run's claims from its `summary` table (means over targets): per selected set of a condition
    (mode, variant, fraction, alpha) that has random draws, and per claim: whether the set passes, how many
    of its R draws pass the same criterion (vs_random: each draw against the other draws), the base rate
    m / R, P(a random set passes) (m + 1) / (R + 1) and whether the claim holds (passes and that ≤ 0.05)."""
    keys = ["mode", "variant", "fraction", "alpha"]
    rows = []
    selected = summary[summary["control"] == "selected"]
    random = summary[summary["control"] == "random"]
    for key, sel in selected.groupby(keys, sort=False, dropna=False):
        twins = random.merge(pd.DataFrame([dict(zip(keys, key))]), on=keys)
        if twins.empty:
            continue
        for claim, (statistic, _) in CRITERIA.items():
            own, draws = sel[sel["statistic"] == statistic], twins[twins["statistic"] == statistic]
            if own.empty or draws.empty:
                continue
            ok, m, r = bool(passes(own, claim).iloc[0]), int(passes(draws, claim).sum()), len(draws)
            p = null_rate(m, r) if ok else 1.0
            rows.append({**dict(zip(keys, key)), "claim": claim, "passes": ok, "random_passed": m, "random_draws": r,
                         "base_rate": m / r, "p_null": p, "holds": ok and p <= ALPHA})
    return pd.DataFrame(rows)
