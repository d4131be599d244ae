"""Fault suite, evaluation side: `evaluation` scores nothing silently wrong (data or a predictor
whose attributes are in another order, inference that diverged with finite pixels) and refuses
a mistaken argument with one `InputError` naming the fix, before anything is sampled.

The model is a stand-in and the inference stubbed: every check here comes before (or, for the
tuning cell, after) the model runs, so nothing is compiled.
"""

import dataclasses
import json
import os
import re
import sys
import types

import jax
import numpy as np
import pytest

from a2i_jax import attribute_predictor as ap
from a2i_jax import evaluation, files, inference
from a2i_jax.data import synthetic
from a2i_jax.data.base import Dataset, Split
from a2i_jax.errors import CheckpointError, InputError
from conftest import tiny_config

S = 32  # tiny_config's image size.
NAMES = tuple(synthetic.ATTRIBUTE_NAMES)


def _data(names=NAMES, n=3) -> Dataset:
  """A synthetic-like dataset of `n` grey images per split with attributes `names`."""
  split = Split(np.full((n, S, S, 3), 128, np.uint8), np.zeros((n, len(names)), np.float32))
  return Dataset("synthetic", tuple(names), ("binary",) * len(names),
                 {"train": split, "validation": split, "test": split})


def _trained(names=NAMES):
  """A restored run that stored its attribute order (dataset.json), with a stand-in module and
  no variables: a `TrainedModel`, as the evaluation functions check, that never runs."""
  return inference.TrainedModel(tiny_config("cvae"), types.SimpleNamespace(
      label="CVAE", uses_attributes=True), {}, 3, None, attribute_names=names)


def _options(trained):
  return inference.InferenceOptions.from_config(trained.config.inference,
                                                infer_attributes=False)


@pytest.fixture
def nothing_runs(monkeypatch):
  """The model is never run: a check that lets the call through fails the test."""
  def ran(*args, **kwargs):
    raise AssertionError("the model ran: the mistake was not refused first")
  for name in ("reconstruct", "complete", "sample", "progression", "infer_attributes"):
    monkeypatch.setattr(evaluation.inference, name, ran)


@pytest.mark.usefixtures("nothing_runs")
def test_data_in_another_attribute_order_is_refused():
  """Was: `load_dataset(config.data)` of a folder whose CSV columns moved since training (here
  reversed) was evaluated without a word, each column read as another attribute (the tiny
  run's recognition error changed from 0.051262 to 0.051263, status 0)."""
  trained, key = _trained(), jax.random.key(0)
  data = _data(tuple(reversed(NAMES)))
  says = (r"the dataset's attributes \(bangs, beard, .*\) are not in the order the model of "
          r"step 3 was trained with \(smile, face_width, .*\); pass the run's data as it "
          r"trained: inference.load_data\(trained\)")
  with pytest.raises(InputError, match=says):
    evaluation.evaluate_model(trained, data, occlusion_names=[], key=key,
                              options=_options(trained))
  with pytest.raises(InputError, match=says):
    evaluation.tune_inference(trained, data, grid=[{}], occlusion_names=[], key=key,
                              options=_options(trained))
  with pytest.raises(InputError, match=says):
    evaluation.attribute_report(trained, data, None, key=key)


@pytest.mark.usefixtures("nothing_runs")
def test_options_that_infer_the_attributes_are_refused_before_any_inference():
  """Was: "infer_attributes=True needs an attribute_prior", which neither function takes,
  from the first inference; in `tune_inference`, after the settings before it had run."""
  trained, key, data = _trained(), jax.random.key(0), _data()
  says = (r"infer the attributes \(infer_attributes=True\), but the errors are scored with the "
          r"true attributes given; pass options with infer_attributes=False")
  with pytest.raises(InputError, match="the options " + says):
    evaluation.evaluate_model(trained, data, occlusion_names=[], key=key, options=dataclasses
                              .replace(_options(trained), infer_attributes=True))
  with pytest.raises(InputError, match=r"the options of grid\[1\] \{'infer_attributes': True\} "
                     + says):
    evaluation.tune_inference(trained, data, grid=[{}, {"infer_attributes": True}],
                              occlusion_names=[], key=key, options=_options(trained))


def _predictor(names=NAMES) -> ap.Predictor:
  """A predictor of `names` without weights: enough for every check before `predict` runs."""
  a = len(names)
  return ap.Predictor({}, ap.PredictorMeta(
      dataset="synthetic", attribute_names=tuple(names), attribute_kinds=("binary",) * a,
      image_size=S, width=4, mean=(0.0,) * a, std=(1.0,) * a, low=(0.0,) * a, high=(1.0,) * a,
      steps=1, batch_size=2, learning_rate=1e-3, seed=0))


@pytest.mark.usefixtures("nothing_runs")
def test_attribute_report_refuses_a_predictor_of_other_attributes_and_bad_counts():
  """Was: a predictor of the attributes in another order (another run's, `load_predictor`)
  scored each attribute against another's prediction, status 0 (binary accuracy 0.25 on the
  tiny run); a predictor's path was an AttributeError, and num_bases=0 a ValueError from
  np.concatenate, both after the sampling; num_values=1 gave a NaN Spearman per attribute;
  num_examples=2.5 was a TypeError (every evaluation function), True taken as 1."""
  trained, key, data = _trained(), jax.random.key(0), _data()
  with pytest.raises(InputError, match=r"the attribute predictor scores bangs, beard, .* "
                     r"\(trained on 'synthetic'\), the dataset has smile, face_width, .* \(in "
                     r"another order\); score with the predictor of this dataset: "
                     r"attribute_predictor.load_or_train\("):
    evaluation.attribute_report(trained, data, _predictor(NAMES[::-1]), key=key)
  with pytest.raises(InputError, match=r"predictor 'runs/x' is a path; pass the Predictor: "
                     r"attribute_predictor.load_predictor\(workdir\)"):
    evaluation.attribute_report(trained, data, "runs/x", key=key)
  for kwargs, says in (({"num_bases": 0}, "num_bases=0 is not valid; pass an integer of at "
                        "least 1"),
                       ({"num_values": 1}, "num_values=1 is not valid; pass an integer of at "
                        "least 2")):
    with pytest.raises(InputError, match=says):
      evaluation.attribute_report(trained, data, _predictor(), key=key, **kwargs)
  # Anything else that is not a Predictor: None was an AttributeError after the sampling.
  with pytest.raises(InputError, match=r"predictor=NoneType is not an attribute predictor; "
                     r"pass attribute_predictor.load_predictor\(workdir\), load_or_train\("):
    evaluation.attribute_report(trained, data, None, key=key)
  # Was: 2.5 a TypeError of the slice of the test images, True scored as 1.
  for bad in (2.5, True):
    with pytest.raises(InputError, match=f"num_examples={bad!r}; pass a positive count"):
      evaluation.evaluate_model(trained, data, occlusion_names=[], num_examples=bad, key=key,
                                options=_options(trained))


