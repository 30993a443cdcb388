"""Kimi-Audio's REAL model class on CPU at a tiny size, when its two source files are available locally.

Kimi-Audio's model code is remote code (`modeling_moonshot_kimia.py` in the checkpoint). The same class is
public in MoonshotAI/Kimi-Audio (`finetune_codes/modeling_kimia.py` + `configuration_moonshot_kimia.py`;
the checkpoint's copy differs only in the *names* of its two returned logits, not their order). This
repository may not ship those files, so the tests that use them run when the environment variable
`ESN_KIMI_REMOTE_CODE` names a folder holding both, unmodified: their sha256 must equal `SOURCE` below.
Get them at the pinned commit (any clone or fork that has it):

    git clone https://github.com/MoonshotAI/Kimi-Audio && git -C Kimi-Audio checkout 349251e1d8f4f98d58fda59246381faecd7392e0
    ESN_KIMI_REMOTE_CODE=$PWD/Kimi-Audio/finetune_codes .venv/bin/pytest tests/test_kimi_real.py

Nothing in the files is edited. `runtime_patches` makes them run here, on CPU, under transformers 5:
- a pure-torch stand-in for `flash_attn` / `flash_attn.bert_padding` (the four functions the file
  imports; attention computed in float32 and returned in the input dtype, as the kernels accumulate);
- `transformers.utils.is_flash_attn_2_available -> True` (the file refuses to import otherwise);
- `torch.cuda.current_device -> "cpu"` (its input merge hard-codes `.to(torch.cuda.current_device())`);
- transformers 5 only: `config.rope_theta` (5.x keeps it in `rope_parameters`), the 4.57 signature
  of `apply_rotary_pos_emb` (the file passes `position_ids` as a fifth argument, removed in 5.x), and an
  `_init_weights` that rebuilds the file's rotary caches (5.x loads on the meta device and leaves the
  non-persistent buffers of modules it does not know uninitialised).
`write_checkpoint` then saves a tiny random model of that class into a folder with an `auto_map`, so
`KimiAudioAdapter.load` loads it through `AutoModelForCausalLM(trust_remote_code=True)` like the hub one.

Likewise `ESN_KIMIA_INFER` may name a Kimi-Audio checkout at 2607d51 or 349251e (before / at the change of
`KimiAPromptManager`'s constructor): `real_prompt_manager_module` imports its prompt code unmodified
(sha256 in `KIMIA_SOURCES`), standing in only the speech tokenizer and whisper encoder, which need weights.

    git -C Kimi-Audio checkout 2607d515f5b7dffa1dcc7526f9f26feb48e356c4   # or 349251e...
    ESN_KIMIA_INFER=$PWD/Kimi-Audio ESN_KIMI_REMOTE_CODE=... .venv/bin/pytest tests/test_kimi_real.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

ENV = "ESN_KIMI_REMOTE_CODE"
#: Where the two files come from, and what they must hash to (sha256 of the files as committed there).
SOURCE = {
    "repository": "MoonshotAI/Kimi-Audio",
    "commit": "349251e1d8f4f98d58fda59246381faecd7392e0",
    "files": {
        "modeling_kimia.py": ("finetune_codes/modeling_kimia.py",
                              "64f2e2e9e13ca47e6ab63189489474ea4365f12728fd0006a0f02c09c1c063a8"),
        "configuration_moonshot_kimia.py": ("finetune_codes/configuration_moonshot_kimia.py",
                                            "4a6894050bf0cb6c0e8e5382969317d53b207864f0af49d660af2bf8326d90e5"),
    },
}
MODEL_CLASS = "modeling_kimia.MoonshotKimiaForCausalLM"
CONFIG_CLASS = "configuration_moonshot_kimia.KimiAudioConfig"


def how_to_run() -> str:
    return (f"Kimi-Audio's real model class needs its two source files: set {ENV} to a folder holding "
            f"{' and '.join(SOURCE['files'])} from {SOURCE['repository']}@{SOURCE['commit']} "
            f"(finetune_codes/); see tests/kimi_remote.py")


def remote_code_folder() -> Path | None:
    """The folder named by `ESN_KIMI_REMOTE_CODE`, or None when unset."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of each expected file in `folder` ('' when absent)."""
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() if (folder / name).is_file() else ""
            for name in SOURCE["files"]}


def check_files(folder: Path) -> None:
    """Refuse files that are not the recorded ones: the tests are about that exact code."""
    wrong = {n: h for n, h in file_hashes(folder).items() if h != SOURCE["files"][n][1]}
    if wrong:
        raise ValueError(f"{folder}: {sorted(wrong)} do not hash to the recorded sha256 of "
                         f"{SOURCE['repository']}@{SOURCE['commit']} ({wrong})")


