"""Fault hunt of distributed.py's start-up: a coordinator address, a process count and a
cluster environment that a user gets wrong stop with one line. Fast: nothing here waits for
a timeout, and only one test joins two processes (each with nothing but the start-up)."""

import os
import re
import socket
import subprocess
import sys
import warnings

from jax._src import distributed as jax_distributed
import pytest

from a2i_jax import distributed
from a2i_jax.errors import ConfigError

_SLURM = {"SLURM_JOB_ID": "1234", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
          "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _no_settings(monkeypatch):
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
               distributed.ENV_PROCESS_ID, "JAX_COORDINATOR_ADDRESS", *_SLURM):
    monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("host, why", [("node1..cluster", "an empty label between dots"),
                                       ("a" * 64 + ".x", "a label longer than 63 characters")])
@pytest.mark.parametrize("process_id", [0, 1])
def test_a_malformed_coordinator_host_name_is_one_line(monkeypatch, host, why, process_id):
  """Was: UnicodeError's traceback ("encoding with 'idna' codec failed") from the look-up of
  the name, on process 0 (its self-connection) and on the others (the wait for process 0)."""
  _no_settings(monkeypatch)
  address = f"{host}:{_free_port()}"
  with pytest.raises(ConfigError, match=re.escape(
      f"coordinator address {address!r}: the host name {host!r} is malformed ({why}); pass "
      "--coordinator_address=HOST:PORT (or A2I_COORDINATOR) with process 0's host name or "
      "address.")):
    distributed.initialize(address, num_processes=2, process_id=process_id, timeout_s=1)
  monkeypatch.setenv(distributed.ENV_COORDINATOR, address)  # The variable the same.
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
  monkeypatch.setenv(distributed.ENV_PROCESS_ID, str(process_id))
  with pytest.raises(ConfigError, match="is malformed"):
    distributed.initialize(timeout_s=1)
  assert distributed.process_count() == 1  # Nothing was joined.


@pytest.mark.parametrize("port", ["²", "١٢٣٤", "1" * 5000])
def test_a_port_of_other_than_ascii_digits_is_not_host_port(port):
  """Was: "²".isdigit() passed, and int("²") raised a ValueError's traceback; other digits
  ("١٢٣٤") were taken for a port, and 5000 digits were int()'s ValueError too."""
  split = distributed._split_address  # pylint: disable=protected-access
  with pytest.raises(ConfigError, match="is not HOST:PORT; pass --coordinator_address="):
    split(f"localhost:{port}")
  assert split("[::1]:1234") == ("::1", 1234)
  assert split("localhost.:80") == ("localhost.", 80)
  assert split("10.0.0.9:65535") == ("10.0.0.9", 65535)


@pytest.mark.parametrize("count", [1099511627776, 2**31])
def test_a_process_count_past_what_jax_takes_is_one_line(monkeypatch, count):
  """Was: JAX's nanobind "incompatible function arguments" over many lines past int32 (and
  a hang of process 0 just below it, its service sized for them all)."""
  _no_settings(monkeypatch)
  message = re.escape(f"num_processes={count} is more than the 1048576 "
                      "processes a run may have; pass the job's process count "
                      "(--num_processes or A2I_NUM_PROCESSES).")
  address = f"localhost:{_free_port()}"
  with pytest.raises(ConfigError, match=f"^{message}$"):
    distributed.initialize(address, num_processes=count, process_id=0, timeout_s=1)
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, str(count))
  with pytest.raises(ConfigError, match=f"^{message}$"):
    distributed.initialize(address, process_id=1, timeout_s=1)
  assert distributed.process_count() == 1


def test_a_detected_cluster_that_did_not_all_join_is_named(monkeypatch):
  """One process started in a SLURM job of 2 tasks (no srun). Was: "start the same command
  on every host with the same --coordinator_address and --num_processes and a distinct
  --process_id", flags the user never passed. JAX's join is faked: it records what the
  cluster gave, as JAX does, and then gives up, as JAX does when no one else arrives."""
  _no_settings(monkeypatch)
  for name, value in _SLURM.items():
    monkeypatch.setenv(name, value)
  state = jax_distributed.global_state

  def join(**kwargs):
    assert kwargs["coordinator_address"] is None and kwargs["process_id"] is None
    monkeypatch.setattr(state, "coordinator_address", "localhost:62674")
    monkeypatch.setattr(state, "process_id", 0)
    raise RuntimeError("DEADLINE_EXCEEDED: Barrier timed out\nmore")
  monkeypatch.setattr(distributed.jax.distributed, "initialize", join)
  monkeypatch.setattr(distributed, "_backends_ready", lambda: False)
  with pytest.raises(ConfigError) as raised:
    distributed.initialize(timeout_s=30)
  assert str(raised.value) == (
      "process 0: not all 2 processes joined at localhost:62674 within 30 s (DEADLINE_EXCEEDED: "
      "Barrier timed out); SLURM was detected from the environment (2 processes, coordinator "
      "localhost:62674, process id 0), but not every process of the job started: start the "
      "same command under srun (one task per process), or pass --num_processes=1 (or set "
      "A2I_NUM_PROCESSES=1) to run this process alone.")
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "1")  # What the line says runs alone.
  assert distributed.initialize(timeout_s=30) == 1


