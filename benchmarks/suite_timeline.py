"""The test suite's timeline: a pytest plugin that writes each test's start and end per xdist
worker, and a summary of how far apart the workers ended (BENCHMARKS.md, "The test suite's wall
time": the scheduling table).

  rm -rf /tmp/suite_timeline
  A2I_TIMELINE_DIR=/tmp/suite_timeline PYTHONPATH=benchmarks \
      python -m pytest -n 2 -q -p suite_timeline
  python benchmarks/suite_timeline.py /tmp/suite_timeline

Without A2I_TIMELINE_DIR the files go to a2i_suite_timeline in the temporary folder. Each file's
first row names its worker's process ("pid"), for `compile_log_summary.py --timeline`. The
summary prints, per worker, its test count, the seconds it spent in tests and its last three
tests with their durations; then the gap between the workers' last ends (the time one worker sat
idle at the end) and the span from the first start to the last end.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import time

_DIR_VARIABLE = "A2I_TIMELINE_DIR"
_out = None


def pytest_runtest_logstart(nodeid, location):  # pylint: disable=unused-argument
  """Plugin hook: the test's start, in this worker's file."""
  global _out
  worker = os.environ.get("PYTEST_XDIST_WORKER")
  if worker is None:  # The controller (or a run without -n) reports too; workers only.
    return
  if _out is None:
    folder = os.environ.get(_DIR_VARIABLE) or os.path.join(tempfile.gettempdir(),
                                                           "a2i_suite_timeline")
    os.makedirs(folder, exist_ok=True)
    _out = open(os.path.join(folder, f"{worker}.tsv"), "a", buffering=1,  # pylint: disable=consider-using-with
                encoding="utf-8")
    _out.write(f"pid\t{os.getpid()}\t\n")  # For compile_log_summary.py --timeline.
  _out.write(f"start\t{time.time():.3f}\t{nodeid}\n")


def pytest_runtest_logfinish(nodeid, location):  # pylint: disable=unused-argument
  """Plugin hook: the test's end."""
  if _out is not None:
    _out.write(f"end\t{time.time():.3f}\t{nodeid}\n")


def summarize(folder: str) -> str:
  """The summary of the timeline files in `folder` (see the module docstring)."""
  files = sorted(glob.glob(os.path.join(folder, "*.tsv")))
  if len(files) < 2:
    raise SystemExit(f"error: {folder} holds {len(files)} worker timeline(s); run pytest with "
                     f"-n 2 or more and {_DIR_VARIABLE}={folder} first (see --help).")
  lines, ends, first = [], {}, None
  for path in files:
    starts, finished = {}, []
    with open(path, encoding="utf-8", errors="replace") as f:
      for number, row in enumerate(f, 1):
        fields = row.rstrip("\n").split("\t", 2)
        try:  # Was: a ValueError's traceback for a row cut short (a worker killed mid-write).
          kind, when, nodeid = fields
          when = float(when) if kind != "pid" else 0.0
        except ValueError:
          raise SystemExit(f"error: {path}, line {number}, is not a timeline row "
                           f"(kind, time, test; {row.strip()[:60]!r}); the file is damaged: "
                           "run the suite again into an empty folder.") from None
        if kind == "start":
          starts[nodeid] = when
        elif nodeid in starts:
          finished.append((when, nodeid))
    if not finished:
      raise SystemExit(f"error: {path} records no finished test; was the run interrupted?")
    worker = os.path.splitext(os.path.basename(path))[0]
    ends[worker] = max(t for t, _ in finished)
    first = min(starts.values()) if first is None else min(first, min(starts.values()))
    busy = sum(t - starts[n] for t, n in finished)
    last = ", ".join(f"{n.split('::')[-1][:50]} {t - starts[n]:.1f} s"
                     for t, n in sorted(finished)[-3:])
    lines.append(f"{worker}: {len(finished)} tests, {busy:.1f} s in tests; last: {last}")
  lines.append(f"workers' ends apart: {max(ends.values()) - min(ends.values()):.1f} s; "
               f"span {max(ends.values()) - first:.1f} s")
  return "\n".join(lines)


if __name__ == "__main__":
  if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
    print(__doc__)
    sys.exit(0 if sys.argv[1:] in (["-h"], ["--help"]) else 2)
  print(summarize(sys.argv[1]))
