"""Per-layer timing of the paper CVAE's convolutions on XLA:CPU: forward, input gradient and
weight gradient of each, in GFLOP/s; prints JSON lines.

  python benchmarks/conv_layers.py --batch=8
  XLA_FLAGS=--xla_cpu_use_onednn=true python benchmarks/conv_layers.py --batch=8
  python benchmarks/conv_layers.py --batch=32 --only=poly --blocks=1,2,4   # wide layers split
  python benchmarks/conv_layers.py --batch=32 --only="enc top"   # and as a matrix product
  /work/venv-torch/bin/python benchmarks/conv_layers.py --torch --batch=8   # the same in PyTorch

Where the train step's time goes: the 5x5 convolutions at 16x16 to 64x64 hold most of the
FLOPs (BENCHMARKS.md). Layers are NHWC / HWIO as the model's `nn.Conv` builds them.
"""

import argparse
import json

from timing import ArgumentParser, median_time  # benchmarks/timing.py

DTYPES = ("float32", "bfloat16", "float16")

# (name, spatial size, in channels, out channels, kernel, stride[, padding]) of the CVAE at
# width 1, 64x64; padding k // 2 unless given.
LAYERS = [
    ("enc1 5x5 64px 3->64", 64, 3, 64, 5, 1),
    ("enc2 5x5 32px 64->128", 32, 64, 128, 5, 1),
    ("enc3 3x3 16px 128->256", 16, 128, 256, 3, 1),
    ("enc4 3x3/2 8px 256->256", 8, 256, 256, 3, 2),
    ("dec0 3x3 8px 256->256", 8, 256, 256, 3, 1),
    ("dec1 5x5 16px 256->256", 16, 256, 256, 5, 1),
    ("dec2 5x5 32px 256->128", 32, 256, 128, 5, 1),
    ("dec3 5x5 64px 128->64", 64, 128, 64, 5, 1),
    ("head 5x5 64px 64->3", 64, 64, 3, 5, 1),
    # The "full" decoder tail's forms of the heads (models.decoder_tail): the CVAE's two heads
    # as one convolution, and the disCVAE background's one head, as is and zero-padded to 4.
    ("heads merged 5x5 64px 64->6", 64, 64, 6, 5, 1),
    ("bg head 5x5 64px 32->3", 64, 32, 3, 5, 1),
    ("bg head padded 5x5 64px 32->4", 64, 32, 4, 5, 1),
    # The polyphase form's convolutions (model.upsample_mode "polyphase"): 3x3 at the input's
    # size with 4 x F outputs, for the CVAE decoder's (and disCVAE foreground's) 5x5 layers.
    ("poly1 3x3 8px 256->1024", 8, 256, 1024, 3, 1),
    ("poly2 3x3 16px 256->512", 16, 256, 512, 3, 1),
    ("poly3 3x3 32px 128->256", 32, 128, 256, 3, 1),
    # The disCVAE background decoder's 3x3 upsampling layers (16 -> 32 px, 8 -> 16 px): as
    # written, 3x3 at the output's size, and in the "offset" polyphase form (layers.
    # polyphase_form): 2x2 over the input padded by one ring, 4 x F outputs at (H+1) x (W+1).
    ("bg up 3x3 32px 64->64", 32, 64, 64, 3, 1),
    ("bg up offset 2x2 valid 18px 64->256", 18, 64, 256, 2, 1, 0),
    ("bg up 3x3 16px 128->64", 16, 128, 64, 3, 1),
    ("bg up offset 2x2 valid 10px 128->256", 10, 128, 256, 2, 1, 0),
    # The encoders' top layer: 4x4, no padding, 4 px to 1 px (blocks.ImageTrunk).
    ("enc top 4x4 valid 4px 256->1024", 4, 256, 1024, 4, 1, 0),
]