_START = """
import sys
from a2i_jax import distributed
from a2i_jax.errors import A2IError
try:
  distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), timeout_s=60)
  distributed.start_backend()
except A2IError as e:
  print(f"error: {e}", file=sys.stderr)
  distributed.leave(1)
print("started")
"""


def test_a_process_without_cpu_devices_stops_every_process_with_a_line():
  """Review: with 2 processes, JAX_NUM_CPU_DEVICES=0 on process 1 crashed it inside JAX's
  start of its backend (a segfault, no output) and ended process 0 with JAX's fatal log (or
  a wrong line about process counts). Now both stop, before starting it, each with its line.
  Two real processes: the crash is in JAX's C++ with its distributed client."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  address = f"localhost:{_free_port()}"
  procs = []
  for index in range(2):
    env = {k: v for k, v in os.environ.items()
           if k not in ("A2I_COORDINATOR", "A2I_NUM_PROCESSES", "A2I_PROCESS_ID")}
    env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(1 - index), PYTHONPATH=root)
    procs.append(subprocess.Popen([sys.executable, "-c", _START, address, str(index)],
                                  cwd=root, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  try:
    ends = [p.communicate(timeout=30) for p in procs]
  finally:
    for p in procs:  # One that hangs (was: process 0) is a failure, not a leftover.
      if p.poll() is None:
        p.kill()
        p.wait()
  said = [err.strip().splitlines()[-1:] for _, err in ends]
  assert [p.returncode for p in procs] == [1, 1], (ends, [p.returncode for p in procs])
  assert said == [
      ["error: process 0: process 1 stopped first: JAX_NUM_CPU_DEVICES=0 there gives its CPU "
       "backend no devices (its log says how to fix it)."],
      ["error: process 1: JAX_NUM_CPU_DEVICES=0 gives JAX's CPU backend no devices, so it "
       "cannot start; set JAX_NUM_CPU_DEVICES to 1 or more, or unset it (one device)."]], ends
  assert not any(out for out, _ in ends), ends


class _Store:
  """The coordinator's store as `exit_now` uses it: process 1's record appears only after
  `after` looks at the records."""

  def __init__(self, after: int):
    self.after, self.looks, self.set = after, 0, {}

  def key_value_set(self, key, value):
    self.set[key] = value

  def key_value_dir_get(self, key):
    self.looks += 1
    return [(f"{key}/1", "left:1")] if self.looks > self.after else []


@pytest.mark.parametrize("after", [4, 10**9])
def test_process_0_leaving_keeps_the_coordinator_up_until_the_others_leave(monkeypatch, after):
  """Review: process 0 that alone failed (out of memory at the train step's compile; a Ctrl-C
  in infer.py) kept the coordinator up for a fixed second; process 1, still compiling, then
  met JAX's fatal log, not our line (3 of 3). Now it waits until every other process has
  recorded how it ends, at most LEAVE_GRACE_S (a peer waiting in a collective leaves only
  once process 0 has gone)."""
  store = _Store(after)
  monkeypatch.setattr(distributed, "_client", lambda: store)
  monkeypatch.setattr(distributed, "_joined", lambda: True)
  monkeypatch.setattr(distributed, "_ended", False)
  monkeypatch.setattr(distributed, "_peer_lost", False)
  monkeypatch.setattr(distributed, "process_index", lambda: 0)
  monkeypatch.setattr(distributed, "process_count", lambda: 2)
  monkeypatch.setattr(distributed, "LEAVE_GRACE_S", 1.0)

  def exit_(code):
    raise SystemExit(code)
  monkeypatch.setattr(distributed.os, "_exit", exit_)
  started = distributed.time.monotonic()
  with pytest.raises(SystemExit):
    distributed.exit_now(1)
  waited = distributed.time.monotonic() - started
  assert store.set == {"a2i/end/0": "left:1"}
  if after == 4:  # Until process 1's record, then at once (about 0.2 s of looks).
    assert store.looks == after + 1 and waited < 1.5, (store.looks, waited)
  else:  # Never recorded: no longer than LEAVE_GRACE_S.
    assert 1.0 <= waited < 5.0 and store.looks > 4, (store.looks, waited)  # Loaded CI.


_HOLD = """
import sys
from a2i_jax import distributed
# As its `initialize` does first (getattr: without the claim, the test fails at its line).
getattr(distributed, "_claim_process_id", lambda *_: None)(sys.argv[1], 1, 2)
print("held", flush=True)
sys.stdin.read()  # Until the test closes it.
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the claim is Linux's only")
def test_a_process_id_given_twice_on_one_host_is_one_line(monkeypatch):
  """Fault hunt: a second process given --process_id=1 (a launch script's copy) joined, and
  JAX's coordination service took it for process 1 restarted: process 0 and the first
  process 1 ended with its fatal log ("tried to connect with a different incarnation"), and
  the second waited out the join's timeout for a line that did not name the duplicate. Now
  the second stops at once with one line naming it, before it joins; the others go on."""
  _no_settings(monkeypatch)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  address = f"localhost:{_free_port()}"
  first = subprocess.Popen([sys.executable, "-c", _HOLD, address], cwd=root,
                           env=dict(os.environ, PYTHONPATH=root), stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    assert first.stdout.readline() == "held\n", first.communicate(timeout=30)
    with pytest.raises(ConfigError) as raised:
      # Was: on past it (here to the refusal of a JAX already started: the test's).
      distributed.initialize(address, num_processes=2, process_id=1, timeout_s=1)
    assert str(raised.value) == (
        f"process 1: another process on this host (pid {first.pid}) was started as process 1 "
        f"of the run at --coordinator_address={address}; give each of the 2 processes its own "
        "--process_id (0 to 1, or A2I_PROCESS_ID), or end the other one first.")
    # Process 0 of the same run, and process 1 of another run, are not that one.
    monkeypatch.setattr(distributed, "_backends_ready", lambda: True)  # Stops before joining.
    for address_, index in ((address, 0), (f"localhost:{_free_port()}", 1)):
      with pytest.raises(ConfigError, match="must run before anything uses JAX"):
        distributed.initialize(address_, num_processes=2, process_id=index, timeout_s=1)
  finally:
    first.communicate(input="", timeout=30)
  # Once it has ended, the id is free again; a refusal let go of this process's own claims.
  assert not distributed._claimed  # pylint: disable=protected-access
  monkeypatch.setattr(distributed, "_backends_ready", lambda: True)
  with pytest.raises(ConfigError, match="must run before anything uses JAX"):
    distributed.initialize(address, num_processes=2, process_id=1, timeout_s=1)


def _no_cluster(monkeypatch):
  """No setting of ours and no cluster environment JAX detects (the test machine's own
  variables aside)."""
  _no_settings(monkeypatch)
  for name in list(os.environ):
    if name.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE_")) or name in (
        "KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX", "JAX_LOCAL_DEVICE_IDS"):
      monkeypatch.delenv(name)


