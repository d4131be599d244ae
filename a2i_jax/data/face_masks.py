"""A small face-and-hair segmentation network, for LFW images that have no part labels.

LFW Part Labels (Kae et al. 2013) annotate 2,927 funneled images with hair / face /
background; disCVAE needs a foreground mask for every training image. This module trains a
small U-Net-shaped CNN on the labelled training images (the `parts_train.txt` list), picks
nothing on the test list, and reports its IoU there (`parts_test.txt`, never seen in
training), then predicts soft masks for the unlabelled images.

The network works on the same 64x64 crops the dataset stores, takes images in [-1, 1] and
outputs one logit per pixel (foreground = hair + face). It trains with per-pixel binary
cross-entropy against the soft label masks, with random horizontal flips, Adam, and a fixed
number of steps.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from a2i_jax import progress as bars  # Callers pass a bool named progress.
from a2i_jax.errors import ConfigError, DataError, InputError
from a2i_jax.inputs import is_integer


@dataclasses.dataclass(frozen=True)
class MaskNetConfig:
  """Training settings, built from `config.data.mask_net` (`from_config`); the values live in
  `configs/default.py` only. Invalid values raise `ConfigError` when the object is built.

  Attributes:
    steps: Adam steps.
    batch_size: images per step.
    learning_rate: Adam step size.
    width: channels of the first level (doubled at each lower level).
    resolution: the network sees images resized to this size and its logits are resized
      back; the part labels are blocky superpixels, so 32 loses little and costs a quarter
      of 64.
    depth: downsampling levels of the U-Net (`resolution` must divide by 2**depth).
    seed: parameter initialisation and batch sampling.
  """
  steps: int
  batch_size: int
  learning_rate: float
  width: int
  resolution: int
  depth: int
  seed: int

  def __post_init__(self):
    # Was: int() and float() only, so steps=1.5, width=4.5, steps="10" or batch_size=True
    # built and failed (or ran) in training, and learning_rate="x" was a raw ValueError.
    for key in ("steps", "batch_size", "width", "resolution", "depth"):
      value, least = getattr(self, key), 0 if key == "depth" else 1
      if not is_integer(value) or value < least:
        raise ConfigError(f"config.data.mask_net.{key}={value!r} must be "
                          f"{'a positive integer' if least else 'an integer >= 0'}.")
    lr = self.learning_rate  # Was: inf accepted, every mask 0.
    from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel  (it imports this)
    if not config_lib.is_positive_finite(lr):  # The attribute predictor's rule (one).
      raise ConfigError(f"config.data.mask_net.learning_rate={lr!r} must be a positive finite "
                        "number.")
    seed = self.seed  # A jitted int32 argument: 2**31 was a traceback from JAX.
    if not is_integer(seed) or not 0 <= seed <= 2**31 - 1:
      raise ConfigError(f"config.data.mask_net.seed={seed!r}; pass a whole number from 0 to "
                        f"{2**31 - 1}.")
    if self.resolution % 2 ** self.depth:
      raise ConfigError(f"config.data.mask_net.resolution={self.resolution} does not divide by "
                        f"2**depth (depth={self.depth}); use a depth >= 0 whose power of two "
                        "divides the resolution.")

  @classmethod
  def from_config(cls, mask_net: Optional[Any] = None, **overrides: Any) -> "MaskNetConfig":
    """The settings of `config.data.mask_net` (default: configs/default.py's), with overrides.

    Args:
      mask_net: the `config.data.mask_net` section; None for the defaults.
      **overrides: field values that replace the section's.
    Returns:
      A checked `MaskNetConfig`.
    Raises:
      ConfigError: a value that cannot work.
    """
    if mask_net is None:
      from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
      mask_net = config_lib.reference_config().data.mask_net
    values = dict(mask_net.to_dict() if hasattr(mask_net, "to_dict") else mask_net)
    values.update(overrides)
    return cls(**values)


class MaskNet(nn.Module):
  """U-Net with depth + 1 levels (R, R/2, ..., R/2**depth) at `resolution` R, two 3x3
  convolutions per level, skip connections, nearest-neighbour upsampling."""
  width: int = 16
  resolution: int = 32
  depth: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: float [B, S, S, 3] in [-1, 1]. Returns logits [B, S, S]."""
    b, s = x.shape[0], x.shape[1]
    r = self.resolution
    if r != s:
      x = jax.image.resize(x, (b, r, r, 3), "linear")
    def block(h, c):
      h = nn.relu(nn.Conv(c, (3, 3))(h))
      return nn.relu(nn.Conv(c, (3, 3))(h))

    skips = []
    h = x
    for level in range(self.depth):
      h = block(h, self.width * 2 ** level)
      skips.append(h)
      h = nn.avg_pool(h, (2, 2), (2, 2))
    h = block(h, self.width * 2 ** self.depth)
    for level in reversed(range(self.depth)):
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
      h = block(jnp.concatenate([h, skips[level]], axis=-1), self.width * 2 ** level)
    logits = nn.Conv(1, (1, 1))(h)[..., 0]
    return logits if r == s else jax.image.resize(logits, (b, s, s), "linear")


def _to_input(images_u8: jax.Array) -> jax.Array:
  return images_u8.astype(jnp.float32) * (2.0 / 255.0) - 1.0


def _check_images(images: Any, what: str, error: type) -> np.ndarray:
  """uint8 [N, S, S, 3], or `error` naming the fix. Was: floats in [0, 1] were taken as
  levels of 255, i.e. an almost black image, and gave a meaningless mask."""
  x = np.asarray(images)
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2]:
    raise error(f"face_masks.{what}: images of dtype {x.dtype} and shape {x.shape}; pass uint8 "
                "[N, S, S, 3] in [0, 255] (floats x in [0, 1]: np.rint(x * 255).astype("
                "np.uint8)).")
  return x


