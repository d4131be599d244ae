"""Tiny source files in the real formats of LFW, its attributes and part labels, CUB-200-2011
and an own folder, for the offline builder tests.

Every image encodes which example it is, so the tests can check that the right attributes
and masks land on the right image: the crop region holds a flat colour `_colour(i)` and the
attribute vector (or CSV row) holds i.
"""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
from PIL import Image


LFW_TRAIN_PEOPLE = {"Alice_Smith": 3, "Bob_Jones": 2, "Carol_White": 5}
LFW_TEST_PEOPLE = {"Dan_Brown": 2, "Eve_Black": 2}
LFW_NO_ATTRIBUTES = ("Bob_Jones", 2)  # A View 1 image without an attribute row.
LFW_PARTS = {"train": [("Alice_Smith", 1), ("Carol_White", 2), ("Zed_Unlisted", 1)],
             "validation": [("Carol_White", 3)],
             "test": [("Dan_Brown", 1), ("Zed_Unlisted", 2)]}
LFW_ATTRIBUTE_NAMES = [f"Attr {j}" for j in range(73)]


def colour(i: int) -> tuple[int, int, int]:
  """A distinct flat colour for example i (far from white, which marks the crop corner)."""
  return (20 + (37 * i) % 180, 20 + (71 * i) % 180, 20 + (13 * i) % 180)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _encode(array: np.ndarray, fmt: str) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
  return buf.getvalue()


def lfw_index() -> dict[tuple[str, int], int]:
  """(name, n) -> the example number its pixels and attributes encode."""
  keys = [(p, n) for people in (LFW_TRAIN_PEOPLE, LFW_TEST_PEOPLE)
          for p, c in people.items() for n in range(1, c + 1)]
  keys += [("Zed_Unlisted", 1), ("Zed_Unlisted", 2)]
  return {k: i for i, k in enumerate(keys)}


def lfw_face(i: int) -> np.ndarray:
  """250x250: red outside the crop box, colour(i) inside, white in its top-left 30x30."""
  im = np.zeros((250, 250, 3), np.uint8)
  im[...] = (255, 0, 0)
  im[50:200, 50:200] = colour(i)
  im[50:80, 50:80] = 255
  return im


def lfw_label() -> np.ndarray:
  """Part labels: the top half of the crop box is hair (left) and face (right), the rest
  background."""
  lab = np.zeros((250, 250, 3), np.uint8)
  lab[..., 2] = 255
  lab[50:125, 50:125] = (255, 0, 0)
  lab[50:125, 125:200] = (0, 255, 0)
  return lab


def make_lfw(manual_dir: str, with_parts: bool = True) -> None:
  """Writes the LFW source files (tiny) into manual_dir."""
  os.makedirs(manual_dir, exist_ok=True)
  index = lfw_index()
  with tarfile.open(os.path.join(manual_dir, "lfw-funneled.tgz"), "w:gz") as tar:
    for (name, n), i in index.items():
      _add(tar, f"lfw_funneled/{name}/{name}_{n:04d}.jpg", _encode(lfw_face(i), "JPEG"))
  lines = ["# Kumar et al. attribute classifier outputs: lfw_attributes.txt",
           "\t".join(["#", "person", "imagenum"] + LFW_ATTRIBUTE_NAMES)]
  for (name, n), i in index.items():
    if (name, n) == LFW_NO_ATTRIBUTES:
      continue
    values = [f"{i + j / 100:.4f}" for j in range(73)]
    lines.append("\t".join([name.replace("_", " "), str(n)] + values))
  with open(os.path.join(manual_dir, "lfw_attributes.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  for fname, people in (("peopleDevTrain.txt", LFW_TRAIN_PEOPLE),
                        ("peopleDevTest.txt", LFW_TEST_PEOPLE)):
    with open(os.path.join(manual_dir, fname), "w") as f:
      f.write(f"{len(people)}\n" + "".join(f"{p}\t{c}\n" for p, c in people.items()))
  if not with_parts:
    return
  with tarfile.open(os.path.join(manual_dir, "parts_lfw_funneled_gt_images.tgz"), "w:gz") as tar:
    for keys in LFW_PARTS.values():
      for name, n in keys:
        _add(tar, f"parts_lfw_funneled_gt_images/{name}_{n:04d}.ppm",
             _encode(lfw_label(), "PPM"))
  for split, keys in LFW_PARTS.items():
    with open(os.path.join(manual_dir, f"parts_{split}.txt"), "w") as f:
      f.write("".join(f"{name} {n}\n" for name, n in keys))


# ------------------------------------------------------------------------------------ CUB

CUB_SIZE = (120, 100)  # width, height of every fixture bird image
CUB_BBOX = (30.0, 20.0, 40.0, 32.0)  # x, y, w, h -> crop side 1.25 * 40 = 50
CUB_BOX = (25, 11, 75, 61)  # the crop this bounding box gives (see cub.crop_box)
CUB_EDGE_ID = 12  # this image's box touches the corner: the crop is shifted inside
CUB_EDGE_BBOX, CUB_EDGE_BOX = (0.0, 0.0, 40.0, 32.0), (0, 0, 50, 50)
CUB_TRAIN_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11]  # official split; 11 is the 10th -> validation
CUB_LA_ID = 5  # this segmentation is saved as LA, as a few real ones are


def cub_present(i: int, j: int) -> int:
  return (i + j) % 2 if j % 3 else (i * j) % 2


def cub_class(i: int) -> int:
  return 1 if i <= 6 else 2


