"""Cost of an intervention study at the audio tower's MLPs (`site: audio_mlp`) against the decoder's (`act_fn`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_audio_site.py [--model resources/models/organism]

At the decoder site each clip's audio embedding is computed once and shared by every condition; at the audio
site the tower runs once per (clip, condition) row. Times, on the same clips and conditions (the default encoder
study: 5 selectors × 4 emotions × (selected + 1 random) deactivation sets of 5 %, plus the unmodified pass), the
whole `score_conditions` per (clip, condition) row at both sites, and the tower alone per clip, for

  organism  the trained organism of `--model` (its own small tower)
  whisper   the same thinker with a Whisper tiny.en-sized audio tower, random weights: d_model 384, 4 layers,
            6 heads, FFN 1536, n_window 1500 (one attention window per clip, as the real encoder needs); the
            organism's 128 mel bins (tiny.en has 80: only conv1 differs, a few % of the tower)

and extrapolates the default encoder study (41 conditions × `--study-clips` clips) and all the default's
encoder entry adds (capture with attribution of 4 × `--study-clips` clips, tower knockout, the study). Output:
benchmarks/out/audio_site.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import clips, device_info, timed, write

from esn.capture import batch_statistics
from esn.interventions import Condition, score_conditions
from esn.models import load_adapter
from esn.models.qwen_omni import QwenOmniAdapter
from esn.organism import OrganismConfig, build_model, build_tokenizer
from esn.sites import site_groups

LABELS = ["neutral", "happy", "sad", "angry"]
PROMPT = "What emotion does the speaker express? Answer with one word."


def study_conditions(n_layers: int, n_neurons: int, fraction: float = 0.05, seed: int = 0) -> list[Condition]:
    """The default encoder study's conditions: per selector (5) and emotion (4) a selected and a random set."""
    rng = np.random.default_rng(seed)
    k = max(1, round(fraction * n_neurons))  # 5 % of each layer: 5 % of all neurons, layer-matched
    out = [Condition("none")]
    for _ in range(5 * 4 * 2):
        out.append(Condition("deactivate", "happy", neurons={l: np.sort(rng.choice(n_neurons, k, replace=False))
                                                             for l in range(n_layers)}))
    return out


def whisper_sized(site: str) -> QwenOmniAdapter:
    torch.manual_seed(0)
    cfg = OrganismConfig(prompt=PROMPT, audio_d_model=384, audio_layers=4, audio_heads=6, audio_ffn=1536)
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size)
    model = build_model(cfg, tok)
    tower = next(m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "audio_tower")
    tower.n_window = tower.config.n_window = 1500
    from transformers import WhisperFeatureExtractor
    return QwenOmniAdapter(model, tok, WhisperFeatureExtractor(feature_size=128), LABELS, PROMPT, system_prompt=None,
                           site=site)


def measure(make, waves: list[np.ndarray], repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for site in ("act_fn", "audio_mlp"):
        adapter = make(site)
        conditions = study_conditions(adapter.n_layers, adapter.n_neurons)
        rows = len(conditions) * len(waves)
        seconds = timed(lambda: score_conditions(adapter, waves, conditions, max_rows=64), repeats=repeats)
        out[f"{site}_ms_per_row"] = round(1000 * seconds / rows, 3)
        batch, truth = adapter.build_batch(waves), torch.arange(len(waves)) % len(LABELS)
        capture = timed(lambda: batch_statistics(adapter, batch, site_groups(site, ["audio", "prompt", "last"]),
                                                 true_label=truth), repeats=repeats)
        out[f"{site}_capture_ms_per_clip"] = round(1000 * capture / len(waves), 3)  # with attribution's backward
        if site == "audio_mlp":
            out["tower_layers"], out["tower_neurons_per_layer"] = adapter.n_layers, adapter.n_neurons
            batch = adapter.build_batch(waves)
            with torch.no_grad():
                tower = timed(lambda: adapter.audio_embeddings(batch), repeats=repeats)
            out["tower_ms_per_clip"] = round(1000 * tower / len(waves), 3)
    out["audio_site_over_decoder_site"] = round(out["audio_mlp_ms_per_row"] / out["act_fn_ms_per_row"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resources/models/organism")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--study-clips", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    waves = clips(args.clips, args.seconds)
    spec = {"adapter": "qwen2_5_omni", "path": args.model, "prompt": PROMPT, "system_prompt": ""}
    t0 = time.time()
    result = {"device": device_info(), "clips": args.clips, "seconds_per_clip": args.seconds,
              "conditions": 41, "study_clips": args.study_clips,
              "organism": measure(lambda site: load_adapter({**spec, "site": site}, LABELS), waves, args.repeats),
              "whisper": measure(whisper_sized, waves, args.repeats)}
    for name in ("organism", "whisper"):
        r = result[name]
        r["study_minutes_audio_site"] = round(r["audio_mlp_ms_per_row"] * 41 * args.study_clips / 60000, 2)
        r["study_minutes_decoder_site"] = round(r["act_fn_ms_per_row"] * 41 * args.study_clips / 60000, 2)
        # what the default's encoder entry adds: capture of the whole corpus (4 × study clips, with attribution),
        # tower-layer knockout (layers + the unmodified pass) and the study (41 conditions), on one core
        r["default_encoder_minutes"] = round((r["audio_mlp_capture_ms_per_clip"] * 4 * args.study_clips
                                              + r["audio_mlp_ms_per_row"] * (r["tower_layers"] + 1 + 41)
                                              * args.study_clips) / 60000, 2)
    result["wall_s"] = round(time.time() - t0, 1)
    write("audio_site", result)


if __name__ == "__main__":
    main()
