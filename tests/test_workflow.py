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
    (lambda c: c["corpora"]["synthetic"].update(classes=["happy", "joyful"]), "joyful"),
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
    for rule in ("prepare_corpus", "train_organism", "capture", "merge_shards", "select", "intervene", "knockout",
                 "metrics"):
        assert rule in proc.stdout
