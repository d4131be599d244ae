"""Flax Linen modules of Attribute2Image: VAE, CVAE and disCVAE (spec section 2).

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
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from a2i_jax import objectives, perf
from a2i_jax.errors import ConfigError, InputError
from a2i_jax.numerics import bounded_exp

Array = jax.Array
Dtype = Any
MODEL_NAMES = ("vae", "cvae", "discvae")
# XLA options for programs that run once (initialisation): compile fast, run slower.
CHEAP_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# ----------------------------------------------------------------------------------------------
# Torch7 initialisers (spec 2.7): no `initialize()` is ever called in the reference, so every
# layer keeps its `reset()` default. Flax's defaults (lecun_normal, BN scale 1) differ.

def _host_draw(key: Array, shape: Sequence[int], dtype: Dtype,
               sample: Callable[[np.random.Generator, tuple], np.ndarray]) -> Array:
  """Draws initial values with numpy on the host, seeded by `key`.

  Through `jax.pure_callback`, so it works eagerly, under `jit` and under `eval_shape`, and
  gives the same values everywhere. Why not `jax.random`: every initialiser becomes its own
  threefry kernel, and XLA:CPU takes seconds to compile each one (a tiny disCVAE's init took
  33 s to compile; the parameters take milliseconds to draw).
  """
  shape = tuple(shape)

  def draw(key_data):
    seed = np.asarray(key_data, dtype=np.uint32).ravel().tolist()
    return np.asarray(sample(np.random.default_rng(seed), shape), dtype=dtype)

  return jax.pure_callback(draw, jax.ShapeDtypeStruct(shape, dtype), jax.random.key_data(key))


def _uniform(low: float, high: float) -> Callable:
  def init(key, shape, dtype=jnp.float32):
    return _host_draw(key, shape, dtype, lambda rng, s: rng.uniform(low, high, s))
  return init


def _normal(std: float) -> Callable:
  def init(key, shape, dtype=jnp.float32):
    return _host_draw(key, shape, dtype, lambda rng, s: std * rng.standard_normal(s))
  return init


def _torch_default(fan_in: int) -> Callable:
  """nn.Linear / nn.SpatialConvolution reset(): weights and biases ~ U(-1/sqrt(fan_in), +)."""
  bound = 1.0 / math.sqrt(fan_in)
  return _uniform(-bound, bound)


def _zeros(key, shape, dtype=jnp.float32):
  del key
  return jnp.zeros(shape, dtype)


def scaled(n: int, width: float) -> int:
  """A hidden size `n` of the reference scaled by the width multiplier (at least 1).

  Args:
    n: the reference's size.
    width: `config.model.width`.
  Returns:
    round(n * width), at least 1.
  """
  return max(1, int(round(n * width)))


def dense(x: Array, features: int, dtype: Dtype, name: Optional[str] = None) -> Array:
  """nn.Linear with the Torch default initialisation.

  Args:
    x: [B, D] inputs.
    features: output size F.
    dtype: computation dtype.
    name: the Flax submodule name (None for automatic).
  Returns:
    [B, F].
  """
  init = _torch_default(x.shape[-1])
  return nn.Dense(features, kernel_init=init, bias_init=init, dtype=dtype, name=name)(x)


def conv(x: Array, features: int, kernel: int, *, stride: int = 1,
         padding: Optional[int] = None, dtype: Dtype, upsample_first: bool = False,
         upsample_mode: str = "polyphase", conv_weight_grad: str = "xla") -> Array:
  """nn.SpatialConvolution (k x k, explicit zero padding) with the Torch default init.

  The reference's SpatialFullConvolution(5, stride 1, pad 2) is the same function as a 5x5
  "same" convolution with a flipped kernel, so it is built with this too.

  Args:
    x: [B, H, W, C] inputs.
    features: output channels F.
    kernel: the kernel side k.
    stride: the stride.
    padding: zero padding per side; None for k // 2 ("same" at stride 1).
    dtype: computation dtype.
    upsample_first: apply SpatialUpSamplingNearest(2) to x first (the decoders' pattern).
    upsample_mode: how an upsample-then-convolve is computed (`upsample_first` only):
      "direct" (upsample, then convolve at 2H x 2W) or "polyphase" (the same function, computed
      at H x W; see `UpsampleConv`).
    conv_weight_grad: how the kernel's gradient is computed: "xla", "taps" (per-tap matrix
      products, faster on XLA:CPU; `perf.taps_conv_general_dilated`) or "auto". The value and
      the parameters are the same either way.
  Returns:
    [B, H', W', F], H' = 2H when `upsample_first`.
  """
  pad = kernel // 2 if padding is None else padding
  conv_fn = perf.conv_general_dilated_fn(conv_weight_grad)
  if upsample_first:
    if upsample_mode not in UPSAMPLE_MODES:
      raise ConfigError(f"model.upsample_mode={upsample_mode!r} is not one of "
                        f"{', '.join(UPSAMPLE_MODES)}.")
    taps = 2 * ((kernel // 2 + 1) // 2) + 1  # Low-resolution taps per side (UpsampleConv).
    if (upsample_mode == "polyphase" and stride == 1 and pad == kernel // 2 and kernel % 2
        and taps < kernel):  # 5x5 and larger: fewer multiply-adds; 3x3 would gain nothing.
      init = _torch_default(kernel * kernel * x.shape[-1])
      return UpsampleConv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                          kernel_init=init, bias_init=init, dtype=dtype,
                          conv_general_dilated=conv_fn)(x)
    x = upsample(x)
  init = _torch_default(kernel * kernel * x.shape[-1])
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), kernel_init=init, bias_init=init,
                 dtype=dtype, conv_general_dilated=conv_fn)(x)


UPSAMPLE_MODES = ("polyphase", "direct")


def _polyphase_taps(kernel: int) -> np.ndarray:
  """0/1 matrix M[a, t, d]: tap d of a k-tap "same" filter applied after nearest x2 upsampling
  reads low-resolution offset t - T for output phase a (T = ceil((k // 2) / 2)).

  Args:
    kernel: the (odd) kernel side k.
  Returns:
    float32 [2, 2T + 1, k].
  """
  r = kernel // 2
  half = (r + 1) // 2
  m = np.zeros((2, 2 * half + 1, kernel), np.float32)
  for a in range(2):
    for d in range(kernel):
      m[a, (a + d - r) // 2 + half, d] = 1.0
  return m


class UpsampleConv(nn.Conv):
  """Nearest x2 upsampling followed by a k x k "same" convolution, computed at the input's size.

  Output pixel (2i + a, 2j + b) of conv(upsample(x), W) reads only a (2T+1) x (2T+1) window of
  x around (i, j), with phase (a, b)'s kernel made of sums of W's taps (`_polyphase_taps`).
  So the layer is one convolution of x with the four phase kernels stacked on the output axis
  (4F outputs, (2T+1)^2 taps), then a depth-to-space shuffle: the same function with the same
  parameters (`kernel` [k, k, C, F], `bias` [F], created in nn.Conv's order, so checkpoints
  and initial values are unchanged), at 4 (2T+1)^2 / k^2 of the multiply-adds: 36 / 100 for
  the decoders' 5x5 layers. The class is named like nn.Conv's subclass so that Flax's automatic
  names (Conv_0, Conv_1, ...) stay those of the direct form; see `conv`. nn.Conv's
  `conv_general_dilated` field, if set, replaces `jax.lax.conv_general_dilated` for the
  low-resolution convolution (as in nn.Conv).
  """

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    """Applies the layer.

    Args:
      inputs: [B, H, W, C].
    Returns:
      [B, 2H, 2W, F].
    """
    k = self.kernel_size[0]
    b, h, w, c = inputs.shape
    kernel = self.param("kernel", self.kernel_init, (k, k, c, self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    taps = jnp.asarray(_polyphase_taps(k), kernel.dtype)
    half = (taps.shape[1] - 1) // 2
    # [t, s, C, a, b, F]: the phase kernels, summed in the parameters' dtype before any cast.
    phases = jnp.einsum("atd,bse,deio->tsiabo", taps, taps, kernel)
    phases = phases.reshape(2 * half + 1, 2 * half + 1, c, 4 * self.features)
    x, phases, bias = nn.dtypes.promote_dtype(inputs, phases, bias, dtype=self.dtype)
    conv_fn = self.conv_general_dilated or jax.lax.conv_general_dilated
    y = conv_fn(x, phases, (1, 1), ((half, half), (half, half)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
    y = y.reshape(b, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * w, self.features) + bias


UpsampleConv.__name__ = "Conv"  # Flax names submodules by class name: keep Conv_<n>.


def batch_norm(x: Array, train: bool, dtype: Dtype) -> Array:
  """Torch (Spatial)BatchNormalization: eps 1e-5, momentum 0.1 (Flax 0.9), gamma ~ U[0, 1).

  Args:
    x: [B, ..., C] inputs.
    train: batch statistics (and update the running ones) if True, running ones if False.
    dtype: computation dtype.
  Returns:
    Normalised x, the same shape.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      scale_init=_uniform(0.0, 1.0), bias_init=_zeros, dtype=dtype)(x)


def max_pool(x: Array) -> Array:
  """2x2 max pooling with stride 2 (SpatialMaxPooling(2, 2)).

  Args:
    x: [B, H, W, C].
  Returns:
    [B, H/2, W/2, C].
  """
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def upsample(x: Array) -> Array:
  """SpatialUpSamplingNearest(2): nearest-neighbour x2, no transposed convolution.

  Args:
    x: [B, H, W, C].
  Returns:
    [B, 2H, 2W, C].
  """
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


def reparametrize(mu: Array, logvar: Array, key: Array) -> Array:
  """z = mu + exp(logvar / 2) * eps (Reparametrize.lua).

  Args:
    mu: [B, Z] means.
    logvar: [B, Z] log-variances.
    key: PRNG key of eps ~ N(0, I).
  Returns:
    [B, Z] samples.
  """
  eps = jax.random.normal(key, mu.shape, mu.dtype)
  return mu + bounded_exp(0.5 * logvar) * eps


def _check_size(image_size: int) -> None:
  if image_size not in (32, 64):
    raise ConfigError(f"model.image_size={image_size} is not supported; use 64 (the paper) "
                     "or 32 (small variants).")


def _check_inputs(x: Optional[Array], y: Optional[Array], image_size: int,
                  y_dim: int) -> None:
  """Trace-time shape checks, so a wrong input fails with a plain message, not deep in XLA."""
  if x is not None and tuple(x.shape[1:]) != (image_size, image_size, 3):
    raise InputError(f"images have shape {tuple(x.shape)}; this model expects "
                     f"[batch, {image_size}, {image_size}, 3] (NHWC, values in [-1, 1]).")
  if y is not None and (y.ndim != 2 or y.shape[-1] != y_dim):
    raise InputError(f"attributes have shape {tuple(y.shape)}; this model expects "
                     f"[batch, {y_dim}] (y_dim={y_dim}).")


# ----------------------------------------------------------------------------------------------
# Building blocks.

class ImageTrunk(nn.Module):
  """The image encoder trunk (spec 2.1 "big" and 2.4 background version).

  conv5 -> c0, ReLU, pool | conv5 -> c1, BN, ReLU, pool | conv3 -> c2, BN, ReLU, pool |
  conv3 s2 -> c3, BN, ReLU | conv (S/16)x(S/16) valid -> top, ReLU | Linear top, ReLU, Dropout.
  """
  channels: Sequence[int]
  top: int
  dtype: Dtype = jnp.float32
  conv_weight_grad: str = "xla"

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    c0, c1, c2, c3 = self.channels
    d = self.dtype
    cv = functools.partial(conv, dtype=d, conv_weight_grad=self.conv_weight_grad)
    x = max_pool(nn.relu(cv(x, c0, 5)))
    x = max_pool(nn.relu(batch_norm(cv(x, c1, 5), train, d)))
    x = max_pool(nn.relu(batch_norm(cv(x, c2, 3), train, d)))
    x = nn.relu(batch_norm(cv(x, c3, 3, stride=2, padding=1), train, d))
    # 4x4 at 64x64 input (2x2 at 32x32): a valid conv over the whole map is a dense layer.
    x = nn.relu(cv(x, self.top, x.shape[1], padding=0))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(dense(x, self.top, self.dtype))
    return nn.Dropout(0.5, deterministic=not train)(x)


class GaussianHead(nn.Module):
  """`LinearMix2` (spec 2.2): mu from [h_x; h_y], log-variance from h_x alone.

  W_mu, b_mu ~ N(0, 1/fan_in) (variance 1/fan_in); W_sigma = b_sigma = 0, so the initial
  posterior has unit variance. Without `h_y` (the VAE) the mean sees the image alone.
  """
  z_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h_x: Array, h_y: Optional[Array]) -> tuple[Array, Array]:
    h = h_x if h_y is None else jnp.concatenate([h_x, h_y], axis=-1)
    std = 1.0 / math.sqrt(h.shape[-1])
    mu = nn.Dense(self.z_dim, kernel_init=_normal(std), bias_init=_normal(std),
                  dtype=self.dtype, name="mu")(h)
    logvar = nn.Dense(self.z_dim, kernel_init=_zeros, bias_init=_zeros, dtype=self.dtype,
                      name="logvar")(h_x)
    return mu, logvar


class ImageEncoder(nn.Module):
  """q(z | x, y): the CVAE encoder and the disCVAE foreground encoder (spec 2.1-2.2).

  With `conditional=False` it is the VAE encoder q(z | x).
  """
  z_dim: int
  width: float = 1.0
  conditional: bool = True
  dtype: Dtype = jnp.float32
  conv_weight_grad: str = "xla"

  @nn.compact
  def __call__(self, x: Array, y: Optional[Array], train: bool) -> tuple[Array, Array]:
    chans = [scaled(c, self.width) for c in (64, 128, 256, 256)]
    h_x = ImageTrunk(chans, scaled(1024, self.width), self.dtype, self.conv_weight_grad,
                     name="trunk")(x, train)
    h_y = None
    if self.conditional:
      h_y = nn.relu(dense(y, self.z_dim, self.dtype, name="y_embed"))
    return GaussianHead(self.z_dim, self.dtype, name="head")(h_x, h_y)


class LinearMix(nn.Module):
  """The decoder's first layer on [z; h_y] (LinearMix.lua), followed by ReLU.

  W ~ U[0, 1/sqrt(fan_in)) (non-negative: the reference uses `rand` uncentred) and
  b ~ N(0, 1/fan_in).
  """
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: Array) -> Array:
    fan_in = h.shape[-1]
    return nn.relu(nn.Dense(self.features, kernel_init=_uniform(0.0, 1.0 / math.sqrt(fan_in)),
                            bias_init=_normal(1.0 / math.sqrt(fan_in)), dtype=self.dtype)(h))


