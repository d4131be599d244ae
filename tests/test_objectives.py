"""Objectives against closed forms and direct numpy evaluations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from a2i_jax import numerics, objectives


def test_kl_of_standard_normal_is_zero():
  kl = objectives.gaussian_kl(jnp.zeros((3, 5)), jnp.zeros((3, 5)))
  np.testing.assert_allclose(kl, np.zeros(3), atol=1e-7)


def test_kl_closed_form():
  rng = np.random.default_rng(0)
  mu, logvar = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
  var = np.exp(logvar)
  # KL(N(mu, var) || N(0, 1)) = 0.5 (var + mu^2 - 1 - log var), summed per example.
  expected = 0.5 * (var + mu**2 - 1.0 - logvar).sum(-1)
  np.testing.assert_allclose(objectives.gaussian_kl(jnp.asarray(mu), jnp.asarray(logvar)),
                             expected, rtol=1e-5)


def test_kl_matches_monte_carlo():
  mu, logvar = np.array([[0.7, -1.2]]), np.array([[-0.5, 0.3]])
  rng = np.random.default_rng(1)
  std = np.exp(0.5 * logvar)
  z = mu + std * rng.normal(size=(200_000, 2))
  log_q = -0.5 * (((z - mu) / std) ** 2 + logvar + math.log(2 * math.pi))
  log_p = -0.5 * (z**2 + math.log(2 * math.pi))
  mc = (log_q - log_p).sum(-1).mean()
  assert abs(float(objectives.gaussian_kl(jnp.asarray(mu), jnp.asarray(logvar))[0]) - mc) < 0.02


def test_gaussian_nll_is_negative_log_density():
  rng = np.random.default_rng(2)
  x, mean, logvar = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3)), \
      rng.normal(size=(2, 4, 4, 3))
  var = np.exp(logvar)
  log_pdf = -0.5 * np.log(2 * np.pi * var) - (x - mean) ** 2 / (2 * var)
  np.testing.assert_allclose(
      objectives.gaussian_nll(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(logvar)),
      -log_pdf.reshape(2, -1).sum(-1), rtol=1e-5)


def test_smooth_l1_both_branches():
  pred = jnp.array([[0.0, 0.5, 2.0, -3.0]])
  target = jnp.zeros((1, 4))
  # 0, 0.5 * 0.25, 2 - 0.5, 3 - 0.5
  np.testing.assert_allclose(objectives.smooth_l1(pred, target), [0.125 + 1.5 + 2.5])


def test_bce_matches_torch_formula():
  p = jnp.array([[0.9, 0.2, 1.0]])
  t = jnp.array([[1.0, 0.0, 0.0]])
  expected = -(math.log(0.9 + 1e-12) + math.log(0.8 + 1e-12) + math.log(1e-12))
  np.testing.assert_allclose(objectives.binary_cross_entropy(p, t), [expected], rtol=1e-5)


def test_cvae_terms_bound_is_minus_nll_minus_kl():
  rng = np.random.default_rng(3)
  out = {"mean": jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 3))),
         "x_logvar": jnp.asarray(rng.normal(size=(2, 4, 4, 3))),
         "mu": jnp.asarray(rng.normal(size=(2, 5))), "logvar": jnp.asarray(rng.normal(size=(2, 5)))}
  x = jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 3)))
  t = objectives.cvae_terms(out, x)
  np.testing.assert_allclose(t["loss"], t["nll"] + t["kl"], rtol=1e-6)
  np.testing.assert_allclose(t["bound"], -t["loss"], rtol=1e-6)
  assert t["loss"].shape == (2,)


@pytest.mark.parametrize("weight", [0.0, 0.3])
def test_discvae_terms(weight):
  rng = np.random.default_rng(4)
  shape = (2, 4, 4, 3)
  fg, bg = rng.uniform(-1, 1, shape), rng.uniform(-1, 1, shape)
  gate = rng.uniform(0.01, 0.99, shape)
  logits = np.log(gate) - np.log1p(-gate)
  x = rng.uniform(-1, 1, shape)
  mask = (rng.uniform(size=(2, 4, 4, 1)) > 0.5).astype(np.float64)
  x_fg = (x + 1) * mask - 1
  out = {"foreground": fg, "gate": gate, "gate_logits": logits, "background": bg,
         "mean": fg + gate * bg,
         "x_fg": x_fg, "mu_fg": rng.normal(size=(2, 3)), "logvar_fg": rng.normal(size=(2, 3)),
         "mu_bg": rng.normal(size=(2, 2)), "logvar_bg": rng.normal(size=(2, 2))}
  out = {k: jnp.asarray(v) for k, v in out.items()}
  t = objectives.discvae_terms(out, jnp.asarray(x), jnp.asarray(mask), weight)

  def huber(d):
    d = np.abs(d)
    return np.where(d < 1, 0.5 * d**2, d - 0.5).reshape(2, -1).sum(-1)

  target = np.broadcast_to(1 - mask, shape)
  bce = -(target * np.log(gate + 1e-12) + (1 - target) * np.log(1 - gate + 1e-12))
  kl = lambda m, lv: 0.5 * (np.exp(lv) + m**2 - 1 - lv).sum(-1)
  expected = (huber(fg - x_fg) + huber(fg + gate * bg - x)
              + kl(np.asarray(out["mu_fg"]), np.asarray(out["logvar_fg"]))
              + kl(np.asarray(out["mu_bg"]), np.asarray(out["logvar_bg"]))
              + weight * bce.reshape(2, -1).sum(-1))
  np.testing.assert_allclose(t["loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(t["kl"], t["kl_fg"] + t["kl_bg"], rtol=1e-6)


def test_weighted_sums_ignore_padding():
  terms = {"loss": jnp.array([1.0, 2.0, 100.0])}
  assert float(objectives.weighted_sums(terms, jnp.array([1.0, 1.0, 0.0]))["loss"]) == 3.0
  assert float(objectives.weighted_sums(terms)["loss"]) == 103.0
  # A padding row that is not finite counts for nothing too (review finding: inf * 0 = NaN).
  for bad in (np.inf, np.nan):
    terms = {"loss": jnp.array([1.0, 2.0, bad])}
    assert float(objectives.weighted_sums(terms, jnp.array([1.0, 1.0, 0.0]))["loss"]) == 3.0


def test_bce_with_logits_matches_probability_form_unsaturated():
  rng = np.random.default_rng(5)
  logits = rng.normal(scale=4.0, size=(3, 4, 4, 3))
  t = rng.uniform(size=(3, 4, 4, 3))
  p = 1.0 / (1.0 + np.exp(-logits))
  np.testing.assert_allclose(
      objectives.binary_cross_entropy_with_logits(jnp.asarray(logits), jnp.asarray(t)),
      objectives.binary_cross_entropy(jnp.asarray(p), jnp.asarray(t)), rtol=1e-4)


def test_bce_with_logits_finite_where_the_sigmoid_saturates():
  # The logits that stopped the synthetic disCVAE: the gate rounds to exactly 1 or 0 in
  # float32 (|l| > ~17) and in bfloat16 (|l| > ~6), with targets on both sides.
  logits = jnp.array([[40.0, 40.0, -40.0, -40.0, 1e4, -1e4]], jnp.float32)
  t = jnp.array([[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]], jnp.float32)
  value = objectives.binary_cross_entropy_with_logits(logits, t)
  np.testing.assert_allclose(value, [40.0 + 40.0 + 1e4], rtol=1e-6)
  for dtype in (jnp.float32, jnp.bfloat16):
    g = jax.grad(lambda l: objectives.binary_cross_entropy_with_logits(l, t).sum())(
        logits.astype(dtype))
    assert np.all(np.isfinite(np.asarray(g, np.float32)))
    # d/dl = sigmoid(l) - t: the gradient keeps its size where the sigmoid saturates.
    np.testing.assert_allclose(np.asarray(g, np.float32), [[0.0, 1.0, -1.0, 0.0, 0.0, -1.0]],
                               atol=1e-6)


def test_bounded_exp_is_exp_in_range_and_finite_outside():
  x = jnp.array([-29.0, -3.0, 0.0, 2.5, 29.0], jnp.float32)
  assert np.array_equal(np.asarray(numerics.bounded_exp(x)), np.asarray(jnp.exp(x)))
  big = jnp.array([1e3, -1e3, 200.0], jnp.float32)
  assert np.all(np.isfinite(np.asarray(numerics.bounded_exp(big))))
  g = jax.grad(lambda v: numerics.bounded_exp(v).sum())(big)
  # Outside the range the gradient is still positive (it pulls the value back), not 0.
  assert np.all(np.asarray(g) > 0) and np.all(np.isfinite(np.asarray(g)))


def test_losses_stay_finite_for_runaway_log_variances():
  # A log-variance of +-1e4 overflows exp in float32; the bounded KL and NLL stay finite, and
  # their gradients push the log-variance back.
  lv = jnp.array([[1e4, -1e4]], jnp.float32)
  mu = jnp.zeros((1, 2))
  assert np.isfinite(float(objectives.gaussian_kl(mu, lv)[0]))
  g = jax.grad(lambda v: objectives.gaussian_kl(mu, v).sum())(lv)
  assert np.all(np.isfinite(np.asarray(g))) and float(g[0, 0]) > 0
  x = jnp.ones((1, 2, 2, 3))
  nll = objectives.gaussian_nll(x, jnp.zeros_like(x), jnp.full(x.shape, -1e4))
  assert np.isfinite(float(nll[0]))


def test_discvae_layered_foreground_target_is_the_image_on_the_foreground():
  rng = np.random.default_rng(6)
  shape = (2, 4, 4, 3)
  fg, bg, x = (rng.uniform(-1, 1, shape) for _ in range(3))
  gate = rng.uniform(0.01, 0.99, shape)
  mask = (rng.uniform(size=(2, 4, 4, 1)) > 0.5).astype(np.float64)
  out = {"foreground": fg, "gate": gate, "gate_logits": np.log(gate) - np.log1p(-gate),
         "background": bg, "mean": (1 - gate) * fg + gate * bg, "x_fg": (x + 1) * mask - 1,
         "mu_fg": rng.normal(size=(2, 3)), "logvar_fg": rng.normal(size=(2, 3)),
         "mu_bg": rng.normal(size=(2, 2)), "logvar_bg": rng.normal(size=(2, 2))}
  out = {k: jnp.asarray(v) for k, v in out.items()}
  d = np.abs(fg - x)
  huber = np.where(d < 1, 0.5 * d**2, d - 0.5)
  expected = (mask * huber).reshape(2, -1).sum(-1)
  t = objectives.discvae_terms(out, jnp.asarray(x), jnp.asarray(mask), 0.3, "layered")
  np.testing.assert_allclose(t["recon_fg"], expected, rtol=1e-5)
  # What the foreground layer draws under the background (mask 0) costs nothing.
  out2 = dict(out, foreground=jnp.asarray(np.where(mask > 0, fg, 0.77)))
  t2 = objectives.discvae_terms(out2, jnp.asarray(x), jnp.asarray(mask), 0.3, "layered")
  np.testing.assert_allclose(t2["recon_fg"], t["recon_fg"], rtol=1e-6)
  ref = objectives.discvae_terms(out, jnp.asarray(x), jnp.asarray(mask), 0.3, "reference")
  assert not np.allclose(ref["recon_fg"], t["recon_fg"])
  # recon_weight scales both reconstruction terms in the loss; the reported terms do not move.
  t3 = objectives.discvae_terms(out, jnp.asarray(x), jnp.asarray(mask), 0.3, "layered", 4.0)
  np.testing.assert_allclose(t3["loss"] - t["loss"], 3.0 * (t["recon_fg"] + t["recon"]),
                             rtol=1e-5)
  for name in ("recon_fg", "recon", "kl", "gate_bce"):
    np.testing.assert_allclose(t3[name], t[name], rtol=1e-6)


# The gradient norm of a huge but finite gradient (a fault hunt's: a CVAE at learning rate 1.0
# reached a loss of 2e16, max|g| 2.2e20): the float32 sum of squares overflows past a norm of
# ~1.8e19, and `train_state.global_norm` was inf.

def _overflowing_leaves():
  rng = np.random.default_rng(3)
  return {"a": (rng.normal(size=(30, 7)) * 3e19).astype(np.float32),
          "b": rng.normal(size=(5,)).astype(np.float32),
          "c": np.full((4, 4), 2.2e20, np.float32)}


@pytest.mark.parametrize("below", [None, 0, 50])
def test_global_norm_of_finite_leaves_whose_squares_overflow_is_finite(below):
  """Was inf: the train step refused the step, clipping scaled by max_norm / inf = 0."""
  from a2i_jax import train_state  # pylint: disable=import-outside-toplevel
  leaves = _overflowing_leaves()
  exact = math.sqrt(sum(float((x.astype(np.float64) ** 2).sum()) for x in leaves.values()))
  norm_of = jax.jit(lambda t: train_state.global_norm(t, concat_below=below))
  norm = norm_of(leaves)
  assert norm.dtype == jnp.float32
  np.testing.assert_allclose(float(norm), exact, rtol=1e-6)
  clipped, before = jax.jit(lambda t: train_state.clip_by_global_norm(t, 1e4))(leaves)
  np.testing.assert_allclose(float(before), exact, rtol=1e-6)
  np.testing.assert_allclose(float(norm_of(clipped)), 1e4, rtol=1e-5)
  # A NaN or an infinity in a leaf (on its own or in the concatenation) still gives a norm
  # that is not finite.
  for name, bad in (("a", np.nan), ("c", np.inf), ("b", -np.inf)):
    value = leaves[name].copy()
    value.flat[1] = bad
    assert not np.isfinite(float(norm_of(dict(leaves, **{name: value}))))
  assert float(norm_of({"a": np.array([3.0, 4.0], np.float32)})) == 5.0
  empty = {"e": np.zeros((0,), np.float32), "a": np.array([3e20, 4e20], np.float32)}
  np.testing.assert_allclose(float(norm_of(empty)), 5e20, rtol=1e-6)  # A zero-size leaf.


def _huge_gradient_step(monkeypatch, clip, loss_of=lambda w: 2e20 * jnp.sum(w), start=1.0):
  """`train_lib.make_train_step` of a toy loss, by default `2e20 * sum(w)` (each gradient
  2e20, the norm 4e20; the loss finite), without a model: the step's clipping, finite check
  and Adam."""
  from a2i_jax import config_lib, train_lib, train_state  # pylint: disable=import-outside-toplevel

  def loss_fn(params, batch_stats, x, y, m, rngs):
    loss = loss_of(params["w"])
    return {"loss": loss, "nll": loss}, {}, batch_stats
  monkeypatch.setattr(train_lib, "_make_loss_fn", lambda model, config: loss_fn)
  monkeypatch.setattr(train_lib, "_step_inputs",
                      lambda batch, key, config: (batch["x"], None, None, {}))
  config = config_lib.get_config("synthetic:cvae")
  config.grad_clip_norm = clip
  tx = train_state.make_optimizer(config)
  params = {"w": jnp.full((4,), start, jnp.float32)}
  state = train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                                 opt_state=tx.init(params))
  step = jax.jit(train_lib.make_train_step(None, tx, config))
  return state, step(state, {"x": jnp.zeros((2, 1))}, jax.random.PRNGKey(0))


def test_a_step_with_huge_finite_gradients_is_clipped_and_taken(monkeypatch):
  """Was refused ("gradient norm inf"), so config.grad_clip_norm, which the divergence error
  advises, could not help."""
  old, (new, metrics) = _huge_gradient_step(monkeypatch, 1e4)
  assert bool(metrics["finite"])
  np.testing.assert_allclose(float(metrics["grad_norm"]), 4e20, rtol=1e-6)
  assert int(new.step) == 1
  assert not np.allclose(new.params["w"], old.params["w"])
  for leaf in jax.tree_util.tree_leaves(new):
    assert np.isfinite(np.asarray(leaf, np.float64)).all()
  # A finite loss whose gradient is infinite (sqrt at 0) is refused, clipping or not: clip /
  # inf is 0, and 0 x inf a NaN in every parameter.
  old, (new, metrics) = _huge_gradient_step(monkeypatch, 1e4, lambda w: jnp.sum(jnp.sqrt(w)),
                                            start=0.0)
  assert np.isfinite(float(metrics["loss"])) and not bool(metrics["finite"])
  np.testing.assert_array_equal(new.params["w"], old.params["w"])


def test_an_unclipped_step_past_the_norm_limit_is_refused_in_words(monkeypatch, tmp_path):
  """Without clipping Adam's float32 squares of 2e20 would be inf (those parameters frozen for
  good: the step was taken once the norm was finite), so the step is refused, its norm
  reported finite (was inf), and the error says so (was "the loss became NaN or infinite")."""
  from a2i_jax import config_lib, train_lib  # pylint: disable=import-outside-toplevel
  old, (new, metrics) = _huge_gradient_step(monkeypatch, 0.0)
  assert not bool(metrics["finite"])
  np.testing.assert_allclose(float(metrics["grad_norm"]), 4e20, rtol=1e-6)
  assert int(new.step) == 0
  np.testing.assert_array_equal(new.params["w"], old.params["w"])
  config = config_lib.get_config("synthetic:cvae")
  words = lambda loss, norm: train_lib._gradient_overflow_error(  # pylint: disable=protected-access
      loss, norm, config, 7, None, str(tmp_path))
  message = str(words(metrics["loss"], metrics["grad_norm"]))
  assert message.startswith("the gradient norm reached 4e+20 at step 7 (the loss, ")
  assert "is finite" in message and "set config.grad_clip_norm (e.g. 1e4)" in message
  assert "NaN" not in message
  config.grad_clip_norm = 1e30  # A limit above the overflow: lower it.
  assert "lower config.grad_clip_norm (1e+30)" in str(words(metrics["loss"], metrics["grad_norm"]))
  # A loss or norm that is not finite is the term report's to describe.
  assert words(np.float32(np.nan), metrics["grad_norm"]) is None
  assert words(metrics["loss"], np.float32(np.inf)) is None
