"""The train state, the optimiser, and creating or describing the state (training only).

Inference restores model variables without any of this (docs/design.md §2.2: serving never
imports training), so only `train_lib`, the tests and the benchmarks import this module.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from a2i_jax import config_lib, inputs, models, perf, sampling
from a2i_jax.errors import ConfigError, InputError

Array = jax.Array
PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a pytree, saved as one checkpoint."""
  step: Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree

  @property
  def variables(self) -> dict:
    """The model variables {"params", "batch_stats"}, as `model.apply` takes them."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def _number(value: Any) -> Optional[float]:
  """`value` as a float where it is a real number (not a bool), also a 0-d array that holds
  one (not a traced value); None otherwise."""
  if isinstance(value, (bool, np.bool_)):
    return None
  if isinstance(value, (int, float, np.integer, np.floating)):
    return float(value)
  if (hasattr(value, "dtype") and np.shape(value) == () and not isinstance(value, jax.core.Tracer)
      and jnp.issubdtype(value.dtype, jnp.number)):
    return float(np.asarray(value))
  return None


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with coupled weight decay, as `utils/adam_v2.lua` (docs/reference.md §3.1).

  The decay term `weight_decay * theta` is added to the gradient of the summed loss before
  Adam, for every parameter. (The reference also switches bias correction off after 10k steps;
  optax keeps it on, a negligible difference.)

  Adam runs on all the parameters as one float32 vector (`optax.flatten`; the decay is added
  leaf by leaf before, where it fuses into the concatenation), so its state holds two vectors,
  not two trees. The arithmetic is `legacy_optimizer`'s, element for element (the results
  agree to a unit or two in the last place). On XLA:CPU each output of a per-leaf update
  compiled into kernels of its own, three per parameter tensor: with the gradient norm's
  reductions, at most about 540 of the paper disCVAE's train step's 1,029 kernels. Flat, with
  the norm over one vector (`global_norm`), its cold compile took 7.1-7.9 s instead of
  9.9-10.4 s at the same step time (BENCHMARKS.md, "The optimiser as one vector").

  Args:
    config: the experiment config (learning_rate, weight_decay, adam_b1, adam_b2, adam_eps).
  Returns:
    The optax transformation.
  Raises:
    ConfigError: settings that cannot train (`config_lib.check_optimiser`).
  """
  config_lib.check_optimiser(config)
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.flatten(optax.chain(
          optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps),
          optax.scale(-config.learning_rate))))


def legacy_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """`make_optimizer`'s transformation with Adam's moments kept per parameter leaf, as the
  library saved them before 2026-12-01. Training uses it only for the shape of such a
  checkpoint's state, to restore it and convert it with `flat_opt_state`; the benchmarks
  compare the two forms with it.

  Args:
    config: the experiment config.
  Returns:
    The optax transformation.
  Raises:
    ConfigError: settings that cannot train (`config_lib.check_optimiser`).
  """
  config_lib.check_optimiser(config)
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps),
      optax.scale(-config.learning_rate))


def flat_opt_state(legacy_state: Any) -> Any:
  """`legacy_optimizer`'s state as `make_optimizer`'s: the same step count, each moment's
  leaves concatenated in tree order (which is the order `optax.flatten` uses).

  Args:
    legacy_state: the state of `legacy_optimizer` (restored from an older checkpoint).
  Returns:
    The equal state of `make_optimizer`.
  """
  decay, adam, scale = legacy_state
  ravel = lambda tree: jnp.concatenate(
      [jnp.reshape(x, (-1,)) for x in jax.tree_util.tree_leaves(tree)])
  return (decay, (adam._replace(mu=ravel(adam.mu), nu=ravel(adam.nu)), scale))


# `global_norm`'s default `concat_below`: every leaf joins one concatenated vector. (Before
# the optimiser became one vector, the train step reduced each leaf on its own, because the
# concatenation made the step 4-6 % slower; with the flat optimiser and the state donated,
# the step with it ran 1-5 % faster than with a norm per leaf: BENCHMARKS.md.)
# benchmarks/ab_train_step.py's `norm_concat_below` variant key sets it (0: leaf by leaf).
NORM_CONCAT_BELOW = sys.maxsize


