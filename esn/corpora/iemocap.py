"""IEMOCAP: labels in `SessionN/dialog/EmoEvaluation/<dialog>.txt`,
audio in `SessionN/sentences/wav/<dialog>/<utt>.wav`.

A label line reads `[start - end]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[V, A, D]`. The speaker is the
session plus the gender of whoever speaks the turn (the letter before the 3-digit index), since each
session pairs one female and one male actor.

Official split (`split: official`): the common protocol's sessions 1–4 for identification, session 5 for
evaluation (speaker-independent: each session has its own two actors).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from esn.corpora.base import Candidate, find_files, map_label, official_split, reader, row_source

EMOTION_CODES: dict[str, str | None] = {
    "neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry", "exc": "excited", "fru": "frustrated",
    "sur": "surprise", "fea": "fear", "dis": "disgust", "oth": "other", "xxx": None,
}
LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]")
UTTERANCE = re.compile(r"^Ses(\d\d)[FM]_.+_([FM])\d{3}$")


@reader("iemocap")
def read_iemocap(root: Path, *, merge_excited: bool = False, **options: object) -> Iterator[Candidate]:
    """Yield one candidate per labelled turn; `merge_excited` maps exc to happy (the usual 4-class setup)."""
    codes = dict(EMOTION_CODES, exc="happy") if merge_excited else EMOTION_CODES
    label_files = [p for p in find_files(root, "*.txt") if p.parent.name == "EmoEvaluation"]
    for label_file in label_files:
        session_dir = label_file.parent.parent.parent
        dialog = label_file.stem
        text = label_file.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            match = LINE.match(line.strip())
            if match is None:
                continue
            start, end, utterance, code, vad = match.groups()
            emotion, problem = map_label(code, codes)
            name = UTTERANCE.match(utterance)
            speaker = f"Ses{name.group(1)}{name.group(2)}" if name else None
            if name is None:
                problem = problem or "unparseable utterance name"
            source, missing = row_source(root, session_dir / "sentences" / "wav" / dialog, f"{utterance}.wav",
                                         label_file)
            extra: dict[str, object] = {
                "session": int(name.group(1)) if name else None,
                "gender": name.group(2) if name else None,
                "dialog": dialog,
                "improvised": "_impro" in dialog,
                "start_s": float(start),
                "end_s": float(end),
            }
            try:
                extra["valence"], extra["activation"], extra["dominance"] = (float(v) for v in vad.split(","))
            except ValueError:
                pass
            yield Candidate(utterance, source, emotion, speaker=speaker, raw_label=code,
                            problem=missing or problem, extra=extra)


#: The held-out session of the common IEMOCAP protocol (leave-one-session-out, fold 5).
EVALUATION_SESSION = 5


@official_split("iemocap")
def iemocap_split(c: Candidate) -> str | None:
    session = c.extra.get("session")
    if session is None:
        return None
    return "evaluation" if session == EVALUATION_SESSION else "identification"
