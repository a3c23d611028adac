"""`hgb`: scikit-learn's HistGradientBoostingClassifier, the strongest non-private tabular
reference, as a built-in estimator method (`medpriv.train.estimator`): fitted on the feature
table itself (native categorical support and missing values, no one-hot or imputation), early
stopping on a random tenth of the training rows, Platt-calibrated on the validation patients
when asked; attack reference models are refits of the same recipe on random halves (one by
one)."""

from __future__ import annotations

from sklearn.ensemble import HistGradientBoostingClassifier

from medpriv.train.base import TRAINERS
from medpriv.train.estimator import EstimatorTrainer, Factory

# scikit-learn's defaults, with early stopping always on (on a tenth of the training rows)
HGB_SETTINGS = {
    "learning_rate": 0.1,
    "max_iter": 300,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 20,
    "l2_regularization": 0.0,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 10,
    "categorical_features": "from_dtype",  # the table's categorical columns
}


def hgb() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(**HGB_SETTINGS)


@TRAINERS.register("hgb")
class HGBTrainer(EstimatorTrainer):
    method = "hgb"

    def __init__(self) -> None:
        super().__init__("medpriv.train.hgb:hgb", model_input="table")

    def factory(self) -> Factory:
        return hgb
