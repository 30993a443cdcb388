"""Where the emotion-sensitive neurons sit (`plot_layers`): ESNs per decoder layer and emotion, one panel
per selector, beneath the layer-knockout panel (accuracy and per-class recall with each layer's MLP
zeroed) on the same layer axis, so the layers holding ESNs read against the layers the decision needs.
The knockout helper (`_knockout_chance`) serves this figure alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from esn.figures.registry import FigureJob, register
from esn.figures.style import (PathLike, _emotion_order, _legend, _mean_over_draws, _pct, _selectors, _suptitle,
                               _themed, emotion_color, save, selector_color, selector_label)
from esn.tables import read_tables


def _knockout_chance(knockout: pd.DataFrame) -> float | None:
    recalls = [c for c in knockout.columns if c.startswith("recall_")]
    return 1.0 / len(recalls) if recalls else None


@_themed
def plot_layers(counts: pd.DataFrame, knockout: pd.DataFrame | None, out: Sequence[PathLike], *,
                selectors: Sequence[str] | None = None, fraction: float | None = None,
                title: str | None = None) -> None:
    """Top: accuracy with each decoder layer's MLP knocked out (which layers carry the decision at all).
    Below, on the same layer axis: ESNs per layer per emotion, one panel per selector."""
    counts = _mean_over_draws(counts)
    sels = _selectors(counts, selectors)
    emotions = _emotion_order(counts["emotion"]) if "emotion" in counts else []
    layers = set(pd.to_numeric(counts["layer"]).astype(int)) if len(counts) else set()
    ko = None
    if knockout is not None and len(knockout):
        ko = _mean_over_draws(knockout)
        ko["layer"] = pd.to_numeric(ko["layer"]).astype(int)
        layers |= set(ko.loc[ko["mode"] == "knockout", "layer"])
    layers_list = sorted(layers) or [0]
    n_layers = len(layers_list)
    n_rows = len(sels) + (1 if ko is not None else 0)
    bars = n_layers <= 8  # grouped bars for a few layers (the organism), lines for real models' 28-32
    width = (1.8 + n_layers * (0.17 * max(1, len(emotions)) + 0.3)) if bars else (1.8 + 0.34 * n_layers)
    fig, axes = plt.subplots(max(1, n_rows), 1, figsize=(min(13.0, max(5.5, width)), 1.0 + 1.75 * max(1, n_rows)),
                             squeeze=False, sharex=True, layout="constrained")
    axes = axes[:, 0]
    row = 0
    if ko is not None:
        ax = axes[0]
        k = ko[ko["mode"] == "knockout"].sort_values("layer")
        base = ko[ko["mode"] == "none"]
        for label in emotions:
            col = f"recall_{label}"
            if col in k:
                ax.plot(k["layer"], 100 * k[col], color=emotion_color(label), lw=0.9, marker=".", ms=3, alpha=0.7)
        yerr = None
        if {"accuracy_lo", "accuracy_hi"} <= set(k.columns):
            spread = [k["accuracy"] - k["accuracy_lo"], k["accuracy_hi"] - k["accuracy"]]
            yerr = 100 * np.clip(np.vstack(spread), 0, None)
        ax.errorbar(k["layer"], 100 * k["accuracy"], yerr=yerr, color="black", lw=2, marker="o", ms=5, capsize=2,
                    zorder=4)
        if not base.empty:
            ax.axhline(100 * base["accuracy"].iloc[0], color="black", ls="--", lw=1)
        chance = _knockout_chance(ko)
        if chance:
            ax.axhline(100 * chance, color="black", ls=":", lw=1)
        ax.set_ylim(-3, 103)
        ax.set_ylabel("with layer's MLP\nzeroed (%)")
        ax.set_title("layer knockout: accuracy (black) and recall per class", loc="left")
        row = 1
    width = 0.8 / max(1, len(emotions))
    for sel in sels:
        ax = axes[row]
        part = counts[counts["selector"] == sel]
        for ei, emotion in enumerate(emotions):
            series = (part[part["emotion"] == emotion].groupby("layer")["count"].sum()
                      .reindex(layers_list, fill_value=0))
            if bars:
                ax.bar(np.array(layers_list) - 0.4 + width * (ei + 0.5), series.to_numpy(), width=width * 0.95,
                       color=emotion_color(emotion), label=emotion)
            else:
                ax.plot(layers_list, series.to_numpy(), color=emotion_color(emotion), lw=1.5, marker="o", ms=3,
                        label=emotion)
        ax.set_ylabel("ESNs in layer\n(count)")
        ax.set_title(selector_label(sel), loc="left", color=selector_color(sel))
        row += 1
    axes[-1].set_xlabel("decoder layer")
    axes[-1].set_xticks(layers_list if n_layers <= 32 else layers_list[::2])
    for ax in axes:
        ax.grid(axis="x", visible=not bars)
    handles = [Patch(color=emotion_color(e), label=e) for e in emotions]
    if ko is not None:
        handles += [Line2D([], [], color="black", lw=2, marker="o", label="accuracy, layer knocked out"),
                    Line2D([], [], color="black", ls="--", lw=1, label="unmodified accuracy"),
                    Line2D([], [], color="black", ls=":", lw=1, label="chance")]
    _legend(fig, handles)
    size = f" (sets of {_pct(fraction)} of neurons per emotion)" if fraction is not None else ""
    _suptitle(fig, title, f"Where emotion-sensitive neurons sit{size}, beside which layers the decision needs")
    save(fig, out)


# --- the workflow's figure kinds (esn/figures/registry.py) ---------------------------------------------


@register("layers", "5 layers", "ESN counts per layer per emotion per selector, beside the layer-knockout accuracy.",
          {"counts": "neurons:counts_per_layer", "knockout": "knockout"})
def _draw_layers(job: FigureJob) -> None:
    p = job.params
    knockout = read_tables(job.input.knockout, "knockout") if len(job.input.knockout) else None
    plot_layers(read_tables([job.input.counts], "counts_per_layer"), knockout, job.out, selectors=p.selectors,
                fraction=p.fraction, title=job.title)
