#!/usr/bin/env bash
# One prepared command for a bare GPU machine with no network: installs the few pure-Python
# wheels that a2i_jax needs beyond the machine's jax/flax/optax/orbax (carried in .whl/, see
# benchmarks/fetch_gpu_wheels.sh), prints the machine, and runs time-boxed parts on the GPU (the
# `parts` table below, most important first), each one process of benchmarks/bench.py,
# profile_step.py or ab_train_step.py, or train.py: paper CVAE and disCVAE (64x64, full width)
# at batch 256 in bf16, training throughput / MFU / compile time and posterior inference on
# 1,000 images (50 Adam steps timed; `infer_extrapolated_s_1000x1000` is the 1,000-step time at
# that rate); profiles of the train step; 4 train steps fused per dispatch; the paper's
# "direct" upsample + conv form side by side with the default polyphase form; and, with PARTS,
# batch 32 and 1,024, float32, A/B runs of forms, train.py's own loop.
# Writes $OUT/bench_gpu_<part>.json (after every case, so a part cut short keeps what it
# measured) and the merged $OUT/bench_gpu.json (else ./); the profile parts write
# $OUT/<part>.json, the A/B parts $OUT/<part>.jsonl. The first-tier limits (the first six
# parts) add up to 620 s.
# Every part runs whatever the parts before it did (a part that fails, or that its limit
# stops, costs only itself); the merged file holds what the bench.py parts wrote, and the last
# line names the parts that did not finish, with their exit status: the script then exits 1.
#
#   bash benchmarks/gpu.sh                    # on the GPU machine, from the repository root
#   A2I_GPU_SMOKE=1 PYTHON=.venv/bin/python bash benchmarks/gpu.sh   # CPU dry run, tiny
#   PARTS="cvae_bf16 b32" bash benchmarks/gpu.sh                  # only these parts, in this order
#   A2I_TAR=$OUT/res.tgz ...      # also archive the output folder (less the profiles' raw
#                                 # traces) after every part
#   A2I_SITE, A2I_WORK            # where the wheels go (/tmp/site) and the train parts'
#                                 # workdirs (/tmp/a2i_<part>)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SMOKE=${A2I_GPU_SMOKE:-0}
site=${A2I_SITE:-/tmp/site}
work=${A2I_WORK:-/tmp}
out_dir=${OUT:-$PWD}
mkdir -p "$out_dir" "$site" "$work"

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
# Time-boxed parts, most important first, each a separate bench.py process under its own
# limit, so that a slow compile costs only the parts after it. Each writes its JSON after every
# case. The default decoders compute upsample + 5x5 conv in polyphase form
# (model.upsample_mode); the "direct" parts time the paper's form in the same run.
#   name | limit (s) | bench.py flags
infer=(--what=train,infer --infer_images=1000 --infer_steps=50 --infer_repeats=2)
direct=--model_overrides=model.upsample_mode=direct
loop=(--config=configs/synthetic.py --config.model.image_size=64 --config.data.image_size=64
      --config.model.width=1.0 --config.batch_size=256 --config.num_train_steps=300
      --config.log_every_steps=50 --config.eval_every_steps=300
      --config.checkpoint_every_steps=300 --config.progress_bar=False
      --config.compilation_cache_dir=)
