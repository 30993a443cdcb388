# Config validation and every input function of the workflow.
import glob
import os
import re

from snakemake.utils import validate

from esn.workflow import put_on_pythonpath

validate(config, "../schemas/config.schema.yaml")


def _grow_population():
    """`population`: the organism entry `population.model` becomes one entry per seed (`<model>_s<seed>`, its
    checkpoint at `<path>_s<seed>`), each with every study of the entry; organisms beyond the first run no
    sweeps. Returns the members' names (none without a population)."""
    pop = config["population"]
    if not pop:
        return []
    name = pop.get("model")
    if name not in config["models"] or not config["models"][name]["organism"] or not pop.get("seeds"):
        raise ValueError(f"config population: needs `model`, an organism entry of models (known: "
                         f"{sorted(n for n, m in config['models'].items() if m['organism'])}), and `seeds`")
    base = config["models"].pop(name)
    members = [f"{name}_s{seed}" for seed in pop["seeds"]]
    for member, seed in zip(members, pop["seeds"]):
        config["models"][member] = {**base, "path": f"{base['path']}_s{seed}", "organism_seed": seed}
    config["studies"] = [({**s, "model": m} if i == 0 else {**s, "model": m, "sweeps": False})
                         for s in config["studies"]
                         for i, m in (enumerate(members) if s["model"] == name else [(0, s["model"])])]
    return members


POPULATION = _grow_population()


def _check_config():
    """Cross-references the JSON schema cannot express, failing before any job with the key named."""
    for i, study in enumerate(config["studies"]):
        for key, table in (("model", "models"), ("identify", "corpora"), ("evaluate", "corpora")):
            if study[key] not in config[table]:
                raise ValueError(f"config studies[{i}].{key}: {study[key]!r} is not a key of {table} "
                                 f"(known: {sorted(config[table])})")
    for name, model in config["models"].items():
        if model["trust_remote_code"] and not re.fullmatch(r"[0-9a-f]{40}", model["revision"] or ""):
            raise ValueError(f"config models.{name}.revision: trust_remote_code needs a pinned revision, the 40-hex "
                             f"commit hash, not {model['revision']!r} (a branch or tag can move)")
        if model["organism_seed"] is not None and not model["organism"]:
            raise ValueError(f"config models.{name}.organism_seed: only an organism entry is trained with a seed")
        if model["organism"]:
            for corpus in config["organism"]["corpora"]:
                if corpus not in config["corpora"]:
                    raise ValueError(f"config organism.corpora: {corpus!r} is not a key of corpora "
                                     f"(known: {sorted(config['corpora'])})")
            classes = {tuple(config["corpora"][c]["classes"]) for c in config["organism"]["corpora"]}
            if len(classes) > 1:
                raise ValueError(f"config organism.corpora: the organism's corpora must share one class list, "
                                 f"not {sorted(classes)}")
            # loaded exactly as trained: without a system turn
            if model["system_prompt"] is None:
                model["system_prompt"] = ""
            if model["system_prompt"]:
                raise ValueError(f"config models.{name}.system_prompt: the organism is trained without a system "
                                 "prompt; leave it unset or \"\"")
    if config["intervention"]["fraction"] not in config["intervention"]["fractions"]:
        config["intervention"]["fractions"] = sorted(set(config["intervention"]["fractions"]) |
                                                     {config["intervention"]["fraction"]})


_check_config()

# Jobs import the repository's own `esn` (also inside per-rule conda envs and on SLURM nodes).
put_on_pythonpath(workflow.basedir)


def model_env(wildcards):
    """Kimi-Audio's remote code needs transformers <= 4.57 and flash-attn: its own environment."""
    adapter = config["models"][wildcards.model]["adapter"]
    return "../envs/kimi_audio.yaml" if adapter == "kimi_audio" else "../envs/esn.yaml"


wildcard_constraints:
    model=r"[^/]+",
    corpus=r"[^/.]+",
    id_corpus=r"[^/.]+",
    eval_corpus=r"[^/.]+",
    selector=r"[a-z_]+",
    shard=r"\d+",
    n=r"\d+",
    organism_dir="|".join(re.escape(m["path"]) for m in config["models"].values() if m["organism"]) or "$^",

# Library modules whose change must invalidate a stage's outputs (Snakemake tracks scripts, not imports).
# Named relative to the repository, so `--directory` elsewhere still finds them.
_FIGURES = sorted(glob.glob("esn/figures/*.py", root_dir=workflow.basedir))  # the package, style included
assert _FIGURES, f"no esn/figures/*.py under {workflow.basedir}"
_LIB = {
    "prepare": ["esn/prepare.py", "esn/audio.py", "esn/corpora/base.py"],
    "organism": ["esn/organism.py", "esn/models/base.py", "esn/models/qwen_omni.py", "esn/hooks.py"],
    "capture": ["esn/capture.py", "esn/store.py", "esn/hooks.py", "esn/models/base.py", "esn/generation.py"],
    "select": ["esn/selectors.py"],
    "intervene": ["esn/interventions.py", "esn/hooks.py", "esn/models/base.py", "esn/generation.py"],
    "metrics": ["esn/metrics.py"],
    "population": ["esn/population.py"],
    "figures": _FIGURES,
    "browser": ["esn/browser.py", *_FIGURES, "esn/selectors.py", "esn/templates/browser/base.html",
                "esn/templates/browser/index.html", "esn/templates/browser/neuron.html",
                "esn/templates/browser/style.css"],
}
LIB = {stage: [os.path.join(workflow.basedir, p) for p in paths] for stage, paths in _LIB.items()}

