"""Training: the pure jitted train and eval steps, and the loop (`train_and_evaluate`).

The train state and the optimiser are in `train_state`; the loop's evaluation, sample grids
and divergence report in `train_eval`.

`train_and_evaluate(config, workdir)` runs in named stages: config and mesh, input, model and
optimiser, checkpoint (resume), train loop. The update is a pure function of (state, batch,
key); the rng is not stored but folded in by step, so a resumed run draws exactly the batches
and noise an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shlex
import sys
import time
from typing import Any, Callable, Iterable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from a2i_jax import (checkpoints, config_lib, distributed, files, interrupts, models,
                     objectives, parallel, perf, sampling, train_eval)
from a2i_jax import progress as bars  # `_loop` holds its bar as `progress`.
from a2i_jax.data import load_dataset, pipeline
from a2i_jax.data.base import data_fingerprint, validate_split, warn_small_train_split
from a2i_jax.errors import (A2IError, CheckpointError, ConfigError, TrainingDivergedError,
                            TrainingInterrupted, WorkdirError)
from a2i_jax.inputs import check_int
from a2i_jax import metrics as metrics_lib
from a2i_jax.metrics import MetricWriter
from a2i_jax.train_state import (GRAD_NORM_LIMIT, TrainState, abstract_train_state,
                                 clip_by_global_norm, create_train_state, flat_opt_state,
                                 global_norm, legacy_optimizer, make_optimizer)

Array = jax.Array
PyTree = Any


def _tree_where(pred: Array, new: PyTree, old: PyTree) -> PyTree:
  return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), new, old)


# Model outputs whose size tells how close a step is to an overflow: log-variances (exp'd by
# the losses) and pre-sigmoid logits. Their largest |value| is in every step's metrics.
_WATCHED_OUTPUTS = ("mu", "logvar", "x_logvar", "mu_fg", "logvar_fg", "mu_bg", "logvar_bg",
                    "gate_logits")


def _make_loss_fn(model: flax.linen.Module, config: ml_collections.ConfigDict) -> Callable:
  """`loss_fn(params, batch_stats, x, y, m, rngs) -> (terms, outputs, new batch_stats)`."""
  del config

  def loss_fn(params, batch_stats, x, y, m, rngs):
    outputs, mutated = model.apply({"params": params, "batch_stats": batch_stats}, x, y, m,
                                   train=True, rngs=rngs, mutable=["batch_stats"])
    terms = objectives.weighted_sums(model.loss_terms(outputs, x, m))
    return terms, outputs, mutated["batch_stats"]

  return loss_fn


def _step_inputs(batch: dict, key: Array, config: ml_collections.ConfigDict):
  """Augmented images, attributes, masks and the step's random streams."""
  k_aug, k_reparam, k_drop = jax.random.split(key, 3)
  x, m = pipeline.augment(k_aug, batch["images"], batch.get("masks"), config.data.augment)
  return x, batch["attributes"], m, {"reparam": k_reparam, "dropout": k_drop}


def make_train_step(model: flax.linen.Module, tx: optax.GradientTransformation,
                    config: ml_collections.ConfigDict) -> Callable:
  """Returns `train_step(state, batch, key) -> (state, metrics)`, pure and unjitted.

  `batch` holds uint8 images [B,H,W,3], float attributes [B,A] and (disCVAE) uint8 masks
  [B,H,W]; augmentation happens inside. A step whose loss or gradient is not finite, or
  whose gradient norm after clipping is `train_state.GRAD_NORM_LIMIT` or more (Adam's float32
  squares could overflow), leaves the state untouched and reports `finite = False`, so the
  caller can stop on the last good state and name the term that failed (`make_term_report`,
  `train_eval.divergence_error`) or the norm (`_gradient_overflow_error`).
  Metrics are per image (sums divided by the batch size).

  Args:
    model: from `models.create_model`.
    tx: from `train_state.make_optimizer`.
    config: the experiment config (configs/default.py).
  Returns:
    The train step function; metrics are scalars: the loss terms, "grad_norm", "finite",
    "max_abs/<output>" (the largest |value| of each log-variance, mean and logit output: how
    close the step is to an overflow) and "term_finite" (a dict of 0/1 per loss term).
  """
  loss_fn = _make_loss_fn(model, config)
  clip = float(config.get("grad_clip_norm", 0.0))  # >= 0: config_lib.validate_config.

  def train_step(state: TrainState, batch: dict, key: Array) -> tuple[TrainState, dict]:
    x, y, m, rngs = _step_inputs(batch, key, config)

    def total(params):
      terms, outputs, batch_stats = loss_fn(params, state.batch_stats, x, y, m, rngs)
      return terms["loss"], (terms, outputs, batch_stats)

    (loss, (sums, outputs, batch_stats)), grads = jax.value_and_grad(total, has_aux=True)(
        state.params)
    grads, grad_norm = clip_by_global_norm(grads, clip)  # grad_norm: before clipping.
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The norm Adam gets must stay under GRAD_NORM_LIMIT, or its float32 squares could
    # overflow (a NaN norm fails the comparison too). An infinite norm is refused also where
    # clipping would bring it down: its scale clip / inf is 0, and 0 x inf a NaN.
    taken = jnp.minimum(grad_norm, clip) if clip > 0 else grad_norm
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & (taken < GRAD_NORM_LIMIT)
    new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                           opt_state=opt_state)
    metrics = {k: v / x.shape[0] for k, v in sums.items()}
    metrics.update(grad_norm=grad_norm, finite=finite)
    metrics.update({f"max_abs/{k}": jnp.max(jnp.abs(outputs[k]))
                    for k in _WATCHED_OUTPUTS if k in outputs})
    metrics["term_finite"] = {k: jnp.isfinite(v) for k, v in sums.items()}
    return _tree_where(finite, new_state, state), metrics

  return train_step


def _gradient_overflow_error(loss: Any, grad_norm: Any, config: ml_collections.ConfigDict,
                             step: int, last_good: Optional[int],
                             directory: str) -> Optional[TrainingDivergedError]:
  """The error for a step refused for its gradient norm alone (`make_train_step`): a finite
  loss and a finite norm at or past `GRAD_NORM_LIMIT` after clipping. Was: "the loss became
  NaN or infinite", the norm inf (a float32 overflow of a finite gradient), and advice to set
  config.grad_clip_norm that could not help (fault hunt). None for any other failed step."""
  loss, grad_norm = float(loss), float(grad_norm)
  if not (math.isfinite(loss) and math.isfinite(grad_norm)):
    return None
  clip = float(config.get("grad_clip_norm", 0.0))
  fix = ("set config.grad_clip_norm (e.g. 1e4)" if clip <= 0 else
         f"lower config.grad_clip_norm ({clip:.4g}) below it (e.g. 1e4)")
  return TrainingDivergedError(
      f"the gradient norm reached {grad_norm:.4g} at step {step} (the loss, {loss:.4g} per "
      f"image, is finite), past the {GRAD_NORM_LIMIT:.2g} the optimiser can take after "
      "clipping (Adam's float32 squares would overflow); training stopped. "
      f"{train_eval.last_checkpoint_words(last_good, directory)} Lower "
      f"config.learning_rate, or {fix}.")


def make_term_report(model: flax.linen.Module, config: ml_collections.ConfigDict,
                     mesh: Mesh) -> Callable:
  """`report(state, data, key) -> {term: (value, gradient norm)}` for the step at `state`.

  Run only when a step has failed: it redraws that step's batch and noise (the same fold of
  `key` by `state.step` as `make_multi_step`) and differentiates each loss term on its own,
  so a divergence can be traced to the term whose value or gradient is not finite.

  The model runs forward once (`jax.linearize`), and each term's gradient is the transpose of
  that linear map restricted to the term (`jax.linear_transpose`): the other terms' paths get
  no cotangent at all, not a zero one, so an infinite partial derivative in one term cannot
  turn another's gradient into NaN (0 x inf), as it could through `jax.vjp` with a one-hot
  cotangent.

  Args:
    model: from `models.create_model`.
    config: the experiment config.
    mesh: the device mesh of the training run.
  Returns:
    The (jitted) report function; values are per image, gradient norms of the summed term.
  """
  loss_fn = _make_loss_fn(model, config)
  batch_sharding = parallel.batch_sharded(mesh)

  def report(state: TrainState, data: dict, key: Array) -> dict:
    k_batch, k_step = jax.random.split(jax.random.fold_in(key, state.step))
    batch = jax.lax.with_sharding_constraint(
        pipeline.sample_batch(k_batch, data, config.batch_size), batch_sharding)
    x, y, m, rngs = _step_inputs(batch, k_step, config)
    terms, linear = jax.linearize(
        lambda p: loss_fn(p, state.batch_stats, x, y, m, rngs)[0], state.params)
    out = {}
    for name in terms:
      (grads,) = jax.linear_transpose(lambda t, n=name: linear(t)[n], state.params)(
          jnp.ones_like(terms[name]))
      out[name] = (terms[name] / x.shape[0], global_norm(grads))
    return out

  # It runs once, after a failure: compiled without LLVM's optimisations, the paper disCVAE's
  # report compiled in 6.3 s instead of 9.9 and ran in 7.1 s instead of 5.3 (BENCHMARKS.md,
  # "Programs that run once"); each term's norm with the small leaves as one vector then took
  # its compile to 4.5-4.8 s (BENCHMARKS.md, "... the gradient norm's small leaves"). One
  # forward pass instead of a forward and backward per term halved its trace, kept its compile
  # the same or shorter and its run about the same: the paper disCVAE's report in all 24.6-31.2 s
  # instead of 29.3-32.0 (BENCHMARKS.md, "The divergence report in one forward pass").
  return perf.jit(report, extra_options=models.CHEAP_COMPILE)


def jit_train_steps(model: flax.linen.Module, tx: optax.GradientTransformation,
                    config: ml_collections.ConfigDict, mesh: Mesh,
                    steps: Optional[int] = None) -> Callable:
  """The train dispatch `train.py` runs: `make_multi_step(make_train_step(...))` through
  `perf.jit` (the library's compile options), the state (argument 0) donated: the state
  passed in is deleted by the call (on one device, also the arrays it was made from), so
  keep only the one returned.

  Args:
    model: from `models.create_model`.
    tx: from `make_optimizer`.
    config: the experiment config.
    mesh: from `parallel.make_mesh`.
    steps: train steps per call, a positive integer; default `config.steps_per_dispatch`.
  Returns:
    The jitted `steps(state, data, key) -> (state, metrics)`.
  Raises:
    InputError: `steps` is not a positive integer (`make_multi_step`).
  """
  return perf.jit(make_multi_step(make_train_step(model, tx, config), config, mesh, steps),
                  donate_argnums=(0,))


