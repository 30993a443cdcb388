"""Everything about the 7B paths that needs a GPU, in one run that reports each check as it completes.

    python benchmarks/gpu_check.py --shape omni7b        # one H100/H200, < 6 min (benchmarks/gpu_check.sh)
    python benchmarks/gpu_check.py --shape tiny          # the same checks at a reduced shape on CPU (< 2 min)

Random weights of the Qwen2.5-Omni-7B thinker (28 x 18944, hidden 3584, its 32-layer audio tower; tiny
vision tower, unused), built on the meta device; nothing is downloaded. Each check writes one JSON line to
benchmarks/out/gpu_check_<shape>_<device>.jsonl the moment it ends (flushed to disk), and a check that fails
records its error and lets the next one run: a run cut short still reports what it got. Checks, each with its goal:
  capture       reducing hooks + one host copy vs a plain scoring forward            goal <= 1.05x
  reduction     one layer's reduction at the 7B shape, before/after, vs its MLP forward; float32 sums vs float64
  memory        peak device memory per token: scoring, capture, capture with attribution, generation
  token_budget  the batch `esn.batching.token_budget` chooses in `--oom-budget-gib` must fit; its peak vs the model
  sweep         per (utterance, condition): batched conditions vs decoder-only        goal <= 1.1x
                one full forward per condition vs batched                             goal >= 1.5x
                `generate(8 tokens)` per condition vs batched                         goal >= 2.5x
  oom_capture   capture with attribution asked for `--oom-margin` x the clips that the per-token model says
                fit in `--oom-budget-gib` (the card limited to that with `set_per_process_memory_fraction`; on CPU
                a simulated limit): the back-off must converge (few overflows, then every piece fits) and give the
                statistics of a run that fits
  oom_rows      interventions asked for forwards of `--oom-rows` rows in the same budget: rows per forward shrink
  batching      bf16 label probabilities of a padded batch vs each clip alone         |dp| <= 0.02, same argmax
Sizes are options (`--help`), so a shorter slot can run smaller checks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from bench_interventions import random_conditions, sweep_costs
from bench_reduction import reduction_costs
from common import OUT, SHAPES, clips, device_info, random_thinker, thinker_config, timed
from transformers import WhisperFeatureExtractor

from esn.batching import Fit, bytes_per_token, free_device_memory, in_pieces, token_budget
from esn.capture import _concat, batch_statistics
from esn.generation import generate_answers
from esn.interventions import answer_conditions
from esn.models.qwen_omni import QwenOmniAdapter
from esn.organism import build_tokenizer

LABELS = ["neutral", "happy", "sad", "angry"]
PROMPT = "What emotion does the speaker express? Answer with one word."
GROUPS = ["audio", "prompt", "last"]
#: per shape: clips x seconds for timing, conditions, rows per forward; the out-of-memory checks' clip length,
#: device memory budget (beyond the weights), margin over what fits, and rows asked per intervention forward
RUN = {"omni7b": dict(clips=16, seconds=5.0, conditions=16, max_rows=256, oom_seconds=10.0, oom_budget_gib=24.0,
                      oom_margin=2.5, oom_rows=2048),
       "tiny": dict(clips=8, seconds=2.0, conditions=8, max_rows=64, oom_seconds=2.0, oom_budget_gib=0.02,
                    oom_margin=2.5, oom_rows=64)}
CHECKS = ("capture", "reduction", "memory", "token_budget", "sweep", "oom_capture", "oom_rows", "batching")
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


def model_bytes_per_token(adapter: QwenOmniAdapter, way: str) -> float:
    """`esn.batching.bytes_per_token` (the per-token model measured on tiny bf16 models) at this model's shape."""
    mlp = adapter.decoder_layers()[0].mlp
    return bytes_per_token(way, adapter.n_layers, mlp.gate_proj.in_features, adapter.n_neurons,
                           next(adapter.model.parameters()).element_size())


