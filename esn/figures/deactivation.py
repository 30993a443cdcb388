"""Figures of one study's sweeps over each emotion's neuron set: the Δrecall heatmaps under deactivation
(`plot_delta_recall`), specificity per target emotion (`plot_specificity`), deactivation vs set size
(`plot_set_size`) and the gain-strength sweep (`plot_strength`). They read the same per-selector
delta_recall / conditions tables of one (model, identification corpus, evaluation corpus) study and draw
every selector's set against its layer-matched random control; the gain sweep sits here, although it
amplifies rather than deactivates, because it is drawn exactly as the set-size sweep (targets × two
metrics, log x axis, random control dashed) and shares its legend (`_selector_handles`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from esn.figures.registry import FigureJob, register
from esn.figures.style import (DIVERGING, PathLike, _band, _ci_text, _close, _emotion_order, _emotion_title, _fmt_num,
                               _heatmap, _legend, _limit, _log_x, _no_data, _mean_over_draws, _pct, _selectors, _signed,
                               _suptitle, _themed, _tint_emotion_ticks, save, selector_color, selector_label)


def _selector_handles(selectors: Sequence[str], random: bool = True, random_label: str = "random control "
                      "(same size per layer)") -> list[Any]:
    handles: list[Any] = [Line2D([], [], color=selector_color(s), lw=1.7, marker="o", ms=4.5, label=selector_label(s))
                          for s in selectors]
    handles.append(Line2D([], [], color="black", lw=1.7, marker="o", ms=4.5, label="selected set"))
    if random:
        handles.append(Line2D([], [], color="black", lw=1.1, ls="--", marker="o", ms=3.5, mfc="white",
                              label=random_label))
    return handles


def _mean_over_targets(d: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean of per-target estimates; its interval = mean of per-target bounds (conservative)."""
    return d.groupby(by, as_index=False)[["delta_recall", "lo", "hi"]].mean()


# ----------------------------------------------------------------------------------------------------
# Δrecall heatmaps


@_themed
def plot_delta_recall(delta: pd.DataFrame, out: Sequence[PathLike], *, fraction: float,
                      selectors: Sequence[str] | None = None, title: str | None = None) -> None:
    """Δrecall[target, class] under deactivation at `fraction`: one column of panels per selector, the
    selected set on top, its random control below. `delta`: delta_recall tables with a `selector` column."""
    d = _mean_over_draws(delta)
    d = d[(d["mode"] == "deactivate") & _close(d["fraction"], fraction) & (d["class"] != "specificity")]
    sels = _selectors(d, selectors)
    targets, classes = _emotion_order(d["target"]), _emotion_order(d["class"])
    lim = _limit(100 * d["delta_recall"])
    cell = 0.42 if len(classes) <= 6 else 0.34
    width = max(3.2, len(sels) * (len(classes) * cell + 0.9) + 1.2)
    height = 2 * (len(targets) * cell + 0.9) + 1.3
    fig, axes = plt.subplots(2, max(1, len(sels)), figsize=(width, height), squeeze=False, layout="constrained")
    controls = [("selected", "selected set"), ("random", "random control")]
    annot_size = 8 if len(classes) <= 6 else 6.5
    for j, sel in enumerate(sels or [""]):
        for i, (control, control_label) in enumerate(controls):
            ax = axes[i, j]
            part = d[(d["selector"] == sel) & (d["control"] == control)]
            if part.empty:
                _no_data(ax)
                ax.set_title(f"{selector_label(sel)}\n{control_label}" if i == 0 else control_label)
                continue
            m = (100 * part.pivot_table(index="target", columns="class", values="delta_recall", aggfunc="mean")
                 ).reindex(index=targets, columns=classes)
            annot = np.vectorize(lambda v: _signed(v))(m.to_numpy(dtype=float))
            _heatmap(m, ax=ax, cmap=DIVERGING, center=0, vmin=-lim, vmax=lim, annot=annot, fmt="", cbar=False,
                        square=True, linewidths=0.6, linecolor="white", annot_kws={"size": annot_size})
            for k, t in enumerate(targets):
                if t in classes:
                    ax.add_patch(Rectangle((classes.index(t), k), 1, 1, fill=False, edgecolor="black", lw=1.4))
            ax.set_title(f"{selector_label(sel)}\n{control_label}" if i == 0 else control_label, fontsize=9)
            ax.set_xlabel("evaluated class" if i == 1 else "")
            ax.set_ylabel("neurons of (deactivated)" if j == 0 else "")
            ax.tick_params(axis="x", rotation=45 if len(classes) > 4 else 0)
            ax.tick_params(axis="y", rotation=0)
            _tint_emotion_ticks(ax)
    sm = plt.cm.ScalarMappable(norm=Normalize(-lim, lim), cmap=DIVERGING)
    fig.colorbar(sm, ax=axes, shrink=0.7, aspect=25, pad=0.02,
                 label="Δrecall (percentage points)\nred = recall lost")
    _suptitle(fig, title, f"Deactivation of {_pct(fraction)} of neurons: Δrecall vs unmodified model "
                          "(boxed: own emotion)")
    save(fig, out)


