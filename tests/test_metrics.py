"""Metrics against hand-computed values."""

import logging

import numpy as np
import pandas as pd
import pytest

from esn.metrics import bootstrap_weights, summarize

LABELS = ["a", "b"]


def _table():
    # 4 utterances: u1,u2 true a; u3,u4 true b.
    # unmodified predicts a,a,b,b (all right); deactivating a's set predicts b,a,b,b; gain toward a predicts a,a,a,b
    rows = []
    preds = {("none", ""): "aabb", ("deactivate", "a"): "babb", ("gain", "a"): "aaab"}
    for (mode, target), p in preds.items():
        for i, (u, y) in enumerate(zip(["u1", "u2", "u3", "u4"], "aabb")):
            rows.append({"utterance_id": u, "emotion": y, "mode": mode, "target": target,
                         "control": "" if mode == "none" else "selected", "fraction": 0.0 if mode == "none" else 0.1,
                         "alpha": 2.0 if mode == "gain" else 0.0, "layer": -1, "variant": "" if mode == "none" else "all", "predicted": p[i],
                         "p_a": float(p[i] == "a"), "p_b": float(p[i] == "b")})
    return pd.DataFrame(rows)


def test_hand_computed_metrics():
    out = summarize(_table(), LABELS, n_boot=200, seed=0)
    cond = out["conditions"].set_index("mode")
    assert cond.loc["none", "accuracy"] == 1.0
    assert cond.loc["deactivate", "accuracy"] == 0.75          # 3 of 4 right
    assert cond.loc["deactivate", "recall_a"] == 0.5 and cond.loc["deactivate", "recall_b"] == 1.0
    assert cond.loc["deactivate", "uar"] == 0.75
    # macro-F1 under deactivation: a: P=1, R=.5 -> 2/3; b: P=2/3, R=1 -> .8; mean .7333
    assert cond.loc["deactivate", "macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    # gain toward a: of u3,u4 (not called a before), u3 is now called a -> flip rate 1/2; target share 3/4
    assert cond.loc["gain", "flip_rate"] == 0.5 and cond.loc["gain", "target_share"] == 0.75
    delta = out["delta_recall"]
    d = delta[(delta["mode"] == "deactivate")].set_index("class")["delta_recall"]
    assert d["a"] == -0.5 and d["b"] == 0.0 and d["specificity"] == -0.5
    lo, hi = delta[(delta["mode"] == "deactivate") & (delta["class"] == "a")][["lo", "hi"]].iloc[0]
    assert lo <= -0.5 <= hi and lo < hi


def test_incomplete_table_is_refused():
    t = _table()
    with pytest.raises(ValueError, match="not complete"):
        summarize(t.iloc[1:], LABELS, n_boot=10)


def test_mean_over_targets_pairs_selected_with_random():
    t = _table()
    rand = t[t["mode"] == "deactivate"].assign(control="random", predicted=["a", "a", "b", "b"], p_a=[1., 1, 0, 0],
                                               p_b=[0., 0, 1, 1])
    out = summarize(pd.concat([t, rand]), LABELS, n_boot=200, seed=0)["summary"]
    sel = out[(out["mode"] == "deactivate") & (out["control"] == "selected")].set_index("statistic")
    assert sel.loc["self", "estimate"] == -0.5 and sel.loc["others", "estimate"] == 0.0
    assert sel.loc["specificity", "estimate"] == -0.5
    assert sel.loc["specificity_vs_random", "estimate"] == -0.5  # the random set changed nothing
    r = out[(out["mode"] == "deactivate") & (out["control"] == "random")].set_index("statistic")
    assert r.loc["specificity", "estimate"] == 0.0 and "specificity_vs_random" not in r.index


def _with_random_draws(draw_preds: list[str]) -> pd.DataFrame:
    """The deactivation of a's set with one random draw per string of predictions (u1..u4)."""
    t = _table()
    sel = t[t["mode"] == "deactivate"]
    draws = [sel.assign(control="random", draw=d, predicted=list(p), p_a=[float(x == "a") for x in p],
                        p_b=[float(x == "b") for x in p]) for d, p in enumerate(draw_preds)]
    return pd.concat([t.assign(draw=-1), *draws], ignore_index=True)


def test_selected_effect_against_random_draws():
    # Δrecall(a, a): selected −.5 (see test_hand_computed_metrics). Draws: "aabb" 0, "babb" −.5, "abbb" −.5,
    # "aaab" 0 -> mean −.25, sd (ddof 1) sqrt(4 · .0625 / 3) = .288675, min −.5, max 0.
    # The selected effect is negative: draws ≤ −.5 are 2 -> p = (1 + 2) / (4 + 1) = .6;
    # vs_random = −.5 − (−.25) = −.25.
    out = summarize(_with_random_draws(["aabb", "babb", "abbb", "aaab"]), LABELS, n_boot=200, seed=0)
    d = out["delta_recall"]
    row = d[(d["control"] == "selected") & (d["mode"] == "deactivate") & (d["class"] == "a")].iloc[0]
    assert row["random_draws"] == 4 and row["draw"] == -1
    assert row["random_mean"] == -0.25 and row["random_sd"] == pytest.approx((4 * 0.0625 / 3) ** 0.5)
    assert (row["random_min"], row["random_max"]) == (-0.5, 0.0)
    assert row["p_value"] == pytest.approx(3 / 5)
    assert row["vs_random"] == -0.25 and row["vs_random_lo"] <= -0.25 <= row["vs_random_hi"]
    # class b: selected Δrecall 0, so the upper tail; per draw aabb 0, babb 0, abbb 0, aaab −.5 (u3 called a)
    # -> draws ≥ 0: 3 -> p = 4/5, mean −.125
    b = d[(d["control"] == "selected") & (d["mode"] == "deactivate") & (d["class"] == "b")].iloc[0]
    assert b["p_value"] == pytest.approx(4 / 5) and b["random_mean"] == pytest.approx(-0.125)
    random_rows = d[d["control"] == "random"]
    assert sorted(random_rows["draw"].unique()) == [0, 1, 2, 3] and random_rows["p_value"].isna().all()
    # summary: self = Δrecall(a, a) (one target); specificity = self − Δrecall(a, b)
    # draws' specificity: 0, −.5, −.5, .5 -> mean −.125; selected −.5: draws ≤ −.5: 2 -> p = 3/5
    s = out["summary"]
    spec = s[(s["control"] == "selected") & (s["mode"] == "deactivate") & (s["statistic"] == "specificity")].iloc[0]
    assert spec["random_mean"] == pytest.approx(-0.125) and spec["p_value"] == pytest.approx(3 / 5)
    vs = s[(s["control"] == "selected") & (s["statistic"] == "specificity_vs_random")].iloc[0]
    assert vs["estimate"] == pytest.approx(-0.375) == spec["vs_random"]
    assert len(s[(s["control"] == "random") & (s["statistic"] == "self")]) == 4  # one row per draw
    # a single draw at least as extreme as the selected effect in every draw: the p-value's floor 1/(R+1)
    floor = summarize(_with_random_draws(["aabb", "aabb"]), LABELS, n_boot=50, seed=0)["delta_recall"]
    assert floor[(floor["control"] == "selected") & (floor["class"] == "a")
                 & (floor["mode"] == "deactivate")]["p_value"].iloc[0] == pytest.approx(1 / 3)


def test_speaker_bootstrap_weights():
    speakers = np.array([0, 0, 1, 2, 2, 2, 3, 1])
    w = bootstrap_weights(len(speakers), 300, seed=1, clusters=speakers)
    assert (w[0] == 1).all()
    for g in range(4):
        member = w[:, speakers == g]
        assert (member == member[:, :1]).all()  # constant within a speaker
    first = [int(np.flatnonzero(speakers == g)[0]) for g in range(4)]
    assert (w[1:, first].sum(1) == 4).all()  # speaker multiplicities sum to the number of speakers
    assert len({tuple(r) for r in w[1:]}) > 10  # and they do vary
    plain = bootstrap_weights(len(speakers), 300, seed=1)
    assert (plain[1:].sum(1) == len(speakers)).all() and not (plain[1:, 0] == plain[1:, 1]).all()


def test_speaker_bootstrap_is_wider_with_few_speakers_and_recorded(caplog):
    # 40 clips of 4 speakers; whether the model is right depends on the speaker only: resampling
    # utterances pretends 40 independent trials, resampling speakers shows there are 4
    rows = []
    for u in range(40):
        spk, y = u % 4, "ab"[u % 2]
        right = spk < 2
        rows.append({"utterance_id": f"u{u:02d}", "emotion": y, "speaker": f"s{spk}", "mode": "none", "target": "",
                     "control": "", "fraction": 0.0, "alpha": 0.0, "layer": -1, "variant": "", "draw": -1,
                     "predicted": y if right else "ab"[(u + 1) % 2], "p_a": 0.5, "p_b": 0.5})
    t = pd.DataFrame(rows)
    with caplog.at_level(logging.WARNING, logger="esn.metrics"):
        by_speaker = summarize(t, LABELS, n_boot=300, seed=0)["conditions"].iloc[0]
    assert "only 4 speakers" in caplog.text
    by_utterance = summarize(t, LABELS, n_boot=300, seed=0, unit="utterance")["conditions"].iloc[0]
    assert by_speaker["bootstrap_unit"] == "speaker" and by_utterance["bootstrap_unit"] == "utterance"
    assert by_speaker["accuracy"] == by_utterance["accuracy"] == 0.5
    width = {k: r["accuracy_hi"] - r["accuracy_lo"] for k, r in (("s", by_speaker), ("u", by_utterance))}
    assert width["s"] > 1.5 * width["u"]


def test_one_speaker_falls_back_to_utterances_with_a_warning(caplog):
    t = _table().assign(speaker="only")
    with caplog.at_level(logging.WARNING, logger="esn.metrics"):
        out = summarize(t, LABELS, n_boot=20, seed=0)
    assert "1 speaker" in caplog.text and "resampling utterances" in caplog.text
    assert set(out["delta_recall"]["bootstrap_unit"]) == set(out["summary"]["bootstrap_unit"]) == {"utterance"}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="esn.metrics"):
        summarize(_table(), LABELS, n_boot=20, seed=0)  # no speaker column at all
    assert "no speaker column" in caplog.text
    with pytest.raises(ValueError, match="bootstrap unit"):
        summarize(t, LABELS, n_boot=20, unit="clip")


