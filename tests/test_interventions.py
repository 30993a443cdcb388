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
    real = iv.answer_batch

    def tight_memory(adapter, batch, *a, **k):
        if batch.size > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(adapter, batch, *a, **k)

    monkeypatch.setattr(iv, "answer_batch", tight_memory)
    table = evaluate(tiny_adapter, tiny_manifest, conditions, batch_size=6, max_rows=60)
    assert table.attrs["batch_size_that_fit"] == 3
    assert (table["predicted"] == reference["predicted"]).all()
    np.testing.assert_allclose(table["p_happy"], reference["p_happy"], atol=1e-5)


# --- label-free injection --------------------------------------------------------------------------

LABELS = ["neutral", "happy", "sad", "angry"]


def _injection_conditions(adapter, alphas, seed=0):
    """Gain on each label's random 10 % set (and a second, 'random', family) plus mix and union over them."""
    from esn.interventions import injection_conditions

    rng = np.random.default_rng(seed)
    L, N = adapter.n_layers, adapter.n_neurons
    out = []
    for control in ("selected", "random"):
        masks = {e: rng.random((L, N)) < 0.1 for e in LABELS}
        draw = -1 if control == "selected" else 0
        out += set_conditions({(e, control, 0.05, draw): m for e, m in masks.items()}, alphas)
        out += injection_conditions(masks, LABELS, alphas, control, 0.05, draw)
    return out


def _probs(table, adapter):
    return table[[f"p_{l}" for l in adapter.labels]].to_numpy()


def test_every_injection_strategy_at_alpha_zero_is_the_unmodified_model(tiny_manifest):
    adapter = make_tiny_adapter(seed=3)
    table = evaluate(adapter, tiny_manifest, _injection_conditions(adapter, [0.0, 4.0]), batch_size=5, max_rows=60)
    none = table[table["mode"] == "none"].set_index("utterance_id")
    inject = table[table["mode"] == "inject"]
    assert set(inject["target"]) == {"2pass", "mix", "union", "oracle"} and set(inject["control"]) == {"selected",
                                                                                                      "random"}
    zero = inject[inject["alpha"] == 0.0]
    for (_, _), rows in zero.groupby(["target", "control"]):
        rows = rows.set_index("utterance_id").loc[none.index]
        # equal up to float rounding (the unmodified pass runs as a batch of another row count)
        np.testing.assert_allclose(_probs(rows, adapter), _probs(none, adapter), atol=1e-6, rtol=0)
        assert (rows["predicted"] == none["predicted"]).all()
    # ... and at α = 4 they do change the answer probabilities (the test can fail)
    four = inject[inject["alpha"] == 4.0]
    assert all(np.abs(_probs(r.set_index("utterance_id").loc[none.index], adapter) - _probs(none, adapter)).max() > 1e-4
               for _, r in four.groupby(["target", "control"]))


def test_two_pass_is_the_gain_on_the_predicted_emotion_and_the_oracle_where_that_is_right(tiny_manifest):
    """2-Pass read from the gain rows equals a direct second pass with ê's set (per-row scales, computed
    here independently), and equals the oracle row for row on the clips the unmodified model gets right."""
    adapter = make_tiny_adapter(seed=4)
    conditions = _injection_conditions(adapter, [4.0])
    table = evaluate(adapter, tiny_manifest, conditions, batch_size=5, max_rows=60)
    none = table[table["mode"] == "none"].set_index("utterance_id")
    sets = {c.target: c.neurons for c in conditions if c.mode == "gain" and c.control == "selected"}
    order = store_order(tiny_manifest)
    waves = [load_16k_mono(p) for p in order["path"]]
    predicted = none.loc[order["utterance_id"], "predicted"].to_numpy()
    direct = np.concatenate([score_conditions(adapter, [w], [Condition("gain", e, alpha=4.0, neurons=sets[e])])[0]
                             for w, e in zip(waves, predicted)])
    two_pass = table[(table["mode"] == "inject") & (table["target"] == "2pass") & (table["control"] == "selected")]
    np.testing.assert_allclose(_probs(two_pass.set_index("utterance_id").loc[order["utterance_id"]], adapter), direct,
                               atol=1e-5)
    oracle = table[(table["mode"] == "inject") & (table["target"] == "oracle") & (table["control"] == "selected")]
    right = none.index[none["predicted"] == none["emotion"]]
    wrong = none.index[none["predicted"] != none["emotion"]]
    assert len(right) and len(wrong), "the tiny model should get some clips right and some wrong"
    a, b = (t.set_index("utterance_id").loc[right] for t in (two_pass, oracle))
    assert np.array_equal(_probs(a, adapter), _probs(b, adapter)) and (a["predicted"] == b["predicted"]).all()
    a, b = (t.set_index("utterance_id").loc[wrong] for t in (two_pass, oracle))
    assert np.abs(_probs(a, adapter) - _probs(b, adapter)).max() > 1e-4  # where ê ≠ e the two differ


