"""Saving and loading the attribute predictor in a workdir (`workdir/attribute_predictor/`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import serialization

from a2i_jax import config_lib, distributed, files, perf
from a2i_jax.attribute_predictor.network import (AttributeNet, Predictor, PredictorMeta,
                                                 check_predictor)
from a2i_jax.attribute_predictor.scoring import _json_safe
from a2i_jax.attribute_predictor.training import (_check_data, _check_seed,
                                                  _check_settings, _fingerprints, _setting_values,
                                                  _train)
from a2i_jax.data.base import Dataset
from a2i_jax.errors import CheckpointError, InputError, WorkdirError

PREDICTOR_DIR = "attribute_predictor"
_WEIGHTS_FILE = "variables.msgpack"
_META_FILE = "meta.json"
# Bump when the saved layout or meaning changes (2: data_fingerprint; 3: meta_sha256; 4: a
# binary column of one value in training has its other class as `low`/`high`, not the stand-in
# [value, value + 1]; 5: test_fingerprint, which `evaluation.attribute_report` compares with
# the evaluated data). An older format is a CheckpointError, so load_or_train trains a new
# predictor in its place.
_FORMAT = 5
_SEQUENCES = ("attribute_names", "attribute_kinds", "mean", "std", "low", "high")


def predictor_dir(workdir: str) -> str:
  """Where a workdir keeps its attribute predictor.

  Args:
    workdir: the run's (or any) directory.
  Returns:
    The absolute path of `workdir/attribute_predictor`.
  Raises:
    InputError: a workdir that is not a path (was a TypeError of os.path's, e.g. for None),
      or is empty.
  """
  files.check_workdir_arg(workdir, InputError)
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), PREDICTOR_DIR)


def _meta_sha256(meta: dict) -> str:
  """SHA-256 of the metadata's canonical JSON (sorted keys, no spaces), `meta_sha256` aside."""
  rest = {k: v for k, v in meta.items() if k != "meta_sha256"}
  text = json.dumps(rest, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def device_layout() -> str:
  """This process's platform and local device count, e.g. "cpu, 4 local devices": what the
  predictor's trained weights depend on besides (dataset, settings, seed). XLA:CPU splits its
  work by the device count, so `--xla_force_host_platform_device_count=4` trains other
  weights than 1 does (0.1 apart, summed over 300 steps at the reference settings), though
  the predictor trains on one device; neither single-threaded Eigen nor XLA's own
  convolutions in place of YNNPACK's pins them (fault hunt).

  Returns:
    The words, as `meta.json`'s "trained_on" records them.
  """
  count = jax.local_device_count()
  return f"{jax.default_backend()}, {count} local device{'s' * (count != 1)}"


def _warn_of_other_layout(workdir: str, trained_on: Optional[str], trained_with: Any) -> None:
  """One warning where a reused predictor was trained under another `device_layout` or other
  kernels (`perf.kernel_record`, compared by their fields) than this process's (each None:
  not recorded, not compared; "trained_with" as meta.json holds it, a record or, saved before
  records were data, its words). Was: the kernels were not compared, so `evaluate` reused a
  predictor trained under YNNPACK's convolution kernels under XLA's without a word, and the
  same command gave another fidelity table (0.21 against 0.07 for the samples' correlation;
  fault hunt). A "trained_with" that names no record this version reads is said as such
  (was: compared as text, so words of another form claimed other kernels)."""
  on, kernels = device_layout(), perf.kernel_record()
  known = perf.read_kernel_record(trained_with) if trained_with is not None else None
  same = perf.same_kernels(known, kernels)
  other_on = trained_on is not None and trained_on != on
  other_with = same is False
  unknown = trained_with is not None and same is None
  if not (other_on or other_with or unknown):
    return
  now_with = perf.describe_kernel_record(kernels)
  then = " with ".join(([trained_on] if other_on else [])
                       + ([perf.describe_kernel_record(known)] if other_with else []))
  now = " with ".join(([on] if other_on else []) + ([now_with] if other_with else []))
  pin = perf.pin_kernels_advice(known, kernels) if other_with else ""
  pin = f"; to run the kernels it was trained with, {pin}" if pin else ""
  if unknown:  # Its kernels cannot be compared: said, never claimed to differ.
    also = f"; it was trained on {trained_on}, this process has {on}" if other_on else ""
    logging.warning("the attribute predictor in %s records the kernels it was trained with as "
                    "%s, which this version does not read%s: where they differ from this "
                    "process's (%s), its fidelity scores differ slightly from those of one "
                    "trained here (delete the folder to train one here).", predictor_dir(workdir),
                    json.dumps(trained_with)[:200], also, now_with)
    return
  logging.warning("the attribute predictor in %s was trained %s %s, this process has %s: its "
                  "fidelity scores differ slightly from those of one trained here (delete the "
                  "folder to train one here)%s.", predictor_dir(workdir),
                  "on" if other_on else "with", then, now, pin)


def save_predictor(predictor: Predictor, workdir: str) -> str:
  """Writes the predictor to `workdir/attribute_predictor/` and returns that path.

  The weights (flax msgpack) are written first and the metadata (JSON, with the weights'
  SHA-256 and its own) last, each through a temporary file and a rename, so a reader sees
  either the old predictor, the new one, or a mismatch that `load_predictor` reports. The
  metadata's "trained_on" records this process's `device_layout` and its "trained_with" its
  kernels (`perf.kernel_record`; those of the process that trained it, in `load_or_train`),
  on which the weights depend.

  Args:
    predictor: from `train_predictor`.
    workdir: the directory to save under.
  Returns:
    The predictor's folder (written by process 0 only in a multi-host run).
  Raises:
    InputError: not a `Predictor`, a workdir that is not a path, or weights that hold NaN or
      infinity (nothing is written).
    WorkdirError: the folder cannot be written (a file in its place, a full disk, no
      permission); a half-written predictor is refused by `load_predictor`.
  """
  check_predictor(predictor)
  d = predictor_dir(workdir)
  if not distributed.is_main():
    return d
  variables = jax.device_get(predictor.variables)
  # Was: saved and loaded, then its NaN predictions blamed on the images scored.
  if not all(np.isfinite(a).all() for a in jax.tree_util.tree_leaves(variables)):
    raise InputError("the attribute predictor's weights hold NaN or infinity; train it again "
                     "(with a lower config.attribute_predictor.learning_rate) before saving.")
  blob = serialization.msgpack_serialize(variables)
  meta = dataclasses.asdict(predictor.meta)
  meta = _json_safe({**meta, "format": _FORMAT, "trained_on": device_layout(),
                     "trained_with": perf.kernel_record(),
                     "weights_sha256": hashlib.sha256(blob).hexdigest()})
  meta["meta_sha256"] = _meta_sha256(meta)
  try:
    files.atomic_write(os.path.join(d, _WEIGHTS_FILE), blob)
    files.atomic_write(os.path.join(d, _META_FILE), json.dumps(meta, indent=1))
  except OSError as e:  # Was the OSError itself, a traceback (NotADirectoryError for a file).
    why = files.describe_storage_error(e) if files.storage_error(e) else (e.strerror or str(e))
    blocked = next((p for p in (d, os.path.dirname(d)) if os.path.isfile(p)), None)
    if blocked:  # Was "File exists" for a file named attribute_predictor.
      why = f"{blocked} is a file, not a folder"
    error = WorkdirError(f"could not save the attribute predictor in {d} ({why}); pass a "
                         "workdir that is a writable folder with free space.")
    error.strerror = why  # For load_or_train's warning.
    raise error from e
  return d


def load_predictor(workdir: str) -> Predictor:
  """Reads the predictor `save_predictor` wrote into workdir.

  Args:
    workdir: the directory it was saved under.
  Returns:
    The `Predictor`.
  Raises:
    CheckpointError: it is missing or unreadable, saved by an older version, its meta.json was
      edited or holds values no training writes, or its weights do not match the metadata or
      hold NaN or infinity.
    InputError: a workdir that is not a path.
  """
  return _read_predictor(workdir)[0]


def _read_predictor(workdir: str) -> tuple[Predictor, Optional[str], Any]:
  """`load_predictor`, and its meta.json's "trained_on" (`device_layout`) and "trained_with"
  (`perf.kernel_record`, as the file holds it: `_warn_of_other_layout` reads it), each None
  where it was saved before that was recorded: the file is read once for all three."""
  d = predictor_dir(workdir)
  # Was "load_or_train(config, ...)", which with the whole config was a KeyError.
  how = ("Train and save one with a2i_jax.attribute_predictor.load_or_train("
         "config.attribute_predictor, dataset, workdir) (or train_predictor + save_predictor).")
  mpath, wpath = os.path.join(d, _META_FILE), os.path.join(d, _WEIGHTS_FILE)
  if not (os.path.exists(mpath) and os.path.exists(wpath)):
    raise CheckpointError(f"no attribute predictor in {d}. {how}")
  try:
    with open(mpath) as f:
      meta = json.load(f)
    with open(wpath, "rb") as f:
      blob = f.read()
    if not isinstance(meta, dict):
      raise ValueError(f"{_META_FILE} holds no JSON object")
    if meta.get("format") != _FORMAT:  # Not damaged: another version's (a review's wording).
      error = CheckpointError(f"the attribute predictor in {d} was saved by another version "
                              f"(format {meta.get('format')!r}; this version reads format "
                              f"{_FORMAT}): train a new one in its place. {how}")
      error.reason = f"saved by another version, format {meta.get('format')!r}"
      raise error
    # Was: only the weights were hashed, so an edited meta.json (a column's mean, its kind)
    # loaded and scored silently wrong or failed at predict time with a traceback.
    if meta.get("meta_sha256") != _meta_sha256(meta):
      raise ValueError(f"{_META_FILE} does not match its meta_sha256 (it was edited)")
    if meta["weights_sha256"] != hashlib.sha256(blob).hexdigest():
      raise ValueError("the weights do not match the metadata (an interrupted save?)")
    for key in ("format", "weights_sha256", "meta_sha256"):
      del meta[key]
    trained_on = meta.pop("trained_on", None)  # Words only; saved before: absent.
    trained_with = meta.pop("trained_with", None)  # The same (saved before: absent).
    meta = _check_meta(meta)
    variables = serialization.msgpack_restore(blob)
    expected = jax.eval_shape(
        lambda: AttributeNet(len(meta.attribute_names), meta.width).init(
            jax.random.PRNGKey(0), jnp.zeros((1, meta.image_size, meta.image_size, 3))))
    got = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), variables)
    want = jax.tree_util.tree_map(lambda a: tuple(a.shape), dict(expected))
    if got != want:
      raise ValueError("the weights do not fit the network the metadata describes")
    # Was: loaded (one saved before save_predictor refused such weights), its NaN predictions
    # then blamed on the images scored.
    if not all(np.isfinite(np.asarray(a, np.float64)).all()
               for a in jax.tree_util.tree_leaves(variables)):
      raise ValueError("its weights hold NaN or infinity")
  except CheckpointError:
    raise  # Its own words (another version's predictor).
  except (OSError, ValueError, TypeError, KeyError, RecursionError) as e:
    # RecursionError: a meta.json nested deeper than Python's parser goes (was a traceback).
    if isinstance(e, RecursionError):
      e = ValueError(f"{_META_FILE} is nested too deeply to be a predictor's")
    error = CheckpointError(f"the attribute predictor in {d} is unreadable ({e}). Delete the "
                            f"folder and train a new one. {how}")
    error.reason = str(e)  # For load_or_train's warning, which does the retraining itself.
    raise error from None
  words = lambda v: v if isinstance(v, str) else None
  return Predictor(variables, meta), words(trained_on), trained_with