class ImageDecoder(nn.Module):
  """p(x | y, z): the CVAE decoder and the disCVAE foreground decoder (spec 2.3).

  Returns two 3-channel maps: the tanh image head, and the linear second head: the
  log-variance for the CVAE/VAE, the gate's logits for disCVAE (the model applies the sigmoid,
  and the gate's loss reads the logits; see `objectives.binary_cross_entropy_with_logits`).
  """
  image_size: int
  width: float = 1.0
  conditional: bool = True
  dtype: Dtype = jnp.float32
  upsample_mode: str = "polyphase"
  conv_weight_grad: str = "xla"

  @nn.compact
  def __call__(self, z: Array, y: Optional[Array], train: bool) -> tuple[Array, Array]:
    w, d = self.width, self.dtype
    cv = functools.partial(conv, dtype=d, upsample_mode=self.upsample_mode,
                           conv_weight_grad=self.conv_weight_grad)
    h = z
    if self.conditional:
      h_y = nn.relu(dense(y, 2 * z.shape[-1], d, name="y_embed"))
      h = jnp.concatenate([z, h_y], axis=-1)
    h = LinearMix(scaled(256, w), d, name="mix")(h)
    s0, c0 = self.image_size // 8, scaled(256, w)
    h = nn.relu(dense(h, c0 * s0 * s0, d)).reshape(-1, s0, s0, c0)
    h = nn.relu(batch_norm(cv(h, c0, 3), train, d))
    for c in (256, 128, 64):
      h = nn.relu(batch_norm(cv(h, scaled(c, w), 5, upsample_first=True), train, d))
    return jnp.tanh(cv(h, 3, 5)), cv(h, 3, 5)


