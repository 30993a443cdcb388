"""MELD: `{train,dev,test}_sent_emo.csv` label rows; media `dia{D}_utt{U}.{wav,mp4}` in split folders.

MELD.Raw ships `train_splits/`, `dev_splits_complete/` and `output_repeated_splits_test/`. Media names
repeat across splits, so a file's split is read from the nearest folder whose name carries the word
train, dev or test; a row only ever uses media from its own split (a .wav before an .mp4). Some test
files carry a prefix (`final_videos_testdia0_utt0.mp4`); an exact name wins over a prefixed one.

Official split (`split: official`): train and dev for identification (the neurons are found, no model is
tuned, so dev needs no separate role), test for evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from esn.corpora.base import Candidate, find_files, map_label, official_split, read_csv_rows, reader

EMOTION_CODES: dict[str, str | None] = {
    "neutral": "neutral", "joy": "happy", "sadness": "sad", "anger": "angry",
    "fear": "fear", "disgust": "disgust", "surprise": "surprise",
}
SPLIT_WORD = re.compile(r"(?<![a-z])(train|dev|test)(?![a-z])")
LABEL_FILE = re.compile(r"^(train|dev|test)_sent_emo\.csv$")
MEDIA_SUFFIXES = (".wav", ".mp4")
MEDIA_NAME = re.compile(r"dia(\d+)_utt(\d+)$")


def _folder_split(path: Path, root: Path) -> str | None:
    """The split named by the nearest folder between `root` and `path`, if any."""
    for folder in path.relative_to(root).parents:
        words = set(SPLIT_WORD.findall(folder.name.lower()))
        if len(words) == 1:
            return words.pop()
    return None


def _stem(dialogue: str, utterance: str) -> str:
    """`dia{D}_utt{U}` with leading zeros dropped, so CSV ids and media names meet."""
    return f"dia{dialogue.lstrip('0') or dialogue[:1]}_utt{utterance.lstrip('0') or utterance[:1]}"


def _media_index(root: Path) -> dict[tuple[str, str], Path]:
    """(split, `dia{D}_utt{U}`) → media file, preferring .wav over .mp4 and exact over prefixed names."""
    ranked: dict[tuple[str, str], tuple[tuple[int, int], Path]] = {}
    for path in find_files(root, "*dia*_utt*"):
        suffix = path.suffix.lower()
        name = MEDIA_NAME.search(path.stem)
        split = _folder_split(path, root)
        if suffix not in MEDIA_SUFFIXES or name is None or split is None:
            continue
        key = (split, _stem(name.group(1), name.group(2)))
        rank = (MEDIA_SUFFIXES.index(suffix), 0 if name.start() == 0 else 1)
        if key not in ranked or rank < ranked[key][0]:
            ranked[key] = (rank, path)
    return {key: path for key, (_, path) in ranked.items()}


@reader("meld")
def read_meld(root: Path, **options: object) -> Iterator[Candidate]:
    """Yield one candidate per label row of each split CSV, pointing at that split's media file."""
    label_files = [p for p in find_files(root, "*_sent_emo.csv") if LABEL_FILE.match(p.name)]
    media = _media_index(root)
    for label_file in label_files:
        split = LABEL_FILE.match(label_file.name).group(1)  # type: ignore[union-attr]
        for row in read_csv_rows(label_file):
            stem = _stem(row.get("Dialogue_ID", ""), row.get("Utterance_ID", ""))
            code = row.get("Emotion", "")
            emotion, problem = map_label(code, EMOTION_CODES, fold_case=True)
            source = media.get((split, stem))
            if source is None:
                problem = f"missing file named by {label_file.name}"
            extra = {
                "split": split,
                "sentiment": row.get("Sentiment"),
                "season": row.get("Season"),
                "episode": row.get("Episode"),
                "start_time": row.get("StartTime"),
                "end_time": row.get("EndTime"),
                "transcript": row.get("Utterance"),
            }
            yield Candidate(f"{split}_{stem}", source, emotion, speaker=row.get("Speaker") or None,
                            raw_label=code, problem=problem, extra=extra)


OFFICIAL = {"train": "identification", "dev": "identification", "test": "evaluation"}


@official_split("meld")
def meld_split(c: Candidate) -> str | None:
    return OFFICIAL.get(str(c.extra.get("split")))
