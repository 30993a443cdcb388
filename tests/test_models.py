"""Model adapters on tiny random checkpoints of every real class (and a FAKE Kimi-Audio).

Each family's checkpoint is built offline (tests/models_tiny.py), saved with `save_pretrained` and
loaded back through its adapter's `load`, so the load path is the one the workflow uses. For every
family the split forward (`embed` once, `decode_last` per condition) must equal the model's own full
forward, batches must score like single clips, hooks must see the tensor they claim to, a gain of
exactly 1 must change nothing at all, and deactivation must not depend on the site.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from models_tiny import (PROMPT, build_af3, build_kimi_fake, build_omni, build_qwen2_audio, install_prompt_manager,
                         waves)

from esn.hooks import on_activations, scaled
from esn.models import load_adapter
from esn.models.audio_flamingo import AudioFlamingo3Adapter
from esn.models.base import LabelScorer
from esn.sites import DECODER_SITES
from esn.models.kimi_audio import KimiAudioAdapter, KimiaPromptBuilder
from esn.models.qwen2_audio import Qwen2AudioAdapter
from esn.models.qwen_omni import QwenOmniAdapter, audio_token_count, mel_frames

LABELS = ["neutral", "happy", "sad", "angry"]
CLIPS = waves([0.5, 1.3, 0.8])          # different lengths: left padding is exercised
ATOL = 1e-5
COMMIT = "349251e1d8f4f98d58fda59246381faecd7392e0"   # a 40-hex revision, as remote code requires

FAMILIES = {
    "qwen2_5_omni": (build_omni, QwenOmniAdapter),
    "audio_flamingo3": (build_af3, AudioFlamingo3Adapter),
    "qwen2_audio": (build_qwen2_audio, Qwen2AudioAdapter),
    "kimi_audio": (None, KimiAudioAdapter),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(name, adapter, padded batch of CLIPS, one single-clip batch per clip) for one family."""
    name = request.param
    build, cls = FAMILIES[name]
    if build is None:  # the FAKE Kimi-Audio: remote code cannot run here
        model, prompt_manager = build_kimi_fake()
        adapter = cls(model, KimiaPromptBuilder(prompt_manager), LABELS, PROMPT, source="fake-kimi")
    else:
        folder = build(tmp_path_factory.mktemp(name))
        adapter = cls.load(str(folder), labels=LABELS, prompt=PROMPT)
    return name, adapter, adapter.build_batch(CLIPS), [adapter.build_batch([c]) for c in CLIPS]


@torch.no_grad()
def split_logits(adapter, batch) -> torch.Tensor:
    return adapter.decode_last(adapter.embed(batch))


@torch.no_grad()
def full_forward_last(name: str, adapter, batch, singles) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-position logits of the model's own full forward: (batched, one clip at a time)."""
    m = adapter.model
    if name == "kimi_audio":  # the remote forward is for a batch of one, as kimia_infer feeds it
        one = torch.cat([adapter.full_forward_last(c) for c in CLIPS])
        return one, one
    if name == "qwen2_5_omni":  # its own multimodal rope index handles left padding
        batched = m(**batch.inputs, attention_mask=batch.attention_mask).logits[:, -1]
    else:  # the forward counts padding in positions; give it the padding-free ones the adapter uses
        batched = m(**batch.inputs, attention_mask=batch.attention_mask,
                    position_ids=adapter.position_ids(batch)).logits[:, -1]
    one = torch.cat([m(**s.inputs, attention_mask=s.attention_mask).logits[:, -1] for s in singles])
    return batched, one


def with_site(adapter, site: str):
    class _Site:
        def __enter__(self):
            self.old, adapter.site = adapter.site, site
            return adapter

        def __exit__(self, *exc):
            adapter.site = self.old
    return _Site()


