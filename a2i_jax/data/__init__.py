"""Data sources. Each returns the same in-memory `Dataset` (see base.py)."""

from __future__ import annotations

import errno
import os
from typing import Any, Optional

from absl import logging
import ml_collections

from a2i_jax import distributed, files
from a2i_jax.data.base import (DATASET_NAMES, DataError, Dataset, DatasetNotPreparedError, Split,
                               SPLITS, check_choice)
from a2i_jax.errors import A2IError, ConfigError, first_line
from a2i_jax.inputs import shown_path

# The keys of config.data that `load_dataset` reads: of every source, then of each.
_KEYS = ("name", "image_size", "cache_dir", "data_dir")
_SOURCE_KEYS = {"synthetic": ("synthetic",), "lfw": ("masks", "download", "mask_net"),
                "cub": ("masks", "download", "cub_attributes"),
                "folder": ("path", "masks", "resize")}


# configs/default.py's data.cache_dir: it stands for $XDG_CACHE_HOME/a2i_jax where that is set,
# as the compilation cache's default does (`files.user_cache_dir`; was: "~" expanded alone).
DEFAULT_CACHE_DIR = "~/.cache/a2i_jax"


def cache_folder(value: str) -> str:
  """The folder config.data.cache_dir names: `DEFAULT_CACHE_DIR` is `files.user_cache_dir()`
  ($XDG_CACHE_HOME/a2i_jax where that is set, else ~/.cache/a2i_jax), any other value as
  written (`~` expanded).

  Args:
    value: config.data.cache_dir ("" for no cache).
  Returns:
    The folder; "" for no cache. The default as written where there is no home folder and
    no XDG_CACHE_HOME (`check_folder` then says so).
  """
  if value == DEFAULT_CACHE_DIR:
    return files.user_cache_dir() or value
  return os.path.expanduser(value) if value else ""


def _synthetic_cache_folder(data_config: Any, folder: str) -> str:
  """`folder`, or, where it is the default's new place under $XDG_CACHE_HOME and lacks the
  synthetic data's cache file that ~/.cache/a2i_jax (the default's earlier place) holds, that
  earlier folder, said once: a cache made before the default followed XDG_CACHE_HOME is used,
  not made again elsewhere without a word."""
  old = os.path.expanduser(DEFAULT_CACHE_DIR)
  if data_config.cache_dir != DEFAULT_CACHE_DIR or os.path.abspath(folder) == os.path.abspath(old):
    return folder
  from a2i_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  s = data_config.synthetic
  sizes = dict(image_size=data_config.image_size, num_train=s.num_train,
               num_validation=s.num_validation, num_test=s.num_test, seed=s.seed)
  if (os.path.exists(synthetic.cache_path(folder, **sizes))
      or not os.path.isfile(synthetic.cache_path(old, **sizes))):
    return folder
  logging.warning("using the synthetic data's cache in %s, where it was made; the default "
                  "config.data.cache_dir now stands for %s ($XDG_CACHE_HOME/a2i_jax): move "
                  "its synthetic_*.npz files there to keep one cache", old, folder)
  return old


def load_dataset(data_config: Any, progress: bool = True) -> Dataset:
  """Loads (generating or reading the cache as needed) the dataset `data_config.name` names.

  With several processes each reads the whole dataset, but only process 0 prepares it (a TFDS
  builder's preparation, the synthetic cache); the others wait for it, then read what it wrote
  (from `data_dir` / `cache_dir` on shared storage, or, on storage of their own, after
  preparing their own copy).

  Args:
    data_config: `config.data`.
    progress: progress bars while a real dataset is prepared and read (`config.progress_bar`).
  Returns:
    A `Dataset` with train / validation / test splits.
  Raises:
    ConfigError: `data_config` is not a config's data section (the whole config, a dict,
      None), or lacks keys it needs.
    DataError: the dataset cannot be prepared or read (an error of the system's too: a full
      disk, permissions, a folder where a file goes, naming the path and the fix; also where
      a library quotes it, as the ArrayRecord writer's RuntimeError does).
  """
  check_settings(data_config)
  name = data_config.name
  cache_dir = cache_folder(data_config.cache_dir) or None
  try:
    return _load(name, data_config, cache_dir, progress)
  except A2IError:  # DataError's own line, or a ConfigError's.
    raise
  except Exception as e:  # pylint: disable=broad-except
    error = _system_error(e, data_config)
    if error is None:
      raise
    raise error from None


