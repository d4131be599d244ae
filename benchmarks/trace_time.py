"""Python's share of a cold start: tracing and lowering the models' programs, two checkouts
side by side.

  python benchmarks/trace_time.py                                  # this checkout
  python benchmarks/trace_time.py --roots=.,/tmp/old --rounds=5    # two checkouts, alternated
  python benchmarks/trace_time.py --param_read_ab --rounds=10      # one process, warm

Each (root, model, round) runs in a fresh Python process, the roots alternated round by round,
and traces and lowers, without compiling or running anything:

* train: the train step `train.py` runs (`bench.train_program`, `jax.jit(...).trace` and
  `.lower()`), the paper models at batch 32 (`--config=configs/synthetic.py` for the tiny
  synthetic ones: the test suite's size);
* infer: the three programs of the first `a2i_jax.inference.infer_latents` call (init, run,
  finish; `bench.inference_call` on `--infer_images` images), each traced and lowered when the
  call reaches it and answered with zeros of its output's shape, so nothing is compiled.

`--param_read_ab` instead traces the train step again and again in one process, alternating
the library's direct parameter reads (`layers.ParamsReadDirectly`) with Flax's own `param`
(which traces each initialiser again to check its shape): the warm traces, whose spread is
far smaller than a fresh process's.

Every process starts with the XLA flags train.py adds on this CPU (`--xla_cpu_flags`; before
2026-12-02 none), which decide the "auto" forms, and so what is traced.

The first trace in a process also pays JAX's own warm-up (its caches of the jnp functions'
traces fill), as every new process does. Prints one JSON object per measurement and a table
of medians with each root's ratio to the first. BENCHMARKS.md, "Tracing the models".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _child(args: argparse.Namespace) -> dict:
  """In the fresh process, with `args.root` first on sys.path."""
  sys.path[:0] = [args.root, os.path.join(args.root, "benchmarks")]
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_enable_compilation_cache", False)
  import bench  # pylint: disable=import-outside-toplevel
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  if args.config:
    config = _synthetic(args)
  else:
    config = bench.make_config(bench.Case(args.model, args.batch, "float32"), {})
  out = {}
  if args.what == "train":
    steps, state, data, _ = bench.train_program(config, 2 * args.batch)
    fn = perf.jit(steps, donate_argnums=(0,))
    t0 = time.perf_counter()
    traced = fn.trace(state, data, jax.random.key(1))
    t1 = time.perf_counter()
    traced.lower()
    out.update(trace_s=t1 - t0, lower_s=time.perf_counter() - t1)
  else:
    call = bench.inference_call(config, args.infer_images, None, steps=args.infer_steps)
    times = {}

    class Traced:
      """Traces and lowers the program once; answers zeros of its outputs' shapes."""

      def __init__(self, fn, name):
        self.fn, self.name, self.zeros = fn, name, None

      def __call__(self, *a):
        if self.zeros is None:
          t0 = time.perf_counter()
          traced = self.fn.trace(*a)
          t1 = time.perf_counter()
          traced.lower()
          times[self.name] = (t1 - t0, time.perf_counter() - t1)
          self.zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                              traced.out_info)
        return self.zeros

    call.fns.pop("compile_ahead", None)  # It would compile them (a checkout before has none).
    for name in ("init", "run", "finish"):
      call.fns[name] = Traced(call.fns[name], name)
    call()
    out.update(trace_s=sum(t for t, _ in times.values()),
               lower_s=sum(l for _, l in times.values()),
               programs={n: [round(t, 3), round(l, 3)] for n, (t, l) in times.items()})
  return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def _param_read_ab(args: argparse.Namespace) -> None:
  """The train step traced `args.rounds` times per form in this process (a fresh function each
  time, so nothing comes from JAX's trace cache), the forms alternated; the first round of
  each is left out of the medians (JAX's warm-up)."""
  sys.path[:0] = [os.path.dirname(HERE), HERE]
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import bench  # pylint: disable=import-outside-toplevel
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  from a2i_jax.models import layers  # pylint: disable=import-outside-toplevel
  forms = {"direct": layers.ParamsReadDirectly.param,
           "flax": nn.nowrap(lambda self, name, fn, *a, unbox=True, **k: nn.Module.param(
               self, name, fn, *a, unbox=unbox, **k))}
  try:
    for model in args.models.split(","):
      args.model = model
      config = (_synthetic(args) if args.config else
                bench.make_config(bench.Case(model, args.batch, "float32"), {}))
      steps, state, data, _ = bench.train_program(config, 2 * args.batch)
      times = {name: [] for name in forms}
      for rnd in range(args.rounds):
        for name in (list(forms) if rnd % 2 == 0 else list(forms)[::-1]):
          layers.ParamsReadDirectly.param = forms[name]
          t0 = time.perf_counter()
          perf.jit(lambda *a: steps(*a)).trace(state, data, jax.random.key(1))  # pylint: disable=cell-var-from-loop
          times[name].append(time.perf_counter() - t0)
      med = {name: statistics.median(t[1:]) for name, t in times.items()}
      print(json.dumps({"model": model, "config": args.config or "configs/lfw.py",
                        "trace_s": {n: [round(x, 3) for x in t] for n, t in times.items()},
                        "median_s": {n: round(m, 3) for n, m in med.items()},
                        "direct_vs_flax": round(med["direct"] / med["flax"], 3)}), flush=True)
  finally:
    layers.ParamsReadDirectly.param = forms["direct"]


def _synthetic(args: argparse.Namespace):
  """configs/synthetic.py at the test suite's size (tests/conftest.py's tiny_config)."""
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.get_config(f"synthetic:{args.model}")
  config.model.width = 0.125
  config.model.z_dim, config.model.zf_dim, config.model.zb_dim = 8, 6, 4
  config.batch_size = args.batch
  config.data.synthetic.num_train = 64
  config.data.cache_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "a2i_trace_time")
  return config


