"""Fault hunt of the dataset sources (LFW, the folder dataset, dataset.json's record of a
run's data): what a user's data could make them do silently or as a traceback.

Each test is one finding, its docstring says what happened before ("Was: ..."). All run at
the library's level on tiny fixtures made in `tmp_path`: no subprocess, no model.
"""

import json
import logging
import os
import re
import shutil

import numpy as np
import pytest

import dataset_fixtures as fx


def _shift_lfw_scores(manual, by):
  """Rewrites lfw_attributes.txt with every score moved by `by` (a corrected file)."""
  path = os.path.join(manual, "lfw_attributes.txt")
  out = []
  for line in open(path, encoding="utf-8").read().splitlines():
    if line.startswith("#"):
      out.append(line)
      continue
    f = line.split("\t")
    out.append("\t".join(f[:2] + [f"{float(v) + by:.4f}" for v in f[2:]]))
  with open(path, "w", encoding="utf-8") as fh:
    fh.write("\n".join(out) + "\n")


def test_lfw_cvae_keeps_its_no_masks_copy_after_a_masks_copy_is_made(tmp_path, monkeypatch,
                                                                     caplog):
  """Was: `lfw.load(masks=False)` read the masks copy whenever one was prepared. A CVAE run's
  no_masks copy made from lfw_attributes.txt v1, the file corrected (v2), then a disCVAE run
  prepared the masks copy from v2: the CVAE run resumed and was served on v2's attributes
  without a word. Now the no_masks copy is read where it is prepared."""
  from a2i_jax.data import lfw  # pylint: disable=import-outside-toplevel
  fx.fake_mask_net(monkeypatch)
  manual = str(tmp_path / "manual" / "lfw")
  fx.make_lfw(manual)
  kw = dict(data_dir=str(tmp_path), allow_download=False, progress=False)
  v1 = lfw.load(masks=False, **kw)["train"].attributes
  _shift_lfw_scores(manual, 100.0)
  assert lfw.load(masks=True, **kw)["train"].attributes[0, 0] == v1[0, 0] + 100
  with caplog.at_level(logging.WARNING):
    again = lfw.load(masks=False, **kw)
  np.testing.assert_array_equal(again["train"].attributes, v1)
  assert "is not the lfw_attributes.txt the prepared copy" in caplog.text


def _folder_run(tmp_path, name, edit=None):
  """A folder dataset made at tmp_path/name/mine (`edit(path)` changes it), loaded."""
  from a2i_jax.data import folder  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / name / "mine")
  fx.make_folder(path, masks=True)
  if edit is not None:
    edit(path)
  return folder.load(path=path, data_dir=str(tmp_path / "data"), image_size=16, masks=True,
                     progress=False), path


def _recolour(path, names):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  for n in names:
    image = os.path.join(path, "images", n)
    Image.fromarray(255 - np.asarray(Image.open(image))).save(image)


