"""A simulated activation store with planted emotion-sensitive neurons, written by the project's store writer.

No model here produces statistics at the 7B shape (28 × 18 944 neurons) for hundreds of clips, yet store sizes,
the float16/float32 agreement of selections and the selectors' scaling must be measured there. This module
simulates what capture stores for gated MLP neurons (SiLU(gate)), from a per-neuron pre-activation
x ~ N(m + shift, s²) per utterance:

- `frac_positive` = Binomial(T, Φ((m + shift)/s)) / T over the group's T positions (audio: 25 per second of a
  2–10 s clip; prompt: 40; last: 1), so it carries the k/T grid real fractions have;
- `mean_activation` = E[SiLU(x)] (probit approximation of the sigmoid) plus sampling noise of a mean over T
  positions (the last position: one draw of SiLU(x));
- `attribution` (float32 in every store) small and signed, larger on planted neurons for their emotion.

Planted neurons: per emotion a random `planted_fraction` of all neurons whose pre-activation mean rises by
`effect`·s on that emotion's utterances. Values are drawn per (block, layer) from the seed, in float32, then
saturated and cast to the store dtype (`store.saturate`), exactly as capture does: stores of two dtypes written
from the same seed hold the same statistics at two precisions.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr

from esn import store

EMOTIONS = ("neutral", "happy", "sad", "angry")
GROUPS = ("audio", "prompt", "last")
#: The sigmoid as a probit: sigmoid(x) ≈ Φ(K·x), K = sqrt(π/8).
_K = float(np.sqrt(np.pi / 8))


def expected_silu(mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    """E[x·sigmoid(x)] for x ~ N(mu, s²), with sigmoid(x) ≈ Φ(Kx):
    mu·Φ(r) + K s² φ(r)/c, r = K mu / c, c = √(1 + K²s²)."""
    c = np.sqrt(1 + (_K * s) ** 2)
    r = _K * mu / c
    return mu * ndtr(r) + _K * s * s / c * np.exp(-r * r / 2) / np.sqrt(2 * np.pi)


def utterances(n: int, emotions: tuple[str, ...] = EMOTIONS, evaluation_fraction: float = 0.0,
               seed: int = 0) -> pd.DataFrame:
    """Balanced emotions (cycling), 2–10 s durations, 50 speakers; the first `evaluation_fraction` of each
    emotion's clips in evaluation."""
    rng = np.random.default_rng([seed, 1])
    emotion = np.array([emotions[i % len(emotions)] for i in range(n)], dtype=object)
    split = np.where(np.arange(n) // len(emotions) < evaluation_fraction * n / len(emotions), "evaluation",
                     "identification").astype(object)
    return pd.DataFrame({"utterance_id": [f"u{i:06d}" for i in range(n)], "emotion": emotion,
                         "speaker": [f"s{i % 50:02d}" for i in range(n)], "corpus": "planted", "split": split,
                         "duration_s": rng.uniform(2.0, 10.0, n).astype("float32")})


class PlantedNeurons:
    """Per-neuron parameters and the planted sets of one simulated model (from `seed`)."""

    def __init__(self, n_layers: int, n_neurons: int, emotions: tuple[str, ...] = EMOTIONS,
                 planted_fraction: float = 0.01, effect: float = 0.5, seed: int = 0) -> None:
        rng = np.random.default_rng([seed, 2])
        self.shape = (n_layers, n_neurons)
        self.m = rng.normal(-0.5, 0.6, self.shape).astype("float32")        # pre-activation mean
        self.s = np.exp(rng.normal(0.0, 0.3, self.shape)).astype("float32")  # and spread
        k = int(round(planted_fraction * n_layers * n_neurons))
        self.planted = np.zeros((len(emotions), n_layers, n_neurons), bool)  # [E, L, N]
        for e in range(len(emotions)):
            self.planted[e].flat[rng.choice(n_layers * n_neurons, k, replace=False)] = True
        self.strength = effect * rng.uniform(0.5, 1.5, self.planted.shape).astype("float32") * self.planted


