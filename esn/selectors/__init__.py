"""Emotion-sensitive neuron selectors, computed from the activation store alone.

One streaming pass over the store's utterance blocks accumulates mergeable per-emotion sufficient
statistics (`EmotionStats`, float64, one position group); every selector is a function of them
(`SELECTORS`). A selection is data: an xarray Dataset (emotion × layer × neuron) of scores, ranks and
R seeded random orderings (the null draws), from which the neuron set of any fraction — and its
layer-matched random controls — is a comparison (`selected_mask`, `random_mask`), so fraction sweeps
need no re-selection.

Order-free: a selection never depends on the order neurons are stored in. Each selector ranks by its
score, then by documented secondary keys computed in the same pass (`RankingKeys`), and only as a last
resort by a seeded hash of the neuron's identity (layer and `neuron` coordinate values, `neuron_hash`), never by
the storage index; the random controls are hashes of the identity too. `decided_by` records which key
separated each neuron from the next-ranked one, so `ties_at_cut` says how many neurons tied at a set's
cut and on which keys.

Sets are nested across fractions: the set for fraction f is `rank < round(f · L · N)` per emotion
(a global top-k across layers), and the random control for f draws, in each layer, as many neurons as
the selected set has there, uniformly from all of that layer's neurons ("same size per layer, drawn
uniformly, excluding nothing else"), as the first neurons of a per-(draw, emotion, layer) permutation.

The package, along its seams: `statistics` (the sufficient statistics and the streaming pass that accumulates
them), `scorers` (the selectors: statistics -> scores with their tie-breaking keys), `ranking` (ranks, random
controls, selections as data, the set of a fraction) and `descriptive` (tidy tables of selected sets). Everything
callers use is re-exported here: `from esn import selectors as S; S.select(...)`.
"""

from esn.selectors.descriptive import (agreement, counts_per_layer, overlap_between_emotions, overlap_between_selectors,
                                      stability)
from esn.selectors.ranking import (INELIGIBLE, n_selected, neuron_hash, open_selection, random_mask, random_order,
                                   rank_keys, save_selection, select, select_variants, selected_mask, tie_key,
                                   ties_at_cut)
from esn.selectors.scorers import (SELECTORS, RankingKeys, Selector, attribution, cas, get_selector, lap, lape,
                                   lape_bar, mad)
from esn.selectors.statistics import _TILE, FIELDS, EmotionStats, Identification, PathLike, accumulate, identification
from esn.tables import CORRECT_ONLY, parse_variant

__all__ = [
    "agreement", "counts_per_layer", "overlap_between_emotions", "overlap_between_selectors", "stability",
    "INELIGIBLE", "n_selected", "neuron_hash", "open_selection", "random_mask", "random_order", "rank_keys",
    "save_selection", "select", "select_variants", "selected_mask", "tie_key", "ties_at_cut",
    "SELECTORS", "RankingKeys", "Selector", "attribution", "cas", "get_selector", "lap", "lape", "lape_bar", "mad",
    "_TILE", "FIELDS", "EmotionStats", "Identification", "PathLike", "accumulate", "identification",
    "CORRECT_ONLY", "parse_variant",
]
