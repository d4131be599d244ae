"""CUB-200-2011 birds at 80x80 with 312 attributes and foreground masks (a TFDS builder).

Sources (downloaded by the builder when the network allows, else read from the manual
folder `<data_dir>/manual/cub/`; sizes from TFDS's recorded checksums):

- `CUB_200_2011.tgz` (1,150,585,339 bytes): `CUB_200_2011/{images.txt,
  train_test_split.txt, image_class_labels.txt, bounding_boxes.txt}`, `images/<class>/*.jpg`,
  `attributes/image_attribute_labels.txt` (`<image> <attribute> <is_present> <certainty>
  <time>`; a few lines carry extra tokens, so only the first three are read) and
  `attributes/class_attribute_labels_continuous.txt` (200 rows x 312 percentages); the
  attribute names (`<id> <group>::<value>`) are in `attributes.txt` at the archive's root
  (the README says `attributes/attributes.txt`; both places are searched). A manual folder
  may hold the unpacked `CUB_200_2011/` instead of the archive, with that `attributes.txt`
  beside it.
- `segmentations.tgz` (39,272,883 bytes): `segmentations/<class>/<file>.png`, soft
  grey-level masks (mode L or LA) from about four annotators; or its unpacked
  `segmentations/`. A folder unpacked one level too deep (`CUB_200_2011/CUB_200_2011/`,
  `segmentations/segmentations/`) is read from the inner one (`tfds_lib.unpack`).

Preparation:

- Crop: a square around the bounding box's centre whose side is `BOX_SCALE` = 1.25 times
  the box's longer side (a 12.5 % margin each side), shrunk to the image's shorter side if
  it does not fit and shifted to lie inside the image; resized to 80x80 with PIL's
  antialiased bilinear filter. Training resizes to 72 and random-crops 64 as the reference
  does (`configs/cub.py`); evaluation takes the centre 64. The 80 -> 72 resize is PIL's
  antialiased bilinear on uint8 (`tfds_lib.resize_array`), not the reference's `image.scale`,
  which averages each output pixel's source area in floats: the pixels differ slightly (not
  measured against Torch in this repository).
- Masks: the segmentation scaled to [0, 1] and binarised at > 0.5, cropped and resized like
  the image (a segmentation of another size than its image is first resized to the image's
  size, bilinear, where their proportions agree within `SEGMENTATION_ASPECT_TOLERANCE` = 2 %
  and the image is 0.5 to 2 times the segmentation's size (`SEGMENTATION_SCALE_RANGE`);
  one warning at the end of the preparation counts them; other proportions or scales stop
  the preparation, naming both archives to download again), then binarised again at > 0.5
  at 80x80, as the reference's loader does (`gt(0.5)` on its 80x80 masks before it scales
  them to 72). Stored masks are 0 or 255; edges turn soft only at the 80 -> 72 resize, as in
  the reference. (Version 1.0.0 of the prepared copy kept
  the soft edges of the resize to 80, about 5 % of the pixels; 1.1.0 is prepared anew, and a
  run resumed on it warns that its masks differ, `base.check_same_splits`.)
- Attributes: both per-image `is_present` (0/1, the default) and the class-level
  continuous values divided by 100 are stored; `config.data.cub_attributes` picks one at
  load time.
- Splits: the official train / test split (`train_test_split.txt`); validation = every
  10th training image (1-based i % 10 == 0 in image-id order), as the reference. Each split
  is stored in image-id order.
- Checks, before anything is written: every line of the tables parses, class ids are
  1..200, bounding boxes are finite with a width and height above 0, and every image and
  segmentation is there; an image that does not decode stops the preparation. Each is a
  `DataError` naming the file (and line).
- Reuse: the prepared copy records its source files; a later load warns when one of them
  has changed since, and reads the copy as it was prepared (`tfds_lib.load`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
from absl import logging

from a2i_jax.data import tfds_lib
from a2i_jax.data.base import ATTRIBUTE_COUNTS, CUB_ATTRIBUTES, DataError, check_choice
from a2i_jax.data.tfds_lib import Source

tfds = tfds_lib.import_tfds()

IMAGE_SIZE = 80
BOX_SCALE = 1.25  # Crop side / longer bounding-box side.
# A segmentation of another size than its image is resized to it where their proportions
# (width / height) differ by at most this fraction; past it the two cannot be the same picture.
SEGMENTATION_ASPECT_TOLERANCE = 0.02
# ... and where the image is within this range of times the segmentation's size, each side.
SEGMENTATION_SCALE_RANGE = (0.5, 2.0)
VALIDATION_EVERY = 10  # Every 10th training image validates (scaled_margin_cub.lua).
NUM_ATTRIBUTES = ATTRIBUTE_COUNTS["cub"]  # 312
NUM_CLASSES = 200  # Class ids 1..200; one row each in class_attribute_labels_continuous.txt.
# config.data.cub_attributes -> the feature that holds those attributes.
ATTRIBUTE_OPTIONS = dict(zip(CUB_ATTRIBUTES, ("attributes", "attributes_class")))

_CALTECH = "https://data.caltech.edu/records"
SOURCES = (
    Source("CUB_200_2011.tgz", f"{_CALTECH}/65de6-vp158/files/CUB_200_2011.tgz?download=1",
           "1.15 GB", "CUB_200_2011", "attributes.txt"),
    Source("segmentations.tgz", f"{_CALTECH}/w9d68-gec53/files/segmentations.tgz?download=1",
           "39 MB", "segmentations"),
)
_IMAGES, _SEGMENTATIONS = SOURCES  # The archives, for `tfds_lib.redownload`.
_REDOWNLOAD = ("the file is damaged or not CUB-200-2011's. Delete CUB_200_2011.tgz (and its "
               "unpacked folder under <data_dir>/downloads/unpacked/) and download it again.")


def _table(path: str, columns: int) -> dict[int, list[str]]:
  """`<id> <values...>` lines -> {id: the next `columns` tokens}; a DataError names the file
  and line of a line without an id and `columns` values, a non-integer id or a repeated id."""
  return {key: values for key, (_, values) in _numbered_table(path, columns).items()}


def _numbered_table(path: str, columns: int) -> dict[int, tuple[int, list[str]]]:
  """`_table` with each id's line number: {id: (line number, the next `columns` tokens)}."""
  out: dict[int, list[str]] = {}
  first_line: dict[int, int] = {}
  for number, line in tfds_lib.numbered_lines(path):
    parts = line.split(None, columns)
    if len(parts) < columns + 1:
      raise DataError(f"{path}, line {number}: expected an id and {columns} value(s); "
                      f"{_REDOWNLOAD}")
    try:
      key = int(parts[0])
    except ValueError:
      raise DataError(f"{path}, line {number}: the id {parts[0]!r} is not an integer; "
                      f"{_REDOWNLOAD}") from None
    if key in out:
      raise DataError(f"{path}, line {number}: id {key} already appears on line "
                      f"{first_line[key]}; {_REDOWNLOAD}")
    out[key], first_line[key] = parts[1:columns + 1], number
  return {key: (first_line[key], values) for key, values in out.items()}


