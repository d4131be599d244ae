"""Restoring a trained model and sampling from it; input checks of the public functions."""

import jax
import numpy as np
import pytest

from a2i_jax import inference, train_lib
from a2i_jax.errors import CheckpointError, InputError
from conftest import tiny_config


@pytest.fixture(scope="module")
def discvae_workdir(tmp_path_factory, data_cache):
  workdir = str(tmp_path_factory.mktemp("discvae"))
  train_lib.train_and_evaluate(tiny_config("discvae", data_cache), workdir)
  return workdir


def test_sample_after_training(discvae_workdir):
  trained = inference.load_trained(discvae_workdir)
  assert trained.step == 2 and trained.config.model.name == "discvae"
  y = np.zeros((3, trained.config.model.y_dim), np.float32)
  out = inference.sample(trained, y, jax.random.key(0))
  assert set(out) == {"image", "foreground", "gate", "background"}
  for v in out.values():
    assert v.shape == (3, 32, 32, 3)
  assert 0.0 <= out["gate"].min() and out["gate"].max() <= 1.0
  # The generator is compiled once per loaded model, not once per call (`_cache_size` is a
  # private jit method present in jax 0.7.2 .. 0.10.x).
  if hasattr(trained.sample_fn, "_cache_size"):
    assert trained.sample_fn._cache_size() == 1
  # Different latent draws give different images.
  assert not np.allclose(out["image"][0], inference.sample(trained, y, jax.random.key(1))
                         ["image"][0])


def test_sample_rejects_wrong_attribute_length(discvae_workdir):
  trained = inference.load_trained(discvae_workdir)
  with pytest.raises(InputError, match=r"expects \[N, 10\]"):
    inference.sample(trained, np.zeros((2, 7)), jax.random.key(0))
  with pytest.raises(InputError, match="NaN"):
    inference.sample(trained, np.full((1, 10), np.nan), jax.random.key(0))


def test_restore_missing_step(discvae_workdir):
  with pytest.raises(CheckpointError, match="no checkpoint for step 7.*\\[2\\]"):
    inference.load_trained(discvae_workdir, step=7)


def test_check_images():
  u8 = np.zeros((2, 32, 32, 3), np.uint8)
  np.testing.assert_allclose(inference.check_images(u8, 32), -1.0)
  np.testing.assert_allclose(inference.check_images(np.ones((32, 32, 3)), 32), 1.0)
  with pytest.raises(InputError, match=r"expects \[N, 32, 32, 3\]"):
    inference.check_images(np.zeros((2, 64, 64, 3), np.uint8), 32)
  with pytest.raises(InputError, match=r"must lie in \[0, 1\]; these range over \[255, 255\]"):
    inference.check_images(np.full((1, 32, 32, 3), 255.0), 32)
  with pytest.raises(InputError, match="dtype int64"):
    inference.check_images(np.zeros((1, 32, 32, 3), np.int64), 32)
