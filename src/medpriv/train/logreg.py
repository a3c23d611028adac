"""`logreg`: a non-private L2-regularized logistic-regression reference (scikit-learn, Newton's
method with a Cholesky solve: exact in a few steps where lbfgs crawls on one-hot columns), as a
built-in estimator method (`medpriv.train.estimator`), its C from the recipe (`--logreg-c`).
Its attack reference models are refits of the same recipe, one by one: with Newton-Cholesky
that is faster than one stacked problem (`benchmarks/reference_models.py`)."""

from __future__ import annotations

from typing import Any

from sklearn.linear_model import LogisticRegression

from medpriv.config import LOGREG_RECIPE, TrainConfig
from medpriv.train.base import TRAINERS
from medpriv.train.estimator import EstimatorTrainer

MAX_ITER = 200  # Newton steps; it converges in about ten


@TRAINERS.register("logreg")
class LogRegTrainer(EstimatorTrainer):
    """Fits once (Newton-Cholesky); nothing to resume (`checkpoint`/`resume` unused)."""

    method = "logreg"
    recipe = LOGREG_RECIPE

    def __init__(self) -> None:
        super().__init__("sklearn.linear_model:LogisticRegression")

    def estimator(self, config: TrainConfig, seed: int) -> Any:
        return LogisticRegression(
            C=config.logreg_c, solver="newton-cholesky", max_iter=MAX_ITER, random_state=seed
        )