def test_injection_table_by_hand():
    """2-Pass rows predicting a,a,b,a (u4 wrong): accuracy 3/4, change −1/4 against the unmodified model."""
    base = _table()
    base = base[base["mode"] == "none"]
    inject = base.assign(mode="inject", target="2pass", control="selected", fraction=0.1, alpha=2.0, variant="all",
                         predicted=list("aaba"))
    out = summarize(pd.concat([base, inject], ignore_index=True), LABELS, n_boot=100, seed=0, unit="utterance")
    inj = out["injection"].set_index("statistic")
    assert set(out["injection"]["strategy"]) == {"2pass"}
    assert inj.loc["accuracy", "estimate"] == 0.75 and inj.loc["accuracy", "change"] == -0.25
    assert inj.loc["recall_b", "change"] == -0.5 and inj.loc["recall_a", "change"] == 0.0
    assert inj.loc["accuracy", "change_lo"] <= -0.25 <= inj.loc["accuracy", "change_hi"]


def test_transfer_table_has_every_study_selector_control_and_class():
    """One row per (identify, evaluate, selector, control, draw, target, class) of main-size deactivation;
    other sizes, other variants and the gain rows are left out."""
    from esn.metrics import transfer_table

    rows = []
    studies = [("A", "A"), ("A", "B"), ("B", "A"), ("B", "B")]
    for i, e in studies:
        for sel in ("mad", "cas"):
            for control, draws in (("selected", [-1]), ("random", [0, 1, 2])):
                for draw in draws:
                    for mode, fraction, variant in (("deactivate", 0.05, "all"), ("deactivate", 0.1, "all"),
                                                    ("deactivate", 0.05, "n10s0"), ("gain", 0.05, "all")):
                        for target in LABELS:
                            for c in [*LABELS, "specificity"]:
                                rows.append({"identify": i, "evaluate": e, "selector": sel, "mode": mode,
                                             "variant": variant, "control": control, "draw": draw, "target": target,
                                             "fraction": fraction, "alpha": 0.0, "class": c, "delta_recall": -0.1,
                                             "lo": -0.2, "hi": 0.0})
    table = transfer_table(pd.DataFrame(rows), 0.05)
    assert len(table) == len(studies) * 2 * (1 + 3) * len(LABELS) * (len(LABELS) + 1)
    counts = table.groupby(["identify", "evaluate", "selector", "control"]).size()
    assert len(counts) == len(studies) * 2 * 2
    assert (counts.xs("random", level="control") == 3 * counts.xs("selected", level="control")).all()
    assert set(table["class"]) == {*LABELS, "specificity"}


