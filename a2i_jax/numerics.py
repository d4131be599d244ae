"""Numerically safe primitives shared by the models, the objectives and inference.

Why this module exists: the losses exponentiate log-variances (the KL terms, the Gaussian
likelihood, the reparametrisation), and float32 `exp` overflows to infinity above 88.7
(bfloat16's range is the same). One overflowed element turns a summed loss into inf and its
gradient into NaN. `bounded_exp` is `exp` inside [-LOG_LIMIT, LOG_LIMIT], bit for bit, and
stays finite outside it; its gradient keeps pointing back into the range, so an optimiser that
strays out is pulled back rather than stalled, where the loss pulls back at all (not the
Gaussian NLL at a pixel its mean fits exactly: `objectives.gaussian_nll`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array

# exp(30) = 1.1e13 (a standard deviation of 3.3e6 on [-1, 1] data, or 3e-7 at -30): far beyond
# anything a trained model uses, and small enough that sums over a paper-sized batch
# (32 x 64 x 64 x 3 pixels) of exp(30) x 4 stay ~1e19, far below float32's 3.4e38.
LOG_LIMIT = 30.0


@jax.custom_jvp
def bounded_exp(x: Array) -> Array:
  """exp(clip(x, -LOG_LIMIT, LOG_LIMIT)): equal to `jnp.exp` inside the range, finite outside.

  The derivative is the value itself everywhere (not clip's zero outside the range), so a
  log-variance beyond the limit still receives the gradient that pulls it back.

  Args:
    x: any array (a log-variance, or a scaled one).
  Returns:
    An array of the same shape and dtype. In a dtype whose largest value is below
    exp(LOG_LIMIT) (float16: 65,504, exp(11.1)), the range is that dtype's (`_log_limit`):
    was exp(30) = inf there, the very overflow this exists to prevent (fault hunt).
  """
  limit = _log_limit(jnp.result_type(x))
  return jnp.exp(jnp.clip(x, -limit, limit))


def _log_limit(dtype) -> float:
  """The bound of `bounded_exp`'s range in `dtype`, at trace time: `LOG_LIMIT`, or for a
  floating dtype whose exp(LOG_LIMIT) would overflow, the whole number below log(its max).

  Args:
    dtype: the dtype of `bounded_exp`'s input (an integer dtype computes in float32).
  Returns:
    The limit, a Python float.
  """
  if not jnp.issubdtype(dtype, jnp.floating):
    return LOG_LIMIT
  return min(LOG_LIMIT, float(math.floor(math.log(float(jnp.finfo(dtype).max)))))


@bounded_exp.defjvp
def _bounded_exp_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  y = bounded_exp(x)
  return y, y * t
