"""Qwen2.5-Omni (7B, 3B) thinker adapter; also the model organism's, which is the same class.

Only the thinker (audio tower + text decoder) is loaded. Its processor cannot be built without
torchvision (image/video processors), so inputs are built the way the processor does it: chat
template -> the one `<|AUDIO|>` token replaced by as many copies as the clip has audio frames ->
tokenize; log-mel features from the checkpoint's `WhisperFeatureExtractor` (128 bins). The chat
template is the processor's own file (`chat_template.json`, else `chat_template.jinja`), read the
way `ProcessorMixin.from_pretrained` reads it, not the tokenizer's.

System prompt: by default the Qwen "virtual human" prompt (`DEFAULT_SYSTEM`). The model card makes it
mandatory for speech output, and the official examples pass it for text-only answers too, so it is the
prompt the released model is used (and was tuned) with; evaluation kits differ (some leave the
template's "You are a helpful assistant."), so it is a config choice (`models.<m>.system_prompt`),
recorded in every store's provenance. `""` means no system turn at all (the organism, which is trained
that way).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, Qwen2_5OmniThinkerForConditionalGeneration, WhisperFeatureExtractor
from transformers.utils import cached_file

from esn.models.base import DEFAULT_SCORING, AudioLMAdapter, Batch, check_loaded_weights

log = logging.getLogger(__name__)

#: The processor's template files, in the order `ProcessorMixin.from_pretrained` (transformers 5.x) prefers them.
PROCESSOR_TEMPLATE_FILES = ("chat_template.json", "chat_template.jinja")

DEFAULT_SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
                  "perceiving auditory and visual inputs, as well as generating text and speech.")


def mel_frames(n_samples: int, hop: int = 160) -> int:
    """Valid log-mel frames of a clip, by the feature extractor's own rule (mask[::hop])."""
    return -(-n_samples // hop)


def audio_token_count(frames: int) -> int:
    """Audio tokens the Qwen2.5-Omni / Qwen2-Audio / AF3 encoders emit for `frames` mel frames (25/s)."""
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


def whisper_features(extractor: WhisperFeatureExtractor, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel features [B, mels, F] and their frame mask [B, F], independent of batch composition.

    Each clip gets n_fft trailing zeros before extraction, so its last valid frames see zeros (as
    with the processor's 30-s padding) whether it is the longest clip of a batch or alone.
    """
    pad = np.zeros(extractor.n_fft, dtype=np.float32)
    padded = [np.concatenate([np.asarray(w, dtype=np.float32), pad]) for w in waveforms]
    feats = extractor(padded, sampling_rate=extractor.sampling_rate, padding="longest",
                      return_attention_mask=False, return_tensors="pt")["input_features"]
    frames = torch.tensor([mel_frames(len(w), extractor.hop_length) for w in waveforms])
    mask = (torch.arange(feats.shape[-1])[None, :] < frames[:, None]).long()
    return feats, mask


def processor_chat_template(path: str, revision: str | None = None) -> tuple[str, str] | None:
    """(template, file name) of the checkpoint's processor, read from its file (no torchvision needed)."""
    for name in PROCESSOR_TEMPLATE_FILES:
        found = cached_file(path, name, revision=revision, _raise_exceptions_for_missing_entries=False)
        if found:
            text = Path(found).read_text(encoding="utf-8")
            return (json.loads(text)["chat_template"] if name.endswith(".json") else text), name
    return None


def checkpoint_chat_template(path: str, tokenizer: Any, revision: str | None = None) -> tuple[str, str]:
    """The template the real processor renders with: its own file, else the tokenizer's; never none.

    A tokenizer template that differs from the processor's is logged (the prompt the model sees would
    depend on which one a tool picks).
    """
    own = processor_chat_template(path, revision)
    tok_template = getattr(tokenizer, "chat_template", None)
    if own is None:
        if not tok_template:
            raise ValueError(f"checkpoint {path} has no chat template: neither {' nor '.join(PROCESSOR_TEMPLATE_FILES)} "
                             "nor a tokenizer chat_template; add the processor's template file to the checkpoint")
        return tok_template, "tokenizer"
    template, name = own
    if tok_template and tok_template != template:
        log.warning("checkpoint %s: the processor's chat template (%s) differs from the tokenizer's "
                    "(tokenizer_config.json); rendering with the processor's, as the real processor does", path, name)
    return template, name


class QwenOmniAdapter(AudioLMAdapter):
    family = "qwen2_5_omni"
    audio_token = "<|AUDIO|>"
    audio_site = True

    def __init__(self, model: Any, tokenizer: Any, feature_extractor: WhisperFeatureExtractor,
                 labels: list[str], prompt: str, *, system_prompt: str | None = DEFAULT_SYSTEM,
                 chat_template: str | None = None, chat_template_source: str = "tokenizer", **kw: Any):
        super().__init__(model, tokenizer, labels, prompt, **kw)
        self.feature_extractor = feature_extractor
        self.system_prompt = system_prompt or None
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        if not self.chat_template:
            raise ValueError("no chat template: pass one or give the tokenizer one")
        self.chat_template_source = chat_template_source if chat_template else "tokenizer"
        tokenizer.padding_side = "left"

    @classmethod
    def load(cls, path: str, *, labels: list[str], prompt: str, revision: str | None = None,
             dtype: str = "float32", device: str = "cpu", site: str = "act_fn",
             system_prompt: str | None = DEFAULT_SYSTEM, trust_remote_code: bool = False, scoring: str = DEFAULT_SCORING,
             synonyms: dict[str, list[str]] | None = None) -> "QwenOmniAdapter":
        model, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            path, revision=revision, dtype=getattr(torch, dtype), use_safetensors=True, output_loading_info=True)
        check_loaded_weights(model, info, path)
        model = model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        extractor = WhisperFeatureExtractor.from_pretrained(path, revision=revision)
        template, source = checkpoint_chat_template(path, tokenizer, revision)
        return cls(model, tokenizer, extractor, labels, prompt, site=site, source=path, revision=revision,
                   system_prompt=system_prompt, chat_template=template, chat_template_source=source,
                   scoring=scoring, synonyms=synonyms)

    def chat_text(self) -> str:
        """The rendered chat with one audio placeholder, ready for the answer."""
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        messages.append({"role": "user", "content": [{"type": "audio", "audio": "clip"},
                                                     {"type": "text", "text": self.prompt}]})
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template,
                                                  add_generation_prompt=True, tokenize=False)

    def provenance(self) -> dict[str, str]:
        return {**super().provenance(), "system_prompt": self.system_prompt or "",
                "chat_template_source": self.chat_template_source}

    def build_batch(self, waveforms: list[np.ndarray]) -> Batch:
        feats, frame_mask = whisper_features(self.feature_extractor, waveforms)
        template = self.chat_text()
        if template.count(self.audio_token) != 1:
            raise ValueError(f"chat template must render exactly one {self.audio_token}; got: {template!r}")
        texts = [template.replace(self.audio_token, self.audio_token * audio_token_count(int(n)))
                 for n in frame_mask.sum(-1)]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return Batch({"input_ids": enc["input_ids"], "input_features": feats, "feature_attention_mask": frame_mask},
                     enc["attention_mask"], enc["input_ids"] == self.audio_token_id)

    def audio_embeddings(self, batch: Batch) -> torch.Tensor:
        feats = batch.inputs["input_features"].to(self.model.dtype)
        return self.model.get_audio_features(feats, batch.inputs["feature_attention_mask"]).last_hidden_state

    def audio_site_rows(self, batch: Batch) -> torch.Tensor:
        """The tower runs every clip's valid frames packed into one sequence [P, d] (clip-major; windows of
        2·n_window mel frames attend within themselves): clip b owns its (L_b−1)//2+1 frames after the stride-2
        conv, L_b its valid mel frames. No padding frames."""
        frames = (batch.inputs["feature_attention_mask"].sum(-1) - 1) // 2 + 1
        return torch.repeat_interleave(torch.arange(len(frames), device=frames.device), frames)

    def position_ids(self, batch: Batch) -> torch.Tensor:
        """Qwen2.5-Omni's multimodal RoPE index [3, B, T] (left padding handled by the model)."""
        pos, _ = self.model.model.get_rope_index(
            batch.inputs["input_ids"], None, None, batch.attention_mask, False,
            batch.inputs["feature_attention_mask"].sum(-1), None)
        return pos
