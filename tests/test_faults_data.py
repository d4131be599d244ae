"""Fault hunt of the user's-folder dataset (`a2i_jax.data.folder`): attributes.csv's cells and
lines, and the prepared copy's name; and of LFW's and CUB's preparation (tiny fixtures from
tests/dataset_fixtures.py): a prepared copy without checksums or metadata, errors of the
system's, a file where the copy goes, damaged digits, a folder named like an archive; and
what a refused preparation leaves in data_dir (the folder's, LFW's).

Each test is one finding, its docstring says what happened before ("Was: ..."). All run at the
library's level on a folder of three tiny images made in `tmp_path`: no subprocess, no model.
"""

import errno
import functools
import glob
import json
import os
import pathlib
import re
import shutil
import sys
import types

import numpy as np
import pytest
from PIL import Image

import dataset_fixtures as fx
import faults_lib
from a2i_jax.data import folder, load_dataset
from a2i_jax.errors import ConfigError, DataError, DatasetNotPreparedError
from conftest import tiny_config

SPLITS = ("train", "validation", "test")  # One image each: the least a folder may hold.


def _folder(root, header, cells, name="f"):
  """A folder dataset `root`/`name` of 3 images (img0.png..img2.png, one per split) whose
  attributes.csv is `header` and, per image, "<file>,<split>,<cells[i]>"; returns its path."""
  path = os.path.join(str(root), name)
  os.makedirs(os.path.join(path, "images"))
  for i in range(3):
    Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(
        os.path.join(path, "images", f"img{i}.png"))
  lines = [header] + [f"img{i}.png,{SPLITS[i]},{c}" for i, c in enumerate(cells)]
  with open(os.path.join(path, "attributes.csv"), "w", newline="") as f:
    f.write("\n".join(lines) + "\n")
  return path


def test_digits_joined_by_underscores_are_refused(tmp_path):
  """Was: "3_5" (an age bin's label) read as 35 without a word: Python's float() takes "_"
  between digits. Refused like any other cell that is not a number; the usual ways of writing
  a number are still read."""
  path = _folder(tmp_path, "filename,split,age_group", ["0", "3_5", "1"])
  with pytest.raises(DataError, match=re.escape(
      f"{path}/attributes.csv, line 3 (img1.png): column 'age_group' holds '3_5', not a finite "
      "number; digits joined by '_' are a label (a bin?), not a number: write one number per "
      "cell (e.g. the bin's index or middle), or delete the column.") + "$"):
    folder.scan(path, masks=False)
  forms = ["1", "-0.5", "+2", ".5", "5.", "1e-3", " 7 "]
  path = _folder(tmp_path, "filename,split," + ",".join(f"a{j}" for j in range(len(forms))),
                 [",".join(forms)] * 3, name="ok")
  assert folder.scan(path, masks=False).rows[0][1].tolist() == pytest.approx(
      [1, -0.5, 2, 0.5, 5, 1e-3, 7])


def test_long_folder_names_are_prepared(tmp_path, monkeypatch):
  """Was: OSError "File name too long" (a traceback) for a legal folder name of 250 letters or
  84 CJK characters (252 bytes): the prepared copy is "<name>-<12 hex>". Its name is cut short
  where it would pass 255 bytes, and stays as it was where it fits (copies prepared before
  are found again). Any other error of the system's is one line naming it."""
  for name, kept in (("a" * 250, "a" * 242), ("写" * 84, "写" * 80)):
    path = _folder(tmp_path, "filename,split,smile", ["0", "1", "0"], name=name)
    data = tmp_path / f"data{len(kept)}"
    ds = folder.load(path=path, data_dir=str(data), image_size=4, progress=False)
    assert {s: len(ds.splits[s]) for s in SPLITS} == dict.fromkeys(SPLITS, 1)
    (copy,) = os.listdir(data / "folder")
    assert len(os.fsencode(copy)) <= 255 and copy.startswith(kept + "-")
  key = "0123456789ab"
  assert folder._prepared_name("写" * 84, key) == "写" * 80 + "-" + key  # 253 bytes: 81 won't.
  for fits in ("f", "a" * 242, "写" * 80):  # Names that fit: as before.
    assert folder._prepared_name(fits, key) == f"{fits}-{key}"

  def fails(**kwargs):
    raise OSError(errno.EIO, "Input/output error", "/mnt/disk/f/images/img0.png")
  monkeypatch.setattr(folder, "load", fails)
  cfg = tiny_config("cvae").data
  cfg.name, cfg.path, cfg.data_dir = "folder", path, str(tmp_path / "data")
  with pytest.raises(DataError, match=re.escape(
      f"preparing the folder dataset {path} failed: an input/output error: the disk or its "
      "connection failed at /mnt/disk/f/images/img0.png; check the disk (the system log, "
      "dmesg, says more), or point config.data.data_dir / cache_dir at another folder, then "
      "run the same command again.") + "$"):
    load_dataset(cfg, progress=False)


