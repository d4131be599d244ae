"""Checkpoints: one Orbax CheckpointManager in `workdir/checkpoints`, the config and the
dataset's description (dataset.json) beside it.

Orbax writes each step to a temporary directory and renames it when complete, so a run killed
mid-save never leaves a half-written checkpoint that looks finished; the newest finished one
is what a restart resumes from. Bytes that change after the save (a bad disk, a stray write)
are caught by checksums: the SHA-256 of every file of the step's folder goes into
`CHECKSUM_FILE` inside it, and every restore checks them first. They are written from Orbax's
own background thread as soon as its save has written and finalised the array files, before
it renames the temporary folder to the step's name (`ocp.AsyncOptions.post_finalization_callback`),
so a checkpoint that is there under its step's name has the checksums of all its arrays,
however the process ends afterwards; a kill before the rename leaves a temporary folder that
the next run deletes. The two small files Orbax writes when it commits the save after that
(`_COMMIT_FILES`: the step's metadata with its commit time, the marker of a finished save) are
added by the next `save` or `wait`. A wait runs Orbax's on a thread of its own, so that a
Ctrl-C stops the caller's wait, never Orbax's join of its save thread (on Python 3.11 a join
cut short returns at once ever after, while the thread runs on), and the next wait (a
`close` after a second Ctrl-C) waits for the same save and writes all its checksums.

The window that remains: a kill between Orbax's commit and the next `save`/`wait` leaves those
two files without checksums (damage there makes Orbax's restore fail, rather than read wrong
values); a checkpoint saved by an older version, killed between its save and the checksums,
has none at all. (This version marks its saves in Orbax's metadata, `_SUMMED_MARK`, so that
one of them without its checksum file, deleted, is corrupt, not unverified.) Such a checkpoint
is neither taken for verified nor given checksums later: if
Orbax cannot restore it but an older checkpoint restores, training treats it as corrupt
(`mark_corrupt`): it is moved to `CORRUPT_DIR` and the run resumes from that older one, as for a
checksum mismatch; if none restores, the cause is taken to lie outside the files (a changed
layout, memory) and the run stops, moving nothing.
Bytes changed in an unsummed file that Orbax still reads without an error go undetected.

Each step's folder also records the config's model section its state was trained with
(`MODEL_RECORD_FILE`, sorted JSON, written with the checksums and listed in them), and a
restore compares it with the model section in use (`Checkpointer`'s `model`): config.json is
a plain file, and an edit to it that keeps the weights' shapes (a disCVAE's `composition`)
restored them into another model without a word. The record also holds the attribute names
in the order the model was fed them (dataset.json's at the save), compared on restore with
dataset.json's: an edit of their order there fed each value as another attribute's (a model
that takes none, the VAE, records and compares none). A checkpoint without a record, or
without the names (saved by an older version), restores as before. Where dataset.json was
deleted, training and inference take the attributes in the order the checkpoints record.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import logging
import math
import os
import re
import shlex
import shutil
import threading
import time
import warnings
from collections import abc
from typing import Any, Callable, Optional, Sequence

import numpy as np

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from a2i_jax import config_lib, distributed, errors, files, interrupts, models, parallel
from a2i_jax.data import base as data_base
from a2i_jax.errors import (CheckpointError, ConfigError, WorkdirError,
                            add_unraisable_handler, first_line)
from a2i_jax.inputs import check_int, is_integer

CONFIG_FILE = "config.json"
DATASET_FILE = data_base.DATASET_FILE
CHECKPOINT_DIR = "checkpoints"
CHECKSUM_FILE = "a2i_sha256.json"  # Inside each step's folder.
# Inside each step's folder too, listed in its checksum file: the config's model section the
# state was trained with (`Checkpointer`'s `model`).
MODEL_RECORD_FILE = "a2i_model.json"
CORRUPT_DIR = "corrupt_checkpoints"  # Where training moves corrupt checkpoints, for a look.
_TMP_MARK = ".orbax-checkpoint-tmp"  # Orbax's suffix of a save in progress.
# Files Orbax writes or rewrites when it commits a save, after its post-finalisation callback
# (the commit time in the step's metadata, the marker of a finished save).
_COMMIT_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt")
_ORBAX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(ocp.__file__))) + os.sep


class QuietOrbaxFilter(logging.Filter):
  """A logging filter that keeps only Orbax's warnings: not its INFO lines (a few dozen per
  save), nor its ERROR records, whose tracebacks repeat, thread by thread, a failure that
  reaches the caller as an exception anyway (a full disk: hundreds of lines), nor asyncio's
  reports of Orbax tasks that failed in the same way, nor its warning for a step folder
  without its metadata file, which `Checkpointer.check` reports in the library's words.

  Orbax logs through absl, so its records come from the logger "absl" like everyone else's;
  they are told apart by the file that logged them. Add it to a handler (e.g. absl's
  `logging.get_absl_handler()`, as train.py does) rather than a logger, so that it also sees
  the records of Orbax's background save threads.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    """Whether `record` passes.

    Args:
      record: a log record.
    Returns:
      False for records logged from inside the orbax package, except warnings.
    """
    if _orbax_asyncio_report(record):
      return False
    if _orbax_metadata_warning(record):
      # A step folder without Orbax's metadata (an empty one: `Checkpointer.check` reports
      # it in the library's words), once per reader thread.
      return False
    return (not record.pathname.startswith(_ORBAX_DIR)
            or logging.WARNING <= record.levelno < logging.ERROR)


# The checkpoint folders (with a trailing separator) this process has opened: asyncio's
# reports of reads left behind there, and Orbax's warnings for a step folder there without its
# metadata, are dropped (`_orbax_asyncio_report`, `_OrbaxLeftovers`).
_OPENED_FOLDERS: set[str] = set()


def _names_opened_folder(text: str) -> bool:
  """Whether `text` names a file in a checkpoint folder this process has opened."""
  # A copy: another thread may open a folder meanwhile (a set changed while iterated raises
  # inside a caller's logging call; read-through).
  return any(folder in text for folder in tuple(_OPENED_FOLDERS))


def _message(record: logging.LogRecord) -> str:
  """`record`'s message, or its unformatted text where its arguments do not fit it (a filter
  must not raise where logging would have reported the caller's mistake)."""
  try:
    return record.getMessage()
  except Exception:  # pylint: disable=broad-except
    return str(record.msg)


def _record_text(record: logging.LogRecord) -> str:
  """`record`'s message and its exception's text, where a path it names would be."""
  error = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
  return f"{_message(record)} {error if error is not None else ''}"


def _orbax_asyncio_report(record: logging.LogRecord) -> bool:
  """Whether `record` is asyncio's report of an Orbax task or read that failed. Orbax leaves a
  failed restore's sibling reads to asyncio's shutdown, which logs each one's traceback at
  ERROR when it is collected ("Task exception was never retrieved": Orbax 0.12 in the
  message; newer ones, now and then, as a "_GatheringFuture exception was never retrieved"
  whose exception holds it), with TensorStore's spec of the array: 80 lines each; or, for a
  read whose files a training run pruned, a "Future exception was never retrieved" whose
  TensorStore error names the step's folder, with no Orbax code in it. The failure itself
  reaches the caller."""
  if record.name != "asyncio":
    return False
  return (_ORBAX_DIR in _message(record) or _raised_in_orbax(record.exc_info)
          or ("never retrieved" in str(record.msg) and _names_opened_folder(_record_text(record))))


def _orbax_metadata_warning(record: logging.LogRecord) -> bool:
  """Whether `record` is Orbax's warning for a step folder without its metadata file."""
  return record.pathname.startswith(_ORBAX_DIR) and str(record.msg).startswith(
      "Metadata file does not exist")


def _orbax_missing_metadata(record: logging.LogRecord) -> bool:
  """Whether `record` is Orbax's note of a step folder's metadata file that is not there:
  its warning for one missing, or its error for one gone as it was read."""
  args = record.args if isinstance(record.args, tuple) else ()
  return _orbax_metadata_warning(record) or (
      record.pathname.startswith(_ORBAX_DIR)
      and str(record.msg).startswith("Failed to read Metadata file")
      and any(isinstance(a, FileNotFoundError) for a in args))


class _OrbaxLeftovers(logging.Filter):
  """A filter for the loggers "asyncio" and "absl" that drops, for a library caller (a
  notebook) as `QuietOrbaxFilter` does for the entry points, asyncio's reports of Orbax's
  failed reads (`_orbax_asyncio_report`) and Orbax's notes of a step folder without its
  metadata file in a checkpoint folder this process opened (`_orbax_missing_metadata`: a step
  that a training run is pruning as it is read; an empty one, which `Checkpointer.check`
  reports). Every other record passes, a caller's own asyncio and absl records included, also
  of Orbax's failures in folders this process did not open (was: every asyncio report of an
  Orbax failure dropped from the first open on; read-through)."""

  def filter(self, record: logging.LogRecord) -> bool:
    """Whether `record` passes.

    Args:
      record: a log record.
    Returns:
      False for the records above.
    """
    return not ((_orbax_asyncio_report(record) or _orbax_missing_metadata(record))
                and _names_opened_folder(_record_text(record)))


def _quiet_orbax_leftovers(directory: str) -> None:
  """Keeps what Orbax leaves behind about the checkpoint folder `directory` off a library
  caller's console: `_OrbaxLeftovers` on the loggers "asyncio" and "absl" (once each). Was
  printed from a notebook's `load_trained` beside a training run that pruned the checkpoints
  it read: 15 asyncio reports of Orbax's reads, each with its traceback and TensorStore's
  spec of the array, and the metadata warnings, 1,234 lines in 69 loads (fault hunt). The
  reports come when the reads are collected, which may be long after the restore that left
  them, so the filters stay; they drop nothing else."""
  _OPENED_FOLDERS.add(os.path.join(directory, ""))
  for name in ("asyncio", "absl"):
    logger = logging.getLogger(name)
    if not any(isinstance(f, _OrbaxLeftovers) for f in logger.filters):
      logger.addFilter(_OrbaxLeftovers())


def _raised_in_orbax(exc_info: Any) -> bool:
  """Whether a log record's exception passed through Orbax's code."""
  tb = getattr(exc_info[1], "__traceback__", None) if isinstance(exc_info, tuple) else None
  while tb is not None:
    if tb.tb_frame.f_code.co_filename.startswith(_ORBAX_DIR):
      return True
    tb = tb.tb_next
  return False


def _orbax_leftover(unraisable) -> bool:
  """Whether an unraisable exception is one a failed save (a full disk) or restore (a shape
  that does not fit) leaves behind: Orbax closes its event loop while tensorstore reads or
  writes are still pending, so their completion callbacks fail ("Event loop is closed"), and
  its read coroutines that are collected unfinished raise from inside Orbax. The failure
  itself reaches the caller as an exception; these are dropped, anything else goes on."""
  value = unraisable.exc_value
  if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
    return True
  code = getattr(unraisable.object, "cr_code", None)  # An Orbax coroutine's own failure.
  return code is not None and code.co_filename.startswith(_ORBAX_DIR)


def quiet_orbax(absl_handler: logging.Handler) -> None:
  """Keeps Orbax's noise off the console of an entry point: `QuietOrbaxFilter` on absl's
  handler, and the tracebacks its pending tensorstore callbacks print after a failure.

  Args:
    absl_handler: absl's logging handler (`absl.logging.get_absl_handler()`); the filter is
      added once, however often this is called.
  """
  if not any(isinstance(f, QuietOrbaxFilter) for f in absl_handler.filters):
    absl_handler.addFilter(QuietOrbaxFilter())
  add_unraisable_handler("quiet_orbax", _orbax_leftover)  # Keeps the others (keep_ctrl_c).
  # ... and the warnings for the read coroutines it leaves unawaited when a restore fails
  # (the library has no coroutines of its own).
  warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited",
                          category=RuntimeWarning)


def _metadata_damaged(folder: str) -> bool:
  """Whether a step folder's Orbax metadata (`_CHECKPOINT_METADATA`) is there but does not
  load as a JSON object; one that is missing or cannot be read (permissions) is not named."""
  path = os.path.join(folder, _COMMIT_FILES[0])
  try:
    with open(path, encoding="utf-8") as f:
      return not isinstance(json.load(f), dict)
  except ValueError:  # Not JSON, or not UTF-8.
    return True
  except OSError:
    return False


def _raise(error: OSError) -> None:
  """`os.walk`'s onerror: a folder that cannot be listed is an error, not an empty folder."""
  raise error


def _file_digests(folder: str) -> dict[str, str]:
  """{path relative to `folder`: SHA-256} of every file below it but the checksum file."""
  return files.file_digests(folder, CHECKSUM_FILE)


# The key of the custom metadata (in Orbax's `_CHECKPOINT_METADATA`) of a save that wrote its
# checksums.
_SUMMED_MARK = "a2i_checksums"


