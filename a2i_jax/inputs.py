"""Checks of user inputs (images, attributes, masks) and the image conversions.

User-facing functions check what they are given here, once, at the edge (docs/design.md §2.2);
code below them trusts shapes and ranges. Images travel in three conventions: uint8 in
[0, 255] (datasets, files), floats in [0, 1] (what users pass and get back) and floats in
[-1, 1] (what the models take and give). The conversions between them are written once here,
and work on NumPy and JAX arrays alike (inside `jit` too).

Image files are read here too, by one function (`read_image`) that `infer.py --input` and the
folder datasets share, so every mode and bit depth PIL opens is converted the same way:

- values are scaled to 8 bits, never clipped: 16-bit images (mode "I;16*", and mode "I" with
  values in 0..65535, as PIL reads 16-bit PGM/TIFF) map 0..65535 to 0..255, and one whose
  values all lie in 1..255 (8-bit values in a wider type, which would read nearly black) or
  in 0..4095 (10- or 12-bit values, nearly black too) is refused; float images (mode "F")
  must lie in [0, 1], which maps to 0..255; anything else is refused by name;
- transparency is composited over BLACK, i.e. colour x alpha (premultiplied alpha): a
  transparent pixel is black in images and background in masks (white = foreground);
- palettes, 1-bit, greyscale, CMYK, YCbCr, LAB and HSV go through PIL's conversion to RGB;
- the EXIF orientation is applied, so an image reads the way a viewer shows it;
- of an animated or multi-page file, the first frame is read (of a PSD, the merged image).

PIL images passed to the checks in place of arrays follow the same rules (`image_to_rgb`).
A file the reader cannot decode (empty, truncated, not an image, a folder) is an error that
names it, never a traceback (a truncated one also where `PIL.ImageFile.LOAD_TRUNCATED_IMAGES`
is set). So is one over the reader's bound on pixels, PIL's own: twice
`PIL.Image.MAX_IMAGE_PIXELS`, 178,956,970 pixels by default (a 13,377 x 13,377 image, 537 MB
as 8-bit RGB), refused from the file's header before anything is decoded, and below it PIL's
two-line `DecompressionBombWarning` is not shown. `read_images`, which takes images of one
given size, reads each file's size from its header and refuses any other before decoding.
`image_files` names a file of a format PIL cannot read (HEIC, SVG, camera raw, ...) as such,
with the fix: convert it to PNG or JPEG.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
import warnings
from typing import Any, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image, ImageOps, UnidentifiedImageError

from a2i_jax import files
from a2i_jax.errors import A2IError, InputError


def to_signed(x: Any) -> Any:
  """uint8 in [0, 255] or floats in [0, 1] to float32 in [-1, 1].

  Args:
    x: a NumPy or JAX array of images (any shape). Floats a little outside [0, 1] by
      rounding (by at most `SIGNED_SLACK`) are clipped. Under `jit` the values cannot be
      read: only the dtype is checked there.
  Returns:
    float32 in [-1, 1], the same kind of array.
  Raises:
    InputError: another dtype (uint16, int64, bool, ...), NaN or infinity, floats outside
      [0, 1] (0 .. 255, or the models' own [-1, 1]), or uint8 whose brightest value is 1
      ([0, 1] floats cast to uint8; not under `jit`), each named with its fix.
  """
  return _signed(_checked_unit(x, "to_signed"))


def _signed(x: Any) -> Any:
  """uint8 or floats in [0, 1], already checked, to float32 in [-1, 1]."""
  if x.dtype == np.uint8:
    return x.astype(jnp.float32) / 127.5 - 1.0
  return x.astype(jnp.float32) * 2.0 - 1.0


def from_signed(x: Any) -> Any:
  """Floats in [-1, 1] (a model's images) to [0, 1].

  Args:
    x: a NumPy or JAX float array (a list or number is taken as NumPy's). NumPy values are
      checked to lie in [-1, 1] (up to `SIGNED_SLACK`); JAX arrays are not read (a model's
      outputs, under `jit` too, whose overshoot its callers clip), only their dtype checked.
  Returns:
    (x + 1) / 2, the same kind of array and dtype.
  Raises:
    InputError: not floats (uint8 images in [0, 255] say so, with `to_unit`), or NumPy
      values outside [-1, 1], NaN or infinity.
  """
  # Was: uint8 and values outside [-1, 1] mapped without a word ([2, -3] to [1.5, -1]).
  if not isinstance(x, jax.Array):  # Tracers too: they are never NumPy's.
    x = as_array(x, "from_signed's input")
  takes = "from_signed takes floats in [-1, 1] (a model's images)"
  if not jnp.issubdtype(x.dtype, jnp.floating):  # bfloat16 too; known under `jit` too.
    fix = ("images in [0, 255]: to_unit(x) gives [0, 1]" if x.dtype == np.uint8 else
           "pass x.astype(np.float32) if they are -1, 0 and 1"
           if x.dtype == np.bool_ or jnp.issubdtype(x.dtype, jnp.integer) else "pass numbers")
    raise InputError(f"{takes}; these are {x.dtype} ({fix}).")
  if isinstance(x, np.ndarray):
    check_range(x, -1.0 - SIGNED_SLACK, 1.0 + SIGNED_SLACK, takes,
                "scale them to [-1, 1] first; images in [0, 1] need no conversion")
  return (x + 1.0) / 2.0


def to_unit(x: Any) -> Any:
  """uint8 in [0, 255] or floats in [0, 1] to float32 in [0, 1].

  Args:
    x: a NumPy or JAX array of images. Floats a little outside [0, 1] by rounding (by at
      most `SIGNED_SLACK`) are clipped. Under `jit` only the dtype is checked.
  Returns:
    float32 in [0, 1], the same kind of array.
  Raises:
    InputError: another dtype, NaN or infinity, floats outside [0, 1], or uint8 whose
      brightest value is 1 ([0, 1] floats cast to uint8; not under `jit`), each named with
      its fix.
  """
  x = _checked_unit(x, "to_unit")
  if x.dtype == np.uint8:
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)


def to_uint8(x: Any) -> np.ndarray:
  """Floats in [0, 1] to uint8 in [0, 255], rounding to the nearest; uint8 as is.

  Args:
    x: an array of images. Floats a little outside [0, 1] by rounding (by at most
      `SIGNED_SLACK`) are clipped.
  Returns:
    A uint8 NumPy array.
  Raises:
    InputError: another dtype, NaN or infinity, floats outside [0, 1] (was: 0 .. 255
      floats clipped to white, uint16 to 0 or 255, without a word), or uint8 whose brightest
      value is 1 ([0, 1] floats cast to uint8).
  """
  x = _checked_unit(np.asarray(x), "to_uint8")
  if x.dtype == np.uint8:
    return x
  return (x * 255.0 + 0.5).astype(np.uint8)


def _checked_unit(x: Any, fn: str) -> Any:
  """`x` if uint8 (refused where its brightest value is 1, `_refuse_binary_uint8`); floats
  checked to lie in [0, 1] up to `SIGNED_SLACK`, in one min / max pass (where they can be
  read: not under `jit`), and clipped to it; anything else refused.
  A NumPy array stays one, a JAX array a JAX array. A PIL image is its pixels as NumPy reads
  them (L, LA, RGB, RGBA), or RGB by `image_to_rgb` (other modes)."""
  if not isinstance(x, (np.ndarray, jax.Array)):
    x = as_array(_from_pil(x, keep=("L", "LA", "RGB", "RGBA")), "images")
  takes = f"{fn} takes uint8 in [0, 255] or floats in [0, 1]"
  if x.dtype == np.uint8:
    _refuse_binary_uint8(x, f"{takes}; these are")
    return x
  if not jnp.issubdtype(x.dtype, jnp.floating):  # bfloat16 too (NumPy's test says no).
    fix = ("16-bit images: pass x / 65535" if x.dtype == np.uint16 else
           "whole numbers 0 .. 255: pass x.astype(np.uint8); 0 and 1: x.astype(np.float32)"
           if x.dtype == np.bool_ or jnp.issubdtype(x.dtype, jnp.integer) else
           "pass numbers, as uint8 or floats")
    raise InputError(f"{takes}; these are {x.dtype} ({fix}).")
  xp = jnp if isinstance(x, jax.Array) else np
  if isinstance(x, jax.core.Tracer) or not x.size:  # Traced: its values are not known yet.
    return xp.clip(x, 0.0, 1.0)
  lo, hi = float(x.min()), float(x.max())
  if not (np.isfinite(lo) and np.isfinite(hi)):
    raise InputError(f"{takes}; these hold NaN or infinity.")
  # The slack in the images' own precision: float32's 1.001 lies just above float64's.
  slack = float(np.asarray(SIGNED_SLACK, x.dtype))
  if lo < -slack or hi > float(np.asarray(1.0 + SIGNED_SLACK, x.dtype)):
    fix = _unit_range_fix(lo, hi, slack) or (
        " (0 .. 255? divide by 255, or pass uint8)." if 0.0 <= lo and 2.0 < hi <= 255.0 else
        " (scale them to [0, 1] first).")
    raise InputError(f"{takes}; these floats range over [{lo:.7g}, {hi:.7g}]{fix}")
  return xp.clip(x, 0.0, 1.0)


def shown_size(image: Any) -> tuple[int, int]:
  """An opened PIL image's (width, height) as shown: turned by its EXIF orientation, as
  `read_image` turns it (from the header alone).

  Args:
    image: a `PIL.Image.Image` (opened; not yet loaded is fine).
  Returns:
    (width, height).
  """
  w, h = image.size
  if image.format == "TIFF" and (h, w) != (w, h) and (h, w) == (
      image.tag_v2.get(256), image.tag_v2.get(257)):  # ImageWidth, ImageLength.
    # PIL turned it already (its size is as shown; it turns the pixels when it loads): was
    # turned twice, so that a turned TIFF and its mask were called of other sizes, and a
    # folder dataset refused (a fault hunt's finding).
    return w, h
  return (h, w) if image.getexif().get(0x0112) in (5, 6, 7, 8) else (w, h)


def _refuse_binary_uint8(x: Any, what: str) -> None:
  """Refuses uint8 images `x` whose brightest value is 1: [0, 1] floats cast with
  `.astype(np.uint8)` (every value below 1 cut to 0), which read as 0 .. 255 are black. Was:
  taken without a word, and inferred, scored or shown as black images (a review's finding),
  where masks refuse the same slip (`mask_to_unit`). All zeros are taken: a black image is
  one. Under `jit` the values are not known: the dtype alone is checked there.

  Args:
    x: uint8 images (NumPy, JAX or traced).
    what: the message's start, up to its subject's verb ("images are", "... these are").
  Raises:
    InputError: `x` holds values and the largest is 1.
  """
  if not isinstance(x, jax.core.Tracer) and x.size and int(x.max()) == 1:
    raise InputError(f"{what} uint8 whose brightest value is 1 (of 255), so they would read "
                     "as black: floats in [0, 1] cast with .astype(np.uint8)? Pass (x * 255)"
                     ".round().astype(np.uint8) of those floats, or the floats in [0, 1] as "
                     "they are.")


def _unit_range_fix(lo: float, hi: float, slack: float) -> Optional[str]:
  """The end of the line refusing [0, 1] images that range over [lo, hi] (beyond `slack`),
  where the range says what they are: the models' own [-1, 1], or [0, 1] a little outside (a
  resize's overshoot); None otherwise (NaN included)."""
  if -1.0 - SIGNED_SLACK <= lo < -0.15 and hi <= 1.0 + SIGNED_SLACK:  # The models' range.
    return ", the models' own [-1, 1] (pass (x + 1) / 2)."
  if -0.15 <= lo and hi <= 1.15:
    # Was told to pass (x + 1) / 2 for a [0, 1] image a cubic resize took below 0: that
    # washes it out without a word. Below -0.02 a bright [-1, 1] image is as likely, and
    # clipping that one washes it out: both are named.
    signed_too = ("; if they are the models' own [-1, 1] (nothing darker than mid-grey), "
                  "pass (x + 1) / 2 instead" if lo < -0.02 and hi <= 1.0 + slack else "")
    return (", a little outside (a resize's overshoot?): pass np.clip(x, 0, 1)"
            f"{signed_too}.")
  return None


def check_attributes(attributes: Any, y_dim: int, num: Optional[int] = None) -> np.ndarray:
  """Validates an attribute batch [N, y_dim] (or one vector) and returns it as float32.

  Args:
    attributes: [N, y_dim] or [y_dim] (one row), anything numpy converts to numbers.
    y_dim: the model's attribute count.
    num: the number of images the rows go with (one row each); None: any number.
  Returns:
    float32 [N, y_dim], a NumPy array (the checks return host arrays: placing them on the
    devices is the caller's step, and no eager device program is compiled for it).
  Raises:
    InputError: missing (None), not numbers, rows of other lengths, wrong shape, a row
      count other than `num`, or non-finite values (the first one's place named).
  """
  if attributes is None:
    raise InputError(f"attributes are missing (None); pass [N, {y_dim}] values, one row per "
                     f"image (a model that ignores them still takes them: np.zeros((N, {y_dim}))).")
  # Rows of other lengths: was NumPy's ValueError ("inhomogeneous shape"), from the test of
  # complex numbers (a fault hunt's finding).
  raw = as_array(attributes, "attributes")
  if np.iscomplexobj(raw):  # Was a ComplexWarning, and the imaginary part dropped.
    raise InputError(f"attributes are complex numbers; pass real values, [N, {y_dim}].")
  try:
    # A copy: the caller's array is never shared. Of `attributes`: NumPy names a string
    # that is no number as 'a', not np.str_('a'). Beyond float32: infinite, named below
    # (was NumPy's "overflow encountered in cast" warning too).
    with np.errstate(over="ignore"):
      y = np.array(attributes, dtype=np.float32)
  except (TypeError, ValueError) as e:
    raise InputError(f"attributes must be numbers, [N, {y_dim}]; these are not ({e}).") from None
  given = y.shape
  if y.ndim == 1:
    y = y[None]
  if y.ndim != 2 or y.shape[1] != y_dim:
    # The shape as given (was the reshaped one: N values for a y_dim=1 model were "shape (1,
    # N)", a shape never passed; a fault hunt's finding), and the fix for N values of one.
    fix = (f"; for one value per image pass attributes[:, None], [{given[0]}, 1]"
           if y_dim == 1 and len(given) == 1 else "")
    raise InputError(f"attributes have shape {given}; this model expects [N, {y_dim}] "
                     f"(one value per attribute, y_dim={y_dim}){fix}.")
  if num is not None and y.shape[0] != num:
    raise InputError(f"{y.shape[0]} attribute vectors for {num} images; pass one per image "
                     f"([{num}, {y_dim}]).")
  if not np.all(np.isfinite(y)):
    raise InputError(_non_finite_attributes(raw.reshape(y.shape), y))
  return y


def _non_finite_attributes(raw: np.ndarray, y: np.ndarray) -> str:
  """The line refusing attributes `y` (float32 [N, D], of the caller's `raw`) that hold NaN
  or infinity: how many, the first's place and what it was (a None, a number beyond float32),
  and the fix. Was "attributes contain NaN or infinity." alone: no place, no fix, and 1e40
  or a None (a missing value) called NaN or infinity (a fault hunt's finding)."""
  bad = np.argwhere(~np.isfinite(y))
  i, j = (int(k) for k in bad[0])
  given = raw[i, j]
  if given is None:
    what = "None, a missing value"
  else:
    try:
      value = float(given)
    except (TypeError, ValueError):
      value = float(y[i, j])
    what = (f"{value:g}, beyond float32's range" if np.isfinite(value) else
            "NaN" if np.isnan(value) else f"{value:g}")
  return (f"attributes contain NaN or infinity: {len(bad)} of {y.size} values, the first in row "
          f"{i}, attribute {j} ({what}); pass finite numbers, one per attribute of each image.")


# Rounding of conversions a user may have done (float16, (x + 1) / 2 and back): a little past
# [-1, 1] is that, not another convention.
SIGNED_SLACK = 1e-3


def check_images(images: Any, image_size: int, signed: bool = False) -> np.ndarray:
  """Validates an image batch and returns it as float32 in [-1, 1], NHWC.

  Accepts uint8 in [0, 255] or floats in [0, 1] (with `signed`: floats in [-1, 1] only, the
  models' convention); anything else is an `InputError`. One pass over the values on the host
  (a JAX array is read back first).

  Args:
    images: [N, S, S, 3] (or one [S, S, 3] image); a PIL image, or a list of them, is
      converted to RGB as image files are (`image_to_rgb`).
    image_size: the model's S.
    signed: the images are already in [-1, 1] (`posterior.infer_latents`' input). Floats in
      [0, 1] lie in [-1, 1] too and cannot be told apart: they pass, and are read as [-1, 1].
  Returns:
    float32 [N, S, S, 3] in [-1, 1], a NumPy array.
  Raises:
    InputError: wrong shape (grey, RGBA or channels-first images of the right size, or a
      list of batches, named as such) or dtype, non-finite values, floats outside [0, 1]
      (outside [-1, 1] with `signed`), or uint8 whose brightest value is 1 ([0, 1] floats
      cast to uint8; all zeros, black images, are taken).
  """
  if images is None:  # Was "images have shape ()".
    raise InputError(f"images are missing (None); pass [N, {image_size}, {image_size}, 3] "
                     "images, or one [S, S, 3] image.")
  ragged = _batches_fix(images, image_size)
  if ragged:
    raise InputError(ragged)
  x = as_array(rgb_pixels(images), "images")
  shape = x.shape
  if x.ndim == 3 and x.shape[-1] == 3:  # One image.
    x = x[None]
  if x.ndim != 4 or x.shape[1:] != (image_size, image_size, 3):
    raise InputError(f"images have shape {shape}; this model expects [N, {image_size}, "
                     f"{image_size}, 3] RGB ({_image_shape_fix(shape, image_size)}).")
  if signed:  # Only the models' convention: any other is a caller's slip, not a choice.
    fix = ("inputs.to_signed converts uint8 or [0, 1]; reconstruct, complete and "
           "run_inference take uint8 or [0, 1] as they are")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise InputError(f"images have dtype {x.dtype}; infer_latents takes floats in [-1, 1] "
                       f"({fix}).")
    check_range(x, -1.0 - SIGNED_SLACK, 1.0 + SIGNED_SLACK,
                 "infer_latents takes images in [-1, 1]", fix)
    return np.asarray(x, np.float32)
  if x.dtype != np.uint8:
    if not jnp.issubdtype(x.dtype, jnp.floating):  # bfloat16 too (NumPy's test says no).
      raise InputError(f"images have dtype {x.dtype}; pass uint8 in [0, 255] or floats in "
                       "[0, 1].")
    rule = "float images must lie in [0, 1]"
    # The slack in the images' own precision: float32's 1.001 lies just above float64's.
    slack = float(np.asarray(SIGNED_SLACK, x.dtype))
    try:  # Rounding's overshoot (a resize) passes, clipped: it was refused as out of range.
      check_range(x, -slack, float(np.asarray(1.0 + SIGNED_SLACK, x.dtype)), rule,
                  "divide uint8 images by 255, or pass them as uint8")
    except InputError:
      lo, hi = float(np.min(x)), float(np.max(x))
      fix = _unit_range_fix(lo, hi, slack)
      if fix is None:  # NaN: check_range's line stands.
        raise
      raise InputError(f"{rule}; these range over [{lo:.7g}, {hi:.7g}]{fix}") from None
    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
  else:
    _refuse_binary_uint8(x, "images are")
  return _signed(x)


def rgb_pixels(images: Any) -> Any:
  """`images` as `check_images` reads them: a PIL image, or a list of them, as RGB pixels
  (`image_to_rgb` for any other mode); anything else as it is.

  For callers that keep the given pixels themselves (`inference.complete`), exactly as given:
  a round trip through [-1, 1] changes them in their last bit.

  Args:
    images: images as a caller passed them.
  Returns:
    `images`, or the pixels of PIL images (uint8 [S, S, 3], a list of them for a list).
  """
  return _from_pil(images, keep=("RGB",))


def _from_pil(value: Any, keep: tuple[str, ...]) -> Any:
  """`value` as it is, but a PIL image (or a list or tuple of them) as pixels: by `np.asarray`
  where its mode is one of `keep`, else by `image_to_rgb`, as files are read.

  Was: NumPy's view of any mode, which is no colour for many: a palette image's indices were
  called "one grey image" (to repeat into three channels), CMYK's four channels "RGBA", and
  YCbCr, LAB or HSV taken as RGB, without a word (a fault hunt's finding).
  """
  one = isinstance(value, Image.Image)
  if not (one or isinstance(value, (list, tuple)) and value
          and all(isinstance(v, Image.Image) for v in value)):
    return value
  pixels = lambda im: np.asarray(im) if im.mode in keep else image_to_rgb(im)
  return pixels(value) if one else [pixels(v) for v in value]


def _image_shape_fix(shape: tuple, size: int) -> str:
  """What to do with images of `shape` that are not [N, size, size, 3]: name a channel
  problem where the side is right (was: "resize or crop to 32x32" for grey [N, 32, 32] or
  RGBA [N, 32, 32, 4] images of the right size; review finding), else the resize."""
  grey = "repeat the grey channel, np.repeat(x[..., None], 3, axis=-1)"
  fixes = {1: "one channel (grey): np.repeat(x, 3, axis=-1)",
           2: "grey and alpha: drop the alpha and repeat the grey, np.repeat(x[..., :1], 3, "
              "axis=-1)",
           4: "4 channels (RGBA): drop the alpha, x[..., :3], or composite onto a background"}
  if len(shape) == 3 and shape[0] in (1, 3, 4) and tuple(shape[1:]) == (size, size):
    # [C, S, S], one image channels first (torchvision's layout), or N grey images: the grey
    # fix alone turned one RGB image into three grey ones, accepted (review finding).
    return (f"{shape[0]} grey images, or one image with its channels first: for the first, "
            f"{grey}; for the second, move them last, np.moveaxis(x, 0, -1)")
  if len(shape) in (2, 3) and tuple(shape[-2:]) == (size, size):  # [S, S] or [N, S, S].
    return f"{'one grey image' if len(shape) == 2 else 'grey, no channel axis'}: {grey}"
  if len(shape) in (3, 4) and tuple(shape[-3:-1]) == (size, size):  # [(N,) S, S, C].
    return fixes.get(shape[-1], f"{shape[-1]} channels; pass RGB, 3 channels")
  if len(shape) in (3, 4) and shape[-3] in (1, 3, 4) and tuple(shape[-2:]) == (size, size):
    return "channels first: move them last, np.moveaxis(x, -3, -1)"
  if len(shape) == 5 and tuple(shape[-3:]) == (size, size, 3):
    # A list of batches (a loop that appends each [1, S, S, 3] batch): was told to resize or
    # crop images of the right size (a review's finding).
    images = f"{shape[1]} image{'s' if shape[1] != 1 else ''}"
    if shape[0] == 1:  # [batch]: one batch in a list.
      return f"one batch of {images} in a list? Pass images[0], or np.concatenate(images)"
    return (f"a list of {shape[0]} batches of {images}? Join them into one batch: "
            "np.concatenate(images)")
  return f"resize or crop to {size}x{size}"


def _batches_fix(images: Any, size: int) -> Optional[str]:
  """The line refusing `images` given as a list of batches [k, S, S, 3] of other sizes (a
  loop's batches, the last one smaller), which NumPy cannot stack: was "images is a list of
  items of different shapes", no fix (a review's finding). None for anything else."""
  if not isinstance(images, (list, tuple)) or len(images) < 2:
    return None
  shapes = [np.shape(v) if isinstance(v, (np.ndarray, jax.Array)) else None for v in images]
  if any(s is None or len(s) != 4 or s[1:] != (size, size, 3) for s in shapes):
    return None
  if len(set(shapes)) == 1:  # They stack: the shape's own message names the fix.
    return None
  return (f"images are a list of {len(images)} batches of {size}x{size} RGB images of "
          f"different sizes ({', '.join(str(s[0]) for s in shapes[:5])}"
          f"{', ...' if len(shapes) > 5 else ''} images); join them into one batch: "
          "np.concatenate(images).")


def traced_error(what: str) -> InputError:
  """The error for a host function's argument that is traced: the caller runs the function
  inside its own `jax.jit`, `vmap` or `eval_shape` (was JAX's TracerArrayConversionError).

  Args:
    what: the argument's name.
  Returns:
    The InputError to raise.
  """
  return InputError(f"{what} is traced (inside jax.jit, jax.vmap or jax.eval_shape); this "
                    "function runs its own compiled programs on the values: call it outside "
                    "the transformation.")


def real_dtype(dtype: Any) -> bool:
  """Whether an array of `dtype` holds real numbers: bools, integers and floats (bfloat16 and
  JAX's other float types too), not complex numbers, strings or objects (whose values NumPy
  would read as numbers: "1.5" as 1.5, 1+2j as 1 with a warning).

  Args:
    dtype: a NumPy dtype (or anything `np.dtype` takes).
  Returns:
    True for the real ones.
  """
  dtype = np.dtype(dtype)
  return ((dtype == np.bool_ or np.issubdtype(dtype, np.number)
           or jnp.issubdtype(dtype, jnp.floating))
          and not np.issubdtype(dtype, np.complexfloating))


def as_array(value: Any, what: str) -> np.ndarray:
  """`np.asarray(value)`, or an `InputError` naming `what` for a ragged list (items of other
  shapes), which NumPy refuses with its own ValueError.

  Args:
    value: an array or nested list.
    what: the argument's name, for the message.
  Returns:
    The array.
  Raises:
    InputError: `value` is a list whose items differ in shape, or a traced value (inside a
      caller's `jax.jit`, `vmap` or `eval_shape`, where its values do not exist yet).
  """
  if isinstance(value, jax.core.Tracer):  # Was JAX's TracerArrayConversionError traceback.
    raise traced_error(what)
  try:
    return np.asarray(value)
  except ValueError:
    try:
      shapes = (sorted({str(np.shape(v)) for v in value}) if isinstance(value, (list, tuple))
                else [])
    except ValueError:  # An item ragged itself.
      shapes = []
    raise InputError(f"{what} is a list of items of different shapes "
                     f"({', '.join(shapes[:3]) or 'ragged'}); pass items of one shape (one "
                     "array [N, ...]).") from None


def check_range(x: np.ndarray, low: float, high: float, rule: str, fix: str) -> None:
  """Refuses values outside [low, high] or not finite, in one pass over them.

  Args:
    x: the values.
    low, high: the range allowed.
    rule: what the values must be, the message's start (e.g. "float images must lie in
      [0, 1]").
    fix: what to do instead, the message's end.
  Raises:
    InputError: "{rule}; these range over [lo, hi] ({fix})." or "{rule}; these hold NaN or
      infinity."
  """
  lo, hi = (float(np.min(x)), float(np.max(x))) if x.size else (low, high)
  if not (np.isfinite(lo) and np.isfinite(hi)):
    raise InputError(f"{rule}; these hold NaN or infinity.")
  if lo < low or hi > high:  # Seven digits: "[0, 1]" hid an overshoot of 2e-7.
    raise InputError(f"{rule}; these range over [{lo:.7g}, {hi:.7g}] ({fix}).")


def mask_to_unit(mask: Any, what: str = "mask") -> np.ndarray:
  """A per-pixel mask to float32 in [0, 1], read by the one rule every mask argument follows.

  bool and floats are read as they are (0 .. 1); uint8 as 0 .. 255 (255 = 1), the way mask
  files and the datasets hold them. A uint8 mask holding only 0 and 1 is refused: read as
  0 .. 255 it would be almost all 0.

  Args:
    mask: any shape, bool, integer or float.
    what: the argument's name, for the messages.
  Returns:
    float32, the same shape, a NumPy array.
  Raises:
    InputError: a uint8 mask of 0 and 1, complex numbers, or values outside [0, 1] (NaN
      included).
  """
  raw = as_array(mask, what)
  if np.iscomplexobj(raw):  # Was a ComplexWarning, and the imaginary part dropped.
    raise InputError(f"{what} holds complex numbers; pass bool, floats in [0, 1] or uint8 "
                     "0 .. 255.")
  if raw.dtype == np.uint8 and raw.size and int(raw.max()) == 1:
    raise InputError(f"{what} is uint8 with values 0 and 1, but uint8 masks are read as "
                     "0 .. 255 (255 = 1); multiply it by 255, or pass it as bool or floats "
                     "0 .. 1.")
  # bfloat16 too (NumPy's test says no: "has dtype bfloat16; pass ... floats", fault hunt).
  if not (raw.dtype == np.bool_ or np.issubdtype(raw.dtype, np.number)
          or jnp.issubdtype(raw.dtype, jnp.floating)):
    raise InputError(f"{what} has dtype {raw.dtype}; pass bool, floats in [0, 1] or uint8 "
                     "0 .. 255.")
  m = raw.astype(np.float32)  # Not `to_unit`: bool and integer masks are taken too.
  if raw.dtype == np.uint8:
    m /= 255.0
  check_range(m, 0.0, 1.0, f"{what} values must lie in [0, 1]",
               "pass bool, floats in [0, 1] or uint8 0 .. 255")
  return m


def check_mask(mask: Any, num: int, image_size: int, what: str) -> np.ndarray:
  """Validates a per-pixel mask [N, S, S] or [N, S, S, 1] (or one [S, S]) in [0, 1].

  Values are read by `mask_to_unit`: bool and floats as they are, uint8 as 255 = 1.

  Args:
    mask: the mask(s); one mask [S, S] or [S, S, 1] (`make_mask(...)[0]`) for one image.
    num: N, the number of images it goes with.
    image_size: S.
    what: the argument's name, for the error message.
  Returns:
    float32 [N, S, S, 1], a NumPy array.
  Raises:
    InputError: wrong shape, a uint8 mask of 0 and 1, or values outside [0, 1].
  """
  raw = as_array(mask, what)
  # One mask: [S, S], or [S, S, 1] as `make_mask(...)[0]` gives it (was refused as shape
  # (S, S, 1) where one [S, S, 3] image was taken).
  m = raw[None] if raw.ndim == 2 or raw.shape == (image_size, image_size, 1) else raw
  if m.ndim == 3:
    m = m[..., None]
  if m.shape != (num, image_size, image_size, 1):
    one = m.shape == (1, image_size, image_size, 1)  # One mask for all: the repeat named.
    fix = (f"; for the same mask on every image, np.repeat({what}.reshape(1, {image_size}, "
           f"{image_size}, 1), {num}, axis=0)" if one else "")
    raise InputError(f"{what} has shape {raw.shape}; expected [{num}, "
                     f"{image_size}, {image_size}] (or with a trailing 1), one per image{fix}.")
  return mask_to_unit(m, what)


def is_integer(value: Any) -> bool:
  """Whether `value` is an integer, Python's or NumPy's, and not a bool (which Python counts
  as one) nor a float or string that looks like one.

  Args:
    value: anything.
  Returns:
    The answer.
  """
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value: Any, what: str, minimum: Optional[int] = None,
              error: type = InputError, *, below: Optional[int] = None,
              usage: str = "") -> int:
  """Validates a count, size or index given as an argument: an integer (not a bool, not a
  float or string that looks like one), at least `minimum` and below `below`.

  Args:
    value: the argument.
    what: its name, for the message.
    minimum: the smallest value allowed; None: any.
    error: the `A2IError` subclass to raise (`ConfigError` for options).
    below: one past the largest value allowed (an index's count); None: any.
    usage: what the value is for, added to the message (e.g. "edit takes {index: value}").
  Returns:
    The value as a Python int.
  Raises:
    error: "{what}={value!r} is not valid; pass an integer of at least `minimum`" (or "in
      [`minimum`, `below`)"), then `usage`.
  """
  if (not is_integer(value)
      or minimum is not None and value < minimum or below is not None and value >= below):
    if below is not None:
      bounds = f" below {below}" if minimum is None else f" in [{minimum}, {below})"
    else:
      bounds = "" if minimum is None else f" of at least {minimum}"
    raise error(f"{what}={value!r} is not valid; pass an integer{bounds}"
                f"{'; ' + usage if usage else ''}.")
  return int(value)


@functools.cache
def _raw_key_shape() -> tuple:
  """The shape of an old-style key: (2,) unless JAX is set to another PRNG implementation."""
  return tuple(jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape)


def check_key(key: Any, what: str = "key") -> Any:
  """Validates a PRNG key: a new-style typed key (`jax.random.key(seed)`) or an old-style
  uint32 one (`jax.random.PRNGKey(seed)`). Only its dtype and shape are read, so it checks a
  traced key under `jit` too.

  Args:
    key: the argument.
    what: its name, for the message.
  Returns:
    The key, as given.
  Raises:
    InputError: anything else: an integer seed, several keys (a `jax.random.split` not
      unpacked), another array.
  """
  make = "jax.random.key(seed) (or the older jax.random.PRNGKey(seed))"
  if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
    raise InputError(f"{what}={int(key)} is a seed, not a PRNG key; pass "
                     f"{what}=jax.random.key({key}) (or jax.random.PRNGKey({key})).")
  dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
  if dtype is None or shape is None:
    raise InputError(f"{what} is a {type(key).__name__}, not a PRNG key; pass {make}.")
  shape, typed = tuple(shape), jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
  if shape == () and not typed and np.issubdtype(dtype, np.integer):  # A 0-d or traced seed.
    raise InputError(f"{what} is an integer scalar (a seed), not a PRNG key; pass "
                     f"{what}=jax.random.key(seed) (or jax.random.PRNGKey(seed)).")
  raw = _raw_key_shape()
  if shape == (() if typed else raw) and (typed or dtype == np.uint32):
    return key
  if typed or dtype == np.uint32 and len(shape) > len(raw) and shape[-len(raw):] == raw:
    raise InputError(f"{what} holds several PRNG keys (shape {shape}); pass one, e.g. "
                     f"{what}=keys[0] of keys = jax.random.split(key).")
  raise InputError(f"{what} is an array of dtype {dtype} and shape {shape}, not a PRNG key; "
                   f"pass {make}.")


# ------------------------------------------------------------------------------- image files

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


@functools.cache  # Asked once per file name of a folder.
def image_extensions() -> tuple[str, ...]:
  """The file name extensions of the formats PIL can open (lower case, with the dot).

  Returns:
    Sorted extensions, e.g. (".apng", ".avif", ".blp", ".bmp", ...); formats PIL can only
    write (PDF, ...) are left out, and so are those it opens only with an add-on: its stub
    formats (HDF5, GRIB, BUFR, WMF) and EPS without Ghostscript (was: an intact file called
    damaged, stopping a folder that holds one; a review finding), and MPEG, a video PIL
    only identifies (the same, of a clip among photos; a fault hunt's). Formats PIL opens through
    another's opener are in: MPO, a camera's multi-picture JPEG (was: ".mpo" skipped as no
    image, and one given alone refused with "rename it"; a fault hunt's finding).
  """
  Image.init()
  from PIL import EpsImagePlugin, ImageFile  # pylint: disable=import-outside-toplevel
  addons = {fmt for fmt, (factory, _) in Image.OPEN.items()
            if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)}
  if not EpsImagePlugin.has_ghostscript():
    addons.add("EPS")
  addons |= _IDENTIFIED_ONLY
  opens = lambda fmt: fmt in Image.OPEN or _OPENED_BY.get(fmt) in Image.OPEN
  return tuple(sorted(e for e, fmt in Image.registered_extensions().items()
                      if opens(fmt) and fmt not in addons))


# Formats PIL registers no opener of their own for: the one named opens them (and says which
# it found). MPO's `Image.open` is JPEG's.
_OPENED_BY = {"MPO": "JPEG"}

# Formats PIL opens (reads the size from the header) but has no decoder for.
_IDENTIFIED_ONLY = {"MPEG"}

# Image formats in common use that PIL cannot open (without a plug-in this library does not
# load), by extension: a file of one is named as such, with the fix, not as a file "not named
# as an image" to rename (was: "rename it", which makes no HEIC photo readable; a fault hunt's
# finding). Read only where `image_extensions` leaves the extension out.
_UNREADABLE_FORMATS = {
    ".heic": "HEIC", ".heif": "HEIF", ".hif": "HEIF", ".jxl": "JPEG XL", ".svg": "SVG",
    ".svgz": "SVG", ".eps": "EPS", ".ps": "PostScript", ".pdf": "PDF",
    ".exr": "OpenEXR", ".dng": "camera raw (DNG)", ".cr2": "camera raw (CR2)",
    ".cr3": "camera raw (CR3)", ".nef": "camera raw (NEF)", ".arw": "camera raw (ARW)",
    ".orf": "camera raw (ORF)", ".rw2": "camera raw (RW2)", ".raf": "camera raw (RAF)",
    ".mpg": "MPEG video", ".mpeg": "MPEG video", ".mp4": "MP4 video",
    ".mov": "QuickTime video", ".avi": "AVI video", ".mkv": "Matroska video",
    ".webm": "WebM video"}


def _unreadable_format(name: str) -> Optional[str]:
  """The format of an image file PIL cannot open here, from its name (any case); None for
  one it opens, or a name that is no image's."""
  ext = os.path.splitext(name)[1].lower()
  return None if ext in image_extensions() else _UNREADABLE_FORMATS.get(ext)


def is_image_name(name: str) -> bool:
  """Whether a file name has an extension of a format PIL opens (any case).

  Args:
    name: a file name or path.
  Returns:
    True for e.g. "a.PNG" or "b.tif"; False for "notes.txt" or ".DS_Store".
  """
  return os.path.splitext(name)[1].lower() in image_extensions()


def image_to_rgb(image: Any, faint_ok: bool = False) -> np.ndarray:
  """A loaded PIL image of any mode to uint8 RGB, by the rules in this module's docstring.

  Args:
    image: a PIL image (loaded).
    faint_ok: take a 16- or 32-bit integer image whose values all lie in 0..4095 (nearly
      black once scaled), as a mask's reader does, which names that case itself.
  Returns:
    uint8 [H, W, 3].
  Raises:
    InputError: a mode or value range that cannot be converted faithfully.
  """
  mode = image.mode
  # 1-bit: was left out, its transparent pixels kept white (a fault hunt's finding).
  if mode in ("P", "1", "L", "RGB") and "transparency" in image.info or mode in ("PA", "LA"):
    image, mode = image.convert("RGBA"), "RGBA"  # PIL applies the palette or colour key.
  if mode in ("L", "RGB"):
    return np.asarray(image.convert("RGB"), np.uint8)
  if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
    values = np.asarray(image)
    grey = _scaled_grey(values, mode, faint_ok)
    key = image.info.get("transparency")
    if isinstance(key, int) and not isinstance(key, bool):  # A colour key: over black too
      grey = np.where(values == key, 0, grey).astype(np.uint8)  # (was kept as grey).
    return np.repeat(grey[..., None], 3, axis=-1)
  if mode == "RGBA":
    rgba = np.asarray(image, np.uint16)
    return ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)
  if mode == "RGBa":  # Premultiplied alpha: colour x alpha already, i.e. over black.
    return np.array(np.asarray(image, np.uint8)[..., :3])
  if mode == "La":
    return np.repeat(np.asarray(image, np.uint8)[..., :1], 3, axis=-1)
  try:
    return np.asarray(image.convert("RGB"), np.uint8)
  except ValueError as e:
    raise InputError(f"images of PIL mode {mode!r} cannot be converted to RGB ({e}); save it "
                     "as an 8-bit RGB or greyscale PNG.") from None


# The brightest value of a 16-bit image that holds 12-bit (or 10-bit) data.
_MAX_NARROW = 4095


def _scaled_grey(values: np.ndarray, mode: str, faint_ok: bool = False) -> np.ndarray:
  """uint8 [H, W] from 16-bit, 32-bit integer or float pixel values, scaled to 0..255.

  An integer image whose values all lie in 1..255 is refused unless `faint_ok`: scaled, it
  reads at most 1 of 255, nearly black, and such values are 8-bit ones saved in a wider type
  far more often than a 16-bit image that dark (was: read nearly black, without a word). One
  whose brightest value lies in 256..4095 is refused alike (was read at most 16 of 255
  without a word; review finding): 10- and 12-bit data in a 16-bit file (cameras, scanners,
  medical images) are far more common than a 16-bit photo whose brightest pixel is at most
  1/16 of full scale, and a refusal names the one-line fix where a warning would let a black
  dataset train. It is refused, not warned of, as the 1..255 case is.
  """
  v = values.astype(np.float64)
  lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
  if mode == "F":
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
      raise InputError(f"a floating-point (PIL mode 'F') image must lie in [0, 1]; this one "
                       f"ranges over [{lo:g}, {hi:g}]. Save it as an 8- or 16-bit image.")
    full = 1.0
  else:
    if lo < 0 or hi > 65535:
      raise InputError(f"a 32-bit integer (PIL mode 'I') image is read as 16-bit (0..65535); "
                       f"this one ranges over [{lo:g}, {hi:g}]. Save it as an 8- or 16-bit "
                       "image.")
    wide = "16-bit" if mode in _SIXTEEN_BIT_MODES else "16- or 32-bit integer"
    if 0 < hi <= 255 and not faint_ok:
      raise InputError(f"a {wide} image whose "
                       f"values all lie in 0..{hi:g} (of 0..65535) would read nearly black; "
                       "if they are 8-bit values, save it as an 8-bit image (or scale them "
                       "by 257).")
    if 255 < hi <= _MAX_NARROW and not faint_ok:  # Was read nearly black (review finding).
      raise InputError(f"a {wide} image whose values all lie in 0..{hi:g} (of 0..65535) would "
                       f"read nearly black (at most {round(hi * 255 / 65535)} of 255); if they "
                       "are 10- or 12-bit values (a camera's or scanner's, in a 16-bit file), "
                       "scale them to 16 bits (by 64 or 16) or save it as an 8-bit image.")
    full = 65535.0
  return np.floor(v * (255.0 / full) + 0.5).astype(np.uint8)


def read_image(path: str, error: type = InputError, size: Optional[int] = None,
               faint_ok: bool = False) -> np.ndarray:
  """Reads one image file of any format, mode and bit depth PIL opens, as uint8 RGB.

  The one reader of image files (infer.py's `--input`, folder datasets); the conversion
  rules are in this module's docstring.

  Args:
    path: the file (a str or a `pathlib.Path`).
    error: the `A2IError` subclass to raise (`InputError` for user inputs, `DataError`
      for datasets).
    size: S, where only S x S images are taken: any other size is refused from the file's
      header, before the pixels are decoded. None: any size (up to the pixel bound).
    faint_ok: `image_to_rgb`'s (masks: 16-bit 0/1 label maps are named by their reader).
  Returns:
    uint8 [H, W, 3].
  Raises:
    error: naming `path`: a folder, an empty, damaged or truncated file (truncated also
      where `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` is set), not an image, a mode or value
      range that cannot be converted faithfully, more pixels than the reader's bound
      (`too_many_pixels`), or a size other than `size`.
  """
  path = os.fspath(path)  # A pathlib.Path: was a TypeError in the handler of any error below.
  name = shown_path(path)
  if os.path.isdir(path):
    raise error(f"{name} is a folder, not an image file; move it out or rename it.")
  if os.path.islink(path) and not os.path.exists(path):
    raise error(f"{name} is a link to nothing ({shown_path(os.readlink(path))}); fix the link or "
                "remove it.")
  try:
    if os.path.getsize(path) == 0:
      raise error(f"{name} is empty (0 bytes), not an image; replace or remove it.")
    # PIL warns (two lines) between half its bound and the bound, then decodes all the same;
    # over the bound it raises, which is the one line below. Not thread-safe, as no
    # `catch_warnings` is; the readers run in one thread.
    with warnings.catch_warnings(), truncated_refused():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      # From a file object, not the path: PIL memory-maps an uncompressed TIFF opened by
      # path at its size as shown, so one turned by its EXIF orientation (5-8, not square;
      # modes L, P, RGBA, CMYK, I;16) read scrambled at its stored size (a fault hunt's
      # finding). Opened from a file object it is read, then turned, right.
      with open(path, "rb") as f, Image.open(f) as im:  # Lazy: the header only, so far.
        if size is not None and im.size != (size, size):  # Square: EXIF turns change nothing.
          try:  # As a viewer shows it (review: was the stored size).
            w, h = shown_size(im)
          except (OSError, ValueError):  # The EXIF block unreadable (a PNG's is at its end).
            w, h = im.size
          # A crop cannot make a smaller image larger (was told "Crop or resize" all the same).
          fix = "Resize it" if min(w, h) < size else "Crop or resize it"
          raise error(f"{name} is {w}x{h}; this model takes {size}x{size} images. {fix} to "
                      f"{size}x{size} first.")
        # Animated or multi-page: the first frame, where `Image.open` leaves every format
        # (was `im.seek(0)`, which a PSD refuses, its frames counted from 1: every Photoshop
        # file was called damaged; a fault hunt's finding).
        _scale_grey_key(im)
        _key_sixteen_bit_rgb(im, path)
        shown = _turned_size(im)
        im.load()
        upright = ImageOps.exif_transpose(im)
        if shown is not None and upright.size != shown:  # A safety net for PIL's misreads.
          raise InputError(f"{name} decoded as {upright.width}x{upright.height}, but its "
                           f"header says {shown[0]}x{shown[1]} (turned by its EXIF "
                           "orientation), so PIL misread it; save it upright as a PNG "
                           "(PIL: ImageOps.exif_transpose(Image.open(path)).save(...)).")
        return image_to_rgb(upright, faint_ok)
  except A2IError as e:
    raise error(str(e) if str(e).startswith(name) else f"{name}: {e}") from None
  except UnidentifiedImageError:
    raise error(f"{name} is not an image PIL can read (it has no known image format); "
                "replace or remove it.") from None
  except Image.DecompressionBombError as e:  # An intact image, over PIL's size guard.
    raise error(too_many_pixels(name, e, size)) from None
  except OSError as e:
    if e.strerror:  # The file system's refusal (permissions, I/O), not PIL's.
      raise error(f"cannot read {name} ({e.strerror}).") from None
    raise error(f"{name} could not be decoded ({e}); the file is damaged or incomplete. "
                "Replace or remove it.") from None
  except Exception as e:  # pylint: disable=broad-except
    # PIL's decoders raise many types for damaged files (SyntaxError, struct.error, ...).
    raise error(f"{name} could not be decoded ({type(e).__name__}: {e}); the file is damaged "
                "or incomplete. Replace or remove it.") from None


def _turned_size(im: Any) -> Optional[tuple[int, int]]:
  """The (width, height) as shown of an opened, not yet loaded PIL image whose EXIF
  orientation turns it a quarter (5-8, `shown_size`), from its header; None for any other
  image, or one whose EXIF block cannot be read here (`exif_transpose` names that)."""
  try:
    turned = im.getexif().get(0x0112) in (5, 6, 7, 8)
    return shown_size(im) if turned else None
  except (OSError, ValueError):
    return None


def _scale_grey_key(im: Any) -> None:
  """Scales the transparent grey of a 2- or 4-bit grey PNG (an opened, not yet loaded PIL
  image) to the 8-bit pixels PIL reads: PIL keeps the file's own value (3 of 0..3), which
  matched no pixel (its 255), so transparent pixels were kept as grey (a fault hunt's
  finding). Any other image is left as it is."""
  key = im.info.get("transparency")
  if im.format != "PNG" or im.mode != "L" or not im.tile or not isinstance(key, int):
    return
  bits = {"L;2": 2, "L;4": 4}.get(im.tile[0][3])
  if bits:
    im.info["transparency"] = key * 255 // (2 ** bits - 1)


def _key_sixteen_bit_rgb(im: Any, path: str) -> None:
  """Loads a 16-bit RGB PNG with a transparent colour (a tRNS key; an opened, not yet loaded
  PIL image of `path`) as RGBA, transparent exactly where all three 16-bit samples equal the
  key. Any other image is left as it is.

  Was: PIL compared the 16-bit key with the pixels cut to 8 bits, so keyed pixels stayed
  visible (unless each sample was a multiple of 257) and opaque ones that shared the key's
  top bytes turned black (a fault hunt's finding). PIL keeps 8 bits of a sample, its high
  byte; the low bytes come from decoding the file again as little-endian ("RGB;16L" takes
  a sample's second byte), the same filters and interlacing undone.
  """
  key = im.info.get("transparency")
  if (im.format != "PNG" or im.mode != "RGB" or not im.tile or not isinstance(key, tuple)
      or im.tile[0][3] != "RGB;16B"):
    return
  im.load()  # Damaged: named by `read_image`, as for any file, before the second decode.
  try:
    with Image.open(path) as low:
      # A named tuple from Pillow 11 on, a plain one before (pillow>=10).
      low.tile = [type(t)(*t[:3], "RGB;16L", *t[4:]) if hasattr(t, "_replace")
                  else (*t[:3], "RGB;16L", *t[4:]) for t in low.tile]
      low.load()
      samples = np.asarray(im, np.uint16) << 8 | np.asarray(low, np.uint16)
  except (OSError, ValueError) as e:  # A PIL without that decoder: refused, not misread.
    raise InputError(f"a 16-bit RGB PNG with a transparent colour (a tRNS key) cannot be "
                     f"read exactly by this PIL ({e}); save it with an alpha channel (RGBA) "
                     "instead of a colour key.") from None
  opaque = (samples != np.asarray(key, np.uint16)).any(axis=-1)
  del im.info["transparency"]  # Now the alpha's, which `image_to_rgb` composites.
  im.putalpha(Image.fromarray(np.where(opaque, 255, 0).astype(np.uint8), "L"))


@contextlib.contextmanager
def truncated_refused() -> Iterator[None]:
  """PIL's `ImageFile.LOAD_TRUNCATED_IMAGES` off while a file is read, and as it was after.

  Set (by a notebook, on the web's common advice for "image file is truncated", or by a
  library: tensorflow_datasets' thumbnails set it for good), it has PIL fill what a truncated
  file lacks with grey or black and say nothing: such files were read as intact images (a
  fault hunt's finding). Used by `read_image` and by the dataset builders' reading of their
  source images (`data.tfds_lib.read_source_image`). Not thread-safe, as `read_image` is not.

  Yields:
    Nothing; inside the block a truncated file is PIL's error, not a filled image.
  """
  from PIL import ImageFile  # pylint: disable=import-outside-toplevel
  was = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    yield
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = was


def too_many_pixels(path: str, e: Exception, size: Optional[int] = None) -> str:
  """The message for an image PIL refuses to decode for its size (`DecompressionBombError`).

  Args:
    path: the file.
    e: PIL's error (its text gives the pixel count and the bound).
    size: S, where the image is to be S x S (infer.py's `--input`); None: any size.
  Returns:
    One line naming the file, its pixels, the bound and the fix: to shrink it (to S x S)
    first. (Was: to raise `PIL.Image.MAX_IMAGE_PIXELS`, which decodes it all, gigabytes, to
    resize it; a fault hunt's finding.)
  """
  numbers = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(e))
  what = (f"{int(numbers[1]):,} pixels, over the bound of {int(numbers[2]):,} that images are "
          "decoded up to" if numbers else str(e).rstrip("."))
  fix = (f"this model takes {size}x{size} images: resize it to {size}x{size} first"
         if size else "shrink it first")
  return (f"{path} is too large for PIL to decode ({what}: twice PIL.Image.MAX_IMAGE_PIXELS, "
          f"a guard against decompression bombs); {fix} (any image editor does).")


