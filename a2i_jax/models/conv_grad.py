"""The convolution whose kernel gradient is a sum of per-tap matrix products.

`model.conv_weight_grad="taps"` (the CPU default, `perf.conv_weight_grad`) puts
`taps_conv_general_dilated` in place of `jax.lax.conv_general_dilated` in every convolution:
the same value, input gradient and parameters, the kernel gradient computed another way,
because XLA:CPU's own is slow (BENCHMARKS.md, "Weight gradients as matrix products").
Correctness-critical: tests/test_perf.py compares every formulation with XLA's gradients.

It also holds the other CPU-tuned forms of a convolution: one with more than `SPLIT_OUTPUTS`
outputs computed as one convolution per block of outputs (`split_outputs`; "auto" on CPU,
`perf.conv_output_split`); and the gradients written as convolutions in the canonical
NHWC / HWIO layout, with explicit transposes (`canonical_conv_general_dilated`; "auto" on CPU,
`perf.conv_input_grad` and `perf.conv_weight_grad_layout`), which XLA:CPU runs in its fast
kernels inside loops too.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp

from a2i_jax import perf

_NHWC = ("NHWC", "HWIO", "NHWC")


# The output form every model convolution takes (`perf.conv_output_split`): None resolves
# "auto" by backend; benchmarks set "whole" or "split" to compare the two. Both this and
# SPLIT_OUTPUTS are read when a model is traced: a function jitted before a change keeps the
# form it was traced with.
CONV_OUTPUT_SPLIT: Optional[str] = None
# The most outputs one convolution computes in the "split" form.
SPLIT_OUTPUTS = 512
# The input gradient's form (`perf.conv_input_grad`): None resolves "auto" by backend;
# benchmarks set "canonical" or "xla" to compare the two. Read when a model is traced.
CONV_INPUT_GRAD: Optional[str] = None
# XLA's weight gradient's layout (`perf.conv_weight_grad_layout`), likewise.
CONV_WEIGHT_GRAD_LAYOUT: Optional[str] = None
# True while a model is traced for its variables alone (`shapes_only`).
_SHAPES_ONLY = contextvars.ContextVar("a2i_conv_shapes_only", default=False)


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
  """A block in which `split_outputs` computes every convolution whole: for a trace whose
  convolutions' values no result needs (the variables' shapes, `models.abstract_variables`;
  a model's `init`, whose forward pass XLA drops, `models.init_variables`). The blocks'
  number grows with the width, and a width far past any model's (100,000) made thousands of
  them per layer to trace: minutes before the host-memory check refused the model.

  Returns:
    A context manager (for the current thread or task alone).
  """
  token = _SHAPES_ONLY.set(True)
  try:
    yield
  finally:
    _SHAPES_ONLY.reset(token)


def conv_general_dilated_fn(name: str) -> Callable[..., Any]:
  """The `conv_general_dilated` for `config.model.conv_weight_grad` (as `nn.Conv` takes it).

  Args:
    name: "auto", "xla" or "taps" (resolved by `perf.conv_weight_grad`).
  Returns:
    For "xla", `canonical_conv_general_dilated` where `perf.conv_input_grad` or
    `perf.conv_weight_grad_layout` resolves to "canonical" (on CPU), else
    `jax.lax.conv_general_dilated`; `taps_conv_general_dilated` for
    "taps"; each through `split_outputs` where `perf.conv_output_split` resolves to "split"
    (on CPU).
  Raises:
    ConfigError: an unknown name.
  """
  if perf.conv_weight_grad(name) == "taps":
    kind = "taps"
  else:
    canonical = _input_grad_form() == "canonical" or _xla_weight_grad() == "canonical"
    kind = "canonical" if canonical else "xla"
  split = perf.conv_output_split(CONV_OUTPUT_SPLIT or "auto") == "split"
  return (_SPLIT if split else _WHOLE)[kind]


def cpu_conv_general_dilated(xla_kernels: bool) -> Callable[..., Any]:
  """The `conv_general_dilated` that the CPU's "auto" forms give a layer, with XLA's own
  convolution kernels (`perf.xla_convolutions`) or with YNNPACK's.

  With YNNPACK's the weight gradient is `taps_conv_general_dilated`'s per-tap matrix products;
  with XLA's it is XLA's own, in `perf.conv_weight_grad_layout`'s layout. Wide layers go
  through `split_outputs` as on CPU. `perf.time_convolution_kernels` times each choice of
  kernels with the forms that go with it.

  Args:
    xla_kernels: the forms for XLA's own convolution kernels (True) or YNNPACK's (False).
  Returns:
    The function, a drop-in `jax.lax.conv_general_dilated`.
  """
  if xla_kernels:
    canonical = (perf.conv_input_grad("auto", "cpu") == "canonical"
                 or perf.conv_weight_grad_layout("auto", "cpu") == "canonical")
    kind = "canonical" if canonical else "xla"
  else:
    kind = "taps"
  return (_SPLIT if perf.conv_output_split("auto", "cpu") == "split" else _WHOLE)[kind]


def _input_grad_form() -> str:
  return perf.conv_input_grad(CONV_INPUT_GRAD or "auto")


def _xla_weight_grad() -> str:
  """The `_conv` method of XLA's weight gradient: "canonical" or "xla" (JAX's own rule)."""
  return perf.conv_weight_grad_layout(CONV_WEIGHT_GRAD_LAYOUT or "auto")


def split_outputs(conv_fn: Callable[..., Any]) -> Callable[..., Any]:
  """`conv_fn` (a `jax.lax.conv_general_dilated` drop-in) computing a "same" convolution at
  stride 1 with more than `SPLIT_OUTPUTS` outputs as one convolution per block of them,
  concatenated.

  The value and the parameters are the same; the input gradient is the sum of the blocks'
  input gradients, the same sum in another order. Each block's reduction is a fraction of the
  whole one's: XLA:CPU ran the input gradient of a 3x3 convolution from 256 to 1,024 channels
  at 8x8 (the decoders' first polyphase layer) at 99 GFLOP/s as one and 194 as two blocks of
  512, the forward about a tenth slower (BENCHMARKS.md, "Wide convolutions in blocks of
  outputs"). The encoders' top layer, 4x4 without padding to 1x1 and 1,024 outputs, lost in
  blocks (its forward took twice as long), so only "same" convolutions at stride 1 without
  dilation, NHWC / HWIO / NHWC with one feature and batch group, are split; anything else is
  `conv_fn` as it is. `SPLIT_OUTPUTS` is read when the call is traced; inside `shapes_only`
  nothing is split.

  Args:
    conv_fn: the convolution to split, with `jax.lax.conv_general_dilated`'s arguments.
  Returns:
    A function with the same arguments.
  """
  def conv(lhs: Any, rhs: Any, window_strides: Sequence[int], padding: Any,
           lhs_dilation: Sequence[int] | None = None,
           rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
           feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
           preferred_element_type: Any = None) -> Any:
    def one(kernel):
      return conv_fn(lhs, kernel, window_strides, padding, lhs_dilation=lhs_dilation,
                     rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                     feature_group_count=feature_group_count,
                     batch_group_count=batch_group_count, precision=precision,
                     preferred_element_type=preferred_element_type)
    pads = _stride1_nhwc_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                              dimension_numbers, feature_group_count, batch_group_count)
    n_out = rhs.shape[-1]
    if (_SHAPES_ONLY.get() or pads is None or n_out <= SPLIT_OUTPUTS
        or any(lo + hi != k - 1 for (lo, hi), k in zip(pads, rhs.shape[:2]))):  # Not "same".
      return one(rhs)
    blocks = -(-n_out // SPLIT_OUTPUTS)
    bounds = [n_out * i // blocks for i in range(1, blocks)]  # Blocks of (nearly) equal size.
    return jnp.concatenate([one(part) for part in jnp.split(rhs, bounds, axis=-1)], axis=-1)
  name = getattr(conv_fn, "__name__", "conv")
  conv.__name__ = conv.__qualname__ = f"split_outputs({name})"
  conv.__doc__ = f"{name} in blocks of outputs (split_outputs)."
  return conv


def _explicit_padding(padding: Any) -> tuple[tuple[int, int], ...] | None:
  """`padding` as ((lo, hi), ...) of non-negative ints, or None (a string or negative pads)."""
  if isinstance(padding, str):
    return None
  try:
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  except (TypeError, ValueError):
    return None
  return pads if all(lo >= 0 and hi >= 0 for lo, hi in pads) else None


def _nhwc_strides_pads(lhs: Any, rhs: Any, window_strides: Sequence[int], padding: Any,
                       lhs_dilation: Any, rhs_dilation: Any, dimension_numbers: Any,
                       feature_group_count: int, batch_group_count: int
                       ) -> tuple[tuple[int, int], tuple[tuple[int, int], ...]] | None:
  """(strides, explicit ((lo, hi), (lo, hi)) padding) of a 2-D NHWC / HWIO / NHWC
  convolution without dilation, with one feature and batch group (the only kind the CPU
  forms here rewrite); None for any other convolution."""
  pads = _explicit_padding(padding)
  try:
    strides = tuple(int(s) for s in window_strides)
  except (TypeError, ValueError):
    return None
  if (pads is None or len(pads) != 2 or len(strides) != 2 or min(strides) < 1
      or not _ones(lhs_dilation) or not _ones(rhs_dilation) or feature_group_count != 1
      or batch_group_count != 1 or not _is_nhwc(lhs.shape, rhs.shape, dimension_numbers)):
    return None
  return strides, pads


def _stride1_nhwc_pads(lhs: Any, rhs: Any, window_strides: Sequence[int], padding: Any,
                       lhs_dilation: Any, rhs_dilation: Any, dimension_numbers: Any,
                       feature_group_count: int, batch_group_count: int
                       ) -> tuple[tuple[int, int], ...] | None:
  """The padding `_nhwc_strides_pads` finds, for a convolution at stride 1 only."""
  found = _nhwc_strides_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                             dimension_numbers, feature_group_count, batch_group_count)
  return found[1] if found is not None and found[0] == (1, 1) else None


def _is_nhwc(lhs_shape, rhs_shape, dimension_numbers) -> bool:
  if dimension_numbers is None or len(lhs_shape) != 4 or len(rhs_shape) != 4:
    return False
  try:
    dn = jax.lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  except (TypeError, ValueError):
    return False
  return dn == jax.lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC)


def _ones(dilation: Any) -> bool:
  return dilation is None or all(int(d) == 1 for d in dilation)


def taps_conv_general_dilated(lhs: Any, rhs: Any, window_strides: Sequence[int], padding: Any,
                              lhs_dilation: Sequence[int] | None = None,
                              rhs_dilation: Sequence[int] | None = None,
                              dimension_numbers: Any = None, feature_group_count: int = 1,
                              batch_group_count: int = 1, precision: Any = None,
                              preferred_element_type: Any = None) -> Any:
  """`jax.lax.conv_general_dilated` whose weight gradient is a sum of per-tap matrix products.

  The value and the input gradient are XLA's. XLA:CPU computes the weight gradient of a
  stride-1 convolution as a convolution whose window is the whole image, which its YNNPACK
  kernels run far below the forward convolution's rate (BENCHMARKS.md); here dW[t, s] =
  x_pad[:, t:t+Ho, s:s+Wo, :]^T . dy (all of batch and space contracted), one matrix product
  per kernel tap, accumulated in float32 and cast to the kernel's dtype. Layers with few
  input or output channels stack the taps into one product instead, and 5x5 layers with many
  channels keep XLA's weight gradient, which measured faster there (`_weight_grad_method`).
  Gradients nobody asks for (the images' input gradient, the kernels' in posterior inference)
  are not computed. The input gradient takes `perf.conv_input_grad`'s form, and the layers
  left to XLA's weight gradient `perf.conv_weight_grad_layout`'s (see
  `canonical_conv_general_dilated`).

  Only stride 1, no dilation, one feature group, NHWC / HWIO / NHWC, explicit non-negative
  padding, and no `preferred_element_type` take that path; a strided convolution takes
  `canonical_conv_general_dilated`'s, anything else is plain `jax.lax.conv_general_dilated`.
  The arguments are those of `jax.lax.conv_general_dilated`, so this is a drop-in
  `nn.Conv(conv_general_dilated=...)`. Reverse-mode only: the taps path has no forward-mode
  (jvp) rule.

  Args:
    lhs: the input, [N, H, W, C] on the taps path.
    rhs: the kernel, [kh, kw, C, F] on the taps path.
    window_strides: the strides.
    padding: ((lo, hi), (lo, hi)) or a padding string.
    lhs_dilation: input dilation (None or ones on the taps path).
    rhs_dilation: kernel dilation (None or ones on the taps path).
    dimension_numbers: as for `jax.lax.conv_general_dilated`.
    feature_group_count: feature groups (1 on the taps path).
    batch_group_count: batch groups (1 on the taps path).
    precision: passed to the convolutions and the matrix products.
    preferred_element_type: as for `jax.lax.conv_general_dilated` (None on the taps path).
  Returns:
    The convolution's output, as `jax.lax.conv_general_dilated` gives it.
  """
  found = _nhwc_strides_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                             dimension_numbers, feature_group_count, batch_group_count)
  if found is None or preferred_element_type is not None:
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
  strides, pads = found
  if strides != (1, 1):
    return canonical_conv_general_dilated(lhs, rhs, strides, pads,
                                          dimension_numbers=dimension_numbers,
                                          precision=precision)
  out_shape = jax.eval_shape(lambda: _plain_conv(lhs, rhs, strides, pads, precision)).shape
  method = _weight_grad_method(lhs.shape, rhs.shape, out_shape, pads)
  if method == "xla":
    method = _xla_weight_grad()
  return _conv(lhs, rhs, strides, pads, method, _input_grad_form(), precision)


def canonical_conv_general_dilated(lhs: Any, rhs: Any, window_strides: Sequence[int],
                                   padding: Any, lhs_dilation: Sequence[int] | None = None,
                                   rhs_dilation: Sequence[int] | None = None,
                                   dimension_numbers: Any = None, feature_group_count: int = 1,
                                   batch_group_count: int = 1, precision: Any = None,
                                   preferred_element_type: Any = None) -> Any:
  """`jax.lax.conv_general_dilated` whose gradients are canonical convolutions.

  JAX writes the input gradient of a convolution as a convolution of the output gradient
  with the kernel flipped in space and its input and output channels swapped in the
  dimension numbers, and the kernel gradient as a convolution of the input with the output
  gradient, the batch and feature dimensions exchanged in the dimension numbers. XLA:CPU runs
  a convolution in its library kernels only in the canonical NHWC / HWIO layout, and rewrites
  other layouts into it only in a program's entry computation: inside a `lax.scan` or
  `fori_loop` body those gradients ran as naive loops. Here the swaps are explicit transposes
  (the kernel's channels for the input gradient, `perf.conv_input_grad`; the input's and the
  output gradient's batch and channels for the kernel gradient,
  `perf.conv_weight_grad_layout`), so the convolutions are canonical wherever they are. The
  value and both gradients (the same sums) are those of `jax.lax.conv_general_dilated`.

  NHWC / HWIO / NHWC convolutions at any stride, without dilation, with one feature group and
  padding of at most the kernel's size less one, and without `preferred_element_type`, take
  this path; anything else is plain `jax.lax.conv_general_dilated`. A strided convolution's
  input gradient convolves the output gradient dilated by the stride, and its kernel gradient
  takes the output gradient dilated by the stride as its kernel, as JAX's rules do. A drop-in
  `nn.Conv(conv_general_dilated=...)`. Reverse-mode only (no jvp rule; `jax.grad` and
  `jax.linearize` work).

  Args:
    lhs: the input, [N, H, W, C] on this path.
    rhs: the kernel, [kh, kw, C, F] on this path.
    window_strides: the strides.
    padding: ((lo, hi), (lo, hi)) or a padding string.
    lhs_dilation: input dilation (None or ones on this path).
    rhs_dilation: kernel dilation (None or ones on this path).
    dimension_numbers: as for `jax.lax.conv_general_dilated`.
    feature_group_count: feature groups (1 on this path).
    batch_group_count: batch groups (1 on this path).
    precision: passed to the convolutions.
    preferred_element_type: as for `jax.lax.conv_general_dilated` (None on this path).
  Returns:
    The convolution's output, as `jax.lax.conv_general_dilated` gives it.
  """
  found = _nhwc_strides_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                             dimension_numbers, feature_group_count, batch_group_count)
  if found is None or preferred_element_type is not None or not _fits(found[1], rhs.shape):
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
  strides, pads = found
  return _conv(lhs, rhs, strides, pads, _xla_weight_grad(), _input_grad_form(), precision)


def _fits(pads: tuple, kernel_shape: tuple) -> bool:
  """Whether every pad is at most the kernel's extent less one (the input gradient's own
  padding, k - 1 - pad, is then not negative)."""
  return all(lo <= k - 1 and hi <= k - 1 for (lo, hi), k in zip(pads, kernel_shape[:2]))


def _plain_conv(x: Any, w: Any, strides: tuple, pads: tuple, precision: Any,
                lhs_dilation: tuple | None = None, rhs_dilation: tuple | None = None) -> Any:
  return jax.lax.conv_general_dilated(x, w, strides, pads, lhs_dilation=lhs_dilation,
                                      rhs_dilation=rhs_dilation, dimension_numbers=_NHWC,
                                      precision=precision)


def _unused_rows(x_shape: tuple, kernel_shape: tuple, strides: tuple, pads: tuple) -> tuple:
  """Per spatial dimension, the rows at the padded input's high end that no output reads:
  (H + lo + hi - k) mod stride (0 at stride 1)."""
  return tuple((n + lo + hi - k) % s for n, k, s, (lo, hi)
               in zip(x_shape[1:3], kernel_shape[:2], strides, pads))


def _input_grad(x: Any, w: Any, dy: Any, strides: tuple, pads: tuple, form: str,
                precision: Any) -> Any:
  """dx of the NHWC / HWIO convolution `_plain_conv(x, w, strides, pads)` given dy.

  "canonical" (where the pads fit the kernel): dy, dilated by the stride and padded by
  k - 1 - lo before and k - 1 - hi + the unused rows after, convolved with the kernel flipped
  in space and transposed to [kh, kw, F, C] (an explicit transpose), as an NHWC / HWIO
  convolution. "xla": JAX's own transpose of the convolution.

  A dy with fewer pixels than the kernel is dilated explicitly (zeros between its rows and
  columns), not by the convolution's `lhs_dilation`: XLA's simplifier swaps the operands of a
  convolution whose (undilated) input is smaller than its kernel, out of the canonical layout,
  and leaves the swapped one alone in a loop body (a 2x2 dy of the encoders' stride-2 layer
  at 32x32 images).
  """
  if form != "canonical" or not _fits(pads, w.shape):
    (dx,) = jax.linear_transpose(lambda x_: _plain_conv(x_, w, strides, pads, precision),
                                 x)(dy)
    return dx
  unused = _unused_rows(x.shape, w.shape, strides, pads)
  back = tuple((k - 1 - lo, k - 1 - hi + r)
               for (lo, hi), k, r in zip(pads, w.shape[:2], unused))
  w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2).astype(dy.dtype)
  if strides != (1, 1) and dy.shape[1] * dy.shape[2] < w.shape[0] * w.shape[1]:
    zero = jnp.zeros((), dy.dtype)
    dy = jax.lax.pad(dy, zero, ((0, 0, 0), (0, 0, strides[0] - 1), (0, 0, strides[1] - 1),
                                (0, 0, 0)))
    strides = (1, 1)
  return _plain_conv(dy, w_t, (1, 1), back, precision, lhs_dilation=strides).astype(x.dtype)


def _canonical_weight_grad(x: Any, dy: Any, kernel_shape: tuple, strides: tuple, pads: tuple,
                           precision: Any, dtype: Any) -> Any:
  """dW of the NHWC / HWIO convolution `_plain_conv(x, w, strides, pads)` given dy, as one
  canonical convolution: dW[t, s, c, f] = sum over n, i, j of x_pad[n, i sh + t, j sw + s, c]
  * dy[n, i, j, f] is the NHWC / HWIO convolution of x as [C, H, W, N] (channels as the
  batch, the batch as the features) with dy as the kernel [Ho, Wo, N, F], dilated by the
  stride, padded as the forward convolution was less the input's rows no output reads (cut
  from x where they exceed the padding); its output [C, kh, kw, F] is transposed to the
  kernel's layout."""
  unused = _unused_rows(x.shape, kernel_shape, strides, pads)
  cut = [max(0, r - hi) for r, (_, hi) in zip(unused, pads)]
  x = x[:, :x.shape[1] - cut[0], :x.shape[2] - cut[1], :]
  pads = tuple((lo, max(0, hi - r)) for (lo, hi), r in zip(pads, unused))
  dw = _plain_conv(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3).astype(x.dtype), (1, 1),
                   pads, precision, rhs_dilation=strides)
  return dw.transpose(1, 2, 0, 3).astype(dtype)


