"""Every figure of esn.figures drawn from small fake tables shaped like the workflow's (PDF + PNG, not blank)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from esn import figures as F

LABELS = ["neutral", "happy", "sad", "angry"]
SELECTORS = ["lap", "mad"]
FRACTIONS = [0.01, 0.05, 0.1]
MAIN = 0.05
ALPHAS = [0.5, 1.0, 2.0, 4.0]
ID_SIZES, SEEDS = [10, 30], [0, 1]
N_LAYERS = 3


def _ci(rng: np.random.Generator, est: float, width: float = 0.04) -> tuple[float, float, float]:
    w = width * (0.5 + rng.random())
    return est, est - w, est + w


def fake_delta(selector: str, seed: int = 0, fractions: list[float] = FRACTIONS, strength: float = 1.0,
               labels: list[str] = LABELS) -> pd.DataFrame:
    """Δrecall rows as esn.metrics.summarize writes them: deactivation at each fraction, gain at the main one."""
    rng = np.random.default_rng(seed + sum(map(ord, selector)))
    power = {"lap": 0.4, "lape": 0.3, "mad": 0.9, "cas": 0.8, "attribution": 0.7}.get(selector, 0.5) * strength
    rows = []
    conditions = [("deactivate", f, 0.0) for f in fractions] + [("gain", MAIN, a) for a in ALPHAS]
    for mode, fraction, alpha in conditions:
        for control in ("selected", "random"):
            for target in labels:
                deltas = {}
                for c in labels:
                    size = min(1.0, fraction / MAIN) ** 0.5
                    if control == "random":
                        est = rng.normal(0, 0.01)
                    elif mode == "deactivate":
                        est = -power * size if c == target else rng.normal(-0.05, 0.03) * size
                    else:
                        est = power * 0.2 * np.log2(1 + alpha) if c == target else -0.05 * np.log2(1 + alpha)
                    deltas[c] = est
                    rows.append({"mode": mode, "control": control, "target": target, "fraction": fraction,
                                 "alpha": alpha, "layer": -1, "class": c, **dict(zip(("delta_recall", "lo", "hi"),
                                                                                    _ci(rng, est)))})
                spec = deltas[target] - np.mean([v for c, v in deltas.items() if c != target])
                rows.append({"mode": mode, "control": control, "target": target, "fraction": fraction,
                             "alpha": alpha, "layer": -1, "class": "specificity",
                             **dict(zip(("delta_recall", "lo", "hi"), _ci(rng, spec, 0.06)))})
    return pd.DataFrame(rows)


def fake_conditions(selector: str, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    power = {"lap": 0.4, "lape": 0.3, "mad": 0.9, "cas": 0.8, "attribution": 0.7}.get(selector, 0.5)
    base = {"mode": "none", "control": np.nan, "target": np.nan, "fraction": 0.0, "alpha": 0.0, "layer": -1}
    rows = [{**base, **dict(zip(("accuracy", "accuracy_lo", "accuracy_hi"), _ci(rng, 0.9))),
             "target_share": np.nan, "target_share_lo": np.nan, "target_share_hi": np.nan}]
    for fraction in FRACTIONS:
        for control in ("selected", "random"):
            for target in LABELS:
                for mode, alphas in (("deactivate", [0.0]), ("gain", ALPHAS if fraction == MAIN else [])):
                    for alpha in alphas:
                        push = power * np.log2(1 + alpha) / 3 if control == "selected" and mode == "gain" else 0.0
                        share = min(0.98, 0.25 + push * 0.75)
                        row = {"mode": mode, "control": control, "target": target, "fraction": fraction,
                               "alpha": alpha, "layer": -1}
                        for metric, value in (("accuracy", 0.9 - share + 0.25), ("target_share", share),
                                              ("flip_rate", share - 0.2)):
                            row.update(zip((metric, f"{metric}_lo", f"{metric}_hi"), _ci(rng, value)))
                        rows.append(row)
    frame = pd.DataFrame(rows)
    for label in LABELS:
        frame[f"recall_{label}"] = rng.uniform(0.6, 1.0, len(frame))
    for metric in ("uar", "macro_f1"):
        frame[metric] = frame["accuracy"]
        frame[f"{metric}_lo"], frame[f"{metric}_hi"] = frame["accuracy_lo"], frame["accuracy_hi"]
    return frame


def fake_knockout() -> pd.DataFrame:
    rows = [{"mode": "none", "layer": -1, "accuracy": 0.9}] + [
        {"mode": "knockout", "layer": l, "accuracy": a} for l, a in enumerate([0.3, 0.85, 0.8])]
    frame = pd.DataFrame(rows)
    frame["accuracy_lo"], frame["accuracy_hi"] = frame["accuracy"] - 0.04, frame["accuracy"] + 0.04
    frame["uar"], frame["uar_lo"], frame["uar_hi"] = frame["accuracy"], frame["accuracy_lo"], frame["accuracy_hi"]
    for i, label in enumerate(LABELS):
        frame[f"recall_{label}"] = np.clip(frame["accuracy"] + 0.05 * (i - 1.5), 0, 1)
    return frame


def fake_neuron_tables() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(1)
    counts = pd.DataFrame([{"selector": s, "emotion": e, "layer": l, "count": int(rng.integers(0, 60))}
                           for s in SELECTORS for e in LABELS for l in range(N_LAYERS)])
    emotions = pd.DataFrame([{"selector": s, "emotion_a": a, "emotion_b": b, "jaccard": rng.uniform(0, 0.4)}
                             for s in SELECTORS for i, a in enumerate(LABELS) for b in LABELS[i + 1:]])
    selectors = pd.DataFrame([{"emotion": e, "selector_a": a, "selector_b": b, "jaccard": rng.uniform(0.1, 0.7)}
                              for e in LABELS for i, a in enumerate(SELECTORS) for b in SELECTORS[i + 1:]])
    variants = ["all"] + [f"n{n}s{s}" for n in ID_SIZES for s in SEEDS]
    stability = pd.DataFrame([{"selector": s, "variant_a": a, "variant_b": b, "emotion": e,
                               "jaccard": rng.uniform(0.2, 0.9)}
                              for s in SELECTORS for i, a in enumerate(variants) for b in variants[i + 1:]
                              for e in LABELS])
    return {"counts": counts, "emotions": emotions, "selectors": selectors, "stability": stability}


def fake_metrics() -> dict:
    rng = np.random.default_rng(2)
    confusion = {t: {p: int(20 if t == p else rng.integers(0, 5)) for p in LABELS} for t in LABELS}
    return {"heldout_accuracy": 0.87, "chance": 0.25, "labels": LABELS,
            "recall": {l: 0.8 for l in LABELS},
            "knockout_accuracy": {**{f"layer_{l}": a for l, a in enumerate([0.3, 0.85, 0.8])}, "all": 0.25},
            "confusion": confusion}


def check_outputs(paths: list[Path], min_kb: float = 8) -> None:
    for path in paths:
        assert path.exists(), path
        assert path.stat().st_size > min_kb * 1024, (path, path.stat().st_size)
    png = next(p for p in paths if p.suffix == ".png")
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert float(np.std(image[..., :3])) > 0.05  # not blank
    assert next(p for p in paths if p.suffix == ".pdf").read_bytes().startswith(b"%PDF")


@pytest.fixture(autouse=True)
def _low_dpi(monkeypatch):
    # speed; the workflow writes 200 dpi. Set where `save` reads it (esn.figures.style): F.DPI is only a copy.
    monkeypatch.setattr(F.style, "DPI", 110)


def outputs(tmp_path: Path, name: str) -> list[Path]:
    return [tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"]


@pytest.fixture(scope="module")
def delta() -> pd.DataFrame:
    return pd.concat([fake_delta(s).assign(selector=s) for s in SELECTORS], ignore_index=True)


def test_delta_recall(tmp_path, delta):
    out = outputs(tmp_path, "delta_recall")
    F.plot_delta_recall(delta, out, fraction=MAIN, selectors=SELECTORS, title="organism · synthetic")
    check_outputs(out)


def test_specificity(tmp_path, delta):
    out = outputs(tmp_path, "specificity")
    F.plot_specificity(delta, out, fraction=MAIN, selectors=SELECTORS, title="organism · synthetic")
    check_outputs(out)


def test_specificity_with_the_bootstrap_of_the_mean(tmp_path, delta):
    summary = pd.DataFrame([{"selector": s, "mode": "deactivate", "variant": "all", "control": c, "fraction": MAIN,
                             "alpha": 0.0, "statistic": "specificity", "estimate": -0.4, "lo": -0.5, "hi": -0.3}
                            for s in SELECTORS for c in ("selected", "random")])
    out = outputs(tmp_path, "specificity_summary")
    F.plot_specificity(delta, out, fraction=MAIN, selectors=SELECTORS, title="organism · synthetic", summary=summary)
    check_outputs(out)


def _with_draws(table: pd.DataFrame, shift: float = 0.2) -> pd.DataFrame:
    """The random rows as two draws, the second shifted by `shift` in every value column (as metrics writes)."""
    rand = table[table["control"] == "random"]
    values = [c for c in ("delta_recall", "lo", "hi", "accuracy", "accuracy_lo", "accuracy_hi", "target_share",
                          "target_share_lo", "target_share_hi") if c in table]
    second = rand.assign(draw=1, **{c: rand[c] + shift for c in values})
    return pd.concat([table[table["control"] != "random"].assign(draw=-1), rand.assign(draw=0), second],
                     ignore_index=True).assign(bootstrap_unit="speaker")


def test_random_draws_are_shown_as_their_mean(tmp_path, delta):
    drawn = _with_draws(delta)
    shown = F._mean_over_draws(drawn)
    keys = ["selector", "mode", "target", "fraction", "alpha", "class"]
    mean = shown[shown["control"] == "random"].set_index(keys).sort_index()
    one = F._mean_over_draws(delta)
    one = one[one["control"] == "random"].set_index(keys).sort_index()
    assert len(mean) == len(one)
    np.testing.assert_allclose(mean[["delta_recall", "lo", "hi"]], one[["delta_recall", "lo", "hi"]] + 0.1)
    assert F._ci_text(drawn) == "95% CI, speakers resampled"
    for name, plot in (("specificity", F.plot_specificity), ("delta_recall", F.plot_delta_recall)):
        out = outputs(tmp_path, name)
        plot(drawn, out, fraction=MAIN, selectors=SELECTORS, title="organism · synthetic")
        check_outputs(out)
    out = outputs(tmp_path, "set_size")
    F.plot_set_size(drawn, out, selectors=SELECTORS, main_fraction=MAIN, title="organism · synthetic")
    check_outputs(out)
    conditions = _with_draws(pd.concat([fake_conditions(s).assign(selector=s) for s in SELECTORS], ignore_index=True))
    out = outputs(tmp_path, "strength")
    F.plot_strength(conditions, out, fraction=MAIN, selectors=SELECTORS, title="organism · synthetic")
    check_outputs(out)


def test_strength(tmp_path):
    conditions = pd.concat([fake_conditions(s).assign(selector=s) for s in SELECTORS], ignore_index=True)
    out = outputs(tmp_path, "strength")
    F.plot_strength(conditions, out, fraction=MAIN, selectors=SELECTORS, title="organism · synthetic")
    check_outputs(out)


def test_set_size(tmp_path, delta):
    out = outputs(tmp_path, "set_size")
    F.plot_set_size(delta, out, selectors=SELECTORS, main_fraction=MAIN, title="organism · synthetic")
    check_outputs(out)


def test_layers(tmp_path):
    tables = fake_neuron_tables()
    out = outputs(tmp_path, "layers")
    F.plot_layers(tables["counts"], fake_knockout(), out, selectors=SELECTORS, fraction=MAIN, title="organism")
    check_outputs(out)
    out = outputs(tmp_path, "layers_no_knockout")  # knockout disabled in config
    F.plot_layers(tables["counts"], None, out, selectors=SELECTORS)
    check_outputs(out, min_kb=4)


def test_overlap(tmp_path):
    tables = fake_neuron_tables()
    out = outputs(tmp_path, "overlap")
    F.plot_overlap(tables["emotions"], tables["selectors"], out, selectors=SELECTORS, fraction=MAIN, title="organism")
    check_outputs(out)


def test_id_size(tmp_path, delta):
    sweep = pd.concat([fake_delta(s, seed=seed, fractions=[MAIN], strength=min(1.0, n / 30)).assign(
        selector=s, n=n, seed=seed) for s in SELECTORS for n in ID_SIZES for seed in SEEDS], ignore_index=True)
    out = outputs(tmp_path, "id_size")
    F.plot_id_size(sweep, delta, fake_neuron_tables()["stability"], out, fraction=MAIN, selectors=SELECTORS,
                   title="organism · synthetic")
    check_outputs(out)


@pytest.mark.parametrize("studies", [[("a", "a")], [("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")]])
def test_transfer(tmp_path, studies):
    table = pd.concat([fake_delta(s, seed=k, fractions=[MAIN], strength=1.0 if i == e else 0.4).assign(
        selector=s, identify=i, evaluate=e) for k, (i, e) in enumerate(studies) for s in SELECTORS], ignore_index=True)
    out = outputs(tmp_path, "transfer")
    F.plot_transfer(table, out, fraction=MAIN, selectors=SELECTORS, title="organism")
    check_outputs(out)


def fake_injection(selector: str, seed: int = 0) -> pd.DataFrame:
    """Injection rows as esn.metrics.summarize writes them: each strategy × control × α, UAR and accuracy."""
    rng = np.random.default_rng(seed + sum(map(ord, selector)))
    rows = []
    for strategy in ("2pass", "mix", "union", "oracle"):
        for control in ("selected", "random"):
            for alpha in ALPHAS:
                for stat in ("accuracy", "uar", "macro_f1"):
                    change = (0.0 if control == "random" else
                              {"oracle": 0.1, "2pass": 0.02, "mix": 0.03, "union": -0.05}[strategy] * np.log2(1 + alpha))
                    change += rng.normal(0, 0.005)
                    rows.append({"strategy": strategy, "control": control, "fraction": MAIN, "alpha": alpha,
                                 "statistic": stat, "estimate": 0.8 + change, "lo": 0.75 + change, "hi": 0.85 + change,
                                 "change": change, "change_lo": change - 0.03, "change_hi": change + 0.03})
    return pd.DataFrame(rows)


def test_injection(tmp_path):
    table = pd.concat([fake_injection(s).assign(selector=s) for s in SELECTORS], ignore_index=True)
    out = outputs(tmp_path, "injection")
    F.plot_injection(table, out, fraction=MAIN, selectors=SELECTORS, title="organism · synthetic")
    check_outputs(out)


def test_correct_only(tmp_path):
    rows = []
    for k, s in enumerate(SELECTORS):
        for variant, est in (("all", -0.5 - 0.1 * k), ("correct", -0.6 - 0.1 * k)):
            rows.append({"mode": "deactivate", "variant": variant, "control": "selected", "fraction": MAIN,
                         "alpha": 0.0, "statistic": "specificity", "estimate": est, "lo": est - 0.05,
                         "hi": est + 0.05, "targets": 4, "selector": s})
    stability = pd.DataFrame([{"selector": s, "variant_a": "all", "variant_b": "correct", "emotion": e,
                               "jaccard": 0.7} for s in SELECTORS for e in LABELS])
    out = outputs(tmp_path, "correct_only")
    F.plot_correct_only(pd.DataFrame(rows), stability, out, fraction=MAIN, selectors=SELECTORS,
                        title="organism · synthetic")
    check_outputs(out)


def test_confusion(tmp_path):
    out = outputs(tmp_path, "confusion")
    F.plot_confusion(fake_metrics(), out, title="organism")
    check_outputs(out)


def test_confusion_per_corpus(tmp_path):
    one = fake_metrics()
    per = {**one, "heldout_uar": 0.8, "knockout_uar": {k: v - 0.02 for k, v in one["knockout_accuracy"].items()}}
    out = outputs(tmp_path, "confusion_corpora")
    F.plot_confusion({**one, "corpora": {"synthetic": per, "telephone": per}}, out, title="organism")
    check_outputs(out)


def test_read_tables_through_the_contract(tmp_path):
    """Figures read the workflow's tables through the contract: the unmodified row's missing control/target come
    back as '' (no repair in the figures), and each table gets its key columns."""
    from esn.tables import write_table
    paths = []
    for s in SELECTORS:
        paths.append(tmp_path / f"{s}.conditions.csv")
        frame = fake_conditions(s)
        frame.insert(1, "variant", np.where(frame["mode"] == "none", None, "all"))
        frame.insert(7, "draw", -1)
        write_table(frame, paths[-1], "conditions")
    table = F.read_tables(paths, "conditions", [{"selector": s} for s in SELECTORS])
    assert list(table["selector"].unique()) == SELECTORS
    none = table[table["mode"] == "none"]
    assert len(none) == len(SELECTORS) and (none[["variant", "control", "target"]] == "").all().all()
    assert table["layer"].dtype == np.int64 and table["alpha"].dtype == np.float64


def test_helpers():
    assert F.parse_variant("n30s1") == (30, 1)
    assert F.parse_variant("all") is None and F.parse_variant("correct") is None
    with pytest.raises(ValueError, match="mad.n100s0"):  # one format, one parser (esn.tables)
        F.parse_variant("mad.n100s0")
    assert len(set(F.EMOTION_COLORS.values())) == len(F.EMOTION_COLORS) == 12
    from esn.emotions import EMOTIONS
    assert set(F.EMOTION_COLORS) == set(EMOTIONS)
    assert len(set(F.SELECTOR_COLORS.values())) == len(F.SELECTOR_COLORS)


# ----------------------------------------------------------------------------------------------------
# the rules: one per plot function, each with a caption that renders (Jinja as `snakemake --report` does)

ROOT = Path(__file__).resolve().parents[1]


def figure_rules() -> dict[str, str]:
    """figure kind -> its caption's name, from the registry the figure rules are generated from."""
    from esn.figures import FIGURES

    assert len(FIGURES) == 15, list(FIGURES)
    return {kind: kind for kind in FIGURES}


