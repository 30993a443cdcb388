"""The resolved plan (esn/plan.py), without Snakemake: population, defaults, cross-checks, targets."""

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from esn.plan import resolve
from test_workflow import ROOT


def validated(name: str = "config.yaml", **changes) -> dict:
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    config.update(changes)
    validate(config, str(ROOT / "workflow/schemas/config.schema.yaml"))
    return config


def test_the_default_plan():
    config = validated()
    given = copy.deepcopy(config)
    plan = resolve(config, ROOT)
    assert config == given  # the config is read, never rewritten
    assert plan.population == ()
    assert plan.models["organism"]["system_prompt"] == ""  # an organism is loaded as trained: no system turn
    assert plan.variants() == ["all", "n10s0", "correct"]
    # the sweeps run where a study identifies and evaluates on one corpus, unless the study says otherwise
    assert [plan.sweeps(s) for s in plan.studies] == [True, False, False, False, False]
    assert plan.main_studies() == [("organism", "synthetic", "synthetic", True),
                                   ("organism", "telephone", "telephone", False),
                                   ("organism_encoder", "synthetic", "synthetic", False)]
    assert plan.figure_kinds(False) == ["delta_recall", "specificity", "layers", "overlap"]
    assert plan.figure_kinds(True) == ["delta_recall", "specificity", "strength", "set_size", "layers", "overlap",
                                       "id_size", "injection", "correct_only", "lens", "steering"]
    targets = plan.targets()
    assert len(targets) == len(set(targets))
    assert len([t for t in targets if t.startswith("results/figures/organism/synthetic/synthetic/")]) == 22
    assert len([t for t in targets if t.startswith("results/figures/organism/telephone/telephone/")]) == 8
    assert "results/browser/organism/telephone" in targets and "resources/models/organism/metrics.json" in targets
    assert len(plan.metric_tables()) == len(plan.studies) * len(plan.selectors) == 25
    # the encoder's neurons: a second entry on the same organism, trained once, studied at its own site
    assert plan.models["organism_encoder"]["site"] == "audio_mlp" and plan.models["organism"]["site"] == "act_fn"
    assert plan.organism_models() == ["organism"]
    assert [t for t in targets if t.endswith("metrics.json")] == ["resources/models/organism/metrics.json"]
    assert len([t for t in targets if t.startswith("results/figures/organism_encoder/synthetic/synthetic/")]) == 8
    assert "results/tables/knockout/organism_encoder/synthetic.csv" in targets


def test_entries_on_one_organism_must_agree_on_its_training():
    config = validated()
    config["models"]["organism_encoder"]["prompt"] = "Which emotion?"
    with pytest.raises(ValueError, match="models.organism_encoder: an organism entry on 'resources/models/organism' "
                                         "like models.organism, but with another prompt"):
        resolve(config)
    config = validated()
    config["models"]["organism_encoder"]["path"] = "resources/models/other"  # another checkpoint: trained apart
    assert resolve(config).organism_models() == ["organism", "organism_encoder"]


def test_the_encoder_config_runs_the_encoder_study_in_full():
    plan = resolve(validated("encoder.yaml"), ROOT)
    assert {m["site"] for m in plan.models.values()} == {"audio_mlp"} and plan.organism_models() == ["organism_encoder"]
    assert plan.main_studies() == [("organism_encoder", "synthetic", "synthetic", True),
                                   ("organism_encoder", "telephone", "telephone", True)]
    assert "results/tables/transfer/organism_encoder.csv" in plan.targets()
    # the same organism checkpoint as the default's: trained once, whichever config runs first
    assert plan.models["organism_encoder"]["path"] == validated()["models"]["organism"]["path"]


def test_the_main_set_size_is_always_swept():
    config = validated()
    config["intervention"].update(fraction=0.02, fractions=[0.01, 0.05])
    assert resolve(config).config["intervention"]["fractions"] == [0.01, 0.02, 0.05]


def test_a_population_is_one_model_per_organism():
    seeds = [3, 1, 2]
    config = validated(population={"model": "organism", "seeds": seeds})
    plan = resolve(config, ROOT)
    assert plan.population == tuple(f"organism_s{s}" for s in seeds)
    assert "organism" not in plan.models
    for name, seed in zip(plan.population, seeds):
        assert plan.models[name]["path"] == f"resources/models/organism_s{seed}"
        assert plan.organism_seed(plan.models[name]["path"]) == seed
    first, *rest = plan.population
    assert all(plan.sweeps(s) is False for s in plan.studies if s["model"] in rest)
    assert [plan.sweeps(s) for s in plan.studies if s["model"] == first] == [True, False, False, False]
    # later organisms feed the population's tables but get no figures or browser of their own
    targets = plan.targets()
    assert not [t for t in targets if any(f"/{m}/" in t for m in rest) and ("figures" in t or "browser" in t)]
    assert "results/tables/population/organism/summary.csv" in targets
    assert plan.cue_conflict_pairs() == [(m, "conflict") for m in plan.population]  # each organism answers
    grown = [s for s in config["studies"] if s["model"] == "organism"]
    assert len(plan.population_keys()) == len(seeds) * len(grown) * len(plan.selectors)
    # an entry on the default checkpoint that the population does not grow (the encoder site) stays one model
    assert plan.models["organism_encoder"]["path"] == "resources/models/organism"
    assert sorted(plan.organism_models()) == sorted([*plan.population, "organism_encoder"])


@pytest.mark.parametrize("mutate, needle", [
    (lambda c: c["studies"].append({"model": "organism", "identify": "nope", "evaluate": "synthetic"}),
     "studies[5].identify"),
    (lambda c: c["models"]["organism"].update(system_prompt="You are Qwen."), "models.organism.system_prompt"),
    (lambda c: c["organism"].update(corpora=["synthetic", "elsewhere"]), "organism.corpora"),
    (lambda c: c.update(population={"model": "organism", "seeds": []}), "population"),
])
def test_a_bad_config_is_refused_naming_the_key(mutate, needle):
    config = validated()
    mutate(config)
    with pytest.raises(ValueError, match=re.escape(needle)):
        resolve(config)


def test_library_inputs_follow_the_job(tmp_path):
    """The model's adapter family and the corpus's reader are part of a job's library; other families and
    readers are not."""
    plan = resolve(validated(), ROOT)
    capture = plan.library("capture.py", {"model": "organism", "corpus": "synthetic", "shard": "0", "n": "1"})
    names = {str(p.relative_to(ROOT)) for p in map(Path, capture)}
    assert {"esn/capture.py", "esn/batching.py", "esn/models/qwen_omni.py", "esn/corpora/synthetic.py"} <= names
    assert not names & {"esn/models/kimi_audio.py", "esn/corpora/iemocap.py", "esn/metrics.py", "esn/plan.py"}
    metrics = plan.library("metrics.py", {"path": "organism/synthetic/mad/synthetic"})
    assert {str(p.relative_to(ROOT)) for p in map(Path, metrics)} == {
        "esn/__init__.py", "esn/claims.py", "esn/metrics.py", "esn/tables.py", "esn/workflow.py"}


def test_the_scoring_default_is_written_once():
    """The config schema documents the library's default scoring; a config without one gets exactly it."""
    from esn.models.base import DEFAULT_SCORING

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["models"]["additionalProperties"]["properties"]["scoring"]["default"] == DEFAULT_SCORING
    assert resolve(validated()).models["organism"]["scoring"] == DEFAULT_SCORING
