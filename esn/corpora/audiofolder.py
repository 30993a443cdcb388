"""Any folder in the Hugging Face audiofolder convention: `metadata.csv` (or `.jsonl`) rows with a
`file_name` relative to the metadata file, a label column and optionally a speaker column.

This is the way in for a corpus without a dedicated reader: write a metadata file, map its labels.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path

from esn.corpora.base import Candidate, find_files, map_label, read_csv_rows, reader, row_source, user_label_map


def _rows(path: Path) -> list[dict[str, str]]:
    """Rows of metadata.csv or metadata.jsonl, values as text."""
    if path.suffix == ".csv":
        return read_csv_rows(path)
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            rows.append({k: "" if v is None else str(v).strip() for k, v in json.loads(line).items()})
    return rows


def _utterance_id(relative: str) -> str:
    """Id from the file's path below the top metadata folder, minus suffix; folders joined by '__' so that
    equal names in different folders stay apart while extra nesting above the data changes nothing."""
    stem = posixpath.splitext(posixpath.normpath(relative))[0]
    return stem.replace("/", "__")


@reader("audiofolder")
def read_audiofolder(root: Path, *, label_column: str = "emotion", speaker_column: str = "speaker",
                     label_map: dict[str, str] | None = None, **options: object) -> Iterator[Candidate]:
    """Yield one candidate per metadata row; labels go through `label_map` (canonical names map to themselves)."""
    mapping = user_label_map(label_map, "audiofolder")
    tables = [p for p in find_files(root, "metadata.*") if p.suffix in (".csv", ".jsonl")]
    if not tables:
        raise FileNotFoundError(f"no metadata.csv or metadata.jsonl below {root}")
    top = Path(os.path.commonpath([t.parent for t in tables]))
    for table in tables:
        rows = _rows(table)
        if rows and label_column not in rows[0]:
            raise ValueError(f"{table}: no label column {label_column!r} (columns: {sorted(rows[0])}); "
                             "set the reader option label_column")
        folder = table.parent.relative_to(top).as_posix()
        for row in rows:
            name = row.get("file_name", "")
            code = row.get(label_column, "")
            emotion, problem = (map_label(code, mapping, fold_case=True) if code
                                else (None, f"no label in column {label_column!r}"))
            source, bad_path = row_source(root, table.parent, name, table) if name else (None, "no file_name")
            speaker = row.get(speaker_column) or None
            extra = {k: v for k, v in row.items() if k not in ("file_name", label_column, speaker_column)}
            extra["metadata"] = posixpath.join(folder, table.name) if folder != "." else table.name
            yield Candidate(_utterance_id(posixpath.join(folder, name)), source, emotion, speaker=speaker,
                            raw_label=code, problem=bad_path or problem, extra=extra)
