"""Data parallelism over a device mesh: jit + NamedSharding, not pmap (docs/design.md §3.2).

One code path for 1..N devices: the train state is replicated, the batch is split along its
first axis over the mesh axis "data", and `jax.jit` partitions the step. Because the program
is the global-batch program, BatchNorm statistics are global-batch statistics and N devices
compute what one device computes for the same global batch.

Many processes (docs/design.md §3.6): the mesh spans every process's devices, and each
process holds only its own devices' shards. `put_replicated` and `put_batch` build those
global arrays from host data that every process holds in full, so N processes of M devices
compute what one process of N*M devices computes; `fetch` brings a result back to the host
of every process. In a single process they are plain `jax.device_put` / `jax.device_get`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from a2i_jax import inputs
from a2i_jax.errors import ConfigError, InputError

DATA_AXIS = "data"


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices) with axis "data".

  `axis_types` is passed explicitly because its default changed between JAX versions; Auto
  lets XLA propagate shardings from the annotated inputs.

  Args:
    devices: the devices to use; None for `jax.devices()`.
  Returns:
    A `Mesh` of shape [len(devices)] with the axis named "data".
  Raises:
    ConfigError: `devices` is empty, holds something that is not a `jax.Device`, or names a
      device twice (were JAX's IndexError, AttributeError or bare AssertionError), or is one
      device, not a list (was "'Device' object is not iterable").
  """
  if isinstance(devices, jax.Device):
    raise ConfigError(f"devices={devices!r} is one jax.Device, not a list of them; pass "
                      "[device] (e.g. jax.devices()[:1]).")
  try:
    devices = list(jax.devices() if devices is None else devices)
  except TypeError:  # A number, say: was "'int' object is not iterable".
    raise ConfigError(f"devices={devices!r}: pass a non-empty list of distinct jax.Device "
                      "objects, e.g. jax.devices() or jax.devices()[:2] (None: all).") from None
  if (not devices or not all(isinstance(d, jax.Device) for d in devices)
      or len(set(devices)) != len(devices)):
    raise ConfigError(f"devices={devices!r}: pass a non-empty list of distinct jax.Device "
                      "objects, e.g. jax.devices() or jax.devices()[:2] (None: all).")
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy of an array on every device of the mesh.

  Args:
    mesh: from `make_mesh`.
  Returns:
    `NamedSharding(mesh, P())`.
  """
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of arrays whose leading axis is the (global) batch axis.

  Args:
    mesh: from `make_mesh`.
  Returns:
    `NamedSharding(mesh, P("data"))`: the leading axis is split over the devices.
  """
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_divisible(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  """Raises ConfigError when `batch_size` does not split evenly over the mesh's devices.

  Args:
    batch_size: the global batch size.
    mesh: from `make_mesh`.
    what: the config key named in the message.
  """
  n = mesh.devices.size
  if batch_size <= 0 or batch_size % n:
    lower = max(n, batch_size // n * n)
    raise ConfigError(f"config.{what}={batch_size} is not divisible by the {n} devices in use; "
                     f"set --config.{what} to a multiple of {n} (e.g. {lower} or {lower + n}).")


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def loose_key(key: Any) -> Any:
  """A PRNG key that a jitted call places where its other arguments are.

  A key the caller committed to one device (`jax.device_put(key, device)`, or one split from
  such a key) made a call over several devices fail inside JAX ("incompatible devices"); its
  host copy is placed like the call's NumPy arguments. One spread over devices of other
  processes is returned as it is. For the host functions that take a key (inference), which
  cannot run inside a caller's transformation.

  Args:
    key: a PRNG key that `inputs.check_key` accepts.
  Returns:
    The same key, uncommitted.
  Raises:
    InputError: called inside a caller's `jax.jit` or `eval_shape` (the key, or its data,
      traced), where a host function cannot run (was JAX's TracerArrayConversionError; a
      review).
  """
  if isinstance(key, jax.core.Tracer):
    raise inputs.traced_error("the key")
  if not isinstance(key, jax.Array) or not key.is_fully_addressable:
    return key
  if _is_key(key):
    data = jax.random.key_data(key)
    if isinstance(data, jax.core.Tracer):  # A key closed over by the caller's function.
      raise inputs.traced_error("the key")
    return jax.random.wrap_key_data(np.asarray(data), impl=jax.random.key_impl(key))
  return np.asarray(key)


def _put(tree: Any, sharding: NamedSharding) -> Any:
  if sharding.is_fully_addressable:  # One process: as it always was.
    return jax.device_put(tree, sharding)
  return jax.tree_util.tree_map(lambda x: _put_global(x, sharding), tree)


def _put_global(x: Any, sharding: NamedSharding) -> Any:
  """One leaf onto a sharding that spans devices of other processes."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return jax.device_put(x, sharding)  # Already global: XLA reshards it.
  if _is_key(x):  # Typed PRNG keys travel as their raw key data.
    return jax.random.wrap_key_data(_put_global(jax.random.key_data(x), sharding),
                                    impl=jax.random.key_impl(x))
  # Every process holds the whole array; each fills in its own devices' shards.
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Copies a pytree to every device of the mesh.

  With several processes every process must pass the same values (the same data, the same
  initial state from the same seed); each copies them to its own devices.

  Args:
    tree: a pytree of arrays.
    mesh: from `make_mesh`.
  Returns:
    The same pytree of `jax.Array`s, replicated.
  """
  return _put(tree, replicated(mesh))


def put_batch(tree: Any, mesh: Mesh) -> Any:
  """Splits a pytree of arrays over the mesh along their first axis.

  With several processes every process passes the whole global batch; each keeps the rows
  of its own devices.

  Args:
    tree: a pytree of arrays [B, ...], B divisible by the device count.
    mesh: from `make_mesh`.
  Returns:
    The same pytree of `jax.Array`s, sharded along axis 0.
  Raises:
    InputError: an array with no leading axis, or one whose B does not divide over the
      mesh's devices (was JAX's IndivisibleError, a dump of the sharding), naming the rows
      to pad it with.
  """
  _check_rows_divide(tree, mesh.devices.size)
  return _put(tree, batch_sharded(mesh))


def _check_rows_divide(tree: Any, n: int) -> None:
  """Refuses leaves of `tree` whose leading axis does not split over `n` devices."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    shape = np.shape(leaf)
    where = f"the array at {jax.tree_util.keystr(path)}" if path else "the array"
    if not shape:
      raise InputError(f"put_batch splits arrays over the devices along their first axis; "
                       f"{where} is a scalar. Pass [B, ...] arrays (put_replicated copies "
                       "whole ones).")
    if shape[0] % n:
      pad = -shape[0] % n
      raise InputError(
          f"put_batch splits arrays over the {n} devices along their first axis; {where} has "
          f"{shape[0]} rows (shape {tuple(shape)}), not a multiple of {n}. Pad it with {pad} "
          f"row{'s' if pad != 1 else ''} to {shape[0] + pad} (e.g. np.concatenate([x, "
          f"np.repeat(x[-1:], {pad}, axis=0)]), dropping their results), or pass a mesh of "
          "fewer devices.")


def _fetch_leaf(x: Any) -> Any:
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return jax.device_get(x)
  if _is_key(x):
    return jax.random.wrap_key_data(_fetch_leaf(jax.random.key_data(x)),
                                    impl=jax.random.key_impl(x))
  if x.sharding.is_fully_replicated:  # This process's copy is the whole array.
    return np.asarray(x.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def fetch(tree: Any) -> Any:
  """`jax.device_get` that also works for arrays spread over several processes.

  Replicated arrays are read from this process's own copy; sharded ones are gathered from
  every process, so with several processes every process must call `fetch` on the same
  arrays in the same order (it is a collective), and each gets the whole result. Process 0
  then writes it (`distributed.is_main`).

  Args:
    tree: a pytree of arrays (`jax.Array`s, NumPy arrays or scalars).
  Returns:
    The same pytree with NumPy arrays holding the global values.
  """
  leaves = jax.tree_util.tree_leaves(tree)
  if all(x.is_fully_addressable for x in leaves if isinstance(x, jax.Array)):
    return jax.device_get(tree)  # One process: as it always was.
  return jax.tree_util.tree_map(_fetch_leaf, tree)
