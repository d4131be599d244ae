"""The Torch7 default initialisers (docs/reference.md §2.7).

No `initialize()` is ever called in the reference, so every layer keeps its `reset()` default;
Flax's defaults (lecun_normal, BatchNorm scale 1) differ. The values are drawn with numpy on
the host (docs/design.md §3.14). Each function returns a Flax initialiser
`init(key, shape, dtype=jnp.float32) -> array`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
from typing import Any, Callable, Hashable, Optional, Sequence

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np

from a2i_jax import files, memo

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


# Threefry-2x32 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) with
# 20 rounds, as JAX's default PRNG computes it: the rotation constants of the two alternating
# groups of four rounds and the key schedule's parity constant.
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_THREEFRY_PARITY = np.uint32(0x1BD11BDA)


def _threefry2x32(k1: np.ndarray, k2: np.ndarray, x1: np.ndarray,
                 x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The Threefry-2x32 block function in NumPy: the two output words for the key (k1, k2) and
  the counter words (x1, x2), bit for bit JAX's `threefry2x32_p` (all uint32, broadcast)."""
  k1, k2, x1, x2 = (np.asarray(v, np.uint32) for v in (k1, k2, x1, x2))
  schedule = (k1, k2, k1 ^ k2 ^ _THREEFRY_PARITY)
  with np.errstate(over="ignore"):
    x = [x1 + schedule[0], x2 + schedule[1]]
    for group in range(5):
      for r in _THREEFRY_ROTATIONS[group % 2]:
        x[0] = x[0] + x[1]
        x[1] = (x[1] << np.uint32(r)) | (x[1] >> np.uint32(32 - r))
        x[1] = x[0] ^ x[1]
      x[0] = x[0] + schedule[(group + 1) % 3]
      x[1] = x[1] + schedule[(group + 2) % 3] + np.uint32(group + 1)
  return x[0], x[1]


def _fold_in(keys: np.ndarray, data: np.ndarray) -> np.ndarray:
  """`jax.random.fold_in` on key data [..., 2]: the hash of the counter (0, data)."""
  data = np.asarray(data, np.uint32)
  y1, y2 = _threefry2x32(keys[..., 0], keys[..., 1], np.zeros_like(data), data)
  return np.stack([y1, y2], axis=-1)


def _split(keys: np.ndarray, shape: tuple) -> np.ndarray:
  """`jax.random.split(key, shape)` on key data [..., 2] -> [..., *shape, 2], under either
  setting of `jax_threefry_partitionable`."""
  num = math.prod(shape)
  k1, k2 = (keys[..., i][..., None] for i in (0, 1))
  if jax.config.jax_threefry_partitionable:
    # Key i hashes the flat index i as a 64-bit counter in two words (jax's iota_2x32_shape).
    index = np.arange(num, dtype=np.uint64)
    y1, y2 = _threefry2x32(k1, k2, (index >> np.uint64(32)).astype(np.uint32),
                          index.astype(np.uint32))
    words = np.stack([y1, y2], axis=-1)
  else:
    # The counters 0 .. 2n-1 hashed as the pairs (i, n + i); the 2n words in order are the keys.
    count = np.arange(2 * num, dtype=np.uint32)
    y1, y2 = _threefry2x32(k1, k2, count[:num], count[num:])
    words = np.concatenate([y1, y2], axis=-1)
  return words.reshape(keys.shape[:-1] + tuple(shape) + (2,))


class _NotOnHost(Exception):
  """Raised inside `_evaluate_on_host` for an equation it does not evaluate."""


@functools.cache
def _threefry_key_dtype() -> Any:
  # Abstractly: a key made here would start JAX's backend, which must wait for the caller
  # (XLA_FLAGS, jax.distributed.initialize).
  return jax.eval_shape(lambda: jax.random.key(0, impl="threefry2x32")).dtype


def _is_key(aval: Any) -> bool:
  """Whether an abstract value (or array) holds typed PRNG keys; `_NotOnHost` for keys of
  another implementation than threefry2x32."""
  if not jax.dtypes.issubdtype(aval.dtype, jax.dtypes.prng_key):
    return False
  if aval.dtype != _threefry_key_dtype():
    raise _NotOnHost(f"PRNG implementation {aval.dtype}")
  return True


