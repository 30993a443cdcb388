"""What the families with a real transformers processor share (Audio Flamingo 3, Qwen2-Audio).

Their checkpoints ship a processor that builds everything from (text, audio): the chat template
renders one audio placeholder, the processor expands it to one token per audio frame and computes
the log-mel features. Subclasses name the model class, the mask key and the audio path.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from transformers import AutoProcessor, BatchFeature

from esn.models.base import DEFAULT_SCORING, AudioLMAdapter, Batch, check_loaded_weights

SAMPLING_RATE = 16_000


class ProcessorAdapter(AudioLMAdapter):
    model_class: ClassVar[Any]
    #: name of the model config attribute holding the audio placeholder id
    audio_token_attr: ClassVar[str] = "audio_token_id"
    audio_site = True
    #: the batch input holding the mel-frame mask of each row of `input_features`
    feature_mask_key: ClassVar[str] = "feature_attention_mask"

    def __init__(self, model: Any, processor: Any, labels: list[str], prompt: str, *,
                 system_prompt: str | None = None, **kw: Any):
        super().__init__(model, processor.tokenizer, labels, prompt, **kw)
        self.processor = processor
        self.system_prompt = system_prompt or None
        # Uploads keep the processor's template in chat_template.json/.jinja or only in tokenizer_config.json;
        # transformers 5 reads the latter into the tokenizer alone, so the processor would have none.
        self.chat_template_source = "processor"
        if not getattr(processor, "chat_template", None):
            if not getattr(processor.tokenizer, "chat_template", None):
                raise ValueError("the checkpoint has no chat template (chat_template.json, chat_template.jinja or "
                                 "tokenizer_config.json)")
            processor.chat_template = processor.tokenizer.chat_template
            self.chat_template_source = "tokenizer"
        if getattr(processor, "audio_token", self.audio_token) != self.audio_token:
            raise ValueError(f"processor audio token {processor.audio_token!r} is not {self.audio_token!r}")
        model_audio_id = getattr(model.config, self.audio_token_attr, None)
        if model_audio_id is not None and model_audio_id != self.audio_token_id:
            raise ValueError(f"tokenizer maps {self.audio_token} to {self.audio_token_id} but the model expects "
                             f"{self.audio_token_attr} {model_audio_id}: processor and model do not belong together")

    @classmethod
    def load(cls, path: str, *, labels: list[str], prompt: str, revision: str | None = None,
             dtype: str = "float32", device: str = "cpu", site: str = "act_fn",
             system_prompt: str | None = None, trust_remote_code: bool = False, scoring: str = DEFAULT_SCORING,
             synonyms: dict[str, list[str]] | None = None) -> "ProcessorAdapter":
        model, info = cls.model_class.from_pretrained(
            path, revision=revision, dtype=getattr(torch, dtype), use_safetensors=True, output_loading_info=True)
        check_loaded_weights(model, info, path)
        model = model.to(device)
        processor = AutoProcessor.from_pretrained(path, revision=revision)
        return cls(model, processor, labels, prompt, site=site, source=path, revision=revision,
                   system_prompt=system_prompt, scoring=scoring, synonyms=synonyms)

    def audio_site_rows(self, batch: Batch) -> torch.Tensor:
        """The Whisper encoder runs [rows, T, d] on features padded to 30 s (T = 1500 frames after the stride-2
        conv); row b's first (L_b−1)//2+1 frames are its valid ones (the rest are hidden from attention)."""
        feats, mask = batch.inputs["input_features"], batch.inputs[self.feature_mask_key]
        if feats.shape[0] != batch.size:
            raise ValueError(f"{self.family}: the audio_mlp site needs one 30-s window per clip; this batch has "
                             f"{feats.shape[0]} windows for {batch.size} clips (a clip longer than 30 s)")
        T = (feats.shape[-1] - 1) // 2 + 1
        valid = torch.arange(T, device=mask.device)[None, :] < ((mask.sum(-1) - 1) // 2 + 1)[:, None]
        rows = torch.arange(batch.size, device=mask.device)[:, None].expand(-1, T)
        return torch.where(valid, rows, -1).reshape(-1)

    def provenance(self) -> dict[str, str]:
        return {**super().provenance(), "system_prompt": self.system_prompt or "",
                "chat_template_source": self.chat_template_source}

    def conversation(self) -> list[dict[str, Any]]:
        """One user turn: the clip then the prompt (plus an optional system turn; the templates add
        their default system turn when there is none)."""
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": [{"type": "audio", "audio": "clip"},
                                                     {"type": "text", "text": self.prompt}]})
        return messages

    def chat_text(self) -> str:
        """The rendered chat with one audio placeholder, ready for the answer."""
        text = self.processor.apply_chat_template(self.conversation(), add_generation_prompt=True, tokenize=False)
        if text.count(self.audio_token) != 1:
            raise ValueError(f"chat template must render exactly one {self.audio_token}; got: {text!r}")
        return text

    def encode(self, waveforms: list[np.ndarray]) -> BatchFeature:
        """The processor's own encoding of the batch, left-padded (padding only for the text: padding
        the features too would break encoders that need 30-s windows)."""
        return self.processor(text=[self.chat_text()] * len(waveforms),
                              audio=[np.asarray(w, dtype=np.float32) for w in waveforms],
                              sampling_rate=SAMPLING_RATE, return_tensors="pt",
                              text_kwargs={"padding": True, "padding_side": "left"})
