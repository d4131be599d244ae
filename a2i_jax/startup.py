"""The entry points' first lines (train.py, infer.py): a stop during their start-up is one line,
then the command may start over with huge pages (`hugepages`).

Imports only what Python has loaded already, so that the handlers are in place before anything
slow is imported: a Ctrl-C there was a 15- to 47-line traceback, and a SIGTERM ended the
command with status 143 and no word (review findings). The entry points take the signals over
once their imports are done.
"""

import errno
import importlib.util
import os
import signal
import sys
from typing import Optional


def begin(term_words: str, term_status: int, hup_words: Optional[str] = None,
          hup_status: Optional[int] = None) -> None:
  """Installs the start-up's handlers of Ctrl-C, SIGTERM and SIGHUP (unless SIGHUP is ignored,
  as under nohup), then re-executes the command with huge pages where `hugepages` does.

  The signals are blocked across the re-execution: the new process starts with the default
  handlers until it comes back here, and a blocked signal stays pending through `execve`, so
  one sent while the command starts over reaches the handler once this unblocks it.

  Args:
    term_words: how the line names a SIGTERM ("stopped by SIGTERM"; a Ctrl-C is
      "interrupted"), as the entry point says it later.
    term_status: the exit status after a SIGTERM (a Ctrl-C's is 130).
    hup_words: how the line names a SIGHUP (the terminal closed); None: as a SIGTERM.
    hup_status: the exit status after a SIGHUP; None: a SIGTERM's.
  """
  said = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: (term_words, term_status)}
  hangup = getattr(signal, "SIGHUP", None)  # Not on Windows.
  # Was the system's default (killed without a word) until the entry point's own handlers.
  if hangup is not None and signal.getsignal(hangup) != signal.SIG_IGN:
    said[hangup] = (hup_words or term_words,
                    term_status if hup_status is None else hup_status)

  def interrupted_early(signum, _):
    words, status = said[signum]
    print(f"{words}; nothing was written.", file=sys.stderr)
    os._exit(status)  # pylint: disable=protected-access
  stops = set(said)
  for stop in stops:
    signal.signal(stop, interrupted_early)
  signal.pthread_sigmask(signal.SIG_BLOCK, stops)
  try:
    from a2i_jax import hugepages  # pylint: disable=import-outside-toplevel
    hugepages.reexec_with_huge_pages()  # Huge pages for malloc on Linux (the module says).
  finally:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
  keep_going_without_a_console()
  check_jax_environment()


class _ClosedPipeSafe:
  """A console stream whose writes go to the null device once its reader has gone (a pipe
  closed: `train.py ... | grep -m1 compiled`; a terminal closed under a job left running),
  instead of raising BrokenPipeError or EIO. Everything else is the stream's."""

  def __init__(self, stream):
    self._stream = stream

  def _gone(self) -> None:
    self._stream = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=R1732

  def write(self, text):
    try:
      return self._stream.write(text)
    except OSError as e:
      if e.errno not in _GONE:
        raise
      self._gone()
      return len(text)

  def flush(self) -> None:
    try:
      self._stream.flush()
    except OSError as e:
      if e.errno not in _GONE:
        raise
      self._gone()

  def __getattr__(self, name):
    if name == "_stream":  # Not set yet (copy.copy): not looked up in itself forever.
      raise AttributeError(name)
    return getattr(self._stream, name)


# A pipe whose reader has gone (EPIPE), a terminal that has closed (EIO; review).
_GONE = (errno.EPIPE, errno.EIO)


def keep_going_without_a_console() -> None:
  """Makes stdout and stderr `_ClosedPipeSafe`: a run whose console is a pipe that closes
  goes on, its lines lost, instead of dying at the next line or progress-bar update (was:
  `train.py ... 2>&1 | grep -m1 compiled` ended training with exit 1, no word, and every step
  since the last checkpoint lost; review). Idempotent.

  A console the process started without (its descriptor closed: `train.py ... 2>&-`, a
  launcher that closes it) is the null device: Python's stream was None, and training ended
  at its progress bar's first line, after the data load and the compile, with exit status 1
  and no word (fault hunt). Its descriptor is the null device's too: the next file opened
  took its number, and lines written there (XLA's log, the stop's notice) went into that file.

  Text it cannot encode is written escaped (`_escape_what_cannot_print`).
  """
  for fd in (0, 1, 2):
    try:
      os.fstat(fd)
    except OSError:  # Closed: the lowest number free, so the null device opens on it.
      null = os.open(os.devnull, os.O_RDWR)
      if null != fd:
        os.dup2(null, fd)
        os.close(null)
  for name in ("stdout", "stderr"):
    stream = getattr(sys, name)
    if stream is None:
      stream = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=R1732
    _escape_what_cannot_print(stream)
    if not isinstance(stream, _ClosedPipeSafe):
      setattr(sys, name, _ClosedPipeSafe(stream))


