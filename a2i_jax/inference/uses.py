"""What users do with a trained model (docs/design.md §4 step 11): sample, decode, sweep an
attribute, swap foreground and background, and, by posterior inference, reconstruct, complete,
infer attributes and edit.

Every function takes a `TrainedModel`, checks its inputs (`a2i_jax.inputs`), caches the
jitted functions it builds on the model, and takes and gives images as the user holds them:
uint8 or [0, 1] floats in, [0, 1] floats out. Decoding goes through `a2i_jax.sampling`, the
one decoding path, and nothing here tests which model it is: the model answers for itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from a2i_jax import parallel, perf, sampling
from a2i_jax.errors import InputError
from a2i_jax.inference.posterior import (AttributePrior, InferenceOptions, _static,
                                         infer_latents, make_inference_fns)
from a2i_jax.inference.restore import TrainedModel
from a2i_jax.inputs import check_attributes, check_images, check_mask, to_unit

Array = jax.Array


def options_for(trained: TrainedModel, **overrides) -> InferenceOptions:
  """The run's `config.inference` options, with keyword overrides.

  Args:
    trained: from `load_trained`.
    **overrides: any `InferenceOptions` field, e.g. steps=100, restarts=4.
  Returns:
    An `InferenceOptions`.
  """
  return InferenceOptions.from_config(trained.config.inference, **overrides)


def _cached(trained: TrainedModel, key: Any, build: Callable[[], Any]) -> Any:
  if key not in trained.cache:
    trained.cache[key] = build()
  return trained.cache[key]


def run_inference(trained: TrainedModel, images: Any, attributes: Any = None,
                  observed: Any = None, *, key: Array,
                  options: Optional[InferenceOptions] = None, fg_masks: Any = None,
                  attribute_prior: Optional[AttributePrior] = None,
                  batch_size: Optional[int] = None) -> dict[str, np.ndarray]:
  """`infer_latents` over any number of images, in batches of `config.inference.batch_size`.

  Args:
    trained: from `load_trained`.
    images: [N, S, S, 3] uint8 or floats in [0, 1].
    attributes: [N, y_dim] (None for models without attributes, or when inferring them).
    observed: [N, S, S(, 1)] observed-pixel mask (1 = observed); None = all observed.
    key: PRNG key.
    options: default `options_for(trained)`.
    fg_masks: foreground masks for the encoder init of models that take them (optional).
    attribute_prior: needed with `options.infer_attributes`.
    batch_size: images per batch; default `config.inference.batch_size`.
  Returns:
    `infer_latents`' outputs for all N images ("energy_trace" averaged over batches); the
    images ("reconstruction" and the model's image layers) in [0, 1].
  """
  options = options or options_for(trained)
  x = check_images(images, trained.config.model.image_size)
  n = x.shape[0]
  batch = int(batch_size or trained.config.inference.batch_size)
  fns = _cached(trained, ("infer", _static(options)),
                lambda: make_inference_fns(trained.model, _static(options)))
  take = lambda a, sl: None if a is None else np.asarray(a)[sl]
  parts = []
  for i, start in enumerate(range(0, n, batch)):
    sl = slice(start, min(start + batch, n))
    parts.append(infer_latents(
        trained, x[sl], take(attributes, sl), take(observed, sl),
        key=jax.random.fold_in(key, i), options=options, fg_masks=take(fg_masks, sl),
        attribute_prior=attribute_prior, fns=fns, pad_to=batch if n > batch else 0))
  out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "energy_trace"}
  out["energy_trace"] = np.mean([p["energy_trace"] for p in parts], axis=0)
  return out


def reconstruct(trained: TrainedModel, images: Any, attributes: Any = None, *, key: Array,
                options: Optional[InferenceOptions] = None, **kwargs) -> dict[str, np.ndarray]:
  """Infers z from fully observed images and decodes it.

  Args:
    trained, images, attributes, key, options, kwargs: as for `run_inference`.
  Returns:
    `run_inference`'s dict; "reconstruction" [N, S, S, 3] in [0, 1].
  """
  return run_inference(trained, images, attributes, None, key=key, options=options, **kwargs)


def complete(trained: TrainedModel, images: Any, attributes: Any, observed: Any, *,
             key: Array, options: Optional[InferenceOptions] = None,
             **kwargs) -> dict[str, np.ndarray]:
  """Fills the hidden pixels of images: z is inferred from the observed pixels only.

  Args:
    trained, images, attributes, key, options, kwargs: as for `run_inference`.
    observed: [N, S, S(, 1)] with 1 = observed (kept as is), 0 = hidden (filled).
  Returns:
    `run_inference`'s dict plus "completion" [N, S, S, 3] in [0, 1]: the observed pixels of
    the input and the generator's pixels in the hole.
  """
  n = np.asarray(images).shape[0] if np.asarray(images).ndim == 4 else 1
  obs = np.asarray(check_mask(observed, n, trained.config.model.image_size, "observed"))
  out = run_inference(trained, images, attributes, obs, key=key, options=options, **kwargs)
  x01 = to_unit(np.asarray(images)).reshape(out["reconstruction"].shape)
  out["completion"] = obs * x01 + (1.0 - obs) * out["reconstruction"]
  return out


def infer_attributes(trained: TrainedModel, images: Any, attribute_prior: AttributePrior,
                     observed: Any = None, *, key: Array,
                     options: Optional[InferenceOptions] = None,
                     **kwargs) -> dict[str, np.ndarray]:
  """Estimates the attributes of images: y is optimised jointly with z (y unknown).

  Args:
    trained, images, observed, key, kwargs: as for `run_inference`.
    attribute_prior: the Gaussian prior on y (`AttributePrior.fit(training attributes)`).
    options: default `options_for(trained)`; `infer_attributes` is switched on.
  Returns:
    `run_inference`'s dict; "y" [N, y_dim] holds the inferred attributes.
  Raises:
    InputError: the model does not use attributes (the VAE).
  """
  if not trained.model.uses_attributes:
    raise InputError(f"this {trained.config.model.name} does not use attributes, so they "
                     "cannot be inferred from it; use a CVAE or disCVAE workdir.")
  options = dataclasses.replace(options or options_for(trained), infer_attributes=True)
  return run_inference(trained, images, None, observed, key=key, options=options,
                       attribute_prior=attribute_prior, **kwargs)


def decode(trained: TrainedModel, latents: Mapping[str, Any], attributes: Any
           ) -> dict[str, np.ndarray]:
  """Decodes given latents under given attributes (no sampling).

  Args:
    trained: from `load_trained`.
    latents: one [N, size] array per latent of the model (`model.latent_dims`): {"z"}, or
      disCVAE's {"z_fg", "z_bg"}.
    attributes: [N, y_dim].
  Returns:
    "image" [N, S, S, 3] in [0, 1], plus each of the model's image layers (disCVAE:
    "foreground", "gate", "background").
  """
  dims = trained.model.latent_dims
  y = check_attributes(attributes, trained.config.model.y_dim)
  for name, dim in dims.items():
    if name not in latents:
      raise InputError(f"latents lack {name!r}; this {trained.config.model.name} needs "
                       f"{sorted(dims)}.")
    if np.shape(latents[name]) != (y.shape[0], dim):
      raise InputError(f"latents[{name!r}] has shape {np.shape(latents[name])}; expected "
                       f"[{y.shape[0]}, {dim}].")
  fn = _cached(trained, "decode",
               lambda: perf.jit(lambda v, lat, y: sampling.decode_images(trained.model, v, lat, y)))
  lat = {n: np.asarray(latents[n], np.float32) for n in dims}
  return parallel.fetch(fn(trained.variables, lat, y))


def prior_latents(trained: TrainedModel, num: int, key: Array) -> dict[str, np.ndarray]:
  """`num` draws of the latents from the prior N(0, I).

  Args:
    trained: from `load_trained`.
    num: N.
    key: PRNG key (split once per latent).
  Returns:
    {"z": [N, z_dim]}, or for disCVAE {"z_fg": [N, zf_dim], "z_bg": [N, zb_dim]}.
  """
  latents = sampling.prior_latents(trained.model, num, key, always_split=True)
  return {name: np.asarray(v) for name, v in latents.items()}


def progression(trained: TrainedModel, attributes: Any, index: int, values: Sequence[float],
                *, key: Array, num_latents: int = 4) -> np.ndarray:
  """Attribute progression (docs/reference.md §7.3): fixed z, attribute `index` swept.

  Args:
    trained: from `load_trained`.
    attributes: the base attribute vector [y_dim].
    index: which attribute to sweep.
    values: its K values, e.g. `np.linspace(train_min, train_max, K)`.
    key: PRNG key of the `num_latents` latent draws (one per row).
    num_latents: how many latent draws (rows).
  Returns:
    [num_latents, K, S, S, 3] images in [0, 1].
  """
  y_dim = trained.config.model.y_dim
  y = np.asarray(check_attributes(attributes, y_dim))
  if y.shape[0] != 1:
    raise InputError(f"progression takes one base attribute vector; got {y.shape[0]}.")
  if not 0 <= index < y_dim:
    raise InputError(f"attribute index {index} is out of range [0, {y_dim}).")
  k = len(values)
  ys = np.repeat(y, num_latents * k, axis=0)
  ys[:, index] = np.tile(np.asarray(values, np.float32), num_latents)
  lat = {n: np.repeat(v, k, axis=0) for n, v in prior_latents(trained, num_latents, key).items()}
  images = decode(trained, lat, ys)["image"]
  return images.reshape((num_latents, k) + images.shape[1:])


SWAP_LATENTS = ("z_fg", "z_bg")


def swap(trained: TrainedModel, attributes: Any, *, key: Array, num: int = 6
         ) -> dict[str, np.ndarray]:
  """Foreground / background swap (docs/reference.md §7.4) for one attribute vector.

  Args:
    trained: a model with separate foreground and background latents (disCVAE).
    attributes: [y_dim].
    key: PRNG key of the `num` foreground and `num` background latents.
    num: how many of each.
  Returns:
    "grid" [num, num, S, S, 3] in [0, 1]: row i has foreground latent i, column j background
    latent j (so along a row the foreground stays and the background changes).
  """
  if tuple(trained.model.latent_dims) != SWAP_LATENTS:
    raise InputError(f"swap needs a disCVAE (separate foreground and background latents); this "
                     f"workdir holds a {trained.config.model.name}.")
  y = np.asarray(check_attributes(attributes, trained.config.model.y_dim))
  lat = prior_latents(trained, num, key)
  z_fg = np.repeat(lat["z_fg"], num, axis=0)
  z_bg = np.tile(lat["z_bg"], (num, 1))
  images = decode(trained, {"z_fg": z_fg, "z_bg": z_bg}, np.repeat(y, num * num, axis=0))
  return {"grid": images["image"].reshape((num, num) + images["image"].shape[1:])}


def edit(trained: TrainedModel, images: Any, attributes: Any, changes: Mapping[int, float],
         *, key: Array, options: Optional[InferenceOptions] = None,
         **kwargs) -> dict[str, np.ndarray]:
  """Edits the attributes of real images: infer z under `attributes`, change, decode.

  For disCVAE the inferred background latent is kept, so only the foreground changes with y.

  Args:
    trained, images, attributes, key, options, kwargs: as for `run_inference`.
    changes: {attribute index: new value}, applied to every image.
  Returns:
    "reconstruction" and "edited" [N, S, S, 3] in [0, 1], the latents, "y" (given) and
    "edited_y".
  """
  y_dim = trained.config.model.y_dim
  for index in changes:
    if not isinstance(index, (int, np.integer)) or not 0 <= index < y_dim:
      raise InputError(f"attribute index {index!r} is not an integer in [0, {y_dim}); "
                       "edit takes {attribute index: new value}.")
  out = run_inference(trained, images, attributes, None, key=key, options=options, **kwargs)
  y_new = np.array(out["y"], np.float32)
  for index, value in changes.items():
    y_new[:, int(index)] = value
  lat = {n: out[n] for n in trained.model.latent_dims}
  out["edited"] = decode(trained, lat, y_new)["image"]
  out["edited_y"] = y_new
  return out


def sample(trained: TrainedModel, attributes: Any, key: Array) -> dict[str, np.ndarray]:
  """Draws images for attribute vectors: z ~ N(0, I), decoder mean (docs/reference.md §1.4).

  Args:
    trained: from `load_trained`.
    attributes: [N, y_dim] attribute vectors.
    key: PRNG key for the latents.
  Returns:
    dict of float arrays in [0, 1], [N, S, S, 3]: "image"; for disCVAE also "foreground",
    "gate" and "background".
  """
  y = check_attributes(attributes, trained.config.model.y_dim)
  return parallel.fetch(trained.sample_fn(trained.variables, y, key))
