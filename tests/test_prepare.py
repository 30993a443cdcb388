"""Preparation: every input file ends kept, quarantined with its reason, or excluded (counted)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from fixtures.corpora import MAX_DURATION_S, make_cremad, make_ravdess

from esn.prepare import PrepareOptions, assign_splits, prepare_corpus


def _outcome_of(corpus, out: Path) -> dict[str, str | None]:
    """Per fixture file (relative path): None when kept, else the quarantine reason."""
    manifest = pd.read_parquet(out / "manifest.parquet")
    quarantine = pd.read_csv(out / "quarantine.csv")
    got: dict[str, str | None] = {}
    for src in manifest["source"]:
        got[Path(src).relative_to(corpus.root).as_posix()] = None
    for src, reason in zip(quarantine["path"], quarantine["reason"]):
        got[Path(src).relative_to(corpus.root).as_posix()] = reason
    return got


@pytest.mark.parametrize("make, reader", [(make_ravdess, "ravdess"), (make_cremad, "cremad")])
def test_native_layout_prepared_with_every_bad_file_quarantined(tmp_path, make, reader):
    corpus = make(tmp_path / "raw")
    out = tmp_path / "prepared"
    summary = prepare_corpus(reader, reader, corpus.root, out,
                             PrepareOptions(classes=list(corpus.classes), max_duration_s=MAX_DURATION_S))
    got = _outcome_of(corpus, out)
    assert set(got) == set(corpus.outcomes), "a file was lost or invented"
    for rel, expected in corpus.outcomes.items():
        if expected is None:
            assert got[rel] is None, f"{rel} should be kept, got {got[rel]!r}"
        else:
            assert got[rel] is not None and expected.lower() in got[rel].lower(), (rel, expected, got[rel])
    assert summary["found"] == corpus.count
    assert summary["kept"] + summary["quarantined"] + sum(summary["excluded_by_class"].values()) == summary["found"]

    manifest = pd.read_parquet(out / "manifest.parquet")
    for row in manifest.itertuples():
        assert row.emotion == corpus.emotions[row.utterance_id]
        assert row.speaker == f"{reader}:{corpus.speakers[row.utterance_id]}"
        data, rate = sf.read(out / row.path, always_2d=True)
        assert rate == 16_000 and data.shape[1] == 1
        assert abs(data.shape[0] / rate - row.duration_s) < 1e-3
    stereo = manifest[manifest["source_channels"] == 2]
    assert len(stereo) == 1 and stereo["source_rate"].iloc[0] == 44_100
    assert {8_000, 44_100, 48_000} <= set(manifest["source_rate"])
    assert json.loads((out / "summary.json").read_text()) == summary


def test_class_subset_excludes_and_counts(tmp_path):
    corpus = make_cremad(tmp_path / "raw")
    summary = prepare_corpus("c", "cremad", corpus.root, tmp_path / "out",
                             PrepareOptions(classes=["angry", "sad"], max_duration_s=MAX_DURATION_S))
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert set(manifest["emotion"]) <= {"angry", "sad"}
    assert summary["excluded_by_class"].get("happy", 0) >= 1 and summary["excluded_by_class"].get("neutral", 0) == 1
    assert summary["kept"] + summary["quarantined"] + sum(summary["excluded_by_class"].values()) == corpus.count


def test_splits_speaker_disjoint_and_deterministic():
    speakers = pd.Series([f"s{i % 10}" for i in range(200)])
    ids = pd.Series([f"u{i}" for i in range(200)])
    a = assign_splits(speakers, ids, 0.3, seed=0)
    assert a.equals(assign_splits(speakers, ids, 0.3, seed=0))
    ev = set(speakers[a == "evaluation"])
    assert ev and ev.isdisjoint(set(speakers[a == "identification"]))
    assert 0.2 <= (a == "evaluation").mean() <= 0.4
    assert not a.equals(assign_splits(speakers, ids, 0.3, seed=1))


def test_synthetic_corpus_deterministic_and_balanced(tmp_path):
    opts = PrepareOptions(classes=["neutral", "happy", "sad", "angry"], evaluation_fraction=0.25,
                          reader_options={"speakers": 4, "per_speaker_emotion": 2, "seed": 3})
    s1 = prepare_corpus("syn", "synthetic", None, tmp_path / "a", opts)
    s2 = prepare_corpus("syn", "synthetic", None, tmp_path / "b", opts)
    m1 = pd.read_parquet(tmp_path / "a" / "manifest.parquet")
    m2 = pd.read_parquet(tmp_path / "b" / "manifest.parquet")
    assert s1 == {**s2, "corpus": "syn"} and m1.drop(columns="source").equals(m2.drop(columns="source"))
    assert s1["per_emotion"] == {e: 8 for e in ["angry", "happy", "neutral", "sad"]}
    a = sf.read(tmp_path / "a" / m1["path"][0])[0]
    b = sf.read(tmp_path / "b" / m2["path"][0])[0]
    assert np.array_equal(a, b)
    prepare_corpus("syn", "synthetic", None, tmp_path / "c",
                   PrepareOptions(classes=opts.classes, reader_options={**opts.reader_options, "seed": 4}))
    c = sf.read(tmp_path / "c" / pd.read_parquet(tmp_path / "c" / "manifest.parquet")["path"][0])[0]
    assert not np.array_equal(a[:1000], c[:1000])


def test_missing_corpus_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_corpus("r", "ravdess", tmp_path / "nope", tmp_path / "out", PrepareOptions(classes=["happy", "sad"]))


def test_unknown_reader_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus reader 'ravdes'"):
        prepare_corpus("r", "ravdes", tmp_path, tmp_path / "out", PrepareOptions(classes=["happy", "sad"]))
