"""Stores sized for the data: float16 storage (round trip, overflow, selection agreement) and the cap on
identification clips per emotion."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_adapter

from esn import planted, store
from esn import selectors as S
from esn.capture import capture
from esn.prepare import cap_identification, evaluation_clips

GROUPS = ["audio", "prompt", "last"]
#: The agreement a float16 store must reach with float32 for float16 to be the default (every selector × emotion).
JACCARD_BAR = 0.95


def test_saturate_clips_to_float16_range_and_keeps_nan():
    x = torch.tensor([1.0, 7e4, -1e6, float("nan"), 65504.0, -3.5])
    half = store.saturate(x, torch.float16).to(torch.float16)
    assert torch.isnan(half[3]) and torch.isfinite(half[[0, 1, 2, 4, 5]]).all()
    assert half[[1, 2]].tolist() == [65504.0, -65504.0] and half[[0, 4, 5]].tolist() == [1.0, 65504.0, -3.5]
    assert store.n_saturated(half.numpy()) == 3  # the two clipped and the one already at the edge
    assert store.saturate(x, torch.float32) is x and store.n_saturated(x.numpy()) == 0
    with np.errstate(over="ignore"):
        assert np.isinf(x.numpy().astype(np.float16)[1])  # what an unclipped cast would have stored


def test_float16_capture_is_the_float32_capture_rounded(tiny_adapter, tiny_manifest, tmp_path):
    """Reduced in float32, stored in float16: every statistic equals the float32 store's value cast to float16;
    attribution stays float32; the attributes say which dtype."""
    part = tiny_manifest.iloc[:10]
    for dtype in ("float32", "float16"):
        capture(tiny_adapter, part, tmp_path / f"{dtype}.zarr", groups=GROUPS, batch_size=4, dtype=dtype,
                attribution=True)
    full, half = (store.open_store(tmp_path / f"{d}.zarr") for d in ("float32", "float16"))
    assert half.attrs["store_dtype"] == "float16" and half.attrs["saturated"] == "0"
    for name in ("mean_activation", "frac_positive"):
        assert half[name].dtype == np.float16 and full[name].dtype == np.float32
        np.testing.assert_array_equal(half[name].values, full[name].values.astype(np.float16))
    assert half["attribution"].dtype == np.float32
    np.testing.assert_array_equal(half["attribution"].values, full["attribution"].values)


def test_float16_overflow_is_clipped_counted_and_selectable(tiny_manifest, tmp_path):
    """A layer whose means exceed float16's range (±65 504): clipped, never inf, counted in the attributes,
    and the selectors' scores stay free of NaN (inf − inf would poison MAD and CAS)."""
    adapter = make_tiny_adapter(seed=3)
    with torch.no_grad():
        adapter.decoder_layers()[0].mlp.gate_proj.weight.mul_(1e7)
    part = tiny_manifest.iloc[:12]
    for dtype in ("float32", "float16"):
        capture(adapter, part, tmp_path / f"{dtype}.zarr", groups=GROUPS, batch_size=4, dtype=dtype, attribution=False)
    full, half = (store.open_store(tmp_path / f"{d}.zarr") for d in ("float32", "float16"))
    beyond = int((np.abs(full["mean_activation"].values) > 65504).sum())
    assert beyond > 0, "the planted overflow did not happen: the test would prove nothing"
    values = half["mean_activation"].values
    assert np.isfinite(values).all() and values.max() == 65504
    assert int(half.attrs["saturated"]) == beyond
    for selector in ("mad", "cas", "lap"):
        score = S.select(tmp_path / "float16.zarr", selector, split=None, random_draws=0)["score"].values
        assert not np.isnan(score).any()