def _structural(name: str, params: dict, key: bool, num_inputs: int) -> Optional[Callable]:
  """NumPy for a shape-only primitive; on key data (`key`), the words are a last axis. (A
  broadcast or reshape with more inputs than its operand has dynamic shapes: refused.)"""
  extra = (2,) if key else ()
  if name == "broadcast_in_dim" and params.get("sharding") is None and num_inputs == 1:
    shape, dims = tuple(params["shape"]), tuple(params["broadcast_dimensions"])

    def broadcast(x):
      rank = len(shape)
      spread = [1] * rank
      for d, n in zip(dims, x.shape[:x.ndim - len(extra)]):
        spread[d] = n
      return np.broadcast_to(x.reshape(tuple(spread) + extra), shape + extra)
    return broadcast
  if (name == "reshape" and params.get("dimensions") is None and params.get("sharding") is None
      and num_inputs == 1):
    return lambda x: x.reshape(tuple(params["new_sizes"]) + extra)
  if name == "squeeze":
    return lambda x: np.squeeze(x, axis=tuple(params["dimensions"]))
  if name == "slice":
    strides = params.get("strides") or (1,) * len(params["start_indices"])
    return lambda x: x[tuple(slice(a, b, c) for a, b, c in zip(
        params["start_indices"], params["limit_indices"], strides))]
  if name == "concatenate":
    return lambda *xs: np.concatenate(xs, axis=params["dimension"])
  if name == "stack":
    return lambda *xs: np.stack(xs, axis=params["axis"])
  if name == "copy":
    return np.array
  return None


def _evaluate_on_host(closed_jaxpr: Any, args: Sequence[Any]) -> list[np.ndarray]:
  """The outputs of `closed_jaxpr` computed with NumPy, or `_NotOnHost`.

  What an initial-variables program computes once XLA would have dropped the model's forward
  pass: key derivations (Flax folds each module's and parameter's name into the key) and
  constant leaves (zeros, ones). Equations that no output needs are skipped, as XLA drops
  them. Only threefry2x32 keys, the key operations, shape operations and dtype conversions
  are evaluated; anything else raises `_NotOnHost`, and the caller compiles the program.
  """
  jaxpr = closed_jaxpr.jaxpr
  if jaxpr.effects:
    raise _NotOnHost("effects")
  # NumPy arrays placed on a device are strongly typed; a weakly typed result (a Python scalar
  # in the tree) would promote differently downstream.
  if any(getattr(v.aval, "weak_type", False) for v in jaxpr.outvars):
    raise _NotOnHost("a weakly typed result")
  needed = {id(v) for v in jaxpr.outvars}
  live = []
  for eqn in reversed(jaxpr.eqns):
    if any(id(v) in needed for v in eqn.outvars):
      live.append(eqn)
      needed.update(id(v) for v in eqn.invars)
  env = {}

  def read(v):
    if isinstance(v, jax_core.Literal):
      return np.asarray(v.val, v.aval.dtype)
    return env[id(v)]

  def write(v, value, key):
    value = np.asarray(value)
    aval = v.aval
    want = tuple(aval.shape) + ((2,) if key else ())
    if value.shape != want:
      raise _NotOnHost(f"shape {value.shape} for {want}")
    env[id(v)] = value if key else value.astype(aval.dtype, copy=False)

  for v, x in zip(jaxpr.constvars, closed_jaxpr.consts):
    key = _is_key(v.aval)
    write(v, jax.random.key_data(x) if key else x, key)
  for v, x in zip(jaxpr.invars, args):
    write(v, x, _is_key(v.aval))
  for eqn in reversed(live):
    name = eqn.primitive.name
    if eqn.effects or len(eqn.outvars) != 1:
      raise _NotOnHost(name)
    out = eqn.outvars[0]
    key = _is_key(out.aval)
    ins = [read(v) for v in eqn.invars]
    if name in ("random_wrap", "random_unwrap"):  # A wrapped key's type is checked above.
      value = ins[0].astype(np.uint32)
    elif name == "random_fold_in":
      value = _fold_in(ins[0], ins[1])
    elif name == "random_split":
      value = _split(ins[0], tuple(eqn.params["shape"]))
    elif name == "convert_element_type" and not key and not _is_key(eqn.invars[0].aval):
      new = np.dtype(eqn.params["new_dtype"])
      if eqn.params.get("sharding") is not None or (
          not np.issubdtype(ins[0].dtype, np.integer) and ins[0].dtype != np.bool_
          and (np.issubdtype(new, np.integer) or new == np.bool_)):
        # XLA's float-to-integer conversion (NaN to 0, out-of-range values clamped) is not
        # NumPy's.
        raise _NotOnHost(name)
      value = ins[0].astype(new)
    else:
      fn = _structural(name, eqn.params, key, len(eqn.invars))
      if fn is None or any(_is_key(v.aval) != key for v in eqn.invars
                           if not isinstance(v, jax_core.Literal)):
        raise _NotOnHost(name)
      value = fn(*ins)
    write(out, value, key)
  return [read(v) for v in jaxpr.outvars]


