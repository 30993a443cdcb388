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

import numpy as np
import torch
from transformers import AudioFlamingo3ForConditionalGeneration

from esn.models.base import Batch
from esn.models.processor_family import ProcessorAdapter


class AudioFlamingo3Adapter(ProcessorAdapter):
    family = "audio_flamingo3"
    audio_token = "<sound>"
    model_class = AudioFlamingo3ForConditionalGeneration
    feature_mask_key = "input_features_mask"

    def build_batch(self, waveforms: list[np.ndarray]) -> Batch:
        enc = self.encode(waveforms)
        ids = enc["input_ids"]
        return Batch({"input_ids": ids, "input_features": enc["input_features"],
                      "input_features_mask": enc["input_features_mask"]},
                     enc["attention_mask"], ids == self.audio_token_id)

    def audio_embeddings(self, batch: Batch) -> torch.Tensor:
        feats = batch.inputs["input_features"].to(self.model.dtype)
        out = self.model.get_audio_features(feats, batch.inputs["input_features_mask"], return_dict=True)
        return out.pooler_output
