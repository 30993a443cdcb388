"""Which cue a model follows when a clip's words say one emotion and its prosody another.

A cue-conflict corpus (`esn.corpora.spoken`, `content: conflict`) labels every clip twice: `emotion`, the
prosodic emotion, and `lexical_emotion`, the one its words say. The model's unmodified answers
(`esn.interventions.evaluate` with no condition) are counted per (lexical, prosodic) cell: the share that names the
prosodic emotion (`prosody`), the lexical one (`words`), or neither. In a congruent cell (A = A) the two cues agree
and both shares are the accuracy. A model deaf to words still names A now and then when the prosody is B (its
confusions), so an incongruent cell (A, B) also gets `words_by_chance`: the share of answers naming A among clips
with B's prosody whose words say a third emotion — `words` above it is the words' own pull. Pooled rows (`scope`
congruent / incongruent, cell "all") weigh each clip of the cells of that kind once. Intervals are speaker-level
bootstrap intervals (`esn.metrics`: whole speakers resampled, expanded percentiles), one set of resamples shared by
every cell.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from esn.metrics import bootstrap_unit, bootstrap_weights, percentile_interval

#: What an answer can follow: the prosodic emotion, the lexical one, or neither; and (incongruent cells) how often
#: the lexical emotion is named when the words say a third one.
CUES = ("prosody", "words", "neither", "words_by_chance")
#: Which cells a summary row pools: one (lexical, prosodic) cell, or all congruent / incongruent cells.
SCOPES = ("cell", "congruent", "incongruent")
ALL = "all"


def answers(table: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """The unmodified model's rows of an answer table with each clip's `lexical_emotion` and sentence (`text`)."""
    if "lexical_emotion" not in manifest:
        raise ValueError("the corpus records no lexical emotion: prepare it with the spoken reader's "
                         "option content: conflict")
    rows = table[table["mode"] == "none"]
    cues = manifest.set_index("utterance_id")[["lexical_emotion", "text"]]
    out = rows.join(cues, on="utterance_id")
    return out[["utterance_id", "speaker", "lexical_emotion", "emotion", "text", "predicted",
                *[c for c in rows.columns if c.startswith("p_") or c == "scoring"]]]


def summarize(answers: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, unit: str = "speaker",
              level: float = 0.95) -> pd.DataFrame:
    """Shares of answers following prosody, words, neither per (lexical, prosodic) cell and pooled, with intervals.

    Columns: scope, lexical_emotion, prosodic_emotion, cue, share, lo, hi, clips, speakers, bootstrap_unit.
    """
    speakers = answers["speaker"] if "speaker" in answers else None
    clusters, used = bootstrap_unit(speakers, unit)
    w = bootstrap_weights(len(answers), n_boot, seed, clusters)        # [B+1, U]; row 0: the observed data
    g = len(np.unique(clusters)) if clusters is not None else len(answers)
    pred = answers["predicted"].to_numpy(dtype=object)
    lexical = answers["lexical_emotion"].to_numpy(dtype=object)
    prosodic = answers["emotion"].to_numpy(dtype=object)
    follows = {"prosody": pred == prosodic, "words": pred == lexical,
               "neither": (pred != prosodic) & (pred != lexical)}
    cells = sorted(set(zip(lexical, prosodic)))
    groups = [("cell", a, b, (lexical == a) & (prosodic == b)) for a, b in cells]
    groups += [(scope, ALL, ALL, mask) for scope, mask in (("congruent", lexical == prosodic),
                                                           ("incongruent", lexical != prosodic)) if mask.any()]
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN where a resample lacks a cell's clips
        chance = {(a, b): (w[:, base] * (pred[base] == a)).sum(axis=1) / w[:, base].sum(axis=1)
                  for a, b in cells if a != b
                  for base in [(prosodic == b) & (lexical != a) & (lexical != b)] if base.any()}
        # per clip: its cell's words_by_chance [B+1, U] (NaN where the cell has none: congruent cells)
        by_chance = np.full(w.shape, np.nan)
        for (a, b), share in chance.items():
            by_chance[:, (lexical == a) & (prosodic == b)] = share[:, None]
    rows = []
    for scope, a, b, mask in groups:
        total = w[:, mask].sum(axis=1)
        for cue in CUES:
            if cue == "words_by_chance" and np.isnan(by_chance[0, mask]).any():
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                value = by_chance[:, mask] if cue == "words_by_chance" else follows[cue][mask]
                share = (w[:, mask] * value).sum(axis=1) / total  # NaN where a resample lacks the cell
            _, lo, hi = percentile_interval(share, g, level) if n_boot else (None, np.nan, np.nan)
            rows.append({"scope": scope, "lexical_emotion": a, "prosodic_emotion": b, "cue": cue,
                         "share": float(share[0]), "lo": float(lo), "hi": float(hi), "clips": int(mask.sum()),
                         "speakers": int(answers.loc[mask, "speaker"].nunique()) if speakers is not None else 0,
                         "bootstrap_unit": used})
    return pd.DataFrame(rows)
