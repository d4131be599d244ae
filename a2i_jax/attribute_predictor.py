"""A small attribute-prediction CNN that scores generated images (attribute fidelity).

It is trained on the training split of whichever dataset the generator used and saved in the
generator's workdir (`workdir/attribute_predictor/`). Generated samples are then scored
against the attributes they were generated from: accuracy for binary attributes, Pearson
correlation for continuous ones, each beside a chance baseline and beside the predictor's
own score on real test images (the ceiling a perfect generator could reach).

Targets: binary columns are mapped from their two values (the smallest and largest in the
training split, e.g. {0, 1} or {-1, +1}) to {0, 1} and trained with binary cross-entropy;
continuous columns are standardised with the training mean and standard deviation and trained
with squared error. `predict` returns values in the dataset's own scale: continuous columns
un-standardised, binary columns as low + P(high) * (high - low), i.e. the probability of the
high value for {0, 1} attributes. A binary prediction counts as the high value when it is
at least the midpoint (low + high) / 2, the same threshold applied to targets.

No augmentation: a horizontal flip would swap asymmetric attributes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from a2i_jax import models
from a2i_jax.data.base import Dataset
from a2i_jax.errors import CheckpointError, InputError
from a2i_jax.inference import check_images

PREDICTOR_DIR = "attribute_predictor"
_WEIGHTS_FILE = "variables.msgpack"
_META_FILE = "meta.json"
_FORMAT = 1  # bump when the saved layout changes


class AttributeNet(nn.Module):
  """Four stride-2 3x3 convolutions (width w, 2w, 2w, 4w) with BatchNorm and ReLU, average
  pooling to a 2x2 grid and one dense layer: one output per attribute (a logit for binary
  columns, a standardised value for continuous ones)."""
  num_outputs: int
  width: int = 32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Args: x float [B, S, S, 3] in [-1, 1]. Returns: float32 [B, num_outputs]."""
    for features in (self.width, 2 * self.width, 2 * self.width, 4 * self.width):
      # He-normal weights drawn on the host (models._normal): threefry initialisers cost
      # seconds of XLA:CPU compile time each.
      std = math.sqrt(2.0 / (9 * x.shape[-1]))
      x = nn.Conv(features, (3, 3), strides=(2, 2), padding="SAME", use_bias=False,
                  kernel_init=models._normal(std))(x)  # pylint: disable=protected-access
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x)
    # Aligned faces: the spatial layout carries information (where the mouth is), so keep a
    # coarse 2x2 grid of the pooled features rather than pooling everything away.
    b, h, w, c = x.shape
    g = 2 if h % 2 == 0 and w % 2 == 0 else 1
    x = x.reshape(b, g, h // g, g, w // g, c).mean(axis=(2, 4)).reshape(b, g * g * c)
    init = models._normal(math.sqrt(1.0 / x.shape[-1]))  # pylint: disable=protected-access
    return nn.Dense(self.num_outputs, kernel_init=init)(x)


@dataclasses.dataclass(frozen=True)
class PredictorMeta:
  """What a predictor needs besides its weights.

  Attributes:
    dataset: the dataset name it was trained on.
    attribute_names, attribute_kinds: per column, as in `Dataset`.
    image_size: S of the images it takes.
    width: `AttributeNet.width`.
    mean, std: per column: training mean and standard deviation (continuous standardisation).
    low, high: per column: the two values of a binary column (min and max in the training
      split; high = low + 1 if the column is constant); unused for continuous columns.
    steps, batch_size, learning_rate, seed: how it was trained.
    test_metrics: `score` of the predictor on the dataset's real test images (the ceiling).
  """
  dataset: str
  attribute_names: tuple[str, ...]
  attribute_kinds: tuple[str, ...]
  image_size: int
  width: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  low: tuple[float, ...]
  high: tuple[float, ...]
  steps: int
  batch_size: int
  learning_rate: float
  seed: int
  test_metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def binary(self) -> np.ndarray:
    """[A] bool: which attributes are binary."""
    return np.array([k == "binary" for k in self.attribute_kinds])

  @property
  def threshold(self) -> np.ndarray:
    """[A] float: the decision threshold of each attribute, (low + high) / 2."""
    return (np.asarray(self.low) + np.asarray(self.high)) / 2.0


@dataclasses.dataclass(frozen=True)
class Predictor:
  """A trained attribute predictor: `variables` ({"params", "batch_stats"}) and `meta`."""
  variables: Any
  meta: PredictorMeta


# --------------------------------------------------------------------------------- training


def _target_stats(attributes: np.ndarray, kinds: Sequence[str]) -> dict[str, np.ndarray]:
  a = np.asarray(attributes, np.float64)
  std = a.std(axis=0)
  low, high = a.min(axis=0), a.max(axis=0)
  high = np.where(high > low, high, low + 1.0)
  return {"mean": a.mean(axis=0), "std": np.where(std > 1e-6, std, 1.0), "low": low,
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
  x = images[idx].astype(jnp.float32) / 127.5 - 1.0
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
# these convolutions ~15x slower, which costs far more than the seconds of compile it saves.
_FULL_OPTIMISATION = {"xla_backend_optimization_level": 3,
                      "xla_llvm_disable_expensive_passes": False}


@functools.lru_cache(maxsize=None)
def _jitted_train_step(backend: str) -> Any:
  return jax.jit(_train_step, static_argnames=("model", "batch_size"),
                 donate_argnames=("variables", "opt_state"),
                 compiler_options=_FULL_OPTIMISATION if backend == "cpu" else None)


def _init_variables(model: AttributeNet, image_size: int, key: jax.Array) -> dict:
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  # Runs once: compile it cheaply on CPU, as models.init_variables does.
  options = models.CHEAP_COMPILE if jax.default_backend() == "cpu" else None
  init = jax.jit(model.init).lower(key, x).compile(compiler_options=options)
  return init(key, x)


def train_predictor(dataset: Dataset, *, steps: int = 2000, batch_size: int = 64,
                    learning_rate: float = 1e-3, width: int = 32, seed: int = 0,
                    evaluate_split: Optional[str] = "test") -> Predictor:
  """Trains the predictor on `dataset["train"]`.

  Args:
    dataset: any `Dataset` (uint8 images, float attributes, `attribute_kinds`).
    steps: Adam steps.
    batch_size: images per step, drawn with replacement.
    learning_rate: Adam's, cosine-decayed to zero over `steps`.
    width: `AttributeNet.width` (channels of the first convolution).
    seed: initialisation and batch draws.
    evaluate_split: the split whose real images give `meta.test_metrics` (None: skip).
  Returns:
    The trained `Predictor` (on the default device).
  """
  for name, v in (("steps", steps), ("batch_size", batch_size), ("width", width)):
    if not isinstance(v, (int, np.integer)) or v <= 0:
      raise InputError(f"attribute predictor: {name}={v!r} must be a positive integer.")
  train = dataset["train"]
  kinds = tuple(dataset.attribute_kinds)
  image_size = int(train.images.shape[1])
  stats = _target_stats(train.attributes, kinds)
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
  # Cosine decay to zero (optax.cosine_decay_schedule), computed once on the host.
  rates = learning_rate * 0.5 * (1.0 + np.cos(np.pi * np.arange(steps) / steps))
  images = jax.device_put(train.images)
  attributes = jax.device_put(np.asarray(train.attributes, np.float32))
  step_fn = _jitted_train_step(jax.default_backend())
  for i in range(int(steps)):
    variables, opt_state, _ = step_fn(
        variables, opt_state, images, attributes, jax.random.fold_in(key_data, i),
        np.float32(rates[i]), constants, model=model, batch_size=int(batch_size))
  meta = PredictorMeta(
      dataset=dataset.name, attribute_names=tuple(dataset.attribute_names),
      attribute_kinds=kinds, image_size=image_size, width=int(width),
      mean=tuple(map(float, stats["mean"])), std=tuple(map(float, stats["std"])),
      low=tuple(map(float, stats["low"])), high=tuple(map(float, stats["high"])),
      steps=int(steps), batch_size=int(batch_size), learning_rate=float(learning_rate),
      seed=int(seed))
  predictor = Predictor(jax.device_get(variables), meta)
  if evaluate_split is not None:
    split = dataset[evaluate_split]
    metrics = score(predictor, predict(predictor, split.images), split.attributes)
    predictor = dataclasses.replace(
        predictor, meta=dataclasses.replace(meta, test_metrics=_json_safe(metrics)))
  return predictor


# ------------------------------------------------------------------------------- prediction


@functools.lru_cache(maxsize=8)
def _apply_fn(num_outputs: int, width: int) -> Any:
  model = AttributeNet(num_outputs=num_outputs, width=width)
  return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def _to_attribute_scale(outputs: np.ndarray, meta: PredictorMeta) -> np.ndarray:
  low, high = np.asarray(meta.low), np.asarray(meta.high)
  prob = 1.0 / (1.0 + np.exp(-outputs.astype(np.float64)))
  binary = low + prob * (high - low)
  continuous = np.asarray(meta.mean) + outputs * np.asarray(meta.std)
  return np.where(meta.binary, binary, continuous).astype(np.float32)


def predict(predictor: Predictor, images: Any, *, batch_size: int = 256) -> np.ndarray:
  """Predicts the attributes of images.

  Args:
    predictor: from `train_predictor` or `load_predictor`.
    images: [N, S, S, 3] uint8 in [0, 255] or floats in [0, 1] (generated samples), with S
      the predictor's image size.
    batch_size: images per jitted call.
  Returns:
    float32 [N, A] in the dataset's attribute scale (continuous: the attribute's own units;
    binary: low + P(high) * (high - low), the probability of 1 for {0, 1} attributes).
  """
  meta = predictor.meta
  x = check_images(images, meta.image_size)
  n = x.shape[0]
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise InputError(f"batch_size={batch_size!r} must be a positive integer.")
  # Every call is padded to `batch_size`, or for fewer images to the next power of two, so
  # only a handful of shapes are ever compiled.
  size = batch_size if n > batch_size else min(batch_size, 1 << max(0, n - 1).bit_length())
  fn = _apply_fn(len(meta.attribute_names), meta.width)
  outs = []
  for start in range(0, n, size):
    chunk = x[start:start + size]
    m = chunk.shape[0]
    if m < size:
      chunk = jnp.concatenate([chunk, jnp.zeros((size - m,) + chunk.shape[1:], chunk.dtype)])
    outs.append(np.asarray(fn(predictor.variables, chunk))[:m])
  out = np.concatenate(outs) if outs else np.zeros((0, len(meta.attribute_names)), np.float32)
  return _to_attribute_scale(out, meta)


# ---------------------------------------------------------------------------------- scoring


def pearson(a: np.ndarray, b: np.ndarray) -> float:
  """Pearson correlation of two vectors; NaN when either is constant.

  Args:
    a, b: [N] values.
  Returns:
    The correlation in [-1, 1], or NaN.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  a, b = a - a.mean(), b - b.mean()
  den = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / den) if den > 1e-12 else float("nan")


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

  Args:
    a, b: [N] values.
  Returns:
    The rank correlation in [-1, 1], or NaN.
  """
  return pearson(_ranks(a), _ranks(b))


def _check_targets(predictions: np.ndarray, targets: Any, meta: PredictorMeta) -> np.ndarray:
  t = np.asarray(targets, np.float32)
  if t.ndim != 2 or t.shape != predictions.shape:
    raise InputError(f"target attributes have shape {t.shape}; expected {predictions.shape} "
                     f"(one row per image, {len(meta.attribute_names)} attributes in the "
                     "predictor's order).")
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
    "continuous_shuffled", "num_images"}. Binary: score = accuracy, chance = the
    majority-class accuracy of the targets, shuffled = accuracy against the targets
    permuted across images. Continuous: score = Pearson correlation, chance = 0, shuffled =
    correlation against permuted targets. Means skip NaN (constant columns) and are NaN
    where a kind is absent.
  """
  meta = predictor.meta
  p = np.asarray(predictions, np.float32)
  t = _check_targets(p, targets, meta)
  perm = np.random.default_rng(seed).permutation(t.shape[0])
  thr = meta.threshold
  per, groups = {}, {"binary": ([], [], []), "continuous": ([], [], [])}
  for j, (name, kind) in enumerate(zip(meta.attribute_names, meta.attribute_kinds)):
    if kind == "binary":
      pb, tb = p[:, j] >= thr[j], t[:, j] >= thr[j]
      rate = float(tb.mean()) if tb.size else float("nan")
      vals = (float((pb == tb).mean()), max(rate, 1.0 - rate), float((pb == tb[perm]).mean()))
    else:
      vals = (pearson(p[:, j], t[:, j]), 0.0, pearson(p[:, j], t[perm, j]))
    per[name] = {"kind": kind, "score": vals[0], "chance": vals[1], "shuffled": vals[2]}
    for lst, v in zip(groups[kind], vals):
      lst.append(v)
  out: dict[str, Any] = {"per_attribute": per, "num_images": int(t.shape[0])}
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
    `score(...)` of the predictions, plus "ceiling": the predictor's own scores on real test
    images (`meta.test_metrics`, without the per-attribute detail).
  """
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
  """
  names = predictor.meta.attribute_names
  if isinstance(attribute, (int, np.integer)) and 0 <= attribute < len(names):
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
  """
  j = attribute_index(predictor, attribute)
  x = np.asarray(progressions)
  v = np.asarray(swept_values, np.float64).reshape(-1)
  if x.ndim != 5 or x.shape[1] != v.shape[0]:
    raise InputError(f"progressions have shape {x.shape}; expected [N, K, S, S, 3] with "
                     f"K = {v.shape[0]} (one image per swept value).")
  n, k = x.shape[:2]
  pred = predict(predictor, x.reshape((n * k,) + x.shape[2:]))[:, j].reshape(n, k)
  pooled_v = np.tile(v, n)
  return {"attribute": predictor.meta.attribute_names[j], "swept_values": v.tolist(),
          "predicted": pred.tolist(), "mean_by_step": pred.mean(axis=0).tolist(),
          "pearson": pearson(pooled_v, pred.reshape(-1)),
          "spearman": spearman(pooled_v, pred.reshape(-1)),
          "per_example_spearman": _nanmean([spearman(v, row) for row in pred])}


# ------------------------------------------------------------------------------ save / load


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


def _write_atomic(path: str, data: bytes) -> None:
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def predictor_dir(workdir: str) -> str:
  """Where a workdir keeps its attribute predictor.

  Args:
    workdir: the run's (or any) directory.
  Returns:
    The absolute path of `workdir/attribute_predictor`.
  """
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), PREDICTOR_DIR)


