"""Where the emotion decision resolves (`plot_lens`): the logit lens's per-layer recall (`esn.lens`).

Left: the unmodified model, each class's recall and the UAR (95 % interval) per decoder layer, with chance and the
resolution layer of the UAR (first layer whose interval lies above chance). Right: one panel per selector, the
recall of each target emotion under deactivation of its own set (solid) against the unmodified recall of that
class (dashed): the layer where the lines part is where removing the neurons takes effect.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D

from esn.figures.registry import FigureJob, register
from esn.figures.style import (PathLike, _band, _emotion_order, _legend, _no_data, _selectors, _suptitle, _themed,
                               emotion_color, save, selector_label)
from esn.tables import read_table


def read_lens(path: str, kind: str = "lens_recall") -> pd.DataFrame:
    """A lens table as written (empty selector / target of the unmodified rows read as "")."""
    return read_table(path, kind)


@_themed
def plot_lens(recall: pd.DataFrame, resolved: pd.DataFrame | None, out: Sequence[PathLike], *,
              selectors: Sequence[str] | None = None, fraction: float | None = None, title: str | None = None) -> None:
    """Per-layer recall read by the logit lens: unmodified (left) and under each selector's deactivation."""
    base = recall[recall["mode"] == "none"]
    classes = _emotion_order(c for c in base["class"].unique() if c != "UAR")
    deact = recall[recall["mode"] == "deactivate"]
    sels = _selectors(deact, selectors) if len(deact) else []
    panels = 1 + len(sels)
    cols = min(3, panels)
    rows = -(-panels // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(3.6 * cols + 0.6, 0.8 + 2.9 * rows), squeeze=False, sharey=True,
                             layout="constrained")
    for ax in grid.flat[panels:]:
        ax.set_visible(False)
    axes = list(grid.flat[:panels])
    ax = axes[0]
    for c in classes:
        part = base[base["class"] == c]
        _band(ax, part["layer"], 100 * part["recall"], None, None, emotion_color(c))
    uar = base[base["class"] == "UAR"]
    _band(ax, uar["layer"], 100 * uar["recall"], 100 * uar["recall_lo"], 100 * uar["recall_hi"], "black")
    chance = float(recall["chance"].iloc[0]) if len(recall) else None
    if chance:
        ax.axhline(100 * chance, color="black", ls=":", lw=1)
    if resolved is not None:
        row = resolved[(resolved["mode"] == "none") & (resolved["class"] == "UAR")]
        if len(row) and int(row["resolution_layer"].iloc[0]) >= 0:
            ax.axvline(int(row["resolution_layer"].iloc[0]), color="black", ls="--", lw=0.8)
    ax.set_title("unmodified", loc="left")
    ax.set_ylabel("recall read at the layer (%)")
    for ax, sel in zip(axes[1:], sels):
        part = deact[deact["selector"] == sel]
        if part.empty:
            _no_data(ax)
            continue
        for c in classes:
            own = part[(part["target"] == c) & (part["class"] == c)]
            ref = base[base["class"] == c]
            _band(ax, ref["layer"], 100 * ref["recall"], None, None, emotion_color(c), dashed=True)
            _band(ax, own["layer"], 100 * own["recall"], 100 * own["recall_lo"], 100 * own["recall_hi"],
                  emotion_color(c))
        if chance:
            ax.axhline(100 * chance, color="black", ls=":", lw=1)
        ax.set_title(f"{selector_label(sel)}: own set off", loc="left")
    layers = sorted(recall["layer"].unique()) if len(recall) else [0]
    for ax in axes:
        ax.set_xlabel("decoder layer")
        ax.set_xticks(layers if len(layers) <= 12 else layers[::max(1, len(layers) // 8)])
        ax.set_ylim(-3, 103)
    handles = [Line2D([], [], color=emotion_color(c), marker="o", label=c) for c in classes]
    handles += [Line2D([], [], color="black", marker="o", label="UAR (95 % interval)"),
                Line2D([], [], color="0.4", ls="--", label="unmodified recall of the class"),
                Line2D([], [], color="black", ls=":", label="chance")]
    _legend(fig, handles)
    size = "" if fraction is None else f", sets of {100 * fraction:g} % of neurons per emotion"
    _suptitle(fig, title, f"logit lens: recall per decoder layer{size}")
    save(fig, out)


@register("lens", "12 logit lens", "Logit lens: per-layer recall through the final norm and lm_head, unmodified and "
          "under each selector's main-size deactivation; where the decision resolves.",
          {"recall": "lens:recall", "resolution": "lens:resolution"}, sweeps=True,
          applies=lambda config: bool(config.get("lens", {}).get("enabled", True)))
def _draw_lens(job: FigureJob) -> None:
    plot_lens(read_lens(job.input.recall), read_lens(job.input.resolution, "lens_resolution"), job.out, selectors=job.params.selectors,
              fraction=job.params.fraction, title=job.title)
