"""Gradient steps on z through the frozen decoder: `lax.scan` (rolled, partially unrolled,
fully unrolled) against a Python loop over one jitted step. Prints JSON.

  python benchmarks/scan_vs_loop.py                 # synthetic CVAE decoder, batch 32, 16 steps
  python benchmarks/scan_vs_loop.py --conv_input_grad=xla   # JAX's own input gradients

The carry is only z, so the difference is the loop itself, not copies of a large state; this
is the shape of posterior inference by optimisation. Medians over `--repeats`.
`--conv_input_grad` sets the convolutions' input-gradient form (`perf.conv_input_grad`; "auto"
is "canonical" on CPU): with JAX's own ("xla"), XLA:CPU ran a loop body's input gradients as
naive loops, and the rolled scans about 5x slower than the unrolled one (BENCHMARKS.md,
"Convolutions in a loop on CPU").
The process starts with the XLA flags the entry points add on this CPU (`--xla_cpu_flags`,
default "recommended"; the output names them); before 2026-12-02 it added none.
"""

import json
import os
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from a2i_jax import models  # noqa: E402
from a2i_jax.models import conv_grad  # noqa: E402
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 16, "Gradient steps per call.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per step.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per variant.")
_XLA_CPU_FLAGS = flags.DEFINE_string("xla_cpu_flags", "recommended",
                                      bench.XLA_CPU_FLAGS_HELP)
_INPUT_GRAD = flags.DEFINE_enum("conv_input_grad", "auto", ["auto", "canonical", "xla"],
                                "The convolutions' input-gradient form (perf.conv_input_grad).")


def _timed(fn, z, repeats):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(z))
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(z))
    times.append(time.perf_counter() - t0)
  return first, float(np.median(times))


def main(argv):
  del argv
  xla_flags = bench.set_xla_cpu_flags(_XLA_CPU_FLAGS.value)  # Before the backend starts.
  conv_grad.CONV_INPUT_GRAD = _INPUT_GRAD.value
  config = _CONFIG.value
  if config.model.name == "discvae":
    raise app.UsageError("use a CVAE or VAE config (one latent).")
  model = models.create_model(config.model)
  variables = models.init_variables(model, config.model, jax.random.key(0))
  y = jnp.zeros((_BATCH.value, config.model.y_dim))
  z0 = jax.random.normal(jax.random.key(1), (_BATCH.value, config.model.z_dim))

  def energy(z):
    return jnp.sum(model.apply(variables, z, y, method="decode")["mean"] ** 2)

  def step(z, _=None):
    return z - 1e-3 * jax.grad(energy)(z), None

  n = _STEPS.value
  variants = {
      "scan_rolled": jax.jit(lambda z: jax.lax.scan(step, z, None, length=n)[0]),
      "scan_unroll_8": jax.jit(lambda z: jax.lax.scan(step, z, None, length=n, unroll=8)[0]),
      "scan_unrolled": jax.jit(lambda z: jax.lax.scan(step, z, None, length=n,
                                                      unroll=True)[0]),
  }
  one = jax.jit(lambda z: step(z)[0])

  def python_loop(z):
    for _ in range(n):
      z = one(z)
    return z

  variants["python_loop"] = python_loop
  out = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
         "batch_size": _BATCH.value, "steps": n, "xla_flags": xla_flags,
         "conv_input_grad": _INPUT_GRAD.value, "variants": {}}
  for name, fn in variants.items():
    first, median = _timed(fn, z0, _REPEATS.value)
    out["variants"][name] = {"first_call_s": round(first, 2),
                             "ms_per_step": round(median / n * 1e3, 1)}
    print(json.dumps({name: out["variants"][name]}), file=sys.stderr, flush=True)
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  app.run(main)
