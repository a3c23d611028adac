"""`logreg`: a non-private L2-regularized logistic-regression reference (scikit-learn, Newton's
method with a Cholesky solve: exact in a few steps where lbfgs crawls on one-hot columns), as a
built-in estimator method (`medpriv.train.estimator`), its C from the recipe (`--logreg-c`).
Its attack reference models are fitted all at once as one stacked problem
(`medpriv.train.stacked_logreg`), the same objective and the target's preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from medpriv.config import LOGREG_RECIPE, TrainConfig
from medpriv.data.dataset import TabularDataset
from medpriv.train.base import TRAINERS, TrainedModel
from medpriv.train.calibration import Platt
from medpriv.train.estimator import EstimatorTrainer
from medpriv.train.stacked_logreg import fit_stacked_logistic

MAX_ITER = 200  # Newton steps; it converges in about ten


@TRAINERS.register("logreg")
class LogRegTrainer(EstimatorTrainer):
    """Fits once (lbfgs); nothing to resume, so `checkpoint`/`resume` are accepted and unused."""

    method = "logreg"
    recipe = LOGREG_RECIPE

    def __init__(self) -> None:
        super().__init__("sklearn.linear_model:LogisticRegression")

    def estimator(self, config: TrainConfig, seed: int) -> Any:
        return LogisticRegression(
            C=config.logreg_c, solver="newton-cholesky", max_iter=MAX_ITER, random_state=seed
        )

    def reference_margins(
        self,
        model: TrainedModel,
        *,
        records: TabularDataset,
        in_mask: np.ndarray,
        val: TabularDataset,
        score: Sequence[TabularDataset],
        config: TrainConfig,
    ) -> list[np.ndarray]:
        """k logistic models in one stacked Newton problem on the target's design (and, when
        the target is Platt-calibrated, each calibrated on the validation patients)."""
        config = config.resolved(self.recipe)
        design = model.preprocessor.transform
        fitted = fit_stacked_logistic(
            design(records.features), records.labels, in_mask, c=float(config.logreg_c)
        )
        platts = [Platt()] * len(in_mask)
        if model.params.get("calibration") is not None:
            val_margins = fitted.margins(design(val.features))
            platts = [Platt.fit(m, val.labels) for m in val_margins]
        return [
            np.stack(
                [
                    p.apply(m)
                    for p, m in zip(platts, fitted.margins(design(part.features)), strict=True)
                ]
            )
            for part in score
        ]
