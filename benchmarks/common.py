"""Shared set-up of the benchmarks: a model (the trained organism, or random weights of a real shape)
and a batch of clips. Benchmarks are run on purpose, never from the test suite."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out"


def timed(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of `fn` (CUDA-synchronised when a GPU is in use)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def clips(n: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Synthetic speech-like clips of the given length (the synthetic corpus' generator)."""
    from esn.corpora.synthetic import make_speakers, synthesize

    rng = np.random.default_rng(seed)
    speakers = make_speakers(8, seed)
    emotions = ["neutral", "happy", "sad", "angry"]
    return [synthesize(emotions[i % 4], speakers[i % 8], rng, (seconds, seconds)) for i in range(n)]


def device_info() -> dict[str, str]:
    info = {"torch": torch.__version__, "threads": str(torch.get_num_threads()), "cpu": platform.processor()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write(name: str, result: dict) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
