"""The performance defaults change speed, not results: the precision policy, the recommended
XLA:CPU flags, donation and fused dispatches against the plain step."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from a2i_jax import checkpoints, models, parallel, perf, train_lib
from a2i_jax.data import load_dataset
from a2i_jax.errors import ConfigError
from conftest import tiny_config


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


def test_recommended_flags_keep_user_flags(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_a=1 --xla_b=2")
  value = perf.set_recommended_xla_flags(("--xla_b=3", "--xla_c=4"))
  assert value == "--xla_a=1 --xla_b=2 --xla_c=4" == os.environ["XLA_FLAGS"]


def test_resume_accepts_a_changed_compute_dtype_only(tmp_path):
  cfg = tiny_config("cvae")
  cfg.model.dtype = "float32"
  del cfg.model["upsample_mode"]  # As saved before the key existed.
  checkpoints.save_config(str(tmp_path), cfg)
  cfg = tiny_config("cvae")
  cfg.model.dtype = "auto"
  cfg.model.upsample_mode = "direct"
  train_lib._check_resume_compatible(str(tmp_path), cfg)  # pylint: disable=protected-access
  cfg.model.z_dim += 1
  with pytest.raises(ConfigError, match="different config.model"):
    train_lib._check_resume_compatible(str(tmp_path), cfg)  # pylint: disable=protected-access


def test_optimised_step_equals_plain_step(data_cache):
  """Plain: float32, one step per jitted call, no donation, default XLA options.
  Optimised (the defaults): dtype "auto", state donated, the recommended XLA:CPU flags, and
  two steps fused into one unrolled dispatch. Same parameters after two steps."""
  plain_cfg = tiny_config("cvae", data_cache)
  plain_cfg.model.dtype = "float32"
  fast_cfg = tiny_config("cvae", data_cache)
  fast_cfg.model.dtype = "auto"
  fast_cfg.steps_per_dispatch, fast_cfg.scan_unroll = 2, True
  train = load_dataset(plain_cfg.data)["train"]
  mesh = parallel.make_mesh(jax.devices()[:1])
  data = parallel.put_replicated({"images": train.images,
                                  "attributes": train.attributes.astype(np.float32)}, mesh)
  key = jax.random.key(3)
  results = []
  for cfg, options, donate in ((plain_cfg, None, ()), (fast_cfg, "recommended", (0,))):
    model = models.create_model(cfg.model)
    tx = train_lib.make_optimizer(cfg)
    state = parallel.put_replicated(
        train_lib.create_train_state(model, cfg, tx, jax.random.key(0)), mesh)
    fn = jax.jit(train_lib.make_multi_step(train_lib.make_train_step(model, tx, cfg), cfg,
                                           mesh), donate_argnums=donate)
    compile_options = None
    if options:
      compile_options = dict(f.lstrip("-").split("=", 1) for f in perf.RECOMMENDED_CPU_FLAGS)
    compiled = fn.lower(state, data, key).compile(compiler_options=compile_options or None)
    metrics = []
    for _ in range(2 // cfg.steps_per_dispatch):
      state, m = compiled(state, data, key)
      metrics.append(jax.device_get(m["loss"]))
    results.append((jax.device_get(state), np.concatenate(metrics)))
  (plain, plain_loss), (fast, fast_loss) = results
  assert int(plain.step) == int(fast.step) == 2
  np.testing.assert_allclose(plain_loss, fast_loss, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(plain.params), jax.tree_util.tree_leaves(fast.params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(plain.batch_stats),
                  jax.tree_util.tree_leaves(fast.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