def _system_error(e: Exception, data_config: Any) -> Optional[DataError]:
  """`load_dataset`'s one line for an error of the system's while a dataset is prepared or
  read: an `OSError` (most often a full disk or a folder that is not ours to write), or a
  library's error that quotes one (`files.storage_error`): the ArrayRecord writer's
  RuntimeError, "Failed to finalize writing of split "train": write() failed: No space left
  on device", was a 68-line traceback (fault hunt). Any other exception is raised as it is.

  Args:
    e: the error.
    data_config: `config.data`.
  Returns:
    The DataError, naming the dataset, the path (the file, or else the data folder), the
    reason and the fix; None where `e` is neither an OSError nor quotes a storage error.
  """
  name = data_config.name
  error = files.storage_error(e)
  if not isinstance(e, OSError) and error is None:
    return None
  what = (f"the folder dataset {shown_path(data_config.path)}" if name == "folder"
          else f"the {name} dataset")
  # Any other error of the system's is the user's to fix too: a source file that is a
  # folder, a file where a folder goes, a link loop, a name too long (was a traceback for
  # every dataset but the folder one; review finding). A name too long keeps the system's
  # words (its fix: a shorter data_dir, "another folder" below).
  if error is not None and not (isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG):
    reason, fix = files.describe_storage_error(error), files.storage_fix(error)
    where = "data_dir / cache_dir" if isinstance(e, OSError) else (
        "cache_dir" if name == "synthetic" else "data_dir")
  else:
    reason, fix = e.strerror or first_line(e), "fix what the system names"
    where = "cache_dir" if name == "synthetic" else "data_dir"
  # Paths escaped where they hold a newline: the message stays one line.
  if getattr(e, "filename", None):
    at = f" at {shown_path(e.filename)}"
  else:  # A library's error: the folder it writes in (the message's own path is its file).
    folder = cache_folder(data_config.cache_dir) if name == "synthetic" else data_config.data_dir
    at = f" in {shown_path(os.path.abspath(os.path.expanduser(folder)))}" if folder else ""
  other = f"point config.data.{where} at another folder"
  # Advice with parentheses of its own (EIO's): the other way after a comma, not in more.
  other = f", or {other}," if fix.endswith(")") else f" (or {other}),"
  return DataError(f"preparing {what} failed: {reason}{at}; {fix}{other} then run the same "
                   "command again.")


def _check_data_config(data_config: Any) -> None:
  """Refuses what is not a config's data section (was an AttributeError: "'name'" for the
  whole config, "'dict' object has no attribute 'name'" for a dict, and for None)."""
  fix = "pass config.data of a config from a2i_jax.config_lib.get_config(\"configs/...\")"
  if not isinstance(data_config, ml_collections.ConfigDict):
    raise ConfigError(f"load_dataset takes config.data (an ml_collections.ConfigDict), not a "
                      f"{type(data_config).__name__}; {fix}.")
  if "data" in data_config:
    raise ConfigError("load_dataset takes the data section of a config, not the whole config; "
                      "pass config.data.")
  name = data_config.get("name")
  missing = [k for k in _KEYS + _SOURCE_KEYS.get(name, ()) if k not in data_config]
  if missing:
    raise ConfigError(f"the data config given to load_dataset has no {', '.join(missing)} "
                      f"(is it config.data?); {fix}, which holds every key.")


