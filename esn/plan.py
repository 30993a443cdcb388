"""The resolved study: what a config asks the workflow to do, learned without running Snakemake.

`resolve(config)` takes a schema-validated config (defaults filled) and returns a frozen `Plan`: the population
grown into one model entry per organism, the organism's defaults applied, the cross-references the schema
cannot express checked (failing with the key named), and from there every target path, every job's input
paths and every job's library inputs. `workflow/rules/common.smk` only turns wildcards into calls of the plan.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esn.corpora import OFFICIAL_SPLIT_READERS
from esn.figures.registry import FIGURES, study_kinds
from esn.invalidation import stage_library
from esn.tables import ALL, CORRECT_ONLY, variant_name
from esn.workflow import COMMIT_HASH, stable_hash

#: Wildcards that name a corpus, a model: the per-job lazy imports (reader, adapter) come from their values.
CORPUS_WILDCARDS = ("corpus", "id_corpus", "eval_corpus")


def canonical(obj: Any) -> Any:
    """Config values with dict keys sorted: reordering keys in a config file must not look like a change
    of params to Snakemake (which would re-run every job downstream)."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(x) for x in obj]
    return obj


def grow_population(config: dict) -> list[str]:
    """`population`: the organism entry `population.model` becomes one entry per seed (`<model>_s<seed>`, its
    checkpoint at `<path>_s<seed>`), each with every study of the entry; organisms beyond the first run no
    sweeps. Changes `config` in place; returns the members' names (none without a population)."""
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
    cue = config.get("cue_conflict") or {}
    if name in cue.get("models", []):  # the cue-conflict check runs on every organism of the population
        cue["models"] = [m for model in cue["models"] for m in (members if model == name else [model])]
    return members


def check_and_complete(config: dict) -> None:
    """Cross-references the JSON schema cannot express, failing before any job with the key named; fills the
    organism's system prompt ("": trained without one) and puts the main set size among the swept ones."""
    for i, study in enumerate(config["studies"]):
        for key, table in (("model", "models"), ("identify", "corpora"), ("evaluate", "corpora")):
            if study[key] not in config[table]:
                raise ValueError(f"config studies[{i}].{key}: {study[key]!r} is not a key of {table} "
                                 f"(known: {sorted(config[table])})")
    for name, corpus in config["corpora"].items():
        if corpus["split"] == "official" and corpus["reader"] not in OFFICIAL_SPLIT_READERS:
            raise ValueError(f"config corpora.{name}.split: reader {corpus['reader']!r} knows no official split of its "
                             f"corpus (readers that do: {', '.join(sorted(OFFICIAL_SPLIT_READERS))}); "
                             "use split: speaker_hash")
    for name, model in config["models"].items():
        if model["trust_remote_code"] and not COMMIT_HASH.fullmatch(model["revision"] or ""):
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
    trained: dict[str, tuple[str, dict]] = {}
    for name, model in config["models"].items():  # entries on one organism checkpoint (e.g. one per site): one training
        if model["organism"]:
            shapes = {k: model[k] for k in ("adapter", "prompt", "organism_seed", "system_prompt")}
            other, other_shapes = trained.setdefault(model["path"], (name, shapes))
            if other_shapes != shapes:
                raise ValueError(f"config models.{name}: an organism entry on {model['path']!r} like models.{other}, "
                                 f"but with another {', '.join(k for k in shapes if shapes[k] != other_shapes[k])}: "
                                 f"entries on one organism must agree on what trains it")
    cue = config.get("cue_conflict") or {}
    if cue.get("corpus") is not None:
        if cue["corpus"] not in config["corpora"]:
            raise ValueError(f"config cue_conflict.corpus: {cue['corpus']!r} is not a key of corpora "
                             f"(known: {sorted(config['corpora'])})")
        if (config["corpora"][cue["corpus"]].get("options") or {}).get("content") != "conflict":
            raise ValueError(f"config cue_conflict.corpus: corpora.{cue['corpus']} records no lexical emotion; give it "
                             "reader: spoken with options: {content: conflict}")
        for m in cue.get("models", []):
            if m not in config["models"]:
                raise ValueError(f"config cue_conflict.models: {m!r} is not a key of models "
                                 f"(known: {sorted(config['models'])})")
    if config["intervention"]["fraction"] not in config["intervention"]["fractions"]:
        config["intervention"]["fractions"] = sorted(set(config["intervention"]["fractions"]) |
                                                     {config["intervention"]["fraction"]})


def resolve(config: Mapping[str, Any], root: str | Path = ".") -> Plan:
    """The plan of a validated config (not changed); `root` is the repository whose `esn/` the jobs import."""
    resolved = copy.deepcopy(dict(config))
    population = grow_population(resolved)
    check_and_complete(resolved)
    return Plan(resolved, tuple(population), Path(root))


