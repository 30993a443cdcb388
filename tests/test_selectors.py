"""Selectors against hand-computed examples, the streaming pass against an all-in-memory computation,
filters, the random control, nested sets, persistence and the descriptive tables."""

from __future__ import annotations

from math import log
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from esn import selectors as S
from esn import store

LABELS = ("neutral", "happy", "sad")
NEG = -np.inf

# Hand example: 2 layers × 3 neurons. Rows: (utterance_id, emotion, split, correct, n_positions in "audio").
# u5 is in the evaluation split and u6's emotion is not one of the model's labels: both are never used
# with the default filter, and their extreme values would show if they were.
ROWS = [("u0", "neutral", "identification", 1, 2),
        ("u1", "neutral", "identification", 1, 6),
        ("u2", "happy", "identification", 1, 4),
        ("u3", "happy", "identification", 0, 4),
        ("u4", "sad", "identification", 1, 5),
        ("u5", "sad", "evaluation", 1, 5),
        ("u6", "fear", "identification", 1, 3)]
FRAC = np.array([  # frac_positive in "audio", [layer][neuron] per utterance
    [[1, 0, .5], [0, 0, 0]],
    [[0, 0, .5], [.5, 0, 0]],
    [[.25, 1, 0], [0, 0, 0]],
    [[.75, 1, 0], [0, 0, 0]],
    [[0, .2, .4], [0, 0, 1]],
    [[1, 1, 1], [1, 1, 1]],
    [[1, 1, 1], [1, 1, 1]]])
MEAN = np.array([  # mean_activation in "audio"
    [[1, 2, 0], [0, -1, 4]],
    [[3, 0, 0], [2, -1, 0]],
    [[0, 4, 1], [1, 0, 0]],
    [[0, 2, 1], [1, 0, 2]],
    [[2, 1, 5], [0, 3, 2]],
    [[100, 100, 100], [100, 100, 100]],
    [[-100, -100, -100], [-100, -100, -100]]])
ATTR = np.array([
    [[1, 0, 0], [0, 0, 0]],
    [[3, 0, 0], [0, 0, 2]],
    [[0, 1, 0], [0, 0, 0]],
    [[0, 3, 0], [0, 0, 0]],
    [[0, 0, 0], [5, 0, 0]],
    [[9, 9, 9], [9, 9, 9]],
    [[9, 9, 9], [9, 9, 9]]])


