"""Trust boundaries: safetensors only, remote code only when asked and pinned, no unpickling anywhere."""

import re
from pathlib import Path

import pytest
import torch
from conftest import LABELS, make_tiny_adapter

from esn.models import load_adapter

ROOT = Path(__file__).resolve().parents[1]


def _save(adapter, path: Path, safe: bool) -> Path:
    """A checkpoint folder; `safe=False` leaves only a pickled `pytorch_model.bin` (as old checkpoints ship)."""
    adapter.model.save_pretrained(path)
    adapter.tokenizer.save_pretrained(path)
    adapter.feature_extractor.save_pretrained(path)
    if not safe:
        torch.save(adapter.model.state_dict(), path / "pytorch_model.bin")
        for f in path.glob("*.safetensors*"):
            f.unlink()
    return path


def test_weights_load_from_safetensors_only(tmp_path):
    adapter = make_tiny_adapter()
    spec = {"adapter": "qwen2_5_omni", "prompt": adapter.prompt}
    ok = load_adapter({**spec, "path": str(_save(adapter, tmp_path / "safe", True))}, LABELS)
    assert ok.n_neurons == adapter.n_neurons
    pickled = _save(adapter, tmp_path / "pickled", False)
    assert list(pickled.glob("*.bin")) and not list(pickled.glob("*.safetensors"))
    with pytest.raises(OSError, match="safetensors"):
        load_adapter({**spec, "path": str(pickled)}, LABELS)


def test_remote_code_needs_the_entry_to_ask_and_to_pin_a_revision():
    with pytest.raises(ValueError, match="pinned revision"):
        load_adapter({"adapter": "kimi_audio", "path": "moonshotai/Kimi-Audio-7B-Instruct", "prompt": "p",
                      "trust_remote_code": True, "revision": None}, LABELS)


def test_nothing_unpickles_files():
    """No code path of the package or the workflow deserialises pickles (checkpoints, corpora, results)."""
    pattern = re.compile(r"\bpickle\b|torch\.load\(|allow_pickle\s*=\s*True|read_pickle|joblib\.load|dill\.")
    offenders = [f"{p.relative_to(ROOT)}:{i + 1}" for p in [*ROOT.glob("esn/**/*.py"), *ROOT.glob("workflow/**/*.py")]
                 for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert not offenders, offenders
