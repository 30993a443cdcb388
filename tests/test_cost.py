"""The cost plan (esn/cost.py) counts what the workflow builds: its conditions are `selection_conditions` on a
real selection, its clips per job the shard rule's, its limits the SLURM profile's."""

import numpy as np
import pytest
import xarray as xr
import yaml
from test_plan import validated
from test_workflow import ROOT

from esn.capture import capture
from esn.cost import corpus_size, cost_plan, load_config, runtime_limits, study_conditions
from esn.grid import shard_blocks
from esn.interventions import selection_conditions
from esn.plan import resolve
from esn.selectors import select_variants

pytestmark = pytest.mark.usefixtures("one_thread")


def built(plan, study, selection) -> int:
    """Forwards per clip of a study's job as the job builds them: the unmodified pass + each selector's list."""
    cfg = plan.config["intervention"]
    conditions = selection_conditions(selection, plan.config["corpora"][study["evaluate"]]["classes"],
                                      cfg["fractions"], cfg["fraction"], cfg["alphas"], sweeps=plan.sweeps(study),
                                      injection=cfg["injection"], unswept_draws=cfg["unswept_draws"])
    return 1 + len(plan.selectors) * len(conditions)


@pytest.mark.filterwarnings("ignore:no identification utterances")  # correct-only, for an untrained model
def test_the_default_plan_counts_the_conditions_of_a_real_selection(tiny_adapter, tiny_manifest, tmp_path):
    """The default config's studies (swept and not) against a selection made by `select_variants` from a real
    capture store, with the default's variants and random draws. Planned from a bare copy of the repository's cost
    files, so a corpus prepared in the working tree cannot change what is counted."""
    bare = tmp_path / "repo"
    bare.mkdir()
    for part in ("benchmarks", "profiles"):
        (bare / part).symlink_to(ROOT / part)
    plan = resolve(validated(), bare)
    capture(tiny_adapter, tiny_manifest, tmp_path / "s.zarr", groups=["audio"], batch_size=8)
    selection = select_variants(tmp_path / "s.zarr", "mad", plan.variants(), position="audio",
                                random_draws=plan.config["intervention"]["random_draws"])
    counted = [study_conditions(plan, s) for s in plan.studies]
    assert counted == [built(plan, s, selection) for s in plan.studies]
    assert counted[0] == 321 and counted[1] == 41  # the swept study's 321 conditions
    sizes, jobs = cost_plan(plan, "cpu")
    assert {(s.corpus, s.identification, s.evaluation, s.source) for s in sizes} == {
        ("synthetic", 480, 160, "generated"), ("telephone", 480, 160, "generated"),
        ("conflict", 45, 19, "generated")}  # cue conflict: 4 speakers x 16 (lexical, prosodic) pairs x 1 sentence
    intervene = [j for j in jobs if j.rule == "intervene"]
    assert [j.conditions for j in intervene] == counted and all(j.rows == j.clips * j.conditions for j in intervene)
    cap = plan.config["intervention"]["max_per_emotion"]  # evaluated clips: 4 emotions x the cap (of 160)
    evaluated = min(160, 4 * cap) if cap else 160
    block = plan.config["intervention"]["block_size"]
    assert [j.clips for j in intervene] == [max(sum(map(len, shard_blocks(evaluated, block, k, j.shards)))
                                                for k in range(j.shards)) for j in intervene]
    assert all(not j.fix for j in jobs)  # the default fits its limits everywhere
    # a row at the audio tower's site reruns the tower: priced at its own measured cost, the decoder's elsewhere
    rates = yaml.safe_load((ROOT / "benchmarks/costs.yaml").read_text())["organism"]
    for j in intervene:
        row = rates["audio_site_row_s"] if plan.models[j.model]["site"] == "audio_mlp" else rates["intervene_row_s"]
        assert j.hours == pytest.approx((j.rows * row + rates["job_overhead_s"]) / 3600)
    assert {j.model for j in intervene if plan.models[j.model]["site"] == "audio_mlp"} == {"organism_encoder"}


def paper_config(tmp_path) -> dict:
    """config/paper.yaml with its corpus paths pointed at fixture folders in each native layout."""
    from fixtures import corpora as fx

    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    makers = {"iemocap": fx.make_iemocap, "meld": fx.make_meld, "msp_podcast": fx.make_msp_podcast,
              "ravdess": fx.make_ravdess, "cremad": fx.make_cremad}
    for name, corpus in cfg["corpora"].items():
        corpus["path"] = str(makers[corpus["reader"]](tmp_path / "data" / name).root)
    for model in cfg["models"].values():
        if model.get("trust_remote_code"):
            model["revision"] = "0" * 40
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


def selection_like(plan, emotions: list[str]) -> xr.Dataset:
    """A selection file's variables as `select_variants` stores them (rank per variant, random_order per draw)
    for the plan's variants and draws, at a small shape: counts do not depend on the neurons."""
    rng = np.random.default_rng(0)
    V, E, L, N, R = len(plan.variants()), len(emotions), 2, 50, plan.config["intervention"]["random_draws"]
    rank = np.stack([[rng.permutation(L * N).reshape(L, N) for _ in range(E)] for _ in range(V)]).astype(np.int32)
    order = np.stack([[[rng.permutation(N) for _ in range(L)] for _ in range(E)] for _ in range(R)]).astype(np.int32)
    return xr.Dataset({"rank": (("variant", "emotion", "layer", "neuron"), rank),
                       "random_order": (("draw", "emotion", "layer", "neuron"), order)},
                      coords={"variant": plan.variants(), "emotion": emotions, "draw": np.arange(R)})


