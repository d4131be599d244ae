"""The first `infer_latents` call's wall time, with inference's programs compiled three ways,
the ways alternated in one process; prints JSON lines, then the medians.

  python benchmarks/first_call.py --models=discvae,cvae --rounds=6
  python benchmarks/first_call.py --smoke     # tiny models, two rounds: checks the script

The ways (`--ways`, a comma list; `bench.set_compile_way`):
* default: the library's. `compile_ahead` compiles the three programs side by side in threads,
  and the call waits for each only before its first use, so `init` and the first steps run
  while the later ones still compile.
* wait_all: side by side, but all three waited for before `init` runs (2026-12-02's
  eighteenth session).
* in_turn: each compiled when the call reaches it (before then).

Each call gets new programs (`make_inference_fns` afresh) and a batch size no call before it
had (`--images` + the round), so every call traces, lowers and compiles its three programs;
within a round every way sees the same batch size, in an order that rotates from round to
round. The persistent compilation cache is off. Each call is followed by a second one on the
same programs: `first - later` is what the call lost to its programs.

In one process the tracing of the model's parts is warm after the first call, so the figures
are lower than a fresh process's first call (`compile_profile.py`, which measures that, one
process per figure, with more noise). The way the calls are compared here, in pairs of
the same batch size a few seconds apart, is what makes a few per cent visible on a shared
machine.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)
import timing  # noqa: E402  (benchmarks/timing.py)


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before anything is compiled.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags; `models` and `ways` as lists.
  Raises:
    SystemExit: (status 2, one `error:` line) an unknown model or way, a count below 1.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--models", default="discvae,cvae")
  p.add_argument("--ways", default=",".join(bench.COMPILE_WAYS),
                 help=f"Comma list: {', '.join(bench.COMPILE_WAYS)}.")
  p.add_argument("--rounds", type=int, default=6)
  p.add_argument("--images", type=int, default=28, help="The first round's batch size.")
  p.add_argument("--steps", type=int, default=5, help="Inference steps per call.")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--xla_cpu_flags", default="recommended", help=bench.XLA_CPU_FLAGS_HELP)
  args = p.parse_args(argv)
  p.check_at_least(args, {"rounds": 1, "images": 1, "steps": 1})
  args.models = p.comma_list("--models", args.models, bench.MODELS)
  # Was checked after jax's import, with exit status 1.
  args.ways = p.comma_list("--ways", args.ways, bench.COMPILE_WAYS)
  return args


def main(argv=None) -> None:
  """Times the first inference calls, the ways alternated (see the module docstring).

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be measured, as one `error:` line.
  """
  args = parse_args(argv)
  bench.set_xla_cpu_flags(args.xla_cpu_flags)
  timing.compilation_cache_off()
  ways = args.ways
  rounds, images, overrides = args.rounds, args.images, {}
  if args.smoke:
    rounds, images, overrides = 2, 4, bench.SMOKE_OVERRIDES
  for model in args.models:
    config = bench.make_config(bench.Case(model, 32, "float32"), overrides)
    warm = bench.inference_call(config, 2, steps=args.steps)
    warm()  # The model's variables, and the first trace of its parts, before any timing.
    seconds = {w: [] for w in ways}
    for r in range(rounds):
      for way in ways[r % len(ways):] + ways[:r % len(ways)]:
        call = bench.inference_call(config, images + r, variables=warm.variables,
                                    steps=args.steps)
        bench.set_compile_way(call.fns, way)
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        call()
        t2 = time.perf_counter()
        seconds[way].append((t1 - t0, t2 - t1))
        print(json.dumps({"model": model, "round": r, "images": images + r, "way": way,
                          "first_s": round(t1 - t0, 3), "later_s": round(t2 - t1, 3)}),
              flush=True)
    for way in ways:
      first = [a for a, _ in seconds[way]]
      row = {"model": model, "way": way, "first_s_median": round(statistics.median(first), 3),
             "lost_s_median": round(statistics.median(a - b for a, b in seconds[way]), 3)}
      if way != ways[-1]:  # Each way against the last, pair by pair (same batch, same round).
        row[f"first_over_{ways[-1]}_median"] = round(statistics.median(
            a[0] / b[0] for a, b in zip(seconds[way], seconds[ways[-1]])), 3)
      print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