def test_mix_scales_each_neuron_by_the_probabilities_of_the_sets_holding_it(tiny_manifest):
    """Mix against per-row scales built by hand: 1 + α·Σ_{e ∋ n} p(e | clip) from the unmodified pass."""
    from esn.interventions import injection_conditions

    adapter = make_tiny_adapter(seed=5)
    rng = np.random.default_rng(1)
    L, N = adapter.n_layers, adapter.n_neurons
    masks = {e: rng.random((L, N)) < 0.3 for e in LABELS}  # large enough that sets overlap
    mix = [c for c in injection_conditions(masks, LABELS, [3.0], "selected", 0.05) if c.target == "mix"]
    waves = [load_16k_mono(p) for p in tiny_manifest["path"].iloc[:5]]
    got = score_conditions(adapter, waves, [Condition("none")] + mix)
    p = torch.as_tensor(got[0])
    scales = {l: 1 + 3.0 * sum(p[:, [LABELS.index(e)]] * torch.as_tensor(masks[e][l], dtype=torch.float32)
                               for e in LABELS) for l in range(L)}
    batch = adapter.to_device(adapter.build_batch(waves))
    with torch.no_grad(), scaled(adapter.site_modules(), scales):
        want = adapter.label_probabilities(adapter.embed(batch)).numpy()
    np.testing.assert_allclose(got[1], want, atol=1e-5)
    assert sum(masks[e] for e in LABELS).max() > 1  # some neuron is in several sets


def test_evaluate_shares_forwards_across_tables_and_matches_separate_runs(tiny_manifest):
    adapter = make_tiny_adapter(seed=6)
    a, b = _conditions(adapter, np.random.default_rng(7)), _injection_conditions(adapter, [2.0])
    tables = evaluate(adapter, tiny_manifest, {"a": a, "b": b}, batch_size=5, max_rows=60)
    for key, conds in (("a", a), ("b", b)):
        alone = evaluate(adapter, tiny_manifest, conds, batch_size=5, max_rows=60)
        assert tables[key][["utterance_id", "mode", "target", "control", "alpha", "predicted"]].equals(
            alone[["utterance_id", "mode", "target", "control", "alpha", "predicted"]])
        np.testing.assert_allclose(_probs(tables[key], adapter), _probs(alone, adapter), atol=1e-5)


def test_selection_conditions_carry_every_random_draw_at_the_main_size():
    """Main-size deactivation (the headline effect) gets all R draws; the sweeps (other sizes, gain) draw 0."""
    rng = np.random.default_rng(3)
    E, L, N, R = 2, 2, 10, 3
    rank = np.stack([rng.permutation(L * N).reshape(L, N) for _ in range(E)]).astype(np.int32)
    order = np.stack([[[rng.permutation(N) for _ in range(L)] for _ in range(E)] for _ in range(R)]).astype(np.int32)
    sel = xr.Dataset({"rank": (("variant", "emotion", "layer", "neuron"), np.stack([rank, rank[::-1]])),
                      "random_order": (("draw", "emotion", "layer", "neuron"), order)},
                     coords={"variant": ["all", "n5s0"], "emotion": ["happy", "sad"], "draw": np.arange(R)})
    conditions = selection_conditions(sel, ["happy", "sad"], [0.1, 0.2], 0.2, [1.0])
    full = [c for c in conditions if c.variant == "all" and c.mode != "inject"]
    selected = [c for c in full if c.control == "selected"]
    random = [c for c in full if c.control == "random"]
    assert {c.draw for c in selected} == {-1}
    for c in selected:  # each selected condition has its draws of the same size per layer
        twins = [r for r in random if (r.mode, r.target, r.fraction, r.alpha) == (c.mode, c.target, c.fraction, c.alpha)]
        headline = c.mode == "deactivate" and c.fraction == 0.2
        assert sorted(r.draw for r in twins) == (list(range(R)) if headline else [0])
        for r in twins:
            assert {l: len(v) for l, v in r.neurons.items()} == {l: len(v) for l, v in c.neurons.items()}
        if headline:  # the draws differ
            assert len({tuple(np.concatenate(list(r.neurons.values()))) for r in twins}) > 1
    sub = [c for c in conditions if c.variant == "n5s0"]
    assert sub and all(c.control == "selected" and c.draw == -1 for c in sub)
    # without sweeps: main-size deactivation only, with draw 0 (a transfer study) or the first `unswept_draws`
    # (the population's null)
    for unswept, draws in ((1, [0]), (2, [0, 1]), (R + 5, list(range(R)))):
        lean = selection_conditions(sel, ["happy", "sad"], [0.1, 0.2], 0.2, [1.0], sweeps=False, unswept_draws=unswept)
        assert {(c.mode, c.fraction, c.variant) for c in lean} == {("deactivate", 0.2, "all")}
        assert sorted(c.draw for c in lean if c.control == "random" and c.target == "sad") == draws