def _check_meta(meta: dict) -> PredictorMeta:
  """The metadata as a `PredictorMeta`, or ValueError naming the first value that cannot be a
  trained predictor's (the hash catches edits; this, values no training writes)."""
  fields = {f.name for f in dataclasses.fields(PredictorMeta)}
  if set(meta) != fields:
    raise ValueError(f"{_META_FILE} lacks {sorted(fields - set(meta))} or has unknown "
                     f"{sorted(set(meta) - fields)}")
  names = meta["attribute_names"]
  if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
    raise ValueError(f"attribute_names={names!r} is not a list of names")
  for key in _SEQUENCES[1:]:
    if not isinstance(meta[key], list) or len(meta[key]) != len(names):
      raise ValueError(f"{key} has {len(meta[key]) if isinstance(meta[key], list) else 'no'} "
                       f"entries, not one per attribute ({len(names)})")
  bad = sorted(set(meta["attribute_kinds"]) - {"binary", "continuous"}, key=str)
  if bad:
    raise ValueError(f"attribute_kinds holds {bad[0]!r}, not 'binary' or 'continuous'")
  for key in ("mean", "std", "low", "high"):
    for v in meta[key]:
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{key} holds {v!r}, not a finite number")
  if min(meta["std"]) <= 0:  # Training keeps std 1 for a constant column.
    raise ValueError(f"std holds {min(meta['std'])!r}, not a positive number")
  if any(h <= lo for lo, h in zip(meta["low"], meta["high"])):
    raise ValueError("a column's high is not above its low")
  for key in ("image_size", "width", "steps", "batch_size", "seed"):
    v, least = meta[key], 0 if key == "seed" else 1
    if isinstance(v, bool) or not isinstance(v, int) or v < least:
      raise ValueError(f"{key}={v!r} is not an integer of at least {least}")
  for key in ("dataset", "data_fingerprint", "test_fingerprint"):
    if not isinstance(meta[key], str):
      raise ValueError(f"{key}={meta[key]!r} is not a string")
  if not isinstance(meta["test_metrics"], dict):
    raise ValueError(f"test_metrics={meta['test_metrics']!r} is not a mapping")
  lr = meta["learning_rate"]
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
    raise ValueError(f"learning_rate={lr!r} is not a positive finite number")
  return PredictorMeta(**{k: tuple(v) if k in _SEQUENCES else v for k, v in meta.items()})


