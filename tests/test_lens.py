"""Logit lens (issue #25): the last layer's lens is the model's own answer, for every family's tiny real checkpoint
(and multi-token whole-label scoring); per-row deactivation through the lens equals one condition at a time; the
recall and resolution tables follow their rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import LABELS, make_tiny_adapter
from models_tiny import PROMPT, build_af3, build_kimi_fake, build_omni, build_qwen2_audio, waves
from test_scoring import omni_multi_token

from esn.hooks import scaled
from esn.interventions import Condition
from esn.lens import lens_logprobs, lens_recall, lens_table, resolution
from esn.metrics import bootstrap_unit, bootstrap_weights, summarize
from esn.models.audio_flamingo import AudioFlamingo3Adapter
from esn.models.kimi_audio import KimiAudioAdapter, KimiaPromptBuilder
from esn.models.qwen2_audio import Qwen2AudioAdapter
from esn.models.qwen_omni import QwenOmniAdapter

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = {"qwen_omni": (build_omni, QwenOmniAdapter), "audio_flamingo3": (build_af3, AudioFlamingo3Adapter),
            "qwen2_audio": (build_qwen2_audio, Qwen2AudioAdapter)}


def last_layer_matches(adapter) -> torch.Tensor:
    """Assert the lens at the last layer equals the answer step exactly; return the whole lens."""
    embedded = adapter.embed(adapter.to_device(adapter.build_batch(waves([1.0, 1.6, 0.7], seed=3))))
    with torch.no_grad():
        lens = lens_logprobs(adapter, embedded)
        own = adapter.label_logprobs(embedded)
    assert lens.shape == (3, adapter.n_layers, len(adapter.labels))
    assert torch.equal(lens[:, -1], own)
    return lens


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_last_layer_is_the_answer_step(family, tmp_path):
    build, cls = FAMILIES[family]
    lens = last_layer_matches(cls.load(str(build(tmp_path)), labels=LABELS, prompt=PROMPT))
    # an earlier layer reads something else: the lens is not the last layer copied
    assert not torch.allclose(lens[:, 0], lens[:, -1])


def test_last_layer_is_the_answer_step_with_multi_token_labels():
    adapter = omni_multi_token(["neutral", "happy", "sad", "angry"])
    assert not adapter.scorer.one_pass
    last_layer_matches(adapter)


def test_kimi_text_head():
    model, manager = build_kimi_fake()   # FAKE of Kimi-Audio's remote class (same layout: model.norm, lm_head)
    last_layer_matches(KimiAudioAdapter(model, KimiaPromptBuilder(manager), LABELS, PROMPT, scoring="first_token"))


def test_refuses_a_model_without_a_final_norm():
    adapter = make_tiny_adapter()
    adapter.model.get_decoder().norm = None
    with pytest.raises(ValueError, match="final norm"):
        lens_logprobs(adapter, adapter.embed(adapter.build_batch(waves([1.0]))))


def test_deactivation_rows_equal_one_condition_at_a_time(tiny_adapter, tiny_manifest):
    manifest = tiny_manifest.iloc[:6]
    rng = np.random.default_rng(0)
    conds = [Condition("deactivate", e, "selected", 0.0, 0.1,
                       neurons={l: np.sort(rng.choice(tiny_adapter.n_neurons, 10, replace=False)) for l in (0, 1)})
             for e in LABELS[:2]]
    table = lens_table(tiny_adapter, manifest, {"mad": conds}, batch_size=4, max_rows=5)
    assert len(table) == len(manifest) * (1 + len(conds)) * tiny_adapter.n_layers
    from esn.capture import store_order
    from esn.audio import load_16k_mono
    utts = store_order(manifest)
    embedded = tiny_adapter.embed(tiny_adapter.build_batch([load_16k_mono(p) for p in utts["path"]]))
    sites = tiny_adapter.site_modules()
    for c in conds:
        scales = {l: torch.ones(len(utts), tiny_adapter.n_neurons) for l in c.neurons}
        for l, idx in c.neurons.items():
            scales[l][:, idx] = 0.0
        with torch.no_grad(), scaled(sites, scales):
            alone = lens_logprobs(tiny_adapter, embedded).exp().numpy()
        rows = table[(table["target"] == c.target)].sort_values(["layer", "utterance_id"])
        for layer in range(tiny_adapter.n_layers):
            got = rows[rows["layer"] == layer].set_index("utterance_id").loc[utts["utterance_id"]]
            np.testing.assert_allclose(got[[f"p_{l}" for l in LABELS]].to_numpy(), alone[:, layer], atol=1e-6)
    # deactivation changed something (else the comparison above shows nothing)
    none = table[table["mode"] == "none"].sort_values(["layer", "utterance_id"])
    some = table[table["target"] == LABELS[0]].sort_values(["layer", "utterance_id"])
    assert not np.allclose(none["p_" + LABELS[0]].to_numpy(), some["p_" + LABELS[0]].to_numpy())


def planted(layers: int = 3, per_class: int = 12, speakers: int = 4) -> pd.DataFrame:
    """A lens table where layer 0 predicts at random, layer 1 half right, layer 2 always right."""
    rng = np.random.default_rng(0)
    rows = []
    for k, e in enumerate(LABELS):
        for i in range(per_class):
            for layer in range(layers):
                right = layer == 2 or (layer == 1 and i % 2 == 0)
                pred = e if right else LABELS[rng.integers(len(LABELS))]
                rows.append({"utterance_id": f"{e}{i}", "emotion": e, "speaker": f"s{i % speakers}", "selector": "",
                             "mode": "none", "target": "", "control": "", "fraction": 0.0, "layer": layer,
                             "predicted": pred})
    return pd.DataFrame(rows)


def test_recall_and_resolution_rules():
    table = planted()
    recall = lens_recall(table, LABELS, n_boot=200, seed=0, unit="utterance")
    uar = recall[recall["class"] == "UAR"].set_index("layer")
    assert uar.loc[2, "recall"] == 1.0
    # by hand: layer 1's recall of each class is the share of its utterances predicted right
    for e in LABELS:
        part = table[(table["layer"] == 1) & (table["emotion"] == e)]
        expected = (part["predicted"] == e).mean()
        got = recall[(recall["class"] == e) & (recall["layer"] == 1)]["recall"].item()
        assert got == pytest.approx(expected)
    assert (recall["chance"] == 1 / len(LABELS)).all()
    res = resolution(recall).set_index("class")
    # layer 0 is random (interval covers chance); layer 2 is perfect: the UAR resolves at layer 1 or 2, never 0
    assert res.loc["UAR", "resolution_layer"] in (1, 2)
    lo0 = uar.loc[0, "recall_lo"]
    assert lo0 <= 1 / len(LABELS)
    never = planted().assign(predicted=LABELS[0])  # always the first label: no class but that one resolves
    res_never = resolution(lens_recall(never, LABELS, n_boot=200, seed=0, unit="utterance")).set_index("class")
    assert res_never.loc[LABELS[1], "resolution_layer"] == -1
    assert res_never.loc["UAR", "resolution_layer"] == -1


def test_recall_interval_is_the_study_interval():
    """lens_recall's interval is the one every table uses (esn.metrics): equal to summarize's UAR interval on the
    same predictions and resamples, and wider than the plain 2.5/97.5 percentiles with 4 speakers."""
    lens = planted(speakers=4).sort_values(["utterance_id", "layer"], ignore_index=True)
    recall = lens_recall(lens, LABELS, n_boot=300, seed=3)
    assert (recall["bootstrap_unit"] == "speaker").all()
    for layer in (0, 1):
        part = lens[lens["layer"] == layer].assign(variant="", alpha=0.0, layer=-1, draw=-1)
        shared = summarize(part, LABELS, n_boot=300, seed=3)["conditions"].iloc[0]
        mine = recall[(recall["layer"] == layer) & (recall["class"] == "UAR")].iloc[0]
        assert mine["recall"] == pytest.approx(shared["uar"])
        assert (mine["recall_lo"], mine["recall_hi"]) == pytest.approx((shared["uar_lo"], shared["uar_hi"]))
    # the plain percentile interval of the same resamples is narrower: the expanded one is what is used
    table = lens[lens["layer"] == 1].set_index("utterance_id")
    clusters, _ = bootstrap_unit(table["speaker"], "speaker")
    w = bootstrap_weights(len(table), 300, 3, clusters)
    y, pred = table["emotion"].to_numpy(), table["predicted"].to_numpy()
    uar = np.mean([(w @ ((y == e) & (pred == e))) / (w @ (y == e)) for e in LABELS], axis=0)
    plain_lo, plain_hi = np.percentile(uar[1:], [2.5, 97.5])
    mine = recall[(recall["layer"] == 1) & (recall["class"] == "UAR")].iloc[0]
    assert mine["recall_lo"] < plain_lo and mine["recall_hi"] >= plain_hi


def test_tables_and_figure_from_a_real_lens_run(tiny_adapter, tiny_manifest, tmp_path):
    from esn.figures.lens import plot_lens, read_lens
    from esn.tables import read_table, write_table
    conds = [Condition("deactivate", e, "selected", 0.0, 0.05, neurons={0: np.arange(8)}) for e in LABELS]
    table = lens_table(tiny_adapter, tiny_manifest.iloc[:8], {"mad": conds}, batch_size=8)
    write_table(table, tmp_path / "lens.parquet", "lens")  # the lens rule's table, as lens_tables reads it back
    table = read_table(tmp_path / "lens.parquet", "lens")
    recall = lens_recall(table, LABELS, n_boot=50, seed=0)
    resolved = resolution(recall)
    write_table(recall, tmp_path / "recall.csv", "lens_recall")
    write_table(resolved, tmp_path / "resolution.csv", "lens_resolution")
    back = read_lens(tmp_path / "recall.csv")
    assert set(back["selector"]) == {"", "mad"} and (back["recall_lo"] <= back["recall_hi"]).all()
    outs = [tmp_path / "lens.pdf", tmp_path / "lens.png"]
    plot_lens(back, read_lens(tmp_path / "resolution.csv", "lens_resolution"), outs, selectors=["mad"], fraction=0.05, title="tiny")
    assert all(p.stat().st_size > 1000 for p in outs)