def image_files(path: str, what: str = "--input") -> list[str]:
  """The image files `path` names: itself, or the images of a folder (sorted by name).

  One rule for both: a file is an image when its extension is one PIL opens
  (`image_extensions`). A folder's other entries are skipped with one warning that names
  them, never silently; a folder named like an image is an error.

  Args:
    path: an image file or a folder of them.
    what: the flag or argument name, for the messages.
  Returns:
    The image paths.
  Raises:
    InputError: `path` does not exist (or is a link to nothing), is a file with no image
      extension or of a format PIL cannot read (HEIC, SVG, camera raw, ...), is a folder
      that cannot be listed, holding no images or a folder with an image's name.
  """
  hint = "an image extension such as .png, .jpg, .tif or .webp"
  path = os.fspath(path)
  if os.path.islink(path) and not os.path.exists(path):  # Was: "does not exist", no more.
    raise InputError(f"{what} {shown_path(path)} is a link to nothing "
                     f"({shown_path(os.readlink(path))}); fix the link or pass another {what}.")
  if not os.path.exists(path):
    raise InputError(f"{what} {shown_path(path)} does not exist.")
  if not os.path.isdir(path):
    if not is_image_name(path):
      fmt = _unreadable_format(path)
      if fmt:
        an = ("SVG", "EPS", "MPEG", "MP4", "AVI", "OpenEXR")  # Said with a vowel first.
        article = "an" if fmt.split()[0] in an else "a"
        also = (" (or install Ghostscript, with which PIL reads it)"
                if fmt in ("EPS", "PostScript") else "")
        fix = ("save the frame you want as PNG or JPEG first" if fmt.endswith(" video") else
               f"convert it to PNG or JPEG first{also}")
        raise InputError(f"{what} {shown_path(path)} is {article} {fmt} file, a format PIL cannot "
                         f"read; {fix}.")
      raise InputError(f"{what} {shown_path(path)} is not named as an image ({hint}); rename it.")
    return [path]
  try:  # Was a PermissionError traceback for a folder one may not list (fault hunt).
    names = sorted(os.listdir(path))
  except OSError as e:
    raise InputError(f"cannot list {what} {shown_path(path)} ({e.strerror or e}); pass a folder "
                     "you can read.") from None
  # macOS's AppleDouble files ("._photo.jpg", beside every copied file) are no images.
  taken = lambda n: is_image_name(n) and not n.startswith("._")
  images = [os.path.join(path, n) for n in names if taken(n)]
  for f in images:
    if os.path.isdir(f):
      raise InputError(f"{what}: {shown_path(f)} is a folder, not an image file; move it out of "
                       f"{shown_path(path)}.")
  skipped = [n for n in names if not taken(n)]
  if skipped:
    logging.warning("%s %s: %d entr%s that %s no image (%s wanted) skipped: %s", what,
                    shown_path(path), len(skipped), "y" if len(skipped) == 1 else "ies",
                    "is" if len(skipped) == 1 else "are", hint,
                    ", ".join(map(shown_path, skipped[:5])) + (", ..." if len(skipped) > 5 else ""))
  if not images:
    unreadable = [n for n in skipped if not n.startswith("._") and _unreadable_format(n)]
    if unreadable:  # Was: "holds no images", of a folder of HEIC photos.
      formats = sorted({_unreadable_format(n) for n in unreadable})
      raise InputError(f"{what} {shown_path(path)} holds no images PIL can read, but "
                       f"{len(unreadable)} {' and '.join(formats)} file"
                       f"{'s' if len(unreadable) > 1 else ''} ("
                       f"{', '.join(map(shown_path, unreadable[:3]))}"
                       f"{', ...' if len(unreadable) > 3 else ''}); convert "
                       f"{'them' if len(unreadable) > 1 else 'it'} to PNG or JPEG first.")
    raise InputError(f"{what} {shown_path(path)} holds no images ({hint}).")
  return images


