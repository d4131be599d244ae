"""Completion masks: which pixels the generator sees (observed) and which it must fill (hidden).

Every mask is float32 [N, S, S, 1] with **1 = observed** and **0 = hidden**, so the energy of
posterior inference multiplies its per-pixel error by the mask, and completion keeps
`mask * image + (1 - mask) * generated`.

Two families:

- Named regions of aligned faces (`FACE_OCCLUSIONS`): `eyes`, `mouth`, `face` (a centre box
  from the eyebrows to the chin) and the four halves. Boxes are written below in pixels of a
  64x64 image as (top, left, bottom, right), bottom and right exclusive, one table per face
  dataset because the synthetic cartoon faces and the LFW crops put the features at different
  heights (`regions_for`). The halves are the same for every dataset.
- Random regions for any dataset (`GENERIC_OCCLUSIONS`): `block8` and `block16` (one square of
  that side at 64x64, i.e. S/8 and S/4 at size S, anywhere fully inside the image) and
  `random_rect` (height and width each uniform in [ceil(S/4), floor(S/2)], anywhere inside).
  They come from `numpy.random.default_rng(seed)`, so a seed gives the same masks every time.

Scaling rule: a 64x64 edge e becomes round_half_up(e * S / 64) at size S. Edges the boxes share
map to the same pixel, so the halves still partition the image at any size, and at S = 32 every
edge is exact (all the 64x64 edges are even). A box never shrinks below one pixel.

The tables, scaled to 64 and 32, are in docs/occlusions.md (`python docs/make_occlusions.py`
writes it with `markdown_table`).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from a2i_jax.errors import InputError
from a2i_jax.inputs import (SIGNED_SLACK, as_array, check_int, check_range, is_integer,
                            mask_to_unit, to_unit)

Box = tuple[int, int, int, int]  # (top, left, bottom, right) in pixels; bottom, right exclusive

_REF = 64  # the boxes below are in pixels of a _REF x _REF image

HALVES: Mapping[str, Box] = {
    "upper_half": (0, 0, 32, 64),
    "lower_half": (32, 0, 64, 64),
    "left_half": (0, 0, 64, 32),  # the image's left (the subject's right)
    "right_half": (0, 32, 64, 64),
}

# LFW: lfw-funneled 250x250 images, centre-cropped to 150x150 (rows and columns 50..200,
# `CROP_BOX` of a2i_jax/data/lfw.py) and resized to 64x64. A 250x250 coordinate c maps to
# (c - 50) * 64 / 150. Funnelling (congealing) aligns each face to a common frame: the eye
# centres land near row 113 and columns 104 / 146 (interocular ~42 px, eyes ~25 px wide), the
# mouth centre near row 166, column 125 (~48 px wide), eyebrows near row 95 and the chin near
# row 195. Funnelling is a rough alignment (a few pixels of spread), so each box adds a
# margin of about 8 px of the 250x250 image:
#   eyes   rows 100..128, cols  84..166  -> (21.3, 14.5, 33.3, 49.5) -> (20, 14, 34, 50)
#   mouth  rows 150..182, cols 100..150  -> (42.7, 21.3, 56.3, 42.7) -> (42, 20, 58, 44)
#   face   rows  90..194, cols  84..166  -> (17.1, 14.5, 61.4, 49.5) -> (16, 14, 62, 50)
# rounding outward (top/left down, bottom/right up) to even pixels, so the feature stays
# covered and every edge is exact at 32x32. If the LFW crop ever changes, recompute these
# with the same map.
_LFW_BOXES: Mapping[str, Box] = {
    "eyes": (20, 14, 34, 50),
    "mouth": (42, 20, 58, 44),
    "face": (16, 14, 62, 50),
}

# Synthetic cartoon faces (a2i_jax/data/synthetic.py): measured, not derived. 2,000 faces were
# rendered at 64x64 twice with one attribute changed and the same nuisance draws (eyes_open
# 0 vs 1; smile -1 vs +1; skin_tone -1 vs +1 with hat, beard and glasses off). Each box
# covers the 2nd..98th percentiles of the per-image bounding boxes of the changed pixels,
# widened to even pixels:
#   eyes   changed pixels from top 28, left 19 to bottom 39, right 45 (medians 30, 22, 37, 42)
#   mouth  changed pixels from top 39, left 21 to bottom 55, right 43 (medians 42, 25, 52, 39)
#   face   skin from row 15..20 (top) to the chin near row 54, columns 12..52; the box keeps
#          the centre (eyes, nose, mouth) and leaves the outer cheeks and the hair observed.
# The synthetic faces sit lower and smaller than the LFW crops (eye centres at row ~34 vs
# ~27), and their mouth region is taller because `smile` bends it from a frown to an open smile.
_SYNTHETIC_BOXES: Mapping[str, Box] = {
    "eyes": (28, 18, 40, 46),
    "mouth": (38, 20, 56, 44),
    "face": (22, 16, 56, 48),
}

_FACE_TABLES: Mapping[str, Mapping[str, Box]] = {
    "lfw": {**_LFW_BOXES, **HALVES},
    "synthetic": {**_SYNTHETIC_BOXES, **HALVES},
}
FACE_DATASETS: tuple[str, ...] = tuple(_FACE_TABLES)

FACE_OCCLUSIONS: tuple[str, ...] = ("eyes", "mouth", "face", "upper_half", "lower_half",
                                    "left_half", "right_half")
GENERIC_OCCLUSIONS: tuple[str, ...] = ("block8", "block16", "random_rect")
OCCLUSION_NAMES: tuple[str, ...] = FACE_OCCLUSIONS + GENERIC_OCCLUSIONS

_BLOCK_SIDES = {"block8": 8, "block16": 16}  # side at 64x64


def _scale_edge(e: int, image_size: int) -> int:
  # Round half up (not numpy's half-to-even) so the rule is the one the docstring states.
  return int(np.floor(e * image_size / _REF + 0.5))


def scale_box(box: Box, image_size: int) -> Box:
  """Scales a (top, left, bottom, right) box from 64x64 to image_size x image_size.

  Args:
    box: pixels of a 64x64 image, bottom and right exclusive: 4 integers with
      0 <= top < bottom <= 64 and 0 <= left < right <= 64.
    image_size: the target S, a positive integer.
  Returns:
    The box at size S: every edge rounded half up from e * S / 64, at least one pixel high
    and wide, and inside [0, S].
  Raises:
    InputError: an image size that is not a positive integer, or a box that is not 4
      integers, is inverted or empty, or lies outside the 64x64 image.
  """
  image_size = check_int(image_size, "image_size", 1)  # Was: 0 gave (-1, -1, 0, 0).
  box = _check_box(box)
  t, l, b, r = (_scale_edge(e, image_size) for e in box)
  b, r = max(b, t + 1), max(r, l + 1)
  return (min(t, image_size - 1), min(l, image_size - 1), min(b, image_size),
          min(r, image_size))


def _check_box(box: Box) -> Box:
  """`box` as 4 ints, refused unless 0 <= top < bottom <= 64 and 0 <= left < right <= 64.
  Was: an inverted box (10, 10, 0, 0) "fixed" to (10, 10, 11, 11) without a word."""
  try:
    edges = tuple(box)
  except TypeError:
    edges = ()
  if len(edges) != 4 or not all(is_integer(e) for e in edges):
    raise InputError(f"box {box!r} is not 4 integers; pass (top, left, bottom, right) in pixels "
                     f"of a {_REF}x{_REF} image.")
  t, l, b, r = (int(e) for e in edges)
  if not (0 <= t < b <= _REF and 0 <= l < r <= _REF):
    raise InputError(f"box {box!r} is inverted, empty or outside the {_REF}x{_REF} image; pass "
                     f"(top, left, bottom, right) with 0 <= top < bottom <= {_REF} and 0 <= left "
                     f"< right <= {_REF} (bottom and right exclusive).")
  return t, l, b, r


def _check_name(name: str) -> None:
  if not isinstance(name, str) or name not in OCCLUSION_NAMES:
    raise InputError(f"unknown occlusion {name!r}; choose one of {', '.join(OCCLUSION_NAMES)}.")


def check_names(names: Sequence[str]) -> list[str]:
  """`names` as a list, each one of `OCCLUSION_NAMES`.

  Args:
    names: occlusion names.
  Returns:
    The list.
  Raises:
    InputError: one string instead of a list (its letters were taken for names: "unknown
      occlusion 'e'" for "eyes"), something that is not a list, or an unknown name.
  """
  if isinstance(names, (str, bytes)):
    text = names if isinstance(names, str) else names.decode("utf-8", "replace")
    raise InputError(f"occlusion names {names!r} is one string; pass a list of names, e.g. "
                     f"[{text!r}].")
  try:  # Was a TypeError for None or a number.
    names = list(names)
  except TypeError:
    raise InputError(f"occlusion names {names!r} is not a list; pass a list of names, e.g. "
                     "['eyes'].") from None
  for name in names:
    _check_name(name)
  return names


def occlusions_for(dataset: str, image_size: int = 0, crop_from: int = 0) -> tuple[str, ...]:
  """The occlusion names that make sense for a dataset.

  Args:
    dataset: a dataset name ("synthetic", "lfw", "cub", "folder", ...).
    image_size, crop_from: as for `make_mask`, where the images are centre crops: the face
      regions such a crop leaves out, or lies inside (`make_mask` refuses both), are left
      out. 0: not checked.
  Returns:
    Every name for the face datasets (`FACE_DATASETS`), but the face regions a centre crop
    leaves out or lies inside; the four halves and the random regions for any other dataset
    (its images are not aligned faces).
  Raises:
    InputError: an image_size or crop_from that is not an integer of at least 0 (was: "64" a
      TypeError of the comparison).
  """
  image_size = check_int(image_size, "image_size", 0)
  crop_from = check_int(crop_from, "crop_from", 0)
  if dataset not in _FACE_TABLES:
    return tuple(HALVES) + GENERIC_OCCLUSIONS
  if not image_size or crop_from <= image_size:  # Whole images hold every face region.
    return OCCLUSION_NAMES
  # Was: the defaults of a run whose crop lies inside the face box (LFW at 64 cropped to 32)
  # stopped `evaluate` and `complete` with "use another occlusion" (fault hunt).
  return tuple(n for n in OCCLUSION_NAMES if n not in FACE_OCCLUSIONS
               or _face_box(n, image_size, crop_from, dataset)[1] is None)


def _face_box(name: str, image_size: int, crop_from: int, dataset: str
              ) -> tuple[tuple[int, ...], Optional[str]]:
  """The face region `name` in an S x S centre crop of `crop_from` images (0: whole), and
  why no mask can be made of it (None: one can)."""
  whole = max(image_size, crop_from)
  t, l, b, r = regions_for(dataset, whole)[name]  # Was placed as if the crop were whole:
  a = (whole - image_size) // 2  # 3-4 pixels off on a 64 of 72 (as `centre_cropped`).
  box = tuple(min(max(v - a, 0), image_size) for v in (t, l, b, r))
  crop = f"a {image_size}x{image_size} centre crop of {whole}x{whole} images"
  if box[0] >= box[2] or box[1] >= box[3]:  # Was a mask hiding nothing: NaN scores.
    return box, f"{crop} holds none of the {name!r} region; use another occlusion."
  if box == (0, 0, image_size, image_size):  # "face" in a 32 crop of 64: nothing observed,
    # which the completion refuses as a mask given inverted (review).
    return box, (f"{crop} lies inside the {name!r} region, so its mask would hide every "
                 "pixel; use another occlusion.")
  return box, None


def regions_for(dataset: str, image_size: int = _REF) -> dict[str, Box]:
  """The named boxes of a face dataset, scaled to image_size.

  Args:
    dataset: "lfw" (real aligned faces) or "synthetic" (was "lfw" by default: another
      dataset's caller got LFW's boxes without a word, as `make_mask` did; fault hunt).
    image_size: the image side S.
  Returns:
    {name: (top, left, bottom, right)} in pixels of an S x S image, for `FACE_OCCLUSIONS`.
  Raises:
    InputError: the dataset has no face table, or an image size that is not a positive
      integer (was: 0, -8 and 2.5 gave boxes, (-1, -1, 0, 0) at 0).
  """
  image_size = check_int(image_size, "image_size", 1)
  if dataset not in _FACE_TABLES:
    raise InputError(f"dataset {dataset!r} has no face regions (eyes, mouth, face); they are "
                     f"defined for {', '.join(FACE_DATASETS)}. Use a half or one of "
                     f"{', '.join(GENERIC_OCCLUSIONS)} instead.")
  return {k: scale_box(v, image_size) for k, v in _FACE_TABLES[dataset].items()}


def _box_mask(box: Box, image_size: int, num: int) -> np.ndarray:
  m = np.ones((image_size, image_size), np.float32)
  t, l, b, r = box
  m[t:b, l:r] = 0.0
  return np.broadcast_to(m[None, :, :, None], (num, image_size, image_size, 1)).copy()


def _random_boxes(seed: int, image_size: int, num: int, lo_h: int, hi_h: int, lo_w: int,
                  hi_w: int) -> np.ndarray:
  """num boxes with height in [lo_h, hi_h], width in [lo_w, hi_w], placed fully inside.

  Box i comes from its own stream, seeded by (seed, i): the same image gets the same box
  however many are asked for (was: one stream for all, so image 0's box changed with `num`,
  and `complete --num_images`, `evaluate` and `tune` hid other pixels of one test image).
  """
  boxes = np.empty((num, 4), np.int64)
  for i in range(num):
    rng = np.random.default_rng([seed, i])
    h, w = rng.integers(lo_h, hi_h + 1), rng.integers(lo_w, hi_w + 1)
    top, left = rng.integers(0, image_size - h + 1), rng.integers(0, image_size - w + 1)
    boxes[i] = top, left, top + h, left + w
  return boxes


def make_mask(name: str, image_size: int, num: int, *, seed: int = 0,
              dataset: Optional[str] = None, crop_from: int = 0) -> np.ndarray:
  """Observed-pixel masks for one occlusion type.

  Args:
    name: one of `OCCLUSION_NAMES`.
    image_size: S, the image height and width.
    num: N, how many masks (one per image).
    seed: seeds the random regions (block8, block16, random_rect); the named boxes ignore it.
      Mask i depends on (seed, i) only, not on `num`.
    dataset: the run's dataset (`trained.config.data.name`), which selects the face table
      for eyes / mouth / face ("lfw" or "synthetic"); needed for those alone. None: the
      halves and the random regions only (was "lfw": a face region of another dataset's
      images took LFW's boxes without a word).
    crop_from: the side of the images that S x S centre crops were taken from
      (`config.data.image_size` where `config.data.augment.crop_size` crops); 0 or S: the
      images are whole. Eyes, mouth and face lie where they are in the whole image, cropped
      with it; the halves and the random regions are the crop's.
  Returns:
    float32 [N, S, S, 1]: 1 = observed pixel, 0 = hidden (to be filled by the generator).
  Raises:
    InputError: an unknown name, a face region without `dataset` or for a dataset without a
      face table (or outside the crop, or covering it whole), a non-positive size or count, a
      seed or crop_from that is not an integer of at least 0, a crop_from below S, or masks
      (their size or count) past the memory there is.
  """
  _check_name(name)
  image_size = check_int(image_size, "image_size", 4)
  num = check_int(num, "num", 0)
  seed = check_int(seed, "seed", 0)  # Was numpy's ValueError (-1) or a TypeError (1.5).
  crop_from = check_int(crop_from, "crop_from", 0)
  if 0 < crop_from < image_size:  # Was taken as whole images without a word.
    raise InputError(f"crop_from={crop_from} is smaller than the {image_size}x{image_size} "
                     "crops taken from it; pass the whole images' side, or 0 for whole images.")
  try:
    return _mask(name, image_size, num, seed, dataset, crop_from)
  except MemoryError:  # Was NumPy's "Unable to allocate" traceback (num=10**12, or a size
    # of 2**20: 4 TiB for one mask).
    raise InputError(f"masks of {num} images of {image_size}x{image_size} take "
                     f"{num * image_size * image_size * 4 / 2**30:,.1f} GiB, more than this "
                     "machine can give; make them for fewer images at a time.") from None


def _mask(name: str, image_size: int, num: int, seed: int, dataset: Optional[str],
          crop_from: int) -> np.ndarray:
  """`make_mask` of checked arguments."""
  if name in HALVES:
    return _box_mask(scale_box(HALVES[name], image_size), image_size, num)
  if name in FACE_OCCLUSIONS:
    if dataset is None:  # Was LFW's boxes for any dataset: the synthetic eyes half visible.
      raise InputError(f"the {name!r} region lies where the dataset's faces put it; pass "
                       "dataset=trained.config.data.name (one of "
                       f"{', '.join(FACE_DATASETS)}), or use a half or one of "
                       f"{', '.join(GENERIC_OCCLUSIONS)}, which need none.")
    box, why = _face_box(name, image_size, crop_from, dataset)
    if why is not None:
      raise InputError(why)
    return _box_mask(box, image_size, num)
  if name in _BLOCK_SIDES:
    side = max(1, _scale_edge(_BLOCK_SIDES[name], image_size))
    boxes = _random_boxes(seed, image_size, num, side, side, side, side)
  else:  # random_rect
    lo, hi = -(-image_size // 4), image_size // 2
    boxes = _random_boxes(seed, image_size, num, lo, hi, lo, hi)
  # Vectorised box test: pixel (i, j) is hidden when top <= i < bottom and left <= j < right.
  idx = np.arange(image_size)
  rows = (idx[None] >= boxes[:, 0:1]) & (idx[None] < boxes[:, 2:3])
  cols = (idx[None] >= boxes[:, 1:2]) & (idx[None] < boxes[:, 3:4])
  hidden = rows[:, :, None] & cols[:, None, :]
  return (~hidden).astype(np.float32)[..., None]


def make_masks(names: Sequence[str], image_size: int, num: int, *, seed: int = 0,
               dataset: Optional[str] = None, crop_from: int = 0) -> dict[str, np.ndarray]:
  """`make_mask` for several occlusions, each seeded by `seed` and its place in
  `OCCLUSION_NAMES` (seed x the number of names + the place: no two pairs share one).

  The seed of a name does not depend on which other names are asked for, so every model,
  baseline and call that asks for "block8" with the same `seed` gets the same blocks.

  Args:
    names: occlusion names (each one of `OCCLUSION_NAMES`).
    image_size, num, dataset, crop_from: as for `make_mask`.
    seed: the base seed, an integer of at least 0.
  Returns:
    {name: float32 [N, S, S, 1] observed-pixel mask}.
  Raises:
    InputError: what `check_names` or `make_mask` refuses, or a seed that is not an integer
      of at least 0.
  """
  names = check_names(names)
  # The seed as given, before each name's offset: was -5 taken (the masks of another seed:
  # -1 gave block16 those of seed 7), 2.5 named as "seed=9.5", True taken as 1.
  seed = check_int(seed, "seed", 0)
  # One seed per (seed, name), none shared: was seed + the name's place, so block8 at seed 1
  # drew block16's boxes of seed 0 (a seed sweep's columns were the same draws; review
  # finding). Seed 0 keeps its masks (the published tables').
  return {name: make_mask(name, image_size, num,
                          seed=seed * len(OCCLUSION_NAMES) + OCCLUSION_NAMES.index(name),
                          dataset=dataset, crop_from=crop_from) for name in names}


def hidden_fraction(mask: np.ndarray) -> np.ndarray:
  """Fraction of hidden pixels per mask.

  Args:
    mask: [N, S, S, 1] (or [N, S, S]) with 1 = observed, read as every mask argument is
      (`inputs.mask_to_unit`: bool or floats in [0, 1], or uint8 0 .. 255).
  Returns:
    float32 [N].
  Raises:
    InputError: another shape (one [S, S] mask: pass mask[None]), or values `mask_to_unit`
      refuses.
  """
  m = mask_to_unit(mask, "mask")  # Was: a uint8 0 / 255 mask read as 0 .. 255 (-222.6).
  # Square masks only: one [S, S, 1] mask was read as S masks of S x 1 pixels.
  if m.ndim not in (3, 4) or m.ndim == 4 and m.shape[-1] != 1 or m.shape[1] != m.shape[2]:
    raise InputError(f"mask has shape {m.shape}; hidden_fraction takes [N, S, S, 1] or "
                     "[N, S, S] (one mask: mask[None]).")
  if not m.shape[0]:
    return np.zeros((0,), np.float32)
  return (1.0 - m.reshape(m.shape[0], -1).mean(axis=1)).astype(np.float32)


def markdown_table(image_sizes: tuple[int, ...] = (64, 32)) -> str:
  """The named boxes of every face dataset at the given sizes, as Markdown (for the README).

  Args:
    image_sizes: the sizes S to list, one column each.
  Returns:
    The table, one row per (region, dataset).
  """
  lines = ["| region | dataset | " + " | ".join(f"{s}x{s} (top, left, bottom, right)"
                                                 for s in image_sizes) + " |",
           "|---|---|" + "---|" * len(image_sizes)]
  for name in FACE_OCCLUSIONS:
    datasets = ("all",) if name in HALVES else FACE_DATASETS
    for ds in datasets:
      table = HALVES if ds == "all" else _FACE_TABLES[ds]
      cells = [str(scale_box(table[name], s)) for s in image_sizes]
      lines.append(f"| `{name}` | {ds} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def overlay(images: np.ndarray, masks: np.ndarray,
            colour: tuple[float, float, float] = (1.0, 0.0, 1.0)) -> np.ndarray:
  """Shows masks on images: hidden pixels tinted, observed pixels unchanged.

  Args:
    images: [N, S, S, 3], uint8 or floats in [0, 1].
    masks: [N, S, S, 1] or [N, S, S] (or one: [1, S, S, 1], [S, S, 1] or [S, S]) with 1 =
      observed, read as every mask argument is (`inputs.mask_to_unit`: bool or floats in
      [0, 1], or uint8 0 .. 255).
    colour: the tint of the hidden pixels, RGB in [0, 1].
  Returns:
    float32 [N, S, S, 3] in [0, 1].
  Raises:
    InputError: float images outside [0, 1] (or NaN); masks of a uint8 0 and 1, or with
      values outside [0, 1]; shapes that do not match; a colour that is not 3 values in
      [0, 1].
  """
  images = as_array(images, "images")  # A ragged list was NumPy's ValueError.
  if images.dtype != np.uint8:  # Was: [-1, 1] or 0 .. 255 floats tinted into nonsense.
    check_range(images.astype(np.float32), -SIGNED_SLACK, 1.0 + SIGNED_SLACK, "overlay's "
                "float images must lie in [0, 1]", "pass (x + 1) / 2 for the models' [-1, 1], "
                "x / 255 for 0 .. 255")
  try:
    tint = np.asarray(colour, np.float32)
  except (TypeError, ValueError):
    tint = np.zeros(0, np.float32)
  if tint.shape != (3,) or not np.all((tint >= 0) & (tint <= 1)):  # NaN too.
    raise InputError(f"colour {colour!r} is not an RGB triple in [0, 1]; e.g. (1.0, 0.0, 1.0).")
  x = np.clip(to_unit(images), 0.0, 1.0)  # Rounding's slack only.
  m = mask_to_unit(masks, "masks")
  given = m.shape
  # The forms the inference takes (`inputs.check_mask`): [N, S, S], one [S, S] or [S, S, 1]
  # (were refused here, where complete had taken them).
  if m.ndim == 2 or m.ndim == 3 and m.shape[-1] == 1 and m.shape[:2] == x.shape[1:3]:
    m = m[None]
  if m.ndim == 3:
    m = m[..., None]
  if (x.ndim != 4 or x.shape[-1] != 3 or m.ndim != 4 or m.shape[-1] != 1
      or m.shape[1:3] != x.shape[1:3] or m.shape[0] not in (1, x.shape[0])):
    raise InputError(f"overlay takes images [N, S, S, 3] and masks [N, S, S, 1] (or [1, S, S, "
                     f"1]); got {x.shape} and {given}.")  # Was numpy's broadcast error.
  tinted = 0.45 * x + 0.55 * tint
  return m * x + (1.0 - m) * tinted