def _column(path: str, columns: int, parse: Callable[[list[str]], Any], what: str
            ) -> dict[int, Any]:
  """{id: parse(the id's `columns` tokens)} of an `<id> <values...>` file; `parse` raises
  ValueError for a bad line, which becomes a DataError naming the file, line and `what`."""
  out = {}
  for key, (number, values) in _numbered_table(path, columns).items():
    try:
      out[key] = parse(values)
    except ValueError:
      raise DataError(f"{path}, line {number}: expected {what}, got "
                      f"{' '.join(values)!r}; {_REDOWNLOAD}") from None
  return out


def _is_training(values: list[str]) -> bool:
  """train_test_split.txt's is_training_image: "1" or "0", anything else a ValueError."""
  if values[0] not in ("0", "1"):
    raise ValueError(values[0])
  return values[0] == "1"


def _class_id(values: list[str]) -> int:
  """image_class_labels.txt's class id, 1..NUM_CLASSES (0 would silently index the last
  class's row of the class attributes)."""
  c = int(values[0])
  if not 1 <= c <= NUM_CLASSES:
    raise ValueError(values[0])
  return c


def _box(values: list[str]) -> tuple[float, ...]:
  """bounding_boxes.txt's (x, y, w, h): finite, with a width and height above 0 (a box of
  size 0 would crop nothing)."""
  box = tuple(float(t) for t in values)
  if not all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
    raise ValueError(values)
  return box


