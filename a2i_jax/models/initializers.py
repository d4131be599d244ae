"""The Torch7 default initialisers (docs/reference.md §2.7).

No `initialize()` is ever called in the reference, so every layer keeps its `reset()` default;
Flax's defaults (lecun_normal, BatchNorm scale 1) differ. The values are drawn with numpy on
the host (docs/design.md §3.14). Each function returns a Flax initialiser
`init(key, shape, dtype=jnp.float32) -> array`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any


def _host_draw(key: Array, shape: Sequence[int], dtype: Dtype,
               sample: Callable[[np.random.Generator, tuple], np.ndarray]) -> Array:
  """Draws initial values with numpy on the host, seeded by `key`.

  Through `jax.pure_callback`, so it works eagerly, under `jit` and under `eval_shape`, and
  gives the same values everywhere. Why not `jax.random`: every initialiser becomes its own
  threefry kernel, and XLA:CPU takes seconds to compile each one (docs/design.md §3.14); the
  parameters take milliseconds to draw.
  """
  shape = tuple(shape)

  def draw(key_data):
    seed = np.asarray(key_data, dtype=np.uint32).ravel().tolist()
    return np.asarray(sample(np.random.default_rng(seed), shape), dtype=dtype)

  return jax.pure_callback(draw, jax.ShapeDtypeStruct(shape, dtype), jax.random.key_data(key))


def uniform(low: float, high: float) -> Callable:
  """U[low, high), drawn on the host.

  Args:
    low: the lower bound (included).
    high: the upper bound (excluded).
  Returns:
    A Flax initialiser.
  """
  def init(key, shape, dtype=jnp.float32):
    return _host_draw(key, shape, dtype, lambda rng, s: rng.uniform(low, high, s))
  return init


def normal(std: float) -> Callable:
  """N(0, std^2), drawn on the host.

  Args:
    std: the standard deviation.
  Returns:
    A Flax initialiser.
  """
  def init(key, shape, dtype=jnp.float32):
    return _host_draw(key, shape, dtype, lambda rng, s: std * rng.standard_normal(s))
  return init


def torch_default(fan_in: int) -> Callable:
  """nn.Linear / nn.SpatialConvolution reset(): weights and biases ~ U(-1/sqrt(fan_in), +).

  Args:
    fan_in: inputs per output unit (k * k * C_in for a convolution).
  Returns:
    A Flax initialiser.
  """
  bound = 1.0 / math.sqrt(fan_in)
  return uniform(-bound, bound)


def zeros(key: Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> Array:
  """The zero initialiser (draws nothing).

  Args:
    key: unused.
    shape: the shape.
    dtype: the dtype.
  Returns:
    Zeros of `shape` and `dtype`.
  """
  del key
  return jnp.zeros(shape, dtype)
