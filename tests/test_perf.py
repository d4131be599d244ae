"""The performance defaults change speed, not results: the precision policy, the recommended
XLA:CPU flags (chosen by measurement), donation and fused dispatches against the plain step."""

import functools
import json
import os
import re
import subprocess
import sys

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from a2i_jax import checkpoints, files, models, parallel, perf, train_lib
from a2i_jax.data import load_dataset
from a2i_jax.errors import ConfigError
from a2i_jax.models import conv_grad
from conftest import normal as _normal, tiny_config


def test_auto_dtype_is_bf16_on_accelerators_and_f32_on_cpu():
  assert perf.compute_dtype("auto", "cpu") == jnp.float32
  assert perf.compute_dtype("auto", "gpu") == jnp.bfloat16
  assert perf.compute_dtype("auto", "tpu") == jnp.bfloat16
  assert perf.compute_dtype("bfloat16", "cpu") == jnp.bfloat16
  assert perf.compute_dtype("auto") == jnp.float32  # The tests run on CPU.
  with pytest.raises(ConfigError, match="model.dtype='f32'.*float32"):
    perf.compute_dtype("f32")


def test_auto_dtype_keeps_the_parameter_structure():
  """Checkpoints written with either setting restore into the other: same tree, same dtypes."""
  cfg = tiny_config("discvae")
  shapes = []
  for dtype in ("float32", "bfloat16", "auto"):
    cfg.model.dtype = dtype
    variables = models.abstract_variables(models.create_model(cfg.model), cfg.model)
    shapes.append(jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), variables))
  assert shapes[0] == shapes[1] == shapes[2]


def test_recommended_flags_keep_user_flags_and_leave_out_unknown_ones(monkeypatch):
  asked = []

  def accepted(flags, cache_file=None):
    asked.append(flags)
    return tuple(f for f in flags if f != "--xla_d=5")
  monkeypatch.setattr(perf, "accepted_xla_flags", accepted)
  monkeypatch.setattr(perf, "_backend_started", lambda: False)  # As an entry point calls it.
  monkeypatch.setenv("XLA_FLAGS", "--xla_a=1 --xla_b=2")
  value = perf.set_recommended_xla_flags(("--xla_b=3", "--xla_c=4", "--xla_d=5"))
  assert value == "--xla_a=1 --xla_b=2 --xla_c=4" == os.environ["XLA_FLAGS"]
  assert asked == [("--xla_c=4", "--xla_d=5")]  # The user's own flags are not even asked.
  assert perf.set_recommended_xla_flags(("--xla_a=0",)) == value and len(asked) == 1


def test_xla_flags_naming_a_file_of_flags_are_the_users(tmp_path, monkeypatch):
  """XLA reads its flags from a file where XLA_FLAGS names one: a flag added after the name
  made XLA look for a file of that whole name and abort the process (fault hunt). Nothing is
  added, and the file's flags are the user's: a compile option there stays as set."""
  path = tmp_path / "xla flags"
  path.write_text(f"--xla_backend_optimization_level=3\n{perf.XLA_CONVOLUTIONS_FLAG}\n")
  monkeypatch.setattr(perf, "recommended_cpu_flags", lambda *a: pytest.fail("probed"))
  monkeypatch.setattr(perf, "accepted_xla_flags", lambda *a: pytest.fail("probed"))
  monkeypatch.setenv("XLA_FLAGS", str(path))
  assert perf.set_recommended_xla_flags() == str(path) == os.environ["XLA_FLAGS"]
  assert perf.set_recommended_xla_flags(("--xla_c=4",)) == str(path)
  assert perf.xla_convolutions()
  assert "xla_backend_optimization_level" not in (perf.compiler_options(backend="cpu") or {})
  # Flags after a space: not a file (read as one, the flag was not seen; review: the check
  # was `not xla_convolutions()`, which a file read as nothing passed as well).
  monkeypatch.setenv("XLA_FLAGS", f" {perf.XLA_CONVOLUTIONS_FLAG}")
  assert perf.xla_convolutions()


