"""Fault suite, Python side: wrong arguments to the inference API are refused with one plain
`A2IError` that names the problem and the fix, before anything compiles (docs/design.md §3.15).

Every refusal here happens in the host-side checks, so most tests use untrained models
(`TrainedModel.from_variables` given only the shapes of the variables,
`models.abstract_variables`): nothing is restored, computed or compiled. One test runs the
accepted path through a tiny trained CVAE (conftest's `tiny_run`).
"""

import dataclasses
import functools
import inspect
import json
import os
import re

import jax
import numpy as np
import pytest

from a2i_jax import evaluation, inference, inputs, models, occlusions, sampling
from a2i_jax.data.base import Dataset, Split
from a2i_jax.errors import CheckpointError, ConfigError, InputError
from conftest import tiny_config

S, Y = 32, 10  # tiny_config's image size and the synthetic data's attribute count.


@pytest.fixture(scope="module")
def untrained():
  """{"cvae", "vae", "discvae"}: models with the shapes of their variables only, for checks
  that must refuse first."""
  return {name: inference.TrainedModel.from_variables(tiny_config(name),
                                                      _shapes(tiny_config(name)))
          for name in ("cvae", "vae", "discvae")}


def _shapes(config):
  """The model's variables as `jax.ShapeDtypeStruct` (`jax.eval_shape`: nothing computed)."""
  return models.abstract_variables(models.create_model(config.model), config.model)


@pytest.fixture(scope="module")
def cvae(untrained):
  return untrained["cvae"]


@pytest.fixture(scope="module")
def key():
  return jax.random.key(0)


def _images(n=4):
  return np.random.default_rng(0).integers(0, 256, (n, S, S, 3), dtype=np.uint8)


def _attrs(n=4):
  return np.zeros((n, Y), np.float32)


def _eyes(n=4):
  return occlusions.make_mask("eyes", S, n, dataset="synthetic")  # float32 0 / 1


# ------------------------------------------------------------------------------------- masks

def test_uint8_masks_of_zeros_and_ones_are_refused_everywhere(untrained, cvae, key):
  m = _eyes()
  with pytest.raises(InputError, match=r"observed is uint8 with values 0 and 1.*multiply it by "
                     r"255, or pass it as bool"):
    inference.complete(cvae, _images(), _attrs(), m.astype(np.uint8), key=key)
  prior = inference.AttributePrior(np.zeros(Y, np.float32), np.eye(Y, dtype=np.float32))
  with pytest.raises(InputError, match="observed is uint8 with values 0 and 1"):
    inference.infer_attributes(cvae, _images(), prior, m.astype(np.uint8), key=key)
  with pytest.raises(InputError, match="fg_masks is uint8 with values 0 and 1"):
    inference.reconstruct(untrained["discvae"], _images(), _attrs(), key=key,
                          fg_masks=m[..., 0].astype(np.uint8))
  # The formats that are accepted all read the same.
  for same in ((m * 255).astype(np.uint8), m.astype(bool), m.astype(np.float64)):
    np.testing.assert_array_equal(inputs.check_mask(same, 4, S, "observed"), m)
  with pytest.raises(InputError, match=r"observed values must lie in \[0, 1\]; these hold NaN"):
    inputs.check_mask(np.full((4, S, S), np.nan), 4, S, "observed")


def test_overlay_reads_masks_as_the_inference_does():
  images, m = _images(), _eyes()
  shown = occlusions.overlay(images, (m * 255).astype(np.uint8))
  np.testing.assert_allclose(shown, occlusions.overlay(images, m))
  assert 0.0 <= shown.min() and shown.max() <= 1.0
  with pytest.raises(InputError, match="masks is uint8 with values 0 and 1"):
    occlusions.overlay(images, m.astype(np.uint8))
  with pytest.raises(InputError, match=r"masks values must lie in \[0, 1\]"):
    occlusions.overlay(images, m * 255)


# ------------------------------------------------------------------------------------ images

def test_infer_latents_takes_only_images_in_minus_one_one(cvae, key):
  signed = inputs.to_signed(_images())
  call = lambda x: inference.infer_latents(cvae, x, _attrs(), key=key)
  with pytest.raises(InputError, match=r"dtype uint8; infer_latents takes floats in \[-1, 1\] "
                     r"\(inputs.to_signed converts"):
    call(_images())
  with pytest.raises(InputError, match=r"dtype uint8"):
    call(jax.numpy.asarray(_images()))  # A device array is read back and checked the same.
  with pytest.raises(InputError, match=r"takes images in \[-1, 1\]; these range over \[0, 255\]"
                     r".*reconstruct, complete and run_inference take uint8 or \[0, 1\]"):
    call(_images().astype(np.float32))
  with pytest.raises(InputError, match="NaN or infinity"):
    call(np.full_like(signed, np.nan))
  with pytest.raises(InputError, match=r"expects \[N, 32, 32, 3\]"):
    call(signed[..., 0])
  # The check itself: [-1, 1] (and a little rounding past it) pass, as do [0, 1] floats, which
  # no range can tell apart (the docstring says so).
  np.testing.assert_array_equal(inputs.check_images(signed, S, signed=True), signed)
  inputs.check_images(np.clip(signed * 1.0005, -1.0005, 1.0005), S, signed=True)
  inputs.check_images(jax.numpy.asarray(signed), S, signed=True)


# -------------------------------------------------------------- whole arrays before batching

def test_run_inference_checks_whole_arrays_against_the_images(untrained, cvae, key):
  images, attrs = _images(), _attrs(5)
  for batch in (None, 2):
    with pytest.raises(InputError, match=r"5 attribute vectors for 4 images"):
      inference.reconstruct(cvae, images, attrs, key=key, batch_size=batch)
    with pytest.raises(InputError, match=r"3 attribute vectors for 4 images"):
      inference.reconstruct(cvae, images, attrs[:3], key=key, batch_size=batch)
  with pytest.raises(InputError, match=r"1 attribute vectors for 4 images"):
    inference.reconstruct(cvae, images, attrs[0], key=key)
  with pytest.raises(InputError, match=r"fg_masks has shape \(5, 32, 32, 1\); expected \[4"):
    inference.reconstruct(untrained["discvae"], images, attrs[:4], key=key,
                          fg_masks=np.ones((5, S, S, 1)), batch_size=2)
  prior = inference.AttributePrior(np.zeros(Y, np.float32), np.eye(Y, dtype=np.float32))
  with pytest.raises(InputError, match=r"observed has shape \(5, 32, 32, 1\)"):
    inference.infer_attributes(cvae, images, prior, np.ones((5, S, S, 1)), key=key,
                               batch_size=2)
  # A grey batch is blamed on the images, not on the mask that goes with it.
  with pytest.raises(InputError, match=r"images have shape \(4, 32, 32\); this model expects"):
    inference.complete(cvae, images[..., 0], attrs[:4], _eyes(), key=key)
  with pytest.raises(InputError, match="attributes must be numbers"):
    inference.reconstruct(cvae, images, [["a"] * Y] * 4, key=key)


def test_no_images_and_bad_batch_sizes_are_refused(cvae, key):
  with pytest.raises(InputError, match="no images were given"):
    inference.reconstruct(cvae, _images(0), _attrs(0), key=key)
  with pytest.raises(InputError, match="no images were given"):
    inference.complete(cvae, _images(0), _attrs(0), _eyes(0), key=key)
  for bad in (0, -1, 2.5, True):
    with pytest.raises(InputError, match=f"batch_size={bad!r} is not valid; pass an integer "
                       "of at least 1"):
      inference.reconstruct(cvae, _images(), _attrs(), key=key, batch_size=bad)


def test_one_image_one_vector_and_a_uint8_mask_run(tiny_run, key):
  """The accepted path: one [S, S, 3] image, one [y_dim] vector, a uint8 0 / 255 mask."""
  trained = inference.load_trained(tiny_run("cvae")[0])
  image, m = _images(1)[0], _eyes(1)[0, ..., 0]
  out = inference.complete(trained, image, _attrs(1)[0], (m * 255).astype(np.uint8), key=key,
                           options=inference.options_for(trained, steps=1, restarts=1))
  assert out["completion"].shape == (1, S, S, 3) and out["y"].shape == (1, Y)
  observed = m.astype(bool)
  np.testing.assert_allclose(out["completion"][0][observed], image[observed] / 255.0,
                             atol=1e-6)


def test_a_key_on_one_device_and_an_image_over_one_run(tiny_run, key):
  """Review findings: a key committed to one device (`jax.device_put(key, device)`) was JAX's
  "incompatible devices" error from inside sample's and inference's calls over four devices;
  an image a rounding took just over 1, which the checks let through, was kept in the
  completion (1.0005)."""
  trained = inference.load_trained(tiny_run("cvae")[0])
  assert jax.device_count() == 4
  options = inference.options_for(trained, steps=1, restarts=1)
  for one in (jax.device_put(key, jax.devices()[1]),
              jax.device_put(jax.random.PRNGKey(0), jax.devices()[0])):
    np.testing.assert_array_equal(inference.sample(trained, _attrs(), one)["image"],
                                  inference.sample(trained, _attrs(), key)["image"])
    np.testing.assert_array_equal(
        inference.reconstruct(trained, _images(), _attrs(), key=one, options=options)["z"],
        inference.reconstruct(trained, _images(), _attrs(), key=key, options=options)["z"])
  over = _images(2) / 255.0
  over[:, :4] = 1.0005
  out = inference.complete(trained, over, _attrs(2), _eyes(2), key=key, options=options)
  assert out["completion"].max() == 1.0


def test_more_api_mistakes_are_named(untrained, cvae, key):
  """Review findings: each was another library's error, a wrong answer or a silence."""
  x = _images()
  prior = inference.AttributePrior.fit(np.eye(Y))
  with pytest.raises(InputError, match="images is a list of items of different shapes"):
    inference.edit(cvae, [x[0], x[1][:16]], _attrs(2), {1: 0.5}, key=key)  # Was NumPy's.
  with pytest.raises(InputError, match=r"images have shape \(4, 32, 32\)"):  # Was the value
    inference.edit(cvae, x[..., 0], _attrs(), {1: [0.0, 0.0, 0.0]}, key=key)  # blamed.
  with pytest.raises(InputError, match="hidden_fraction takes"):  # Was 32 fractions.
    occlusions.hidden_fraction(occlusions.make_mask("lower_half", S, 2)[0])
  with pytest.raises(InputError, match="infer_attributes estimates the attributes, so it "
                     "takes none"):  # Was a TypeError.
    inference.infer_attributes(cvae, x, prior, attributes=_attrs(), key=key)
  with pytest.raises(InputError, match="attribute_prior was given, but infer_attributes is "
                     "off"):  # Was ignored.
    inference.reconstruct(cvae, x, _attrs(), key=key, attribute_prior=prior)
  with pytest.raises(InputError, match=r"latents is a ndarray; pass a dict .*\['z'\]"):
    inference.decode(cvae, np.zeros((4, cvae.config.model.z_dim)), _attrs())
  with pytest.raises(InputError, match="attributes are complex numbers"):  # Was a warning.
    inference.sample(cvae, _attrs().astype(complex) + 1j, key)
  with pytest.raises(InputError, match="crop_from=16 is smaller than the 32x32 crops"):
    occlusions.make_mask("eyes", S, 1, crop_from=16)  # Was taken as whole images.
  bright = np.full((1, S, S, 3), 0.5, np.float32)
  bright[0, 0, 0] = -0.1  # A bright image in [-1, 1], or a resize's overshoot: both named.
  with pytest.raises(InputError, match=r"pass np.clip\(x, 0, 1\); if they are the models' "
                     r"own \[-1, 1\] .*pass \(x \+ 1\) / 2 instead"):
    inputs.check_images(bright, S)


def test_edit_warns_of_a_value_outside_the_training_range(tiny_run, cvae, key, caplog):
  """infer.py warned of an edit value the model never saw; `edit` from Python did not (left
  in session 34). The restored model now carries dataset.json's names and ranges."""
  workdir = tiny_run("cvae")[0]
  trained = inference.load_trained(workdir)
  info = json.load(open(os.path.join(workdir, "dataset.json")))
  assert trained.attribute_names == tuple(info["attribute_names"])
  assert trained.attribute_ranges == tuple(map(tuple, info["attribute_ranges"]))
  lo, hi = trained.attribute_ranges[2]
  options = inference.options_for(trained, steps=1, restarts=1)
  for value, shown in ((hi + 5, f"{hi + 5:g}"), (np.array([lo, lo, lo, lo - 1]),
                                                 f"from {lo - 1:g} to {lo:g}")):
    caplog.clear()
    inference.edit(trained, _images(), _attrs(), {2: value}, key=key, options=options)
    assert (f"the new value of attribute 2 ({trained.attribute_names[2]}), {shown}, lies "
            "outside its training range" in caplog.text)
  for inside in ((lo + hi) / 2, hi + 0.009 * (hi - lo), lo - 0.009 * (hi - lo)):
    caplog.clear()  # Within 1 % of the range: the split's extremes lie just inside the
    inference.edit(trained, _images(), _attrs(), {2: inside}, key=key, options=options)
    assert "outside" not in caplog.text  # attribute's own bounds, which were called outside.
  assert cvae.attribute_ranges is None  # Variables in memory: nothing known, nothing said.


# ----------------------------------------------------------------------------------- options

