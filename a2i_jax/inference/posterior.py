"""Posterior inference by optimisation: the options, the attribute prior, the jitted energy
and Adam step, and `infer_latents` (docs/reference.md §5, docs/design.md §4 step 10).

The latent z of a given image x (with some pixels possibly hidden) under attributes y is found
by minimising an energy with Adam, the generator frozen (BatchNorm on running statistics,
dropout off):

  E(z) = D(x_O, mu(y, z)_O) + lambda/2 ||z||^2      [+ w/2 (y - m)^T P (y - m) when y is free]

D is the model's default energy (`model.default_energy`): its own negative log-likelihood on
the observed pixels O where it has one (the (C)VAE's learned per-pixel variance, "gaussian"),
the reconstruction term of its training loss for the whole image otherwise (disCVAE:
"smooth_l1", the reference's SmoothL1 of the composite, times the model's `recon_weight`;
not the foreground's SmoothL1 nor the gate's BCE, which need a mask), or half the squared
error ("l2", the unit-variance Gaussian's, times the same weight).
With lambda = 1 and the model's likelihood, E is -log p(x_O, z | y) up to a constant: the
minimiser is the MAP latent.

Several restarts per image run as an extra batch axis and the lowest final energy wins; the
batch (images x restarts) is split over all devices of the mesh, one code path for 1..N
devices. Where images x restarts exceed `config.inference.batch_size`, an image's restarts
run in several calls, an equal share each, and the lowest energy of all of them is kept
(`infer_latents`): each restart is its own optimisation, from its own start (`_start_noise`),
so how they are grouped changes no result (up to float rounding). The Adam loop is one
`lax.scan` over the steps on every backend, rolled on CPU (the convolutions' input gradients
are written in the layout XLA:CPU runs fast inside a loop: `perf.conv_input_grad`), so that
its program compiles one step whatever the number of steps, and 5 steps per iteration on GPU
and TPU (`perf.inference_scan_unroll`).
Adam is written out below (a few lines) so that serving needs no optimiser library
(docs/design.md §2.2).
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import time
from typing import Any, Mapping, Optional

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from a2i_jax import config_lib, distributed, parallel, perf, sampling
from a2i_jax.errors import ConfigError, InputError
from a2i_jax.inference.restore import TrainedModel, inference_batch_size
from a2i_jax.inputs import (as_array, check_attributes, check_images, check_int, check_key,
                            check_mask)
from a2i_jax.models import CHEAP_COMPILE
from a2i_jax.numerics import bounded_exp

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)
# Adam's constants: optax.scale_by_adam's defaults, which inference always used.
_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8


# ----------------------------------------------------------------------------------------------
# Options and the attribute prior.

@dataclasses.dataclass(frozen=True)
class InferenceOptions:
  """Settings of posterior inference; their defaults live in `configs/default.py:inference`.

  Build them with `from_config(config.inference, **overrides)` (or `inference.options_for`).

  Attributes:
    steps: Adam steps on the latents.
    learning_rate: Adam's peak learning rate.
    schedule: "constant" or "cosine" (decay to 0.1 x the peak over `steps`).
    prior_weight: lambda, the weight of ||z||^2 / 2.
    energy: "auto" (the model's `default_energy`), "gaussian" (the CVAE's learned per-pixel
      variance), "smooth_l1" or "l2".
    init: "encoder" (recognition model on the image, hidden pixels filled with 0, i.e.
      mid-grey), "zeros" or "prior" (z ~ N(0, I)).
    restarts: starts per image; restart 0 uses `init`, the others add posterior (encoder) or
      prior noise. The lowest final energy is kept.
    infer_attributes: optimise y together with z under a Gaussian prior fitted to the
      training attributes (see `AttributePrior`); no attributes may be given then (they
      would be ignored: `_no_ignored_attributes`).
    attribute_prior_weight: w, the weight of the attribute prior's quadratic form.
    steps_per_call: Adam steps per jitted call (the largest divisor of `steps` up to it);
      0: all of them in one call. A call runs its steps in one `lax.scan` (rolled on CPU, 5
      steps per iteration on GPU and TPU: `perf.inference_scan_unroll`), a one-step call the
      step without a loop.
  """
  steps: int
  learning_rate: float
  schedule: str
  prior_weight: float
  energy: str
  init: str
  restarts: int
  infer_attributes: bool
  attribute_prior_weight: float
  steps_per_call: int

  def __post_init__(self):
    # Types first: `check_inference` compares values (and their finiteness), and a float
    # count or a string would pass its comparisons and fail deep inside JAX.
    for name in ("steps", "restarts", "steps_per_call"):
      check_int(getattr(self, name), f"inference.{name}", error=ConfigError)
    for name in ("learning_rate", "prior_weight", "attribute_prior_weight"):
      value = getattr(self, name)
      if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ConfigError(f"inference.{name}={value!r} is not valid; pass a number.")
    if not isinstance(self.infer_attributes, (bool, np.bool_)):
      raise ConfigError(f"inference.infer_attributes={self.infer_attributes!r} is not valid; "
                        "pass True or False.")
    config_lib.check_inference(dataclasses.asdict(self))

  @classmethod
  def from_config(cls, section: Any, **overrides) -> "InferenceOptions":
    """Options from `config.inference` (a ConfigDict or mapping), with keyword overrides.

    Args:
      section: `config.inference`.
      **overrides: any field of this class.
    Returns:
      The options.
    Raises:
      ConfigError: an unknown key, an invalid value, or a batch_size among the overrides
        (the calls take it).
    """
    values = dict(section.to_dict() if hasattr(section, "to_dict") else section)
    values.pop("batch_size", None)  # How images are batched, not an option of one batch.
    if "batch_size" in overrides:  # Was "unknown inference option(s) ['batch_size']", though
      # config.inference holds it (fault hunt).
      raise ConfigError(f"batch_size={overrides['batch_size']!r} is how many rows each call "
                        "takes, not an option of the inference; pass it to the call instead "
                        "(run_inference, reconstruct, complete, edit or infer_attributes: "
                        "batch_size=...).")
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(f"unknown inference option(s) {unknown}; known: {sorted(known)}.")
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class AttributePrior:
  """A Gaussian prior over attribute vectors, fitted to the training attributes.

  Attributes:
    mean: [A].
    precision: [A, A], the inverse of the (shrunk) covariance.
  """
  mean: np.ndarray
  precision: np.ndarray

  @classmethod
  def fit(cls, attributes: np.ndarray, shrinkage: float = 0.1) -> "AttributePrior":
    """Fits mean and covariance; the covariance is shrunk towards its diagonal.

    Args:
      attributes: [N, A] training attributes.
      shrinkage: weight of the diagonal in (1 - s) S + s diag(S); keeps the precision finite
        for correlated or constant columns.
    Returns:
      The prior: mean [A], precision [A, A] (float32).
    Raises:
      InputError: not [N >= 2, A] finite numbers, or a shrinkage outside [0, 1] (which makes
        the precision indefinite: no Gaussian, and attributes inferred far off their range).
    """
    if (isinstance(shrinkage, (bool, np.bool_))  # True is 1 to Python: not a weight given.
        or not (isinstance(shrinkage, (int, float, np.floating)) and 0.0 <= shrinkage <= 1.0)):
      raise InputError(f"shrinkage={shrinkage!r}: pass a number from 0 (the sample covariance) "
                       "to 1 (its diagonal alone); 0.1 is the default.")
    try:  # Was: NumPy's ValueError for a ragged list or strings.
      y = np.asarray(as_array(attributes, "the attributes to fit an attribute prior to"),
                     np.float64)
    except (TypeError, ValueError) as e:
      if isinstance(e, InputError):
        raise
      raise InputError("the attributes to fit an attribute prior to are not numbers; pass "
                       "[N, A] numbers.") from None
    if y.ndim != 2 or y.shape[0] < 2:
      raise InputError(f"fitting an attribute prior needs [N >= 2, A] attributes; got {y.shape}.")
    if not np.all(np.isfinite(y)):
      raise InputError("the attributes to fit an attribute prior to contain NaN or infinity; "
                       "drop or fill those rows first.")
    mean = y.mean(axis=0)
    cov = np.cov(y, rowvar=False).reshape(y.shape[1], y.shape[1])
    cov = (1.0 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov))
    cov += 1e-4 * np.eye(y.shape[1])
    precision = np.linalg.inv(cov)
    return cls(mean.astype(np.float32), ((precision + precision.T) / 2).astype(np.float32))

  def of_process_0(self) -> "AttributePrior":
    """This prior as process 0 holds it, on every process of a multi-process job
    (`jax.distributed`); the prior itself in one process.

    Every process may fit the prior from the same attributes, but a matrix inverse may differ
    in its last bits between hosts whose CPUs run other BLAS kernels, and inference compares
    its inputs bit for bit across processes (`same_batch_on_every_process`): such a call
    stops. Pass `AttributePrior.fit(attributes).of_process_0()` instead. The values go through
    the coordinator's key-value store, not a device collective, but every process must still
    call this, once per prior and in the same order: a process that does not leaves the others
    waiting for it. That is why `fit` does not do it itself: a fit is plain arithmetic that a
    process may run alone.

    Returns:
      An `AttributePrior` of process 0's mean and precision (float32); `self` in one process.
    Raises:
      DataError: process 0 did not give its prior in time, or left first.
      InputError: process 0's prior is of another number of attributes.
    """
    if distributed.process_count() <= 1:
      return self
    arrays = (np.asarray(self.mean, np.float32), np.asarray(self.precision, np.float32))
    mine = base64.b64encode(b"".join(a.tobytes() for a in arrays)).decode("ascii")
    data = base64.b64decode(distributed.value_of_process_0("the attribute prior", mine))
    values = np.frombuffer(data, np.float32)
    n = arrays[0].size
    if values.size != n + arrays[1].size:  # Another number of attributes on process 0.
      raise InputError(f"process 0's attribute prior has {values.size} numbers, this "
                       f"process's {n + arrays[1].size} ({n} attributes); fit it from the "
                       "same attributes on every process.")
    return dataclasses.replace(self, mean=values[:n].copy(),
                               precision=values[n:].reshape(arrays[1].shape).copy())


# ----------------------------------------------------------------------------------------------
# The inference functions.

def resolve_energy(options: InferenceOptions, model: nn.Module, where: str = "") -> str:
  """The energy `options.energy` names for `model` ("auto": the model's default).

  Args:
    options: the inference options.
    model: the model's module (`energies`, `default_energy`).
    where: the file the setting was read from, for the message (infer.py: config.json).
  Returns:
    One of `model.energies`.
  Raises:
    ConfigError: an energy the model does not have.
  """
  return config_lib.model_energy(options.energy, model, where)  # train.py's check's too.


# Steps per iteration of the Adam loop (`lax.scan`'s unroll); None: the backend's
# (`perf.inference_scan_unroll`: a rolled loop on CPU, 5 steps on GPU and TPU). Benchmarks set
# it, e.g. to the steps per call to compare fully unrolled calls, CPU's form before 2026-12-03.
SCAN_UNROLL: Optional[int] = None


def _steps_per_call(options: InferenceOptions) -> int:
  """How many Adam steps one jitted call runs (a divisor of `steps`)."""
  if options.steps == 0 or not options.steps_per_call:
    return options.steps
  k = min(options.steps_per_call, options.steps)
  while options.steps % k:
    k -= 1
  return k


def _learning_rate(options: InferenceOptions, peak: Array, t: Array) -> Array:
  """The step-t learning rate: constant, or cosine decay from `peak` to 0.1 peak."""
  if options.schedule == "constant" or options.steps == 0:
    return peak
  frac = jnp.minimum(t.astype(jnp.float32) / options.steps, 1.0)
  return peak * (0.1 + 0.9 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))


def _adam_direction(grads: Any, mu: Any, nu: Any, count: Array) -> tuple[Any, Any, Any]:
  """One Adam moment update; returns (direction, mu, nu). The step is -lr * direction.

  The same arithmetic, in the same order, as `optax.scale_by_adam()` (b1 0.9, b2 0.999,
  eps 1e-8, bias-corrected), so results match the optax version to the last bit.
  """
  tree_map = jax.tree_util.tree_map
  mu = tree_map(lambda g, m: (1 - _ADAM_B1) * (g ** 1) + _ADAM_B1 * m, grads, mu)
  nu = tree_map(lambda g, v: (1 - _ADAM_B2) * (g ** 2) + _ADAM_B2 * v, grads, nu)
  c1, c2 = 1 - _ADAM_B1 ** count, 1 - _ADAM_B2 ** count
  direction = tree_map(lambda m, v: (m / c1.astype(m.dtype)) /
                       (jnp.sqrt(v / c2.astype(v.dtype)) + _ADAM_EPS), mu, nu)
  return direction, mu, nu


def _hyper(options: InferenceOptions) -> dict[str, np.float32]:
  """The options that enter as traced values, so changing them does not recompile."""
  return {"learning_rate": np.float32(options.learning_rate),
          "prior_weight": np.float32(options.prior_weight),
          "attribute_prior_weight": np.float32(options.attribute_prior_weight)}


def _static(options: InferenceOptions) -> InferenceOptions:
  """`options` without the traced values: the key of the compiled functions."""
  return dataclasses.replace(options, learning_rate=1.0, prior_weight=1.0,
                             attribute_prior_weight=1.0)


def _row_restarts(restart_ids: Array, m: int) -> Array:
  """Each of the `m` rows' restart (image-major: `len(restart_ids)` rows per image); -1 for
  the rows that pad a call's share of the restarts (`infer_latents`)."""
  return restart_ids[jnp.arange(m) % restart_ids.shape[0]]


def _start_noise(dims: Mapping[str, int], key: Array, first_index: Any, m: int,
                 restart_ids: Array) -> dict[str, Array]:
  """N(0, I) noise per row (image-major, `len(restart_ids)` rows per image), drawn from the
  key folded with the image's index among all the images of a call (`first_index` + its row
  in this batch) and then with its restart (`restart_ids`, the restarts this call runs): an
  image's restart starts from the same noise whatever batch, and whatever share of the
  restarts, it lands in (`run_inference` splits its images, and `infer_latents` the restarts,
  by `config.inference.batch_size`)."""
  rows = jnp.arange(m)

  def draw(image, restart):
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, image), restart),
                            len(dims))
    return {name: jax.random.normal(k, (d,), jnp.float32)
            for (name, d), k in zip(dims.items(), keys)}
  restarts = jnp.maximum(_row_restarts(restart_ids, m), 0)  # A padding row's noise is unused.
  return jax.vmap(draw)(first_index + rows // restart_ids.shape[0], restarts)


def make_inference_fns(model: nn.Module, options: InferenceOptions) -> dict[str, Any]:
  """Builds the jitted pieces of posterior inference for one model and set of options.

  Three functions, called in turn by `infer_latents`:
    init(variables, x, y, observed, fg_mask, key, prior, first_index=0, restart_ids=None)
      -> carry
    run(variables, x, y, observed, carry, prior, hyper) -> (carry, energy trace [k, M])
    finish(variables, x, y, observed, carry, prior, hyper, restart_ids=None) -> outputs
      (the R restarts of each image reduced to the lowest energy's)
  where M = N x R, x [M,S,S,3] in [-1,1], y [M,A], observed and fg_mask [M,S,S,1],
  prior = (mean [A], precision [A,A]) and hyper = the learning rate and weights as arrays
  (`_hyper(options)`), so settings that differ only in those share the compiled code;
  first_index, the index of the batch's first image among all of a call's (`_start_noise`);
  restart_ids, int32 [R], which of each image's `options.restarts` restarts these rows run
  (-1: a row that pads the share, never kept); None: all of them, R = `options.restarts`.

  Args:
    model: a model from `models.create_model`.
    options: the inference options.
  Returns:
    dict with "init", "run", "finish" (jitted), "steps_per_call", "compile_ahead"
    (`_compile_ahead_fn`: the three compiled side by side in threads, each waited for
    before its first use; a caller that replaces one of the three drops it), "options"
    (the settings they were built for, less the traced ones: `infer_latents` refuses them
    for other settings) and "model" (`infer_latents` refuses them for another model).
  Raises:
    InputError: `model` is no Flax module (a TrainedModel: pass its `.model`), or `options`
      are not `InferenceOptions`.
    ConfigError: an energy the model does not have.
  """
  sampling.check_module(model, "make_inference_fns")  # Were AttributeErrors: a TrainedModel.
  if not isinstance(options, InferenceOptions):
    raise InputError(f"make_inference_fns takes InferenceOptions, not "
                     f"{type(options).__name__}; build them with inference.options_for(trained, "
                     "steps=..., ...).")
  energy_kind = resolve_energy(options, model)
  dims = model.latent_dims
  restarts = options.restarts
  infer_y = options.infer_attributes
  k = _steps_per_call(options)

  def decode(variables, latents, y):
    y = latents["y"] if infer_y else y
    return model.apply(variables, {n: latents[n] for n in dims}, y, method="decode_latents")

  def energy_terms(out, latents, x, observed, prior, hyper):
    """Each row's energy, from `out`, the decoder's outputs for `latents` (`decode`)."""
    mean = out["mean"]
    if energy_kind == "gaussian":
      lv = out["logvar"]
      per_pixel = 0.5 * (lv + _LOG_2PI) + 0.5 * jnp.square(x - mean) * bounded_exp(-lv)
    elif energy_kind == "smooth_l1":
      d = jnp.abs(mean - x)
      per_pixel = jnp.where(d < 1.0, 0.5 * jnp.square(d), d - 0.5)
    else:
      per_pixel = 0.5 * jnp.square(mean - x)
    if energy_kind != "gaussian":  # The weight the model's reconstruction was trained with.
      per_pixel = model.recon_weight * per_pixel
    data = (per_pixel * observed).reshape(x.shape[0], -1).sum(-1)
    z_sq = sum(jnp.square(latents[n]).sum(-1) for n in dims)
    energy = data + 0.5 * hyper["prior_weight"] * z_sq
    if infer_y:
      d_y = latents["y"] - prior[0]
      energy += 0.5 * hyper["attribute_prior_weight"] * jnp.einsum("ma,ab,mb->m", d_y, prior[1],
                                                                 d_y)
    return energy

  def total_energy(latents, variables, x, y, observed, prior, hyper):
    e = energy_terms(decode(variables, latents, y), latents, x, observed, prior, hyper)
    return e.sum(), e

  def all_restarts(restart_ids):
    return jnp.arange(restarts, dtype=jnp.int32) if restart_ids is None else restart_ids

  def init(variables, x, y, observed, fg_mask, key, prior, first_index=0, restart_ids=None):
    m = x.shape[0]
    restart_ids = all_restarts(restart_ids)
    y_used = jnp.broadcast_to(prior[0], y.shape) if infer_y else y
    noise = _start_noise(dims, key, first_index, m, restart_ids)
    first = (_row_restarts(restart_ids, m) == 0)[:, None]  # Restart 0 of each image.
    x_filled = x * observed  # Hidden pixels -> 0, mid-grey in [-1, 1].
    if options.init == "encoder":
      # Without foreground masks the model estimates them itself (disCVAE).
      q = model.apply(variables, x_filled, y_used, fg_mask, method="encode_latents")
      latents = {n: jnp.where(first, q[n][0], q[n][0] + bounded_exp(0.5 * q[n][1]) * noise[n])
                 for n in dims}
    elif options.init == "zeros":
      latents = {n: jnp.where(first, 0.0, noise[n]) for n in dims}
    else:
      latents = dict(noise)
    if infer_y:
      latents["y"] = y_used
    zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, latents)  # Adam's moments.
    return {"latents": latents, "mu": zeros(), "nu": zeros(), "t": jnp.zeros((), jnp.int32)}

  def one_step(variables, x, y, observed, prior, hyper, carry):
    grads, e = jax.grad(total_energy, has_aux=True)(carry["latents"], variables, x, y,
                                                   observed, prior, hyper)
    direction, mu, nu = _adam_direction(grads, carry["mu"], carry["nu"], carry["t"] + 1)
    lr = _learning_rate(options, hyper["learning_rate"], carry["t"])
    latents = jax.tree_util.tree_map(lambda p, u: p - lr * u, carry["latents"], direction)
    return {"latents": latents, "mu": mu, "nu": nu, "t": carry["t"] + 1}, e

  def run(variables, x, y, observed, carry, prior, hyper):
    body = lambda c, _: one_step(variables, x, y, observed, prior, hyper, c)
    if k == 1:  # No loop: the plain step (XLA removes a loop of one trip too, jax 0.7.2-0.10).
      carry, e = body(carry, None)
      return carry, e[None]
    unroll = SCAN_UNROLL or perf.inference_scan_unroll()
    return jax.lax.scan(body, carry, None, length=k, unroll=min(unroll, k))

  def finish(variables, x, y, observed, carry, prior, hyper, restart_ids=None):
    latents = carry["latents"]
    out = decode(variables, latents, y)  # Once, for the energy and the images both.
    energy = energy_terms(out, latents, x, observed, prior, hyper)
    images = sampling.images_from_outputs(model, out)
    m = x.shape[0]
    restart_ids = all_restarts(restart_ids)
    r = restart_ids.shape[0]
    n = m // r
    # A restart whose energy is NaN or infinite never wins (argmin takes NaN as smallest), nor
    # does a row that pads the restarts; with none finite, the first restart stands.
    finite = jnp.where(jnp.isfinite(energy) & (_row_restarts(restart_ids, m) >= 0), energy,
                       jnp.inf)
    best = jnp.argmin(finite.reshape(n, r), axis=1)
    pick = lambda a: a.reshape((n, r) + a.shape[1:])[jnp.arange(n), best]
    result = {name: pick(v) for name, v in latents.items()}
    if not infer_y:
      result["y"] = pick(y)
    result["energy"] = pick(energy)
    result["restart_energies"] = energy.reshape(n, r)
    result["reconstruction"] = pick(images.pop("image"))
    result.update({name: pick(v) for name, v in images.items()})
    return result

  # `init` and `finish` run once per call, the steps hundreds of times: on CPU those two
  # compile without LLVM's optimisations, in about half the time, 0.12 s (CVAE) to 0.31 s
  # (disCVAE) off the first call (BENCHMARKS.md, "Programs that run once").
  programs = {"init": perf.jit(init, extra_options=CHEAP_COMPILE),
              "run": perf.jit(run, donate_argnums=(4,)),
              "finish": perf.jit(finish, extra_options=CHEAP_COMPILE)}
  return {**programs, "steps_per_call": k, "options": _static(options), "model": model,
          "compile_ahead": _compile_ahead_fn(programs, run_steps=k > 0)}


