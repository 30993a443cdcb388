"""Per-emotion sufficient statistics of the identification set, accumulated in one streaming pass over the
activation store (the only thing selectors read)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from esn import store

#: Statistics a selector may need: name -> store variable it is accumulated from.
FIELDS = {"mean": "mean_activation", "positive": "frac_positive", "attribution": "attribution"}
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
    Tracked sums (`fields`): `mean` Σ mean_activation, `positive` Σ round(frac_positive·n_positions) — the
    count of positive positions, an integer, recovered exactly from a float16 fraction for groups of fewer than
    2 048 positions (float16's spacing below 1 is at most 2^-11) — with Σ n_positions (so P(a > 0) pools
    exactly over positions, and equal frequencies tie exactly, for the selectors' secondary keys to decide),
    `attribution` Σ attribution.
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
        n_positions = np.asarray(n_positions, np.float64)
        self.n[:, layers] += onehot.sum(1).astype(np.int64)[:, None]
        self.n_positions[:, layers] += (onehot @ n_positions)[:, None]
        for f, x in values.items():
            flat = x.reshape(b, -1)
            out = np.empty((E, flat.shape[1]), np.float64)
            for s in range(0, flat.shape[1], _TILE):
                tile = flat[:, s:s + _TILE].astype(np.float64)
                if f == "positive":  # the count of positive positions, an integer: exact again from float16
                    tile = np.rint(tile * n_positions[:, None])
                np.matmul(onehot, tile, out=out[:, s:s + _TILE])
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
