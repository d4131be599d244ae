"""Using a trained model: restore it from its workdir and generate.

Posterior inference by optimisation (reconstruction, completion, editing) builds on this.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from a2i_jax import checkpoints, models, parallel, train_lib
from a2i_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A model restored from a workdir: its config, module, variables and step.

  `sample_fn` is the jitted generator, built once here so repeated calls do not recompile.
  """
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict
  step: int
  sample_fn: Callable


def load_trained(workdir: str, step: Optional[int] = None) -> TrainedModel:
  """Restores the config and the newest (or `step`'s) checkpoint of a training run.

  Args:
    workdir: the `--workdir` of train.py.
    step: which checkpoint; None for the newest.
  Returns:
    A `TrainedModel` with the variables on the default device.
  Raises:
    ConfigError / CheckpointError: the workdir has no config or no (readable) checkpoint.
  """
  config = checkpoints.load_config(workdir)
  model = models.create_model(config.model)
  tx = train_lib.make_optimizer(config)
  abstract = train_lib.abstract_train_state(model, config, tx)
  mesh = parallel.make_mesh(jax.devices()[:1])
  ckpt = checkpoints.Checkpointer(workdir, config.max_checkpoints_to_keep)
  try:
    state = ckpt.restore(checkpoints.with_sharding(abstract, parallel.replicated(mesh)), step)
  finally:
    ckpt.close()
  sample_fn = jax.jit(train_lib.make_sample_fn(model, config))
  return TrainedModel(config, model, state.variables, int(state.step), sample_fn)


def check_attributes(attributes: Any, y_dim: int) -> jax.Array:
  """Validates an attribute batch [N, y_dim] (or one vector) and returns it as float32."""
  y = np.asarray(attributes, dtype=np.float32)
  if y.ndim == 1:
    y = y[None]
  if y.ndim != 2 or y.shape[1] != y_dim:
    raise InputError(f"attributes have shape {y.shape}; this model expects [N, {y_dim}] "
                     f"(one value per attribute, y_dim={y_dim}).")
  if not np.all(np.isfinite(y)):
    raise InputError("attributes contain NaN or infinity.")
  return jnp.asarray(y)


def check_images(images: Any, image_size: int) -> jax.Array:
  """Validates an image batch and returns it as float32 in [-1, 1], NHWC.

  Accepts uint8 in [0, 255] or floats in [0, 1]; anything else is an `InputError`.

  Args:
    images: [N, S, S, 3] (or one [S, S, 3] image).
    image_size: the model's S.
  """
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[None]
  if x.ndim != 4 or x.shape[1:] != (image_size, image_size, 3):
    raise InputError(f"images have shape {x.shape}; this model expects [N, {image_size}, "
                     f"{image_size}, 3] RGB (resize or crop to {image_size}x{image_size}).")
  if x.dtype == np.uint8:
    return jnp.asarray(x, jnp.float32) / 127.5 - 1.0
  if not np.issubdtype(x.dtype, np.floating):
    raise InputError(f"images have dtype {x.dtype}; pass uint8 in [0, 255] or floats in "
                     "[0, 1].")
  lo, hi = float(np.min(x)), float(np.max(x))
  if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
    raise InputError(f"float images must lie in [0, 1]; these range over [{lo:g}, {hi:g}] "
                     "(divide uint8 images by 255, or pass them as uint8).")
  return jnp.asarray(x, jnp.float32) * 2.0 - 1.0


def sample(trained: TrainedModel, attributes: Any, key: jax.Array) -> dict[str, np.ndarray]:
  """Draws images for attribute vectors: z ~ N(0, I), decoder mean (spec 1.4).

  Args:
    trained: from `load_trained`.
    attributes: [N, y_dim] attribute vectors.
    key: PRNG key for the latents.
  Returns:
    dict of float arrays in [0, 1], [N, S, S, 3]: "image"; for disCVAE also "foreground",
    "gate" and "background".
  """
  y = check_attributes(attributes, trained.config.model.y_dim)
  return jax.device_get(trained.sample_fn(trained.variables, y, key))