def test_intervals_are_expanded_percentiles_for_few_speakers():
    """8 speakers: the bounds are the resamples' 0.574 and 99.426 percentiles (α′/2 = Φ(−√(8/7) · t₇(.975)),
    t₇(.975) = 2.3646 from a table), not 2.5 and 97.5 (which under-cover: benchmarks/bench_coverage.py)."""
    from scipy.special import ndtr

    from esn.metrics import percentile_levels

    tail = 100 * ndtr(-np.sqrt(8 / 7) * 2.364624)
    assert percentile_levels(8) == pytest.approx((tail, 100 - tail), abs=1e-4) and tail == pytest.approx(0.5738, abs=1e-3)
    assert percentile_levels(100_000) == pytest.approx((2.5, 97.5), abs=1e-3)
    # 8 speakers × 4 clips (2 per label); speaker s gets its first s % 3 clips wrong: accuracy varies by speaker
    rows = []
    for s in range(8):
        for i, y in enumerate("aabb"):
            p = ("b" if y == "a" else "a") if i < s % 3 else y
            rows.append({"utterance_id": f"u{s}{i}", "speaker": f"s{s}", "emotion": y, "mode": "none", "target": "",
                         "control": "", "fraction": 0.0, "alpha": 0.0, "layer": -1, "variant": "", "predicted": p,
                         "p_a": float(p == "a"), "p_b": float(p == "b")})
    table = pd.DataFrame(rows)
    cond = summarize(table, LABELS, n_boot=500, seed=3)["conditions"].iloc[0]
    w = bootstrap_weights(len(table), 500, seed=3, clusters=np.repeat(np.arange(8), 4))
    correct = (table["predicted"] == table["emotion"]).to_numpy(float)
    acc = (w @ correct) / w.sum(1)
    assert cond["accuracy"] == acc[0]
    assert (cond["accuracy_lo"], cond["accuracy_hi"]) == pytest.approx(tuple(np.percentile(acc[1:], [tail, 100 - tail])))
    assert cond["accuracy_lo"] < np.percentile(acc[1:], 2.5) and cond["accuracy_hi"] > np.percentile(acc[1:], 97.5)
