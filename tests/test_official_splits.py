"""Official splits: readers that know a corpus' published split put each clip where the corpus says, the
manifest records which rule made the split, and readers without one refuse `split: official`."""

import json
from pathlib import Path

import pandas as pd
import pytest
from fixtures import corpora as fx

from esn.corpora import OFFICIAL_SPLIT_READERS
from esn.corpora.base import OFFICIAL_SPLITS, get_official_split
from esn.prepare import PrepareOptions, prepare_corpus

IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _prepare(tmp_path: Path, reader: str, root: Path, classes: list[str], split: str = "official") -> pd.DataFrame:
    out = tmp_path / "prepared"
    summary = prepare_corpus(reader, reader, root, out, PrepareOptions(classes=classes, split=split))
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert summary["split_rule"] == split and set(manifest["split_rule"]) == {split}
    assert json.loads((out / "summary.json").read_text())["per_split"] == manifest["split"].value_counts().to_dict()
    return manifest.set_index("utterance_id")


def test_iemocap_sessions_one_to_four_identify_session_five_evaluates(tmp_path):
    corpus = fx.make_iemocap(tmp_path)
    release = tmp_path / "corpora" / "IEMOCAP_full_release"
    turns = [("Ses05F_impro02_F000", "sad"), ("Ses05F_impro02_M000", "neu")]
    (release / "Session5" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (release / "Session5" / "dialog" / "EmoEvaluation" / "Ses05F_impro02.txt").write_text(IEMOCAP_HEADER + "".join(
        f"[{1 + 3 * i}.0 - {2 + 3 * i}.0]\tTURN\tCODE\t[2.0, 3.0, 3.0]\n".replace("TURN", u).replace("CODE", c)
        for i, (u, c) in enumerate(turns)))
    for i, (u, _) in enumerate(turns):
        fx.wav(release / "Session5" / "sentences" / "wav" / "Ses05F_impro02" / f"{u}.wav", seed=90 + i)
    m = _prepare(corpus.root, "iemocap", corpus.root, ["neutral", "happy", "sad", "angry"])
    expected = {"Ses01F_impro01_F000": "identification", "Ses02M_script01_1_F000": "identification",
                "Ses02M_script01_1_M000": "identification", "Ses05F_impro02_F000": "evaluation",
                "Ses05F_impro02_M000": "evaluation"}
    assert m["split"].to_dict() == expected
    # the speaker-hash rule on the same corpus: recorded as such, and it does not follow sessions
    hashed = _prepare(tmp_path / "h", "iemocap", corpus.root, ["neutral", "happy", "sad", "angry"], "speaker_hash")
    assert set(hashed.index) == set(expected)


def test_meld_train_and_dev_identify_test_evaluates(tmp_path):
    corpus = fx.make_meld(tmp_path)
    m = _prepare(tmp_path, "meld", corpus.root, ["neutral", "happy", "sad", "angry", "fear", "surprise"])
    # test_dia1_utt0 is an undecodable .mp4 placeholder (quarantined), train_dia1_utt0 has no media
    assert m["split"].to_dict() == {"train_dia0_utt0": "identification", "train_dia0_utt1": "identification",
                                    "dev_dia0_utt0": "identification", "test_dia1_utt1": "evaluation"}


def test_msp_podcast_partitions_from_labels_file(tmp_path):
    corpus = fx.make_msp_podcast(tmp_path)
    folder = tmp_path / "msp" / "MSP-Podcast_v1.11"
    with open(folder / "Labels" / "labels_consensus.csv", "a") as f:  # a row in no partition, one in Test2
        f.write("MSP-PODCAST_0004_0001.wav,N,4.0,4.0,4.0,400,Male,\n"
                "MSP-PODCAST_0005_0001.wav,H,4.0,4.0,4.0,500,Female,Test2\n")
    fx.wav(folder / "Audios" / "MSP-PODCAST_0004_0001.wav", seed=97)
    fx.wav(folder / "Audios" / "MSP-PODCAST_0005_0001.wav", seed=98)
    m = _prepare(tmp_path, "msp_podcast", corpus.root, ["neutral", "happy", "sad", "angry", "contempt"])
    assert m["split"].to_dict() == {
        "MSP-PODCAST_0001_0008": "identification", "MSP-PODCAST_0001_0009": "identification",
        "MSP-PODCAST_0002_0001": "identification", "MSP-PODCAST_0003_0002": "evaluation",
        "MSP-PODCAST_0005_0001": "evaluation"}
    quarantine = pd.read_csv(tmp_path / "prepared" / "quarantine.csv").set_index("utterance_id")["reason"]
    assert "no official split" in quarantine["MSP-PODCAST_0004_0001"]


def test_esd_train_and_evaluation_identify_test_evaluates(tmp_path):
    corpus = fx.make_esd(tmp_path)
    m = _prepare(tmp_path, "esd", corpus.root, ["neutral", "happy", "sad", "angry", "surprise"])
    assert m["split"].to_dict() == {"0001_000351": "identification", "0011_000721": "evaluation",
                                    "0011_001401": "identification"}
    quarantine = pd.read_csv(tmp_path / "prepared" / "quarantine.csv").set_index("utterance_id")["reason"]
    assert all("no official split" in quarantine[u] for u in ("0001_000001", "0011_001051"))  # outside split folders


def test_readers_without_official_split_refuse_it(tmp_path):
    corpus = fx.make_ravdess(tmp_path)
    with pytest.raises(ValueError, match="'ravdess' knows no official split.*iemocap, meld, msp_podcast"):
        prepare_corpus("r", "ravdess", corpus.root, tmp_path / "out",
                       PrepareOptions(classes=["happy", "sad"], split="official"))
    # the speaker hash stays the default, and says so in the manifest
    prepare_corpus("r", "ravdess", corpus.root, tmp_path / "ok", PrepareOptions(classes=["happy", "sad"],
                                                                                 max_duration_s=fx.MAX_DURATION_S))
    assert set(pd.read_parquet(tmp_path / "ok" / "manifest.parquet")["split_rule"]) == {"speaker_hash"}


def test_the_list_of_readers_with_an_official_split_is_the_registry():
    for name in OFFICIAL_SPLIT_READERS:
        get_official_split(name)
    assert set(OFFICIAL_SPLITS) == OFFICIAL_SPLIT_READERS
