"""RAVDESS: `Actor_XX/MM-VV-EE-II-SS-RR-AA.wav` (modality-channel-emotion-intensity-statement-repetition-actor).

Only the audio-only release (modality 03) ships .wav; both vocal channels (speech 01, song 02) are
yielded with the channel in `extra` so a config can choose. Odd actors are male, even female.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from esn.corpora.base import Candidate, find_audio, map_label, reader

EMOTION_CODES: dict[str, str | None] = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fear", "07": "disgust", "08": "surprise",
}
CHANNELS = {"01": "speech", "02": "song"}
INTENSITIES = {"01": "normal", "02": "strong"}
NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@reader("ravdess")
def read_ravdess(root: Path, **options: object) -> Iterator[Candidate]:
    """Yield every .wav below `root`, labelled from the 7-field RAVDESS file name."""
    for path in find_audio(root):
        match = NAME.match(path.stem)
        if match is None:
            yield Candidate(path.stem, path, None, problem="unparseable file name")
            continue
        modality, channel, code, intensity, statement, repetition, actor = match.groups()
        emotion, problem = map_label(code, EMOTION_CODES)
        extra = {
            "modality": modality,
            "channel": CHANNELS.get(channel, channel),
            "intensity": INTENSITIES.get(intensity, intensity),
            "statement": statement,
            "repetition": repetition,
            "gender": "M" if int(actor) % 2 else "F",
        }
        yield Candidate(path.stem, path, emotion, speaker=actor, raw_label=code, problem=problem, extra=extra)
