"""espeak-ng speech (`esn.speech`, PyPI espeakng-loader) and the spoken emotional-prosody corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from esn.corpora.base import Candidate, get_reader
from esn.corpora.spoken import VARIANTS, VOICES
from esn.speech import RATE, speak

SENTENCE = "Please put the blue folder on the table by the window."


def f0_median(wave: np.ndarray, rate: int = RATE) -> float:
    """Median F0 (Hz) over voiced 40-ms frames, by autocorrelation peak in 60-400 Hz (a measurement, not a model)."""
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    lags = np.arange(rate // 400, rate // 60)
    level = np.sqrt(np.mean(wave ** 2))
    found = []
    for start in range(0, len(wave) - frame, hop):
        x = wave[start:start + frame] - wave[start:start + frame].mean()
        if np.sqrt(np.mean(x ** 2)) < 0.5 * level:
            continue
        ac = np.correlate(x, x, "full")[frame - 1:]
        peak = lags[np.argmax(ac[lags])]
        if ac[peak] > 0.5 * ac[0]:
            found.append(rate / peak)
    return float(np.median(found))


def active_seconds(wave: np.ndarray, rate: int = RATE) -> float:
    """Seconds from the first to the last 10-ms frame above 5 % of the peak frame energy."""
    frames = wave[: len(wave) // 160 * 160].reshape(-1, 160)
    energy = np.sqrt(np.mean(frames ** 2, axis=1))
    on = np.flatnonzero(energy > 0.05 * energy.max())
    return (on[-1] - on[0] + 1) * 160 / rate


def rms_db(wave: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(wave ** 2)) + 1e-12))


def test_speak_returns_16k_float_mono_with_its_prosody() -> None:
    plain = speak(SENTENCE)
    assert plain.dtype == np.float32 and plain.ndim == 1 and 1.5 < len(plain) / RATE < 6
    assert np.array_equal(plain, speak(SENTENCE)), "espeak-ng is deterministic"
    assert f0_median(speak(SENTENCE, pitch=85)) > 1.2 * f0_median(speak(SENTENCE, pitch=15))
    assert active_seconds(speak(SENTENCE, rate=110)) > 1.8 * active_seconds(speak(SENTENCE, rate=260))
    assert rms_db(speak(SENTENCE, volume=160)) - rms_db(speak(SENTENCE, volume=40)) > 6
    assert f0_median(speak(SENTENCE, variant="f3")) > 1.3 * f0_median(speak(SENTENCE, variant="m1"))
    with pytest.raises(ValueError, match="no voice 'xx-nowhere'"):
        speak(SENTENCE, "xx-nowhere")


def read(**options: object) -> list[Candidate]:
    return list(get_reader("spoken")(None, **options))


def test_corpus_is_deterministic_with_the_requested_shape() -> None:
    options = dict(speakers=3, per_speaker_emotion=2, seed=5, emotions=["neutral", "happy", "sad", "angry"])
    first, second = read(**options), read(**options)
    assert len(first) == 3 * 4 * 2
    assert len({c.utterance_id for c in first}) == len(first)
    assert {c.emotion for c in first} == {"neutral", "happy", "sad", "angry"}
    assert sorted({c.speaker for c in first}) == ["spk00", "spk01", "spk02"]
    assert len({(c.extra["voice"], c.extra["variant"]) for c in first}) == 3, "each speaker is its own voice"
    from esn.speech import LIMITS

    for c in first:  # what espeak-ng was given, recorded per clip, inside its ranges
        assert all(LIMITS[k][0] <= c.extra[k] <= LIMITS[k][1] for k in LIMITS)
    for a, b in zip(first, second):
        assert a.utterance_id == b.utterance_id and a.extra == b.extra
        assert a.source[1] == RATE and np.array_equal(a.source[0], b.source[0])
    other = read(**{**options, "seed": 6})
    def voices(cands: list[Candidate]) -> list[str]:
        return [c.extra["voice"] + "+" + c.extra["variant"] for c in cands]

    assert voices(other) != voices(first), "another seed, other speakers"


def test_emotions_differ_in_measured_prosody() -> None:
    """Same speakers, each emotion's clips measured from the audio: F0, speaking rate and loudness."""
    cands = read(speakers=4, per_speaker_emotion=3, seed=1)
    measured: dict[str, dict[str, list[float]]] = {}
    for c in cands:
        wave = c.source[0]
        m = measured.setdefault(c.emotion, {"f0": [], "rate": [], "db": []})
        m["f0"].append(f0_median(wave))
        m["rate"].append(len(c.extra["text"].split()) / active_seconds(wave))
        m["db"].append(rms_db(wave))
    med = {e: {k: float(np.median(v)) for k, v in m.items()} for e, m in measured.items()}
    print({e: {k: round(v, 2) for k, v in m.items()} for e, m in med.items()})
    assert med["happy"]["f0"] > 1.1 * med["neutral"]["f0"] > 1.1 * med["sad"]["f0"]
    assert med["angry"]["rate"] > 1.1 * med["neutral"]["rate"] > 1.2 * med["sad"]["rate"]
    assert med["angry"]["db"] > med["neutral"]["db"] + 3 > med["sad"]["db"] + 6


