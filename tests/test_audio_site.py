"""The `audio_mlp` site: the audio tower's MLP neurons (each encoder layer's activation_fn(fc1(x))) of
Qwen2.5-Omni, Audio Flamingo 3 and Qwen2-Audio, on tiny checkpoints of their real transformers classes
(random weights, two encoder layers): the site hooks the right modules, acts on the output only through the
scaled neuron, batched condition rows equal one condition and one clip at a time through the model's own
forward, and capture reduces each clip's valid tower frames."""

import numpy as np
import pytest
import torch
from models_tiny import PROMPT, build_af3, build_omni, build_qwen2_audio, waves

from esn.capture import batch_statistics
from esn.hooks import knocked_out, on_activations, scaled
from esn.interventions import Condition, knockout_conditions, score_conditions, set_conditions
from esn.models import adapter_class

LABELS = ["neutral", "happy", "sad", "angry"]
FAMILIES = {"qwen2_5_omni": build_omni, "audio_flamingo3": build_af3, "qwen2_audio": build_qwen2_audio}
CLIPS = (0.7, 1.3, 1.0)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def adapter(request, tmp_path_factory, one_thread):
    folder = FAMILIES[request.param](tmp_path_factory.mktemp(request.param), seed=3, audio_layers=2)
    return adapter_class(request.param).load(str(folder), labels=LABELS, prompt=PROMPT, site="audio_mlp")


def _probs(adapter, clips, *hooks):
    """Label probabilities of the adapter's own path (tower, projector, decoder) with `hooks` active."""
    batch = adapter.to_device(adapter.build_batch(clips))
    with torch.no_grad():
        for h in hooks:
            h.__enter__()
        try:
            embedded = adapter.embed(batch)
        finally:
            for h in reversed(hooks):
                h.__exit__(None, None, None)
        return adapter.label_probabilities(embedded).numpy()


def keep(store, key):
    """A hook that records a copy of what it sees under `key` (first call only) and changes nothing."""
    def hook(*args):
        store.setdefault(key, (args[2] if len(args) == 3 else args[-1][0] if isinstance(args[-1], tuple)
                               else args[-1]).detach().clone())
    return hook


def _fc2_input_zeroed(layer):
    """A context: fc2's input of encoder layer `layer` zeroed (the site's definition, written independently)."""
    class Zero:
        def __enter__(self):
            self.h = layer.fc2.register_forward_pre_hook(lambda m, args: (torch.zeros_like(args[0]),))

        def __exit__(self, *exc):
            self.h.remove()
    return Zero()


def test_site_is_each_encoder_layers_fc1_activation(adapter):
    tower = adapter.audio_tower_layers()
    names = {id(m): n for n, m in adapter.model.named_modules()}
    modules = [m for m, kind in adapter.site_modules()]
    assert adapter.n_layers == len(tower) == 2 and adapter.n_neurons == tower[0].fc1.out_features == 64
    assert [names[id(m)].split("audio_tower.")[-1] for m in modules] == ["layers.0.activation_fn", "layers.1.activation_fn"]
    assert len({id(m) for m in modules}) == 2  # one activation module per layer (a shared one would hook twice)
    # what the hook sees is exactly activation_fn(fc1(x)), and it is fc2's input
    seen, fc1_out, fc2_in = {}, {}, {}
    hooks = [tower[0].fc1.register_forward_hook(keep(fc1_out, 0)), tower[0].fc2.register_forward_pre_hook(keep(fc2_in, 0))]
    try:
        with on_activations(adapter.site_modules(), lambda l, a: keep(seen, l)(l, a)):
            _probs(adapter, waves(CLIPS))
    finally:
        for h in hooks:
            h.remove()
    assert seen[0].shape[-1] == 64 and seen[1].shape == seen[0].shape
    torch.testing.assert_close(seen[0], tower[0].activation_fn(fc1_out[0]))
    torch.testing.assert_close(seen[0], fc2_in[0])
    assert adapter.provenance()["site"] == "audio_mlp" and adapter.provenance()["n_neurons"] == "64"


def test_zeroing_a_layers_fc1_activations_equals_zeroing_fc2_input(adapter):
    clips = waves(CLIPS)
    plain = _probs(adapter, clips)
    for l, layer in enumerate(adapter.audio_tower_layers()):
        site = _probs(adapter, clips, knocked_out(adapter.site_modules(), [l]))
        np.testing.assert_allclose(site, _probs(adapter, clips, _fc2_input_zeroed(layer)), atol=1e-6)
        assert np.abs(site - plain).max() > 1e-5  # the knockout does change the answer


