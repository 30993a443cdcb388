"""The ESN browser: a static site per (model, identification corpus) to look at and listen to the neurons.

The index shows, per selector and emotion, the chosen set (size per layer, overlap with the other
selectors, its top neurons) and its causal effect (the Δrecall row under deactivation and the gain
curve, per evaluation corpus), and beside it the emotion's steering vector where the study has one (its layer and
norm, and per α its target share and off-target recall change beside gain on the set and a random direction).
A neuron page shows who chose the neuron and at which rank, its activation per emotion over the identification
clips, and the clips that drive it most and least, each playable. Everything comes from the store, the selections and the metric tables: no model runs.

The site is plain HTML + CSS with inline SVG figures and relative links only, so the folder opens from
the file system and can be zipped and shared: the clips it plays are copied into it, each once.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import zarr
from markupsafe import Markup
from matplotlib import colormaps

from esn import store
from esn.figures import DIVERGING, emotion_color, selector_color, selector_label
from esn.selectors import (INELIGIBLE, identification, n_selected, open_selection, overlap_between_selectors,
                           selected_mask)
from esn.tables import ALL, read_table, selection_variant

PathLike = str | Path
TEMPLATES = Path(__file__).parent / "templates" / "browser"


@dataclass(frozen=True)
class StudyTables:
    """The metric tables of one selector's sets evaluated on one corpus (written by rule metrics)."""

    eval_corpus: str
    selector: str
    delta_recall: PathLike
    conditions: PathLike


@dataclass(frozen=True)
class SteeringTables:
    """The steering metric tables of one evaluation corpus (rules steer, then metrics) and its vectors table."""

    eval_corpus: str
    delta_recall: PathLike
    conditions: PathLike
    vectors: PathLike


@dataclass
class Choice:
    """One selector chose the neuron for one emotion, at this rank (0 = best)."""

    selector: str
    emotion: str
    rank: int
    score: float


@dataclass
class Neuron:
    layer: int
    index: int
    chosen: list[Choice] = field(default_factory=list)

    @property
    def page(self) -> str:
        return f"neurons/L{self.layer:02d}-N{self.index:05d}.html"

    @property
    def name(self) -> str:
        return f"L{self.layer}·N{self.index}"


# --------------------------------------------------------------------------------------------------
# Inline SVG figures (a few kB each: hundreds of pages stay light and build in seconds)

_FONT = 'font-family="sans-serif" font-size="10"'


def _ticks(lo: float, hi: float) -> list[float]:
    """About three round ticks spanning [lo, hi]."""
    if not hi > lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / 2))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (m * step) <= 3:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def svg_layer_bars(counts: Sequence[int], color: str, label: str) -> Markup:
    """Selected neurons per layer as bars (layer 0 left)."""
    w, h, left, bottom, top = 10, 46, 26, 14, 6
    width = left + max(1, len(counts)) * w + 4
    peak = max(max(counts, default=0), 1)
    parts = [f'<svg class="fig bars" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + bottom + top}" '
             f'role="img" aria-label="{label}"><title>{label}</title>',
             f'<text x="{left - 3}" y="{top + 8}" text-anchor="end" {_FONT}>{peak}</text>',
             f'<text x="{left - 3}" y="{top + h}" text-anchor="end" {_FONT}>0</text>']
    for i, c in enumerate(counts):
        bh = h * c / peak
        parts.append(f'<rect x="{left + i * w + 1}" y="{top + h - bh:.1f}" width="{w - 2}" height="{bh:.1f}" '
                     f'fill="{color}"><title>layer {i}: {c}</title></rect>')
    step = max(1, math.ceil(len(counts) / 7))
    for i in range(0, len(counts), step):
        parts.append(f'<text x="{left + i * w + w / 2}" y="{top + h + 11}" text-anchor="middle" {_FONT}>{i}</text>')
    parts.append(f'<line x1="{left}" x2="{width - 4}" y1="{top + h}" y2="{top + h}" stroke="#444"/></svg>')
    return Markup("".join(parts))


