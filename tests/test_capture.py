"""Capture statistics and the resumable Zarr store."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from conftest import LABELS, make_tiny_adapter

from esn import store
from esn.audio import load_16k_mono
from esn.capture import batch_statistics, capture, store_order
from esn.hooks import on_activations

GROUPS = ["audio", "prompt", "last"]


def _waves(manifest, n):
    rows = store_order(manifest).iloc[:n]
    return [load_16k_mono(p) for p in rows["path"]]


def test_batched_statistics_equal_one_at_a_time(tiny_adapter, tiny_manifest):
    waves = _waves(tiny_manifest.sort_values("duration_s", ascending=False), 5)  # very different lengths
    truth = torch.tensor([0, 1, 2, 3, 0])
    together = batch_statistics(tiny_adapter, tiny_adapter.build_batch(waves), GROUPS, true_label=truth)
    for i, w in enumerate(waves):
        alone = batch_statistics(tiny_adapter, tiny_adapter.build_batch([w]), GROUPS, true_label=truth[i:i + 1])
        np.testing.assert_allclose(together.mean_activation[i], alone.mean_activation[0], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(together.frac_positive[i], alone.frac_positive[0], atol=1e-5)
        np.testing.assert_array_equal(together.n_positions[i], alone.n_positions[0])
        np.testing.assert_allclose(together.label_prob[i], alone.label_prob[0], atol=1e-5)
        np.testing.assert_allclose(together.attribution[i], alone.attribution[0], atol=1e-5, rtol=1e-4)


def test_statistics_equal_reference_from_full_activations(tiny_adapter, tiny_manifest):
    waves = _waves(tiny_manifest, 4)
    batch = tiny_adapter.build_batch(waves)
    full = {}

    def keep(layer, a):
        full[layer] = a.detach().clone()

    with torch.no_grad(), on_activations(tiny_adapter.site_modules(), keep):
        tiny_adapter.decode_last(tiny_adapter.embed(batch))
    stats = batch_statistics(tiny_adapter, batch, GROUPS)
    real = batch.attention_mask.bool()
    for b in range(len(waves)):
        groups = {"audio": batch.audio_mask[b] & real[b], "prompt": real[b] & ~batch.audio_mask[b],
                  "last": torch.arange(real.shape[1]) == real.shape[1] - 1}
        for g, name in enumerate(GROUPS):
            pos = groups[name]
            assert stats.n_positions[b, g] == int(pos.sum())
            for layer in range(tiny_adapter.n_layers):
                a = full[layer][b, pos]  # [positions, neurons], padding excluded by construction
                np.testing.assert_allclose(stats.mean_activation[b, g, layer], a.mean(0).numpy(), atol=1e-6)
                np.testing.assert_allclose(stats.frac_positive[b, g, layer], (a > 0).float().mean(0).numpy(), atol=1e-6)
    assert (stats.n_positions[:, 0] > 10).all(), "audio group should cover the clip's audio tokens"


def test_attribution_allocates_no_parameter_gradients(tiny_manifest):
    """Attribution's backward differentiates activations only: no weight gets a .grad (at the 7B shape that
    would be a second copy of the decoder), and the parameters stay trainable afterwards."""
    adapter = make_tiny_adapter()
    batch_statistics(adapter, adapter.build_batch(_waves(tiny_manifest, 2)), GROUPS, true_label=torch.tensor([0, 1]))
    params = list(adapter.model.parameters())
    assert all(p.grad is None for p in params)
    assert all(p.requires_grad for p in params)


def test_store_opens_with_xarray_with_documented_layout(tiny_adapter, tiny_manifest, tmp_path):
    out = tmp_path / "a.zarr"
    capture(tiny_adapter, tiny_manifest, out, groups=GROUPS, batch_size=5, block_size=8, attribution=True,
            attrs={"config_hash": "abc"})
    ds = xr.open_zarr(out, consolidated=False)
    assert ds["mean_activation"].dims == ("utterance", "positions", "layer", "neuron")
    assert ds["frac_positive"].dims == ("utterance", "positions", "layer", "neuron")
    assert ds["attribution"].dims == ("utterance", "layer", "neuron")
    assert ds.sizes["utterance"] == len(tiny_manifest) and ds.sizes["neuron"] == tiny_adapter.n_neurons
    assert list(ds["positions"].values) == GROUPS and list(ds["label"].values) == LABELS
    for c in ("emotion", "speaker", "corpus", "split", "duration_s"):
        assert c in ds.coords and ds[c].dims == ("utterance",)
    by_id = tiny_manifest.set_index("utterance_id")
    assert list(ds["emotion"].values) == list(by_id.loc[list(ds["utterance"].values), "emotion"])
    for key in ("model_family", "model_source", "site", "positions", "store_dtype", "config_hash", "labels"):
        assert key in ds.attrs
    assert ds.attrs["site"] == "act_fn" and ds.attrs["positions"] == "audio,prompt,last"
    assert bool(ds["block_done"].all()) and not (tmp_path / "a.zarr.partial").exists()
    assert np.isfinite(ds["mean_activation"].values).all()
    probs = ds["label_prob"].values
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert list(ds["predicted"].values) == [LABELS[i] for i in probs.argmax(-1)]


def test_provenance_mismatch_is_refused(tiny_manifest, tmp_path):
    out = tmp_path / "s.zarr"
    a = make_tiny_adapter(site="act_fn")
    partial = tmp_path / "s.zarr.partial"
    utter = store_order(tiny_manifest)
    layout = store.StoreLayout(len(utter), tuple(GROUPS), a.n_layers, a.n_neurons, tuple(LABELS), block_size=8)
    store.create(partial, utter, layout, {**a.provenance(), "positions": ",".join(GROUPS), "store_dtype": "float32",
                                          "attribution": "False"})
    b = make_tiny_adapter(site="down_proj_input")
    with pytest.raises(store.ProvenanceError, match="site"):
        capture(b, tiny_manifest, out, groups=GROUPS, block_size=8)
    with pytest.raises(store.ProvenanceError, match="positions"):
        capture(a, tiny_manifest, out, groups=["audio"], block_size=8)
    # shards of different models never merge
    capture(a, tiny_manifest.iloc[:6], tmp_path / "x.zarr", groups=GROUPS, block_size=8)
    capture(make_tiny_adapter(seed=0, mlp=64), tiny_manifest.iloc[6:12], tmp_path / "y.zarr", groups=GROUPS, block_size=8)
    with pytest.raises(store.ProvenanceError, match="n_neurons"):
        store.merge([tmp_path / "x.zarr", tmp_path / "y.zarr"], tmp_path / "m.zarr")


def test_shards_merge_into_the_store_of_one_job(tiny_adapter, tiny_manifest, tmp_path):
    whole = tmp_path / "whole.zarr"
    capture(tiny_adapter, tiny_manifest, whole, groups=GROUPS, batch_size=4, block_size=8)
    order = store_order(tiny_manifest)
    shards = []
    for k in range(3):
        shards.append(tmp_path / f"{k}.zarr")
        capture(tiny_adapter, order.iloc[k::3], shards[-1], groups=GROUPS, batch_size=4, block_size=8)
    store.merge(shards, tmp_path / "merged.zarr")
    a = store.open_store(whole).sortby("utterance")
    b = store.open_store(tmp_path / "merged.zarr").sortby("utterance")
    for v in ("mean_activation", "frac_positive", "n_positions", "label_prob"):
        np.testing.assert_allclose(a[v].values, b[v].values, atol=1e-5)
    assert list(a["emotion"].values) == list(b["emotion"].values)



def test_stores_with_the_snakemake_marker_open_without_warnings(tiny_adapter, tiny_manifest, tmp_path):
    """Snakemake writes `.snakemake_timestamp` into directory() outputs; every open must stay silent."""
    import warnings

    from esn.selectors import open_selection, save_selection, select

    shards = [tmp_path / f"{k}.zarr" for k in range(2)]
    for k, path in enumerate(shards):
        capture(tiny_adapter, tiny_manifest.iloc[k::2], path, groups=GROUPS, batch_size=6, block_size=8)
        (path / store.SNAKEMAKE_MARKER).touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.merge(shards, tmp_path / "m.zarr")
        (tmp_path / "m.zarr" / store.SNAKEMAKE_MARKER).touch()
        store.open_store(tmp_path / "m.zarr").load()
        save_selection(select(tmp_path / "m.zarr", "mad"), tmp_path / "sel.zarr")
        (tmp_path / "sel.zarr" / store.SNAKEMAKE_MARKER).touch()
        open_selection(tmp_path / "sel.zarr")
    assert (tmp_path / "m.zarr" / store.SNAKEMAKE_MARKER).exists(), "Snakemake's marker must stay"
    # narrow: any other stray object in a store still warns
    (tmp_path / "m.zarr" / "stray.txt").touch()
    with pytest.warns(UserWarning, match="stray.txt"):
        store.open_store(tmp_path / "m.zarr")

KILL_SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import make_tiny_adapter
from esn.capture import capture
from esn.prepare import load_manifest
import esn.store as store
real_write = store.write_block
def write(g, k, values):
    real_write(g, k, values)
    if int(g["block_done"][:].sum()) == 2:  # two blocks committed: tell the test, then hang until killed
        Path({marker!r}).touch()
        time.sleep(3600)
store.write_block = write
capture(make_tiny_adapter(), load_manifest({corpus!r}), {out!r}, groups={groups!r}, batch_size=3, block_size=4,
        attribution=True)
"""


