"""Every figure kind of the workflow, declared once beside its plot function.

A kind says what it reads (`inputs`: input name -> source, resolved to paths by the workflow's plan), which
config values it and its caption need beyond the selectors and the main set size (`params`), where it is
drawn (`scope`), when it applies (`sweeps`: only in studies that run the sweeps; `applies`: a condition on
the config), its report label, and how it is drawn (`draw`, which reads the tables and calls a `plot_*`).
`workflow/rules/figures.smk` generates one rule per kind; `workflow/scripts/figure.py` calls `draw`.

Input sources: `study:<metric table>` (one per selector of the study: conditions, delta_recall, summary,
injection), `neurons:<neuron table>` (counts_per_layer, overlap_emotions, overlap_selectors, stability),
`knockout` (the evaluation corpus's layer knockout, or none), `transfer` (every study's delta_recall of the
model), `organism_metrics` (the organism's training metrics), `population:<table>` (organisms, knockout,
heldout, summary), `cue_conflict` (the cue-conflict summary of the model on the corpus).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from esn.tables import ALL, read_tables, selection_variant

#: Where a kind is drawn: per main study, per model (all its studies), per organism, for the population, per
#: (model, corpus) of the cue-conflict check (`cue_conflict` in the config).
SCOPES = ("study", "model", "organism", "population", "cue_conflict")


@dataclass
class FigureJob:
    """What one figure job has: the rule's inputs and params (by name), the output paths, a title."""

    input: Any
    params: Any
    out: list[str]
    title: str
    wildcards: Mapping[str, str] = field(default_factory=dict)

    def all_selector_rows(self, paths: Sequence[str], kind: str) -> pd.DataFrame:
        """Each selector's table of `kind` (selector column added), every identification variant; the unmodified
        model's row counts as the whole set's (`esn.tables.selection_variant`)."""
        table = read_tables(paths, kind, [{"selector": s} for s in self.params.selectors])
        return table.assign(variant=selection_variant(table))

    def per_selector(self, paths: Sequence[str], kind: str) -> pd.DataFrame:
        """Rows of sets identified from the full identification set (and the unmodified model)."""
        table = self.all_selector_rows(paths, kind)
        return table[table["variant"] == ALL]


@dataclass(frozen=True)
class FigureKind:
    kind: str
    label: str
    description: str
    inputs: Mapping[str, str]
    draw: Callable[[FigureJob], None]
    scope: str = "study"
    params: tuple[str, ...] = ("selectors", "fraction")
    sweeps: bool = False
    applies: Callable[[Mapping[str, Any]], bool] = lambda config: True


#: kind -> its declaration, in report order (the order the modules register them in)
FIGURES: dict[str, FigureKind] = {}


def register(kind: str, label: str, description: str, inputs: Mapping[str, str], **options: Any
             ) -> Callable[[Callable[[FigureJob], None]], Callable[[FigureJob], None]]:
    """Declare a figure kind drawn by the decorated function (see the module docstring for the fields)."""

    def declare(draw: Callable[[FigureJob], None]) -> Callable[[FigureJob], None]:
        spec = FigureKind(kind, label, description, dict(inputs), draw, **options)
        if spec.scope not in SCOPES:
            raise ValueError(f"figure {kind}: scope {spec.scope!r} is none of {SCOPES}")
        if kind in FIGURES:
            raise ValueError(f"figure {kind} is declared twice")
        FIGURES[kind] = spec
        return draw

    return declare


def _report_number(spec: FigureKind) -> float:
    """Figures are numbered by their label ("3 gain strength"); unnumbered ones come last."""
    first = spec.label.split()[0]
    return int(first) if first.isdigit() else float("inf")


def study_kinds(config: Mapping[str, Any], with_sweeps: bool) -> list[str]:
    """The figures of a main study that apply under `config`, in report order."""
    kinds = [f for f in FIGURES.values() if f.scope == "study" and (with_sweeps or not f.sweeps) and f.applies(config)]
    return [f.kind for f in sorted(kinds, key=_report_number)]