class BackgroundTrunk(nn.Module):
  """disCVAE background encoder, image part (spec 2.4 rows 1-6)."""
  width: float = 1.0
  dtype: Dtype = jnp.float32
  conv_weight_grad: str = "xla"

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    return ImageTrunk([scaled(64, self.width)] * 4, scaled(256, self.width), self.dtype,
                      self.conv_weight_grad, name="trunk")(x, train)


class BackgroundHead(nn.Module):
  """disCVAE background encoder head (spec 2.4 rows 7-8): [h_x; y; zF] -> (muB, logvarB).

  `LinearGaussian` is two independent Linear layers with the Torch default init (its
  sigma layer is not zeroed in the reference).
  """
  zb_dim: int
  width: float = 1.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h_x: Array, y: Array, z_fg: Array) -> tuple[Array, Array]:
    h = jnp.concatenate([h_x, y, z_fg], axis=-1)
    h = nn.relu(dense(h, scaled(256, self.width), self.dtype))
    return (dense(h, self.zb_dim, self.dtype, name="mu"),
            dense(h, self.zb_dim, self.dtype, name="logvar"))


class BackgroundDecoder(nn.Module):
  """disCVAE background decoder p(xB | zB), no attributes (spec 2.5)."""
  image_size: int
  width: float = 1.0
  dtype: Dtype = jnp.float32
  upsample_mode: str = "polyphase"
  conv_weight_grad: str = "xla"

  @nn.compact
  def __call__(self, z: Array, train: bool) -> Array:
    w, d = self.width, self.dtype
    cv = functools.partial(conv, dtype=d, upsample_mode=self.upsample_mode,
                           conv_weight_grad=self.conv_weight_grad)
    s0, c0 = self.image_size // 32, scaled(256, w)
    h = nn.relu(dense(z, c0 * s0 * s0, d).reshape(-1, s0, s0, c0))
    # (upsample first?, channels, kernel) for steps a-g of spec 2.5.
    plan = ((True, 128, 3), (True, 128, 3), (True, 64, 3), (False, 64, 3), (True, 64, 3),
            (False, 64, 3), (True, 32, 5))
    for up, c, k in plan:
      h = nn.relu(batch_norm(cv(h, scaled(c, w), k, upsample_first=up), train, d))
    return jnp.tanh(cv(h, 3, 5))