def test_no_home_folder_leaves_the_working_folder_alone(tmp_path, monkeypatch, caplog):
  """HOME unset for a user the password database does not know (a container's arbitrary
  user): the caches' folder was a relative "~/.cache/a2i_jax", made in the working folder as
  a folder named "~" (fault hunt). The probe's answers go to this user's private temporary
  folder; the compilation cache is off, with one warning."""
  import pwd  # pylint: disable=import-outside-toplevel

  def unknown(uid):
    raise KeyError(uid)
  monkeypatch.setattr(pwd, "getpwuid", unknown)
  for name in ("HOME", "XDG_CACHE_HOME", "JAX_COMPILATION_CACHE_DIR"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(perf.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
  assert files.user_cache_dir() == ""
  assert perf._default_flag_cache() == str(  # pylint: disable=protected-access
      tmp_path / "tmp" / f"a2i_jax-{os.getuid()}" / "xla_flags.json")
  # The last: a user the system does not know (was told "HOME is not set"; fault hunt).
  _leaves_the_cache_as_it_was(files.DEFAULT_COMPILATION_CACHE_DIR, "~/xla",
                              "~a2i-no-such-user/xla")
  assert caplog.text.count("HOME is not set") == 2 and os.listdir(tmp_path) == ["tmp"]
  assert "(there is no user 'a2i-no-such-user')" in caplog.text


def test_a_cache_folder_behind_a_link_to_nothing_is_not_used(tmp_path, monkeypatch, caplog):
  """XDG_CACHE_HOME a symbolic link to a folder that is not there (a disk not mounted): the
  probe's answers could not be kept, so every start measured again, and JAX warned at every
  program, two lines each (fault hunt)."""
  link = tmp_path / "cache"
  link.symlink_to(tmp_path / "not mounted")
  monkeypatch.setenv("XDG_CACHE_HOME", str(link))
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setattr(perf.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
  assert perf._default_flag_cache() == str(  # pylint: disable=protected-access
      tmp_path / "tmp" / f"a2i_jax-{os.getuid()}" / "xla_flags.json")
  _leaves_the_cache_as_it_was(files.DEFAULT_COMPILATION_CACHE_DIR)
  assert f"{link} is a symbolic link to nothing" in caplog.text


def _leaves_the_cache_as_it_was(*directories: str) -> None:
  """Asserts that `files.enable_compilation_cache` of each of `directories` leaves JAX's cache
  folder as the suite set it (and puts it back if not, for the tests after)."""
  folder = jax.config.jax_compilation_cache_dir
  try:
    for directory in directories:
      files.enable_compilation_cache(directory)
      assert jax.config.jax_compilation_cache_dir == folder, directory
  finally:
    jax.config.update("jax_compilation_cache_dir", folder)


def test_an_empty_jax_compilation_cache_dir_keeps_the_cache_off(tmp_path, monkeypatch):
  """JAX reads JAX_COMPILATION_CACHE_DIR set but empty as "no cache"; the configs' default was
  taken as unset and turned the cache on in $XDG_CACHE_HOME/a2i_jax/xla (review finding)."""
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")
  _leaves_the_cache_as_it_was(files.DEFAULT_COMPILATION_CACHE_DIR)
  assert not (tmp_path / "a2i_jax").exists()


def test_a_wait_for_the_probes_lock_is_said_on_a_quiet_console(tmp_path, monkeypatch, capsys):
  """infer.py (warnings only) started while another process measured this machine waited for
  it without a word, up to the probe children's timeouts (fault hunt)."""
  import fcntl  # pylint: disable=import-outside-toplevel
  import threading  # pylint: disable=import-outside-toplevel
  cache = str(tmp_path / "answers.json")
  fd = os.open(cache + ".lock", os.O_RDONLY | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX)  # The other process's.
  threading.Timer(0.2, os.close, (fd,)).start()
  monkeypatch.setattr(logging, "get_verbosity", lambda: logging.WARNING)
  with perf._cache_lock(cache) as locked:  # pylint: disable=protected-access
    assert locked
  assert "waiting for another process measuring this machine" in capsys.readouterr().err


def test_cpu_model(tmp_path):
  intel, amd, bare = tmp_path / "intel", tmp_path / "amd", tmp_path / "bare"
  intel.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 167\n"
                   "model name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\n"
                   "model name\t: Other\n")
  amd.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                 "model name\t: AMD EPYC 9B14\n")
  bare.write_text("processor\t: 0\nvendor_id\t: SomeVendor\n")
  assert perf.cpu_model(str(intel)) == "Intel(R) Xeon(R) Processor (family 6, model 167)"
  assert perf.cpu_model(str(amd)) == "AMD EPYC 9B14 (family 25, model 17)"
  assert perf.cpu_model(str(bare)) == "SomeVendor (family ?, model ?)"
  assert perf.cpu_model(str(tmp_path / "missing")) == ""


def test_convolution_kernel_programs_compare_ynnpack_with_xla():
  """The timed sets are what they say: YNNPACK's kernels in one, XLA's own in the other, each
  with the layer forms the library runs with them (YNNPACK's: weight gradients as per-tap
  matrix products; the output heads in each decoder tail's form), and both gradients timed,
  not only the input's (the probe that left the weight gradient out chose YNNPACK's kernels
  on an Intel Xeon where XLA's trained the disCVAE 1.4-1.7x faster)."""
  programs = perf.convolution_kernel_programs(batch=1)
  import importlib.metadata  # pylint: disable=import-outside-toplevel
  if programs is None:  # No YNNPACK in this XLA: jaxlib 0.7.2 (the oldest pins), not 0.10.
    assert tuple(int(v) for v in importlib.metadata.version("jaxlib").split(".")[:2]) < (0, 10)
    return
  assert [len(v) for v in programs.values()] == [len(perf.TIMED_CONVOLUTIONS) + 1] * 2
  for key, calls in programs.items():  # The heads last, in each side's decoder-tail form.
    size, cin, cout, k = perf.TIMED_HEADS[key]
    assert calls[-1][1].shape[1:] == (size, size, cin) and calls[-1][2].shape == (k, k, cin, cout)
  assert perf.TIMED_HEADS["ynnpack_ms"] != perf.TIMED_HEADS["xla_ms"]
  count = lambda op, text: len(re.findall(rf"= \S+ {op}\(", text))
  ynn_texts = [compiled.as_text() for compiled, _, _ in programs["ynnpack_ms"]]
  assert all("ynn_fusion" in text for text in ynn_texts)
  assert sum(count("dot", text) for text in ynn_texts) > 0  # The taps' products.
  for compiled, _, _ in programs["xla_ms"]:
    text = compiled.as_text()
    # Forward, input gradient, weight gradient: three convolutions at least, none in YNNPACK.
    assert "ynn_fusion" not in text and count("convolution", text) >= 3, text
  # Both give the same numbers, both gradients, where they time the same convolution.
  for (a, x, w), (b, _, _) in list(zip(*programs.values()))[:-1]:
    (dx_a, dw_a), (dx_b, dw_b) = a(x, w), b(x, w)
    assert dx_a.shape == x.shape and dw_a.shape == w.shape
    np.testing.assert_allclose(np.asarray(dx_a), np.asarray(dx_b), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(dw_a), np.asarray(dw_b), rtol=1e-4)


@pytest.mark.parametrize("ynnpack_s,xla_s,rounds", [
    (1.4, 1.0, 3),  # XLA's clearly faster: settled after the third round.
    (0.8, 1.0, 3),  # YNNPACK's clearly faster.
    (1.1, 1.0, 5),  # Near XLA_CONVOLUTIONS_MIN_GAIN: every round.
    (1.0, 1.0, 5)])
def test_the_kernel_probe_stops_once_its_rounds_settle_the_choice(monkeypatch, ynnpack_s,
                                                                  xla_s, rounds):
  """The probe's rounds (0.8 s each on a 2-core Zen 4) stop after the third where the medians
  are clear of the line either way; a close call takes all five. The median is still what it
  reports. Timed on a fake clock: each program advances it by its set's seconds."""
  clock = [0.0]

  def program(seconds):
    def run(x, w):
      clock[0] += seconds
      return x
    return run
  calls = [(program(ynnpack_s), 0, 0)], [(program(xla_s), 0, 0)]
  monkeypatch.setattr(perf, "convolution_kernel_programs", lambda batch: dict(
      zip(("ynnpack_ms", "xla_ms"), calls)))
  monkeypatch.setattr(perf.time, "perf_counter", lambda: clock[0])
  timing = perf.time_convolution_kernels(rounds=5)
  assert timing == {"ynnpack_ms": 1e3 * ynnpack_s, "xla_ms": 1e3 * xla_s}
  assert clock[0] == pytest.approx(rounds * (ynnpack_s + xla_s))


def test_recommended_cpu_flags_are_measured_once_per_cpu_model(tmp_path, monkeypatch):
  flag = perf.XLA_CONVOLUTIONS_FLAG
  cache = str(tmp_path / "answers.json")
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setattr(perf, "accepted_xla_flags", lambda flags, cache_file=None: flags)
  children = []

  def child(ynnpack_ms, xla_ms, rc=0):
    def run(cmd, **kwargs):
      children.append(kwargs["env"]["JAX_PLATFORMS"])
      out = json.dumps({"ynnpack_ms": ynnpack_ms, "xla_ms": xla_ms}).encode() if rc == 0 else b""
      return subprocess.CompletedProcess(cmd, rc, b"compiling\n" + out, b"")
    monkeypatch.setattr(subprocess, "run", run)

  def no_child(*args, **kwargs):
    raise AssertionError("measured again")

  # XLA's convolutions 1.2x as fast: the flag, and the timing kept for this CPU model.
  monkeypatch.setattr(perf, "cpu_model", lambda: "CPU A")
  child(120.0, 100.0)
  assert perf.recommended_cpu_flags(cache) == (flag,) and children == ["cpu"]
  with open(cache, encoding="utf-8") as f:
    kept = json.load(f)["convolution kernels"]
  assert list(kept.values()) == [{"ynnpack_ms": 120.0, "xla_ms": 100.0}]
  assert next(iter(kept)).startswith("CPU A, ")
  monkeypatch.setattr(subprocess, "run", no_child)
  assert perf.recommended_cpu_flags(cache) == (flag,)
  # Another CPU model is measured on its own: there XLA's are not faster enough, no flag.
  monkeypatch.setattr(perf, "cpu_model", lambda: "CPU B")
  child(103.0, 100.0)
  assert perf.recommended_cpu_flags(cache) == () and len(children) == 2
  with open(cache, encoding="utf-8") as f:
    assert len(json.load(f)["convolution kernels"]) == 2
  # A damaged entry is not trusted. A failed child gives no flag, and is kept for a day, so
  # that each start does not wait for another child; after that it is measured again.
  with open(cache, encoding="utf-8") as f:
    answers = json.load(f)
  # This CPU's (B's) an infinite timing, JSON's Infinity (was trusted: XLA's form chosen
  # unmeasured; review finding); A's not a number.
  answers["convolution kernels"] = {
      k: {"ynnpack_ms": float("inf"), "xla_ms": 100.0} if k.startswith("CPU B")
      else {"ynnpack_ms": "fast"} for k in answers["convolution kernels"]}
  with open(cache, "w", encoding="utf-8") as f:
    json.dump(answers, f)
  child(0, 0, rc=1)
  assert perf.recommended_cpu_flags(cache) == () and len(children) == 3
  monkeypatch.setattr(subprocess, "run", no_child)
  assert perf.recommended_cpu_flags(cache) == ()
  with open(cache, encoding="utf-8") as f:
    answers = json.load(f)
  (failed,) = [v for v in answers["convolution kernels"].values() if "failed_at" in v]
  failed["failed_at"] -= 2 * 86400
  with open(cache, "w", encoding="utf-8") as f:
    json.dump(answers, f)
  child(130.0, 100.0)
  assert perf.recommended_cpu_flags(cache) == (flag,) and len(children) == 4
  # A user who names the flag in XLA_FLAGS decides; an XLA without it is not measured.
  monkeypatch.setattr(subprocess, "run", no_child)
  monkeypatch.setenv("XLA_FLAGS", flag.split("=")[0] + "=")
  assert perf.recommended_cpu_flags(str(tmp_path / "other.json")) == ()
  monkeypatch.delenv("XLA_FLAGS")
  monkeypatch.setattr(perf, "accepted_xla_flags", lambda flags, cache_file=None: ())
  assert perf.recommended_cpu_flags(str(tmp_path / "other.json")) == ()


@pytest.mark.parametrize("flags, expected", [
    ("", False), ("--xla_a=1", False), (perf.XLA_CONVOLUTIONS_FLAG, True),
    ("--xla_cpu_experimental_ynn_fusion_type=individual_dot", True),  # A list without them.
    ("--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution", False),
    ("--xla_cpu_experimental_ynn_fusion_type=-individual_dot", False),
    (perf.XLA_CONVOLUTIONS_FLAG + " --xla_cpu_experimental_ynn_fusion_type=+individual_dot",
     True),  # Every copy counts, in order.
    (perf.XLA_CONVOLUTIONS_FLAG + " --xla_cpu_experimental_ynn_fusion_type=+INDIVIDUAL_CONVOLUTION",
     False),
    ("--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION", True),
    ("--xla_cpu_experimental_ynn_fusion_type=", True),  # An empty list: nothing in YNNPACK.
])
def test_xla_convolutions_reads_the_flag(monkeypatch, flags, expected):
  monkeypatch.setenv("XLA_FLAGS", flags)
  assert perf.xla_convolutions() is expected


def test_the_convolution_kernels_are_named_as_xla_runs_them(monkeypatch):
  """`perf.convolution_kernels`, which train.py says and records and the attribute predictor's
  meta.json keeps (fault hunt: the timing's choice changed the numbers, unrecorded): the flags'
  answer, "xla" where this XLA has no YNNPACK (jaxlib 0.7.2), None off CPU; and the flag that
  pins each, offered only where the kernels alone differ, to be added to XLA_FLAGS before JAX
  starts. Off CPU the words name the backend (review: were the jaxlib alone)."""
  # pylint: disable=protected-access
  def answer():  # As a fresh process would give it: nothing kept yet.
    monkeypatch.setattr(perf, "_KERNELS_AT_START", [])
    return perf.convolution_kernels()
  monkeypatch.setenv("XLA_FLAGS", perf.XLA_CONVOLUTIONS_FLAG)
  assert answer() == "xla"
  monkeypatch.setenv("XLA_FLAGS", perf.YNNPACK_CONVOLUTIONS_FLAG)
  assert perf.xla_convolutions() is False
  monkeypatch.setattr(perf, "_option_known", lambda *a: True)
  assert answer() == "ynnpack"
  monkeypatch.setattr(perf, "_option_known", lambda *a: False)  # No YNNPACK in this XLA.
  assert answer() == "xla"
  monkeypatch.setattr(perf, "_jaxlib_release", lambda: "9.9")
  xla = {"kernels": "xla", "backend": "cpu", "jaxlib": "9.9"}
  assert perf.kernel_record() == xla
  assert perf.kernel_layout() == "XLA's own convolution kernels, jaxlib 9.9"
  ynn = {**xla, "kernels": "ynnpack"}
  how = ", keeping the flags it holds, before JAX starts (in a notebook: restart its kernel first)"
  assert perf.pin_kernels_advice(ynn, xla) == (
      f"add {perf.YNNPACK_CONVOLUTIONS_FLAG} to XLA_FLAGS{how}")
  assert perf.pin_kernels_advice(xla, ynn) == f"add {perf.XLA_CONVOLUTIONS_FLAG} to XLA_FLAGS{how}"
  assert perf.pin_kernels_advice(ynn, {**xla, "jaxlib": "9.8"}) == ""  # No flag pins a jaxlib.
  assert perf.pin_kernels_advice(ynn, ynn) == "" and perf.pin_kernels_advice(ynn, None) == ""
  assert perf.pin_kernels_advice(None, xla) == ""
  monkeypatch.setattr(perf.jax, "default_backend", lambda: "gpu")
  gpu = {"kernels": None, "backend": "gpu", "jaxlib": "9.9"}
  assert perf.convolution_kernels() is None and perf.kernel_record() == gpu
  assert perf.kernel_layout() == "gpu, jaxlib 9.9"
  assert perf.pin_kernels_advice(ynn, gpu) == ""  # No flag makes a GPU a CPU.
  assert perf.pin_kernels_advice(gpu, ynn) == ""
  assert perf.same_kernels(xla, dict(xla)) is True and perf.same_kernels(xla, ynn) is False
  assert perf.same_kernels(gpu, xla) is False and perf.same_kernels(None, xla) is None


def test_kernel_records_are_read_from_data_and_from_the_words_written_before():
  """Was: kernels.json and meta.json's "trained_with" held `kernel_layout`'s words, compared
  as text and parsed back for the flag that pins them (review). Now they hold
  `kernel_record`'s data; the words earlier runs wrote are read as the records they name, and
  anything else is unknown (None), never a record of other kernels."""
  xla = {"kernels": "xla", "backend": "cpu", "jaxlib": "0.10.2"}
  read = perf.read_kernel_record
  assert read(xla) == xla and read({**xla, "more": 1}) == xla
  assert read("XLA's own convolution kernels, jaxlib 0.10.2") == xla
  assert read("YNNPACK's convolution kernels, jaxlib 0.10.2") == {**xla, "kernels": "ynnpack"}
  assert read("gpu, jaxlib 0.10.2") == {"kernels": None, "backend": "gpu", "jaxlib": "0.10.2"}
  assert read({"kernels": None, "backend": "tpu", "jaxlib": "0.7.2"}) is not None
  for value in ("XLA's own convolution kernels, jax 0.7.2", "convolution kernels 'x', jaxlib 1",
                "cpu, jaxlib 0.10.2", "gpu, jaxlib ", "gpu, jaxlib 1, jaxlib 2", "", "x", 3,
                None, [xla], {**xla, "kernels": None}, {"kernels": None, "backend": "gpu"},
                {**xla, "jaxlib": 0.1}, {"kernels": "xla", "backend": "gpu", "jaxlib": "1"}):
    assert read(value) is None, value
  # A future version's kinds of kernels read and said (quoted), compared by their fields.
  other = read({**xla, "kernels": "onednn"})
  assert perf.describe_kernel_record(other) == "convolution kernels 'onednn', jaxlib 0.10.2"
  assert perf.same_kernels(other, xla) is False and perf.pin_kernels_advice(other, xla) == ""
  assert perf.describe_kernel_record(None) == "unknown kernels"
  for words in ("XLA's own convolution kernels, jaxlib 0.10.2", "gpu, jaxlib 0.10.2"):
    assert perf.describe_kernel_record(read(words)) == words  # The words, as before.


def test_the_convolution_kernels_are_those_xla_read_as_it_started(monkeypatch):
  """Was: `convolution_kernels` read XLA_FLAGS as it is now, not as XLA read it when its
  backend started, so in a notebook the advised flag set after JAX started silenced the
  warnings and recorded "XLA's own" while YNNPACK's still ran (review). Now the answer is
  taken the first time it is asked after the start and kept for the process; before the
  start (or where JAX cannot say) it is not kept."""
  # pylint: disable=protected-access
  monkeypatch.setattr(perf, "_KERNELS_AT_START", [])
  monkeypatch.setattr(perf.jax, "default_backend", lambda: "cpu")
  monkeypatch.setattr(perf, "_option_known", lambda *a: True)
  monkeypatch.setattr(perf, "_jaxlib_release", lambda: "9.9")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.setattr(perf, "_backend_started", lambda: False)  # Not kept before the start.
  assert perf.convolution_kernels() == "ynnpack"
  monkeypatch.setenv("XLA_FLAGS", perf.XLA_CONVOLUTIONS_FLAG)
  assert perf.convolution_kernels() == "xla"
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setattr(perf, "_backend_started", lambda: True)  # Started: YNNPACK's run.
  assert perf.convolution_kernels() == "ynnpack"
  monkeypatch.setenv("XLA_FLAGS", perf.XLA_CONVOLUTIONS_FLAG)  # Set after the start.
  assert perf.convolution_kernels() == "ynnpack"
  assert perf.kernel_layout() == "YNNPACK's convolution kernels, jaxlib 9.9"


def test_no_recommended_flags_beside_an_accelerator_plugin(monkeypatch):
  monkeypatch.setattr(perf, "_backend_started", lambda: False)
  monkeypatch.setattr(perf, "_accelerator_plugin_installed", lambda: True)
  monkeypatch.setattr(perf, "accepted_xla_flags", lambda *a, **k: pytest.fail("probed"))
  monkeypatch.setenv("XLA_FLAGS", "--xla_a=1")
  assert perf.set_recommended_xla_flags() == "--xla_a=1"


def test_flags_asked_for_after_the_backend_started_are_not_added_and_it_says_so(monkeypatch,
                                                                               caplog):
  """XLA reads XLA_FLAGS when its backend starts (this process's started before the tests):
  flags added later changed only `xla_convolutions`' answer, so the "auto" forms followed
  kernels XLA did not run (review finding). Nothing is added, and one warning says why."""
  monkeypatch.setattr(perf, "accepted_xla_flags", lambda *a, **k: pytest.fail("probed"))
  monkeypatch.setenv("XLA_FLAGS", "--xla_a=1 ")
  with caplog.at_level("WARNING"):
    assert perf.set_recommended_xla_flags((perf.XLA_CONVOLUTIONS_FLAG,)) == "--xla_a=1"
  assert os.environ["XLA_FLAGS"] == "--xla_a=1 " and not perf.xla_convolutions()
  assert "after JAX started its backend" in caplog.records[-1].getMessage()


def test_answers_nested_past_pythons_depth_are_damaged_not_a_traceback(tmp_path):
  """Was: RecursionError from every entry point's first call (review finding). Python 3.13's
  decoder reads the nested object; it holds no section of the answers either way."""
  path = tmp_path / "answers.json"
  for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 5_000 + "1" + "}" * 5_000):
    path.write_text(text)
    cache = perf._read_cache(str(path))  # pylint: disable=protected-access
    assert isinstance(cache, dict) and "a" in cache or cache == {}
    assert perf._cache_section(cache, "convolution kernels") == {}  # pylint: disable=W0212


