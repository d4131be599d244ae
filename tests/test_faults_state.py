"""Fault hunt of the state modules from Python: the Checkpointer's arguments, a run's folders
given in the wrong place, the optimiser's settings, the loss terms' shapes and the bounded
exponential. Library-level and fast: nothing here trains or compiles a model."""

import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from a2i_jax import checkpoints, config_lib, models, numerics, objectives, train_state
from a2i_jax.errors import CheckpointError, ConfigError, InputError, WorkdirError


def test_a_save_takes_a_train_states_step_and_refuses_what_names_no_step(tmp_path):
  """Was: `save(state.step, state)`, the step a 0-d jax.Array, a TypeError's traceback
  (unhashable) after Orbax had started the save, and every later call of the checkpointer,
  close too, the same; a step 2.0 saved as a folder "2.0" and -1 as "-1", which no later
  start lists; "3" and None TypeErrors."""
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  try:
    ckpt.save(jnp.asarray(3, jnp.int32), {"w": jnp.ones(2)})
    for step in (4.0, -1, "5", None, True):
      with pytest.raises(CheckpointError, match=re.escape(
          f"step={step!r} cannot name a checkpoint; pass the training step, an integer of at "
          f"least 0 (the steps saved in {ckpt.directory}: [3]).")):
        ckpt.save(step, {"w": jnp.ones(2)})
  finally:
    ckpt.close()
  assert sorted(os.listdir(ckpt.directory)) == ["3"]
  assert checkpoints.Checkpointer(str(tmp_path), create=False).all_steps() == [3]


def test_a_closed_checkpointer_refuses_to_save(tmp_path):
  """Was: a save after `close` (a notebook cell run again) Orbax's RuntimeError "cannot
  schedule new futures after shutdown", after a screen of its threads' tracebacks."""
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  ckpt.close()
  with pytest.raises(CheckpointError, match=re.escape(
      f"this Checkpointer of {tmp_path} was closed; make a new one")):
    ckpt.save(1, {"w": jnp.ones(2)})
  ckpt.close()  # Twice is no mistake.
  assert os.listdir(ckpt.directory) == []


@pytest.mark.parametrize("workdir", [None, 3, ""])
def test_a_checkpointer_workdir_that_is_no_path_is_refused(workdir, tmp_path, monkeypatch):
  """Was: None or a number a TypeError's traceback from os.path, and "" the current folder,
  where the checkpoints then went without a word."""
  monkeypatch.chdir(tmp_path)
  with pytest.raises(WorkdirError, match=re.escape(
      f"workdir={workdir!r}: pass the run's folder, a path (str or pathlib.Path) that is not "
      "empty.")):
    checkpoints.Checkpointer(workdir)
  assert os.listdir(tmp_path) == []


def test_a_step_folder_given_as_the_workdir_names_the_run(tmp_path):
  """Was: load_trained / load_config of a run's checkpoints/<step> folder said "this workdir
  was not written by train.py", of a run's own checkpoint (its checkpoints/ folder was named
  right)."""
  run = tmp_path / "run"
  (run / "checkpoints" / "2" / "default").mkdir(parents=True)
  (run / "config.json").write_text("{}")
  for inside in (run / "checkpoints" / "2", run / "checkpoints" / "2" / "default"):
    with pytest.raises(ConfigError, match=re.escape(
        f"{inside} is inside the run's folder; pass that folder, {run}.")):
      checkpoints.load_config(str(inside))


