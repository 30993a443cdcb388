"""Training in length-sorted micro-batches (`organism.micro_batches`): the same clips and data order, less padding,
the same training up to float rounding."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from esn.organism import OrganismConfig, length_pieces, train_organism

LABELS = ["neutral", "happy", "sad", "angry"]


def test_pieces_partition_the_batch_by_length():
    idx = np.array([5, 0, 7, 2, 9, 4, 1, 8])
    lengths = [10, 80, 30, 70, 20, 60, 40, 90, 50, 15]
    one = length_pieces(idx, lengths, 1)
    assert len(one) == 1 and one[0] is idx  # one piece: the batch itself, in its order (training unchanged)
    pieces = length_pieces(idx, lengths, 4)
    assert sorted(np.concatenate(pieces).tolist()) == sorted(idx.tolist()) and [len(p) for p in pieces] == [2] * 4
    longest = [max(lengths[i] for i in p) for p in pieces]
    assert longest == sorted(longest) and longest[0] < max(lengths[i] for i in idx)  # short clips padded less


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """16 clips of 0.5–2 s (tones whose pitch is the emotion), 12 to train on, 4 held out."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        emotion = LABELS[i % 4]
        seconds = 0.5 + 1.5 * rng.random()
        t = np.arange(int(16000 * seconds)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (150 + 100 * (i % 4)) * t) + 0.01 * rng.standard_normal(t.size)
        path = folder / f"c{i}.wav"
        sf.write(path, wave.astype(np.float32), 16000)
        rows.append({"utterance_id": f"c{i}", "path": str(path), "emotion": emotion, "speaker": f"s{i // 4}",
                     "corpus": "tones", "split": "evaluation" if i >= 12 else "identification",
                     "duration_s": seconds})
    return pd.DataFrame(rows)


def _train(manifest: pd.DataFrame, out, micro_batches: int) -> tuple[dict[str, torch.Tensor], dict]:
    torch.manual_seed(0)
    cfg = OrganismConfig(encoder="whisper_tiny_en", hidden=32, heads=2, kv_heads=1, mlp=64, layers=2, steps=3,
                         batch_size=8, warmup=1, seed=0, threads=1, micro_batches=micro_batches)
    train_organism(manifest, out, LABELS, cfg)
    return load_file(str(out / "model.safetensors")), json.loads((out / "metrics.json").read_text())


def test_micro_batches_train_the_same_organism(manifest, tmp_path):
    """Four length-sorted pieces per step give the weights and losses of whole batches (up to float rounding):
    the pieces' losses are weighted back to the batch's mean, and every step sees the same clips."""
    whole, whole_metrics = _train(manifest, tmp_path / "whole", 1)
    pieces, pieces_metrics = _train(manifest, tmp_path / "pieces", 4)
    trained = [k for k in whole if not torch.equal(whole[k], pieces[k])]
    assert trained  # the float path differs (else the pieces would not have been used)
    for name in whole:
        torch.testing.assert_close(pieces[name], whole[name], rtol=1e-4, atol=1e-5, msg=name)
    losses = [[h["loss"] for h in m["history"]] for m in (whole_metrics, pieces_metrics)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    assert pieces_metrics["config"]["micro_batches"] == 4
