"""Many processes on one machine (issue 14): 2 processes of 2 CPU devices each against 1 process
of 4, through tests/multiprocess_driver.py, and a dead process stopping the other.

The processes meet at a free localhost port and run XLA:CPU's cross-process collectives
(gloo). Each compiles the tiny train step once; the two-process launches share a persistent
compilation cache.
"""

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Callable

import jax
import numpy as np
import pytest

from a2i_jax import checkpoints, distributed, interrupts, parallel
from a2i_jax.errors import CheckpointError, ConfigError
import launcher
from conftest import TRAIN_PY_STEPS

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_driver.py")
# Compiling the tiny step on a busy 2-core machine takes tens of seconds per process.
START_TIMEOUT_S = 300


def _require_cpu_collectives():
  # Both pin sets CI runs (jax 0.7.2 and the newest) have gloo; an older JAX would not.
  if not hasattr(jax.config, "jax_cpu_collectives_implementation"):
    reason = (f"jax {jax.__version__} has no CPU cross-process collectives "
              "(jax_cpu_collectives_implementation); two CPU processes cannot run one program")
    pytest.fail(reason)  # Was a skip: a JAX that renamed the option would skip these silently.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(out: str, num_processes: int, *extra: str) -> list:
  """Starts the driver as 1 process of 4 devices or as `num_processes` of 4 / n devices."""
  command = [f"--out={out}", f"--local_devices={4 // num_processes}", *extra]
  if num_processes > 1:
    port = _free_port()
    command += [f"--coordinator=localhost:{port}", f"--num_processes={num_processes}"]
  return _launch_each([command + ([f"--process_id={i}"] if num_processes > 1 else [])
                       for i in range(num_processes)])


def _launch_each(argvs: list) -> list:
  """Starts the driver once per argument list of `argvs`."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
  # Forked (tests/launcher.py), each process of a job from a server of its own (`slot`).
  return [launcher.popen([sys.executable, DRIVER, *argv], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, slot=i)
          for i, argv in enumerate(argvs)]


def _finish(procs: list, timeout_s: float = START_TIMEOUT_S) -> list:
  results = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      # Every process's last words: the one that hangs is often not the one that caused it.
      tails = [f"process {i}:\n{q.communicate()[1][-2000:]}" for i, q in enumerate(procs)]
      pytest.fail(f"no end within {timeout_s} s; killed.\n" + "\n".join(tails))
    results.append((p.returncode, out, err))
  return results


def _error_lines(err: str) -> list:
  return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def compile_cache(xla_cache):
  return xla_cache  # The session's, shared by every worker (conftest).


def test_two_processes_compute_what_one_process_computes(tmp_path, compile_cache):
  _require_cpu_collectives()
  # A fresh data cache: process 0 generates it while process 1 waits, then reads it.
  cache = str(tmp_path / "data")
  one = _launch(str(tmp_path / "one.npz"), 1, f"--cache={tmp_path / 'data1'}")
  two = _launch(str(tmp_path / "two.npz"), 2, f"--cache={cache}",
                f"--compile_cache={compile_cache}")
  for rc, _, err in _finish(one + two):
    assert rc == 0, err[-3000:]
  a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
  # Was: JAX's preemption notifier took SIGTERM at the join, and a Python handler set before
  # (the entry points') never ran again: infer.py in two processes ignored SIGTERM.
  assert a["sigterm_kept"] and b["sigterm_kept"]
  assert len(a["loss"]) == 3 and np.all(np.isfinite(a["loss"]))
  np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
  np.testing.assert_allclose(b["grad_norm"], a["grad_norm"], rtol=1e-5)
  np.testing.assert_allclose(b["eval_loss"], a["eval_loss"], rtol=1e-5)
  params = [k for k in a.files if k.startswith("param/")]
  assert params and sorted(params) == sorted(k for k in b.files if k.startswith("param/"))
  for k in params:
    np.testing.assert_allclose(b[k], a[k], atol=1e-5, err_msg=k)
  # The parameters moved, so equal parameters are not just equal initial ones.
  assert any(np.abs(a[k]).max() > 0 for k in params)


@pytest.mark.parametrize("dying", [1, 0])
def test_a_dead_process_stops_the_other_with_an_error(tmp_path, compile_cache, monkeypatch,
                                                      dying):
  _require_cpu_collectives()
  if dying == 0:
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # As absl's app.run enables it.
  procs = _launch(str(tmp_path / "never.npz"), 2, f"--cache={tmp_path / 'data'}",
                  f"--compile_cache={compile_cache}", "--steps=100000", "--die_after=1",
                  f"--dying_process={dying}")
  survivor, dying_proc = procs[1 - dying], procs[dying]
  try:
    dying_proc.wait(timeout=START_TIMEOUT_S)
    assert dying_proc.returncode == -9  # It killed itself after its first step.
    _, err = survivor.communicate(timeout=60)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert not (tmp_path / "never.npz").exists()  # (A hang fails communicate's 60 s timeout.)
  line = f"error: process {1 - dying}: another process stopped answering"
  if dying == 0:
    # Process 0 gone, its coordinator with it: the survivor leaves at once after its line
    # (`exit_now`). Was: it first sent its record to the coordinator that was gone and waited,
    # until JAX aborted it from its own thread: a C++ stack trace, Python's thread dump
    # ("Fatal Python error: Aborted"), status 134 (a review finding). Python's thread dump
    # never comes (`distributed.initialize` turns the fault handler off).
    assert "Fatal Python error" not in err, err[-3000:]
    if not _error_lines(err):
      # JAX's coordination service ended it from its own thread first, as it saw process 0's
      # connection drop: jaxlib 0.7.2's fatal log is the quiet kind (status 1, no stack trace)
      # and mostly wins; jaxlib 0.10's aborts (SIGABRT, its stack trace) and wins now and then
      # under load (in two suite runs with a helper's work beside it, the second on 2026-12-07;
      # docs/design.md §3.6, as for a dead process 1 below).
      assert "JAX distributed service detected fatal errors" in err, err[-3000:]
      assert survivor.returncode in (-signal.SIGABRT, 1), (survivor.returncode, err[-3000:])
    else:
      assert survivor.returncode == 1, err[-3000:]
      assert "Check failure" not in err, err[-3000:]
      assert len(_error_lines(err)) == 1 and line in err, err[-3000:]
    return
  # Two ways out, whichever comes first: the survivor's next collective fails and it prints
  # one line (distributed.peers_checked), or JAX's coordination service, having seen the
  # peer's connection drop, ends it from its own thread (once in eleven suite runs on the
  # 2-core machine, 2026-11-30; docs/design.md §3.6): with SIGABRT on jaxlib 0.10, with
  # status 1 on jaxlib 0.7.2, whose fatal log is the quiet kind (CI, 2026-12-01).
  if "JAX distributed service detected fatal errors" in err:
    assert survivor.returncode in (-signal.SIGABRT, 1), (survivor.returncode, err[-3000:])
  else:
    assert survivor.returncode == 1, err[-3000:]
    assert line in err


def test_a_signal_ends_a_process_waiting_for_the_others_to_join(tmp_path):
  """Process 0 of 2, started alone, waits in the join for process 1: a Ctrl-C ends it with
  status 130, a SIGTERM (the entry points' handler) with 143, each with one line, at once.
  Was: both ignored until the join's timeout (300 s in the entry points), as JAX waits in C++
  on the main thread, where Python's signal handlers never ran (a review finding)."""
  ports = [_free_port(), _free_port()]
  procs = _launch_each([[f"--out={tmp_path / 'never.npz'}", f"--coordinator=localhost:{port}",
                         "--num_processes=2", "--process_id=0", "--timeout_s=60"]
                        for port in ports])
  try:
    for p, port in zip(procs, ports):  # Listening: its port checked, its service started.
      while p.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("localhost", port), 1):
          break
        time.sleep(0.1)
    time.sleep(1.0)  # Past the port check's own listener, into JAX's join.
    sent = time.monotonic()
    procs[0].send_signal(signal.SIGINT)
    procs[1].send_signal(signal.SIGTERM)
    results = _finish(procs, 30)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert time.monotonic() - sent < 15, results
  for (rc, _, err), status in zip(results, (130, 143)):
    assert rc == status, err[-3000:]
    assert ("process 0: interrupted while waiting for the other processes to join at "
            "localhost:") in err, err[-3000:]
    assert not _error_lines(err) and "Traceback" not in err, err[-3000:]


