"""Many processes on JAX's multi-controller runtime (docs/design.md §3.6).

Past one machine (a TPU pod slice, several GPU nodes) the same command runs on every host and
`initialize` joins the processes with `jax.distributed.initialize`. One process stays exactly
as it was: nothing is initialised, and every helper here is then a no-op or a constant.

How the processes find each other, first match wins:

1. the arguments of `initialize` (train.py / infer.py: `--coordinator_address`,
   `--num_processes`, `--process_id`);
2. the environment variables `A2I_COORDINATOR` (host:port of process 0), `A2I_NUM_PROCESSES`
   and `A2I_PROCESS_ID`;
3. JAX's own cluster detection: TPU pod slices (GCE and GKE) and SLURM (`srun`), where JAX
   reads the coordinator, the process count and the process id itself.

A process count of 1 (given, or detected) means one process: `A2I_NUM_PROCESSES=1` keeps a
program that runs inside a SLURM job of several tasks to itself.

A dead peer must stop the others with an error, not a hang: the runtime's heartbeat timeout
(`heartbeat_timeout_s`) makes the survivors exit, and `initialize` gives up after `timeout_s`
when not every process arrives. A process that stops on its own leaves through `exit_now`, not
Python's normal exit: that waits at JAX's shutdown barrier for peers that sit in a collective
waiting for it, until JAX aborts them all. One that has done its work ends through `finish`,
which does not wait at that barrier for a peer that has left.
"""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import hashlib
import importlib.util
import inspect
import ipaddress
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Iterator, Optional, TypeVar

import jax

from a2i_jax.errors import A2IError, ConfigError, DataError, WorkdirError

T = TypeVar("T")

ENV_COORDINATOR = "A2I_COORDINATOR"
ENV_NUM_PROCESSES = "A2I_NUM_PROCESSES"
ENV_PROCESS_ID = "A2I_PROCESS_ID"

# Seconds: how long process start-up may be spread out, and how long a silent peer is
# taken to be alive. JAX's defaults are 300 and 100.
DEFAULT_TIMEOUT_S = 300
DEFAULT_HEARTBEAT_TIMEOUT_S = 60
# Waiting for process 0 to prepare a dataset: LFW's preparation trains a mask network, which
# takes long on a CPU. A dead process 0 is caught by the heartbeat sooner.
DATA_TIMEOUT_S = 6 * 3600
# The most processes a run may have: JAX's service takes an int32 count, and sizes itself for
# the count given (2**31 - 1 hung it).
MAX_PROCESSES = 1 << 20
# Seconds JAX's own join deadline is given past `initialize`'s: JAX ends a process that misses
# it with a C++ fatal log, so `initialize`'s watchdog has to say it first.
_JOIN_GRACE_S = 10

# How many shared steps of each name this process has taken (`_next_key`).
_step_counts: dict[tuple[str, str], int] = {}
# What the runtime's errors say when another process has gone (gloo, the coordination
# service, gRPC): the cause is in that process's log, not here.
_PEER_FAILURE_MARKERS = ("gloo", "connection reset", "connection refused", "heartbeat",
                         "coordination", "socket closed", "unavailable", "barrier")


class PeerError(A2IError):
  """Another process of a multi-host run died or stopped answering."""


class PeerLeft(DataError):
  """A process waited for has left first, and recorded so (`exit_now`, `finish`): the wait
  ends at once (a `DataError`, as every failed wait here is)."""


def _jax_state() -> Any:
  """JAX's own record of the join (`jax._src.distributed.global_state`)."""
  from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel
  return jax_distributed.global_state


def _client() -> Any:
  """The runtime's distributed client, or None in a single process."""
  return _jax_state().client


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"{name}={value!r} is not an integer; set it to a whole number or "
                      "unset it.") from None


_k8s_warned = False  # `_detected_cluster_env` warned of a missing kubernetes package.


def _detected_cluster_env() -> Optional[Any]:
  """The cluster environment (JAX's `ClusterEnv` class) that JAX would detect here, or None.

  Its probes run with warnings ignored: in any Kubernetes pod (a hosted notebook, GKE) JAX
  warned in 7 lines that its `kubernetes` package was missing, at every start of a process
  that never asked for others (fault hunt). Kubernetes is probed only in an indexed Job's pod
  (JOB_COMPLETION_INDEX), the only one JAX can start processes in: elsewhere, with that
  package installed, its queries of the cluster's API failed (a notebook's pod is no Job's)
  after retries of seconds, and said so at every start.
  """
  global _k8s_warned
  from jax._src import clusters  # pylint: disable=import-outside-toplevel
  for env in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
    if env.opt_in_only_method or (env.__name__ == "K8sCluster"
                                  and "JOB_COMPLETION_INDEX" not in os.environ):
      continue
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      present = env.is_env_present()
    if present:
      return env
    if (env.__name__ == "K8sCluster" and importlib.util.find_spec("kubernetes") is None
        and not _k8s_warned):
      # JAX's warning, left out above, was the only word: each pod trained on alone.
      _k8s_warned = True
      logging.warning("this is a pod of an indexed Kubernetes Job (JOB_COMPLETION_INDEX), but "
                      "the kubernetes package is not installed, so JAX cannot find the Job's "
                      "other pods, and this process runs alone; install it (pip install "
                      "'jax[k8s]'), or pass --coordinator_address, --num_processes and "
                      "--process_id (or %s, %s and %s).", ENV_COORDINATOR, ENV_NUM_PROCESSES,
                      ENV_PROCESS_ID)
  return None


# JAX's cluster environments (its class names) in words, and how every task of one is started.
_CLUSTERS = {
    "SlurmCluster": ("SLURM", "under srun (one task per process)"),
    "OmpiCluster": ("Open MPI", "under mpirun (one rank per process)"),
    "Mpi4pyCluster": ("MPI", "under mpirun (one rank per process)"),
    "GceTpuCluster": ("a TPU pod slice (GCE)", "on every host of the slice (--worker=all)"),
    "GkeTpuCluster": ("a TPU pod slice (GKE)", "in every pod of the slice's job"),
    "BaseTpuCluster": ("a TPU pod slice", "on every host of the slice (--worker=all)"),
    "K8sCluster": ("Kubernetes", "in every pod of the job"),
}


def _detected_cluster() -> tuple[str, str]:
  """(the cluster environment JAX detects, in words; how each of its tasks is started)."""
  try:
    name = getattr(_detected_cluster_env(), "__name__", "")
  except Exception:  # pylint: disable=broad-except
    name = ""  # JAX's private cluster API moved.
  return _CLUSTERS.get(name, (f"a cluster ({name or 'unknown'})",
                              "in every task of the job"))


def _detected_process_count() -> Optional[int]:
  """The process count of the cluster JAX detects (TPU pod slice, SLURM, ...), or None."""
  try:
    env = _detected_cluster_env()
    if env is not None:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(env.get_process_count())
  except Exception as e:  # pylint: disable=broad-except
    # JAX's private cluster API moved or a metadata query failed: fall back to one process
    # unless told otherwise, and say so.
    logging.warning("could not detect a multi-host cluster (%s); running as one process "
                    "unless %s and %s are set", e, ENV_NUM_PROCESSES, ENV_COORDINATOR)
  return None


def start_backend() -> None:
  """Starts JAX's backend (after `initialize`), so that a platform it cannot start is one
  line, not JAX's traceback where the first array is made.

  Raises:
    ConfigError: JAX could not start it, e.g. JAX_PLATFORMS=cuda on a machine without a GPU
      (JAX's AssertionError or RuntimeError), or JAX_NUM_CPU_DEVICES=0 (found before JAX
      starts); or JAX_DEFAULT_DEVICE names a platform that did not start.
  """
  if not _backends_ready():
    # Before JAX starts it: with peers, a CPU backend of no devices crashed the process in
    # C++ (a segfault, no line), and the others with JAX's fatal log (review). Joined
    # processes were checked together in `initialize`.
    _check_cpu_devices(DEFAULT_TIMEOUT_S)
  try:
    jax.devices()
  except (RuntimeError, AssertionError) as e:
    _no_cpu_devices(e)
    # The variable that named the platform: JAX_PLATFORMS (the platforms started), or, once
    # those started, JAX's older JAX_PLATFORM_NAME (the default among them). Was: always
    # JAX_PLATFORMS, also to a user who had set only JAX_PLATFORM_NAME (fault hunt).
    variable = ("JAX_PLATFORM_NAME" if os.environ.get("JAX_PLATFORM_NAME") and _backends_ready()
                else "JAX_PLATFORMS")
    value = os.environ.get(variable) or ""
    said = (str(e).strip().splitlines() or [type(e).__name__])[0]
    said = said if len(said) <= 200 else said[:197] + "..."
    raise ConfigError(
        f"JAX could not start its backend{f' ({variable}={value})' if value else ''}: {said}. "
        f"Unset {variable} or name a platform this machine has (cpu), or install the jax "
        "plugin for the one named.") from None
  _check_default_device()


