"""Emotion-sensitive neuron selectors, computed from the activation store alone.

One streaming pass over the store's utterance blocks accumulates mergeable per-emotion sufficient
statistics (`EmotionStats`, float64, one position group); every selector is a function of them
(`SELECTORS`). A selection is data: an xarray Dataset (emotion × layer × neuron) of scores, ranks and
R seeded random orderings (the null draws), from which the neuron set of any fraction — and its
layer-matched random controls — is a comparison (`selected_mask`, `random_mask`), so fraction sweeps
need no re-selection.

Order-free: a selection never depends on the order neurons are stored in. Each selector ranks by its
score, then by documented secondary keys computed in the same pass (`Keys`), and only as a last resort
by a seeded hash of the neuron's identity (layer and `neuron` coordinate values, `neuron_hash`), never by
the storage index; the random controls are hashes of the identity too. `decided_by` records which key
separated each neuron from the next-ranked one, so `ties_at_cut` says how many neurons tied at a set's
cut and on which keys.

Sets are nested across fractions: the set for fraction f is `rank < round(f · L · N)` per emotion
(a global top-k across layers), and the random control for f draws, in each layer, as many neurons as
the selected set has there, uniformly from all of that layer's neurons ("same size per layer, drawn
uniformly, excluding nothing else"), as the first neurons of a per-(draw, emotion, layer) permutation.
"""

from __future__ import annotations

import inspect
import itertools
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from esn import store
from esn.tables import CORRECT_ONLY, parse_variant  # noqa: F401  (CORRECT_ONLY: the success-filtered variant)

#: Rank of a neuron that a selector does not assign to an emotion (≥ L·N, so no fraction selects it).
INELIGIBLE = np.iinfo(np.int32).max
#: Statistics a selector may need: name -> store variable it is accumulated from.
FIELDS = {"mean": "mean_activation", "positive": "frac_positive", "attribution": "attribution"}
#: Stream words of the identity hashes: the random controls and the last-resort tie key never share one.
_CONTROL_STREAM = 0x5EED
_TIE_STREAM = 0x71E
#: Columns per matmul tile: the float16 → float64 copy stays in cache, and OpenBLAS stays single-threaded
#: (at ≥ 2048 columns of 4 emotions × 256 rows its two threads thrashed, 3–15× slower, on a busy 2-core box).
_TILE = 512

PathLike = str | Path


# --------------------------------------------------------------------------------------------------
# Sufficient statistics


