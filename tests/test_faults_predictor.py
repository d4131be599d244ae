"""Faults of the attribute predictor: its argument checks, the data it trains on, and saving
it; and of the sampler whose images it scores. Library-level and fast: the predictor here is
never trained and never run (its weights are drawn on the host in the shapes `jax.eval_shape`
gives), so nothing is compiled but one tiny CVAE's sampler (about a second)."""

import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from a2i_jax import attribute_predictor as ap
from a2i_jax import models, perf, sampling
from a2i_jax.attribute_predictor import network, storage, training
from a2i_jax.data.base import Dataset, Split
from a2i_jax.errors import CheckpointError, DataError, InputError, WorkdirError
from conftest import tiny_config

S = 8  # Image side.
NAMES, KINDS = ("smile", "age"), ("binary", "continuous")


def _split(n: int, seed: int) -> Split:
  rng = np.random.default_rng(seed)
  attributes = np.stack([rng.integers(0, 2, n), rng.normal(size=n)], 1).astype(np.float32)
  return Split(rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8), attributes)


def _dataset(train: Split = None) -> Dataset:
  return Dataset("toy", NAMES, KINDS, {"train": train if train is not None else _split(6, 0),
                                         "test": _split(4, 1)})


@pytest.fixture(scope="module")
def predictor() -> ap.Predictor:
  """An untrained predictor of `NAMES` on SxS images (width 2), weights drawn on the host."""
  shapes = jax.eval_shape(lambda: network.AttributeNet(len(NAMES), 2).init(
      jax.random.PRNGKey(0), jnp.zeros((1, S, S, 3))))
  rng = np.random.default_rng(0)
  draw = lambda s: np.abs(rng.normal(size=s.shape)).astype(np.float32)  # noqa: E731
  variables = {k: jax.tree_util.tree_map(draw, dict(shapes)[k])
               for k in ("params", "batch_stats")}
  meta = ap.PredictorMeta(
      dataset="toy", attribute_names=NAMES, attribute_kinds=KINDS, image_size=S, width=2,
      mean=(0.5, 0.0), std=(0.5, 1.0), low=(0.0, -2.0), high=(1.0, 2.0), steps=1,
      batch_size=2, learning_rate=1e-3, seed=0)
  return ap.Predictor(variables, meta)


@pytest.fixture
def nothing_trains(monkeypatch):
  """Training stops the test: every check under test comes before it."""
  monkeypatch.setattr(training, "_init_variables", lambda *a: pytest.fail("trained"))


def test_predict_and_scoring_refuse_what_is_not_a_predictor_and_a_bool_batch_size(predictor):
  """Was: a workdir's path (or None) in place of the predictor an AttributeError ("'str'
  object has no attribute 'meta'") in predict, score, fidelity, sweep_response and
  save_predictor; predict's batch_size=True taken as 1."""
  images = np.zeros((2, S, S, 3), np.uint8)
  calls = (lambda p: ap.predict(p, images), lambda p: ap.fidelity(p, images, np.zeros((2, 2))),
           lambda p: ap.score(p, np.zeros((2, 2)), np.zeros((2, 2))),
           lambda p: ap.sweep_response(p, images[None], [0.0, 1.0], 0),
           lambda p: ap.attribute_index(p, 0), lambda p: ap.save_predictor(p, "unused"))
  for call in calls:
    with pytest.raises(InputError, match=r"predictor 'runs/x' is a path; pass the Predictor: "
                       r"attribute_predictor.load_predictor\(workdir\)"):
      call("runs/x")
    with pytest.raises(InputError, match="predictor=NoneType is not an attribute predictor; "
                       "pass attribute_predictor.load_predictor"):
      call(None)
  with pytest.raises(InputError, match="batch_size=True is not valid; pass an integer of at "
                     "least 1"):
    ap.predict(predictor, images, batch_size=True)


def test_score_refuses_predictions_that_are_not_numbers_and_a_bad_seed(predictor):
  """Was: predictions of strings a ValueError of NumPy's ("could not convert string to
  float"), seed=-1 a ValueError and seed=1.5 a TypeError of NumPy's, seed=True taken as 1."""
  t = np.zeros((4, 2), np.float32)
  with pytest.raises(InputError, match=r"predictions are not real numbers \(strings\); pass "
                     r"the float array \[N, 2\] `predict` returns"):
    ap.score(predictor, [["x", "y"]] * 4, t)
  for bad in (-1, 1.5, True, "0"):
    with pytest.raises(InputError, match=f"seed={bad!r} is not valid; pass an integer of at "
                       "least 0"):
      ap.score(predictor, t, t, seed=bad)
  # fidelity checks its seed before the images are predicted (no weights: predict would fail).
  with pytest.raises(InputError, match="seed=-1 is not valid"):
    ap.fidelity(dataclasses.replace(predictor, variables={}), np.zeros((4, S, S, 3), np.uint8),
                t, seed=-1)
  assert ap.score(predictor, t, t, seed=np.int64(3))["num_images"] == 4


