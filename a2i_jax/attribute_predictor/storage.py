"""Saving and loading the attribute predictor in a workdir (`workdir/attribute_predictor/`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import serialization

from a2i_jax import config_lib, distributed, files
from a2i_jax.attribute_predictor.network import AttributeNet, Predictor, PredictorMeta
from a2i_jax.attribute_predictor.scoring import _json_safe
from a2i_jax.attribute_predictor.training import data_fingerprint, train_predictor
from a2i_jax.data.base import Dataset
from a2i_jax.errors import CheckpointError

PREDICTOR_DIR = "attribute_predictor"
_WEIGHTS_FILE = "variables.msgpack"
_META_FILE = "meta.json"
_FORMAT = 2  # bump when the saved layout changes (2: data_fingerprint)


def predictor_dir(workdir: str) -> str:
  """Where a workdir keeps its attribute predictor.

  Args:
    workdir: the run's (or any) directory.
  Returns:
    The absolute path of `workdir/attribute_predictor`.
  """
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), PREDICTOR_DIR)


def save_predictor(predictor: Predictor, workdir: str) -> str:
  """Writes the predictor to `workdir/attribute_predictor/` and returns that path.

  The weights (flax msgpack) are written first and the metadata (JSON, with the weights'
  SHA-256) last, each through a temporary file and a rename, so a reader sees either the
  old predictor, the new one, or a mismatch that `load_predictor` reports.

  Args:
    predictor: from `train_predictor`.
    workdir: the directory to save under.
  Returns:
    The predictor's folder (written by process 0 only in a multi-host run).
  """
  d = predictor_dir(workdir)
  if not distributed.is_main():
    return d
  blob = serialization.msgpack_serialize(jax.device_get(predictor.variables))
  files.atomic_write(os.path.join(d, _WEIGHTS_FILE), blob)
  meta = dataclasses.asdict(predictor.meta)
  meta.update(format=_FORMAT, weights_sha256=hashlib.sha256(blob).hexdigest())
  files.atomic_write(os.path.join(d, _META_FILE), json.dumps(_json_safe(meta), indent=1))
  return d


def load_predictor(workdir: str) -> Predictor:
  """Reads the predictor `save_predictor` wrote into workdir.

  Args:
    workdir: the directory it was saved under.
  Returns:
    The `Predictor`.
  Raises:
    CheckpointError: it is missing, unreadable or does not match its metadata.
  """
  d = predictor_dir(workdir)
  how = ("Train and save one with a2i_jax.attribute_predictor.load_or_train(config, dataset, "
         "workdir) (or train_predictor + save_predictor).")
  mpath, wpath = os.path.join(d, _META_FILE), os.path.join(d, _WEIGHTS_FILE)
  if not (os.path.exists(mpath) and os.path.exists(wpath)):
    raise CheckpointError(f"no attribute predictor in {d}. {how}")
  try:
    with open(mpath) as f:
      meta = json.load(f)
    with open(wpath, "rb") as f:
      blob = f.read()
    if meta.pop("format", None) != _FORMAT:
      raise ValueError("unknown format version")
    if meta.pop("weights_sha256", None) != hashlib.sha256(blob).hexdigest():
      raise ValueError("the weights do not match the metadata (an interrupted save?)")
    for key in ("attribute_names", "attribute_kinds", "mean", "std", "low", "high"):
      meta[key] = tuple(meta[key])
    meta = PredictorMeta(**meta)
    variables = serialization.msgpack_restore(blob)
    expected = jax.eval_shape(
        lambda: AttributeNet(len(meta.attribute_names), meta.width).init(
            jax.random.PRNGKey(0), jnp.zeros((1, meta.image_size, meta.image_size, 3))))
    got = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), variables)
    want = jax.tree_util.tree_map(lambda a: tuple(a.shape), dict(expected))
    if got != want:
      raise ValueError("the weights do not fit the network the metadata describes")
  except (OSError, ValueError, TypeError, KeyError) as e:
    raise CheckpointError(f"the attribute predictor in {d} is unreadable ({e}). Delete the "
                          f"folder and train a new one. {how}") from None
  return Predictor(variables, meta)


def load_or_train(settings: Any, dataset: Dataset, workdir: str, *,
                  seed: int = 0) -> Predictor:
  """Loads the workdir's predictor, or trains and saves one when there is none, or when the
  saved one was trained on other data or with other settings or seed.

  Args:
    settings: `config.attribute_predictor` (steps, batch_size, learning_rate, width).
    dataset: the generator's dataset.
    workdir: the generator's workdir.
    seed: the training seed.
  Returns:
    The predictor: a function of (dataset, settings, seed) alone, whatever was saved before.
  """
  if settings is None:
    settings = config_lib.reference_config().attribute_predictor
  want = {"dataset": dataset.name, "attribute_names": tuple(dataset.attribute_names),
          "attribute_kinds": tuple(dataset.attribute_kinds),
          "image_size": int(dataset["train"].images.shape[1]),
          "data_fingerprint": data_fingerprint(dataset),
          "steps": settings["steps"], "batch_size": settings["batch_size"],
          "learning_rate": float(settings["learning_rate"]), "width": settings["width"],
          "seed": int(seed)}
  try:
    p = load_predictor(workdir)
    differ = [k for k, v in want.items() if getattr(p.meta, k) != v]
    if not differ:
      return p
    # Was: reused when the dataset's name, image size and attribute names matched, so other
    # images (another synthetic seed, an edited folder) or another --seed were scored by it.
    logging.warning("the attribute predictor in %s was trained with another %s; training a "
                    "new one in its place.", predictor_dir(workdir), ", ".join(differ))
  except CheckpointError:
    pass
  p = train_predictor(dataset, settings, seed=seed)
  try:
    save_predictor(p, workdir)
  except OSError as e:  # A read-only workdir: the scores stand, the next call retrains.
    logging.warning("could not save the attribute predictor in %s (%s); it is trained again "
                    "next time.", workdir, e.strerror or e)
  return p