class EmotionStats:
    """Mergeable per-emotion sums over (layer, neuron) for one position group, in float64.

    In the style of baukit's runningstats: `add` a block, `merge` partial results (shards, workers),
    round-trip through `state_dict` / `from_state_dict`. Counts are kept per (emotion, layer) so a block
    may be added one layer slab at a time; `n_utterances` checks that all layers saw the same rows.
    Tracked sums (`fields`): `mean` Σ mean_activation, `positive` Σ frac_positive·n_positions with
    Σ n_positions (so P(a > 0) pools exactly over positions), `attribution` Σ attribution.
    """

    def __init__(self, emotions: Sequence[str], n_layers: int, n_neurons: int, fields: Sequence[str]) -> None:
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}; known: {sorted(FIELDS)}")
        self.emotions = tuple(emotions)
        self.fields = tuple(f for f in FIELDS if f in fields)
        self.shape = E, L, N = len(self.emotions), n_layers, n_neurons
        self.n = np.zeros((E, L), np.int64)
        self.n_positions = np.zeros((E, L), np.float64)
        self.sums = {f: np.zeros((E, L, N), np.float64) for f in self.fields}

    def add(self, emotion: np.ndarray, n_positions: np.ndarray, layers: slice = slice(None),
            **values: np.ndarray) -> None:
        """Add rows of a block: `emotion` index (b,), `n_positions` (b,), each field's values (b, L', N)."""
        if set(self.fields) != set(values):
            raise ValueError(f"add() needs exactly the fields {self.fields}; got {sorted(values)}")
        emotion = np.asarray(emotion, np.intp)
        b, E = len(emotion), len(self.emotions)
        onehot = np.zeros((E, b), np.float64)
        onehot[emotion, np.arange(b)] = 1.0
        weights = {"mean": onehot, "attribution": onehot, "positive": onehot * np.asarray(n_positions, np.float64)}
        self.n[:, layers] += onehot.sum(1).astype(np.int64)[:, None]
        self.n_positions[:, layers] += weights["positive"].sum(1)[:, None]
        for f, x in values.items():
            flat = x.reshape(b, -1)
            out = np.empty((E, flat.shape[1]), np.float64)
            for s in range(0, flat.shape[1], _TILE):
                np.matmul(weights[f], flat[:, s:s + _TILE].astype(np.float64), out=out[:, s:s + _TILE])
            self.sums[f][:, layers] += out.reshape(E, *x.shape[1:])

    def merge(self, other: EmotionStats) -> EmotionStats:
        """Add another accumulator's sums into this one (same emotions, shape and fields); returns self."""
        if (other.emotions, other.fields, other.shape) != (self.emotions, self.fields, self.shape):
            raise ValueError("cannot merge statistics of different emotions, fields or shapes")
        self.n += other.n
        self.n_positions += other.n_positions
        for f in self.fields:
            self.sums[f] += other.sums[f]
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain numpy arrays and lists: saveable with np.savez or torch.save, restored by from_state_dict."""
        return {"emotions": list(self.emotions), "fields": list(self.fields), "shape": self.shape, "n": self.n.copy(),
                "n_positions": self.n_positions.copy(), **{f"sum_{f}": s.copy() for f, s in self.sums.items()}}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> EmotionStats:
        _, L, N = state["shape"]
        fields = list(state["fields"])
        stats = cls(state["emotions"], L, N, fields)
        stats.n[:] = state["n"]
        stats.n_positions[:] = state["n_positions"]
        for f in fields:
            stats.sums[f][:] = state[f"sum_{f}"]
        return stats

    @property
    def n_utterances(self) -> np.ndarray:
        """Utterances per emotion [E]; refuses statistics where layers saw different rows."""
        if not (self.n == self.n[:, :1]).all():
            raise RuntimeError("layers were accumulated over different utterances (an interrupted pass?)")
        return self.n[:, 0]

    def _ratio(self, field: str, denominator: np.ndarray) -> np.ndarray:
        if field not in self.sums:
            raise ValueError(f"these statistics lack {field!r} (tracked: {self.fields})")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator[..., None] > 0, self.sums[field] / denominator[..., None], np.nan)

    @property
    def p(self) -> np.ndarray:
        """P(a > 0) pooled over all positions of e's utterances [E, L, N] (NaN for an emotion without data)."""
        return self._ratio("positive", self.n_positions)

    @property
    def mu(self) -> np.ndarray:
        """Mean over e's utterances of the per-utterance mean activation [E, L, N]."""
        return self._ratio("mean", self.n.astype(np.float64))

    @property
    def attribution(self) -> np.ndarray:
        """Mean over e's utterances of Σ_t a·∂log p(true)/∂a [E, L, N]."""
        return self._ratio("attribution", self.n.astype(np.float64))


# --------------------------------------------------------------------------------------------------
# Selectors: EmotionStats -> Keys (score [E, L, N], higher = more emotion-sensitive, -inf = not for e)


@dataclass
class Keys:
    """A selector's ranking keys, each [E, L, N] and higher = better: `score`, then each of `secondary`
    in order (ties of the score are broken by meaningful statistics, not by storage order). `extras`:
    per-selection scalars worth recording (e.g. LAPE's bar)."""

    score: np.ndarray
    secondary: dict[str, np.ndarray]
    extras: dict[str, float] = field(default_factory=dict)