# ----------------------------------------------------------------------------------------------
# Models.

class CVAE(nn.Module):
  """The conditional VAE of the paper (and, with `conditional=False`, the VAE baseline).

  Attributes:
    y_dim: attribute vector length (ignored by the VAE, but still checked).
    z_dim: latent size (LFW: 256).
    image_size: 64 (paper) or 32.
    width: multiplier on every hidden width (1.0 = the reference).
    conditional: False gives the VAE: no attribute streams in encoder or decoder.
    dtype: compute dtype (parameters stay float32).
    upsample_mode: "polyphase" (default) or "direct": how the decoder's upsample-then-5x5
      layers are computed; the same function and parameters either way (`UpsampleConv`).
    conv_weight_grad: "xla" (default), "taps" or "auto": how the convolutions' kernel
      gradients are computed (`conv`); the same function and parameters either way.
  """
  y_dim: int
  z_dim: int = 256
  image_size: int = 64
  width: float = 1.0
  conditional: bool = True
  dtype: Dtype = jnp.float32
  upsample_mode: str = "polyphase"
  conv_weight_grad: str = "xla"

  # What callers ask of a model (docs/design.md): they never test its name.
  needs_masks = False  # Training and encoding need no foreground masks.
  image_layers = ()  # No separate layers beside the image ("mean").
  energies = ("gaussian", "smooth_l1", "l2")  # Posterior-inference energies it supports.
  default_energy = "gaussian"  # Its own likelihood (the learned per-pixel variance).

  @property
  def uses_attributes(self) -> bool:
    """Whether y enters the model (False for the VAE)."""
    return self.conditional

  @property
  def latent_dims(self) -> dict[str, int]:
    """The latents' names and sizes: {"z": z_dim}."""
    return {"z": self.z_dim}

  def loss_terms(self, outputs: dict, x: Array, mask: Optional[Array]) -> dict[str, Array]:
    """Per-example terms of this model's training loss ("loss" is minimised).

    Args:
      outputs: `__call__`'s outputs.
      x: [B, S, S, 3] targets in [-1, 1].
      mask: unused (the (C)VAE needs no masks).
    Returns:
      `objectives.cvae_terms`.
    """
    del mask
    return objectives.cvae_terms(outputs, x)

  def encode_latents(self, x: Array, y: Optional[Array], mask: Optional[Array] = None,
                     train: bool = False) -> dict[str, tuple[Array, Array]]:
    """The posterior's parameters per latent.

    Args:
      x: [B, S, S, 3] images in [-1, 1]; y: [B, y_dim] (ignored by the VAE); mask: unused.
      train: BatchNorm / dropout mode.
    Returns:
      {"z": (mu, logvar)}, float32 [B, z_dim] each.
    """
    del mask
    q = self.encode(x, y, train)
    return {"z": (q["mu"], q["logvar"])}

  def decode_latents(self, latents: dict, y: Optional[Array],
                     train: bool = False) -> dict[str, Array]:
    """The generator on named latents: the one decoding path of every caller.

    Args:
      latents: {"z": [B, z_dim]}.
      y: [B, y_dim] (ignored by the VAE).
      train: BatchNorm mode.
    Returns:
      "mean" (the image, [-1, 1]) and "logvar", float32 [B, S, S, 3].
    """
    return self.decode(latents["z"], y, train)

  def setup(self):
    _check_size(self.image_size)
    self.encoder = ImageEncoder(self.z_dim, self.width, self.conditional, self.dtype,
                                self.conv_weight_grad)
    self.decoder = ImageDecoder(self.image_size, self.width, self.conditional, self.dtype,
                                self.upsample_mode, self.conv_weight_grad)

  def _y(self, y: Optional[Array]) -> Optional[Array]:
    return y if self.conditional else None

  def encode(self, x: Array, y: Optional[Array], train: bool = False) -> dict[str, Array]:
    """q(z | x, y).

    Args:
      x: [B, S, S, 3] images in [-1, 1].
      y: [B, y_dim] attributes (ignored by the VAE).
      train: BatchNorm in train mode.
    Returns:
      {"mu", "logvar"}: float32 [B, z_dim].
    """
    _check_inputs(x, y if self.conditional else None, self.image_size, self.y_dim)
    mu, logvar = self.encoder(x, self._y(y), train)
    return {"mu": mu.astype(jnp.float32), "logvar": logvar.astype(jnp.float32)}

  def decode(self, z: Array, y: Optional[Array], train: bool = False) -> dict[str, Array]:
    """p(x | y, z).

    Args:
      z: [B, z_dim] latents.
      y: [B, y_dim] attributes (ignored by the VAE).
      train: BatchNorm in train mode.
    Returns:
      {"mean", "logvar"}: float32 [B, S, S, 3]; the mean lies in [-1, 1].
    """
    _check_inputs(None, y if self.conditional else None, self.image_size, self.y_dim)
    mean, logvar = self.decoder(z, self._y(y), train)
    return {"mean": mean.astype(jnp.float32), "logvar": logvar.astype(jnp.float32)}

  def __call__(self, x: Array, y: Optional[Array], mask: Optional[Array] = None,
               train: bool = False) -> dict[str, Array]:
    """Encode, sample z, decode. `mask` is accepted for a uniform signature and unused."""
    del mask
    q = self.encode(x, y, train)
    z = reparametrize(q["mu"], q["logvar"], self.make_rng("reparam"))
    p = self.decode(z, y, train)
    return {"z": z, "mu": q["mu"], "logvar": q["logvar"], "mean": p["mean"],
            "x_logvar": p["logvar"]}