# --- inputs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["audio_flamingo3", "qwen2_audio"])
def test_inputs_equal_the_real_processor(name, tmp_path):
    """build_batch == the checkpoint's processor, called directly and through its chat template."""
    build, cls = FAMILIES[name]
    adapter = cls.load(str(build(tmp_path)), labels=LABELS, prompt=PROMPT)
    proc = adapter.processor
    batch = adapter.build_batch(CLIPS)
    # the processor called directly on the whole batch, as its documentation calls it (AF3 pads text
    # on the left by default; a plain `padding=True` would also reach AF3's feature extractor and pad
    # the features to the longest clip instead of 30 s, which its encoder cannot take)
    text = proc.apply_chat_template(adapter.conversation(), add_generation_prompt=True, tokenize=False)
    kwargs = {} if name == "audio_flamingo3" else {"padding": True}
    direct = proc(text=[text] * len(CLIPS), audio=CLIPS, sampling_rate=16000, return_tensors="pt", **kwargs)
    for key, value in batch.inputs.items():
        assert torch.equal(value, direct[key]), key
    assert torch.equal(batch.attention_mask, direct["attention_mask"])
    # each clip through the chat template with the waveform inside the conversation (no padding)
    for b, clip in enumerate(CLIPS):
        conv = adapter.conversation()
        conv[-1]["content"][0]["audio"] = clip
        ref = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt")
        real = batch.attention_mask[b].bool()
        assert torch.equal(batch.inputs["input_ids"][b, real], ref["input_ids"][0])
        assert torch.equal(batch.inputs["input_features"][b], ref["input_features"][0])
        n_audio = int(batch.audio_mask[b].sum())
        assert n_audio == audio_token_count(mel_frames(len(clip)))   # 25 per second
    assert not batch.attention_mask[0, 0] and batch.attention_mask[:, -1].all()   # left padding


