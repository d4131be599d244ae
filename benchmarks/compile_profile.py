"""Where the cold compile time goes: the paper models' train step and the first inference call.

  python benchmarks/compile_profile.py                          # cvae and discvae, the defaults
  python benchmarks/compile_profile.py --models=discvae --variants=default,xla_wgrad,direct
  python benchmarks/compile_profile.py --smoke                  # tiny models: checks the script

Every (model, variant) runs in a fresh Python process with the persistent compilation cache
off, so each figure is a first start. The train step is the one `train.py` runs (as in
`bench.py`); its time to first step is split into

* trace: Python tracing the step into a jaxpr (`jax.jit(...).trace`), Flax and the custom
  gradient rules included;
* lower: the jaxpr to StableHLO (`.lower()`);
* compile: XLA (`.compile()`), itself split, from XLA's own log
  (`TF_CPP_VMODULE=cpu_compiler=1,ir_compiler=1`), into the HLO passes and LLVM's compile of
  each kernel (fusion) XLA emits: how many, their summed time, and the kinds that cost most.

The first inference call is `a2i_jax.inference.infer_latents` on `--infer_images` images for
`--infer_steps` steps, the first call (compiling the init, step and finish programs) against
the median of the next calls; and each program's trace, lower and compile seconds in the first
call (`infer_programs`), with `infer_programs_s` the wall seconds from the first compile's
start to the last one's end. The library compiles the three side by side in threads and waits
for each only before its first use (`make_inference_fns`' compile_ahead), so the programs
before it run meanwhile, and `infer_compile_s` (the first call less the median of the later
ones) is what the call lost to them. The `wait_all` variant waits for all three before running
any (the eighteenth session's form); `in_turn` compiles each when the call reaches it (the way
before 2026-12-02), and its `infer_programs_s` is the sum of the steps' seconds. Prints one
JSON object per line and a table.

Every process starts with the XLA flags `train.py` and `infer.py` add on this CPU
(`--xla_cpu_flags=recommended`, the default: on a CPU whose timing chose XLA's own convolution
kernels, the flag that takes them from YNNPACK, and with it the "auto" forms that go with
them); before 2026-12-02 this script added none, so its figures since the twelfth session's
timing were YNNPACK's path on a machine whose entry points take XLA's (each row now names its
`xla_flags`; `--xla_cpu_flags=none` is that path).

Variants (a comma list): default (the library's CPU defaults with those flags: polyphase
upsampling, the "auto" weight gradients and decoder tail, the compile options of
`a2i_jax.perf.compiler_options`: XLA:CPU's classic emitters, LLVM level 1); xla_defaults (XLA's
own: the MLIR fusion emitters, level 3, as the library compiled before); fusion_emitters (only
the emitters back to XLA's); split8 / split2 (`xla_cpu_parallel_codegen_split_count`); xla_wgrad
(`model.conv_weight_grad=xla`); direct (`model.upsample_mode=direct`); per_leaf (Adam's moments
per parameter tensor and the gradient norm reduced leaf by leaf, as before 2026-12-01:
`ab_train_step.py`'s optimizer and norm_concat_below forms); opt0 (XLA's backend optimisation
level 0, LLVM's expensive passes off); opt1 (level 1); no_expensive (LLVM's expensive passes
off, the level kept); no_unroll, for_size, no_slp (XLA:CPU's LLVM options
`xla_cpu_disable_loop_unrolling`, `xla_cpu_optimize_for_size`, `xla_cpu_disable_slp_vectorizer`,
which are not compile options: `--xla_backend_extra_options=...` in XLA_FLAGS); in_turn and
wait_all (inference's programs, as above).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)
import timing  # noqa: E402  (benchmarks/timing.py)

VARIANTS = {
    "default": ({}, ""),
    "xla_wgrad": ({"model.conv_weight_grad": "xla"}, ""),
    "direct": ({"model.upsample_mode": "direct"}, ""),
    "opt0": ({}, "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"),
    "opt1": ({}, "--xla_backend_optimization_level=1"),
    "no_expensive": ({}, "--xla_llvm_disable_expensive_passes=true"),
    "fusion_emitters": ({}, "--xla_cpu_use_fusion_emitters=true"),
    "xla_defaults": ({}, "--xla_cpu_use_fusion_emitters=true --xla_backend_optimization_level=3"),
    "split8": ({}, "--xla_cpu_parallel_codegen_split_count=8"),
    "split2": ({}, "--xla_cpu_parallel_codegen_split_count=2"),
    "per_leaf": ({"optimizer": "per_leaf", "norm_concat_below": "0"}, ""),
    # XLA:CPU's LLVM options that are not compile options (xla_backend_extra_options).
    "no_unroll": ({}, "--xla_backend_extra_options=xla_cpu_disable_loop_unrolling"),
    "for_size": ({}, "--xla_backend_extra_options=xla_cpu_optimize_for_size"),
    "no_slp": ({}, "--xla_backend_extra_options=xla_cpu_disable_slp_vectorizer"),
    # Inference's three programs compiled in turn as the call reaches each (before
    # 2026-12-02), not side by side in threads (`make_inference_fns`' compile_ahead).
    "in_turn": ({"compile_ahead": "in_turn"}, ""),
    # Side by side, but all three waited for before the first runs (the eighteenth session's
    # form), not each before its own first use.
    "wait_all": ({"compile_ahead": "wait_all"}, ""),
}
_HLO = re.compile(r"Running HLO passes on \[[^\]]*\] for CPU time: [^(]*\((\d+) us\)")
_LLVM = re.compile(r"Compiled LLVM module: (\S+) time: [^(]*\((\d+) us\)")


def _child(args: argparse.Namespace) -> dict:
  """Runs in the fresh process: times trace / lower / compile and the first inference call."""
  timing.compilation_cache_off()
  import ab_train_step  # pylint: disable=import-outside-toplevel
  overrides = dict(kv.split("=", 1) for kv in args.overrides.split(",") if kv)
  forms = {k: overrides.pop(k) for k in list(overrides) if k in ab_train_step.FORMS}
  args.ahead = overrides.pop("compile_ahead", "default")  # One of bench.COMPILE_WAYS.
  case = bench.Case(args.models, args.batch, "float32")
  config = bench.make_config(case, overrides)
  with ab_train_step.forms(forms):
    return _timed(args, config)


def _timed(args: argparse.Namespace, config) -> dict:
  """The child's measurements, with the variant's config and forms in place."""
  import jax  # pylint: disable=import-outside-toplevel
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  out = {}
  variables = None  # Fresh ones for inference, unless a train step ran.
  if args.train:
    t0 = time.perf_counter()
    steps, state, data, _ = bench.train_program(config, 2 * args.batch)
    out["setup_s"] = time.perf_counter() - t0
    fn = perf.jit(steps, donate_argnums=(0,))
    key = jax.random.key(1)
    t0 = time.perf_counter()
    traced = fn.trace(state, data, key)
    out["trace_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lowered = traced.lower()
    out["lower_s"] = time.perf_counter() - t0
    print("@@compile-start", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    out["compile_s"] = time.perf_counter() - t0
    print("@@compile-end", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(compiled(state, data, key))  # The old state was donated.
    out["first_step_s"] = time.perf_counter() - t0
    variables = state.variables
  if args.infer_images:
    call = bench.inference_call(config, args.infer_images, variables, steps=args.infer_steps,
                                steps_per_call=args.steps_per_call)
    programs, first = {}, []
    bench.set_compile_way(call.fns, args.ahead)
    if args.ahead != "in_turn":  # Side by side in threads (the library's way, or wait_all).
      ahead = call.fns["compile_ahead"]

      def timed_ahead(*inputs):
        t0 = time.perf_counter()
        handle = ahead(*inputs)
        if not first:  # The first call's: the seconds it waited here, and when it began.
          first.append((handle, t0))
          out["infer_ahead_s"] = time.perf_counter() - t0
        return handle
      call.fns["compile_ahead"] = timed_ahead
    else:  # Each program's trace, lower and compile, in turn as the call reaches it, timed.
      for name in ("init", "run", "finish"):
        call.fns[name] = _TimedProgram(call.fns[name], programs.setdefault(name, {}))
    t0 = time.perf_counter()
    call()
    out["infer_first_call_s"] = time.perf_counter() - t0
    times = []
    for _ in range(2):
      t0 = time.perf_counter()
      call()
      times.append(time.perf_counter() - t0)
    out["infer_call_s"] = statistics.median(times)
    if first:
      handle, t0 = first[0]
      programs = handle.wait_all()
    out["infer_programs"] = {n: {k: round(v, 3) for k, v in p.items()}
                             for n, p in programs.items()}
    # The first call's seconds on its programs: in turn, their sum; side by side, from
    # compile_ahead's start until its last compile ended (in the default variant the programs
    # before it may run meanwhile; infer_compile_s is what the call lost to them).
    out["infer_programs_s"] = round(handle.ended - t0 if first else
                                    sum(sum(p.values()) for p in programs.values()), 2)
    out["infer_compile_s"] = max(out["infer_first_call_s"] - out["infer_call_s"], 0.0)
  return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


class _TimedProgram:
  """A jitted function whose first call is traced, lowered and compiled step by step, each
  step's seconds written into `times`; later calls run the compiled program."""

  def __init__(self, fn, times: dict):
    self._fn, self._times, self._compiled = fn, times, None

  def __call__(self, *args):
    if self._compiled is None:
      t0 = time.perf_counter()
      traced = self._fn.trace(*args)
      t1 = time.perf_counter()
      lowered = traced.lower()
      t2 = time.perf_counter()
      self._compiled = lowered.compile()
      t3 = time.perf_counter()
      self._times.update(trace=round(t1 - t0, 3), lower=round(t2 - t1, 3),
                         compile=round(t3 - t2, 3))
    return self._compiled(*args)


