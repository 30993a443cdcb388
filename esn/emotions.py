"""The canonical emotion vocabulary every corpus reader maps its labels into."""

from __future__ import annotations

#: Canonical emotion names. The first seven are the classes of the study (Ekman's six + neutral);
#: the rest occur in real corpora and are kept in manifests so a class subset can choose them.
EMOTIONS: tuple[str, ...] = (
    "neutral", "happy", "sad", "angry", "fear", "disgust", "surprise",
    "calm", "excited", "frustrated", "contempt", "other",
)

#: The study's usual 4-class setup (IEMOCAP, MSP-Podcast) and the embedded default.
FOUR_CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "angry")


def check_emotions(names: list[str] | tuple[str, ...], where: str) -> list[str]:
    """Return `names` as a list, or raise naming the unknown ones and where they came from."""
    unknown = [n for n in names if n not in EMOTIONS]
    if unknown:
        raise ValueError(f"{where}: unknown emotion(s) {unknown}; canonical names are {list(EMOTIONS)}")
    return list(names)
