"""On-device augmentation (docs/reference.md §3.3)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from a2i_jax.data import pipeline
from a2i_jax.inputs import to_unit


def _cfg(**kw):
  base = dict(flip=False, crop_size=0, max_rotation=0.0, color_gain=0.0, max_sharpen=0.0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def _images(n=4, s=16, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)),
          jnp.asarray(rng.integers(0, 256, (n, s, s), dtype=np.uint8)))


def test_no_augmentation_is_the_affine_map():
  im, m = _images()
  x, mm = pipeline.augment(jax.random.key(0), im, m, _cfg())
  np.testing.assert_allclose(x, np.asarray(im) / 255.0 * 2 - 1, atol=1e-6)
  np.testing.assert_allclose(mm[..., 0], np.asarray(m) / 255.0, atol=1e-6)


def test_flip_moves_image_and_mask_together():
  im, m = _images(n=32)
  x, mm = pipeline.augment(jax.random.key(1), im, m, _cfg(flip=True))
  base = np.asarray(im) / 255.0 * 2 - 1
  flipped = np.array([not np.allclose(x[i], base[i], atol=1e-6) for i in range(32)])
  assert 0 < flipped.sum() < 32
  for i in range(32):
    ref_x = base[i, :, ::-1] if flipped[i] else base[i]
    ref_m = np.asarray(m[i])[:, ::-1] if flipped[i] else np.asarray(m[i])
    np.testing.assert_allclose(x[i], ref_x, atol=1e-6)
    np.testing.assert_allclose(mm[i, ..., 0], ref_m / 255.0, atol=1e-6)


def test_sharpening_formula_with_zero_padding():
  x = np.random.default_rng(2).uniform(size=(1, 8, 8, 3)).astype(np.float32)
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  box = np.zeros_like(x)
  for dy in range(5):
    for dx in range(5):
      box += padded[:, dy:dy + 8, dx:dx + 8] / 25.0
  np.testing.assert_allclose(pipeline.box_filter_5x5(jnp.asarray(x)), box, atol=1e-6)
  # Borders are darker in the box filter (zero padding), so sharpening brightens them.
  im = jnp.full((2, 8, 8, 3), 200, jnp.uint8)
  out, _ = pipeline.augment(jax.random.key(3), im, None, _cfg(max_sharpen=1.5))
  assert float(out[:, 0, 0].min()) >= float(out[:, 4, 4].max())


def test_colour_gain_range():
  im = jnp.full((64, 4, 4, 3), 255, jnp.uint8)
  x, _ = pipeline.augment(jax.random.key(4), im, None, _cfg(color_gain=0.03))
  gain = (np.asarray(x[:, 0, 0]) + 1) / 2
  assert gain.min() >= 0.97 - 1e-6 and gain.max() < 1.03 and gain.std() > 0.005


def test_crop_and_rotation_shapes_and_mask_alignment():
  im, m = _images(n=8, s=72)
  # Image channels equal to the mask: after crop + rotation they must still agree.
  im = jnp.repeat(m[..., None], 3, axis=-1)
  x, mm = pipeline.augment(jax.random.key(5), im, m, _cfg(crop_size=64, max_rotation=0.08))
  assert x.shape == (8, 64, 64, 3) and mm.shape == (8, 64, 64, 1)
  np.testing.assert_allclose((x[..., :1] + 1) / 2, mm, atol=1e-5)


def test_zero_rotation_is_identity():
  im, _ = _images(n=1, s=8)
  x = to_unit(im)[0]
  np.testing.assert_allclose(pipeline._rotate(x, jnp.float32(0.0)), x, atol=1e-6)


def test_rotation_border_follows_torch():
  """torch's rotateBilinear: a sample point under half a pixel outside takes the edge pixel,
  one further out is 0, so an image of ones rotates to ones and zeros only. Was: the edge ring
  blended toward 0 (up to 0.5 off, 112-120 pixels of a 64x64 image; review finding). Inside,
  plain bilinear interpolation."""
  ones = jnp.ones((64, 64, 1), jnp.float32)
  for angle in (0.03, -0.08):
    r = np.round(np.asarray(pipeline._rotate(ones, jnp.float32(angle))), 5)
    assert set(np.unique(r)) == {0.0, 1.0}
    assert 0 < (r == 0).sum() < 200
  x = jax.random.uniform(jax.random.key(0), (64, 64, 2))
  r = pipeline._rotate(x, jnp.float32(0.05))
  c = (64 - 1) / 2
  yy, xx = np.meshgrid(np.arange(64.0), np.arange(64.0), indexing="ij")
  src = [np.sin(0.05) * (xx - c) + np.cos(0.05) * (yy - c) + c,
         np.cos(0.05) * (xx - c) - np.sin(0.05) * (yy - c) + c]
  want = np.stack([jax.scipy.ndimage.map_coordinates(x[..., k], src, order=1)
                   for k in range(2)], -1)
  np.testing.assert_allclose(r[4:-4, 4:-4], want[4:-4, 4:-4], atol=1e-5)


def test_eval_centre_crop():
  im, m = _images(n=2, s=72)
  x, mm = pipeline.preprocess_eval(im, m, _cfg(crop_size=64))
  np.testing.assert_allclose(x, np.asarray(im)[:, 4:68, 4:68] / 255.0 * 2 - 1, atol=1e-6)
  assert mm.shape == (2, 64, 64, 1)


def test_crops_of_images_that_are_not_square_take_each_sides_own_span():
  """Was: whether to crop and the offsets' range came from the height alone: images wider
  than high came back uncropped, and the left offsets of taller ones were clamped towards the
  right edge (review finding). The mask is cut where the image is."""
  n, crop = 300, 6
  for h, w in ((8, 12), (12, 8)):
    columns = np.broadcast_to(np.arange(w, dtype=np.uint8)[None, None, :, None], (n, h, w, 3))
    rows = np.broadcast_to(np.arange(h, dtype=np.uint8)[None, :, None], (n, h, w))
    x, m = pipeline.augment(jax.random.key(0), columns, np.ascontiguousarray(rows),
                            _cfg(crop_size=crop))
    assert x.shape == (n, crop, crop, 3) and m.shape == (n, crop, crop, 1)
    left = np.round((np.asarray(x)[:, 0, 0, 0] + 1) / 2 * 255).astype(int)
    top = np.round(np.asarray(m)[:, 0, 0, 0] * 255).astype(int)
    for offsets, side in ((left, w), (top, h)):  # Every offset, each about as often.
      counts = np.bincount(offsets, minlength=side - crop + 1)
      assert len(counts) == side - crop + 1 and counts.min() > n / (side - crop + 1) / 2, counts
    e, em = pipeline.preprocess_eval(columns[:2], rows[:2], _cfg(crop_size=crop))
    np.testing.assert_allclose(e, columns[:2, (h - crop) // 2:(h - crop) // 2 + crop,
                                          (w - crop) // 2:(w - crop) // 2 + crop] / 255 * 2 - 1,
                               atol=1e-6)
    assert em.shape == (2, crop, crop, 1)


def test_centre_cropped_dataset_is_what_the_training_evaluation_sees():
  """Was: infer.py and evaluation fed a CUB model its 72x72 test images (it takes the 64x64
  centre crops its training evaluation used), so every mode on the test split stopped."""
  from a2i_jax.data.base import (  # pylint: disable=import-outside-toplevel
      Dataset, Split, centre_cropped)
  im, m = _images(n=2, s=72)
  im, m = np.asarray(im), np.asarray(m)
  y = np.zeros((2, 1), np.float32)
  data = Dataset("cub", ("a",), ("binary",), {"train": Split(im, y, m), "test": Split(im, y)})
  cropped = centre_cropped(data, 64)
  x, mm = pipeline.preprocess_eval(im, m, _cfg(crop_size=64))
  for split in ("train", "test"):
    np.testing.assert_allclose(to_unit(cropped[split].images) * 2 - 1, x, atol=1e-6)
  np.testing.assert_allclose(cropped["train"].masks / 255.0, np.asarray(mm)[..., 0], atol=1e-6)
  assert cropped["test"].masks is None and cropped.image_size == 64
  assert centre_cropped(data, 0) is data and centre_cropped(cropped, 64) is cropped


def test_stored_masks_become_a_unit_channel():
  m = jnp.asarray(np.array([[[0, 255], [51, 255]]], np.uint8))
  out = pipeline.uint8_masks_to_channel(m)
  assert out.shape == (1, 2, 2, 1) and out.dtype == jnp.float32
  np.testing.assert_allclose(out[..., 0], [[[0.0, 1.0], [0.2, 1.0]]], atol=1e-7)
  assert pipeline.uint8_masks_to_channel(None) is None
