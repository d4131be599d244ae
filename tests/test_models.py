"""Architecture: the reference's parameter counts, output shapes, initialisers, bad inputs."""

import contextlib
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from a2i_jax import config_lib, models, perf
from a2i_jax.errors import ConfigError, InputError
from conftest import normal as _normal, tiny_config, uniform as _uniform


def _abstract_params(cfg):
  model = models.create_model(cfg.model)
  return models.abstract_variables(model, cfg.model)["params"]


@pytest.mark.parametrize("config, expected", [
    (config_lib.get_config("lfw:cvae"), 14_659_910),
    (config_lib.get_config("lfw:discvae"), 15_861_449),
    (config_lib.get_config("cub:discvae"), 15_881_417),
])
def test_paper_parameter_counts(config, expected):
  """docs/reference.md §2.6: counts of the reference Torch models (weights, biases, BN
  gamma/beta)."""
  assert models.count_params(_abstract_params(config)) == expected


def test_paper_submodule_counts():
  p = _abstract_params(config_lib.get_config("lfw:discvae"))
  counts = {k: models.count_params(v) for k, v in p.items()}
  assert counts["encoder_fg"] == 6_785_920
  assert counts["encoder_bg_trunk"] + counts["encoder_bg_head"] == 676_288
  assert counts["decoder_fg"] == 7_650_758
  assert counts["decoder_bg"] == 748_483
  p = _abstract_params(config_lib.get_config("lfw:cvae"))
  assert models.count_params(p["encoder"]) == 6_950_528
  assert models.count_params(p["decoder"]) == 7_709_382


def test_vae_has_no_attribute_streams():
  p = _abstract_params(config_lib.get_config("lfw:vae"))
  assert "y_embed" not in p["encoder"] and "y_embed" not in p["decoder"]
  assert models.count_params(p) < 14_659_910


@pytest.mark.parametrize("name", ["vae", "cvae", "discvae"])
@pytest.mark.parametrize("size", [32, 64])
def test_output_shapes(name, size):
  cfg = tiny_config(name, image_size=size)
  model = models.create_model(cfg.model)
  x, y, m = models.dummy_inputs(cfg.model, batch=2)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  out = jax.device_get(jax.jit(lambda v: model.apply(  # NumPy's: no eager program below.
      v, x, y, m, train=False, rngs={"reparam": jax.random.key(1)}))(variables))
  assert out["mean"].shape == (2, size, size, 3)
  assert float(np.abs(out["mean"]).max()) <= 2.0 + 1e-6
  if name == "discvae":
    assert out["gate"].shape == (2, size, size, 3)
    assert float(out["gate"].min()) >= 0.0 and float(out["gate"].max()) <= 1.0
    assert float(np.abs(out["foreground"]).max()) <= 1.0
    np.testing.assert_allclose(
        out["mean"], models.compose(out["foreground"], out["gate"], out["background"],
                                    cfg.model.composition), rtol=1e-6, atol=1e-6)
  else:
    assert float(np.abs(out["mean"]).max()) <= 1.0  # tanh head
    assert out["x_logvar"].shape == (2, size, size, 3)


def test_torch_initialisers():
  cfg = tiny_config("cvae")
  cfg.model.width = 0.5
  model = models.create_model(cfg.model)
  p = jax.device_get(models.init_variables(model, cfg.model, jax.random.key(0))["params"])
  head = p["encoder"]["head"]
  # LinearMix2: the log-variance layer starts at zero (unit posterior variance).
  assert float(np.abs(head["logvar"]["kernel"]).max()) == 0.0
  # LinearMix: non-negative weights below 1/sqrt(fan_in).
  mix = p["decoder"]["mix"]["Dense_0"]["kernel"]
  assert float(mix.min()) >= 0.0 and float(mix.max()) < 1 / np.sqrt(mix.shape[0])
  # BatchNorm gamma ~ U[0, 1), beta = 0.
  bn = p["encoder"]["trunk"]["BatchNorm_0"]
  assert float(bn["scale"].min()) >= 0.0 and float(bn["scale"].max()) < 1.0
  assert float(np.abs(bn["bias"]).max()) == 0.0
  # Conv: weights and biases within +-1/sqrt(k*k*c_in).
  conv = p["encoder"]["trunk"]["Conv_0"]
  bound = 1 / np.sqrt(5 * 5 * 3)
  assert float(np.abs(conv["kernel"]).max()) <= bound
  assert float(np.abs(conv["bias"]).max()) <= bound
  assert float(np.abs(conv["kernel"]).max()) > 0.8 * bound


@pytest.mark.parametrize("name, where, paths", [
    ("cvae", "default", ("host",)), ("discvae", "default", ("host", "program")),
    ("discvae", "replicated", ("host",)), ("cvae", "replicated", ("program",))])
def test_initial_values_are_the_callbacks_values_to_the_bit(name, where, paths, monkeypatch):
  """models.init_variables gives the very values, dtypes and placement of the draws as
  callbacks inside Flax's init. Its key derivations and constant leaves are computed with
  NumPy ("host": no XLA program at all), or, where that cannot be done, by a program without
  host callbacks (so the persistent cache keeps it) before the draws; so also where the host
  evaluation fails unexpectedly. With the key committed and replicated over the devices, as a
  multi-device run's may be, so are the variables. The disCVAE reuses its background head,
  whose second call reads the parameters the first one drew (layers.ParamsReadDirectly).
  Both paths of a (model, key placement) in one test: its reference cannot be cached, 2-6 s
  a compile."""
  from a2i_jax.models import initializers  # pylint: disable=import-outside-toplevel
  cfg = tiny_config(name)
  model = models.create_model(cfg.model)
  key = jax.random.key(5)
  if where == "replicated":
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    key = jax.device_put(key, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  k_params, k_reparam, k_drop = jax.random.split(key, 3)
  inside = jax.jit(lambda kp, kr, kd: model.init(  # The draws as callbacks, the same keys.
      {"params": kp, "reparam": kr, "dropout": kd},
      *models.dummy_inputs(cfg.model), train=False))(k_params, k_reparam, k_drop)

  compiled = []  # The text of every program init_variables compiles.
  real_compile = jax.stages.Lowered.compile
  for path in paths:
    compiled.clear()
    with monkeypatch.context() as patch:
      if path == "program":  # The host evaluation failing as it might under a later jax.
        def not_on_host(*_):
          raise KeyError("broadcast_dimensions")
        patch.setattr(initializers, "_evaluate_on_host", not_on_host)
      patch.setattr(jax.stages.Lowered, "compile",
                    lambda self, *a, **k: compiled.append(self.as_text()) or real_compile(
                        self, *a, **k))
      after = models.init_variables(model, cfg.model, key)
    if path == "host":
      assert not compiled, path
    else:
      assert len(compiled) == 1 and "callback" not in compiled[0], path
    a, tree_a = jax.tree_util.tree_flatten(after)
    b, tree_b = jax.tree_util.tree_flatten(inside)
    assert tree_a == tree_b, path
    for x, y in zip(a, b):
      assert x.dtype == y.dtype and x.sharding.is_equivalent_to(y.sharding, x.ndim), path
      assert len(x.sharding.device_set) == (jax.device_count() if where == "replicated"
                                            else 1), path
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=path)
    # Drawn, not placeholders or zeros.
    assert any(np.abs(np.asarray(x)).max() > 0 for x in a), path


