"""The stacked logistic fit: each model is scikit-learn's at its optimum; logreg's reference
models come from it, on the target's preprocessing, calibrated when the target is."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from medpriv.attacks.runner import AttackPool, train_shadow_outputs
from medpriv.config import TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.train.base import get_trainer
from medpriv.train.stacked_logreg import fit_stacked_logistic
from tests.conftest import make_toy_dataset


def _sklearn(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, solver="newton-cholesky", tol=1e-8, max_iter=200).fit(x, y)


def test_each_stacked_model_is_sklearns_on_its_own_rows():
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=(800, 5)), (rng.random((800, 3)) < 0.1)]
    y = (rng.random(800) < 1 / (1 + np.exp(-(x[:, 0] - 2 * x[:, 5] - 1)))).astype(int)
    mask = rng.random((6, 800)) < 0.5
    for c in (0.05, 1.0, 50.0):
        fitted = fit_stacked_logistic(x, y, mask, c=c)
        for k in range(len(mask)):
            reference = _sklearn(x[mask[k]], y[mask[k]], c)
            assert np.abs(fitted.margins(x)[k] - reference.decision_function(x)).max() < 1e-5
        assert fitted.newton_steps < 30


def test_a_separable_problem_stays_finite_and_regularized():
    x = np.r_[np.full((20, 1), -1.0), np.full((20, 1), 1.0)]
    y = np.r_[np.zeros(20), np.ones(20)]
    fitted = fit_stacked_logistic(x, y, np.ones((2, 40), bool), c=100.0)
    reference = _sklearn(x, y, 100.0)
    assert np.isfinite(fitted.weights).all()
    assert np.allclose(fitted.weights[0], reference.coef_[0], rtol=1e-5)


def test_logreg_reference_models_are_stacked_and_match_one_by_one_fits():
    splits = split_by_unit(make_toy_dataset(500, seed=5), seed=5)
    pool = AttackPool.from_splits(splits)
    for calibrate in (False, True):
        config = TrainConfig(calibrate=calibrate)
        trainer = get_trainer("logreg")
        model = trainer.fit(splits=splits, config=config, seed=0)
        shadows = train_shadow_outputs(
            model, pool, splits, trainer=trainer, config=config, privacy=None, k=4, seed=3
        )
        design = model.preprocessor.transform
        x, x_val = design(pool.records.features), design(splits.val.features)
        c = config.resolved(trainer.recipe).logreg_c
        for k in range(4):
            one = _sklearn(x[shadows.in_mask[k]], pool.records.labels[shadows.in_mask[k]], c)
            expected = one.decision_function(x)
            if calibrate:
                from medpriv.train.calibration import Platt

                platt = Platt.fit(one.decision_function(x_val), splits.val.labels)
                expected = platt.apply(expected)
            assert np.abs(shadows.pool[k] - expected).max() < 1e-4
