"""Cost per (utterance, condition) of an intervention study, against the alternatives.

    .venv/bin/python benchmarks/bench_interventions.py [--model resources/models/organism] [--clips 32]

Compares, on the same clips and conditions (deactivation sets of 5 % per emotion, random masks):
  full      one full model forward (audio tower + decoder) per condition, hooks scaling the neurons
  decoder   a decoder-only forward of the same number of rows, audio tower output reused, nothing
            modified: the lower bound
  batched   `score_conditions`: audio tower once, conditions stacked as rows in shared forwards
  generate  `generate(max_new_tokens=8)` per condition (generate-and-parse)
  generate_batched  `generate_conditions`: our KV-cached greedy decode, conditions stacked as rows
and checks that batched and full give the same predictions.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import clips, device_info, timed, write

from esn.hooks import scaled
from esn.interventions import Condition, generate_conditions, score_conditions
from esn.models import load_adapter


def random_conditions(labels: list[str], n_layers: int, n_neurons: int, n: int, seed: int = 0) -> list[Condition]:
    """`n` deactivation conditions of random 5 % sets per layer (the cost does not depend on which neurons)."""
    rng = np.random.default_rng(seed)
    return [Condition("deactivate", labels[i % len(labels)], "random", fraction=0.05,
                      neurons={l: np.flatnonzero(rng.random(n_neurons) < 0.05) for l in range(n_layers)})
            for i in range(n)]


def sweep_costs(adapter, waves: list[np.ndarray], conditions: list[Condition], max_rows: int,
                repeats: int = 3) -> dict:
    """Seconds per (utterance, condition) of each way to run a sweep, and whether batched == full."""
    batch = adapter.to_device(adapter.build_batch(waves))
    sites, N = adapter.site_modules(), adapter.n_neurons

    def scales_for(c: Condition) -> dict[int, torch.Tensor]:
        out = {}
        for l, idx in c.neurons.items():
            s = torch.ones(len(waves), N, device=adapter.device)
            s[:, torch.as_tensor(idx, device=adapter.device)] = c.scale
            out[l] = s
        return out

    @torch.no_grad()
    def full() -> list[np.ndarray]:
        preds = []
        for c in conditions:
            with scaled(sites, scales_for(c)):
                logits = adapter.model(**batch.inputs, attention_mask=batch.attention_mask, logits_to_keep=1).logits[:, -1]
            preds.append(adapter.scorer.probabilities(logits).argmax(-1).cpu().numpy())
        return preds

    with torch.no_grad():
        embedded = adapter.embed(batch)
    per_forward = max(1, max_rows // len(waves))
    stacked = embedded.select(torch.arange(len(waves), device=adapter.device).repeat(per_forward))

    @torch.no_grad()
    def decoder() -> None:
        """Decoder-only forward of as many rows as one batched forward carries, nothing modified."""
        adapter.decode_last(stacked)

    def batched() -> np.ndarray:
        return score_conditions(adapter, waves, conditions, max_rows=max_rows)

    @torch.no_grad()
    def generate() -> None:
        for c in conditions:
            with scaled(sites, scales_for(c)):
                adapter.model.generate(**batch.inputs, attention_mask=batch.attention_mask, max_new_tokens=8,
                                       min_new_tokens=8, do_sample=False, pad_token_id=adapter.tokenizer.pad_token_id)

    def generate_batched() -> None:
        generate_conditions(adapter, waves, conditions, max_rows=max_rows, max_new_tokens=8)

    same = all((p == q.argmax(-1)).all() for p, q in zip(full(), batched()))
    rows = len(waves) * len(conditions)
    t = {"full": timed(full, repeats) / rows, "decoder": timed(decoder, repeats + 2) / (per_forward * len(waves)),
         "batched": timed(batched, repeats) / rows, "generate": timed(generate, 1, 0) / rows,
         "generate_batched": timed(generate_batched, 1, 0) / rows}
    return {"clips": len(waves), "conditions": len(conditions), "max_rows": max_rows,
            "tokens": int(batch.attention_mask.shape[1]),
            "ms_per_utterance_condition": {k: round(v * 1e3, 3) for k, v in t.items()},
            "batched_over_decoder": round(t["batched"] / t["decoder"], 3),
            "full_over_batched": round(t["full"] / t["batched"], 3),
            "generate_over_batched": round(t["generate"] / t["batched"], 3),
            "batched_equals_full_predictions": bool(same)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resources/models/organism")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--conditions", type=int, default=16)
    ap.add_argument("--max-rows", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    labels = ["neutral", "happy", "sad", "angry"]
    adapter = load_adapter({"adapter": "qwen2_5_omni", "path": args.model, "dtype": args.dtype,
                            "prompt": "What emotion does the speaker express? Answer with one word."},
                           labels, args.device)
    conditions = random_conditions(labels, adapter.n_layers, adapter.n_neurons, args.conditions)
    write("interventions", {**device_info(), "model": args.model, "dtype": args.dtype, "seconds": args.seconds,
                            **sweep_costs(adapter, clips(args.clips, args.seconds), conditions, args.max_rows)})


if __name__ == "__main__":
    main()
