"""How much host preparation (audio loading, feature extraction, tokenisation) the background `Prefetcher` hides
behind the model, in capture, for a cheap (Qwen2.5-Omni: features to the longest clip) and an expensive (Audio
Flamingo 3: every clip padded to 30 s of features) preparation.

    python benchmarks/bench_overlap.py --clips 256 --device-ms 0 100 300   # ~3 min, 2 cores -> benchmarks/out/overlap.json

Tiny random models of the real classes with their real feature extractors and processors; `--device-ms` of
simulated device time per batch (a sleep in the decoder's forward: a GPU's work leaves the host free, as a sleep
does) stands for the 7B model's 0.1-0.3 s per batch on a GPU, which this CPU cannot run. Each setting runs
serially (`overlap=False`) and overlapped; reported: seconds, host preparation seconds, its share hidden.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import soundfile as sf
import torch
from common import clips, device_info, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models_tiny import PROMPT, build_af3, build_omni  # noqa: E402

from esn.capture import capture  # noqa: E402
from esn.models import load_adapter  # noqa: E402

LABELS = ["neutral", "happy", "sad", "angry"]


def corpus(folder: Path, n: int, seconds: float) -> pd.DataFrame:
    """`n` synthetic clips of `seconds` written as 16 kHz wav files, as a manifest."""
    rows = []
    for i, wave in enumerate(clips(n, seconds)):
        path = folder / f"clip{i:03d}.wav"
        sf.write(path, wave, 16000)
        rows.append({"utterance_id": f"u{i:03d}", "path": str(path), "emotion": LABELS[i % 4], "speaker": "s",
                     "corpus": "bench", "split": "identification", "duration_s": seconds})
    return pd.DataFrame(rows)


def run(adapter, manifest, out: Path, overlap: bool, device_s: float, batch_size: int) -> dict:
    def busy(_module, _args):  # the device's time per batch: the host is free meanwhile
        time.sleep(device_s)

    handle = adapter.decoder.register_forward_pre_hook(busy) if device_s > 0 else None
    try:
        t0 = time.perf_counter()
        summary = capture(adapter, manifest, out, groups=["audio", "prompt", "last"], batch_size=batch_size,
                          block_size=len(manifest), overlap=overlap)
        seconds = time.perf_counter() - t0
    finally:
        if handle is not None:
            handle.remove()
    return {"seconds": round(seconds, 2), "host_preparation_s": summary.get("host_preparation_s"),
            "hidden_share": summary.get("host_preparation_hidden")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device-ms", type=float, nargs="*", default=[0.0, 200.0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    result: dict = {**device_info(), "clips": args.clips, "seconds_per_clip": args.seconds,
                    "batch_size": args.batch_size, "torch_threads": 1, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = corpus(tmp, args.clips, args.seconds)
        for family, builder in (("qwen2_5_omni", build_omni), ("audio_flamingo3", build_af3)):
            adapter = load_adapter({"adapter": family, "path": str(builder(tmp / family)), "prompt": PROMPT},
                                   LABELS, "cpu")
            for device_ms in args.device_ms:
                for overlap in (False, True):
                    r = run(adapter, manifest, tmp / f"{family}-{device_ms}-{overlap}.zarr", overlap, device_ms / 1e3,
                            args.batch_size)
                    result["runs"].append({"family": family, "device_ms_per_batch": device_ms, "overlap": overlap, **r})
                    print(result["runs"][-1], flush=True)
    write("overlap", result)


if __name__ == "__main__":
    main()
