"""Shared style of every figure and the helpers more than one figure family uses: the fixed colour of each
emotion and selector and the two palettes (`DIVERGING` for signed quantities, `SEQUENTIAL` for overlaps),
the theme every `plot_*` draws in (`_themed`) and the reproducible `save`, the workflow's tables
(`read_tables` and `parse_variant`, re-exported from the table contract `esn.tables`; `_mean_over_draws`,
which averages the random control's draws; `_ci_text`), and the small text, number, legend and axis
helpers. Importing it selects matplotlib's non-interactive Agg backend; `esn.figures` imports it before any
figure module.
"""

from __future__ import annotations

import functools
import logging
import math
import textwrap
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from esn.emotions import EMOTIONS  # noqa: E402
from esn.tables import CONDITION_KEYS, parse_variant, read_tables  # noqa: E402, F401  (re-exported)

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
_KEY_COLUMNS = (*(k for k in CONDITION_KEYS if k != "draw"), "class", "statistic", "selector", "identify", "evaluate",
                "n", "seed", "bootstrap_unit")


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


def _no_data(ax: plt.Axes, what: str = "no data") -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