class _Parser(argparse.ArgumentParser):
  """argparse's parser, its refusals one `error:` line (exit status 2) without the usage lines
  (as benchmarks/timing.py's, not imported here: a child imports the measured checkout's)."""

  def error(self, message: str):
    """Prints `error: <message>` on stderr and exits with status 2.

    Args:
      message: what is wrong and how to fix it.
    Raises:
      SystemExit: always (status 2).
    """
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


MODELS = ("cvae", "discvae", "vae")
WHATS = ("train", "infer")


def _items(p: argparse.ArgumentParser, flag: str, value: str, choices: tuple) -> list[str]:
  """The items of a comma list flag, each one of `choices`; refused (`p.error`) otherwise."""
  items = value.split(",")
  unknown = [v for v in items if v not in choices]
  if unknown:
    p.error(f"{flag}: unknown {', '.join(map(repr, unknown))}; give a comma list of "
            f"{', '.join(choices)}.")
  return items


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before anything is traced.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags (`models` and `what` still comma lists, as the children take them).
  Raises:
    SystemExit: (status 2, one `error:` line) an unknown model or program (was: any --what
      but "train" traced as infer, and reported under its own name), a count below 1, a
      --config other than configs/synthetic.py (relative: each checkout's own is measured).
  """
  p = _Parser(description=__doc__.split("\n\n", 1)[0])
  p.add_argument("--roots", default=os.path.dirname(HERE), help="Comma list of checkouts.")
  p.add_argument("--models", default="cvae,discvae")
  p.add_argument("--what", default="train,infer", help="Comma list: train, infer.")
  p.add_argument("--config", default="", help="configs/synthetic.py: the tiny models (each "
                 "checkout's own file).")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--infer_images", type=int, default=32)
  p.add_argument("--infer_steps", type=int, default=10)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--param_read_ab", action="store_true",
                 help="Direct parameter reads against Flax's param, in this process.")
  p.add_argument("--xla_cpu_flags", default="recommended",
                 help="As bench.py's: 'recommended' (the flags the entry points add on this "
                 "CPU), 'none', or flags. They decide the \"auto\" forms traced.")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--root", default="", help=argparse.SUPPRESS)
  p.add_argument("--model", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  _items(p, "--models", args.models, MODELS)
  _items(p, "--what", args.what, WHATS)
  for name in ("batch", "infer_images", "infer_steps", "rounds"):
    if getattr(args, name) < 1:
      p.error(f"--{name}={getattr(args, name)} is below 1; give at least 1.")
  synthetic = os.path.join("configs", "synthetic.py")
  # Each checkout's own file is measured (`_synthetic`): the flag names which models, not a
  # file. Was: any path ending in configs/synthetic.py, another checkout's or a missing one,
  # accepted, and the measured checkout's own file used without a word (read-through).
  if args.config and os.path.normpath(args.config) != synthetic:
    p.error(f"--config={args.config}: only configs/synthetic.py (the tiny models), each measured "
            "checkout's own, is measured here; pass --config=configs/synthetic.py, or leave "
            "--config out for the paper models.")  # Was exit status 1.
  return args


def main(argv=None) -> None:
  """Traces and lowers the programs (see the module docstring) and prints the times.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be traced, or a child that failed, as `error:`.
  """
  args = parse_args(argv)
  if args.child:  # Its XLA_FLAGS came from the parent.
    print(json.dumps(_child(args)))
    return
  # Not at the top: a child imports the bench.py of the checkout it measures.
  import bench  # pylint: disable=import-outside-toplevel
  bench.set_xla_cpu_flags(args.xla_cpu_flags)  # This process's, and its children's.
  if args.param_read_ab:
    if args.rounds < 2:
      raise SystemExit("error: --param_read_ab needs --rounds of 2 or more (the first is "
                       "left out of the medians).")
    _param_read_ab(args)
    return
  roots = [os.path.abspath(r) for r in args.roots.split(",")]
  for r in roots:
    if not os.path.isdir(os.path.join(r, "a2i_jax")):
      raise SystemExit(f"error: --roots: {r} is not a checkout of a2i-jax (no a2i_jax/ in it).")
  rows = []
  for rnd in range(args.rounds):
    for model in args.models.split(","):
      for what in args.what.split(","):
        for root in (roots if rnd % 2 == 0 else roots[::-1]):
          cmd = [sys.executable, os.path.abspath(__file__), "--child", f"--root={root}",
                 f"--model={model}", f"--what={what}", f"--batch={args.batch}",
                 f"--infer_images={args.infer_images}", f"--infer_steps={args.infer_steps}"]
          if args.config:
            cmd.append(f"--config={args.config}")
          r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, check=False)
          if r.returncode:
            raise SystemExit(f"error: {root} {model} {what} failed:\n{r.stderr[-3000:]}")
          row = {"root": root, "model": model, "what": what, "round": rnd,
                 **json.loads(r.stdout.strip().splitlines()[-1])}
          print(json.dumps(row), flush=True)
          rows.append(row)
  print("\n| model | program | root | trace (s) | lower (s) | trace vs first root |")
  print("|---|---|---|---|---|---|")
  for model in args.models.split(","):
    for what in args.what.split(","):
      first = None
      for root in roots:
        sel = [x for x in rows if (x["root"], x["model"], x["what"]) == (root, model, what)]
        t = statistics.median(x["trace_s"] for x in sel)
        low = statistics.median(x["lower_s"] for x in sel)
        first = t if first is None else first
        print(f"| {model} | {what} | {root} | {t:.3f} | {low:.3f} | {t / first:.2f} |")


if __name__ == "__main__":
  main()
