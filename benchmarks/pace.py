"""The machine's pace now: how much fixed single-threaded work one CPU-second does.

On the shared 2-core VM the same work costs up to 45 % more CPU-seconds from one hour to the
next (BENCHMARKS.md, "The suite's CPU per test file, and one hour's pace against another"),
more than most changes a benchmark or the test suite's wall time is asked to show. This
prints two figures to quote beside such a timing, so that a slower run can be told from a
slower machine:

- `python_per_cpu_s`: rounds of a pure-Python loop (200,000 additions) per CPU-second, the
  kind of work tracing, lowering and the tests' own code do;
- `matmul_per_cpu_s`: 400x400 float32 matrix products per CPU-second on one thread (NumPy;
  `OPENBLAS_NUM_THREADS` and its kin are set to 1 before NumPy loads), the kind of work
  compiled kernels do.

Each runs for `--seconds` of wall time; the figure is rounds over the process's CPU time,
so another process on the same core lowers it only through what the two share (caches,
memory bandwidth, the host's clock), which is what moves the suite's figures. `.ci/run`
prints it before each pin set's tests. The Python figure is the interpreter's too (this
machine's Python 3.13 runs the loop about a third slower than its 3.11): compare lines of one
Python version only.

Usage: python benchmarks/pace.py [--seconds=2]  (one JSON line)
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402  (benchmarks/timing.py)


def parse_args(argv=None):
  """The command line of `main`.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags.
  Raises:
    SystemExit: (status 2, one `error:` line) a time that is not a positive number.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--seconds", type=float, default=2.0,
                 help="Wall time per figure (default 2).")
  args = p.parse_args(argv)
  if not 0 < args.seconds < float("inf"):
    p.error(f"--seconds={args.seconds} must be a positive number of seconds, e.g. 2.")
  return args


def _per_cpu_second(work, seconds: float) -> float:
  """Rounds of `work()` per CPU-second of this process, over `seconds` of wall time."""
  work()  # Warm: the first round pays for what is loaded or allocated once.
  rounds, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - wall0 < seconds:
    work()
    rounds += 1
  return rounds / max(time.process_time() - cpu0, 1e-9)


def _python_round() -> int:
  total = 0
  for i in range(200_000):
    total += i
  return total


def main(argv=None) -> None:
  """Prints the two figures (see the module docstring) as one JSON line.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a bad flag, as one `error:` line.
  """
  args = parse_args(argv)
  import numpy as np  # pylint: disable=import-outside-toplevel

  a = np.random.default_rng(0).random((400, 400), np.float32)
  print(json.dumps({
      "python_per_cpu_s": round(_per_cpu_second(_python_round, args.seconds), 1),
      "matmul_per_cpu_s": round(_per_cpu_second(lambda: a @ a, args.seconds), 1),
      "seconds": args.seconds,
      "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}))


if __name__ == "__main__":
  # One thread for NumPy's BLAS, before NumPy loads: a figure per CPU-second of one thread.
  # Here, not at import: a process that imports this module (the tests) keeps its settings,
  # and so do the processes it starts.
  for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"
  main()
