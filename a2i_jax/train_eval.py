"""What the training loop reports besides the state: validation metrics, sample grids, and the
error that names the loss term behind a divergence.

Host-side helpers of `train_lib.train_and_evaluate`; the jitted steps they call are built in
`train_lib`.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from typing import Any, Callable, Mapping, Optional

import flax
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from a2i_jax import checkpoints, distributed, parallel, visualize
from a2i_jax.data import Dataset, pipeline
from a2i_jax.data.base import check_same_splits, with_attribute_order
from a2i_jax.errors import TrainingDivergedError
from a2i_jax.inputs import from_signed
from a2i_jax.metrics import MetricWriter

Array = jax.Array


def evaluate(eval_step: Callable, variables: dict, split: Any, config: ml_collections.ConfigDict,
             mesh: Mesh, key: Array,
             before_dispatch: Optional[Callable[[], None]] = None) -> dict[str, float]:
  """Mean per-image metrics over (the first `num_eval_examples` of) a split.

  Args:
    eval_step: from `train_lib.make_eval_step` (jitted).
    variables: the model variables.
    split: a `data.Split`.
    config: the experiment config (configs/default.py).
    mesh: from `parallel.make_mesh`; each batch is sharded over it.
    key: PRNG key of the reparametrisation noise.
    before_dispatch: called once `eval_step` is compiled, before its first dispatch (with
      peers, the train loop's barrier: each dispatch is a collective of every process).
  Returns:
    {term name: mean per image} (e.g. "loss", "nll", "kl", "bound").
  """
  n = len(split) if config.num_eval_examples < 0 else min(len(split), config.num_eval_examples)
  b = config.batch_size
  totals: dict[str, float] = {}
  for i, start in enumerate(range(0, n, b)):
    idx = np.arange(start, start + b)
    weights = (idx < n).astype(np.float32)
    idx = np.minimum(idx, n - 1)
    batch = {"images": split.images[idx], "attributes": split.attributes[idx]}
    if split.masks is not None:
      batch["masks"] = split.masks[idx]
    batch, weights = parallel.put_batch((batch, weights), mesh)
    if i == 0 and before_dispatch is not None:
      # Compiled first (the call below then finds it compiled): a peer's stop during its
      # compile then meets the others at `before_dispatch`, not in the first collective.
      eval_step.lower(variables, batch, weights, jax.random.fold_in(key, i)).compile()
      before_dispatch()
    sums = parallel.fetch(eval_step(variables, batch, weights, jax.random.fold_in(key, i)))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
  count = totals.pop("count")
  return {k: v / count for k, v in totals.items()}


def write_samples(model: flax.linen.Module, sample_fn: Callable, variables: dict,
                  dataset: Dataset, config: ml_collections.ConfigDict, path: str,
                  key: Array) -> np.ndarray:
  """A PNG grid of samples for validation attribute vectors.

  A model without image layers (CVAE, VAE): one row per attribute vector, `num_sample_cols`
  latent draws, then the real image. A model with image layers (disCVAE): one row per
  attribute vector and draw: its layers (`model.image_layers`), the composite, the real image.

  Args:
    model: from `models.create_model`.
    sample_fn: `sampling.make_sample_fn(model)`, jitted.
    variables: the model variables.
    dataset: the `Dataset`; its validation split gives the attributes and real images.
    config: the experiment config (configs/default.py).
    path: the PNG to write (atomically).
    key: PRNG key of the latents.
  Returns:
    The grid as written, uint8 [H, W, 3] (for TensorBoard).
  """
  split = dataset["validation"]
  rows = min(config.num_sample_rows, len(split))
  # On the host, in NumPy: done with jnp, each step compiled an eager program per shape in
  # every new process, nine of them in a train.py run, 0.3-0.6 s of its start
  # (BENCHMARKS.md, "Eager programs at the first evaluation").
  real_x, _ = pipeline.preprocess_eval(np.asarray(split.images[:rows]), None,
                                       config.data.augment)
  real = from_signed(real_x)
  y = np.asarray(split.attributes[:rows], np.float32)
  if model.image_layers:
    out = parallel.fetch(sample_fn(variables, y, key))
    cols = [out[name] for name in model.image_layers] + [out["image"], real]
    return _save_grid(visualize.stack_columns(cols), path, len(cols))
  k = config.num_sample_cols
  out = parallel.fetch(sample_fn(variables, np.repeat(y, k, axis=0), key))["image"]
  out = out.reshape((rows, k) + out.shape[1:])
  grid = np.concatenate([out, real[:, None]], axis=1).reshape((-1,) + out.shape[2:])
  return _save_grid(grid, path, k + 1)


def _save_grid(images: np.ndarray, path: str, ncols: int) -> np.ndarray:
  """The grid as uint8; written to `path` by process 0 only (every process computes it)."""
  if distributed.is_main():
    return visualize.save_grid(images, path, ncols=ncols)
  return visualize.make_grid(images, ncols, scale=2)


def derived_terms(report: Mapping[str, Any]) -> set[str]:
  """The names in a loss-term report that are totals of other terms, not terms of their own.

  "loss" (the sum minimised), "bound" (-loss, `objectives.cvae_terms`) and "kl" where the
  report holds its parts "kl_fg" and "kl_bg" (`objectives.discvae_terms`; the (C)VAE's "kl" is
  a term of its own).

  Args:
    report: {term name: anything}, e.g. `train_lib.make_term_report`'s output.
  Returns:
    The set of the report's names that are totals.
  """
  totals = {"loss", "bound"} | ({"kl"} if {"kl_fg", "kl_bg"} <= set(report) else set())
  return totals & set(report)


def describe_divergence(report: dict) -> str:
  """One sentence naming the loss terms whose value or gradient is not finite.

  Args:
    report: the output of `train_lib.make_term_report`'s function, fetched to the host.
  Returns:
    e.g. "term gate_bce (value nan, gradient norm nan) is not finite". Totals of other terms
    (`derived_terms`: "loss", the (C)VAE's "bound", the disCVAE's "kl") are named only when
    no other term is at fault, "loss" first.
  """
  def finite(n):
    return all(np.isfinite(x) for x in report[n])
  totals = derived_terms(report)
  # Was: the (C)VAE's "bound" (-loss) named beside "nll" or "kl" as a term at fault, and the
  # disCVAE's "kl" (kl_fg + kl_bg) beside the one of its parts that was (a fault hunt's).
  bad = [n for n in report if n not in totals and not finite(n)]
  if not bad:
    bad = [n for n in sorted(totals, key=lambda n: (n != "loss", n)) if not finite(n)][:1]
  if not bad:
    return "every term is finite when the step is recomputed term by term"
  parts = [f"{n} (value {float(report[n][0]):.4g}, gradient norm {float(report[n][1]):.4g})"
           for n in bad]
  noun = "term" if len(bad) == 1 else "terms"
  return f"{noun} {', '.join(parts)} {'is' if len(bad) == 1 else 'are'} not finite"


def divergence_error(report: dict, step: int, writer: MetricWriter, last_good: Any,
                     directory: str) -> TrainingDivergedError:
  """Logs the per-term report of a failed step and returns the error that stops training.

  Args:
    report: `train_lib.make_term_report`'s output for the failed step, on the host.
    step: the number of the failed step.
    writer: the run's metric writer ("diverged/<term>/value" and "/grad_norm" at `step`).
    last_good: the newest checkpoint's step (None if there is none).
    directory: the checkpoint directory.
  Returns:
    The `TrainingDivergedError` to raise; its message names the terms and the fixes.
  """
  writer.write(step, {f"diverged/{n}/{part}": float(v[i]) for n, v in report.items()
                      for i, part in enumerate(("value", "grad_norm"))})
  return TrainingDivergedError(
      f"the loss became NaN or infinite at step {step} ({describe_divergence(report)}); "
      f"training stopped. {last_checkpoint_words(last_good, directory)} Lower "
      "config.learning_rate, set config.grad_clip_norm (e.g. 1e4), or check the data for bad "
      "values.")


def last_checkpoint_words(step: Optional[int], directory: str) -> str:
  """The sentence an error ends with about where a rerun resumes.

  Args:
    step: the newest intact checkpoint's step, or None.
    directory: the checkpoint directory.
  Returns:
    e.g. "The last good checkpoint is step 40 in W/checkpoints (resuming continues from it)."
  """
  if step is None:
    return "There is no checkpoint yet: rerunning starts from scratch."
  return (f"The last good checkpoint is step {step} in {directory} (resuming continues from "
          "it).")


def record_dataset(workdir: str, dataset: Dataset, data_path: str, resumed: bool) -> None:
  """Writes workdir/dataset.json for a new run (or, with a warning, for a resumed one that has
  none: deleted, or trained before it existed); on resume, logs an INFO line when the
  dataset's header moved (`align_with_record` has then realigned its attributes by name).

  Args:
    workdir: the run's directory.
    dataset: the dataset as `align_with_record` gives it (in the order the checkpoints
      record, for a resumed run without dataset.json whose checkpoints record one).
    data_path: `config.data.path` (folder datasets).
    resumed: whether the run resumed from a checkpoint (the record is then kept).
  """
  stored = checkpoints.load_dataset_info(workdir) if resumed else None
  now = checkpoints.dataset_info(dataset, data_path)
  if stored is None:
    if resumed:  # Was silent: a folder's columns reordered since were fed in the new order.
      names = (", ".join(dataset.attribute_names[:5])
               + (", ..." if len(dataset.attribute_names) > 5 else ""))
      found = checkpoints.newest_recorded_attributes(workdir)
      if found is not None and found[1] == list(dataset.attribute_names):
        # Was: "cannot be checked against the order the model learnt", though the
        # checkpoints record it (`align_with_record` has put the data in it).
        logging.warning("%s has checkpoints but no %s: the attributes are taken in the order "
                        "checkpoint %d records as trained (%s), whatever their order in the "
                        "data now; %s is written from them", workdir,
                        checkpoints.DATASET_FILE, found[0], names, checkpoints.DATASET_FILE)
      else:  # Checkpoints that record no order (an older version's, or a VAE's).
        logging.warning("%s has checkpoints but no %s: the attributes are taken in the order "
                        "the data give them now (%s), which cannot be checked against the "
                        "order the model learnt%s; %s is written from them", workdir,
                        checkpoints.DATASET_FILE, names,
                        " (its checkpoints record none)" if found is None else "",
                        checkpoints.DATASET_FILE)
    checkpoints.save_dataset_info(workdir, dataset, data_path)
  elif stored.get("header") != now["header"]:  # `align_with_record` matched them by name.
    logging.info("the dataset's columns moved since this run started (%s then, %s now); "
                 "its attributes are taken by name, in the trained order",
                 stored.get("header"), now["header"])


def align_with_record(workdir: str, dataset: Dataset) -> Dataset:
  """The dataset with its attributes in the order the run in `workdir` was trained with.

  A folder dataset's attribute columns follow attributes.csv as it is now; a resumed run must
  feed them in the order its model learnt them (`dataset.json`, written at the run's start;
  where it was deleted, the order the newest checkpoint records,
  `checkpoints.newest_recorded_attributes`).

  Args:
    workdir: the run's directory (absolute).
    dataset: the dataset as loaded now.
  Returns:
    `dataset` itself for a run with no checkpoint (or with neither dataset.json nor
    checkpoints that record the order), another dataset (the resume check then names the
    config key) or the same order, else a copy with the attribute columns reordered by name
    (`data.base.with_attribute_order`).
  Raises:
    DataError: the attribute names are not the ones trained with (a column renamed, added or
      removed), or a split holds other images than when the run started (`check_same_splits`).
    ConfigError: dataset.json is unreadable.
  """
  if not checkpoints.has_checkpoints(workdir):
    return dataset
  stored = checkpoints.load_dataset_info(workdir)
  if stored is None:
    # Deleted: the order the checkpoints record (was: the data's order of now, fed to the
    # model and written into a new dataset.json as the trained one; review).
    found = checkpoints.newest_recorded_attributes(workdir)
    return dataset if found is None else with_attribute_order(dataset, found[1])
  if stored.get("name", dataset.name) != dataset.name:
    return dataset
  check_same_splits(workdir, stored, dataset)
  if list(stored["attribute_names"]) == list(dataset.attribute_names):
    return dataset
  return with_attribute_order(dataset, [str(n) for n in stored["attribute_names"]])


class RunSummary:
  """What a run ends with: its last validation numbers, samples, checkpoint, and next command.

  Args:
    workdir: the run's directory.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.validation: dict[str, float] = {}
    self.samples = ""

  def evaluated(self, metrics: dict[str, float], samples: str) -> None:
    """Notes an evaluation.

    Args:
      metrics: `evaluate`'s output.
      samples: the path of its sample grid.
    """
    self.validation, self.samples = metrics, samples

  def log(self, step: int, checkpoint: Optional[int]) -> None:
    """Logs the summary (a few INFO lines).

    Args:
      step: the final step.
      checkpoint: the newest checkpoint's step.
    """
    v = self.validation
    numbers = ", ".join(f"{name} {v[name]:.2f}" for name in ("bound", "loss") if name in v)
    logging.info("done at step %d%s", step, f"; validation {numbers}" if numbers else "")
    if self.samples:
      logging.info("samples: %s", self.samples)
    if checkpoint is not None:
      logging.info("checkpoint: %s", os.path.join(self.workdir, checkpoints.CHECKPOINT_DIR,
                                                  str(checkpoint)))
    logging.info("next: %s", infer_command(self.workdir))


def _is_this_python(path: Optional[str]) -> bool:
  """Whether `path` runs as this Python does: in its folder (a virtual environment's, whose
  python links to the base one), and the same file (was the folder alone: /usr/bin/python
  may be another version than the /usr/bin/python3.13 running; read-through)."""
  if path is None:
    return False
  try:
    return (os.path.dirname(os.path.abspath(path))
            == os.path.dirname(os.path.abspath(sys.executable))
            and os.path.samefile(path, sys.executable))
  except OSError:  # Not there.
    return False


def infer_command(workdir: str, mode: str = "sample") -> str:
  """The command line that runs infer.py's `mode` on `workdir`, as the user can paste it where
  they are: "python" where the `python` on PATH is this one's (the project's virtual
  environment, activated), else this Python's path; infer.py by its path from the current
  folder (was "python infer.py" alone: from another folder, or with the environment not
  activated, the line pasted was "can't open file" or a Python without JAX; fault hunt).

  Args:
    workdir: the run's folder (quoted where it needs it: a path with a space stays one
      argument).
    mode: the infer.py mode.
  Returns:
    The command, e.g. "python infer.py --workdir=runs/a --mode=sample".
  """
  python = ("python" if not sys.executable or _is_this_python(shutil.which("python"))
            else shlex.quote(sys.executable))
  script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "infer.py")  # Beside train.py in the checkout.
  if not os.path.exists(script):  # Installed without the checkout: as its README says.
    script = "infer.py"
  else:
    try:
      relative = os.path.relpath(script)
    except (OSError, ValueError):  # The current folder deleted; another drive.
      relative = os.pardir
    script = relative if not relative.startswith(os.pardir) else script
  return f"{python} {shlex.quote(script)} --workdir={shlex.quote(workdir)} --mode={mode}"


