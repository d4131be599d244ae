"""Starts the tests' `python train.py ...` and `python infer.py ...` runs from fork servers:
processes that have imported what the runs import (JAX, Flax, Optax, Orbax, the library) and
fork one child per run. A child is a new process in every way a run can see (its own PID,
arguments, working folder, environment, standard streams, signal handlers; JAX's backend not
started), less the 1.2-1.4 s of imports on the 2-core machine: most of a run that stops at a
config mistake, a third of a tiny training run; the suite starts over a hundred.

The child runs the script as Python would (a `__main__` module of its own, `sys.argv` as the
command gave it, `sys.path[0]` its folder, each signal's handler as a new process finds it,
NumPy's global generator seeded afresh, absl's handler on the stream the entry points make)
and ends as Python does: finalisation and `atexit` handlers, then the status of `sys.exit`, or
1 after an uncaught exception's traceback, or the signal that killed it. What stays the
server's: the modules it imported (a run imports nothing it would not have), the hash seed
(so each process of a multi-process job forks from a server of its own: `popen`'s `slot`),
the parent PID, /proc's command line, and a traceback's first frames (the server's).

`run` answers as `subprocess.run(..., capture_output=True, text=True)` does, and `Popen` as
`subprocess.Popen` (wait, poll, communicate, kill, send_signal; outputs through files, so
PIPE is read once the run has ended). A server serves one environment, as a new process's
imports would have read it: the one a run is given, but for `REQUEST_KEYS` (the fault a run
injects, `tests/faults_lib.py`; pytest's name of the test) and for variables its imports set
themselves. Each pytest-xdist worker starts a server per environment at that environment's
first run (at most `MAX_SERVERS`), and ends them with itself. A real subprocess starts instead
for a command that is not `python SCRIPT.py ...`, for output to anything but PIPE or a file,
and where no server could start.

A run that must start as a new interpreter does (a stop during the imports, huge pages) starts
with `subprocess` itself. A2I_LAUNCHER=0 in the tests' environment starts every run so (to
compare).

Run as `python tests/launcher.py --serve`, this module is a server (requests on stdin, one JSON
object per line: argv, cwd, the request's variables, where the output goes; answers on stdout:
each child's PID once forked, its exit status once it ended).
"""

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The variables in which a run's environment may differ from its server's, which no import
# reads: faults_lib's fault and the process that injects it, pytest's name of the test, and
# XLA_FLAGS, which XLA reads when JAX starts its backend (never in the server: `_serve`
# checks), so that runs of 1, 2 or 4 CPU devices share one server.
REQUEST_KEYS = ("A2I_FAULT", "A2I_FAULT_PROCESS", "PYTEST_CURRENT_TEST", "XLA_FLAGS")
MAX_SERVERS = 6  # Per pytest worker (about 250 MB each).
# What train.py and infer.py import, less their own modules (which define absl flags).
_PRELOAD = ("numpy", "PIL.Image", "absl.app", "absl.flags", "absl.logging",
            "ml_collections.config_flags", "jax", "jax.numpy", "flax.linen", "optax",
            "orbax.checkpoint", "a2i_jax.train_lib", "a2i_jax.inference", "a2i_jax.evaluation",
            "a2i_jax.inputs", "a2i_jax.startup", "a2i_jax.hugepages", "a2i_jax.interrupts",
            "a2i_jax.attribute_predictor", "a2i_jax.sampling", "a2i_jax.occlusions")

_outputs: list[str] = []  # The folder of the PIPE outputs' files (made at the first).


def _output_file() -> str:
  """A new empty file for a PIPE output, in a folder removed when the tests end (made in the
  tests' process only: a server's children would inherit its `atexit` calls)."""
  if not _outputs:
    _outputs.append(tempfile.mkdtemp(prefix="a2i_launcher_"))
    atexit.register(shutil.rmtree, _outputs[0], True)
  fd, path = tempfile.mkstemp(dir=_outputs[0])
  os.close(fd)
  return path


def _base(env: dict) -> dict:
  return {k: v for k, v in env.items() if k not in REQUEST_KEYS}