@dataclass(frozen=True)
class Box:
    """Quantiles of one emotion's values: whiskers 5–95 %, box 25–75 %, median line, mean dot."""

    emotion: str
    n: int
    q: tuple[float, float, float, float, float]
    mean: float

    @classmethod
    def of(cls, emotion: str, values: np.ndarray) -> Box:
        values = values[np.isfinite(values)]
        if not len(values):
            return cls(emotion, 0, (math.nan,) * 5, math.nan)
        q = np.percentile(values, [5, 25, 50, 75, 95])
        return cls(emotion, len(values), tuple(float(x) for x in q), float(values.mean()))


def svg_boxes(boxes: Sequence[Box], title: str, lo: float | None = None, hi: float | None = None) -> Markup:
    """Horizontal box plots, one row per emotion, on a shared x axis."""
    finite = [v for b in boxes if b.n for v in (*b.q, b.mean)]
    lo = min(finite, default=0.0) if lo is None else lo
    hi = max(finite, default=1.0) if hi is None else hi
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    width, left, right, row, top = 250, 58, 10, 16, 16
    plot_w = width - left - right
    height = top + row * len(boxes) + 22

    def x(v: float) -> float:
        return left + plot_w * (v - lo) / (hi - lo)

    parts = [f'<svg class="fig boxes" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{title}"><title>{title}</title>',
             f'<text x="{left}" y="11" {_FONT} font-weight="bold">{title}</text>']
    for i, b in enumerate(boxes):
        y = top + i * row + row / 2
        color = emotion_color(b.emotion)
        parts.append(f'<text x="{left - 4}" y="{y + 3.5}" text-anchor="end" {_FONT} fill="{color}">{b.emotion}</text>')
        if not b.n:
            continue
        q5, q25, q50, q75, q95 = (x(v) for v in b.q)
        tip = (f"{b.emotion} (n={b.n}): mean {_fmt(b.mean)}, median {_fmt(b.q[2])}, "
               f"25–75% {_fmt(b.q[1])}–{_fmt(b.q[3])}, 5–95% {_fmt(b.q[0])}–{_fmt(b.q[4])}")
        parts.append(f'<g><title>{tip}</title>'
                     f'<line x1="{q5:.1f}" x2="{q95:.1f}" y1="{y}" y2="{y}" stroke="{color}"/>'
                     f'<rect x="{q25:.1f}" y="{y - 5}" width="{max(q75 - q25, 1):.1f}" height="10" fill="{color}" '
                     f'fill-opacity="0.35" stroke="{color}"/>'
                     f'<line x1="{q50:.1f}" x2="{q50:.1f}" y1="{y - 5}" y2="{y + 5}" stroke="{color}" stroke-width="2"/>'
                     f'<circle cx="{x(b.mean):.1f}" cy="{y}" r="2.5" fill="#000"/></g>')
    axis_y = top + row * len(boxes) + 2
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="#444"/>')
    for t in _ticks(lo, hi):
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{axis_y}" y2="{axis_y + 3}" stroke="#444"/>'
                     f'<text x="{x(t):.1f}" y="{axis_y + 13}" text-anchor="middle" {_FONT}>{_fmt(t)}</text>')
    if lo < 0 < hi:
        parts.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top}" y2="{axis_y}" stroke="#999" '
                     'stroke-dasharray="2,2"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def svg_gain(curves: Mapping[str, pd.DataFrame], color: str, chance: float | None, label: str) -> Markup:
    """Share of predictions equal to the target (%) vs gain α, selected set solid, random control dashed;
    α on equally spaced ticks (the grid is usually doubling)."""
    alphas = sorted({float(a) for c in curves.values() for a in c["alpha"]})
    left, top, w, h = 30, 6, 150, 70
    width, height = left + w + 10, top + h + 26

    def x(a: float) -> float:
        return left + (w / 2 if len(alphas) == 1 else w * alphas.index(a) / (len(alphas) - 1))

    def y(v: float) -> float:
        return top + h * (1 - v)

    parts = [f'<svg class="fig gain" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{label}"><title>{label}</title>']
    for v in (0, 0.5, 1):
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v)}" y2="{y(v)}" stroke="#ddd"/>'
                     f'<text x="{left - 3}" y="{y(v) + 3.5}" text-anchor="end" {_FONT}>{int(100 * v)}</text>')
    if chance is not None:
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(chance):.1f}" y2="{y(chance):.1f}" stroke="#000" '
                     'stroke-dasharray="1,2"><title>chance: 1/#classes</title></line>')
    for control, c in curves.items():
        c = c.sort_values("alpha")
        dash = ' stroke-dasharray="4,3"' if control == "random" else ""
        pts = [(x(float(a)), y(float(s))) for a, s in zip(c["alpha"], c["target_share"]) if np.isfinite(s)]
        if len(pts) > 1:
            parts.append(f'<polyline points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in pts)}" fill="none" '
                         f'stroke="{color}" stroke-width="1.6"{dash}/>')
        for (px, py), a, s in zip(pts, c["alpha"], c["target_share"]):
            fill = "#fff" if control == "random" else color
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{fill}" stroke="{color}">'
                         f'<title>{control}, α={_fmt(a)}: {100 * s:.0f}% predicted target</title></circle>')
    for a in alphas:
        parts.append(f'<text x="{x(a):.1f}" y="{top + h + 12}" text-anchor="middle" {_FONT}>{_fmt(a)}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{top + h + 24}" text-anchor="middle" {_FONT}>gain α</text></svg>')
    return Markup("".join(parts))


