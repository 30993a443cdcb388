"""Tidy tables that describe selected sets: counts per layer, overlaps between emotions and between
selectors, stability across identification variants."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pandas as pd
import xarray as xr

from esn.selectors.ranking import selected_mask


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


def agreement(a: Mapping[str, xr.Dataset], b: Mapping[str, xr.Dataset], fractions: list[float]) -> pd.DataFrame:
    """Per (selector, emotion, fraction) between two selections of the same selectors from two stores of the same
    clips (e.g. float16 vs float32): the set size `k` (of `a`), the Jaccard, and `swapped`, the neurons in `a`'s
    set but not in `b`'s. Does a cheaper store choose the same neurons?"""
    rows = []
    for name in a:
        for f in fractions:
            ma, mb = selected_mask(a[name], f), selected_mask(b[name], f)
            for e in ma["emotion"].values:
                x, y = ma.sel(emotion=e), mb.sel(emotion=e)
                rows.append((name, str(e), f, int(x.sum()), _jaccard(x, y), int((x & ~y).sum())))
    return pd.DataFrame(rows, columns=["selector", "emotion", "fraction", "k", "jaccard", "swapped"])