def test_a_folder_prepared_anew_names_its_earlier_copies(tmp_path, caplog):
  """Fault hunt: each change of a folder (or of the image size, or a release that prepares
  otherwise) made a new whole copy in data_dir, the earlier ones left without a word. One
  warning names them and their size; a copy of another folder of the same name is not named,
  and a load of a copy prepared before says nothing."""
  data = str(tmp_path / "data")
  path = _folder(tmp_path, "filename,split,smile", ["0", "1", "0"])
  other = _folder(tmp_path / "elsewhere", "filename,split,smile", ["1", "1", "0"])
  with caplog.at_level("WARNING"):
    folder.load(path=path, data_dir=data, image_size=4, progress=False)
    (first,) = [os.path.join(data, "folder", n) for n in os.listdir(os.path.join(data,
                                                                                 "folder"))]
    folder.load(path=other, data_dir=data, image_size=4, progress=False)
    folder.load(path=path, data_dir=data, image_size=4, progress=False)
  assert "earlier cop" not in caplog.text
  Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(os.path.join(path, "images",
                                                                       "img1.png"))
  with caplog.at_level("WARNING"):
    folder.load(path=path, data_dir=data, image_size=4, progress=False)
  (message,) = [r.getMessage() for r in caplog.records if "earlier cop" in r.getMessage()]
  assert re.fullmatch(re.escape(
      f"preparing a new copy of {path} (its files changed, or data.image_size, data.resize or "
      f"this version's preparation differ) beside an earlier copy of it, {first} (") +
      r"0\.\d MB\); delete any that no other config of yours uses", message), message
  copies = sorted(os.path.join(data, "folder", n) for n in os.listdir(os.path.join(data,
                                                                                   "folder")))
  assert len(copies) == 3  # Each copy kept.
  # A copy of a folder of the same name that does not record its folder (an older version's,
  # review: was named as this folder's): named apart, as such.
  records = {c: glob.glob(os.path.join(c, "*", "*", folder.SOURCES_RECORD)) for c in copies}
  (others,) = [c for c, (r,) in records.items()
               if json.loads(pathlib.Path(r).read_text())["source"] == other]
  os.remove(records[others][0])
  Image.fromarray(np.full((4, 4, 3), 100, np.uint8)).save(os.path.join(path, "images",
                                                                       "img1.png"))
  caplog.clear()
  with caplog.at_level("WARNING"):
    folder.load(path=path, data_dir=data, image_size=4, progress=False)
  (message,) = [r.getMessage() for r in caplog.records if "earlier cop" in r.getMessage()]
  assert f" and beside 1 copy of a folder named f that do not record which (made by an older " \
         f"version, or unfinished), {others} (" in message, message


def test_line_numbers_count_the_lines_of_multi_line_cells(tmp_path):
  """Was: "line 3" for a bad cell on the file's line 4 when a quoted header cell holds a line
  break (Excel's Alt+Enter): rows were counted, not lines. The line a row starts on."""
  path = _folder(tmp_path, 'filename,split,"smile\n(0/1)"', ["0", "x", "1"])
  with pytest.raises(DataError, match=re.escape(
      f"{path}/attributes.csv, line 4 (img1.png): column 'smile\\n(0/1)' holds 'x', not a "
      "finite number")):
    folder.scan(path, masks=False)
  path = _folder(tmp_path, "filename,split,smile", ["0", '"1\n"', "y"], name="cell")
  with pytest.raises(DataError, match=re.escape(f"{path}/attributes.csv, line 5 (img2.png)")):
    folder.scan(path, masks=False)


@pytest.mark.parametrize("word", ["True", "false", " TRUE "])
def test_true_and_false_cells_name_the_fix(tmp_path, word):
  """Was: "holds 'False', not a finite number." and no fix, for the True/False cells pandas'
  to_csv writes for a bool column. Still refused, now saying what to write."""
  path = _folder(tmp_path, "filename,split,smile", ["1", word, "0"])
  with pytest.raises(DataError, match=re.escape(
      f"{path}/attributes.csv, line 3 (img1.png): column 'smile' holds {word!r}, not a finite "
      "number; write 1 and 0 instead (pandas: df.astype(int)).") + "$"):
    folder.scan(path, masks=False)


# ------------------------------------------------------------------------------- LFW, CUB


def _real(name, data_dir):
  """config.data for LFW or CUB from `data_dir` (no masks, no downloads)."""
  cfg = tiny_config("cvae").data
  cfg.name, cfg.data_dir, cfg.download, cfg.masks = name, str(data_dir), False, False
  return cfg


def test_a_run_refused_for_missing_source_files_writes_nothing(tmp_path):
  """Validate before writing anything: a run refused because LFW's or CUB's source files are
  missing (downloads off) left empty dataset folders, a lock file and TFDS's config record in
  data_dir (review finding). A data_dir that was there keeps only what it held."""
  existing = tmp_path / "existing"
  existing.mkdir()
  (existing / "mine.txt").write_text("kept")
  for name, masks in (("lfw", False), ("lfw", True), ("cub", False)):
    for data in (tmp_path / "new" / "data", existing):
      cfg = _real(name, data)
      cfg.masks = masks
      with pytest.raises(DatasetNotPreparedError, match="source file\\(s\\) missing"):
        load_dataset(cfg, progress=False)
      assert not (tmp_path / "new").exists(), (name, list((tmp_path / "new").rglob("*")))
      assert os.listdir(existing) == ["mine.txt"], (name, os.listdir(existing))


@pytest.fixture(scope="module")
def lfw_prepared(tmp_path_factory):
  """A data_dir holding LFW's tiny sources and the copy prepared from them (not to damage:
  copy it first)."""
  root = tmp_path_factory.mktemp("lfw_prepared")
  fx.make_lfw(str(root / "manual" / "lfw"), with_parts=False)
  load_dataset(_real("lfw", root), progress=False)
  return root


def test_lfw_copy_without_checksums_or_metadata_is_damaged(lfw_prepared, tmp_path):
  """Was: a prepared copy with no checksum file (an older version's, a stop before they were
  written, a read-only data_dir) that had lost its metadata.json loaded with 0 attribute
  names for vectors of 73, and was then sealed as checked. Refused as damaged, unsealed."""
  data = tmp_path / "data"
  shutil.copytree(lfw_prepared, data)
  where = data / "a2i_lfw" / "no_masks" / "1.0.0"
  os.remove(where / "a2i_sha256.json")
  os.remove(where / "metadata.json")
  with pytest.raises(DataError, match=re.escape(
      f"the prepared copy of the dataset at {where} is damaged (its metadata names 0 "
      "attributes, its vectors hold 73); delete that folder and run the same command again to "
      "prepare it anew.") + "$"):
    load_dataset(_real("lfw", data), progress=False)
  assert not (where / "a2i_sha256.json").exists()