def test_audio_positions_per_clip(family):
    """25 audio tokens per second (Omni, AF3, Qwen2-Audio; Omni's processor needs torchvision, so its
    hand-built inputs are checked by this rule) or 12.5 speech tokens per second (Kimi-Audio)."""
    name, _, batch, _ = family
    counts = batch.audio_mask.sum(-1).tolist()
    if name == "kimi_audio":
        assert counts == [-(-len(c) // 1280) for c in CLIPS]
    else:
        assert counts == [audio_token_count(mel_frames(len(c))) for c in CLIPS]
    assert not (batch.audio_mask & ~batch.attention_mask.bool()).any()


def test_af3_long_clip_is_cut_into_30s_windows(tmp_path):
    """AF3's processor cuts a clip into 30-s windows (one feature row each); the audio embeddings must
    follow the windows in the order the model scatters them."""
    adapter = AudioFlamingo3Adapter.load(str(build_af3(tmp_path)), labels=LABELS, prompt=PROMPT)
    clips = waves([31.0, 0.5], seed=1)
    batch = adapter.build_batch(clips)
    assert batch.inputs["input_features"].shape[0] == 3                       # 2 windows + 1
    assert batch.audio_mask.sum(-1).tolist() == [audio_token_count(3000) + audio_token_count(100), 12]
    split = split_logits(adapter, batch)
    with torch.no_grad():
        full = adapter.model(**batch.inputs, attention_mask=batch.attention_mask,
                             position_ids=adapter.position_ids(batch)).logits[:, -1]
    assert torch.allclose(split, full, atol=ATOL, rtol=0)
    one = torch.cat([split_logits(adapter, adapter.build_batch([c])) for c in clips])
    assert torch.allclose(split, one, atol=ATOL, rtol=0)


# --- the split forward ------------------------------------------------------------------------

def test_split_forward_equals_the_models_own_forward(family):
    name, adapter, batch, singles = family
    split = split_logits(adapter, batch)
    batched, one = full_forward_last(name, adapter, batch, singles)
    assert torch.allclose(split, batched, atol=ATOL, rtol=0)
    assert torch.allclose(split, one, atol=ATOL, rtol=0)


def test_batched_scoring_equals_one_at_a_time(family):
    _, adapter, batch, singles = family
    batched = split_logits(adapter, batch)
    one = torch.cat([split_logits(adapter, s) for s in singles])
    assert torch.allclose(batched, one, atol=ATOL, rtol=0)
    probs = adapter.scorer.probabilities(batched)
    assert torch.allclose(probs, adapter.scorer.probabilities(one), atol=ATOL, rtol=0)
    assert probs.shape == (len(CLIPS), len(LABELS))
    assert torch.allclose(adapter.score(CLIPS), probs, atol=ATOL, rtol=0)


# --- hooks and interventions ------------------------------------------------------------------

@pytest.mark.parametrize("site", DECODER_SITES)  # the audio tower's site: tests/test_audio_site.py
def test_hooks_see_the_intended_tensor(family, site):
    name, adapter, batch, _ = family
    with with_site(adapter, site):
        layers = adapter.decoder_layers()
        mlp_inputs, seen = {}, {}
        handles = [layer.mlp.register_forward_pre_hook(
            lambda _m, args, l=l: mlp_inputs.__setitem__(l, args[0].detach().clone()))
            for l, layer in enumerate(layers)]
        try:
            with on_activations(adapter.site_modules(), lambda l, a: seen.__setitem__(l, a.detach().clone())):
                split_logits(adapter, batch)
        finally:
            for h in handles:
                h.remove()
        assert sorted(seen) == list(range(adapter.n_layers)) == sorted(mlp_inputs)
        with torch.no_grad():
            for l, layer in enumerate(layers):
                x, mlp = mlp_inputs[l], layer.mlp
                expected = mlp.act_fn(mlp.gate_proj(x))
                if site == "down_proj_input":
                    expected = expected * mlp.up_proj(x)
                assert seen[l].shape[-1] == adapter.n_neurons
                assert torch.allclose(seen[l], expected, atol=1e-6, rtol=0), (name, site, l)


@pytest.mark.parametrize("site", DECODER_SITES)  # the audio tower's site: tests/test_audio_site.py
def test_unit_gain_is_bit_identical(family, site):
    _, adapter, batch, _ = family
    with with_site(adapter, site):
        plain = split_logits(adapter, batch)
        ones = {l: torch.ones(batch.size, adapter.n_neurons) for l in range(adapter.n_layers)}
        with scaled(adapter.site_modules(), ones):
            gained = split_logits(adapter, batch)
    assert torch.equal(plain, gained)


def test_deactivation_and_gain_agree_across_sites(family):
    _, adapter, batch, _ = family
    gen = torch.Generator().manual_seed(0)
    B, L, N = batch.size, adapter.n_layers, adapter.n_neurons
    scales = {}
    for l in range(L):
        s = torch.ones(B, N)
        s[:, torch.randperm(N, generator=gen)[:N // 4]] = 0.0          # deactivate a quarter
        s[1, torch.randperm(N, generator=gen)[:N // 8]] = 2.5           # and amplify some in row 1
        scales[l] = s
    results = {}
    for site in DECODER_SITES:
        with with_site(adapter, site):
            outs = {}
            handles = [layer.mlp.register_forward_hook(lambda _m, _a, out, l=l: outs.__setitem__(l, out.detach()))
                       for l, layer in enumerate(adapter.decoder_layers())]
            try:
                with scaled(adapter.site_modules(), scales):
                    logits = split_logits(adapter, batch)
            finally:
                for h in handles:
                    h.remove()
            results[site] = (logits, outs)
    (la, oa), (lb, ob) = results["act_fn"], results["down_proj_input"]
    assert torch.allclose(la, lb, atol=ATOL, rtol=0)
    for l in range(L):
        assert torch.allclose(oa[l], ob[l], atol=ATOL, rtol=0)
    assert not torch.allclose(la, split_logits(adapter, batch), atol=1e-4)   # the intervention did something


def test_label_words_sharing_a_first_token(family):
    """first_token scoring cannot tell 'sad' from 'sadness' and refuses them; full_label scores them to the
    end-of-answer token (Kimi-Audio, which has no continuation path, refuses multi-token labels)."""
    name, adapter, _, _ = family
    with pytest.raises(ValueError, match="'sad' and 'sadness'"):
        LabelScorer(adapter.tokenizer, ["neutral", "sad", "sadness"], mode="first_token")
    scorer = LabelScorer(adapter.tokenizer, ["neutral", "sad", "sadness"])
    assert any("'sad'" in r and "'sadness'" in r for r in scorer.prefix_relations)
    assert scorer.end_token_id == adapter.tokenizer.convert_tokens_to_ids("<|im_end|>")
    with pytest.raises(ValueError, match="sad"):
        if name == "kimi_audio":
            KimiAudioAdapter(adapter.model, adapter.builder, ["sad", "sadness"], PROMPT)
        else:
            type(adapter).load(adapter.source, labels=["sad", "sadness"], prompt=PROMPT, scoring="first_token")


def test_provenance_names_the_real_class(family):
    name, adapter, _, _ = family
    p = adapter.provenance()
    assert p["model_family"] == name
    assert p["model_class"] == {"qwen2_5_omni": "Qwen2_5OmniThinkerForConditionalGeneration",
                                "audio_flamingo3": "AudioFlamingo3ForConditionalGeneration",
                                "qwen2_audio": "Qwen2AudioForConditionalGeneration",
                                "kimi_audio": "FakeKimiAudio"}[name]
    assert int(p["n_neurons"]) == adapter.n_neurons and int(p["n_layers"]) == adapter.n_layers


# --- registry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["audio_flamingo3", "qwen2_audio"])
def test_load_adapter_from_a_config_entry(name, tmp_path):
    build, cls = FAMILIES[name]
    spec = {"adapter": name, "path": str(build(tmp_path)), "prompt": PROMPT, "site": "down_proj_input"}
    adapter = load_adapter(spec, LABELS)
    assert isinstance(adapter, cls) and adapter.site == "down_proj_input" and adapter.labels == LABELS


# --- Kimi-Audio (FAKE model, real adapter) ----------------------------------------------------

@pytest.fixture(scope="module")
def kimi():
    model, prompt_manager = build_kimi_fake()
    return KimiAudioAdapter(model, KimiaPromptBuilder(prompt_manager), LABELS, PROMPT), prompt_manager


def test_kimi_inputs_follow_kimia_infer_layout(kimi):
    adapter, pm = kimi
    batch = adapter.build_batch(CLIPS)
    x = pm.extra_tokens
    ids, text = batch.inputs["input_ids"], batch.inputs["text_input_ids"]
    assert ids.shape == text.shape == batch.audio_mask.shape == batch.attention_mask.shape
    assert (ids[:, -1] == x.kimia_assistant_msg_start).all() and (text[:, -1] == x.kimia_text_blank).all()
    prompt_ids = pm.text_tokenizer.encode(PROMPT, bos=False, eos=False)
    for b, clip in enumerate(CLIPS):
        real = batch.attention_mask[b].bool()
        row, cont = ids[b, real], batch.audio_mask[b, real]
        begin, end = int((row == x.media_begin).nonzero()), int((row == x.media_end).nonzero())
        assert cont.nonzero().flatten().tolist() == list(range(begin + 1, end))
        assert int(cont.sum()) == -(-len(clip) // 1280)                       # 12.5 speech tokens per second
        assert text[b, real][1:1 + len(prompt_ids)].tolist() == prompt_ids    # the prompt in the text stream
        assert (ids[b, ~real] == x.kimia_text_blank).all()                    # left padding with the blank
    assert batch.inputs["whisper_input_feature"].shape[:2] == (len(CLIPS), int(batch.audio_mask.sum(-1).max()))


def test_kimi_hooks_reach_the_decoder_mlps(kimi):
    adapter, _ = kimi
    layers = adapter.model.model.layers
    assert adapter.n_layers == len(layers) and adapter.n_neurons == layers[0].mlp.down_proj.in_features
    for site, attr in (("act_fn", "act_fn"), ("down_proj_input", "down_proj")):
        with with_site(adapter, site):
            assert [m for m, _ in adapter.site_modules()] == [getattr(layer.mlp, attr) for layer in layers]
    assert adapter.self_check() <= 1e-4


def test_kimi_full_forward_mixes_clips_of_a_batch(kimi):
    """Why the adapter merges whisper features itself: the remote forward's one shared buffer."""
    adapter, _ = kimi
    batch = adapter.build_batch(CLIPS[:2])
    feats = batch.inputs["whisper_input_feature"]
    counts = batch.audio_mask.sum(-1)
    with torch.no_grad():
        _, text_logits, *_ = adapter.model(
            input_ids=batch.inputs["input_ids"], text_input_ids=batch.inputs["text_input_ids"],
            whisper_input_feature=[feats[b, :counts[b]][None] for b in range(2)],
            is_continuous_mask=batch.inputs["is_continuous_mask"], attention_mask=batch.attention_mask,
            position_ids=adapter.position_ids(batch), use_cache=False, return_dict=False)
    one = torch.cat([adapter.full_forward_last(c) for c in CLIPS[:2]])
    assert torch.allclose(split_logits(adapter, batch), one, atol=ATOL, rtol=0)
    assert not torch.allclose(text_logits[:, -1], one, atol=1e-3)


def test_kimi_load_refuses_without_remote_code_consent_or_pinned_revision():
    kw = dict(labels=LABELS, prompt=PROMPT, device="cpu")
    with pytest.raises(ValueError, match="trust_remote_code"):
        KimiAudioAdapter.load("moonshotai/Kimi-Audio-7B-Instruct", revision=COMMIT, **kw)
    with pytest.raises(ValueError, match="revision"):
        KimiAudioAdapter.load("moonshotai/Kimi-Audio-7B-Instruct", trust_remote_code=True, **kw)
    with pytest.raises(ValueError, match="revision"):
        load_adapter({"adapter": "kimi_audio", "path": "moonshotai/Kimi-Audio-7B-Instruct", "prompt": PROMPT,
                      "trust_remote_code": True}, LABELS)
    if importlib.util.find_spec("kimia_infer") is None:
        with pytest.raises(ImportError, match="workflow/envs/kimi_audio.yaml"):
            KimiAudioAdapter.load("moonshotai/Kimi-Audio-7B-Instruct", trust_remote_code=True, revision=COMMIT, **kw)


def test_kimi_load_wiring_with_fake_remote_code(monkeypatch, tmp_path):
    """load: AutoModelForCausalLM with trust_remote_code and the revision, kimia_infer's prompt manager
    on the local folder, then the split-vs-full self check (all against FAKES)."""
    import transformers

    model, prompt_manager = build_kimi_fake()
    calls = {}

    def from_pretrained(path, **kwargs):
        calls["model"] = (path, kwargs)
        info = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
        return (model, info) if kwargs.get("output_loading_info") else model

    def prompt_manager_cls(model_path, kimia_token_offset):
        calls["prompt_manager"] = (model_path, kimia_token_offset)
        return prompt_manager

    install_prompt_manager(monkeypatch, prompt_manager_cls)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    adapter = load_adapter({"adapter": "kimi_audio", "path": str(tmp_path), "prompt": PROMPT,
                            "trust_remote_code": True, "revision": COMMIT, "dtype": "float32"}, LABELS)
    assert isinstance(adapter, KimiAudioAdapter) and adapter.revision == COMMIT
    path, kwargs = calls["model"]
    assert path == str(tmp_path) and kwargs["trust_remote_code"] is True and kwargs["revision"] == COMMIT
    assert calls["prompt_manager"] == (str(tmp_path), model.config.kimia_token_offset)
    probs = adapter.score(CLIPS[:2])
    assert probs.shape == (2, len(LABELS)) and torch.allclose(probs.sum(-1), torch.ones(2))
    assert np.isfinite(probs.numpy()).all()


def test_kimi_self_check_tolerance_admits_rounding_and_refuses_errors(monkeypatch):
    """In bf16 the self-check's bar scales with the logits: a one-step rounding difference of logits above
    8 passes (the former fixed 5e-2 refused it), a real error (the text stream dropped from the merge) fails;
    in float32 the bar stays 1e-4."""
    from esn.models.kimi_audio import self_check_tolerance

    model, prompt_manager = build_kimi_fake()
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)           # logits of magnitude ~30, as a real 7B model's
    model = model.to(torch.bfloat16)
    get_prompt = prompt_manager.get_prompt

    def bf16_features(*args, **kwargs):          # kimia_infer's whisper runs in bf16
        content = get_prompt(*args, **kwargs)
        content.continuous_feature = [f.to(torch.bfloat16) for f in content.continuous_feature]
        return content

    monkeypatch.setattr(prompt_manager, "get_prompt", bf16_features)
    adapter = KimiAudioAdapter(model, KimiaPromptBuilder(prompt_manager), LABELS, PROMPT)
    full = adapter.full_forward_last(CLIPS[0])
    assert float(full.float().abs().max()) > 8
    assert self_check_tolerance(torch.float32, full.float()) == 1e-4
    assert adapter.self_check(CLIPS[0]) <= self_check_tolerance(torch.bfloat16, full)

    decode_last = adapter.decode_last
    eps = torch.finfo(torch.bfloat16).eps

    def one_step_off(embedded):  # every logit moved by about one bf16 step: what another kernel may do
        logits = decode_last(embedded)
        signs = torch.sign(torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)))
        return (logits.float() * (1 + eps * signs)).to(logits.dtype)

    monkeypatch.setattr(adapter, "decode_last", one_step_off)
    diff = adapter.self_check(CLIPS[0])
    assert diff > 5e-2                          # the old fixed bar would have refused a correct model
    monkeypatch.setattr(adapter, "decode_last", decode_last)

    embed = adapter.embed

    def without_text_stream(batch):              # a wrong merge: the prompt's text stream left out
        batch.inputs["text_input_ids"] = torch.zeros_like(batch.inputs["text_input_ids"])
        return embed(batch)

    monkeypatch.setattr(adapter, "embed", without_text_stream)
    with pytest.raises(RuntimeError, match="differs from the model's own forward"):
        adapter.self_check(CLIPS[0])