@contextmanager
def memory_budget(adapter: QwenOmniAdapter, budget: float, on_gpu: bool) -> Iterator[None]:
    """The device limited to `budget` bytes beyond what it holds now. GPU: the caching allocator's own limit
    (a real out-of-memory error past it). CPU: a pre-forward hook per decoder layer that raises CUDA's error when
    rows x positions x the per-token model exceed it (no memory is really short)."""
    if on_gpu:
        free_device_memory()  # the limit counts the allocator's cached blocks too
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated() + budget) / total))
        try:
            yield
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
        return
    per_token = model_bytes_per_token(adapter, "attribution")

    def hook(_m, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if torch.is_grad_enabled() and hidden.shape[0] * hidden.shape[1] * per_token > budget:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in adapter.decoder_layers()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def check_oom_capture(adapter: QwenOmniAdapter, seconds: float, budget_gib: float, margin: float, on_gpu: bool) -> dict:
    """Attribution keeps every layer's activations for the backward pass: asked for `margin` x the clips that fit,
    capture must back off (after the failed attempt is freed), keep the size that fit, and finish."""
    budget = budget_gib * 2**30
    tokens = int(adapter.build_batch(clips(1, seconds)).attention_mask.shape[1])
    per_clip = model_bytes_per_token(adapter, "attribution") * tokens
    fits = max(1, int(budget // per_clip))
    asked = max(2, math.ceil(margin * fits))
    waves = clips(asked, seconds)
    truth = torch.arange(asked) % len(LABELS)
    fit = Fit(asked, "clips")

    def run(part: range):
        return batch_statistics(adapter, adapter.build_batch(waves[part.start:part.stop]), GROUPS,
                                true_label=truth[part.start:part.stop])

    t0 = time.perf_counter()
    with memory_budget(adapter, budget, on_gpu):
        parts = in_pieces(run, range(asked), fit)
    seconds_run = time.perf_counter() - t0
    free_device_memory()
    k = max(1, fit.size // 2)  # a batch that certainly fits: the same statistics?
    ref = run(range(k))
    diff = float(np.abs(ref.mean_activation - _concat(parts).mean_activation[:k]).max())
    ran = fit.tried[fit.overflows:]  # clips of one length: after the overflows every piece fits
    converged = fit.overflows <= math.ceil(math.log2(max(margin, 2))) + 1 and sum(ran) == asked and max(ran) <= fit.size
    return {"budget_GiB": budget_gib, "simulated": not on_gpu, "seconds_per_clip": seconds, "tokens_per_clip": tokens,
            "model_MiB_per_clip": round(per_clip / 2**20, 1), "model_says_fit": fits, "asked": asked,
            "tried_sizes": fit.tried, "overflows": fit.overflows, "size_kept": fit.size,
            "seconds": round(seconds_run, 2), "max_abs_diff_vs_smaller_batch": diff,
            "pass": converged and fit.overflows >= 1 and diff < 5e-2}


def check_oom_rows(adapter: QwenOmniAdapter, n_clips: int, seconds: float, rows: int, budget_gib: float,
                   on_gpu: bool) -> dict:
    """Interventions asked for forwards of `rows` rows: the rows per decoder forward shrink (not the clips) and stay."""
    waves = clips(n_clips, seconds)
    conditions = random_conditions(LABELS, adapter.n_layers, adapter.n_neurons, max(1, rows // n_clips))
    rows_fit = Fit(rows, "rows per forward")
    if not on_gpu:  # simulate: forwards over a quarter of the asked rows overflow
        limit = max(1, rows // 4)

        def hook(_m, args, kwargs):
            if (args[0] if args else kwargs["hidden_states"]).shape[0] > limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        handles = [adapter.decoder_layers()[0].register_forward_pre_hook(hook, with_kwargs=True)]
    t0 = time.perf_counter()
    try:
        with memory_budget(adapter, budget_gib * 2**30, on_gpu) if on_gpu else nullcontext():
            probs, _ = answer_conditions(adapter, waves, conditions, rows_fit=rows_fit)
    finally:
        if not on_gpu:
            for h in handles:
                h.remove()
    return {"budget_GiB": budget_gib, "simulated": not on_gpu, "clips": n_clips, "conditions": len(conditions),
            "rows_asked": rows, "tried_rows": rows_fit.tried, "overflows": rows_fit.overflows,
            "rows_kept": rows_fit.size, "seconds": round(time.perf_counter() - t0, 2),
            "pass": bool(np.isfinite(probs).all()) and rows_fit.size < rows}


def check_token_budget(adapter: QwenOmniAdapter, seconds: float, budget_gib: float) -> dict:
    """Batches sized by `esn.batching.token_budget` (the per-token model measured on tiny models) in a memory
    budget: the batch it chooses for attribution must fit, and the measured peak says how close the model is."""
    budget = budget_gib * 2**30
    mlp = adapter.decoder_layers()[0].mlp
    shape = (adapter.n_layers, mlp.gate_proj.in_features, adapter.n_neurons)
    out = {"budget_GiB": budget_gib, "seconds_per_clip": seconds}
    for way in ("attribution", "capture"):
        tokens, how = token_budget(adapter.model, *shape, way, free_bytes=int(budget))
        per_clip = int(adapter.build_batch(clips(1, seconds)).attention_mask.shape[1])
        n = max(1, tokens // per_clip)
        waves = clips(n, seconds)
        batch = adapter.build_batch(waves)
        free_device_memory()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with memory_budget(adapter, budget, True):
            batch_statistics(adapter, batch, GROUPS, true_label=(torch.arange(n) % len(LABELS)) if way == "attribution"
                             else None)
        peak = torch.cuda.max_memory_allocated() - base
        out[way] = {"token_budget": tokens, "how": how, "clips": n, "peak_GiB": round(peak / 2**30, 2),
                    "peak_over_model": round(peak / (tokens * bytes_per_token(way, *shape)), 3)}
    out["pass"] = True  # reaching here: no out-of-memory error at the chosen sizes
    return out


def check_memory(adapter: QwenOmniAdapter, waves: list[np.ndarray]) -> dict:
    """Peak device memory above the weights, per token of the batch, for each way a study runs the model."""
    batch = adapter.to_device(adapter.build_batch(waves))
    tokens = int(batch.attention_mask.numel())
    truth = torch.arange(len(waves)) % len(LABELS)

    @torch.no_grad()
    def score() -> None:
        adapter.label_probabilities(adapter.embed(batch)).cpu()

    @torch.no_grad()
    def generate() -> None:
        generate_answers(adapter, adapter.embed(batch), max_new_tokens=8)

    ways = {"score": score, "capture": lambda: batch_statistics(adapter, batch, GROUPS),
            "attribution": lambda: batch_statistics(adapter, batch, GROUPS, true_label=truth),
            "generate": generate}
    out = {"tokens": tokens, "clips": len(waves)}
    for name, fn in ways.items():
        free_device_memory()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        out[f"{name}_KiB_per_token"] = round((torch.cuda.max_memory_allocated() - base) / tokens / 2**10, 1)
        out[f"{name}_model_KiB_per_token"] = round(model_bytes_per_token(adapter, name) / 2**10, 1)
    return out


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


class Report:
    """One JSON line per check, on disk the moment the check ends; a failing check records its error."""

    def __init__(self, path: Path, header: dict):
        OUT.mkdir(exist_ok=True)
        self.path, self.file = path, path.open("w")
        self.write({"check": "setup", **header})

    def write(self, line: dict) -> None:
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        print(json.dumps(line), flush=True)

    def run(self, name: str, fn: Callable[[], dict]) -> None:
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - report it and go on to the next check
            result = {"error": f"{type(e).__name__}: {e}"[:2000], "pass": False}
        free_device_memory()  # after the handler: the failed check's memory is released
        self.write({"check": name, "check_s": round(time.perf_counter() - t0, 1), **result})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default=os.environ.get("ESN_GPU_CHECK_SHAPE", "omni7b"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--clips", type=int, help="clips per timing batch")
    ap.add_argument("--seconds", type=float, help="seconds per timing clip")
    ap.add_argument("--conditions", type=int, help="conditions of the sweep timing")
    ap.add_argument("--max-rows", type=int, help="rows per forward of the sweep timing")
    ap.add_argument("--oom-seconds", type=float, help="seconds per clip of the out-of-memory checks")
    ap.add_argument("--oom-budget-gib", type=float, help="device memory the out-of-memory checks may use")
    ap.add_argument("--oom-margin", type=float, help="clips asked / clips the memory model says fit")
    ap.add_argument("--oom-rows", type=int, help="rows per forward asked of the interventions check")
    ap.add_argument("--out", default=None, help="name of the JSON lines under benchmarks/out/")
    args = ap.parse_args()
    run = {**RUN[args.shape], **{k: v for k, v in vars(args).items() if k in RUN[args.shape] and v is not None}}
    checks = args.checks.split(",")
    t0 = time.perf_counter()
    adapter = build(args.shape, args.device, getattr(torch, args.dtype))
    on_gpu = args.device.startswith("cuda")
    name = args.out or f"gpu_check_{args.shape}_{args.device.split(':')[0]}"
    report = Report(OUT / f"{name}.jsonl",
                    {**device_info(), "shape": args.shape, "dtype": args.dtype, "device": args.device, "sizes": run,
                     "layers": adapter.n_layers, "neurons_per_layer": adapter.n_neurons,
                     "parameters_B": round(sum(p.numel() for p in adapter.model.parameters()) / 1e9, 3),
                     "build_s": round(time.perf_counter() - t0, 1)})
    waves = clips(run["clips"], run["seconds"])

    def sweep() -> dict:
        conditions = random_conditions(LABELS, adapter.n_layers, adapter.n_neurons, run["conditions"])
        result = sweep_costs(adapter, waves, conditions, run["max_rows"])
        result["pass"] = {"batched_over_decoder<=1.1": result["batched_over_decoder"] <= 1.1,
                          "full_over_batched>=1.5": result["full_over_batched"] >= 1.5,
                          "generate_over_batched>=2.5": result["generate_over_batched"] >= 2.5}
        return result

    todo = {"capture": lambda: check_capture(adapter, waves),
            "reduction": lambda: reduction_costs(device=args.device, dtype=getattr(torch, args.dtype)),
            "memory": (lambda: check_memory(adapter, waves)) if on_gpu else (lambda: {"skipped": "needs a GPU"}),
            "token_budget": (lambda: check_token_budget(adapter, run["oom_seconds"], run["oom_budget_gib"])) if on_gpu
            else (lambda: {"skipped": "needs a GPU"}),
            "sweep": sweep,
            "oom_capture": lambda: check_oom_capture(adapter, run["oom_seconds"], run["oom_budget_gib"],
                                                     run["oom_margin"], on_gpu),
            "oom_rows": lambda: check_oom_rows(adapter, run["clips"], run["seconds"], run["oom_rows"],
                                               run["oom_budget_gib"], on_gpu),
            "batching": lambda: check_batching(adapter)}
    for name in checks:
        report.run(name, todo[name])
    end = {"total_s": round(time.perf_counter() - t0, 1),
           "peak_rss_GiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if on_gpu:
        end["peak_gpu_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    report.write({"check": "end", **end})


if __name__ == "__main__":
    main()
