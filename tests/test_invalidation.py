"""Invalidation derived from the code: a change to a module of `esn/` re-runs exactly the jobs whose script
imports it (directly, through other modules, or through a registry the job's config names) and everything
downstream of them.

The expectation is computed independently of `esn.invalidation` (which reads import statements with `ast`):
by the standard library's `modulefinder` (bytecode), scanning each rule's script as Python would import it.
"""

import modulefinder
import os
import re
import shutil
from pathlib import Path

import pytest
from test_workflow import ROOT, snakemake

from esn.models import ADAPTERS
from esn.plan import resolve

REPOSITORY = ("Snakefile", "workflow", "config", "esn", "resources/organism")  # + the shipped organism


class EsnFinder(modulefinder.ModuleFinder):
    """modulefinder restricted to the `esn` package: every other top-level import is left unresolved."""

    def find_module(self, name, path, parent=None):
        if parent is None and path is None and name != "esn":
            raise ImportError(name)
        return super().find_module(name, path, parent)


def imported_files(root: Path, script: Path) -> set[str]:
    """Repository-relative files of `esn` that running `script` imports (per modulefinder)."""
    finder = EsnFinder(path=[str(root)])
    finder.run_script(str(script))
    files = set()
    for name, module in finder.modules.items():
        if name.startswith("esn") and module.__file__:
            path = Path(module.__file__)
            files.add((path / "__init__.py" if path.is_dir() else path).relative_to(root).as_posix())
    return files


def expected_library(root: Path, script: str, wildcards: dict, config: dict) -> set[str]:
    """What a job of `script` must list: modulefinder's closure, the lazily imported adapter of its model and
    readers of its corpora (where the closure holds those registries), every module of a package that imports
    all of its modules (`pkgutil.iter_modules`), and each module's templates."""
    files = imported_files(root, root / "workflow/scripts" / script)
    lazy = []
    if "esn/models/__init__.py" in files and "model" in wildcards:
        lazy.append(ADAPTERS[config["models"][wildcards["model"]]["adapter"]].split(":")[0])
    if "esn/corpora/__init__.py" in files:
        lazy += [f"esn.corpora.{config['corpora'][wildcards[w]]['reader']}"
                 for w in ("corpus", "id_corpus", "eval_corpus") if w in wildcards]
    for module in lazy:
        file = module.replace(".", "/") + ".py"
        files |= {file} | imported_files(root, root / file)
    for package in [f for f in files if f.endswith("__init__.py") and "iter_modules" in (root / f).read_text()]:
        for module in (root / package).parent.glob("*.py"):  # a package that imports every module it has
            files |= imported_files(root, module) | {module.relative_to(root).as_posix()}
    for file in list(files):
        templates = root / "esn/templates" / Path(file).stem
        if templates.is_dir():
            files |= {p.relative_to(root).as_posix() for p in templates.rglob("*") if p.is_file()}
    return files


def rule_scripts(root: Path, rules: set[str]) -> dict[str, str]:
    """rule name -> its script, read from workflow/rules/*.smk (rules generated in a loop are named by an
    f-string: `name: f"figure_{...}"` covers every planned rule with that prefix)."""
    scripts = {}
    for smk in (root / "workflow/rules").glob("*.smk"):
        for rule, body in re.findall(r"^\s*rule ?(\w*):(.*?)(?=^\s*rule |\Z)", smk.read_text(), flags=re.M | re.S):
            script = re.search(r'script:\s*"\.\./scripts/(\w+\.py)"', body)
            if not script:
                continue
            if rule:
                scripts[rule] = script.group(1)
            else:
                prefix = re.search(r'name:\s*f"(\w+)\{', body).group(1)
                scripts.update({r: script.group(1) for r in rules if r.startswith(prefix)})
    return scripts


