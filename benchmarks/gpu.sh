#!/usr/bin/env bash
# One prepared command for a bare GPU machine with no network: installs the few pure-Python
# wheels that a2i_jax needs beyond the machine's jax/flax/optax/orbax (carried in .whl/, see
# benchmarks/fetch_gpu_wheels.sh), prints the machine, and runs benchmarks/bench.py on the GPU:
# paper CVAE and disCVAE (64x64, full width), batch 256 and 32, bf16 and f32 compute; train
# throughput / MFU / compile time, and posterior inference on 1,000 images (100 Adam steps
# timed, the 1,000-step time extrapolated from that rate: `infer_extrapolated_s_1000x1000`).
# Writes $OUT/bench_gpu.json when $OUT is set (else ./bench_gpu.json), after every case, so a
# run cut short keeps what it measured. Budget: under 5 minutes on one H100.
#
#   bash benchmarks/gpu.sh                    # on the GPU machine, from the repository root
#   A2I_GPU_SMOKE=1 PYTHON=/work/venv-new/bin/python bash benchmarks/gpu.sh   # CPU dry run, tiny
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SMOKE=${A2I_GPU_SMOKE:-0}
site=${A2I_SITE:-/tmp/site}
out_dir=${OUT:-$PWD}
mkdir -p "$out_dir" "$site"

shopt -s nullglob
wheels=(.whl/ml_collections-*.whl .whl/tensorboardx-*.whl)
if [ ${#wheels[@]} -ne 2 ]; then
  echo "gpu.sh: .whl/ must hold the ml_collections and tensorboardX wheels; run" \
       "'bash benchmarks/fetch_gpu_wheels.sh' on a machine with network first." >&2
  exit 1
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "${wheels[@]}"
# PyYAML and packaging come with flax and tensorboard; install the carried ones only if absent.
for pair in yaml:pyyaml packaging:packaging; do
  mod=${pair%%:*}; pat=${pair##*:}
  if ! "$PYTHON" -c "import $mod" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/"$pat"-*.whl
  fi
done
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"

echo "=== machine"; date -u
nvidia-smi || echo "(no nvidia-smi)"
"$PYTHON" - <<'PY'
import sys, jax, jaxlib, flax, optax, orbax.checkpoint, ml_collections, tensorboardX
print("python", sys.version.split()[0], "| jax", jax.__version__, "jaxlib", jaxlib.__version__,
      "| flax", flax.__version__, "| optax", optax.__version__)
print("devices:", jax.devices())
import a2i_jax.train_lib, a2i_jax.inference  # Fails here, not mid-benchmark, if an import is missing.
for banned in ("tensorflow", "tensorflow_datasets"):
  assert banned not in sys.modules, f"{banned} was imported"
PY

echo "=== benchmark"
if [ "$SMOKE" = 1 ]; then
  # CPU dry run of the same command line at a tiny size: checks this script end to end.
  JAX_PLATFORMS=cpu timeout 600 "$PYTHON" benchmarks/bench.py --smoke --models=cvae,discvae \
    --batches=8,4 --dtypes=bfloat16,float32 --what=train,infer --infer_images=16 \
    --out="$out_dir/bench_gpu.json"
else
  timeout 285 "$PYTHON" benchmarks/bench.py --models=cvae,discvae --batches=256,32 \
    --dtypes=bfloat16,float32 --what=train,infer --repeats=5 --infer_images=1000 \
    --infer_steps=100 --out="$out_dir/bench_gpu.json"
fi
echo "=== wrote $out_dir/bench_gpu.json"
