"""Every figure of the paper, drawn from the tidy tables of the workflow (never from activations or models).

Each `plot_*` function takes DataFrames (or a dict) plus output paths and writes the same figure to each
path (the format follows the suffix: PDF and PNG in the workflow). Nothing here reads config or
Snakemake objects: `workflow/scripts/figure.py` translates a rule into one call.

Conventions shared by all figures:

- Δrecall, specificity, accuracy, recall and shares are drawn in **percentage points / percent**
  (table values × 100); axis labels say so.
- Specificity = Δrecall(e, e) − mean_{c≠e} Δrecall(e, c). Under deactivation a *negative* value means the
  set is specific to its emotion (its own recall falls more than the others').
- One fixed colour per canonical emotion (`EMOTION_COLORS`, Okabe–Ito first, Paul Tol's muted colours for
  the rarer classes) and per selector (`SELECTOR_COLORS`); the random control is drawn dashed / hollow in
  its selector's colour (it is matched to that selector's set: same size per layer). Where a table holds
  several random draws (`draw` 0..R−1), figures show their mean (estimate and bounds averaged over draws).
- Intervals are 95 % bootstrap CIs; captions name what was resampled (the tables' `bootstrap_unit`:
  speakers or utterances).
- Heatmaps of signed quantities use ColorBrewer RdBu (colour-blind safe) centred at 0: red = recall lost.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import textwrap
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import Normalize, to_rgb  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from esn.emotions import EMOTIONS  # noqa: E402

PathLike = str | Path

logging.getLogger("fontTools").setLevel(logging.WARNING)  # its font-subsetting INFO lines flood rule logs

#: One colour per canonical emotion, the same in every figure. The seven study classes and calm (RAVDESS'
#: eight) take the eight Okabe–Ito colours (black lightened to grey for neutral, yellow darkened to be
#: visible on white); the rest take Paul Tol's muted colours.
EMOTION_COLORS: dict[str, str] = {
    "neutral": "#7F7F7F",
    "happy": "#E69F00",
    "sad": "#0072B2",
    "angry": "#D55E00",
    "fear": "#CC79A7",
    "disgust": "#009E73",
    "surprise": "#56B4E9",
    "calm": "#C9B200",
    "excited": "#882255",
    "frustrated": "#332288",
    "contempt": "#999933",
    "other": "#BBBBBB",
}

#: One colour per selector (seaborn "colorblind"): the frequency family in blues, the magnitude family in
#: oranges, attribution green.
SELECTOR_COLORS: dict[str, str] = {
    "lap": "#0173B2",
    "lape": "#56B4E9",
    "mad": "#DE8F05",
    "cas": "#D55E00",
    "attribution": "#029E73",
}
SELECTOR_LABELS: dict[str, str] = {
    "lap": "LAP (frequency)",
    "lape": "LAPE (entropy)",
    "mad": "MAD (magnitude)",
    "cas": "CAS (contrast)",
    "attribution": "attribution (a·∂log p/∂a)",
}
SELECTOR_SHORT: dict[str, str] = {"lap": "LAP", "lape": "LAPE", "mad": "MAD", "cas": "CAS", "attribution": "attrib."}
FALLBACK_COLOR = "#444444"
DIVERGING = "RdBu"      # red = negative (recall lost), blue = positive; colour-blind safe
SEQUENTIAL = "rocket_r"  # light = low, dark = high; perceptually uniform

__all__ = [
    "EMOTION_COLORS", "SELECTOR_COLORS", "SELECTOR_LABELS", "emotion_color", "selector_color",
    "read_tables", "parse_variant", "save",
    "plot_delta_recall", "plot_specificity", "plot_strength", "plot_set_size", "plot_layers",
    "plot_overlap", "plot_id_size", "plot_transfer", "plot_confusion", "plot_injection", "plot_correct_only",
]


# ----------------------------------------------------------------------------------------------------
# helpers


def emotion_color(emotion: str) -> str:
    return EMOTION_COLORS.get(emotion, FALLBACK_COLOR)


def selector_color(selector: str) -> str:
    return SELECTOR_COLORS.get(selector, FALLBACK_COLOR)


def selector_label(selector: str) -> str:
    return SELECTOR_LABELS.get(selector, selector)


def selector_short(selector: str) -> str:
    return SELECTOR_SHORT.get(selector, selector)


def read_tables(paths: Sequence[PathLike], keys: Sequence[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Concatenate CSV tables, adding the columns of `keys[i]` (e.g. {"selector": "mad"}) to table i."""
    frames = []
    for i, path in enumerate(paths):
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        for column, value in (keys[i] if keys is not None else {}).items():
            frame[column] = value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def parse_variant(variant: str) -> tuple[int, int] | None:
    """`n30s1` (or `mad.n30s1`) -> (30, 1): identification utterances per emotion and seed; None for `all`."""
    m = re.search(r"(?:^|\.)n(\d+)s(-?\d+)$", str(variant))
    return (int(m.group(1)), int(m.group(2))) if m else None


