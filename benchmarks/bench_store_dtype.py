"""Store size per utterance (float32 vs float16) at the 7B shape, and the agreement of selections from the two.

    OMP_NUM_THREADS=1 python benchmarks/bench_store_dtype.py /tmp/store_dtype \
        [--utterances 256] [--organism results/activations/organism/synthetic.zarr ...]

1. A simulated store of the Qwen2.5-Omni-7B thinker shape (28 layers × 18 944 neurons, groups audio/prompt/last,
   attribution on; `esn.planted`: realistic statistics of gated activations with planted emotion-sensitive
   neurons), written twice with the project's store writer (Blosc zstd-3 shuffle), float32 and float16, from the
   same values: bytes on disk per utterance, per variable, extrapolated linearly to 100k utterances.
2. Every selector on both stores (audio group): Jaccard per selector × emotion at the fractions swept.
3. The same for each organism store given (a float16 copy cast exactly as capture casts), for the full
   identification set and the identification-size subsamples 10 and 50 per emotion.

Writes `benchmarks/out/store_dtype.json` (and `store_dtype_agreement.csv`, every Jaccard).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from esn import planted, store
from esn import selectors as S

OUT = Path(__file__).resolve().parent / "out"
FRACTIONS = [0.01, 0.02, 0.05, 0.1]
SEVEN_B = (28, 18944)


def disk_bytes(path: Path) -> dict[str, int]:
    """Bytes on disk per top-level variable of a store."""
    sizes: dict[str, int] = {}
    for f in path.rglob("*"):
        if f.is_file():
            top = f.relative_to(path).parts[0]
            sizes[top] = sizes.get(top, 0) + f.stat().st_size
    return sizes


def as_float16(src: Path, dst: Path) -> int:
    """A float16 copy of a float32 store, block by block through `store.saturate` (as capture casts); returns the
    number of clipped values."""
    g = store.open_zarr_group(src)
    layout = store.layout_of(g)
    rows = pd.DataFrame({c: g[c][:] for c in ("utterance", *store.UTTERANCE_COORDS)}).rename(
        columns={"utterance": "utterance_id"})
    attrs = {k: v for k, v in g.attrs.items() if k != "layout"} | {"store_dtype": "float16"}
    half = store.StoreLayout(**{**layout.__dict__, "dtype": "float16"})
    partial = dst.with_name(dst.name + ".partial")
    out = store.create(partial, rows, half, attrs)
    names = [n for n in ("mean_activation", "frac_positive", "n_positions", "label_prob", "predicted", "correct",
                         "attribution") if n in g]
    clipped = 0
    for k in range(layout.n_blocks):
        sl = layout.block(k)
        values = {n: g[n][sl] for n in names}
        for n in ("mean_activation", "frac_positive"):
            values[n] = store.saturate(values[n], "float16").astype("float16")
        clipped += store.n_saturated(values["mean_activation"])
        store.write_block(out, k, values)
    out.attrs["saturated"] = str(clipped)
    store.finalize(partial, dst)
    return clipped


def selections(path: Path, variants: dict[str, int | None]) -> dict[str, dict[str, object]]:
    """{variant: {selector: selection}} of one store."""
    return {v: {s: S.select(path, s, per_emotion=n, random_draws=0) for s in S.SELECTORS} for v, n in variants.items()}


def compare(a: dict, b: dict, where: str) -> pd.DataFrame:
    return pd.concat([S.agreement(a[v], b[v], FRACTIONS).assign(store=where, variant=v) for v in a], ignore_index=True)


#: float16 is the default where, for every selector × emotion × fraction, the sets agree at Jaccard >= 0.95, or
#: differ by at most one swapped neuron (a set of k <= 40 neurons cannot reach 0.95 with one swap: (k-1)/(k+1)).
JACCARD_BAR, MAX_SWAPPED = 0.95, 1


def summary(table: pd.DataFrame) -> dict:
    out = {}
    for (w, s), x in table.groupby(["store", "selector"]):
        holds = (x["jaccard"] >= JACCARD_BAR) | (x["swapped"] <= MAX_SWAPPED)
        out[f"{w}/{s}"] = {"min": round(float(x["jaccard"].min()), 4), "median": round(float(x["jaccard"].median()), 4),
                           "rows": len(x), "rows_below_0.95": int((x["jaccard"] < JACCARD_BAR).sum()),
                           "max_swapped": int(x["swapped"].max()), "criterion_holds": bool(holds.all())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", type=Path, help="scratch folder for the stores (several GB)")
    ap.add_argument("--utterances", type=int, default=256)
    ap.add_argument("--layers", type=int, default=SEVEN_B[0])
    ap.add_argument("--neurons", type=int, default=SEVEN_B[1])
    ap.add_argument("--organism", nargs="*", type=Path, default=[])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": {"python": platform.python_version(), "platform": platform.platform()},
                    "compressor": str(store.COMPRESSOR.to_dict()), "fractions": FRACTIONS}
    tables = []

    sim = {"utterances": args.utterances, "layers": args.layers, "neurons": args.neurons,
           "groups": list(planted.GROUPS), "attribution": True, "planted_fraction": 0.01, "effect": 0.5}
    paths = {}
    for dtype in ("float32", "float16"):
        paths[dtype] = args.work / f"sim_{dtype}.zarr"
        t0 = time.perf_counter()
        planted.write_store(paths[dtype], args.utterances, args.layers, args.neurons, dtype=dtype, seed=0)
        sizes = disk_bytes(paths[dtype])
        total = sum(sizes.values())
        sim[dtype] = {"write_s": round(time.perf_counter() - t0, 1),
                      "bytes_per_utterance": round(total / args.utterances),
                      "per_variable": {k: round(v / args.utterances) for k, v in sorted(sizes.items()) if v > 1e5},
                      "tb_per_100k_utterances": round(total / args.utterances * 1e5 / 1e12, 3)}
        per_layer = args.layers * args.neurons
        raw = per_layer * np.dtype(dtype).itemsize * 2 * len(planted.GROUPS) + per_layer * 4  # + float32 attribution
        sim[dtype]["raw_bytes_per_utterance"] = raw
        print(dtype, sim[dtype], flush=True)
    t0 = time.perf_counter()
    sels = {d: selections(p, {"all": None}) for d, p in paths.items()}
    sim["select_s"] = round(time.perf_counter() - t0, 1)
    tables.append(compare(sels["float32"], sels["float16"], "simulated_7b"))
    planted_sets = planted.PlantedNeurons(args.layers, args.neurons, planted.EMOTIONS, 0.01, 0.5, 0).planted
    sim["mad_recovers_planted_at_1pct"] = [round(float(x), 3) for x in
                                           (S.selected_mask(sels["float32"]["all"]["mad"], 0.01).values & planted_sets)
                                           .sum((1, 2)) / planted_sets.sum((1, 2))]
    report["simulated_7b"] = sim
    for d in paths.values():
        shutil.rmtree(d)

    for src in args.organism:
        name = f"organism_{src.stem}"
        half = args.work / f"{name}_float16.zarr"
        clipped = as_float16(src, half)
        n = store.open_store(src).sizes["utterance"]
        variants = {"all": None, "n10s0": 10, "n50s0": 50}
        tables.append(compare(selections(src, variants), selections(half, variants), name))
        report[name] = {"store": str(src), "utterances": n, "clipped": clipped,
                        "bytes_per_utterance": {d: round(sum(disk_bytes(p).values()) / n) for d, p in
                                                (("float32", src), ("float16", half))}}
        shutil.rmtree(half)

    table = pd.concat(tables, ignore_index=True)
    report["jaccard_min_median"] = summary(table)
    report["jaccard_min_overall"] = round(float(table["jaccard"].min()), 4)
    report["criterion"] = f"Jaccard >= {JACCARD_BAR} or at most {MAX_SWAPPED} neuron swapped, every row"
    report["criterion_holds"] = all(v["criterion_holds"] for v in report["jaccard_min_median"].values())
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "store_dtype_agreement.csv", index=False)
    (args.out / "store_dtype.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["jaccard_min_median"], indent=1))
    print("overall min Jaccard", report["jaccard_min_overall"], "criterion holds:", report["criterion_holds"])


if __name__ == "__main__":
    main()
