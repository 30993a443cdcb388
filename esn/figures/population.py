"""The population of organisms: one point per organism beside the population mean.

One row per study (identify → evaluate) of the population: specificity per selector (each organism's
selected set and its random control, the mean over organisms with a CI that resamples organisms, and
"k/N": organisms whose own CI says specific); self vs others' drop per selector (below the diagonal
= specific); and layer knockout on the study's evaluation corpus (one line per organism).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from esn.figures.registry import FigureJob, register
from esn.figures.style import (PathLike, _legend, _selectors, _suptitle, _themed, save, selector_color,
                               selector_label, selector_short)
from esn.tables import read_tables


def _organism_offsets(n: int, width: float = 0.5) -> np.ndarray:
    """Fixed horizontal offsets of n organisms within a category (no random jitter: reproducible)."""
    return np.linspace(-width / 2, width / 2, n) if n > 1 else np.zeros(1)


def _population_bar(ax: plt.Axes, x: float, row: pd.Series | None, color: str = "black") -> None:
    if row is None or not np.isfinite(row["mean"]):
        return
    ax.hlines(100 * row["mean"], x - 0.34, x + 0.34, color=color, lw=2.2, zorder=4)
    if np.isfinite(row["lo"]):
        ax.add_patch(plt.Rectangle((x - 0.34, 100 * row["lo"]), 0.68, 100 * (row["hi"] - row["lo"]), color=color,
                                   alpha=0.12, lw=0, zorder=1))


def _summary_row(summary: pd.DataFrame, **where: object) -> pd.Series | None:
    m = np.ones(len(summary), bool)
    for k, v in where.items():
        m &= (summary[k].astype(str) == str(v)).to_numpy()
    rows = summary[m]
    return rows.iloc[0] if len(rows) else None


@_themed
def plot_population(organisms: pd.DataFrame, knockout: pd.DataFrame, heldout: pd.DataFrame, summary: pd.DataFrame,
                    out: Sequence[PathLike], *, fraction: float, selectors: Sequence[str] | None = None,
                    title: str | None = None) -> None:
    """The population figure (see the module docstring); tables from rule population_table."""
    mean = organisms[organisms["target"] == "mean"]
    studies = list(dict.fromkeys(zip(mean["identify"], mean["evaluate"])))
    sels = _selectors(mean, selectors)
    names = sorted(mean["organism"].unique(), key=lambda o: int(mean.loc[mean["organism"] == o, "seed"].iloc[0]))
    n = len(names)
    offsets = dict(zip(names, _organism_offsets(n)))
    fig, axes = plt.subplots(len(studies), 3, figsize=(12.5, 3.6 * len(studies) + 0.9), layout="constrained",
                             squeeze=False, gridspec_kw={"width_ratios": [1.3, 1.0, 1.0]})
    for row_axes, (identify, evaluate) in zip(axes, studies):
        ax_spec, ax_pair, ax_ko = row_axes
        study = mean[(mean["identify"] == identify) & (mean["evaluate"] == evaluate)]
        # specificity per selector: organisms' selected sets (filled), their random controls (hollow), population mean
        for xi, sel in enumerate(sels):
            part = study[study["selector"] == sel].set_index("organism")
            color = selector_color(sel)
            for o in part.index:
                x = xi + offsets[o]
                ax_spec.plot([x, x], [100 * part.loc[o, "random_specificity"], 100 * part.loc[o, "specificity"]],
                             color=color, lw=0.6, alpha=0.5, zorder=2)
                ax_spec.plot(x, 100 * part.loc[o, "random_specificity"], "o", ms=3.5, mfc="white", mec=color, zorder=3)
                ax_spec.plot(x, 100 * part.loc[o, "specificity"], "o", ms=5, color=color, zorder=3)
            s = _summary_row(summary, identify=identify, evaluate=evaluate, selector=sel, statistic="specificity")
            _population_bar(ax_spec, xi, s)
            r = _summary_row(summary, identify=identify, evaluate=evaluate, selector=sel, statistic="vs_random")
            if s is not None:
                ax_spec.annotate(f"specific {s['k']}/{s['n']}" + (f"\n< random {r['k']}/{r['n']}" if r is not None else ""),
                                 (xi, 1.0), xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=7)
        ax_spec.axhline(0, color="black", lw=0.8)
        ax_spec.set_xticks(range(len(sels)))
        ax_spec.set_xticklabels([selector_short(s) for s in sels])
        ax_spec.set_xlim(-0.6, len(sels) - 0.4)
        ax_spec.margins(y=0.25)
        ax_spec.grid(axis="x", visible=False)
        ax_spec.set_ylabel("specificity (pp)\nΔrecall(e,e) − Δrecall(e,c≠e)")
        ax_spec.set_title(f"identify {identify} → evaluate {evaluate}", loc="left")
        # self vs others: one point per organism and selector; the population mean with its CIs
        lim = [0.0, 0.0]
        for sel in sels:
            part = study[study["selector"] == sel]
            color = selector_color(sel)
            ax_pair.plot(100 * part["others"], 100 * part["self"], "o", ms=4, color=color, alpha=0.55, mec="none")
            s_self = _summary_row(summary, identify=identify, evaluate=evaluate, selector=sel, statistic="self")
            s_oth = _summary_row(summary, identify=identify, evaluate=evaluate, selector=sel, statistic="others")
            if s_self is not None and s_oth is not None:
                xe = [[100 * max(s_oth["mean"] - s_oth["lo"], 0)], [100 * max(s_oth["hi"] - s_oth["mean"], 0)]]
                ye = [[100 * max(s_self["mean"] - s_self["lo"], 0)], [100 * max(s_self["hi"] - s_self["mean"], 0)]]
                ok = np.isfinite([s_oth["lo"], s_self["lo"]]).all()
                ax_pair.errorbar(100 * s_oth["mean"], 100 * s_self["mean"], xerr=xe if ok else None,
                                 yerr=ye if ok else None, fmt="D", ms=6.5, color=color, mec="black", mew=0.8,
                                 elinewidth=1.2, capsize=2, zorder=4)
            lim = [min(lim[0], 100 * part[["self", "others"]].min().min()),
                   max(lim[1], 100 * part[["self", "others"]].max().max())]
        pad = 0.08 * (lim[1] - lim[0] or 1)
        lo, hi = lim[0] - pad, lim[1] + pad
        ax_pair.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", zorder=0)
        ax_pair.set_xlim(lo, hi)
        ax_pair.set_ylim(lo, hi)
        ax_pair.set_aspect("equal", adjustable="box")
        ax_pair.set_xlabel("others' drop (pp): mean Δrecall(e,c≠e)")
        ax_pair.set_ylabel("self drop (pp): Δrecall(e,e)")
        ax_pair.set_title("below the diagonal = specific", loc="left", fontweight="normal")
        # knockout of each layer on this study's evaluation corpus
        ko = knockout[knockout["evaluate"] == evaluate] if len(knockout) else knockout
        if len(ko):
            for o, g in ko.groupby("organism"):
                g = g.sort_values("layer")
                ax_ko.plot(g["layer"], 100 * g["change"], "-o", color="0.55", lw=0.8, ms=3, alpha=0.8)
            layers = sorted(ko["layer"].unique())
            for layer in layers:
                s = _summary_row(summary, evaluate=evaluate, statistic="knockout", layer=float(layer))
                if s is not None:
                    _population_bar(ax_ko, layer, s)
                    ax_ko.annotate(f"drop {s['k']}/{s['n']}", (layer, 1.0), xycoords=("data", "axes fraction"),
                                   ha="center", va="top", fontsize=7)
            ax_ko.set_xticks(layers)
            ax_ko.set_xlim(layers[0] - 0.6, layers[-1] + 0.6)
            ax_ko.margins(y=0.25)
        ax_ko.axhline(0, color="black", lw=0.8)
        ax_ko.set_xlabel("decoder layer (its whole MLP zeroed)")
        ax_ko.set_ylabel("UAR change (pp)")
        h = heldout[heldout["corpus"] == evaluate]["heldout_uar"] if len(heldout) else pd.Series(dtype=float)
        uar = f"unmodified UAR {h.min():.2f}–{h.max():.2f} over organisms" if len(h) else ""
        ax_ko.set_title(f"layer knockout on {evaluate}\n{uar}", loc="left", fontweight="normal")
    handles = [Line2D([], [], color=selector_color(s), marker="o", ls="", ms=5, label=selector_label(s)) for s in sels]
    handles += [Line2D([], [], color="black", marker="o", ls="", ms=5, label="one organism: selected set"),
                Line2D([], [], color="black", marker="o", ls="", mfc="white", ms=3.5,
                       label="its random control (same size per layer)"),
                Line2D([], [], color="black", lw=2.2, label="population mean (band: 95% CI, organisms resampled)"),
                Line2D([], [], color="black", marker="D", ls="", ms=6, label="population mean, self vs others")]
    _legend(fig, handles)
    _suptitle(fig, title, f"{n} organisms (seeds {', '.join(str(int(mean.loc[mean['organism'] == o, 'seed'].iloc[0])) for o in names)}); "
                          f"deactivating {100 * fraction:.3g}% of neurons. k/N: organisms whose own CI (speakers "
                          "resampled) shows the set specific, more specific than its random control (< random), or a "
                          "UAR drop when the layer is knocked out")
    save(fig, out)


# --- the workflow's figure kinds (esn/figures/registry.py) ---------------------------------------------


@register("population", "population of organisms", "One point per organism beside the population mean: specificity, "
          "self vs others drop, layer knockout.", {name: f"population:{name}" for name in
                                                   ("organisms", "knockout", "heldout", "summary")},
          scope="population", params=("selectors", "fraction", "organisms"))
def _draw_population(job: FigureJob) -> None:
    p, i = job.params, job.input
    tables = {name: read_tables([getattr(i, name)], f"population_{name}")
              for name in ("organisms", "knockout", "heldout", "summary")}
    plot_population(*tables.values(), job.out, fraction=p.fraction, selectors=p.selectors,
                    title=f"population of {len(p.organisms)} organisms")