def _cell_style(value_pp: float, limit_pp: float) -> str:
    """RdBu (as the figures): red = recall lost, blue = gained, white = no change; white text on dark cells."""
    if not np.isfinite(value_pp):
        return "background: #ffffff"
    r, g, b, _ = colormaps[DIVERGING](0.5 + 0.5 * max(-1.0, min(1.0, value_pp / limit_pp)))
    text = "#fff" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "#222"
    return f"background: #{int(255 * r):02x}{int(255 * g):02x}{int(255 * b):02x}; color: {text}"


# --------------------------------------------------------------------------------------------------
# Causal tables of a set


def _main_rows(table: pd.DataFrame, mode: str, fraction: float, emotion: str) -> pd.DataFrame:
    """Rows of `mode` on emotion's set at the main fraction, identified from the full identification set."""
    return table[(table["mode"] == mode) & np.isclose(table["fraction"].astype(float), fraction)
                 & (selection_variant(table) == ALL) & (table["target"] == emotion)]


def delta_recall_rows(delta: pd.DataFrame, fraction: float, emotion: str, classes: Sequence[str]
                      ) -> list[dict[str, Any]]:
    """The Δrecall row of the emotion's set under deactivation (and its random control: the mean over its
    draws), in pp, coloured."""
    d = _main_rows(delta, "deactivate", fraction, emotion)
    d = d.groupby(["control", "class"], as_index=False)[["delta_recall", "lo", "hi"]].mean()
    limit = max(5.0, float(np.nanmax(np.abs(100 * delta["delta_recall"].to_numpy(float)), initial=0.0)))
    rows = []
    for control in ("selected", "random"):
        part = d[d["control"] == control].set_index("class")
        if part.empty:
            continue
        cells = []
        for c in [*classes, "specificity"]:
            v = 100 * float(part.at[c, "delta_recall"]) if c in part.index else math.nan
            lo, hi = (100 * float(part.at[c, k]) for k in ("lo", "hi")) if c in part.index else (math.nan,) * 2
            cells.append({"value": f"{v:+.0f}" if np.isfinite(v) else "–", "style": _cell_style(v, limit),
                          "tip": f"{c}: {v:+.1f} pp (95% CI {lo:+.1f} to {hi:+.1f})", "own": c == emotion})
        rows.append({"control": control, "cells": cells})
    return rows


def _classes(delta: pd.DataFrame, emotions: Sequence[str]) -> list[str]:
    """The evaluated classes of a Δrecall table (an evaluation corpus may have other classes), the
    identification emotions' order first."""
    found = [str(c) for c in delta["class"].unique() if c != "specificity"]
    return [e for e in emotions if e in found] + [c for c in found if c not in emotions]


def gain_curves(conditions: pd.DataFrame, fraction: float, emotion: str) -> dict[str, pd.DataFrame]:
    c = _main_rows(conditions, "gain", fraction, emotion)
    c = c.groupby(["control", "alpha"], as_index=False)["target_share"].mean()  # random: mean over its draws
    return {control: part[["alpha", "target_share"]] for control in ("selected", "random")
            if not (part := c[c["control"] == control]).empty}