def test_a_failed_preparation_on_process_0_stops_every_process(tmp_path):
  _require_cpu_collectives()
  results = _finish(_launch(str(tmp_path / "never.npz"), 2, "--fail_preparing"))
  assert [rc for rc, _, _ in results] == [1, 1], results
  assert "error: no images in /nowhere" in results[0][2]
  assert ("error: process 0 failed at 'prepare the data' (DataError: no images in /nowhere"
          in results[1][2]), results[1][2]


def test_processes_that_find_no_one_stop_with_one_line(tmp_path):
  """Each of 2 processes alone at its own address (a wrong --coordinator_address): process 1
  finds nothing listening there, process 0 waits for a process 1 that never comes. Both end
  with one line and status 1 after the join timeout, not JAX's C++ abort (status 134 on jaxlib
  0.10, 1 with a fatal log on 0.7.2) when its own deadline passes."""
  results = _finish(_launch_each([  # Within 60 s, where JAX's own deadline is 300 s.
      [f"--out={tmp_path / 'never.npz'}", f"--coordinator=localhost:{_free_port()}",
       "--num_processes=2", f"--process_id={i}", "--timeout_s=1"] for i in (0, 1)]), 60)
  for rc, _, err in results:
    assert rc == 1 and len(_error_lines(err)) == 1, err[-3000:]
    assert "Terminating process" not in err, err[-3000:]
  assert "error: process 0: not all 2 processes joined at localhost:" in results[0][2]
  assert ("error: process 1: nothing answered at the coordinator address localhost:"
          in results[1][2]), results[1][2]


def test_processes_given_other_process_counts_stop(tmp_path):
  """--num_processes=2 on process 0 and 3 on process 1: JAX lets process 1 join a run of 2."""
  port = _free_port()
  results = _finish(_launch_each([
      [f"--out={tmp_path / 'never.npz'}", f"--coordinator=localhost:{port}",
       f"--num_processes={n}", f"--process_id={i}", "--timeout_s=30", "--local_devices=2"]
      for i, n in ((0, 2), (1, 3))]), 90)
  for rc, _, err in results:
    assert rc == 1, err[-3000:]
    assert _error_lines(err) == ["error: process 1 was given 3 processes, but process 0 was "
                                 "given 2; pass the same --num_processes (or A2I_NUM_PROCESSES) "
                                 "to every process."], err[-3000:]
  assert not (tmp_path / "never.npz").exists()


def test_one_process_initialises_nothing(monkeypatch):
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
               distributed.ENV_PROCESS_ID, "SLURM_JOB_ID"):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize() == 1
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "1")
  assert distributed.initialize() == 1
  assert distributed.process_count() == 1 and distributed.is_main()
  distributed.barrier("nothing to wait for")
  assert distributed.main_first("work", lambda: 42) == 42
  with distributed.peers_checked():
    pass
  board = distributed.Board("stop at")  # What StopRequest announces its step on.
  assert board.values() == []
  board.post("7")
  assert board.values() == ["7"]


def test_a_coordinator_port_in_use_is_one_line():
  """Was: process 0 ended in a segmentation fault (gRPC could not listen on the port) when
  another program, or a second process given --process_id=0, held the port."""
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(ConfigError, match=f"process 0: port {port} of --coordinator_address="
                       f"localhost:{port} is in use on this host"):
      distributed.initialize(f"localhost:{port}", num_processes=2, process_id=0)
  assert distributed.process_count() == 1  # Nothing was joined.


def test_a_coordinator_port_without_permission_is_one_line(monkeypatch):
  """A port below 1024 for a user without privileges (the bind refused as such; the suite
  may run as root, which may listen there)."""
  def refuse(self, address):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
  monkeypatch.setattr(socket.socket, "bind", refuse)
  with pytest.raises(ConfigError, match="process 0 may not listen on port 80 of "
                     "--coordinator_address=localhost:80 .permission denied"):
    distributed.initialize("localhost:80", num_processes=2, process_id=0)


