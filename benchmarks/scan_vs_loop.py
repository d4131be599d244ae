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
import statistics
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from a2i_jax import models  # noqa: E402
from a2i_jax.models import conv_grad  # noqa: E402
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)
import timing  # noqa: E402  (benchmarks/timing.py)

# No default here: ml_collections would load it at import (`bench.parse_absl_flags` puts it in).
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file of a CVAE or VAE (default: configs/synthetic.py).")
_STEPS = flags.DEFINE_integer("steps", 16, "Gradient steps per call.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per step.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per variant.", lower_bound=1)
_XLA_CPU_FLAGS = flags.DEFINE_string("xla_cpu_flags", "recommended",
                                      bench.XLA_CPU_FLAGS_HELP)
_INPUT_GRAD = flags.DEFINE_enum("conv_input_grad", "auto", ["auto", "canonical", "xla"],
                                "The convolutions' input-gradient form (perf.conv_input_grad).")


def parse_flags(argv: list) -> list:
  """absl's parse of the command line, before anything is compiled (`bench.parse_absl_flags`):
  a count below 1 (was: --steps=0 a ZeroDivisionError, --repeats=0 a NaN, --batch_size=0 a
  figure of nothing), a value that is no number (was: absl's two-line FATAL), a config file
  that does not load (was: a traceback) or is a disCVAE's (was: the whole help, then the
  refusal) is one `error:` line and exit status 2.

  Args:
    argv: the command line, the program first.
  Returns:
    The arguments absl leaves over.
  Raises:
    SystemExit: (status 2) a flag that cannot be parsed or is not valid.
  """
  rest = bench.parse_absl_flags(argv, "benchmarks/scan_vs_loop.py", _CONFIG)
  if _CONFIG.value.model.name == "discvae":
    timing.refuse("--config: a disCVAE has two latents; give a CVAE or VAE config (one "
                  "latent), e.g. configs/synthetic.py:cvae.")
  return rest


def _timed(fn, z, repeats):
  """(seconds of the first call, median seconds of the `repeats` calls after it)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(z))
  first = time.perf_counter() - t0
  return first, statistics.median(timing.timed_calls(lambda: jax.block_until_ready(fn(z)),
                                                     repeats))


def main(argv):
  """Times the variants (see the module docstring) and prints the JSON.

  Args:
    argv: what absl leaves of the command line (unused).
  """
  del argv
  xla_flags = bench.set_xla_cpu_flags(_XLA_CPU_FLAGS.value)  # Before the backend starts.
  # First calls are compiles, not reads of a JAX_COMPILATION_CACHE_DIR cache (were, before
  # 2026-12-06, where it was set).
  cache = timing.compilation_cache_off()
  conv_grad.CONV_INPUT_GRAD = _INPUT_GRAD.value
  config = _CONFIG.value
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
         "conv_input_grad": _INPUT_GRAD.value, **cache, "variants": {}}
  for name, fn in variants.items():
    first, median = _timed(fn, z0, _REPEATS.value)
    out["variants"][name] = {"first_call_s": round(first, 2),
                             "ms_per_step": round(median / n * 1e3, 1)}
    print(json.dumps({name: out["variants"][name]}), file=sys.stderr, flush=True)
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