def test_tuning_counts_inference_without_a_finite_energy_as_diverged(monkeypatch):
  """Was: a setting whose inference ended with no finite energy but finite pixels (the tiny
  run at learning_rate 1e30: all 8 images, z near 1e30, the decoder saturated) was scored as
  converged, "diverged" 0 and an error of 0.214, below the 0.244 of a setting that had not
  diverged; `evaluate_model` already counted such images as diverged."""
  trained = _trained()
  finite = np.full((3, S, S, 3), 0.5, np.float32)
  energy = np.array([1.0, np.inf, 1.0], np.float32)
  monkeypatch.setattr(evaluation.inference, "reconstruct", lambda *a, **k: {
      "reconstruction": finite, "energy": energy, "diverged": ~np.isfinite(energy)})
  monkeypatch.setattr(evaluation.inference, "complete", lambda *a, **k: {
      "completion": finite, "energy": energy, "diverged": ~np.isfinite(energy)})
  row, = evaluation.tune_inference(trained, _data(), grid=[{}], occlusion_names=["lower_half"],
                                   key=jax.random.key(0), options=_options(trained))
  for column in (evaluation.RECON_FULL, "lower_half"):
    assert row[column]["diverged"] == 1 and row[column]["images"] == 3, row[column]
    assert np.isnan(row[column]["mean"]), row[column]


def test_predictor_settings_and_scores_are_checked(monkeypatch, tmp_path):
  """Was: the whole config passed as the settings (`load_or_train(config, ...)`) a KeyError
  ("'steps'"), learning_rate="x" a ValueError in `load_or_train`; predictions with fewer
  columns than the predictor's attributes an IndexError; no images every score NaN with
  NumPy's warnings; a NaN swept value ranked as a value, a correlation given."""
  from a2i_jax.attribute_predictor import training  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(training, "_init_variables", lambda *a: pytest.fail("trained"))
  config, data = tiny_config("cvae"), _data()
  for call in (lambda: ap.train_predictor(data, config),
               lambda: ap.load_or_train(config, data, str(tmp_path))):
    # The whole config has a batch_size and a learning_rate: the generator's.
    with pytest.raises(InputError, match=r"attribute predictor: the settings are the whole "
                       r"config, without steps, width; pass config.attribute_predictor"):
      call()
  # The message of a missing predictor named the whole config too.
  with pytest.raises(CheckpointError, match=r"load_or_train\(config.attribute_predictor, "):
    ap.load_predictor(str(tmp_path))
  settings = {**config.attribute_predictor.to_dict(), "learning_rate": "x"}
  with pytest.raises(InputError, match="attribute predictor: learning_rate='x' is not valid"):
    ap.load_or_train(settings, data, str(tmp_path))
  predictor, a = _predictor(), len(NAMES)
  with pytest.raises(InputError, match=r"predictions have shape \(2, 3\); expected \[N, 10\]"):
    ap.score(predictor, np.zeros((2, 3)), np.zeros((2, 3)))
  with pytest.raises(InputError, match=r"no predictions to score \(N = 0\)"):
    ap.fidelity(predictor, np.zeros((0, S, S, 3), np.uint8), np.zeros((0, a)))
  with pytest.raises(InputError, match="swept_values hold NaN or infinity"):
    ap.sweep_response(predictor, np.zeros((1, 2, S, S, 3), np.uint8), [0.0, np.nan], 0)


def test_error_cells_give_the_rmse_on_the_0_255_scale_too():
  """docs/reference.md §6 asks for the RMSE on the 0-255 scale beside the squared error on
  [0, 1] (the paper's unit is unknown); it was not given."""
  target = np.zeros((3, 2, 2, 3))
  estimate = np.stack([np.full((2, 2, 3), 0.1), np.full((2, 2, 3), 0.2),
                       np.full((2, 2, 3), np.nan)])
  cell = evaluation.error_cell(target, estimate, np.ones((3, 2, 2, 1)))
  assert cell["n"] == 2 and cell["mean"] == pytest.approx(0.025)  # (0.01 + 0.04) / 2.
  rmse = cell["rmse_255"]  # Each image's root: 25.5 and 51; the NaN image left out.
  assert rmse["n"] == 2 and rmse["mean"] == pytest.approx(38.25)
  assert rmse["sem"] == pytest.approx(12.75)  # |51 - 25.5| / sqrt(2) / sqrt(2).
  table = evaluation.markdown_table([{"model": "m", "rows": {"fill": {"face": cell}}}])
  mse, root = table.split("\n\n| model")[1:]
  assert "| m | fill | 2.50 ± 1.50 |" in mse and "| m | fill | 38.25 ± 12.75 |" in root
  assert "0-255 scale" in table.split("| model")[1]


@pytest.mark.usefixtures("nothing_runs")
def test_a_path_for_the_model_or_no_dataset_is_refused_first():
  """Was: an AttributeError ("'str' object has no attribute 'attribute_names'", "'NoneType'
  ...") for a workdir's path given as the model, or None as the dataset, of evaluate_model,
  attribute_report and tune_inference (its path alone was refused, by `options_for`)."""
  trained, key, data = _trained(), jax.random.key(0), _data()
  path = (r"the model must be a TrainedModel, not str; load it first: "
          r"inference.load_trained\('/some/run'\)")
  none = (r"the dataset must be a Dataset, not NoneType; load the run's data first: "
          r"inference.load_data\(trained\)")
  calls = {
      "evaluate_model": lambda m, d: evaluation.evaluate_model(m, d, key=key),
      "attribute_report": lambda m, d: evaluation.attribute_report(m, d, _predictor(), key=key),
      "tune_inference": lambda m, d: evaluation.tune_inference(
          m, d, grid=[{}], occlusion_names=[], key=key, options=_options(trained))}
  for name, call in calls.items():
    with pytest.raises(InputError, match=path):
      call("/some/run", data)
    with pytest.raises(InputError, match=none):
      call(trained, None)
    with pytest.raises(InputError, match="the dataset must be a Dataset, not str"):
      call(trained, "/some/data")
  with pytest.raises(InputError, match=r"the dataset must be a Dataset, not NoneType; load the "
                     r"run's data first: inference.load_data\(trained\), or data.load_dataset"):
    evaluation.evaluate_mean_image(None)


