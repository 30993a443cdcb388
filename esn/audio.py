"""Decoding, mono mixing, resampling and sanity checks of audio.

soundfile (libsndfile) decodes, soxr resamples; video containers (MELD ships .mp4) go through an
`ffmpeg` executable when one is on PATH. Every check returns a reason string instead of raising so
that preparation can quarantine a bad file and go on.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm"}


class AudioError(Exception):
    """A file that cannot be turned into a usable waveform; the message is the quarantine reason."""


def decode(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Decode a file path or encoded bytes to float32 samples shaped (frames, channels)."""
    if isinstance(source, (bytes, bytearray)):
        handle: object = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise AudioError("missing file")
        if path.stat().st_size == 0:
            raise AudioError("empty file")
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return _decode_with_ffmpeg(path)
        handle = path
    try:
        data, rate = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioError(f"undecodable: {err}") from err
    return data, int(rate)


def _decode_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(f"{path.suffix} needs ffmpeg to extract its audio track; install ffmpeg")
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
           "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AudioError(f"ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
    return np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, 1).copy(), SAMPLE_RATE


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average the channels of a (frames, channels) array."""
    return data.mean(axis=1) if data.ndim == 2 else data


def resample(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono waveform with soxr's high-quality filter (no-op at the target rate)."""
    if rate == target:
        return wave.astype(np.float32, copy=False)
    return soxr.resample(wave, rate, target, quality="HQ").astype(np.float32)


def problem(wave: np.ndarray, rate: int, *, max_duration_s: float, min_duration_s: float = 0.1,
            silence_rms: float = 1e-4) -> str | None:
    """Return why a decoded mono waveform is unusable, or None when it is fine."""
    if wave.size == 0:
        return "no samples"
    if not np.isfinite(wave).all():
        return "NaN or inf samples"
    duration = wave.size / rate
    if duration < min_duration_s:
        return f"too short ({duration:.3f} s < {min_duration_s} s)"
    if duration > max_duration_s:
        return f"too long ({duration:.1f} s > max_duration_s {max_duration_s} s)"
    if float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) < silence_rms:
        return "silent"
    return None


def load_16k_mono(source: str | Path | bytes) -> np.ndarray:
    """Decode, mix to mono and resample to 16 kHz (used on prepared audio and by tests)."""
    data, rate = decode(source)
    return resample(to_mono(data), rate)
