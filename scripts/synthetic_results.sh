#!/usr/bin/env bash
# Reproduces RESULTS.md: trains the three default synthetic models (VAE, CVAE, disCVAE), picks
# nothing by hand (the inference settings are config.inference's), and writes the evaluation
# table, attribute fidelity, attribute inference and one figure of each inference mode.
#
#   bash scripts/synthetic_results.sh [RUNS_DIR]        (default runs/)
#
# On this project's 2-core CPU the three trainings take about 10 min each and the full-test-set
# evaluation about an hour; on one GPU all of it takes a few minutes. SMOKE=1 shrinks every
# step to seconds (a check of the script, not results).
set -euo pipefail
RUNS=${1:-runs}
PY=${PYTHON:-python}
EXTRA=()
EVAL_N=-1
if [[ "${SMOKE:-0}" == 1 ]]; then
  EXTRA=(--config.num_train_steps=4 --config.eval_every_steps=4 --config.checkpoint_every_steps=4
         --config.log_every_steps=2 --config.num_eval_examples=32 --config.inference.steps=4
         --config.data.synthetic.num_train=256 --config.data.synthetic.num_validation=64
         --config.data.synthetic.num_test=64 --config.model.width=0.125
         --config.attribute_predictor.steps=5 --config.compilation_cache_dir=)
  EVAL_N=16
fi
for model in vae cvae discvae; do
  $PY train.py --config=configs/synthetic.py:$model --workdir=$RUNS/synthetic_$model \
      --config.progress_bar=False --config.max_checkpoints_to_keep=1 \
      --config.model.dtype=float32 "${EXTRA[@]}"
done
OUT=$RUNS/synthetic_results
mkdir -p $OUT
STEPS=()
[[ "${SMOKE:-0}" == 1 ]] && STEPS=(--steps=4)
# The table (test split), attribute fidelity and attribute inference.
$PY infer.py --mode=evaluate --workdir=$RUNS/synthetic_vae,$RUNS/synthetic_cvae,$RUNS/synthetic_discvae \
    --out=$OUT --num_examples=$EVAL_N "${STEPS[@]}"
# One figure of each mode (the progression and the edit use hair colour).
for model in cvae discvae; do
  MODES=sample,progression,reconstruct,complete,infer_attributes,edit
  [[ $model == discvae ]] && MODES=$MODES,swap
  $PY infer.py --workdir=$RUNS/synthetic_$model --mode=$MODES --attribute=hair_color \
      --out=$OUT/$model "${STEPS[@]}"
done
# How the inference defaults were chosen: validation errors over prior weight x learning rate.
for model in cvae discvae; do
  $PY infer.py --workdir=$RUNS/synthetic_$model --mode=tune --out=$OUT/tune_$model \
      --num_examples=$([[ $EVAL_N == -1 ]] && echo 256 || echo $EVAL_N) "${STEPS[@]}"
done
echo "results in $OUT"