def _escape_what_cannot_print(stream) -> None:
  """Has a text console stream write what its encoding cannot hold as escapes (a byte of a
  path that is not UTF-8 as `\\udce9`), as Python's standard error does: such a path
  (`--out=out_caf\\xe9`) under en_US.UTF-8, whose standard output is strict, stopped infer.py
  at its "wrote ..." line after the work, the modes after it not run (fault hunt). Streams
  without `reconfigure` (replaced by a caller) are left as they are."""
  inner = getattr(stream, "_stream", stream)  # A `_ClosedPipeSafe`'s own.
  reconfigure = getattr(inner, "reconfigure", None)
  if reconfigure is None or getattr(inner, "errors", "strict") != "strict":
    return
  try:
    reconfigure(errors="backslashreplace")
  except (OSError, ValueError, TypeError):  # Closed, or not a TextIOWrapper after all.
    pass


def check_jax_environment() -> None:
  """Imports JAX, which reads its settings from JAX_* environment variables: one that it
  cannot read (JAX_ENABLE_X64=banana) was a 20-line traceback from the entry point's imports
  (review finding); it is one `error:` line and exit status 1. So is a setting the library
  cannot run under (`_UNSUPPORTED_JAX_OPTIONS`: JAX_DISABLE_JIT, a strict dtype promotion, rank
  promotion that raises, a transfer guard that disallows).

  Raises:
    SystemExit: with status 1, after the `error:` line, where JAX cannot start (or is not
      installed in this Python) or a setting is one the library cannot run under.
  """
  try:
    import jax  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:  # Was a 9-line traceback: a Python without the project installed.
    _not_installed(e)
  except ValueError as e:
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    flag = message.rpartition("JAX flag ")[2] if "JAX flag jax_" in message else ""
    which = f"the environment variable {flag.upper()}" if flag else "that environment variable"
    print(f"error: JAX cannot start: {message}; fix or unset {which} (JAX_* variables set "
          "JAX's options).", file=sys.stderr)
    sys.exit(1)
  for module in _REQUIRED_MODULES:  # The rest: found, not imported (infer.py takes no optax).
    if importlib.util.find_spec(module) is None:
      _not_installed(ModuleNotFoundError(f"No module named {module!r}", name=module))
  for option, values, why in _UNSUPPORTED_JAX_OPTIONS:
    value = getattr(jax.config, option, None)
    if value in values:
      print(f"error: {option.upper()}={os.environ.get(option.upper(), value)} is set, which "
            f"the library does not support ({why}); unset it.", file=sys.stderr)
      sys.exit(1)


# What the entry points import besides JAX (pyproject.toml's dependencies), checked after it.
_REQUIRED_MODULES = ("numpy", "flax", "optax", "orbax", "ml_collections", "absl", "PIL",
                     "tqdm", "tensorboardX", "tensorflow_datasets")


def _not_installed(e: ImportError) -> None:
  """One `error:` line for a dependency this Python cannot import, and exit status 1."""
  print(f"error: this Python ({sys.executable}) cannot import {e.name or 'a dependency'} "
        f"({e}); run the command with the Python of the project's virtual environment "
        "(activate it), or install the project into this one (pip install -e .).",
        file=sys.stderr)
  sys.exit(1)


# JAX options, read from JAX_* environment variables, under which the entry points cannot run,
# each with the values that stop them: each was a traceback, after the run's config, dataset
# record and metrics file were written (review). JAX_TRANSFER_GUARD=disallow (or
# disallow_explicit) was a 70-line one at the first array made (review); its log levels run.
_UNSUPPORTED_JAX_OPTIONS = (
    ("jax_disable_jit", (True,), "its steps are compiled ahead of time"),
    ("jax_numpy_dtype_promotion", ("strict",), "its models mix float32 and bfloat16 arrays "
     "under JAX's standard promotion"),
    ("jax_numpy_rank_promotion", ("raise",), "its models broadcast arrays of different ranks"),
    ("jax_transfer_guard", ("disallow", "disallow_explicit"), "it moves arrays between the "
     "host and the devices as it goes; JAX_TRANSFER_GUARD=log reports each move instead"))