def _has_summed_mark(folder: str) -> bool:
  """Whether the step in `folder` was saved by a version that writes `CHECKSUM_FILE`: its
  Orbax metadata's custom part names it (an unreadable or missing metadata file: no)."""
  try:
    with open(os.path.join(folder, _COMMIT_FILES[0]), encoding="utf-8") as f:
      meta = json.load(f)
  except (OSError, ValueError):
    return False
  custom = meta.get("custom_metadata") if isinstance(meta, dict) else None
  return isinstance(custom, dict) and _SUMMED_MARK in custom


def _cannot_read(path: str, error: OSError) -> CheckpointError:
  """The error for a checkpoint's file or folder that cannot be read for a reason outside its
  bytes (permissions, the disk, a network file system's passing error), with the advice of
  its errno (`files.storage_fix`; was "make the workdir readable" for each, a failed disk's
  EIO too)."""
  return CheckpointError(f"could not read {error.filename or path} "
                         f"({files.describe_storage_error(error)}); "
                         f"{files.storage_fix(error)}, then try again.")


# Errors reading a step's checksum file during its save that pass: the file is recomputed.
_PASSING_READ_ERRNOS = frozenset({errno.ESTALE, errno.EMFILE, errno.ENFILE})


def _read_checksums(folder: str, reading: bool = True) -> dict[str, str]:
  """The digests in `folder/CHECKSUM_FILE`: {} when it is missing or damaged (`check` says
  so). One that cannot be read (permissions, the disk, `files.read_digests`) raises: was {},
  and the model record it vouches for then read as none, so a restore whose checksums were
  checked before compared neither the model nor the attribute order (`_check_model`).

  Args:
    folder: a step's folder.
    reading: True: that error is a `CheckpointError` (`_cannot_read`); False (a save's):
      the `OSError` itself, for the training loop to word as a failed write.
  Returns:
    {path relative to `folder`: SHA-256}.
  Raises:
    CheckpointError: (`reading`) the file cannot be read.
    OSError: (not `reading`) a storage error (`files.storage_error`); any other: {}.
  """
  path = os.path.join(folder, CHECKSUM_FILE)
  try:
    return files.read_digests(path) or {}
  except ValueError:
    return {}
  except OSError as e:  # Not the file's bytes (`files.read_digests`).
    if not reading:
      # A save rewrites the file from the step's files: only the disk's own errors stop it
      # (a network file system's passing ESTALE, too many open files: recomputed, as before;
      # review finding: was raised, a traceback that stopped a save that used to finish).
      # Named here: EMFILE and ENFILE are storage errors for a write (`files.storage_error`),
      # and were raised again (review of 5a67595).
      if e.errno in _PASSING_READ_ERRNOS or files.storage_error(e) is None:
        return {}
      raise
    raise _cannot_read(path, e) from None


def _write_checksums(folder: str, committed: bool = True) -> None:
  """Writes `folder/CHECKSUM_FILE`: the digests it holds already, plus those of the files it
  does not list yet.

  Args:
    folder: a step's folder.
    committed: False while Orbax has still to commit the save: the files it rewrites then
      (`_COMMIT_FILES`) are left for a later call.
  """
  sums = _read_checksums(folder, reading=False)
  sums.update(files.file_digests(folder, CHECKSUM_FILE, known=sums))
  if not committed:
    sums = {k: v for k, v in sums.items() if k not in _COMMIT_FILES}
  files.write_digests(os.path.join(folder, CHECKSUM_FILE), sums)


# config.model keys that change how the model is computed, not its function or parameters: a
# run may resume with other values, and a checkpoint's model record is compared without them.
COMPUTE_ONLY_MODEL_KEYS = ("dtype", "upsample_mode", "conv_weight_grad", "decoder_tail")


def _as_json(section: Any) -> dict:
  """A config section (ConfigDict or mapping) as JSON has it: tuples as lists."""
  if hasattr(section, "to_json"):
    return json.loads(section.to_json())
  return json.loads(json.dumps(dict(section), default=repr))


def recorded_model(folder: str) -> Optional[dict]:
  """The model section recorded with the checkpoint in `folder` (`MODEL_RECORD_FILE`), where
  its checksum file vouches for it.

  Args:
    folder: a step's folder.
  Returns:
    The section as saved (keys the saving version predates absent), or None: a checkpoint
    saved without one (by an older version, or not from training), or a record that is not
    as its checksum file says (`Checkpointer.check` reports that as corruption).
  """
  model = _read_record(folder).get("model")
  return model if isinstance(model, dict) else None


def recorded_attributes(folder: str) -> Optional[list[str]]:
  """The attribute names, in the order the model was fed them, recorded with the checkpoint
  in `folder` (`MODEL_RECORD_FILE`'s "attribute_names": dataset.json's at the save), where
  its checksum file vouches for the record.

  Args:
    folder: a step's folder.
  Returns:
    The names, or None: a checkpoint saved without them (by an older version, outside a
    run with dataset.json, or not from training), a record not as its checksums say, or the
    record of a model that takes no attributes (the VAE: a version that recorded its
    dataset's names too, which that model was never fed).
  """
  record = _read_record(folder)
  names = record.get("attribute_names")
  if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
    return None
  model = record.get("model")
  return None if isinstance(model, dict) and not uses_attributes(model) else names


def newest_recorded_attributes(workdir: str) -> Optional[tuple[int, list[str]]]:
  """The attribute names recorded with the newest checkpoint of `workdir` that has them
  (`recorded_attributes`), from the folders alone (no Orbax manager is opened).

  Args:
    workdir: the run's directory.
  Returns:
    (step, names), or None where no checkpoint records them.
  """
  return _newest_recorded(workdir, recorded_attributes)


def uses_attributes(model: Any) -> bool:
  """Whether the model of a config's model section takes attributes (y): the module answers
  (`models.create_model(...).uses_attributes`; False for the VAE), for the section completed
  with the defaults of the keys it lacks.

  Args:
    model: a model section (ConfigDict or mapping), e.g. config.model or `recorded_model`'s.
  Returns:
    The module's answer; True for a section no model is made from (an unknown name, sizes
    no model has): its attribute names are then recorded and compared, as for any model.
  """
  section = config_lib.with_defaults({"model": _as_json(model)}).model
  # The forms that cost nothing to resolve: "auto" reads the machine's timing of its kernels.
  section.update(dtype="float32", conv_weight_grad="xla", decoder_tail="full")
  try:
    return bool(models.create_model(section).uses_attributes)
  except (ConfigError, TypeError, ValueError, KeyError, AttributeError):
    return True


def _read_record(folder: str) -> dict:
  """`MODEL_RECORD_FILE` of the step in `folder` as a dict, where its checksum file vouches
  for it; {} otherwise (missing, unlisted, changed since the save, or not a JSON object)."""
  digest = _read_checksums(folder).get(MODEL_RECORD_FILE)
  try:
    with open(os.path.join(folder, MODEL_RECORD_FILE), "rb") as f:
      data = f.read()
  except OSError:
    return {}
  if digest is None or hashlib.sha256(data).hexdigest() != digest:
    return {}
  try:
    record = json.loads(data.decode("utf-8"))
  except (ValueError, RecursionError):  # UnicodeDecodeError too.
    return {}
  return record if isinstance(record, dict) else {}


def newest_recorded_model(workdir: str) -> Optional[tuple[int, dict]]:
  """The model section recorded with the newest checkpoint of `workdir` that has one, from the
  folders alone (no Orbax manager is opened; only the record's own checksum is checked).

  Args:
    workdir: the run's directory.
  Returns:
    (step, `recorded_model`), or None where no checkpoint has a record.
  """
  return _newest_recorded(workdir, recorded_model)


def _newest_recorded(workdir: str, read: Callable[[str], Any]) -> Optional[tuple[int, Any]]:
  """(step, `read(its folder)`) of the newest checkpoint of `workdir` for which `read` gives
  something other than None; None where none does."""
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  try:
    steps = sorted((int(n) for n in os.listdir(directory) if n.isdigit()), reverse=True)
  except OSError:
    return None
  for step in steps:
    value = read(os.path.join(directory, str(step)))
    if value is not None:
      return step, value
  return None


# config.model keys that weigh or route the training loss alone: serving computes nothing
# otherwise for other values (`load_trained` leaves them out of the record's comparison), and
# a resume may change them as it may the learning rate, with a warning
# (`train_lib.RESUMABLE_MODEL_KEYS`).
TRAINING_ONLY_MODEL_KEYS = ("gate_loss_weight", "block_kl_bg_grad_to_fg")


def model_differences(recorded: Any, model: Any, ignore: Sequence[str] = ()
                      ) -> list[tuple[str, Any, Any]]:
  """The keys whose values make a model that computes otherwise from the same weights.

  Keys either side lacks (added to the library since it was written) read as their defaults
  (`config_lib.with_defaults`); `COMPUTE_ONLY_MODEL_KEYS` and the keys the model ignores
  (`config_lib.unused_model_keys`) are left out.

  Args:
    recorded: the model section a checkpoint records (`recorded_model`).
    model: the config's model section in use.
    ignore: more keys to leave out (serving: `TRAINING_ONLY_MODEL_KEYS`).
  Returns:
    [(key, recorded value, value in use)], sorted by key; [] where they agree.
  """
  then, now = (_as_json(config_lib.with_defaults({"model": _as_json(m)}).model)
               for m in (recorded, model))
  skip = {*COMPUTE_ONLY_MODEL_KEYS, *ignore,
          *config_lib.unused_model_keys(str(now.get("name")))}
  return [(k, then.get(k), now.get(k)) for k in sorted(set(then) | set(now))
          if k not in skip and then.get(k) != now.get(k)]


def describe_model_differences(differences: list[tuple[str, Any, Any]], now: str = "now"
                               ) -> tuple[str, str, str]:
  """What `model_differences` found, in words, and the recorded values to put back.

  Args:
    differences: its output (not empty).
    now: the words for the value in use, e.g. "now" or "in config.json".
  Returns:
    ("model.composition: 'layered' when saved, 'reference' now; ...", the recorded values as
    config.json's model section spells them ('"composition": "layered"'), and as train.py's
    overrides ("--config.model.composition=layered"; only values an override can set).
  """
  differ = "; ".join(f"model.{k}: {old!r} when saved, {new!r} {now}"
                     for k, old, new in differences)
  values = ", ".join(f"{json.dumps(k)}: {json.dumps(old)}" for k, old, _ in differences)
  flags = " ".join(f"--config.model.{k}={shlex.quote(str(old))}" for k, old, _ in differences
                   if old is not None and config_lib.of_default_kind(f"model.{k}", old))
  return differ, values, flags


def remove_temporary(workdir: str) -> list[str]:
  """Deletes the folders of saves that never finished (a crash or a full disk mid-save).

  Only a process that holds the workdir (training, under `files.workdir_lock`) may call it:
  another process's save in progress looks the same.

  Args:
    workdir: the run's directory.
  Returns:
    The paths removed.
  """
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  removed = []
  if os.path.isdir(directory):
    for name in sorted(os.listdir(directory)):
      if _TMP_MARK in name:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.remove(path)
        removed.append(path)
  return removed


def has_checkpoints(workdir: str) -> bool:
  """Whether `workdir` holds a finished checkpoint, seen from its folder names alone (no Orbax
  manager is opened; the temporary folder of a save in progress is not one).

  Args:
    workdir: the run's directory.
  Returns:
    True when `workdir/checkpoints` has a step's folder.
  Raises:
    WorkdirError: `workdir` is not a path (was a TypeError from os.path), or is empty.
  """
  files.check_workdir_arg(workdir)
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  # Folders only: Orbax saves none as a file, and lists none (was: a file "8" made a run
  # without config.json warn of checkpoints it did not have).
  return os.path.isdir(directory) and any(
      n.isdigit() and os.path.isdir(os.path.join(directory, n)) for n in os.listdir(directory))


def check_step_names(workdir: str) -> None:
  """Refuses an entry of `workdir/checkpoints` named as a step's save (8, not 08) that is not
  a folder, or is a symbolic link (to a folder: another run's checkpoint).

  Such a file is the user's: Orbax neither lists nor restores it, and its save of that step
  replaced it without a word (fault hunt). Refused before anything is written, as
  `files.check_workdir` refuses entries of the wrong kind; not set aside as a corrupt
  checkpoint is (`CORRUPT_DIR`): no save makes a file, so it is no checkpoint gone bad, and
  where it belongs is the user's to say.

  A link to a step's folder (a checkpoint shared from another run) resumed, then Orbax's
  retention (`config.max_checkpoints_to_keep`) stopped every later run with "Cannot call
  rmtree on a symbolic link"'s traceback, at each save's cleanup (a fault hunt's finding).
  Refused rather than unlinked when pruned: the pruning is Orbax's own deleter (internal,
  and not the same in each Orbax version), and the other run's retention may delete the
  folder under this run. `infer.py` only reads checkpoints and does not call this: a link
  serves there.

  Args:
    workdir: the run's directory.
  Raises:
    WorkdirError: the message names the entry and says to move it out of checkpoints/ (a
      link to a folder: or to copy the checkpoint in, with the command).
  """
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  try:
    names = sorted(os.listdir(directory))
  except OSError:  # Missing (made later), or not a folder: `files.check_workdir`'s to say.
    return
  for name in names:
    path = os.path.join(directory, name)
    if name.isdigit() and name == str(int(name)) and os.path.islink(path) and os.path.isdir(
        path):
      target = os.path.realpath(path)
      raise WorkdirError(
          f"{path} is a symbolic link to {target}, not a folder of this run: training would "
          f"resume from it and then fail to delete it when it prunes old checkpoints "
          "(config.max_checkpoints_to_keep); copy the checkpoint in (rm "
          f"{shlex.quote(path)} && cp -r {shlex.quote(target)} {shlex.quote(path)}), or move "
          f"the link out of {directory}, or pass another --workdir.")
    if name.isdigit() and name == str(int(name)) and not os.path.isdir(path):
      kind = ("a file" if os.path.isfile(path) else
              "a symbolic link to nothing" if os.path.islink(path) else "a special file")
      raise WorkdirError(f"{path} is {kind}, not a checkpoint, but it has a checkpoint's name: "
                         f"a save of step {name} would replace it; move it out of "
                         f"{directory}, or pass another --workdir.")