@pytest.mark.usefixtures("nothing_runs")
def test_the_seed_of_the_masks_is_checked_as_given():
  """Was: make_masks took seed=-5 (make_mask refused it) and True as 1, seed=-1 gave block16
  the masks of make_mask(seed=7) (each name's seed is offset by its place), and
  evaluate_mean_image(seed=2.5) said "seed=9.5 is not valid", a value never passed."""
  from a2i_jax import occlusions  # pylint: disable=import-outside-toplevel
  for bad in (-5, -1, 2.5, True, "3"):
    with pytest.raises(InputError, match=f"seed={bad!r} is not valid; pass an integer of at "
                       "least 0"):
      occlusions.make_masks(["block16"], S, 2, seed=bad)
    with pytest.raises(InputError, match=f"seed={bad!r} is not valid"):
      evaluation.evaluate_mean_image(_data(), occlusion_names=["block8"], seed=bad)
  trained, key = _trained(), jax.random.key(0)
  with pytest.raises(InputError, match=r"seed=2.5 is not valid"):
    evaluation.evaluate_model(trained, _data(), occlusion_names=["block8"], key=key,
                              options=_options(trained), seed=2.5)
  with pytest.raises(InputError, match=r"seed=-1 is not valid"):
    evaluation.tune_inference(trained, _data(), grid=[{}], occlusion_names=["block8"], key=key,
                              options=_options(trained), seed=-1)
  place = occlusions.OCCLUSION_NAMES.index("block8")  # Each (seed, name) its own stream.
  np.testing.assert_array_equal(occlusions.make_masks(["block8"], S, 2, seed=np.int64(3))[
      "block8"], occlusions.make_mask("block8", S, 2,
                                      seed=3 * len(occlusions.OCCLUSION_NAMES) + place))


def test_the_random_occlusions_follow_the_key_where_no_seed_is_given(monkeypatch):
  """Was: `evaluate_model` and `tune_inference` took seed=0 by default, so a notebook that
  varied `key` scored the seed-0 masks every time, and key=jax.random.key(1) did not score
  the masks of infer.py --seed=1 (fault hunt). Now seed=None derives the seed from the key:
  jax.random.key(S) draws seed S's masks, as infer.py --seed=S (key(S), seed=S) does."""
  trained, names = _trained(), ["block8", "random_rect"]
  drawn = []

  def stub(out):
    def run(*args, **kwargs):
      drawn.append(args[3] if len(args) > 3 else None)  # complete(trained, x, y, observed)
      return {out: np.full((3, S, S, 3), 0.5, np.float32)}
    return run
  monkeypatch.setattr(evaluation.inference, "reconstruct", stub("reconstruction"))
  monkeypatch.setattr(evaluation.inference, "complete", stub("completion"))

  def masks(call, key, **seed):
    drawn.clear()
    if call == "evaluate":
      evaluation.evaluate_model(trained, _data(), occlusion_names=names, key=key,
                                options=_options(trained), **seed)
    else:
      evaluation.tune_inference(trained, _data(), grid=[{}], occlusion_names=names, key=key,
                                options=_options(trained), **seed)
    return [np.asarray(m) for m in drawn if m is not None]
  for call in ("evaluate", "tune"):
    zero, one = masks(call, jax.random.key(0)), masks(call, jax.random.key(1))
    assert len(one) >= 2 and not all(np.array_equal(a, b) for a, b in zip(zero, one))
    for a, b in zip(one, masks(call, jax.random.key(5), seed=1)):  # infer.py --seed=1's.
      np.testing.assert_array_equal(a, b)
    for a, b in zip(one, masks(call, jax.random.PRNGKey(1))):
      np.testing.assert_array_equal(a, b)
  assert evaluation.occlusion_seed(jax.random.key(7)) == 7
  assert evaluation.occlusion_seed(jax.random.key(7), 3) == 3


def test_the_baseline_draws_the_random_occlusions_of_the_models_key(monkeypatch):
  """Was: `evaluate_mean_image` kept seed=0 and took no key, so in a notebook the baseline
  row of evaluate_model(key=jax.random.key(S))'s table scored other random occlusions than
  the model's rows for S != 0 (review). Now it takes the same key, and seed=None derives the
  seed from it (`occlusion_seed`); no key and no seed: 0, as before; a seed wins; a key that
  is not one is refused."""
  trained, names = _trained(), ["block8", "random_rect"]
  seeds = []
  make_masks = evaluation.occlusions.make_masks

  def record(*args, seed, **kwargs):
    seeds.append(seed)
    return make_masks(*args, seed=seed, **kwargs)
  monkeypatch.setattr(evaluation.occlusions, "make_masks", record)
  monkeypatch.setattr(evaluation.inference, "reconstruct",
                      lambda *a, **k: {"reconstruction": np.full((3, S, S, 3), 0.5, np.float32)})
  monkeypatch.setattr(evaluation.inference, "complete",
                      lambda *a, **k: {"completion": np.full((3, S, S, 3), 0.5, np.float32)})

  def baseline(**kwargs):
    seeds.clear()
    rows = evaluation.evaluate_mean_image(_data(), occlusion_names=names, **kwargs)["rows"]
    return seeds[-1], rows["fill"]["random_rect"]["mean"]
  seeds.clear()
  evaluation.evaluate_model(trained, _data(), occlusion_names=names, key=jax.random.key(3),
                            options=_options(trained))
  assert seeds == [3]  # The model's rows' masks.
  assert baseline(key=jax.random.key(3))[0] == 3
  assert baseline(key=jax.random.key(3)) == baseline(seed=3) != baseline()
  assert baseline()[0] == 0 and baseline(key=jax.random.key(3), seed=5)[0] == 5
  with pytest.raises(InputError, match=r"^key=3 is a seed, not a PRNG key; pass "
                     r"key=jax.random.key\(3\)"):
    evaluation.evaluate_mean_image(_data(), occlusion_names=names, key=3)


