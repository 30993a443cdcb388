"""The table contract between stages: what identifies a condition, and how identification variants are named.

An intervention table has one row per (utterance, condition); a condition is identified by `CONDITION_KEYS`.
Every metrics table keeps those keys (in this order) before its values, and the figures and the browser
select rows by them. A selection variant is the identification set a neuron set was chosen from: the whole
set (`ALL`), the correctly recognised clips only (`CORRECT_ONLY`), or a subsample of N utterances per emotion
drawn with seed S, named `n{N}s{S}` (`variant_name`, read back by `parse_variant` only).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

#: What identifies a condition, in the order of the metrics tables' key columns.
CONDITION_KEYS: tuple[str, ...] = ("mode", "variant", "control", "target", "fraction", "alpha", "layer", "draw")
#: The row order of an intervention table: by condition, then utterance — unique per row, so a sharded study's
#: tables, concatenated and sorted, are the unsharded run's table (`merge_interventions`).
INTERVENTION_ORDER: tuple[str, ...] = (*CONDITION_KEYS, "utterance_id")
#: The keys that pair a selected set's condition with its layer-matched random draws (same everything else; the
#: layer too: -1 for neuron sets, the steered layer for a steering vector and its random direction).
TWIN_KEYS: tuple[str, ...] = tuple(k for k in CONDITION_KEYS if k not in ("control", "draw"))
#: The keys of a label-free injection row (its strategy is the condition's target).
INJECTION_KEYS: tuple[str, ...] = tuple(k for k in CONDITION_KEYS if k not in ("target", "layer"))

ALL = "all"
CORRECT_ONLY = "correct"
_SUBSAMPLE = re.compile(r"n(\d+)s(-?\d+)")


def variant_name(per_emotion: int, seed: int) -> str:
    """The variant of a subsample of `per_emotion` identification utterances per emotion drawn with `seed`."""
    return f"n{per_emotion}s{seed}"


def parse_variant(variant: str) -> tuple[int, int] | None:
    """`n30s1` -> (30, 1); None for the whole and the correct-only identification sets; anything else is an error."""
    if variant in (ALL, CORRECT_ONLY):
        return None
    m = _SUBSAMPLE.fullmatch(str(variant))
    if not m:
        raise ValueError(f"selection variant {variant!r} is none of {ALL!r}, {CORRECT_ONLY!r}, 'n<size>s<seed>'")
    return int(m.group(1)), int(m.group(2))


# ----------------------------------------------------------------------------------------------------
# table kinds, and the one reader and writer


#: The type of each identifying column wherever it appears: text keys hold "" where a key does not apply (the
#: unmodified model's row has no variant, control or target), numeric keys are float or int, never text.
COLUMN_TYPES: dict[str, type] = {
    "mode": str, "variant": str, "control": str, "target": str, "fraction": float, "alpha": float, "layer": int,
    "draw": int, "utterance_id": str, "emotion": str, "predicted": str, "speaker": str, "class": str,
    "statistic": str, "strategy": str, "selector": str, "identify": str, "evaluate": str, "corpus": str,
    "organism": str, "bootstrap_unit": str, "scoring": str, "emotion_a": str, "emotion_b": str, "selector_a": str,
    "selector_b": str, "variant_a": str, "variant_b": str, "lexical_emotion": str, "prosodic_emotion": str,
    "cue": str, "scope": str, "text": str,
}

_STUDY = ("identify", "evaluate", "selector")
#: table kind -> the columns every table of that kind has (others may be there too: recall_<emotion>, p_<label>,
#: the null columns, provenance). The metrics tables start with the condition keys, in their order.
TABLES: dict[str, tuple[str, ...]] = {
    "interventions": ("utterance_id", "emotion", "mode", "predicted"),  # + the other keys, p_<label>, speaker
    "conditions": (*CONDITION_KEYS, "accuracy"),
    "delta_recall": (*CONDITION_KEYS, "class", "delta_recall", "lo", "hi"),
    "summary": (*INJECTION_KEYS, "statistic", "estimate", "lo", "hi"),
    "injection": ("strategy", "control", "draw", "fraction", "alpha", "statistic", "estimate", "lo", "hi"),
    "knockout": ("mode", "layer", "accuracy"),
    "transfer": (*_STUDY, "control", "draw", "target", "class", "delta_recall", "lo", "hi"),
    "counts_per_layer": ("selector", "emotion", "layer", "count"),
    "overlap_emotions": ("selector", "emotion_a", "emotion_b", "jaccard"),
    "overlap_selectors": ("emotion", "selector_a", "selector_b", "jaccard"),
    "stability": ("selector", "variant_a", "variant_b", "emotion", "jaccard"),
    "ties_at_cut": ("selector", "emotion", "fraction", "k"),
    "population_organisms": ("organism", "seed", *_STUDY, "target", "self", "others", "specificity"),
    "population_draws": ("organism", "seed", *_STUDY, "draw", "self", "others", "specificity"),
    "population_knockout": ("organism", "seed", "evaluate", "layer", "uar"),
    "population_heldout": ("organism", "corpus", "heldout_uar", "heldout_accuracy"),
    "population_summary": ("identify", "evaluate", "selector", "layer", "corpus", "statistic", "mean", "lo", "hi"),
    "lens": ("utterance_id", "emotion", "selector", "mode", "target", "control", "fraction", "layer", "predicted"),
    "lens_recall": ("selector", "mode", "target", "control", "fraction", "layer", "class", "recall", "recall_lo",
                    "recall_hi"),
    "lens_resolution": ("selector", "mode", "target", "control", "fraction", "class", "resolution_layer"),
    "steering_vectors": ("selector", "emotion", "layer", "fraction"),
    # cue conflict (esn/cue_conflict.py): per clip the unmodified answer, with both labels; per cell the shares
    "cue_conflict": ("utterance_id", "speaker", "lexical_emotion", "emotion", "text", "predicted"),
    "cue_conflict_summary": ("scope", "lexical_emotion", "prosodic_emotion", "cue", "share", "lo", "hi", "clips",
                             "speakers"),
}
#: where a kind types a column otherwise than `COLUMN_TYPES`: a population claim about no layer has none (NaN)
KIND_TYPES: dict[str, dict[str, type]] = {"population_summary": {"layer": float}}


def column_types(kind: str) -> dict[str, type]:
    """The type of each identifying column in a table of `kind`."""
    return {**COLUMN_TYPES, **KIND_TYPES.get(kind, {})}


def conform(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """`frame` in the contract's types: a table of `kind` has its leading columns, text keys are str with "" for
    a key that does not apply, numeric keys float or int. What `read_table` gives back for what was written."""
    missing = [c for c in TABLES[kind] if c not in frame.columns]
    if missing:
        raise ValueError(f"a {kind} table needs the columns {missing}")
    out = frame.copy()
    types = column_types(kind)
    for column in out.columns.intersection(list(types)):
        kind_of = types[column]
        if kind_of is str:
            out[column] = out[column].where(out[column].notna(), "").astype(str)
        elif kind_of is float:
            out[column] = out[column].astype(float)
        elif out[column].isna().any():
            raise ValueError(f"{kind} table: integer column {column!r} has missing values")
        else:
            out[column] = out[column].astype("int64")
    return out


def write_table(frame: pd.DataFrame, path: str | Path, kind: str) -> None:
    """Write a table of `kind` in the contract's types: parquet or CSV by the path's suffix."""
    out = conform(frame, kind)
    if Path(path).suffix == ".parquet":
        out.to_parquet(path, index=False)
    else:
        out.to_csv(path, index=False)


def read_table(path: str | Path, kind: str) -> pd.DataFrame:
    """A table of `kind` as written by `write_table`: same columns, same types (a CSV's text keys read as text
    even when they look like numbers, its empty keys as "", its floats bit-exact)."""
    if Path(path).suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        header = pd.read_csv(path, nrows=0).columns
        text = {c: str for c in header if column_types(kind).get(c) is str}
        numbers = {c: [""] for c in header if c not in text}
        frame = pd.read_csv(path, dtype=text, keep_default_na=False, na_values=numbers)
    return conform(frame, kind)


def read_tables(paths: Sequence[str | Path], kind: str, keys: Sequence[Mapping[str, Any]] | None = None
                ) -> pd.DataFrame:
    """Tables of one kind, concatenated, the columns of `keys[i]` (e.g. {"selector": "mad"}) added to table i."""
    frames = [read_table(path, kind).assign(**(keys[i] if keys is not None else {})) for i, path in enumerate(paths)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def selection_variant(table: pd.DataFrame) -> pd.Series:
    """Each row's selection variant; the unmodified model's row has none and is every variant's reference, so it
    counts as the whole set's (ALL)."""
    if "variant" not in table:
        return pd.Series(ALL, index=table.index, dtype=object)
    variant = table["variant"]
    return variant.where(variant.notna() & (variant != ""), ALL)


def sort_interventions(table: pd.DataFrame) -> pd.DataFrame:
    """An intervention table in its row order (`INTERVENTION_ORDER`)."""
    return table.sort_values(list(INTERVENTION_ORDER), kind="stable").reset_index(drop=True)


def merge_interventions(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The shards of one study's intervention table (each written by `write_table`) as the one table an unsharded
    run writes: same rows, order and types."""
    return sort_interventions(pd.concat([read_table(p, "interventions") for p in paths], ignore_index=True))
