"""Overlap of the neuron sets (`plot_overlap`): Jaccard between emotions for each selector (top) and
between selectors for each emotion (bottom), as lower-triangle heatmaps in the sequential palette. It is
the one study figure drawn from the selection's overlap tables rather than from intervention metrics;
its square-matrix helper (`_square`) serves it alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from esn.figures.registry import FigureJob, register
from esn.figures.style import (SEQUENTIAL, PathLike, _emotion_order, _emotion_title, _heatmap, _no_data,
                               _mean_over_draws, _pct, _selectors, _suptitle, _themed, _tint_emotion_ticks, save,
                               selector_color, selector_label, selector_short)
from esn.tables import read_tables


def _square(table: pd.DataFrame, a: str, b: str, order: list[str]) -> pd.DataFrame:
    """Symmetric matrix from a long table with one or both triangles."""
    m = pd.DataFrame(np.nan, index=order, columns=order)
    for _, r in table.iterrows():
        if r[a] in m.index and r[b] in m.columns:
            m.loc[r[a], r[b]] = r["jaccard"]
            m.loc[r[b], r[a]] = r["jaccard"]
    return m


@_themed
def plot_overlap(emotions: pd.DataFrame, selectors_table: pd.DataFrame, out: Sequence[PathLike], *,
                 selectors: Sequence[str] | None = None, fraction: float | None = None,
                 title: str | None = None) -> None:
    """Jaccard overlap of neuron sets: between emotions (one panel per selector, top) and between selectors
    (one panel per emotion, bottom). Lower triangles; the diagonal (1) is left out."""
    em = _mean_over_draws(emotions)
    se = _mean_over_draws(selectors_table)
    in_pairs = set(se["selector_a"]) | set(se["selector_b"])
    sels = _selectors(em, selectors)
    emo = _emotion_order(set(em["emotion_a"]) | set(em["emotion_b"]) | set(se["emotion"]))
    all_sels = [s for s in (selectors or sorted(in_pairs)) if s in in_pairs]
    # cells per side of a lower triangle without its diagonal: emotions (top panels), selectors (bottom panels)
    side_e, side_s = max(len(emo) - 1, 1), max(len(all_sels) - 1, 1)
    cell = 0.55 if max(side_e, side_s) <= 4 else 0.42
    max_width = 13.0  # inches of panels per row; more panels wrap onto further rows
    grids = []
    for n, side in ((max(1, len(sels)), side_e), (max(1, len(emo)), side_s)):
        panel = max(1.4, side * cell + 1.0)
        ncol = min(n, max(1, int(max_width // panel)))
        grids.append((math.ceil(n / ncol), ncol, panel, max(side * cell, 1.0) + 1.45))
    width = max(6.0, *(ncol * panel for _, ncol, panel, _ in grids)) + 1.3
    heights = [nrow * h for nrow, _, _, h in grids]
    fig = plt.figure(figsize=(width, sum(heights) + 0.7), layout="constrained")
    top, bottom = fig.subfigures(2, 1, hspace=0.04, height_ratios=heights)
    kw = {"cmap": SEQUENTIAL, "vmin": 0, "vmax": 1, "annot": True, "fmt": ".2f", "cbar": False, "square": True,
          "linewidths": 0.6, "linecolor": "white", "annot_kws": {"size": 7.5}}

    def triangle(ax: plt.Axes, m: pd.DataFrame, names: Callable[[str], str]) -> None:
        m = m.rename(index=names, columns=names).iloc[1:, :-1]  # lower triangle, no diagonal
        if len(m) == 0 or m.isna().all().all():
            _no_data(ax, "fewer than 2 sets")
            return
        _heatmap(m, ax=ax, mask=np.triu(np.ones(m.shape, bool), k=1), **kw)
        ax.tick_params(axis="y", rotation=0)
        ax.tick_params(axis="x", rotation=45 if m.shape[1] > 2 else 0)

    ax_top = top.subplots(grids[0][0], grids[0][1], squeeze=False).ravel()
    for k, ax in enumerate(ax_top):
        if k >= len(sels):
            ax.set_visible(False)
            continue
        triangle(ax, _square(em[em["selector"] == sels[k]], "emotion_a", "emotion_b", emo), str)
        _tint_emotion_ticks(ax)
        ax.set_title(selector_label(sels[k]), color=selector_color(sels[k]))
    top.suptitle("between emotions, per selector", fontsize=10, fontweight="bold")
    ax_bottom = bottom.subplots(grids[1][0], grids[1][1], squeeze=False).ravel()
    for k, ax in enumerate(ax_bottom):
        if k >= len(emo):
            ax.set_visible(False)
            continue
        triangle(ax, _square(se[se["emotion"] == emo[k]], "selector_a", "selector_b", all_sels), selector_short)
        _emotion_title(ax, emo[k])
    bottom.suptitle("between selectors, per emotion", fontsize=10, fontweight="bold")
    sm = plt.cm.ScalarMappable(norm=Normalize(0, 1), cmap=SEQUENTIAL)
    for sub, axs in ((top, ax_top), (bottom, ax_bottom)):
        sub.colorbar(sm, ax=[a for a in axs if a.get_visible()], shrink=0.8, aspect=15, label="Jaccard |A∩B| / |A∪B|")
    size = f" (sets of {_pct(fraction)} of neurons)" if fraction is not None else ""
    _suptitle(fig, title, f"Overlap of emotion-sensitive neuron sets{size}")
    save(fig, out)


# --- the workflow's figure kinds (esn/figures/registry.py) ---------------------------------------------


@register("overlap", "6 overlap", "Jaccard overlap of neuron sets between emotions and between selectors.",
          {"emotions": "neurons:overlap_emotions", "selectors": "neurons:overlap_selectors"})
def _draw_overlap(job: FigureJob) -> None:
    p, wc = job.params, job.wildcards
    plot_overlap(read_tables([job.input.emotions], "overlap_emotions"),
                 read_tables([job.input.selectors], "overlap_selectors"), job.out,
                 selectors=p.selectors, fraction=p.fraction, title=f"{wc['model']} · identify {wc['id_corpus']}")
