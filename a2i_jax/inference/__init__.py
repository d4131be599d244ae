"""Using a trained model: restore it, sample, and infer latents by optimisation.

  from a2i_jax import inference
  trained = inference.load_trained("runs/synthetic")
  data = inference.load_data(trained)  # The run's dataset, as its model was trained on it.
  images = inference.sample(trained, data["test"].attributes[:8], key)["image"]

`restore` reads the model variables alone (no optimiser), `posterior` holds posterior inference
by optimisation, and `uses` what is built on it. Nothing here imports the training code
(docs/design.md §2.2); `load_data`'s split check is the resume's own,
`data.base.check_same_splits`.
"""

from a2i_jax.inference.posterior import (AttributePrior, InferenceOptions, infer_latents,
                                         make_inference_fns, resolve_energy)
from a2i_jax.inference.restore import (TrainedModel, load_data, load_run_config,
                                       load_run_data, load_trained, release_programs)
from a2i_jax.inference.uses import (complete, decode, edit, infer_attributes, options_for,
                                    prior_latents, progression, recognition_options,
                                    reconstruct, run_inference, sample, swap)
from a2i_jax.inputs import check_attributes, check_images, check_mask

__all__ = [
    "AttributePrior", "InferenceOptions", "TrainedModel", "check_attributes", "check_images",
    "check_mask", "complete", "decode", "edit", "infer_attributes", "infer_latents",
    "load_data", "load_run_config", "load_run_data", "load_trained", "make_inference_fns",
    "options_for", "prior_latents", "progression", "recognition_options", "reconstruct",
    "release_programs", "resolve_energy", "run_inference", "sample", "swap",
]