@pytest.mark.parametrize("key, value, words", [
    ("learning_rate", -1e-3, "config.learning_rate=-0.001 must be > 0.0."),
    ("learning_rate", 0.0, "config.learning_rate=0.0 must be > 0.0."),
    ("learning_rate", math.nan, "config.learning_rate=nan must be a finite number."),
    ("weight_decay", -0.1, "config.weight_decay=-0.1 must be >= 0.0."),
    ("adam_b1", 1.0, "config.adam_b1=1.0 must be in [0, 1)."),
    ("adam_eps", 0.0, "config.adam_eps=0.0 must be > 0.0."),
    # 1.0, infinity or 0 in float32, where the optimiser computes.
    ("adam_b2", 0.99999999, "config.adam_b2=0.99999999 is 1.0 in float32, in which the "
     "optimiser computes (Adam's bias correction would divide by 0); use at most 0.9999999."),
    ("weight_decay", 1e300, "config.weight_decay=1e+300 is past float32's range (about "
     "3.4e38), in which the optimiser computes; use a smaller value."),
    # And below float32's smallest normal number, which the device flushes to 0: 1e-38, the
    # figure the refusal of 1e-50 gave, was taken as adam_eps (a NaN loss at step 1; review).
    ("learning_rate", 1e-50, "config.learning_rate=1e-50 is below float32's smallest normal "
     "number (1.18e-38), in which the optimiser computes, so the device flushes it to 0; use "
     "at least 1.2e-38."),
    ("grad_clip_norm", 1e-300, "config.grad_clip_norm=1e-300 is below float32's smallest "
     "normal number (1.18e-38), in which the optimiser computes, so the device flushes it to "
     "0; use at least 1.2e-38 or 0 (no clipping)."),
    ("adam_eps", 1e-38, "config.adam_eps=1e-38 is below float32's smallest normal number "
     "(1.18e-38), in which the optimiser computes, so the device flushes it to 0; use at "
     "least 1.2e-38."),
    ("weight_decay", 1e-39, "config.weight_decay=1e-39 is below float32's smallest normal "
     "number (1.18e-38), in which the optimiser computes, so the device flushes it to 0; use "
     "at least 1.2e-38 or 0 (no weight decay)."),
])
def test_optimiser_settings_that_cannot_train_are_refused(key, value, words):
  """Was: make_optimizer from Python (not behind train.py's validate_config) took a negative
  learning rate (the loss climbed), 0 (nothing trained), NaN (NaN weights), a negative weight
  decay or adam_b1 = 1 (NaN from the bias correction), without a word; and (a review) every
  path took adam_b2 = 0.99999999 (1.0 in float32: a NaN loss at step 2 blamed on the learning
  rate), weight_decay = 1e300 (infinity) and a grad_clip_norm of 1e-300 (0: every gradient
  clipped to nothing)."""
  config = config_lib.get_config("synthetic")
  config[key] = value
  for build in (train_state.make_optimizer, train_state.legacy_optimizer):
    with pytest.raises(ConfigError, match=re.escape(words)):
      build(config)


def test_a_train_state_from_a_seed_or_without_an_optimiser_is_refused():
  """Was: create_train_state(model, config, tx, 0) JAX's TypeError "invalid PRNG key data"
  from inside the initialisation, and tx=None an AttributeError; nothing compiles now."""
  config = config_lib.get_config("synthetic")
  model = models.create_model(config.model)
  tx = train_state.make_optimizer(config)
  with pytest.raises(InputError, match=re.escape(
      "key=0 is a seed, not a PRNG key; pass key=jax.random.key(0)")):
    train_state.create_train_state(model, config, tx, 0)
  with pytest.raises(InputError, match=re.escape(
      "tx is a NoneType, not an optax transformation; pass train_state.make_optimizer(config).")):
    train_state.create_train_state(model, config, None, jax.random.key(0))


def test_a_clipping_norm_that_cannot_clip_is_refused():
  """Was: clip_by_global_norm with max_norm NaN made every gradient NaN, a negative one
  turned clipping off, None was a TypeError; a 0-d array of a number is a number."""
  grads = {"w": np.ones(4, np.float32)}
  for bad in (math.nan, -1.0, math.inf, None, "1"):
    with pytest.raises(ConfigError, match=re.escape(
        f"max_norm={bad!r} (config.grad_clip_norm) must be a finite Python number >= 0")):
      train_state.clip_by_global_norm(grads, bad)
  clipped, norm = train_state.clip_by_global_norm(grads, np.float32(1.0))
  np.testing.assert_allclose(clipped["w"], 0.5)
  assert float(norm) == 2.0


