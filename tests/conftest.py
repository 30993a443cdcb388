"""Shared fixtures: a small prepared synthetic corpus and a tiny random organism (real Omni thinker class)."""

from pathlib import Path

import pytest
import torch
from transformers import WhisperFeatureExtractor

from esn.models.qwen_omni import QwenOmniAdapter
from esn.organism import OrganismConfig, build_model, build_tokenizer
from esn.prepare import PrepareOptions, load_manifest, prepare_corpus

LABELS = ["neutral", "happy", "sad", "angry"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: intra-op threads only add overhead (and stall badly on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """24 synthetic utterances (3 speakers × 4 emotions × 2), prepared like any corpus."""
    out = tmp_path_factory.mktemp("corpus") / "synthetic"
    prepare_corpus("synthetic", "synthetic", None, out,
                   PrepareOptions(classes=LABELS, evaluation_fraction=0.34,
                                  reader_options={"speakers": 3, "per_speaker_emotion": 2, "seed": 0,
                                                  "duration_s": (0.6, 1.4)}))
    return out


@pytest.fixture(scope="session")
def tiny_manifest(tiny_corpus):
    return load_manifest(tiny_corpus)


def make_tiny_adapter(site: str = "act_fn", seed: int = 0, mlp: int = 96, layers: int = 2) -> QwenOmniAdapter:
    """A random (untrained) tiny organism; numbers differ by seed, the class is the real one."""
    torch.manual_seed(seed)
    cfg = OrganismConfig(hidden=32, heads=2, kv_heads=1, mlp=mlp, layers=layers, audio_d_model=32, audio_heads=2,
                         audio_ffn=64, audio_layers=1)
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size)
    model = build_model(cfg, tok).eval()
    return QwenOmniAdapter(model, tok, WhisperFeatureExtractor(feature_size=128), LABELS, cfg.prompt,
                           system_prompt=None, site=site, source="tiny-random")


@pytest.fixture(scope="session")
def tiny_adapter() -> QwenOmniAdapter:
    return make_tiny_adapter()
