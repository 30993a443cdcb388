"""What a corpus reader yields, and the registry of readers by config name.

A reader walks a corpus in its native layout and yields one `Candidate` per audio file or label
row, already mapped to the canonical emotion vocabulary (`esn.emotions`). It never decodes audio and
never drops anything silently: a row it cannot use carries a `problem` (the quarantine reason).
Preparation (`esn.prepare`) decodes, checks, resamples and writes the kept ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Candidate:
    """One utterance as a reader found it.

    `source` is a file path, encoded audio bytes (hub datasets), or an already decoded
    `(samples, rate)` pair (the synthetic corpus). `emotion` is canonical or None with `problem` set.
    """

    utterance_id: str
    source: Path | bytes | tuple[np.ndarray, int] | None
    emotion: str | None
    speaker: str | None = None
    raw_label: str | None = None
    problem: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Reader = Callable[..., Iterator[Candidate]]
READERS: dict[str, Reader] = {}


def reader(name: str) -> Callable[[Reader], Reader]:
    """Register a reader under its config name (`corpora.<corpus>.reader`)."""

    def register(fn: Reader) -> Reader:
        READERS[name] = fn
        return fn

    return register


OfficialSplit = Callable[[Candidate], str | None]
#: Reader name -> the corpus' published split of a candidate ("identification" / "evaluation"; None: in none).
OFFICIAL_SPLITS: dict[str, OfficialSplit] = {}


def official_split(name: str) -> Callable[[OfficialSplit], OfficialSplit]:
    """Register the published split of reader `name`'s corpus (used with `split: official` on a corpus entry)."""

    def register(fn: OfficialSplit) -> OfficialSplit:
        OFFICIAL_SPLITS[name] = fn
        return fn

    return register


def get_official_split(name: str) -> OfficialSplit:
    """The published split of reader `name`'s corpus; a clear error for readers whose corpus has none."""
    from esn.corpora import OFFICIAL_SPLIT_READERS

    get_reader(name)  # imports the reader's module, which registers its split
    if name not in OFFICIAL_SPLITS:
        raise ValueError(f"reader {name!r} knows no official split of its corpus (readers that do: "
                         f"{', '.join(sorted(OFFICIAL_SPLIT_READERS))}); use split: speaker_hash")
    return OFFICIAL_SPLITS[name]


def get_reader(name: str) -> Reader:
    """Look a reader up by name, importing its built-in module on first use."""
    import importlib

    from esn.corpora import BUILTIN_READERS

    if name not in READERS and name in BUILTIN_READERS:
        importlib.import_module(BUILTIN_READERS[name])
    if name not in READERS:
        raise ValueError(f"unknown corpus reader {name!r}; known readers: {sorted(READERS)}")
    return READERS[name]


def find_files(root: Path, pattern: str) -> list[Path]:
    """All files below `root` matching a glob pattern, sorted for determinism."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus folder {root} does not exist or is not a folder")
    return sorted(p for p in root.rglob(pattern) if p.is_file())


def inside(root: Path, relative: str) -> Path | None:
    """Resolve a path named by a label file below `root`; None when it would escape `root`."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    return candidate if candidate.is_relative_to(root) else None


def find_audio(root: Path, suffixes: tuple[str, ...] = (".wav",)) -> list[Path]:
    """All files below `root` whose suffix is one of `suffixes`, case-insensitively (copies ship .WAV)."""
    wanted = {s.lower() for s in suffixes}
    return [p for p in find_files(root, "*") if p.suffix.lower() in wanted]


def map_label(code: str, mapping: dict[str, str | None], *, fold_case: bool = False) -> tuple[str | None, str | None]:
    """Map a native label code to `(emotion, problem)`.

    A code mapped to None is one the corpus itself marks as having no agreed label (IEMOCAP `xxx`,
    MSP-Podcast `X`); a code missing from `mapping` is unknown. Neither is guessed.
    """
    key = code
    if key not in mapping and fold_case:
        key = code.strip().lower()
    if key not in mapping:
        return None, f"unknown label code {code!r}"
    emotion = mapping[key]
    return (emotion, None) if emotion is not None else (None, f"no agreed label ({code})")


def user_label_map(label_map: dict[str, str] | None, where: str) -> dict[str, str | None]:
    """Canonical names map to themselves; `label_map` adds native names (lower-cased keys too).

    Values are checked against the vocabulary so that a typo in a config fails at once.
    """
    from esn.emotions import EMOTIONS, check_emotions

    mapping: dict[str, str | None] = {name: name for name in EMOTIONS}
    extra = dict(label_map or {})
    check_emotions(list(extra.values()), f"{where} label_map")
    for native, canonical in extra.items():
        mapping[str(native)] = canonical
        mapping.setdefault(str(native).strip().lower(), canonical)
    return mapping


def row_source(root: Path, base: Path, name: str, label_file: Path) -> tuple[Path | None, str | None]:
    """Resolve an audio file named by a label file row: `(path, None)` or `(None, problem)`.

    `name` is relative to `base`; a name that resolves outside `root` or names no file is a
    problem of that row, never a reason to stop reading.
    """
    path = inside(root, str(Path(base) / name))
    if path is None:
        return None, "path escapes corpus folder"
    if not path.is_file():
        return None, f"missing file named by {Path(label_file).name}"
    return path, None


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV label file as dicts (BOM stripped, undecodable bytes replaced, not fatal)."""
    import csv

    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        return [{(k or "").strip(): _cell(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _cell(value: str | list[str] | None) -> str:
    """A CSV cell as stripped text; surplus cells of a ragged row (a list) are joined back."""
    if value is None:
        return ""
    return (value if isinstance(value, str) else ",".join(value)).strip()
