"""Wall-clock timing shared by the benchmark scripts (PyTorch and JAX alike).

Turn-taking (`A2I_BENCH_TURNS`): two benchmark processes started side by side (as
`benchmarks/compare_cpu.sh` starts the JAX and PyTorch ones) take strict turns, so that their
timed calls alternate one by one and each pair of calls sees the same machine. On a shared VM
whose speed drifts by a quarter over minutes, timing one side's calls and then the other's
compares two different machines. Each process holds its turn from `start_turns` on, runs all
its other work (compiling, warm-ups) inside it, and passes the turn after each timed
call (`timed_calls`); a process that exits leaves the other to run alone. It is an option of
compare_cpu.sh (INTERLEAVE=1), not its default: on the 2-core VM a call right after the
other process's ran slower than in a row, JAX's train steps by a fifth to a half, more than
the port's (BENCHMARKS.md, "Page faults: the temporaries of every call"), so alternating call
by call is not neutral either.

The waiting process blocks in a read of a named pipe: it takes no CPU time while the other
runs. (A first version polled a file every 2 ms; on two cores those wake-ups preempted the
other process's worker threads, and JAX's parallel kernels, which wait for all their threads,
ran slower still while the port was waiting.)
"""

import argparse
import atexit
import os
import statistics
import sys
import time
from typing import NoReturn, Optional


def refuse(message: str) -> NoReturn:
  """The scripts' refusal of a command line: `error: <message>` as one line on stderr (the
  message's line breaks joined), exit status 2 (as argparse's).

  Args:
    message: what is wrong and how to fix it.
  Raises:
    SystemExit: always (status 2).
  """
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
  """argparse's parser whose refusals are the scripts' one `error:` line on stderr (exit
  status 2, as argparse's), without argparse's usage lines before it."""

  def error(self, message: str) -> NoReturn:
    """Prints `error: <message>` on stderr and exits with status 2 (`refuse`).

    Args:
      message: what is wrong and how to fix it.
    Raises:
      SystemExit: always (status 2).
    """
    refuse(message)

  def check_at_least(self, args: argparse.Namespace, minimums: dict[str, int]) -> None:
    """Refuses (`error`) an integer flag of `args` below its minimum.

    Args:
      args: the parsed flags.
      minimums: {attribute of `args` (the flag's name): the least value it may take}.
    Raises:
      SystemExit: (status 2) a value below its minimum.
    """
    for name, minimum in minimums.items():
      if getattr(args, name) < minimum:
        self.error(f"--{name}={getattr(args, name)} is below {minimum}; give at least "
                   f"{minimum}.")

  def comma_list(self, flag: str, value: str, choices: Optional[tuple] = None) -> list[str]:
    """The items of a comma list flag, refused (`error`) where it names none or, given
    `choices`, an item not among them.

    Args:
      flag: the flag's name, e.g. "--what", for the error line.
      value: the flag's value.
      choices: the items allowed (None: any).
    Returns:
      The items, in order.
    Raises:
      SystemExit: (status 2) an empty list or an unknown item.
    """
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
      self.error(f"{flag} names nothing; give a comma list"
                 + (f" of {', '.join(choices)}." if choices else "."))
    unknown = [v for v in items if choices is not None and v not in choices]
    if unknown:
      self.error(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from "
                 f"{', '.join(choices)}.")
    return items

  def positive_ints(self, flag: str, value: str) -> list[int]:
    """The integers of a comma list flag such as --batches, each at least 1; refused (`error`)
    otherwise.

    Args:
      flag: the flag's name, for the error line.
      value: the flag's value.
    Returns:
      The integers, in order.
    Raises:
      SystemExit: (status 2) an item that is no integer or is below 1, or an empty list.
    """
    out = []
    for item in self.comma_list(flag, value):
      if not item.isascii() or not item.isdigit() or int(item) < 1:
        self.error(f"{flag}: {item!r} is not an integer of at least 1; give a comma list of "
                   "them.")
      out.append(int(item))
    return out

  def key_values(self, flag: str, value: str) -> dict[str, str]:
    """{key: value} of a comma list flag of key=value, such as a config's overrides; refused
    (`error`) where an item has no "=" or no key.

    Args:
      flag: the flag's name, e.g. "--overrides", for the error line.
      value: the flag's value ("" for none).
    Returns:
      The pairs, in order.
    Raises:
      SystemExit: (status 2) an item that is not key=value.
    """
    out = {}
    for item in filter(None, value.split(",")):
      key, eq, val = item.partition("=")
      if not eq or not key.strip():
        self.error(f"{flag}: {item!r} is not key=value; e.g. "
                   f"{flag}=model.width=0.25,model.image_size=32.")
      out[key.strip()] = val
    return out


