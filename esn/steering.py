"""Steering vectors: the standard alternative to neuron gain, a direction added to the residual stream.

Are neurons the right unit? Contrastive activation addition (mean-difference steering) adds, at one decoder
layer, the difference between the mean residual of an emotion's clips and that of the other clips. If such a
direction of the same size moves the decision as much with less damage to other classes, the neuron story is
weaker; if neuron gain wins, that is a finding.

- **Direction** (`mean_difference`): per emotion e and layer l, mean over e's identification clips minus mean
  over the other clips of the stream's activation, each clip's averaged over its real positions (prompt, audio
  and answer). Positions: all of them, because the vector is added at every position, as neuron gain acts at
  every position; the direction and its size are measured where they act.
- **Stream** (`STREAMS`): `residual`, the layer's output (the vector added there), or `mlp_output`, the output
  of the layer's MLP (the vector added to it: the same place in the residual sum, a direction measured on what
  the MLP, where the neurons live, writes).
- **Layers**: one layer or several; each (layer, emotion) is its own condition (rows carry `layer`).
- **Size** (the matching rule, `gain_change_norms`): the vector's norm equals the mean norm of the change that
  neuron gain at α on e's set (of the reference selector, at the main set size) makes on layer l's MLP output,
  α · ‖W_down[:, S] a_S‖, averaged over real positions and identification clips. The change is linear in α,
  so the norm at α is α times the norm at α = 1, and α = 0 adds nothing.
- **Control**: a random direction (seeded, one per emotion and layer) of the same norm (control `random`,
  draw 0), beside the mean-difference vector (control `selected`), so the metrics set one against the other.

Evaluation goes through the same batched answer step as the interventions: the clips' audio embedding once,
then rows (condition, clip) with a per-row additive vector at the layer's output (`shifted`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from esn.audio import load_16k_mono
from esn.batching import Fit, in_pieces
from esn.capture import store_order
from esn.models.base import AudioLMAdapter, Embedded

MODE = "steer"


#: where the vector is measured and added: a decoder layer's output, or its MLP's output
STREAMS = ("residual", "mlp_output")


def stream_modules(adapter: AudioLMAdapter, stream: str) -> list[nn.Module]:
    """Per decoder layer, the module whose output is the stream (the layer, or its MLP)."""
    if stream not in STREAMS:
        raise ValueError(f"steering stream must be one of {STREAMS}, not {stream!r}")
    layers = adapter.decoder_layers()
    return list(layers) if stream == "residual" else [layer.mlp for layer in layers]


@dataclass(frozen=True)
class Steer:
    """One steering condition: `vector` [H] added to decoder layer `layer`'s stream output at every position."""

    target: str
    control: str        # "selected": the mean-difference direction; "random": a random direction of the same norm
    alpha: float
    layer: int
    fraction: float     # the set size whose gain change fixes the norm
    draw: int = -1
    vector: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, hash=False)

    def describe(self) -> dict[str, object]:
        """The condition keys of an intervention table (`esn.tables.CONDITION_KEYS`)."""
        return {"mode": MODE, "variant": "all", "control": self.control, "target": self.target,
                "fraction": self.fraction, "alpha": self.alpha, "layer": self.layer, "draw": self.draw}


