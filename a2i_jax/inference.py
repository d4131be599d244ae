"""Using a trained model: restore it, sample, and infer latents by optimisation.

Posterior inference by optimisation (spec 5) finds the latent z of a given image x (with some
pixels possibly hidden) under attributes y by minimising an energy with Adam, the generator
frozen (BatchNorm on running statistics, dropout off):

  E(z) = D(x_O, mu(y, z)_O) + lambda/2 ||z||^2      [+ w/2 (y - m)^T P (y - m) when y is free]

D is the model's own negative log-likelihood on the observed pixels O where it has one (the
(C)VAE's learned per-pixel variance, "gaussian") and the training reconstruction loss of
disCVAE otherwise ("smooth_l1", the reference's SmoothL1), or a plain squared error ("l2").
For disCVAE z = (zF, zB). With lambda = 1 and the model's likelihood, E is -log p(x_O, z | y)
up to a constant: the minimiser is the MAP latent.

Several restarts per image run as an extra batch axis and the lowest final energy wins; the
batch (images x restarts) is split over all devices of the mesh, one code path for 1..N
devices. The Adam loop is `lax.scan` over the steps; on XLA:CPU, where a rolled loop around
convolutions is about ten times slower (BENCHMARKS.md), the steps run as a host loop over
jitted, fully unrolled chunks instead. Both compute the same thing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from a2i_jax import checkpoints, config_lib, models, parallel, train_lib
from a2i_jax.errors import ConfigError, InputError
from a2i_jax.numerics import bounded_exp

Array = jax.Array

ENERGIES = ("auto", "gaussian", "smooth_l1", "l2")
INITS = ("encoder", "zeros", "prior")
SCHEDULES = ("constant", "cosine")
_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------------------------
# Restoring a model.

@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A model restored from a workdir: its config, module, variables and step.

  `sample_fn` is the jitted generator, built once here so repeated calls do not recompile;
  `cache` keeps the jitted inference functions built for it, keyed by their options.
  """
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict
  step: int
  sample_fn: Callable
  cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


def load_trained(workdir: str, step: Optional[int] = None) -> TrainedModel:
  """Restores the config and the newest (or `step`'s) checkpoint of a training run.

  Args:
    workdir: the `--workdir` of train.py.
    step: which checkpoint; None for the newest.
  Returns:
    A `TrainedModel` with the variables replicated over all devices. Config keys added to
    the library after the run was trained (e.g. `inference`) take their default values.
  Raises:
    ConfigError / CheckpointError: the workdir has no config or no (readable) checkpoint.
  """
  config = config_lib.with_defaults(checkpoints.load_config(workdir))
  model = models.create_model(config.model)
  tx = train_lib.make_optimizer(config)
  abstract = train_lib.abstract_train_state(model, config, tx)
  mesh = parallel.make_mesh()
  ckpt = checkpoints.Checkpointer(workdir, config.max_checkpoints_to_keep)
  try:
    state = ckpt.restore(checkpoints.with_sharding(abstract, parallel.replicated(mesh)), step)
  finally:
    ckpt.close()
  sample_fn = jax.jit(train_lib.make_sample_fn(model, config))
  return TrainedModel(config, model, state.variables, int(state.step), sample_fn)


# ----------------------------------------------------------------------------------------------
# Input checks.

def check_attributes(attributes: Any, y_dim: int) -> jax.Array:
  """Validates an attribute batch [N, y_dim] (or one vector) and returns it as float32.

  Args:
    attributes: [N, y_dim] or [y_dim], anything numpy converts.
    y_dim: the model's attribute count.
  Returns:
    float32 [N, y_dim].
  Raises:
    InputError: wrong shape or non-finite values.
  """
  y = np.asarray(attributes, dtype=np.float32)
  if y.ndim == 1:
    y = y[None]
  if y.ndim != 2 or y.shape[1] != y_dim:
    raise InputError(f"attributes have shape {y.shape}; this model expects [N, {y_dim}] "
                     f"(one value per attribute, y_dim={y_dim}).")
  if not np.all(np.isfinite(y)):
    raise InputError("attributes contain NaN or infinity.")
  return jnp.asarray(y)


