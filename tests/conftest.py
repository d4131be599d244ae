"""Test set-up: 4 fake CPU devices (so every test exercises the multi-device code path) and
tiny configs. The flag must be set before JAX initialises its backend."""

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile

# Before anything imports jax, which reads JAX_PLATFORMS when imported (XLA_FLAGS only when
# its backend starts). The answers of `perf.accepted_xla_flags` go to a folder of the tests'
# own, for the whole session and the train.py / infer.py processes it starts, not the user's.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XDG_CACHE_HOME"] = os.path.join(tempfile.gettempdir(), f"a2i_jax_tests_{os.getuid()}")

from a2i_jax import perf  # noqa: E402  (imports jax, which does not start its backend)

# XLA:CPU's classic emitters instead of the MLIR fusion emitters, where this XLA has the switch:
# the library compiles its own programs so (perf.jit); the flag extends it to the tests' own
# jitted functions, which compile a tiny train step 3-4 times faster with it. And the flags
# train.py and infer.py add on this CPU (`perf.recommended_cpu_flags`), so that the tests run the
# convolutions as the entry points do, and the entry points they start find them set. An
# unknown flag aborts XLA, so which of them this jaxlib knows is probed once per jaxlib
# (`perf.accepted_xla_flags`, in subprocesses) and kept in the tests' cache folder above,
# where the xdist workers find the answers the first process wrote.
_CLASSIC_EMITTERS = "--xla_cpu_use_fusion_emitters=false"

# Tiny models run in milliseconds but XLA:CPU spends seconds optimising each program with
# LLVM; the tests trade run time for compile time.
os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4",
    "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
    *perf.accepted_xla_flags((_CLASSIC_EMITTERS, *perf.recommended_cpu_flags()))]).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from a2i_jax import config_lib  # noqa: E402

NUM_DEVICES = 4
TRAIN_PY_STEPS = 6  # train_py_reference's run: checkpoints at 2, 4, 6 (2 kept), evaluation at 6.


@contextlib.contextmanager
def library_optimisation_level():
  """Inside: the library's programs take its own CPU optimisation level, not the suite's level
  0 above. For fixtures that run a hundred steps or more, where level 0 costs more run time
  than it saves compile time: the posterior fixture's setup took 15 s instead of 22-25 s, the
  attribute predictor's 7 s instead of 13 (BENCHMARKS.md, "... two fixtures at the library's
  level").

  `perf.compiler_options` leaves out the options XLA_FLAGS names, as a user's; XLA read
  XLA_FLAGS when its backend started, so without the level there the library's own options
  apply per program, and every other program keeps the suite's. Nothing it runs may start a
  subprocess, which would inherit the shortened XLA_FLAGS.
  """
  flags = [f for f in os.environ["XLA_FLAGS"].split()
           if not f.startswith("--xla_backend_optimization_level=")]
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("XLA_FLAGS", " ".join(flags))
    yield


def tiny_config(model: str = "cvae", tmp_cache: str = "", image_size: int = 32):
  """A few-second config: 32x32, widths x1/8, batch 8, 2 steps, 64 training images."""
  config = config_lib.get_config(f"synthetic:{model}")
  config.model.image_size = image_size
  config.data.image_size = image_size
  config.model.width = 0.125
  # Only the model's own latent sizes: a value set for a key the model ignores is refused
  # (`config_lib.check_set_keys_used`).
  if model == "discvae":
    config.model.zf_dim = 6
    config.model.zb_dim = 4
  else:
    config.model.z_dim = 8
  # XLA's own weight gradients: the per-tap matrix products ("auto" on a CPU whose convolutions
  # run in YNNPACK's kernels) add 2-4 s of compilation to every tiny train step, and the suite
  # compiles dozens. That path is tested where it matters: tests/test_perf.py (every form, per
  # layer), tests/test_models.py (a whole CVAE), and the 4-device and bf16 training tests.
  config.model.conv_weight_grad = "xla"
  # And one decoder tail on every machine ("auto" follows the convolution kernels the machine's
  # timing chose, perf.recommended_cpu_flags); "phase" is tested in tests/test_models.py.
  config.model.decoder_tail = "full"
  config.data.synthetic.num_train = 64
  config.data.synthetic.num_validation = 16
  config.data.synthetic.num_test = 16
  config.data.cache_dir = tmp_cache
  config.batch_size = 8
  config.num_train_steps = 2
  config.log_every_steps = 1
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.num_eval_examples = 16
  config.num_sample_rows = 2
  if model != "discvae":  # The disCVAE's grid has one draw per row.
    config.num_sample_cols = 2
  config.progress_bar = False
  config.compilation_cache_dir = ""
  return config


