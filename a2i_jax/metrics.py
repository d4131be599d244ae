"""Scalar logging: TensorBoard event files (tensorboardX, no TensorFlow) and JSON lines."""

from __future__ import annotations

import json
import os
from typing import Mapping

from tensorboardX import SummaryWriter


class MetricWriter:
  """Writes scalars to `workdir/tensorboard` and `workdir/metrics.jsonl`."""

  def __init__(self, workdir: str):
    self._tb = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Appends one row: every scalar to TensorBoard and one JSON line {"step", name: value}.

    Args:
      step: the training step.
      scalars: {name: value}, e.g. {"train/loss": 1234.5}.
    """
    row = {"step": int(step)}
    for name, value in scalars.items():
      value = float(value)
      self._tb.add_scalar(name, value, int(step))
      row[name] = value
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    """Flushes and closes both outputs."""
    self._tb.close()
    self._jsonl.close()


def read_metrics(workdir: str) -> list[dict]:
  """The rows of `workdir/metrics.jsonl`.

  Args:
    workdir: the run's directory.
  Returns:
    One dict per logged row, in order: "step" and the scalars written at that step.
  """
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
