"""The table contract between stages: what identifies a condition, and how identification variants are named.

An intervention table has one row per (utterance, condition); a condition is identified by `CONDITION_KEYS`.
Every metrics table keeps those keys (in this order) before its values, and the figures and the browser
select rows by them. A selection variant is the identification set a neuron set was chosen from: the whole
set (`ALL`), the correctly recognised clips only (`CORRECT_ONLY`), or a subsample of N utterances per emotion
drawn with seed S, named `n{N}s{S}` (`variant_name`, read back by `parse_variant` only).
"""

from __future__ import annotations

import re

#: What identifies a condition, in the order of the metrics tables' key columns.
CONDITION_KEYS: tuple[str, ...] = ("mode", "variant", "control", "target", "fraction", "alpha", "layer", "draw")
#: The keys that pair a selected set's condition with its layer-matched random draws (same everything else).
TWIN_KEYS: tuple[str, ...] = tuple(k for k in CONDITION_KEYS if k not in ("control", "layer", "draw"))
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