@pytest.mark.parametrize("value", [-1.0, 0.5, 2.0])
def test_binary_targets_on_another_scale_are_refused(predictor, value):
  """Was: scored without a word: -1/+1 targets for this 0/1 attribute (threshold 0.5) read
  -1 as the low class; 0/1 targets for a -1/+1 one were all high (0 is its threshold)."""
  t = np.zeros((4, 2), np.float32)
  t[1, 0] = value
  with pytest.raises(InputError, match=f"binary attribute 'smile' hold {value:g}, outside its "
                     r"classes 0 and 1 or at the threshold between them \(0.5\)"):
    ap.score(predictor, np.zeros((4, 2), np.float32), t)
  t[1, 0], t[2, 1] = 1.0, 5.0  # The classes, and a continuous value past its range: scored.
  assert ap.score(predictor, np.zeros((4, 2), np.float32), t)["num_images"] == 4
  # A column of one value (1) in training whose other class training took as 0: both scored;
  # a target on another scale names the class taken (training's `_target_stats`).
  constant = dataclasses.replace(predictor, meta=dataclasses.replace(
      predictor.meta, mean=(1.0, 0.0), low=(0.0, -2.0), high=(1.0, 2.0)))
  t[1, 0] = 0.0
  assert ap.score(constant, np.zeros((4, 2), np.float32), t)["num_images"] == 4
  t[1, 0] = 2.0
  with pytest.raises(InputError, match=r"hold 2, outside its classes 0 and 1 \(the predictor "
                     r"saw only the value 1 in training and took 0 for the other\)"):
    ap.score(constant, np.zeros((4, 2), np.float32), t)


@pytest.mark.parametrize("value,other,pair,classes", [
    (1.0, None, None, (0.0, 1.0)), (0.0, None, None, (0.0, 1.0)),
    (-1.0, None, None, (-1.0, 0.0)), (2.0, None, None, (1.0, 2.0)),
    (1.0, None, (-1.0, 1.0), (-1.0, 1.0)), (-1.0, None, (0.0, 1.0), (-1.0, 0.0)),
    (1.0, [1.0, -1.0, -1.0], (0.0, 1.0), (-1.0, 1.0)), (2.0, [2.0, 5.0], None, (2.0, 5.0))])
def test_a_binary_column_of_one_value_in_training_gets_its_other_class(value, other, pair,
                                                                       classes):
  """Was: [value, value + 1] for any value, so a {0, 1} attribute that was 1 throughout a small
  training split had the threshold 1.5: the predictor learned "low" for it, and `score`
  counted its targets of 1 as the low class, silently (and its 0s as the same class). Now the
  other class comes from the evaluated split, else the class pair of the dataset's other
  binary columns (`pair`, when the value is one of it), else the value's sign."""
  train = np.array([[value, 0.0], [value, 1.0], [value, 3.0]])
  kinds = ("binary", "continuous")
  if pair is not None:
    train = np.concatenate([train, np.array([[pair[0]], [pair[1]], [pair[1]]])], 1)
    kinds += ("binary",)
  stats = training._target_stats(  # pylint: disable=protected-access
      train, kinds, None if other is None else np.array([[v, 0.0, 0.0][:len(kinds)]
                                                         for v in other]))
  assert (stats["low"][0], stats["high"][0]) == classes
  if pair is not None:
    assert (stats["low"][2], stats["high"][2]) == pair
  assert (stats["low"][1], stats["high"][1]) == (0.0, 3.0)


def test_a_continuous_column_on_a_tiny_scale_is_standardised_and_a_constant_one_is_not():
  """Was: a standard deviation under an absolute 1e-6 was taken for a constant column (std
  1.0), so a column on a tiny scale (1e-7 +- 5e-8, which varies) was left unstandardised,
  silently: its targets all near 0. Now the threshold is relative to the column's scale."""
  rng = np.random.default_rng(0)
  tiny = 1e-7 + 5e-8 * rng.standard_normal(64)
  columns = [tiny, 1e9 + 1e3 * rng.standard_normal(64), np.full(64, 1e-7), np.full(64, 0.3),
             np.zeros(64), np.full(64, -3e8)]
  a = np.stack(columns, 1).astype(np.float32)
  stats = training._target_stats(a, ("continuous",) * 6)  # pylint: disable=protected-access
  assert np.allclose(stats["std"][:2], a[:, :2].astype(np.float64).std(0))
  standardised = (a[:, 0] - stats["mean"][0]) / stats["std"][0]
  assert standardised.std() == pytest.approx(1.0, rel=1e-3)
  # Constant columns (float32's own rounding of 0.3 included): 1.0, never 0 or NaN.
  assert np.array_equal(stats["std"][2:], np.ones(4))


