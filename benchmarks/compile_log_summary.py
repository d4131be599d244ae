"""Sums the logs `benchmarks/compile_log/sitecustomize.py` wrote: XLA compile seconds by
program, split into persistent-cache misses and hits, and how much of the misses repeated a
cache key already compiled earlier in the run; tracing and lowering seconds; per process.

  python benchmarks/compile_log_summary.py /tmp/log [--top=25]

"Finished XLA compilation" is logged for cache hits too (then it is the time to read and load
the cached program); each is matched with the hit or miss line before it in its process.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys

_CACHE = re.compile(r"(Persistent compilation cache hit|PERSISTENT COMPILATION CACHE MISS) "
                    r"for '[^']*' with key '([^']*)'")
_COMPILED = re.compile(r"Finished XLA compilation of (.*) in ([0-9.]+) sec")
_TRACED = re.compile(r"Finished tracing .* in ([0-9.]+) sec")
_LOWERED = re.compile(r"Finished jaxpr to MLIR module conversion .* in ([0-9.]+) sec")


def read(folder: str) -> tuple[list[tuple], dict]:
  """(time, pid, program, key, hit, seconds) per compile, and {pid: [trace_s, lower_s]}."""
  rows, per_process = [], collections.defaultdict(lambda: [0.0, 0.0])
  for path in glob.glob(os.path.join(folder, "*.log")):
    pid = os.path.basename(path)[:-4]
    key = hit = None
    with open(path, errors="replace") as f:
      for line in f:
        if m := _CACHE.search(line):
          key, hit = m.group(2), m.group(1).startswith("Persistent")
        elif m := _COMPILED.search(line):
          rows.append((float(line.split()[0]), pid, m.group(1), key, bool(hit),
                       float(m.group(2))))
          key = hit = None
        elif m := _TRACED.search(line):
          per_process[pid][0] += float(m.group(1))
        elif m := _LOWERED.search(line):
          per_process[pid][1] += float(m.group(1))
  rows.sort()
  return rows, per_process


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("folder")
  p.add_argument("--top", type=int, default=25)
  args = p.parse_args(argv)
  rows, per_process = read(args.folder)
  if not rows:
    print(f"error: no compile lines in {args.folder}/*.log; was the suite run with "
          "A2I_JAXLOG_DIR and PYTHONPATH=benchmarks/compile_log?", file=sys.stderr)
    sys.exit(1)
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
  print(f"{len(per_process)} processes, {len(rows)} compiles: XLA {sum(r[5] for r in rows):.1f} s "
        f"({misses:.1f} s of misses), tracing {sum(v[0] for v in per_process.values()):.1f} s, "
        f"lowering {sum(v[1] for v in per_process.values()):.1f} s")
  print(f"{'program':40s} {'misses':>6s} {'miss s':>7s} {'hits':>5s} {'hit s':>6s} "
        f"{'repeat s':>8s}")
  for program, e in sorted(by_program.items(), key=lambda kv: -kv[1][1] - kv[1][3])[:args.top]:
    print(f"{program[:40]:40s} {e[0]:6d} {e[1]:7.1f} {e[2]:5d} {e[3]:6.1f} {e[4]:8.1f}")


if __name__ == "__main__":
  main()
