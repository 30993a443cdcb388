"""Interventions: batched conditions equal one-at-a-time forwards; gain 1.0 is the unmodified model."""

import numpy as np
import torch
from conftest import make_tiny_adapter

from esn.audio import load_16k_mono
from esn.capture import store_order
from esn.hooks import scaled
from esn.interventions import Condition, evaluate, knockout_conditions, score_conditions, set_conditions


def _conditions(adapter, rng):
    L, N = adapter.n_layers, adapter.n_neurons
    masks = {(e, c, 0.1): rng.random((L, N)) < 0.1 for e in ("happy", "sad") for c in ("selected", "random")}
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
    for col in ["utterance_id", "emotion", "target", "mode", "alpha", "control", "predicted", "fraction", "layer",
                *[f"p_{l}" for l in tiny_adapter.labels]]:
        assert col in table.columns
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
