"""Every corpus reader on a tiny generated copy of its native layout (tests/fixtures/corpora.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from esn.corpora.base import Candidate, get_reader
from esn.emotions import EMOTIONS
from fixtures import corpora as fx  # tests/ is on sys.path (pytest rootdir-less test modules)

FILE_READERS = {
    "ravdess": fx.make_ravdess, "cremad": fx.make_cremad, "tess": fx.make_tess, "savee": fx.make_savee,
    "iemocap": fx.make_iemocap, "meld": fx.make_meld, "msp_podcast": fx.make_msp_podcast, "esd": fx.make_esd,
    "audiofolder": fx.make_audiofolder,
}
OPTIONS: dict[str, dict[str, object]] = {"audiofolder": {"label_map": {"joy": "happy"}}}


def read(name: str, root: Path | str, **options: object) -> list[Candidate]:
    return list(get_reader(name)(root, **options))


def check_against(cands: list[Candidate], expected: fx.FixtureCorpus) -> None:
    """The exact contract: counts, labels, speakers, problems, missing sources, extras, id rules."""
    assert len(cands) == expected.count
    assert {c.utterance_id: c.emotion for c in cands} == expected.emotions
    assert {c.utterance_id: c.speaker for c in cands} == expected.speakers
    flagged = {c.utterance_id: c.problem for c in cands if c.problem is not None}
    assert set(flagged) == set(expected.problems)
    for utterance_id, reason in expected.problems.items():
        assert reason in flagged[utterance_id], (utterance_id, flagged[utterance_id])
    for c in cands:
        assert c.emotion is None or c.emotion in EMOTIONS
        assert (c.emotion is None) == (c.problem is not None) or c.utterance_id in expected.missing
        assert c.raw_label is not None or c.problem is not None
        if c.utterance_id in expected.missing:
            assert c.source is None
        elif isinstance(c.source, Path):
            assert c.source.is_file() and c.source.resolve().is_relative_to(Path(expected.root).resolve())
        else:
            assert isinstance(c.source, bytes) and c.source[:4] == b"RIFF"
    by_id = {c.utterance_id: c for c in cands}
    for utterance_id, extra in expected.extra.items():
        assert {k: by_id[utterance_id].extra.get(k) for k in extra} == extra, utterance_id


@pytest.mark.parametrize("name", sorted(FILE_READERS))
def test_reader_matches_fixture(name: str, tmp_path: Path) -> None:
    expected = FILE_READERS[name](tmp_path)
    cands = read(name, expected.root, **OPTIONS.get(name, {}))
    check_against(cands, expected)
    assert cands == read(name, expected.root, **OPTIONS.get(name, {})), "two reads differ"


@pytest.mark.parametrize("name", sorted(FILE_READERS))
def test_reader_ids_unique_without_duplicates(name: str, tmp_path: Path) -> None:
    expected = FILE_READERS[name](tmp_path)
    dup_files = [k for k, v in expected.outcomes.items() if v == "duplicate"]
    ids = [c.utterance_id for c in read(name, expected.root, **OPTIONS.get(name, {}))]
    assert len(ids) - len(set(ids)) == len(dup_files)


@pytest.mark.parametrize("name", sorted(FILE_READERS) + ["hub"])
def test_missing_root_raises(name: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read(name, tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["ravdess", "cremad"])
def test_fault_fixture_outcomes_cover_every_file(name: str, tmp_path: Path) -> None:
    """The preparation expectation table names each generated audio file once, duplicate after original."""
    expected = FILE_READERS[name](tmp_path)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.wav"))
    assert sorted(expected.outcomes) == files
    order = [c.source.relative_to(tmp_path).as_posix() for c in read(name, expected.root)]  # type: ignore[union-attr]
    for path, outcome in expected.outcomes.items():
        if outcome == "duplicate":
            first = next(p for p in order if Path(p).name == Path(path).name)
            assert order.index(first) < order.index(path) and expected.outcomes[first] is None
    keywords = {"undecodable", "empty", "silent", "NaN", "too long", "duplicate", "unknown label", "unparseable"}
    assert {o for o in expected.outcomes.values() if o} == keywords


def test_fault_fixture_audio_is_what_it_claims(tmp_path: Path) -> None:
    """Decode each RAVDESS fixture file with esn.audio and check the fault it stands for is really there."""
    from esn import audio

    expected = fx.make_ravdess(tmp_path)
    for rel, outcome in expected.outcomes.items():
        path = tmp_path / rel
        try:
            data, rate = audio.decode(path)
        except audio.AudioError as err:
            assert outcome in ("undecodable", "empty") and outcome in str(err), (rel, err)
            continue
        reason = audio.problem(audio.to_mono(data), rate, max_duration_s=fx.MAX_DURATION_S)
        if outcome in ("silent", "NaN", "too long"):
            assert reason is not None and outcome in reason, (rel, reason)
        else:
            assert reason is None, (rel, reason)
    rates = set()
    for rel, outcome in expected.outcomes.items():
        if outcome not in ("undecodable", "empty"):
            info = sf.info(str(tmp_path / rel))
            rates.add(info.samplerate)
            assert info.channels == (2 if info.samplerate == 44_100 else 1)
    assert rates == {8_000, 16_000, 44_100, 48_000}


def test_ravdess_keeps_song_channel_and_gender(tmp_path: Path) -> None:
    expected = fx.make_ravdess(tmp_path)
    by_id = {c.utterance_id: c for c in read("ravdess", expected.root)}
    assert by_id["03-02-03-01-01-01-02"].extra["channel"] == "song"
    assert by_id["03-01-01-01-01-01-01"].raw_label == "01"
    assert by_id["03-01-04-01-01-01-02"].extra["gender"] == "F"


def test_cremad_gender_only_where_demographics_know_it(tmp_path: Path) -> None:
    expected = fx.make_cremad(tmp_path)
    by_id = {c.utterance_id: c for c in read("cremad", expected.root)}
    assert by_id["1001_DFA_HAP_XX"].extra["gender"] == "M"
    assert "gender" not in by_id["1003_MTI_SAD_XX"].extra


def test_iemocap_merge_excited(tmp_path: Path) -> None:
    expected = fx.make_iemocap(tmp_path)
    by_id = {c.utterance_id: c for c in read("iemocap", expected.root, merge_excited=True)}
    assert by_id["Ses01F_impro01_M001"].emotion == "happy"
    assert by_id["Ses01F_impro01_M001"].raw_label == "exc"
    assert by_id["Ses01F_impro01_M000"].emotion == "frustrated"
    assert by_id["Ses01F_impro01_M000"].source == (
        tmp_path / "corpora/IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav")


def test_meld_prefers_wav_and_keeps_splits_apart(tmp_path: Path) -> None:
    expected = fx.make_meld(tmp_path)
    by_id = {c.utterance_id: c for c in read("meld", expected.root)}
    raw = tmp_path / "data" / "MELD.Raw"
    assert by_id["train_dia0_utt0"].source == raw / "train_splits" / "dia0_utt0.wav"
    assert by_id["dev_dia0_utt0"].source == raw / "dev_splits_complete" / "dia0_utt0.wav"
    assert by_id["test_dia1_utt0"].source == raw / "output_repeated_splits_test" / "final_videos_testdia1_utt0.mp4"


def test_msp_podcast_finds_audio_outside_audios_folder(tmp_path: Path) -> None:
    expected = fx.make_msp_podcast(tmp_path)
    by_id = {c.utterance_id: c for c in read("msp_podcast", expected.root)}
    assert by_id["MSP-PODCAST_0003_0002"].source.parent.name == "Audio_part2"  # type: ignore[union-attr]


def test_audiofolder_label_map_and_columns(tmp_path: Path) -> None:
    expected = fx.make_audiofolder(tmp_path)
    by_id = {c.utterance_id: c for c in read("audiofolder", expected.root)}
    assert by_id["clips__b"].emotion is None
    assert "unknown label code 'joy'" in str(by_id["clips__b"].problem)
    with pytest.raises(ValueError, match="no label column 'mood'"):
        read("audiofolder", expected.root, label_column="mood")
    with pytest.raises(ValueError, match="unknown emotion"):
        read("audiofolder", expected.root, label_map={"joy": "joyful"})
    renamed = {c.utterance_id: c.speaker for c in read("audiofolder", expected.root, speaker_column="note",
                                                        label_map={"joy": "happy"})}
    assert renamed["clips__a"] == "first" and renamed["clips__c"] is None


def test_audiofolder_without_metadata_raises(tmp_path: Path) -> None:
    fx.wav(tmp_path / "x" / "a.wav")
    with pytest.raises(FileNotFoundError, match="metadata"):
        read("audiofolder", tmp_path)


# --- hub ---------------------------------------------------------------------------------------------


def test_hub_local_dataset(tmp_path: Path) -> None:
    expected = fx.make_hub(tmp_path)
    options = {"label_map": {"joy": "happy"}, "speaker_column": "speaker"}
    cands = read("hub", expected.root, **options)
    check_against(cands, expected)
    assert cands == read("hub", str(expected.root), **options)
    assert [c.raw_label for c in cands] == ["neutral", "joy", "-1"]
    test = read("hub", expected.root, split="test", id_column="clip", **options)
    assert [(c.utterance_id, c.emotion, c.speaker) for c in test] == [("a", "angry", "spk3")]


def test_hub_decodes_nothing_and_bytes_are_wav(tmp_path: Path) -> None:
    from esn import audio

    expected = fx.make_hub(tmp_path)
    first = read("hub", expected.root, label_map={"joy": "happy"})[1]
    assert isinstance(first.source, bytes)
    assert audio.decode(first.source)[1] == 8_000


def test_hub_unknown_split_or_column(tmp_path: Path) -> None:
    expected = fx.make_hub(tmp_path)
    with pytest.raises(RuntimeError, match="split 'validation'"):
        read("hub", expected.root, split="validation")
    with pytest.raises(ValueError, match="no column 'label'"):
        read("hub", expected.root, label_column="label")


def test_hub_offline_unknown_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match=r"could not load hub dataset 'nobody-esn/made-up-corpus'.*online"):
        read("hub", "nobody-esn/made-up-corpus")
