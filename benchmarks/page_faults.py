"""Page faults and kernel time per train step and per inference call, with and without huge
pages for malloc (a2i_jax/hugepages.py).

  python benchmarks/page_faults.py                       # fresh processes, alternated
  python benchmarks/page_faults.py --rounds=3 --models=discvae --what=train
  python benchmarks/page_faults.py --smoke               # tiny model: checks the script

Each (round, setting, model, what) runs in a fresh process, since glibc reads its tunables at
start: "huge" with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, "plain" without it (and without
the entry points' re-execution), "keep" and "keep_huge" with freed memory kept mapped (one
malloc arena, no mmap, no trimming; the latter with huge pages too). A process times `--calls`
train steps (`bench.py`'s program) or `infer_latents` calls (32 images x 10 steps), after a warm-up, and reports for each the
wall time, the minor page faults and the kernel (system) CPU time (`getrusage`), and the
process's peak resident memory. Prints one JSON object per process and a table of medians.
The processes start with the XLA flags the entry points add on this CPU (`--xla_cpu_flags`,
default "recommended"); before 2026-12-02 they started with none.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)
import timing  # noqa: E402  (benchmarks/timing.py)

WHATS = ("train", "infer")
SETTINGS = {"huge": "glibc.malloc.hugetlb=1", "plain": "",
            # Freed memory kept: one arena, no mmap, no trimming (the heap only grows).
            "keep": "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                    "glibc.malloc.trim_threshold=1099511627776",
            "keep_huge": "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                         "glibc.malloc.trim_threshold=1099511627776:glibc.malloc.hugetlb=1"}


def churn(mb: int) -> None:
  """Another process takes `mb` MB, touches every page and exits: what the PyTorch port does
  between two of JAX's calls under compare_cpu.sh's turn-taking."""
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # As the port runs.
  subprocess.run([sys.executable, "-c", f"b = bytearray({mb} << 20)"], check=True, env=env)


def measure(model: str, what: str, calls: int, smoke: bool, churn_mb: int = 0) -> dict:
  """Runs in the child: times `calls` calls after a warm-up, with their faults and sys time
  (with `churn_mb`, another process churns that much memory before each call, untimed)."""
  sys.path.insert(0, HERE)
  sys.path.insert(0, os.path.dirname(HERE))
  import jax  # pylint: disable=import-outside-toplevel
  import bench  # pylint: disable=import-outside-toplevel
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  overrides = bench.SMOKE_OVERRIDES if smoke else {}
  batch = 4 if smoke else 32
  config = bench.make_config(bench.Case(model, batch, "float32"), overrides)
  if what == "train":
    steps, state, data, _ = bench.train_program(config, max(512, 2 * batch))
    compiled = perf.jit(steps, donate_argnums=(0,)).lower(state, data,
                                                          jax.random.key(1)).compile()
    holder = [state]

    def call():
      holder[0], metrics = compiled(holder[0], data, jax.random.key(1))
      jax.block_until_ready(metrics)
  else:
    call = bench.inference_call(config, batch, steps=10)  # Waits for its output.
  call()
  rows = []
  for _ in range(calls):
    if churn_mb:
      churn(churn_mb)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    call()
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    rows.append({"s": round(t1 - t0, 4), "minor_faults": r1.ru_minflt - r0.ru_minflt,
                 "sys_s": round(r1.ru_stime - r0.ru_stime, 3)})
  return {"model": model, "what": what, "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
          "calls": rows, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before any process is started.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags; `models`, `what` and `settings` as lists.
  Raises:
    SystemExit: (status 2, one `error:` line) an unknown model, program or malloc setting, a
      count below 1, a negative --churn_mb.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="cvae,discvae")
  p.add_argument("--what", default="train,infer", help="Comma list: train, infer.")
  p.add_argument("--rounds", type=int, default=2, help="Alternated rounds of both settings.")
  p.add_argument("--calls", type=int, default=5, help="Timed calls per process.")
  p.add_argument("--settings", default="huge,plain",
                 help=f"Comma list of malloc settings: {', '.join(SETTINGS)}.")
  p.add_argument("--churn_mb", type=int, default=0,
                 help="Before each timed call another process touches this much memory.")
  p.add_argument("--smoke", action="store_true", help="Tiny model (32x32, width 1/16, batch 4).")
  p.add_argument("--xla_cpu_flags", default="recommended", help=bench.XLA_CPU_FLAGS_HELP)
  p.add_argument("--child", default="", help=argparse.SUPPRESS)  # "model,what"
  args = p.parse_args(argv)
  p.check_at_least(args, {"rounds": 1, "calls": 1, "churn_mb": 0})
  args.models = p.comma_list("--models", args.models, bench.MODELS)
  args.what = p.comma_list("--what", args.what, WHATS)
  args.settings = p.comma_list("--settings", args.settings, tuple(SETTINGS))
  return args


def main(argv=None) -> int:
  """Runs each (round, setting, model, what) in a fresh process and prints the figures (see the
  module docstring).

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The exit status: 0, or 1 where a measuring process failed.
  Raises:
    SystemExit: (status 2, one `error:` line) a flag value that cannot be measured.
  """
  args = parse_args(argv)
  if args.child:
    model, what = args.child.split(",")
    print(json.dumps(measure(model, what, args.calls, args.smoke, args.churn_mb)), flush=True)
    return 0
  settings = args.settings
  bench.set_xla_cpu_flags(args.xla_cpu_flags)  # In os.environ: the children start with them.
  results = []
  for r in range(args.rounds):
    for name in (settings if r % 2 == 0 else settings[::-1]):
      env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
      env["A2I_HUGE_PAGES"] = "0"  # Only the tunable set here, never the re-execution.
      if SETTINGS[name]:
        env["GLIBC_TUNABLES"] = SETTINGS[name]
      for model in args.models:
        for what in args.what:
          cmd = [sys.executable, os.path.abspath(__file__), f"--child={model},{what}",
                 f"--calls={args.calls}", f"--churn_mb={args.churn_mb}"] + (
                     ["--smoke"] if args.smoke else [])
          out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
          if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            print(f"error: the {model} {what} process ({name}) failed; its output is above.",
                  file=sys.stderr)
            return 1
          row = dict(json.loads(out.stdout.strip().splitlines()[-1]), setting=name, round=r)
          print(json.dumps(row), flush=True)
          results.append(row)
  print("\n| model | what | setting | s per call (median) | minor faults | sys s | peak RSS MB |\n"
        "|---|---|---|---|---|---|---|")
  for model in args.models:
    for what in args.what:
      for name in settings:
        sel = [r for r in results if (r["model"], r["what"], r["setting"]) == (model, what, name)]
        calls = [c for r in sel for c in r["calls"]]
        print(f"| {model} | {what} | {name} | {statistics.median(c['s'] for c in calls):.3f} | "
              f"{statistics.median(c['minor_faults'] for c in calls):.0f} | "
              f"{statistics.median(c['sys_s'] for c in calls):.3f} | "
              f"{max(r['max_rss_mb'] for r in sel)} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
