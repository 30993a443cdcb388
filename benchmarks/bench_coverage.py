"""Coverage of the speaker-level bootstrap interval with few evaluation speakers, by simulation.

The organism is evaluated on 8 unseen speakers per corpus (5 clips per speaker and emotion, 4 emotions).
Speakers are simulated with a known super-population effect and a realistic between-speaker spread: a
speaker recognises a clip with probability a_s; deactivating emotion e's set makes a recognised clip of e
wrong with probability q_{s,e} and one of another emotion with probability r_{s,e} (logit-normal, a
speaker effect plus a speaker × emotion effect); a wrong clip goes to another label at random. The truth
is the mean over speakers of the expected specificity (mean over targets of Δrecall(e, e) − mean over
c ≠ e of Δrecall(e, c)), computed from a million simulated speakers. For each replicate (a fresh set of
speakers and clips) the benchmark computes, from the same cluster-bootstrap resamples the workflow draws
(`esn.metrics.bootstrap_weights`, 1000 resamples), the percentile interval (the workflow's old interval),
the expanded percentile interval (`esn.metrics.percentile_levels`, the workflow's interval now), and the
t-interval over per-speaker statistics; and counts how often each covers the truth. The first replicate's
percentile interval is checked against `esn.metrics.summarize` on the same predictions.

`--cap N` evaluates N clips per emotion drawn from the speakers' clips as `intervention.max_per_emotion` does
(the default run and the population: 16 of 40, so 2 per speaker on average and some speaker × emotion cells
empty); the t-interval, which needs every speaker to have every emotion, is then left out.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coverage.py [--replicates 1000] [--cap 16 --speakers 8]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit, logit

from esn.metrics import bootstrap_weights, percentile_levels, summarize

LABELS = ["neutral", "happy", "sad", "angry"]
PER_CELL = 5  # clips per speaker and emotion, as the organism's evaluation split
#: name -> (accuracy mean, speaker sd), (own loss mean, speaker sd, speaker×emotion sd), (others' loss likewise)
SCENARIOS = {
    "selected set (clear effect, realistic spread)": ((0.85, 1.0), (0.35, 1.0, 0.7), (0.05, 0.7, 0.5)),
    "random-like set (small effect)": ((0.85, 1.0), (0.06, 0.8, 0.6), (0.04, 0.8, 0.6)),
    "selected set, wide speaker spread": ((0.80, 1.2), (0.35, 1.6, 1.0), (0.05, 1.0, 0.7)),
}


def speakers(rng: np.random.Generator, n: int, scenario: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per speaker: accuracy a [n]; per speaker × target emotion: own-loss q [n, E] and others'-loss r [n, E]."""
    (am, asd), (qm, qsd, qe), (rm, rsd, re_) = scenario
    E = len(LABELS)
    a = expit(logit(am) + asd * rng.standard_normal(n))
    q = expit(logit(qm) + qsd * rng.standard_normal((n, 1)) + qe * rng.standard_normal((n, E)))
    r = expit(logit(rm) + rsd * rng.standard_normal((n, 1)) + re_ * rng.standard_normal((n, E)))
    return a, q, r


def truth(scenario: tuple, n: int = 1_000_000, seed: int = 12345) -> float:
    """Super-population specificity: E_s mean_e [−a q_e + a r_e] (a wrong clip stays wrong; losses only from
    recognised clips; the expected recall change of a class is its recognised share times its loss rate)."""
    a, q, r = speakers(np.random.default_rng(seed), n, scenario)
    return float(np.mean(a[:, None] * (r - q)))


def simulate(rng: np.random.Generator, g: int, scenario: tuple, cap: int | None = None):
    """Clips of g speakers: speaker code [U], label [U], predictions [U, 1 + E] (unmodified, then each target);
    with `cap`, only `cap` clips per emotion, drawn without replacement over the speakers (`esn.prepare.cap_split`)."""
    a, q, r = speakers(rng, g, scenario)
    E = len(LABELS)
    spk = np.repeat(np.arange(g), E * PER_CELL)
    y = np.tile(np.repeat(np.arange(E), PER_CELL), g)
    U = len(y)

    def wrong(y_):  # another label, uniformly
        return (y_ + rng.integers(1, E, len(y_))) % E

    correct = rng.random(U) < a[spk]
    base = np.where(correct, y, wrong(y))
    preds = [base]
    for e in range(E):
        loss = np.where(y == e, q[spk, e], r[spk, e])
        lost = correct & (rng.random(U) < loss)
        preds.append(np.where(lost, wrong(y), base))
    pred = np.stack(preds, 1)
    if cap is not None:
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == e))[:cap] for e in range(E)]))
        spk, y, pred = spk[keep], y[keep], pred[keep]
    return spk, y, pred