#: Resolution of PNG outputs (dots per inch).
DPI = 200


def save(fig: plt.Figure, paths: Iterable[PathLike], dpi: int | None = None) -> None:
    """Write `fig` to every path (format from the suffix), reproducibly (no timestamps), then close it.
    Figures use the constrained layout engine, so no `bbox_inches="tight"` (an extra draw per file)."""
    for path in paths:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower().lstrip(".")
        metadata = {"CreationDate": None} if suffix == "pdf" else {"Software": None} if suffix == "png" else None
        fig.savefig(path, dpi=dpi or DPI, metadata=metadata)
    plt.close(fig)


def _themed(fn: Callable[..., None]) -> Callable[..., None]:
    """Draw inside one theme without touching global matplotlib state."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        rc = {"axes.titleweight": "bold", "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8,
              "ytick.labelsize": 8, "legend.fontsize": 8, "legend.title_fontsize": 8, "figure.titlesize": 11,
              "figure.titleweight": "bold", "pdf.fonttype": 42, "svg.fonttype": "none"}
        with sns.axes_style("whitegrid"), sns.plotting_context("paper"), plt.rc_context(rc), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="seaborn")
            fn(*args, **kwargs)

    return wrapper


def _heatmap(data: pd.DataFrame, ax: plt.Axes, **kwargs: Any) -> None:
    """seaborn heatmap without the style's grid lines showing through masked cells."""
    sns.heatmap(data, ax=ax, **kwargs)
    ax.grid(False)


def _emotion_order(values: Iterable[Any]) -> list[str]:
    """Canonical emotion order (then unknown names alphabetically); drops empty/NaN."""
    names = {str(v) for v in values if isinstance(v, str) and v and v != "specificity"}
    rank = {e: i for i, e in enumerate(EMOTIONS)}
    return sorted(names, key=lambda e: (rank.get(e, len(rank)), e))


def _selectors(data: pd.DataFrame, selectors: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(data["selector"].astype(str))) if "selector" in data else []
    if selectors is None:
        return present
    return [s for s in selectors if s in present]


#: Columns that identify a row of a metrics table (everything else numeric is a value).
_KEY_COLUMNS = ("mode", "variant", "control", "target", "fraction", "alpha", "layer", "class", "statistic",
                "selector", "identify", "evaluate", "n", "seed", "bootstrap_unit")


def _norm(table: pd.DataFrame) -> pd.DataFrame:
    """Empty strings for missing control/target (CSV reads '' as NaN), floats for fraction/alpha, and the
    random control's draws collapsed to their mean (`_mean_over_draws`)."""
    t = table.copy()
    for column in ("mode", "control", "target", "class", "selector"):
        if column in t:
            t[column] = t[column].fillna("").astype(str)
    for column in ("fraction", "alpha"):
        if column in t:
            t[column] = pd.to_numeric(t[column], errors="coerce").astype(float)
    return _mean_over_draws(t)


def _mean_over_draws(t: pd.DataFrame) -> pd.DataFrame:
    """One random-control row per condition: the mean over its draws of every numeric value (estimate and
    CI bounds alike), so each figure shows the random control as the centre of its null distribution."""
    if "draw" not in t or "control" not in t or not (t["control"] == "random").any():
        return t
    keys = [c for c in t.columns if c in _KEY_COLUMNS]
    values = [c for c in t.columns if c not in keys and c != "draw" and pd.api.types.is_numeric_dtype(t[c])]
    rand = t[t["control"] == "random"].groupby(keys, as_index=False, dropna=False, sort=False)[values].mean()
    return pd.concat([t[t["control"] != "random"], rand.assign(draw=-1)], ignore_index=True)