def _compile_log(stderr: str) -> dict:
  """XLA's log of the train step's compile (between the markers): the HLO passes' seconds, and
  the kernels LLVM compiled, with their summed seconds (several threads may compile at once,
  so the sum can pass the wall time), grouped by kind (the fusion's name without its number)."""
  text = stderr.split("@@compile-start", 1)[-1].split("@@compile-end", 1)[0]
  kinds, counts = collections.Counter(), collections.Counter()
  for name, us in _LLVM.findall(text):
    kind = re.sub(r"(\.\d+)?(_kernel_module)?$", "", re.sub(r"^(__compute_module_)+", "", name))
    kinds[kind] += int(us) / 1e6
    counts[kind] += 1
  return {"compile_hlo_passes_s": round(sum(int(us) for us in _HLO.findall(text)) / 1e6, 2),
          "llvm_kernels": sum(counts.values()),
          "llvm_kernels_s": round(sum(kinds.values()), 2),
          "top_kernel_kinds": [(k, counts[k], round(t, 2)) for k, t in kinds.most_common(8)]}


def run_variant(model: str, variant: str, args: argparse.Namespace) -> dict:
  overrides, flags = VARIANTS[variant]
  if args.smoke:
    overrides = {**bench.SMOKE_OVERRIDES, **overrides}
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="cpu_compiler=1,ir_compiler=1",
             XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""), flags]).strip())
  cmd = [sys.executable, os.path.abspath(__file__), "--child", f"--models={model}",
         f"--batch={args.batch}", f"--infer_images={args.infer_images}",
         f"--infer_steps={args.infer_steps}", f"--steps_per_call={args.steps_per_call}",
         f"--train={args.train}",
         "--overrides=" + ",".join(f"{k}={v}" for k, v in overrides.items())]
  t0 = time.perf_counter()
  r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
  wall = time.perf_counter() - t0
  if r.returncode:
    raise SystemExit(f"error: {model}/{variant} failed:\n{r.stderr[-3000:]}")
  row = {"model": model, "variant": variant, "process_s": round(wall, 2),
         "xla_flags": env["XLA_FLAGS"], **json.loads(r.stdout.strip().splitlines()[-1])}
  if "compile_s" in row:
    row.update(_compile_log(r.stderr))
  return row


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before any process is started.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags; `models` and `variants` as lists (in a child, `models` is its one model).
  Raises:
    SystemExit: (status 2, one `error:` line) an unknown model or variant, a count below its
      least value, or nothing to measure (--train=0 and --infer_images=0).
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="cvae,discvae")
  p.add_argument("--variants", default="default",
                 help=f"Comma list: {', '.join(VARIANTS)}.")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--infer_images", type=int, default=32, help="0: skip the inference call.")
  p.add_argument("--infer_steps", type=int, default=10)
  p.add_argument("--steps_per_call", type=int, default=0,
                 help="Inference steps per jitted call (0: the library's default).")
  p.add_argument("--train", type=int, default=1, choices=(0, 1), help="0: skip the train step.")
  p.add_argument("--rounds", type=int, default=1, help="Repeat the whole set, alternating.")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--xla_cpu_flags", default="recommended", help=bench.XLA_CPU_FLAGS_HELP
                 + " Every variant's process starts with them.")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--overrides", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:  # Flags the parent checked, --models its one model.
    return args
  p.check_at_least(args, {"batch": 1, "infer_images": 0, "infer_steps": 1, "steps_per_call": 0,
                          "rounds": 1})
  args.models = p.comma_list("--models", args.models, bench.MODELS)
  args.variants = p.comma_list("--variants", args.variants, tuple(VARIANTS))
  if not (args.train or args.infer_images):  # Was: rows of no figures, exit status 0.
    p.error("--train=0 with --infer_images=0 measures nothing; give either.")
  return args


def main(argv=None) -> None:
  """Runs each (round, model, variant) in a fresh process and prints its figures (see the module
  docstring).

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be measured, or a failed process, as `error:`.
  """
  args = parse_args(argv)
  if args.child:
    print(json.dumps(_child(args)))
    return
  bench.set_xla_cpu_flags(args.xla_cpu_flags)  # In the environment the children inherit.
  rows = []
  for _ in range(args.rounds):
    for model in args.models:
      for variant in args.variants:
        row = run_variant(model, variant, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
  cols = ("trace_s", "lower_s", "compile_s", "compile_hlo_passes_s", "llvm_kernels",
          "llvm_kernels_s", "infer_compile_s", "infer_programs_s", "infer_call_s")
  print("\n| model | variant | " + " | ".join(cols) + " |")
  print("|" + " --- |" * (len(cols) + 2))
  for row in rows:
    print(f"| {row['model']} | {row['variant']} | "
          + " | ".join(str(row.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
  main()
