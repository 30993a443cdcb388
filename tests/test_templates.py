"""Which chat template and which system prompt a checkpoint is rendered with, whichever way it is loaded.

The real Qwen2.5-Omni processor renders with its own template file (needs torchvision to build, so
the adapter reads the file); the adapter must render what the processor would, and the workflow's
config default must render the same prompt as a direct `Adapter.load`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from models_tiny import PROMPT, build_af3, build_omni, build_qwen2_audio, waves
from snakemake.utils import validate
from transformers import AutoProcessor

from conftest import LABELS, make_tiny_adapter
from esn.models import load_adapter
from esn.models.audio_flamingo import AudioFlamingo3Adapter
from esn.models.qwen2_audio import Qwen2AudioAdapter
from esn.models.qwen_omni import DEFAULT_SYSTEM, QwenOmniAdapter, processor_chat_template

SCHEMA = str(Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml")
#: a processor template unlike the organism tokenizer's: it adds a default system turn
PROCESSOR_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    return build_omni(tmp_path_factory.mktemp("omni"))


def _copy(src, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_processor_template_file_is_used_and_a_differing_tokenizer_template_logged(omni_dir, tmp_path, caplog):
    ckpt = _copy(omni_dir, tmp_path)
    (ckpt / "chat_template.json").write_text(json.dumps({"chat_template": PROCESSOR_TEMPLATE}))
    with caplog.at_level(logging.WARNING, logger="esn.models.qwen_omni"):
        adapter = QwenOmniAdapter.load(str(ckpt), labels=LABELS, prompt=PROMPT, system_prompt="")
    assert adapter.chat_template == PROCESSOR_TEMPLATE and adapter.chat_template_source == "chat_template.json"
    assert adapter.chat_text().startswith("<|im_start|>system\nYou are a helpful assistant.")
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "chat_template.json" in warned and "tokenizer" in warned


def test_a_template_shared_by_processor_and_tokenizer_is_used_silently(omni_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="esn.models.qwen_omni"):
        adapter = QwenOmniAdapter.load(str(omni_dir), labels=LABELS, prompt=PROMPT)
    assert adapter.chat_template_source == "chat_template.jinja"
    assert adapter.chat_template == adapter.tokenizer.chat_template
    assert not caplog.records


def test_a_checkpoint_without_any_template_is_refused(omni_dir, tmp_path):
    ckpt = _copy(omni_dir, tmp_path)
    (ckpt / "chat_template.jinja").unlink()
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    assert "chat_template" not in config
    with pytest.raises(ValueError, match="no chat template"):
        QwenOmniAdapter.load(str(ckpt), labels=LABELS, prompt=PROMPT)


def test_template_files_are_read_in_the_processors_order(tmp_path):
    """chat_template.json wins over chat_template.jinja, as in `ProcessorMixin.from_pretrained` (checked
    against a real processor class that builds without torchvision)."""
    ckpt = build_af3(tmp_path / "af3")
    (ckpt / "chat_template.json").write_text(json.dumps({"chat_template": PROCESSOR_TEMPLATE}))
    assert processor_chat_template(str(ckpt)) == (PROCESSOR_TEMPLATE, "chat_template.json")
    assert AutoProcessor.from_pretrained(str(ckpt)).chat_template == PROCESSOR_TEMPLATE
    (ckpt / "chat_template.json").unlink()
    jinja = (ckpt / "chat_template.jinja").read_text()
    assert processor_chat_template(str(ckpt)) == (jinja, "chat_template.jinja")
    assert AutoProcessor.from_pretrained(str(ckpt)).chat_template == jinja


def _workflow_spec(adapter: str, path: str, **extra) -> dict:
    """A `models` entry as the workflow sees it: validated against the schema, defaults filled in."""
    config = {"corpora": {"c": {"reader": "synthetic"}}, "models": {"m": {"adapter": adapter, "path": path, **extra}},
              "studies": [{"model": "m", "identify": "c", "evaluate": "c"}]}
    validate(config, SCHEMA)
    return config["models"]["m"]


@pytest.mark.parametrize("name, build, cls", [("qwen2_5_omni", build_omni, QwenOmniAdapter),
                                              ("audio_flamingo3", build_af3, AudioFlamingo3Adapter),
                                              ("qwen2_audio", build_qwen2_audio, Qwen2AudioAdapter)])
def test_the_default_system_prompt_is_the_same_however_the_model_is_loaded(name, build, cls, tmp_path):
    folder = str(build(tmp_path / name))
    spec = _workflow_spec(name, folder, prompt=PROMPT)
    assert spec["system_prompt"] is None
    direct = cls.load(folder, labels=LABELS, prompt=PROMPT)
    workflow = load_adapter(spec, LABELS)
    clip = waves([0.7])
    a, b = direct.build_batch(clip).inputs["input_ids"], workflow.build_batch(clip).inputs["input_ids"]
    assert a.shape == b.shape and torch.equal(a, b)
    assert direct.chat_text() == workflow.chat_text()
    if name == "qwen2_5_omni":  # the model card's prompt, not the template's fallback
        assert DEFAULT_SYSTEM in workflow.chat_text()
        bare = load_adapter({**spec, "system_prompt": ""}, LABELS)
        assert DEFAULT_SYSTEM not in bare.chat_text()
        assert bare.build_batch(clip).inputs["input_ids"].shape[1] < a.shape[1]


def test_the_organism_entry_loads_it_as_it_was_trained(omni_dir):
    """Training builds the adapter with system_prompt=None; the config entry (`""`) must render the same."""
    trained = make_tiny_adapter()
    spec = _workflow_spec("qwen2_5_omni", str(omni_dir), prompt=trained.prompt, organism=True, system_prompt="")
    loaded = load_adapter(spec, LABELS)
    assert loaded.chat_text() == trained.chat_text()
    assert loaded.provenance()["system_prompt"] == ""
