"""Ctrl-C (SIGINT), in one place: how the library keeps one from landing where it would lose
work or be lost itself.

- `StopRequest`: the training loop's. A Ctrl-C asks the loop to stop; it finishes what is in
  flight, saves and stops. A second one stops at once. A SIGTERM (a scheduler's notice) does
  the same. With several processes, they agree on the step to stop at
  (`StopRequest.agreed`), whichever of them was asked, and, at the loop's end, on whether a
  stop asked too late for that ends the run as stopped (`StopRequest.asked_anywhere`).
- `held`: infer.py's. A Ctrl-C inside the block waits until the block ends (a folder made, a
  set of files moved in), then raises.
- `stop_on_signals`: the entry points'. Ctrl-C, SIGTERM and SIGHUP raise, and an interrupt that
  Python or a library swallows is not lost: one swallowed inside a garbage-collector callback
  is delivered again (`keep_ctrl_c`); an exception that takes its place is that interrupt
  (`interrupt_in`); one that vanished is raised again at the next `check`.

Signal handlers can be set in the main thread only; `StopRequest` does nothing elsewhere, and
`held` is used only from the entry points' main thread.
"""

import _thread
import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any, Iterator, Optional

from a2i_jax import distributed, errors


class StopRequest:
  """Ctrl-C (SIGINT) or SIGTERM inside the block sets `requested` instead of raising (or, for
  SIGTERM, ending the process), and says so on stderr at once; the loop then finishes its
  dispatches in flight, saves and stops. So does SIGHUP (the terminal closed under the run: an
  ssh connection lost), unless the process ignores it (nohup); it killed the run, every step
  since the last checkpoint lost (fault hunt). A hangup after the first request changes
  nothing (one closed terminal sends two). A second Ctrl-C or SIGTERM raises
  KeyboardInterrupt at once (a save not yet started is skipped; one under way finishes as the
  loop closes its checkpointer, with peers within `train_lib.PENDING_SAVE_GRACE_S`; train.py
  names the checkpoint a rerun resumes from).

  Raising KeyboardInterrupt at an arbitrary point could land between a dispatch that donated
  the state's buffers and the assignment of its result, losing the state. SIGTERM is how
  schedulers (SLURM, Kubernetes, a TPU's maintenance) ask a job to end before they kill it.
  Outside the main thread (where signal handlers cannot be set) it does nothing.

  The loop acts on `agreed(step)`, not on `requested`: with several processes each must stop
  at the same step, or one waits forever in a collective (or a save) that the others never
  join. A process asked to stop announces a step a few dispatches ahead in the coordinator's
  store, and every process stops at the first read at or past the earliest step announced:
  `margin_steps` is more than any process can run past a read of the announcing one before
  its own next read sees it (the dispatches are collectives, which keep the processes within
  a dispatch or two of each other).
  """

  def __init__(self, margin_steps: int = 1):
    self.requested = False
    self._margin = int(margin_steps)
    self._previous: dict[int, Any] = {}
    self._board = None
    self._announced = False
    self._agreed = False

  def _handle(self, signum, frame):
    del frame
    if self.requested and signum == getattr(signal, "SIGHUP", None):
      # Not a wish to hurry: a closed terminal sends two (the shell passes its own on to its
      # jobs, and the kernel sends one as the shell exits), and the second quit before the
      # save (review).
      return
    if self.requested:
      # Noted as the entry points' handlers note theirs (`stop_on_signals`), and answered the
      # same way; `keep_ctrl_c`'s delivery again clears the note, so it is raised once.
      _unanswered[:] = [KeyboardInterrupt]
      raise KeyboardInterrupt
    self.requested = True
    if distributed.is_main():  # At once (the save can take a while); os.write: no reentry.
      try:
        os.write(2, b"\nstopping: the steps under way finish and are saved (another Ctrl-C "
                    b"quits sooner, without a save not yet under way; the last line names the "
                    b"checkpoint to resume from, or says the run is finished)\n")
      except OSError:  # A console that has gone (a closed pipe): the stop goes on.
        pass

  def __enter__(self) -> "StopRequest":
    check()  # An entry point's interrupt lost before the loop stops it here.
    if distributed.process_count() > 1:
      # The same place on every process: each enters its loops in the same order.
      self._board = distributed.Board("stop at")
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
      hangup = getattr(signal, "SIGHUP", None)  # Not on Windows.
      if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:  # nohup's.
        self._previous[hangup] = signal.signal(hangup, self._handle)
    return self

  def __exit__(self, exc_type, exc, traceback) -> None:
    del exc_type, traceback
    for signum, previous in self._previous.items():
      # None: the handler was not Python's (JAX's preemption notifier takes SIGTERM).
      signal.signal(signum, signal.SIG_DFL if previous is None else previous)
    if isinstance(exc, KeyboardInterrupt) or not _unanswered:
      _unanswered.clear()  # Arrived (or none): nothing is left for a later `check`.
      return
    _unanswered.clear()
    # The second signal's interrupt was swallowed. Swallowed whole after the loop's last read,
    # it stops the run here; in the place of a library's error (as `stop_on_signals` says),
    # the stop goes on as the interrupt, the error as its cause. Not in the place of one of
    # the library's own (a divergence, a full disk): that one says what went wrong.
    if exc is None or not isinstance(exc, (errors.A2IError, OSError)):
      raise KeyboardInterrupt("stopped by a second Ctrl-C or SIGTERM") from exc

  def _announce(self, stop_at: int) -> None:
    """Posts `stop_at` on the board where this process was asked to stop and has not posted
    yet (the board takes one value per process)."""
    if self.requested and not self._announced:
      self._board.post(str(stop_at))
      self._announced = True

  def agreed(self, step: int) -> bool:
    """Whether to stop at this read: once True, True from then on; with several processes,
    the same at the same read on every one. Call it at every read of the loop, with the step
    the read reached.

    Args:
      step: the step the loop has reached.
    Returns:
      True where the loop must save and stop now.
    """
    check()  # The second signal's interrupt, swallowed whole, stops the loop here.
    if self._agreed or self._board is None:
      self._agreed = self._agreed or self.requested
      return self._agreed
    self._announce(step + self._margin)
    announced = [int(v) for v in self._board.values()]
    self._agreed = bool(announced) and step >= min(announced)
    return self._agreed

  def asked_anywhere(self, step: int, timeout_s: float = distributed.DEFAULT_TIMEOUT_S) -> bool:
    """Whether a stop was asked of any process: for the end of a loop that ran to its end, a
    stop asked too late to stop it (a process asked during the last step's save or
    evaluation, or one whose announced step lies past the last). Every process calls it once,
    after its last `agreed`, inside the block; all get the same answer. Was: only the process
    asked ended as a stop, the others as a finished run (status 0, where `&&` went on).

    Each process asked announces a step past `step` (where it has not announced one already:
    a peer still at its last `agreed` reads no stop from it), then
    all wait for each other (`distributed.barrier`: an error at once where a process has
    left, or after `timeout_s`), then read it. A stop asked of a process once it has posted
    comes too late for the others: it counts on that process only.

    Args:
      step: the last step, which the loop has reached.
      timeout_s: how long to wait for the other processes.
    Returns:
      True where the loop must end as stopped.
    Raises:
      DataError: a process did not come in time (one that left first, having recorded so, is
        no error here: the run is finished, and `distributed.finish` sees it left).
    """
    check()  # The second signal's interrupt, swallowed whole, stops here.
    if self._board is None:
      return self.requested
    self._announce(step + 1)
    try:
      distributed.barrier("the end of training", timeout_s)
    except distributed.PeerLeft:  # A peer that failed after the last step: this process's
      # run is finished all the same, and `distributed.finish` lets it end at once, status 0
      # (was: the barrier's error, status 1; the suite's bug-after-the-last-step case).
      pass
    return self.requested or bool(self._board.values())