def _check_masks(masks: Any, images: np.ndarray, what: str) -> np.ndarray:
  """uint8 [N, S, S] for images [N, S, S, 3], or DataError naming the fix."""
  m = np.asarray(masks)
  if m.dtype != np.uint8 or m.shape != images.shape[:3]:
    # Was: only the counts were compared; another size failed inside JAX, floats in [0, 1]
    # trained towards an empty mask.
    raise DataError(f"face_masks.{what}: masks of dtype {m.dtype} and shape {m.shape} for "
                    f"images of shape {images.shape}; pass uint8 {list(images.shape[:3])}, "
                    "255 = foreground, one mask per image.")
  return m


def train(images: np.ndarray, masks: np.ndarray, cfg: MaskNetConfig,
          progress: bool = False) -> dict:
  """Trains the network on labelled images.

  Args:
    images: uint8 [N, S, S, 3].
    masks: uint8 [N, S, S], 255 = foreground (soft values allowed).
    cfg: training settings.
    progress: show a progress bar.
  Returns:
    {"params", "width", "resolution", "depth"}: the trained parameters (on the host) and the
    network's shape settings, what `predict` needs.
  Raises:
    DataError: images that are not uint8 [N, S, S, 3], or masks that are not uint8 of shape
      [N, S, S] to match them.
  """
  images = _check_images(images, "train", DataError)
  masks = _check_masks(masks, images, "train")
  # Imported here: config_lib (and through it serving) imports this module for MaskNetConfig,
  # and serving must not load the optimiser library (docs/design.md §2.2).
  import optax  # pylint: disable=import-outside-toplevel
  model = MaskNet(cfg.width, cfg.resolution, cfg.depth)
  tx = optax.adam(cfg.learning_rate)

  @jax.jit
  def init(seed):
    # One jitted init: run eagerly, every layer's initialiser would compile on its own.
    k_init, k_data = jax.random.split(jax.random.key(seed))
    params = model.init(k_init, jnp.zeros((1,) + images.shape[1:], jnp.float32))["params"]
    return params, tx.init(params), k_data

  params, opt_state, k_data = init(cfg.seed)
  data_x, data_m = jnp.asarray(images), jnp.asarray(masks)
  n = images.shape[0]

  @jax.jit
  def step(params, opt_state, k_data, i):
    k_idx, k_flip = jax.random.split(jax.random.fold_in(k_data, i))
    idx = jax.random.randint(k_idx, (cfg.batch_size,), 0, n)
    x, m = _to_input(data_x[idx]), data_m[idx].astype(jnp.float32) / 255.0
    flip = jax.random.bernoulli(k_flip, 0.5, (cfg.batch_size, 1, 1))
    x = jnp.where(flip[..., None], x[:, :, ::-1], x)
    m = jnp.where(flip, m[:, :, ::-1], m)

    def loss_fn(p):
      logits = model.apply({"params": p}, x)
      return optax.sigmoid_binary_cross_entropy(logits, m).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  steps = range(cfg.steps)
  if progress:
    steps = bars.bar(steps, desc="training the LFW mask network", unit=" steps")
  for i in steps:
    params, opt_state, _ = step(params, opt_state, k_data, i)
  return {"params": jax.device_get(params), "width": cfg.width, "resolution": cfg.resolution,
          "depth": cfg.depth}


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _predict_batch(width: int, resolution: int, depth: int, params: Any,
                   images_u8: jax.Array) -> jax.Array:
  return jax.nn.sigmoid(MaskNet(width, resolution, depth).apply({"params": params},
                                                                _to_input(images_u8)))


