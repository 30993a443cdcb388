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

from typing import Any

import numpy as np
import torch
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration
from transformers.masking_utils import create_bidirectional_mask

from esn.models.base import AudioLMAdapter, Batch

SAMPLING_RATE = 16_000


class Qwen2AudioAdapter(AudioLMAdapter):
    family = "qwen2_audio"
    audio_token = "<|AUDIO|>"

    def __init__(self, model: Any, processor: Any, labels: list[str], prompt: str, *,
                 system_prompt: str | None = None, **kw: Any):
        super().__init__(model, processor.tokenizer, labels, prompt, **kw)
        self.processor = processor
        self.system_prompt = system_prompt
        if getattr(processor, "audio_token", self.audio_token) != self.audio_token:
            raise ValueError(f"processor audio token {processor.audio_token!r} is not {self.audio_token!r}")
        if model.config.audio_token_index != self.audio_token_id:
            raise ValueError(f"tokenizer maps {self.audio_token} to {self.audio_token_id} but the model expects "
                             f"audio_token_index {model.config.audio_token_index}: processor and model do not "
                             f"belong together")

    @classmethod
    def load(cls, path: str, *, labels: list[str], prompt: str, revision: str | None = None,
             dtype: str = "float32", device: str = "cpu", site: str = "act_fn",
             system_prompt: str | None = None, trust_remote_code: bool = False) -> "Qwen2AudioAdapter":
        model = Qwen2AudioForConditionalGeneration.from_pretrained(
            path, revision=revision, dtype=getattr(torch, dtype), use_safetensors=True).to(device)
        processor = AutoProcessor.from_pretrained(path, revision=revision)
        return cls(model, processor, labels, prompt, site=site, source=path, revision=revision,
                   system_prompt=system_prompt)

    def conversation(self) -> list[dict[str, Any]]:
        """One user turn: the clip then the prompt (plus an optional system turn; the template adds
        its default system turn when there is none)."""
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
