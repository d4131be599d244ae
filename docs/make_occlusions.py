"""Writes docs/occlusions.md and docs/occlusions_synthetic.png from `a2i_jax.occlusions`.

  python docs/make_occlusions.py     # run from the repository root

The page holds the box tables (`occlusions.markdown_table`); the figure shows four synthetic
64x64 faces, one per row, with each of `occlusions.FACE_OCCLUSIONS` as a column.
tests/test_occlusions.py fails when the page's table no longer matches the code.
"""

from __future__ import annotations

import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from a2i_jax import files, occlusions, visualize  # noqa: E402  pylint: disable=wrong-import-position
from a2i_jax.data import synthetic  # noqa: E402  pylint: disable=wrong-import-position

_HEAD = """# Completion masks

`a2i_jax/occlusions.py` makes the masks of `infer.py --mode=complete` and of the evaluation
table: float32 [N, S, S, 1], **1 = observed pixel, 0 = hidden** (filled by the generator).

Named boxes (top, left, bottom, right; bottom and right exclusive) are written in the code at
64x64 and scaled to S x S by rounding each edge e * S / 64 half up. `eyes`, `mouth` and `face`
have one table per face dataset: `lfw` (derived from where funnelled LFW faces put their
features under the LFW builder's 150x150 centre crop of the 250x250 images) and `synthetic`
(measured on rendered faces; they sit lower). They take no default: `make_mask`, `make_masks`
and `regions_for` need `dataset=` (a run's `trained.config.data.name`) for them, and refuse a
face region without it; the halves and the random regions need none. Datasets other than these
two get the halves and the random regions only (`occlusions_for(name)`). A run that trains on centre
crops (`config.data.augment.crop_size` below `config.data.image_size`) is scored on centre crops:
`eyes`, `mouth` and `face` are then the whole image's boxes, cropped with it (`crop_from`); the
halves and the random regions are the crop's.

"""

_TAIL = """
Random regions, any dataset, one per image, fully inside the image. Image i's region depends
on `seed` and i alone, not on how many images are asked for; each name draws from its own
streams (`make_masks`), so no two names or seeds share their regions:

| name | hidden region at S x S |
|---|---|
| `block8` | one square of side round(8 * S / 64) (8 at 64x64, 4 at 32x32) |
| `block16` | one square of side round(16 * S / 64) (16 at 64x64, 8 at 32x32) |
| `random_rect` | height and width each uniform in [ceil(S / 4), floor(S / 2)] |

![the named masks on synthetic faces](occlusions_synthetic.png)

Columns: """ + ", ".join(f"`{n}`" for n in occlusions.FACE_OCCLUSIONS) + """; hidden pixels \
tinted magenta.
Regenerate this page and the figure with `python docs/make_occlusions.py`.
"""


def main(docs_dir: str = os.path.join(ROOT, "docs")) -> None:
  """Writes the page and the figure into `docs_dir`."""
  size, rows = 64, 4
  attrs = synthetic.sample_attributes(np.random.default_rng(3), rows)
  images, _ = synthetic.render(attrs, np.random.default_rng(4), size)
  cols = [occlusions.overlay(images, occlusions.make_mask(n, size, rows, dataset="synthetic"))
          for n in occlusions.FACE_OCCLUSIONS]
  visualize.save_grid(visualize.stack_columns(cols),
                      os.path.join(docs_dir, "occlusions_synthetic.png"), len(cols), scale=1)
  files.atomic_write(os.path.join(docs_dir, "occlusions.md"),
                     _HEAD + occlusions.markdown_table() + _TAIL)


if __name__ == "__main__":
  main()
