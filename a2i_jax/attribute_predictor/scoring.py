"""Scoring with the attribute predictor: fidelity of images to their attributes, rank and
linear correlations, and whether attribute sweeps move the attribute they sweep."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from a2i_jax.attribute_predictor.network import (Predictor, PredictorMeta, check_predictor,
                                                 predict)
from a2i_jax.errors import InputError
from a2i_jax.inputs import as_array, check_int, real_dtype


def _real_numbers(value: Any, what: str, refusal: str, fix: str) -> np.ndarray:
  """`value` as float64, refused unless it holds real numbers (bools too), as
  `evaluation.mean_sem` refuses them.

  Args:
    value: an array or nested list.
    what: its name, for a ragged list's message (`inputs.as_array`).
    refusal: the message's start, before "not real numbers (...)".
    fix: the message's end.
  Returns:
    The float64 array.
  Raises:
    InputError: strings (was: "1" read as the number), complex numbers (was: the imaginary
      part dropped, with only NumPy's ComplexWarning), None or other objects, or a list
      whose items differ in shape.
  """
  raw = as_array(value, what)
  if not real_dtype(raw.dtype):
    why = "strings" if raw.dtype.kind in "US" else f"dtype {raw.dtype}"
    raise InputError(f"{refusal} not real numbers ({why}); {fix}")
  return raw.astype(np.float64)


def _vectors(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
  """a and b as float64 vectors of one length; InputError otherwise (was: a broadcast
  ValueError for other lengths, a length-1 vector broadcast against the other, matrices
  flattened, strings a ValueError of NumPy's, strings of digits read as the numbers, complex
  values' imaginary part dropped)."""
  a, b = (_real_numbers(v, "correlation values", "correlation of values that are",
                        "pass two vectors of real numbers of one length.") for v in (a, b))
  if a.ndim != 1 or a.shape != b.shape:
    raise InputError(f"correlation of values of shapes {a.shape} and {b.shape}; pass two "
                     "vectors [N] of one length.")
  return a, b


def pearson(a: np.ndarray, b: np.ndarray) -> float:
  """Pearson correlation of two vectors; NaN when either is constant.

  NaN too when either holds NaN or infinity, or has fewer than two values.

  Args:
    a, b: [N] values.
  Returns:
    The correlation in [-1, 1], or NaN.
  Raises:
    InputError: values that are not real numbers (strings, complex numbers, None), or not
      two vectors of one length.
  """
  a, b = _vectors(a, b)
  if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
    return float("nan")  # Was: NumPy's warnings of an empty mean for N = 0.
  # Was: an absolute cutoff on the product of the norms, so a constant vector's rounding
  # leftover beside a large one gave 0.0, and a vector in small units (1e-7) NaN. Constancy is
  # tested exactly; each vector is scaled to unit norm on its own, so the rest is scale-free.
  if a.max() == a.min() or b.max() == b.min():
    return float("nan")
  a, b = _unit(a), _unit(b)
  if a is None or b is None:  # Distinct values that rounding merged: constant after all.
    return float("nan")
  return float(np.clip((a * b).sum(), -1.0, 1.0))


def _unit(v: np.ndarray) -> np.ndarray | None:
  """v centred and scaled to norm 1 (None where centring leaves nothing). First scaled by a
  power of two to a largest magnitude in [0.5, 1): exact, and no overflow in the mean or the
  squares for values near the float64 limit, nor underflow for tiny ones."""
  v = np.ldexp(v, -np.frexp(np.abs(v).max())[1])
  v = v - v.mean()
  norm = np.sqrt((v * v).sum())
  return v / norm if norm > 0 else None


def _ranks(a: np.ndarray) -> np.ndarray:
  """Ranks 0..n-1 with ties given their average rank."""
  a = np.asarray(a, np.float64)
  order = np.argsort(a, kind="stable")
  ranks = np.empty(len(a), np.float64)
  ranks[order] = np.arange(len(a))
  _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
  sums = np.bincount(inverse, weights=ranks)
  return (sums / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman rank correlation (Pearson on average ranks); NaN when either is constant.

  NaN too when either holds NaN or infinity, or has fewer than two values.

  Args:
    a, b: [N] values.
  Returns:
    The rank correlation in [-1, 1], or NaN.
  Raises:
    InputError: values that are not real numbers (strings, complex numbers, None), or not
      two vectors of one length.
  """
  a, b = _vectors(a, b)
  # Was: NaN ranked as the largest value, so a vector with NaN had a finite correlation.
  if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
    return float("nan")
  return pearson(_ranks(a), _ranks(b))


def _check_targets(predictions: np.ndarray, targets: Any, meta: PredictorMeta) -> np.ndarray:
  # Was: strings and bytes of digits read as the numbers, complex numbers' imaginary part
  # dropped (a review's finding), as `pearson` refuses them.
  t = _real_numbers(targets, "target attributes", "target attributes are",
                    f"pass a float array [N, {len(meta.attribute_names)}].").astype(np.float32)
  if t.ndim != 2 or t.shape != predictions.shape:
    raise InputError(f"target attributes have shape {t.shape}; expected {predictions.shape} "
                     f"(one row per image, {len(meta.attribute_names)} attributes in the "
                     "predictor's order).")
  bad = int((~np.isfinite(t)).any(axis=-1).sum())
  if bad:  # Was: scored, NaN counted as the low class (NaN >= threshold is False).
    raise InputError(f"{bad} of {len(t)} rows of target attributes hold NaN or infinity; pass "
                     "finite targets (drop or fill the rows with missing attributes).")
  # A binary column's targets lie between its two classes and never at the threshold between
  # them (was: {0, 1} targets for a predictor of {-1, +1} all scored as the high class, 0 being
  # its threshold; {-1, +1} for {0, 1} half of them below its low class, scored as low).
  for j, (name, kind) in enumerate(zip(meta.attribute_names, meta.attribute_kinds)):
    if kind != "binary":
      continue
    low, high, column = meta.low[j], meta.high[j], t[:, j]
    slack = 1e-3 * (high - low)
    odd = ((column == np.float32(meta.threshold[j])) | (column < low - slack)
           | (column > high + slack))
    if odd.any():
      # A column of one value in training took its other class from elsewhere (training's
      # `_target_stats`); say so, for a dataset whose classes are neither {0, 1} nor {-1, +1}.
      taken = (" (the predictor saw only the value "
               f"{meta.mean[j]:g} in training and took {high if meta.mean[j] == low else low:g}"
               " for the other)") if meta.mean[j] in (low, high) else ""
      raise InputError(f"target attributes of the binary attribute {name!r} hold "
                       f"{float(column[odd][0]):g}, outside its classes {low:g} and {high:g}"
                       f"{taken} or at the threshold between them ({meta.threshold[j]:g}): "
                       "pass targets on the scale of the predictor's dataset (e.g. not 0/1 for "
                       "a -1/+1 attribute).")
  return t


def _nanmean(values: list[float]) -> float:
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else float("nan")


def score(predictor: Predictor, predictions: np.ndarray, targets: Any, *,
          seed: int = 0) -> dict[str, Any]:
  """Scores predictions against target attributes, per attribute and on average.

  Args:
    predictor: gives the attribute names, kinds and binary thresholds.
    predictions: float [N, A] from `predict`.
    targets: float [N, A] in the dataset's scale.
    seed: the permutation of the shuffled-target baseline.
  Returns:
    {"per_attribute": {name: {"kind", "score", "chance", "shuffled"}}, "binary_accuracy",
    "binary_chance", "binary_shuffled", "continuous_correlation", "continuous_chance",
    "continuous_shuffled", "num_images", "continuous_flat"}. Binary: score = accuracy,
    chance = the majority-class accuracy of the targets, shuffled = accuracy against the
    targets permuted across images. Continuous: score = Pearson correlation, chance = 0,
    shuffled = correlation against permuted targets. A continuous column whose predictions
    never move while its targets do (no response) scores 0 (and shuffled 0) and is listed in
    "continuous_flat"; one whose targets are constant (nothing to follow, or one image) is
    NaN and left out of the means. Means are NaN where a kind is absent.
  Raises:
    InputError: not a `Predictor`, predictions that are not [N, A] real numbers with N >= 1
      (A the predictor's attributes), targets of another shape, predictions or targets that
      are not real numbers (strings, bytes, complex numbers, None) or hold NaN or infinity,
      or a seed that is not an integer of at least 0.
  """
  meta = check_predictor(predictor).meta
  seed = check_int(seed, "seed", 0)  # Was: a ValueError of NumPy's for -1, True taken as 1.
  # Was NumPy's ValueError for a ragged list; strings of digits read as the numbers.
  p = _real_numbers(predictions, "predictions", "predictions are",
                    f"pass the float array [N, {len(meta.attribute_names)}] `predict` "
                    "returns.").astype(np.float32)
  a = len(meta.attribute_names)
  if p.ndim != 2 or p.shape[1] != a:  # Was an IndexError (fewer columns), or scored (more).
    raise InputError(f"predictions have shape {p.shape}; expected [N, {a}], a column per "
                     "attribute of the predictor in its order (as `predict` returns them).")
  if not p.shape[0]:  # Was: every score NaN, with NumPy's warnings of empty means.
    raise InputError("no predictions to score (N = 0); score at least one image.")
  t = _check_targets(p, targets, meta)
  bad = int((~np.isfinite(p)).any(axis=-1).sum())
  if bad:  # Was: scored as the low class of each binary column (NaN >= threshold is False).
    raise InputError(f"{bad} of {len(p)} predictions hold NaN or infinity; score only finite "
                     "predictions (of finite images).")
  perm = np.random.default_rng(seed).permutation(t.shape[0])
  thr = meta.threshold
  per, groups, flat = {}, {"binary": ([], [], []), "continuous": ([], [], [])}, []
  for j, (name, kind) in enumerate(zip(meta.attribute_names, meta.attribute_kinds)):
    if kind == "binary":
      pb, tb = p[:, j] >= thr[j], t[:, j] >= thr[j]
      rate = float(tb.mean()) if tb.size else float("nan")
      vals = (float((pb == tb).mean()), max(rate, 1.0 - rate), float((pb == tb[perm]).mean()))
    else:
      vals = (pearson(p[:, j], t[:, j]), 0.0, pearson(p[:, j], t[perm, j]))
      # Targets that vary, predictions that never move: no response, correlation 0 (was: NaN,
      # left out of the mean, so a predictor or model that did not respond at all scored
      # higher than one that responded weakly). Only a column of constant targets (nothing
      # to follow: its correlation with itself NaN) stays NaN and out of the means. A binary
      # column's accuracy is never NaN: constant predictions score as the class they give.
      if not np.isfinite(vals[0]) and np.isfinite(pearson(t[:, j], t[:, j])):
        vals = (0.0, 0.0, 0.0)
        flat.append(name)
    per[name] = {"kind": kind, "score": vals[0], "chance": vals[1], "shuffled": vals[2]}
    for lst, v in zip(groups[kind], vals):
      lst.append(v)
  out: dict[str, Any] = {"per_attribute": per, "num_images": int(t.shape[0]),
                         "continuous_flat": flat}
  for kind, label in (("binary", "accuracy"), ("continuous", "correlation")):
    s, c, sh = groups[kind]
    out[f"{kind}_{label}"] = _nanmean(s)
    out[f"{kind}_chance"] = _nanmean(c)
    out[f"{kind}_shuffled"] = _nanmean(sh)
  return out


def fidelity(predictor: Predictor, images: Any, target_attributes: Any, *,
             seed: int = 0) -> dict[str, Any]:
  """How well images (e.g. samples generated from `target_attributes`) show their attributes.

  Args:
    predictor: the dataset's trained predictor.
    images: [N, S, S, 3] uint8 or floats in [0, 1].
    target_attributes: [N, A], the attributes the images should have.
    seed: the permutation of the shuffled-target baseline.
  Returns:
    `score(...)` of the predictions, plus "ceiling": the predictor's own scores on the whole
    test split of its training (`meta.test_metrics`, without the per-attribute detail; its
    "num_images" says how many images, in general not those scored here: score real images
    of the same rows for a ceiling of these, as `evaluation.attribute_report` does).
  Raises:
    InputError: images or a predictor `predict` refuses, or targets or a seed `score`
      refuses.
  """
  check_predictor(predictor)
  seed = check_int(seed, "seed", 0)  # Before the images are predicted.
  out = score(predictor, predict(predictor, images), target_attributes, seed=seed)
  out["ceiling"] = {k: v for k, v in predictor.meta.test_metrics.items()
                    if k != "per_attribute"}
  return out


def attribute_index(predictor: Predictor, attribute: Any) -> int:
  """The column of an attribute given by name or index; `InputError` names the valid ones.

  Args:
    predictor: gives the attribute names.
    attribute: a name or a column index.
  Returns:
    The column index.
  Raises:
    InputError: not a `Predictor`, an unknown name, an index out of range, or anything else
      (a bool too).
  """
  names = check_predictor(predictor).meta.attribute_names
  # Was: True taken as column 1 (a bool is an int).
  if (isinstance(attribute, (int, np.integer)) and not isinstance(attribute, (bool, np.bool_))
      and 0 <= attribute < len(names)):
    return int(attribute)
  if isinstance(attribute, str) and attribute in names:
    return names.index(attribute)
  raise InputError(f"unknown attribute {attribute!r}; the predictor knows {', '.join(names)} "
                   f"(or an index 0..{len(names) - 1}).")


def sweep_response(predictor: Predictor, progressions: Any, swept_values: Any,
                   attribute: Any) -> dict[str, Any]:
  """Checks that progressions move the attribute they sweep.

  Args:
    predictor: the dataset's trained predictor.
    progressions: [N, K, S, S, 3]: N examples, each decoded at K values of one attribute.
    swept_values: [K], the attribute's value at each step.
    attribute: the swept attribute's name or column index.
  Returns:
    {"attribute", "swept_values" [K], "predicted" [N][K] (the predicted value of the swept
    attribute), "mean_by_step" [K], "pearson" and "spearman" (all N*K pairs of swept vs
    predicted values pooled), "per_example_spearman" (mean over the N rows)}.
  Raises:
    InputError: not a `Predictor`, an unknown attribute, progressions that are not
      [N, K, S, S, 3] images `predict` takes (N >= 1, K >= 2), or swept values that are not
      one row [K] of finite real numbers (strings and complex numbers refused).
  """
  j = attribute_index(check_predictor(predictor), attribute)
  x = as_array(progressions, "progressions")  # Was NumPy's ValueError for a ragged list.
  v = _real_numbers(swept_values, "swept_values", "swept_values are",
                    "pass the swept attribute's value at each step.")
  if v.ndim != 1:  # Was flattened: [[0, 1], [2, 3]] taken as four steps.
    raise InputError(f"swept_values have shape {v.shape}; pass one value per step, [K] (the "
                     "swept attribute's value at each step).")
  if not np.all(np.isfinite(v)):  # Was: ranked as a value (NaN last), a correlation given.
    raise InputError("swept_values hold NaN or infinity; pass the swept attribute's value at "
                     "each step.")
  if x.ndim != 5 or x.shape[1] != v.shape[0]:
    raise InputError(f"progressions have shape {x.shape}; expected [N, K, S, S, 3] with "
                     f"K = {v.shape[0]} (one image per swept value).")
  n, k = x.shape[:2]
  if n < 1 or k < 2:  # Was: NaN correlations and means, with NumPy's warnings.
    raise InputError(f"progressions have shape {x.shape}; a sweep needs N >= 1 examples of "
                     "K >= 2 swept values.")
  pred = predict(predictor, x.reshape((n * k,) + x.shape[2:]))[:, j].reshape(n, k)
  pooled_v = np.tile(v, n)
  return {"attribute": predictor.meta.attribute_names[j], "swept_values": v.tolist(),
          "predicted": pred.tolist(), "mean_by_step": pred.mean(axis=0).tolist(),
          "pearson": pearson(pooled_v, pred.reshape(-1)),
          "spearman": spearman(pooled_v, pred.reshape(-1)),
          "per_example_spearman": _nanmean([spearman(v, row) for row in pred])}



def _json_safe(tree: Any) -> Any:
  """NaN to None, numpy scalars to Python, recursively (JSON has no NaN)."""
  if isinstance(tree, Mapping):
    return {k: _json_safe(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_json_safe(v) for v in tree]
  if isinstance(tree, (float, np.floating)):
    return None if not np.isfinite(tree) else float(tree)
  if isinstance(tree, np.integer):
    return int(tree)
  return tree