def test_loss_terms_of_arrays_that_would_broadcast_are_refused():
  """Was: the losses broadcast their arguments against each other, so targets without their
  batch axis, or log-variances of one row for a batch, gave finite values of the wrong sum;
  weighted_sums' weights of [B, 1] made a [B, B] sum, B times too large; uint8 images were
  scored as values up to 255."""
  x = np.zeros((2, 4, 4, 3), np.float32)
  with pytest.raises(InputError, match=re.escape(
      "gaussian_nll takes arrays of one shape, [B, ...], one row per example; got x [4, 4, 3], "
      "mean [2, 4, 4, 3], logvar [2, 4, 4, 3]")):
    objectives.gaussian_nll(x[0], x, x)
  with pytest.raises(InputError, match=re.escape("got mu [2, 8], logvar [1, 8]")):
    objectives.gaussian_kl(np.zeros((2, 8)), np.zeros((1, 8)))
  with pytest.raises(InputError, match=re.escape("got pred [2, 4, 4, 3], target [1, 4, 4, 3]")):
    objectives.smooth_l1(x, x[:1])
  with pytest.raises(InputError, match=re.escape(
      "gaussian_nll's x is uint8; pass floats (images in [-1, 1]: uint8 / 127.5 - 1).")):
    objectives.gaussian_nll(x.astype(np.uint8), x, x)
  terms = {"loss": np.arange(4, dtype=np.float32)}
  for weights in (np.ones((4, 1)), np.ones(3)):
    with pytest.raises(InputError, match=re.escape(
        f"weights is {list(weights.shape)} for the term 'loss' of [4]; pass one weight per "
        "example, [B].")):
      objectives.weighted_sums(terms, weights)
  assert float(objectives.weighted_sums(terms, np.ones(4))["loss"]) == 6.0


def _discvae_outputs(shape=(2, 4, 4, 3)):
  zeros = np.zeros(shape, np.float32)
  return {"foreground": zeros, "x_fg": zeros, "mean": zeros, "gate_logits": zeros,
          "mu_fg": np.zeros((2, 3)), "logvar_fg": np.zeros((2, 3)),
          "mu_bg": np.zeros((2, 2)), "logvar_bg": np.zeros((2, 2))}


def test_discvae_terms_refuse_an_unknown_composition_and_masks_that_do_not_fit():
  """Was, each without a word: a composition "layerd" computed the reference's loss; a NaN
  gate weight made the loss NaN and a negative reconstruction weight pushed the wrong way
  (config_lib refuses both for a model's own); a uint8 mask of 0/255 made the gate's target
  1 - 255; a mask of one image (or without its channel axis where the size allowed)
  broadcast over the batch."""
  out, x = _discvae_outputs(), np.zeros((2, 4, 4, 3), np.float32)
  mask = np.ones((2, 4, 4, 1), np.float32)
  with pytest.raises(ConfigError, match=re.escape(
      "composition='layerd' is not one of ('reference', 'layered')")):
    objectives.discvae_terms(out, x, mask, 0.3, "layerd")
  for gate, recon, words in ((math.nan, 1.0, "gate_weight=nan must be a finite number >= 0"),
                             (0.3, -1.0, "recon_weight=-1.0 must be a finite number > 0")):
    with pytest.raises(ConfigError, match=re.escape(words)):
      objectives.discvae_terms(out, x, mask, gate, "layered", recon)
  with pytest.raises(InputError, match=re.escape(
      "the foreground mask is uint8; pass floats in [0, 1] (a uint8 mask of 0/255: "
      "mask / 255).")):
    objectives.discvae_terms(out, x, (mask * 255).astype(np.uint8), 0.3, "layered")
  for shape in ((1, 4, 4, 1), (4, 4, 1)):
    with pytest.raises(InputError, match=re.escape(
        f"the foreground mask is {list(shape)} for images [2, 4, 4, 3]; pass one mask per "
        "image, [2, 4, 4, 1].")):
      objectives.discvae_terms(out, x, np.ones(shape, np.float32), 0.3, "layered")
  # Bools are a mask (traced only: nothing to compile).
  loss = jax.eval_shape(lambda m: objectives.discvae_terms(out, x, m, 0.3, "layered")["loss"],
                        mask > 0)
  assert loss.shape == (2,)


