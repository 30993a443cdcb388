"""Model adapters, one module per family, loaded by the name used in config (`models.<m>.adapter`)."""

from __future__ import annotations

import importlib
from typing import Any

from esn.models.base import DEFAULT_SCORING, AudioLMAdapter, require_pinned_revision

#: adapter name -> "module:Class" (imported lazily: Kimi-Audio's needs its own environment)
ADAPTERS: dict[str, str] = {
    "qwen2_5_omni": "esn.models.qwen_omni:QwenOmniAdapter",
    "audio_flamingo3": "esn.models.audio_flamingo:AudioFlamingo3Adapter",
    "qwen2_audio": "esn.models.qwen2_audio:Qwen2AudioAdapter",
    "kimi_audio": "esn.models.kimi_audio:KimiAudioAdapter",
}


def adapter_class(name: str) -> type[AudioLMAdapter]:
    if name not in ADAPTERS:
        raise ValueError(f"unknown model adapter {name!r}; known adapters: {sorted(ADAPTERS)}")
    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_adapter(spec: dict[str, Any], labels: list[str], device: str = "cpu") -> AudioLMAdapter:
    """Load the model of a config entry (`models.<m>`) with the closed label set `labels`.

    `system_prompt` unset (None) means the family's default, exactly as `Adapter.load` without it, so
    the workflow and a direct load render the same prompt; `""` means no system turn.
    """
    if spec.get("trust_remote_code"):
        require_pinned_revision(spec["path"], spec.get("revision"))
    system = {} if spec.get("system_prompt") is None else {"system_prompt": spec["system_prompt"] or None}
    return adapter_class(spec["adapter"]).load(
        spec["path"], labels=labels, prompt=spec["prompt"], revision=spec.get("revision"),
        dtype=spec.get("dtype", "float32"), device=device, site=spec.get("site", "act_fn"),
        trust_remote_code=bool(spec.get("trust_remote_code")), scoring=spec.get("scoring", DEFAULT_SCORING),
        synonyms=spec.get("synonyms") or {}, **system)