class _Compiling:
  """The programs `compile_ahead` started compiling for one set of inputs: `wait(name)`
  before a program's first call returns once it is compiled (re-raising a failed compile),
  `wait_all()` once all are, with each one's {"trace", "lower", "compile"} seconds;
  `ended` is when the last compile ended (`time.perf_counter()`)."""

  def __init__(self):
    self.futures: dict[str, concurrent.futures.Future] = {}
    self.seconds: dict[str, dict[str, float]] = {}
    self.ended = 0.0

  def wait(self, name: str) -> None:
    future = self.futures.get(name)
    if future is not None:
      future.result()

  def wait_all(self) -> dict[str, dict[str, float]]:
    for name in self.futures:
      self.wait(name)
    return self.seconds

  def in_flight(self) -> bool:
    return not all(f.done() for f in self.futures.values())

  def failed(self) -> bool:
    return any(f.done() and f.exception() is not None for f in self.futures.values())


def _compile_ahead_fn(programs: Mapping[str, Any], run_steps: bool) -> Any:
  """`compile_ahead(variables, x, y, observed, fg_mask, key, prior, hyper, first_index,
  restart_ids=None) -> _Compiling`:
  starts compiling the programs an `infer_latents` call with these (placed) inputs will run,
  XLA compiling each in a thread of its own while Python traces the next, and returns once
  all three are traced; the call waits for each program only before its first use.

  Called in turn, each program's tracing waited for the compile of the one before. Compiled
  side by side, the paper disCVAE's first call lost 4.9 s to its programs instead of 6.5 on a
  2-core Intel Xeon (medians over a later call, fresh processes). Waiting for each program
  only before its first use, not for all three before `init`, never waits for a program the
  call does not need yet: `init` and the first steps run while `finish` (and on an
  accelerator, where they run on the device, the rest) still compile. On a 2-core AMD EPYC
  (Zen 5), which compiles the chunk in about half the Intel's time, the three ways were
  within a few per cent of each other (BENCHMARKS.md, "A Zen 5 EPYC: ... inference's
  programs waited for late"). The compiled programs land in the jitted functions' own caches,
  where the call's programs find them. Inputs whose shapes and shardings were compiled for
  return a handle with nothing to wait for, without tracing; after a failed compile (out of
  memory, say) the next call compiles again, since `run_inference` keeps the programs.
  `run`'s and `finish`'s carry is described from `init`'s output: the shapes and shardings
  `_one_sharding` gives it.

  Returns:
    A `_Compiling`; its `seconds` fill in as the compiles end (empty when nothing was
    compiled).
  """
  started: dict[Any, _Compiling] = {}

  def compile_ahead(variables, x, y, observed, fg_mask, key, prior, hyper, first_index,
                    restart_ids=None):
    args = (variables, x, y, observed, fg_mask, key, prior, hyper, first_index, restart_ids)
    leaves, tree = jax.tree_util.tree_flatten(args)
    signature = (tree, tuple((a.shape, a.dtype, getattr(a, "sharding", None)) for a in leaves))
    earlier = started.get(signature)
    if earlier is not None and not earlier.failed():  # A failed compile is tried again.
      # Still compiling (a call before this one stopped midway), or compiled: nothing new.
      return earlier if earlier.in_flight() else _Compiling()
    handle = _Compiling()

    def lowered(name, *inputs):
      t0 = time.perf_counter()
      traced = programs[name].trace(*inputs)
      t1 = time.perf_counter()
      out = traced.lower()
      handle.seconds[name] = {"trace": t1 - t0, "lower": time.perf_counter() - t1}
      return out

    def compiled(name, lowering):
      t0 = time.perf_counter()
      lowering.compile()
      end = time.perf_counter()
      handle.seconds[name]["compile"] = end - t0
      handle.ended = max(handle.ended, end)

    # The threads end with their compiles; nothing here waits for them.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=3,
                                                 thread_name_prefix="a2i_compile_ahead")
    try:
      init = lowered("init", variables, x, y, observed, fg_mask, key, prior, first_index,
                     restart_ids)
      handle.futures["init"] = pool.submit(compiled, "init", init)
      carry = jax.tree_util.tree_map(
          lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), init.out_info,
          _carry_shardings(init.out_info, x.sharding))
      rest = (variables, x, y, observed, carry, prior, hyper)
      if run_steps:
        handle.futures["run"] = pool.submit(compiled, "run", lowered("run", *rest))
      handle.futures["finish"] = pool.submit(compiled, "finish",
                                             lowered("finish", *rest, restart_ids))
    finally:
      pool.shutdown(wait=False)
    started[signature] = handle
    return handle

  return compile_ahead