def test_options_of_the_wrong_type_or_not_finite_are_refused(cvae, key):
  for name, bad in (("steps", 2.5), ("steps", "3"), ("steps", None), ("restarts", 1.5),
                    ("steps_per_call", True)):
    with pytest.raises(ConfigError, match=f"inference.{name}={bad!r} is not valid; pass an "
                       "integer"):
      inference.options_for(cvae, **{name: bad})
  for name, bad in (("learning_rate", "1"), ("attribute_prior_weight", None)):
    with pytest.raises(ConfigError, match=f"inference.{name}={bad!r} is not valid; pass a "
                       "number"):
      inference.options_for(cvae, **{name: bad})
  for name, bad in (("learning_rate", float("inf")), ("prior_weight", float("nan"))):
    with pytest.raises(ConfigError, match=f"inference.{name}={bad!r} is not valid; .*finite"):
      inference.options_for(cvae, **{name: bad})
  with pytest.raises(ConfigError, match="infer_attributes='yes' is not valid; pass True or"):
    inference.options_for(cvae, infer_attributes="yes")
  assert inference.options_for(cvae, steps=np.int64(3), learning_rate=1).steps == 3
  with pytest.raises(InputError, match=r"options must be InferenceOptions, not dict; build them "
                     r"with inference.options_for"):
    inference.reconstruct(cvae, _images(), _attrs(), key=key, options={"steps": 2})
  with pytest.raises(InputError, match="options must be InferenceOptions"):
    inference.infer_attributes(cvae, _images(), None, key=key, options={"steps": 2})


def test_attribute_priors_that_do_not_fit_are_refused(cvae, key):
  rng = np.random.default_rng(0)
  train = rng.normal(size=(32, Y))
  with pytest.raises(InputError, match="contain NaN or infinity"):
    inference.AttributePrior.fit(np.where(np.arange(Y) == 3, np.nan, train))
  with pytest.raises(InputError, match=r"mean \(5,\) and precision \(5, 5\); this model has 10 "
                     "attributes"):
    inference.infer_attributes(cvae, _images(), inference.AttributePrior.fit(train[:, :5]),
                               key=key)
  with pytest.raises(InputError, match="attribute_prior must be an AttributePrior, not ndarray"):
    inference.infer_attributes(cvae, _images(), train, key=key)
  # A precision built by hand that is no Gaussian's (review: -100 I inferred y of +-11.9 with
  # an energy of -67,000 and no word), or whose symmetric part is indefinite.
  shear = np.eye(Y, dtype=np.float32)
  shear[0, 1] = 4.0
  for precision in (-100 * np.eye(Y, dtype=np.float32), shear):
    with pytest.raises(InputError, match="precision is not positive semi-definite"):
      inference.infer_attributes(cvae, _images(), inference.AttributePrior(
          np.zeros(Y, np.float32), precision), key=key)


def test_attributes_given_where_they_are_inferred_are_refused(cvae, key):
  """Fault hunt: with options.infer_attributes on, reconstruct, complete and edit took the
  attributes passed and ignored them (two reconstructions under other attributes were the
  same, and edit's "edited_y" came from the inferred ones). Each use, and infer_latents, now
  refuses them before anything runs, naming both ways out; without them the call goes on
  (here to the next check, the missing prior)."""
  inferring = inference.options_for(cvae, infer_attributes=True)
  prior = inference.AttributePrior(np.zeros(Y, np.float32), np.eye(Y, dtype=np.float32))
  calls = {
      "reconstruct": lambda y, **k: inference.reconstruct(cvae, _images(), y, key=key, **k),
      "complete": lambda y, **k: inference.complete(cvae, _images(), y, _eyes(), key=key, **k),
      "edit": lambda y, **k: inference.edit(cvae, _images(), y, {0: 0.5}, key=key, **k),
      "run_inference": lambda y, **k: inference.run_inference(cvae, _images(), y, key=key,
                                                              **k),
      "infer_latents": lambda y, **k: inference.infer_latents(
          cvae, inputs.to_signed(_images()), y, key=key, **k)}
  for use, call in calls.items():
    with pytest.raises(InputError, match=(
        f"^{use} was given attributes, but options.infer_attributes is on, which infers them "
        r"jointly with z and would ignore those given; pass attributes=None to infer them, or "
        r"options with infer_attributes=False \(inference.options_for\(trained, "
        r"infer_attributes=False\)\) to use them.$")):
      call(np.full((4, Y), -0.9, np.float32), options=inferring, attribute_prior=prior)
    with pytest.raises(InputError, match="needs an attribute_prior"):  # None: no refusal.
      call(None, options=inferring)


def test_read_images_takes_no_files_or_one_path_plainly(tmp_path):
  """Review: `inputs.read_images([], S)` was NumPy's "need at least one array to stack"; one
  path given as a string was read character by character."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with pytest.raises(InputError, match="no image files to read; pass one or more paths"):
    inputs.read_images([], S)
  path = str(tmp_path / "one.png")
  Image.fromarray(np.full((S, S, 3), 7, np.uint8)).save(path)
  assert inputs.read_images(path, S).shape == (1, S, S, 3)
  assert inputs.read_images(iter([path, path]), S).shape == (2, S, S, 3)  # A glob's (review).


def test_a_path_in_place_of_the_model_names_load_trained(key):
  """Review: `inference.sample("runs/x", y, key)`, a likely first try, was an AttributeError
  ("'str' object has no attribute 'config'"), in every function of the API."""
  import pathlib  # pylint: disable=import-outside-toplevel
  calls = [lambda m: inference.sample(m, _attrs(), key),
           lambda m: inference.reconstruct(m, _images(), _attrs(), key=key),
           lambda m: inference.options_for(m, steps=2),
           lambda m: inference.decode(m, {}, _attrs())]
  for model in ("runs/x", pathlib.Path("runs/x")):
    for call in calls:
      with pytest.raises(InputError, match=r"the model must be a TrainedModel, not \w+; load it "
                         r"first: inference.load_trained\("):
        call(model)
  with pytest.raises(InputError, match="not NoneType; load one with inference.load_trained"):
    inference.sample(None, _attrs(), key)


def test_a_model_without_attributes_refuses_attribute_requests(untrained, key):
  vae = untrained["vae"]
  prior = inference.AttributePrior(np.zeros(Y, np.float32), np.eye(Y, dtype=np.float32))
  with pytest.raises(InputError, match="vae does not use attributes, so they cannot be inferred"):
    inference.reconstruct(vae, _images(), key=key, attribute_prior=prior,
                          options=inference.options_for(vae, infer_attributes=True))
  with pytest.raises(InputError, match="vae does not use attributes, so they cannot be inferred"):
    inference.infer_attributes(vae, _images(), prior, key=key)
  with pytest.raises(InputError, match="vae does not use attributes, so editing them changes"):
    inference.edit(vae, _images(), None, {0: 1.0}, key=key)
  with pytest.raises(InputError, match=r"attributes are missing \(None\); pass \[N, 10\]"):
    inference.sample(vae, None, key)


# ------------------------------------------------------- progression, edit, swap, counts

def test_progression_arguments(cvae, key):
  y = _attrs(1)[0]
  for index in (1.5, True, -1, Y):
    with pytest.raises(InputError, match=f"attribute index={index!r} is not valid; pass an "
                       r"integer in \[0, 10\); progression sweeps the attribute at that"):
      inference.progression(cvae, y, index, [0.0, 1.0], key=key)
  for values in (1.0, [], [[0.0, 1.0]]):
    with pytest.raises(InputError, match="progression values must be a 1-D sequence"):
      inference.progression(cvae, y, 0, values, key=key)
  with pytest.raises(InputError, match="progression values: NaN or infinity"):
    inference.progression(cvae, y, 0, [0.0, np.nan], key=key)
  for num in (-2, 0, 2.0):
    with pytest.raises(InputError, match=f"num_latents={num!r} is not valid"):
      inference.progression(cvae, y, 0, [0.0, 1.0], key=key, num_latents=num)
  with pytest.raises(InputError, match=r"progression takes one attribute vector \[10\]; got 2"):
    inference.progression(cvae, _attrs(2), 0, [0.0, 1.0], key=key)


def test_edit_arguments(cvae, key):
  edit = lambda changes: inference.edit(cvae, _images(), _attrs(), changes, key=key)
  with pytest.raises(InputError, match=r"attribute index=True is not valid; pass an integer in "
                     r"\[0, 10\); edit takes \{attribute index: new value\}"):
    edit({True: 5.0})
  with pytest.raises(InputError, match=r"attribute 0: 'high' is not a number"):
    edit({0: "high"})
  with pytest.raises(InputError, match="attribute 0: NaN or infinity"):
    edit({0: float("inf")})
  with pytest.raises(InputError, match=r"attribute 0 must be one number \(applied to every "
                     r"image\) or one per image \(\[4\]\); got shape \(3,\)"):
    edit({0: np.arange(3.0)})
  with pytest.raises(InputError, match=r"attribute 0 must be one number .*shape \(4, 1\)"):
    edit({0: np.ones((4, 1))})
  with pytest.raises(InputError, match=r"changes is a list; edit takes \{attribute index"):
    edit([(0, 1.0)])


def test_swap_and_latent_counts(untrained, cvae, key):
  dis = untrained["discvae"]
  with pytest.raises(InputError, match=r"swap takes one attribute vector \[10\]; got 2"):
    inference.swap(dis, _attrs(2), key=key)
  with pytest.raises(InputError, match="num=0 is not valid; pass an integer of at least 1"):
    inference.swap(dis, _attrs(1)[0], key=key, num=0)
  with pytest.raises(InputError, match="num=-1 is not valid; pass an integer of at least 0"):
    inference.prior_latents(cvae, -1, key)
  with pytest.raises(InputError, match="num=-1 is not valid"):
    sampling.prior_latents(cvae.model, -1, key)
  with pytest.raises(InputError, match="num=2.0 is not valid"):
    occlusions.make_mask("eyes", S, 2.0)


def test_an_inference_batch_size_below_one_is_named_by_every_call(untrained, key):
  """Review finding: a config whose inference.batch_size is 0 or -3, given to
  `TrainedModel.from_variables` or set on a loaded model's config, failed in sample, decode,
  progression, swap and edit with "range() arg 3 must not be zero" or a KeyError 'image',
  and reconstruct blamed a batch_size argument never passed. from_variables refuses it; a
  value edited after that is named by each call, before anything runs."""
  for bad in (0, -3):
    config = tiny_config("discvae")
    config.inference.batch_size = bad
    with pytest.raises(ConfigError, match=f"^inference.batch_size={bad} is not valid; use at "
                       "least 1 image per batch.$"):
      inference.TrainedModel.from_variables(config, _shapes(config))
    for name in ("cvae", "discvae"):
      model = untrained[name]
      config = model.config.copy_and_resolve_references()
      config.inference.batch_size = bad  # As on a loaded model's config.
      edited = dataclasses.replace(model, config=config)
      latents = {k: np.zeros((2, d), np.float32) for k, d in model.model.latent_dims.items()}
      calls = [lambda: inference.sample(edited, _attrs(2), key),
               lambda: inference.decode(edited, latents, _attrs(2)),
               lambda: inference.progression(edited, _attrs(1)[0], 0, [0.0, 1.0], key=key),
               lambda: inference.reconstruct(edited, _images(2), _attrs(2), key=key),
               lambda: inference.edit(edited, _images(2), _attrs(2), {0: 1.0}, key=key),
               lambda: inference.infer_latents(edited, np.zeros((2, S, S, 3), np.float32),
                                               _attrs(2), key=key)]
      if name == "discvae":
        calls.append(lambda: inference.swap(edited, _attrs(1)[0], key=key))
      for call in calls:
        with pytest.raises(ConfigError, match=re.escape(
            f"inference.batch_size={bad} is not valid; use at least 1 image per batch "
            "(trained.config.inference.batch_size, or the config the model was made from; "
            "the default is 256).")):
          call()


def test_inference_values_of_another_type_are_one_config_error():
  """Read-through finding: `config_lib.check_inference` (which `from_variables` now runs)
  converted with int() / float(), so inference.steps=None was a TypeError traceback, and
  batch_size=True passed as 1 there while every later call refused it."""
  for key, value in (("steps", None), ("batch_size", True), ("restarts", None),
                     ("learning_rate", None), ("prior_weight", None)):
    config = tiny_config("cvae")
    config.inference[key] = value
    with pytest.raises(ConfigError, match=re.escape(f"inference.{key}={value!r} is not valid")):
      inference.TrainedModel.from_variables(config, _shapes(config))


# -------------------------------------------------------------------------------------- keys

def _every_key_taker(untrained, cvae):
  """{name: call(key)} of every public function that takes a PRNG key."""
  dis, prior = untrained["discvae"], inference.AttributePrior.fit(np.eye(Y))
  return {
      "sample": lambda k: inference.sample(cvae, _attrs(), k),
      "prior_latents": lambda k: inference.prior_latents(cvae, 2, k),
      "sampling.prior_latents": lambda k: sampling.prior_latents(cvae.model, 2, k),
      "progression": lambda k: inference.progression(cvae, _attrs(1)[0], 0, [0.0], key=k),
      "swap": lambda k: inference.swap(dis, _attrs(1)[0], key=k),
      "run_inference": lambda k: inference.run_inference(cvae, _images(), _attrs(), key=k),
      "infer_latents": lambda k: inference.infer_latents(cvae, inputs.to_signed(_images()),
                                                         _attrs(), key=k),
      "reconstruct": lambda k: inference.reconstruct(cvae, _images(), _attrs(), key=k),
      "complete": lambda k: inference.complete(cvae, _images(), _attrs(), _eyes(), key=k),
      "infer_attributes": lambda k: inference.infer_attributes(cvae, _images(), prior, key=k),
      "edit": lambda k: inference.edit(cvae, _images(), _attrs(), {0: 1.0}, key=k),
      "evaluate_model": lambda k: evaluation.evaluate_model(cvae, None, key=k),
      "tune_inference": lambda k: evaluation.tune_inference(cvae, None, grid=[{}],
                                                            occlusion_names=[], key=k),
      "attribute_report": lambda k: evaluation.attribute_report(cvae, None, None, key=k),
  }


def test_a_seed_or_several_keys_are_not_a_key(untrained, cvae):
  """Was JAX's TypeError ("invalid PRNG key data") from deep inside, or a wrong answer."""
  for name, call in _every_key_taker(untrained, cvae).items():
    with pytest.raises(InputError, match=r"key=0 is a seed, not a PRNG key; pass "
                       r"key=jax.random.key\(0\) \(or jax.random.PRNGKey\(0\)\)"):
      call(0)
    with pytest.raises(InputError, match=r"key holds several PRNG keys \(shape \(2,\)\); pass "
                       "one, e.g. key=keys\\[0\\]"):
      call(jax.random.split(jax.random.key(0)))
  for bad, needle in ((np.int64(3), r"key=3 is a seed, not a PRNG key; pass key=jax.random"),
                      (jax.random.split(jax.random.PRNGKey(0)), r"several PRNG keys \(shape "
                       r"\(2, 2\)\)"),
                      (np.zeros(2, np.int32), r"dtype int32 and shape \(2,\), not a PRNG key"),
                      (np.array(7, np.uint32), r"key is an integer scalar \(a seed\), not a "
                       r"PRNG key; pass key=jax.random.key\(seed\)"),
                      (jax.numpy.int32(3), r"key is an integer scalar \(a seed\)"),
                      (None, r"key is a NoneType, not a PRNG key; pass jax.random.key\(seed\)"),
                      ("0", r"key is a str, not a PRNG key")):
    with pytest.raises(InputError, match=needle):
      inference.sample(cvae, _attrs(), bad)
  with pytest.raises(InputError, match=r"key is an integer scalar \(a seed\)"):
    jax.jit(inputs.check_key)(5)  # A seed traced under jit.


