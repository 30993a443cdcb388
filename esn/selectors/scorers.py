"""The selectors: functions of the sufficient statistics that score every neuron for every emotion, each with
the secondary keys that break its ties (LAP, LAPE, MAD, CAS, attribution)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from esn.selectors.statistics import EmotionStats


# --------------------------------------------------------------------------------------------------
# Selectors: EmotionStats -> RankingKeys (score [E, L, N], higher = more emotion-sensitive, -inf = not for e)


@dataclass
class RankingKeys:
    """A selector's ranking keys, each [E, L, N] and higher = better: `score`, then each of `secondary`
    in order (ties of the score are broken by meaningful statistics, not by storage order). `extras`:
    per-selection scalars worth recording (e.g. LAPE's bar)."""

    score: np.ndarray
    secondary: dict[str, np.ndarray]
    extras: dict[str, float] = field(default_factory=dict)


Selector = Callable[..., RankingKeys]
SELECTORS: dict[str, Selector] = {}


def _selector(*needs: str) -> Callable[[Selector], Selector]:
    def register(fn: Selector) -> Selector:
        fn.needs = needs  # type: ignore[attr-defined]
        SELECTORS[fn.__name__] = fn
        return fn
    return register


def _with_data(stats: EmotionStats) -> np.ndarray:
    """Emotions with at least one identification utterance: the only ones scored or compared against."""
    return stats.n[:, 0] > 0


def _scatter(stats: EmotionStats, valid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Place scores of the emotions with data into [E, L, N]; the rest and NaN become -inf."""
    score = np.full(stats.shape, -np.inf)
    score[valid] = np.where(np.isnan(values), -np.inf, values)
    return score


def _versus_others(stats: EmotionStats, x: np.ndarray, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """x_e − reduce_{e'≠e} x_e' over the emotions with data, [E, L, N] (−inf when no other emotion has data)."""
    valid = _with_data(stats)
    v = x[valid]
    if len(v) < 2:
        return _scatter(stats, valid, np.full_like(v, np.nan))
    return _scatter(stats, valid, np.stack([v[i] - reduce(np.delete(v, i, 0), axis=0) for i in range(len(v))]))


@_selector("positive", "mean")
def lap(stats: EmotionStats) -> RankingKeys:
    """LAP, activation frequency (Tang et al. 2024, "Language-specific neurons", ACL): score = p_e.

    p_e = Σ_u frac_positive·n_positions / Σ_u n_positions over e's utterances u: P(a > 0) pooled over
    positions, so long utterances weigh by their length, as in counting activations over all tokens.
    Gated activations saturate p at 1 for many neurons, so ties are common and decided by: the margin
    p_e − max_{e'≠e} p_e' (fires for e, rarely for the others), then the mean activation μ_e.
    """
    every = np.ones(len(stats.emotions), bool)
    return RankingKeys(_scatter(stats, every, stats.p), {"margin": _versus_others(stats, stats.p, np.max),
                                                  "mu": _scatter(stats, every, stats.mu)})


def lape_bar(p: np.ndarray, quantile: float) -> tuple[float, bool]:
    """LAPE's activity bar: the `quantile` of all p, unless that quantile falls in the tie at the top value
    (saturation: with gated activations p = 1 for many neurons, and the bar would be exactly 1); then the
    `quantile` of the values below the top — the bar keeps its meaning, "among the most active", for the
    values it can still tell apart, and every saturated value passes it. Returns (bar, saturated)."""
    values = p[np.isfinite(p)].ravel()
    bar, top = float(np.quantile(values, quantile)), float(values.max())
    below = values[values < top]
    if bar < top or not below.size:
        return bar, False
    return float(np.quantile(below, quantile)), True


@_selector("positive", "mean")
def lape(stats: EmotionStats, quantile: float = 0.95, assign: str = "lape") -> RankingKeys:
    """LAPE, activation-probability entropy (Tang et al. 2024): score = −H, low entropy first.

    p̂_e = p_e / Σ_e' p_e',  H = −Σ_e p̂_e log p̂_e (0 log 0 = 0), over the emotions with data.
    Bar = `lape_bar` (the `quantile` of ALL p values over e, l, n; below the top value when saturated).
    Candidates: neurons with max_e p_e ≥ bar. Assignment: `"lape"` — to every e with p_e ≥ bar (LAPE's
    rule); `"argmax"` — only to argmax_e p_e (Emotion-Neuron's rule). Unassigned, and neurons never active
    (H undefined), score −inf. Ties of H (e.g. one-hot neurons, H = 0) are decided by p_e, then μ_e.
    """
    if assign not in ("lape", "argmax"):
        raise ValueError(f"assign must be 'lape' or 'argmax', not {assign!r}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], not {quantile}")
    valid = _with_data(stats)
    p = stats.p[valid]
    bar, saturated = lape_bar(p, quantile)
    total = p.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = p / total
        entropy = -np.where(phat > 0, phat * np.log(phat), 0.0).sum(0)
    candidate = (p.max(0) >= bar) & (total > 0)
    if assign == "lape":
        assigned = p >= bar
    else:
        assigned = np.arange(len(p))[:, None, None] == p.argmax(0)
    every = np.ones(len(stats.emotions), bool)
    return RankingKeys(_scatter(stats, valid, np.where(assigned & candidate, -entropy, -np.inf)),
                {"p": _scatter(stats, every, stats.p), "mu": _scatter(stats, every, stats.mu)},
                {"lape_bar": bar, "lape_bar_saturated": float(saturated)})


@_selector("mean")
def mad(stats: EmotionStats) -> RankingKeys:
    """MAD, magnitude / mean deviation (Zhao, Schuller & Sisman 2026): μ_e − mean_{e'≠e} μ_e'.

    μ_e = mean over e's utterances of the per-utterance mean activation over the position group.
    Ties are decided by the contrast margin μ_e − max_{e'≠e} μ_e' (CAS), then μ_e.
    """
    every = np.ones(len(stats.emotions), bool)
    return RankingKeys(_versus_others(stats, stats.mu, np.mean), {"margin": _versus_others(stats, stats.mu, np.max),
                                                           "mu": _scatter(stats, every, stats.mu)})


@_selector("mean")
def cas(stats: EmotionStats) -> RankingKeys:
    """CAS, contrast margin (Zhao, Schuller & Sisman 2026): μ_e − max_{e'≠e} μ_e'.

    Positive only where e activates the neuron more than every other emotion does. Ties (e.g. neurons
    silent for every emotion) are decided by the mean deviation μ_e − mean_{e'≠e} μ_e' (MAD), then μ_e.
    """
    every = np.ones(len(stats.emotions), bool)
    return RankingKeys(_versus_others(stats, stats.mu, np.max), {"deviation": _versus_others(stats, stats.mu, np.mean),
                                                          "mu": _scatter(stats, every, stats.mu)})


@_selector("attribution", "mean")
def attribution(stats: EmotionStats) -> RankingKeys:
    """Attribution (beyond the paper, which only correlates): mean over e's utterances of the store's
    `attribution` = Σ_t a·∂log p(true label)/∂a at the answer position — what the decision uses.
    Ties (e.g. neurons the decision never uses, attribution 0) are decided by the attribution margin over
    the other emotions, then μ_e.
    """
    every = np.ones(len(stats.emotions), bool)
    return RankingKeys(_scatter(stats, every, stats.attribution),
                {"margin": _versus_others(stats, stats.attribution, np.max), "mu": _scatter(stats, every, stats.mu)})


def get_selector(name: str) -> Selector:
    """The registered selector `name`; a ValueError lists the known ones."""
    try:
        return SELECTORS[name]
    except KeyError:
        raise ValueError(f"unknown selector {name!r}; known: {', '.join(SELECTORS)}") from None