def test_bounded_exp_stays_finite_in_float16():
  """Was: exp(clip(x, -30, 30)) in float16, whose largest value is 65,504 (exp(11.1)), gave
  inf, the overflow bounded_exp exists to prevent. float32 and bfloat16 keep exp(30)."""
  big = jnp.asarray([40.0, -40.0, 2.0], jnp.float16)
  value = np.asarray(numerics.bounded_exp(big), np.float32)
  assert np.isfinite(value).all()
  np.testing.assert_allclose(value, [math.exp(11), math.exp(-11), math.exp(2)], rtol=2e-3)
  in_bf16 = numerics.bounded_exp(jnp.asarray([40.0], jnp.bfloat16))
  assert float(in_bf16[0]) == float(jnp.asarray(math.exp(30), jnp.bfloat16))
  grad = jax.grad(lambda a: numerics.bounded_exp(a).sum())(big)
  assert np.isfinite(np.asarray(grad, np.float32)).all()


@pytest.mark.parametrize("state, words", [
    ({}, "the state to save ({}) holds no arrays; pass the train state, a pytree of JAX or "
     "NumPy arrays."),
    ({"params": {}, "opt_state": ()}, "holds no arrays"),
    ({"a": "x"}, "the state entry 'a' is a str ('x'), not an array or a number: a checkpoint "
     "holds JAX or NumPy arrays of numbers or bools, not empty, and numbers; convert it to "
     "one, or keep it out of the state."),
    ({"w": np.ones(2), "opt": [np.zeros(1), {"mu": 1j}]},
     "the state entry 'opt/1/mu' is a complex ('1j'), not an array or a number"),
    ({"w": np.ones(2), "names": np.array(["a", "b"])},
     "the state entry 'names' is an array of <U1, not of numbers"),
    ({"w": np.ones(2), "none": np.array([None], object)},
     "the state entry 'none' is an array of object, not of numbers"),
    ({"w": jnp.zeros((0, 3))},
     "the state entry 'w' is an array of shape (0, 3), which holds no element"),
    ({"count": 2 ** 70}, "the state entry 'count' is the integer 1180591620717411303424, which "
     "no 64-bit integer holds"),
    ("x", "the state is a str ('x'), not an array or a number"),
])
def test_a_state_orbax_cannot_save_is_refused_before_the_save(tmp_path, state, words):
  """Was: Orbax's "ValueError: Found empty item." ({}) or "Unsupported type: <class 'str'>
  for key: ('a',)" (or a dtype it cannot write, an empty array, an int past 64 bits) from
  inside its save, a `<step>.orbax-checkpoint-tmp` folder left in checkpoints/, and its
  threads' tracebacks at exit."""
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  try:
    with pytest.raises(CheckpointError, match=re.escape(words)):
      ckpt.save(1, state)
    assert os.listdir(ckpt.directory) == []
    # What the library saves passes: arrays of JAX and NumPy, their scalars, Python numbers,
    # bools, bfloat16, keys.
    ckpt.save(2, {"w": jnp.ones(2), "b": np.zeros((1, 2), np.int8), "s": np.float32(1),
                  "n": 3, "x": 0.5, "flag": True, "h": jnp.ones(2, jnp.bfloat16),
                  "key": jax.random.key(0), "empty": {}})
  finally:
    ckpt.close()
  assert os.listdir(ckpt.directory) == ["2"]


def test_save_config_refuses_what_is_no_config_and_writes_nothing(tmp_path):
  """Was: `save_config(workdir, {"a": 1})` an AttributeError, "'dict' object has no attribute
  'to_json'", and None as the workdir a TypeError from os.path."""
  with pytest.raises(ConfigError, match=re.escape(
      "the config is a dict, not an ml_collections.ConfigDict")):
    checkpoints.save_config(str(tmp_path), {"a": 1})
  assert os.listdir(tmp_path) == []
  with pytest.raises(WorkdirError, match=re.escape("workdir=None: pass the run's folder")):
    checkpoints.save_config(None, config_lib.reference_config())


@pytest.mark.parametrize("workdir", [None, 3, ""])
def test_the_checkpoint_listings_refuse_a_workdir_that_is_no_path(workdir, tmp_path,
                                                                  monkeypatch):
  """Was: `newest_saved_step(None)` and `has_checkpoints(None)` a TypeError from os.path (and
  "" the current folder's checkpoints, without a word)."""
  monkeypatch.chdir(tmp_path)
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  words = re.escape(f"workdir={workdir!r}: pass the run's folder, a path (str or "
                    "pathlib.Path) that is not empty.")
  with pytest.raises(WorkdirError, match=words):
    checkpoints.newest_saved_step(workdir)
  with pytest.raises(WorkdirError, match=words):
    checkpoints.has_checkpoints(workdir)


@pytest.mark.parametrize("model", [5, "cvae", ["width", 1]])
def test_a_checkpointer_model_that_is_no_config_section_is_refused(model, tmp_path):
  """Was: `Checkpointer(workdir, model=5)` a TypeError, "'int' object is not iterable" (a
  string or a list of pairs: "dictionary update sequence element ...")."""
  with pytest.raises(ConfigError, match=re.escape(
      f"model={model!r} is not a config section; pass the config's model section "
      "(config.model), or None to record and compare none.")):
    checkpoints.Checkpointer(str(tmp_path), model=model)
  assert os.listdir(tmp_path) == []
  checkpoints.Checkpointer(str(tmp_path), model={"name": "cvae"}).close()  # A dict is one.


def test_check_refuses_a_step_that_is_no_integer_or_has_no_checkpoint(tmp_path):
  """Was: `check(99)`, a step with no checkpoint, and `check("3")` returned None, which says
  "intact"."""
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  try:
    with pytest.raises(CheckpointError, match=re.escape(
        f"no checkpoint for step 3 in {ckpt.directory}; the steps there are none.")):
      ckpt.check(3)
    ckpt.save(3, {"w": np.ones(2, np.float32)})
    ckpt.wait()
    for step in ("3", 3.0, None, True):
      with pytest.raises(InputError, match=re.escape(
          f"step={step!r} is not valid; pass an integer; check takes a saved step of "
          f"{ckpt.directory}.")):
        ckpt.check(step)
    with pytest.raises(CheckpointError, match=re.escape(
        f"no checkpoint for step 99 in {ckpt.directory}; the steps there are [3].")):
      ckpt.check(99)
    assert ckpt.check(3) is None and ckpt.check(np.int64(3)) is None
    assert ckpt.find_intact() == (3, [])
  finally:
    ckpt.close()


def test_a_trained_model_or_the_model_section_in_place_of_the_module_or_config_is_refused():
  """Was: create_train_state and abstract_train_state given the loaded TrainedModel for the
  module, or config.model for the whole config, an AttributeError ("'TrainedModel' object has
  no attribute 'init'", "'model'"), as models.init_variables given the TrainedModel (a
  review's finding); make_optimizer and TrainedModel.from_variables refused such slips."""
  from a2i_jax import inference  # pylint: disable=import-outside-toplevel
  config = config_lib.get_config("synthetic")
  model = models.create_model(config.model)
  tx = train_state.make_optimizer(config)
  key = jax.random.key(0)
  trained = inference.TrainedModel.from_variables(
      config, models.abstract_variables(model, config.model))
  for fn, call in (
      ("create_train_state", lambda m, c: train_state.create_train_state(m, c, tx, key)),
      ("abstract_train_state", lambda m, c: train_state.abstract_train_state(m, c, tx))):
    with pytest.raises(InputError, match=re.escape(
        f"train_state.{fn} takes the model's Flax module, not TrainedModel; pass "
        "trained.model.")):
      call(trained, config)
    with pytest.raises(ConfigError, match=re.escape(
        f"the config given to train_state.{fn} has no model section (its keys: ")):
      call(model, config.model)
  for fn, call in (("init_variables", lambda: models.init_variables(trained, config.model, key)),
                   ("abstract_variables", lambda: models.abstract_variables(trained,
                                                                            config.model))):
    with pytest.raises(InputError, match=re.escape(
        f"models.{fn} takes the model's Flax module, not TrainedModel; pass trained.model.")):
      call()
  assert train_state.abstract_train_state(model, config, tx).step.shape == ()


