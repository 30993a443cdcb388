"""The GPU path without a GPU (`tests/simulated_gpu.py`): the out-of-memory back-off under a simulated memory
budget, device placement on a simulated device, the NaN-safe reduction, host preparation overlapped with the
model, and batches sized by tokens."""

import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_adapter
from simulated_gpu import SimulatedMemory

from esn import store
from esn.audio import load_16k_mono
from esn.batching import Fit, in_pieces
from esn.capture import _concat, batch_statistics, capture, store_order
from esn.interventions import evaluate, knockout_conditions, set_conditions

GROUPS = ["audio", "prompt", "last"]
#: simulated bytes a decoder layer needs per (row, position) beyond what is already alive: small beside what the
#: layers before it keep for the backward pass, as with attribution at 7B (what fills memory is the saved graph)
COST = 256


@pytest.fixture(scope="module")
def deep_adapter():
    """Four layers: an attempt that overflows does so part-way, holding the graph of the layers before."""
    return make_tiny_adapter(layers=4)


def _longest(manifest, n):
    rows = store_order(manifest).iloc[-n:]
    return [load_16k_mono(p) for p in rows["path"]], torch.arange(n) % 4


def _peak(adapter, fn) -> float:
    sim = SimulatedMemory(adapter.decoder_layers(), math.inf, COST)
    with sim:
        fn()
    return sim.peak


def _attribution(adapter, waves, truth):
    return lambda part: batch_statistics(adapter, adapter.build_batch([waves[i] for i in part]), GROUPS,
                                         true_label=truth[list(part)])


def _retry_inside_except(fn, items):
    """The back-off as it was first written: the retry runs inside the handler, the failed call's frames alive."""
    try:
        return [fn(items)]
    except torch.cuda.OutOfMemoryError:
        if len(items) == 1:
            raise
        half = len(items) // 2
        return _retry_inside_except(fn, items[:half]) + _retry_inside_except(fn, items[half:])


