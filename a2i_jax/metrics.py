"""Scalar and image logging: TensorBoard event files (tensorboardX, no TensorFlow) and JSON
lines."""

from __future__ import annotations

import errno
import itertools
import json
import logging
import operator
import os
import time
from collections import abc
from typing import Any, Callable, Mapping, Optional

import numpy as np
from tensorboardX import SummaryWriter

from a2i_jax import distributed, files
from a2i_jax.errors import InputError, WorkdirError
from a2i_jax.inputs import to_uint8

METRICS_FILE = "metrics.jsonl"
# How TensorBoard's writer (tensorboardX's, as TensorFlow's) names its event files in
# WORKDIR/tensorboard: this prefix, then the time (in seconds) and the host, then
# `MetricWriter`'s own ".PID.N" (`_events_suffix`). The folder holds one per writer (per run
# and resume); a run stopped before its first step removes those it added (train_lib).
EVENTS_PREFIX = "events.out.tfevents."
# The largest step TensorBoard's event files hold (a 64-bit signed integer).
MAX_STEP = 2 ** 63 - 1
# tensorboardX warns "NaN or Inf found in input tensor" for every such scalar; a step that is
# not finite is reported by the loop's own error line (train_eval.divergence_error), and the
# eval scalars that may be infinite are recorded as they are on purpose.
_X2NUM_LOGGER = logging.getLogger("tensorboardX.x2num")
# How often `MetricWriter.write` flushes TensorBoard's events (tensorboardX's own default,
# `flush_secs`), so that a live TensorBoard follows the run; `sync` and `close` flush at once.
TENSORBOARD_FLUSH_S = 120.0
# Errors of a sync (`MetricWriter._synced`) that say the disk could not take what was written
# (NFS and other file systems report a failed write there): raised, not a warning.
_LOST_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Numbers the writers of this process, for their event files' names (`_events_suffix`).
_WRITERS = itertools.count(1)


