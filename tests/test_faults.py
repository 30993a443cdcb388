"""Faults and determinism of the whole workflow, on the reduced default (tests/configs/reduced.yaml).

Two fresh runs give identical manifests, organisms, neuron sets and intervention tables; a whole-process-group
SIGKILL inside an intervention job or between two committed capture blocks, recovered as the README says
(`--unlock`, then `--rerun-incomplete`), gives the outputs of an uninterrupted run; a changed model revision,
activation site, position group or corpus manifest re-runs the stores built from the old one.

The kills never race the jobs: the process group is frozen (SIGSTOP) at the kill point, the state is read
on the frozen group and asserted to be mid-job, then the group is SIGKILLed.
"""

import os
import shutil
import signal
import subprocess
import time
from base64 import urlsafe_b64encode
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from safetensors.numpy import load_file
from test_science import _fresh_copy
from test_workflow import SNAKEMAKE, snakemake

from esn import store

pytestmark = pytest.mark.slow

CONFIG = "tests/configs/reduced.yaml"
TABLE = "results/interventions/organism/synthetic/mad/synthetic.parquet"
#: the intervention job's own output (one shard; merged into TABLE by merge_interventions)
SHARD_TABLE = "results/interventions/organism/synthetic/synthetic.shards/0-of-1/mad.parquet"
TARGETS = [TABLE, "results/interventions/organism/synthetic/attribution/synthetic.parquet",
           "results/tables/knockout/organism/synthetic.csv"]


def _run(work: Path, *extra: str) -> subprocess.CompletedProcess:
    return snakemake(*TARGETS, "--cores", "2", "--configfile", str(work / CONFIG), *extra, cwd=work, check=True)


#: `ESN_FAULT_REPEAT=5 pytest tests/test_faults.py -k sigkill` kills (and recovers) each job 5 times in a row
REPEAT = range(int(os.environ.get("ESN_FAULT_REPEAT", "1")))


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> Path:
    """A finished run of the reduced default in a fresh copy (the kill tests kill jobs of it and restore it)."""
    work = _fresh_copy(tmp_path_factory.mktemp("second") / "repo")
    _run(work)
    return work


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, one_run) -> tuple[Path, Path]:
    work = _fresh_copy(tmp_path_factory.mktemp("first") / "repo")
    _run(work)
    return work, one_run


def test_two_fresh_runs_are_identical(two_runs):
    a, b = two_runs
    ma = pd.read_parquet(a / "resources/corpora/synthetic/manifest.parquet").drop(columns="source")
    mb = pd.read_parquet(b / "resources/corpora/synthetic/manifest.parquet").drop(columns="source")
    pd.testing.assert_frame_equal(ma, mb)
    wa = load_file(a / "resources/models/organism/model.safetensors")
    wb = load_file(b / "resources/models/organism/model.safetensors")
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    for sel in ("mad", "attribution"):
        sa = store.open_dataset(a / f"results/neurons/organism/synthetic/{sel}.zarr")
        sb = store.open_dataset(b / f"results/neurons/organism/synthetic/{sel}.zarr")
        for v in ("rank", "random_order", "score"):
            np.testing.assert_array_equal(sa[v].values, sb[v].values)
        assert sa.attrs["seed"] == sb.attrs["seed"] == yaml.safe_load((a / CONFIG).read_text())["seed"]
    for t in TARGETS:
        if t.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(a / t), pd.read_parquet(b / t))
        else:
            assert (a / t).read_bytes() == (b / t).read_bytes()


def _incomplete_marker(work: Path, output: str) -> Path:
    """Snakemake's record that a job producing `output` started and has not finished."""
    return work / ".snakemake" / "incomplete" / urlsafe_b64encode(output.encode()).decode()


