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

from a2i_jax.errors import InputError, first_line
from a2i_jax.inputs import check_int, check_key, from_signed

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
      model's, latents and attributes of other row counts (from their shapes alone: under
      `jit` too), or attributes given as a list that is not rows of numbers.
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
    `y`, converted where it was a list or tuple.
  Raises:
    InputError: a list or tuple that is not numbers (strings, None) or whose rows differ in
      length.
  """
  if not isinstance(y, (list, tuple)):
    return y
  # Strings named before JAX reads them (it tries each as a dtype's name, with NumPy's
  # DeprecationWarning for "a"), the rest by JAX's own refusal (was a traceback).
  if any(isinstance(v, (str, bytes)) for v in jax.tree_util.tree_leaves(y)):
    why = "these hold strings"
  else:
    try:
      return jnp.asarray(y)
    except (TypeError, ValueError) as e:
      why = f"JAX cannot read these ({first_line(e)})"
  raise InputError(f"{fn} takes attributes y [N, y_dim] of numbers, one row per image; {why}.")


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