def _weight_grad_method(x_shape: tuple, kernel_shape: tuple, out_shape: tuple,
                        pads: tuple) -> str:
  """Which weight-gradient formulation a layer gets (see `_taps_weight_grad`), or "xla".

  Chosen per layer from each weight gradient measured alone, and kept because the whole train
  step measured fastest with it (the figures: BENCHMARKS.md, "Weight gradients as matrix
  products"):
  * 3x3 with many channels (the polyphase decoder layers, the encoder's third layer): one
    product per tap ("x").
  * 5x5 with many channels (the encoders' second layer): 25 thin products lose: XLA's.
  * few output channels (the decoders' heads, 5x5 64->6 and 32->4 as `decoder_tail` merges
    them): dy's shifted copies side by side, one product ("dy_stacked"); products with a few
    columns run far below the CPU's rate.
  * few input channels (the first layer, 5x5 3->64): x's shifted copies side by side
    (im2col, "x_stacked").
  The whole step with every layer on the per-tap form was no faster than XLA's (the heads).
  """
  kh, kw, cin, cout = kernel_shape
  same = tuple(out_shape[1:3]) == tuple(x_shape[1:3])
  if cout <= 8 and same and _fits(pads, kernel_shape):
    return "dy_stacked"
  if cin <= 8:
    return "x_stacked"
  if kh * kw > 16:
    return "xla"
  return "x"