def _apart(a: str, b: str) -> bool:
  """Whether folders `a` and `b` lie on different file systems (a rename between them fails)."""
  try:
    return os.stat(a).st_dev != os.stat(b).st_dev
  except OSError:
    return False


def _aside_name(workdir: str, directory: str, step: int) -> str:
  """Where corrupt checkpoint `step` is set aside, relative to `workdir`:
  corrupt_checkpoints/<step>, or, where checkpoints/ lies on another file system than the
  workdir (a link to, or a mount of, another disk), checkpoints/<step>.corrupt, a name that
  is no step (Orbax neither reads nor deletes it). A rename either way: a copy across file
  systems, cut short, left a partial copy and a half-deleted step that read as an older
  version's (a review of the first fix; before it, the rename's EXDEV was a traceback at
  every start, so the run could not resume). Not over one set aside before."""
  apart = _apart(directory, workdir)
  folder = directory if apart else os.path.join(workdir, CORRUPT_DIR)
  return os.path.relpath(files.unused_path(folder, f"{step}.corrupt" if apart else str(step)),
                         workdir)


def _move_aside(source: str, target: str, problem: str) -> None:
  """Renames a corrupt checkpoint's folder to `target` (`_aside_name`).

  Raises:
    CheckpointError: the folder could not be moved (the message says to move it by hand).
  """
  try:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(source, target)
  except OSError as e:
    raise CheckpointError(
        f"{source} is corrupt ({problem}) and could not be moved to {target} ("
        f"{files.describe_storage_error(e)}); move or delete that folder yourself, then run "
        "the same command again to resume from the newest intact checkpoint.") from None


def newest_saved_step(workdir: str) -> Optional[int]:
  """The newest step whose save finished (its folder holds the checksum file written after
  it, or, saved by an older version without checksums, Orbax's commit files), from the
  folders alone: for a message where no manager is open (train.py's, after a second Ctrl-C
  stopped a save). Its bytes are not checked.

  Args:
    workdir: the run's directory.
  Returns:
    The step, or None where there is none.
  Raises:
    WorkdirError: `workdir` is not a path (was a TypeError from os.path), or is empty.
  """
  files.check_workdir_arg(workdir)
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  try:
    names = os.listdir(directory)
  except OSError:
    return None
  # Orbax's commit file too: a save of an older version, without checksums, resumes as well
  # (was left out, so the message said that no checkpoint was saved).
  # Not one of this version's saves (its metadata's mark) without the checksum file: the next
  # start takes it for corrupt and resumes from the one before (`check`); was named as the
  # step to resume from, a save that lost its checksums to a second Ctrl-C (fault hunt).
  steps = [int(n) for n in names if n.isdigit() and _resumable(os.path.join(directory, n))]
  return max(steps, default=None)


def _resumable(folder: str) -> bool:
  """Whether a step's folder holds a save a new start resumes from (`newest_saved_step`):
  it has the checksum file, or Orbax's commit files and no mark of this version's saves."""
  if os.path.isfile(os.path.join(folder, CHECKSUM_FILE)):
    return True
  return (any(os.path.isfile(os.path.join(folder, name)) for name in _COMMIT_FILES)
          and not _has_summed_mark(folder))


def _on_one_device(state: Any) -> Any:
  """`state` as Orbax should save it: on CPU, in one process, a state replicated over several
  devices is handed over as its arrays on the first device; anything else is `state` itself.

  Orbax splits every replicated array among its replicas when it saves ("replica-parallel"
  saving, its default unless JAX_PLATFORMS names gpu or cuda), one eager slice per array and
  device. On CPU the devices share host memory, so that gains nothing, and the slices cost
  more than the save: a tiny disCVAE state (354 arrays) on 4 CPU devices blocked the save for
  0.41-0.59 s and took 1.08-1.34 s to write, and from one device 0.12-0.20 s and 0.64-0.91 s
  (BENCHMARKS.md, "The test suite's wall time"). Nothing is copied: Orbax reads the first
  device's buffers and takes a host view of them before `save` returns. The next train step
  donates the state, and XLA:CPU copies a donated buffer that has such a view rather than
  reuse it: the path a state on one device has always taken (tests/test_faults_train.py checks
  that the checkpoint keeps the saved values). The saved sharding is then that one device's;
  `Checkpointer.restore` lays a leaf out replicated over all devices where its target names
  no sharding, as the saved sharding did before.
  """
  leaves = jax.tree_util.tree_leaves(state)
  if (jax.process_count() != 1 or not leaves
      or not all(isinstance(a, jax.Array) and a.is_fully_replicated
                 and len(a.sharding.device_set) > 1 for a in leaves)
      or any(d.platform != "cpu" for a in leaves for d in a.sharding.device_set)):
    return state
  return jax.device_put(state, min(leaves[0].sharding.device_set, key=lambda d: d.id))


def _step_number(step: Any, directory: str, steps: Callable[[], list[int]],
                 saving: bool = False) -> int:
  """`step` as the int that names its folder: a Python or NumPy integer, or a 0-d integer
  array (a `TrainState`'s step, on the host or a device).

  Raises:
    CheckpointError: anything else (a bool, a float, a string), or, for a save (`saving`), a
      step below 0; the message lists `steps()`, the steps in `directory` (listed only then).
  """
  if (not isinstance(step, (bool, np.bool_)) and hasattr(step, "dtype")
      and np.shape(step) == () and np.issubdtype(np.dtype(step.dtype), np.integer)):
    step = int(np.asarray(step))  # A 0-d array as its number (was unhashable in Orbax).
  whole = is_integer(step)
  if saving and not (whole and step >= 0):
    raise CheckpointError(f"step={step!r} cannot name a checkpoint; pass the training step, an "
                          f"integer of at least 0 (the steps saved in {directory}: "
                          f"{steps() or 'none'}).")
  if not whole:
    raise CheckpointError(f"step={step!r} is not a step number; pass an integer, one of the "
                          f"steps in {directory}: {steps() or 'none'}.")
  return int(step)  # A NumPy integer as the folder's name.


def _unsavable(leaf: Any) -> Optional[str]:
  """What makes `leaf` one that Orbax cannot save (it raised inside its save, which left a
  temporary folder behind), in words; None for one it saves: a JAX or NumPy array of numbers
  or bools (a PRNG key too) with at least one element, or a Python number that one holds."""
  if isinstance(leaf, jax.Array):  # Numbers, bools or keys: only the size can be wrong.
    array = leaf
  elif isinstance(leaf, (np.ndarray, np.generic, bool, int, float)):
    array = np.asarray(leaf)  # A Python int past 64 bits: an array of objects.
  else:
    return f"a {type(leaf).__name__} ({str(leaf)[:40]!r}), not an array or a number"
  dtype = array.dtype
  if not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)
          or jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)):
    if isinstance(leaf, int):
      return f"the integer {leaf}, which no 64-bit integer holds"
    return f"an array of {dtype}, not of numbers"
  if not array.size:
    return f"an array of shape {array.shape}, which holds no element"
  return None


def _check_savable(state: Any) -> None:
  """Refuses a state that Orbax cannot save, before its save starts.

  Raises:
    CheckpointError: `state` has no arrays, or a leaf that `_unsavable` names; the message
      names the leaf's path in the state.
  """
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  if not leaves:
    raise CheckpointError(f"the state to save ({str(state)[:60]}) holds no arrays; pass the "
                          "train state, a pytree of JAX or NumPy arrays.")
  for path, leaf in leaves:
    problem = _unsavable(leaf)
    if problem is not None:
      where = jax.tree_util.keystr(path, simple=True, separator="/")
      raise CheckpointError(
          f"{f'the state entry {where!r}' if where else 'the state'} is {problem}: a "
          "checkpoint holds JAX or NumPy arrays of numbers or bools, not empty, and numbers; "
          "convert it to one, or keep it out of the state.")


class RestoreError(CheckpointError):
  """Orbax could not restore a checkpoint; `reason` is its exception's type and first line."""

  def __init__(self, message: str, reason: str):
    super().__init__(message)
    self.reason = reason


class CheckpointRemovedError(RestoreError):
  """Checkpoint `step` was removed while it was read (a training run in the workdir keeps only
  its newest checkpoints): not corrupt; the same call again, for the newest step, reads it.

  `Checkpointer`'s manager is reloaded before this is raised, so its `latest_step` names the
  newest checkpoint there now. Raised by `Checkpointer(...)` itself (a step removed while it
  opened the folder, every time it tried), there is no checkpointer: make another.
  """

  def __init__(self, message: str, reason: str, step: int):
    super().__init__(message, reason)
    self.step = step


def _removed_message(step: int, directory: str, steps: list[int]) -> str:
  """The words of a `CheckpointRemovedError` for checkpoint `step` of `directory`, with the
  `steps` there now."""
  return (f"checkpoint {step} in {directory} was removed while it was read: a training run "
          "in this workdir keeps only its newest checkpoints (config.max_checkpoints_to_keep). "
          "Run the same command again to read the newest one (a --step, or load_trained's "
          f"step, must name one there now: {steps or 'none'}).")


# How many times `Checkpointer` opens its folder while a training run prunes steps in it.
_OPEN_TRIES = 4
# How long a restore watches a checkpoint that looks damaged, with a newer one beside it, for
# the rest of its removal by a training run (`Checkpointer._being_pruned`).
_PRUNE_WAIT_S = 1.0


def _step_names(directory: str) -> set[str]:
  """The names of the step folders in `directory` (none where it cannot be listed)."""
  try:
    return {n for n in os.listdir(directory) if n.isascii() and n.isdigit()}
  except OSError:
    return set()


def _step_folders(directory: str) -> list[int]:
  """The steps of `directory`'s step folders (`_step_names` that are folders), in order."""
  return sorted(int(n) for n in _step_names(directory)
                if os.path.isdir(os.path.join(directory, n)))


def _pruned_step(error: BaseException, directory: str, listed: set[str]) -> Optional[int]:
  """The step whose folder was removed while Orbax opened `directory` and failed with
  `error`: one of `listed` (`_step_names` before the open) that is gone now, or one that a
  FileNotFoundError or NotADirectoryError behind `error` names and that is gone now (one
  saved and pruned within the open). None where nothing was removed: a step that is there
  but is not a folder (a dangling link, a file) or is damaged."""
  gone = sorted(int(n) for n in listed - _step_names(directory))
  if gone:
    return gone[0]
  step_path = re.compile(re.escape(directory + os.sep) + r"(\d+)(?![\w.-])")
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, (FileNotFoundError, NotADirectoryError)):
      for name in step_path.findall(f"{getattr(error, 'filename', None) or ''} {error}"):
        if not os.path.lexists(os.path.join(directory, name)):
          return int(name)
    error = error.__cause__ or error.__context__
  return None


def _files_below(folder: str) -> Optional[set[str]]:
  """The paths (relative to `folder`) of the files below it, None where it is not a folder;
  a part removed while it is listed is left out."""
  if not os.path.isdir(folder):
    return None
  return {os.path.relpath(os.path.join(root, name), folder)
          for root, _, names in os.walk(folder) for name in names}


def _removed_since(folder: str, before: Optional[set[str]]) -> bool:
  """Whether `folder` is gone, or lacks a file of `before` (`_files_below` of it earlier):
  it is being removed (Orbax's keep-N deletes a step's folder file by file)."""
  return not os.path.isdir(folder) or any(
      not os.path.lexists(os.path.join(folder, name)) for name in before or ())