TURNS_ENV = "A2I_BENCH_TURNS"  # "<folder>:<this process's index, 0 or 1>"


class Turns:
  """Strict alternation between two processes through two named pipes in `folder`.

  Process i reads one byte from its pipe `turn<i>` to wait for its turn: b"t" is the turn,
  b"d" says the other process is done (every later wait returns at once). Process 0 starts
  with the turn. The caller makes the pipes (compare_cpu.sh: `mkfifo`); each process opens
  both read-write (which never blocks, and keeps a pipe open while the other process starts
  or ends).
  """

  def __init__(self, folder: str, index: int):
    if index not in (0, 1):
      raise ValueError(f"{TURNS_ENV}: the index is 0 or 1, not {index}.")
    self.index, self.other_done = index, False
    self._mine = os.open(os.path.join(folder, f"turn{index}"), os.O_RDWR)
    self._theirs = os.open(os.path.join(folder, f"turn{1 - index}"), os.O_RDWR)

  def take(self) -> None:
    """Blocks until it is this process's turn (or the other process is done)."""
    while not self.other_done:
      byte = os.read(self._mine, 1)
      if byte == b"d":
        self.other_done = True
      if byte == b"t":
        return

  def give(self) -> None:
    """Passes the turn to the other process."""
    if not self.other_done:
      os.write(self._theirs, b"t")

  def finish(self) -> None:
    """Tells the other process this one is done, so that it never waits for it again."""
    os.write(self._theirs, b"d")


_turns = []  # The process's Turns, once `start_turns` has found A2I_BENCH_TURNS set.


def start_turns() -> bool:
  """Joins the turn-taking named by A2I_BENCH_TURNS, if set: waits for this process's first
  turn and marks it done at exit. Returns whether turns are taken. Idempotent."""
  if _turns:
    return True
  spec = os.environ.get(TURNS_ENV, "")
  if not spec:
    return False
  folder, index = spec.rsplit(":", 1)
  turns = Turns(folder, int(index))
  if turns.index != 0:  # Process 0 starts with the turn.
    turns.take()
  atexit.register(turns.finish)
  _turns.append(turns)
  return True


def timed_calls(fn, repeats):
  """Times `repeats` calls of `fn` (which must block until its work is done); returns the
  seconds of each. Under turn-taking the turn passes after each call and is waited for
  again, so the calls of the processes alternate."""
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
    if _turns:
      _turns[0].give()
      _turns[0].take()
  return times


def median_time(fn, repeats):
  """Calls `fn` once to warm up, then `repeats` times; returns (median seconds, all times).

  `fn` must block until its work is done (e.g. `jax.block_until_ready` inside it).
  """
  fn()
  times = timed_calls(fn, repeats)
  return statistics.median(times), times


def compilation_cache_off() -> dict:
  """Turns JAX's persistent compilation cache off for this process, so that a compile time is
  a compile, not a read of a cache that JAX_COMPILATION_CACHE_DIR (or jax's config) names.

  Returns:
    The cache state for a script's output: {"compilation_cache": "off",
    "compilation_cache_dir_env": JAX_COMPILATION_CACHE_DIR's value ("" where unset)}.
  """
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_enable_compilation_cache", False)
  return {"compilation_cache": "off",
          "compilation_cache_dir_env": os.environ.get("JAX_COMPILATION_CACHE_DIR", "")}
