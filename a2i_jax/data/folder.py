"""Your own dataset: a folder of images with an attribute table (a TFDS builder).

Layout:

  <path>/images/<file>          any size, any format PIL reads (JPEG, PNG, ...); directly in
                                images/ (sub-folders are not supported)
  <path>/attributes.csv         a `filename` column (file names inside images/), one numeric
                                column per attribute (the header names it, each name once),
                                and optionally a `split` column (train / validation / test,
                                or training / val / valid / dev / testing, in any case); the
                                names `filename` and `split` match in any case (`Split`),
                                every other column is an attribute. UTF-8 (with or without a
                                BOM) or UTF-16 with a BOM; other bytes are read as
                                Windows-1252 (else Latin-1), with a warning
  <path>/masks/<file>           optional, same file names as images/, white (255) =
                                foreground, black (0) = background, the same size as the
                                image; coloured masks and label maps (a brightest value of
                                1..127, e.g. 0/1 labels) are refused

Rules:

- Every CSV row needs its image; a row without one is an error naming the file. A name
  is matched exactly (case included) against the files directly in images/; a leading `./`
  is dropped, and so are spaces around the name (and a leading `.\\`) unless the name on
  disk has them. Images that no row names are skipped, and the count (with a few names) is
  logged.
- Attribute cells must be finite numbers within float32's range, and a non-zero one must not
  be so small that float32 reads it as 0 (an error names the file, line, column and value).
  Columns holding only 0 and 1 are "binary", others "continuous".
- With masks/ present (and `config.data.masks` True), every image needs a mask of its size
  as shown and of its EXIF orientation (each is turned by its own before use), or an
  untagged mask whose size matches the image only as shown (drawn on the upright image).
- Without a `split` column, rows go round-robin in file order: the 9th of every 10 to
  validation, the 10th to test, the rest to train (so at least 10 rows are needed). Adding,
  removing or reordering rows then moves images between splits; a resumed run refuses splits
  that hold other images than when it started (`train_eval.check_same_splits`). A `split`
  column keeps each image in its split.
- Images are cut to a square and resized to `config.data.image_size`: "centre_crop" takes
  the largest centred square, "stretch" resizes the whole image (changing its aspect). Images
  upscaled more than 4x are counted in a warning.
- Images and masks are read by `a2i_jax.inputs.read_image`: every mode and bit depth PIL
  opens, values scaled to 8 bits, transparency over black, EXIF orientation applied.

The prepared copy lives in `<data_dir>/folder/<folder name>-<fingerprint>/` (the folder name
cut short where the whole would pass 255 bytes: `_prepared_name`); the fingerprint covers the
CSV, the name, size and modification time of every image (and mask) a row names, the image
size, the resize mode and `PREPARATION_VERSION`, so editing the folder (or a release that
reads images otherwise) prepares it again; one warning then names the earlier copies and
their size (each is kept: another config, of another image size, may use it). A file
rewritten at its size with its modification time put back (`exiftool -P`, `cp -p`, `rsync
-a`) is caught by the copy's record of its sources (`check_sources`): a load that finds one
refuses the copy, naming the file and the copy to delete. Every image and mask a row names
is read and checked before anything is written in data_dir, so a file the preparation
refuses leaves nothing behind (nor what an earlier stopped attempt on the same files left);
a preparation that fails otherwise removes the folders it made where they are left empty,
never one that was there before.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import unicodedata
import warnings
from typing import Any, Iterator, Optional

import numpy as np
from absl import logging
from PIL import Image

from a2i_jax import files
from a2i_jax.data import tfds_lib
from a2i_jax.data.base import (DataError, DatasetNotPreparedError, RESIZE_MODES, SPLITS,
                               check_choice)
from a2i_jax.inputs import read_image, shown_path, shown_size, too_many_pixels

tfds = tfds_lib.import_tfds()

VALIDATION_SLOT, TEST_SLOT = 8, 9  # Round-robin positions (of 10) without a split column.
# The split column's accepted values (lower-cased) and the split each one means.
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation",
                 "val": "validation", "valid": "validation", "dev": "validation",
                 "test": "test", "testing": "test"}
MAX_UPSCALE = 4  # Images enlarged more than this many times are counted in a warning.
# Part of every prepared copy's fingerprint: raise it whenever the preparation would write
# other pixels or values from the same files (how images are read, cropped or resized), so
# that copies prepared by older code are prepared again, not reused. 2: `read_image`'s rules
# for transparency and 16-bit images (copies of 1 read them otherwise). 3: the transparent
# pixels of 1-, 2- and 4-bit grey PNGs read as black (were white or grey). 4: uncompressed
# TIFFs turned a quarter by their EXIF orientation (modes L, P, RGBA, CMYK, I;16) read right
# (were scrambled). 5: the copy records its sources' SHA-256 (`SOURCES_RECORD`), so that a
# file rewritten at its size and modification time is refused; a copy of 4 had no record and
# served such a file's old pixels (a review: it matched again once the key was names, sizes
# and times).
PREPARATION_VERSION = 5
# The copy's record of its sources, in the copy's folder (sealed by its checksums with it), and
# the change times and inode numbers it last matched, beside the copy (`check_sources`).
SOURCES_RECORD = "a2i_sources.json"
SOURCE_STAMPS = "a2i_source_stamps.json"


@dataclasses.dataclass(frozen=True)
class Table:
  """What attributes.csv says, checked against the folder.

  Attributes:
    names: attribute column names, in CSV order.
    kinds: "binary" or "continuous" per attribute.
    rows: (file name, float32 [A], split) per CSV row, in file order.
    masks_dir: the masks folder, or None.
    header: every column name of the CSV, in file order (stored with the prepared data as
      the metadata "header", so a run can tell when the CSV changed after training).
  """
  names: tuple[str, ...]
  kinds: tuple[str, ...]
  rows: tuple[tuple[str, np.ndarray, str], ...]
  masks_dir: Optional[str]
  header: tuple[str, ...] = ()


def scan(path: str, masks: bool) -> Table:
  """Reads and checks `path`/attributes.csv against `path`/images (and masks).

  The header's `filename` and `split` columns are found in any case ("Filename",
  "Split"); every other column is an attribute.

  Args:
    path: the dataset folder.
    masks: whether masks are wanted (then masks/ must exist).
  Returns:
    The checked `Table`.
  Raises:
    DatasetNotPreparedError: the folder, images/ or attributes.csv is missing.
    DataError: naming the file (and row, column) of any other problem, including a header
      with no `filename` column, two columns that both match `filename` or `split`, an
      attribute name that is empty or used twice, a row naming an image not directly in
      images/ under that exact name (a leading "./" aside, and spaces around it and a
      leading ".\\" unless the name on disk has them), an attribute value outside float32's
      range or so small that it would read as 0, or masks with no pixel above 1 (0/1
      labels).
  """
  path = tfds_lib.check_home(path, "data.path") if path else path
  csv_path = os.path.join(path, "attributes.csv")
  images_dir = os.path.join(path, "images")
  if not path:
    raise DatasetNotPreparedError("data.name='folder' needs the folder: pass "
                                  "--config.data.path=/path/to/your/folder (see README, "
                                  "'Datasets').")
  for p in (images_dir, csv_path):
    if not os.path.exists(p):
      raise DatasetNotPreparedError(
          f"{shown_path(p)} does not exist{_layout_hint(path, os.path.basename(p))}. An own "
          "dataset is a folder with images/, attributes.csv (a 'filename' column plus one "
          "numeric column per attribute, optional 'split') and optional masks/ (see README, "
          "'Datasets').")
  if not os.path.isdir(images_dir) or os.path.isdir(csv_path):
    raise DataError(f"{shown_path(images_dir)} must be a folder and {shown_path(csv_path)} a "
                    "file.")
  masks_dir = os.path.join(path, "masks")
  if masks and not os.path.isdir(masks_dir):
    # With the hint (was: a "Masks" folder told "does not exist; add masks", as images/ was).
    raise DataError(f"config.data.masks=True but {shown_path(masks_dir)} does not exist"
                    f"{_layout_hint(path, 'masks')}; add masks (white = foreground, same "
                    "file names as images/) or set --config.data.masks=False (and a model "
                    "without masks, e.g. cvae).")
  header, body = _read_csv(csv_path)
  # The two reserved column names match in any case ("Filename", "SPLIT").
  reserved = {key: [i for i, h in enumerate(header) if h.lower() == key]
              for key in ("filename", "split")}
  for key, cols in reserved.items():
    if len(cols) > 1:
      raise DataError(f"{csv_path}: the header has {len(cols)} {key!r} columns "
                      f"({', '.join(repr(header[i]) for i in cols)}; names match in any "
                      "case); keep one and rename the others.")
  if not reserved["filename"]:
    first = ",".join(header)
    if first.lower().startswith("sep=") and len(header) <= 2:  # Excel's separator line.
      raise DataError(f"{csv_path} starts with the line {first!r}, Excel's note of the "
                      "separator; delete that line, so that the header comes first.")
    for sep, name in ((";", "semicolons"), ("\t", "tabs")):
      if len(header) == 1 and sep in header[0]:  # Excel's CSV in many locales.
        raise DataError(f"{csv_path} separates its columns with {name}; save it with commas "
                        "(\"CSV UTF-8\" in Excel), with '.' as the decimal point.")
    raise DataError(f"{csv_path}: the header {header} has no 'filename' column (any case).")
  fcol = reserved["filename"][0]
  scol = reserved["split"][0] if reserved["split"] else None
  acols = [i for i, h in enumerate(header) if i not in (fcol, scol)]
  if not acols:
    raise DataError(f"{csv_path}: no attribute columns besides 'filename'/'split'.")
  names = tuple(header[i] for i in acols)
  _check_names(csv_path, header, names)
  present = set(os.listdir(images_dir))
  composed = _by_composed_name(present)
  rows, seen = [], set()
  for line, r in body:
    if len(r) != len(header):
      raise DataError(f"{csv_path}, line {line}: {len(r)} cells, the header has "
                      f"{len(header)}.")
    # A name typed on one system and the file made on another (macOS writes decomposed
    # accents, "e" + U+0301; most editors composed ones, U+00E9) name the same file: the row
    # takes the name on disk (was: "does not exist").
    # The cell as this process's encoding writes it, else its UTF-8 bytes (`_as_on_disk`).
    for cell in dict.fromkeys((r[fcol], _as_on_disk(r[fcol]))):
      fname = _file_name(cell, present)
      fname = fname if fname in present else composed.get(_composed(fname), fname)
      if fname in present:
        break
    if fname in seen:
      raise DataError(f"{csv_path}, line {line}: {fname} is listed twice.")
    seen.add(fname)
    _check_listed(csv_path, line, images_dir, fname, present)
    values = []
    for i in acols:
      try:
        # float() takes "_" between digits ("3_5" is 35): a bin label was read as a number
        # without a word (review finding). No other form it accepts holds "_".
        v = math.nan if "_" in r[i] else float(r[i])
      except ValueError:
        v = math.nan
      if not math.isfinite(v):
        raise DataError(f"{csv_path}, line {line} ({fname}): column {header[i]!r} holds "
                        f"{r[i]!r}, not a finite number; {_number_fix(r[i], scol is None)}.")
      if abs(v) > float(np.finfo(np.float32).max):  # Attributes are float32: 1e39 overflows.
        raise DataError(f"{csv_path}, line {line} ({fname}): column {header[i]!r} holds "
                        f"{r[i]!r}, too large for float32 (at most about 3.4e38).")
      if v != 0 and np.float32(v) == 0:  # 1e-50 would read as 0 (and could make a column
        # of 0, 1 and 1e-50 "binary"); was kept as 0 without a word.
        raise DataError(f"{csv_path}, line {line} ({fname}): column {header[i]!r} holds "
                        f"{r[i]!r}, too small for float32 (non-zero, but it would read as 0; "
                        "the smallest is about 1.4e-45): write 0, or rescale the column.")
      values.append(v)
    if scol is None:
      slot = len(rows) % 10
      split = ("validation" if slot == VALIDATION_SLOT else
               "test" if slot == TEST_SLOT else "train")
    else:
      split = SPLIT_ALIASES.get(r[scol].strip().lower())
      if split is None:
        raise DataError(f"{csv_path}, line {line} ({fname}): split {r[scol]!r} is not one "
                        f"of {', '.join(SPLIT_ALIASES)} (any case).")
    rows.append((fname, np.asarray(values, np.float32), split))
  if masks:
    mask_names = _by_composed_name(os.listdir(masks_dir))
    for fname, _, _ in rows:
      _check_mask(os.path.join(images_dir, fname), os.path.join(masks_dir, fname),
                  mask_names.get(_composed(fname)))
    _check_mask_values(masks_dir, [r[0] for r in rows])
  extra = sorted(present - seen)
  if extra:
    logging.warning("folder %s: %d file(s) in images/ have no row in attributes.csv and are "
                    "skipped (e.g. %s)", path, len(extra), ", ".join(extra[:3]))
  counts = {s: sum(r[2] == s for r in rows) for s in SPLITS}
  empty = [s for s, c in counts.items() if not c]
  if empty:
    how = ("add rows for them in the 'split' column" if scol is not None else
           "add a 'split' column or use at least 10 images")
    raise DataError(f"{csv_path}: the {', '.join(empty)} split(s) would be empty "
                    f"({counts}); {how}.")
  table = np.stack([r[1] for r in rows])
  kinds = tuple("binary" if np.isin(table[:, j], (0.0, 1.0)).all() else "continuous"
                for j in range(table.shape[1]))
  return Table(names, kinds, tuple(rows), masks_dir if masks else None, tuple(header))


def _number_fix(cell: str, no_split: bool = False) -> str:
  """What to write instead of `cell`, an attribute cell that is not a finite number. Was no
  fix at all, e.g. for pandas' "True"/"False" (review finding). `no_split`: the CSV has no
  `split` column (a column of split names under another name, e.g. "subset", was told to
  "write a number"; a fault hunt's finding)."""
  word = cell.strip().lower()
  if word in SPLIT_ALIASES:
    return ("it looks like a split: rename the column to 'split'" if no_split else
            "it looks like a split, which the 'split' column gives: delete this column")
  if word in ("true", "false"):  # pandas' DataFrame.to_csv writes a bool column so.
    return "write 1 and 0 instead (pandas: df.astype(int))"
  if "_" in word:
    return ("digits joined by '_' are a label (a bin?), not a number: write one number per "
            "cell (e.g. the bin's index or middle), or delete the column")
  return ("write a number there (with '.' as the decimal point), or delete the row or the "
          "column")


def _layout_hint(path: str, wanted: str) -> str:
  """Why `path`/`wanted` (images, attributes.csv or masks) is not there, where the folder
  shows it: data.path names a file, the images/ folder itself, or a folder holding `wanted`
  spelled otherwise ("Images", "Attributes.csv", "Masks"); "" otherwise. Was only "does not
  exist"."""
  if os.path.isfile(path):
    return (f" (config.data.path={path} is a file: pass the folder that holds images/ and "
            "attributes.csv)")
  parent = os.path.dirname(path)
  if (os.path.basename(path) == "images"
      and os.path.isfile(os.path.join(parent, "attributes.csv"))):
    return (f" (config.data.path={path} is the images/ folder itself: pass the folder that "
            f"holds it, {parent})")
  try:
    spelled = sorted(e for e in os.listdir(path) if e.lower() == wanted.lower())
  except OSError:
    return ""
  return (f" (the folder holds {spelled[0]!r}; names are matched exactly, so rename it "
          f"{wanted!r})" if spelled else "")


def _composed(name: str) -> str:
  """`name` with its accents composed (Unicode NFC), as most systems but macOS write them."""
  return unicodedata.normalize("NFC", name)


def _by_composed_name(names: Any) -> dict[str, str]:
  """File names on disk by their composed form (`_composed`)."""
  return {_composed(n): n for n in names}


def _as_on_disk(cell: str) -> str:
  """A CSV cell (UTF-8 text) as the file system's name for the same bytes: the cell itself in
  UTF-8 mode; under a Latin-1 locale outside it, "visage_é" as the name of a file named by
  its UTF-8 bytes (was: "does not exist"; fault hunt). `scan` tries it after the cell as this
  process writes it (a file named by its Latin-1 bytes, made on that system: read-through)."""
  return os.fsdecode(cell.encode("utf-8", "surrogateescape"))


def _file_name(cell: str, present: Any = ()) -> str:
  """A CSV cell's image name as it is matched against images/ (`present`, the names in it):
  the cell as written (its leading "./" dropped) where that is a name in images/: names are
  matched exactly, and a name on disk may start or end with spaces (was: "does not exist",
  review finding; then the stripped name, where both were files: a fault hunt's finding).
  Otherwise without surrounding spaces and leading "./" or Windows' ".\\" (which name the same
  file; ".\\" was "does not exist", a fault hunt's finding)."""
  exact = _without_dot_slash(cell)
  return exact if exact in present else _without_dot_slash(cell.strip(), ("./", ".\\"))


def _without_dot_slash(name: str, prefixes: tuple[str, ...] = ("./",)) -> str:
  """`name` without its leading "./" (any number of them; of any of `prefixes`)."""
  while name.startswith(prefixes):
    name = name[2:]
  return name


def _check_listed(csv_path: str, line: int, images_dir: str, fname: str,
                  present: set[str]) -> None:
  """A listed image must be a file directly in images/, named exactly as on disk."""
  path = os.path.join(images_dir, fname)
  where = f"{csv_path}, line {line}:"
  if not fname:  # Was "the image <path>/images/ does not exist".
    raise DataError(f"{where} the filename cell is empty; write the name of an image in "
                    "images/, or delete the row.")
  if fname in present:
    if not os.path.isfile(path):
      raise DataError(f"{where} {path} is not an image file (a folder or a link to nothing); "
                      "replace it with the image or delete the row.")
    return
  base = os.path.basename(fname)
  # "/data/mine/images/a.png" or "images/a.png" (from the dataset folder) for images/a.png.
  named = os.path.join(os.path.dirname(images_dir), fname)
  if (base != fname and base in present and os.path.isfile(named)
      and os.path.samefile(named, os.path.join(images_dir, base))):
    raise DataError(f"{where} {fname!r} names the image by a path; the filename column holds "
                    f"names of files in images/: write {base!r}.")
  if os.path.isfile(path):  # Found, but not by its name in images/ itself.
    inside = os.path.abspath(images_dir)
    if os.path.commonpath([os.path.abspath(path), inside]) != inside:
      # "/elsewhere/a.png", "../a.png": was "is in a sub-folder of images/".
      raise DataError(f"{where} {fname} is outside images/; the filename column holds names of "
                      f"files in images/ itself: copy or link the image into {images_dir} and "
                      f"write {base!r}.")
    if "/" in fname or os.sep in fname:
      raise DataError(f"{where} {fname} is in a sub-folder of images/, and sub-folders are not "
                      "supported; move the image into images/ itself and name it there.")
    # A case-insensitive file system finds "IMG.png" as "img.png"; names match exactly.
    spelled = sorted(p for p in present if p.lower() == fname.lower())
    on_disk = f"is named {spelled[0]!r} on disk" if spelled else "is named differently on disk"
    raise DataError(f"{where} the image {fname!r} {on_disk}; names are matched exactly (case "
                    "included), so write the name as it is in images/.")
  # A name on disk with spaces around it ("a.png "): was only "does not exist".
  spaced = sorted(p for p in present if p != fname and p.strip() == fname)
  if spaced:
    raise DataError(f"{where} the image {fname!r} is named {spaced[0]!r} on disk, with spaces "
                    "around it; names are matched exactly: rename the file without the spaces, "
                    "or write its name with them in the filename cell.")
  # "images\a.png", "C:\Users\me\images\a.png": a Windows path to images/a.png (was only
  # "does not exist"; a fault hunt's finding). Unchecked: the path is another machine's.
  base = re.split(r"[\\/]", fname)[-1]
  if "\\" in fname and base in present:
    raise DataError(f"{where} {fname!r} names the image by a (Windows) path; the filename "
                    f"column holds names of files in images/: write {base!r}.")
  raise DataError(f"{where} the image {path} does not exist. Add it or delete the row.")


def _check_mask_values(masks_dir: str, names: list[str]) -> None:
  """Masks are 0 (background) to 255 (foreground, >127 after resizing): masks saved as 0/1
  labels would all read as background. Stops at the first mask with a pixel above 1."""
  for name in names:
    mask = np.asarray(Image.fromarray(read_image(os.path.join(masks_dir, name), DataError,
                                                 faint_ok=True)).convert("L"))
    if mask.max() > 1:
      return
  raise DataError(f"{masks_dir}: no mask has a pixel above 1, so every image would have no "
                  "foreground; the masks look like 0/1 labels. Save the foreground as 255 "
                  "(white) and the background as 0.")


# Masks are grey: a pixel whose channels differ by more than this is a colour (JPEG's rounding
# of a black-and-white mask stays far below it).
MASK_COLOUR_SPREAD = 48


def _mask_pixels(path: str, rgb: np.ndarray) -> np.ndarray:
  """A mask's grey levels, refusing masks that would silently read as something else.

  A mask is black (background) to white (foreground; above 127 counts as foreground). Coloured
  masks (red on black, palette class maps) and label maps whose brightest value is 1..127
  (0/1 labels, class indices; 1..32767 in a 16-bit image) would read as mostly or wholly
  background, so each is an error naming the file; an all-black mask (no foreground) is kept.

  Args:
    path: the mask file, for the messages.
    rgb: its pixels, uint8 [H, W, 3] (`read_image`).
  Returns:
    uint8 [H, W], the grey levels (PIL's "L" conversion).
  Raises:
    DataError: a coloured mask, or one with no pixel above 127 but some above 0.
  """
  channels = rgb.astype(np.int16)
  spread = channels.max(-1) - channels.min(-1)
  if spread.max() > MASK_COLOUR_SPREAD:
    y, x = np.unravel_index(int(spread.argmax()), spread.shape)
    colour = tuple(int(v) for v in rgb[y, x])
    raise DataError(f"{path} is coloured (pixel ({x}, {y}) is RGB {colour}); masks are black "
                    "(background) and white (foreground). Save it as a black-and-white "
                    "(greyscale) image.")
  grey = np.asarray(Image.fromarray(rgb).convert("L"))
  top, scale = int(grey.max()), 255
  if top <= 127:  # A 16-bit label map reads as black (0/1) or nearly (0/200): its own values.
    with Image.open(path) as im:
      if im.mode.startswith("I"):
        top, scale = int(np.asarray(im).max()), 65535
  if 0 < top <= scale // 2:
    raise DataError(f"{path}: its brightest pixel is {top} (of {scale}), so it has no "
                    "foreground (white, above half) at all; it looks like a label map (0/1 or "
                    f"class numbers). Save the foreground as white ({scale}) and the background "
                    "as black (0).")
  return grey


def _read_csv(csv_path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
  """(header, [(line number, cells)] of the non-blank rows), in any common text encoding.

  The header is the first row that is not blank (was: the first row, so a file starting with
  an empty line was refused as "the header [] has no 'filename' column", review finding). A
  row's number is the file line it starts on: a quoted cell may hold line breaks (Excel's
  Alt+Enter), so rows are not lines (was: the row's count, review finding).
  """
  with open(csv_path, "rb") as f:
    text, encoding = tfds_lib.decode_text(f.read())
  if encoding not in ("utf-8", "utf-16"):
    logging.warning("folder: %s is not UTF-8; read it as %s (save it as UTF-8 if its names "
                    "look wrong).", csv_path, encoding)
  try:
    if "\x00" in text:  # Binary, or UTF-16 without its BOM; newer `csv` takes NULs.
      raise csv.Error("it holds NUL bytes")
    reader, rows, start = csv.reader(io.StringIO(text, newline="")), [], 1
    for r in reader:  # `line_num`: the lines read so far, so where this row ends.
      if any(c.strip() for c in r):
        rows.append((start, r))
      start = reader.line_num + 1
    header = [h.strip() for h in rows[0][1]] if rows else []
    body = rows[1:]
  except csv.Error as e:
    raise DataError(f"{csv_path} is not a CSV text file ({e}); save it as CSV (UTF-8).") from None
  if not header:  # Was: "the header [] has no 'filename' column".
    raise DataError(f"{csv_path} is empty; write a header line (filename, one column per "
                    "attribute) and one row per image.")
  return header, body


def _check_names(csv_path: str, header: list[str], names: tuple[str, ...]) -> None:
  """Every attribute column needs a name of its own: `--attribute` picks columns by name."""
  for i, h in enumerate(header):
    if not h:
      raise DataError(f"{csv_path}: column {i + 1} of the header has no name; name every "
                      "column.")
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise DataError(f"{csv_path}: the header names the attribute column(s) "
                    f"{', '.join(map(repr, twice))} more than once; give every column its own "
                    "name.")


def _check_mask(image_path: str, mask_path: str, on_disk: Optional[str] = None) -> None:
  """A mask must exist and match its image's size (PIL reads only the headers here).
  `on_disk`: the masks/ file whose name composes to the image's, if any."""
  if not os.path.exists(mask_path) and on_disk is not None:
    raise DataError(f"{mask_path} does not exist, but {on_disk!r} in masks/ is the same name "
                    "with its accents written another way (Unicode composed against "
                    "decomposed); rename the mask to its image's name exactly.")
  if not os.path.exists(mask_path):
    raise DataError(f"{mask_path} does not exist: with masks/ in use every image needs a "
                    "mask of the same file name (white = foreground).")
  (iw, ih), image_turn = _header(image_path)
  (mw, mh), mask_turn = _header(mask_path)
  stored = lambda size, turn: size[::-1] if turn in (5, 6, 7, 8) else size  # Before turning.
  if image_turn != mask_turn and not (
      mask_turn == 1 and (mw, mh) == (iw, ih) and (mw, mh) != stored((iw, ih), image_turn)):
    # Was: each turned by its own tag, so a square phone photo stored sideways (tag 6) and a
    # mask drawn on its stored pixels (no tag) were read at right angles to each other
    # without a word; a landscape one was "a mask of another size" (review finding). A mask
    # whose size matches the image only as shown was drawn on the image as shown (an editor
    # shows it turned): the two lie on each other as read (read-through: was refused).
    raise DataError(f"{image_path} has EXIF orientation {_turn_text(image_turn)} but its "
                    f"mask {mask_path} has {_turn_text(mask_turn)}, and "
                    + ("their sizes do not show that the mask was drawn on the image as shown"
                       if mask_turn == 1 else "a mask turned by an orientation of its own does "
                       "not show how it was drawn on its image")
                    + ", so the two would be turned differently and the mask might not lie on "
                    "its image; save the image upright "
                    "(PIL: ImageOps.exif_transpose(Image.open(path)).save(...)) "
                    "with a mask drawn on the upright image, or give the mask the image's "
                    "orientation.")
  if (mw, mh) != (iw, ih):
    shown = " (both as shown, turned by their EXIF orientation)" if image_turn != 1 else ""
    raise DataError(f"{mask_path} is {mw}x{mh} but its image {image_path} is {iw}x{ih}"
                    f"{shown}; masks must match their images.")


def _turn_text(orientation: int) -> str:
  """An EXIF orientation as messages name it: "6", or "none (upright)" for 1."""
  return "none (upright)" if orientation == 1 else str(orientation)


def _header(path: str) -> tuple[tuple[int, int], int]:
  """An image file's (width, height) as shown (`inputs.shown_size`) and its EXIF orientation
  (1, upright, where it has none or one that is not 2-8), from its header alone."""
  try:
    with warnings.catch_warnings():  # PIL's two lines between half its bound and the bound.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(path) as im:
        turn = im.getexif().get(0x0112)
        return shown_size(im), turn if turn in range(2, 9) else 1
  except Image.DecompressionBombError as e:
    raise DataError(too_many_pixels(path, e)) from None
  except OSError as e:
    raise DataError(f"{path} is not an image PIL can read ({e}); replace or remove it.") from e


def _fingerprint(path: str, table: Table, image_size: int, resize: str) -> str:
  """What the prepared copy is made of: the CSV and the images (and masks) its rows name.

  Files no row names are skipped by the preparation, so they are left out here too: adding or
  removing one (or a broken link among them) changes nothing.

  Each file is known by its stat alone (a start reads no image): its size and modification
  time. A file rewritten at its size with its time put back keeps the key; the copy's record
  of its sources catches it (`check_sources`). (Keyed by each file's change time and inode
  number too for a while, which prepared a folder of the same content again, and kept one more
  whole copy each time, after a `chmod -R`, a hard link, a backup by `tar --atime-preserve`, or
  a `cp -a` / `rsync -a` to node-local scratch at each job: a review's finding.)
  """
  stats = []
  for rel, file in _source_files(path, table):
    sub, name = rel.split("/", 1)  # "images/a.png": the key names them apart.
    st = _stat(file)
    stats.append((sub, name, st.st_size, st.st_mtime_ns))
  with open(os.path.join(path, "attributes.csv"), "rb") as f:
    csv_bytes = f.read()
  return tfds_lib.fingerprint([PREPARATION_VERSION, csv_bytes, stats, image_size, resize,
                               table.masks_dir is not None])


def _source_files(path: str, table: Table) -> list[tuple[str, str]]:
  """("images/<name>" or "masks/<name>", its path) for every file the rows of `table` name."""
  subs = ("images", "masks") if table.masks_dir is not None else ("images",)
  return [(f"{sub}/{name}", os.path.join(path, sub, name))
          for sub in subs for name in sorted(r[0] for r in table.rows)]


def _stat(file: str) -> os.stat_result:
  """`os.stat(file)`; a file that cannot be read is one `DataError`."""
  try:
    return os.stat(file)
  except OSError as e:  # Checked by scan(), so only when the folder changed meanwhile.
    raise DataError(f"cannot read {file} ({e.strerror or e}); make it readable or delete "
                    "its row in attributes.csv.") from None


def _file_sha256(file: str) -> str:
  """The hex SHA-256 of a file's bytes."""
  try:
    return files.file_sha256(file)
  except OSError as e:
    raise DataError(f"cannot read {file} ({e.strerror or e}); make it readable or delete "
                    "its row in attributes.csv.") from None


def source_record(path: str, table: Table) -> dict:
  """What the prepared copy records of the files it is made of (`check_sources`).

  Each file is stat'ed before it is hashed, and both before the preparation reads it: a file
  rewritten meanwhile is found changed at the next load, never recorded as what the copy holds.

  Args:
    path: the dataset folder.
    table: its checked `Table` (`scan`).
  Returns:
    {"source": `path`, "files": {"images/<name>": [hex SHA-256, inode number, change time in
    ns]}}, masks too where used.
  Raises:
    DataError: a file that cannot be read.
  """
  out = {}
  for rel, file in _source_files(path, table):
    st = _stat(file)
    out[rel] = [_file_sha256(file), st.st_ino, st.st_ctime_ns]
  return {"source": path, "files": out}


def _stamps_check(record_digest: str, stamps: dict) -> str:
  """The SHA-256 that seals `SOURCE_STAMPS`: of the record's digest and the stamps."""
  return hashlib.sha256(json.dumps([record_digest, stamps], sort_keys=True).encode()).hexdigest()


def _read_stamps(prepared: str, record_digest: str) -> Optional[dict]:
  """The stamps `check_sources` last wrote beside the copy for this record; None where there
  are none, or they are unreadable, damaged or for another record (then the record's own)."""
  try:
    with open(os.path.join(prepared, SOURCE_STAMPS), "rb") as f:
      saved = json.loads(f.read())
    stamps = saved["stamps"]
    if (saved["record"] != record_digest
        or saved["sha256"] != _stamps_check(record_digest, stamps)):
      return None
    return {str(k): (int(v[0]), int(v[1])) for k, v in stamps.items()}
  except Exception:  # pylint: disable=broad-except
    return None  # A hint to skip hashing only: anything amiss means hash again.


def check_sources(path: str, table: Table, prepared: str) -> None:
  """Refuses a prepared copy whose source files changed at their size and modification time.

  The copy's key (`_fingerprint`) knows each file by its size and modification time, which a
  file rewritten with its time put back (`exiftool -P`, `cp -p`, `rsync -a` of a new set)
  keeps; its stale pixels were served without a word. The copy records each file's SHA-256,
  inode number and change time at its preparation (`source_record`, in the copy, sealed by
  its checksums). A file whose inode number and change time are still the recorded ones was
  not written since (any write sets the change time, and nothing sets it back): it is
  trusted as it is, so an unchanged folder reads no file here. Any other is hashed and
  compared with the record: a folder moved or staged with `cp -a` / `rsync -a` (new inodes),
  a `chmod`, a hard link, a FAT or FUSE mount's inodes read each file once. Where all match,
  the copy is served and their new inode numbers and change times are written beside it
  (`SOURCE_STAMPS`, atomically; a read-only data_dir skips it, and the next load hashes them
  again). A copy without this record (prepared by a release before it) is not reached: its
  key has an older `PREPARATION_VERSION`; where one is, nothing is compared. A record that
  does not match the copy's checksums is left for `tfds_lib.load` to refuse as damage.

  Args:
    path: the dataset folder.
    table: its checked `Table` (`scan`).
    prepared: the prepared copy's folder, `<data_dir>/folder/<name>-<key>`.
  Raises:
    DataError: naming the files that changed since the copy was prepared at the same size and
      modification time, and the folder to delete to prepare it again, before anything is
      written; a record that cannot be read (in a copy without checksums); a file of the
      folder that cannot be read.
  """
  where = os.path.join(prepared, A2iFolder.name, str(A2iFolder.VERSION))
  try:
    with open(os.path.join(where, SOURCES_RECORD), "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    return  # Prepared without a record (or it is missing: the checksums then say so).
  digest = hashlib.sha256(raw).hexdigest()
  try:
    sealed = files.read_digests(os.path.join(where, tfds_lib.CHECKSUM_FILE))
  except (OSError, ValueError):
    return  # `tfds_lib.load` refuses the copy, with its own words.
  if sealed is not None and sealed.get(SOURCES_RECORD, digest) != digest:
    return  # Damaged: `tfds_lib.load` names it.
  try:
    record = json.loads(raw)
    recorded = {str(k): (str(v[0]), int(v[1]), int(v[2]))
                for k, v in record["files"].items()}
  except Exception:  # pylint: disable=broad-except
    raise tfds_lib.damaged(where, f"its record of the folder's files {SOURCES_RECORD} is "
                           "unreadable") from None
  stamps = _read_stamps(prepared, digest)
  if stamps is None:
    stamps = {k: v[1:] for k, v in recorded.items()}
  changed, moved = [], {}
  for rel, file in _source_files(path, table):
    if rel not in recorded:  # The key names every file: only a record edited by hand.
      raise tfds_lib.damaged(where, f"its record {SOURCES_RECORD} does not name {rel}")
    st = _stat(file)  # Before the hash: a write meanwhile is found at the next load.
    now = (st.st_ino, st.st_ctime_ns)
    if stamps.get(rel) == now:
      continue
    if _file_sha256(file) != recorded[rel][0]:
      changed.append(file)
    else:
      moved[rel] = now
  if changed:
    source = record.get("source") if isinstance(record, dict) else None
    other = (f" (it was prepared from {shown_path(source)}: another folder of the same file "
             "names, sizes and times?)" if isinstance(source, str) and source != path else "")
    # Two folders of one key: deleting the copy would only make the other refused next (a
    # review: they refused each other in turn, each following the advice).
    apart = (f"if {shown_path(source)} is another folder still in use, give this one a "
             "data_dir of its own (config.data.data_dir); otherwise " if other else "")
    names = ", ".join(shown_path(c) for c in changed[:3])
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    raise DataError(f"{len(changed)} file(s) of {shown_path(path)} changed since its prepared "
                    f"copy {shown_path(prepared)} was made{other}, at the same size and "
                    f"modification time (rewritten with the time put back, e.g. exiftool -P "
                    f"or cp -p): {names}{more}; that copy holds their old pixels: {apart}delete "
                    f"the folder {shown_path(prepared)} to prepare it again, then run the same "
                    "command again.")
  if moved:
    stamps = {rel: list(stamps.get(rel, recorded[rel][1:])) for rel in recorded}
    stamps.update({rel: list(now) for rel, now in moved.items()})
    saved = {"record": digest, "stamps": stamps, "sha256": _stamps_check(digest, stamps)}
    try:
      files.atomic_write(os.path.join(prepared, SOURCE_STAMPS), json.dumps(saved))
    except OSError as e:  # A read-only data_dir: the next load hashes these files again.
      logging.info("could not note the folder's new inode numbers in %s (%s)", prepared,
                   e.strerror or e)


def square_box(width: int, height: int, resize: str) -> tuple[float, float, float, float]:
  """The region of a width x height image that becomes the square output.

  Args:
    width: the image's width in pixels.
    height: the image's height in pixels.
    resize: "stretch" (the whole image) or "centre_crop" (the largest centred square; any
      other value is treated as "centre_crop", `load` rejects them first).
  Returns:
    (left, top, right, bottom) floats; the `box` of `tfds_lib.crop_resize`.
  """
  if resize == "stretch":
    return (0.0, 0.0, float(width), float(height))
  side = min(width, height)
  left, top = (width - side) / 2.0, (height - side) / 2.0
  return (left, top, left + side, top + side)


class A2iFolder(tfds_lib.BuilderMixin, tfds.core.GeneratorBasedBuilder,
                skip_registration=True):
  """A folder of images with attributes.csv (and optional masks/)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}

  def __init__(self, *, folder: str, table: Table, image_size: int, resize: str,
               examples: Optional[dict[str, list[tuple[str, dict]]]] = None,
               record: Optional[dict] = None, **kwargs: Any):
    self._folder, self._table = folder, table
    self._record = record  # `source_record`, written into the copy as it is prepared.
    self._image_size, self._resize = image_size, resize
    # What `_read_examples` made of the folder before anything was written (`load`); None:
    # read when the copy is prepared.
    self._examples = examples
    super().__init__(**kwargs)

  def _info(self) -> Any:
    return tfds_lib.dataset_info(
        tfds, builder=self, description="An own folder dataset.",
        features=tfds_lib.feature_dict(tfds, self._image_size, len(self._table.names),
                                       self._table.masks_dir is not None),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True)

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    del dl_manager  # Nothing to download.
    self.info.metadata["attributes_names"] = list(self._table.names)
    self.info.metadata["attributes_kinds"] = list(self._table.kinds)
    self.info.metadata["header"] = list(self._table.header)
    self.info.metadata["source"] = os.path.abspath(self._folder)
    self.info.metadata["resize"] = self._resize
    if self._record is not None:  # Into TFDS's unfinished folder: renamed with the copy.
      with open(os.path.join(os.fspath(self.data_dir), SOURCES_RECORD), "w",
                encoding="ascii") as f:
        json.dump(self._record, f)
    return {s: self._generate_examples(s) for s in SPLITS}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
    if self._examples is None:
      self._examples = _read_examples(self._folder, self._table, self._image_size, self._resize)
    yield from self._examples.pop(split)  # Each split is written once: its memory is freed.


def _read_examples(folder_path: str, table: Table, image_size: int, resize: str,
                  progress: bool = False) -> dict[str, list[tuple[str, dict]]]:
  """Reads, checks, crops and resizes every image (and mask) the rows of `table` name.

  `load` calls it before anything is written in data_dir: an image that cannot be decoded
  or a mask that would read as something else stops the preparation before it begins (was:
  found while the copy was written, which left folders behind in data_dir). The examples
  are data.image_size squares, as training holds them anyway.

  Args:
    folder_path: the dataset folder.
    table: its checked `Table` (`scan`).
    image_size: the stored side.
    resize: "centre_crop" or "stretch" (`square_box`).
    progress: a progress bar.
  Returns:
    {split: [(file name, the builder's example)]}, in the rows' order.
  Raises:
    DataError: naming the first image or mask that cannot be read or is refused
      (`inputs.read_image`, `_mask_pixels`).
  """
  examples = {s: [] for s in SPLITS}
  upscaled = {s: [] for s in SPLITS}
  wrap = tfds_lib.progress_bar(progress)
  for fname, values, split in wrap(table.rows, "reading the folder's images"):
    image = Image.fromarray(read_image(os.path.join(folder_path, "images", fname), DataError))
    box = square_box(image.width, image.height, resize)
    if image_size > MAX_UPSCALE * min(box[2] - box[0], box[3] - box[1]):
      upscaled[split].append(f"{fname} ({image.width}x{image.height})")
    ex = {"id": fname, "attributes": values,
          "image": tfds_lib.crop_resize(image, box, image_size)}
    if table.masks_dir is not None:
      # scan() checked that the mask exists and has the image's size.
      mask_path = os.path.join(table.masks_dir, fname)
      mask = Image.fromarray(_mask_pixels(mask_path, read_image(mask_path, DataError,
                                                                faint_ok=True)))
      if mask.size != image.size:  # As decoded (scan() compared the headers): was a
        # traceback from crop_resize where PIL misread one of them (a fault hunt's finding).
        raise DataError(f"{mask_path} reads as {mask.width}x{mask.height} but its image "
                        f"{os.path.join(folder_path, 'images', fname)} as {image.width}x"
                        f"{image.height} (turned by their EXIF orientations); masks must "
                        "match their images: save both upright as PNGs.")
      ex["mask"] = tfds_lib.crop_resize(mask, box, image_size)
      ex["mask_predicted"] = False
    examples[split].append((fname, ex))
  for split, names in upscaled.items():
    if names:
      logging.warning("folder: %d %s image(s) are upscaled more than %dx to %dx%d, so they "
                      "will look blurred (e.g. %s); use larger images or a smaller "
                      "data.image_size.", len(names), split, MAX_UPSCALE, image_size,
                      image_size, ", ".join(names[:3]))
  return examples


def _prepared_name(folder_name: str, key: str) -> str:
  """The prepared copy's folder name: `<folder name>-<key>`, the folder name cut short (at a
  character) where the whole would be longer than a file name may be.

  Was: always the whole name, so a long but legal folder name (250 letters, 84 CJK
  characters) stopped with OSError "File name too long" (review finding). Names that fit are
  as before, so that copies prepared before are found again.

  Args:
    folder_name: the dataset folder's own name (`os.path.basename` of `config.data.path`).
    key: the fingerprint (`_fingerprint`).
  Returns:
    The name, at most `files.NAME_MAX` bytes in the file system's encoding, valid UTF-8.
  """
  suffix = f"-{key}"
  # A name that is not valid UTF-8 (bytes such as caf\xe9, surrogate escapes here) gets "_"
  # for each such character: the copy's writer takes UTF-8 paths only (was a TypeError
  # traceback that left <data_dir>/folder/caf?-KEY/ behind; review finding).
  room = files.NAME_MAX - len(os.fsencode(suffix))
  return files.fitted_name(folder_name, room, files.is_utf8_path) + suffix


def load(*, path: str, data_dir: str, image_size: int, masks: bool = False,
         resize: str = "centre_crop", progress: bool = True) -> Any:
  """Prepares a folder dataset (once per content) and returns its `Dataset`.

  Args:
    path: the folder (`config.data.path`).
    data_dir: where prepared data lives.
    image_size: the stored and trained size.
    masks: use masks/ (required then); False ignores it.
    resize: "centre_crop" or "stretch".
    progress: progress bars.
  Returns:
    A `Dataset` named "folder".
  Raises:
    DatasetNotPreparedError: the folder, images/ or attributes.csv is missing (`scan`).
    DataError: what `scan` refuses; an image or mask that cannot be read or is refused
      (`_read_examples`), before anything is written in data_dir; a damaged prepared copy;
      a prepared copy whose files changed since at the same size and time (`check_sources`);
      a `data_dir` that cannot be used (`tfds_lib.data_dir_path`).
  """
  check_choice("data.resize", resize, RESIZE_MODES)
  data_dir = tfds_lib.data_dir_path(data_dir)  # Was the writer's traceback.
  path = os.path.abspath(tfds_lib.check_home(path, "data.path")) if path else ""
  table = scan(path, masks)
  key = _fingerprint(path, table, image_size, resize)
  prepared = os.path.join(data_dir, "folder",
                          _prepared_name(os.path.basename(path), key))
  copy = os.path.join(prepared, A2iFolder.name, str(A2iFolder.VERSION))
  # A copy to prepare: every image (and mask) is read and checked before anything is written
  # (was: while the copy was written, which left an empty <data_dir>/folder/ behind).
  examples = record = None
  if os.path.isdir(copy):
    check_sources(path, table, prepared)  # A file rewritten at its size and time: refused.
  elif not os.path.lexists(copy):
    record = source_record(path, table)  # Before the images are read for the copy.
    examples = _read_first(path, table, image_size, resize, progress, prepared)
    _warn_of_earlier_copies(path, prepared)
  builder = tfds_lib.open_builder(A2iFolder, data_dir=prepared, folder=path, table=table,
                                  image_size=image_size, resize=resize, examples=examples,
                                  record=record, progress=progress)
  # A file of the folder that stops the preparation stops every attempt on these files: no
  # half-made copy is left, nor one an earlier stopped attempt left, nor a folder above it
  # that the run made and left empty.
  ds = tfds_lib.load(builder, manual_dir=path, download_dir=os.path.join(prepared, "downloads"),
                     image_size=image_size, progress=progress, discard_on_data_error=prepared)
  return dataclasses.replace(ds, name="folder")


def _earlier_copies(path: str, prepared: str) -> tuple[list[str], list[str]]:
  """The other prepared copies beside `prepared` of the folder `path`: (those whose record of
  their sources names it, those of its folder name that hold no record to tell: made by a
  version before the record, or unfinished)."""
  parent, name = os.path.split(prepared)
  stem = name[:name.rindex("-") + 1]  # "<folder name>-": the key is 12 hex digits.
  ours, untold = [], []
  for other in files.listed(parent):
    where = os.path.join(parent, other)
    if (other == name or not other.startswith(stem) or len(other) != len(name)
        or not re.fullmatch(r"[0-9a-f]{12}", other[len(stem):]) or not os.path.isdir(where)):
      continue
    sources = []
    for version in files.listed(os.path.join(where, A2iFolder.name)):
      try:
        with open(os.path.join(where, A2iFolder.name, version, SOURCES_RECORD), "rb") as f:
          sources.append(json.loads(f.read())["source"])
      except Exception:  # pylint: disable=broad-except  (none, or unreadable: cannot tell)
        pass
    if path in sources:
      ours.append(where)
    elif not sources:
      untold.append(where)
  return ours, untold


def _bytes_under(folder: str) -> int:
  """The bytes of the files under `folder` (links not followed; what cannot be read: 0)."""
  total = 0
  for root, _, names in os.walk(folder):
    for n in names:
      try:
        total += os.lstat(os.path.join(root, n)).st_size
      except OSError:
        pass
  return total


def _warn_of_earlier_copies(path: str, prepared: str) -> None:
  """One warning where the folder `path` is prepared anew beside earlier copies of it: its
  files changed, or the image size, the resize mode or this version's preparation differ.
  Each copy is kept (another config may use it: one of another image size), so the warning
  names them and their size, for the user to delete those no config uses; copies of a
  folder of its name that do not record which folder they were made from are named apart.
  Was: a new whole copy on every change of the folder, the earlier ones left without a word
  (fault hunt of workdirs from older versions)."""
  ours, untold = _earlier_copies(path, prepared)
  if not ours and not untold:
    return
  listed = lambda copies: (f"{', '.join(shown_path(c) for c in copies)} "
                           f"({sum(_bytes_under(c) for c in copies) / 1e6:.1f} MB)")
  parts = []
  if ours:
    parts.append(f"beside {'an earlier copy' if len(ours) == 1 else f'{len(ours)} earlier copies'}"
                 f" of it, {listed(ours)}")
  if untold:
    parts.append(f"{'and ' if ours else ''}beside {len(untold)} cop"
                 f"{'y' if len(untold) == 1 else 'ies'} of a folder named "
                 f"{os.path.basename(path)} that do not record which (made by an older version, "
                 f"or unfinished), {listed(untold)}")
  logging.warning("preparing a new copy of %s (its files changed, or data.image_size, "
                  "data.resize or this version's preparation differ) %s; delete any that no "
                  "other config of yours uses", shown_path(path), " ".join(parts))


def _read_first(path: str, table: Table, image_size: int, resize: str, progress: bool,
                prepared: str) -> dict[str, list[tuple[str, dict]]]:
  """`_read_examples`; where it refuses a file, what an earlier stopped attempt on the same
  files left in `prepared` (never a finished copy) is removed, as a refusal while writing
  removes it (`tfds_lib.load`'s `discard_on_data_error`: `tfds_lib.discard_attempts`)."""
  try:
    return _read_examples(path, table, image_size, resize, progress)
  except DataError:
    copy = os.path.join(prepared, A2iFolder.name, str(A2iFolder.VERSION))
    tfds_lib.discard_attempts(prepared, copy, A2iFolder.name)
    raise
