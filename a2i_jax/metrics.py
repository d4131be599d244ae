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
      row. None for a fresh run.
  """

  def __init__(self, workdir: str, resumed_from: Optional[int] = None):
    self._active = distributed.is_main()
    if not self._active:
      return
    path = os.path.join(workdir, METRICS_FILE)
    purge = None
    if resumed_from is not None:
      purge = resumed_from + 1  # TensorBoard drops events from this step on.
      if os.path.exists(path):
        kept = [r for r in _read_rows(path) if r.get("step", 0) <= resumed_from]
        files.atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept))
    self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"), purge_step=purge)
    self._jsonl = open(path, "a")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Appends one row: every scalar to TensorBoard and one JSON line {"step", name: value}.

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
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()

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


def _read_rows(path: str) -> list[dict]:
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except ValueError:  # A line cut short by a kill: dropped.
        continue
  return rows


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `workdir/metrics.jsonl`.

  Args:
    workdir: the run's directory.
  Returns:
    One dict per logged row, in order: "step" and the scalars written at that step.
  """
  return _read_rows(os.path.join(workdir, METRICS_FILE))
