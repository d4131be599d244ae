"""Trains a model: flags in, `train_lib.train_and_evaluate` out.

  python train.py --config=configs/synthetic.py --workdir=runs/synthetic
  python train.py --config=configs/lfw.py:discvae --workdir=runs/lfw_discvae \
      --config.batch_size=64

The console shows INFO lines, except Orbax's (a few dozen per checkpoint save);
`--verbosity=1` shows those too (absl's flag: -1 warnings only, 0 INFO, 1 debug).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from a2i_jax import checkpoints, files, train_lib
from a2i_jax.errors import A2IError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.INFO)
  if logging.get_verbosity() < logging.DEBUG:
    logging.get_absl_handler().addFilter(checkpoints.QuietOrbaxFilter())
  files.enable_compilation_cache(_CONFIG.value.compilation_cache_dir)
  try:
    train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except A2IError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
