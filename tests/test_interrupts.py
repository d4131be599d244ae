"""a2i_jax.interrupts on its own: what each Ctrl-C guard does with one or two SIGINTs. (The
entry points' use of them is in test_faults_train.py and test_faults_infer.py.)"""

import os
import signal
import threading

import pytest

from a2i_jax import interrupts


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
  with interrupts.StopRequest() as stop:
    assert not stop.requested
    _ctrl_c()
    assert stop.requested
    with pytest.raises(KeyboardInterrupt):
      _ctrl_c()
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


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


def test_stop_request_keeps_a_second_signal_that_a_library_swallowed():
  """The second Ctrl-C (or SIGTERM) quits at once even where a library swallows its
  KeyboardInterrupt: swallowed whole, the loop's next read raises it; with an error in its
  place, the block raises it, caused by that error."""
  with pytest.raises(KeyboardInterrupt):
    with interrupts.StopRequest() as stop:
      _ctrl_c()
      assert stop.requested and stop.agreed(1)
      _swallowed()
      stop.agreed(2)
  typeof = Exception("couldn't apply typeof to args")
  with pytest.raises(KeyboardInterrupt) as e:
    with interrupts.StopRequest():
      _ctrl_c()
      _swallowed(then=typeof)
  assert e.value.__cause__ is typeof
  with pytest.raises(ValueError):  # An error after one Ctrl-C (a stop asked) is that error.
    with interrupts.StopRequest():
      _ctrl_c()
      raise ValueError("a failed save")
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
