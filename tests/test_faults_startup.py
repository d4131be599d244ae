"""Fault suite, start-up: JAX settings (JAX_* environment variables, XLA_FLAGS) that the entry
points cannot run under stop with one `error:` line that names the variable and the fix, before
anything is written (`startup.check_jax_environment`, `distributed.start_backend`).

Fast: the checks run in this process, the option set as its variable would set it, and put
back; JAX's failure to start a backend, which a process meets once, is stood in for with JAX's
own words, except in the one train.py run that proves the line.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from a2i_jax import distributed, startup
from a2i_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def jax_option():
  """Sets a JAX option (`set(name, value)`) and puts it back after the test."""
  before = {}

  def set_option(name, value):
    before.setdefault(name, getattr(jax.config, name))
    jax.config.update(name, value)
  yield set_option
  for name, value in before.items():
    jax.config.update(name, value)


@pytest.mark.parametrize("value", ["disallow", "disallow_explicit", "log", "log_explicit",
                                   "allow"])
def test_a_transfer_guard_that_disallows_is_one_line(monkeypatch, capsys, jax_option, value):
  """Review: JAX_TRANSFER_GUARD=disallow (or disallow_explicit) ended train.py and infer.py in
  a 70-line traceback (Disallowed host-to-device transfer) at the first array made. The
  other levels keep working (each transfer logged): nothing said, nothing refused."""
  monkeypatch.setenv("JAX_TRANSFER_GUARD", value)
  jax_option("jax_transfer_guard", value)
  if not value.startswith("disallow"):
    startup.check_jax_environment()
    assert not capsys.readouterr().err
    return
  with pytest.raises(SystemExit) as e:
    startup.check_jax_environment()
  err = capsys.readouterr().err
  assert e.value.code == 1 and err.count("\n") == 1, err
  assert err.startswith(f"error: JAX_TRANSFER_GUARD={value} is set, which the library does "
                        "not support (it moves arrays between the host and the devices") and (
                            "JAX_TRANSFER_GUARD=log reports each move instead); unset it.\n"
                            in err), err


def _absent_platform() -> str:
  """A platform JAX_DEFAULT_DEVICE may name that this process has not started."""
  for platform in ("tpu", "gpu"):
    try:
      jax.devices(platform)
    except RuntimeError:
      return platform
  pytest.skip("this machine has both a TPU and a GPU")


def test_a_default_device_on_a_platform_not_started_is_one_line(monkeypatch, jax_option):
  """Review: JAX_DEFAULT_DEVICE=gpu on a machine without one was a 67-line traceback
  (RuntimeError: Unknown backend 'gpu') where train.py and infer.py made their first array;
  `start_backend` names it, after the backends start. A platform that did start (cpu) runs."""
  absent = _absent_platform()
  monkeypatch.setenv("JAX_DEFAULT_DEVICE", absent)
  jax_option("jax_default_device", absent)
  with pytest.raises(ConfigError) as e:
    distributed.start_backend()
  assert str(e.value) == (
      f"JAX_DEFAULT_DEVICE={absent} names a platform JAX has not started here (it has: cpu); "
      "unset JAX_DEFAULT_DEVICE or set it to one it has (cpu)."), e.value
  monkeypatch.setenv("JAX_DEFAULT_DEVICE", "cpu")
  jax_option("jax_default_device", "cpu")
  distributed.start_backend()
  assert jnp.ones(2).devices() == {jax.devices("cpu")[0]}


def test_no_cpu_devices_in_xla_flags_is_named(monkeypatch):
  """As JAX_NUM_CPU_DEVICES=0 (below): XLA_FLAGS' --xla_force_host_platform_device_count=0
  leaves the CPU backend without devices, and was told to unset JAX_PLATFORMS. JAX's failure
  stood in for, in its own words; one on another platform keeps JAX_PLATFORMS's line."""
  def fail(words):
    def devices():
      raise RuntimeError(words)
    return devices
  monkeypatch.setattr(distributed.jax, "devices", fail(
      "Unable to initialize backend 'cpu': INVALID_ARGUMENT: Could not determine "
      "process_index for this process (set JAX_PLATFORMS='' to automatically choose an "
      "available backend)"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_thunk_runtime=true "
                     "--xla_force_host_platform_device_count=0")
  with pytest.raises(ConfigError, match="^XLA_FLAGS sets --xla_force_host_platform_device_"
                     "count=0, which gives JAX's CPU backend no devices, so it cannot start; "
                     "set it to 1 or more, or remove it from XLA_FLAGS.$"):
    distributed.start_backend()
  monkeypatch.setattr(distributed.jax, "devices", fail("Unable to initialize backend 'cuda'"))
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  with pytest.raises(ConfigError, match="^JAX could not start its backend \\(JAX_PLATFORMS="
                     "cuda\\): .*Unset JAX_PLATFORMS or "):
    distributed.start_backend()


def test_no_cpu_devices_is_one_line_naming_jax_num_cpu_devices(tmp_path):
  """Review: train.py under JAX_NUM_CPU_DEVICES=0 (and JAX_PLATFORMS=cpu) said "JAX could not
  start its backend (JAX_PLATFORMS=cpu) ... Unset JAX_PLATFORMS", a variable set right. A
  process of its own: JAX reads the count once, as its backend starts."""
  env = {**os.environ, "JAX_NUM_CPU_DEVICES": "0", "JAX_PLATFORMS": "cpu",
         "A2I_HUGE_PAGES": "0"}
  workdir = tmp_path / "w"
  r = subprocess.run([sys.executable, "train.py", "--config=configs/synthetic.py",
                      f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=120, check=False)
  assert r.returncode == 1 and r.stderr == (
      "error: JAX_NUM_CPU_DEVICES=0 gives JAX's CPU backend no devices, so it cannot start; "
      "set JAX_NUM_CPU_DEVICES to 1 or more, or unset it (one device).\n"), (
          r.returncode, r.stderr[-2000:])
  assert not workdir.exists()


def test_no_cpu_devices_is_found_before_jax_starts_its_backend(monkeypatch):
  """Review: the CPU device count was looked at only after `jax.devices()` had failed, and
  with peers it never fails: the process without devices crashed inside it (a segfault, no
  line). Now the settings are checked first; JAX's start here would be a test failure."""
  def started():
    raise AssertionError("jax.devices() was called")
  monkeypatch.setattr(distributed.jax, "devices", started)
  monkeypatch.setattr(distributed, "_backends_ready", lambda: False)
  assert jax.config.jax_num_cpu_devices < 0  # Else it, not XLA_FLAGS, gives the count.
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2 "
                     "--xla_force_host_platform_device_count=00")  # The last one counts.
  with pytest.raises(ConfigError, match="^XLA_FLAGS sets --xla_force_host_platform_device_"
                     "count=0, which gives JAX's CPU backend no devices, so it cannot start; "
                     "set it to 1 or more, or remove it from XLA_FLAGS.$"):
    distributed.start_backend()


@pytest.mark.parametrize("script", ["train.py", "infer.py"])
def test_a_python_without_the_project_installed_is_one_line(tmp_path, script):
  """Was `ModuleNotFoundError: No module named 'jax'`'s 9-line traceback: the entry point run
  by a Python other than the project's (`python` outside the virtual environment). `-S -E`:
  no site-packages, no PYTHONPATH, so no JAX; nothing is written."""
  r = subprocess.run([sys.executable, "-S", "-E", os.path.join(ROOT, script),
                      f"--workdir={tmp_path / 'w'}"], cwd=tmp_path, capture_output=True,
                     text=True, timeout=60, check=False)
  assert r.returncode == 1 and r.stderr == (
      f"error: this Python ({sys.executable}) cannot import jax (No module named 'jax'); run "
      "the command with the Python of the project's virtual environment (activate it), or "
      "install the project into this one (pip install -e .).\n"), r.stderr
  assert os.listdir(tmp_path) == []


def test_a_dependency_not_installed_is_named(monkeypatch, capsys):
  """The dependencies after JAX are looked for, not imported (infer.py imports no optax)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  found = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *args: None if name == "orbax" else found(name, *args))
  with pytest.raises(SystemExit) as e:
    startup.check_jax_environment()
  assert e.value.code == 1
  assert capsys.readouterr().err.startswith(f"error: this Python ({sys.executable}) cannot "
                                            "import orbax (No module named 'orbax'); run ")


def test_a_console_that_cannot_print_a_path_escapes_it(monkeypatch):
  """Was (fault hunt): under en_US.UTF-8 standard output is strict, and infer.py
  --mode=sample,reconstruct --out=out_caf\\xe9 (bytes that are not UTF-8) wrote the samples,
  then stopped at its "wrote ..." line with UnicodeEncodeError's traceback, reconstruct never
  run. The entry points' console writes such a name escaped, as standard error does."""
  import io  # pylint: disable=import-outside-toplevel
  raw = io.BytesIO()
  strict = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
  monkeypatch.setattr(sys, "stdout", strict)
  startup.keep_going_without_a_console()
  print("wrote out_caf\udce9/sample.json")
  sys.stdout.flush()
  assert raw.getvalue() == b"wrote out_caf\\udce9/sample.json\n"