# --- flash_attn, in plain torch ----------------------------------------------------------------

def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float | None) -> torch.Tensor:
    """q [T, H, D], k/v [S, Hkv, D] (grouped-query: H a multiple of Hkv) -> [T, H, D]; causal aligned at
    the end, as flash-attn does. Computed in float32, returned in q's dtype."""
    T, H, D = q.shape
    S, Hkv = k.shape[0], k.shape[1]
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    mask = None
    if causal:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    out = F.scaled_dot_product_attention(q.float().transpose(0, 1), k.float().transpose(0, 1), v.float().transpose(0, 1),
                                         attn_mask=mask, scale=scale)
    return out.transpose(0, 1).to(q.dtype)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **_: Any):
    """[B, T, H, D] inputs, as flash_attn.flash_attn_func."""
    return torch.stack([_attention(q[b], k[b], v[b], causal, softmax_scale) for b in range(q.shape[0])])


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, **_: Any):
    """Packed sequences [total, H, D] delimited by cumulative lengths, as flash_attn.flash_attn_varlen_func."""
    out = torch.empty_like(q)
    for i in range(len(cu_seqlens_q) - 1):
        qs, qe, ks, ke = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1]), int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        out[qs:qe] = _attention(q[qs:qe], k[ks:ke], v[ks:ke], causal, softmax_scale)
    return out


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return x[indices]


def unpad_input(hidden: torch.Tensor, mask: torch.Tensor):
    """(rows of the real positions, their flat indices, cumulative lengths, longest length)."""
    lengths = mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    cu = F.pad(torch.cumsum(lengths, dim=0, dtype=torch.int32), (1, 0))
    return hidden.reshape(-1, *hidden.shape[2:])[indices], indices, cu, int(lengths.max())


def pad_input(hidden: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    out = torch.zeros(batch * seqlen, *hidden.shape[1:], dtype=hidden.dtype, device=hidden.device)
    out[indices] = hidden
    return out.reshape(batch, seqlen, *hidden.shape[1:])


def flash_attn_modules() -> dict[str, types.ModuleType]:
    """`flash_attn` and `flash_attn.bert_padding` stand-ins (STAND-INS, not the CUDA kernels)."""
    top = types.ModuleType("flash_attn")
    top.flash_attn_func, top.flash_attn_varlen_func = flash_attn_func, flash_attn_varlen_func
    top.__version__ = "2.7.4-torch-stand-in"
    padding = types.ModuleType("flash_attn.bert_padding")
    padding.index_first_axis, padding.pad_input, padding.unpad_input = index_first_axis, pad_input, unpad_input
    top.bert_padding = padding
    return {"flash_attn": top, "flash_attn.bert_padding": padding}


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary_pos_emb_457(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    """transformers 4.57's signature (a position_ids argument it ignores) over the standard rotation."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rope_theta(config: Any) -> float:
    """`config.rope_theta` read from transformers 5's `rope_parameters` (absent until those are set)."""
    params = config.__dict__.get("rope_parameters") or {}
    if "rope_theta" not in params:
        raise AttributeError("rope_theta")
    return params["rope_theta"]


def _with_rotary_caches(init_weights: Any) -> Any:
    """transformers 5 builds a model on the meta device and, after loading, gives non-persistent buffers
    `empty` memory that only `_init_weights` fills: the file's `RotaryEmbedding` (inv_freq, cos/sin caches,
    computed in its __init__) is unknown to it and would keep garbage. Recompute them as __init__ does."""
    def _init_weights(self: Any, module: Any) -> None:
        if type(module).__name__ == "RotaryEmbedding" and hasattr(module, "_set_cos_sin_cache"):
            device = module.inv_freq.device
            inv_freq = 1.0 / (module.base ** (torch.arange(0, module.dim, 2).float().to(device) / module.dim))
            module.register_buffer("inv_freq", inv_freq, persistent=False)
            module._set_cos_sin_cache(seq_len=module.max_position_embeddings, device=device,
                                      dtype=torch.get_default_dtype())
            return
        init_weights(self, module)
    return _init_weights


@contextmanager
def runtime_patches(monkeypatch: Any) -> Iterator[None]:
    """Install the patches listed in the module docstring (undone by `monkeypatch`), nothing else."""
    import transformers
    import transformers.utils
    from transformers.models.qwen2 import modeling_qwen2

    for name, module in flash_attn_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: "cpu")
    if int(transformers.__version__.split(".")[0]) >= 5:
        from transformers import dynamic_module_utils

        monkeypatch.setattr(modeling_qwen2, "apply_rotary_pos_emb", apply_rotary_pos_emb_457)
        get_class_in_module = dynamic_module_utils.get_class_in_module

        def patched_for_5x(*args: Any, **kwargs: Any) -> type:
            """Every class loaded from the remote files: their KimiAudioConfig gets a `rope_theta`, their
            models an `_init_weights` that also rebuilds the rotary caches."""
            cls = get_class_in_module(*args, **kwargs)
            module = sys.modules[cls.__module__]
            config_cls = getattr(module, "KimiAudioConfig", None)
            if config_cls is not None and "rope_theta" not in vars(config_cls):
                monkeypatch.setattr(config_cls, "rope_theta", property(_rope_theta), raising=False)
            for name in ("MoonshotKimiaModel", "MoonshotKimiaForCausalLM"):
                model_cls = getattr(module, name, None)
                if model_cls is not None and "_init_weights" not in vars(model_cls):
                    monkeypatch.setattr(model_cls, "_init_weights", _with_rotary_caches(model_cls._init_weights),
                                        raising=False)
            return cls

        monkeypatch.setattr(dynamic_module_utils, "get_class_in_module", patched_for_5x)
    yield


def tiny_config(vocab_size: int, media_begin: int, media_end: int, token_offset: int, whisper_dim: int) -> dict:
    """A tiny Kimi-Audio: grouped-query attention (4 heads, 2 KV heads), 3 main layers, a MIMO branch of 2
    layers forking after layer 1 (before the last main layer)."""
    return dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, rope_theta=10000.0,
                kimia_mimo_layers=2, kimia_mimo_transformer_from_layer_index=1, kimia_mimo_audiodelaytokens=5,
                kimia_media_begin=media_begin, kimia_media_end=media_end, kimia_token_offset=token_offset,
                kimia_adaptor_input_dim=whisper_dim, kimia_text_output_vocab=vocab_size,
                kimia_audio_output_vocab=vocab_size, use_whisper_feature=True, pad_token_id=0,
                tie_word_embeddings=False)


