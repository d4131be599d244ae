"""Uses a trained model: flags in, `a2i_jax.inference` out.

  python infer.py --workdir=runs/synthetic --mode=sample --out=runs/synthetic/infer

Modes: sample (images for the test split's attribute vectors, several latents each).
Reconstruction, completion, progression, swap, editing and evaluation come with the
posterior-inference work.
"""

import os
import sys

from absl import app, flags
import jax
import numpy as np

from a2i_jax import inference, visualize
from a2i_jax.data import load_dataset
from a2i_jax.errors import A2IError

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
_MODE = flags.DEFINE_enum("mode", "sample", ["sample"], "What to do.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/infer).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
_NUM = flags.DEFINE_integer("num_attributes", 8, "How many test attribute vectors.")
_SAMPLES = flags.DEFINE_integer("samples_per_attribute", 8, "Latent draws per vector.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the latent draws.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    trained = inference.load_trained(_WORKDIR.value, _STEP.value)
    out = _OUT.value or os.path.join(_WORKDIR.value, "infer")
    test = load_dataset(trained.config.data)["test"]
    n, k = min(_NUM.value, len(test)), _SAMPLES.value
    y = np.repeat(test.attributes[:n], k, axis=0)
    images = inference.sample(trained, y, jax.random.key(_SEED.value))["image"]
    path = os.path.join(out, f"sample_step{trained.step}.png")
    visualize.save_grid(images, path, ncols=k)
    print(f"wrote {path}: {n} test attribute vectors (rows) x {k} latent draws (columns)")
  except A2IError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