SELECTORS = config["selection"]["selectors"]
STUDIES = config["studies"]


def canonical(obj):
    """Config values with dict keys sorted: reordering keys in a config file must not look like a change
    of params to Snakemake (which would re-run every job downstream)."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(x) for x in obj]
    return obj


def model_threads(wildcards):
    return config["models"][wildcards.model]["threads"]


def model_gpu(wildcards):
    return 1 if config["models"][wildcards.model]["gpu"] else 0


def corpus_reader_module(wildcards):
    return [os.path.join(workflow.basedir, f"esn/corpora/{config['corpora'][wildcards.corpus]['reader']}.py")]


def manifest(corpus):
    return f"resources/corpora/{corpus}/manifest.parquet"


def model_files(wildcards):
    """The organism's checkpoint is built by the workflow; real checkpoints come from their path or hub."""
    model = config["models"][wildcards.model]
    return [f"{model['path']}/model.safetensors"] if model["organism"] else []


def shard_stores(wildcards):
    n = config["capture"]["shards"]
    return [f"results/activations/{wildcards.model}/{wildcards.corpus}.shards/{k}-of-{n}.zarr" for k in range(n)]


def variants():
    """Selection variants: the full identification set, the identification-size sweep subsamples, and the
    correct-only identification set (when `selection.compare_correct_only`)."""
    sizes, seeds = config["selection"]["id_sizes"], config["selection"]["id_seeds"]
    correct = ["correct"] if config["selection"]["compare_correct_only"] else []
    return ["all"] + [f"n{n}s{s}" for n in sizes for s in seeds] + correct


def identification_pairs():
    return sorted({(s["model"], s["identify"]) for s in STUDIES})


def intervention_tables():
    return [f"results/interventions/{s['model']}/{s['identify']}/{sel}/{s['evaluate']}.parquet"
            for s in STUDIES for sel in SELECTORS]


def metric_tables():
    return [p.replace("results/interventions/", "results/tables/interventions/").replace(".parquet", ".conditions.csv")
            for p in intervention_tables()]


def knockout_tables():
    return sorted({f"results/tables/knockout/{s['model']}/{s['evaluate']}.csv" for s in STUDIES})


def shown(model):
    """Whether a model gets per-study figures and a browser: every model but a population's later organisms
    (their tables feed the population's tables and figure)."""
    return model not in POPULATION[1:]


def all_targets():
    return [
        *[manifest(c) for c in config["corpora"]],
        *[f"{m['path']}/metrics.json" for m in config["models"].values() if m["organism"]],
        *metric_tables(),
        *knockout_tables(),
        *FIGURES,
        *[browser_site(m, c) for m, c in identification_pairs() if shown(m)],
        *POPULATION_TARGETS,
    ]


def config_hash(model, corpus):
    """Hash of everything in config that shapes a capture store (recorded in its attributes)."""
    from esn.workflow import stable_hash

    return stable_hash({"model": config["models"][model], "capture": config["capture"],
                        "corpus": config["corpora"][corpus], "seed": config["seed"]})


# --- figures ------------------------------------------------------------------------------------


def sweeps(study):
    """Whether a study runs the sweeps (set size, gain, injection, identification variants) beside main-size
    deactivation: `studies[i].sweeps`, by default only where it identifies and evaluates on one corpus."""
    return study["identify"] == study["evaluate"] if study["sweeps"] is None else study["sweeps"]


def study_sweeps(wildcards):
    return next(sweeps(s) for s in STUDIES if (s["model"], s["identify"], s["evaluate"]) ==
                (wildcards.model, wildcards.id_corpus, wildcards.eval_corpus))


def main_studies():
    """(model, identification corpus, evaluation corpus, sweeps) of the main studies (identify == evaluate)."""
    return sorted({(s["model"], s["identify"], s["evaluate"], sweeps(s)) for s in STUDIES
                   if s["identify"] == s["evaluate"]})


def organism_models():
    return [name for name, m in config["models"].items() if m["organism"]]


def intervention_table(model, id_corpus, selection, eval_corpus, kind):
    """kind: conditions | delta_recall | summary | injection (written by rule metrics)."""
    return f"results/tables/interventions/{model}/{id_corpus}/{selection}/{eval_corpus}.{kind}.csv"


def figure_selector_tables(kind):
    """Input function: one table per selector of the study in the wildcards (order of SELECTORS)."""

    def tables(wildcards):
        return [intervention_table(wildcards.model, wildcards.id_corpus, s, wildcards.eval_corpus, kind)
                for s in SELECTORS]

    return tables