def test_same_file_names_with_other_content_are_refused_on_resume_and_serving(tmp_path,
                                                                             caplog):
  """Was: dataset.json recorded each split's example ids only, so a relative
  --config.data.path run from another directory, naming a folder of the same file names but
  other images or attributes, resumed ("resumed from step 2") and was served on the other
  folder without a word. dataset.json records digests of each split's images, attributes
  and masks now: a held-out split that differs is refused, the train split's a warning;
  the same data with its rows or columns reordered passes; a record without the digests
  (written before they were) is not checked."""
  from a2i_jax import checkpoints, train_eval  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import folder  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import ConfigError, DataError  # pylint: disable=import-outside-toplevel
  ds, path = _folder_run(tmp_path, "a")
  workdir = str(tmp_path / "w")
  train_eval.record_dataset(workdir, ds, path, resumed=False)
  os.makedirs(os.path.join(workdir, "checkpoints", "2"))
  info = checkpoints.load_dataset_info(workdir)
  assert set(info["split_content"]) == {"train", "validation", "test"}
  assert info["data_path"] == path
  # Another folder of the same names, all images other: refused, naming the splits.
  other, _ = _folder_run(tmp_path, "b", lambda p: _recolour(p, os.listdir(f"{p}/images")))
  with pytest.raises(DataError) as e:
    train_eval.align_with_record(workdir, other)
  assert str(e.value) == (
      "the train, validation and test splits' images differ from those the run in "
      f"{workdir} started with, under the same example names: they are read from "
      f"{other.metadata['source']}, and the run started with the data at {path} (a relative "
      "config.data.path names another folder when the command runs from another directory); "
      f"use the data at {path} (config.data.path: train.py's --config.data.path, or "
      "data.path in the workdir's config.json for infer.py), or start a new --workdir.")
  # Served the same way, said as other data, not as images moved between the splits.
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax.inference import restore  # pylint: disable=import-outside-toplevel
  config = config_lib.get_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                              "configs", "folder.py"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(restore, "load_dataset", lambda *args, **kwargs: other)
    with pytest.raises(DataError) as served:
      restore.load_run_data(config, workdir, progress=False)
  assert str(served.value) == f"this run's data changed since it was trained: {e.value}"
  # Other attributes (every age + 1): refused, naming the attributes.
  def older(p):
    csv = os.path.join(p, "attributes.csv")
    lines = open(csv).read().splitlines()
    rows = [f"{n},{s},{float(a) + 1}" for n, s, a in (r.split(",") for r in lines[1:])]
    open(csv, "w").write("\n".join(lines[:1] + rows) + "\n")
  with pytest.raises(DataError, match="the train, validation and test splits' attributes "
                     "differ"):
    train_eval.align_with_record(workdir, _folder_run(tmp_path, "c", older)[0])
  # The same data, columns swapped: passes (the attributes are taken by name).
  def swapped(p):
    csv = os.path.join(p, "attributes.csv")
    rows = [r.split(",") for r in open(csv).read().splitlines()]
    open(csv, "w").write("\n".join(f"{n},{a},{s}" for n, s, a in rows) + "\n")
  train_eval.align_with_record(workdir, _folder_run(tmp_path, "d", swapped)[0])
  # Only a training image other: said, and goes on.
  train_only, _ = _folder_run(tmp_path, "e", lambda p: _recolour(p, ["img_00.png"]))
  with caplog.at_level(logging.WARNING):
    assert train_eval.align_with_record(workdir, train_only) is train_only
  assert ("the train split's images differ from those the run in "
          f"{workdir} started with, under the same example names (read from "
          f"{train_only.metadata['source']}; the run started with {path})") in caplog.text
  # The run's own folder changed in place (or read by another Pillow): said, and goes on.
  caplog.clear()
  _recolour(path, os.listdir(f"{path}/images"))
  changed = folder.load(path=path, data_dir=str(tmp_path / "data"), image_size=16, masks=True,
                        progress=False)
  with caplog.at_level(logging.WARNING):
    assert train_eval.align_with_record(workdir, changed) is changed
  assert ("the train, validation and test splits' images differ from those the run in "
          f"{workdir} started with, under the same example names: the data changed since"
          ) in caplog.text
  # The run's folder gone (the run moved to another machine, its data elsewhere and read by
  # another Pillow): said, naming both places, not refused (read-through).
  caplog.clear()
  os.rename(path, path + "_gone")
  with caplog.at_level(logging.WARNING):
    assert train_eval.align_with_record(workdir, other) is other
  assert f"(read from {other.metadata['source']}; the run started with {path})" in caplog.text
  os.rename(path + "_gone", path)
  # A damaged record is one error; a record without the digests is not checked.
  record = os.path.join(workdir, "dataset.json")
  with open(record, "w") as f:
    json.dump({**info, "split_content": {"train": "?"}}, f)
  with pytest.raises(ConfigError, match=re.escape(f"{record} is unreadable (split_content must")):
    train_eval.align_with_record(workdir, other)
  del info["split_content"]
  with open(record, "w") as f:
    json.dump(info, f)
  assert train_eval.align_with_record(workdir, other) is other


