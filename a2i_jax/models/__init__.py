"""Flax Linen modules of Attribute2Image: VAE, CVAE and disCVAE (docs/reference.md §2).

The layers, widths and initialisers are those of the reference Torch code
(`arch_condVAE.lua`, `arch_disCVAE.lua`), so at `width=1.0` and 64x64 images the parameter
counts equal the reference's. Two knobs make small variants: `width` scales every hidden
channel / unit count and `image_size` may be 32 (one pooling / upsampling stage fewer in the
spatial sizes, the layer list unchanged).

Images are NHWC in [-1, 1]. Attributes are float vectors of length `y_dim`. Every model's
`__call__` returns a dict of outputs that `objectives.py` turns into a loss; `decode` maps
latents (and attributes) to images and is what sampling and posterior inference call.

Random streams: 'reparam' (the reparametrisation noise, drawn in eval mode too, as in the
reference) and 'dropout' (train mode only).

This package holds the factory and the variable helpers; the modules: `initializers` (Torch7
defaults), `layers`, `conv_grad` (the per-tap kernel gradient), `blocks` (encoders and
decoders), `cvae` and `discvae`. Their public names are re-exported here.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from a2i_jax import inputs, memo, perf, sampling
from a2i_jax.errors import ConfigError
from a2i_jax.models.blocks import GaussianHead, ImageDecoder, ImageEncoder, ImageTrunk, LinearMix
from a2i_jax.models.cvae import CVAE
from a2i_jax.models.discvae import (COMPOSITIONS, BackgroundDecoder, BackgroundHead,
                                    BackgroundTrunk, DisCVAE, compose)
from a2i_jax.models import conv_grad, initializers
from a2i_jax.models.initializers import normal, torch_default, uniform, zeros
from a2i_jax.models.layers import (DECODER_TAILS, UPSAMPLE_MODES, BatchNorm, ConvParams,
                                   UpsampleConv, batch_norm, conv, conv_bn_relu, decoder_tail,
                                   dense, max_pool, reparametrize, scaled, upsample,
                                   window_conv)

Array = jax.Array
MODEL_NAMES = ("vae", "cvae", "discvae")
_INT32_MAX = 2**31 - 1  # The largest channel count the device code takes (`_check_sizes`).
# XLA options for programs that run once (initialisation): compile fast, run slower.
CHEAP_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

__all__ = [
    "BackgroundDecoder", "BackgroundHead", "BackgroundTrunk", "BatchNorm", "CHEAP_COMPILE",
    "COMPOSITIONS", "CVAE", "ConvParams", "DECODER_TAILS", "DisCVAE", "GaussianHead",
    "ImageDecoder", "ImageEncoder", "ImageTrunk", "LinearMix", "MODEL_NAMES", "UPSAMPLE_MODES",
    "UpsampleConv", "abstract_variables", "batch_norm", "compose", "conv", "conv_bn_relu",
    "count_params", "create_model", "decoder_tail", "dense", "dummy_inputs", "init_variables",
    "max_pool", "normal", "reparametrize", "scaled", "torch_default", "trace_settings",
    "uniform", "upsample", "window_conv", "zeros",
]


def create_model(model_config: Any) -> nn.Module:
  """Builds the model named by `model_config.name` ("vae", "cvae" or "discvae").

  Args:
    model_config: the `config.model` ConfigDict (name, y_dim, z_dim, zf_dim, zb_dim,
      image_size, width, dtype, upsample_mode, conv_weight_grad, decoder_tail,
      block_kl_bg_grad_to_fg,
      gate_loss_weight, composition, recon_weight); `config_lib.validate_config` has checked
      its values.
  Returns:
    An unbound Linen module that answers for itself: `latent_dims`, `uses_attributes`,
    `needs_masks`, `image_layers`, `energies`, `default_energy`, `loss_terms`,
    `encode_latents` and `decode_latents` (callers never test the model's name).
  Raises:
    ConfigError: an unknown name, or sizes no model has (a width that is not a finite number
      above 0, a latent size below 1, a negative y_dim): a config built in Python may not
      have been through `validate_config`.
  """
  name = model_config.name
  _check_sizes(model_config, name)
  # "auto": bf16 compute on GPU / TPU, f32 on CPU (perf.compute_dtype); params stay f32.
  dtype = perf.compute_dtype(model_config.get("dtype", "float32"))
  # "auto": the per-tap weight gradient on CPU with YNNPACK's convolutions, XLA's elsewhere
  # (perf.conv_weight_grad).
  conv_weight_grad = perf.conv_weight_grad(model_config.get("conv_weight_grad", "xla"))
  common = dict(y_dim=model_config.y_dim, image_size=model_config.image_size,
                width=model_config.width, dtype=dtype,
                upsample_mode=model_config.get("upsample_mode", "polyphase"),
                conv_weight_grad=conv_weight_grad,
                # "auto": "full" on CPU with YNNPACK's convolutions, else "phase" (perf.decoder_tail).
                decoder_tail=perf.decoder_tail(model_config.get("decoder_tail", "auto")))
  if name in ("vae", "cvae"):
    return CVAE(z_dim=model_config.z_dim, conditional=(name == "cvae"), **common)
  if name == "discvae":
    return DisCVAE(zf_dim=model_config.zf_dim, zb_dim=model_config.zb_dim,
                   block_kl_bg_grad_to_fg=model_config.block_kl_bg_grad_to_fg,
                   gate_loss_weight=model_config.gate_loss_weight,
                   composition=model_config.get("composition", "reference"),
                   recon_weight=model_config.get("recon_weight", 1.0), **common)
  raise ConfigError(f"unknown model.name={name!r}; choose one of {', '.join(MODEL_NAMES)}.")


def _check_sizes(model_config: Any, name: str) -> None:
  """The checks of the sizes a model is built from: its width and the latent sizes it uses
  (`config_lib.validate_config` leaves them to this, which it calls), and y_dim's sign (0 is
  a folder dataset's count before training; `dummy_inputs` refuses it). Was, for a config
  built in Python: a model of one channel per layer for a width of 0 or -1, a
  ZeroDivisionError (z_dim=0) or JAX's TypeError (z_dim=-3) at its init (a review)."""
  width = model_config.width
  if isinstance(width, bool) or not isinstance(width, numbers.Real) or not math.isfinite(width):
    raise ConfigError(f"config.model.width={width!r} must be a finite number.")
  if width <= 0:
    raise ConfigError(f"config.model.width={width} must be > 0 (1.0: the paper's widths).")
  # The widest layer: the image encoder's 1,024 units (every model's; `scaled`), as a float
  # (`scaled` of width=1e306 would round infinity). Past int32 was an OverflowError's
  # traceback while the model was traced (a review).
  channels = 1024 * float(width)
  if channels > _INT32_MAX:
    shown = f"{channels:.3g}" if math.isfinite(channels) else "over 1e308"
    raise ConfigError(f"config.model.width={width} makes layers of {shown} channels, "
                      f"past int32's largest value ({_INT32_MAX:,}), in which the device code "
                      "counts them: no machine holds such a model; use a far smaller width "
                      "(1.0: the paper's widths).")
  for key in {"vae": ("z_dim",), "cvae": ("z_dim",)}.get(name, ("zf_dim", "zb_dim")):
    if not inputs.is_integer(model_config[key]) or model_config[key] < 1:
      raise ConfigError(f"config.model.{key}={model_config[key]} must be a positive integer.")
  if not inputs.is_integer(model_config.y_dim) or model_config.y_dim < 0:
    raise ConfigError(f"config.model.y_dim={model_config.y_dim} must be a positive integer "
                      "(the number of attributes; 0 for a folder dataset's, counted when "
                      "training starts).")


def dummy_inputs(model_config: Any, batch: int = 1) -> tuple[Array, Array, Array]:
  """Zero inputs (x, y, mask) of the right shapes, for `init` and `jax.eval_shape`.

  Args:
    model_config: `config.model`.
    batch: the batch size B.
  Returns:
    x [B, S, S, 3] zeros, y [B, y_dim] zeros, mask [B, S, S, 1] ones.
  Raises:
    InputError: a batch that is no integer of at least 1.
    ConfigError: `model_config.y_dim` below 1 (a folder dataset's 0, not yet counted).
  """
  inputs.check_int(batch, "batch", 1)  # Was JAX's TypeError for -1 or 2.5 (a review).
  if inputs.is_integer(model_config.y_dim) and model_config.y_dim < 1:  # Was a
    # ZeroDivisionError from the initialisers' fan-in.
    raise ConfigError(f"config.model.y_dim={model_config.y_dim} must be a positive integer "
                      "(the number of attributes; a folder dataset's 0 is counted when "
                      "training starts: pass the count).")
  s = model_config.image_size
  return (jnp.zeros((batch, s, s, 3), jnp.float32),
          jnp.zeros((batch, model_config.y_dim), jnp.float32),
          jnp.ones((batch, s, s, 1), jnp.float32))


def _init_fn(model: nn.Module, model_config: Any) -> Callable:
  def init(key):
    # The dummy inputs inside the trace: made outside it, each would be an eager program of
    # its own (compiled, or fetched from the persistent cache, in every new process).
    x, y, m = dummy_inputs(model_config)
    k_params, k_reparam, k_drop = jax.random.split(key, 3)
    return model.init({"params": k_params, "reparam": k_reparam, "dropout": k_drop}, x, y, m,
                      train=False)
  return init


# abstract_variables' answers by `_variables_key`.
_ABSTRACT = memo.BoundedCache(16)
# The module-level settings the layers read while a model is traced (the benchmarks set them
# to time each form): every public upper-case setting of `layers` and `conv_grad` that is not
# a tuple of choices (tests/test_models.py checks that none is missed).
_TRACE_SETTINGS = (("layers", "POLYPHASE_OFFSET"), ("layers", "FOLD_BATCHNORM"),
                   ("layers", "MAX_POOL_FORM"), ("conv_grad", "CONV_OUTPUT_SPLIT"),
                   ("conv_grad", "SPLIT_OUTPUTS"), ("conv_grad", "CONV_INPUT_GRAD"),
                   ("conv_grad", "CONV_WEIGHT_GRAD_LAYOUT"))


def trace_settings() -> tuple:
  """The module-level settings a model's trace reads (`layers.FOLD_BATCHNORM`, `MAX_POOL_FORM`,
  `POLYPHASE_OFFSET`, `conv_grad.CONV_*`, `SPLIT_OUTPUTS`), with their values: part of the
  key of every trace and program kept per module (`init_variables`, `abstract_variables`,
  `inference.restore.shared_programs`), so that a changed setting is traced afresh.

  Returns:
    ((module, name, value), ...).
  """
  from a2i_jax.models import conv_grad, layers  # pylint: disable=import-outside-toplevel
  modules = {"layers": layers, "conv_grad": conv_grad}
  return tuple((m, n, getattr(modules[m], n)) for m, n in _TRACE_SETTINGS)


def _variables_key(model: nn.Module, model_config: Any) -> Optional[tuple]:
  """What a model's variables depend on: the module (Linen modules of equal fields are equal
  and hash alike), the sizes of `dummy_inputs` and `trace_settings()`; None for a module that
  does not hash (a field holding a list, say), whose variables are then traced each call. A
  process that makes the same model's variables again (a notebook, the tests) reuses the trace
  of its `init` (docs/design.md §3.14)."""
  try:
    key = (model, int(model_config.image_size), int(model_config.y_dim), trace_settings())
    hash(key)
  except (TypeError, ValueError, AttributeError):
    return None
  return key


def abstract_variables(model: nn.Module, model_config: Any) -> dict:
  """Shapes and dtypes of `model`'s variables (`jax.eval_shape`: nothing is computed).

  Args:
    model: from `create_model`.
    model_config: `config.model`.
  Returns:
    {"params", "batch_stats"} trees of `jax.ShapeDtypeStruct`.
  Raises:
    InputError: a `model` that is no Flax module (a loaded TrainedModel: pass its `.model`).
  """
  sampling.check_module(model, "models.abstract_variables")
  key = _variables_key(model, model_config)

  def trace():
    # No convolution split into blocks of outputs (`conv_grad.shapes_only`): the shapes are
    # the same, and a width far past any model's (100,000) traced for minutes in blocks.
    with conv_grad.shapes_only():
      return jax.eval_shape(_init_fn(model, model_config), jax.random.key(0))
  shapes = _ABSTRACT.get(key, trace) if key is not None else trace()
  # New containers each call (a caller may change them); the leaves are immutable.
  return jax.tree_util.tree_map(lambda s: s, shapes)


def init_variables(model: nn.Module, model_config: Any, key: Array) -> dict:
  """Initial variables {'params', 'batch_stats'} of `model`, from `key`.

  Args:
    model: from `create_model`.
    model_config: `config.model`.
    key: PRNG key.
  Returns:
    {"params", "batch_stats"} trees of arrays.
  Raises:
    ConfigError: variables that do not fit in the host's memory (a latent size or width
      far past any model's).
    InputError: a `model` that is no Flax module (a loaded TrainedModel: pass its `.model`;
      was an AttributeError, "'TrainedModel' object has no attribute 'init'").
  """
  sampling.check_module(model, "models.init_variables")
  init = _init_fn(model, model_config)

  # Jitted (op-by-op initialisation compiles every primitive separately), and on CPU without
  # LLVM optimisation, since it runs once; the host draws after the program, so that the
  # persistent compilation cache can keep it (`initializers.draw_after`). The forward pass
  # is traced with no convolution in blocks (`conv_grad.shapes_only`): no variable needs its
  # outputs, and the blocks of a width far past any model's took minutes before the refusal.
  try:
    with conv_grad.shapes_only():
      return initializers.draw_after(init, key,
                                     compiler_options=perf.compiler_options(CHEAP_COMPILE),
                                     cache_key=_variables_key(model, model_config))
  except MemoryError as e:  # Was, for z_dim=1e7, "ask for less: a smaller dataset or
    # batch_size" after a minute of drawing; for 1e8 a hang in XLA's compile of the program.
    raise _too_large(abstract_variables(model, model_config), str(e)) from None


def check_fits_host_memory(model: nn.Module, model_config: Any) -> None:
  """Refuses a model whose initial variables take more than the host's memory, from their
  shapes alone (nothing is drawn): `init_variables`' refusal, made before anything is written.

  Args:
    model: from `create_model`.
    model_config: `config.model`.
  Raises:
    ConfigError: the variables do not fit (a latent size or width far past any model's).
    InputError: a `model` that is no Flax module (a loaded TrainedModel: pass its `.model`).
  """
  shapes = abstract_variables(model, model_config)
  short = initializers.memory_shortfall(initializers.tree_nbytes(shapes))
  if short is not None:
    raise _too_large(shapes, short)


def _too_large(shapes: Any, why: str) -> ConfigError:
  """The refusal of variables `shapes` that do not fit in the host's memory, for `why`."""
  return ConfigError(f"the model's {count_params(shapes):,} variables do not fit in this "
                     f"machine's memory ({why}); make the model smaller (config.model.z_dim, "
                     "zf_dim, zb_dim, y_dim or width).")


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs).

  Args:
    params: a pytree whose leaves have `.shape`.
  Returns:
    The total element count.
  """
  return int(sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
