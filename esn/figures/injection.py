"""Label-free injection (`plot_injection`): the change of UAR when the emotion sets get a gain without the
true label (2-Pass, Mix, Union; the oracle, given the label, for reference) vs gain strength α, each
strategy against its layer-matched random counterpart. It reads the injection tables, which no other
figure does, and its strategy colours and labels (`STRATEGY_COLORS`, `STRATEGY_LABELS`) are used nowhere
else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D

from esn.figures.registry import FigureJob, register
from esn.figures.style import (PathLike, _band, _close, _fmt_num, _legend, _log_x, _no_data, _mean_over_draws, _pct,
                               _selectors, _suptitle, _themed, save, selector_color, selector_label)
from esn.tables import read_tables


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
    d = _mean_over_draws(injection)
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


# --- the workflow's figure kinds (esn/figures/registry.py) ---------------------------------------------


@register("injection", "10 label-free injection", "Label-free injection (2-Pass, Mix, Union) beside the oracle: change "
          "of UAR vs α per selector.", {"tables": "study:injection"}, sweeps=True,
          applies=lambda config: bool(config["intervention"]["injection"] and config["intervention"]["alphas"]))
def _draw_injection(job: FigureJob) -> None:
    p = job.params
    plot_injection(read_tables(job.input.tables, "injection", [{"selector": s} for s in p.selectors]), job.out,
                   fraction=p.fraction, selectors=p.selectors, title=job.title)
