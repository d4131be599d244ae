"""Pure loss functions (docs/reference.md §1.2, §1.3, §3.1). They know nothing of optimisers.

Every term is returned per example (summed over that example's elements), so a batch loss is
the plain sum over the batch, as in the reference (`sizeAverage = false`), and evaluation can
weight examples (padding). Images are in [-1, 1].
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from a2i_jax.errors import ConfigError, InputError
from a2i_jax.numerics import bounded_exp

Array = jax.Array
_LOG_2PI = math.log(2.0 * math.pi)
_BCE_EPS = 1e-12  # THNN BCECriterion's epsilon.


def _per_example_sum(a: Array) -> Array:
  return a.reshape(a.shape[0], -1).sum(axis=-1)


def _same_shapes(what: str, **arrays: Array) -> None:
  """Refuses arrays of `what` whose shapes differ, or that hold integers, at trace time
  (nothing runs per step).

  Was: broadcast against each other without a word, so a target of [S, S, 3] against
  predictions of [B, S, S, 3], or log-variances of [1, Z] against means of [B, Z], gave
  finite per-example values of the wrong sum (fault hunt).
  """
  shapes = {name: tuple(np.shape(a)) for name, a in arrays.items()}
  if len(set(shapes.values())) > 1 or any(len(s) < 1 for s in shapes.values()):
    given = ", ".join(f"{name} {list(s)}" for name, s in shapes.items())
    raise InputError(f"{what} takes arrays of one shape, [B, ...], one row per example; got "
                     f"{given}: give each its batch axis and the same sizes.")
  for name, a in arrays.items():  # Was: uint8 images scored as values up to 255.
    dtype = jnp.result_type(a)
    if not (jnp.issubdtype(dtype, jnp.floating) or dtype == jnp.bool_):
      raise InputError(f"{what}'s {name} is {dtype}; pass floats (images in [-1, 1]: "
                       "uint8 / 127.5 - 1).")


def gaussian_kl(mu: Array, logvar: Array) -> Array:
  """KL(N(mu, exp(logvar)) || N(0, I)) per example (KLDCriterion.lua).

  Args:
    mu: [B, Z] posterior means.
    logvar: [B, Z] posterior log-variances.
  Returns:
    [B] KL divergences in nats. `exp(logvar)` is `numerics.bounded_exp`, so a runaway
    log-variance gives a large finite KL, never inf.
  Raises:
    InputError: `mu` and `logvar` of different shapes, 0-d, or of integers.
  """
  _same_shapes("gaussian_kl", mu=mu, logvar=logvar)
  return _per_example_sum(-0.5 * (1.0 + logvar - jnp.square(mu) - bounded_exp(logvar)))


def gaussian_nll(x: Array, mean: Array, logvar: Array) -> Array:
  """-log N(x; mean, exp(logvar)) per example with per-element variance (GaussianCriterion).

  The sum over pixels of 0.5 (logvar + log 2 pi) + 0.5 (x - mean)^2 exp(-logvar).

  Args:
    x: [B, S, S, 3] targets.
    mean: [B, S, S, 3] predicted means.
    logvar: [B, S, S, 3] predicted log-variances.
  Where the mean equals the target exactly (a target of -1 under a saturated tanh), the term
  is 0.5 logvar + const: its gradient on that log-variance is +0.5 however low it is, so
  nothing pulls it back up, as in the reference, which turns it into NaN once exp(-logvar)
  overflows. `bounded_exp` keeps it finite; the decoder's heads are float32, where tanh
  saturates only past |x| = 9 (bf16: 3.5), to keep such pixels rare.

  Returns:
    [B] negative log-likelihoods in nats (`exp(-logvar)` bounded as in `gaussian_kl`).
  Raises:
    InputError: arrays of different shapes, 0-d, or of integers (uint8 images).
  """
  _same_shapes("gaussian_nll", x=x, mean=mean, logvar=logvar)
  return _per_example_sum(0.5 * (logvar + _LOG_2PI)
                          + 0.5 * jnp.square(x - mean) * bounded_exp(-logvar))


def smooth_l1(pred: Array, target: Array) -> Array:
  """Torch SmoothL1Criterion (Huber, delta 1) per example: 0.5 d^2 if |d| < 1 else |d| - 0.5.

  Args:
    pred: [B, ...] predictions.
    target: [B, ...] targets, the same shape.
  Returns:
    [B] sums over all non-batch elements.
  Raises:
    InputError: arrays of different shapes, 0-d, or of integers (uint8 images).
  """
  _same_shapes("smooth_l1", pred=pred, target=target)
  return _per_example_sum(_huber(pred - target))


def _huber(diff: Array) -> Array:
  d = jnp.abs(diff)
  return jnp.where(d < 1.0, 0.5 * jnp.square(d), d - 0.5)


def binary_cross_entropy(p: Array, target: Array) -> Array:
  """Torch BCECriterion per example: -[t log(p + eps) + (1 - t) log(1 - p + eps)].

  Args:
    p: [B, ...] probabilities in [0, 1].
    target: [B, ...] targets in [0, 1], the same shape.
  Returns:
    [B] sums over all non-batch elements.
  Raises:
    InputError: arrays of different shapes, 0-d, or of integers (uint8 images).
  """
  _same_shapes("binary_cross_entropy", p=p, target=target)
  return _per_example_sum(-(target * jnp.log(p + _BCE_EPS)
                            + (1.0 - target) * jnp.log(1.0 - p + _BCE_EPS)))


def binary_cross_entropy_with_logits(logits: Array, target: Array) -> Array:
  """BCE of sigmoid(logits) against `target`, computed from the logits, per example.

  -[t log s(l) + (1 - t) log s(-l)] with log s = `jax.nn.log_sigmoid`: finite for every finite
  logit. The probability form (`binary_cross_entropy`) is not: once the sigmoid rounds to
  exactly 1 (a logit above ~17 in float32, ~6 in bfloat16), log(1 - p + 1e-12) depends on
  how the compiler orders the additions, and a background pixel (t = 1) then contributes
  0 x log(0) = NaN. That is what stopped the synthetic disCVAE at step 2,262 (docs/reference.md
  §1.3). Equal to Torch's BCECriterion wherever the sigmoid has not saturated.

  Args:
    logits: [B, ...] pre-sigmoid values.
    target: [B, ...] targets in [0, 1], the same shape.
  Returns:
    [B] sums over all non-batch elements.
  Raises:
    InputError: arrays of different shapes, 0-d, or of integers (uint8 images).
  """
  _same_shapes("binary_cross_entropy_with_logits", logits=logits, target=target)
  logits = jnp.asarray(logits).astype(jnp.float32)
  return _per_example_sum(-(target * jax.nn.log_sigmoid(logits)
                            + (1.0 - target) * jax.nn.log_sigmoid(-logits)))


def cvae_terms(outputs: Mapping[str, Array], x: Array) -> dict[str, Array]:
  """Per-example terms of the (C)VAE bound. The VAE uses the same bound without y.

  Args:
    outputs: the model's outputs (mean, x_logvar, mu, logvar).
    x: the target images [B,S,S,3] in [-1,1].
  Returns:
    dict of [B] arrays: loss (= nll + kl, minimised), nll, kl, bound (= -loss, higher is
    better): a one-sample bound on the log-density of the image in nats, a continuous density
    over images scaled to [-1, 1]; the same model's density over [0, 1] images reads D log 2
    higher (D = S*S*3 values: 8,517 nats at 64x64).
  """
  nll = gaussian_nll(x, outputs["mean"], outputs["x_logvar"])
  kl = gaussian_kl(outputs["mu"], outputs["logvar"])
  loss = nll + kl
  return {"loss": loss, "nll": nll, "kl": kl, "bound": -loss}


COMPOSITIONS = ("reference", "layered")  # How a disCVAE blends its layers (its loss follows).


def _foreground_mask(mask: Any, x: Array) -> Array:
  """`mask` as floats, after checking its shape and dtype against the images `x` (trace
  time)."""
  if mask is None:
    raise InputError("discvae_terms needs the foreground masks, [B, S, S, 1] in [0, 1]; a "
                     "disCVAE trains only on data with masks.")
  shape, want = tuple(np.shape(mask)), tuple(np.shape(x))
  if shape not in (want[:-1] + (1,), want):
    raise InputError(f"the foreground mask is {list(shape)} for images {list(want)}; pass one "
                     f"mask per image, {list(want[:-1] + (1,))}.")
  dtype = jnp.result_type(mask)
  if not (jnp.issubdtype(dtype, jnp.floating) or dtype == jnp.bool_):
    raise InputError(f"the foreground mask is {dtype}; pass floats in [0, 1] (a uint8 mask of "
                     "0/255: mask / 255).")
  return jnp.asarray(mask).astype(jnp.result_type(x, jnp.float32) if dtype == jnp.bool_
                                  else dtype)


def discvae_terms(outputs: Mapping[str, Array], x: Array, mask: Array,
                  gate_weight: float, composition: str = "reference",
                  recon_weight: float = 1.0) -> dict[str, Array]:
  """Per-example terms of the disCVAE loss (docs/reference.md §1.3, §1.3.1).

  loss = w (recon_fg + SmoothL1(h_im, x)) + KL_F + KL_B + gate_weight * BCE(g, 1 - m), where
  w = recon_weight (1 in the reference) and the foreground term depends on the composition:
  - "reference": SmoothL1(h_fg, x_fg), x_fg the image with its background set to -1, as the
    reference code does (its composite h_fg + g h_bg needs h_fg = -1 under the background);
  - "layered": SmoothL1 of h_fg against x on the foreground pixels only (weighted by m). The
    blend (1 - g) h_fg + g h_bg never shows the foreground layer where g = 1, so a target
    there would only spend capacity (and pin its tanh at -1).
  The gate's target is the background 1 - m under both: g = 1 is where the background shows.

  Args:
    outputs: the disCVAE outputs (foreground, gate_logits, mean = composite, x_fg, mu_fg,
      ...). The gate's BCE is computed from its logits (`binary_cross_entropy_with_logits`).
    x: target images [B,S,S,3] in [-1,1].
    mask: foreground mask [B,S,S,1] in [0,1]; the gate's target is the background 1 - m,
      broadcast to the gate's 3 channels.
    gate_weight: alpha (0.3 in the paper configs).
    composition: "reference" or "layered" (the model's `composition`).
    recon_weight: w. SmoothL1 is a unit-variance Gaussian's log-likelihood for small errors,
      a weak pull against the KL on images in [-1, 1]; w > 1 is a smaller variance (w = 1 /
      sigma^2). The reported recon terms stay unweighted, comparable across w.
  Returns:
    dict of [B] arrays: loss, recon_fg, recon, kl_fg, kl_bg, gate_bce, kl.
  Raises:
    ConfigError: a `composition` that is neither (was: any other name, "layerd", computed the
      reference's loss without a word; fault hunt), or a weight that is not finite or is out
      of its range (gate_weight >= 0, recon_weight > 0).
    InputError: a mask that is not [B, S, S, 1] (or x's shape) of floats or bools in [0, 1]
      (was: uint8 0/255 made the gate's target 1 - 255, and a mask of another batch
      broadcast over the examples, without a word).
  """
  if composition not in COMPOSITIONS:
    raise ConfigError(f"composition={composition!r} is not one of {COMPOSITIONS}; pass the "
                      "model's own (config.model.composition).")
  # As config_lib checks model.gate_loss_weight (>= 0) and model.recon_weight (> 0); a traced
  # weight is the caller's (was: NaN or a negative weight taken without a word; fault hunt).
  for name, weight, key, positive in (
      ("gate_weight", gate_weight, "gate_loss_weight", False),
      ("recon_weight", recon_weight, "recon_weight", True)):
    if isinstance(weight, (int, float, np.integer, np.floating)) and not (
        math.isfinite(weight) and (weight > 0 if positive else weight >= 0)):
      raise ConfigError(f"{name}={weight!r} must be a finite number {'>' if positive else '>='}"
                        f" 0 (config.model.{key}).")
  mask = _foreground_mask(mask, x)
  if composition == "layered":
    recon_fg = _per_example_sum(mask * _huber(outputs["foreground"] - x))
  else:
    recon_fg = smooth_l1(outputs["foreground"], outputs["x_fg"])
  recon = smooth_l1(outputs["mean"], x)
  kl_fg = gaussian_kl(outputs["mu_fg"], outputs["logvar_fg"])
  kl_bg = gaussian_kl(outputs["mu_bg"], outputs["logvar_bg"])
  logits = outputs["gate_logits"]
  gate_bce = binary_cross_entropy_with_logits(logits,
                                              jnp.broadcast_to(1.0 - mask, logits.shape))
  loss = recon_weight * (recon_fg + recon) + kl_fg + kl_bg + gate_weight * gate_bce
  return {"loss": loss, "recon_fg": recon_fg, "recon": recon, "kl_fg": kl_fg, "kl_bg": kl_bg,
          "kl": kl_fg + kl_bg, "gate_bce": gate_bce}


def weighted_sums(terms: Mapping[str, Array], weights: Optional[Array] = None
                  ) -> dict[str, Array]:
  """Sums per-example terms over the batch, optionally weighted (0 for padding).

  Args:
    terms: dict of [B] arrays.
    weights: [B] example weights, or None for all ones. An example of weight 0 counts for
      nothing, even where its terms are not finite.
  Returns:
    dict of scalars, the same keys.
  Raises:
    InputError: `weights` not of shape [B] (was: [B, 1] broadcast against [B] into a [B, B]
      sum, B times too large, without a word; fault hunt).
  """
  if weights is not None:
    for k, v in terms.items():
      if tuple(np.shape(weights)) != tuple(np.shape(v))[:1] or np.ndim(v) != 1:
        raise InputError(f"weights is {list(np.shape(weights))} for the term {k!r} of "
                         f"{list(np.shape(v))}; pass one weight per example, [B].")
  if weights is None:
    return {k: v.sum() for k, v in terms.items()}
  # Was v * weights: a padding row's infinity times 0 made the sum NaN.
  return {k: jnp.where(weights > 0, v * weights, 0.0).sum() for k, v in terms.items()}