def build_store(path: Path, utterances: pd.DataFrame, mean: np.ndarray, frac: np.ndarray, n_positions: np.ndarray,
                labels: tuple[str, ...], *, attribution: np.ndarray | None = None, groups: tuple[str, ...] = ("audio",),
                block_size: int = 256, dtype: str = "float32") -> Path:
    """A finished store written block by block like capture does; mean/frac are (n, G, L, N)."""
    n, G, L, N = mean.shape
    layout = store.StoreLayout(n, groups, L, N, labels, dtype, block_size, attribution=attribution is not None)
    partial = path.with_name(path.name + ".partial")
    g = store.create(partial, utterances, layout, {"model_family": "test", "site": "act_fn"})
    for k in range(layout.n_blocks):
        sl = layout.block(k)
        values = {"mean_activation": mean[sl].astype(dtype), "frac_positive": frac[sl].astype(dtype),
                  "n_positions": n_positions[sl].astype("int32"), "correct": utterances["correct"].to_numpy()[sl]}
        if attribution is not None:
            values["attribution"] = attribution[sl].astype("float32")
        store.write_block(g, k, values)
    store.finalize(partial, path)
    return path


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand example with a second position group "last" (1 position; a > 0 only for happy utterances)."""
    df = pd.DataFrame(ROWS, columns=["utterance_id", "emotion", "split", "correct", "n_audio"])
    df = df.assign(speaker="s", corpus="c", duration_s=1.0, correct=df["correct"].astype("int8"))
    happy = (df["emotion"] == "happy").to_numpy(float)[:, None, None]
    frac = np.stack([FRAC, np.broadcast_to(happy, FRAC.shape)], axis=1)
    mean = np.stack([MEAN, np.zeros_like(MEAN)], axis=1)
    n_positions = np.stack([df["n_audio"].to_numpy(), np.ones(len(df), int)], axis=1)
    return build_store(tmp_path_factory.mktemp("hand") / "store.zarr", df, mean, frac, n_positions, LABELS,
                       attribution=ATTR, groups=("audio", "last"), block_size=3)


def scores(path: Path, selector: str, **kw) -> np.ndarray:
    return S.select(path, selector, **kw)["score"].values.astype(np.float64)


# ------------------------------------------------------------------------------------------------ selectors


def test_lap_pools_positions(hand: Path) -> None:
    # neutral: u0 (2 positions) + u1 (6): positives [[2·1+6·0, 0, 2·.5+6·.5], [0+6·.5, 0, 0]] = [[2,0,4],[3,0,0]] / 8
    #          (an unweighted mean of fractions would give [[.5, 0, .5], [.25, 0, 0]] instead)
    # happy:   u2 (4) + u3 (4): [[1+3, 4+4, 0], [0, 0, 0]] / 8;   sad: u4 alone, p = its fractions
    expected = np.array([[[.25, 0, .5], [.375, 0, 0]],
                         [[.5, 1, 0], [0, 0, 0]],
                         [[0, .2, .4], [0, 0, 1]]])
    np.testing.assert_allclose(scores(hand, "lap"), expected, rtol=1e-6)
    # "last": one position per utterance, a > 0 only for happy ones
    np.testing.assert_array_equal(scores(hand, "lap", position="last"),
                                  np.stack([np.zeros((2, 3)), np.ones((2, 3)), np.zeros((2, 3))]))


def test_lape_bar_entropy_and_assignment(hand: Path) -> None:
    # p (from the LAP test) flattened over (e, l, n), sorted: ten 0s, .2, .25, .375, .4, .5, .5, 1, 1 (18 values).
    # quantile .75: position 17·.75 = 12.75 -> .375 + .75·(.4 − .375) = .39375 = bar.
    # candidates (max_e p >= bar): (0,0) max .5; (0,1) max 1; (0,2) max .5; (1,2) max 1.
    #   (1,0) max .375 fails the bar; (1,1) is never active.
    h00 = -(1 / 3 * log(1 / 3) + 2 / 3 * log(2 / 3))  # p (.25, .5, 0) / .75
    h01 = -(5 / 6 * log(5 / 6) + 1 / 6 * log(1 / 6))  # p (0, 1, .2) / 1.2
    h02 = -(5 / 9 * log(5 / 9) + 4 / 9 * log(4 / 9))  # p (.5, 0, .4) / .9
    h12 = 0.0                                         # p (0, 0, 1)
    # LAPE's rule, p_e >= bar: (0,0) happy; (0,1) happy; (0,2) neutral (.5) AND sad (.4); (1,2) sad
    lape = np.array([[[NEG, NEG, -h02], [NEG, NEG, NEG]],
                     [[-h00, -h01, NEG], [NEG, NEG, NEG]],
                     [[NEG, NEG, -h02], [NEG, NEG, -h12]]])
    np.testing.assert_allclose(scores(hand, "lape", quantile=0.75), lape, rtol=1e-6)
    # argmax rule: (0,2) goes to neutral only
    argmax = lape.copy()
    argmax[2, 0, 2] = NEG
    np.testing.assert_allclose(scores(hand, "lape", quantile=0.75, assign="argmax"), argmax, rtol=1e-6)
    # default .95: position 16.15 -> 1 + .15·(1 − 1) = 1, inside the tie at the top value (saturated, as
    # with gated activations). The bar is then the .95 quantile of the 16 values below 1 (ten 0s, .2, .25,
    # .375, .4, .5, .5): position 15·.95 = 14.25 -> .5 + .25·(.5 − .5) = .5. Candidates max_e p ≥ .5:
    # (0,0) happy .5, (0,1) happy 1, (0,2) neutral .5 (sad's .4 misses the bar), (1,2) sad 1 — the same
    # under both rules; a bar of exactly 1 would have kept only (0,1) and (1,2)
    saturated = np.full_like(lape, NEG)
    saturated[1, 0, 0], saturated[1, 0, 1], saturated[0, 0, 2], saturated[2, 1, 2] = -h00, -h01, -h02, -h12
    np.testing.assert_allclose(scores(hand, "lape"), saturated, rtol=1e-6)
    np.testing.assert_allclose(scores(hand, "lape", assign="argmax"), saturated, rtol=1e-6)
    default, at_75 = S.select(hand, "lape"), S.select(hand, "lape", quantile=0.75)
    assert (float(default["lape_bar"]), float(default["lape_bar_saturated"])) == (0.5, 1.0)
    assert float(at_75["lape_bar"]) == pytest.approx(0.39375) and float(at_75["lape_bar_saturated"]) == 0.0
    # ranks: sad's (1,2) (−H = 0) first, then (0,2); the rest can never be selected
    rank = S.select(hand, "lape", quantile=0.75)["rank"].values
    assert rank[2, 1, 2] == 0 and rank[2, 0, 2] == 1
    assert (np.delete(rank[2].ravel(), [2, 5]) == S.INELIGIBLE).all()
    with pytest.raises(ValueError, match="assign"):
        S.select(hand, "lape", assign="max")
    with pytest.raises(TypeError, match="lape.*bar"):
        S.select(hand, "lape", bar=0.5)
    assert S.select(hand, "lape").attrs["selector_options"] == {"quantile": 0.95, "assign": "lape"}


# μ over the identification utterances: neutral = (u0 + u1)/2, happy = (u2 + u3)/2, sad = u4
MU = {"neutral": np.array([[2, 1, 0], [1, -1, 2]]),
      "happy": np.array([[0, 3, 1], [1, 0, 1]]),
      "sad": np.array([[2, 1, 5], [0, 3, 2]])}


def test_mad(hand: Path) -> None:
    # neutral − (happy + sad)/2 = [[2,1,0],[1,-1,2]] − [[1,2,3],[.5,1.5,1.5]]
    # happy − (neutral + sad)/2 = [[0,3,1],[1,0,1]] − [[2,1,2.5],[.5,1,2]]
    # sad − (neutral + happy)/2 = [[2,1,5],[0,3,2]] − [[1,2,.5],[1,-.5,1.5]]
    expected = np.array([[[1, -1, -3], [.5, -2.5, .5]],
                         [[-2, 2, -1.5], [.5, -1, -1]],
                         [[1, -1, 4.5], [-1, 3.5, .5]]])
    sel = S.select(hand, "mad")
    np.testing.assert_allclose(sel["score"].values, expected)
    # ranks: neutral 1 (0,0), then .5 twice: (1,0) and (1,2) tie on the CAS margin too (0 and 0, see
    # test_cas) and are decided by μ_neutral, 1 vs 2: (1,2) first (storage order would put (1,0) first)
    np.testing.assert_array_equal(sel["rank"].values[0], [[0, 3, 5], [2, 4, 1]])
    # decided_by (0 score, 1 margin, 2 μ, 3 tie key; −1 last): (1,2) is told from (1,0) by μ
    np.testing.assert_array_equal(sel["decided_by"].values[0], [[0, 0, -1], [0, 0, 2]])
    np.testing.assert_array_equal(sel["n_utterances"].values, [2, 2, 1])


def test_cas(hand: Path) -> None:
    # neutral − max(happy, sad) = [[2,1,0],[1,-1,2]] − [[2,3,5],[1,3,2]]
    # happy − max(neutral, sad) = [[0,3,1],[1,0,1]] − [[2,1,5],[1,3,2]]
    # sad − max(neutral, happy) = [[2,1,5],[0,3,2]] − [[2,3,1],[1,0,2]]
    expected = np.array([[[0, -2, -5], [0, -4, 0]],
                         [[-2, 2, -4], [0, -3, -1]],
                         [[0, -2, 4], [-1, 3, 0]]])
    np.testing.assert_allclose(scores(hand, "cas"), expected)


def test_attribution(hand: Path, tmp_path: Path) -> None:
    # neutral (u0 + u1)/2, happy (u2 + u3)/2, sad u4
    expected = np.array([[[2, 0, 0], [0, 0, 1]],
                         [[0, 2, 0], [0, 0, 0]],
                         [[0, 0, 0], [5, 0, 0]]])
    np.testing.assert_allclose(scores(hand, "attribution"), expected)
    df = pd.DataFrame({"utterance_id": ["a", "b"], "emotion": ["sad", "happy"], "speaker": "s", "corpus": "c",
                       "split": "identification", "duration_s": 1.0, "correct": np.int8(1)})
    bare = build_store(tmp_path / "bare.zarr", df, np.ones((2, 1, 1, 2)), np.ones((2, 1, 1, 2)),
                       np.ones((2, 1)), LABELS)
    with pytest.raises(ValueError, match="needs the store variable 'attribution'"):
        S.select(bare, "attribution")
    with pytest.warns(UserWarning, match="neutral"):
        sel = S.select(bare, "mad")  # neutral has no data: all −inf; sad and happy compare with each other
    np.testing.assert_array_equal(sel["score"].values, [[[NEG, NEG]], [[0, 0]], [[0, 0]]])


def test_unknown_selector_lists_known(hand: Path) -> None:
    with pytest.raises(ValueError, match="lap, lape, mad, cas, attribution"):
        S.select(hand, "lasso")
    with pytest.raises(ValueError, match="position group"):
        S.select(hand, "lap", position="prompt")


# ------------------------------------------------------------------------------------------------ filters


def test_filters_split_and_correct(hand: Path) -> None:
    # correct-only drops u3: happy μ = u2 = [[0,4,1],[1,0,0]]; mad happy = that − (neutral + sad)/2
    sel = S.select(hand, "mad", correct_only=True)
    np.testing.assert_array_equal(sel["n_utterances"].values, [2, 1, 1])
    np.testing.assert_allclose(sel["score"].values[1], [[-2, 3, -1.5], [.5, -1, -2]])
    # every split: sad = (u4 + u5)/2; fear (u6) is never used
    sel = S.select(hand, "mad", split=None)
    np.testing.assert_array_equal(sel["n_utterances"].values, [2, 2, 2])
    sad = (np.array([[2, 1, 5], [0, 3, 2]]) + 100) / 2
    np.testing.assert_allclose(sel["score"].values[2], sad - (MU["neutral"] + MU["happy"]) / 2)


def random_table(n: int, labels: tuple[str, ...], seed: int) -> pd.DataFrame:
    """Utterances of four labels and one unknown emotion, 80 % identification, random correctness."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"utterance_id": [f"r{seed}-{i:03d}" for i in range(n)],
                         "emotion": rng.choice([*labels, "other"], n, p=[.25, .25, .2, .2, .1]),
                         "speaker": "s", "corpus": "c",
                         "split": rng.choice(["identification", "evaluation"], n, p=[.8, .2]),
                         "duration_s": 1.0, "correct": rng.integers(0, 2, n).astype("int8")})


