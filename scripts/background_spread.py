"""How much a disCVAE's backgrounds follow zB: the spread of background pixels across zB draws.

  python scripts/background_spread.py --workdir=runs/synthetic_discvae [--rows=32 --draws=16]

For each of `rows` test attribute vectors, one zF and `draws` zB are drawn from the prior and
decoded. The figure is the standard deviation, across the zB draws, of each composite pixel in
[0, 1], averaged over the pixels the model shows as background (mean gate > 0.5) and over the
rows. The same figure for real images is the standard deviation across test images of each
pixel where it is background (mask 0), averaged over the pixels that are background in at
least 10 images. A model whose backgrounds ignore zB scores near 0; real backgrounds vary as
much as the second figure says. Prints one JSON object (RESULTS.md quotes it): "rows" is the
number of test vectors used (the test split may hold fewer than --rows), and a figure with no
pixel to average over is null. The data are the run's, as it trained (`inference.load_data`).
"""

import argparse
import json
import os
import sys
from typing import Optional

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from a2i_jax import inference, sampling  # noqa: E402
from a2i_jax.errors import A2IError  # noqa: E402


def generated_spread(trained, y: np.ndarray, draws: int, key) -> Optional[float]:
  """Mean over rows of the background pixels' std across zB draws (composite, [0, 1]); None
  where no row has a pixel the gate shows as background."""
  model = trained.model
  rows = y.shape[0]
  k_f, k_b = jax.random.split(key)
  lat = sampling.prior_latents(model, rows, k_f)
  z_bg = sampling.prior_latents(model, rows * draws, k_b)["z_bg"]
  latents = {"z_fg": np.repeat(np.asarray(lat["z_fg"]), draws, axis=0), "z_bg": z_bg}
  decode = jax.jit(lambda v, l, y: sampling.decode_images(model, v, l, y))
  out = jax.device_get(decode(trained.variables, latents, np.repeat(y, draws, axis=0)))
  image = out["image"].reshape((rows, draws) + out["image"].shape[1:])
  gate = out["gate"].reshape(image.shape).mean(axis=(1, 4))  # [rows, S, S]
  std = image.std(axis=1).mean(axis=-1)  # [rows, S, S], averaged over channels
  background = gate > 0.5
  per_row = [float(std[i][background[i]].mean()) for i in range(rows) if background[i].any()]
  return float(np.mean(per_row)) if per_row else None


def real_spread(images: np.ndarray, masks: Optional[np.ndarray]) -> Optional[float]:
  """Mean over pixels of the std across images of each pixel where it is background; None
  without masks or where no pixel is background in 10 images."""
  if masks is None:
    return None
  x = images.astype(np.float64) / 255.0  # [N, S, S, 3]
  w = (masks.astype(np.float64) < 128)[..., None]  # 1 = background
  count = w.sum(axis=0)
  mean = (w * x).sum(axis=0) / np.maximum(count, 1)
  var = (w * np.square(x - mean)).sum(axis=0) / np.maximum(count, 1)
  keep = count[..., 0] >= 10
  return float(np.sqrt(var).mean(axis=-1)[keep].mean()) if keep.any() else None


class _Parser(argparse.ArgumentParser):
  """argparse's parser whose refusal is one `error:` line (status 2, argparse's), without the
  usage lines and the program's name before it (was both; fault hunt)."""

  def error(self, message: str):
    print(f"error: {message}; see --help.", file=sys.stderr)
    sys.exit(2)


def main() -> None:
  p = _Parser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--rows", type=int, default=32)
  p.add_argument("--draws", type=int, default=16)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  if args.rows < 1:
    sys.exit(f"error: --rows={args.rows}; pass at least 1 test attribute vector.")
  if args.draws < 2:  # One draw's spread is 0 whatever the model.
    sys.exit(f"error: --draws={args.draws}; pass at least 2 zB draws per row.")
  if not 0 <= args.seed < 2**31:
    sys.exit(f"error: --seed={args.seed}; pass a seed from 0 to {2**31 - 1}.")
  try:
    trained = inference.load_trained(args.workdir)
    if "z_bg" not in trained.model.latent_dims:
      sys.exit(f"error: {args.workdir} holds a model without a background latent; pass a "
               "disCVAE workdir.")
    # As the model trained on them (was load_dataset: a folder dataset's attribute columns
    # in the CSV's order of now, the splits unchecked).
    test = inference.load_data(trained)["test"]
  except A2IError as e:
    sys.exit(f"error: {e}")
  y = np.asarray(test.attributes[:args.rows], np.float32)
  if not len(y):
    sys.exit(f"error: the test split of {args.workdir}'s dataset is empty; there are no "
             "attribute vectors to draw for.")
  generated = generated_spread(trained, y, args.draws, jax.random.key(args.seed))
  result = {"workdir": args.workdir, "step": trained.step,
            "composition": trained.config.model.get("composition", "reference"),
            "generated_background_std": generated,
            "real_background_std": real_spread(test.images, test.masks),
            # The rows used: the test split may hold fewer than --rows (was --rows' value).
            "rows": len(y), "draws": args.draws}
  # null, not NaN, for a figure without pixels (was a bare NaN: not JSON).
  print(json.dumps(result, allow_nan=False))


if __name__ == "__main__":
  try:
    main()
  except KeyboardInterrupt:  # Was a traceback. It writes nothing but its one line.
    print("interrupted; nothing was written.", file=sys.stderr)
    sys.exit(130)
