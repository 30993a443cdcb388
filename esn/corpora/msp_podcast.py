"""MSP-Podcast: `Labels/labels_consensus.csv` (FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender,
Split_Set) next to `Audios/<FileName>`.

File names are unique across the corpus, so a file not under `Audios/` is looked up by name below the
corpus folder (older releases nest audio deeper).

Official split (`split: official`): the labels file's `Split_Set`: Train and Development for identification,
the test sets (Test1, Test2, Test3) for evaluation; a row with another or no partition is in neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from esn.corpora.base import (Candidate, find_audio, find_files, map_label, official_split, read_csv_rows, reader,
                              row_source)

EMOTION_CODES: dict[str, str | None] = {
    "N": "neutral", "H": "happy", "S": "sad", "A": "angry", "F": "fear", "D": "disgust",
    "U": "surprise", "C": "contempt", "O": "other", "X": None,
}


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


@reader("msp_podcast")
def read_msp_podcast(root: Path, **options: object) -> Iterator[Candidate]:
    """Yield one candidate per row of each `labels_consensus.csv` below `root`."""
    for label_file in find_files(root, "labels_consensus.csv"):
        corpus = label_file.parent.parent if label_file.parent.name == "Labels" else label_file.parent
        by_name: dict[str, list[Path]] | None = None  # built only if some file is not under Audios/
        for row in read_csv_rows(label_file):
            name = row.get("FileName", "")
            code = row.get("EmoClass", "")
            emotion, problem = map_label(code, EMOTION_CODES)
            source, missing = row_source(root, corpus / "Audios", name, label_file)
            if source is None and missing and missing.startswith("missing"):
                if by_name is None:
                    by_name = {}
                    for path in find_audio(corpus):
                        by_name.setdefault(path.name, []).append(path)
                if len(by_name.get(name, [])) == 1:
                    source, missing = by_name[name][0], None
            speaker = row.get("SpkrID", "")
            extra = {
                "split": row.get("Split_Set") or None,
                "gender": row.get("Gender") or None,
                "activation": _float(row.get("EmoAct")),
                "valence": _float(row.get("EmoVal")),
                "dominance": _float(row.get("EmoDom")),
            }
            yield Candidate(Path(name).stem, source, emotion,
                            speaker=None if speaker.lower() in ("", "unknown") else speaker,
                            raw_label=code, problem=missing or problem, extra=extra)


OFFICIAL = {"train": "identification", "development": "identification", "test1": "evaluation",
            "test2": "evaluation", "test3": "evaluation"}


@official_split("msp_podcast")
def msp_podcast_split(c: Candidate) -> str | None:
    return OFFICIAL.get(str(c.extra.get("split") or "").strip().lower())
