"""The cost of a config before any job: utterances, conditions, rows, store sizes, hours per job, and the jobs
that would outlive the SLURM profile's run-time limit (with the fix).

    python -m esn.cost --configfile config/paper.yaml [--device h200|h100|cpu] [--scale msp_podcast=100000 ...]
    make plan CONFIG=config/paper.yaml [DEVICE=h100] [SCALE="iemocap=5531 meld=13708"]

Reads only the config, the corpora (their prepared manifests; else the reader's listing, before preparation;
or `--scale corpus=N` to ask about a corpus not at hand), `profiles/slurm/config.yaml` for the run-time limits
and `benchmarks/costs.yaml` for the per-row costs and their provenance. Loads no model and no torch. The
conditions are counted from the grid the jobs build (`esn.grid.study_grid`); the clips per job from the shard
rule the jobs use (`esn.grid.shard_blocks`).
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from esn.grid import shard_blocks, study_grid
from esn.plan import Plan, manifest, resolve
from esn.sites import AUDIO_SITES

COSTS = "benchmarks/costs.yaml"
PROFILE = "profiles/slurm/config.yaml"
DEVICES = ("h200", "h100", "cpu")


@dataclass
class CorpusSize:
    corpus: str
    identification: int
    evaluation: int
    source: str  # manifest | listed (before preparation) | scaled | generated

    @property
    def total(self) -> int:
        return self.identification + self.evaluation


@dataclass
class Job:
    """One rule's jobs for one (model, corpus[, evaluation corpus]): what each of its `shards` jobs does."""

    rule: str
    model: str
    corpus: str
    evaluate: str
    shards: int
    clips: int           # clips of the largest shard
    conditions: int      # forwards per clip (capture: 1)
    rows: int            # (clip, condition) rows of the largest shard
    hours: float         # estimated wall time of the largest shard
    device: str          # where the model runs (a GPU kind, or cpu)
    limit_min: float | None
    store_gb: float = 0.0
    fix: str = ""

    @property
    def over(self) -> bool:
        return self.limit_min is not None and self.hours * 60 > self.limit_min


