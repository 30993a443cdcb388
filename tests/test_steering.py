"""Steering vectors (issue #25): α = 0 is the unmodified model; the direction is mean(emotion) − mean(rest) of the
residual and its norm the change neuron gain makes on the MLP output, both recomputed by hand with plain forwards;
batched rows equal one condition at a time; the table is one the metrics read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import LABELS

from esn.audio import load_16k_mono
from esn.batching import Fit
from esn.capture import store_order
from esn.hooks import scaled
from esn.metrics import summarize
from esn.steering import (Steer, mean_difference, residual_statistics, shifted, steer_table, steered_probabilities,
                          steering_conditions, steering_layers)

pytestmark = pytest.mark.usefixtures("one_thread")


def small_sets(adapter, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {e: rng.random((adapter.n_layers, adapter.n_neurons)) < 0.1 for e in LABELS}


def by_hand(adapter, manifest, layer: int, sets, stream: str = "residual"):
    """Per clip: the layer's output (or its MLP's output) averaged over real positions, and per emotion the mean
    per-position norm of (MLP output with gain α = 1 on the set) − (MLP output unmodified), from whole forwards
    with hooks."""
    utts = store_order(manifest)
    batch = adapter.build_batch([load_16k_mono(p) for p in utts["path"]])
    embedded = adapter.embed(batch)
    real = batch.attention_mask.float()
    seen = {}
    h1 = adapter.decoder_layers()[layer].register_forward_hook(
        lambda m, a, o: seen.__setitem__("h", o[0] if isinstance(o, tuple) else o))
    h2 = adapter.decoder_layers()[layer].mlp.register_forward_hook(lambda m, a, o: seen.__setitem__("mlp", o))
    with torch.no_grad():
        adapter.decode_last(embedded)
        resid, plain = seen["h"], seen["mlp"]
        norms = {}
        for e, mask in sets.items():
            scales = {layer: torch.ones(batch.size, adapter.n_neurons)}
            scales[layer][:, torch.as_tensor(np.flatnonzero(mask[layer]))] = 2.0
            with scaled(adapter.site_modules(), scales):
                adapter.decode_last(embedded)
            per_pos = (seen["mlp"] - plain).norm(dim=-1)
            norms[e] = float(((per_pos * real).sum(1) / real.sum(1)).mean())
    h1.remove(), h2.remove()
    act = resid if stream == "residual" else plain
    means = ((act * real[..., None]).sum(1) / real.sum(1)[:, None]).numpy()
    return utts, means, norms


def test_vector_is_mean_difference_scaled_to_the_gain_change(tiny_adapter, tiny_manifest):
    manifest, sets, layer = tiny_manifest.iloc[:10], small_sets(tiny_adapter), 0
    utts, means, norms = residual_statistics(tiny_adapter, manifest, [layer], sets, batch_size=3)
    hand_utts, hand_means, hand_norms = by_hand(tiny_adapter, manifest, layer, sets)
    assert list(utts["utterance_id"]) == list(hand_utts["utterance_id"])
    np.testing.assert_allclose(means[:, 0], hand_means, atol=1e-5)
    for e in LABELS:
        assert norms[e][0] == pytest.approx(hand_norms[e], rel=1e-4)
        assert hand_norms[e] > 0
    emotions = utts["emotion"].to_numpy()
    directions = mean_difference(means, emotions, LABELS)
    steers = steering_conditions(directions, norms, LABELS, [layer], [1.0, 3.0], 0.1, seed=0)
    for e in LABELS:
        own = hand_means[emotions == e].mean(0) - hand_means[emotions != e].mean(0)   # by hand
        for s in (x for x in steers if x.target == e and x.control == "selected"):
            np.testing.assert_allclose(s.vector, s.alpha * hand_norms[e] * own / np.linalg.norm(own), rtol=1e-4,
                                       atol=1e-6)
        rnd = [x for x in steers if x.target == e and x.control == "random"]
        assert all(np.linalg.norm(x.vector) == pytest.approx(x.alpha * norms[e][0], rel=1e-5) for x in rnd)
        assert abs(np.dot(rnd[0].vector, own)) < 0.9 * np.linalg.norm(rnd[0].vector) * np.linalg.norm(own)


def test_alpha_zero_is_unmodified_and_the_table_feeds_the_metrics(tiny_adapter, tiny_manifest):
    manifest, sets = tiny_manifest.iloc[:8], small_sets(tiny_adapter)
    utts, means, norms = residual_statistics(tiny_adapter, manifest, [0], sets)
    steers = steering_conditions(mean_difference(means, utts["emotion"].to_numpy(), LABELS), norms, LABELS, [0],
                                 [0.0, 8.0], 0.1)
    table = steer_table(tiny_adapter, manifest, steers, batch_size=8, max_rows=16)
    p = [f"p_{l}" for l in LABELS]
    none = table[table["mode"] == "none"].set_index("utterance_id")[p]
    for (target, control), part in table[table["alpha"] == 0.0].groupby(["target", "control"]):
        assert (part.set_index("utterance_id")[p].loc[none.index].to_numpy() == none.to_numpy()).all()
    strong = table[(table["alpha"] == 8.0)].set_index("utterance_id")
    assert not np.allclose(strong[p].to_numpy(), none.loc[strong.index].to_numpy())
    out = summarize(table, LABELS, n_boot=20, seed=0)
    assert {"steer", "none"} == set(out["conditions"]["mode"])
    assert set(out["summary"]["control"]) == {"selected", "random"}


def test_batched_rows_equal_one_condition_at_a_time(tiny_adapter, tiny_manifest):
    utts = store_order(tiny_manifest.iloc[:5])
    embedded = tiny_adapter.embed(tiny_adapter.build_batch([load_16k_mono(p) for p in utts["path"]]))
    rng = np.random.default_rng(1)
    H = embedded.inputs_embeds.shape[-1]
    steers = [Steer(e, "selected", 1.0, l, 0.1, vector=rng.standard_normal(H).astype(np.float32))
              for e in LABELS[:2] for l in (0, 1)]
    with torch.no_grad():
        batched = steered_probabilities(tiny_adapter, embedded, steers, Fit(7, "rows per forward"))
        for k, s in enumerate(steers):
            shift = torch.as_tensor(s.vector)[None].expand(len(utts), H)
            with shifted(tiny_adapter.decoder_layers(), {s.layer: shift}):
                alone = tiny_adapter.label_probabilities(embedded).numpy()
            np.testing.assert_allclose(batched[k], alone, atol=1e-6)
        plain = tiny_adapter.label_probabilities(embedded).numpy()
    assert not np.allclose(batched[0], plain, atol=1e-4)


def test_mlp_output_stream(tiny_adapter, tiny_manifest):
    """The MLP-output vector is mean(emotion) − mean(rest) of the MLP output by hand (not the residual's); added
    there at α = 0 it is the unmodified model; at a large α it moves the answer."""
    manifest, sets, layer = tiny_manifest.iloc[:10], small_sets(tiny_adapter), 1
    utts, means, norms = residual_statistics(tiny_adapter, manifest, [layer], sets, batch_size=4, stream="mlp_output")
    _, hand_mlp, hand_norms = by_hand(tiny_adapter, manifest, layer, sets, stream="mlp_output")
    _, hand_resid, _ = by_hand(tiny_adapter, manifest, layer, sets)
    np.testing.assert_allclose(means[:, 0], hand_mlp, atol=1e-5)
    assert not np.allclose(hand_mlp, hand_resid, atol=1e-3)
    emotions = utts["emotion"].to_numpy()
    directions = mean_difference(means, emotions, LABELS)
    for i, e in enumerate(LABELS):
        own = hand_mlp[emotions == e].mean(0) - hand_mlp[emotions != e].mean(0)
        np.testing.assert_allclose(directions[i, 0], own, atol=1e-5)
        assert norms[e][0] == pytest.approx(hand_norms[e], rel=1e-4)
    steers = steering_conditions(directions, norms, LABELS, [layer], [0.0, 50.0], 0.1)
    table = steer_table(tiny_adapter, manifest, steers, batch_size=5, max_rows=12, stream="mlp_output")
    assert (table["stream"] == "mlp_output").all()
    p = [f"p_{l}" for l in LABELS]
    none = table[table["mode"] == "none"].set_index("utterance_id")[p]
    for _, part in table[table["alpha"] == 0.0].groupby(["target", "control"]):
        assert (part.set_index("utterance_id")[p].loc[none.index].to_numpy() == none.to_numpy()).all()
    strong = table[table["alpha"] == 50.0].set_index("utterance_id")
    assert not np.allclose(strong[p].to_numpy(), none.loc[strong.index].to_numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="stream"):
        steer_table(tiny_adapter, manifest, steers, stream="attention")


def test_several_layers_give_one_table_whose_rows_equal_the_single_layer_run(tiny_adapter, tiny_manifest):
    assert steering_layers(0, "all", 2) == [0, 1] and steering_layers(None, None, 4) == [2]
    assert steering_layers(0, [1], 2) == [1] and steering_layers(1, None, 2) == [1]
    with pytest.raises(ValueError, match="layers"):
        steering_layers(0, [2], 2)
    manifest, sets = tiny_manifest.iloc[:8], small_sets(tiny_adapter)
    emotions = store_order(manifest)["emotion"].to_numpy()

    def run(layers):
        _, means, norms = residual_statistics(tiny_adapter, manifest, layers, sets, batch_size=8)
        steers = steering_conditions(mean_difference(means, emotions, LABELS), norms, LABELS, layers, [4.0], 0.1,
                                     seed=5)
        return steer_table(tiny_adapter, manifest, steers, batch_size=8, max_rows=20)  # rows of both layers mix

    both, single = run([0, 1]), run([1])
    assert set(both.loc[both["mode"] == "steer", "layer"]) == {0, 1}
    keys = ["mode", "control", "target", "alpha", "layer", "draw", "utterance_id"]
    p = [f"p_{l}" for l in LABELS]
    mine = both[both["layer"].isin([-1, 1])].sort_values(keys).reset_index(drop=True)
    alone = single.sort_values(keys).reset_index(drop=True)
    assert mine[keys].equals(alone[keys])
    np.testing.assert_allclose(mine[p].to_numpy(), alone[p].to_numpy(), atol=1e-6)
    layer0 = both[both["layer"] == 0].sort_values(keys)
    assert not np.allclose(layer0[p].to_numpy(), alone[alone["mode"] == "steer"][p].to_numpy(), atol=1e-4)
    # the metrics keep the layers apart: each vector is set against its own layer's random direction
    summary = summarize(both, LABELS, n_boot=20, seed=0)["summary"]
    steer = summary[summary["mode"] == "steer"]
    assert set(steer["layer"]) == {0, 1}
    tested = steer[(steer["control"] == "selected") & (steer["statistic"] != "specificity_vs_random")]
    assert len(tested) == 2 * 3 and (tested["random_draws"] == 1).all()


def test_figure_from_real_tables(tiny_adapter, tiny_manifest, tmp_path):
    from esn.figures import plot_steering
    manifest, sets = tiny_manifest.iloc[:8], small_sets(tiny_adapter)
    utts, means, norms = residual_statistics(tiny_adapter, manifest, [0], sets)
    steers = steering_conditions(mean_difference(means, utts["emotion"].to_numpy(), LABELS), norms, LABELS, [0],
                                 [2.0, 8.0], 0.1)
    steers += [Steer(s.target, s.control, s.alpha, 1, s.fraction, s.draw, s.vector) for s in steers]  # 2 layers
    out = summarize(steer_table(tiny_adapter, manifest, steers, batch_size=8), LABELS, n_boot=20, seed=0)
    # the gain side: the same tables relabelled (a plotting check; the numbers are the steering's)
    gain = {k: out[k].assign(mode=out[k]["mode"].replace("steer", "gain"), selector="mad")
            for k in ("conditions", "summary")}
    paths = [tmp_path / "steering.pdf", tmp_path / "steering.png"]
    plot_steering(gain["conditions"], gain["summary"], out["conditions"], out["summary"], paths, fraction=0.1,
                  selectors=["mad"], title="tiny")
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize("stream", ["residual", "mlp_output"])
@pytest.mark.parametrize("family", ["audio_flamingo3", "qwen2_audio", "qwen_omni"])
def test_every_family_steers_through_its_answer_step(family, stream, tmp_path):
    """On each family's tiny real checkpoint: a zero vector is the unmodified model exactly, a vector added at one
    layer moves the answer, and rows batched two at a time equal each condition's own forward."""
    from models_tiny import PROMPT, waves
    from test_lens import FAMILIES

    build, cls = FAMILIES[family]
    adapter = cls.load(str(build(tmp_path)), labels=LABELS, prompt=PROMPT)
    with torch.no_grad():
        embedded = adapter.embed(adapter.to_device(adapter.build_batch(waves([1.0, 1.4, 0.8], seed=5))))
    H = embedded.inputs_embeds.shape[-1]
    rng = np.random.default_rng(0)
    steers = [Steer("happy", "selected", 0.0, 0, 0.05, vector=np.zeros(H, dtype=np.float32)),
              Steer("happy", "selected", 8.0, 0, 0.05, vector=rng.normal(0, 4, H).astype(np.float32)),
              Steer("sad", "random", 8.0, adapter.n_layers - 1, 0.05, vector=rng.normal(0, 4, H).astype(np.float32))]
    with torch.no_grad():
        plain = adapter.label_probabilities(embedded).numpy()
        batched = steered_probabilities(adapter, embedded, steers, Fit(2, "rows per forward"), stream=stream)
        alone = [steered_probabilities(adapter, embedded, [s], Fit(8, "rows per forward"), stream=stream)[0]
                 for s in steers]
    assert np.array_equal(batched[0], plain)
    assert not np.allclose(batched[1], plain, atol=1e-4)
    for k in (1, 2):
        np.testing.assert_allclose(batched[k], alone[k], atol=1e-5)
