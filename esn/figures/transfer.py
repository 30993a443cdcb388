"""Cross-corpus transfer (`plot_transfer`): mean specificity of deactivating sets identified on one corpus
(rows) and evaluated on another (columns), one heatmap per selector with the random control's value
annotated. It is the one figure per model that spans several studies (identification × evaluation
corpus) rather than drawing one, so it stands alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from esn.figures.registry import FigureJob, register
from esn.figures.style import (DIVERGING, PathLike, _close, _heatmap, _limit, _mean_over_draws, _pct, _selectors,
                               _signed, _suptitle, _themed, save, selector_color, selector_label)
from esn.tables import ALL, read_tables, selection_variant


@_themed
def plot_transfer(delta: pd.DataFrame, out: Sequence[PathLike], *, fraction: float,
                  selectors: Sequence[str] | None = None, title: str | None = None) -> None:
    """Mean specificity (over target emotions) of deactivating sets identified on corpus A (rows) and
    evaluated on corpus B (columns), one panel per selector; the random control's value in brackets.
    `delta`: delta_recall tables with columns identify, evaluate, selector."""
    d = _mean_over_draws(delta)
    d = d[(d["mode"] == "deactivate") & _close(d["fraction"], fraction) & (d["class"] == "specificity")
          & (selection_variant(d) == ALL)]  # the full identification set's sets only (not the identification variants)
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


# --- the workflow's figure kinds (esn/figures/registry.py) ---------------------------------------------


@register("transfer", "8 cross-corpus transfer", "Cross-corpus transfer matrix of mean specificity, all studies of a "
          "model.", {"tables": "transfer"}, scope="model", params=("selectors", "fraction", "studies"))
def _draw_transfer(job: FigureJob) -> None:
    p = job.params
    keys = [dict(identify=i, evaluate=e, selector=s) for i, e, s in p.studies]
    plot_transfer(read_tables(job.input.tables, "delta_recall", keys), job.out, fraction=p.fraction,
                  selectors=p.selectors, title=job.title)
