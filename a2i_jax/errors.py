"""Error types. Each carries one plain message that names the problem and the fix; the entry
points print it without a traceback. (Ctrl-C itself: `interrupts`.) Also
`add_unraisable_handler`, which puts a handler in front of `sys.unraisablehook` without
displacing the others."""

import sys
import types
from typing import Any, Callable, Iterator, Optional


class A2IError(ValueError):
  """Base class of the errors a user can fix (bad input, config, data or checkpoint)."""


class ConfigError(A2IError):
  """A config key that does not exist or a value that cannot work."""


class InputError(A2IError):
  """Images or attributes of the wrong shape, length or range."""


class DataError(A2IError):
  """Bad or missing data."""


class DatasetNotPreparedError(DataError):
  """A dataset whose source files are not on this machine yet."""


class CheckpointError(A2IError):
  """A missing, unreadable or incompatible checkpoint."""


class TrainingDivergedError(A2IError):
  """The loss became NaN or infinite."""


class WorkdirError(A2IError):
  """A workdir that cannot be used: a file, not writable, full, or held by another run."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C (SIGINT) stopped training after the state at `step` was saved.

  A KeyboardInterrupt, so that code which stops on Ctrl-C (a notebook cell) still does.
  """

  def __init__(self, step: int):
    super().__init__(f"interrupted at step {step}; run the same command to resume.")
    self.step = step



def first_line(e: BaseException, limit: int = 200) -> str:
  """The first line of `e`'s message, for a one-line error that quotes it (its type's name
  where it has none), cut to `limit` characters.

  Args:
    e: an exception.
    limit: the most characters kept.
  Returns:
    The line.
  """
  return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def is_out_of_memory(e: BaseException) -> bool:
  """Whether `e` is the host's or a device's "out of memory" (the entry points make it one
  line naming what to ask less of).

  Args:
    e: an exception.
  Returns:
    True for a MemoryError, or JAX's RESOURCE_EXHAUSTED about memory (alone, it is also
    gRPC's "message larger than max": review finding).
  """
  if isinstance(e, MemoryError):
    return True
  import jax  # pylint: disable=import-outside-toplevel  # Imported by then; not at start-up.
  text = str(e).lower()
  return (isinstance(e, jax.errors.JaxRuntimeError) and "resource_exhausted" in text
          and ("out of memory" in text or "allocat" in text))


class _Chained:
  """One link of the `add_unraisable_handler` chain: its handler, then the hook before it."""

  def __init__(self, name: str, handled: Callable[[Any], bool], previous: Callable):
    self.name, self.handled, self.previous = name, handled, previous

  def __call__(self, unraisable) -> None:
    try:
      if not self.handled(unraisable):
        self.previous(unraisable)
    except KeyboardInterrupt as e:
      # A Ctrl-C that lands while a link runs would escape the hook, where Python prints
      # "Exception ignored in sys.unraisablehook" and drops it: the hook gets it instead, as
      # an unraisable of its own (`interrupts.keep_ctrl_c`'s link delivers it again).
      sys.unraisablehook(types.SimpleNamespace(
          exc_type=type(e), exc_value=e, exc_traceback=e.__traceback__,
          err_msg="Exception ignored in sys.unraisablehook", object=self))


# The code every link runs: while a thread runs it, that thread is inside the hook.
UNRAISABLE_HOOK_CODE = _Chained.__call__.__code__


def causes(error: Optional[BaseException]) -> Iterator[BaseException]:
  """`error`, then what caused it or took its place (`__cause__`, else `__context__`), each
  once (a chain that loops back ends there).

  Args:
    error: an exception, or None (nothing).
  Yields:
    The exceptions of the chain, `error` first.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def add_unraisable_handler(name: str, handled: Callable[[Any], bool]) -> None:
  """Puts `handled` in front of `sys.unraisablehook`: an unraisable exception (one raised in
  a garbage-collector callback, a `__del__`, a callback of a closed event loop) goes to it
  first, and to the hook that was there before unless it returns True.

  Each handler keeps the one before it, so that several stack in any order (the entry points
  add Orbax's filter, `checkpoints.quiet_orbax`, and `interrupts.keep_ctrl_c`). A hook that
  replaced the one before it would lose it: Orbax's filter once displaced the Ctrl-C one, and
  a Ctrl-C was lost again. Adding a name already in the chain does nothing. A
  KeyboardInterrupt raised while a link runs (a second Ctrl-C) would escape the hook and be
  lost with what it interrupted; the link hands it to `sys.unraisablehook` instead, in place of
  the unraisable it was handling.

  Args:
    name: the handler's name in the chain.
    handled: called with Python's `UnraisableHookArgs`; True when it dealt with it.
  """
  hook = sys.unraisablehook
  while isinstance(hook, _Chained):
    if hook.name == name:
      return
    hook = hook.previous
  sys.unraisablehook = _Chained(name, handled, sys.unraisablehook)
