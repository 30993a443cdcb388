"""Everything about the 7B paths that needs a GPU, in one run that writes one JSON.

    python benchmarks/gpu_check.py --shape omni7b        # one H100/H200, < 8 min (benchmarks/gpu_check.sh)
    python benchmarks/gpu_check.py --shape tiny          # the same checks at a reduced shape on CPU (< 2 min)

Random weights of the Qwen2.5-Omni-7B thinker (28 x 18944, hidden 3584, its 32-layer audio tower; tiny
vision tower, unused), built on the meta device. Checks, each with its goal:
  capture     reducing hooks + one host copy vs a plain scoring forward            goal <= 1.05x
  sweep       per (utterance, condition): batched conditions vs decoder-only        goal <= 1.1x
              one full forward per condition vs batched                             goal >= 1.5x
              `generate(8 tokens)` per condition vs batched                         goal >= 2.5x
  oom         capture with attribution on a batch too big for the card: `split_on_oom` halves until it fits,
              and the statistics equal those of a batch that fits (CPU: a simulated OOM)
  batching    bf16 label probabilities of a padded batch vs each clip alone         |dp| <= 0.02, same argmax
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch
from bench_interventions import random_conditions, sweep_costs
from common import SHAPES, clips, device_info, random_thinker, thinker_config, timed, write
from transformers import WhisperFeatureExtractor

from esn.batching import split_on_oom
from esn.capture import _concat, batch_statistics
from esn.models.qwen_omni import QwenOmniAdapter
from esn.organism import build_tokenizer

LABELS = ["neutral", "happy", "sad", "angry"]
PROMPT = "What emotion does the speaker express? Answer with one word."
GROUPS = ["audio", "prompt", "last"]
#: per shape: clips x seconds for timing, conditions, rows per forward, and the OOM batch (clips x seconds)
RUN = {"omni7b": dict(clips=16, seconds=5.0, conditions=16, max_rows=256, oom_clips=64, oom_seconds=20.0),
       "tiny": dict(clips=8, seconds=2.0, conditions=8, max_rows=64, oom_clips=8, oom_seconds=2.0)}
BATCHING_TOLERANCE = 0.02


def build(shape: str, device: str, dtype: torch.dtype) -> QwenOmniAdapter:
    tok = build_tokenizer(PROMPT, 400)
    config = thinker_config(tok, SHAPES[shape], vocab_size=152064 if shape == "omni7b" else len(tok))
    model = random_thinker(config, device, dtype)
    return QwenOmniAdapter(model, tok, WhisperFeatureExtractor(feature_size=128), LABELS, PROMPT, system_prompt=None,
                           source=f"random-{shape}")


def check_capture(adapter: QwenOmniAdapter, waves: list[np.ndarray]) -> dict:
    batch = adapter.to_device(adapter.build_batch(waves))

    @torch.no_grad()
    def plain() -> None:
        adapter.label_probabilities(adapter.embed(batch)).cpu()

    t_plain = timed(plain, 5)
    t_capture = timed(lambda: batch_statistics(adapter, batch, GROUPS, dtype=torch.float16), 5)
    return {"plain_s": round(t_plain, 4), "capture_s": round(t_capture, 4),
            "capture_over_plain": round(t_capture / t_plain, 3), "goal": "<= 1.05",
            "pass": t_capture / t_plain <= 1.05}


def check_oom(adapter: QwenOmniAdapter, waves: list[np.ndarray], simulate_above: int | None) -> dict:
    """Attribution keeps every layer's activations for the backward pass: at the 7B shape a big batch of long
    clips cannot fit, and capture must split it instead of failing."""
    truth = torch.arange(len(waves)) % len(LABELS)
    index = {id(w): i for i, w in enumerate(waves)}
    tried: list[int] = []

    def run(part: list[np.ndarray]):
        tried.append(len(part))
        if simulate_above is not None and len(part) > simulate_above:
            raise torch.cuda.OutOfMemoryError("simulated")
        rows = torch.tensor([index[id(w)] for w in part])
        return batch_statistics(adapter, adapter.build_batch(list(part)), GROUPS, true_label=truth[rows])

    t0 = time.perf_counter()
    stats, fitted = split_on_oom(run, waves, _concat)
    seconds = time.perf_counter() - t0
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    k = max(1, fitted // 2)  # a batch that certainly fits: the same statistics?
    ref = batch_statistics(adapter, adapter.build_batch(waves[:k]), GROUPS, true_label=truth[:k])
    diff = float(np.abs(ref.mean_activation - stats.mean_activation[:k]).max())
    return {"batch": len(waves), "seconds_per_clip": waves[0].size / 16000, "tried_sizes": tried,
            "largest_size_that_ran": fitted, "split": fitted < len(waves), "simulated": simulate_above is not None,
            "seconds": round(seconds, 2), "max_abs_diff_vs_smaller_batch": diff,
            "pass": fitted < len(waves) and diff < 5e-2}


@torch.no_grad()
def check_batching(adapter: QwenOmniAdapter) -> dict:
    waves = clips(1, 1.0, seed=1) + clips(1, 3.7, seed=2) + clips(1, 9.2, seed=3) + clips(1, 5.0, seed=4)
    together = adapter.score(waves).float().cpu()
    alone = torch.cat([adapter.score([w]).float().cpu() for w in waves])
    diff = float((together - alone).abs().max())
    same = bool((together.argmax(-1) == alone.argmax(-1)).all())
    return {"dtype": str(next(adapter.model.parameters()).dtype), "clips_seconds": [1.0, 3.7, 9.2, 5.0],
            "max_abs_prob_diff": round(diff, 5), "same_argmax": same, "tolerance": BATCHING_TOLERANCE,
            "pass": diff <= BATCHING_TOLERANCE and same}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default=os.environ.get("ESN_GPU_CHECK_SHAPE", "omni7b"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default=None, help="name of the JSON under benchmarks/out/")
    args = ap.parse_args()
    run = RUN[args.shape]
    t0 = time.perf_counter()
    adapter = build(args.shape, args.device, getattr(torch, args.dtype))
    result: dict = {**device_info(), "shape": args.shape, "dtype": args.dtype, "device": args.device,
                    "layers": adapter.n_layers, "neurons_per_layer": adapter.n_neurons,
                    "parameters_B": round(sum(p.numel() for p in adapter.model.parameters()) / 1e9, 3),
                    "build_s": round(time.perf_counter() - t0, 1)}
    waves = clips(run["clips"], run["seconds"])
    result["capture"] = check_capture(adapter, waves)
    conditions = random_conditions(LABELS, adapter.n_layers, adapter.n_neurons, run["conditions"])
    sweep = sweep_costs(adapter, waves, conditions, run["max_rows"])
    sweep["pass"] = {"batched_over_decoder<=1.1": sweep["batched_over_decoder"] <= 1.1,
                     "full_over_batched>=1.5": sweep["full_over_batched"] >= 1.5,
                     "generate_over_batched>=2.5": sweep["generate_over_batched"] >= 2.5}
    result["sweep"] = sweep
    on_gpu = args.device.startswith("cuda")
    result["oom"] = check_oom(adapter, clips(run["oom_clips"], run["oom_seconds"]),
                              None if on_gpu else run["oom_clips"] // 4)
    result["batching"] = check_batching(adapter)
    if on_gpu:
        result["peak_gpu_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["peak_rss_GiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    write(args.out or f"gpu_check_{args.shape}_{args.device.split(':')[0]}", result)


if __name__ == "__main__":
    main()
