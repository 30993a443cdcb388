"""The organism's ear: Whisper tiny.en's pretrained encoder as the Qwen2.5-Omni audio tower, frozen and cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import WhisperFeatureExtractor, WhisperModel

from esn import whisper
from esn.models.qwen_omni import QwenOmniAdapter, mel_frames
from esn.organism import (TOWER_TRAINED, OrganismConfig, build_model, build_tokenizer, cached_embed, encode_clips,
                          load_whisper_encoder, pretrained_tower_state, whisper_encoder_state)
from esn.speech import speak

LABELS = ["neutral", "happy", "sad", "angry"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return whisper.convert(tmp_path_factory.mktemp("whisper") / "tiny.en")


@pytest.fixture(scope="module")
def adapter() -> QwenOmniAdapter:
    torch.manual_seed(0)
    cfg = OrganismConfig(encoder="whisper_tiny_en", hidden=32, heads=2, kv_heads=1, mlp=64, layers=2)
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size)
    model = build_model(cfg, tok).eval()
    load_whisper_encoder(model)
    extractor = WhisperFeatureExtractor(feature_size=model.config.audio_config.num_mel_bins)
    return QwenOmniAdapter(model, tok, extractor, LABELS, cfg.prompt, system_prompt=None)


def test_tower_holds_the_converted_whisper_encoder_frozen(adapter, converted):
    """Every tower weight but the projector (and the unused audio_bos_eos embedding) is the converted Whisper
    checkpoint's encoder weight, bit for bit (Whisper's `layer_norm` is Omni's `ln_post`), and only those two
    train."""
    tower = adapter.model.model.audio_tower
    ref = {k.removeprefix("model.encoder."): v.float() for k, v in load_file(str(converted / "model.safetensors")).items()
           if k.startswith("model.encoder.") and k != "model.encoder.embed_positions.weight"}
    ref = {("ln_post." + k.removeprefix("layer_norm.") if k.startswith("layer_norm.") else k): v for k, v in ref.items()}
    mine = pretrained_tower_state(adapter.model)
    assert set(mine) == set(ref) and len(ref) == 4 + 4 * 15 + 2
    for name, value in ref.items():
        assert torch.equal(mine[name], value), name
    assert {n for n, p in tower.named_parameters() if p.requires_grad} == set(TOWER_TRAINED)
    shape = adapter.model.config.audio_config
    assert (shape.num_mel_bins, shape.d_model, shape.encoder_layers, shape.encoder_attention_heads,
            shape.encoder_ffn_dim) == (80, 384, 4, 6, 1536) and shape.n_window >= 1500


def test_tower_computes_what_whisper_computes(adapter, converted):
    """On a clip padded to Whisper's 30 s, the tower's last layer equals the converted transformers Whisper
    encoder's (its input to the final layer norm): the same network, not only the same numbers stored (a tower
    with Omni's default `n_window` of 100 would attend in 2-s windows and differ)."""
    wave = speak("The train leaves the station at nine in the morning.", "en-us", "m1")
    extractor = WhisperFeatureExtractor(feature_size=80)
    feats = extractor(wave, sampling_rate=16000, return_tensors="pt")["input_features"]  # padded to 3000 frames
    assert feats.shape == (1, 80, 3000)
    whisper_model = WhisperModel.from_pretrained(converted, dtype=torch.float32).eval()
    seen = {}
    whisper_model.encoder.layer_norm.register_forward_pre_hook(lambda m, args: seen.update(whisper=args[0]))
    tower = adapter.model.model.audio_tower
    handle = tower.layers[-1].register_forward_hook(lambda m, args, out: seen.update(omni=out[0]))
    try:
        with torch.no_grad():
            whisper_model.encoder(feats)
            adapter.model.get_audio_features(feats, torch.ones(1, 3000, dtype=torch.long))
    finally:
        handle.remove()
    ours, theirs = seen["omni"].reshape(-1, 384), seen["whisper"][0]
    assert ours.shape == theirs.shape == (1500, 384)
    # measured: cosine >= 0.9999993 at every position, max |difference| 0.28 on values up to 621 (Whisper adds its
    # stored float16 position table, Omni computes the same sinusoids in float32: they differ by up to 2.4e-4)
    cos = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
    assert cos.min() > 0.99999
    assert (ours - theirs).abs().max() < 1e-3 * theirs.abs().max()
    assert (ours - theirs).abs().mean() < 1e-3


def test_cached_encoder_states_score_as_the_model_does(adapter):
    """Training and evaluation run the projector and the decoder on cached encoder states: for clips of different
    lengths in one batch the label scores equal the adapter's own path from audio."""
    waves = [speak(text, "en-us", variant, rate=rate) for text, variant, rate in
             [("The keys are in the drawer.", "m3", 175), ("We keep the bicycles in the garage.", "f2", 150),
              ("Turn off the lights.", "m1", 190)]]
    assert len({len(w) for w in waves}) == 3
    with torch.no_grad():
        direct = adapter.label_logprobs(adapter.embed(adapter.build_batch(waves)))
        states = encode_clips(adapter, waves, batch_size=2)
        cached = adapter.label_logprobs(cached_embed(adapter, states, [mel_frames(len(w)) for w in waves]))
    assert [s.shape[1] for s in states] == [384] * 3
    torch.testing.assert_close(cached, direct, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(direct[0], direct[1])  # the scores depend on the clip


def test_a_source_file_that_is_not_the_recorded_one_is_refused(tmp_path):
    shutil_dir = tmp_path / "model"
    shutil_dir.mkdir()
    data = bytearray((whisper.package_model_dir() / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0x01
    (shutil_dir / "model.bin").write_bytes(bytes(data))
    with pytest.raises(whisper.ModelFileError, match="sha256"):
        whisper_encoder_state(shutil_dir)


def test_a_tower_of_another_shape_is_refused():
    cfg = OrganismConfig(encoder="scratch", hidden=32, heads=2, kv_heads=1, mlp=64, layers=2)
    model = build_model(cfg, build_tokenizer(cfg.prompt, cfg.vocab_size))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_whisper_encoder(model, {k: v for k, v in whisper_encoder_state().items()})