def shown_path(path: Any) -> str:
  """A path as messages show it: as it is, or quoted with escapes where it holds a character
  that prints as none (a line break would split the one `error:` line; a fault hunt's
  finding). Used by the inputs' and the datasets' messages alike.

  Args:
    path: a path (str, bytes or os.PathLike; anything else as `str` gives it).
  Returns:
    The text.
  """
  text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
  return text if text.isprintable() else ascii(text)


def read_images(paths: Sequence[str], image_size: int) -> np.ndarray:
  """Reads image files with `read_image` and stacks them, checking their size.

  Args:
    paths: the files (e.g. from `image_files`).
    image_size: S, the size every image must have.
  Returns:
    uint8 [N, S, S, 3].
  Raises:
    InputError: no files, a file that cannot be read, or of another size (from its header,
      before the pixels are decoded).
  """
  # One path: its characters were taken for files. Any iterable (a glob's) is taken.
  paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
  if not paths:  # Was NumPy's "need at least one array to stack" (review).
    raise InputError("no image files to read; pass one or more paths (e.g. "
                     "inputs.image_files(folder)).")
  # Each file's size is read from its header and any other refused before it is decoded
  # (was: a 10000 x 10000 PNG decoded, 300 MB, PIL's two-line warning, to be refused).
  return np.stack([read_image(f, size=image_size) for f in paths])


