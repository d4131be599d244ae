"""Training the attribute predictor on a dataset's training split (Adam, no augmentation:
a horizontal flip would swap asymmetric attributes)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from a2i_jax import config_lib, models, perf
from a2i_jax.attribute_predictor.network import AttributeNet, Predictor, PredictorMeta, predict
from a2i_jax.attribute_predictor.scoring import _json_safe, score
from a2i_jax.data import base
from a2i_jax.data.base import Dataset
from a2i_jax.errors import ConfigError, DataError, InputError
from a2i_jax.inputs import check_int, to_signed
from a2i_jax.models import initializers

# A continuous column whose standard deviation is at most this fraction of its largest
# magnitude is constant (`_target_stats`): one float32 step (float32 attributes that differ
# differ by at least about this much).
_CONSTANT_SPREAD = float(np.finfo(np.float32).eps)


def _other_class(value: float, j: int, pairs: set, other: Optional[np.ndarray]) -> float:
  """The other class of a binary column that holds one value (`value`) in training: the value
  the evaluated split gives it, else the other of the class pair every two-valued binary column
  of the dataset shares (`pairs`), else the nearer of value -/+ 1 to zero (so {0, 1} and
  {-1, +1} columns get their other class whichever of the two training holds)."""
  if other is not None:
    seen = [float(v) for v in np.unique(other[:, j]) if v != value]
    if len(seen) == 1:
      return seen[0]
  if len(pairs) == 1 and value in next(iter(pairs)):
    low, high = next(iter(pairs))
    return high if value == low else low
  return value - 1.0 if value > 0 else value + 1.0


def _target_stats(attributes: np.ndarray, kinds: Sequence[str],
                  other: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
  """Per column: the mean and standard deviation (continuous standardisation), and a binary
  column's two classes, low and high.

  A binary column that holds one value in training takes its other class from `other` (the
  evaluated split's attributes), the dataset's other binary columns or the value's sign
  (`_other_class`). Was: [value, value + 1] whatever the value, so a {0, 1} column that was 1
  throughout training had the threshold 1.5, and its targets of 1 were scored as the low class.
  """
  a = np.asarray(attributes, np.float64)
  std = a.std(axis=0)
  low, high = a.min(axis=0), a.max(axis=0)
  binary = [j for j, k in enumerate(kinds) if k == "binary"]
  pairs = {(float(low[j]), float(high[j])) for j in binary if high[j] > low[j]}
  for j in binary:
    if high[j] == low[j]:
      low[j], high[j] = sorted((float(low[j]), _other_class(float(low[j]), j, pairs, other)))
  high = np.where(high > low, high, low + 1.0)  # A constant continuous column: unused.
  # Constant: a spread within one float32 step of the column's own scale (its largest
  # magnitude), or one float32 cannot hold; its std is then 1.0. Was an absolute 1e-6, so a
  # column on a tiny scale (1e-7 +- 5e-8, which varies) was left unstandardised, silently.
  scale = np.max(np.abs(a), axis=0, initial=0.0)
  varies = std > np.maximum(_CONSTANT_SPREAD * scale, np.finfo(np.float32).tiny)
  return {"mean": a.mean(axis=0), "std": np.where(varies, std, 1.0), "low": low,
          "high": high}


def _loss_fn(outputs: jax.Array, y: jax.Array, binary: jax.Array, mean: jax.Array,
             std: jax.Array, threshold: jax.Array) -> jax.Array:
  """Mean over the batch and the columns of BCE (binary) or squared error (continuous)."""
  bce = optax.sigmoid_binary_cross_entropy(outputs, (y >= threshold).astype(jnp.float32))
  mse = jnp.square(outputs - (y - mean) / std)
  return jnp.mean(jnp.where(binary, bce, mse))


# Adam's moment estimates without the learning rate, which is passed per step instead, so
# one compiled step serves every schedule and every call of `train_predictor`.
_ADAM = optax.scale_by_adam()


def _train_step(variables: dict, opt_state: Any, images: jax.Array, attributes: jax.Array,
                key: jax.Array, learning_rate: jax.Array, constants: dict, *,
                model: AttributeNet, batch_size: int) -> tuple[dict, Any, jax.Array]:
  # The whole split lives on the device; draw the batch there (with replacement).
  idx = jax.random.randint(key, (batch_size,), 0, images.shape[0])
  x = to_signed(images[idx])
  y = attributes[idx]

  def loss(params):
    out, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                               x, train=True, mutable=["batch_stats"])
    return _loss_fn(out, y, **constants), updates["batch_stats"]

  (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
  upd, opt_state = _ADAM.update(grads, opt_state, variables["params"])
  params = jax.tree_util.tree_map(lambda p, u: p - learning_rate * u, variables["params"], upd)
  return {"params": params, "batch_stats": stats}, opt_state, value


# The step runs thousands of times, so it is compiled with full optimisation even where
# XLA_FLAGS ask for cheap compiles (the test suite does): at optimisation level 0 XLA:CPU runs
# these small convolutions many times slower, which costs far more than the seconds of compile
# it saves.
_FULL_OPTIMISATION = {"xla_backend_optimization_level": 3,
                      "xla_llvm_disable_expensive_passes": False}


@functools.lru_cache(maxsize=None)
def _jitted_train_step(backend: str) -> Any:
  return jax.jit(_train_step, static_argnames=("model", "batch_size"),
                 donate_argnames=("variables", "opt_state"),
                 compiler_options=perf.compiler_options(_FULL_OPTIMISATION, backend))


def _init_variables(model: AttributeNet, image_size: int, key: jax.Array) -> dict:
  # Runs once: compile it cheaply on CPU, and draw on the host after it (a program the
  # persistent cache can keep), as models.init_variables does.
  return initializers.draw_after(
      lambda k: model.init(k, jnp.zeros((1, image_size, image_size, 3), jnp.float32)), key,
      compiler_options=perf.compiler_options(models.CHEAP_COMPILE))


_SETTINGS = ("steps", "batch_size", "learning_rate", "width")
_SEED_LIMIT = 2**31  # PRNGKey takes any int, but 2**32 drew seed 0's keys and 2**64 overflowed.


def _check_seed(seed: Any) -> int:
  """The training seed as an int; InputError unless an integer (not a bool) in [0, 2**31)."""
  return check_int(seed, "attribute predictor: seed", 0, below=_SEED_LIMIT)


def _setting_values(settings: Any) -> dict[str, Any]:
  """{name: value} of the settings in `settings` (`config.attribute_predictor`); InputError
  naming those it lacks (was a KeyError: the whole config passed, or a dict without one)."""
  values, missing = {}, []
  for name in _SETTINGS:
    try:
      values[name] = settings[name]
    except (KeyError, IndexError, TypeError, AttributeError):
      missing.append(name)
  if missing:
    whole = hasattr(settings, "get") and settings.get("attribute_predictor") is not None
    what = "the settings are the whole config" if whole else "the settings"
    raise InputError(
        f"attribute predictor: {what}, without {', '.join(missing)}; pass "
        f"config.attribute_predictor (the settings {', '.join(_SETTINGS)}), or None for "
        "configs/default.py's.")
  return values


def _check_settings(values: dict) -> tuple[int, int, float, int]:
  """(steps, batch_size, learning_rate, width): the integers' kinds checked here, the rest by
  `config_lib.check_predictor_settings`, the rule `config_lib.check_values` applies to the
  config's (was: overrides unchecked, e.g. learning_rate=0 saved an untrained predictor; then
  a copy of that rule that took what it refuses: a learning_rate of 1e-40, which the device
  flushes to 0, trained nothing without a word, and steps, batch_size or width past int32)."""
  steps, batch_size, width = (check_int(values[k], f"attribute predictor: {k}", 1)
                              for k in ("steps", "batch_size", "width"))
  try:
    config_lib.check_predictor_settings(values, prefix="attribute predictor: ")
  except ConfigError as e:  # A setting of the Python API: InputError, as the checks above.
    raise InputError(str(e)) from None
  return steps, batch_size, float(values["learning_rate"]), width


def _check_data(dataset: Any, evaluate_split: Optional[str]) -> None:
  """Refuses a dataset the predictor cannot learn from (DataError) before anything is drawn.

  Was: a `Dataset` built by hand reached training unchecked: an empty training split was
  NumPy's ValueError, NaN attributes a divergence blamed on the learning rate, fewer attribute
  columns than names broadcast and trained, more a TypeError, float images in [0, 255]
  trained on without a word (the training step reads only their dtype), a name given to
  two columns scored as one, and a column marked binary that holds more than two values
  blamed on "target attributes" after the training (`_check_binary_columns`).
  """
  if not isinstance(dataset, Dataset):
    raise InputError(f"dataset={type(dataset).__name__} is not a Dataset; pass one of "
                     "a2i_jax.data's (e.g. inference.load_data(trained)).")
  # And a name given to two columns (was: trained, and `score` kept one column's scores).
  base.check_attribute_names(dataset.attribute_names, dataset.attribute_kinds,
                             f"dataset {dataset.name!r}")
  names, a = list(dataset.attribute_names), dataset.num_attributes
  splits = ("train",) + ((evaluate_split,) if evaluate_split is not None else ())
  for name in splits:
    split, where = dataset[name], f"dataset {dataset.name!r}, split {name!r}"
    images, attributes = np.asarray(split.images), np.asarray(split.attributes)
    if name == "train" and not len(images):
      raise DataError(f"{where} is empty; the attribute predictor needs training images.")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 \
        or images.shape[1] != images.shape[2]:
      raise DataError(f"{where}: images are {images.dtype} {images.shape}; the attribute "
                      "predictor takes uint8 [N, S, S, 3] in [0, 255].")
    size = dataset["train"].images.shape[1]
    if images.shape[1] != size:
      raise DataError(f"{where}: images are {images.shape[1]}x{images.shape[1]}, the training "
                      f"split's {size}x{size}; pass splits of one image size.")
    if attributes.shape != (len(images), a):
      raise DataError(f"{where}: attributes have shape {attributes.shape}, expected "
                      f"[{len(images)}, {a}] (one row per image, a column per attribute: "
                      f"{', '.join(names)}).")
    if attributes.dtype.kind not in "biuf":
      raise DataError(f"{where}: attributes have dtype {attributes.dtype}; pass float32 "
                      "numbers.")
    if not np.isfinite(attributes).all():
      bad = int(np.argwhere(~np.isfinite(attributes))[0, 0])
      raise DataError(f"{where}: attribute row {bad} holds NaN or infinity; drop or fill the "
                      "rows with missing attributes.")
  _check_binary_columns(dataset, splits)


def _check_binary_columns(dataset: Dataset, splits: Sequence[str]) -> None:
  """Refuses a column marked binary that holds more than two values in one of `splits` (the
  training split, then the evaluated one), or in them together.

  Was: trained with the column's least and greatest values as its classes, then its other
  values (a third in training, or 0.5 in the test split) refused by `score` after the training
  as "target attributes ... on the scale of the predictor's dataset", targets the user never
  passed (a review's finding).

  Args:
    dataset: a `Dataset` whose splits `_check_data` has checked.
    splits: the split names, "train" first.
  Raises:
    DataError: naming the dataset, the split(s), the column and its values, and the fix.
  """
  binary = [j for j, kind in enumerate(dataset.attribute_kinds) if kind == "binary"]
  seen = {j: np.zeros(0) for j in binary}
  for name in splits:
    attributes = np.asarray(dataset[name].attributes)  # Not copied: read once per split.
    for j in binary:
      values = np.unique(attributes[:, j]).astype(np.float64)
      together = np.union1d(seen[j], values)
      if len(together) > 2:
        where, held = ((f"split {name!r}", values) if len(values) > 2 else
                       (f"splits 'train' and {name!r} together", together))
        shown = ", ".join(f"{v:g}" for v in held[:5]) + (", ..." if len(held) > 5 else "")
        raise DataError(f"dataset {dataset.name!r}, {where}: column "
                        f"{dataset.attribute_names[j]!r} is marked binary but holds {len(held)} "
                        f"values ({shown}); mark it continuous (the Dataset's attribute_kinds) "
                        "or fix its values.")
      seen[j] = together


def data_fingerprint(dataset: Dataset, evaluate_split: Optional[str] = "test") -> str:
  """What a predictor learns from and is scored on (`data.base.data_fingerprint`).

  Args:
    dataset: the `Dataset`.
    evaluate_split: the split whose real images give the predictor's ceiling (None: none).
  Returns:
    The hex digest of its training split and of `evaluate_split`.
  """
  return base.data_fingerprint(dataset, ("train",) + ((evaluate_split,) if evaluate_split
                                                      else ()))


def split_fingerprint(dataset: Dataset, split: str = "test") -> str:
  """A SHA-256 of one split's images and attributes alone: equal for the same examples
  whatever else the data hold (masks, other splits, the dataset's name), so that the runs
  evaluated on one test split share its predictor (`PredictorMeta.test_fingerprint`).

  Args:
    dataset: the `Dataset`.
    split: the split's name.
  Returns:
    The hex digest, or "" where `dataset` has no such split.
  """
  if split not in dataset.splits:
    return ""
  h = hashlib.sha256()
  chosen = dataset[split]
  base.hash_arrays(h, (chosen.images, np.asarray(chosen.attributes, np.float32)))
  return h.hexdigest()


def train_predictor(dataset: Dataset, settings: Any = None, *, seed: int = 0,
                    evaluate_split: Optional[str] = "test", **overrides) -> Predictor:
  """Trains the predictor on `dataset["train"]`.

  Args:
    dataset: any `Dataset` (uint8 images, float attributes, `attribute_kinds`).
    settings: `config.attribute_predictor` (steps: Adam steps; batch_size: images per step,
      drawn with replacement; learning_rate: Adam's, cosine-decayed to zero over `steps`;
      width: `AttributeNet.width`, the channels of the first convolution). Default: the
      values of configs/default.py.
    seed: initialisation and batch draws, an integer in [0, 2**31).
    evaluate_split: the split whose real images give `meta.test_metrics` (None, or an empty
      split: skip).
    **overrides: any of the settings, e.g. steps=100.
  Returns:
    The trained `Predictor` (on the default device).
  Raises:
    InputError: settings that lack one, an unknown setting, a count that is not a positive
      integer or is past int32's largest value, a learning rate that is not a positive finite
      number or that float32 does not hold (`config_lib.check_predictor_settings`), a seed
      that is not an integer in [0, 2**31), a dataset that is not a `Dataset`, or a training
      that diverged.
    DataError: no training images, images that are not uint8 [N, S, S, 3] of one size,
      attributes that are not one finite row per image and a column per attribute, a column
      marked binary that holds more than two values (in the training or evaluated split, or
      in both together), attribute names or kinds `data.base.check_attribute_names` refuses
      or a name used twice, or a missing `evaluate_split`.
  """
  return _train(dataset, settings, seed, evaluate_split, overrides)


def _fingerprints(dataset: Dataset, evaluate_split: Optional[str] = "test") -> dict[str, str]:
  """The two fingerprints a predictor records: {"data_fingerprint": `data_fingerprint`,
  "test_fingerprint": `split_fingerprint`}, taken once per call path (`storage.load_or_train`
  passes its own to `_train`; were taken again there, the test split hashed twice more).

  Args:
    dataset: the `Dataset`.
    evaluate_split: as `data_fingerprint`'s.
  Returns:
    {"data_fingerprint": hex digest, "test_fingerprint": hex digest or ""}.
  """
  return {"data_fingerprint": data_fingerprint(dataset, evaluate_split),
          "test_fingerprint": split_fingerprint(dataset)}


def _train(dataset: Dataset, settings: Any, seed: int, evaluate_split: Optional[str],
           overrides: dict, taken: Optional[dict[str, str]] = None) -> Predictor:
  """`train_predictor`, with the data's `_fingerprints` where the caller has taken them of
  `dataset` in the same call (`taken`; None: taken here, after the checks)."""
  if settings is None:
    settings = config_lib.reference_config().attribute_predictor
  values = _setting_values(settings)
  unknown = sorted(set(overrides) - set(_SETTINGS))
  if unknown:
    raise InputError(f"attribute predictor: unknown setting(s) {unknown}; known: "
                     f"{list(_SETTINGS)}.")
  values.update(overrides)
  steps, batch_size, learning_rate, width = _check_settings(values)
  seed = _check_seed(seed)
  _check_data(dataset, evaluate_split)
  train = dataset["train"]
  kinds = tuple(dataset.attribute_kinds)
  image_size = int(train.images.shape[1])
  evaluated = dataset[evaluate_split] if evaluate_split is not None else None
  stats = _target_stats(train.attributes, kinds, None if evaluated is None or not len(evaluated)
                        else np.asarray(evaluated.attributes, np.float64))
  model = AttributeNet(num_outputs=dataset.num_attributes, width=int(width))
  binary = np.array([k == "binary" for k in kinds])
  constants = {"binary": jnp.asarray(binary),
               "mean": jnp.asarray(stats["mean"], jnp.float32),
               "std": jnp.asarray(stats["std"], jnp.float32),
               "threshold": jnp.asarray((stats["low"] + stats["high"]) / 2.0, jnp.float32)}
  key_init, key_data = jax.random.split(jax.random.PRNGKey(seed))
  variables = _init_variables(model, image_size, key_init)
  variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
  opt_state = _ADAM.init(variables["params"])
  # Cosine decay to zero (optax.cosine_decay_schedule), on the host, step by step (was: the
  # whole schedule at once, a MemoryError for steps=1e10 before the first step).
  rate = lambda i: np.float32(learning_rate * 0.5 * (1.0 + np.cos(np.pi * i / steps)))
  images = jax.device_put(train.images)
  attributes = jax.device_put(np.asarray(train.attributes, np.float32))
  step_fn = _jitted_train_step(jax.default_backend())
  for i in range(int(steps)):
    variables, opt_state, _ = step_fn(
        variables, opt_state, images, attributes, jax.random.fold_in(key_data, i),
        rate(i), constants, model=model, batch_size=int(batch_size))
  meta = PredictorMeta(
      dataset=dataset.name, attribute_names=tuple(dataset.attribute_names),
      attribute_kinds=kinds, image_size=image_size, width=int(width),
      mean=tuple(map(float, stats["mean"])), std=tuple(map(float, stats["std"])),
      low=tuple(map(float, stats["low"])), high=tuple(map(float, stats["high"])),
      steps=int(steps), batch_size=int(batch_size), learning_rate=float(learning_rate),
      seed=int(seed), **(taken or _fingerprints(dataset, evaluate_split)))
  host = jax.device_get(variables)
  if not all(np.isfinite(a).all() for a in jax.tree_util.tree_leaves(host)):
    # Was: scored, and its NaN predictions blamed on the images scored.
    raise InputError(f"the attribute predictor's training diverged (its weights hold NaN or "
                     f"infinity after {steps} steps at learning rate {learning_rate:g}); lower "
                     "config.attribute_predictor.learning_rate.")
  predictor = Predictor(host, meta)
  if evaluate_split is not None and len(dataset[evaluate_split]):  # An empty one: no ceiling.
    split = dataset[evaluate_split]
    metrics = score(predictor, predict(predictor, split.images), split.attributes)
    predictor = dataclasses.replace(
        predictor, meta=dataclasses.replace(meta, test_metrics=_json_safe(metrics)))
  return predictor