def _host_arguments(args: Sequence[Any]) -> tuple[list[np.ndarray], Any]:
  """The program's flat arguments as NumPy (keys as their data), and where its results would
  be placed: the arguments' sharding if one is committed and fully replicated, else None (the
  default device). Raises `_NotOnHost` for an argument placed otherwise."""
  if not jax.sharding.get_abstract_mesh().empty:
    raise _NotOnHost("a mesh set for jit")  # Which places uncommitted results on the mesh.
  flat, where = [], None
  for x in jax.tree_util.tree_leaves(args):
    if isinstance(x, jax.core.Tracer):  # Called inside a caller's own transformation.
      raise _NotOnHost("a traced argument")
    if isinstance(x, jax.Array):
      if getattr(x, "committed", False):
        if not x.sharding.is_fully_replicated:
          raise _NotOnHost("a sharded argument")
        if where is not None and not where.is_equivalent_to(x.sharding, x.ndim):
          raise _NotOnHost("arguments committed to different devices")
        where = x.sharding
      if _is_key(x):
        x = jax.random.key_data(x)
    flat.append(np.asarray(x))
  return flat, where


# draw_after's traces kept by its `cache_key` (and the arguments' types): a process that makes
# a model's variables again (a notebook, the tests) skips the trace of the model's `init`
# (docs/design.md §3.14).
_TRACES = memo.BoundedCache(16)


def _argument_signature(args: Sequence[Any]) -> Optional[tuple]:
  """What a trace of `init(*args)` depends on in its arguments (their tree, types, shapes,
  dtypes, for typed keys the implementation, for committed arrays the placement) and in
  JAX's settings, or None where it may depend on more: an argument that is not an array (its
  value could change the trace), or a mesh set for jit."""
  if not jax.sharding.get_abstract_mesh().empty:
    return None
  leaves, tree = jax.tree_util.tree_flatten(args)
  signature = []
  for x in leaves:
    if not isinstance(x, (jax.Array, np.ndarray, np.generic)) or isinstance(
        x, jax.core.Tracer):
      return None
    impl = str(jax.random.key_impl(x)) if jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key) else None
    where = x.sharding if getattr(x, "committed", False) else None
    signature.append((type(x).__name__, tuple(x.shape), str(x.dtype), impl, where))
  return (tree, tuple(signature), bool(jax.config.jax_enable_x64),
          bool(jax.config.jax_threefry_partitionable))