def test_jax_disable_most_optimizations_keeps_its_levels(monkeypatch):
  """JAX_DISABLE_MOST_OPTIMIZATIONS sets the optimisation level and LLVM's passes itself; the
  library's options, passed per program, overrode them (level 1 over 0; review finding)."""
  from jax._src import compiler  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("XLA_FLAGS", "")  # The suite's own levels out of the way.
  assert perf.compiler_options(backend="cpu")["xla_backend_optimization_level"] == 1
  monkeypatch.setattr(compiler._DISABLE_MOST_OPTIMIZATIONS, "value", True)  # pylint: disable=W0212
  options = perf.compiler_options(models.CHEAP_COMPILE, backend="cpu") or {}
  assert not {"xla_backend_optimization_level", "xla_llvm_disable_expensive_passes"} & set(
      options), options


def test_accepted_xla_flags_asks_xla_once_per_jaxlib(tmp_path, monkeypatch):
  """A flag XLA does not know would abort the process; the child process finds out, and the
  answers are kept (a corrupt answers file is not trusted)."""
  known, unknown = "--xla_cpu_use_fusion_emitters=false", "--xla_a2i_no_such_flag=1"
  cache = str(tmp_path / "flags.json")
  # Not the working folder's jax.py (fault hunt: the child imported it, and every flag was
  # refused at every start).
  (tmp_path / "jax.py").write_text("raise ImportError('not JAX')\n")
  monkeypatch.chdir(tmp_path)
  assert perf.accepted_xla_flags((unknown, known), cache_file=cache) == (known,)
  with open(cache, encoding="utf-8") as f:
    answers = json.load(f)
  assert list(answers.values()) == [{known: True, unknown: False}]

  def no_child(*args, **kwargs):
    raise AssertionError("asked XLA again")
  monkeypatch.setattr(subprocess, "run", no_child)
  assert perf.accepted_xla_flags((known, unknown), cache_file=cache) == (known,)

  # The kernel probe's child runs with XLA's and oneDNN's defaults: its answer is the
  # machine's, kept per CPU model (ONEDNN_MAX_CPU_ISA was inherited; review finding).
  envs = []
  monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: envs.append(kw["env"]) or
                      subprocess.CompletedProcess(cmd, 0, b"", b""))
  assert perf._measure_in_child(5.0) is None  # pylint: disable=protected-access
  assert [("XLA_FLAGS" in e, "ONEDNN_MAX_CPU_ISA" in e) for e in envs] == [(False, False)]
  # Its seconds are announced on a console set to warnings only too (infer.py's; was a
  # silent pause of 6-7 s on a new machine): a plain line on stderr.
  announced = []
  monkeypatch.setattr(perf, "print", lambda *a, **kw: announced.append((a, kw["file"])),
                      raising=False)
  with monkeypatch.context() as patch:
    patch.setattr(logging, "get_verbosity", lambda: logging.WARNING)
    perf._measure_in_child(5.0)  # pylint: disable=protected-access
  assert announced == [(("Timing this CPU's convolution kernels, YNNPACK's against XLA's "
                         "(once per CPU model, about 7 s).",), sys.stderr)]

  calls = []
  monkeypatch.setattr(subprocess, "run",
                      lambda cmd, **kw: calls.append(kw["env"]["XLA_FLAGS"]) or
                      subprocess.CompletedProcess(cmd, 0, b"", b""))
  with open(cache, "w", encoding="utf-8") as f:
    f.write('{"jaxlib')  # Cut short.
  assert perf.accepted_xla_flags((known, unknown), cache_file=cache) == (known, unknown)
  assert calls == [known, unknown]

  # A child that fails for another reason (killed, out of memory) is no answer: not kept.
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
      cmd, -9, b"", b"Killed"))
  other = "--xla_a2i_other_flag=1"
  assert perf.accepted_xla_flags((other,), cache_file=cache) == ()
  with open(cache, encoding="utf-8") as f:
    assert other not in next(iter(json.load(f).values()))


