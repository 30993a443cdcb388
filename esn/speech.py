"""Speech synthesis with espeak-ng, from the PyPI wheel `espeakng-loader` (library and data inside; no system package).

The shared library is loaded with ctypes and initialised once per process with the wheel's data folder;
`speak` synthesises into memory through the synth callback (synchronous mode, nothing is played; in a
forked child per utterance, so that the output does not depend on what was spoken before) and
returns float32 mono at 16 kHz (espeak-ng renders at 22 050 Hz; resampled with soxr). Prosody is set
with espeak-ng's own parameters: pitch level and range (0-100), rate (words per minute), volume
(amplitude, 0-200) and the pause between words; the voice (`en-us`, `en-gb-x-rp`, ...) and its variant
(`m3`, `f2`, ...) make the speaker.
Licence: espeak-ng is GPL-3.0-or-later, loaded at run time from the wheel, not redistributed here.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import struct
import threading
from pathlib import Path

import numpy as np
import soxr

RATE = 16_000
RANDOM_SEED = 16_000  # espeak-ng's random generators start from this for every utterance

# espeak-ng's speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Engine:
    """The process-wide espeak-ng instance (its state is global, so calls are serialised)."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("espeakng_loader")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError("the PyPI package espeakng-loader is not installed (`make install` does)")
        root = Path(list(spec.submodule_search_locations)[0])
        library = next((p for p in sorted(root.glob("*espeak-ng*")) if p.suffix in (".so", ".dylib", ".dll")), None)
        if library is None or not (root / "espeak-ng-data").is_dir():
            raise FileNotFoundError(f"espeakng-loader at {root} lacks the espeak-ng library or its data")
        self.lib = ctypes.CDLL(str(library))
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(root).encode(), 0)
        if self.rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {root} (returned {self.rate})")
        self.chunks: list[np.ndarray] = []
        self.callback = _CALLBACK(self._collect)  # kept referenced: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self.callback)
        self.lock = threading.Lock()

    def _seed(self) -> None:
        """Fix both random generators espeak-ng draws from (its own, seeded from the clock at
        initialisation, and the C library's `rand`, for the breathiness noise of some variants)."""
        self.lib.espeak_ng_SetRandSeed(RANDOM_SEED)
        ctypes.CDLL(None).srand(RANDOM_SEED)

    def _collect(self, wav, count, events) -> int:
        if count > 0 and wav:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def synth(self, text: str, voice: str, params: dict[int, int]) -> np.ndarray:
        """Synthesise in a forked child, so that every utterance starts from the freshly initialised state.

        espeak-ng carries wave-generator state from one utterance to the next (measured here: the same
        text came out 41 435, 41 291, 41 297 ... samples long on successive calls, and neither
        `espeak_ng_SetRandSeed`, `srand` nor re-initialising reset it); this process never synthesises, so
        each child starts alike, seeds espeak-ng's random generators (`_seed`), and the output is a
        function of (text, voice, settings) only.
        """
        with self.lock:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: synthesise, send status + samples, leave without running any cleanup
                status = 1
                try:
                    os.close(read_end)
                    self._seed()
                    if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                        status = 2
                    else:
                        for key, value in params.items():  # after the voice: choosing a voice resets them
                            self.lib.espeak_SetParameter(key, int(value), 0)
                        data = text.encode("utf-8") + b"\0"
                        status = 3 if self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                                            None, None) != 0 else 0
                    samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
                    with os.fdopen(write_end, "wb") as pipe:
                        pipe.write(struct.pack("<i", status) + samples.astype("<i2").tobytes())
                finally:
                    os._exit(0)
            os.close(write_end)
            with os.fdopen(read_end, "rb") as pipe:
                payload = pipe.read()
            os.waitpid(pid, 0)
        if len(payload) < 4:
            raise RuntimeError(f"espeak-ng's synthesis process died on {text!r}")
        status = struct.unpack("<i", payload[:4])[0]
        if status == 2:
            raise ValueError(f"espeak-ng has no voice {voice!r} (voice[+variant], e.g. 'en-us+f3')")
        if status != 0:
            raise RuntimeError(f"espeak-ng could not synthesise {text!r} (status {status})")
        return np.frombuffer(payload[4:], dtype="<i2")


_engine: _Engine | None = None


def engine() -> _Engine:
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


#: espeak-ng's ranges of the prosody settings `speak` takes.
LIMITS: dict[str, tuple[int, int]] = {"pitch": (0, 100), "pitch_range": (0, 100), "rate": (80, 450),
                                      "volume": (0, 200), "word_gap": (0, 1000)}


def clip_settings(settings: dict[str, float]) -> dict[str, int]:
    """Prosody settings rounded and clipped to espeak-ng's ranges (what it is actually given)."""
    return {key: int(np.clip(round(value), *LIMITS[key])) for key, value in settings.items()}


def speak(text: str, voice: str = "en-us", variant: str | None = None, *, pitch: float = 50, pitch_range: float = 50,
          rate: float = 175, volume: float = 100, word_gap: float = 0) -> np.ndarray:
    """`text` spoken by espeak-ng as float32 mono samples at 16 kHz.

    `pitch`, `pitch_range`: 0-100 (espeak-ng's default 50, relative to the voice); `rate`: words per
    minute (80-450); `volume`: amplitude 0-200 (100 = normal); `word_gap`: extra pause between words in
    units of 10 ms. Values are clipped to espeak-ng's ranges.
    """
    settings = clip_settings({"pitch": pitch, "pitch_range": pitch_range, "rate": rate, "volume": volume,
                              "word_gap": word_gap})
    params = {_PITCH: settings["pitch"], _RANGE: settings["pitch_range"], _RATE: settings["rate"],
              _VOLUME: settings["volume"], _WORDGAP: settings["word_gap"]}
    eng = engine()
    samples = eng.synth(text, voice + (f"+{variant}" if variant else ""), params)
    wave = samples.astype(np.float32) / 32768.0
    return soxr.resample(wave, eng.rate, RATE).astype(np.float32)