def _hidden(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@contextmanager
def shifted(layers: list[nn.Module], shifts: Mapping[int, torch.Tensor]) -> Iterator[None]:
    """Add `shifts[l]` [rows, H] to module `layers[l]`'s output at every position (per row)."""
    handles = []
    for l, shift in shifts.items():
        def hook(_m, _args, out, shift=shift):
            h = _hidden(out)
            new = h + shift.to(h.dtype)[:, None, :]
            return (new, *out[1:]) if isinstance(out, tuple) else new
        handles.append(layers[l].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def residual_statistics(adapter: AudioLMAdapter, manifest: pd.DataFrame, layers: list[int],
                        sets: Mapping[Hashable, np.ndarray], *, batch_size: int = 16, stream: str = "residual"
                        ) -> tuple[pd.DataFrame, np.ndarray, dict[Hashable, np.ndarray]]:
    """One capture pass over `manifest`: per clip and layer of `layers`, the `stream` (layer output, or MLP output)
    averaged over real positions [U, len(layers), H]; and per neuron set of `sets` (bool [n_layers, N], keyed e.g.
    by emotion or by (selector, emotion)), the mean
    per-position norm of the change gain α = 1 on the set makes on each layer's MLP output [len(layers)]
    (averaged over positions of a clip, then over clips). Returns the clips (store order), means, norms."""
    if adapter.in_audio_tower:
        raise ValueError("steering vectors act on the decoder's residual stream: the neuron site must be a decoder "
                         "site")
    utterances = store_order(manifest)
    decoder_layers, records, norms = adapter.decoder_layers(), [], {e: np.zeros(len(layers)) for e in sets}
    streams = stream_modules(adapter, stream)
    masks = {e: torch.as_tensor(np.asarray(m), device=adapter.device) for e, m in sets.items()}

    def run(piece: range) -> None:
        chunk = utterances.iloc[piece.start:piece.stop]
        batch = adapter.to_device(adapter.build_batch([load_16k_mono(p) for p in chunk["path"]]))
        real = batch.attention_mask.float()
        count = real.sum(1)
        means = {}
        handles = []
        for j, l in enumerate(layers):
            def on_layer(_m, _args, out, j=j):
                means[j] = (_hidden(out).float() * real[..., None]).sum(1) / count[:, None]

            def on_down(module, args, j=j, l=l):
                x = args[0]
                for e, mask in masks.items():
                    change = F.linear(x * mask[l].to(x.dtype), module.weight).float().norm(dim=-1)
                    norms[e][j] += float(((change * real).sum(1) / count).sum())
            handles.append(streams[l].register_forward_hook(on_layer))
            handles.append(decoder_layers[l].mlp.down_proj.register_forward_pre_hook(on_down))
        try:
            adapter.decode_last(adapter.embed(batch))
        finally:
            for h in handles:
                h.remove()
        records.append(torch.stack([means[j] for j in range(len(layers))], 1).cpu().numpy())

    in_pieces(run, range(len(utterances)), Fit(batch_size, "clips per batch"))
    return utterances, np.concatenate(records), {e: v / len(utterances) for e, v in norms.items()}


def steering_layers(layer: int | None, layers: list[int] | str | None, n_layers: int) -> list[int]:
    """The decoder layers steered: `layers` (a list, or "all": each layer in turn), else the one `layer` (None: the
    middle layer); refused outside 0..n_layers-1."""
    chosen = (list(range(n_layers)) if layers == "all" else list(layers) if layers is not None
              else [n_layers // 2 if layer is None else layer])
    bad = [l for l in chosen if not 0 <= l < n_layers]
    if bad or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"steering layers {chosen}: need distinct decoder layers within 0..{n_layers - 1}")
    return chosen


def mean_difference(means: np.ndarray, emotions: np.ndarray | list[str], labels: list[str]) -> np.ndarray:
    """Per label e: mean of `means` over e's clips minus the mean over the other clips [E, ...]."""
    emotions = np.asarray(emotions)
    out = []
    for e in labels:
        own, rest = emotions == e, emotions != e
        if not own.any() or not rest.any():
            raise ValueError(f"steering direction of {e!r}: needs clips of {e!r} and of other emotions")
        out.append(means[own].mean(0) - means[rest].mean(0))
    return np.stack(out)


def steering_conditions(directions: np.ndarray, change_norms: Mapping[str, np.ndarray], labels: list[str],
                        layers: list[int], alphas: list[float], fraction: float, seed: int = 0) -> list[Steer]:
    """Mean-difference and random-direction conditions for every label, layer of `layers` and α: the vector's norm
    is α × the unit-gain change norm (`change_norms[e][j]` for layers[j]); `directions` [E, len(layers), H]."""
    out = []
    for i, e in enumerate(labels):
        for j, l in enumerate(layers):
            d = directions[i, j]
            unit = d / max(float(np.linalg.norm(d)), 1e-12)
            rnd = np.random.default_rng([seed, i, l]).standard_normal(d.shape)  # the same whatever other layers run
            rnd /= np.linalg.norm(rnd)
            for a in alphas:
                size = float(a) * float(change_norms[e][j])
                out.append(Steer(e, "selected", float(a), l, fraction, -1, (size * unit).astype(np.float32)))
                out.append(Steer(e, "random", float(a), l, fraction, 0, (size * rnd).astype(np.float32)))
    return out


def steered_probabilities(adapter: AudioLMAdapter, embedded: Embedded, steers: list[Steer], rows_fit: Fit,
                          stream: str = "residual") -> np.ndarray:
    """Label probabilities [conditions, clips, labels]: rows (condition, clip), condition-major, through the answer
    step in forwards of at most `rows_fit.size` rows, each row with its condition's vector added to `stream`."""
    B = embedded.inputs_embeds.shape[0]
    layers, H = stream_modules(adapter, stream), embedded.inputs_embeds.shape[-1]
    vectors = {id(s): torch.as_tensor(s.vector, device=adapter.device) for s in steers}

    def forward(rows: range) -> list:
        picked = torch.arange(rows.start, rows.stop, device=adapter.device) % B
        shifts: dict[int, torch.Tensor] = {}
        for k, r in enumerate(rows):
            s = steers[r // B]
            shifts.setdefault(s.layer, torch.zeros(len(rows), H, device=adapter.device))[k] = vectors[id(s)]
        with shifted(layers, shifts):
            return list(adapter.label_probabilities(embedded.select(picked)).cpu().numpy())

    flat = [r for piece in in_pieces(forward, range(len(steers) * B), rows_fit, unit=B) for r in piece]
    return np.array(flat).reshape(len(steers), B, -1)


@torch.no_grad()
def steer_table(adapter: AudioLMAdapter, manifest: pd.DataFrame, steers: list[Steer], *, batch_size: int = 16,
                max_rows: int = 256, stream: str = "residual") -> pd.DataFrame:
    """Score every utterance unmodified and under every steering condition (vectors added to `stream`): an
    intervention table (one row per utterance and condition, `esn.tables` keys, mode `steer`, the stream in column
    `stream`) that `esn.metrics.summarize` reads as it is."""
    stream_modules(adapter, stream)
    utterances = store_order(manifest)
    rows_fit, frames = Fit(max_rows, "rows per forward"), []
    labels = np.asarray(adapter.labels, dtype=object)
    unmodified = {"mode": "none", "variant": "", "control": "", "target": "", "fraction": 0.0, "alpha": 0.0,
                  "layer": -1, "draw": -1}

    def run(piece: range) -> None:
        chunk = utterances.iloc[piece.start:piece.stop]
        embedded = adapter.embed(adapter.to_device(adapter.build_batch([load_16k_mono(p) for p in chunk["path"]])))
        probs = [adapter.label_probabilities(embedded).cpu().numpy()]
        if steers:
            probs += list(steered_probabilities(adapter, embedded, steers, rows_fit, stream))
        speaker = {"speaker": chunk["speaker"].astype(str).to_numpy()} if "speaker" in chunk else {}
        for keys, p in zip([unmodified] + [s.describe() for s in steers], probs):
            frame = pd.DataFrame({"utterance_id": chunk["utterance_id"].to_numpy(),
                                  "emotion": chunk["emotion"].to_numpy(), **speaker, **keys})
            frame["scoring"], frame["stream"] = adapter.scorer.mode, stream
            frame["predicted"] = labels[p.argmax(-1)]
            for j, label in enumerate(adapter.labels):
                frame[f"p_{label}"] = p[:, j].astype("float32")
            frames.append(frame)

    in_pieces(run, range(len(utterances)), Fit(batch_size, "clips per batch"))
    return pd.concat(frames, ignore_index=True)