def test_variables_and_the_train_state_inside_a_callers_jit_and_eval_shape():
  """`init_variables` inside a caller's `jax.jit` gives the values it gives outside, to the
  bit, and `create_train_state` under `jax.eval_shape` the shapes of `abstract_train_state`
  (a notebook's way to a template). Was: JAX's TypeError from compiling the host-draw
  program for traced arguments (a review of the API under transformations)."""
  from a2i_jax import train_state  # pylint: disable=import-outside-toplevel
  cfg = tiny_config("cvae")
  model, key = models.create_model(cfg.model), jax.random.key(3)
  inside = jax.jit(lambda k: models.init_variables(model, cfg.model, k))(key)
  outside = models.init_variables(model, cfg.model, key)
  a, tree_a = jax.tree_util.tree_flatten(inside)
  b, tree_b = jax.tree_util.tree_flatten(outside)
  assert tree_a == tree_b
  for x, y in zip(a, b):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  tx = train_state.make_optimizer(cfg)
  shapes = jax.eval_shape(lambda k: train_state.create_train_state(model, cfg, tx, k), key)
  want = train_state.abstract_train_state(model, cfg, tx)
  assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(want)
  assert [(x.shape, x.dtype) for x in jax.tree_util.tree_leaves(shapes)] == [
      (x.shape, x.dtype) for x in jax.tree_util.tree_leaves(want)]


def test_a_bounded_cache_builds_once_and_forgets_the_least_recently_used():
  from a2i_jax import memo  # pylint: disable=import-outside-toplevel
  cache, built = memo.BoundedCache(2), []
  get = lambda k: cache.get(k, lambda: built.append(k) or f"value {k}")
  assert [get("a"), get("b"), get("a")] == ["value a", "value b", "value a"]
  assert built == ["a", "b"]
  get("c")  # "b" is the least recently used of the two kept.
  get("a")
  get("b")
  assert built == ["a", "b", "c", "b"]
  with pytest.raises(TypeError):
    cache.get(["not hashable"], lambda: 1)
  cache.clear()
  get("a")
  assert built[-1] == "a"


def test_variables_of_an_equal_model_reuse_the_trace_of_its_init(monkeypatch):
  """models.init_variables and abstract_variables trace a model's `init` once per process for
  equal modules of one input size (0.3-0.4 s of a tiny model's 0.5 s): later calls give the
  values a trace of their own gives, for their own key and JAX's key settings."""
  from a2i_jax.models import initializers  # pylint: disable=import-outside-toplevel
  cfg = tiny_config("cvae")
  cfg.model.z_dim = 5  # A model no other test makes, so that the first call here traces.
  traces = []
  trace = initializers._trace_draws  # pylint: disable=protected-access
  monkeypatch.setattr(initializers, "_trace_draws",
                      lambda *a: traces.append(1) or trace(*a))

  def fresh(model, key):  # A trace of its own: draw_after without a cache key.
    return initializers.draw_after(models._init_fn(model, cfg.model), key)  # pylint: disable=protected-access

  first = models.init_variables(models.create_model(cfg.model), cfg.model, jax.random.key(1))
  assert len(traces) == 1
  for seed, partitionable in ((1, None), (2, None), (2, not jax.config.jax_threefry_partitionable)):
    before = jax.config.jax_threefry_partitionable
    if partitionable is not None:
      jax.config.update("jax_threefry_partitionable", partitionable)
    try:
      model = models.create_model(cfg.model)  # Equal, not the same object.
      traces.clear()
      got = models.init_variables(model, cfg.model, jax.random.key(seed))
      assert len(traces) == (partitionable is not None)  # A setting of its own: traced.
      want = fresh(model, jax.random.key(seed))
    finally:
      jax.config.update("jax_threefry_partitionable", before)
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
  assert not np.array_equal(got["params"]["decoder"]["Dense_0"]["kernel"],
                            first["params"]["decoder"]["Dense_0"]["kernel"])
  # A changed module-level setting (a benchmark's) is traced afresh, and every such setting
  # of the layers is in the key (review: FOLD_BATCHNORM was not, and a test comparing the
  # variables under both folds compared one trace with itself).
  monkeypatch.setattr(models.layers, "FOLD_BATCHNORM", "on")
  traces.clear()
  models.init_variables(models.create_model(cfg.model), cfg.model, jax.random.key(1))
  assert len(traces) == 1
  for module in (models.layers, models.conv_grad):
    settings = {n for n, v in vars(module).items()
                if n.isupper() and not n.startswith("_") and not isinstance(v, tuple)}
    assert settings <= {n for _, n, _ in models.trace_settings()}, module.__name__
  # Another size of input is another trace; the shapes are new containers each call.
  cfg.model.y_dim = 7
  traces.clear()
  models.init_variables(models.create_model(cfg.model), cfg.model, jax.random.key(1))
  assert len(traces) == 1
  shapes = models.abstract_variables(models.create_model(cfg.model), cfg.model)
  shapes["params"].clear()
  model = models.create_model(cfg.model)
  again = models.abstract_variables(model, cfg.model)
  assert again == jax.eval_shape(models._init_fn(model, cfg.model), jax.random.key(0))  # pylint: disable=protected-access
  assert jax.tree_util.tree_map(lambda s: s.shape, again) == jax.tree_util.tree_map(
      np.shape, models.init_variables(model, cfg.model, jax.random.key(1)))


@pytest.mark.parametrize("partitionable", [True, False])
def test_numpy_threefry_derives_jax_keys(partitionable):
  """The host evaluation's fold-in and split (NumPy's Threefry-2x32) give JAX's keys to the
  bit, for batches of keys and for either setting of jax_threefry_partitionable."""
  from a2i_jax.models import initializers  # pylint: disable=import-outside-toplevel
  before = jax.config.jax_threefry_partitionable
  jax.config.update("jax_threefry_partitionable", partitionable)
  try:
    one = jax.random.key(2**31 - 1)
    batch = jax.random.split(one, (2, 3))
    for d in (0, 7, 0xFFFFFFFF):
      want = jax.random.key_data(jax.vmap(jax.vmap(lambda k: jax.random.fold_in(k, d)))(batch))
      got = initializers._fold_in(np.asarray(jax.random.key_data(batch)), np.uint32(d))  # pylint: disable=protected-access
      np.testing.assert_array_equal(got, want)
    for shape in ((3,), (2, 5), (1,), (0,)):
      for keys, split in ((batch, jax.vmap(jax.vmap(lambda k: jax.random.split(k, shape)))),  # pylint: disable=cell-var-from-loop
                          (one, lambda k: jax.random.split(k, shape))):  # pylint: disable=cell-var-from-loop
        got = initializers._split(np.asarray(jax.random.key_data(keys)), shape)  # pylint: disable=protected-access
        np.testing.assert_array_equal(got, jax.random.key_data(split(keys)))
  finally:
    jax.config.update("jax_threefry_partitionable", before)


def test_what_numpy_would_compute_otherwise_comes_from_the_program():
  """draw_after evaluates with NumPy only what NumPy computes as XLA does. A float-to-integer
  conversion (XLA maps NaN to 0 and clamps), a weakly typed result (a Python scalar) and a
  mesh set for jit (which places results on it) make it compile the program: the results
  equal jit(init)'s in value, dtype, weak type and placement."""
  from a2i_jax.models import initializers  # pylint: disable=import-outside-toplevel

  def init(key):
    return {"w": initializers.normal(1.0)(key, (3,)),
            "int": jnp.array([-1.5, np.nan, 1e10], jnp.float32).astype(jnp.int32),
            "weak": 0.5, "ones": jnp.ones((2,))}
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  for where in ("default", "mesh"):
    with jax.set_mesh(mesh) if where == "mesh" else contextlib.nullcontext():
      after = initializers.draw_after(init, jax.random.key(3))
      inside = jax.jit(init)(jax.random.key(3))
    for k in inside:
      assert after[k].dtype == inside[k].dtype and after[k].weak_type == inside[k].weak_type, k
      assert after[k].sharding.is_equivalent_to(inside[k].sharding, after[k].ndim), (where, k)
      np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(inside[k]))
  assert np.asarray(after["int"])[1] == 0  # NaN, as XLA converts it (NumPy: INT_MIN).


