"""The evaluation table (docs/reference.md §6, the layout of the paper's Table 1) and attribute
fidelity.

Errors are per-pixel squared errors on [0, 1] images, averaged over each test image's region
of interest (every pixel, the foreground pixels, or the hidden pixels of an occlusion), then
reported as mean +- standard error over test images; each cell also gives each image's root
mean squared error on the 0-255 scale the same way (`error_cell`, "rmse_255").

Rows for one trained model: posterior inference by optimisation ("optimisation", the
`config.inference` settings) and the recognition model alone ("recognition": the encoder's
mean on the image with hidden pixels set to mid-grey, decoded, no optimisation). One
model-free baseline row fills with the mean training image.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import jax
import numpy as np

from a2i_jax import files, inference, occlusions
from a2i_jax.data.base import Dataset, centre_cropped
from a2i_jax.errors import ConfigError, InputError, first_line
from a2i_jax.inference import posterior
from a2i_jax.inputs import (as_array, check_int, check_key, is_integer, mask_to_unit, real_dtype,
                            to_unit)

RECON_FULL = "reconstruction"
RECON_FG = "reconstruction (foreground)"


def _scored_images(images: np.ndarray, what: str, finite: bool) -> np.ndarray:
  """`images` as float64 in [0, 1], read as the API reads images (`inputs.to_unit`, its
  message prefixed with `what`); with `finite` False, NaN and infinities pass as NaN (a
  diverged estimate, left out)."""
  bad = None
  if not finite and np.issubdtype(images.dtype, np.floating):
    bad = ~np.isfinite(images)
    images = np.where(bad, 0.0, images).astype(images.dtype)
  try:
    x = np.asarray(to_unit(images), np.float64)  # Was: uint8 scored against [0, 1] floats.
  except InputError as e:
    raise InputError(f"{what}: {e}") from None
  if bad is not None:
    x[bad] = np.nan
  return x


def region_errors(target: np.ndarray, estimate: np.ndarray, region: np.ndarray) -> np.ndarray:
  """Per-image mean squared error over a region.

  Args:
    target, estimate: [N, S, S, 3] images of one shape, uint8 0 .. 255 or floats in [0, 1]
      (read as `inputs.to_unit` reads them); an estimate's NaN or infinities give its
      image's error NaN.
    region: [N, S, S, 1] weights, 1 = pixel counted: bool, floats in [0, 1] or uint8
      0 .. 255 (`inputs.mask_to_unit`).
  Returns:
    [N] float64; NaN for an image whose region is empty.
  Raises:
    InputError: images of other shapes than one [N, S, S, 3] (one estimate for N targets
      included), a region of another shape than [N, S, S, 1], a dtype that is not one of
      those, a target that is not finite, or values outside [0, 1].
  """
  t, e = as_array(target, "target"), as_array(estimate, "estimate")
  if t.ndim != 4 or t.shape[-1] != 3 or e.shape != t.shape:
    # Was: one estimate [S, S, 3] broadcast over every image without a word.
    one = (f"; to score one estimate against every image, np.broadcast_to(estimate, "
           f"{t.shape})" if e.shape == t.shape[1:] else "")
    raise InputError(f"target and estimate have shapes {t.shape} and {e.shape}; pass two "
                     f"[N, S, S, 3] image batches of one shape, an estimate per target{one}.")
  r = as_array(region, "region")
  if r.shape != t.shape[:3] + (1,):  # Was NumPy's broadcast error, or a silent broadcast.
    fix = "; add the channel: region[..., None]" if r.shape == t.shape[:3] else ""
    raise InputError(f"region has shape {r.shape}; expected {t.shape[:3] + (1,)}, [N, S, S, 1] "
                     f"as the images [N, S, S, 3]{fix}.")
  target = _scored_images(t, "target", finite=True)
  estimate = _scored_images(e, "estimate", finite=False)
  region = mask_to_unit(r, "region").astype(np.float64)
  count = 3.0 * region.sum(axis=(1, 2, 3))  # Summed by axes: no images (N = 0) give [0].
  with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN / inf estimates.
    sq = np.square(target - estimate) * region
    return np.where(count > 0, sq.sum(axis=(1, 2, 3)) / count, np.nan)


def mean_sem(values: np.ndarray) -> dict[str, float]:
  """Mean, standard error of the mean and count of the finite values.

  Args:
    values: [N] numbers (NaN and infinities are left out).
  Returns:
    {"mean", "sem", "n"}; NaN mean and sem when no value is finite, NaN sem for one value
    (was 0.0, printed "± 0.00": one image says nothing of the spread; review finding).
  Raises:
    InputError: values that are not real numbers (strings, None, complex numbers), or not
      one row of them.
  """
  raw = as_array(values, "values")
  # Was NumPy's "could not convert string to float" ("abc"), or "1.5" read as the number.
  if not real_dtype(raw.dtype):
    what = "are strings" if raw.dtype.kind in "US" else f"have dtype {raw.dtype}"
    raise InputError(f"values {what}; mean_sem takes real numbers, e.g. region_errors' [N] "
                     "errors.")
  if raw.ndim > 1:  # Was flattened without a word.
    raise InputError(f"values have shape {raw.shape}; mean_sem takes one row [N] of numbers "
                     "(for one mean of them all: values.ravel()).")
  v = raw.astype(np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return {"mean": float("nan"), "sem": float("nan"), "n": 0}
  sem = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
  return {"mean": float(v.mean()), "sem": sem, "n": int(v.size)}


# The 0-255 scale of `error_cell`'s "rmse_255".
PIXEL_LEVELS = 255.0


def error_cell(target: np.ndarray, estimate: np.ndarray, region: np.ndarray) -> dict[str, Any]:
  """One table cell: `mean_sem` of the per-image squared errors over `region`, and under
  "rmse_255" `mean_sem` of each image's root mean squared error on the 0-255 scale (255 x
  the root of its squared error on [0, 1]), so that a paper's table in either unit can be
  matched (docs/reference.md §6: the paper's scale is unknown). The root of the mean of the
  squared errors is `sqrt(cell["mean"]) * 255`; the mean of the roots is what "rmse_255"
  gives, each image's error on the scale of its pixels.

  Args:
    target, estimate, region: as for `region_errors`.
  Returns:
    {"mean", "sem", "n", "rmse_255": {"mean", "sem", "n"}}.
  Raises:
    InputError: what `region_errors` refuses.
  """
  errors = region_errors(target, estimate, region)
  with np.errstate(invalid="ignore"):  # NaN stays NaN and is left out, as in `mean_sem`.
    return {**mean_sem(errors), "rmse_255": mean_sem(PIXEL_LEVELS * np.sqrt(errors))}


def _nonfinite_images(images: np.ndarray, diverged: Optional[np.ndarray] = None) -> int:
  """How many of `images` ([N, ...]) hold NaN or infinity, or are marked in `diverged` [N]
  (the inference's "diverged", `inference.posterior.diverged_images`: no finite energy, or
  one that ended clearly above its start; its output means nothing, even where finite)."""
  bad = ~np.isfinite(np.asarray(images)).reshape(len(images), -1).all(-1)
  if diverged is not None:
    bad |= np.asarray(diverged, bool)
  return int(np.sum(bad))


def _check_outputs_finite(trained: inference.TrainedModel, images: np.ndarray,
                          method: str, made: str = "reconstructs", what: str = "test images",
                          optimised: bool = False, diverged: Optional[np.ndarray] = None,
                          energy: Optional[np.ndarray] = None) -> None:
  """Refuses to score a model whose reconstructions (or samples, completions, inferred
  attributes) are NaN or infinite. Was: their errors were left out as if the pixels were not
  scored (cells "–", n 0) and the attribute scores of its NaN samples still published, status
  0. `optimised`: the outputs come from posterior inference, which can diverge by itself;
  `diverged`: the images where it did, its "diverged" [N] (a warning only, before; and an
  inference whose energy rose clearly but stayed finite was published as converged);
  `energy`: its final energy [N], for the message's words."""
  bad = _nonfinite_images(images, diverged)
  if bad:
    cause = ("posterior inference diverged for them (the run's config.inference.learning_rate "
             "is too high for this model; `infer.py --mode=tune` compares settings) or "
             if optimised else "")
    # Each kind counted apart (was: 7 of 8 "as NaN or infinity" where one was; read-through):
    # NaN or infinity in the pixels or the energy, and an inference whose energy rose clearly.
    nonfinite = _nonfinite_images(images, None if energy is None else ~np.isfinite(energy))
    rose = "by an inference whose energy ended clearly above its start"
    how = ("as NaN or infinity" if nonfinite == bad else rose if not nonfinite else
           f"wrongly ({nonfinite} as NaN or infinity, {bad - nonfinite} {rose})")
    raise InputError(
        f"the model of step {trained.step} {made} {bad} of {len(images)} {what} {how} "
        f"({method}): {cause}its checkpoint is damaged or its training diverged; evaluate an "
        "earlier checkpoint (infer.py --step), or train again.")


def _check_attribute_order(trained: inference.TrainedModel, dataset: Dataset) -> None:
  """Refuses a dataset whose attributes are not in the order the run was trained with (its
  dataset.json's, `trained.attribute_names`; None for a run without one, or a model of
  `from_variables`): the model would read each column as another attribute. Was: scored
  without a word, e.g. `load_dataset(config.data)` of a folder whose CSV columns moved since
  training (`inference.load_data` puts them back in the run's order)."""
  trained_names = trained.attribute_names
  names = tuple(dataset.attribute_names)
  if trained_names is not None and names != tuple(trained_names):
    raise InputError(
        f"the dataset's attributes ({', '.join(names)}) are not in the order the model of step "
        f"{trained.step} was trained with ({', '.join(trained_names)}); pass the run's data as "
        "it trained: inference.load_data(trained).")


def _check_model_and_data(trained: Any, dataset: Any) -> None:
  """Refuses a model that is not a `TrainedModel` (a workdir's path) and a dataset that is not
  a `Dataset` (None, a path), before anything is read. Was: an AttributeError ("'str' object
  has no attribute 'attribute_names'", "'NoneType' ..."), from deep inside."""
  inference.uses.check_trained(trained)
  _check_dataset(dataset, "inference.load_data(trained)")


def _check_dataset(dataset: Any, how: str) -> None:
  """Refuses a `dataset` that is not a `Dataset`; `how` names the call that loads one."""
  if not isinstance(dataset, Dataset):
    raise InputError(f"the dataset must be a Dataset, not {type(dataset).__name__}; load the "
                     f"run's data first: {how}.")


def _attributes_given(options: Any, what: str) -> None:
  """Refuses options that infer the attributes: the errors are those of inference with the
  true attributes given. Was: "infer_attributes=True needs an attribute_prior", a prior these
  functions do not take, from the first inference (in `tune_inference`, after the settings
  before it had run)."""
  if getattr(options, "infer_attributes", False):
    raise InputError(f"{what} infer the attributes (infer_attributes=True), but the errors are "
                     "scored with the true attributes given; pass options with "
                     "infer_attributes=False, e.g. inference.options_for(trained, "
                     "infer_attributes=False) (attribute_report scores attribute inference).")


def _check_options(options: Any) -> None:
  """Refuses `options` that are neither None nor `InferenceOptions` (a dict of settings), with
  the message inference gives. Was: `tune_inference` dataclasses' TypeError ("asdict() should
  be called on dataclass instances"); `attribute_report` refused them only after the sampling
  and the progressions had run; `evaluate_model` named `recognition_options`, and took
  options={} as the run's settings without a word (`options or ...`)."""
  if options is not None:
    posterior.check_options_type(options)


def _options(trained: inference.TrainedModel, options: Any) -> inference.InferenceOptions:
  """`options` (`_check_options`), or the run's `config.inference` with the test attributes
  given (`infer_attributes` off, whatever the run's config says)."""
  _check_options(options)
  return (inference.options_for(trained, infer_attributes=False) if options is None
          else options)


# How many validation images `tune_inference` scores by default.
TUNE_EXAMPLES = 256


def _tuning_cell(target: np.ndarray, estimate: np.ndarray, region: np.ndarray,
                 diverged: Optional[np.ndarray] = None) -> dict[str, Any]:
  """`error_cell` of one tuning column, and "diverged": the images whose estimate holds NaN or
  infinity, or whose inference diverged (`diverged` [N], the inference's: no finite energy, or
  one that ended clearly above its start; the estimate, finite or not, means nothing). Where
  any did, the mean and s.e. are NaN: the images that converged alone would give a setting that
  diverges on some a better error than one that does not. Was: their errors left out as if those
  pixels were not scored; and a setting whose every image diverged with finite pixels
  (learning_rate 1e30: z near 1e30, the decoder saturated) was scored as converged, "diverged" 0,
  and so was one whose energy rose finitely (1e4: 7.5e9 from 1.6e3, a worse error than the
  recognition network's; fault hunt)."""
  count = _nonfinite_images(estimate, diverged)
  cell = {**error_cell(target, estimate, region), "diverged": count,
          "images": len(estimate)}
  if count:
    for c in (cell, cell["rmse_255"]):
      c["mean"] = c["sem"] = float("nan")
  return cell


def _check_count(num_examples: int, split: str = "test") -> None:
  # Was: 2.5 a TypeError of the slice, True taken as 1.
  if not is_integer(num_examples) or num_examples == 0 or num_examples < -1:
    raise InputError(f"num_examples={num_examples!r}; pass a positive count of {split} images, "
                     "or -1 for all of them.")


_CAPS_SAID: set[tuple[int, str, int]] = set()  # (asked, split, held) warned of.


def _test_examples(dataset: Dataset, num_examples: int, split: str = "test"):
  _check_count(num_examples, split)
  test = dataset[split]
  n = len(test) if num_examples < 0 else min(num_examples, len(test))
  if n == 0:
    raise InputError(f"the {split} split is empty; nothing to evaluate.")
  if n < num_examples and (num_examples, split, n) not in _CAPS_SAID:
    # Was: capped without a word (the results' `n` said it). Once per process: one
    # `evaluate` reads the examples for each run and for its comparisons.
    _CAPS_SAID.add((num_examples, split, n))
    logging.warning("num_examples=%d, but the %s split holds %d images; using all %d",
                    num_examples, split, n, n)
  images = test.images[:n]
  fg = None if test.masks is None else (test.masks[:n, ..., None] > 127).astype(np.float32)
  return images, test.attributes[:n], fg


def test_examples(dataset: Dataset, num_examples: int = -1) -> tuple:
  """The test examples `evaluate_model` scores a model on.

  Args:
    dataset: the loaded dataset.
    num_examples: the first N test examples; -1 = all.
  Returns:
    (images uint8 [N, S, S, 3], attributes [N, y_dim], foreground masks float32
    [N, S, S, 1] in {0, 1} or None where the data have none).
  Raises:
    InputError: a count that is neither positive nor -1, or an empty test split.
  """
  return _test_examples(dataset, num_examples)


def same_examples(a: tuple, b: tuple) -> bool:
  """Whether two `test_examples` are the same, so that rows scored on them compare.

  Args:
    a, b: `test_examples` outputs (e.g. of two runs' datasets).
  Returns:
    True when the images and attributes are equal, and the foreground masks too where both
    have them (a disCVAE's data load masks, a CVAE's on the same images may not).
  """
  (xa, ya, fa), (xb, yb, fb) = a, b
  return (np.array_equal(xa, xb) and np.array_equal(ya, yb)
          and (fa is None or fb is None or np.array_equal(fa, fb)))


def crop_frame(config: Any) -> int:
  """The side of the whole images that a run's test images are centre crops of:
  `config.data.image_size` where `config.data.augment.crop_size` crops, else 0 (whole). The
  face boxes lie where they are in the whole image (`occlusions.make_mask`'s crop_from).

  Args:
    config: the run's config.
  Returns:
    The side, or 0.
  """
  crop = config.data.augment.crop_size
  return config.data.image_size if crop and crop < config.data.image_size else 0


def occlusion_seed(key: Optional[jax.Array], seed: Optional[int] = None) -> int:
  """The seed of the random occlusions (`occlusions.make_masks`) that `evaluate_model`,
  `tune_inference` and `evaluate_mean_image` draw: `seed` where it is given, else one derived
  from `key`, else (neither: the baseline without a key) 0.

  The derived seed is the key's data (`jax.random.key_data`: 32-bit words) read as one
  integer, the first word the most significant, modulo 2**31. For the default PRNG (threefry)
  the key of seed S < 2**31 holds the words (0, S), so `jax.random.key(S)` (or
  `jax.random.PRNGKey(S)`) derives seed S: infer.py's --seed=S, which passes
  key=jax.random.key(S), seed=S, draws the same masks. Was: `seed` defaulted to 0, so a
  notebook that varied `key` scored the seed-0 masks every time (fault hunt).

  Args:
    key: the PRNG key of the inference (`check_key`'s kinds: concrete, not traced), or None.
    seed: an integer of at least 0, or None to derive it from `key`.
  Returns:
    The seed, an integer of at least 0.
  Raises:
    InputError: a key that is not a PRNG key, or a seed that is neither None nor an integer
      of at least 0.
  """
  if key is not None:
    check_key(key)
  if seed is not None:
    return check_int(seed, "seed", 0)
  if key is None:
    return 0
  words = key
  if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
    words = jax.random.key_data(key)
  value = 0
  for word in np.asarray(words, np.uint32).reshape(-1).tolist():
    value = (value << 32) | int(word)
  return value % 2**31


def evaluate_model(trained: inference.TrainedModel, dataset: Dataset, *,
                   occlusion_names: Optional[Sequence[str]] = None, num_examples: int = -1,
                   key: jax.Array, options: Optional[inference.InferenceOptions] = None,
                   seed: Optional[int] = None) -> dict[str, Any]:
  """Reconstruction and completion errors of one trained model on the test split.

  Args:
    trained: from `inference.load_trained`.
    dataset: the dataset it was trained on (its test split is used), as loaded or as the
      model sees it (`data.base.centre_cropped`: a run whose training cropped is scored on the
      centre crops).
    occlusion_names: completion masks (None: all that suit the dataset; []: none, the
      reconstruction columns only).
    num_examples: the first N test images; -1 = all.
    key: PRNG key of the inference.
    options: the optimisation settings (default: the run's `config.inference`, with the
      test attributes given: `infer_attributes` off).
    seed: seed of the random occlusions (the same for every model, so rows compare); None
      (the default) derives it from `key` (`occlusion_seed`: jax.random.key(S) gives S).
      infer.py --seed=S is key=jax.random.key(S), seed=S.
  Returns:
    {"model", "step", "num_examples", "options", "rows": {row: {column: cell}}}, each
    cell an `error_cell` (squared error on [0, 1], and "rmse_255").
  Raises:
    InputError: a model that is not a `TrainedModel` (a path: `inference.load_trained`) or a
      dataset that is not a `Dataset` (`inference.load_data`), a count that is not one, a
      seed that is not an integer of at least 0, an empty test split, a key that is not a
      PRNG key, options that are not `InferenceOptions` (a dict) or that infer the
      attributes, or a dataset whose attributes are not in the run's order
      (`inference.load_data`).
  """
  check_key(key)
  _check_count(num_examples)  # Before anything else is read.
  # Was named as make_masks' offset seed (9.5 for 2.5); was 0 whatever the key (fault hunt).
  seed = occlusion_seed(key, seed)
  _check_model_and_data(trained, dataset)
  _check_attribute_order(trained, dataset)
  dataset = centre_cropped(dataset, trained.config.data.augment.crop_size)
  whole = crop_frame(trained.config)  # Also where `dataset` holds the crops already.
  images, attrs, fg = _test_examples(dataset, num_examples)
  x01 = to_unit(images)
  n, s = images.shape[0], images.shape[1]
  names = occlusions.check_names(occlusions.occlusions_for(dataset.name, s, whole)
                                 if occlusion_names is None else occlusion_names)
  options = _options(trained, options)
  _attributes_given(options, "the options")
  # The recognition row is the encoder's mean decoded, whatever `init` the run's options name
  # (was: with init "zeros" or "prior" it decoded z = 0 or a prior draw under that label).
  methods = {"optimisation": options, "recognition": inference.recognition_options(options)}
  masks = occlusions.make_masks(names, s, n, seed=seed, dataset=dataset.name, crop_from=whole)
  rows: dict[str, dict[str, Any]] = {}
  for method, opts in methods.items():
    row = rows.setdefault(method, {})
    out = inference.reconstruct(trained, images, attrs, key=key, options=opts)
    _check_outputs_finite(trained, out["reconstruction"], method, optimised=opts.steps > 0,
                          diverged=posterior.diverged_of(out),
                          energy=out.get("energy"))
    everywhere = np.ones_like(x01[..., :1])
    row[RECON_FULL] = error_cell(x01, out["reconstruction"], everywhere)
    if fg is not None:
      row[RECON_FG] = error_cell(x01, out["reconstruction"], fg)
    for name, observed in masks.items():
      out = inference.complete(trained, images, attrs, observed, key=key, options=opts)
      # Was: NaN completions were left out of the mean (`mean_sem` skips them), status 0.
      _check_outputs_finite(trained, out["completion"], f"{method}, {name}", "completes",
                            optimised=opts.steps > 0,
                            diverged=posterior.diverged_of(out), energy=out.get("energy"))
      row[name] = error_cell(x01, out["completion"], 1.0 - observed)
  return {"model": trained.model.label, "step": trained.step, "num_examples": n,
          "options": dataclasses.asdict(options), "rows": rows}


def tune_inference(trained: inference.TrainedModel, dataset: Dataset, *,
                   grid: Iterable[Mapping[str, Any]], occlusion_names: Sequence[str],
                   num_examples: Optional[int] = None, key: jax.Array,
                   options: Optional[inference.InferenceOptions] = None,
                   seed: Optional[int] = None) -> list[dict[str, Any]]:
  """Validation-split errors for a grid of inference settings (how the defaults were chosen).

  Args:
    trained: from `inference.load_trained`.
    dataset: its dataset (centre cropped as in `evaluate_model`); the validation split is
      used, never the test split.
    grid: option overrides to compare, e.g. [{"prior_weight": 1.0, "learning_rate": 0.05}].
    occlusion_names: the completions to score (hidden-pixel error), besides reconstruction.
    num_examples: the first N validation images; -1 = all; None = the first 256, or all when
      there are fewer.
    key: PRNG key.
    options: the settings each grid point overrides (default: the run's `config.inference`),
      so that e.g. `steps` and `restarts` hold for every row.
    seed: seed of the random occlusions; None (the default) derives it from `key`, as in
      `evaluate_model`. infer.py --mode=tune --seed=S is key=jax.random.key(S), seed=S.
  Returns:
    One dict per setting: "options" (every setting it ran with) and an error per column
    (`error_cell`, plus "diverged": the images whose inference gave NaN or infinity, or
    diverged (no finite energy, or one ended clearly above its start:
    `inference.posterior.diverged_images`), of "images"; where any did, the column's means
    and s.e. are
    NaN).
  Raises:
    ConfigError: a setting with an unknown option or an invalid value (every setting is
      checked before the first runs).
    InputError: a model that is not a `TrainedModel` (a path: `inference.load_trained`) or a
      dataset that is not a `Dataset` (`inference.load_data`), options that are not
      `InferenceOptions` (a dict), an empty grid or a setting that is not a mapping or infers
      the attributes, a count that is not one, a seed that is not an integer of at least 0,
      an empty validation split, a key that is not a PRNG key, or a dataset whose attributes
      are not in the run's order (`inference.load_data`).
  """
  check_key(key)
  _check_model_and_data(trained, dataset)
  seed = occlusion_seed(key, seed)  # Was 0 whatever the key (fault hunt).
  settings = _grid_options(grid, _options(trained, options))
  _check_attribute_order(trained, dataset)
  dataset = centre_cropped(dataset, trained.config.data.augment.crop_size)
  whole = crop_frame(trained.config)
  if num_examples is None:
    num_examples = min(TUNE_EXAMPLES, len(dataset["validation"])) or -1
  images, attrs, _ = _test_examples(dataset, num_examples, "validation")
  x01 = to_unit(images)
  n, s = images.shape[0], images.shape[1]
  masks = occlusions.make_masks(occlusion_names, s, n, seed=seed, dataset=dataset.name,
                                crop_from=whole)
  rows = []
  for opts in settings:
    out = inference.reconstruct(trained, images, attrs, key=key, options=opts)
    row = {"options": dataclasses.asdict(opts),
           RECON_FULL: _tuning_cell(x01, out["reconstruction"], np.ones_like(x01[..., :1]),
                                    posterior.diverged_of(out))}
    for name, observed in masks.items():
      out = inference.complete(trained, images, attrs, observed, key=key, options=opts)
      row[name] = _tuning_cell(x01, out["completion"], 1.0 - observed,
                               posterior.diverged_of(out))
    rows.append(row)
  return rows


def _grid_options(grid: Iterable[Mapping[str, Any]], base: inference.InferenceOptions
                  ) -> list[inference.InferenceOptions]:
  """Every setting of a tuning grid as options, `base` overridden by it, checked up front."""
  example = "[{'prior_weight': 1.0}, {'prior_weight': 3.0}]"
  if isinstance(grid, (str, bytes, Mapping)) or not isinstance(grid, Iterable):
    raise InputError(f"grid is a {type(grid).__name__}; pass a list of option overrides, one "
                     f"dict per setting, e.g. {example}.")
  grid = list(grid)  # A generator is read once.
  if not grid:
    raise InputError(f"grid is empty; pass a list of option overrides, e.g. {example}.")
  settings = []
  for i, overrides in enumerate(grid):
    if not isinstance(overrides, Mapping):
      raise InputError(f"grid[{i}] is a {type(overrides).__name__}; each setting is a dict of "
                       "option overrides, e.g. {'prior_weight': 1.0}.")
    try:
      settings.append(inference.InferenceOptions.from_config(dataclasses.asdict(base),
                                                             **overrides))
    except ConfigError as e:
      raise ConfigError(f"grid[{i}] {dict(overrides)}: {e}") from None
    _attributes_given(settings[-1], f"the options of grid[{i}] {dict(overrides)}")
  return settings


def evaluate_mean_image(dataset: Dataset, *, occlusion_names: Optional[Sequence[str]] = None,
                        num_examples: int = -1, seed: Optional[int] = None,
                        crop_size: int = 0, crop_from: int = 0,
                        key: Optional[jax.Array] = None) -> dict[str, Any]:
  """The model-free baseline: every estimate is the mean training image.

  Args:
    dataset: the dataset (mean of its training images; errors on its test split).
    crop_size: where `dataset` holds the whole images (`data.load_dataset`'s), the runs'
      `config.data.augment.crop_size`: scored on the same centre crops as `evaluate_model`
      scores them (0: the images as they are).
    crop_from: where `dataset` holds the centre crops already (`inference.load_data`'s, as
      infer.py's does), the side of the whole images, `crop_frame(config)`, so that the face
      boxes lie where they are in those, as `evaluate_model` places them; 0 takes the images
      as whole.
    occlusion_names: the completions to score; None: those `occlusions.occlusions_for` gives
      the dataset and its crop.
    num_examples: test images to use; -1 for all.
    seed: seeds the random occlusions (as in `evaluate_model`); None (the default) derives
      it from `key` as `evaluate_model` does (`occlusion_seed`: jax.random.key(S) gives S),
      so the baseline scores the masks of `evaluate_model(key=key)`; without a key, 0.
      infer.py passes seed=--seed.
    key: the PRNG key given to `evaluate_model` (it draws nothing here), or None.
  Returns:
    {"model", "step", "num_examples", "rows": {"fill": {column: error_cell}}}, the same
    layout as `evaluate_model`.
  Raises:
    InputError: a dataset that is not a `Dataset`, a seed that is not an integer of at least
      0, a key that is not a PRNG key, an unknown occlusion name, a face box the crop leaves
      out, a crop_size without crop_from for images of that size already (crops or whole
      images: it cannot tell), or a crop_from that is not the side of the images crop_size
      crops.
  """
  _check_dataset(dataset, "inference.load_data(trained), or data.load_dataset(config.data)")
  # Was named as make_masks' offset seed (9.5 for 2.5). Was 0 whatever the key, so the
  # baseline's masks were not those of evaluate_model(key=key(S)) for S != 0 (review).
  seed = occlusion_seed(key, seed)
  cropped = centre_cropped(dataset, crop_size)
  side = dataset["test"].images.shape[1]
  how = ("where they are centre crops already (inference.load_data's, of a run that crops), "
         "pass crop_from=the whole images' side (evaluation.crop_frame(config)) and no "
         "crop_size; where they are the whole images, pass crop_size=0")
  if crop_size and cropped is dataset and not crop_from:
    # Was: taken as whole images, their face boxes misplaced without a word for the crops
    # inference.load_data returns (a review's finding).
    raise InputError(f"crop_size={crop_size}, but the dataset's images are {side}x{side} "
                     f"already, crops of larger images or whole ones (where the face boxes "
                     f"lie depends on which): {how}.")
  if cropped is not dataset and crop_from and crop_from != side:
    raise InputError(f"crop_from={crop_from}, but the dataset's images are {side}x{side}, "
                     f"cropped here to crop_size={crop_size}; {how}.")
  whole = side if cropped is not dataset else crop_from
  dataset = cropped
  images, _, fg = _test_examples(dataset, num_examples)
  x01 = to_unit(images)
  n, s = images.shape[0], images.shape[1]
  names = (occlusions.occlusions_for(dataset.name, s, whole) if occlusion_names is None
           else occlusion_names)
  mean = dataset["train"].images.astype(np.float32).mean(axis=0) / 255.0
  est = np.broadcast_to(mean, x01.shape)
  row = {RECON_FULL: error_cell(x01, est, np.ones_like(x01[..., :1]))}
  if fg is not None:
    row[RECON_FG] = error_cell(x01, est, fg)
  for name, observed in occlusions.make_masks(names, s, n, seed=seed, dataset=dataset.name,
                                              crop_from=whole).items():
    row[name] = error_cell(x01, est, 1.0 - observed)
  return {"model": "mean training image", "step": 0, "num_examples": n, "rows": {"fill": row}}


def _fmt(cell: Optional[Mapping[str, Any]], scale: float, most: int) -> str:
  """"mean ± s.e." of `cell`, and its count where it is below `most` (the table's largest):
  a column whose region some images lack averages fewer images (was not said). A value that is
  None (NaN, as an evaluation.json read back holds it) is missing: "–"."""
  mean = cell.get("mean") if cell else None
  if mean is None or not np.isfinite(mean):
    return "–"
  sem = cell.get("sem")
  sem = f"{sem * scale:.2f}" if sem is not None and np.isfinite(sem) else "–"
  n = cell.get("n")
  fewer = f" (n = {n})" if n is not None and n < most else ""
  return f"{mean * scale:.2f} ± {sem}{fewer}"


def _as_made(made_by: str) -> str:
  """The fix that ends each of `markdown_table`'s refusals (`made_by`: the functions whose
  outputs it takes)."""
  return f"pass {made_by} outputs as they returned them, or as evaluation.json holds them."


def _number(value: Any, where: str, made_by: str) -> Any:
  """`value` where it is a real number or None (missing: NaN written as null); an InputError
  naming `where` otherwise (was a TypeError from the formatting, e.g. for a string)."""
  if value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
    return value
  raise InputError(f"{where} is {value!r:.60}, not a number (or null); {_as_made(made_by)}")


def _mapping(value: Any, where: str, what: str, made_by: str,
             keys: Sequence[str] = ()) -> Optional[Mapping[str, Any]]:
  """`value` where it is None (missing) or a mapping that holds `keys`; an InputError naming
  `where` otherwise (was a KeyError, TypeError or AttributeError from inside the table)."""
  if value is not None and not isinstance(value, Mapping):
    raise InputError(f"{where} is a {type(value).__name__}, not {what}; {_as_made(made_by)}")
  missing = [k for k in keys if value is not None and k not in value]
  if missing:
    raise InputError(f"{where} lacks {', '.join(map(repr, missing))}; {_as_made(made_by)}")
  return value


def _check_rows(results: list, made_by: str) -> None:
  """Refuses `markdown_table` results whose rows or cells are not as `evaluate_model` makes
  them: "rows" a mapping of rows, each row a mapping of cells, each cell None or a mapping
  with a "mean" whose values are numbers or None (and "rmse_255" None or such a cell)."""
  for i, r in enumerate(results):
    where = f"results[{i}]['rows']"
    if not isinstance(r["rows"], Mapping):  # None too: a result without rows scores nothing.
      what = "None" if r["rows"] is None else f"a {type(r['rows']).__name__}"
      raise InputError(f"{where} is {what}, not a mapping of rows; {_as_made(made_by)}")
    for method, row in r["rows"].items():
      row = _mapping(row, f"{where}[{method!r}]", "a mapping of cells", made_by)
      for column, cell in (row or {}).items():
        _check_cell(cell, f"{where}[{method!r}][{column!r}]", made_by, inner="rmse_255")


def _check_cell(cell: Any, where: str, made_by: str, inner: Optional[str] = None) -> None:
  """Refuses an error cell that is neither None nor a mapping with a "mean" whose "mean",
  "sem" and "n" are numbers or None, and whose `inner` cell (if any) is such a cell too."""
  cell = _mapping(cell, where, "an error cell", made_by, ("mean",))
  if cell is None:
    return
  for key in ("mean", "sem", "n"):
    _number(cell.get(key), f"{where}[{key!r}]", made_by)
  if inner is not None:
    _check_cell(cell.get(inner), f"{where}[{inner!r}]", made_by)


def markdown_table(results: Iterable[Mapping[str, Any]], scale: float = 100.0) -> str:
  """The error tables: a row per (model, method), a column per error. The first gives the
  squared error on [0, 1] x `scale`; where the cells carry "rmse_255" (`error_cell`), a
  second gives the root mean squared error on the 0-255 scale.

  Args:
    results: a list of `evaluate_model` / `evaluate_mean_image` outputs, or their copies read
      back from an evaluation.json (a value None there, a NaN written as null, or a cell
      None, is shown missing: "–").
    scale: the squared errors are multiplied by this for display (default: x100).
  Returns:
    The tables, each with a caption line stating its unit.
  Raises:
    InputError: `results` that are not a list of such outputs (one output alone, None; rows
      that are not a mapping of rows of cells, a cell without "mean", a value that is not a
      number), or a scale that is not a positive number (a string).
  """
  made_by = "evaluate_model or evaluate_mean_image"
  results = _listed(results, "results", ("model", "rows"), made_by)
  # Was a KeyError, TypeError or AttributeError from inside the table (a review's finding).
  _check_rows(results, made_by)
  # Was: "100" a ValueError of the format ("Unknown format code 'g'").
  if (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
      or not 0 < scale < math.inf):
    raise InputError(f"scale={scale!r} is not valid; pass a positive number, e.g. 100 (the "
                     "squared errors are multiplied by it for display).")
  text = _table(results, f"Per-pixel squared error on [0, 1] images x {scale:g}", scale,
                lambda cell: cell)
  if any(cell.get("rmse_255") is not None for r in results for row in r["rows"].values()
         for cell in (row or {}).values() if cell):
    text += "\n" + _table(results, "Root mean squared error on the 0-255 scale (each image's "
                          "over its pixels)", 1.0, lambda cell: cell.get("rmse_255"))
  return text


def _listed(results: Any, name: str, keys: Sequence[str], made_by: str) -> list:
  """`results` (the argument `name`) as a list of the outputs of `made_by`, each a mapping
  with `keys`. Was: one output alone a TypeError ("string indices must be integers": its keys
  iterated as the outputs), None "'NoneType' object is not iterable", a mapping without a key
  a KeyError."""
  if isinstance(results, (Mapping, str, bytes)) or not isinstance(results, Iterable):
    what = "None" if results is None else f"a {type(results).__name__}"
    raise InputError(f"{name} is {what}, not a list of {made_by} outputs; pass a list of them, "
                     "e.g. [result].")
  results = list(results)  # A generator is read once.
  for i, r in enumerate(results):
    missing = [k for k in keys if k not in r] if isinstance(r, Mapping) else list(keys)
    if missing:
      what = f"lacks {', '.join(map(repr, missing))}" if isinstance(r, Mapping) else (
          f"is a {type(r).__name__}")
      raise InputError(f"{name}[{i}] {what}; pass a list of {made_by} outputs, e.g. [result].")
  return results


def _table(results: list, unit: str, scale: float, pick: Any) -> str:
  """One of `markdown_table`'s tables, of the cells `pick(cell)` (None: "–")."""
  columns: list[str] = []
  for r in results:
    for row in r["rows"].values():
      columns += [c for c in (row or {}) if c not in columns]
  most = max((cell.get("n") or 0 for r in results for row in r["rows"].values()
              for cell in (row or {}).values() if cell), default=0)
  head = "| model | method | " + " | ".join(columns) + " |"
  lines = [f"{unit}, mean ± s.e. over test images; completion columns count the hidden "
           "pixels only; (n = K): a cell over fewer images than the others.", "", head,
           "|" + " --- |" * (len(columns) + 2)]
  for r in results:
    for method, row in r["rows"].items():
      row = row or {}
      cells = [_fmt(pick(row[c]) if row.get(c) else None, scale, most) for c in columns]
      lines.append(f"| {r['model']} | {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_json(obj: Any, path: str) -> None:
  """Writes JSON atomically (NaN written as null).

  Args:
    obj: dicts, lists, numbers (numpy scalars included) and strings.
    path: the file; its folder is created.
  Raises:
    InputError: a path that is not one (None), is a folder or lies inside a file, or an
      `obj` that JSON cannot hold (an array, an object).
    OSError: the write failed (disk full, permissions).
  """
  # Were Python's TypeError (None, an object), IsADirectoryError and FileExistsError.
  full = files.check_output_file(path, "JSON", "results.json", InputError)
  try:
    text = json.dumps(files.strict_json(obj), indent=2, allow_nan=False)
  except (TypeError, ValueError) as e:  # An array, an object; a list that holds itself.
    raise InputError(f"{os.fspath(path)}: JSON cannot hold this ({first_line(e)}); pass dicts, "
                     "lists, numbers and strings (an array: .tolist()).") from None
  # A failed write (disk full, permissions) stays the OSError: infer.py's `_write` makes it
  # one line naming the file in --out, not its staging path.
  files.atomic_write(full, text)


# ----------------------------------------------------------------------------------------------
# Attribute fidelity (a predictor trained on the real training images scores generated ones).

def _check_predictor(predictor: Any, trained: inference.TrainedModel, dataset: Dataset,
                     image_size: int) -> None:
  """Refuses a predictor that would score the run's samples wrong, before anything is sampled.

  A predictor of other attributes than `dataset`'s, or of the same in another order: each test
  attribute would be scored against another one's prediction (was: scored without a word, e.g.
  the predictor of another run's folder dataset, `load_predictor`); a predictor's path, which
  was an AttributeError after the sampling; anything else that is not a `Predictor` (None was
  an AttributeError after the sampling); one of other images than `image_size`, the side of
  the run's test images (was refused by `predict` only after the sampling, as images "this
  model" does not take: one trained on the whole 32x32 images of a run that crops to 28).

  A predictor of other attribute kinds (a column it reads as binary that the dataset holds as
  continuous, or the reverse): the column would be scored as accuracy against a threshold its
  values do not have, or as a correlation of two classes (was: scored without a word).

  A predictor trained on other images (its `meta.test_fingerprint`, of the test split it was
  made with, is not the dataset's): its scores would be of its own test split's images
  (was: taken, with a docstring that said so, and the numbers silently wrong; a review's
  finding). The fingerprint covers the test split's images and attributes alone, not the
  masks nor the training split, so that infer.py's evaluation of several runs, which share
  run 0's predictor, takes it for each run evaluated on the same test split (a disCVAE run's
  data hold masks; runs of other training sizes share the test split only). A predictor that
  records no fingerprint (made by hand, not by `train_predictor`) is refused the same way.
  """
  from a2i_jax import attribute_predictor as ap  # pylint: disable=import-outside-toplevel
  how = ("attribute_predictor.load_or_train(trained.config.attribute_predictor, "
         "inference.load_data(trained), workdir)")
  ap.check_predictor(predictor)  # A path, None, anything but a Predictor.
  meta = predictor.meta
  theirs, names = meta.attribute_names, tuple(dataset.attribute_names)
  if names != theirs:
    how_differ = "in another order" if sorted(names) == sorted(theirs) else "other attributes"
    raise InputError(f"the attribute predictor scores {', '.join(theirs)} (trained on "
                     f"{meta.dataset!r}), the dataset has {', '.join(names)} "
                     f"({how_differ}); score with the predictor of this dataset: {how}.")
  kinds = tuple(dataset.attribute_kinds)
  if tuple(meta.attribute_kinds) != kinds:
    j = next(i for i, (a, b) in enumerate(zip(meta.attribute_kinds, kinds)) if a != b)
    raise InputError(f"the attribute predictor reads {names[j]!r} as {meta.attribute_kinds[j]} "
                     f"(trained on {meta.dataset!r}), the dataset holds it as {kinds[j]}; score "
                     f"with the predictor of this dataset: {how}.")
  if meta.image_size != image_size:
    whole = crop_frame(trained.config)
    what = f"{image_size}x{image_size}" + (f" centre crops of {whole}x{whole}" if whole else "")
    raise InputError(f"the attribute predictor takes {meta.image_size}x{meta.image_size} images, "
                     f"but the run's test images are {what}; train it on the images the model "
                     f"sees: {how}.")
  if not meta.test_fingerprint or meta.test_fingerprint != ap.training.split_fingerprint(dataset):
    why = ("records no test split (made by hand, not by train_predictor, or of data without "
           "one), so it may be of other images" if not meta.test_fingerprint else
           f"was trained on other images (trained on {meta.dataset!r}, its test split is not "
           "this dataset's), so its scores and its ceiling would be of those")
    raise InputError(f"the attribute predictor {why}; score with the predictor of this "
                     f"dataset: {how}.")


# How far a progression's images (0..1) may move along its sweep and still count as not
# moving (`attribute_report`'s flat rule): far above float rounding, far below one 8-bit step.
FLAT_IMAGE_TOLERANCE = 1e-5


def attribute_report(trained: inference.TrainedModel, dataset: Dataset, predictor: Any, *,
                     key: jax.Array, num_examples: int = -1,
                     options: Optional[inference.InferenceOptions] = None,
                     num_bases: int = 4, num_values: int = 5) -> dict[str, Any]:
  """Scores a model's attribute use with the dataset's attribute predictor.

  Three measurements on the test split's attribute vectors / images:
    samples: images sampled for the test attributes, scored against those attributes
      (accuracy for binary, correlation for continuous attributes, with chance levels);
    progressions: for each attribute, `num_bases` test vectors x 4 latents swept over
      `num_values` values from the training minimum to maximum; the Spearman correlation of
      the predicted against the swept value (1 = the attribute moves as asked). Their mean
      counts an attribute whose predicted value never moves (a flat response: Spearman NaN,
      or the same image at every swept value, as the VAE control gives) as 0, no response,
      and leaves out one of a single value in training (nothing to sweep); both are listed;
    inference (conditional models): attributes inferred jointly with z from the test images
      (y unknown), scored against the true attributes.

  Args:
    trained: from `inference.load_trained`.
    dataset: its dataset (centre cropped as in `evaluate_model`).
    predictor: an `attribute_predictor.Predictor` trained on the dataset as the model sees
      it (the same test split, centre crops where the run crops: `load_or_train`).
    key: PRNG key.
    num_examples: first N test examples (-1 = all).
    options: inference settings for attribute inference (default: the run's).
    num_bases, num_values: size of the progression check.
  Returns:
    {"model", "samples": score dict, "progression": {name: sweep summary},
     "progression_mean_spearman", "progression_flat": [the names whose predicted value, or
     whose images, never moved, counted as 0 in the mean], "progression_unswept": [the
     names of a single value in training, left out of it], "inference": score dict or None,
     "ceiling": score dict of the predictor on the real images of the same N test rows (what
     a perfect generator could reach on them), "ceiling_whole_test_split": the predictor's
     scores on the whole test split at its training (`meta.test_metrics`, without the
     per-attribute detail; its "num_images" the split's size)}. Each score dict holds its
     "num_images".
  Raises:
    InputError: a model that is not a `TrainedModel` (a path: `inference.load_trained`) or a
      dataset that is not a `Dataset` (`inference.load_data`), a count that is not one
      (num_bases below 1, num_values below 2), an empty test split, a key that is not a PRNG
      key, options that are not `InferenceOptions` (a dict), a predictor that is not a
      `Predictor` (a path, None), a dataset whose attributes are not in the run's order
      (`inference.load_data`) or not the predictor's (names, order or kinds), a predictor of
      another image size than the run's test images (the whole images of a run that crops)
      or trained on other images (another test split: `meta.test_fingerprint`;
      `load_or_train` of the run's data gives the right one), or samples that are NaN or
      infinite (a damaged or diverged model).
  """
  from a2i_jax import attribute_predictor as ap  # pylint: disable=import-outside-toplevel
  check_key(key)
  _check_count(num_examples)  # Before anything else is read.
  # Was: num_bases=0 a ValueError from np.concatenate after the sampling; num_values=1 a
  # Spearman of NaN for every attribute.
  num_bases = check_int(num_bases, "num_bases", 1)
  num_values = check_int(num_values, "num_values", 2)
  _check_model_and_data(trained, dataset)
  # Was checked by the attribute inference, after the sampling and the progressions.
  _check_options(options)
  _check_attribute_order(trained, dataset)
  dataset = centre_cropped(dataset, trained.config.data.augment.crop_size)
  images, attrs, _ = _test_examples(dataset, num_examples)
  _check_predictor(predictor, trained, dataset, images.shape[1])
  train_y = dataset["train"].attributes
  k_sample, k_prog, k_inf = jax.random.split(key, 3)
  samples = inference.sample(trained, attrs, k_sample)["image"]
  # The predictor would score NaN images as some class (was: published, status 0).
  _check_outputs_finite(trained, samples, "sampling", "generates",
                        "images for the test attributes")
  report: dict[str, Any] = {"model": trained.model.label,
                            "samples": ap.fidelity(predictor, samples, attrs)}
  # The ceiling: the predictor on the real images of the same rows, so that it covers the
  # images and attributes the samples are scored on (was `meta.test_metrics`, of the whole
  # test split at the predictor's training, beside samples of the first N: 1000 images beside
  # 300, in one row of the table without a count; a fault hunt's finding). That figure is kept
  # under a name that says what it covers.
  report["ceiling"] = ap.fidelity(predictor, images, attrs)
  report["ceiling"].pop("ceiling", None)
  report["ceiling_whole_test_split"] = report["samples"].pop("ceiling", None)
  prog, flat, unswept = {}, [], []
  for j, name in enumerate(dataset.attribute_names):
    values = np.linspace(train_y[:, j].min(), train_y[:, j].max(), num_values)
    grids = [inference.progression(trained, attrs[b], j, values,
                                   key=jax.random.fold_in(k_prog, b), num_latents=4)
             for b in range(min(num_bases, len(attrs)))]
    grid = np.concatenate(grids)
    r = ap.sweep_response(predictor, grid, values, j)
    prog[name] = {"spearman": r["spearman"], "mean_by_step": r["mean_by_step"],
                  "swept_values": r["swept_values"]}
    if values[0] == values[-1]:  # One value in training: nothing to sweep.
      unswept.append(name)
    # Finite swept values that move: the predicted value never did (finite, from finite
    # images and weights), or the images themselves never did, whatever the predictor's
    # rounding across its batch made of them (was: the VAE control's pooled Spearman of
    # +-0.002 from the same image read at other batch positions, never listed as flat).
    # Equal within rounding: the same z decoded at another batch position differs in its
    # last bits (3e-8 to 6e-8 here), far below one 8-bit step (read-through: was bit-equal).
    elif not np.isfinite(r["spearman"]) or bool(
        np.max(np.abs(np.asarray(grid, np.float32) - np.asarray(grid[:, :1], np.float32)),
               initial=0.0) <= FLAT_IMAGE_TOLERANCE):
      flat.append(name)
  report["progression"] = prog
  # A flat response counts as 0, no response (was: left out by np.nanmean, so an attribute
  # that did not move at all raised the mean above that of one that moved a little).
  counted = [0.0 if name in flat else p["spearman"] for name, p in prog.items()
             if name not in unswept]
  report["progression_mean_spearman"] = float(np.mean(counted)) if counted else float("nan")
  report["progression_flat"] = flat
  report["progression_unswept"] = unswept
  report["inference"] = None
  if trained.model.uses_attributes:
    # Process 0's prior on every process: a matrix inverse may differ in its last bits between
    # hosts, and the inference compares its inputs bit for bit across processes.
    prior = inference.AttributePrior.fit(train_y).of_process_0()
    out = inference.infer_attributes(trained, images, prior, key=k_inf, options=options)
    y = out["y"]
    # Was: a NaN attribute scored as the low class of every binary column, status 0.
    _check_outputs_finite(trained, y, "attribute inference", "infers the attributes of",
                          "test images", optimised=True,
                          diverged=posterior.diverged_of(out), energy=out.get("energy"))
    report["inference"] = ap.score(predictor, y, attrs)
  return report


def attribute_table(reports: Iterable[Mapping[str, Any]]) -> str:
  """Markdown summary of `attribute_report` outputs, one row per model.

  Args:
    reports: a list of `attribute_report` outputs (each with a "model" name added), or their
      copies read back from an evaluation.json: a value None there (a NaN written as null),
      or a part None ("inference" of an unconditional model), is shown missing: "–".
  Returns:
    The table: n, the test images the samples were scored on (a part scored on another count,
    as the ceiling of the whole test split in an evaluation.json of before 2026-12-06, says
    "(n = K)"); the progression Spearman and the continuous correlations say how many
    attributes had a flat response (counted as 0 in the mean).
  Raises:
    InputError: `reports` that are not a list of such outputs (one output alone, None; a part
      that is not a mapping or lacks a score, a score that is not a number).
  """
  made_by = "attribute_report"
  reports = _listed(reports, "reports", ("model", "samples", "progression_mean_spearman",
                                         "inference", "ceiling"), made_by)
  scores = ("binary_accuracy", "binary_chance", "continuous_correlation")
  def f(x, where):
    x = _number(x, where, made_by)
    return "–" if x is None or not np.isfinite(x) else f"{x:.3f}"
  lines = ["| model | n | samples: binary acc. (chance) | samples: continuous corr. | "
           "progression Spearman | inferred y: binary acc. (chance) | inferred y: continuous "
           "corr. | predictor on the same real images: acc. / corr. |",
           "|" + " --- |" * 8]
  for i, r in enumerate(reports):
    # Was a KeyError or TypeError from inside the table (a review's finding).
    parts = {part: _mapping(r[part], f"reports[{i}][{part!r}]", "a score mapping", made_by,
                            () if part == "ceiling" else scores)
             for part in ("samples", "inference", "ceiling")}
    cells = {}
    for part, got in parts.items():
      for key in scores:
        value = None if got is None else got.get(key)
        cells[part, key] = f(value, f"reports[{i}][{part!r}][{key!r}]")
    # How many images each part scored: the row's n is the samples'; a part of another count
    # says its own (was: no count, and the ceiling of the predictor's whole test split shown
    # beside samples of the first N; an evaluation.json of then, read back, still holds it).
    counts = {part: None if got is None else _number(
        got.get("num_images"), f"reports[{i}][{part!r}]['num_images']", made_by)
              for part, got in parts.items()}
    n = counts["samples"]
    note = {part: "" if counts[part] is None or counts[part] == n else
            f" (n = {counts[part]:.0f})" for part in parts}  # Was :g: 1.23457e+06.
    for part, got in parts.items():  # Continuous columns of no response, counted as 0.
      cells[part, "continuous_correlation"] += _flat_note(
          None if got is None else got.get("continuous_flat"))
    pair = {part: "–" if parts[part] is None else
            f"{cells[part, 'binary_accuracy']} ({cells[part, 'binary_chance']})"
            for part in ("samples", "inference")}
    inf_c = "–" if parts["inference"] is None else (
        cells["inference", "continuous_correlation"] + note["inference"])
    flat = _flat_note(r.get("progression_flat"))
    spearman = f(r["progression_mean_spearman"], f"reports[{i}]['progression_mean_spearman']")
    lines.append(f"| {r['model']} | {'–' if n is None else f'{n:.0f}'} | {pair['samples']} | "
                 f"{cells['samples', 'continuous_correlation']} | {spearman}{flat} | "
                 f"{pair['inference']} | {inf_c} | {cells['ceiling', 'binary_accuracy']} / "
                 f"{cells['ceiling', 'continuous_correlation']}{note['ceiling']} |")
  return "\n".join(lines) + "\n"


def _flat_note(names: Any) -> str:
  """" (k flat)" for a list of k attributes of no response (a score's continuous_flat, a
  report's progression_flat), counted as 0 in their mean; "" for none."""
  return f" ({len(names)} flat)" if isinstance(names, (list, tuple)) and names else ""
