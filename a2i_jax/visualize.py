"""Image grids written as PNG."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

from a2i_jax import files
from a2i_jax.errors import InputError
from a2i_jax.inputs import (SIGNED_SLACK, as_array, check_int, check_range, to_uint8,
                            to_unit)


def make_grid(images: np.ndarray, ncols: int, pad: int = 1, scale: int = 1) -> np.ndarray:
  """Tiles images into a grid.

  Args:
    images: [N,H,W,3] (or grey, [N,H,W] or [N,H,W,1]) floats in [0,1] (clipped) or uint8.
    ncols: images per row; more than N is taken as N (the one row's images stay where they
      are, without the white of the columns no image fills).
    pad: pixels of white between images.
    scale: integer nearest-neighbour magnification.
  Returns:
    uint8 [rows*(H*scale+pad)+pad, min(ncols, N)*(W*scale+pad)+pad, 3].
  Raises:
    InputError: another shape (e.g. channels first), dtype or value range (floats outside
      [0, 1], NaN), a count below 1, images of no pixels (H or W 0), or a grid (its scale,
      pad) larger than this machine's memory.
  """
  ncols, scale, pad = (check_int(v, name, low) for v, name, low in
                       ((ncols, "ncols", 1), (scale, "scale", 1), (pad, "pad", 0)))
  images = as_array(images, "images")  # A ragged list was NumPy's ValueError.
  shape = images.shape
  if images.dtype.name == "bfloat16":  # NumPy counts it as no float kind.
    images = images.astype(np.float32)
  if images.ndim == 3 and shape[-1] in (1, 3):  # Was tiled as H grey images W x 3 (or 1).
    raise InputError(f"images have shape {shape}: one {'RGB' if shape[-1] == 3 else 'grey'} "
                     "image? A grid takes [N, H, W, 3] (pass images[None]) or grey [N, H, W].")
  if images.ndim == 4 and shape[-1] == 1:  # Grey with its channel: masks, gates.
    images = images[..., 0]
  grey = images.ndim == 3
  if grey:  # Each tile takes its value in all three channels (was: a copy of all, 3x).
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] != (1 if grey else 3):
    hint = (" (channels first? pass images.transpose(0, 2, 3, 1))"
            if images.ndim == 4 and images.shape[1] == 3 else
            # progression's [L, K, S, S, 3] and swap's grid (was the bare refusal).
            f" (rows of images, as progression and swap give? pass images.reshape((-1,) + "
            f"images.shape[2:]) with ncols={shape[1]})" if images.ndim == 5 and shape[-1] == 3
            else "")
    raise InputError(f"images have shape {shape}; a grid takes [N, H, W, 3] RGB (or [N, H, W] "
                     f"grey){hint}.")
  if images.dtype != np.uint8:
    if not np.issubdtype(images.dtype, np.floating):
      raise InputError(f"images have dtype {images.dtype}; pass uint8 in [0, 255] or floats "
                       "in [0, 1].")
    # Rounding's slack only: [-1, 1] or 0 .. 255 floats would be clipped to another picture.
    check_range(images, -SIGNED_SLACK, 1.0 + SIGNED_SLACK, "float images must lie in "
                 "[0, 1]", "pass (x + 1) / 2 for the models' [-1, 1], x / 255 for 0 .. 255")
  if not images.shape[0]:  # Was a blank strip written as the grid.
    raise InputError("no images to tile (N = 0); a grid needs at least one.")
  if not images.size:  # Was a grid of padding alone, written without a word (fault hunt).
    raise InputError(f"images have shape {shape}: no pixels (height or width 0); pass images "
                     "of at least 1 x 1 pixels.")
  n, h, w = images.shape[0], images.shape[1] * scale, images.shape[2] * scale
  # Was: a mostly white grid (ncols=8 for 2 images: six empty columns), without a word;
  # ncols=10**12 NumPy's MemoryError.
  ncols = min(ncols, n)
  rows = -(-n // ncols)
  shape = (rows * (h + pad) + pad, ncols * (w + pad) + pad, 3)
  # The grid and the images as uint8 (a tile at a time scaled: was a scaled copy of all, and
  # with the float copies infer.py made, 16 of each image: a grid of 10,000 reconstructions
  # ran out of memory after their hours of inference; fault hunt).
  nbytes = math.prod(shape) + (images.size if images.dtype != np.uint8 else 0)
  memory = files.host_memory()
  if memory is not None and nbytes > memory:
    raise _too_large(images.shape, shape, nbytes)
  try:
    images = to_uint8(images)
    grid = np.full(shape, 255, np.uint8)
  except MemoryError:  # Below the machine's memory, but not to be had (as occlusions' masks).
    raise _too_large(images.shape, shape, nbytes) from None
  except ValueError as e:  # NumPy's "array is too big" (more bytes than an address holds).
    if isinstance(e, InputError):
      raise
    raise _too_large(images.shape, shape, nbytes) from None
  for i in range(n):
    r, c = divmod(i, ncols)
    tile = images[i] if scale == 1 else images[i].repeat(scale, axis=0).repeat(scale, axis=1)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + c * (w + pad):pad + c * (w + pad) + w] = tile  # Grey: broadcast to RGB.
  return grid


class GridTooLargeError(InputError):
  """`make_grid`'s refusal of a grid larger than this machine's memory. `reason` is the
  message without its advice, for a caller whose users have other settings to change
  (infer.py: --num_images, not a scale or a pad)."""

  def __init__(self, reason: str):
    super().__init__(f"{reason}; ask for a smaller scale or pad, or tile fewer images at a "
                     "time.")
    self.reason = reason


def _too_large(images: tuple[int, ...], grid: tuple[int, ...],
               nbytes: int) -> GridTooLargeError:
  """The error for a grid of `nbytes` that cannot be made: was NumPy's "Unable to allocate
  698. TiB" for a huge scale or pad (review finding)."""
  return GridTooLargeError(
      f"a grid of {images[0]} images of {images[1]}x{images[2]} pixels is {grid[0]} x "
      f"{grid[1]} pixels as scaled and padded and takes {nbytes / 2**30:,.1f} GiB, more than "
      "this machine can give")


