"""Kimi-Audio-7B(-Instruct) adapter: remote code in its own environment.

Kimi-Audio is not in transformers. Its checkpoint ships remote code (`MoonshotKimiaForCausalLM`) that
needs transformers <= 4.57, CUDA and flash-attn, and its inputs are built by `kimia_infer`
(GitHub only: MoonshotAI/Kimi-Audio) — so the rules that use it run in the conda env
`workflow/envs/kimi_audio.yaml`, and nothing here imports either at module import time.

The model, as its remote code defines it:
- two aligned token streams of equal length T: `input_ids` (the "audio" stream: control tokens and
  the discrete GLM-4-voice speech tokens at 12.5 Hz) and `text_input_ids` (the text stream; blanks
  where the audio stream speaks); `is_continuous_mask` [B, T] marks the speech-token positions
  strictly between `<|im_media_begin|>` and `<|im_media_end|>`, which additionally receive
  whisper-large-v3 features (`whisper_input_feature`, 5120-d at 12.5 Hz) through `model.vq_adaptor`;
- `forward(input_ids, text_input_ids, whisper_input_feature, is_continuous_mask, attention_mask,
  position_ids, past_key_values, inputs_embeds, ..., return_dict)` returns
  `(audio_logits, text_logits, past)`; the text answer is read from `text_logits` at the last position;
- decoder layers `model.model.layers[i]` with a `Qwen2MLP` (`gate_proj`, `up_proj`, `down_proj`,
  `act_fn`) — the neurons of the study; `model.get_decoder()` is `model.model`. (A 6-layer "mimo"
  branch forks off after layer 21 and only feeds the audio logits.)

Why this adapter does not feed the raw streams to the full forward for a batch: the remote forward
merges whisper features into ONE [T, 5120] buffer shared by all rows (it was written for kimia_infer's
batch of one); rows of different clips would overwrite each other's features. So `embed` performs
that merge per row, with the model's own `embed_tokens` and `vq_adaptor` and the same arithmetic
((e_audio + w)·√2 on continuous positions, + e_text), and `decode_last` runs the model's own decoder
(`model.get_decoder()`, i.e. the same forward with `inputs_embeds=`) over all rows at once, with the
padding mask and left-padding-aware positions its flash-attention path supports; the text head
(`lm_head`) is applied at the last position only. `load` checks this split against the model's own
full forward on a synthetic clip before returning (`self_check`).

Label scoring: `decode_last` only, so labels are scored from the answer position alone. That is exact
whole-label scoring when every label variant is one token (`full_label` then takes its one-pass path);
with multi-token labels `full_label` is refused (no cache path through the remote code) and
`scoring: first_token` must be chosen explicitly.
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from esn.models.base import (DEFAULT_SCORING, AudioLMAdapter, Batch, Embedded, check_loaded_weights,
                             require_pinned_revision)

SAMPLING_RATE = 16_000
ENV_FILE = "workflow/envs/kimi_audio.yaml"


#: The self-check's rounding budget: rounding steps of the model dtype, at the magnitude of the largest logit.
SELF_CHECK_STEPS = 4


def self_check_tolerance(dtype: torch.dtype, logits: torch.Tensor) -> float:
    """Largest |Δ log-softmax| allowed between two correct evaluations of one clip in `dtype`.

    The split path and the model's own forward do the same arithmetic on differently shaped tensors, so
    they may round differently. One rounding step of a logit of magnitude m is eps·m (bfloat16: eps = 2^-7,
    so 0.0625 for a logit of 8 — a fixed 5e-2 bar refused correct bf16 runs), and a log-softmax moves by at
    most twice the largest logit change: the bar is 2 · SELF_CHECK_STEPS · eps · max|logit|, and never below
    1e-4 (float32, where it is 1e-4 for logits up to ~100). A wrong merge or wrong positions move the logits
    by a fraction of their own scale, orders of magnitude above rounding.
    """
    eps = float(torch.finfo(dtype).eps)
    return max(1e-4, 2 * SELF_CHECK_STEPS * eps * float(logits.detach().float().abs().max()))


@dataclass
class KimiInputs:
    """One clip's prompt as kimia_infer builds it (batch of one, no padding)."""

    audio_ids: torch.Tensor    # [T] audio stream
    text_ids: torch.Tensor     # [T] text stream
    continuous: torch.Tensor   # [T] bool: positions that also receive whisper features
    whisper: torch.Tensor      # [n, D] whisper features of the clip (n >= continuous.sum())


