"""The attribute predictor: learns better than chance, saves and loads, scores fidelity."""

import dataclasses
import json
import os

import ml_collections
import numpy as np
import pytest

from a2i_jax import attribute_predictor as ap
from a2i_jax.data import synthetic
from a2i_jax.errors import CheckpointError, InputError
from conftest import library_optimisation_level


@pytest.fixture(scope="module")
def dataset(data_cache):
  return synthetic.load(image_size=32, num_train=1024, num_validation=16, num_test=256,
                        seed=3, cache_dir=data_cache)


@pytest.fixture(scope="module")
def predictor(dataset):
  # 120 steps at 1e-2 (2026-12-01, jax 0.10.2): binary accuracy 0.165 above chance (the test
  # asks 0.1), correlation 0.80 (asks 0.5); 250 steps at 3e-3 gave 0.188 and 0.77 in twice
  # the time, and 120 steps at 3e-3 only 0.11 above chance. At the predictor's own
  # optimisation level (2026-12-02): 0.170 and 0.80, in 4.4-7.1 s of training against 13.5-14.1.
  with library_optimisation_level():  # 120 steps: the predictor's own level, not level 0.
    return ap.train_predictor(dataset, steps=120, batch_size=32, learning_rate=1e-2, width=16,
                              seed=0)


def test_a_predictor_whose_training_diverges_says_so(dataset):
  """Was: scored, and its NaN predictions blamed on the images ("score only finite
  predictions (of finite images)"; review finding)."""
  with pytest.raises(InputError, match="the attribute predictor's training diverged .*after "
                     "3 steps at learning rate 1e\\+08.*lower config.attribute_predictor"):
    ap.train_predictor(dataset, steps=3, batch_size=32, learning_rate=1e8, width=16)


def test_beats_chance_on_test_split(predictor):
  m = predictor.meta.test_metrics
  assert m["num_images"] == 256
  # Binary: above the majority-class rate; continuous: a clearly positive correlation.
  assert m["binary_accuracy"] > m["binary_chance"] + 0.1, m
  assert m["continuous_correlation"] > 0.5, m
  assert abs(m["continuous_shuffled"]) < 0.2, m


def test_predictions_in_attribute_scale(predictor, dataset):
  p = ap.predict(predictor, dataset["test"].images[:40], batch_size=16)
  assert p.shape == (40, 10) and p.dtype == np.float32
  binary = predictor.meta.binary
  assert np.all((p[:, binary] >= 0.0) & (p[:, binary] <= 1.0))
  # Floats in [0, 1] give the same predictions as uint8, and batching does not matter.
  q = ap.predict(predictor, dataset["test"].images[:40].astype(np.float32) / 255.0)
  np.testing.assert_allclose(p, q, atol=1e-4)


def test_save_load_round_trip(predictor, dataset, tmp_path):
  ap.save_predictor(predictor, str(tmp_path))
  loaded = ap.load_predictor(str(tmp_path))
  assert loaded.meta == predictor.meta
  x = dataset["test"].images[:8]
  np.testing.assert_array_equal(ap.predict(loaded, x), ap.predict(predictor, x))


def test_missing_or_corrupt_predictor(predictor, tmp_path):
  with pytest.raises(CheckpointError, match="no attribute predictor.*load_or_train"):
    ap.load_predictor(str(tmp_path))
  d = ap.save_predictor(predictor, str(tmp_path))
  with open(os.path.join(d, "variables.msgpack"), "ab") as f:
    f.write(b"junk")
  with pytest.raises(CheckpointError, match="unreadable.*do not match"):
    ap.load_predictor(str(tmp_path))