def test_new_and_old_style_keys_are_both_keys(cvae):
  for key in (jax.random.key(0), jax.random.PRNGKey(0), np.array([0, 0], np.uint32)):
    assert inputs.check_key(key) is key
    assert jax.jit(inputs.check_key)(key).shape == np.shape(key)  # Traced keys too.
  old = sampling.prior_latents(cvae.model, 2, jax.random.PRNGKey(0))["z"]
  new = sampling.prior_latents(cvae.model, 2, jax.random.key(0))["z"]
  np.testing.assert_array_equal(old, new)  # The same key either way.


# --------------------------------------------------------------------------------- variables

def test_variables_of_another_model_are_refused_when_wrapped(cvae):
  """Was: wrapped without a word; Flax's ScopeParamShapeError or a KeyError at the first
  sample or inference."""
  config = tiny_config("cvae")
  wrap = lambda variables: inference.TrainedModel.from_variables(config, variables)
  wider = tiny_config("cvae")
  wider.model.width = 0.25
  with pytest.raises(InputError, match=r"the variables do not fit this config's cvae: of its "
                     r"\d+ arrays, [1-9]\d* have other shapes and 0 are missing, and 0 given "
                     r"are not in it \(params/\S+: expected \([\d, ]+\), got \([\d, ]+\); .*; "
                     r"and \d+ more\). They belong to another config \(model kind, width"):
    wrap(_shapes(wider))
  with pytest.raises(InputError, match=r"do not fit this config's cvae: of its \d+ arrays, \d+ "
                     r"have other shapes and [1-9]\d* are missing, and [1-9]\d* given are not in "
                     r"it \(params/\S+: expected"):
    wrap(_shapes(tiny_config("discvae")))
  smaller_z = tiny_config("cvae")
  smaller_z.model.z_dim = 4
  with pytest.raises(InputError, match=r"expected \(\d+, 16\), got \(\d+, 8\)|expected "
                     r"\(\d+, 8\), got \(\d+, 4\)"):  # mu and logvar: 2 z_dim outputs.
    wrap(_shapes(smaller_z))
  params_only = {"params": _shapes(config)["params"]}
  with pytest.raises(InputError, match=r"variables hold the collections \['params'\]; this cvae "
                     r"has \['params', 'batch_stats'\]. Pass all of them: .*'batch_stats': "
                     r"state.batch_stats"):
    wrap(params_only)
  with pytest.raises(InputError, match="variables is a list, not a dict of the collections"):
    wrap([params_only])
  with pytest.raises(InputError, match=r"variables hold the collections \['1', 'batch_stats', "
                     r"'params'\]; this cvae has"):  # Was: TypeError from sorting 1 and 'params'.
    wrap({**_shapes(config), 1: 2})
  missing = _shapes(config)
  missing["params"] = dict(missing["params"])
  gone = sorted(missing["params"])[0]
  del missing["params"][gone]
  with pytest.raises(InputError, match=f"params/{gone}/\\S+: expected .*, got nothing"):
    wrap(missing)
  zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), _shapes(config))
  assert wrap(zeros).step == 0  # Arrays of the model's shapes fit.
  integers = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, np.int32), _shapes(config))
  with pytest.raises(InputError, match=r"the variable params/\S+ is of dtype int32; a model's "
                     "variables are floats"):
    wrap(integers)


# ------------------------------------------------------------------------ foreground masks

def test_foreground_masks_are_refused_by_models_without_a_foreground(untrained, key):
  """Was: ignored without a word by the (C)VAE."""
  prior = inference.AttributePrior.fit(np.eye(Y))
  fg = np.ones((4, S, S, 1), np.float32)
  for name in ("cvae", "vae"):
    trained = untrained[name]
    calls = (
        lambda: inference.reconstruct(trained, _images(), _attrs(), key=key, fg_masks=fg),
        lambda: inference.run_inference(trained, _images(), _attrs(), key=key, fg_masks=fg),
        lambda: inference.infer_latents(trained, inputs.to_signed(_images()), _attrs(),
                                        key=key, fg_masks=fg),
        lambda: inference.complete(trained, _images(), _attrs(), _eyes(), key=key,
                                   fg_masks=fg),
        lambda: inference.edit(trained, _images(), _attrs(), {0: 1.0}, key=key, fg_masks=fg),
        lambda: inference.infer_attributes(trained, _images(), prior, key=key, fg_masks=fg))
    for call in calls[:-2] if name == "vae" else calls:  # The VAE refuses attributes first.
      with pytest.raises(InputError, match=f"fg_masks were given, but this {name} has no "
                         "foreground / background split and would ignore them; only a disCVAE "
                         "uses them. Drop fg_masks."):
        call()


@pytest.mark.parametrize("init", ["zeros", "prior"])
def test_foreground_masks_are_refused_where_the_encoder_does_not_start(untrained, key, init):
  """Was: a disCVAE started from zeros or the prior ignored them without a word (only the
  encoder's start reads them)."""
  trained = untrained["discvae"]
  options = dataclasses.replace(inference.options_for(trained), init=init)
  fg = np.ones((4, S, S, 1), np.float32)
  with pytest.raises(InputError, match=f"fg_masks were given with init='{init}'; they only set "
                     "the encoder's start \\(init='encoder'\\) and would be ignored. Drop "
                     "fg_masks, or start from the encoder."):
    inference.complete(trained, _images(), _attrs(), _eyes(), key=key, options=options,
                       fg_masks=fg)


def test_inference_functions_built_for_other_options_are_refused(cvae, key):
  """Was: used anyway: fns built for 1 restart given options with 3 returned another image's
  restarts as results, and fns of 10 steps ran 10 of 15 steps, silently."""
  base = inference.options_for(cvae)
  fns = inference.make_inference_fns(cvae.model, dataclasses.replace(base, restarts=1))
  for changes in ({"restarts": 3}, {"steps": base.steps + 5}):
    with pytest.raises(InputError, match=r"fns were built for other inference options than "
                       r"these .*; build them for these with make_inference_fns\(model, "
                       r"options\), or leave fns out."):
      inference.infer_latents(cvae, inputs.to_signed(_images()), _attrs(), key=key,
                              options=dataclasses.replace(base, **{"restarts": 1, **changes}),
                              fns=fns)


# ------------------------------------------------------------------------------- tuning grid

def test_a_tuning_grid_is_checked_whole_before_the_first_setting_runs(cvae, key, monkeypatch):
  """Was: an unknown option in the last setting found after every other one had run."""
  def never(*args, **kwargs):
    raise AssertionError("a setting ran before the grid was checked")
  monkeypatch.setattr(inference, "reconstruct", never)
  x, y = _images(2), _attrs(2)
  data = Dataset("synthetic", tuple(f"a{i}" for i in range(Y)), ("binary",) * Y,
                 {"validation": Split(x, y)})
  tune = lambda grid: evaluation.tune_inference(cvae, data, grid=grid, occlusion_names=[],
                                                num_examples=2, key=key)
  with pytest.raises(ConfigError, match=r"grid\[1\] \{'prior_wieght': 3.0\}: unknown inference "
                     r"option\(s\) \['prior_wieght'\]; known: \["):
    tune([{"prior_weight": 1.0}, {"prior_wieght": 3.0}])
  with pytest.raises(ConfigError, match=r"grid\[0\] \{'steps': -1\}: inference.steps"):
    tune([{"steps": -1}])
  with pytest.raises(InputError, match="grid is empty; pass a list of option overrides"):
    tune([])
  with pytest.raises(InputError, match="grid is a dict; pass a list of option overrides"):
    tune({"prior_weight": 1.0})
  with pytest.raises(InputError, match=r"grid\[0\] is a float; each setting is a dict"):
    tune([1.0])
  with pytest.raises(InputError, match="grid is a str; pass a list"):
    tune("prior_weight")
  with pytest.raises(ConfigError, match=r"grid\[1\] \{'prior_wieght': 3.0\}"):  # A generator,
    tune(s for s in ({"prior_weight": 1.0}, {"prior_wieght": 3.0}))  # read once, as a list.


def test_a_tuning_setting_that_diverges_on_some_images_says_so(cvae, key, monkeypatch):
  """A setting whose inference gives NaN for some validation images: the column says how many
  diverged and has no mean (the images that converged alone would rank it better than one
  that does not diverge). Was: their errors left out, the mean of the others published, and
  a setting that diverged on all of them printed as "nan"."""
  def reconstruct(trained, images, attrs, *, key, options):
    del trained, attrs, key
    out = np.full(images.shape, 0.5, np.float32)
    start, energy = np.zeros(len(images), np.float32), np.zeros(len(images), np.float32)
    if options.learning_rate > 0.1:  # This setting's inference diverges on image 0.
      out[0, 3, 4, 1] = energy[0] = np.nan
    # As the library's outputs: each image's "diverged" by its rule.
    return {"reconstruction": out, "energy": energy, "start_energy": start,
            "diverged": inference.posterior.diverged_images(energy, start)}
  monkeypatch.setattr(inference, "reconstruct", reconstruct)
  x, y = _images(3), _attrs(3)
  data = Dataset("synthetic", tuple(f"a{i}" for i in range(Y)), ("binary",) * Y,
                 {"validation": Split(x, y)})
  rows = evaluation.tune_inference(cvae, data, grid=[{"learning_rate": 0.05},
                                                     {"learning_rate": 0.2}],
                                   occlusion_names=[], num_examples=3, key=key)
  fine, diverged = (r[evaluation.RECON_FULL] for r in rows)
  assert fine["diverged"] == 0 and fine["n"] == 3 and np.isfinite(fine["mean"])
  assert diverged["diverged"] == 1 and diverged["n"] == 2 and np.isnan(diverged["mean"])
  import infer  # pylint: disable=import-outside-toplevel
  assert infer._tuning_text(diverged) == "diverged (1 of 3)"  # pylint: disable=protected-access
  assert infer._tuning_text(fine) == f"{100 * fine['mean']:.3f}"  # pylint: disable=protected-access


# ------------------------------------------------------------------------------ load_trained

def test_load_trained_arguments(tmp_path):
  not_a_workdir = tmp_path / "run.sh"
  not_a_workdir.write_text("echo\n")
  with pytest.raises(ConfigError, match="run.sh is a file; pass the workdir"):
    inference.load_trained(str(not_a_workdir))
  for step in ("4", 4.0, True):
    with pytest.raises(InputError, match=f"step={step!r} is not valid; pass an integer"):
      inference.load_trained(str(tmp_path), step)


def test_train_and_evaluate_words_its_errors_for_a_python_caller(tmp_path):
  """Were worded for the command line: "the get_config returned a dict" for a dict passed as
  the config, and "--workdir is empty"."""
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import WorkdirError  # pylint: disable=import-outside-toplevel
  config = tiny_config()
  with pytest.raises(ConfigError, match=r"the config is a dict, not an ml_collections.ConfigDict;"
                     r" build it with a2i_jax.config_lib.get_config\("):
    train_lib.train_and_evaluate(config.to_dict(), str(tmp_path / "w"))
  with pytest.raises(WorkdirError, match=r"the workdir \(--workdir\) is empty; pass the run's"):
    train_lib.train_and_evaluate(config, " ")
  # Paths no run can live in, refused before anything is written (review): a URL (was: a local
  # folder "gs:" trained in, then a traceback at the first save, the steps lost), and [, ] or
  # \ (was: checkpoints saved that Orbax could not restore, "the config differs" said).
  with pytest.raises(WorkdirError, match=r"--workdir=gs://bucket/run is a URL; .* pass a local "
                     "path"):
    train_lib.train_and_evaluate(config, "gs://bucket/run")
  for name in ("exp[lr=3e-4]", "back\\slash"):
    with pytest.raises(WorkdirError, match=r"holds '.*': Orbax saves checkpoints under such a "
                       r"path that it cannot restore; pass a path without \[, \] or \\"):
      train_lib.train_and_evaluate(config, str(tmp_path / name / "run"))
  assert os.listdir(tmp_path) == []


# ------------------------------------------------- found by the thirtieth session's review

