"""XLA:CPU compile options side by side in one process: compile time against step time.

  python benchmarks/compile_options.py                                  # paper CVAE and disCVAE
  python benchmarks/compile_options.py --models=discvae --rounds=5
  python benchmarks/compile_options.py --config=configs/synthetic.py    # the synthetic models
  python benchmarks/compile_options.py --smoke

For each model, the library's train step (as `bench.py` builds it) is lowered once and compiled
once per option set, with `compiled = lowered.compile(compiler_options=...)`, the persistent
cache off; then the compiled variants are timed in alternating rounds (one step each per round,
after a warm-up), so that every variant sees the same machine load. The same for one posterior
inference step (decoder forward and backward to z, the Adam update: `make_inference_fns`'s
"run"), compiled for 1 and for 10 steps per call (`--infer_steps_per_call`; the steps are
unrolled on CPU until 2026-12-03, one rolled `lax.scan` since), its time divided by the
steps; with `--infer_ends=1` also the programs that run
once per inference call, before and after the steps ("init": the encoders' start, "finish":
the energies and images), and with `--report=1` the divergence report a failed train step
runs (`train_lib.make_term_report`). Prints one JSON object per (model, program, option
set) and a table of compile seconds and median step seconds, with their ratios to the first
option set.

The process starts with the XLA flags train.py and infer.py add on this CPU (`--xla_cpu_flags`;
before 2026-12-02 it added none, so on a CPU whose timing chose XLA's own convolution kernels
its figures were YNNPACK's path); each row names them (`xla_flags`).

Option sets: default (XLA's); O1 (`xla_backend_optimization_level=1`); O0 (level 0 and LLVM's
expensive passes off, the library's CHEAP_COMPILE); classic (`xla_cpu_use_fusion_emitters=false`:
XLA:CPU's older loop emitters for fusions instead of the MLIR fusion emitters); classic_O1
(both); classic_O0 (classic emitters with CHEAP_COMPILE: what the library compiles inference's
init and finish with).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)
import timing  # noqa: E402  (benchmarks/timing.py)

OPTION_SETS = {
    "default": None,
    "O1": {"xla_backend_optimization_level": 1},
    "O0": {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
    # XLA:CPU's classic (pre-MLIR) loop emitters for fusions instead of the fusion emitters.
    "classic": {"xla_cpu_use_fusion_emitters": False},
    "classic_O1": {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 1},
    # The library's CPU options with XLA:CPU's depth-first (memory-saving) instruction order
    # instead of its default breadth-first, concurrency-optimised one.
    "classic_O1_dfs": {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 1,
                       "xla_cpu_enable_concurrency_optimized_scheduler": False},
    # The library's programs that run once per call (inference's init and finish): classic
    # emitters, level 0, LLVM's expensive passes off.
    "classic_O0": {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0,
                   "xla_llvm_disable_expensive_passes": True},
}


def _config(model_name: str, args: argparse.Namespace):
  """The config of one model: --config's file (`bench.load_config`), or configs/lfw.py with
  the overrides (`bench.make_config`); a file or an override that cannot be used is one
  `error:` line (exit status 2; was a traceback for a file that raised, and for a file whose
  get_config takes no argument advice to drop a ':<model>' the script had added)."""
  if args.config:
    config = bench.load_config(args.config, model_name)
    config.batch_size = args.batch
    config.steps_per_dispatch = 1
    return config
  overrides = dict(args.overrides)
  if args.smoke:
    overrides = {**bench.SMOKE_OVERRIDES, **overrides}
  return bench.make_config(bench.Case(model_name, args.batch, "float32"), overrides)


def _programs(config, args: argparse.Namespace) -> dict:
  """{program: (lowered, a function giving its arguments, steps per call)} for one model's
  `config` (`_config`)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from a2i_jax import inference, models  # pylint: disable=import-outside-toplevel

  steps, state, data, _ = bench.train_program(config, 2 * args.batch)
  model = models.create_model(config.model)
  key = jax.random.key(1)
  # Plain jits throughout: the option sets below are each the whole set of options. The
  # library's own programs (inference, the report) are built with `perf.jit`, which would
  # carry the library's options into every compile (`Lowered.compile` merges its
  # `compiler_options` into the jit's own), so here it gets none to add.
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  perf.compiler_options = lambda extra=None, backend=None: None
  train = jax.jit(steps).lower(state, data, key) if args.train else None
  rnd = bench.random_data(config, args.batch)
  x = jnp.asarray(rnd["images"], jnp.float32) / 127.5 - 1.0
  y = jnp.asarray(rnd["attributes"])
  obs = jnp.ones(x.shape[:3] + (1,), jnp.float32)
  prior = (jnp.zeros(y.shape[1]), jnp.eye(y.shape[1]))  # Unused: y is given.
  variables = state.variables
  out = {"train": (train, lambda: (state, data, key), 1)} if args.train else {}
  if args.report:  # The divergence report, run once after a failed step.
    from a2i_jax import parallel, train_lib  # pylint: disable=import-outside-toplevel
    report = train_lib.make_term_report(model, config, parallel.make_mesh(jax.devices()[:1]))
    out["term_report"] = (report.lower(state, data, key), lambda: (state, data, key), 1)
  for k in args.infer_steps_per_call:
    options = inference.InferenceOptions.from_config(config.inference, steps=k, restarts=1,
                                                     steps_per_call=k)
    fns = inference.make_inference_fns(model, options)
    carry = fns["init"](variables, x, y, obs, None, key, prior)
    hyper = inference.posterior._hyper(options)  # pylint: disable=protected-access
    # "run" donates its carry: a fresh copy per call.
    fresh = (lambda carry=carry, hyper=hyper: (
        variables, x, y, obs, jax.tree_util.tree_map(jnp.copy, carry), prior, hyper))
    out[f"infer_k{k}"] = (fns["run"].lower(*fresh()), fresh, k)
    if args.infer_ends and "infer_init" not in out:  # Before and after the steps, once.
      init_args = lambda: (variables, x, y, obs, None, key, prior)
      out["infer_init"] = (fns["init"].lower(*init_args()), init_args, 1)
      out["infer_finish"] = (fns["finish"].lower(*fresh()), fresh, 1)
  return out


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before anything is compiled.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags; `models`, `options` and `infer_steps_per_call` as lists, `overrides` as a dict.
  Raises:
    SystemExit: (status 2, one `error:` line) an unknown model or option set, a count below 1,
      an override that is not key=value (or given with --config, which it does not change), or
      no program to measure.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="cvae,discvae")
  p.add_argument("--options", default="default,O1,O0",
                 help=f"Comma list of option sets: {', '.join(OPTION_SETS)}.")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--rounds", type=int, default=5, help="Timed rounds (one call per variant).")
  p.add_argument("--config", default="", help="A config file instead of configs/lfw.py, e.g. "
                 "configs/synthetic.py (its model sizes).")
  p.add_argument("--overrides", default="", help="Comma list of key=value (configs/lfw.py).")
  p.add_argument("--infer_steps_per_call", default="1,10",
                 help="Inference programs: Adam steps per call, a comma list ('': none).")
  p.add_argument("--train", type=int, default=1, choices=(0, 1),
                 help="0: the inference programs only.")
  p.add_argument("--report", type=int, default=0, choices=(0, 1),
                 help="1: also the divergence report (train_lib.make_term_report).")
  p.add_argument("--infer_ends", type=int, default=0, choices=(0, 1),
                 help="1: also inference's init and finish programs (once per call).")
  p.add_argument("--smoke", action="store_true", help="Tiny models, 2 rounds.")
  p.add_argument("--xla_cpu_flags", default="recommended",
                 help=bench.XLA_CPU_FLAGS_HELP + " The option sets add to them.")
  args = p.parse_args(argv)
  p.check_at_least(args, {"batch": 1, "rounds": 1})
  args.models = p.comma_list("--models", args.models, bench.MODELS)
  args.options = p.comma_list("--options", args.options, tuple(OPTION_SETS))
  if args.config and args.overrides:  # Was: ignored, the config file's values measured.
    p.error("--overrides changes configs/lfw.py only; drop --config or --overrides.")
  args.overrides = p.key_values("--overrides", args.overrides)
  args.infer_steps_per_call = (p.positive_ints("--infer_steps_per_call",
                                               args.infer_steps_per_call)
                               if args.infer_steps_per_call.strip() else [])
  if not (args.train or args.report or args.infer_steps_per_call):
    p.error("--train=0 with no --infer_steps_per_call and --report=0 measures nothing; give "
            "one of them.")
  return args