def test_draws_that_cannot_wait_are_drawn_inside_the_program():
  """A leaf computed from a draw (here a boolean one: NaN would not show) makes draw_after
  draw inside the program; so does a draw inside a nested jit, whose trace JAX caches: the
  same values as jit(init), and the nested function still draws properly afterwards."""
  from a2i_jax.models import initializers  # pylint: disable=import-outside-toplevel

  @jax.jit
  def nested(key):
    return initializers.normal(1.0)(key, (4,))

  def init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    w = initializers.normal(1.0)(k1, (6,))
    return {"w": w, "positive": w > 0, "as_drawn": initializers.uniform(0.0, 1.0)(k2, (5,)),
            "nested": nested(k3), "zeros": jnp.zeros((2,))}
  after = initializers.draw_after(init, jax.random.key(1))
  inside = jax.jit(init)(jax.random.key(1))
  for k in inside:
    np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(inside[k]))
  assert 0 < int(np.sum(after["positive"])) < 6
  assert np.isfinite(np.asarray(nested(jax.random.key(2)))).all()

  # Without the dependent leaf, the other draws wait, and the nested one stays a callback.
  def init_waiting(key):
    out = init(key)
    del out["positive"]
    return out
  waited = initializers.draw_after(init_waiting, jax.random.key(1))
  for k in waited:
    np.testing.assert_array_equal(np.asarray(waited[k]), np.asarray(inside[k]))


def test_wrong_attribute_length_is_a_clear_error():
  cfg = tiny_config("cvae")
  model = models.create_model(cfg.model)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  x, _, _ = models.dummy_inputs(cfg.model, batch=2)
  bad_y = jnp.zeros((2, cfg.model.y_dim + 1))
  with pytest.raises(InputError, match=f"y_dim={cfg.model.y_dim}"):
    model.apply(variables, x, bad_y, train=False, rngs={"reparam": jax.random.key(1)})
  with pytest.raises(InputError, match="attributes have shape"):
    model.apply(variables, jnp.zeros((2, cfg.model.z_dim)), bad_y, method="decode")


def test_wrong_image_shape_is_a_clear_error():
  cfg = tiny_config("cvae")
  model = models.create_model(cfg.model)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  _, y, _ = models.dummy_inputs(cfg.model, batch=2)
  with pytest.raises(InputError, match=r"\[batch, 32, 32, 3\]"):
    model.apply(variables, jnp.zeros((2, 64, 64, 3)), y, train=False,
                rngs={"reparam": jax.random.key(1)})
  with pytest.raises(InputError, match="NHWC"):
    model.apply(variables, jnp.zeros((2, 3, 32, 32)), y, train=False,
                rngs={"reparam": jax.random.key(1)})


def test_discvae_needs_a_mask():
  cfg = tiny_config("discvae")
  model = models.create_model(cfg.model)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  x, y, _ = models.dummy_inputs(cfg.model, batch=2)
  with pytest.raises(InputError, match="foreground mask"):
    model.apply(variables, x, y, None, train=False, rngs={"reparam": jax.random.key(1)})


def test_unknown_model_name_and_size():
  cfg = tiny_config("cvae")
  cfg.model.name = "gan"
  with pytest.raises(ConfigError, match="unknown model.name='gan'"):
    models.create_model(cfg.model)
  cfg = tiny_config("cvae")
  cfg.model.image_size = 48
  model = models.create_model(cfg.model)
  with pytest.raises(ConfigError, match="image_size=48"):
    models.init_variables(model, cfg.model, jax.random.key(0))


@pytest.mark.parametrize("composition", ["reference", "layered"])
def test_background_kl_gradient_does_not_reach_foreground_encoder(composition):
  """docs/reference.md §1.3.2: with blocking on, d KL_B / d(encoder_fg) is exactly zero; off,
  it is not. The same under both compositions."""
  kl_grads = []
  for block in (True, False):
    cfg = tiny_config("discvae")
    cfg.model.composition = composition
    cfg.model.block_kl_bg_grad_to_fg = block
    model = models.create_model(cfg.model)
    variables = models.init_variables(model, cfg.model, jax.random.key(0))
    x, y, m = models.dummy_inputs(cfg.model, batch=2)
    x = _uniform(3, x.shape, minval=-1, maxval=1)

    def kl_bg(params, model=model, variables=variables, x=x, y=y, m=m):
      out = model.apply({**variables, "params": params}, x, y, m, train=False,
                        rngs={"reparam": jax.random.key(1)})
      return (0.5 * (jnp.exp(out["logvar_bg"]) + out["mu_bg"] ** 2 - 1
                     - out["logvar_bg"])).sum()
    kl_grads.append((jax.grad(kl_bg), variables["params"]))
  # Both settings' gradients from one program; the norms summed on the host (an eager
  # reduction per leaf compiled a program per shape).
  both = jax.jit(lambda *ps: [grad(p) for (grad, _), p in zip(kl_grads, ps)])(
      *(p for _, p in kl_grads))

  def norm(tree):
    return float(sum(np.abs(np.asarray(a, np.float64)).sum()
                     for a in jax.tree_util.tree_leaves(tree)))
  for block, g in zip((True, False), both):
    fg_norm, bg_norm = norm(g["encoder_fg"]), norm(g["encoder_bg_head"])
    assert bg_norm > 0, f"block={block}: no gradient reaches the background encoder"
    assert (fg_norm == 0.0) == block, f"block={block}: |d KL_B / d encoder_fg| = {fg_norm}"


def _two_forms(name, key, value, other):
  """Two models that differ only in `config.model.<key>` (value, other); both must have the
  same variables (names, shapes, initial values). Returns (cfg, model, other_model, variables)."""
  cfg, ref = tiny_config(name), tiny_config(name)
  cfg.model[key], ref.model[key] = value, other
  model, other_model = models.create_model(cfg.model), models.create_model(ref.model)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  ref_vars = models.init_variables(other_model, ref.model, jax.random.key(0))
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(ref_vars)
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(ref_vars)):
    np.testing.assert_array_equal(a, b)
  return cfg, model, other_model, variables


def _compiled_loss_grad(model, variables, cfg):
  """A compiled params -> ((loss, mean image), grads) of a train-mode reconstruction loss."""
  x, y, m = models.dummy_inputs(cfg.model, batch=3)
  x = _uniform(2, x.shape, minval=-1.0, maxval=1.0)
  y = _uniform(5, y.shape)
  m = (_uniform(3, m.shape) > 0.5).astype(m.dtype)

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, y, m, train=True,
                         rngs={"reparam": jax.random.key(1), "dropout": jax.random.key(4)},
                         mutable=["batch_stats"])
    return jnp.sum((out["mean"] - x) ** 2), out["mean"]
  return jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(variables["params"]).compile()


def _assert_same_loss_and_grads(fn, ref_fn, params, rtol):
  (loss, mean), grads = fn(params)
  (ref_loss, ref_mean), ref_grads = ref_fn(params)
  np.testing.assert_allclose(mean, ref_mean, rtol=rtol, atol=1e-5)
  np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(ref_grads)
  flat = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(grads)])
  ref = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(ref_grads)])
  # Biases in front of BatchNorm get gradients of pure rounding noise: compare on one scale.
  np.testing.assert_allclose(flat, ref, rtol=10 * rtol, atol=1e-5 * np.abs(ref).max())