def _effects(delta: pd.DataFrame, conditions: pd.DataFrame, mode: str, emotion: str, fraction: float | None
             ) -> pd.DataFrame:
    """Per (layer, control, α) of `mode` on the emotion (at `fraction` where given): the share of predictions equal
    to it and the mean recall change of the other classes, each averaged over random draws."""
    def rows(t: pd.DataFrame) -> pd.DataFrame:
        keep = (t["mode"] == mode) & (t["target"] == emotion) & (selection_variant(t) == ALL)
        return t[keep & (np.isclose(t["fraction"].astype(float), fraction) if fraction is not None else True)]
    keys = ["layer", "control", "alpha"]
    share = rows(conditions).groupby(keys)["target_share"].mean()
    d = rows(delta)
    d = d[~d["class"].isin([emotion, "specificity"])]
    others = d.groupby([*keys, "draw"])["delta_recall"].mean().groupby(level=keys).mean()
    return pd.DataFrame({"target_share": share, "others": others})


def steering_rows(steer_delta: pd.DataFrame, steer_conditions: pd.DataFrame, gain_delta: pd.DataFrame,
                  gain_conditions: pd.DataFrame, fraction: float, emotion: str) -> list[dict[str, Any]]:
    """Per steered layer and α: the emotion's steering vector, its random direction and neuron gain on the set at
    the same α — predicted emotion (%) and mean off-target Δrecall (pp)."""
    steer = _effects(steer_delta, steer_conditions, "steer", emotion, None)
    gain = _effects(gain_delta, gain_conditions, "gain", emotion, fraction).droplevel("layer")
    out = []
    for layer, alpha in sorted({(int(l), float(a)) for l, c, a in steer.index}):
        cells = []
        for what in ("target_share", "others"):
            for frame, key in ((gain, ("selected", alpha)), (steer, (layer, "selected", alpha)),
                               (steer, (layer, "random", alpha))):
                v = 100 * float(frame[what].get(key, math.nan))
                cells.append("–" if not np.isfinite(v) else f"{v:.1f}" if what == "target_share" else f"{v:+.1f}")
        out.append({"layer": layer, "alpha": _fmt(alpha), "cells": cells})
    return out


def steering_vectors(vectors: pd.DataFrame, selector: str, emotion: str) -> list[dict[str, Any]]:
    """Per steered layer: the stream, the mean difference's norm, the vector's norm per α (the reference selector's
    gain change, the matching rule) and this selector's gain change per α."""
    own = vectors[vectors["emotion"] == emotion]
    out = []
    for layer, part in own.groupby("layer", sort=True):
        ref = part[part["reference"].astype(bool)]
        mine = part[part["selector"] == selector]
        out.append({"layer": int(layer), "stream": str(part["stream"].iloc[0]) if "stream" in part else "residual",
                    "mean_difference_norm": _fmt(float(part["mean_difference_norm"].iloc[0])),
                    "reference": str(ref["selector"].iloc[0]) if len(ref) else "",
                    "norm_per_alpha": _fmt(float(ref["gain_change_norm_per_alpha"].iloc[0])) if len(ref) else "–",
                    "own_per_alpha": _fmt(float(mine["gain_change_norm_per_alpha"].iloc[0])) if len(mine) else "–"})
    return out


# --------------------------------------------------------------------------------------------------
# Reading the store: only the page neurons' columns, one slab per layer


@dataclass
class NeuronData:
    """Over the identification clips (rows of the store): mean activation and P(a>0) of one neuron."""

    mean_activation: np.ndarray
    frac_positive: np.ndarray


def read_neurons(store_path: PathLike, rows: np.ndarray, group: int, neurons: Sequence[tuple[int, int]]
                 ) -> dict[tuple[int, int], NeuronData]:
    """The columns of `neurons` at `rows`, one orthogonal read per (variable, layer): Zarr fetches only
    the chunks holding those neurons, whatever the store's size."""
    g = zarr.open_group(Path(store_path), mode="r", zarr_format=3)
    by_layer: dict[int, list[int]] = {}
    for layer, n in neurons:
        by_layer.setdefault(layer, []).append(n)
    out = {}
    for layer, cols in sorted(by_layer.items()):
        cols = sorted(set(cols))
        values = {v: np.asarray(g[v].get_orthogonal_selection((rows, group, layer, np.array(cols))), np.float64)
                  for v in ("mean_activation", "frac_positive")}
        for j, n in enumerate(cols):
            out[(layer, n)] = NeuronData(values["mean_activation"][:, j], values["frac_positive"][:, j])
    return out