def test_other_system_errors_are_one_line_for_every_dataset(tmp_path):
  """Was: a traceback (OSError "Too many levels of symbolic links", "File name too long", an
  IsADirectoryError for a table of CUB unpacked by hand that is a folder) for every dataset
  but the folder one. One line naming the dataset, the path, the system's reason and the fix."""
  loop = tmp_path / "loop"
  os.symlink(loop, loop)
  with pytest.raises(DataError, match=re.escape(
      f"preparing the lfw dataset failed: Too many levels of symbolic links at {loop}/"
      "downloads; fix what the system names (or point config.data.data_dir at another "
      "folder), then run the same command again.") + "$"):
    load_dataset(_real("lfw", loop), progress=False)
  long = tmp_path / ("x" * 300)
  with pytest.raises(DataError, match=re.escape(
      f"preparing the cub dataset failed: File name too long at {long}") + r"\S*" + re.escape(
      "; fix what the system names (or point config.data.data_dir at another folder), then "
      "run the same command again.") + "$"):
    load_dataset(_real("cub", long), progress=False)


def test_a_file_where_the_prepared_copy_goes_is_refused(tmp_path):
  """Was: TFDS's KeyError "splits is empty" (a traceback) where a file stood at the prepared
  copy's version folder: TFDS took it for a prepared copy."""
  where = tmp_path / "a2i_lfw" / "no_masks" / "1.0.0"
  os.makedirs(where.parent)
  where.write_text("x")
  with pytest.raises(DataError, match=re.escape(
      f"{where} is a file, not a prepared copy; delete it and run the same command again.")
      + "$"):
    load_dataset(_real("lfw", tmp_path), progress=False)


def test_lfw_digits_that_are_not_0_to_9_name_file_and_line(tmp_path):
  """Was: ValueError "invalid literal for int()" (a traceback) for a damaged byte 0xB2 in a
  people file or parts list: it reads as '2' (superscript), which str.isdigit() accepts."""
  from a2i_jax.data import lfw  # pylint: disable=import-outside-toplevel
  parts = tmp_path / "parts_test.txt"
  for path, text, line, source, parse in (
      (tmp_path / "peopleDevTest.txt", b"2\nDan_Brown\t2\nEve_Black\t\xb2\n", 3,
       lfw.IMAGE_SOURCES[3], lfw.parse_people),
      (parts, b"Dan_Brown 1\nZed_Unlisted \xb2\n", 2, lfw.MASK_SOURCES[3], lfw.parse_parts_list)):
    path.write_bytes(text)
    with pytest.raises(DataError, match=re.escape(
        f"{path}, line {line}: '\u00b2' is not a number (a damaged byte?); the file is "
        f"damaged. Download it again ({source.url}).") + "$"):
      parse(str(path))
  parts.write_bytes(b"Dan_Brown 1\nnot a line\nZed_Unlisted 12\n")  # Others: as before.
  assert lfw.parse_parts_list(str(parts)) == [("Dan_Brown", 1), ("Zed_Unlisted", 12)]


@pytest.mark.parametrize("name", ["lfw-funneled.tgz", "lfw_attributes.txt"])
def test_a_folder_named_like_a_source_file_is_refused(tmp_path, name):
  """Was: a folder named like the archive taken for its unpacked folder, the fix then naming
  the whole manual folder to delete; an IsADirectoryError traceback for a text file's name."""
  from a2i_jax.data import tfds_lib  # pylint: disable=import-outside-toplevel
  manual = tmp_path / "manual" / "lfw"
  fx.make_lfw(str(manual), with_parts=False)
  os.remove(manual / name)
  os.mkdir(manual / name)
  what, alt = (("archive", " (or its unpacked lfw_funneled/ folder)") if name.endswith(".tgz")
               else ("file", ""))
  with pytest.raises(DataError, match=re.escape(
      f"{manual / name} is a folder, not the {what}; remove it and put the downloaded {name} "
      f"there{alt}, then run the same command again.") + "$"):
    load_dataset(_real("lfw", tmp_path), progress=False)
  # Nor does the fix for an archive unpacked by hand name the manual folder holding it.
  inside = manual / "lfw_funneled" / "Alice_Smith"
  inside.mkdir(parents=True)
  from a2i_jax.data import lfw  # pylint: disable=import-outside-toplevel
  funneled = lfw.IMAGE_SOURCES[0]
  assert tfds_lib.redownload(funneled, str(manual)) == (
      f"put a fresh download of lfw-funneled.tgz in {manual} instead of its unpacked "
      "lfw_funneled/ folder (delete that folder).")
  assert tfds_lib.redownload(funneled, str(inside)) == (
      f"delete the folder {manual / 'lfw_funneled'} and put a fresh download of "
      f"lfw-funneled.tgz in {manual} instead.")


def test_the_fix_for_an_archive_unpacked_by_hand_needs_no_fetch_before_it(tmp_path):
  """Was: `redownload` learnt an archive's unpacked folder name from a map `fetch_sources`
  filled, so in a process that had not fetched that source (a fresh one, a direct call) the
  fix named the whole manual folder, every source in it, to delete. The caller passes it."""
  from a2i_jax.data import tfds_lib  # pylint: disable=import-outside-toplevel
  manual = tmp_path / "manual" / "mine"
  inside = manual / "mine_unpacked" / "sub"
  inside.mkdir(parents=True)
  source = tfds_lib.Source("mine.tgz", "https://example.org/mine.tgz", "", "mine_unpacked")
  assert tfds_lib.redownload(source, str(manual)) == (
      f"put a fresh download of mine.tgz in {manual} instead of its unpacked mine_unpacked/ "
      "folder (delete that folder).")
  assert tfds_lib.redownload(source, str(inside)) == (
      f"delete the folder {manual / 'mine_unpacked'} and put a fresh download of mine.tgz in "
      f"{manual} instead.")