def test_polyphase_discvae_has_the_direct_parameters_and_outputs():
  """The disCVAE's two decoders (5x5 upsampling layers in both) keep their parameter names
  and initial values, and compute the same composite; gradients: the CVAE test below."""
  cfg, poly_model, direct_model, variables = _two_forms("discvae", "upsample_mode",
                                                        "polyphase", "direct")
  z_fg = _normal(2, (3, cfg.model.zf_dim))
  z_bg = _normal(3, (3, cfg.model.zb_dim))
  y = _normal(4, (3, cfg.model.y_dim))
  outs = jax.jit(lambda v: [model.apply(v, z_fg, z_bg, y, method="decode")  # One program.
                            for model in (poly_model, direct_model)])(variables)
  for key in outs[0]:
    np.testing.assert_allclose(outs[0][key], outs[1][key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_polyphase_upsample_conv_is_the_direct_form():
  """model.upsample_mode="polyphase" computes upsample + 5x5 conv at the low resolution: the
  same parameters (names, shapes, initial values), outputs and gradients as "direct"."""
  cfg, poly_model, direct_model, variables = _two_forms("cvae", "upsample_mode", "polyphase",
                                                        "direct")
  poly_fn = _compiled_loss_grad(poly_model, variables, cfg)
  direct_fn = _compiled_loss_grad(direct_model, variables, cfg)
  _assert_same_loss_and_grads(poly_fn, direct_fn, variables["params"], rtol=1e-4)

  # ... and it is a different, cheaper program: XLA counts fewer FLOPs for it.
  def flops(compiled):
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])
  assert flops(poly_fn) < 0.8 * flops(direct_fn)


def test_phase_decoder_tail_is_the_full_form():
  """model.decoder_tail="phase" (the GPU default) keeps the decoders' last layer in 2x2 phase
  blocks and runs the heads as one convolution over them: the same parameters (names, shapes,
  initial values), outputs and BatchNorm statistics as "full" (the disCVAE: both decoder
  classes, three heads; gradients: the next test), and the setting reaches both models."""
  for name in ("cvae", "discvae"):
    cfg, phase_model, full_model, variables = _two_forms(name, "decoder_tail", "phase", "full")
    inputs = models.dummy_inputs(cfg.model, batch=3)
    inputs = (_uniform(2, inputs[0].shape, minval=-1.0),
              *inputs[1:])
    fns = [lambda v, model=model: model.apply(
        v, *inputs, train=True, rngs={"reparam": jax.random.key(1), "dropout": jax.random.key(4)},
        mutable=["batch_stats"]) for model in (phase_model, full_model)]
    # The convolutions' output channels. Each decoder's heads are one convolution in either
    # form: at full resolution with the heads' channels side by side, 3 + 3 per image decoder
    # and the background's 3 zero-padded to 4 (the last convolution); over the 2x2 blocks
    # with 4 x (3 + 3) (background: 4 x 3). No 3-channel convolution is left.
    phase_outs, full_outs = (re.findall(r"\w+\[[\d,]+,(\d+)\] = conv_general_dilated",
                                        str(jax.make_jaxpr(f)(variables))) for f in fns)
    assert "3" not in full_outs and "3" not in phase_outs
    assert full_outs.count("6") == 1 and phase_outs.count("24") == 1
    assert (full_outs[-1], phase_outs[-1]) == (("6", "24") if name == "cvae" else ("4", "12"))
    if name == "cvae":
      continue
    (out, stats), (ref, ref_stats) = jax.jit(lambda v, fns=fns: [f(v) for f in fns])(variables)
    assert set(out) == set(ref)
    for key in ref:  # Every head: the image, the gate, the background.
      np.testing.assert_allclose(out[key], ref[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for a, b in zip(jax.tree_util.tree_leaves(stats), jax.tree_util.tree_leaves(ref_stats)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode,kernel,size,form", [
    ("polyphase", 3, (8, 8), "offset"), ("polyphase", 3, (8, 6), "offset"),
    ("polyphase", 3, (16, 16), "offset"), ("polyphase", 3, (4, 4), None),
    ("polyphase", 3, (2, 2), None), ("polyphase", 7, (8, 8), "offset"),
    ("polyphase", 7, (2, 2), "centred"), ("polyphase", 5, (8, 8), "centred"),
    ("transposed", 3, (2, 2), "transposed"), ("transposed", 3, (8, 6), "transposed"),
    ("transposed", 5, (4, 4), "transposed"), ("transposed", 7, (2, 2), "transposed")])
def test_upsample_conv_forms_are_the_direct_form(mode, kernel, size, form):
  """Every form `conv` picks for an upsample + k x k layer (3x3 from 8x8 inputs up: the
  "offset" form, one ring of blocks past the image, cropped; 5x5: "centred"; in "transposed"
  mode one stride-2 transposed convolution, the input dilated by 2 and a (k+1)^2 kernel of
  summed taps, writing the full-resolution output) computes the direct form's output and
  gradients (input, kernel, bias) with the same parameters, with XLA's weight gradient and
  with the per-tap one; where the offset form would not save enough (3x3 at 4x4 and 2x2) the
  layer is the direct one."""
  assert models.layers.polyphase_form(kernel, mode, size=size) == form
  assert models.layers.polyphase_form(kernel, "direct", size=size) is None
  # 12 channels: the per-tap weight gradient's per-tap path, as in the models' layers.
  x = _normal(0, (2,) + size + (12,))
  weights = _normal(1, (2, 2 * size[0], 2 * size[1], 4))

  class Layer(nn.Module):
    mode: str
    weight_grad: str

    @nn.compact
    def __call__(self, x):
      return models.conv(x, 4, kernel, dtype=jnp.float32, upsample_first=True,
                         upsample_mode=self.mode, conv_weight_grad=self.weight_grad)

  variables = Layer("direct", "xla").init(jax.random.key(2), x)

  def loss(v, x, mode, weight_grad):
    return jnp.sum(jnp.tanh(Layer(mode, weight_grad).apply(v, x)) * weights)

  def values_and_grads(v, x):  # Both forms with both weight gradients: one program.
    return {(g, m): jax.value_and_grad(functools.partial(loss, mode=m, weight_grad=g),
                                       argnums=(0, 1))(v, x)
            for g in ("xla", "taps") for m in (mode, "direct")}
  results = jax.jit(values_and_grads)(variables, x)
  for weight_grad in ("xla", "taps"):
    (value, grads), (ref, ref_grads) = (results[weight_grad, m] for m in (mode, "direct"))
    np.testing.assert_allclose(value, ref, rtol=1e-5, err_msg=weight_grad)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
      # Sums over 2 x 32 x 32 pixels in another order: compared on the gradient's scale.
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(),
                                 err_msg=weight_grad)
    jaxpr = str(jax.make_jaxpr(functools.partial(loss, mode=mode, weight_grad=weight_grad))(
        variables, x))
    if form == "transposed":  # One convolution, no upsample before it.
      assert re.search(r"lhs_dilation=\(2, 2\)", jaxpr)
      assert "broadcast_in_dim" not in jaxpr.split("conv_general_dilated")[0]
      continue
    # The program's forward convolution: offset, at the input's size plus one ring with the
    # 4 x 4 phase outputs; centred, at the input's size; direct, at twice it with 4 outputs.
    h, w = size
    expected = {"offset": (h + 1, w + 1, 16), "centred": (h, w, 16), None: (2 * h, 2 * w, 4)}
    shapes = set(re.findall(r"f32\[2,(\d+),(\d+),(\d+)\] = conv_general_dilated", jaxpr))
    assert tuple(str(n) for n in expected[form]) in shapes
    for other, shape in expected.items():
      if other != form and shape != expected[form]:
        assert tuple(str(n) for n in shape) not in shapes