def global_norm(tree: Any, concat_below: Optional[int] = None) -> Array:
  """The L2 norm of all the leaves of `tree` together, accumulated in float32.

  For float32 leaves it is `optax.tree.norm`'s value (bfloat16 leaves are summed in float32),
  to the bit for norms over about 1e-5. The squares are those of the gradients scaled by 2^-32
  (the result scaled back), so a huge but finite gradient has a finite norm, up to 7.9e28.
  Was: inf past ~1.8e19, where float32 squares overflow, so the train step refused the step
  even with `config.grad_clip_norm` set (the scale `max_norm / inf` was 0), and the divergence
  report said "gradient norm inf" of a finite gradient (fault hunt). A leaf with a NaN or an
  infinity still gives a norm that is not finite.

  Leaves with fewer than `concat_below` elements are summed as one concatenated vector, the
  others each on its own. On XLA:CPU the reduction of each leaf compiles into kernels of its
  own (a square, a partial and a final sum: about 190 of the paper disCVAE's train step), so
  by default every leaf joins the vector (`NORM_CONCAT_BELOW`).

  Args:
    tree: a pytree of arrays.
    concat_below: the element count under which a leaf joins the concatenated vector; None:
      `NORM_CONCAT_BELOW`.
  Returns:
    A float32 scalar.
  """
  below = NORM_CONCAT_BELOW if concat_below is None else concat_below
  leaves = [jnp.asarray(x, jnp.float32) for x in jax.tree_util.tree_leaves(tree)]
  parts = [x for x in leaves if x.size >= below]
  small = [x.ravel() for x in leaves if x.size < below]
  if small:
    parts.append(jnp.concatenate(small))
  if not parts:
    return jnp.zeros((), jnp.float32)

  # The squares of the gradients scaled by 2^-32: a power of two, so every square and sum is
  # the plain one times 2^-64 to the bit (the norm the same), but for elements under 4.7e-10
  # in size, whose squares flush to 0 (a norm under about 1e-5 then reads low), and the sum
  # overflows only past a norm of 7.9e28. One pass, branch-free: a second sum beside the plain
  # one cost a CPU step 2 ms per 6.5M parameters (read-through), and a `lax.cond` would make
  # the host wait for its predicate in every GPU step.
  total = sum((jnp.sum(jnp.square(x * _SCALE)) for x in parts), jnp.zeros((), jnp.float32))
  return jnp.sqrt(total) / _SCALE


_SCALE = 2.0 ** -32  # `global_norm`'s scale of the gradients before they are squared.


# The largest gradient norm the train step takes unclipped: 2^63 (9.2e18). Adam squares each
# gradient in float32 (its second moment), and a square past 3.4e38 (|g| > 1.8e19) is inf:
# the moment stays inf from then on and the parameter never moves again. A step with a finite
# loss and a norm past this limit, after clipping, is refused (`train_lib.make_train_step`).
# Was: such a step was taken, and one learning rate 1.0 CVAE step left 120 moments inf
# (fault hunt).
GRAD_NORM_LIMIT = 2.0 ** 63


def clip_by_global_norm(grads: Any, max_norm: float) -> tuple[Any, Array]:
  """Scales `grads` so that their global L2 norm is at most `max_norm` (0: unchanged).

  Applied in the train step before the optimiser (`config.grad_clip_norm`), not as an optax
  stage, so the optimiser state, and hence every checkpoint, has the same structure whether
  clipping is on or off: a run that diverged can resume from its last checkpoint with it on.

  Args:
    grads: a pytree of gradients.
    max_norm: the largest global norm allowed, a number of at least 0; 0 turns clipping off.
  Returns:
    (clipped grads, the global norm before clipping).
  Raises:
    ConfigError: a `max_norm` that is not a finite number of at least 0. Was: NaN made every
      gradient NaN, a negative one turned clipping off, None a TypeError (fault hunt).
  """
  value = _number(max_norm)
  if value is None or not math.isfinite(value) or value < 0:
    raise ConfigError(f"max_norm={max_norm!r} (config.grad_clip_norm) must be a finite Python "
                      "number >= 0, known when the step is traced; pass 0 to turn clipping "
                      "off.")
  max_norm = value
  norm = global_norm(grads)
  if max_norm <= 0:
    return grads, norm
  scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30))
  return jax.tree_util.tree_map(lambda g: (g * scale).astype(g.dtype), grads), norm


