"""The verdict rule of esn.claims: k of N read against the rate at which random sets pass the same test."""

import math

import pandas as pd
import pytest

from esn import claims


def test_tail_probability_is_the_binomial_tail_for_equal_rates():
    # P(K ≥ 4 | 5, .28) = 5 · .28⁴ · .72 + .28⁵
    assert claims.tail_probability(4, [0.28] * 5) == pytest.approx(5 * 0.28 ** 4 * 0.72 + 0.28 ** 5)
    assert claims.tail_probability(0, [0.3, 0.9]) == 1.0
    # unequal rates (Poisson-binomial): P(K ≥ 2) for .5, .2 is .5 · .2
    assert claims.tail_probability(2, [0.5, 0.2]) == pytest.approx(0.1)
    assert claims.tail_probability(1, [0.5, 0.2]) == pytest.approx(1 - 0.5 * 0.8)


@pytest.mark.parametrize("k, n, p0, p, holds", [
    (5, 5, 0.02, 0.02 ** 5, True),                                        # every organism, rare by chance
    (3, 5, 0.28, sum(math.comb(5, i) * 0.28 ** i * 0.72 ** (5 - i) for i in (3, 4, 5)), False),  # P = .138
    (1, 5, 0.14, 1 - 0.86 ** 5, False),                                   # "LAPE specific in 1 of 5" at 14 %
    (4, 5, 0.28, 5 * 0.28 ** 4 * 0.72 + 0.28 ** 5, True),                 # P = .024: 4 of 5 is above 28 %
    (4, 5, 0.5, 6 / 32, False),
])
def test_verdict_on_hand_cases(k, n, p0, p, holds):
    assert claims.verdict(k, [p0] * n) == (pytest.approx(p), holds)


def test_one_run_claims_count_the_draws_that_pass_the_same_test():
    """A summary table by hand: the selected set's specificity interval lies below 0; of its 4 random draws,
    one's does too, and none beats the other draws."""
    rows = [{"control": "selected", "draw": -1, "statistic": "specificity", "hi": -0.2, "vs_random_hi": -0.1},
            {"control": "selected", "draw": -1, "statistic": "self", "hi": -0.3, "vs_random_hi": 0.1}]
    for d, hi in enumerate([-0.05, 0.0, 0.1, 0.2]):
        rows += [{"control": "random", "draw": d, "statistic": "specificity", "hi": hi, "vs_random_hi": 0.05},
                 {"control": "random", "draw": d, "statistic": "self", "hi": hi - 0.1, "vs_random_hi": 0.05}]
    summary = pd.DataFrame(rows).assign(mode="deactivate", variant="all", fraction=0.05, alpha=0.0)
    out = claims.run_claims(summary).set_index("claim")
    spec = out.loc["specificity"]
    assert (spec["passes"], spec["random_passed"], spec["random_draws"], spec["base_rate"]) == (True, 1, 4, 0.25)
    assert spec["p_null"] == pytest.approx(2 / 5) and not spec["holds"]       # one run, 4 draws: never holds
    assert out.loc["self", "random_passed"] == 2                               # self hi: −.15, −.1 below 0
    vs = out.loc["vs_random"]
    assert vs["passes"] and vs["random_passed"] == 0 and vs["p_null"] == pytest.approx(1 / 5)
    assert set(out.index) == {"self", "specificity", "vs_random"}              # no "others" row in this table


def test_one_run_claims_from_summarize_count_leave_one_out_draws():
    """Through esn.metrics.summarize: the selected set and random draw 0 each lose one clip of the target per
    speaker; draws 1 and 2 nothing. Draw 0 beats the other two draws (−.5 against 0), so 1 of 3 draws passes
    vs_random, as it passes specificity; nobody's others' drop is below 0."""
    from test_population import LABELS, _intervention_table

    from esn.metrics import summarize

    summary = summarize(_intervention_table(6, random_lost=(6, 0, 0)), LABELS, n_boot=200, seed=0)["summary"]
    r = summary[(summary["control"] == "random") & (summary["statistic"] == "specificity")].set_index("draw")
    assert r["random_draws"].tolist() == [2, 2, 2] and r.loc[0, "vs_random"] == pytest.approx(-0.5)
    out = claims.run_claims(summary).set_index("claim")
    assert out["random_passed"].to_dict() == {"self": 1, "others": 0, "specificity": 1, "vs_random": 1}
    assert out.loc["specificity", "passes"] and out.loc["specificity", "p_null"] == pytest.approx(2 / 4)
    assert not out["holds"].any()