@pytest.mark.filterwarnings(r"ignore:.*load_module\(\):DeprecationWarning")  # As train.py.
def test_the_variant_advice_for_a_resume_of_another_model_resumes_it_taken_literally(
    tmp_path, monkeypatch):
  """Was: the advice compared the variant with the keys that differed from the refused
  config only, after leaving out those its model ignores: a CVAE run saved with model.z_dim=16,
  resumed with the disCVAE variant (which ignores z_dim), was told "--config=...:cvae" alone,
  and that command got a second refusal "(model.z_dim: 16 there, 32 now)"; the command line's
  own overrides of the compared keys (and of those the CVAE ignores) were kept. Now the
  advised command, taken literally (parsed as train.py's flags parse it), gets past the
  resume's check; an override of how the model computes (model.dtype) may stay."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  spec = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "synthetic.py")
  run = config_lib.get_config(spec)  # The CVAE, trained with an override of z_dim.
  run.model.z_dim = 16
  checkpoints.save_config(str(tmp_path), run)

  def resume(argv):
    monkeypatch.setattr("sys.argv", argv)  # ml_collections reads the overrides' order there.
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
    values(argv)
    train_lib._check_resume_compatible(str(tmp_path), values.config)  # pylint: disable=W0212

  command = ["train.py", f"--config={spec}:discvae", "--config.model.zf_dim=12",
             "--config.model.width=0.5", "--config.model.dtype=float32"]
  with pytest.raises(ConfigError) as refused:
    resume(command)
  match = re.search(r"variant of that model \((.*?), in place of (\S+) and without (.*?)\) or "
                    "pass a new --workdir", str(refused.value))
  assert match, str(refused.value)
  advised, replaced, dropped = match[1].split(), match[2], match[3].split(", ")
  assert advised == [f"--config={spec}:cvae", "--config.model.z_dim=16"]
  assert replaced == command[1]
  assert dropped == ["--config.model.zf_dim", "--config.model.width"]
  followed = [a for a in command if a.split("=", 1)[0] not in dropped]
  at = followed.index(replaced)
  followed[at:at + 1] = advised
  resume(followed)  # Past the refusal.


def test_the_same_values_advice_for_another_model_resumes_it_taken_literally(tmp_path,
                                                                            monkeypatch):
  """Was (read-through): a disCVAE run resumed with a file that has no variant of it
  (configs/default.py) was advised the values of the keys the NEW model uses
  (--config.model.z_dim=32, which train.py refuses for a disCVAE as having no effect) and not
  its zf_dim: a second refusal. Now the keys that shape the run's model; taken literally, they
  get past the check."""
  import sys  # pylint: disable=import-outside-toplevel
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  run = config_lib.get_config("configs/synthetic.py:discvae")
  run.model.zf_dim, run.model.zb_dim = 12, 5
  checkpoints.save_config(str(tmp_path), run)
  monkeypatch.setattr(sys, "argv", ["train.py", "--config=configs/default.py",
                                    "--config.model.z_dim=16"])  # Refused for a disCVAE.
  config = config_lib.get_config("configs/default.py")
  config.model.z_dim = 16
  with pytest.raises(ConfigError, match="resume it with the same values") as e:
    train_lib._check_resume_compatible(str(tmp_path), config, keys=("model",))
  advised = re.findall(r"--config\.model\.(\w+)=([^\s,)]+)", str(e.value))
  assert ("zf_dim", "12") in advised and ("zb_dim", "5") in advised, str(e.value)
  assert "z_dim" not in dict(advised), str(e.value)
  assert ", without --config.model.z_dim)" in str(e.value), str(e.value)
  config.model.z_dim = config_lib.get_config("configs/default.py").model.z_dim  # Dropped.
  for key, value in advised:
    old = config.model[key]
    config.model[key] = value if isinstance(old, str) else type(old)(value)
  train_lib._check_resume_compatible(str(tmp_path), config, keys=("model",))  # Data apart.


def test_a_resume_may_change_the_weights_of_the_training_loss(tmp_path, caplog):
  """Was (fault hunt): --config.model.gate_loss_weight=0.5 on a disCVAE run trained with 0.3,
  and --noconfig.model.block_kl_bg_grad_to_fg, refused as "a different config.model", though
  they shape no parameter and serving reads neither. Now a resume may change them, as it may
  the learning rate: one warning, and the earlier config kept in config_history/. The
  checkpoint's model record, which still holds the earlier values, is not compared on them;
  recon_weight (serving's energy reads it) stays refused."""
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path)
  run = config_lib.get_config("configs/synthetic.py:discvae")
  checkpoints.save_config(workdir, run)
  ckpt = checkpoints.Checkpointer(workdir, model=run.model)
  ckpt.save(2, {"w": jnp.ones(2)})
  ckpt.close()
  config = config_lib.get_config("configs/synthetic.py:discvae")
  config.model.gate_loss_weight = run.model.gate_loss_weight + 0.2
  config.model.block_kl_bg_grad_to_fg = not run.model.block_kl_bg_grad_to_fg
  train_lib._check_resume_compatible(workdir, config)  # pylint: disable=protected-access
  with caplog.at_level("WARNING"):
    kept = train_lib._keep_a_changed_config(workdir, config, 2)  # pylint: disable=W0212
  assert kept is not None and os.path.dirname(kept).endswith(train_lib.CONFIG_HISTORY_DIR)
  words = caplog.records[-1].getMessage()
  assert f"model.gate_loss_weight {run.model.gate_loss_weight!r} -> " in words, words
  assert "model.block_kl_bg_grad_to_fg True -> False" in words, words
  # The resume records them before its first save: config.json then differs from the
  # checkpoint's record on them alone, and the next resume goes on.
  checkpoints.save_config(workdir, config)
  train_lib._check_resume_compatible(workdir, config)  # pylint: disable=protected-access
  ckpt = checkpoints.Checkpointer(workdir, model=config.model,
                                  ignore=checkpoints.TRAINING_ONLY_MODEL_KEYS)
  try:  # As training's resume restores (`train_lib._train_in_workdir`).
    restored = ckpt.restore({"w": jax.ShapeDtypeStruct((2,), jnp.float32)}, 2)
    assert float(restored["w"].sum()) == 2.0
  finally:
    ckpt.close()
  config.model.recon_weight = run.model.recon_weight + 1.0
  with pytest.raises(ConfigError, match=re.escape("different config.model (model.recon_weight")):
    train_lib._check_resume_compatible(workdir, config)  # pylint: disable=protected-access