def parse_class_attributes(path: str) -> np.ndarray:
  """class_attribute_labels_continuous.txt -> float32 [200, 312] in [0, 1] (row = class id - 1).

  Args:
    path: CUB_200_2011/attributes/class_attribute_labels_continuous.txt: one line per class
      (in class id order) of 312 space-separated percentages.
  Returns:
    float32 [NUM_CLASSES, 312]: the percentages divided by 100.
  Raises:
    DataError: naming the file (and line) of a line without 312 numbers, a value that is
      not a number or not within 0..100, or other than 200 lines.
  """
  rows = []
  for number, line in tfds_lib.numbered_lines(path):
    parts = line.split()
    problem = ""
    if len(parts) != NUM_ATTRIBUTES:
      problem = f"{len(parts)} values, expected {NUM_ATTRIBUTES}"
    else:
      try:
        values = np.asarray([float(v) for v in parts], np.float32)
      except ValueError as e:
        values, problem = None, str(e)
      if values is not None and not ((values >= 0) & (values <= 100)).all():
        j = int(np.flatnonzero(~((values >= 0) & (values <= 100)))[0])
        problem = f"value {j + 1} is {parts[j]}, not a percentage in 0..100"
    if problem:
      raise DataError(f"{path}, line {number}: {problem}; {_REDOWNLOAD}")
    rows.append(values)
  if len(rows) != NUM_CLASSES:
    raise DataError(f"{path}: {len(rows)} lines of values, expected one per class "
                    f"({NUM_CLASSES}); {_REDOWNLOAD}")
  return np.stack(rows) / np.float32(100.0)


def _id_list(ids: list[int]) -> str:
  shown = ", ".join(map(str, ids[:5]))
  return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def parse_attribute_names(path: str) -> list[str]:
  """Reads CUB's attributes.txt: `<id> <group>::<value>` lines -> the names in id order.

  Args:
    path: the attributes.txt file (at the archive's root or in CUB_200_2011/attributes/).
  Returns:
    The 312 names (`<group>::<value>`, e.g. "has_bill_shape::curved_(up_or_down)"); index i
    holds attribute id i + 1.
  Raises:
    DataError: a line without an id and a name, a non-integer or repeated id, or ids that
      are not exactly 1..312 (the message names the missing and the unexpected ids).
  """
  rows = _table(path, 1)
  expected = set(range(1, NUM_ATTRIBUTES + 1))
  missing, unexpected = sorted(expected - set(rows)), sorted(set(rows) - expected)
  if missing or unexpected:
    problems = []
    if missing:
      problems.append(f"id(s) {_id_list(missing)} missing")
    if unexpected:
      problems.append(f"id(s) {_id_list(unexpected)} outside 1..{NUM_ATTRIBUTES}")
    raise DataError(f"{path}: expected one line for each attribute id 1..{NUM_ATTRIBUTES}, "
                    f"found {len(rows)} id(s), with {' and '.join(problems)}; {_REDOWNLOAD}")
  return [rows[i][0] for i in range(1, NUM_ATTRIBUTES + 1)]