@pytest.mark.parametrize("crop", [1, 3, 9, 100])
def test_a_centre_crop_too_small_or_larger_than_the_images_is_refused(crop):
  """Was: centre_cropped(dataset, 1) made 1x1 images, refused only later by the scoring as
  "image_size=1 is not valid"; a crop larger than the images left them whole without a word,
  so evaluate_mean_image(crop_size=100) scored the whole images as the crops."""
  from a2i_jax.data.base import (  # pylint: disable=import-outside-toplevel
      Dataset, Split, centre_cropped)
  images = np.zeros((2, 8, 8, 3), np.uint8)
  data = Dataset("synthetic", ("a",), ("binary",),
                 {"train": Split(images, np.zeros((2, 1), np.float32)),
                  "test": Split(images, np.zeros((2, 1), np.float32))})
  with pytest.raises(ConfigError, match=re.escape(
      f"crop_size={crop}: pass 0 (no crop) or the side of the centre crop, from 4 to the "
      "images' 8, as the run's config.data.augment.crop_size.") + "$"):
    centre_cropped(data, crop)
  assert centre_cropped(data, 8) is data and centre_cropped(data, 0) is data
  assert centre_cropped(data, 4)["test"].images.shape == (2, 4, 4, 3)


def test_a_path_holding_a_newline_keeps_the_message_one_line(tmp_path):
  """Was: a data_dir, a folder dataset's path (a shell's stray quote) holding a newline broke
  the one-line `error:` message over two lines. Such a path is shown escaped, as repr does."""
  base = tmp_path / "a\nb"
  base.mkdir()
  loop = base / "loop"
  os.symlink(loop, loop)
  with pytest.raises(DataError) as e:
    load_dataset(_real("lfw", loop), progress=False)
  assert str(e.value) == (
      f"preparing the lfw dataset failed: Too many levels of symbolic links at "
      f"{str(loop / 'downloads')!r}; fix what the system names (or point config.data.data_dir "
      "at another folder), then run the same command again.")
  (base / "f").write_text("x")
  with pytest.raises(DataError) as e:
    load_dataset(_real("lfw", base / "f"), progress=False)
  assert "\n" not in str(e.value) and repr(str(base / "f")) in str(e.value)
  cfg = tiny_config("cvae").data
  cfg.name, cfg.path, cfg.data_dir = "folder", str(base / "nofolder"), str(tmp_path / "data")
  with pytest.raises(DataError) as e:
    load_dataset(cfg, progress=False)
  assert str(e.value).startswith(f"{str(base / 'nofolder' / 'images')!r} does not exist")
  assert "\n" not in str(e.value)


# ------------------------------------------------------- what a refused preparation leaves