def block_values(neurons: PlantedNeurons, rows: pd.DataFrame, emotions: tuple[str, ...], groups: tuple[str, ...],
                 layer: int, seed: int, block: int) -> dict[str, np.ndarray]:
    """float32 statistics of one block's rows at one layer: mean_activation, frac_positive [b, G, N],
    attribution [b, N]; a function of (seed, block, layer) only."""
    rng = np.random.default_rng([seed, 3, block, layer])
    e = np.array([emotions.index(x) for x in rows["emotion"]])
    b, N = len(rows), neurons.shape[1]
    shift = neurons.strength[e, layer] * neurons.s[layer]                              # [b, N]
    mean = np.empty((b, len(groups), N), np.float32)
    frac = np.empty_like(mean)
    for g, name in enumerate(groups):
        t = positions(rows, name)[:, None]
        mu = neurons.m[layer] + shift + 0.3 * rng.standard_normal((b, N), np.float32)
        s = neurons.s[layer]
        if name == "last":
            x = mu + s * rng.standard_normal((b, N), np.float32)
            mean[:, g] = x / (1 + np.exp(-x))
            frac[:, g] = x > 0
            continue
        frac[:, g] = rng.binomial(np.broadcast_to(t, (b, N)), ndtr(mu / s)) / t
        mean[:, g] = expected_silu(mu, s) + 0.5 * s / np.sqrt(t) * rng.standard_normal((b, N), np.float32)
    attribution = (1e-3 * rng.standard_normal((b, N)) + 3e-3 * (neurons.strength[e, layer] > 0)).astype(np.float32)
    return {"mean_activation": mean, "frac_positive": frac, "attribution": attribution}


def positions(rows: pd.DataFrame, group: str) -> np.ndarray:
    """Positions per clip in a group: 25 audio tokens per second, a 40-token prompt, one last position."""
    if group == "audio":
        return np.maximum(1, np.round(25 * rows["duration_s"].to_numpy(dtype=float))).astype(np.int64)
    return np.full(len(rows), 40 if group == "prompt" else 1, np.int64)


def write_store(path: str | Path, n_utterances: int, n_layers: int, n_neurons: int, *, dtype: str = "float32",
                groups: tuple[str, ...] = GROUPS, emotions: tuple[str, ...] = EMOTIONS, planted_fraction: float = 0.01,
                effect: float = 0.5, evaluation_fraction: float = 0.0, block_size: int = 256,
                attribution: bool = True, seed: int = 0, timings: dict[str, float] | None = None) -> PlantedNeurons:
    """Write a finished simulated store with `store.create`/`write_block`/`finalize`; returns its planted neurons.
    `timings`, if given, receives the seconds spent simulating (`simulate_s`) and in the store writer (`write_s`)."""
    path = Path(path)
    rows = utterances(n_utterances, emotions, evaluation_fraction, seed)
    neurons = PlantedNeurons(n_layers, n_neurons, emotions, planted_fraction, effect, seed)
    layout = store.StoreLayout(n_utterances, tuple(groups), n_layers, n_neurons, tuple(emotions), dtype, block_size,
                               attribution=attribution)
    partial = path.with_name(path.name + ".partial")
    clock = {"simulate_s": 0.0, "write_s": 0.0}
    t0 = time.perf_counter()
    g = store.create(partial, rows, layout, {"model_family": "planted", "site": "act_fn", "positions": ",".join(groups),
                                             "store_dtype": dtype, "attribution": str(attribution),
                                             "n_layers": str(n_layers), "n_neurons": str(n_neurons)})
    rng = np.random.default_rng([seed, 4])
    saturated = 0
    clock["write_s"] += time.perf_counter() - t0
    for k in range(layout.n_blocks):
        t0 = time.perf_counter()
        sl = layout.block(k)
        part = rows.iloc[sl]
        b = len(part)
        mean = np.empty((b, len(groups), n_layers, n_neurons), dtype)
        frac = np.empty_like(mean)
        attr = np.empty((b, n_layers, n_neurons), np.float32)
        for layer in range(n_layers):
            v = block_values(neurons, part, emotions, groups, layer, seed, k)
            for name, out in (("mean_activation", mean), ("frac_positive", frac)):
                out[:, :, layer] = store.saturate(v[name], dtype).astype(dtype)
            attr[:, layer] = v["attribution"]
        saturated += store.n_saturated(mean)
        probs = rng.dirichlet(np.ones(len(emotions)), b).astype("float32")
        predicted = np.array(emotions, dtype=object)[probs.argmax(1)]
        values = {"mean_activation": mean, "frac_positive": frac,
                  "n_positions": np.stack([positions(part, x) for x in groups], 1).astype("int32"),
                  "label_prob": probs, "predicted": predicted,
                  "correct": (predicted == part["emotion"].to_numpy(dtype=object)).astype("int8")}
        if attribution:
            values["attribution"] = attr
        t1 = time.perf_counter()
        store.write_block(g, k, values)
        clock["simulate_s"] += t1 - t0
        clock["write_s"] += time.perf_counter() - t1
    t0 = time.perf_counter()
    g.attrs["saturated"] = str(saturated)
    store.finalize(partial, path)
    clock["write_s"] += time.perf_counter() - t0
    if timings is not None:
        timings.update({k: round(v, 3) for k, v in clock.items()})
    return neurons
