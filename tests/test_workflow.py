"""The workflow as a user drives it: config validation before any job, dry-runs, incremental re-runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(*args, cwd=ROOT, check=False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def write_config(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("mutate, needle", [
    (lambda c: c["capture"].update(positons=["audio"]), "positons"),
    (lambda c: c["intervention"].update(alphas="big"), "alphas"),
    (lambda c: c["corpora"]["synthetic"].update(reader="ravdes"), "ravdes"),
    (lambda c: c["models"]["organism"].update(adapter="qwen3"), "qwen3"),
    (lambda c: c["selection"].update(selectors=["lap", "magic"]), "magic"),
    (lambda c: c["studies"].append({"model": "organism", "identify": "synthetic", "evaluate": "iemocap"}), "iemocap"),
    (lambda c: c["models"]["organism"].update(trust_remote_code=True), "trust_remote_code"),
    (lambda c: c["models"]["organism"].update(trust_remote_code=True, revision="main"), "not 'main'"),
    (lambda c: c["corpora"]["synthetic"].update(classes=["happy", "joyful"]), "joyful"),
    (lambda c: c.update(browser={"top_neuron": 5}), "top_neuron"),
    (lambda c: c["models"]["organism"].update(system_prompt="You are Qwen."), "system_prompt"),
    (lambda c: c["corpora"]["synthetic"].update(split="official"), "corpora.synthetic.split"),
    (lambda c: c["cue_conflict"].update(corpus="synthetic"), "cue_conflict.corpus"),  # records no lexical emotion
])
def test_malformed_config_fails_before_any_job_naming_the_key(tmp_path, mutate, needle):
    cfg = default_config()
    mutate(cfg)
    proc = snakemake("-n", "--configfile", str(write_config(tmp_path, cfg)), "--directory", str(tmp_path),
                     "-s", str(ROOT / "Snakefile"))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert needle in out, out[-2000:]
    assert "Job stats" not in out


def test_default_config_plans(tmp_path):
    proc = snakemake("-n", "--directory", str(tmp_path), "-s", str(ROOT / "Snakefile"),
                     "--configfile", str(ROOT / "config" / "config.yaml"), check=True)
    for rule in ("prepare_corpus", "assemble_organism", "capture", "merge_shards", "select", "intervene", "knockout",
                 "metrics", "browser", "cue_conflict", "figure_cue_conflict"):
        assert rule in proc.stdout
    assert "train_organism" not in proc.stdout  # the default organism ships (resources/organism)


def test_the_default_organism_trains_when_asked(tmp_path):
    """`make organism`'s override: with organism.shipped empty the rule trains the organism instead of assembling."""
    proc = snakemake("-n", "resources/models/organism/metrics.json", "--directory", str(tmp_path), "-s",
                     str(ROOT / "Snakefile"), "--configfile", str(ROOT / "config" / "config.yaml"),
                     "--config", "organism={shipped: ''}", check=True)
    counts = _job_counts(proc.stdout)
    assert counts["train_organism"] == 1 and "assemble_organism" not in counts


def test_a_missing_shipped_organism_fails_the_plan_instead_of_training(tmp_path):
    cfg = default_config()
    cfg["organism"]["shipped"] = "resources/nowhere"
    proc = snakemake("-n", "--configfile", str(write_config(tmp_path, cfg)), "--directory", str(tmp_path),
                     "-s", str(ROOT / "Snakefile"))
    assert proc.returncode != 0 and "resources/nowhere/SHIPPED.json" in proc.stdout + proc.stderr


def test_a_given_config_is_the_whole_config(tmp_path):
    """`--configfile X` replaces the embedded default: a 7B config must not also train the organism or prepare
    the default's telephone corpus (Snakemake would otherwise deep-merge X over config/config.yaml)."""
    proc = snakemake("-n", "--directory", str(tmp_path), "-s", str(ROOT / "Snakefile"),
                     "--configfile", str(ROOT / "config" / "fullsize_cpu.yaml"), check=True)
    assert "capture" in proc.stdout
    assert "train_organism" not in proc.stdout
    assert "telephone" not in proc.stdout


def _job_counts(stdout: str) -> dict[str, int]:
    stats = stdout.split("Job stats:")[1]
    return {line.split()[0]: int(line.split()[1]) for line in stats.splitlines()[3:] if len(line.split()) == 2
            and line.split()[1].isdigit()}