def check_images(images: Any, image_size: int) -> jax.Array:
  """Validates an image batch and returns it as float32 in [-1, 1], NHWC.

  Accepts uint8 in [0, 255] or floats in [0, 1]; anything else is an `InputError`.

  Args:
    images: [N, S, S, 3] (or one [S, S, 3] image).
    image_size: the model's S.
  Returns:
    float32 [N, S, S, 3] in [-1, 1].
  """
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[None]
  if x.ndim != 4 or x.shape[1:] != (image_size, image_size, 3):
    raise InputError(f"images have shape {x.shape}; this model expects [N, {image_size}, "
                     f"{image_size}, 3] RGB (resize or crop to {image_size}x{image_size}).")
  if x.dtype == np.uint8:
    return jnp.asarray(x, jnp.float32) / 127.5 - 1.0
  if not np.issubdtype(x.dtype, np.floating):
    raise InputError(f"images have dtype {x.dtype}; pass uint8 in [0, 255] or floats in "
                     "[0, 1].")
  lo, hi = float(np.min(x)), float(np.max(x))
  if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
    raise InputError(f"float images must lie in [0, 1]; these range over [{lo:g}, {hi:g}] "
                     "(divide uint8 images by 255, or pass them as uint8).")
  return jnp.asarray(x, jnp.float32) * 2.0 - 1.0


def check_mask(mask: Any, num: int, image_size: int, what: str) -> jax.Array:
  """Validates a per-pixel mask [N, S, S] or [N, S, S, 1] (or one [S, S]) in [0, 1].

  uint8 masks are read as 255 = 1.

  Args:
    mask: the mask(s).
    num: N, the number of images it goes with.
    image_size: S.
    what: the argument's name, for the error message.
  Returns:
    float32 [N, S, S, 1].
  """
  m = np.asarray(mask)
  if m.dtype == np.uint8:
    m = m.astype(np.float32) / 255.0
  m = m.astype(np.float32)
  if m.ndim == 2:
    m = m[None]
  if m.ndim == 3:
    m = m[..., None]
  if m.shape != (num, image_size, image_size, 1):
    raise InputError(f"{what} has shape {np.asarray(mask).shape}; expected [{num}, "
                     f"{image_size}, {image_size}] (or with a trailing 1), one per image.")
  if not np.all((m >= 0.0) & (m <= 1.0)):
    raise InputError(f"{what} values must lie in [0, 1] (or uint8 0/255).")
  return jnp.asarray(m)


# ----------------------------------------------------------------------------------------------
# Options and the attribute prior.

