"""a2i_jax.interrupts on its own: what each Ctrl-C guard does with one or two SIGINTs. (The
entry points' use of them is in test_faults_train.py and test_faults_infer.py.)"""

import os
import signal
import threading

import pytest

from a2i_jax import interrupts


def _ctrl_c():
  os.kill(os.getpid(), signal.SIGINT)  # The handler runs at the next bytecode boundary.


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
    for _ in range(100):  # Give the handler its bytecode boundary.
      pass
    assert stop.requested
    with pytest.raises(KeyboardInterrupt):
      _ctrl_c()
      for _ in range(100):
        pass
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
