"""CREMA-D: `AudioWAV/SSSS_TTT_EEE_LL.wav` (speaker_sentence_emotion_level).

Gender comes from `VideoDemographics.csv` (ActorID, Sex) when a copy of it lies below the root.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from esn.corpora.base import Candidate, find_audio, find_files, map_label, read_csv_rows, reader

EMOTION_CODES: dict[str, str | None] = {
    "ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad",
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
NAME = re.compile(r"^(\d+)_([A-Za-z]+)_([A-Za-z]+)_([A-Za-z]+)$")


def _genders(root: Path) -> dict[str, str]:
    """ActorID → 'M'/'F' from VideoDemographics.csv, if the corpus copy has it."""
    genders: dict[str, str] = {}
    for table in find_files(root, "VideoDemographics.csv"):
        for row in read_csv_rows(table):
            sex = row.get("Sex", "").lower()
            if row.get("ActorID") and sex in ("male", "female"):
                genders[row["ActorID"]] = "M" if sex == "male" else "F"
    return genders


@reader("cremad")
def read_cremad(root: Path, **options: object) -> Iterator[Candidate]:
    """Yield every .wav below `root`, labelled from the CREMA-D file name."""
    files = find_audio(root)
    genders = _genders(root)
    for path in files:
        match = NAME.match(path.stem)
        if match is None:
            yield Candidate(path.stem, path, None, problem="unparseable file name")
            continue
        speaker, sentence, code, level = match.groups()
        emotion, problem = map_label(code, EMOTION_CODES)
        extra: dict[str, object] = {"sentence": sentence, "level": LEVELS.get(level.upper(), level)}
        if speaker in genders:
            extra["gender"] = genders[speaker]
        yield Candidate(path.stem, path, emotion, speaker=speaker, raw_label=code, problem=problem, extra=extra)