def test_lfw_view1_images_without_attribute_rows_are_counted_or_refused(tmp_path, caplog):
  """Was: View 1 images that lfw_attributes.txt has no row for were dropped with a warning
  once, at preparation, and silently at every later load, however many: a file cut down to
  a few rows prepared a copy of a few images. More than 2 % of them is refused before
  anything is written, naming the file, the counts and the fix; fewer are recorded in the
  prepared copy and said at each load."""
  from a2i_jax.data import lfw  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  manual = tmp_path / "manual" / "lfw"
  fx.make_lfw(str(manual), with_parts=False)  # One View 1 image of 14 has no row.
  kw = dict(data_dir=str(tmp_path), masks=False, allow_download=False, progress=False)
  lfw.load(**kw)
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="absl"):  # The file's own gaps: INFO, not a warning.
    assert len(lfw.load(**kw)["train"]) == 8
  copy = tmp_path / "a2i_lfw" / "no_masks" / "1.0.0"
  assert (f"LFW: 1 View 1 image(s) are not in the prepared copy at {copy} (1 of train, 0 of "
          "test): lfw_attributes.txt had no row for them") in caplog.text
  cut = tmp_path / "cut"
  fx.make_lfw(str(cut / "manual" / "lfw"), with_parts=False)
  path = cut / "manual" / "lfw" / "lfw_attributes.txt"
  lines = path.read_text().splitlines()
  path.write_text("\n".join(l for l in lines if not l.startswith("Carol")) + "\n")
  with pytest.raises(DataError, match=(
      f"{path} has no row for 6 of the 14 LFW View 1 images \\(6 of 10 in train, 0 of 4 in "
      "test; e.g. Bob_Jones_0002\\), more than 2% of them: it is not the published "
      "lfw_attributes.txt, or not the whole of it. Download it again")):
    lfw.load(**{**kw, "data_dir": str(cut)})
  assert sorted(os.listdir(cut)) == ["manual"]  # Refused before anything was written.


def test_names_that_are_not_utf8_are_refused_or_made_safe(tmp_path):
  """Was: a folder dataset or data_dir whose name is not valid UTF-8 (the bytes caf\\xe9)
  stopped with a TypeError traceback from the ArrayRecord writer, and left
  <data_dir>/folder/caf?-KEY/ behind. Such a data_dir is refused up front in one line that
  prints (escaped); the prepared copy of such a folder is named with "_" for the bytes."""
  from a2i_jax.data import folder, lfw  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  base = os.fsencode(str(tmp_path))
  path = os.fsdecode(base + b"/caf\xe9")
  fx.make_folder(path, masks=False)
  data = str(tmp_path / "data")
  for _ in range(2):  # Prepared, then read.
    ds = folder.load(path=path, data_dir=data, image_size=16, progress=False)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 10, "validation": 1,
                                                          "test": 1}
  made = os.listdir(os.path.join(data, "folder"))
  assert len(made) == 1 and made[0].startswith("caf_-")
  bad = os.fsdecode(base + b"/d\xe9")
  for load in (lambda: folder.load(path=path, data_dir=bad, image_size=16, progress=False),
               lambda: lfw.load(data_dir=bad, masks=False, allow_download=False,
                                progress=False)):
    with pytest.raises(DataError) as e:
      load()
    assert str(e.value).startswith(f"config.data.data_dir={tmp_path}/d\\xe9 is not a "
                                   "valid UTF-8 name"), str(e.value)  # Its bytes, escaped.
    str(e.value).encode("utf-8")  # Prints.
  assert not os.path.lexists(bad)


