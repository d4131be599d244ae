"""LFW faces at 64x64 with Kumar et al.'s 73 attributes and foreground masks (a TFDS builder).

Sources (downloaded by the builder when the network allows, else read from the manual
folder, `<data_dir>/manual/lfw/`; see `SOURCES` for URLs and sizes):

- `lfw-funneled.tgz`: the funneled images `lfw_funneled/<Name>/<Name>_<NNNN>.jpg`, 250x250.
  Funneled, not the raw `lfw.tgz`, because the part labels are drawn on funneled images.
- `lfw_attributes.txt` (Kumar et al., ICCV 2009): two header lines (`# ...` and
  `#<TAB>person<TAB>imagenum<TAB><73 names>`), then `person<TAB>imagenum<TAB><73 floats>`
  with spaces in `person` where LFW's file names have underscores. The header's field names
  are one column ahead of the data (the leading `#` is a field), which is why the names are
  taken as the header's fields after `person` and `imagenum`.
- `peopleDevTrain.txt`, `peopleDevTest.txt`: LFW View 1, the reference's train / test split
  (a count line, then `<Name><TAB><number of images>` per person).
- Part labels (Kae et al., CVPR 2013), only for masks: `parts_lfw_funneled_gt_images.tgz`
  (`<Name>_<NNNN>.ppm`, 250x250, one-hot R = hair, G = face, B = background) and the lists
  `parts_train.txt`, `parts_validation.txt`, `parts_test.txt` (`<Name> <n>`).
- A manual folder may hold an archive's unpacked folder (`lfw_funneled/`,
  `parts_lfw_funneled_gt_images/`) instead of the archive; one unpacked a level too deep
  (`lfw_funneled/lfw_funneled/`) is read from the inner folder (`tfds_lib.unpack`).

Preparation:

- Images of View 1 people with an attribute row (joined on (name, image number); images
  without a row are dropped and counted), in the order of the View 1 files (people in file
  order, their images by number). train = peopleDevTrain, validation = the last 10 % of it
  in that order (the reference keeps the first floor(0.9 N)), test = peopleDevTest.
- Crop: the centred box `CROP_BOX` = (50, 50, 200, 200) (left, top, right, bottom) of the
  250x250 funneled image, 150x150 pixels holding the face, the hair and some background,
  resized to 64x64 with PIL's antialiased bilinear filter.
- Attributes: the 73 real-valued classifier scores, unnormalised, in the file's order.
- Masks (builder config "masks"): foreground = hair + face = 255 - B of the part-label
  image, cropped and resized like the image (soft at the edges, not thresholded). Images
  without part labels get the soft mask of `face_masks.MaskNet`, trained on the
  `parts_train.txt` images and scored on `parts_test.txt` (IoU in the dataset's metadata,
  `mask_net`); `mask_predicted` says which is which. Config "no_masks" needs neither the
  part labels nor the network.
- Checks, before any image is read: a person listed twice in a people file or in both, an
  attribute row repeated or an attribute named twice, and more than `MAX_MISSING_ROWS` of the
  attribute rows naming images the archive lacks (fewer are counted in a warning) are each a
  `DataError` naming the file.
- Reuse: the prepared copy records its source files; a later load warns when one of them
  has changed since, and reads the copy as it was prepared (`tfds_lib.load`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterator, Optional

import numpy as np
from absl import logging
from PIL import Image

from a2i_jax.data import face_masks, tfds_lib
from a2i_jax.data.base import ATTRIBUTE_COUNTS, DataError
from a2i_jax.data.tfds_lib import Source

tfds = tfds_lib.import_tfds()

IMAGE_SIZE = 64
SOURCE_SIZE = 250  # The funneled images' and the part labels' side.
CROP_BOX = (50, 50, 200, 200)  # left, top, right, bottom in the 250x250 funneled image.
VALIDATION_FRACTION = 0.1  # The reference trains on floor(0.9 N) and validates on the rest.
NUM_ATTRIBUTES = ATTRIBUTE_COUNTS["lfw"]  # 73

_UMASS = "http://vis-www.cs.umass.edu/lfw"
IMAGE_SOURCES = (
    Source("lfw-funneled.tgz", f"{_UMASS}/lfw-funneled.tgz", "233 MB", "lfw_funneled"),
    Source("lfw_attributes.txt",
           "http://www.cs.columbia.edu/CAVE/databases/pubfig/download/lfw_attributes.txt",
           ""),
    Source("peopleDevTrain.txt", f"{_UMASS}/peopleDevTrain.txt", ""),
    Source("peopleDevTest.txt", f"{_UMASS}/peopleDevTest.txt", ""),
)
MASK_SOURCES = (
    Source("parts_lfw_funneled_gt_images.tgz",
           f"{_UMASS}/part_labels/parts_lfw_funneled_gt_images.tgz", "",
           "parts_lfw_funneled_gt_images"),
    Source("parts_train.txt", f"{_UMASS}/part_labels/parts_train.txt", ""),
    Source("parts_validation.txt", f"{_UMASS}/part_labels/parts_validation.txt", ""),
    Source("parts_test.txt", f"{_UMASS}/part_labels/parts_test.txt", ""),
)
SOURCES = IMAGE_SOURCES + MASK_SOURCES
_FUNNELED, _PARTS = IMAGE_SOURCES[0], MASK_SOURCES[0]  # The archives (`tfds_lib.redownload`).
_ATTRIBUTES_URL = IMAGE_SOURCES[1].url

Key = tuple[str, int]  # (Name_With_Underscores, image number)


def image_name(key: Key) -> str:
  """LFW's file name of an image without the extension: ("Ann_Doe", 7) -> "Ann_Doe_0007".

  Args:
    key: (the person's name with underscores, the image number from 1).
  Returns:
    `<Name>_<NNNN>`, the number zero-padded to four digits.
  """
  return f"{key[0]}_{key[1]:04d}"


# ------------------------------------------------------------------------------- parsing


def parse_attributes(path: str) -> tuple[tuple[str, ...], dict[Key, np.ndarray]]:
  """Reads lfw_attributes.txt.

  Args:
    path: Kumar et al.'s lfw_attributes.txt (format in the module docstring).
  Returns:
    (the 73 attribute names in file order, {(Name_With_Underscores, n): float32 [73]}).
  Raises:
    DataError: no `#<TAB>person<TAB>imagenum...` header in the first three lines (a `#` line
      whose tab-separated fields hold `person` then `imagenum`), a header naming other than
      73 attributes or one of them twice, a data line without 75 tab-separated fields, with
      a value that is not a number, or with a score that is not finite (nan, inf), or two
      lines for one (name, n) (was: the last one won, review finding).
  """
  lines = tfds_lib.numbered_lines(path)
  fields, start = [], 0
  for _, line in lines[:3]:
    # Fields, not a substring: a comment line may say "person" in its prose.
    cells = [f.strip() for f in line.split("\t")]
    at = cells.index("person") if line.startswith("#") and "person" in cells else -1
    if at >= 0 and cells[at + 1:at + 2] == ["imagenum"]:
      # The header's first field is the "#", so the names start after person and imagenum.
      fields, start = cells, at + 2
      break
  if not fields:
    raise DataError(f"{path}: no '#<TAB>person<TAB>imagenum<TAB>...' header line in the "
                    "first lines; this is not Kumar et al.'s lfw_attributes.txt. Download it "
                    f"again ({_ATTRIBUTES_URL}).")
  names = tuple(f for f in fields[start:] if f)
  if len(names) != NUM_ATTRIBUTES:
    raise DataError(f"{path}: the header names {len(names)} attributes, expected "
                    f"{NUM_ATTRIBUTES}; this is not Kumar et al.'s lfw_attributes.txt. "
                    f"Download it again ({_ATTRIBUTES_URL}).")
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:  # Was taken: `--attribute` then picked the first of the two.
    raise DataError(f"{path}: the header names the attribute(s) {', '.join(map(repr, twice))} "
                    f"more than once; this is not the published lfw_attributes.txt. Download "
                    f"it again ({_ATTRIBUTES_URL}).")
  rows: dict[Key, np.ndarray] = {}
  first_line: dict[Key, int] = {}
  for number, line in lines:
    if line.startswith("#"):
      continue
    parts = line.split("\t")
    if len(parts) != NUM_ATTRIBUTES + 2:
      # Was no fix: a line cut short (a download stopped mid-file) said only the count.
      raise DataError(f"{path}, line {number}: {len(parts)} tab-separated fields, expected "
                      f"{NUM_ATTRIBUTES + 2} (person, imagenum, {NUM_ATTRIBUTES} scores); the "
                      f"file is cut short or damaged. Download it again ({_ATTRIBUTES_URL}).")
    try:
      key = (parts[0].strip().replace(" ", "_"), int(parts[1]))
      values = np.asarray([float(v) for v in parts[2:]], np.float32)
    except ValueError as e:
      raise DataError(f"{path}, line {number}: {e}; the file is damaged. Download it again "
                      f"({_ATTRIBUTES_URL}).") from e
    if key in rows:  # Was: the last row won without a word.
      raise DataError(f"{path}, line {number}: {image_name(key)} already has a row (line "
                      f"{first_line[key]}); the published file has one per image. Delete "
                      f"one of them, or download it again ({_ATTRIBUTES_URL}).")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:  # Python's float() takes "nan" and "inf"; no split may hold them.
      j = int(bad[0])
      raise DataError(f"{path}, line {number}: the score of {names[j]!r} is "
                      f"{parts[2 + j].strip()!r}, not a finite number; this is not the "
                      f"published lfw_attributes.txt. Download it again ({_ATTRIBUTES_URL}).")
    rows[key], first_line[key] = values, number
  return names, rows


# More rows of lfw_attributes.txt than this naming images lfw-funneled.tgz lacks is not the
# published file (or not its numbering). The published file cannot be checked offline, so a
# few are only counted.
MAX_MISSING_ROWS = 0.01


def check_rows_in_archive(path: str, rows: dict[Key, np.ndarray], images_root: str) -> None:
  """Refuses an lfw_attributes.txt whose rows do not name the archive's images.

  Image numbers start at 1 (`<Name>_0001.jpg`); a file numbered from 0 moves every row onto
  the next image, which would train on wrong attributes without a word (the rows naming
  `_0000` and the last images' missing rows were only dropped, review finding).

  Args:
    path: lfw_attributes.txt, for the messages.
    rows: its rows (`parse_attributes`).
    images_root: the unpacked lfw_funneled/ folder (`<Name>/<Name>_<NNNN>.jpg`).
  Raises:
    DataError: more than `MAX_MISSING_ROWS` of the rows name an image the archive lacks
      (naming how many, an example, and a numbering from 0 where that is the cause, else
      both files that may be wrong).
  """
  missing = [k for k in rows
             if not os.path.isfile(os.path.join(images_root, k[0], image_name(k) + ".jpg"))]
  if not missing:
    return
  if len(missing) > MAX_MISSING_ROWS * len(rows):
    zeros = sum(k[1] == 0 for k in missing)
    why = (f"{zeros} of them name image number 0, but LFW numbers each person's images from "
           "1, so this file's numbers start at 0 and every row would land on the next image; "
           "this is not the published lfw_attributes.txt. Download it again "
           f"({_ATTRIBUTES_URL})." if zeros else
           # Was always "not the published lfw_attributes.txt": where a folder unpacked by
           # hand lacks images, downloading the attributes again changed nothing.
           "either this is not the published lfw_attributes.txt (download it again: "
           f"{_ATTRIBUTES_URL}) or the images are incomplete: "
           f"{tfds_lib.redownload(_FUNNELED, images_root)}")
    raise DataError(f"{path}: {len(missing)} of its {len(rows)} rows name images "
                    f"lfw-funneled.tgz does not hold (e.g. {image_name(missing[0])}); {why}")
  logging.warning("LFW: %d of the %d rows of %s name images lfw-funneled.tgz does not hold "
                  "(e.g. %s); they are not used", len(missing), len(rows), path,
                  image_name(missing[0]))


# More of the View 1 images (peopleDevTrain.txt and peopleDevTest.txt together) than this
# without a row in lfw_attributes.txt is not the published file, or not the whole of it (the
# published one lacks rows for a small share of LFW's images: not measured here, the data
# being offline). Fewer are dropped, warned of at preparation, counted in the prepared copy's
# metadata (`DROPPED_KEY`) and said (INFO) at each later load: the published file's own gaps
# are no fault to warn of at every run.
MAX_DROPPED_IMAGES = 0.02
DROPPED_KEY = "dropped_no_row"


def check_view1_rows(people: dict[str, list[Key]], rows: dict[Key, Any],
                     attributes_path: str) -> dict[str, int]:
  """Counts the View 1 images that lfw_attributes.txt has no row for, and refuses too many.

  Was: every such image was dropped with a warning once, at preparation, and silently at
  every later load, however many there were (a file cut down to a few rows trained on a
  few images; review finding).

  Args:
    people: {"train": peopleDevTrain.txt's images, "test": peopleDevTest.txt's}
      (`parse_people`).
    rows: lfw_attributes.txt's rows (`parse_attributes`).
    attributes_path: lfw_attributes.txt, for the message.
  Returns:
    {split: the number of its View 1 images without a row}.
  Raises:
    DataError: more than `MAX_DROPPED_IMAGES` of the View 1 images (and more than one) have
      no row: naming the file, the counts, an example and the fix.
  """
  dropped = {split: [k for k in keys if k not in rows] for split, keys in people.items()}
  total, lost = sum(map(len, people.values())), sum(map(len, dropped.values()))
  if lost > max(MAX_DROPPED_IMAGES * total, 1):
    example = next(image_name(v[0]) for v in dropped.values() if v)
    counts = ", ".join(f"{len(v)} of {len(people[s])} in {s}" for s, v in dropped.items())
    raise DataError(f"{attributes_path} has no row for {lost} of the {total} LFW View 1 "
                    f"images ({counts}; e.g. {example}), more than "
                    f"{MAX_DROPPED_IMAGES:.0%} of them: it is not the published "
                    "lfw_attributes.txt, or not the whole of it. Download it again "
                    f"({_ATTRIBUTES_URL}).")
  return {split: len(v) for split, v in dropped.items()}


def parse_people(path: str) -> list[Key]:
  """Reads a View 1 people file: every (name, n) for n in 1..count, in file order.

  Args:
    path: peopleDevTrain.txt or peopleDevTest.txt: a count line (the number of people),
      then `<Name><TAB><number of images>` per person; lines of another form are skipped.
  Returns:
    (name, n) for n in 1..count of each person, people in file order.
  Raises:
    DataError: a count holds a character Python takes for a digit that is not 0-9 (a damaged
      byte), the file has no `<Name> <count>` line, lists another number of people than
      its count line says (cut short), or lists a person twice (was taken: their images went
      to training and validation both, review finding).
  """
  keys, people, announced = [], 0, None
  first_line: dict[str, int] = {}
  for number, line in tfds_lib.numbered_lines(path):
    parts = line.split()
    if len(parts) == 2 and (count := _count(parts[1], path, number)) is not None:
      if parts[0] in first_line:
        raise DataError(f"{path}, line {number}: {parts[0]} is listed a second time (first "
                        f"on line {first_line[parts[0]]}); the published file lists each "
                        f"person once. Download it again ({_people_url(path)}).")
      first_line[parts[0]] = number
      keys.extend((parts[0], n) for n in range(1, count + 1))
      people += 1
    elif (len(parts) == 1 and announced is None and not people
          and (count := _count(parts[0], path, number)) is not None):
      announced = count
  if not keys:
    raise DataError(f"{path}: no '<Name> <count>' lines; this is not an LFW people file. "
                    f"Download it again ({_people_url(path)}).")
  if announced is not None and announced != people:
    raise DataError(f"{path}: its first line announces {announced} people but it lists "
                    f"{people}; the file is cut short or edited. Download it again.")
  return keys


def _people_url(path: str) -> str:
  """Where the people file or parts list `path` is published (the UMass page for a file of
  another name)."""
  name = os.path.basename(path)
  return next((s.url for s in SOURCES if s.filename == name), f"{_UMASS}/")


def check_people_disjoint(train: list[Key], test: list[Key], paths: dict) -> None:
  """Refuses View 1 people files that share a person.

  Args:
    train: `parse_people` of peopleDevTrain.txt.
    test: `parse_people` of peopleDevTest.txt.
    paths: filename -> path of the source files, for the message.
  Raises:
    DataError: naming a person in both files and both files (the published lists are
      disjoint; was: that person's images were trained on and then tested as held out,
      review finding).
  """
  both = sorted({k[0] for k in train} & {k[0] for k in test})
  if both:
    who = f"{both[0]} and {len(both) - 1} more are" if len(both) > 1 else f"{both[0]} is"
    raise DataError(f"LFW: {who} listed in both {paths['peopleDevTrain.txt']} and "
                    f"{paths['peopleDevTest.txt']}; the published View 1 lists are disjoint, "
                    "so these are not the published files. Delete both and download them again "
                    f"({_UMASS}/peopleDevTrain.txt, {_UMASS}/peopleDevTest.txt).")


def parse_parts_list(path: str) -> list[Key]:
  """Reads parts_{train,validation,test}.txt: `<Name> <n>` lines (n not zero-padded).

  Args:
    path: the list file.
  Returns:
    (name, n) per `<Name> <n>` line, in file order. Lines of another form are skipped; a
    file with none gives an empty list (no error).
  Raises:
    DataError: a number holds a character Python takes for a digit that is not 0-9 (a
      damaged byte), naming the file and line.
  """
  keys = []
  for number, line in tfds_lib.numbered_lines(path):
    parts = line.split()
    if len(parts) == 2 and (count := _count(parts[1], path, number)) is not None:
      keys.append((parts[0], count))
  return keys


def _count(field: str, path: str, number: int) -> Optional[int]:
  """A people file's or parts list's number field: its value, None for a field that is no
  number at all (the line is of another form), or a `DataError` for one Python calls a digit
  that is not 0-9 (was: ValueError traceback from int(); a damaged byte 0xB2 reads as '²')."""
  if not field.isdigit():
    return None
  if not re.fullmatch(r"[0-9]+", field):
    raise DataError(f"{path}, line {number}: {field!r} is not a number (a damaged byte?); the "
                    f"file is damaged. Download it again ({_people_url(path)}).")
  return int(field)


# ------------------------------------------------------------------------------- pixels


def load_image(images_root: str, key: Key) -> np.ndarray:
  """The funneled image cropped to CROP_BOX and resized: uint8 [64, 64, 3].

  Args:
    images_root: the unpacked lfw_funneled/ folder (`<Name>/<Name>_<NNNN>.jpg`, 250x250).
    key: (name, image number).
  Returns:
    uint8 [64, 64, 3] RGB, CROP_BOX resized with PIL's antialiased bilinear filter.
  Raises:
    DataError: the image file does not exist, is truncated, not an image or not 250x250 (the
      message names the archive and its unpacked folder to delete).
  """
  path = os.path.join(images_root, key[0], image_name(key) + ".jpg")
  # Built only on failure: this runs once per image.
  fix = lambda: tfds_lib.redownload(_FUNNELED, images_root)
  if not os.path.exists(path):
    raise DataError(f"LFW: {path} is listed (View 1 or part labels) but not in "
                    f"lfw-funneled.tgz; the archive is incomplete: {fix()}")
  image = tfds_lib.read_source_image(path, "RGB", fix)
  _check_source_size(path, image.size, fix)
  return np.asarray(tfds_lib.crop_resize(image, CROP_BOX, IMAGE_SIZE))


def _check_source_size(path: str, size: tuple[int, int], fix: Any) -> None:
  """The funneled images and their part labels are 250x250 (CROP_BOX is placed in them)."""
  if tuple(size) != (SOURCE_SIZE, SOURCE_SIZE):
    raise DataError(f"LFW: {path} is {size[0]}x{size[1]}, not {SOURCE_SIZE}x{SOURCE_SIZE} as "
                    "every published funneled image and part label; the file is not the "
                    f"published one: {fix() if callable(fix) else fix}")


def load_part_mask(labels_root: str, key: Key) -> np.ndarray:
  """Foreground (hair + face) of a part-label image, cropped like the image: uint8 [64, 64].

  The labels are one-hot R = hair, G = face, B = background, so foreground = 255 - B.

  Args:
    labels_root: the unpacked parts_lfw_funneled_gt_images/ folder (`<Name>_<NNNN>.ppm`).
    key: (name, image number).
  Returns:
    uint8 [64, 64], 255 = hair or face; CROP_BOX resized like `load_image` (soft edges).
  Raises:
    DataError: the label image does not exist, PIL cannot read it or it is not 250x250 (the
      message says what to delete and which archive to download again).
  """
  path = os.path.join(labels_root, image_name(key) + ".ppm")
  # One line, naming the unpacked folder (was: several lines with a literal <data_dir>, and
  # a damaged header PIL's ValueError, a traceback).
  again = lambda: tfds_lib.redownload(_PARTS, labels_root)
  fg = 255 - np.asarray(tfds_lib.read_source_image(path, "RGB", again))[..., 2]
  _check_source_size(path, fg.shape[::-1], again)
  return np.asarray(tfds_lib.crop_resize(tfds_lib.pil_mask(fg), CROP_BOX, IMAGE_SIZE))


def _find_dir(root: str, source: tfds_lib.Source) -> str:
  """The folder `source` unpacks to (its `extracted`) directly in root or one level below
  (archives differ in nesting)."""
  name = source.extracted
  for candidate in (os.path.join(root, name), root):
    if os.path.basename(candidate.rstrip(os.sep)) == name and os.path.isdir(candidate):
      return candidate
  for entry in sorted(os.listdir(root)):
    sub = os.path.join(root, entry, name)
    if os.path.isdir(sub):
      return sub
  raise DataError(f"{source.filename}: no folder {name}/ inside {root}; the archive is not the "
                  f"published one: {tfds_lib.redownload(source, root)}")


def _check_parts_lists(lists: dict[str, list[Key]], paths: dict) -> None:
  """Refuses a parts list with no `<Name> <n>` line, and lists that share an image.

  Was: an empty or garbled parts_train.txt said "none of the images ... has a label image",
  an empty parts_test.txt gave test_iou None without a word, and an image in both
  parts_train.txt and parts_test.txt was trained on and then scored as held out. The
  published lists (1,500 / 500 / 927 images) are disjoint.
  """
  for split, keys in lists.items():
    if not keys:
      path = paths[f"parts_{split}.txt"]
      url = next(src.url for src in MASK_SOURCES if src.filename == f"parts_{split}.txt")
      raise DataError(f"LFW: {path} lists no images (no '<Name> <n>' line); the file is empty "
                      f"or not the published one. Delete it and download it again ({url}).")
  splits = list(lists)
  for i, a in enumerate(splits):
    for b in splits[i + 1:]:
      both = sorted(set(lists[a]) & set(lists[b]))
      if both:
        raise DataError(f"LFW: parts_{a}.txt and parts_{b}.txt both list {len(both)} "
                        f"image(s) (e.g. {image_name(both[0])}); the published lists are "
                        "disjoint, so these are not the published files. Delete "
                        f"{paths[f'parts_{a}.txt']} and {paths[f'parts_{b}.txt']} and "
                        "download them again.")


# ------------------------------------------------------------------------------- builder


# skip_registration: loaded by class, never by name, so TFDS's global registry stays clean.
class A2iLfw(tfds_lib.BuilderMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """LFW View 1 at 64x64 with 73 attributes (and masks in config "masks")."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="masks", description="with foreground masks"),
      tfds.core.BuilderConfig(name="no_masks", description="images and attributes only"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = tfds_lib.instructions(SOURCES, "<data_dir>/manual/lfw")

  def __init__(self, *, mask_net: Optional[face_masks.MaskNetConfig] = None, **kwargs: Any):
    self._mask_net = mask_net or face_masks.MaskNetConfig.from_config()
    super().__init__(**kwargs)

  @property
  def _with_masks(self) -> bool:
    return self.builder_config.name == "masks"

  def _info(self) -> Any:
    return tfds_lib.dataset_info(
        tfds, builder=self, description=__doc__.split("\n", 1)[0],
        features=tfds_lib.feature_dict(tfds, IMAGE_SIZE, NUM_ATTRIBUTES, self._with_masks),
        metadata=tfds.core.MetadataDict(),
        homepage="http://vis-www.cs.umass.edu/lfw/",
        disable_shuffling=True)  # File order defines the validation split; keep it.

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    sources = SOURCES if self._with_masks else IMAGE_SOURCES
    paths = tfds_lib.fetch_sources(dl_manager, sources, self._manual_dir,
                                   self._allow_download, "LFW")
    self._record_sources(paths)
    unpack_root = os.path.join(os.fspath(dl_manager.download_dir), "unpacked")
    images_root = _find_dir(tfds_lib.unpack(paths["lfw-funneled.tgz"], unpack_root,
                                            self._progress, _FUNNELED.url), _FUNNELED)
    names, rows = parse_attributes(paths["lfw_attributes.txt"])
    check_rows_in_archive(paths["lfw_attributes.txt"], rows, images_root)
    split_keys = {}
    people_train = parse_people(paths["peopleDevTrain.txt"])
    people_test = parse_people(paths["peopleDevTest.txt"])
    check_people_disjoint(people_train, people_test, paths)
    self.info.metadata[DROPPED_KEY] = check_view1_rows(
        {"train": people_train, "test": people_test}, rows, paths["lfw_attributes.txt"])
    for split, people in (("train", people_train), ("test", people_test)):
      kept = [k for k in people if k in rows]
      # A warning when images are dropped (was INFO, review finding): the training data are
      # smaller than the View 1 lists say.
      log = logging.warning if len(kept) < len(people) else logging.info
      log("LFW %s: %d View 1 images, %d with attributes (%d dropped: no row in %s)", split,
          len(people), len(kept), len(people) - len(kept), "lfw_attributes.txt")
      split_keys[split] = kept
    n_train = int(np.floor((1.0 - VALIDATION_FRACTION) * len(split_keys["train"])))
    split_keys["validation"] = split_keys["train"][n_train:]
    split_keys["train"] = split_keys["train"][:n_train]
    if min(len(v) for v in split_keys.values()) == 0:
      raise DataError("LFW: a split is empty after joining the View 1 lists with "
                      f"lfw_attributes.txt ({ {k: len(v) for k, v in split_keys.items()} }); "
                      "check that the files are the published ones.")

    bar = tfds_lib.progress_bar(self._progress)
    wanted = [k for keys in split_keys.values() for k in keys]
    masks: dict[Key, np.ndarray] = {}
    predicted: set[Key] = set()
    if self._with_masks:
      labels_root = _find_dir(
          tfds_lib.unpack(paths["parts_lfw_funneled_gt_images.tgz"], unpack_root,
                          self._progress, _PARTS.url), _PARTS)
      masks, predicted, report = self._masks(paths, images_root, labels_root, wanted, bar)
      self.info.metadata["mask_net"] = report
    self.info.metadata["attributes_names"] = list(names)
    self.info.metadata["attributes_kinds"] = ["continuous"] * NUM_ATTRIBUTES
    self.info.metadata["crop_box"] = list(CROP_BOX)
    self.info.metadata["counts"] = {k: len(v) for k, v in split_keys.items()}
    return {split: self._generate_examples(keys, images_root, rows, masks, predicted)
            for split, keys in split_keys.items()}

  def _masks(self, paths: dict, images_root: str, labels_root: str, wanted: list[Key],
             bar: Any) -> tuple[dict, set, dict]:
    """Ground-truth masks where labelled, network masks elsewhere, and the IoU report."""
    # Every listed image has its label image in the published archive (2,927 in all): one
    # missing is an incomplete archive (`load_part_mask` says so), not an image to predict.
    lists = {s: parse_parts_list(paths[f"parts_{s}.txt"]) for s in ("train", "validation",
                                                                     "test")}
    _check_parts_lists(lists, paths)
    labelled = {k for keys in lists.values() for k in keys}
    gt = {k: load_part_mask(labels_root, k) for k in bar(sorted(labelled), "part labels")}
    stack = lambda keys: (np.stack([load_image(images_root, k) for k in keys]),
                          np.stack([gt[k] for k in keys]))
    train_x, train_m = stack(lists["train"])
    test_x, test_m = stack(lists["test"]) if lists["test"] else (None, None)
    net, report = face_masks.train_and_evaluate(train_x, train_m, test_x, test_m,
                                                self._mask_net, progress=self._progress)
    logging.info("LFW mask network: IoU %.4f on %d held-out labelled images (parts_test)",
                 float("nan") if report["test_iou"] is None else report["test_iou"],
                 report["num_test"])
    todo = [k for k in dict.fromkeys(wanted) if k not in gt]
    masks = dict(gt)
    for start in bar(range(0, len(todo), 512), "predicting masks"):
      keys = todo[start:start + 512]
      pred = face_masks.predict(net, np.stack([load_image(images_root, k) for k in keys]))
      masks.update(zip(keys, pred))
    report["num_labelled_used"] = sum(k in gt for k in dict.fromkeys(wanted))
    report["num_predicted"] = len(todo)
    return masks, set(todo), report

  def _generate_examples(self, keys: list[Key], images_root: str, rows: dict,
                         masks: dict, predicted: set) -> Iterator[tuple[str, dict]]:
    for k in keys:
      name = image_name(k)
      ex = {"id": name, "attributes": rows[k],
            "image": Image.fromarray(load_image(images_root, k))}
      if self._with_masks:
        ex["mask"] = tfds_lib.pil_mask(masks[k])
        ex["mask_predicted"] = k in predicted
      yield name, ex


def check_mask_net(report: Any, wanted: face_masks.MaskNetConfig, masks_dir: str) -> None:
  """Refuses prepared masks made with other `data.mask_net` settings than `wanted`.

  The masks are made once, when LFW is prepared; a changed setting would otherwise be
  silently ignored.

  Args:
    report: the prepared copy's metadata "mask_net" (`face_masks.train_and_evaluate`'s
      report: every `MaskNetConfig` field as it was).
    wanted: the settings this run asks for.
    masks_dir: the prepared masks copy (`<data_dir>/a2i_lfw/masks`), for the message.
  Raises:
    DataError: naming each setting that differs (a setting the report lacks counts as
      differing), the folder to delete and the values to set back.
  """
  report = report if isinstance(report, dict) else {}
  differ = [(k, report.get(k, "unknown"), v) for k, v in dataclasses.asdict(wanted).items()
            if k not in report or report[k] != v]
  if differ:
    made = ", ".join(f"{k}={old}" for k, old, _ in differ)
    asked = ", ".join(f"{k}={new}" for k, _, new in differ)
    back = " ".join(f"--config.data.mask_net.{k}={old}" for k, old, _ in differ
                    if old != "unknown")
    raise DataError(f"LFW's prepared masks in {masks_dir} were made with data.mask_net {made}, "
                    f"but this run asks for {asked}; delete {masks_dir} to make them again "
                    "with these settings" + (f", or set them back ({back})." if back else "."))


def _check_text_sources(manual_dir: str, masks: bool) -> None:
  """Reads and checks the text source files that are in `manual_dir`, as the preparation
  will: `load` calls it before the builder writes anything in data_dir. Was: a damaged
  lfw_attributes.txt or people file was refused only after the 233 MB archive had been
  unpacked and the copy's folder, lock file and TFDS's config record made. Files not there
  yet (to be downloaded) are checked once they are, while preparing.

  Args:
    manual_dir: `<data_dir>/manual/lfw`.
    masks: the parts lists are needed (the "masks" copy).
  Raises:
    DataError: as `parse_attributes`, `parse_people`, `check_people_disjoint`,
      `check_view1_rows` and the parts lists' checks, naming the file.
  """
  sources = SOURCES if masks else IMAGE_SOURCES
  paths = {s.filename: os.path.join(manual_dir, s.filename) for s in sources if not s.extracted}
  here = {name for name, path in paths.items() if os.path.isfile(path)}
  rows = parse_attributes(paths["lfw_attributes.txt"])[1] if "lfw_attributes.txt" in here else None
  people = {n: parse_people(paths[n]) for n in ("peopleDevTrain.txt", "peopleDevTest.txt")
            if n in here}
  if len(people) == 2:
    check_people_disjoint(people["peopleDevTrain.txt"], people["peopleDevTest.txt"], paths)
    # Not where rows are numbered from 0: the preparation's `check_rows_in_archive` names
    # that cause first (every row on the next image), with the archive at hand.
    if rows is not None and not any(k[1] == 0 for k in rows):
      check_view1_rows({"train": people["peopleDevTrain.txt"],
                        "test": people["peopleDevTest.txt"]}, rows, paths["lfw_attributes.txt"])
  lists = {s: parse_parts_list(paths[f"parts_{s}.txt"]) for s in ("train", "validation", "test")
           if f"parts_{s}.txt" in here}
  if len(lists) == 3:
    _check_parts_lists(lists, paths)


def load(*, data_dir: str, masks: bool, image_size: int = IMAGE_SIZE,
         allow_download: bool = True, mask_net: Optional[face_masks.MaskNetConfig] = None,
         progress: bool = True) -> Any:
  """Prepares LFW (once) and returns its `Dataset`.

  Args:
    data_dir: root of prepared data; source files go in `<data_dir>/manual/lfw/`.
    masks: keep the foreground masks. When False the returned splits have none
      (`masks` and `mask_predicted` None, as `cub.load` does): the "no_masks" copy is read
      where it is prepared; else a copy prepared with masks is read (not prepared again)
      and its masks dropped; else the "no_masks" config is prepared, which needs neither
      the part labels nor the network. A masks copy made after the no_masks one (perhaps
      from other source files) never replaces it.
    image_size: the size training wants (stored at 64; other sizes are resized at load).
    allow_download: fetch missing source files from the network.
    mask_net: the mask network's training settings (default: configs/default.py's). With
      `masks`, a copy prepared with other settings is refused (`check_mask_net`).
    progress: progress bars.
  Returns:
    A `Dataset` named "lfw".
  Raises:
    DataError: a source file is damaged, or (with `masks`) the prepared masks were made with
      other `mask_net` settings, or `data_dir` cannot be used (`tfds_lib.data_dir_path`), or
      lfw_attributes.txt has no row for too many View 1 images (`check_view1_rows`).
  """
  # Up front: was a traceback from the writer; or, without a home folder, data put in a
  # folder named "~" (fault hunt).
  data_dir = tfds_lib.data_dir_path(data_dir)
  manual_dir = os.path.join(data_dir, "manual", "lfw")
  # Before the builder makes its folders (with downloads on too: offline, was a refusal that
  # left folders, a lock file and TFDS's config record in data_dir; fault hunt); a copy with
  # masks serves all.
  copies = [os.path.join(data_dir, A2iLfw.name, c, str(A2iLfw.VERSION))
            for c in (("masks",) if masks else ("masks", "no_masks"))]
  # Not while another process prepares (its lock held): this one waits and reads its copy.
  tfds_lib.check_sources_first(data_dir, copies, SOURCES if masks else IMAGE_SOURCES,
                               manual_dir, "LFW", allow_download,
                               [tfds_lib.preparation_lock(c, A2iLfw.name) for c in copies])
  config = "masks"
  if not masks:  # The no_masks copy where it is prepared: a masks copy made later (from other
    # source files) must not silently replace the data a CVAE run started on (review finding).
    config = "no_masks"
    without = tfds_lib.open_builder(A2iLfw, data_dir=data_dir, config="no_masks")
    with tfds_lib.quiet_tfds():
      if not without.is_prepared():
        with_masks = tfds_lib.open_builder(A2iLfw, data_dir=data_dir, config="masks")
        config = "masks" if with_masks.is_prepared() else "no_masks"
  copy = os.path.join(data_dir, A2iLfw.name, config, str(A2iLfw.VERSION))
  was_prepared = os.path.lexists(copy)
  if not was_prepared:
    _check_text_sources(manual_dir, masks=config == "masks")  # Before the builder writes.
  builder_mask_net = mask_net or face_masks.MaskNetConfig.from_config()
  builder = tfds_lib.open_builder(A2iLfw, data_dir=data_dir, config=config,
                                  manual_dir=manual_dir, allow_download=allow_download,
                                  mask_net=builder_mask_net, progress=progress)
  check = None
  if masks:
    wanted, masks_dir = builder_mask_net, os.path.join(data_dir, A2iLfw.name, "masks")
    check = lambda meta: check_mask_net(meta.get("mask_net"), wanted, masks_dir)
  ds = tfds_lib.load(builder, manual_dir=manual_dir,
                     download_dir=os.path.join(data_dir, "downloads"), image_size=image_size,
                     progress=progress, check_metadata=check)
  dropped = ds.metadata.get(DROPPED_KEY)
  if was_prepared and isinstance(dropped, dict) and any(dropped.values()):
    # Was said once, at preparation, then never again (review finding).
    logging.info("LFW: %s View 1 image(s) are not in the prepared copy at %s (%s): "
                    "lfw_attributes.txt had no row for them when it was prepared",
                    sum(dropped.values()), copy,
                    ", ".join(f"{v} of {k}" for k, v in dropped.items()))
  splits = ds.splits if masks else {
      k: dataclasses.replace(v, masks=None, mask_predicted=None) for k, v in ds.splits.items()}
  return dataclasses.replace(ds, name="lfw", splits=splits)
