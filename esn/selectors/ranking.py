"""From scores to selections: order-free ranks (score, secondary keys, then a seeded identity hash), the seeded
random orders of the controls, the selection as an xarray Dataset, and the neuron set of any fraction."""

from __future__ import annotations

import inspect
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from esn import store
from esn.selectors.scorers import get_selector
from esn.selectors.statistics import PathLike, _as_paths, accumulate, identification
from esn.tables import CORRECT_ONLY, parse_variant

#: Rank of a neuron that a selector does not assign to an emotion (≥ L·N, so no fraction selects it).
INELIGIBLE = np.iinfo(np.int32).max
#: Stream words of the identity hashes: the random controls and the last-resort tie key never share one.
_CONTROL_STREAM = 0x5EED
_TIE_STREAM = 0x71E


# --------------------------------------------------------------------------------------------------
# Selections as data


#: splitmix64's multipliers and the golden-ratio increment (Steele, Lea & Flood 2014)
_SPLITMIX_MUL_1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_MUL_2 = np.uint64(0x94D049BB133111EB)
_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64 with full avalanche), on arrays."""
    x = x ^ (x >> np.uint64(30))
    x = x * _SPLITMIX_MUL_1
    x = x ^ (x >> np.uint64(27))
    x = x * _SPLITMIX_MUL_2
    return x ^ (x >> np.uint64(31))


def neuron_hash(seed: int, *ids: np.ndarray | int) -> np.ndarray:
    """A seeded pseudo-random uint64 per identity tuple (ids broadcast together): a function of the
    neuron's identity (e.g. layer and `neuron` coordinate values), not of where it is stored, so it
    moves with the neuron when a store orders its neurons differently."""
    arrays = np.broadcast_arrays(*[np.asarray(i, np.int64) for i in ids])
    h = _mix(np.full(arrays[0].shape, seed % 2**64, np.uint64) + _GOLDEN_GAMMA)
    for a in arrays:
        h = _mix(h ^ (a.astype(np.uint64) + _GOLDEN_GAMMA))
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