def _recovered(T: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The count of positive positions back from a stored float16 fraction, as the selectors' statistics read it."""
    frac = (k.astype(np.float32) / T.astype(np.float32)).astype(np.float16)  # capture: float32 mean, then the cast
    return np.rint(frac.astype(np.float64) * T)


def test_float16_fractions_give_back_exact_counts_below_2048_positions():
    """So LAP and LAPE pool exact counts from a float16 store (audio of up to 80 s at 25 tokens per second)."""
    T = np.repeat(np.arange(1, 2048), np.arange(2, 2049))         # every group size T < 2048 ...
    k = np.concatenate([np.arange(t + 1) for t in range(1, 2048)])  # ... with every count 0..T
    np.testing.assert_array_equal(_recovered(T, k), k)
    big = np.full(5001, 5000)  # far beyond the bound the claim is not true (so the check above can fail)
    assert (_recovered(big, np.arange(5001)) != np.arange(5001)).any()


@pytest.fixture(scope="module")
def planted_pair(tmp_path_factory):
    """The same simulated statistics (planted emotion-sensitive neurons) stored in float32 and in float16."""
    root = tmp_path_factory.mktemp("planted")
    paths = {}
    for dtype in ("float32", "float16"):
        paths[dtype] = root / f"{dtype}.zarr"
        neurons = planted.write_store(paths[dtype], 480, 3, 640, dtype=dtype, planted_fraction=0.02, effect=0.6,
                                      block_size=128, seed=5)
    return paths, neurons


def test_selections_from_float16_and_float32_stores_agree(planted_pair):
    paths, neurons = planted_pair
    sels = {d: {s: S.select(p, s, random_draws=0) for s in S.SELECTORS} for d, p in paths.items()}
    table = S.agreement(sels["float32"], sels["float16"], [0.01, 0.02, 0.05])
    assert len(table) == len(S.SELECTORS) * 4 * 3
    assert table["jaccard"].min() >= JACCARD_BAR, table.sort_values("jaccard").head()
    for name in ("lap", "lape"):  # frequencies pool exact counts: the same scores from either store
        np.testing.assert_array_equal(sels["float16"][name]["score"].values, sels["float32"][name]["score"].values)
    # the store is not noise: the planted neurons are what MAD finds (so agreement is about real sets)
    mask = S.selected_mask(sels["float16"]["mad"], 0.02).values
    recovered = (mask & neurons.planted).sum((1, 2)) / neurons.planted.sum((1, 2))
    assert recovered.min() > 0.8, recovered


def test_float16_store_is_half_the_float32_store(planted_pair):
    paths, _ = planted_pair
    size = {d: sum(f.stat().st_size for v in ("mean_activation", "frac_positive") for f in (p / v).rglob("*")
                   if f.is_file()) for d, p in paths.items()}
    assert 0.4 < size["float16"] / size["float32"] < 0.6, size


def _manifest(counts: dict[str, int], evaluation: int = 3) -> pd.DataFrame:
    rows = [{"utterance_id": f"{e}{i:03d}", "emotion": e, "split": "identification"}
            for e, n in counts.items() for i in range(n)]
    rows += [{"utterance_id": f"ev_{e}{i}", "emotion": e, "split": "evaluation"}
             for e in counts for i in range(evaluation)]
    return pd.DataFrame(rows)


def test_cap_is_exact_per_emotion_deterministic_and_leaves_evaluation_alone():
    m = _manifest({"neutral": 40, "happy": 12, "sad": 5, "angry": 25})
    capped, record = cap_identification(m, 10, seed=7)
    ident = capped[capped["split"] == "identification"]
    assert ident["emotion"].value_counts().to_dict() == {"neutral": 10, "happy": 10, "sad": 5, "angry": 10}
    assert (capped["split"] == "evaluation").sum() == (m["split"] == "evaluation").sum()
    assert json.loads(record["identification_per_emotion"]) == {"angry": 10, "happy": 10, "neutral": 10, "sad": 5}
    assert record["max_per_emotion"] == "10"
    again, _ = cap_identification(m.sample(frac=1, random_state=3), 10, seed=7)  # row order does not matter
    assert set(again["utterance_id"]) == set(capped["utterance_id"])
    other, _ = cap_identification(m, 10, seed=8)
    assert set(other["utterance_id"]) != set(capped["utterance_id"])
    assert list(capped.index) == sorted(capped.index)  # the manifest's order
    whole, none = cap_identification(m, None, seed=7)
    assert whole is m and none["max_per_emotion"] == "None"
    with pytest.raises(ValueError, match="positive"):
        cap_identification(m, 0, seed=7)


def test_evaluation_cap_keeps_only_evaluation_clips_at_most_n_per_emotion():
    """`intervention.max_per_emotion`: what every model job of a corpus evaluates (the same clips for each)."""
    m = _manifest({"neutral": 4, "happy": 4, "sad": 4, "angry": 4}, evaluation=6)
    clips = evaluation_clips(m, 4, seed=0)
    assert (clips["split"] == "evaluation").all()
    assert clips["emotion"].value_counts().to_dict() == {"neutral": 4, "happy": 4, "sad": 4, "angry": 4}
    assert set(evaluation_clips(m.sample(frac=1, random_state=1), 4, seed=0)["utterance_id"]) == set(
        clips["utterance_id"])
    assert set(evaluation_clips(m, 4, seed=1)["utterance_id"]) != set(clips["utterance_id"])
    whole = evaluation_clips(m, None, seed=0)
    assert len(whole) == 24 and (whole["split"] == "evaluation").all()
    assert len(evaluation_clips(m, 10, seed=0)) == 24  # fewer clips than the cap: all of them


def test_store_attributes_record_dtype_and_cap(tiny_adapter, tiny_manifest, tmp_path):
    capped, record = cap_identification(tiny_manifest, 2, seed=0)
    capture(tiny_adapter, capped, tmp_path / "s.zarr", groups=["audio"], batch_size=8, dtype="float16",
            attribution=False, attrs=record)
    ds = store.open_store(tmp_path / "s.zarr")
    assert ds.attrs["store_dtype"] == "float16" and ds.attrs["max_per_emotion"] == "2"
    split = ds["split"].values.astype(object)
    stored = pd.Series(ds["emotion"].values.astype(object)[split == "identification"]).value_counts().to_dict()
    assert json.loads(ds.attrs["identification_per_emotion"]) == stored
    assert max(stored.values()) == 2
    assert (split == "evaluation").sum() == (tiny_manifest["split"] == "evaluation").sum()
