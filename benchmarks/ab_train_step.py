"""Config variants of the paper train step, or of posterior inference's step, side by side:
compiled in one process, timed in alternating rounds so that every variant sees the same
machine load.

  python benchmarks/ab_train_step.py --models=cvae,discvae \
      --variants="taps:model.conv_weight_grad=taps;xla:model.conv_weight_grad=xla"
  python benchmarks/ab_train_step.py --what=infer --models=discvae \
      --variants="full:model.decoder_tail=full;phase:model.decoder_tail=phase"
  python benchmarks/ab_train_step.py --smoke --variants="a:;b:model.conv_weight_grad=xla"

Each variant is `name:key=value,key=value` over `bench.py`'s paper config (64x64, width 1,
float32, `--batch`), or over `--config` (e.g. configs/synthetic.py). Eleven keys are not
config keys but the library's module-level forms, set while that variant is traced:
`polyphase_offset` (`layers.POLYPHASE_OFFSET`: on or off; unset: `perf.offset_polyphase`),
`fold_batchnorm` (`layers.FOLD_BATCHNORM`: on or off; unset: `perf.fold_batchnorm`),
`max_pool` (`layers.MAX_POOL_FORM`), `conv_output_split` (`conv_grad.CONV_OUTPUT_SPLIT`),
`conv_input_grad` (`conv_grad.CONV_INPUT_GRAD`: canonical or xla),
`conv_weight_grad_layout` (`conv_grad.CONV_WEIGHT_GRAD_LAYOUT`: canonical or xla), `scan_unroll`
(with `--what=infer`, `posterior.SCAN_UNROLL`: steps per iteration of inference's Adam loop;
set it to `inference.steps_per_call` with `conv_input_grad=xla` for CPU's form before
2026-12-03; with `--what=train` it is the config's own `scan_unroll`, which with
`steps_per_dispatch` sets the train steps one call runs),
`norm_concat_below` (`train_state.NORM_CONCAT_BELOW`; 0 reduces every leaf on its own),
`optimizer` (flat, the library's Adam on one vector, or per_leaf, `train_state.legacy_optimizer`)
`cpu_scheduler` (bfs or dfs: XLA:CPU's instruction order, added to
`perf.CPU_COMPILER_OPTIONS`) and `ynn` (xla, dot, conv or none: the operations XLA:CPU hands
to YNNPACK, `YNN_FUSION_TYPES`, in place of the library's choice),
e.g. --variants="whole:conv_output_split=whole;split:conv_output_split=split".
`--what=train` times the library's train step (`perf.jit` of `train_lib.make_multi_step`:
`steps_per_dispatch` steps per call, 1 unless a variant sets it) and prints images/s;
`--what=infer` times one call of inference's Adam loop (`make_inference_fns`' `run`: the
steps one call runs, all of them by default, on `--batch` images, the encoders' start and
the final decode left out) and prints ms per Adam step and image-iterations/s. One JSON line
per (model, variant): its program's times to build (`lower_s`: trace and lower; `compile_s`:
XLA's compile alone, each timed by itself ahead of time; `setup_s`: everything the variant
took before its first call, the train state and data on the device, or the model's variables
and `init`'s run, with the lowering and compile), the median of `--rounds` timed calls after a
warm-up and every call's time, and the speed per step relative to the first variant. Until
2026-12-05 `compile_s` was what `setup_s` is now, and the first variant's also held the
process's first tracing and device start: the JSON files of that time keep the field, and
BENCHMARKS.md says so where it quotes them. Fresh
processes could not resolve a 5 % change on a machine whose speed
drifts by 10 % within minutes; alternated calls in one process can. The process starts with
the XLA flags the entry points add on this CPU (`--xla_cpu_flags`, default "recommended", as
`bench.py`'s; each row names them). Before 2026-12-02 this script added none: on a machine
whose timing chose XLA's own convolution kernels its rows measured YNNPACK's path, with the
"auto" forms that go with it, unless the caller set XLA_FLAGS. A variant's `ynn=` compile
option still overrides the flag for that variant's programs. Like the entry points and
`bench.py`, it re-executes itself with huge pages for malloc where they help (`--huge_pages`,
default auto; each row names `glibc_tunables`). Until 2026-12-02 (the twentieth session) it
did not, so its absolute figures sat below `bench.py`'s for the same step unless the caller
set GLIBC_TUNABLES (20 against 25 images/s for the disCVAE on a Zen 5 EPYC).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)
import timing  # noqa: E402  (benchmarks/timing.py)


def _variants(p: argparse.ArgumentParser, spec: str) -> list[tuple[str, dict]]:
  """[(name, {key: value})] of a --variants value; refused (`p.error`) where a part is not
  name:key=value,..., two parts share a name, or a form key (`FORM_CHOICES`) has no such value."""
  out = []
  for part in (s for s in spec.split(";") if s.strip()):
    name, colon, kvs = part.partition(":")
    pairs = [kv.split("=", 1) for kv in kvs.split(",") if kv.strip()]
    if not colon or not name.strip() or any(len(kv) != 2 for kv in pairs):
      p.error(f"--variants part {part!r} is not name:key=value,...; e.g. "
              "\"taps:model.conv_weight_grad=taps;xla:model.conv_weight_grad=xla\".")
    if name.strip() in dict(out):  # Was: the later one timed alone under the shared name.
      p.error(f"--variants names {name.strip()!r} twice; give each variant its own name.")
    for key, value in pairs:
      if key in FORM_CHOICES and value not in FORM_CHOICES[key]:
        p.error(f"--variants {name.strip()}: {key}={value!r}; use one of "
                f"{', '.join(FORM_CHOICES[key])}.")
    out.append((name.strip(), dict(pairs)))
  if not out:
    p.error("--variants names no variant; give name:key=value,...;name:...")
  return out


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before anything is compiled.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags; `models` as a list and `variants` as [(name, {key: value})].
  Raises:
    SystemExit: (status 2, one `error:` line) an unknown model, a malformed or repeated
      variant or an unknown form value in one, a count below 1.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="cvae,discvae")
  p.add_argument("--variants", required=True, help="name:key=value,...;name:...")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--config", default="lfw", help="The config the variants change: lfw (the "
                 "paper models) or a config file, e.g. configs/synthetic.py.")
  p.add_argument("--what", default="train", choices=("train", "infer"),
                 help="train: the train step; infer: one call of inference's Adam loop.")
  p.add_argument("--smoke", action="store_true", help="Tiny models, 2 rounds.")
  p.add_argument("--xla_cpu_flags", default="recommended", help=bench.XLA_CPU_FLAGS_HELP)
  p.add_argument("--huge_pages", default="auto", choices=("auto", "off"),
                 help=bench.HUGE_PAGES_HELP)
  args = p.parse_args(argv)
  p.check_at_least(args, {"batch": 1, "rounds": 1})
  args.models = p.comma_list("--models", args.models, bench.MODELS)
  args.variants = _variants(p, args.variants)
  return args


@bench.library_errors_as_lines  # Was: a traceback.
def main(argv=None) -> None:
  """Compiles the variants and times them in alternating rounds (see the module docstring).

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be measured (status 2: a --config file that is
      missing or does not load, an override of a key the config lacks or of another type), or
      the library's refusal of one (an `A2IError`: an override the model refuses), as one
      `error:` line.
  """
  args = parse_args(argv)
  if argv is None:
    bench.huge_pages(args.huge_pages)
  xla_flags = bench.set_xla_cpu_flags(args.xla_cpu_flags)
  # Compile times are compiles, not reads of a JAX_COMPILATION_CACHE_DIR cache (were, before
  # 2026-12-06, where it was set).
  cache = timing.compilation_cache_off()
  variants = args.variants
  if args.smoke:
    args.rounds = 2
  # Every (model, variant)'s config before anything is compiled (`bench.make_config`): a
  # config file or an override that cannot be used is one `error:` line (exit status 2) before
  # the first model is measured (was: a traceback for a file that raised).
  configs = {}
  for model_name in args.models:
    for name, overrides in variants:
      if args.smoke:
        overrides = {**bench.SMOKE_OVERRIDES, **overrides}
      overrides = dict(overrides)
      variant_forms = {key: overrides.pop(key) for key in FORMS if key in overrides
                       and not (key == "scan_unroll" and args.what == "train")}
      configs[model_name, name] = (bench.make_config(
          bench.Case(model_name, args.batch, "float32"), overrides, args.config), variant_forms)
  for model_name in args.models:
    compiled = {}
    for name, _ in variants:
      config, variant_forms = configs[model_name, name]
      program = _infer_program if args.what == "infer" else _train_program
      t0 = time.perf_counter()
      with forms(variant_forms):
        call, per_call, build = program(config, args.batch)
      compiled[name] = (call, per_call, {**build, "setup_s": time.perf_counter() - t0})
    times = {name: [] for name in compiled}
    for call, _, _ in compiled.values():  # Warm-up.
      call()
    for _ in range(args.rounds):
      for name, (call, _, _) in compiled.items():
        times[name].append(call())
    # Seconds per step (per Adam step of inference, per train step of training), so that
    # variants running different numbers of steps per call compare.
    first = statistics.median(times[variants[0][0]]) / compiled[variants[0][0]][1]
    for name, (_, per_call, build) in compiled.items():
      med = statistics.median(times[name])
      row = {"model": model_name, "variant": name, "xla_flags": xla_flags, **cache,
             "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
             **{k: round(build[k], 2) for k in ("lower_s", "compile_s", "setup_s")}}
      if args.what == "infer":
        row.update(adam_steps_per_call=per_call, ms_per_step=round(1e3 * med / per_call, 1),
                   image_iterations_per_s=round(args.batch * per_call / med, 2))
      else:
        row.update(steps_per_call=per_call, images_per_s=round(args.batch * per_call / med, 2))
      print(json.dumps({**row, "speed_vs_first": round(first * per_call / med, 3),
                        "call_s_all": [round(t, 6) for t in times[name]]}), flush=True)


# ynn=...: which operations XLA:CPU hands to YNNPACK (`xla_cpu_experimental_ynn_fusion_type`):
# xla: XLA's default (convolutions and matrix products); dot: matrix products only; conv:
# convolutions only; none: neither (XLA's own kernels: Eigen's convolution and matrix product,
# both on oneDNN's sgemm).
YNN_FUSION_TYPES = {"xla": None, "dot": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
                    "conv": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION", "none": ""}


# The values of the form keys that take one of a fixed set (checked with the command line).
FORM_CHOICES = {"cpu_scheduler": ("bfs", "dfs"), "ynn": tuple(YNN_FUSION_TYPES),
                "optimizer": ("flat", "per_leaf")}


def _choice(key: str, value: str, choices) -> None:
  if value not in choices:
    raise SystemExit(f"error: {key}={value!r}; use one of {', '.join(choices)}.")


def _number(key, value, module, attr):
  """A plain form setting: digits become an int, anything else stays a string."""
  del key, module, attr
  return int(value) if value.isdigit() else value


def _cpu_scheduler(key, value, module, attr):
  """The library's CPU compile options with XLA's bfs or dfs instruction scheduler."""
  _choice(key, value, FORM_CHOICES[key])
  return {**getattr(module, attr),
          "xla_cpu_enable_concurrency_optimized_scheduler": value == "bfs"}


def _ynn(key, value, module, attr):
  """The library's CPU compile options with one `YNN_FUSION_TYPES` kind (or XLA's default)."""
  _choice(key, value, FORM_CHOICES[key])
  name = "xla_cpu_experimental_ynn_fusion_type"
  options = {k: v for k, v in getattr(module, attr).items() if k != name}
  if YNN_FUSION_TYPES[value] is not None:
    options[name] = YNN_FUSION_TYPES[value]
  return options


def _optimizer(key, value, module, attr):
  """flat: the library's optimiser (Adam on one vector); per_leaf: Adam's moments as trees."""
  del module, attr
  import importlib  # pylint: disable=import-outside-toplevel
  state = importlib.import_module("a2i_jax.train_state")
  _choice(key, value, FORM_CHOICES[key])
  return {"flat": state.make_optimizer, "per_leaf": state.legacy_optimizer}[value]


# Variant keys that are not config keys: the library's module-level form settings, set while
# the variant is traced: key -> (module, attribute, value(key, text, module, attribute)).
FORMS = {"max_pool": ("a2i_jax.models.layers", "MAX_POOL_FORM", _number),
         "conv_output_split": ("a2i_jax.models.conv_grad", "CONV_OUTPUT_SPLIT", _number),
         "conv_input_grad": ("a2i_jax.models.conv_grad", "CONV_INPUT_GRAD", _number),
         "conv_weight_grad_layout": ("a2i_jax.models.conv_grad", "CONV_WEIGHT_GRAD_LAYOUT",
                                     _number),
         "scan_unroll": ("a2i_jax.inference.posterior", "SCAN_UNROLL", _number),
         "norm_concat_below": ("a2i_jax.train_state", "NORM_CONCAT_BELOW", _number),
         "cpu_scheduler": ("a2i_jax.perf", "CPU_COMPILER_OPTIONS", _cpu_scheduler),
         "polyphase_offset": ("a2i_jax.models.layers", "POLYPHASE_OFFSET", _number),
         "fold_batchnorm": ("a2i_jax.models.layers", "FOLD_BATCHNORM", _number),
         "optimizer": ("a2i_jax.train_lib", "make_optimizer", _optimizer),
         "ynn": ("a2i_jax.perf", "CPU_COMPILER_OPTIONS", _ynn)}


@contextlib.contextmanager
def forms(settings: dict):
  """Sets the module-level forms `settings` names (`FORMS`) while a variant is traced.

  Args:
    settings: {form key: value as given on the command line}.
  Yields:
    Nothing; the forms are restored on exit.
  """
  import importlib  # pylint: disable=import-outside-toplevel
  saved = []
  try:
    for key, text in settings.items():
      module_name, attr, value = FORMS[key]
      module = importlib.import_module(module_name)
      new = value(key, str(text), module, attr)
      saved.append((module, attr, getattr(module, attr)))
      setattr(module, attr, new)
    yield
  finally:
    for module, attr, value in reversed(saved):
      setattr(module, attr, value)


def _lower_and_compile(fn, *inputs):
  """`fn.lower(*inputs).compile()`, each half timed by itself: (the compiled program,
  {"lower_s": trace and lower, "compile_s": XLA's compile})."""
  t0 = time.perf_counter()
  lowered = fn.lower(*inputs)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  return compiled, {"lower_s": t1 - t0, "compile_s": time.perf_counter() - t1}


def _train_program(config, batch: int):
  """(a function running one timed call of `config.steps_per_dispatch` train steps and
  returning its seconds, the steps per call, {"lower_s", "compile_s"} of its program)."""
  import jax  # pylint: disable=import-outside-toplevel
  import bench  # pylint: disable=import-outside-toplevel
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  steps, state, data, _ = bench.train_program(config, 2 * batch)
  key = jax.random.key(1)
  # The state donated and carried from step to step, as train.py and bench.py run it: without
  # donation every call writes a fresh copy of the parameters and Adam's moments, which timed
  # the optimiser as one vector 12-14 % slower than per leaf, and the same with it.
  step, build = _lower_and_compile(perf.jit(steps, donate_argnums=(0,)), state, data, key)
  carried = [state]

  def call():
    t0 = time.perf_counter()
    carried[0] = jax.block_until_ready(step(carried[0], data, key))[0]
    return time.perf_counter() - t0
  return call, config.steps_per_dispatch, build


def _infer_program(config, batch: int):
  """(a function running one timed call of inference's Adam loop and returning its seconds,
  the Adam steps per call, {"lower_s", "compile_s"} of `run`'s program)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import bench  # pylint: disable=import-outside-toplevel
  from a2i_jax import inference  # pylint: disable=import-outside-toplevel
  setup = bench.inference_call(config, batch)
  variables, x, y, options, fns = setup.variables, setup.x, setup.y, setup.options, setup.fns
  obs = jnp.ones(x.shape[:3] + (1,), jnp.float32)
  prior = (jnp.zeros(y.shape[1]), jnp.eye(y.shape[1]))  # Unused: y is given.
  hyper = inference.posterior._hyper(options)  # pylint: disable=protected-access
  carry = fns["init"](variables, x, y, obs, None, jax.random.key(2), prior)
  run, build = _lower_and_compile(fns["run"], variables, x, y, obs, carry, prior, hyper)

  def call():
    fresh = jax.block_until_ready(jax.tree_util.tree_map(jnp.copy, carry))  # `run` donates it.
    t0 = time.perf_counter()
    jax.block_until_ready(run(variables, x, y, obs, fresh, prior, hyper))
    return time.perf_counter() - t0
  return call, fns["steps_per_call"] or options.steps, build


if __name__ == "__main__":
  main()
