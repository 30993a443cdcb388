"""The activation store: one Zarr v3 group per (model, corpus), opened with `xr.open_zarr`.

Layout (dims named for xarray through Zarr v3 `dimension_names`):

    mean_activation  (utterance, positions, layer, neuron)  mean of the activation over the group
    frac_positive    (utterance, positions, layer, neuron)  fraction of the group's positions with a > 0
    n_positions      (utterance, positions)                 positions in the group (pool frequencies exactly)
    label_prob       (utterance, label)                     the unmodified model's label probabilities
    predicted, correct (utterance)                          its answer and whether it was right
    attribution      (utterance, layer, neuron)             Σ_t a·∂log p(true)/∂a (only when enabled)
    generated, predicted_generated (utterance)              greedy answer text and its parsed label
                                                            (only with capture mode "generate")
    block_done       (block)                                commit flag per block of utterances

Coordinates along `utterance`: emotion, speaker, corpus, split, duration_s. Attributes: provenance
(model, revision, adapter, site, positions, dtype, config hash, package version, ...).

Neuron statistics are reduced in float32 and stored as means and fractions (never sums, which outgrow
float16 over long clips) in `capture.dtype`: float16 halves the store, and selections from it agree with
float32 ones (`benchmarks/bench_store_dtype.py`); a mean beyond float16's range (±65 504) is clipped to it,
never stored as inf, and counted in the attribute `saturated`. Attribution stays float32 (its values are
small products of activations and gradients, below float16's normal range).

Writing is resumable: the store is pre-allocated under `<path>.partial`, blocks of `block_size`
utterances are written and then flagged in `block_done`, and the finished store is renamed into
place. A killed job resumes at the first unflagged block; a plain append left unreadable stores.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.codecs import BloscCodec
from zarr.errors import ZarrUserWarning

UTTERANCE_COORDS = ("emotion", "speaker", "corpus", "split", "duration_s")
#: Lossless Blosc zstd-3 with byte shuffle: ~300 MB/s writes, 1.05–1.3× smaller (NOTES.md).
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
#: Provenance keys that must agree before two stores (or a store and a job) may be combined.
PROVENANCE_KEYS = ("model_family", "model_source", "model_revision", "site", "positions", "labels", "prompt",
                   "n_layers", "n_neurons", "store_dtype", "attribution", "answer_mode", "manifest_hash",
                   "config_hash")


#: Snakemake's marker file inside `directory()` outputs (it needs it to spot incomplete outputs).
SNAKEMAKE_MARKER = ".snakemake_timestamp"


@contextmanager
def tolerate_snakemake_marker() -> Iterator[None]:
    """Silence zarr's warning about Snakemake's marker file, and only that one.

    The marker must stay (Snakemake reads it), and zarr warns about every non-zarr object it lists;
    any other such warning (a stray file that should not be there) still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=rf"Object at {SNAKEMAKE_MARKER.replace('.', '[.]')} is not recognized",
                                category=ZarrUserWarning)
        yield


def open_zarr_group(path: str | Path, mode: str = "r") -> zarr.Group:
    """`zarr.open_group` of a store that may live in a Snakemake `directory()` output, quietly."""
    with tolerate_snakemake_marker():
        return zarr.open_group(Path(path), mode=mode, zarr_format=3)


def open_dataset(path: str | Path) -> xr.Dataset:
    """`xr.open_zarr` (lazy) of a local store that may carry Snakemake's marker, quietly."""
    with tolerate_snakemake_marker():
        return xr.open_zarr(Path(path), consolidated=False)


class ProvenanceError(ValueError):
    """A store built from another model, config, site or corpus than the one asked for."""


