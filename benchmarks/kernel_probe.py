"""What the kernel probe costs a first start: `perf.time_convolution_kernels` in a fresh child,
as `perf.convolution_kernel_timing` runs it on a fresh cache, with the library's rounds (they
stop once the choice is settled) against all of them, alternated; prints one JSON line per
child, then the medians.

  python benchmarks/kernel_probe.py --repeats=3
  python benchmarks/kernel_probe.py --repeats=1 --phases  # and one child timed in phases

`--phases` times one more child in its parts: the imports, lowering, compiling and warming up
the programs (`perf.convolution_kernel_programs`), and each of five timed rounds, so that what
is left of the probe's seconds can be seen. The children run as the library's does: XLA's
defaults (no XLA_FLAGS), the CPU backend, this checkout's a2i_jax.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import timing  # benchmarks/timing.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = ("import json; from a2i_jax import perf; perf.KERNEL_PROBE_MIN_ROUNDS = {min_rounds}; "
          "print(json.dumps(perf.time_convolution_kernels()))")

_PHASES = """
import json, time
t0 = time.perf_counter()
import jax
from a2i_jax import perf
t1 = time.perf_counter()
programs = perf.convolution_kernel_programs()
t2 = time.perf_counter()
rounds = []
for _ in range(5):
  spent = dict.fromkeys(programs, 0.0)
  for i in range(len(programs["xla_ms"])):
    for key, calls in programs.items():
      compiled, x, w = calls[i]
      start = time.perf_counter()
      jax.block_until_ready(compiled(x, w))
      spent[key] += time.perf_counter() - start
  rounds.append({k: round(1e3 * v, 1) for k, v in spent.items()})
t3 = time.perf_counter()
print(json.dumps({"imports_s": round(t1 - t0, 2), "programs_s": round(t2 - t1, 2),
                  "rounds_s": round(t3 - t2, 2), "programs": 2 * len(programs["xla_ms"]),
                  "rounds": rounds}))
"""


def _child(code: str) -> tuple[float, dict]:
  """Runs `code` in a child as the library's probe runs; its wall time and last JSON line."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "ONEDNN_MAX_CPU_ISA")}
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
  start = time.perf_counter()
  done = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True,
                        text=True, check=True)
  return time.perf_counter() - start, json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before any child starts.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags.
  Raises:
    SystemExit: (status 2, one `error:` line) --repeats below 1 (was: a StatisticsError).
  """
  p = timing.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  p.add_argument("--repeats", type=int, default=3, help="Children of each setting (1 or more).")
  p.add_argument("--phases", action="store_true", help="Also one child timed in phases.")
  args = p.parse_args(argv)
  p.check_at_least(args, {"repeats": 1})
  return args


def main(argv=None) -> None:
  """Times the probe in children (see the module docstring); prints JSON lines and medians.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be measured, as one `error:` line.
  """
  args = parse_args(argv)
  settings = {"settled": "perf.KERNEL_PROBE_MIN_ROUNDS", "all_rounds": 99}
  walls: dict[str, list[float]] = {name: [] for name in settings}
  for _ in range(args.repeats):
    for name, min_rounds in settings.items():  # Alternated: both see the same machine.
      wall, probe = _child(_PROBE.format(min_rounds=min_rounds))  # Not `timing`: the module.
      walls[name].append(wall)
      print(json.dumps({"setting": name, "child_s": round(wall, 2), **probe}), flush=True)
  if args.phases:
    wall, phases = _child(_PHASES)
    print(json.dumps({"setting": "phases", "child_s": round(wall, 2), **phases}), flush=True)
  for name, seconds in walls.items():
    print(f"{name}: median {statistics.median(seconds):.2f} s over {len(seconds)} children")


if __name__ == "__main__":
  main()