@pytest.mark.parametrize("indexed", [False, True])
def test_a_kubernetes_pod_starts_one_process_without_jax_warning(monkeypatch, caplog, indexed):
  """Fault hunt: in any Kubernetes pod (a hosted notebook, GKE) every start of train.py and
  infer.py printed JAX's 7-line UserWarning that its `kubernetes` package is not installed
  ("pip install jax[k8s]"), from the probe for a cluster that tells the process count. Now
  nothing: in a pod of no indexed Job (JOB_COMPLETION_INDEX) Kubernetes is not probed (JAX
  can start processes only in one), and in one the probe's warnings are ignored. At the join
  of processes given their settings, JAX's own probe's warning is left out too."""
  _no_cluster(monkeypatch)
  monkeypatch.setattr(distributed, "_k8s_warned", False)
  monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
  if indexed:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
  monkeypatch.setitem(sys.modules, "kubernetes", None)  # Not installed (an ImportError).
  state = jax_distributed.global_state

  def join(**kwargs):  # JAX probes the clusters it knows at every join, then gives up here.
    from jax._src import clusters  # pylint: disable=import-outside-toplevel
    assert not clusters.K8sCluster.is_env_present()  # Warns where nothing filters it.
    monkeypatch.setattr(state, "coordinator_address", kwargs["coordinator_address"])
    raise RuntimeError("DEADLINE_EXCEEDED: Barrier timed out")
  monkeypatch.setattr(distributed.jax.distributed, "initialize", join)
  monkeypatch.setattr(distributed, "_backends_ready", lambda: False)
  caplog.set_level("INFO")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert distributed.initialize(timeout_s=5) == 1  # One process: the probe alone.
    with pytest.raises(ConfigError, match="not all 2 processes joined"):
      distributed.initialize(f"localhost:{_free_port()}", 2, 0, timeout_s=5)
  assert not [str(w.message) for w in caught], [str(w.message) for w in caught]
  # In an indexed Job's pod JAX's warning was the one word that its pods train apart: one
  # line of the library's own instead, once (read-through); in any other pod, nothing.
  said = [r.getMessage() for r in caplog.records]
  assert len(said) == indexed, said
  assert not said or said[0].startswith("this is a pod of an indexed Kubernetes Job "
                                        "(JOB_COMPLETION_INDEX), but the kubernetes package is "
                                        "not installed, so JAX cannot find the Job's other pods")
  from jax._src import clusters  # pylint: disable=import-outside-toplevel
  with pytest.warns(UserWarning, match="Kubernetes environment detected"):  # What JAX says.
    clusters.K8sCluster.is_env_present()