def _taps_weight_grad(x: Any, dy: Any, kernel_shape: tuple, pads: tuple, method: str,
                      precision: Any, dtype: Any) -> Any:
  """dW of a stride-1 NHWC / HWIO convolution from matrix products over (batch, space).

  method "x": one [C, N Ho Wo] x [N Ho Wo, F] product per tap, x padded and shifted by the
  tap. "x_stacked": the shifted x's side by side, one [kh kw C, N Ho Wo] x [N Ho Wo, F]
  product (few input channels). "dy_stacked": dy padded by k - 1 - pad and shifted the other
  way, side by side, one [C, N H W] x [N H W, kh kw F] product (few output channels; needs
  an output the input's size).
  """
  kh, kw, cin, cout = kernel_shape
  _, ho, wo, _ = dy.shape
  mm = functools.partial(jnp.matmul, precision=precision, preferred_element_type=jnp.float32)
  if method == "dy_stacked":
    _, h, w, _ = x.shape
    dyp = jnp.pad(dy, ((0, 0), (kh - 1 - pads[0][0], kh - 1 - pads[0][1]),
                       (kw - 1 - pads[1][0], kw - 1 - pads[1][1]), (0, 0)))
    shifted = [dyp[:, kh - 1 - t:kh - 1 - t + h, kw - 1 - s:kw - 1 - s + w, :].reshape(-1, cout)
               for t in range(kh) for s in range(kw)]
    dw = mm(x.reshape(-1, cin).T, jnp.concatenate(shifted, axis=1))  # [C, kh kw F]
    return dw.reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3).astype(dtype)
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  shifted = [xp[:, t:t + ho, s:s + wo, :].reshape(-1, cin) for t in range(kh) for s in range(kw)]
  dy2 = dy.reshape(-1, cout)
  if method == "x_stacked":
    return mm(jnp.concatenate(shifted, axis=1).T, dy2).reshape(kernel_shape).astype(dtype)
  return jnp.stack([mm(a.T, dy2) for a in shifted]).reshape(kernel_shape).astype(dtype)