def write_checkpoint(folder: Path, source: Path, config: dict, seed: int = 0) -> Path:
    """Copy the two files into `folder`, write a config.json with an `auto_map` and random weights of the
    real class (its state dict, as safetensors: transformers 5's `save_pretrained` cannot read the file's
    list-style `_tied_weights_keys`), ready for `KimiAudioAdapter.load(folder)`. Needs
    `runtime_patches` active."""
    from safetensors.torch import save_file
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder.mkdir(parents=True, exist_ok=True)
    for name in SOURCE["files"]:
        shutil.copyfile(source / name, folder / name)
    auto_map = {"AutoConfig": CONFIG_CLASS, "AutoModelForCausalLM": MODEL_CLASS}
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": auto_map, "model_type": "qwen2",
                                                    "architectures": ["MoonshotKimiaForCausalLM"]}, indent=2))
    config_cls = get_class_from_dynamic_module(CONFIG_CLASS, str(folder))
    model_cls = get_class_from_dynamic_module(MODEL_CLASS, str(folder))
    torch.manual_seed(seed)
    model = model_cls(config_cls.from_pretrained(folder))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    return folder


# --- kimia_infer's prompt manager, with its two model-backed parts stood in ------------------------

KIMIA_ENV = "ESN_KIMIA_INFER"
#: kimia_infer's prompt code at the two commits around the 2025-06-03 change (a required third constructor
#: argument; `to_tensor()` returning 5 tensors instead of 3): sha256 of the files the test imports.
KIMIA_SOURCES = {
    "2607d515f5b7dffa1dcc7526f9f26feb48e356c4": {
        "kimia_infer/api/prompt_manager.py": "d8ba69f5df6e944ee3eedfd253364d87b7745f7d209011f207797258228216fe",
        "kimia_infer/utils/data.py": "15b668936c59cfe1cd22fa6626073a748ee1d8013435f5cd38a0adff2b1aa6f2",
        "kimia_infer/utils/special_tokens.py": "ec409998c7ffef696d0870fe24534dcfd7ac617be2ed75787576dbf572a23437",
    },
    "349251e1d8f4f98d58fda59246381faecd7392e0": {
        "kimia_infer/api/prompt_manager.py": "ef3953607c22458852b3b6f7639415c37c3be712fd771e894ed96323e7d2c364",
        "kimia_infer/utils/data.py": "752c255b64e8c47f3acd34366691101229d4dc59f402c73be27600f5e690d1b3",
        "kimia_infer/utils/special_tokens.py": "ec409998c7ffef696d0870fe24534dcfd7ac617be2ed75787576dbf572a23437",
    },
}


