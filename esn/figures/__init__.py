"""Every figure of the paper, drawn from the tidy tables of the workflow (never from activations or models).

Each `plot_*` function takes DataFrames (or a dict) plus output paths and writes the same figure to each
path (the format follows the suffix: PDF and PNG in the workflow). Nothing here reads config or
Snakemake objects: `workflow/scripts/figure.py` translates a rule into one call.

The package: `style` holds the shared style and the helpers several figures use; each other module draws
one family of figures (`deactivation`: Δrecall heatmaps, specificity, set size, gain strength; `layers`;
`overlap`; `identification`: identification size and correct-only identification; `transfer`;
`injection`; `organism`: the model organism's confusion matrix; `population`: a population of organisms; `lens`: the
logit lens; `steering`: steering vectors beside neuron gain; `cue_conflict`: which cue, words or prosody, answers follow). Everything callers use is re-exported
here: `from esn import figures as F; F.plot_delta_recall(...)`. Each module also declares the workflow's figure
kinds it draws (`registry`: inputs, caption, when it applies), from which the figure rules are generated.

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

# style first: it selects matplotlib's Agg backend before the figure modules import pyplot
from esn.figures.style import (EMOTION_COLORS, SELECTOR_COLORS, SELECTOR_LABELS, emotion_color, parse_variant,
                               read_tables, save, selector_color)

from esn.figures.cue_conflict import plot_cue_conflict
from esn.figures.deactivation import plot_delta_recall, plot_set_size, plot_specificity, plot_strength
from esn.figures.identification import plot_correct_only, plot_id_size
from esn.figures.injection import plot_injection
from esn.figures.layers import plot_layers
from esn.figures.lens import plot_lens
from esn.figures.organism import plot_confusion
from esn.figures.overlap import plot_overlap
from esn.figures.population import plot_population
from esn.figures.steering import plot_steering
from esn.figures.transfer import plot_transfer

# Every module of the package is imported, so a figure kind declared in a new module (with
# `esn.figures.registry.register`) is found without being listed here.
import importlib as _importlib
import pkgutil as _pkgutil

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

from esn.figures.registry import FIGURES, FigureJob, FigureKind, study_kinds  # noqa: E402

# Re-exported beyond __all__: the rest of the style (esn.browser imports DIVERGING and selector_label), the
# injection strategies' colours, and the private helpers the tests call. These are copies: to change the
# resolution `save` uses, set esn.figures.style.DPI, not esn.figures.DPI.
from esn.figures.injection import STRATEGY_COLORS, STRATEGY_LABELS  # noqa: F401
from esn.figures.style import DIVERGING, DPI, FALLBACK_COLOR, SELECTOR_SHORT, SEQUENTIAL, PathLike  # noqa: F401
from esn.figures.style import selector_label, selector_short  # noqa: F401
from esn.figures.style import _ci_text, _mean_over_draws  # noqa: F401

__all__ = [
    "EMOTION_COLORS", "SELECTOR_COLORS", "SELECTOR_LABELS", "emotion_color", "selector_color",
    "read_tables", "parse_variant", "save",
    "plot_delta_recall", "plot_specificity", "plot_strength", "plot_set_size", "plot_layers",
    "plot_overlap", "plot_id_size", "plot_transfer", "plot_confusion", "plot_injection", "plot_correct_only",
    "plot_population", "plot_lens", "plot_steering", "plot_cue_conflict", "FIGURES", "FigureJob", "FigureKind", "study_kinds",
]