def specificity(w: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Mean-over-targets specificity for resample weights w [B, U] -> [B]."""
    E = len(LABELS)
    # as esn.metrics._recall: a resample without an emotion's clips (possible under a cap) gets recall 0, not NaN
    recall = np.stack([(w @ ((pred == c) & (y == c)[:, None])) / np.maximum(w @ (y == c), 1e-12)[:, None]
                       for c in range(E)], -1)
    delta = recall[:, 1:, :] - recall[:, :1, :]                       # [B, target, class]
    own = np.stack([delta[:, e, e] for e in range(E)], 1)
    rest = np.stack([np.delete(delta[:, e, :], e, axis=1).mean(1) for e in range(E)], 1)
    return (own - rest).mean(1)


def check_against_workflow(spk, y, pred, n_boot: int, seed: int, lo: float, hi: float) -> None:
    """The benchmark's percentile interval is the workflow's: summarize on the same predictions."""
    rows = []
    conds = [("none", "", "", -1)] + [("deactivate", l, "selected", -1) for l in LABELS]
    for k, (mode, target, control, draw) in enumerate(conds):
        rows.append(pd.DataFrame({"utterance_id": [f"u{i:05d}" for i in range(len(y))], "speaker": [f"s{s}" for s in spk],
                                  "emotion": [LABELS[i] for i in y], "mode": mode, "target": target, "control": control,
                                  "fraction": 0.0 if mode == "none" else 0.05, "alpha": 0.0, "layer": -1,
                                  "variant": "" if mode == "none" else "all", "draw": draw,
                                  "predicted": [LABELS[i] for i in pred[:, k]]}))
    table = pd.concat(rows, ignore_index=True)
    for l in LABELS:
        table[f"p_{l}"] = (table["predicted"] == l).astype(float)
    s = summarize(table, LABELS, n_boot=n_boot, seed=seed)["summary"]
    row = s[(s["statistic"] == "specificity") & (s["control"] == "selected")].iloc[0]
    print(f"check vs esn.metrics.summarize: workflow [{row['lo']:.4f}, {row['hi']:.4f}], benchmark (expanded) "
          f"[{lo:.4f}, {hi:.4f}]")
    assert np.isclose(row["lo"], lo) and np.isclose(row["hi"], hi), "benchmark does not match the workflow's interval"


def run(replicates: int, n_boot: int, speaker_counts: list[int], seed: int, cap: int | None = None) -> dict:
    out = {"replicates": replicates, "bootstrap": n_boot, "clips_per_speaker_and_emotion": PER_CELL,
           "clips_per_emotion_cap": cap, "emotions": len(LABELS), "scenarios": {}}
    for name, scenario in SCENARIOS.items():
        true = truth(scenario)
        res = {"truth": true, "by_speakers": {}}
        for g in speaker_counts:
            rng = np.random.default_rng(seed)
            hits = {"percentile": 0, "expanded_percentile": 0} | ({} if cap else {"t_over_speakers": 0})
            widths = {k: [] for k in hits}
            lo_pct, hi_pct = percentile_levels(g)
            tq = stats.t.ppf(0.975, g - 1)
            for i in range(replicates):
                spk, y, pred = simulate(rng, g, scenario, cap)
                w = bootstrap_weights(len(y), n_boot, seed=i, clusters=spk)
                x = specificity(w, y, pred)
                est, boots = x[0], x[1:]
                intervals = {"percentile": np.percentile(boots, [2.5, 97.5]),
                             "expanded_percentile": np.percentile(boots, [lo_pct, hi_pct])}
                if not cap:
                    per_speaker = np.array([specificity(np.ones((1, (spk == s).sum())), y[spk == s], pred[spk == s])[0]
                                            for s in range(g)])
                    intervals["t_over_speakers"] = (per_speaker.mean() + np.array([-1, 1]) * tq
                                                    * per_speaker.std(ddof=1) / np.sqrt(g))
                    if i == 0:
                        assert np.isclose(per_speaker.mean(), est)  # equal clips per speaker: pooled = mean of speakers
                if i == 0 and g == speaker_counts[0] and name == next(iter(SCENARIOS)):
                    check_against_workflow(spk, y, pred, n_boot, i, *intervals["expanded_percentile"])
                for k, (lo, hi) in intervals.items():
                    hits[k] += lo <= true <= hi
                    widths[k].append(hi - lo)
            res["by_speakers"][str(g)] = {k: {"coverage": hits[k] / replicates, "mean_width": float(np.mean(widths[k]))}
                                          for k in hits}
            print(f"{name}: {g} speakers, truth {true:.4f}: " + ", ".join(
                f"{k} {v['coverage']:.3f} (width {v['mean_width']:.3f})" for k, v in res["by_speakers"][str(g)].items()),
                flush=True)
        out["scenarios"][name] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--speakers", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cap", type=int, default=None, help="evaluation clips per emotion (intervention.max_per_emotion)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "coverage.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = run(args.replicates, args.bootstrap, args.speakers, args.seed, args.cap)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
