"""The population tables: each organism's main-size effects gathered, and claims counted as "k of N"."""

import numpy as np
import pandas as pd
import pytest

from esn import population as P
from esn.metrics import summarize

LABELS = ["a", "b"]
SPEAKERS = [f"s{i}" for i in range(6)]


def _intervention_table(lost: int, random_lost: tuple[int, ...] = (0,)) -> pd.DataFrame:
    """24 clips (6 speakers × 2 per label), all recognised unmodified. Deactivating label x's set makes the
    first `lost` clips of x (one per speaker, in speaker order) answer the other label; random draw d does
    the same with `random_lost[d]` clips (by default one draw that changes nothing); knockout of layer 0
    loses every clip of b, of layer 1 nothing."""
    clips = [(f"{s}_{y}{k}", s, y) for s in SPEAKERS for y in LABELS for k in range(2)]
    rows = []

    def add(mode, target, control, draw, predict, layer=-1):
        for u, s, y in clips:
            p = predict(u, s, y)
            rows.append({"utterance_id": u, "speaker": s, "emotion": y, "mode": mode, "target": target,
                         "control": control, "fraction": 0.0 if mode in ("none", "knockout") else 0.05, "alpha": 0.0,
                         "layer": layer, "variant": "all" if mode == "deactivate" else "", "draw": draw, "predicted": p,
                         **{f"p_{l}": float(p == l) for l in LABELS}})

    add("none", "", "", -1, lambda u, s, y: y)
    for x in LABELS:
        other = LABELS[1 - LABELS.index(x)]
        add("deactivate", x, "selected", -1,
            lambda u, s, y, x=x, other=other: other if y == x and u.endswith("0") and SPEAKERS.index(s) < lost else y)
        for draw, n in enumerate(random_lost):
            add("deactivate", x, "random", draw,
                lambda u, s, y, x=x, other=other, n=n: other if y == x and u.endswith("0") and SPEAKERS.index(s) < n else y)
    add("knockout", "", "", -1, lambda u, s, y: "a", layer=0)
    add("knockout", "", "", -1, lambda u, s, y: y, layer=1)
    return pd.DataFrame(rows)