def test_per_emotion_subsample(tmp_path: Path) -> None:
    labels = ("a", "b", "c", "d")
    df = random_table(60, labels, 1)
    shape = (60, 1, 1, 2)
    path = build_store(tmp_path / "s.zarr", df, np.ones(shape), np.ones(shape), np.ones((60, 1)), labels)
    shards = [store.open_store(path)]
    full = S.identification(shards)
    available = full.n_available
    want = np.array([(df["emotion"] == e)[df["split"] == "identification"].sum() for e in labels])
    np.testing.assert_array_equal(available, want)
    k = int(available.min()) + 1  # at least one emotion has fewer than k
    draws = {s: S.identification(shards, per_emotion=k, seed=s).emotion_index[0] for s in (0, 0, 1)}
    again = S.identification(shards, per_emotion=k, seed=0).emotion_index[0]
    np.testing.assert_array_equal(draws[0], again)
    assert not np.array_equal(draws[0], draws[1])
    chosen = np.bincount(draws[0][draws[0] >= 0], minlength=4)
    np.testing.assert_array_equal(chosen, np.minimum(available, k))
    assert set(np.flatnonzero(draws[0] >= 0)) <= set(np.flatnonzero(full.emotion_index[0] >= 0))
    smaller = S.identification(shards, per_emotion=k - 1, seed=0).emotion_index[0]
    assert set(np.flatnonzero(smaller >= 0)) <= set(np.flatnonzero(draws[0] >= 0))  # nested for a seed
    sel = S.select(path, "mad", per_emotion=k, seed=0)
    np.testing.assert_array_equal(sel["n_utterances"].values, chosen)
    assert sel.attrs["undersized_emotions"] == [e for e, n in zip(labels, available) if n < k]
    assert sel.attrs["per_emotion"] == k and sel.attrs["source_model_family"] == "test"


