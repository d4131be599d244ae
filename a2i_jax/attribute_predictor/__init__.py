"""A small attribute-prediction CNN that scores generated images (attribute fidelity).

It is trained on the training split of whichever dataset the generator used and saved in the
generator's workdir (`workdir/attribute_predictor/`). Generated samples are then scored
against the attributes they were generated from: accuracy for binary attributes, Pearson
correlation for continuous ones, each beside a chance baseline and beside the predictor's
own score on the same real test images (the ceiling a perfect generator could reach;
`evaluation.attribute_report`).

Targets: binary columns are mapped from their two values (the smallest and largest in the
training split, e.g. {0, 1} or {-1, +1}) to {0, 1} and trained with binary cross-entropy;
continuous columns are standardised with the training mean and standard deviation and trained
with squared error. `predict` returns values in the dataset's own scale: continuous columns
un-standardised, binary columns as low + P(high) * (high - low), i.e. the probability of the
high value for {0, 1} attributes. A binary prediction counts as the high value when it is
at least the midpoint (low + high) / 2, the same threshold applied to targets.

No augmentation: a horizontal flip would swap asymmetric attributes.

The package: `network` (the CNN, `Predictor`, `predict`), `training` (`train_predictor`),
`scoring` (fidelity, correlations, sweeps) and `storage` (save, load, `load_or_train`).
"""

from a2i_jax.attribute_predictor.network import (AttributeNet, Predictor, PredictorMeta,
                                                 check_predictor, predict)
from a2i_jax.attribute_predictor.scoring import (_json_safe, attribute_index, fidelity, pearson,
                                                 score, spearman, sweep_response)
from a2i_jax.attribute_predictor.storage import (PREDICTOR_DIR, load_or_train, load_predictor,
                                                 predictor_dir, save_predictor)
from a2i_jax.attribute_predictor.training import train_predictor

__all__ = [
    "AttributeNet", "PREDICTOR_DIR", "Predictor", "PredictorMeta", "attribute_index",
    "check_predictor", "fidelity", "load_or_train", "load_predictor", "pearson", "predict", "predictor_dir",
    "save_predictor", "score", "spearman", "sweep_response", "train_predictor",
]
