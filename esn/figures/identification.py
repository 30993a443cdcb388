"""Figures about the identification data the sets are selected from: how many utterances per emotion are
enough (`plot_id_size`: specificity and set stability vs N, over seeds) and whether to select from
correctly recognised clips only (`plot_correct_only`). Both compare sets identified from an
identification variant (`n<N>s<seed>`, `correct`) with those of the full identification set (`all`),
beside the Jaccard overlaps of the selector stability table; the helpers that turn variant pairs into
stability curves (`_stability_pairs`, `_seed_band`) live here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from esn.figures.registry import FigureJob, register
from esn.figures.style import (PathLike, _band, _close, _emotion_order, _emotion_title, _legend, _log_x,
                               _mean_over_draws, _pct, _selectors, _suptitle, _themed, parse_variant, save,
                               selector_color, selector_label)
from esn.tables import ALL, CORRECT_ONLY, read_tables


# ----------------------------------------------------------------------------------------------------
# identification size


def _stability_pairs(stability: pd.DataFrame) -> pd.DataFrame:
    """Rows (selector, emotion, n, kind in {full, seeds}, jaccard) from variant pairs."""
    rows = []
    for _, r in stability.iterrows():
        a, b = str(r["variant_a"]), str(r["variant_b"])
        pa, pb = parse_variant(a), parse_variant(b)
        if (pa is None) != (pb is None) and "all" in (a, b):
            n = (pa or pb)[0]
            rows.append({"selector": r["selector"], "emotion": r["emotion"], "n": n, "kind": "full",
                         "jaccard": r["jaccard"]})
        elif pa and pb and pa[0] == pb[0] and pa[1] != pb[1]:
            rows.append({"selector": r["selector"], "emotion": r["emotion"], "n": pa[0], "kind": "seeds",
                         "jaccard": r["jaccard"]})
    return pd.DataFrame(rows, columns=["selector", "emotion", "n", "kind", "jaccard"])


def _seed_band(ax: plt.Axes, frame: pd.DataFrame, value: str, color: str, dashed: bool = False) -> None:
    """Mean over seeds (line) and min–max over seeds (band); `frame` has columns n, seed, value."""
    g = frame.groupby("n")[value].agg(["mean", "min", "max"]).reset_index()
    _band(ax, g["n"].to_numpy(dtype=float), g["mean"].to_numpy(), g["min"].to_numpy(), g["max"].to_numpy(), color,
          dashed=dashed)


@_themed
def plot_id_size(sweep: pd.DataFrame, full: pd.DataFrame, stability: pd.DataFrame | None, out: Sequence[PathLike], *,
                 fraction: float, selectors: Sequence[str] | None = None, title: str | None = None) -> None:
    """How much identification data is enough. Top: specificity of deactivating sets identified from N
    utterances per emotion (mean over seeds, band min–max over seeds) vs N, with the full-set value as a
    horizontal reference. Bottom: Jaccard of those sets with the full-set selection (solid) and between
    seeds at the same N (dashed). `sweep`: delta_recall tables with columns selector, n, seed;
    `full`: delta_recall tables of the full identification set with a selector column."""
    s = _mean_over_draws(sweep)
    s = s[(s["mode"] == "deactivate") & (s["control"] == "selected") & (s["class"] == "specificity")
          & _close(s["fraction"], fraction)]
    f = _mean_over_draws(full)
    f = f[(f["mode"] == "deactivate") & (f["control"] == "selected") & (f["class"] == "specificity")
          & _close(f["fraction"], fraction)]
    sels = _selectors(pd.concat([s[["selector"]], f[["selector"]]]), selectors)
    none = pd.DataFrame(columns=["selector", "variant_a", "variant_b", "emotion", "jaccard"])
    stab = _stability_pairs(_mean_over_draws(stability) if stability is not None and len(stability) else none)
    targets = _emotion_order(set(s["target"]) | set(f["target"]) | set(stab["emotion"]))
    groups = ["mean"] + targets
    ns = sorted(set(s["n"].dropna().astype(int)) | set(stab["n"].astype(int)))
    fig, axes = plt.subplots(2, len(groups), figsize=(max(5.0, 2.4 * len(groups) + 1.5), 5.4), squeeze=False,
                             sharex=True, sharey="row", layout="constrained")
    for j, group in enumerate(groups):
        ax, ax2 = axes[0, j], axes[1, j]
        for sel in sels:
            color = selector_color(sel)
            ps, pf = s[s["selector"] == sel], f[f["selector"] == sel]
            if group == "mean":
                ps = ps.groupby(["n", "seed"], as_index=False)["delta_recall"].mean()
                ref = pf["delta_recall"].mean() if len(pf) else np.nan
            else:
                ps = ps[ps["target"] == group]
                pf = pf[pf["target"] == group]
                ref = pf["delta_recall"].mean() if len(pf) else np.nan
            if len(ps):
                _seed_band(ax, ps.assign(delta_recall=100 * ps["delta_recall"]), "delta_recall", color)
            if np.isfinite(ref):
                ax.axhline(100 * ref, color=color, lw=1.0, ls=(0, (6, 3)), alpha=0.9, zorder=1)
            st = stab[stab["selector"] == sel]
            if group != "mean":
                st = st[st["emotion"] == group]
            for kind, dashed in (("full", False), ("seeds", True)):
                part = st[st["kind"] == kind]
                if len(part):
                    g = part.groupby("n")["jaccard"].agg(["mean", "min", "max"]).reset_index()
                    _band(ax2, g["n"].to_numpy(dtype=float), g["mean"].to_numpy(), g["min"].to_numpy(),
                          g["max"].to_numpy(), color, dashed=dashed)
        ax.axhline(0, color="black", lw=0.8, zorder=1)
        if group == "mean":
            ax.set_title("mean over emotions")
        else:
            _emotion_title(ax, group, "target: ")
        ax2.set_ylim(-0.03, 1.03)
        ax2.set_xlabel("N utterances per emotion")
        if j == 0:
            ax.set_ylabel("specificity (pp)\nΔrecall(e,e) − mean Δrecall(e,c≠e)")
            ax2.set_ylabel("set stability (Jaccard)\nsolid: with full-set sets\ndashed: between seeds")
        _log_x(ax, ns, lambda v: f"{v:g}")
    handles: list[Any] = [Patch(color=selector_color(x), label=selector_label(x)) for x in sels]
    handles += [Line2D([], [], color="black", lw=1.7, marker="o", label="mean over seeds (band: min–max)"),
                Line2D([], [], color="black", lw=1.0, ls=(0, (6, 3)), label="full identification set (top)"),
                Line2D([], [], color="black", lw=1.1, ls="--", marker="o", mfc="white",
                       label="between seeds at the same N (bottom)")]
    _legend(fig, handles)
    _suptitle(fig, title, f"Identification-set size: specificity of deactivating {_pct(fraction)} of neurons "
                          "(top) and stability of the sets (bottom)")
    save(fig, out)


# ----------------------------------------------------------------------------------------------------
# correct-only identification


@_themed
def plot_correct_only(summary: pd.DataFrame, stability: pd.DataFrame | None, out: Sequence[PathLike], *,
                      fraction: float, selectors: Sequence[str] | None = None, title: str | None = None) -> None:
    """Identification from every clip vs from correctly recognised clips only: mean specificity of
    deactivating each selector's sets (95 % CI), and the Jaccard overlap of the two sets (annotated).
    `summary`: the summary tables with a selector column; `stability`: the selector stability table."""
    s = _mean_over_draws(summary)
    s = s[(s["mode"] == "deactivate") & (s["control"] == "selected") & (s["statistic"] == "specificity")
          & _close(s["fraction"], fraction) & s["variant"].isin(["all", "correct"])]
    sels = _selectors(s, selectors)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(sels) + 1.5), 3.6), layout="constrained")
    width = 0.38
    jac = pd.DataFrame(columns=["selector", "jaccard"])
    if stability is not None and len(stability):
        st = _mean_over_draws(stability)
        pair = ((st["variant_a"] == "all") & (st["variant_b"] == "correct")) | (
            (st["variant_a"] == "correct") & (st["variant_b"] == "all"))
        jac = st[pair].groupby("selector", as_index=False)["jaccard"].mean()
    for i, sel in enumerate(sels):
        for k, (variant, hatch) in enumerate((("all", None), ("correct", "///"))):
            row = s[(s["selector"] == sel) & (s["variant"] == variant)]
            if row.empty:
                continue
            est, lo, hi = (100 * row[c].iloc[0] for c in ("estimate", "lo", "hi"))
            x = i + (k - 0.5) * width
            ax.bar(x, est, width, color=selector_color(sel), alpha=1.0 if k == 0 else 0.55, hatch=hatch,
                   edgecolor="white")
            ax.errorbar(x, est, yerr=[[est - lo], [hi - est]], color="black", lw=1, capsize=2)
        j = jac[jac["selector"] == sel]["jaccard"]
        if len(j):
            ax.text(i, 1.01, f"J = {j.iloc[0]:.2f}", transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(sels)), [selector_label(x) for x in sels], rotation=20, ha="right")
    ax.set_ylabel("mean specificity (pp)\nnegative = specific")
    _legend(fig, [Patch(facecolor="#777777", label="identified from all clips"),
                  Patch(facecolor="#BBBBBB", hatch="///", label="identified from correctly recognised clips only"),
                  Line2D([], [], color="black", label="95% bootstrap CI;  J: Jaccard of the two sets")])
    _suptitle(fig, title, f"Correct-only identification: deactivating {_pct(fraction)} of neurons")
    save(fig, out)


# --- the workflow's figure kinds (esn/figures/registry.py) ---------------------------------------------


@register("id_size", "7 identification size", "Identification-size sweep: specificity vs utterances per emotion, and "
          "set stability.", {"full": "study:delta_recall", "stability": "neurons:stability"},
          params=("selectors", "fraction", "id_sizes", "id_seeds"), sweeps=True,
          applies=lambda config: bool(config["selection"]["id_sizes"]))
def _draw_id_size(job: FigureJob) -> None:
    p = job.params
    rows = job.all_selector_rows(job.input.full, "delta_recall")
    sweep = rows[~rows["variant"].isin([ALL, CORRECT_ONLY])].copy()
    sweep["n"], sweep["seed"] = zip(*[parse_variant(v) for v in sweep["variant"]]) if len(sweep) else ([], [])
    plot_id_size(sweep, rows[rows["variant"] == ALL], read_tables([job.input.stability], "stability"), job.out,
                 fraction=p.fraction, selectors=p.selectors, title=job.title)


@register("correct_only", "11 correct-only identification", "Identification from all clips vs from correctly "
          "recognised clips only.", {"summaries": "study:summary", "stability": "neurons:stability"}, sweeps=True,
          applies=lambda config: bool(config["selection"]["compare_correct_only"]))
def _draw_correct_only(job: FigureJob) -> None:
    p = job.params
    plot_correct_only(job.all_selector_rows(job.input.summaries, "summary"),
                      read_tables([job.input.stability], "stability"), job.out, fraction=p.fraction,
                      selectors=p.selectors, title=job.title)