def _cpu_devices_problem() -> Optional[str]:
  """The setting that gives JAX's CPU backend no devices, where that backend will start (JAX
  starts it unless JAX_PLATFORMS leaves it out, and fails as a whole where it cannot), in
  words; None where there is none."""
  platforms = getattr(jax.config, "jax_platforms", None) or ""
  if platforms and "cpu" not in [p.strip() for p in platforms.split(",")]:
    return None
  count = getattr(jax.config, "jax_num_cpu_devices", -1)
  if isinstance(count, int) and count >= 0:  # JAX's option wins over XLA_FLAGS.
    return (f"JAX_NUM_CPU_DEVICES={os.environ.get('JAX_NUM_CPU_DEVICES') or 0}"
            if count == 0 else None)
  given = re.findall(r"--xla_force_host_platform_device_count=(\S*)",
                     os.environ.get("XLA_FLAGS", ""))
  if given and re.fullmatch(r"0+", given[-1]):
    return "XLA_FLAGS' --xla_force_host_platform_device_count=0"
  return None


def _no_cpu_devices_words(setting: str) -> str:
  """The line for `_cpu_devices_problem`'s `setting`."""
  if setting.startswith("JAX_NUM_CPU_DEVICES"):
    return (f"{setting} gives JAX's CPU backend no devices, so it cannot start; set "
            "JAX_NUM_CPU_DEVICES to 1 or more, or unset it (one device).")
  return ("XLA_FLAGS sets --xla_force_host_platform_device_count=0, which gives JAX's CPU "
          "backend no devices, so it cannot start; set it to 1 or more, or remove it from "
          "XLA_FLAGS.")


def _check_cpu_devices(timeout_s: float) -> None:
  """Stops, before JAX starts its backends, where a setting gives the CPU backend no
  devices: this process with `_no_cpu_devices_words`; with peers, every process, each
  posting its own verdict and process 0 telling the others which one stopped. Was: the
  process without devices crashed in JAX's C++ (a segfault, no line), and the others ended
  with JAX's fatal log or a wrong line about process counts (review).

  Args:
    timeout_s: how long to wait for the other processes' verdicts.
  Raises:
    ConfigError: this process (or, with peers, another) would have no CPU devices.
    DataError: a process did not give its verdict in time, or left first.
  """
  problem = _cpu_devices_problem()
  client = _client()
  if client is None:
    if problem is not None:
      raise ConfigError(_no_cpu_devices_words(problem))
    return
  index, count = process_index(), process_count()
  key = "a2i/join/cpu_devices"
  client.key_value_set(f"{key}/{index}", problem or "ok")
  if problem is not None:
    if index == 0:
      client.key_value_set(f"{key}/verdict", "0")
    raise ConfigError(f"process {index}: {_no_cpu_devices_words(problem)}")
  if index == 0:
    bad = [other for other in range(1, count)
           if _value_of_process(client, other, f"{key}/{other}", timeout_s,
                                "did not say whether it has CPU devices") != "ok"]
    client.key_value_set(f"{key}/verdict", ",".join(map(str, bad)) or "ok")
  else:
    verdict = _value_of_process(client, 0, f"{key}/verdict", timeout_s,
                                "did not say whether every process has CPU devices")
    bad = [] if verdict == "ok" else [int(p) for p in verdict.split(",")]
  if bad:
    other = bad[0]
    theirs = client.blocking_key_value_get(f"{key}/{other}", int(timeout_s * 1000))
    raise ConfigError(f"process {index}: process {other} stopped first: {theirs} there "
                      "gives its CPU backend no devices (its log says how to fix it).")


def _no_cpu_devices(e: BaseException) -> None:
  """Where the CPU backend failed for want of devices, raises the `ConfigError` that names the
  setting that gave it none: `start_backend`'s line named JAX_PLATFORMS, which the user had
  set right or not at all (review).

  Args:
    e: JAX's error from starting its backends.

  Raises:
    ConfigError: JAX_NUM_CPU_DEVICES=0, or --xla_force_host_platform_device_count=0 in
      XLA_FLAGS, and the CPU backend did not start.
  """
  if "backend 'cpu'" not in str(e):
    return
  problem = _cpu_devices_problem()  # The same rules as the check before the start.
  if problem is not None:
    raise ConfigError(_no_cpu_devices_words(problem)) from None


def _check_default_device() -> None:
  """Checks, once JAX's backends are up, that a default device named by platform
  (JAX_DEFAULT_DEVICE=gpu) is one of theirs: JAX looks it up only where the first array is
  made, and one this machine lacks was a 67-line traceback there (review).

  Raises:
    ConfigError: JAX_DEFAULT_DEVICE names a platform that did not start.
  """
  named = jax.config.jax_default_device
  if not isinstance(named, str):  # None (the default backend's), or a Device set in code.
    return
  try:
    jax.devices(named)
  except (RuntimeError, ValueError):
    present = []
    for platform in ("cpu", "gpu", "tpu"):  # What JAX_DEFAULT_DEVICE may name.
      try:
        if jax.devices(platform):
          present.append(platform)
      except (RuntimeError, ValueError):
        pass
    raise ConfigError(
        f"JAX_DEFAULT_DEVICE={os.environ.get('JAX_DEFAULT_DEVICE') or named} names a platform "
        f"JAX has not started here (it has: {', '.join(present) or 'none'}); unset "
        f"JAX_DEFAULT_DEVICE or set it to one it has ({(present or ['cpu'])[0]}).") from None


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, timeout_s: int = DEFAULT_TIMEOUT_S,
               heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S) -> int:
  """Joins the other processes of a multi-host run; does nothing in a single process.

  Call it first, before anything touches a JAX device. It makes sure XLA:CPU's cross-process
  collectives (gloo) are on: without them CPU processes cannot run one program together.

  Args:
    coordinator_address: "host:port" of process 0 (default: `A2I_COORDINATOR`, else detected).
    num_processes: how many processes take part (default: `A2I_NUM_PROCESSES`, else detected;
      1 means no distribution).
    process_id: this process's index in [0, num_processes) (default: `A2I_PROCESS_ID`, else
      detected).
    timeout_s: how long to wait for every process to join. Where they have not all joined by
      then, this prints one `error:` line and ends the process with status 1 (JAX's join
      cannot be interrupted, and JAX itself would end it a little later with a C++ fatal log).
    heartbeat_timeout_s: how long a peer may be silent before the others stop with an error.
  Returns:
    The number of processes (1 when nothing was initialised).
  Raises:
    ConfigError: incomplete or inconsistent settings (a coordinator address or process id
      without a process count among them, a process count over `MAX_PROCESSES`, a
      coordinator address that is not HOST:PORT or whose host name is malformed), nothing
      answering at the coordinator address (checked before joining, on every process but
      0), a process count that differs from process 0's, a setting that gives some
      process's CPU backend no devices (checked before JAX starts it, `_check_cpu_devices`),
      or a process id that another process on this host was given for the same coordinator
      address (`_claim_process_id`).
  """
  try:
    return _initialize(coordinator_address, num_processes, process_id, timeout_s,
                       heartbeat_timeout_s)
  except BaseException:
    if not _join_done:  # Refused before the join: the id is free again (a notebook may retry).
      _release_process_id()
    raise