def make_multi_step(train_step: Callable, config: ml_collections.ConfigDict,
                    mesh: Mesh, steps: Optional[int] = None) -> Callable:
  """`steps(state, data, key)`: `config.steps_per_dispatch` train steps in one `lax.scan`.

  Each step draws its batch from the on-device `data` with a key folded from the base key and
  the step number, splits it over the mesh, and updates.

  Args:
    train_step: from `make_train_step`.
    config: the experiment config (configs/default.py).
    mesh: from `parallel.make_mesh`; the batch is sharded over it.
    steps: the number of steps per call, a positive integer, if not
      `config.steps_per_dispatch` (the loop runs single steps where a dispatch would pass
      `num_train_steps`).
  Returns:
    `steps(state, data, key) -> (state, metrics)`, where data holds the whole training split
    ("images" [N,H,W,3] uint8, "attributes" [N,A], "masks" [N,H,W]) and every metric has a
    leading axis [steps].
  Raises:
    InputError: `steps` is not a positive integer (was: 2.5 ran 2 steps, 0 none while the
      state passed in was donated, -1 an MLIR traceback; review).
  """
  if steps is not None:
    steps = check_int(steps, "steps", 1, usage="the number of train steps per call, or None "
                      "for config.steps_per_dispatch")
  batch_sharding = parallel.batch_sharded(mesh)
  length = config.steps_per_dispatch if steps is None else steps

  def one(state: TrainState, data: dict, key: Array) -> tuple[TrainState, dict]:
    step_key = jax.random.fold_in(key, state.step)
    k_batch, k_step = jax.random.split(step_key)
    batch = pipeline.sample_batch(k_batch, data, config.batch_size)
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return train_step(state, batch, k_step)

  def run(state: TrainState, data: dict, key: Array) -> tuple[TrainState, dict]:
    if length == 1:
      # No loop for one step: the plain step, traced as such (XLA removes a loop of one trip
      # as well, on jax 0.7.2 and 0.10). Before the gradients were written in the canonical
      # layout (`perf.conv_weight_grad_layout`), XLA:CPU ran a loop body of train steps many
      # times slower (BENCHMARKS.md, "Train step: one step per dispatch vs fused steps").
      state, metrics = one(state, data, key)
      return state, jax.tree_util.tree_map(lambda a: a[None], metrics)
    return jax.lax.scan(lambda s, _: one(s, data, key), state, None,
                        length=length, unroll=config.scan_unroll)

  return run


def make_eval_step(model: flax.linen.Module, config: ml_collections.ConfigDict) -> Callable:
  """`eval_step(variables, batch, weights, key) -> sums`: the bound on a batch.

  BatchNorm uses running statistics and there is no dropout; the reparametrisation noise is
  still drawn (as the reference's validation pass does). Padding examples get weight 0.

  Args:
    model: from `models.create_model`.
    config: the experiment config (configs/default.py).
  Returns:
    The eval step; `weights` is [B] and `sums` maps each loss term (summed with the weights)
    and "count" (the sum of the weights) to a scalar.
  """
  def eval_step(variables: dict, batch: dict, weights: Array, key: Array) -> dict:
    x, m = pipeline.preprocess_eval(batch["images"], batch.get("masks"), config.data.augment)
    outputs = model.apply(variables, x, batch["attributes"], m, train=False,
                          rngs={"reparam": key})
    sums = objectives.weighted_sums(model.loss_terms(outputs, x, m), weights)
    sums["count"] = weights.sum()
    return sums

  return eval_step


# ----------------------------------------------------------------------------------------------
# The loop.

# Seconds a process of a multi-host run that leaves on an error waits for its pending
# checkpoint (which needs every process) before giving it up.
PENDING_SAVE_GRACE_S = 10.0

# config.model keys that change how the model is computed, not its function or parameters: a
# run may resume with other values (and from configs saved before the key existed). Defined
# beside the checkpoints' model record, which leaves them out too.
COMPUTE_ONLY_MODEL_KEYS = checkpoints.COMPUTE_ONLY_MODEL_KEYS
# config.model keys a resume may change: those above, and those that weigh or route the
# training loss alone (`checkpoints.TRAINING_ONLY_MODEL_KEYS`: the gate's loss weight, the
# blocked KL gradient), which shape no parameter and which serving does not read; a change of
# these is said and kept in config_history/ as a learning rate's is (`_keep_a_changed_config`;
# was refused as "a different config.model"; fault hunt). Not model.recon_weight: serving's
# "smooth_l1" energy reads it, so each checkpoint's record holds the one it was trained with.
RESUMABLE_MODEL_KEYS = (*COMPUTE_ONLY_MODEL_KEYS, *checkpoints.TRAINING_ONLY_MODEL_KEYS)


# config.data keys that say which data a run trains on, with the source a source-specific one
# applies to; paths (the data may move), augmentation and schedule keys may change between
# runs. Compared before the data load, so that a resume into another run's workdir is refused
# before a dataset is prepared or downloaded.
DATA_IDENTITY_KEYS = {"data.name": None, "data.image_size": None, "data.synthetic": "synthetic",
                      "data.cub_attributes": "cub"}


def _check_resume_compatible(workdir: str, config: ml_collections.ConfigDict,
                             keys: tuple[str, ...] = ("model", *DATA_IDENTITY_KEYS)) -> None:
  """Refuses a config that does not fit the checkpoints in `workdir` (call when it has some).

  Each of `keys` must be as in the run's config.json: "model" but for its
  `RESUMABLE_MODEL_KEYS` and the keys the model ignores (`config_lib.unused_model_keys`),
  and the `DATA_IDENTITY_KEYS`, a source's own only when the run trains on that source. With
  "model", config.json's own model section is first compared with the one the newest
  checkpoint records (`_check_config_json_model`). Before all, config.json's values must be
  ones a run can have been trained with (`config_lib.check_recorded_values`).
  """
  path = os.path.join(workdir, checkpoints.CONFIG_FILE)
  if not os.path.exists(path):
    return  # The restore itself then says whether the shapes fit.
  # Keys the run predates read as their defaults, as inference and `_changes_from_record`
  # take them (was: "(unset)" there, so a disCVAE from before model.composition could never
  # be resumed: no value matched).
  # A value that cannot have trained the run is config.json's damage, named as such (was: "a
  # different config", and advice to pass it: --config.data.name=imagenet).
  saved = checkpoints.load_checked_config(workdir, config_lib.check_recorded_values)
  if "model" in keys:
    _check_config_json_model(workdir, saved)
  # What the checkpoint's shapes and the training data depend on: every section that differs
  # named in one error (was the first alone: following its advice met the next; fault hunt).
  found = []  # (config.KEY, its differences, its overrides, overrides to drop, a variant).
  for key in keys:
    source = DATA_IDENTITY_KEYS.get(key)
    if source is not None and config.data.name != source:
      continue
    old, new = saved, config
    for part in key.split("."):
      old, new = old.get(part), new.get(part)
    as_dict = lambda c: c.to_dict() if hasattr(c, "to_dict") else c
    old, new = as_dict(old), as_dict(new)
    if key == "model":  # How the model computes does not shape the checkpoint: it may change;
      # nor do the keys of the other model family, which the model ignores; nor, before the
      # data load, a y_dim of 0 that the data will fill in (`train_eval.resolve_config`).
      skip = {*RESUMABLE_MODEL_KEYS, *config_lib.unused_model_keys(config.model.name),
              *(("y_dim",) if not config.model.get("y_dim", 1) else ())}
      old, new = ({k: v for k, v in d.items() if k not in skip}
                  if isinstance(d, dict) else d for d in (old, new))
    if old != new:
      if isinstance(old, dict) and isinstance(new, dict):
        changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        differ = "; ".join(f"{key}.{k}: {old.get(k, '(unset)')!r} there, "
                           f"{new.get(k, '(unset)')!r} now" for k in changed)
        same = [(f"{key}.{k}", old[k]) for k in changed if k in old]
      else:
        differ, same = f"{key}: {old!r} there, {new!r} now", [(key, old)]
      unused = None  # The keys the run's model ignores, where it is another model.
      if key == "model" and saved.model.name != config.model.name:
        # Another model: the keys that shape the RUN's model, not those the new one uses (was:
        # --config.model.z_dim=32 for a disCVAE, which train.py refuses as having no effect
        # there, and not its zf_dim or composition: a second refusal; read-through).
        run, now = as_dict(saved.model), as_dict(config.model)
        unused = set(config_lib.unused_model_keys(saved.model.name))
        same = [(f"model.{k}", run[k]) for k in sorted(run)
                if k not in {*RESUMABLE_MODEL_KEYS, *unused} and run[k] != now.get(k)]
      # The overrides that resume it (was: "the same values" alone; a config file's default
      # that changed since, as folder.py's disCVAE composition, left the user to find them).
      # Only values an override can set (was: --config.model.width=abc for a hand-edited
      # config.json).
      flags = " ".join(f"--config.{k}={shlex.quote(str(v))}" for k, v in same
                       if config_lib.of_default_kind(k, v))
      # Another model where the config file has its variant: that variant (was:
      # --config.model.name=NAME, which train.py then refuses for such a file; fault hunt).
      variant = (config_lib.variant_advice(sys.argv, saved.model, config.model.name,
                                           RESUMABLE_MODEL_KEYS) if key == "model" else "")
      # Where the overrides are the advice: without the typed overrides of keys the run's
      # model ignores, which train.py refuses for it (was: a second refusal; read-through).
      drop = (config_lib.typed_model_overrides(sys.argv, unused)
              if unused is not None and flags and not variant else [])
      found.append((f"config.{key}", differ, flags if not variant else "", drop, variant))
  if found:
    variant = next((v for *_, v in found if v), "")
    flags = " ".join(f for _, _, f, _, _ in found if f)
    # The overrides to drop last, after every section's to add (read-through: a data
    # section's overrides after the model's "without" read as more to drop).
    drop = [d for _, _, _, drops, _ in found for d in drops]
    flags += f", without {', '.join(drop)}" if flags and drop else ""
    advice = (f"{variant} and the same values ({flags})" if variant and flags else
              variant or f"the same values{f' ({flags})' if flags else ''}")
    raise ConfigError(
        f"{workdir} holds a run trained with a different "
        f"{' and a different '.join(f'{k} ({d})' for k, d, *_ in found)}; resume it with "
        f"{advice} or pass a new --workdir.")


def _check_config_json_model(workdir: str, saved: ml_collections.ConfigDict) -> None:
  """Refuses a config.json whose model section is not the one the newest checkpoint records
  (`checkpoints.newest_recorded_model`): the file was edited since the save. Was: a resume
  checked only against config.json, so an edit that keeps the weights' shapes (a disCVAE's
  composition) went on training another model from them, and the advice to a resume that
  differed from the edited file was to pass its edited values. The restore compares the
  record with the config in use again (`checkpoints.Checkpointer`'s `model`).

  Args:
    workdir: the run's directory.
    saved: its config.json, completed with the defaults (`config_lib.with_defaults`).
  Raises:
    ConfigError: the message names each key, the recorded value and config.json's, and the
      fix.
  """
  found = checkpoints.newest_recorded_model(workdir)
  # Not the keys a resume may change: one stopped before its first save has recorded them
  # in config.json, and the checkpoint holds the earlier ones.
  differences = [] if found is None else checkpoints.model_differences(
      found[1], saved.model, ignore=checkpoints.TRAINING_ONLY_MODEL_KEYS)
  if differences:
    path = os.path.join(workdir, checkpoints.CONFIG_FILE)
    differ, values, flags = checkpoints.describe_model_differences(differences,
                                                                   "in config.json")
    raise ConfigError(
        f"{path} records another model than checkpoint {found[0]} in "
        f"{os.path.join(workdir, checkpoints.CHECKPOINT_DIR)} was trained as ({differ}): it "
        "was edited since the save, and the checkpoint's weights would train as another "
        f"model. Put its \"model\" section back to the values the checkpoint records "
        f"({values}) and resume with them{f' ({flags})' if flags else ''}; or train anew in "
        "a new --workdir.")