class Checkpointer:
  """Saves and restores train states (any pytree) of one workdir, with checksums.

  Args:
    workdir: the run's directory.
    max_to_keep: how many of the newest checkpoints to keep.
    create: create the checkpoint directory if missing (False for read-only use: serving).
    model: the config's model section the states are of (training's, serving's), or None.
      Each save records it in the step's folder (`MODEL_RECORD_FILE`, under the checksums),
      and each restore compares it with the one recorded there: a model section edited in
      config.json keeps the weights' shapes where it changes how they are used (a disCVAE's
      `composition`), and was restored and used without a word. The record holds the
      workdir's dataset.json attribute names too, in order (read at the first save that
      finds the file), and a restore compares them with the file's: an edit of their order
      fed each value as another attribute's (a model that takes none, the VAE, records and
      compares no names). None: neither (a checkpoint without a record, or without the
      names, saved by an older version, restores as before).
    ignore: model keys a restore does not compare, besides those `model_differences` leaves
      out (serving: `TRAINING_ONLY_MODEL_KEYS`).

  Raises:
    ConfigError: a `max_to_keep` that is not a positive integer (or None: keep them all).
      Was: 0 deleted every checkpoint as soon as it was saved, without a word; 1.5 a
      TypeError's traceback from Orbax.
    WorkdirError: `workdir/checkpoints` is there but is not a folder (or a link to one), or
      `workdir` is not a path or is empty.
    ConfigError: a `model` that is neither a mapping (a ConfigDict, a dict) nor None (was: a
      TypeError's traceback, "'int' object is not iterable").
  """

  def __init__(self, workdir: str, max_to_keep: Optional[int] = 3, create: bool = True,
               model: Any = None, ignore: Sequence[str] = ()):
    if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(
        max_to_keep, (int, np.integer)) or max_to_keep < 1):
      raise ConfigError(f"max_to_keep={max_to_keep!r}: pass how many of the newest checkpoints "
                        "to keep, a positive integer (config.max_checkpoints_to_keep), or None "
                        "to keep them all.")
    files.check_workdir_arg(workdir)
    if model is not None and not isinstance(model, (ml_collections.ConfigDict, abc.Mapping)):
      raise ConfigError(f"model={model!r:.60} is not a config section; pass the config's model "
                        "section (config.model), or None to record and compare none.")
    self._model = None if model is None else _as_json(model)
    # The attribute names in the order the model is fed them, recorded beside `model` (read
    # from the workdir's dataset.json at the first save that finds it; `_attribute_names`).
    self._attributes: Optional[list[str]] = None
    # Whether `model` takes them at all: a VAE's record holds none, and its restore compares
    # none.
    self._uses_attributes = model is not None and uses_attributes(self._model)
    self._ignore = tuple(ignore)
    self.workdir = os.path.abspath(os.path.expanduser(workdir))
    self.directory = os.path.join(self.workdir, CHECKPOINT_DIR)
    if os.path.lexists(self.directory) and not os.path.isdir(self.directory):
      # Was: listed as no checkpoint, and the first save waited 300 s for Orbax's signal of
      # the step's folder, then raised a TimeoutError (train.py's workdir check names it).
      raise WorkdirError(f"{self.directory} is not a folder; move it out of {self.workdir} "
                         "(it is where the checkpoints go), or use another workdir.")
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=None if max_to_keep is None else int(max_to_keep), create=create,
        async_options=ocp.AsyncOptions(post_finalization_callback=self._sum_finished_save))
    self._unverified_said: set[int] = set()  # Steps restored without checksums, warned of.
    self._checked: dict[int, Optional[str]] = {}  # step -> problem (None: intact).
    self._manager = self._open_manager()
    # The workdir as it is now: a save after it was deleted or moved is refused (was: Orbax
    # made checkpoints/ again under the path, a run without its records; fault hunt). The
    # training loop's metrics writer checks the same watch (`workdir_watch`).
    self._place = (files.WorkdirWatch(self.workdir)
                   if create and os.path.isdir(self.workdir) else None)
    # The steps whose saves may have written at the workdir's path after the watched folder
    # went: the one started since a save last found it in place with every earlier save done.
    self._unsettled: set[int] = set()
    if self._place is not None:
      self._place.leftovers = self._only_leftovers
      self._place.rebuilt = self._rebuilt_steps
    self._unsummed: list[int] = []  # Saved steps whose checksums may not be written yet.
    self._saving: Optional[int] = None  # The step of the save in progress.
    # The step of the save Orbax's thread runs: its callback sums that folder, whatever a wait
    # meanwhile did with `_saving`.
    self._summing: Optional[int] = None
    # The steps this checkpointer saved and has not restored behind since: a save of one of
    # these again is the same state (train_lib's save at a stop), skipped; a step on disk
    # that is not one of them holds other work, which a save must not hide.
    self._saved: set[int] = set()
    self._waiter: Optional[_Waiter] = None  # A wait given a timeout that has not ended.
    self._closed = False  # `close` released the manager: a save has nothing to write with.

  def _open_manager(self) -> Any:
    """Orbax's manager of `self.directory`, which reads every step's metadata as it opens.

    Raises:
      CheckpointError: Orbax cannot open the folder (a step's `_CHECKPOINT_METADATA` damaged
        into JSON it refuses was a ValueError's traceback): the message names the steps whose
        files fail their checksums, and those whose `_CHECKPOINT_METADATA` is not a JSON
        object (an older version's, without checksums: was "a step folder there is
        damaged", naming none; review finding), and says to move them away; or, opened
        to read (`create=False`), a storage error (`files.storage_error`), with its advice.
      OSError: opened to write, a storage error, for training to word with its step.
      CheckpointRemovedError: (a CheckpointError) a step folder was removed while Orbax
        opened the folder (a training run in the workdir keeps only its newest checkpoints),
        `_OPEN_TRIES` times in a row: run the same command again. Was, at the first: "a
        step folder there is damaged or not a checkpoint: move it away" (fault hunt: 2
        opens in 32,600, 2 of 71 load_trained calls, beside a run keeping 1 checkpoint).
    """
    _quiet_orbax_leftovers(self.directory)  # Before the reads that may leave them.
    for attempt in range(_OPEN_TRIES):
      listed = _step_names(self.directory)  # Before Orbax lists them.
      try:
        return ocp.CheckpointManager(self.directory, options=self._options)
      except Exception as e:  # pylint: disable=broad-except
        if isinstance(e, OSError) and files.storage_error(e) is not None:
          if self._options.create:  # Training's: it words a failed write with its step.
            raise
          # Reading (infer.py, the API): one line with the errno's advice (was the OSError's
          # traceback there, a failed disk's EIO too; review finding).
          raise _cannot_read(self.directory, e) from None
        pruned = _pruned_step(e, self.directory, listed)
        if pruned is None:  # Nothing went away meanwhile: the folder's own fault, unless a
          pruned = self._cannot_open(e)  # step goes as its checksums are checked.
        if attempt + 1 == _OPEN_TRIES:
          raise CheckpointRemovedError(
              _removed_message(pruned, self.directory, _step_folders(self.directory)),
                                       first_line(e), pruned) from None
    raise AssertionError("unreachable")  # The last try returns or raises.

  def _cannot_open(self, e: Exception) -> int:
    """Raises the error for a folder Orbax cannot open (`e`) with no step removed meanwhile.

    A step that a training run in the workdir prunes as its checksums are checked (a file of
    it, or its folder, gone since the steps were listed) is not named: it failed them because
    it is going (was: named beside the really damaged step, with a move for it too).

    Returns:
      The step removed during the checks, where every step that failed them was going: the
      caller opens the folder again, as for a step removed while Orbax opened it.
    Raises:
      CheckpointError: naming the steps whose files fail their checksums or whose metadata
        is damaged, with the commands that move them away; or saying that a step folder is
        damaged or not a checkpoint.
    """
    steps = sorted((int(n) for n in os.listdir(self.directory) if n.isdigit()),
                   reverse=True) if os.path.isdir(self.directory) else []
    folder = lambda s: os.path.join(self.directory, str(s))
    before = {s: _files_below(folder(s)) for s in steps}  # To see a removal under way.
    # A folder then, which lost a file or went since (not a file or a link named as a step).
    going = lambda s: before[s] is not None and _removed_since(folder(s), before[s])
    checked = []
    for s in steps:
      try:
        checked.append((s, self.check(s)))
      except CheckpointError:
        if not going(s):  # Unreadable, or not a folder: not a removal.
          raise
    gone = [s for s in steps if going(s)]
    for s in gone:
      self._checked.pop(s, None)  # Not corrupt: going.
    bad = [(s, p) for s, p in checked if p is not None and s not in gone]
    # Steps the checksums do not cover (an older version's) whose metadata Orbax refuses.
    meta = [s for s in steps if s not in dict(bad) and s not in gone
            and _metadata_damaged(folder(s))]
    reason = first_line(e)
    if gone and not bad and not meta:
      return gone[-1]
    if bad or meta:  # Every one, each with where it goes (another file system: within it).
      aside = lambda s: os.path.join(self.workdir,
                                     _aside_name(self.workdir, self.directory, s))
      moves = "; ".join(f"mv {os.path.join(self.directory, str(s))} {aside(s)}"
                        for s in sorted({s for s, _ in bad} | set(meta), reverse=True))
      damaged = lambda where: (f"checkpoint(s) {', '.join(map(str, meta))}{where} have a "
                               f"{_COMMIT_FILES[0]} that is not a JSON object (damaged)")
      if bad:
        step, problem = bad[0]
        also = f" and {damaged('')}" if meta else ""
        what = (f"checkpoint(s) {', '.join(str(s) for s, _ in bad)} in {self.directory} fail "
                f"their checksums (step {step}: {problem}){also}")
      else:
        what = damaged(f" in {self.directory}")
      raise CheckpointError(
          f"{what}, and Orbax cannot open the folder with them ({reason}); move them away "
          f"({moves}) and run the same command again to use the newest intact one.") from None
    raise CheckpointError(f"Orbax cannot open the checkpoints in {self.directory} "
                          f"({reason}); a step folder there is damaged or not a checkpoint: "
                          "move it away and run the same command again.") from None

  def _sum_finished_save(self) -> None:
    """Orbax's post-finalisation callback (its save thread): the checksums of the step being
    saved, written into its folder before Orbax renames it from temporary to final. The step
    is the one this save was started for (`_summing`), not `_saving`: was read from there,
    which a wait cut short by a Ctrl-C had cleared meanwhile, so the step was renamed without
    checksums (fault hunt)."""
    step = self._summing
    if step is None or jax.process_index() != 0:  # One process writes (shared folder).
      return
    final = os.path.join(self.directory, str(step))
    temporary = [os.path.join(self.directory, name) for name in os.listdir(self.directory)
                 if name.startswith(f"{step}{_TMP_MARK}")]
    # A file system without renames (Orbax's commit-file strategy) writes the final folder.
    for folder in temporary or [final]:
      if os.path.isdir(folder):
        self._write_model_record(folder)
        _write_checksums(folder, committed=False)

  def _write_model_record(self, folder: str) -> None:
    """Writes the model section into a step's folder ahead of its checksums, where there is
    one to record and the folder has none yet."""
    path = os.path.join(folder, MODEL_RECORD_FILE)
    if self._model is not None and not os.path.exists(path):
      record: dict[str, Any] = {"model": self._model}
      if self._attributes is not None:
        record["attribute_names"] = self._attributes
      files.atomic_write(path, json.dumps(record, indent=2, sort_keys=True))

  def _attribute_names(self) -> None:
    """Reads the attribute names to record (`_attributes`) from the workdir's dataset.json,
    where they are not known yet: the order the run feeds them to the model (training writes
    the file before its first save, and feeds a resumed run's data in its order). Read once,
    so that a later edit of the file does not change the record; none where the file is
    missing or unreadable (the check of it is the caller's), nor for a model that takes no
    attributes (the VAE: was recorded, and a dataset.json reordered since refused)."""
    if self._model is None or self._attributes is not None or not self._uses_attributes:
      return
    try:
      info = load_dataset_info(self.workdir)
    except ConfigError:
      return
    if info is not None:
      self._attributes = [str(n) for n in info["attribute_names"]]

  def latest_step(self) -> Optional[int]:
    """The newest saved step.

    Returns:
      The step number, or None when the workdir has no checkpoint.
    """
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The saved steps.

    Returns:
      The step numbers, oldest first.
    """
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Starts an asynchronous save of `state` at `step` (a no-op if this checkpointer saved
    that step already, and has not restored an older one since).

    The previous save is finished first (Orbax would wait for it anyway) and its checksums
    written.

    Args:
      step: the training step, the checkpoint's name: an integer of at least 0, or a 0-d
        integer array (a `TrainState`'s `step`).
      state: any pytree of arrays (the `TrainState`).
    Raises:
      CheckpointError: a newer step is saved there already. Orbax saves only steps after
        the newest and skipped this one without a word (a notebook that restored an older
        step and trained on from it lost every save; fault hunt). Or a `step` that is not
        a whole number of at least 0, or a checkpointer that was closed. Or `step` is saved
        there already, by an earlier run or before this checkpointer restored an older step
        (was: skipped without a word, so the new state was lost and a restore gave the old
        one; review finding). Or a `state` without arrays, or with a leaf that is not an
        array or a number, or is empty (the message names its path); nothing is written
        then (was: Orbax's ValueError, "Found empty item" or "Unsupported type", from its
        save, which left a temporary folder behind).
      WorkdirError: the workdir was deleted, moved or replaced since this checkpointer was
        made (`files.WorkdirWatch`); nothing is written then.
    """
    if self._closed:  # Was: Orbax's RuntimeError, and a screen of its threads' tracebacks.
      raise CheckpointError(f"this Checkpointer of {self.workdir} was closed; make a new one "
                            "(checkpoints.Checkpointer(workdir)) to save again.")
    # Was: `state.step` (a jax.Array) a TypeError's traceback, after Orbax had started the
    # save, and every later call of the checkpointer (close too) the same; 2.0 saved as a
    # folder "2.0" that no later start lists; -1 as "-1" (fault hunt).
    step = _step_number(step, self.directory, self.all_steps, saving=True)
    _check_savable(state)
    self._check_place(f"the checkpoint of step {step}")
    self.wait()
    # Again after the wait: the saves before are done, in the folder still in place.
    self._check_place(f"the checkpoint of step {step}")
    self._unsettled.clear()
    steps = self._manager.all_steps()
    if step not in self._saved and any(s >= step for s in steps):
      # The folders as they are now, not as Orbax listed them: the step folders that the
      # refusals below say to move out may be gone (was: refused again after the move).
      try:
        self._manager.reload()
        steps = self._manager.all_steps()
      except Exception:  # pylint: disable=broad-except
        pass  # Its list as it was: the refusal below names what is there.
    if step in steps and step in self._saved:
      return  # The same state again (a stop right after the step's checkpoint).
    if step in steps:
      folder = os.path.join(self.directory, str(step))
      raise CheckpointError(
          f"cannot save step {step} in {self.directory}: {folder} holds a checkpoint of that "
          "step saved before (by an earlier run, or before this checkpointer restored an "
          f"older step), and a save never overwrites one; to save this state as step {step}, "
          f"move that step folder out of {self.directory} first (it keeps the old state), or "
          "save into a new workdir.")
    newer = sorted(s for s in steps if s > step)
    if newer:
      raise CheckpointError(
          f"cannot save step {step} in {self.directory}: it holds newer checkpoints "
          f"({', '.join(map(str, newer))}), and a save goes after the newest; move those "
          "step folders out of it first (to train on from this state), or save into a new "
          "workdir.")
    self._attribute_names()  # Before the save: its thread writes them into the record.
    self._saving = self._summing = step
    self._unsettled.add(step)
    # The marker says this version saved it, so that its checksum file must be there
    # (`check`): deleting that file turned the verification off.
    self._manager.save(step, args=ocp.args.StandardSave(_on_one_device(state)),
                       custom_metadata={_SUMMED_MARK: CHECKSUM_FILE})
    self._saved.add(step)
    self._unsummed.append(step)

  def wait(self, timeout_s: Optional[float] = None) -> bool:
    """Waits for the save in progress; writes the checksums of any finished save that has
    none yet (its save thread writes them before the folder gets its step's name).

    Args:
      timeout_s: stop waiting after this many seconds (None: wait for it). A process of a
        multi-host run that leaves on an error passes a bound: its save finishes only when
        every process reaches Orbax's barrier, and a peer can be held in a collective that
        waits for this one (on jaxlib 0.7.2 the peer's own save waits behind that collective
        too), so an unbounded wait would hang every process.
    Returns:
      True when nothing is pending; False when the save is still in progress after
      `timeout_s` (one warning says so; a save that never finishes stays in a temporary
      folder, which no restore reads).
    Raises:
      WorkdirError: the workdir was deleted, moved or replaced since this checkpointer was
        made, seen as the save failed or once it finished.
      Exception: what the save raised.
      KeyboardInterrupt: a Ctrl-C while it waits; the save goes on, and the next `wait` (or
        `close`) waits for it and writes its checksums.
    """
    if self._waiter is None and self._saving is None:
      self._finish_saves()  # No save under way: the checksums of the finished ones only.
      return True
    if self._waiter is None:
      # On a thread of its own, also without a bound: a Ctrl-C here stops this wait, never
      # Orbax's join of its save thread, and the next wait (close's) waits for the same
      # save. Was: on Python 3.11 a join that an interrupt cut short returns at once ever
      # after while the thread runs on, so close's wait took the save for finished, and the
      # step was renamed without its checksums, then moved aside as corrupt (fault hunt).
      self._waiter = _Waiter(self._finish_saves, self._saving)
    elif self._waiter.late and timeout_s is not None:
      return False  # Given its time once already (and said so).
    if not self._waiter.finished(timeout_s):
      self._waiter.late = True
      logging.warning("stopped waiting for the checkpoint of step %s after %.0f s (it needs "
                      "every process); if it stays unfinished, a new start resumes from the "
                      "one before it", self._waiter.step, timeout_s)
      return False
    waiter, self._waiter = self._waiter, None
    if waiter.failed():
      self._settle_failed_save()
      # A save under way as the workdir went: Orbax's NOT_FOUND for one of its files, said
      # as the workdir's fate instead.
      self._check_place_after_failure(waiter.step, waiter.error)
    waiter.result()
    # Finished: in the workdir still, or the run's end and stops would say it saved (review:
    # a workdir deleted during the last save went unnoticed, the step made again at the path).
    self._check_place(f"the end of the checkpoint of step {waiter.step}")
    return True

  def _check_place(self, doing: str) -> None:
    """`files.WorkdirWatch.check` of the workdir, where this checkpointer saves."""
    if self._place is not None:
      self._place.check(doing)

  def _check_place_after_failure(self, step: Optional[int], error: BaseException) -> None:
    """`_check_place` after the save of `step` failed with `error`. An rm -rf takes the
    files inside a folder before the folder itself, so a save can fail on a missing file
    while the workdir and its lock file still stand: where `error` is a missing file's, the
    removal is given up to `_REMOVAL_GRACE_S` to reach them (was: Orbax's NOT_FOUND as a
    traceback in two of four runs that removed the workdir; review of 5a67595)."""
    doing = f"the checkpoint of step {step} was finished"
    if self._place is not None and _missing_file_error(error):
      deadline = time.monotonic() + _REMOVAL_GRACE_S
      while time.monotonic() < deadline:
        self._check_place(doing)
        time.sleep(0.05)
    self._check_place(doing)

  @property
  def workdir_watch(self) -> Optional[files.WorkdirWatch]:
    """The watch of the workdir that this checkpointer checks before each save (None: it
    was made with `create=False`, or is closed): a metrics writer of the same run is given it
    (`metrics.MetricWriter(watch=...)`), so that both know what this checkpointer's saves may
    have written at the workdir's path after the folder went."""
    return self._place

  def _own_saves_at(self, path: str) -> list[str]:
    """The step folders (finished or temporary) in the folder `path` (at the workdir's path:
    another folder, or the workdir emptied of its lock file) where it holds nothing but
    `CHECKPOINT_DIR`, and that nothing but folders of saves this checkpointer ran as the
    workdir went or after (`_unsettled`): what Orbax's thread may have written there again;
    [] otherwise (an empty folder too)."""
    try:
      if os.listdir(path) != [CHECKPOINT_DIR]:
        return []
      inner = os.path.join(path, CHECKPOINT_DIR)
      names = os.listdir(inner)
    except OSError:
      return []
    if not all(_leftover_step(n) in self._unsettled and os.path.isdir(os.path.join(inner, n))
               and not os.path.islink(os.path.join(inner, n)) for n in names):
      return []
    return names

  def _only_leftovers(self, path: str) -> bool:
    """Whether `path` holds only temporary folders of this checkpointer's saves
    (`_own_saves_at`), which the take-back removes. One holding a finished step folder is
    not (it may be a copy the user put back: kept, and named by the watch's line,
    `_rebuilt_steps`)."""
    names = self._own_saves_at(path)
    return bool(names) and all(_TMP_MARK in n for n in names)

  def _rebuilt_steps(self, path: str) -> list[int]:
    """The finished step folders among `_own_saves_at(path)`: a save under way as the
    workdir went is finished there by Orbax's thread, without the files it wrote before."""
    return sorted(int(n) for n in self._own_saves_at(path) if _TMP_MARK not in n)

  def _settle_failed_save(self) -> None:
    """After a save failed and its waiter's thread took the error: Orbax raises a failed
    save's error once in each thread that waits for it, so each later wait on a new waiter's
    thread, `save` and `close` raised it again, and the checkpointer could not save any more
    (read-through). Its save thread has ended, so this thread's wait takes the error at once
    (dropped: the waiter's is raised), and the checksums of the saves that did finish follow,
    as the next wait wrote them before waits ran on a thread of their own."""
    for attempt in range(2):
      try:
        self._finish_saves()
        return
      except Exception:  # pylint: disable=broad-except  (the save's error, raised once here)
        if attempt:
          self._saving, self._unsummed = None, []

  def _finish_saves(self) -> None:
    """`wait`'s work (on a `_Waiter`'s thread while a save is under way): Orbax's wait,
    then the checksums."""
    self._manager.wait_until_finished()
    self._saving = None
    saved = set(self._manager.all_steps())
    if jax.process_index() != 0:  # One process writes the checksums of the shared folder.
      self._unsummed = []
    for step in self._unsummed:
      folder = os.path.join(self.directory, str(step))
      if step in saved and os.path.isdir(folder):  # Old ones may be gone (max_to_keep).
        self._write_model_record(folder)  # Where the callback failed before writing it.
        _write_checksums(folder)  # Adds the files of the commit (all, if the callback failed).
        self._checked[step] = None
    self._unsummed = []

  def summed(self, step: int) -> bool:
    """Whether checkpoint `step` has its checksum file.

    Args:
      step: a saved step.
    Returns:
      True when `CHECKSUM_FILE` is in its folder (then `check` compares every file).
    """
    return os.path.isfile(os.path.join(self.directory, str(step), CHECKSUM_FILE))

  def mark_corrupt(self, step: int, problem: str) -> None:
    """Records that checkpoint `step` is corrupt, for `check` and `newest_intact_step`: the
    caller found a checkpoint without checksums that Orbax could not restore.

    Args:
      step: a saved step.
      problem: what is wrong, e.g. "it has no checksums and could not be restored (...)".
    """
    self._checked[step] = problem

  def check(self, step: int) -> Optional[str]:
    """Compares the files of checkpoint `step` with the checksums written after its save.

    Args:
      step: a saved step (an integer).
    Returns:
      None when the files are intact or the checkpoint has no checksums and was saved by an
      older version (see the module docstring) and has not been `mark_corrupt`ed; otherwise what is
      wrong, e.g. "file default/d/3f2a changed since it was saved".
    Raises:
      InputError: `step` is not an integer (was: "3" checked as the folder "3", 3.0 answered
        as 3).
      CheckpointError: no checkpoint of `step` is there (was: None, "intact"; the message
        lists the steps there), or its files cannot be read (permissions, the disk).
    """
    step = check_int(step, "step", usage=f"check takes a saved step of {self.directory}")
    folder = os.path.join(self.directory, str(step))
    if not self._known(step):
      try:
        names = os.listdir(self.directory)
      except OSError:  # Missing (nothing saved yet), or unreadable: no steps to name.
        names = []
      steps = sorted(int(n) for n in names if n.isdigit() and n == str(int(n))
                     and os.path.isdir(os.path.join(self.directory, n)))
      raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; the steps "
                            f"there are {steps or 'none'}.")
    if step not in self._checked:
      path = os.path.join(folder, CHECKSUM_FILE)
      try:
        expected = files.read_digests(path)
        # A step's folder and nothing in it (a save that wrote nothing, a folder made by
        # hand): was restored, and Orbax's complaint about multiple items named the cause.
        # A folder that cannot be listed raises (os.walk would skip it as empty).
        empty = expected is None and os.path.isdir(folder) and not any(
            names for _, _, names in os.walk(folder, onerror=_raise))
      except ValueError:
        self._checked[step] = f"its checksum file {CHECKSUM_FILE} is unreadable"
        return self._checked[step]
      except OSError as e:  # Permissions or the disk: not the checkpoint's bytes.
        raise _cannot_read(path, e) from None
      if empty:
        self._checked[step] = "its folder holds no files"
        return self._checked[step]
      if expected is None:
        # Saved by this version (its metadata's marker): the file was deleted, and the
        # checkpoint is not trusted; saved by an older one: restored with a warning.
        self._checked[step] = (f"its checksum file {CHECKSUM_FILE} is missing"
                               if _has_summed_mark(folder) else None)
        return self._checked[step]
      if not expected:  # Was: verified, as no listed file differed (a file emptied by hand?).
        self._checked[step] = f"its checksum file {CHECKSUM_FILE} lists no files"
        return self._checked[step]
      try:
        got = _file_digests(folder)
      except OSError as e:  # Was: a traceback (a dangling link, a file removed mid-walk).
        if e.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
          # Permissions, the disk, a network file system's passing error: not the
          # checkpoint's bytes, so nothing is moved (and nothing kept: it is asked again).
          raise _cannot_read(folder, e) from None
        rel = os.path.relpath(e.filename, folder) if e.filename else "?"
        self._checked[step] = f"file {rel} cannot be read ({e.strerror or e})"
        return self._checked[step]
      self._checked[step] = files.compare_digests(expected, got, "saved")
    return self._checked[step]

  def _known(self, step: int) -> bool:
    """Whether `check` has an answer for `step`: one given before (`mark_corrupt`'s too), or
    its folder is there."""
    return step in self._checked or os.path.isdir(os.path.join(self.directory, str(step)))

  def find_intact(self) -> tuple[Optional[int], list[tuple[int, str]]]:
    """The newest checkpoint that passes `check`, and the corrupt ones newer than it; logs
    and moves nothing.

    Returns:
      (step or None when none is intact, [(step, problem)] newest first).
    """
    corrupt = []
    for step in reversed(self.all_steps()):
      if not self._known(step):  # Gone since Orbax listed it (process 0 moved it aside).
        continue
      problem = self.check(step)
      if problem is None:
        return step, corrupt
      corrupt.append((step, problem))
    return None, corrupt

  def newest_intact_step(self, quarantine: bool = False, quiet: bool = False
                         ) -> Optional[int]:
    """The newest checkpoint whose files pass `check`; logs one warning per corrupt one.

    Args:
      quarantine: move each corrupt checkpoint newer than the intact one out of the way, to
        `workdir/corrupt_checkpoints/<step>` (training does, so that its steps are saved
        afresh; serving only reads).
      quiet: no warnings (a check ahead of a restore, which gives them).
    Returns:
      The step, or None when there is no checkpoint.
    Raises:
      CheckpointError: there are checkpoints but none is intact (nothing is moved then).
    """
    step, corrupt = self.find_intact()
    if quarantine:
      # Process 0's findings on every process: another one that looks after process 0 has
      # moved a corrupt step aside finds none, and was: it skipped the shared steps below,
      # and process 0 waited at the barrier for it (review finding).
      step, corrupt = json.loads(distributed.value_of_process_0(
          "the corrupt checkpoints", json.dumps([step, corrupt])))
      corrupt = [(int(bad), problem) for bad, problem in corrupt]
    if step is None:
      if corrupt:
        step, problem = corrupt[0]
        raise CheckpointError(
            f"checkpoint {step} in {self.directory} is corrupt ({problem}) and no older "
            "checkpoint is intact; move that folder away to start from scratch, or use a new "
            "--workdir.")
      return None
    for bad, problem in corrupt:
      where = ""
      if quarantine:
        # Process 0's name for it on every process (was: the next free name where process 0
        # had moved it already, so another process's warning named a folder not there),
        # relative to the workdir, which each host may mount at its own path.
        target = os.path.join(self.workdir, distributed.value_of_process_0(
            "where a corrupt checkpoint goes", _aside_name(self.workdir, self.directory, bad)))
        if distributed.is_main():  # Every process found it; one moves it (shared workdir).
          _move_aside(os.path.join(self.directory, str(bad)), target, problem)
        where = f" and was moved to {target}"
      if not quiet:
        logging.warning("checkpoint %d is corrupt (%s)%s; %s step %d", bad, problem, where,
                        "resuming from" if quarantine else "using", step)
    if corrupt and quarantine:
      distributed.barrier("a2i_quarantine")  # The others wait until process 0 has moved it.
      self._manager.reload()
    return step

  def restorable_step(self, step: Optional[int] = None, quiet: bool = False) -> int:
    """The step `restore` reads, its checksums checked: `step`, or the newest intact one.

    Args:
      step: a step; None for the newest one whose checksums match (a corrupt newer one gets
        one warning line).
      quiet: no warnings (a check ahead of the restore, which gives them).
    Returns:
      The step.
    Raises:
      CheckpointError: no checkpoint (of `step`), or `step` corrupt, or none intact, or a
        `step` that is not an integer (was: a float 2000.0 "could not be restored", with the
        advice to delete the folder, a string "2000" "no checkpoint for step 2000" beside
        steps that held it, and True restored as step 1's folder "True").
      CheckpointRemovedError: a `step` listed here was removed while it was checked (a
        training run keeping its newest checkpoints; was: "no checkpoint for step N", or
        "corrupt" for a file gone mid-read).
    """
    return self._restorable(step, quiet)[0]

  def _restorable(self, step: Optional[int], quiet: bool) -> tuple[int, Optional[set[str]]]:
    """`restorable_step`'s step, and `_files_below` its folder as it was checked."""
    steps = self.all_steps()
    step = None if step is None else _step_number(step, self.directory, lambda: steps)
    if step is None:
      if not steps:
        raise CheckpointError(f"no checkpoint in {self.directory}; train first with "
                              "python train.py --config=... --workdir=<this workdir>.")
      step = self.newest_intact_step(quiet=quiet)
      return step, _files_below(os.path.join(self.directory, str(step)))
    if step not in steps:
      raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; the steps "
                            f"there are {steps or 'none'}.")
    folder = os.path.join(self.directory, str(step))
    before = _files_below(folder)  # A file of these gone after the check: being removed.
    try:
      problem = self.check(step)
    except CheckpointError as e:
      if _removed_since(folder, before):  # Listed, then gone (was "no checkpoint for step").
        raise self._removed(step, first_line(e)) from None
      raise
    if problem is not None and self._being_pruned(step, problem, folder, before):
      raise self._removed(step, problem)  # Not corrupt: going.
    if problem is not None:
      intact = [s for s in steps if s != step and self.check(s) is None]
      # The step to pass named (was "the newest intact checkpoint is step N" alone).
      hint = (f"the newest intact checkpoint is step {intact[-1]}: use it (infer.py "
              f"--step={intact[-1]}, load_trained's step={intact[-1]}), or move {step} away"
              if intact else "no checkpoint there is intact")
      raise CheckpointError(f"checkpoint {step} in {self.directory} is corrupt ({problem}); "
                            f"{hint}.")
    return step, before

  def _being_pruned(self, step: int, problem: str, folder: str,
                    before: Optional[set[str]]) -> bool:
    """Whether checkpoint `step`, in which `check` found `problem`, is being removed: its
    folder lost a file of `before` (`_files_below` it before the check), or went. Where a
    newer step is there (a training run prunes only the older ones) and files are missing
    (a removal changes no file's bytes), that is watched for up to `_PRUNE_WAIT_S`: a pruner
    stalled on a busy host after its first file left a folder that looked damaged (was:
    "checkpoint 120 ... is corrupt (file _CHECKPOINT_METADATA is missing); no checkpoint there
    is intact", 1 in 249 load_trained calls beside a run keeping 1 checkpoint on 2 cores)."""
    newer = "changed since" not in problem and any(  # `files.compare_digests`' words.
        int(n) > step for n in _step_names(self.directory))
    deadline = time.monotonic() + (_PRUNE_WAIT_S if newer else 0.0)
    while not _removed_since(folder, before):
      if time.monotonic() >= deadline:
        return False
      time.sleep(0.02)
    return True

  def _removed(self, step: int, reason: str) -> CheckpointRemovedError:
    """The error for checkpoint `step`, removed while it was read; the manager reloaded, so
    that `latest_step` names the newest one there now."""
    self._checked.pop(step, None)  # Not corrupt: gone.
    listed = _step_names(self.directory)
    try:
      self._manager.reload()  # Orbax reads every step's metadata again, as at the open.
      steps = self.all_steps()
    except Exception as e:  # pylint: disable=broad-except
      # Another step pruned meanwhile (was: Orbax's NotADirectoryError's traceback, "Path is
      # not a directory: .../checkpoints/161", from load_trained beside a run keeping 1
      # checkpoint, 1 in 270 loads on the oldest pins; fault hunt): opened afresh.
      if _pruned_step(e, self.directory, listed) is None:
        self._cannot_open(e)
      try:
        manager = self._open_manager()
      except CheckpointRemovedError:  # Pruned at every try: the steps on disk named.
        manager = None
      if manager is not None:
        self._manager.close()
        self._manager = manager
        steps = self.all_steps()
      else:
        steps = _step_folders(self.directory)
    return CheckpointRemovedError(_removed_message(step, self.directory, steps), reason, step)

  def restore(self, abstract_state: Any, step: Optional[int] = None,
              partial: bool = False) -> Any:
    """Restores the checkpoint at `step` (default: the newest intact one), checksums first.

    Args:
      abstract_state: a pytree of `jax.ShapeDtypeStruct` like the state, with the shardings to
        restore to (`with_sharding`); a leaf without one is restored replicated over all
        devices. With `partial`, a dict holding some of the saved state's top-level entries
        (e.g. the model variables {"params", "batch_stats"} of a saved train state).
      step: which step (an integer, or a 0-d integer array such as a `TrainState`'s step);
        None for the newest one whose checksums match (a corrupt newer one gets one warning
        line).
      partial: read only the entries of `abstract_state`; the rest of the checkpoint (e.g.
        the optimiser state) is never read (Orbax's `partial_restore`).
    Returns:
      The restored state, laid out as `abstract_state` says.
    Raises:
      CheckpointError: no such checkpoint, a corrupt one, or files Orbax cannot read.
      CheckpointRemovedError: (a CheckpointError) the checkpoint was removed while it was
        checked or read, by a training run in the workdir that keeps only its newest ones
        (was: "could not be restored ... if it is corrupt, delete that folder"): a caller
        that asked for the newest may ask `latest_step` again and retry.
      ConfigError: the checkpoint records another model section than this checkpointer's
        `model` (one that keeps the arrays' shapes: a restore that does not fit them raises
        the CheckpointError, naming the recorded values too), or other attribute names, or
        the same in another order, than the workdir's dataset.json lists (edited since the
        save: its values would be fed to the model as other attributes'), or dataset.json
        is unreadable; with a `model` only.
    """
    step, before = self._restorable(step, quiet=False)
    folder = os.path.join(self.directory, str(step))
    summed = before is not None and CHECKSUM_FILE in before  # As checked (it may go since).
    abstract_state = _with_shardings(abstract_state)
    if partial:
      restore_args = jax.tree_util.tree_map(
          lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape,
                                         dtype=a.dtype), abstract_state)
      args = ocp.args.PyTreeRestore(item=abstract_state, restore_args=restore_args,
                                    partial_restore=True)
    else:
      args = ocp.args.StandardRestore(abstract_state)
    try:
      restored = self._manager.restore(step, args=args)
    except BaseException as e:  # Orbax raises many types for unreadable or mismatched files.
      # A failed or interrupted restore leaves Orbax coroutines that print their tracebacks
      # when collected (up to 1,800 lines from a notebook's load_trained, and 160-380 after a
      # notebook's stop button; the entry points dropped them already): dropped for every
      # caller from then on, but only after a failure (the filter also drops any "Event loop
      # is closed" error, which a notebook's own asyncio code may raise: a review of the first
      # fix, which installed it at every restore). asyncio's reports of its reads are dropped
      # from the open on (`_quiet_orbax_leftovers`).
      add_unraisable_handler("quiet_orbax", _orbax_leftover)
      # A Ctrl-C that Orbax wrapped in its own error (its cause), or that an entry point's
      # handler noted, is not a file that cannot be read: raised as the interrupt (was, in a
      # notebook, where no handler notes it: a healthy checkpoint without checksums moved
      # aside as corrupt and the stop ignored, or "the config differs ... use a new
      # --workdir" for one with them; fault hunt).
      stop = interrupts.interrupt_in(e)
      if stop is e or not isinstance(e, Exception):
        raise
      if stop is not None:
        raise stop from None
      reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
      self._reopen()
      if _removed_since(folder, before):  # Pruned by a training run as it was read (was:
        # "if it is corrupt, delete that folder", with Orbax's or TensorStore's words; review).
        raise self._removed(step, reason) from None
      if summed:  # Its bytes are as saved: advice to delete it would lose it.
        fix = ("Its files match their checksums, so the config differs from the one that "
               f"saved it (the model's shape{self._model_note(step)}): use the config it was "
               "trained with, or a new --workdir.")
      else:
        fix = ("If it is corrupt, delete that folder to resume from the previous one; if the "
               "config changed the model's shape, use a new --workdir.")
      raise RestoreError(f"the checkpoint at {folder} could not be restored ({reason}). {fix}",
                         reason) from None
    missing = [jax.tree_util.keystr(path, simple=True, separator="/") for path, leaf in
               jax.tree_util.tree_flatten_with_path(restored)[0]
               if isinstance(leaf, jax.ShapeDtypeStruct)]
    if missing:
      # A partial restore leaves what the checkpoint lacks as the target's placeholders (was:
      # a traceback from the model's first call, for a config.json edited to another model;
      # review). The bytes are as saved: the config differs.
      raise RestoreError(
          f"the checkpoint at {os.path.join(self.directory, str(step))} holds no "
          f"{missing[0]}{f' (nor {len(missing) - 1} more arrays)' if len(missing) > 1 else ''}, "
          "which the config's model has: the config differs from the one that saved it (the "
          f"model's kind or layers{self._model_note(step)}); use the config it was trained "
          "with, or a new --workdir.",
          f"missing {missing[0]}")
    self._check_model(step)
    # A state trained on from this one is another than the saves after it (`save`).
    self._saved = {s for s in self._saved if s <= step}
    # Whether it had checksums when checked, and not for a folder removed since (was: "has no
    # checksum file", for a checkpoint a training run had pruned after the restore; review).
    if not summed and step not in self._unverified_said and not _removed_since(folder, before):
      # Was: used without a word, and the next save's checksums then vouched for its values.
      self._unverified_said.add(step)
      logging.warning("checkpoint %d in %s has no checksum file (%s), so its arrays are not "
                      "verified: saved by a version before checksums, or the file was "
                      "deleted (this version writes it with every save)", step,
                      self.directory, CHECKSUM_FILE)
    return restored

  def _model_differences(self, step: int) -> list[tuple[str, Any, Any]]:
    """`model_differences` between checkpoint `step`'s record and `model` ([]: no record)."""
    recorded = (None if self._model is None
                else recorded_model(os.path.join(self.directory, str(step))))
    return [] if recorded is None else model_differences(recorded, self._model, self._ignore)

  def _model_note(self, step: int) -> str:
    """"; model.width: 0.125 when saved, 0.25 now" where checkpoint `step` records another
    model section than `model` (for the message of a restore that failed), else ""."""
    differences = self._model_differences(step)
    return f"; {describe_model_differences(differences)[0]}" if differences else ""

  def _check_model(self, step: int) -> None:
    """Refuses to use checkpoint `step` (restored) with a model section other than the one it
    records (`model_differences`), or beside a dataset.json of other attributes than it
    records (`_check_attributes`); one without a record passes.

    Raises:
      ConfigError: the message names each key that differs, both values, and the fix.
    """
    differences = self._model_differences(step)
    if differences:
      differ, values, flags = describe_model_differences(differences)
      raise ConfigError(
          f"checkpoint {step} in {self.directory} was trained as another model than the "
          f"config's ({differ}): its weights would compute something they were not trained "
          f"for. Put the \"model\" section of {os.path.join(self.workdir, CONFIG_FILE)} back "
          f"to the values the checkpoint records ({values}): it was edited since the save, "
          "or the checkpoint is another run's. To resume training, pass them too"
          f"{f' ({flags})' if flags else ''}; or train anew in a new --workdir.")
    self._check_attributes(step)

  def _check_attributes(self, step: int) -> None:
    """Refuses to use checkpoint `step` where the attribute names it records (in the order
    its model was fed them) are not those of the workdir's dataset.json, in that order: the
    file is a plain one, and an edit that reordered them fed each value to the model as
    another attribute's. A checkpoint without them, or a workdir without dataset.json, or a
    checkpointer without `model` or whose model takes no attributes (the VAE: was refused
    for a dataset.json reordered consistently, which changes nothing it is fed), is not
    checked.

    Raises:
      ConfigError: the message names the first attribute that differs and the fix; or
        dataset.json is unreadable (`load_dataset_info`).
    """
    folder = os.path.join(self.directory, str(step))
    recorded = recorded_attributes(folder) if self._uses_attributes else None
    info = None if recorded is None else load_dataset_info(self.workdir)
    names = None if info is None else [str(n) for n in info["attribute_names"]]
    if names is None or names == recorded:
      return
    path = os.path.join(self.workdir, DATASET_FILE)
    record = os.path.join(folder, MODEL_RECORD_FILE)
    if sorted(names) == sorted(recorded):
      at = next(i for i, (a, b) in enumerate(zip(recorded, names)) if a != b)
      # The header's columns too (was: the names alone, which the header then refused as an
      # edit, `_check_header_order`; review).
      put = _put_in_order("the checkpoint's order")
      raise ConfigError(
          f"{path} lists the attributes in another order than checkpoint {step} was trained "
          f"with (attribute {at + 1} is {names[at]!r} there, {recorded[at]!r} in the "
          f"checkpoint; its order is in {record}), so values would be fed to the model as "
          "other attributes'; the file was edited, or written anew, since: restore it from a "
          f"copy, or {put}, or {_DELETE_DATASET_FILE}")
    other = sorted(set(names) ^ set(recorded))
    differ = (f"{', '.join(map(repr, other[:5]))}{', ...' if len(other) > 5 else ''} in one "
              "but not the other" if other else "a name listed twice")
    raise ConfigError(
        f"{path} lists other attributes than checkpoint {step} was trained with ({differ}; "
        f"the checkpoint's are in {record}): the file is another run's, or was "
        "edited since; restore this run's dataset.json from a copy, or train anew in a new "
        "--workdir.")

  def _reopen(self) -> None:
    """A fresh Orbax manager in place of one whose restore failed. Orbax fixes a manager's
    single- or multi-item mode on its first save or restore, from the step's folder (one with
    no `default/` inside, e.g. an empty one, makes it multi-item), and every later restore of
    a single item then fails: one unreadable checkpoint must not fail the intact ones."""
    self.wait()
    self._manager.close()
    self._manager = self._open_manager()

  def close(self, timeout_s: Optional[float] = None) -> None:
    """Waits for pending saves (and writes their checksums), then releases the manager.

    Args:
      timeout_s: as `wait`'s; a save still in progress after it keeps the manager open.
    Raises:
      What `wait` raises (the manager is released all the same).
    """
    try:
      if not self.wait(timeout_s):
        return
    except BaseException:
      self._closed = True
      self._manager.close()  # Waits for Orbax's save thread, as before.
      if self._waiter is not None and timeout_s is None:
        # A Ctrl-C stopped the wait above: the save, finished now, gets its commit files'
        # checksums before the caller leaves (a few small files).
        self._waiter.finished(None)
      self._take_back_after_loss()
      raise
    self._closed = True
    self._manager.close()
    self._take_back_after_loss()

  def _take_back_after_loss(self) -> None:
    """After the manager is closed (its save thread done): where a folder at the workdir's
    path (another folder, or the workdir emptied of its lock file by a removal that failed)
    holds only what this checkpointer's saves wrote there after the workdir was deleted,
    moved or emptied (`_only_leftovers`, `files.WorkdirWatch.left_behind`), removes the
    temporary folders of its unfinished saves, then `CHECKPOINT_DIR` where empty, and the
    folder where empty and made by those saves (`WorkdirWatch.path_was_free`): so a moved
    workdir can be moved back where nothing else was left there. Where anything else is
    there (a finished step folder, maybe a copy put back; an empty folder; a lock file; a
    step it never saved: the user's or a new run's), nothing is removed, and the watched
    folder emptied stays. Lets the workdir go."""
    place = self._place
    if place is None:
      return
    try:
      if jax.process_index() == 0 and place.left_behind():
        # The temporary folders of its unfinished saves alone (`_only_leftovers`; a finished
        # step folder there, maybe a copy the user put back, makes it another folder).
        for name in os.listdir(self.directory):
          if _TMP_MARK in name and _leftover_step(name) in self._unsettled:
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        # The folder at the path only where this run's saves made it (nothing stood there
        # when the loss was first seen, or only their leftovers), never the watched folder
        # emptied, nor one the user made again (review).
        made = place.path_was_free and not place.is_in_place()
        files.remove_empty_folders((self.directory, *((self.workdir,) if made else ())))
    except OSError:  # What stands there now is not this run's to clear up.
      pass
    finally:
      self._place = None
      place.close()