def _initialize(coordinator_address: Optional[str], num_processes: Optional[int],
                process_id: Optional[int], timeout_s: int, heartbeat_timeout_s: int) -> int:
  """`initialize`'s work."""
  if _client() is not None:
    return jax.process_count()
  # Ours alone, not JAX's variable (a cluster's environment may set it for one process).
  given = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  coordinator_address = given or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None:
    num_processes = _env_int(ENV_NUM_PROCESSES)
  if process_id is None:
    process_id = _env_int(ENV_PROCESS_ID)
  detected, count_detected = None, False
  if num_processes is None:
    detected = _detected_process_count()
    if detected is None and (given is not None or process_id is not None):
      # Was: taken for one process without a word; two such processes trained apart.
      named = " and ".join(n for n, v in (("a coordinator address", given),
                                          ("a process id", process_id)) if v is not None)
      raise ConfigError(f"{named} given, but no process count: pass --num_processes (or set "
                        f"{ENV_NUM_PROCESSES}) on every process, or drop them for one process.")
    num_processes = detected if detected is not None else 1
    count_detected = detected is not None
    if num_processes > 1:
      logging.info("JAX detected a cluster of %d processes", num_processes)
  if num_processes < 1:
    raise ConfigError(f"num_processes={num_processes}: set it to 1 or more.")
  if num_processes > MAX_PROCESSES:
    # Was: past int32, JAX's "incompatible function arguments" over many lines; below, the
    # coordination service sized itself for them all and hung (review finding).
    raise ConfigError(f"num_processes={num_processes} is more than the {MAX_PROCESSES} "
                      "processes a run may have; pass the job's process count "
                      f"(--num_processes or {ENV_NUM_PROCESSES}).")
  if num_processes == 1 and process_id not in (None, 0):
    # Was: run alone without a word, as another process 0 (a launcher that counted its
    # hosts wrong started each one's own run in the same workdir).
    raise ConfigError(f"process id {process_id} given, but a process count of 1: pass the "
                      f"job's process count on every process (--num_processes or "
                      f"{ENV_NUM_PROCESSES}), or drop the process id to run alone.")
  if num_processes == 1:
    return 1
  if detected is None and (coordinator_address is None or process_id is None):
    detected = _detected_process_count()  # JAX fills in what the cluster tells it.
  if detected is None and (coordinator_address is None or process_id is None):
    raise ConfigError(
        f"{num_processes} processes need the coordinator address and this process's id: pass "
        f"--coordinator_address=HOST:PORT and --process_id=0..{num_processes - 1} (or set "
        f"{ENV_COORDINATOR} and {ENV_PROCESS_ID}) on every process.")
  if process_id is not None and not 0 <= process_id < num_processes:
    raise ConfigError(f"process_id={process_id} is outside [0, {num_processes}); give each of "
                      f"the {num_processes} processes its own id from 0 to {num_processes - 1}.")
  if coordinator_address is not None:
    _, port = _split_address(coordinator_address)  # JAX's own error is an IndexError.
    if process_id is not None:  # Before the port check: a second process 0 is named as such.
      _claim_process_id(coordinator_address, process_id, num_processes)
    if process_id == 0:
      _check_port_free(coordinator_address, port)
  if _backends_ready():
    raise ConfigError("distributed.initialize must run before anything uses JAX; call it "
                      "first in the program.")
  if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "", "none"):
    # XLA:CPU runs one program over several processes only with cross-process collectives;
    # gloo is the default of every supported JAX version, but a user setting may have
    # switched it off.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  deadline = time.monotonic() + timeout_s
  if coordinator_address is not None and process_id not in (None, 0):
    # JAX gives up on an address where nothing answers with a C++ abort, not an exception.
    _wait_for_coordinator(coordinator_address, process_id, deadline, timeout_s)
  left_s = max(1, math.ceil(deadline - time.monotonic()))
  kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                process_id=process_id, initialization_timeout=left_s + _JOIN_GRACE_S,
                heartbeat_timeout_seconds=int(heartbeat_timeout_s))
  if "shutdown_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters:
    # At exit every process waits for the others; a dead one must not hold it for long.
    kwargs["shutdown_timeout_seconds"] = int(heartbeat_timeout_s)
  who = f"process {process_id}" if process_id is not None else "this process"
  where = coordinator_address or "the detected coordinator"

  def not_joined(detail: str = "") -> str:  # Only then looks the address up.
    if detected is not None:
      return _not_joined_in_cluster(coordinator_address, num_processes, process_id,
                                    count_detected, f"within {timeout_s} s{detail}")
    return (f"{who}: not all {num_processes} processes joined at {where} within {timeout_s} s"
            f"{detail}; start the same command on every host with the same "
            "--coordinator_address and --num_processes and a distinct --process_id"
            f"{_each_host_its_own(coordinator_address)}.")
  # JAX's preemption notifier takes SIGTERM from here on, in C++: a Python handler installed
  # before (the entry points' `interrupts.raise_terminated`) would never run again, and a
  # SIGTERM would be swallowed (was: infer.py in two processes finished as if never asked to
  # stop; train.py's notice before its loop was lost). Only a Python handler is put back.
  term = signal.getsignal(signal.SIGTERM) if _on_main_thread() else None
  interrupted = (f"{who}: interrupted while waiting for the other processes to join at {where}; "
                 "nothing was done yet, so the same command starts over.")
  try:
    with _join_watchdog(left_s, not_joined):
      _join_interruptibly(lambda: _jax_join(kwargs), interrupted)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"could not start {num_processes} processes: {e}") from None
  except Exception as e:  # pylint: disable=broad-except
    # XlaRuntimeError (DEADLINE_EXCEEDED, UNAVAILABLE): someone did not arrive in time.
    raise ConfigError(not_joined(f" ({str(e).splitlines()[0]})")) from None
  if callable(term):
    signal.signal(signal.SIGTERM, term)
  # Where process 0 dies, JAX aborts the others from its own thread (SIGABRT, after its fatal
  # log) while they leave with their line (`exit_now`): Python's fault handler (absl enables
  # it) then added a thread dump of every thread to that abort (a review finding).
  faulthandler.disable()
  global _join_done
  _join_done = True
  _check_cpu_devices(timeout_s)  # Before `_check_process_count` starts the backends.
  _check_process_count(num_processes, timeout_s)
  return jax.process_count()


def _jax_join(kwargs: dict[str, Any]) -> None:
  """`jax.distributed.initialize(**kwargs)`, without JAX's warning that its `kubernetes`
  package is missing: JAX probes the clusters it knows at every join (it is never given
  `local_device_ids`), and in a Kubernetes pod whose processes were given their settings the
  warning was 7 lines on every process (fault hunt). Other warnings pass."""
  with warnings.catch_warnings():  # In the joining thread (Python 3.14: per context).
    warnings.filterwarnings("ignore", message="Kubernetes environment detected")
    jax.distributed.initialize(**kwargs)


def _not_joined_in_cluster(coordinator_address: Optional[str], num_processes: int,
                           process_id: Optional[int], count_detected: bool, when: str) -> str:
  """The line for processes that did not all join where JAX's cluster detection gave some of
  the settings (those given None here): which cluster it detected, what that gave (as JAX
  recorded it at the join), and how to start every task or run alone. Was: the flags'
  advice (same --coordinator_address, a distinct --process_id) to a user who had passed none,
  e.g. one process started in a SLURM job of 2 tasks without srun (review finding)."""
  state = _jax_state()
  # JAX records the address first: before it, neither is JAX's (its process id defaults to 0).
  address = coordinator_address or getattr(state, "coordinator_address", None)
  index = process_id
  if index is None and getattr(state, "coordinator_address", None) is not None:
    index = getattr(state, "process_id", None)
  name, start = _detected_cluster()
  gave = [f"{num_processes} processes"] if count_detected else []
  if coordinator_address is None:
    gave.append(f"coordinator {address or '(none found)'}")
  if process_id is None:
    gave.append(f"process id {index if index is not None else '(none found)'}")
  who = f"process {index}" if index is not None else "this process"
  return (f"{who}: not all {num_processes} processes joined at "
          f"{address or 'the detected coordinator'} {when}; {name} was detected from the "
          f"environment ({', '.join(gave)}), but not every process of the job started: start "
          f"the same command {start}, or pass --num_processes=1 (or set "
          f"{ENV_NUM_PROCESSES}=1) to run this process alone.")


def _on_main_thread() -> bool:
  """Whether this is the main thread, the only one that may set signal handlers."""
  return threading.current_thread() is threading.main_thread()


def _split_address(address: str) -> tuple[str, int]:
  """("host", port) of "host:port" or "[v6 address]:port"; a `ConfigError` for anything else.

  Was: a port of other digits than 0-9 ("²") a ValueError's traceback, and a host name with
  an empty label ("node1..cluster") or one over 63 characters a UnicodeError's where the
  name was looked up (the idna codec; review finding).
  """
  host, _, port = address.rpartition(":")
  host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
  if not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
    raise ConfigError(f"coordinator address {address!r} is not HOST:PORT; pass "
                      "--coordinator_address=HOST:PORT with process 0's host and a free port.")
  try:
    host.encode("idna")  # As a name is looked up (socket.getaddrinfo).
  except UnicodeError:
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    why = ("an empty label between dots" if "" in labels else
           "a label longer than 63 characters" if any(len(n) > 63 for n in labels) else
           "not a valid host name")
    raise ConfigError(f"coordinator address {address!r}: the host name {host!r} is malformed "
                      f"({why}); pass --coordinator_address=HOST:PORT (or {ENV_COORDINATOR}) "
                      "with process 0's host name or address.") from None
  return host, int(port)


def _check_port_free(address: str, port: int) -> None:
  """Refuses a coordinator port that something on this host already listens on, or that this
  process may not listen on: process 0's service listens on it on every interface, and where
  it cannot, JAX ends the process with a segmentation fault (jaxlib 0.10.2; a second process
  given --process_id=0, another program on the port, a port below 1024 without privileges).
  Then refuses an address that does not lead to this host (`_check_it_leads_here`)."""
  for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
    try:
      probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # No IPv6 here: the IPv4 wildcard instead.
      continue
    with probe:
      # As gRPC binds: a port left in TIME_WAIT by an earlier run is free; a listener is not.
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      if family == socket.AF_INET6:  # IPv4 too, as gRPC's "[::]" listens.
        with contextlib.suppress(OSError):  # A system's default then.
          probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
      try:
        probe.bind((host, port))
      except OSError as e:
        if e.errno == errno.EADDRINUSE:
          raise ConfigError(
              f"process 0: port {port} of --coordinator_address={address} is in use on this "
              "host (another program, or a second process given --process_id=0); pass a free "
              "port to every process, and give each its own --process_id.") from None
        if e.errno == errno.EACCES:
          raise ConfigError(
              f"process 0 may not listen on port {port} of --coordinator_address={address} "
              "(permission denied: ports below 1024 need privileges); pass a free port from "
              "1024 to 65535 to every process.") from None
        continue  # An address family this host cannot bind: the next one, or JAX, decides.
      _check_it_leads_here(address, probe)
    return


