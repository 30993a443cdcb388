"""Metrics against hand-computed values."""

import pandas as pd
import pytest

from esn.metrics import summarize

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