class KimiTextTokenizer:
    """The little of a tokenizer the label scorer needs, over Kimi's own text tokenizer.

    kimia_infer encodes text with `encode(text, bos=False, eos=False)` (Kimi's tiktoken tokenizer);
    this wrapper does the same, so label words are tokenised exactly as the prompt text is.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(text, bos=False, eos=False)]

    def convert_ids_to_tokens(self, i: int) -> str:
        try:
            return self.tokenizer.convert_ids_to_tokens(i)
        except Exception:  # noqa: BLE001 - tokenizers without this method: a decode is as informative
            return self.tokenizer.decode([i])

    def convert_tokens_to_ids(self, token: str) -> int | None:
        try:
            return self.tokenizer.convert_tokens_to_ids(token)
        except Exception:  # noqa: BLE001
            return None


class KimiaPromptBuilder:
    """Builds one clip's streams with kimia_infer's `KimiAPromptManager`, as `KimiAudio.generate` does.

    The chat is the prompt text then the clip, both from the user (the order of Kimi-Audio's own
    examples); the prompt manager appends the assistant start. kimia_infer reads audio from a path,
    so each clip is written to a temporary 32-bit float WAV at 16 kHz (lossless).
    """

    def __init__(self, prompt_manager: Any):
        self.prompt_manager = prompt_manager

    @property
    def text_tokenizer(self) -> Any:
        return self.prompt_manager.text_tokenizer

    @property
    def pad_id(self) -> int:
        return int(self.prompt_manager.extra_tokens.kimia_text_blank)

    @staticmethod
    def messages(prompt: str, audio_path: str) -> list[dict[str, Any]]:
        return [{"role": "user", "message_type": "text", "content": prompt},
                {"role": "user", "message_type": "audio", "content": audio_path}]

    def build(self, waveform: np.ndarray, prompt: str) -> KimiInputs:
        import soundfile as sf

        with tempfile.TemporaryDirectory(prefix="esn-kimi-") as tmp:
            path = os.path.join(tmp, "clip.wav")
            sf.write(path, np.asarray(waveform, dtype=np.float32), SAMPLING_RATE, subtype="FLOAT")
            content = self.prompt_manager.get_prompt(self.messages(prompt, path), output_type="text")
        audio_ids, text_ids, continuous = content.to_tensor()[:3]
        features = list(content.continuous_feature)
        if len(features) != 1:
            raise ValueError(f"expected whisper features of exactly one clip, got {len(features)}")
        whisper = torch.as_tensor(features[0]).detach().cpu()
        whisper = whisper.reshape(-1, whisper.shape[-1])
        return KimiInputs(audio_ids[0].long().cpu(), text_ids[0].long().cpu(), continuous[0].bool().cpu(), whisper)


def _import_prompt_manager() -> type:
    try:
        from kimia_infer.api.prompt_manager import KimiAPromptManager
    except ImportError as err:
        raise ImportError(
            f"Kimi-Audio needs `kimia_infer` (GitHub only, MoonshotAI/Kimi-Audio), transformers<=4.57, CUDA and "
            f"flash-attn; none of which the main environment has. Run the rules that use this model in the "
            f"conda env {ENV_FILE} (snakemake --software-deployment-method conda). ({err})") from err
    return KimiAPromptManager


class KimiAudioAdapter(AudioLMAdapter):
    family = "kimi_audio"
    audio_token = ""  # no single placeholder: the audio positions are the continuous-feature positions

    def __init__(self, model: Any, builder: Any, labels: list[str], prompt: str, **kw: Any):
        super().__init__(model, KimiTextTokenizer(builder.text_tokenizer), labels, prompt, **kw)
        if not self.scorer.one_pass:
            variants = "; ".join(f"{self.labels[i]}={self.scorer.render(s)}" for i, s in self.scorer.variants if len(s) > 1)
            raise ValueError(f"Kimi-Audio cannot score multi-token labels as whole labels ({variants}): its remote code "
                             f"has no KV-cache continuation over `inputs_embeds` that this adapter could drive (two token "
                             f"streams, flash-attn padding). Set `scoring: first_token` in its models entry, or use "
                             f"label words that are one token each")
        self.builder = builder
        cfg = model.config
        self.media_begin = int(cfg.kimia_media_begin)
        self.media_end = int(cfg.kimia_media_end)
        self.use_whisper_feature = bool(getattr(cfg, "use_whisper_feature", True))

    @classmethod
    def load(cls, path: str, *, labels: list[str], prompt: str, revision: str | None = None,
             dtype: str = "bfloat16", device: str = "cuda", site: str = "act_fn",
             system_prompt: str | None = None, trust_remote_code: bool = False, scoring: str = DEFAULT_SCORING,
             synonyms: dict[str, list[str]] | None = None, self_check: bool = True) -> "KimiAudioAdapter":
        if not trust_remote_code:
            raise ValueError(f"Kimi-Audio ({path}) is remote code (MoonshotKimiaForCausalLM): set "
                             f"`trust_remote_code: true` and a pinned `revision` (a commit hash) in its models entry")
        require_pinned_revision(path, revision)
        if system_prompt:
            raise ValueError("Kimi-Audio's prompt format has no system turn; leave `system_prompt` unset")
        prompt_manager_cls = _import_prompt_manager()
        from transformers import AutoModelForCausalLM

        model, info = AutoModelForCausalLM.from_pretrained(path, revision=revision, trust_remote_code=True,
                                                           dtype=getattr(torch, dtype), output_loading_info=True)
        check_loaded_weights(model, info, path)
        model = model.to(device)
        if os.path.isdir(path):
            local = path
        else:  # kimia_infer reads whisper-large-v3 and the tokenizer from the checkpoint folder
            from huggingface_hub import snapshot_download
            local = snapshot_download(path, revision=revision)
        kwargs: dict[str, Any] = {"model_path": local, "kimia_token_offset": model.config.kimia_token_offset}
        if "kimia_text_audiodelaytokens" in inspect.signature(prompt_manager_cls).parameters:
            kwargs["kimia_text_audiodelaytokens"] = getattr(model.config, "kimia_mimo_audiodelaytokens", 6)
        builder = KimiaPromptBuilder(prompt_manager_cls(**kwargs))
        adapter = cls(model, builder, labels, prompt, site=site, source=path, revision=revision, scoring=scoring,
                      synonyms=synonyms)
        if self_check:
            adapter.self_check()
        return adapter

    # --- inputs ------------------------------------------------------------------------------
    def build_batch(self, waveforms: list[np.ndarray]) -> Batch:
        """Both streams left-padded (with the text blank) to a common length; whisper features padded."""
        clips = [self.builder.build(w, self.prompt) for w in waveforms]
        for c in clips:
            self._check_layout(c)
        B, T = len(clips), max(len(c.audio_ids) for c in clips)
        N = max(int(c.continuous.sum()) for c in clips)
        D = clips[0].whisper.shape[-1]
        pad = int(self.builder.pad_id)
        audio_ids = torch.full((B, T), pad, dtype=torch.long)
        text_ids = torch.full((B, T), pad, dtype=torch.long)
        continuous = torch.zeros(B, T, dtype=torch.bool)
        attention = torch.zeros(B, T, dtype=torch.long)
        whisper = torch.zeros(B, max(N, 1), D, dtype=clips[0].whisper.dtype)
        for b, c in enumerate(clips):
            n, k = len(c.audio_ids), int(c.continuous.sum())
            audio_ids[b, T - n:] = c.audio_ids
            text_ids[b, T - n:] = c.text_ids
            continuous[b, T - n:] = c.continuous
            attention[b, T - n:] = 1
            whisper[b, :k] = c.whisper[:k]
        return Batch({"input_ids": audio_ids, "text_input_ids": text_ids, "is_continuous_mask": continuous,
                      "whisper_input_feature": whisper}, attention, continuous.clone())

    def _check_layout(self, c: KimiInputs) -> None:
        """The continuous positions must be exactly the interior of the one media span (as the model assumes)."""
        begin = (c.audio_ids == self.media_begin).nonzero().flatten()
        end = (c.audio_ids == self.media_end).nonzero().flatten()
        if len(begin) != 1 or len(end) != 1:
            raise ValueError(f"expected one media span per clip, found {len(begin)} begin / {len(end)} end tokens")
        interior = torch.zeros_like(c.continuous)
        interior[int(begin[0]) + 1:int(end[0])] = True
        if not torch.equal(interior, c.continuous):
            raise ValueError("is_continuous_mask is not the interior of the media span")
        if c.whisper.shape[0] < int(c.continuous.sum()):
            raise ValueError(f"{c.whisper.shape[0]} whisper frames for {int(c.continuous.sum())} speech tokens")

    # --- forward, split ----------------------------------------------------------------------
    def embed(self, batch: Batch) -> Embedded:
        """The remote forward's input merge, row by row: speech-token embeddings mixed with the
        whisper features through `vq_adaptor` on the continuous positions, plus the text stream."""
        ids, text = batch.inputs["input_ids"], batch.inputs["text_input_ids"]
        cont = batch.inputs["is_continuous_mask"].bool()
        embed_tokens = self.model.get_input_embeddings()
        audio_emb = embed_tokens(ids)
        if self.use_whisper_feature and cont.any():
            adaptor = self.model.get_decoder().vq_adaptor
            feats = batch.inputs["whisper_input_feature"]
            B, T = ids.shape
            expanded = torch.zeros(B, T, feats.shape[-1], dtype=feats.dtype, device=feats.device)
            take = torch.arange(feats.shape[1], device=feats.device)[None, :] < cont.sum(-1, keepdim=True)
            expanded[cont] = feats[take]
            adaptor_dtype = next(adaptor.parameters()).dtype
            whisper_emb = adaptor(expanded.to(adaptor_dtype)).to(audio_emb.device)
            whisper_emb = whisper_emb * cont[:, :, None]
            mixed = (audio_emb + whisper_emb) * torch.sqrt(
                torch.tensor(2.0, dtype=whisper_emb.dtype, device=audio_emb.device))
            audio_emb = audio_emb * (~cont[:, :, None]) + mixed * cont[:, :, None]
        inputs_embeds = audio_emb + embed_tokens(text) if bool(text.sum() != 0) else audio_emb
        return Embedded(inputs_embeds, batch.attention_mask, self.position_ids(batch))

    def decode_last(self, embedded: Embedded) -> torch.Tensor:
        """Text logits at the last position [R, V]: the model's decoder over all rows at once."""
        mask = embedded.attention_mask
        out = self.decoder(input_ids=None, text_input_ids=None, inputs_embeds=embedded.inputs_embeds,
                           attention_mask=None if bool(mask.all()) else mask,  # kimia_infer passes None
                           position_ids=embedded.position_ids, use_cache=False, return_dict=False)
        return self.model.get_output_embeddings()(out[0][:, -1])

    # --- the model's own full forward, for checking the split --------------------------------
    @torch.no_grad()
    def full_forward_last(self, waveform: np.ndarray) -> torch.Tensor:
        """Text logits [1, V] at the last position from the unsplit forward, fed as kimia_infer feeds it."""
        c = self.builder.build(waveform, self.prompt)
        dev = self.device
        T = len(c.audio_ids)
        audio_logits, text_logits, *_ = self.model(
            input_ids=c.audio_ids[None].to(dev), text_input_ids=c.text_ids[None].to(dev),
            whisper_input_feature=[c.whisper[None].to(dev)], is_continuous_mask=c.continuous[None].to(dev),
            position_ids=torch.arange(T, device=dev)[None], use_cache=False, return_dict=False)
        return text_logits[:, -1]

    @torch.no_grad()
    def self_check(self, waveform: np.ndarray | None = None, atol: float | None = None) -> float:
        """Max |Δ log-softmax| between the split path and the full forward on one clip; raises if too big."""
        if waveform is None:
            t = np.arange(SAMPLING_RATE, dtype=np.float32) / SAMPLING_RATE
            wobble = 1 + 0.5 * np.sin(2 * math.pi * 3 * t)
            waveform = (0.1 * np.sin(2 * math.pi * 220 * t) * wobble).astype(np.float32)
        split = self.decode_last(self.embed(self.to_device(self.build_batch([waveform]))))
        full = self.full_forward_last(waveform)
        if atol is None:
            atol = self_check_tolerance(full.dtype, full)
        diff = float((torch.log_softmax(split.float(), -1) - torch.log_softmax(full.float(), -1)).abs().max())
        if not diff <= atol:
            raise RuntimeError(f"Kimi-Audio split forward (embed + decode_last) differs from the model's own forward "
                               f"by {diff:.3g} > {atol:g} in log-probabilities: the remote code is not the one this "
                               f"adapter was written against (check the pinned revision)")
        return diff
