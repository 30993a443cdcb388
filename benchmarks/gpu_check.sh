#!/usr/bin/env bash
# One-shot GPU check of the 7B paths (random Qwen2.5-Omni-7B-thinker weights, bf16): capture overhead, sweep
# cost vs decoder-only / full forwards / generate, memory per token, OOM back-off (capture clips and intervention
# rows, in a limited memory budget), batched vs one-at-a-time. One H100, < 6 min; each check a JSON line as it ends.
# Writes benchmarks/out/gpu_check_omni7b_cuda.jsonl. Sizes: `--help` (extra arguments are passed on). ESN_GPU_CHECK_SHAPE=tiny runs the reduced shape (CPU ok).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$PWD/.venv/bin/python}
SHAPE=${ESN_GPU_CHECK_SHAPE:-omni7b}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
cd benchmarks
exec timeout "${ESN_GPU_CHECK_TIMEOUT:-480}" "$PYTHON" gpu_check.py --shape "$SHAPE" "$@"