def check_output_folder(path: str, what: str = "--out") -> None:
  """Refuses an output folder that cannot be written, before any work, without creating it.

  Args:
    path: the folder (it may not exist yet).
    what: the flag or argument name, for the messages.
  Raises:
    InputError: `path` is a file, lies under a file, is or lies under a symbolic link to
      nothing, names a folder longer than the file system allows, or its nearest existing
      folder refuses a new file (read-only, permissions).
  """
  full = os.path.abspath(os.path.expanduser(path))
  if os.path.exists(full) and not os.path.isdir(full):
    raise InputError(f"{what} {path} is a file; pass a folder (it is created if missing).")
  # Was: passed (the link's folder writable), then, after the restore, "could not write ...
  # (File exists); free some space" when the folder was made (fault hunt), as train.py's
  # --workdir was before `files.check_workdir`.
  link = files._dangling_link(full)  # pylint: disable=protected-access
  if link is not None:
    where, fix = files._link_to_nothing(link)  # pylint: disable=protected-access
    raise InputError(f"{what} {path}: {link} is a symbolic link to {where}; {fix}, or pass "
                     f"another {what}.")
  existing = files.nearest_existing(full)
  if not os.path.isdir(existing):
    raise InputError(f"{what} {path}: {existing} is a file, so the folder cannot be made "
                     f"there; pass another {what}.")
  # Was: passed, then, after the restore, "could not write ... (File name too long); free
  # some space" when the folder was made (a fault hunt's finding).
  try:
    limit = os.pathconf(existing, "PC_NAME_MAX")
  except (OSError, ValueError):
    limit = 255  # What every common file system allows.
  for part in os.path.relpath(full, existing).split(os.sep):
    if len(os.fsencode(part)) > limit:
      raise InputError(f"{what} {shown_path(path)}: the folder name {shown_path(part[:20])}... is "
                       f"{len(os.fsencode(part))} bytes long, over the {limit} this file "
                       f"system allows; pass a shorter {what}.")
  try:  # Root may write where permissions say no, so try rather than ask os.access.
    fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise InputError(f"cannot write to {what} {path} ({e.strerror or e} in {existing}); pass "
                     f"{what}=a folder you can write to.") from None