class MetricWriter:
  """Writes scalars to `workdir/tensorboard` and `workdir/metrics.jsonl`, images to the first.

  In a multi-host run only process 0 writes; on the others every method does nothing.

  Args:
    workdir: the run's directory ("~" is the home folder, as `read_metrics` takes it).
    resumed_from: the step a resumed run restarts from: the rows (and TensorBoard events) of
      later steps, written before the previous run stopped, are dropped, so each step has one
      row. None for a fresh run, or to append to the rows there. Either way, lines that are
      not rows (cut short by a kill, or damaged) are dropped, with a warning, and a row at or
      before an earlier row's step (a restart without `resumed_from`) replaces the rows from
      its step on, so that the steps increase (with a warning that counts them).
    watch: the `files.WorkdirWatch` of `workdir` to check before each write, which the
      writer leaves open at its close: the run's checkpointer's (`Checkpointer.workdir_watch`),
      so that both say alike what stands at the workdir's path after it went (a folder that
      only the checkpointer's save under way made there again is not another run's). None:
      a watch of its own.
  Raises:
    WorkdirError: `workdir` is not a path (None, a number) or is empty, or cannot hold a
      run (a file; metrics.jsonl a folder, tensorboard a file; not writable).
    InputError: a `resumed_from` that is not an integer in [0, `MAX_STEP`].
  """

  def __init__(self, workdir: str, resumed_from: Optional[int] = None,
               watch: Optional[files.WorkdirWatch] = None):
    files.check_workdir_arg(workdir)  # Was: None a TypeError from os.path.
    self._active = distributed.is_main()
    if not self._active:
      return
    # Was: "~/run" written to a folder named "~" under the current one, where `read_metrics`
    # ("~" expanded) did not look; a metrics.jsonl folder or a tensorboard file was Python's
    # IsADirectoryError / NotADirectoryError (fault hunt).
    workdir = os.path.abspath(os.path.expanduser(workdir))
    files.check_workdir(workdir, folders=("tensorboard",), plain_files=(METRICS_FILE,))
    self._closed, self._sync_failed, self._folder_synced = False, False, False
    self._path = path = os.path.join(workdir, METRICS_FILE)
    purge, self._last = None, None  # The file's last row, for `write` to merge into.
    if resumed_from is not None:
      resumed_from = _checked_step(resumed_from)
      # TensorBoard drops events from this step on (none can come after `MAX_STEP`).
      purge = resumed_from + 1 if resumed_from < MAX_STEP else None
    if os.path.exists(path):  # Also without `resumed_from` (was: the first new row was
      rows, dropped = _read_rows(path)  # appended to a line cut short, and so lost).
      if dropped:
        logging.warning("dropped %d line(s) of %s that are not metrics rows (cut short by a "
                        "kill, or damaged)", dropped, path)
      history = _one_row_per_step(rows)
      if len(history) < len(rows):  # Was dropped without a word (review): said, as above.
        logging.warning("replaced %d row(s) of %s by a later row of the same or an earlier "
                        "step (the steps went back: a restart without resumed_from, or an "
                        "older version's file), so that each step keeps one row",
                        len(rows) - len(history), path)
      kept = [r for r in history if resumed_from is None or r["step"] <= resumed_from]
      files.atomic_write(path, "".join(_line(r) for r in kept))  # Older NaNs as null too.
      self._last = kept[-1] if kept else None
    # Was: tensorboardX's name alone (the second and the host), opened "wb": a writer made
    # within the same second (a resume right after a stop, one that only evaluates the last
    # step, a test) emptied the earlier one's event file (fault hunt).
    events = os.path.join(workdir, "tensorboard")
    self._tb = SummaryWriter(logdir=events, purge_step=purge,
                             filename_suffix=_events_suffix(events))
    self._tb_at_once = _write_events_at_once(self._tb)
    self._tb_file = _events_file(self._tb) if self._tb_at_once else None
    self._tb_flushed = time.monotonic()
    self._jsonl = open(path, "a", encoding="utf-8")
    # The folder as it is now: a row or a sync after it was deleted or moved is refused
    # (was: written to the deleted file, and lost; `files.WorkdirWatch`). One of another
    # folder's is not used (it would say that folder's fate).
    self._own_place = watch is None or os.path.abspath(watch.workdir) != os.path.abspath(
        workdir)
    self._place = files.WorkdirWatch(workdir) if self._own_place else watch

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Appends one row: every scalar to TensorBoard and one JSON line {"step", name: value},
    a value that is NaN or infinite as null (strict JSON; TensorBoard keeps the value).

    A step that is the file's last row already (a resumed run's first evaluation, at the step
    a previous run logged) is merged into that row, so that each step keeps one row; a step
    before it is refused.

    A row with validation scalars ("val/...": an evaluation's, which a resumed run trusts and
    does not evaluate again) is put on the disk as `sync` does, TensorBoard's events (the
    row's, and the sample images before it) before the line of metrics.jsonl: a kill at any
    moment leaves no evaluation in metrics.jsonl that TensorBoard lacks (was: TensorBoard's
    events waited for the next sync, and a kill meanwhile lost them for good; review).

    Args:
      step: the training step, in [0, `MAX_STEP`] and not before the file's last row.
      scalars: {name: value}, e.g. {"train/loss": 1234.5}; names are strings other than
        "step", values real numbers (NumPy or JAX scalars too).
    Raises:
      InputError: the writer is closed, a step outside [0, `MAX_STEP`] or before the last
        row's, `scalars` not a mapping, a scalar named "step" or one whose value is not a
        single real number; nothing is written then.
      WorkdirError: the workdir was deleted, moved or replaced since the writer was made
        (`files.WorkdirWatch`); nothing is written then.
      OSError: the disk refused the write (a full disk) of TensorBoard's events (at a flush)
        or of the row: the rows before stay as they were, and this one is not read back.
    """
    if not self._active:
      return
    self._check_open()
    row = {"step": _checked_step(step)}
    if not isinstance(scalars, abc.Mapping):  # Was: AttributeError "... has no 'items'".
      raise InputError(f"scalars={scalars!r:.80} is not a mapping; pass {{name: value}}, e.g. "
                       "{\"train/loss\": 1234.5}.")
    if self._last is not None and row["step"] < self._last["step"]:
      # Was appended after the later rows: read back out of order, one step twice.
      raise InputError(f"metrics of step {row['step']} come after those of step "
                       f"{self._last['step']} in {self._path}; a run that restarts from step S "
                       "makes its writer with MetricWriter(workdir, resumed_from=S), which "
                       "drops the rows after S.")
    for name, value in scalars.items():  # All checked before any is written.
      row[name] = _checked_scalar(name, value)
    self._place.check(f"the metrics row of step {row['step']}")
    sync = any(name.startswith("val/") for name in row)
    was_disabled, _X2NUM_LOGGER.disabled = _X2NUM_LOGGER.disabled, True
    try:
      for name, value in row.items():
        if name != "step":
          self._tb.add_scalar(name, value, row["step"])
    finally:
      _X2NUM_LOGGER.disabled = was_disabled
    if sync or (self._tb_at_once
                and time.monotonic() - self._tb_flushed >= TENSORBOARD_FLUSH_S):
      self._flush_events()  # Also for a live TensorBoard.
      self._tb_flushed = time.monotonic()
    if self._last is not None and self._last["step"] == row["step"]:
      row = {**self._last, **row}
      self._jsonl.close()
      rows, _ = _read_rows(self._path)
      rows[-1:] = [row]  # The last row is this step's (this writer wrote or kept it).
      files.atomic_write(self._path, "".join(_line(r) for r in rows))
      self._jsonl = open(self._path, "a", encoding="utf-8")
    else:
      self._jsonl.write(_line(row))
      self._jsonl.flush()
    self._last = row
    if sync:  # TensorBoard's events were synced above, before this line.
      self._sync_jsonl()

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    """Adds an image (e.g. a sample grid) to TensorBoard, beside the scalars.

    Args:
      step: the training step, in [0, `MAX_STEP`].
      name: the image's tag, e.g. "samples".
      image: uint8 [H, W, 3] (or grey [H, W] or [H, W, 1]), or floats in [0, 1].
    Raises:
      InputError: another shape, dtype or range (NaN, [-1, 1], 0 .. 255 floats), a step
        outside [0, `MAX_STEP`], a `name` that is not a string, or a closed writer.
      WorkdirError: the workdir was deleted, moved or replaced since the writer was made.
    """
    if not self._active:
      return
    self._check_open()
    step = _checked_step(step)  # Was: protobuf's "Value out of range" for 2**70.
    if not isinstance(name, str):  # Was: a TypeError from tensorboardX.
      raise InputError(f"name={name!r:.80} is not a string; pass the image's tag, e.g. "
                       "\"samples\".")
    # Was: NaN written as black and floats past 1 wrapped around (tensorboardX casts x * 255
    # to uint8 as it is), and a grey image tensorboardX's AssertionError (fault hunt).
    image = to_uint8(image)  # Refuses NaN, other ranges and dtypes, naming the fix.
    if image.ndim == 3 and image.shape[-1] == 1:  # Grey with its channel axis: taken before.
      image = image[..., 0]
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or not image.size:
      raise InputError(f"write_image takes one image, uint8 [H, W, 3], [H, W, 1] or [H, W]; "
                       f"got shape {image.shape} (visualize.make_grid makes one from a "
                       "batch).")
    self._place.check(f"the image {name!r:.40} of step {step}")
    self._tb.add_image(name, image, step, dataformats="HWC")

  def check_workdir(self, doing: str) -> None:
    """Raises where the workdir was deleted, moved or replaced since the writer was made
    (`files.WorkdirWatch`), before a write of the run's outside this writer (a sample grid):
    `write`, `write_image` and `sync` check it themselves.

    Args:
      doing: what is about to be written, for the message ("the sample grid of step 6").
    Raises:
      WorkdirError: naming what happened to the workdir and what to do.
    """
    if self._active and not self._closed:
      self._place.check(doing)

  def _check_open(self) -> None:
    if self._closed:  # Was Python's "I/O operation on closed file", after TensorBoard's part.
      raise InputError(f"this MetricWriter of {self._path} is closed; make a new one "
                       "(MetricWriter(workdir)) to write more.")

  def sync(self) -> None:
    """Puts every row and event written so far on the disk itself (`os.fsync`), not only in
    the system's cache: the training loop calls it at each checkpoint, so that a power loss
    cannot keep a checkpoint and lose the rows before it (a resume from it would leave those
    steps without a row), and after each evaluation, whose row a resume trusts. Between
    syncs, a crash of the process loses no row of metrics.jsonl (each is flushed as it is
    written), but it may lose TensorBoard's events since the last sync or periodic flush
    (every `TENSORBOARD_FLUSH_S`): they wait in the process until then.

    A file system that cannot sync is said once in a warning, not raised.

    Raises:
      InputError: the writer is closed.
      WorkdirError: the workdir was deleted, moved or replaced since the writer was made.
      OSError: the disk refused the flush (a full disk).
    """
    if not self._active:
      return
    self._check_open()
    self._place.check("the metrics' sync to the disk")
    self._jsonl.flush()  # A full disk raises here, as `write` would.
    self._flush_events()
    self._sync_jsonl()

  def _flush_events(self) -> None:
    """Writes TensorBoard's events held in its file's buffer, then syncs them (`_synced`).

    A write the disk refuses (full: ENOSPC, EDQUOT; or failed: EIO) raises its OSError, as
    metrics.jsonl's does: was said in `_synced`'s warning, and the run went on without its
    events, until a row of metrics.jsonl needed a new block of the disk (fault hunt).
    """
    if self._tb_file is not None:
      self._tb_file.flush()
    self._synced(self._tb.flush, self._tb.logdir)  # TensorBoard's writer syncs as it flushes.

  def _sync_jsonl(self) -> None:
    """`sync`'s part for metrics.jsonl (flushed already): the file, and its folder once."""
    self._synced(lambda: os.fsync(self._jsonl.fileno()), self._path)
    if not self._folder_synced:  # The file's name in its folder, once (review).
      folder = os.path.dirname(self._path)
      self._synced(lambda: files.sync_folder(folder), folder)
      self._folder_synced = True

  def _synced(self, sync: Callable[[], None], what: str) -> None:
    """`sync()` of `what`, where the file system takes it: one that cannot (some network and
    FUSE mounts: EINVAL, ENOTSUP) or fails (EIO) is said once in a warning, not raised: the
    rows are written either way, and the checkpoint after them must not be lost to it
    (review: a raw OSError stopped the run before its save). A full disk (ENOSPC, EDQUOT:
    what was written is not on it) is raised, for the training loop's one error line."""
    try:
      sync()
    except OSError as e:
      if e.errno in _LOST_WRITE_ERRNOS:  # Was the warning below, and the run went on.
        raise
      if not self._sync_failed:
        logging.warning("could not sync %s to the disk (%s); what is written stays, but a "
                        "power loss may lose its last part", what,
                        os.strerror(e.errno) if e.errno else e)
      self._sync_failed = True

  def close(self) -> None:
    """Flushes, syncs (as `sync`) and closes both outputs (both, even when the first fails);
    a second call does nothing."""
    if not self._active or self._closed:
      return
    self._closed = True
    if self._own_place:
      self._place.close()
    try:
      if self._tb_file is not None:  # A full disk raises, as in `sync` (`_flush_events`).
        self._tb_file.flush()
      self._synced(self._tb.close, self._tb.logdir)  # Which syncs TensorBoard's file.
    finally:
      try:
        if not self._jsonl.closed:  # Closed by a merge that failed (a full disk).
          self._jsonl.flush()
          self._synced(lambda: os.fsync(self._jsonl.fileno()), self._path)
      finally:
        self._jsonl.close()