def test_every_kind_has_a_drawing_a_caption_and_a_rule():
    from esn.figures import FIGURES

    rules = (ROOT / "workflow/rules/figures.smk").read_text()
    assert "for spec in FIGURES.values():" in rules and "rule figure_" not in rules  # generated, not written out
    for kind, spec in FIGURES.items():
        assert callable(spec.draw) and callable(getattr(F, f"plot_{kind}")), kind
        assert (ROOT / "workflow/report" / f"{kind}.rst").is_file(), kind
        assert spec.scope in ("study", "model", "organism", "population", "cue_conflict") and spec.inputs, kind
        assert all(source.split(":")[0] in ("study", "neurons", "knockout", "transfer", "organism_metrics",
                                            "population", "lens", "steering", "cue_conflict")
                   for source in spec.inputs.values()), kind


def test_which_figures_a_study_gets_follows_the_config():
    from esn.figures import study_kinds

    config = {"intervention": {"alphas": [2.0], "injection": True},
              "selection": {"id_sizes": [10], "compare_correct_only": True}}
    assert study_kinds(config, False) == ["delta_recall", "specificity", "layers", "overlap"]
    assert study_kinds(config, True) == ["delta_recall", "specificity", "strength", "set_size", "layers", "overlap",
                                         "id_size", "injection", "correct_only", "lens", "steering"]
    off = {**config, "lens": {"enabled": False}, "steering": {"enabled": False}}
    assert study_kinds(off, True)[-1] == "correct_only"
    config = {"intervention": {"alphas": [], "injection": True},
              "selection": {"id_sizes": [], "compare_correct_only": False}}
    assert study_kinds(config, True) == ["delta_recall", "specificity", "set_size", "layers", "overlap", "lens"]