@dataclasses.dataclass(frozen=True)
class InferenceOptions:
  """Settings of posterior inference; defaults come from `configs/default.py:inference`.

  Attributes:
    steps: Adam steps on the latents.
    learning_rate: Adam's peak learning rate.
    schedule: "constant" or "cosine" (decay to 0.1 x the peak over `steps`).
    prior_weight: lambda, the weight of ||z||^2 / 2.
    energy: "auto" (gaussian for VAE / CVAE, smooth_l1 for disCVAE), "gaussian" (the
      CVAE's learned per-pixel variance), "smooth_l1" or "l2".
    init: "encoder" (recognition model on the image, hidden pixels filled with 0, i.e.
      mid-grey), "zeros" or "prior" (z ~ N(0, I)).
    restarts: starts per image; restart 0 uses `init`, the others add posterior (encoder) or
      prior noise. The lowest final energy is kept.
    infer_attributes: optimise y together with z under a Gaussian prior fitted to the
      training attributes (see `AttributePrior`); the given attributes are then ignored.
    attribute_prior_weight: w, the weight of the attribute prior's quadratic form.
    steps_per_call: Adam steps per jitted call; 0 chooses: all of them in one `lax.scan`
      on GPU / TPU, chunks of up to 10 unrolled steps on CPU.
  """
  steps: int = 300
  learning_rate: float = 0.05
  schedule: str = "cosine"
  prior_weight: float = 1.0
  energy: str = "auto"
  init: str = "encoder"
  restarts: int = 1
  infer_attributes: bool = False
  attribute_prior_weight: float = 1.0
  steps_per_call: int = 0

  def __post_init__(self):
    def bad(key, value, allowed):
      raise ConfigError(f"inference.{key}={value!r} is not valid; {allowed}.")
    if self.steps < 0:
      bad("steps", self.steps, "use 0 or more steps")
    if not self.learning_rate > 0:
      bad("learning_rate", self.learning_rate, "use a positive learning rate")
    if self.schedule not in SCHEDULES:
      bad("schedule", self.schedule, f"choose one of {SCHEDULES}")
    if self.prior_weight < 0 or self.attribute_prior_weight < 0:
      bad("prior_weight", self.prior_weight, "weights must be >= 0")
    if self.energy not in ENERGIES:
      bad("energy", self.energy, f"choose one of {ENERGIES}")
    if self.init not in INITS:
      bad("init", self.init, f"choose one of {INITS}")
    if self.restarts < 1:
      bad("restarts", self.restarts, "use at least 1 restart")
    if self.steps_per_call < 0:
      bad("steps_per_call", self.steps_per_call, "use 0 (automatic) or a positive count")

  @classmethod
  def from_config(cls, config: Any, **overrides) -> "InferenceOptions":
    """Options from `config.inference` (a ConfigDict or mapping), with keyword overrides.

    Args:
      config: `config.inference`.
      **overrides: any field of this class.
    Returns:
      The options.
    Raises:
      ConfigError: an unknown key or an invalid value.
    """
    values = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    values.pop("batch_size", None)  # How infer.py batches images, not an option here.
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
    """
    y = np.asarray(attributes, np.float64)
    if y.ndim != 2 or y.shape[0] < 2:
      raise InputError(f"fitting an attribute prior needs [N >= 2, A] attributes; got {y.shape}.")
    mean = y.mean(axis=0)
    cov = np.cov(y, rowvar=False).reshape(y.shape[1], y.shape[1])
    cov = (1.0 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov))
    cov += 1e-4 * np.eye(y.shape[1])
    return cls(mean.astype(np.float32), np.linalg.inv(cov).astype(np.float32))


# ----------------------------------------------------------------------------------------------
# The inference functions.

def _latent_dims(model_config: Any) -> dict[str, int]:
  if model_config.name == "discvae":
    return {"z_fg": model_config.zf_dim, "z_bg": model_config.zb_dim}
  return {"z": model_config.z_dim}


def _resolve_energy(options: InferenceOptions, model_name: str) -> str:
  energy = options.energy
  if energy == "auto":
    energy = "smooth_l1" if model_name == "discvae" else "gaussian"
  if energy == "gaussian" and model_name == "discvae":
    raise ConfigError("inference.energy='gaussian' needs the (C)VAE's variance head; disCVAE has "
                      "none. Use 'smooth_l1' (its training loss), 'l2' or 'auto'.")
  return energy


def _steps_per_call(options: InferenceOptions) -> int:
  """How many Adam steps one jitted call runs (a divisor of `steps`)."""
  if options.steps == 0:
    return 0
  if options.steps_per_call:
    k = min(options.steps_per_call, options.steps)
  elif jax.default_backend() == "cpu":
    k = 10
  else:
    return options.steps
  while options.steps % k:
    k -= 1
  return k


def _learning_rate(options: InferenceOptions, peak: Array, t: Array) -> Array:
  """The step-t learning rate: constant, or cosine decay from `peak` to 0.1 peak."""
  if options.schedule == "constant" or options.steps == 0:
    return peak
  frac = jnp.minimum(t.astype(jnp.float32) / options.steps, 1.0)
  return peak * (0.1 + 0.9 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))


def _hyper(options: InferenceOptions) -> dict[str, Array]:
  """The options that enter as traced values, so changing them does not recompile."""
  return {"learning_rate": jnp.float32(options.learning_rate),
          "prior_weight": jnp.float32(options.prior_weight),
          "attribute_prior_weight": jnp.float32(options.attribute_prior_weight)}


def _static(options: InferenceOptions) -> InferenceOptions:
  """`options` without the traced values: the key of the compiled functions."""
  return dataclasses.replace(options, learning_rate=1.0, prior_weight=1.0,
                             attribute_prior_weight=1.0)


def make_inference_fns(model: nn.Module, model_config: Any,
                       options: InferenceOptions) -> dict[str, Callable]:
  """Builds the jitted pieces of posterior inference for one model and set of options.

  Three functions, called in turn by `infer_latents`:
    init(variables, x, y, observed, fg_mask, key, prior) -> carry
    run(variables, x, y, observed, carry, prior, hyper) -> (carry, energy trace [k, M])
    finish(variables, x, y, observed, carry, prior, hyper) -> outputs (restarts reduced)
  where M = N x restarts, x [M,S,S,3] in [-1,1], y [M,A], observed and fg_mask [M,S,S,1],
  prior = (mean [A], precision [A,A]) and hyper = the learning rate and weights as arrays
  (`_hyper(options)`), so settings that differ only in those share the compiled code.

  Args:
    model: a `CVAE` or `DisCVAE`.
    model_config: `config.model`.
    options: the inference options.
  Returns:
    dict with "init", "run", "finish" (jitted) and "steps_per_call".
  """
  name = model_config.name
  energy_kind = _resolve_energy(options, name)
  dims = _latent_dims(model_config)
  tx = optax.scale_by_adam()
  restarts = options.restarts
  infer_y = options.infer_attributes
  k = _steps_per_call(options)
  unroll = jax.default_backend() == "cpu"

  def decode(variables, latents, y):
    if name == "discvae":
      return model.apply(variables, latents["z_fg"], latents["z_bg"], y, method="decode")
    return model.apply(variables, latents["z"], y, method="decode")

  def energy_terms(variables, latents, x, y, observed, prior, hyper):
    y = latents["y"] if infer_y else y
    out = decode(variables, latents, y)
    mean = out["mean"]
    if energy_kind == "gaussian":
      lv = out["logvar"]
      per_pixel = 0.5 * (lv + _LOG_2PI) + 0.5 * jnp.square(x - mean) * bounded_exp(-lv)
    elif energy_kind == "smooth_l1":
      d = jnp.abs(mean - x)
      per_pixel = jnp.where(d < 1.0, 0.5 * jnp.square(d), d - 0.5)
    else:
      per_pixel = 0.5 * jnp.square(mean - x)
    data = (per_pixel * observed).reshape(x.shape[0], -1).sum(-1)
    z_sq = sum(jnp.square(latents[n]).sum(-1) for n in dims)
    energy = data + 0.5 * hyper["prior_weight"] * z_sq
    if infer_y:
      d_y = latents["y"] - prior[0]
      energy += 0.5 * hyper["attribute_prior_weight"] * jnp.einsum("ma,ab,mb->m", d_y, prior[1],
                                                                 d_y)
    return energy, out

  def total_energy(latents, variables, x, y, observed, prior, hyper):
    e, _ = energy_terms(variables, latents, x, y, observed, prior, hyper)
    return e.sum(), e

  def init(variables, x, y, observed, fg_mask, key, prior):
    m = x.shape[0]
    y_used = jnp.broadcast_to(prior[0], y.shape) if infer_y else y
    keys = dict(zip(dims, jax.random.split(key, len(dims))))
    noise = {n: jax.random.normal(keys[n], (m, d)) for n, d in dims.items()}
    first = (jnp.arange(m) % restarts == 0)[:, None]  # Restart 0 of each image.
    x_filled = x * observed  # Hidden pixels -> 0, mid-grey in [-1, 1].
    if options.init == "encoder":
      if name == "discvae":
        if fg_mask is None:
          # No mask given: encode once with the whole image as foreground, and use the
          # decoded gate (1 = background) to estimate the foreground for a second pass.
          q = model.apply(variables, x_filled, y_used, jnp.ones_like(observed), method="encode")
          out = model.apply(variables, q["mu_fg"], q["mu_bg"], y_used, method="decode")
          fg_mask = 1.0 - out["gate"].mean(-1, keepdims=True)
        q = model.apply(variables, x_filled, y_used, fg_mask, method="encode")
        mu = {"z_fg": q["mu_fg"], "z_bg": q["mu_bg"]}
        sd = {"z_fg": bounded_exp(0.5 * q["logvar_fg"]),
              "z_bg": bounded_exp(0.5 * q["logvar_bg"])}
      else:
        q = model.apply(variables, x_filled, y_used, method="encode")
        mu, sd = {"z": q["mu"]}, {"z": bounded_exp(0.5 * q["logvar"])}
      latents = {n: jnp.where(first, mu[n], mu[n] + sd[n] * noise[n]) for n in dims}
    elif options.init == "zeros":
      latents = {n: jnp.where(first, 0.0, noise[n]) for n in dims}
    else:
      latents = dict(noise)
    if infer_y:
      latents["y"] = y_used
    return {"latents": latents, "opt_state": tx.init(latents), "t": jnp.zeros((), jnp.int32)}

  def one_step(variables, x, y, observed, prior, hyper, carry):
    grads, e = jax.grad(total_energy, has_aux=True)(carry["latents"], variables, x, y,
                                                   observed, prior, hyper)
    updates, opt_state = tx.update(grads, carry["opt_state"], carry["latents"])
    lr = _learning_rate(options, hyper["learning_rate"], carry["t"])
    latents = jax.tree_util.tree_map(lambda p, u: p - lr * u, carry["latents"], updates)
    return {"latents": latents, "opt_state": opt_state, "t": carry["t"] + 1}, e

  def run(variables, x, y, observed, carry, prior, hyper):
    body = lambda c, _: one_step(variables, x, y, observed, prior, hyper, c)
    return jax.lax.scan(body, carry, None, length=k, unroll=k if unroll else 1)

  def finish(variables, x, y, observed, carry, prior, hyper):
    latents = carry["latents"]
    energy, out = energy_terms(variables, latents, x, y, observed, prior, hyper)
    m = x.shape[0]
    n = m // restarts
    best = jnp.argmin(energy.reshape(n, restarts), axis=1)
    pick = lambda a: a.reshape((n, restarts) + a.shape[1:])[jnp.arange(n), best]
    result = {name_: pick(v) for name_, v in latents.items()}
    if not infer_y:
      result["y"] = pick(y)
    result["energy"] = pick(energy)
    result["restart_energies"] = energy.reshape(n, restarts)
    result["reconstruction"] = pick(out["mean"])
    if name == "discvae":
      for part in ("foreground", "gate", "background"):
        result[part] = pick(out[part])
    return result

  return {"init": jax.jit(init), "run": jax.jit(run, donate_argnums=(4,)),
          "finish": jax.jit(finish), "steps_per_call": k}


def _pad_to(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def infer_latents(model: nn.Module, variables: dict, model_config: Any, images: Array,
                  attributes: Optional[Array], observed: Optional[Array] = None, *,
                  key: Array, options: Optional[InferenceOptions] = None,
                  fg_masks: Optional[Array] = None,
                  attribute_prior: Optional[AttributePrior] = None,
                  mesh: Optional[jax.sharding.Mesh] = None,
                  fns: Optional[Mapping[str, Callable]] = None,
                  pad_to: int = 0) -> dict[str, np.ndarray]:
  """Posterior inference by optimisation for a batch of images.

  Args:
    model, variables, model_config: the trained generator (e.g. from `load_trained`).
    images: [N, S, S, 3] float32 in [-1, 1] (see `check_images`).
    attributes: [N, y_dim]; may be None for the VAE or with `options.infer_attributes`.
    observed: [N, S, S, 1] with 1 = observed pixel, 0 = hidden; None = all observed.
    key: PRNG key (restart noise, prior init).
    options: `InferenceOptions`; default: the library defaults.
    fg_masks: disCVAE only, foreground masks [N, S, S, 1] for the encoder init; without them
      the model estimates the foreground from its own gate.
    attribute_prior: required with `options.infer_attributes`.
    mesh: devices to split the batch over; default all devices.
    fns: prebuilt `make_inference_fns` output (reused across calls to avoid re-tracing).
    pad_to: pad the batch to at least this many images, so that a ragged last batch reuses
      the compiled program of the full ones.
  Returns:
    dict of numpy arrays: "z" [N, z_dim] (or "z_fg", "z_bg"), "y" [N, y_dim] (the given or
    inferred attributes), "reconstruction" [N, S, S, 3] in [-1, 1] (disCVAE also
    "foreground", "gate", "background"), "energy" [N] (final, of the kept restart),
    "restart_energies" [N, restarts], "energy_trace" [steps] (mean energy per image before
    each step, over the kept and other restarts alike).
  """
  options = options or InferenceOptions()
  mesh = mesh or parallel.make_mesh()
  s = model_config.image_size
  x = jnp.asarray(images, jnp.float32)
  if x.ndim != 4 or x.shape[1:] != (s, s, 3):
    raise InputError(f"images have shape {x.shape}; expected [N, {s}, {s}, 3] in [-1, 1].")
  n = x.shape[0]
  if attributes is None:
    if model_config.name != "vae" and not options.infer_attributes:
      raise InputError("attributes are needed for this conditional model; pass them, or set "
                       "infer_attributes=True (with an attribute_prior) to infer them.")
    attributes = np.zeros((n, model_config.y_dim), np.float32)
  y = check_attributes(attributes, model_config.y_dim)
  if y.shape[0] != n:
    raise InputError(f"{y.shape[0]} attribute vectors for {n} images; pass one per image.")
  obs = (jnp.ones((n, s, s, 1), jnp.float32) if observed is None
         else check_mask(observed, n, s, "observed"))
  if options.infer_attributes and attribute_prior is None:
    raise InputError("infer_attributes=True needs an attribute_prior "
                     "(AttributePrior.fit(training attributes)).")
  prior = attribute_prior or AttributePrior(np.zeros(model_config.y_dim, np.float32),
                                            np.eye(model_config.y_dim, dtype=np.float32))
  prior = (jnp.asarray(prior.mean), jnp.asarray(prior.precision))
  if fg_masks is not None:
    fg_masks = check_mask(fg_masks, n, s, "fg_masks")
  fns = fns or make_inference_fns(model, model_config, _static(options))

  # Pad to a multiple of the device count (padding: nothing observed, dropped at the end),
  # then repeat each image for its restarts, image-major so restarts share a device.
  r = options.restarts
  n_pad = _pad_to(max(n, pad_to), mesh.devices.size)
  pad = lambda a: jnp.concatenate([a, jnp.zeros((n_pad - n,) + a.shape[1:], a.dtype)])
  rep = lambda a: jnp.repeat(pad(a), r, axis=0)
  x_r, y_r, o_r = rep(x), rep(y), rep(obs)
  m_r = None if fg_masks is None else rep(fg_masks)
  x_r, y_r, o_r, m_r = parallel.put_batch((x_r, y_r, o_r, m_r), mesh)
  variables = parallel.put_replicated(variables, mesh)
  prior = parallel.put_replicated(prior, mesh)

  hyper = parallel.put_replicated(_hyper(options), mesh)
  carry = fns["init"](variables, x_r, y_r, o_r, m_r, key, prior)
  traces = []
  k = fns["steps_per_call"]
  for _ in range(options.steps // k if k else 0):
    carry, trace = fns["run"](variables, x_r, y_r, o_r, carry, prior, hyper)
    traces.append(trace)
  result = jax.device_get(fns["finish"](variables, x_r, y_r, o_r, carry, prior, hyper))
  result = {name: np.asarray(v)[:n] for name, v in result.items()}
  if traces:
    trace = np.concatenate([np.asarray(t) for t in jax.device_get(traces)])  # [steps, M]
    real = np.repeat(np.arange(n_pad) < n, r)
    result["energy_trace"] = trace[:, real].mean(axis=1)
  else:
    result["energy_trace"] = np.zeros((0,), np.float32)
  return result


# ----------------------------------------------------------------------------------------------
# Uses, on a `TrainedModel`: the inputs are checked, the jitted functions are cached per
# options, and images go in and come out as the user holds them ([0, 1] floats or uint8 in,
# [0, 1] floats out).

def options_for(trained: TrainedModel, **overrides) -> InferenceOptions:
  """The run's `config.inference` options, with keyword overrides.

  Args:
    trained: from `load_trained`.
    **overrides: any `InferenceOptions` field, e.g. steps=100, restarts=4.
  Returns:
    An `InferenceOptions`.
  """
  return InferenceOptions.from_config(trained.config.inference, **overrides)


def _cached(trained: TrainedModel, key: Any, build: Callable[[], Any]) -> Any:
  if key not in trained.cache:
    trained.cache[key] = build()
  return trained.cache[key]


def run_inference(trained: TrainedModel, images: Any, attributes: Any = None,
                  observed: Any = None, *, key: Array,
                  options: Optional[InferenceOptions] = None, fg_masks: Any = None,
                  attribute_prior: Optional[AttributePrior] = None,
                  batch_size: Optional[int] = None) -> dict[str, np.ndarray]:
  """`infer_latents` over any number of images, in batches of `config.inference.batch_size`.

  Args:
    trained: from `load_trained`.
    images: [N, S, S, 3] uint8 or floats in [0, 1].
    attributes: [N, y_dim] (None for the VAE or when inferring attributes).
    observed: [N, S, S(, 1)] observed-pixel mask (1 = observed); None = all observed.
    key: PRNG key.
    options: default `options_for(trained)`.
    fg_masks: disCVAE foreground masks for the encoder init (optional).
    attribute_prior: needed with `options.infer_attributes`.
    batch_size: images per batch; default `config.inference.batch_size`.
  Returns:
    `infer_latents`' outputs for all N images ("energy_trace" averaged over batches), with
    image outputs mapped to [0, 1].
  """
  mc = trained.config.model
  options = options or options_for(trained)
  x = check_images(images, mc.image_size)
  n = x.shape[0]
  batch = int(batch_size or trained.config.inference.batch_size)
  fns = _cached(trained, ("infer", _static(options)),
                lambda: make_inference_fns(trained.model, mc, _static(options)))
  take = lambda a, sl: None if a is None else np.asarray(a)[sl]
  parts = []
  for i, start in enumerate(range(0, n, batch)):
    sl = slice(start, min(start + batch, n))
    parts.append(infer_latents(
        trained.model, trained.variables, mc, x[sl], take(attributes, sl),
        take(observed, sl), key=jax.random.fold_in(key, i), options=options,
        fg_masks=take(fg_masks, sl), attribute_prior=attribute_prior, fns=fns,
        pad_to=batch if n > batch else 0))
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "energy_trace"}
  out["energy_trace"] = np.mean([p["energy_trace"] for p in parts], axis=0)
  for k in ("reconstruction", "foreground", "background"):
    if k in out:
      out[k] = (out[k] + 1.0) / 2.0
  return out


def reconstruct(trained: TrainedModel, images: Any, attributes: Any = None, *, key: Array,
                options: Optional[InferenceOptions] = None, **kwargs) -> dict[str, np.ndarray]:
  """Infers z from fully observed images and decodes it.

  Args:
    trained, images, attributes, key, options, kwargs: as for `run_inference`.
  Returns:
    `run_inference`'s dict; "reconstruction" [N, S, S, 3] in [0, 1].
  """
  return run_inference(trained, images, attributes, None, key=key, options=options, **kwargs)


def complete(trained: TrainedModel, images: Any, attributes: Any, observed: Any, *,
             key: Array, options: Optional[InferenceOptions] = None,
             **kwargs) -> dict[str, np.ndarray]:
  """Fills the hidden pixels of images: z is inferred from the observed pixels only.

  Args:
    trained, images, attributes, key, options, kwargs: as for `run_inference`.
    observed: [N, S, S(, 1)] with 1 = observed (kept as is), 0 = hidden (filled).
  Returns:
    `run_inference`'s dict plus "completion" [N, S, S, 3] in [0, 1]: the observed pixels of
    the input and the generator's pixels in the hole.
  """
  n = np.asarray(images).shape[0] if np.asarray(images).ndim == 4 else 1
  obs = np.asarray(check_mask(observed, n, trained.config.model.image_size, "observed"))
  out = run_inference(trained, images, attributes, obs, key=key, options=options, **kwargs)
  check_images(images, trained.config.model.image_size)
  x01 = np.asarray(images)
  x01 = (x01.astype(np.float32) / 255.0 if x01.dtype == np.uint8 else x01.astype(np.float32))
  x01 = x01.reshape(out["reconstruction"].shape)
  out["completion"] = obs * x01 + (1.0 - obs) * out["reconstruction"]
  return out


def infer_attributes(trained: TrainedModel, images: Any, attribute_prior: AttributePrior,
                     observed: Any = None, *, key: Array,
                     options: Optional[InferenceOptions] = None,
                     **kwargs) -> dict[str, np.ndarray]:
  """Estimates the attributes of images: y is optimised jointly with z (y unknown).

  Args:
    trained, images, observed, key, kwargs: as for `run_inference`.
    attribute_prior: the Gaussian prior on y (`AttributePrior.fit(training attributes)`).
    options: default `options_for(trained)`; `infer_attributes` is switched on.
  Returns:
    `run_inference`'s dict; "y" [N, y_dim] holds the inferred attributes.
  """
  if trained.config.model.name == "vae":
    raise InputError("the VAE does not use attributes, so they cannot be inferred from it; "
                     "use a CVAE or disCVAE workdir.")
  options = dataclasses.replace(options or options_for(trained), infer_attributes=True)
  return run_inference(trained, images, None, observed, key=key, options=options,
                       attribute_prior=attribute_prior, **kwargs)


def decode(trained: TrainedModel, latents: Mapping[str, Any], attributes: Any
           ) -> dict[str, np.ndarray]:
  """Decodes given latents under given attributes (no sampling).

  Args:
    trained: from `load_trained`.
    latents: {"z": [N, z_dim]} or {"z_fg": [N, zf_dim], "z_bg": [N, zb_dim]}.
    attributes: [N, y_dim].
  Returns:
    "image" [N, S, S, 3] in [0, 1]; disCVAE also "foreground", "gate", "background".
  """
  mc = trained.config.model
  y = check_attributes(attributes, mc.y_dim)
  for name, dim in _latent_dims(mc).items():
    if name not in latents:
      raise InputError(f"latents lack {name!r}; this {mc.name} needs {sorted(_latent_dims(mc))}.")
    if np.shape(latents[name]) != (y.shape[0], dim):
      raise InputError(f"latents[{name!r}] has shape {np.shape(latents[name])}; expected "
                       f"[{y.shape[0]}, {dim}].")
  model = trained.model

  def build():
    def fn(variables, lat, y):
      if mc.name == "discvae":
        out = model.apply(variables, lat["z_fg"], lat["z_bg"], y, method="decode")
        return {"image": (out["mean"] + 1) / 2, "foreground": (out["foreground"] + 1) / 2,
                "gate": out["gate"], "background": (out["background"] + 1) / 2}
      return {"image": (model.apply(variables, lat["z"], y, method="decode")["mean"] + 1) / 2}
    return jax.jit(fn)

  fn = _cached(trained, "decode", build)
  lat = {n: jnp.asarray(latents[n], jnp.float32) for n in _latent_dims(mc)}
  return jax.device_get(fn(trained.variables, lat, y))


def prior_latents(trained: TrainedModel, num: int, key: Array) -> dict[str, np.ndarray]:
  """`num` draws of the latents from the prior N(0, I).

  Args:
    trained: from `load_trained`.
    num: N.
    key: PRNG key.
  Returns:
    {"z": [N, z_dim]}, or for disCVAE {"z_fg": [N, zf_dim], "z_bg": [N, zb_dim]}.
  """
  dims = _latent_dims(trained.config.model)
  keys = jax.random.split(key, len(dims))
  return {n: np.asarray(jax.random.normal(k, (num, d))) for (n, d), k in zip(dims.items(), keys)}


def progression(trained: TrainedModel, attributes: Any, index: int, values: Sequence[float],
                *, key: Array, num_latents: int = 4) -> np.ndarray:
  """Attribute progression (spec 7.3): fixed z, attribute `index` swept over `values`.

  Args:
    trained: from `load_trained`.
    attributes: the base attribute vector [y_dim].
    index: which attribute to sweep.
    values: its K values, e.g. `np.linspace(train_min, train_max, K)`.
    key: PRNG key of the `num_latents` latent draws (one per row).
  Returns:
    [num_latents, K, S, S, 3] images in [0, 1].
  """
  mc = trained.config.model
  y = np.asarray(check_attributes(attributes, mc.y_dim))
  if y.shape[0] != 1:
    raise InputError(f"progression takes one base attribute vector; got {y.shape[0]}.")
  if not 0 <= index < mc.y_dim:
    raise InputError(f"attribute index {index} is out of range [0, {mc.y_dim}).")
  k = len(values)
  ys = np.repeat(y, num_latents * k, axis=0)
  ys[:, index] = np.tile(np.asarray(values, np.float32), num_latents)
  lat = {n: np.repeat(v, k, axis=0) for n, v in prior_latents(trained, num_latents, key).items()}
  images = decode(trained, lat, ys)["image"]
  return images.reshape((num_latents, k) + images.shape[1:])


def swap(trained: TrainedModel, attributes: Any, *, key: Array, num: int = 6
         ) -> dict[str, np.ndarray]:
  """disCVAE foreground / background swap (spec 7.4) for one attribute vector.

  Args:
    trained: a disCVAE `TrainedModel`.
    attributes: [y_dim].
    key: PRNG key of the `num` foreground and `num` background latents.
  Returns:
    "grid" [num, num, S, S, 3] in [0, 1]: row i has foreground latent i, column j background
    latent j (so along a row the foreground stays and the background changes).
  """
  mc = trained.config.model
  if mc.name != "discvae":
    raise InputError(f"swap needs a disCVAE (separate foreground and background latents); this "
                     f"workdir holds a {mc.name}.")
  y = np.asarray(check_attributes(attributes, mc.y_dim))
  lat = prior_latents(trained, num, key)
  z_fg = np.repeat(lat["z_fg"], num, axis=0)
  z_bg = np.tile(lat["z_bg"], (num, 1))
  images = decode(trained, {"z_fg": z_fg, "z_bg": z_bg}, np.repeat(y, num * num, axis=0))
  return {"grid": images["image"].reshape((num, num) + images["image"].shape[1:])}


def edit(trained: TrainedModel, images: Any, attributes: Any, changes: Mapping[int, float],
         *, key: Array, options: Optional[InferenceOptions] = None,
         **kwargs) -> dict[str, np.ndarray]:
  """Edits the attributes of real images: infer z under `attributes`, change, decode.

  For disCVAE the inferred background latent is kept, so only the foreground changes with y.

  Args:
    trained, images, attributes, key, options, kwargs: as for `run_inference`.
    changes: {attribute index: new value}, applied to every image.
  Returns:
    "reconstruction" and "edited" [N, S, S, 3] in [0, 1], the latents, "y" (given) and
    "edited_y".
  """
  mc = trained.config.model
  for index in changes:
    if not isinstance(index, (int, np.integer)) or not 0 <= index < mc.y_dim:
      raise InputError(f"attribute index {index!r} is not an integer in [0, {mc.y_dim}); "
                       "edit takes {attribute index: new value}.")
  out = run_inference(trained, images, attributes, None, key=key, options=options, **kwargs)
  y_new = np.array(out["y"], np.float32)
  for index, value in changes.items():
    y_new[:, int(index)] = value
  lat = {n: out[n] for n in _latent_dims(mc)}
  out["edited"] = decode(trained, lat, y_new)["image"]
  out["edited_y"] = y_new
  return out


def sample(trained: TrainedModel, attributes: Any, key: jax.Array) -> dict[str, np.ndarray]:
  """Draws images for attribute vectors: z ~ N(0, I), decoder mean (spec 1.4).

  Args:
    trained: from `load_trained`.
    attributes: [N, y_dim] attribute vectors.
    key: PRNG key for the latents.
  Returns:
    dict of float arrays in [0, 1], [N, S, S, 3]: "image"; for disCVAE also "foreground",
    "gate" and "background".
  """
  y = check_attributes(attributes, trained.config.model.y_dim)
  return jax.device_get(trained.sample_fn(trained.variables, y, key))
