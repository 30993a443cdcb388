"""Cue-conflict stimuli (words of one emotion, prosody of another) and which cue a model's answers follow."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from esn.corpora.spoken import EMOTIONAL_SENTENCES
from esn.cue_conflict import answers, summarize
from esn.prepare import PrepareOptions, prepare_corpus
from esn.tables import read_table, write_table

EMOTIONS = ["neutral", "happy", "sad", "angry"]
OPTIONS = {"speakers": 2, "per_speaker_emotion": 1, "content": "conflict", "voices": ["en-us"]}


def prepare(out, seed: int = 0) -> pd.DataFrame:
    prepare_corpus("conflict", "spoken", None, out, PrepareOptions(EMOTIONS, seed=seed,
                                                                   reader_options={**OPTIONS, "seed": seed}))
    manifest = pd.read_parquet(out / "manifest.parquet")
    manifest.attrs["dir"] = out
    return manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> pd.DataFrame:
    return prepare(tmp_path_factory.mktemp("conflict"))


def test_every_lexical_prosodic_pair_is_spoken_by_every_speaker_with_both_labels(manifest) -> None:
    pairs = set(itertools.product(EMOTIONS, EMOTIONS))
    assert len(manifest) == 2 * len(pairs) and manifest["lexical_emotion"].notna().all()
    for _, clips in manifest.groupby("speaker"):
        assert set(zip(clips["lexical_emotion"], clips["emotion"])) == pairs  # congruent cells included
    assert (manifest["lexical_emotion"] == manifest["emotion"]).sum() == 2 * len(EMOTIONS)
    assert (manifest["emotion"] == manifest["raw_label"]).all(), "emotion is the prosodic label"


def test_the_words_say_the_lexical_emotion_and_only_prosody_varies_within_a_row(manifest) -> None:
    for row in manifest.itertuples():
        assert row.text in EMOTIONAL_SENTENCES[row.lexical_emotion]
    by_row = manifest.groupby(["speaker", "lexical_emotion"])["text"].nunique()
    assert (by_row == 1).all(), "one sentence per (speaker, lexical emotion), heard with every prosody"
    assert len(set().union(*map(set, EMOTIONAL_SENTENCES.values()))) == sum(map(len, EMOTIONAL_SENTENCES.values()))
    # the prosody is really rendered: the same words with sad prosody last longer than with angry prosody
    row = manifest[manifest["lexical_emotion"] == "happy"].set_index(["speaker", "emotion"])["duration_s"]
    assert all(row[(s, "sad")] > row[(s, "angry")] for s in manifest["speaker"].unique())


def test_the_corpus_is_the_same_for_the_same_seed(tmp_path, manifest) -> None:
    again = prepare(tmp_path / "again")
    columns = ["utterance_id", "emotion", "lexical_emotion", "text", "speaker", "duration_s"]
    pd.testing.assert_frame_equal(again[columns], manifest[columns])
    for clip in manifest["path"].iloc[[0, 5, 31]]:
        assert np.array_equal(sf.read(again.attrs["dir"] / clip)[0], sf.read(manifest.attrs["dir"] / clip)[0])
    other = prepare(tmp_path / "other", seed=1)
    assert not other[columns].equals(manifest[columns])


def test_a_neutral_content_corpus_has_no_cue_columns(tmp_path) -> None:
    prepare_corpus("plain", "spoken", None, tmp_path, PrepareOptions(
        ["neutral", "sad"], reader_options={"speakers": 2, "per_speaker_emotion": 1, "voices": ["en-us"]}))
    assert "lexical_emotion" not in pd.read_parquet(tmp_path / "manifest.parquet")


def hand_table() -> pd.DataFrame:
    """Two speakers; cells (happy words, sad prosody), (sad, sad) and (angry, sad) with known answers."""
    rows = [  # speaker, lexical, prosodic, predicted
        ("a", "happy", "sad", "sad"), ("a", "happy", "sad", "happy"), ("a", "happy", "sad", "angry"),
        ("b", "happy", "sad", "sad"), ("b", "happy", "sad", "sad"),
        ("a", "sad", "sad", "sad"), ("b", "sad", "sad", "neutral"),
        ("a", "angry", "sad", "happy"), ("b", "angry", "sad", "sad"),
    ]
    return pd.DataFrame({"utterance_id": [f"u{i}" for i in range(len(rows))], "speaker": [r[0] for r in rows],
                         "lexical_emotion": [r[1] for r in rows], "emotion": [r[2] for r in rows],
                         "text": "", "predicted": [r[3] for r in rows]})


def test_the_shares_are_a_hand_count() -> None:
    summary = summarize(hand_table(), n_boot=200, seed=0).set_index(["scope", "lexical_emotion", "prosodic_emotion",
                                                                      "cue"])
    cell = summary.loc[("cell", "happy", "sad")]
    assert cell.loc["prosody", "share"] == pytest.approx(3 / 5)
    assert cell.loc["words", "share"] == pytest.approx(1 / 5)
    assert cell.loc["neither", "share"] == pytest.approx(1 / 5)
    assert cell.loc["prosody", "clips"] == 5 and cell.loc["prosody", "speakers"] == 2
    congruent = summary.loc[("cell", "sad", "sad")]
    assert congruent.loc["prosody", "share"] == congruent.loc["words", "share"] == pytest.approx(1 / 2)
    # words by chance: how often "happy" is answered to sad prosody when the words say a third emotion (angry)
    assert cell.loc["words_by_chance", "share"] == pytest.approx(1 / 2)
    assert summary.loc[("cell", "angry", "sad", "words_by_chance"), "share"] == pytest.approx(1 / 5)
    assert ("cell", "sad", "sad", "words_by_chance") not in summary.index  # cues agree: no chance level
    assert summary.loc[("incongruent", "all", "all", "prosody"), "share"] == pytest.approx(4 / 7)
    assert summary.loc[("incongruent", "all", "all", "words"), "share"] == pytest.approx(1 / 7)
    assert summary.loc[("incongruent", "all", "all", "words_by_chance"), "share"] == pytest.approx(
        (5 * 1 / 2 + 2 * 1 / 5) / 7)
    assert summary.loc[("congruent", "all", "all", "neither"), "share"] == pytest.approx(1 / 2)
    # speaker-level intervals: speaker a follows prosody 1/3, speaker b 2/2; resamples lie between
    lo, hi = cell.loc["prosody", ["lo", "hi"]]
    assert 1 / 3 <= lo <= 3 / 5 <= hi <= 1 and lo < hi
    assert (summary["bootstrap_unit"] == "speaker").all()


def test_answers_join_both_labels_and_round_trip_through_the_contract(tmp_path) -> None:
    hand = hand_table()
    table = hand.drop(columns=["lexical_emotion", "text"]).assign(mode="none", p_sad=0.5)
    table = pd.concat([table, table.assign(mode="deactivate")], ignore_index=True)
    manifest = hand[["utterance_id", "lexical_emotion"]].assign(text="some words")
    clips = answers(table, manifest)
    assert len(clips) == len(hand) and (clips["lexical_emotion"] == hand["lexical_emotion"]).all()
    write_table(clips, tmp_path / "a.parquet", "cue_conflict")
    pd.testing.assert_frame_equal(read_table(tmp_path / "a.parquet", "cue_conflict"), clips.reset_index(drop=True),
                                  check_dtype=False)
    summary = summarize(clips, n_boot=20)
    write_table(summary, tmp_path / "s.csv", "cue_conflict_summary")
    back = read_table(tmp_path / "s.csv", "cue_conflict_summary")
    assert np.allclose(back["share"], summary["share"])
    with pytest.raises(ValueError, match="content: conflict"):
        answers(table, manifest.drop(columns=["lexical_emotion"]))


def test_the_figure_draws_both_matrices(tmp_path) -> None:
    from esn.figures import plot_cue_conflict

    out = [tmp_path / "cue.png", tmp_path / "cue.pdf"]
    plot_cue_conflict(summarize(hand_table(), n_boot=20), out, title="hand")
    assert all(p.stat().st_size > 5000 for p in out)

