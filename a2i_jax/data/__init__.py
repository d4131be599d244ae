"""Data sources. Each returns the same in-memory `Dataset` (see base.py)."""

from __future__ import annotations

import os
from typing import Any

from a2i_jax.data.base import DataError, Dataset, DatasetNotPreparedError, Split, SPLITS

_NOT_YET = {
    "lfw": "LFW (lfw-funneled images + Kumar et al.'s lfw_attributes.txt + part-label masks)",
    "cub": "CUB-200-2011 (CUB_200_2011.tgz + segmentations.tgz)",
    "folder": "a folder of your own images with attributes.csv",
}


def load_dataset(data_config: Any) -> Dataset:
  """Loads (generating or reading the cache as needed) the dataset `data_config.name` names.

  Args:
    data_config: `config.data`.
  Returns:
    A `Dataset` with train / validation / test splits.
  """
  name = data_config.name
  cache_dir = os.path.expanduser(data_config.cache_dir) if data_config.cache_dir else None
  if name == "synthetic":
    from a2i_jax.data import synthetic  # pylint: disable=import-outside-toplevel
    s = data_config.synthetic
    return synthetic.load(image_size=data_config.image_size, num_train=s.num_train,
                          num_validation=s.num_validation, num_test=s.num_test, seed=s.seed,
                          cache_dir=cache_dir)
  if name in _NOT_YET:
    raise DatasetNotPreparedError(
        f"dataset {name!r} is not prepared: this version of a2i-jax has no builder for "
        f"{_NOT_YET[name]} yet (see README, 'Datasets'). Train on the built-in data meanwhile: "
        "python train.py --config=configs/synthetic.py --workdir=runs/synthetic")
  raise DataError(f"unknown data.name={name!r}; choose synthetic, lfw, cub or folder.")


__all__ = ["DataError", "Dataset", "DatasetNotPreparedError", "Split", "SPLITS",
           "load_dataset"]
