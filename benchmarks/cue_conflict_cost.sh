#!/usr/bin/env bash
# CPU cost of the default config's cue-conflict check (corpus preparation, the rule, its figure), each job forced to
# re-run alone, minus a dry run of the same command (Snakemake's own planning). Needs the shipped organism assembled
# in the work folder first. Usage: benchmarks/cue_conflict_cost.sh [work folder]  -> benchmarks/out/cue_conflict_cost.txt
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/cue_conflict_cost}
export PATH=$PWD/.venv/bin:$PATH OMP_NUM_THREADS=1
out=benchmarks/out/cue_conflict_cost.txt
sm() { snakemake "$@" --cores 1 --directory "$work" -s Snakefile --configfile "$PWD/config/config.yaml" -q; }
sm resources/models/organism/model.safetensors >/dev/null
{
  echo "# $(date -u +%FT%TZ) $(nproc --all) cores; CPU = user + sys seconds of snakemake and its job; job = forced - dry"
  for pair in "resources/corpora/conflict/manifest.parquet prepare_corpus" \
              "results/tables/cue_conflict/organism/conflict.summary.csv cue_conflict" \
              "results/figures/organism/cue_conflict/conflict.png figure_cue_conflict"; do
    set -- $pair
    sm "$1" >/dev/null  # inputs in place
    dry=$( { /usr/bin/time -f "%U %S %e" snakemake -n "$1" --forcerun "$2" --allowed-rules "$2" --cores 1 \
             --directory "$work" -s Snakefile --configfile "$PWD/config/config.yaml" -q >/dev/null; } 2>&1 | tail -1)
    run=$( { /usr/bin/time -f "%U %S %e" snakemake "$1" --forcerun "$2" --allowed-rules "$2" --cores 1 \
             --directory "$work" -s Snakefile --configfile "$PWD/config/config.yaml" -q >/dev/null; } 2>&1 | tail -1)
    python3 -c "d=list(map(float,'$dry'.split())); r=list(map(float,'$run'.split()));
print(f'$2: job CPU {r[0]+r[1]-d[0]-d[1]:.1f} s (forced {r[0]+r[1]:.1f}, dry {d[0]+d[1]:.1f}); wall {r[2]:.1f} s (dry {d[2]:.1f})')"
  done
} | tee "$out"
