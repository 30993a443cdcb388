"""TESS: `OAF_angry/OAF_back_angry.wav`, speaker_word_emotion; two female speakers OAF (older), YAF (younger).

The label is the last name field; pleasant surprise appears as `ps`, `pleasant_surprise(d)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from esn.corpora.base import Candidate, find_audio, map_label, reader

EMOTION_CODES: dict[str, str | None] = {
    "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "neutral": "neutral",
    "sad": "sad", "ps": "surprise", "pleasant_surprise": "surprise", "pleasant_surprised": "surprise",
    "surprise": "surprise", "surprised": "surprise",
}


def _split(stem: str) -> tuple[str, str, str] | None:
    """(speaker, word, label code) of a TESS stem, or None; handles multi-word label codes."""
    parts = stem.split("_")
    if len(parts) < 3:
        return None
    if len(parts) >= 4 and parts[-2].lower() == "pleasant":
        return parts[0], "_".join(parts[1:-2]), "_".join(parts[-2:])
    return parts[0], "_".join(parts[1:-1]), parts[-1]


@reader("tess")
def read_tess(root: Path, **options: object) -> Iterator[Candidate]:
    """Yield every .wav below `root`, labelled from the TESS file name."""
    for path in find_audio(root):
        fields = _split(path.stem)
        if fields is None:
            yield Candidate(path.stem, path, None, problem="unparseable file name")
            continue
        speaker, word, code = fields
        emotion, problem = map_label(code, EMOTION_CODES, fold_case=True)
        yield Candidate(path.stem, path, emotion, speaker=speaker, raw_label=code, problem=problem,
                        extra={"word": word, "gender": "F"})
