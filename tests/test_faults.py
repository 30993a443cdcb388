"""Faults and determinism of the whole workflow, on the reduced default (tests/configs/reduced.yaml).

Two fresh runs give identical manifests, organisms, neuron sets and intervention tables; a SIGKILLed
intervention job, re-run, gives the table of an uninterrupted run; a changed model revision, activation
site, position group or corpus manifest re-runs the stores built from the old one.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from safetensors.numpy import load_file
from test_science import _fresh_copy
from test_workflow import snakemake

pytestmark = pytest.mark.slow

CONFIG = "tests/configs/reduced.yaml"
TABLE = "results/interventions/organism/synthetic/mad/synthetic.parquet"
TARGETS = [TABLE, "results/interventions/organism/synthetic/attribution/synthetic.parquet",
           "results/tables/knockout/organism/synthetic.csv"]


def _run(work: Path, *extra: str) -> subprocess.CompletedProcess:
    return snakemake(*TARGETS, "--cores", "2", "--configfile", str(work / CONFIG), *extra, cwd=work, check=True)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    runs = []
    for name in ("first", "second"):
        work = _fresh_copy(tmp_path_factory.mktemp(name) / "repo")
        _run(work)
        runs.append(work)
    return runs[0], runs[1]


def test_two_fresh_runs_are_identical(two_runs):
    a, b = two_runs
    ma = pd.read_parquet(a / "resources/corpora/synthetic/manifest.parquet").drop(columns="source")
    mb = pd.read_parquet(b / "resources/corpora/synthetic/manifest.parquet").drop(columns="source")
    pd.testing.assert_frame_equal(ma, mb)
    wa = load_file(a / "resources/models/organism/model.safetensors")
    wb = load_file(b / "resources/models/organism/model.safetensors")
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    for sel in ("mad", "attribution"):
        sa = xr.open_zarr(a / f"results/neurons/organism/synthetic/{sel}.zarr", consolidated=False)
        sb = xr.open_zarr(b / f"results/neurons/organism/synthetic/{sel}.zarr", consolidated=False)
        for v in ("rank", "random_order", "score"):
            np.testing.assert_array_equal(sa[v].values, sb[v].values)
        assert sa.attrs["seed"] == sb.attrs["seed"] == yaml.safe_load((a / CONFIG).read_text())["seed"]
    for t in TARGETS:
        if t.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(a / t), pd.read_parquet(b / t))
        else:
            assert (a / t).read_bytes() == (b / t).read_bytes()


def test_sigkilled_intervention_job_reruns_to_the_same_table(two_runs):
    work = two_runs[1]
    reference = pd.read_parquet(work / TABLE)
    os.remove(work / TABLE)
    cmd = [str(Path(sys.executable).with_name("snakemake")), TABLE, "--cores", "2", "--configfile", str(work / CONFIG)]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = work / "logs/intervene/organism/synthetic/mad/synthetic.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and "conditions x" in log.read_text()):
        time.sleep(0.1)
    time.sleep(random.Random(0).uniform(0.2, 1.5))  # somewhere inside the job
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / TABLE).exists() or (work / ".snakemake" / "incomplete").exists()
    _run(work, "--rerun-incomplete")
    pd.testing.assert_frame_equal(pd.read_parquet(work / TABLE), reference)


@pytest.mark.parametrize("change", ["revision", "site", "positions", "manifest"])
def test_changed_provenance_reruns_the_store(two_runs, tmp_path, change):
    work = two_runs[0]
    cfg = yaml.safe_load((work / CONFIG).read_text())
    if change == "revision":
        cfg["models"]["organism"]["revision"] = "0123abcd"
    elif change == "site":
        cfg["models"]["organism"]["site"] = "down_proj_input"
    elif change == "positions":
        cfg["capture"]["positions"] = ["audio"]
    else:
        cfg["corpora"]["synthetic"]["evaluation_fraction"] = 0.4
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(*TARGETS, "-n", "--configfile", str(path), cwd=work, check=True)
    out = proc.stdout + proc.stderr
    stats = out.split("Job stats:")[1].split("\n\n")[0]
    assert "capture" in stats and "merge_shards" in stats, out[-3000:]
    unchanged = snakemake(*TARGETS, "-n", "--configfile", str(work / CONFIG), cwd=work, check=True)
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr
