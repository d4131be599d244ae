"""End-to-end training on tiny configs: every model, multi-device equivalence, resume, and the
errors a user can hit."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from a2i_jax import (checkpoints, config_lib, metrics, models, parallel, progress,
                     train_eval, train_lib, train_state)
from a2i_jax.data import Dataset, Split, load_dataset, pipeline
from a2i_jax.errors import (CheckpointError, ConfigError, DataError, DatasetNotPreparedError,
                            TrainingDivergedError)
from conftest import NUM_DEVICES, tiny_config


def _leaves_close(a, b, atol):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


def _copy_of(workdir, tmp_path):
  """A copy of a shared run's workdir (conftest's tiny_run), to resume or damage."""
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  return copy


@pytest.mark.parametrize("name", ["vae", "cvae", "discvae"])
def test_one_training_run_writes_everything(name, data_cache, tiny_run):
  cfg = tiny_config(name, data_cache)
  workdir, returned_step = tiny_run(name)  # train_and_evaluate(cfg, workdir) (conftest).
  assert returned_step == 2
  assert checkpoints.Checkpointer(workdir).all_steps() == [2]
  assert checkpoints.load_config(workdir).model.name == name
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  train_rows = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2]
  assert all(np.isfinite(r["train/loss"]) and r["train/images_per_s"] > 0 for r in train_rows)
  assert any("val/loss" in r for r in rows) and "compile_time_s" in rows[0]
  if name == "discvae":
    assert {"train/gate_bce", "train/kl_fg", "train/kl_bg"} <= set(train_rows[0])
  else:
    assert {"train/bound", "train/nll", "train/kl"} <= set(train_rows[0])
  assert os.path.exists(os.path.join(workdir, "samples", "step_0000002.png"))
  events = os.listdir(os.path.join(workdir, "tensorboard"))
  assert b"samples" in open(os.path.join(workdir, "tensorboard", events[0]), "rb").read()
  assert len({r["step"] for r in rows}) == len(rows)  # One row per step.
  info = checkpoints.load_dataset_info(workdir)
  assert info["name"] == "synthetic" and info["header"] == info["attribute_names"]
  assert len(info["attribute_ranges"]) == len(info["attribute_kinds"]) == cfg.model.y_dim
  assert all(lo <= hi for lo, hi in info["attribute_ranges"])
  # Every checkpoint carries the checksums of its files.
  assert os.path.exists(os.path.join(workdir, "checkpoints", "2", checkpoints.CHECKSUM_FILE))


def test_four_devices_equal_one_device(data_cache):
  """Same global batch on a 4-device and a 1-device mesh: the same step (BatchNorm
  statistics are over the global batch in both).

  The disCVAE alone: its step holds every layer the CVAE's does (an encoder of x and y, a
  decoder, BatchNorm over the sharded batch) and more; the CVAE's case took 9 s of the
  suite's time on the oldest pins for no path of its own (2026-12-05). The CVAE trains on
  the 4-device mesh in conftest's tiny run.

  The optimiser is plain SGD here: Adam's first step is lr * sign(g), and biases feeding a
  BatchNorm have a true gradient of 0, so their rounding noise (1e-9) would flip the sign of
  a 3e-4 update. Everything before the optimiser is the train step under test.
  """
  name = "discvae"
  cfg = tiny_config(name, data_cache)
  # The per-tap weight gradients, sharded ("auto" on a CPU whose convolutions run in YNNPACK's
  # kernels), and the "full" decoder tail: the forms "auto" gives on such a CPU.
  cfg.model.conv_weight_grad, cfg.model.decoder_tail = "taps", "full"
  train = load_dataset(cfg.data)["train"]
  batch = {"images": train.images[:8], "attributes": train.attributes[:8]}
  if name == "discvae":
    batch["masks"] = train.masks[:8]
  model = models.create_model(cfg.model)
  tx = optax.sgd(1e-4)
  state0 = train_state.create_train_state(model, cfg, tx, jax.random.key(0))
  step = jax.jit(train_lib.make_train_step(model, tx, cfg))
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_mesh(devices)
    state = parallel.put_replicated(state0, mesh)
    b = parallel.put_batch(batch, mesh)
    assert len(b["images"].sharding.device_set) == len(devices)
    results.append(jax.device_get(step(state, b, jax.random.key(1))))
  (s1, m1), (s4, m4) = results
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-5)
  _leaves_close(s1.batch_stats, s4.batch_stats, atol=1e-5)
  _leaves_close(s1.params, s4.params, atol=1e-5)
  # The step really changed the parameters (the comparison is not vacuous).
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(s1.params),
                                                 jax.tree_util.tree_leaves(state0.params))]
  assert sum(moved) > len(moved) // 2


def _as_legacy_checkpoint(workdir, cfg, step):
  """Rewrites checkpoint `step` of `workdir` with the optimiser state laid out per parameter
  leaf, as versions before 2026-12-01 saved it (`train_state.legacy_optimizer`)."""
  model = models.create_model(cfg.model)
  abstract = train_state.abstract_train_state(model, cfg, train_state.make_optimizer(cfg))
  ckpt = checkpoints.Checkpointer(workdir)
  state = ckpt.restore(abstract, step)
  ckpt.close()
  decay, (adam, scale) = state.opt_state
  params = state.params
  sizes = np.cumsum([x.size for x in jax.tree_util.tree_leaves(params)])[:-1]
  unravel = lambda v: jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(params),
      [a.reshape(x.shape) for a, x in zip(np.split(np.asarray(v), sizes),
                                          jax.tree_util.tree_leaves(params))])
  legacy = (decay, adam._replace(mu=unravel(adam.mu), nu=unravel(adam.nu)), scale)
  shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  ckpt = checkpoints.Checkpointer(workdir)
  ckpt.save(step, state.replace(opt_state=legacy))
  ckpt.close()
  return legacy


def test_resume_equals_uninterrupted(tmp_path, data_cache, tiny_run, watched_run, caplog,
                                    monkeypatch):
  cfg = tiny_config("cvae", data_cache)
  cfg.num_train_steps = 4
  # Each checkpoint's rows are synced to the disk before it is saved (was: flushed only).
  events = []
  sync, save = metrics.MetricWriter.sync, checkpoints.Checkpointer.save
  monkeypatch.setattr(metrics.MetricWriter, "sync", lambda self: (
      events.append(("sync", self._last["step"])), sync(self)))  # pylint: disable=protected-access
  monkeypatch.setattr(checkpoints.Checkpointer, "save", lambda self, step, state: (
      events.append(("save", step)), save(self, step, state))[1])
  # The run that never stopped: this config's (its progress bar on, which changes no number).
  full = watched_run["state"]
  # The first half: the same config with num_train_steps = 2 (conftest's tiny run); resumed
  # as saved, and saved with the optimiser state per leaf, as before it became one vector per
  # moment: the resume converts that one, and both go on exactly as the run that never
  # stopped.
  for layout in ("flat", "per_leaf"):
    half = str(tmp_path / layout)
    shutil.copytree(tiny_run("cvae")[0], half)
    assert checkpoints.Checkpointer(half).latest_step() == 2
    if layout == "per_leaf":
      legacy = _as_legacy_checkpoint(half, cfg, 2)
      assert len(jax.tree_util.tree_leaves(legacy)) > 5
    caplog.clear()
    resumed = train_lib.train_and_evaluate(cfg, half)
    converted = "keeps the optimiser state per parameter" in caplog.text
    assert converted == (layout == "per_leaf")
    assert int(resumed.step) == 4
    _leaves_close(full.params, resumed.params, atol=1e-6)
    _leaves_close(full.opt_state, resumed.opt_state, atol=1e-6)
    steps = [json.loads(l).get("step") for l in open(os.path.join(half, "metrics.jsonl"))
             if "train/loss" in l]
    assert steps == [1, 2, 3, 4]
    assert events[events.index(("save", 4)) - 1] == ("sync", 4), events
    events.clear()


def test_the_optimiser_is_the_per_leaf_adam_on_one_vector():
  """`make_optimizer` runs Adam on all parameters as one vector; its updates are those of
  the per-leaf chain (`legacy_optimizer`) to the last bit or two (XLA fuses the same
  arithmetic differently for one vector), and `flat_opt_state` maps one state to the other."""
  cfg = tiny_config()
  tx, old = train_state.make_optimizer(cfg), train_state.legacy_optimizer(cfg)
  rng = np.random.default_rng(0)
  shapes = {"conv": (3, 3, 4, 8), "bias": (8,), "bn": {"scale": (5,), "bias": (5,)}, "one": ()}
  params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32),
                                  shapes, is_leaf=lambda s: isinstance(s, tuple))
  n = sum(x.size for x in jax.tree_util.tree_leaves(params))
  s_new, s_old = tx.init(params), old.init(params)
  assert sorted(x.shape for x in jax.tree_util.tree_leaves(s_new)) == [(), (n,), (n,)]
  update_new, update_old = jax.jit(tx.update), jax.jit(old.update)
  for _ in range(3):
    g = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    u_new, s_new = update_new(g, s_new, params)
    u_old, s_old = update_old(g, s_old, params)
    for a, b in zip(jax.tree_util.tree_leaves(u_new), jax.tree_util.tree_leaves(u_old)):
      assert a.shape == b.shape
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
    params = optax.apply_updates(params, u_new)
  converted = train_state.flat_opt_state(s_old)
  assert jax.tree_util.tree_structure(converted) == jax.tree_util.tree_structure(s_new)
  for a, b in zip(jax.tree_util.tree_leaves(converted), jax.tree_util.tree_leaves(s_new)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_cache, monkeypatch,
                                                       tiny_run):
  cfg = tiny_config("cvae", data_cache)
  good = load_dataset(cfg.data)
  poisoned = Dataset(good.name, good.attribute_names, good.attribute_kinds, {
      **good.splits, "train": Split(good["train"].images,
                                    np.full_like(good["train"].attributes, 3e38),
                                    good["train"].masks)})
  with monkeypatch.context() as patch:  # Before the first checkpoint: no "step None".
    patch.setattr(train_lib, "load_dataset", lambda *_: poisoned)
    with pytest.raises(TrainingDivergedError, match="at step 1 .*There is no checkpoint yet: "
                                                    "rerunning starts from scratch"):
      train_lib.train_and_evaluate(cfg, str(tmp_path / "early"))
  workdir = _copy_of(tiny_run("cvae")[0], tmp_path)  # Trained to step 2 with good data.
  monkeypatch.setattr(train_lib, "load_dataset", lambda *_: poisoned)
  cfg.num_train_steps = 4
  with pytest.raises(TrainingDivergedError,
                     match=r"at step 3 \(terms .*kl .* are not finite\).*last good checkpoint is "
                           "step 2"):
    train_lib.train_and_evaluate(cfg, workdir)
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  report = [l for l in lines if "diverged/loss/value" in l]
  assert len(report) == 1 and report[0]["step"] == 3
  ckpt = checkpoints.Checkpointer(workdir)
  assert ckpt.all_steps() == [2]
  model = models.create_model(cfg.model)
  abstract = train_state.abstract_train_state(model, cfg, train_state.make_optimizer(cfg))
  restored = ckpt.restore(abstract)
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(restored))


def test_a_divergence_between_checkpoints_saves_the_last_good_state(tmp_path, data_cache,
                                                                    monkeypatch, tiny_run):
  """Resumed at step 2 (its checkpoint), step 3 trains on clean rows, step 4 on poisoned ones:
  the state after step 3, the last good one, is saved before the error names it. Was: the
  run stopped without saving, and step 3 was lost."""
  cfg = tiny_config("cvae", data_cache)
  cfg.num_train_steps, cfg.checkpoint_every_steps = 6, 6
  good = load_dataset(cfg.data)
  # The rows step 3 draws, as the loop draws them: from the state at step 2
  # (train_lib.make_multi_step).
  k_train = jax.random.split(jax.random.key(cfg.seed), 4)[1]
  k_batch = jax.random.split(jax.random.fold_in(k_train, 2))[0]
  n = len(good["train"].attributes)
  clean = np.asarray(pipeline.sample_batch(k_batch, {"images": jnp.arange(n)},
                                           cfg.batch_size)["images"])
  attributes = np.full_like(good["train"].attributes, 3e38)
  attributes[clean] = good["train"].attributes[clean]
  poisoned = Dataset(good.name, good.attribute_names, good.attribute_kinds, {
      **good.splits, "train": Split(good["train"].images, attributes, good["train"].masks)})
  workdir = _copy_of(tiny_run("cvae")[0], tmp_path)  # Trained to step 2 with good data.
  monkeypatch.setattr(train_lib, "load_dataset", lambda *_: poisoned)
  with pytest.raises(TrainingDivergedError,
                     match=r"at step 4 \(.*last good checkpoint is step 3 in "):
    train_lib.train_and_evaluate(cfg, workdir)
  ckpt = checkpoints.Checkpointer(workdir)
  assert ckpt.all_steps() == [2, 3]
  model = models.create_model(cfg.model)
  abstract = train_state.abstract_train_state(model, cfg, train_state.make_optimizer(cfg))
  restored = ckpt.restore(abstract)
  ckpt.close()
  assert int(restored.step) == 3
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(restored))


def test_divergence_report_names_the_overflowed_term(data_cache, monkeypatch):
  # Inject an overflow into one term: the gate head's bias at +inf (the gate's logits
  # overflowed). The composite stays finite (gate = 1), so only the gate's BCE may be named.
  # And, for the report only, a term whose partial derivative is infinite at an output the
  # other terms share (the square root of mu_fg - mu_fg = 0): its gradient is NaN, and it must
  # not reach the other terms' gradients, as a zero cotangent through it would (0 x inf).
  cfg = tiny_config("discvae", data_cache)
  mesh = parallel.make_mesh()
  model = models.create_model(cfg.model)
  tx = train_state.make_optimizer(cfg)
  state = train_state.create_train_state(model, cfg, tx, jax.random.key(0))
  convs = sorted((k for k in state.params["decoder_fg"] if k.startswith("Conv_")),
                 key=lambda k: int(k.split("_")[1]))
  gate_head = convs[-1]
  params = jax.tree_util.tree_map(lambda a: a, state.params)
  params["decoder_fg"][gate_head]["bias"] = jnp.full_like(
      params["decoder_fg"][gate_head]["bias"], jnp.inf)
  state = state.replace(params=params)
  split = load_dataset(cfg.data)["train"]
  data = {"images": split.images, "attributes": split.attributes.astype(np.float32),
          "masks": split.masks}
  data, state = parallel.put_replicated((data, state), mesh)  # As train_lib places them.
  loss_terms = type(model).loss_terms
  with monkeypatch.context() as patch:
    patch.setattr(type(model), "loss_terms", lambda self, outputs, x, m: {
        **loss_terms(self, outputs, x, m),
        "kink": jnp.sqrt(outputs["mu_fg"] - outputs["mu_fg"]).sum(axis=-1)})
    report = jax.device_get(train_lib.make_term_report(model, cfg, mesh)(
        state, data, jax.random.key(1)))
  assert report["kink"][0] == 0 and np.isnan(report["kink"][1])
  report.pop("kink")
  bad = {n for n, (v, g) in report.items() if not (np.isfinite(v) and np.isfinite(g))}
  assert bad == {"loss", "gate_bce"}
  message = train_eval.describe_divergence(report)
  assert message.startswith("term gate_bce (value nan") and message.endswith("is not finite")
  # And the train step itself reports which term's value is not finite, and refuses the step.
  # train.py's own dispatch, so that it is the program of the session's tiny disCVAE run
  # (conftest.tiny_run), compiled once for both through the persistent cache.
  step = train_lib.jit_train_steps(model, tx, cfg, mesh)
  new_state, metrics = step(state, data, jax.random.key(1))
  metrics = jax.device_get(metrics)
  assert not metrics["finite"][0] and int(new_state.step) == 0
  assert {n for n, f in metrics["term_finite"].items() if not f[0]} == {"loss", "gate_bce"}
  # The report's gradients are the step's: the total's norm is the step's (before clipping),
  # from the same batch and noise.
  np.testing.assert_allclose(report["loss"][1], metrics["grad_norm"][0], rtol=1e-5)
  assert np.isinf(metrics["max_abs/gate_logits"][0])


@pytest.mark.parametrize("key, value", [("z_dim", 10**7), ("z_dim", 10**8)])
def test_a_model_past_the_hosts_memory_is_one_config_error(tmp_path, data_cache, key, value):
  """Was: z_dim=1e7 drew for a minute, then "the host ran out of memory ... ask for less: a
  smaller dataset or --config.batch_size"; 1e8 hung in XLA's compile of the init program (the
  host's NumPy evaluation failing over to it), deaf to SIGTERM (a review). Now refused from the
  trace's shapes before anything is drawn, naming the sizes to change; no checkpoint made."""
  cfg = tiny_config("cvae", data_cache)
  cfg.model[key] = value
  with pytest.raises(ConfigError, match=r"^the model's [\d,]+ variables do not fit in this "
                     r"machine's memory \(the initial values take [\d,.]+ GiB, more than this "
                     r"machine's [\d,.]+ GiB of memory\); make the model smaller \(config."
                     r"model.z_dim, zf_dim, zb_dim, y_dim or width\)"):
    train_lib.train_and_evaluate(cfg, str(tmp_path / "w"))
  assert not checkpoints.has_checkpoints(str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / checkpoints.CONFIG_FILE)


def test_batch_not_divisible_by_devices(tmp_path, data_cache):
  cfg = tiny_config("cvae", data_cache)
  cfg.batch_size = 6
  with pytest.raises(ConfigError, match=f"not divisible by the {NUM_DEVICES} devices"):
    train_lib.train_and_evaluate(cfg, str(tmp_path))


def test_the_entry_points_cache_programs_of_a_quarter_second(monkeypatch):
  """files.enable_compilation_cache keeps programs that compile in 0.25 s or more (a model's
  init program, 0.5-2 s, missed JAX's default of 1 s), unless the user's environment says."""
  from a2i_jax import files  # pylint: disable=import-outside-toplevel
  folder = jax.config.jax_compilation_cache_dir  # The session's: the same folder again.
  before = jax.config.jax_persistent_cache_min_compile_time_secs
  try:
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    files.enable_compilation_cache(folder)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == files.MIN_CACHED_COMPILE_S
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 3.0)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "3")
    files.enable_compilation_cache(folder)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 3.0
  finally:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before)


def test_a_second_call_moves_the_cache_and_an_empty_folder_turns_it_off(tmp_path, caplog):
  """Fault hunt (a notebook's calls): JAX opens its cache once, so a second
  enable_compilation_cache with another folder changed the setting alone (every program went
  on to the first folder), "" did not turn it off, and a folder that could not be used was
  said to leave every program compiled anew while the first folder kept them."""
  from a2i_jax import files  # pylint: disable=import-outside-toplevel
  folder = jax.config.jax_compilation_cache_dir
  first, second = tmp_path / "first", tmp_path / "second"
  entries = lambda f: len(os.listdir(f)) if f.exists() else 0
  compiled = iter(range(1, 100))

  def compile_one():  # A program no cache holds: another constant each time.
    k = float(next(compiled)) + 0.5
    jax.jit(lambda x: jnp.sin(x) * k + k).lower(jnp.zeros((3,), jnp.float32)).compile()
  try:
    files.enable_compilation_cache(str(first))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compile_one()
    kept = entries(first)
    assert kept >= 1
    files.enable_compilation_cache(str(second))
    compile_one()
    assert entries(second) >= 1 and entries(first) == kept
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    with caplog.at_level("WARNING"):
      files.enable_compilation_cache(str(blocker / "xla"))
    assert f"programs are kept in {second} as before" in caplog.text
    files.enable_compilation_cache("")
    assert jax.config.jax_compilation_cache_dir is None
    was = entries(second)
    compile_one()
    assert entries(second) == was and entries(first) == kept
  finally:
    files._use_cache_folder(folder)  # pylint: disable=protected-access