def parse_image_attributes(path: str, num_images: int,
                           ids: Optional[Iterable[int]] = None) -> np.ndarray:
  """image_attribute_labels.txt -> float32 [num_images + 1, 312] of is_present (row = id).

  Only the first three tokens of a line are read, so lines with extra tokens (a known quirk
  of the file) are fine; blank lines are skipped.

  Args:
    path: CUB_200_2011/attributes/image_attribute_labels.txt: `<image id> <attribute id>
      <is_present> <certainty> <time>` per line, both ids 1-based.
    num_images: the largest image id.
    ids: the image ids that must each have all 312 pairs listed (those of images.txt); None
      checks none.
  Returns:
    float32 [num_images + 1, 312]: row i holds image id i's is_present values (0 or 1),
    column j attribute id j + 1. Row 0, and any pair the file does not list, stay 0.
  Raises:
    DataError: naming the file and line, for a line with fewer than three tokens or a
      non-integer among them, an image id outside 1..num_images, an attribute id outside
      1..312, an is_present other than 0 or 1, or an (image, attribute) pair listed a second
      time (was: the last line won, review finding); naming the file and an image id, for an
      image of `ids` whose pairs are not all listed (a file cut short: its attributes would
      read as absent).
  """
  out = np.zeros((num_images + 1, NUM_ATTRIBUTES), np.float32)
  listed = np.zeros((num_images + 1, NUM_ATTRIBUTES), bool)
  with open(path, "rb") as f:
    for number, line in enumerate(f, 1):
      parts = line.split(None, 3)
      if not parts:
        continue
      try:
        image, attribute, present = int(parts[0]), int(parts[1]), int(parts[2])
      except (ValueError, IndexError):
        got = line.decode("latin-1").strip()[:80]
        problem = (f"expected `<image id> <attribute id> <is_present> ...` (integers), got "
                   f"{got!r}")
      else:
        if (1 <= image <= num_images and 1 <= attribute <= NUM_ATTRIBUTES and present in (0, 1)
            and not listed[image, attribute - 1]):
          out[image, attribute - 1] = present
          listed[image, attribute - 1] = True
          continue
        problem = (f"image id {image} is outside 1..{num_images} (the ids of images.txt)"
                   if not 1 <= image <= num_images else
                   f"attribute id {attribute} is outside 1..{NUM_ATTRIBUTES}"
                   if not 1 <= attribute <= NUM_ATTRIBUTES else
                   f"is_present is {present}, not 0 or 1" if present not in (0, 1) else
                   f"image id {image}, attribute id {attribute} is listed a second time "
                   f"(first on line {_first_line(path, image, attribute)}); the published "
                   "file lists each pair once")
      raise DataError(f"{path}, line {number}: {problem}; {_REDOWNLOAD}")
  wanted = np.asarray(sorted(ids) if ids is not None else [], np.int64)
  missing = wanted[~listed[wanted].all(axis=1)] if wanted.size else wanted
  if missing.size:
    first = int(missing[0])
    raise DataError(f"{path} lists {int(listed[first].sum())} of the {NUM_ATTRIBUTES} "
                    f"attributes of image id {first} ({missing.size} image(s) incomplete): "
                    f"{_REDOWNLOAD}")
  return out


def _first_line(path: str, image: int, attribute: int) -> int:
  """The line of image_attribute_labels.txt that first lists (image, attribute), for the
  message of a pair listed twice (read again only then: a table of the 3.7 million pairs'
  line numbers would cost 15 MB on every preparation)."""
  with open(path, "rb") as f:
    for number, line in enumerate(f, 1):
      try:
        if [int(t) for t in line.split(None, 2)[:2]] == [image, attribute]:
          return number
      except ValueError:
        continue
  return 0


def crop_box(bbox: tuple[float, float, float, float], width: int, height: int
             ) -> tuple[float, float, float, float]:
  """The square crop around a bounding box (see the module docstring, "Crop").

  The side is BOX_SCALE times the box's longer side, at most the image's shorter side; the
  square is centred on the box's centre, then shifted to lie inside the image.

  Args:
    bbox: (x, y, w, h) in pixels, as in bounding_boxes.txt: the box's top-left corner, its
      width and its height.
    width: the image's width in pixels.
    height: the image's height in pixels.
  Returns:
    (left, top, right, bottom) floats with right - left == bottom - top, inside the image;
    the `box` of `tfds_lib.crop_resize`.
  """
  x, y, w, h = bbox
  side = min(BOX_SCALE * max(w, h), width, height)
  left = min(max(x + w / 2 - side / 2, 0.0), width - side)
  top = min(max(y + h / 2 - side / 2, 0.0), height - side)
  return (left, top, left + side, top + side)