# --------------------------------------------------------------------------------------------------
# The site


def _load_selections(paths: Mapping[str, PathLike]) -> dict[str, Any]:
    sels = {}
    for name, p in paths.items():
        ds = open_selection(p)
        sels[name] = ds.sel(variant="all") if "variant" in ds.dims else ds
    for key in ("position", "split", "correct_only"):
        values = {str(ds.attrs.get(key)) for ds in sels.values()}
        if len(values) > 1:
            raise ValueError(f"selections disagree on {key} ({values}): one site needs one identification set")
    return sels


def top_neurons(sel: Any, fraction: float, top: int) -> dict[str, list[tuple[int, int, int, float]]]:
    """Per emotion, its set's best `top` neurons as (layer, neuron, rank, score), best first."""
    k = min(top, n_selected(sel, fraction))
    out = {}
    for e in sel["emotion"].values:
        rank = sel["rank"].sel(emotion=e).values
        layer, neuron = np.nonzero((rank < k) & (rank != INELIGIBLE))
        order = np.argsort(rank[layer, neuron], kind="stable")
        score = sel["score"].sel(emotion=e).values
        out[str(e)] = [(int(layer[i]), int(neuron[i]), int(rank[layer[i], neuron[i]]), float(score[layer[i], neuron[i]]))
                       for i in order]
    return out


def _clip(i: int, ds_rows: pd.DataFrame, data: NeuronData, audio: Mapping[str, str]) -> dict[str, Any]:
    r = ds_rows.iloc[i]
    return {"utterance": r["utterance"], "emotion": r["emotion"], "speaker": r["speaker"],
            "mean_activation": _fmt(data.mean_activation[i]), "frac_positive": f"{data.frac_positive[i]:.2f}",
            "audio": audio[r["utterance"]]}