def resolve_config(config: ml_collections.ConfigDict,
                   dataset: Any) -> ml_collections.ConfigDict:
  """The config with what the data decide filled in.

  Args:
    config: the validated experiment config.
    dataset: the loaded `Dataset`.
  Returns:
    `config` itself, or a copy with model.y_dim = 0 (folder datasets: "the number of attribute
    columns") replaced by that number.
  """
  if config.model.y_dim == 0:
    config = config.copy_and_resolve_references()
    config.model.y_dim = dataset.num_attributes
    logging.info("model.y_dim = %d (the attribute columns of the dataset: %s)",
                 config.model.y_dim, ", ".join(dataset.attribute_names))
  return config


def warn_capped_settings(config: ml_collections.ConfigDict, dataset: Any) -> None:
  """One warning line where config.num_eval_examples or config.num_sample_rows asks for more
  than the validation split holds, which `evaluate` and `write_samples` then use all of (was:
  capped without a word, where infer.py's --num_images warns). `train_lib.train_and_evaluate`
  calls it once per run, after the data load.

  Args:
    config: the validated experiment config.
    dataset: the loaded `Dataset`.
  """
  n = len(dataset["validation"])
  capped = [f"config.{key}={config[key]}" for key in ("num_eval_examples", "num_sample_rows")
            if config[key] > n]
  if capped:
    logging.warning("%s, but the validation split holds %d image(s); using all %d",
                    " and ".join(capped), n, n)
