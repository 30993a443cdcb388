"""Device memory per token, per model family and way of running it, measured on tiny bf16 models of the real classes.

    python benchmarks/memory_per_token.py        # ~1-2 min on CPU -> benchmarks/out/memory_per_token.json

What the decoder costs beyond the weights is, per token of the padded batch, a part that grows with depth (what
each layer keeps: saved activations for attribution's backward pass, the KV cache for generation) and a part that
does not (the working set of the one layer running, the statistics). Both are measured as the peak of live tensor
storage (every storage made during the call and still referenced, counted at every op) at 2 and at 4 decoder
layers, for three (hidden, MLP width) sizes, and fitted per layer and fixed as a·hidden + b·MLP bytes per token;
then extrapolated to the 7B shapes. The audio tower runs before the decoder (its peak is per clip, reported at
the tiny size only: AF3 and Qwen2-Audio pad every clip to 30 s of features). Random weights in bf16 on the CPU: the storage sizes are those a GPU would
allocate (kernels' own workspaces and the allocator's rounding are not counted: expect a GPU to need more —
`gpu_check.py`'s `memory` check measures the real peak at 7B). Kimi-Audio has no real class here: not measured.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import device_info, write
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models_tiny import AF3_CHAT_TEMPLATE, PROMPT, _text_config, waves  # noqa: E402

from esn.capture import batch_statistics  # noqa: E402
from esn.generation import generate_answers  # noqa: E402

LABELS = ["neutral", "happy", "sad", "angry"]
SIZES = [(64, 256), (128, 256), (64, 1024)]   # (hidden, MLP width)
SHAPES_7B = {"qwen2_5_omni": (28, 3584, 18944), "audio_flamingo3": (28, 3584, 18944), "qwen2_audio": (32, 4096, 11008)}
GROUPS = ["audio", "prompt", "last"]


class PeakLive(TorchDispatchMode):
    """Peak bytes of the storages made under this mode and still alive, checked after every op."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    s = t.untyped_storage()
                    known = self.live.get(s.data_ptr())
                    if known is None or known[0].expired():
                        self.live[s.data_ptr()] = (StorageWeakRef(s), s.nbytes())
        for ptr in [p for p, (ref, _) in self.live.items() if ref.expired()]:
            del self.live[ptr]
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def build(family: str, hidden: int, mlp: int, layers: int, folder: Path):
    """A tiny random bf16 model of `family`'s real class, saved and loaded through its adapter."""
    from transformers import (AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration, AudioFlamingo3Processor,
                              Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)

    from esn.models import load_adapter
    from esn.organism import OrganismConfig, build_model, build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer(PROMPT, 300)
    if family == "qwen2_5_omni":
        cfg = OrganismConfig(prompt=PROMPT, vocab_size=300, audio_d_model=32, audio_layers=1, audio_heads=2,
                             audio_ffn=64, hidden=hidden, layers=layers, heads=4, kv_heads=2, mlp=mlp)
        build_model(cfg, tok).save_pretrained(folder)
        tok.save_pretrained(folder)
        WhisperFeatureExtractor(feature_size=128).save_pretrained(folder)
    elif family == "audio_flamingo3":
        tok.add_tokens(["<sound>"], special_tokens=True)
        config = AudioFlamingo3Config(
            audio_config=dict(model_type="audioflamingo3_encoder", num_mel_bins=128, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=64, hidden_size=32, max_source_positions=1500),
            text_config=_text_config(tok, hidden, mlp, layers), audio_token_id=tok.convert_tokens_to_ids("<sound>"))
        AudioFlamingo3ForConditionalGeneration(config).save_pretrained(folder)
        AudioFlamingo3Processor(feature_extractor=WhisperFeatureExtractor(feature_size=128, return_attention_mask=True),
                                tokenizer=tok, chat_template=AF3_CHAT_TEMPLATE).save_pretrained(folder)
    else:
        config = Qwen2AudioConfig(
            audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=1,
                              encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32, max_source_positions=1500),
            text_config=_text_config(tok, hidden, mlp, layers), audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
        Qwen2AudioForConditionalGeneration(config).save_pretrained(folder)
        Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tok).save_pretrained(folder)
    return load_adapter({"adapter": family, "path": str(folder), "dtype": "bfloat16", "prompt": PROMPT}, LABELS, "cpu")


