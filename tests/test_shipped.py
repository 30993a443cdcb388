"""The shipped default organism (resources/organism): it verifies, assembles with Whisper's encoder, and loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from esn.models.qwen_omni import QwenOmniAdapter
from esn.organism import pretrained_tower_state, whisper_encoder_state
from esn.plan import resolve
from esn.shipped import RECORD, TRAINED, ShippedOrganismError, assemble, recipe, ship, verify
from esn.speech import speak

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "resources" / "organism"


def default_recipe() -> dict:
    """The recipe `make run` asks for: config/config.yaml validated and resolved as the workflow does."""
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    plan = resolve(config, str(ROOT))
    model = plan.models["organism"]
    return recipe(plan.config, plan.organism_seed(model["path"]), model["prompt"])


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("assembled") / "organism"
    assemble(SHIPPED, out, recipe=default_recipe())
    return out


def test_shipped_files_verify_and_are_only_what_was_trained_here():
    record = verify(SHIPPED)
    assert set(record["files"]) >= {TRAINED, "config.json", "tokenizer.json", "preprocessor_config.json",
                                    "metrics.json"}
    trained = load_file(str(SHIPPED / TRAINED))
    assert not [k for k in trained if k.startswith("model.audio_tower.") and k.split(".")[2] not in ("proj", "audio_bos_eos_token")]
    assert any(k.startswith("model.audio_tower.proj.") for k in trained)
    assert (SHIPPED / TRAINED).stat().st_size < 20e6  # a few MB: the encoder's 8 M weights are not shipped
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    assert metrics["encoder"] == "whisper_tiny_en" and metrics["encoder_sha256"] == record["encoder"]["tower_sha256"]
    assert record["recipe"] == metrics["recipe"] == default_recipe()  # what `make run` asks for is what ships


def test_assembled_organism_loads_with_whisper_encoder_and_the_shipped_weights(assembled):
    adapter = QwenOmniAdapter.load(str(assembled), labels=["neutral", "happy", "sad", "angry"],
                                   prompt=default_recipe()["prompt"], system_prompt="")
    model = adapter.model
    whisper_state = whisper_encoder_state()
    tower = pretrained_tower_state(model)
    assert set(tower) == set(whisper_state)
    for name, value in whisper_state.items():
        assert torch.equal(tower[name], value), name
    state = model.state_dict()
    for name, value in load_file(str(SHIPPED / TRAINED)).items():
        assert torch.equal(state[name], value), name
    assert adapter.feature_extractor.feature_size == 80
    with torch.no_grad():
        probs = adapter.score([speak("The library closes at six on weekdays.", "en-us", "m2")])
    assert probs.shape == (1, 4) and torch.allclose(probs.sum(-1), torch.tensor(1.0))


def test_shipping_the_assembled_organism_gives_the_same_files(assembled, tmp_path):
    record = ship(assembled, tmp_path / "again")
    assert record == json.loads((SHIPPED / RECORD).read_text())


def _copy(tmp_path: Path) -> Path:
    out = tmp_path / "organism"
    shutil.copytree(SHIPPED, out)
    return out


def test_a_corrupted_shipped_file_is_refused(tmp_path):
    copy = _copy(tmp_path)
    data = bytearray((copy / TRAINED).read_bytes())
    data[-100] ^= 0x01
    (copy / TRAINED).write_bytes(bytes(data))
    with pytest.raises(ShippedOrganismError, match=f"{TRAINED}: sha256 .* is not the recorded"):
        assemble(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_or_extra_files_are_refused(tmp_path):
    copy = _copy(tmp_path)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ShippedOrganismError, match="not the recorded"):
        verify(copy)
    shutil.copyfile(SHIPPED / "tokenizer.json", copy / "tokenizer.json")
    (copy / "notes.txt").write_text("x")
    with pytest.raises(ShippedOrganismError, match="notes.txt"):
        verify(copy)


def test_another_encoder_or_recipe_is_refused(tmp_path):
    state = whisper_encoder_state()
    state["layers.0.fc1.weight"] = state["layers.0.fc1.weight"].clone()
    state["layers.0.fc1.weight"][0, 0] += 1e-3
    with pytest.raises(ShippedOrganismError, match="another Whisper encoder"):
        assemble(SHIPPED, tmp_path / "a", encoder_state=state)
    changed = default_recipe()
    changed["organism"]["steps"] += 1
    with pytest.raises(ShippedOrganismError, match=r"organism\.steps: config \d+, shipped \d+\.") as refused:
        assemble(SHIPPED, tmp_path / "b", recipe=changed)
    assert "intensity" not in str(refused.value)  # only what differs is named


def test_a_corpus_split_other_than_the_one_it_learnt_from_is_refused(tmp_path):
    """`split` came to the schema after the organism shipped: its old value is implicit, any other is refused."""
    changed = default_recipe()
    changed["corpora"]["synthetic"]["split"] = "official"
    with pytest.raises(ShippedOrganismError, match=r"corpora\.synthetic\.split: config 'official', shipped None"):
        assemble(SHIPPED, tmp_path / "a", recipe=changed)