def test_devices_that_are_no_devices_are_refused():
  """Were JAX's IndexError (none), AttributeError (a string) and bare AssertionError (one
  device twice), from `train_and_evaluate(..., devices=...)` and `parallel.make_mesh`."""
  from a2i_jax import parallel  # pylint: disable=import-outside-toplevel
  one = jax.devices()[0]
  for devices in ([], ["cpu"], [one, one]):
    with pytest.raises(ConfigError, match="pass a non-empty list of distinct jax.Device"):
      parallel.make_mesh(devices)
  assert parallel.make_mesh([one]).devices.shape == (1,)


@pytest.mark.parametrize("shrinkage", [-1.0, 2.0, float("nan"), "0.1", True])
def test_an_attribute_prior_shrinkage_outside_zero_one_is_refused(shrinkage):
  """Was accepted: an indefinite precision, and inferred attributes far off their range (a
  NaN: numpy's LinAlgError)."""
  y = np.random.default_rng(0).normal(size=(20, 3))
  with pytest.raises(InputError, match="pass a number from 0 .* to 1"):
    inference.AttributePrior.fit(y, shrinkage=shrinkage)
  assert inference.AttributePrior.fit(y, shrinkage=1).precision.shape == (3, 3)


def test_one_occlusion_name_as_a_string_is_refused():
  """Was: "unknown occlusion 'e'" for "eyes", its letters taken for names."""
  with pytest.raises(InputError, match="occlusion names 'eyes' is one string; pass a list of "
                     r"names, e.g. \['eyes'\]"):
    occlusions.make_masks("eyes", S, 1, dataset="synthetic")
  with pytest.raises(InputError, match="is one string"):
    occlusions.check_names("eyes")
  assert occlusions.check_names(("eyes",)) == ["eyes"]


def test_latents_that_are_not_finite_are_refused_by_decode(untrained):
  """Was: all-NaN images, without a word."""
  for name, trained in untrained.items():
    latents = {n: np.zeros((2, d), np.float32) for n, d in trained.model.latent_dims.items()}
    first = sorted(latents)[0]
    latents[first][1, 0] = np.nan
    with pytest.raises(InputError, match=f"latents\\['{first}'\\] holds NaN or infinity"):
      inference.decode(trained, latents, _attrs(2))
    latents[first] = [["a"] * latents[first].shape[1]] * 2
    with pytest.raises(InputError, match="the latents are not numbers"):
      inference.decode(trained, latents, _attrs(2))
    # A latent of the other model kind beside its own (was: dropped without a word). Other
    # keys, as run_inference's output holds, come along (tests/test_inference.py).
    latents = {n: np.zeros((2, d), np.float32) for n, d in trained.model.latent_dims.items()}
    other = "z_fg" if "z" in latents else "z"
    with pytest.raises(InputError, match=f"latents hold '{other}', which this "
                       f"{trained.config.model.name} has no latent of; pass "):
      inference.decode(trained, {**latents, other: latents[first]}, _attrs(2))