def kimia_infer_folder() -> Path | None:
    """A checkout of MoonshotAI/Kimi-Audio (holding `kimia_infer/`) named by `ESN_KIMIA_INFER`, or None."""
    value = os.environ.get(KIMIA_ENV)
    return Path(value) if value else None


def kimia_infer_commit(folder: Path) -> str:
    """Which recorded commit the checkout's prompt code is (by sha256); refuses anything else."""
    for commit, files in KIMIA_SOURCES.items():
        if all((folder / f).is_file() and hashlib.sha256((folder / f).read_bytes()).hexdigest() == h
               for f, h in files.items()):
            return commit
    raise ValueError(f"{folder}: kimia_infer's prompt code is not one of the recorded commits {sorted(KIMIA_SOURCES)}")


def real_prompt_manager_module(folder: Path, fake: Any, monkeypatch: Any) -> types.ModuleType:
    """Import the checkout's `kimia_infer.api.prompt_manager` unmodified, with STAND-INS for what needs
    weights or CUDA: the GLM-4-voice speech tokenizer and the whisper-large-v3 encoder give the speech
    tokens and features of `fake` (a `models_tiny.FakeKimiPromptManager`), the text tokenizer is the fake's;
    `librosa.load` reads with soundfile, `loguru` logs nowhere, `torch.cuda.current_device` is "cpu"."""
    import soundfile as sf

    for name in [n for n in sys.modules if n == "kimia_infer" or n.startswith("kimia_infer.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: "cpu")

    class Glm4Tokenizer:  # STAND-IN: the fake's energy codes, before kimia_infer adds the token offset
        def __init__(self, name: str):
            self.name = name

        def to(self, *_: Any) -> "Glm4Tokenizer":
            return self

        def tokenize(self, audio_path: str) -> torch.Tensor:
            return torch.tensor([fake._speech_tokens(fake._frames(audio_path))]) - fake.kimia_token_offset

    class WhisperEncoder:  # STAND-IN: the fake's features at 4 x the token rate, as whisper's 50 Hz frames
        def __init__(self, path: str, mel_batch_size: int = 20):
            self.path = path

        def to(self, *_: Any) -> "WhisperEncoder":
            return self

        bfloat16 = eval = to

        def tokenize_waveform(self, wav: torch.Tensor) -> torch.Tensor:
            n = max(1, -(-wav.shape[-1] // fake._projection.shape[0]))
            frames = torch.zeros(n * fake._projection.shape[0])
            frames[:wav.shape[-1]] = wav.flatten().float()
            features = torch.tanh(frames.view(n, -1) @ fake._projection)      # [n, D]
            return features.reshape(1, 4 * n, -1)                              # [1, 4n, D/4]

    class TextTokenizer:  # the fake's text tokenizer, with the `pad_id` Kimi's tiktoken tokenizer has
        def __init__(self) -> None:
            self.inner = fake.text_tokenizer

        def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
            return self.inner.encode(text, bos=bos, eos=eos)

        def convert_tokens_to_ids(self, token: str) -> int:
            return self.inner.convert_tokens_to_ids(token)

        pad_id = 0

    class AutoTokenizer:
        @staticmethod
        def from_pretrained(*_: Any, **__: Any) -> TextTokenizer:
            return TextTokenizer()

    stubs = {
        "librosa": types.SimpleNamespace(load=lambda path, sr=16000: (sf.read(path, dtype="float32")[0], sr)),
        "loguru": types.SimpleNamespace(logger=types.SimpleNamespace(info=lambda *a, **k: None,
                                                                      warning=lambda *a, **k: None)),
        "kimia_infer.models.tokenizer.whisper_Lv3.whisper": types.SimpleNamespace(WhisperEncoder=WhisperEncoder),
        "kimia_infer.models.tokenizer.glm4_tokenizer": types.SimpleNamespace(Glm4Tokenizer=Glm4Tokenizer),
    }
    for name, stub in stubs.items():
        monkeypatch.setitem(sys.modules, name, stub)
    import importlib

    module = importlib.import_module("kimia_infer.api.prompt_manager")
    assert Path(module.__file__).resolve().is_relative_to(folder.resolve()), module.__file__
    monkeypatch.setattr(module, "AutoTokenizer", AutoTokenizer)
    return module
