"""Audio Flamingo 3 adapter (`nvidia/audio-flamingo-3-hf`, transformers' own classes).

Inputs come from the checkpoint's own `AudioFlamingo3Processor` and its chat template: the template
renders one `<sound>` placeholder before the user's text, and the processor expands it to one token
per audio frame the encoder will emit (25 per second), cuts clips into 30-s windows and pads each
window's log-mel features to 30 s (3000 frames: the encoder adds all 1500 position embeddings, so
shorter features would not even run). Every clip is therefore featurised alone, whatever the batch.

Between the audio tower and the language model the model's forward does (transformers 5.x):
`audio_tower` (Whisper encoder + 2× average pooling + LayerNorm) -> `multi_modal_projector`
(linear-GELU-linear) -> keep the valid frames of every window (window order, frame order) ->
`masked_scatter` into the `<sound>` positions, row-major. `get_audio_features(...).pooler_output`
is exactly that flattened tensor, so `audio_embeddings` uses it unchanged. The text decoder
(`model.get_decoder()`, a Qwen2Model) gets no special positions: the base class's left-padding-aware
cumsum positions are right (with no padding they equal the model's own `arange`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import AudioFlamingo3ForConditionalGeneration, AutoProcessor

from esn.models.base import AudioLMAdapter, Batch

SAMPLING_RATE = 16_000


class AudioFlamingo3Adapter(AudioLMAdapter):
    family = "audio_flamingo3"
    audio_token = "<sound>"

    def __init__(self, model: Any, processor: Any, labels: list[str], prompt: str, *,
                 system_prompt: str | None = None, **kw: Any):
        super().__init__(model, processor.tokenizer, labels, prompt, **kw)
        self.processor = processor
        self.system_prompt = system_prompt
        if getattr(processor, "audio_token", self.audio_token) != self.audio_token:
            raise ValueError(f"processor audio token {processor.audio_token!r} is not {self.audio_token!r}")
        model_audio_id = getattr(model.config, "audio_token_id", None)
        if model_audio_id is not None and model_audio_id != self.audio_token_id:
            raise ValueError(f"tokenizer maps {self.audio_token} to {self.audio_token_id} but the model expects "
                             f"audio_token_id {model_audio_id}: processor and model do not belong together")

    @classmethod
    def load(cls, path: str, *, labels: list[str], prompt: str, revision: str | None = None,
             dtype: str = "float32", device: str = "cpu", site: str = "act_fn",
             system_prompt: str | None = None, trust_remote_code: bool = False) -> "AudioFlamingo3Adapter":
        model = AudioFlamingo3ForConditionalGeneration.from_pretrained(
            path, revision=revision, dtype=getattr(torch, dtype), use_safetensors=True).to(device)
        processor = AutoProcessor.from_pretrained(path, revision=revision)
        return cls(model, processor, labels, prompt, site=site, source=path, revision=revision,
                   system_prompt=system_prompt)

    def conversation(self) -> list[dict[str, Any]]:
        """One user turn: the clip and the prompt (plus an optional system turn)."""
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

    def build_batch(self, waveforms: list[np.ndarray]) -> Batch:
        text = self.chat_text()
        enc = self.processor(text=[text] * len(waveforms),
                             audio=[np.asarray(w, dtype=np.float32) for w in waveforms],
                             sampling_rate=SAMPLING_RATE, return_tensors="pt",
                             text_kwargs={"padding": True, "padding_side": "left"})
        ids = enc["input_ids"]
        return Batch({"input_ids": ids, "input_features": enc["input_features"],
                      "input_features_mask": enc["input_features_mask"]},
                     enc["attention_mask"], ids == self.audio_token_id)

    def audio_embeddings(self, batch: Batch) -> torch.Tensor:
        feats = batch.inputs["input_features"].to(self.model.dtype)
        out = self.model.get_audio_features(feats, batch.inputs["input_features_mask"], return_dict=True)
        return out.pooler_output