def test_folder_mask_of_another_exif_orientation_than_its_image_is_refused(tmp_path):
  """Was: a square phone photo stored sideways (EXIF orientation 6) was turned upright when
  read and its mask, drawn on the stored pixels (no tag), was not: the mask lay at right
  angles to its image without a word (a landscape one was refused as a mask of another
  size, naming sizes the files do not have). Both orientations are named now, with the fix;
  a size that differs is named as shown."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import folder  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "mine")
  fx.make_folder(path, masks=True)
  image, mask = (os.path.join(path, d, "img_00.jpg") for d in ("images", "masks"))
  pixels = np.zeros((32, 32, 3), np.uint8)
  pixels[:, :16] = 250
  im = Image.fromarray(pixels)
  exif = im.getexif()
  exif[0x0112] = 6
  im.save(image, exif=exif, quality=95)
  Image.fromarray(pixels[..., 0]).save(mask, quality=95)
  for d in ("images", "masks"):
    os.remove(os.path.join(path, d, "img_00.png"))
  csv = os.path.join(path, "attributes.csv")
  with open(csv) as f:
    text = f.read().replace("img_00.png", "img_00.jpg")
  with open(csv, "w") as f:
    f.write(text)
  load = lambda: folder.load(path=path, data_dir=str(tmp_path / "data"), image_size=16,
                             masks=True, progress=False)
  with pytest.raises(DataError, match=re.escape(
      f"{image} has EXIF orientation 6 but its mask {mask} has none (upright), and their "
      "sizes do not show that the mask was drawn on the image as shown, so the two would be "
      "turned differently and the mask might not lie on its image; save the image upright "
      "(PIL: ImageOps.exif_transpose(Image.open(path)).save(...))")):
    load()
  assert not os.path.exists(tmp_path / "data")
  Image.fromarray(pixels[:, :24, 0]).save(mask, exif=exif, quality=95)  # 24x32, turned.
  with pytest.raises(DataError, match=re.escape(
      f"{mask} is 32x24 but its image {image} is 32x32 (both as shown, turned by their EXIF "
      "orientation); masks must match their images.")):
    load()
  Image.fromarray(pixels[..., 0]).save(mask, exif=exif, quality=95)  # The same tag: read.
  first = load()["train"]  # img_00: the mask lies on the bright half, turned alike.
  bright, fg = first.images[0].mean(-1) > 128, np.squeeze(first.masks[0]) > 127
  assert (bright == fg).mean() > 0.9
  # A portrait stored sideways, its mask drawn (untagged) on the image as shown: the sizes
  # match only as shown, so the two lie on each other as read (read-through: was refused).
  from PIL import ImageOps  # pylint: disable=import-outside-toplevel
  im = Image.fromarray(pixels[:24])  # Stored 32 wide, 24 high; shown 24 x 32.
  im.save(image, exif=exif, quality=95)
  with Image.open(image) as stored_image:
    ImageOps.exif_transpose(stored_image).convert("L").save(mask, quality=95)
  shutil.rmtree(tmp_path / "data", ignore_errors=True)
  upright = load()["train"]
  bright, fg = upright.images[0].mean(-1) > 128, np.squeeze(upright.masks[0]) > 127
  assert (bright == fg).mean() > 0.9
  # Its size as shown, but tagged otherwise (turned 180 degrees as read): how it was drawn
  # cannot be told, so refused (read-through: was read).
  turned = Image.Exif()
  turned[0x0112] = 3
  Image.fromarray(np.zeros((32, 24), np.uint8)).save(mask, exif=turned, quality=95)
  shutil.rmtree(tmp_path / "data", ignore_errors=True)
  with pytest.raises(DataError, match=re.escape(
      f"its mask {mask} has 3, and a mask turned by an orientation of its own does not show "
      "how it was drawn on its image, so")):
    load()


def test_relative_data_paths_are_recorded_from_the_root(tmp_path, monkeypatch):
  """Was: config.json recorded a relative --config.data.path as typed, so infer.py run from
  another directory read another folder of that name. The run's config names the folders
  from the root now; a path from the home folder stays as written (the same folder for its
  user wherever the command runs), and the caller's config is not changed."""
  from a2i_jax import config_lib, train_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.get_config(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "folder.py"))
  monkeypatch.chdir(tmp_path)
  config.data.path, config.data.data_dir = "mine", "~/a2i_data"
  recorded = train_lib._absolute_data_paths(config)  # pylint: disable=protected-access
  assert recorded.data.path == str(tmp_path / "mine")
  assert recorded.data.data_dir == "~/a2i_data"
  assert config.data.path == "mine"
  config.data.data_dir = "prepared"
  assert train_lib._absolute_data_paths(config).data.data_dir == str(tmp_path / "prepared")
  config.data.path, config.data.data_dir = "/abs/mine", "~/a2i_data"
  assert train_lib._absolute_data_paths(config) is config


def test_predicted_masks_are_left_out_of_the_content_digest():
  """Was: an LFW disCVAE run whose masks copy was prepared under another JAX version (the mask
  network's predictions differ in their last bits) was refused as "other data". Only masks
  drawn by hand are in the digest; a hand-drawn mask that changes still counts."""
  from a2i_jax.data import base  # pylint: disable=import-outside-toplevel

  def dataset(masks):
    split = base.Split(images=np.zeros((3, 4, 4, 3), np.uint8),
                       attributes=np.zeros((3, 1), np.float32), masks=masks,
                       mask_predicted=np.array([False, True, True]))
    return base.Dataset("lfw", ("a",), ("binary",), {s: split for s in base.SPLITS})
  masks = np.zeros((3, 4, 4), np.uint8)
  then = base.split_content(dataset(masks))
  predicted_other = masks.copy()
  predicted_other[1:] = 255
  assert base.split_content(dataset(predicted_other)) == then
  drawn_other = masks.copy()
  drawn_other[0] = 255
  assert base.split_content(dataset(drawn_other))["test"]["masks"] != then["test"]["masks"]