@bench.library_errors_as_lines  # Was: a traceback.
def main(argv=None) -> None:
  """Compiles each program with each option set and times them (see the module docstring).

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be measured (status 2: a --config file that is
      missing or does not load, an override of a key the config lacks or of another type), or
      the library's refusal of one (an `A2IError`: an override the model refuses), as one
      `error:` line.
  """
  args = parse_args(argv)
  if args.smoke:
    args.rounds = 2
  # Every model's config before anything is compiled: one that cannot be used stops the run
  # before the first model is measured.
  configs = {model_name: _config(model_name, args) for model_name in args.models}
  xla_flags = bench.set_xla_cpu_flags(args.xla_cpu_flags)  # Before JAX starts its backend.
  import jax  # pylint: disable=import-outside-toplevel
  timing.compilation_cache_off()
  names = args.options
  rows = []
  for model_name in args.models:
    for program, (lowered, call_args, per_call) in _programs(configs[model_name], args).items():
      compiled, compile_s = {}, {}
      for name in names:
        t0 = time.perf_counter()
        compiled[name] = lowered.compile(compiler_options=OPTION_SETS[name])
        compile_s[name] = time.perf_counter() - t0
      times = {name: [] for name in names}
      for name in names:  # Warm-up.
        jax.block_until_ready(compiled[name](*call_args()))
      for _ in range(args.rounds):
        for name in names:
          fresh = jax.block_until_ready(call_args())
          t0 = time.perf_counter()
          jax.block_until_ready(compiled[name](*fresh))
          times[name].append((time.perf_counter() - t0) / per_call)
      base_c, base_t = compile_s[names[0]], statistics.median(times[names[0]])
      for name in names:
        med = statistics.median(times[name])
        row = {"model": model_name, "program": program, "options": name,
               "compile_s": round(compile_s[name], 2), "step_s_median": round(med, 4),
               "step_s_all": [round(t, 4) for t in times[name]],
               "compile_vs_first": round(compile_s[name] / base_c, 2),
               "step_vs_first": round(med / base_t, 3), "xla_flags": xla_flags}
        print(json.dumps(row), flush=True)
        rows.append(row)
  print(f"\n| model | program | options | compile (s) | step (s, median of {args.rounds}) | "
        f"compile / {names[0]} | step / {names[0]} |")
  print("|" + " --- |" * 7)
  for r in rows:
    print(f"| {r['model']} | {r['program']} | {r['options']} | {r['compile_s']} | "
          f"{r['step_s_median']} | {r['compile_vs_first']} | {r['step_vs_first']} |")


if __name__ == "__main__":
  main()
