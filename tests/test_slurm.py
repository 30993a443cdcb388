"""Run a Snakemake workflow through a real single-node SLURM cluster.

The session fixture ``slurm_cluster`` brings the cluster up with ``tests/slurm/cluster.sh up``
(apt-installs slurm-wlm, slurmdbd, munge and mariadb-server on first use; needs root) and tears it
down again in a finalizer. The workflow is submitted with

    snakemake --profile profiles/slurm --profile tests/slurm/test-profile ...

i.e. the real SLURM profile with the test cluster's overlay on top (see the overlay's comments).

Run:  .venv/bin/pytest tests/test_slurm.py -q -s        (as root; -s shows the timings)

Environment knobs:
  ESN_SLURM_STATEDIR  where cluster.sh keeps its state (default /tmp/esn-slurm); keeping it makes
                      the next ``up`` take seconds instead of a package install.
  ESN_SLURM_KEEP=1    leave the cluster running after the session (faster iteration; stop it
                      with ``tests/slurm/cluster.sh down $ESN_SLURM_STATEDIR``). A cluster that
                      was already up before the session is never stopped by it.

To test the real workflow instead of the toy one, call ``run_workflow`` with the repository's
Snakefile, a small config and ``profile=SLURM_TEST_PROFILES``, and compare against a local run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import pytest
import yaml

from esn import store

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_PROFILE = REPO / "profiles" / "slurm"
TEST_OVERLAY = REPO / "tests" / "slurm" / "test-profile"
GPU_BOX_PROFILE = REPO / "profiles" / "gpu-box"
# The real profile plus the test cluster's overlay, in that order (later wins per top-level key).
SLURM_TEST_PROFILES = (SLURM_PROFILE, TEST_OVERLAY)
MODEL_RULES = {"capture", "intervene", "knockout"}

# The bin dir of the interpreter running pytest: its snakemake, and (on PATH) the python that
# SLURM jobs use, which must be able to import snakemake-executor-plugin-slurm(-jobstep).
VENV_BIN = Path(sys.executable).parent
STATEDIR = Path(os.environ.get("ESN_SLURM_STATEDIR", "/tmp/esn-slurm"))


def _workflow_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    # sbatch exports the submitting environment to the job (--export=ALL is the default), so this
    # PATH is also what the job's `python -m snakemake` and `srun` see.
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("SLURM_CONF", None)  # cluster.sh writes /etc/slurm/slurm.conf, the default
    return env


def run_workflow(
    workdir: Path | str,
    snakefile: Path | str,
    configfile: Path | str | None,
    targets: Sequence[str],
    profile: Path | str | Sequence[Path | str] | None = None,
    *,
    cores: int = 2,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """Run ``snakemake`` (from this interpreter's bin dir) in ``workdir`` as a subprocess.

    ``profile``: None (plain local run), one profile directory, or several; each becomes one
    ``--profile`` (Snakemake merges them per top-level key, later wins). For the test cluster pass
    ``SLURM_TEST_PROFILES``. A workflow profile next to the Snakefile (profiles/default/) is
    picked up by Snakemake as usual and overrides keys such as ``set-resources`` wholesale; pass
    ``extra_args=["--workflow-profile", "none"]`` to rule that out.
    ``env`` sets environment variables (e.g. ESN_SLURM_PARTITION for profiles/slurm); a value
    of None removes the variable.
    Output is captured (text); the caller checks ``returncode``.
    """
    # Targets first: --configfile (and other nargs="+" options, e.g. from extra_args) would
    # otherwise swallow them.
    cmd: list[str] = [
        str(VENV_BIN / "snakemake"),
        *targets,
        "--snakefile", str(snakefile),
        "--directory", str(workdir),
        "--cores", str(cores),
    ]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    if profile is not None:
        profiles = [profile] if isinstance(profile, (str, Path)) else list(profile)
        for p in profiles:
            cmd += ["--profile", str(p)]
    cmd += list(extra_args)
    return subprocess.run(
        cmd, cwd=str(workdir), env=_workflow_env(env), capture_output=True, text=True,
        timeout=timeout,
    )


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        pytest.fail(
            f"{what} failed (rc={proc.returncode})\n--- stdout ---\n{proc.stdout[-6000:]}"
            f"\n--- stderr ---\n{proc.stderr[-12000:]}"
        )


# ---------------------------------------------------------------------------- cluster fixture


def _cluster(action: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), action, str(STATEDIR)],
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="session")
def slurm_cluster(request):
    if os.geteuid() != 0:
        pytest.skip(
            "SLURM tests need root: tests/slurm/cluster.sh apt-installs slurm-wlm/slurmdbd/munge/"
            "mariadb-server and starts their daemons (run pytest as root)"
        )
    if shutil.which("sinfo") is None and shutil.which("apt-get") is None:
        pytest.skip(
            "SLURM tests need a Debian/Ubuntu machine: neither SLURM (sinfo) nor apt-get found"
        )
    already_up = _cluster("status", timeout=60).returncode == 0
    keep = os.environ.get("ESN_SLURM_KEEP") == "1"

    def teardown():
        if already_up or keep:
            print(f"\n[slurm] leaving the cluster in {STATEDIR} running"
                  f" ({'it was up before the session' if already_up else 'ESN_SLURM_KEEP=1'})")
            return
        t0 = time.monotonic()
        proc = _cluster("down", timeout=600)
        print(f"\n[slurm] cluster.sh down: {time.monotonic() - t0:.1f}s rc={proc.returncode}\n"
              f"{proc.stdout}{proc.stderr}")

    # Registered before `up`, so a half-started cluster is stopped too.
    request.addfinalizer(teardown)
    t0 = time.monotonic()
    proc = _cluster("up")
    up_s = time.monotonic() - t0
    print(f"\n[slurm] cluster.sh up: {up_s:.1f}s rc={proc.returncode}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"cluster.sh up failed (logs under {STATEDIR}/log):\n{proc.stdout}\n{proc.stderr}")
    return {"statedir": STATEDIR, "up_seconds": up_s}


# ---------------------------------------------------------------------------- toy workflow

TOY_SNAKEFILE = textwrap.dedent(
    r'''
    import json
    import os

    SAMPLES = config["samples"]

    localrules: all


    def write_jobinfo(path, rule, wildcards, resources):
        """Where did this job run? Deliberately outside results/ (differs between runs)."""
        with open(path, "w") as f:
            json.dump(
                {
                    "rule": rule,
                    "wildcards": dict(wildcards),
                    "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                    "slurm_partition": os.environ.get("SLURM_JOB_PARTITION"),
                    "gpu": resources.get("gpu"),
                    "mem_mb": resources.get("mem_mb"),
                },
                f,
                sort_keys=True,
            )


    rule all:
        input:
            "results/summary.txt",
            "jobinfo/summarize.json",
            expand("jobinfo/prepare_{sample}.json", sample=SAMPLES),
            expand("jobinfo/capture_{sample}.json", sample=SAMPLES),


    # shell: rule; the job id comes from the job's environment
    rule prepare:
        output:
            data="results/prepared/{sample}.txt",
            info="jobinfo/prepare_{sample}.json",
        log:
            "logs/prepare_{sample}.log",
        threads: 1
        resources:
            mem_mb=500,
            runtime=5,
        shell:
            """
            echo "{config[greeting]} {wildcards.sample}" > {output.data}
            printf '{{"rule": "prepare", "slurm_job_id": "%s"}}' "${{SLURM_JOB_ID:-}}" > {output.info}
            echo "prepared {wildcards.sample} in job ${{SLURM_JOB_ID:-local}}" > {log}
            """


    # Named like the real model rule; as there, its GPU request comes from config (none on the test node).
    rule capture:
        input:
            "results/prepared/{sample}.txt",
        output:
            act="results/activations/{sample}.json",
            info="jobinfo/capture_{sample}.json",
        log:
            "logs/capture_{sample}.log",
        resources:
            gpu=config.get("gpu", 0),
        run:
            text = open(input[0]).read().strip()
            with open(output.act, "w") as f:
                json.dump({"sample": wildcards.sample, "n_chars": len(text),
                           "upper": text.upper()}, f, sort_keys=True)
            write_jobinfo(output.info, "capture", wildcards, resources)
            with open(log[0], "w") as f:
                f.write(f"captured {wildcards.sample} gpu={resources.get('gpu')}\n")


    rule summarize:
        input:
            expand("results/activations/{sample}.json", sample=SAMPLES),
        output:
            summary="results/summary.txt",
            info="jobinfo/summarize.json",
        log:
            "logs/summarize.log",
        run:
            rows = [json.load(open(p)) for p in input]
            with open(output.summary, "w") as f:
                for r in rows:
                    f.write(f"{r['sample']}\t{r['n_chars']}\t{r['upper']}\n")
            write_jobinfo(output.info, "summarize", wildcards, resources)
            with open(log[0], "w") as f:
                f.write(f"summarized {len(rows)} samples\n")
    '''
)
TOY_CONFIG = {"samples": ["alpha", "beta"], "greeting": "hello"}
TOY_JOBS = 5  # prepare x2, capture x2, summarize (all is local)


def _write_toy(workdir: Path) -> tuple[Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    snakefile = workdir / "Snakefile"
    snakefile.write_text(TOY_SNAKEFILE)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(TOY_CONFIG))
    return snakefile, configfile


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sacct_states(job_ids: Sequence[str]) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", "JobID,State"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line.strip())


# ---------------------------------------------------------------------------- tests


def test_toy_workflow_runs_under_slurm(slurm_cluster, tmp_path):
    # Reference: a plain local run.
    local_dir = tmp_path / "local"
    snakefile, configfile = _write_toy(local_dir)
    t0 = time.monotonic()
    _check(run_workflow(local_dir, snakefile, configfile, ["all"], profile=None, cores=2),
           "local run")
    local_s = time.monotonic() - t0

    # The same workflow through SLURM.
    slurm_dir = tmp_path / "slurm"
    snakefile, configfile = _write_toy(slurm_dir)
    t0 = time.monotonic()
    proc = run_workflow(slurm_dir, snakefile, configfile, ["all"], profile=SLURM_TEST_PROFILES)
    slurm_s = time.monotonic() - t0
    _check(proc, "SLURM run")
    print(f"\n[slurm] local run {local_s:.1f}s, SLURM run {slurm_s:.1f}s")

    # Every job ran inside its own SLURM job, on partition debug, with the GPU request
    # overridden to 0 by the test overlay.
    infos = [json.loads(p.read_text()) for p in sorted((slurm_dir / "jobinfo").glob("*.json"))]
    assert len(infos) == TOY_JOBS, infos
    job_ids = [i["slurm_job_id"] for i in infos]
    assert all(job_ids), f"a job ran outside SLURM: {infos}"
    assert len(set(job_ids)) == TOY_JOBS, f"expected one SLURM job per Snakemake job: {infos}"
    for info in infos:
        if info["rule"] != "prepare":  # shell rule records only the id
            assert info["slurm_partition"] == "debug", info
    capture = [i for i in infos if i["rule"] == "capture"]
    assert capture and all(i["gpu"] == 0 for i in capture), capture
    # Local jobs never see a SLURM job id.
    local_infos = [json.loads(p.read_text()) for p in (local_dir / "jobinfo").glob("*.json")]
    assert local_infos and not any(i["slurm_job_id"] for i in local_infos), local_infos

    # Accounting saw them all finish. (The plugin itself detected completion through sacct, so
    # no waiting should be needed; the loop only guards against slurmdbd lag.)
    t0 = time.monotonic()
    while True:
        states = _sacct_states(job_ids)
        if all(states.get(j) == "COMPLETED" for j in job_ids) or time.monotonic() - t0 > 60:
            break
        time.sleep(1)
    print(f"[slurm] sacct states after {time.monotonic() - t0:.1f}s: {states}")
    assert {j: states.get(j) for j in job_ids} == {j: "COMPLETED" for j in job_ids}

    # Same results as the local run, byte for byte.
    assert _tree(slurm_dir / "results") == _tree(local_dir / "results")
    # Logs were written by the jobs (they live next to results, not in SLURM's log dir).
    assert len(list((slurm_dir / "logs").glob("*.log"))) == TOY_JOBS


def test_real_profile_placeholders(slurm_cluster, tmp_path):
    """profiles/slurm alone (no overlay): its partition/account placeholders come from the
    environment; unset, submission fails with the plugin's list of valid accounts."""
    snakefile, configfile = _write_toy(tmp_path)
    fast = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1"]
    target = ["results/prepared/alpha.txt"]  # a non-GPU job: the test node has no GPU

    unset = {"ESN_SLURM_PARTITION": None, "ESN_SLURM_ACCOUNT": None}
    proc = run_workflow(tmp_path, snakefile, configfile, target, profile=SLURM_PROFILE,
                        extra_args=fast + ["--retries", "0"], env=unset)
    assert proc.returncode != 0
    assert "The given account $ESN_SLURM_ACCOUNT appears to be invalid" in proc.stderr + proc.stdout

    site = {"ESN_SLURM_PARTITION": "debug", "ESN_SLURM_ACCOUNT": "esn"}
    proc = run_workflow(tmp_path, snakefile, configfile, target, profile=SLURM_PROFILE,
                        extra_args=fast, env=site)
    _check(proc, "profiles/slurm with ESN_SLURM_PARTITION/ESN_SLURM_ACCOUNT")
    job_id = json.loads((tmp_path / "jobinfo" / "prepare_alpha.json").read_text())["slurm_job_id"]
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "Account,Partition,State"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert out == "esn|debug|COMPLETED", out


def test_gpu_request_is_rejected_by_test_cluster(slurm_cluster):
    """Why the test workflows ask for no GPU: the test node has no GPU gres, so --gpus=1 cannot run."""
    proc = subprocess.run(
        ["sbatch", "--gpus=1", "-p", "debug", "-t", "1", "-o", "/dev/null", "--wrap", "true"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0, f"sbatch --gpus=1 unexpectedly accepted: {proc.stdout}"


def _profile(path: Path) -> dict:
    return yaml.safe_load((path / "config.yaml").read_text())


def test_model_rules_agree_across_profiles():
    """The model rules' resources are listed in the SLURM profile and its test overlay; keep them identical.
    GPUs come from the model's config entry, never from a profile (the organism must not queue for one)."""
    slurm, overlay, gpu_box = (_profile(p) for p in (SLURM_PROFILE, TEST_OVERLAY, GPU_BOX_PROFILE))
    assert set(slurm["set-resources"]) == MODEL_RULES
    assert set(overlay["set-resources"]) == MODEL_RULES
    assert "set-resources" not in gpu_box and gpu_box["resources"] == {"gpu": 1}
    for profile in (slurm, overlay):
        assert not any("gpu" in r or "gres" in r for r in profile["set-resources"].values())
    # The overlay changes nothing but these keys; everything else comes from profiles/slurm.
    assert set(overlay) <= {
        "slurm-init-seconds-before-status-checks", "seconds-between-status-checks",
        "latency-wait", "retries", "default-resources", "set-resources",
    }
    # Within the two replaced maps, the overlay keeps the real profile's keys (minus the account).
    assert set(overlay["default-resources"]) == set(slurm["default-resources"]) - {"slurm_account"}
    for rule in MODEL_RULES:
        assert set(overlay["set-resources"][rule]) == set(slurm["set-resources"][rule])


def test_profile_overlay_merges_per_top_level_key(tmp_path):
    """Measure how Snakemake combines two --profile options: per top-level key, later wins."""
    code = textwrap.dedent(
        f"""
        import json
        from snakemake.cli import parse_args
        _, a = parse_args(["--profile", {str(SLURM_PROFILE)!r}, "--profile", {str(TEST_OVERLAY)!r}])
        print(json.dumps({{
            "executor": a.executor, "jobs": a.jobs, "retries": a.retries,
            "rerun_incomplete": a.rerun_incomplete,
            "init": a.slurm_init_seconds_before_status_checks,
            "default_resources": sorted(a.default_resources),
            "capture": sorted(a.set_resources["capture"]),
        }}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    _check(proc, "parse_args")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # From profiles/slurm (keys absent in the overlay pass through):
    assert got["executor"] == "slurm" and got["jobs"] == 50 and got["rerun_incomplete"] is True
    # From the overlay:
    assert got["retries"] == 0 and got["init"] == 1
    # default-resources replaced whole: the real profile's slurm_account is gone.
    assert "slurm_account" not in got["default_resources"]
    assert "slurm_partition" in got["default_resources"]
    assert got["capture"] == ["cpus_per_task", "mem_mb", "runtime"]


# ---------------------------------------------------------------------------- the real workflow

REAL_TARGETS = [
    "results/tables/interventions/organism/synthetic/mad/synthetic.summary.csv",
    "results/tables/interventions/organism/synthetic/attribution/synthetic.summary.csv",
    "results/tables/knockout/organism/synthetic.csv",
]


def test_reduced_default_workflow_runs_under_slurm_like_locally(slurm_cluster, tmp_path):
    """The repository's own workflow (reduced config) through --profile profiles/slurm: every job is a
    SLURM job that accounting saw complete, and the results equal a plain local run's."""
    config = REPO / "tests" / "configs" / "reduced.yaml"
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for d in (local, cluster):
        d.mkdir()
    t0 = time.monotonic()
    _check(run_workflow(local, REPO / "Snakefile", config, REAL_TARGETS), "local run")
    t_local = time.monotonic() - t0
    t0 = time.monotonic()
    proc = run_workflow(cluster, REPO / "Snakefile", config, REAL_TARGETS, profile=SLURM_TEST_PROFILES,
                        extra_args=["--workflow-profile", "none"])
    _check(proc, "SLURM run")
    t_slurm = time.monotonic() - t0
    job_ids = sorted(set(re.findall(r"has been submitted with SLURM jobid (\d+)", proc.stdout + proc.stderr)))
    assert len(job_ids) >= 8, proc.stderr[-3000:]  # prepare, train, capture, merge, 2 select, 2 intervene, ...
    states = _sacct_states(job_ids)
    assert set(states.values()) == {"COMPLETED"}, states
    print(f"[slurm] real workflow: {len(job_ids)} SLURM jobs, {t_slurm:.0f} s (local {t_local:.0f} s)")
    for name in ("resources/corpora/synthetic/manifest.parquet", *REAL_TARGETS,
                 "results/interventions/organism/synthetic/mad/synthetic.parquet"):
        a, b = local / name, cluster / name
        if name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
        else:
            assert a.read_bytes() == b.read_bytes(), name
    for sel in ("mad", "attribution"):
        ra = store.open_dataset(local / f"results/neurons/organism/synthetic/{sel}.zarr")["rank"].values
        rb = store.open_dataset(cluster / f"results/neurons/organism/synthetic/{sel}.zarr")["rank"].values
        assert (ra == rb).all()