def test_a_coordinator_address_that_does_not_lead_to_process_0_is_one_line(monkeypatch):
  """Process 0's own client connects to the coordinator address, and its service listens on
  its host. Was: a mistyped host name, or another host's address, given to process 0 kept
  every process waiting the join's whole timeout (300 s), then said that not all processes
  had joined."""
  port, connect = _free_port(), socket.create_connection
  with pytest.raises(ConfigError, match=f"process 0: --coordinator_address=localhsot.invalid:"
                     f"{port} does not lead to this host \\("):  # A name that never resolves.
    distributed.initialize(f"localhsot.invalid:{port}", num_processes=2, process_id=0)
  def elsewhere(address, timeout):  # Another host: nothing listens there.
    raise ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
  monkeypatch.setattr(socket, "create_connection", elsewhere)
  with pytest.raises(ConfigError, match="does not lead to this host .Connection refused"):
    distributed.initialize(f"10.0.0.9:{port}", num_processes=2, process_id=0)
  # A second process 0, on another host than the first, whose service answers (was: JAX's
  # fatal log on the processes already running, "a different incarnation").
  monkeypatch.setattr(distributed, "_SELF_CONNECT_S", 0.3)
  with socket.socket() as first:
    first.bind(("127.0.0.1", 0))
    first.listen()
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: connect(
        ("127.0.0.1", first.getsockname()[1]), timeout))
    with pytest.raises(ConfigError, match=r"does not lead to this host \(something else "
                       r"answers there\), .* \(one process 0 in all\)"):
      distributed.initialize(f"10.0.0.9:{port}", num_processes=2, process_id=0)
  assert distributed.process_count() == 1  # Nothing was joined.


def test_a_loopback_coordinator_address_is_named_as_each_hosts_own():
  """Was: --coordinator_address=localhost:PORT on several hosts: each waited 300 s, then said
  only that nothing answered there (process 1) or that not all processes joined (process 0)."""
  port = _free_port()
  with pytest.raises(ConfigError, match=re.escape(
      f"process 1: nothing answered at the coordinator address localhost:{port} within 0 s") +
      r".* to every other process \(localhost is each host's own: processes on several hosts "
      r"need process 0's host name or address\)\.$"):
    distributed._wait_for_coordinator(  # pylint: disable=protected-access
        f"localhost:{port}", 1, time.monotonic() + 0.2, 0.2)
  assert distributed._each_host_its_own("10.0.0.9:1") == ""  # pylint: disable=protected-access


@pytest.mark.parametrize("env, message", [
    ({"A2I_NUM_PROCESSES": "2"}, "need the coordinator address"),
    ({"A2I_NUM_PROCESSES": "two"}, "is not an integer"),
    ({"A2I_NUM_PROCESSES": "2", "A2I_COORDINATOR": "localhost:1", "A2I_PROCESS_ID": "2"},
     "outside [0, 2)"),
    ({"A2I_NUM_PROCESSES": "0"}, "set it to 1 or more"),
    ({"A2I_NUM_PROCESSES": "1", "A2I_PROCESS_ID": "1"},  # Was: ran alone, as a process 0.
     "process id 1 given, but a process count of 1: pass the job's process count"),
])
def test_incomplete_settings_are_config_errors(monkeypatch, env, message):
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")
                     .replace(")", r"\)")):
    distributed.initialize()


def test_put_and_fetch_in_one_process_are_device_put_and_get():
  mesh = parallel.make_mesh()
  x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
  batch = parallel.put_batch({"x": x}, mesh)
  assert batch["x"].sharding == parallel.batch_sharded(mesh)
  np.testing.assert_array_equal(parallel.fetch(batch)["x"], x)
  rep = parallel.put_replicated(x, mesh)
  assert rep.sharding.is_fully_replicated
  np.testing.assert_array_equal(parallel.fetch(rep), x)


def test_other_processes_log_warnings_only_with_their_id(monkeypatch):
  import io  # pylint: disable=import-outside-toplevel
  import logging  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  root, stream = logging.getLogger(), io.StringIO()
  handler = logging.StreamHandler(stream)
  level, verbosity = root.level, absl_logging.get_verbosity()
  monkeypatch.setattr(root, "handlers", [handler])
  monkeypatch.setattr(distributed, "process_index", lambda: 3)
  try:
    distributed.configure_logging()
    distributed.configure_logging()  # Twice: still one prefix.
    logging.getLogger("a2i_jax.x").info("step 5")
    logging.getLogger("a2i_jax.x").warning("disk %s", "full")
  finally:
    root.setLevel(level)
    absl_logging.set_verbosity(verbosity)
  assert stream.getvalue() == "[process 3] disk full\n"


def _two_processes_store(monkeypatch, mirror: bool = False) -> dict:
  """A coordinator's key-value store (the dict returned) of two processes, in this one. With
  `mirror`, a value process 0 has not given reads as process 1's (the same on both)."""
  store = {}

  class Client:
    def key_value_set(self, key, value):
      store[key] = value

    def blocking_key_value_get(self, key, timeout_ms):
      del timeout_ms
      if "/barrier/" in key:
        return "here"  # The other process has reached every barrier.
      if mirror and key.endswith("/0") and key not in store:
        return store[key[:-1] + "1"]
      return store[key]  # A missing key: the KeyError a wait for it would end in.
  monkeypatch.setattr(distributed, "_client", Client)
  monkeypatch.setattr(distributed, "process_count", lambda: 2)
  return store


def test_processes_that_chose_other_convolution_kernels_stop(monkeypatch):
  """Each process times its CPU's kernels (perf.recommended_cpu_flags) and the CPU's "auto"
  forms follow the choice; processes that chose differently would build different programs.
  The join compares them through the coordinator's key-value store (a dict here)."""
  store = _two_processes_store(monkeypatch)
  kernels = lambda value: distributed.same_on_every_process("the convolution kernels", value,
                                                            "set XLA_FLAGS")

  def on_process(index, value):  # The same call, as process `index` makes it.
    monkeypatch.setattr(distributed, "process_index", lambda: index)
    monkeypatch.setattr(distributed, "_step_counts", {})
    kernels(value)
  store["a2i/1/the convolution kernels/value/1"] = "XLA's own"  # Process 1 said its value.
  on_process(0, "XLA's own")
  assert store["a2i/1/the convolution kernels/value/0"] == "XLA's own"
  on_process(1, "XLA's own")
  with pytest.raises(ConfigError, match=r"process 1: the convolution kernels: YNNPACK's here, "
                     r"XLA's own on process 0; set XLA_FLAGS"):
    on_process(1, "YNNPACK's")
  # Process 0 stops too where another process's value differs.
  store["a2i/1/the convolution kernels/value/1"] = "YNNPACK's"
  with pytest.raises(ConfigError, match=r"process 0: the convolution kernels: XLA's own here, "
                     r"YNNPACK's on process 1; set XLA_FLAGS"):
    on_process(0, "XLA's own")
  monkeypatch.setattr(distributed, "_client", lambda: None)  # One process: nothing to compare.
  distributed.same_on_every_process("the convolution kernels", "anything", "")


