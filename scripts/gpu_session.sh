#!/usr/bin/env bash
# The one prepared command for a lent GPU machine (no network there): installs the carried
# pure-Python wheels (.whl/, see benchmarks/fetch_gpu_wheels.sh), then within one call
#   1. reproduces RESULTS.md (scripts/synthetic_results.sh), and
#   2. runs the GPU benchmark (benchmarks/gpu.sh),
# each under its own time limit so one overrunning cannot starve the other. Everything that
# comes back is written under $OUT: logs, the results tree as results.tgz, the checkpoints.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    .whl/ml_collections-*.whl .whl/tensorboardx-*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
PYTHON=python3 timeout ${RESULTS_LIMIT:-330} bash scripts/synthetic_results.sh runs 2>&1 \
    | grep -v '^[IW][0-9]\{4\} ' > "$OUT/results.log"
echo "results: exit ${PIPESTATUS[0]}"; tail -5 "$OUT/results.log"
tar czf "$OUT/results.tgz" runs/synthetic_results runs/*/config.json runs/*/metrics.jsonl \
    runs/*/samples 2>/dev/null
for m in vae cvae discvae; do  # One archive per model: each file must stay under 16 MiB.
  tar czf "$OUT/ckpt_$m.tgz" runs/synthetic_$m/checkpoints runs/synthetic_$m/attribute_predictor \
      2>/dev/null
done
ls -la "$OUT"
if [[ -f benchmarks/gpu.sh ]]; then
  timeout ${BENCH_LIMIT:-240} bash benchmarks/gpu.sh > "$OUT/bench.log" 2>&1
  echo "bench: exit $?"; tail -30 "$OUT/bench.log"
fi