def normal(seed: int, shape) -> "np.ndarray":
  """Test data, float32, from NumPy's generator: an eager jax.random draw compiles a program
  for each new shape, 0.05-0.15 s each on the 2-core machine."""
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def uniform(seed: int, shape, minval: float = 0.0, maxval: float = 1.0) -> "np.ndarray":
  """Like `normal`, uniform on [minval, maxval)."""
  return np.random.default_rng(seed).uniform(minval, maxval, shape).astype(np.float32)


def shared_dir(tmp_path_factory) -> pathlib.Path:
  """The session's folder that every pytest-xdist worker sees (their base folders' parent)."""
  root = tmp_path_factory.getbasetemp()
  return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def build_once(tmp_path_factory, name: str, build) -> str:
  """`build(folder)` once per session for all xdist workers, under a file lock.

  The first worker to ask builds `name` in a temporary folder and renames it into place;
  the others wait for it, then reuse it. Returns the folder, which callers treat as read-only
  (copy it to change it).
  """
  root = shared_dir(tmp_path_factory)
  done = root / name
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      tmp = root / f"{name}.incomplete"
      shutil.rmtree(tmp, ignore_errors=True)
      tmp.mkdir()
      build(str(tmp))
      os.replace(tmp, done)
  return str(done)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
  """One synthetic-data cache for the session and all its workers (generation happens once;
  the cache files are written atomically)."""
  path = shared_dir(tmp_path_factory) / "a2i_cache"
  path.mkdir(exist_ok=True)
  return str(path)


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory):
  """The persistent compilation cache of the session: every worker and every subprocess
  (train.py, infer.py, the notebook's kernel) reads and writes it."""
  path = shared_dir(tmp_path_factory) / "xla_cache"
  path.mkdir(exist_ok=True)
  return str(path)


@pytest.fixture(scope="session", autouse=True)
def _four_devices_and_compile_cache(xla_cache):
  # Many tests compile the same tiny programs, in this process and in the subprocesses they
  # start; the persistent cache makes repeats cheap. Subprocesses find it through the
  # environment (JAX reads JAX_* variables at import; an entry point's own
  # config.compilation_cache_dir, where set, takes precedence).
  jax.config.update("jax_compilation_cache_dir", xla_cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = xla_cache
  # A subprocess compiles every program afresh: the tiny ones, which compile in under a
  # second, are worth caching for it too.
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  assert jax.device_count() == NUM_DEVICES, (
      f"expected {NUM_DEVICES} fake CPU devices, got {jax.devices()}")


@pytest.fixture(autouse=True)
def _compilation_cache_settings_kept():
  """JAX's compilation-cache settings as the session set them, put back after each test. Code
  run in this process may change them, as a user's program would: the benchmark scripts' mains
  turn the cache off (`timing.compilation_cache_off`), and an entry point given a config whose
  compilation_cache_dir is "" (conftest's tiny_config; infer.py's `run_modes`) sets the folder
  to None. The tests that read the settings then failed in whichever worker ran them after one
  of those (seen under -n 3, 2026-12-07; before, under -n 2, after bench.main)."""
  names = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
           "jax_persistent_cache_min_compile_time_secs")
  settings = {name: getattr(jax.config, name) for name in names}
  yield
  for name, value in settings.items():
    if getattr(jax.config, name) != value:
      jax.config.update(name, value)


