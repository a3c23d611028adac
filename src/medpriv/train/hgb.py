"""`hgb`: scikit-learn's HistGradientBoostingClassifier, the strongest non-private tabular
reference, as a built-in estimator method (`medpriv.train.estimator`): fitted on the feature
table itself (native categorical support and missing values, no one-hot or imputation), early
stopping on the validation patients (every training patient is trained on), Platt-calibrated
on the validation patients when asked; attack reference models are refits of the same recipe
on random halves (one by one)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from medpriv.train.base import TRAINERS
from medpriv.train.estimator import EstimatorTrainer, Factory

# scikit-learn's defaults, with early stopping always on: on the validation patients, like the
# MLP baseline's (`HGBTrainer.fit_options`), so every training patient is trained on;
# `validation_fraction` is the fallback of a bare `hgb()` fitted without them
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

    def fit_options(self, x_val: Any, y_val: np.ndarray) -> dict[str, Any]:
        """Early stopping on the validation patients (never the test patients)."""
        return {"X_val": x_val, "y_val": y_val}
