"""a2i_jax.interrupts on its own: what each Ctrl-C guard does with one or two SIGINTs. (The
entry points' use of them is in test_faults_train.py and test_faults_infer.py.)"""

import os
import signal
import threading
import types

import pytest

from a2i_jax import interrupts
from a2i_jax.errors import A2IError


def _ctrl_c(signum=signal.SIGINT):
  os.kill(os.getpid(), signum)  # The handler runs at the next bytecode boundary.
  for _ in range(100):  # Give the handler its bytecode boundary.
    pass


def _swallowed(signum=signal.SIGINT, then=None):
  """A signal whose interrupt a library swallows, as jax 0.7.2's `Primitive.bind_with_trace`
  does with whatever its `typeof` raises (a bare `except: pass`); then, as it does, an error
  of its own that does not name the interrupt (`then`; None: nothing)."""
  try:
    _ctrl_c(signum)
  except:  # pylint: disable=bare-except
    pass
  if then is not None:
    raise then


pytestmark = pytest.mark.usefixtures("ctrl_c_raises")  # conftest.py


def test_held_raises_once_when_the_block_ends_and_restores_the_handler():
  ran = []
  with pytest.raises(KeyboardInterrupt):
    with interrupts.held():
      _ctrl_c()
      _ctrl_c()
      ran.append("the rest of the block")
  assert ran == ["the rest of the block"]
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_held_without_a_ctrl_c_raises_nothing_and_passes_errors_through():
  with interrupts.held():
    pass
  with pytest.raises(ZeroDivisionError):
    with interrupts.held():
      _ = 1 / 0
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stop_request_asks_first_and_raises_on_the_second():
  ran = []
  with pytest.raises(KeyboardInterrupt):
    with interrupts.StopRequest() as stop:
      assert not stop.requested
      _ctrl_c()
      assert stop.requested
      ran.append("after the first")
      _ctrl_c()
      ran.append("after the second")
  assert ran == ["after the first"]
  interrupts.check()  # The interrupt arrived: nothing is left for later.
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stop_request_takes_a_hangup_as_a_stop_unless_it_is_ignored():
  """A SIGHUP (the terminal closed under a run in it: an ssh connection lost) killed training,
  every step since the last checkpoint lost (fault hunt): it asks the loop to stop and save,
  as SIGTERM does. Under nohup (ignored) it stays ignored. A second hangup changes nothing
  (review: a closed terminal sends two, the shell's and the kernel's as the shell exits, and
  the second quit before the save); a Ctrl-C still quits at once."""
  died, ran = [], []
  kill = lambda *_: died.append("killed")  # pylint: disable=unnecessary-lambda-assignment
  previous = signal.signal(signal.SIGHUP, kill)
  try:
    with pytest.raises(KeyboardInterrupt):
      with interrupts.StopRequest() as stop:
        _ctrl_c(signal.SIGHUP)
        assert stop.requested and not died
        _ctrl_c(signal.SIGHUP)
        ran.append("after the second hangup")  # Still stopping, with its save.
        _ctrl_c()  # A second Ctrl-C quits at once.
        ran.append("after the Ctrl-C")
    assert ran == ["after the second hangup"]
    assert not died and signal.getsignal(signal.SIGHUP) is kill
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with interrupts.StopRequest() as stop:
      _ctrl_c(signal.SIGHUP)
      assert not stop.requested
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGHUP, previous)


def test_the_entry_points_take_a_hangup_as_sigterm_unless_it_is_ignored(entry_handlers):
  """Was: a SIGHUP outside train.py's loop (infer.py's modes, train.py's data load) killed the
  process, infer.py's finished outputs lost with its staging folder (fault hunt). It raises
  `HungUp`, a `Terminated`; `held` holds it as it holds SIGTERM; under nohup it stays ignored.
  """
  with pytest.raises(interrupts.HungUp) as e:
    _ctrl_c(signal.SIGHUP)
  assert interrupts.interrupt_in(e.value) is e.value  # As the entry points answer it.
  interrupts.check()  # Answered: nothing is left for later.
  ran = []
  with pytest.raises(interrupts.HungUp) as e:
    with interrupts.held():
      _ctrl_c(signal.SIGHUP)
      ran.append("the rest of the block")
  assert ran == ["the rest of the block"]
  assert signal.getsignal(signal.SIGHUP) is interrupts.raise_terminated
  assert interrupts.interrupt_in(e.value) is e.value
  interrupts.check()
  signal.signal(signal.SIGHUP, signal.SIG_IGN)
  interrupts.stop_on_signals()
  assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_stop_request_outside_the_main_thread_leaves_the_handler_alone():
  seen = []

  def body():
    with interrupts.StopRequest() as stop:
      seen.append((stop.requested, signal.getsignal(signal.SIGINT)))
  t = threading.Thread(target=body)
  t.start()
  t.join()
  assert seen == [(False, signal.default_int_handler)]