def run_jax(args):
  import jax
  import jax.numpy as jnp
  from a2i_jax.models import conv_grad
  dtype = jnp.dtype(args.dtype)
  blocks = args.blocks
  for name, s, cin, cout, k, stride, *padding in LAYERS:
    if args.only and args.only not in name:
      continue
    pad = padding[0] if padding else k // 2
    x = jnp.ones((args.batch, s, s, cin), dtype)
    w = jnp.ones((k, k, cin, cout), dtype) * 0.01
    # Blocks only where split_outputs splits: "same" at stride 1.
    forms = list(blocks) if stride == 1 and pad == k // 2 else [1]
    if pad == 0 and k == s and stride == 1:
      forms.append("product")  # The whole-map window as one matrix product (window_conv).
    for n in forms:
      if n != "product" and cout % n:
        continue
      # n > 1: the outputs in n blocks (conv_grad.split_outputs, the CPU form of wide layers).
      lax_conv = (conv_grad.split_outputs(jax.lax.conv_general_dilated)
                  if n != "product" and n > 1 else jax.lax.conv_general_dilated)

      def conv(x, w, lax_conv=lax_conv, n=n):
        if n == "product":
          return (x.reshape(x.shape[0], -1) @ w.reshape(-1, w.shape[-1])).reshape(
              x.shape[0], 1, 1, -1)
        return lax_conv(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
      conv_grad.SPLIT_OUTPUTS = cout // (1 if n == "product" else n)  # Read when traced.
      y = conv(x, w)
      flops = 2.0 * y.size * cin * k * k
      fwd = jax.jit(conv)
      dx = jax.jit(lambda x, w, g, conv=conv: jax.vjp(lambda a: conv(a, w), x)[1](g)[0])
      dw = jax.jit(lambda x, w, g, conv=conv: jax.vjp(lambda b: conv(x, b), w)[1](g)[0])
      g = jnp.ones_like(y)
      row = {"layer": name, "batch": args.batch, "gflop": round(flops / 1e9, 3)}
      if len(forms) > 1:
        row["form"] = n if n == "product" else f"{n} output blocks"
      for label, fn, a in (("fwd", fwd, (x, w)), ("dx", dx, (x, w, g)), ("dw", dw, (x, w, g))):
        jax.block_until_ready(fn(*a))  # Compiled before SPLIT_OUTPUTS changes again.
        t = median_time(lambda: jax.block_until_ready(fn(*a)), args.repeats)[0]
        row[f"{label}_ms"] = round(1e3 * t, 2)
        row[f"{label}_gflop_s"] = round(flops / t / 1e9, 1)
      print(json.dumps(row), flush=True)


def run_torch(args):
  import torch
  import torch.nn.functional as F
  for name, s, cin, cout, k, stride, *padding in LAYERS:
    if args.only and args.only not in name:
      continue
    pad = padding[0] if padding else k // 2
    x = torch.ones(args.batch, cin, s, s, requires_grad=True)
    w = (torch.ones(cout, cin, k, k) * 0.01).requires_grad_(True)
    y = F.conv2d(x, w, stride=stride, padding=pad)
    flops = 2.0 * y.numel() * cin * k * k
    g = torch.ones_like(y)

    def fwd():
      with torch.no_grad():
        F.conv2d(x, w, stride=stride, padding=pad)

    def both():
      out = F.conv2d(x, w, stride=stride, padding=pad)
      torch.autograd.grad(out, (x, w), g)
    row = {"layer": name, "batch": args.batch, "gflop": round(flops / 1e9, 3)}
    t = median_time(fwd, args.repeats)[0]
    row.update(fwd_ms=round(1e3 * t, 2), fwd_gflop_s=round(flops / t / 1e9, 1))
    t = median_time(both, args.repeats)[0]
    row.update(fwd_dx_dw_ms=round(1e3 * t, 2), fwd_dx_dw_gflop_s=round(3 * flops / t / 1e9, 1))
    print(json.dumps(row), flush=True)


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before jax (or torch) is imported.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags.
  Raises:
    SystemExit: (status 2, one `error:` line) an unknown --dtype (was: a TypeError), --blocks
      that are not integers of at least 1 (was: a ValueError), a count below 1.
  """
  p = ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--dtype", default="float32", choices=DTYPES, help="JAX's compute dtype.")
  p.add_argument("--only", default="", help="Run only layers whose name contains this.")
  p.add_argument("--blocks", default="1", help="JAX: comma-separated counts of output blocks "
                 "to time each layer in (conv_grad.split_outputs), e.g. 1,2,4.")
  p.add_argument("--torch", action="store_true", help="Time PyTorch instead of JAX.")
  args = p.parse_args(argv)
  p.check_at_least(args, {"batch": 1, "repeats": 1})
  args.blocks = p.positive_ints("--blocks", args.blocks)
  return args


def main(argv=None):
  """Times the layers (see the module docstring); prints JSON lines.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be measured, as one `error:` line.
  """
  args = parse_args(argv)
  (run_torch if args.torch else run_jax)(args)


if __name__ == "__main__":
  main()