# The process ids this process holds (`_claim_process_id`): the sockets that hold them.
_claimed: dict[bytes, socket.socket] = {}


def _claim_process_id(address: str, process_id: int, num_processes: int) -> None:
  """Claims `process_id` of the run at `address` on this host, for as long as this process
  lives, or refuses one that another process on this host holds. Linux only (an abstract
  Unix socket, which the kernel lets go as the process ends): elsewhere a no-op.

  Was: a second process given the same --process_id (a launch script's copy) joined, and
  JAX's coordination service took it for the first one restarted: it ended the first and
  process 0 with its fatal log ("tried to connect with a different incarnation"), and the
  second waited out the join's timeout for a line that did not name the duplicate. A second
  process 0 was named only as a possible cause of a port in use.

  Raises:
    ConfigError: another process on this host holds the id for the same address.
  """
  if not sys.platform.startswith("linux"):
    return
  digest = hashlib.sha256(address.strip().lower().encode()).hexdigest()[:24]
  name = f"\0a2i-jax/process-id/{digest}/{process_id}".encode()
  if name in _claimed:
    return  # This process's own, from an earlier call.
  held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  try:
    held.bind(name)
    held.listen(1)  # Answers a second claimant's look for its pid (`_holder_pid`).
  except OSError as e:
    held.close()
    if e.errno != errno.EADDRINUSE:
      return  # Not taken by another process; the join decides.
    pid = _holder_pid(name)
    raise ConfigError(
        f"process {process_id}: another process on this host "
        f"{f'(pid {pid}) ' if pid else ''}was started as process {process_id} of the run at "
        f"--coordinator_address={address}; give each of the {num_processes} processes its "
        f"own --process_id (0 to {num_processes - 1}, or {ENV_PROCESS_ID}), or end the other "
        "one first.") from None
  _claimed[name] = held


def _holder_pid(name: bytes) -> Optional[int]:
  """The pid of the process that holds the claim `name` (`_claim_process_id`), or None."""
  try:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as look:
      look.settimeout(1.0)
      look.connect(name)
      credentials = look.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    return int.from_bytes(credentials[:4], sys.byteorder) or None
  except (OSError, AttributeError):  # Gone meanwhile, or no SO_PEERCRED.
    return None


def _release_process_id() -> None:
  """Lets go of the process ids this process claimed (`_claim_process_id`)."""
  while _claimed:
    _claimed.popitem()[1].close()


# Seconds process 0 gives a connection to itself through the coordinator address.
_SELF_CONNECT_S = 10.0


def _check_it_leads_here(address: str, listener: socket.socket) -> None:
  """Refuses a coordinator address through which process 0 does not reach `listener` (bound to
  the address's port on every interface of this host): JAX's service listens on this host,
  and process 0's own client connects to the address. Was: a mistyped host name, or another
  host's address, kept every process waiting for the join's whole timeout (300 s), which then
  said that not all processes had joined; a second process 0 on another host, which reached
  the first one's service, ended the processes already running with JAX's fatal log.

  Raises:
    ConfigError: the address does not resolve, nothing answers there, or something else does.
  """
  host, port = _split_address(address)
  # What this process sends; another's connection (a peer's look for process 0, its JAX
  # client) sends something else or nothing.
  token = os.urandom(16)
  listener.listen(socket.SOMAXCONN)  # Peers may look for process 0 meanwhile, many at once.
  listener.settimeout(_SELF_CONNECT_S)
  try:
    with socket.create_connection((host, port), timeout=_SELF_CONNECT_S) as client:
      # Connected, but not to this process: another host's coordinator, another program.
      why = "something else answers there"
      client.sendall(token)
      deadline = time.monotonic() + _SELF_CONNECT_S
      while time.monotonic() < deadline:
        try:
          conn, _ = listener.accept()
          with conn:
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            if conn.recv(len(token), socket.MSG_WAITALL) == token:
              return
        except OSError:  # Nothing more came in time, or a peer's look went: on to the end.
          continue
  except socket.timeout:
    why = "timed out"
  except OSError as e:  # Unknown host, refused, no route.
    why = e.strerror or str(e) or type(e).__name__
  raise ConfigError(
      f"process 0: --coordinator_address={address} does not lead to this host ({why}), "
      "where process 0 listens and connects; start process 0 on the host the address names "
      "(one process 0 in all), or pass every process this host's name or address and the "
      "port.")


# Between tries at process 0's address. Process 1 usually asks before process 0 listens (was
# 1 s: up to a second lost at every multi-process start).
_COORDINATOR_RETRY_S = 0.2


def _wait_for_coordinator(address: str, process_id: int, deadline: float,
                          timeout_s: float) -> None:
  """Returns once something accepts a TCP connection at `address` (process 0's service).

  Process 0 may start later than this one, so a refused or timed-out connection is tried again
  until `deadline` (time.monotonic()).

  Raises:
    ConfigError: nothing answered at `address` before the deadline.
  """
  host, port = _split_address(address)
  last = "no attempt"
  while True:
    wait_s = min(5.0, max(0.1, deadline - time.monotonic()))
    try:
      with socket.create_connection((host, port), timeout=wait_s):
        return
    except socket.timeout:
      last = "timed out"
    except OSError as e:  # Refused, no route, unknown host: maybe not yet, so again.
      last = e.strerror or str(e) or type(e).__name__
    if time.monotonic() + _COORDINATOR_RETRY_S > deadline:
      break
    time.sleep(_COORDINATOR_RETRY_S)
  raise ConfigError(
      f"process {process_id}: nothing answered at the coordinator address {address} within "
      f"{timeout_s:.0f} s (last try: {last}); start process 0 with the same "
      "--coordinator_address (it listens there), and pass its host and port to every other "
      f"process{_each_host_its_own(address)}.")


def _each_host_its_own(address: Optional[str]) -> str:
  """" (HOST is each host's own: ...)" where `address` names only loopback addresses (or
  0.0.0.0, where a connection also stays on its host), else "".

  Was: `--coordinator_address=localhost:PORT` given on several hosts waited 300 s on each and
  then said only that nothing answered, or that not all processes joined (fault hunt).
  """
  if not address:
    return ""
  host, _ = _split_address(address)
  try:
    found = {info[4][0].partition("%")[0] for info in socket.getaddrinfo(host, None)}
  except (OSError, UnicodeError):
    return ""  # Not resolved: the error says so itself.
  if not found or not all(ipaddress.ip_address(a).is_loopback
                          or ipaddress.ip_address(a).is_unspecified for a in found):
    return ""
  return (f" ({host} is each host's own: processes on several hosts need process 0's host "
          "name or address)")


# Seconds between looks at the join's thread: how long a Ctrl-C or SIGTERM waits to be seen.
_JOIN_POLL_S = 0.2


def _join_interruptibly(join: Callable[[], None], interrupted: str) -> None:
  """Runs `join` (JAX's join) so that a Ctrl-C or SIGTERM ends the process while it waits.

  JAX waits for the other processes in C++ on the calling thread; on the main thread, Python's
  signal handlers (the entry points' `interrupts.stop_on_signals`) then never ran, and both
  signals were ignored until the join's timeout (was: 300 s; a review finding). So the join
  runs in a thread of its own, and the main thread waits for it in short slices, between which
  a handler runs. An interrupt (its handler's KeyboardInterrupt, or `interrupts.Terminated`)
  prints `interrupted` and ends the process at once with 130 (143 for SIGTERM, 129 for
  SIGHUP): the join under way cannot be called off.

  Args:
    join: what joins the processes; its exception is raised here.
    interrupted: the line for an interrupt.
  """
  if not _on_main_thread():  # Signals reach only the main thread: nothing to wait for.
    join()
    return
  raised: list[BaseException] = []

  def run() -> None:
    try:
      join()
    except BaseException as e:  # pylint: disable=broad-except
      raised.append(e)
  thread = threading.Thread(target=run, name="a2i-join", daemon=True)
  thread.start()
  try:
    while thread.is_alive():
      thread.join(_JOIN_POLL_S)
  except KeyboardInterrupt as e:
    from a2i_jax import interrupts  # pylint: disable=import-outside-toplevel  (it imports us)
    print(interrupted, file=sys.stderr)
    exit_now(129 if isinstance(e, interrupts.HungUp) else
             143 if isinstance(e, interrupts.Terminated) else 130)
  if raised:
    raise raised[0]


