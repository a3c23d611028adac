import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medpriv.metrics import (
    auroc,
    bootstrap_auroc_ci,
    choose_threshold,
    confusion,
    curves,
    utility_metrics,
)


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    score = np.round(y * 0.8 + rng.normal(size=400), 1)  # rounding creates ties
    return y, 1 / (1 + np.exp(-score))


def test_auroc_matches_sklearn_with_ties(scored):
    y, prob = scored
    assert auroc(y, prob) == pytest.approx(roc_auc_score(y, prob), abs=1e-12)
    assert np.isnan(auroc(np.zeros(5), np.arange(5.0)))


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded(scored):
    y, prob = scored
    lo, hi = bootstrap_auroc_ci(y, prob, n_boot=400, seed=1)
    assert lo < auroc(y, prob) < hi and 0.02 < hi - lo < 0.2
    assert (lo, hi) == bootstrap_auroc_ci(y, prob, n_boot=400, seed=1)


def test_confusion_and_threshold_metrics():
    y = np.array([0, 0, 1, 1, 1])
    prob = np.array([0.1, 0.6, 0.4, 0.7, 0.9])
    assert confusion(y, prob, 0.5) == [[1, 1], [1, 2]]
    out = utility_metrics(y, prob, val_threshold=0.35, n_boot=50)
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert out["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["brier"] == pytest.approx(np.mean((prob - y) ** 2), abs=1e-6)
    assert out["auprc"] == pytest.approx(average_precision_score(y, prob), abs=1e-6)
    assert out["confusion_matrix_at_val_threshold"] == [[1, 1], [0, 3]]


def test_validation_threshold_maximizes_balanced_accuracy(scored):
    y, prob = scored
    t = choose_threshold(y, prob)
    grid = np.unique(prob)
    best = max(((prob >= g)[y == 1].mean() + (prob < g)[y == 0].mean()) / 2 for g in grid)
    assert ((prob >= t)[y == 1].mean() + (prob < t)[y == 0].mean()) / 2 == pytest.approx(best)


def test_curves_are_thinned_and_monotone(scored):
    y, prob = scored
    out = curves(y, prob, max_points=50)
    fpr, tpr = np.array(out["roc"]["fpr"]), np.array(out["roc"]["tpr"])
    assert len(fpr) <= 50 and fpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert out["pr"]["recall"][0] == 0
