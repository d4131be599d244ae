"""Transparent huge pages for malloc's large blocks, for the command-line entry points.

XLA:CPU allocates a program's temporary buffer afresh at every call (837 MB for the paper
CVAE's train step at batch 32) and glibc serves a block that large with a new `mmap`, returned
with `munmap` after the call. Every call then faults its temporaries in 4 KiB at a time: about
230,000 page faults and 0.4-0.8 s of kernel time per train step on a 2-core VM, a sixth of the
step (BENCHMARKS.md, "Page faults: the temporaries of every call"). glibc's tunable
`glibc.malloc.hugetlb=1` (glibc 2.35 and later) has malloc advise the kernel to back such
blocks with 2 MiB transparent huge pages: 20-100x fewer faults, the same memory.

glibc reads its tunables once, when a process starts, so `reexec_with_huge_pages` (called
first thing by train.py and infer.py, before anything else is imported) re-executes the same
command with the tunable added to GLIBC_TUNABLES, where it would help:
* Linux with glibc >= 2.35;
* the kernel's transparent huge pages in "madvise" mode (in "always" mode every large block
  already gets them; in "never" mode the tunable does nothing);
* GLIBC_TUNABLES does not set `glibc.malloc.hugetlb` already (the user's choice stands, and
  the re-executed process does not re-execute again);
* A2I_HUGE_PAGES is not "0" (the opt-out; "false", "no" and "off" too).

The process keeps its PID, arguments and environment otherwise; the new one also carries
A2I_HUGE_PAGES=0, and processes it starts inherit both. A notebook cannot take it this
way: start Jupyter with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` in its environment instead.
This module imports nothing but the standard library, so that nothing has started threads or
allocated much before the re-execution.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Mapping, Optional

OPT_OUT_ENV = "A2I_HUGE_PAGES"  # "0" (or false, no, off): never re-execute.
TUNABLE = "glibc.malloc.hugetlb"
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> Optional[tuple[int, int]]:
  """The C library's version, when it is glibc.

  Returns:
    (major, minor), e.g. (2, 36); None for another C library or where it cannot be told.
  """
  try:
    name = os.confstr("CS_GNU_LIBC_VERSION") or ""
  except (AttributeError, ValueError, OSError):
    return None
  parts = name.split()
  if len(parts) != 2 or parts[0] != "glibc":
    return None
  try:
    major, minor = (int(p) for p in parts[1].split(".")[:2])
  except ValueError:
    return None
  return major, minor


def thp_mode(path: str = _THP_MODE_FILE) -> Optional[str]:
  """The kernel's transparent-huge-page mode.

  Args:
    path: the file that names it, the one in brackets ("always [madvise] never").
  Returns:
    "always", "madvise" or "never"; None where the file cannot be read or names none.
  """
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def tunables_with_huge_pages(platform: str, env: Mapping[str, str],
                             glibc: Optional[tuple[int, int]],
                             thp: Optional[str]) -> Optional[str]:
  """The GLIBC_TUNABLES value to re-execute with, or None where re-executing would not help.

  Args:
    platform: `sys.platform`.
    env: the process's environment.
    glibc: `glibc_version()`.
    thp: `thp_mode()`.
  Returns:
    The current GLIBC_TUNABLES with `glibc.malloc.hugetlb=1` appended, or None.
  """
  current = env.get("GLIBC_TUNABLES", "")
  # The usual words for "no" opt out too (was "0" alone: "false" re-executed; review finding).
  opted_out = env.get(OPT_OUT_ENV, "").strip().lower() in ("0", "false", "no", "off")
  if (platform != "linux" or opted_out or glibc is None
      or glibc < (2, 35) or thp != "madvise"
      or any(t.split("=", 1)[0] == TUNABLE for t in current.split(":"))):
    return None
  return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def reexec_with_huge_pages() -> None:
  """Re-executes this process's command with `glibc.malloc.hugetlb=1` where it would help.

  Where `tunables_with_huge_pages` says it would not, or the re-execution itself fails, it
  returns and the process carries on as it is. Call it before anything else runs: the
  command starts over, with the same interpreter, arguments and PID.

  Returns:
    None, and only where the process was not re-executed.
  """
  value = tunables_with_huge_pages(sys.platform, os.environ, glibc_version(), thp_mode())
  argv = list(getattr(sys, "orig_argv", None) or [])
  # Not without the command line, nor for a script read from stdin (already consumed), nor
  # for a script another program runs (IPython's %run, a Jupyter kernel: its command line
  # would start that program over, losing its session).
  if (value is None or len(argv) < 2 or "-" in argv[1:] or not sys.executable
      or not runs_this_script(argv, sys.argv)):
    return
  # A2I_HUGE_PAGES=0 too: whatever a launcher does to GLIBC_TUNABLES, no second round.
  env = dict(os.environ, GLIBC_TUNABLES=value, **{OPT_OUT_ENV: "0"})
  try:
    for stream in (sys.stdout, sys.stderr):
      if stream is not None:
        stream.flush()
    os.execve(sys.executable, [sys.executable] + argv[1:], env)
  except (OSError, ValueError):
    return


def runs_this_script(orig_argv: list[str], argv: list[str]) -> bool:
  """Whether the interpreter's command line (`sys.orig_argv`) runs the script `sys.argv`
  names, as `python [options] script args` or `python [options] -m module args`.

  Args:
    orig_argv: the interpreter's own arguments, `sys.orig_argv`.
    argv: the script's, `sys.argv` (its path, then its arguments).
  Returns:
    False for a script run by another program (IPython's %run, a notebook kernel), whose
    command line is that program's, or by a module (`python -m pdb train.py`: started over,
    the debugger lost its breakpoints and stopped at the first line again; fault hunt).
  """
  if not argv:
    return False
  args, tail = list(orig_argv[1:]), list(argv[1:])
  if len(args) <= len(tail) or (tail and args[len(args) - len(tail):] != tail):
    return False
  head = args[:len(args) - len(tail)]
  script = os.path.splitext(os.path.basename(argv[0]))[0]
  # -m alone, at the end of a cluster of flags (-um), or with its module attached (-mtrain).
  attached = re.fullmatch(_MODULE_OPTION, head[-1])
  if attached and attached.group(1):
    return attached.group(1).split(".")[-1] == script
  if len(head) >= 2 and re.fullmatch(_MODULE_OPTION, head[-2]):
    return head[-1].split(".")[-1] == script
  if any(re.fullmatch(_MODULE_OPTION, a) for a in head[:-1]):  # pdb, cProfile, trace: theirs.
    return False
  return os.path.realpath(head[-1]) == os.path.realpath(argv[0])


# Python's -m option, alone or after options that take no value (-u, -B, ...), perhaps with
# the module's name attached.
_MODULE_OPTION = r"-[bBdEiIOPqsSuvVR]*m(.*)"