def load_config(path: str | Path) -> dict[str, Any]:
    """A config file validated against the workflow's schema (defaults filled), as Snakemake sees it."""
    from snakemake.utils import validate

    config = yaml.safe_load(Path(path).read_text())
    validate(config, str(Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"))
    return config


def runtime_limits(profile: str | Path) -> dict[str, float]:
    """Minutes per rule in a Snakemake profile (`set-resources.<rule>.runtime`, else the default's)."""
    spec = yaml.safe_load(Path(profile).read_text())
    default = _minutes(spec.get("default-resources", {}).get("runtime"))
    limits = {rule: _minutes(res.get("runtime")) for rule, res in (spec.get("set-resources") or {}).items()}
    return {"*": default, **{r: m for r, m in limits.items() if m is not None}}


def _minutes(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    for unit, factor in (("d", 1440), ("h", 60), ("m", 1), ("min", 1)):
        if text.endswith(unit) and text[:-len(unit)].replace(".", "", 1).isdigit():
            return float(text[:-len(unit)]) * factor
    return float(text)


def corpus_size(name: str, spec: dict[str, Any], root: Path, scale: dict[str, int]) -> CorpusSize:
    """Utterances per split: scaled by `--scale`, else from the prepared manifest, else counted from the reader
    (evaluation share by `evaluation_fraction`: the speaker split makes the real share differ a little)."""
    fraction = spec["evaluation_fraction"]

    def split(n: int, source: str) -> CorpusSize:
        evaluation = round(n * fraction)
        return CorpusSize(name, n - evaluation, evaluation, source)

    if name in scale:
        return split(scale[name], "scaled")
    path = root / manifest(name)
    if path.exists():
        from esn.prepare import load_manifest

        counts = load_manifest(path.parent)["split"].value_counts()
        return CorpusSize(name, int(counts.get("identification", 0)), int(counts.get("evaluation", 0)), "manifest")
    from esn.corpora import GENERATED_READERS, get_reader

    read = get_reader(spec["reader"])
    options = spec.get("options") or {}
    if spec["reader"] in GENERATED_READERS:  # generated: counted from its options, nothing synthesised
        defaults = {k: p.default for k, p in inspect.signature(read).parameters.items()}
        per = {k: options.get(k, defaults[k]) for k in ("speakers", "per_speaker_emotion")}
        pairs = len(spec["classes"]) if options.get("content") == "conflict" else 1  # every (lexical, prosodic) pair
        return split(per["speakers"] * per["per_speaker_emotion"] * len(spec["classes"]) * pairs, "generated")
    classes = set(spec["classes"])
    n = sum(1 for c in read(Path(spec["path"]), **options) if c.problem is None and c.emotion in classes)
    return split(n, "listed (before preparation)")


def model_shape(plan: Plan, model: str, costs: dict[str, Any]) -> tuple[int, int]:
    """(decoder layers, MLP neurons per layer): the organism's from the config, a checkpoint's from costs.yaml."""
    entry = plan.models[model]
    if entry["organism"]:
        return plan.config["organism"]["layers"], plan.config["organism"]["mlp"]
    shape = costs["shapes"][entry["adapter"]]
    return shape["layers"], shape["neurons"]


def study_conditions(plan: Plan, study: dict[str, Any]) -> int:
    """Forwards per evaluation clip of a study's intervention job: the unmodified pass plus every selector's
    grid (the job shares the unmodified pass across selectors)."""
    cfg, corpora = plan.config["intervention"], plan.config["corpora"]
    labels = corpora[study["evaluate"]]["classes"]
    targets = [e for e in corpora[study["identify"]]["classes"] if e in labels]
    grid = study_grid(targets, labels, plan.variants(), cfg["fractions"], cfg["fraction"], cfg["alphas"],
                      list(range(cfg["random_draws"])), sweeps=plan.sweeps(study), injection=cfg["injection"],
                      unswept_draws=cfg["unswept_draws"])
    return 1 + len(plan.selectors) * len(grid)


def _largest_shard(clips: int, block_size: int, shards: int) -> int:
    """Clips of the largest shard (`esn.grid.shard_blocks`)."""
    return max((sum(len(b) for b in shard_blocks(clips, block_size, k, shards)) for k in range(shards)), default=0)


def cost_plan(plan: Plan, device: str = "h200", scale: dict[str, int] | None = None,
              costs: dict[str, Any] | None = None, limits: dict[str, float] | None = None
              ) -> tuple[list[CorpusSize], list[Job]]:
    """The corpora's sizes and every job family of the plan with its estimated cost on `device`."""
    root = plan.root
    costs = costs or yaml.safe_load((root / COSTS).read_text())
    limits = limits if limits is not None else runtime_limits(root / PROFILE)
    sizes, missing = {}, []
    for c, spec in plan.config["corpora"].items():
        try:
            sizes[c] = corpus_size(c, spec, root, scale or {})
        except OSError as err:  # not prepared, and its folder cannot be listed here
            missing.append(f"{c} ({err})")
    if missing:
        raise ValueError(f"not prepared and not readable here: {'; '.join(missing)}. Give their sizes instead: "
                         f"--scale <corpus>=<utterances> (make plan SCALE=\"<corpus>=<utterances> ...\")")
    margin, block = costs["margin"], plan.config["intervention"]["block_size"]
    per_emotion = plan.config["intervention"].get("max_per_emotion")

    def evaluated(corpus: str) -> int:
        """Evaluation clips a model job scores (`esn.prepare.evaluation_clips`; balanced classes assumed)."""
        n = sizes[corpus].evaluation
        return n if per_emotion is None else min(n, per_emotion * len(plan.config["corpora"][corpus]["classes"]))
    cap = plan.config["capture"]
    jobs: list[Job] = []

    def row_seconds(model: str, rates: dict[str, Any]) -> float:
        """A (clip, condition) row's cost: at an audio-tower site the tower reruns per condition, priced where
        measured (`audio_site_row_s`), else at the decoder's row (a lower bound)."""
        if plan.models[model].get("site") in AUDIO_SITES:
            return rates.get("audio_site_row_s", rates["intervene_row_s"])
        return rates["intervene_row_s"]

    def runs_on(model: str) -> tuple[str, dict[str, Any]]:
        entry = plan.models[model]
        if entry["organism"]:
            return "cpu", costs["organism"]
        on = device if entry["gpu"] else "cpu"
        return on, costs["devices"][on]

    def job(rule: str, model: str, corpus: str, evaluate: str, shards: int, clips: Callable[[int], int],
            conditions: int, per_row_s: float, fix: str, store_gb: float = 0.0) -> None:
        """`clips(n)`: the clips of the largest of n shards. A job whose estimate × margin is past the limit
        gets as its fix the fewest shards that bring it under (none if even one clip per job would not)."""
        on, rates = runs_on(model)
        limit = limits.get(rule, limits.get("*"))

        def hours(n: int) -> float:
            return (clips(n) * conditions * per_row_s + rates["job_overhead_s"]) / 3600

        need = shards
        while limit is not None and hours(need) * margin * 60 > limit and clips(need) > 1:
            need += 1
        jobs.append(Job(rule, model, corpus, evaluate, shards, clips(shards), conditions, clips(shards) * conditions,
                        hours(shards), on, limit, store_gb, fix.format(n=need) if need != shards else ""))

    for model, corpus in plan.identification_pairs():
        layers, neurons = model_shape(plan, model, costs)
        on, rates = runs_on(model)
        n, total = cap["shards"], sizes[corpus].total
        per_clip = rates["capture_clip_s"] * (costs["attribution_factor"] if cap["attribution"] else 1.0)
        itemsize = {"float16": 2, "float32": 4}[cap["dtype"]]
        raw = layers * neurons * (2 * len(cap["positions"]) * itemsize + (4 if cap["attribution"] else 0))
        per_utt = raw * costs["store_on_disk"][cap["dtype"]]  # mean + fraction per group, float32 attribution
        job("capture", model, corpus, "", n, lambda k, t=total: math.ceil(t / k), 1, per_clip, "capture.shards: {n}",
            store_gb=sizes[corpus].total * per_utt / 1e9)
    for i, study in enumerate(plan.studies):
        model, evaluate = study["model"], study["evaluate"]
        on, rates = runs_on(model)
        n = plan.study_shards(model, study["identify"], evaluate)
        clips = partial(_largest_shard, evaluated(evaluate), block)
        job("intervene", model, study["identify"], evaluate, n, clips, study_conditions(plan, study),
            row_seconds(model, rates), f"studies[{i}].shards: {{n}}")
    if plan.knockout():
        for model, evaluate in sorted({(s["model"], s["evaluate"]) for s in plan.studies}):
            on, rates = runs_on(model)
            layers, _ = model_shape(plan, model, costs)
            n = plan.knockout_shards()
            chosen = plan.config["intervention"]["knockout_layers"]
            clips = partial(_largest_shard, evaluated(evaluate), block)
            job("knockout", model, "", evaluate, n, clips, 1 + (len(chosen) if chosen else layers),
                row_seconds(model, rates), "intervention.shards: {n}")
    return list(sizes.values()), jobs


def report(sizes: list[CorpusSize], jobs: list[Job], device: str, costs: dict[str, Any]) -> str:
    """The plan as text: corpora, jobs per rule (largest shard), totals, and a warning per job past its limit."""
    out = [f"Cost plan on {device} ({costs['devices'][device]['source']})", "",
           f"{'corpus':<14}{'identification':>15}{'evaluation':>12}  source"]
    out += [f"{s.corpus:<14}{s.identification:>15,}{s.evaluation:>12,}  {s.source}" for s in sizes]
    out += ["", f"{'rule':<10}{'model':<20}{'corpus':<26}{'jobs':>5}{'clips/job':>10}{'cond.':>7}{'rows/job':>13}"
            f"{'h/job':>8}{'limit h':>8}{'store GB':>10}"]
    for j in jobs:
        where = j.corpus if j.rule == "capture" else (j.evaluate if j.rule == "knockout"
                                                      else f"{j.corpus}->{j.evaluate}")
        limit = "" if j.limit_min is None else f"{j.limit_min / 60:.1f}"
        store = f"{j.store_gb:>10.1f}" if j.rule == "capture" else " " * 10
        out.append(f"{j.rule:<10}{j.model:<20}{where:<26}{j.shards:>5}{j.clips:>10,}{j.conditions:>7,}{j.rows:>13,}"
                   f"{j.hours:>8.2f}{limit:>8}{store}" + ("  OVER" if j.over else ""))
    gpu = sum(j.hours * j.shards for j in jobs if j.device != "cpu")
    cpu = sum(j.hours * j.shards for j in jobs if j.device == "cpu")
    rows = sum(j.rows * j.shards for j in jobs if j.rule != "capture")
    out += ["", f"jobs: {sum(j.shards for j in jobs)} model jobs; intervention and knockout rows (upper bound: "
            f"largest shard x shards): {rows:,}",
            f"total: {gpu:,.1f} GPU-hours ({device}), {cpu:,.1f} CPU-hours; activation stores "
            f"{sum(j.store_gb for j in jobs):,.1f} GB on disk (Blosc zstd-3, measured ratio), "
            f"intervention tables ~{rows * costs['table_bytes_per_row'] / 1e9:,.1f} GB"]
    warnings = [j for j in jobs if j.fix]
    for j in warnings:
        out.append(f"WARNING: {j.rule} {j.model} {j.corpus or j.evaluate}"
                   f"{'->' + j.evaluate if j.rule == 'intervene' else ''}: {j.hours:.1f} h per job x margin "
                   f"{costs['margin']} exceeds the profile's {j.limit_min / 60:.1f} h"
                   f" -> set {j.fix}")
    if not warnings:
        out.append(f"every job fits its run-time limit with margin {costs['margin']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esn.cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--device", choices=DEVICES, default="h200", help="where the GPU models run")
    parser.add_argument("--scale", action="append", default=[], metavar="CORPUS=N",
                        help="count CORPUS as N utterances (e.g. its published size), whatever is on disk")
    parser.add_argument("--root", default=".", help="the repository (resources/, benchmarks/, profiles/)")
    parser.add_argument("--profile", default=None, help=f"Snakemake profile with the limits (default {PROFILE})")
    args = parser.parse_args(argv)
    scale = {k: int(float(v)) for k, v in (s.split("=", 1) for s in args.scale)}
    root = Path(args.root).resolve()
    config = load_config(args.configfile)
    for name, model in config["models"].items():  # a placeholder the user fills in before a run, not for a plan
        if model["trust_remote_code"] and not model["revision"]:
            model["revision"] = "0" * 40
            print(f"note: models.{name}.revision is unset; a run refuses it until you pin the commit you reviewed",
                  file=sys.stderr)
    plan = resolve(config, root)
    costs = yaml.safe_load((root / COSTS).read_text())
    limits = runtime_limits(args.profile or root / PROFILE)
    try:
        sizes, jobs = cost_plan(plan, args.device, scale, costs, limits)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(sizes, jobs, args.device, costs))
    return 0


__all__ = ["CorpusSize", "Job", "cost_plan", "corpus_size", "load_config", "report", "runtime_limits",
           "study_conditions"]

if __name__ == "__main__":
    sys.exit(main())