# ----------------------------------------------------------------------------------------------------
# specificity per selector


@_themed
def plot_specificity(delta: pd.DataFrame, out: Sequence[PathLike], *, fraction: float,
                     selectors: Sequence[str] | None = None, title: str | None = None,
                     summary: pd.DataFrame | None = None) -> None:
    """Specificity of deactivation at `fraction` per target emotion and averaged, each selector's set vs its
    random control (mean over its draws), with 95 % bootstrap CIs. `summary` (the metrics rule's `.summary.csv`, selector column
    added) gives the mean over emotions its own paired-bootstrap CI; without it the mean's interval is the
    mean of the per-emotion bounds."""
    means = None
    if summary is not None and len(summary):
        m = _mean_over_draws(summary)
        means = m[(m["mode"] == "deactivate") & _close(m["fraction"], fraction) & (m["statistic"] == "specificity")]
    d = _mean_over_draws(delta)
    d = d[(d["mode"] == "deactivate") & _close(d["fraction"], fraction) & (d["class"] == "specificity")]
    sels = _selectors(d, selectors)
    targets = _emotion_order(d["target"])
    groups = targets + ["mean"]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.0 + len(groups) * (0.35 + 0.3 * len(sels))), 4.0),
                           layout="constrained")
    slot = 0.8 / max(1, len(sels))
    for gi, group in enumerate(groups):
        if group == "mean":
            ax.axvspan(gi - 0.5, gi + 0.5, color="0.92", zorder=0)
        elif gi:
            ax.axvline(gi - 0.5, color="0.85", lw=0.8, zorder=0)
        for si, sel in enumerate(sels):
            for control, offset in (("selected", -0.22), ("random", 0.22)):
                part = d[(d["selector"] == sel) & (d["control"] == control)]
                part = part if group == "mean" else part[part["target"] == group]
                if part.empty:
                    continue
                est, lo, hi = (100 * part[["delta_recall", "lo", "hi"]].mean()).to_numpy()
                if group == "mean" and means is not None:
                    row = means[(means["selector"] == sel) & (means["control"] == control)]
                    if len(row):
                        est, lo, hi = (100 * row[["estimate", "lo", "hi"]].iloc[0]).to_numpy(dtype=float)
                x = gi - 0.4 + slot * (si + 0.5 + offset)
                color = selector_color(sel)
                yerr = np.array([[max(est - lo, 0)], [max(hi - est, 0)]]) if np.isfinite([lo, hi]).all() else None
                chosen = control == "selected"
                ax.errorbar([x], [est], yerr=yerr, fmt="o", color=color, mec=color, mfc=color if chosen else "white",
                            ms=5.5 if chosen else 4.5, elinewidth=1.3, capsize=2, alpha=1.0 if chosen else 0.8,
                            zorder=3)
    ax.axhline(0, color="black", lw=0.8, zorder=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([*targets, "mean over\nemotions"])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.grid(axis="x", visible=False)
    _tint_emotion_ticks(ax, "x")
    ax.set_xlabel("target emotion (its set deactivated)")
    ax.set_ylabel("specificity (percentage points)\nΔrecall(e,e) − mean Δrecall(e,c≠e)")
    handles = [Patch(color=selector_color(s), label=selector_label(s)) for s in sels]
    handles += [Line2D([], [], color="black", marker="o", ls="", ms=5.5, label="selected set"),
                Line2D([], [], color="black", marker="o", ls="", mfc="white", ms=4.5,
                       label="random control (same size per layer)")]
    _legend(fig, handles)
    mean_ci = ("mean's interval: paired bootstrap" if means is not None and len(means)
               else "mean's interval = mean of per-emotion bounds")
    _suptitle(fig, title, f"Specificity of deactivating {_pct(fraction)} of neurons (negative = specific; "
                          f"error bars: {_ci_text(d, means)};\n{mean_ci}; random: mean over draws)")
    save(fig, out)


# ----------------------------------------------------------------------------------------------------
# strength sweep (gain)


@_themed
def plot_strength(conditions: pd.DataFrame, out: Sequence[PathLike], *, fraction: float,
                  selectors: Sequence[str] | None = None, title: str | None = None) -> None:
    """Gain a ← (1+α)·a on each emotion's set at `fraction`: α vs the share of predictions equal to the
    target (top) and vs accuracy (bottom), per target emotion and selector; random control dashed."""
    c = _mean_over_draws(conditions)
    base = c[c["mode"] == "none"]
    gain = c[(c["mode"] == "gain") & _close(c["fraction"], fraction)]
    sels = _selectors(gain, selectors)
    targets = _emotion_order(gain["target"])
    n_labels = len([col for col in c.columns if col.startswith("recall_")])
    cols = max(1, len(targets))
    fig, axes = plt.subplots(2, cols, figsize=(max(5.0, 2.5 * cols + 1.5), 5.4), squeeze=False, sharex=True,
                             sharey="row", layout="constrained")
    alphas = sorted(gain["alpha"].dropna().unique())
    rows = [("target_share", "predictions = target (%)"), ("accuracy", "accuracy (%)")]
    for j, target in enumerate(targets or [""]):
        for i, (metric, ylabel) in enumerate(rows):
            ax = axes[i, j]
            for sel in sels:
                for control in ("selected", "random"):
                    part = gain[(gain["selector"] == sel) & (gain["control"] == control) & (gain["target"] == target)]
                    if part.empty:
                        continue
                    _band(ax, part["alpha"].to_numpy(), 100 * part[metric].to_numpy(),
                          100 * part[f"{metric}_lo"].to_numpy() if f"{metric}_lo" in part else None,
                          100 * part[f"{metric}_hi"].to_numpy() if f"{metric}_hi" in part else None,
                          selector_color(sel), dashed=control == "random")
            if metric == "accuracy" and not base.empty:
                ax.axhline(100 * base["accuracy"].iloc[0], color="black", lw=1, ls=":", zorder=1)
            if metric == "target_share" and n_labels:
                ax.axhline(100 / n_labels, color="black", lw=1, ls=":", zorder=1)
            if i == 0:
                _emotion_title(ax, target, "target: ")
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == 1:
                ax.set_xlabel("gain strength α  (a ← (1+α)·a)")
            _log_x(ax, alphas, _fmt_num, base=2)
    for ax in axes[0]:
        ax.set_ylim(-3, 103)
    handles = _selector_handles(sels)
    handles.append(Line2D([], [], color="black", ls=":", lw=1,
                          label="reference: unmodified accuracy (bottom), 1/#classes (top)"))
    _legend(fig, handles)
    _suptitle(fig, title, f"Gain on {_pct(fraction)} of neurons: steering toward the target emotion "
                          f"(bands: {_ci_text(gain)}; random: mean over draws)")
    save(fig, out)


# ----------------------------------------------------------------------------------------------------
# set size sweep (deactivation)


@_themed
def plot_set_size(delta: pd.DataFrame, out: Sequence[PathLike], *, selectors: Sequence[str] | None = None,
                  main_fraction: float | None = None, title: str | None = None) -> None:
    """Deactivation vs set size: Δrecall(e,e) (top) and specificity (bottom), per target emotion and over
    emotions, per selector; random control dashed."""
    d = _mean_over_draws(delta)
    d = d[d["mode"] == "deactivate"]
    own = d[d["class"] == d["target"]]
    spec = d[d["class"] == "specificity"]
    sels = _selectors(d, selectors)
    targets = _emotion_order(d["target"])
    groups = targets + ["mean"]
    fractions = sorted(d["fraction"].dropna().unique())
    fig, axes = plt.subplots(2, len(groups), figsize=(max(5.0, 2.4 * len(groups) + 1.5), 5.4), squeeze=False,
                             sharex=True, sharey="row", layout="constrained")
    rows = [(own, "Δrecall(e,e) (pp)\nown emotion"), (spec, "specificity (pp)\nΔrecall(e,e) − mean Δrecall(e,c≠e)")]
    for j, group in enumerate(groups):
        for i, (table, ylabel) in enumerate(rows):
            ax = axes[i, j]
            for sel in sels:
                for control in ("selected", "random"):
                    part = table[(table["selector"] == sel) & (table["control"] == control)]
                    part = (_mean_over_targets(part, ["fraction"]) if group == "mean"
                            else part[part["target"] == group])
                    if part.empty:
                        continue
                    _band(ax, part["fraction"].to_numpy(), 100 * part["delta_recall"].to_numpy(),
                          100 * part["lo"].to_numpy(), 100 * part["hi"].to_numpy(), selector_color(sel),
                          dashed=control == "random")
            ax.axhline(0, color="black", lw=0.8, zorder=1)
            if main_fraction is not None:
                ax.axvline(main_fraction, color="0.6", lw=0.8, ls=":", zorder=1)
            if i == 0:
                if group == "mean":
                    ax.set_title("mean over emotions")
                else:
                    _emotion_title(ax, group, "target: ")
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == 1:
                ax.set_xlabel("set size (% of all neurons, log)")
            _log_x(ax, fractions, _pct)
    handles = _selector_handles(sels)
    if main_fraction is not None:
        handles.append(Line2D([], [], color="0.6", ls=":", lw=0.8, label=f"main set size ({_pct(main_fraction)})"))
    _legend(fig, handles)
    _suptitle(fig, title, f"Deactivation vs set size (negative = recall lost; bands: {_ci_text(d)}; "
                          "mean's band = mean of bounds)")
    save(fig, out)


# --- the workflow's figure kinds (esn/figures/registry.py) ---------------------------------------------


@register("delta_recall", "1 Δrecall heatmaps", "Δrecall heatmaps (target × evaluated class) per selector at the main "
          "set size, beside the random control.", {"tables": "study:delta_recall"})
def _draw_delta_recall(job: FigureJob) -> None:
    p = job.params
    plot_delta_recall(job.per_selector(job.input.tables, "delta_recall"), job.out, fraction=p.fraction,
                      selectors=p.selectors, title=job.title)


@register("specificity", "2 specificity", "Specificity of deactivation per selector and target emotion, selected set "
          "vs random control.", {"tables": "study:delta_recall", "summaries": "study:summary"})
def _draw_specificity(job: FigureJob) -> None:
    p = job.params
    plot_specificity(job.per_selector(job.input.tables, "delta_recall"), job.out, fraction=p.fraction,
                     selectors=p.selectors, title=job.title, summary=job.per_selector(job.input.summaries, "summary"))


@register("strength", "3 gain strength", "Gain sweep: α vs share of predictions equal to the target, and vs accuracy.",
          {"tables": "study:conditions"}, params=("selectors", "fraction", "alphas"), sweeps=True,
          applies=lambda config: bool(config["intervention"]["alphas"]))
def _draw_strength(job: FigureJob) -> None:
    p = job.params
    plot_strength(job.per_selector(job.input.tables, "conditions"), job.out, fraction=p.fraction, selectors=p.selectors,
                  title=job.title)


@register("set_size", "4 set size", "Deactivation Δrecall(e,e) and specificity vs set size.",
          {"tables": "study:delta_recall"}, params=("selectors", "fraction", "fractions"), sweeps=True)
def _draw_set_size(job: FigureJob) -> None:
    p = job.params
    plot_set_size(job.per_selector(job.input.tables, "delta_recall"), job.out, selectors=p.selectors,
                  main_fraction=p.fraction, title=job.title)