# ------------------------------------------------------------------------------------------------ streaming


@pytest.fixture(scope="module")
def random_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, dict[str, np.ndarray]]:
    """50 utterances in blocks of 8, 2 groups, 3 layers × 5 neurons, float16 values (fractions k/T as capture
    stores them: counts of positive positions over the group's positions, rounded to float16)."""
    rng = np.random.default_rng(7)
    n, labels = 50, ("a", "b", "c", "d")
    df = random_table(n, labels, 2)
    npos = rng.integers(1, 40, (n, 2))
    count = rng.integers(0, npos[..., None, None] + 1, (n, 2, 3, 5))
    arrays = {"mean": rng.normal(size=(n, 2, 3, 5)).astype(np.float16),
              "frac": (count / npos[..., None, None]).astype(np.float16), "count": count, "npos": npos,
              "attr": rng.normal(size=(n, 3, 5)).astype(np.float32)}
    path = build_store(tmp_path_factory.mktemp("rand") / "s.zarr", df, arrays["mean"], arrays["frac"],
                       arrays["npos"], labels, attribution=arrays["attr"], groups=("audio", "last"),
                       block_size=8, dtype="float16")
    return path, df, arrays


def test_streaming_equals_in_memory(random_store) -> None:
    path, df, arrays = random_store
    labels = ("a", "b", "c", "d")
    ds = store.open_store(path)
    ident = S.identification([ds], position="last", correct_only=True)
    stats = S.accumulate(zarr.open_group(path, mode="r"), ident.emotion_index[0], labels, "last",
                         ["mean", "positive", "attribution"])
    use = ((df["split"] == "identification") & (df["correct"] == 1)).to_numpy()
    mean = arrays["mean"][:, 1].astype(np.float64)
    count = arrays["count"][:, 1].astype(np.float64)
    npos = arrays["npos"][:, 1].astype(np.float64)
    for i, e in enumerate(labels):
        m = use & (df["emotion"] == e).to_numpy()
        assert stats.n_utterances[i] == m.sum() > 0
        np.testing.assert_allclose(stats.mu[i], mean[m].mean(0), rtol=1e-12)
        # the exact pooled frequency Σ k / Σ T, although the store holds k/T in float16
        np.testing.assert_array_equal(stats.p[i], count[m].sum(0) / npos[m].sum())
        np.testing.assert_allclose(stats.attribution[i], arrays["attr"][m].astype(np.float64).mean(0), rtol=1e-12)
    # the selector on the streamed statistics equals the same selector on the in-memory ones
    sel = S.select(path, "cas", position="last", correct_only=True)
    mu = np.stack([mean[use & (df["emotion"] == e).to_numpy()].mean(0) for e in labels])
    cas = np.stack([mu[i] - np.delete(mu, i, 0).max(0) for i in range(4)])
    np.testing.assert_allclose(sel["score"].values, cas.astype(np.float32))