def test_transposed_mode_keeps_the_phase_tail_and_the_composite():
  """The disCVAE in "transposed" mode: the same composite and layers as "polyphase" from the
  same variables, its decoders' last layer still in the phase layout with the 24- and
  12-output head convolutions (only the layers before it change form)."""
  cfg, t_model, p_model, variables = _two_forms("discvae", "upsample_mode", "transposed",
                                                "polyphase")
  t_model, p_model = (m.clone(decoder_tail="phase") for m in (t_model, p_model))
  z_fg = _normal(2, (3, cfg.model.zf_dim))
  z_bg = _normal(3, (3, cfg.model.zb_dim))
  y = _normal(4, (3, cfg.model.y_dim))
  fns = [lambda v, model=model: model.apply(v, z_fg, z_bg, y, method="decode")
         for model in (t_model, p_model)]
  outs = jax.jit(lambda v: [f(v) for f in fns])(variables)  # Both in one program.
  for key in outs[0]:
    np.testing.assert_allclose(outs[0][key], outs[1][key], rtol=1e-4, atol=1e-5, err_msg=key)
  jaxpr = str(jax.make_jaxpr(fns[0])(variables))
  heads = re.findall(r"\w+\[[\d,]+,(\d+)\] = conv_general_dilated", jaxpr)
  assert "24" in heads and "12" in heads and "lhs_dilation=(2, 2)" in jaxpr


@pytest.mark.parametrize("heads,weight_grad,upsample_mode", [
    ((3, 1), "xla", "polyphase"), ((3,), "taps", "polyphase"), ((3, 3), "taps", "direct")])
def test_decoder_tail_forms_are_the_written_heads(heads, weight_grad, upsample_mode):
  """Both forms of `decoder_tail` against the tail as written here (a convolution per head on
  the full-resolution h): the same parameter tree, each head's output and every gradient, so
  no head reads another's weights. One head of 3 channels takes the zero-padded path, and
  the per-tap weight gradient takes its padded kernel; with the direct upsample the phase
  form does not apply and both take the full one."""
  x = _normal(0, (2, 4, 4, 6))
  weights = [_normal(i + 1, (2, 8, 8, c)) for i, c in enumerate(heads)]

  class Tail(nn.Module):
    tail: str

    @nn.compact
    def __call__(self, x):
      if self.tail != "written":
        return models.decoder_tail(x, 5, 5, heads, 5, train=True, dtype=jnp.float32,
                                   upsample_mode=upsample_mode, conv_weight_grad=weight_grad,
                                   tail=self.tail)
      h = nn.relu(models.batch_norm(models.conv(x, 5, 5, dtype=jnp.float32, upsample_first=True,
                                                upsample_mode=upsample_mode), True, jnp.float32))
      return [models.conv(h, f, 5, dtype=jnp.float32) for f in heads]

  tails, losses, inits = ("written", "phase", "full"), [], []
  # The three tails' variables from one program (op by op, each primitive compiles its own).
  all_variables = jax.jit(lambda key: [Tail(tail).init(key, x) for tail in tails])(
      jax.random.key(3))
  for tail, variables in zip(tails, all_variables):
    module = Tail(tail)

    def loss(params, module=module, variables=variables):
      outs, _ = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
      assert [o.shape for o in outs] == [(2, 8, 8, c) for c in heads]
      return sum(jnp.sum(o * w) for o, w in zip(outs, weights))
    losses.append(loss)
    inits.append(variables["params"])
  # The three tails' values and gradients from one program.
  results = jax.jit(lambda ps: [jax.value_and_grad(f)(p) for f, p in zip(losses, ps)])(inits)
  ref_params, (ref_value, ref_grads) = inits[0], results[0]
  for tail, params, (value, grads) in zip(tails[1:], inits[1:], results[1:]):
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(ref_params), tail
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref_params)):
      np.testing.assert_array_equal(a, b, err_msg=tail)  # The same initial values.
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, err_msg=tail)
    flat, ref = (np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(t)])
                 for t in (grads, ref_grads))
    # One scale for all: the bias in front of BatchNorm gets gradients of pure rounding noise.
    np.testing.assert_allclose(flat, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max(),
                               err_msg=tail)
    for i in range(len(heads)):  # The heads' kernels: each its own, and not zero.
      assert np.abs(grads[f"Conv_{i + 1}"]["kernel"]).max() > 1e-3, (tail, i)


def test_decoder_tail_auto_is_phase_off_cpu_and_a_bad_name_is_one_error(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")  # The convolutions in YNNPACK's kernels (jaxlib 0.10).
  assert perf.decoder_tail("auto", backend="cpu") == "full"
  monkeypatch.setenv("XLA_FLAGS", perf.XLA_CONVOLUTIONS_FLAG)  # In XLA's own.
  assert perf.decoder_tail("auto", backend="cpu") == "phase"
  assert perf.decoder_tail("auto", backend="gpu") == "phase"
  assert perf.decoder_tail("auto", backend="tpu") == "phase"
  cfg = tiny_config("cvae")
  cfg.model.decoder_tail = "phased"
  with pytest.raises(ConfigError, match="model.decoder_tail='phased'.*full, phase"):
    config_lib.validate_config(cfg)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_block_max_pool_is_the_window_form_with_ties(dtype):
  """max_pool's "blocks" form (the default) gives the reduce-window form's values and
  gradients, also where a window holds several maxima (the first one gets the gradient)."""
  x = jnp.asarray(np.random.default_rng(0).integers(0, 3, (2, 8, 6, 5)), dtype)  # Many ties.
  g = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 3, 5)), dtype)
  (y, vjp), (ref_y, ref_vjp) = (jax.vjp(lambda a, f=form: models.max_pool(a, f), x)
                                for form in ("blocks", "window"))
  np.testing.assert_array_equal(y, ref_y)
  np.testing.assert_array_equal(vjp(g)[0], ref_vjp(g)[0])
  # Each window passes its gradient whole to one element, x computed inside the program.
  # (Comparing x with the stored maximum lost some windows' gradients in a whole model, where
  # XLA recomputed x with other rounding: test_polyphase_upsample_conv_is_the_direct_form.)
  scale = jnp.asarray(1.1, dtype)
  dx = jax.jit(jax.grad(lambda a: jnp.sum(models.max_pool(a * scale + 0.3, "blocks") * g)))(x)
  windows = (np.asarray(dx, np.float32) / float(scale)).reshape(2, 4, 2, 3, 2, 5)
  np.testing.assert_allclose(windows.sum(axis=(2, 4)), np.asarray(g, np.float32), rtol=1e-2)
  assert ((windows != 0).sum(axis=(2, 4)) <= 1).all()
  odd = jnp.ones((1, 5, 5, 2), dtype)  # Odd sizes fall back to the window form.
  np.testing.assert_array_equal(models.max_pool(odd, "blocks"), models.max_pool(odd, "window"))
  assert perf.max_pool_form("auto", backend="cpu") == "blocks"
  assert perf.max_pool_form("auto", backend="gpu") == "blocks"
  with pytest.raises(ConfigError, match="max_pool='block' is not a max-pooling form"):
    models.max_pool(x, "block")


