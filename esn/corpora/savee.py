"""SAVEE: `DC/a01.wav` (Surrey release) or flat `DC_a01.wav` (common re-packaging); four male speakers.

The prefix is the emotion: a angry, d disgust, f fear, h happy, n neutral, sa sad, su surprise.
Both layouts get the id `DC_a01`, so a corpus copy holding both yields duplicate ids (quarantined later).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from esn.corpora.base import Candidate, find_audio, map_label, reader

EMOTION_CODES: dict[str, str | None] = {
    "a": "angry", "d": "disgust", "f": "fear", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprise",
}
FLAT = re.compile(r"^([A-Za-z]{2})_([A-Za-z]+)(\d+)$")
NESTED = re.compile(r"^([A-Za-z]+)(\d+)$")
SPEAKER_FOLDER = re.compile(r"^[A-Z]{2}$")


def _fields(path: Path) -> tuple[str, str, str] | None:
    """(speaker, label code, index) from either layout, or None."""
    flat = FLAT.match(path.stem)
    if flat:
        return flat.group(1).upper(), flat.group(2), flat.group(3)
    nested = NESTED.match(path.stem)
    if nested and SPEAKER_FOLDER.match(path.parent.name):
        return path.parent.name, nested.group(1), nested.group(2)
    return None


@reader("savee")
def read_savee(root: Path, **options: object) -> Iterator[Candidate]:
    """Yield every .wav below `root`, labelled from the SAVEE name (and speaker folder)."""
    for path in find_audio(root):
        fields = _fields(path)
        if fields is None:
            yield Candidate(path.stem, path, None, problem="unparseable file name")
            continue
        speaker, code, index = fields
        emotion, problem = map_label(code, EMOTION_CODES, fold_case=True)
        yield Candidate(f"{speaker}_{code.lower()}{index}", path, emotion, speaker=speaker, raw_label=code,
                        problem=problem, extra={"gender": "M"})