class _Server:
  """One server process, and what it has answered."""

  def __init__(self, env: dict, slot: int):
    self.env, self.slot = _base(env), slot
    self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"],
                                 cwd=ROOT, env=self.env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
    self._buffer = b""
    self.started: list[int] = []  # PIDs forked, in the order of the requests.
    self.statuses: dict[int, int] = {}  # PID -> exit status, once ended.
    try:
      ready = self._message(timeout=120)
    except RuntimeError:  # It ended in its imports: the runs start as new processes.
      ready = None
    # The variables its imports set (tensorstore's CRC32C_SW_MODE): a new process given them
    # as they set them reaches the same state.
    self.imports_set = ({k: v for k, v in ready["ready"].items() if self.env.get(k) != v}
                        if ready and "ready" in ready else None)

  def serves(self, env: dict) -> bool:
    """Whether a new process given `env` would reach this server's state."""
    base = _base(env)
    return all(base.get(k) == self.env.get(k)
               or base.get(k) == self.imports_set.get(k, object())
               for k in {*base, *self.env})

  def alive(self) -> bool:
    return self.imports_set is not None and self.proc.poll() is None

  def _message(self, timeout: Optional[float]) -> Optional[dict]:
    """The next answer, or None when none came within `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while b"\n" not in self._buffer:
      left = None if deadline is None else max(0.0, deadline - time.monotonic())
      if not select.select([self.proc.stdout], [], [], left)[0]:
        return None
      chunk = os.read(self.proc.stdout.fileno(), 65536)
      if not chunk:  # Its runs would live on unwatched: they end too.
        for pid in set(self.started) - set(self.statuses):
          try:
            os.kill(pid, signal.SIGKILL)
          except OSError:
            pass
        raise RuntimeError(f"the fork server (tests/launcher.py) ended, status "
                           f"{self.proc.wait()}")
      self._buffer += chunk
    line, self._buffer = self._buffer.split(b"\n", 1)
    message = json.loads(line)
    if "started" in message:
      # A PID is reused only once its earlier child was reaped: that status is not this one's
      # (review: a run could be taken for ended at once).
      self.statuses.pop(message["started"], None)
      self.started.append(message["started"])
    elif "ended" in message:
      self.statuses[message["ended"]] = message["status"]
    return message

  def start(self, request: dict) -> int:
    """Sends `request`; returns the PID of its child."""
    count = len(self.started)
    self.proc.stdin.write(json.dumps(request).encode() + b"\n")
    self.proc.stdin.flush()
    while len(self.started) == count:
      self._message(timeout=None)
    return self.started[count]

  def status(self, pid: int, timeout: Optional[float]) -> Optional[int]:
    """The exit status of child `pid`, waiting up to `timeout` s; None if it runs on."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while pid not in self.statuses:
      left = None if deadline is None else max(0.0, deadline - time.monotonic())
      if self._message(left) is None:
        return None
    return self.statuses[pid]

  def stop(self) -> None:
    self.proc.stdin.close()
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()


_servers: list[_Server] = []


def _stop_servers() -> None:
  while _servers:
    _servers.pop().stop()


_failed: list[dict] = []  # Environments whose server did not start: not tried again.


def _server_for(env: dict, slot: int) -> Optional[_Server]:
  """A running server for environment `env` and `slot`, started if none serves them yet."""
  _servers[:] = [s for s in _servers if s.alive()]
  for server in _servers:
    if server.slot == slot and server.serves(env):
      return server
  if len(_servers) >= MAX_SERVERS or _base(env) in _failed:
    return None
  if not _servers:  # Registered in the tests' process only, as `_output_file`'s folder.
    atexit.unregister(_stop_servers)
    atexit.register(_stop_servers)
  server = _Server(env, slot)
  if not server.alive():
    server.stop()
    _failed.append(server.env)
    return None
  _servers.append(server)
  return server


def _script(argv: list, cwd: str) -> Optional[str]:
  """The script `argv` runs as `python SCRIPT.py ...`, or None for another command."""
  if len(argv) < 2 or argv[0] != sys.executable or not str(argv[1]).endswith(".py"):
    return None
  path = os.path.join(cwd, argv[1])
  return path if os.path.isfile(path) else None


def _target(stream, output: bool) -> Optional[str]:
  """Where a child's stream goes: a file's path, "PIPE" (a file of ours), "STDOUT"; None for
  what a fork cannot give (another pipe, a descriptor, inheriting ours)."""
  if stream == subprocess.PIPE:
    return "PIPE"
  if stream == subprocess.STDOUT and not output:
    return "STDOUT"
  if hasattr(stream, "name") and isinstance(stream.name, str) and os.path.isfile(stream.name):
    stream.flush()
    return stream.name
  return None