def test_correlations_refuse_vectors_of_other_shapes_and_give_nan_for_nan():
  """Was: spearman ranked NaN as the largest value, so a vector holding NaN had a finite rank
  correlation (0.316 for [1, nan, nan, 4] against [1, 2, 3, 4]); pearson of vectors of other
  lengths was NumPy's broadcast ValueError, a vector of one value broadcast against the other
  (NaN), matrices flattened and scored (0.8)."""
  assert np.isnan(ap.spearman([1, np.nan, np.nan, 4], [1, 2, 3, 4]))
  assert np.isnan(ap.spearman([1, 2, 3, 4], [1, 2, np.inf, 4]))
  assert np.isnan(ap.pearson([], []))  # Was NaN with NumPy's warnings of an empty mean.
  assert ap.spearman([1, 2, 2, 3], [10, 20, 20, 30]) == pytest.approx(1.0)
  for a, b in (([1, 2, 3], [1, 2]), ([1], [1, 2, 3]), ([[1, 2], [3, 4]], [[1, 2], [4, 3]])):
    for fn in (ap.pearson, ap.spearman):
      with pytest.raises(InputError, match="correlation of values of shapes .*; pass two "
                         r"vectors \[N\] of one length"):
        fn(a, b)
  with pytest.raises(InputError, match="correlation of values that are not real numbers"):
    ap.pearson(["a", "b"], [1, 2])