def save_png(array: np.ndarray, path: str) -> None:
  """Writes a uint8 image atomically.

  Args:
    array: uint8 [H, W, 3] (or [H, W]).
    path: the PNG file; its folder is created.
  Raises:
    InputError: a path not ending in .png (its bytes would be PNG's under another name), a
      path that is a folder or lies inside a file, or an array that is not uint8 [H, W, 3]
      or [H, W] with H, W >= 1.
  """
  if not str(path).lower().endswith(".png"):
    raise InputError(f"{path}: the grid is written as PNG; name the file .png.")
  array = np.asarray(array)  # Was PIL's TypeError or ValueError, after the folder was made.
  if (array.dtype != np.uint8 or array.ndim not in (2, 3) or array.ndim == 3
      and array.shape[-1] != 3 or not array.size):
    raise InputError(f"save_png takes uint8 [H, W, 3] or [H, W]; got {array.dtype} "
                     f"{array.shape} (make_grid makes one from images).")
  files.check_output_file(path, "PNG", "grid.png", InputError)
  with files.atomic_path(path, suffix=".png") as tmp:
    Image.fromarray(array).save(tmp)


def save_grid(images: np.ndarray, path: str, ncols: int, scale: int = 2) -> np.ndarray:
  """`make_grid` then `save_png`.

  Args:
    images: [N, H, W, 3] floats in [0, 1] or uint8.
    path: the PNG file.
    ncols: images per row.
    scale: integer nearest-neighbour magnification.
  Returns:
    The grid written, uint8 [H', W', 3].
  Raises:
    InputError: as `make_grid` and `save_png`.
  """
  grid = make_grid(images, ncols, scale=scale)
  save_png(grid, path)
  return grid


def stack_columns(columns: Sequence[np.ndarray]) -> np.ndarray:
  """Interleaves K arrays so a grid with ncols=K shows one example per row, the arrays as columns.

  Args:
    columns: K arrays [N, H, W, 3] (e.g. input, reconstruction, truth), uint8 or floats in
      [0, 1]; where their dtypes differ (uint8 inputs beside [0, 1] outputs), each is
      converted to floats in [0, 1] first.
  Returns:
    [N*K, H, W, 3], row-major: example 0's K images first.
  Raises:
    InputError: no columns, columns of other shapes, or, where the dtypes differ, a column
      that is neither uint8 nor floats in [0, 1].
  """
  # Were NumPy's ValueErrors, and uint8 inputs beside [0, 1] outputs stacked as 0 .. 255
  # floats, which make_grid refused with "divide by 255": that blackened the outputs.
  listed = isinstance(columns, Sequence) and not isinstance(columns, (str, np.ndarray))
  if not listed or not columns:
    got = "an empty list" if listed else f"a {type(columns).__name__}"
    raise InputError(f"stack_columns takes a list of K arrays [N, H, W, 3], e.g. [inputs, "
                     f"out['reconstruction']]; got {got}.")
  arrays = [as_array(c, f"column {i}") for i, c in enumerate(columns)]
  shapes = [a.shape for a in arrays]
  if len(set(shapes)) > 1:
    raise InputError(f"stack_columns takes columns of one shape [N, H, W, 3]; got "
                     f"{', '.join(map(str, shapes))} (one image per row and column: the same N, "
                     "size and channels).")
  if len({a.dtype for a in arrays}) > 1:
    arrays = [to_unit(a) for a in arrays]
  return np.stack(arrays, axis=1).reshape((-1,) + arrays[0].shape[1:])