def _carry_shardings(carry: Any, batch: jax.sharding.NamedSharding) -> Any:
  """The carry's shardings between programs: batch-split like the images, the step counter
  replicated."""
  whole = parallel.replicated(batch.mesh)
  return jax.tree_util.tree_map(lambda a: batch if a.ndim else whole, carry)


def _one_sharding(carry: Any, batch: jax.sharding.NamedSharding) -> Any:
  """The carry batch-split like the images, its step counter replicated: one sharding for
  every call of `run` and `finish`, whatever the program before left it in. `init` leaves
  Adam's zero moments replicated and `run` returns them batch-split on several devices and
  replicated on one, and a jitted function compiles again for each new input sharding."""
  return jax.device_put(carry, _carry_shardings(carry, batch))


def _pad_to(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _restarts_per_call(restarts: int, images: int, batch_size: int) -> int:
  """How many of each image's restarts one call runs: all of them where images x restarts
  fit in `batch_size` rows, else the smallest equal share over the fewest calls whose rows
  fit (one each where the images alone fill the batch). The last call's share may be padded:
  7 restarts, 3 per call, run as 3 + 3 + 1 padded to 3."""
  fit = max(1, batch_size // images)
  if restarts <= fit:
    return restarts
  calls = -(-restarts // fit)
  return -(-restarts // calls)


def _lower_energy(best: dict[str, np.ndarray], other: dict[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
  """Per image, the outputs of `best` or of `other`, whichever restart ended with the lower
  finite energy (`best`'s on a tie, as `argmin` keeps the first restart; NaN or infinity
  never wins)."""
  score = lambda e: np.where(np.isfinite(e), e, np.inf)
  better = score(other["energy"]) < score(best["energy"])
  return {name: np.where(better.reshape((-1,) + (1,) * (v.ndim - 1)), other[name], v)
          for name, v in best.items()}


def _needs_attributes(trained: TrainedModel, consequence: str) -> None:
  """Refuses a request that only makes sense for a model that uses attributes.

  Args:
    trained: the model.
    consequence: what goes wrong without them, e.g. "they cannot be inferred from it".
  Raises:
    InputError: the model does not use attributes (the VAE).
  """
  if not trained.model.uses_attributes:
    raise InputError(f"this {trained.config.model.name} does not use attributes, so "
                     f"{consequence}; use a CVAE or disCVAE workdir.")


def check_options_type(options: Any) -> None:
  """Refuses `options` that are not `InferenceOptions` (a dict of settings, say).

  Args:
    options: what a caller passed as an inference call's options.
  Raises:
    InputError: naming the type and how to build options.
  """
  if not isinstance(options, InferenceOptions):
    raise InputError(f"options must be InferenceOptions, not {type(options).__name__}; build "
                     "them with inference.options_for(trained, steps=..., ...).")


def _check_options(trained: TrainedModel, options: Any) -> InferenceOptions:
  """The options of an inference call: given, or the run's `config.inference`.

  Args:
    trained: the model.
    options: `InferenceOptions` or None.
  Returns:
    The options.
  Raises:
    InputError: not `InferenceOptions` (a dict, say), or attributes to infer for a model that
      does not use them.
  """
  if options is None:
    options = InferenceOptions.from_config(trained.config.inference)
  check_options_type(options)
  if options.infer_attributes:
    _needs_attributes(trained, "they cannot be inferred from it")
  return options


def _no_ignored_attributes(attributes: Any, options: Any, use: str) -> None:
  """Refuses attributes given to `use` with `options.infer_attributes` on, which infers the
  attributes in their place (was: taken and ignored without a word, so that reconstruct gave
  the same images for any attributes, and edit's "edited_y" came from the inferred ones;
  fault hunt).

  Raises:
    InputError: naming both ways out.
  """
  if attributes is not None and getattr(options, "infer_attributes", False):
    raise InputError(f"{use} was given attributes, but options.infer_attributes is on, which "
                     "infers them jointly with z and would ignore those given; pass "
                     "attributes=None to infer them, or options with infer_attributes=False "
                     "(inference.options_for(trained, infer_attributes=False)) to use them.")


def _check_prior(prior: Any, y_dim: int) -> tuple[np.ndarray, np.ndarray]:
  """(mean [A], precision [A, A]) of an `AttributePrior` fitted to this model's attributes."""
  if not isinstance(prior, AttributePrior):
    raise InputError(f"attribute_prior must be an AttributePrior, not {type(prior).__name__}; "
                     "fit one with AttributePrior.fit(training attributes).")
  mean, precision = np.asarray(prior.mean, np.float32), np.asarray(prior.precision, np.float32)
  if mean.shape != (y_dim,) or precision.shape != (y_dim, y_dim):
    raise InputError(f"the attribute prior has mean {mean.shape} and precision "
                     f"{precision.shape}; this model has {y_dim} attributes. Fit it to this "
                     f"model's training attributes, [N, {y_dim}].")
  if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(precision))):
    raise InputError("the attribute prior holds NaN or infinity; fit it to finite attributes.")
  # A precision whose symmetric part (all the quadratic form sees) is not positive
  # semi-definite is no Gaussian's: its energy has no floor, and attributes came out far off
  # their range with a large negative energy and no word (review: -100 I gave y of +-11.9).
  p64 = precision.astype(np.float64)
  scale = max(float(np.abs(p64).max()), 1e-30)
  if np.linalg.eigvalsh((p64 + p64.T) / 2).min() < -1e-5 * scale:
    raise InputError("the attribute prior's precision is not positive semi-definite, so it "
                     "is no Gaussian's; fit the prior with AttributePrior.fit(training "
                     "attributes), with a larger shrinkage if the attributes are collinear.")
  return mean, precision


def _check_batch(trained: TrainedModel, x: np.ndarray, attributes: Any, observed: Any,
                fg_masks: Any, options: InferenceOptions, attribute_prior: Any
                ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray],
                           tuple[np.ndarray, np.ndarray]]:
  """Checks what goes with N checked images, on the host, once per call, before anything
  compiles: `infer_latents` checks its batch with it, `run_inference` the whole input first.

  Args:
    trained: the model.
    x: the images, checked (`inputs.check_images`): [N, S, S, 3].
    attributes, observed, fg_masks, attribute_prior: as for `infer_latents`.
    options: checked (`_check_options`).
  Returns:
    (attributes [N, y_dim] (zeros where the model or `infer_attributes` needs none), observed
    [N, S, S, 1] (ones when None), fg_masks [N, S, S, 1] or None, (prior mean [y_dim],
    precision [y_dim, y_dim]) (a standard normal when none is given)), NumPy arrays.
  Raises:
    InputError: no images; missing, misshapen or non-finite attributes; misshapen masks or
      mask values outside [0, 1]; an observed mask that hides every pixel of an image;
      foreground masks for a model without a foreground (the (C)VAE) or with an init that
      does not read them; a missing or misfitted attribute prior, or one given without
      `options.infer_attributes`.
  """
  s, y_dim = trained.config.model.image_size, trained.config.model.y_dim
  n = x.shape[0]
  if n == 0:
    raise InputError("no images were given; pass at least one.")
  if fg_masks is not None and not trained.model.needs_masks:
    raise InputError(f"fg_masks were given, but this {trained.config.model.name} has no "
                     "foreground / background split and would ignore them; only a disCVAE "
                     "uses them. Drop fg_masks.")
  if fg_masks is not None and options.init != "encoder":
    raise InputError(f"fg_masks were given with init={options.init!r}; they only set the "
                     "encoder's start (init='encoder') and would be ignored. Drop fg_masks, or "
                     "start from the encoder.")
  if attributes is None:
    if trained.model.uses_attributes and not options.infer_attributes:
      raise InputError("attributes are needed for this conditional model; pass them, or set "
                       "infer_attributes=True (with an attribute_prior) to infer them.")
    y = np.zeros((n, y_dim), np.float32)
  else:
    y = check_attributes(attributes, y_dim, n)
  obs = (np.ones((n, s, s, 1), np.float32) if observed is None
         else check_mask(observed, n, s, "observed"))
  blind = np.flatnonzero(obs.reshape(n, -1).max(axis=1) == 0)
  if blind.size:  # Was inferred from nothing: a meaningless output, without a word.
    shown = ", ".join(map(str, blind[:5])) + (", ..." if blind.size > 5 else "")
    raise InputError(f"observed hides every pixel of {blind.size} of the {n} images ({shown}), "
                     "so there is nothing to infer from; observed is 1 where a pixel is kept "
                     "and 0 where it is filled. If the mask marks the hole with 1, pass 1 - "
                     "mask; to draw images from attributes alone, use sample.")
  masks = None if fg_masks is None else check_mask(fg_masks, n, s, "fg_masks")
  if attribute_prior is not None and not options.infer_attributes:  # Was ignored silently.
    raise InputError("an attribute_prior was given, but infer_attributes is off, so it would "
                     "be ignored; pass options with infer_attributes=True (or call "
                     "infer_attributes), or drop attribute_prior.")
  if options.infer_attributes and attribute_prior is None:
    raise InputError("infer_attributes=True needs an attribute_prior "
                     "(AttributePrior.fit(training attributes)).")
  prior = ((np.zeros(y_dim, np.float32), np.eye(y_dim, dtype=np.float32))
           if attribute_prior is None else _check_prior(attribute_prior, y_dim))
  return y, obs, masks, prior


def infer_latents(trained: TrainedModel, images: Array, attributes: Optional[Array],
                  observed: Optional[Array] = None, *, key: Array,
                  options: Optional[InferenceOptions] = None,
                  fg_masks: Optional[Array] = None,
                  attribute_prior: Optional[AttributePrior] = None,
                  mesh: Optional[jax.sharding.Mesh] = None,
                  fns: Optional[Mapping[str, Any]] = None,
                  pad_to: int = 0, first_index: int = 0,
                  batch_size: Optional[int] = None) -> dict[str, np.ndarray]:
  """Posterior inference by optimisation for a batch of images.

  Each image's `options.restarts` restarts are rows of the batch. Where images x restarts
  exceed `batch_size`, the restarts run in several calls, an equal share of them each (as
  many as fit beside the images, at least one), and the lowest energy of all is kept: the
  same result as one call, since each restart is an optimisation of its own, from noise drawn
  for its image and restart alone, up to float rounding.

  Args:
    trained: the generator (`load_trained`, or `TrainedModel.from_variables`).
    images: [N, S, S, 3] floats in [-1, 1], the models' convention (`inputs.to_signed`
      converts uint8 or [0, 1]; `reconstruct`, `complete` and `run_inference` take those as
      they are), read to the host (a NumPy array, or a jax array this process holds whole).
      With several processes (`jax.distributed`) every process passes the whole batch, the
      same images, attributes, masks, key and attribute prior (a fitted one shared with
      `AttributePrior.of_process_0`): a batch that differs from process 0's is refused (was
      spliced into one mixed result). Other dtypes, values outside
      [-1, 1] and NaN are refused; images in [0, 1] lie in [-1, 1] too and cannot be told
      apart, so they are read as [-1, 1] (a washed-out image): convert them first.
    attributes: [N, y_dim]; None for models that do not use attributes, and with
      `options.infer_attributes` (which would ignore them: given, they are refused).
    observed: [N, S, S, 1] with 1 = observed pixel, 0 = hidden; None = all observed.
    key: PRNG key (restart noise, prior init).
    options: `InferenceOptions`; default: the run's `config.inference`.
    fg_masks: foreground masks [N, S, S, 1] for the encoder init of models that take them
      (disCVAE); without them the model estimates the foreground itself. Other models,
      and an `options.init` other than "encoder", refuse them.
    attribute_prior: required with `options.infer_attributes`.
    mesh: devices to split the batch over; default all devices.
    fns: prebuilt `make_inference_fns` output (reused across calls to avoid re-tracing),
      built for these `options` (those that differ only in the learning rate and weights
      share them; others are refused).
    pad_to: pad the batch to at least this many images, so that a ragged last batch reuses
      the compiled program of the full ones.
    first_index: where these images start among a larger set split into batches
      (`run_inference`): each image's start noise follows from `key` and its index there,
      so that it does not depend on the batching.
    batch_size: the most rows, images x restarts, one call of the compiled programs takes
      (the padded images' count where that is more: at least one restart each); default
      `config.inference.batch_size`.
  Returns:
    dict of numpy arrays: the latents ("z" [N, z_dim], or disCVAE's "z_fg", "z_bg"), "y"
    [N, y_dim] (the given or inferred attributes), "reconstruction" [N, S, S, 3] in [0, 1]
    (and each of `model.image_layers`, e.g. "foreground", "gate", "background", in [0, 1]),
    "energy" [N] (final, of the kept restart: the lowest finite one), "restart_energies"
    [N, restarts], "start_energy" [N] (the lowest of its restarts' energies before the first
    step; with 0 steps, the final ones), "diverged" [N] bool (`diverged_images`: no restart
    ended with a finite energy, or the kept one ended clearly above "start_energy"; their
    outputs mean nothing, and a warning counts them),
    "energy_trace" [steps] (mean energy per image before each step, over the kept and other
    restarts alike).
  Raises:
    InputError: images, attributes, masks, options or an attribute prior that do not fit the
      model, a key that is not a PRNG key, or a batch size below 1 (checked on the host
      before anything compiles).
    ConfigError: an energy the model does not have, or, with several processes, inputs
      that differ from process 0's.
  """
  _no_ignored_attributes(attributes, options, "infer_latents")  # None: the run's, which never
  # infer them (`config_lib.check_inference`).
  result = _infer_latents(trained, images, attributes, observed, key=key, options=options,
                          fg_masks=fg_masks, attribute_prior=attribute_prior, mesh=mesh,
                          fns=fns, pad_to=pad_to, first_index=first_index,
                          batch_size=batch_size, use="infer_latents")
  _warn_diverged(result["diverged"], result["energy"], _check_options(trained, options))
  return result


# How far a given attribute may lie outside its training range before a use warns, as a share
# of the range. Wider than `edit`'s 1 % for a value chosen by hand: given attributes are
# mostly a split's own, whose values fall a little past the training split's extremes (up to
# 0.9 % of the range in the 16 test images of a 64-image synthetic run, an expected gap of
# about range / (n + 1)); what it is for are values encoded otherwise (-1 / +1 for 0 / 1, a
# percentage for a fraction, another dataset's scale), which lie a whole range outside.
ATTRIBUTE_RANGE_MARGIN = 0.1


def _range_margins(lo: Any, hi: Any, fraction: float) -> np.ndarray:
  """How far outside the training range [`lo`, `hi`] a value may lie unwarned: `fraction` of
  the range; of a column constant in training (`lo` == `hi`, a small folder dataset's), which
  has no range to measure by, `fraction` of its value's size, at least 1 (the scale of a 0 / 1
  attribute): a constant 1 takes 0.9 to 1.1 with a tenth, a constant 40 (an age) 36 to 44,
  and a constant 0 -0.1 to 0.1. Was a margin of 0, and every other value was warned of,
  0.99 for a constant 1 too (fault hunt). Floats or arrays of them."""
  lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
  size = np.maximum(np.maximum(np.abs(lo), np.abs(hi)), 1.0)
  return fraction * np.where(hi > lo, hi - lo, size)


# The key in `TrainedModel.cache` of the range warnings said for the model (`_unsaid`).
_SAID = "attribute range warnings said"


def _unsaid(trained: TrainedModel, warnings: Mapping[int, tuple]) -> list[int]:
  """The columns of `warnings` ({column: what its warning says}) not said before for this
  model, now marked as said: kept in `trained.cache` (which a model rebuilt with
  `dataclasses.replace` shares; each warning's tuple holds the column's range, so that one
  with other ranges is said again), so that a loop of calls says each once (was: the same
  line once per call, 2 x (1 + occlusions) times in `evaluation.evaluate`, and once per
  attribute in infer.py's progression; fault hunt)."""
  said = trained.cache.setdefault(_SAID, set())
  new = [j for j, warning in warnings.items() if warning not in said]
  said.update(warnings[j] for j in new)
  return new


def _warn_attributes_outside_range(trained: TrainedModel, y: np.ndarray, use: str,
                                   skip: tuple[int, ...] = ()) -> None:
  """One warning for the attribute columns of `y` [N, y_dim] with a value more than
  `ATTRIBUTE_RANGE_MARGIN` of the training range outside it, where the run knows its ranges
  (`trained.attribute_ranges`): each column with its values and range, and the function the
  user called (`use`); each column's values once per model and use (`_unsaid`). Was: only
  `edit`'s new values and `progression`'s swept ones were checked; -1 / +1 for a 0 / 1
  attribute, or 50 for one in [0, 1], passed `sample`, `reconstruct`, `decode`, `complete` and
  `run_inference` without a word (fault hunt).

  Args:
    trained: the model; nothing is said for one without ranges or attributes (the VAE).
    y: the given attributes, checked (`inputs.check_attributes`).
    use: the function named in the warning.
    skip: columns not to check (`progression`'s swept one, which its values replace).
  """
  ranges = trained.attribute_ranges
  if (ranges is None or not trained.model.uses_attributes or not y.size
      or len(ranges) != y.shape[1]):
    return
  lo, hi = np.asarray(ranges, np.float64).T
  margin = _range_margins(lo, hi, ATTRIBUTE_RANGE_MARGIN)  # A constant column has one too.
  low, high = y.min(axis=0).astype(np.float64), y.max(axis=0).astype(np.float64)
  outside = _unsaid(trained, {  # Each once per model, use and values.
      int(j): ("given", use, int(j), low[j], high[j], lo[j], hi[j])
      for j in np.flatnonzero((low < lo - margin) | (high > hi + margin)) if j not in skip})
  if not outside:
    return
  names = trained.attribute_names

  def column(j: int) -> str:
    name = f" ({names[j]})" if names and len(names) > j else ""
    shown = f"{low[j]:g}" if low[j] == high[j] else f"{low[j]:g} to {high[j]:g}"
    return f"attribute {j}{name}: {shown}, trained on [{lo[j]:.3g}, {hi[j]:.3g}]"
  listed = "; ".join(column(j) for j in outside[:4])
  more = f"; and {len(outside) - 4} more" if len(outside) > 4 else ""
  logging.warning("the attributes given to %s lie outside their training range in %d of %d "
                  "columns (%s%s); the model has not seen such values, so its output may not "
                  "follow them: pass attributes on the training data's scale.", use,
                  len(outside), y.shape[1], listed, more)


# How far above where it started an image's final energy may end before its inference
# counts as diverged (`diverged_images`): the larger of this share of the start's size and
# these nats. Healthy runs end below their start: with the default settings (300 steps at
# 0.05, cosine), on 16 test images of 3,000-step synthetic VAE and disCVAE runs (starts from
# -175 to 5,551 nats; 1 or 3 restarts, encoder or prior starts, reconstruct, complete and
# infer_attributes) and 32 of 4- and 300-step tiny CVAEs, every image's final energy lay
# 0.03 nats or more below its start (2026-12-07); a learning rate of 30 on the 300-step one
# ended 8x above it (fault hunt, 50 steps).
DIVERGED_RISE_SHARE = 0.1
DIVERGED_RISE_NATS = 10.0


def diverged_images(energy: Any, start_energy: Any) -> np.ndarray:
  """The images whose posterior inference diverged: the one rule that the warning
  (`_warn_diverged`), the evaluation and infer.py go by (`infer_latents`' "diverged").

  An image diverged where its final energy (of the kept restart) is NaN or infinite, or
  ended clearly higher than where its inference started, the lowest start energy of its
  restarts (`infer_latents`' "start_energy"): above it by more than `DIVERGED_RISE_SHARE` of
  its size and at least `DIVERGED_RISE_NATS`. Was: NaN or infinity alone, and a learning rate
  that threw z far off while its energy stayed finite (1e4: energies of 7.5e9 where the
  recognition network's start had 1.6e3, an error worse than the start's) was taken as
  converged by every check (fault hunt). A start that is not finite flags nothing more.

  Args:
    energy: [N] final energies.
    start_energy: [N] start energies, as `infer_latents` gives them.
  Returns:
    [N] bool, True where the image's inference diverged.
  """
  energy = np.asarray(energy, np.float64)
  start = np.asarray(start_energy, np.float64)
  rise = np.maximum(DIVERGED_RISE_SHARE * np.abs(start), DIVERGED_RISE_NATS)
  with np.errstate(invalid="ignore"):  # A NaN or infinite start: NaN here, flagging nothing.
    higher = energy > start + rise
  return ~np.isfinite(energy) | higher


def diverged_of(outputs: Mapping[str, Any]) -> Optional[np.ndarray]:
  """The [N] images an inference's `outputs` mark as diverged: their "diverged"
  (`diverged_images`), which `infer_latents`, `run_inference` and every use of them give.
  What the evaluation and infer.py read. (Outputs without one were read by their "energy"
  alone, NaN or infinity marking an image; no outputs of the library lack it.)

  Args:
    outputs: a dict like `infer_latents`' outputs.
  Returns:
    [N] bool, or None for outputs without "diverged" (not the library's).
  """
  diverged = outputs.get("diverged")
  return None if diverged is None else np.asarray(diverged, bool)


def _warn_diverged(diverged: np.ndarray, energy: np.ndarray,
                   options: InferenceOptions) -> None:
  """One warning for the images whose inference diverged, if any: `infer_latents` gives it
  for its batch, `run_inference` once for all its images (was: one per batch).

  Args:
    diverged: [N], `diverged_images` (`infer_latents`' "diverged").
    energy: [N], each image's final energy (`infer_latents`' "energy"), to tell the ways.
    options: the options it ran with (the learning rate is named).
  """
  diverged = np.asarray(diverged, bool)
  if not diverged.any():
    return
  nonfinite = int((diverged & ~np.isfinite(energy)).sum())
  higher = int(diverged.sum()) - nonfinite
  ways = [f"{nonfinite} with no restart ending at a finite energy"] if nonfinite else []
  ways += [f"{higher} ending clearly higher in energy than where it started"] if higher else []
  logging.warning("posterior inference diverged for %d of %d images (%s); their outputs mean "
                  "nothing: lower the learning rate (now %g).", int(diverged.sum()),
                  len(diverged), ", ".join(ways), options.learning_rate)


def same_batch_on_every_process(x: np.ndarray, y: np.ndarray, observed: np.ndarray,
                                fg_masks: Optional[np.ndarray], key: Array, prior: Any,
                                use: str) -> None:
  """Stops every process of a multi-process job (`jax.distributed`) whose inference batch
  differs from process 0's. Each process passes the whole batch and keeps its devices' rows
  of it (`parallel.put_batch`), so different batches were spliced into one result that every
  process returned, with status 0 and no word (fault hunt). One SHA-256 per part and call.

  A no-op in a single process. Every process calls it once per call of a use, in one order.

  Args:
    x: the checked images.
    y: the checked attributes.
    observed: the checked observed-pixel mask.
    fg_masks: the checked foreground masks, or None.
    key: the PRNG key.
    prior: the attribute prior's (mean, covariance).
    use: the function called, for the message.
  Raises:
    ConfigError: the batch differs from process 0's (on process 0: another's does), naming
      the parts that differ.
  """
  if distributed.process_count() <= 1:
    return
  def digest(a: Any) -> str:
    if a is None:
      return "none"
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]
  key_data = np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(
      key.dtype, jax.dtypes.prng_key) else key)  # New-style keys, or old uint32 ones.
  parts = {"images": digest(x), "attributes": digest(y), "observed": digest(observed),
           "fg_masks": digest(fg_masks), "key": digest(key_data),
           "attribute_prior": digest(np.concatenate([np.ravel(p) for p in prior]))}
  distributed.same_on_every_process(
      f"the inputs of {use} (SHA-256 of each)", json.dumps(parts, sort_keys=True),
      f"pass the same images, attributes, masks, key and attribute prior to {use} on every "
      "process (each passes the whole batch and keeps its own devices' rows of it; a prior "
      "that each process fits may differ in its last bits between hosts: pass "
      "AttributePrior.fit(attributes).of_process_0(), called on every process), or call it "
      "in one process", describe=distributed.json_differences)


def _infer_latents(trained, images, attributes, observed, *, key, options, fg_masks,
                   attribute_prior, mesh, fns, pad_to, first_index, batch_size, use=None,
                   compared=False) -> dict[str, np.ndarray]:
  """`infer_latents` without its warning for diverged images (`_warn_diverged`): every
  argument as it takes them, all given; `use`, the function named in the warning of given
  attributes outside the training range (`_warn_attributes_outside_range`), None: no warning
  (`run_inference` gives it once for all its batches); `compared`, whether the caller has
  compared the whole batch across processes (`same_batch_on_every_process`; `run_inference`
  does so once for all its batches)."""
  model, variables = trained.model, trained.variables
  key = parallel.loose_key(check_key(key))  # Was JAX's error for a key on one device.
  options = _check_options(trained, options)
  if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):  # Was an AttributeError.
    raise InputError(f"mesh is a {type(mesh).__name__}, not a jax.sharding.Mesh; pass "
                     "parallel.make_mesh(devices), or leave mesh out for all devices.")
  mesh = mesh or parallel.make_mesh()
  # The batch is checked, padded and repeated on the host and placed once: done with jnp,
  # each of those steps compiled an eager program per shape, 15 of them, 0.3 s of the first
  # call (BENCHMARKS.md, "The first inference call without eager programs").
  x = check_images(images, trained.config.model.image_size, signed=True)
  n = x.shape[0]
  y, obs, fg_masks, prior = _check_batch(trained, x, attributes, observed, fg_masks, options,
                                        attribute_prior)
  if fns is not None and fns.get("model", model) != model:  # Was: Flax's ScopeParamNotFound.
    raise InputError("fns were built for another model than this run's (another kind, width "
                     "or size); build them with make_inference_fns(trained.model, options), "
                     "or leave fns out.")
  if fns is not None and fns.get("options") != _static(options):
    raise InputError("fns were built for other inference options than these (restarts, steps, "
                     "schedule, energy, init or infer_attributes differ); build them for these "
                     "with make_inference_fns(model, options), or leave fns out.")
  first_index = check_int(first_index, "first_index", 0, below=2**31)
  pad_to = check_int(pad_to, "pad_to", 0)  # Was: 2.5 or -1 taken, 13.5 a TypeError.
  batch = (inference_batch_size(trained) if batch_size is None
           else check_int(batch_size, "batch_size", 1))
  fns = fns or make_inference_fns(model, _static(options))
  if use is not None and attributes is not None and not options.infer_attributes:
    _warn_attributes_outside_range(trained, y, use)  # Given, and used as given.

  # Pad to a multiple of the device count (padding: nothing observed, dropped at the end),
  # then repeat each image for the restarts one call runs, image-major so that an image's
  # restarts share a device.
  r = options.restarts
  n_pad = _pad_to(max(n, pad_to), mesh.devices.size)
  share = _restarts_per_call(r, n_pad, batch)
  pad = lambda a: a if n_pad == n else np.concatenate(
      [a, np.zeros((n_pad - n,) + a.shape[1:], a.dtype)])
  rep = lambda a: np.repeat(pad(a), share, axis=0) if share > 1 else pad(a)
  if not compared:  # Before the batch is placed: each process keeps its own rows of it.
    same_batch_on_every_process(x, y, obs, fg_masks, key, prior, use or "infer_latents")
  x_r, y_r, o_r = rep(x), rep(y), rep(obs)
  m_r = None if fg_masks is None else rep(fg_masks)
  x_r, y_r, o_r, m_r = parallel.put_batch((x_r, y_r, o_r, m_r), mesh)
  variables = parallel.put_replicated(variables, mesh)
  prior = parallel.put_replicated(prior, mesh)

  hyper = parallel.put_replicated(_hyper(options), mesh)
  start = parallel.put_replicated(np.int32(first_index), mesh)
  k = fns["steps_per_call"]
  result, energies, trace_sum, start_energy = None, [], None, None
  for first_restart in range(0, r, share):
    # The restarts of this share; -1 pads the last one to the same rows (one program).
    ids = np.arange(first_restart, first_restart + share, dtype=np.int32)
    ids[ids >= r] = -1
    restart_ids = parallel.put_replicated(ids, mesh)
    # The three programs compile in threads from here on; each is waited for only before its
    # first use, so that the ones before it can run meanwhile. Later shares find them built.
    ready = (fns["compile_ahead"](variables, x_r, y_r, o_r, m_r, key, prior, hyper, start,
                                  restart_ids)
             if fns.get("compile_ahead") is not None and not first_restart else _Compiling())
    ready.wait("init")
    carry = fns["init"](variables, x_r, y_r, o_r, m_r, key, prior, start, restart_ids)
    traces = []
    for i in range(options.steps // k if k else 0):
      if i == 0:
        ready.wait("run")
      carry, trace = fns["run"](variables, x_r, y_r, o_r, _one_sharding(carry, x_r.sharding),
                                prior, hyper)
      traces.append(trace)
    ready.wait("finish")
    part = parallel.fetch(fns["finish"](variables, x_r, y_r, o_r,
                                        _one_sharding(carry, x_r.sharding), prior, hyper,
                                        restart_ids))
    part = {name: np.asarray(v)[:n] for name, v in part.items()}
    energies.append(part.pop("restart_energies")[:, ids >= 0])
    result = part if result is None else _lower_energy(result, part)
    if traces:  # Summed over the images' real restarts; the mean is taken at the end.
      trace = np.concatenate([np.asarray(t) for t in parallel.fetch(traces)])  # [steps, M]
      real = np.repeat(np.arange(n_pad) < n, share) & np.tile(ids >= 0, n_pad)
      part_sum = trace[:, real].sum(axis=1, dtype=np.float64)
      trace_sum = part_sum if trace_sum is None else trace_sum + part_sum
      # The energy before the first step: each restart's start, the lowest of an image's kept.
      starts = trace[0].reshape(n_pad, share)[:n][:, ids >= 0]
    else:  # No steps: the outputs are the starts.
      starts = energies[-1]
    lowest = np.where(np.isfinite(starts), starts, np.inf).min(axis=1)
    start_energy = lowest if start_energy is None else np.minimum(start_energy, lowest)
  result["restart_energies"] = (energies[0] if len(energies) == 1
                                else np.concatenate(energies, axis=1))
  result["energy_trace"] = (np.zeros((0,), np.float32) if trace_sum is None
                            else (trace_sum / (n * r)).astype(np.float32))
  result["start_energy"] = start_energy.astype(np.float32)
  result["diverged"] = diverged_images(result["energy"], result["start_energy"])
  return result