def test_intensity_zero_is_neutral_prosody_and_telephone_is_band_limited() -> None:
    weak = read(speakers=2, per_speaker_emotion=2, seed=3, emotions=["neutral", "happy"], intensity=(0.0, 0.0))
    full = read(speakers=2, per_speaker_emotion=2, seed=3, emotions=["neutral", "happy"])
    f0 = {(tag, c.emotion): [] for tag in ("weak", "full") for c in full}
    for tag, cands in (("weak", weak), ("full", full)):
        for c in cands:
            f0[tag, c.emotion].append(f0_median(c.source[0]))
    assert np.median(f0["weak", "happy"]) < 1.05 * np.median(f0["weak", "neutral"])
    assert np.median(f0["full", "happy"]) > 1.15 * np.median(f0["full", "neutral"])

    phone = read(speakers=1, per_speaker_emotion=1, seed=3, emotions=["neutral"], channel="telephone")[0]
    studio = read(speakers=1, per_speaker_emotion=1, seed=3, emotions=["neutral"])[0]
    assert phone.extra["text"] == studio.extra["text"]

    def high_band_share(wave: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(wave)) ** 2
        freqs = np.fft.rfftfreq(len(wave), 1 / RATE)
        return power[freqs > 4000].sum() / power.sum()

    assert high_band_share(phone.source[0]) < 0.25 * high_band_share(studio.source[0])  # measured 0.13
    with pytest.raises(ValueError, match="unknown channel"):
        read(speakers=1, channel="radio")
    with pytest.raises(ValueError, match="only 2 voice × variant pairs"):
        read(speakers=3, voices=["en-us"], variants=["m1", "f1"])


def test_prepare_writes_the_spoken_corpus(tmp_path: Path) -> None:
    import pandas as pd

    from esn.prepare import PrepareOptions, prepare_corpus

    prepare_corpus("spoken", "spoken", None, tmp_path / "spoken",
                   PrepareOptions(classes=["neutral", "sad"], seed=0,
                                  reader_options={"speakers": 3, "per_speaker_emotion": 1,
                                                  "emotions": ["neutral", "sad"]}))
    manifest = pd.read_parquet(tmp_path / "spoken" / "manifest.parquet")
    assert len(manifest) == 6 and set(manifest.emotion) == {"neutral", "sad"}
    assert set(manifest.split) == {"identification", "evaluation"}
    assert (manifest.sample_rate == RATE).all() and (manifest.duration_s > 1.0).all()


def test_config_accepts_the_spoken_reader_and_the_workflow_seeds_it() -> None:
    import yaml
    from snakemake.utils import validate

    from esn.corpora import BUILTIN_READERS, GENERATED_READERS

    root = Path(__file__).resolve().parents[1]
    schema = root / "workflow" / "schemas" / "config.schema.yaml"
    cfg = yaml.safe_load((root / "config" / "config.yaml").read_text())
    cfg["corpora"]["spoken"] = {"reader": "spoken", "options": {"speakers": 32, "intensity": [0.3, 1.0]}}
    validate(cfg, str(schema))
    corpus = yaml.safe_load(schema.read_text())["properties"]["corpora"]["additionalProperties"]
    enum = corpus["properties"]["reader"]["enum"]
    assert set(enum) == set(BUILTIN_READERS) and "spoken" in GENERATED_READERS
    assert cfg["corpora"]["synthetic"]["reader"] == "spoken", "the default corpora are spoken"


def test_clips_are_the_same_in_a_fresh_process() -> None:
    """espeak-ng keeps state between utterances and seeds its noise from the clock; neither may show."""
    import hashlib
    import subprocess
    import sys

    code = ("import hashlib\n"
            "from esn.corpora.spoken import VOICES, VARIANTS, read_spoken\n"
            "from esn.speech import speak\n"
            "h = hashlib.sha256()\n"
            "for c in read_spoken(speakers=2, per_speaker_emotion=1, seed=9): h.update(c.source[0].tobytes())\n"
            "for v in VOICES:\n"
            "    for w in VARIANTS: h.update(speak('The ferry crosses the lake.', v, w).tobytes())\n"
            "print(h.hexdigest())")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    speak("Something else entirely, said first in this process.", pitch=90, rate=300)
    here = hashlib.sha256()
    for c in read(speakers=2, per_speaker_emotion=1, seed=9):
        here.update(c.source[0].tobytes())
    for voice in VOICES:
        for variant in VARIANTS:
            here.update(speak("The ferry crosses the lake.", voice, variant).tobytes())
    assert here.hexdigest() == fresh