def predict(net: dict, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
  """Soft foreground masks for uint8 [N, S, S, 3] images: uint8 [N, S, S], 255 = foreground.

  Every batch is zero-padded to `batch_size`, so one program is compiled whatever N is.

  Args:
    net: what `train` returns (the parameters and the network's width, resolution, depth).
    images: uint8 [N, S, S, 3].
    batch_size: images per device call.
  Returns:
    uint8 [N, S, S]: the foreground probability times 255, rounded; 255 = foreground.
  Raises:
    InputError: images that are not uint8 [N, S, S, 3] (floats in [0, 1] too: the message
      says how to convert them), or a batch_size that is not a positive integer.
  """
  images = _check_images(images, "predict", InputError)
  if not is_integer(batch_size) or batch_size < 1:
    raise InputError(f"face_masks.predict: batch_size={batch_size!r}; pass a positive integer.")
  out = np.empty(images.shape[:3], np.uint8)
  b = batch_size
  for start in range(0, images.shape[0], b):
    batch = images[start:start + b]
    # Pad every batch to the full size so only one program is compiled.
    padded = np.concatenate([batch, np.zeros((b - len(batch),) + batch.shape[1:], np.uint8)])
    p = np.asarray(_predict_batch(net["width"], net["resolution"], net["depth"], net["params"],
                                  jnp.asarray(padded)))
    out[start:start + len(batch)] = np.rint(p[:len(batch)] * 255.0).astype(np.uint8)
  return out


def iou(predicted: np.ndarray, target: np.ndarray, threshold: int = 128) -> float:
  """Mean per-image intersection over union of the foregrounds (masks >= threshold).

  Args:
    predicted: uint8 [N, S, S].
    target: uint8 [N, S, S].
    threshold: the uint8 level from which a pixel counts as foreground (128 = 0.5).
  Returns:
    The mean IoU; an image where both masks are empty counts as 1.
  """
  p, t = predicted >= threshold, target >= threshold
  inter = np.logical_and(p, t).sum(axis=(1, 2))
  union = np.logical_or(p, t).sum(axis=(1, 2))
  return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def train_and_evaluate(train_images: np.ndarray, train_masks: np.ndarray,
                       test_images: Optional[np.ndarray], test_masks: Optional[np.ndarray],
                       cfg: MaskNetConfig, progress: bool = False) -> tuple[dict, dict]:
  """Trains on one labelled set and measures IoU on a held-out one.

  Args:
    train_images: uint8 [N, S, S, 3], the labelled training images.
    train_masks: uint8 [N, S, S], their masks, 255 = foreground.
    test_images: uint8 [M, S, S, 3], held-out labelled images; None (or M = 0) for none.
    test_masks: uint8 [M, S, S], their masks; required when there are test images (may be
      None when `test_images` is None or empty).
    cfg: training settings.
    progress: show a progress bar while training.
  Returns:
    (net, report): `net` as `train` returns it; `report` a JSON-serialisable dict with
    `num_train`, every `MaskNetConfig` field, `train_iou`, `num_test` and `test_iou` (mean
    IoU as `iou` computes it; `num_test` 0 and `test_iou` None without a test set).
  Raises:
    DataError: before any training, when the training images and masks differ in number,
      there are test images but no test masks (or not one per image), or images or masks are
      not uint8 of shapes [N, S, S, 3] and [N, S, S].
  """
  train_images = _check_images(train_images, "train_and_evaluate", DataError)
  if len(train_masks) != len(train_images):
    raise DataError(f"face_masks.train_and_evaluate: {len(train_images)} training images but "
                    f"{len(train_masks)} training masks; pass one mask per image.")
  train_masks = _check_masks(train_masks, train_images, "train_and_evaluate")
  if test_images is not None and len(test_images):
    test_images = _check_images(test_images, "train_and_evaluate", DataError)
    if test_masks is None:
      raise DataError(f"face_masks.train_and_evaluate: {len(test_images)} test images but "
                      "test_masks=None; pass their masks, or test_images=None to skip the "
                      "held-out IoU.")
    if len(test_masks) != len(test_images):
      raise DataError(f"face_masks.train_and_evaluate: {len(test_images)} test images but "
                      f"{len(test_masks)} test masks; pass one mask per image.")
    test_masks = _check_masks(test_masks, test_images, "train_and_evaluate")
  net = train(train_images, train_masks, cfg, progress=progress)
  report = {"num_train": int(train_images.shape[0]), **dataclasses.asdict(cfg),
            "train_iou": iou(predict(net, train_images), train_masks)}
  if test_images is not None and len(test_images):
    report["num_test"] = int(test_images.shape[0])
    report["test_iou"] = iou(predict(net, test_images), test_masks)
  else:
    report["num_test"], report["test_iou"] = 0, None
  return net, report


def synthetic_proxy(steps: int) -> dict:
  """The network's IoU on a stand-in for the part labels, measurable without LFW.

  Synthetic faces (exact masks, 64x64) in the part labels' sizes: trained on 1,500 images,
  scored on 927 held-out ones, with the default settings except `steps`.

    python -m a2i_jax.data.face_masks 200

  Args:
    steps: Adam steps (`MaskNetConfig.steps`).
  Returns:
    The `train_and_evaluate` report plus `wall_s`, the seconds that training and scoring
    took (generating the synthetic images not included).
  """
  from a2i_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  d = synthetic.load(image_size=64, num_train=1500, num_validation=500, num_test=927, seed=3)
  start = time.time()
  _, report = train_and_evaluate(d["train"].images, d["train"].masks, d["test"].images,
                                 d["test"].masks, MaskNetConfig.from_config(steps=steps))
  report["wall_s"] = round(time.time() - start, 1)
  return report


if __name__ == "__main__":
  import json  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  print(json.dumps(synthetic_proxy(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))
