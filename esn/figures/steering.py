"""Neurons or directions (`plot_steering`): the steering vector beside each selector's neuron gain, over α.

Top, one panel per target emotion: the share of predictions equal to the target vs α, for neuron gain on each
selector's set (selector colours), the mean-difference steering vector (black) and a random direction of the same
norm (grey, dashed). Bottom: over targets, the target's own recall change (left) and the mean recall change of the
other classes (right, the damage): both from the metrics' summary tables, with their 95 % intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D

from esn.figures.registry import FigureJob, register
from esn.figures.style import (PathLike, _band, _close, _emotion_order, _emotion_title, _fmt_num, _legend, _log_x,
                               _mean_over_draws, _pct, _selectors, _suptitle, _themed, save, selector_color,
                               selector_label)
from esn.tables import read_tables

STEER_COLOR, RANDOM_COLOR = "black", "0.55"


def _layer_colors(layers: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(vector, random direction) colour per steered layer: black and grey for one, grey ramps for several."""
    n = max(len(layers) - 1, 1)
    return {l: (STEER_COLOR, RANDOM_COLOR) if len(layers) == 1 else (f"{0.5 * k / n:.2f}", f"{0.55 + 0.3 * k / n:.2f}")
            for k, l in enumerate(layers)}


def _lines(gain: pd.DataFrame, steer: pd.DataFrame, sels: Sequence[str]) -> list[tuple[pd.DataFrame, str, bool]]:
    """(rows, colour, dashed) of every line: each selector's gain, then per steered layer the steering vector and
    the random direction."""
    out = [(gain[(gain["selector"] == s) & (gain["control"] == "selected")], selector_color(s), False) for s in sels]
    for layer, (vector, random) in _layer_colors(sorted(set(steer["layer"]))).items():
        at = steer[steer["layer"] == layer]
        out.append((at[at["control"] == "selected"], vector, False))
        out.append((at[at["control"] == "random"], random, True))
    return out


@_themed
def plot_steering(gain_conditions: pd.DataFrame, gain_summary: pd.DataFrame, steer_conditions: pd.DataFrame,
                  steer_summary: pd.DataFrame, out: Sequence[PathLike], *, fraction: float,
                  selectors: Sequence[str] | None = None, title: str | None = None) -> None:
    """Target share per target (top) and own / off-target recall change over targets (bottom) vs α."""
    gc = _mean_over_draws(gain_conditions)
    gc = gc[(gc["mode"] == "gain") & _close(gc["fraction"], fraction)]
    gs = gain_summary[(gain_summary["mode"] == "gain") & _close(gain_summary["fraction"], fraction)]
    sc = steer_conditions[steer_conditions["mode"] == "steer"]
    ss = steer_summary[steer_summary["mode"] == "steer"]
    sels = _selectors(gc, selectors)
    targets = _emotion_order(sc["target"]) or _emotion_order(gc["target"])
    alphas = sorted(set(gc["alpha"].dropna()) | set(sc["alpha"].dropna()))
    cols = max(2, len(targets))
    fig = plt.figure(figsize=(max(6.0, 2.5 * cols + 1.5), 6.0), layout="constrained")
    grid = fig.add_gridspec(2, 2 * cols)
    top = [fig.add_subplot(grid[0, 2 * j:2 * j + 2]) for j in range(len(targets))]
    bottom = [fig.add_subplot(grid[1, :cols]), fig.add_subplot(grid[1, cols:])]
    for ax, target in zip(top, targets):
        for rows, color, dashed in _lines(gc, sc, sels):
            part = rows[rows["target"] == target].sort_values("alpha")
            if len(part):
                _band(ax, part["alpha"].to_numpy(), 100 * part["target_share"].to_numpy(),
                      100 * part["target_share_lo"].to_numpy(), 100 * part["target_share_hi"].to_numpy(), color,
                      dashed=dashed)
        _emotion_title(ax, target, "target: ")
        ax.set_ylim(-3, 103)
        _log_x(ax, alphas, _fmt_num, base=2)
        ax.set_xlabel("α")
    if top:
        top[0].set_ylabel("predictions = target (%)")
    for ax, statistic, label in zip(bottom, ("self", "others"), ("target's own recall change (pp)",
                                                                 "other classes' recall change (pp)")):
        for rows, color, dashed in _lines(gs, ss, sels):
            part = rows[rows["statistic"] == statistic].sort_values("alpha")
            if len(part):
                _band(ax, part["alpha"].to_numpy(), 100 * part["estimate"].to_numpy(), 100 * part["lo"].to_numpy(),
                      100 * part["hi"].to_numpy(), color, dashed=dashed)
        ax.axhline(0, color="black", lw=0.8, ls=":")
        ax.set_ylabel(label)
        ax.set_xlabel("α (gain a ← (1+α)·a; vector norm = the gain's MLP-output change)")
        _log_x(ax, alphas, _fmt_num, base=2)
        ax.set_title("mean over targets", loc="left")
    handles = [Line2D([], [], color=selector_color(s), marker="o", label=f"neuron gain: {selector_label(s)}")
               for s in sels]
    layer = sorted(set(sc["layer"])) if len(sc) else []
    for l, (vector, random) in _layer_colors(layer).items():
        at = f", layer {l}" if len(layer) > 1 else ""
        handles += [Line2D([], [], color=vector, marker="o", label=f"steering vector (mean difference){at}"),
                    Line2D([], [], color=random, marker="o", ls="--", mfc="white",
                           label=f"random direction, same norm{at}")]
    _legend(fig, handles)
    _suptitle(fig, title, f"Steering vector at layer {', '.join(map(str, layer))} vs neuron gain on {_pct(fraction)} "
                          f"of neurons (bands: 95 % bootstrap intervals)")
    save(fig, out)


@register("steering", "13 steering vectors", "Steering vectors vs neuron gain vs a random direction of the same norm: "
          "target share and own / off-target recall change over α.",
          {"gain": "study:conditions", "gain_summary": "study:summary", "steer": "steering:conditions",
           "steer_summary": "steering:summary"},
          params=("selectors", "fraction"), sweeps=True,
          applies=lambda config: bool(config.get("steering", {}).get("enabled", True))
          and bool(config["intervention"]["alphas"]))
def _draw_steering(job: FigureJob) -> None:
    p = job.params
    plot_steering(job.per_selector(job.input.gain, "conditions"), job.per_selector(job.input.gain_summary, "summary"),
                  read_tables([job.input.steer], "conditions"), read_tables([job.input.steer_summary], "summary"),
                  job.out, fraction=p.fraction, selectors=p.selectors, title=job.title)
