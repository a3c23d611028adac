"""medpriv's private methods as scikit-learn classifiers (`medpriv.DPSGDClassifier`,
`medpriv.DPLogisticRegression`): scikit-learn's conventions where they apply, and the same
trainer, recipe and privacy statement as `medpriv run`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import check_estimator

import medpriv
from medpriv.classifiers import DPLogisticRegression, DPSGDClassifier
from medpriv.data.dataset import Schema, TabularDataset
from medpriv.data.splits import split_train_val
from medpriv.metrics import auroc
from tests.conftest import make_toy_dataset

# Checks that fit twice and compare: a private fit draws fresh CSPRNG noise every time (the
# guarantee rests on noise nobody can replay), so two fits differ by design.
FRESH_NOISE = "DP noise is drawn fresh from the CSPRNG on every fit: two fits differ"
COMPARES_TWO_FITS = (
    "check_fit_idempotent",
    "check_classifier_data_not_an_array",
    "check_supervised_y_2d",
)
# scikit-learn itself skips this one for estimators tagged non-deterministic.
SKIPPED_BY_SCIKIT_LEARN = {"check_pipeline_consistency"}


def table(n: int, *, seed: int = 0, records_per_unit: int = 1):
    data = make_toy_dataset(n, seed=seed, records_per_unit=records_per_unit)
    x = data.features[["x1", "x2", "noise"]].to_numpy()  # numeric, with missing values
    y = np.where(data.labels == 1, "died", "alive")
    return x, y, data.unit_ids


@pytest.mark.parametrize("estimator", [DPSGDClassifier(), DPLogisticRegression()], ids=repr)
def test_scikit_learn_check_estimator_passes_where_it_applies(estimator):
    results = check_estimator(
        estimator,
        on_fail=None,
        expected_failed_checks=dict.fromkeys(COMPARES_TWO_FITS, FRESH_NOISE),
    )
    failed = {
        r["check_name"]: repr(r["exception"])[:300] for r in results if r["status"] == "failed"
    }
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert not failed
    assert skipped <= SKIPPED_BY_SCIKIT_LEARN
    assert len(results) > 40  # the whole suite ran


def test_dp_sgd_classifier_is_the_cli_trainer_with_its_statement():
    x, y, units = table(1500)
    x_test, y_test, _ = table(600, seed=1)
    model = DPSGDClassifier(target_epsilon=4.0, random_state=0).fit(x, y, groups=units)
    spent = model.privacy_spent_
    assert list(model.classes_) == ["alive", "died"]
    assert 3.9 < spent.epsilon <= 4.0 + 1e-6 and spent.sampling == "poisson"
    assert spent.delta < 1 / model.n_train_units_ and spent.noise == "csprng"
    assert model.n_train_units_ == pytest.approx(0.85 * 1500, abs=3)
    assert any("validation" in text for text in spent.unprotected)
    assert model.recipe_["reason"].startswith(f"n = {model.n_train_units_:,}, ε = 4")
    proba = model.predict_proba(x_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert auroc((y_test == "died").astype(int), proba[:, 1]) > 0.75
    assert set(model.predict(x_test)) <= {"alive", "died"}
    assert model.history_ and "ε =" in spent.statement()


def test_noise_is_fresh_on_every_fit_and_random_state_fixes_the_rest():
    x, y, units = table(600)
    first = DPSGDClassifier(target_epsilon=2.0, random_state=3).fit(x, y, groups=units)
    again = DPSGDClassifier(target_epsilon=2.0, random_state=3).fit(x, y, groups=units)
    assert first.n_train_units_ == again.n_train_units_
    assert first.recipe_ == again.recipe_
    assert not np.allclose(first.decision_function(x), again.decision_function(x))


def test_the_privacy_unit_is_the_group():
    x, y, units = table(1200, records_per_unit=3)
    model = DPSGDClassifier(target_epsilon=2.0, random_state=0).fit(x, y, groups=units)
    assert model.n_train_units_ == pytest.approx(0.85 * 400, abs=3)
    assert any("dropped to keep one per unit" in c for c in model.privacy_spent_.caveats)
    with pytest.raises(ValueError, match="one unit id per row"):
        DPSGDClassifier().fit(x, y, groups=units[:-1])


def test_dp_logistic_regression_spends_pure_epsilon_for_replacement():
    x, y, units = table(1500)
    model = DPLogisticRegression(target_epsilon=1.0).fit(x, y, groups=units)
    spent = model.privacy_spent_
    assert spent.epsilon == pytest.approx(1.0) and spent.delta == 0.0
    assert spent.adjacency == "replace" and spent.noise == "csprng"
    assert "replacing one unit's data" in spent.statement()


def test_held_out_units_keep_both_classes_on_both_sides():
    def units(labels: list[int]) -> TabularDataset:
        frame = pd.DataFrame({"x0": np.zeros(len(labels))})
        return TabularDataset(
            name="t",
            features=frame,
            labels=np.array(labels),
            unit_ids=np.arange(len(labels)),
            schema=Schema(numeric=("x0",), categorical=()),
        )

    labels = [0] * 20 + [1] * 3
    splits = split_train_val(units(labels), val_fraction=0.15, seed=0)
    assert set(splits.val.labels) == {0, 1} and set(splits.train.labels) == {0, 1}
    assert len(splits.val) == 3 + 1
    with pytest.raises(ValueError, match=r"val 0 positive / 1 negative \(a single class\)"):
        split_train_val(units([0, 0, 0, 0, 1]), val_fraction=0.15, seed=0)
    with pytest.raises(ValueError, match="validation_fraction"):
        split_train_val(units([0, 1] * 3), val_fraction=1.5, seed=0)


def test_import_medpriv_stays_light_and_exports_the_api():
    code = (
        "import sys, medpriv; "
        "assert not {'torch', 'sklearn', 'opacus'} & set(sys.modules), sorted(sys.modules); "
        "assert medpriv.DPSGDClassifier.__name__ == 'DPSGDClassifier'; "
        "assert callable(medpriv.audit)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = medpriv.nothing