def test_taps_weight_grad_is_xlas(monkeypatch):
  """model.conv_weight_grad="taps" changes only how the kernels' gradients are computed: the
  same parameters, outputs and loss gradients as "xla". (The disCVAE's modules:
  test_discvae_convolutions_take_the_taps_path.)"""
  cfg, taps_model, xla_model, variables = _two_forms("cvae", "conv_weight_grad", "taps", "xla")
  taps_fn = _compiled_loss_grad(taps_model, variables, cfg)
  _assert_same_loss_and_grads(taps_fn, _compiled_loss_grad(xla_model, variables, cfg),
                              variables["params"], rtol=1e-5)
  # ... and the taps path is really taken: the convolutions carry custom_vjp rules (with the
  # reduce-window max pool and JAX's own input gradients, so that they hold the only ones).
  monkeypatch.setattr(models.layers, "MAX_POOL_FORM", "window")
  monkeypatch.setattr(models.conv_grad, "CONV_INPUT_GRAD", "xla")
  monkeypatch.setattr(models.conv_grad, "CONV_WEIGHT_GRAD_LAYOUT", "xla")
  for model, expected in ((taps_model, True), (xla_model, False)):
    jaxpr = jax.make_jaxpr(lambda v, model=model: model.apply(
        v, *models.dummy_inputs(cfg.model), train=False, rngs={"reparam": jax.random.key(1)}))
    assert ("custom_vjp" in str(jaxpr(variables))) == expected


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_window_conv_is_the_convolution(dtype):
  """The encoders' top layer as a matrix product (`window_conv`) is the unpadded k x k
  convolution over the whole k x k map: the same parameters (names, shapes, initial values),
  outputs and gradients (input and parameters)."""
  class Top(nn.Module):
    as_product: bool

    @nn.compact
    def __call__(self, x):
      if self.as_product:
        return models.window_conv(x, 12, dtype)
      return models.conv(x, 12, x.shape[1], padding=0, dtype=dtype)

  x = _normal(0, (3, 4, 4, 5))
  product, convolution = Top(True), Top(False)
  variables = product.init(jax.random.key(1), x)
  ref_vars = convolution.init(jax.random.key(1), x)
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(ref_vars)
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(ref_vars)):
    np.testing.assert_array_equal(a, b)
  weights = _normal(2, (3, 1, 1, 12))

  def loss(module):
    return jax.jit(jax.value_and_grad(lambda v, x: jnp.sum(
        jnp.sin(module.apply(v, x).astype(jnp.float32)) * weights), (0, 1)))
  (value, grads), (ref_value, ref_grads) = loss(product)(variables, x), loss(convolution)(
      variables, x)
  tol = 1e-5 if dtype == jnp.float32 else 3e-2
  np.testing.assert_allclose(value, ref_value, rtol=tol, atol=tol)
  for g, ref in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
    assert g.shape == ref.shape and g.dtype == ref.dtype
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(ref, np.float32),
                               rtol=tol, atol=tol * np.abs(np.asarray(ref, np.float32)).max())


def test_parameters_are_read_without_tracing_their_initialisers(monkeypatch):
  """layers.ParamsReadDirectly: applying a model reads each parameter without Flax's shape
  check by tracing its initialiser again under eval_shape, into the very program Flax's own
  `param` gives, and a parameter of the wrong shape still fails with Flax's error naming it
  (a Dense, a Conv, an upsampling Conv and a BatchNorm parameter)."""
  from a2i_jax.models import layers  # pylint: disable=import-outside-toplevel
  import flax  # pylint: disable=import-outside-toplevel
  cfg = tiny_config("discvae")
  model = models.create_model(cfg.model)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  x, y, m = models.dummy_inputs(cfg.model, batch=2)

  def program(v):
    return str(jax.make_jaxpr(lambda v: model.apply(v, x, y, m, train=True, rngs={
        "reparam": jax.random.key(1), "dropout": jax.random.key(2)}, mutable="batch_stats"))(v))
  shape_checks = []
  real_eval_shape = jax.eval_shape
  monkeypatch.setattr(jax, "eval_shape",
                      lambda *a, **k: shape_checks.append(1) or real_eval_shape(*a, **k))
  direct = program(variables)
  assert not shape_checks
  with monkeypatch.context() as patch:  # Flax's own param, as before.
    patch.setattr(layers.ParamsReadDirectly, "param", nn.nowrap(
        lambda self, name, fn, *a, unbox=True, **k: nn.Module.param(self, name, fn, *a,
                                                                     unbox=unbox, **k)))
    assert program(variables) == direct
  # One check per parameter read (the background head's, called twice, are read twice).
  assert len(shape_checks) >= len(jax.tree_util.tree_leaves(variables["params"]))

  params = variables["params"]
  for path in (("encoder_fg", "head", "mu", "kernel"), ("decoder_bg", "Conv_0", "kernel"),
               ("decoder_fg", "Conv_1", "kernel"), ("encoder_fg", "trunk", "BatchNorm_0",
                                                    "scale")):
    node = params
    for name in path[:-1]:
      node = node[name]
    assert isinstance(node[path[-1]], jax.Array), path
    good = node[path[-1]]
    node[path[-1]] = jnp.zeros(good.shape[:-1] + (good.shape[-1] + 1,))
    with pytest.raises(flax.errors.ScopeParamShapeError,
                       match=f"{path[-1]}.*/{'/'.join(path[:-1])}"):
      program(variables)
    node[path[-1]] = good


def test_split_outputs_model_is_the_whole_model(monkeypatch):
  """The wide convolutions in blocks of outputs (the CPU default, `conv_grad.split_outputs`)
  give the whole model's loss and gradients: with the limit lowered to 48 outputs, the tiny
  CVAE's two decoder polyphase layers (4 x 32 and 4 x 16 outputs) split, 3 and 2 blocks."""
  from a2i_jax.models import conv_grad  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(conv_grad, "SPLIT_OUTPUTS", 48)
  cfg = tiny_config("cvae")
  model = models.create_model(cfg.model)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  fns = {}
  for form in ("split", "whole"):  # The form is read when the model is traced.
    monkeypatch.setattr(conv_grad, "CONV_OUTPUT_SPLIT", form)
    fns[form] = _compiled_loss_grad(model, variables, cfg)
    text = str(jax.make_jaxpr(lambda v: model.apply(
        v, *models.dummy_inputs(cfg.model), train=False,
        rngs={"reparam": jax.random.key(1)}))(variables))
    fns[form + "_convs"] = text.count("conv_general_dilated[")
  assert fns["split_convs"] == fns["whole_convs"] + 3
  _assert_same_loss_and_grads(fns["split"], fns["whole"], variables["params"], rtol=1e-5)


def test_discvae_convolutions_take_the_taps_path(monkeypatch):
  """Every convolution of the disCVAE (both encoders and decoders) goes through the per-tap
  rule when asked (its strided ones through the canonical gradients'), or through the
  canonical gradients' (CPU's "auto"), none with XLA's own gradients: the settings reach all
  its modules.
  (The rules' values and gradients: tests/test_perf.py; a whole model's: the CVAE test
  above.)"""
  # The reduce-window max pool, so that the convolutions hold the only custom_vjp rules.
  monkeypatch.setattr(models.layers, "MAX_POOL_FORM", "window")
  counts = {}
  for mode, input_grad in (("taps", None), ("xla", None), ("xla", "xla")):
    monkeypatch.setattr(models.conv_grad, "CONV_INPUT_GRAD", input_grad)
    monkeypatch.setattr(models.conv_grad, "CONV_WEIGHT_GRAD_LAYOUT", input_grad)
    mode = f"{mode}/{input_grad or 'auto'}"
    cfg = tiny_config("discvae")
    cfg.model.conv_weight_grad = mode.split("/")[0]
    model = models.create_model(cfg.model)
    x, y, m = models.dummy_inputs(cfg.model, batch=2)
    variables = models.abstract_variables(model, cfg.model)
    jaxpr = jax.make_jaxpr(lambda v: model.apply(
        v, x, y, m, train=True, rngs={"reparam": jax.random.key(1), "dropout": jax.random.key(2)},
        mutable=["batch_stats"]))(variables)
    text = str(jaxpr)
    counts[mode] = (len(re.findall(r"custom_vjp_call(?:_jaxpr)?\[", text)),
                    len(re.findall(r"window_strides=\(\d+, \d+\)", text)))
  for mode in ("taps/auto", "xla/auto"):
    n_custom, n_convs = counts[mode]
    assert n_custom == n_convs > 10, (mode, counts)
  assert counts["xla/xla"][0] == 0


def test_unknown_upsample_mode_and_composition():
  cfg = tiny_config("cvae")
  cfg.model.upsample_mode = "bilinear"
  with pytest.raises(ConfigError, match="upsample_mode='bilinear'"):
    config_lib.validate_config(cfg)
  cfg = tiny_config("discvae")
  cfg.model.composition = "additive"
  with pytest.raises(ConfigError, match="composition='additive'"):
    config_lib.validate_config(cfg)


