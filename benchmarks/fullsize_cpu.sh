#!/usr/bin/env bash
# The full-size CPU run of config/fullsize_cpu.yaml, one rule at a time under /usr/bin/time -v, so each
# rule's peak memory (the largest job of that rule: "Maximum resident set size") and wall time are recorded
# in benchmarks/out/fullsize_cpu/<rule>.time. Needs ~17 GiB free RAM and the checkpoint:
#   .venv/bin/python benchmarks/make_fullsize_checkpoint.py resources/models/omni7b-random
# usage: benchmarks/fullsize_cpu.sh [extra snakemake args, e.g. --config models=... for a small shape]
set -euo pipefail
cd "$(dirname "$0")/.."
SNAKEMAKE=${SNAKEMAKE:-$PWD/.venv/bin/snakemake}
CONFIG=${ESN_FULLSIZE_CONFIG:-config/fullsize_cpu.yaml}
OUT=${ESN_FULLSIZE_OUT:-benchmarks/out/fullsize_cpu}
mkdir -p "$OUT"
for rule in prepare_corpus capture merge_shards select intervene knockout metrics knockout_table; do
    /usr/bin/time -v -o "$OUT/$rule.time" "$SNAKEMAKE" --configfile "$CONFIG" --cores 2 --until "$rule" "$@"
    grep -E "Elapsed|Maximum resident" "$OUT/$rule.time" | sed "s/^/$rule: /"
done
/usr/bin/time -v -o "$OUT/all.time" "$SNAKEMAKE" --configfile "$CONFIG" --cores 2 "$@"   # figures, the rest
grep -E "Elapsed|Maximum resident" "$OUT/all.time" | sed "s/^/rest: /"