class DisCVAE(nn.Module):
  """The layered disCVAE (spec 1.3): foreground and gate from (y, zF), background from zB.

  Composition as in the reference code, in [-1, 1]: x = h_fg + g * h_bg.

  Attributes:
    y_dim: attribute vector length.
    zf_dim, zb_dim: foreground / background latent sizes (LFW 192 / 64, CUB 128 / 128).
    image_size, width, dtype, upsample_mode, conv_weight_grad: as for `CVAE`.
    block_kl_bg_grad_to_fg: the reference back-propagates the background KL separately,
      so d KL_B / d zF never reaches the foreground encoder; True reproduces that.
    gate_loss_weight: alpha, the weight of the gate's BCE in the loss (0.3 in the paper).
  """
  y_dim: int
  zf_dim: int = 192
  zb_dim: int = 64
  image_size: int = 64
  width: float = 1.0
  block_kl_bg_grad_to_fg: bool = True
  gate_loss_weight: float = 0.3
  dtype: Dtype = jnp.float32
  upsample_mode: str = "polyphase"
  conv_weight_grad: str = "xla"

  needs_masks = True  # Foreground masks: the gate's target and the foreground encoder's input.
  uses_attributes = True
  image_layers = ("foreground", "gate", "background")  # Shown beside the composite.
  energies = ("smooth_l1", "l2")  # No variance head, so no "gaussian".
  default_energy = "smooth_l1"  # Its training reconstruction loss.

  @property
  def latent_dims(self) -> dict[str, int]:
    """The latents' names and sizes: {"z_fg": zf_dim, "z_bg": zb_dim}."""
    return {"z_fg": self.zf_dim, "z_bg": self.zb_dim}

  def loss_terms(self, outputs: dict, x: Array, mask: Optional[Array]) -> dict[str, Array]:
    """Per-example terms of the disCVAE loss ("loss" is minimised).

    Args:
      outputs: `__call__`'s outputs.
      x: [B, S, S, 3] targets in [-1, 1].
      mask: [B, S, S, 1] foreground masks in [0, 1].
    Returns:
      `objectives.discvae_terms` with this model's `gate_loss_weight`.
    """
    return objectives.discvae_terms(outputs, x, mask, self.gate_loss_weight)

  def encode_latents(self, x: Array, y: Array, mask: Optional[Array] = None,
                     train: bool = False) -> dict[str, tuple[Array, Array]]:
    """The posterior's parameters per latent.

    Without a mask the model estimates the foreground itself: it encodes once with the whole
    image as foreground, decodes the posterior means, and takes 1 - gate (averaged over the
    channels) as the mask of a second pass.

    Args:
      x: [B, S, S, 3] images in [-1, 1]; y: [B, y_dim]; mask: [B, S, S, 1] or None.
      train: BatchNorm / dropout mode.
    Returns:
      {"z_fg": (mu, logvar), "z_bg": (mu, logvar)}, float32.
    """
    if mask is None:
      q = self.encode(x, y, jnp.ones(x.shape[:3] + (1,), x.dtype), train)
      out = self.decode(q["mu_fg"], q["mu_bg"], y, train)
      mask = 1.0 - out["gate"].mean(-1, keepdims=True)
    q = self.encode(x, y, mask, train)
    return {"z_fg": (q["mu_fg"], q["logvar_fg"]), "z_bg": (q["mu_bg"], q["logvar_bg"])}

  def decode_latents(self, latents: dict, y: Array, train: bool = False) -> dict[str, Array]:
    """The generator on named latents: the one decoding path of every caller.

    Args:
      latents: {"z_fg": [B, zf_dim], "z_bg": [B, zb_dim]}.
      y: [B, y_dim].
      train: BatchNorm mode.
    Returns:
      `decode`'s outputs ("mean" is the composite image).
    """
    return self.decode(latents["z_fg"], latents["z_bg"], y, train)

  def setup(self):
    _check_size(self.image_size)
    cwg = self.conv_weight_grad
    self.encoder_fg = ImageEncoder(self.zf_dim, self.width, True, self.dtype, cwg)
    self.encoder_bg_trunk = BackgroundTrunk(self.width, self.dtype, cwg)
    self.encoder_bg_head = BackgroundHead(self.zb_dim, self.width, self.dtype)
    self.decoder_fg = ImageDecoder(self.image_size, self.width, True, self.dtype,
                                   self.upsample_mode, cwg)
    self.decoder_bg = BackgroundDecoder(self.image_size, self.width, self.dtype,
                                        self.upsample_mode, cwg)

  def decode(self, z_fg: Array, z_bg: Array, y: Array,
             train: bool = False) -> dict[str, Array]:
    """The generator: foreground and gate from (y, zF), background from zB, composited.

    Args:
      z_fg: [B, zf_dim] foreground latents.
      z_bg: [B, zb_dim] background latents.
      y: [B, y_dim] attributes.
      train: BatchNorm in train mode.
    Returns:
      float32 [B, S, S, 3] each: "foreground" and "background" in [-1, 1], "gate" in
      [0, 1] (1 = the background shows through) and its pre-sigmoid "gate_logits",
      "mean" = foreground + gate * background.
    """
    _check_inputs(None, y, self.image_size, self.y_dim)
    fg, logits = self.decoder_fg(z_fg, y, train)
    gate = nn.sigmoid(logits)
    bg = self.decoder_bg(z_bg, train)
    fg, gate, bg, logits = (a.astype(jnp.float32) for a in (fg, gate, bg, logits))
    return {"foreground": fg, "gate": gate, "gate_logits": logits, "background": bg,
            "mean": fg + gate * bg}

  def _encode_fg(self, x: Array, y: Array, mask: Array,
                 train: bool) -> tuple[Array, Array, Array]:
    _check_inputs(x, y, self.image_size, self.y_dim)
    if mask is None or tuple(mask.shape) != tuple(x.shape[:3]) + (1,):
      raise InputError("disCVAE needs a foreground mask of shape [batch, S, S, 1] in [0, 1]; "
                       f"got {None if mask is None else tuple(mask.shape)}.")
    x_fg = (x + 1.0) * mask - 1.0  # (x01 * m) * 2 - 1, as the reference builds x_fg.
    mu, logvar = self.encoder_fg(x_fg, y, train)
    return x_fg, mu.astype(jnp.float32), logvar.astype(jnp.float32)

  def _encode_bg(self, h_bg: Array, y: Array, z_fg: Array) -> tuple[Array, Array]:
    mu, logvar = self.encoder_bg_head(h_bg, y, z_fg)
    return mu.astype(jnp.float32), logvar.astype(jnp.float32)

  def encode(self, x: Array, y: Array, mask: Array, train: bool = False,
             z_fg: Optional[Array] = None) -> dict[str, Array]:
    """q(zF | x_fg, y) and q(zB | x, y, zF).

    Args:
      x: images [B,S,S,3] in [-1,1]; y: [B,y_dim]; mask: foreground mask [B,S,S,1] in [0,1].
      train: BatchNorm / dropout mode.
      z_fg: the zF to condition the background encoder on; by default the foreground
        posterior mean.
    Returns:
      mu_fg, logvar_fg, mu_bg, logvar_bg and x_fg (the masked image, background = -1).
    """
    x_fg, mu_f, lv_f = self._encode_fg(x, y, mask, train)
    mu_b, lv_b = self._encode_bg(self.encoder_bg_trunk(x, train), y,
                                 mu_f if z_fg is None else z_fg)
    return {"mu_fg": mu_f, "logvar_fg": lv_f, "mu_bg": mu_b, "logvar_bg": lv_b, "x_fg": x_fg}

  def __call__(self, x: Array, y: Array, mask: Array,
               train: bool = False) -> dict[str, Array]:
    """Encode (zF from the masked image, then zB given the sampled zF), sample, decode."""
    x_fg, mu_f, lv_f = self._encode_fg(x, y, mask, train)
    z_fg = reparametrize(mu_f, lv_f, self.make_rng("reparam"))
    h_bg = self.encoder_bg_trunk(x, train)
    mu_b, lv_b = self._encode_bg(h_bg, y, z_fg)
    z_bg = reparametrize(mu_b, lv_b, self.make_rng("reparam"))
    if self.block_kl_bg_grad_to_fg:
      # Same head on a zF with no gradient: KL_B computed from this one reaches the background
      # encoder's parameters but not the foreground encoder (spec 1.3 "gradient subtlety").
      mu_b, lv_b = self._encode_bg(h_bg, y, jax.lax.stop_gradient(z_fg))
    out = self.decode(z_fg, z_bg, y, train)
    out.update({"x_fg": x_fg, "z_fg": z_fg, "z_bg": z_bg, "mu_fg": mu_f, "logvar_fg": lv_f,
                "mu_bg": mu_b, "logvar_bg": lv_b})
    return out