def _ci_text(*tables: pd.DataFrame | None) -> str:
    """'95% CI, speakers resampled' (or utterances) from the tables' bootstrap_unit column."""
    units = sorted({str(u) for t in tables if t is not None and "bootstrap_unit" in t
                    for u in t["bootstrap_unit"].dropna().unique()})
    return f"95% CI, {' / '.join(u + 's' for u in units)} resampled" if units else "95% bootstrap CI"


def _close(series: pd.Series, value: float) -> np.ndarray:
    return np.isclose(series.to_numpy(dtype=float), float(value), rtol=1e-6, atol=1e-12)


def _pct(x: float) -> str:
    """A set size as a percentage of neurons: 0.05 -> '5%', 0.005 -> '0.5%'."""
    return f"{100 * x:.3g}%"


def _signed(v: float, digits: int = 0) -> str:
    if not np.isfinite(v):
        return ""
    s = f"{v:+.{digits}f}"
    return f"{0:.{digits}f}" if float(s) == 0 else s.replace("-", "−")


def _limit(values: Iterable[float], floor: float = 5.0, step: float = 5.0) -> float:
    vals = np.abs(np.asarray(list(values), dtype=float))
    vals = vals[np.isfinite(vals)]
    top = float(vals.max()) if vals.size else 0.0
    return max(floor, math.ceil(top / step) * step)


def _text_color(color: str) -> str:
    r, g, b = to_rgb(color)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def _tint_emotion_ticks(ax: plt.Axes, axis: str = "both") -> None:
    """Light background of the emotion's colour behind emotion tick labels (the colour key everywhere)."""
    labels = []
    if axis in ("x", "both"):
        labels += ax.get_xticklabels()
    if axis in ("y", "both"):
        labels += ax.get_yticklabels()
    for label in labels:
        name = label.get_text()
        if name in EMOTION_COLORS:
            label.set_bbox({"facecolor": EMOTION_COLORS[name], "alpha": 0.3, "edgecolor": "none", "pad": 1.2})


def _emotion_title(ax: plt.Axes, emotion: str, prefix: str = "") -> None:
    """Panel title in a strip of the emotion's colour."""
    color = EMOTION_COLORS.get(emotion)
    if color is None:
        ax.set_title(f"{prefix}{emotion}")
        return
    ax.set_title(f"{prefix}{emotion}", color=_text_color(color),
                 bbox={"facecolor": color, "edgecolor": "none", "pad": 2.5, "boxstyle": "round,pad=0.25"})


def _suptitle(fig: plt.Figure, title: str | None, subtitle: str) -> None:
    """Title line(s) wrapped to the figure's width (the layout engine does not wrap or shrink text)."""
    size = plt.rcParams["figure.titlesize"]
    size = size if isinstance(size, (int, float)) else 11
    chars = max(30, int(fig.get_figwidth() * 72 / (0.62 * size)))
    lines = [textwrap.fill(part, chars) for part in ([title] if title else []) + subtitle.split("\n")]
    fig.suptitle("\n".join(lines))