@contextlib.contextmanager
def held() -> Iterator[None]:
  """Holds a Ctrl-C, and a SIGTERM or SIGHUP where a Python handler takes it (infer.py's),
  until the block ends; then hands a held SIGTERM or SIGHUP to that handler and raises
  KeyboardInterrupt for a held Ctrl-C (once, however many came). Main thread only.

  A Python handler, not a blocked signal: the kernel hands a signal blocked in the main
  thread to another thread (XLA's), and Python raises KeyboardInterrupt in the main thread
  all the same.

  Yields:
    None, once the handlers that hold the signals are in place.
  """
  caught = []
  # SIGTERM, and SIGHUP where the entry points take it (`stop_on_signals`), where a Python
  # handler takes them: not SIG_DFL, SIG_IGN, or a handler outside Python (None).
  held_too = {n: signal.getsignal(n) for n in _STOPS[1:] if callable(signal.getsignal(n))}
  previous = signal.signal(signal.SIGINT, lambda *_: caught.append(signal.SIGINT))
  for signum in held_too:
    signal.signal(signum, lambda n, _: caught.append(n))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    for signum, handler in held_too.items():
      signal.signal(signum, handler)
  for signum, handler in held_too.items():
    if signum in caught:
      handler(signum, None)
  if caught:
    raise KeyboardInterrupt


class Terminated(KeyboardInterrupt):
  """SIGTERM (`kill`, a scheduler's notice) where it stops a program as Ctrl-C does (infer.py,
  `raise_terminated`); the program exits with 143 instead of 130."""


