"""The layers the models are built of, as the reference's Torch layers compute them.

Dense and convolution layers with the Torch default initialisation, Torch's BatchNorm, 2x2 max
pooling, nearest x2 upsampling and the polyphase `UpsampleConv` (upsample-then-convolve computed
at the low resolution), the reparametrisation, and the models' trace-time input checks.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from a2i_jax import perf
from a2i_jax.errors import ConfigError, InputError
from a2i_jax.models import conv_grad, initializers
from a2i_jax.numerics import bounded_exp

Array = jax.Array
Dtype = Any
UPSAMPLE_MODES = ("polyphase", "direct", "transposed")
DECODER_TAILS = perf.DECODER_TAILS
# The fewest output channels the "full" decoder tail's head convolution computes (zero-padded
# up to it): XLA:CPU's input gradient of a 5x5 convolution to 3 channels ran 4x slower than to
# 4 (BENCHMARKS.md, "The decoders' output heads on CPU").
_MIN_HEAD_OUTPUTS = 4


class ParamsReadDirectly:
  """A mixin for Flax modules: a parameter that exists is read, not checked by tracing its
  initialiser again.

  Flax's `Module.param` compares an existing parameter's shape with that of its initialiser's
  output, and finds the latter by tracing the initialiser under `jax.eval_shape` (with a
  fresh key), for every parameter on every application of the model: 12-29 % of the time to
  trace the paper models' train step (BENCHMARKS.md, "Tracing the models").
  Here, where the initialiser takes its shape as its first argument (every layer in this
  package: nn.Dense's and nn.Conv's, Torch's, BatchNorm's), the parameter is read and its
  shape compared with that argument, raising Flax's own `ScopeParamShapeError`; otherwise,
  and whenever the parameter does not exist yet (`init`), Flax's `param` runs as before.
  """

  @nn.nowrap
  def param(self, name: str, init_fn: Callable[..., Any], *init_args: Any, unbox: bool = True,
            **init_kwargs: Any) -> Any:
    """`nn.Module.param`, reading an existing parameter directly (see the class).

    Args:
      name: the parameter's name.
      init_fn: its initialiser, `init_fn(key, shape, dtype)` here.
      *init_args: the initialiser's arguments after the key (the shape first).
      unbox: replace Flax's `AxisMetadata` boxes by their values.
      **init_kwargs: the initialiser's keyword arguments.
    Returns:
      The parameter's value.
    """
    shape = init_args[0] if init_args else None
    if (isinstance(shape, tuple) and self.scope is not None
        and self.has_variable("params", name)):
      self.scope.reserve(name, "params")  # Two parameters of one name still fail.
      value = self.get_variable("params", name)
      unboxed = flax.core.meta.unbox(value)
      if np.shape(unboxed) != tuple(shape):
        raise flax.errors.ScopeParamShapeError(name, self.scope.path_text, np.shape(unboxed),
                                               tuple(shape))
      return unboxed if unbox else value
    return super().param(name, init_fn, *init_args, unbox=unbox,  # type: ignore[misc]
                         **init_kwargs)


class Dense(ParamsReadDirectly, nn.Dense):
  """nn.Dense, its parameters read directly (`ParamsReadDirectly`); named Dense_<n> alike."""


class Conv(ParamsReadDirectly, nn.Conv):
  """nn.Conv, its parameters read directly (`ParamsReadDirectly`); named Conv_<n> alike.

  With `out_affine` = (m, t), per output channel, the layer computes m * conv(x) + t: its
  kernel is read as kernel * m and its bias as bias * m + t (a following BatchNorm in eval
  mode, folded in: `conv_bn_relu`). The stored parameters are unchanged.
  """
  out_affine: Optional[tuple[Array, Array]] = None

  @nn.nowrap
  def param(self, name: str, init_fn: Callable[..., Any], *init_args: Any, unbox: bool = True,
            **init_kwargs: Any) -> Any:
    """`ParamsReadDirectly.param`, with `out_affine` applied to the kernel and the bias.

    Args:
      name: the parameter's name.
      init_fn: its initialiser.
      *init_args: the initialiser's arguments after the key (the shape first).
      unbox: replace Flax's `AxisMetadata` boxes by their values.
      **init_kwargs: the initialiser's keyword arguments.
    Returns:
      The parameter's value; the kernel and bias as the folded map reads them.
    """
    value = super().param(name, init_fn, *init_args, unbox=unbox, **init_kwargs)
    if self.out_affine is None:
      return value
    m, t = self.out_affine
    if name == "kernel":
      return value * m
    if name == "bias":
      return value * m + t
    return value


def scaled(n: int, width: float) -> int:
  """A hidden size `n` of the reference scaled by the width multiplier (at least 1).

  Args:
    n: the reference's size.
    width: `config.model.width`.
  Returns:
    round(n * width), at least 1.
  """
  return max(1, int(round(n * width)))


def dense(x: Array, features: int, dtype: Dtype, name: Optional[str] = None,
          precision: Any = None) -> Array:
  """nn.Linear with the Torch default initialisation.

  Args:
    x: [B, D] inputs.
    features: output size F.
    dtype: computation dtype.
    name: the Flax submodule name (None for automatic).
    precision: the matrix product's `jax.lax.Precision` (None: the backend's default, which
      for float32 is bfloat16 passes on TPU and TF32 on recent GPUs).
  Returns:
    [B, F].
  """
  init = initializers.torch_default(x.shape[-1])
  return Dense(features, kernel_init=init, bias_init=init, dtype=dtype, name=name,
               precision=precision)(x)


def raw_input_dense(x: Array, features: int, dtype: Dtype,
                    name: Optional[str] = None) -> Array:
  """`dense` + ReLU for a layer whose input holds raw user numbers: computed in float32.

  The attribute vector y reaches the models as the data gives it (a year, 2000; a height,
  172.5). In bfloat16, 8 significant bits, the layer would round y itself first: from 1024
  to 2048 its step is 8, so 2000 and 2001 would be one input and nothing after could tell them
  apart. In float32 the layer's affine map sees y exactly (and can learn to take its offset
  out); only its output is rounded to the compute dtype, as every activation is. The
  parameters are those of `dense` (float32 whatever the compute dtype), so checkpoints and
  parameter counts are unchanged, and at float32 compute nothing changes.

  Args:
    x: [B, D] inputs (any real dtype; read as float32).
    features: output size F.
    dtype: the compute dtype, that of the output.
    name: the Flax submodule name (None for automatic).
  Returns:
    [B, F] relu(x W + b) in `dtype`.
  """
  # At float32's full precision: by default a float32 product is computed in bfloat16 passes
  # on TPU and in TF32 (10 bits) on recent GPUs, which would round y inside it (read-through).
  return nn.relu(dense(x.astype(jnp.float32), features, jnp.float32, name=name,
                       precision=jax.lax.Precision.HIGHEST)).astype(dtype)


def conv(x: Array, features: int, kernel: int, *, stride: int = 1,
         padding: Optional[int] = None, dtype: Dtype, upsample_first: bool = False,
         upsample_mode: str = "polyphase", conv_weight_grad: str = "xla",
         phase_layout: bool = False, out_affine: Optional[tuple[Array, Array]] = None,
         relu: bool = False) -> Array:
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
      "direct" (upsample, then convolve at 2H x 2W), "polyphase" (the same function, computed
      at H x W; see `UpsampleConv`) or "transposed" (the same function as one stride-2
      transposed convolution, `UpsampleConv`'s "transposed" form; a layer in the phase layout
      takes the centred polyphase form).
    conv_weight_grad: how the kernel's gradient is computed: "xla", "taps" (per-tap matrix
      products, faster on XLA:CPU; `conv_grad.taps_conv_general_dilated`) or "auto". The value
      and the parameters are the same either way.
    phase_layout: with an upsample computed in the centred polyphase form (`polyphase_form`),
      return the output in 2x2 phase blocks, [B, H, W, 2, 2, F] (`UpsampleConv`).
    out_affine: (m, t), [F] each: compute m * conv(x) + t, folded into the kernel and bias
      (`Conv`; a BatchNorm in eval mode, `conv_bn_relu`).
    relu: apply ReLU to the output (in `UpsampleConv` before its shuffle, so that it can
      fuse with the convolution).
  Returns:
    [B, H', W', F], H' = 2H when `upsample_first`.
  """
  pad = kernel // 2 if padding is None else padding
  conv_fn = conv_grad.conv_general_dilated_fn(conv_weight_grad)
  if upsample_first:
    if upsample_mode not in UPSAMPLE_MODES:
      raise ConfigError(f"model.upsample_mode={upsample_mode!r} is not one of "
                        f"{', '.join(UPSAMPLE_MODES)}.")
    # The phase layout is the centred form's; otherwise the form can depend on the size.
    mode = "polyphase" if phase_layout and upsample_mode == "transposed" else upsample_mode
    form = polyphase_form(kernel, mode, stride, pad, None if phase_layout else x.shape[1:3])
    if phase_layout and form != "centred":
      raise ValueError(f"conv: phase_layout needs the centred polyphase form; a {kernel}x"
                       f"{kernel} layer in {upsample_mode!r} mode has none.")
    if form:
      init = initializers.torch_default(kernel * kernel * x.shape[-1])
      return UpsampleConv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                          kernel_init=init, bias_init=init, dtype=dtype,
                          conv_general_dilated=conv_fn, phase_layout=phase_layout,
                          form=form, out_affine=out_affine, relu=relu)(x)
    x = upsample(x)
  init = initializers.torch_default(kernel * kernel * x.shape[-1])
  y = Conv(features, (kernel, kernel), strides=(stride, stride),
           padding=((pad, pad), (pad, pad)), kernel_init=init, bias_init=init, dtype=dtype,
           conv_general_dilated=conv_fn, out_affine=out_affine)(x)
  return nn.relu(y) if relu else y