def test_captions_render():
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    config = {"metrics": {"bootstrap": 1000, "bootstrap_unit": "speaker"},
              "intervention": {"random_draws": 5, "unswept_draws": 1},
              "population": {"model": "organism", "seeds": [0, 1, 2]},
              "organism": {"corpora": ["synthetic", "other"]}, "steering": {"selector": None, "stream": "residual"},
              "studies": [{"model": "organism", "identify": "synthetic", "evaluate": "synthetic"},
                          {"model": "organism", "identify": "synthetic", "evaluate": "other"}]}
    params = SimpleNamespace(selectors=SELECTORS, fraction=MAIN, fractions=FRACTIONS, alphas=ALPHAS, id_sizes=ID_SIZES,
                             id_seeds=SEEDS, organism={"steps": 900, "layers": 3, "mlp": 1024, "knockout_weight": 0.5})
    wildcards = SimpleNamespace(model="organism", id_corpus="synthetic", eval_corpus="synthetic", corpus="conflict")
    snakemake = SimpleNamespace(config=config, params=params, input=SimpleNamespace(metrics="m/metrics.json"),
                                wildcards=wildcards)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    for kind in figure_rules():
        text = env.from_string((ROOT / "workflow/report" / f"{kind}.rst").read_text()).render(snakemake=snakemake)
        assert "{{" not in text and "{%" not in text
        # warnings are errors
        html = publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})["body"]
        assert "organism" in html and len(html) > 300, kind
    caption = (ROOT / "workflow/report/delta_recall.rst").read_text()
    assert "5 %" in env.from_string(caption).render(snakemake=snakemake)  # the set size as a percentage