def test_scaling_a_neuron_changes_fc2_only_along_that_neurons_weights(adapter):
    """Scaling neuron n of layer 0 by s adds (s − 1)·a_n·W2[:, n] to fc2's output at every frame of layer 0 and
    nothing else there; scaling layer 1's neurons leaves layer 0 untouched."""
    clips, n, s = waves(CLIPS), 17, 3.0
    layer0 = adapter.audio_tower_layers()[0]
    batch = adapter.build_batch(clips)
    rows = adapter.audio_site_rows(batch)
    record = {}

    def run(scales):
        outs = []
        h1 = layer0.fc2.register_forward_hook(lambda m, a, out: outs.append(out.detach().clone()) and None)
        h2 = layer0.activation_fn.register_forward_hook(keep(record, "a"))
        try:
            with scaled(adapter.site_modules(), scales, rows_of=rows):
                probs = _probs(adapter, clips)
        finally:
            h1.remove(), h2.remove()
        return outs[0], probs

    plain, p0 = run({})
    a = record["a"]
    scale = torch.ones(len(clips), adapter.n_neurons)
    scale[:, n] = s
    changed, p1 = run({0: scale})
    expected = (s - 1) * a[..., n, None] * layer0.fc2.weight[:, n].detach()
    torch.testing.assert_close(changed - plain, expected, atol=1e-5, rtol=1e-4)
    assert np.abs(p1 - p0).max() > 1e-6  # and it reaches the answer
    later, _ = run({1: torch.zeros(len(clips), adapter.n_neurons)})
    assert torch.equal(later, plain)


def test_batched_condition_rows_equal_one_condition_and_clip_at_a_time(adapter):
    """The intervention path (tower rows = condition × clip, several conditions per forward, per-row scales
    expanded to the tower's frames) against the model's own forward on one clip under one condition."""
    clips = waves(CLIPS)
    L, N = adapter.n_layers, adapter.n_neurons
    rng = np.random.default_rng(0)
    masks = {(e, c, 0.1, d): rng.random((L, N)) < 0.1 for e in ("happy", "sad") for c, d in (("selected", -1), ("random", 0))}
    conditions = [Condition("none")] + set_conditions(masks, [4.0]) + knockout_conditions(L, N)
    batched = score_conditions(adapter, clips, conditions, max_rows=2 * len(clips) + 1)  # conditions split across forwards
    for k, c in enumerate(conditions):
        for j, clip in enumerate(clips):
            batch = adapter.build_batch([clip])
            scales = {l: torch.ones(1, N) for l in c.neurons}
            for l, idx in c.neurons.items():
                scales[l][:, torch.as_tensor(idx)] = c.scale
            with torch.no_grad(), scaled(adapter.site_modules(), scales, rows_of=adapter.audio_site_rows(batch)):
                logits = adapter.model(**batch.inputs, attention_mask=batch.attention_mask).logits[:, -1]
            np.testing.assert_allclose(batched[k, j], adapter.scorer.probabilities(logits).numpy()[0], atol=2e-5)
    assert np.abs(batched[1:] - batched[0]).max() > 1e-4  # the conditions really act


def test_capture_reduces_each_clips_valid_tower_frames(adapter):
    clips = waves(CLIPS)
    together = batch_statistics(adapter, adapter.build_batch(clips), ["audio"])
    assert together.mean_activation.shape == (3, 1, adapter.n_layers, adapter.n_neurons)
    for j, clip in enumerate(clips):
        batch = adapter.build_batch([clip])
        acts = {}
        with torch.no_grad(), on_activations(adapter.site_modules(), lambda l, a: keep(acts, l)(l, a)):
            adapter.embed(batch)
        # the clip's valid frames after the stride-2 conv: every frame of Omni's packed sequence; the first
        # (L−1)//2+1 of the Whisper encoders' 1500 (L: the clip's valid mel frames)
        mel = int(batch.inputs["feature_attention_mask" if "feature_attention_mask" in batch.inputs
                                else "input_features_mask"].sum())
        frames = (mel - 1) // 2 + 1
        for l, a in acts.items():
            valid = a.reshape(-1, a.shape[-1])[:frames]
            assert a.reshape(-1, a.shape[-1]).shape[0] == (frames if adapter.family == "qwen2_5_omni" else 1500)
            np.testing.assert_allclose(together.mean_activation[j, 0, l], valid.mean(0).numpy(), atol=1e-5)
            np.testing.assert_allclose(together.frac_positive[j, 0, l], (valid > 0).float().mean(0).numpy(), atol=1e-6)
        assert together.n_positions[j, 0] == frames
    with pytest.raises(ValueError, match="audio"):
        batch_statistics(adapter, adapter.build_batch(clips), ["audio", "last"])


