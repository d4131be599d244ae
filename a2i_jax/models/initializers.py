"""The Torch7 default initialisers (docs/reference.md §2.7).

No `initialize()` is ever called in the reference, so every layer keeps its `reset()` default;
Flax's defaults (lecun_normal, BatchNorm scale 1) differ. The values are drawn with numpy on
the host (docs/design.md §3.14). Each function returns a Flax initialiser
`init(key, shape, dtype=jnp.float32) -> array`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any


@dataclasses.dataclass(frozen=True)
class _Deferred:
  """A host draw left for after the program: its placeholder, key data and draw function."""
  placeholder: Any
  key_data: Any
  draw: Callable[[Any], np.ndarray]


_DEFERRED = threading.local()  # .draws: the list `draw_after` collects into, while it traces.


def _host_draw(key: Array, shape: Sequence[int], dtype: Dtype,
               sample: Callable[[np.random.Generator, tuple], np.ndarray]) -> Array:
  """Draws initial values with numpy on the host, seeded by `key`.

  Through `jax.pure_callback`, so it works eagerly, under `jit` and under `eval_shape`, and
  gives the same values everywhere. Why not `jax.random`: every initialiser becomes its own
  threefry kernel, and XLA:CPU takes seconds to compile each one (docs/design.md §3.14); the
  parameters take milliseconds to draw. While `draw_after` traces, the draw is deferred
  instead: a NaN placeholder goes into the program and the key's data comes out of it.
  """
  shape = tuple(shape)

  def draw(key_data):
    seed = np.asarray(key_data, dtype=np.uint32).ravel().tolist()
    return np.asarray(sample(np.random.default_rng(seed), shape), dtype=dtype)

  deferred = getattr(_DEFERRED, "draws", None)
  if deferred is not None:
    placeholder = jnp.full(shape, jnp.nan, dtype)
    deferred.append(_Deferred(placeholder, jax.random.key_data(key), draw))
    return placeholder
  return jax.pure_callback(draw, jax.ShapeDtypeStruct(shape, dtype), jax.random.key_data(key))


def draw_after(init: Callable[..., Any], *args: Any,
               compiler_options: Optional[dict] = None) -> Any:
  """`init(*args)` (a Flax `init`, whose initialisers are this module's) compiled as one
  program without host callbacks, the host draws done after it: the same values as `init`
  under `jit`, from a program that the persistent compilation cache can keep (JAX never
  caches one with host callbacks, so every process compiled a model's `init` again: 1-2 s
  for the paper models on CPU).

  The program returns every leaf that is not drawn, and the key data of every one that is;
  the draws then run on the host with those keys, as the callbacks would have. In the
  program a deferred draw is a NaN placeholder: should `init` return a value computed from
  one (no layer here does), that leaf comes out NaN, and `init` runs again with the draws as
  callbacks inside the program. (Draws that never reach the result, such as those of Flax's
  shape check of a reused parameter, are dropped.)

  Args:
    init: a function whose drawn leaves come straight from this module's initialisers.
    *args: its arguments (a PRNG key first, as Flax's `init`).
    compiler_options: for `Lowered.compile` (e.g. `perf.compiler_options(CHEAP_COMPILE)`).
  Returns:
    `init(*args)`'s tree of arrays.
  """
  found = {}

  def program(*a):
    _DEFERRED.draws = draws = []
    try:
      out = init(*a)
    finally:
      _DEFERRED.draws = None
    leaves, found["tree"] = jax.tree_util.tree_flatten(out)
    by_id = {id(d.placeholder): d for d in draws}
    found["drawn"] = drawn = [by_id.get(id(leaf)) for leaf in leaves]
    keys = [d.key_data for d in drawn if d is not None]
    return ([leaf for leaf, d in zip(leaves, drawn) if d is None],
            jnp.stack(keys) if keys else None)

  kept, keys = jax.jit(program).lower(*args).compile(compiler_options=compiler_options)(*args)
  if not all(np.isfinite(np.asarray(leaf, np.float32)).all() for leaf in kept
             if jnp.issubdtype(leaf.dtype, jnp.inexact)):  # A placeholder reached a leaf.
    return jax.jit(init).lower(*args).compile(compiler_options=compiler_options)(*args)
  kept, keys = iter(kept), iter(np.asarray(keys) if keys is not None else ())
  # device_put, not jnp.asarray: that compiles a copy program per shape (jax 0.10).
  leaves = [next(kept) if d is None else jax.device_put(d.draw(next(keys)))
            for d in found["drawn"]]
  return jax.tree_util.tree_unflatten(found["tree"], leaves)


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