@pytest.mark.filterwarnings(r"ignore:.*load_module\(\):DeprecationWarning")  # As train.py.
@pytest.mark.parametrize("config, typed", [
    (["--config=configs/synthetic.py:discvae"], ["--noconfig.model.block_kl_bg_grad_to_fg"]),
    (["--config=configs/synthetic.py:discvae"], ["-noconfig.model.block_kl_bg_grad_to_fg"]),
    (["--config=configs/synthetic.py:discvae"], ["--config.model.zf_dim", "12"]),
    (["--config=configs/synthetic.py:discvae"], ["-config.model.zf_dim=12",
                                                 "-config.model.zb_dim", "4"]),
    (["-config", "configs/synthetic.py:discvae"], ["--config.model.zf_dim=12"]),
    (["--config=synthetic:discvae"], ["--config.model.zf_dim=12"]),
    (["--config=configs/synthetic.py:discvae"], ["-config.model.zf_dim=12",
                                                 "--config.model.zf_dim=12"]),
], ids=["noconfig", "one_dash_noconfig", "value_apart", "one_dash", "config_apart",
        "config_by_name", "typed_twice_apart"])
def test_the_variant_advice_names_the_overrides_and_the_config_flag_as_typed(
    config, typed, tmp_path, monkeypatch):
  """Was: the advice to a resume refused for another model named every override to drop as
  "--config.model.KEY": "--noconfig.model.KEY" (absl's false of a bool), which the user
  could not find and kept, so train.py refused it again for the run's model (an override it
  ignores); only the name of "--config.model.KEY VALUE", whose VALUE stayed behind as an
  argument; and what train.py normalises ("-config.model.KEY=V", "--config SPEC",
  "--config=synthetic:discvae") in the form it normalised them to, which the command line as
  typed does not hold. Now each as typed: found on the command line, and the command with
  them dropped and the variant put in place parses to no stray argument and gets past the
  resume's check. Typed twice, apart ("-config.model.zf_dim=12 --config.model.zf_dim=12"):
  was one of them named (the typed forms were kept by the normalised argument, and both
  normalise alike), the other left for a second refusal; now both, by position."""
  import shlex  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  checkpoints.save_config(str(tmp_path), config_lib.get_config("configs/synthetic.py"))

  def resume(argv):  # As train.py: its checks and ml_collections read the normalised line.
    argv = config_lib.normalised_command_line(argv)
    monkeypatch.setattr(sys, "argv", argv)
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
    rest = values(argv)
    train_lib._check_resume_compatible(str(tmp_path), values.config)  # pylint: disable=W0212
    return rest

  def remove(words, part):  # `part` (arguments; a flag's name: with its "=VALUE") taken out.
    at = [i for i in range(len(words)) if words[i:i + len(part)] == part
          or len(part) == 1 and words[i].split("=", 1)[0] == part[0]]
    assert at, f"{shlex.join(part)} is not on the command line {shlex.join(words)}"
    return words[:at[0]], words[at[0] + len(part):]

  command = ["train.py", *config, *typed]
  with pytest.raises(ConfigError) as refused:
    resume(command)
  match = re.search(r"variant of that model \((.*?), in place of (.*?) and without (.*?)\) or "
                    "pass a new --workdir", str(refused.value))
  assert match, str(refused.value)
  before, after = remove(command, shlex.split(match[2]))
  followed = before + shlex.split(match[1]) + after
  for dropped in match[3].split(", "):
    before, after = remove(followed, shlex.split(dropped))
    followed = before + after
  assert followed[1:] == shlex.split(match[1]), str(refused.value)
  assert resume(followed) == ["train.py"]  # Past the refusal, with no stray argument.


