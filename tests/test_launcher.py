"""The tests' fork server (tests/launcher.py): a run it forks sees what a new process would,
and ends as one would."""

import json
import os
import signal
import subprocess
import sys

import pytest

import faults_lib
import launcher

SCRIPT = """
import json, os, signal, sys
what = sys.argv[1]
print(json.dumps({"argv": sys.argv, "hash": hash("a2i"), "cwd": os.getcwd(),
                  "pid": os.getpid(), "ppid": os.getppid(),
                  "path0": sys.path[0], "fault": os.environ.get("A2I_FAULT"),
                  "main": __name__, "file": __file__,
                  "sigint": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
                  "sigterm": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL}))
print("to stderr", file=sys.stderr)
sys.stdout.flush()
if what == "exit":
  sys.exit(3)
if what == "raise":
  raise ValueError("raised")
if what == "kill":
  os.kill(os.getpid(), signal.SIGKILL)
if what == "sleep":
  import time
  time.sleep(60)
if what == "atexit":
  import atexit
  atexit.register(lambda: print("atexit ran", file=sys.stderr))
"""


@pytest.fixture
def script(tmp_path):
  folder = tmp_path / "scripts"
  folder.mkdir()
  path = folder / "probe.py"
  path.write_text(SCRIPT)
  return str(path)


def _both(argv, cwd, env):
  """The run forked by the server, and as a new process."""
  forked = launcher.run(argv, cwd=cwd, env=env, timeout=60)
  new = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
  return forked, new


@pytest.mark.parametrize("what,status", [("exit", 3), ("raise", 1), ("kill", -9),
                                         ("atexit", 0), ("end", 0)])
def test_a_forked_run_sees_and_ends_as_a_new_process(script, tmp_path, what, status):
  env = faults_lib.environment("kill_after_step:1")  # The server's, with a fault's variable.
  argv = [sys.executable, script, what, "--flag=x"]
  forked, new = _both(argv, str(tmp_path), env)
  assert forked.returncode == new.returncode == status, (forked, new)
  seen, expected = (json.loads(r.stdout.splitlines()[0]) for r in (forked, new))
  seen.pop("hash"), expected.pop("hash")
  assert seen.pop("pid") not in (os.getpid(), expected.pop("pid"))
  # Forked by the server that serves this environment; the other one by this process.
  assert expected.pop("ppid") == os.getpid()
  servers = launcher._servers  # pylint: disable=protected-access
  assert seen.pop("ppid") in [s.proc.pid for s in servers if s.serves(env)]
  # The handlers as a new process finds them (Ctrl-C ignored where this process ignores it,
  # as a background job's would).
  assert seen == expected, (seen, expected)
  assert {k: v for k, v in seen.items() if k not in ("sigint", "sigterm")} == {
      "argv": [script, what, "--flag=x"], "cwd": str(tmp_path),
      "path0": os.path.dirname(script), "fault": "kill_after_step:1", "main": "__main__",
      "file": script}, seen
  assert forked.stderr.splitlines()[0] == "to stderr"
  assert (forked.stderr.splitlines()[-1] == new.stderr.splitlines()[-1]
          == {"raise": "ValueError: raised", "atexit": "atexit ran"}.get(what, "to stderr"))


def test_a_forked_run_can_be_waited_for_signalled_and_timed_out(script, tmp_path):
  env = faults_lib.environment()
  p = launcher.popen([sys.executable, script, "sleep"], env=env, cwd=str(tmp_path),
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  assert isinstance(p, launcher.Popen) and p.poll() is None
  with pytest.raises(subprocess.TimeoutExpired):
    p.wait(timeout=0.2)
  p.send_signal(signal.SIGTERM)
  out, err = p.communicate(timeout=30)
  assert p.returncode == -signal.SIGTERM and err is None
  assert out.splitlines()[-1] == "to stderr"  # stderr into stdout, in order.
  with pytest.raises(subprocess.TimeoutExpired):
    launcher.run([sys.executable, script, "sleep"], cwd=str(tmp_path), env=env, timeout=0.5)


def test_what_a_fork_cannot_be_starts_otherwise(script, tmp_path):
  """A `-c` program starts with `subprocess`; an environment that the imports may read
  otherwise (here PYTHONWARNINGS, read at start) gets a server of its own."""
  env = faults_lib.environment()
  p = launcher.popen([sys.executable, "-c", "print(1)"], env=env, stdout=subprocess.PIPE)
  assert isinstance(p, subprocess.Popen)
  p.communicate()
  other = dict(env, PYTHONWARNINGS="error")
  r = launcher.run([sys.executable, script, "end"], cwd=str(tmp_path), env=other, timeout=60)
  assert r.returncode == 0
  servers = launcher._servers  # pylint: disable=protected-access
  assert [s.serves(other) for s in servers].count(True) == 1
  assert not any(s.serves(other) and s.serves(env) for s in servers)


def test_argv_output_files_and_the_processes_of_a_job(script, tmp_path):
  """What the review found a fork gave otherwise: argv[0] as the command gave it (runpy made
  it the absolute path: infer.py --help named /work/main/infer.py), a file output written
  after what the caller wrote (was truncated), and one hash seed for the processes of a
  multi-process job (each process index forks from a server of its own: `slot`)."""
  env = faults_lib.environment()
  folder = os.path.dirname(script)
  log = tmp_path / "log"
  with open(log, "w") as f:
    f.write("the caller's line\n")
    f.flush()
    p = launcher.popen([sys.executable, "probe.py", "end"], env=env, cwd=folder, stdout=f,
                       stderr=subprocess.STDOUT)
    assert isinstance(p, launcher.Popen) and p.wait(timeout=60) == 0
  lines = log.read_text().splitlines()
  assert lines[0] == "the caller's line" and lines[-1] == "to stderr", lines
  seen = json.loads(lines[1])
  assert seen["argv"] == ["probe.py", "end"] and seen["file"] == script
  hashes = []
  for slot in (0, 1):
    r = launcher.popen([sys.executable, script, "end"], env=env, cwd=folder,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, slot=slot)
    hashes.append(json.loads(r.communicate(timeout=60)[0].splitlines()[0])["hash"])
  if "PYTHONHASHSEED" not in env:  # Else every process has the one seed anyway.
    assert hashes[0] != hashes[1]
