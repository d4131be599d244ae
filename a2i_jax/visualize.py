"""Image grids written as PNG."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from a2i_jax import files
from a2i_jax.inputs import to_uint8


def make_grid(images: np.ndarray, ncols: int, pad: int = 1, scale: int = 1) -> np.ndarray:
  """Tiles images into a grid.

  Args:
    images: [N,H,W,3] (or [N,H,W]) floats in [0,1] (clipped) or uint8.
    ncols: images per row.
    pad: pixels of white between images.
    scale: integer nearest-neighbour magnification.
  Returns:
    uint8 [rows*(H+pad)+pad, ncols*(W+pad)+pad, 3].
  """
  images = np.asarray(images)
  if images.ndim == 3:
    images = np.repeat(images[..., None], 3, axis=-1)
  images = to_uint8(images)
  if scale > 1:
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
  n, h, w, _ = images.shape
  rows = -(-n // ncols)
  grid = np.full((rows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
  for i in range(n):
    r, c = divmod(i, ncols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + c * (w + pad):pad + c * (w + pad) + w] = images[i]
  return grid


def save_png(array: np.ndarray, path: str) -> None:
  """Writes a uint8 image atomically.

  Args:
    array: uint8 [H, W, 3] (or [H, W]).
    path: the PNG file; its folder is created.
  """
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
  """
  grid = make_grid(images, ncols, scale=scale)
  save_png(grid, path)
  return grid


def stack_columns(columns: Sequence[np.ndarray]) -> np.ndarray:
  """Interleaves K arrays so a grid with ncols=K shows one example per row, the arrays as columns.

  Args:
    columns: K arrays [N, H, W, 3] (e.g. input, reconstruction, truth).
  Returns:
    [N*K, H, W, 3], row-major: example 0's K images first.
  """
  return np.stack(columns, axis=1).reshape((-1,) + columns[0].shape[1:])