@pytest.mark.parametrize("what, fix", [
    ("the devices", "give every process as many devices of one platform"),
    ("the software", "run the same on every host: one a2i-jax checkout"),
    ("JAX's options", r"set the same JAX_\* environment variables on every host "
     r"\(JAX_DEFAULT_PRNG_IMPL, "),
])
def test_processes_that_would_build_other_programs_stop(monkeypatch, what, fix):
  """Each was a run to its end, all with status 0, or a misleading error: a host with another
  checkout of the library (its KL term weighed 1.2 times) or with JAX_DEFAULT_PRNG_IMPL=rbg
  (another initial state, other batches) trained with the others, their replicated states
  apart; one with 6 devices beside one with 2 stopped at Orbax's start with advice to move a
  "damaged" step folder away. The join compares them through the coordinator's store."""
  store = _two_processes_store(monkeypatch, mirror=True)  # Else process 0's value is ours.
  store[f"a2i/1/{what}/value/0"] = "something else"  # Process 0's, where it differs.
  monkeypatch.setattr(distributed, "process_index", lambda: 1)
  monkeypatch.setattr(distributed, "_step_counts", {})
  with pytest.raises(ConfigError, match=f"^process 1: {re.escape(what)}: .+ here, something "
                     f"else on process 0; {fix}"):
    distributed._check_same_programs()  # pylint: disable=protected-access
  del store[f"a2i/1/{what}/value/0"]  # The same on both.
  monkeypatch.setattr(distributed, "_step_counts", {})
  distributed._check_same_programs()  # pylint: disable=protected-access


def test_a_shared_step_one_process_skips_shifts_no_other_key(monkeypatch):
  """The store's keys are counted per name: one count for all shifted every later key where
  one host took a step another skipped (a synthetic main_first behind an empty data.cache_dir
  on one host), and both waited 6 hours for keys no one would set (a review finding)."""
  store = _two_processes_store(monkeypatch)
  for index, cached in ((0, True), (1, False)):
    monkeypatch.setattr(distributed, "process_index", lambda index=index: index)
    monkeypatch.setattr(distributed, "is_main", lambda index=index: index == 0)
    monkeypatch.setattr(distributed, "_step_counts", {})
    if cached:  # Process 0's cache folder: prepared first, the others then read it.
      distributed.main_first("synthetic data x.npz", lambda: None)
    else:  # Process 1 reads process 0's value under the same key (was one step apart).
      assert store.pop("a2i/1/the training data/value/0") == "abc"
      store["a2i/1/the training data/value/0"] = "abc"
    store.setdefault("a2i/1/the training data/value/1", "abc")  # Process 1's, for process 0.
    distributed.same_on_every_process("the training data", "abc", "give the same data")


# ----------------------------------------------------------------------------------------------
# The entry points themselves, as a user runs them on every host.