def test_sigkill_then_resume_gives_identical_store(tiny_corpus, tiny_manifest, tmp_path):
    """The kill lands after exactly 2 of 6 committed blocks, whatever the machine's speed (no sleeps to race)."""
    reference = tmp_path / "ref.zarr"
    capture(make_tiny_adapter(), tiny_manifest, reference, groups=GROUPS, batch_size=3, block_size=4, attribution=True)

    out, marker = tmp_path / "killed.zarr", tmp_path / "two-blocks-committed"
    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), corpus=str(tiny_corpus), out=str(out), groups=GROUPS,
                                marker=str(marker))
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not marker.exists():
        assert proc.poll() is None, "the capture process ended before its kill point"
        assert time.time() < deadline, "the capture process never committed two blocks"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = tmp_path / "killed.zarr.partial"
    assert int(zarr.open_group(partial, mode="r")["block_done"][:].sum()) == 2 and not out.exists()

    summary = capture(make_tiny_adapter(), tiny_manifest, out, groups=GROUPS, batch_size=3, block_size=4,
                      attribution=True)
    assert summary["resumed"] and summary["captured"] == len(tiny_manifest) - 2 * 4
    a, b = store.open_store(reference), store.open_store(out)
    for v in ("mean_activation", "frac_positive", "n_positions", "label_prob", "attribution", "correct"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert list(a["predicted"].values) == list(b["predicted"].values)


def test_cuda_out_of_memory_splits_the_batch_and_records_what_fit(tiny_adapter, tiny_manifest, tmp_path, monkeypatch,
                                                                   caplog):
    """A fake OOM (raised for batches over 2 clips, as CUDA would) costs a split and a retry, not the job."""
    import esn.capture as cap

    reference = capture(tiny_adapter, tiny_manifest, tmp_path / "ref.zarr", groups=GROUPS, batch_size=5, block_size=8)
    real = cap.batch_statistics

    def tight_memory(adapter, batch, *a, **k):
        if batch.size > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(adapter, batch, *a, **k)

    monkeypatch.setattr(cap, "batch_statistics", tight_memory)
    summary = capture(tiny_adapter, tiny_manifest, tmp_path / "oom.zarr", groups=GROUPS, batch_size=5, block_size=8)
    assert summary["batch_size_that_fit"] == 2 and reference["batch_size_that_fit"] == 5
    assert "out of memory" in caplog.text
    a, b = store.open_store(tmp_path / "ref.zarr"), store.open_store(tmp_path / "oom.zarr")
    assert b.attrs["batch_size_that_fit"] == "2"
    np.testing.assert_allclose(a["mean_activation"].values, b["mean_activation"].values, atol=1e-5)