def test_add_spans_tiles() -> None:
    """Rows added in several calls and layer slabs, over more columns than one matmul tile, equal numpy sums."""
    rng = np.random.default_rng(0)
    b, L, N = 12, 2, S._TILE + 37
    emotion, npos = rng.integers(0, 3, b), rng.integers(1, 9, b)
    count = rng.integers(0, npos[:, None, None] + 1, (b, L, N))
    mean, frac = rng.normal(size=(b, L, N)).astype(np.float16), (count / npos[:, None, None]).astype(np.float16)
    stats = S.EmotionStats(LABELS, L, N, ["mean", "positive"])
    for rows in (slice(0, 5), slice(5, b)):
        for layer in (slice(0, 1), slice(1, 2)):
            stats.add(emotion[rows], npos[rows], layer, mean=mean[rows, layer], positive=frac[rows, layer])
    for e in range(3):
        m = emotion == e
        np.testing.assert_allclose(stats.mu[e], mean[m].astype(np.float64).mean(0), rtol=1e-12)
        np.testing.assert_array_equal(stats.p[e], count[m].sum(0) / npos[m].sum())
    with pytest.raises(ValueError, match="fields"):
        stats.add(emotion, npos, mean=mean)


def test_merge_state_dict_and_shards(random_store, tmp_path: Path) -> None:
    path, df, arrays = random_store
    labels = ("a", "b", "c", "d")
    g = zarr.open_group(path, mode="r")
    index = S.identification([store.open_store(path)]).emotion_index[0]
    whole = S.accumulate(g, index, labels, "audio", ["mean", "positive"])
    first, second = (np.where(np.arange(50) < 20, index, -1), np.where(np.arange(50) >= 20, index, -1))
    halves = S.accumulate(g, first, labels, "audio", ["mean", "positive"])
    halves.merge(S.EmotionStats.from_state_dict(S.accumulate(g, second, labels, "audio",
                                                             ["mean", "positive"]).state_dict()))
    merged = halves.state_dict()
    for key, value in whole.state_dict().items():
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(merged[key], value, rtol=1e-12)
        else:
            assert merged[key] == value
    # two shards of the same utterances give the same selection as one store
    shards = []
    for name, part in (("s0", slice(0, 20)), ("s1", slice(20, 50))):
        shards.append(build_store(tmp_path / f"{name}.zarr", df.iloc[part].reset_index(drop=True),
                                  arrays["mean"][part], arrays["frac"][part], arrays["npos"][part], labels,
                                  attribution=arrays["attr"][part], groups=("audio", "last"), block_size=8,
                                  dtype="float16"))
    one, union = S.select(path, "lap", per_emotion=5), S.select(shards, "lap", per_emotion=5)
    np.testing.assert_allclose(union["score"].values, one["score"].values, rtol=1e-6)
    np.testing.assert_array_equal(union["n_utterances"].values, one["n_utterances"].values)