Selector = Callable[..., Keys]
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
def lap(stats: EmotionStats) -> Keys:
    """LAP, activation frequency (Tang et al. 2024, "Language-specific neurons", ACL): score = p_e.

    p_e = Σ_u frac_positive·n_positions / Σ_u n_positions over e's utterances u: P(a > 0) pooled over
    positions, so long utterances weigh by their length, as in counting activations over all tokens.
    Gated activations saturate p at 1 for many neurons, so ties are common and decided by: the margin
    p_e − max_{e'≠e} p_e' (fires for e, rarely for the others), then the mean activation μ_e.
    """
    every = np.ones(len(stats.emotions), bool)
    return Keys(_scatter(stats, every, stats.p), {"margin": _versus_others(stats, stats.p, np.max),
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
def lape(stats: EmotionStats, quantile: float = 0.95, assign: str = "lape") -> Keys:
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
    return Keys(_scatter(stats, valid, np.where(assigned & candidate, -entropy, -np.inf)),
                {"p": _scatter(stats, every, stats.p), "mu": _scatter(stats, every, stats.mu)},
                {"lape_bar": bar, "lape_bar_saturated": float(saturated)})


@_selector("mean")
def mad(stats: EmotionStats) -> Keys:
    """MAD, magnitude / mean deviation (Zhao, Schuller & Sisman 2026): μ_e − mean_{e'≠e} μ_e'.

    μ_e = mean over e's utterances of the per-utterance mean activation over the position group.
    Ties are decided by the contrast margin μ_e − max_{e'≠e} μ_e' (CAS), then μ_e.
    """
    every = np.ones(len(stats.emotions), bool)
    return Keys(_versus_others(stats, stats.mu, np.mean), {"margin": _versus_others(stats, stats.mu, np.max),
                                                           "mu": _scatter(stats, every, stats.mu)})


@_selector("mean")
def cas(stats: EmotionStats) -> Keys:
    """CAS, contrast margin (Zhao, Schuller & Sisman 2026): μ_e − max_{e'≠e} μ_e'.

    Positive only where e activates the neuron more than every other emotion does. Ties (e.g. neurons
    silent for every emotion) are decided by the mean deviation μ_e − mean_{e'≠e} μ_e' (MAD), then μ_e.
    """
    every = np.ones(len(stats.emotions), bool)
    return Keys(_versus_others(stats, stats.mu, np.max), {"deviation": _versus_others(stats, stats.mu, np.mean),
                                                          "mu": _scatter(stats, every, stats.mu)})


@_selector("attribution", "mean")
def attribution(stats: EmotionStats) -> Keys:
    """Attribution (beyond the paper, which only correlates): mean over e's utterances of the store's
    `attribution` = Σ_t a·∂log p(true label)/∂a at the answer position — what the decision uses.
    Ties (e.g. neurons the decision never uses, attribution 0) are decided by the attribution margin over
    the other emotions, then μ_e.
    """
    every = np.ones(len(stats.emotions), bool)
    return Keys(_scatter(stats, every, stats.attribution),
                {"margin": _versus_others(stats, stats.attribution, np.max), "mu": _scatter(stats, every, stats.mu)})


def get_selector(name: str) -> Selector:
    """The registered selector `name`; a ValueError lists the known ones."""
    try:
        return SELECTORS[name]
    except KeyError:
        raise ValueError(f"unknown selector {name!r}; known: {', '.join(SELECTORS)}") from None


# --------------------------------------------------------------------------------------------------
# Identification set and the streaming pass


@dataclass
class Identification:
    """Which store rows a selection uses: per shard, each utterance's emotion index (−1 = unused)."""

    emotions: tuple[str, ...]
    emotion_index: list[np.ndarray]
    n_available: np.ndarray
    n_chosen: np.ndarray


def _as_paths(store_path: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(store_path, (str, Path)):
        return [Path(store_path)]
    return [Path(p) for p in store_path]


def identification(shards: Sequence[xr.Dataset], *, position: str = "audio", split: str | None = "identification",
                   correct_only: bool = False, per_emotion: int | None = None, seed: int = 0) -> Identification:
    """The utterance filter, from the store's coordinates only (nothing heavy is read).

    Keeps utterances of `split` (None: all), correct ones if `correct_only`, whose emotion is one of
    the model's labels and that have positions in `position`; then, if `per_emotion` is set, draws that
    many per emotion without replacement with `default_rng(seed)` (candidates in utterance-id order, one
    permutation per emotion, so for a seed the smaller sets nest inside the larger ones). An emotion
    with fewer keeps them all (see `n_available`). Shards are treated as one store (their union).
    """
    emotions = tuple(str(x) for x in shards[0]["label"].values)
    lookup = {e: i for i, e in enumerate(emotions)}
    parts = []
    for ds in shards:
        if tuple(str(x) for x in ds["label"].values) != emotions:
            raise store.ProvenanceError(f"shards disagree on the model's labels: {emotions} vs {ds['label'].values}")
        positions = [str(x) for x in ds["positions"].values]
        if position not in positions:
            raise ValueError(f"position group {position!r} is not in the store (it has {positions})")
        keep = ds["n_positions"].isel(positions=positions.index(position)).values > 0
        if split is not None:
            keep &= ds["split"].values.astype(object) == split
        if correct_only:
            keep &= ds["correct"].values == 1
        idx = np.array([lookup.get(str(e), -1) for e in ds["emotion"].values], np.intp)
        parts.append(np.where(keep, idx, -1))
    index = np.concatenate(parts)
    ids = np.concatenate([ds["utterance"].values.astype(object) for ds in shards])
    n_available = np.bincount(index[index >= 0], minlength=len(emotions))
    if per_emotion is not None:
        if per_emotion < 1:
            raise ValueError(f"per_emotion must be a positive count or None, not {per_emotion}")
        rng = np.random.default_rng(seed)
        chosen = np.full_like(index, -1)
        for e in range(len(emotions)):
            candidates = np.flatnonzero(index == e)
            candidates = candidates[np.argsort(ids[candidates], kind="stable")]
            take = candidates[rng.permutation(len(candidates))[:per_emotion]]
            chosen[take] = e
        index = chosen
    n_chosen = np.bincount(index[index >= 0], minlength=len(emotions))
    if not n_chosen.any():
        raise ValueError(f"no utterances left after filtering (split={split!r}, correct_only={correct_only}, "
                         f"position={position!r})")
    bounds = np.cumsum([0] + [ds.sizes["utterance"] for ds in shards])
    return Identification(emotions, [index[a:b] for a, b in itertools.pairwise(bounds)], n_available, n_chosen)


def _slabs(g: zarr.Group, emotion_index: np.ndarray, group: int, variables: Sequence[str]
           ) -> Iterator[tuple[np.ndarray, int, dict[str, np.ndarray]]]:
    """(rows, layer, {var: values[rows] (b', N)}) per store block × layer, skipping blocks with no used
    rows; the next slab is read in a background thread while the caller reduces this one."""
    layout = store.layout_of(g)
    jobs = [(layout.block(k), l) for k in range(layout.n_blocks)
            if (emotion_index[layout.block(k)] >= 0).any() for l in range(layout.n_layers)]

    def read(job: tuple[slice, int]) -> tuple[np.ndarray, int, dict[str, np.ndarray]]:
        sl, l = job
        rows = np.flatnonzero(emotion_index[sl] >= 0)
        values = {}
        for v in variables:
            x = g[v][sl, l] if v == "attribution" else g[v][sl, group, l]
            values[v] = x if len(rows) == len(x) else x[rows]
        return rows + sl.start, l, values

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, jobs[0]) if jobs else None
        for nxt in jobs[1:] + [None]:
            slab = pending.result()
            pending = pool.submit(read, nxt) if nxt is not None else None
            yield slab


def accumulate(g: zarr.Group, emotion_index: np.ndarray, emotions: Sequence[str], position: str,
               fields: Sequence[str]) -> EmotionStats:
    """One streaming pass over one store: per-emotion sums of `fields` over the rows with an emotion.

    Memory is one (block, layer) slab per variable plus the [E, L, N] sums, whatever the store's size.
    """
    layout = store.layout_of(g)
    group = list(layout.groups).index(position)
    stats = EmotionStats(emotions, layout.n_layers, layout.n_neurons, fields)
    n_positions = g["n_positions"][:, group]
    for rows, l, values in _slabs(g, emotion_index, group, [FIELDS[f] for f in stats.fields]):
        stats.add(emotion_index[rows], n_positions[rows], slice(l, l + 1),
                  **{f: values[FIELDS[f]][:, None] for f in stats.fields})
    return stats


# --------------------------------------------------------------------------------------------------
# Selections as data


_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64 with full avalanche), on arrays."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def neuron_hash(seed: int, *ids: np.ndarray | int) -> np.ndarray:
    """A seeded pseudo-random uint64 per identity tuple (ids broadcast together): a function of the
    neuron's identity (e.g. layer and `neuron` coordinate values), not of where it is stored, so it
    moves with the neuron when a store orders its neurons differently."""
    arrays = np.broadcast_arrays(*[np.asarray(i, np.int64) for i in ids])
    h = _mix(np.full(arrays[0].shape, seed % 2**64, np.uint64) + _GOLDEN)
    for a in arrays:
        h = _mix(h ^ (a.astype(np.uint64) + _GOLDEN))
    return h


def tie_key(seed: int, layers: np.ndarray, neurons: np.ndarray) -> np.ndarray:
    """The last-resort tie key [L, N] (ascending = first): a seeded hash of (layer, neuron) coordinate values."""
    return neuron_hash(seed, _TIE_STREAM, np.asarray(layers)[:, None], np.asarray(neurons)[None, :])


def rank_keys(keys: Sequence[np.ndarray], tie: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank per emotion over all (layer, neuron) by `keys` [E, L, N] (higher first; keys[0] the score),
    then `tie` [L, N] (lower first). A score of −inf or NaN ranks INELIGIBLE; NaN in a later key counts
    as −inf. Returns (rank int32, decided_by int8): decided_by[e, l, n] = which key first told the neuron
    apart from the next-ranked one (0 = score, i = keys[i], len(keys) = only the tie key; −1 = the last
    or an ineligible neuron)."""
    E = keys[0].shape[0]
    flat = [np.where(np.isnan(k), -np.inf, k).reshape(E, -1) for k in keys]
    tie = np.broadcast_to(tie, keys[0].shape[1:]).ravel()
    M = flat[0].shape[1]
    rank = np.empty((E, M), np.int32)
    decided = np.full((E, M), -1, np.int8)
    for e in range(E):
        order = np.lexsort([tie] + [-k[e] for k in reversed(flat)])
        rank[e, order] = np.arange(M, dtype=np.int32)
        differs = np.stack([k[e, order[:-1]] != k[e, order[1:]] for k in flat] + [np.ones(M - 1, bool)])
        decided[e, order[:-1]] = differs.argmax(0)
    eligible = flat[0] > -np.inf
    rank[~eligible] = INELIGIBLE
    decided[~eligible] = -1
    shape = keys[0].shape
    return rank.reshape(shape), decided.reshape(shape)


def random_order(n_draws: int, n_emotions: int, layers: np.ndarray, neurons: np.ndarray, seed: int) -> np.ndarray:
    """R uniformly random ranks of the neurons within each (draw, emotion, layer), seeded: the random
    controls [R, E, L, N]. Each is the order of a hash of (draw, emotion, layer, neuron coordinate), so
    draws are independent and a neuron keeps its random rank wherever it is stored."""
    h = neuron_hash(seed, _CONTROL_STREAM, np.arange(n_draws)[:, None, None, None],
                    np.arange(n_emotions)[None, :, None, None], np.asarray(layers)[None, None, :, None],
                    np.asarray(neurons)[None, None, None, :])
    order = np.argsort(h, axis=-1, kind="stable")
    out = np.empty(h.shape, np.int32)
    np.put_along_axis(out, order, np.arange(h.shape[-1], dtype=np.int32), axis=-1)
    return out


def select(store_path: PathLike | Sequence[PathLike], selector: str, *, position: str = "audio",
           split: str | None = "identification", correct_only: bool = False, per_emotion: int | None = None,
           seed: int = 0, random_draws: int = 1, **selector_options: Any) -> xr.Dataset:
    """Score, rank and random controls for every emotion from the store (or the union of its shards).

    Returns a Dataset (emotion, layer, neuron): `score` (float32, −inf = ineligible), `rank` (int32,
    0 = best; ties by the selector's secondary keys, then the seeded `tie_key`), `decided_by` (int8, see
    `rank_keys`), `random_order` (int32, draw × emotion × layer × neuron; absent for `random_draws=0`),
    `n_utterances` and `n_available` (emotion), and the selector's extras (e.g. `lape_bar`); attrs record
    the selector, every parameter, the names of the ranking keys and the source store's provenance.
    """
    fn = get_selector(selector)
    try:  # check the options before the long pass, and record the defaults too
        bound = inspect.signature(fn).bind(None, **selector_options)
    except TypeError as err:
        raise TypeError(f"selector {selector!r}: {err}") from None
    if random_draws < 0:
        raise ValueError(f"random_draws must be >= 0, not {random_draws}")
    bound.apply_defaults()
    options = dict(list(bound.arguments.items())[1:])
    paths = _as_paths(store_path)
    shards = [store.open_store(p) for p in paths]
    first = dict(shards[0].attrs)
    for p, ds in zip(paths[1:], shards[1:]):
        store.check_provenance(dict(ds.attrs), first, f"shard {p}")
    if "attribution" in fn.needs and any("attribution" not in ds for ds in shards):
        raise ValueError(f"selector 'attribution' needs the store variable 'attribution', which {paths} lacks: "
                         "capture the store with attribution enabled")
    ident = identification(shards, position=position, split=split, correct_only=correct_only,
                           per_emotion=per_emotion, seed=seed)
    empty = [e for e, n in zip(ident.emotions, ident.n_chosen) if n == 0]
    if empty:
        warnings.warn(f"no identification utterances for {empty}: their scores are -inf", stacklevel=2)
    stats = None
    for p, index in zip(paths, ident.emotion_index):
        part = accumulate(store.open_zarr_group(p), index, ident.emotions, position, fn.needs)
        stats = part if stats is None else stats.merge(part)
    keys = fn(stats, **options)
    ref = shards[0]
    layers, neurons = ref["layer"].values, ref["neuron"].values
    rank, decided = rank_keys([keys.score, *keys.secondary.values()], tie_key(seed, layers, neurons))
    coords = {"emotion": np.array(ident.emotions, dtype=object), "layer": layers, "neuron": neurons}
    dims = ("emotion", "layer", "neuron")
    params = {"selector": selector, "position": position, "split": split, "correct_only": bool(correct_only),
              "per_emotion": None if per_emotion is None else int(per_emotion), "seed": int(seed),
              "selector_options": options, "ranking_keys": ["score", *keys.secondary, "tie_key"],
              "undersized_emotions": [e for e, n in zip(ident.emotions, ident.n_available)
                                      if per_emotion is not None and n < per_emotion],
              "source_stores": [str(p) for p in paths]}
    data = {"score": (dims, keys.score.astype(np.float32)), "rank": (dims, rank), "decided_by": (dims, decided),
            "n_utterances": ("emotion", stats.n_utterances.astype(np.int64)),
            "n_available": ("emotion", ident.n_available.astype(np.int64)),
            **{name: ((), value) for name, value in keys.extras.items()}}
    if random_draws:
        data["random_order"] = (("draw", *dims), random_order(random_draws, len(ident.emotions), layers, neurons, seed))
        coords["draw"] = np.arange(random_draws)
    return xr.Dataset(data, coords=coords, attrs={**params, **{f"source_{k}": v for k, v in first.items()}})


def select_variants(store_path: PathLike | Sequence[PathLike], selector: str, variants: Sequence[str], *,
                    seed: int = 0, random_draws: int = 1, **kwargs: Any) -> xr.Dataset:
    """`select` for the full identification set ('all'), each identification-size subsample and the
    correct-only identification set ('correct'), stacked along a `variant` dimension: one file per
    selector, no new model run for the sweeps. The random controls (`random_draws` of them, from the
    master seed) belong to the full set only: no variant dim."""
    parts, control = [], None
    for v in variants:
        per_emotion, s = parse_variant(v) or (None, None)
        options = {**kwargs, "correct_only": True} if v == CORRECT_ONLY else kwargs
        ds = select(store_path, selector, per_emotion=per_emotion, seed=seed if s is None else s,
                    random_draws=random_draws if v == "all" else 0, **options)
        if v == "all" and random_draws:
            control = ds["random_order"]
            ds = ds.drop_vars(["random_order", "draw"])
        parts.append(ds.expand_dims(variant=[v]).assign(
            per_emotion=("variant", [-1 if per_emotion is None else per_emotion]),
            subsample_seed=("variant", [seed if s is None else s])))
    out = xr.concat(parts, dim="variant", combine_attrs="drop_conflicts")
    if control is not None:
        out = out.assign(random_order=control)
    out.attrs.pop("per_emotion", None)
    out.attrs.update(variants=list(variants), seed=int(seed), random_draws=int(random_draws if control is not None else 0))
    return out


def save_selection(ds: xr.Dataset, path: PathLike) -> None:
    """Write a selection as Zarr v3 under `<path>.partial`, then move it into place (never half-written)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    ds.to_zarr(partial, mode="w", consolidated=False, zarr_format=3)
    store.replace_directory(partial, path)


def open_selection(path: PathLike) -> xr.Dataset:
    """Open a saved selection, loaded into memory (a few MB per emotion at the 7B shape)."""
    with store.open_dataset(path) as ds:
        return ds.load()


# --------------------------------------------------------------------------------------------------
# Sets for a fraction


def n_selected(sel: xr.Dataset, fraction: float) -> int:
    """k(f) = round(f · L · N): the set size per emotion, a fraction of all neurons."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], not {fraction}")
    return int(round(fraction * sel.sizes["layer"] * sel.sizes["neuron"]))


def selected_mask(sel: xr.Dataset, fraction: float) -> xr.DataArray:
    """Each emotion's top-k(f) neurons across layers (fewer where fewer are eligible), bool [E, L, N]."""
    return (sel["rank"] < n_selected(sel, fraction)).rename("selected")


def random_mask(sel: xr.Dataset, fraction: float) -> xr.DataArray:
    """The controls: per (draw, emotion, layer), as many neurons as `selected_mask` has there, drawn uniformly."""
    per_layer = selected_mask(sel, fraction).sum("neuron")
    return (sel["random_order"] < per_layer).rename("random")


def ties_at_cut(sel: xr.Dataset, fraction: float) -> pd.DataFrame:
    """Per emotion, how the set of `fraction` was cut from its neighbours in the ranking: `k` (set size),
    `tied_score` neurons share the score at the cut (0 where the cut falls between distinct scores),
    `tied_score_in_set` of them made it in (decided by the secondary keys or the tie key), and
    `tied_all_keys` / `tied_all_keys_in_set` the same for ties on every meaningful key (decided by the
    seeded tie key alone). Computed from the stored `rank` and `decided_by`."""
    k = n_selected(sel, fraction)
    n_keys = len(sel.attrs["ranking_keys"]) - 1
    rows = []
    for e in sel["emotion"].values:
        rank = sel["rank"].sel(emotion=e).values.ravel()
        eligible = rank != INELIGIBLE
        decided = np.empty(int(eligible.sum()), np.int64)
        decided[rank[eligible]] = sel["decided_by"].sel(emotion=e).values.ravel()[eligible]
        row = {"selector": sel.attrs.get("selector", ""), "emotion": str(e), "fraction": fraction, "k": min(k, len(decided))}
        for name, level in (("tied_score", 1), ("tied_all_keys", n_keys)):
            tied, inside = 0, 0
            if 0 < k < len(decided) and decided[k - 1] >= level:  # the cut splits a run tied on keys < level
                start = k - 1
                while start > 0 and decided[start - 1] >= level:
                    start -= 1
                stop = k
                while stop < len(decided) - 1 and decided[stop] >= level:
                    stop += 1
                tied, inside = stop - start + 1, k - start
            row[name], row[f"{name}_in_set"] = tied, inside
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Descriptive tables (tidy, for plotting)


def _named(sel: xr.Dataset | Mapping[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    return {sel.attrs.get("selector", "selection"): sel} if isinstance(sel, xr.Dataset) else dict(sel)


def _jaccard(a: xr.DataArray, b: xr.DataArray) -> float:
    union = int((a | b).sum())
    return float(int((a & b).sum()) / union) if union else float("nan")


def counts_per_layer(selections: Mapping[str, xr.Dataset], fraction: float) -> pd.DataFrame:
    """Selected neurons per (selector, emotion, layer): where the emotion-sensitive neurons sit."""
    frames = [selected_mask(ds, fraction).sum("neuron").rename("count").to_dataframe().reset_index()
              .assign(selector=name) for name, ds in selections.items()]
    return pd.concat(frames, ignore_index=True)[["selector", "emotion", "layer", "count"]]


def overlap_between_emotions(sel: xr.Dataset | Mapping[str, xr.Dataset], fraction: float) -> pd.DataFrame:
    """Jaccard of the sets of every ordered pair of emotions (diagonal = 1): how emotion-specific they are."""
    rows = []
    for name, ds in _named(sel).items():
        mask = selected_mask(ds, fraction)
        for a, b in itertools.product(mask["emotion"].values, repeat=2):
            rows.append((name, str(a), str(b), _jaccard(mask.sel(emotion=a), mask.sel(emotion=b))))
    return pd.DataFrame(rows, columns=["selector", "emotion_a", "emotion_b", "jaccard"])


def overlap_between_selectors(selections: Mapping[str, xr.Dataset], fraction: float) -> pd.DataFrame:
    """Jaccard of two selectors' sets per emotion (every ordered pair): do they find the same neurons?"""
    masks = {name: selected_mask(ds, fraction) for name, ds in selections.items()}
    emotions = [e for e in next(iter(masks.values()))["emotion"].values
                if all(e in m["emotion"].values for m in masks.values())]
    rows = [(str(e), a, b, _jaccard(masks[a].sel(emotion=e), masks[b].sel(emotion=e)))
            for e in emotions for a, b in itertools.product(masks, repeat=2)]
    return pd.DataFrame(rows, columns=["emotion", "selector_a", "selector_b", "jaccard"])


def stability(selections_by_variant: Mapping[str, xr.Dataset], fraction: float) -> pd.DataFrame:
    """Jaccard between sets of the same selector from different variants (identification sizes, seeds),
    for every unordered pair of variants and each emotion: how much the sets depend on the data drawn."""
    rows = []
    by_selector: dict[str, dict[str, xr.DataArray]] = {}
    for variant, ds in selections_by_variant.items():
        by_selector.setdefault(ds.attrs.get("selector", ""), {})[variant] = selected_mask(ds, fraction)
    for name, masks in by_selector.items():
        for a, b in itertools.combinations(masks, 2):
            for e in masks[a]["emotion"].values:
                if e in masks[b]["emotion"].values:
                    rows.append((name, a, b, str(e), _jaccard(masks[a].sel(emotion=e), masks[b].sel(emotion=e))))
    return pd.DataFrame(rows, columns=["selector", "variant_a", "variant_b", "emotion", "jaccard"])