def test_attribution_is_the_first_order_effect_of_scaling_a_neuron(adapter):
    """attribution[b, l, n] = Σ_frames a·∂log p(true)/∂a: scaling the neuron by 1 ± ε in clip b alone moves
    log p(true label) by ±ε·attribution (to first order; the central difference removes the second), and moves
    no other clip."""
    clips, truth = waves(CLIPS), torch.tensor([1, 2, 3])
    stats = batch_statistics(adapter, adapter.build_batch(clips), ["audio"], true_label=truth)
    att = stats.attribution
    assert att.shape == (3, adapter.n_layers, adapter.n_neurons) and np.isfinite(att).all()
    batch = adapter.build_batch(clips)
    rows, eps = adapter.audio_site_rows(batch), 0.5
    for l in range(adapter.n_layers):
        n = int(np.abs(att[0, l]).argmax())
        moved = []
        for sign in (1, -1):  # a central difference: the second-order term cancels
            scale = torch.ones(3, adapter.n_neurons)
            scale[0, n] = 1 + sign * eps
            moved.append(np.log(_probs(adapter, clips, scaled(adapter.site_modules(), {l: scale}, rows_of=rows)))
                         [np.arange(3), truth.numpy()].astype(np.float64))
        delta = (moved[0] - moved[1]) / 2
        assert delta[0] == pytest.approx(eps * att[0, l, n], rel=0.1), (l, n)
        np.testing.assert_allclose(delta[1:], 0, atol=1e-6)  # other clips' rows are untouched


def test_adapters_without_a_whisper_style_tower_refuse_the_site():
    from esn.models.base import AudioLMAdapter

    class NoTower(AudioLMAdapter):
        family = "no_tower"

    with pytest.raises(ValueError, match="audio_mlp.*not supported by the no_tower adapter"):
        NoTower.__init__(NoTower.__new__(NoTower), torch.nn.Linear(1, 1), None, LABELS, PROMPT, site="audio_mlp")


@pytest.mark.parametrize("family", ["qwen2_5_omni", "audio_flamingo3", "qwen2_audio"])
def test_site_reads_the_published_towers_weights(family, tmp_path, one_thread):
    """On the layouts the hub publishes (tests/published_layouts.py: the whole Omni with `thinker.` prefixes,
    AF3/Qwen2-Audio with their published names), the site's layers are the tower whose fc1/fc2 weights the
    checkpoint stores under `<tower>.layers.<l>`, and a capture there runs."""
    from published_layouts import saved_weights
    from test_published_layouts import build_published_omni, build_published_processor_family

    from esn.models import load_adapter

    if family == "qwen2_5_omni":
        folder, tower = build_published_omni(tmp_path / family), "thinker.audio_tower"
    else:
        folder, tower = build_published_processor_family(family, tmp_path / family, "chat_template.json"), "audio_tower"
    adapter = load_adapter({"adapter": family, "path": str(folder), "prompt": PROMPT, "site": "audio_mlp",
                            "system_prompt": "" if family == "qwen2_5_omni" else None}, LABELS)
    saved = saved_weights(folder)
    layers = adapter.site_layers()
    assert len(layers) == len({k.split(".layers.")[1].split(".")[0] for k in saved if k.startswith(tower + ".layers.")})
    for l, layer in enumerate(layers):
        for part in ("fc1", "fc2"):
            assert torch.equal(getattr(layer, part).weight.detach(), saved[f"{tower}.layers.{l}.{part}.weight"])
    stats = batch_statistics(adapter, adapter.build_batch(waves([0.6, 1.1])), ["audio"])
    assert stats.mean_activation.shape == (2, 1, len(layers), layers[0].fc1.out_features)
    assert (stats.n_positions[:, 0] == [30, 55]).all()  # 100 mel frames per second -> 50 tower frames per second


def test_generated_answers_follow_the_tower_under_each_condition(adapter):
    """mode generate: each condition's greedy answer is decoded from what the tower gives under that condition
    (the decoder itself unscaled), for every clip."""
    from esn.generation import generate_answers
    from esn.interventions import answer_conditions

    clips = waves(CLIPS)
    conditions = [Condition("none")] + knockout_conditions(adapter.n_layers, adapter.n_neurons)
    _, texts = answer_conditions(adapter, clips, conditions, mode="generate", max_new_tokens=3, max_rows=4)
    batch = adapter.to_device(adapter.build_batch(clips))
    for k, c in enumerate(conditions):
        with torch.no_grad():
            if c.mode == "none":
                embedded = adapter.embed(batch)
            else:
                with knocked_out(adapter.site_modules(), [c.layer]):
                    embedded = adapter.embed(batch)
            assert list(texts[k]) == generate_answers(adapter, embedded, max_new_tokens=3), c