# ------------------------------------------------------------------------------------------------ sets


def test_random_control_and_nesting(random_store) -> None:
    path = random_store[0]
    sel = S.select(path, "mad", seed=3, random_draws=4)
    fractions = [0.0, 0.1, 0.3, 0.5, 1.0]
    previous = previous_random = None
    for f in fractions:
        chosen, control = S.selected_mask(sel, f), S.random_mask(sel, f)
        assert (chosen.sum(("layer", "neuron")) == round(f * 15)).all()
        assert control.sizes["draw"] == 4
        xr.testing.assert_equal(control.sum("neuron"), chosen.sum("neuron").broadcast_like(control.sum("neuron")))
        if previous is not None:
            assert bool((previous <= chosen).all()) and bool((previous_random <= control).all())
        previous, previous_random = chosen, control
    again, other = S.select(path, "mad", seed=3, random_draws=4), S.select(path, "mad", seed=4, random_draws=4)
    np.testing.assert_array_equal(again["random_order"].values, sel["random_order"].values)
    assert not np.array_equal(other["random_order"].values, sel["random_order"].values)
    order = sel["random_order"].values
    assert (np.sort(order, axis=-1) == np.arange(5)).all()  # a permutation per (draw, emotion, layer)
    assert all(not np.array_equal(order[a], order[b]) for a in range(4) for b in range(a))  # independent draws
    # fewer draws are the first draws of more: R is a budget, not a different null
    np.testing.assert_array_equal(S.select(path, "mad", seed=3, random_draws=2)["random_order"].values, order[:2])


def test_round_trip(hand: Path, tmp_path: Path) -> None:
    sel = S.select(hand, "lape", quantile=0.75, per_emotion=1)
    out = tmp_path / "sel.zarr"
    S.save_selection(sel, out)
    S.save_selection(sel, out)  # replaces an existing selection
    xr.testing.assert_identical(S.open_selection(out), sel)
    assert not out.with_name("sel.zarr.partial").exists()


def test_tables(hand: Path) -> None:
    # k(.5) = round(.5 · 6) = 3 per emotion. MAD (see test_mad), top 3 by score:
    #   neutral {(0,0), (1,0), (1,2)}; happy {(0,1), (1,0), (1,2)} (−1 at (1,1) and (1,2): CAS −3 vs −1);
    #   sad {(0,2), (1,1), (0,0)}
    # CAS (see test_cas): neutral {(0,0), (1,0), (1,2)}; happy {(0,1), (1,0), (1,2)}; sad {(0,2), (1,1), (0,0)}
    #   (sad's 0 at (0,0) and (1,2): MAD 1 vs .5)
    sels = {"mad": S.select(hand, "mad"), "cas": S.select(hand, "cas")}
    counts = S.counts_per_layer(sels, 0.5)
    assert list(counts.columns) == ["selector", "emotion", "layer", "count"]
    mad = counts[counts["selector"] == "mad"].set_index(["emotion", "layer"])["count"]
    assert mad.to_dict() == {("neutral", 0): 1, ("neutral", 1): 2, ("happy", 0): 1, ("happy", 1): 2,
                             ("sad", 0): 2, ("sad", 1): 1}
    emo = S.overlap_between_emotions(sels["mad"], 0.5).set_index(["emotion_a", "emotion_b"])["jaccard"]
    assert emo[("neutral", "neutral")] == 1.0
    # neutral and happy share (1,0), (1,2) of 4; happy and sad nothing; sad and neutral (0,0) of 5
    assert emo[("neutral", "happy")] == pytest.approx(2 / 4) and emo[("happy", "sad")] == 0.0
    assert emo[("sad", "neutral")] == pytest.approx(1 / 5)
    between = S.overlap_between_selectors(sels, 0.5).set_index(["emotion", "selector_a", "selector_b"])["jaccard"]
    assert (between == 1.0).all()  # the secondary keys make MAD and CAS agree here
    stab = S.stability({"identification": sels["mad"], "every split": S.select(hand, "mad", split=None),
                        "lap": S.select(hand, "lap")}, 0.5)
    assert list(stab.columns) == ["selector", "variant_a", "variant_b", "emotion", "jaccard"]
    assert set(stab["selector"]) == {"mad"}  # lap has no partner variant
    # every split: sad μ' = (u4 + u5)/2 = [[51, 50.5, 52.5], [50, 51.5, 51]].
    # happy MAD = [[0,3,1],[1,0,1]] − (neutral + sad')/2 = [[−26.5, −22.75, −25.25], [−24.5, −25.25, −25.5]]
    #   -> (0,1), (1,0), then −25.25 at (0,2) and (1,1), also tied on CAS (−51.5 both, sad' the max), decided by
    #   μ_happy 1 vs 0: {(0,1), (1,0), (0,2)} vs {(0,1), (1,0), (1,2)}: 2 of 4.
    # neutral MAD = [[−23.5, −25.75, −26.75], [−24.5, −26.75, −24]] -> {(0,0), (1,2), (1,0)}: unchanged;
    # sad MAD = sad' − (neutral + happy)/2 = [[50, 48.5, 52], [49, 52, 49.5]] -> {(0,2), (1,1), (0,0)}: unchanged
    assert stab.set_index("emotion")["jaccard"].to_dict() == {"neutral": 1.0, "happy": 0.5, "sad": 1.0}