def _write_events_at_once(tb: SummaryWriter) -> bool:
  """Has `tb` write each event into its file as it is added; returns whether it could.

  tensorboardX hands events to a thread of its own, through a queue, and its `flush()`
  flushes only what that thread has taken: events added just before were not in the file
  after it (20 flushes of 20 in a test), so `MetricWriter.sync` did not put them on the disk,
  and a run killed after an evaluation lost its scalars from TensorBoard for good while
  metrics.jsonl kept them (the resume trusts that row; review). Its thread is stopped once
  it has written what it holds (the purge's start event), and `tb` then writes through its
  file's own writer, which takes a lock. A tensorboardX whose writer is built otherwise is
  left as it is, with an INFO line.
  """
  events = getattr(getattr(tb, "file_writer", None), "event_writer", None)
  file, worker = getattr(events, "_ev_writer", None), getattr(events, "_worker", None)
  if not (callable(getattr(file, "write_event", None)) and callable(getattr(worker, "stop",
                                                                           None))):
    logging.info("this tensorboardX writes TensorBoard's events from a thread of its own: a "
                 "crash may lose those of the last %.0f s", TENSORBOARD_FLUSH_S)
    return False
  worker.stop()  # It writes what its queue holds, then ends (close() stops it again: a no-op).
  events.add_event = file.write_event
  return True