# Whether `polyphase_form` may choose the "offset" form: "on", "off", or None for "auto"
# (`perf.offset_polyphase`: on on CPU). Set by benchmarks (bench.py --offset_polyphase,
# ab_train_step.py's polyphase_offset key) to time the layers either way.
POLYPHASE_OFFSET: Optional[str] = None


def polyphase_form(kernel: int, upsample_mode: str, stride: int = 1,
                   padding: Optional[int] = None,
                   size: Optional[tuple[int, int]] = None) -> Optional[str]:
  """How `conv` computes an upsample + k x k convolution: "centred", "offset", "transposed"
  (`upsample_mode` "transposed": every odd k) or None (direct).

  Both polyphase forms compute the same function at the input's size (`UpsampleConv`).
  "centred" convolves with (2T+1)^2 taps (T = ceil((k // 2) / 2)) and suits k = 5, 9, ...:
  9 / 25 of the direct form's multiply-adds for 5x5, whatever the size. "offset" convolves
  the input, zero-padded (one ring for 3x3), with n^2 taps (n = (k + 1) / 2) to (H+1) x (W+1)
  outputs, each holding pixels 2j - 1 and 2j of the full-resolution output, and drops the
  outer ring; it suits k = 3, 7, ... (k // 2 odd; 3x3: 4 (H+1)(W+1) x 4 multiply-adds against
  4 H W x 9, 0.56 of them at 8x8 inputs, 0.50 at 16x16). With `size` the form of fewest
  multiply-adds is taken, the offset one only where it needs under 0.6 of the direct form's
  and `perf.offset_polyphase()` allows it (CPU): on the 2-core AMD EPYC the two ran alike at
  4x4 (0.69) and the direct form was faster at 2x2 (BENCHMARKS.md, "3x3 upsampling layers at
  the low resolution").

  Args:
    kernel: the kernel side k.
    upsample_mode: `config.model.upsample_mode`.
    stride: the stride.
    padding: zero padding per side; None for k // 2.
    size: the input's (H, W); None: only "centred" can be chosen.
  Returns:
    "centred", "offset", "transposed" or None: one of the first two only in "polyphase" mode,
    "transposed" only in "transposed" mode, each for a "same" convolution at stride 1 with
    odd k.
  """
  pad = kernel // 2 if padding is None else padding
  if not (upsample_mode in ("polyphase", "transposed") and stride == 1 and pad == kernel // 2
          and kernel % 2 == 1 and kernel > 1):
    return None
  if upsample_mode == "transposed":
    return "transposed"
  centred_taps = _polyphase_taps(kernel).shape[1]
  centred = "centred" if centred_taps < kernel else None
  if size is None or not perf.offset_polyphase(POLYPHASE_OFFSET or "auto"):
    return centred
  h, w = size
  # Multiply-adds per input and output channel pair, 4 output phases each.
  macs = {"offset": (h + 1) * (w + 1) * _offset_taps(kernel).shape[1] ** 2}
  if centred:
    macs["centred"] = h * w * centred_taps ** 2
  best = min(macs, key=macs.get)
  return best if macs[best] < 0.6 * h * w * kernel ** 2 else centred


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