# ------------------------------------------------------------------------------------------------ ties, order


def _one_utterance_per_emotion(path: Path, frac: np.ndarray, mean: np.ndarray, labels: tuple[str, ...]) -> Path:
    """A store of one identification utterance per label; frac/mean are [label, layer, neuron]."""
    df = pd.DataFrame({"utterance_id": [f"u{i}" for i in range(len(labels))], "emotion": list(labels),
                       "speaker": "s", "corpus": "c", "split": "identification", "duration_s": 1.0,
                       "correct": np.int8(1)})
    return build_store(path, df, mean[:, None], frac[:, None], np.full((len(labels), 1), 10), labels)


def test_lap_ties_are_broken_by_margin_then_mean(tmp_path: Path) -> None:
    # 1 layer × 6 neurons; happy fires at every position of n0..n3 and n5 (p = 1: a five-way tie).
    # margin p_happy − max(p_neutral, p_sad): n0 0, n1 .5, n2 .4, n3 .4, n5 .4;  μ_happy: n2 1, n3 2, n5 1.
    # Order: n1 (margin .5), n3 (.4, μ 2), then n2 and n5 tie on every key (seeded tie key), n0 (margin 0),
    # n4 (p .5). Storage order (the old rule) would take n0, n1 for k = 2.
    labels = ("neutral", "happy", "sad")
    frac = np.array([[[1, .5, 0, .6, 0, 0]], [[1, 1, 1, 1, .5, 1]], [[.9, .2, .6, 0, 0, .6]]])
    mean = np.zeros_like(frac)
    mean[1, 0] = [0, 0, 1, 2, 0, 1]
    sel = S.select(_one_utterance_per_emotion(tmp_path / "s.zarr", frac, mean, labels), "lap")
    assert sel.attrs["ranking_keys"] == ["score", "margin", "mu", "tie_key"]
    rank = sel["rank"].sel(emotion="happy").values[0]
    assert list(rank[[1, 3]]) == [0, 1] and sorted(rank[[2, 5]]) == [2, 3] and list(rank[[0, 4]]) == [4, 5]
    assert set(np.flatnonzero(S.selected_mask(sel, 2 / 6).sel(emotion="happy").values[0])) == {1, 3}
    # at k = 2 the cut splits the five-way tie on p (2 inside) but no tie on every key;
    # at k = 3 it also splits n2/n5, tied on every key (1 inside: decided by the seeded tie key)
    ties = pd.concat([S.ties_at_cut(sel, f) for f in (2 / 6, 3 / 6)]).set_index(["emotion", "k"])
    assert ties.loc[("happy", 2), ["tied_score", "tied_score_in_set", "tied_all_keys", "tied_all_keys_in_set"]
                    ].tolist() == [5, 2, 0, 0]
    assert ties.loc[("happy", 3), ["tied_score", "tied_score_in_set", "tied_all_keys", "tied_all_keys_in_set"]
                    ].tolist() == [5, 3, 2, 1]
    # the tie key is the seed's: another seed may decide n2/n5 the other way, never anything else
    for seed in range(1, 6):
        other = S.select(tmp_path / "s.zarr", "lap", seed=seed)["rank"].sel(emotion="happy").values[0]
        np.testing.assert_array_equal(np.delete(other, [2, 5]), np.delete(rank, [2, 5]))


