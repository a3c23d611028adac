"""`hgb`: scikit-learn's HistGradientBoostingClassifier, the strongest non-private tabular
reference, trained, measured and attacked like medpriv's own methods.

It fits on medpriv's preprocessing of the training patients (standardized numerics with missing
indicators, one-hot categoricals); its internal early stopping holds out a random tenth of the
training rows, and its log-odds are Platt-calibrated on the validation patients when asked.
Attack reference models are refits of the same recipe on random halves (one by one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from medpriv.config import PrivacyConfig, TrainConfig
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import Splits
from medpriv.metrics import auroc
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import TRAINERS, Cost, TrainedModel, Trainer
from medpriv.train.calibration import maybe_calibrate
from medpriv.train.loop import EpochCallback

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
}


@dataclass
class BoostedScorer:
    """Scores design matrices with a fitted gradient-boosted model (its raw log-odds)."""

    estimator: HistGradientBoostingClassifier

    def margin(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.decision_function(x), dtype=np.float64)


@TRAINERS.register("hgb")
class HGBTrainer(Trainer):
    """Fits once; nothing to resume, so `checkpoint`/`resume` are accepted and unused."""

    method = "hgb"

    def fit(
        self,
        *,
        splits: Splits,
        config: TrainConfig,
        privacy: PrivacyConfig | None = None,
        seed: int = 0,
        checkpoint: Path | None = None,
        resume: bool = False,
        on_epoch: EpochCallback | None = None,
    ) -> TrainedModel:
        start = time.perf_counter()
        pre = Preprocessor(splits.train.schema).fit(splits.train.features)
        estimator = HistGradientBoostingClassifier(**HGB_SETTINGS, random_state=seed)
        estimator.fit(pre.transform(splits.train.features), splits.train.labels)
        x_val = pre.transform(splits.val.features)
        scorer, calibration = maybe_calibrate(
            BoostedScorer(estimator), x_val, splits.val.labels, calibrate=bool(config.calibrate)
        )
        record = {"epoch": 1, "val_auroc": auroc(splits.val.labels, scorer.margin(x_val))}
        if on_epoch is not None:
            on_epoch(1, record)
        return TrainedModel(
            method=self.method,
            preprocessor=pre,
            scorer=scorer,
            history=[record],
            privacy=PrivacySpent(unit=splits.train.unit_name, sampling="none (full batch)"),
            cost=Cost(train_seconds=time.perf_counter() - start),
            params={
                **HGB_SETTINGS,
                "iterations": int(estimator.n_iter_),
                "calibration": calibration,
            },
        )