def _offset_taps(kernel: int) -> np.ndarray:
  """0/1 matrix M[q, t, d] of the "offset" polyphase form: tap d of a k-tap "same" filter
  applied after nearest x2 upsampling, for full-resolution pixel 2j - 1 + q, reads the input
  padded by P = ceil((k // 2 + 1) / 2) at offset j + t (low-resolution pixel j + t - P).

  Args:
    kernel: the (odd) kernel side k.
  Returns:
    float32 [2, n, k], n = (k // 2) // 2 + P + 1 taps.
  """
  r = kernel // 2
  first = (-1 - r) // 2  # -P: the lowest low-resolution offset read.
  m = np.zeros((2, r // 2 - first + 1, kernel), np.float32)
  for q in range(2):
    for d in range(kernel):
      m[q, (q - 1 + d - r) // 2 - first, d] = 1.0
  return m


class UpsampleConv(Conv):
  """Nearest x2 upsampling followed by a k x k "same" convolution, computed at the input's size.

  "centred" form (k = 5, 9, ...; `polyphase_form`): output pixel (2i + a, 2j + b) of
  conv(upsample(x), W) reads only a (2T+1) x (2T+1) window of x around (i, j), with phase
  (a, b)'s kernel made of sums of W's taps (`_polyphase_taps`). So the layer is one
  convolution of x with the four phase kernels stacked on the output axis (4F outputs,
  (2T+1)^2 taps), then a depth-to-space shuffle: the same function with the same parameters
  (`kernel` [k, k, C, F], `bias` [F], created in nn.Conv's order, so checkpoints and initial
  values are unchanged), at (2T+1)^2 / k^2 of the multiply-adds: 36 / 100 for the decoders'
  5x5 layers. "offset" form (k = 3, 7, ...): for odd k // 2 the two phases of a centred
  window read different sets of taps, but pixels 2j - 1 and 2j read the same n = (k + 1) / 2
  inputs; so x, zero-padded (one ring for 3x3), is convolved with the pairs' kernels
  (`_offset_taps`) to (H+1) x (W+1) blocks, shuffled, and the outer ring of the result
  dropped: 4 x 4 (H+1)(W+1) multiply-adds for 3x3 against 9 x 4 H W. "transposed" form (any
  odd k; `upsample_mode` "transposed"): one stride-2 transposed convolution of x (x dilated by
  2, `lhs_dilation`) with the (k+1) x (k+1) kernel of K's taps summed over a 2x2 box, which
  writes the full-resolution output directly: no shuffle, forward or backward. Libraries
  that skip the dilation's zeros (cuDNN's backward-data kernels, which XLA:GPU uses for it)
  do the centred form's multiply-adds; XLA:CPU's do not skip them. The class is named
  like nn.Conv's subclass so that Flax's automatic names (Conv_0, Conv_1, ...) stay those of
  the direct form; see `conv`.
  nn.Conv's `conv_general_dilated` field, if set, replaces `jax.lax.conv_general_dilated` for
  the low-resolution convolution (as in nn.Conv). With `phase_layout` (centred form only) the
  shuffle is left out: the output is [B, H, W, 2, 2, F], element [b, i, j, a, c, f] being
  pixel (2i + a, 2j + c) of the full-resolution output (`decoder_tail`'s "phase" form).
  """
  phase_layout: bool = False
  # "centred", "offset" or "transposed"; None: `polyphase_form`'s for the input.
  form: Optional[str] = None
  relu: bool = False  # ReLU on the output, applied (with the bias) before the shuffle.

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
    if k % 2 == 0:
      raise ValueError(f"UpsampleConv needs an odd kernel side, got {k}.")
    # The centred form computes any odd k (for 3x3 at no saving) and is the phase layout's;
    # the offset form where `polyphase_form` takes it (`conv` passes the form it chose).
    form = self.form or ("centred" if self.phase_layout else
                         polyphase_form(k, "polyphase", size=(h, w)) or "centred")
    if (form not in ("centred", "offset", "transposed")
        or (self.phase_layout and form != "centred")):
      raise ValueError(f"UpsampleConv: form={form!r} with phase_layout={self.phase_layout}; "
                       "the form is 'centred', 'offset' or 'transposed', and the phase layout "
                       "is the centred form's.")
    conv_fn = self.conv_general_dilated or jax.lax.conv_general_dilated
    if form == "transposed":
      # Output pixel p of conv(upsample(x), K) sums K[d] x[(p + d) // 2]: a stride-2
      # transposed convolution of x whose (k+1)-tap kernel is K convolved with a 2-tap box,
      # F[t] = K[t] + K[t - 1] per axis, over x dilated by 2 and padded by k // 2 + 1.
      kp = jnp.pad(kernel, ((1, 1), (1, 1), (0, 0), (0, 0)))
      taps = kp[1:, 1:] + kp[:-1, 1:] + kp[1:, :-1] + kp[:-1, :-1]  # [k + 1, k + 1, C, F]
      x, taps, bias = nn.dtypes.promote_dtype(inputs, taps, bias, dtype=self.dtype)
      edge = k // 2 + 1
      y = conv_fn(x, taps, (1, 1), ((edge, edge), (edge, edge)), lhs_dilation=(2, 2),
                  dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
      return nn.relu(y + bias) if self.relu else y + bias
    if form == "centred":
      taps = jnp.asarray(_polyphase_taps(k), kernel.dtype)
      half = (taps.shape[1] - 1) // 2
      pads, out_h, out_w = ((half, half), (half, half)), h, w
    else:
      taps = jnp.asarray(_offset_taps(k), kernel.dtype)
      left, right = -((-1 - k // 2) // 2), k // 2 // 2 + 1  # P, and j = H's last read.
      # Padded here rather than by the convolution: XLA:CPU ran the input gradient of the
      # 3x3 form faster so (BENCHMARKS.md, "3x3 upsampling layers at the low resolution").
      inputs = jnp.pad(inputs, ((0, 0), (left, right), (left, right), (0, 0)))
      pads, out_h, out_w = ((0, 0), (0, 0)), h + 1, w + 1
    n = taps.shape[1]
    # [t, s, C, a, b, F]: the phase kernels, summed in the parameters' dtype before any cast.
    phases = jnp.einsum("atd,bse,deio->tsiabo", taps, taps, kernel)
    phases = phases.reshape(n, n, c, 4 * self.features)
    x, phases, bias = nn.dtypes.promote_dtype(inputs, phases, bias, dtype=self.dtype)
    y = conv_fn(x, phases, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                precision=self.precision)
    if self.relu:  # Bias and ReLU on the convolution's own output: cuDNN fuses them into it.
      y = nn.relu(y + jnp.tile(bias, 4))
    if self.phase_layout:
      y = y.reshape(b, h, w, 2, 2, self.features)
      return y if self.relu else y + bias
    y = y.reshape(b, out_h, out_w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(b, 2 * out_h, 2 * out_w, self.features)
    if form == "offset":  # Pixels -1 and 2H (2W) of the blocks: outside the image.
      y = y[:, 1:-1, 1:-1]
    return y if self.relu else y + bias


UpsampleConv.__name__ = "Conv"  # Flax names submodules by class name: keep Conv_<n>.


class ConvParams(ParamsReadDirectly, nn.Module):
  """The parameters of a k x k `conv` layer alone (`kernel` [k, k, C, F], `bias` [F], with
  nn.Conv's names, order and Torch default initialisation), for layers computed another way
  (`decoder_tail`). Named like nn.Conv so that Flax's automatic names stay Conv_<n>."""
  features: int
  kernel_size: int
  in_features: int

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    k, c = self.kernel_size, self.in_features
    init = initializers.torch_default(k * k * c)
    kernel = self.param("kernel", init, (k, k, c, self.features), jnp.float32)
    return kernel, self.param("bias", init, (self.features,), jnp.float32)


ConvParams.__name__ = "Conv"


def window_conv(x: Array, features: int, dtype: Dtype) -> Array:
  """An unpadded convolution whose kernel covers the whole map (k = H = W, one output pixel),
  computed as the dense layer it is: one matrix product of the flattened map with the
  flattened kernel.

  The parameters are a k x k `conv` layer's (`ConvParams`: nn.Conv's names, shapes and
  initial values), so checkpoints are unchanged. XLA:CPU ran the encoders' top layer (4x4,
  256 -> 1,024, batch 32) as a convolution in 5.35 ms forward, 27.6 ms input gradient and
  11.2 ms weight gradient, and as a product in 3.44, 1.81 and 2.50 ms (BENCHMARKS.md, "Wide
  convolutions in blocks of outputs").

  Args:
    x: [B, k, k, C] inputs.
    features: output channels F.
    dtype: computation dtype.
  Returns:
    [B, 1, 1, F].
  """
  b, h, w, c = x.shape
  if h != w:
    raise ValueError(f"window_conv needs a square map, got {h}x{w}.")
  kernel, bias = ConvParams(features, h, c)()
  x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=dtype)
  y = x.reshape(b, h * w * c) @ kernel.reshape(h * w * c, features) + bias
  return y.reshape(b, 1, 1, features)


def _phase_block_taps(kernel: int) -> np.ndarray:
  """0/1 matrix M[p, u, a, d]: tap d of a k-tap "same" filter, for output phase p (pixel
  2i + p), reads input phase a of the 2x2 block at low-resolution offset u - T
  (T = ceil((k // 2) / 2)): 2i + p + d - k // 2 = 2 (i + u - T) + a.

  Args:
    kernel: the (odd) kernel side k.
  Returns:
    float32 [2, 2T + 1, 2, k].
  """
  r = kernel // 2
  half = (r + 1) // 2
  m = np.zeros((2, 2 * half + 1, 2, kernel), np.float32)
  for p in range(2):
    for d in range(kernel):
      v = p + d - r
      m[p, v // 2 + half, v % 2, d] = 1.0
  return m


def decoder_tail(x: Array, features: int, kernel: int, heads: tuple[int, ...], head_kernel: int,
                 *, train: bool, dtype: Dtype, upsample_mode: str = "polyphase",
                 conv_weight_grad: str = "xla", tail: str = "full") -> list[Array]:
  """A decoder's last upsampling layer and its output heads: h = ReLU(BN(conv(upsample(x))))
  with `features` channels and a `kernel` x `kernel` kernel, then one `head_kernel` convolution
  of h per entry of `heads` (its output channels), all "same" at stride 1.

  `tail` = "full" computes h as written (`conv`, `batch_norm`) and all heads as one "same"
  convolution of h whose kernel is the heads' kernels side by side, zero-padded to at least
  `_MIN_HEAD_OUTPUTS` outputs, then split: the function of a convolution per head, with the
  same parameters. On XLA:CPU one 6-output convolution (the CVAE's image and log-variance, the
  disCVAE's image and gate) ran its forward and input gradient in 0.70x the time of two
  3-output ones, and a background head padded from 3 to 4 outputs its input gradient in 0.23x
  (BENCHMARKS.md, "The decoders' output heads on CPU"). "phase" (with
  the polyphase upsample form and an odd `kernel` >= 5) computes the same function with the
  same parameters without ever laying h out at full resolution: h stays in 2x2 phase blocks
  at the input's size ([B, H, W, 2, 2, F]: `UpsampleConv(phase_layout=True)`; BatchNorm's
  per-channel statistics are the same over the blocks), and all heads together are one
  convolution over the blocks ((2T+1)^2 taps, 4F inputs, 4 x sum(heads) outputs, whose kernel is
  the heads' taps rearranged, `_phase_block_taps`), shuffled to full resolution only at the
  small output. That saves the shuffle of h (forward and backward) and replaces the heads'
  convolutions with few outputs (3), which GPUs run far below their rate, with one of 4 x
  sum(heads) outputs; it costs 4 (2T+1)^2 / k^2 the heads' multiply-adds (1.44 for 5x5).
  BENCHMARKS.md, "One NVIDIA H200: a profile".

  Args:
    x: [B, H, W, C] inputs.
    features: channels F of h.
    kernel: the upsampling layer's kernel side.
    heads: output channels of each head.
    head_kernel: the heads' kernel side.
    train: BatchNorm mode.
    dtype: computation dtype.
    upsample_mode, conv_weight_grad: as for `conv`.
    tail: "full" or "phase" (resolved from "auto" by `perf.decoder_tail`).
  Returns:
    One [B, 2H, 2W, heads[i]] array per head, before any output non-linearity.
  """
  if tail not in DECODER_TAILS[1:]:
    raise ConfigError(f"model.decoder_tail={tail!r} is not one of {', '.join(DECODER_TAILS)}.")
  b, h, w, _ = x.shape
  # The "transposed" mode's layers have a phase layout too: the centred form's (`conv`).
  centred_mode = "polyphase" if upsample_mode == "transposed" else upsample_mode
  phase = tail == "phase" and polyphase_form(kernel, centred_mode) == "centred"
  x = conv_bn_relu(x, features, kernel, train=train, dtype=dtype, upsample_first=True,
                   upsample_mode=upsample_mode, conv_weight_grad=conv_weight_grad,
                   phase_layout=phase)
  conv_fn = conv_grad.conv_general_dilated_fn(conv_weight_grad)
  params = [ConvParams(f, head_kernel, features)() for f in heads]
  head_w = jnp.concatenate([k for k, _ in params], axis=-1)  # [k, k, F, O]
  head_b = jnp.concatenate([bias for _, bias in params])
  n_out = head_w.shape[-1]
  if phase:  # One convolution over the 2x2 blocks, its kernel the heads' taps rearranged.
    x = x.reshape(b, h, w, 4 * features)
    m = jnp.asarray(_phase_block_taps(head_kernel))
    t = m.shape[1]
    kernel_w = jnp.einsum("puad,qvbe,defo->uvabfpqo", m, m, head_w).reshape(
        t, t, 4 * features, 4 * n_out)
    pad = t // 2
  else:  # One convolution at full resolution, its outputs zero-padded to _MIN_HEAD_OUTPUTS.
    kernel_w = jnp.pad(head_w, ((0, 0), (0, 0), (0, 0), (0, max(0, _MIN_HEAD_OUTPUTS - n_out))))
    pad = head_kernel // 2
  x, kernel_w, head_b = nn.dtypes.promote_dtype(x, kernel_w, head_b, dtype=dtype)
  y = conv_fn(x, kernel_w, (1, 1), ((pad, pad), (pad, pad)),
              dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if phase:  # The blocks to full resolution, at the few output channels.
    y = y.reshape(b, h, w, 2, 2, n_out).transpose(0, 1, 3, 2, 4, 5).reshape(
        b, 2 * h, 2 * w, n_out)
  y = y[..., :n_out] + head_b
  return list(jnp.split(y, np.cumsum(heads)[:-1], axis=-1))


class BatchNorm(ParamsReadDirectly, nn.Module):
  """Torch's (Spatial)BatchNormalization (docs/reference.md §2.8), over all axes but the last.

  Train mode normalises with the batch's biased variance, as Torch and `nn.BatchNorm` do, and
  updates the running variance with the UNBIASED one, sum / (n - 1), as Torch does (Flax's
  `nn.BatchNorm` uses the biased one). Statistics are float32 whatever the compute dtype, and
  global-batch ones under a jit over a device mesh (n counts the global batch). The variables
  are nn.BatchNorm's: params `scale`, `bias`; batch_stats `mean` (starts at 0), `var` (at 1),
  and the class name gives the same automatic names (BatchNorm_0, ...), so checkpoints written
  with nn.BatchNorm restore.

  Attributes:
    use_running_average: normalise with the running statistics (eval mode), not the batch's.
    momentum: running = momentum * running + (1 - momentum) * batch (Flax's convention: 0.9 is
      Torch's momentum 0.1).
    epsilon: added to the variance.
    dtype: the output's dtype.
    scale_init, bias_init: gamma ~ U[0, 1) and beta = 0 (Torch's reset()).
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  scale_init: Callable = initializers.uniform(0.0, 1.0)
  bias_init: Callable = initializers.zeros

  @nn.compact
  def __call__(self, x: Optional[Array] = None,
               features: Optional[int] = None) -> Array | tuple[Array, Array]:
    """Normalises x; or, with x None, gives the eval-mode map itself.

    Args:
      x: [..., C]; None (with `use_running_average` and `features`) for the map.
      features: C where x is None.
    Returns:
      The normalised x, the same shape, in `dtype`; for x None, (m, t), float32 [C] each:
      the layer computes m * x + t (`conv_bn_relu` folds them into a convolution).
    """
    if x is None and (not self.use_running_average or features is None):
      raise ValueError("BatchNorm's map alone is its eval mode's, for a given size.")
    shape = (features,) if x is None else (x.shape[-1],)
    # Variables in nn.BatchNorm's order (the params' random streams depend on it).
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, shape, jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, shape, jnp.float32)
    scale = self.param("scale", self.scale_init, shape, jnp.float32)
    bias = self.param("bias", self.bias_init, shape, jnp.float32)
    if x is None:
      m = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
      return m, bias - ra_mean.value * m
    axes = tuple(range(x.ndim - 1))
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      xf = x.astype(jnp.promote_types(self.dtype, jnp.float32))
      mean = xf.mean(axes)
      # E[x^2] - E[x]^2 in one pass, as nn.BatchNorm computes it; rounding can make it < 0.
      var = jnp.maximum(0.0, jnp.square(xf).mean(axes) - jnp.square(mean))
      if not self.is_initializing():
        n = math.prod(x.shape[a] for a in axes)
        # Torch's n / (n - 1); a single value per channel (where Torch divides by 0) keeps var.
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
    y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return jnp.asarray(y, self.dtype)


def batch_norm(x: Array, train: bool, dtype: Dtype) -> Array:
  """Torch (Spatial)BatchNormalization: eps 1e-5, momentum 0.1, gamma ~ U[0, 1) (`BatchNorm`).

  Args:
    x: [B, ..., C] inputs.
    train: batch statistics (and update the running ones) if True, running ones if False.
    dtype: computation dtype.
  Returns:
    Normalised x, the same shape.
  """
  return BatchNorm(use_running_average=not train, dtype=dtype)(x)


# Whether eval mode folds each BatchNorm into the convolution before it (`conv_bn_relu`): "on",
# "off", or None for "auto" (`perf.fold_batchnorm`). Set by benchmarks (ab_train_step.py's
# fold_batchnorm key) to time both forms.
FOLD_BATCHNORM: Optional[str] = None


def conv_bn_relu(x: Array, features: int, kernel: int, *, train: bool, dtype: Dtype,
                 **conv_args: Any) -> Array:
  """ReLU(BatchNorm(conv(x))), the models' pattern, with `conv`'s arguments.

  In eval mode (running statistics) the BatchNorm is a fixed map per channel, m * h + t,
  which (where `perf.fold_batchnorm` says so) is folded into the convolution: kernel * m,
  bias * m + t, then the ReLU, so that the convolution, its bias and the ReLU can run as one
  kernel (cuDNN's) and no pass over the output is left for the BatchNorm. The same function
  and the same variables (names, order, initial values); posterior inference, sampling and
  validation run in eval mode.

  Args:
    x: [B, H, W, C] inputs.
    features: output channels F.
    kernel: the kernel side.
    train: BatchNorm mode.
    dtype: computation dtype.
    **conv_args: `conv`'s other arguments.
  Returns:
    As `conv`, after BatchNorm and ReLU.
  """
  if train or not perf.fold_batchnorm(FOLD_BATCHNORM or "auto"):
    return nn.relu(batch_norm(conv(x, features, kernel, dtype=dtype, **conv_args), train, dtype))
  affine = BatchNorm(use_running_average=True, dtype=dtype)(None, features)
  return conv(x, features, kernel, dtype=dtype, out_affine=affine, relu=True, **conv_args)


# `max_pool`'s form when none is given; None: "auto". Set by benchmarks/bench.py --max_pool.
MAX_POOL_FORM: Optional[str] = None


def max_pool(x: Array, form: Optional[str] = None) -> Array:
  """2x2 max pooling with stride 2 (SpatialMaxPooling(2, 2)).

  Two forms of the same function and gradient (the gradient goes to the first maximum of each
  window in row-major order, as Torch's and XLA's `select_and_scatter` give it): "window"
  (`nn.max_pool`: a reduce-window, whose gradient XLA computes as a scatter) and "blocks" (a
  max over 2x2 blocks with an elementwise gradient, `_block_max_pool`), the faster on an
  H200 and on a 2-core AMD EPYC (`perf.max_pool_form`).

  Args:
    x: [B, H, W, C].
    form: "window", "blocks" or "auto" ("blocks": `perf.max_pool_form`); None:
      `MAX_POOL_FORM`, else "auto". Odd sizes: "window".
  Returns:
    [B, H/2, W/2, C].
  """
  form = perf.max_pool_form(form or MAX_POOL_FORM or "auto")
  if form == "blocks" and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
    return _block_max_pool(x)
  return nn.max_pool(x, (2, 2), strides=(2, 2))


@jax.custom_vjp
def _block_max_pool(x: Array) -> Array:
  """`max_pool` of even-sized x as a max over 2x2 blocks."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _block_max_pool_fwd(x: Array) -> tuple[Array, Array]:
  return _block_max_pool(x), x


def _block_max_pool_bwd(x: Array, g: Array) -> tuple[Array]:
  b, h, w, c = x.shape
  x6 = x.reshape(b, h // 2, 2, w // 2, 2, c)
  v00, v01 = x6[:, :, :1, :, :1], x6[:, :, :1, :, 1:]
  v10, v11 = x6[:, :, 1:, :, :1], x6[:, :, 1:, :, 1:]
  # The window's first maximum in row-major order, found by comparing its four elements with
  # each other, never with the forward's output: XLA may recompute x (a fused BatchNorm and
  # ReLU, say) in another kernel with other rounding, and an equality test against the
  # stored maximum could then find no element at all. Here exactly one element wins.
  # Elementwise, no transposes.
  t00 = (v00 >= v01) & (v00 >= v10) & (v00 >= v11)
  t01 = ~t00 & (v01 >= v10) & (v01 >= v11)
  t10 = ~t00 & ~t01 & (v10 >= v11)
  t11 = ~(t00 | t01 | t10)
  wins = jnp.concatenate([jnp.concatenate([t00, t01], axis=4),
                          jnp.concatenate([t10, t11], axis=4)], axis=2)
  dx = jnp.where(wins, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
  return (dx.reshape(b, h, w, c),)


_block_max_pool.defvjp(_block_max_pool_fwd, _block_max_pool_bwd)


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


def check_image_size(image_size: int) -> None:
  """Raises unless `image_size` is one the models support.

  Args:
    image_size: `config.model.image_size`.
  Raises:
    ConfigError: not 32 or 64.
  """
  if image_size not in (32, 64):
    raise ConfigError(f"model.image_size={image_size} is not supported; use 64 (the paper) "
                      "or 32 (small variants).")


def check_inputs(x: Optional[Array], y: Optional[Array], image_size: int, y_dim: int) -> None:
  """Trace-time shape checks, so a wrong input fails with a plain message, not deep in XLA.

  Args:
    x: images, or None (not checked).
    y: attributes, or None (not checked).
    image_size: the model's S.
    y_dim: the model's attribute length.
  Raises:
    InputError: x is not [B, S, S, 3] or y not [B, y_dim].
  """
  if x is not None and tuple(x.shape[1:]) != (image_size, image_size, 3):
    raise InputError(f"images have shape {tuple(x.shape)}; this model expects "
                     f"[batch, {image_size}, {image_size}, 3] (NHWC, values in [-1, 1]).")
  if y is not None and (y.ndim != 2 or y.shape[-1] != y_dim):
    raise InputError(f"attributes have shape {tuple(y.shape)}; this model expects "
                     f"[batch, {y_dim}] (y_dim={y_dim}).")