def _state_from_variables(variables: dict, tx: optax.GradientTransformation) -> TrainState:
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def create_train_state(model: flax.linen.Module, config: ml_collections.ConfigDict,
                       tx: optax.GradientTransformation, key: Array) -> TrainState:
  """Initial state (step 0) from `key`.

  Args:
    model: from `models.create_model`.
    config: the experiment config (configs/default.py).
    tx: from `make_optimizer`.
    key: PRNG key of the initial parameters.
  Returns:
    A `TrainState` at step 0.
  Raises:
    InputError: a `key` that is no PRNG key (a seed: was JAX's TypeError "invalid PRNG key
      data"), a `tx` that is no optax transformation (was an AttributeError; fault hunt), or
      a `model` that is no Flax module (a loaded TrainedModel: pass its `.model`).
    ConfigError: `config` is not the whole experiment config (`config.model` in its place).
  """
  _check_model_and_config(model, config, "create_train_state")
  inputs.check_key(key)
  _check_tx(tx)
  variables = models.init_variables(model, config.model, key)
  # The optimiser's state jitted: `tx.init` op by op runs an eager zeros program per parameter
  # shape (22 for the tiny CVAE), each compiled, or read from the persistent cache, in every
  # new process. The parameters stay out of that program, which would copy them.
  fresh = perf.jit(lambda p: _state_from_variables({"params": p}, tx).replace(params=None),
                   extra_options=models.CHEAP_COMPILE)(variables["params"])
  return fresh.replace(params=variables["params"], batch_stats=variables.get("batch_stats", {}))


def _check_model_and_config(model: Any, config: Any, fn: str) -> None:
  """Refuses a `model` that is no Flax module (the TrainedModel `inference.load_trained`
  gives) and a `config` that is not the whole experiment config (its model section), as
  `sampling` and `TrainedModel.from_variables` refuse them: were AttributeErrors,
  "'TrainedModel' object has no attribute 'init'" and "'model'" (a review's finding)."""
  sampling.check_module(model, f"train_state.{fn}")
  config_lib.check_whole_config(config, f"train_state.{fn}", ("model",))


def _check_tx(tx: Any) -> None:
  """Refuses a `tx` that is no optax transformation (None, a learning rate)."""
  if not isinstance(tx, optax.GradientTransformation):
    raise InputError(f"tx is a {type(tx).__name__}, not an optax transformation; pass "
                     "train_state.make_optimizer(config).")


def abstract_train_state(model: flax.linen.Module, config: ml_collections.ConfigDict,
                         tx: optax.GradientTransformation) -> TrainState:
  """Shapes and dtypes of the train state, without allocating it.

  Args:
    model: from `models.create_model`.
    config: the experiment config (configs/default.py).
    tx: from `make_optimizer`.
  Returns:
    A `TrainState` of `jax.ShapeDtypeStruct` leaves (a checkpoint restore target).
  Raises:
    InputError: a `tx` that is no optax transformation (was an AttributeError; a review), or
      a `model` that is no Flax module (a loaded TrainedModel: pass its `.model`).
    ConfigError: `config` is not the whole experiment config (`config.model` in its place).
  """
  _check_model_and_config(model, config, "abstract_train_state")
  _check_tx(tx)
  return jax.eval_shape(functools.partial(_state_from_variables, tx=tx),
                        models.abstract_variables(model, config.model))