def figure_transfer_keys(model):
    """(identify, evaluate, selector) of each table of the transfer matrix of a model, all its studies."""
    pairs = sorted({(s["identify"], s["evaluate"]) for s in STUDIES if s["model"] == model})
    return [(i, e, sel) for i, e in pairs for sel in SELECTORS]


def figure_transfer_tables(wildcards):
    return [intervention_table(wildcards.model, i, sel, e, "delta_recall")
            for i, e, sel in figure_transfer_keys(wildcards.model)]


def figure_knockout_table(wildcards):
    """The layer-knockout table of the evaluation corpus (none when knockout is switched off)."""
    if not config["intervention"].get("knockout", True):
        return []
    return [f"results/tables/knockout/{wildcards.model}/{wildcards.eval_corpus}.csv"]


def neuron_table(name):
    return lambda wildcards: f"results/tables/neurons/{wildcards.model}/{wildcards.id_corpus}/{name}.csv"


def organism_seed(wildcards):
    """The training seed of the organism whose checkpoint folder is `organism_dir`."""
    model = next(m for m in config["models"].values() if m["organism"] and m["path"] == wildcards.organism_dir)
    return config["seed"] if model["organism_seed"] is None else model["organism_seed"]


def organism_metrics(wildcards):
    return f"{config['models'][wildcards.model]['path']}/metrics.json"


def study_figure_kinds(with_sweeps=True):
    """The figures of a main study: those of main-size deactivation, and those of its sweeps if it runs them."""
    kinds = ["delta_recall", "specificity", "layers", "overlap"]
    if not with_sweeps:
        return kinds
    kinds.insert(2, "set_size")
    if config["intervention"]["alphas"]:
        kinds.insert(2, "strength")
    if config["selection"]["id_sizes"]:
        kinds.append("id_size")
    if config["selection"]["compare_correct_only"]:
        kinds.append("correct_only")
    if config["intervention"]["injection"] and config["intervention"]["alphas"]:
        kinds.append("injection")
    return kinds


FIGURES = (
    [f"results/figures/{m}/{i}/{e}/{kind}.{ext}" for m, i, e, sw in main_studies() if shown(m)
     for kind in study_figure_kinds(sw) for ext in ("pdf", "png")]
    + [f"results/figures/{m}/transfer.{ext}" for m in sorted({s["model"] for s in STUDIES}) if shown(m)
       for ext in ("pdf", "png")]
    + [f"results/tables/transfer/{m}.csv" for m in sorted({s["model"] for s in STUDIES})]
    + [f"results/figures/{m}/confusion.{ext}" for m in organism_models() if shown(m) for ext in ("pdf", "png")]
)


# --- population ---------------------------------------------------------------------------------

POPULATION_DIR = f"results/tables/population/{config['population'].get('model')}"
POPULATION_FIGURE = f"results/figures/population/{config['population'].get('model')}"


def population_studies():
    """(organism, seed, identify, evaluate) of every study of the population's organisms."""
    seeds = dict(zip(POPULATION, config["population"].get("seeds", [])))
    return [(s["model"], seeds[s["model"]], s["identify"], s["evaluate"]) for s in STUDIES if s["model"] in seeds]


def population_tables(kind):
    return [intervention_table(m, i, sel, e, kind) for m, _, i, e in population_studies() for sel in SELECTORS]


def population_keys():
    return [{"organism": m, "seed": seed, "identify": i, "evaluate": e, "selector": sel}
            for m, seed, i, e in population_studies() for sel in SELECTORS]


def population_knockout_keys():
    if not config["intervention"].get("knockout", True):
        return []
    return [{"organism": m, "seed": seed, "evaluate": e}
            for m, seed, e in sorted({(m, seed, e) for m, seed, _, e in population_studies()})]


POPULATION_TARGETS = (
    [f"{POPULATION_DIR}/{name}.csv" for name in ("organisms", "knockout", "heldout", "summary")]
    + [f"{POPULATION_FIGURE}.{ext}" for ext in ("pdf", "png")] if POPULATION else []
)


# --- browser ------------------------------------------------------------------------------------


def browser_site(model, corpus):
    """The site's folder; its index page is index.html inside it (a directory output, for the report)."""
    return f"results/browser/{model}/{corpus}"


def browser_table_keys(model, corpus):
    """(evaluation corpus, selector) of every metric table of the sets identified on corpus, all studies."""
    evals = sorted({s["evaluate"] for s in STUDIES if s["model"] == model and s["identify"] == corpus})
    return [(e, sel) for e in evals for sel in SELECTORS]


def browser_tables(kind):
    """Input function: the metric tables of browser_table_keys, in that order."""

    def tables(wildcards):
        return [intervention_table(wildcards.model, wildcards.corpus, sel, e, kind)
                for e, sel in browser_table_keys(wildcards.model, wildcards.corpus)]

    return tables
