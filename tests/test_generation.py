"""Generation-based answers: greedy decoding from the scored prefix with interventions at every step,
and the answer parser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models_tiny import PROMPT, build_af3, build_omni, build_qwen2_audio, waves

from conftest import LABELS, make_tiny_adapter
from esn.capture import capture
from esn.generation import generate_answers, greedy_tokens, parse_answer
from esn.hooks import scaled
from esn.interventions import Condition, evaluate
from esn.models.audio_flamingo import AudioFlamingo3Adapter
from esn.models.base import Embedded
from esn.models.qwen2_audio import Qwen2AudioAdapter
from esn.models.qwen_omni import QwenOmniAdapter
from esn.store import open_store

CLIPS = waves([0.5, 1.3, 0.8])   # different lengths: left padding is exercised
NEW = 6
FAMILIES = {"qwen2_5_omni": (build_omni, QwenOmniAdapter), "audio_flamingo3": (build_af3, AudioFlamingo3Adapter),
            "qwen2_audio": (build_qwen2_audio, Qwen2AudioAdapter)}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("text, label", [
    ("The speaker sounds angry.", "angry"), ("Happiness", "happy"), ("I think it's sad", "sad"),
    ("neutral tone", "neutral"), ("Not sure", "other"), ("ANGRY!", "angry"), ("Joy.", "happy"),
    ("sadness, maybe anger", "sad"), ("The tone is calm.", "other"), ("", "other"), ("badly", "other"),
])
def test_parse_answer_on_realistic_answers(text, label):
    assert parse_answer(text, LABELS) == label


def test_parse_answer_synonyms_follow_the_label_set():
    labels = ["neutral", "happy", "sad", "angry", "fear", "disgust", "surprise", "calm", "frustrated"]
    assert parse_answer("She is scared.", labels) == "fear"
    assert parse_answer("Disgusted", labels) == "disgust"
    assert parse_answer("surprised!", labels) == "surprise"
    assert parse_answer("Calmness", labels) == "calm"
    assert parse_answer("frustration", labels) == "frustrated"
    assert parse_answer("fearful", LABELS) == "other"           # not a class of this corpus
    assert parse_answer("elated", labels, {"happy": ["elated"]}) == "happy"


@pytest.fixture(scope="module", params=list(FAMILIES))
def loaded(request, tmp_path_factory):
    build, cls = FAMILIES[request.param]
    adapter = cls.load(str(build(tmp_path_factory.mktemp(request.param))), labels=LABELS, prompt=PROMPT)
    batch = adapter.build_batch(CLIPS)
    return adapter, batch, adapter.embed(batch)


def _reference(adapter, embedded: Embedded, n: int) -> torch.Tensor:
    """Greedy decoding the slow way: the whole sequence through the decoder again for every token."""
    e, out = embedded, []
    for _ in range(n):
        with torch.no_grad():
            token = adapter.decode_last(e).argmax(-1)
        out.append(token)
        pos = e.position_ids[..., -1:] + 1
        e = Embedded(torch.cat([e.inputs_embeds, adapter.model.get_input_embeddings()(token)[:, None]], 1),
                     torch.cat([e.attention_mask, e.attention_mask.new_ones(len(token), 1)], 1),
                     torch.cat([e.position_ids, pos], -1))
    return torch.stack(out, 1)


def test_cached_greedy_equals_uncached_and_the_models_own_generate(loaded):
    adapter, batch, embedded = loaded
    no_eos = []  # random tiny models: decode the full length, as `generate` does without an end id
    mine = greedy_tokens(adapter, embedded, max_new_tokens=NEW, eos_token_ids=no_eos)
    assert mine.shape == (len(CLIPS), NEW)
    assert torch.equal(mine, _reference(adapter, embedded, NEW))
    with torch.no_grad():
        theirs = adapter.model.generate(**batch.inputs, attention_mask=batch.attention_mask, max_new_tokens=NEW,
                                        min_new_tokens=NEW, do_sample=False, eos_token_id=None,
                                        pad_token_id=adapter.tokenizer.pad_token_id)
    assert torch.equal(mine, theirs[:, -NEW:])


def test_unit_gain_generates_the_same_tokens(loaded):
    adapter, _, embedded = loaded
    plain = greedy_tokens(adapter, embedded, max_new_tokens=NEW, eos_token_ids=[])
    ones = {l: torch.ones(len(CLIPS), adapter.n_neurons) for l in range(adapter.n_layers)}
    with scaled(adapter.site_modules(), ones):
        hooked = greedy_tokens(adapter, embedded, max_new_tokens=NEW, eos_token_ids=[])
    assert torch.equal(plain, hooked)


def test_per_row_interventions_act_on_every_decoding_step(loaded):
    """Row 1 has layer 0 deactivated, row 0 not: the cached decode must equal the slow decode (which
    rescales every position) under the same scales, and row 0 must equal the unhooked answer."""
    adapter, _, embedded = loaded
    two = embedded.select(torch.tensor([0, 0]))
    scales = {0: torch.stack([torch.ones(adapter.n_neurons), torch.zeros(adapter.n_neurons)])}
    seen = []
    with scaled(adapter.site_modules(), scales):
        handle = adapter.site_modules()[0][0].register_forward_hook(lambda m, a, o: seen.append(tuple(o.shape[:2])))
        cached = greedy_tokens(adapter, two, max_new_tokens=NEW, eos_token_ids=[])
        handle.remove()
        slow = _reference(adapter, two, NEW)
    assert torch.equal(cached, slow)
    assert seen[0][0] == 2 and [s for s in seen[1:]] == [(2, 1)] * (NEW - 1)   # prefill, then one per token
    assert torch.equal(cached[0], greedy_tokens(adapter, embedded, max_new_tokens=NEW, eos_token_ids=[])[0])


class LabelThenStop:
    """A test double of a model that answers one label word and stops: on the answer position it adds
    `boost` to every label's bare first token (so greedy token = argmax label), afterwards to the end id."""

    def __init__(self, adapter, boost: float = 30.0):
        self.adapter, self.boost, self.calls = adapter, boost, 0
        self.labels = torch.tensor([ids[0] for ids in adapter.scorer.first_token_ids])
        self.eos = adapter.tokenizer.eos_token_id

    def __call__(self, _module, _args, logits):
        logits = logits.clone()
        if self.calls == 0:
            logits[..., self.labels] += self.boost
        else:
            logits[..., self.eos] += self.boost
        self.calls += 1
        return logits