def _extremes(data: NeuronData, ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the n clips with the highest and the lowest mean activation (ties by utterance id,
    so the choice never depends on the store's order)."""
    return (np.lexsort((ids, -data.mean_activation))[:n], np.lexsort((ids, data.mean_activation))[:n])


def build_site(out: PathLike, *, store_path: PathLike, corpus_dir: PathLike, selections: Mapping[str, PathLike],
               tables: Sequence[StudyTables], fraction: float, top: int = 20, clips: int = 5,
               title: str = "", steering: Sequence[SteeringTables] = ()) -> dict[str, int]:
    """Write the site into `out` (built beside it, then moved into place). Returns counts for the log."""
    out = Path(out)
    sels = _load_selections(selections)
    first = next(iter(sels.values()))
    position, split = first.attrs["position"], first.attrs.get("split")
    emotions = [str(e) for e in first["emotion"].values]

    ds = store.open_store(store_path)
    ident = identification([ds], position=position, split=split, correct_only=bool(first.attrs.get("correct_only")))
    rows = np.flatnonzero(ident.emotion_index[0] >= 0)
    meta = pd.DataFrame({c: ds[c].values[rows].astype(object).astype(str) for c in ("utterance", "emotion", "speaker")})
    group = [str(p) for p in ds["positions"].values].index(position)

    # Sets: sizes per layer, overlaps, top lists, and who chose each page neuron.
    masks = {s: selected_mask(sel, fraction) for s, sel in sels.items()}
    overlap = overlap_between_selectors(sels, fraction) if len(sels) > 1 else pd.DataFrame(
        columns=["emotion", "selector_a", "selector_b", "jaccard"])
    neurons: dict[tuple[int, int], Neuron] = {}
    tops = {s: top_neurons(sel, fraction, top) for s, sel in sels.items()}
    for s, per_emotion in tops.items():
        for e, lst in per_emotion.items():
            for layer, n, rank, score in lst:
                neurons.setdefault((layer, n), Neuron(layer, n)).chosen.append(Choice(s, e, rank, score))
    data = read_neurons(store_path, rows, group, sorted(neurons))

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "neurons").mkdir(parents=True)
    shutil.copyfile(TEMPLATES / "style.css", tmp / "style.css")

    # Clips: each copied once, under clips/<its path in the prepared corpus>.
    manifest = pd.read_parquet(Path(corpus_dir) / "manifest.parquet").set_index("utterance_id")["path"]
    audio: dict[str, str] = {}
    ids = meta["utterance"].to_numpy()
    extremes = {key: _extremes(d, ids, clips) for key, d in data.items()}
    for hi, lo in extremes.values():
        for i in (*hi, *lo):
            u = ids[i]
            if u not in audio:
                rel = Path("clips") / manifest[u]
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(corpus_dir) / manifest[u], tmp / rel)
                audio[u] = rel.as_posix()

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)
    common = {"title": title, "emotion_color": emotion_color, "selector_color": selector_color,
              "selector_label": selector_label, "position": position, "fraction": fraction,
              "provenance": {k: ds.attrs.get(k, "") for k in ("model_source", "model_revision", "site", "positions")}}

    loaded = {t: (read_table(t.delta_recall, "delta_recall"), read_table(t.conditions, "conditions")) for t in tables}
    steered = {t.eval_corpus: (read_table(t.delta_recall, "delta_recall"), read_table(t.conditions, "conditions"),
                               read_table(t.vectors, "steering_vectors")) for t in steering}
    cards = {}
    for s in sels:
        counts = masks[s].sum("neuron")
        for e in emotions:
            per_layer = [int(c) for c in counts.sel(emotion=e).values]
            jac = overlap[(overlap["emotion"] == e) & (overlap["selector_a"] == s) & (overlap["selector_b"] != s)]
            studies = []
            for t in (t for t in tables if t.selector == s):
                delta, conds = loaded[t]
                classes = _classes(delta, emotions)
                curves = gain_curves(conds, fraction, e)
                steer = None
                if t.eval_corpus in steered:
                    s_delta, s_conds, vectors = steered[t.eval_corpus]
                    steer = {"vectors": steering_vectors(vectors, s, e),
                             "rows": steering_rows(s_delta, s_conds, delta, conds, fraction, e)}
                studies.append({"eval_corpus": t.eval_corpus, "classes": classes, "steering": steer,
                                "delta": delta_recall_rows(delta, fraction, e, classes),
                                "gain": svg_gain(curves, selector_color(s), 1 / len(classes),
                                                 f"gain on {s} {e} set, evaluated on {t.eval_corpus}")
                                if curves else None})
            cards[(s, e)] = {"size": sum(per_layer),
                             "bars": svg_layer_bars(per_layer, emotion_color(e), f"{s} {e}: neurons per layer"),
                             "overlap": [(r.selector_b, r.jaccard) for r in jac.itertuples()],
                             "studies": studies, "top": [neurons[(l, n)] for l, n, _, _ in tops[s][e]]}
    n_ident = {e: int(n) for e, n in zip(ident.emotions, ident.n_chosen)}
    (tmp / "index.html").write_text(env.get_template("index.html").render(
        **common, selectors=list(sels), emotions=emotions, cards=cards, n_ident=n_ident,
        k=n_selected(first, fraction), n_neurons=first.sizes["layer"] * first.sizes["neuron"],
        n_layers=first.sizes["layer"], top=top, n_pages=len(neurons), root=""))

    neuron_template = env.get_template("neuron.html")
    by_emotion = {e: ident.emotion_index[0][rows] == i for i, e in enumerate(ident.emotions)}
    for key, neuron in neurons.items():
        d = data[key]
        hi, lo = extremes[key]
        (tmp / neuron.page).write_text(neuron_template.render(
            **common, neuron=neuron, root="../", clips=clips,
            activation=svg_boxes([Box.of(e, d.mean_activation[m]) for e, m in by_emotion.items()],
                                 "mean activation"),
            frequency=svg_boxes([Box.of(e, d.frac_positive[m]) for e, m in by_emotion.items()], "P(a > 0)",
                                0.0, 1.0),
            most=[_clip(i, meta, d, audio) for i in hi], least=[_clip(i, meta, d, audio) for i in lo]))
    store.replace_directory(tmp, out)
    return {"neuron_pages": len(neurons), "clips": len(audio), "cards": len(cards)}