def test_retry_after_the_handler_fits_where_a_retry_inside_it_cascades(deep_adapter, tiny_manifest, one_thread):
    """The simulated budget counts what a pending exception keeps alive (the half-built autograd graph and
    statistics of the failed attempt): retrying inside the handler cascades to a crash, the back-off fits."""
    waves, truth = _longest(tiny_manifest, 8)
    run = _attribution(deep_adapter, waves, truth)
    budget = 1.02 * max(_peak(deep_adapter, lambda: run(range(4))), _peak(deep_adapter, lambda: run(range(4, 8))))
    assert _peak(deep_adapter, lambda: run(range(8))) > budget  # 8 clips overflow, 4 fit

    sim = SimulatedMemory(deep_adapter.decoder_layers(), budget, COST)
    with sim, pytest.raises(torch.cuda.OutOfMemoryError):
        _retry_inside_except(run, range(8))
    assert {8, 4, 2, 1} <= {r for r, _ in sim.attempts()}  # halved down to one clip, then crashed

    sim = SimulatedMemory(deep_adapter.decoder_layers(), budget, COST)
    fit = Fit(8, "clips")
    with sim:
        parts = in_pieces(run, range(8), fit)
    assert sim.attempts() == [(8, False), (4, True), (4, True)] and fit.size == 4 and fit.tried == [8, 4, 4]
    reference = run(range(8))
    np.testing.assert_allclose(_concat(parts).attribution, reference.attribution, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(_concat(parts).mean_activation, reference.mean_activation, atol=1e-5)


def test_capture_under_a_memory_budget_equals_an_unconstrained_capture(deep_adapter, tiny_manifest, tmp_path,
                                                                       one_thread):
    """Capture with attribution over 8-clip batches on a budget that holds 4 of the longest clips: the batch that
    overflows is retried at 4 clips, 4 is kept for the rest of the job (no further failed attempt), and the
    store equals that of a run without a budget."""
    waves, truth = _longest(tiny_manifest, 8)
    budget = 1.02 * _peak(deep_adapter, lambda: _attribution(deep_adapter, waves, truth)(range(4, 8)))
    reference = capture(deep_adapter, tiny_manifest, tmp_path / "ref.zarr", groups=GROUPS, batch_size=8,
                        block_size=8, attribution=True)
    sim = SimulatedMemory(deep_adapter.decoder_layers(), budget, COST)
    with sim:
        summary = capture(deep_adapter, tiny_manifest, tmp_path / "tight.zarr", groups=GROUPS, batch_size=8,
                          block_size=8, attribution=True)
    attempts = sim.attempts()
    assert reference["batch_size_that_fit"] == 8 and summary["batch_size_that_fit"] == 4
    assert attempts[0] == (8, False) and attempts[1:] == [(4, True)] * (len(tiny_manifest) // 4)
    a, b = store.open_store(tmp_path / "ref.zarr"), store.open_store(tmp_path / "tight.zarr")
    assert b.attrs["batch_size_that_fit"] == "4"
    for v in ("mean_activation", "frac_positive", "attribution", "label_prob"):
        np.testing.assert_allclose(a[v].values, b[v].values, atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(a["n_positions"].values, b["n_positions"].values)
    assert list(a["predicted"].values) == list(b["predicted"].values)


def _conditions(adapter, n_pairs=4):
    rng = np.random.default_rng(0)
    L, N = adapter.n_layers, adapter.n_neurons
    masks = {(e, "selected", 0.1, -1): rng.random((L, N)) < 0.1 for e in ("happy", "sad", "angry", "neutral")[:n_pairs]}
    return set_conditions(masks, [0.5, 4.0]) + knockout_conditions(L, N)


def test_interventions_under_a_memory_budget_shrink_rows_per_forward(tiny_manifest, one_thread):
    """Forwards of 32 rows (8 conditions × 4 clips) on a budget that holds 8 rows: the rows per decoder forward
    shrink (32 → 16 → 8), not the clips, and stay at 8 for the rest of the job; the table equals a run without a
    budget."""
    adapter = make_tiny_adapter(seed=1)
    conditions = _conditions(adapter)  # 14 conditions
    budget = 1.02 * _peak(adapter, lambda: evaluate(adapter, tiny_manifest, conditions, batch_size=4, max_rows=8))
    reference = evaluate(adapter, tiny_manifest, conditions, batch_size=4, max_rows=32)
    sim = SimulatedMemory(adapter.decoder_layers(), budget, COST)
    with sim:
        table = evaluate(adapter, tiny_manifest, conditions, batch_size=4, max_rows=32)
    rows = [r for r, _ in sim.attempts()]
    assert sim.attempts()[:4] == [(4, True), (32, False), (16, False), (8, True)]
    assert max(rows[4:]) == 8 and all(ok for _, ok in sim.attempts()[4:])
    assert table.attrs["rows_per_forward_that_fit"] == 8 and table.attrs["batch_size_that_fit"] == 4
    assert reference.attrs["rows_per_forward_that_fit"] == 32
    assert (table["predicted"] == reference["predicted"]).all()
    for label in adapter.labels:
        np.testing.assert_allclose(table[f"p_{label}"], reference[f"p_{label}"], atol=1e-5)


# --- the reduction ---------------------------------------------------------------------------------

def test_reduction_excludes_padding_even_when_it_holds_nan(tiny_adapter, tiny_manifest):
    """Padded positions are excluded, not multiplied by 0: a NaN there (some attention kernels return it for fully
    masked rows) leaves every statistic finite and equal to the one with zeros there; bf16 activations reduce to the
    same float32 sums as their float32 copy."""
    from esn.capture import masked_sums

    batch = tiny_adapter.build_batch(_longest(tiny_manifest, 3)[0][::-1] + _longest(tiny_manifest, 24)[0][:1])
    real = batch.attention_mask.bool()
    assert not real.all(), "the batch must have padding"
    masks = batch.position_groups(GROUPS).transpose(0, 1).contiguous()
    a = torch.randn(*real.shape, 40)
    poisoned = a.masked_fill(~real[..., None], float("nan"))
    zeroed = a.masked_fill(~real[..., None], 0.0)
    for x in (poisoned, poisoned.bfloat16()):
        sums, positive = masked_sums(x, real, masks)
        exact = zeroed.to(x.dtype).double()  # the same values, reduced in float64 by hand
        ref_sums = torch.einsum("bgt,btn->bgn", masks.double(), exact)
        ref_positive = torch.einsum("bgt,btn->bgn", masks.double(), (exact > 0).double())
        assert sums.dtype == positive.dtype == torch.float32 and torch.isfinite(sums).all()
        torch.testing.assert_close(sums.double(), ref_sums, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(positive.double(), ref_positive, atol=0, rtol=0)
    # by hand: clip 0, audio group
    pos = masks[0, 0].bool()
    torch.testing.assert_close(masked_sums(poisoned, real, masks)[0][0, 0], a[0, pos].sum(0))
    assert masked_sums(poisoned, real, masks)[1][0, 0].tolist() == (a[0, pos] > 0).sum(0).float().tolist()


# --- device placement on a simulated device (`SimulatedDevice`) ------------------------------------

def _our_syncs(sim, module):
    """Host syncs made by `module`'s own lines (not inside transformers)."""
    return {site: n for site, n in sim.syncs.items() if site.startswith(module) and " via " not in site}


def test_the_simulated_device_finds_planted_device_bugs():
    """The checker can fail: a host tensor mixed into device math, `.numpy()` of a device tensor, a sync."""
    from simulated_gpu import DEVICE, SimulatedDevice, on_device

    layer = torch.nn.Linear(4, 4)
    with SimulatedDevice(layer) as sim:
        y = layer(torch.ones(2, 4).to(layer.weight.device))
        assert on_device(y) and y.device == DEVICE
        host = torch.ones(2, 4)
        y + host                  # a device mismatch on a GPU
        y.detach().numpy()        # TypeError on a GPU
        float(y.detach().sum())   # the host waits
        y.detach().cpu().numpy()  # fine: a host copy (one sync)
    assert sum(sim.mixed.values()) == 1 and sum(sim.numpy.values()) == 1
    assert sum(sim.syncs.values()) == 2 and sum(sim.copies.values()) == 1  # float() and .cpu(); the input's .to()


@pytest.mark.parametrize("attribution,mode", [(True, "score"), (False, "generate")])
def test_capture_runs_on_a_simulated_device(tiny_manifest, tmp_path, attribution, mode, one_thread):
    """Capture (with attribution; with generation) never mixes devices nor reads a device tensor with `.numpy()`;
    the reduction makes no host sync (none per layer): the batch's statistics reach the host in a fixed number of
    copies, and the store equals the one made without the simulation."""
    from simulated_gpu import SimulatedDevice

    adapter = make_tiny_adapter(layers=3)
    kw = dict(groups=GROUPS, batch_size=6, block_size=12, attribution=attribution, mode=mode, max_new_tokens=4)
    capture(adapter, tiny_manifest, tmp_path / "host.zarr", **kw)
    with SimulatedDevice(adapter.model) as sim:
        capture(adapter, tiny_manifest, tmp_path / "device.zarr", **kw)
    assert not sim.mixed and not sim.numpy, sim.report()
    batches = len(tiny_manifest) // 6
    ours = _our_syncs(sim, "capture.py")
    assert not any("masked_sums" in s or "reduce" in s for s in sim.syncs), sim.syncs  # nothing per layer
    assert sum(ours.values()) == (4 if attribution else 3) * batches, ours  # statistics, probabilities, counts (, attribution)
    assert sum(sim.syncs.values()) <= (20 + 4 * kw["max_new_tokens"] * (mode == "generate")) * batches, sim.syncs
    a, b = store.open_store(tmp_path / "host.zarr"), store.open_store(tmp_path / "device.zarr")
    for v in ("mean_activation", "frac_positive", "label_prob") + (("attribution",) if attribution else ()):
        np.testing.assert_allclose(a[v].values, b[v].values, atol=1e-6)
    if mode == "generate":
        assert list(a["generated"].values) == list(b["generated"].values)


def test_every_intervention_mode_runs_on_a_simulated_device(tiny_manifest, one_thread):
    """Deactivation, gain, knockout, mix and union (2-pass and oracle are read from gain rows), scored and generated:
    no mismatch, no `.numpy()` of a device tensor; one host copy per decoder forward; each neuron set is copied to
    the device once per job, not once per forward."""
    from simulated_gpu import SimulatedDevice

    from esn.interventions import injection_conditions

    adapter = make_tiny_adapter(seed=2)
    rng = np.random.default_rng(0)
    L, N = adapter.n_layers, adapter.n_neurons
    masks = {e: rng.random((L, N)) < 0.1 for e in ("neutral", "happy", "sad", "angry")}
    conditions = (set_conditions({(e, "selected", 0.05, -1): m for e, m in masks.items()}, [4.0])
                  + injection_conditions(masks, list(masks), [4.0], "selected", 0.05) + knockout_conditions(L, N))
    reference = evaluate(adapter, tiny_manifest, conditions, batch_size=6, max_rows=24, mode="generate",
                         max_new_tokens=3)
    with SimulatedDevice(adapter.model) as sim:
        table = evaluate(adapter, tiny_manifest, conditions, batch_size=6, max_rows=24, mode="generate",
                         max_new_tokens=3)
    assert not sim.mixed and not sim.numpy, sim.report()
    assert set(table["mode"]) == {"none", "deactivate", "gain", "knockout", "inject"}
    np.testing.assert_allclose(table["p_sad"], reference["p_sad"], atol=1e-6)
    assert (table["generated"] == reference["generated"]).all()
    batches, per_batch = len(tiny_manifest) // 6, -(-len(conditions) * 6 // 24)  # forwards of 24 rows per batch
    copies = {s: n for s, n in sim.copies.items() if s.startswith("interventions.py")}
    n_sets = len({id(idx) for c in conditions for idx in [*c.neurons.values(),
                                                          *(i for s in c.by_label.values() for i in s.values())]})
    assert sum(copies.values()) == n_sets, copies                        # once per job
    host_copies = sum(n for s, n in _our_syncs(sim, "interventions.py").items())
    assert host_copies == batches * (1 + per_batch), sim.syncs           # the unmodified pass + one per scoring forward
    scorer = {s: n for s, n in sim.copies.items() if s.startswith("models/base.py") and "(on)" in s}
    assert 0 < sum(scorer.values()) <= 6, sim.copies  # the scorer's index tensors: once per job, not per call
    others = [s for s in sim.copies if s.startswith("models/base.py") and not any(
        f"({f})" in s for f in ("on", "to_device", "<dictcomp>"))]
    assert not others, sim.copies  # no other host-to-device copy in the adapter but the batch's inputs


def test_label_scoring_through_the_kv_cache_on_a_simulated_device(one_thread):
    """Multi-token labels: the prefix pass, its KV cache and the packed continuation, under per-row gains."""
    from models_tiny import waves
    from simulated_gpu import SimulatedDevice
    from transformers import WhisperFeatureExtractor

    from esn.interventions import score_conditions
    from esn.models.qwen_omni import QwenOmniAdapter
    from esn.organism import OrganismConfig, build_model, build_tokenizer

    torch.manual_seed(0)
    cfg = OrganismConfig(hidden=32, heads=2, kv_heads=1, mlp=96, layers=2, audio_d_model=32, audio_heads=2,
                         audio_ffn=64, audio_layers=1)
    tok = build_tokenizer(cfg.prompt, cfg.vocab_size, label_tokens=False)
    adapter = QwenOmniAdapter(build_model(cfg, tok).eval(), tok, WhisperFeatureExtractor(feature_size=128),
                              ["neutral", "sad", "sadness", "happy"], cfg.prompt, system_prompt=None)
    assert not adapter.scorer.one_pass and adapter.scorer.end_token_id is not None
    conditions = _conditions(adapter, n_pairs=2)
    clips = waves([0.4, 1.4, 0.9])
    reference = score_conditions(adapter, clips, conditions, max_rows=6)
    with SimulatedDevice(adapter.model) as sim:
        probs = score_conditions(adapter, clips, conditions, max_rows=6)
        stats = batch_statistics(adapter, adapter.build_batch(clips), GROUPS, true_label=torch.tensor([0, 1, 2]))
    assert not sim.mixed and not sim.numpy, sim.report()
    np.testing.assert_allclose(probs, reference, atol=1e-6)
    assert np.isfinite(stats.attribution).all()


def test_kimi_path_runs_on_a_simulated_device(one_thread):
    """Kimi-Audio through its FAKE (the real class needs CUDA and remote code): capture with attribution and
    conditions as rows, no mismatch and no `.numpy()` of a device tensor."""
    from models_tiny import PROMPT, build_kimi_fake, waves
    from simulated_gpu import SimulatedDevice

    from esn.interventions import score_conditions
    from esn.models.kimi_audio import KimiAudioAdapter, KimiaPromptBuilder

    model, manager = build_kimi_fake()
    adapter = KimiAudioAdapter(model, KimiaPromptBuilder(manager), ["neutral", "happy", "sad", "angry"], PROMPT)
    clips = waves([0.5, 1.0])
    conditions = _conditions(adapter, n_pairs=2)
    reference = score_conditions(adapter, clips, conditions, max_rows=4)
    with SimulatedDevice(model) as sim:
        probs = score_conditions(adapter, clips, conditions, max_rows=4)
        stats = batch_statistics(adapter, adapter.build_batch(clips), GROUPS, true_label=torch.tensor([0, 1]))
    assert not sim.mixed and not sim.numpy, sim.report()
    np.testing.assert_allclose(probs, reference, atol=1e-6)
    assert np.isfinite(stats.mean_activation).all() and np.abs(stats.attribution).sum() > 0


# --- host preparation overlapped with the device ----------------------------------------------------

def test_prefetcher_uses_the_announced_piece_and_prepares_others_on_the_spot():
    import threading

    from esn.batching import Prefetcher

    where = []

    def prepare(piece):
        where.append((piece.start, threading.current_thread().name.startswith("prefetch")))
        if piece.start == 99:
            raise ValueError("bad clip")
        return list(piece)

    p = Prefetcher(prepare)
    p.ahead(range(0, 4))
    assert p.get(range(0, 4)) == [0, 1, 2, 3]       # made in the background
    p.ahead(range(4, 8))
    assert p.get(range(4, 6)) == [4, 5]             # the size changed (a back-off): made here, now
    p.ahead(range(99, 100))
    with pytest.raises(ValueError, match="bad clip"):
        p.get(range(99, 100))                        # the worker's error reaches the caller
    p.close()
    assert (0, True) in where and (4, False) in where and (99, True) in where
    assert 0 <= p.hidden_share <= 1 and p.prepare_s > 0


def test_capture_and_interventions_with_overlap_equal_the_serial_run(tiny_adapter, tiny_manifest, tmp_path, one_thread):
    """Preparing the next batch in the background changes no number; it reports how much of it was hidden."""
    kw = dict(groups=GROUPS, batch_size=5, block_size=12, attribution=True)
    serial = capture(tiny_adapter, tiny_manifest, tmp_path / "serial.zarr", overlap=False, **kw)
    overlapped = capture(tiny_adapter, tiny_manifest, tmp_path / "overlap.zarr", overlap=True, **kw)
    assert "host_preparation_hidden" not in serial and 0 <= overlapped["host_preparation_hidden"] <= 1
    a, b = store.open_store(tmp_path / "serial.zarr"), store.open_store(tmp_path / "overlap.zarr")
    for v in ("mean_activation", "frac_positive", "attribution", "label_prob", "n_positions"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    conditions = _conditions(tiny_adapter, n_pairs=2)
    t1 = evaluate(tiny_adapter, tiny_manifest, conditions, batch_size=5, max_rows=20, overlap=False)
    t2 = evaluate(tiny_adapter, tiny_manifest, conditions, batch_size=5, max_rows=20, overlap=True)
    assert t1.equals(t2)


# --- batches sized by tokens -------------------------------------------------------------------------

def test_pieces_by_tokens_fill_the_budget_in_order_and_shrink_on_overflow():
    tokens = [10, 10, 12, 20, 20, 30, 30, 30, 90]
    seen = []

    def fn(piece):
        if len(piece) > 1 and len(piece) * max(tokens[i] for i in piece) > 50:  # one clip always fits here
            raise torch.cuda.OutOfMemoryError("simulated")
        seen.append(list(piece))
        return len(piece)

    fit = Fit(80, "tokens per batch")
    in_pieces(fn, range(len(tokens)), fit, tokens=tokens, max_items=4)
    assert [i for p in seen for i in p] == list(range(len(tokens)))        # every item once, in order
    assert all(len(p) == 1 or len(p) * max(tokens[i] for i in p) <= 50 for p in seen)
    assert all(len(p) <= 4 for p in seen) and fit.overflows >= 1 and fit.size <= 50
    assert len(seen[-1]) == 1 and tokens[seen[-1][0]] == 90               # a clip longer than the budget runs alone


def test_token_budget_follows_free_memory_and_the_per_token_model(tiny_adapter):
    from esn.batching import bytes_per_token, token_budget

    mlp = tiny_adapter.decoder_layers()[0].mlp
    shape = (tiny_adapter.n_layers, mlp.gate_proj.in_features, tiny_adapter.n_neurons)
    assert token_budget(tiny_adapter.model, *shape, "attribution")[0] is None  # CPU: nothing to size by
    one, _ = token_budget(tiny_adapter.model, *shape, "attribution", free_bytes=2**30)
    two, _ = token_budget(tiny_adapter.model, *shape, "attribution", free_bytes=2**31)
    plain, _ = token_budget(tiny_adapter.model, *shape, "score", free_bytes=2**30)
    per_token = bytes_per_token("attribution", *shape, dtype_bytes=4)
    assert one * per_token <= 0.6 * 2**30 < (one + 1) * per_token and abs(two - 2 * one) <= 1
    assert plain > one  # attribution keeps every layer's activations: fewer tokens fit
    assert bytes_per_token("attribution", 28, 3584, 18944) > 10 * bytes_per_token("score", 28, 3584, 18944)


def test_capture_with_batches_sized_by_tokens_equals_counted_batches(tiny_adapter, tiny_manifest, tmp_path,
                                                                     monkeypatch, one_thread):
    import esn.capture as cap

    kw = dict(groups=GROUPS, batch_size=8, block_size=12, attribution=True)
    capture(tiny_adapter, tiny_manifest, tmp_path / "count.zarr", **kw)
    sizes, real = [], cap.batch_statistics

    def record(adapter, batch, *a, **k):
        sizes.append(tuple(batch.attention_mask.shape))
        return real(adapter, batch, *a, **k)

    monkeypatch.setattr(cap, "batch_statistics", record)
    budget = 150
    summary = capture(tiny_adapter, tiny_manifest, tmp_path / "tokens.zarr", batch_tokens=budget, **kw)
    assert all(b == 1 or b * t <= budget + b for b, t in sizes), sizes  # the estimate may miss by a token a clip
    assert len({b for b, _ in sizes}) > 1 and max(b for b, _ in sizes) <= 8  # longer clips, fewer per batch
    assert summary["batch_tokens_that_fit"] == budget
    a, b = store.open_store(tmp_path / "count.zarr"), store.open_store(tmp_path / "tokens.zarr")
    assert b.attrs["batch_tokens"] == str(budget) and b.attrs["batch_tokens_source"] == "configured"
    for v in ("mean_activation", "frac_positive", "attribution", "label_prob"):
        np.testing.assert_allclose(a[v].values, b[v].values, atol=1e-5, rtol=1e-4)
    auto = capture(tiny_adapter, tiny_manifest, tmp_path / "auto.zarr", batch_tokens="auto", **kw)
    assert auto["batch_size_that_fit"] == 8  # no device memory to size by on a CPU: counted batches


def test_intervention_forwards_sized_by_tokens_equal_counted_ones(tiny_manifest, one_thread):
    """Rows per decoder forward from a token budget (rows × prompt length): smaller forwards for longer clips, at
    most `max_rows` rows, and the same table."""
    adapter = make_tiny_adapter(seed=1)
    conditions = _conditions(adapter)
    reference = evaluate(adapter, tiny_manifest, conditions, batch_size=4, max_rows=32)
    shapes = []
    adapter.decoder.register_forward_pre_hook(lambda _m, _a, kw: shapes.append(tuple(kw["inputs_embeds"].shape[:2])),
                                              with_kwargs=True)
    table = evaluate(adapter, tiny_manifest, conditions, batch_size=4, max_rows=32, batch_tokens=600)
    conditioned = [s for s in shapes if s[0] != 4]  # not the unmodified pass of each batch's 4 clips
    assert all(r * t <= 600 and r <= 32 for r, t in conditioned) and len({r for r, _ in conditioned}) > 1, shapes
    assert table.attrs["tokens_per_forward_that_fit"] == 600
    for label in adapter.labels:
        np.testing.assert_allclose(table[f"p_{label}"], reference[f"p_{label}"], atol=1e-5)
    assert (table["predicted"] == reference["predicted"]).all()


def test_mixed_precision_sums_fall_back_where_the_build_lacks_them(monkeypatch):
    """A device whose torch build has no bf16-in/float32-out bmm (the CPU's has none) reduces through float32."""
    import esn.capture as cap

    monkeypatch.setattr(cap, "_MIXED_BMM", None)
    m, x = torch.rand(2, 3, 5).bfloat16(), torch.randn(2, 5, 7).bfloat16()
    out = cap._bmm_float32(m, x)
    assert out.dtype == torch.float32 and cap._MIXED_BMM is False
    torch.testing.assert_close(out, torch.bmm(m.float(), x.float()))