def _leftover_step(name: str) -> Optional[int]:
  """The step of a step folder's name in `CHECKPOINT_DIR`, finished ("12") or temporary
  ("12.orbax-checkpoint-tmp..."); None for any other name."""
  head, mark, _ = name.partition(_TMP_MARK)
  if (mark or head == name) and head.isdigit() and head.isascii():
    return int(head)
  return None


# How long a save that failed on a missing file waits for a removal of the workdir under way
# to show (`Checkpointer._check_place_after_failure`).
_REMOVAL_GRACE_S = 2.0


def _missing_file_error(error: BaseException) -> bool:
  """Whether `error` (or one of its causes) says a file or folder is missing: Python's
  FileNotFoundError, or tensorstore's NOT_FOUND under Orbax."""
  return any(isinstance(e, FileNotFoundError) or "NOT_FOUND" in str(e)
             for e in errors.causes(error))


class _Waiter:
  """Runs `fn` on a daemon thread, so that a caller can stop waiting for it (and a process
  that leaves at once does not wait for it either)."""

  def __init__(self, fn: Any, step: Optional[int]):
    self._error: Optional[BaseException] = None
    self.late = False  # A timed wait for it has ended before it did.
    self.step = step  # The save it finishes (`fn` forgets it on the way).
    self._done = threading.Event()

    def run():
      try:
        fn()
      except BaseException as e:  # pylint: disable=broad-except
        self._error = e
      finally:
        self._done.set()
    self._thread = threading.Thread(target=run, name="a2i_checkpoint_wait", daemon=True)
    self._thread.start()

  def finished(self, timeout_s: Optional[float]) -> bool:
    """Whether `fn` has returned or raised, waiting up to `timeout_s` (None: until it has).

    An event `fn`'s thread sets, not the thread's join: on Python 3.11, once a Ctrl-C has cut
    a join short, the next join returns at once and `is_alive` says False while the thread
    still runs."""
    return self._done.wait(timeout_s)

  def failed(self) -> bool:
    """Whether `fn` raised (once it has `finished`)."""
    return self._error is not None

  @property
  def error(self) -> Optional[BaseException]:
    """What `fn` raised (None: nothing, or not yet)."""
    return self._error

  def result(self) -> None:
    """Raises what `fn` raised, if anything."""
    if self._error is not None:
      raise self._error


