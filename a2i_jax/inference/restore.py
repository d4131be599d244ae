"""Restoring a trained model for serving: the model variables alone, no optimiser.

A checkpoint holds the whole train state {step, params, batch_stats, opt_state}
(`ocp.args.StandardSave`, docs/design.md §3.8). Serving needs only the model variables, so
they are read with Orbax's partial restore (`PyTreeRestore(partial_restore=True)`, present
from orbax-checkpoint 0.12.4 on): the optimiser state is never read, and nothing here builds
an optimiser or imports the training code (docs/design.md §2.2).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp

from a2i_jax import checkpoints, config_lib, models, parallel, sampling
from a2i_jax.errors import CheckpointError

_VARIABLE_COLLECTIONS = ("params", "batch_stats")


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A model restored from a workdir: its config, module, variables and step.

  `sample_fn` is the jitted generator, built once here so repeated calls do not recompile;
  `cache` keeps the jitted inference functions built for it, keyed by their options.
  """
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict
  step: int
  sample_fn: Callable
  cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

  @classmethod
  def from_variables(cls, config: ml_collections.ConfigDict, variables: dict,
                     step: int = 0, model: Optional[nn.Module] = None) -> "TrainedModel":
    """Wraps variables held in memory (e.g. freshly initialised, or from a train state).

    Args:
      config: the experiment config the variables belong to.
      variables: {"params", "batch_stats"}.
      step: the training step they come from.
      model: the module (default: `models.create_model(config.model)`).
    Returns:
      The `TrainedModel`.
    """
    model = model or models.create_model(config.model)
    return cls(config, model, variables, int(step), jax.jit(sampling.make_sample_fn(model)))


def restore_variables(workdir: str, abstract_variables: Any,
                      step: Optional[int] = None) -> tuple[Any, int]:
  """Reads the model variables of a workdir's checkpoint, leaving the optimiser state unread.

  This belongs beside `checkpoints.Checkpointer.restore` (same folder, same errors); it lives
  here until checkpoints.py offers a partial restore.

  Args:
    workdir: the run's directory.
    abstract_variables: {"params", "batch_stats"} of `jax.ShapeDtypeStruct` with shardings.
    step: which checkpoint; None for the newest.
  Returns:
    (the variables laid out as `abstract_variables` says, the checkpoint's step).
  Raises:
    CheckpointError: no such checkpoint, or one that cannot be read into this model.
  """
  directory = os.path.join(os.path.abspath(os.path.expanduser(workdir)),
                           checkpoints.CHECKPOINT_DIR)
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
  try:
    steps = list(manager.all_steps())
    if step is None:
      step = manager.latest_step()
      if step is None:
        raise CheckpointError(f"no checkpoint in {directory}; train first with "
                              "python train.py --config=... --workdir=<this workdir>.")
    elif step not in steps:
      raise CheckpointError(f"no checkpoint for step {step} in {directory}; the steps "
                            f"there are {steps or 'none'}.")
    restore_args = jax.tree_util.tree_map(
        lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape,
                                       dtype=a.dtype), abstract_variables)
    try:
      variables = manager.restore(step, args=ocp.args.PyTreeRestore(
          item=abstract_variables, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # Orbax raises many types for unreadable or mismatched files.
      raise CheckpointError(
          f"the checkpoint at {os.path.join(directory, str(step))} could not be restored "
          f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}). If it is "
          "corrupt, delete that folder to use the previous one; if the config changed the "
          "model's shape, the workdir holds another model.") from None
  finally:
    manager.close()
  return dict(variables), int(step)


def load_trained(workdir: str, step: Optional[int] = None) -> TrainedModel:
  """Restores the config and the newest (or `step`'s) checkpoint of a training run.

  Args:
    workdir: the `--workdir` of train.py.
    step: which checkpoint; None for the newest.
  Returns:
    A `TrainedModel` with the variables replicated over all devices. Config keys added to
    the library after the run was trained (e.g. `inference`) take their default values.
  Raises:
    ConfigError / CheckpointError: the workdir has no config or no (readable) checkpoint.
  """
  config = config_lib.with_defaults(checkpoints.load_config(workdir))
  model = models.create_model(config.model)
  abstract = models.abstract_variables(model, config.model)
  abstract = {k: abstract[k] for k in _VARIABLE_COLLECTIONS if k in abstract}
  target = checkpoints.with_sharding(abstract, parallel.replicated(parallel.make_mesh()))
  variables, step = restore_variables(workdir, target, step)
  return TrainedModel.from_variables(config, variables, step, model)