def test_an_older_runs_relative_data_path_is_no_change_on_resume(tmp_path, monkeypatch):
  """Read-through finding: a run that recorded data.data_dir="reldata" as typed, resumed
  from the same directory, warned "data.data_dir 'reldata' -> '/.../reldata'" and kept a
  config_history copy, nothing having changed. The folder the relative path names from
  here is the same; another folder is still a change."""
  from a2i_jax import checkpoints, config_lib, train_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.get_config(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "folder.py"))
  config.data.path, config.data.data_dir = "/abs/mine", "reldata"
  workdir = str(tmp_path / "w")
  checkpoints.save_config(workdir, config)
  monkeypatch.chdir(tmp_path)
  now = train_lib._absolute_data_paths(config)  # pylint: disable=protected-access
  assert now.data.data_dir == str(tmp_path / "reldata")
  assert train_lib._changes_from_record(workdir, now)[1] == []  # pylint: disable=protected-access
  now.data.data_dir = str(tmp_path / "other")
  assert train_lib._changes_from_record(workdir, now)[1] == [  # pylint: disable=protected-access
      ("data.data_dir", "reldata", str(tmp_path / "other"))]


def test_the_default_data_cache_follows_xdg_cache_home_and_an_earlier_cache_is_used(
    tmp_path, monkeypatch, caplog):
  """Was (fault hunt): the default data.cache_dir, "~/.cache/a2i_jax", had "~" expanded alone,
  where the compilation cache's default follows $XDG_CACHE_HOME (`files.user_cache_dir`).
  Now it does too; a synthetic cache made at the earlier place, which the new one lacks, is
  used from there with one warning, not made again elsewhere without a word."""
  from a2i_jax import config_lib, data  # pylint: disable=import-outside-toplevel
  home, xdg = tmp_path / "home", tmp_path / "xdg"
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
  section = config_lib.get_config("configs/synthetic.py").data
  section.synthetic.num_train, section.synthetic.num_validation = 8, 2
  section.synthetic.num_test = 2
  first = data.load_dataset(section, progress=False)
  assert not (home / ".cache").exists()
  made = os.listdir(xdg / "a2i_jax")
  assert len(made) == 1 and made[0].endswith(".npz")
  assert section.cache_dir == data.DEFAULT_CACHE_DIR
  assert data.cache_folder(section.cache_dir) == str(xdg / "a2i_jax")
  assert data.cache_folder("~/mine") == str(home / "mine")  # Another value: as written.
  old = home / ".cache" / "a2i_jax"  # A cache made before the default followed XDG.
  os.makedirs(old)
  shutil.move(str(xdg / "a2i_jax" / made[0]), str(old / made[0]))
  with caplog.at_level(logging.WARNING):
    again = data.load_dataset(section, progress=False)
  assert os.listdir(xdg / "a2i_jax") == []  # Read from the earlier place, not made anew.
  assert any(str(old) in r.getMessage() and "XDG_CACHE_HOME" in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
  np.testing.assert_array_equal(first["train"].images, again["train"].images)


def test_truncated_source_images_are_refused_with_pils_truncated_flag_set(tmp_path,
                                                                          monkeypatch):
  """Was: where PIL's `ImageFile.LOAD_TRUNCATED_IMAGES` was set (a notebook; TFDS's
  thumbnails set it), a truncated CUB or LFW image, segmentation or part label was read as
  grey fill, prepared and sealed with checksums. The same DataError with the flag as without,
  and the flag is left as it was."""
  import io  # pylint: disable=import-outside-toplevel
  from PIL import Image, ImageFile  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import tfds_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
  for fmt, mode in (("JPEG", "RGB"), ("PNG", "L"), ("PPM", "RGB")):
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, fmt)
    path = str(tmp_path / f"cut.{fmt.lower()}")
    with open(path, "wb") as f:
      f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
    said = []
    for flag in (False, True):
      monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", flag)
      with pytest.raises(DataError) as e:
        tfds_lib.read_source_image(path, mode, "download it again.")
      said.append(str(e.value))
      assert ImageFile.LOAD_TRUNCATED_IMAGES is flag
    assert said[0] == said[1], fmt
    assert said[1].startswith(f"{path} could not be decoded (") and said[1].endswith(
        "the file is damaged or incomplete: download it again."), said[1]