def test_a_cache_folder_that_cannot_be_made_leaves_the_cache_off(tmp_path, caplog):
  """One warning line, the cache left as it was, nothing made. Were JAX's two-line Python
  warnings for every program, the run going on without the cache."""
  from a2i_jax import files  # pylint: disable=import-outside-toplevel
  folder = jax.config.jax_compilation_cache_dir
  blocker = tmp_path / "file"
  blocker.write_text("mine")
  files.enable_compilation_cache(str(blocker / "xla"))
  assert jax.config.jax_compilation_cache_dir == folder
  warned = [r for r in caplog.records if "cannot be used" in r.getMessage()]
  assert len(warned) == 1 and f"{blocker} is a file" in warned[0].getMessage()
  assert blocker.read_text() == "mine"


def test_the_cache_follows_an_off_setting_and_drops_the_entries_a_full_disk_emptied(
    tmp_path, monkeypatch, caplog):
  """Review findings: JAX takes JAX_COMPILATION_CACHE_DIR as its own setting, so "" (off) left
  the cache on there, and a file there got JAX's warnings besides ours; JAX writes entries in
  place, and one a full disk left empty warned at every later run, never written again; a
  relative XDG_CACHE_HOME hung the start (a loop that never reached "/")."""
  from a2i_jax import files  # pylint: disable=import-outside-toplevel
  folder = jax.config.jax_compilation_cache_dir
  env = tmp_path / "jax_env"
  try:
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(env))
    jax.config.update("jax_compilation_cache_dir", str(env))  # As JAX reads it at import.
    files.enable_compilation_cache("")
    assert jax.config.jax_compilation_cache_dir is None
    env.write_text("a file")
    jax.config.update("jax_compilation_cache_dir", str(env))
    files.enable_compilation_cache(files.DEFAULT_COMPILATION_CACHE_DIR)
    assert jax.config.jax_compilation_cache_dir is None and "cannot be used" in caplog.text
    cache = tmp_path / "xla"
    cache.mkdir()
    for name, text in (("jit_a-1-cache", ""), ("jit_b-2-cache", "x"), (".lockfile", "")):
      (cache / name).write_text(text)
    files.enable_compilation_cache(str(cache))
    assert sorted(os.listdir(cache)) == [".lockfile", "jit_b-2-cache"]
  finally:
    jax.config.update("jax_compilation_cache_dir", folder)
  monkeypatch.setenv("XDG_CACHE_HOME", "~/.cache")  # Relative: ignored, as XDG says.
  assert files.user_cache_dir() == os.path.expanduser("~/.cache/a2i_jax")
  assert files.nearest_existing("no/such/folder") == os.getcwd()