def _start(work: Path, *targets: str) -> subprocess.Popen:
    """Snakemake in its own process group, as a terminal would run it."""
    cmd = [SNAKEMAKE, *targets, "--cores", "2", "--configfile", str(work / CONFIG)]
    return subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _freeze_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 900) -> None:
    """Wait until `ready()`, then SIGSTOP the whole process group: the state the kill will leave can then be
    inspected exactly, with no race against the job. Fails (never passes vacuously) if the run ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"snakemake ended before the kill point ({what})"
        assert time.monotonic() < deadline, f"never reached the kill point ({what})"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGSTOP)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group: a dead terminal, SSH session or allocation. Snakemake's lock stays."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _recover(work: Path, *targets: str) -> str:
    """The README's recipe after a killed run: a plain re-run is refused (the dead run's lock), so unlock with
    the same config, then re-run with --rerun-incomplete. Returns the re-run's output."""
    refused = snakemake(*targets, "--cores", "2", "--configfile", str(work / CONFIG), cwd=work)
    assert refused.returncode != 0 and "--unlock" in refused.stdout + refused.stderr, refused.stderr[-2000:]
    snakemake(*targets, "--unlock", "--configfile", str(work / CONFIG), cwd=work, check=True)
    rerun = snakemake(*targets, "--cores", "2", "--configfile", str(work / CONFIG), "--rerun-incomplete",
                      cwd=work, check=True)
    return rerun.stdout + rerun.stderr


def _job_stats(output: str) -> str:
    return output.split("Job stats:")[1].split("\n\n")[0] if "Job stats:" in output else ""


@pytest.mark.parametrize("attempt", REPEAT)
def test_sigkilled_intervention_job_reruns_to_the_same_table(one_run, attempt):
    """Killed while the intervention job runs (its table absent, its incomplete marker present — checked on
    the frozen process group), then unlocked and re-run: the table of an uninterrupted run."""
    work = one_run
    reference = pd.read_parquet(work / TABLE)
    os.remove(work / TABLE)
    log = work / "logs/intervene/organism/synthetic/synthetic/0-of-1.log"
    marker = _incomplete_marker(work, SHARD_TABLE)
    log.unlink(missing_ok=True)
    proc = _start(work, TABLE)
    _freeze_when(proc, lambda: marker.exists() and log.exists() and "conditions x" in log.read_text(),
                 "intervention job scoring")
    inside = marker.exists() and not (work / TABLE).exists() and not (work / SHARD_TABLE).exists()
    _kill(proc)
    assert inside, "the kill did not land inside the intervention job"
    out = _recover(work, TABLE)
    assert "intervene" in _job_stats(out), out[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(work / TABLE), reference)


@pytest.mark.parametrize("attempt", REPEAT)
def test_sigkilled_capture_resumes_from_its_committed_blocks(one_run, tmp_path, attempt):
    """Killed after k of n committed capture blocks (read on the frozen process group), then unlocked and
    re-run: capture resumes at block k and the merged store equals the uninterrupted run's."""
    work = one_run
    merged = "results/activations/organism/synthetic.zarr"
    shard = "results/activations/organism/synthetic.shards/0-of-1.zarr"
    partial = work / (shard + ".partial")
    reference = tmp_path / "uninterrupted.zarr"
    shutil.move(work / merged, reference)
    log = work / "logs/capture/organism/synthetic/0-of-1.log"
    log.unlink(missing_ok=True)

    def committed() -> int:
        try:
            return int(store.open_zarr_group(partial)["block_done"][:].sum())
        except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
            return 0

    proc = _start(work, merged)
    _freeze_when(proc, lambda: committed() >= 1, "first capture block committed")
    done = committed()
    n_blocks = int(store.open_zarr_group(partial)["block_done"].shape[0])
    inside = _incomplete_marker(work, shard).exists() and not (work / shard).exists()
    _kill(proc)
    assert inside and 1 <= done < n_blocks, f"kill not mid-capture: {done}/{n_blocks} blocks committed"
    out = _recover(work, merged)
    assert "capture" in _job_stats(out), out[-3000:]
    assert f"{n_blocks - done}/{n_blocks} blocks to do (resumed)" in log.read_text()
    a = store.open_dataset(reference)
    b = store.open_dataset(work / merged)
    for v in ("mean_activation", "frac_positive", "n_positions", "label_prob", "attribution", "correct"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert list(a["utterance"].values) == list(b["utterance"].values)


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