def test_grids_masks_and_overlays_refuse_what_they_would_get_wrong(tmp_path):
  """Review findings, each was a traceback or a silent wrong picture: make_mask(seed=-1)
  (numpy's ValueError) or seed=1.5 (TypeError); overlay with masks of another size (a
  broadcast error); save_grid with ncols=0 (ZeroDivisionError), channels first (ValueError),
  [-1, 1] or 0 .. 255 floats (clipped), NaN (black), a .jpg path (PNG bytes in it)."""
  from a2i_jax import visualize  # pylint: disable=import-outside-toplevel
  for seed, needle in ((-1, "seed=-1 is not valid"), (1.5, "seed=1.5 is not valid")):
    with pytest.raises(InputError, match=needle):
      occlusions.make_mask("block8", S, 2, seed=seed)
  images = np.full((2, S, S, 3), 0.25, np.float32)
  with pytest.raises(InputError, match=r"overlay takes images \[N, S, S, 3\] and masks"):
    occlusions.overlay(images, np.ones((2, S // 2, S // 2, 1), np.float32))
  with pytest.raises(InputError, match=r"overlay takes"):
    occlusions.overlay(images, np.ones((3, S, S, 1), np.float32))
  path = str(tmp_path / "g.png")
  cases = [(dict(ncols=0), r"ncols=0 is not valid"),
           (dict(images=images.transpose(0, 3, 1, 2)), r"channels first\? pass "
            r"images.transpose\(0, 2, 3, 1\)"),
           (dict(images=images * 2 - 1), r"float images must lie in \[0, 1\]; these range "
            r"over \[-0.5, -0.5\].*\(x \+ 1\) / 2"),
           (dict(images=images * 255), r"these range over \[63.75, 63.75\]"),
           (dict(images=np.full_like(images, np.nan)), "these hold NaN or infinity"),
           (dict(path=str(tmp_path / "g.jpg")), r"g.jpg: the grid is written as PNG")]
  for changes, needle in cases:
    args = {"images": images, "path": path, "ncols": 2, **changes}
    with pytest.raises(InputError, match=needle):
      visualize.save_grid(**args)
  assert not os.listdir(tmp_path)
  assert visualize.save_grid(images, path, 2).shape == (2 * S + 2, 2 * (2 * S + 1) + 1, 3)
  assert os.listdir(tmp_path) == ["g.png"]


def test_variables_that_are_not_finite_are_refused(tiny_run, tmp_path):
  """A checkpoint (or variables in memory) with NaN weights gave black images, null scores
  and a misleading "lower the learning rate" in every mode but evaluate (review finding):
  refused where they are restored or wrapped, naming an array and the other checkpoints."""
  import shutil  # pylint: disable=import-outside-toplevel
  import faults_lib as F  # pylint: disable=import-outside-toplevel
  from a2i_jax import checkpoints  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  shutil.copytree(tiny_run("cvae")[0], workdir)
  config = inference.load_run_config(workdir)
  state = F.final_state(workdir)
  steps = checkpoints.Checkpointer(workdir, create=False)
  saved = steps.all_steps()
  steps.close()
  params = jax.tree_util.tree_map(np.array, state.params)
  params["decoder"]["mix"]["Dense_0"]["kernel"][0, 0] = np.nan
  variables = {"params": params, "batch_stats": state.batch_stats}
  with pytest.raises(InputError, match=r"variables hold NaN or infinite values in 1 arrays "
                     r"\(e.g. params/decoder/mix/Dense_0/kernel\)"):
    inference.TrainedModel.from_variables(config, variables)
  ckpt = checkpoints.Checkpointer(workdir)
  ckpt.save(saved[-1] + 10, state.replace(step=saved[-1] + 10, params=params))
  ckpt.wait()
  ckpt.close()
  with pytest.raises(CheckpointError, match=f"checkpoint {saved[-1] + 10} in {workdir} holds "
                     "NaN or infinite values in 1 of its arrays .*saved, not checked: "
                     f"{', '.join(map(str, saved))}" r"\)"):
    inference.load_trained(workdir)
  assert inference.load_trained(workdir, saved[-1]).step == saved[-1]


def test_a_ctrl_c_that_jax_swallows_in_a_restore_is_not_a_bad_checkpoint(tmp_path, tiny_run,
                                                                         monkeypatch,
                                                                         entry_handlers):
  """A Ctrl-C that JAX swallowed while Orbax restored, its own error in its place, came out as
  the restore's CheckpointError ("could not be restored ... the config differs"), and
  training then moved a checkpoint without checksums aside as corrupt (review). In the entry
  points (their handlers here) the restore stops as the interrupt, nothing moved."""
  import shutil  # pylint: disable=import-outside-toplevel
  import signal  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  shutil.copytree(tiny_run("cvae")[0], workdir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))

  def restore(self, *args, **kwargs):  # As jax 0.7.2's tracing does inside the restore.
    try:
      os.kill(os.getpid(), signal.SIGINT)
      for _ in range(100):  # The handler's bytecode boundary.
        pass
    except:  # pylint: disable=bare-except
      pass
    raise Exception("couldn't apply typeof to args")  # pylint: disable=broad-exception-raised
  monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)
  with pytest.raises(KeyboardInterrupt):
    inference.load_trained(workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  entry_handlers.check()  # Raised once.


def test_a_config_edited_to_another_model_is_refused_at_the_restore(tmp_path, tiny_run):
  """A config.json edited to another model kind (cvae -> discvae): serving's partial restore
  left the weights the checkpoint lacks as placeholders, and the model's first call was a
  50-line traceback ("ShapeDtypeStruct is not a valid JAX type"; review). The restore names
  an array the checkpoint lacks and the fix."""
  import shutil  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  shutil.copytree(tiny_run("cvae")[0], workdir)
  path = os.path.join(workdir, "config.json")
  with open(path, encoding="utf-8") as f:
    config = json.load(f)
  config["model"]["name"] = "discvae"
  with open(path, "w", encoding="utf-8") as f:
    json.dump(config, f)
  with pytest.raises(CheckpointError, match=r"the checkpoint at .*checkpoints.\d+ holds no "
                     r"\S+/decoder_bg/\S+ \(nor \d+ more arrays\), which the config's model "
                     r"has: the config differs from the one that saved it \(the model's kind "
                     r"or layers; model.name: 'cvae' when saved, 'discvae' now\)"):
    inference.load_trained(workdir)  # With the checkpoint's model record.


def test_images_in_the_models_range_name_their_own_fix():
  """Images in [-1, 1] where [0, 1] is taken: the fix is (x + 1) / 2, not "divide by 255"."""
  x = _images(2).astype(np.float32) / 127.5 - 1.0
  with pytest.raises(InputError, match=r"the models' own \[-1, 1\] \(pass \(x \+ 1\) / 2\)"):
    inputs.check_images(x, S)
  with pytest.raises(InputError, match="divide uint8 images by 255"):
    inputs.check_images(x * 127.5, S)
  assert inputs.check_images((x + 1) / 2, S).shape == (2, S, S, 3)


@pytest.mark.parametrize("shape, fix", [
    ((4, S, S), "4 grey images, or one image with its channels first: for the first, repeat "
                "the grey channel, np.repeat(x[..., None], 3, axis=-1); for the second, move "
                "them last, np.moveaxis(x, 0, -1)"),  # Was the grey fix alone (review).
    ((3, S, S), "3 grey images, or one image with its channels first"),
    ((5, S, S), "grey, no channel axis: repeat the grey channel, np.repeat(x[..., None], 3, "
                "axis=-1)"),
    ((S, S), "one grey image: repeat the grey channel"),
    ((4, S, S, 1), "one channel (grey): np.repeat(x, 3, axis=-1)"),
    ((4, S, S, 2), "grey and alpha: drop the alpha and repeat the grey"),
    ((4, S, S, 4), "4 channels (RGBA): drop the alpha, x[..., :3]"),
    ((S, S, 4), "4 channels (RGBA)"),
    ((4, 3, S, S), "channels first: move them last, np.moveaxis(x, -3, -1)"),
    ((4, 2 * S, 2 * S, 3), f"resize or crop to {S}x{S}")])
def test_images_of_the_right_size_but_other_channels_name_them(cvae, key, shape, fix):
  """Review finding: grey or RGBA images of the right size were told to "resize or crop to
  32x32"; the channels are named, and how to make them RGB."""
  with pytest.raises(InputError, match=re.escape(f"images have shape {shape}; this model expects "
                                                 f"[N, {S}, {S}, 3] RGB ({fix}")):
    inference.reconstruct(cvae, np.zeros(shape, np.uint8), _attrs(), key=key)


def test_inference_functions_built_for_another_model_are_refused(untrained, cvae, key):
  """Was: Flax's ScopeParamNotFoundError from inside the first program."""
  other = tiny_config("cvae")
  other.model.width = 0.25
  wider = models.create_model(other.model)
  options = inference.options_for(cvae)
  for model in (untrained["discvae"].model, wider):
    with pytest.raises(InputError, match=r"fns were built for another model than this run's .*"
                       r"make_inference_fns\(trained.model, options\)"):
      inference.infer_latents(cvae, inputs.to_signed(_images()), _attrs(), key=key,
                              options=options,
                              fns=inference.make_inference_fns(model, options))


@pytest.mark.parametrize("key_name, value, words", [
    ("width", 0.0, "config.model.width=0.0 must be > 0 (1.0: the paper's widths)."),
    ("width", -1.0, "config.model.width=-1.0 must be > 0"),
    ("width", float("inf"), "config.model.width=inf must be a finite number."),
    ("z_dim", 0, "config.model.z_dim=0 must be a positive integer."),
    ("z_dim", -3, "config.model.z_dim=-3 must be a positive integer."),
    ("y_dim", -1, "config.model.y_dim=-1 must be a positive integer (the number of attributes; "
                  "0 for a folder dataset's")])
def test_a_model_of_sizes_no_model_has_is_refused_when_it_is_made(key_name, value, words):
  """A config built in Python need not have been through validate_config: was a model of one
  channel per layer for a width of 0 or -1 (taken), a ZeroDivisionError (z_dim=0) or JAX's
  TypeError (z_dim=-3) at its init (a review)."""
  config = tiny_config("cvae")
  config.model[key_name] = value
  with pytest.raises(ConfigError, match=re.escape(words)):
    models.create_model(config.model)


def test_the_variables_and_the_state_refuse_what_cannot_make_them(cvae, key):
  """A y_dim of 0 (a folder dataset's count before training) reaching init: was a
  ZeroDivisionError; dummy_inputs of a batch -1 or 2.5: JAX's TypeError;
  abstract_train_state without an optimiser: an AttributeError (a review)."""
  from a2i_jax import train_state  # pylint: disable=import-outside-toplevel
  config = tiny_config("cvae")
  config.model.y_dim = 0
  model = models.create_model(config.model)  # Allowed: train.py counts a folder's columns.
  for make in (lambda: models.init_variables(model, config.model, key),
               lambda: models.abstract_variables(model, config.model)):
    with pytest.raises(ConfigError, match=re.escape(
        "config.model.y_dim=0 must be a positive integer (the number of attributes")):
      make()
  for batch in (-1, 2.5, True):
    with pytest.raises(InputError, match=re.escape(f"batch={batch!r} is not valid")):
      models.dummy_inputs(cvae.config.model, batch)
  with pytest.raises(InputError, match="tx is a NoneType, not an optax transformation"):
    train_state.abstract_train_state(cvae.model, cvae.config, None)


def test_a_width_far_past_any_model_is_refused_from_shapes_traced_whole(monkeypatch, key):
  """Was: train.py --config.model.width=100000 traced for minutes (over 5 on 2 cores) before
  the host-memory refusal: `abstract_variables` (and `init_variables`, from Python) traced
  each wide convolution in blocks of SPLIT_OUTPUTS outputs (`conv_grad.split_outputs`),
  thousands of blocks per layer, though no variable needs a convolution's value. Both trace
  them whole now: one convolution per layer whatever the width (SPLIT_OUTPUTS=1 here stands
  for the width: it split the tiny CVAE's 9 into 319), and the refusal takes a second."""
  from a2i_jax.models import conv_grad  # pylint: disable=import-outside-toplevel
  config = tiny_config("cvae")
  model = models.create_model(config.model)
  monkeypatch.setattr(conv_grad, "SPLIT_OUTPUTS", 1)  # Also fresh traces: part of their keys.
  conv = jax.lax.conv_general_dilated
  for make in (lambda: models.abstract_variables(model, config.model),
               lambda: models.init_variables(model, config.model, key)):
    traced = []
    monkeypatch.setattr(jax.lax, "conv_general_dilated",
                        lambda *a, **k: traced.append(1) or conv(*a, **k))
    kernels = [x for x in jax.tree_util.tree_leaves(make()) if x.ndim == 4]
    assert 1 <= len(traced) <= len(kernels)
  monkeypatch.undo()
  config.model.width = 100000.0
  model = models.create_model(config.model)
  for make in (lambda: models.check_fits_host_memory(model, config.model),
               lambda: models.init_variables(model, config.model, key)):
    with pytest.raises(ConfigError, match=r"^the model's [\d,]+ variables do not fit in this "
                       r"machine's memory \(the initial values take [\d,.]+ GiB"):
      make()


def test_the_inference_functions_inside_a_callers_jit_and_complex_latents(cvae, key):
  """`sample` inside the caller's jax.jit or jax.eval_shape: was JAX's
  TracerArrayConversionError traceback (they run compiled programs of their own on host
  values); complex latents given to `decode`: the imaginary part dropped with NumPy's
  warning alone (a review)."""
  words = "is traced (inside jax.jit, jax.vmap or jax.eval_shape); this function runs its own"
  for transform in (jax.jit, lambda f: functools.partial(jax.eval_shape, f)):
    for call, arg in ((lambda y: inference.sample(cvae, y, key)["image"], _attrs(2)),
                      (lambda k: inference.sample(cvae, _attrs(2), k)["image"], key),
                      (lambda y: inference.decode(cvae, {"z": y[:, :1] * 0}, y)["image"],
                       _attrs(2))):
      with pytest.raises(InputError, match=re.escape(words)):
        transform(call)(arg)
  z = np.zeros((2, cvae.config.model.z_dim), np.complex64)
  with pytest.raises(InputError, match=re.escape("latents['z'] holds complex numbers; pass "
                                                 "real values.")):
    inference.decode(cvae, {"z": z}, _attrs(2))


def test_more_arguments_a_notebook_gets_wrong(cvae, key, tmp_path):
  """complete without its mask (was: "observed has shape ()"); a run's checkpoints/ folder
  for its workdir (was: "not written by train.py"); no workdir at all (was: os.path's
  TypeError); a negative centre crop (was: "image_size=0 is not valid")."""
  from a2i_jax.data.base import centre_cropped  # pylint: disable=import-outside-toplevel
  with pytest.raises(InputError, match="complete needs the observed-pixel mask .* use "
                     "reconstruct"):
    inference.complete(cvae, _images(), _attrs(), None, key=key)
  (tmp_path / "config.json").write_text("{}")
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(ConfigError, match=f"is inside the run's folder; pass that folder, "
                     f"{tmp_path}"):
    inference.load_trained(str(tmp_path / "checkpoints"))
  for workdir in (None, ""):  # "" was the current folder's config.json, without a word.
    with pytest.raises(ConfigError, match=f"workdir={workdir!r}: pass the run's folder"):
      inference.load_trained(workdir)
  data = Dataset("synthetic", ("a",), ("binary",), {"test": Split(_images(2), _attrs(2)[:, :1])})
  for crop in (-3, 2.5, True):
    with pytest.raises(ConfigError, match=f"crop_size={crop!r}: pass 0 .no crop."):
      centre_cropped(data, crop)
  assert centre_cropped(data, 0) is data


def test_odd_inputs_from_a_notebook(cvae, key):
  """Review findings on the API's inputs: a ragged list was NumPy's ValueError; a [0, 1] image
  that a resize took 2e-7 over 1 was refused as "[0, 1]"; one a cubic resize took to -0.04
  was told to pass (x + 1) / 2, which washes it out; bfloat16 images were "not floats";
  pad_to=2.5 was taken and 13.5 a TypeError; observed= to reconstruct or edit a TypeError;
  from_variables(step=1.5) kept step 1."""
  x = _images(2)
  with pytest.raises(InputError, match=r"images is a list of items of different shapes "
                     r"\(\(16, 16, 3\), \(32, 32, 3\)\)"):
    inference.reconstruct(cvae, [x[0], x[1][:16, :16]], _attrs(2), key=key)
  with pytest.raises(InputError, match="observed is a list of items of different shapes"):
    inference.complete(cvae, x, _attrs(2), [np.ones((S, S)), np.ones((16, 16))], key=key)
  for bad in ([[1.0, 2.0], [3.0]], [["a", "b"], ["c", "d"]]):
    with pytest.raises(InputError, match="attribute prior"):
      inference.AttributePrior.fit(bad)
  unit = x / 255.0
  over = unit.copy()
  over[0, 0, 0, 0] = 1.0000002
  signed = inputs.check_images(over, S)
  assert signed.max() == 1.0 and signed.dtype == np.float32
  np.testing.assert_allclose(inputs.check_images(unit.astype(jax.numpy.bfloat16), S),
                             inputs.check_images(unit, S), atol=1e-2)
  over[0, 0, 0, 1] = np.float32(1.001)  # Float32's 1.001 is just above float64's.
  assert inputs.check_images(over.astype(np.float32), S).max() == 1.0
  with pytest.raises(InputError, match=r"the models' own \[-1, 1\]"):  # A bright signed one.
    inputs.check_images(unit * 1.4 - 0.4, S)
  with pytest.raises(InputError, match="images is a list of items of different shapes "
                     r"\(ragged\)"):  # An item ragged itself.
    inputs.check_images([x[0].tolist(), [x[1][0].tolist(), [1, 2]]], S)
  under = unit.copy()
  under[0, 0, 0, 0] = -0.038
  with pytest.raises(InputError, match=r"range over \[-0.038, 1\], a little outside .*np.clip"):
    inputs.check_images(under, S)
  with pytest.raises(InputError, match=r"the models' own \[-1, 1\] \(pass \(x \+ 1\) / 2\)"):
    inputs.check_images(unit * 2 - 1, S)
  for pad_to in (2.5, -1, 13.5):
    with pytest.raises(InputError, match="pad_to"):
      inference.infer_latents(cvae, inputs.to_signed(x), _attrs(2), key=key, pad_to=pad_to)
  for use in (inference.reconstruct, lambda *a, **k: inference.edit(*a, {0: 1.0}, **k)):
    with pytest.raises(InputError, match="takes fully observed images; for partly observed "
                       "ones use complete"):
      use(cvae, x, _attrs(2), key=key, observed=np.ones((2, S, S)))
  config = tiny_config("cvae")
  with pytest.raises(InputError, match="step=1.5"):
    inference.TrainedModel.from_variables(config, _shapes(config), step=1.5)
  assert inference.TrainedModel.from_variables(config, _shapes(config),
                                               step=jax.numpy.int32(3)).step == 3


def _edit_model(workdir, **values):
  """Sets `values` in the model section of `workdir`'s config.json (an edit by hand)."""
  path = os.path.join(workdir, "config.json")
  with open(path, encoding="utf-8") as f:
    config = json.load(f)
  config["model"].update(values)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)


def test_a_config_json_edited_to_another_model_of_the_same_shapes_is_refused(
    tiny_run, tmp_path, data_cache):
  """A disCVAE's config.json edited from composition "layered" to "reference" keeps every
  array's shape: the checkpoint was restored into the other model and its reconstructions
  changed without a word. Each checkpoint records its model section (under its checksums);
  serving and training's resume compare it with the one in use, naming each key, both values
  and the fix. An edit of a compute-only key (how the same function is computed) passes."""
  import shutil  # pylint: disable=import-outside-toplevel
  from a2i_jax import checkpoints, files, train_lib  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  shutil.copytree(tiny_run("discvae")[0], workdir)  # The shared run stays as it is.
  step = inference.load_trained(workdir).step  # Unedited: served.
  folder = os.path.join(workdir, "checkpoints", str(step))
  with open(os.path.join(folder, checkpoints.MODEL_RECORD_FILE), encoding="utf-8") as f:
    assert json.load(f)["model"]["composition"] == "layered"
  assert checkpoints.MODEL_RECORD_FILE in files.read_digests(
      os.path.join(folder, checkpoints.CHECKSUM_FILE))
  _edit_model(workdir, upsample_mode="direct")  # The same function: still served.
  assert inference.load_trained(workdir).step == step
  # A weight of the training loss alone: serving computes nothing otherwise (review: was
  # refused as "would compute something they were not trained for"). Put back after.
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    weight = json.load(f)["model"]["gate_loss_weight"]
  _edit_model(workdir, gate_loss_weight=weight + 0.5)
  assert inference.load_trained(workdir).step == step
  _edit_model(workdir, gate_loss_weight=weight)
  _edit_model(workdir, composition="reference")
  with pytest.raises(ConfigError, match=re.escape(
      f"checkpoint {step} in {workdir}/checkpoints was trained as another model than the "
      "config's (model.composition: 'layered' when saved, 'reference' now): its weights would "
      "compute something they were not trained for. Put the \"model\" section of "
      f"{workdir}/config.json back to the values the checkpoint records (\"composition\": "
      "\"layered\"): it was edited since the save, or the checkpoint is another run's. To "
      "resume training, pass them too (--config.model.composition=layered)")):
    inference.load_trained(workdir)
  # Training's resume, with the edited values (what config.json's check would advise) or
  # the run's own: config.json is named as edited before any data load.
  for composition in ("reference", "layered"):
    config = tiny_config("discvae", data_cache)
    config.model.composition = composition
    with pytest.raises(ConfigError, match=re.escape(
        f"{workdir}/config.json records another model than checkpoint {step} in "
        f"{workdir}/checkpoints was trained as (model.composition: 'layered' when saved, "
        "'reference' in config.json): it was edited since the save") + ".* Put its \"model\" "
        "section back to the values the checkpoint records \\(\"composition\": \"layered\"\\) "
        "and resume with them \\(--config.model.composition=layered\\)"):
      train_lib.train_and_evaluate(config, workdir)
  # Without config.json, the resume's restore compares the record with --config itself.
  os.remove(os.path.join(workdir, "config.json"))
  config.model.composition = "reference"
  config.num_train_steps = step + 1
  with pytest.raises(ConfigError, match=re.escape(
      "(model.composition: 'layered' when saved, 'reference' now)")):
    train_lib.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [str(step)]


def test_a_checkpoint_saved_without_a_model_record_restores_as_before(tiny_run, tmp_path,
                                                                       caplog):
  """A checkpoint of a version before the model record (none in its folder nor its
  checksums) is served and resumed as before: nothing to compare, no new warning."""
  import logging  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  from a2i_jax import checkpoints, files, train_lib  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  shutil.copytree(tiny_run("discvae")[0], workdir)
  directory = os.path.join(workdir, "checkpoints")
  for name in os.listdir(directory):  # As an older version saved them.
    path = os.path.join(directory, name, checkpoints.CHECKSUM_FILE)
    sums = files.read_digests(path)
    del sums[checkpoints.MODEL_RECORD_FILE]
    os.remove(os.path.join(directory, name, checkpoints.MODEL_RECORD_FILE))
    files.write_digests(path, sums)
  assert checkpoints.newest_recorded_model(workdir) is None
  caplog.set_level(logging.WARNING)
  trained = inference.load_trained(workdir)
  assert trained.config.model.composition == "layered"
  _edit_model(workdir, composition="reference")  # Not detectable without a record.
  assert inference.load_trained(workdir).config.model.composition == "reference"
  config = tiny_config("discvae")
  config.model.composition = "reference"
  train_lib._check_resume_compatible(workdir, config)  # pylint: disable=protected-access
  assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_grid_columns_of_uint8_inputs_beside_float_outputs():
  """Fault hunt: stack_columns([uint8 inputs, out["completion"]]) stacked 0 .. 255 beside
  [0, 1] as floats, which make_grid refused with "x / 255 for 0 .. 255": followed, the outputs
  went black. Columns of other shapes, no columns, and a ragged list to make_grid or overlay
  were NumPy's ValueErrors."""
  from a2i_jax import visualize  # pylint: disable=import-outside-toplevel
  x = _images(2)
  out = np.random.default_rng(1).uniform(size=(2, S, S, 3)).astype(np.float32)
  both = visualize.stack_columns([x, out])
  np.testing.assert_allclose(both[0::2], x / 255.0, atol=1e-6)
  np.testing.assert_array_equal(both[1::2], out)
  assert visualize.make_grid(both, 2).shape == (2 * (S + 1) + 1, 2 * (S + 1) + 1, 3)
  assert visualize.stack_columns([x, x]).dtype == np.uint8  # One dtype: as it was.
  with pytest.raises(InputError, match=r"columns of one shape .*\(2, 32, 32, 3\), "
                     r"\(2, 32, 32, 1\)"):
    visualize.stack_columns([x, out[..., :1]])
  with pytest.raises(InputError, match="got an empty list"):
    visualize.stack_columns([])
  with pytest.raises(InputError, match="images is a list of items of different shapes"):
    visualize.make_grid([x[0], x[1][:16]], 2)
  m = _eyes(2)
  with pytest.raises(InputError, match="images is a list of items of different shapes"):
    occlusions.overlay([x[0], x[1][:16]], m)
  # The mask forms complete takes: [N, S, S], and one [S, S, 1] (make_mask(...)[0]).
  np.testing.assert_array_equal(occlusions.overlay(x, m[..., 0]), occlusions.overlay(x, m))
  np.testing.assert_array_equal(occlusions.overlay(x[:1], m[0]),
                                occlusions.overlay(x[:1], m[:1]))
  np.testing.assert_array_equal(inputs.check_mask(m[0], 1, S, "observed"), m[:1])


def test_sampling_and_recognition_options_refuse_what_they_do_not_take(cvae, key):
  """Fault hunt: a TrainedModel to sampling's functions (which take its module) was an
  AttributeError; decode_images' latents missing one or of another row count than y were a
  KeyError and JAX's concatenation TypeError; recognition_options(trained) a TypeError."""
  for call, served in ((lambda m: sampling.prior_latents(m, 2, key), "prior_latents"),
                       (lambda m: sampling.decode_images(m, cvae.variables, {}, _attrs(2)),
                        "decode"),
                       (lambda m: sampling.make_sample_fn(m), "sample")):
    with pytest.raises(InputError, match=r"takes the model's Flax module, not TrainedModel; "
                       rf"pass trained.model .* inference.{served}\(trained"):
      call(cvae)
  z = cvae.config.model.z_dim
  with pytest.raises(InputError, match=r"latents \{name: \[N, size\]\} for \['z'\]; got \[\]"):
    sampling.decode_images(cvae.model, cvae.variables, {}, _attrs(2))
  with pytest.raises(InputError, match=r"one row per image .*z \(4, 8\), y \(1, 10\)"):
    sampling.decode_images(cvae.model, cvae.variables, {"z": np.zeros((4, z))}, _attrs(1))
  for bad in (cvae, {"steps": 1}):
    with pytest.raises(InputError, match=r"recognition_options takes InferenceOptions, not "
                       r"\w+; build them with inference.options_for"):
      inference.recognition_options(bad)


def test_a_mask_that_hides_every_pixel_is_refused(cvae, key):
  """Fault hunt: an observed mask of zeros for an image (a mask that marks the hole with 1,
  inverted; an all-black mask file) was inferred from nothing, a meaningless completion and
  no word."""
  m = _eyes()
  m[2] = 0.0
  prior = inference.AttributePrior(np.zeros(Y, np.float32), np.eye(Y, dtype=np.float32))
  for call in (lambda o: inference.complete(cvae, _images(), _attrs(), o, key=key),
               lambda o: inference.infer_attributes(cvae, _images(), prior, o, key=key)):
    with pytest.raises(InputError, match=r"observed hides every pixel of 1 of the 4 images "
                       r"\(2\).* pass 1 - mask"):
      call(m)
    with pytest.raises(InputError, match=r"every pixel of 4 of the 4 images \(0, 1, 2, 3\)"):
      call(np.zeros((4, S, S), bool))
  # A named region that covers a whole crop (LFW's "face" in a 32 crop of 64, a valid config)
  # is refused where the mask is made, with its own cause (review: was the completion's
  # advice to invert a mask nobody gave).
  with pytest.raises(InputError, match="a 32x32 centre crop of 64x64 images lies inside the "
                     "'face' region, so its mask would hide every pixel"):
    occlusions.make_mask("face", 32, 1, dataset="lfw", crop_from=64)
  assert occlusions.make_mask("face", 32, 1, dataset="lfw", crop_from=48).max() == 1.0
  # The defaults of such a run leave the region out (were: `evaluate` and `complete` without
  # names stopped on it, "use another occlusion"); whole images keep every region.
  assert occlusions.occlusions_for("lfw", 32, 64) == tuple(
      n for n in occlusions.OCCLUSION_NAMES if n != "face")
  assert occlusions.occlusions_for("lfw", 32, 48) == occlusions.OCCLUSION_NAMES
  assert occlusions.occlusions_for("lfw", 32) == occlusions.OCCLUSION_NAMES
  occlusions.make_masks(occlusions.occlusions_for("lfw", 32, 64), 32, 1, crop_from=64,
                        dataset="lfw")


def test_an_attribute_name_in_place_of_its_index_names_the_index(cvae, key):
  """Fault hunt: edit(..., {"smile": 1.0}) with the run's names at hand was "attribute
  index='smile' is not valid; pass an integer", the number left to find."""
  names = tuple(f"a{i}" for i in range(Y))
  named = dataclasses.replace(cvae, attribute_names=names, cache={})
  with pytest.raises(InputError, match=re.escape("attribute index='a3' is not valid; pass an "
                                                 "integer in [0, 10); edit takes {attribute "
                                                 "index: new value}. 'a3' is the name of "
                                                 "attribute 3: pass 3 (trained.attribute_names"
                                                 ".index('a3'))")):
    inference.edit(named, _images(), _attrs(), {"a3": 1.0}, key=key)
  with pytest.raises(InputError, match="'hat' is a name, and this run's attributes are a0, a1"):
    inference.progression(named, _attrs(1)[0], "hat", [0.0, 1.0], key=key)
  with pytest.raises(InputError, match="attribute index='a3' is not valid"):  # No names.
    inference.edit(cvae, _images(), _attrs(), {"a3": 1.0}, key=key)


def test_one_mask_for_several_images_names_the_repeat(cvae, key):
  """Fault hunt: one [S, S] mask for 4 images was refused as "expected [4, 32, 32], one per
  image", without the repeat that makes one per image."""
  for one in (_eyes(1)[0, ..., 0], _eyes(1)[0], _eyes(1)):
    with pytest.raises(InputError, match=re.escape(
        f"one per image; for the same mask on every image, np.repeat(observed.reshape(1, {S}, "
        f"{S}, 1), 4, axis=0)")):
      inference.complete(cvae, _images(), _attrs(), one, key=key)
  with pytest.raises(InputError, match=r"\(2, 32, 32, 1\); expected .*one per image\.$"):
    inference.complete(cvae, _images(), _attrs(), _eyes(2), key=key)


def test_grids_of_masks_of_one_grey_image_and_of_rows_of_images():
  """Fault hunt: one grey [H, W, 1] image was tiled as H images of W x 1 pixels, without a
  word; masks as make_mask gives them ([N, S, S, 1]) were refused though [N, S, S] was
  taken; progression's [L, K, S, S, 3] was refused without the reshape that shows it."""
  from a2i_jax import visualize  # pylint: disable=import-outside-toplevel
  m = _eyes(2)
  np.testing.assert_array_equal(visualize.make_grid(m, 2), visualize.make_grid(m[..., 0], 2))
  with pytest.raises(InputError, match=r"shape \(32, 32, 1\): one grey image\? .*images\[None\]"):
    visualize.make_grid(m[0], 1)
  with pytest.raises(InputError, match=re.escape("pass images.reshape((-1,) + images.shape[2:]) "
                                                 "with ncols=3")):
    visualize.make_grid(np.zeros((2, 3, S, S, 3), np.float32), 3)


def test_inference_functions_of_a_trained_model_and_other_misplaced_arguments(cvae, key):
  """Fault hunt: make_inference_fns(trained, options), as the other functions take the
  model, was "'TrainedModel' object has no attribute 'default_energy'"; a dict of options
  and a mesh that is no Mesh were AttributeErrors; images=None was "images have shape ()"."""
  options = inference.options_for(cvae)
  with pytest.raises(InputError, match="make_inference_fns takes the model's Flax module, not "
                     "TrainedModel; pass trained.model"):
    inference.make_inference_fns(cvae, options)
  with pytest.raises(InputError, match="make_inference_fns takes InferenceOptions, not dict"):
    inference.make_inference_fns(cvae.model, {"steps": 1})
  with pytest.raises(InputError, match="mesh is a str, not a jax.sharding.Mesh"):
    inference.infer_latents(cvae, inputs.to_signed(_images()), _attrs(), key=key, mesh="cpu")
  with pytest.raises(InputError, match=r"images are missing \(None\)"):
    inference.reconstruct(cvae, None, _attrs(), key=key)


def test_a_progression_beyond_the_training_range_says_so(cvae, key, caplog, monkeypatch):
  """Fault hunt: edit warned of a value the model never saw; progression, which sweeps one
  (np.linspace(-3, 3, 7) over a 0 / 1 attribute), gave its images without a word."""
  ranges = ((0.0, 1.0),) * Y
  named = dataclasses.replace(cvae, attribute_ranges=ranges, cache={})
  monkeypatch.setattr(inference.uses, "decode", lambda trained, lat, ys: {
      "image": np.zeros((len(ys), S, S, 3), np.float32)})  # Nothing to see but the warning.
  inference.progression(named, _attrs(1)[0], 2, np.linspace(-3, 3, 7), key=key, num_latents=1)
  assert ("the swept value of attribute 2, from -3 to 3, lies outside its training range [0, "
          "1]; the model has not seen such values, so the progression may" in caplog.text)
  caplog.clear()
  inference.progression(named, _attrs(1)[0], 2, [0.0, 1.0], key=key, num_latents=1)
  assert "outside" not in caplog.text


def _outside_said(caplog):
  """The warnings of attributes outside the training range logged so far."""
  return [r.getMessage() for r in caplog.records if "outside" in r.getMessage()]


def test_a_loop_of_calls_says_each_range_warning_once(cvae, key, caplog, monkeypatch):
  """Fault hunt: the warning of attributes outside the training range came once per call, so
  infer.py's progression of each attribute (73 for LFW) said one base vector's columns 72
  times, and `evaluation.evaluate` 2 x (1 + occlusions) times; now once per model, function
  and column's values. Other values, another function or another model say it again."""
  named = dataclasses.replace(cvae, attribute_ranges=((0.0, 1.0),) * Y, cache={})
  monkeypatch.setattr(inference.uses, "decode", lambda trained, lat, ys: {
      "image": np.zeros((len(ys), S, S, 3), np.float32)})  # Nothing to see but the warnings.
  base = _attrs(1)[0]
  base[3] = 5.0
  for j in range(Y):  # As infer.py's progression: one base, each attribute swept in turn.
    inference.progression(named, base, j, [0.0, 1.0], key=key, num_latents=1)
  for _ in range(3):  # A sweep beyond the range, again and again.
    inference.progression(named, base, 2, [-3.0, 3.0], key=key, num_latents=1)
  said = _outside_said(caplog)
  assert len(said) == 2, said
  assert "in 1 of 10 columns (attribute 3: 5, trained on [0, 1])" in said[0], said
  assert said[1].startswith("the swept value of attribute 2, from -3 to 3, lies"), said
  caplog.clear()
  base[3] = 7.0  # Other values: said.
  inference.progression(named, base, 0, [-3.0, 4.0], key=key, num_latents=1)
  said = _outside_said(caplog)
  assert len(said) == 2 and "attribute 3: 7" in said[1] and "from -3 to 4" in said[0], said

  def stop(*args, **kwargs):  # The check comes first; what these would compile is not needed.
    raise StopIteration
  monkeypatch.setattr(inference.uses, "_infer_latents", stop)
  bad = _attrs()
  bad[:, 1] = -1.0
  caplog.clear()
  for _ in range(2):  # As evaluate: two methods, each a reconstruction and a completion.
    for call in (lambda: inference.reconstruct(named, _images(), bad, key=key),
                 lambda: inference.complete(named, _images(), bad, _eyes(), key=key)):
      with pytest.raises(StopIteration):
        call()
  said = _outside_said(caplog)
  assert [m.split(" lie ")[0] for m in said] == [
      "the attributes given to reconstruct", "the attributes given to complete"], said
  caplog.clear()
  again = dataclasses.replace(cvae, attribute_ranges=named.attribute_ranges)  # Another model.
  with pytest.raises(StopIteration):
    inference.reconstruct(again, _images(), bad, key=key)
  assert len(_outside_said(caplog)) == 1, caplog.text


def test_a_column_constant_in_training_has_a_margin(cvae, key, caplog, monkeypatch):
  """Fault hunt: a column constant in training (a small folder dataset's: min == max) had a
  margin of a tenth (or, for edit's and progression's new values, 1 %) of a range of 0, and
  every other value was warned of, 1.05 for a constant 1 too. Its margin is now that of its
  value's size, at least 1: a tenth of 1 for a constant 0 or 1, 4 for a constant 40."""
  ranges = ((0.0, 1.0),) * 4 + ((1.0, 1.0), (0.0, 0.0), (40.0, 40.0)) + ((0.0, 1.0),) * 3
  monkeypatch.setattr(inference.uses, "decode", lambda trained, lat, ys: {
      "image": np.zeros((len(ys), S, S, 3), np.float32)})
  near = _attrs(1)[0]
  near[4:7] = 1.05, -0.05, 43.0
  named = dataclasses.replace(cvae, attribute_ranges=ranges, cache={})
  inference.progression(named, near, 0, [0.0, 1.0], key=key, num_latents=1)
  for j, value in ((4, 1.005), (5, 0.005), (6, 40.3)):  # 1 % of 1, 1, 40: the new values'.
    inference.progression(named, near, j, [value], key=key, num_latents=1)
  assert not _outside_said(caplog), caplog.text
  far = near.copy()
  far[4:7] = 0.0, 1.0, 50.0  # The other class of a 0 / 1 attribute: never seen, said.
  inference.progression(named, far, 0, [0.0, 1.0], key=key, num_latents=1)
  for j, value in ((4, 0.98), (5, 0.02), (6, 41.0)):
    inference.progression(named, near, j, [value], key=key, num_latents=1)
  said = _outside_said(caplog)
  assert len(said) == 4, said
  assert ("in 3 of 10 columns (attribute 4: 0, trained on [1, 1]; attribute 5: 1, trained on "
          "[0, 0]; attribute 6: 50, trained on [40, 40])") in said[0], said


def test_bfloat16_masks_are_floats():
  """Fault hunt: a bfloat16 mask (a JAX model's dtype) was refused as "has dtype bfloat16;
  pass bool, floats in [0, 1] ...", though bfloat16 images are taken."""
  m = _eyes(2)
  half = jax.numpy.asarray(m, jax.numpy.bfloat16)
  np.testing.assert_array_equal(inputs.check_mask(half, 2, S, "observed"), m)
  np.testing.assert_array_equal(occlusions.hidden_fraction(np.asarray(half)),
                                occlusions.hidden_fraction(m))


def test_the_loaders_refuse_a_path_a_dict_or_the_wrong_config_section(untrained):
  """Was an AttributeError for likely slips: load_data("/some/run") ("'str' object has no
  attribute 'config'"), load_run_data({"data": 1}, None), from_variables(config.model, ...)
  ("'model'") or from_variables({"model": 1}, ...), load_dataset(config) ("'name'"),
  load_dataset({"name": "synthetic"}) or load_dataset(None), and as_trained(dataset, "x")."""
  from a2i_jax.data import load_dataset  # pylint: disable=import-outside-toplevel
  from a2i_jax.data.base import as_trained  # pylint: disable=import-outside-toplevel
  cvae = untrained["cvae"]
  config, variables = cvae.config, cvae.variables
  with pytest.raises(InputError, match=r"not str; load it first: "
                     r"inference.load_trained\('/some/run'\)"):
    inference.load_data("/some/run")
  section = r"pass the whole experiment config, not config.model or config.data"
  for whole, fn in ((config.data, lambda c: inference.load_run_data(c, None)),
                    (config.model, lambda c: inference.TrainedModel.from_variables(c, variables))):
    with pytest.raises(ConfigError, match="the config is a dict, not an ml_collections"):
      fn({"data": 1, "model": 1})
    with pytest.raises(ConfigError, match=f"section of a config\\?\\); {section}"):
      fn(whole)
  with pytest.raises(ConfigError, match="load_dataset takes the data section of a config, not "
                     "the whole config; pass config.data"):
    load_dataset(config)
  for wrong, kind in (({"name": "synthetic"}, "dict"), (None, "NoneType")):
    with pytest.raises(ConfigError, match=f"load_dataset takes config.data .*, not a {kind}"):
      load_dataset(wrong)
  with pytest.raises(ConfigError, match=r"has no cache_dir, data_dir \(is it config.data\?\)"):
    load_dataset(config.model)
  dataset = load_dataset(config.data, False)
  with pytest.raises(InputError, match="info is a str, not the record of a run's dataset; pass "
                     r"checkpoints.load_dataset_info\(workdir\)"):
    as_trained(dataset, "x")
  assert as_trained(dataset, None) is dataset


def test_the_loaders_explain_a_runs_folder_dataset_that_is_not_there(untrained, tmp_path,
                                                                     monkeypatch):
  """Was: infer.py alone explained a run whose folder dataset is not at its data.path (moved
  or deleted since, or a relative path read from another folder); load_run_data and
  load_data gave the folder loader's "<path>/images does not exist ... An own dataset is a
  folder with images/ ...", as if the user had pointed at the wrong folder (read-through).
  Both explain it now, in an error of the classes both gave before."""
  from a2i_jax.errors import DatasetNotPreparedError  # pylint: disable=import-outside-toplevel
  config = tiny_config("cvae")
  config.data.name, config.data.path = "folder", str(tmp_path / "gone")
  workdir = str(tmp_path / "w")
  trained = dataclasses.replace(untrained["cvae"], config=config, workdir=workdir)
  loaders = (lambda: inference.load_run_data(config, workdir, progress=False),
             lambda: inference.load_data(trained, progress=False))
  record = os.path.join(workdir, "config.json")
  for load in loaders:
    with pytest.raises(DatasetNotPreparedError) as e:
      load()
    assert isinstance(e.value, InputError)
    assert str(e.value) == (
        f"this run was trained on the folder dataset {tmp_path / 'gone'} (data.path in "
        f"{record}), which no longer exists; infer.py and the inference API read its test "
        "split and training attributes from there. Move the folder back, or set data.path in "
        "that file to where it is now (a model loaded before: load it again).")
  monkeypatch.chdir(tmp_path)
  config.data.path = "relative/mine"  # As given to train.py in another folder.
  for load in loaders:
    with pytest.raises(InputError) as e:
      load()
    assert str(e.value) == (
        f"this run's folder dataset is data.path='relative/mine' in {record}, a path relative "
        f"to the folder a program runs in, and from here it is {tmp_path / 'relative/mine'}, "
        "which does not exist; run infer.py from the folder train.py ran in (so too a program "
        "that loads the run's data), or set data.path in that file to the dataset's absolute "
        "path.")


def test_the_loaders_check_the_config_once(untrained, monkeypatch):
  """Was: load_run_data checked that its config is a whole one, and the loading it shares
  with load_data checked it again (read-through)."""
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax.inference import restore  # pylint: disable=import-outside-toplevel
  checked = []
  real = config_lib.check_whole_config
  monkeypatch.setattr(config_lib, "check_whole_config",
                      lambda *args: checked.append(args[1]) or real(*args))

  import faults_lib  # pylint: disable=import-outside-toplevel
  Loaded = faults_lib.no_data_load(monkeypatch, restore)  # Past the checks: nothing loaded.
  cvae = untrained["cvae"]
  for load, fn in ((lambda: inference.load_run_data(cvae.config, None), "load_run_data"),
                   (lambda: inference.load_data(cvae), "load_data")):
    checked.clear()
    with pytest.raises(Loaded):
      load()
    assert checked == [fn]


def test_from_signed_refuses_integers_and_numpy_values_outside_minus_one_to_one():
  """Was: from_signed(np.array([2.0, -3.0])) gave [1.5, -1.0] (outside [0, 1]) and uint8
  images in [0, 255] were mapped to [0.5, 128] without a word. A JAX array (a model's
  output, under jit too) is mapped as it is: its callers clip the overshoot."""
  with pytest.raises(InputError, match=r"from_signed takes floats in \[-1, 1\] \(a model's "
                     r"images\); these range over \[-3, 2\] \(scale them to \[-1, 1\] first"):
    inputs.from_signed(np.array([2.0, -3.0]))
  with pytest.raises(InputError, match=r"these are uint8 \(images in \[0, 255\]: to_unit\(x\)"):
    inputs.from_signed(np.array([0, 255], np.uint8))
  with pytest.raises(InputError, match="these are uint8"):
    jax.jit(inputs.from_signed)(jax.numpy.zeros(2, jax.numpy.uint8))
  with pytest.raises(InputError, match="these hold NaN or infinity"):
    inputs.from_signed(np.array([0.0, np.nan]))
  np.testing.assert_allclose(inputs.from_signed(np.array([-1.0, 0.0, 1.0005], np.float32)),
                             [0.0, 0.5, 1.00025])  # Rounding's slack.
  np.testing.assert_allclose(jax.jit(inputs.from_signed)(jax.numpy.array([2.0])), [1.5])


# ------------------------------------------------------------------ PIL images, checkpoints

def test_complete_keeps_the_rgb_pixels_of_a_pil_image_of_any_mode(tiny_run, key):
  """Review finding: complete converted a PIL image to RGB for the inference but kept the
  observed pixels of the raw image: a YCbCr or HSV image's own values were pasted into the
  completion without a word, and an L, RGBA or P image was NumPy's reshape error (reconstruct
  and edit take them). Each now completes as its RGB pixels do."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  trained = inference.load_trained(tiny_run("cvae")[0])
  options = inference.options_for(trained, steps=1, restarts=1)
  rgb = Image.fromarray(_images(1)[0])
  for mode in ("YCbCr", "HSV", "L", "RGBA", "P"):
    image = rgb.convert(mode)
    pixels = inputs.image_to_rgb(image)
    out = inference.complete(trained, image, _attrs(1), _eyes(1), key=key, options=options)
    want = inference.complete(trained, pixels, _attrs(1), _eyes(1), key=key, options=options)
    np.testing.assert_allclose(out["completion"], want["completion"], atol=1e-6,
                               err_msg=mode)
    observed = _eyes(1)[0, ..., 0].astype(bool)
    np.testing.assert_allclose(out["completion"][0][observed], pixels[observed] / 255.0,
                               atol=1e-6, err_msg=mode)


def test_a_save_over_a_checkpoint_the_checkpointer_did_not_write_is_refused(tmp_path):
  """Review finding: a save of a step that had a checkpoint was skipped without a word, so a
  notebook that restored step 2, trained on and saved step 4 beside the old step 4 lost the
  new state (a restore of 4 gave the old one); a new run's save over an earlier run's step the
  same. Now refused, naming the folder; a save of a step this checkpointer just saved (a stop
  right after a checkpoint) is still a no-op, and the save goes in once the folder is moved."""
  from a2i_jax import checkpoints  # pylint: disable=import-outside-toplevel
  state = lambda v: {"w": jax.numpy.full((4,), v, jax.numpy.float32)}
  target = {"w": jax.ShapeDtypeStruct((4,), jax.numpy.float32)}
  workdir = str(tmp_path / "w")
  folder = os.path.join(workdir, "checkpoints", "4")
  refusal = re.escape(
      f"cannot save step 4 in {workdir}/checkpoints: {folder} holds a checkpoint of that step "
      "saved before (by an earlier run, or before this checkpointer restored an older step), "
      "and a save never overwrites one; to save this state as step 4, move that step folder "
      f"out of {workdir}/checkpoints first (it keeps the old state), or save into a new "
      "workdir.")
  ckpt = checkpoints.Checkpointer(workdir)
  try:
    ckpt.save(2, state(2.0))
    ckpt.save(4, state(4.0))
    ckpt.save(4, state(4.0))  # Saved by this checkpointer: nothing happens.
    ckpt.restore(target, 4)
    ckpt.save(4, state(4.0))  # Restored at 4: still the same state.
    ckpt.restore(target, 2)  # Trained on from step 2: another step 4.
    with pytest.raises(CheckpointError, match=refusal):
      ckpt.save(4, state(40.0))
    assert float(ckpt.restore(target, 4)["w"][0]) == 4.0
  finally:
    ckpt.close()
  ckpt = checkpoints.Checkpointer(workdir)  # Another run: its step 4 is not this one's.
  try:
    with pytest.raises(CheckpointError, match=refusal):
      ckpt.save(4, state(40.0))
    os.rename(folder, str(tmp_path / "old4"))  # As the message says.
    ckpt.save(4, state(40.0))
    ckpt.save(4, state(40.0))
    assert float(ckpt.restore(target, 4)["w"][0]) == 40.0
  finally:
    ckpt.close()
  assert ckpt.all_steps() == [2, 4]


def test_orbax_metadata_that_is_no_json_object_names_its_step_without_checksums(tmp_path):
  """Review finding: an older version's step (no checksum file) whose _CHECKPOINT_METADATA
  is JSON but not an object ("[]"), which Orbax's manager refuses to open the folder with,
  was "a step folder there is damaged", naming none. It is named with its move, beside a
  step that fails its checksums."""
  import faults_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax import checkpoints  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  ckpt = checkpoints.Checkpointer(workdir)
  for step in (2, 4, 6):
    ckpt.save(step, {"w": jax.numpy.full((4,), float(step))})
  ckpt.close()
  step_dir = lambda s: os.path.join(workdir, "checkpoints", str(s))
  move = lambda s: f"mv {step_dir(s)} {workdir}/corrupt_checkpoints/{s}"
  for step in (2, 4):  # Older versions' steps: no checksums.
    faults_lib.as_an_older_version_saved_it(step_dir(step))
  with open(os.path.join(step_dir(4), "_CHECKPOINT_METADATA"), "w") as f:
    f.write("[]")
  with pytest.raises(CheckpointError, match=re.escape(
      f"checkpoint(s) 4 in {workdir}/checkpoints have a _CHECKPOINT_METADATA that is not a "
      "JSON object (damaged), and Orbax cannot open the folder with them (") + ".*" +
      re.escape(f"); move them away ({move(4)}) and run the same command again")):
    checkpoints.Checkpointer(workdir)
  with open(os.path.join(step_dir(6), "_CHECKPOINT_METADATA"), "w") as f:
    f.write("[]")  # A step with checksums: fails them.
  with pytest.raises(CheckpointError, match=re.escape(
      f"checkpoint(s) 6 in {workdir}/checkpoints fail their checksums (step 6: file "
      "_CHECKPOINT_METADATA changed since it was saved) and checkpoint(s) 4 have a "
      "_CHECKPOINT_METADATA that is not a JSON object (damaged), and Orbax cannot open the "
      f"folder with them (") + ".*" + re.escape(f"); move them away ({move(6)}; {move(4)})")):
    checkpoints.Checkpointer(workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6"]


# ------------------------------------------------ found by the notebook-facing API's review

def test_decode_images_refuses_latents_of_other_sizes_and_no_attributes(untrained, key):
  """Was: sampling.decode_images given y=None for a model that uses attributes "'NoneType'
  object has no attribute 'shape'" from inside the decoder, and latents of another width
  Flax's ScopeParamShapeError blaming the attributes' embedding. Checked from the shapes
  alone, so under `jit` too."""
  for name in ("cvae", "discvae"):
    trained = untrained[name]
    latents = {n: np.zeros((2, d), np.float32) for n, d in trained.model.latent_dims.items()}
    first = sorted(latents)[0]
    decode = functools.partial(sampling.decode_images, trained.model)
    v = trained.variables  # Shapes alone: the calls are traced (jax.eval_shape) or refused.
    for transform in (lambda f: f, lambda f: functools.partial(jax.eval_shape, f)):
      with pytest.raises(InputError, match=re.escape(
          f"decode_images needs attributes y [N, {Y}] for this model, which uses them; got "
          "None.")):
        transform(lambda v, lat: decode(v, lat, None))(v, latents)
      for wrong in ((2, 5), (2,)):
        with pytest.raises(InputError, match=re.escape(
            f"decode_images takes latents['{first}'] of shape [N, {latents[first].shape[1]}] "
            f"(the model's {first} size); got shape {wrong} (prior_latents gives them).")):
          transform(decode)(v, {**latents, first: np.zeros(wrong, np.float32)}, _attrs(2))
    assert jax.eval_shape(decode, v, latents, _attrs(2))["image"].shape == (2, S, S, 3)
  vae = untrained["vae"]  # A model without attributes takes none.
  z = {"z": np.zeros((2, vae.config.model.z_dim), np.float32)}
  assert jax.eval_shape(lambda v, z: sampling.decode_images(vae.model, v, z, None),
                        vae.variables, z)["image"].shape == (2, S, S, 3)


def test_one_device_for_a_mesh_and_rows_that_do_not_divide_over_it_are_named():
  """Was: parallel.make_mesh(jax.devices()[0]) "'Device' object is not iterable" (and a
  number "'int' object is not iterable"); put_batch of 5 rows over 4 devices JAX's
  IndivisibleError, a dump of the sharding."""
  from a2i_jax import parallel  # pylint: disable=import-outside-toplevel
  one = jax.devices()[0]
  with pytest.raises(ConfigError, match=re.escape(
      f"devices={one!r} is one jax.Device, not a list of them; pass [device] (e.g. "
      "jax.devices()[:1]).")):
    parallel.make_mesh(one)
  with pytest.raises(ConfigError, match="devices=4: pass a non-empty list of distinct"):
    parallel.make_mesh(4)
  mesh = parallel.make_mesh()
  n = mesh.devices.size
  with pytest.raises(InputError, match=re.escape(
      f"put_batch splits arrays over the {n} devices along their first axis; the array at "
      f"['y'] has {n + 1} rows (shape ({n + 1}, 2)), not a multiple of {n}. Pad it with "
      f"{n - 1} rows to {2 * n} (e.g. np.concatenate([x, np.repeat(x[-1:], {n - 1}, "
      "axis=0)]), dropping their results), or pass a mesh of fewer devices.")):
    parallel.put_batch({"x": np.zeros((n, 2)), "y": np.zeros((n + 1, 2))}, mesh)
  with pytest.raises(InputError, match="put_batch splits .*; the array is a scalar"):
    parallel.put_batch(np.float32(1.0), mesh)
  assert parallel.put_batch(np.zeros((2 * n, 2)), mesh).shape == (2 * n, 2)


@pytest.mark.parametrize("use", ["run_inference", "reconstruct", "complete", "edit",
                                 "infer_attributes"])
def test_the_uses_document_the_config_error_of_options_the_model_cannot_run(untrained, key,
                                                                            use):
  """Was: options the model cannot run (energy "gaussian" for a disCVAE, which has no
  per-pixel variance) raise ConfigError, where the docstrings listed only InputError: a
  notebook's `except InputError` missed it (a review's finding)."""
  dis = untrained["discvae"]
  options = inference.options_for(dis, steps=1, energy="gaussian")  # Taken here.
  prior = inference.AttributePrior(np.zeros(Y, np.float32), np.eye(Y, dtype=np.float32))
  args = {"run_inference": (_images(), _attrs()), "reconstruct": (_images(), _attrs()),
          "complete": (_images(), _attrs(), _eyes()), "edit": (_images(), _attrs(), {2: 1.0}),
          "infer_attributes": (_images(), prior)}[use]
  fn = getattr(inference, use)
  with pytest.raises(ConfigError, match="inference.energy='gaussian' is not available for "
                     "DisCVAE"):
    fn(dis, *args, key=key, options=options)
  raises = inspect.getdoc(fn).split("Raises:")[1]  # Python 3.13 dedents docstrings itself.
  assert re.search(r"^  ConfigError: ", raises, re.M), f"{use}'s Raises names no ConfigError"


def test_a_trained_model_shows_as_one_line_and_compares_as_one_object(untrained, tiny_run):
  """Was: a notebook cell ending in `trained` printed every weight (3,192 lines for a tiny
  model), and `a == b` raised NumPy's ambiguous truth value (a dataclass comparing dicts of
  arrays), `{trained}` a TypeError (fault hunt)."""
  trained = inference.load_trained(tiny_run("cvae")[0])
  count = sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(
      trained.variables["params"]))
  shown = repr(trained)
  assert "\n" not in shown and len(shown) < 300, shown
  assert shown.startswith(f"TrainedModel(cvae, step {trained.step}, workdir=")
  assert f"{count:,} parameters, {Y} attributes)" in shown
  assert "parameters, 0 attributes)" in repr(untrained["vae"])
  again = inference.load_trained(tiny_run("cvae")[0])
  assert trained == trained and trained != again and len({trained, again}) == 2


class _Placed(Exception):
  """The fake comparison's stop: the inputs were compared, nothing is placed or computed."""