class A2iCub(tfds_lib.BuilderMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """CUB-200-2011 at 80x80: images, 312 attributes (two kinds), binarised masks."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Masks binarised again after the crop and resize to 80x80."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = tfds_lib.instructions(SOURCES, "<data_dir>/manual/cub")

  def _info(self) -> Any:
    extra = {"attributes_class": tfds.features.Tensor(shape=(NUM_ATTRIBUTES,),
                                                      dtype=np.float32)}
    return tfds_lib.dataset_info(
        tfds, builder=self, description=__doc__.split("\n", 1)[0],
        features=tfds_lib.feature_dict(tfds, IMAGE_SIZE, NUM_ATTRIBUTES, True, extra),
        metadata=tfds.core.MetadataDict(),
        homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        # Each split is stored in image-id order: with shuffling off TFDS orders examples by
        # their keys when those are integers, and the image id is the key.
        disable_shuffling=True)

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    paths = tfds_lib.fetch_sources(dl_manager, SOURCES, self._manual_dir,
                                   self._allow_download, "CUB-200-2011")
    self._record_sources(paths)
    unpack_root = os.path.join(os.fspath(dl_manager.download_dir), "unpacked")
    root = tfds_lib.unpack(paths["CUB_200_2011.tgz"], unpack_root, self._progress, _IMAGES.url)
    seg_root = tfds_lib.unpack(paths["segmentations.tgz"], unpack_root, self._progress,
                               _SEGMENTATIONS.url)
    cub = tfds_lib.find_file(root, "CUB_200_2011", _IMAGES)
    seg = tfds_lib.find_file(seg_root, "segmentations", _SEGMENTATIONS)
    fix = tfds_lib.redownload(_IMAGES, cub)
    images_txt = tfds_lib.find_file(cub, "images.txt", _IMAGES)
    images = {i: v[0] for i, v in _table(images_txt, 1).items()}
    if not images:  # Was max()'s ValueError ("arg is an empty sequence"), a traceback.
      raise DataError(f"CUB: {images_txt} lists no images (no `<image id> <path>` line); the "
                      f"file is empty or cut short: {fix}")
    is_train = _column(tfds_lib.find_file(cub, "train_test_split.txt", _IMAGES), 1,
                       _is_training, "`<image id> <1 = train, 0 = test>`")
    classes = _column(tfds_lib.find_file(cub, "image_class_labels.txt", _IMAGES), 1, _class_id,
                      f"`<image id> <class id 1..{NUM_CLASSES}>`")
    boxes = _column(tfds_lib.find_file(cub, "bounding_boxes.txt", _IMAGES), 4, _box,
                    "`<image id> <x> <y> <width> <height>` (numbers, width and height above 0)")
    names_path = next((p for p in (os.path.join(root, "attributes.txt"),
                                   os.path.join(cub, "attributes", "attributes.txt"),
                                   os.path.join(cub, "attributes.txt")) if os.path.exists(p)),
                      None)
    if names_path is None and os.path.isdir(paths["CUB_200_2011.tgz"]):
      # Unpacked by hand: the folder is whole, the file beside it was left behind (was: told
      # to delete the folder, 1.15 GB of good data, and download the archive; fault hunt).
      raise DataError(f"CUB: attributes.txt is not in {root}: it sits at the root of "
                      "CUB_200_2011.tgz, beside the CUB_200_2011/ folder unpacked there; put "
                      f"that attributes.txt in {root} (nothing needs deleting), then run the "
                      "same command again.")
    if names_path is None:
      raise DataError(f"CUB_200_2011.tgz: attributes.txt is neither at the archive's root "
                      f"({root}) nor in CUB_200_2011/attributes/: {fix}")
    names = parse_attribute_names(names_path)
    present = parse_image_attributes(
        tfds_lib.find_file(cub, "attributes/image_attribute_labels.txt", _IMAGES), max(images),
        ids=images)
    per_class = parse_class_attributes(
        tfds_lib.find_file(cub, "attributes/class_attribute_labels_continuous.txt", _IMAGES))
    ids = sorted(images)
    for table, label in ((is_train, "train_test_split.txt"),
                         (classes, "image_class_labels.txt"), (boxes, "bounding_boxes.txt")):
      missing = [i for i in ids if i not in table]
      if missing:
        raise DataError(f"CUB: image id {missing[0]} ({images[missing[0]]}) has no line in "
                        f"{label}; the archive is damaged: {fix}")
    # Every file is checked before anything is written (decoding happens while writing).
    for i in ids:
      if not os.path.isfile(os.path.join(cub, "images", images[i])):
        raise DataError(f"CUB: image {os.path.join(cub, 'images', images[i])} (id {i} in "
                        f"images.txt) is not there; the archive is incomplete: {fix}")
      seg_path = os.path.join(seg, os.path.splitext(images[i])[0] + ".png")
      if not os.path.isfile(seg_path):
        raise DataError(f"CUB: no segmentation {seg_path} for image {images[i]}; "
                        "segmentations.tgz is incomplete: "
                        f"{tfds_lib.redownload(_SEGMENTATIONS, seg)}")
    train = [i for i in ids if is_train[i]]
    split_ids = {
        "train": [i for n, i in enumerate(train, 1) if n % VALIDATION_EVERY],
        "validation": [i for n, i in enumerate(train, 1) if not n % VALIDATION_EVERY],
        "test": [i for i in ids if not is_train[i]],
    }
    if min(len(v) for v in split_ids.values()) == 0:
      raise DataError(f"CUB: a split is empty ({ {k: len(v) for k, v in split_ids.items()} }) "
                      f"after reading train_test_split.txt; {fix}")
    self.info.metadata["attributes_names"] = names
    self.info.metadata["attributes_kinds"] = ["binary"] * NUM_ATTRIBUTES
    self.info.metadata["attributes_class_names"] = names
    self.info.metadata["attributes_class_kinds"] = ["continuous"] * NUM_ATTRIBUTES
    self.info.metadata["box_scale"] = BOX_SCALE
    self.info.metadata["counts"] = {k: len(v) for k, v in split_ids.items()}
    ctx = dict(cub=cub, seg=seg, images=images, boxes=boxes, classes=classes,
               present=present, per_class=per_class, fix=fix,
               fix_seg=tfds_lib.redownload(_SEGMENTATIONS, seg),
               resized=[], splits_left=[len(split_ids)])
    return {split: self._generate_examples(i, ctx) for split, i in split_ids.items()}

  def _generate_examples(self, ids: list[int], ctx: dict) -> Iterator[tuple[int, dict]]:
    for i in ids:
      rel = ctx["images"][i]
      path = os.path.join(ctx["cub"], "images", rel)
      seg_path = os.path.join(ctx["seg"], os.path.splitext(rel)[0] + ".png")
      image = tfds_lib.read_source_image(path, "RGB", ctx["fix"])
      # L or LA: the grey level is the annotators' agreement; alpha is dropped.
      grey = _fitted_segmentation(
          tfds_lib.read_source_image(seg_path, "L", ctx["fix_seg"]), image.size, seg_path, rel,
          ctx)
      fg = np.asarray(grey, np.float32) / 255.0 > 0.5
      box = crop_box(ctx["boxes"][i], image.width, image.height)
      soft = tfds_lib.crop_resize(tfds_lib.pil_mask(fg.astype(np.uint8) * 255), box,
                                  IMAGE_SIZE)
      # Binarised again at 80x80, as the reference's loader does (`gt(0.5)`) before it scales
      # to 72; was: the resize's soft edges were stored (about 5 % of the pixels).
      mask = tfds_lib.pil_mask((np.asarray(soft) > 127).astype(np.uint8) * 255)
      yield i, {  # An integer key: TFDS stores the split in key order (see `_info`).
          "id": rel,
          "image": tfds_lib.crop_resize(image, box, IMAGE_SIZE),
          "attributes": ctx["present"][i],
          "attributes_class": ctx["per_class"][ctx["classes"][i] - 1],
          "mask": mask,
          "mask_predicted": False,
      }
    ctx["splits_left"][0] -= 1
    if not ctx["splits_left"][0] and ctx["resized"]:  # The last split: preparation ends.
      logging.warning("CUB: %d segmentation(s) of another size than their image (e.g. %s) "
                      "were resized to it; their proportions agree within %.0f %%",
                      len(ctx["resized"]), ctx["resized"][0],
                      100 * SEGMENTATION_ASPECT_TOLERANCE)


def _fitted_segmentation(seg: Any, size: tuple[int, int], seg_path: str, rel: str,
                         ctx: dict) -> Any:
  """The segmentation `seg` (a mode-L PIL image) at its image's `size` (width, height): as it
  is, or resized (bilinear, then binarised by the caller) where only its size differs, its
  proportions within `SEGMENTATION_ASPECT_TOLERANCE` of the image's and the image's sides
  within `SEGMENTATION_SCALE_RANGE` times its own; each such path is added
  to `ctx["resized"]`. Was: any other size stopped the preparation with "the archives do not
  match" and no fix (fault hunt)."""
  if seg.size == tuple(size):
    return seg
  (sw, sh), (iw, ih) = seg.size, size
  low, high = SEGMENTATION_SCALE_RANGE
  why = ""
  if abs((sw / sh) / (iw / ih) - 1.0) > SEGMENTATION_ASPECT_TOLERANCE:
    why = "of other proportions"
  elif not (low <= iw / sw <= high and low <= ih / sh <= high):
    # Was: any scale, a 1x1 segmentation stretched over a 500x500 image (review finding).
    why = f"not {low:g} to {high:g} times its size"
  if why:
    raise DataError(f"CUB: segmentation {seg_path} is {sw}x{sh} but its image {rel} is "
                    f"{iw}x{ih}, {why}, so the two archives do not match: "
                    f"{ctx['fix_seg'][:-1]}; and {ctx['fix']}")
  from PIL import Image  # pylint: disable=import-outside-toplevel
  ctx["resized"].append(seg_path)
  return seg.resize(tuple(size), Image.BILINEAR)


def load(*, data_dir: str, masks: bool = True, image_size: int = 72,
         attributes: str = "is_present", allow_download: bool = True,
         progress: bool = True) -> Any:
  """Prepares CUB-200-2011 (once) and returns its `Dataset`.

  Args:
    data_dir: root of prepared data; source files go in `<data_dir>/manual/cub/`.
    masks: keep the foreground masks (always prepared; dropped when False).
    image_size: the size training wants (stored at 80; the reference loads at 72).
    attributes: "is_present" (per image, 0/1) or "class_continuous" (per class, in [0, 1]).
    allow_download: fetch missing source files from the network.
    progress: progress bars.
  Returns:
    A `Dataset` named "cub".
  Raises:
    DatasetNotPreparedError: a source file is missing (downloads off).
    DataError: a source file is damaged, or `data_dir` cannot be used
      (`tfds_lib.data_dir_path`: no home folder for its `~`, not writable as UTF-8).
  """
  check_choice("data.cub_attributes", attributes, CUB_ATTRIBUTES)
  # Up front: was a traceback from the writer; or, without a home folder, data put in a
  # folder named "~" (fault hunt).
  data_dir = tfds_lib.data_dir_path(data_dir)
  manual_dir = os.path.join(data_dir, "manual", "cub")
  # Before the builder makes its folders (with downloads on too: offline, was a refusal that
  # left folders, a lock file and TFDS's config record in data_dir; fault hunt).
  # Not while another process prepares (its lock held): this one waits and reads its copy.
  copy = os.path.join(data_dir, A2iCub.name, str(A2iCub.VERSION))
  tfds_lib.check_sources_first(data_dir, [copy], SOURCES, manual_dir, "CUB-200-2011",
                               allow_download, [tfds_lib.preparation_lock(copy, A2iCub.name)])
  builder = tfds_lib.open_builder(A2iCub, data_dir=data_dir, manual_dir=manual_dir,
                                  allow_download=allow_download, progress=progress)
  ds = tfds_lib.load(builder, manual_dir=manual_dir,
                     download_dir=os.path.join(data_dir, "downloads"), image_size=image_size,
                     attribute_key=ATTRIBUTE_OPTIONS[attributes], progress=progress)
  splits = ds.splits if masks else {
      k: dataclasses.replace(v, masks=None, mask_predicted=None) for k, v in ds.splits.items()}
  return dataclasses.replace(ds, name="cub", splits=splits)
