"""`hgb`: scikit-learn's gradient-boosted trees as a medpriv method — the same splits and
preprocessing contract, a seed that fixes the fit, optional Platt calibration on validation,
and no privacy claim."""

from __future__ import annotations

import numpy as np

from medpriv.config import TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.train.base import get_trainer
from medpriv.train.hgb import CAPACITIES, HGB_SETTINGS, ValidatedHGB
from tests.conftest import make_toy_dataset


def test_hgb_fits_on_training_patients_reproducibly_and_claims_nothing():
    splits = split_by_unit(make_toy_dataset(900), seed=0)
    trainer = get_trainer("hgb")
    first = trainer.fit(splits=splits, config=TrainConfig(), seed=3)
    again = trainer.fit(splits=splits, config=TrainConfig(), seed=3)
    np.testing.assert_array_equal(first.margin(splits.test), again.margin(splits.test))
    assert first.privacy.epsilon is None and not first.privacy.is_private
    assert first.params["early_stopping"] is True and 1 <= first.params["iterations"] <= 300
    assert {k: first.params[k] for k in HGB_SETTINGS} == HGB_SETTINGS
    assert first.params["max_leaf_nodes"] in CAPACITIES
    assert first.params["capacities"] == list(CAPACITIES)
    assert first.params["calibration"] is None
    calibrated = trainer.fit(splits=splits, config=TrainConfig(calibrate=True), seed=3)
    assert calibrated.params["calibration"] is not None
    # Platt scaling is monotone: the ranking (and so the AUROC) is the fit's own
    order = np.argsort(first.margin(splits.test))
    assert np.all(np.diff(calibrated.margin(splits.test)[order]) >= -1e-9)


def test_hgb_stops_early_on_the_validation_patients_and_trains_on_every_training_one(
    monkeypatch,
):
    from sklearn.ensemble import HistGradientBoostingClassifier

    splits = split_by_unit(make_toy_dataset(900), seed=0)
    seen: list[dict] = []
    fit = HistGradientBoostingClassifier.fit

    def spy(self, x, y, sample_weight=None, **validation):
        seen.append({"rows": len(x), "leaves": self.max_leaf_nodes, **validation})
        return fit(self, x, y, sample_weight, **validation)

    monkeypatch.setattr(HistGradientBoostingClassifier, "fit", spy)
    get_trainer("hgb").fit(splits=splits, config=TrainConfig(), seed=0)
    assert [s["leaves"] for s in seen] == list(CAPACITIES)  # every candidate tree size
    for candidate in seen:
        assert candidate["rows"] == len(splits.train)
        assert len(candidate["X_val"]) == len(splits.val)
        np.testing.assert_array_equal(candidate["y_val"], splits.val.labels)


def test_hgb_keeps_the_tree_size_with_the_lowest_validation_log_loss():
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 5))
    y = (x[:, 0] * x[:, 1] + x[:, 2] + rng.normal(size=1200) > 0).astype(int)
    x_train, y_train, x_val, y_val = x[:900], y[:900], x[900:], y[900:]
    model = ValidatedHGB(random_state=0).fit(x_train, y_train, X_val=x_val, y_val=y_val)
    losses = {
        leaves: log_loss(
            y_val,
            HistGradientBoostingClassifier(
                max_leaf_nodes=leaves, early_stopping=True, random_state=0
            )
            .fit(x_train, y_train, X_val=x_val, y_val=y_val)
            .predict_proba(x_val),
        )
        for leaves in CAPACITIES
    }
    assert model.max_leaf_nodes_ == min(losses, key=losses.get)
    np.testing.assert_array_equal(
        model.predict_proba(x_val), model.best_estimator_.predict_proba(x_val)
    )
    assert ValidatedHGB(random_state=0).fit(x_train, y_train).max_leaf_nodes_ == 31