def test_population_config_plans_every_organism_as_its_own_model(tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "population.yaml").read_text())
    n, studies, selectors = len(cfg["population"]["seeds"]), len(cfg["studies"]), len(cfg["selection"]["selectors"])
    proc = snakemake("-n", "--configfile", str(ROOT / "config" / "population.yaml"), "--directory", str(tmp_path),
                     "-s", str(ROOT / "Snakefile"), check=True)
    counts = _job_counts(proc.stdout)
    assert n >= 5 and counts["train_organism"] == n
    assert counts["intervene"] == n * studies and counts["metrics"] == n * studies * selectors
    assert counts["population_table"] == counts["figure_population"] == 1
    # per-study figures and the browser only for the first organism; the rest feed the population tables
    assert counts["browser"] == counts["figure_specificity"] == studies
    for seed in cfg["population"]["seeds"]:
        assert f"resources/models/organism_s{seed}/model.safetensors" in proc.stdout


@pytest.mark.parametrize("population, needle", [
    ({"model": "nope", "seeds": [0, 1]}, "population"),
    ({"model": "organism", "seeds": [0]}, "seeds"),
])
def test_bad_population_fails_before_any_job(tmp_path, population, needle):
    cfg = default_config()
    cfg["population"] = population
    proc = snakemake("-n", "--configfile", str(write_config(tmp_path, cfg)), "--directory", str(tmp_path),
                     "-s", str(ROOT / "Snakefile"))
    assert proc.returncode != 0 and needle in proc.stdout + proc.stderr
    assert "Job stats" not in proc.stdout


def test_paper_config_plans_the_whole_study(tmp_path):
    """config/paper.yaml with its corpus paths pointed at fixture folders in each native layout."""
    from fixtures import corpora as fx

    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    makers = {"iemocap": fx.make_iemocap, "meld": fx.make_meld, "msp_podcast": fx.make_msp_podcast,
              "ravdess": fx.make_ravdess, "cremad": fx.make_cremad}
    for name, corpus in cfg["corpora"].items():
        corpus["path"] = str(makers[corpus["reader"]](tmp_path / "data" / name).root)
    for model in cfg["models"].values():  # a placeholder the user fills in, like the corpus paths
        if model.get("trust_remote_code"):
            assert model["revision"] is None
            model["revision"] = "0" * 40
    proc = snakemake("-n", "--configfile", str(write_config(tmp_path, cfg)), "--directory", str(tmp_path / "work"),
                     "-s", str(ROOT / "Snakefile"), check=True)
    stats = proc.stdout.split("Job stats:")[1]
    counts = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines()[3:] if len(line.split()) == 2
              and line.split()[1].isdigit()}
    identified = {(s["model"], s["identify"]) for s in cfg["studies"]}  # only identification corpora are captured
    assert counts["capture"] == len(identified) * cfg["capture"]["shards"]
    assert counts["merge_shards"] == counts["select"] // len(cfg["selection"]["selectors"]) == len(identified)
    # one job per shard of a study (every selector shares its forwards), merged into one table per selector
    assert counts["intervene"] == sum(s.get("shards") or cfg["intervention"].get("shards", 1) for s in cfg["studies"])
    assert counts["intervene"] > len(cfg["studies"]) and counts["merge_interventions"] == len(cfg["studies"])
    assert counts["prepare_corpus"] == len(cfg["corpora"]) and "train_organism" not in counts
    assert counts["browser"] == len(identified)  # one site per (model, identification corpus)


def test_snakemake_lint_is_clean():
    proc = snakemake("--lint", check=True)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


NEW_FIGURE = '''
from esn.figures.registry import FigureJob, register
from esn.figures.style import save


def plot_extra_view(delta, out, *, fraction, selectors=None, title=None):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot(delta["delta_recall"])
    save(fig, out)


@register("extra_view", "12 extra view", "A figure added by the README's recipe.", {"tables": "study:delta_recall"},
          sweeps=True)
def _draw_extra_view(job: FigureJob) -> None:
    plot_extra_view(job.per_selector(job.input.tables, "delta_recall"), job.out, fraction=job.params.fraction,
                    title=job.title)
'''


def test_a_new_figure_is_one_module_and_one_caption(tmp_path):
    """The README's recipe: a module of esn/figures/ that declares the kind, and its caption; the rule, its
    targets and its invalidation follow."""
    for name in ("Snakefile", "workflow", "config", "esn", "resources/organism"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, tmp_path / name)
    (tmp_path / "esn/figures/extra_view.py").write_text(NEW_FIGURE)
    (tmp_path / "workflow/report/extra_view.rst").write_text("An extra view of {{ snakemake.wildcards.model }}.\n")
    proc = snakemake("-n", "--cores", "1", cwd=tmp_path, check=True)
    assert _job_counts(proc.stdout)["figure_extra_view"] == 1  # the one main study that runs the sweeps
    assert "results/figures/organism/synthetic/synthetic/extra_view.png" in proc.stdout
    rule = proc.stdout.split("rule figure_extra_view:")[1].split("\n\n")[0]
    assert str(tmp_path / "esn/figures/extra_view.py") in rule  # the new module invalidates the figure jobs