def _organisms(lost_per_organism: list[int], random_lost: tuple[int, ...] = (0,), draws: list | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The organism and knockout tables of organisms losing `lost_per_organism` clips; `draws` (a list) is
    filled with their random draws (`draws_table`)."""
    tables, knockouts = [], []
    for seed, lost in enumerate(lost_per_organism):
        out = summarize(_intervention_table(lost, random_lost), LABELS, n_boot=400, seed=0)
        key = {"organism": f"organism_s{seed}", "seed": seed, "identify": "syn", "evaluate": "syn"}
        tables.append({**key, "selector": "mad", "delta": out["delta_recall"], "summary": out["summary"]})
        ko = out["conditions"]
        knockouts.append({"organism": key["organism"], "seed": seed, "evaluate": "syn",
                          "knockout": ko[ko["mode"].isin(["none", "knockout"])]})
    if draws is not None:
        draws.append(P.draws_table(tables, fraction=0.05))
    return P.organism_table(tables, fraction=0.05), P.knockout_table(knockouts)


def test_organism_rows_match_each_organisms_own_tables():
    organisms, knockout = _organisms([6, 3, 0])
    assert len(organisms) == 3 * (len(LABELS) + 1)  # per organism: each target and their mean
    mean = organisms[organisms["target"] == "mean"].set_index("seed")
    # lost clips per target: 6, 3, 0 of 12 -> self drop 0.5, 0.25, 0; others untouched; random changes nothing
    assert mean["self"].tolist() == pytest.approx([-0.5, -0.25, 0.0])
    assert mean["others"].tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert mean["specificity"].tolist() == pytest.approx([-0.5, -0.25, 0.0])
    assert mean["random_specificity"].tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert mean["vs_random"].tolist() == pytest.approx([-0.5, -0.25, 0.0])
    per_target = organisms[(organisms["target"] == "a") & (organisms["seed"] == 1)].iloc[0]
    assert per_target["self"] == pytest.approx(-0.25) and per_target["specificity"] == pytest.approx(-0.25)
    assert set(organisms["bootstrap_unit"]) == {"speaker"}
    # knockout: layer 0 answers "a" everywhere (UAR 0.5, change −0.5), layer 1 changes nothing
    k = knockout.set_index(["seed", "layer"])
    assert k.loc[(0, 0), "change"] == pytest.approx(-0.5) and k.loc[(0, 0), "change_hi"] < 0
    assert k.loc[(0, 1), "change"] == pytest.approx(0.0)


def test_claims_are_counted_per_organism_and_the_mean_resamples_organisms():
    organisms, knockout = _organisms([6, 6, 5, 0])
    heldout = pd.DataFrame({"organism": [f"organism_s{i}" for i in range(4)], "corpus": "syn",
                            "heldout_uar": [0.65, 0.75, 0.85, 0.95]})
    summary = P.population_summary(organisms, knockout, heldout, n_boot=500, seed=0)
    row = summary.set_index(["statistic", "selector"])
    spec = row.loc[("specificity", "mad")]
    # the organism that loses nothing is not specific; the others' speaker-level CIs exclude 0
    assert (spec["k"], spec["n"]) == (3, 4)
    assert spec["mean"] == pytest.approx(np.mean([-0.5, -0.5, -5 / 12, 0.0]))
    assert spec["lo"] < spec["mean"] < spec["hi"] and spec["lo"] >= -0.5 and spec["hi"] <= 0.0
    assert (row.loc[("vs_random", "mad"), "k"], row.loc[("others", "mad"), "k"]) == (3, 0)
    ko = summary[summary["statistic"] == "knockout"].set_index("layer")
    assert (ko.loc[0, "k"], ko.loc[1, "k"]) == (4, 0)
    window = summary[summary["statistic"] == "heldout_uar"].iloc[0]
    assert (window["k"], window["n"]) == (2, 4)
    assert "in 3 of 4 organisms" in P.claim_sentence(spec.to_dict() | {"selector": "mad", "corpus": ""})


def test_each_claim_is_read_against_the_rate_at_which_random_draws_pass_it():
    # 4 organisms (lose 6, 6, 5, 0 clips per target), each with 3 random draws: draw 0 loses 6 clips (as
    # specific as the best selected set), draws 1 and 2 nothing.
    found = []
    organisms, knockout = _organisms([6, 6, 5, 0], random_lost=(6, 0, 0), draws=found)
    draws = found[0]
    assert len(draws) == 4 * 3 and draws.groupby("organism")["draw"].apply(list).tolist() == [[0, 1, 2]] * 4
    # hand count: per organism draw 0 passes "specificity hi < 0" and beats the other two draws
    # (leave-one-out: −.5 − mean(0, 0)); draws 1 and 2 pass neither (vs the others: 0 − (−.25) = +.25)
    d0 = draws[draws["draw"] == 0]
    assert (d0["specificity_hi"] < 0).all() and (d0["vs_random_hi"] < 0).all()
    assert d0["vs_random"].tolist() == pytest.approx([-0.5] * 4)
    rest = draws[draws["draw"] > 0]
    assert rest["vs_random"].tolist() == pytest.approx([0.25] * 8) and (rest["specificity_hi"] == 0).all()
    summary = P.population_summary(organisms, knockout, pd.DataFrame(), draws, n_boot=200, seed=0)
    row = summary.set_index("statistic")
    spec = row.loc["specificity"]
    assert (spec["k"], spec["n"], spec["random_passed"], spec["random_draws"]) == (3, 4, 4, 12)
    assert spec["base_rate"] == pytest.approx(1 / 3)
    # each organism's random pass rate (1 + 1) / (3 + 1) = 1/2: P(K ≥ 3 of 4) = 5/16 -> not above random
    assert spec["p_null"] == pytest.approx(5 / 16) and spec["verdict"] == "not above random"
    assert (row.loc["vs_random", "random_passed"], row.loc["self", "random_passed"]) == (4, 4)
    assert row.loc["others", "random_passed"] == 0 and row.loc["others", "k"] == 0
    assert np.isnan(summary[summary["statistic"] == "knockout"]["base_rate"]).all()  # no random counterpart
    assert "random sets pass this test in 33 % of 12 draws" in P.claim_sentence(spec.to_dict() | {"selector": "mad"})

    # the same selected sets against draws that change nothing: rate (0 + 1) / (3 + 1) each; 4 of 4 organisms
    # whose sets change something: P = (1/4)^4 -> holds
    organisms, knockout = _organisms([6, 6, 6, 5], random_lost=(0, 0, 0), draws=found)
    spec = P.population_summary(organisms, knockout, pd.DataFrame(), found[1], n_boot=200).set_index("statistic").loc["specificity"]
    assert (spec["k"], spec["random_passed"], spec["base_rate"]) == (4, 0, 0.0)
    assert spec["p_null"] == pytest.approx(0.25 ** 4) and spec["verdict"] == "holds"
    # one draw per organism: nothing to set a draw against, so vs_random has no base rate (not a rate of 0)
    organisms, knockout = _organisms([6, 6], draws=found)
    one = P.population_summary(organisms, knockout, pd.DataFrame(), found[2], n_boot=100).set_index("statistic")
    assert np.isnan(one.loc["vs_random", "base_rate"]) and one.loc["specificity", "random_draws"] == 2


def test_one_organism_has_no_population_interval():
    organisms, knockout = _organisms([6])
    summary = P.population_summary(organisms, P.knockout_table([]), pd.DataFrame())  # knockout switched off
    spec = summary[summary["statistic"] == "specificity"].iloc[0]
    assert spec["n"] == 1 and np.isnan(spec["lo"]) and np.isnan(spec["hi"])


def test_population_figure_shows_every_organism(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from esn import figures as F

    organisms, knockout = _organisms([6, 6, 3, 0])
    heldout = pd.DataFrame({"organism": [f"organism_s{i}" for i in range(4)], "corpus": "syn",
                            "heldout_uar": [0.65, 0.75, 0.85, 0.95]})
    summary = P.population_summary(organisms, knockout, heldout, n_boot=200, seed=0)
    drawn = []
    monkeypatch.setattr(F.population, "save", lambda fig, out: (drawn.append(fig), F.save(fig, out)))
    out = [tmp_path / "population.pdf", tmp_path / "population.png"]
    F.plot_population(organisms, knockout, heldout, summary, out, fraction=0.05, selectors=["mad"])
    assert all(p.stat().st_size > 0 for p in out)
    spec, pair, ko = drawn[0].axes[:3]
    filled = [l for l in spec.lines if l.get_marker() == "o" and l.get_markerfacecolor() != "white"]
    assert len(filled) == 4                                  # one selected set per organism
    assert len([l for l in ko.lines if l.get_marker() == "o"]) == 4  # one knockout line per organism
    plt.close("all")


@pytest.mark.slow
def test_a_small_population_runs_end_to_end(tmp_path):
    """The reduced config grown into two organisms: both trained with their own seed, both in every table,
    the figure drawn; per-study figures only for the first."""
    import yaml
    from test_science import _fresh_copy
    from test_workflow import snakemake

    work = _fresh_copy(tmp_path / "repo")
    cfg = yaml.safe_load((work / "tests" / "configs" / "reduced.yaml").read_text())
    cfg["population"] = {"model": "organism", "seeds": [0, 1]}
    cfg["capture"]["attribution"] = True
    path = work / "population.yaml"
    path.write_text(yaml.safe_dump(cfg))
    snakemake("--cores", "2", "--configfile", str(path), cwd=work, check=True)
    tables = work / "results" / "tables" / "population" / "organism"
    organisms = pd.read_csv(tables / "organisms.csv")
    assert set(organisms["seed"]) == {0, 1} and set(organisms["selector"]) == set(cfg["selection"]["selectors"])
    summary = pd.read_csv(tables / "summary.csv")
    assert (summary["n"] == 2).all() and (summary["k"] <= summary["n"]).all()
    sets = summary[summary["statistic"] == "specificity"]  # every claim about sets has its base rate
    assert sets["base_rate"].between(0, 1).all() and sets["verdict"].isin(["holds", "not above random"]).all()
    assert len(pd.read_csv(tables / "draws.csv")) >= 2 * len(set(cfg["selection"]["selectors"]))
    weights = [(work / f"resources/models/organism_s{s}/model.safetensors").read_bytes() for s in (0, 1)]
    assert weights[0] != weights[1]  # another seed, another organism
    assert (work / "results/figures/population/organism.png").stat().st_size > 10_000
    assert (work / "results/figures/organism_s0").is_dir() and not (work / "results/figures/organism_s1").exists()


def test_the_population_script_writes_base_rates_beside_k_of_n(tmp_path):
    """workflow/scripts/population.py on small fixture tables (3 organisms, 3 random draws each, written
    through the table contract): summary.csv carries each claim's base rate and verdict, draws.csv the draws."""
    import json
    import runpy
    import types
    from pathlib import Path

    from esn.tables import write_table

    deltas, summaries, knockouts, metrics, keys, ko_keys = [], [], [], [], [], []
    for seed, lost in enumerate([6, 6, 5]):
        out = summarize(_intervention_table(lost, random_lost=(6, 0, 0)), LABELS, n_boot=200, seed=0)
        name = f"organism_s{seed}"
        for kind, frame, paths in (("delta_recall", out["delta_recall"], deltas), ("summary", out["summary"], summaries)):
            paths.append(tmp_path / f"{name}.{kind}.csv")
            write_table(frame, paths[-1], kind)
        c = out["conditions"]
        knockouts.append(tmp_path / f"{name}.knockout.csv")
        write_table(c[c["mode"].isin(["none", "knockout"])], knockouts[-1], "knockout")
        metrics.append(tmp_path / f"{name}.metrics.json")
        metrics[-1].write_text(json.dumps({"corpora": {"syn": {"heldout_uar": 0.8, "heldout_accuracy": 0.8}}}))
        keys.append({"organism": name, "seed": seed, "identify": "syn", "evaluate": "syn", "selector": "mad"})
        ko_keys.append({"organism": name, "seed": seed, "evaluate": "syn"})
    output = {k: str(tmp_path / f"{k}.csv") for k in ("organisms", "draws", "knockout", "heldout", "summary")}
    snakemake = types.SimpleNamespace(
        input=types.SimpleNamespace(deltas=deltas, summaries=summaries, knockouts=knockouts, metrics=metrics),
        params=types.SimpleNamespace(tables=keys, knockout_keys=ko_keys, organisms=[k["organism"] for k in keys],
                                     fraction=0.05, bootstrap=200, seed=0),
        output=output, log=[str(tmp_path / "population.log")])
    script = Path(__file__).parents[1] / "workflow" / "scripts" / "population.py"
    runpy.run_path(str(script), init_globals={"snakemake": snakemake})
    summary = pd.read_csv(output["summary"]).set_index("statistic")
    spec = summary.loc["specificity"]
    # 3 of 3 organisms specific; 3 of 9 draws (each organism's draw 0) pass: P = (1/2)^3 = 1/8 -> not above random
    assert (spec["k"], spec["n"], spec["random_passed"], spec["random_draws"]) == (3, 3, 3, 9)
    assert spec["base_rate"] == pytest.approx(1 / 3) and spec["p_null"] == pytest.approx(1 / 8)
    assert spec["verdict"] == "not above random"
    assert summary.loc["others", "random_passed"] == 0 and summary.loc["vs_random", "random_draws"] == 9
    assert pd.isna(summary.loc["knockout", "base_rate"]).all()
    draws = pd.read_csv(output["draws"])
    assert len(draws) == 9 and set(draws["draw"]) == {0, 1, 2}
    assert "random sets pass this test in 33 % of 9 draws" in Path(snakemake.log[0]).read_text()

    # the README's claim table is printed from that summary.csv by `python -m esn.population` (not typed by hand)
    import subprocess
    import sys

    table = subprocess.run([sys.executable, "-m", "esn.population", output["summary"]], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    row = next(line for line in table if line.startswith("| syn → syn | mad |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == len(table[0].strip("|").split("|")) == 11
    assert cells[3:7] == ["3 of 3", "3 of 9 (33 %)", "0.12", "not above random"]
    assert cells[7] == f"{int(summary.loc['vs_random', 'k'])} of 3"
    assert any(line.startswith("| held-out UAR lies in the target window") and "| syn | 3 of 3 |" in line for line in table)
