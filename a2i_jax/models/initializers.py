"""The Torch7 default initialisers (docs/reference.md §2.7).

No `initialize()` is ever called in the reference, so every layer keeps its `reset()` default;
Flax's defaults (lecun_normal, BatchNorm scale 1) differ. The values are drawn with numpy on
the host (docs/design.md §3.14). Each function returns a Flax initialiser
`init(key, shape, dtype=jnp.float32) -> array`.
"""

from __future__ import annotations

import dataclasses
import logging
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


@dataclasses.dataclass
class _Deferring:
  """`draw_after`'s state while it traces: the program's fill argument (whose trace a draw's
  key must share to be deferred) and the draws deferred so far."""
  fill: Any
  draws: list


_DEFERRING = threading.local()  # .state: a _Deferring while `draw_after` traces, else None.


def _host_draw(key: Array, shape: Sequence[int], dtype: Dtype,
               sample: Callable[[np.random.Generator, tuple], np.ndarray]) -> Array:
  """Draws initial values with numpy on the host, seeded by `key`.

  Through `jax.pure_callback`, so it works eagerly, under `jit` and under `eval_shape`, and
  gives the same values everywhere. Why not `jax.random`: every initialiser becomes its own
  threefry kernel, and XLA:CPU takes seconds to compile each one (docs/design.md §3.14); the
  parameters take milliseconds to draw. While `draw_after` traces, a draw in its own
  top-level trace is deferred instead: a placeholder (the program's fill argument) goes into
  the program and the key's data comes out of it.
  """
  shape = tuple(shape)

  def draw(key_data):
    seed = np.asarray(key_data, dtype=np.uint32).ravel().tolist()
    return np.asarray(sample(np.random.default_rng(seed), shape), dtype=dtype)

  state = getattr(_DEFERRING, "state", None)
  # Only in draw_after's own trace: not in a nested jit, scan or eval_shape (Flax calls the
  # initialisers under eval_shape to check a reused parameter's shape), whose traces JAX
  # may cache and reuse outside draw_after. (`_trace` is the tracer's trace in jax 0.7 to
  # 0.10; where it is missing, nothing is deferred.)
  trace = getattr(state.fill, "_trace", None) if state is not None else None
  if trace is not None and getattr(key, "_trace", None) is trace:
    placeholder = jnp.zeros(shape, dtype) + state.fill.astype(dtype)  # A new tracer each.
    state.draws.append(_Deferred(placeholder, jax.random.key_data(key), draw))
    return placeholder
  return jax.pure_callback(draw, jax.ShapeDtypeStruct(shape, dtype), jax.random.key_data(key))


def _depends_on_first_input(jaxpr: Any) -> list[bool]:
  """For each output of `jaxpr` (a `jax.core.Jaxpr`), whether it may depend on its first
  input: an equation's outputs depend on it if any of the equation's inputs does (so a
  sub-program counts as a whole, which can only over-count)."""
  tainted = {id(jaxpr.invars[0])}
  for eqn in jaxpr.eqns:
    if any(id(v) in tainted for v in eqn.invars):
      tainted.update(id(v) for v in eqn.outvars)
  return [id(v) in tainted for v in jaxpr.outvars]


def draw_after(init: Callable[..., Any], *args: Any,
               compiler_options: Optional[dict] = None) -> Any:
  """`init(*args)` (a Flax `init`, whose initialisers are this module's) compiled as one
  program without host callbacks, the host draws done after it: the same values as `init`
  under `jit`, from a program that the persistent compilation cache can keep (JAX never
  caches one with host callbacks, so every process compiled a model's `init` again: 1-2 s
  for the paper models on CPU).

  While the program is traced, each draw puts a placeholder in it (a scalar argument of the
  program, broadcast) and hands out its key's data; the program returns the leaves that are
  not drawn and those keys, and the draws run on the host after it with the same keys, as
  the callbacks would have. If a returned leaf other than a draw itself depends on a
  placeholder (found from the program's jaxpr; no layer here does that), `init` runs with the
  callbacks inside the program instead, with a warning. Draws in a nested trace (a jit, scan
  or eval_shape inside `init`) stay callbacks; those that never reach the result are dropped.

  Args:
    init: a function whose drawn leaves come straight from this module's initialisers.
    *args: its arguments (a PRNG key first, as Flax's `init`).
    compiler_options: for `Lowered.compile` (e.g. `perf.compiler_options(CHEAP_COMPILE)`).
  Returns:
    `init(*args)`'s tree of arrays, placed as the program places its results.
  """
  found = {}

  def init_program(fill, *a):
    before = getattr(_DEFERRING, "state", None)
    _DEFERRING.state = state = _Deferring(fill, [])
    try:
      out = init(*a)
    finally:
      _DEFERRING.state = before
    leaves, found["tree"] = jax.tree_util.tree_flatten(out)
    by_id = {id(d.placeholder): d for d in state.draws}
    drawn = [by_id.get(id(leaf)) for leaf in leaves]
    found["draw"] = [d and d.draw for d in drawn]  # No tracers kept past the trace.
    keys = [d.key_data for d in drawn if d is not None]
    return ([leaf for leaf, d in zip(leaves, drawn) if d is None],
            jnp.stack(keys) if keys else None)

  traced = jax.jit(init_program).trace(np.float32(np.nan), *args)
  n_kept = len(found["draw"]) - sum(d is not None for d in found["draw"])
  if any(_depends_on_first_input(traced.jaxpr.jaxpr)[:n_kept]):
    logging.warning("draw_after: init returns a value computed from an initialiser's draw; "
                    "drawing inside the program, which the compilation cache cannot keep.")
    return jax.jit(init).lower(*args).compile(compiler_options=compiler_options)(*args)
  kept, keys = traced.lower().compile(compiler_options=compiler_options)(np.float32(np.nan),
                                                                        *args)
  if keys is None:
    return jax.tree_util.tree_unflatten(found["tree"], kept)
  # Where the program put its results: committed where its inputs were (device_put, not
  # jnp.asarray, which in jax 0.10 compiles a copy program per shape).
  where = keys.sharding if keys.committed and keys.sharding.is_fully_replicated else None
  kept, keys = iter(kept), iter(np.asarray(keys))
  leaves = [next(kept) if d is None else jax.device_put(d(next(keys)), where)
            for d in found["draw"]]
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
