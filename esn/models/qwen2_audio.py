"""Qwen2-Audio (7B, 7B-Instruct) adapter, transformers' own classes.

Inputs come from the checkpoint's own `Qwen2AudioProcessor` and chat template. In transformers 5.x
the processor itself expands the one `<|AUDIO|>` of the rendered chat to one token per audio frame
(25 per second) and always pads the log-mel features to 30 s (3000 frames; the encoder refuses any
other length), so each clip is featurised alone, whatever the batch.

Between the audio tower and the language model the model's forward does (transformers 5.x, the
"expanded" path taken whenever two `<|AUDIO|>` tokens are adjacent, i.e. the processor expanded them):
a bidirectional attention mask that hides the frames past each clip's conv length
((L-1)//2+1 of L valid mel frames) -> `audio_tower` (Whisper encoder + 2× average pooling +
LayerNorm) -> `multi_modal_projector` (one linear) -> keep the first n frames of each clip,
n = ((L-1)//2+1-2)//2+1 -> `masked_scatter` into the `<|AUDIO|>` positions, row-major. The model
has no `get_audio_features` in 5.x, so `audio_embeddings` reproduces those steps with the model's
own modules. (The legacy path — one unexpanded `<|AUDIO|>` per clip, merged by
`_merge_input_ids_with_audio_features` — is never produced by the 5.x processor, except for clips
so short they give a single audio frame, which `build_batch` refuses.)

The language model gets no position ids from the forward (so its own `arange`, which counts left
padding); the base class's cumsum positions equal that without padding and make batched scoring
equal one-at-a-time scoring with it.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import Qwen2AudioForConditionalGeneration
from transformers.masking_utils import create_bidirectional_mask

from esn.models.base import Batch
from esn.models.processor_family import ProcessorAdapter


class Qwen2AudioAdapter(ProcessorAdapter):
    family = "qwen2_audio"
    audio_token = "<|AUDIO|>"
    model_class = Qwen2AudioForConditionalGeneration
    audio_token_attr = "audio_token_index"

    def build_batch(self, waveforms: list[np.ndarray]) -> Batch:
        enc = self.encode(waveforms)
        ids = enc["input_ids"]
        audio_mask = ids == self.audio_token_id
        if (audio_mask.sum(-1) < 2).any():
            raise ValueError("a clip shorter than 2 audio frames (~60 ms) would switch Qwen2-Audio to its legacy "
                             "merge path; drop such clips")
        return Batch({"input_ids": ids, "input_features": enc["input_features"],
                      "feature_attention_mask": enc["feature_attention_mask"]},
                     enc["attention_mask"], audio_mask)

    def audio_embeddings(self, batch: Batch) -> torch.Tensor:
        """The model's own audio path (Qwen2AudioModel.forward, expanded-placeholder branch)."""
        core = self.model.model
        tower = core.audio_tower
        feats = batch.inputs["input_features"].to(tower.device)
        feature_mask = batch.inputs["feature_attention_mask"].to(tower.device)
        conv_lengths, out_lengths = tower._get_feat_extract_output_lengths(feature_mask.sum(-1))
        n_clips, _, n_mel = feats.shape
        max_len = (n_mel - 2) // 2 + 1
        positions = torch.arange(max_len, dtype=conv_lengths.dtype, device=conv_lengths.device)
        valid = positions[None, :] < conv_lengths[:, None]
        dummy = torch.zeros((n_clips, max_len, 1), dtype=self.model.dtype, device=tower.device)
        mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=valid.long())
        hidden = tower(feats, attention_mask=mask).last_hidden_state
        audio = core.multi_modal_projector(hidden)
        keep = torch.arange(audio.shape[1], device=audio.device)[None, :] < out_lengths.to(audio.device)[:, None]
        return audio[keep]