class HungUp(Terminated):
  """SIGHUP (the terminal closed: an ssh connection lost) where the entry points take it as
  SIGTERM (`stop_on_signals`); infer.py exits with 129."""


# The signals the entry points take: Ctrl-C, SIGTERM, and SIGHUP where the system has it.
_STOPS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
               if s is not None)


# The interrupt (its class) that the entry points' handlers raised last and that no
# `interrupt_in` or `check` has seen arrive since: empty, or [KeyboardInterrupt],
# [Terminated] or [HungUp]. A list: the handlers only mutate it.
_unanswered: list = []


def stop_on_signals() -> None:
  """The entry points' handlers, set first thing in their `main` (main thread): Ctrl-C
  (SIGINT) raises KeyboardInterrupt, SIGTERM `Terminated` (SIGHUP `HungUp`), and an
  interrupt that Python or a library swallows is not lost.

  - Inside a garbage-collector callback, Python swallows it: `keep_ctrl_c` (set here too)
    delivers it again.
  - A library's bare `except:` may swallow it and raise an exception of its own that does not
    name it: jax 0.7.2's `Primitive.bind_with_trace` does so for anything raised while it
    reads its arguments' types, and raises `Exception("couldn't apply typeof to args")`
    (seen in CI: a Ctrl-C while infer.py traced its posterior step was a traceback and exit
    status 1, not one line and 130). So each handler notes the interrupt it raises, and an
    exception that reaches `interrupt_in` while one is noted is that interrupt; the entry
    points ask it first, also of an A2IError, since the library wraps errors it cannot
    name (a restore does). `Checkpointer.restore` checks before it wraps, so that a
    checkpoint is never taken for unreadable on the strength of such an error.
  - Swallowed with no exception after it, the noted interrupt is raised again at the next
    `check`: the entry points check between their parts (infer.py after each mode, each
    occlusion of `complete`, each setting of `tune` and each run of `evaluate`, whose
    finished parts are then kept as a Ctrl-C keeps them; train.py as its loop starts and
    when it ends). Inside the loop `StopRequest` takes the signals, and notes its second
    one the same way.

  SIGHUP (the terminal closed under the run: an ssh connection lost) raises `HungUp`, a
  `Terminated`, unless the process ignores it (nohup): was, it killed infer.py, every output
  it had finished lost with its staging folder (fault hunt).
  """
  _unanswered.clear()
  signal.signal(signal.SIGINT, raise_interrupt)
  signal.signal(signal.SIGTERM, raise_terminated)
  hangup = getattr(signal, "SIGHUP", None)  # Not on Windows.
  if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:  # nohup's.
    signal.signal(hangup, raise_terminated)
  keep_ctrl_c()


def raise_interrupt(*_: Any) -> None:
  """The entry points' SIGINT handler (`stop_on_signals`): Python's own, noting what it raises.

  Args:
    *_: the signal number and frame, unused.
  Raises:
    KeyboardInterrupt: where the main thread is.
  """
  _unanswered[:] = [KeyboardInterrupt]
  raise KeyboardInterrupt


def raise_terminated(signum: Any = None, *_: Any) -> None:
  """A SIGTERM handler (`signal.signal(signal.SIGTERM, raise_terminated)`; the entry points'
  through `stop_on_signals`, for SIGHUP too), noting what it raises.

  Args:
    signum: the signal number: SIGHUP raises `HungUp`.
    *_: the frame, unused.
  Raises:
    Terminated: where the main thread is (`HungUp` for SIGHUP).
  """
  raised = HungUp if signum is not None and signum == getattr(signal, "SIGHUP", None) else (
      Terminated)
  _unanswered[:] = [raised]
  raise raised


def interrupted_words(newest: Optional[int], last: Optional[int]) -> str:
  """train.py's last line where a Ctrl-C or SIGTERM ended it outside the loop's own stop (a
  second one inside the loop, or one before it): what the same command does next.

  Where the newest checkpoint is the run's last step, the run may be finished: a second
  Ctrl-C during the last step's evaluation leaves that evaluation to the rerun, but with
  peers, process 0 may have finished it meanwhile (exit status 0), and the rerun then has
  nothing to do. Was: "resume from step 6" there too (fault hunt: process 1 of 2 said so,
  process 0 had finished the run, and the rerun said "nothing to do").

  Args:
    newest: the newest checkpoint's step, None where none is saved.
    last: the run's last step (num_train_steps), None where it is not known.
  Returns:
    The line.
  """
  if newest is None:
    return "interrupted; no checkpoint is saved yet, so the same command starts over."
  if last is not None and newest >= last:
    return (f"interrupted; the newest checkpoint, step {newest}, is the run's last step, so the "
            "run may be finished (by another process, or before this stop): run the same "
            "command, which does what this stop cut short (the last evaluation) or says there "
            "is nothing to do.")
  return f"interrupted; run the same command to resume from step {newest}, the newest checkpoint."