def test_the_default_cache_folders_follow_the_users_environment(tmp_path, monkeypatch, caplog):
  """The default compilation cache ignored JAX_COMPILATION_CACHE_DIR and XDG_CACHE_HOME; a
  probe cache that could not be written made every start measure again (10 s) without a word
  (review findings)."""
  from a2i_jax import files, perf  # pylint: disable=import-outside-toplevel
  folder = jax.config.jax_compilation_cache_dir
  try:
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_env"))
    files.enable_compilation_cache(files.DEFAULT_COMPILATION_CACHE_DIR)
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax_env")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    files.enable_compilation_cache(files.DEFAULT_COMPILATION_CACHE_DIR)
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xdg" / "a2i_jax" / "xla")
  finally:
    jax.config.update("jax_compilation_cache_dir", folder)
  assert perf._default_flag_cache() == str(tmp_path / "xdg" / "a2i_jax" / "xla_flags.json")
  (tmp_path / "file").write_text("")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # Nothing can be made there.
  fallback = perf._default_flag_cache()  # pylint: disable=protected-access
  assert fallback.startswith(tempfile.gettempdir()) and fallback.endswith("xla_flags.json")
  assert os.stat(os.path.dirname(fallback)).st_mode & 0o777 == 0o700
  # This user's folder there made open (by an earlier version) is made private; a link or a
  # file in its place (or another user's folder) keeps no answers.
  monkeypatch.setattr(perf.tempfile, "gettempdir", lambda: str(tmp_path / "shared"))
  mine = tmp_path / "shared" / f"a2i_jax-{os.getuid()}"
  os.makedirs(mine)
  os.chmod(mine, 0o777)
  assert perf._default_flag_cache() == str(mine / "xla_flags.json")
  assert os.stat(mine).st_mode & 0o777 == 0o700
  os.rmdir(mine)
  os.symlink(tmp_path / "elsewhere", mine)
  os.makedirs(tmp_path / "elsewhere")
  assert perf._default_flag_cache() == ""  # pylint: disable=protected-access
  assert "not this user's private folder" in caplog.text
  target = str(tmp_path / "file" / "answers.json")
  for _ in range(2):
    perf._write_cache(target, {"a": 1})  # pylint: disable=protected-access
  said = [r.getMessage() for r in caplog.records if f"cannot be kept in {target}" in
          r.getMessage()]
  assert len(said) == 1 and "XDG_CACHE_HOME" in said[0], said


def test_the_variable_that_named_the_platform_is_the_one_named(monkeypatch):
  """JAX_PLATFORM_NAME=gpu on a machine without one was told to unset JAX_PLATFORMS, which it
  had not set (fault hunt). In process: JAX's failure stood in for, its backends started."""
  from a2i_jax import distributed  # pylint: disable=import-outside-toplevel

  def fail():
    raise RuntimeError("Unknown backend: 'gpu' requested, but no platforms that are "
                       "instances of gpu are present. Platforms present are: cpu.")
  monkeypatch.setattr(distributed.jax, "devices", fail)
  monkeypatch.setenv("JAX_PLATFORM_NAME", "gpu")
  with pytest.raises(ConfigError, match="^JAX could not start its backend \\(JAX_PLATFORM_NAME="
                     "gpu\\): Unknown backend: 'gpu' requested.*Unset JAX_PLATFORM_NAME or "):
    distributed.start_backend()
  # JAX_PLATFORMS's platforms failed to start (no backend then): that one is named.
  monkeypatch.setattr(distributed, "_backends_ready", lambda: False)
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  with pytest.raises(ConfigError, match="\\(JAX_PLATFORMS=cuda\\): .*Unset JAX_PLATFORMS or "):
    distributed.start_backend()


def test_the_environment_a_user_may_set(tmp_path):
  """JAX_PLATFORMS naming a platform this machine lacks was JAX's traceback; JAX_ENABLE_X64
  turned the augmentation and the latents into float64 (and changed the reported bound);
  PYTHONWARNINGS=error made train.py say "the command line could not be parsed" (review
  findings)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env}, cwd=root)
  r = run("from a2i_jax import distributed\ntry:\n  distributed.start_backend()\n"
          "except Exception as e:\n  print(type(e).__name__, e)", JAX_PLATFORMS="nowhere")
  assert r.stdout.startswith("ConfigError JAX could not start its backend (JAX_PLATFORMS="
                             "nowhere): ") and "Unset JAX_PLATFORMS" in r.stdout, r
  # JAX_ENABLE_X64=1 sets this option as JAX is imported: set here in this process (was a
  # Python started with the variable, 1.3 s of imports), and put back.
  from a2i_jax import sampling  # pylint: disable=import-outside-toplevel
  x64 = jax.config.jax_enable_x64
  try:
    jax.config.update("jax_enable_x64", True)
    cfg = config_lib.get_config(os.path.join(root, "configs", "synthetic.py"))
    x, _ = pipeline.augment(jax.random.key(0), jnp.zeros((2, 8, 8, 3), jnp.uint8), None,
                            cfg.data.augment)
    z = sampling.prior_latents(models.create_model(cfg.model), 2, jax.random.key(0))
    seen = [jax.config.jax_enable_x64, str(x.dtype), *[str(v.dtype) for v in z.values()]]
  finally:
    jax.config.update("jax_enable_x64", x64)
  assert seen == [True, "float32", "float32"], seen
  r = subprocess.run([sys.executable, "train.py", "--config=configs/synthetic.py",
                      f"--workdir={tmp_path / 'w'}", "--config.num_train_steps=0"],
                     capture_output=True, text=True, timeout=120, cwd=root,
                     env={**os.environ, "PYTHONWARNINGS": "error", "A2I_HUGE_PAGES": "0"})
  assert r.stderr.strip() == "error: config.num_train_steps=0 must be a positive integer.", r


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory, data_cache):
  """`train_and_evaluate` of the tiny CVAE for 4 steps from scratch, its training bar, log
  lines and barriers recorded: {"state": the state it returned, "drawn": the bar's counts
  where it was drawn, "events": "bar" where the bar was made among the log lines' starts,
  "barriers": the names of the barriers it passed}. Shared by
  test_a_logged_progress_bar_updates_rarely (the records) and
  test_resume_equals_uninterrupted (the run that never stopped); was a run of each (the
  progress bar's of 6 steps)."""
  import tqdm  # pylint: disable=import-outside-toplevel
  drawn, events, barriers, info = [], [], [], train_lib.logging.info

  class Counted(tqdm.tqdm):  # pylint: disable=too-many-ancestors
    def __init__(self, *args, **kwargs):
      events.append("bar")
      super().__init__(*args, **kwargs)

    def display(self, *args, **kwargs):
      drawn.append(self.n)
      return super().display(*args, **kwargs)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tqdm, "tqdm", Counted)
    # The compile's line comes before the bar (was after its "0%|", on the same line; review).
    patch.setattr(train_lib.logging, "info", lambda message, *args: (
        events.append(message.split(" in ")[0]), info(message, *args)))
    # Longer than any run: with the 30 s itself the test failed on a machine slow enough to
    # take 30 s for 6 steps (a review found the hidden threshold).
    patch.setattr(progress, "LOGGED_INTERVAL_S", 1e6)
    # And every process waits for the others' compile before the first dispatch (a review:
    # a resume whose process 0 loaded the program from the cache met gloo's 30 s limit).
    patch.setattr(train_lib.distributed, "barrier", lambda name, *_, **__: barriers.append(name))
    cfg = tiny_config("cvae", data_cache)
    cfg.num_train_steps, cfg.log_every_steps, cfg.progress_bar = 4, 1, True
    state = train_lib.train_and_evaluate(  # pytest's stderr is no terminal.
        cfg, str(tmp_path_factory.mktemp("watched")))
  return {"state": state, "drawn": drawn, "events": events, "barriers": barriers}


