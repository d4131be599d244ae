#!/usr/bin/env bash
# JAX (benchmarks/bench.py) and the PyTorch port (benchmarks/torch_reference.py) side by side
# on this CPU, alternating per model so both see the same machine load; writes
# benchmarks/results/cpu_vs_torch.json (or OUT_FILE; one JSON object per line), prints this
# run's records and their summary.
#   APPEND=1                   # keep the file's earlier records before this run's (default:
#                              # replace them)
#
#   TORCH_PYTHON=/work/venv-torch/bin/python bash benchmarks/compare_cpu.sh
#   MODELS=cvae BATCH=32 REPEATS=3 INFER_STEPS=10 bash benchmarks/compare_cpu.sh
#   MODES="polyphase direct"   # JAX runs, one per model.upsample_mode (default: both)
#   INFER_ENDS=none            # the port times the Adam steps alone (before 2026-11-30); the
#                              # default, encoder, times the call the library makes: encoder
#                              # start, steps, final decode (benchmarks/torch_reference.py)
#   INTERLEAVE=1               # the port and each JAX mode side by side, taking strict turns
#                              # (benchmarks/timing.py): their timed calls alternate one by one
#                              # and the port runs once per mode. Not the default: a call right
#                              # after the other side's ran slower, JAX's by a fifth to a half
#                              # (BENCHMARKS.md, "Page faults"). The default, 0: each side's
#                              # calls in a row, the port then JAX, model by model.
#   ISA=avx2                   # both sides held to AVX2 instructions on an AVX-512 machine, an
#                              # emulation of an AVX2-only CPU: oneDNN capped (the port's
#                              # convolutions, and the matrix products inside XLA's own), ATen's
#                              # kernels and XLA's generated code at AVX2, and YNNPACK off, since
#                              # it ignores XLA's cap (BENCHMARKS.md, "The AVX2 judge, emulated")
#   BENCH_ARGS="--max_pool=window"     # more bench.py flags for the JAX side; the flags this
#                              # script sets itself (--models --batches --dtypes --repeats
#                              # --infer_steps --model_overrides --no_results_copy, or a prefix
#                              # argparse would take for one) are refused: argparse keeps the
#                              # last, so they silently replaced the script's (until 2026-12-06)
#   MODEL_OVERRIDES=model.conv_weight_grad=xla   # more JAX config overrides, after each mode's
#                              # model.upsample_mode (which they may not set)
# benchmarks/compare_summary.py reads the output: the ratios per model, and per pair of calls.
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
INTERLEAVE=${INTERLEAVE:-0}
ISA=${ISA:-native}
case "$ISA" in
  native) ;;
  avx2)
    export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
    export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_cpu_max_isa=AVX2 --xla_cpu_experimental_ynn_fusion_type="
    ;;
  *) echo "error: ISA=$ISA; use native (the default) or avx2." >&2; exit 1 ;;
esac
# The flags jax_run sets: BENCH_ARGS may not repeat them (or a prefix of one, which argparse
# takes for it), and MODEL_OVERRIDES may not set the mode's override. Checked before anything
# is written or run.
own_flags="--models --batches --dtypes --repeats --infer_steps --model_overrides --no_results_copy"
for word in ${BENCH_ARGS:-}; do
  name=${word%%=*}
  case "$name" in --?*) ;; *) continue ;; esac
  for flag in $own_flags; do
    case "$flag" in "$name"*)
      echo "error: BENCH_ARGS repeats $name, which compare_cpu.sh sets itself ($flag); use" \
        "MODELS, BATCH, REPEATS, INFER_STEPS, MODES or MODEL_OVERRIDES instead." >&2
      exit 1 ;;
    esac
  done
done
case ",${MODEL_OVERRIDES:-}" in *,model.upsample_mode=*)
  echo "error: MODEL_OVERRIDES sets model.upsample_mode, which MODES sets per run; use" \
    "MODES=\"polyphase\" (or direct) instead." >&2
  exit 1 ;;
esac
out=${OUT_FILE:-benchmarks/results/cpu_vs_torch.json}
mkdir -p "$(dirname "$out")"
: > "$out.tmp"
work=$(mktemp -d)
# No benchmark outlives the script (e.g. one side left waiting for a turn after an error).
trap 'jobs -p | xargs -r kill 2>/dev/null; rm -rf "$work"' EXIT

torch_run() {  # model
  "$TORCH_PYTHON" benchmarks/torch_reference.py --model="$1" --batch="$BATCH" \
    --repeats="$REPEATS" --infer_steps="$INFER_STEPS" --infer_ends="$INFER_ENDS"
}
jax_run() {  # model mode
  "$PYTHON" benchmarks/bench.py --models="$1" --batches="$BATCH" --dtypes=float32 \
    --repeats="$REPEATS" --infer_steps="$INFER_STEPS" --no_results_copy \
    --model_overrides="model.upsample_mode=$2${MODEL_OVERRIDES:+,$MODEL_OVERRIDES}" \
    ${BENCH_ARGS:-} \
    | "$PYTHON" -c "import json,sys; print(json.dumps(json.load(sys.stdin)))"
}

for model in $MODELS; do
  if [ "$INTERLEAVE" = 1 ]; then
    for mode in $MODES; do
      turns="$work/turns_${model}_$mode"
      mkdir "$turns"
      mkfifo "$turns/turn0" "$turns/turn1"  # The pipes benchmarks/timing.py's Turns reads.
      exec 3<>"$turns/turn0" 4<>"$turns/turn1"  # Held open here: a "d" below always lands.
      A2I_BENCH_TURNS="$turns:0" torch_run "$model" > "$work/torch.json" &
      pids=($!)
      A2I_BENCH_TURNS="$turns:1" jax_run "$model" "$mode" > "$work/jax.json" &
      pids+=($!)
      rc=0
      wait -n -p first "${pids[@]}" || rc=$?  # bash >= 5.1
      # Whichever ended first (finished, failed or killed), the other never waits for it.
      printf d >&3
      printf d >&4
      for pid in "${pids[@]}"; do
        [ "$pid" = "$first" ] || wait "$pid" || rc=$?
      done
      exec 3>&- 4>&-
      if [ "$rc" != 0 ]; then
        echo "error: a benchmark of $model ($mode) failed (exit $rc); see its output above." >&2
        exit 1
      fi
      cat "$work/torch.json" "$work/jax.json" >> "$out.tmp"
    done
  else
    torch_run "$model" >> "$out.tmp"
    for mode in $MODES; do
      jax_run "$model" "$mode" >> "$out.tmp"
    done
  fi
done
# The summary is of this run's records. APPEND=1 keeps an existing file's records before them
# (a second run quoted beside the first needs both kept: without it they are replaced).
run="$work/$(basename "$out")"  # Named as the output in the summary.
cp "$out.tmp" "$run"
if [ "${APPEND:-0}" = 1 ] && [ -s "$out" ]; then
  cat "$out" "$out.tmp" > "$out.all" && rm -f "$out.tmp" && mv "$out.all" "$out"
else
  mv "$out.tmp" "$out"
fi
cat "$run"
"$PYTHON" benchmarks/compare_summary.py "$run"
