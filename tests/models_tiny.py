"""Tiny random checkpoints of every model family, built offline, for the adapter tests.

`build_<family>(folder)` makes a randomly initialised model of the REAL transformers class at a tiny
size, with a tokenizer/processor that needs no download (a byte-level BPE trained in milliseconds by
`esn.organism.build_tokenizer`, plus the family's special tokens and chat template), saves both with
`save_pretrained` into `folder` and returns the folder, ready for `Adapter.load(folder, ...)`:

- Qwen2.5-Omni thinker: `esn.organism.build_model` (the model organism's own builder) + a
  `WhisperFeatureExtractor(feature_size=128)`;
- Audio Flamingo 3: `AudioFlamingo3ForConditionalGeneration` + `AudioFlamingo3Processor` with the
  processor chat template of `nvidia/audio-flamingo-3-hf` (as written by transformers' conversion
  script) and `<sound>`;
- Qwen2-Audio: `Qwen2AudioForConditionalGeneration` + `Qwen2AudioProcessor` with its default (vicuna-
  style "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>") chat template.

Kimi-Audio's model class is remote code that this repository does not ship (tests/test_kimi_real.py runs
the real one when its files are given locally, see tests/kimi_remote.py), and kimia_infer needs the
GLM-4-voice tokenizer and whisper-large-v3 weights, so for CI `FakeKimiAudio` and `FakeKimiPromptManager`
are FAKES: small torch modules with the exact call
signatures and module layout of `MoonshotKimiaForCausalLM` and kimia_infer's `KimiAPromptManager`
(two token streams, whisper features merged through `vq_adaptor` on the continuous positions, Qwen2MLP
decoder layers at `model.layers[i].mlp`, `(audio_logits, text_logits, past)` outputs). They test the
adapter's plumbing against that interface, not Kimi-Audio itself.
"""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration, AudioFlamingo3Processor,
                          Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                          WhisperFeatureExtractor)
from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP, Qwen2RMSNorm

from esn.organism import OrganismConfig, build_model, build_tokenizer

PROMPT = "What emotion does the speaker express? Answer with one word."
SAMPLING_RATE = 16_000

#: The processor chat template of nvidia/audio-flamingo-3-hf (transformers' convert_audioflamingo3_to_hf.py).
AF3_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "{% for m in messages if m['content'] is not none %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}"
    "{{ m['content'] }}"
    "{% else %}"
    "{% set audio = namespace(found=False) %}"
    "{% set text_buf = namespace(v='') %}"
    "{% for c in m['content'] %}"
    "{% if c.get('type') == 'audio' or 'audio' in c %}"
    "{% set audio.found = True %}"
    "{% elif c.get('type') == 'text' or 'text' in c %}"
    "{% set text_buf.v = text_buf.v + c['text'] %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if audio.found %}{{ '<sound>' }}{% endif %}{{ text_buf.v }}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


def waves(seconds: list[float] | tuple[float, ...], seed: int = 0) -> list[np.ndarray]:
    """Deterministic speech-like test clips (a wobbling tone plus noise) of the given durations."""
    rng = np.random.default_rng(seed)
    out = []
    for i, s in enumerate(seconds):
        t = np.arange(int(s * SAMPLING_RATE)) / SAMPLING_RATE
        f0 = 120 + 40 * i
        tone = np.sin(2 * math.pi * f0 * t + 2 * np.sin(2 * math.pi * 3 * t))
        out.append((0.2 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32))
    return out


def _text_config(tok: Any, hidden: int = 64, mlp: int = 128, layers: int = 2) -> dict[str, Any]:
    return dict(model_type="qwen2", vocab_size=len(tok), hidden_size=hidden, intermediate_size=mlp,
                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=1024, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)


def build_omni(folder: str | Path, seed: int = 0, audio_layers: int = 1) -> Path:
    """A tiny Qwen2.5-Omni thinker saved like a checkpoint (the organism's builders, random weights)."""
    folder = Path(folder)
    torch.manual_seed(seed)
    cfg = OrganismConfig(prompt=PROMPT, vocab_size=300, audio_d_model=32, audio_layers=audio_layers, audio_heads=2,
                         audio_ffn=64, hidden=64, layers=2, heads=4, kv_heads=2, mlp=128)
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size)
    model = build_model(cfg, tok)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=128, sampling_rate=SAMPLING_RATE).save_pretrained(folder)
    return folder