def test_a_logged_progress_bar_updates_rarely(watched_run):
  """The training bar updated ten times a second into a file or pipe too, and again at every
  log step: a job's log got tens of thousands of updates in one line (review findings). The
  run is `watched_run`'s: 4 steps, each logged."""
  drawn, events = watched_run["drawn"], watched_run["events"]
  assert drawn == [0, 4], drawn  # Its start and its end.
  assert events.index("train step compiled") < events.index("bar"), events
  assert watched_run["barriers"] == ["the train step's compilation"], watched_run["barriers"]


def test_unknown_config_key_and_bad_values(tmp_path, data_cache):
  cfg = tiny_config("cvae", data_cache)
  cfg.unlock()
  cfg.learning_rat = 1e-3
  with pytest.raises(ConfigError, match="'learning_rat' does not exist.*'learning_rate'"):
    train_lib.train_and_evaluate(cfg, str(tmp_path))
  cfg = tiny_config("cvae", data_cache)
  cfg.model.name = "gan"
  with pytest.raises(ConfigError, match="unknown model.name='gan'"):
    train_lib.train_and_evaluate(cfg, str(tmp_path))
  cfg = tiny_config("cvae", data_cache)
  cfg.model.image_size = 64
  with pytest.raises(ConfigError, match="model.image_size=64"):
    train_lib.train_and_evaluate(cfg, str(tmp_path))


def test_wrong_attribute_length_in_data(tmp_path, data_cache):
  """A dataset whose count the config decides is checked before the load; the loaded data of
  any dataset (a folder's) against y_dim after it."""
  from a2i_jax.data import base, load_dataset  # pylint: disable=import-outside-toplevel
  cfg = tiny_config("cvae", data_cache)
  cfg.model.y_dim += 3
  with pytest.raises(ConfigError, match="the synthetic data have 10 attributes; pass "
                     "--config.model.y_dim=10"):
    train_lib.train_and_evaluate(cfg, str(tmp_path))
  assert not os.listdir(tmp_path)
  with pytest.raises(DataError, match="attribute vectors have length 10, but the model expects 13"):
    base.validate_split(load_dataset(cfg.data)["train"], image_size=32, num_attributes=13)


def test_changed_model_in_existing_workdir(tmp_path, data_cache, tiny_run):
  cfg = tiny_config("cvae", data_cache)
  workdir = _copy_of(tiny_run("cvae")[0], tmp_path)  # train_and_evaluate(cfg, workdir).
  cfg.model.z_dim = 12
  with pytest.raises(ConfigError, match="different config.model"):
    train_lib.train_and_evaluate(cfg, workdir)
  cfg.model.z_dim = 8
  cfg.data.synthetic.seed = 1
  with pytest.raises(ConfigError, match="different config.data.synthetic"):
    train_lib.train_and_evaluate(cfg, workdir)
  # Keys that neither shape the checkpoint nor change the data may differ on resume.
  cfg.data.synthetic.seed = 0
  cfg.data.augment.max_sharpen = 0.5
  cfg.num_train_steps = 4
  assert int(train_lib.train_and_evaluate(cfg, workdir).step) == 4


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, data_cache, tiny_run):
  cfg = tiny_config("cvae", data_cache)
  workdir = pathlib.Path(_copy_of(tiny_run("cvae")[0], tmp_path))  # train_and_evaluate(cfg, ...)
  for root, _, files in os.walk(workdir / "checkpoints" / "2"):
    for f in files:
      if f != checkpoints.CHECKSUM_FILE:
        with open(os.path.join(root, f), "wb") as fh:
          fh.write(b"garbage")
  cfg.num_train_steps = 4
  # The only checkpoint is corrupt: an error, and nothing is moved or trained.
  with pytest.raises(CheckpointError, match="checkpoint 2 in .* is corrupt .*changed since it "
                                            "was saved.* no older checkpoint is intact"):
    train_lib.train_and_evaluate(cfg, str(workdir))
  assert checkpoints.Checkpointer(str(workdir)).all_steps() == [2]
  # Without checksums (a checkpoint from before they existed), Orbax's failure is the error
  # when no older checkpoint restores either, and nothing is moved.
  os.remove(workdir / "checkpoints" / "2" / checkpoints.CHECKSUM_FILE)
  with pytest.raises(checkpoints.RestoreError, match="no checkpoint in .* could be restored: "
                     "step\\(s\\) 2, saved without checksums, failed"):
    train_lib.train_and_evaluate(cfg, str(workdir))
  assert checkpoints.Checkpointer(str(workdir)).all_steps() == [2]


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  cfg = tiny_config("cvae")
  model = models.create_model(cfg.model)
  abstract = train_state.abstract_train_state(model, cfg, train_state.make_optimizer(cfg))
  with pytest.raises(CheckpointError, match="no checkpoint in"):
    checkpoints.Checkpointer(str(tmp_path)).restore(abstract)


@pytest.mark.parametrize("name,first", [("lfw", "lfw-funneled.tgz"), ("cub", "CUB_200_2011.tgz")])
def test_real_datasets_say_they_are_not_prepared(name, first, tmp_path):
  cfg = config_lib.get_config(name)
  cfg.compilation_cache_dir = ""
  cfg.data.data_dir = str(tmp_path / "data")
  cfg.data.download = False  # Tests never touch the network.
  with pytest.raises(DatasetNotPreparedError, match=f"missing: {first}"):
    train_lib.train_and_evaluate(cfg, str(tmp_path))
  assert not os.path.exists(tmp_path / "config.json")  # The workdir stays free for any config.


def test_optimizer_matches_reference_update():
  """Adam on g + 0.004 theta with lr 3e-4 (utils/adam_v2.lua), one step by hand."""
  cfg = tiny_config()
  tx = train_state.make_optimizer(cfg)
  theta = jnp.array([1.0, -2.0, 0.5])
  g = jnp.array([10.0, 0.1, -3.0])
  updates, _ = tx.update(g, tx.init(theta), theta)
  gt = g + 0.004 * theta
  m, v = 0.1 * gt, 0.001 * gt**2
  expected = -3e-4 * (m / 0.1) / (jnp.sqrt(v / 0.001) + 1e-8)
  np.testing.assert_allclose(updates, expected, rtol=1e-5)


def test_the_global_norm_sums_the_leaves_as_one_vector():
  """`global_norm` is optax's norm. By default every leaf joins one concatenated vector (on
  XLA:CPU each leaf's own reduction compiles into kernels of its own); with `concat_below`
  only the leaves under that size do, and 0 reduces every leaf on its own."""
  rng = np.random.default_rng(0)
  tree = {"conv": rng.normal(size=(3, 3, 64, 128)).astype(np.float32),  # 73,728 elements.
          "bias": [rng.normal(size=(n,)).astype(np.float32) for n in (1, 64, 300)],
          "bn": {"scale": rng.normal(size=(64,)).astype(np.float32)},
          "big": rng.normal(size=(1 << 16,)).astype(np.float32)}
  norm = lambda t, below=None: train_state.global_norm(t, concat_below=below)
  for below in (None, 0, 1 << 16):
    np.testing.assert_allclose(norm(tree, below), optax.tree.norm(tree), rtol=1e-6)
  count = lambda jaxpr, name: sum(e.primitive.name == name for e in jaxpr.jaxpr.eqns)
  concats = lambda jaxpr: [e.outvars[0].aval.shape for e in jaxpr.jaxpr.eqns
                           if e.primitive.name == "concatenate"]
  default = jax.make_jaxpr(norm)(tree)  # The train step's: one vector, one reduction.
  assert count(default, "reduce_sum") == 1
  assert concats(default) == [(73728 + 1 + 64 + 300 + 64 + (1 << 16),)]
  apart = jax.make_jaxpr(lambda t: norm(t, 0))(tree)
  assert count(apart, "reduce_sum") == 6 and not concats(apart)
  joined = jax.make_jaxpr(lambda t: norm(t, 1 << 16))(tree)
  assert count(joined, "reduce_sum") == 3  # "conv", "big", and the four small together.
  assert concats(joined) == [(1 + 64 + 300 + 64,)]
  assert float(norm({})) == 0.0 and float(norm({}, 1 << 16)) == 0.0
  nan = dict(tree, bias=[np.array([np.nan], np.float32)])
  assert not np.isfinite(float(norm(nan))) and not np.isfinite(float(norm(nan, 1 << 16)))


