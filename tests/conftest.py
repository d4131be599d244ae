"""Test set-up: 4 fake CPU devices (so every test exercises the multi-device code path) and
tiny configs. The flag must be set before JAX initialises its backend."""

import os

# Tiny models run in milliseconds but XLA:CPU spends seconds optimising each program with
# LLVM; the tests trade run time for compile time.
os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4",
    "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

from a2i_jax import config_lib  # noqa: E402

NUM_DEVICES = 4


def tiny_config(model: str = "cvae", tmp_cache: str = "", image_size: int = 32):
  """A few-second config: 32x32, widths x1/8, batch 8, 2 steps, 64 training images."""
  config = config_lib.get_config(f"synthetic:{model}")
  config.model.image_size = image_size
  config.data.image_size = image_size
  config.model.width = 0.125
  config.model.z_dim = 8
  config.model.zf_dim = 6
  config.model.zb_dim = 4
  # XLA's own weight gradients: the CPU default ("auto": per-tap matrix products) adds 2-4 s
  # of compilation to every tiny train step, and the suite compiles dozens. The default path
  # is tested where it matters: tests/test_perf.py (every form, per layer),
  # tests/test_models.py (a whole CVAE), and the 4-device and bf16 training tests.
  config.model.conv_weight_grad = "xla"
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
  config.num_sample_cols = 2
  config.progress_bar = False
  config.compilation_cache_dir = ""
  return config


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
  """One synthetic-data cache for the session (generation happens once)."""
  return str(tmp_path_factory.mktemp("a2i_cache"))


@pytest.fixture(scope="session", autouse=True)
def _four_devices_and_compile_cache(tmp_path_factory):
  # Many tests compile the same tiny programs; the persistent cache makes repeats cheap.
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  assert jax.device_count() == NUM_DEVICES, (
      f"expected {NUM_DEVICES} fake CPU devices, got {jax.devices()}")