# Where a resume that changes settings keeps the config it replaces (`_keep_a_changed_config`).
CONFIG_HISTORY_DIR = "config_history"
# Where a run records the kernels it computes with (`_record_kernels`).
KERNELS_FILE = "kernels.json"

# What a run keeps in its workdir at the top level (besides earlier_run_* folders): a folder
# holding none of them and something else is not a run's.
_RUN_ENTRIES = (*checkpoints.RUN_FOLDERS, checkpoints.CONFIG_FILE, checkpoints.DATASET_FILE,
                metrics_lib.METRICS_FILE, files.LOCK_FILE, CONFIG_HISTORY_DIR, KERNELS_FILE,
                "infer", "attribute_predictor")


def _warn_of_other_files(workdir: str) -> None:
  """One warning where a new run starts in a folder that holds other things and nothing of a
  run's (was accepted without a word, and checkpoints/, samples/ written among them)."""
  try:
    names = sorted(os.listdir(workdir))
  except OSError:  # Missing (made later), or not listable: the lock says what it needs.
    return
  # Hidden files, a README, a fresh disk's lost+found: kept beside runs, said nothing of.
  names = [n for n in names if n == files.LOCK_FILE or not (
      n.startswith(".") or n == "lost+found" or n.upper().startswith("README"))]
  if names and not any(n in _RUN_ENTRIES or n.startswith("earlier_run_") for n in names):
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    logging.warning("%s already holds %s, none of it a run's: the run writes its checkpoints/, "
                    "samples/ and logs among them (pass a new or empty --workdir to keep them "
                    "apart)", workdir, shown)


# Config keys a host may set its own way in a multi-process run: where it caches, and its
# console.
HOST_LOCAL_KEYS = ("compilation_cache_dir", "progress_bar", "data.cache_dir")


def comparable_config(config: ml_collections.ConfigDict) -> str:
  """The config but for `HOST_LOCAL_KEYS`, as one flat JSON object ({"model.z_dim": 64,
  ...}): equal on processes that train the same run, and `distributed.json_differences` names
  the keys where two differ (was a hash, which named none).

  Args:
    config: a validated config.
  Returns:
    The JSON text, keys sorted.
  """
  values = {path: config_lib.value_at(config, path) for path in config_lib.leaf_paths(config)
            if path not in HOST_LOCAL_KEYS}
  return json.dumps(values, sort_keys=True, default=repr)


# config.data keys that name a folder, recorded in config.json from the root
# (`_absolute_data_paths`).
DATA_PATH_KEYS = ("path", "data_dir")


def _absolute_data_path(value: Any) -> Any:
  """A config.data path as `_absolute_data_paths` records it: from the root where it is
  relative to the working directory; as it is otherwise ("~/...", absolute, empty, not a
  string)."""
  if isinstance(value, str) and value.strip() and not value.startswith("~") \
      and not os.path.isabs(value):
    return os.path.abspath(value)
  return value