def build_af3(folder: str | Path, seed: int = 0, audio_layers: int = 1) -> Path:
    """A tiny Audio Flamingo 3 with its real processor class and chat template."""
    folder = Path(folder)
    torch.manual_seed(seed)
    tok = build_tokenizer(PROMPT, 300)
    tok.add_tokens(["<sound>"], special_tokens=True)
    config = AudioFlamingo3Config(
        audio_config=dict(model_type="audioflamingo3_encoder", num_mel_bins=128, num_hidden_layers=audio_layers,
                          num_attention_heads=2, intermediate_size=64, hidden_size=32, max_source_positions=1500),
        text_config=_text_config(tok), audio_token_id=tok.convert_tokens_to_ids("<sound>"))
    AudioFlamingo3ForConditionalGeneration(config).save_pretrained(folder)
    processor = AudioFlamingo3Processor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128, return_attention_mask=True),
        tokenizer=tok, chat_template=AF3_CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return folder


def build_qwen2_audio(folder: str | Path, seed: int = 0, label_tokens: bool = True, audio_layers: int = 1) -> Path:
    """A tiny Qwen2-Audio with its real processor class and (default) chat template (emotion words
    multi-token when `label_tokens` is False)."""
    folder = Path(folder)
    torch.manual_seed(seed)
    tok = build_tokenizer(PROMPT, 300, label_tokens=label_tokens)
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=audio_layers,
                          encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32, max_source_positions=1500),
        text_config=_text_config(tok), audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    Qwen2AudioForConditionalGeneration(config).save_pretrained(folder)
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tok)
    processor.save_pretrained(folder)
    return folder


# --- Kimi-Audio: FAKES with the remote code's interface ----------------------------------------

KIMI_SPECIALS = ["<|im_msg_end|>", "<|im_media_begin|>", "<|im_media_end|>", "<|im_kimia_text_blank|>",
                 "<|im_kimia_text_eos|>", "<|im_kimia_user_msg_start|>", "<|im_kimia_assistant_msg_start|>",
                 "<|im_kimia_speech_ct_id|>", "<|im_kimia_speech_ctd_id|>"]
KIMI_SPEECH_CODES = 32      # size of the fake speech-token codebook
KIMI_HOP = 1280             # samples per speech token (12.5 Hz at 16 kHz), as GLM-4-voice / whisper // 4
KIMI_WHISPER_DIM = 40       # stands in for whisper-large-v3's 4 × 1280 = 5120


@dataclass
class FakeKimiConfig:
    """The config fields of `MoonshotKimiaForCausalLM` that the adapter and the fake use (FAKE)."""

    vocab_size: int
    kimia_media_begin: int
    kimia_media_end: int
    kimia_token_offset: int
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    kimia_mimo_layers: int = 1
    kimia_mimo_transformer_from_layer_index: int = 1
    kimia_adaptor_input_dim: int = KIMI_WHISPER_DIM
    kimia_mimo_audiodelaytokens: int = 6
    use_whisper_feature: bool = True
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    use_cache: bool = True
    output_attentions: bool = False
    output_hidden_states: bool = False
    use_return_dict: bool = False


class FakeKimiaAttention(nn.Module):
    """FAKE of MoonshotAttention: causal self-attention with RoPE at `position_ids`; padded positions
    (padding_mask 0) neither attend nor are attended to and output zeros (as flash-attn's pad_input)."""

    def __init__(self, config: FakeKimiConfig):
        super().__init__()
        h, self.n_heads = config.hidden_size, config.num_attention_heads
        self.head_dim = h // self.n_heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(h, h, bias=True) for _ in range(3))
        self.o_proj = nn.Linear(h, h, bias=False)
        self.rope_theta = config.rope_theta

    def _rope(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        half = self.head_dim // 2
        inv = 1.0 / (self.rope_theta ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
        ang = position_ids.float()[:, None, :, None] * inv          # [B, 1, T, half]
        cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_value=None,
                output_attentions=False, use_cache=False, padding_mask=None):
        B, T, H = hidden_states.shape
        q, k, v = (p(hidden_states).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        if position_ids.shape[0] != B:
            position_ids = position_ids.expand(B, -1)
        q, k = self._rope(q, position_ids), self._rope(k, position_ids)
        valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if padding_mask is None else padding_mask.bool()
        allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()[None] & valid[:, None, :]
        allowed = allowed | torch.eye(T, dtype=torch.bool, device=q.device)[None]   # no empty rows
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        out = out.transpose(1, 2).reshape(B, T, H) * valid[:, :, None]
        return self.o_proj(out), None, None


class FakeKimiaDecoderLayer(nn.Module):
    """FAKE of MoonshotDecoderLayer: pre-norm attention + a real transformers `Qwen2MLP`."""

    def __init__(self, config: FakeKimiConfig):
        super().__init__()
        self.self_attn = FakeKimiaAttention(config)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_value=None,
                output_attentions=False, use_cache=False, padding_mask=None):
        residual = hidden_states
        hidden_states, _, _ = self.self_attn(self.input_layernorm(hidden_states), attention_mask=attention_mask,
                                             position_ids=position_ids, padding_mask=padding_mask)
        hidden_states = residual + hidden_states
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return (hidden_states,)


class FakeVQAdaptor(nn.Module):
    """FAKE of VQAdaptor: Linear-SiLU-Dropout-Linear-LayerNorm from whisper features to the hidden size."""

    def __init__(self, config: FakeKimiConfig):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(config.kimia_adaptor_input_dim, config.hidden_size), nn.SiLU(),
                                    nn.Dropout(0.0), nn.Linear(config.hidden_size, config.hidden_size),
                                    nn.LayerNorm(config.hidden_size, eps=config.rms_norm_eps))

    def forward(self, x):
        return self.layers(x)


