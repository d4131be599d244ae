"""A PyTorch (CPU) port of the paper's CVAE and disCVAE, timed like benchmarks/bench.py.

The yardstick of issue 5: the same layers, losses and optimiser as `a2i_jax/models.py` at
full width and 64x64, in plain eager PyTorch (NCHW, float32, oneDNN convolutions). Not part of
the library and not a dependency: run it from a separate virtual environment.

  python3 -m venv /work/venv-torch && /work/venv-torch/bin/pip install torch==2.13.0 numpy
  /work/venv-torch/bin/python benchmarks/torch_reference.py --model=cvae --batch=32

Prints one JSON object: train images/s (one Adam step on a random batch drawn from an
in-memory uint8 dataset, flip + colour gain + sharpening on the fly as the JAX step does) and
posterior-inference image-iterations/s: one call as `a2i_jax.inference.infer_latents` makes
it with the library's defaults (`--infer_ends=encoder`): z starts at the encoder's mean (the
disCVAE, given no masks, first estimates the foreground from a pass with the whole image as
foreground), then Adam on z through the frozen decoder (eval-mode BatchNorm, cosine learning
rate from 0.05, the model's own energy: Gaussian NLL for the CVAE, SmoothL1 for the disCVAE,
plus the standard normal prior), then the final decode and energy. `--infer_ends=none` times
the Adam steps alone from random z (the measurements before 2026-11-30). Medians over
`--repeats` after a warm-up.

The port itself is benchmarks/torch_port.py, imported once the command line is checked:
`--help` and a refused flag (one `error:` line) need no PyTorch. It has no unconditional VAE
(compare_cpu.sh compares the CVAE and the disCVAE): `--model=vae` is refused (before
2026-12-06 it timed a CVAE under the name "vae", and an unknown name a disCVAE).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402  (benchmarks/timing.py)

MODELS = ("cvae", "discvae")  # The port's models (torch_port.py); the library's vae is not one.
# Image sizes: the encoders reduce by 16; the disCVAE's background decoder starts at 1/32.
SIZE_MULTIPLE = {"cvae": 16, "discvae": 32}
WHATS = ("train", "infer")


def parse_args(argv=None) -> argparse.Namespace:
  """The command line, checked before PyTorch is imported or anything is built.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags; `what` as a list.
  Raises:
    SystemExit: (status 2, one `error:` line) a value the port cannot measure.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="cvae",
                 help="cvae or discvae (the port has no unconditional VAE).")
  p.add_argument("--batch", type=int, default=32, help="Images per train step.")
  p.add_argument("--width", type=float, default=1.0, help="Channel width factor, above 0.")
  p.add_argument("--image_size", type=int, default=64,
                 help="A multiple of 16 (cvae) or 32 (discvae).")
  p.add_argument("--repeats", type=int, default=3, help="Timed calls after one warm-up.")
  p.add_argument("--infer_images", type=int, default=0,
                 help="Images per inference call (0: the batch).")
  p.add_argument("--infer_steps", type=int, default=10, help="Adam steps per inference call.")
  p.add_argument("--what", default="train,infer", help="Comma list: train, infer.")
  p.add_argument("--infer_ends", default="encoder", choices=("encoder", "none"),
                 help="encoder: the library's call (encoder start, final decode); none: the "
                      "Adam steps alone from random z.")
  p.add_argument("--threads", type=int, default=0, help="0 = torch's default.")
  p.add_argument("--channels_last", action="store_true")
  args = p.parse_args(argv)
  if args.model == "vae":
    p.error("--model=vae: the port has no unconditional VAE (benchmarks/compare_cpu.sh "
            "compares the CVAE and the disCVAE); use --model=cvae or --model=discvae.")
  if args.model not in MODELS:
    p.error(f"--model={args.model!r} is not a model of the port; choose from "
            f"{', '.join(MODELS)}.")
  p.check_at_least(args, {"batch": 1, "repeats": 1, "infer_steps": 1, "infer_images": 0,
                          "threads": 0, "image_size": 1})
  if not (math.isfinite(args.width) and args.width > 0):
    p.error(f"--width={args.width} must be a number above 0, e.g. 1.0 (the paper's).")
  multiple = SIZE_MULTIPLE[args.model]
  if args.image_size % multiple:
    p.error(f"--image_size={args.image_size}: the {args.model} needs a multiple of "
            f"{multiple}; e.g. 64 (the paper's).")
  args.what = p.comma_list("--what", args.what, WHATS)
  return args


def main(argv=None) -> dict:
  """Measures what the command line asks for (the module docstring) and prints one JSON line.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The record printed.
  Raises:
    SystemExit: a refused flag (`parse_args`), or no PyTorch in this Python, as one `error:`
      line.
  """
  args = parse_args(argv)
  try:
    import torch_port  # pylint: disable=import-outside-toplevel  (imports torch)
  except ModuleNotFoundError as e:  # Was a traceback, even for --help.
    if e.name != "torch":
      raise
    raise SystemExit("error: PyTorch is not installed in this Python; install it (pip install "
                     "torch numpy), or run this script from the venv of the module docstring, "
                     "e.g. /work/venv-torch/bin/python.") from None
  out = torch_port.measure(args)
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