def _train_py(workdir: str, flags: list, num_processes: int, fault: str = "",
              script: str = "", logs: str = "") -> list:
  """train.py (through faults_lib when a fault is injected; or `script`, e.g. infer.py) in
  `num_processes` processes of 4 / n CPU devices each; returns [(returncode, stdout, stderr)]
  per process. `logs`: a folder where each process writes stdout and stderr together into a
  file, as a job scheduler's log (returned as stderr), instead of pipes this process reads."""
  import faults_lib  # pylint: disable=import-outside-toplevel
  env = _entry_point_env(4 // num_processes, fault)
  command = faults_lib.command(workdir, *flags, fault=fault)
  if script:
    command = [sys.executable, os.path.join(faults_lib.ROOT, script), f"--workdir={workdir}",
               *flags]
  extra = []
  if num_processes > 1:
    extra = [f"--coordinator_address=localhost:{_free_port()}", f"--num_processes={num_processes}"]
  argv = [command + extra + ([f"--process_id={i}"] if extra else [])
          for i in range(num_processes)]
  if not logs:
    return _finish([launcher.popen(a, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, slot=i) for i, a in enumerate(argv)])
  os.makedirs(logs, exist_ok=True)
  paths = [os.path.join(logs, f"process{i}.log") for i in range(num_processes)]
  procs = []
  for i, (a, path) in enumerate(zip(argv, paths)):
    with open(path, "w") as log:
      procs.append(launcher.popen(a, env=env, stdout=log, stderr=subprocess.STDOUT, slot=i))
  results = []
  for p, path in zip(procs, paths):
    p.wait(timeout=START_TIMEOUT_S)
    with open(path) as f:
      results.append((p.returncode, "", f.read()))
  return results


def _entry_point_env(local_devices: int, fault: str = "") -> dict:
  """faults_lib's subprocess environment, with `local_devices` CPU devices per process."""
  import faults_lib  # pylint: disable=import-outside-toplevel
  env = faults_lib.environment(fault)
  env["XLA_FLAGS"] = " ".join(
      [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
      + [f"--xla_force_host_platform_device_count={local_devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _two_processes(argv: Callable[[int], list]) -> list:
  """`argv(i)` started as process i of a two-process job of 2 CPU devices each."""
  env = _entry_point_env(2)
  port = _free_port()
  return [launcher.popen([*argv(i), f"--coordinator_address=localhost:{port}",
                          "--num_processes=2", f"--process_id={i}"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, slot=i)
          for i in (0, 1)]


def test_train_py_in_two_processes_resumes_after_both_are_killed(tmp_path, train_py_flags,
                                                                  train_py_reference):
  """train.py in 2 processes x 2 devices, both killed at step 3 and started again, ends where
  1 process x 4 devices ends uninterrupted (the session's train.py reference run, conftest):
  the same losses per step and the same parameters.

  The tolerances are Adam's, not the 1e-5 of the SGD comparison above: the two programs sum
  in another order, and Adam turns a rounding-sized difference in a near-zero gradient into a
  step of up to the learning rate (3e-4) either way, so after 6 steps a parameter whose
  gradient keeps changing sign may differ by up to 2 x 6 x 3e-4.
  """
  _require_cpu_collectives()
  import faults_lib  # pylint: disable=import-outside-toplevel
  flags = train_py_flags
  one, two = train_py_reference, str(tmp_path / "two")
  killed = _train_py(two, flags, 2, fault="kill_after_step:3")
  assert all(rc != 0 for rc, _, _ in killed)
  assert faults_lib.read_rows(two)[-1]["step"] == 3  # Killed between checkpoints 2 and 4.
  for rc, _, err in _train_py(two, flags, 2):
    assert rc == 0, err[-3000:]
  rows_one, rows_two = faults_lib.read_rows(one), faults_lib.read_rows(two)
  assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]  # One row per step.
  for a, b in zip(rows_one, rows_two):
    for key in ("train/loss", "train/grad_norm", "val/loss"):
      if key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4)
  final_one, final_two = faults_lib.final_state(one), faults_lib.final_state(two)
  assert int(final_one.step) == int(final_two.step) == TRAIN_PY_STEPS
  for x, y in zip(jax.tree_util.tree_leaves(final_one.params),
                  jax.tree_util.tree_leaves(final_two.params)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=2 * TRAIN_PY_STEPS * 3e-4)

  # infer.py in 2 processes writes what 1 process of 4 devices writes (process 0 writes, the
  # numbers agree). The one process is this one, whose 4 devices are conftest's: an infer.py
  # start costs seconds of the suite.
  import infer  # pylint: disable=import-outside-toplevel
  outs = {n: str(tmp_path / f"complete{n}") for n in (1, 2)}
  infer.run_modes(infer.Options(
      workdirs=[two], modes=["complete"], out=outs[1], step=None, input=None, num_images=6,
      samples_per_attribute=8, attribute=None, value=None, occlusions=["eyes", "block8"],
      steps=3, restarts=None, num_examples=-1, attribute_fidelity=True, seed=0))
  for rc, _, err in _train_py(two, ["--mode=complete", "--num_images=6", "--steps=3",
                                    "--occlusion=eyes,block8", f"--out={outs[2]}"], 2,
                              script="infer.py"):
    assert rc == 0, err[-3000:]
  assert sorted(os.listdir(outs[1])) == sorted(os.listdir(outs[2]))
  with open(os.path.join(outs[1], "complete.json")) as f1, \
       open(os.path.join(outs[2], "complete.json")) as f2:
    a, b = json.load(f1), json.load(f2)
  assert a["images"] == b["images"] and a["hidden_pixel_mse"].keys() == b["hidden_pixel_mse"].keys()
  for name, values in a["hidden_pixel_mse"].items():
    np.testing.assert_allclose(b["hidden_pixel_mse"][name], values, rtol=1e-5)


def test_a_bug_on_one_process_of_train_py_stops_both_at_once(tmp_path, train_py_flags):
  """An exception that is no A2IError (a bug) on process 1 at step 2: it prints its traceback
  and leaves at once, and process 0, in the next step's collective, stops too. Python's normal
  exit would wait at JAX's shutdown barrier (60 s here, 300 s on jaxlib 0.7.2) while process
  0 waited for it, and JAX would then abort both.

  Was also (jaxlib 0.7.2, CI 2026-12-04): process 1 closed its checkpointer on the way out and
  waited for its step-2 save, which waits at Orbax's barrier for process 0's; process 0's
  save waited behind its step-3 collective, which waited for process 1: both hung. A process
  leaving on an error now gives its pending save `PENDING_SAVE_GRACE_S`."""
  _require_cpu_collectives()
  import faults_lib  # pylint: disable=import-outside-toplevel
  procs = _two_processes(lambda i: [
      sys.executable, DRIVER, "--raise_at=1:2", os.path.join(faults_lib.ROOT, "train.py"),
      f"--workdir={tmp_path / 'w'}", *train_py_flags])
  (rc0, _, err0), (rc1, _, err1) = _finish(procs, 150)
  ended = time.time()
  raised = [float(line.split()[-1]) for line in err1.splitlines() if line.startswith("raising at")]
  assert len(raised) == 1, err1[-3000:]
  # Under JAX's shutdown barrier of 60 s, which it waited before, with room for a busy machine
  # (a review found the 30 s this said before a flake risk).
  assert ended - raised[0] < 50, (ended - raised[0], err0[-2000:], err1[-2000:])
  assert rc1 == 1, err1[-3000:]
  assert "RuntimeError: injected on process 1 at step 2" in err1
  assert "Terminating process" not in err1, err1[-3000:]
  # Process 0: as a dead peer stops it (test_a_dead_process_stops_the_other_with_an_error).
  if "JAX distributed service detected fatal errors" in err0:
    assert rc0 in (-signal.SIGABRT, 1), (rc0, err0[-3000:])
  else:
    assert rc0 == 1, err0[-3000:]
    assert "error: process 0: another process stopped answering" in err0, err0[-3000:]
  # What was saved is whole: a save that was given up stays a temporary folder.
  ckpt = checkpoints.Checkpointer(str(tmp_path / "w"), create=False)
  assert all(ckpt.summed(step) for step in ckpt.all_steps())
  ckpt.newest_intact_step()


def test_a_bug_after_the_last_step_lets_the_finished_process_end_at_once(tmp_path,
                                                                         train_py_flags):
  """The bug on process 1 after the last step's row: process 0 has nothing left that needs
  it. Was: process 0, its run finished and saved, waited at JAX's shutdown barrier for the
  process that had left, until JAX ended it 50-60 s later with its fatal log (status 1 on
  jaxlib 0.7.2, SIGABRT on 0.10). Now each process records in the coordinator's store that it
  is done or leaving (`distributed.finish`, `exit_now`), and a finished one whose peer left
  leaves at once, with status 0. (Two steps, one checkpoint, the evaluation at 2: the 6 of
  `train_py_flags` added nothing but seconds.)"""
  _require_cpu_collectives()
  import faults_lib  # pylint: disable=import-outside-toplevel
  steps = 2
  procs = _two_processes(lambda i: [
      sys.executable, DRIVER, f"--raise_at=1:{steps}:val",
      os.path.join(faults_lib.ROOT, "train.py"), f"--workdir={tmp_path / 'w'}", *train_py_flags,
      f"--config.num_train_steps={steps}", f"--config.eval_every_steps={steps}"])
  (rc0, _, err0), (rc1, _, err1) = _finish(procs, 150)
  ended = time.time()
  raised = [float(line.split()[-1]) for line in err1.splitlines() if line.startswith("raising at")]
  assert len(raised) == 1 and rc1 == 1, err1[-3000:]
  assert rc0 == 0 and "Terminating process" not in err0, err0[-3000:]
  assert ended - raised[0] < 40, (ended - raised[0], err0[-2000:])  # JAX ended it at 50-60 s.
  assert faults_lib.final_state(str(tmp_path / "w")).step == steps


def test_two_ctrl_cs_as_the_last_evaluation_begins_end_both_with_a_line(tmp_path,
                                                                         train_py_flags):
  """Two Ctrl-Cs (a stop, then "stop now") on process 1 as the last evaluation begins, after
  the last step's save: process 1 leaves with its interrupted line, status 130, and process 0
  ends with a line of its own. Was: process 0 waited in the evaluation's collective for
  process 1 until JAX's heartbeat ended it with its fatal log (a C++ abort).

  Two steps, one checkpoint (step 2) and the evaluation at 2: the 6 steps of `train_py_flags`
  added nothing but seconds of the suite."""
  _require_cpu_collectives()
  import faults_lib  # pylint: disable=import-outside-toplevel
  steps = 2
  procs = _two_processes(lambda i: [
      sys.executable, DRIVER, "--sigint_twice_in_eval=1",
      os.path.join(faults_lib.ROOT, "train.py"), f"--workdir={tmp_path / 'w'}", *train_py_flags,
      f"--config.num_train_steps={steps}", f"--config.eval_every_steps={steps}"])
  (rc0, _, err0), (rc1, _, err1) = _finish(procs, 150)
  ended = time.time()
  asked = [float(line.split()[-1]) for line in err1.splitlines()
           if line.startswith("interrupting at")]
  assert len(asked) == 1 and rc1 == 130, err1[-3000:]
  assert err1.strip().splitlines()[-1] == interrupts.interrupted_words(steps, steps), err1[-3000:]
  assert rc0 == 1 and _error_lines(err0) == [
      f"error: process 0: process 1 did not reach 'the evaluation of step {steps}': "
      "it stopped first (exit status 130), and its log says why."], err0[-3000:]
  for err in (err0, err1):
    assert "Traceback" not in err and "Terminating process" not in err, err[-3000:]
  assert ended - asked[0] < 40, (ended - asked[0], err0[-2000:])  # JAX's heartbeat: 60 s.


def test_a_stop_asked_of_one_process_stops_all_at_one_step(tmp_path, train_py_flags):
  """Was: Ctrl-C reaching process 1 of 2 hung both for good, nothing saved (each decided
  alone whether to dispatch ahead, save and stop, and one waited in a collective or a save
  the other never joined). Now every process stops at the step agreed through the
  coordinator, saved, with the one interrupted line and status 130. (A SIGTERM to every
  process, which JAX's preemption notifier caught and training ignored, is the next test's:
  it was a case of this one, 11-14 s of the suite on the oldest pins.)"""
  _require_cpu_collectives()
  import faults_lib  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  # No checkpoint or evaluation on the way (each is a barrier of both): only the stop's save.
  results = _train_py(workdir, [*train_py_flags, "--config.num_train_steps=40",
                                "--config.checkpoint_every_steps=40",
                                "--config.eval_every_steps=40"], 2, fault="sigint_at_step:3@1")
  lines = set()
  for rc, _, err in results:
    assert rc == 130 and "Traceback" not in err, err[-3000:]
    lines.add(err.strip().splitlines()[-1])
  assert len(lines) == 1, lines  # The same step on both.
  (line,) = lines
  step = int(line.split("interrupted at step ")[1].split(";")[0])
  assert 3 < step < 40 and faults_lib.final_state(workdir).step == step, line


def test_a_stop_agreed_at_the_runs_end_leaves_every_process_its_line(tmp_path, train_py_flags):
  """SIGTERM to every process at step 2 of 6 (a scheduler's notice): the agreed stop is the
  run's end, and both processes leave within milliseconds, saved, with one line. Was (3 of 5
  runs): process 0, which hosts JAX's coordination service, left first, and the service's
  end killed process 1 before its line (JAX's fatal log, exit 1 or SIGABRT); process 0 now
  leaves once the others have recorded how they end (`distributed._keep_coordinator_up`).
  And before that: JAX's preemption notifier caught the SIGTERM and training went on,
  ignoring it."""
  _require_cpu_collectives()
  import faults_lib  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  lines = set()
  for rc, _, err in _train_py(workdir, train_py_flags, 2, fault="sigterm_at_step:2",
                              logs=str(tmp_path / "logs")):
    assert rc == 130 and "Terminating process" not in err, err[-3000:]
    assert "interrupted at step" in err.strip().splitlines()[-1], err[-3000:]
    lines.add(err.strip().splitlines()[-1])
  assert len(lines) == 1, lines  # The same step on both, and its state saved.
  step = int(lines.pop().split("interrupted at step ")[1].split(";")[0])
  assert faults_lib.final_state(workdir).step == step, step


def test_processes_given_other_configs_stop(tmp_path, train_py_flags):
  """Was: processes launched with different configs (here another seed on process 1) trained
  together without a word, their "replicated" states apart and one of them checkpointed."""
  _require_cpu_collectives()
  import faults_lib  # pylint: disable=import-outside-toplevel
  procs = _two_processes(lambda i: [
      sys.executable, os.path.join(faults_lib.ROOT, "train.py"), f"--workdir={tmp_path / 'w'}",
      *train_py_flags, *([f"--config.seed={i}"] if i else [])])
  for index, (rc, _, err) in enumerate(_finish(procs, 150)):
    lines = _error_lines(err)
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    # The key that differs, with both values (was two hashes, which named none).
    assert lines[0].startswith(f"error: process {index}: the config: seed={index} here, "
                               f"{1 - index} on process {1 - index}; start every process"), lines
    assert "start every process with the same --config" in lines[0], lines
  assert not (tmp_path / "w").exists()  # Refused before anything was written.


def test_a_difference_in_json_is_named_by_its_keys():
  """`json_differences`: what infer.py's flags and train.py's config checks say where two
  processes differ (were two 16-digit hashes, or the whole JSON of infer.py's flags)."""
  a = json.dumps({"seed": 0, "model.name": "cvae", "x": [1, 2], "a": 1, "b": 2})
  b = json.dumps({"seed": 1, "model.name": "cvae", "x": [1, 3], "c": 3})
  assert distributed.json_differences(a, b, 0) == (
      "a=1 here, (none) on process 0; b=2 here, (none) on process 0; c=(none) here, 3 "
      "on process 0; and 2 more keys")
  # A key one side lacks is told from a value "(none)" (review: both were "(none)", quoted).
  assert distributed.json_differences(json.dumps({"k": "(none)"}), "{}", 1) == (
      'k="(none)" here, (none) on process 1')
  assert distributed.json_differences(a, b, 1, shown=5).endswith(
      "seed=0 here, 1 on process 1; x=[1, 2] here, [1, 3] on process 1")


def test_a_wait_on_another_process_says_whether_it_ran_out():
  """Was: "process 0 did not finish 'synthetic data ...' within 21600 s (UNAVAILABLE: Socket
  closed)" for a wait that the coordinator's end had cut after a second."""
  class Client:  # The coordinator's store as the runtime's client answers.
    def __init__(self, delay_s):
      self.delay_s = delay_s

    def blocking_key_value_get(self, key, timeout_ms):
      time.sleep(self.delay_s)
      raise RuntimeError("UNAVAILABLE: Socket closed\nmore")
  wait = distributed._value_of_process  # pylint: disable=protected-access
  with pytest.raises(distributed.DataError, match=r"process 0 did not finish 'x' \(the wait "
                     r"ended after 0 s: a process stopped, whose log says why\) \(UNAVAILABLE: "
                     r"Socket closed\)\.$"):
    wait(Client(0.0), 0, "k", 600, "did not finish 'x'")
  with pytest.raises(distributed.DataError, match=r"process 0 did not finish 'x' within 0 s "
                     r"\(UNAVAILABLE"):
    wait(Client(0.2), 0, "k", 0.2, "did not finish 'x'")


class _Store:
  """The coordinator's store as the runtime's client answers, for one process of two whose
  peer's values come from `peer(key)` (None: never set)."""

  def __init__(self, peer: Callable, ended: str = ""):
    self.own, self.peer, self.ended = {}, peer, ended

  def key_value_set(self, key, value):
    self.own[key] = value

  def blocking_key_value_get(self, key, timeout_ms):
    value = self.own.get(key, self.peer(key))
    if value is None and "/barrier/" in key and not self.ended:
      value = "here"  # A peer that has not left reaches every barrier.
    if value is None:
      time.sleep(timeout_ms / 1000)
      raise RuntimeError("DEADLINE_EXCEEDED: timed out")
    return value

  def key_value_try_get(self, key):
    if key.startswith("a2i/end/") and self.ended:
      return self.ended
    raise RuntimeError("NOT_FOUND")


def _as_process(monkeypatch, index: int, store: _Store) -> None:
  monkeypatch.setattr(distributed, "_client", lambda: store)
  monkeypatch.setattr(distributed, "process_index", lambda: index)
  monkeypatch.setattr(distributed, "process_count", lambda: 2)
  monkeypatch.setattr(distributed, "COORDINATOR_GRACE_S", 0.0)


def test_a_workdir_the_hosts_do_not_share_is_refused(tmp_path, monkeypatch):
  """Was: a workdir on each host's own disk (or another --workdir per process) hung every
  process at the first checkpoint save, without a line (review finding). Process 0 marks
  the folder; each process says whether it sees the mark, and all stop where one does not."""
  fix = "put --workdir on shared storage"
  monkeypatch.setattr(distributed, "SHARED_FOLDER_WAIT_S", 0.2)  # A "no" is asked again.
  shared = tmp_path / "shared"
  shared.mkdir()
  (shared / ".mark").write_text("")
  seen = {"yes": "yes", "no": f"no ({tmp_path})"}
  for answer in ("yes", "no"):
    # Process 1: process 0 put ".mark" in its folder.
    _as_process(monkeypatch, 1, _Store(lambda k: "0/.mark" if k.endswith("/marker")
                                       else "yes" if k.endswith("/value/0") else None))
    folder = shared if answer == "yes" else tmp_path
    if answer == "yes":
      distributed.check_shared_folder(str(folder), "the workdir", fix)
    else:
      with pytest.raises(ConfigError, match=re.escape(
          f"process 1: whether it sees the workdir of process 0: {seen['no']} here, yes on "
          f"process 0; {fix}.")):
        distributed.check_shared_folder(str(folder), "the workdir", fix)
    # Process 0: its mark goes again, whatever process 1 answers.
    _as_process(monkeypatch, 0, _Store(lambda k, a=answer: seen[a] if k.endswith("/value/1")
                                       else None))
    if answer == "yes":
      distributed.check_shared_folder(str(shared), "the workdir", fix)
    else:
      with pytest.raises(ConfigError, match=re.escape(
          f"process 0: whether it sees the workdir of process 0: yes here, {seen['no']} on "
          "process 1")):
        distributed.check_shared_folder(str(shared), "the workdir", fix)
    assert sorted(os.listdir(shared)) == [".mark"]
  # A marker a killed process 0 left an hour ago goes at the next check; a newer one (another
  # check under way) stays.
  old, recent = shared / ".a2i-shared-1-1", shared / ".a2i-shared-2-2"
  for marker in (old, recent):
    marker.write_text("")
  os.utime(old, (time.time() - 7200,) * 2)
  _as_process(monkeypatch, 0, _Store(lambda k: "yes" if k.endswith("/value/1") else None))
  distributed.check_shared_folder(str(shared), "the workdir", fix)
  assert sorted(os.listdir(shared)) == [".a2i-shared-2-2", ".mark"]
  # A new run's workdir, not made yet: checked before the data load (was after it: a host
  # given another --workdir waited out LFW's preparation first), at the nearest folder there,
  # each process as many levels up its own path (mounted elsewhere).
  store = _Store(lambda k: "yes" if k.endswith("/value/1") else None)
  _as_process(monkeypatch, 0, store)
  distributed.check_shared_folder(str(shared / "runs" / "a"), "the workdir", fix)
  (value,) = [v for k, v in store.own.items() if k.endswith("/marker")]
  assert value.startswith("2/.a2i-shared-") and not (shared / "runs").exists()
  mounted = tmp_path / "elsewhere"
  mounted.mkdir()
  (mounted / ".mark").write_text("")
  _as_process(monkeypatch, 1, _Store(lambda k: "2/.mark" if k.endswith("/marker")
                                     else "yes" if k.endswith("/value/0") else None))
  distributed.check_shared_folder(str(mounted / "runs" / "a"), "the workdir", fix)
  # A folder process 0 cannot write to (the check now runs before the run's own storage
  # checks): one line on every process, not a traceback on one and a wait on the others.
  store = _Store(lambda k: None)
  _as_process(monkeypatch, 0, store)
  monkeypatch.setattr("builtins.open", _refuse_writes(open))
  with pytest.raises(distributed.WorkdirError, match=f"process 0: cannot write to {shared} "
                     r"\(Read-only file system\), where the workdir is checked; " + fix):
    distributed.check_shared_folder(str(shared / "runs" / "a"), "the workdir", fix)
  (mark,) = [v for k, v in store.own.items() if k.endswith("/marker")]
  _as_process(monkeypatch, 1, _Store(lambda k: mark if k.endswith("/marker") else None))
  with pytest.raises(distributed.WorkdirError, match=r"process 1: process 0 cannot write to "
                     r"the workdir \(Read-only file system\); " + fix):
    distributed.check_shared_folder(str(mounted), "the workdir", fix)


def _refuse_writes(real_open):
  """`open` as on a read-only file system for files opened to write."""
  def refusing(file, mode="r", *args, **kwargs):
    if "w" in mode:
      raise OSError(30, "Read-only file system")
    return real_open(file, mode, *args, **kwargs)
  return refusing


def test_process_0_chooses_and_a_peer_that_left_is_named(monkeypatch):
  """`value_of_process_0`: what infer.py's processes restore (was: each its own newest
  checkpoint, so a save in between mixed two models' images; review finding). A wait on a
  peer that left first (an error before the first shared step) says so at once; it waited
  for JAX's heartbeat to end it with a fatal log."""
  _as_process(monkeypatch, 1, _Store(lambda k: "6" if k.endswith("/chosen") else None))
  assert distributed.value_of_process_0("the newest checkpoint", "8") == "6"
  _as_process(monkeypatch, 0, _Store(lambda k: None))
  assert distributed.value_of_process_0("the newest checkpoint", "8") == "8"
  monkeypatch.setattr(distributed, "_POLL_S", 0.05)
  _as_process(monkeypatch, 0, _Store(lambda k: None, ended="left:1"))
  started = time.monotonic()
  with pytest.raises(distributed.DataError, match=r"process 0: process 1 did not give "
                     r"config: it stopped first \(exit status 1\), and its log says"):
    distributed.same_on_every_process("config", "a", "fix it", timeout_s=60)
  assert time.monotonic() - started < 30  # Not the whole 60 s of the timeout.


def test_a_barrier_a_peer_left_before_stops_at_once(monkeypatch):
  """Was: the runtime's barrier, one wait for its whole timeout, so a peer whose compile failed
  kept the others at the train step's compile barrier for an hour (review finding)."""
  monkeypatch.setattr(distributed, "_POLL_S", 0.05)
  store = _Store(lambda k: None)
  _as_process(monkeypatch, 1, store)
  distributed.barrier("the train step's compilation", 60)  # Process 0 got there.
  assert [key.split("/", 2)[2] for key in store.own] == [
      "the train step's compilation/barrier/1"]
  _as_process(monkeypatch, 0, _Store(lambda k: None, ended="left:1"))
  started = time.monotonic()
  with pytest.raises(distributed.DataError, match=r"process 0: process 1 did not reach 'the "
                     r"train step's compilation': it stopped first \(exit status 1\)"):
    distributed.barrier("the train step's compilation", 60)
  assert time.monotonic() - started < 30  # Not the whole 60 s of the timeout.
  # Three processes: process 0 waits on process 1, still compiling, while process 2 has left
  # (was: not looked at, and JAX's heartbeat ended the waiting ones after 60 s, no line).
  class Three(_Store):
    def blocking_key_value_get(self, key, timeout_ms):
      if key.endswith("/barrier/1"):  # Process 1 compiles on.
        time.sleep(timeout_ms / 1000)
        raise RuntimeError("DEADLINE_EXCEEDED: timed out")
      return super().blocking_key_value_get(key, timeout_ms)

    def key_value_dir_get(self, key):
      return [(f"{key}/2", "left:1")]
  _as_process(monkeypatch, 0, Three(lambda k: None))
  monkeypatch.setattr(distributed, "process_count", lambda: 3)
  with pytest.raises(distributed.DataError, match=r"process 0: process 1 did not reach 'the "
                     r"train step's compilation': process 2 stopped first \(exit status 1\)"):
    distributed.barrier("the train step's compilation", 60)


def test_a_barrier_before_a_collective_stops_where_a_peer_left_after_reaching_it(monkeypatch):
  """Process 1 reached the evaluation's barrier, then left (a second Ctrl-C while it waited
  for process 0): process 0, arriving, stops there with a line, not in the evaluation's first
  collective, where it waited for process 1 until JAX's heartbeat ended it (fault hunt)."""
  class Left(_Store):
    def key_value_dir_get(self, key):
      return [(f"{key}/1", "left:130")]
  _as_process(monkeypatch, 0, Left(lambda k: None))
  distributed.barrier("the train step's compilation", 60)  # A barrier before host work.
  with pytest.raises(distributed.PeerLeft, match=r"^process 0: process 1 stopped at 'the "
                     r"evaluation of step 6' \(exit status 130\), and its log says why\.$"):
    distributed.barrier("the evaluation of step 6", 60, collective_next=True)


def test_every_process_sets_aside_the_corrupt_steps_process_0_found(tmp_path, monkeypatch):
  """A process that looks after process 0 has moved a corrupt step aside finds none: was, it
  skipped the shared steps of setting it aside, and process 0 waited at their barrier for it
  (review finding). Each takes process 0's findings."""
  ckpt = checkpoints.Checkpointer(str(tmp_path), 3)  # Nothing here: process 0 moved step 5.
  found = json.dumps([None, [[5, "its checksums differ"]]])
  store = _Store(lambda k: found if k.endswith("the corrupt checkpoints/chosen") else
                 "checkpoints/5.corrupt" if k.endswith("/chosen") else None)
  _as_process(monkeypatch, 1, store)
  with pytest.raises(CheckpointError, match="checkpoint 5 .* is corrupt"):
    ckpt.newest_intact_step(quarantine=True)
  found = json.dumps([3, [[5, "its checksums differ"]]])
  assert ckpt.newest_intact_step(quarantine=True) == 3
  assert any(key.endswith("/a2i_quarantine/barrier/1") for key in store.own)


def test_a_coordinator_or_process_id_without_a_count_is_refused(monkeypatch):
  """Was: taken for one process without a word; two processes so started trained apart."""
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
               distributed.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(distributed, "_detected_process_count", lambda: None)
  with pytest.raises(ConfigError, match="a coordinator address and a process id given, but no "
                     "process count: pass --num_processes"):
    distributed.initialize("localhost:1234", None, 1)
  with pytest.raises(ConfigError, match="^a process id given"):
    distributed.initialize(None, None, 0)
  assert distributed.initialize() == 1


def test_a_failed_gloo_collective_names_the_peer(monkeypatch):
  """jaxlib 0.10 raises a collective that lost its peer as a ValueError ("UNKNOWN: Gloo
  AllGather failed"): it passed `peers_checked` as a traceback (review finding). The
  project's own errors, ValueErrors too, pass as they are."""
  monkeypatch.setattr(distributed, "process_count", lambda: 2)
  with pytest.raises(distributed.PeerError, match="another process stopped answering "
                     r"\(UNKNOWN: Gloo AllGather failed\)"):
    with distributed.peers_checked():
      raise ValueError("UNKNOWN: Gloo AllGather failed\nmore")
  with pytest.raises(ConfigError, match="barrier"):
    with distributed.peers_checked():
      raise ConfigError("a barrier of ours")
