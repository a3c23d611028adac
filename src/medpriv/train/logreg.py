"""`logreg`: a non-private L2-regularized logistic-regression reference (scikit-learn's lbfgs),
as a built-in estimator method (`medpriv.train.estimator`), its C from the recipe
(`--logreg-c`)."""

from __future__ import annotations

from typing import Any

from sklearn.linear_model import LogisticRegression

from medpriv.config import LOGREG_RECIPE, TrainConfig
from medpriv.train.base import TRAINERS
from medpriv.train.estimator import EstimatorTrainer


@TRAINERS.register("logreg")
class LogRegTrainer(EstimatorTrainer):
    """Fits once (lbfgs); nothing to resume, so `checkpoint`/`resume` are accepted and unused."""

    method = "logreg"
    recipe = LOGREG_RECIPE

    def __init__(self) -> None:
        super().__init__("sklearn.linear_model:LogisticRegression")

    def estimator(self, config: TrainConfig, seed: int) -> Any:
        return LogisticRegression(C=config.logreg_c, max_iter=2000, random_state=seed)