def _make_conv():
  """The NHWC / HWIO convolution with its own gradients: `conv(x, w, strides, pads, method,
  input_grad, precision)`, method a `_weight_grad_method` name (stride 1 only), "xla" (JAX's
  rule for the kernel gradient) or "canonical" (`_canonical_weight_grad`), and input_grad a
  `perf.conv_input_grad` form."""
  @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
  def conv(x, w, strides, pads, method, input_grad, precision):
    del method, input_grad
    return _plain_conv(x, w, strides, pads, precision)

  # symbolic_zeros: a gradient nobody asked for (the images' dx, the kernels' dW in posterior
  # inference) is not computed, and does not appear in the program at all.
  def fwd(x, w, strides, pads, method, input_grad, precision):
    del method, input_grad
    out = _plain_conv(x.value, w.value, strides, pads, precision)
    # The "perturbed" bits travel as the residuals' structure: () for True, None for False.
    return out, (x.value, w.value, () if x.perturbed else None, () if w.perturbed else None)

  def bwd(strides, pads, method, input_grad, precision, res, dy):
    x, w, need_dx, need_dw = res
    if isinstance(dy, jax.custom_derivatives.SymbolicZero):
      return None, None
    dx = dw = None
    if need_dx is not None:  # No forward pass: the convolution is linear in x.
      dx = _input_grad(x, w, dy, strides, pads, input_grad, precision)
    if need_dw is not None:
      if method == "xla":
        (dw,) = jax.linear_transpose(lambda w_: _plain_conv(x, w_, strides, pads, precision),
                                     w)(dy)
      elif method == "canonical":
        dw = _canonical_weight_grad(x, dy, w.shape, strides, pads, precision, w.dtype)
      else:
        dw = _taps_weight_grad(x, dy, w.shape, pads, method, precision, w.dtype)
    return dx, dw

  conv.defvjp(fwd, bwd, symbolic_zeros=True)
  return conv


_conv = _make_conv()
_WHOLE = {"xla": jax.lax.conv_general_dilated, "canonical": canonical_conv_general_dilated,
          "taps": taps_conv_general_dilated}
_SPLIT = {kind: split_outputs(fn) for kind, fn in _WHOLE.items()}