@contextlib.contextmanager
def _join_watchdog(seconds: float, message: Callable[[], str]) -> Iterator[None]:
  """Prints `error: ` and `message()` and ends the process if the block is still running after
  `seconds`.

  `jax.distributed.initialize` cannot be interrupted, and where not every process joins in time
  JAX ends the process from its own thread with a C++ fatal log; this speaks first, with the
  one line every other mistake gets.
  """
  def expire():
    print(f"error: {message()}", file=sys.stderr)
    exit_now(1)
  timer = threading.Timer(seconds, expire)
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()


def _check_process_count(given: int, timeout_s: float) -> None:
  """Stops processes that were given another process count than process 0.

  JAX lets a process given more processes than process 0 join the smaller run, where it and
  process 0 would later wait for each other; every process says what it was given, and
  process 0 compares.

  Raises:
    ConfigError: this process (or, on process 0, one of the others) was given another count.
  """
  client, index, joined = _client(), jax.process_index(), jax.process_count()
  client.key_value_set(f"a2i/join/num_processes/{index}", str(given))
  fix = "pass the same --num_processes (or A2I_NUM_PROCESSES) to every process"
  if given != joined:
    raise ConfigError(f"process {index} was given {given} processes, but process 0 was given "
                      f"{joined}; {fix}.")
  if index != 0:
    return
  for other in range(1, joined):
    theirs = _value_of_process(client, other, f"a2i/join/num_processes/{other}", timeout_s,
                               "did not say how many processes it was given")
    if theirs != str(given):
      time.sleep(COORDINATOR_GRACE_S)  # So that process `other` says why first.
      raise ConfigError(f"process {other} was given {theirs} processes, but process 0 was "
                        f"given {given}; {fix}.")


# How long process 0, which holds the coordinator, waits before it raises a refusal that the
# other processes raise too: JAX ends a process whose coordinator is gone with its fatal log
# before it can print its own line (seen in CI).
COORDINATOR_GRACE_S = 1.0


_END_KEY = "a2i/end"  # a2i/end/<process>: "done" (finished its work) or "left:<status>".
_ended = False  # This process has said how it ends.
_join_done = False  # `initialize` has joined the others (its backends may not be started).
# A collective failed because another process is gone (`peers_checked`): maybe process 0,
# whose coordinator then answers nothing more.
_peer_lost = False


def _joined() -> bool:
  """Whether this process has joined a multi-host run (not merely started to: a client that
  has not connected aborts the process on its first request)."""
  return (_client() is not None and (_join_done or _backends_ready())
          and process_count() > 1)


def _say_how_this_ends(how: str) -> None:
  """Records in the coordinator's store that this process is done or leaving (once)."""
  global _ended
  client = _client() if not _ended and _joined() else None
  _ended = True
  if client is None:
    return
  try:
    client.key_value_set(f"{_END_KEY}/{process_index()}", how)
  except Exception:  # pylint: disable=broad-except
    pass  # The coordinator is gone: nothing to tell.


def finish(timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
  """An entry point's end after its work is done: with peers, waits until each of them is
  done too or has left, and leaves at once where one has left.

  Python's normal exit waits at JAX's shutdown barrier for every process; a peer that left
  on its own (`exit_now`: an error after the last collective) never reaches it, and JAX then
  ended this process, whose work was all done, after its shutdown timeout (60 s) with a fatal
  log and status 1 or SIGABRT (was, e.g., a bug raised on process 1 after the last step).

  Args:
    timeout_s: how long to wait for a peer that neither says it is done nor leaves (one that
      was killed, which the heartbeat timeout catches); then the normal exit goes on.
  """
  if not _joined():
    return
  _say_how_this_ends("done")
  client, left = _client(), False
  for other in range(process_count()):
    if other == process_index():
      continue
    try:
      how = client.blocking_key_value_get(f"{_END_KEY}/{other}", int(timeout_s * 1000))
    except Exception:  # pylint: disable=broad-except
      return  # Not heard of in time, or the coordinator is gone: JAX's own exit decides.
    left = left or how.startswith("left")
  if left:
    exit_now(0)


def exit_now(code: int) -> None:
  """Ends this process with status `code` at once: stdout and stderr flushed, no exit hooks.

  In a multi-host run a process that leaves through Python's normal exit waits at JAX's
  shutdown barrier, while its peers sit in a collective that waits for it: all of them hang
  until JAX aborts them. Leaving at once closes its connections, so the peers' collectives
  fail (`peers_checked`) and they stop with an error line too.

  Args:
    code: the exit status.
  """
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:  # pylint: disable=broad-except
      pass  # A closed or broken stream: nothing more can be said there.
  if _peer_lost:
    # The peer may be process 0: JAX aborts this process from its own thread once it sees the
    # coordinator gone (SIGABRT, a C++ stack trace), and a record or a grace period sent to a
    # coordinator that is gone waited until it did (was: the survivor's line, then that abort,
    # status 134; a review finding). Every peer's collective fails too: none waits for a word.
    os._exit(code)  # pylint: disable=protected-access
  _say_how_this_ends(f"left:{code}")
  if _joined() and process_index() == 0:
    # Process 0 hosts the coordination service, whose end aborts every process still running
    # (JAX's fatal log, no line of ours): the others get to read its record, print their line
    # and leave first. Was a fixed second: one that was compiling or computing then met the
    # fatal log (an error on process 0 alone: 3 of 3; review).
    _keep_coordinator_up(LEAVE_GRACE_S)
  os._exit(code)  # pylint: disable=protected-access


# How long process 0, leaving, keeps the coordinator up for the others to read its record and
# leave with their line (`_keep_coordinator_up`). A peer that waits for it in a device
# collective leaves only once it is gone: that bounds how long process 0's exit is held.
LEAVE_GRACE_S = 10.0


def _keep_coordinator_up(seconds: float) -> None:
  """Waits until every other process has recorded how it ends (`_say_how_this_ends`), at
  most `seconds`."""
  client, index, count = _client(), process_index(), process_count()
  started = time.monotonic()
  while True:
    ended = _end_records(client)
    if ended is None:
      return  # The coordinator does not answer: nothing to keep up.
    if all(other in ended for other in range(count) if other != index):
      time.sleep(0.1)  # Each one leaves right after its record.
      return
    if time.monotonic() - started >= seconds:
      return
    time.sleep(0.05)


def leave(code: int) -> None:
  """`sys.exit(code)`; with peers at once (`exit_now`), not at JAX's shutdown barrier.

  Args:
    code: the exit status.
  """
  if process_count() > 1:
    exit_now(code)
  sys.exit(code)


def leave_after(e: BaseException) -> None:
  """An entry point's last word on an exception no other clause took: alone, it is raised
  again (absl prints it, as ever); with peers, what Python would print (a traceback, or the
  message of `sys.exit("message")`) goes to stderr and the process leaves at once, since
  Python's exit would wait at JAX's shutdown barrier while they wait for it in a collective.

  Args:
    e: the exception being handled.
  """
  if process_count() == 1:
    raise e
  if isinstance(e, SystemExit):
    if e.code is not None and not isinstance(e.code, int):
      print(e.code, file=sys.stderr)
    exit_now(e.code if isinstance(e.code, int) else int(e.code is not None))
  traceback.print_exception(type(e), e, e.__traceback__)
  exit_now(1)


def _backends_ready() -> bool:
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  return xla_bridge.backends_are_initialized()


def process_index() -> int:
  """This process's index (0 in a single process), without starting a JAX backend.

  Returns:
    The process id.
  """
  if _client() is None:
    return 0
  # JAX's own count starts the backends: not before `start_backend` has checked them.
  return jax.process_index() if _backends_ready() else int(_jax_state().process_id)


def process_count() -> int:
  """How many processes take part (1 in a single process), without starting a JAX backend.

  Returns:
    The process count.
  """
  if _client() is None:
    return 1
  return jax.process_count() if _backends_ready() else int(_jax_state().num_processes)


def define_flags() -> Callable[[], int]:
  """Defines the entry points' multi-process flags; returns the function that joins with them.

  --coordinator_address, --num_processes and --process_id (absl flags), each falling back to
  its environment variable and then to cluster detection (`initialize`).

  Returns:
    A function of no arguments that calls `initialize` with the flags' values and returns
    the number of processes.
  """
  from absl import flags  # pylint: disable=import-outside-toplevel
  coordinator = flags.DEFINE_string("coordinator_address", None, "Multi-process: host:port of "
                                    "process 0 (or A2I_COORDINATOR).")
  num_processes = flags.DEFINE_integer("num_processes", None, "Multi-process: how many "
                                       "processes (or A2I_NUM_PROCESSES).")
  process_id = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index "
                                    "(or A2I_PROCESS_ID).")

  def join() -> int:
    count = initialize(coordinator.value, num_processes.value, process_id.value)
    start_backend()
    _check_same_programs()
    _report_layout()
    return count
  return join