@dataclass(frozen=True)
class StoreLayout:
    """Shape and chunking of a store. Chunks ~ (256 utterances, 1 group, 1 layer, 2368 neurons) (NOTES.md)."""

    n_utterances: int
    groups: tuple[str, ...]
    n_layers: int
    n_neurons: int
    labels: tuple[str, ...]
    dtype: str = "float32"
    block_size: int = 256
    neuron_chunk: int = 2368
    attribution: bool = False
    generated: bool = False

    @property
    def n_blocks(self) -> int:
        return max(1, -(-self.n_utterances // self.block_size))

    def block(self, k: int) -> slice:
        return slice(k * self.block_size, min((k + 1) * self.block_size, self.n_utterances))


def saturate(x: Any, dtype: Any) -> Any:
    """`x` (torch or numpy, float32) clipped to the finite range of the store dtype `dtype`.

    Casting a float32 beyond ±65 504 to float16 gives ±inf, and one inf turns a selector's contrast into NaN
    (inf − inf); clipped, the neuron still ranks as extreme. NaN passes through (a NaN statistic must show).
    """
    if str(dtype).replace("torch.", "") != "float16":
        return x
    limit = float(np.finfo(np.float16).max)
    return x.clip(-limit, limit)


def n_saturated(values: np.ndarray) -> int:
    """Stored values at the edge of float16's range (clipped by `saturate`, or rounded there); 0 for other dtypes.
    Counted on the host copy, so capture needs no extra device sync."""
    if values.dtype != np.float16:
        return 0
    return int(np.count_nonzero(np.abs(values) == np.finfo(np.float16).max))


def _array(g: zarr.Group, name: str, shape: tuple[int, ...], dims: list[str], dtype: Any,
           chunks: tuple[int, ...] | None = None, fill: Any = None, coords: str | None = None,
           compress: bool = False) -> zarr.Array:
    attrs = {"coordinates": coords} if coords else {}
    return g.create_array(name, shape=shape, chunks=chunks or shape, dtype=dtype, fill_value=fill,
                          dimension_names=dims, attributes=attrs,
                          compressors=[COMPRESSOR] if compress else None)


def create(path: str | Path, utterances: pd.DataFrame, layout: StoreLayout, attrs: dict[str, str]) -> zarr.Group:
    """Pre-allocate a store for `utterances` (rows in store order) with every block unflagged."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    g = zarr.open_group(path, mode="w", zarr_format=3)
    g.attrs.update({**attrs, "layout": json.dumps(layout.__dict__ | {"groups": list(layout.groups),
                                                                      "labels": list(layout.labels)})})
    n, G, L, N, C = layout.n_utterances, len(layout.groups), layout.n_layers, layout.n_neurons, len(layout.labels)
    b, nc = layout.block_size, min(layout.neuron_chunk, N)
    coords = " ".join(UTTERANCE_COORDS)
    _array(g, "utterance", (n,), ["utterance"], str)[:] = utterances["utterance_id"].to_numpy(dtype=object)
    for c in UTTERANCE_COORDS:
        values = utterances[c]
        if c == "duration_s":
            _array(g, c, (n,), ["utterance"], "float32")[:] = values.to_numpy(dtype="float32")
        else:
            _array(g, c, (n,), ["utterance"], str)[:] = values.fillna("").astype(str).to_numpy(dtype=object)
    _array(g, "positions", (G,), ["positions"], str)[:] = np.array(layout.groups, dtype=object)
    _array(g, "layer", (L,), ["layer"], "int32")[:] = np.arange(L, dtype="int32")
    _array(g, "neuron", (N,), ["neuron"], "int32")[:] = np.arange(N, dtype="int32")
    _array(g, "label", (C,), ["label"], str)[:] = np.array(layout.labels, dtype=object)
    big = (n, G, L, N)
    for name in ("mean_activation", "frac_positive"):
        _array(g, name, big, ["utterance", "positions", "layer", "neuron"], layout.dtype, (b, 1, 1, nc),
               np.nan, coords, compress=True)
    _array(g, "n_positions", (n, G), ["utterance", "positions"], "int32", (b, G), -1, coords)
    _array(g, "label_prob", (n, C), ["utterance", "label"], "float32", (b, C), np.nan, coords)
    _array(g, "predicted", (n,), ["utterance"], str, (b,), None, coords)
    _array(g, "correct", (n,), ["utterance"], "int8", (b,), -1, coords)
    if layout.attribution:
        _array(g, "attribution", (n, L, N), ["utterance", "layer", "neuron"], "float32", (b, 1, nc), np.nan,
               coords, compress=True)
    if layout.generated:
        for name in ("generated", "predicted_generated"):
            _array(g, name, (n,), ["utterance"], str, (b,), None, coords)
    _array(g, "block_done", (layout.n_blocks,), ["block"], "bool", None, False)[:] = False
    return g


def open_group(path: str | Path) -> zarr.Group:
    return open_zarr_group(path, mode="r+")


def layout_of(g: zarr.Group) -> StoreLayout:
    d = json.loads(g.attrs["layout"])
    return StoreLayout(**{**d, "groups": tuple(d["groups"]), "labels": tuple(d["labels"])})


def pending_blocks(g: zarr.Group) -> list[int]:
    """Blocks not yet committed, in order."""
    return [int(k) for k in np.flatnonzero(~g["block_done"][:])]


def write_block(g: zarr.Group, k: int, values: dict[str, np.ndarray]) -> None:
    """Write block k's variables, then commit it. The flag is written last, so a kill never flags half a block."""
    sl = layout_of(g).block(k)
    for name, arr in values.items():
        g[name][sl] = arr
    g["block_done"][k] = True


def finalize(partial: str | Path, final: str | Path) -> None:
    """Atomically move a fully committed store into place (a stale final store is replaced)."""
    partial, final = Path(partial), Path(final)
    g = open_zarr_group(partial)
    missing = [int(k) for k in np.flatnonzero(~g["block_done"][:])]
    if missing:
        raise RuntimeError(f"store {partial} has uncommitted blocks {missing[:10]}; not finalizing")
    replace_directory(partial, final)


def replace_directory(new: str | Path, final: str | Path) -> None:
    """Move a finished folder into place by rename: readers see the old or the new one, never half of one."""
    new, final = Path(new), Path(final)
    if final.exists():
        stale = final.with_name(final.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(final, stale)
        os.replace(new, final)
        shutil.rmtree(stale)
    else:
        os.replace(new, final)


def check_provenance(found: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """Refuse to combine results whose provenance differs on any key that both sides record."""
    diffs = {k: (found.get(k), expected.get(k)) for k in PROVENANCE_KEYS
             if k in found and k in expected and str(found[k]) != str(expected[k])}
    if diffs:
        lines = "; ".join(f"{k}: store has {a!r}, expected {b!r}" for k, (a, b) in diffs.items())
        raise ProvenanceError(f"{what} was built from something else ({lines}). Delete it or rerun its rule.")


def open_store(path: str | Path) -> xr.Dataset:
    """Open a finished store lazily; refuses one with uncommitted blocks."""
    ds = open_dataset(path)
    if not bool(ds["block_done"].values.all()):
        raise RuntimeError(f"store {path} is incomplete (uncommitted blocks): rerun its capture job")
    return ds


def merge(shards: list[str | Path], out: str | Path) -> None:
    """Concatenate finished shard stores (same provenance) into one store, block by block."""
    groups = [open_zarr_group(p) for p in shards]
    first = dict(groups[0].attrs)
    for p, g in zip(shards[1:], groups[1:]):
        check_provenance(dict(g.attrs), first, f"shard {p}")
        if layout_of(g).groups != layout_of(groups[0]).groups:
            raise ProvenanceError(f"shard {p} has other position groups")
    sizes = [layout_of(g).n_utterances for g in groups]
    base = layout_of(groups[0])
    layout = StoreLayout(**{**base.__dict__, "n_utterances": sum(sizes)})
    utterances = pd.DataFrame({c: np.concatenate([g[c][:] for g in groups]) for c in ("utterance", *UTTERANCE_COORDS)})
    utterances = utterances.rename(columns={"utterance": "utterance_id"})
    attrs = {k: v for k, v in first.items() if k not in ("layout", "shard")}
    attrs["shards"] = str(len(shards))
    attrs["saturated"] = str(sum(int(g.attrs.get("saturated", 0)) for g in groups))
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    g = create(partial, utterances, layout, attrs)
    names = [n for n in ("mean_activation", "frac_positive", "n_positions", "label_prob", "predicted", "correct",
                         "attribution", "generated", "predicted_generated") if n in groups[0]]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for k in range(layout.n_blocks):
        sl = layout.block(k)
        values = {}
        for name in names:
            pieces = []
            for i, src in enumerate(groups):
                lo, hi = max(sl.start, offsets[i]), min(sl.stop, offsets[i + 1])
                if lo < hi:
                    pieces.append(src[name][lo - offsets[i]:hi - offsets[i]])
            values[name] = np.concatenate(pieces)
        write_block(g, k, values)
    finalize(partial, out)