# A run's own folders: a workdir inside one of them is part of that run, never a run.
RUN_FOLDERS = (CHECKPOINT_DIR, CORRUPT_DIR, "samples", "tensorboard")


def enclosing_run(path: str) -> Optional[str]:
  """The run (a folder with config.json) whose own folders (`RUN_FOLDERS`) hold `path`.

  Args:
    path: a folder, e.g. a workdir given to train.py.
  Returns:
    The run's folder, or None where `path` is in none (a folder beside a run's is not in it).
  """
  for spelled in (os.path.abspath(os.path.expanduser(path)),
                  os.path.realpath(os.path.expanduser(path))):  # Through a link, too.
    child, parent = spelled, os.path.dirname(spelled)
    while parent != child:
      # A run's folder holds its config and checkpoints/ (a folder merely named so beside
      # some config.json is no run's).
      if (os.path.basename(child) in RUN_FOLDERS
          and os.path.isfile(os.path.join(parent, CONFIG_FILE))
          and os.path.isdir(os.path.join(parent, CHECKPOINT_DIR))):
        return parent
      child, parent = parent, os.path.dirname(parent)
  return None


# What a JSON file nested past Python's recursion limit is said to be (json's RecursionError).
_TOO_DEEP = "nested deeper than Python's JSON parser goes"


