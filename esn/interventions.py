"""Causal tests: deactivate (a ← 0), amplify (a ← (1+α)·a) or knock out whole MLP layers, then score.

The cost of a study is (utterances × conditions) decoder passes, so each is made cheap: one scoring
forward (no generation); the audio tower runs once per clip and its output is reused by every
condition (`AudioLMAdapter.embed` then `decode_last` over repeated rows); many conditions share one
forward through a per-row scale tensor at the MLP site; clips are length-bucketed.

`mode="generate"` adds the evaluation kits' reading: greedy answers (`esn.generation`) from the same
prefix with the same per-row scales active at every decoding step, parsed into labels (columns
`generated`, `predicted_generated`); the scored columns are unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from esn.audio import load_16k_mono
from esn.batching import split_on_oom
from esn.capture import store_order
from esn.generation import generate_answers, parse_answer
from esn.hooks import scaled
from esn.models.base import AudioLMAdapter, Embedded

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)

MODES = ("none", "deactivate", "gain", "knockout")
#: How the model's answer is read: closed-set scoring only, or scoring plus greedy generation.
ANSWER_MODES = ("score", "generate")


@dataclass(frozen=True)
class Condition:
    """One way of running the model. `neurons` maps layer -> neuron indices touched (empty for none)."""

    mode: str
    target: str = ""
    control: str = ""
    alpha: float = 0.0
    fraction: float = 0.0
    layer: int = -1
    variant: str = ""      # which identification set chose the neurons ("all", or a subsample "n{N}s{S}")
    neurons: dict[int, np.ndarray] = field(default_factory=dict, compare=False, hash=False)

    @property
    def scale(self) -> float:
        return {"none": 1.0, "deactivate": 0.0, "knockout": 0.0, "gain": 1.0 + self.alpha}[self.mode]

    def describe(self) -> dict[str, object]:
        return {"mode": self.mode, "target": self.target, "control": self.control, "alpha": self.alpha,
                "fraction": self.fraction, "layer": self.layer, "variant": self.variant}


def set_conditions(masks: dict[tuple[str, str, float], np.ndarray], alphas: list[float],
                   variant: str = "all") -> list[Condition]:
    """Deactivation and gain conditions for boolean masks [L, N] keyed by (target, control, fraction)."""
    out = []
    for (target, control, fraction), mask in sorted(masks.items()):
        neurons = {int(l): np.flatnonzero(mask[l]) for l in range(mask.shape[0]) if mask[l].any()}
        out.append(Condition("deactivate", target, control, 0.0, fraction, variant=variant, neurons=neurons))
        out += [Condition("gain", target, control, float(a), fraction, variant=variant, neurons=neurons)
                for a in alphas]
    return out


def selection_conditions(selection: "xr.Dataset", labels: list[str], fractions: list[float], main_fraction: float,
                         alphas: list[float]) -> list[Condition]:
    """Every condition of a study from one selection file (dims variant × emotion × layer × neuron).

    Full identification set: deactivation at every set size and gain over the α grid at the main size,
    each with its layer-matched random control. Each identification-size subsample: deactivation of the
    selected sets at the main size (the identification-size sweep; its control is the full set's).
    """
    from esn.selectors import random_mask, selected_mask

    out = []
    targets = [e for e in selection["emotion"].values.tolist() if e in labels]
    for variant in selection["variant"].values.tolist():
        sel = selection.sel(variant=variant)
        for fraction in (fractions if variant == "all" else [main_fraction]):
            chosen = selected_mask(sel, fraction)
            control = random_mask(sel, fraction) if variant == "all" else None
            masks = {}
            for target in targets:
                masks[(target, "selected", fraction)] = chosen.sel(emotion=target).values
                if control is not None:
                    masks[(target, "random", fraction)] = control.sel(emotion=target).values
            gains = alphas if (variant == "all" and np.isclose(fraction, main_fraction)) else []
            out += set_conditions(masks, gains, variant)
    return out


def knockout_conditions(n_layers: int, n_neurons: int, layers: list[int] | None = None) -> list[Condition]:
    """One condition per decoder layer (of `layers`, default all) with its whole MLP activation zeroed."""
    layers = list(range(n_layers)) if layers is None else layers
    if any(not 0 <= l < n_layers for l in layers):
        raise ValueError(f"knockout layers {layers} outside the model's 0..{n_layers - 1}")
    return [Condition("knockout", layer=l, neurons={l: np.arange(n_neurons)}) for l in layers]


def _scales(conditions: list[Condition], rows_per: int, n_neurons: int, device: torch.device) -> dict[int, torch.Tensor]:
    """Per-layer scale tensors [len(conditions) × rows_per, N]; layers no condition touches are absent."""
    layers = sorted({l for c in conditions for l in c.neurons})
    scales = {l: torch.ones(len(conditions) * rows_per, n_neurons, device=device) for l in layers}
    for i, c in enumerate(conditions):
        for l, idx in c.neurons.items():
            scales[l][i * rows_per:(i + 1) * rows_per, torch.as_tensor(idx, device=device)] = c.scale
    return scales


def _per_condition(adapter: AudioLMAdapter, waveforms: list[np.ndarray], conditions: list[Condition],
                   max_rows: int, run: Callable[[Embedded], Any]) -> list:
    """`run` on the clips' prefix repeated once per condition, the conditions' scales active; the audio
    tower runs once and conditions share forwards of up to `max_rows` rows. Results [condition][clip]."""
    batch = adapter.to_device(adapter.build_batch(waveforms))
    embedded = adapter.embed(batch)
    B = batch.size
    per_forward = max(1, max_rows // B)
    sites = adapter.site_modules()
    out: list = []
    for i in range(0, len(conditions), per_forward):
        chunk = conditions[i:i + per_forward]
        rows = torch.arange(B, device=adapter.device).repeat(len(chunk))
        with scaled(sites, _scales(chunk, B, adapter.n_neurons, adapter.device)):
            result = run(embedded.select(rows))
        out += [result[j * B:(j + 1) * B] for j in range(len(chunk))]
    return out


@torch.no_grad()
def score_conditions(adapter: AudioLMAdapter, waveforms: list[np.ndarray], conditions: list[Condition],
                     *, max_rows: int = 64) -> np.ndarray:
    """Label probabilities [conditions, clips, labels]: the audio tower once, conditions batched as rows."""
    parts = _per_condition(adapter, waveforms, conditions, max_rows,
                           lambda e: adapter.label_probabilities(e).cpu().numpy())
    return np.stack(parts)


@torch.no_grad()
def generate_conditions(adapter: AudioLMAdapter, waveforms: list[np.ndarray], conditions: list[Condition],
                        *, max_rows: int = 64, max_new_tokens: int = 8) -> np.ndarray:
    """Greedy answers [conditions, clips] (str), each condition's scales active on every decoding step."""
    parts = _per_condition(adapter, waveforms, conditions, max_rows,
                           lambda e: generate_answers(adapter, e, max_new_tokens=max_new_tokens))
    return np.array(parts, dtype=object).reshape(len(conditions), len(waveforms))


def evaluate(adapter: AudioLMAdapter, manifest: pd.DataFrame, conditions: list[Condition], *,
             batch_size: int = 16, max_rows: int = 256, mode: str = "score", max_new_tokens: int = 8) -> pd.DataFrame:
    """Score every utterance of `manifest` under every condition (plus the unmodified model) — a tidy table.

    `mode="generate"` also decodes each (utterance, condition) greedily: columns `generated` (the text)
    and `predicted_generated` (its parsed label, "other" when none is named).
    """
    if mode not in ANSWER_MODES:
        raise ValueError(f"unknown answer mode {mode!r}; choose one of {ANSWER_MODES}")
    conditions = [Condition("none")] + [c for c in conditions if c.mode != "none"]
    utterances = store_order(manifest)
    frames = []
    fitted = batch_size

    def run(waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        probs = score_conditions(adapter, list(waves), conditions, max_rows=max_rows)
        texts = (generate_conditions(adapter, list(waves), conditions, max_rows=max_rows,
                                     max_new_tokens=max_new_tokens) if mode == "generate" else None)
        return probs, texts

    def combine(parts: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray | None]:
        texts = None if parts[0][1] is None else np.concatenate([t for _, t in parts], axis=1)
        return np.concatenate([p for p, _ in parts], axis=1), texts

    for i in tqdm(range(0, len(utterances), batch_size), desc="intervene", unit="batch"):
        chunk = utterances.iloc[i:i + batch_size]
        (probs, texts), ran = split_on_oom(run, [load_16k_mono(p) for p in chunk["path"]], combine)
        if ran < len(chunk):  # split to fit GPU memory
            fitted = min(fitted, ran)
        for k, (c, p) in enumerate(zip(conditions, probs)):
            frame = pd.DataFrame({"utterance_id": chunk["utterance_id"].to_numpy(),
                                  "emotion": chunk["emotion"].to_numpy(), **c.describe()})
            frame["predicted"] = np.asarray(adapter.labels, dtype=object)[p.argmax(-1)]
            for j, label in enumerate(adapter.labels):
                frame[f"p_{label}"] = p[:, j].astype("float32")
            if texts is not None:
                frame["generated"] = texts[k]
                frame["predicted_generated"] = [parse_answer(t, adapter.labels) for t in texts[k]]
            frames.append(frame)
    if fitted < batch_size:
        log.warning("batches were split to fit GPU memory: %d clips per batch fit (asked %d)", fitted, batch_size)
    table = pd.concat(frames, ignore_index=True)
    table.attrs["batch_size_that_fit"] = fitted
    if mode == "generate":
        base = table[table["mode"] == "none"]
        agree = float((base["predicted"] == base["predicted_generated"]).mean())
        table.attrs["scored_generated_agreement"] = agree
        log.info("unmodified model: scored and generated predictions agree on %.3f of %d utterances "
                 "(%.3f of the answers name no label)", agree, len(base),
                 float((base["predicted_generated"] == "other").mean()))
    return table.sort_values(["mode", "variant", "control", "target", "fraction", "alpha", "layer", "utterance_id"],
                             kind="stable").reset_index(drop=True)