def test_error_cells_refuse_images_and_regions_they_would_score_wrong():
  """Was: a uint8 target (0 .. 255) scored against [0, 1] estimates without a word (an error
  of ~21562); one estimate [S, S, 3] broadcast over every image; a region [N, S, S] NumPy's
  broadcast ValueError; mean_sem("abc") NumPy's "could not convert string to float"."""
  rng = np.random.default_rng(0)
  t, e, r = rng.random((2, 8, 8, 3)), rng.random((2, 8, 8, 3)), np.ones((2, 8, 8, 1))
  # uint8 is read as the API reads images, 0 .. 255: the error of the floats, up to rounding.
  np.testing.assert_allclose(evaluation.region_errors((t * 255 + 0.5).astype(np.uint8), e, r),
                             evaluation.region_errors(t, e, r), atol=2e-3)
  cases = [
      ((t, e[0], r), r"target and estimate have shapes \(2, 8, 8, 3\) and \(8, 8, 3\); pass two "
       r"\[N, S, S, 3\] image batches of one shape, an estimate per target; to score one "
       r"estimate against every image, np.broadcast_to\(estimate, \(2, 8, 8, 3\)\)"),
      ((t, e, r[..., 0]), r"region has shape \(2, 8, 8\); expected \(2, 8, 8, 1\), .*add the "
       r"channel: region\[..., None\]"),
      ((t * 255, e, r), r"^target: to_unit takes uint8 in \[0, 255\] or floats in \[0, 1\]; "
       r"these floats range over .* \(0 .. 255\? divide by 255, or pass uint8\)"),
      ((t, e * 2 - 1, r), r"^estimate: to_unit takes .*; these floats range over \[-"),
      ((t, e.astype(np.int64), r), r"^estimate: to_unit takes .*; these are int64"),
      ((t, e, r * 2), r"region values must lie in \[0, 1\]"),
      ((np.full_like(t, np.nan), e, r), "^target: to_unit takes .*; these hold NaN or "
       "infinity")]
  for args, says in cases:
    for score in (evaluation.region_errors, evaluation.error_cell):
      with pytest.raises(InputError, match=says):
        score(*args)
  for bad, says in (("abc", "are strings"), ([1 + 2j], "have dtype complex128"),
                    ([1.0, None], "have dtype object"),
                    (np.ones((2, 2)), r"have shape \(2, 2\)")):
    with pytest.raises(InputError, match=f"^values {says}.*; mean_sem takes"):
      evaluation.mean_sem(bad)
  assert evaluation.mean_sem(np.array([1, 2, 3]))["mean"] == 2.0
  assert evaluation.region_errors(t[:0], e[:0], r[:0]).shape == (0,)  # No images: none.


def test_occlusion_sizes_boxes_and_crops_are_checked():
  """Was: regions_for("synthetic", 0), (..., -8) and (..., 2.5) gave boxes (scale_box's at 0:
  (-1, -1, 0, 0)); scale_box((10, 10, 0, 0), 64) "fixed" the inverted box to (10, 10, 11,
  11); occlusions_for("lfw", 32, "64") was a TypeError of "<="; make_mask("eyes", 2**20, 1)
  NumPy's MemoryError (4 TiB)."""
  from a2i_jax import occlusions  # pylint: disable=import-outside-toplevel
  for bad in (0, -8, 2.5, True, "64"):
    with pytest.raises(InputError, match=f"image_size={bad!r} is not valid; pass an integer "
                       "of at least 1"):
      occlusions.regions_for("synthetic", bad)
    with pytest.raises(InputError, match=f"image_size={bad!r} is not valid"):
      occlusions.scale_box((0, 0, 10, 10), bad)
  for box in ((10, 10, 0, 0), (0, 10, 10, 10), (-2, 0, 10, 10), (0, 0, 70, 10)):
    with pytest.raises(InputError, match=r"box \(.*\) is inverted, empty or outside the 64x64 "
                       r"image; pass \(top, left, bottom, right\) with 0 <= top < bottom <= 64"):
      occlusions.scale_box(box, 64)
  for box in ((0, 0, 10), (0, 0, 10.0, 10), None):
    with pytest.raises(InputError, match=r"box .* is not 4 integers; pass \(top, left, "):
      occlusions.scale_box(box, 64)
  for size, crop, says in ((32, "64", "crop_from='64'"), (32.0, 64, "image_size=32.0"),
                           (32, 64.0, "crop_from=64.0"), (-1, 0, "image_size=-1")):
    with pytest.raises(InputError, match=f"{says} is not valid; pass an integer of at least 0"):
      occlusions.occlusions_for("lfw", size, crop)
  for name in ("eyes", "block8", "random_rect"):  # Was NumPy's "Unable to allocate" traceback.
    with pytest.raises(InputError, match=r"masks of 1000000000000 images of 64x64 take "
                       r"15,258,789.1 GiB, more than this machine can give; make them for "):
      occlusions.make_mask(name, 64, 10**12, dataset="synthetic")
  with pytest.raises(InputError, match=r"masks of 1 images of 1048576x1048576 take "
                     r"4,096.0 GiB, more than this machine can give"):
    occlusions.make_mask("eyes", 2**20, 1, dataset="synthetic")
  assert occlusions.scale_box((10, 10, 11, 11), 16) == (3, 3, 4, 4)  # Still a pixel at least.


def _predictor_of(data: Dataset, evaluate_split="test", **meta) -> ap.Predictor:
  """`_predictor()` as `train_predictor(data, evaluate_split=...)` records it: its data's
  fingerprints, and the image size of `meta` where given."""
  from a2i_jax.attribute_predictor import training  # pylint: disable=import-outside-toplevel
  p = _predictor(data.attribute_names)
  return dataclasses.replace(p, meta=dataclasses.replace(
      p.meta, data_fingerprint=training.data_fingerprint(data, evaluate_split),
      test_fingerprint=training.split_fingerprint(data), **meta))


def _other_split(data: Dataset, name: str, **changes) -> Dataset:
  """`data` with its split `name` changed (`dataclasses.replace` of the `Split`)."""
  return dataclasses.replace(data, splits={
      **data.splits, name: dataclasses.replace(data[name], **changes)})