def _events_file(tb: SummaryWriter) -> Optional[Any]:
  """The open file (buffered) that `tb` writes its events into, once `_write_events_at_once`
  has stopped its thread; None where this tensorboardX holds it otherwise."""
  events = getattr(getattr(tb, "file_writer", None), "event_writer", None)
  records = getattr(getattr(events, "_ev_writer", None), "_py_recordio_writer", None)
  file = getattr(records, "_writer", None)
  return file if callable(getattr(file, "flush", None)) else None


def _events_suffix(folder: str) -> str:
  """The end of a new writer's event file name in `folder`: ".PID.N", this process's id and
  the writer's number in it (zero-padded, so that the names of one second sort as they were
  made), one that no file there ends with yet.

  tensorboardX names the file by the second and the host alone and opens it "wb": a second
  writer within the same second truncated the first one's file. The process's id tells apart
  the processes of one host at one time (a resume right after a stop), the number the writers
  of one process; the names there already, an earlier process of the same id.
  """
  try:
    names = os.listdir(folder)
  except OSError:  # Not made yet (tensorboardX makes it), or not listable: id and number.
    names = []
  while True:
    suffix = f".{os.getpid():07d}.{next(_WRITERS):06d}"
    if not any(name.endswith(suffix) for name in names):
      return suffix