def _folder_config(path, data_dir):
  """config.data of the folder dataset at `path`, prepared into `data_dir`, 4x4 images."""
  cfg = tiny_config("cvae").data
  cfg.name, cfg.path, cfg.data_dir, cfg.image_size = "folder", str(path), str(data_dir), 4
  return cfg


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_an_unreadable_image_is_refused_before_anything_is_written(tmp_path, monkeypatch, fmt):
  """Validate before writing anything: a folder with one image that does not decode (cut
  short) was refused only while its copy was written, which left an empty
  `<data_dir>/folder/` (and the data_dir the run made) behind. Every image is read first: a
  new data_dir is not made, and one that holds another folder's prepared copy and the user's
  own file keeps them byte for byte (that copy is still read)."""
  good = _folder(tmp_path, "filename,split,smile", ["0", "1", "0"], name="good")
  shared = tmp_path / "shared"
  load_dataset(_folder_config(good, shared), progress=False)
  (shared / "notes.txt").write_text("mine")
  before = faults_lib.snapshot(shared)
  bad = _folder(tmp_path, "filename,split,smile", ["0", "1", "0"], name="bad")
  image = os.path.join(bad, "images", f"img1.{fmt}")
  noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
  Image.fromarray(noise).save(image)
  with open(image, "r+b") as f:
    f.truncate(os.path.getsize(image) // 2)
  with open(os.path.join(bad, "attributes.csv"), "r+") as f:
    text = f.read().replace("img1.png", f"img1.{fmt}")
    f.seek(0)
    f.write(text)
  from a2i_jax.data import tfds_lib  # pylint: disable=import-outside-toplevel
  writes, prepare = [], tfds_lib.prepare
  monkeypatch.setattr(tfds_lib, "prepare", lambda *args: (writes.append(args), prepare(*args)))
  for data in (tmp_path / "new" / "data", shared):
    with pytest.raises(DataError, match=re.escape(image) + " could not be decoded"):
      load_dataset(_folder_config(bad, data), progress=False)
  assert not writes  # Refused before the copy's writing began.
  monkeypatch.undo()
  assert not (tmp_path / "new").exists(), list((tmp_path / "new").rglob("*"))
  assert faults_lib.snapshot(shared) == before
  assert len(load_dataset(_folder_config(good, shared), progress=False)["train"]) == 1


def test_a_preparation_stopped_while_writing_removes_only_the_empty_folders_it_made(
    tmp_path, monkeypatch):
  """Where a refusal can only come while the copy is written (here a DataError injected into
  the writing), the run takes back the folders it made that are left empty, up to a new
  data_dir and the new folders above it (was: `<data_dir>/folder/` and the data_dir stayed),
  and nothing that was there before: another folder's copy in the same data_dir stays whole."""
  good = _folder(tmp_path, "filename,split,smile", ["0", "1", "0"], name="good")
  shared = tmp_path / "shared"
  load_dataset(_folder_config(good, shared), progress=False)
  before = faults_lib.snapshot(shared)
  other = _folder(tmp_path, "filename,split,smile", ["1", "0", "1"], name="other")

  def fails(self, split):
    del self, split
    raise DataError("the disk's bytes changed while writing")
    yield  # pylint: disable=unreachable
  monkeypatch.setattr(folder.A2iFolder, "_generate_examples", fails)
  for data in (tmp_path / "new" / "data", shared):
    with pytest.raises(DataError, match="changed while writing"):
      load_dataset(_folder_config(other, data), progress=False)
    assert not (tmp_path / "new").exists(), list((tmp_path / "new").rglob("*"))
    assert faults_lib.snapshot(shared) == before
  monkeypatch.undo()
  assert len(load_dataset(_folder_config(good, shared), progress=False)["test"]) == 1
  assert faults_lib.snapshot(shared) == before


def test_the_folders_a_writer_made_go_while_empty_past_one_already_gone(tmp_path):
  """`files.missing_folders` / `remove_empty_folders`, the one pair that the preparation,
  infer.py's staging and the workdir lock take back their folders with (were three loops; one
  stopped at a folder already gone, leaving the empty ones above it)."""
  from a2i_jax import files  # pylint: disable=import-outside-toplevel
  deep = tmp_path / "a" / "b" / "c"
  made = files.missing_folders(str(deep))
  assert made == [str(deep), str(deep.parent), str(deep.parent.parent)]
  assert files.missing_folders(str(tmp_path)) == []
  (deep.parent).mkdir(parents=True)  # c never made: b and a go; tmp_path holds them no more.
  assert files.remove_empty_folders(made) == made[1:] and os.listdir(tmp_path) == []
  deep.mkdir(parents=True)
  (deep.parent / "kept").write_text("another's")  # b holds a file: it and a stay.
  assert files.remove_empty_folders(made) == [str(deep)] and (deep.parent / "kept").exists()


def test_lfw_refused_while_writing_leaves_no_empty_copy_folder(tmp_path):
  """An LFW image that does not decode is found only once the archive is unpacked (which is
  kept for the next attempt): the copy's folder `a2i_lfw/no_masks/` was left behind empty.
  The run removes it, and the lock file and TFDS's config record it made (a fault hunt: the
  lock and record were left too); the unpacked archive stays, and a folder of the user's
  there too."""
  manual = tmp_path / "manual" / "lfw"
  fx.make_lfw(str(manual), with_parts=False)
  fx.rewrite_tar(str(manual / "lfw-funneled.tgz"),
                 lambda n, d: d[:len(d) // 3] if n.endswith("Alice_Smith_0002.jpg") else d)
  with pytest.raises(DataError, match="Alice_Smith_0002.jpg could not be decoded"):
    load_dataset(_real("lfw", tmp_path), progress=False)
  assert not (tmp_path / "a2i_lfw").exists()
  assert (tmp_path / "downloads" / "unpacked").is_dir()
  (tmp_path / "a2i_lfw" / "no_masks" / "mine").mkdir(parents=True)  # Not this run's: kept.
  with pytest.raises(DataError, match="Alice_Smith_0002.jpg could not be decoded"):
    load_dataset(_real("lfw", tmp_path), progress=False)
  assert os.listdir(tmp_path / "a2i_lfw" / "no_masks") == ["mine"]


@pytest.mark.parametrize("masks", [False, True])
def test_lfw_damaged_text_files_are_refused_before_anything_is_written(tmp_path, masks):
  """Was: an lfw_attributes.txt listing an image twice, a people file whose count is wrong,
  or (with masks) a parts list naming none, was refused only once the archive was unpacked
  and the copy's folder, lock file and TFDS's config record were made in data_dir. They are
  read first: data_dir keeps only the manual folder."""
  manual = tmp_path / "manual" / "lfw"
  fx.make_lfw(str(manual), with_parts=masks)
  attributes = manual / "lfw_attributes.txt"
  good = attributes.read_text()
  cfg = _real("lfw", tmp_path)
  cfg.masks = masks
  damages = [("lfw_attributes.txt", good + good.splitlines()[3] + "\n", "already has a row"),
             ("peopleDevTrain.txt", "4\nAlice_Smith\t3\n", "announces 4 people but it lists 1")]
  if masks:
    damages.append(("parts_test.txt", "\n", "lists no images"))
  for name, text, says in damages:
    before = (manual / name).read_text()
    (manual / name).write_text(text)
    with pytest.raises(DataError, match=re.escape(str(manual / name)) + ".*" + says):
      load_dataset(cfg, progress=False)
    assert os.listdir(tmp_path) == ["manual"], os.listdir(tmp_path)
    (manual / name).write_text(before)


# ------------------------------------------------------------ the data's digests, once a load


def _held(seed):
  """An in-memory dataset of 3 random 8x8 images a split, with example ids (as LFW's): the
  same `seed`, the same data, loaded again."""
  from a2i_jax.data import base  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  splits = {s: base.Split(rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8),
                          rng.random((3, 2), dtype=np.float32)) for s in SPLITS}
  ids = {s: base.ids_fingerprint([f"{s}{i}" for i in range(3)]) for s in SPLITS}
  return base.Dataset("lfw", ("b", "a"), ("binary", "binary"), splits,
                      {base.SPLIT_IDS_KEY: ids})


def test_a_runs_data_digests_are_computed_once_a_load(tmp_path, monkeypatch):
  """Was: `split_content` ran twice a start: a resume compared the data with dataset.json
  (`check_same_splits`) and then built the record again (`checkpoints.dataset_info`); a new
  run built the record twice (about 0.8 s each on LFW; read-through). Once a dataset now,
  and never stale: another dataset object, a split replaced, or the digests handed out
  edited, are not taken for the data."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import hashlib  # pylint: disable=import-outside-toplevel
  from a2i_jax import train_eval  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import base  # pylint: disable=import-outside-toplevel
  runs = []

  class Counting:  # Each computation hashes an "images(8, 8, 3)" header per split.
    @staticmethod
    def sha256(data=b""):
      runs.extend([1] if bytes(data[:7]) == b"images(" else [])
      return hashlib.sha256(data)
  monkeypatch.setattr(base, "hashlib", Counting)
  workdir = str(tmp_path / "w")
  train_eval.record_dataset(workdir, _held(0), "", resumed=False)  # A new run.
  assert len(runs) == len(SPLITS)
  os.makedirs(os.path.join(workdir, "checkpoints", "2"))
  runs.clear()
  loaded = _held(0)  # A resume: checked, then its record's header compared.
  assert train_eval.align_with_record(workdir, loaded) is loaded
  train_eval.record_dataset(workdir, loaded, "", resumed=True)
  assert len(runs) == len(SPLITS)
  then = base.split_content(loaded)
  then["test"]["images"] = "edited"
  assert base.split_content(loaded)["test"]["images"] != "edited"
  other = _held(1)
  cropped = base.centre_cropped(loaded, 4)  # Another object, the same metadata.
  assert base.split_content(cropped)["test"] != base.split_content(loaded)["test"]
  replaced = dataclasses.replace(loaded, splits={**loaded.splits, "test": other["test"]})
  assert base.split_content(replaced)["test"] == base.split_content(other)["test"]
  before = base.split_content(loaded)
  loaded.splits["validation"] = other["validation"]  # The mapping edited in place.
  assert base.split_content(loaded)["validation"] == base.split_content(other)["validation"]
  assert base.split_content(loaded)["validation"] != before["validation"]
  assert base.split_content(loaded)["train"] == before["train"]
  loaded["train"].images[0] = 255 - loaded["train"].images[0]  # Edited in place: a plain
  assert base.split_content(loaded)["train"] != before["train"]  # call computes them again.



def _rewrite_at_same_size_and_time(image):
  """Rewrites the PNG `image` with new pixels at its very size, its modification time put
  back (`exiftool -P`, `cp -p` of a new set); returns the new pixels' value."""
  st = os.stat(image)
  for value in range(200, 256):  # New pixels in a PNG of the very same size.
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(image)
    if os.path.getsize(image) == st.st_size:
      break
  assert os.path.getsize(image) == st.st_size
  os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
  assert os.stat(image).st_mtime_ns == st.st_mtime_ns
  return value


def test_an_image_rewritten_at_its_size_and_time_is_refused(tmp_path):
  """Was: the prepared copy was keyed by each file's size and modification time alone, so a
  test image rewritten in place at its size with its time put back served the stale copy's
  pixels without a word (and then, keyed by change times and inodes too, any chmod or cp -a
  prepared a whole new copy: `test_a_folder_chmodded_linked_or_copied_keeps_its_copy`). The
  copy records each file's SHA-256: a file whose change time moved is hashed, and one that
  differs stops the load, naming it and the copy to delete, before anything is written."""
  path = _folder(tmp_path, "filename,split,smile", ["0", "1", "0"])
  data = tmp_path / "data"
  before = load_dataset(_folder_config(path, data), progress=False)
  assert before["test"].images.max() == 80
  (prepared,) = os.listdir(data / "folder")
  image = os.path.join(path, "images", "img2.png")
  _rewrite_at_same_size_and_time(image)
  listing = sorted(str(p) + str(p.stat().st_mtime_ns) for p in data.rglob("*"))
  copy = data / "folder" / prepared
  with pytest.raises(DataError) as e:
    load_dataset(_folder_config(path, data), progress=False)
  assert str(e.value) == (
      f"1 file(s) of {path} changed since its prepared copy {copy} was made, at the same size "
      "and modification time (rewritten with the time put back, e.g. exiftool -P or cp -p): "
      f"{image}; that copy holds their old pixels: delete the folder {copy} to prepare it "
      "again, then run the same command again."), str(e.value)
  assert sorted(str(p) + str(p.stat().st_mtime_ns) for p in data.rglob("*")) == listing
  shutil.rmtree(copy)  # The fix the message gives.
  value = load_dataset(_folder_config(path, data), progress=False)["test"].images.min()
  assert value >= 200 and os.listdir(data / "folder") == [prepared]


def test_two_folders_of_one_key_are_told_to_take_a_data_dir_each(tmp_path):
  """Was (review): two folders of the same file names, sizes and times but other bytes share
  one key; the second was told to delete the copy, which made the first refused in turn, and
  so on. Where the copy was made from another folder, the advice gives each its own data_dir,
  and followed, both load their own pixels."""
  first = _folder(tmp_path, "filename,split,smile", ["0", "1", "0"])
  second = tmp_path / "other" / "f"
  shutil.copytree(first, second, copy_function=shutil.copy2)
  _rewrite_at_same_size_and_time(os.path.join(second, "images", "img2.png"))
  data = tmp_path / "data"
  assert load_dataset(_folder_config(first, data), progress=False)["test"].images.max() == 80
  with pytest.raises(DataError, match=f"it was prepared from {first}: another folder of the "
                     f"same file names, sizes and times\\?\\).*: if {first} is another folder "
                     "still in use, give this one a data_dir of its own "
                     "\\(config.data.data_dir\\); otherwise delete the folder "):
    load_dataset(_folder_config(second, data), progress=False)
  own = tmp_path / "data of the other"
  assert load_dataset(_folder_config(second, own), progress=False)["test"].images.min() >= 200
  assert load_dataset(_folder_config(first, data), progress=False)["test"].images.max() == 80


def test_a_folder_chmodded_linked_or_copied_keeps_its_copy(tmp_path, monkeypatch, caplog):
  """Was (keyed by each file's change time and inode number): a `chmod -R`, a hard link to an
  image, or the folder staged with `cp -a` to a new place at each job prepared the folder
  again and kept one more whole copy in data_dir each time. The key is each file's size and
  modification time again: the same copy is served; files whose change time or inode moved
  are hashed once and their new ones noted beside the copy (a read-only data_dir skips the
  note, and hashes again next time), so the next load hashes nothing."""
  import logging  # pylint: disable=import-outside-toplevel
  from a2i_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import base  # pylint: disable=import-outside-toplevel
  path = _folder(tmp_path, "filename,split,smile", ["0", "1", "0"])
  data = tmp_path / "data"
  first = load_dataset(_folder_config(path, data), progress=False)
  (prepared,) = os.listdir(data / "folder")
  hashed = []
  sha256 = getattr(folder, "_file_sha256", None)  # None: a release before the record.
  monkeypatch.setattr(folder, "_file_sha256", lambda f: hashed.append(f) or sha256(f),
                      raising=False)
  load_dataset(_folder_config(path, data), progress=False)
  assert not hashed  # Unchanged: nothing read.
  os.chmod(os.path.join(path, "images", "img0.png"), 0o644)
  os.link(os.path.join(path, "images", "img1.png"), tmp_path / "backup.png")
  load_dataset(_folder_config(path, data), progress=False)
  assert os.listdir(data / "folder") == [prepared] and len(hashed) == 2
  elsewhere = tmp_path / "scratch" / "f"
  shutil.copytree(path, elsewhere, copy_function=shutil.copy2)  # cp -a: new inodes.

  def read_only(*args):
    raise OSError(errno.EROFS, "Read-only file system")
  with monkeypatch.context() as m:
    m.setattr(folder.files, "atomic_write", read_only)
    del hashed[:]
    load_dataset(_folder_config(elsewhere, data), progress=False)
    assert os.listdir(data / "folder") == [prepared] and len(hashed) == 3
  del hashed[:]
  moved = load_dataset(_folder_config(elsewhere, data), progress=False)
  assert os.listdir(data / "folder") == [prepared] and len(hashed) == 3  # Noted now.
  del hashed[:]
  load_dataset(_folder_config(elsewhere, data), progress=False)
  assert os.listdir(data / "folder") == [prepared] and not hashed
  with caplog.at_level(logging.WARNING):
    base.check_same_splits(str(tmp_path / "w"), checkpoints.dataset_info(first, path), moved)
  assert "differ" not in caplog.text


def test_a_trained_runs_data_folder_is_set_in_its_config_json(tmp_path):
  """Was: a trained run whose config.json names a data.cache_dir below a file (a path from
  another machine) was told, by infer.py and the inference API too, to "pass
  --config.data.cache_dir=<a folder>", a flag infer.py refuses. A run's data are told to be
  set in its config.json, as its data.path is; train.py's flag advice is as it was."""
  from a2i_jax.inference import restore  # pylint: disable=import-outside-toplevel
  (tmp_path / "afile").write_text("mine")
  cfg = tiny_config("cvae")
  cfg.data.cache_dir = str(tmp_path / "afile" / "cache")
  below = (f"config.data.cache_dir={tmp_path}/afile/cache is below {tmp_path}/afile, which is a "
           "file, not a folder; ")
  record = tmp_path / "w" / "config.json"
  with pytest.raises(DataError) as e:
    restore.load_run_data(cfg, str(tmp_path / "w"), progress=False)
  assert str(e.value) == (f"{below}set data.cache_dir in {record} to a folder (it is created "
                          "if missing)."), str(e.value)
  with pytest.raises(DataError) as e:
    load_dataset(cfg.data, progress=False)
  assert str(e.value) == (f"{below}pass --config.data.cache_dir=<a folder> (it is created if "
                          "missing).")
  cfg = tiny_config("cvae")
  cfg.data.name, cfg.data.data_dir = "lfw", " "
  with pytest.raises(DataError) as e:
    restore.load_run_data(cfg, str(tmp_path / "w"), progress=False)
  assert str(e.value) == (f"config.data.data_dir is empty; set data.data_dir in {record} to a "
                          "folder.")
  assert not (tmp_path / "w").exists()


# ------------------------------------------------- names and columns, turned TIFFs and masks


def _turned_tiffs(root):
  """A folder dataset `root`/t of 3 greyscale uncompressed TIFFs, 10x6 as shown (stored 6x10,
  EXIF orientation 6), the left half of the centred 6x6 square white; and masks/ of untagged
  TIFFs drawn on them as shown (the same pixels). Returns (path, the pixels as shown)."""
  path = os.path.join(str(root), "t")
  for sub in ("images", "masks"):
    os.makedirs(os.path.join(path, sub))
  shown = np.zeros((6, 10), np.uint8)
  shown[:, 2:5] = 255
  exif = Image.Exif()
  exif[0x0112] = 6
  for i in range(3):
    Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90).save(
        os.path.join(path, "images", f"s{i}.tif"), exif=exif)
    Image.fromarray(shown).save(os.path.join(path, "masks", f"s{i}.tif"))
  with open(os.path.join(path, "attributes.csv"), "w") as f:
    f.write("filename,split,a\n" + "".join(f"s{i}.tif,{s},{i}\n" for i, s in enumerate(SPLITS)))
  return path, shown


def test_turned_greyscale_tiffs_and_their_masks_are_prepared_as_shown(tmp_path):
  """Was: greyscale uncompressed TIFFs turned by their EXIF orientation (6) were read
  scrambled at their stored size (a Pillow fault, `inputs.read_image`), so that a folder of
  them trained on wrong pixels, and with masks drawn on them as shown stopped with a
  traceback from crop_resize. Read as shown, image and mask lie on each other."""
  path, shown = _turned_tiffs(tmp_path)
  ds = folder.load(path=path, data_dir=str(tmp_path / "d"), image_size=6, masks=True,
                   progress=False)
  want = shown[:, 2:8] > 127  # The centred square.
  np.testing.assert_array_equal(ds["train"].images[0][..., 0] > 127, want)
  np.testing.assert_array_equal(ds["train"].masks[0].reshape(6, 6) > 127, want)


def test_an_image_and_mask_decoded_at_other_sizes_are_refused(tmp_path, monkeypatch):
  """A safety net: an image and its mask whose headers agree but that decode at other sizes
  (a misread) are refused naming both (was: a traceback from crop_resize)."""
  path, _ = _turned_tiffs(tmp_path)
  read = folder.read_image
  monkeypatch.setattr(folder, "read_image", lambda p, *a, **kw: (
      read(p, *a, **kw).transpose(1, 0, 2) if "masks" in p else read(p, *a, **kw)))
  mask, image = (os.path.join(path, sub, "s0.tif") for sub in ("masks", "images"))
  with pytest.raises(DataError, match=re.escape(
      f"{mask} reads as 6x10 but its image {image} as 10x6 (turned by their EXIF "
      "orientations); masks must match their images: save both upright as PNGs.") + "$"):
    folder.load(path=path, data_dir=str(tmp_path / "d"), image_size=6, masks=True,
                progress=False)
  assert not (tmp_path / "d").exists()


def test_a_name_written_with_spaces_takes_the_file_named_so(tmp_path):
  """Was: with images/ holding both "img1.png" and "img1.png " (another photo), the cell
  "img1.png " (quoted, as written) was paired with "img1.png". The cell as written wins where
  that file exists; the stripped name is taken where only it does."""
  path = _folder(tmp_path, "filename,split,a", ["0", "1", "0"])
  shutil.copy(os.path.join(path, "images", "img0.png"), os.path.join(path, "images", "img1.png "))
  csv_path = os.path.join(path, "attributes.csv")
  with open(csv_path) as f:
    text = f.read()
  with open(csv_path, "w") as f:
    f.write(text.replace("img1.png,", '"img1.png ",').replace("img2.png,", '" img2.png",'))
  names = [r[0] for r in folder.scan(path, masks=False).rows]
  assert names == ["img0.png", "img1.png ", "img2.png"]


@pytest.mark.parametrize("cell", ["images\\img1.png", "C:\\Users\\me\\f\\images\\img1.png"])
def test_windows_paths_in_the_filename_column_name_the_fix(tmp_path, cell):
  """Was: a Windows path to the image (from a spreadsheet made there) was told "does not
  exist. Add it"; ".\\img1.png" too. ".\\" is taken as "./"; a path whose last part names a
  file in images/ is told to write that name, as a "/" path to it is."""
  path = _folder(tmp_path, "filename,split,a", ["0", "1", "0"])
  csv_path = os.path.join(path, "attributes.csv")
  with open(csv_path) as f:
    text = f.read()
  with open(csv_path, "w") as f:
    f.write(text.replace("img0.png,", ".\\img0.png,").replace("img1.png,", cell + ","))
  with pytest.raises(DataError, match=re.escape(
      f"{csv_path}, line 3: {cell!r} names the image by a (Windows) path; the filename column "
      "holds names of files in images/: write 'img1.png'.") + "$"):
    folder.scan(path, masks=False)
  with open(csv_path, "w") as f:
    f.write(text.replace("img0.png,", ".\\img0.png,"))
  assert folder.scan(path, masks=False).rows[0][0] == "img0.png"


def test_a_column_of_split_names_is_told_to_be_the_split_column(tmp_path):
  """Was: a column of train/test words named otherwise ("subset") was told to "write a
  number there". Without a `split` column it is told to be renamed `split`; beside one, to
  go."""
  path = _folder(tmp_path, "filename,split,subset", ["train", "VAL", "test"])
  with pytest.raises(DataError, match=re.escape(
      "column 'subset' holds 'train', not a finite number; it looks like a split, which the "
      "'split' column gives: delete this column.") + "$"):
    folder.scan(path, masks=False)
  with open(os.path.join(path, "attributes.csv"), "w") as f:
    f.write("filename,a,subset\n" + "".join(f"img{i}.png,{i},{s}\n"
                                           for i, s in enumerate(SPLITS)))
  with pytest.raises(DataError, match=re.escape(
      "column 'subset' holds 'train', not a finite number; it looks like a split: rename the "
      "column to 'split'.") + "$"):
    folder.scan(path, masks=False)


@pytest.mark.parametrize("line", ["sep=,", "SEP=;"])
def test_excels_separator_line_is_told_to_go(tmp_path, line):
  """Was: a CSV starting with Excel's "sep=," line was told that "the header ['sep=', ''] has
  no 'filename' column"."""
  path = _folder(tmp_path, "filename,split,a", ["0", "1", "0"])
  csv_path = os.path.join(path, "attributes.csv")
  with open(csv_path) as f:
    text = f.read()
  with open(csv_path, "w") as f:
    f.write(f"{line}\n{text}")
  with pytest.raises(DataError, match=re.escape(
      f"{csv_path} starts with the line {line!r}, Excel's note of the separator; delete that "
      "line, so that the header comes first.") + "$"):
    folder.scan(path, masks=False)


def test_progress_bars_in_a_log_update_every_half_minute(monkeypatch):
  """Was: the data preparation's bars (a folder's images, an archive's unpacking, a split's
  reading, the LFW mask network) updated ten times a second also into a job's log: 42 lines in
  4 s for 3,000 images (fault hunt). A terminal or a notebook keeps tqdm's pace."""
  import io  # pylint: disable=import-outside-toplevel
  from a2i_jax import progress  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import tfds_lib  # pylint: disable=import-outside-toplevel
  bar = progress.bar  # Made enabled whatever TQDM_DISABLE says (tqdm reads it at import).

  class Terminal(io.StringIO):
    def isatty(self):
      return True
  for stream, notebook, interval in ((io.StringIO(), False, 30.0), (Terminal(), False, 0.1),
                                     (io.StringIO(), True, 0.1)):
    monkeypatch.setattr(sys, "stderr", stream)
    if notebook:
      monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setattr(progress, "bar", functools.partial(bar, disable=False))  # TQDM_DISABLE=1
    wrapped = tfds_lib.progress_bar(True)(range(3), "reading")
    assert wrapped.mininterval == interval and list(wrapped) == [0, 1, 2]
    assert progress.bar(range(2), desc="x", mininterval=5).mininterval == 5  # Asked: kept.
  # Every bar of the library is made there (the training bar had the rule alone).
  package = os.path.dirname(progress.__file__)
  for folder, _, names in os.walk(package):
    for name in names:
      if name.endswith(".py") and name != "progress.py":
        with open(os.path.join(folder, name), encoding="utf-8") as f:
          assert not re.search(r"^\s*(from\s+tqdm(\.\w+)*\s+import|import\s+tqdm)", f.read(),
                               re.M), name
