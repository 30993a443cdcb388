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


@pytest.mark.parametrize("revision", [None, "", "main", "v1.0", "349251e", "349251E1D8F4F98D58FDA59246381FACED7392E0",
                                      "349251e1d8f4f98d58fda59246381faecd7392e0 "])
def test_remote_code_needs_a_full_commit_hash(revision):
    """A branch, a tag, a short or padded hash can all name different code tomorrow: refused, naming the key."""
    spec = {"adapter": "kimi_audio", "path": "moonshotai/Kimi-Audio-7B-Instruct", "prompt": "p",
            "trust_remote_code": True, "revision": revision}
    with pytest.raises(ValueError, match=r"pinned revision: set the models entry's `revision`"):
        load_adapter(spec, LABELS)


def test_a_full_commit_hash_passes_the_pin_check():
    """The check lets a 40-hex commit through: what stops this load is the missing kimia_infer (or the
    missing consent below), not the pin."""
    from esn.models.base import require_pinned_revision

    commit = "349251e1d8f4f98d58fda59246381faecd7392e0"
    assert require_pinned_revision("m", commit) == commit
    with pytest.raises(ValueError, match="trust_remote_code: true"):
        load_adapter({"adapter": "kimi_audio", "path": "m", "prompt": "p", "revision": commit}, LABELS)


def test_paper_config_pins_remote_code_only_by_commit():
    """config/paper.yaml never ships a movable revision for remote code, and the Kimi env pins kimia_infer."""
    import yaml

    from esn.models.base import COMMIT_HASH

    models = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["models"]
    for name, spec in models.items():
        if spec.get("trust_remote_code"):
            assert spec["revision"] is None or COMMIT_HASH.fullmatch(spec["revision"]), name
    env = (ROOT / "workflow" / "envs" / "kimi_audio.yaml").read_text()
    pins = re.findall(r"git\+https://\S+?\.git(@\S+)?\s", env)
    assert pins and all(COMMIT_HASH.fullmatch(p.lstrip("@")) for p in pins), pins
    from kimi_remote import SOURCE  # the commit whose model class tests/test_kimi_real.py runs

    assert f"@{SOURCE['commit']}" in pins


def test_nothing_unpickles_files():
    """No code path of the package or the workflow deserialises pickles (checkpoints, corpora, results)."""
    pattern = re.compile(r"\bpickle\b|torch\.load\(|allow_pickle\s*=\s*True|read_pickle|joblib\.load|dill\.")
    offenders = [f"{p.relative_to(ROOT)}:{i + 1}" for p in [*ROOT.glob("esn/**/*.py"), *ROOT.glob("workflow/**/*.py")]
                 for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert not offenders, offenders