def _checked_step(step) -> int:
  """`step` as an int: an integer (NumPy or JAX too) in [0, `MAX_STEP`], or an `InputError`
  (was: a step past `MAX_STEP` protobuf's "Value out of range", from inside tensorboardX)."""
  try:
    value = operator.index(step)  # Was int(step): 2.7 logged as step 2.
  except TypeError:
    value = None
  if (value is None or isinstance(step, (bool, np.bool_)) or value < 0
      or value > MAX_STEP):
    raise InputError(f"step={step!r} is not valid; pass the training step, an integer of at "
                     f"least 0 and at most {MAX_STEP} (2**63 - 1, TensorBoard's largest).")
  return int(value)


def _checked_scalar(name, value) -> float:
  """One scalar of a row as a float, or an `InputError` naming it."""
  if not isinstance(name, str) or name == "step":
    # Was: {"step": x} replaced the row's step with a float, and the row was then dropped as
    # damaged when read back: lost without a word (fault hunt).
    raise InputError(f"a scalar is named {name!r}; the row's step is the `step` argument: "
                     "name the scalars with other strings (e.g. \"train/loss\").")
  try:
    array = np.asarray(value)
  except Exception:  # pylint: disable=broad-except  # Anything NumPy cannot take.
    array = np.asarray(None)
  real = array.dtype.kind in "biuf" or array.dtype.name == "bfloat16"
  if not real or array.size != 1:  # Was Python's TypeError or ValueError from float().
    raise InputError(f"scalar {name!r}={value!r:.80} is not one real number; pass a float (of "
                     "an array, its single value: x.item(), or x.mean()).")
  return float(array.reshape(()))