def _legend(fig: plt.Figure, handles: list[Any]) -> None:
    """Figure legend below the panels, in as many columns as fit the figure's width."""
    if not handles:
        return
    size = plt.rcParams["legend.fontsize"]
    size = size if isinstance(size, (int, float)) else 8
    widest = max(len(h.get_label()) for h in handles) * 0.55 * size + 40  # points: text + handle + padding
    ncol = max(1, min(len(handles), int(fig.get_figwidth() * 72 // widest)))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False)


def _log_x(ax: plt.Axes, ticks: Sequence[float], fmt: Callable[[float], str], base: float = 10) -> None:
    """Log x axis with exactly the sweep's values as ticks (linear if any value is not positive)."""
    ticks = sorted({float(t) for t in ticks if np.isfinite(t)})
    if ticks and ticks[0] > 0 and len(ticks) > 1:
        ax.set_xscale("log", base=base)
        ax.minorticks_off()
        pad = (math.log(ticks[-1]) - math.log(ticks[0])) * 0.06 or 0.1
        ax.set_xlim(ticks[0] / math.exp(pad), ticks[-1] * math.exp(pad))
    ax.set_xticks(ticks)
    ax.set_xticklabels([fmt(t) for t in ticks])


def _fmt_num(x: float) -> str:
    return f"{x:g}"


def _band(ax: plt.Axes, x: np.ndarray, est: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None, color: str,
          *, dashed: bool = False, marker: str = "o", label: str | None = None) -> None:
    order = np.argsort(x)
    x, est = np.asarray(x)[order], np.asarray(est)[order]
    ax.plot(x, est, color=color, ls="--" if dashed else "-", lw=1.1 if dashed else 1.7, marker=marker,
            ms=3.5 if dashed else 4.5, mfc="white" if dashed else color, mec=color, label=label,
            alpha=0.85 if dashed else 1.0, zorder=2 if dashed else 3)
    if lo is not None and hi is not None:
        lo, hi = np.asarray(lo)[order], np.asarray(hi)[order]
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=color, alpha=0.06 if dashed else 0.16, lw=0, zorder=1)


def _selector_handles(selectors: Sequence[str], random: bool = True, random_label: str = "random control "
                      "(same size per layer)") -> list[Any]:
    handles: list[Any] = [Line2D([], [], color=selector_color(s), lw=1.7, marker="o", ms=4.5, label=selector_label(s))
                          for s in selectors]
    handles.append(Line2D([], [], color="black", lw=1.7, marker="o", ms=4.5, label="selected set"))
    if random:
        handles.append(Line2D([], [], color="black", lw=1.1, ls="--", marker="o", ms=3.5, mfc="white",
                              label=random_label))
    return handles


def _no_data(ax: plt.Axes, what: str = "no data") -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _mean_over_targets(d: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean of per-target estimates; its interval = mean of per-target bounds (conservative)."""
    return d.groupby(by, as_index=False)[["delta_recall", "lo", "hi"]].mean()


def _knockout_chance(knockout: pd.DataFrame) -> float | None:
    recalls = [c for c in knockout.columns if c.startswith("recall_")]
    return 1.0 / len(recalls) if recalls else None


# ----------------------------------------------------------------------------------------------------
# 1. Δrecall heatmaps


@_themed
def plot_delta_recall(delta: pd.DataFrame, out: Sequence[PathLike], *, fraction: float,
                      selectors: Sequence[str] | None = None, title: str | None = None) -> None:
    """Δrecall[target, class] under deactivation at `fraction`: one column of panels per selector, the
    selected set on top, its random control below. `delta`: delta_recall tables with a `selector` column."""
    d = _norm(delta)
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
# 2. specificity per selector


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
        m = _norm(summary)
        means = m[(m["mode"] == "deactivate") & _close(m["fraction"], fraction) & (m["statistic"] == "specificity")]
    d = _norm(delta)
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
# 3. strength sweep (gain)


@_themed
def plot_strength(conditions: pd.DataFrame, out: Sequence[PathLike], *, fraction: float,
                  selectors: Sequence[str] | None = None, title: str | None = None) -> None:
    """Gain a ← (1+α)·a on each emotion's set at `fraction`: α vs the share of predictions equal to the
    target (top) and vs accuracy (bottom), per target emotion and selector; random control dashed."""
    c = _norm(conditions)
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
# 4. set size sweep (deactivation)


@_themed
def plot_set_size(delta: pd.DataFrame, out: Sequence[PathLike], *, selectors: Sequence[str] | None = None,
                  main_fraction: float | None = None, title: str | None = None) -> None:
    """Deactivation vs set size: Δrecall(e,e) (top) and specificity (bottom), per target emotion and over
    emotions, per selector; random control dashed."""
    d = _norm(delta)
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


# ----------------------------------------------------------------------------------------------------
# 5. layers: ESN counts beside layer knockout


@_themed
def plot_layers(counts: pd.DataFrame, knockout: pd.DataFrame | None, out: Sequence[PathLike], *,
                selectors: Sequence[str] | None = None, fraction: float | None = None,
                title: str | None = None) -> None:
    """Top: accuracy with each decoder layer's MLP knocked out (which layers carry the decision at all).
    Below, on the same layer axis: ESNs per layer per emotion, one panel per selector."""
    counts = _norm(counts)
    sels = _selectors(counts, selectors)
    emotions = _emotion_order(counts["emotion"]) if "emotion" in counts else []
    layers = set(pd.to_numeric(counts["layer"]).astype(int)) if len(counts) else set()
    ko = None
    if knockout is not None and len(knockout):
        ko = _norm(knockout)
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


# ----------------------------------------------------------------------------------------------------
# 6. overlap


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
    em = _norm(emotions)
    se = _norm(selectors_table)
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


# ----------------------------------------------------------------------------------------------------
# 7. identification size


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
    s = _norm(sweep)
    s = s[(s["mode"] == "deactivate") & (s["control"] == "selected") & (s["class"] == "specificity")
          & _close(s["fraction"], fraction)]
    f = _norm(full)
    f = f[(f["mode"] == "deactivate") & (f["control"] == "selected") & (f["class"] == "specificity")
          & _close(f["fraction"], fraction)]
    sels = _selectors(pd.concat([s[["selector"]], f[["selector"]]]), selectors)
    stab = _stability_pairs(_norm(stability)) if stability is not None and len(stability) else _stability_pairs(
        pd.DataFrame(columns=["selector", "variant_a", "variant_b", "emotion", "jaccard"]))
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
# 8. cross-corpus transfer


@_themed
def plot_transfer(delta: pd.DataFrame, out: Sequence[PathLike], *, fraction: float,
                  selectors: Sequence[str] | None = None, title: str | None = None) -> None:
    """Mean specificity (over target emotions) of deactivating sets identified on corpus A (rows) and
    evaluated on corpus B (columns), one panel per selector; the random control's value in brackets.
    `delta`: delta_recall tables with columns identify, evaluate, selector."""
    d = _norm(delta)
    variant = d["variant"].fillna("all") if "variant" in d else "all"
    d = d[(d["mode"] == "deactivate") & _close(d["fraction"], fraction) & (d["class"] == "specificity")
          & (variant == "all")]  # the full identification set's sets only (not the identification variants)
    sels = _selectors(d, selectors)
    ident = list(dict.fromkeys(sorted(d["identify"].astype(str))))
    evals = list(dict.fromkeys(sorted(d["evaluate"].astype(str))))
    mean = d.groupby(["selector", "control", "identify", "evaluate"], as_index=False)["delta_recall"].mean()
    lim = _limit(100 * mean["delta_recall"])
    ncol = min(len(sels), 5) or 1
    nrow = math.ceil(max(1, len(sels)) / ncol)
    cw, ch = max(1.3, 1.05 * len(evals)), max(0.9, 0.8 * len(ident))
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(4.5, ncol * (cw + 1.4) + 1.0), nrow * (ch + 1.4) + 0.9),
                             squeeze=False, layout="constrained")
    for k, ax in enumerate(axes.flat):
        if k >= len(sels):
            ax.set_visible(False)
            continue
        sel = sels[k]
        part = mean[mean["selector"] == sel]
        m = 100 * part[part["control"] == "selected"].pivot(index="identify", columns="evaluate",
                                                             values="delta_recall").reindex(index=ident, columns=evals)
        r = 100 * part[part["control"] == "random"].pivot(index="identify", columns="evaluate",
                                                           values="delta_recall").reindex(index=ident, columns=evals)
        annot = np.empty(m.shape, dtype=object)
        for a in range(m.shape[0]):
            for b in range(m.shape[1]):
                v, rv = m.iat[a, b], r.iat[a, b]
                annot[a, b] = "" if not np.isfinite(v) else (_signed(v, 1) + (f"\n(random {_signed(rv, 1)})"
                                                                               if np.isfinite(rv) else ""))
        _heatmap(m, ax=ax, cmap=DIVERGING, center=0, vmin=-lim, vmax=lim, annot=annot, fmt="", cbar=False,
                    linewidths=0.8, linecolor="white", annot_kws={"size": 8})
        ax.set_title(selector_label(sel), color=selector_color(sel))
        ax.set_xlabel("evaluated on")
        ax.set_ylabel("identified on")
        ax.tick_params(axis="y", rotation=0)
    sm = plt.cm.ScalarMappable(norm=Normalize(-lim, lim), cmap=DIVERGING)
    fig.colorbar(sm, ax=axes, shrink=0.8, aspect=20, label="mean specificity (pp)\nnegative = specific")
    _suptitle(fig, title, f"Cross-corpus transfer: deactivating {_pct(fraction)} of neurons, mean specificity over "
                          "target emotions")
    save(fig, out)


# ----------------------------------------------------------------------------------------------------
# 9. the model organism


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


# ----------------------------------------------------------------------------------------------------
# 10. label-free injection

#: one colour per injection strategy (Paul Tol's bright scheme, apart from the emotion colours' use)
STRATEGY_COLORS: dict[str, str] = {"2pass": "#4477AA", "mix": "#228833", "union": "#CCBB44", "oracle": "#AA3377"}
STRATEGY_LABELS: dict[str, str] = {"2pass": "2-Pass (gain on the predicted emotion)",
                                   "mix": "Mix (gain weighted by p(e | clip))",
                                   "union": "Union (gain on all sets)",
                                   "oracle": "oracle (gain on the true emotion; not label-free)"}


@_themed
def plot_injection(injection: pd.DataFrame, out: Sequence[PathLike], *, fraction: float,
                   selectors: Sequence[str] | None = None, title: str | None = None,
                   statistic: str = "uar") -> None:
    """Label-free injection: change of UAR against the unmodified model vs gain strength α, one panel per
    selector, one line per strategy (random counterpart dashed), bands = paired 95 % bootstrap CI.
    `injection`: the `injection` tables of a study's selectors with a selector column."""
    d = _norm(injection)
    d = d[(d["statistic"] == statistic) & _close(d["fraction"], fraction)]
    sels = _selectors(d, selectors)
    strategies = [s for s in STRATEGY_COLORS if s in set(d["strategy"])]
    fig, axes = plt.subplots(1, max(1, len(sels)), figsize=(max(5.0, 2.7 * len(sels) + 1.2), 3.6), squeeze=False,
                             sharey=True, layout="constrained")
    alphas = sorted(d["alpha"].dropna().unique())
    for ax, sel in zip(axes[0], sels or [""]):
        part = d[d["selector"] == sel]
        for strategy in strategies:
            for control in ("selected", "random"):
                p = part[(part["strategy"] == strategy) & (part["control"] == control)].sort_values("alpha")
                if len(p):
                    _band(ax, p["alpha"].to_numpy(), 100 * p["change"].to_numpy(), 100 * p["change_lo"].to_numpy(),
                          100 * p["change_hi"].to_numpy(), STRATEGY_COLORS[strategy], dashed=control == "random")
        ax.axhline(0, color="black", lw=0.8, zorder=1)
        ax.set_title(selector_label(sel), color=selector_color(sel))
        ax.set_xlabel("gain strength α")
        if len(alphas):
            _log_x(ax, alphas, _fmt_num, base=2)
        if not len(part):
            _no_data(ax)
    base = d["estimate"] - d["change"]
    axes[0, 0].set_ylabel(f"Δ {statistic.upper().replace('_', '-')} vs unmodified (pp)")
    handles: list[Any] = [Line2D([], [], color=STRATEGY_COLORS[s], lw=1.7, marker="o", label=STRATEGY_LABELS[s])
                          for s in strategies]
    handles.append(Line2D([], [], color="black", lw=1.1, ls="--", marker="o", mfc="white",
                          label="layer-matched random sets, same strategy"))
    _legend(fig, handles)
    unmodified = f"; unmodified {statistic.upper()} {_pct(base.iloc[0])}" if len(base) else ""
    _suptitle(fig, title, f"Label-free injection with {_pct(fraction)} of neurons per emotion{unmodified} "
                          "(bands: paired 95% bootstrap CI)")
    save(fig, out)


# ----------------------------------------------------------------------------------------------------
# 11. correct-only identification


@_themed
def plot_correct_only(summary: pd.DataFrame, stability: pd.DataFrame | None, out: Sequence[PathLike], *,
                      fraction: float, selectors: Sequence[str] | None = None, title: str | None = None) -> None:
    """Identification from every clip vs from correctly recognised clips only: mean specificity of
    deactivating each selector's sets (95 % CI), and the Jaccard overlap of the two sets (annotated).
    `summary`: the summary tables with a selector column; `stability`: the selector stability table."""
    s = _norm(summary)
    s = s[(s["mode"] == "deactivate") & (s["control"] == "selected") & (s["statistic"] == "specificity")
          & _close(s["fraction"], fraction) & s["variant"].isin(["all", "correct"])]
    sels = _selectors(s, selectors)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(sels) + 1.5), 3.6), layout="constrained")
    width = 0.38
    jac = pd.DataFrame(columns=["selector", "jaccard"])
    if stability is not None and len(stability):
        st = _norm(stability)
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
