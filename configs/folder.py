"""Your own dataset: a folder with images/, attributes.csv and optional masks/.

  python train.py --config=configs/folder.py --workdir=runs/mine \
      --config.data.path=/path/to/folder
  python train.py --config=configs/folder.py:discvae --workdir=runs/mine_dis \
      --config.data.path=/path/to/folder   # needs masks/

The folder layout and rules are in a2i_jax/data/folder.py and the README ("Datasets").
Images are cut to a centred square (--config.data.resize=stretch keeps the whole image)
and stored at data.image_size. The model settings are the LFW CVAE's (or disCVAE's).
model.y_dim = 0 means "the number of attribute columns of attributes.csv": training counts
them and writes the number into the run's config.json.
"""

import ml_collections

from a2i_jax import config_lib

default = config_lib.load_sibling(__file__, "default")


def get_config(arg: str = "cvae") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.name = arg
  config.model.y_dim = 0  # The attribute columns of attributes.csv, counted at training.
  config.data.name = "folder"
  config.data.path = ""  # Required: --config.data.path=/path/to/folder.
  config.data.masks = arg == "discvae"  # disCVAE reads masks/ (white = foreground).
  if arg == "discvae":
    # The layered composite, as every dataset config's disCVAE (configs/lfw.py says why; was
    # the reference's, whose background stays mid-grey, unlike the docs' promise).
    # --config.model.composition=reference gives the authors' code.
    config.model.composition = "layered"
  config.num_train_steps = 10_000  # Our choice for a small folder; raise for large ones.
  config.eval_every_steps = 1_000
  config.checkpoint_every_steps = 1_000
  return config