def save_predictor(predictor: Predictor, workdir: str) -> str:
  """Writes the predictor to `workdir/attribute_predictor/` and returns that path.

  The weights (flax msgpack) are written first and the metadata (JSON, with the weights'
  SHA-256) last, each through a temporary file and a rename, so a reader sees either the
  old predictor, the new one, or a mismatch that `load_predictor` reports.

  Args:
    predictor: from `train_predictor`.
    workdir: the directory to save under.
  Returns:
    The predictor's folder.
  """
  d = predictor_dir(workdir)
  os.makedirs(d, exist_ok=True)
  blob = serialization.msgpack_serialize(jax.device_get(predictor.variables))
  _write_atomic(os.path.join(d, _WEIGHTS_FILE), blob)
  meta = dataclasses.asdict(predictor.meta)
  meta.update(format=_FORMAT, weights_sha256=hashlib.sha256(blob).hexdigest())
  _write_atomic(os.path.join(d, _META_FILE),
                json.dumps(_json_safe(meta), indent=1).encode())
  return d


def load_predictor(workdir: str) -> Predictor:
  """Reads the predictor `save_predictor` wrote into workdir.

  Args:
    workdir: the directory it was saved under.
  Returns:
    The `Predictor`.
  Raises:
    CheckpointError: it is missing, unreadable or does not match its metadata.
  """
  d = predictor_dir(workdir)
  how = ("Train and save one with a2i_jax.attribute_predictor.load_or_train(config, dataset, "
         "workdir) (or train_predictor + save_predictor).")
  mpath, wpath = os.path.join(d, _META_FILE), os.path.join(d, _WEIGHTS_FILE)
  if not (os.path.exists(mpath) and os.path.exists(wpath)):
    raise CheckpointError(f"no attribute predictor in {d}. {how}")
  try:
    with open(mpath) as f:
      meta = json.load(f)
    with open(wpath, "rb") as f:
      blob = f.read()
    if meta.pop("format", None) != _FORMAT:
      raise ValueError("unknown format version")
    if meta.pop("weights_sha256", None) != hashlib.sha256(blob).hexdigest():
      raise ValueError("the weights do not match the metadata (an interrupted save?)")
    for key in ("attribute_names", "attribute_kinds", "mean", "std", "low", "high"):
      meta[key] = tuple(meta[key])
    meta = PredictorMeta(**meta)
    variables = serialization.msgpack_restore(blob)
    expected = jax.eval_shape(
        lambda: AttributeNet(len(meta.attribute_names), meta.width).init(
            jax.random.PRNGKey(0), jnp.zeros((1, meta.image_size, meta.image_size, 3))))
    got = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), variables)
    want = jax.tree_util.tree_map(lambda a: tuple(a.shape), dict(expected))
    if got != want:
      raise ValueError("the weights do not fit the network the metadata describes")
  except (OSError, ValueError, TypeError, KeyError) as e:
    raise CheckpointError(f"the attribute predictor in {d} is unreadable ({e}). Delete the "
                          f"folder and train a new one. {how}") from None
  return Predictor(variables, meta)


def load_or_train(settings: Any, dataset: Dataset, workdir: str, *,
                  seed: int = 0) -> Predictor:
  """Loads the workdir's predictor, or trains and saves one when there is none (or it was
  trained on another dataset or image size).

  Args:
    settings: `config.attribute_predictor` (steps, batch_size, learning_rate, width).
    dataset: the generator's dataset.
    workdir: the generator's workdir.
    seed: the training seed.
  Returns:
    The predictor.
  """
  try:
    p = load_predictor(workdir)
    if (p.meta.dataset == dataset.name and p.meta.image_size == dataset.image_size
        and p.meta.attribute_names == tuple(dataset.attribute_names)):
      return p
  except CheckpointError:
    pass
  p = train_predictor(dataset, steps=int(settings.steps), batch_size=int(settings.batch_size),
                      learning_rate=float(settings.learning_rate), width=int(settings.width),
                      seed=seed)
  save_predictor(p, workdir)
  return p
