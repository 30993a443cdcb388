"""Bad input, one case per kind: each ends in a clear error naming the file or key, or in a quarantine
row with its reason — and nothing valid is lost.

Audio faults go through one audiofolder corpus (the generic reader, so every kind sits side by side);
corpus-layout faults through their readers; config, model and selector faults through their entry points.
"""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from fixtures.corpora import empty_file, garbage_wav, nan_wav, silent_wav, truncated_wav, wav
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from esn.prepare import PrepareOptions, prepare_corpus

ROOT = Path(__file__).resolve().parents[1]
MAX_S = 5.0


def _inf_wav(path: Path) -> Path:
    data = np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    data[100] = np.inf
    sf.write(path, data, 16_000, subtype="FLOAT")
    return path


def _cut_in_data(path: Path) -> Path:
    """A WAV whose header promises 0.5 s but whose data stops after about 0.25 s (a cut download)."""
    buf = io.BytesIO()
    sf.write(buf, np.sin(np.linspace(0, 400, 8000)).astype(np.float32) * 0.5, 16_000, format="WAV", subtype="PCM_16")
    path.write_bytes(buf.getvalue()[:44 + 8000])
    return path


#: file -> (how it is made, expected outcome: None = kept, else a keyword of the quarantine reason)
AUDIO_CASES = {
    "corrupt.wav": (garbage_wav, "undecodable"),
    "truncated_header.wav": (truncated_wav, "undecodable"),
    "truncated_data.wav": (_cut_in_data, None),
    "empty.wav": (empty_file, "empty file"),
    "silent.wav": (silent_wav, "silent"),
    "nan.wav": (nan_wav, "NaN or inf"),
    "inf.wav": (_inf_wav, "NaN or inf"),
    "stereo.wav": (lambda p: wav(p, seconds=0.6, channels=2, seed=1), None),
    "rate8k.wav": (lambda p: wav(p, seconds=0.6, rate=8_000, seed=2), None),
    "rate22k.wav": (lambda p: wav(p, seconds=0.6, rate=22_050, seed=3), None),
    "rate44k.wav": (lambda p: wav(p, seconds=0.6, rate=44_100, seed=4), None),
    "rate48k.wav": (lambda p: wav(p, seconds=0.6, rate=48_000, seed=5), None),
    "too_long.wav": (lambda p: wav(p, seconds=MAX_S + 1, rate=8_000, seed=6), "too long"),
    "fine.wav": (lambda p: wav(p, seconds=0.6, seed=7), None),
}
#: metadata rows that are bad by themselves: (file_name, label, expected keyword)
ROW_CASES = [
    ("fine2.wav", "joyful", "unknown label"),
    ("not_there.wav", "happy", "missing file"),
    ("../outside.wav", "happy", "escapes"),
    ("fine.wav", "sad", "duplicate"),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    root = base / "corpus"
    root.mkdir()
    rows = []
    for i, (name, (make, _)) in enumerate(AUDIO_CASES.items()):
        make(root / name)
        rows.append({"file_name": name, "emotion": ["happy", "sad"][i % 2], "speaker": f"s{i % 3}"})
    wav(root / "fine2.wav", seconds=0.6, seed=8)
    wav(base / "outside.wav", seconds=0.6, seed=9)
    rows += [{"file_name": f, "emotion": e, "speaker": "s0"} for f, e, _ in ROW_CASES]
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    out = base / "prepared"
    summary = prepare_corpus("bad", "audiofolder", root, out,
                             PrepareOptions(classes=["happy", "sad"], max_duration_s=MAX_S))
    manifest = pd.read_parquet(out / "manifest.parquet")
    quarantine = pd.read_csv(out / "quarantine.csv", keep_default_na=False)  # an utterance may be called "nan"
    return root, out, summary, manifest, quarantine


@pytest.mark.parametrize("name", list(AUDIO_CASES))
def test_audio_fault(prepared, name):
    root, out, _, manifest, quarantine = prepared
    expected = AUDIO_CASES[name][1]
    uid = Path(name).stem
    kept = manifest[manifest["utterance_id"] == uid]
    reasons = quarantine[quarantine["utterance_id"] == uid]["reason"].tolist()
    if expected is None:
        reasons = [r for r in reasons if "duplicate" not in r]  # a later row repeating the id (a row case)
        assert len(kept) == 1 and not reasons, reasons
        data, rate = sf.read(out / kept["path"].iloc[0], always_2d=True)
        assert rate == 16_000 and data.shape[1] == 1 and np.isfinite(data).all()
        source = sf.info(root / name)
        if name != "truncated_data.wav":
            assert abs(len(data) / rate - source.duration) < 0.01
        assert kept["source_rate"].iloc[0] == source.samplerate
    else:
        assert kept.empty and len(reasons) == 1 and expected.lower() in reasons[0].lower(), reasons


@pytest.mark.parametrize("file_name, label, keyword", ROW_CASES)
def test_metadata_row_fault(prepared, file_name, label, keyword):
    _, _, _, manifest, quarantine = prepared
    rows = quarantine[quarantine["reason"].str.contains(keyword, case=False)]
    assert len(rows) == 1, quarantine.to_string()


def test_nothing_valid_is_lost_and_counts_reconcile(prepared):
    _, _, summary, manifest, quarantine = prepared
    valid = {Path(n).stem for n, (_, e) in AUDIO_CASES.items() if e is None}
    assert set(manifest["utterance_id"]) == valid
    assert summary["found"] == len(AUDIO_CASES) + len(ROW_CASES)
    assert summary["kept"] + summary["quarantined"] + sum(summary["excluded_by_class"].values()) == summary["found"]
    assert summary["kept"] == len(valid) and summary["quarantined"] == len(quarantine)


def test_missing_corpus_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_corpus("x", "audiofolder", tmp_path / "nowhere", tmp_path / "o", PrepareOptions(classes=["happy", "sad"]))


def test_unknown_reader_names_it(tmp_path):
    with pytest.raises(ValueError, match="'iemocapp'"):
        prepare_corpus("x", "iemocapp", tmp_path, tmp_path / "o", PrepareOptions(classes=["happy", "sad"]))


def test_unknown_adapter_names_it():
    from esn.models import load_adapter

    with pytest.raises(ValueError, match="'qwen9'"):
        load_adapter({"adapter": "qwen9", "path": "x", "prompt": "p"}, ["happy", "sad"])


def test_unknown_selector_names_it():
    from esn.selectors import get_selector

    with pytest.raises(ValueError, match="'maad'"):
        get_selector("maad")


def _config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c["capture"].update(positons=["audio"]), "positons"),           # mistyped key
    (lambda c: c["intervention"].update(fraction="five percent"), "fraction"),  # wrong type
    (lambda c: c["selection"].update(selectors=["lap", "magic"]), "magic"),     # unknown selector
    (lambda c: c["models"]["organism"].update(adapter="qwen3"), "qwen3"),      # unknown adapter
    (lambda c: c.update(seeds=1), "seeds"),                                    # mistyped top-level key
])
def test_malformed_config_is_refused_naming_the_key(mutate, key):
    cfg = _config()
    mutate(cfg)
    with pytest.raises(WorkflowError, match=key):
        validate(cfg, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))


def test_model_path_without_weights_is_a_clear_error(tmp_path):
    from esn.models import load_adapter

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises((OSError, ValueError)) as err:
        load_adapter({"adapter": "qwen2_5_omni", "path": str(tmp_path), "prompt": "p"}, ["happy", "sad"])
    assert str(tmp_path) in str(err.value) or "safetensors" in str(err.value) or "model_type" in str(err.value)


def test_label_words_sharing_a_first_token_are_refused_by_first_token_scoring(tiny_adapter):
    """First-token scoring cannot tell 'happy' from 'happyish'; whole-label scoring can (it appends the end
    token and records the prefix relation)."""
    from esn.models.base import LabelScorer

    with pytest.raises(ValueError, match="'happy' and 'happyish'|share the first token"):
        LabelScorer(tiny_adapter.tokenizer, ["happy", "happyish"], mode="first_token")
    assert LabelScorer(tiny_adapter.tokenizer, ["happy", "happyish"]).prefix_relations
