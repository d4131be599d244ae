"""Error types. Each carries one plain message that names the problem and the fix; the entry
points print it without a traceback. Also `keep_ctrl_c`, which stops Python from losing a
Ctrl-C."""

import _thread
import os
import signal
import sys
import threading
import time


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


def keep_ctrl_c() -> None:
  """Makes a Ctrl-C that Python would swallow arrive again, a moment later.

  A KeyboardInterrupt raised inside a garbage-collector callback (JAX registers one), a
  `__del__` or a weakref callback cannot propagate: Python prints "Exception ignored in ..."
  with a traceback and goes on, and the run finished as if never interrupted (exit status 0;
  seen in CI). This hook, `sys.unraisablehook`, drops that message for a KeyboardInterrupt
  and, once the hook has returned, sends the process SIGINT again from a short-lived thread,
  so that the handler raises once the main thread is out of the callback (again if it is
  not, until it is). Other
  unraisable exceptions go to the hook that was there before. Idempotent; the entry points
  call it first thing.
  """
  if getattr(sys.unraisablehook, "keeps_ctrl_c", False):
    return
  previous = sys.unraisablehook

  def again(main: int) -> None:
    # Only once the main thread has left the hook: a handler raising inside it is lost too.
    frames = sys._current_frames  # pylint: disable=protected-access
    while _in_code(frames().get(main), hook.__code__):
      time.sleep(0.001)
    os.kill(os.getpid(), signal.SIGINT)

  def hook(unraisable):
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
      # Not threading.Thread: its start() waits in Python code, where the handler would run.
      _thread.start_new_thread(again, (threading.get_ident(),))
      return
    previous(unraisable)
  hook.keeps_ctrl_c = True
  sys.unraisablehook = hook


def _in_code(frame, code) -> bool:
  """Whether `code` runs in `frame` or a frame below it."""
  while frame is not None:
    if frame.f_code is code:
      return True
    frame = frame.f_back
  return False