def manifest(corpus: str) -> str:
    return f"resources/corpora/{corpus}/manifest.parquet"


def intervention_table(model: str, id_corpus: str, selection: str, eval_corpus: str, kind: str) -> str:
    """kind: conditions | delta_recall | summary | injection (written by rule metrics)."""
    return f"results/tables/interventions/{model}/{id_corpus}/{selection}/{eval_corpus}.{kind}.csv"


def neuron_table(model: str, id_corpus: str, name: str) -> str:
    return f"results/tables/neurons/{model}/{id_corpus}/{name}.csv"


def browser_site(model: str, corpus: str) -> str:
    """The site's folder; its index page is index.html inside it (a directory output, for the report)."""
    return f"results/browser/{model}/{corpus}"


@dataclass(frozen=True)
class Plan:
    """A resolved config and everything the workflow derives from it. Treat `config` as read-only."""

    config: dict[str, Any]
    population: tuple[str, ...]
    root: Path

    # --- the study --------------------------------------------------------------------------------------

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        return self.config["models"]

    @property
    def studies(self) -> list[dict[str, Any]]:
        return self.config["studies"]

    @property
    def selectors(self) -> list[str]:
        return self.config["selection"]["selectors"]

    def sweeps(self, study: Mapping[str, Any]) -> bool:
        """Whether a study runs the sweeps (set size, gain, injection, identification variants) beside main-size
        deactivation: `studies[i].sweeps`, by default only where it identifies and evaluates on one corpus."""
        return study["identify"] == study["evaluate"] if study["sweeps"] is None else study["sweeps"]

    def study_sweeps(self, model: str, id_corpus: str, eval_corpus: str) -> bool:
        return next(self.sweeps(s) for s in self.studies
                    if (s["model"], s["identify"], s["evaluate"]) == (model, id_corpus, eval_corpus))

    def variants(self) -> list[str]:
        """Selection variants: the full identification set, the identification-size sweep subsamples, and the
        correct-only identification set (when `selection.compare_correct_only`)."""
        sel = self.config["selection"]
        correct = [CORRECT_ONLY] if sel["compare_correct_only"] else []
        return [ALL] + [variant_name(n, s) for n in sel["id_sizes"] for s in sel["id_seeds"]] + correct

    def identification_pairs(self) -> list[tuple[str, str]]:
        return sorted({(s["model"], s["identify"]) for s in self.studies})

    def main_studies(self) -> list[tuple[str, str, str, bool]]:
        """(model, identification corpus, evaluation corpus, sweeps) of the main studies (identify == evaluate)."""
        return sorted({(s["model"], s["identify"], s["evaluate"], self.sweeps(s)) for s in self.studies
                       if s["identify"] == s["evaluate"]})

    def organism_models(self) -> list[str]:
        """The organism entries, one per checkpoint (the first entry on a path: another entry on the same
        organism, e.g. its audio-tower site, shares its training and its training figures)."""
        first = {}
        for name, m in self.models.items():
            if m["organism"]:
                first.setdefault(m["path"], name)
        return list(first.values())

    def has_figures(self, model: str) -> bool:
        """Whether a model gets per-study figures and a browser: every model but a population's later organisms
        (their tables feed the population's tables and figure)."""
        return model not in self.population[1:]

    def knockout(self) -> bool:
        return self.config["intervention"].get("knockout", True)

    def config_hash(self, model: str, corpus: str) -> str:
        """Hash of everything in config that shapes a capture store (recorded in its attributes)."""
        return stable_hash({"model": self.models[model], "capture": self.config["capture"],
                            "corpus": self.config["corpora"][corpus], "seed": self.config["seed"]})

    def organism_seed(self, organism_dir: str) -> int:
        """The training seed of the organism whose checkpoint folder is `organism_dir`."""
        model = next(m for m in self.models.values() if m["organism"] and m["path"] == organism_dir)
        return self.config["seed"] if model["organism_seed"] is None else model["organism_seed"]

    # --- paths ------------------------------------------------------------------------------------------

    def model_files(self, model: str) -> list[str]:
        """The organism's checkpoint is built by the workflow; real checkpoints come from their path or hub."""
        entry = self.models[model]
        return [f"{entry['path']}/model.safetensors"] if entry["organism"] else []

    def shard_stores(self, model: str, corpus: str) -> list[str]:
        n = self.config["capture"]["shards"]
        return [f"results/activations/{model}/{corpus}.shards/{k}-of-{n}.zarr" for k in range(n)]

    def study_shards(self, model: str, id_corpus: str, eval_corpus: str) -> int:
        """Independent jobs of a study's intervention: `studies[i].shards`, else `intervention.shards`."""
        study = next(s for s in self.studies if (s["model"], s["identify"], s["evaluate"]) == (model, id_corpus,
                                                                                               eval_corpus))
        return study.get("shards") or self.config["intervention"]["shards"]

    def knockout_shards(self) -> int:
        return self.config["intervention"]["shards"]

    def intervention_shards(self, model: str, id_corpus: str, eval_corpus: str) -> list[str]:
        """The shard tables of a study, selector-major (each selector's n shards in shard order)."""
        n = self.study_shards(model, id_corpus, eval_corpus)
        return [f"results/interventions/{model}/{id_corpus}/{eval_corpus}.shards/{k}-of-{n}/{sel}.parquet"
                for sel in self.selectors for k in range(n)]

    def knockout_shard_tables(self, model: str, eval_corpus: str) -> list[str]:
        n = self.knockout_shards()
        return [f"results/interventions/{model}/knockout/{eval_corpus}.shards/{k}-of-{n}.parquet" for k in range(n)]

    def intervention_settings(self) -> dict[str, Any]:
        """`intervention` as the jobs' params: without the shard count, which changes the jobs, not their rows."""
        return canonical({k: v for k, v in self.config["intervention"].items() if k != "shards"})

    def selections(self, model: str, id_corpus: str) -> list[str]:
        return [f"results/neurons/{model}/{id_corpus}/{s}.zarr" for s in self.selectors]

    def intervention_tables(self) -> list[str]:
        return [f"results/interventions/{s['model']}/{s['identify']}/{sel}/{s['evaluate']}.parquet"
                for s in self.studies for sel in self.selectors]

    def metric_tables(self) -> list[str]:
        return [intervention_table(s["model"], s["identify"], sel, s["evaluate"], "conditions")
                for s in self.studies for sel in self.selectors]

    def knockout_tables(self) -> list[str]:
        return sorted({f"results/tables/knockout/{s['model']}/{s['evaluate']}.csv" for s in self.studies})

    def study_tables(self, model: str, id_corpus: str, eval_corpus: str, kind: str) -> list[str]:
        """One metric table per selector of a study (order of `selectors`)."""
        return [intervention_table(model, id_corpus, s, eval_corpus, kind) for s in self.selectors]

    def transfer_keys(self, model: str) -> list[tuple[str, str, str]]:
        """(identify, evaluate, selector) of each table of the transfer matrix of a model, all its studies."""
        pairs = sorted({(s["identify"], s["evaluate"]) for s in self.studies if s["model"] == model})
        return [(i, e, sel) for i, e in pairs for sel in self.selectors]

    def transfer_tables(self, model: str) -> list[str]:
        return [intervention_table(model, i, sel, e, "delta_recall") for i, e, sel in self.transfer_keys(model)]

    def knockout_table(self, model: str, eval_corpus: str) -> list[str]:
        """The layer-knockout table of the evaluation corpus (none when knockout is switched off)."""
        return [f"results/tables/knockout/{model}/{eval_corpus}.csv"] if self.knockout() else []

    def browser_table_keys(self, model: str, corpus: str) -> list[tuple[str, str]]:
        """(evaluation corpus, selector) of every metric table of the sets identified on corpus, all studies."""
        evals = sorted({s["evaluate"] for s in self.studies if s["model"] == model and s["identify"] == corpus})
        return [(e, sel) for e in evals for sel in self.selectors]

    def browser_tables(self, model: str, corpus: str, kind: str) -> list[str]:
        return [intervention_table(model, corpus, sel, e, kind) for e, sel in self.browser_table_keys(model, corpus)]

    def browser_steering_corpora(self, model: str, corpus: str) -> list[str]:
        """Evaluation corpora of the sets identified on corpus whose study steers (its figures include the
        steering figure: a main study with sweeps, steering enabled, a gain grid)."""
        return sorted(e for m, i, e, sw in self.main_studies()
                      if m == model and i == corpus and self.has_figures(m) and "steering" in self.figure_kinds(sw))

    def browser_steering(self, model: str, corpus: str, kind: str) -> list[str]:
        """The steering tables of `kind` (delta_recall | conditions | vectors) of `browser_steering_corpora`."""
        return [f"results/tables/steering/{model}/{corpus}/{e}.vectors.csv" if kind == "vectors"
                else intervention_table(model, corpus, "steering", e, kind)
                for e in self.browser_steering_corpora(model, corpus)]

    # --- figures ----------------------------------------------------------------------------------------

    def figure_kinds(self, with_sweeps: bool = True) -> list[str]:
        """The figures of a main study (esn/figures/registry.py): those of main-size deactivation, and those of
        its sweeps if it runs them, as far as the config asks for what they show."""
        return study_kinds(self.config, with_sweeps)

    def figures(self) -> list[str]:
        models = sorted({s["model"] for s in self.studies})
        per_model = [k for k, f in FIGURES.items() if f.scope == "model"]
        per_organism = [k for k, f in FIGURES.items() if f.scope == "organism"]
        return ([f"results/figures/{m}/{i}/{e}/{kind}.{ext}" for m, i, e, sw in self.main_studies()
                 if self.has_figures(m) for kind in self.figure_kinds(sw) for ext in ("pdf", "png")]
                + [f"results/figures/{m}/{kind}.{ext}" for m in models if self.has_figures(m) for kind in per_model
                   for ext in ("pdf", "png")]
                + [f"results/tables/transfer/{m}.csv" for m in models]
                + [f"results/figures/{m}/{kind}.{ext}" for m in self.organism_models() if self.has_figures(m)
                   for kind in per_organism for ext in ("pdf", "png")]
                + [f"results/figures/{m}/{kind}/{c}.{ext}" for m, c in self.cue_conflict_pairs() if self.has_figures(m)
                   for kind, f in FIGURES.items() if f.scope == "cue_conflict" for ext in ("pdf", "png")])

    # --- cue conflict -----------------------------------------------------------------------------------

    def cue_conflict_pairs(self) -> list[tuple[str, str]]:
        """(model, corpus) of the cue-conflict check (`cue_conflict`: which cue each model's answers follow)."""
        block = self.config.get("cue_conflict") or {}
        return [(m, block["corpus"]) for m in block.get("models", [])] if block.get("corpus") else []

    def cue_conflict_tables(self) -> list[str]:
        return [f"results/tables/cue_conflict/{m}/{c}.{name}" for m, c in self.cue_conflict_pairs()
                for name in ("answers.parquet", "summary.csv")]

    # --- population -------------------------------------------------------------------------------------

    @property
    def population_dir(self) -> str:
        return f"results/tables/population/{self.config['population'].get('model')}"

    @property
    def population_figure(self) -> str:
        return f"results/figures/population/{self.config['population'].get('model')}"

    def population_studies(self) -> list[tuple[str, int, str, str]]:
        """(organism, seed, identify, evaluate) of every study of the population's organisms."""
        seeds = dict(zip(self.population, self.config["population"].get("seeds", [])))
        return [(s["model"], seeds[s["model"]], s["identify"], s["evaluate"]) for s in self.studies
                if s["model"] in seeds]

    def population_tables(self, kind: str) -> list[str]:
        return [intervention_table(m, i, sel, e, kind) for m, _, i, e in self.population_studies()
                for sel in self.selectors]

    def population_keys(self) -> list[dict[str, Any]]:
        return [{"organism": m, "seed": seed, "identify": i, "evaluate": e, "selector": sel}
                for m, seed, i, e in self.population_studies() for sel in self.selectors]

    def population_knockout_keys(self) -> list[dict[str, Any]]:
        if not self.knockout():
            return []
        return [{"organism": m, "seed": seed, "evaluate": e}
                for m, seed, e in sorted({(m, seed, e) for m, seed, _, e in self.population_studies()})]

    def population_targets(self) -> list[str]:
        if not self.population:
            return []
        return ([f"{self.population_dir}/{name}.csv" for name in ("organisms", "knockout", "heldout", "summary")]
                + [f"{self.population_figure}.{ext}" for ext in ("pdf", "png")])

    # --- the run ----------------------------------------------------------------------------------------

    def targets(self) -> list[str]:
        return [
            *[manifest(c) for c in self.config["corpora"]],
            *[f"{self.models[m]['path']}/metrics.json" for m in self.organism_models()],
            *self.metric_tables(),
            *self.knockout_tables(),
            *self.figures(),
            *[browser_site(m, c) for m, c in self.identification_pairs() if self.has_figures(m)],
            *self.population_targets(),
            *self.cue_conflict_tables(),
        ]

    def library(self, script: str, wildcards: Mapping[str, str]) -> list[str]:
        """The library files (absolute) whose change must re-run a job of `script` (a file of workflow/scripts/):
        its import closure in `esn/`, with the adapter of the job's model and the readers of its corpora."""
        model = self.models.get(wildcards["model"]) if "model" in wildcards else None
        readers = [self.config["corpora"][wildcards[w]]["reader"] for w in CORPUS_WILDCARDS if w in wildcards]
        files = stage_library(self.root, f"workflow/scripts/{script}", model["adapter"] if model else None, readers)
        return [str(self.root / f) for f in files]