def test_load_or_train_reuses_only_a_matching_predictor(predictor, dataset, tmp_path,
                                                       monkeypatch, caplog):
  ap.save_predictor(predictor, str(tmp_path))
  settings = ml_collections.ConfigDict(
      {"steps": 120, "batch_size": 32, "learning_rate": 1e-2, "width": 16})
  got = ap.load_or_train(settings, dataset, str(tmp_path))
  assert got.meta == predictor.meta  # loaded, not retrained
  # Was: reused whenever the dataset's name, image size and attribute names matched, so
  # other images, another seed or other settings were scored by a stale predictor.
  from a2i_jax.attribute_predictor import storage  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(storage, "train_predictor", lambda *a, **k: "retrained")
  monkeypatch.setattr(storage, "save_predictor", lambda *a: None)
  test = dataset["test"]
  images = test.images.copy()
  images[0, 0, 0, 0] ^= 1
  other_data = dataclasses.replace(
      dataset, splits={**dataset.splits, "test": dataclasses.replace(test, images=images)})
  for args, kwargs, named in ((other_data,), {}, "data_fingerprint"), \
                             ((dataset,), {"seed": 1}, "seed"):
    caplog.clear()
    assert ap.load_or_train(settings, *args, str(tmp_path), **kwargs) == "retrained"
    assert f"trained with another {named}" in caplog.text
  settings.width = 8
  assert ap.load_or_train(settings, dataset, str(tmp_path)) == "retrained"
  assert "another width" in caplog.text


def test_fidelity_real_beats_shuffled(predictor, dataset):
  test = dataset["test"]
  real = ap.fidelity(predictor, test.images, test.attributes)
  perm = np.random.default_rng(0).permutation(len(test))
  shuffled = ap.fidelity(predictor, test.images[perm], test.attributes)
  assert real["binary_accuracy"] > shuffled["binary_accuracy"] + 0.05
  assert real["continuous_correlation"] > shuffled["continuous_correlation"] + 0.3
  assert set(real["per_attribute"]) == set(synthetic.ATTRIBUTE_NAMES)
  assert real["ceiling"]["binary_accuracy"] == predictor.meta.test_metrics["binary_accuracy"]
  json.dumps(ap._json_safe(real))  # the evaluation writes it as JSON
  with pytest.raises(InputError, match="target attributes have shape"):
    ap.fidelity(predictor, test.images[:4], test.attributes[:3])
  nan = ap.predict(predictor, test.images[:4])
  nan[2, 0] = np.nan
  with pytest.raises(InputError, match="1 of 4 predictions hold NaN"):
    ap.score(predictor, nan, test.attributes[:4])


def test_sweep_response_follows_the_swept_attribute(predictor):
  # Re-render the same faces (same nuisance draws) with hair_color swept from -1 to 1.
  values = np.linspace(-1.0, 1.0, 5)
  attrs = synthetic.sample_attributes(np.random.default_rng(1), 6)
  rows = []
  for v in values:
    a = attrs.copy()
    a[:, synthetic.ATTRIBUTE_NAMES.index("hair_color")] = v
    rows.append(synthetic.render(a, np.random.default_rng(2), 32)[0])
  progressions = np.stack(rows, axis=1)  # [N, K, S, S, 3]
  r = ap.sweep_response(predictor, progressions, values, "hair_color")
  assert r["spearman"] > 0.7 and r["pearson"] > 0.7, r
  assert np.array(r["predicted"]).shape == (6, 5)
  assert r["mean_by_step"][-1] > r["mean_by_step"][0]
  # A sweep that changes nothing has no such response.
  still = np.repeat(progressions[:, :1], 5, axis=1)
  assert abs(ap.sweep_response(predictor, still, values, 3)["pearson"]) < 0.1
  with pytest.raises(InputError, match="unknown attribute 'hair'.*hair_color"):
    ap.sweep_response(predictor, progressions, values, "hair")


def test_rank_correlation_handles_ties():
  assert ap.spearman([1, 2, 2, 3], [10, 20, 20, 30]) == pytest.approx(1.0)
  assert ap.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  assert np.isnan(ap.pearson([1, 1, 1], [1, 2, 3]))
