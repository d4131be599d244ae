"""Performance defaults: the compute-dtype policy and recommended XLA:CPU flags.

Measured in benchmarks/ (BENCHMARKS.md says what each choice bought and on what machine).
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp

from a2i_jax.errors import ConfigError

# XLA:CPU options that measurably speed up the paper-size train step on CPU (BENCHMARKS.md,
# "XLA:CPU options": none did, so it is empty). Appended to XLA_FLAGS by
# `set_recommended_xla_flags`.
RECOMMENDED_CPU_FLAGS: tuple[str, ...] = ()

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def compute_dtype(name: str, backend: str | None = None) -> Any:
  """The compute dtype for `config.model.dtype`.

  "auto" is bfloat16 on TPU and GPU (their matrix units run bf16 at several times the f32
  rate) and float32 on CPU (XLA:CPU has no faster bf16 convolution path; it would only add
  conversions). Parameters and optimiser state are float32 whatever this returns.

  Args:
    name: "auto", "float32", "bfloat16" or "float16".
    backend: the JAX backend ("cpu", "gpu", "tpu"); default `jax.default_backend()`.
  Returns:
    A jnp dtype.
  Raises:
    ConfigError: an unknown name.
  """
  if name not in COMPUTE_DTYPES:
    raise ConfigError(f"model.dtype={name!r} is not a compute dtype; choose one of "
                      f"{', '.join(COMPUTE_DTYPES)}.")
  if name != "auto":
    return jnp.dtype(name)
  if backend is None:
    import jax  # pylint: disable=import-outside-toplevel
    backend = jax.default_backend()
  return jnp.dtype(jnp.float32 if backend == "cpu" else jnp.bfloat16)


def set_recommended_xla_flags(flags: tuple[str, ...] = RECOMMENDED_CPU_FLAGS) -> str:
  """Appends `flags` to the XLA_FLAGS environment variable, keeping flags already set.

  Takes effect only if called before JAX starts its backend (before the first computation
  or `jax.devices()`); benchmarks/bench.py calls it first thing (its default
  `--xla_cpu_flags=recommended`). A flag the user already set (by name, the part before
  "=") is left as the user set it. The flags are XLA:CPU ones: other backends ignore them.

  Args:
    flags: XLA flags such as "--xla_cpu_use_onednn=true"; default `RECOMMENDED_CPU_FLAGS`,
      empty at present, so the default call adds nothing.
  Returns:
    The resulting XLA_FLAGS (also set in `os.environ`), stripped of outer spaces.
  """
  current = os.environ.get("XLA_FLAGS", "")
  names = {f.split("=", 1)[0] for f in current.split()}
  extra = [f for f in flags if f.split("=", 1)[0] not in names]
  value = " ".join([current] + extra).strip()
  os.environ["XLA_FLAGS"] = value
  return value