@pytest.mark.parametrize("use", ["reconstruct", "complete", "edit", "infer_attributes",
                                 "run_inference", "infer_latents"])
def test_processes_that_pass_other_inputs_are_refused_before_the_batch_is_placed(
    cvae, key, monkeypatch, use):
  """Was: under jax.distributed every process placed its own rows of the batch it was given
  (`parallel.put_batch`), so processes given other images returned one result spliced from
  all of theirs, the same mixed rows on each, with status 0 and no word (fault hunt). Each
  "process" here is one call; the comparison is faked (no processes start)."""
  from a2i_jax import distributed  # pylint: disable=import-outside-toplevel
  sent = []

  def same_on_every_process(name, value, fix, timeout_s=0.0, describe=None):
    sent.append(value)
    if len(sent) > 1 and value != sent[0]:
      raise ConfigError(f"process 1: {name}: {describe(value, sent[0], 0)}; {fix}.")
    raise _Placed

  monkeypatch.setattr(distributed, "process_count", lambda: 2)
  monkeypatch.setattr(distributed, "same_on_every_process", same_on_every_process)
  prior = inference.AttributePrior(np.zeros(Y, np.float32), np.eye(Y, dtype=np.float32))
  other = _images()[::-1].copy()
  signed = lambda x: inputs.to_signed(x)
  calls = {
      "reconstruct": lambda x, k: inference.reconstruct(cvae, x, _attrs(), key=k),
      "complete": lambda x, k: inference.complete(cvae, x, _attrs(), _eyes(), key=k),
      "edit": lambda x, k: inference.edit(cvae, x, _attrs(), {2: 1.0}, key=k),
      "infer_attributes": lambda x, k: inference.infer_attributes(cvae, x, prior, key=k),
      "run_inference": lambda x, k: inference.run_inference(cvae, x, _attrs(), key=k),
      "infer_latents": lambda x, k: inference.infer_latents(cvae, signed(x), _attrs(), key=k),
  }
  call = calls[use]
  for x, k in ((_images(), key), (_images(), key)):  # The same inputs: no word.
    with pytest.raises(_Placed):
      call(x, k)
  with pytest.raises(ConfigError, match=r"process 1: the inputs of .*images=.* here, .* on "
                     r"process 0; pass the same images, attributes, masks, key and attribute "
                     r"prior to .*: pass AttributePrior\.fit\(attributes\)\.of_process_0\(\), "
                     r"called on every process\), or call it in one process\.$"):
    call(other, key)
  with pytest.raises(ConfigError, match=r"\bkey=\"[0-9a-f]+\" here"):
    call(_images(), jax.random.key(1))
  assert len(sent) == 4, "one comparison per call, not one per batch"
  if use != "infer_attributes":  # Other attributes too.
    del sent[1:]
    with pytest.raises(ConfigError, match=r"\battributes=\"[0-9a-f]+\" here"):
      {"reconstruct": lambda: inference.reconstruct(cvae, _images(), _attrs() + 1, key=key),
       "complete": lambda: inference.complete(cvae, _images(), _attrs() + 1, _eyes(), key=key),
       "edit": lambda: inference.edit(cvae, _images(), _attrs() + 1, {2: 1.0}, key=key),
       "run_inference": lambda: inference.run_inference(cvae, _images(), _attrs() + 1, key=key),
       "infer_latents": lambda: inference.infer_latents(cvae, signed(_images()), _attrs() + 1,
                                                        key=key)}[use]()
  if use == "infer_attributes":  # And a prior that differs in its last bits (one fitted on
    # each host): the advice names the library's way to share process 0's.
    del sent[1:]
    nudged = dataclasses.replace(prior, precision=np.nextafter(prior.precision, np.float32(2)))
    with pytest.raises(ConfigError, match=r"\battribute_prior=\"[0-9a-f]+\" here.*"
                       r"of_process_0\(\)"):
      inference.infer_attributes(cvae, _images(), nudged, key=key)
  if use == "complete":  # And another mask.
    del sent[1:]
    with pytest.raises(ConfigError, match=r"\bobserved=\"[0-9a-f]+\" here"):
      inference.complete(cvae, _images(), _attrs(), 1 - _eyes(), key=key)