def _slurm_count(value: Optional[str]) -> Optional[int]:
  """The GPU count in a SLURM variable: "8", "a100:8", "gpu:a100:4,v100:4" (summed); None
  where it is empty or another form."""
  if not value:
    return None
  counts = [re.fullmatch(r"(?:[^:,]+:)*(\d+)", part.strip()) for part in value.split(",")]
  return sum(int(c.group(1)) for c in counts) if all(counts) else None


def _slurm_gpus_on_node(environ: Any) -> Optional[int]:
  """How many GPUs SLURM gave the job on this node (SLURM_GPUS_ON_NODE, SLURM_JOB_GPUS or
  SLURM_GPUS_PER_NODE, the first that is set and readable), or None."""
  count = _slurm_count(environ.get("SLURM_GPUS_ON_NODE"))
  if count is None:
    ids = [i for i in (environ.get("SLURM_JOB_GPUS") or "").split(",") if i.strip()]
    count = len(ids) if ids and all(i.strip().isdigit() for i in ids) else None
  if count is None:
    count = _slurm_count(environ.get("SLURM_GPUS_PER_NODE"))
  return count


def _slurm_tasks_on_node(environ: Any) -> Optional[int]:
  """How many tasks of this SLURM job step run on this node, or None: from
  SLURM_STEP_TASKS_PER_NODE (else SLURM_TASKS_PER_NODE), e.g. "8(x2)" or "2(x3),1", and
  SLURM_NODEID; else SLURM_NTASKS_PER_NODE."""
  spec = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE") or ""
  per_node: list[int] = []
  for part in spec.split(",") if spec else []:
    got = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
    if got is None:
      per_node = []
      break
    per_node += [int(got.group(1))] * int(got.group(2) or 1)
  node = environ.get("SLURM_NODEID", "")
  if per_node and len(set(per_node)) == 1:
    return per_node[0]
  if per_node and node.isdigit() and int(node) < len(per_node):
    return per_node[int(node)]
  return _slurm_count(environ.get("SLURM_NTASKS_PER_NODE"))


def _layout_words(processes: int, local_devices: int, platform: str,
                  environ: Any) -> tuple[str, Optional[str]]:
  """The line that says how a multi-process run lays out its devices, and a warning where
  SLURM gave this node more GPUs than its tasks use.

  JAX's SLURM support gives each process the one GPU of its SLURM_LOCALID (it expects a task
  per GPU, each seeing all of them), also where every setting was passed: one task per node
  of 8 GPUs trained on one GPU of each, without a word (fault hunt).

  Args:
    processes: how many processes take part.
    local_devices: how many devices this process drives.
    platform: their platform ("gpu", "tpu", "cpu").
    environ: the environment (SLURM's variables; those missing: no SLURM numbers, no
      warning).
  Returns:
    (the line, e.g. "2 processes x 1 gpu device each, 2 in all (SLURM: 1 task and 8 GPUs on
    this node)"; the warning or None).
  """
  each = f"{local_devices} {platform} device{'s' * (local_devices != 1)}"
  line = f"{processes} processes x {each} each, {processes * local_devices} in all"
  gpus, tasks = _slurm_gpus_on_node(environ), _slurm_tasks_on_node(environ)
  if gpus is None or tasks is None or "SLURM_JOB_ID" not in environ:
    return line, None
  line += f" (SLURM: {tasks} task{'s' * (tasks != 1)} and {gpus} GPUs on this node)"
  used = tasks * local_devices
  if platform not in ("gpu", "cuda", "rocm") or used >= gpus:  # JAX's GPUs say "gpu".
    return line, None
  alone = (f", or keep 1 task per node and set JAX_LOCAL_DEVICE_IDS="
           f"{','.join(str(i) for i in range(gpus))} for it" if tasks == 1 else "")
  return line, (
      f"SLURM gave this node {gpus} GPUs, but the {tasks} task{'s' * (tasks != 1)} on it "
      f"drive{'s' * (tasks == 1)} only {used} ({each} each): {gpus - used} stay idle. JAX's "
      "SLURM support gives each task the one GPU of its SLURM_LOCALID: start one task per "
      f"GPU (--ntasks-per-node={gpus}, every task seeing all the node's GPUs: no "
      f"--gpus-per-task){alone}.")


def _report_layout() -> None:
  """Process 0 logs how a multi-process run lays out its devices (`_layout_words`), and warns
  where SLURM gave its node GPUs that no task drives. A no-op in one process (a quiet
  console); the entry points call it once joined and checked (`_check_same_programs`: every
  process has as many devices)."""
  if process_count() == 1 or not is_main():
    return
  local = jax.local_devices()
  line, warning = _layout_words(process_count(), len(local), local[0].platform, os.environ)
  logging.info("%s", line)
  if warning is not None:
    logging.warning("%s", warning)


# The packages whose versions shape the programs a process builds (`_software`).
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")


