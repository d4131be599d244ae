"""Data parallelism over a device mesh: jit + NamedSharding, not pmap (docs/design.md §3.2).

One code path for 1..N devices: the train state is replicated, the batch is split along its
first axis over the mesh axis "data", and `jax.jit` partitions the step. Because the program
is the global-batch program, BatchNorm statistics are global-batch statistics and N devices
compute what one device computes for the same global batch.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from a2i_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices) with axis "data".

  `axis_types` is passed explicitly because its default changed between JAX versions; Auto
  lets XLA propagate shardings from the annotated inputs.

  Args:
    devices: the devices to use; None for `jax.devices()`.
  Returns:
    A `Mesh` of shape [len(devices)] with the axis named "data".
  """
  devices = list(jax.devices() if devices is None else devices)
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


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Copies a pytree to every device of the mesh.

  Args:
    tree: a pytree of arrays.
    mesh: from `make_mesh`.
  Returns:
    The same pytree of `jax.Array`s, replicated.
  """
  return jax.device_put(tree, replicated(mesh))


def put_batch(tree: Any, mesh: Mesh) -> Any:
  """Splits a pytree of arrays over the mesh along their first axis.

  Args:
    tree: a pytree of arrays [B, ...], B divisible by the device count.
    mesh: from `make_mesh`.
  Returns:
    The same pytree of `jax.Array`s, sharded along axis 0.
  """
  return jax.device_put(tree, batch_sharded(mesh))