@pytest.mark.usefixtures("nothing_runs")
def test_attribute_report_takes_the_predictor_of_the_same_test_split_only():
  """infer.py's evaluation of several runs scores them all with run 0's predictor, whose data
  may differ from a later run's where the predictor does not look (a disCVAE run's masks) or
  in the training split alone (runs of other sizes, one test split): those are taken (the
  stand-in model is reached). Was also taken (a review's finding, its docstring said so): a
  predictor of the same attribute names trained on other images, whose scores and ceiling
  were of those; now refused before anything is sampled, as is one that records no test
  split (made by hand)."""
  trained, key, data = _trained(), jax.random.key(0), _data()
  masked = _other_split(data, "test", masks=np.full((3, S, S), 255, np.uint8))
  bigger = _other_split(data, "train", images=np.full((5, S, S, 3), 128, np.uint8),
                        attributes=np.zeros((5, len(NAMES)), np.float32))
  for predictor in (_predictor_of(data), _predictor_of(data, None), _predictor_of(masked),
                    _predictor_of(bigger)):
    with pytest.raises(AssertionError, match="the model ran"):
      evaluation.attribute_report(trained, data, predictor, key=key)
  how = (r"; score with the predictor of this dataset: attribute_predictor.load_or_train\("
         r"trained.config.attribute_predictor, inference.load_data\(trained\), workdir\).$")
  other_images = _other_split(data, "test", images=np.full((3, S, S, 3), 7, np.uint8))
  other_attributes = _other_split(data, "test", attributes=np.ones((3, len(NAMES)), np.float32))
  for other in (_data(n=4), other_images, other_attributes):
    with pytest.raises(InputError, match=r"^the attribute predictor was trained on other images "
                       r"\(trained on 'synthetic', its test split is not this dataset's\), so "
                       r"its scores and its ceiling would be of those" + how):
      evaluation.attribute_report(trained, data, _predictor_of(other), key=key)
  with pytest.raises(InputError, match=r"^the attribute predictor records no test split \(made "
                     r"by hand, not by train_predictor, or of data without one\)" + f".*{how}"):
    evaluation.attribute_report(trained, data, _predictor(), key=key)


@pytest.mark.usefixtures("nothing_runs")
def test_attribute_report_refuses_a_predictor_of_other_attribute_kinds():
  """Was: a predictor that reads a column as binary scored the dataset's continuous column of
  that name as accuracy against its threshold (and the reverse as a correlation of two
  classes), without a word (a review's finding)."""
  trained, key, data = _trained(), jax.random.key(0), _data()
  kinds = ("continuous",) + ("binary",) * (len(NAMES) - 1)
  continuous = dataclasses.replace(data, attribute_kinds=kinds)
  for predictor_data, scored, reads, holds in ((data, continuous, "binary", "continuous"),
                                               (continuous, data, "continuous", "binary")):
    predictor = _predictor_of(predictor_data)
    predictor = dataclasses.replace(predictor, meta=dataclasses.replace(
        predictor.meta, attribute_kinds=predictor_data.attribute_kinds))
    with pytest.raises(InputError, match=rf"^the attribute predictor reads 'smile' as {reads} "
                       rf"\(trained on 'synthetic'\), the dataset holds it as {holds}; score "
                       r"with the predictor of this dataset: attribute_predictor.load_or_train"):
      evaluation.attribute_report(trained, scored, predictor, key=key)


def test_a_flat_progression_counts_as_no_response(monkeypatch):
  """Was: an attribute whose predicted value never moved along its sweep (Spearman NaN) was
  left out of progression_mean_spearman by np.nanmean, so a model that ignored it scored
  higher than one that moved it a little (a review's finding): now it counts as 0 and is
  listed in "progression_flat"; an attribute of one value in training (nothing to sweep) is
  left out and listed in "progression_unswept"."""
  names = ("a", "b", "c", "d")
  train = Split(np.zeros((4, S, S, 3), np.uint8),
                np.array([[0, 0, 0, 1], [1, 1, 1, 1]] * 2, np.float32))
  data = Dataset("synthetic", names, ("binary",) * 4, {"train": train, "test": train})
  trained = _trained(names)
  # The predictor's reading along each sweep: "a" and "b" follow it, "c" never moves (a
  # confident predictor on a model that ignores the attribute); "d" is not swept.
  readings = {0: [0.1, 0.9], 1: [0.2, 0.8], 2: [0.5, 0.5], 3: [0.3, 0.6]}
  monkeypatch.setattr(evaluation.inference, "sample",
                      lambda t, attrs, key: {"image": np.zeros((len(attrs), S, S, 3))})
  # The attributes whose images are the same at every swept value, but for the last bits a
  # real model's decoding at another batch position moves them by (3e-8 to 6e-8).
  still = set()
  monkeypatch.setattr(evaluation.inference, "progression", lambda t, a, j, values, key,
                      num_latents: np.zeros((1, 2, S, S, 3)) + (
                          6e-8 if j in still else 1.0) * np.reshape(values, (1, 2, 1, 1, 1)))
  monkeypatch.setattr(evaluation.inference, "infer_attributes",
                      lambda *a, **k: {"y": np.zeros((4, 4), np.float32)})
  scores = {"binary_accuracy": 0.5, "binary_chance": 0.5, "continuous_correlation": None}
  monkeypatch.setattr(ap, "fidelity", lambda *a: {**scores, "ceiling": {}})
  monkeypatch.setattr(ap, "score", lambda *a: scores)
  monkeypatch.setattr(ap, "sweep_response", lambda p, grid, values, j: {
      "spearman": ap.spearman(values, readings[j]), "predicted": [readings[j]],
      "mean_by_step": readings[j], "swept_values": list(values)})
  report = evaluation.attribute_report(trained, data, _predictor_of(data),
                                       key=jax.random.key(0), num_bases=1, num_values=2)
  assert [report["progression"][n]["spearman"] for n in "ab"] == pytest.approx([1.0, 1.0])
  assert np.isnan(report["progression"]["c"]["spearman"])
  # (1 + 1 + 0) / 3; was (1 + 1) / 2: the attribute that did not move raised the mean.
  assert report["progression_mean_spearman"] == pytest.approx(2 / 3)
  assert report["progression_flat"] == ["c"] and report["progression_unswept"] == ["d"]
  readings[1] = [0.5, 0.5]  # Now "b" is flat too: (1 + 0 + 0) / 3, was 1.0 ("a" alone).
  report = evaluation.attribute_report(trained, data, _predictor_of(data),
                                       key=jax.random.key(0), num_bases=1, num_values=2)
  assert report["progression_mean_spearman"] == pytest.approx(1 / 3)
  assert report["progression_flat"] == ["b", "c"]
  assert "| 0.333 (2 flat) |" in evaluation.attribute_table([report])
  # The same image at every value (the VAE control): flat, though the predictor's rounding
  # across its batch read it as moving (was: a finite Spearman, counted, never listed).
  still.add(0)
  readings[0] = [0.5, 0.5 + 1e-7]
  report = evaluation.attribute_report(trained, data, _predictor_of(data),
                                       key=jax.random.key(0), num_bases=1, num_values=2)
  assert report["progression"]["a"]["spearman"] == pytest.approx(1.0)
  assert report["progression_flat"] == ["a", "b", "c"]
  assert report["progression_mean_spearman"] == 0.0


