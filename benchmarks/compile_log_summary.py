"""Sums the logs `benchmarks/compile_log/sitecustomize.py` wrote: XLA compile seconds by
program, split into persistent-cache misses and hits, and how much of the misses repeated a
cache key already compiled earlier in the run; tracing and lowering seconds; per process.

  python benchmarks/compile_log_summary.py /tmp/log [--top=25]

"Finished XLA compilation" is logged for cache hits too (then it is the time to read and load
the cached program); each is matched with the hit or miss line before it in its process.

With `--timeline=DIR` (the folder `benchmarks/suite_timeline.py` wrote in the same run, both
plugins on):

  A2I_TIMELINE_DIR=/tmp/t A2I_JAXLOG_DIR=/tmp/log \
      PYTHONPATH=$PWD/benchmarks/compile_log:$PWD/benchmarks python -m pytest -n 2 -q \
      -p suite_timeline
  python benchmarks/compile_log_summary.py /tmp/log --timeline=/tmp/t

it also prints those seconds per test file: each xdist worker's own, and those of the
processes it started (train.py, infer.py, drivers, notebook kernels: a process belongs to the
worker its parent chain leads to), each second given to the test the worker was running when
the log line was written. The paths must be absolute for processes that start in another
folder (the notebook test's kernel starts in a temporary folder).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402  (benchmarks/timing.py)

_CACHE = re.compile(r"(Persistent compilation cache hit|PERSISTENT COMPILATION CACHE MISS) "
                    r"for '[^']*' with key '([^']*)'")
_COMPILED = re.compile(r"Finished XLA compilation of (.*) in ([0-9.]+) sec")
_TRACED = re.compile(r"Finished tracing .* in ([0-9.]+) sec")
_LOWERED = re.compile(r"Finished jaxpr to MLIR module conversion .* in ([0-9.]+) sec")


_PPID = re.compile(r"^# ppid (\d+)")


class Logs:
  """The logs in a folder, read once.

  Attributes:
    compiles: (time, pid, program, key, hit, seconds) per XLA compile, in time order.
    passes: {pid: [(time, "trace" or "lower", seconds)]}.
    parents: {pid: parent pid} (the first line `sitecustomize.py` writes).
  """

  def __init__(self, folder: str):
    self.compiles, self.passes, self.parents = [], collections.defaultdict(list), {}
    for path in glob.glob(os.path.join(folder, "*.log")):
      pid = os.path.basename(path)[:-4]
      key = hit = None
      with open(path, errors="replace") as f:
        for line in f:
          if m := _PPID.match(line):
            self.parents[pid] = m.group(1)
          elif m := _CACHE.search(line):
            key, hit = m.group(2), m.group(1).startswith("Persistent")
          elif m := _COMPILED.search(line):
            self.compiles.append((float(line.split()[0]), pid, m.group(1), key, bool(hit),
                                  float(m.group(2))))
            key = hit = None
          elif m := _TRACED.search(line):
            self.passes[pid].append((float(line.split()[0]), "trace", float(m.group(1))))
          elif m := _LOWERED.search(line):
            self.passes[pid].append((float(line.split()[0]), "lower", float(m.group(1))))
    self.compiles.sort()

  def seconds(self, kind: str) -> float:
    """Tracing ("trace") or lowering ("lower") seconds over every process."""
    return sum(s for p in self.passes.values() for _, k, s in p if k == kind)

  def events(self) -> dict:
    """{pid: [(time, kind, seconds)]}: kind "miss" or "hit" (XLA compiles), "trace", "lower"."""
    out = collections.defaultdict(list, {pid: list(p) for pid, p in self.passes.items()})
    for t, pid, _, _, hit, seconds in self.compiles:
      out[pid].append((t, "hit" if hit else "miss", seconds))
    return out


def by_test_file(logs: Logs, timeline: str) -> dict:
  """{test file: {"worker"|"started": {kind: seconds}}}: `logs.events()` given to the test its
  xdist worker was running (the timeline's "pid" rows name each worker's process). A line
  written up to 1 s after a test's end still counts for it."""
  workers, tests = {}, {}
  for path in glob.glob(os.path.join(timeline, "*.tsv")):
    starts, spans = {}, []
    with open(path, encoding="utf-8") as f:
      for row in f:
        kind, value, nodeid = row.rstrip("\n").split("\t", 2)
        if kind == "pid":
          workers[value] = path
        elif kind == "start":
          starts[nodeid] = float(value)
        elif nodeid in starts:
          spans.append((starts[nodeid], float(value), nodeid.split("::")[0]))
    tests[path] = sorted(spans)
  if not workers:
    raise SystemExit(f"error: {timeline} has no worker pids; was it written by this version of "
                     "benchmarks/suite_timeline.py, in the same run as the logs?")
  events, parents = logs.events(), logs.parents
  out = collections.defaultdict(lambda: {"worker": collections.Counter(),
                                         "started": collections.Counter()})
  for pid, rows in events.items():
    worker, seen = pid, set()
    while worker not in workers and worker in parents and worker not in seen:
      seen.add(worker)
      worker = parents[worker]
    if worker not in workers:
      continue  # The controller, or a process no worker started.
    spans = tests[workers[worker]]
    starts = [a for a, _, _ in spans]
    for t, kind, seconds in rows:
      i = bisect.bisect_right(starts, t) - 1
      name = spans[i][2] if i >= 0 and t <= spans[i][1] + 1.0 else "(between tests)"
      out[name]["worker" if pid == worker else "started"][kind] += seconds
  return out


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before any log is read.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags.
  Raises:
    SystemExit: (status 2, one `error:` line) a folder that does not exist, --top below 1.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("folder")
  p.add_argument("--top", type=int, default=25)
  p.add_argument("--timeline", default="",
                 help="suite_timeline.py's folder of the same run: also per test file.")
  args = p.parse_args(argv)
  p.check_at_least(args, {"top": 1})
  timeline = [("--timeline", args.timeline)] if args.timeline else []
  for flag, folder in [("the log folder", args.folder), *timeline]:
    if not os.path.isdir(folder):
      p.error(f"{flag} {folder} is not a folder; give the folder the run wrote "
              "(A2I_JAXLOG_DIR for the logs, A2I_TIMELINE_DIR for --timeline).")
  return args