@pytest.mark.parametrize("use", ["reconstruct", "complete", "edit", "infer_attributes"])
def test_inference_options_as_keywords_name_options_for(cvae, key, use):
  """Was: `reconstruct(trained, x, y, key=..., steps=3)` a TypeError from run_inference, "got
  an unexpected keyword argument 'steps'" (fault hunt)."""
  prior = inference.AttributePrior(np.zeros(Y, np.float32), np.eye(Y, dtype=np.float32))
  args = {"reconstruct": (_images(), _attrs()), "complete": (_images(), _attrs(), _eyes()),
          "edit": (_images(), _attrs(), {2: 1.0}), "infer_attributes": (_images(), prior)}[use]
  with pytest.raises(InputError, match=re.escape(
      f"steps is an inference option, not an argument of {use}; pass "
      "options=inference.options_for(trained, steps=3) instead.")):
    getattr(inference, use)(cvae, *args, key=key, steps=3)
  with pytest.raises(InputError, match=re.escape(
      "restarts, init are inference options, not an argument of")):
    getattr(inference, use)(cvae, *args, key=key, restarts=2, init="zeros")


def test_a_saved_attribute_predictor_records_the_device_layout_that_trained_it(
    data_cache, tmp_path, caplog):
  """Was: its weights depend on the local device count (XLA:CPU splits its work by it: 4
  devices trained weights 0.1 apart from 1's), yet nothing said which trained a saved one, and
  `load_or_train` reused it under any layout, so a job's fidelity scores followed whichever
  layout trained it first, unsaid (fault hunt). Now meta.json's "trained_on" records it, and
  a reuse under another says so."""
  from a2i_jax import attribute_predictor as ap  # pylint: disable=import-outside-toplevel
  from a2i_jax.attribute_predictor import storage  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  data = synthetic.load(image_size=16, num_train=16, num_validation=2, num_test=4, seed=5,
                        cache_dir=data_cache)
  settings = {"steps": 1, "batch_size": 4, "learning_rate": 1e-3, "width": 4}
  workdir = str(tmp_path)
  first = ap.load_or_train(settings, data, workdir)
  path = os.path.join(storage.predictor_dir(workdir), "meta.json")
  meta = json.load(open(path))
  count = jax.local_device_count()
  meta_trained_on = lambda n: f"{jax.default_backend()}, {n} local device{'s' * (n != 1)}"
  assert meta["trained_on"] == meta_trained_on(count)
  caplog.clear()
  again = ap.load_or_train(settings, data, workdir)  # The same layout: reused, no word.
  assert "was trained on" not in caplog.text
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      np.array_equal, first.variables, again.variables))
  meta["trained_on"] = "cpu, 99 local devices"
  meta["meta_sha256"] = storage._meta_sha256(meta)  # pylint: disable=protected-access
  json.dump(meta, open(path, "w"))
  caplog.clear()
  ap.load_or_train(settings, data, workdir)
  assert (f"was trained on cpu, 99 local devices, this process has {meta_trained_on(count)}"
          ": its fidelity scores differ slightly" in caplog.text)
  assert "training a new one" not in caplog.text  # Reused, as before: said, not retrained.
  del meta["trained_on"]  # Saved before it was recorded: read, reused, nothing said.
  meta["meta_sha256"] = storage._meta_sha256(meta)  # pylint: disable=protected-access
  json.dump(meta, open(path, "w"))
  caplog.clear()
  assert ap.load_predictor(workdir).meta == first.meta
  ap.load_or_train(settings, data, workdir)
  assert "was trained on" not in caplog.text and "training a new one" not in caplog.text