def test_gradient_clipping_is_off_by_default_and_clips_when_set(data_cache):
  grads = {"a": jnp.array([-3e4, 0.0]), "b": jnp.array([[4e4]])}  # Global norm 5e4.
  same, norm = train_state.clip_by_global_norm(grads, 0.0)
  assert float(norm) == pytest.approx(5e4) and same is grads
  clipped, norm = train_state.clip_by_global_norm(grads, 5e2)
  assert float(norm) == pytest.approx(5e4)
  np.testing.assert_allclose(clipped["a"], [-300.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(clipped["b"], [[400.0]], rtol=1e-6)
  small, _ = train_state.clip_by_global_norm(grads, 1e6)  # Under the limit: unchanged.
  np.testing.assert_allclose(small["a"], grads["a"])
  cfg = tiny_config("cvae", data_cache)
  assert cfg.grad_clip_norm == 0.0
  tx = train_state.make_optimizer(cfg)
  model = models.create_model(cfg.model)
  # The optimiser state (and so a checkpoint) has the same structure with clipping on.
  on = tiny_config("cvae", data_cache)
  on.grad_clip_norm = 10.0
  s_off = train_state.abstract_train_state(model, cfg, tx)
  s_on = train_state.abstract_train_state(model, on, train_state.make_optimizer(on))
  assert jax.tree_util.tree_structure(s_off) == jax.tree_util.tree_structure(s_on)
  on.grad_clip_norm = -1.0
  with pytest.raises(ConfigError, match="grad_clip_norm=-1.0"):
    config_lib.validate_config(on)


def test_finished_run_returns_without_training(tmp_path, data_cache, tiny_run):
  cfg = tiny_config("cvae", data_cache)
  workdir = _copy_of(tiny_run("cvae")[0], tmp_path)  # train_and_evaluate(cfg, workdir) ran.
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = f.read()
  again = train_lib.train_and_evaluate(cfg, workdir)
  assert int(again.step) == 2
  # It returns the finished run's state (its last checkpoint) and trains nothing more.
  model = models.create_model(cfg.model)
  saved = checkpoints.Checkpointer(workdir).restore(
      train_state.abstract_train_state(model, cfg, train_state.make_optimizer(cfg)))
  _leaves_close(saved.params, again.params, atol=0)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert f.read() == rows


def test_logged_means_weigh_every_step_once(tmp_path, data_cache, monkeypatch, tiny_run):
  """A log window of one 2-step dispatch and one single step (the end of a run that 2 does
  not divide): the logged loss is the mean over its 3 steps. A stand-in train dispatch
  reports each step's number as its loss and leaves the model alone. Was: the mean of the
  dispatches' means, 6.25 for steps 5-7."""
  def fake_steps(model, tx, config, mesh, steps=None):
    del model, tx, mesh
    n = config.steps_per_dispatch if steps is None else steps

    def run(state, data, key):
      del data, key
      loss = (state.step + 1 + jnp.arange(n)).astype(jnp.float32)
      ok = jnp.ones(n, bool)
      return state.replace(step=state.step + n), {"loss": loss, "finite": ok,
                                                  "term_finite": {"loss": ok}}
    return jax.jit(run)

  # The shared run first: built under the stand-in (where this test is the session's first
  # to ask for it), it logged no loss terms, and test_one_training_run_writes_everything
  # failed on it.
  workdir = _copy_of(tiny_run("cvae")[0], tmp_path)  # Resumed at step 2: 3-4, 5-6, then 7.
  monkeypatch.setattr(train_lib, "jit_train_steps", fake_steps)
  cfg = tiny_config("cvae", data_cache)
  cfg.num_train_steps, cfg.steps_per_dispatch = 7, 2
  cfg.log_every_steps, cfg.eval_every_steps, cfg.checkpoint_every_steps = 4, 8, 8
  train_lib.train_and_evaluate(cfg, workdir)
  rows = {r["step"]: r for r in [json.loads(l) for l in open(os.path.join(workdir,
                                                                           "metrics.jsonl"))]}
  assert rows[4]["train/loss"] == 3.5 and rows[7]["train/loss"] == 6.0


def test_logged_images_per_second_leave_out_evaluation_and_compile_time():
  """A log window with an evaluation inside it counted only the time after the evaluation for
  all of its steps: about twice the rate (review finding: 550 against 116-317 images/s). The
  window's clock now leaves the evaluation (and a compile) out, and nothing else."""
  now = [0.0]
  window = train_lib._TrainWindow(batch_size=8, clock=lambda: now[0])
  ones = lambda n: {"loss": np.ones(n), "finite": np.ones(n, bool)}
  now[0] = 2.0
  window.add(2, ones(2))  # Steps 1-2 in 2 s.
  now[0] = 102.0
  window.exclude(100.0)  # An evaluation at step 2, 100 s.
  now[0] = 104.0
  window.add(2, ones(2))  # Steps 3-4 in 2 s.
  row = window.read()
  assert row == {"train/loss": 1.0, "train/images_per_s": 4 * 8 / 4.0, "train/steps": 4}
  now[0] = 110.0  # The next window starts at the read: 6 s, one step.
  window.add(1, ones(1))
  assert window.read()["train/images_per_s"] == 8 / 6.0


def test_logged_max_abs_is_the_windows_largest():
  """"train/max_abs/<output>" is the largest |value| an output reached in the log window, not
  the mean of each step's largest (which hid the one step of fifty that came close to an
  overflow: fault hunt); the loss stays the mean, and a NaN stays NaN."""
  window = train_lib._TrainWindow(batch_size=8)
  window.add(2, {"loss": np.array([1.0, 3.0]), "max_abs/logvar": np.array([2.0, 19.0]),
                 "finite": np.ones(2, bool)})
  window.add(1, {"loss": np.array([5.0]), "max_abs/logvar": np.array([4.0]),
                 "finite": np.ones(1, bool)})
  row = window.read()
  assert row["train/loss"] == 3.0 and row["train/max_abs/logvar"] == 19.0
  window.add(1, {"loss": np.array([1.0]), "max_abs/logvar": np.array([np.nan])})
  window.add(1, {"loss": np.array([1.0]), "max_abs/logvar": np.array([1.0])})
  assert np.isnan(window.read()["train/max_abs/logvar"])  # A new window, the NaN kept.


def test_bfloat16_compute_trains(tmp_path, data_cache):
  """The precision policy for TPU / GPU: bf16 compute, float32 parameters and optimiser."""
  cfg = tiny_config("discvae", data_cache)
  cfg.model.dtype = "bfloat16"
  cfg.model.conv_weight_grad = "taps"  # bf16 through the per-tap weight gradients.
  state = train_lib.train_and_evaluate(cfg, str(tmp_path))
  leaves = jax.tree_util.tree_leaves((state.params, state.opt_state))
  assert all(a.dtype in (jnp.float32, jnp.int32) for a in leaves)
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)


@pytest.mark.parametrize("key,value,match", [
    ("model.width", 0.0, r"model.width=0.0 must be > 0"),
    ("model.z_dim", 0, r"model.z_dim=0 must be a positive integer"),
    ("discvae:model.zb_dim", -1, r"model.zb_dim=-1 must be a positive integer"),
    ("model.image_size", 48, r"model.image_size=48 is not supported"),
    ("model.upsample_mode", "bilinear", r"model.upsample_mode='bilinear' is not one of"),
    ("model.dtype", "float64", r"model.dtype='float64' is not a compute dtype"),
    ("model.conv_weight_grad", "fast", r"model.conv_weight_grad='fast'"),
    ("data.name", "mnist", r"data.name='mnist'; choose one of synthetic"),
    ("data.image_size", 20, r"data.image_size=20 is not supported"),
    ("data.synthetic.num_test", 0, r"num_test=0; every split needs"),
    ("data.resize", "pad", r"data.resize='pad'; choose one of centre_crop, stretch"),
    ("data.cub_attributes", "certainty", r"data.cub_attributes='certainty'"),
    ("data.mask_net.depth", 6, r"mask_net.resolution=32 does not divide by 2\*\*depth"),
    ("data.mask_net.steps", 0, r"mask_net.steps=0 must be a positive integer"),
    ("data.mask_net.seed", 2**31, r"mask_net.seed=2147483648; pass a whole number from 0"),
    ("data.augment.crop_size", 40, r"crop_size=40 must be 0 \(no crop\) or at most"),
    ("batch_size", 0, r"config.batch_size=0 must be a positive integer"),
    ("num_eval_examples", 0, r"num_eval_examples=0; use a positive count or -1"),
    ("num_sample_rows", 0, r"num_sample_rows=0 must be a positive integer"),
    ("num_sample_cols", 0, r"num_sample_cols=0 must be a positive integer"),
    # Was: trained, then XLA aborted at the first evaluation, and at every resume (review).
    ("num_sample_cols", 10**7, r"num_sample_rows x num_sample_cols = [\d,]+ samples per grid"),
    ("max_checkpoints_to_keep", 0, r"max_checkpoints_to_keep=0 must be a positive integer"),
    # Was: trained past 2**31 - 1 steps, the int32 step wrapped to negative, and every later
    # resume refused the checkpoints as corrupt (a review).
    ("num_train_steps", 2**31, r"num_train_steps=2,147,483,648 is past the largest step "
     r"count, 2,147,483,647 \(the train state counts steps in int32\)"),
    ("checkpoint_every_steps", 2**40, r"checkpoint_every_steps=1,099,511,627,776 is past"),
    ("adam_b2", 0.99999999, r"adam_b2=0.99999999 is 1.0 in float32"),
    ("learning_rate", 0.0, r"learning_rate=0.0 must be > 0"),
    ("adam_b2", 1.0, r"adam_b2=1.0 must be in \[0, 1\)"),
    ("grad_clip_norm", -1.0, r"grad_clip_norm=-1.0 must be >= 0"),
    ("attribute_predictor.width", 0, r"attribute_predictor.width=0 must be a positive"),
    ("inference.restarts", 0, r"inference.restarts=0 is not valid"),
])
def test_bad_config_values_fail_before_anything_is_written(key, value, match, tmp_path):
  model, _, key = key.rpartition(":")  # "discvae:model.zb_dim": a key only that model reads.
  cfg = tiny_config(model or "cvae", str(tmp_path / "cache"))
  section = cfg
  *parents, leaf = key.split(".")
  for part in parents:
    section = section[part]
  section[leaf] = value
  with pytest.raises(ConfigError, match=match):
    config_lib.validate_config(cfg)
  workdir = tmp_path / "w"
  with pytest.raises(ConfigError, match=match):
    train_lib.train_and_evaluate(cfg, str(workdir))
  assert not workdir.exists() and not (tmp_path / "cache").exists()


def test_keys_the_model_does_not_read_are_not_checked():
  """A CVAE config's disCVAE keys change nothing (`config_lib.MODEL_KEY_USERS`); resuming and
  train.py's overrides pass them over too. Was: zf_dim=0 refused a CVAE."""
  cfg = tiny_config("cvae")
  cfg.model.zf_dim, cfg.model.zb_dim, cfg.model.gate_loss_weight = 0, -1, -1.0
  cfg.model.recon_weight, cfg.model.composition = 0.0, "none"
  config_lib.validate_config(cfg)
  cfg = tiny_config("discvae")
  cfg.model.z_dim = 0
  config_lib.validate_config(cfg)
  cfg.model.composition = "none"
  with pytest.raises(ConfigError, match="model.composition='none' is not one of"):
    config_lib.validate_config(cfg)


def test_same_config_mistake_same_error_everywhere(tmp_path, data_cache):
  """A value a loader also checks raises the one ConfigError from the config and the loader."""
  from a2i_jax.data import face_masks, synthetic  # pylint: disable=import-outside-toplevel
  cfg = tiny_config("cvae", data_cache)
  cfg.data.synthetic.seed = -1
  with pytest.raises(ConfigError) as from_config:
    config_lib.validate_config(cfg)
  with pytest.raises(ConfigError) as from_loader:
    synthetic.load(image_size=32, num_train=4, num_validation=2, num_test=2, seed=-1)
  assert str(from_config.value) == str(from_loader.value)
  cfg = tiny_config("cvae", data_cache)
  cfg.data.mask_net.learning_rate = 0.0
  with pytest.raises(ConfigError) as from_config:
    config_lib.validate_config(cfg)
  with pytest.raises(ConfigError) as from_options:
    face_masks.MaskNetConfig.from_config(learning_rate=0.0)
  assert str(from_config.value) == str(from_options.value)
  cfg = tiny_config("cvae", data_cache)
  cfg.model.upsample_mode = "bilinear"
  with pytest.raises(ConfigError) as from_config:
    config_lib.validate_config(cfg)
  with pytest.raises(ConfigError) as from_model:  # The layer checks it when the model is built.
    models.init_variables(models.create_model(cfg.model), cfg.model, jax.random.key(0))
  assert str(from_config.value) == str(from_model.value)


def test_mask_net_options_come_from_the_config():
  from a2i_jax.data import face_masks  # pylint: disable=import-outside-toplevel
  defaults = config_lib.reference_config().data.mask_net
  assert face_masks.MaskNetConfig.from_config() == face_masks.MaskNetConfig(**defaults)
  assert face_masks.MaskNetConfig.from_config(defaults, steps=5).steps == 5


def test_every_dataset_configs_discvae_composes_in_layers():
  """docs/design.md §3.12: the dataset configs turn on the layered composition for every
  disCVAE (configs/folder.py kept the reference's mid-grey background; review finding)."""
  for name in ("synthetic", "lfw", "cub", "folder"):
    assert config_lib.get_config(f"{name}:discvae").model.composition == "layered", name
  assert config_lib.reference_config().model.composition == "reference"


def test_folder_y_dim_zero_is_the_csv_column_count(tmp_path, caplog):
  cfg = config_lib.get_config("folder")
  cfg.data.path = str(tmp_path)
  assert cfg.model.y_dim == 0
  config_lib.validate_config(cfg)  # 0 means "count the columns" for folder datasets only.
  synthetic_cfg = tiny_config("cvae")
  synthetic_cfg.model.y_dim = 0
  with pytest.raises(ConfigError, match="model.y_dim=0 must be a positive integer"):
    config_lib.validate_config(synthetic_cfg)
  cfg.model.y_dim = -2
  with pytest.raises(ConfigError, match="model.y_dim=-2 must be 0"):
    config_lib.validate_config(cfg)
  cfg.model.y_dim = 0
  split = Split(np.zeros((2, 4, 4, 3), np.uint8), np.array([[0, 1, 5], [1, 0, 7]], np.float32))
  dataset = Dataset("folder", ("red", "round", "size"), ("binary", "binary", "continuous"),
                    {"train": split, "validation": split, "test": split})
  resolved = train_eval.resolve_config(cfg, dataset)
  assert resolved.model.y_dim == 3 and cfg.model.y_dim == 0
  # dataset.json: written for a new run; on resume the attributes are realigned by name.
  (tmp_path / "attributes.csv").write_text("filename,red,round,size,split\n")
  workdir = str(tmp_path / "w")
  train_eval.record_dataset(workdir, dataset, str(tmp_path), resumed=False)
  info = checkpoints.load_dataset_info(workdir)
  assert info["header"] == ["filename", "red", "round", "size", "split"]
  assert info["attribute_ranges"] == [[0.0, 1.0], [0.0, 1.0], [5.0, 7.0]]
  (tmp_path / "attributes.csv").write_text("filename,round,red,size,split\n")
  with caplog.at_level("WARNING"):
    train_eval.record_dataset(workdir, dataset, str(tmp_path), resumed=True)
  assert not [r for r in caplog.records if r.levelname == "WARNING"]
  assert checkpoints.load_dataset_info(workdir)["header"][1] == "red"  # The record is kept.
  swapped = Dataset("folder", ("round", "red", "size"), ("binary", "binary", "continuous"),
                    {k: Split(split.images, split.attributes[:, [1, 0, 2]])
                     for k in ("train", "validation", "test")})
  assert train_eval.align_with_record(workdir, swapped) is swapped  # No checkpoint yet.
  os.makedirs(os.path.join(workdir, "checkpoints", "2"))
  aligned = train_eval.align_with_record(workdir, swapped)
  assert aligned.attribute_names == ("red", "round", "size")
  np.testing.assert_array_equal(aligned["train"].attributes, split.attributes)
  renamed = Dataset("folder", ("red", "blue", "size"), dataset.attribute_kinds, dataset.splits)
  with pytest.raises(DataError, match="not those the model was trained with"):
    train_eval.align_with_record(workdir, renamed)
  assert checkpoints.load_dataset_info(str(tmp_path / "none")) is None


def test_the_record_is_left_alone_where_it_does_not_apply(tmp_path, caplog):
  """`align_with_record` returns the dataset itself for a run without dataset.json (trained
  before it existed) or trained on another dataset (the resume check names the key); a resume
  whose header moved logs one INFO line naming both headers and keeps the record."""
  split = Split(np.zeros((2, 4, 4, 3), np.uint8), np.array([[0, 1, 5], [1, 0, 7]], np.float32))
  kinds = ("binary", "binary", "continuous")
  make = lambda name, names, header: Dataset(name, names, kinds, {k: split for k in (
      "train", "validation", "test")}, {"header": header})
  dataset = make("folder", ("red", "round", "size"), ["file", "red", "round", "size"])
  workdir = str(tmp_path / "w")
  os.makedirs(os.path.join(workdir, "checkpoints", "2"))
  swapped = make("folder", ("round", "red", "size"), ["file", "round", "red", "size"])
  assert train_eval.align_with_record(workdir, swapped) is swapped  # No dataset.json.
  train_eval.record_dataset(workdir, dataset, "", resumed=True)  # Written when missing.
  assert checkpoints.load_dataset_info(workdir)["header"] == ["file", "red", "round", "size"]
  other = make("synthetic", ("a", "b", "c"), ["a", "b", "c"])
  assert train_eval.align_with_record(workdir, other) is other
  assert train_eval.align_with_record(workdir, swapped).attribute_names == dataset.attribute_names
  caplog.clear()  # The warning of the resume without dataset.json (its own test).
  with caplog.at_level("INFO"):
    train_eval.record_dataset(workdir, dataset, "", resumed=True)
    assert not caplog.records  # The same header: nothing to say.
    train_eval.record_dataset(workdir, swapped, "", resumed=True)
  (line,) = [r.getMessage() for r in caplog.records]
  assert line.startswith("the dataset's columns moved since this run started (['file', 'red', "
                         "'round', 'size'] then, ['file', 'round', 'red', 'size'] now)"), line
  assert checkpoints.load_dataset_info(workdir)["header"] == ["file", "red", "round", "size"]


def test_quiet_orbax_drops_asyncio_reports_of_orbax_failures_only():
  """A failed restore's sibling reads reach asyncio's shutdown, which logs "_GatheringFuture
  exception was never retrieved" with the exception (and its traceback) attached, not in the
  message: dropped when the traceback passes through Orbax, kept otherwise."""
  import logging  # pylint: disable=import-outside-toplevel

  def record_of(filename):
    try:
      exec(compile("raise ValueError('Requested shape')", filename, "exec"))  # pylint: disable=exec-used
    except ValueError as e:
      exc_info = (ValueError, e, e.__traceback__)
    return logging.LogRecord("asyncio", logging.ERROR, "base_events.py", 1, "_GatheringFuture "
                             "exception was never retrieved", None, exc_info)
  orbax_file = os.path.join(checkpoints._ORBAX_DIR, "orbax", "serialization.py")  # pylint: disable=protected-access
  quiet = checkpoints.QuietOrbaxFilter()
  assert not quiet.filter(record_of(orbax_file))
  assert quiet.filter(record_of(os.path.join(os.path.dirname(__file__), "elsewhere.py")))
  # quiet_orbax also silences the warnings for the read coroutines such a restore leaves
  # unawaited, and only those (the filters and the hook are restored afterwards).
  import sys  # pylint: disable=import-outside-toplevel
  import warnings  # pylint: disable=import-outside-toplevel
  hook = sys.unraisablehook
  try:
    with warnings.catch_warnings(record=True) as seen:
      warnings.simplefilter("always")
      checkpoints.quiet_orbax(logging.Handler())
      warnings.warn("coroutine '_read_array' was never awaited", RuntimeWarning)
      warnings.warn("something else", RuntimeWarning)
    assert [str(w.message) for w in seen] == ["something else"]
  finally:
    sys.unraisablehook = hook


def test_sample_grid_compiles_the_sampler_and_nothing_eager(data_cache, tmp_path, caplog):
  """The evaluation's sample grid prepares the validation images and attributes on the host:
  done with jnp, each step compiled an eager program per shape in every train.py process,
  nine of them (BENCHMARKS.md, "Eager programs at the first evaluation")."""
  from a2i_jax import perf, sampling  # pylint: disable=import-outside-toplevel
  cfg = tiny_config("cvae", data_cache)
  # 3 rows and 3 columns, sizes no other test uses: JAX keeps an eager program for the rest
  # of the process, so one compiled earlier for the same shapes would not be logged here.
  cfg.num_sample_rows = cfg.num_sample_cols = 3
  dataset = load_dataset(cfg.data)
  model = models.create_model(cfg.model)
  variables = models.init_variables(model, cfg.model, jax.random.key(0))
  sample_fn = perf.jit(sampling.make_sample_fn(model))
  caplog.set_level("WARNING")
  with jax.log_compiles(True):
    grid = train_eval.write_samples(model, sample_fn, variables, dataset, cfg,
                                    str(tmp_path / "grid.png"), jax.random.key(1))
  compiled = [m.split()[1] for m in caplog.messages if m.startswith("Compiling ")]
  assert compiled == ["jit(sample)"], compiled
  assert grid.dtype == np.uint8 and (tmp_path / "grid.png").exists()