def load_or_train(settings: Any, dataset: Dataset, workdir: str, *, seed: int = 0,
                  announce: Optional[Callable[[str], None]] = None) -> Predictor:
  """Loads the workdir's predictor, or trains and saves one when there is none, or when the
  saved one was trained on other data or with other settings or seed.

  Args:
    settings: `config.attribute_predictor` (steps, batch_size, learning_rate, width).
    dataset: the generator's dataset.
    workdir: the generator's workdir.
    seed: the training seed, an integer in [0, 2**31).
    announce: called with one line before a predictor is trained (which takes minutes at the
      reference settings), e.g. `print`; None: nothing is said.
  The weights depend on the device layout that trained them too (`device_layout`: on CPU,
  `--xla_force_host_platform_device_count`) and on its kernels (`perf.kernel_record`: on
  CPU, the convolution kernels the timing chose, `perf.convolution_kernels`; the jaxlib),
  which are not matched: a saved predictor of the same (dataset, settings, seed) is reused whatever
  layout and kernels trained it, and its meta.json's "trained_on" and "trained_with" say
  which, with one warning where they differ from this process's; the fidelity scores it
  gives differ slightly from those of one trained here (delete the folder to train one here,
  or add the flag of the kernels it was trained with, `perf.CONVOLUTION_KERNEL_FLAGS`, to
  XLA_FLAGS before JAX starts).

  Returns:
    The predictor: a function of (dataset, settings, seed) and the device layout and
    kernels that trained it (see above), whatever was saved before.
  Raises:
    InputError: a seed, setting or dataset `train_predictor` refuses (checked before any
      predictor is read), a workdir that is not a path, or a training that diverged.
    DataError: a dataset `train_predictor` refuses.
  """
  predictor_dir(workdir)  # A workdir that is not a path, before any training.
  if settings is None:
    settings = config_lib.reference_config().attribute_predictor
  seed = _check_seed(seed)  # Was: seed=True reused (or saved) the predictor of seed 1.
  # Checked as training checks them (was: a KeyError for the whole config, a ValueError for
  # learning_rate="x", before any predictor was read).
  steps, batch_size, learning_rate, width = _check_settings(_setting_values(settings))
  _check_data(dataset, "test")  # Before its fingerprint is taken.
  taken = _fingerprints(dataset)  # Once: a training below records these (`_train`).
  want = {"dataset": dataset.name, "attribute_names": tuple(dataset.attribute_names),
          "attribute_kinds": tuple(dataset.attribute_kinds),
          "image_size": int(dataset["train"].images.shape[1]), **taken, "steps": steps,
          "batch_size": batch_size, "learning_rate": learning_rate, "width": width,
          "seed": int(seed)}
  try:
    p, trained_on, trained_with = _read_predictor(workdir)
    differ = [k for k, v in want.items() if getattr(p.meta, k) != v]
    if not differ:
      _warn_of_other_layout(workdir, trained_on, trained_with)
      return p
    # Was: reused when the dataset's name, image size and attribute names matched, so other
    # images (another synthetic seed, an edited folder) or another --seed were scored by it.
    logging.warning("the attribute predictor in %s was trained with another %s; training a "
                    "new one in its place.", predictor_dir(workdir), ", ".join(differ))
  except CheckpointError as e:
    if os.path.exists(os.path.join(predictor_dir(workdir), _META_FILE)):
      older = str(getattr(e, "reason", "")).startswith("saved by another version")
      logging.warning("the attribute predictor in %s %s (%s); training a new one in its place.",
                      predictor_dir(workdir), "cannot be used" if older else "is unreadable",
                      getattr(e, "reason", e))
  if announce is not None:
    announce(f"training the attribute predictor ({steps:,} step{'s' * (steps != 1)}; saved in "
             f"{predictor_dir(workdir)} for later calls)")
  p = _train(dataset, settings, seed, "test", {}, taken)
  try:
    save_predictor(p, workdir)
  except (OSError, WorkdirError) as e:  # A read-only workdir: the scores stand, the next
    # call retrains.
    logging.warning("could not save the attribute predictor in %s (%s); it is trained again "
                    "next time.", workdir, getattr(e, "strerror", None) or e)
  return p
