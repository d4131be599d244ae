"""The in-memory dataset structure every source (synthetic, LFW, CUB, folder) returns.

Training and inference only ever see a `Dataset`: uint8 images, float32 attributes, optional
uint8 foreground masks and the attribute names. Where the data came from does not matter
past this point.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from absl import logging

from a2i_jax.errors import ConfigError, DataError, DatasetNotPreparedError  # noqa: F401
from a2i_jax.inputs import is_integer

SPLITS = ("train", "validation", "test")
DATASET_NAMES = ("synthetic", "lfw", "cub", "folder")  # config.data.name.
# The choices of config.data keys read by the TFDS-based sources, kept here so that checking a
# config (config_lib.validate_config) needs no tensorflow_datasets.
RESIZE_MODES = ("centre_crop", "stretch")  # data.resize (folder.py).
# The attribute counts of the sources whose count the config alone decides (lfw.py's and
# cub.py's NUM_ATTRIBUTES are these).
ATTRIBUTE_COUNTS = {"lfw": 73, "cub": 312}
CUB_ATTRIBUTES = ("is_present", "class_continuous")  # data.cub_attributes (cub.py).


def data_fingerprint(dataset: "Dataset", splits: Sequence[str] = SPLITS) -> str:
  """A SHA-256 of a dataset's contents: equal for the same images and attributes.

  Args:
    dataset: the `Dataset`.
    splits: the splits whose images, attributes and masks count.
  Returns:
    Hex digest over the name, attribute names and kinds, and each split's arrays.
  """
  h = hashlib.sha256(json.dumps([dataset.name, list(dataset.attribute_names),
                                 list(dataset.attribute_kinds), list(splits)]).encode())
  for name in splits:
    split = dataset[name]
    hash_arrays(h, (split.images, np.asarray(split.attributes, np.float32), split.masks))
  return h.hexdigest()


def hash_arrays(h: Any, arrays: Sequence[Optional[np.ndarray]]) -> None:
  """Feeds `arrays` to the hash `h`, each as its dtype, shape and bytes (None skipped): the
  one way the data's fingerprints hash arrays.

  Args:
    h: a `hashlib` hash.
    arrays: the arrays, in order; None for one a split lacks (its masks).
  """
  for a in arrays:
    if a is not None:
      a = np.ascontiguousarray(a)
      h.update(f"{a.dtype}{a.shape}".encode())
      h.update(a.data)


# `Dataset.metadata` key of the TFDS-based sources (LFW, CUB, folder): per split, the count
# and a SHA-256 of the example ids it holds (`ids_fingerprint`); dataset.json records it, so
# a resumed run can tell when its images moved between splits.
SPLIT_IDS_KEY = "split_ids"


def ids_fingerprint(ids: Iterable[Union[bytes, str]]) -> dict[str, Any]:
  """Which examples a split holds, in a few bytes: independent of their order.

  Args:
    ids: the split's example ids (a builder's `id` feature: a folder dataset's file names,
      LFW's `<Name>_<NNNN>`, CUB's image paths), as bytes or str (str is UTF-8 encoded).
  Returns:
    {"count": the number of ids, "sha256": hex SHA-256 of the sorted ids, each followed by
    a NUL byte}.
  """
  encoded = sorted(i.encode("utf-8") if isinstance(i, str) else bytes(i) for i in ids)
  h = hashlib.sha256()
  for i in encoded:
    h.update(i)
    h.update(b"\0")
  return {"count": len(encoded), "sha256": h.hexdigest()}


# dataset.json key beside SPLIT_IDS_KEY: per split, digests of what its examples hold
# (`split_content`), so that data of the same example names but other pixels, attributes or
# masks (a relative config.data.path run from another directory) is told apart.
SPLIT_CONTENT_KEY = "split_content"
CONTENT_PARTS = ("images", "attributes", "masks")


def split_content(dataset: "Dataset", *,
                  reuse: bool = False) -> dict[str, dict[str, Optional[str]]]:
  """What each split's examples hold, in a few bytes: independent of the examples' order and
  of the attribute columns' order (both may move without changing the data: a folder's rows
  or columns reordered).

  Args:
    dataset: the `Dataset`.
    reuse: return the digests an earlier call computed for this very object, where its splits
      still hold the same array objects: for the checks and the record of one load, whose
      arrays nothing edits in between (an array edited in place is not seen then).
  Returns:
    Per split {"images", "attributes", "masks"}: hex SHA-256 of the sorted per-example digests
    of its image; of its image and attribute row (columns in the order of their sorted names);
    of its image and mask, for the masks drawn by hand only (None for a split without
    masks): a mask network's predictions (LFW's `mask_predicted`) differ with the JAX
    version and device that trained it, and would set the same data apart (review).
  """
  # Once per dataset: a resume compared them (`check_same_splits`) and then recorded them
  # (`checkpoints.dataset_info`), each about 0.8 s on LFW (read-through). Kept on the object
  # itself with the arrays they were computed from, so that another dataset (`dataclasses
  # .replace`, `centre_cropped`: a new object sharing the metadata) or a split replaced in
  # `splits` computes its own. Only where asked (`reuse`): a caller that may have edited the
  # arrays in place gets them computed.
  arrays = (tuple(dataset.attribute_names),
            [(s, dataset[s].images, dataset[s].attributes, dataset[s].masks,
              dataset[s].mask_predicted) for s in SPLITS])
  kept = vars(dataset).get(_CONTENT_KEPT)
  if not reuse or kept is None or not _same_objects(kept[0], arrays):
    kept = (arrays, _split_content(dataset))
    object.__setattr__(dataset, _CONTENT_KEPT, kept)  # A frozen dataclass.
  return {split: dict(digests) for split, digests in kept[1].items()}


_CONTENT_KEPT = "_content_kept"  # The `Dataset` attribute `split_content` keeps them in.


def _same_objects(a: tuple, b: tuple) -> bool:
  """Whether two `split_content` keys hold the same names and the very same arrays."""
  return a[0] == b[0] and all(x is y for p, q in zip(a[1], b[1]) for x, y in zip(p, q))


def _split_content(dataset: "Dataset") -> dict[str, dict[str, Optional[str]]]:
  """`split_content`, computed."""
  names = [str(n) for n in dataset.attribute_names]
  order = sorted(range(len(names)), key=lambda i: names[i])
  out = {}
  for name in SPLITS:
    split = dataset[name]
    attributes = np.asarray(split.attributes, np.float32)
    if attributes.ndim == 2 and attributes.shape[1] == len(names):
      attributes = attributes[:, order]
    parts = {"images": [], "attributes": [], "masks": []}
    for i in range(len(split.images)):
      image = hashlib.sha256(np.ascontiguousarray(split.images[i]).data).digest()
      parts["images"].append(image)
      parts["attributes"].append(
          hashlib.sha256(image + np.ascontiguousarray(attributes[i]).tobytes()).digest())
      if split.masks is not None and not (split.mask_predicted is not None
                                          and split.mask_predicted[i]):
        parts["masks"].append(
            hashlib.sha256(image + np.ascontiguousarray(split.masks[i]).tobytes()).digest())
    shapes = {"images": split.images.shape[1:], "attributes": attributes.shape[1:],
              "masks": None if split.masks is None else split.masks.shape[1:]}
    digests = {}
    for part, values in parts.items():
      if part == "masks" and split.masks is None:
        digests[part] = None
        continue
      h = hashlib.sha256(f"{part}{tuple(shapes[part])}".encode())
      for v in sorted(values):
        h.update(v)
      digests[part] = h.hexdigest()
    out[name] = digests
  return out


class OtherDataError(DataError):
  """`check_same_splits`' refusal of data read from another folder than the run's (which is
  still there) whose held-out splits hold the same example names as the run's but other
  images, attributes or masks (not other examples: no image moved between the splits)."""


# The run's record of its dataset in its workdir (`checkpoints.DATASET_FILE`'s name, here
# for the messages of `check_same_splits`, which serving and training both call).
DATASET_FILE = "dataset.json"


def check_same_splits(workdir: str, stored: dict, dataset: Dataset) -> None:
  """Refuses to resume (or serve) a run whose validation or test split holds other examples
  than when it started, or other data under the same example names read from another
  folder; warns where only the train split does (more or other training images, none of
  them held out before), and where data changed in the same place.

  A folder dataset without a `split` column splits its rows by position (every 9th of 10 to
  validation, every 10th to test), so a row added or moved puts former held-out images into
  training; the run went on without a word (review finding). dataset.json records each
  split's ids (`checkpoints.dataset_info`, "split_ids"); a record without them (a run started
  before they were recorded) or a dataset without ids (synthetic, made in memory) is not
  checked.

  The ids alone did not tell a folder of the same file names but other images or attributes
  apart: a relative config.data.path, the same command run from another directory, resumed
  and served the other folder without a word (review finding). dataset.json records digests
  of each split's images, attributes and masks too ("split_content", `split_content`); they
  are compared where the ids are the same (attribute columns by name, examples in any
  order). Where they differ and a folder dataset is read from another folder than the one
  the run recorded (dataset.json's "data_path", the copy's "source"), which is still there,
  held-out data are refused (`OtherDataError`); otherwise the difference is a warning: data
  edited in place, another data.resize, or the same files read by another library version
  (Pillow's resizing) are the user's to know of, and refusing them would stop a run moved
  to another machine. A record without them (dataset.json written before they were recorded) is not
  checked for content; attributes are not compared where their names differ (the names
  check that follows, `as_trained` / `with_attribute_order`, names that).

  Args:
    workdir: the run's directory, for the message.
    stored: its dataset.json (`checkpoints.load_dataset_info`).
    dataset: the dataset as loaded now.
  Raises:
    DataError: the validation or test split's ids differ: naming each split whose ids differ,
      its counts then and now, and the fix. OtherDataError (a DataError): its ids the same,
      its images, attributes or masks differ and are read from another folder: naming the
      split, what differs, both folders and the fix.
    ConfigError: dataset.json's "split_ids" or "split_content" is not what `dataset_info`
      writes.
  """
  then, now = stored.get(SPLIT_IDS_KEY), dataset.metadata.get(SPLIT_IDS_KEY)
  if then is None or not now:
    return
  differ = []
  for split in SPLITS:
    recorded, current = (then.get(split) if isinstance(then, dict) else None), now.get(split)
    if not (isinstance(recorded, dict) and isinstance(recorded.get("sha256"), str)
            and isinstance(recorded.get("count"), int)):
      raise ConfigError(f"{os.path.join(workdir, DATASET_FILE)} is unreadable "
                        f"(split_ids must hold a count and a sha256 per split, not "
                        f"{str(then)[:60]}); restore it, or delete it (the images in each "
                        "split are then not checked on resume).")
    if current is not None and recorded["sha256"] != current["sha256"]:
      differ.append(f"{split}: {recorded['count']} then, {current['count']} now")
  names = [d.split(":")[0] for d in differ]
  if any(n != "train" for n in names):
    which = (f"the {names[0]} split's images differ" if len(names) == 1 else
             f"the {', '.join(names[:-1])} and {names[-1]} splits' images differ")
    hint = ""
    if dataset.name == "folder":
      by_column = any(str(h).strip().lower() == "split" for h in stored.get("header", []))
      # Was this hint for a CSV with a split column too (review finding).
      hint = ("; attributes.csv's split column now puts other images in them" if by_column
              else "; without a 'split' column in attributes.csv, adding, removing or "
              "reordering rows moves images between splits")
    raise DataError(f"{which} from those the run in {workdir} started with "
                    f"({'; '.join(differ)}){hint}; restore the dataset as it was, or start a "
                    "new --workdir.")
  changed = _content_differs(workdir, stored, dataset, skip=names)
  if len(changed) > 1 and all(parts == changed[0][1] for _, parts in changed):
    said = f"the {_and([s for s, _ in changed])} splits' {_and(changed[0][1])}"
  elif changed:
    said = _and([f"the {split} split's {_and(parts)}" for split, parts in changed])
  # Another folder of the same file names (a relative config.data.path, the command run from
  # another directory): refused where it holds other held-out data. Data changed in place, or
  # read otherwise (another data.resize; another Pillow resizing, another JAX predicting
  # masks: the same run's data on another machine), are said, not refused (review).
  then_at, now_at = stored.get("data_path"), dataset.metadata.get("source")
  moved = (isinstance(then_at, str) and isinstance(now_at, str)
           and os.path.abspath(then_at) != os.path.abspath(now_at))
  # Two folders only where the run's is still there (was: a run moved to another machine,
  # its data at another path and decoded by another Pillow, was refused; read-through).
  if moved and os.path.isdir(then_at) and any(split != "train" for split, _ in changed):
    raise OtherDataError(
        f"{said} differ from those the run in {workdir} started with, under the same example "
        f"names: they are read from {now_at}, and the run started with the data at {then_at} "
        "(a relative config.data.path names another folder when the command runs from "
        f"another directory); use the data at {then_at} (config.data.path: train.py's "
        "--config.data.path, or data.path in the workdir's config.json for infer.py), or "
        "start a new --workdir.")
  if changed:
    read = f" (read from {now_at}; the run started with {then_at})" if moved else ""
    logging.warning("%s differ from those the run in %s started with, under the same example "
                    "names%s: the data changed since (files edited or replaced, another "
                    "data.resize, or a library version that decodes or resizes them "
                    "differently); the results from here on are on the data read now", said,
                    workdir, read)
  if names == ["train"]:
    # The held-out splits are the same images: none of them moved into training (each image
    # is in one split), so more or other training images are the user's to choose; said.
    logging.warning("the train split's images differ from those the run in %s started with "
                    "(%s); the validation and test splits hold the same images as then, so this "
                    "goes on", workdir, differ[0].partition(": ")[2])


def _and(items: Sequence[str]) -> str:
  """"a", "a and b", "a, b and c"."""
  items = list(items)
  return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _content_differs(workdir: str, stored: dict, dataset: Dataset,
                     skip: Sequence[str]) -> list[tuple[str, list[str]]]:
  """`check_same_splits`' content comparison: [(split, [parts that differ])] for the splits
  not in `skip` (those whose ids differ already); [] where the record has no digests."""
  then = stored.get(SPLIT_CONTENT_KEY)
  if then is None:
    return []
  valid = isinstance(then, dict) and all(
      isinstance(then.get(s), dict)
      and all(isinstance(then[s].get(p), str) or p == "masks" and then[s].get(p) is None
              for p in CONTENT_PARTS) for s in SPLITS)
  if not valid:
    raise ConfigError(f"{os.path.join(workdir, DATASET_FILE)} is unreadable ("
                      f"{SPLIT_CONTENT_KEY} must hold images, attributes and masks digests per "
                      f"split, not {str(then)[:60]}); restore it, or delete it (the data in "
                      "each split are then not checked on resume).")
  same_names = sorted(map(str, stored.get("attribute_names", []))) == sorted(
      map(str, dataset.attribute_names))
  now = split_content(dataset, reuse=True)  # Recorded next (`checkpoints.dataset_info`).
  changed = []
  for split in SPLITS:
    if split in skip:
      continue
    parts = [p for p in CONTENT_PARTS
             if (p != "attributes" or same_names) and then[split][p] is not None
             and now[split][p] is not None and then[split][p] != now[split][p]]
    if parts:  # The other digests hold the image's: with other images, they say no more.
      changed.append((split, ["images"] if "images" in parts else parts))
  return changed


def check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
  """Raises `ConfigError` unless `value` is one of `choices`: the one message for config key
  `key`, whether the config or a direct caller of a loader passed it.

  Args:
    key: the config key, e.g. "data.resize".
    value: the value given.
    choices: the valid values.
  """
  if value not in choices:
    raise ConfigError(f"config.{key}={value!r}; choose one of {', '.join(choices)}.")


@dataclasses.dataclass(frozen=True)
class Split:
  """One split held in host memory.

  Attributes:
    images: uint8 [N, H, W, 3], RGB.
    attributes: float32 [N, A].
    masks: uint8 [N, H, W] with 255 = foreground and 0 = background (values in between are
      soft masks), or None where the dataset has no masks.
    mask_predicted: bool [N], True where the mask was predicted by a segmentation network
      rather than annotated (LFW images without part labels), or None (all annotated).
  """
  images: np.ndarray
  attributes: np.ndarray
  masks: Optional[np.ndarray] = None
  mask_predicted: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return int(self.images.shape[0])


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset: named attributes and its train / validation / test splits.

  Attributes:
    name: short name, e.g. "synthetic".
    attribute_names: one name per attribute column.
    attribute_kinds: "binary" or "continuous" per attribute column.
    splits: mapping from split name ("train", "validation", "test") to `Split`.
    metadata: facts about the preparation (e.g. the LFW mask network's held-out IoU).
  """
  name: str
  attribute_names: tuple[str, ...]
  attribute_kinds: tuple[str, ...]
  splits: Mapping[str, Split]
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_attributes(self) -> int:
    """A, the number of attribute columns."""
    return len(self.attribute_names)

  @property
  def image_size(self) -> int:
    """S, the side of the (square) training images."""
    return int(self.splits["train"].images.shape[1])

  @property
  def has_masks(self) -> bool:
    """Whether every split has foreground masks (disCVAE needs them)."""
    return all(s.masks is not None for s in self.splits.values())

  def __getitem__(self, split: str) -> Split:
    if split not in self.splits:
      raise DataError(f"dataset {self.name!r} has no split {split!r}; it has "
                      f"{sorted(self.splits)}.")
    return self.splits[split]


def validate_split(split: Split, *, image_size: int, num_attributes: int,
                   where: str = "dataset", need_masks: bool = False) -> None:
  """Checks shapes, dtypes and values of a split; raises `DataError` naming the problem.

  Args:
    split: the split to check.
    image_size: the expected height and width.
    num_attributes: the expected attribute vector length.
    where: a name for the split used in the messages.
    need_masks: whether foreground masks must be present.
  """
  im, at = split.images, split.attributes
  if im.ndim != 4 or im.shape[1:] != (image_size, image_size, 3):
    raise DataError(f"{where}: images have shape {im.shape}, expected "
                    f"[N, {image_size}, {image_size}, 3]. Set config.data.image_size to the "
                    f"dataset's size or re-prepare the dataset at {image_size}x{image_size}.")
  if im.dtype != np.uint8:
    raise DataError(f"{where}: images have dtype {im.dtype}, expected uint8 in [0, 255].")
  if at.ndim != 2 or at.shape[0] != im.shape[0]:
    raise DataError(f"{where}: attributes have shape {at.shape}, expected "
                    f"[{im.shape[0]}, {num_attributes}] (one row per image).")
  if at.shape[1] != num_attributes:
    raise DataError(f"{where}: attribute vectors have length {at.shape[1]}, but the model "
                    f"expects {num_attributes}. Set config.model.y_dim={at.shape[1]}.")
  if not np.all(np.isfinite(at)):
    bad = int(np.argwhere(~np.isfinite(at))[0, 0])
    raise DataError(f"{where}: attribute row {bad} contains NaN or infinity.")
  if split.masks is None:
    if need_masks:
      raise DataError(f"{where}: this model (disCVAE) needs foreground masks and the dataset "
                      "has none. Use a dataset with masks or model.name='cvae'.")
  elif split.masks.shape != im.shape[:3] or split.masks.dtype != np.uint8:
    raise DataError(f"{where}: masks have shape {split.masks.shape} and dtype "
                    f"{split.masks.dtype}, expected uint8 {im.shape[:3]}.")


def check_attribute_names(names: Sequence[str], kinds: Sequence[str],
                          where: str = "the dataset") -> None:
  """Raises `DataError` unless names and kinds pair up, every kind is known and no name is
  given to two columns (`--attribute` and a trained model's attribute order pick columns by
  name).

  Args:
    names: one name per attribute column.
    kinds: "binary" or "continuous" per column.
    where: what holds the names, for the message (a dataset, a prepared folder).
  Raises:
    DataError: naming the problem.
  """
  if len(names) != len(kinds):
    raise DataError(f"{len(names)} attribute names but {len(kinds)} attribute kinds.")
  bad = [n for n in names if not isinstance(n, str)]
  if bad:  # Was: taken (a list as a name), or a TypeError of the count below.
    raise DataError(f"{where} has an attribute name that is not a string ({bad[0]!r}); name "
                    "every column with a string.")
  twice = sorted(n for n, count in collections.Counter(names).items() if count > 1)
  if twice:  # Was left to each source (folder CSVs, LFW, the predictor); prepared data not.
    raise DataError(f"{where} names the attribute(s) {', '.join(map(repr, twice))} more than "
                    "once; give every column its own name.")
  for k in kinds:
    if k not in ("binary", "continuous"):
      raise DataError(f"attribute kind {k!r} is neither 'binary' nor 'continuous'.")


def as_trained(dataset: Dataset, info: Optional[Mapping[str, Any]]) -> Dataset:
  """The dataset with its attributes as a model was trained on them (by name, in that order).

  Logs one warning when the dataset's header (`metadata["header"]`, else its attribute
  names) differs from the one stored at training.

  Args:
    dataset: the dataset as loaded now.
    info: what training stored of it (WORKDIR/dataset.json: "attribute_names", and
      optionally "attribute_kinds" and "header"), or None for runs trained before it was
      stored (the dataset is then taken as it is).
  Returns:
    `with_attribute_order(dataset, info["attribute_names"], info["attribute_kinds"])`.
  Raises:
    DataError: the dataset's attribute names are not the stored ones.
    InputError: `dataset` is not a `Dataset`, or `info` is neither None nor such a record.
  """
  from a2i_jax.errors import InputError  # pylint: disable=import-outside-toplevel
  if not isinstance(dataset, Dataset):  # Was an AttributeError, as for `info` below.
    raise InputError(f"as_trained takes a Dataset, not a {type(dataset).__name__}; pass "
                     "load_dataset(config.data)'s.")
  if info is not None and not (isinstance(info, Mapping) and "attribute_names" in info):
    raise InputError(f"as_trained's info is a {type(info).__name__}"
                     f"{' without attribute_names' if isinstance(info, Mapping) else ''}, not "
                     "the record of a run's dataset; pass checkpoints.load_dataset_info(workdir) "
                     "(None for a run without one).")
  if info is None:
    return dataset
  now = list(dataset.metadata.get("header") or dataset.attribute_names)
  then = list(info.get("header") or info["attribute_names"])
  if now != then:
    logging.warning("the dataset's columns changed since training (then: %s; now: %s); "
                    "attributes are matched by name, in the training order.",
                    ", ".join(map(str, then)), ", ".join(map(str, now)))
  return with_attribute_order(dataset, info["attribute_names"], info.get("attribute_kinds"))


# The smallest centre crop `centre_cropped` takes: the occlusion masks the scoring draws need
# 4 pixels (`occlusions.make_masks`); the models take 32 or 64.
MIN_CROP_SIZE = 4


def centre_cropped(dataset: Dataset, crop_size: int) -> Dataset:
  """The dataset as a trained model sees it at test time: where training crops at random
  (`config.data.augment.crop_size`, CUB's 64 of 72), every split's images and masks centre
  cropped to that size, as the training loop's own evaluation does (`pipeline.preprocess_eval`).

  Inference and evaluation take images of the model's size; pass them this view
  (`infer.py` and `evaluation` do so themselves).

  Args:
    dataset: the dataset as loaded (`load_dataset`).
    crop_size: the run's `config.data.augment.crop_size` (0: no crop).
  Returns:
    `dataset` itself where `crop_size` is 0 or its images are that size already, else a copy
    whose splits hold the centre crops (views of the loaded arrays, no copy of the pixels).
  Raises:
    ConfigError: `crop_size` is not a whole number >= 0 (was: "image_size=0 is not valid"
      from the scoring, for crop_size=-3), or is not 0 and below `MIN_CROP_SIZE` or above the
      images' side (was: 1x1 images, refused later as "image_size=1"; a crop larger than the
      images left them whole, scored as if cropped).
  """
  if not is_integer(crop_size) or crop_size < 0:
    raise ConfigError(f"crop_size={crop_size!r}: pass 0 (no crop) or the side of the centre "
                      "crop, as the run's config.data.augment.crop_size.")
  sides = [s.images.shape[1] for s in dataset.splits.values()]
  if crop_size and sides and not MIN_CROP_SIZE <= crop_size <= min(sides):
    raise ConfigError(f"crop_size={crop_size!r}: pass 0 (no crop) or the side of the centre "
                      f"crop, from {MIN_CROP_SIZE} to the images' {min(sides)}, as the run's "
                      "config.data.augment.crop_size.")
  if not crop_size or all(side == crop_size for side in sides):
    return dataset

  def crop(x):
    if x is None or x.shape[1] <= crop_size:
      return x
    a = (x.shape[1] - crop_size) // 2  # As `pipeline.centre_crop`.
    return x[:, a:a + crop_size, a:a + crop_size]
  splits = {k: dataclasses.replace(s, images=crop(s.images), masks=crop(s.masks))
            for k, s in dataset.splits.items()}
  return dataclasses.replace(dataset, splits=splits)


def with_attribute_order(dataset: Dataset, names: Sequence[str],
                         kinds: Optional[Sequence[str]] = None) -> Dataset:
  """The dataset with its attribute columns in the order `names` gives (the training order).

  A folder dataset's columns come from attributes.csv as it is now; a model takes them in the
  order it was trained with. Reordering by name keeps `--attribute=red` driving red.

  Args:
    dataset: the dataset as loaded.
    names: the attribute names in the wanted order (the same set as the dataset's).
    kinds: "binary" or "continuous" per name (default: the dataset's own, reordered).
  Returns:
    `dataset` itself when the order already matches (and kinds are not given), else a copy
    whose splits' attribute columns, names and kinds follow `names`.
  Raises:
    DataError: the dataset's attribute names are not the same set as `names`.
  """
  have, names = list(dataset.attribute_names), list(names)
  if sorted(have) != sorted(names) or len(set(names)) != len(names):
    raise DataError(f"the dataset's attributes ({', '.join(have)}) are not those the model was "
                    f"trained with ({', '.join(names)}); restore the dataset's columns.")
  if have == names and kinds is None:
    return dataset
  order = [have.index(n) for n in names]
  kinds = tuple(kinds) if kinds is not None else tuple(dataset.attribute_kinds[i] for i in order)
  check_attribute_names(names, kinds)
  splits = {k: dataclasses.replace(s, attributes=s.attributes[:, order])
            for k, s in dataset.splits.items()}
  return dataclasses.replace(dataset, attribute_names=tuple(names), attribute_kinds=kinds,
                             splits=splits)


def warn_small_train_split(dataset: Dataset, batch_size: int) -> None:
  """Logs one warning when the training split holds fewer images than a batch.

  Batches are drawn with replacement, so training still runs, but every batch repeats
  images.

  Args:
    dataset: the loaded dataset.
    batch_size: the global batch size (config.batch_size).
  """
  n = len(dataset["train"])
  if n < batch_size:
    logging.warning("%s: the training split has %d image(s), fewer than batch_size=%d, so "
                    "every batch repeats images; add images or lower --config.batch_size.",
                    dataset.name, n, batch_size)