def draw_after(init: Callable[..., Any], *args: Any,
               compiler_options: Optional[dict] = None,
               cache_key: Optional[Hashable] = None) -> Any:
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
  Called inside a transformation itself (its arguments traced), it is `init(*args)`, the
  draws callbacks in the caller's program.

  The program itself is usually not compiled: what its results need of it (key derivations,
  constant leaves) is evaluated with NumPy, to the same bits (`_evaluate_on_host`). It is
  compiled where NumPy could answer otherwise: other operations, float-to-integer
  conversions, weakly typed results, keys of another PRNG implementation than threefry2x32,
  arguments sharded across devices or committed to different ones, or a mesh set for jit.

  Args:
    init: a function whose drawn leaves come straight from this module's initialisers.
    *args: its arguments (a PRNG key first, as Flax's `init`).
    compiler_options: for `Lowered.compile` (e.g. `perf.compiler_options(CHEAP_COMPILE)`).
    cache_key: a hashable value that names `init` up to its arguments' values (a Flax
      module, which is equal to another of the same fields, and the sizes of its dummy
      inputs): the trace is kept under it and the types of `args`, and a later call with the
      same key and types of arguments reuses it. None: traced each call.
  Returns:
    `init(*args)`'s tree of arrays, placed as the program would place its results.
  Raises:
    MemoryError: values that take more than the host's physical memory, before any is made.
  """
  if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(args)):
    # Inside a caller's transformation (`jax.jit`, `jax.eval_shape` of `init_variables`):
    # the draws stay callbacks in the caller's program, the same values (was: JAX's
    # TypeError from compiling this program for traced arguments).
    return init(*args)
  signature = _argument_signature(args) if cache_key is not None else None
  trace = lambda: _trace_draws(init, args)
  traced, found, draws_reach_leaves = (
      _TRACES.get((cache_key, signature), trace) if signature is not None else trace())
  short = memory_shortfall(found["bytes"])
  if short is not None:  # Was: drawn until NumPy gave up (a minute for 400 TB), or compiled
    # (XLA hung); the draws would not fit anyway.
    raise MemoryError(short)
  if draws_reach_leaves:
    logging.warning("draw_after: init returns a value computed from an initialiser's draw; "
                    "drawing inside the program, which the compilation cache cannot keep.")
    return jax.jit(init).lower(*args).compile(compiler_options=compiler_options)(*args)
  return _run_draws(traced, found, args, compiler_options)


def tree_nbytes(tree: Any) -> int:
  """The bytes the leaves of `tree` take, from their shapes and dtypes alone: the one sum of
  the host-memory checks (`draw_after`, `models.check_fits_host_memory`).

  Args:
    tree: a pytree of arrays, tracers or `jax.ShapeDtypeStruct`s (a Python scalar leaf counts
      as NumPy's 8 bytes).
  Returns:
    The total size in bytes.
  """
  return sum(math.prod(np.shape(x)) * np.dtype(getattr(x, "dtype", np.float64)).itemsize
             for x in jax.tree_util.tree_leaves(tree))


def memory_shortfall(nbytes: int) -> Optional[str]:
  """Says why `nbytes` of initial values do not fit in the host's memory.

  Args:
    nbytes: the initial values' size in bytes.
  Returns:
    "the initial values take X GiB, more than this machine's Y GiB of memory", or None where
    they fit or the system does not say how much memory it has.
  """
  memory = files.host_memory()
  if memory is None or nbytes <= memory:
    return None
  return (f"the initial values take {nbytes / 2**30:,.1f} GiB, more than this machine's "
          f"{memory / 2**30:,.1f} GiB of memory")


def _trace_draws(init: Callable[..., Any], args: Sequence[Any]) -> tuple[Any, dict, bool]:
  """`draw_after`'s trace of `init(*args)`: the traced program (placeholders in, the leaves not
  drawn and the draws' keys out), what it found ("tree": the result's tree, "draw": per leaf
  its host draw or None) and whether a leaf other than a draw depends on a placeholder."""
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
    found["bytes"] = tree_nbytes(leaves)  # What the values take: `draw_after`'s bound.
    keys = [d.key_data for d in drawn if d is not None]
    return ([leaf for leaf, d in zip(leaves, drawn) if d is None],
            jnp.stack(keys) if keys else None)

  traced = jax.jit(init_program).trace(np.float32(np.nan), *args)
  n_kept = len(found["draw"]) - sum(d is not None for d in found["draw"])
  return traced, found, any(_depends_on_first_input(traced.jaxpr.jaxpr)[:n_kept])


def _run_draws(traced: Any, found: dict, args: Sequence[Any],
               compiler_options: Optional[dict]) -> Any:
  """The values of a `_trace_draws` trace for `args`: its program's results (evaluated with
  NumPy where it can be, else compiled) and the host draws from the keys they hold."""
  n_kept = len(found["draw"]) - sum(d is not None for d in found["draw"])
  try:
    # Usually the program is key derivations and constants, which NumPy computes in
    # milliseconds: no XLA program to compile, or to read from the persistent cache.
    flat_args, where = _host_arguments((np.float32(np.nan), *args))
    outs = _evaluate_on_host(traced.jaxpr, flat_args)
    keys = outs[n_kept] if len(outs) > n_kept else None
    # device_put, not jnp.asarray, which in jax 0.10 compiles a copy program per shape.
    kept = [jax.device_put(x, where) for x in outs[:n_kept]]
  except MemoryError:  # The program would need as much (was: compiled, and XLA hung).
    raise
  except Exception as e:  # pylint: disable=broad-except
    # `_NotOnHost`, or the shortcut failing otherwise (a primitive's parameters renamed in a
    # later jax, say): the program gives the answer.
    if not isinstance(e, _NotOnHost):
      logging.debug("draw_after: host evaluation failed (%s: %s); compiling the program.",
                    type(e).__name__, e)
    kept, keys = traced.lower().compile(compiler_options=compiler_options)(
        np.float32(np.nan), *args)
    # Where the program put its results: committed where its inputs were.
    if keys is not None:
      where = keys.sharding if keys.committed and keys.sharding.is_fully_replicated else None
  if keys is None:
    return jax.tree_util.tree_unflatten(found["tree"], kept)
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
