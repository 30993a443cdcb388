"""Intervention jobs that shard and resume: the shards' tables merge into exactly the unsharded table, and a job
killed after k committed blocks resumes at block k with the same table."""

import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny_adapter

from esn.grid import shard_blocks
from esn.interventions import (Condition, evaluate, injection_conditions, knockout_conditions, set_conditions)
from esn.store import ProvenanceError
from esn.tables import merge_interventions, read_table, write_table

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = ["neutral", "happy", "sad", "angry"]
BLOCK = 4  # clips per committed block: the tiny corpus' 24 clips are 6 blocks


def study_conditions(adapter, seed: int = 0, alphas=(2.0,)) -> dict[str, list[Condition]]:
    """Two 'selectors' of a study: deactivation, gain and label-free injection (so the table also has the rows
    read from the gain rows), and knockout — every kind of row a job writes."""
    rng = np.random.default_rng(seed)
    L, N = adapter.n_layers, adapter.n_neurons
    out = {}
    for name in ("mad", "cas"):
        conditions = []
        for control, draw in (("selected", -1), ("random", 0)):
            masks = {e: rng.random((L, N)) < 0.1 for e in LABELS}
            conditions += set_conditions({(e, control, 0.05, draw): m for e, m in masks.items()}, list(alphas))
            conditions += injection_conditions(masks, LABELS, list(alphas), control, 0.05, draw)
        out[name] = conditions
    out["knockout"] = knockout_conditions(L, N)
    return out


def run(adapter, manifest, conditions, tmp, **kw) -> dict[str, pd.DataFrame]:
    """Each table as the workflow writes and reads it (`write_table`, then `read_table`)."""
    tables = evaluate(adapter, manifest, conditions, batch_size=3, max_rows=40, block_size=BLOCK, **kw)
    tmp.mkdir(parents=True, exist_ok=True)
    for key, table in tables.items():
        write_table(table, tmp / f"{key}.parquet", "interventions")
    return {key: read_table(tmp / f"{key}.parquet", "interventions") for key in tables}


def test_shards_partition_the_blocks():
    n_clips = 23
    for n in (1, 2, 3, 7, 9):
        blocks = [shard_blocks(n_clips, BLOCK, k, n) for k in range(n)]
        clips = sorted(i for shard in blocks for b in shard for i in b)
        assert clips == list(range(n_clips))                      # every clip in exactly one shard
        assert all(b.start % BLOCK == 0 for shard in blocks for b in shard)  # the unsharded run's blocks
    assert [list(b) for b in shard_blocks(10, 4, 1, 2)] == [[4, 5, 6, 7]]
    with pytest.raises(ValueError):
        shard_blocks(10, 4, 2, 2)


@pytest.mark.parametrize("n", [3, 8])  # 8 shards of 6 blocks: two shards without clips
def test_sharded_tables_merge_into_the_unsharded_table(tiny_manifest, tmp_path, n):
    adapter = make_tiny_adapter(seed=2)
    conditions = study_conditions(adapter)
    whole = run(adapter, tiny_manifest, conditions, tmp_path / "whole")
    shards = [run(adapter, tiny_manifest, conditions, tmp_path / f"{k}-of-{n}", shard=(k, n)) for k in range(n)]
    for key in conditions:
        parts = [s[key] for s in shards]
        # the shards split the clips: disjoint, complete, none empty where a shard has blocks
        ids = [set(p["utterance_id"]) for p in parts]
        assert sum(map(len, ids)) == len(set().union(*ids)) == len(tiny_manifest)
        assert [len(i) > 0 for i in ids] == [k < 6 for k in range(n)]
        merged = merge_interventions([tmp_path / f"{k}-of-{n}" / f"{key}.parquet" for k in range(n)])
        pd.testing.assert_frame_equal(merged, whole[key], check_exact=True)
        assert list(merged.dtypes) == list(whole[key].dtypes)
    # the rows really differ between conditions (a table of identical rows would compare equal trivially)
    gain = whole["mad"][whole["mad"]["mode"] == "gain"]
    assert gain["p_sad"].nunique() > len(tiny_manifest)


KILL_SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from conftest import make_tiny_adapter
from test_shards import BLOCK, study_conditions
import esn.interventions as iv
from esn.prepare import load_manifest
real_commit = iv.commit_block
def commit(partial, block, parts):
    real_commit(partial, block, parts)
    if len(list(Path(partial).glob("block-*/done"))) == {k}:  # k blocks committed: tell the test, hang until killed
        Path({marker!r}).touch()
        time.sleep(3600)
iv.commit_block = commit
adapter = make_tiny_adapter(seed=2)
iv.evaluate(adapter, load_manifest({corpus!r}), study_conditions(adapter), batch_size=3, max_rows=40,
            block_size=BLOCK, partial={partial!r})
