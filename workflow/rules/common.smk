# Config validation, the resolved plan (esn/plan.py) and the input functions of the rules over it.
import re
from pathlib import Path

from snakemake.utils import validate

from esn.plan import canonical, manifest, neuron_table, resolve
from esn.workflow import put_on_pythonpath

validate(config, "../schemas/config.schema.yaml")
# Everything a run will do follows from PLAN; `config` itself stays as given (and validated).
PLAN = resolve(config, workflow.basedir)
SELECTORS = PLAN.selectors
POPULATION = list(PLAN.population)

# Jobs import the repository's own `esn` (also inside per-rule conda envs and on SLURM nodes).
put_on_pythonpath(workflow.basedir)


wildcard_constraints:
    model=r"[^/]+",
    corpus=r"[^/.]+",
    id_corpus=r"[^/.]+",
    eval_corpus=r"[^/.]+",
    selector=r"[a-z_]+",
    shard=r"\d+",
    n=r"\d+",
    organism_dir="|".join(re.escape(m["path"]) for m in PLAN.models.values() if m["organism"]) or "$^",


def library(script):
    """Input function: the library files whose change must re-run a job of `script` (its import closure in
    esn/, derived from the code: Snakemake tracks a rule's script, not what the script imports)."""
    return lambda wildcards: PLAN.library(script, dict(wildcards.items()))


def model_entry(wildcards):
    return canonical(PLAN.models[wildcards.model])


def model_env(wildcards):
    """Kimi-Audio's remote code needs transformers <= 4.57 and flash-attn: its own environment."""
    adapter = PLAN.models[wildcards.model]["adapter"]
    return "../envs/kimi_audio.yaml" if adapter == "kimi_audio" else "../envs/esn.yaml"


def model_threads(wildcards):
    return PLAN.models[wildcards.model]["threads"]


def model_gpu(wildcards):
    return 1 if PLAN.models[wildcards.model]["gpu"] else 0


def model_files(wildcards):
    return PLAN.model_files(wildcards.model)


def shard_stores(wildcards):
    return PLAN.shard_stores(wildcards.model, wildcards.corpus)


def intervention_shards(wildcards):
    return PLAN.intervention_shards(wildcards.model, wildcards.id_corpus, wildcards.eval_corpus)


def knockout_shards(wildcards):
    return PLAN.knockout_shard_tables(wildcards.model, wildcards.eval_corpus)


def selections(wildcards):
    return PLAN.selections(wildcards.model, wildcards.get("id_corpus") or wildcards.corpus)


def study_sweeps(wildcards):
    return PLAN.study_sweeps(wildcards.model, wildcards.id_corpus, wildcards.eval_corpus)


def study_tables(kind):
    """Input function: one metric table per selector of the study in the wildcards (order of SELECTORS)."""
    return lambda wc: PLAN.study_tables(wc.model, wc.id_corpus, wc.eval_corpus, kind)


def transfer_tables(wildcards):
    return PLAN.transfer_tables(wildcards.model)


def transfer_keys(wildcards):
    return PLAN.transfer_keys(wildcards.model)


def knockout_table(wildcards):
    return PLAN.knockout_table(wildcards.model, wildcards.eval_corpus)


def study_neuron_table(name):
    return lambda wc: neuron_table(wc.model, wc.id_corpus, name)


def organism_seed(wildcards):
    return PLAN.organism_seed(wildcards.organism_dir)


def organism_metrics(wildcards):
    return f"{PLAN.models[wildcards.model]['path']}/metrics.json"


def browser_tables(kind):
    """Input function: the metric tables of the sets identified on the corpus in the wildcards, all studies."""
    return lambda wc: PLAN.browser_tables(wc.model, wc.corpus, kind)


def lens_recall_table(name):
    """The study's logit-lens table `name` (recall | resolution; workflow/rules/lens.smk)."""
    return lambda wc: f"results/tables/lens/{wc.model}/{wc.id_corpus}/{wc.eval_corpus}.{name}.csv"


def steering_selector():
    """The selector whose sets fix the steering vectors' norm (`steering.selector`, else the first selector)."""
    return PLAN.config["steering"]["selector"] or SELECTORS[0]


def steering_table(name):
    """The study's steering metrics table `name` (conditions | summary; rule `steer`, then rule `metrics`)."""
    return lambda wc: f"results/tables/interventions/{wc.model}/{wc.id_corpus}/steering/{wc.eval_corpus}.{name}.csv"


def figure_input(source):
    """The input of a figure's declared source (esn/figures/registry.py)."""
    what, _, name = source.partition(":")
    return {"study": lambda: study_tables(name), "neurons": lambda: study_neuron_table(name),
            "knockout": lambda: knockout_table, "transfer": lambda: transfer_tables,
            "organism_metrics": lambda: organism_metrics, "lens": lambda: lens_recall_table(name),
            "steering": lambda: steering_table(name),
            "population": lambda: f"{PLAN.population_dir}/{name}.csv",
            "cue_conflict": lambda: "results/tables/cue_conflict/{model}/{corpus}.summary.csv"}[what]()


def figure_report(spec, path, subcategory, study):
    """A figure's PNG in the report: under its model (or the population), with its caption and label."""
    caption = f"../report/{spec.kind}.rst"
    if spec.scope == "population":
        return report(path, caption=caption, category="population", labels={"figure": spec.label})
    return report(path, caption=caption, category="{model}", subcategory=subcategory,
                  labels={"figure": spec.label, "study": study})


# The organism: assembled from the shipped checkpoint (organism.shipped) or trained (workflow/rules/organism.smk).
# A relative `shipped` path is the repository's (it ships with the workflow, like config/), whatever --directory.
SHIPPED = str(Path(workflow.basedir) / PLAN.config["organism"]["shipped"]) if PLAN.config["organism"]["shipped"] else None


def organism_recipe(organism_dir):
    from esn.shipped import recipe

    model = next(m for m in PLAN.models.values() if m["organism"] and m["path"] == organism_dir)
    return recipe(PLAN.config, PLAN.organism_seed(organism_dir), model["prompt"])


# Only the config's own organism is shipped; a population's organisms (other seeds) train their own.
ASSEMBLED = [m["path"] for m in PLAN.models.values() if m["organism"] and m["organism_seed"] is None] if SHIPPED else []
TRAINED = [m["path"] for m in PLAN.models.values() if m["organism"] and m["path"] not in ASSEMBLED]
