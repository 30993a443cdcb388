"""The model organism: a tiny real `Qwen2_5OmniThinkerForConditionalGeneration` trained on CPU.

Offline there are no real weights, and a random model recognises nothing, so the embedded default
studies an organism that does recognise emotion: the real thinker class at a tiny size, with a
byte-level BPE tokenizer made offline, trained to answer the emotion word after the chat prompt,
saved with `save_pretrained` and loaded back through the same adapter as Qwen2.5-Omni-7B.

Design choices (measured; see README "The model organism"):
- the audio encoder is small and learns slowly (its learning rate × `encoder_lr_scale`) and the
  decoder has several layers with a wide MLP, so the emotion decision is computed in the decoder;
- each step also scores the model with one random decoder layer's MLP knocked out and pushes that
  prediction towards uniform (`knockout_weight`, ramped in over the first `knockout_ramp` of the steps,
  so that recognising comes first): the decision must run through every layer's MLP,
  as a plainly trained organism bypasses its MLPs entirely (NOTES.md). Without this, no neuron
  study on the organism would mean anything.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (PreTrainedTokenizerFast, Qwen2_5OmniThinkerConfig,
                          Qwen2_5OmniThinkerForConditionalGeneration, WhisperFeatureExtractor)

from esn.audio import load_16k_mono
from esn.emotions import EMOTIONS
from esn.hooks import knocked_out
from esn.models.qwen_omni import QwenOmniAdapter

log = logging.getLogger(__name__)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
            "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass
class OrganismConfig:
    """Size and training of the organism (config key `organism`)."""

    prompt: str = "What emotion does the speaker express? Answer with one word."
    vocab_size: int = 400
    audio_d_model: int = 64
    audio_layers: int = 2
    audio_heads: int = 4
    audio_ffn: int = 256
    hidden: int = 128
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    mlp: int = 1024
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    encoder_lr_scale: float = 0.3
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    knockout_weight: float = 0.5
    knockout_ramp: float = 0.4
    warmup: int = 60
    seed: int = 0
    threads: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


def build_tokenizer(prompt: str, vocab_size: int, label_tokens: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the prompt and chat words, with one token per emotion word (unless
    `label_tokens` is False: then emotion words split into several tokens, as in real vocabularies)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = [prompt, "system", "user", "assistant", "You are a helpful assistant.",
            "Listen to the audio and name the emotion of the speaker in one word."]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left")
    if label_tokens:
        fast.add_tokens([w for e in EMOTIONS for w in (e, e.capitalize())])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(cfg: OrganismConfig, tok: PreTrainedTokenizerFast) -> Qwen2_5OmniThinkerForConditionalGeneration:
    """A randomly initialised tiny thinker whose special-token ids match the tokenizer."""
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    head_dim = cfg.hidden // cfg.heads
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=cfg.audio_layers, encoder_attention_heads=cfg.audio_heads,
                          encoder_ffn_dim=cfg.audio_ffn, d_model=cfg.audio_d_model, n_window=50,
                          output_dim=cfg.hidden, max_source_positions=1500),
        text_config=dict(vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.mlp,
                         num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                         num_key_value_heads=cfg.kv_heads, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
                         tie_word_embeddings=False, pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=cfg.hidden,
                           fullatt_block_indexes=[0]),
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"], video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"], audio_end_token_id=ids["<|audio_eos|>"],
        user_token_id=tok.convert_tokens_to_ids("user") if "user" in tok.get_vocab() else 0,
        pad_token_id=ids["<|endoftext|>"],
    )
    config.vision_start_token_id = ids["<|vision_bos|>"]
    config.vision_end_token_id = ids["<|vision_eos|>"]
    return Qwen2_5OmniThinkerForConditionalGeneration(config)


def _schedule(step: int, cfg: OrganismConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))


def evaluate(adapter: QwenOmniAdapter, waves: list[np.ndarray], labels: np.ndarray, *, batch_size: int = 64,
             knockout: list[int] | None = None) -> tuple[float, np.ndarray]:
    """Accuracy and predictions, optionally with the MLPs of `knockout` layers zeroed."""
    preds = []
    for i in range(0, len(waves), batch_size):
        with torch.no_grad(), knocked_out(adapter.site_modules(), knockout or []):
            preds.append(adapter.score(waves[i:i + batch_size]).argmax(-1).cpu().numpy())
    pred = np.concatenate(preds)
    return float((pred == labels).mean()), pred


def heldout_metrics(y: np.ndarray, pred: np.ndarray, knockout_pred: dict[str, np.ndarray],
                    labels: list[str]) -> dict[str, Any]:
    """Accuracy, UAR, recall, confusion counts, and accuracy/UAR with each layer knockout, from label indices."""
    def uar(p: np.ndarray) -> float:
        return float(np.mean([(p[y == i] == i).mean() for i in range(len(labels)) if (y == i).any()]))

    return {
        "heldout_accuracy": float((pred == y).mean()), "heldout_uar": uar(pred), "n_evaluation": int(len(y)),
        "recall": {l: float((pred[y == i] == i).mean()) for i, l in enumerate(labels) if (y == i).any()},
        "confusion": {t: {p: int(((y == i) & (pred == j)).sum()) for j, p in enumerate(labels)}
                      for i, t in enumerate(labels) if (y == i).any()},
        "knockout_accuracy": {k: float((v == y).mean()) for k, v in knockout_pred.items()},
        "knockout_uar": {k: uar(v) for k, v in knockout_pred.items()},
    }


def train_organism(manifest: pd.DataFrame, out_dir: str | Path, labels: list[str], cfg: OrganismConfig) -> dict[str, Any]:
    """Train on the identification split, evaluate on the evaluation split, save like a checkpoint.

    `manifest` may hold several corpora (its `corpus` column): the organism then learns from all their
    identification splits, as a pretrained model has seen varied data, and `metrics.json` reports the
    held-out metrics pooled and per corpus (`corpora`)."""
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size)
    model = build_model(cfg, tok)
    extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000)
    adapter = QwenOmniAdapter(model, tok, extractor, labels, cfg.prompt, system_prompt=None, source="organism")

    ident = manifest[manifest["split"] == "identification"].reset_index(drop=True)
    evals = manifest[manifest["split"] == "evaluation"].reset_index(drop=True)
    label_index = {l: i for i, l in enumerate(labels)}
    waves = [load_16k_mono(p) for p in ident["path"]]
    y = torch.tensor([label_index[e] for e in ident["emotion"]])
    # the bare label word is the target token at the answer position (teacher forcing on the answer)
    target_ids = torch.tensor([adapter.scorer.first_token_ids[i][0] for i in range(len(labels))])

    encoder_params = list(model.model.audio_tower.parameters())
    enc_ids = {id(p) for p in encoder_params}
    other = [p for p in model.parameters() if id(p) not in enc_ids]
    opt = torch.optim.AdamW([{"params": other, "lr": cfg.lr},
                             {"params": encoder_params, "lr": cfg.lr * cfg.encoder_lr_scale}],
                            weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    rng = np.random.default_rng(cfg.seed)
    sites = adapter.site_modules()
    model.train()
    history = []
    for step in range(cfg.steps):
        idx = rng.choice(len(waves), size=cfg.batch_size, replace=False)
        batch = adapter.build_batch([waves[i] for i in idx])
        embedded = adapter.embed(batch)
        logits = adapter.decode_last(embedded)
        loss = torch.nn.functional.cross_entropy(logits, target_ids[y[idx]], label_smoothing=cfg.label_smoothing)
        if cfg.knockout_weight > 0:
            layer = int(rng.integers(model.config.text_config.num_hidden_layers))
            with knocked_out(sites, [layer]):
                ko = adapter.label_logprobs(embedded)
            # with any one layer's MLP gone the model should not know the emotion: uniform over labels.
            # Ramped in over the first `knockout_ramp` of training: learning to recognise comes first (from the
            # start, uniform answers satisfy this term and a hard corpus can trap training there).
            ramp = min(1.0, step / max(1.0, cfg.knockout_ramp * cfg.steps))
            loss = loss - ramp * cfg.knockout_weight * ko.mean()
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * _schedule(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": round(loss.item(), 4), "elapsed_s": round(time.time() - t0, 1)})
            log.info("step %d loss %.4f (%.0f s)", step, loss.item(), time.time() - t0)
    model.eval()
    train_s = time.time() - t0

    eval_waves = [load_16k_mono(p) for p in evals["path"]]
    eval_y = np.array([label_index[e] for e in evals["emotion"]])
    n_layers = model.config.text_config.num_hidden_layers
    knockouts = {**{f"layer_{l}": [l] for l in range(n_layers)}, "all": list(range(n_layers))}
    pred = evaluate(adapter, eval_waves, eval_y)[1]
    ko_pred = {name: evaluate(adapter, eval_waves, eval_y, knockout=layers)[1] for name, layers in knockouts.items()}
    per_corpus = {c: heldout_metrics(eval_y[m], pred[m], {k: v[m] for k, v in ko_pred.items()}, labels)
                  for c in sorted(evals["corpus"].unique()) for m in [(evals["corpus"] == c).to_numpy()]}
    pooled = heldout_metrics(eval_y, pred, ko_pred, labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    extractor.save_pretrained(out_dir)
    metrics = {
        **pooled, "chance": 1.0 / len(labels), "labels": labels, "corpora": per_corpus,
        "train_seconds": round(train_s, 1), "n_identification": len(ident),
        "parameters": sum(p.numel() for p in model.parameters()), "config": asdict(cfg), "history": history,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
