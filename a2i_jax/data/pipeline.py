"""On-device batch sampling and augmentation (docs/reference.md §3.3), inside the jitted train
step.

The whole split lives on the devices as uint8; each step draws indices with replacement (as
the reference's `math.random(ntrain)` does), gathers, and augments with `jax.random`. No
per-example Python loop and no host round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import jax
import jax.numpy as jnp

from a2i_jax.errors import ConfigError, DataError, InputError
from a2i_jax.inputs import check_int, is_integer, to_unit

Array = jax.Array


def uint8_masks_to_channel(masks_u8: Optional[Array]) -> Optional[Array]:
  """uint8 [B,H,W] (255 = foreground) to float [B,H,W,1] in [0,1].

  The stored masks inside the jitted steps, unchecked; a user's mask goes through
  `inputs.mask_to_unit`, which checks it.

  Args:
    masks_u8: uint8 [B, H, W], or None.
  Returns:
    float32 [B, H, W, 1], or None.
  Raises:
    InputError: masks of another dtype (the dtype is known under `jit` too).
  """
  if masks_u8 is None:
    return None
  if masks_u8.dtype != jnp.uint8:
    # Was: float or bool masks divided by 255 as well, a mask of 1 taken as 1/255: the model
    # trained on a foreground it hardly saw, without a word (fault hunt).
    raise InputError(f"masks have dtype {masks_u8.dtype}; the pipeline takes the stored uint8 "
                     "masks, 255 on the foreground: pass (mask * 255).astype(np.uint8) for 0/1 "
                     "or boolean masks.")
  return (masks_u8.astype(jnp.float32) / 255.0)[..., None]


def box_filter_5x5(x: Array) -> Array:
  """5x5 mean filter with zero padding ('same'), per channel, as torch `image.convolve`.

  Args:
    x: floats [B, H, W, C].
  Returns:
    [B, H, W, C].
  Raises:
    InputError: `x` is not floats (uint8 was filtered to all zeros: the 1/25 kernel in its
      dtype is 0).
  """
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise InputError(f"box_filter_5x5 takes floats; got {x.dtype} (pass x.astype(jnp.float32)).")
  c = x.shape[-1]
  kernel = jnp.full((5, 5, 1, c), 1.0 / 25.0, x.dtype)
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((2, 2), (2, 2)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=c)


def _rotate(image: Array, angle: Array) -> Array:
  """Bilinear rotation about ((W-1)/2, (H-1)/2), as torch's image.rotate (rotateBilinear).

  Its rule at the border, per axis: a sample point less than half a pixel outside the image
  takes the nearest edge pixel, one further out is 0 (the whole value, not a blend toward
  0). Was: blended toward 0 (map_coordinates' constant mode), darkening the edge ring of the
  image and its mask.
  """
  h, w = image.shape[:2]
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  src_x = cos * (xx - cx) - sin * (yy - cy) + cx
  src_y = sin * (xx - cx) + cos * (yy - cy) + cy

  def axis(src, size):  # (index 0, index 1, weight of index 1, inside) along one axis.
    i0 = jnp.floor(src).astype(jnp.int32)
    i1, frac = i0 + 1, src - jnp.floor(src)
    near_end, near_start = (i1 == size) & (frac < 0.5), (i0 == -1) & (frac > 0.5)
    inside = ((i1 < size) | near_end) & ((i0 >= 0) | near_start)
    i1 = jnp.where(near_end, i0, i1)
    i0 = jnp.where(near_start, i1, i0)
    return jnp.clip(i0, 0, size - 1), jnp.clip(i1, 0, size - 1), frac, inside

  x0, x1, wx, in_x = axis(src_x, w)
  y0, y1, wy, in_y = axis(src_y, h)
  wx, wy = wx[..., None], wy[..., None]
  value = ((1 - wx) * (1 - wy) * image[y0, x0] + wx * (1 - wy) * image[y0, x1]
           + (1 - wx) * wy * image[y1, x0] + wx * wy * image[y1, x1])
  return jnp.where((in_x & in_y)[..., None], value, 0.0)


def _crop(image: Array, oy: Array, ox: Array, size: int) -> Array:
  return jax.lax.dynamic_slice(image, (oy, ox, 0), (size, size, image.shape[-1]))


def centre_crop(x: Array, size: int) -> Array:
  """Centre crop of a [B,H,W,C] batch to size x size (CUB test time).

  Args:
    x: [B, H, W, C].
    size: the output side, from 1 to min(H, W).
  Returns:
    [B, size, size, C].
  Raises:
    InputError: `size` not in [1, min(H, W)], or `x` not [B, H, W, C].
  """
  if x.ndim != 4:
    raise InputError(f"centre_crop takes images [B, H, W, C]; got shape {x.shape}.")
  h, w = x.shape[1:3]
  # Was: a size beyond the image sliced from a negative offset (1 x 1 pixels of a corner, for
  # 10 of 8), and W cropped at H's offset, off centre where W != H (fault hunt).
  if not is_integer(size) or not 1 <= size <= min(h, w):
    raise InputError(f"centre_crop's size={size!r} does not fit images of {h} x {w}; pass an "
                     f"integer from 1 to {min(h, w)}.")
  top, left = (h - size) // 2, (w - size) // 2
  return x[:, top:top + size, left:left + size]


def _check_batch(images: Array, masks: Optional[Array], crop_size: int) -> None:
  """Refuses images not [B, H, W, 3], masks not [B, H, W] of the same B, H, W, and a crop
  larger than the images (shapes only: known under `jit`)."""
  shape = tuple(images.shape)
  if len(shape) != 4 or shape[-1] != 3:
    raise InputError(f"images have shape {shape}; the pipeline takes a batch [B, H, W, 3] "
                     "(one image: images[None]).")
  if masks is not None and tuple(masks.shape) != shape[:3]:
    raise InputError(f"masks have shape {tuple(masks.shape)} beside images {shape}; pass one "
                     f"mask per image, [B, H, W] = {list(shape[:3])}.")
  if not is_integer(crop_size) or crop_size < 0:  # Was JAX's TypeError about a slice of negative size.
    raise ConfigError(f"data.augment.crop_size={crop_size!r} is not valid; pass an integer, "
                      "0 for no crop.")
  if crop_size and crop_size > min(shape[1:3]):
    # Was: no crop at all, the images passed on at their own size without a word.
    raise ConfigError(f"data.augment.crop_size={crop_size} is larger than the images "
                      f"({shape[1]} x {shape[2]}); pass a crop_size of at most "
                      f"{min(shape[1:3])}, or 0 for none.")


def augment(key: Array, images: Array, masks: Optional[Array], cfg: Any
            ) -> tuple[Array, Optional[Array]]:
  """Training augmentation of a batch, in the reference's order.

  flip (image and mask) -> random crop -> rotation (image and mask) -> per-channel colour
  gain -> sharpening x + s (x - box5(x)) -> x * 2 - 1. No clipping, as in the reference.

  Args:
    key: PRNG key.
    images: uint8 [B,H,W,3].
    masks: uint8 [B,H,W] or None.
    cfg: `config.data.augment` (flip, crop_size (0 = none), max_rotation (radians),
      color_gain, max_sharpen).
  Returns:
    x in [-1,1]-ish float32 [B,S,S,3] and the mask float32 [B,S,S,1] in [0,1] (or None).
  Raises:
    InputError: images not [B, H, W, 3] uint8 (or floats in [0, 1]), masks not uint8
      [B, H, W].
    ConfigError: a crop_size that is negative, not an integer or larger than the images.
  """
  _check_batch(images, masks, cfg.crop_size)
  b = images.shape[0]
  k_flip, k_crop, k_rot, k_gain, k_sharp = jax.random.split(key, 5)
  x = to_unit(images)
  m = uint8_masks_to_channel(masks)
  # Image and mask travel together through the geometric steps.
  xm = x if m is None else jnp.concatenate([x, m], axis=-1)
  if cfg.flip:
    flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
    xm = jnp.where(flip, xm[:, :, ::-1], xm)
  if cfg.crop_size and cfg.crop_size < max(xm.shape[1:3]):
    # Each axis's offset over its own span (was: the height's for both, so images wider than
    # high kept their width, and a crop of a taller one was clamped towards the right edge;
    # review finding). The draws of square images are as before.
    span = jnp.array([xm.shape[1], xm.shape[2]]) - cfg.crop_size + 1
    offs = jax.random.randint(k_crop, (b, 2), 0, span)
    xm = jax.vmap(_crop, in_axes=(0, 0, 0, None))(xm, offs[:, 0], offs[:, 1], cfg.crop_size)
  if cfg.max_rotation:
    angles = jax.random.uniform(k_rot, (b,), jnp.float32, -cfg.max_rotation, cfg.max_rotation)
    xm = jax.vmap(_rotate)(xm, angles)
  x, m = (xm, None) if m is None else (xm[..., :3], xm[..., 3:])
  if cfg.color_gain:
    gain = jax.random.uniform(k_gain, (b, 1, 1, 3), jnp.float32, 1.0 - cfg.color_gain,
                              1.0 + cfg.color_gain)  # float32 under JAX_ENABLE_X64 too.
    x = x * gain
  if cfg.max_sharpen:
    s = jax.random.uniform(k_sharp, (b, 1, 1, 1), jnp.float32, maxval=cfg.max_sharpen)
    x = x + s * (x - box_filter_5x5(x))
  return 2.0 * x - 1.0, m


def preprocess_eval(images: Array, masks: Optional[Array], cfg: Any
                    ) -> tuple[Array, Optional[Array]]:
  """Evaluation-time preprocessing: to [-1,1], centre crop where training crops.

  Args:
    images: uint8 [B, H, W, 3].
    masks: uint8 [B, H, W] or None.
    cfg: `config.data.augment` (its `crop_size`).
  Returns:
    images float32 [B, S, S, 3] in [-1, 1]; masks float32 [B, S, S, 1] in [0, 1] or None.
  Raises:
    InputError, ConfigError: as `augment`.
  """
  _check_batch(images, masks, cfg.crop_size)
  x = to_unit(images)
  m = uint8_masks_to_channel(masks)
  if cfg.crop_size and cfg.crop_size < max(x.shape[1:3]):  # Was: the height alone.
    x = centre_crop(x, cfg.crop_size)
    m = None if m is None else centre_crop(m, cfg.crop_size)
  return 2.0 * x - 1.0, m


def sample_batch(key: Array, data: dict, batch_size: int) -> dict:
  """Draws `batch_size` examples with replacement from on-device `data`.

  Args:
    key: PRNG key of the indices.
    data: {"images": [N, ...], "attributes": [N, A], optional "masks": [N, ...]}.
    batch_size: B, at least 1 (it may exceed N: the draws are with replacement).
  Returns:
    The same keys with leading axis B.
  Raises:
    DataError: no "images", no examples (N = 0), or arrays of different N.
    InputError: a batch_size that is not an integer of at least 1.
  """
  batch_size = check_int(batch_size, "batch_size", 1)  # Was JAX's TypeError.
  if not isinstance(data, Mapping) or "images" not in data:  # Was a KeyError.
    got = f"keys {sorted(data)}" if isinstance(data, Mapping) else f"a {type(data).__name__}"
    raise DataError(f"data is {got}; sample_batch takes a dict with \"images\" [N, ...] (and "
                    "\"attributes\", \"masks\" of the same N).")
  lengths = {k: (v.shape[0] if getattr(v, "ndim", 0) else None) for k, v in data.items()}
  n = lengths["images"]
  if n is None or any(v != n for v in lengths.values()):
    # Was: drawn by the images' N and gathered from each array, where JAX clamps an index
    # past the end: images paired with another example's attributes, without a word.
    raise DataError(f"the arrays of data differ in length ({lengths}); every one holds one "
                    "row per example: pass arrays of the same leading size N.")
  if not n:  # Was JAX's TypeError about a gather's slice size.
    raise DataError("data holds no examples (N = 0); the split to sample from is empty: "
                    "check the dataset's split sizes.")
  idx = jax.random.randint(key, (batch_size,), 0, n)
  return {k: v[idx] for k, v in data.items()}
