"""The attribute predictor's network, its saved description (`PredictorMeta`) and `predict`."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np

from a2i_jax import models, perf
from a2i_jax.errors import InputError
from a2i_jax.inputs import check_images, check_int


class AttributeNet(nn.Module):
  """Four stride-2 3x3 convolutions (width w, 2w, 2w, 4w) with BatchNorm and ReLU, average
  pooling to a 2x2 grid and one dense layer: one output per attribute (a logit for binary
  columns, a standardised value for continuous ones)."""
  num_outputs: int
  width: int = 32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x float [B, S, S, 3] in [-1, 1]. Returns: float32 [B, num_outputs]."""
    for features in (self.width, 2 * self.width, 2 * self.width, 4 * self.width):
      # He-normal weights drawn on the host (models.normal): threefry initialisers cost
      # seconds of XLA:CPU compile time each.
      std = math.sqrt(2.0 / (9 * x.shape[-1]))
      x = nn.Conv(features, (3, 3), strides=(2, 2), padding="SAME", use_bias=False,
                  kernel_init=models.normal(std))(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x)
    # Aligned faces: the spatial layout carries information (where the mouth is), so keep a
    # coarse 2x2 grid of the pooled features rather than pooling everything away.
    b, h, w, c = x.shape
    g = 2 if h % 2 == 0 and w % 2 == 0 else 1
    x = x.reshape(b, g, h // g, g, w // g, c).mean(axis=(2, 4)).reshape(b, g * g * c)
    init = models.normal(math.sqrt(1.0 / x.shape[-1]))
    return nn.Dense(self.num_outputs, kernel_init=init)(x)


@dataclasses.dataclass(frozen=True)
class PredictorMeta:
  """What a predictor needs besides its weights.

  Attributes:
    dataset: the dataset name it was trained on.
    attribute_names, attribute_kinds: per column, as in `Dataset`.
    image_size: S of the images it takes.
    width: `AttributeNet.width`.
    mean, std: per column: training mean and standard deviation (continuous standardisation).
    low, high: per column: the two classes of a binary column (its min and max in the
      training split; for a column of one value there, the other class as
      `training._target_stats` takes it); unused for continuous columns.
    steps, batch_size, learning_rate, seed: how it was trained.
    data_fingerprint: `training.data_fingerprint` of the dataset it was trained and scored
      on, so that a saved predictor is reused only for the same images and attributes.
    test_fingerprint: `training.split_fingerprint` of the dataset's test split alone (its
      images and attributes, not its masks; "" for a dataset without one), so that
      `evaluation.attribute_report` refuses a predictor of other images, yet takes it for
      every run whose test split is the same (runs of other training sizes, or with masks).
    test_metrics: `score` of the predictor on the dataset's whole real test split, at its
      training (an evaluation of N images scores its ceiling on those N).
  """
  dataset: str
  attribute_names: tuple[str, ...]
  attribute_kinds: tuple[str, ...]
  image_size: int
  width: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  low: tuple[float, ...]
  high: tuple[float, ...]
  steps: int
  batch_size: int
  learning_rate: float
  seed: int
  data_fingerprint: str = ""
  test_fingerprint: str = ""
  test_metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def binary(self) -> np.ndarray:
    """[A] bool: which attributes are binary."""
    return np.array([k == "binary" for k in self.attribute_kinds])

  @property
  def threshold(self) -> np.ndarray:
    """[A] float: the decision threshold of each attribute, (low + high) / 2."""
    return (np.asarray(self.low) + np.asarray(self.high)) / 2.0


@dataclasses.dataclass(frozen=True)
class Predictor:
  """A trained attribute predictor: `variables` ({"params", "batch_stats"}) and `meta`."""
  variables: Any
  meta: PredictorMeta



def check_predictor(predictor: Any) -> Predictor:
  """Refuses anything but a `Predictor` (was: an AttributeError, e.g. for the workdir's path
  passed in its place).

  Args:
    predictor: the argument.
  Returns:
    `predictor`.
  Raises:
    InputError: a path, or anything else that is not a `Predictor`.
  """
  how = ("attribute_predictor.load_predictor(workdir), load_or_train(config.attribute_predictor, "
         "dataset, workdir) or train_predictor(dataset)")
  if isinstance(predictor, (str, os.PathLike)):
    raise InputError(f"predictor {os.fspath(predictor)!r} is a path; pass the Predictor: {how}.")
  if not isinstance(predictor, Predictor):
    raise InputError(f"predictor={type(predictor).__name__} is not an attribute predictor; pass "
                     f"{how}.")
  return predictor


@functools.lru_cache(maxsize=8)
def _apply_fn(num_outputs: int, width: int) -> Any:
  model = AttributeNet(num_outputs=num_outputs, width=width)
  return perf.jit(lambda variables, x: model.apply(variables, x, train=False))


def _to_attribute_scale(outputs: np.ndarray, meta: PredictorMeta) -> np.ndarray:
  low, high = np.asarray(meta.low), np.asarray(meta.high)
  prob = 1.0 / (1.0 + np.exp(-outputs.astype(np.float64)))
  binary = low + prob * (high - low)
  continuous = np.asarray(meta.mean) + outputs * np.asarray(meta.std)
  return np.where(meta.binary, binary, continuous).astype(np.float32)


def predict(predictor: Predictor, images: Any, *, batch_size: int = 256) -> np.ndarray:
  """Predicts the attributes of images.

  Args:
    predictor: from `train_predictor` or `load_predictor`.
    images: [N, S, S, 3] uint8 in [0, 255] or floats in [0, 1] (generated samples), with S
      the predictor's image size.
    batch_size: images per jitted call.
  Returns:
    float32 [N, A] in the dataset's attribute scale (continuous: the attribute's own units;
    binary: low + P(high) * (high - low), the probability of 1 for {0, 1} attributes).
  Raises:
    InputError: not a `Predictor`, images `inputs.check_images` refuses, or a batch size that
      is not a positive integer.
  """
  meta = check_predictor(predictor).meta
  # Was: batch_size=True taken as 1 (a bool is an int).
  batch_size = check_int(batch_size, "batch_size", 1)
  x = check_images(images, meta.image_size)
  n = x.shape[0]
  # Every call is padded to `batch_size`, or for fewer images to the next power of two, so
  # only a handful of shapes are ever compiled.
  size = batch_size if n > batch_size else min(batch_size, 1 << max(0, n - 1).bit_length())
  fn = _apply_fn(len(meta.attribute_names), meta.width)
  outs = []
  for start in range(0, n, size):
    chunk = x[start:start + size]
    m = chunk.shape[0]
    if m < size:
      chunk = np.concatenate([chunk, np.zeros((size - m,) + chunk.shape[1:], chunk.dtype)])
    outs.append(np.asarray(fn(predictor.variables, chunk))[:m])
  out = np.concatenate(outs) if outs else np.zeros((0, len(meta.attribute_names)), np.float32)
  return _to_attribute_scale(out, meta)