def create_model(model_config: Any) -> nn.Module:
  """Builds the model named by `model_config.name` ("vae", "cvae" or "discvae").

  Args:
    model_config: the `config.model` ConfigDict (name, y_dim, z_dim, zf_dim, zb_dim,
      image_size, width, dtype, upsample_mode, conv_weight_grad, block_kl_bg_grad_to_fg).
  Returns:
    An unbound Linen module that answers for itself: `latent_dims`, `uses_attributes`,
    `needs_masks`, `image_layers`, `energies`, `default_energy`, `loss_terms`,
    `encode_latents` and `decode_latents` (callers never test the model's name).
  """
  name = model_config.name
  # "auto": bf16 compute on GPU / TPU, f32 on CPU (perf.compute_dtype); params stay f32.
  dtype = perf.compute_dtype(model_config.get("dtype", "float32"))
  # "auto": the per-tap weight gradient on CPU, XLA's elsewhere (perf.conv_weight_grad).
  conv_weight_grad = perf.conv_weight_grad(model_config.get("conv_weight_grad", "xla"))
  common = dict(y_dim=model_config.y_dim, image_size=model_config.image_size,
                width=model_config.width, dtype=dtype,
                upsample_mode=model_config.get("upsample_mode", "polyphase"),
                conv_weight_grad=conv_weight_grad)
  if model_config.get("upsample_mode", "polyphase") not in UPSAMPLE_MODES:
    raise ConfigError(f"model.upsample_mode={model_config.upsample_mode!r} is not one of "
                      f"{', '.join(UPSAMPLE_MODES)}.")
  if name in ("vae", "cvae"):
    return CVAE(z_dim=model_config.z_dim, conditional=(name == "cvae"), **common)
  if name == "discvae":
    return DisCVAE(zf_dim=model_config.zf_dim, zb_dim=model_config.zb_dim,
                   block_kl_bg_grad_to_fg=model_config.block_kl_bg_grad_to_fg,
                   gate_loss_weight=model_config.gate_loss_weight, **common)
  raise ConfigError(f"unknown model.name={name!r}; choose one of {', '.join(MODEL_NAMES)}.")