def _offline(monkeypatch):
  """Every host out of reach, at once (the tests have no network)."""
  from a2i_jax.data import tfds_lib  # pylint: disable=import-outside-toplevel

  def refused(address, timeout):
    raise OSError(-2, "Name or service not known")
  monkeypatch.setattr(tfds_lib.socket, "create_connection", refused)
  monkeypatch.setattr(tfds_lib.urllib.request, "getproxies", dict)


def test_a_run_refused_offline_with_downloads_on_writes_nothing(tmp_path, monkeypatch):
  """Was: with data.download=True (the default) and no network, a run refused for LFW's or
  CUB's missing source files still made data_dir and left downloads/extracted/, the
  preparation's lock file and TFDS's .config/metadata.json there. Refused before the builder
  now; and where preparing itself is refused, only what that run made is taken back, never
  what was there before (TFDS's config record included)."""
  from a2i_jax.data import cub, lfw, tfds_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import DatasetNotPreparedError  # pylint: disable=import-outside-toplevel
  _offline(monkeypatch)
  existing = tmp_path / "existing"
  (existing / "downloads").mkdir(parents=True)
  (existing / "mine.txt").write_text("kept")
  (existing / "downloads" / "keep.bin").write_text("kept")
  loads = (lambda d: lfw.load(data_dir=d, masks=False, progress=False),
           lambda d: lfw.load(data_dir=d, masks=True, progress=False),
           lambda d: cub.load(data_dir=d, progress=False))
  before = sorted(p.relative_to(existing) for p in existing.rglob("*"))
  for checked_first in (True, False):
    if not checked_first:  # The preparation's own refusal: its take-back alone.
      monkeypatch.setattr(tfds_lib, "check_sources_first", lambda *a, **k: None)
    for load in loads:
      for data in (tmp_path / "new" / "data", existing):
        with pytest.raises(DatasetNotPreparedError, match=(
            "(?s)source file\\(s\\) missing: .*cannot reach .*Name or service not known")):
          load(str(data))
        assert not (tmp_path / "new").exists(), list((tmp_path / "new").rglob("*"))
        assert sorted(p.relative_to(existing) for p in existing.rglob("*")) == before
  # TFDS's config record, there before: kept.
  record = existing / "a2i_lfw" / ".config" / "metadata.json"
  record.parent.mkdir(parents=True)
  record.write_text('{"default_config_name": "masks"}')
  with pytest.raises(DatasetNotPreparedError):
    lfw.load(data_dir=str(existing), masks=False, progress=False)
  assert record.exists() and not (existing / "downloads" / "extracted").exists()


def test_lfw_attribute_file_messages_end_with_the_fix(tmp_path):
  """Was: a line of lfw_attributes.txt cut short, a value that is no number, and a file that
  is not Kumar et al.'s (no header, or a header naming other than 73 attributes) were named
  without the fix that the people files' messages give."""
  from a2i_jax.data import lfw  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  header = "\t".join(["#", "person", "imagenum"] + fx.LFW_ATTRIBUTE_NAMES)
  row = "\t".join(["Ann Doe", "1"] + ["0.5"] * 73)
  path = tmp_path / "lfw_attributes.txt"
  fix = f" Download it again ({lfw._ATTRIBUTES_URL})."  # pylint: disable=protected-access
  for text, says in (
      (f"# x\n{header}\n{row}\n{row[:len(row) // 2]}", "line 4: 38 tab-separated fields, "
       "expected 75 (person, imagenum, 73 scores); the file is cut short or damaged."),
      (f"# x\n{header}\n{row.replace('0.5', 'x', 1)}\n", "line 3: could not convert string "
       "to float: 'x'; the file is damaged."),
      (f"<html>\n{row}\n", "no '#<TAB>person<TAB>imagenum<TAB>...' header line in the first "
       "lines; this is not Kumar et al.'s lfw_attributes.txt."),
      (f"# x\n{header[:header.rindex(chr(9))]}\n{row}\n", "the header names 72 attributes, "
       "expected 73; this is not Kumar et al.'s lfw_attributes.txt.")):
    path.write_text(text)
    with pytest.raises(DataError) as e:
      lfw.parse_attributes(str(path))
    assert str(e.value).endswith(says + fix), str(e.value)


