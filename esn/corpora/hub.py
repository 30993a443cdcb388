"""A Hugging Face dataset, by hub id or as a local `save_to_disk` folder.

Audio is never decoded by `datasets` (that needs torchcodec): the audio column is cast to
`Audio(decode=False)` so each row gives its encoded bytes (or a local path), decoded later by
`esn.audio`. Integer ClassLabel labels are turned into their names before `label_map` applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esn.corpora.base import Candidate, map_label, reader, user_label_map


def _load(root: str | Path, split: str, revision: str | None) -> Any:
    """The dataset split, from a local folder or the hub; a failure says what to check."""
    import datasets

    local = Path(root).expanduser()
    try:
        if local.is_dir() and any((local / n).is_file() for n in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise KeyError(f"split {split!r} not in {sorted(loaded)}")
                loaded = loaded[split]
            return loaded
        if local.is_dir():
            return datasets.load_dataset(str(local), split=split)
    except Exception as err:
        raise RuntimeError(f"could not load local dataset folder {str(local)!r} (split {split!r}): {err}") from err
    if local.is_file():
        raise ValueError(f"hub reader: {root} is a file; give a hub dataset id or a dataset folder")
    if str(root).startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    try:
        return datasets.load_dataset(str(root), split=split, revision=revision)
    except Exception as err:
        raise RuntimeError(
            f"could not load hub dataset {str(root)!r} (split {split!r}, revision {revision!r}): {err}. "
            "Check the id, split and access rights; are you online? Set HF_HUB_OFFLINE=1 only once the "
            "dataset is in the Hugging Face cache (HF_HOME), or use a local save_to_disk folder."
        ) from err


def _audio(value: Any) -> tuple[bytes | Path | None, str | None]:
    """(source, problem) from an undecoded audio cell: bytes first, else an existing local path."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    else:
        data, path = None, value
    if data:
        return bytes(data), None
    if path and Path(path).is_file():
        return Path(path), None
    return None, f"row has no audio bytes and its path {path!r} is not a file"


@reader("hub")
def read_hub(root: str | Path, *, split: str = "train", audio_column: str = "audio", label_column: str = "emotion",
             speaker_column: str | None = None, label_map: dict[str, str] | None = None,
             revision: str | None = None, id_column: str | None = None, **options: object) -> Iterator[Candidate]:
    """Yield one candidate per row of the split; ids are `id_column` values or `{split}_{row:06d}`."""
    import datasets

    mapping = user_label_map(label_map, "hub")
    ds = _load(root, split, revision)
    wanted = [c for c in dict.fromkeys((audio_column, label_column, speaker_column, id_column)) if c is not None]
    for column in wanted:
        if column not in ds.column_names:
            raise ValueError(f"hub dataset {str(root)!r} has no column {column!r} (columns: {ds.column_names}); "
                             "set the reader options audio_column / label_column / speaker_column")
    ds = ds.select_columns(wanted)
    if isinstance(ds.features[audio_column], datasets.Audio):
        ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    feature = ds.features[label_column]
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    prefix = re.sub(r"[^0-9A-Za-z]+", "_", split).strip("_")
    for index, row in enumerate(ds):
        value = row[label_column]
        if names is not None and isinstance(value, int) and 0 <= value < len(names):
            code = names[value]
        else:
            code = "" if value is None else str(value)
        emotion, problem = map_label(code, mapping, fold_case=True)
        source, missing = _audio(row[audio_column])
        speaker = row[speaker_column] if speaker_column else None
        utterance_id = str(row[id_column]) if id_column else f"{prefix}_{index:06d}"
        yield Candidate(utterance_id, source, emotion, speaker=None if speaker is None else str(speaker),
                        raw_label=code, problem=missing or problem, extra={"split": split, "row": index})