def _one_row_per_step(rows: list[dict]) -> list[dict]:
  """The rows of the latest history, in increasing steps: a row at or before an earlier row's
  step (a run that restarted from a checkpoint without `resumed_from`, or a file of an older
  version) drops the rows after its step and is merged into its step's, as `write` merges.

  Was: kept as they were, so that a resume left one step twice and the steps out of order
  (fault hunt).
  """
  kept: list[dict] = []
  for row in rows:
    while kept and kept[-1]["step"] > row["step"]:
      kept.pop()
    if kept and kept[-1]["step"] == row["step"]:
      kept[-1] = {**kept[-1], **row}
    else:
      kept.append(row)
  return kept


def _line(row: dict) -> str:
  """A row as one line of strict JSON (`files.strict_json`: NaN and infinities as null, which
  jq, JavaScript and pandas' strict modes read; also in rows an older version wrote)."""
  return json.dumps(files.strict_json(row), allow_nan=False) + "\n"


def _is_row(row: object) -> bool:
  """Whether a parsed line is a row `write` could have written: an object whose "step" is an
  integer in [0, `MAX_STEP`] and whose other values are numbers or null (was: a row of step
  -4, or with a string value, kept as a metrics row; a review's finding)."""
  if not isinstance(row, dict):
    return False
  step = row.get("step")
  if not (isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= MAX_STEP):
    return False
  return all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
             for k, v in row.items() if k != "step")


def _read_rows(path: str) -> tuple[list[dict], int]:
  """The rows of a metrics file, NaN and infinities (an older version's NaN / Infinity tokens)
  as None (`files.strict_json`), and how many non-blank lines were not rows: cut short by a
  kill, not UTF-8, JSON nested too deep to parse, or JSON that is not a row (`_is_row`)."""
  rows, dropped = [], 0
  with open(path, "rb") as f:
    for line in f:
      try:
        row = json.loads(line.decode("utf-8"))
      except (ValueError, RecursionError):  # UnicodeDecodeError included; RecursionError:
        row = None  # nested past Python's JSON parser (was a traceback from a resume).
      if _is_row(row):
        rows.append(files.strict_json(row))  # Was: float nan / inf returned for them.
      elif line.strip():
        dropped += 1
  return rows, dropped


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `workdir/metrics.jsonl`.

  Args:
    workdir: the run's directory.
  Returns:
    One dict per logged row, in order: "step" and the scalars written at that step (None for
    one that was NaN or infinite, in an older version's rows too). Lines that are not rows
    (cut short by a kill, or damaged: no integer step in [0, `MAX_STEP`], or a value that is
    not a number or null) are left out.
  Raises:
    WorkdirError: the file is missing or not a file (was Python's FileNotFoundError), or
      `workdir` is not a path (None, a number: was a TypeError from os.path) or is empty.
  """
  files.check_workdir_arg(workdir)
  path = os.path.join(os.path.expanduser(workdir), METRICS_FILE)  # "~/runs/x" too.
  if not os.path.isfile(path):
    raise WorkdirError(f"{path} does not exist (or is not a file): {workdir} is not a "
                       "training run's folder, or its run has not logged a step yet; pass "
                       "the --workdir of train.py.")
  return _read_rows(path)[0]
