"""Interventions: batched conditions equal one-at-a-time forwards; gain 1.0 is the unmodified model."""

import numpy as np
import torch
import xarray as xr
from conftest import make_tiny_adapter

from esn.audio import load_16k_mono
from esn.capture import store_order
from esn.hooks import scaled
from esn.interventions import (Condition, evaluate, knockout_conditions, score_conditions, selection_conditions,
                               set_conditions)


def _conditions(adapter, rng):
    L, N = adapter.n_layers, adapter.n_neurons
    masks = {(e, c, 0.1, d): rng.random((L, N)) < 0.1 for e in ("happy", "sad")
             for c, d in (("selected", -1), ("random", 0), ("random", 1))}
    return set_conditions(masks, [0.5, 4.0]) + knockout_conditions(L, N) + [Condition("none")]


def _one_at_a_time(adapter, waves, condition):
    """The plain path: full-model forward (the model's own forward, not embed/decode) under one condition."""
    batch = adapter.to_device(adapter.build_batch(waves))
    scales = {l: torch.ones(len(waves), adapter.n_neurons) for l in condition.neurons}
    for l, idx in condition.neurons.items():
        scales[l][:, torch.as_tensor(idx)] = condition.scale
    with torch.no_grad(), scaled(adapter.site_modules(), scales):
        logits = adapter.model(**batch.inputs, attention_mask=batch.attention_mask).logits[:, -1]
    return adapter.scorer.probabilities(logits).numpy()


def test_batched_conditions_equal_sequential_forwards(tiny_manifest):
    adapter = make_tiny_adapter(seed=1)
    waves = [load_16k_mono(p) for p in store_order(tiny_manifest)["path"].iloc[::4]]
    conditions = _conditions(adapter, np.random.default_rng(0))
    batched = score_conditions(adapter, waves, conditions, max_rows=3 * len(waves))  # several conditions per forward
    for k, c in enumerate(conditions):
        alone = _one_at_a_time(adapter, waves, c)
        np.testing.assert_allclose(batched[k], alone, atol=1e-5)
        assert (batched[k].argmax(-1) == alone.argmax(-1)).all()
    # the conditions really differ from each other (the test can fail)
    assert np.abs(batched[0] - batched[-1]).max() > 1e-4


def test_gain_of_one_is_bit_identical_to_unmodified(tiny_adapter, tiny_manifest):
    waves = [load_16k_mono(p) for p in tiny_manifest["path"].iloc[:6]]
    every = {l: np.arange(tiny_adapter.n_neurons) for l in range(tiny_adapter.n_layers)}
    probs = score_conditions(tiny_adapter, waves, [Condition("none"), Condition("gain", "happy", alpha=0.0, neurons=every)])
    assert np.array_equal(probs[0], probs[1])


def test_evaluate_table_is_tidy_and_complete(tiny_adapter, tiny_manifest):
    conditions = _conditions(tiny_adapter, np.random.default_rng(1))
    table = evaluate(tiny_adapter, tiny_manifest, conditions, batch_size=5, max_rows=40)
    n_conditions = len({c for c in conditions if c.mode != "none"}) + 1
    assert len(table) == len(tiny_manifest) * n_conditions
    for col in ["utterance_id", "emotion", "speaker", "target", "mode", "alpha", "control", "predicted", "fraction",
                "layer", "draw", *[f"p_{l}" for l in tiny_adapter.labels]]:
        assert col in table.columns
    speakers = tiny_manifest.set_index("utterance_id")["speaker"].astype(str)
    assert (table["speaker"].to_numpy() == speakers.loc[table["utterance_id"]].to_numpy()).all()
    assert set(table.loc[table["control"] == "random", "draw"]) == {0, 1}
    assert set(table.loc[table["control"] != "random", "draw"]) == {-1}
    assert set(table["mode"]) == {"none", "deactivate", "gain", "knockout"}
    probs = table[[f"p_{l}" for l in tiny_adapter.labels]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (table["predicted"].to_numpy() == np.array(tiny_adapter.labels)[probs.argmax(1)]).all()


def test_cuda_out_of_memory_in_interventions_is_split_not_fatal(tiny_adapter, tiny_manifest, monkeypatch):
    import esn.interventions as iv

    conditions = _conditions(tiny_adapter, np.random.default_rng(2))
    reference = evaluate(tiny_adapter, tiny_manifest, conditions, batch_size=6, max_rows=60)
    real = iv.score_conditions

    def tight_memory(adapter, waves, *a, **k):
        if len(waves) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(adapter, waves, *a, **k)

    monkeypatch.setattr(iv, "score_conditions", tight_memory)
    table = evaluate(tiny_adapter, tiny_manifest, conditions, batch_size=6, max_rows=60)
    assert table.attrs["batch_size_that_fit"] == 3
    assert (table["predicted"] == reference["predicted"]).all()
    np.testing.assert_allclose(table["p_happy"], reference["p_happy"], atol=1e-5)


def test_selection_conditions_carry_every_random_draw():
    rng = np.random.default_rng(3)
    E, L, N, R = 2, 2, 10, 3
    rank = np.stack([rng.permutation(L * N).reshape(L, N) for _ in range(E)]).astype(np.int32)
    order = np.stack([[[rng.permutation(N) for _ in range(L)] for _ in range(E)] for _ in range(R)]).astype(np.int32)
    sel = xr.Dataset({"rank": (("variant", "emotion", "layer", "neuron"), np.stack([rank, rank[::-1]])),
                      "random_order": (("draw", "emotion", "layer", "neuron"), order)},
                     coords={"variant": ["all", "n5s0"], "emotion": ["happy", "sad"], "draw": np.arange(R)})
    conditions = selection_conditions(sel, ["happy", "sad"], [0.1, 0.2], 0.2, [1.0])
    full = [c for c in conditions if c.variant == "all"]
    selected = [c for c in full if c.control == "selected"]
    random = [c for c in full if c.control == "random"]
    assert {c.draw for c in selected} == {-1} and len(random) == R * len(selected)
    for c in selected:  # each selected condition has R draws of the same size per layer, all different
        twins = [r for r in random if (r.mode, r.target, r.fraction, r.alpha) == (c.mode, c.target, c.fraction, c.alpha)]
        assert sorted(r.draw for r in twins) == list(range(R))
        for r in twins:
            assert {l: len(v) for l, v in r.neurons.items()} == {l: len(v) for l, v in c.neurons.items()}
        assert len({tuple(np.concatenate(list(r.neurons.values()))) for r in twins}) > 1
    sub = [c for c in conditions if c.variant == "n5s0"]
    assert sub and all(c.control == "selected" and c.draw == -1 for c in sub)