@pytest.mark.usefixtures("nothing_runs")
def test_attribute_report_refuses_a_predictor_of_the_whole_images_before_sampling():
  """Was: a predictor of the whole 32x32 images, for a run that crops to 28, refused only after
  the sampling, by `predict`, as images "this model" does not take."""
  trained, key, data = _trained(), jax.random.key(0), _data()
  trained.config.data.augment.crop_size = 28
  with pytest.raises(InputError, match=r"^the attribute predictor takes 32x32 images, but the "
                     r"run's test images are 28x28 centre crops of 32x32; train it on the "
                     r"images the model sees: attribute_predictor.load_or_train\(trained."
                     r"config.attribute_predictor, inference.load_data\(trained\), workdir\).$"):
    evaluation.attribute_report(trained, data, _predictor_of(data), key=key)


@pytest.mark.usefixtures("nothing_runs")
def test_options_that_are_not_inference_options_are_refused_before_anything_runs():
  """Was: tune_inference(options={...}) dataclasses' TypeError ("asdict() should be called on
  dataclass instances"); attribute_report refused them only after the sampling and the
  progressions had run (the module promises: before anything is sampled)."""
  trained, key, data = _trained(), jax.random.key(0), _data()
  says = (r"^options must be InferenceOptions, not dict; build them with inference.options_for"
          r"\(trained, steps=\.\.\., \.\.\.\).$")
  with pytest.raises(InputError, match=says):
    evaluation.tune_inference(trained, data, grid=[{}], occlusion_names=[], key=key,
                              options={"steps": 5})
  with pytest.raises(InputError, match=says):
    evaluation.evaluate_model(trained, data, occlusion_names=[], key=key, options={})
  with pytest.raises(InputError, match=says):
    evaluation.attribute_report(trained, data, _predictor_of(data), key=key,
                                options={"steps": 5})


def test_write_json_refuses_paths_and_objects_it_cannot_write(tmp_path):
  """Was: Python's IsADirectoryError (a folder), FileExistsError (a path inside a file),
  TypeError (an object JSON cannot hold; None for the path), each a traceback."""
  folder, plain = tmp_path / "out.json", tmp_path / "notes"
  folder.mkdir()
  plain.write_text("")
  cases = [
      ({"a": 1}, str(folder), rf"^{re.escape(str(folder))} is a folder; pass a file path for "
       rf"the JSON \(e.g. {re.escape(str(folder / 'results.json'))}\), or move the folder "
       r"away.$"),
      ({"a": 1}, str(plain / "x.json"), rf"^{re.escape(str(plain / 'x.json'))} lies inside "
       rf"{re.escape(str(plain))}, which is a file, not a folder; pass a path whose parents "
       r"are folders.$"),
      ({"a": object()}, str(tmp_path / "r.json"), r"^.*/r.json: JSON cannot hold this \(Object "
       r"of type object is not JSON serializable\); pass dicts, lists, numbers and strings "
       r"\(an array: .tolist\(\)\).$"),
      ({"a": 1}, None, r"^path=None: pass the JSON file's path \(a str or pathlib.Path\).$")]
  for obj, path, says in cases:
    with pytest.raises(InputError, match=says):
      evaluation.write_json(obj, path)
  assert not (tmp_path / "r.json").exists()
  evaluation.write_json({"a": float("nan")}, str(tmp_path / "new" / "r.json"))
  assert (tmp_path / "new" / "r.json").read_text() == '{\n  "a": null\n}'


def test_output_paths_with_characters_no_file_name_can_hold_are_refused(tmp_path):
  """Was: a NUL (in the file's name or a folder's) Python's ValueError ("embedded null byte"),
  a lone surrogate the file system cannot encode its UnicodeEncodeError, each a traceback at
  the write. Now one line naming the path (its repr: printed raw, the line would fail too).
  `files.check_output_file` is also `visualize.save_png`'s check."""
  base = str(tmp_path)
  for path, held in ((f"{base}/out\x00.json", r"a NUL character \(\\x00\)"),
                     (f"{base}/d\x00/r.json", r"a NUL character \(\\x00\)"),
                     (f"{base}/out\ud800.json",
                      r"'\\ud800', which the file system cannot encode")):
    says = (rf"^path={re.escape(repr(path))} holds {held}: no file can be named so; pass the "
            r"{} file's path without it\.$")
    with pytest.raises(InputError, match=says.format("JSON")):
      evaluation.write_json({"a": 1}, path)
    with pytest.raises(InputError, match=says.format("PNG")):
      files.check_output_file(path, "PNG", "grid.png", InputError)
  assert not os.listdir(base)
  # An undecodable byte of a name, as Python holds it (surrogateescape): a file name that is.
  if sys.getfilesystemencodeerrors() == "surrogateescape":
    evaluation.write_json({"a": 1}, f"{base}/out\udcff.json")
    assert os.listdir(tmp_path) == ["out\udcff.json"]


def test_tables_refuse_one_result_none_and_a_scale_that_is_no_number():
  """Was: one result (not in a list) a TypeError ("string indices must be integers"), None
  "'NoneType' object is not iterable", scale="100" a ValueError of the format."""
  result = evaluation.evaluate_mean_image(_data(), occlusion_names=[])
  report = {"model": "m", "samples": {}, "progression_mean_spearman": 0.5, "inference": None,
            "ceiling": {}}
  for table, name, made_by, one in (
      (evaluation.markdown_table, "results", "evaluate_model or evaluate_mean_image", result),
      (evaluation.attribute_table, "reports", "attribute_report", report)):
    for bad, what in ((one, "a dict"), (None, "None")):
      with pytest.raises(InputError, match=rf"^{name} is {what}, not a list of {made_by} "
                         r"outputs; pass a list of them, e.g. \[result\].$"):
        table(bad)
  with pytest.raises(InputError, match=r"^results\[0\] lacks 'rows'; pass a list of "):
    evaluation.markdown_table([{"model": "m"}])
  for bad in ("100", None, 0, float("nan")):
    with pytest.raises(InputError, match=rf"^scale={bad!r} is not valid; pass a positive "
                       r"number, e.g. 100 \(the squared errors are multiplied by it for "
                       r"display\).$"):
      evaluation.markdown_table([result], scale=bad)
  assert "| mean training image | fill |" in evaluation.markdown_table([result], scale=1)