def _software() -> str:
  """What this process builds its programs from: a hash of the library's source files and the
  versions of the packages it computes with.

  Returns:
    E.g. "a2i_jax 63709db56c0c, jax 0.10.2, jaxlib 0.10.2, flax 0.12.8, optax 0.2.8,
    orbax-checkpoint 0.12.8" (a package that is not installed: "?").
  """
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.abspath(__file__))
  digest = hashlib.sha256()
  for folder, subfolders, names in os.walk(root):
    subfolders[:] = sorted(n for n in subfolders if n != "__pycache__")
    for name in sorted(n for n in names if n.endswith(".py")):
      path = os.path.join(folder, name)
      digest.update(os.path.relpath(path, root).encode() + b"\0")
      with open(path, "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
  versions = []
  for package in _PACKAGES:
    try:
      versions.append(f"{package} {metadata.version(package)}")
    except metadata.PackageNotFoundError:
      versions.append(f"{package} ?")
  return ", ".join([f"a2i_jax {digest.hexdigest()[:12]}", *versions])


# JAX's options (JAX_* environment variables) under which the same config computes otherwise:
# other random numbers (the initial state, the batches, the noise), dtypes or precision.
_NUMERIC_OPTIONS = ("jax_default_prng_impl", "jax_threefry_partitionable", "jax_enable_x64",
                    "jax_default_matmul_precision")


def _check_same_programs() -> None:
  """Stops every process where any would build other programs than process 0 from the same
  config: another number or platform of devices, the convolution kernels its timing chose,
  other library source or package versions, or other numeric options of JAX. A no-op in one
  process; the entry points call it once joined.

  Such processes stop at a mismatched collective, or worse, run on together without a word
  while their replicated states drift apart (was: a host with another checkout of the
  library, whose loss weighed a term otherwise, trained with the others to the end, all with
  status 0; fault hunt).

  Raises:
    ConfigError: this process (on process 0: another) builds other programs.
    DataError: a process did not say in time, or left first.
  """
  # Orbax lays the devices out as processes x devices per process: was, a host with other
  # devices than the others stopped at the checkpointer's start with "a step folder there is
  # damaged or not a checkpoint: move it away" (fault hunt).
  local = jax.local_devices()
  same_on_every_process(
      "the devices", f"{len(local)} {local[0].platform} device{'s' * (len(local) != 1)}",
      "give every process as many devices of one platform (CUDA_VISIBLE_DEVICES; on CPU, "
      "XLA_FLAGS' --xla_force_host_platform_device_count; JAX_PLATFORMS)")
  # The CPU's "auto" model forms follow the convolution kernels each process's timing chose
  # (perf.recommended_cpu_flags).
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  kernels = perf.convolution_kernels()  # None off CPU: nothing to compare then.
  same_on_every_process(
      "the convolution kernels", perf.describe_convolution_kernels(kernels) if kernels else "",
      f"add one kernel flag to XLA_FLAGS on every host, keeping the flags it holds, before "
      f"JAX starts, e.g. {perf.XLA_CONVOLUTIONS_FLAG}")
  same_on_every_process(
      "the software", _software(), "run the same on every host: one a2i-jax checkout (on "
      "shared storage, or the same commit everywhere) and the same versions of "
      f"{', '.join(_PACKAGES)} (pip install with the same pins)")
  # Was: a host with JAX_DEFAULT_PRNG_IMPL=rbg drew another initial state and other batches,
  # and trained with the others to the end, all with status 0 (fault hunt).
  same_on_every_process(
      "JAX's options", ", ".join(f"{o}={getattr(jax.config, o, None)}" for o in _NUMERIC_OPTIONS),
      "set the same JAX_* environment variables on every host "
      f"({', '.join(o.upper() for o in _NUMERIC_OPTIONS)}), or none")


def is_main() -> bool:
  """Whether this is process 0: the one that writes logs, configs, metrics and images.

  Returns:
    True in a single process.
  """
  return process_index() == 0


def barrier(name: str, timeout_s: float = DEFAULT_TIMEOUT_S,
            collective_next: bool = False) -> None:
  """Waits until every process has reached the barrier `name` (a no-op in a single process).

  Built on the coordinator's key-value store, not a device collective, so it needs no
  cross-process collectives backend and may wait for long host work (a dataset being
  prepared, a compile). Each process says it is here, then waits for each other one's word,
  and stops at once where one has left (as `_value_of_process` does). Was: the runtime's
  barrier, one wait for the whole time, so a peer whose compile failed (out of memory) kept
  the others at the compile's barrier for an hour without a line (review finding).

  Args:
    name: what is being waited for (in the error message); every process calls barriers in
      the same order.
    timeout_s: how long to wait before stopping with an error.
    collective_next: a program's first device collective follows (an evaluation's): a
      process that reached the barrier but has left since (a second Ctrl-C while it waited
      for the others) stops the others here too. That collective would wait for it until
      JAX's heartbeat ended them with its fatal log (fault hunt: process 0 so, 60 s after a
      double Ctrl-C on process 1 as the last evaluation began).
  Raises:
    DataError: not every process arrived in time, or one left first.
  """
  client = _client()
  if client is None:
    return
  key, index = _next_key(name, "barrier"), process_index()
  client.key_value_set(f"{key}/{index}", "here")
  deadline = time.monotonic() + timeout_s
  for other in range(process_count()):
    if other != index:
      left_s = max(deadline - time.monotonic(), 0.001)
      _value_of_process(client, other, f"{key}/{other}", left_s, f"did not reach '{name}'")
  if collective_next:
    for other, how in sorted((_end_records(client) or {}).items()):
      if other != index and how.startswith("left"):
        raise PeerLeft(f"process {index}: process {other} stopped at '{name}' (exit status "
                       f"{how.partition(':')[2] or '?'}), and its log says why.")


def main_first(name: str, fn: Callable[[], T], timeout_s: float = DATA_TIMEOUT_S) -> T:
  """Runs `fn` on process 0 first and on the others once it has finished.

  For work that writes a shared cache (a dataset prepared once, then read by every process):
  the other processes wait, then read what process 0 wrote. When `fn` fails on process 0 the
  others stop with an error that says so, instead of repeating the work or waiting forever.
  In a single process this is `fn()`.

  Args:
    name: what `fn` does (in messages); every process passes the same names in the same order.
    fn: the work; it must give each process the same result.
    timeout_s: how long the others wait for process 0.
  Returns:
    `fn()`'s result.
  Raises:
    DataError: `fn` failed on process 0 (on the other processes), or process 0 took too long.
  """
  client = _client()
  if client is None:
    return fn()
  key = _next_key(name, "status")
  if is_main():
    try:
      result = fn()
    except BaseException as e:
      client.key_value_set(key, f"{type(e).__name__}: {e}".splitlines()[0] or "failed")
      raise
    client.key_value_set(key, "ok")
    return result
  status = _value_of_process(client, 0, key, timeout_s, f"did not finish '{name}'")
  if status != "ok":
    raise DataError(f"process 0 failed at '{name}' ({status}); process {process_index()} "
                    "stops too.")
  return fn()


def same_on_every_process(name: str, value: str, fix: str,
                          timeout_s: float = DEFAULT_TIMEOUT_S,
                          describe: Optional[Callable[[str, str, int], str]] = None) -> None:
  """Stops with an error every process whose `value` differs from process 0's, and process 0
  too where any does (so that none goes on alone to wait for the others in a collective).

  A no-op in a single process. Every process calls it with the same `name`, in the same order.

  Args:
    name: what is compared (in the message).
    value: this process's value.
    fix: what the user should do, for the message.
    timeout_s: how long to wait for the other values.
    describe: `describe(mine, theirs, other)`, the difference in words for the message (e.g.
      `json_differences`); default "<mine> here, <theirs> on process <other>".
  Raises:
    ConfigError: this process's value differs from process 0's (on process 0: another's does).
    DataError: a process did not give its value in time.
  """
  client = _client()
  if client is None:
    return
  key, index = _next_key(name, "value"), process_index()
  client.key_value_set(f"{key}/{index}", value)
  values = [_value_of_process(client, other, f"{key}/{other}", timeout_s,
                              f"did not give {name}")
            for other in range(process_count())]
  # Every process reads every value and comes to the same verdict; none leaves before all
  # have read them, since process 0's leaving takes the coordinator down, and JAX then ends
  # the others with its fatal log before they can say why.
  barrier(f"{name} compared", timeout_s)
  differ = [other for other, theirs in enumerate(values) if theirs != values[0]]
  if differ:
    if index == 0:
      time.sleep(COORDINATOR_GRACE_S)  # So that the others say why first.
    other = 0 if values[index] != values[0] else differ[0]
    said = (describe(values[index], values[other], other) if describe is not None else
            f"{values[index]} here, {values[other]} on process {other}")
    raise ConfigError(f"process {index}: {name}: {said}; {fix}.")


def json_differences(mine: str, theirs: str, other: int, shown: int = 3) -> str:
  """The keys in which two JSON objects (flat, as `same_on_every_process` compares them)
  differ, with both values: "seed=1 here, 0 on process 0; ...", for `describe`.

  Args:
    mine: this process's JSON object.
    theirs: the other process's.
    other: the other process's index.
    shown: how many keys to name (the count of the rest follows).
  Returns:
    The words.
  """
  a, b = json.loads(mine), json.loads(theirs)
  # A key one side lacks is "(none)", not quoted: a string value "(none)" is (was the same).
  shown_value = lambda obj, k: json.dumps(obj[k]) if k in obj else "(none)"
  keys = sorted(k for k in {*a, *b} if k not in a or k not in b or a[k] != b[k])
  words = [f"{k}={shown_value(a, k)} here, {shown_value(b, k)} on process {other}"
           for k in keys[:shown]]
  if len(keys) > shown:
    words.append(f"and {len(keys) - shown} more key{'s' * (len(keys) - shown != 1)}")
  return "; ".join(words)


class Board:
  """A place in the coordinator's store where each process of the job posts a value once,
  which every process can read without waiting: `post` this process's value, `values` those
  posted so far, by any process. Made in the same order on every process, so that all name
  the same place (as every shared step here is). With one process it keeps the values
  itself.

  `interrupts.StopRequest` announces its stop step on one.
  """

  def __init__(self, name: str):
    self._client = _client()
    self._key = _next_key(name, "board") if self._client is not None else ""
    self._own: list[str] = []

  def post(self, value: str) -> None:
    """Posts this process's value (once: the store refuses a second).

    Args:
      value: what the other processes will read.
    """
    if self._client is None:
      self._own.append(value)
    else:
      self._client.key_value_set(f"{self._key}/{process_index()}", value)

  def values(self) -> list[str]:
    """The values posted so far, this process's included.

    Returns:
      The values, in no particular order.
    """
    if self._client is None:
      return list(self._own)
    return [v for _, v in self._client.key_value_dir_get(self._key)]


def _next_key(name: str, kind: str) -> str:
  """A key of the coordinator's store, new in this process's sequence of shared steps of
  that name and kind. Counted per name: with one count for all, a step that one host takes and
  another skips (a shared step behind a host-local setting, e.g. a data cache_dir that one
  host leaves empty) shifted every later key, and both waited for keys no one would set
  (6 hours for the data's comparison, without a line; a review finding)."""
  count = _step_counts[(name, kind)] = _step_counts.get((name, kind), 0) + 1
  return f"a2i/{count}/{name}/{kind}"


# How often a wait for another process's value looks whether that process has left: well
# within COORDINATOR_GRACE_S, the wait before a process leaving with an error goes (was
# 2 s, so a wait on process 0 mostly met JAX's fatal log instead of its record).
_POLL_S = 0.25


def _how_it_ended(client: Any, other: int) -> Optional[str]:
  """What process `other` recorded when it finished or left (`_say_how_this_ends`), or None."""
  try:
    return client.key_value_try_get(f"{_END_KEY}/{other}")
  except Exception:  # pylint: disable=broad-except
    return None  # Not recorded (the store answers "not found"), or the coordinator is gone.


def _peer_that_left(client: Any, other: int) -> Optional[tuple[int, str]]:
  """(process, its record) of a process that has left (`_say_how_this_ends`), `other` first:
  with 3 or more, a wait on one process that is still working also ends where another has
  left (was: only the awaited one was looked at, and JAX's heartbeat ended the waiting ones
  after 60 s with its fatal log and no line of ours; review finding)."""
  how = _how_it_ended(client, other)
  if how is not None and how.startswith("left"):
    return other, how
  # None: the coordinator is gone (the caller says so), or nothing recorded yet.
  for process, how in sorted((_end_records(client) or {}).items()):
    if how.startswith("left"):
      return process, how
  return None


def _end_records(client: Any) -> Optional[dict[int, str]]:
  """{process: its record} of every process that has recorded how it ends
  (`_say_how_this_ends`); None where the coordinator does not answer (it is gone, or holds
  no record yet)."""
  try:
    ended = client.key_value_dir_get(_END_KEY)
  except Exception:  # pylint: disable=broad-except
    return None
  records = {}
  for key, how in ended:
    process = key.rstrip("/").rpartition("/")[2]
    if process.isdigit():
      records[int(process)] = how
  return records


def _value_of_process(client: Any, other: int, key: str, timeout_s: float, failure: str) -> str:
  """Waits for process `other` to set `key`; a `DataError` saying `failure` where it does not:
  at once where that process has left (it records so as it leaves), else whether the wait ran
  out or ended early (the coordinator gone: a process stopped).

  Was: one wait for the whole time, so a peer that left with an error before it set its value
  (a workdir that is a file, say) kept the others waiting until JAX's own heartbeat ended them
  with a fatal log and no line of ours."""
  started = time.monotonic()
  deadline = started + timeout_s
  while True:
    part = max(min(_POLL_S, deadline - time.monotonic()), 0.001)
    asked = time.monotonic()
    try:
      return client.blocking_key_value_get(key, max(int(part * 1000), 1))
    except Exception as e:  # pylint: disable=broad-except
      left = _peer_that_left(client, other)
      if left is not None:
        who, ended = left
        status = ended.partition(":")[2] or "?"
        raise PeerLeft(f"process {process_index()}: process {other} {failure}: "
                       + (f"it stopped first (exit status {status})" if who == other else
                          f"process {who} stopped first (exit status {status})")
                       + ", and its log says why.") from None
      now = time.monotonic()
      if now < deadline and now - asked >= 0.5 * part:  # This slice ran out: wait on.
        continue
      waited = now - started
      # Was "within 21600 s" for a wait that ended after a second, the coordinator gone.
      when = (f"within {timeout_s:.0f} s" if waited >= 0.9 * timeout_s else
              f"(the wait ended after {waited:.0f} s: a process stopped, whose log says why)")
      raise DataError(f"process {process_index()}: process {other} {failure} {when} "
                      f"({str(e).splitlines()[0]}).") from None


def value_of_process_0(name: str, value: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
  """Process 0's `value` on every process: for a choice each process could make otherwise
  (the newest checkpoint, while training may save another). `value` itself in one process.

  Args:
    name: what is chosen (in messages); every process passes the same names in the same order.
    value: this process's choice; only process 0's counts.
    timeout_s: how long the others wait for it.
  Returns:
    Process 0's value.
  Raises:
    DataError: process 0 did not give it in time, or left first.
  """
  client = _client()
  if client is None:
    return value
  key = _next_key(name, "chosen")
  if is_main():
    client.key_value_set(key, value)
    return value
  return _value_of_process(client, 0, key, timeout_s, f"did not say {name}")


# How long `check_shared_folder` looks again for a marker it does not see.
SHARED_FOLDER_WAIT_S = 30.0


def check_shared_folder(path: str, what: str, fix: str,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
  """Stops every process where any does not see the folder process 0 writes at `path` (a
  folder on each host's own disk, or another path given to one process). A no-op in one
  process.

  Process 0 puts a file of a random name in `path`; each process looks for it. Was: a
  workdir the hosts did not share hung every process at the first checkpoint save, without
  a line, as Orbax waited for files no other host could see. A `path` not made yet (a new
  run's workdir, checked before its data load) is checked at its nearest folder that is
  there on process 0: each process looks as many levels up its own path.

  Args:
    path: the folder, as this process names it (hosts may mount it at other paths).
    what: the folder, for the message, e.g. "the workdir".
    fix: what the user should do, for the message.
    timeout_s: how long to wait for the other processes.
  Raises:
    ConfigError: this process (on process 0: another) does not see process 0's file.
    DataError: a process did not answer in time, or left first.
    WorkdirError: process 0 cannot write its file there (on every process).
  """
  client = _client()
  if client is None:
    return
  key = _next_key(what, "marker")
  path = os.path.abspath(path)
  if is_main():
    up = 0  # Levels up `path` to a folder that is there.
    while not os.path.isdir(_up(path, up)) and _up(path, up) != _up(path, up + 1):
      up += 1
    _remove_stale_markers(_up(path, up))
    name = f"{_MARKER_PREFIX}{os.getpid()}-{time.time_ns()}"
    marker = os.path.join(_up(path, up), name)
    try:
      with open(marker, "w", encoding="utf-8") as f:
        f.write("process 0 checks that every process sees this folder; deleted at once\n")
    except OSError as e:  # Was a traceback here, the others left waiting for the mark.
      client.key_value_set(key, f"!{e.strerror or e}")
      time.sleep(COORDINATOR_GRACE_S)  # So that the others read it and say why first.
      raise WorkdirError(f"process 0: cannot write to {_up(path, up)} ({e.strerror or e}), "
                         f"where {what} is checked; {fix}.") from None
    client.key_value_set(key, f"{up}/{name}")
  else:
    mark = _value_of_process(client, 0, key, timeout_s, f"did not mark {what}")
    if mark.startswith("!"):
      raise WorkdirError(f"process {process_index()}: process 0 cannot write to {what} "
                         f"({mark[1:]}); {fix}.")
    up, name = mark.split("/")
    marker = os.path.join(_up(path, int(up)), name)
  # A network file system may answer from a cached "no such folder" (looked up before
  # process 0 made it) for up to a minute: a "no" is asked again for a while first.
  give_up = time.monotonic() + SHARED_FOLDER_WAIT_S
  while not os.path.exists(marker) and time.monotonic() < give_up:
    try:
      os.listdir(os.path.dirname(os.path.dirname(marker)))  # Refreshes the parent's entries.
    except OSError:
      pass
    time.sleep(0.5)
  try:
    same_on_every_process(f"whether it sees {what} of process 0",
                          "yes" if os.path.exists(marker) else f"no ({path})", fix, timeout_s)
  finally:
    if is_main():
      try:
        os.remove(marker)
      except OSError:
        pass  # Gone already: nothing to tidy.


def _up(path: str, levels: int) -> str:
  """`path`'s folder `levels` levels up (0: `path`)."""
  for _ in range(levels):
    path = os.path.dirname(path)
  return path


# `check_shared_folder`'s marker files, and how old one is when no check can be using it.
_MARKER_PREFIX = ".a2i-shared-"
_STALE_MARKER_S = 3600.0


def _remove_stale_markers(path: str) -> None:
  """Removes markers that a process killed during its check left in `path` (they stayed)."""
  try:
    names = [n for n in os.listdir(path) if n.startswith(_MARKER_PREFIX)]
  except OSError:
    return
  for name in names:
    marker = os.path.join(path, name)
    try:
      if os.path.getmtime(marker) < time.time() - _STALE_MARKER_S:
        os.remove(marker)
    except OSError:
      pass  # Gone already, or not ours to remove.


@contextlib.contextmanager
def peers_checked() -> Iterator[None]:
  """Turns a failed cross-process collective into one `PeerError` that names the cause.

  With several processes, a computation that needs a peer that has died fails with a runtime
  error deep in XLA (or, when it hangs, the heartbeat timeout ends the process). Entry points
  wrap their work in this and print the `PeerError` as one line; they should then leave with
  `exit_now(1)`, because the normal exit waits at a shutdown barrier that the dead process
  never reaches. In a single process errors pass through unchanged.

  Yields:
    Nothing.
  Raises:
    PeerError: a runtime error that says another process is gone.
  """
  global _peer_lost
  try:
    yield
  except (jax.errors.JaxRuntimeError, ValueError) as e:  # jaxlib 0.10 raises gloo's failed
    # collectives as a ValueError ("UNKNOWN: Gloo AllGather failed"); others pass as they are.
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if (process_count() > 1 and not isinstance(e, A2IError)
        and any(m in first.lower() for m in _PEER_FAILURE_MARKERS)):
      _peer_lost = True
      raise PeerError(f"process {process_index()}: another process stopped answering "
                      f"({first[:300]}); its log says why. Start every process again (a "
                      "training run resumes from its last checkpoint).") from None
    raise


class _ProcessPrefix(logging.Filter):
  """Prefixes every record with the process id, once."""

  def __init__(self, index: int):
    super().__init__()
    self.prefix = f"[process {index}] "

  def filter(self, record: logging.LogRecord) -> bool:
    if not getattr(record, "_a2i_prefixed", False):
      record.msg = self.prefix + str(record.msg)
      record._a2i_prefixed = True  # pylint: disable=protected-access
    return True


def configure_logging() -> None:
  """Process 0 logs as before; the others log warnings and errors only, prefixed "[process k]".

  Call it after `initialize` and after the entry point has set up its logging (absl's
  handler). A no-op in a single process.
  """
  index = process_index()
  if index == 0:
    return
  root = logging.getLogger()
  root.setLevel(logging.WARNING)
  try:
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
    absl_logging.set_verbosity(absl_logging.WARNING)
  except ImportError:
    pass
  if not root.handlers:
    root.addHandler(logging.StreamHandler())
  for handler in root.handlers:
    if not any(isinstance(f, _ProcessPrefix) for f in handler.filters):
      handler.addFilter(_ProcessPrefix(index))