"""


def test_a_killed_job_resumes_at_its_first_uncommitted_block(tiny_corpus, tiny_manifest, tmp_path, caplog):
    """SIGKILL lands after exactly k = 2 of 6 committed blocks, placed by the job's own state (no sleeps to
    race); the re-run skips those 2 blocks, says so, and writes the uninterrupted run's tables."""
    adapter = make_tiny_adapter(seed=2)
    conditions = study_conditions(adapter)
    reference = run(adapter, tiny_manifest, conditions, tmp_path / "reference")
    partial, marker, k = tmp_path / "job.partial", tmp_path / "k-committed", 2
    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), corpus=str(tiny_corpus), partial=str(partial),
                                marker=str(marker), k=k)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not marker.exists():
        assert proc.poll() is None, "the intervention process ended before its kill point"
        assert time.time() < deadline, "the intervention process never committed k blocks"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(partial.glob("block-*/done"))) == k

    with caplog.at_level(logging.INFO, logger="esn.interventions"):
        resumed = evaluate(adapter, tiny_manifest, conditions, batch_size=3, max_rows=40, block_size=BLOCK,
                           partial=partial)
    assert {t.attrs["blocks_skipped"] for t in resumed.values()} == {k}
    assert f"{k} block(s) already committed, skipped" in caplog.text
    for key, table in resumed.items():
        write_table(table, tmp_path / f"{key}.parquet", "interventions")
        pd.testing.assert_frame_equal(read_table(tmp_path / f"{key}.parquet", "interventions"), reference[key],
                                      check_exact=True)


def test_a_partial_of_other_conditions_is_refused(tiny_manifest, tmp_path, monkeypatch):
    """Rows committed for one set of conditions never complete a table of another."""
    import esn.interventions as iv

    adapter = make_tiny_adapter(seed=2)
    real, partial = iv.commit_block, tmp_path / "job.partial"

    def commit_once(path, block, parts):
        real(path, block, parts)
        raise KeyboardInterrupt  # the job dies after its first committed block

    monkeypatch.setattr(iv, "commit_block", commit_once)
    with pytest.raises(KeyboardInterrupt):
        evaluate(adapter, tiny_manifest, study_conditions(adapter), batch_size=3, block_size=BLOCK, partial=partial)
    monkeypatch.setattr(iv, "commit_block", real)
    with pytest.raises(ProvenanceError, match="delete it to start over"):
        evaluate(adapter, tiny_manifest, study_conditions(adapter, alphas=(4.0,)), batch_size=3, block_size=BLOCK,
                 partial=partial)
    with pytest.raises(ProvenanceError):  # another shard of the same study is other clips
        evaluate(adapter, tiny_manifest, study_conditions(adapter), batch_size=3, block_size=BLOCK, partial=partial,
                 shard=(1, 2))


def test_a_sharded_workflow_writes_the_unsharded_tables(tmp_path):
    """Through Snakemake: the reduced default's study, once unsharded, then with `intervention.shards: 3` in the
    same working directory (capture and selection stay; the intervention job runs as 3 shards): the same
    intervention table, and the same bootstrap metrics downstream."""
    import yaml
    from test_workflow import ROOT, _job_counts, snakemake

    cfg = yaml.safe_load((ROOT / "tests/configs/reduced.yaml").read_text())
    cfg["corpora"]["synthetic"]["options"]["per_speaker_emotion"] = 2   # 16 evaluation clips: 4 blocks
    cfg["organism"].update(steps=0, layers=2, mlp=64)       # untrained and small: equality needs no skill
    cfg["selection"].update(selectors=["mad"], id_sizes=[10])
    cfg["intervention"].update(block_size=4, knockout=False)  # knockout shards run the same code (tested above)
    study = "organism/synthetic/mad/synthetic"
    targets = [f"results/interventions/{study}.parquet", f"results/tables/interventions/{study}.delta_recall.csv",
               f"results/tables/interventions/{study}.summary.csv"]
    work, config = tmp_path / "work", tmp_path / "config.yaml"

    def run(shards: int) -> dict[str, bytes]:
        config.write_text(yaml.safe_dump({**cfg, "intervention": {**cfg["intervention"], "shards": shards}}))
        proc = snakemake(*targets, "--cores", "2", "--configfile", str(config), "--directory", str(work),
                         "-s", str(ROOT / "Snakefile"), check=True)
        return _job_counts(proc.stdout + proc.stderr), {t: (work / t).read_bytes() for t in targets[1:]}

    jobs, unsharded = run(1)
    table = read_table(work / targets[0], "interventions")
    jobs3, sharded = run(3)
    assert jobs3["intervene"] == 3 and "capture" not in jobs3 and "select" not in jobs3
    assert not list(work.glob("results/interventions/**/*.partial"))  # each job's committed blocks are gone
    pd.testing.assert_frame_equal(read_table(work / targets[0], "interventions"), table, check_exact=True)
    assert sharded == unsharded  # the metrics tables (bootstrap CIs), byte for byte
