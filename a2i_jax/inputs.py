"""Checks of user inputs (images, attributes, masks) and the image conversions.

User-facing functions check what they are given here, once, at the edge (docs/design.md §2.2);
code below them trusts shapes and ranges. Images travel in three conventions: uint8 in
[0, 255] (datasets, files), floats in [0, 1] (what users pass and get back) and floats in
[-1, 1] (what the models take and give). The conversions between them are written once here,
and work on NumPy and JAX arrays alike (inside `jit` too).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from a2i_jax.errors import InputError


def to_signed(x: Any) -> Any:
  """uint8 in [0, 255] or floats in [0, 1] to float32 in [-1, 1].

  Args:
    x: a NumPy or JAX array of images (any shape).
  Returns:
    float32 in [-1, 1], the same kind of array.
  """
  if x.dtype == np.uint8:
    return x.astype(jnp.float32) / 127.5 - 1.0
  return x.astype(jnp.float32) * 2.0 - 1.0


def from_signed(x: Any) -> Any:
  """Floats in [-1, 1] (a model's images) to [0, 1].

  Args:
    x: a NumPy or JAX float array.
  Returns:
    (x + 1) / 2, the same kind of array and dtype.
  """
  return (x + 1.0) / 2.0


def to_unit(x: Any) -> Any:
  """uint8 in [0, 255] or floats in [0, 1] to float32 in [0, 1].

  Args:
    x: a NumPy or JAX array of images.
  Returns:
    float32 in [0, 1] (floats are only cast).
  """
  if x.dtype == np.uint8:
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)


def to_uint8(x: Any) -> np.ndarray:
  """Floats in [0, 1] (clipped) to uint8 in [0, 255], rounding to the nearest; uint8 as is.

  Args:
    x: an array of images.
  Returns:
    A uint8 NumPy array.
  """
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x
  return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def check_attributes(attributes: Any, y_dim: int) -> jax.Array:
  """Validates an attribute batch [N, y_dim] (or one vector) and returns it as float32.

  Args:
    attributes: [N, y_dim] or [y_dim], anything numpy converts.
    y_dim: the model's attribute count.
  Returns:
    float32 [N, y_dim].
  Raises:
    InputError: wrong shape or non-finite values.
  """
  y = np.asarray(attributes, dtype=np.float32)
  if y.ndim == 1:
    y = y[None]
  if y.ndim != 2 or y.shape[1] != y_dim:
    raise InputError(f"attributes have shape {y.shape}; this model expects [N, {y_dim}] "
                     f"(one value per attribute, y_dim={y_dim}).")
  if not np.all(np.isfinite(y)):
    raise InputError("attributes contain NaN or infinity.")
  return jnp.asarray(y)


def check_images(images: Any, image_size: int) -> jax.Array:
  """Validates an image batch and returns it as float32 in [-1, 1], NHWC.

  Accepts uint8 in [0, 255] or floats in [0, 1]; anything else is an `InputError`.

  Args:
    images: [N, S, S, 3] (or one [S, S, 3] image).
    image_size: the model's S.
  Returns:
    float32 [N, S, S, 3] in [-1, 1].
  Raises:
    InputError: wrong shape or dtype, or floats outside [0, 1].
  """
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[None]
  if x.ndim != 4 or x.shape[1:] != (image_size, image_size, 3):
    raise InputError(f"images have shape {x.shape}; this model expects [N, {image_size}, "
                     f"{image_size}, 3] RGB (resize or crop to {image_size}x{image_size}).")
  if x.dtype != np.uint8:
    if not np.issubdtype(x.dtype, np.floating):
      raise InputError(f"images have dtype {x.dtype}; pass uint8 in [0, 255] or floats in "
                       "[0, 1].")
    lo, hi = float(np.min(x)), float(np.max(x))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
      raise InputError(f"float images must lie in [0, 1]; these range over [{lo:g}, {hi:g}] "
                       "(divide uint8 images by 255, or pass them as uint8).")
  return to_signed(jnp.asarray(x))


def check_mask(mask: Any, num: int, image_size: int, what: str) -> jax.Array:
  """Validates a per-pixel mask [N, S, S] or [N, S, S, 1] (or one [S, S]) in [0, 1].

  uint8 masks are read as 255 = 1.

  Args:
    mask: the mask(s).
    num: N, the number of images it goes with.
    image_size: S.
    what: the argument's name, for the error message.
  Returns:
    float32 [N, S, S, 1].
  Raises:
    InputError: wrong shape or values outside [0, 1].
  """
  m = to_unit(np.asarray(mask))
  if m.ndim == 2:
    m = m[None]
  if m.ndim == 3:
    m = m[..., None]
  if m.shape != (num, image_size, image_size, 1):
    raise InputError(f"{what} has shape {np.asarray(mask).shape}; expected [{num}, "
                     f"{image_size}, {image_size}] (or with a trailing 1), one per image.")
  if not np.all((m >= 0.0) & (m <= 1.0)):
    raise InputError(f"{what} values must lie in [0, 1] (or uint8 0/255).")
  return jnp.asarray(m)