# Deleting config.json turns off the checks of a resume against the run's config (train_lib's
# `_check_resume_compatible`): restoring it comes first.
# What to do about a damaged config.json (also inference.load_run_config's advice).
DAMAGED_CONFIG_FIX = ("restore it from a copy if you have one; deleting it lets training "
                       "rewrite it from --config, but a resume is then not checked against the "
                       "model and data the checkpoints were trained with.")


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `config` as JSON to `workdir/config.json` atomically, creating the workdir.

  Args:
    workdir: the run's directory.
    config: the experiment config.
  Raises:
    ConfigError: `config` is not a ConfigDict (was: a dict an AttributeError, "'dict' object
      has no attribute 'to_json'"); nothing is written then.
    WorkdirError: `workdir` is not a path (a TypeError from os.path), or is empty.
  """
  files.check_workdir_arg(workdir)
  config_lib.check_is_config(config)
  if distributed.is_main():  # One writer in a multi-host run (docs/design.md §3.6).
    files.atomic_write(os.path.join(workdir, CONFIG_FILE),
                       config.to_json(indent=2, sort_keys=True))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with (so inference needs only the workdir).

  Args:
    workdir: the run's directory.
  Returns:
    The ConfigDict read from `workdir/config.json`.
  Raises:
    ConfigError: a workdir that is no path (or is empty), or no or unreadable config.json.
  """
  files.check_workdir_arg(workdir, ConfigError)  # Was: a TypeError from os.path.
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if not isinstance(saved, dict):
      raise ConfigError(f"the config at {path} is damaged (not a config: it holds "
                        f"{type(saved).__name__} {str(saved)[:60]}); {DAMAGED_CONFIG_FIX}")
    for key in ("model", "data"):  # Was: "it holds dict {'adam_b1': ...", of the whole file.
      if not isinstance(saved.get(key), dict):
        what = ("has no" if key not in saved else
                f"holds {type(saved[key]).__name__} {str(saved[key])[:60]} as its")
        raise ConfigError(f"the config at {path} is damaged (not a config: it {what} \"{key}\" "
                          f"section); {DAMAGED_CONFIG_FIX}")
    return ml_collections.ConfigDict(saved)
  except FileNotFoundError:
    parent = os.path.dirname(os.path.abspath(workdir))
    # A step's folder (checkpoints/2) too: was "not written by train.py", of a run's own
    # checkpoint (fault hunt).
    parent = enclosing_run(workdir) or parent
    if os.path.exists(os.path.join(parent, CONFIG_FILE)):  # Its checkpoints/ or samples/.
      raise ConfigError(f"no config at {path}: {workdir} is inside the run's folder; pass "
                        f"that folder, {parent}.") from None
    if has_checkpoints(workdir):  # Was: "not written by train.py" beside its checkpoints.
      raise ConfigError(f"no config at {path}, beside the run's checkpoints: it was deleted or "
                        "moved; put it back from a copy if you have one (infer.py needs it), "
                        "or resume training with the config it was trained with, which writes "
                        "it again.") from None
    raise ConfigError(f"no config at {path}: this workdir was not written by train.py, or "
                      "training has not started there yet.") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:  # Was: a UnicodeDecodeError.
    raise ConfigError(f"the config at {path} is not valid JSON ({e}); {DAMAGED_CONFIG_FIX}"
                      ) from None
  except RecursionError:  # Was a traceback (fault hunt): '[' * 200000, say.
    raise ConfigError(f"the config at {path} is not valid JSON ({_TOO_DEEP}); "
                      f"{DAMAGED_CONFIG_FIX}") from None
  except IsADirectoryError:
    raise ConfigError(f"the config at {path} is a folder, not a file; {DAMAGED_CONFIG_FIX}"
                      ) from None


def load_checked_config(workdir: str, check: Any) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with, its values checked by `check`.

  The keys it predates are filled in (`config_lib.with_defaults`). A value `check` refuses
  says config.json is damaged (edited by hand), not that the caller's config differs.

  Args:
    workdir: the run's directory.
    check: e.g. `config_lib.check_recorded_values` (a resume's) or
      `config_lib.check_served_values` (serving's); raises for a value that cannot work.
  Returns:
    The config.
  Raises:
    ConfigError: no or unreadable config.json, or one `check` refuses (the message names the
      key, its value, the model values the newest checkpoint records where config.json's
      differ, and `DAMAGED_CONFIG_FIX`).
  """
  config = config_lib.with_defaults(load_config(workdir))
  try:
    check(config)
  except (TypeError, ValueError) as e:  # ConfigError too; a conversion's own error.
    found = newest_recorded_model(workdir)
    differences = [] if found is None else model_differences(found[1], config.model)
    put_back = ""
    if differences:  # The values the weights were trained with, known for certain.
      values = describe_model_differences(differences)[1]
      put_back = (f"checkpoint {found[0]} records its \"model\" section as trained: put "
                  f"{values} back there, or ")
    raise ConfigError(f"the config at {os.path.join(workdir, CONFIG_FILE)} is damaged "
                      f"({first_line(e).rstrip('.')}); {put_back}{DAMAGED_CONFIG_FIX}"
                      ) from None
  return config


def _with_shardings(abstract_tree: Any) -> Any:
  """A restore target whose leaves all have a sharding: their own, or, where a leaf has none,
  replicated over all devices (the layout training saves from; `_on_one_device` hands Orbax a
  CPU state on one device, so the saved sharding is not the one to restore to)."""
  leaves = jax.tree_util.tree_leaves(abstract_tree)
  if all(getattr(a, "sharding", None) is not None for a in leaves):
    return abstract_tree
  replicated = parallel.replicated(parallel.make_mesh())
  return jax.tree_util.tree_map(
      lambda a: a if getattr(a, "sharding", None) is not None
      else jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), abstract_tree)


def with_sharding(abstract_tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """The ShapeDtypeStructs of `abstract_tree`, all laid out with `sharding` (restore target).

  Args:
    abstract_tree: a pytree of arrays or ShapeDtypeStructs.
    sharding: the layout of every leaf.
  Returns:
    The same pytree of `jax.ShapeDtypeStruct` with `sharding`.
  """
  return jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract_tree)


def _header(dataset: Any, data_path: str) -> list[str]:
  """The attribute header as the source has it: the CSV's first row for folder datasets."""
  if "header" in dataset.metadata:
    return list(dataset.metadata["header"])
  csv_path = os.path.join(os.path.expanduser(data_path), "attributes.csv") if data_path else ""
  if dataset.name == "folder" and os.path.isfile(csv_path):
    with open(csv_path, newline="", encoding="utf-8-sig", errors="replace") as f:
      # Its first row that is not blank, as `data.folder` reads it (was the blank row's []).
      return [h.strip() for h in next((row for row in csv.reader(f)
                                       if any(c.strip() for c in row)), [])]
  return list(dataset.attribute_names)


def dataset_info(dataset: Any, data_path: str = "") -> dict:
  """What `dataset.json` records of a dataset: names, kinds and ranges of its attributes, and
  which examples each split holds.

  Args:
    dataset: a `data.Dataset`.
    data_path: `config.data.path` (folder datasets: where attributes.csv is).
  Returns:
    {"name", "attribute_names", "attribute_kinds", "attribute_ranges" ([min, max] per
    attribute over the training split), "header" (folder datasets: the attributes.csv column
    names in file order; otherwise the attribute names)}, and, for the datasets that give
    their examples ids (LFW, CUB, folders: `metadata["split_ids"]`), "split_ids": per split
    {"count", "sha256"} of its example ids (a folder's image file names, LFW's
    `<Name>_<NNNN>`, CUB's image paths; `data.base.ids_fingerprint`), and "split_content":
    per split digests of its images, attributes and masks (`data.base.split_content`). The
    synthetic dataset and datasets made in memory have neither (their splits follow from the
    config, or are the caller's). A folder dataset's record has "data_path" too: the
    absolute path `data_path` named when the record was written.
  """
  attributes = np.asarray(dataset["train"].attributes, np.float64)
  if attributes.size:
    ranges = np.stack([attributes.min(axis=0), attributes.max(axis=0)], axis=1).tolist()
  else:
    ranges = [[0.0, 0.0]] * len(dataset.attribute_names)
  info = {"name": dataset.name, "attribute_names": list(dataset.attribute_names),
          "attribute_kinds": list(dataset.attribute_kinds), "attribute_ranges": ranges,
          "header": _header(dataset, data_path)}
  # Was: not recorded, so a resumed run whose held-out images had moved into training (a
  # folder's rows added or reordered) went on silently (review finding).
  split_ids = dataset.metadata.get(data_base.SPLIT_IDS_KEY)
  if split_ids:  # Under the same key in dataset.json (`data.base.check_same_splits`).
    info[data_base.SPLIT_IDS_KEY] = {k: dict(v) for k, v in split_ids.items()}
    # Was: the ids alone, so a folder of the same file names but other images (a relative
    # config.data.path run from another directory) resumed and was served (review finding).
    # The load's check computed them already (`check_same_splits`).
    info[data_base.SPLIT_CONTENT_KEY] = data_base.split_content(dataset, reuse=True)
  if data_path and dataset.name == "folder":  # Where it was, for check_same_splits' message.
    info["data_path"] = os.path.abspath(os.path.expanduser(data_path))
  return info


def save_dataset_info(workdir: str, dataset: Any, data_path: str = "") -> None:
  """Writes `dataset_info(dataset)` to `workdir/dataset.json` atomically, its header's
  attribute columns in the order of the dataset's attributes (`header_in_order`).

  Args:
    workdir: the run's directory.
    dataset: the `data.Dataset` trained on, its attributes in the order the model is fed them.
    data_path: `config.data.path` (folder datasets).
  """
  if not distributed.is_main():  # One writer in a multi-host run.
    return
  info = dataset_info(dataset, data_path)
  # The header's attribute columns in the order the model is fed them, as `_check_header_order`
  # wants: a resumed run's data were put back in the order its checkpoints record
  # (`train_eval.align_with_record`), which its CSV may no longer have (was: the file order,
  # and that file refused as edited at its next read).
  info["header"] = header_in_order(info["header"], info["attribute_names"])
  files.atomic_write(os.path.join(workdir, DATASET_FILE), json.dumps(info, indent=2))


def load_dataset_info(workdir: str) -> Optional[dict]:
  """The dataset description stored at training (see `dataset_info`).

  Args:
    workdir: the run's directory.
  Returns:
    The dict, or None for runs trained before dataset.json existed.
  Raises:
    ConfigError: the file exists but is not valid JSON (or is a folder), or lacks the
      attribute names, or has ranges that are not one [min, max] pair of numbers per name,
      or lists its attribute names in another order than its header (edited by hand: was
      served and trained on with the values fed as other attributes, without a word).
  """
  path = os.path.join(workdir, DATASET_FILE)
  fix = _DELETE_DATASET_FILE
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
    names = [str(n) for n in info["attribute_names"]]
    # Was: a header or kinds that are not lists of names were a traceback where read.
    for key, want in (("header", None), ("attribute_kinds", len(names))):
      value = info.get(key)
      if value is not None and (not isinstance(value, list)
                                or not all(isinstance(v, str) for v in value)
                                or want is not None and len(value) != want):
        count = "" if want is None else f"{want} "
        raise ValueError(f"{key} must be a list of {count}names, not {str(value)[:60]}")
    ranges = info.get("attribute_ranges", [[0.0, 0.0]] * len(names))
    if len(ranges) != len(names):
      raise ValueError(f"{len(ranges)} attribute_ranges for {len(names)} attribute_names")
    for r in ranges:
      if len(r) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                and math.isfinite(v) for v in r) or r[0] > r[1]:
        raise ValueError(f"attribute_ranges must hold [min, max] pairs of numbers, not {r}")
  except FileNotFoundError:
    return None
  except IsADirectoryError:  # Was a traceback (fault hunt), where config.json's is an error.
    raise ConfigError(f"{path} is a folder, not a file; move it away or {fix}") from None
  except RecursionError:  # Was a traceback (fault hunt).
    raise ConfigError(f"{path} is unreadable ({_TOO_DEEP}); {fix}") from None
  except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
    raise ConfigError(f"{path} is unreadable ({e}); {fix}") from None
  _check_header_order(path, names, info.get("header"), workdir, fix)
  return info


# The last fix of each refusal of a run's dataset.json, and what then happens.
_DELETE_DATASET_FILE = (
    "delete it (training writes it again on its next start; without it, training and "
    "inference take the attributes in the order the newest checkpoint records, or, for "
    "checkpoints of an older version that record none, in the dataset's current order).")


def _put_in_order(order: str) -> str:
  """The advice to put a dataset.json's attributes in `order` ("the checkpoint's order"):
  its names with their kinds and ranges, and its header's attribute columns, which
  `_check_header_order` compares with the names (was: the names alone, advice that led to
  that refusal)."""
  return (f"put its attribute_names in {order}, each attribute_kinds and attribute_ranges "
          "entry moved with its name, and the attribute columns of its header in that order "
          "too (its other columns where they are)")


def header_in_order(header: Sequence[str], names: Sequence[str]) -> list[str]:
  """A header with its attribute columns in the order of `names` (the order the model is fed
  them), its other columns where they are: dataset.json's header as `load_dataset_info`
  wants it.

  Args:
    header: column names (a folder dataset's attributes.csv, in file order).
    names: the attribute names in the order the model is fed them.
  Returns:
    The header, reordered; as it is where it does not hold each name once (another dataset's
    header, or names listed twice).
  """
  wanted = set(names)
  at = [i for i, h in enumerate(header) if h in wanted]
  if len(at) != len(names) or len(wanted) != len(names):
    return list(header)
  ordered = list(header)
  for i, name in zip(at, names):
    ordered[i] = name
  return ordered


def _check_header_order(path: str, names: list[str], header: Optional[list[str]],
                        workdir: str, fix: str) -> None:
  """Refuses a dataset.json (at `path`) whose attribute names are not in the order its header
  has them: `dataset_info` writes both from the data (the header in file order, the names in
  the order the model is fed them), so they disagree only where one was edited.

  Raises:
    ConfigError: naming the first name out of place, the order the newest checkpoint records
      (`recorded_attributes`) where one does, and the fix.
  """
  wanted = set(names)
  order = [h for h in (header or ()) if h in wanted]
  if len(order) != len(names) or len(wanted) != len(names) or order == names:
    return  # No header, or one of other names (the source's columns, renamed since).
  at = next(i for i, (a, b) in enumerate(zip(names, order)) if a != b)
  found = newest_recorded_attributes(workdir)
  if found is not None and sorted(found[1]) == sorted(names):
    # Whichever of the two was edited (was: the names alone, though the header may be the
    # one out of the trained order, advice to keep the order they have; review).
    put = _put_in_order(
        f"the order checkpoint {found[0]} records as trained "
        f"({', '.join(found[1][:at + 2])}{', ...' if len(found[1]) > at + 2 else ''}; all "
        f"in {os.path.join(workdir, CHECKPOINT_DIR, str(found[0]), MODEL_RECORD_FILE)})")
  else:
    put = _put_in_order("the order the model was trained with")
  raise ConfigError(
      f"{path} is damaged: its attribute_names are not in its header's order (its attribute "
      f"{at + 1} is {names[at]!r}, the header's {order[at]!r}), so it was edited since "
      f"training wrote it, and values would be fed to the model as other attributes'; "
      f"restore it from a copy, or {put}, or {fix}")
