"""Train-step throughput and compile time, variants side by side in one process; prints JSON.

  python benchmarks/train_step.py                       # synthetic CVAE, 1 step vs fused steps
  python benchmarks/train_step.py --config=configs/lfw.py --batch_size=32 --repeats=3

Each variant is compiled ahead of time (compile seconds reported), warmed up once, then timed
`--repeats` times; the median is reported. Data are random uint8 images held on the device, so
no dataset is needed. Variants: one step per dispatch; `--fuse` steps in a `lax.scan`, rolled
and unrolled (XLA:CPU ran a rolled body 19-23x slower until the gradients were written in the
layout it runs fast in a loop; docs/design.md §3.13). For variants timed in alternating
rounds, and the gradients' forms as variants: benchmarks/ab_train_step.py.
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

from a2i_jax import models, parallel, perf, train_lib  # noqa: E402
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)
import timing  # noqa: E402  (benchmarks/timing.py)

# The variants (module docstring): one step per dispatch, `--fuse` steps rolled and unrolled.
VARIANTS = ("single", "scan_unrolled", "scan_rolled")


class _VariantsParser(flags.ListParser):
  """--variants' parser: a comma list of `VARIANTS`, checked as the flag is read."""

  def parse(self, argument):
    """The variants of `argument` (a comma list, or a list).

    Args:
      argument: the flag's value.
    Returns:
      The list of variant names.
    Raises:
      ValueError: an unknown variant (was: timed as the fused rolled one and reported under
        its own name), or none.
    """
    names = super().parse(argument)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
      raise ValueError(f"{'unknown ' + ', '.join(map(repr, unknown)) if unknown else 'none'}"
                       f"; choose from {', '.join(VARIANTS)}")
    return names


# No default here: ml_collections would load it at import (`bench.parse_absl_flags` puts it in).
_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "Config file (default: configs/synthetic.py).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch (default: the config's).",
                              lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed dispatches per variant.", lower_bound=1)
_FUSE = flags.DEFINE_integer("fuse", 4, "Steps per dispatch of the fused variants.",
                             lower_bound=1)
_VARIANTS = flags.DEFINE(_VariantsParser(), "variants", ",".join(VARIANTS),
                         f"Which variants to run: a comma list of {', '.join(VARIANTS)}.",
                         serializer=flags.CsvListSerializer(","))
_XLA_CPU_FLAGS = flags.DEFINE_string("xla_cpu_flags", "recommended",
                                      bench.XLA_CPU_FLAGS_HELP)


def parse_flags(argv: list) -> list:
  """absl's parse of the command line, whose refusals (an unknown variant, a count below 1, a
  value that is no number, a config file that does not load or that the library refuses) are
  one `error:` line and exit status 2 instead of absl's two-line FATAL or a traceback; before
  anything is compiled (`bench.parse_absl_flags`).

  Args:
    argv: the command line, the program first.
  Returns:
    The arguments absl leaves over.
  Raises:
    SystemExit: (status 2) a flag that cannot be parsed or is not valid.
  """
  return bench.parse_absl_flags(argv, "benchmarks/train_step.py", _CONFIG)


def _measure(config, mesh, data):
  model = models.create_model(config.model)
  tx = train_lib.make_optimizer(config)
  state = parallel.put_replicated(
      train_lib.create_train_state(model, config, tx, jax.random.key(0)), mesh)
  fn = perf.jit(train_lib.make_multi_step(train_lib.make_train_step(model, tx, config), config,
                                         mesh), donate_argnums=(0,))
  key = jax.random.key(1)
  t0 = time.perf_counter()
  compiled = fn.lower(state, data, key).compile()
  compile_s = time.perf_counter() - t0
  held = [state]  # The state is donated: each call takes the one the call before returned.

  def dispatch():
    held[0] = jax.block_until_ready(compiled(held[0], data, key)[0])
  step_s = timing.median_time(dispatch, _REPEATS.value)[0] / config.steps_per_dispatch
  # XLA counts a rolled loop's body once: the figure covers `counted` steps, not all of the
  # dispatch's (before 2026-12-06 it was divided by all, 4x too low for a rolled scan of 4).
  counted = bench.xla_steps_counted(config.steps_per_dispatch, config.scan_unroll)
  flops = bench.xla_flops(compiled)
  flops = None if flops is None or counted is None else flops / counted
  return {"compile_s": round(compile_s, 2), "step_s_median": round(step_s, 4),
          "images_per_s": round(config.batch_size / step_s, 1),
          "gflop_per_step_xla": None if flops is None else round(flops / 1e9, 2),
          "xla_steps_counted": counted}


@bench.library_errors_as_lines  # Was: a traceback.
def main(argv):
  """Times the variants (see the module docstring) and prints the JSON.

  Args:
    argv: what absl leaves of the command line (unused).
  Raises:
    SystemExit: the library's refusal of a value (an `A2IError`, e.g. a batch the devices do
      not divide), as one `error:` line.
  """
  del argv
  xla_flags = bench.set_xla_cpu_flags(_XLA_CPU_FLAGS.value)  # Before the backend starts.
  # Compile times are compiles, not reads of a JAX_COMPILATION_CACHE_DIR cache (were, before
  # 2026-12-06, where it was set).
  cache = timing.compilation_cache_off()
  base = _CONFIG.value
  base.unlock()
  if _BATCH.value:
    base.batch_size = _BATCH.value
  mesh = parallel.make_mesh()
  n, s = 1024, base.data.image_size
  rng = np.random.default_rng(0)
  data = {"images": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
          "attributes": rng.normal(size=(n, base.model.y_dim)).astype(np.float32)}
  if base.model.name == "discvae":
    data["masks"] = rng.integers(0, 256, (n, s, s), dtype=np.uint8)
  data = parallel.put_replicated({k: jnp.asarray(v) for k, v in data.items()}, mesh)
  results = {"device": str(jax.devices()[0].device_kind), "num_devices": jax.device_count(),
             "jax": jax.__version__, "model": base.model.name, "width": base.model.width,
             "image_size": base.model.image_size, "batch_size": base.batch_size,
             "xla_flags": xla_flags, **cache, "variants": {}}
  for name in _VARIANTS.value:
    config = base.copy_and_resolve_references()
    config.steps_per_dispatch = 1 if name == "single" else _FUSE.value
    config.scan_unroll = name == "scan_unrolled"
    results["variants"][name] = _measure(config, mesh, data)
    print(json.dumps({name: results["variants"][name]}), file=sys.stderr, flush=True)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
