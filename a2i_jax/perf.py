"""Backend-dependent choices: the compute dtype, the convolutions' weight-gradient method and
the recommended XLA:CPU flags; "auto" settings resolve here, in one function (docs/design.md
§3.13).

None of them changes the function or the parameters, only how they are computed. The per-tap
weight gradient itself lives in `models/conv_grad.py`. Measured in benchmarks/ (BENCHMARKS.md
says what each choice bought and on what machine).
"""

from __future__ import annotations

import os
from typing import Any

import jax
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
  return jnp.dtype(_resolve("model.dtype", "a compute dtype", name, COMPUTE_DTYPES,
                            backend, cpu="float32", accelerator="bfloat16"))


def _resolve(key: str, what: str, name: str, choices: tuple[str, ...], backend: str | None,
             cpu: str, accelerator: str) -> str:
  """Checks `name` against `choices` and resolves "auto" by backend (CPU or not)."""
  if name not in choices:
    raise ConfigError(f"{key}={name!r} is not {what}; choose one of {', '.join(choices)}.")
  if name != "auto":
    return name
  return cpu if (backend or jax.default_backend()) == "cpu" else accelerator


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


# The convolutions' weight gradients: "taps" is `models.conv_grad.taps_conv_general_dilated`.
CONV_WEIGHT_GRADS = ("auto", "xla", "taps")


def conv_weight_grad(name: str, backend: str | None = None) -> str:
  """The weight-gradient method for `config.model.conv_weight_grad`.

  "auto" is "taps" on CPU (XLA:CPU's own weight gradient is slow; BENCHMARKS.md, "Weight
  gradients as matrix products") and "xla" elsewhere (GPUs run XLA's weight gradient through
  cuDNN, which has no such slow path).

  Args:
    name: "auto", "xla" or "taps".
    backend: the JAX backend ("cpu", "gpu", "tpu"); default `jax.default_backend()`.
  Returns:
    "xla" or "taps".
  Raises:
    ConfigError: an unknown name.
  """
  return _resolve("model.conv_weight_grad", "a weight-gradient method", name,
                  CONV_WEIGHT_GRADS, backend, cpu="taps", accelerator="xla")