def _bird(i: int, box: tuple) -> tuple[np.ndarray, np.ndarray]:
  w, h = CUB_SIZE
  im = np.zeros((h, w, 3), np.uint8)
  im[...] = (255, 0, 0)
  l, t, r, b = box
  im[t:b, l:r] = colour(i)
  im[t:t + 10, l:l + 10] = 255
  seg = np.zeros((h, w), np.uint8)
  seg[t:b, l:(l + r) // 2] = 200  # > 0.5: foreground after binarising
  seg[t:b, (l + r) // 2:r] = 100  # < 0.5: background
  return im, seg


def make_cub(manual_dir: str) -> None:
  """Writes CUB_200_2011.tgz and segmentations.tgz (12 images, 2 classes)."""
  os.makedirs(manual_dir, exist_ok=True)
  ids = list(range(1, 13))
  rel = {i: f"{cub_class(i):03d}.Bird_{cub_class(i)}/Bird_{i:04d}.jpg" for i in ids}
  text = {
      "images.txt": "".join(f"{i} {rel[i]}\n" for i in ids),
      "train_test_split.txt": "".join(f"{i} {int(i in CUB_TRAIN_IDS)}\n" for i in ids),
      "image_class_labels.txt": "".join(f"{i} {cub_class(i)}\n" for i in ids),
      "bounding_boxes.txt": "".join(
          f"{i} " + " ".join(map(str, CUB_EDGE_BBOX if i == CUB_EDGE_ID else CUB_BBOX)) + "\n"
          for i in ids),
  }
  lines = []
  for i in ids:
    for j in range(1, 313):
      extra = " 0 0" if (i, j) == (3, 7) else ""  # the real file's stray extra tokens
      lines.append(f"{i} {j} {cub_present(i, j)} 3 12.5{extra}\n")
  text["attributes/image_attribute_labels.txt"] = "".join(lines)
  text["attributes/class_attribute_labels_continuous.txt"] = "".join(
      " ".join(f"{(c * 7 + j) % 100:.4f}" for j in range(312)) + "\n" for c in range(1, 201))
  with tarfile.open(os.path.join(manual_dir, "CUB_200_2011.tgz"), "w:gz") as tar:
    _add(tar, "attributes.txt",
         "".join(f"{j} has_part_{j}::value_{j}\n" for j in range(1, 313)).encode())
    for name, body in text.items():
      _add(tar, f"CUB_200_2011/{name}", body.encode())
    for i in ids:
      im, _ = _bird(i, CUB_EDGE_BOX if i == CUB_EDGE_ID else CUB_BOX)
      _add(tar, f"CUB_200_2011/images/{rel[i]}", _encode(im, "JPEG"))
  with tarfile.open(os.path.join(manual_dir, "segmentations.tgz"), "w:gz") as tar:
    for i in ids:
      _, seg = _bird(i, CUB_EDGE_BOX if i == CUB_EDGE_ID else CUB_BOX)
      if i == CUB_LA_ID:
        seg = np.stack([seg, np.full_like(seg, 255)], axis=-1)
      _add(tar, "segmentations/" + rel[i].replace(".jpg", ".png"), _encode(seg, "PNG"))


# --------------------------------------------------------------------------------- folder

FOLDER_N = 12


def make_folder(path: str, masks: bool = True) -> None:
  """12 landscape 48x36 images (centre square = colour(i)), attributes.csv, masks/."""
  os.makedirs(os.path.join(path, "images"), exist_ok=True)
  if masks:
    os.makedirs(os.path.join(path, "masks"), exist_ok=True)
  rows = ["filename,smile,age"]
  for i in range(FOLDER_N):
    im = np.zeros((36, 48, 3), np.uint8)
    im[...] = (255, 0, 0)
    im[:, 6:42] = colour(i)  # the centred 36x36 square
    name = f"img_{i:02d}.png"
    Image.fromarray(im).save(os.path.join(path, "images", name))
    if masks:
      m = np.zeros((36, 48), np.uint8)
      m[18:] = 255  # bottom half is foreground
      Image.fromarray(m).save(os.path.join(path, "masks", name))
    rows.append(f"{name},{i % 2},{i + 0.5}")
  with open(os.path.join(path, "attributes.csv"), "w") as f:
    f.write("\n".join(rows) + "\n")


def rewrite_tar(path: str, edit) -> None:
  """Rewrites the .tgz at `path` member by member: `edit(name, data)` returns the new bytes,
  or None to leave the member out; a (new name, bytes) tuple renames it."""
  with tarfile.open(path) as src:
    members = [(m.name, src.extractfile(m).read()) for m in src.getmembers() if m.isfile()]
  with tarfile.open(path, "w:gz") as dst:
    for name, data in members:
      out = edit(name, data)
      if out is None:
        continue
      if isinstance(out, tuple):
        name, out = out
      _add(dst, name, out)


def fake_mask_net(monkeypatch, test_iou=0.5):
  """Replaces the LFW mask network's training and prediction (no JAX): `train_and_evaluate`
  returns a report with the settings and `test_iou`, `predict` all-background masks."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import face_masks  # pylint: disable=import-outside-toplevel

  def fake_train(train_x, train_m, test_x, test_m, cfg, progress=False):
    n = 0 if test_x is None else len(test_x)
    return {}, {"num_train": len(train_x), **dataclasses.asdict(cfg), "num_test": n,
                "test_iou": test_iou}
  monkeypatch.setattr(face_masks, "train_and_evaluate", fake_train)
  monkeypatch.setattr(face_masks, "predict",
                      lambda net, images: np.zeros(images.shape[:3], np.uint8))
