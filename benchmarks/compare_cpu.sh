#!/usr/bin/env bash
# JAX (benchmarks/bench.py) and the PyTorch port (benchmarks/torch_reference.py) side by side
# on this CPU, alternating per model so both see the same machine load; writes
# benchmarks/results/cpu_vs_torch.json (one JSON object per line) and prints it.
#
#   TORCH_PYTHON=/work/venv-torch/bin/python bash benchmarks/compare_cpu.sh
#   MODELS=cvae BATCH=32 REPEATS=3 INFER_STEPS=10 bash benchmarks/compare_cpu.sh
#   MODES="polyphase direct"   # JAX runs, one per model.upsample_mode (default: both)
#   INFER_ENDS=none            # the port times the Adam steps alone (before 2026-11-30); the
#                              # default, encoder, times the call the library makes: encoder
#                              # start, steps, final decode (benchmarks/torch_reference.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_PYTHON=${TORCH_PYTHON:-/work/venv-torch/bin/python}
MODELS=${MODELS:-cvae discvae}
BATCH=${BATCH:-32}
REPEATS=${REPEATS:-3}
INFER_STEPS=${INFER_STEPS:-10}
MODES=${MODES:-polyphase direct}
INFER_ENDS=${INFER_ENDS:-encoder}
out=${OUT_FILE:-benchmarks/results/cpu_vs_torch.json}
mkdir -p "$(dirname "$out")"
: > "$out.tmp"
for model in $MODELS; do
  "$TORCH_PYTHON" benchmarks/torch_reference.py --model="$model" --batch="$BATCH" \
    --repeats="$REPEATS" --infer_steps="$INFER_STEPS" --infer_ends="$INFER_ENDS" >> "$out.tmp"
  for mode in $MODES; do
    "$PYTHON" benchmarks/bench.py --models="$model" --batches="$BATCH" --dtypes=float32 \
      --repeats="$REPEATS" --infer_steps="$INFER_STEPS" --no_results_copy \
      --model_overrides="model.upsample_mode=$mode" ${BENCH_ARGS:-} \
      | "$PYTHON" -c "import json,sys; print(json.dumps(json.load(sys.stdin)))" >> "$out.tmp"
  done
done
mv "$out.tmp" "$out"
cat "$out"