def test_the_same_values_advice_names_an_override_with_its_value_apart_as_typed(tmp_path,
                                                                               monkeypatch):
  """Was: "without --config.model.z_dim" for "--config.model.z_dim 16" (absl reads the value
  from the next argument), and taken literally that left "16" on the command line. Now the
  override as typed, its value with it."""
  import sys  # pylint: disable=import-outside-toplevel
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  checkpoints.save_config(str(tmp_path), config_lib.get_config("configs/synthetic.py:discvae"))
  monkeypatch.setattr(sys, "argv", ["train.py", "--config=configs/default.py",
                                    "--config.model.z_dim", "16"])  # Refused for a disCVAE.
  config = config_lib.get_config("configs/default.py")
  config.model.z_dim = 16
  with pytest.raises(ConfigError, match="resume it with the same values") as e:
    train_lib._check_resume_compatible(str(tmp_path), config, keys=("model",))
  assert ", without --config.model.z_dim 16)" in str(e.value), str(e.value)


def test_train_py_keeps_how_each_argument_was_typed_for_the_resume_advice(tmp_path):
  """train.py's wiring of `config_lib.CommandLine`: what its flag parsing leaves in sys.argv,
  where `train_lib`'s resume advice reads it, still knows how each argument was typed, also
  two typed apart that normalise alike. Was: the typed forms in a module-level record keyed
  by the normalised argument (the second of those two lost), which train.py's sys.argv held
  the contents of only. In a subprocess: train.py defines absl's global flags."""
  import json  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = ("import json, sys, train; from a2i_jax import config_lib; train._parse_flags(["
          f"'train.py', '--workdir={tmp_path}/w', '--config=synthetic:discvae', "
          "'-config.model.zf_dim=12', '--config.model.zf_dim=12']); "
          "print(json.dumps(config_lib.typed_model_overrides(sys.argv, {'zf_dim'})))")
  env = {**os.environ, "A2I_HUGE_PAGES": "0", "PYTHONPATH": os.pathsep.join(
      p for p in (root, os.environ.get("PYTHONPATH")) if p)}
  r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                     text=True, timeout=120, check=False)
  assert r.returncode == 0, r.stderr
  assert json.loads(r.stdout.splitlines()[-1]) == ["-config.model.zf_dim",
                                                   "--config.model.zf_dim"], r.stdout
  assert not os.path.exists(tmp_path / "w")