def test_scored_and_generated_predictions_agree_when_the_answer_is_a_label_token():
    adapter = make_tiny_adapter()
    batch = adapter.build_batch(waves([0.6, 0.9, 1.2, 0.7, 1.0], seed=3))
    double = LabelThenStop(adapter)
    handle = adapter.model.get_output_embeddings().register_forward_hook(double)
    try:
        with torch.no_grad():
            embedded = adapter.embed(batch)
            scored = adapter.label_probabilities(embedded).argmax(-1)
        double.calls = 0
        texts = generate_answers(adapter, embedded)
    finally:
        handle.remove()
    assert double.calls == 2, "the answer ends after the label word"
    assert texts == [LABELS[i] for i in scored]
    assert [parse_answer(t, LABELS) for t in texts] == [LABELS[i] for i in scored]


def test_evaluate_in_generate_mode_adds_columns_and_keeps_the_scored_ones(tiny_adapter, tiny_manifest):
    manifest = tiny_manifest.iloc[:6]
    conditions = [Condition("gain", "happy", "selected", alpha=2.0, neurons={0: np.arange(10)})]
    scored = evaluate(tiny_adapter, manifest, conditions, batch_size=4, max_rows=8)
    both = evaluate(tiny_adapter, manifest, conditions, batch_size=4, max_rows=8, mode="generate", max_new_tokens=3)
    assert list(both.columns) == list(scored.columns) + ["generated", "predicted_generated"]
    np.testing.assert_allclose(both["p_happy"], scored["p_happy"], atol=1e-6)
    assert set(both["predicted_generated"]) <= set(LABELS) | {"other"}
    assert 0.0 <= both.attrs["scored_generated_agreement"] <= 1.0
    # each row's text is the greedy answer under its own condition
    gain = both[both["mode"] == "gain"].sort_values("utterance_id")
    assert gain["generated"].map(type).eq(str).all()


def test_capture_in_generate_mode_records_answers_and_agreement(tiny_adapter, tiny_manifest, tmp_path):
    summary = capture(tiny_adapter, tiny_manifest.iloc[:8], tmp_path / "g.zarr", groups=["audio"], batch_size=4,
                      block_size=4, mode="generate", max_new_tokens=3)
    ds = open_store(tmp_path / "g.zarr")
    assert ds.attrs["answer_mode"] == "generate"
    agree = float((ds["predicted_generated"].values == ds["predicted"].values).mean())
    assert summary["scored_generated_agreement"] == pytest.approx(agree, abs=1e-4)
    assert ds["generated"].dims == ("utterance",) and all(isinstance(t, str) for t in ds["generated"].values)
    assert set(ds["predicted_generated"].values) <= set(LABELS) | {"other"}