def main(argv=None) -> None:
  """Prints the compile, tracing and lowering seconds of the logs (see the module docstring).

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: (status 2, one `error:` line) a folder that does not exist or holds no compile
      lines, --top below 1.
  """
  args = parse_args(argv)
  logs = Logs(args.folder)
  rows = logs.compiles
  if not rows:
    print(f"error: no compile lines in {args.folder}/*.log; was the suite run with "
          "A2I_JAXLOG_DIR and PYTHONPATH=benchmarks/compile_log?", file=sys.stderr)
    sys.exit(2)
  by_program = collections.defaultdict(lambda: [0, 0.0, 0, 0.0, 0.0])
  seen = set()
  for _, _, program, key, hit, seconds in rows:
    entry = by_program[program]
    if hit:
      entry[2] += 1
      entry[3] += seconds
    else:
      entry[0] += 1
      entry[1] += seconds
      if key in seen:
        entry[4] += seconds
    if key:
      seen.add(key)
  misses = sum(r[5] for r in rows if not r[4])
  print(f"{len(logs.passes)} processes, {len(rows)} compiles: XLA {sum(r[5] for r in rows):.1f} s "
        f"({misses:.1f} s of misses), tracing {logs.seconds('trace'):.1f} s, "
        f"lowering {logs.seconds('lower'):.1f} s")
  print(f"{'program':40s} {'misses':>6s} {'miss s':>7s} {'hits':>5s} {'hit s':>6s} "
        f"{'repeat s':>8s}")
  for program, e in sorted(by_program.items(), key=lambda kv: -kv[1][1] - kv[1][3])[:args.top]:
    print(f"{program[:40]:40s} {e[0]:6d} {e[1]:7.1f} {e[2]:5d} {e[3]:6.1f} {e[4]:8.1f}")
  if args.timeline:
    kinds = ("miss", "hit", "trace", "lower")
    print("\nseconds per test file: in the xdist worker | in the processes it started")
    print(f"{'test file':36s} {'all':>6s} " + " ".join(f"{k:>6s}" for k in kinds) + " | "
          + " ".join(f"{k:>6s}" for k in kinds))
    files = by_test_file(logs, args.timeline)
    for name, c in sorted(files.items(), key=lambda kv: -sum(map(sum, (
        kv[1]["worker"].values(), kv[1]["started"].values())))):
      total = sum(c["worker"].values()) + sum(c["started"].values())
      print(f"{name[-36:]:36s} {total:6.1f} " + " ".join(f"{c['worker'][k]:6.1f}" for k in kinds)
            + " | " + " ".join(f"{c['started'][k]:6.1f}" for k in kinds))


if __name__ == "__main__":
  main()