def check() -> None:
  """Raises the entry points' interrupt that was swallowed whole (`stop_on_signals`), if any:
  call it where the work may stop, between its parts.

  Raises:
    KeyboardInterrupt: `Terminated` for a SIGTERM; once per signal.
  """
  if _unanswered:
    raise _unanswered.pop()()


def ignore_stops() -> None:
  """Ctrl-C, SIGTERM and SIGHUP do nothing from here on: for an entry point whose work is
  saved and which is only leaving. Python's shutdown puts back a handler's default action (killed,
  status -2: a second Ctrl-C while the stop is reported), but leaves "ignore" in place.
  Nothing can hang there: with peers, `distributed.finish` and `leave` end the process
  without JAX's shutdown barrier.
  """
  for signum in _STOPS:  # SIGHUP too: a terminal closed while it leaves adds nothing.
    signal.signal(signum, signal.SIG_IGN)


def interrupt_in(error: BaseException) -> Optional[KeyboardInterrupt]:
  """The KeyboardInterrupt (Ctrl-C, or infer.py's SIGTERM) that `error` is, is caused by,
  or took the place of.

  A signal handler that raises runs at the next bytecode, which may be Python code that C
  calls back (NumPy asking a JAX scalar type for its hash): the exception then leaves the C
  function as a SystemError ("... returned a result with an exception set") whose cause is
  the interrupt (seen in CI: a SIGTERM during `to_signed`, a traceback and exit status 1).
  An interrupt that a library swallowed, raising an error of its own that does not name it,
  is known by the note its handler left (`stop_on_signals`): `error` is then a new
  interrupt of the noted class. Either way the note is cleared: the interrupt has arrived.

  Args:
    error: an exception that reached an entry point.
  Returns:
    The interrupt, or None.
  """
  for cause in errors.causes(error):
    if isinstance(cause, KeyboardInterrupt):
      _unanswered.clear()
      return cause
  return _unanswered.pop()() if _unanswered else None


def keep_ctrl_c() -> None:
  """Makes a Ctrl-C that Python would swallow arrive again, a moment later.

  A KeyboardInterrupt raised inside a garbage-collector callback (JAX registers one), a
  `__del__` or a weakref callback cannot propagate: Python prints "Exception ignored in ..."
  with a traceback and goes on, and the run finished as if never interrupted (exit status 0;
  seen in CI). This handler in `sys.unraisablehook` (`errors.add_unraisable_handler`, which
  keeps the other handlers) drops that message for a KeyboardInterrupt and, once the hook
  has returned, sends the process SIGINT again from a short-lived thread, so that the
  handler raises once the main thread is out of the callback (again if it is not, until it
  is). Other unraisable exceptions go on down the chain. Idempotent; the entry points call
  it first thing.
  """
  errors.add_unraisable_handler("keep_ctrl_c", _deliver_again)


def _deliver_again(unraisable) -> bool:
  """`keep_ctrl_c`'s handler: True for a KeyboardInterrupt, which arrives again."""
  if unraisable.exc_type is None or not issubclass(unraisable.exc_type, KeyboardInterrupt):
    return False
  # The hook's code: the chain's links, and a hook set above them that called them.
  top = sys.unraisablehook
  top = getattr(top, "func", top)  # A functools.partial (pytest's).
  codes = {errors.UNRAISABLE_HOOK_CODE, getattr(top, "__code__", None),
           getattr(getattr(type(top), "__call__", None), "__code__", None)} - {None}
  # The same signal again: a lost SIGTERM must not come back as a Ctrl-C (exit 130, not 143).
  signum = (signal.SIGHUP if issubclass(unraisable.exc_type, HungUp) else
            signal.SIGTERM if issubclass(unraisable.exc_type, Terminated) else signal.SIGINT)
  _unanswered.clear()  # Not raised again by `check` too: the signal comes back, noted anew.
  # Not threading.Thread: its start() waits in Python code, where the handler would run.
  _thread.start_new_thread(_send_again, (threading.get_ident(), frozenset(codes), signum))
  return True


def _send_again(main: int, codes: frozenset, signum: int = signal.SIGINT) -> None:
  # Only once the main thread has left the hook: a handler raising inside it is lost too.
  frames = sys._current_frames  # pylint: disable=protected-access
  while _in_code(frames().get(main), codes):
    time.sleep(0.001)
  os.kill(os.getpid(), signum)


def _in_code(frame, codes: frozenset) -> bool:
  """Whether one of `codes` runs in `frame` or a frame below it."""
  while frame is not None:
    if frame.f_code in codes:
      return True
    frame = frame.f_back
  return False