def dummy_inputs(model_config: Any, batch: int = 1) -> tuple[Array, Array, Array]:
  """Zero inputs (x, y, mask) of the right shapes, for `init` and `jax.eval_shape`.

  Args:
    model_config: `config.model`.
    batch: the batch size B.
  Returns:
    x [B, S, S, 3] zeros, y [B, y_dim] zeros, mask [B, S, S, 1] ones.
  """
  s = model_config.image_size
  return (jnp.zeros((batch, s, s, 3), jnp.float32),
          jnp.zeros((batch, model_config.y_dim), jnp.float32),
          jnp.ones((batch, s, s, 1), jnp.float32))


def _init_fn(model: nn.Module, model_config: Any) -> Callable:
  x, y, m = dummy_inputs(model_config)

  def init(key):
    k_params, k_reparam, k_drop = jax.random.split(key, 3)
    return model.init({"params": k_params, "reparam": k_reparam, "dropout": k_drop}, x, y, m,
                      train=False)
  return init


def abstract_variables(model: nn.Module, model_config: Any) -> dict:
  """Shapes and dtypes of `model`'s variables (`jax.eval_shape`: nothing is computed).

  Args:
    model: from `create_model`.
    model_config: `config.model`.
  Returns:
    {"params", "batch_stats"} trees of `jax.ShapeDtypeStruct`.
  """
  return jax.eval_shape(_init_fn(model, model_config), jax.random.key(0))


def init_variables(model: nn.Module, model_config: Any, key: Array) -> dict:
  """Initial variables {'params', 'batch_stats'} of `model`, from `key`.

  Args:
    model: from `create_model`.
    model_config: `config.model`.
    key: PRNG key.
  Returns:
    {"params", "batch_stats"} trees of arrays.
  """
  init = _init_fn(model, model_config)

  # Jitted (op-by-op initialisation compiles every primitive separately), and on CPU without
  # LLVM optimisation, since it runs once.
  options = CHEAP_COMPILE if jax.default_backend() == "cpu" else None
  return jax.jit(init).lower(key).compile(compiler_options=options)(key)


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs).

  Args:
    params: a pytree whose leaves have `.shape`.
  Returns:
    The total element count.
  """
  return int(sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
