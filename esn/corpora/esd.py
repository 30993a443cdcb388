"""ESD: `SSSS/<Emotion>/[train|evaluation|test/]SSSS_NNNNNN.wav`; speakers 0001-0010 Mandarin, 0011-0020 English.

The label is the emotion folder; the official split folder, when present, goes to `extra`.
Transcript files (`SSSS/SSSS.txt`) are not read.

Official split (`split: official`): the release's train and evaluation folders for identification, test for
evaluation; a file outside those folders is in neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from esn.corpora.base import Candidate, find_audio, map_label, official_split, reader

EMOTION_FOLDERS: dict[str, str | None] = {
    "angry": "angry", "happy": "happy", "neutral": "neutral", "sad": "sad", "surprise": "surprise",
}
SPLITS = {"train", "evaluation", "test"}
NAME = re.compile(r"^(\d{4})_(\d{6})$")


@reader("esd")
def read_esd(root: Path, **options: object) -> Iterator[Candidate]:
    """Yield every .wav below `root`, labelled from its emotion folder."""
    for path in find_audio(root):
        match = NAME.match(path.stem)
        if match is None:
            yield Candidate(path.stem, path, None, problem="unparseable file name")
            continue
        speaker = match.group(1)
        folder = path.parent
        extra: dict[str, object] = {"language": "zh" if int(speaker) <= 10 else "en"}
        if folder.name.lower() in SPLITS:
            extra["split"] = folder.name.lower()
            folder = folder.parent
        emotion, problem = map_label(folder.name, EMOTION_FOLDERS, fold_case=True)
        yield Candidate(path.stem, path, emotion, speaker=speaker, raw_label=folder.name, problem=problem,
                        extra=extra)


OFFICIAL = {"train": "identification", "evaluation": "identification", "test": "evaluation"}


@official_split("esd")
def esd_split(c: Candidate) -> str | None:
    return OFFICIAL.get(str(c.extra.get("split")))
