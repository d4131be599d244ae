"""Checkpoints: one Orbax CheckpointManager in `workdir/checkpoints`, the config beside it.

Orbax writes each step to a temporary directory and renames it when complete, so a run killed
mid-save never leaves a half-written checkpoint that looks finished; the newest finished one
is what a restart resumes from.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

import jax
import ml_collections
import orbax.checkpoint as ocp

from a2i_jax import files
from a2i_jax.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
_ORBAX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(ocp.__file__))) + os.sep


class QuietOrbaxFilter(logging.Filter):
  """A logging filter that drops Orbax's INFO lines (a few dozen per save); warnings pass.

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
      False for records below WARNING logged from inside the orbax package.
    """
    return record.levelno >= logging.WARNING or not record.pathname.startswith(_ORBAX_DIR)


class Checkpointer:
  """Saves and restores train states (any pytree) of one workdir.

  Args:
    workdir: the run's directory.
    max_to_keep: how many of the newest checkpoints to keep.
    create: create the checkpoint directory if missing (False for read-only use: serving).
  """

  def __init__(self, workdir: str, max_to_keep: int = 3, create: bool = True):
    self.directory = os.path.join(os.path.abspath(os.path.expanduser(workdir)), CHECKPOINT_DIR)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

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
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Starts an asynchronous save of `state` at `step` (a no-op if that step exists).

    Args:
      step: the training step, the checkpoint's name.
      state: any pytree of arrays (the `TrainState`).
    """
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, abstract_state: Any, step: Optional[int] = None,
              partial: bool = False) -> Any:
    """Restores the checkpoint at `step` (default: the newest).

    Args:
      abstract_state: a pytree of `jax.ShapeDtypeStruct` (with shardings) like the state; with
        `partial`, a dict holding some of the saved state's top-level entries (e.g. the model
        variables {"params", "batch_stats"} of a saved train state).
      step: which step; None for the newest.
      partial: read only the entries of `abstract_state`; the rest of the checkpoint (e.g.
        the optimiser state) is never read (Orbax's `partial_restore`).
    Returns:
      The restored state, laid out as `abstract_state` says.
    """
    steps = self.all_steps()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise CheckpointError(f"no checkpoint in {self.directory}; train first with "
                              "python train.py --config=... --workdir=<this workdir>.")
    elif step not in steps:
      raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; the steps "
                            f"there are {steps or 'none'}.")
    if partial:
      restore_args = jax.tree_util.tree_map(
          lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape,
                                         dtype=a.dtype), abstract_state)
      args = ocp.args.PyTreeRestore(item=abstract_state, restore_args=restore_args,
                                    partial_restore=True)
    else:
      args = ocp.args.StandardRestore(abstract_state)
    try:
      return self._manager.restore(step, args=args)
    except Exception as e:  # Orbax raises many types for unreadable or mismatched files.
      raise CheckpointError(
          f"the checkpoint at {os.path.join(self.directory, str(step))} could not be restored "
          f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}). If it is "
          "corrupt, delete that folder to resume from the previous one; if the config changed "
          "the model's shape, use a new --workdir.") from None

  def close(self) -> None:
    """Waits for pending saves, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `config` as JSON to `workdir/config.json` atomically, creating the workdir.

  Args:
    workdir: the run's directory.
    config: the experiment config.
  """
  files.atomic_write(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2, sort_keys=True))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with (so inference needs only the workdir).

  Args:
    workdir: the run's directory.
  Returns:
    The ConfigDict read from `workdir/config.json`.
  Raises:
    ConfigError: no or unreadable config.json.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except FileNotFoundError:
    raise ConfigError(f"no config at {path}: this workdir was not written by train.py, or "
                      "training has not started there yet.") from None
  except json.JSONDecodeError as e:
    raise ConfigError(f"the config at {path} is not valid JSON ({e}); delete it and pass "
                      "--config again.") from None


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