def test_compositions_on_fixed_inputs():
  fg = jnp.array([[-1.0, -1.0, 0.5, 0.2]])
  gate = jnp.array([[1.0, 0.5, 0.0, 0.25]])
  bg = jnp.array([[0.9, 0.9, -0.3, 0.6]])
  # Reference: h_fg + g h_bg; where the foreground is black it cannot rise above 0 (mid-grey).
  np.testing.assert_allclose(models.compose(fg, gate, bg, "reference"),
                             [[-0.1, -0.55, 0.5, 0.35]], atol=1e-7)
  # Layered: (1 - g) h_fg + g h_bg; g = 1 shows the background as it is.
  np.testing.assert_allclose(models.compose(fg, gate, bg, "layered"),
                             [[0.9, -0.05, 0.5, 0.3]], atol=1e-7)


@pytest.mark.parametrize("composition", ["reference", "layered"])
def test_discvae_decode_composes_its_layers(composition):
  cfg = tiny_config("discvae")
  cfg.model.composition = composition
  model = models.create_model(cfg.model)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  y = jnp.asarray(np.random.default_rng(0).uniform(size=(3, cfg.model.y_dim)), jnp.float32)
  lat = {n: _normal(i, (3, d))
         for i, (n, d) in enumerate(model.latent_dims.items())}
  out = jax.jit(lambda v, l, y: model.apply(v, l, y, method="decode_latents"))(variables, lat, y)
  fg, g, bg = (np.asarray(out[k]) for k in ("foreground", "gate", "background"))
  expected = fg + g * bg if composition == "reference" else (1 - g) * fg + g * bg
  # The reference composite is pinned bit for bit; the layered one to float rounding.
  if composition == "reference":
    assert np.array_equal(np.asarray(out["mean"]), expected)
  else:
    np.testing.assert_allclose(out["mean"], expected, atol=1e-6)
    assert np.all(np.abs(np.asarray(out["mean"])) <= 1.0 + 1e-6)  # A convex blend.


@pytest.mark.parametrize("name", ["cvae", "discvae"])
def test_image_heads_run_in_float32_under_bf16_compute(name):
  """Was: tanh (and the log-variance head) in bf16, whose tanh is exactly +-1 from 3.5 on; a
  mean equal to a saturated target gives that pixel's log-variance a pull down only (the
  Gaussian NLL), where float32's tanh saturates only past 9."""
  cfg = tiny_config(name)
  cfg.model.dtype = "bfloat16"
  model = models.create_model(cfg.model)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  lat = {n: jnp.zeros((2, d)) for n, d in model.latent_dims.items()}
  y = jnp.zeros((2, cfg.model.y_dim))
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, lat, y, method="decode_latents"))(variables)

  def tanh_inputs(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "tanh":
        yield eqn.invars[0].aval.dtype
      for param in eqn.params.values():  # Inner jaxprs (pjit, custom_jvp, remat, ...).
        for sub in param if isinstance(param, (list, tuple)) else [param]:
          sub = getattr(sub, "jaxpr", sub)  # A ClosedJaxpr's.
          if hasattr(sub, "eqns"):
            yield from tanh_inputs(sub)
  dtypes = list(tanh_inputs(jaxpr.jaxpr))
  assert dtypes and all(d == jnp.float32 for d in dtypes), dtypes
  # The decoded images' dtypes, from the same trace (the trace fixes them; running the decoder
  # op by op compiled each bf16 primitive on its own, 2.5 s a model).
  assert all(a.dtype == jnp.float32 for a in jaxpr.out_avals), jaxpr.out_avals


@pytest.mark.parametrize("name", ["cvae", "discvae"])
def test_layers_on_raw_attributes_compute_in_float32_under_bf16(name):
  """Was: under bf16 compute the layers that read y rounded y itself to 8 significant bits
  (from 1024 to 2048 the step is 8): attributes 2000 and 2001 (a year) were one input, and
  the images and posteriors were the same whatever the weights had learnt."""
  cfg = tiny_config(name)
  cfg.model.dtype = "bfloat16"
  model = models.create_model(cfg.model)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  # Weights that have learnt the year's offset: each layer on y subtracts 2000 x the weights
  # of y's column 0 in its bias (the disCVAE background head reads [h_x; y; zF]).
  params = jax.tree.map(np.array, variables["params"])
  y_dim = cfg.model.y_dim
  layers = {"cvae": [("encoder", "y_embed", 0), ("decoder", "y_embed", 0)],
            "discvae": [("encoder_fg", "y_embed", 0), ("decoder_fg", "y_embed", 0),
                        ("encoder_bg_head", "Dense_0", -(y_dim + cfg.model.zf_dim))]}[name]
  for block, layer, row in layers:
    p = params[block][layer]
    p["bias"] = p["bias"] - 2000.0 * p["kernel"][row]
  variables = {**variables, "params": params}
  y = np.tile(np.random.default_rng(0).uniform(size=(3, y_dim)).astype(np.float32), (2, 1))
  y[:3, 0], y[3:, 0] = 2000.0, 2001.0  # Rows 3-5 are rows 0-2 a year later.
  x = np.tile(_uniform(1, (3, 32, 32, 3), -1.0, 1.0), (2, 1, 1, 1))
  lat = {n: np.tile(_normal(i, (3, d)), (2, 1))
         for i, (n, d) in enumerate(model.latent_dims.items())}

  def run(v, x, y, lat):
    out = model.apply(v, lat, y, method="decode_latents")
    if name == "cvae":
      return out, model.apply(v, x, y, method="encode")
    # zF given: the background posterior then reads the year through its own head only.
    mask = jnp.ones(x.shape[:3] + (1,))
    return out, model.apply(v, x, y, mask, z_fg=lat["z_fg"], method="encode")
  decoded, posterior = jax.jit(run)(variables, x, y, lat)
  keys = {"cvae": (["mean", "logvar"], ["mu"]),
          "discvae": (["foreground", "gate", "mean"], ["mu_fg", "mu_bg", "logvar_bg"])}[name]
  for out, names in zip((decoded, posterior), keys):
    for k in names:
      a = np.asarray(out[k], np.float32)
      assert np.any(a[:3] != a[3:]), f"{k}: the same for 2000 and 2001"


def test_decoded_images_are_clipped_to_the_picture_range():
  """Was: the reference disCVAE composite, which spans [-2, 2], decoded to [-0.5, 1.5] and was
  scored so, though the docstring said [0, 1] and a saved PNG clips."""
  from a2i_jax import sampling  # pylint: disable=import-outside-toplevel

  class Composite:  # What a reference disCVAE's decoder can return.
    image_layers = ("foreground", "gate", "background")

    def apply(self, variables, latents, y, method):
      one = jnp.ones((1, 2, 2, 3))
      return {"mean": jnp.array([-2.0, -0.5, 0.5, 2.0]).reshape(1, 2, 2, 1) * one,
              "foreground": one, "gate": one, "background": one}
  images = sampling.decode_images(Composite(), {}, {}, None)
  np.testing.assert_allclose(images["image"][0, :, :, 0], [[0.0, 0.25], [0.75, 1.0]])


# ----------------------------------------------------------------------------------------------
# BatchNorm: Torch's (docs/reference.md §2.8).

def _bn_batch():
  """A fixed [B, H, W, C] batch with per-channel offsets and scales (n = B H W = 30)."""
  x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
  return jnp.asarray(x * np.array([1.0, 2.0, 0.5, 3.0], np.float32)
                     + np.arange(4, dtype=np.float32))


def _bn_init(module, x):
  return module.init(jax.random.key(0), x)


def test_batch_norm_running_variance_is_torchs_unbiased_one():
  """One train-mode call: running mean 0.9 * 0 + 0.1 * mean, running variance 0.9 * 1 + 0.1 *
  (biased variance * n / (n - 1)), n = B H W, as Torch's BatchNormalization updates them."""
  x = _bn_batch()
  bn = models.BatchNorm(use_running_average=False)
  variables = _bn_init(bn, x)
  assert variables["batch_stats"]["mean"].dtype == jnp.float32
  _, state = bn.apply(variables, x, mutable=["batch_stats"])
  flat = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
  n = flat.shape[0]
  np.testing.assert_allclose(state["batch_stats"]["mean"], 0.1 * flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(state["batch_stats"]["var"],
                             0.9 + 0.1 * flat.var(0) * n / (n - 1), rtol=1e-5)


def test_batch_norm_train_outputs_are_flax_batch_norms():
  """Train mode normalises with the biased batch variance: nn.BatchNorm's outputs (f32 and
  bf16 compute), the same variables, the same running mean."""
  x = _bn_batch()
  for dtype in (jnp.float32, jnp.bfloat16):
    ours = models.BatchNorm(use_running_average=False, dtype=dtype)
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5,
                           scale_init=models.uniform(0.0, 1.0), bias_init=models.zeros,
                           dtype=dtype)
    variables = _bn_init(ours, x)
    ref_vars = _bn_init(flax_bn, x)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(ref_vars)
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(ref_vars)):
      np.testing.assert_array_equal(a, b)
    y, state = ours.apply(variables, x.astype(dtype), mutable=["batch_stats"])
    ref_y, ref_state = flax_bn.apply(variables, x.astype(dtype), mutable=["batch_stats"])
    assert y.dtype == ref_y.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref_y, np.float32),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(state["batch_stats"]["mean"], ref_state["batch_stats"]["mean"],
                               rtol=1e-6, atol=1e-7)