# A part whose flags start with "profile:" runs benchmarks/profile_step.py instead: a profiler
# trace of the train step, attributed to kernel categories, layers and host gaps, written to
# $OUT/<part>.json (e.g. profile_cvae.json).
parts=(
  "cvae_bf16|130|--models=cvae --batches=256 --dtypes=bfloat16 --repeats=5 --pipelined=20 ${infer[*]}"
  "discvae_bf16|150|--models=discvae --batches=256 --dtypes=bfloat16 --repeats=5 --pipelined=20 ${infer[*]}"
  "profile_cvae|90|profile: --model=cvae --batch=256 --dtype=bfloat16 --steps=5"
  "profile_discvae|110|profile: --model=discvae --batch=256 --dtype=bfloat16 --steps=5"
  "fused4|70|--models=cvae --batches=256 --dtypes=bfloat16 --repeats=5 --what=train --model_overrides=steps_per_dispatch=4,scan_unroll=false"
  "cvae_bf16_direct|70|--models=cvae --batches=256 --dtypes=bfloat16 --repeats=5 --what=train $direct"
  # Second-tier cases (run them with PARTS=... when time is left).
  "discvae_bf16_direct|80|--models=discvae --batches=256 --dtypes=bfloat16 --repeats=5 --what=train $direct"
  "b32|70|--models=cvae,discvae --batches=32 --dtypes=bfloat16 --repeats=5 --what=train"
  "discvae_fused4|80|--models=discvae --batches=256 --dtypes=bfloat16 --repeats=5 --what=train --model_overrides=steps_per_dispatch=4,scan_unroll=false"
  "discvae_b32|70|--models=discvae --batches=32 --dtypes=bfloat16 --repeats=5 --what=train"
  "cvae_f32|100|--models=cvae --batches=256 --dtypes=float32 --repeats=5 ${infer[*]}"
  # Diagnosis: where inference time goes, and the batch per device.
  "profile_cvae_infer|100|profile: --what=infer --model=cvae --batch=1000 --dtype=bfloat16 --steps=2 --infer_steps=50"
  "profile_discvae_infer|120|profile: --what=infer --model=discvae --batch=1000 --dtype=bfloat16 --steps=2 --infer_steps=50"
  "cvae_b1024|90|--models=cvae --batches=1024 --dtypes=bfloat16 --repeats=5 --what=train"
  "discvae_b1024|110|--models=discvae --batches=1024 --dtypes=bfloat16 --repeats=5 --what=train"
  # The profile's two fixes (decoder_tail "phase", max_pool "blocks": the GPU defaults since)
  # against the forms before them, side by side. Since 2026-11-30 (third session) "full" runs a
  # decoder's heads as one convolution (padded to 4 outputs), not one per head, so a rerun's
  # "before" is that form, not the one in BENCHMARKS.md's H200 table.
  "cvae_before|100|--models=cvae --batches=256 --dtypes=bfloat16 --repeats=5 ${infer[*]} --model_overrides=model.decoder_tail=full --max_pool=window"
  "discvae_before|100|--models=discvae --batches=256 --dtypes=bfloat16 --repeats=5 --what=train --model_overrides=model.decoder_tail=full --max_pool=window"
  "cvae_tail_only|70|--models=cvae --batches=256 --dtypes=bfloat16 --repeats=5 --what=train --max_pool=window"
  # The offset polyphase form of the disCVAE background's 3x3 upsampling layers (on on CPU
  # only, "auto" off on GPU until measured): against discvae_bf16 in the same lease.
  "discvae_offset_on|150|--models=discvae --batches=256 --dtypes=bfloat16 --repeats=5 ${infer[*]} --offset_polyphase=on"
  # train.py's own loop (synthetic data at the paper's size), with and without the next
  # dispatch going out before the last one's metrics are read (config.dispatch_ahead).
  "loop_ahead|90|train: ${loop[*]}"
  "loop_sync|90|train: ${loop[*]} --config.dispatch_ahead=False"
  # Inference's Adam loop rolled (one step per iteration, CPU's form) against 5 steps per
  # iteration (GPU's and TPU's since 2026-12-04), 1,000 images, side by side in one process
  # (benchmarks/ab_train_step.py: alternated rounds); and with and without the BatchNorms
  # folded into the convolutions (eval mode; on on every backend since 2026-12-04).
  "infer_unroll|150|ab: --what=infer --models=discvae,cvae --batch=1000 --rounds=3 --variants=rolled:model.dtype=bfloat16,inference.steps=50,scan_unroll=1;unroll5:model.dtype=bfloat16,inference.steps=50,scan_unroll=5"
  "infer_fold|150|ab: --what=infer --models=discvae,cvae --batch=1000 --rounds=3 --variants=unfolded:model.dtype=bfloat16,inference.steps=50,fold_batchnorm=off;folded:model.dtype=bfloat16,inference.steps=50,fold_batchnorm=on"
  # The upsampling layers as stride-2 transposed convolutions (model.upsample_mode
  # "transposed": no depth-to-space shuffle forward or backward, cuDNN's backward-data
  # kernels; 5-17x slower on CPU, whose kernels compute the dilation's zeros) against the
  # polyphase default, inference and training, side by side (2026-12-04, thirty-third session).
  "infer_transposed|150|ab: --what=infer --models=discvae,cvae --batch=1000 --rounds=3 --variants=polyphase:model.dtype=bfloat16,inference.steps=50;transposed:model.dtype=bfloat16,inference.steps=50,model.upsample_mode=transposed"
  "train_transposed|120|ab: --what=train --models=discvae,cvae --batch=256 --rounds=3 --variants=polyphase:model.dtype=bfloat16;transposed:model.dtype=bfloat16,model.upsample_mode=transposed"
)
if [ "$SMOKE" = 1 ]; then
  # CPU dry run of the same parts at a tiny size: checks this script end to end.
  export JAX_PLATFORMS=cpu
  smoke=()
  for p in "${parts[@]}"; do
    IFS='|' read -r name limit flags <<<"$p"
    flags=${flags//--batches=256/--batches=8}; flags=${flags//--batches=32/--batches=4}
    flags=${flags//--batch=256/--batch=8}; flags=${flags//--batch=1000/--batch=8}
    flags=${flags//--batches=1024/--batches=8}; flags=${flags//--infer_steps=50/--infer_steps=5}
    flags=${flags//--infer_images=1000/--infer_images=16}
    if [[ $flags == train:* ]]; then
      flags=${flags//image_size=64/image_size=32}; flags=${flags//width=1.0/width=0.0625}
      flags=${flags//batch_size=256/batch_size=8}; flags=${flags//=300/=20}
      flags=${flags//every_steps=50/every_steps=10}
      smoke+=("$name|600|$flags")
    elif [[ $flags == profile:* ]]; then smoke+=("$name|600|profile: --smoke ${flags#profile: }")
    elif [[ $flags == ab:* ]]; then smoke+=("$name|600|ab: --smoke ${flags#ab: }")
    else smoke+=("$name|600|--smoke $flags"); fi
  done
  parts=("${smoke[@]}")
fi
# PARTS="a b c" runs the named parts in that order; without it, the first tier in table order.
names=()
declare -A table
for p in "${parts[@]}"; do
  IFS='|' read -r name limit flags <<<"$p"
  names+=("$name"); table[$name]=$p
done
if [ -n "${PARTS:-}" ]; then
  run_parts=()
  for name in $PARTS; do
    [ -n "${table[$name]:-}" ] || { echo "gpu.sh: no part named $name" >&2; exit 1; }
    run_parts+=("${table[$name]}")
  done
else
  run_parts=("${parts[@]:0:6}")
fi
# A2I_TAR=file: everything so far (less the profiles' raw traces) in one archive after every
# part, written whole and then renamed, so that a lease that ends mid-run returns the parts done.
# The part file lies beside the archive (one file system: the rename is atomic), and both are
# left out of what is archived (A2I_TAR may lie in that folder); tar's status 1 (a file changed
# while read) still archives.
archive() {
  if [ -n "${A2I_TAR:-}" ]; then
    local part rc=0
    part=$(mktemp "$(dirname "$A2I_TAR")/.a2i_archive.XXXXXX")
    tar czf "$part" --exclude=./raw --exclude="./$(basename "$A2I_TAR")" \
      --exclude="./$(basename "$part")" -C "$out_dir" . || rc=$?
    if [ "$rc" -le 1 ]; then chmod 644 "$part"; mv "$part" "$A2I_TAR"; else rm -f "$part"
      echo "gpu.sh: could not archive $out_dir (tar exit $rc)" >&2; fi
  fi
}
# Under `set -e` a part's failure must not end the script: each part's status is kept in `rc`
# (`|| rc=$?`), and the commands after it that may fail on what it left (an empty or missing
# log or metrics file) end in `|| true`. The profile's one-line summary is read by awk, which
# reads the whole log: `grep | head -1` stopped the script under pipefail, on an empty log
# (grep's status 1) and on a long one (grep's SIGPIPE, status 141).
failed=()
ran=()  # The parts of this call: only their files are merged (a reused OUT may hold others').
for p in "${run_parts[@]}"; do
  IFS='|' read -r name limit flags <<<"$p"
  ran+=("$name")
  echo "--- part $name (limit ${limit} s)"
  rc=0
  if [[ $flags == train:* ]]; then
    # train.py as a user runs it; the workdir (checkpoints) stays out of $OUT.
    rm -rf "$work/a2i_$name"
    # shellcheck disable=SC2086
    timeout "$limit" "$PYTHON" train.py --workdir="$work/a2i_$name" ${flags#train: } \
      > "$out_dir/$name.log" 2>&1 || rc=$?
    cp "$work/a2i_$name/metrics.jsonl" "$out_dir/$name.metrics.jsonl" 2>/dev/null || true
    "$PYTHON" - "$out_dir/$name.metrics.jsonl" <<'PY' || true
import json, os, sys
if os.path.exists(sys.argv[1]):
  rows = [json.loads(l) for l in open(sys.argv[1])]
  rows = [r for r in rows if "train/images_per_s" in r]
  # A checkpoint or a stop between log steps ends a window early: each window says its steps
  # (train/steps), and the run's figure weighs them (images over seconds, not a mean of the
  # rates). train.py leaves compiles and evaluations out of a window's seconds.
  print("train.py images/s (steps) per window:",
        [f"{r['train/images_per_s']:.0f} ({r.get('train/steps', 0):.0f})" for r in rows])
  timed = [r for r in rows if "train/steps" in r]
  if timed:
    steps = round(sum(r["train/steps"] for r in timed))  # Floats in metrics.jsonl.
    seconds = sum(r["train/steps"] / r["train/images_per_s"] for r in timed)  # x the batch
    print(f"train.py images/s over the run's {steps} steps: {steps / seconds:.0f}")
PY
  elif [[ $flags == ab:* ]]; then
    # shellcheck disable=SC2086
    timeout "$limit" "$PYTHON" benchmarks/ab_train_step.py ${flags#ab: } \
      > "$out_dir/$name.jsonl" 2> "$out_dir/$name.log" || rc=$?
    cat "$out_dir/$name.jsonl" || true
  elif [[ $flags == profile:* ]]; then
    # shellcheck disable=SC2086
    timeout "$limit" "$PYTHON" benchmarks/profile_step.py --out="$out_dir/$name.json" \
      --raw_dir="$out_dir/raw" --compilation_cache_dir="$site/xla_cache" \
      ${flags#profile: } > "$out_dir/$name.log" 2>&1 || rc=$?
    # Its first line that is not absl's or XLA's W / I logging: the summary, or the error.
    awk '!/^[WI][0-9]/ {print; exit}' "$out_dir/$name.log" || true
  else
    rm -f "$out_dir/bench_gpu_$name.json"  # An earlier call's, which the merge would take.
    # shellcheck disable=SC2086
    timeout "$limit" "$PYTHON" benchmarks/bench.py --no_results_copy \
      --out="$out_dir/bench_gpu_$name.json" $flags > "$out_dir/bench_gpu_$name.log" 2>&1 \
      || rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    # timeout's 124: the part's limit stopped it. What it wrote before stays in $OUT.
    echo "gpu.sh: part $name stopped (exit $rc$([ "$rc" -eq 124 ] && echo ': its time limit'))"
    failed+=("$name ($rc)")
  fi
  archive || true
done
# The parts' JSON merged; a file that cannot be read (a part stopped while writing it) is
# named and left out, and the merge still writes what the others hold.
merge_rc=0
"$PYTHON" - "$out_dir" "${ran[@]}" <<'PY' || merge_rc=$?
import json, os, sys
out = sys.argv[1]
merged = {"info": None, "cases": []}
unreadable = []
for part in sys.argv[2:]:
  path = os.path.join(out, f"bench_gpu_{part}.json")
  if os.path.exists(path):
    try:
      with open(path) as f:
        r = json.load(f)
      merged["info"] = merged["info"] or r["info"]
      merged["cases"] += r["cases"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      unreadable.append(part)
      print(f"gpu.sh: {path} left out of the merge: {type(e).__name__}: {e}")
json.dump(merged, open(os.path.join(out, "bench_gpu.json"), "w"), indent=2)
for c in merged["cases"]:
  t, i = c.get("train", {}), c.get("infer", {})
  print(f"{c['model']:8s} b{c['batch']:<4d} {c['dtype']:9s} {t.get('upsample_mode')} "
        f"{t.get('decoder_tail') or i.get('decoder_tail')} {t.get('max_pool')} "
        f"x{t.get('steps_per_dispatch')} train {t.get('images_per_s')} img/s "
        f"MFU {t.get('mfu')} HFU {t.get('hfu')} compile {t.get('compile_s')} s | infer "
        f"{i.get('image_iterations_per_s')} img-it/s, 1000x1000 in "
        f"{i.get('infer_extrapolated_s_1000x1000')} s")
sys.exit(3 if unreadable else 0)
PY
echo "=== wrote $out_dir/bench_gpu.json"
# One line for the whole call: which parts did not finish (their exit status), if any, and
# whether the merge left a part's file out.
merge_note=""
if [ "$merge_rc" -ne 0 ]; then merge_note="; the merge left a file out (exit $merge_rc)"; fi
if [ ${#failed[@]} -gt 0 ]; then
  printf -v list '%s, ' "${failed[@]}"
  echo "=== gpu.sh: ${#failed[@]} of ${#run_parts[@]} parts failed (exit status):" \
       "${list%, }$merge_note"
  exit 1
fi
echo "=== gpu.sh: all ${#run_parts[@]} parts finished$merge_note"
if [ "$merge_rc" -ne 0 ]; then exit 1; fi
