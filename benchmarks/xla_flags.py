"""XLA:CPU options A/B on the paper-size train step, in one process; prints JSON lines.

  python benchmarks/xla_flags.py --model=cvae --batch=8 --rounds=3

Each variant compiles the library's train step with its options passed as `compiler_options`
(the same debug options XLA_FLAGS sets), so all variants share one process and one machine
state. Timing rounds interleave the variants (A B C A B C ...) so that the load of a shared
machine drifts over all of them alike; the median per variant is reported with its compile
time. A variant whose options XLA rejects is reported with the error.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)
import timing  # noqa: E402  (benchmarks/timing.py)

VARIANTS = {
    "default": {},
    "opt_level_0": {"xla_backend_optimization_level": 0,
                    "xla_llvm_disable_expensive_passes": True},
    "onednn": {"xla_cpu_use_onednn": True},
    "no_xnnpack": {"xla_cpu_use_xnnpack": False},
    "ynn_no_conv": {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"},
    "fast_math": {"xla_cpu_enable_fast_math": True},
}


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before jax is imported.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags, `variants` as a list, `overrides` as a dict.
  Raises:
    SystemExit: (status 2, one `error:` line) an unknown variant (was: reported as a variant
      XLA rejected, exit status 0) or model (was: the library's traceback, after jax's
      import), an override that is not key=value (was: a ValueError), or a count below 1.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--model", default="cvae", choices=bench.MODELS)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--variants", default=",".join(VARIANTS),
                 help=f"Comma list of {', '.join(VARIANTS)}.")
  p.add_argument("--model_overrides", default="",
                 help="Comma list of key=value on the config, e.g. model.width=0.25.")
  args = p.parse_args(argv)
  p.check_at_least(args, {"batch": 1, "rounds": 1})
  args.variants = p.comma_list("--variants", args.variants, VARIANTS)
  args.overrides = p.key_values("--model_overrides", args.model_overrides)
  return args


@bench.library_errors_as_lines
def main(argv=None):
  """Compiles and times the variants (see the module docstring); prints JSON lines.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be measured, or the library's refusal of one (an
      `A2IError`, e.g. an override of model.width to 0; was a traceback), as one `error:` line.
  """
  args = parse_args(argv)
  import jax
  from a2i_jax import models, parallel, train_lib

  timing.compilation_cache_off()
  config = bench.make_config(bench.Case(args.model, args.batch, "float32"), args.overrides)
  mesh = parallel.make_mesh(jax.devices()[:1])
  model = models.create_model(config.model)
  tx = train_lib.make_optimizer(config)
  state0 = train_lib.create_train_state(model, config, tx, jax.random.key(0))
  data = parallel.put_replicated(bench.random_data(config, 512), mesh)
  key = jax.random.key(1)
  fn = jax.jit(train_lib.make_multi_step(train_lib.make_train_step(model, tx, config), config,
                                         mesh))
  lowered = fn.lower(parallel.put_replicated(state0, mesh), data, key)
  compiled, rows = {}, {}
  for name in args.variants:
    t0 = time.perf_counter()
    try:
      compiled[name] = lowered.compile(compiler_options=VARIANTS[name] or None)
    except Exception as e:  # pylint: disable=broad-except  (XLA rejects an unknown option)
      rows[name] = {"variant": name, "error": str(e).splitlines()[0][:200]}
      continue
    rows[name] = {"variant": name, "options": VARIANTS[name],
                  "compile_s": round(time.perf_counter() - t0, 1), "times": []}
    state = parallel.put_replicated(state0, mesh)
    jax.block_until_ready(compiled[name](state, data, key))  # Warm-up.
    print(json.dumps({"compiled": name, "compile_s": rows[name]["compile_s"]}), flush=True)
  state = parallel.put_replicated(state0, mesh)
  losses = {}
  for _ in range(args.rounds):
    for name, c in compiled.items():
      t0 = time.perf_counter()
      _, metrics = c(state, data, key)
      losses[name] = float(jax.device_get(metrics["loss"])[0])
      rows[name]["times"].append(round(time.perf_counter() - t0, 3))
  for name, row in rows.items():
    if "times" in row:
      row["step_s_median"] = statistics.median(row["times"])
      row["images_per_s"] = round(args.batch / row["step_s_median"], 2)
      row["loss"] = losses[name]
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