def _absolute_data_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` (a copy where it changes) whose `DATA_PATH_KEYS` relative to the working
  directory are made absolute, so that config.json names the folder the run trained on: a
  relative config.data.path was recorded as typed, and infer.py run from another directory
  read another folder of that name (review finding; `data.base.check_same_splits` refuses
  other data since). A path from the home folder ("~/a2i_data") stays as written: it names
  the same folder for its user wherever the command runs."""
  changed = {key: _absolute_data_path(config.data.get(key)) for key in DATA_PATH_KEYS}
  changed = {k: v for k, v in changed.items() if v != config.data.get(k)}
  if not changed:
    return config
  config = config_lib.keep_origin(config, config.copy_and_resolve_references())
  with config.unlocked():
    for key, value in changed.items():
      config.data[key] = value
  return config


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices: Optional[list] = None) -> TrainState:
  """Trains `config.model` on `config.data`, resuming from the newest checkpoint in `workdir`.

  Writes to `workdir`: config.json, dataset.json, checkpoints/, metrics.jsonl, tensorboard/
  and samples/step_XXXXXXX.png at each evaluation. Nothing is written before the config has
  passed `config_lib.validate_config` and the data are known to fit it; config.json is
  (re)written only once the state is restored, and not by a call that trains no step; a
  resume whose config names other data than the run's (`DATA_IDENTITY_KEYS`) stops before any
  is loaded. A run stopped before its first step (a device out of memory, a full disk) takes
  back what it wrote: the files and folders it made, the workdir too where it made it and it
  is empty again, config.json's earlier text on a resume, and an earlier run's results it had
  moved to earlier_run_<time>/ go back (they stay there, whole, with a warning, where an entry
  of one of their names has appeared in the workdir meanwhile). Not restored: what a resume
  drops before it trains (or, resumed at the last step, evaluates it), the metrics.jsonl rows
  after its step and the sample grids of later steps (those steps are trained again by the
  next resume). A call with nothing to do (`num_train_steps` at or below the newest
  checkpoint's step, evaluated) drops nothing: rows and grids of later steps, which no
  checkpoint holds, stay, with one warning. One process at a time may train in a workdir
  (`files.workdir_lock`). A corrupt newest checkpoint is moved to
  corrupt_checkpoints/ and the run resumes from the newest intact one. Ctrl-C saves the state
  and raises `TrainingInterrupted`.

  The persistent compilation cache (`config.compilation_cache_dir`) is the caller's choice and
  is not switched on here: train.py calls `files.enable_compilation_cache` with it, and a
  notebook that wants the cache does the same before calling this.

  Args:
    config: the experiment config (see configs/default.py).
    workdir: the run's directory (a str or `os.PathLike`).
    devices: the devices to use (default: all).
  Returns:
    The final train state.
  Raises:
    ConfigError, DataError, CheckpointError, TrainingDivergedError, WorkdirError: with a
      message that says what to change. TrainingInterrupted: Ctrl-C, after saving; one asked
      in the last step's save or evaluation comes once the run is finished (with peers, on
      every process, whichever was asked), and its message says there is nothing to resume.
  """
  # Stage 1: config, workdir and mesh. Nothing is written (but for a multi-process run's
  # marker, `check_shared_folder`). `config_lib.validate_config`'s checks, its attribute
  # count (`check_attribute_count`) last and for a new run only: a resume's data and model
  # are compared with its run's record, which names another run's workdir as such.
  config_lib.check_keys(config)
  config_lib.check_values(config)
  if isinstance(workdir, os.PathLike):  # A notebook's pathlib.Path (was: re's TypeError).
    workdir = os.fspath(workdir)
  if workdir is not None and not isinstance(workdir, str):
    raise WorkdirError(f"workdir={workdir!r}: pass the run's directory as a path (a str or "
                       "pathlib.Path), e.g. \"runs/<name>\".")
  if not str(workdir or "").strip():  # abspath("") would be the current directory.
    raise WorkdirError("the workdir (--workdir) is empty; pass the run's directory, e.g. "
                       "runs/<name> (it is created if missing).")
  files.check_workdir_path(workdir)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  run = checkpoints.enclosing_run(workdir)
  if run is not None:  # Was: a new run trained inside the old one's checkpoints or samples.
    raise WorkdirError(f"the workdir {workdir} is inside the run {run}, in one of the folders "
                       f"it manages ({', '.join(checkpoints.RUN_FOLDERS)}); pass {run} to "
                       "resume that run, or a new folder for a new run.")
  # config_history/ too: a file of that name stopped a resume that changed settings with
  # FileExistsError's traceback, after the data load (fault hunt).
  files.check_workdir(workdir, folders=(*checkpoints.RUN_FOLDERS, CONFIG_HISTORY_DIR),
                      plain_files=(checkpoints.CONFIG_FILE, checkpoints.DATASET_FILE,
                                   metrics_lib.METRICS_FILE, KERNELS_FILE))
  checkpoints.check_step_names(workdir)  # A file of the user's named as a step.
  # Another run training there: said before the data load (was: after it, for LFW a 233 MB
  # download and the mask network). The lock itself is taken later and is the guarantee.
  files.check_workdir_free(workdir)
  _warn_of_other_files(workdir)
  # Every process trains one run: a config that differs (another seed, step count or model)
  # would train out of step without a word, or leave a process waiting in a collective.
  distributed.same_on_every_process(
      "the config", comparable_config(config),
      "start every process with the same --config and overrides (only "
      f"{', '.join(HOST_LOCAL_KEYS)} may differ)", describe=distributed.json_differences)
  config = _absolute_data_paths(config)  # After the comparison: each host's own spelling.
  # Before the data load (was after it: a host given another --workdir waited out LFW's
  # preparation, hours, before it was told; fault hunt). With several processes the one write
  # of stage 1: process 0's marker file, deleted at once.
  distributed.check_shared_folder(
      workdir, "the workdir", "put --workdir on storage that every host mounts (a network "
      "file system), and give every process that folder")
  recorded = os.path.exists(os.path.join(workdir, checkpoints.CONFIG_FILE))
  if checkpoints.has_checkpoints(workdir):  # A resume: its data are checked before they load.
    if not recorded:
      logging.warning("%s has checkpoints but no %s: this resume is not checked against the "
                      "model and data they were trained with; %s is written from this "
                      "run's config", workdir, checkpoints.CONFIG_FILE, checkpoints.CONFIG_FILE)
    # The model too (was checked only after the data load: LFW's download and mask network
    # came before "a different config.model").
    _check_resume_compatible(workdir, config)
  else:
    recorded = False
  # A setting changed from the config file's that the model or dataset ignores (data.path
  # for the synthetic data) was trained without and recorded in config.json; train.py
  # refused it, the Python API took it (fault hunt). After a resume's comparison with its
  # run, which names the run's data and model where those differ.
  config_lib.check_set_keys_used(config, checkpoints.load_config(workdir) if recorded else None)
  if not recorded:  # A resume's data and y_dim are its run's, compared just above.
    config_lib.check_attribute_count(config)  # LFW's 73, CUB's 312 (was: after the download).
  mesh = parallel.make_mesh(devices)
  parallel.check_batch_divisible(config.batch_size, mesh)

  # Stage 2: input. The whole training split goes to the devices once.
  dataset = load_dataset(config.data, config.progress_bar)
  dataset = train_eval.align_with_record(workdir, dataset)  # A resumed run's column order.
  if distributed.process_count() > 1:  # Was unchecked: a local copy per host that differs
    # (a folder of the same path) trained each host's devices on its own data.
    distributed.same_on_every_process(
        "the training data", data_fingerprint(dataset, ("train", "validation")),
        "give every process the same data (config.data.path and data_dir on shared storage, "
        "or identical copies)", timeout_s=distributed.DATA_TIMEOUT_S)  # A host's own copy
    # may be prepared only now, after process 0's (`main_first`): hours for LFW's masks.
  config = train_eval.resolve_config(config, dataset)
  model = models.create_model(config.model)
  if not checkpoints.has_checkpoints(workdir):  # A new run: its model is made, not restored.
    models.check_fits_host_memory(model, config.model)
  for split_name in ("train", "validation"):
    validate_split(dataset[split_name], image_size=config.data.image_size,
                   num_attributes=config.model.y_dim, where=f"{dataset.name} {split_name}",
                   need_masks=model.needs_masks)
  warn_small_train_split(dataset, config.batch_size)
  train_eval.warn_capped_settings(config, dataset)  # Once per run, not per evaluation.
  train = dataset["train"]
  data = {"images": train.images, "attributes": train.attributes.astype(np.float32)}
  if model.needs_masks:
    data["masks"] = train.masks
  data = parallel.put_replicated(data, mesh)

  # The workdir is shared by the processes of a multi-host run: the first one holds it.
  primary = jax.process_index() == 0
  with files.workdir_lock(workdir) if primary else contextlib.nullcontext() as held:
    made = _MadeBeforeTraining(workdir)
    try:
      return _train_in_workdir(config, workdir, mesh, model, dataset, data, made)
    except BaseException:
      if held is not None and not made.kept:  # Refused before its first step (a device out
        # of memory, a full disk): what it made goes, the lock's too (was left: .lock,
        # config.json, dataset.json and an empty checkpoints/ in a workdir it had created).
        made.take_back()
        held.take_back = True
      raise


class _MadeBeforeTraining:
  """What a run writes in its workdir before its first step, to be taken back where it stops
  before that step (`take_back`): the entries it creates (`note`, called before each is
  made: what is there already is not the run's), the event files it adds to an existing
  tensorboard/ (`note_events`), config.json's earlier text where a resume rewrites it
  (`replacing`), and the folder an earlier run's results were moved to (`set_aside`), which
  they go back from. `kept` is set once the run has results of its own (its first dispatch,
  or a resume's first evaluation): from then on everything stays.

  Args:
    workdir: the run's directory.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.kept = False
    self._made: list[str] = []
    self._replaced: dict[str, bytes] = {}
    self._events: dict[str, set[str]] = {}  # An existing folder -> the event files it held.
    self._aside: Optional[str] = None

  def note(self, *names: str) -> None:
    """Records the entries of `names` (in the workdir) that do not exist yet, as the run's."""
    for name in names:
      path = os.path.join(self.workdir, name)
      if not os.path.lexists(path) and path not in self._made:
        self._made.append(path)

  def note_events(self, name: str) -> None:
    """Records the folder `name` (in the workdir) as the run's where it does not exist yet,
    else the TensorBoard event files it holds: those it holds later are the run's."""
    path = os.path.join(self.workdir, name)
    if files.is_folder(path):
      self._events[path] = set(_event_files(path))
    else:
      self.note(name)

  def set_aside(self, folder: Optional[str]) -> None:
    """Records `folder`, where `_set_aside_an_earlier_run` has just moved an earlier run's
    results (None: it moved none)."""
    self._aside = folder

  def record(self, path: str) -> None:
    """Records `path`, which the run has just created at a name that was free, as the run's."""
    self._made.append(path)

  def replacing(self, name: str) -> None:
    """Keeps the text of the file `name` (in the workdir), which the run is about to rewrite,
    or records it as the run's where there is none."""
    path = os.path.join(self.workdir, name)
    if not os.path.lexists(path):
      self.note(name)
    elif path not in self._made and path not in self._replaced and os.path.isfile(path):
      with open(path, "rb") as f:
        self._replaced[path] = f.read()

  def take_back(self) -> None:
    """Removes the entries the run made, newest first (a folder with the files in it and, for
    tensorboard/, its event files; a folder holding anything else stays), and writes back the
    files it rewrote. Best effort: one warning names what stays."""
    failed = []
    for folder, held in self._events.items():
      try:
        _remove_event_files(folder, keep=held)
      except OSError:
        failed.append(folder)
    for path in reversed(self._made):
      try:
        if files.is_folder(path):
          _remove_event_files(path)  # tensorboard/'s, the run's own.
          os.rmdir(path)
        elif os.path.lexists(path):
          os.remove(path)
      except OSError:
        failed.append(path)
    for path, text in self._replaced.items():
      try:
        files.atomic_write(path, text)
      except OSError:
        failed.append(path)
    if self._aside is not None and not failed:
      try:
        self._move_back(self._aside)
      except OSError:
        failed.append(self._aside if os.path.lexists(self._aside) else
                      self._aside + _UNFINISHED)
    if failed:
      logging.warning("could not take back what this run wrote before its first step: %s",
                      ", ".join(failed))

  def _move_back(self, folder: str) -> None:
    """Moves an earlier run's results back from `folder` into the workdir, where this run's
    files no longer are. Named `_UNFINISHED` while they move: a stop partway leaves it to the
    next start, which sets the whole earlier run aside again (`_finish_setting_aside`). Where
    an entry of the same name as one of them has appeared in the workdir meanwhile (an infer/
    of the user's), nothing moves: the earlier run stays whole in `folder`, with a warning
    (was: moved back up to that name, the rest left in `folder` + `_UNFINISHED`, and the next
    start stopped with OSError's traceback; review)."""
    taken = [os.path.join(self.workdir, name) for name in sorted(os.listdir(folder))
             if os.path.lexists(os.path.join(self.workdir, name))]
    if taken:
      logging.warning("the earlier run's results stay in %s, whole: the workdir now holds %s "
                      "as well, so they were not moved back (this run trained no step). To "
                      "have them back, move %s out of the way, then move the contents of %s "
                      "into %s.", folder, ", ".join(taken), ", ".join(taken), folder,
                      self.workdir)
      return
    moving = folder + _UNFINISHED
    if os.path.lexists(moving):
      raise FileExistsError(moving)
    os.replace(folder, moving)
    for name in sorted(os.listdir(moving)):
      target = os.path.join(self.workdir, name)
      if os.path.lexists(target):
        raise FileExistsError(target)
      os.replace(os.path.join(moving, name), target)
    os.rmdir(moving)
    logging.warning("moved the earlier run's results back from %s to %s: this run trained no "
                    "step", folder, self.workdir)


def _event_files(folder: str) -> list[str]:
  """The names of the TensorBoard event files in `folder` (`metrics.EVENTS_PREFIX`)."""
  return [name for name in os.listdir(folder) if name.startswith(metrics_lib.EVENTS_PREFIX)]


def _remove_event_files(folder: str, keep: Iterable[str] = ()) -> None:
  """Removes the TensorBoard event files in `folder`, but those named in `keep`."""
  for name in set(_event_files(folder)) - set(keep):
    os.remove(os.path.join(folder, name))


class _TrainWindow:
  """The training scalars of the steps since the last logged row: their means (the largest of
  the "max_abs/" ones, each step's largest |value| of an output: their mean hid the one step
  that came close to an overflow; fault hunt), and the images per second of training time
  (time spent compiling or evaluating is `exclude`d: a window with an evaluation in it
  counted only the time after it, for all its steps, and logged about twice the rate).

  Args:
    batch_size: images per step.
    clock: seconds now (`time.perf_counter`; tests pass their own).
  """

  def __init__(self, batch_size: int, clock: Callable[[], float] = time.perf_counter):
    self._batch, self._clock = batch_size, clock
    self._sums: dict[str, float] = {}
    self._largest: dict[str, float] = {}  # The "max_abs/" metrics.
    self._steps, self._start, self._excluded = 0, clock(), 0.0

  def add(self, n: int, metrics: dict) -> None:
    """Adds a read dispatch of `n` steps: sums over its steps, so that the means weigh each
    step once, whether it came in a dispatch of k steps or of one."""
    self._steps += n
    for name, v in metrics.items():
      if name.startswith("max_abs/"):  # np.max: a NaN stays NaN.
        self._largest[name] = float(np.max([self._largest.get(name, -np.inf), np.max(v)]))
      elif name not in ("finite", "term_finite"):
        self._sums[name] = self._sums.get(name, 0.0) + float(np.sum(v, dtype=np.float64))

  def exclude(self, seconds: float) -> None:
    """Leaves `seconds` of this window (a compile, an evaluation) out of its training time."""
    self._excluded += seconds

  @property
  def steps(self) -> int:
    """How many steps the window holds (0 right after a `read`)."""
    return self._steps

  def read(self) -> dict[str, float]:
    """The window's row ("train/<metric>" means, "train/images_per_s", and "train/steps", the
    number of steps it averages: a short window, cut at a checkpoint, a stop or a divergence,
    shows as such); starts the next."""
    seconds = max(self._clock() - self._start - self._excluded, 1e-9)
    row = {f"train/{name}": total / self._steps for name, total in self._sums.items()}
    row.update({f"train/{name}": value for name, value in self._largest.items()})
    row["train/images_per_s"] = self._steps * self._batch / seconds
    row["train/steps"] = self._steps
    self._sums, self._largest = {}, {}
    self._steps, self._start, self._excluded = 0, self._clock(), 0.0
    return row


def _train_in_workdir(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh,
                      model: flax.linen.Module, dataset: Any, data: dict,
                      made: _MadeBeforeTraining) -> TrainState:
  """Stages 3-5 of `train_and_evaluate`, with the workdir locked; what it writes before the
  first step is noted in `made`."""
  # Stage 3: model and optimiser.
  tx = make_optimizer(config)
  root = jax.random.key(config.seed)
  k_init, k_train, k_eval, k_sample = jax.random.split(root, 4)

  # Stage 4: checkpoint. Resume from the newest intact one if there is one; only then is the
  # run's record (config.json, dataset.json) written.
  ckpt = None
  try:
    for path in checkpoints.remove_temporary(workdir) if jax.process_index() == 0 else ():
      logging.info("removed %s, a save that never finished", path)
    # Each save records the model section, and each restore compares it (an edited
    # config.json that keeps the weights' shapes trained another model from them).
    made.note(checkpoints.CHECKPOINT_DIR)
    ckpt = checkpoints.Checkpointer(workdir, config.max_checkpoints_to_keep, model=config.model,
                                    ignore=checkpoints.TRAINING_ONLY_MODEL_KEYS)
    if ckpt.all_steps():
      _check_resume_compatible(workdir, config)
    state, good, abstract = None, None, None
    unreadable = []  # (step, RestoreError) of checkpoints without checksums, newest first.
    while state is None:
      good, _ = ckpt.find_intact()
      if good is None:
        if unreadable:  # None of them restored: the cause is not in their bytes (the config,
          raise _none_restored(ckpt, unreadable)  # the memory): nothing is moved.
        good = ckpt.newest_intact_step(quarantine=True)  # None, or the error if all corrupt.
        state = parallel.put_replicated(create_train_state(model, config, tx, k_init), mesh)
        break
      # The restore target only here: its `eval_shape` traces the model's init again.
      abstract = abstract or abstract_train_state(model, config, tx)
      try:
        state = _restore_train_state(ckpt, config, abstract, mesh, good)
      except checkpoints.RestoreError as e:
        if ckpt.summed(good):  # Its bytes are as saved: the config, not the file, differs.
          raise
        # Without checksums (an older version's save), a checkpoint Orbax cannot read is
        # taken for corrupt if an older one then restores: moved aside as a checksum
        # mismatch is.
        unreadable.append((good, e))
        ckpt.mark_corrupt(good, f"it has no checksums and could not be restored: {e.reason}")
        continue
      if int(state.step) != good:  # A copied or renamed folder: its state is another step's,
        # and a save of step `good` would be skipped as already there (the work lost).
        held = int(state.step)
        ckpt.mark_corrupt(good, f"its folder is named step {good} but it holds the state of "
                          f"step {held}; to use that state, rename the folder to {held}")
        state = None
    if good is not None:
      chosen = ckpt.newest_intact_step(quarantine=True)  # Moves the corrupt ones newer than
      if chosen != good:  # `good`; process 0's choice on every process.
        # Was: not compared, so a restore that failed on one host only (an older version's
        # save without checksums) let the processes train on from different steps (review).
        raise checkpoints.CheckpointError(
            f"process {distributed.process_index()} restored step {good} from {ckpt.directory}, "
            f"but process 0 found step {chosen} the newest intact one; give every process the "
            "same --workdir on storage they all read alike, then run the command again.")
    logging.info("model %s: %d parameters", config.model.name, models.count_params(state.params))
    # A call that trains nothing but evaluates the step reached, whose evaluation a stop left
    # to the resume, evaluates under this config: its changes are said and recorded as those
    # of a resume with steps left (was: applied without a word; review). Decided once, here,
    # for `_loop` too, whose writer then drops the rows and events after the step
    # (`MetricWriter(resumed_from=...)`) exactly where the grids are dropped below.
    evaluates = good is not None and _evaluation_pending(workdir, config, int(state.step))
    if good is not None:
      logging.info("resumed from step %d in %s", int(state.step), ckpt.directory)
      if int(state.step) < config.num_train_steps or evaluates:  # `_loop` runs: a resume.
        # Was `<` alone: a resume that only evaluated its last step (a later checkpoint
        # removed or corrupt) dropped the later rows and events but kept their grids.
        last, every = config.num_train_steps, config.eval_every_steps
        _drop_samples_after(workdir, int(state.step),
                            lambda s: s <= last and (s % every == 0 or s == last))
      else:  # Nothing to do: the records past the checkpoint stay, said.
        _warn_of_records_after(workdir, int(state.step), config.num_train_steps)
        _warn_of_settings_not_applied(workdir, config, int(state.step))
    else:
      made.set_aside(_set_aside_to_take_back(workdir, config))
    recorded = os.path.exists(os.path.join(workdir, checkpoints.CONFIG_FILE))
    records = good is None or int(state.step) < config.num_train_steps or not recorded or evaluates
    # The kernels (on CPU the timing's choice, `perf.recommended_cpu_flags`; elsewhere the
    # backend) said (was: nowhere), "recorded" only where this call records them (was: also
    # where it trained nothing; review), on every backend (was: CPU only; review).
    kernels = perf.kernel_record()
    logging.info("computing with %s%s", perf.describe_kernel_record(kernels),
                 f" (recorded in {os.path.join(workdir, KERNELS_FILE)})" if records else "")
    if records:
      # Not where this call trains and evaluates nothing (num_train_steps at or below the
      # step reached): the record stays that of the config that trained the checkpoints
      # (was: rewritten with this call's learning rate, seed and step count).
      if good is not None and recorded:
        made.note(CONFIG_HISTORY_DIR)
        kept = _keep_a_changed_config(workdir, config, int(state.step))
        if kept is not None:
          made.record(kept)
      made.replacing(checkpoints.CONFIG_FILE)
      checkpoints.save_config(workdir, config)
      made.replacing(KERNELS_FILE)
      _record_kernels(workdir, 0 if good is None else int(state.step), kernels)
    made.replacing(checkpoints.DATASET_FILE)
    train_eval.record_dataset(workdir, dataset, config.data.path, resumed=good is not None)
  except BaseException as e:
    if ckpt is not None:
      ckpt.close()
    # A full disk or a folder that cannot be read or written while the run's record, its
    # config's history or its samples are read or written, before the loop (was: a traceback;
    # review finding). The loop names its own, with the step.
    error = files.storage_error(e) if isinstance(e, Exception) else None
    if error is None or isinstance(e, A2IError):
      raise
    where = f"{error.filename}: " if getattr(error, "filename", None) else ""
    fix = _storage_fix_sentence(error)
    raise WorkdirError(f"the workdir {workdir} could not be used before training started "
                       f"({where}{files.describe_storage_error(error)}). {fix}, then run the "
                       "same command again.") from None
  return _loop(config, workdir, mesh, model, tx, dataset, data, ckpt, state,
               (k_train, k_eval, k_sample), made, evaluates)


# Keys whose change on a resume is no change to what it trains or to what its logged curves
# mean: how long, where it caches, how often it logs, saves and evaluates, inference, its
# console, and the forms of the same computation (steps per dispatch, the model's compute-only
# forms). Not `num_eval_examples`: the validation rows after it would score another subset
# than those before (a review found the curve mixing them without a word).
_RESUME_NEUTRAL_KEYS = (*HOST_LOCAL_KEYS, "num_train_steps", "log_every_steps",
                        "checkpoint_every_steps", "max_checkpoints_to_keep", "eval_every_steps",
                        "num_sample_rows", "num_sample_cols",
                        "dispatch_ahead", "steps_per_dispatch", "scan_unroll",
                        *(f"model.{k}" for k in COMPUTE_ONLY_MODEL_KEYS if k != "dtype"))
_RESUME_NEUTRAL_SECTIONS = ("inference.", "attribute_predictor.")


def _storage_fix_sentence(error: OSError) -> str:
  """`files.storage_fix(error)`, the advice by its errno (was "free some space" for every one),
  as a sentence's start: its first letter upper-case."""
  fix = files.storage_fix(error)
  return fix[:1].upper() + fix[1:]


def _changes_from_record(workdir: str, config: ml_collections.ConfigDict,
                         sections: tuple[str, ...] = _RESUME_NEUTRAL_SECTIONS
                         ) -> tuple[dict, list[tuple[str, Any, Any]]]:
  """config.json as JSON, and (key, recorded, now) for each key `config` changes beyond
  `_RESUME_NEUTRAL_KEYS` and the keys of `sections`."""
  # Both as JSON has them (a tuple in the config file is a list in config.json).
  saved = json.loads(checkpoints.load_config(workdir).to_json())
  now = json.loads(config.to_json())
  keys = dict.fromkeys([*config_lib.leaf_paths(saved), *config_lib.leaf_paths(now)])

  def same(key, old, new):
    # A relative data path an older run recorded as typed (`_absolute_data_paths`) names the
    # folder the absolute one now does, from this directory (was: "data.data_dir 'reldata'
    # -> '/.../reldata'" and a config_history copy for nothing changed; read-through).
    return old == new or (key in {f"data.{k}" for k in DATA_PATH_KEYS}
                          and _absolute_data_path(old) == new)
  # A key the earlier config lacks (added to the library since) took its default: no change.
  changed = [(k, config_lib.value_at(saved, k), config_lib.value_at(now, k)) for k in keys
             if k not in _RESUME_NEUTRAL_KEYS
             and not (sections and k.startswith(sections))
             and config_lib.value_at(saved, k) is not None
             and not same(k, config_lib.value_at(saved, k), config_lib.value_at(now, k))]
  # Nor one the run's model or dataset ignores (a disCVAE's z_dim, changed in a config file
  # since): recorded as it comes, not said (was: warned of, with a config_history copy, as
  # though the steps after it trained otherwise; fault hunt of older workdirs).
  ignored = {k for k, _ in config_lib.ignored_settings(config, [k for k, _, _ in changed])}
  return saved, [c for c in changed if c[0] not in ignored]


# infer.py's flags that set an inference setting for one call.
_INFER_PY_FLAGS = {"inference.steps": "--steps", "inference.restarts": "--restarts"}


def _warn_of_settings_not_applied(workdir: str, config: ml_collections.ConfigDict,
                                  step: int) -> None:
  """One warning where a call with nothing to do (`num_train_steps` at or below `step`) is
  given settings that differ from the run's config.json: they are not applied, since the
  record stays that of the config that trained the checkpoints, and the warning says how to
  apply them. Was: an INFO line ("nothing to do") alone, so --config.inference.batch_size=300
  on a finished run, which RESULTS.md advised, changed nothing that infer.py reads, without
  a word (fault hunt)."""
  path = os.path.join(workdir, checkpoints.CONFIG_FILE)
  if not distributed.is_main() or not os.path.exists(path):
    return
  # Not how the steps run, log, save and evaluate (`_RESUME_NEUTRAL_KEYS`): with none to run
  # there is nothing to apply them to. The inference and predictor settings, which infer.py
  # reads from config.json, are named.
  _, changed = _changes_from_record(workdir, config, sections=())
  if not changed:
    return
  infer = [f"{_INFER_PY_FLAGS[k]}={new}" for k, _, new in changed if k in _INFER_PY_FLAGS]
  for_infer = (f"; or, for inference alone, pass infer.py {' '.join(infer)} (it applies to "
               "that call)" if infer else "")
  logging.warning("nothing to train at step %d (num_train_steps=%d), so these settings were "
                  "not applied and %s keeps the run's: %s. To apply them, train on: raise "
                  "num_train_steps above %d with them (the resume records them)%s", step,
                  config.num_train_steps, path,
                  ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changed), step,
                  for_infer)


def _keep_a_changed_config(workdir: str, config: ml_collections.ConfigDict, step: int
                           ) -> Optional[str]:
  """On a resume whose config differs from config.json (a new seed, batch size, learning
  rate: what `_check_resume_compatible` lets change): one warning naming each change, and the
  earlier config kept as WORKDIR/config_history/step_<N>.json, since config.json is then
  rewritten. Was: rewritten without a word, and nothing said that steps 1..N ran otherwise.

  Returns:
    The kept copy's path, or None where nothing but `_RESUME_NEUTRAL_KEYS` changed.
  """
  saved, changed = _changes_from_record(workdir, config)
  if not changed or not distributed.is_main():
    return None
  folder = os.path.join(workdir, CONFIG_HISTORY_DIR)
  os.makedirs(folder, exist_ok=True)
  # A second resume from the same step (the first diverged, say) keeps the first's record,
  # which describes the steps up to it (was: overwritten with the config that diverged).
  kept = files.unused_path(folder, f"step_{step:07d}", ".json")
  files.atomic_write(kept, json.dumps(saved, indent=2, sort_keys=True))
  logging.warning("resuming at step %d with %s; config.json now records the new values, and "
                  "the config it replaces is kept in %s", step,
                  ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changed), kept)
  return kept


def _read_kernels(workdir: str) -> Optional[dict[int, Any]]:
  """kernels.json's record, {first step: kernels, as the file holds them (a `perf.kernel_record`
  or, written before those, its words; `perf.read_kernel_record` reads either)}; None where
  there is none; {} (with one warning) where it is unreadable or holds no such record (a
  damaged file is not trusted)."""
  path = os.path.join(workdir, KERNELS_FILE)
  if not os.path.lexists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)["from_step"]
    if not (isinstance(record, dict) and record and all(
        isinstance(k, str) and k.isdigit() and isinstance(v, (str, dict))
        for k, v in record.items())):
      raise ValueError("no {step: kernels} record")
    return {int(k): v for k, v in record.items()}
  except (OSError, ValueError, TypeError, KeyError, RecursionError) as e:
    logging.warning("%s is unreadable (%s): the kernels the run trained with so far are "
                    "unknown; it is rewritten from this resume", path,
                    getattr(e, "strerror", None) or e)
    return {}


def _record_kernels(workdir: str, step: int, kernels: dict) -> None:
  """Records in WORKDIR/kernels.json the kernels (`perf.kernel_record`) the run computes with
  from `step` on, as {"from_step": {"0": {"kernels": "xla", "backend": "cpu", "jaxlib":
  "0.10.2"}, ...}}, dropping what it recorded for later steps (trained again now), and warns
  where a resume's differ from those that trained up to `step` (compared by their fields,
  `perf.same_kernels`): its numbers then differ slightly from an uninterrupted run's. Was:
  the timing-based choice of kernels (`perf.recommended_cpu_flags`; a busy host, another CPU
  count or a cleared cache choose otherwise) was recorded nowhere, and a resume under others
  went on without a word (fault hunt). Entries written before records were data (words, e.g.
  "XLA's own convolution kernels, jaxlib 0.10.2") are read as the records they name and kept
  as they are; one that names none is said once, as unknown, and this resume's kernels are
  recorded after it. Process 0 only.

  Args:
    workdir: the run's directory.
    step: the step the run starts or resumes from.
    kernels: this process's `perf.kernel_record()`.
  """
  if not distributed.is_main():
    return
  read = _read_kernels(workdir) if step else None
  # {s: k}: the steps after s were computed with k. Those up to `step` were computed with the
  # entry of the largest s < step; an entry at `step` or later is of steps trained again now
  # (was: s <= step kept, so a resume at a recorded step compared against the kernels of
  # the steps after it, a resume that died before its next checkpoint; review).
  record = {s: k for s, k in (read or {}).items() if s < step}
  before = record[max(record)] if record else None
  known = perf.read_kernel_record(before) if before is not None else None
  same = perf.same_kernels(known, kernels)
  now = perf.describe_kernel_record(kernels)
  ends = "its numbers will differ slightly from those of an uninterrupted run"
  if before is not None and same is None:  # Not a record this version reads (was: the words
    # compared as text, so words of another form warned of other kernels on every resume).
    logging.warning("resuming at step %d with %s, but %s records the kernels the run trained "
                    "up to it with as %s, which this version does not read: where they differ, "
                    "%s", step, now, os.path.join(workdir, KERNELS_FILE),
                    json.dumps(before)[:200], ends)
  elif same is False:
    pin = perf.pin_kernels_advice(known, kernels)
    logging.warning("resuming at step %d with %s, but the run trained up to it with %s: %s%s",
                    step, now, perf.describe_kernel_record(known), ends,
                    f"; to resume with the kernels it trained with, {pin}" if pin else "")
  if not same:
    record[step] = dict(kernels)
  if record != read:  # As it was read: not written again.
    files.atomic_write(os.path.join(workdir, KERNELS_FILE), json.dumps(
        {"from_step": {str(s): record[s] for s in sorted(record)}}, indent=1))


def _check_validation_finite(ev: dict, step: int, newest: Optional[int], directory: str
                             ) -> None:
  """Stops a run whose validation is NaN or infinite: its training loss is finite (a step
  that is not stops the run first), so the state only evaluation reads is broken (BatchNorm's
  running statistics, e.g. from a damaged checkpoint without checksums). Was: the run went on
  and ended with status 0, "validation bound nan" in its last line.

  Raises:
    TrainingDivergedError: naming the values and the checkpoint that holds the state.
  """
  bad = sorted(name for name, v in ev.items() if not math.isfinite(float(v)))
  if bad:
    where = (f"the newest checkpoint, {newest} in {directory}, may hold it too (older ones "
             "may as well): move it aside to resume from an earlier one, or start a new "
             "--workdir." if newest is not None else "no checkpoint holds it yet.")
    raise TrainingDivergedError(
        f"validation at step {step} is not finite ({', '.join(f'val/{n}' for n in bad)}) "
        "while the training loss is: the state only evaluation uses (BatchNorm's running "
        f"statistics) holds NaN or infinity; {where}")


def _samples_file(workdir: str, step: int) -> str:
  """The sample grid of `step` (an evaluation's), WORKDIR/samples/step_<7 digits>.png."""
  return os.path.join(workdir, "samples", f"step_{step:07d}.png")


def _samples_step(name: str) -> Optional[int]:
  """The step of a sample grid's file name, exactly as `_samples_file` writes it; None for
  other names (step_6.png, a user's: was read as step 6's grid, removed or refused)."""
  stem = name[len("step_"):-len(".png")] if (name.startswith("step_")
                                              and name.endswith(".png")) else ""
  if not (stem.isascii() and stem.isdigit()):
    return None
  step = int(stem)
  return step if os.path.basename(_samples_file("", step)) == name else None


def _drop_samples_after(workdir: str, step: int,
                        writes: Callable[[int], bool]) -> list[str]:
  """Removes the sample grids of steps after `step`, the one a run resumes from: those steps
  are trained again, and their metrics rows and TensorBoard events are dropped too
  (`metrics.MetricWriter`). Was: e.g. step_0000006.png kept beside a resumed run's
  step_0000005.png, from steps the run no longer has.

  A folder of such a name (or a link to one) is no grid but the user's, and stays, unless the
  run writes a grid at its path (`writes` of its step), which is refused before any grid is
  removed. Was: IsADirectoryError's traceback, as was a grid that could
  not be removed. Only the names the run writes (step_0000006.png) are its grids: step_6.png
  or a folder step_6.png/ is the user's, and stays (was: removed, or refused).

  Args:
    workdir: the run's directory.
    step: the step the run resumes from.
    writes: whether the resumed run writes the grid of a step (evaluates at it).
  Returns:
    The removed files' names.
  Raises:
    WorkdirError: a folder where the run writes a grid (before any grid is removed), or a
      grid that cannot be removed.
  """
  folder = os.path.join(workdir, "samples")
  if not distributed.is_main():
    return []
  grids = []
  for name, s, is_grid in _grids_after(folder, step):
    path = os.path.join(folder, name)
    if is_grid:  # A link goes, not what it leads to.
      grids.append(name)
    elif writes(s):  # A folder (or a link to one) where the run will write a grid.
      raise WorkdirError(
          f"{path} is a folder, where this run, resumed from step {step}, writes its sample "
          f"grid of step {s}; move it out of {folder} (the run's grids go there), then run the "
          "same command again.")
  removed = []
  for name in grids:
    path = os.path.join(folder, name)
    try:
      os.remove(path)
    except FileNotFoundError:  # Gone already: nothing of those steps is left.
      continue
    except OSError as e:
      # Advice by its errno (was "remove it yourself (or fix the permissions)" for each, a
      # failed disk's and a busy file's too).
      fix = "remove it yourself"
      if files.storage_error(e) is not None:
        fix = f"{files.storage_fix(e)}, or {fix}"
      raise WorkdirError(
          f"could not remove {path} ({files.describe_storage_error(e)}), the sample grid of a "
          f"step after {step}, which this run resumes from and trains again; {fix}, then run "
          "the same command again.") from None
    removed.append(name)
  if removed:  # Was: "which the resumed run trains again", also of steps it never reaches.
    logging.info("removed %d sample grid(s) of steps after %d (%s), whose metrics rows are "
                 "dropped as well: steps the resumed run trains again, or (past "
                 "num_train_steps) no longer has", len(removed), step, ", ".join(removed[:3]))
  return removed


def _grids_after(folder: str, step: int) -> list[tuple[str, int, bool]]:
  """The entries of the samples `folder` named as the run's grids of steps after `step`
  (step_0000006.png; step_6.png is the user's), sorted: (name, its step, whether it is a
  file or a link that can go: False for a folder or a link to one, which is the user's).
  Empty where there is no such folder."""
  if not os.path.isdir(folder):
    return []
  found = []
  for name in sorted(os.listdir(folder)):
    s = _samples_step(name)
    if s is not None and s > step:
      found.append((name, s, not os.path.isdir(os.path.join(folder, name))))
  return found


def _warn_of_records_after(workdir: str, step: int, num_train_steps: int) -> None:
  """One warning where a call with nothing to do (`num_train_steps` at or below `step`, the
  newest checkpoint's, whose evaluation is done) finds metrics rows or sample grids of later
  steps, which no checkpoint holds: later checkpoints were removed or set aside as corrupt,
  or the run was killed between checkpoints. Was: kept without a word. They are kept, not
  dropped as a resume drops them: this call trains none of those steps again, and a later
  checkpoint that is missing only for now (a folder moved away for a while, a network mount
  that lists it late) would then cost the records of steps it holds. The next run that
  trains on from `step` drops them.

  Args:
    workdir: the run's directory.
    step: the step of the newest checkpoint, restored.
    num_train_steps: this call's `num_train_steps`.
  Processes other than 0 read nothing and say nothing.
  """
  if not distributed.is_main():
    return
  try:  # A call whose only work is this warning is not stopped by it (review finding).
    rows = []
    if os.path.isfile(os.path.join(workdir, metrics_lib.METRICS_FILE)):
      rows = sorted({r["step"] for r in metrics_lib.read_metrics(workdir) if r["step"] > step})
    grids = [name for name, _, is_grid in _grids_after(os.path.join(workdir, "samples"), step)
             if is_grid]  # A folder is the user's.
  except OSError as e:
    logging.warning("could not look for records of steps after %d in %s (%s); a later "
                    "resume that trains drops any it finds.", step, workdir,
                    files.describe_storage_error(e))
    return
  if not (rows or grids):
    return
  held = []
  if rows:
    span = f"step {rows[0]}" if len(rows) == 1 else f"steps {rows[0]} to {rows[-1]}"
    held.append(f"metrics.jsonl rows of {span} (with their TensorBoard events)")
  if grids:
    held.append(f"{len(grids)} sample grid(s) ({', '.join(grids[:3])}"
                f"{', ...' if len(grids) > 3 else ''})")
  logging.warning("%s holds records of steps after %d, its newest checkpoint's step, that no "
                  "checkpoint holds (a later one was removed or set aside as corrupt, or the "
                  "run was killed before it saved one): %s. This call trains nothing "
                  "(num_train_steps=%d), so they stay; the next run that trains on from step %d "
                  "drops them and trains those steps again. If a later checkpoint was only "
                  "moved away, put it back in %s before that run to keep them.", workdir, step,
                  " and ".join(held), num_train_steps, step,
                  os.path.join(workdir, checkpoints.CHECKPOINT_DIR))


def _set_aside_an_earlier_run(workdir: str,
                              config: Optional[ml_collections.ConfigDict] = None
                              ) -> tuple[Optional[str], bool]:
  """Moves an earlier run's results out of the way of a run that starts from step 0 in the
  same workdir: no checkpoint resumes it (deleted, or none saved before an evaluation wrote
  samples), but samples/ holds its images; or its metrics.jsonl holds rows and its
  config.json is not `config` (another run's files; a review found them replaced without a
  word). Was: its images stayed among the new run's, and its config, metrics rows and
  TensorBoard events were overwritten or dropped.

  The same run killed before its first checkpoint and evaluation (no samples; rows, if any,
  of the config it restarts with) is simply started again in place.

  Args:
    workdir: the run's directory.
    config: the config the new run starts with; None: any rows count as another run's.
  Returns:
    The folder they went to (WORKDIR/earlier_run_<UTC time>), or None; and whether that was
    the end of a move a stop had interrupted (`_finish_setting_aside`): nothing else is then
    looked at or moved.
  Raises:
    WorkdirError: a move that a stop interrupted cannot be finished: an entry of the workdir
      is also in its folder (`_move_earlier_results`).
  """
  if not distributed.is_main():
    return None, False
  finished = _finish_setting_aside(workdir)
  if finished:
    return finished, True
  folder = os.path.join(workdir, "samples")
  samples = os.path.isdir(folder) and any(n.endswith(".png") for n in os.listdir(folder))
  logged = (os.path.isfile(os.path.join(workdir, metrics_lib.METRICS_FILE))
            and bool(metrics_lib.read_metrics(workdir)))
  if logged and not samples and config is not None:
    try:
      logged = bool(_changes_from_record(workdir, config)[1])  # Its own rows: not moved.
    except ConfigError:  # No readable config.json beside the rows: not this run's.
      pass
  if not (samples or logged):
    return None, False
  stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
  # Filled under a name that says so, renamed when whole: a run stopped partway finishes
  # the move on its next start (was: the rest stayed, and the rerun took the old config for
  # its own and overwrote it, or dropped the old rows).
  dest = files.unused_path(workdir, f"earlier_run_{stamp}", _UNFINISHED)
  os.makedirs(dest)
  return _move_earlier_results(workdir, dest), False


# The suffix of an earlier run's folder while its results are being moved in.
_UNFINISHED = ".unfinished"
_EARLIER_RESULTS = ("samples", "tensorboard", metrics_lib.METRICS_FILE,
                    checkpoints.CONFIG_FILE, checkpoints.DATASET_FILE, CONFIG_HISTORY_DIR,
                    KERNELS_FILE, "infer")


def _move_earlier_results(workdir: str, dest: str) -> str:
  """Moves an earlier run's results from `workdir` into `dest` (named `_UNFINISHED`), then
  gives `dest` its final name, which it returns.

  Raises:
    WorkdirError: an entry of the workdir is also in `dest` (a move stopped partway, and a
      file or folder of that name made in the workdir since): nothing is moved.
  """
  for name in _EARLIER_RESULTS:  # Was: OSError's traceback ("Directory not empty"; review).
    here, there = os.path.join(workdir, name), os.path.join(dest, name)
    if os.path.lexists(here) and os.path.lexists(there):
      raise WorkdirError(f"{here} and {there} are both there: moving an earlier run's results "
                         f"into {dest} was stopped partway, and {here} was made since; move one "
                         f"of the two out of the way (e.g. rename {here}), then run the same "
                         "command again.")
  moved = []
  for name in _EARLIER_RESULTS:
    if os.path.exists(os.path.join(workdir, name)):
      os.replace(os.path.join(workdir, name), os.path.join(dest, name))
      moved.append(name)
  final = files.unused_path(workdir, os.path.basename(dest)[:-len(_UNFINISHED)])
  os.replace(dest, final)
  logging.warning("%s holds an earlier run's results but no checkpoint to resume it from: "
                  "moved them (%s) to %s; training starts at step 0", workdir,
                  ", ".join(moved) or "the rest", final)
  return final


def _set_aside_to_take_back(workdir: str, config: ml_collections.ConfigDict
                            ) -> Optional[str]:
  """`_set_aside_an_earlier_run`, returning the folder that goes back if the run stops before
  its first step: None for one a stop had left half moved, whose move the next start finishes
  again, and on processes other than 0, which move nothing (was: they looked in the workdir
  too, and one whose process 0 had taken back the workdir it made died on os.listdir's
  traceback; review finding)."""
  aside, finished = _set_aside_an_earlier_run(workdir, config)  # None, False off process 0.
  return None if finished else aside


def _unfinished_moves(workdir: str) -> list[str]:
  """The names of the folders of moves aside that a stop interrupted (earlier_run_*.unfinished,
  `_UNFINISHED`), sorted. Folders only, not links: a file or a link of such a name is the
  user's (was: a file so named was taken for one, NotADirectoryError's traceback)."""
  return sorted(n for n in os.listdir(workdir)
                if n.startswith("earlier_run_") and n.endswith(_UNFINISHED)
                and files.is_folder(os.path.join(workdir, n)))


def _finish_setting_aside(workdir: str) -> Optional[str]:
  """Finishes a move of an earlier run's results that a stop interrupted (its folder still
  named `_UNFINISHED`); returns the folder, or None when there was none. Nothing of the new
  run is written before the move, so what is left in `workdir` is the earlier run's."""
  final = None
  for name in _unfinished_moves(workdir):
    final = _move_earlier_results(workdir, os.path.join(workdir, name))
  return final


def _none_restored(ckpt: checkpoints.Checkpointer,
                   unreadable: list[tuple[int, checkpoints.RestoreError]]
                   ) -> checkpoints.RestoreError:
  """The error when no checkpoint restored, those without checksums having failed first."""
  steps = ", ".join(str(step) for step, _ in unreadable)
  reason = unreadable[0][1].reason
  return checkpoints.RestoreError(
      f"no checkpoint in {ckpt.directory} could be restored: step(s) {steps}, saved without "
      f"checksums, failed (the newest: {reason}), and no older one is intact. If the library "
      "or the config changed the model's layout, use a new --workdir; if the files are "
      "damaged, move those folders away to start from scratch.", reason)


def _restore_train_state(ckpt: checkpoints.Checkpointer, config: ml_collections.ConfigDict,
                         abstract_state: TrainState, mesh: Mesh, step: int) -> TrainState:
  """Checkpoint `step`, replicated over `mesh`. One saved before the optimiser's state became
  one vector per moment (`train_state.legacy_optimizer`'s layout) is read in that layout and
  converted, with one warning line; a checkpoint that fits neither raises the error of the
  first (so a damaged checkpoint in the old layout is reported as not matching the new one)."""
  replicated = parallel.replicated(mesh)
  try:
    return ckpt.restore(checkpoints.with_sharding(abstract_state, replicated), step)
  except CheckpointError as error:
    legacy = abstract_state.replace(opt_state=jax.eval_shape(
        legacy_optimizer(config).init, abstract_state.params))
    try:
      state = ckpt.restore(checkpoints.with_sharding(legacy, replicated), step)
    except CheckpointError:
      raise error from None
  logging.warning("checkpoint %d keeps the optimiser state per parameter (saved by an older "
                  "version); converted to one vector per moment, as new checkpoints save it",
                  step)
  convert = perf.jit(flat_opt_state, extra_options=models.CHEAP_COMPILE,
                     out_shardings=replicated)
  return state.replace(opt_state=convert(state.opt_state))


def _evaluation_pending(workdir: str, config: ml_collections.ConfigDict, step: int) -> bool:
  """Whether a run resumed at `step` evaluates that step first: a run stopped between a
  checkpoint and its evaluation (the checkpoint comes first) has the evaluation still to do;
  so has one stopped after the evaluation's samples were written but before its row was."""
  last, every = config.num_train_steps, config.eval_every_steps
  return 0 < step <= last and (step % every == 0 or step == last) and not (
      os.path.exists(_samples_file(workdir, step)) and _evaluated_row(workdir, step))


def _evaluated_row(workdir: str, step: int) -> bool:
  """Whether `workdir/metrics.jsonl` holds step `step`'s row with its validation scalars."""
  if not os.path.exists(os.path.join(workdir, metrics_lib.METRICS_FILE)):
    return False
  return any(row.get("step") == step and any(k.startswith("val/") for k in row)
             for row in metrics_lib.read_metrics(workdir))


# How long a process waits for the others to compile the train step (`_loop`).
COMPILE_TIMEOUT_S = 3600.0

def _loop(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh,
          model: flax.linen.Module, tx: optax.GradientTransformation, dataset: Any, data: dict,
          ckpt: checkpoints.Checkpointer, state: TrainState, keys: tuple,
          made: _MadeBeforeTraining, evaluate_first: bool) -> TrainState:
  """Stage 5 of `train_and_evaluate`: the loop; closes `ckpt`. `made.kept` is set as the run
  first evaluates or dispatches a step. `evaluate_first`: whether the step reached is
  evaluated first (`_evaluation_pending`, decided by `_train_in_workdir`, which drops the
  later sample grids where this drops the later rows: where this trains or evaluates)."""
  k_train, k_eval, k_sample = keys
  start = step = int(state.step)
  k, last = config.steps_per_dispatch, config.num_train_steps
  due = lambda every: step % every == 0 or step == last
  samples_at = functools.partial(_samples_file, workdir)
  if start >= last and not evaluate_first:
    logging.info("nothing to do: step %d >= num_train_steps=%d", start, last)
    ckpt.close()
    return state
  make = lambda n: jit_train_steps(model, tx, config, mesh, n)
  eval_step = perf.jit(make_eval_step(model, config))
  sample_fn = perf.jit(sampling.make_sample_fn(model))
  summary = train_eval.RunSummary(workdir)

  def evaluate() -> dict:
    # With peers, every process compiled the step and none has left before any dispatches
    # (as at the train step's compilation): was, a second Ctrl-C on process 1 as the last
    # evaluation began left process 0 in its first collective until JAX's heartbeat ended
    # it with its fatal log (fault hunt).
    ready = (None if distributed.process_count() == 1 else lambda: distributed.barrier(
        f"the evaluation of step {step}", COMPILE_TIMEOUT_S, collective_next=True))
    ev = train_eval.evaluate(eval_step, state.variables, dataset["validation"], config, mesh,
                             jax.random.fold_in(k_eval, step), before_dispatch=ready)
    # Before the samples: a state whose evaluation is not finite draws NaN images, which the
    # grid refuses with a message about the caller's images (a review found it hiding this).
    _check_validation_finite(ev, step, ckpt.latest_step(), ckpt.directory)
    # The workdir still the run's before the grid goes in (was: a deleted one's samples/ made
    # again, then said as another folder at its path).
    writer.check_workdir(f"the sample grid of step {step}")
    grid = train_eval.write_samples(model, sample_fn, state.variables, dataset, config,
                                    samples_at(step), jax.random.fold_in(k_sample, step))
    writer.write_image(step, "samples", grid)
    summary.evaluated(ev, samples_at(step))
    return {f"val/{name}": v for name, v in ev.items()}

  progress, writer, failed, compiled = None, None, True, {}
  asked = False  # A stop asked after the last step's read (`_InterruptedWhenFinished`).
  closed = False

  def close_all() -> None:
    nonlocal closed
    closed = True
    if progress is not None:
      progress.close()
    first = None  # A close that fails leaves the next one to run (was: a full disk at the
    # metric writer's close skipped the checkpoints' close; review of the writer's fix).
    for close in (writer.close if writer is not None else None,
                  lambda: ckpt.close(_grace_on_error(failed))):
      try:
        if close is not None:
          close()
      except Exception as e:  # pylint: disable=broad-except
        first = first or (None if failed else e)
    if first is not None:
      raise first

  try:
    made.note(metrics_lib.METRICS_FILE)
    made.note_events("tensorboard")
    # The checkpointer's watch of the workdir: both know what its save under way may have
    # made at the path after the workdir went (was: two watches, and the writer, first to
    # notice, called the save's own leftovers another folder; review of 5a67595).
    writer = MetricWriter(workdir, resumed_from=start, watch=ckpt.workdir_watch)
    if evaluate_first:
      made.kept = True
      writer.write(step, evaluate())  # Synced, as any evaluation's row (`MetricWriter.write`).

    def new_bar():
      # A bar written to a file or pipe (a job's log) updates every LOGGED_INTERVAL_S (was ten
      # times a second, and at every log step: tens of thousands of updates).
      return bars.bar(total=last, initial=step, desc="train", unit="step", dynamic_ncols=True,
                      disable=not distributed.is_main())
    row, window = {}, _TrainWindow(config.batch_size)
    # With several processes, a stop is agreed 3 dispatches ahead (`StopRequest.agreed`).
    with interrupts.StopRequest(margin_steps=3 * k) as stop:
      # The next dispatch goes out before the last one's metrics are read (one in flight), so
      # the device does not idle while the host reads them (a GPU did for 1.5-2.5 ms a step;
      # BENCHMARKS.md, "One NVIDIA H200: a profile"). Where the state itself is needed (a
      # checkpoint, an evaluation, the end, a stop) the loop reads the metrics first. A failed
      # step leaves the state and step counter as they were, so a step dispatched behind it
      # repeats it on the same batch and key: the state in hand is still the one before the
      # failure.
      ahead = config.get("dispatch_ahead", True)  # False: read every dispatch's metrics first.
      pending = []  # (n, metrics, needs_state) of dispatches not yet read, oldest first.
      frontier = step  # The step the newest dispatch reaches.
      # Whether to stop (`stop.agreed`, read once per read of a dispatch's metrics): the same
      # on every process at the same read, so that all dispatch, save and stop alike.
      stopping = False
      while step < last:
        # Nothing goes out behind a dispatch whose state is needed, or once a stop is asked.
        if frontier < last and (not pending or (len(pending) == 1 and not pending[0][2]
                                                and not stopping and ahead)):
          # Whole dispatches of k steps, except where k would pass num_train_steps or the run
          # resumed off the k grid: single steps there, so that the run ends exactly at
          # num_train_steps and every interval (a multiple of k) is met.
          n = k if frontier % k == 0 and frontier + k <= last else 1
          if n not in compiled:
            t0 = time.perf_counter()
            compiled[n] = make(n).lower(state, data, k_train).compile()
            row["compile_time_s"] = time.perf_counter() - t0  # This process's own compile.
            # Every process compiled before any dispatches: JAX's persistent cache is written
            # by process 0 only, so on a resume it loads the program at once while the others
            # compile, and on CPU gloo gives up on the first collective after 30 s (a review
            # found every resume of a slow-compiling run failing so). A peer that reached it
            # and left (a second Ctrl-C as it waited) stops the others here, not in the
            # first collective (helper's check: gloo's 30 s wait there, or JAX's fatal log).
            distributed.barrier("the train step's compilation", COMPILE_TIMEOUT_S,
                                collective_next=True)
            if progress is not None:  # Its line apart from the bar's (was after "0%|"; review).
              progress.clear()
            logging.info("train step compiled in %.1f s", row["compile_time_s"])
            if progress is not None:
              progress.refresh()
            elif config.progress_bar:  # After the first compile's line, not under it.
              progress = new_bar()
            window.exclude(time.perf_counter() - t0)  # The wait for the others too.
          state, metrics = compiled[n](state, data, k_train)
          made.kept = True  # Not where the dispatch itself fails (a device out of memory).
          frontier += n
          needs_state = frontier == last or stopping or any(
              frontier % every == 0 for every in (config.checkpoint_every_steps,
                                                   config.eval_every_steps))
          pending.append((n, metrics, needs_state))
          if len(pending) == 1 and not needs_state and ahead:
            continue  # Dispatch one more before reading this one.
        n, metrics, _ = pending.pop(0)
        metrics = parallel.fetch(metrics)
        if not metrics["finite"].all():
          # The state is the one before the failed step (a failed step changes nothing, and
          # a dispatch behind it repeated it): the last good state, saved unless it is the
          # newest checkpoint already, so that the steps since that checkpoint are not lost.
          good = step + int(np.argmin(metrics["finite"]))
          # The steps since the last row, up to the last good one, as a row of their own: a
          # resume from `good` starts a new window (was: their scalars were lost; review).
          # Read before the term report compiles (its seconds are no training time).
          if good > step:
            window.add(good - step, jax.tree_util.tree_map(lambda a: a[:good - step], metrics))
          if window.steps:
            row.update(window.read())
            writer.write(good, row)
          elif row:  # This call's compile time alone: with the failed step's report, not
            writer.write(good + 1, row)  # merged into an older run's row at `good`.
          report = parallel.fetch(make_term_report(model, config, mesh)(state, data, k_train))
          if good > (ckpt.latest_step() or 0):
            writer.sync()  # Its rows on the disk before its checkpoint, as below.
            ckpt.save(good, state)
          ckpt.wait()
          error = train_eval.divergence_error(report, good + 1, writer, ckpt.latest_step(),
                                              ckpt.directory)
          i = good - step
          raise (_gradient_overflow_error(metrics["loss"][i], metrics["grad_norm"][i], config,
                                          good + 1, ckpt.latest_step(), ckpt.directory)
                 or error)
        step += n
        stopping = stop.agreed(step)
        window.add(n, metrics)
        if progress is not None:
          progress.update(n)
        if due(config.log_every_steps):
          row.update(window.read())
          if progress is not None:
            progress.set_postfix(loss=f"{row['train/loss']:.1f}",  # Drawn at the next
                                 img_s=f"{row['train/images_per_s']:.1f}",  # update.
                                 refresh=False)
          # The step's training row first: a stop during the save or the evaluation then
          # loses none of it (was written after the evaluation, so a stop there lost the
          # window's training scalars for good; a resume from an earlier checkpoint drops
          # it).
          writer.write(step, row)
          row = {}
        if pending:  # The state is a dispatch ahead: nothing below is due at this step.
          continue
        # A checkpoint or a stop between log steps: the steps since the last row as a row of
        # their own ("train/steps" says how many), so that no window spans a checkpoint: a run
        # resumed from it writes the rows an uninterrupted one does (was: the window went
        # on past the checkpoint, and a resume from it lost the steps before it; review).
        if window.steps and (due(config.checkpoint_every_steps) or stopping):
          row.update(window.read())
          writer.write(step, row)
          row = {}
        # The checkpoint comes before evaluation and samples, so a failure there loses no steps.
        if due(config.checkpoint_every_steps):
          t0 = time.perf_counter()
          writer.sync()  # The rows up to this step on the disk before its checkpoint.
          ckpt.save(step, state)
          window.exclude(time.perf_counter() - t0)  # Its host part: not training time.
        # Not when stopping: a scheduler's grace period may not cover it, and the resume
        # evaluates this step first (`evaluate_first`).
        if due(config.eval_every_steps) and not stopping:
          t0 = time.perf_counter()
          row.update(evaluate())
          window.exclude(time.perf_counter() - t0)  # Evaluation time is not training time.
          # Merged into the step's training row (one row per step); synced, TensorBoard's
          # events first, since a resume trusts the row (`MetricWriter.write`).
          writer.write(step, row)
          row = {}
        if stopping:
          if not due(config.checkpoint_every_steps):
            writer.sync()  # The stop's row on the disk before its checkpoint.
          ckpt.save(step, state)  # A no-op if this step was just saved.
          ckpt.wait()
          raise TrainingInterrupted(step)
      # The last save finished and everything closed inside the block: a Ctrl-C meanwhile is
      # a stop asked too late, the run finishes (was: raised at once, "interrupted; run the
      # same command to resume from step 6").
      ckpt.wait()
      failed = False
      close_all()
      # Before the agreement below: a peer killed there leaves this process to JAX's fatal
      # log, and its summary said first (was after it: lost then; review finding).
      summary.log(step, ckpt.latest_step())
      # Asked too late to stop before the end (in the last step's save or evaluation; with
      # peers, where the step it announced lies past the last): all is done. With peers,
      # asked of any process, so that all end alike (was: only the one asked, with 130).
      asked = stop.asked_anywhere(step)
  except Exception as e:  # A full disk, a read-only workdir, a failed disk: one plain line.
    error = files.storage_error(e)
    if error is None:
      raise
    raise WorkdirError(
        f"writing to {workdir} failed at step {step}: {files.describe_storage_error(error)}. "
        f"{train_eval.last_checkpoint_words(_last_intact(ckpt), ckpt.directory)} "
        f"{_storage_fix_sentence(error)}, then run the same command to resume.") from None
  finally:
    if not closed:
      close_all()
  if asked:  # Was: the run ended with status 0 and "next: ...", after the stop's notice had
    # promised a last line naming the checkpoint to resume from (review).
    raise _InterruptedWhenFinished(step, ckpt.latest_step(), ckpt.directory, workdir)
  return state


class _InterruptedWhenFinished(TrainingInterrupted):
  """A stop (Ctrl-C, SIGTERM) asked too late to stop the loop before its end (while the last
  step was saved or evaluated; with peers, where the step it announced lies past the last):
  the run is finished, every step trained, evaluated and saved. Still a stop
  (train.py exits with 130, so that `train.py ... && infer.py ...` goes no further, and a
  notebook's cell stops as for any Ctrl-C), but its line says there is nothing to resume.

  Args:
    step: the last step.
    checkpoint: the final checkpoint's step.
    directory: the checkpoint directory.
    workdir: the run's directory.
  """

  def __init__(self, step: int, checkpoint: Optional[int], directory: str, workdir: str):
    super().__init__(step)
    saved = ("" if checkpoint is None else
             f"; the final checkpoint is step {checkpoint} in {directory}")
    self.args = (f"interrupted after the last step, {step}: the run is finished (every step "
                 f"is trained, evaluated and saved{saved}), so there is nothing to resume; "
                 f"next: {train_eval.infer_command(workdir)}",)


def _grace_on_error(failed: bool) -> Optional[float]:
  """How long to wait for a pending save: leaving on an error with peers, a grace period (the
  save needs every process at Orbax's barrier, and a peer may sit in a collective that waits
  for this one: `checkpoints.Checkpointer.wait`); otherwise until it ends."""
  return PENDING_SAVE_GRACE_S if failed and distributed.process_count() > 1 else None


def _last_intact(ckpt: checkpoints.Checkpointer) -> Optional[int]:
  """The newest checkpoint that is whole after a failed write (the failed one is not)."""
  try:
    ckpt.wait(_grace_on_error(True))
  except Exception:  # pylint: disable=broad-except
    pass  # The failed save: Orbax drops it from its steps.
  return ckpt.newest_intact_step()