def test_tables_take_an_evaluation_json_read_back_and_refuse_cells_they_cannot_show(tmp_path):
  """Was: the tables of an evaluation.json read back (NaN written as null) a TypeError
  ("ufunc 'isfinite' not supported"), and a report or result without its nested keys a
  KeyError, TypeError or AttributeError from inside the table (a review's finding). A value
  None is missing ("–"); a part that is not as the evaluation made it is one InputError."""
  result = evaluation.evaluate_mean_image(_data(n=1), occlusion_names=["eyes"])  # sem NaN.
  report = {"model": "m", "samples": {"binary_accuracy": 0.75, "binary_chance": 0.5,
                                      "continuous_correlation": float("nan")},
            "progression_mean_spearman": float("nan"), "inference": None, "ceiling": {},
            "progression_flat": []}
  path = tmp_path / "evaluation.json"
  evaluation.write_json({"results": [result], "attributes": [report]}, str(path))
  back = json.loads(path.read_text())
  assert back["results"][0]["rows"]["fill"]["eyes"]["sem"] is None
  table = evaluation.markdown_table(back["results"])
  assert table == evaluation.markdown_table([result]) and " ± – |" in table
  assert evaluation.attribute_table(back["attributes"]) == evaluation.attribute_table([report])
  assert "| m | – | 0.750 (0.500) | – | – | – | – | – / – |" in evaluation.attribute_table(
      back["attributes"])
  # None for a part, a cell or a value: missing.
  assert "| m | – | – | – | – | – | – | – / – |" in evaluation.attribute_table(
      [{**report, "samples": None, "ceiling": None}])
  cell = back["results"][0]["rows"]["fill"]["eyes"]
  for hole in ({**cell, "mean": None}, None):
    again = {**back["results"][0], "rows": {"fill": {"eyes": hole}}}
    assert "| mean training image | fill | – |" in evaluation.markdown_table([again])
  again = {**back["results"][0], "rows": {"fill": {"eyes": cell}, "none": None}}
  assert "| mean training image | none | – |" in evaluation.markdown_table([again])
  again = {**back["results"][0], "rows": {"fill": {"eyes": {**cell, "rmse_255": None}}}}
  assert "0-255" not in evaluation.markdown_table([again])  # No such table: none to show.
  fix = " outputs as they returned them, or as evaluation.json holds them.$"
  made = "; pass evaluate_model or evaluate_mean_image" + fix
  for rows, says in (
      (None, r"results\[0\]\['rows'\] is None, not a mapping of rows"),
      ({"fill": [1]}, r"results\[0\]\['rows'\]\['fill'\] is a list, not a mapping of cells"),
      ({"fill": {"c": {"sem": 1}}}, r"results\[0\]\['rows'\]\['fill'\]\['c'\] lacks 'mean'"),
      ({"fill": {"c": [1]}}, r"results\[0\]\['rows'\]\['fill'\]\['c'\] is a list, not an "
                             r"error cell"),
      ({"fill": {"c": {"mean": "0.1"}}}, r"results\[0\]\['rows'\]\['fill'\]\['c'\]\['mean'\] "
                                          r"is '0.1', not a number \(or null\)"),
      ({"fill": {"c": {"mean": 0.1, "rmse_255": {}}}},
       r"results\[0\]\['rows'\]\['fill'\]\['c'\]\['rmse_255'\] lacks 'mean'")):
    with pytest.raises(InputError, match="^" + says + made):
      evaluation.markdown_table([{"model": "x", "rows": rows}])
  made = "; pass attribute_report" + fix
  for change, says in (
      ({"samples": {}}, r"reports\[0\]\['samples'\] lacks 'binary_accuracy', "
                        r"'binary_chance', 'continuous_correlation'"),
      ({"inference": [0.5]}, r"reports\[0\]\['inference'\] is a list, not a score mapping"),
      ({"ceiling": {"binary_accuracy": "high"}},
       r"reports\[0\]\['ceiling'\]\['binary_accuracy'\] is 'high', not a number \(or null\)"),
      ({"progression_mean_spearman": "0.5"}, r"reports\[0\]\['progression_mean_spearman'\] "
                                             r"is '0.5', not a number \(or null\)")):
    with pytest.raises(InputError, match="^" + says + made):
      evaluation.attribute_table([{**report, **change}])


def test_the_mean_image_of_crops_asks_where_the_boxes_lie():
  """Was: evaluate_mean_image of data cropped already (inference.load_data's) with crop_size
  and no crop_from took them as whole images, its face boxes misplaced without a word (the
  eyes' error 0.092976 in place of 0.092723; a review's finding); and a crop_from beside a
  crop_size that crops was ignored."""
  from a2i_jax.data.base import centre_cropped  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  split = lambda n: Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),  # noqa: E731
                          np.zeros((n, len(NAMES)), np.float32))
  whole = Dataset("synthetic", NAMES, ("binary",) * len(NAMES),
                  {"train": split(4), "validation": split(2), "test": split(2)})
  crops = centre_cropped(whole, 28)
  with pytest.raises(InputError, match=r"^crop_size=28, but the dataset's images are 28x28 "
                     r"already, crops of larger images or whole ones \(where the face boxes lie "
                     r"depends on which\): where they are centre crops already "
                     r"\(inference.load_data's, of a run that crops\), pass crop_from=the whole "
                     r"images' side \(evaluation.crop_frame\(config\)\) and no crop_size; where "
                     r"they are the whole images, pass crop_size=0.$"):
    evaluation.evaluate_mean_image(crops, occlusion_names=["eyes"], crop_size=28)
  with pytest.raises(InputError, match=r"^crop_from=30, but the dataset's images are 32x32, "
                     r"cropped here to crop_size=28; where they are centre crops already"):
    evaluation.evaluate_mean_image(whole, occlusion_names=["eyes"], crop_size=28, crop_from=30)
  # The ways that say where the boxes lie agree.
  want = evaluation.evaluate_mean_image(whole, occlusion_names=["eyes"], crop_size=28)
  for data, kwargs in ((crops, {"crop_from": 32}), (crops, {"crop_from": 32, "crop_size": 28}),
                       (whole, {"crop_from": 32, "crop_size": 28})):
    got = evaluation.evaluate_mean_image(data, occlusion_names=["eyes"], **kwargs)
    assert got["rows"] == want["rows"]