def check_settings(data_config: Any, config_file: Optional[str] = None) -> None:
  """`load_dataset`'s checks of `data_config` before it loads anything: a data section with
  every key its dataset reads, a known dataset name, and data.cache_dir (where set) and
  data.data_dir (but for the synthetic data) that can be folders (`check_folder`).

  Args:
    data_config: `config.data`.
    config_file: where the folder settings are set: a trained run's config.json (infer.py
      and the inference API, which call this first with it), or None: the --config flags.
  Raises:
    ConfigError: `data_config` is not a config's data section, lacks keys it needs, or names
      an unknown dataset.
    DataError: a folder setting that cannot be a folder (`check_folder`).
  """
  _check_data_config(data_config)
  check_choice("data.name", data_config.name, DATASET_NAMES)
  if data_config.cache_dir:
    check_folder("data.cache_dir", cache_folder(data_config.cache_dir), config_file)
  if data_config.name != "synthetic":
    check_folder("data.data_dir", data_config.data_dir, config_file)


def check_folder(key: str, value: str, config_file: Optional[str] = None) -> None:
  """Refuses a data folder setting that cannot be a folder: empty, a file, below a file, or
  under a home folder (`~`) this user has none of (`files.no_home`).

  Writes nothing; a folder that does not exist yet is fine (it is created when needed).

  Args:
    key: the config key, e.g. "data.data_dir", for the message.
    value: its value (`~` is expanded).
    config_file: where the key is set: a trained run's config.json (infer.py and the
      inference API have no --config flags: was told "pass --config.data.cache_dir=...", a
      flag infer.py refuses; a fault hunt's finding), or None: the --config flag.
  Raises:
    DataError: naming the key, the path in the way (or the home folder missing) and the fix.
  """
  fix = (f"set {key} in {shown_path(config_file)} to a folder" if config_file else
         f"pass --config.{key}=<a folder>")
  if not str(value).strip():
    raise DataError(f"config.{key} is empty; {fix}.")
  from a2i_jax.data import tfds_lib  # pylint: disable=import-outside-toplevel
  # Was: a folder named "~" made in the working folder (fault hunt).
  path = os.path.abspath(tfds_lib.check_home(str(value), key,
                                             fix.replace("a folder", "an absolute folder")))
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    where = "is a file" if existing == path else f"is below {shown_path(existing)}, which is a file"
    raise DataError(f"config.{key}={shown_path(value)} {where}, not a folder; {fix} (it is "
                    "created if missing).")


def _load(name: str, data_config: Any, cache_dir: Any, progress: bool) -> Dataset:
  """`load_dataset` once its folders are known to be usable."""
  if name == "synthetic":
    from a2i_jax.data import synthetic  # pylint: disable=import-outside-toplevel
    if cache_dir:
      cache_dir = _synthetic_cache_folder(data_config, cache_dir)
    s = data_config.synthetic
    return synthetic.load(image_size=data_config.image_size, num_train=s.num_train,
                          num_validation=s.num_validation, num_test=s.num_test, seed=s.seed,
                          cache_dir=cache_dir)
  return distributed.main_first(f"prepare {name} in {data_config.data_dir}",
                                lambda: _load_real(data_config, progress))


def _load_real(data_config: Any, progress: bool) -> Dataset:
  """LFW, CUB or a folder: prepared once by a TFDS builder under data_dir, then read."""
  # Imported here: these modules import tensorflow_datasets, which `import a2i_jax` must not.
  name = data_config.name
  common = dict(data_dir=data_config.data_dir, image_size=data_config.image_size,
                progress=progress)
  if name == "lfw":
    from a2i_jax.data import face_masks, lfw  # pylint: disable=import-outside-toplevel
    return lfw.load(masks=data_config.masks, allow_download=data_config.download,
                    mask_net=face_masks.MaskNetConfig.from_config(data_config.mask_net),
                    **common)
  if name == "cub":
    from a2i_jax.data import cub  # pylint: disable=import-outside-toplevel
    return cub.load(masks=data_config.masks, allow_download=data_config.download,
                    attributes=data_config.cub_attributes, **common)
  from a2i_jax.data import folder  # pylint: disable=import-outside-toplevel
  return folder.load(path=data_config.path, masks=data_config.masks,
                     resize=data_config.resize, **common)


__all__ = ["DATASET_NAMES", "DEFAULT_CACHE_DIR", "DataError", "Dataset", "DatasetNotPreparedError",
           "Split", "SPLITS", "cache_folder", "check_folder", "check_settings", "load_dataset"]