def test_a_run_offline_waits_for_another_process_preparing_the_copy(tmp_path, monkeypatch,
                                                                   caplog):
  """Was: the early check of the source files (`tfds_lib.check_sources_first`, with downloads
  on since 2189da9) refused a run at once where it could not reach the host, though another
  process held the preparation's lock (a login node preparing while a compute node without
  network waits): before that commit it waited on the lock and read the finished copy. It
  waits again; here the lock is held from another open file of this process (`flock` locks
  belong to an open file), and once let go the run goes on to the preparation's own refusal."""
  import fcntl  # pylint: disable=import-outside-toplevel
  import threading  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import cub, lfw, tfds_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import DatasetNotPreparedError  # pylint: disable=import-outside-toplevel
  _offline(monkeypatch)
  data = str(tmp_path)
  for builder, load, where in (
      (lfw.A2iLfw, lambda: lfw.load(data_dir=data, masks=False, progress=False),
       os.path.join(data, "a2i_lfw", "no_masks", str(lfw.A2iLfw.VERSION))),
      (cub.A2iCub, lambda: cub.load(data_dir=data, progress=False),
       os.path.join(data, "a2i_cub", str(cub.A2iCub.VERSION)))):
    lock = tfds_lib.preparation_lock(where, builder.name)
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # Another process preparing the copy.
    assert tfds_lib.held_elsewhere(lock)
    raised = []

    def run(load=load, raised=raised):
      try:
        load()
      except Exception as e:  # pylint: disable=broad-except
        raised.append(e)
    thread = threading.Thread(target=run, daemon=True)
    caplog.clear()
    try:
      with caplog.at_level(logging.INFO):
        thread.start()
        waiting = f"waiting for another process preparing {builder.name} (lock {lock})"
        deadline = time.monotonic() + 60
        while (thread.is_alive() and time.monotonic() < deadline
               and waiting not in caplog.text):
          time.sleep(0.05)
        assert thread.is_alive() and waiting in caplog.text, (raised, caplog.text[-2000:])
    finally:
      os.close(fd)  # Let go: the run takes the lock and prepares.
      thread.join(60)
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], DatasetNotPreparedError), raised
    assert "cannot reach" in str(raised[0]) and os.path.isfile(lock)  # The lock was there.


def test_a_failed_preparation_keeps_what_other_preparations_made_or_use(tmp_path):
  """Was: where preparing failed, `tfds_lib._made_by_preparing`'s take-back removed TFDS's
  config record (`a2i_lfw/.config/metadata.json`) that another run had written meanwhile
  for the other LFW config it prepared (both configs share one lock: the second run looked
  before waiting on it), and the data_dir's downloads/ and downloads/extracted/, which CUB's
  preparation (another lock) may be using. The record is kept where a config folder holds a
  copy, the downloads folders while another preparation's lock is held; with neither, both
  are taken back as before."""
  import fcntl  # pylint: disable=import-outside-toplevel
  import types  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import cub, lfw, tfds_lib  # pylint: disable=import-outside-toplevel
  data = tmp_path / "data"
  home = data / "a2i_lfw"
  version = str(lfw.A2iLfw.VERSION)
  where = str(home / "no_masks" / version)
  builder = types.SimpleNamespace(builder_config=object(), name=lfw.A2iLfw.name)
  lock = tfds_lib.preparation_lock(where, builder.name)
  record = home / ".config" / "metadata.json"
  extracted = data / "downloads" / "extracted"
  for other_copy in (True, False):
    take_back = tfds_lib._made_by_preparing(  # pylint: disable=protected-access
        builder, where, str(data / "downloads"), lock)
    # What the preparations made meanwhile: the folders, the record, the lock file, and
    # (first) the masks copy another run prepared.
    os.makedirs(os.path.dirname(where))
    record.parent.mkdir(parents=True)
    record.write_text('{"default_config_name": "masks"}')
    extracted.mkdir(parents=True)
    open(lock, "w").close()
    if other_copy:
      (home / "masks" / version).mkdir(parents=True)
      (home / "masks" / version / "x.array_record").write_text("x")
    cub_lock = tfds_lib.preparation_lock(str(data / "a2i_cub" / str(cub.A2iCub.VERSION)),
                                         cub.A2iCub.name)
    fd = os.open(cub_lock, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)  # CUB is being prepared.
      take_back()
      assert extracted.is_dir()
    finally:
      os.close(fd)
    assert record.exists() is other_copy and not os.path.exists(lock)
    os.remove(cub_lock)
    take_back()  # No other preparation now: the downloads folders go.
    if other_copy:
      assert sorted(os.listdir(data)) == ["a2i_lfw"] and sorted(os.listdir(home)) == [
          ".config", "masks"]
      shutil.rmtree(data)
  assert not data.exists()