def planned_jobs(work: Path, dry_run_text: str) -> list[dict]:
    """Jobs of a dry-run: rule, inputs, outputs, wildcards."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_text)[1:]:
        job = {"rule": re.match(r"(?:local)?rule (\w+):", block).group(1), "input": [], "output": [], "wildcards": {}}
        for key in ("input", "output"):
            line = re.search(rf"^    {key}: (.*)$", block, flags=re.M)
            job[key] = line.group(1).split(", ") if line else []
        line = re.search(r"^    wildcards: (.*)$", block, flags=re.M)
        if line:
            job["wildcards"] = dict(kv.split("=", 1) for kv in line.group(1).split(", "))
        jobs.append(job)
    return jobs


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A copy of the repository whose default run is planned, with every output present and up to date
    (empty placeholders ordered by `snakemake --touch`): no job runs, so this costs seconds."""
    work = tmp_path_factory.mktemp("invalidation")
    for name in REPOSITORY:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
    jobs = planned_jobs(work, snakemake("-n", "--cores", "1", cwd=work, check=True).stdout)
    for job in jobs:
        for out in job["output"]:
            path = work / out
            if out.endswith(".zarr") or job["rule"] == "browser":
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    snakemake("--touch", "--cores", "1", cwd=work, check=True)
    proc = snakemake("-n", "--cores", "1", cwd=work, check=True)
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-2000:]
    return work, jobs


def _config(work: Path) -> dict:
    import yaml
    from snakemake.utils import validate

    config = yaml.safe_load((work / "config/config.yaml").read_text())
    validate(config, str(work / "workflow/schemas/config.schema.yaml"))
    return resolve(config, work).config


def test_every_job_lists_exactly_the_library_its_script_imports(scratch):
    work, jobs = scratch
    scripts, config = rule_scripts(work, {j["rule"] for j in jobs}), _config(work)
    assert {"capture", "intervene", "select", "metrics", "figure_delta_recall", "browser"} <= set(scripts)
    checked = 0
    for job in jobs:
        if job["rule"] not in scripts:
            continue
        listed = {os.path.relpath(p, work) for p in job["input"] if p.startswith(str(work / "esn"))}
        assert listed == expected_library(work, scripts[job["rule"]], job["wildcards"], config), job["rule"]
        checked += 1
    assert checked == len(jobs) - 1  # all but rule `all`
    # the case that motivated this: OOM splitting is used by capture and intervention (and the lens and steering,
    # whose tables module esn/lens.py the lens tables import too, and the cue-conflict check's answer step)
    batching = {j["rule"] for j in jobs if str(work / "esn/batching.py") in j["input"]}
    assert batching == {"capture", "intervene", "knockout", "lens", "lens_tables", "steer", "cue_conflict"}


def _downstream(jobs: list[dict], seeds: list[int]) -> set[int]:
    producers = {out: i for i, job in enumerate(jobs) for out in job["output"]}
    consumers: dict[int, set[int]] = {i: set() for i in range(len(jobs))}
    for i, job in enumerate(jobs):
        for inp in job["input"]:
            if inp in producers:
                consumers[producers[inp]].add(i)
    todo, seen = list(seeds), set(seeds)
    while todo:
        for j in consumers[todo.pop()] - seen:
            seen.add(j)
            todo.append(j)
    return seen


def test_changing_a_module_reruns_exactly_its_importers_and_what_follows(scratch):
    """For each module of esn/ the jobs that must re-run are those that import it and their downstream; the
    dry-run is done once per distinct such set (modules with the same importers are the same case for
    Snakemake), with one module of each set changed in content."""
    work, jobs = scratch
    scripts, config = rule_scripts(work, {j["rule"] for j in jobs}), _config(work)
    imports = [expected_library(work, scripts[j["rule"]], j["wildcards"], config) if j["rule"] in scripts else set()
               for j in jobs]
    cases: dict[frozenset, str] = {}
    modules = sorted(p.relative_to(work).as_posix() for p in (work / "esn").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    for module in modules:
        rerun = frozenset(_downstream(jobs, [i for i, files in enumerate(imports) if module in files]))
        cases.setdefault(rerun, module)
    assert len(cases) >= 8, cases.values()  # prepare, organism, capture, select, intervene, metrics, figures, none
    for rerun, module in cases.items():
        path = work / module
        before, stat = path.read_bytes(), path.stat()
        path.write_bytes(before + (b"\n# changed\n" if module.endswith(".py") else b"\n"))
        try:
            out = snakemake("-n", "--cores", "1", cwd=work, check=True).stdout
        finally:
            path.write_bytes(before)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        planned = {tuple(j["output"]) for j in planned_jobs(work, out)}
        expected = {tuple(jobs[i]["output"]) for i in rerun}
        assert planned == expected, (module, sorted(planned ^ expected)[:5])
