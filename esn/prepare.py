"""Corpus preparation: every input ends kept, quarantined (with a reason) or excluded by the class subset.

Kept utterances are decoded, mixed to mono, resampled to 16 kHz and written as 16-bit FLAC under
`<out>/audio/`; `manifest.parquet` lists them with their split and the rule that made it (`split_rule`: the
seeded speaker hash, or with `split: official` the corpus' published split; a cue-conflict corpus adds
`lexical_emotion` and `text`, `CUE_COLUMNS`), `quarantine.csv` lists the rest with
the reason, and `summary.json` holds counts that reconcile (found = kept + quarantined + excluded).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from esn import audio
from esn.corpora.base import Candidate, get_official_split, get_reader
from esn.emotions import check_emotions

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["utterance_id", "path", "emotion", "speaker", "corpus", "split", "duration_s",
                    "sample_rate", "source", "source_rate", "source_channels", "raw_label", "split_rule"]
#: Columns a manifest also has when its reader records them: the emotion a clip's words say and the words
#: (cue-conflict corpora, `esn.corpora.spoken`; there `emotion` is the prosodic emotion).
CUE_COLUMNS = ["lexical_emotion", "text"]
SPLITS = ("identification", "evaluation")
#: How a manifest's split was made (column `split_rule`): the seeded speaker hash, or the corpus' published split.
SPLIT_RULES = ("speaker_hash", "official")


@dataclass
class PrepareOptions:
    """How a corpus entry of the config is prepared (see `workflow/schemas/config.schema.yaml`)."""

    classes: list[str]
    max_duration_s: float = 30.0
    evaluation_fraction: float = 0.3
    seed: int = 0
    reader_options: dict[str, Any] = field(default_factory=dict)
    split: str = "speaker_hash"


def assign_splits(speakers: pd.Series, utterance_ids: pd.Series, fraction: float, seed: int) -> pd.Series:
    """Identification/evaluation split, speaker-disjoint where speakers are known.

    Speakers are ranked by a seeded hash and the first ones go to evaluation until about `fraction`
    of the utterances are covered (at least one speaker on each side when there are two or more).
    Utterances without a speaker are split by the same hash of their own id.
    """
    def rank(key: str) -> str:
        return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()

    split = pd.Series("identification", index=speakers.index, dtype=object)
    known = speakers.notna()
    counts = speakers[known].value_counts()
    if len(counts) >= 2:
        order = sorted(counts.index, key=rank)
        target, taken, chosen = fraction * int(known.sum()), 0, []
        for spk in order:
            if taken >= target or len(chosen) == len(order) - 1:
                break
            chosen.append(spk)
            taken += int(counts[spk])
        split[known & speakers.isin(chosen)] = "evaluation"
    elif len(counts) == 1:
        known = pd.Series(False, index=speakers.index)  # one speaker: split its utterances instead
    unknown = ~known
    hashed = utterance_ids[unknown].map(lambda u: int(rank(u)[:8], 16) / 0xFFFFFFFF)
    split[hashed.index[hashed < fraction]] = "evaluation"
    return split


def _load(c: Candidate) -> tuple[np.ndarray, int, int]:
    """Decoded mono waveform, its rate, and the channel count of the source."""
    if isinstance(c.source, tuple):
        wave, rate = c.source
        return np.asarray(wave, dtype=np.float32), int(rate), 1
    data, rate = audio.decode(c.source)
    return audio.to_mono(data), rate, data.shape[1]


def prepare_corpus(name: str, reader: str, path: str | Path | None, out_dir: str | Path,
                   options: PrepareOptions) -> dict[str, Any]:
    """Prepare one corpus into `out_dir`; returns (and writes) the reconciled counts."""
    out_dir = Path(out_dir)
    classes = check_emotions(options.classes, f"corpora.{name}.classes")
    read = get_reader(reader)
    if options.split not in SPLIT_RULES:
        raise ValueError(f"corpora.{name}.split must be one of {SPLIT_RULES}, not {options.split!r}")
    official = get_official_split(reader) if options.split == "official" else None
    root = Path(path) if path not in (None, "") and reader != "hub" else path
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    quarantine: list[dict[str, str]] = []
    excluded: Counter[str] = Counter()
    seen: set[str] = set()
    found = 0
    for c in tqdm(read(root, **options.reader_options), desc=f"prepare {name}", unit="utt"):
        found += 1
        where = str(c.source) if isinstance(c.source, (str, Path)) else c.utterance_id
        if c.problem is not None:
            quarantine.append({"utterance_id": c.utterance_id, "path": where, "reason": c.problem})
            continue
        if c.utterance_id in seen:
            quarantine.append({"utterance_id": c.utterance_id, "path": where,
                               "reason": "duplicate utterance id (first occurrence kept)"})
            continue
        seen.add(c.utterance_id)
        if c.emotion not in classes:
            excluded[str(c.emotion)] += 1
            continue
        split = official(c) if official is not None else ""
        if split is None:
            quarantine.append({"utterance_id": c.utterance_id, "path": where,
                               "reason": f"in no official split of {reader} (partition {c.extra.get('split')!r})"})
            continue
        try:
            wave, rate, channels = _load(c)
        except audio.AudioError as err:
            quarantine.append({"utterance_id": c.utterance_id, "path": where, "reason": str(err)})
            continue
        reason = audio.problem(wave, rate, max_duration_s=options.max_duration_s)
        if reason is not None:
            quarantine.append({"utterance_id": c.utterance_id, "path": where, "reason": reason})
            continue
        wave = audio.resample(wave, rate)
        rel = f"audio/{c.utterance_id}.flac"
        sf.write(out_dir / rel, wave, audio.SAMPLE_RATE, subtype="PCM_16")
        rows.append({"utterance_id": c.utterance_id, "path": rel, "emotion": c.emotion,
                     "speaker": None if c.speaker is None else f"{name}:{c.speaker}", "corpus": name,
                     "split": split, "duration_s": wave.size / audio.SAMPLE_RATE,
                     "sample_rate": audio.SAMPLE_RATE, "source": where, "source_rate": rate,
                     "source_channels": channels, "raw_label": c.raw_label, "split_rule": options.split,
                     **({k: c.extra[k] for k in CUE_COLUMNS} if "lexical_emotion" in c.extra else {})})

    cues = [k for k in CUE_COLUMNS if any(k in r for r in rows)]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + cues)
    if len(manifest) and official is None:
        manifest["split"] = assign_splits(manifest["speaker"], manifest["utterance_id"],
                                          options.evaluation_fraction, options.seed)
    manifest = manifest.sort_values("utterance_id", kind="stable").reset_index(drop=True)
    manifest.to_parquet(out_dir / "manifest.parquet", index=False)
    pd.DataFrame(quarantine, columns=["utterance_id", "path", "reason"]).to_csv(
        out_dir / "quarantine.csv", index=False)

    summary = {
        "corpus": name, "reader": reader, "found": found, "kept": len(manifest),
        "quarantined": len(quarantine), "excluded_by_class": dict(sorted(excluded.items())),
        "classes": classes,
        "per_emotion": manifest["emotion"].value_counts().sort_index().to_dict(),
        "per_split": manifest["split"].value_counts().sort_index().to_dict(), "split_rule": options.split,
        "speakers": int(manifest["speaker"].nunique()),
        "hours": round(float(manifest["duration_s"].sum()) / 3600, 4),
    }
    assert summary["kept"] + summary["quarantined"] + sum(excluded.values()) == found, summary
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("corpus %s: found %d, kept %d, quarantined %d, excluded by class %s", name, found,
             summary["kept"], summary["quarantined"], dict(excluded))
    if not len(manifest):
        raise ValueError(f"corpus {name}: no usable utterance of classes {classes} "
                         f"(found {found}, quarantined {len(quarantine)}; see {out_dir/'quarantine.csv'})")
    return summary


def cap_split(manifest: pd.DataFrame, split: str, max_per_emotion: int | None, seed: int
              ) -> tuple[pd.DataFrame, dict[str, str]]:
    """At most `max_per_emotion` utterances of `split` per emotion (the other splits' rows all kept).

    Capture caps the identification split (the identification-size sweep shows how few clips a selection needs;
    the cap keeps a 100k-clip corpus's store to what is used); the model jobs cap the evaluation split
    (`evaluation_clips`) where every (clip, condition) row is a forward pass. Drawn without replacement by
    `default_rng(seed)`, one permutation per emotion (in sorted emotion order) over its candidates in
    utterance-id order, so the draw depends on the seed and the manifest's content only. An emotion with fewer
    clips keeps them all. Rows keep the manifest's order. Returns the kept rows and their record for a store's
    attributes (`max_per_emotion`, and `<split>_per_emotion`: the clips kept per emotion as JSON).
    """
    if max_per_emotion is not None and max_per_emotion < 1:
        raise ValueError(f"max_per_emotion must be a positive count or null, not {max_per_emotion}")
    if max_per_emotion is not None:
        rng = np.random.default_rng(seed)
        keep = manifest["split"] != split
        candidates = manifest[~keep]
        for emotion in sorted(candidates["emotion"].unique()):
            ids = np.sort(candidates.loc[candidates["emotion"] == emotion, "utterance_id"].to_numpy(dtype=object))
            keep |= manifest["utterance_id"].isin(ids[rng.permutation(len(ids))[:max_per_emotion]])
        manifest = manifest[keep]
    kept = manifest.loc[manifest["split"] == split, "emotion"].value_counts().sort_index()
    return manifest, {"max_per_emotion": str(max_per_emotion),
                      f"{split}_per_emotion": json.dumps({str(k): int(v) for k, v in kept.items()})}


def cap_identification(manifest: pd.DataFrame, max_per_emotion: int | None, seed: int
                       ) -> tuple[pd.DataFrame, dict[str, str]]:
    """What capture stores: at most `max_per_emotion` identification clips per emotion, every evaluation clip."""
    return cap_split(manifest, "identification", max_per_emotion, seed)


def evaluation_clips(manifest: pd.DataFrame, max_per_emotion: int | None, seed: int) -> pd.DataFrame:
    """The clips a model job evaluates (intervention, knockout, lens, steering): the evaluation split, at most
    `max_per_emotion` per emotion (`intervention.max_per_emotion`; null = all) drawn as `cap_split` draws, so
    every job of a study evaluates the same clips."""
    capped, _ = cap_split(manifest, "evaluation", max_per_emotion, seed)
    return capped[capped["split"] == "evaluation"]


def load_manifest(corpus_dir: str | Path) -> pd.DataFrame:
    """The manifest with absolute audio paths."""
    corpus_dir = Path(corpus_dir)
    manifest = pd.read_parquet(corpus_dir / "manifest.parquet")
    manifest["path"] = [str(corpus_dir / p) for p in manifest["path"]]
    return manifest