def test_pearson_is_nan_for_a_constant_vector_and_scale_free_otherwise(predictor):
  """Was: an absolute cutoff (1e-12) on the product of the norms: a constant vector's rounding
  leftover beside a large vector passed it, so pearson gave 0.0 (not NaN) for 0.7 or 1e8 + 0.1
  repeated against values in millions, and score averaged that 0.0 into
  continuous_correlation; a vector in small units failed it, so pearson(a, a) was NaN for
  a = [1e-7, 2e-7, 3e-7] and score dropped the attribute."""
  big = np.arange(7.0) * 1e6
  assert np.isnan(ap.pearson(np.full(7, 0.7), big))
  assert np.isnan(ap.pearson(big, np.full(7, 0.1 + 1e8)))
  small = np.array([1e-7, 2e-7, 3e-7])
  assert ap.pearson(small, small) == pytest.approx(1.0)
  assert ap.pearson(small, -small * 1e300) == pytest.approx(-1.0)
  assert ap.pearson([1e308, -1e308, 1e308], [1, -1, 1]) == pytest.approx(1.0)  # No overflow.
  assert ap.pearson([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
  assert ap.spearman(small, [3, 2, 1]) == pytest.approx(-1.0)
  t = np.stack([np.array([0, 1] * 3 + [0], np.float32), big.astype(np.float32)], 1)
  p = np.stack([np.zeros(7, np.float32), np.full(7, 0.7, np.float32)], 1)
  # Constant predictions against targets that vary: no response, 0 and listed; constant
  # targets (nothing to follow): NaN, left out.
  s = ap.score(predictor, p, t)
  assert s["continuous_correlation"] == 0.0 and s["continuous_flat"] == ["age"]
  assert np.isnan(ap.score(predictor, np.stack([p[:, 0], big.astype(np.float32)], 1),
                           np.stack([t[:, 0], p[:, 1]], 1))["continuous_correlation"])
  t[:, 1] = small.tolist() * 2 + [1e-7]
  p[:, 1] = t[:, 1]
  assert ap.score(predictor, p, t)["continuous_correlation"] == pytest.approx(1.0)


def test_sweep_response_refuses_ragged_non_numeric_and_empty_sweeps(predictor):
  """Was: a ragged list of progressions and swept values that are not numbers NumPy's
  ValueError; no swept values (K = 0), one (K = 1) or no examples (N = 0) returned NaN
  correlations and means with NumPy's warnings."""
  x = np.zeros((1, 2, S, S, 3), np.uint8)
  with pytest.raises(InputError, match="progressions is a list of items of different shapes"):
    ap.sweep_response(predictor, [x[0], x[0, :1]], [0.0, 1.0], 0)
  with pytest.raises(InputError, match="swept_values are not real numbers"):
    ap.sweep_response(predictor, x, ["low", "high"], 0)
  for progressions, values in ((x[:, :0], []), (x[:, :1], [0.0]), (x[:0], [0.0, 1.0])):
    with pytest.raises(InputError, match=r"progressions have shape .*; a sweep needs N >= 1 "
                       "examples of K >= 2 swept values"):
      ap.sweep_response(predictor, progressions, values, "smile")


def _with_train(**changes) -> Dataset:
  return _dataset(dataclasses.replace(_split(6, 0), **changes))


@pytest.mark.usefixtures("nothing_trains")
@pytest.mark.parametrize("data, says", [
    (lambda: _with_train(images=np.zeros((0, S, S, 3), np.uint8),
                         attributes=np.zeros((0, 2), np.float32)),
     "split 'train' is empty; the attribute predictor needs training images"),
    (lambda: _with_train(attributes=np.where(np.eye(6, 2, dtype=bool), np.nan, 0.5)),
     "split 'train': attribute row 0 holds NaN or infinity; drop or fill the rows"),
    (lambda: _with_train(attributes=np.zeros((6, 1), np.float32)),
     r"split 'train': attributes have shape \(6, 1\), expected \[6, 2\] .*smile, age"),
    (lambda: _with_train(attributes=np.zeros((6, 3), np.float32)),
     r"split 'train': attributes have shape \(6, 3\), expected \[6, 2\]"),
    (lambda: _with_train(images=np.zeros((6, S, S, 3), np.float32) + 200.0),
     r"split 'train': images are float32 \(6, 8, 8, 3\); the attribute predictor takes uint8"),
    (lambda: Dataset("toy", NAMES, KINDS, {"train": _split(6, 0), "test": dataclasses.replace(
        _split(4, 1), attributes=np.full((4, 2), np.inf, np.float32))}),
     "split 'test': attribute row 0 holds NaN or infinity"),
    (lambda: Dataset("toy", ("smile", "smile"), KINDS, _dataset().splits),
     "names the attribute\\(s\\) 'smile' more than once; give every column its own name"),
], ids=["empty", "nan", "fewer_columns", "more_columns", "float_images", "nan_test", "twice"])
def test_train_predictor_refuses_data_it_cannot_learn_from(data, says, tmp_path):
  """Was: a `Dataset` built by hand reached training unchecked: an empty training split was
  NumPy's ValueError ("zero-size array"), NaN attributes a divergence blamed on the learning
  rate ("lower config.attribute_predictor.learning_rate"), one attribute column for two names
  broadcast and trained without a word, three a TypeError, float images in [0, 255] trained
  on as they were (the step reads only their dtype), NaN test attributes refused only after
  the training, and two columns of one name trained and scored as one (`score`'s
  per-attribute dict kept the last)."""
  dataset = data()
  kw = {"steps": 1, "batch_size": 2, "learning_rate": 1e-3, "width": 2}
  with pytest.raises(DataError, match=f"dataset 'toy',? {says}"):
    ap.train_predictor(dataset, **kw)
  with pytest.raises(DataError, match=says):  # Before any predictor is read or trained.
    ap.load_or_train(kw, dataset, str(tmp_path))


@pytest.mark.usefixtures("nothing_trains")
def test_train_predictor_refuses_what_is_not_a_dataset():
  """Was: a TypeError ("string indices must be integers") for a path in place of the
  dataset."""
  with pytest.raises(InputError, match="dataset=str is not a Dataset; pass one of "
                     "a2i_jax.data's"):
    ap.train_predictor("data/lfw", steps=1, batch_size=2, learning_rate=1e-3, width=2)


@pytest.mark.parametrize("key, value, says", [
    ("learning_rate", 1e-40, "learning_rate=1e-40 is below float32's smallest normal number "
     "(1.18e-38), in which the predictor's optimiser computes, so the device flushes it to 0; "
     "use at least 1.2e-38."),
    ("learning_rate", 1e39, "learning_rate=1e+39 is past float32's range (about 3.4e38)"),
    # Was: the config's words ("must be > 0.0", "must be a finite number") and the API's
    # own, from a second test of the range.
    ("learning_rate", 0.0, "learning_rate=0.0 is not valid; pass a positive finite number "
     "(e.g. 1e-3)."),
    ("learning_rate", math.inf, "learning_rate=inf is not valid; pass a positive finite"),
    ("steps", 2**31, "steps=2,147,483,648 is past int32's largest value, 2,147,483,647, in "
     "which the device code holds it; use a smaller one."),
    ("batch_size", 2**31, "batch_size=2,147,483,648 is past int32's largest value"),
    ("width", 2**31, "width=2,147,483,648 is past int32's largest value"),
])
def test_train_predictor_refuses_the_settings_the_config_checks_refuse(
    key, value, says, nothing_trains, tmp_path):
  """Was: its settings were checked by a copy of `config_lib.check_values`'s rule that took
  what that rule refuses: a learning_rate of 1e-40 (0 on the device) trained nothing without a
  word, and steps, batch_size or width past int32 went on to the training. Now the one rule,
  `config_lib.check_predictor_settings`, for the predictor's settings and the config's."""
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  settings = {"steps": 1, "batch_size": 2, "learning_rate": 1e-3, "width": 2, key: value}
  for call in (lambda: ap.train_predictor(_dataset(), **settings),
               lambda: ap.load_or_train(settings, _dataset(), str(tmp_path))):
    with pytest.raises(InputError, match=re.escape(f"attribute predictor: {says}")):
      call()
  config = tiny_config("cvae")  # The config's check: the same rule.
  config.attribute_predictor[key] = value
  with pytest.raises(config_lib.ConfigError,
                     match=re.escape(f"config.attribute_predictor.{says}")):
    config_lib.check_values(config)


def _rewrite_weights(d: str, edit) -> None:
  """Applies `edit` to the saved weights and writes hashes that match, as a writer without
  the finite check did (not damage, which the hashes catch)."""
  with open(os.path.join(d, "variables.msgpack"), "rb") as f:
    variables = serialization.msgpack_restore(f.read())
  blob = serialization.msgpack_serialize(jax.tree_util.tree_map(edit, variables))
  with open(os.path.join(d, "variables.msgpack"), "wb") as f:
    f.write(blob)
  path = os.path.join(d, "meta.json")
  with open(path) as f:
    meta = json.load(f)
  meta["weights_sha256"] = hashlib.sha256(blob).hexdigest()
  meta["meta_sha256"] = storage._meta_sha256(meta)  # pylint: disable=protected-access
  with open(path, "w") as f:
    json.dump(meta, f)


def test_a_meta_json_nested_too_deeply_is_unreadable_not_a_traceback(predictor, tmp_path):
  """Was: Python's RecursionError from the JSON parser, where any other damage to meta.json
  is a CheckpointError (which `load_or_train` answers by training again)."""
  d = ap.save_predictor(predictor, str(tmp_path))
  with open(os.path.join(d, "meta.json"), "w") as f:
    f.write("[" * 100000 + "]" * 100000)
  with pytest.raises(CheckpointError, match=f"predictor in {d} is unreadable \\(meta.json is "
                     "nested too deeply to be a predictor's\\). Delete the folder"):
    ap.load_predictor(str(tmp_path))


def test_weights_that_hold_nan_are_neither_saved_nor_loaded(predictor, tmp_path):
  """Was: a predictor whose weights hold NaN was saved and loaded without a word, and its
  NaN predictions then blamed on the images scored ("score only finite predictions (of finite
  images)")."""
  nan = dataclasses.replace(predictor, variables=jax.tree_util.tree_map(
      lambda a: a * np.nan, predictor.variables))
  with pytest.raises(InputError, match="the attribute predictor's weights hold NaN or "
                     "infinity; train it again"):
    ap.save_predictor(nan, str(tmp_path))
  assert not os.path.exists(ap.predictor_dir(str(tmp_path)))  # Nothing written.
  d = ap.save_predictor(predictor, str(tmp_path))
  _rewrite_weights(d, lambda a: a * np.inf)
  with pytest.raises(CheckpointError, match=f"predictor in {d} is unreadable \\(its weights "
                     "hold NaN or infinity\\). Delete the folder"):
    ap.load_predictor(str(tmp_path))


def test_a_predictor_that_cannot_be_saved_is_a_workdir_error(predictor, tmp_path, monkeypatch,
                                                             caplog):
  """Was: save_predictor's OSError itself, a traceback (NotADirectoryError for a workdir that
  is a file, FileExistsError for a file named attribute_predictor in it, OSError ENOSPC for a
  full disk), and None for the workdir a TypeError of os.path's in save_predictor,
  load_predictor and load_or_train."""
  (tmp_path / "file").write_text("")
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "attribute_predictor").write_text("")
  for workdir in (tmp_path / "file", tmp_path / "run"):
    blocked = workdir if workdir.name == "file" else workdir / "attribute_predictor"
    with pytest.raises(WorkdirError, match=f"could not save the attribute predictor in "
                       f".*{workdir.name}/attribute_predictor \\({blocked} is a file, not a "
                       "folder\\); pass a workdir that is a writable folder"):
      ap.save_predictor(predictor, str(workdir))
  for call in (lambda: ap.save_predictor(predictor, None), lambda: ap.load_predictor(None),
               lambda: ap.load_or_train(None, _dataset(), None)):
    with pytest.raises(InputError, match=re.escape("workdir=None: pass the run's folder, a "
                                                   "path (str or pathlib.Path)")):
      call()
  with pytest.raises(InputError, match=re.escape("workdir='': pass the run's folder")):
    ap.load_predictor("")  # Was: the current folder's attribute_predictor, without a word.
  # A disk that fills between the two files: an error, and the half-saved predictor is refused.
  d = ap.save_predictor(predictor, str(tmp_path))
  write = storage.files.atomic_write

  def full_at_meta(path, data):
    if path.endswith("meta.json"):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    write(path, data)
  monkeypatch.setattr(storage.files, "atomic_write", full_at_meta)
  other = dataclasses.replace(predictor, variables=jax.tree_util.tree_map(
      lambda a: a + 1.0, predictor.variables))
  with pytest.raises(WorkdirError, match=f"could not save the attribute predictor in {d} \\(no "
                     "space left on the device\\)"):
    ap.save_predictor(other, str(tmp_path))
  with pytest.raises(CheckpointError, match="the weights do not match the metadata"):
    ap.load_predictor(str(tmp_path))
  # load_or_train still scores with what it trained, and says it could not keep it.
  monkeypatch.setattr(storage, "_train", lambda *a, **k: other)
  settings = {"steps": 1, "batch_size": 2, "learning_rate": 1e-3, "width": 2}
  assert ap.load_or_train(settings, _dataset(), str(tmp_path)) is other
  assert "could not save the attribute predictor" in caplog.text
  assert "no space left on the device" in caplog.text


def test_correlations_and_sweeps_refuse_strings_complex_numbers_and_a_matrix_of_steps(
    predictor):
  """Was: pearson and spearman read strings of digits as the numbers (["1", "2", "3"] gave
  0.98) and dropped complex values' imaginary part with only NumPy's ComplexWarning;
  sweep_response flattened a matrix of swept values ([[0, 1], [2, 3]] taken as four steps)
  and read strings of digits as numbers too."""
  start = "correlation of values that are not real numbers"
  fix = r"; pass two vectors of real numbers of one length\.$"
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # No ComplexWarning on the way either.
    for fn in (ap.pearson, ap.spearman):
      with pytest.raises(InputError, match=rf"^{start} \(strings\){fix}"):
        fn(["1", "2", "3"], [1, 2, 4])
      with pytest.raises(InputError, match=rf"^{start} \(dtype complex128\){fix}"):
        fn([1, 2, 3], np.array([1 + 1j, 2, 4]))
  assert ap.pearson([True, False, True], [1, 2, 3]) == pytest.approx(0.0)  # Bools are taken.
  x = np.zeros((1, 2, S, S, 3), np.uint8)
  with pytest.raises(InputError, match=r"^swept_values have shape \(2, 2\); pass one value per "
                     r"step, \[K\] \(the swept attribute's value at each step\)\.$"):
    ap.sweep_response(predictor, x, [[0, 1], [2, 3]], 0)
  with pytest.raises(InputError, match=r"^swept_values are not real numbers \(strings\); pass "
                     r"the swept attribute's value at each step\.$"):
    ap.sweep_response(predictor, x, ["0", "1"], 0)


def test_score_refuses_strings_bytes_and_complex_numbers(predictor):
  """Was: `score` read targets and predictions of strings or bytes of digits as the numbers
  and dropped complex targets' imaginary part (binary accuracy 1.0, correlation 0.99 in the
  review's reproduction), where `pearson` refused them."""
  pred = np.array([[0.9, 0.1], [0.2, 0.5], [0.7, -0.3]])
  fix = {"target attributes": r"; pass a float array \[N, 2\]\.$",
         "predictions": r"; pass the float array \[N, 2\] `predict` returns\.$"}
  bad = (("strings", np.array([["1", "0.2"], ["0", "0.4"], ["1", "-0.1"]])),
         ("strings", [["1", "0.2"], ["0", "0.4"], ["1", "-0.1"]]),
         ("strings", np.array([[b"1", b"0.2"], [b"0", b"0.4"], [b"1", b"-0.1"]])),
         ("dtype complex128", np.array([[1, 0.2 + 5j], [0, 0.4 - 9j], [1, -0.1 + 1j]])),
         ("dtype object", [[1, None], [0, 0.4], [1, -0.1]]))
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # No ComplexWarning on the way either.
    for why, values in bad:
      for what, call in (("target attributes", lambda v: ap.score(predictor, pred, v)),
                         ("predictions", lambda v: ap.score(predictor, v, pred))):
        with pytest.raises(InputError, match=rf"^{what} are not real numbers \({why}\)"
                           + fix[what]):
          call(values)
  assert ap.score(predictor, pred.tolist(), pred.tolist())["num_images"] == 3  # Lists of floats.


def _binary_column(train, test) -> Dataset:
  """The toy dataset with "smile" (binary) holding `train`'s and `test`'s values."""
  def put(split: Split, values) -> Split:
    attributes = split.attributes.copy()
    attributes[:, 0] = values
    return dataclasses.replace(split, attributes=attributes)
  return Dataset("toy", NAMES, KINDS, {"train": put(_split(6, 0), train),
                                       "test": put(_split(4, 1), test)})


@pytest.mark.usefixtures("nothing_trains")
def test_a_column_marked_binary_that_holds_more_than_two_values_is_refused_as_data(tmp_path):
  """Was: trained (its least and greatest values taken as its classes), then refused by the
  scoring of the test split as "target attributes of the binary attribute 'smile' hold 1,
  outside its classes 0 and 2 ... pass targets on the scale of the predictor's dataset":
  targets the user never passed. A third value in training, or another in the test split
  (0.5, or -1 beside training's 0 and 1), is named as the data's, before training."""
  fix = r"; mark it continuous \(the Dataset's attribute_kinds\) or fix its values\.$"
  kw = {"steps": 1, "batch_size": 2, "learning_rate": 1e-3, "width": 2}
  for train, test, where, values in (
      ([0, 1, 2] * 2, [0, 1] * 2, "split 'train'", r"3 values \(0, 1, 2\)"),
      ([0, 1] * 3, [0, 0.5, 1, 1], "split 'test'", r"3 values \(0, 0.5, 1\)"),
      ([0, 1] * 3, [0, 0.5] * 2, "splits 'train' and 'test' together",
       r"3 values \(0, 0.5, 1\)"),
      ([0, 1] * 3, [-1, 1] * 2, "splits 'train' and 'test' together",
       r"3 values \(-1, 0, 1\)"),
      (np.arange(6), [0, 1] * 2, "split 'train'", r"6 values \(0, 1, 2, 3, 4, \.\.\.\)")):
    says = f"^dataset 'toy', {where}: column 'smile' is marked binary but holds {values}{fix}"
    with pytest.raises(DataError, match=says):
      ap.train_predictor(_binary_column(train, test), **kw)
    with pytest.raises(DataError, match=says):  # Before any predictor is read or trained.
      ap.load_or_train(kw, _binary_column(train, test), str(tmp_path))
  # Two classes, or one in training and the other in the test split, or no test split: taken.
  for train, test, split in (([-1, 1] * 3, [1, -1] * 2, "test"), ([1] * 6, [0, 1] * 2, "test"),
                             ([0, 1] * 3, [2, 3] * 2, None)):
    training._check_data(_binary_column(train, test), split)  # pylint: disable=protected-access


def test_the_sampler_takes_a_list_of_attributes_and_refuses_what_is_not_rows():
  """Was: `sampling.make_sample_fn`'s sampler read y.shape first, an AttributeError ("'list'
  object has no attribute 'shape'") for a list of rows (as `decode_images` takes them), jitted
  (`TrainedModel.sample_fn`) or not; one row alone, a number or None an AttributeError, or
  an IndexError under `jit`. And `decode_images` under `jit` with a list (its items traced):
  JAX's TracerArrayConversionError."""
  config = tiny_config("cvae")
  model = models.create_model(config.model)
  key = jax.random.PRNGKey(0)
  sample = sampling.make_sample_fn(model)
  y_dim = config.model.y_dim
  rows = [[0.0] * y_dim] * 2
  shapes = models.abstract_variables(model, config.model)
  # Unjitted: the list converted, as Python's floats (traced by eval_shape: nothing compiled).
  out = jax.eval_shape(lambda v, k: sample(v, rows, k), shapes, key)
  assert out["image"].shape == (2, 32, 32, 3)
  # Jitted, as TrainedModel.sample_fn is (the list's items traced): the one compile here.
  jitted = sampling.make_jitted_sample_fn(model)
  images = jitted(models.init_variables(model, config.model, key), rows, key)
  assert images["image"].shape == (2, 32, 32, 3)
  assert jitted._cache_size() == 1  # pylint: disable=protected-access  # The jit's own.
  latents = sampling.prior_latents(model, 2, key)
  decode = lambda v, z, y: sampling.decode_images(model, v, z, y)  # noqa: E731
  assert jax.eval_shape(decode, shapes, latents, rows)["image"].shape == (2, 32, 32, 3)
  takes = rf"^sample takes attributes y \[N, {y_dim}\], one row per image; got "
  for bad, got in (([0.0] * y_dim, r"shape \(10,\)"), (0.5, r"shape \(\)"), (None, "None")):
    with pytest.raises(InputError, match=rf"{takes}{got} \(for one image pass \[y\]\)\.$"):
      sample(shapes, bad, key)
    with pytest.raises(InputError, match=takes):  # Under jit too (its shape is known).
      jax.eval_shape(sample, shapes, bad, key)
  # Text: was JAX's traceback from jit's own check of its arguments ("Error interpreting
  # argument ... as an abstract array"), and NumPy's ValueError unjitted for an array of it.
  fix = (r"\. Pass a float array \(text such as '0\.5' converted first: "
         r"np\.asarray\(y, np\.float32\)\)\.$")
  for text, got in (([["a"] * y_dim], "a list holding strings"),
                    (np.array([["0.5"] * y_dim]), r"a NumPy array of strings \(dtype <U3\)"),
                    (np.array([["a"] * y_dim], object), "a NumPy array of objects holding strings"),
                    ("0.5", r"a str \(text\)"),
                    # Complex numbers: were passed on to JAX (inputs.real_dtype refuses them).
                    (np.ones((1, y_dim), complex), r"a NumPy array of values that are not real "
                     r"numbers \(dtype complex128\)")):
    says = rf"^sample takes attributes y \[N, y_dim\] of numbers, one row per image; got {got}"
    says += fix
    for call in (sample, jitted):
      with pytest.raises(InputError, match=says):
        call(shapes, text, key)
  assert jitted._cache_size() == 1  # pylint: disable=protected-access  # Nothing compiled.
  with pytest.raises(InputError, match=r"^sample takes attributes y \[N, y_dim\] of numbers, "
                     r"one row per image; JAX cannot read these \(.*inhomogeneous.*\)\.$"):
    sample(shapes, [[0.0] * y_dim, [0.0]], key)  # Rows of other lengths.


def test_a_reused_predictor_trained_under_other_convolution_kernels_is_said(
    predictor, tmp_path, monkeypatch, caplog):
  """Was: meta.json's "trained_on" named the device layout alone, so `evaluate` under
  YNNPACK's convolution kernels reused a predictor trained under XLA's (the timing-based
  choice, `perf.recommended_cpu_flags`, differs between hosts and runs) without a word, and
  the same command gave another fidelity table (fault hunt). Now "trained_with" records the
  kernels and jaxlib, and a reuse under others says so, with the XLA_FLAGS that pins them;
  a meta.json saved before (no "trained_with") loads and is reused as before. A record is
  data, compared by its fields (review: words, compared as text and parsed back for the
  flag); the words earlier versions saved are read as the record they name, and words that
  name none are said as unknown, never as other kernels."""
  settings = {"steps": 1, "batch_size": 2, "learning_rate": 1e-3, "width": 2}

  def train(dataset, _settings, seed, _split, _extra, taken):
    return dataclasses.replace(predictor, meta=dataclasses.replace(
        predictor.meta, dataset=dataset.name, **taken, seed=seed))
  monkeypatch.setattr(storage, "_train", train)
  monkeypatch.setattr(perf, "convolution_kernels", lambda: "xla")
  monkeypatch.setattr(perf.jax, "default_backend", lambda: "cpu")
  monkeypatch.setattr(perf, "_jaxlib_release", lambda: "9.9")
  workdir = str(tmp_path)
  first = ap.load_or_train(settings, _dataset(), workdir)
  path = os.path.join(storage.predictor_dir(workdir), "meta.json")
  meta = json.load(open(path))
  assert meta["trained_with"] == {"kernels": "xla", "backend": "cpu", "jaxlib": "9.9"}
  monkeypatch.setattr(storage, "_train", lambda *a: pytest.fail("trained again"))

  def saved_with(value):  # As a version that recorded `value` saved it.
    meta["trained_with"] = value
    meta["meta_sha256"] = storage._meta_sha256(meta)  # pylint: disable=protected-access
    json.dump(meta, open(path, "w"))

  def reuse(kernels, jaxlib="9.9"):
    monkeypatch.setattr(perf, "convolution_kernels", lambda: kernels)
    monkeypatch.setattr(perf, "_jaxlib_release", lambda: jaxlib)
    caplog.clear()
    assert ap.load_or_train(settings, _dataset(), workdir).meta == first.meta  # Not refused.
    return caplog.text

  # The flag added to XLA_FLAGS before JAX starts (was "set XLA_FLAGS=...": set in a notebook
  # after the start it changed nothing, and replacing XLA_FLAGS dropped its other flags).
  differ = ("was trained with XLA's own convolution kernels, jaxlib 9.9, this process has "
            "YNNPACK's convolution kernels, jaxlib 9.9: its fidelity scores differ slightly "
            "from those of one trained here (delete the folder to train one here); to run the "
            f"kernels it was trained with, add {perf.XLA_CONVOLUTIONS_FLAG} to XLA_FLAGS, "
            "keeping the flags it holds, before JAX starts (in a notebook: restart its kernel "
            "first).")
  for value in (meta["trained_with"], "XLA's own convolution kernels, jaxlib 9.9"):
    saved_with(value)  # This version's record, then an earlier version's words.
    assert "was trained" not in reuse("xla")  # The same kernels: reused, no word.
    said = reuse("ynnpack")
    assert differ in said and said.count("WARNING") == 1, said
    said = reuse("ynnpack", "10.0")  # Another jaxlib too: no flag pins that.
    assert "this process has YNNPACK's convolution kernels, jaxlib 10.0: its" in said
    assert "XLA_FLAGS" not in said
  saved_with("XLA's own convolution kernels, jax 9.9")  # Words that name no record.
  for kernels in ("xla", "ynnpack"):
    said = reuse(kernels)
    assert ("records the kernels it was trained with as \"XLA's own convolution kernels, jax "
            "9.9\", which this version does not read: where they differ from this process's ("
            f"{perf.kernel_layout()}), its fidelity scores differ slightly" in said), said
    assert said.count("WARNING") == 1 and "was trained with XLA" not in said
  layout, meta["trained_on"] = meta["trained_on"], "cpu, 99 local devices"  # And another
  # layout: one warning says both.
  saved_with(meta["trained_with"])
  said = reuse("xla")
  assert (f"which this version does not read; it was trained on cpu, 99 local devices, this "
          f"process has {storage.device_layout()}: where they differ" in said), said
  assert said.count("WARNING") == 1
  del meta["trained_with"]  # Saved before it was recorded: read, reused, nothing said.
  meta["trained_on"] = layout
  meta["meta_sha256"] = storage._meta_sha256(meta)  # pylint: disable=protected-access
  json.dump(meta, open(path, "w"))
  said = reuse("ynnpack")
  assert "was trained" not in said and "training a new one" not in said and "records" not in said
