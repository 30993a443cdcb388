"""Which cue a model follows when words and prosody disagree (`plot_cue_conflict`; tables of `esn.cue_conflict`).

Two matrices over (lexical emotion: rows, prosodic emotion: columns): the share of answers naming the prosodic
emotion, and the share naming the lexical one, each cell annotated with its 95 % interval. On the diagonal the cues
agree (both shares are the accuracy); off it they compete.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from esn.figures.registry import FigureJob, register
from esn.figures.style import PathLike, _emotion_order, _heatmap, _suptitle, _themed, _tint_emotion_ticks, save
from esn.tables import read_table


@_themed
def plot_cue_conflict(summary: pd.DataFrame, out: Sequence[PathLike], *, title: str | None = None) -> None:
    """Share of answers following the prosody (left) and the words (right) per (lexical, prosodic) cell."""
    cells = summary[summary["scope"] == "cell"]
    order = _emotion_order(set(cells["lexical_emotion"]) | set(cells["prosodic_emotion"]))
    fig, axes = plt.subplots(1, 2, figsize=(2.4 + 1.35 * len(order), 1.5 + 0.75 * len(order)), layout="constrained")
    for ax, cue, what in zip(axes, ("prosody", "words"), ("the prosody", "the words")):
        part = cells[cells["cue"] == cue]
        grid = part.pivot(index="lexical_emotion", columns="prosodic_emotion", values="share")
        grid = 100 * grid.reindex(index=order, columns=order)
        lo = 100 * part.pivot(index="lexical_emotion", columns="prosodic_emotion", values="lo").reindex_like(grid)
        hi = 100 * part.pivot(index="lexical_emotion", columns="prosodic_emotion", values="hi").reindex_like(grid)
        annot = np.where(np.isfinite(grid.to_numpy()),
                         [[f"{v:.0f}\n[{a:.0f}, {b:.0f}]" for v, a, b in zip(*r)]
                          for r in zip(grid.to_numpy(), lo.to_numpy(), hi.to_numpy())], "")
        _heatmap(grid, ax=ax, cmap="Blues", vmin=0, vmax=100, annot=annot, fmt="", square=True, linewidths=0.6,
                 linecolor="white", annot_kws={"size": 7}, cbar=ax is axes[-1],
                 cbar_kws={"label": "share of answers (%)", "shrink": 0.8})
        ax.set_xlabel("prosodic emotion")
        ax.set_ylabel("lexical emotion (the words)")
        ax.tick_params(axis="y", rotation=0)
        _tint_emotion_ticks(ax)
        ax.set_title(f"answer follows {what}")
    pooled = summary[(summary["scope"] == "incongruent")].set_index("cue")["share"]
    unit = str(summary["bootstrap_unit"].iloc[0]) if "bootstrap_unit" in summary and len(summary) else "speaker"
    sub = "Cue conflict: words of one emotion spoken with another's prosody (95 % intervals, " + unit + "s resampled)"
    if len(pooled):
        pct = {cue: 100 * pooled.get(cue, np.nan) for cue in ("prosody", "words", "words_by_chance", "neither")}
        sub += (f"\nincongruent clips: prosody {pct['prosody']:.0f}%, words {pct['words']:.0f}% (by chance "
                f"{pct['words_by_chance']:.0f}%), neither {pct['neither']:.0f}%")
    _suptitle(fig, title, sub)
    save(fig, out)


@register("cue_conflict", "15 cue conflict", "Which cue the model's unmodified answer follows when a clip's words "
          "say one emotion and its prosody another.", {"summary": "cue_conflict"}, scope="cue_conflict", params=())
def _draw_cue_conflict(job: FigureJob) -> None:
    plot_cue_conflict(read_table(job.input.summary, "cue_conflict_summary"), job.out,
                      title=f"{job.title} · {job.wildcards.get('corpus', '')}")
