"""The GPU path without a GPU: the out-of-memory back-off under a simulated memory budget (`SimulatedMemory`)."""

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
