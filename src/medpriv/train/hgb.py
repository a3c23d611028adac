"""`hgb`: scikit-learn's HistGradientBoostingClassifier, the strongest non-private tabular
reference, as a built-in estimator method (`medpriv.train.estimator`): fitted on the feature
table itself (native categorical support and missing values, no one-hot or imputation), its
tree size chosen and its boosting stopped early on the validation patients (every training
patient is trained on), Platt-calibrated on the validation patients when asked; attack
reference models are refits of the same procedure on random halves (one by one)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import log_loss

from medpriv.train.base import TRAINERS
from medpriv.train.estimator import EstimatorTrainer, Factory

# scikit-learn's defaults, with early stopping always on: on the validation patients, like the
# MLP baseline's (`HGBTrainer.fit_options`), so every training patient is trained on;
# `validation_fraction` is the fallback of a bare `hgb()` fitted without them
HGB_SETTINGS = {
    "learning_rate": 0.1,
    "max_iter": 300,
    "min_samples_leaf": 20,
    "l2_regularization": 0.0,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 10,
    "categorical_features": "from_dtype",  # the table's categorical columns
}
# Tree sizes (max_leaf_nodes) compared by log-loss on the validation patients: small trees for
# smooth risks, scikit-learn's default 31 for interactions. A model-selection step a careful
# analyst takes on validation patients (never on test patients); with no validation patients
# given, scikit-learn's default.
CAPACITIES = (7, 15, 31)
DEFAULT_CAPACITY = 31


class ValidatedHGB(ClassifierMixin, BaseEstimator):
    """HistGradientBoostingClassifier whose `max_leaf_nodes` is chosen among `capacities` by
    log-loss on the validation rows given to `fit` (`X_val`, `y_val`), each candidate stopped
    early on them; the chosen fit is `best_estimator_`, its size `max_leaf_nodes_`."""

    def __init__(
        self,
        capacities: tuple[int, ...] = CAPACITIES,
        learning_rate: float = 0.1,
        max_iter: int = 300,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        categorical_features: Any = "from_dtype",
        random_state: int | None = None,
    ) -> None:
        self.capacities = capacities
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.categorical_features = categorical_features
        self.random_state = random_state

    def _candidate(self, leaves: int) -> HistGradientBoostingClassifier:
        settings = {k: v for k, v in self.get_params().items() if k != "capacities"}
        return HistGradientBoostingClassifier(max_leaf_nodes=leaves, **settings)

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> ValidatedHGB:
        if X_val is None or y_val is None:
            best = self._candidate(DEFAULT_CAPACITY).fit(X, y)
        else:
            fits = [
                self._candidate(leaves).fit(X, y, X_val=X_val, y_val=y_val)
                for leaves in self.capacities
            ]
            losses = [log_loss(y_val, f.predict_proba(X_val), labels=f.classes_) for f in fits]
            best = fits[int(np.argmin(losses))]
        self.best_estimator_ = best
        self.max_leaf_nodes_ = int(best.max_leaf_nodes)
        self.classes_ = best.classes_
        self.n_iter_ = best.n_iter_
        if hasattr(best, "feature_names_in_"):
            self.feature_names_in_ = best.feature_names_in_
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        return self.best_estimator_.decision_function(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.best_estimator_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return self.best_estimator_.predict(X)


def hgb() -> ValidatedHGB:
    return ValidatedHGB(**HGB_SETTINGS)


@TRAINERS.register("hgb")
class HGBTrainer(EstimatorTrainer):
    method = "hgb"

    def __init__(self) -> None:
        super().__init__("medpriv.train.hgb:hgb", model_input="table")

    def factory(self) -> Factory:
        return hgb

    def fit_options(self, x_val: Any, y_val: np.ndarray) -> dict[str, Any]:
        """Tree size and early stopping on the validation patients (never the test ones)."""
        return {"X_val": x_val, "y_val": y_val}

    def settings(self, estimator: Any) -> dict[str, Any]:
        """The recorded settings, with the tree size the validation patients chose."""
        chosen = getattr(estimator, "max_leaf_nodes_", None)
        return {
            **super().settings(estimator),
            "capacities": list(estimator.capacities),
            **({"max_leaf_nodes": chosen} if chosen is not None else {}),
        }