def test_batch_norm_eval_mode_uses_the_running_statistics():
  x = _bn_batch()
  bn = models.BatchNorm(use_running_average=True)
  variables = _bn_init(bn, x)
  mean, var = jnp.array([1.0, -2.0, 0.5, 3.0]), jnp.array([4.0, 0.25, 1.0, 9.0])
  variables = {"params": variables["params"], "batch_stats": {"mean": mean, "var": var}}
  y = bn.apply(variables, x)
  scale, bias = variables["params"]["scale"], variables["params"]["bias"]
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5) * scale + bias, rtol=1e-5,
                             atol=1e-6)
  # Eval mode leaves the running statistics alone.
  _, state = bn.apply(variables, x, mutable=["batch_stats"])
  np.testing.assert_array_equal(state["batch_stats"]["var"], var)


def test_model_batch_norms_keep_flax_names():
  """The models' BatchNorm layers keep nn.BatchNorm's automatic names and variables, so
  checkpoints written before restore."""
  cfg = tiny_config("cvae")
  variables = models.abstract_variables(models.create_model(cfg.model), cfg.model)
  trunk = variables["params"]["encoder"]["trunk"]
  assert {"BatchNorm_0", "BatchNorm_1", "BatchNorm_2"} <= set(trunk)
  assert set(trunk["BatchNorm_0"]) == {"scale", "bias"}
  assert set(variables["batch_stats"]["encoder"]["trunk"]["BatchNorm_0"]) == {"mean", "var"}


@pytest.mark.parametrize("name,tail,mode", [("cvae", "phase", "polyphase"),
                                            ("cvae", "full", "direct"),
                                            ("discvae", "phase", "polyphase"),
                                            ("discvae", "full", "polyphase")])
def test_eval_mode_folds_batchnorm_into_the_convolutions_to_the_same_function(
    name, tail, mode, monkeypatch):
  """`layers.conv_bn_relu` in eval mode with the BatchNorm folded into the convolution (the
  default, `perf.fold_batchnorm`): the same variables (names, shapes, initial values),
  outputs, and gradients with respect to the latents (posterior inference's) as the
  BatchNorm applied after it, with running statistics and BatchNorm parameters far from their
  initial values; and the folded program has fewer multiplications over feature maps."""
  assert all(perf.fold_batchnorm("auto", b) is True for b in ("cpu", "gpu", "tpu"))
  assert perf.fold_batchnorm("off", "gpu") is False
  with pytest.raises(ConfigError, match="fold_batchnorm='yes'"):
    perf.fold_batchnorm("yes")
  cfg = tiny_config(name)
  cfg.model.decoder_tail, cfg.model.upsample_mode = tail, mode
  model = models.create_model(cfg.model)
  init = {}
  for fold in ("off", "on"):
    monkeypatch.setattr(models.layers, "FOLD_BATCHNORM", fold)
    init[fold] = models.init_variables(model, cfg.model, jax.random.key(0))
  assert jax.tree_util.tree_structure(init["on"]) == jax.tree_util.tree_structure(init["off"])
  for a, b in zip(jax.tree_util.tree_leaves(init["on"]), jax.tree_util.tree_leaves(init["off"])):
    np.testing.assert_array_equal(a, b)
  # Statistics and BatchNorm parameters away from 0 and 1, so that a wrong fold shows.
  rng = np.random.default_rng(7)

  def moved(path, leaf):
    names = [getattr(p, "key", "") for p in path]
    if not any(str(n).startswith("BatchNorm") for n in names):
      return leaf
    if names[-1] == "var":
      return rng.uniform(0.3, 3.0, leaf.shape).astype(np.float32)
    return (np.asarray(leaf) + 0.5 * rng.standard_normal(leaf.shape)).astype(np.float32)
  variables = jax.tree_util.tree_map_with_path(moved, init["off"])
  x, y, m = models.dummy_inputs(cfg.model, batch=6)  # 6: no kernel's first dimension.
  x = _uniform(2, x.shape, minval=-1.0, maxval=1.0)
  y = _uniform(5, y.shape)
  rngs = {"reparam": jax.random.key(1), "dropout": jax.random.key(4)}
  latents = {n: mu for n, (mu, _) in jax.jit(lambda v: model.apply(
      v, x, y, m, method="encode_latents"))(variables).items()}

  def forward(v):
    return model.apply(v, x, y, m, train=False, rngs=rngs)

  def latent_grads(v):
    return jax.grad(lambda lat: jnp.sum(model.apply(
        v, lat, y, method="decode_latents")["mean"] ** 2))(latents)

  def both_folds(v):  # One program: each half traced under its own setting.
    results = {}
    for fold in ("off", "on"):
      monkeypatch.setattr(models.layers, "FOLD_BATCHNORM", fold)
      results[fold] = forward(v), latent_grads(v)
    return results
  results = jax.jit(both_folds)(variables)
  out, grads, muls = {}, {}, {}
  for fold in ("off", "on"):
    out[fold], grads[fold] = results[fold]
    monkeypatch.setattr(models.layers, "FOLD_BATCHNORM", fold)
    # Multiplications whose result is a feature map (the batch's 6 first, 4 or more
    # dimensions), nested ones too. A new function for each setting: JAX's trace caches key
    # on the function, not on the module-level setting read while tracing.
    muls[fold] = len(re.findall(r"\w+:f32\[6(?:,\d+){3,}\] = mul ",
                                str(jax.make_jaxpr(lambda v: forward(v))(variables))))
  assert set(out["on"]) == set(out["off"])
  for key in out["off"]:
    np.testing.assert_allclose(out["on"][key], out["off"][key], rtol=1e-4, atol=1e-5,
                               err_msg=key)
  for key in grads["off"]:
    np.testing.assert_allclose(grads["on"][key], grads["off"][key], rtol=1e-4,
                               atol=1e-5 * float(np.abs(grads["off"][key]).max()), err_msg=key)
  assert muls["on"] < muls["off"], muls
