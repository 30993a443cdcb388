"""The model organism's own check (`plot_confusion`): its held-out confusion matrix beside its UAR with each
decoder layer's MLP knocked out, one row per corpus it was trained on. It reads the organism's metrics
JSON rather than any table of the ESN studies, so it and its two panel helpers (`_confusion_panel`,
`_knockout_panel`) are kept apart from the study figures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from esn.figures.registry import FigureJob, register
from esn.figures.style import PathLike, _emotion_order, _heatmap, _suptitle, _themed, _tint_emotion_ticks, save


@_themed
def plot_confusion(metrics: Mapping[str, Any], out: Sequence[PathLike], *, title: str | None = None) -> None:
    """The organism's held-out confusion matrix (rows normalised, counts annotated) and its UAR (accuracy for
    older metrics) with each decoder layer's MLP zeroed (and all of them): does the decision run through the
    MLPs? One row per corpus the organism was trained on (`metrics["corpora"]`), else one pooled row."""
    parts = dict(metrics.get("corpora") or {"held-out": metrics})
    labels = list(metrics.get("labels") or _emotion_order(next(iter(parts.values())).get("confusion", {})))
    chance = metrics.get("chance")
    n_names = len(next(iter(parts.values())).get("knockout_accuracy", {}))
    fig, axes = plt.subplots(len(parts), 2, squeeze=False, layout="constrained",
                             figsize=(4.0 + 0.55 * len(labels) + 0.45 * n_names, len(parts) * (0.6 * len(labels) + 2.1)),
                             gridspec_kw={"width_ratios": [max(3, len(labels)), max(2, 0.7 * n_names)]})
    subtitle = []
    for (corpus, m), (ax, ax2) in zip(parts.items(), axes):
        metric = "uar" if "knockout_uar" in m else "accuracy"
        unmodified = m.get(f"heldout_{metric}")
        _confusion_panel(ax, m, labels, corpus)
        _knockout_panel(ax2, dict(m.get(f"knockout_{metric}", {})), unmodified, chance, metric)
        if unmodified is not None:
            subtitle.append(f"{corpus} {metric.upper() if metric == 'uar' else metric} {100 * unmodified:.1f}%")
    sub = "Model organism, held-out speakers: " + "; ".join(subtitle)
    if chance is not None:
        sub += f" (chance {100 * chance:.1f}%)"
    _suptitle(fig, title, sub)
    save(fig, out)


def _confusion_panel(ax: plt.Axes, m: Mapping[str, Any], labels: list[str], corpus: str) -> None:
    conf = pd.DataFrame(m.get("confusion", {})).T.reindex(index=labels, columns=labels).fillna(0)
    share = 100 * conf.div(conf.sum(axis=1).replace(0, np.nan), axis=0)
    annot = np.empty(conf.shape, dtype=object)
    for a in range(conf.shape[0]):
        for b in range(conf.shape[1]):
            annot[a, b] = f"{int(conf.iat[a, b])}\n{share.iat[a, b]:.0f}%" if np.isfinite(share.iat[a, b]) else ""
    _heatmap(share, ax=ax, cmap="Blues", vmin=0, vmax=100, annot=annot, fmt="", square=True, linewidths=0.6,
             linecolor="white", annot_kws={"size": 8}, cbar_kws={"label": "share of the true class (%)",
                                                               "shrink": 0.8, "pad": 0.03})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(axis="y", rotation=0)
    _tint_emotion_ticks(ax)
    ax.set_title(f"{corpus}: confusion (counts, row %)")


def _knockout_panel(ax2: plt.Axes, knock: dict[str, float], unmodified: float | None, chance: float | None,
                    metric: str) -> None:
    names = sorted([k for k in knock if k.startswith("layer_")], key=lambda k: int(k.split("_")[1]))
    names += [k for k in knock if not k.startswith("layer_")]
    xs = np.arange(len(names))
    vals = [100 * float(knock[k]) for k in names]
    ax2.bar(xs, vals, color=["0.55" if k.startswith("layer_") else "0.2" for k in names], width=0.7)
    for x, v in zip(xs, vals):
        ax2.text(x, v + 1.5, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    handles = []
    if unmodified is not None:
        ax2.axhline(100 * unmodified, color="black", ls="--", lw=1)
        handles.append(Line2D([], [], color="black", ls="--", lw=1, label=f"unmodified ({100 * unmodified:.0f}%)"))
    if chance is not None:
        ax2.axhline(100 * chance, color="black", ls=":", lw=1)
        handles.append(Line2D([], [], color="black", ls=":", lw=1, label=f"chance ({100 * chance:.0f}%)"))
    ax2.set_xticks(xs)
    ax2.set_xticklabels([k.replace("layer_", "layer ").replace("all", "all layers") for k in names],
                        rotation=45 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax2.set_ylim(0, 110)
    ax2.set_ylabel(f"held-out {'UAR' if metric == 'uar' else 'accuracy'} (%)")
    ax2.set_title("MLP knocked out")
    ax2.grid(axis="x", visible=False)
    if handles:
        ax2.legend(handles=handles, loc="upper right", frameon=True, framealpha=0.9)


# --- the workflow's figure kinds (esn/figures/registry.py) ---------------------------------------------


@register("confusion", "9 organism confusion", "The model organism: held-out confusion matrix and layer-knockout "
          "accuracies from its training run.", {"metrics": "organism_metrics"}, scope="organism", params=("organism",))
def _draw_confusion(job: FigureJob) -> None:
    with open(job.input.metrics) as f:
        plot_confusion(json.load(f), job.out, title=job.title)
