"""medpriv's private methods as scikit-learn classifiers, for notebooks.

`DPSGDClassifier` (the `dp-sgd` method) and `DPLogisticRegression` (`dp-logreg`) follow
scikit-learn's conventions — parameters set in `__init__` and kept as given, `fit(X, y)`
returns the estimator, learned state ends in `_`, `predict_proba` / `decision_function` /
`predict` — and run exactly the trainers `medpriv run` runs: the same recipe rule, mechanism,
accountant and privacy statement (`privacy_spent_`).

What a notebook user must know, said here and in every `privacy_spent_`:

* **The privacy unit** is one row, or one value of `groups` (e.g. the patient id): pass
  `groups` whenever a patient can have several rows.
* **Validation units.** Private preprocessing, the output bias's initial value and calibration
  need patients the guarantee does not cover: `fit` holds out `validation_fraction` of the units
  (stratified by label, at least one of each class) and trains on the rest. ε covers the training
  units; the held-out units are not protected (`privacy_spent_.unprotected` says so).
* **Noise** comes from the operating system's CSPRNG on every fit and is never recorded, so two
  fits with the same `random_state` differ: `random_state` fixes the held-out units and the
  initial weights only. (scikit-learn's idempotence check does not apply.)
* Inputs are numeric (missing values allowed: imputed, with indicators); binary targets only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from medpriv.config import PrivacyConfig, TrainConfig
from medpriv.data.dataset import Schema, TabularDataset
from medpriv.data.splits import split_train_val
from medpriv.train.base import get_trainer


def _frame(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])


class PrivateClassifier(ClassifierMixin, BaseEstimator):
    """What `DPSGDClassifier` and `DPLogisticRegression` share: fit through a medpriv trainer,
    score through its `TrainedModel`."""

    method: ClassVar[str] = ""

    def _configs(self) -> tuple[TrainConfig, PrivacyConfig]:
        raise NotImplementedError

    def fit(self, X: Any, y: Any, groups: Any = None) -> PrivateClassifier:
        """Train on the units not held out; `groups` names each row's privacy unit."""
        x, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float64)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(
                f"Only binary classification is supported: {type(self).__name__} needs y with "
                f"two classes, got {len(self.classes_)}"
                + (" (one class is present: nothing to learn)" if len(self.classes_) < 2 else "")
            )
        labels = (y == self.classes_[1]).astype(np.int64)
        units = np.arange(len(y)) if groups is None else np.asarray(groups)
        if units.shape != (len(y),):
            raise ValueError(f"groups must hold one unit id per row ({len(y)}), got {units.shape}")
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        columns = _frame(x)
        data = TabularDataset(
            name="fit",
            features=columns,
            labels=labels,
            unit_ids=units,
            schema=Schema(numeric=tuple(columns.columns), categorical=()),
            unit_name="unit",
        )
        splits = split_train_val(data, val_fraction=self.validation_fraction, seed=seed)
        config, privacy = self._configs()
        model = get_trainer(self.method).fit(
            splits=splits, config=config, privacy=privacy, seed=seed
        )
        self.model_ = model
        self.privacy_spent_ = model.privacy
        self.recipe_ = dict(model.params.get("recipe", {}))
        self.history_ = list(model.history)
        self.n_train_units_ = splits.train.n_units
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """The log-odds of `classes_[1]`."""
        check_is_fitted(self)
        x = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64)
        return self.model_.margin(_frame(x))

    def predict_proba(self, X: Any) -> np.ndarray:
        positive = expit(self.decision_function(X))
        return np.column_stack([1 - positive, positive])

    def predict(self, X: Any) -> np.ndarray:
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(int)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.classifier_tags.multi_class = False
        tags.non_deterministic = True  # fresh CSPRNG noise on every fit
        return tags


class DPSGDClassifier(PrivateClassifier):
    """DP-SGD (medpriv's `dp-sgd`): Poisson sampling, per-unit clipping at `max_grad_norm`,
    Gaussian noise calibrated to (`target_epsilon`, `delta`) by the `accountant`. Fields left
    None (`hidden`, `epochs`, `batch_size`, `lr`) come from medpriv's public recipe rule
    (`recipe_` says which and why); δ defaults to a power of ten below 1/(10 n)."""

    method = "dp-sgd"

    def __init__(
        self,
        target_epsilon: float = 1.0,
        *,
        delta: float | None = None,
        max_grad_norm: float = 1.0,
        accountant: str = "prv",
        hidden: tuple[int, ...] | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        calibrate: bool = True,
        validation_fraction: float = 0.15,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.target_epsilon = target_epsilon
        self.delta = delta
        self.max_grad_norm = max_grad_norm
        self.accountant = accountant
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.calibrate = calibrate
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _configs(self) -> tuple[TrainConfig, PrivacyConfig]:
        train = TrainConfig(
            hidden=None if self.hidden is None else tuple(self.hidden),
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            calibrate=self.calibrate,
        )
        privacy = PrivacyConfig(
            target_epsilon=self.target_epsilon,
            delta=self.delta,
            max_grad_norm=self.max_grad_norm,
            accountant=self.accountant,
        )
        return train, privacy


class DPLogisticRegression(PrivateClassifier):
    """L2-regularised logistic regression by objective perturbation (medpriv's `dp-logreg`;
    pure ε-DP for replacing one unit's row): rows clipped to `data_norm` (fixed in advance,
    never computed from the data), inverse regularisation `C`."""

    method = "dp-logreg"

    def __init__(
        self,
        target_epsilon: float = 1.0,
        *,
        C: float | None = None,  # scikit-learn's name
        data_norm: float | None = None,
        calibrate: bool = True,
        validation_fraction: float = 0.15,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.target_epsilon = target_epsilon
        self.C = C
        self.data_norm = data_norm
        self.calibrate = calibrate
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _configs(self) -> tuple[TrainConfig, PrivacyConfig]:
        train = TrainConfig(logreg_c=self.C, calibrate=self.calibrate)
        privacy = PrivacyConfig(target_epsilon=self.target_epsilon, data_norm=self.data_norm)
        return train, privacy
