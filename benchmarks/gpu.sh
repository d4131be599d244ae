#!/usr/bin/env bash
# One prepared command for a bare GPU machine with no network: installs the few pure-Python
# wheels that a2i_jax needs beyond the machine's jax/flax/optax/orbax (carried in .whl/, see
# benchmarks/fetch_gpu_wheels.sh), prints the machine, and runs benchmarks/bench.py on the GPU:
# paper CVAE and disCVAE (64x64, full width), batch 256 and 32, bf16 and f32 compute; train
# throughput / MFU / compile time, and posterior inference on 1,000 images (50 Adam steps
# timed, the 1,000-step time extrapolated from that rate: `infer_extrapolated_s_1000x1000`).
# Writes $OUT/bench_gpu.json when $OUT is set (else ./bench_gpu.json), after every case, so a
# run cut short keeps what it measured. Budget: the three parts are limited to 100 + 75 + 35 s,
# so the script fits the 240 s that scripts/gpu_session.sh gives it (BENCH_LIMIT).
#
#   bash benchmarks/gpu.sh                    # on the GPU machine, from the repository root
#   A2I_GPU_SMOKE=1 PYTHON=/work/venv-new/bin/python bash benchmarks/gpu.sh   # CPU dry run, tiny
#   MODELS=cvae ...                          # one model only
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
# Three runs, most important first, each under its own time limit so that the whole script
# stays under 5 minutes and a slow compile costs only the cases after it: (1) bf16 at batch
# 256, training and inference (the issue's MFU and 1,000 x 1,000 goals), (2) the same in f32,
# (3) batch 32 training in both dtypes. Each run writes its JSON after every case.
bench() {  # $1 = time limit (s), $2 = part name, then bench.py flags
  local limit=$1 part=$2; shift 2
  timeout "$limit" "$PYTHON" benchmarks/bench.py --models="${MODELS:-cvae,discvae}" --no_results_copy \
    --out="$out_dir/bench_gpu_$part.json" "$@" || echo "gpu.sh: part $part stopped (exit $?)"
}
if [ "$SMOKE" = 1 ]; then
  # CPU dry run of the same command lines at a tiny size: checks this script end to end.
  export JAX_PLATFORMS=cpu
  bench 600 1 --smoke --batches=8 --dtypes=bfloat16 --what=train,infer --infer_images=16
  bench 600 2 --smoke --batches=8 --dtypes=float32 --what=train,infer --infer_images=16
  bench 600 3 --smoke --batches=4 --dtypes=bfloat16,float32 --what=train
else
  infer=(--what=train,infer --infer_images=1000 --infer_steps=50 --infer_repeats=2)
  bench 100 1 --batches=256 --dtypes=bfloat16 --repeats=5 "${infer[@]}"
  bench 75 2 --batches=256 --dtypes=float32 --repeats=5 "${infer[@]}"
  bench 35 3 --batches=32 --dtypes=bfloat16,float32 --repeats=5 --what=train
fi
"$PYTHON" - "$out_dir" <<'PY'
import json, os, sys
out = sys.argv[1]
merged = {"info": None, "cases": []}
for part in ("1", "2", "3"):
  path = os.path.join(out, f"bench_gpu_{part}.json")
  if os.path.exists(path):
    r = json.load(open(path))
    merged["info"] = merged["info"] or r["info"]
    merged["cases"] += r["cases"]
json.dump(merged, open(os.path.join(out, "bench_gpu.json"), "w"), indent=2)
for c in merged["cases"]:
  t, i = c.get("train", {}), c.get("infer", {})
  print(f"{c['model']:8s} b{c['batch']:<4d} {c['dtype']:9s} train {t.get('images_per_s')} img/s "
        f"MFU {t.get('mfu')} compile {t.get('compile_s')} s | infer "
        f"{i.get('image_iterations_per_s')} img-it/s, 1000x1000 in "
        f"{i.get('infer_extrapolated_s_1000x1000')} s")
PY
echo "=== wrote $out_dir/bench_gpu.json"