def test_the_paper_plan_on_fixture_corpora(tmp_path):
    """config/paper.yaml: every study's conditions as the job builds them (4-, 6- and 7-label corpora, transfer
    across label sets), the fixture corpora counted from their readers before preparation, shards per study as
    the config sets them, and the jobs past the profile's limit at the published sizes named with their fix."""
    from esn.corpora import get_reader

    config = paper_config(tmp_path)
    plan = resolve(config, ROOT)
    for study in plan.studies:
        emotions = plan.config["corpora"][study["identify"]]["classes"]
        assert study_conditions(plan, study) == built(plan, study, selection_like(plan, emotions)), study
    sizes, jobs = cost_plan(plan, "h200")
    for s in sizes:
        spec = plan.config["corpora"][s.corpus]
        listed = [c for c in get_reader(spec["reader"])(spec["path"], **(spec.get("options") or {}))
                  if c.problem is None and c.emotion in spec["classes"]]
        assert s.source == "listed (before preparation)" and s.total == len(listed) > 0
    intervene = [j for j in jobs if j.rule == "intervene"]
    assert [j.shards for j in intervene] == [plan.study_shards(s["model"], s["identify"], s["evaluate"])
                                             for s in plan.studies]
    limits = runtime_limits(ROOT / "profiles/slurm/config.yaml")
    assert {j.limit_min for j in intervene} == {limits["intervene"]}
    # at the published sizes the shipped shard counts keep every job under its limit (with the margin) on an H100
    # (an H200 is faster)
    published = {"iemocap": 5531, "meld": 13708, "msp_podcast": 100_000}
    for device in ("h100", "h200"):
        assert not [j.fix for j in cost_plan(plan, device, published)[1] if j.fix]
    _, scaled = cost_plan(plan, "h100", published)
    # the largest study in one job does not: the plan says so and names the shipped count as the fix
    rows = [j.rows * j.shards for j in scaled if j.rule == "intervene"]  # in the order of the studies
    big = rows.index(max(rows))
    study = plan.studies[big]
    config["studies"][big]["shards"] = 1
    _, fewer = cost_plan(resolve(config, ROOT), "h100", published)
    over = [j for j in fewer if j.rule == "intervene" and (j.model, j.corpus, j.evaluate) ==
            (study["model"], study["identify"], study["evaluate"])]
    assert over[0].over and over[0].fix == f"studies[{big}].shards: {study['shards']}"


def test_manifest_counts_win_over_the_listing(tiny_corpus, tmp_path):
    """A prepared corpus is counted from its manifest's splits."""
    import pandas as pd

    (tmp_path / "resources/corpora/x").mkdir(parents=True)
    manifest = pd.read_parquet(tiny_corpus / "manifest.parquet")
    manifest.to_parquet(tmp_path / "resources/corpora/x/manifest.parquet")
    size = corpus_size("x", {"reader": "synthetic", "classes": ["happy"], "evaluation_fraction": 0.5}, tmp_path, {})
    counts = manifest["split"].value_counts()
    assert (size.identification, size.evaluation, size.source) == (counts["identification"], counts["evaluation"],
                                                                    "manifest")
    assert corpus_size("x", {"evaluation_fraction": 0.3}, tmp_path, {"x": 1000}).evaluation == 300


def test_the_command_loads_no_model(tmp_path):
    """`python -m esn.cost` (what `make plan` runs) prints the plan without importing torch or transformers."""
    import subprocess
    import sys

    code = ("import sys; from esn.cost import main; main(['--configfile', 'config/config.yaml', '--device', 'cpu']); "
            "print('imported:', sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "intervene organism" in out and "every job fits its run-time limit" in out
    assert out.strip().endswith("imported: []")


def test_the_readme_command_plans_the_paper_at_its_published_sizes(capsys, monkeypatch):
    """The README's `make plan CONFIG=config/paper.yaml DEVICE=h100 SCALE=…`, on config/paper.yaml as shipped
    (placeholder paths, Kimi's revision unset): it plans, and every job fits; without the sizes it says which
    corpora it cannot count and how to give them."""
    from esn.cost import main

    monkeypatch.chdir(ROOT)
    published = ["iemocap=5531", "meld=13708", "msp_podcast=100000", "ravdess=1248", "cremad=7442"]
    assert main(["--configfile", "config/paper.yaml", "--device", "h100",
                 *[a for s in published for a in ("--scale", s)]]) == 0
    out, err = capsys.readouterr()
    assert "every job fits its run-time limit" in out and "110 model jobs" in out
    assert "models.kimi_audio_7b.revision is unset" in err
    assert main(["--configfile", "config/paper.yaml", "--scale", "meld=13708"]) == 2
    err = capsys.readouterr().err
    assert "--scale <corpus>=<utterances>" in err and "iemocap" in err and "meld (" not in err
