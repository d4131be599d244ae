"""Restoring a trained model for serving: the model variables alone, no optimiser.

A checkpoint holds the whole train state {step, params, batch_stats, opt_state}
(`ocp.args.StandardSave`, docs/design.md §3.8). Serving needs only the model variables, so
they are read with Orbax's partial restore (`Checkpointer.restore(partial=True)`:
`PyTreeRestore(partial_restore=True)`, present from orbax-checkpoint 0.12.4 on): the
optimiser state is never read, and nothing here builds an optimiser or imports the training
code (docs/design.md §2.2). `load_data` gives the run's dataset as the model trained on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from a2i_jax import (checkpoints, config_lib, distributed, files, memo, models, parallel,
                     sampling)
from a2i_jax.data import Dataset, check_settings, load_dataset
from a2i_jax.data.base import OtherDataError, as_trained, centre_cropped, check_same_splits
from a2i_jax.errors import (CheckpointError, ConfigError, DataError, DatasetNotPreparedError,
                            InputError)
from a2i_jax.inputs import check_int

_VARIABLE_COLLECTIONS = ("params", "batch_stats")
_SHOWN_DIFFERENCES = 3  # How many differing paths an error names.


# Programs built for a module (jitted functions of it alone), shared by the TrainedModels of
# equal modules: Linen modules of equal fields are equal and hash alike.
_SHARED = memo.BoundedCache(32)


def shared_programs(model: nn.Module, key: Any, build: Callable[[], Any]) -> Any:
  """`build()` once per process for an equal module and `key`: the jitted functions a
  TrainedModel keeps (its sampler, its inference programs by their options) come from here,
  so that a checkpoint loaded again, or another checkpoint of the same run, finds them
  compiled (was: compiled again, its first inference call's seconds; docs/design.md §3.14).
  The 32 most recently used are kept (`release_programs` forgets them); a changed
  `models.trace_settings()` builds afresh.

  Args:
    model: the Flax module the programs are built for.
    key: what else they depend on (hashable; e.g. ("infer", static options)).
    build: makes them from `model` and `key` alone, holding no TrainedModel.
  Returns:
    The programs built first for an equal (model, key), or `build()` where the module does
    not hash (a field holding a list, say).
  """
  entry = (model, key, models.trace_settings())  # A changed setting: built afresh.
  try:
    hash(entry)
  except TypeError:
    return build()
  return _SHARED.get(entry, build)


def release_programs() -> None:
  """Forgets the programs `shared_programs` keeps, so that their compiled code is freed once
  no TrainedModel holds them (each keeps its own in `cache`): for a long session that has
  loaded many models, or tuned many sets of inference options."""
  _SHARED.clear()


def _sampler(model: nn.Module) -> Callable:
  """The jitted `sampling.make_sample_fn` of `model`, shared (`shared_programs`)."""
  return shared_programs(model, "sample", lambda: sampling.make_jitted_sample_fn(model))


@dataclasses.dataclass(frozen=True, eq=False)  # Compared and hashed as one object: `==` over
class TrainedModel:  # its arrays raised NumPy's ambiguous truth value (fault hunt).
  """A model restored from a workdir: its config, module, variables and step.

  `sample_fn` is the jitted generator, built once here so repeated calls do not recompile;
  `cache` keeps the jitted inference functions built for it, keyed by their options. Both
  are shared with every TrainedModel of an equal module in the process (`shared_programs`).
  `attribute_names` and `attribute_ranges` ([min, max] of each attribute over the training
  split) are the run's `dataset.json`'s, where it has one; None otherwise (`edit` then cannot
  say that a new value lies outside what the model saw), but for the names of a run without
  it whose checkpoint records them (`checkpoints.recorded_attributes`). `workdir` is the
  run's folder where `load_trained` restored it, as an absolute path (None for
  `from_variables`): `load_data` reads its record there, and `dataset_info` is that record
  as `load_trained` read it, which `load_data` follows whatever the folder holds now (none,
  moved or deleted since; another, a new run trained there).
  """
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict
  step: int
  sample_fn: Callable
  cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
  attribute_names: Optional[tuple[str, ...]] = dataclasses.field(default=None, compare=False)
  attribute_ranges: Optional[tuple[tuple[float, float], ...]] = dataclasses.field(
      default=None, compare=False)
  workdir: Optional[str] = dataclasses.field(default=None, compare=False)
  dataset_info: Optional[Mapping[str, Any]] = dataclasses.field(default=None, compare=False,
                                                                repr=False)

  def __repr__(self) -> str:
    """One line (was every weight: a notebook cell ending in `trained` printed 3,000 lines for
    a tiny model; fault hunt): the model, step, run, parameters and attributes."""
    leaves = jax.tree_util.tree_leaves(self.variables.get("params", {}))
    count = sum(int(np.prod(np.shape(leaf))) for leaf in leaves)
    y_dim = (0 if not self.model.uses_attributes else  # The VAE takes none.
             len(self.attribute_names) if self.attribute_names else self.config.model.y_dim)
    return (f"TrainedModel({self.config.model.name}, step {self.step}, "
            f"workdir={self.workdir!r}, {count:,} parameters, {y_dim} attributes)")

  @classmethod
  def from_variables(cls, config: ml_collections.ConfigDict, variables: dict,
                     step: int = 0, model: Optional[nn.Module] = None) -> "TrainedModel":
    """Wraps variables held in memory (e.g. freshly initialised, or from a train state).

    Args:
      config: the experiment config the variables belong to.
      variables: {"params", "batch_stats"}, e.g. `models.init_variables`' output or a train
        state's {"params": state.params, "batch_stats": state.batch_stats}.
      step: the training step they come from.
      model: the module (default: `models.create_model(config.model)`).
    Returns:
      The `TrainedModel`.
    Raises:
      InputError: variables whose collections, paths or shapes are not the model's
        (`jax.eval_shape` of its initialisation): they belong to another config (model kind,
        width, latent or attribute sizes, image size); or that hold NaN or infinities.
      ConfigError: `config` is not a whole experiment config (a dict, or its model section),
        or its inference section holds a value that cannot work (a batch_size below 1).
    """
    config_lib.check_whole_config(config, "TrainedModel.from_variables", ("model",))
    if "inference" in config:  # Was unchecked: a batch_size of 0 failed at the first call.
      config_lib.check_inference(config.inference)
    model = model or models.create_model(config.model)
    _check_variables(variables, models.abstract_variables(model, config.model), config)
    bad = _nonfinite_variables(variables)
    if bad:
      raise InputError(f"the variables hold NaN or infinite values in {len(bad)} arrays (e.g. "
                       f"{bad[0]}): a model that generates only NaN. Pass the variables of a "
                       "state before the training diverged.")
    if np.shape(step) == () and np.issubdtype(np.asarray(step).dtype, np.integer):
      step = int(np.asarray(step))  # A train state's step (a 0-d array) as it is.
    step = check_int(step, "step", 0)  # Was: 1.5 kept as 1 without a word.
    return cls(config, model, variables, step, _sampler(model))


def inference_batch_size(trained: "TrainedModel") -> int:
  """`trained.config.inference.batch_size`, checked where it is read: a config given to
  `TrainedModel.from_variables`, or edited on a loaded model, with a batch size below 1 was
  "range() arg 3 must not be zero" or a KeyError 'image' from the decoding, and an error
  about a batch_size argument never passed from the posterior inference (review finding).

  Args:
    trained: the model whose config's batch size the call uses.
  Returns:
    The batch size, a positive integer.
  Raises:
    ConfigError: the config has no inference.batch_size, or one that is not a positive
      integer; the message names the key and the fix.
  """
  section = trained.config.get("inference")
  value = section.get("batch_size") if hasattr(section, "get") else None
  try:  # Its type too (None, True, 2.5: `check_inference`).
    config_lib.check_inference({"batch_size": value})
  except ConfigError as e:
    raise ConfigError(f"{str(e).rstrip('.')} (trained.config.inference.batch_size, or the "
                      "config the model was made from; the default is "
                      f"{config_lib.reference_config().inference.batch_size}).") from None
  return int(value)


def _shape(leaf: Any) -> tuple:
  return tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)


def _check_variables(variables: Any, abstract: Mapping, config: ml_collections.ConfigDict
                     ) -> None:
  """Refuses variables that do not fit the model, naming the first few differing paths.

  Args:
    variables: what `TrainedModel.from_variables` was given.
    abstract: the model's variables as `jax.ShapeDtypeStruct` (`models.abstract_variables`).
    config: the config the model was built from, for the message.
  Raises:
    InputError: not a mapping, other collections, or leaves missing, extra, of other
      shapes or not floats.
  """
  name = config.model.name
  wanted = [k for k in _VARIABLE_COLLECTIONS if k in abstract]  # Parameters first.
  fix = ("models.init_variables' output, or a train state's {'params': state.params, "
         "'batch_stats': state.batch_stats}")
  if not isinstance(variables, Mapping):
    raise InputError(f"variables is a {type(variables).__name__}, not a dict of the "
                     f"collections {wanted}; pass {fix}.")
  if set(variables) != set(wanted):
    raise InputError(f"variables hold the collections {sorted(map(str, variables))}; this "
                     f"{name} has {wanted}. Pass all of them: {fix}.")
  flat = lambda tree: {f"{k}/" + jax.tree_util.keystr(path, simple=True, separator="/"):
                       _shape(leaf) for k in wanted
                       for path, leaf in jax.tree_util.tree_flatten_with_path(tree[k])[0]}
  expected, got = flat(abstract), flat(variables)
  reshaped = [p for p in expected if p in got and got[p] != expected[p]]
  missing = [p for p in expected if p not in got]
  extra = [p for p in got if p not in expected]
  if reshaped or missing or extra:
    differ = ([f"{p}: expected {expected[p]}, got {got[p]}" for p in reshaped]
              + [f"{p}: expected {expected[p]}, got nothing" for p in missing]
              + [f"{p}: not in this {name} (got {got[p]})" for p in extra])
    more = len(differ) - _SHOWN_DIFFERENCES
    shown = "; ".join(differ[:_SHOWN_DIFFERENCES]) + (f"; and {more} more" if more > 0 else "")
    raise InputError(f"the variables do not fit this config's {name}: of its {len(expected)} "
                     f"arrays, {len(reshaped)} have other shapes and {len(missing)} are "
                     f"missing, and {len(extra)} given are not in it ({shown}). They belong to "
                     "another config (model kind, width, latent or attribute sizes, image "
                     "size): pass the config they were made with (a run's config.json: "
                     "inference.load_run_config(workdir)).")
  for k in wanted:
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables[k])[0]:
      dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
      if not jax.numpy.issubdtype(dtype, jax.numpy.floating):
        raise InputError(f"the variable {k}/"
                         f"{jax.tree_util.keystr(path, simple=True, separator='/')} is of dtype "
                         f"{dtype}; a model's variables are floats (float32 as initialised or "
                         "restored).")


def _nonfinite_variables(variables: Mapping) -> list[str]:
  """The paths ("params/decoder/Conv_0/kernel") of the arrays holding a NaN or an infinity.

  On the host, in NumPy: no program to compile before the first call (issue 15's cold start);
  tens of milliseconds for the paper models' weights."""
  leaves = jax.tree_util.tree_flatten_with_path(dict(variables))[0]
  return [jax.tree_util.keystr(path, simple=True, separator="/") for path, leaf in leaves
          if not isinstance(leaf, jax.ShapeDtypeStruct)  # Shapes alone: nothing to test.
          and not np.isfinite(np.asarray(_first_copy(leaf), np.float32)).all()]


def _first_copy(leaf: Any) -> Any:
  """A replicated array's copy on this process's first device (the whole array, also where
  the others are on other hosts); anything else as it is."""
  return leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with, with the keys added to the library since filled in.

  Reads only `workdir/config.json`, so callers can check a request against the model (its
  module answers `uses_attributes`, `latent_dims`, ...) before restoring any variables.

  Args:
    workdir: the `--workdir` of train.py.
  Returns:
    The config; keys the run predates (e.g. `inference`) take their default values.
  Raises:
    ConfigError: the workdir is a file, or has no (readable) config.json, or one whose values
      cannot work (a file edited by hand).
  """
  if isinstance(workdir, (str, os.PathLike)):
    workdir = os.path.expanduser(workdir)
  if isinstance(workdir, (str, os.PathLike)) and os.path.isfile(workdir):
    raise ConfigError(f"{workdir} is a file; pass the workdir, the folder train.py's --workdir "
                      "named (it holds config.json and checkpoints/).")
  # Its values checked (was: trusted, and e.g. a width "abc" was a traceback from the model's
  # code), as a resume checks them: a damaged one is named so, with the model values the newest
  # checkpoint records where they differ.
  return checkpoints.load_checked_config(workdir, config_lib.check_served_values)


def _run_identity(workdir: str, step: Optional[int]) -> str:
  """A short hash of a run's config.json and of checkpoint `step`'s checksum file (what
  processes compare before they serve one run together), and the step."""
  digest = hashlib.sha256()
  for path in (os.path.join(workdir, checkpoints.CONFIG_FILE),
               os.path.join(workdir, checkpoints.CHECKPOINT_DIR, str(step),
                            checkpoints.CHECKSUM_FILE)):
    try:
      with open(path, "rb") as f:
        digest.update(f.read())
    except OSError:
      digest.update(b"-")  # Missing: the restore says so, on every process alike.
  return f"step {step}, {digest.hexdigest()[:16]}"


# How many times `load_trained` reads the newest checkpoint again after a training run in the
# workdir pruned the one it was reading (`checkpoints.CheckpointRemovedError`).
_REMOVED_RETRIES = 3


def load_trained(workdir: str, step: Optional[int] = None) -> TrainedModel:
  """Restores the config and the newest (or `step`'s) checkpoint of a training run.

  Args:
    workdir: the `--workdir` of train.py.
    step: which checkpoint (an integer); None for the newest.
  Returns:
    A `TrainedModel` with the variables replicated over all devices. Config keys added to
    the library after the run was trained (e.g. `inference`) take their default values.
  Raises:
    ConfigError / CheckpointError: the workdir is a file, or has no config or no (readable)
      checkpoint, or the checkpoint's variables hold NaN or infinities; CheckpointError: its
      path cannot be read as UTF-8 (`files.utf8_refusal`).
    CheckpointRemovedError: `step`'s checkpoint was removed as it was read (a training run
      in the workdir keeps only its newest); the newest one is read again instead, up to
      three times, where no `step` was given. A step removed while the checkpoints folder
      was opened is opened again (up to three times) whatever `step` says.
    ConfigError: config.json's model section is not the one the checkpoint records (edited
      since training; the message names each key, both values and the fix).
    InputError: a step that is not an integer.
  """
  if step is not None:
    step = check_int(step, "step")
  if isinstance(workdir, (str, os.PathLike)):  # "~/runs/x", as train.py and infer.py take it
    workdir = os.path.expanduser(workdir)      # (was "no config at ~/runs/x/config.json").
    # As infer.py refuses it (was: in a notebook under a Latin-1 locale, another folder's
    # arrays read, or none; read-through).
    refused = files.utf8_refusal(os.path.abspath(workdir), files.READ_BY_TENSORSTORE)
    if refused is not None:
      raise CheckpointError(f"the workdir {refused}")
  config = load_run_config(workdir)
  info = checkpoints.load_dataset_info(workdir)
  model = models.create_model(config.model)
  abstract = models.abstract_variables(model, config.model)
  abstract = {k: abstract[k] for k in _VARIABLE_COLLECTIONS if k in abstract}
  # The train state's step too: a folder copied or renamed to another step's name holds
  # that step's weights (was: served as the folder's step, and so named in every output).
  abstract["step"] = jax.ShapeDtypeStruct((), np.int32)
  target = checkpoints.with_sharding(abstract, parallel.replicated(parallel.make_mesh()))
  # The model section in use is compared with the one the checkpoint records: an edited
  # config.json that keeps the shapes (a disCVAE's composition) served another model.
  # Not the keys that weigh the training loss alone (review: an edited gate_loss_weight
  # stopped serving, "its weights would compute something they were not trained for").
  newest = step is None
  for attempt in range(_REMOVED_RETRIES + 1):
    opened = False
    try:
      # Opened afresh at each try: Orbax reads every step's metadata as it opens the folder,
      # and a step pruned meanwhile at each of the open's own tries is a
      # CheckpointRemovedError (was opened once, before this loop, so none was tried again;
      # and a prune at the open was "a step folder there is damaged ... move it away").
      ckpt = checkpoints.Checkpointer(workdir, create=False, model=config.model,
                                      ignore=checkpoints.TRAINING_ONLY_MODEL_KEYS)
      opened = True
      try:
        if newest:  # Process 0's newest for every process (was: each its own, so a save
          # between two processes' looks served half the images from another checkpoint).
          chosen = distributed.value_of_process_0("the newest checkpoint",
                                                  str(ckpt.latest_step()))
          step = None if chosen == "None" else int(chosen)
        # The same run on every process (was unchecked: another --workdir per process mixed
        # two models' outputs): its config and the checkpoint's checksums, wherever mounted.
        if distributed.process_count() > 1:  # Nothing to read for one process.
          distributed.same_on_every_process(
              "the run and checkpoint it serves", _run_identity(workdir, step),
              "give every process the same --workdir (each host may mount it at its own path)")
        variables = ckpt.restore(target, step, partial=True)  # The optimiser state unread.
        saved = ckpt.all_steps()
      finally:
        ckpt.close()
      break
    except checkpoints.CheckpointRemovedError:
      # A training run in this workdir pruned the newest checkpoint as it was read (was:
      # "if it is corrupt, delete that folder"), or a step as the folder was opened: the
      # newest there now. Not a step asked for that was read (it is gone; one pruned at the
      # open is another), and not with several processes (one alone asking process 0 again
      # would hang).
      if ((opened and not newest) or attempt == _REMOVED_RETRIES
          or distributed.process_count() > 1):
        raise
  held = int(np.asarray(_first_copy(variables.pop("step"))))
  if held != step:
    fix = (f"checkpoint {held} is there too: delete this copy, or pass --step={held}"
           if held in saved else f"rename it to {held}, or use another checkpoint (--step)")
    raise CheckpointError(
        f"the checkpoint folder {step} in {workdir} holds the state of step {held} (a copied "
        f"or renamed folder): {fix} (infer.py's flag, load_trained's step).")
  bad = _nonfinite_variables(variables)
  if bad:
    others = [s for s in saved if s != step]
    raise CheckpointError(
        f"checkpoint {step} in {workdir} holds NaN or infinite values in {len(bad)} of its "
        f"arrays (e.g. {bad[0]}): a model that generates only NaN. Use another checkpoint "
        f"(infer.py --step, load_trained's step; the others saved, not checked: "
        f"{', '.join(map(str, others)) or 'none'}) or train again from an earlier one.")
  # Not `from_variables`: the restore has already matched every array to `abstract`.
  names = ranges = None
  if info and len(info["attribute_names"]) == config.model.y_dim:
    names = tuple(info["attribute_names"])
    ranges = (tuple((float(lo), float(hi)) for lo, hi in info["attribute_ranges"])
              if "attribute_ranges" in info else None)  # Older runs stored no ranges.
  elif info is None and model.uses_attributes:
    # dataset.json deleted: the order this checkpoint records as trained, which `load_data`
    # then follows (was: none, and the data's columns in their order of now; review).
    recorded = checkpoints.recorded_attributes(os.path.join(ckpt.directory, str(step)))
    if recorded is not None and len(recorded) == config.model.y_dim:
      names = tuple(recorded)
  # Absolute: a relative workdir read after a change of the current folder found no
  # dataset.json, and `load_data` gave the CSV's columns in their order of now, its splits
  # unchecked, without a word (review finding).
  return TrainedModel(config, model, dict(variables), int(step),
                      _sampler(model), attribute_names=names,
                      attribute_ranges=ranges, workdir=os.path.abspath(workdir),
                      dataset_info=info)


class RunDataMissingError(DatasetNotPreparedError, InputError):
  """`load_run_data`'s and `load_data`'s refusal of a run whose folder dataset is not where
  its config.json says (moved or deleted since, or a relative data.path read from another
  folder): the `DatasetNotPreparedError` the folder's loader gave before, and the
  `InputError` infer.py gave."""


def load_data(trained: TrainedModel, *, progress: Optional[bool] = None) -> Dataset:
  """The dataset of the run `trained` was restored from, as its model was trained on it.

  Was: `load_dataset(trained.config.data)` (the README's recipe, the notebook), which gave a
  folder dataset's attributes in the CSV's order of now, not the run's (a model fed swapped
  columns without a word), CUB's whole 72x72 images instead of the 64x64 centre crops, and
  splits that had changed since training (review finding). See `load_run_data`.

  Args:
    trained: from `load_trained` (it knows its workdir); a model of `TrainedModel
      .from_variables` has none: its config's dataset is taken as it loads, centre cropped.
    progress: progress bars while a real dataset is read; None: the run's
      `config.progress_bar`.
  Returns:
    The `Dataset`: attributes by name in the training order, images and masks centre cropped
    where training cropped at random, each split checked against the one trained on.
  Raises:
    DataError: the dataset cannot be loaded, its attributes are not those trained with, or a
      split holds other examples than at training. RunDataMissingError (a DataError and an
      InputError): the run's folder dataset is not at its data.path (moved or deleted, or a
      relative path read from another folder), named as such.
    ConfigError: the run's dataset.json is unreadable, or `trained.config` is not a whole
      experiment config.
    InputError: `trained` is not a `TrainedModel` (a workdir's path, say).
  """
  from a2i_jax.inference.uses import check_trained  # pylint: disable=import-outside-toplevel
  check_trained(trained)  # Was an AttributeError: "'str' object has no attribute 'config'".
  config_lib.check_whole_config(trained.config, "load_data", ("data",))
  # The record load_trained read, whatever the run folder holds now (none, moved or deleted
  # since: was the CSV's columns in their order of now and the splits unchecked, without a
  # word; another, a new run's); the model's attribute names alone where it holds no record
  # but knows them (the order its checkpoint records, where dataset.json was deleted).
  return _run_data(trained.config, trained.workdir, progress, trained.dataset_info,
                   trained.attribute_names, f"the model of step {trained.step}")


def load_run_data(config: ml_collections.ConfigDict, workdir: Optional[str], *,
                  progress: Optional[bool] = None) -> Dataset:
  """`load_data` from a run's config and folder, before any checkpoint is restored.

  `load_dataset(config.data)`, then: the attribute columns by name in the order the run
  stored at training (`data.base.as_trained`, WORKDIR/dataset.json); each split's example ids
  compared with those recorded at training (`data.base.check_same_splits`, as a resumed run
  compares them), since a folder dataset without a split column splits its rows by position,
  and a row added or removed since puts training images in the test split; and the images
  and masks centre cropped where training cropped (`data.base.centre_cropped`, CUB's 64 of
  72). A run without dataset.json (deleted) has its attribute columns put in the order its
  newest checkpoint records (`checkpoints.newest_recorded_attributes`), its splits
  unchecked; one whose checkpoints record none either (trained before both existed), or
  data without example ids (synthetic), is taken as it loads.

  Args:
    config: the run's config (`load_run_config`).
    workdir: the run's folder, or None: no record to follow or check.
    progress: progress bars while a real dataset is read; None: `config.progress_bar`.
  Returns:
    The `Dataset`, as `load_data`'s.
  Raises:
    DataError: the dataset cannot be loaded, its attributes are not those trained with, or a
      split holds other examples than at training (the message names the splits and the fix).
      RunDataMissingError (a DataError and an InputError): a `workdir` given, the run's
      folder dataset is not at its data.path (moved or deleted, or a relative path read from
      another folder), named as such.
    ConfigError: the run's dataset.json is unreadable, or `config` is not a whole experiment
      config (a dict, or a section of one).
  """
  config_lib.check_whole_config(config, "load_run_data", ("data",))  # Was an AttributeError.
  return _run_data(config, workdir, progress, None, None, "")


def _run_data(config: ml_collections.ConfigDict, workdir: Optional[str],
              progress: Optional[bool], kept: Optional[Mapping[str, Any]],
              names: Optional[Sequence[str]], whose: str) -> Dataset:
  """`load_run_data` of a whole config (its callers check it). For a held model (`whose`:
  "the model of step 40"), the record it was loaded with, `kept` (dataset.json as
  `load_trained` read it), whatever `workdir` holds now; where it has none, the attribute
  order `names`. Otherwise (`load_run_data`) `workdir`'s record, or for a model that takes
  attributes, the order the newest checkpoint in `workdir` records."""
  if workdir is not None:
    _check_folder_there(config, workdir)
    # load_dataset's own check, first, with advice that names the run's config.json (no flag
    # sets data.cache_dir or data_dir here: was "pass --config.data.cache_dir=...").
    check_settings(config.data,
                   os.path.join(os.path.expanduser(workdir), checkpoints.CONFIG_FILE))
  if progress is None:
    progress = bool(config.get("progress_bar", True))
  dataset = load_dataset(config.data, bool(progress))
  info = None if workdir is None else checkpoints.load_dataset_info(os.path.expanduser(workdir))
  said = False  # Whether the warning below named where the order comes from.
  if whose and info != kept:
    # A held model's own record (`load_data`'s; `load_run_data` has none): where the folder
    # holds none now, or another one (a new run trained there since the load: was that run's
    # attribute order fed to this model, without a word; fault hunt), also where the model
    # was loaded without one (then its checkpoint's order, `_recorded_order`; review).
    if workdir is not None:
      logging.warning(
          "%s holds %s %s now (%s since the model was loaded); the data are checked against, "
          "and ordered as, %s%s.", workdir,
          "no" if info is None else "another" if kept is not None else "a",
          checkpoints.DATASET_FILE, "moved or deleted" if info is None else
          "another run trained there, or the record was rewritten", "the record read then"
          if kept is not None else "the attribute order its checkpoint records",
          "" if info is None else
          ": load the model again (inference.load_trained) to serve the new run")
      said = info is not None
    info = kept
  if info is None:  # No dataset.json (deleted, or older than it): the order trained, by name.
    info = _recorded_order(config, None if said else workdir, dataset, names, whose)
  if info is not None:
    try:  # The check a resume makes too (train_eval.align_with_record).
      check_same_splits(workdir, info, dataset)
    except OtherDataError as e:  # The same images in each split; other data under them.
      raise OtherDataError(f"this run's data changed since it was trained: {e}") from None
    except DataError as e:  # Was: scored on images it had trained on (review finding).
      raise DataError(f"this run's data splits changed since it was trained, so its test "
                      f"images may be ones it trained on: {e}") from None
  return centre_cropped(as_trained(dataset, info), config.data.augment.crop_size)


def _recorded_order(config: ml_collections.ConfigDict, workdir: Optional[str],
                    dataset: Dataset, names: Optional[Sequence[str]], whose: str
                    ) -> Optional[dict]:
  """The record `as_trained` follows for a run without dataset.json: the attribute order
  `names` (`whose`), else the one the newest checkpoint in `workdir` records, for a model
  that takes attributes (was: the data's columns in their order of now, though the
  checkpoint records the trained one; review); None where neither is known. Its header is
  the data's of now with the attribute columns in that order, so that `as_trained` warns
  only where they moved. With `workdir`, one warning line says where the order came from."""
  if names is None and workdir is not None and checkpoints.uses_attributes(config.model):
    found = checkpoints.newest_recorded_attributes(os.path.expanduser(workdir))
    if found is not None:
      names, whose = found[1], f"checkpoint {found[0]}"
  if names is None:
    return None
  if workdir is not None:
    logging.warning("%s holds no %s: the attributes are taken by name in the order %s was "
                    "trained with (%s), and the splits are not checked against training's.",
                    workdir, checkpoints.DATASET_FILE, whose,
                    ", ".join(names[:5]) + (", ..." if len(names) > 5 else ""))
  header = dataset.metadata.get("header") or dataset.attribute_names
  return {"attribute_names": list(names),
          "header": checkpoints.header_in_order(list(header), list(names))}


def _check_folder_there(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a run's folder dataset whose data.path names nothing (was: the folder's layout
  explained, as if the user had pointed at the wrong folder; infer.py alone explained it).

  Args:
    config: the run's whole config.
    workdir: the run's folder, whose config.json the message names.
  Raises:
    RunDataMissingError: naming the path, the run's config.json and the fix: for a relative
      path, where it leads from here; else that the folder no longer exists.
  """
  given = os.path.expanduser(config.data.get("path") or "")
  path = os.path.abspath(given)
  if config.data.get("name") != "folder" or not given or os.path.exists(path):
    return
  record = os.path.join(os.path.expanduser(workdir), checkpoints.CONFIG_FILE)
  if not os.path.isabs(given):  # Read from the folder the program runs in.
    raise RunDataMissingError(
        f"this run's folder dataset is data.path={config.data.path!r} in {record}, a path "
        f"relative to the folder a program runs in, and from here it is {path}, which does "
        "not exist; run infer.py from the folder train.py ran in (so too a program that loads "
        "the run's data), or set data.path in that file to the dataset's absolute path.")
  raise RunDataMissingError(
      f"this run was trained on the folder dataset {path} (data.path in {record}), which no "
      "longer exists; infer.py and the inference API read its test split and training "
      "attributes from there. Move the folder back, or set data.path in that file to where it "
      "is now (a model loaded before: load it again).")
