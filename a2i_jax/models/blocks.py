"""The encoder and decoder blocks the CVAE, the VAE and the disCVAE's foreground share.

The image trunk, the Gaussian posterior head (`LinearMix2`), the image encoder q(z | x, y), the
decoder's first layer (`LinearMix`) and the image decoder p(x | y, z), as in the reference's
`arch_condVAE.lua` / `arch_disCVAE.lua` (docs/reference.md §2.1-2.3).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from a2i_jax.models.initializers import normal, uniform, zeros
from a2i_jax.models.layers import (Dense, conv, conv_bn_relu, decoder_tail, dense, max_pool,
                                   raw_input_dense, scaled, window_conv)

Array = jax.Array
Dtype = Any


class ImageTrunk(nn.Module):
  """The image encoder trunk (docs/reference.md §2.1 "big"; §2.4 the background one).

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
    cbr = functools.partial(conv_bn_relu, train=train, dtype=d,
                            conv_weight_grad=self.conv_weight_grad)
    x = max_pool(nn.relu(cv(x, c0, 5)))
    x = max_pool(cbr(x, c1, 5))
    x = max_pool(cbr(x, c2, 3))
    x = cbr(x, c3, 3, stride=2, padding=1)
    # 4x4 at 64x64 input (2x2 at 32x32): a valid conv over the whole map is a dense layer,
    # and computed as one (the convolution's parameters; `window_conv`).
    x = nn.relu(window_conv(x, self.top, d))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(dense(x, self.top, self.dtype))
    return nn.Dropout(0.5, deterministic=not train)(x)


class GaussianHead(nn.Module):
  """`LinearMix2` (docs/reference.md §2.2): mu from [h_x; h_y], log-variance from h_x alone.

  W_mu, b_mu ~ N(0, 1/fan_in) (variance 1/fan_in); W_sigma = b_sigma = 0, so the initial
  posterior has unit variance. Without `h_y` (the VAE) the mean sees the image alone.
  """
  z_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h_x: Array, h_y: Optional[Array]) -> tuple[Array, Array]:
    h = h_x if h_y is None else jnp.concatenate([h_x, h_y], axis=-1)
    std = 1.0 / math.sqrt(h.shape[-1])
    mu = Dense(self.z_dim, kernel_init=normal(std), bias_init=normal(std), dtype=self.dtype,
               name="mu")(h)
    logvar = Dense(self.z_dim, kernel_init=zeros, bias_init=zeros, dtype=self.dtype,
                   name="logvar")(h_x)
    return mu, logvar


class ImageEncoder(nn.Module):
  """q(z | x, y): the CVAE encoder and the disCVAE foreground encoder (docs/reference.md
  §2.1-2.2).

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
      h_y = raw_input_dense(y, self.z_dim, self.dtype, name="y_embed")  # y in float32.
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
    return nn.relu(Dense(self.features, kernel_init=uniform(0.0, 1.0 / math.sqrt(fan_in)),
                         bias_init=normal(1.0 / math.sqrt(fan_in)), dtype=self.dtype)(h))


class ImageDecoder(nn.Module):
  """p(x | y, z): the CVAE decoder and the disCVAE foreground decoder (docs/reference.md §2.3).

  Returns two float32 3-channel maps: the tanh image head, and the linear second head: the
  log-variance for the CVAE/VAE, the gate's logits for disCVAE (the model applies the sigmoid,
  and the gate's loss reads the logits; see `objectives.binary_cross_entropy_with_logits`).
  """
  image_size: int
  width: float = 1.0
  conditional: bool = True
  dtype: Dtype = jnp.float32
  upsample_mode: str = "polyphase"
  conv_weight_grad: str = "xla"
  tail: str = "full"  # The last layer and heads: "full" or "phase" (`decoder_tail`).

  @nn.compact
  def __call__(self, z: Array, y: Optional[Array], train: bool) -> tuple[Array, Array]:
    w, d = self.width, self.dtype
    cbr = functools.partial(conv_bn_relu, train=train, dtype=d,
                            upsample_mode=self.upsample_mode,
                            conv_weight_grad=self.conv_weight_grad)
    h = z
    if self.conditional:
      h_y = raw_input_dense(y, 2 * z.shape[-1], d, name="y_embed")  # y in float32.
      h = jnp.concatenate([z, h_y], axis=-1)
    h = LinearMix(scaled(256, w), d, name="mix")(h)
    s0, c0 = self.image_size // 8, scaled(256, w)
    h = nn.relu(dense(h, c0 * s0 * s0, d)).reshape(-1, s0, s0, c0)
    h = cbr(h, c0, 3)
    for c in (256, 128):
      h = cbr(h, scaled(c, w), 5, upsample_first=True)
    image, second = decoder_tail(h, scaled(64, w), 5, (3, 3), 5, train=train, dtype=d,
                                 upsample_mode=self.upsample_mode,
                                 conv_weight_grad=self.conv_weight_grad, tail=self.tail)
    # tanh in float32 whatever the compute dtype: bf16's tanh is exactly +-1 from |image| =
    # 3.5 on (float32's from about 9), and a mean equal to a saturated target leaves the
    # Gaussian NLL no pull on that pixel's log-variance but down (`objectives.gaussian_nll`).
    # The head convolution before it computes in the compute dtype: under bf16 its outputs,
    # the log-variance too, carry bf16's precision.
    return jnp.tanh(image.astype(jnp.float32)), second.astype(jnp.float32)