def test_resume_accepts_a_changed_compute_dtype_weight_grad_or_tail_only(tmp_path):
  cfg = tiny_config("cvae")
  cfg.model.dtype = "float32"
  del cfg.model["upsample_mode"]  # As saved before the key existed.
  checkpoints.save_config(str(tmp_path), cfg)
  cfg = tiny_config("cvae")
  cfg.model.dtype = "auto"
  cfg.model.upsample_mode = "direct"
  train_lib._check_resume_compatible(str(tmp_path), cfg)  # pylint: disable=protected-access
  cfg.model.conv_weight_grad = "taps"  # Nor does the weight-gradient method ...
  train_lib._check_resume_compatible(str(tmp_path), cfg)  # pylint: disable=protected-access
  del cfg.model["conv_weight_grad"]  # ... nor its absence (a run saved before the key existed).
  train_lib._check_resume_compatible(str(tmp_path), cfg)  # pylint: disable=protected-access
  cfg.model.decoder_tail = "phase"  # Nor the decoders' tail form ("auto" resolves by machine).
  train_lib._check_resume_compatible(str(tmp_path), cfg)  # pylint: disable=protected-access
  cfg.model.z_dim += 1
  with pytest.raises(ConfigError, match="different config.model"):
    train_lib._check_resume_compatible(str(tmp_path), cfg)  # pylint: disable=protected-access