def peaks(adapter, clips: list[np.ndarray]) -> tuple[int, int, dict[str, int]]:
    """Tokens of the padded batch, the audio tower's peak, and the decoder's peak live bytes for each way of
    running it (the audio embedding made beforehand, outside the count: the two stages never overlap)."""
    from esn.models.base import Embedded

    batch = adapter.to_device(adapter.build_batch(clips))
    truth = torch.arange(len(clips)) % len(LABELS)
    mode = PeakLive()
    with torch.no_grad(), mode:
        embedded = adapter.embed(batch)
    audio = mode.peak
    adapter.embed = lambda _batch: Embedded(embedded.inputs_embeds, embedded.attention_mask, embedded.position_ids)

    @torch.no_grad()
    def score():
        adapter.label_probabilities(adapter.embed(batch))

    @torch.no_grad()
    def generate():
        generate_answers(adapter, adapter.embed(batch), max_new_tokens=8)

    ways = {"score": score, "capture": lambda: batch_statistics(adapter, batch, GROUPS),
            "attribution": lambda: batch_statistics(adapter, batch, GROUPS, true_label=truth), "generate": generate}
    out = {}
    for name, fn in ways.items():
        mode = PeakLive()
        with mode:
            fn()
        out[name] = mode.peak
    return int(batch.attention_mask.numel()), audio, out


def main() -> None:
    torch.set_num_threads(1)
    clips = waves([2.0, 3.0, 2.5, 3.0])
    result: dict = {**device_info(), "method": __doc__.split("\n\n")[2].replace("\n", " "), "dtype": "bfloat16",
                    "clips_s": [2.0, 3.0, 2.5, 3.0], "sizes": SIZES, "families": {}}
    for family in SHAPES_7B:
        rows = []
        for hidden, mlp in SIZES:
            at = {}
            for layers in (2, 4):
                with tempfile.TemporaryDirectory() as tmp:
                    tokens, audio, at[layers] = peaks(build(family, hidden, mlp, layers, Path(tmp)), clips)
            for mode in at[2]:
                per_layer = (at[4][mode] - at[2][mode]) / 2 / tokens
                rows.append({"hidden": hidden, "mlp": mlp, "mode": mode, "tokens": tokens,
                             "per_layer": per_layer, "fixed": at[2][mode] / tokens - 2 * per_layer})
        fits = {}
        for mode in ("score", "capture", "attribution", "generate"):
            r = [x for x in rows if x["mode"] == mode]
            X = np.array([[x["hidden"], x["mlp"]] for x in r], dtype=float)
            fit = {}
            for part in ("per_layer", "fixed"):
                y = np.array([x[part] for x in r])
                coef, *_ = np.linalg.lstsq(X, y, rcond=None)
                fit[part] = {"bytes_per_hidden": round(float(coef[0]), 2), "bytes_per_mlp": round(float(coef[1]), 2),
                             "max_residual_bytes": round(float(np.abs(X @ coef - y).max()), 1)}
            L, H, M = SHAPES_7B[family]
            per_token = L * (fit["per_layer"]["bytes_per_hidden"] * H + fit["per_layer"]["bytes_per_mlp"] * M) + (
                fit["fixed"]["bytes_per_hidden"] * H + fit["fixed"]["bytes_per_mlp"] * M)
            fit["7b_MiB_per_token"] = round(per_token / 2**20, 3)
            fits[mode] = fit
        result["families"][family] = {"fits": fits, "measured": rows, "7b_shape": SHAPES_7B[family],
                                      "audio_tower_peak_KiB_per_clip_tiny": round(audio / len(clips) / 2**10, 1)}
        print(family, {m: f["7b_MiB_per_token"] for m, f in fits.items()}, flush=True)
    write("memory_per_token", result)


if __name__ == "__main__":
    main()