@pytest.mark.parametrize("signum,raised", [(signal.SIGINT, KeyboardInterrupt),
                                           (signal.SIGTERM, interrupts.Terminated)])
def test_an_interrupt_a_library_swallowed_is_not_lost(entry_handlers, signum, raised):
  """Was (CI, jax 0.7.2): a Ctrl-C while infer.py traced its posterior step came out as JAX's
  "couldn't apply typeof to args", with no cause: a traceback and exit status 1, not one
  line and 130. An error that takes the place of the entry points' interrupt is that
  interrupt, once; one swallowed whole is raised at the next check, once; one that arrives as
  itself is answered and raised by no check after it."""
  typeof = Exception("couldn't apply typeof to args")
  with pytest.raises(Exception) as e:
    _swallowed(signum, then=typeof)
  assert e.value is typeof and e.value.__context__ is None
  assert type(interrupts.interrupt_in(e.value)) is raised
  assert interrupts.interrupt_in(ValueError("a later error")) is None
  interrupts.check()

  _swallowed(signum)
  with pytest.raises(raised):
    interrupts.check()
  interrupts.check()
  _swallowed(signum)
  with pytest.raises(raised):  # Train.py's loop does not start.
    with interrupts.StopRequest():
      pass

  with pytest.raises(raised) as e:
    _ctrl_c(signum)
  assert interrupts.interrupt_in(e.value) is e.value
  interrupts.check()
  assert interrupts.interrupt_in(ValueError("a later error")) is None


def test_stop_request_keeps_a_second_signal_that_a_library_swallowed(monkeypatch):
  """The second Ctrl-C (or SIGTERM) quits at once even where a library swallows its
  KeyboardInterrupt: swallowed whole, the loop's next read raises it, or the block's end
  after the last read; with a library's error in its place, the block raises it, caused by
  that error. Not in the place of the library's own errors (a divergence, a full disk: they
  say what went wrong), and once only: where `keep_ctrl_c` sends the signal again, the
  note is gone (review: raised by the next read and again in the cleanup)."""
  with pytest.raises(KeyboardInterrupt):
    with interrupts.StopRequest() as stop:
      _ctrl_c()
      assert stop.requested and stop.agreed(1)
      _swallowed()
      stop.agreed(2)
  with pytest.raises(KeyboardInterrupt):
    with interrupts.StopRequest():
      _ctrl_c()
      _swallowed()
  typeof = Exception("couldn't apply typeof to args")
  with pytest.raises(KeyboardInterrupt) as e:
    with interrupts.StopRequest():
      _ctrl_c()
      _swallowed(then=typeof)
  assert e.value.__cause__ is typeof
  for own in (A2IError("the run diverged"), OSError(28, "No space left on device")):
    with pytest.raises(type(own)):
      with interrupts.StopRequest():
        _ctrl_c()
        _swallowed(then=own)
    interrupts.check()  # Nothing is left for later.
  with pytest.raises(ValueError):  # An error after one Ctrl-C (a stop asked) is that error.
    with interrupts.StopRequest():
      _ctrl_c()
      raise ValueError("a failed save")
  sent = []
  monkeypatch.setattr(interrupts._thread, "start_new_thread",  # pylint: disable=protected-access
                      lambda fn, args: sent.append(args[-1]))
  with interrupts.StopRequest() as stop:
    _ctrl_c()
    try:  # As a garbage-collector callback swallows it: Python hands it to the hook.
      _ctrl_c()
    except KeyboardInterrupt as e:
      assert interrupts._deliver_again(types.SimpleNamespace(  # pylint: disable=W0212
          exc_type=type(e)))
    assert stop.agreed(3)  # The signal sent again raises; the read does not as well.
  assert sent == [signal.SIGINT]
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_interrupted_line_says_a_run_may_be_finished_at_its_last_step():
  """Fault hunt: a second Ctrl-C on process 1 of 2 during the last step's evaluation ended it
  with "resume from step 6" while process 0 finished the run (status 0), and the rerun then
  said "nothing to do". At the last step the line says the run may be finished (train.py's
  words for a Ctrl-C outside the loop's own stop, `interrupts.interrupted_words`)."""
  words = interrupts.interrupted_words
  assert words(6, 6) == (
      "interrupted; the newest checkpoint, step 6, is the run's last step, so the run may be "
      "finished (by another process, or before this stop): run the same command, which does "
      "what this stop cut short (the last evaluation) or says there is nothing to do.")
  assert words(8, 6) == words(8, 8)  # A run shortened on the command line: finished too.
  assert words(4, 6) == words(4, None) == (
      "interrupted; run the same command to resume from step 4, the newest checkpoint.")
  assert words(None, 6) == ("interrupted; no checkpoint is saved yet, so the same command "
                            "starts over.")