def test_the_ceiling_is_scored_on_the_same_images_as_the_samples(monkeypatch):
  """Was: `attribute_report(..., num_examples=N)` put the predictor's `meta.test_metrics`,
  scored on the WHOLE test split at its training, beside the samples' and inferred
  attributes' scores on the first N images, as their "ceiling" (and chance level), and the
  table showed them in one row with no count (a fault hunt's finding: 1000 images beside 300
  in RESULTS.md). Now the ceiling is the predictor on the real images of the same N rows, the
  whole split's figure is kept as "ceiling_whole_test_split", and the table gives n and says
  "(n = K)" for a part of another count (an evaluation.json of before, read back)."""
  rows = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], np.float32)
  names = ("a", "b", "c", "d")
  images = np.zeros((4, S, S, 3), np.uint8)
  images[:, 0, 0, :] = 255 * rows[:, :3]  # The fake predictor reads the attributes there...
  images[:, 0, 1, 0] = 255 * rows[:, 3]
  split = Split(images, rows)
  data = Dataset("synthetic", names, ("binary",) * 4,
                 {"train": split, "validation": split, "test": split})
  whole = {"num_images": 1000, "binary_accuracy": 0.25, "binary_chance": 0.6,
           "continuous_correlation": float("nan")}
  predictor = _predictor_of(data)
  predictor = dataclasses.replace(predictor, meta=dataclasses.replace(
      predictor.meta, test_metrics=whole))

  def read(p, x):  # ...so the real images are read right; the samples (grey) all as 0.
    x = np.asarray(x, np.float32) / (255.0 if np.asarray(x).dtype == np.uint8 else 1.0)
    return np.concatenate([x[:, 0, 0, :], x[:, 0, 1, :1]], axis=1)
  monkeypatch.setattr(ap.scoring, "predict", read)
  monkeypatch.setattr(evaluation.inference, "sample",
                      lambda t, attrs, key: {"image": np.full((len(attrs), S, S, 3), 0.1)})
  monkeypatch.setattr(evaluation.inference, "progression", lambda t, a, j, values, key,
                      num_latents: np.zeros((1, len(values), S, S, 3)))
  monkeypatch.setattr(evaluation.inference, "infer_attributes",
                      lambda t, x, prior, key, options: {"y": rows[:len(x)]})
  report = evaluation.attribute_report(_trained(names), data, predictor, key=jax.random.key(0),
                                       num_examples=2, num_bases=1, num_values=2)
  assert report["samples"]["num_images"] == report["inference"]["num_images"] == 2
  # Was 1000 images and the whole split's 0.25.
  assert report["ceiling"]["num_images"] == 2
  assert report["ceiling"]["binary_accuracy"] == 1.0
  assert report["ceiling"]["binary_chance"] == report["samples"]["binary_chance"] == 0.75
  assert report["ceiling_whole_test_split"] == whole
  table = evaluation.attribute_table([report])
  assert "| predictor on the same real images: acc. / corr. |" in table
  assert "| CVAE | 2 | 0.500 (0.750) | – | " in table and table.endswith("| 1.000 / – |\n")
  old = {**report, "ceiling": whole}  # As an evaluation.json of before holds it.
  assert evaluation.attribute_table([old]).endswith("| 0.250 / – (n = 1000) |\n")
  # Counts past a million as counts (review: :g wrote 1.23457e+06).
  big = {**old, "ceiling": {**whole, "num_images": 1234567}}
  assert evaluation.attribute_table([big]).endswith("| 0.250 / – (n = 1234567) |\n")


def test_a_continuous_attribute_whose_predictions_never_move_scores_0():
  """Was: a continuous column whose predictions are constant while its targets vary had
  Pearson NaN, left out of the mean, so no response at all scored better than a weak one
  (a fault hunt's: 0.993 against 0.550). Now it counts as 0 and is listed in
  "continuous_flat"; a column whose targets are constant (nothing to follow) is still left
  out. A binary column's accuracy is never NaN: constant predictions score as their class."""
  names = ("a", "b", "c", "bin")
  kinds = ("continuous",) * 3 + ("binary",)
  predictor = ap.Predictor({}, ap.PredictorMeta(
      dataset="d", attribute_names=names, attribute_kinds=kinds, image_size=S, width=4,
      mean=(0.0,) * 4, std=(1.0,) * 4, low=(0.0,) * 4, high=(1.0,) * 4, steps=1,
      batch_size=1, learning_rate=1e-3, seed=0))
  t = np.array([[0.1, 0.2, 0.5, 0], [0.4, 0.9, 0.5, 1], [0.8, 0.3, 0.5, 1], [0.9, 0.6, 0.5, 1]],
               np.float32)
  weak = np.c_[t[:, 0], [0.2, 0.5, 0.6, 0.3], t[:, 0], np.full(4, 0.9)]  # b: 0.29.
  flat = np.c_[t[:, 0], np.full(4, 0.3), t[:, 0], np.full(4, 0.9)]
  s_weak, s_flat = ap.score(predictor, weak, t), ap.score(predictor, flat, t)
  assert np.isnan(s_flat["per_attribute"]["c"]["score"])  # Targets constant: left out.
  assert s_flat["per_attribute"]["b"]["score"] == 0.0  # Was NaN, left out of the mean.
  assert s_flat["continuous_flat"] == ["b"] and s_weak["continuous_flat"] == []
  assert s_flat["continuous_correlation"] == pytest.approx(0.5)  # (1 + 0) / 2; was 1.0.
  assert s_flat["continuous_correlation"] < s_weak["continuous_correlation"]
  assert s_flat["continuous_shuffled"] == pytest.approx(
      s_flat["per_attribute"]["a"]["shuffled"] / 2)
  assert s_flat["binary_accuracy"] == 0.75  # Constant predictions: the high class.
  report = {"model": "m", "samples": s_flat, "progression_mean_spearman": 0.5,
            "inference": None, "ceiling": {}}
  assert "| 0.500 (1 flat) |" in evaluation.attribute_table([report])


def test_the_divergence_message_names_terms_not_their_totals():
  """Was: a diverged (C)VAE's message named "bound" (-loss, a total) beside the term at
  fault, and a disCVAE's "kl" (kl_fg + kl_bg) beside the one of its parts that was (a fault
  hunt's); totals are named, "loss" first, only when no other term is at fault."""
  from a2i_jax import train_eval  # pylint: disable=import-outside-toplevel
  nan, ok = (float("nan"), float("nan")), (1.0, 2.0)
  cvae = {"loss": nan, "nll": ok, "kl": nan, "bound": nan}
  assert train_eval.describe_divergence(cvae) == (
      "term kl (value nan, gradient norm nan) is not finite")
  assert train_eval.describe_divergence({**cvae, "kl": ok}).startswith("term loss (value nan")
  dis = {"loss": nan, "recon_fg": ok, "recon": ok, "kl_fg": nan, "kl_bg": ok, "kl": nan,
         "gate_bce": ok}
  assert train_eval.describe_divergence(dis) == (
      "term kl_fg (value nan, gradient norm nan) is not finite")
  assert train_eval.describe_divergence({**dis, "kl_fg": ok, "loss": ok}) == (
      "term kl (value nan, gradient norm nan) is not finite")