@pytest.fixture
def ctrl_c_raises():
  """Inside the test, SIGINT raises KeyboardInterrupt, as in a Python started from a terminal.
  A Python started with SIGINT ignored (a background job of a shell, as CI may start the suite)
  keeps it ignored, and a test that compares the handler it finds afterwards with Python's own
  would fail there."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, previous)


@pytest.fixture
def entry_handlers():
  """Inside the test, SIGINT, SIGTERM and SIGHUP are handled as in train.py and infer.py
  (`interrupts.stop_on_signals`); afterwards the handlers are put back, and an interrupt
  noted but never answered is forgotten, as a process's would be when it ends; so is the
  unraisable-exception link it adds."""
  from a2i_jax import interrupts  # pylint: disable=import-outside-toplevel
  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
  hook = sys.unraisablehook  # `keep_ctrl_c`'s link goes too (review: left for later tests).
  interrupts.stop_on_signals()
  yield interrupts
  sys.unraisablehook = hook
  for signum, handler in previous.items():
    signal.signal(signum, handler)
  interrupts._unanswered.clear()  # pylint: disable=protected-access


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_cache):
  """tiny_run(name) -> (workdir, step): `train_lib.train_and_evaluate(tiny_config(name))`
  run once per session for all workers; `step` is the step of the state it returned.

  Treat the workdir as read-only: copy it (shutil.copytree) to resume or damage it.
  """
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel

  def build(name, folder):
    state = train_lib.train_and_evaluate(tiny_config(name, data_cache),
                                         os.path.join(folder, "w"))
    with open(os.path.join(folder, "returned.json"), "w") as f:
      json.dump({"step": int(state.step)}, f)

  def run(name: str) -> tuple[str, int]:
    folder = build_once(tmp_path_factory, f"tiny_run_{name}",
                        lambda folder: build(name, folder))
    with open(os.path.join(folder, "returned.json")) as f:
      return os.path.join(folder, "w"), json.load(f)["step"]
  return run


@pytest.fixture(scope="session")
def train_py_flags(data_cache, xla_cache):
  """faults_lib.tiny_flags for TRAIN_PY_STEPS steps, with the session's caches."""
  import faults_lib  # pylint: disable=import-outside-toplevel
  return faults_lib.tiny_flags(data_cache, xla_cache, steps=TRAIN_PY_STEPS)


@pytest.fixture(scope="session")
def train_py_reference(tmp_path_factory, train_py_flags):
  """`python train.py` with `train_py_flags`, uninterrupted, once per session for all workers:
  the run every interrupted or multi-process one must end like. Read-only; copy it to change
  it."""
  import faults_lib  # pylint: disable=import-outside-toplevel

  def build(folder):
    r = faults_lib.train(os.path.join(folder, "w"), *train_py_flags)
    assert r.returncode == 0, r.stderr[-3000:]
  return os.path.join(build_once(tmp_path_factory, "train_py_reference", build), "w")


# The files whose tests take longest, first (a suite run's --durations, 2026-12-01). The suite
# runs with pytest-xdist's "worksteal" scheduling (pyproject.toml's addopts): each worker starts
# on one half of this order, and one that runs out takes half of the other's queue. A single
# test cannot be split, so a long one that starts late keeps the other worker idle for its
# length; with these first, both workers end on quick tests. A file's tests stay together, so
# that its module-scoped fixtures are set up once per worker; files not named keep their order,
# after these.
_LONGEST_FIRST = ("test_multiprocess.py", "test_notebook.py", "test_faults_train.py",
                  "test_train.py", "test_cli.py", "test_datasets.py", "test_posterior.py",
                  "test_attribute_predictor.py", "test_perf.py", "test_faults_infer.py",
                  "test_models.py", "test_inference.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: keeps file order.