def test_optimised_step_equals_plain_step(data_cache):
  """Plain: float32, one step per jitted call, no donation, nothing in YNNPACK's kernels (the
  convolutions in XLA's own, as `perf.recommended_cpu_flags` has them where those measured
  faster). Optimised: dtype "auto", state donated, the convolutions in YNNPACK's kernels (XLA's
  default elsewhere), and two steps fused into one rolled dispatch (a `lax.scan`, whose body
  must hold every convolution, gradients included, in the canonical layout that XLA:CPU runs
  in its kernels: `perf.conv_input_grad`, `perf.conv_weight_grad_layout`). Same parameters
  after two steps. Both compile with the library's compile options (`perf.jit`); the next test
  compares those with XLA's. (The recommended flag itself lives in XLA_FLAGS, for the whole
  process; the compile option of that name picks one kind of YNNPACK fusion, which is enough
  to swap the convolutions' kernels within one process. jaxlib 0.7.2 has no YNNPACK and
  compiles both alike.)

  Adam's epsilon is raised to 1e3 (the scale of the summed loss's gradients here) so that an
  update is a smooth function of its gradient. At the default 1e-8 Adam's first step is lr x
  the gradient's sign, so gradients that are rounding noise move parameters by lr either way,
  and another kernel's summation order flips them: the biases in front of BatchNorm (whose
  gradient is zero up to rounding), and on an AVX2-only AMD EPYC (Zen 3), where YNNPACK's
  kernels round differently, single kernel elements whose gradient is near zero too; their
  second step then moved thousands of parameters by up to 1e-3 (lr 3e-4) although each
  program's gradients agree to 1e-6 for the same parameters. With the raised epsilon every
  parameter agrees within 2.3e-6 there, against moves of up to 4.6e-4. Both use the default
  model.conv_weight_grad; test_models.test_taps_weight_grad_is_xlas compares the gradients
  instead."""
  plain_cfg = tiny_config("cvae", data_cache)
  plain_cfg.model.dtype = "float32"
  fast_cfg = tiny_config("cvae", data_cache)
  fast_cfg.model.dtype = "auto"
  plain_cfg.adam_eps = fast_cfg.adam_eps = 1e3
  fast_cfg.steps_per_dispatch, fast_cfg.scan_unroll = 2, False
  train = load_dataset(plain_cfg.data)["train"]
  mesh = parallel.make_mesh(jax.devices()[:1])
  data = parallel.put_replicated({"images": train.images,
                                  "attributes": train.attributes.astype(np.float32)}, mesh)
  key = jax.random.key(3)
  results = []
  for cfg, options, donate in ((plain_cfg, None, ()), (fast_cfg, "defaults", (0,))):
    model = models.create_model(cfg.model)
    tx = train_lib.make_optimizer(cfg)
    state = train_lib.create_train_state(model, cfg, tx, jax.random.key(0))
    if not donate:  # The plain run's starting point (the fast one's state is donated).
      initial_params = jax.tree_util.tree_map(np.array, state.params)
    state = parallel.put_replicated(state, mesh)
    fn = perf.jit(train_lib.make_multi_step(train_lib.make_train_step(model, tx, cfg), cfg,
                                            mesh), donate_argnums=donate)
    ynn = "xla_cpu_experimental_ynn_fusion_type"
    kinds = "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION" if options else ""  # "": none.
    known = perf._option_known(ynn, kinds)  # pylint: disable=protected-access
    assert known or tuple(map(int, jax.__version__.split(".")[:2])) < (0, 10)
    compiled = fn.lower(state, data, key).compile(compiler_options={ynn: kinds} if known else None)
    # The strided encoder layer's gradients included, whose 2x2 output gradient at 32x32
    # XLA would take out of the canonical layout if it were dilated by the convolution.
    if cfg is fast_cfg:
      text = compiled.as_text()
      labels = re.findall(r"dim_labels=([^,\s}]+)", text)
      assert "while" in text and len(labels) > 20, len(labels)
      assert set(labels) == {"b01f_01io->b01f"}, sorted(set(labels))
    metrics = []
    for _ in range(2 // cfg.steps_per_dispatch):
      state, m = compiled(state, data, key)
      metrics.append(jax.device_get(m["loss"]))
    results.append((jax.device_get(state), np.concatenate(metrics)))
  (plain, plain_loss), (fast, fast_loss) = results
  assert int(plain.step) == int(fast.step) == 2
  np.testing.assert_allclose(plain_loss, fast_loss, rtol=1e-5)
  moved = max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(
      jax.tree_util.tree_leaves(initial_params), jax.tree_util.tree_leaves(plain.params)))
  assert moved > plain_cfg.learning_rate  # Two real steps, far beyond the tolerance below.
  for a, b in zip(jax.tree_util.tree_leaves(plain.params), jax.tree_util.tree_leaves(fast.params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(plain.batch_stats),
                  jax.tree_util.tree_leaves(fast.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_perf_jit_also_runs_inside_a_callers_transformations():
  """JAX takes compile options only on the outermost jit; a library function used inside a
  notebook's own jit, grad or make_jaxpr must still work (it runs as a plain nested jit)."""
  f = perf.jit(lambda x: jnp.sum(jnp.sin(x) ** 2))
  x = jnp.linspace(0.0, 1.0, 5)
  want = float(jnp.sum(jnp.sin(x) ** 2))
  np.testing.assert_allclose(f(x), want, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(lambda v: 2 * f(v))(x), 2 * want, rtol=1e-6)
  np.testing.assert_allclose(jax.grad(f)(x), np.sin(2 * np.asarray(x)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.jit(lambda: f(x))(), want, rtol=1e-6)  # A closure.
  assert "sin" in str(jax.make_jaxpr(f)(x))
  np.testing.assert_allclose(f.lower(x).compile()(x), want, rtol=1e-6)  # The top-level jit's.


def test_library_compile_options_are_known_and_keep_the_numbers(data_cache):
  """`perf.CPU_COMPILER_OPTIONS` (XLA:CPU's classic emitters, LLVM level 1) change how XLA
  compiles, not what: the same losses and gradient norms over two train steps as XLA's own
  defaults (the MLIR fusion emitters, level 3).

  The parameters themselves are not compared: the biases of convolutions that feed a
  BatchNorm have a zero gradient, and Adam turns its rounding noise, which any change in
  fusion reorders, into learning-rate-sized steps (see the test above). Step two's loss
  depends on every other parameter after step one's update."""
  # This jaxlib knows them all (both CI pin sets); those the suite's XLA_FLAGS name are left
  # as the suite set them.
  named = {f.split("=", 1)[0].lstrip("-") for f in os.environ["XLA_FLAGS"].split()}
  assert perf.compiler_options() == (
      {k: v for k, v in perf.CPU_COMPILER_OPTIONS.items() if k not in named} or None)
  known = perf._option_known  # pylint: disable=protected-access
  assert all(known(k, v) for k, v in perf.CPU_COMPILER_OPTIONS.items())
  assert perf.compiler_options(backend="gpu") is None
  # A program's own extra options yield to XLA_FLAGS too: the suite names both of
  # CHEAP_COMPILE's there.
  assert set(models.CHEAP_COMPILE) <= named
  assert perf.compiler_options(models.CHEAP_COMPILE) == perf.compiler_options()
  xla_defaults = {"xla_cpu_use_fusion_emitters": True, "xla_backend_optimization_level": 3}
  cfg = tiny_config("cvae", data_cache)
  train = load_dataset(cfg.data)["train"]
  mesh = parallel.make_mesh(jax.devices()[:1])
  data = parallel.put_replicated({"images": train.images,
                                  "attributes": train.attributes.astype(np.float32)}, mesh)
  model = models.create_model(cfg.model)
  tx = train_lib.make_optimizer(cfg)
  state0 = parallel.put_replicated(
      train_lib.create_train_state(model, cfg, tx, jax.random.key(0)), mesh)
  lowered = jax.jit(train_lib.make_multi_step(train_lib.make_train_step(model, tx, cfg), cfg,
                                              mesh)).lower(state0, data, jax.random.key(3))
  runs = []
  for compiled in (lowered.compile(compiler_options=xla_defaults),
                   lowered.compile(compiler_options=perf.CPU_COMPILER_OPTIONS)):
    state, metrics = state0, []
    for _ in range(2):
      state, m = compiled(state, data, jax.random.key(3))
      metrics.append(jax.device_get((m["loss"], m["grad_norm"])))
    runs.append(np.asarray(metrics, np.float64))
  np.testing.assert_allclose(runs[1][:, 0], runs[0][:, 0], rtol=1e-5)  # The losses.
  # The gradient norms, a sum over every parameter of BatchNorm-fed gradients whose reductions
  # each emitter orders its own way: 1.7e-5 and 7.3e-5 apart (steps one and two) under jax
  # 0.7.2 on a 2-core AMD EPYC, both forms of max pooling alike; under 1e-5 elsewhere.
  np.testing.assert_allclose(runs[1][:, 1], runs[0][:, 1], rtol=2e-4)


# ----------------------------------------------------------------------------------------------
# model.conv_weight_grad: the per-tap weight gradient (conv_grad.taps_conv_general_dilated).

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv_loss(conv_fn, pads, strides):
  def loss(x, w):
    y = conv_fn(x, w, strides, pads, dimension_numbers=_NHWC)
    return jnp.sum(jnp.sin(y) * (1.0 + jnp.arange(y.shape[-1]) / y.shape[-1]))
  return loss


@functools.lru_cache(maxsize=None)
def _xla_value_and_grads(pads, strides):
  """`_conv_value_and_grads` of jax.lax.conv_general_dilated, jitted once per worker, so that
  the reference of the tests below compiles once per shape, not once per test. (Only XLA's
  own: the library's forms read module-level settings, which the tests change, when traced.)"""
  return jax.jit(jax.value_and_grad(_conv_loss(jax.lax.conv_general_dilated, pads, strides),
                                    (0, 1)))


def _conv_value_and_grads(conv_fn, x, w, pads, strides=(1, 1)):
  """The value of a nonlinear loss of one convolution and its gradients w.r.t. input and kernel;
  each output channel weighted differently, so that outputs in the wrong order do not pass."""
  if conv_fn is jax.lax.conv_general_dilated:
    return _xla_value_and_grads(pads, strides)(x, w)
  return jax.jit(jax.value_and_grad(_conv_loss(conv_fn, pads, strides), (0, 1)))(x, w)


def _assert_same_value_and_grads(conv_fn, ref_fn, x, w, pads, strides=(1, 1)):
  """`conv_fn` gives `ref_fn`'s value and gradients (input and kernel), float32, to rounding."""
  value, grads = _conv_value_and_grads(conv_fn, x, w, pads, strides)
  ref_value, ref_grads = _conv_value_and_grads(ref_fn, x, w, pads, strides)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  for g, ref in zip(grads, ref_grads):
    assert g.shape == ref.shape and g.dtype == ref.dtype
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# (N, H, W, C_in, C_out, k, pad): 3x3 and 5x5, "same" and valid, odd and non-square sizes,
# three input channels (the images), three output channels (the image heads).
CONV_SHAPES = [(2, 9, 7, 16, 12, 3, 1), (2, 8, 8, 3, 16, 5, 2), (3, 7, 9, 16, 3, 5, 2),
               (2, 6, 5, 16, 12, 3, 0), (2, 4, 4, 16, 24, 4, 0), (2, 11, 9, 12, 10, 5, 2)]


# The per-layer choice ("auto") on every shape; each forced form on the shapes it applies to
# (the shifted-dy form needs an output the input's size: "same" padding).
CONV_CASES = ([(shape, "auto") for shape in CONV_SHAPES]
              + [(CONV_SHAPES[i], method) for i in (0, 1, 3) for method in ("x", "x_stacked")]
              + [(shape, "dy_stacked") for shape in CONV_SHAPES if shape[6] == shape[5] // 2])


@pytest.mark.parametrize("shape, method", CONV_CASES)
def test_taps_conv_equals_xla_conv(shape, method, monkeypatch):
  """Every formulation of the per-tap weight gradient (and the per-layer choice among them,
  "auto") gives XLA's value and gradients, float32, to rounding."""
  n, h, w, cin, cout, k, p = shape
  pads = ((p, p), (p, p))
  if method != "auto":
    monkeypatch.setattr(conv_grad, "_weight_grad_method", lambda *_: method)
  x = _normal(0, (n, h, w, cin))
  kernel = _normal(1, (k, k, cin, cout)) / (k * k * cin) ** 0.5
  _assert_same_value_and_grads(conv_grad.taps_conv_general_dilated,
                               jax.lax.conv_general_dilated, x, kernel, pads)


def test_taps_conv_bfloat16():
  """bf16 compute: products accumulated in float32, the gradient returned in the kernel's dtype."""
  pads = ((1, 1), (1, 1))
  x = _normal(0, (4, 12, 12, 32)).astype(jnp.bfloat16)
  kernel = (_normal(1, (3, 3, 32, 16)) / 17).astype(jnp.bfloat16)
  _, grads = _conv_value_and_grads(conv_grad.taps_conv_general_dilated, x, kernel, pads)
  _, ref_grads = _conv_value_and_grads(jax.lax.conv_general_dilated, x.astype(jnp.float32),
                                       kernel.astype(jnp.float32), pads)
  for g, ref in zip(grads, ref_grads):
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(g.astype(np.float32), ref, rtol=0.05,
                               atol=0.02 * np.abs(ref).max())


@pytest.mark.parametrize("kwargs", [
    dict(window_strides=(1, 1), padding="SAME"),
    dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), rhs_dilation=(2, 2)),
])
def test_taps_conv_falls_back_to_xla(kwargs):
  """Dilated or string-padded convolutions are plain lax.conv_general_dilated. (Strided ones
  take the canonical gradients: the next tests.)"""
  x = _normal(0, (2, 8, 8, 4))
  kernel = _normal(1, (3, 3, 4, 5))

  def loss(conv_fn):
    return lambda w: jnp.sum(conv_fn(x, w, dimension_numbers=_NHWC, **kwargs) ** 2)
  jaxpr = str(jax.make_jaxpr(jax.grad(loss(conv_grad.taps_conv_general_dilated)))(kernel))
  assert "custom_vjp" not in jaxpr
  assert jaxpr == str(jax.make_jaxpr(jax.grad(loss(jax.lax.conv_general_dilated)))(kernel))


# Both gradients canonical (CPU's "auto") on every shape; one of them JAX's on two.
CANONICAL_CASES = ([(shape, "canonical", "canonical") for shape in CONV_SHAPES]
                   + [(CONV_SHAPES[i], "canonical", "xla") for i in (0, 4)]
                   + [(CONV_SHAPES[i], "xla", "canonical") for i in (0, 4)])


@pytest.mark.parametrize("shape, input_grad, weight_grad", CANONICAL_CASES)
def test_canonical_conv_equals_xla_conv(shape, input_grad, weight_grad, monkeypatch):
  """`canonical_conv_general_dilated` (the input gradient as a canonical convolution of the
  explicitly transposed kernel, the kernel gradient as one of the transposed input and output
  gradient) gives XLA's value and gradients, float32, to rounding."""
  monkeypatch.setattr(conv_grad, "CONV_INPUT_GRAD", input_grad)
  monkeypatch.setattr(conv_grad, "CONV_WEIGHT_GRAD_LAYOUT", weight_grad)
  n, h, w, cin, cout, k, p = shape
  pads = ((p, p), (p, p))
  x = _normal(0, (n, h, w, cin))
  kernel = _normal(1, (k, k, cin, cout)) / (k * k * cin) ** 0.5
  _assert_same_value_and_grads(conv_grad.canonical_conv_general_dilated,
                               jax.lax.conv_general_dilated, x, kernel, pads)


# (H, W, k, strides, pads): the encoders' 3x3 at stride 2 ("same", an input of even size: the
# last padded row unread); odd sizes, uneven pads, a 4x4 kernel, stride 3, no padding, and
# unread rows beyond the padding (cut from the input for the kernel gradient).
STRIDED_CASES = [(8, 8, 3, (2, 2), ((1, 1), (1, 1))), (9, 7, 3, (2, 2), ((1, 0), (0, 1))),
                 (8, 8, 4, (2, 2), ((1, 1), (1, 1))), (10, 9, 5, (3, 2), ((2, 2), (1, 2))),
                 (9, 8, 3, (2, 3), ((0, 0), (0, 0)))]


@pytest.mark.parametrize("size_h, size_w, k, strides, pads", STRIDED_CASES)
def test_strided_convs_take_the_canonical_gradients(size_h, size_w, k, strides, pads):
  """A strided convolution, through `canonical_conv_general_dilated` or the per-tap rule
  (which leaves it to the canonical gradients), gives XLA's value and gradients, and carries
  the custom rule."""
  x = _normal(0, (2, size_h, size_w, 5))
  kernel = _normal(1, (k, k, 5, 6)) / (k * k * 5) ** 0.5
  for fn in (conv_grad.canonical_conv_general_dilated, conv_grad.taps_conv_general_dilated):
    _assert_same_value_and_grads(fn, jax.lax.conv_general_dilated, x, kernel, pads, strides)
    jaxpr = jax.make_jaxpr(lambda x, w, fn=fn: fn(x, w, strides, pads,
                                                  dimension_numbers=_NHWC))(x, kernel)
    assert "custom_vjp" in str(jaxpr)


def test_canonical_input_grad_uneven_pads_bfloat16_and_fallbacks():
  """Uneven pads take the canonical form too; bf16 gradients come back in bf16; pads beyond
  the kernel's size less one, dilation and string padding are plain XLA."""
  x = _normal(0, (2, 7, 6, 5))
  kernel = _normal(1, (3, 3, 5, 4)) / 45 ** 0.5
  fn = conv_grad.canonical_conv_general_dilated
  _assert_same_value_and_grads(fn, jax.lax.conv_general_dilated, x, kernel, ((0, 2), (2, 1)))
  _, grads = _conv_value_and_grads(fn, x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16),
                                   ((1, 1), (1, 1)))
  _, ref_grads = _conv_value_and_grads(jax.lax.conv_general_dilated, x, kernel,
                                       ((1, 1), (1, 1)))
  for g, ref in zip(grads, ref_grads):
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(g.astype(np.float32), ref, rtol=0.05,
                               atol=0.02 * np.abs(ref).max())
  for kwargs in (dict(window_strides=(1, 1), padding=((3, 3), (1, 1))),
                 dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), rhs_dilation=(2, 2)),
                 dict(window_strides=(1, 1), padding="SAME")):
    loss = lambda conv, kw=kwargs: lambda w: jnp.sum(
        conv(x, w, dimension_numbers=_NHWC, **kw) ** 2)
    jaxpr = str(jax.make_jaxpr(jax.grad(loss(fn)))(kernel))
    assert "custom_vjp" not in jaxpr, kwargs
    assert jaxpr == str(jax.make_jaxpr(jax.grad(loss(jax.lax.conv_general_dilated)))(kernel))


@pytest.mark.parametrize("wrt", ["input", "input_and_kernels"])
def test_a_loop_of_gradients_keeps_every_convolution_canonical(wrt):
  """Why the forms exist: XLA:CPU runs a convolution in its library kernels only in the
  canonical NHWC / HWIO layout (`dim_labels=b01f_01io->b01f`) and rewrites the others into it
  only outside loops; JAX's input and kernel gradients inside a `lax.scan` body stayed in
  other layouts and ran as naive loops (BENCHMARKS.md, "Convolutions in a loop on CPU",
  "Train steps in a rolled loop on CPU"). Gradient steps on the input of two convolutions
  (posterior inference's shape), or on the input and both kernels (a rolled scan of train
  steps), one "same" and one without padding: with the canonical forms every convolution of
  the optimised program is canonical, and the steps end where JAX's end."""
  k1 = _normal(1, (3, 3, 4, 6)) / 6
  k2 = _normal(2, (3, 3, 6, 4)) / 7
  z0 = _normal(0, (2, 8, 8, 4))
  argnums = (0,) if wrt == "input" else (0, 1, 2)

  def steps(conv):
    def energy(z, a, b):
      h = jax.nn.relu(conv(z, a, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC))
      return jnp.sum(jnp.square(conv(h, b, (1, 1), ((0, 0), (0, 0)), dimension_numbers=_NHWC)))

    def step(params, _):
      grads = jax.grad(energy, argnums)(*params)
      return tuple(p - 0.002 * g for p, g in zip(params, grads)) + params[len(argnums):], None
    return jax.jit(lambda *params: jax.lax.scan(step, params, None, length=3)[0])

  canonical = steps(conv_grad.canonical_conv_general_dilated)
  text = canonical.lower(z0, k1, k2).compile().as_text()
  assert "while" in text
  labels = re.findall(r"dim_labels=([^,\s}]+)", text)
  # Two forward convolutions and two input gradients, and two kernel gradients.
  assert len(labels) >= (4 if wrt == "input" else 6), labels
  assert set(labels) == {"b01f_01io->b01f"}, labels
  for a, b in zip(canonical(z0, k1, k2), steps(jax.lax.conv_general_dilated)(z0, k1, k2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_gradient_layout_settings():
  assert perf.conv_input_grad("auto", "cpu") == "canonical"
  assert perf.conv_input_grad("auto", "gpu") == "xla"
  with pytest.raises(ConfigError, match="conv_input_grad='flip'.*auto, canonical, xla"):
    perf.conv_input_grad("flip")
  assert perf.conv_weight_grad_layout("auto", "cpu") == "canonical"
  assert perf.conv_weight_grad_layout("auto", "tpu") == "xla"
  assert perf.conv_weight_grad_layout("xla", "cpu") == "xla"
  with pytest.raises(ConfigError, match="conv_weight_grad_layout='nchw'.*auto, canonical, xla"):
    perf.conv_weight_grad_layout("nchw")


def test_conv_weight_grad_setting(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")  # The convolutions in YNNPACK's kernels (jaxlib 0.10).
  assert perf.conv_weight_grad("auto", "cpu") == "taps"
  monkeypatch.setenv("XLA_FLAGS", perf.XLA_CONVOLUTIONS_FLAG)  # In XLA's own.
  assert perf.conv_weight_grad("auto", "cpu") == "xla"
  assert perf.conv_weight_grad("auto", "gpu") == "xla"
  assert perf.conv_weight_grad("xla", "cpu") == "xla"
  assert perf.conv_weight_grad("taps", "gpu") == "taps"
  monkeypatch.setattr(conv_grad, "CONV_OUTPUT_SPLIT", "whole")
  assert conv_grad.conv_general_dilated_fn("taps") is conv_grad.taps_conv_general_dilated
  # XLA's weight gradient: with the canonical gradients on CPU ("auto"), or JAX's own.
  assert conv_grad.conv_general_dilated_fn("xla") is conv_grad.canonical_conv_general_dilated
  monkeypatch.setattr(conv_grad, "CONV_INPUT_GRAD", "xla")  # Either gradient canonical: ...
  assert conv_grad.conv_general_dilated_fn("xla") is conv_grad.canonical_conv_general_dilated
  monkeypatch.setattr(conv_grad, "CONV_WEIGHT_GRAD_LAYOUT", "xla")  # ... neither: plain.
  assert conv_grad.conv_general_dilated_fn("xla") is jax.lax.conv_general_dilated
  with pytest.raises(ConfigError, match="model.conv_weight_grad='fast'.*auto, xla, taps"):
    perf.conv_weight_grad("fast")
  cfg = tiny_config("cvae")
  cfg.model.conv_weight_grad = "fast"
  with pytest.raises(ConfigError, match="conv_weight_grad='fast'"):
    models.create_model(cfg.model)


def _count_convs(conv_fn, x, kernel):
  jaxpr = jax.make_jaxpr(lambda x, w: conv_fn(x, w, (1, 1), ((1, 1), (1, 1)),
                                              dimension_numbers=_NHWC))(x, kernel)
  return str(jaxpr).count("conv_general_dilated[")


@pytest.mark.parametrize("inner", ["xla", "taps"])
def test_split_outputs_equals_one_convolution(inner, monkeypatch):
  """A convolution in blocks of outputs (`conv_grad.split_outputs`) has one convolution's value
  and gradients, with blocks of unequal size (10 outputs in blocks of at most 4: 3, 3, 4); at
  or under the limit, without "same" padding, or in another layout, it is the convolution
  itself."""
  monkeypatch.setattr(conv_grad, "SPLIT_OUTPUTS", 4)
  conv_fn = {"xla": jax.lax.conv_general_dilated,
             "taps": conv_grad.taps_conv_general_dilated}[inner]
  split = conv_grad.split_outputs(conv_fn)
  x = _normal(0, (2, 7, 6, 5))
  kernel = _normal(1, (3, 3, 5, 10)) / 45 ** 0.5
  pads = ((1, 1), (1, 1))
  _assert_same_value_and_grads(split, conv_fn, x, kernel, pads)
  # Every argument by position, as jax.lax.conv_general_dilated takes them.
  positional = split(x, kernel, (1, 1), pads, None, None, _NHWC, 1, 1, None, None)
  np.testing.assert_allclose(positional, conv_fn(x, kernel, (1, 1), pads,
                                                 dimension_numbers=_NHWC), rtol=1e-5, atol=1e-5)
  if inner == "xla":  # (The taps rule's own program holds convolutions of its own.)
    assert _count_convs(split, x, kernel) == 3
    assert _count_convs(split, x, kernel[..., :4]) == 1
    valid = split(x, kernel, (1, 1), ((0, 0), (0, 0)), dimension_numbers=_NHWC)
    assert str(jax.make_jaxpr(lambda x, w: split(x, w, (1, 1), ((0, 0), (0, 0)),
                                                 dimension_numbers=_NHWC))(x, kernel)).count(
        "conv_general_dilated[") == 1  # Not "same": not split.
    np.testing.assert_allclose(valid, conv_fn(x, kernel, (1, 1), ((0, 0), (0, 0)),
                                              dimension_numbers=_NHWC), rtol=1e-5, atol=1e-5)
    oihw = jnp.transpose(kernel, (3, 2, 0, 1))  # Another layout: not split.
    out = split(x, oihw, (1, 1), pads, dimension_numbers=("NHWC", "OIHW", "NHWC"))
    np.testing.assert_allclose(out, conv_fn(x, kernel, (1, 1), pads, dimension_numbers=_NHWC),
                               rtol=1e-5, atol=1e-5)


def test_conv_output_split_setting(monkeypatch):
  """"auto" splits on CPU only; the library's convolutions take the form set."""
  assert perf.conv_output_split("auto", "cpu") == "split"
  assert perf.conv_output_split("auto", "gpu") == "whole"
  assert perf.conv_output_split("whole", "cpu") == "whole"
  with pytest.raises(ConfigError, match="conv_output_split='blocks'.*auto, whole, split"):
    perf.conv_output_split("blocks")
  monkeypatch.setattr(conv_grad, "SPLIT_OUTPUTS", 4)
  monkeypatch.setattr(conv_grad, "CONV_INPUT_GRAD", "xla")  # "xla" both: plain convolutions.
  monkeypatch.setattr(conv_grad, "CONV_WEIGHT_GRAD_LAYOUT", "xla")
  x = jnp.ones((1, 4, 4, 2))
  kernel = jnp.ones((3, 3, 2, 8))
  for form, expected in (("split", 2), ("whole", 1)):
    monkeypatch.setattr(conv_grad, "CONV_OUTPUT_SPLIT", form)
    for name in ("xla", "taps"):
      fn = conv_grad.conv_general_dilated_fn(name)
      jaxpr = str(jax.make_jaxpr(lambda x, w, fn=fn: fn(
          x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC))(x, kernel))
      assert jaxpr.count("custom_vjp_call") == (expected if name == "taps" else 0)
      if name == "xla":
        assert jaxpr.count("conv_general_dilated[") == expected


def test_offset_polyphase_setting(monkeypatch):
  """The offset polyphase form is "auto"-on on CPU only; off (by backend or by the benchmark
  knob), a 3x3 upsampling layer at 8x8 is the direct form, and a layer still builds."""
  assert perf.offset_polyphase("auto", "cpu") is True
  assert perf.offset_polyphase("auto", "gpu") is False
  assert perf.offset_polyphase("on", "tpu") is True
  assert perf.offset_polyphase("off", "cpu") is False
  with pytest.raises(ConfigError, match="offset_polyphase='yes'.*auto, on, off"):
    perf.offset_polyphase("yes")
  layers = models.layers
  assert layers.polyphase_form(3, "polyphase", size=(8, 8)) == "offset"  # The CPU default.
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert layers.polyphase_form(3, "polyphase", size=(8, 8)) is None
  assert layers.polyphase_form(5, "polyphase", size=(8, 8)) == "centred"
  monkeypatch.setattr(layers, "POLYPHASE_OFFSET", "on")  # The knob overrides the backend.
  assert layers.polyphase_form(3, "polyphase", size=(8, 8)) == "offset"
  monkeypatch.setattr(layers, "POLYPHASE_OFFSET", "off")
  assert layers.polyphase_form(3, "polyphase", size=(8, 8)) is None
  # UpsampleConv on its own computes any odd kernel: 3x3 in the centred form where the offset
  # one is off, in the offset form when told, both the upsample-then-convolve function.
  x = _normal(1, (1, 8, 8, 2))
  variables = models.UpsampleConv(3, (3, 3)).init(jax.random.key(0), x)
  kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
  up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  ref = jax.lax.conv_general_dilated(up, kernel, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=_NHWC) + bias
  for form in (None, "offset"):
    out = models.UpsampleConv(3, (3, 3), form=form).apply(variables, x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="phase layout is the centred form's"):
    models.UpsampleConv(3, (3, 3), form="offset", phase_layout=True).init(jax.random.key(0), x)

  class PhaseLayer(nn.Module):  # A 3x3 layer asked for the phase layout, which it has not.
    @nn.compact
    def __call__(self, x):
      return models.conv(x, 3, 3, dtype=jnp.float32, upsample_first=True, phase_layout=True)
  with pytest.raises(ValueError, match="phase_layout needs the centred polyphase form"):
    PhaseLayer().init(jax.random.key(0), x)
