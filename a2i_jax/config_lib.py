"""Config checks and (de)serialisation. The values themselves live in `configs/`."""

from __future__ import annotations

import difflib
import json
import os
from typing import Any, Iterator, Optional

import ml_collections

from a2i_jax.errors import ConfigError
from a2i_jax.models import MODEL_NAMES

DATASETS = ("synthetic", "lfw", "cub", "folder")


def _leaf_paths(cfg: Any, prefix: str = "") -> Iterator[str]:
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      yield from _leaf_paths(value, path + ".")
    else:
      yield path


def reference_config() -> ml_collections.ConfigDict:
  """The full default config (configs/default.py): every valid key.

  Returns:
    A fresh ConfigDict.
  """
  from configs import default  # pylint: disable=import-outside-toplevel
  return default.get_config()


def validate_config(config: ml_collections.ConfigDict,
                    reference: Optional[ml_collections.ConfigDict] = None) -> None:
  """Raises `ConfigError` for a key the defaults do not have or a value that cannot work.

  Args:
    config: the experiment config.
    reference: the config whose keys are the valid ones (default: configs/default.py).
  """
  reference = reference_config() if reference is None else reference
  known = set(_leaf_paths(reference))
  for path in _leaf_paths(config):
    if path not in known:
      close = difflib.get_close_matches(path, sorted(known), n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"config key {path!r} does not exist.{hint} The valid keys are in "
                        "configs/default.py.")
  if config.model.name not in MODEL_NAMES:
    raise ConfigError(f"unknown model.name={config.model.name!r}; choose one of "
                      f"{', '.join(MODEL_NAMES)}.")
  if config.data.name not in DATASETS:
    raise ConfigError(f"unknown data.name={config.data.name!r}; choose one of "
                      f"{', '.join(DATASETS)}.")
  if (config.model.name == "discvae" and config.data.name != "synthetic"
      and not config.data.get("masks", True)):
    raise ConfigError("model.name='discvae' needs foreground masks, but data.masks=False; "
                      "pass --config.data.masks=True (configs/lfw.py:discvae and "
                      "configs/cub.py set it).")
  for key in ("num_train_steps", "log_every_steps", "eval_every_steps",
              "checkpoint_every_steps", "steps_per_dispatch", "batch_size",
              "max_checkpoints_to_keep"):
    if int(config[key]) <= 0:
      raise ConfigError(f"config.{key}={config[key]} must be a positive integer.")
  k = config.steps_per_dispatch
  for key in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    if config[key] % k:
      raise ConfigError(f"config.{key}={config[key]} is not a multiple of "
                        f"steps_per_dispatch={k}; make it one.")
  crop = config.data.augment.crop_size or config.data.image_size
  if crop != config.model.image_size:
    raise ConfigError(f"the images reaching the model are {crop}x{crop} (data.image_size / "
                      f"data.augment.crop_size) but model.image_size={config.model.image_size};"
                      " make them equal.")


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A saved config completed with the keys of configs/default.py it does not have.

  Runs trained before a config section existed (e.g. `inference`) get its default values.

  Args:
    config: a saved config (ConfigDict or dict).
  Returns:
    A new ConfigDict: the defaults overridden by every value of `config`.
  """
  def update(dst: dict, src: dict) -> None:
    for key, value in src.items():
      if isinstance(value, dict) and isinstance(dst.get(key), dict):
        update(dst[key], value)
      else:
        dst[key] = value

  merged = reference_config().to_dict()
  update(merged, config.to_dict() if hasattr(config, "to_dict") else dict(config))
  return ml_collections.ConfigDict(merged)


def save_config(config: ml_collections.ConfigDict, path: str) -> None:
  """Writes the config as JSON, atomically (a temporary file, then a rename).

  Args:
    config: the config.
    path: the JSON file to write.
  """
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json(indent=2, sort_keys=True))
  os.replace(tmp, path)


def load_config(path: str) -> ml_collections.ConfigDict:
  """Reads a config saved by `save_config`.

  Args:
    path: the JSON file.
  Returns:
    The ConfigDict.
  Raises:
    ConfigError: the file is missing or not valid JSON.
  """
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except FileNotFoundError:
    raise ConfigError(f"no config at {path}: this workdir was not written by train.py, or "
                      "training has not started there yet.") from None
  except json.JSONDecodeError as e:
    raise ConfigError(f"the config at {path} is not valid JSON ({e}); delete it and pass "
                      "--config again.") from None