class FakeKimiaModel(nn.Module):
    """FAKE of MoonshotKimiaModel, with its forward's input merge transcribed as written — including
    its one [T, D] whisper buffer shared by all rows (it was written for a batch of one)."""

    def __init__(self, config: FakeKimiConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([FakeKimiaDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mimo_layers = nn.ModuleList([FakeKimiaDecoderLayer(config) for _ in range(config.kimia_mimo_layers)])
        self.mimo_norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.use_whisper_feature = config.use_whisper_feature
        self.vq_adaptor = FakeVQAdaptor(config)
        self.kimia_media_begin = config.kimia_media_begin
        self.kimia_media_end = config.kimia_media_end
        self.kimia_mimo_transformer_from_layer_index = config.kimia_mimo_transformer_from_layer_index

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(self, input_ids=None, text_input_ids=None, whisper_input_feature=None, is_continuous_mask=None,
                attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        seq_length = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        if position_ids is None:
            position_ids = torch.arange(seq_length, dtype=torch.long, device=device)[None]
        if inputs_embeds is None:
            audio_emb = self.embed_tokens(input_ids)
            if self.use_whisper_feature and whisper_input_feature is not None:
                if not isinstance(whisper_input_feature, list):
                    whisper_input_feature = [whisper_input_feature.squeeze(0)]
                media_start_idx = (input_ids == self.kimia_media_begin).nonzero()
                media_end_idx = (input_ids == self.kimia_media_end).nonzero()
                expanded_whisper = torch.zeros(audio_emb.shape[1], whisper_input_feature[0].shape[-1],
                                               dtype=whisper_input_feature[0].dtype, device=device)
                for (seg_idx, start_idx), (_, end_idx) in zip(media_start_idx, media_end_idx):
                    feat_len = end_idx - (start_idx + 1)
                    whisper_input_feature_i = whisper_input_feature[seg_idx].squeeze(0)
                    assert feat_len == is_continuous_mask[seg_idx].sum()
                    expanded_whisper[start_idx + 1:end_idx, :] = whisper_input_feature_i[:feat_len, :]
                expanded_whisper = expanded_whisper.unsqueeze(0)
                whisper_emb = self.vq_adaptor(expanded_whisper.transpose(0, 1)).transpose(0, 1)
                whisper_emb = whisper_emb * is_continuous_mask[:, :, None]
                root2 = torch.sqrt(torch.tensor(2.0, dtype=whisper_emb.dtype, device=device))
                mixed = (audio_emb + whisper_emb) * root2
                audio_emb = audio_emb * (~is_continuous_mask[:, :, None]) + mixed * is_continuous_mask[:, :, None]
            if text_input_ids is not None and text_input_ids.sum() != 0:
                inputs_embeds = audio_emb + self.embed_tokens(text_input_ids)
            else:
                inputs_embeds = audio_emb
        padding_mask = attention_mask
        hidden_states = inputs_embeds
        mimo_hidden_states = None
        for idx, layer in enumerate(self.layers):
            hidden_states = layer(hidden_states, attention_mask=attention_mask, position_ids=position_ids,
                                  padding_mask=padding_mask)[0]
            if idx == self.kimia_mimo_transformer_from_layer_index:
                mimo_hidden_states = hidden_states.clone()
        hidden_states = self.norm(hidden_states)
        for layer in self.mimo_layers:
            mimo_hidden_states = layer(mimo_hidden_states, attention_mask=attention_mask, position_ids=position_ids,
                                       padding_mask=padding_mask)[0]
        mimo_hidden_states = self.mimo_norm(mimo_hidden_states)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return (hidden_states, mimo_hidden_states) + (((),) if use_cache else ())


class FakeKimiAudio(nn.Module):
    """FAKE of `MoonshotKimiaForCausalLM` (Kimi-Audio's remote code) at a tiny size.

    Same forward signature (`input_ids` = audio stream, `text_input_ids`, `whisper_input_feature`,
    `is_continuous_mask`, `attention_mask`, `position_ids`, `past_key_values`, `inputs_embeds`, ...),
    same return `(audio_logits, text_logits, past)` (past only with `use_cache`), same layout
    (`model.layers[i].mlp` a transformers `Qwen2MLP`, `model.vq_adaptor`, `lm_head`, `mimo_output`,
    `get_decoder()` = `model`). The attention is plain SDPA, no cache: it is not Kimi-Audio.
    """

    def __init__(self, config: FakeKimiConfig):
        super().__init__()
        self.config = config
        self.model = FakeKimiaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.mimo_output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def get_decoder(self):
        return self.model

    def forward(self, input_ids=None, text_input_ids=None, whisper_input_feature=None, is_continuous_mask=None,
                attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None, labels=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, generation_mode=None,
                return_dict=None):
        outputs = self.model(input_ids=input_ids, text_input_ids=text_input_ids,
                             whisper_input_feature=whisper_input_feature, is_continuous_mask=is_continuous_mask,
                             attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
                             inputs_embeds=inputs_embeds, use_cache=use_cache, return_dict=False)
        text_logits = self.lm_head(outputs[0])
        audio_logits = self.mimo_output(outputs[1])
        return (audio_logits, text_logits) + tuple(outputs[2:])


class FakeKimiTextTokenizer:
    """FAKE of Kimi's tiktoken text tokenizer: `encode(text, bos=False, eos=False)` as kimia_infer calls it."""

    def __init__(self, tok: Any):
        self.tok = tok

    def encode(self, text: str, bos: bool = False, eos: bool = False, **_: Any) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def convert_ids_to_tokens(self, i: int) -> str:
        return self.tok.convert_ids_to_tokens(i)

    def convert_tokens_to_ids(self, t: str) -> int:
        return self.tok.convert_tokens_to_ids(t)

    def __len__(self) -> int:
        return len(self.tok)


class FakeKimiAContent:
    """FAKE of kimia_infer's KimiAContent: the two streams, the continuous mask and the features."""

    def __init__(self) -> None:
        self.audio_token_ids: list[int] = []
        self.text_token_ids: list[int] = []
        self.is_continuous_mask: list[bool] = []
        self.continuous_feature: list[torch.Tensor] = []

    def audio(self, ids: list[int], continuous: bool = False) -> None:
        self.audio_token_ids += ids
        self.is_continuous_mask += [continuous] * len(ids)

    def to_tensor(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.tensor([self.audio_token_ids], dtype=torch.long),
                torch.tensor([self.text_token_ids], dtype=torch.long),
                torch.tensor([self.is_continuous_mask], dtype=torch.bool))


class FakeKimiPromptManager:
    """FAKE of kimia_infer's `KimiAPromptManager`: `get_prompt(messages, output_type)` lays out the two
    streams as kimia_infer does (user text: kimia_user_msg_start + blanks | blank + text; user audio:
    media_begin, speech tokens, media_end, speech_ct, msg_end | blanks; assistant start:
    kimia_assistant_msg_start | blank). Speech tokens are quantised frame energies and the "whisper"
    features a fixed random projection of each 1280-sample frame — deterministic, not GLM-4/whisper."""

    def __init__(self, text_tokenizer: FakeKimiTextTokenizer, kimia_token_offset: int, seed: int = 0):
        self.text_tokenizer = text_tokenizer
        tok = text_tokenizer.tok
        self.extra_tokens = SimpleNamespace(
            msg_end=tok.convert_tokens_to_ids("<|im_msg_end|>"),
            media_begin=tok.convert_tokens_to_ids("<|im_media_begin|>"),
            media_end=tok.convert_tokens_to_ids("<|im_media_end|>"),
            kimia_text_blank=tok.convert_tokens_to_ids("<|im_kimia_text_blank|>"),
            kimia_text_eos=tok.convert_tokens_to_ids("<|im_kimia_text_eos|>"),
            kimia_user_msg_start=tok.convert_tokens_to_ids("<|im_kimia_user_msg_start|>"),
            kimia_assistant_msg_start=tok.convert_tokens_to_ids("<|im_kimia_assistant_msg_start|>"),
            kimia_speech_ct_id=tok.convert_tokens_to_ids("<|im_kimia_speech_ct_id|>"),
            kimia_speech_ctd_id=tok.convert_tokens_to_ids("<|im_kimia_speech_ctd_id|>"))
        self.kimia_token_offset = kimia_token_offset
        g = torch.Generator().manual_seed(seed)
        self._projection = torch.randn(KIMI_HOP, KIMI_WHISPER_DIM, generator=g) / math.sqrt(KIMI_HOP)

    def _frames(self, path: str) -> torch.Tensor:
        import soundfile as sf

        wav, sr = sf.read(path, dtype="float32")
        assert sr == SAMPLING_RATE
        n = max(1, -(-len(wav) // KIMI_HOP))
        padded = np.zeros(n * KIMI_HOP, dtype=np.float32)
        padded[:len(wav)] = wav
        return torch.from_numpy(padded).view(n, KIMI_HOP)

    def _speech_tokens(self, frames: torch.Tensor) -> list[int]:
        energy = torch.log10(frames.pow(2).mean(-1) + 1e-8)
        codes = ((energy + 8) / 8 * (KIMI_SPEECH_CODES - 1)).round().clamp(0, KIMI_SPEECH_CODES - 1).long()
        return (codes + self.kimia_token_offset).tolist()

    def get_prompt(self, messages: list[dict[str, Any]], output_type: str = "text") -> FakeKimiAContent:
        x, blank = self.extra_tokens, self.extra_tokens.kimia_text_blank
        out = FakeKimiAContent()
        previous = None
        for i, msg in enumerate(messages):
            assert msg["role"] == "user", "the fake only lays out user turns (then the assistant start)"
            last_of_turn = i == len(messages) - 1 or messages[i + 1]["role"] != msg["role"]
            if msg["role"] != previous:
                out.audio([x.kimia_user_msg_start])
                out.text_token_ids.append(blank)
            previous = msg["role"]
            if msg["message_type"] == "text":
                ids = self.text_tokenizer.encode(msg["content"], bos=False, eos=False)
                out.text_token_ids += ids
                out.audio([blank] * len(ids))
            elif msg["message_type"] == "audio":
                frames = self._frames(msg["content"])
                speech = self._speech_tokens(frames)
                out.audio([x.media_begin])
                out.audio(speech, continuous=True)
                out.audio([x.media_end])
                out.text_token_ids += [blank] * (len(speech) + 2)
                if last_of_turn:
                    out.audio([x.kimia_speech_ct_id if output_type == "text" else x.kimia_speech_ctd_id])
                    out.text_token_ids.append(blank)
                out.continuous_feature.append(torch.tanh(frames @ self._projection)[None])
            else:
                raise NotImplementedError(msg["message_type"])
            if last_of_turn:
                out.audio([x.msg_end])
                out.text_token_ids.append(blank)
        out.audio([x.kimia_assistant_msg_start])
        out.text_token_ids.append(blank)
        return out


def build_kimi_fake(seed: int = 0) -> tuple[FakeKimiAudio, FakeKimiPromptManager]:
    """A FAKE Kimi-Audio (random weights) and a FAKE prompt manager sharing one vocabulary."""
    torch.manual_seed(seed)
    tok = build_tokenizer(PROMPT, 300)
    tok.add_tokens(KIMI_SPECIALS, special_tokens=True)
    offset = len(tok)
    config = FakeKimiConfig(vocab_size=offset + KIMI_SPEECH_CODES,
                            kimia_media_begin=tok.convert_tokens_to_ids("<|im_media_begin|>"),
                            kimia_media_end=tok.convert_tokens_to_ids("<|im_media_end|>"), kimia_token_offset=offset)
    model = FakeKimiAudio(config).eval()
    return model, FakeKimiPromptManager(FakeKimiTextTokenizer(tok), offset, seed=seed)


def install_prompt_manager(monkeypatch: Any, prompt_manager_cls: Any) -> None:
    """Make `from kimia_infer.api.prompt_manager import KimiAPromptManager` give `prompt_manager_cls` (kimia_infer
    is not installed here: a FAKE package of three empty modules)."""
    module = types.ModuleType("kimia_infer.api.prompt_manager")
    module.KimiAPromptManager = prompt_manager_cls
    for name in ("kimia_infer", "kimia_infer.api"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "kimia_infer.api.prompt_manager", module)
