"""Fault hunt of the user's-folder dataset (`a2i_jax.data.folder`): attributes.csv's cells and
lines, and the prepared copy's name.

Each test is one finding, its docstring says what happened before ("Was: ..."). All run at the
library's level on a folder of three tiny images made in `tmp_path`: no subprocess, no model.
"""

import errno
import os
import re

import numpy as np
import pytest
from PIL import Image

from a2i_jax.data import folder, load_dataset
from a2i_jax.errors import DataError
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
      f"preparing the folder dataset {path} failed: Input/output error at "
      "/mnt/disk/f/images/img0.png; fix what the system names (or point config.data.data_dir "
      "at another folder), then run the same command again.") + "$"):
    load_dataset(cfg, progress=False)


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