class Popen:
  """A run of `python SCRIPT.py ...` forked by a server, as `subprocess.Popen` runs it."""

  def __init__(self, server: _Server, argv: list, script: str, cwd: str, env: dict,
               stdout: str, stderr: str, text: bool):
    self.args = list(argv)
    self.returncode: Optional[int] = None
    self.stdout = self.stderr = None  # Pipes are files here: read by `communicate`.
    self._server, self._text = server, text
    self._files = {}  # The PIPE outputs' files.
    paths = {}
    for name, target in (("stdout", stdout), ("stderr", stderr)):
      if target == "PIPE":
        paths[name] = self._files[name] = _output_file()
      elif target == "STDOUT":
        paths[name] = paths["stdout"]
      else:
        paths[name] = os.path.abspath(target)
    self.pid = server.start({"argv": self.args, "script": script, "cwd": cwd,
                             "stdout": paths["stdout"], "stderr": paths["stderr"],
                             "same": stderr == "STDOUT",
                             "env": {k: env[k] for k in REQUEST_KEYS if k in env}})

  def poll(self) -> Optional[int]:
    if self.returncode is None:
      self.returncode = self._server.status(self.pid, timeout=0)
    return self.returncode

  def wait(self, timeout: Optional[float] = None) -> int:
    if self.returncode is None:
      self.returncode = self._server.status(self.pid, timeout)
      if self.returncode is None:
        raise subprocess.TimeoutExpired(self.args, timeout)
    return self.returncode

  def communicate(self, timeout: Optional[float] = None) -> tuple:
    """Waits for the end, then returns the PIPE outputs (None for others).

    Raises:
      subprocess.TimeoutExpired: still running after `timeout` s (it is not killed).
    """
    self.wait(timeout)
    texts = []
    for name in ("stdout", "stderr"):
      path = self._files.get(name)
      if path is None:
        texts.append(None)
        continue
      with open(path, "r" if self._text else "rb") as f:
        texts.append(f.read())
    return tuple(texts)

  def send_signal(self, signum: int) -> None:
    if self.poll() is None:
      os.kill(self.pid, signum)

  def kill(self) -> None:
    self.send_signal(signal.SIGKILL)

  def terminate(self) -> None:
    self.send_signal(signal.SIGTERM)


def popen(argv: list, *, env: dict, cwd: Optional[str] = None, stdout=None, stderr=None,
          text: bool = False, slot: int = 0, **kwargs):
  """`subprocess.Popen(argv, env=env, cwd=cwd, stdout=..., stderr=..., text=...)`, forked by
  a server where the fork is the same run; else that `subprocess.Popen`.

  `slot`: runs of other slots fork from other servers, whose hash seeds (and the like) differ
  as two new processes' would: give each process of a multi-process job its own (its process
  index), so that a disagreement between processes that follows from a set's order, say, is
  not hidden by their one seed.
  """
  cwd = cwd or os.getcwd()
  script = _script(argv, cwd)
  out, err = _target(stdout, True), _target(stderr, False)
  server = (_server_for(env, slot) if script and out and err and not kwargs
            and os.environ.get("A2I_LAUNCHER", "1") != "0" else None)
  if os.environ.get("A2I_LAUNCHER_LOG"):  # A line per run: how it started (for a look).
    with open(os.environ["A2I_LAUNCHER_LOG"], "a") as log:
      print("fork" if server else "subprocess", *argv[1:3], file=log)
  if server is None:
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout, stderr=stderr, text=text,
                            **kwargs)
  return Popen(server, argv, script, cwd, env, out, err, text)


def run(argv: list, *, cwd: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
  """`subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
  timeout=timeout)`, forked by a server where the fork is the same run.

  Raises:
    subprocess.TimeoutExpired: the run took longer than `timeout` (it is killed).
  """
  p = popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    out, err = p.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    p.kill()
    out, err = p.communicate()
    raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err) from None
  return subprocess.CompletedProcess(argv, p.returncode, stdout=out, stderr=err)


def _become(request: dict, keep_out: list, dispositions: dict) -> None:
  """In the child: the run's process state, then its script, as `python SCRIPT ARGS` would.
  Returns only by raising (SystemExit or the script's exception), out to the interpreter's
  end.

  Args:
    request: the run (argv, script, cwd, outputs, the request's variables).
    keep_out: the server's descriptors, closed here.
    dispositions: each signal's handler as the server found it at its start: a new process's
      (Python's own SIGINT handler, or SIG_IGN where the tests' process ignores it, as under
      nohup).
  """
  signal.set_wakeup_fd(-1)
  for signum, handler in dispositions.items():
    signal.signal(signum, handler)
  for fd in keep_out:  # The server's pipes.
    os.close(fd)
  null = os.open(os.devnull, os.O_RDONLY)
  os.dup2(null, 0)
  os.close(null)
  # At the end of what the file holds, as a child given the caller's open file writes after
  # what the caller wrote (review: was truncated).
  out = os.open(request["stdout"], os.O_WRONLY | os.O_APPEND)
  os.dup2(out, 1)
  if request["same"]:
    os.dup2(out, 2)
  else:
    err = os.open(request["stderr"], os.O_WRONLY | os.O_APPEND)
    os.dup2(err, 2)
    os.close(err)
  os.close(out)
  os.chdir(request["cwd"])
  for key in REQUEST_KEYS:
    os.environ.pop(key, None)
  os.environ.update(request["env"])
  np.random.seed()  # From the OS, as a new process's (the `random` module reseeds itself).
  _absl_after_the_wrap()
  argv = request["argv"]
  sys.argv = argv[1:]  # As given: argv[0] relative where the command's is (review).
  sys.orig_argv = list(argv)
  path = os.path.abspath(request["script"])
  sys.path[0] = os.path.dirname(path)
  # `__main__` as Python makes it for a script (runpy rewrote argv[0] to the path it took).
  import builtins  # pylint: disable=import-outside-toplevel
  import importlib.machinery  # pylint: disable=import-outside-toplevel
  import types  # pylint: disable=import-outside-toplevel
  main = types.ModuleType("__main__")
  main.__file__ = path
  main.__builtins__ = builtins
  main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
  main.__spec__ = None
  sys.modules["__main__"] = main
  with open(path, "rb") as f:
    code = compile(f.read(), path, "exec")
  exec(code, main.__dict__)  # pylint: disable=exec-used
  raise SystemExit(0)