def _quantised_store(path: Path, perm: np.ndarray | None = None, layer_perms: np.ndarray | None = None) -> Path:
    """40 utterances, 3 layers × 12 neurons, heavy ties (p in steps of 1/4, dead neurons 10 and 11 all zero).
    `perm` reorders the neuron axis of every variable and the `neuron` coordinate alike; `layer_perms`
    [L, N] reorders each layer's neurons differently (the data only: one coordinate cannot say so)."""
    rng = np.random.default_rng(11)
    n, L, N, labels = 40, 3, 12, ("a", "b", "c", "d")
    df = pd.DataFrame({"utterance_id": [f"q{i:02d}" for i in range(n)], "emotion": np.array(labels)[np.arange(n) % 4],
                       "speaker": "s", "corpus": "c", "split": "identification", "duration_s": 1.0,
                       "correct": np.int8(1)})
    frac = rng.integers(0, 5, (n, 1, L, N)) / 4
    frac[:, :, :, :3] = 1.0  # always on for every emotion
    mean = rng.normal(size=(n, 1, L, N))
    attr = rng.normal(size=(n, L, N))
    for x in (frac, mean, attr):
        x[..., 10:] = 0.0
    if perm is not None:
        frac, mean, attr = frac[..., perm], mean[..., perm], attr[..., perm]
    if layer_perms is not None:
        frac, mean, attr = (np.stack([x[..., l, layer_perms[l]] for l in range(L)], axis=-2) for x in (frac, mean, attr))
    build_store(path, df, mean, frac, np.full((n, 1), 8), labels, attribution=attr)
    if perm is not None:
        zarr.open_group(path, mode="r+")["neuron"][:] = perm
    return path


def _identity_sets(sel: xr.Dataset, fraction: float) -> dict[str, set[tuple[int, int]]]:
    """Each emotion's set as (layer, neuron coordinate) pairs: comparable across storage orders."""
    mask = S.selected_mask(sel, fraction)
    neurons = sel["neuron"].values
    return {str(e): {(int(l), int(neurons[n])) for l, n in zip(*np.nonzero(mask.sel(emotion=e).values))}
            for e in sel["emotion"].values}


@pytest.mark.parametrize("selector", list(S.SELECTORS))
def test_selection_does_not_depend_on_storage_order(tmp_path: Path, selector: str) -> None:
    rng = np.random.default_rng(5)
    perm = rng.permutation(12)
    base = S.select(_quantised_store(tmp_path / "a.zarr"), selector, random_draws=3)
    moved = S.select(_quantised_store(tmp_path / "b.zarr", perm=perm), selector, random_draws=3)
    np.testing.assert_array_equal(moved["neuron"].values, perm)
    back = np.argsort(perm)  # moved's position of each original neuron
    for v in ("score", "rank", "decided_by", "random_order"):
        np.testing.assert_array_equal(moved[v].values[..., back], base[v].values)
    fractions = [f / 36 for f in range(1, 36)]
    ties = pd.concat([S.ties_at_cut(base, f) for f in fractions])
    assert (ties["tied_score"] > 0).any()  # the store really has ties at cuts (the test can fail)
    for f in fractions:
        assert _identity_sets(moved, f) == _identity_sets(base, f)
    # each layer's neurons reordered differently (identity = storage position there): the sets still
    # move with the neurons wherever the meaningful keys decide the cut
    layer_perms = np.stack([rng.permutation(12) for _ in range(3)])
    shuffled = S.select(_quantised_store(tmp_path / "c.zarr", layer_perms=layer_perms), selector)
    decided = 0
    for f in fractions:
        if (S.ties_at_cut(base, f)["tied_all_keys"] == 0).all():
            decided += 1
            mapped = {e: {(l, int(layer_perms[l][n])) for l, n in s}
                      for e, s in _identity_sets(shuffled, f).items()}
            assert mapped == _identity_sets(base, f)
    assert decided >= 10


def test_random_controls_belong_to_the_full_set(random_store) -> None:
    sel = S.select_variants(random_store[0], "mad", ["all", "n3s0", "n3s1"], seed=2, random_draws=3)
    assert sel["random_order"].dims == ("draw", "emotion", "layer", "neuron") and sel.attrs["random_draws"] == 3
    full = S.select(random_store[0], "mad", seed=2, random_draws=3)
    np.testing.assert_array_equal(sel["random_order"].values, full["random_order"].values)
    assert S.random_mask(sel.sel(variant="all"), 0.2).sizes["draw"] == 3
