"""`logreg`: a non-private L2-regularized logistic-regression reference (scikit-learn)."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from medpriv.config import LOGREG_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import Splits
from medpriv.metrics import auroc
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import TRAINERS, Cost, TrainedModel, Trainer
from medpriv.train.calibration import maybe_calibrate
from medpriv.train.loop import EpochCallback


@dataclass
class LinearScorer:
    """Scores design matrices with a fitted linear model."""

    estimator: LogisticRegression

    def margin(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.decision_function(x)


@TRAINERS.register("logreg")
class LogRegTrainer(Trainer):
    """Fits once (lbfgs); nothing to resume, so `checkpoint`/`resume` are accepted and unused."""

    method = "logreg"
    recipe = LOGREG_RECIPE

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
        config = config.resolved(self.recipe)
        pre = Preprocessor(splits.train.schema).fit(splits.train.features)
        estimator = LogisticRegression(C=config.logreg_c, max_iter=2000, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(pre.transform(splits.train.features), splits.train.labels)
        x_val = pre.transform(splits.val.features)
        scorer, calibration = maybe_calibrate(
            LinearScorer(estimator), x_val, splits.val.labels, calibrate=bool(config.calibrate)
        )
        val_margin = scorer.margin(x_val)
        record = {"epoch": 1, "val_auroc": auroc(splits.val.labels, val_margin)}
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
                "C": config.logreg_c,
                "iterations": int(estimator.n_iter_[0]),
                "calibration": calibration,
            },
        )