class _Gpu:  # pylint: disable=too-few-public-methods
  platform = "gpu"


# SLURM's variables in a job of 2 nodes of 8 GPUs (#SBATCH --nodes=2 --gpus-per-node=8).
_SLURM_GPUS = {"SLURM_JOB_ID": "77", "SLURM_NODEID": "0", "SLURM_GPUS_ON_NODE": "8",
               "SLURM_GPUS_PER_NODE": "h100:8", "SLURM_JOB_GPUS": "0,1,2,3,4,5,6,7"}


@pytest.mark.parametrize("tasks_per_node, gpus, warned", [
    ("1(x2)", {}, True),  # --ntasks-per-node=1: each task drives GPU 0 of its node alone.
    ("8(x2)", {}, False),  # One task per GPU: as JAX's SLURM support expects.
    ("2", {"SLURM_GPUS_ON_NODE": "", "SLURM_JOB_GPUS": ""}, True),  # From --gpus-per-node.
    ("1(x2)", {"SLURM_GPUS_ON_NODE": None, "SLURM_JOB_GPUS": None,
               "SLURM_GPUS_PER_NODE": None}, False),  # No GPU count: no word of GPUs.
])
def test_slurm_gpus_that_no_task_drives_are_named(monkeypatch, caplog, tasks_per_node, gpus,
                                                  warned):
  """Fault hunt: under SLURM with one task per node of 8 GPUs, JAX's cluster detection gave
  each process the one GPU of its SLURM_LOCALID (also where every setting was passed), so 2
  nodes trained on 2 GPUs of 16, and no line said which devices were in use. Now process 0
  says the layout, and warns where its node has GPUs that no task drives, naming the fix.
  SLURM's variables and the GPUs are faked: the function, not a join."""
  _no_cluster(monkeypatch)
  for name, value in {**_SLURM_GPUS, "SLURM_STEP_TASKS_PER_NODE": tasks_per_node,
                      **gpus}.items():
    if value is not None:
      monkeypatch.setenv(name, value)
  monkeypatch.setattr(distributed, "process_count", lambda: 2)
  monkeypatch.setattr(distributed, "process_index", lambda: 0)
  monkeypatch.setattr(distributed.jax, "local_devices", lambda: [_Gpu()])
  caplog.set_level("INFO")
  report = getattr(distributed, "_report_layout", None)
  assert report is not None, "no line says the layout"
  report()
  tasks = {"1(x2)": 1, "8(x2)": 8, "2": 2}[tasks_per_node]
  said = [(r.levelname, r.getMessage()) for r in caplog.records]
  line = "2 processes x 1 gpu device each, 2 in all"
  if "SLURM_GPUS_PER_NODE" in gpus:
    assert said == [("INFO", line)]
    return
  line += f" (SLURM: {tasks} task{'s' * (tasks != 1)} and 8 GPUs on this node)"
  assert said[0] == ("INFO", line)
  if not warned:
    assert said == [("INFO", line)]
    return
  alone = (", or keep 1 task per node and set JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7 for it"
           if tasks == 1 else "")
  assert said[1:] == [("WARNING", (
      f"SLURM gave this node 8 GPUs, but the {tasks} task{'s' * (tasks != 1)} on it "
      f"drive{'s' * (tasks == 1)} only {tasks} (1 gpu device each): {8 - tasks} stay idle. "
      "JAX's SLURM support gives each task the one GPU of its SLURM_LOCALID: start one task "
      "per GPU (--ntasks-per-node=8, every task seeing all the node's GPUs: no "
      f"--gpus-per-task){alone}."))]
  caplog.clear()  # One process, or not process 0: not a word (a quiet console).
  for count, index in ((1, 0), (2, 1)):
    monkeypatch.setattr(distributed, "process_count", lambda c=count: c)
    monkeypatch.setattr(distributed, "process_index", lambda i=index: i)
    report()
  assert not caplog.records, caplog.text
