"""Decoding latents to images: the one path that sampling, the training sample grids,
posterior inference's outputs and the figures all take.

Every model answers for itself (`latent_dims`, `image_layers`, `decode_latents`), so nothing
here tests which model it is. Images come out in [0, 1].
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from a2i_jax import perf
from a2i_jax.errors import InputError, first_line
from a2i_jax.inputs import check_int, check_key, from_signed, real_dtype

Array = jax.Array
# Decoder outputs that are already probabilities in [0, 1]; the other images are in [-1, 1].
_UNIT_OUTPUTS = ("gate",)


def check_module(model: object, fn: str, served: str = "") -> None:
  """Refuses a TrainedModel, or anything without `apply`, as `model` (was an AttributeError,
  "'TrainedModel' object has no attribute 'latent_dims'", for the loaded model these
  functions do not take: they take its module).

  Args:
    model: what was passed as the model.
    fn: the function's name, for the message ("sampling.decode_images").
    served: the `inference` function that takes the TrainedModel instead, if any.
  Raises:
    InputError: naming `trained.model` (and `inference.<served>`), or `models.create_model`.
  """
  if isinstance(model, nn.Module):
    return
  if hasattr(model, "variables") and isinstance(getattr(model, "model", None), nn.Module):
    hint = "pass trained.model" + (
        f" (and trained.variables), or call inference.{served}(trained, ...), which takes the "
        "TrainedModel" if served else "")
  elif not hasattr(model, "apply"):
    hint = "models.create_model(config.model) makes one"
  else:
    return  # Something that decodes like a module (a test's stand-in).
  raise InputError(f"{fn} takes the model's Flax module, not {type(model).__name__}; {hint}.")


def prior_latents(model: nn.Module, num: int, key: Array,
                  always_split: bool = False) -> dict[str, Array]:
  """`num` draws of every latent of `model` from the prior N(0, I).

  Args:
    model: a model from `models.create_model`.
    num: N.
    key: PRNG key: used as is for a single latent (unless `always_split`), split once per
      latent otherwise (in `latent_dims` order).
    always_split: split the key for a single latent too. The sample grids and `sample` draw
      with the key as is, the progression and swap figures with the split key; both are
      kept so that runs give the figures they gave before this module existed.
  Returns:
    {latent name: [N, size]} float32.
  Raises:
    InputError: `num` is not an integer >= 0, or `key` is not a PRNG key.
  """
  check_module(model, "sampling.prior_latents", "prior_latents")
  num = check_int(num, "num", 0)  # A Python int under `jit` too: the batch's static size.
  check_key(key)
  dims = model.latent_dims
  keys = [key] if len(dims) == 1 and not always_split else jax.random.split(key, len(dims))
  return {name: jax.random.normal(k, (num, d), jnp.float32)  # float32 under JAX_ENABLE_X64.
          for (name, d), k in zip(dims.items(), keys)}


def decode_images(model: nn.Module, variables: Mapping, latents: Mapping[str, Array],
                  y: Array) -> dict[str, Array]:
  """The generator's images for given latents and attributes, in [0, 1] (BatchNorm in eval mode).

  Args:
    model: a model from `models.create_model`.
    variables: its {"params", "batch_stats"}.
    latents: {latent name: [N, size]} (all of `model.latent_dims`).
    y: [N, y_dim] attributes (ignored by models that do not use them).
  Returns:
    "image" [N, S, S, 3], plus each of `model.image_layers` (e.g. disCVAE's "foreground",
    "gate", "background"), all in [0, 1]. The image is clipped to it: the reference's disCVAE
    composite h_fg + g h_bg spans [-2, 2] (`models.compose`), and what is shown, saved and
    scored is the image as a picture holds it.
  Raises:
    InputError: a model that is no Flax module (a TrainedModel), latents missing one of the
      model's or not [N, size] of its sizes, attributes None for a model that uses them,
      latents and attributes of other row counts (from their shapes alone: under `jit` too),
      or attributes given as a list that is not rows of numbers.
  """
  check_module(model, "sampling.decode_images", "decode")
  # Converted before its shape is read: was JAX's TracerArrayConversionError for a list under
  # `jit` (its items are traced there, and `jnp.shape` reads a list as NumPy's).
  y = _attribute_array(y, "decode_images")
  dims = getattr(model, "latent_dims", None)
  if dims is not None:
    if not isinstance(latents, Mapping) or set(dims) - set(latents):
      got = sorted(latents) if isinstance(latents, Mapping) else type(latents).__name__
      raise InputError(f"decode_images takes latents {{name: [N, size]}} for {sorted(dims)}; "
                       f"got {got} (prior_latents gives them).")
    rows = {n: jnp.shape(latents[n]) for n in dims}
    for n, d in dims.items():  # Was Flax's ScopeParamShapeError, blaming the attributes'
      # embedding's kernel (a review's finding).
      if len(rows[n]) != 2 or rows[n][1] != d:
        raise InputError(f"decode_images takes latents[{n!r}] of shape [N, {d}] (the model's "
                         f"{n} size); got shape {tuple(rows[n])} (prior_latents gives them).")
    if y is None and getattr(model, "uses_attributes", False):  # Was "'NoneType' object has
      # no attribute 'shape'" from inside the decoder (a review's finding).
      y_dim = getattr(model, "y_dim", "y_dim")  # A test's stand-in may have none.
      raise InputError(f"decode_images needs attributes y [N, {y_dim}] for this model, which "
                       "uses them; got None.")
    if y is not None:
      rows["y"] = jnp.shape(y)
    if len({shape[:1] for shape in rows.values()}) > 1:  # Was a concatenation's TypeError.
      raise InputError(f"decode_images takes one row per image in each latent and in y; got "
                       f"{', '.join(f'{k} {v}' for k, v in rows.items())}.")
  return images_from_outputs(model, model.apply(variables, dict(latents), y,
                                                method="decode_latents"))


def _attribute_array(y: Any, fn: str) -> Any:
  """Attributes `y` with a shape to read: a list or tuple of rows converted to a JAX array (its
  items may be a caller's traced values, inside `jit`), anything else as it is.

  Args:
    y: attributes [N, y_dim], as the caller passed them.
    fn: the function's name, for the message.
  Returns:
    `y`, converted where it was a list, a tuple or a NumPy array of objects.
  Raises:
    InputError: text (a string, an array of strings, a list holding one), another dtype that
      is not numbers, or a list or tuple that JAX cannot read (None, rows of other lengths).
  """
  y = _numbers_only(y, fn)
  if not isinstance(y, (list, tuple)):
    return y
  try:
    return jnp.asarray(y)
  except (TypeError, ValueError) as e:
    raise InputError(f"{fn} takes attributes y [N, y_dim] of numbers, one row per image; JAX "
                     f"cannot read these ({first_line(e)}).") from None


def _numbers_only(y: Any, fn: str) -> Any:
  """Refuses attributes `y` that are text, or of another dtype that is not numbers, before JAX
  reads them: `jit` refused them in its own argument check (a traceback, "Error interpreting
  argument ... as an abstract array"), and a plain call with NumPy's ValueError. Strings held
  by a list were read by JAX as dtype names (NumPy's DeprecationWarning for "a").

  Args:
    y: attributes as the caller passed them (arrays, lists, traced values: taken as they are).
    fn: the function's name, for the message.
  Returns:
    `y`; a NumPy array of objects as its list of rows (JAX takes no object arrays).
  Raises:
    InputError: naming what `y` is and what to pass.
  """
  given = ("a NumPy array of objects" if isinstance(y, np.ndarray) and y.dtype == object
           else f"a {type(y).__name__}")
  if isinstance(y, np.ndarray) and y.dtype == object:
    y = y.tolist()
  if isinstance(y, (str, bytes)):
    got = f"{given} (text)"
  elif isinstance(y, (np.ndarray, np.generic)) and not real_dtype(y.dtype):
    # The library's one test of a real dtype (complex numbers too: were passed on to JAX).
    what = {"U": "strings", "S": "bytes"}.get(y.dtype.kind, "values that are not real numbers")
    got = f"a NumPy array of {what} (dtype {y.dtype})"
  elif isinstance(y, (list, tuple)) and any(
      isinstance(v, (str, bytes)) or isinstance(v, (np.ndarray, np.generic))
      and v.dtype.kind in "USO" for v in jax.tree_util.tree_leaves(y)):
    got = f"{given} holding strings"
  else:
    return y
  raise InputError(f"{fn} takes attributes y [N, y_dim] of numbers, one row per image; got "
                   f"{got}. Pass a float array (text such as '0.5' converted first: "
                   "np.asarray(y, np.float32)).")



def images_from_outputs(model: nn.Module, out: Mapping[str, Array]) -> dict[str, Array]:
  """`decode_images`' dict from the outputs of `model.decode_latents` already computed.

  Args:
    model: a model from `models.create_model`.
    out: what its `decode_latents` returned ("mean" and each of `model.image_layers`).
  Returns:
    As `decode_images`.
  """
  images = {"image": jnp.clip(from_signed(out["mean"]), 0.0, 1.0)}
  for name in model.image_layers:
    images[name] = out[name] if name in _UNIT_OUTPUTS else from_signed(out[name])
  return images


def make_sample_fn(model: nn.Module) -> Callable:
  """`sample(variables, y, key) -> images`: latents from the prior, decoded (unjitted).

  Args:
    model: a model from `models.create_model`.
  Returns:
    A function of (variables, y [N, y_dim], key) returning `decode_images`' dict. `y` may be
    any array, or a list or tuple of rows (converted, as `decode_images` converts it), under
    `jit` too. The function raises InputError for attributes that are not numbers, or not
    one row [y_dim] per image.
  Raises:
    InputError: a model that is no Flax module (a TrainedModel: its `sample_fn` is this,
      jitted).
  """
  check_module(model, "sampling.make_sample_fn", "sample")
  y_dim = getattr(model, "y_dim", "y_dim")  # A test's stand-in may have none.

  def sample(variables: Mapping, y: Array, key: Array) -> dict[str, Array]:
    # Was: y.shape read first, an AttributeError for a list (a review's finding); it is
    # converted as decode_images converts it, and its shape (known under `jit` too) checked.
    y = _attribute_array(y, "sample")
    if y is None or jnp.ndim(y) != 2:
      got = "None" if y is None else f"shape {jnp.shape(y)}"
      raise InputError(f"sample takes attributes y [N, {y_dim}], one row per image; got {got} "
                       "(for one image pass [y]).")
    return decode_images(model, variables, prior_latents(model, jnp.shape(y)[0], key), y)
  return sample


def make_jitted_sample_fn(model: nn.Module) -> Callable:
  """`make_sample_fn(model)` jitted (`perf.jit`), refusing attributes that are not numbers
  before `jit` reads them: `TrainedModel.sample_fn`.

  Args:
    model: a model from `models.create_model`.
  Returns:
    A function of (variables, y, key), as `make_sample_fn`'s, compiled once per shape; the
    jitted function's other attributes (`lower`, `eval_shape`, ...) are its.
  Raises:
    InputError: as `make_sample_fn`.
  """
  return _CheckedSampler(perf.jit(make_sample_fn(model)))


class _CheckedSampler:
  """A jitted sampler whose attributes are checked (`_numbers_only`) before `jit`'s own check
  of its arguments, which refused strings with a JAX traceback (fault hunt)."""

  def __init__(self, jitted: Callable):
    self._jitted = jitted

  def __call__(self, variables: Mapping, y: Any, key: Array) -> dict[str, Array]:
    return self._jitted(variables, _numbers_only(y, "sample"), key)

  def __getattr__(self, name: str) -> Any:
    if name == "_jitted":  # Not set yet (a copy being made): no recursion.
      raise AttributeError(name)
    return getattr(self._jitted, name)
