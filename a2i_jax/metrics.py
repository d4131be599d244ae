"""Scalar and image logging: TensorBoard event files (tensorboardX, no TensorFlow) and JSON
lines."""

from __future__ import annotations

import json
import logging
import os
from typing import Mapping, Optional

import numpy as np
from tensorboardX import SummaryWriter

from a2i_jax import distributed, files
from a2i_jax.errors import WorkdirError

METRICS_FILE = "metrics.jsonl"
# tensorboardX warns "NaN or Inf found in input tensor" for every such scalar; a step that is
# not finite is reported by the loop's own error line (train_eval.divergence_error), and the
# eval scalars that may be infinite are recorded as they are on purpose.
_X2NUM_LOGGER = logging.getLogger("tensorboardX.x2num")


class MetricWriter:
  """Writes scalars to `workdir/tensorboard` and `workdir/metrics.jsonl`, images to the first.

  In a multi-host run only process 0 writes; on the others every method does nothing.

  Args:
    workdir: the run's directory.
    resumed_from: the step a resumed run restarts from: the rows (and TensorBoard events) of
      later steps, written before the previous run stopped, are dropped, so each step has one
      row. None for a fresh run, or to append to the rows there. Either way, lines that are
      not rows (cut short by a kill, or damaged) are dropped, with a warning.
  """

  def __init__(self, workdir: str, resumed_from: Optional[int] = None):
    self._active = distributed.is_main()
    if not self._active:
      return
    self._path = path = os.path.join(workdir, METRICS_FILE)
    purge, self._last = None, None  # The file's last row, for `write` to merge into.
    if resumed_from is not None:
      purge = resumed_from + 1  # TensorBoard drops events from this step on.
    if os.path.exists(path):  # Also without `resumed_from` (was: the first new row was
      rows, dropped = _read_rows(path)  # appended to a line cut short, and so lost).
      if dropped:
        logging.warning("dropped %d line(s) of %s that are not metrics rows (cut short by a "
                        "kill, or damaged)", dropped, path)
      kept = [r for r in rows if resumed_from is None or r["step"] <= resumed_from]
      files.atomic_write(path, "".join(_line(r) for r in kept))  # Older NaNs as null too.
      self._last = kept[-1] if kept else None
    self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"), purge_step=purge)
    self._jsonl = open(path, "a", encoding="utf-8")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Appends one row: every scalar to TensorBoard and one JSON line {"step", name: value},
    a value that is NaN or infinite as null (strict JSON; TensorBoard keeps the value).

    A step that is the file's last row already (a resumed run's first evaluation, at the step
    a previous run logged) is merged into that row, so that each step keeps one row.

    Args:
      step: the training step.
      scalars: {name: value}, e.g. {"train/loss": 1234.5}.
    """
    if not self._active:
      return
    row = {"step": int(step)}
    was_disabled, _X2NUM_LOGGER.disabled = _X2NUM_LOGGER.disabled, True
    try:
      for name, value in scalars.items():
        value = float(value)
        self._tb.add_scalar(name, value, int(step))
        row[name] = value
    finally:
      _X2NUM_LOGGER.disabled = was_disabled
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

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    """Adds an image (e.g. a sample grid) to TensorBoard, beside the scalars.

    Args:
      step: the training step.
      name: the image's tag, e.g. "samples".
      image: uint8 [H, W, 3].
    """
    if not self._active:
      return
    self._tb.add_image(name, np.asarray(image), int(step), dataformats="HWC")

  def close(self) -> None:
    """Flushes and closes both outputs (both, even when the first fails)."""
    if not self._active:
      return
    try:
      self._tb.close()
    finally:
      self._jsonl.close()


def _line(row: dict) -> str:
  """A row as one line of strict JSON (`files.strict_json`: NaN and infinities as null, which
  jq, JavaScript and pandas' strict modes read; also in rows an older version wrote)."""
  return json.dumps(files.strict_json(row), allow_nan=False) + "\n"


def _read_rows(path: str) -> tuple[list[dict], int]:
  """The rows of a metrics file, and how many non-blank lines were not rows: cut short by a
  kill, not UTF-8, or JSON that is not an object with an integer "step"."""
  rows, dropped = [], 0
  with open(path, "rb") as f:
    for line in f:
      try:
        row = json.loads(line.decode("utf-8"))
      except ValueError:  # UnicodeDecodeError included.
        row = None
      step = row.get("step") if isinstance(row, dict) else None
      if isinstance(step, int) and not isinstance(step, bool):
        rows.append(row)
      elif line.strip():
        dropped += 1
  return rows, dropped


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `workdir/metrics.jsonl`.

  Args:
    workdir: the run's directory.
  Returns:
    One dict per logged row, in order: "step" and the scalars written at that step (None for
    one that was NaN or infinite). Lines that are not rows (cut short by a kill, or damaged)
    are left out.
  Raises:
    WorkdirError: the file is missing or not a file (was Python's FileNotFoundError).
  """
  path = os.path.join(os.path.expanduser(workdir), METRICS_FILE)  # "~/runs/x" too.
  if not os.path.isfile(path):
    raise WorkdirError(f"{path} does not exist (or is not a file): {workdir} is not a "
                       "training run's folder, or its run has not logged a step yet; pass "
                       "the --workdir of train.py.")
  return _read_rows(path)[0]