def _absl_after_the_wrap() -> None:
  """absl's handler writes to the stderr it found when absl was imported: in a new train.py
  or infer.py, the one `startup.begin` has made safe from a closed console
  (`keep_going_without_a_console`), since they import absl after that; here the server's
  (review). The wrap re-points the handler to the stream it makes, as that import order
  would have."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  from a2i_jax import startup  # pylint: disable=import-outside-toplevel
  wrap = startup.keep_going_without_a_console
  handler = absl_logging.get_absl_handler().python_handler

  def wrap_then_follow():
    before = sys.stderr
    wrap()
    if handler.stream is before:
      handler.stream = sys.stderr
  startup.keep_going_without_a_console = wrap_then_follow


def _serve() -> None:
  """A server's loop: a fork per request and its PID, each child's status when it ends."""
  import importlib  # pylint: disable=import-outside-toplevel
  import logging  # pylint: disable=import-outside-toplevel
  # A new process's handlers, as Python set them at its start (before the server's own).
  dispositions = {}
  for signum in signal.valid_signals():
    if signum not in (signal.SIGKILL, signal.SIGSTOP):
      handler = signal.getsignal(signum)
      if handler is not None:  # Not Python's to set (set outside it): left as it is.
        dispositions[signum] = handler
  for name in _PRELOAD:
    importlib.import_module(name)
  # Orbax's import logs through absl before absl's handler is in place, which adds
  # `logging.basicConfig`'s handler on the server's sys.stderr. A new process adds it too, on
  # the stream the entry points wrap first, where absl's `use_absl_handler` removes it; this
  # one it would not: a child printed every INFO line twice.
  for handler in list(logging.root.handlers):
    logging.root.removeHandler(handler)
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  backends = xla_bridge._backends  # pylint: disable=protected-access
  assert not backends, "an import started JAX's backend, which a fork cannot share"
  requests, answers = os.dup(0), os.dup(1)
  null = os.open(os.devnull, os.O_RDWR)
  os.dup2(null, 0)
  os.dup2(null, 1)
  os.close(null)
  wake_r, wake_w = os.pipe()
  os.set_blocking(wake_w, False)
  signal.set_wakeup_fd(wake_w)
  signal.signal(signal.SIGCHLD, lambda *_: None)

  children, buffer, reading = set(), b"", True

  def answer(message):
    try:
      os.write(answers, json.dumps(message).encode() + b"\n")
    except BrokenPipeError:  # The tests ended: so do the runs left (review: orphaned).
      for pid in children:
        os.kill(pid, signal.SIGKILL)
      os._exit(0)  # pylint: disable=protected-access

  answer({"ready": dict(os.environ)})
  while reading or children:
    ready = select.select([requests, wake_r] if reading else [wake_r], [], [])[0]
    if wake_r in ready:
      os.read(wake_r, 4096)
    while children:
      pid, status = os.waitpid(-1, os.WNOHANG)
      if pid == 0:
        break
      children.discard(pid)
      answer({"ended": pid, "status": os.waitstatus_to_exitcode(status)})
    if requests in ready:
      chunk = os.read(requests, 65536)
      if not chunk:  # The tests ended: so do any runs left.
        reading = False
        for pid in children:
          os.kill(pid, signal.SIGKILL)
      buffer += chunk
      while b"\n" in buffer:
        line, buffer = buffer.split(b"\n", 1)
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
          _become(request, [requests, answers, wake_r, wake_w], dispositions)
        children.add(pid)
        answer({"started": pid})


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
  _serve()
