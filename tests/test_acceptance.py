"""Acceptance figures from the foundation issue, measured on the real and synthetic cohorts."""

import math
from pathlib import Path

import pytest

from medpriv.config import load_config
from medpriv.experiment import run_experiment
from medpriv.results import validate_results


def _run(tmp_path: Path, data: dict, methods: list[str]) -> dict:
    config = load_config(
        None,
        {
            "data": data,
            # utility on the whole training split (attacks train the target on half the pool)
            "run": {"methods": methods, "out": str(tmp_path), "bootstrap": 200, "attacks": []},
        },
    )
    document = run_experiment(config)
    assert validate_results(document) == []
    return document


def test_insurance_baseline_accuracy(insurance_csv: Path, tmp_path: Path):
    document = _run(
        tmp_path,
        {"spec": f"csv:{insurance_csv}", "target": "charges", "threshold": 15000},
        ["baseline"],
    )
    assert document["runs"][0]["utility"]["accuracy"] >= 0.90


def test_mimic_demo_pipeline(mimic_demo_dir: Path, tmp_path: Path):
    document = _run(tmp_path, {"spec": f"mimic3:{mimic_demo_dir}"}, ["baseline", "logreg"])
    assert document["dataset"]["n_records"] == document["dataset"]["n_units"] > 50
    for run in document["runs"]:
        assert run["utility"]["confusion_matrix"] is not None


@pytest.mark.slow
def test_synthetic_default_baseline_auroc(tmp_path: Path):
    document = _run(tmp_path, {"spec": "synthetic"}, ["baseline"])
    auroc = document["runs"][0]["utility"]["auroc"]
    assert 0.80 <= auroc <= 0.93, auroc
    flow = document["dataset"]["cohort_flow"]
    assert flow[0]["remaining"] == 10_000 and flow[-1]["remaining"] < 10_000


@pytest.mark.slow
def test_synthetic_attacks_baseline_leaks_more_than_dp_sgd(tmp_path: Path):
    """Issue 4 acceptance: `medpriv run --methods baseline,dp-sgd --epsilons 1` on synthetic."""
    config = load_config(
        None,
        {
            "data": {"spec": "synthetic"},
            "run": {
                "methods": ["baseline", "dp-sgd"],
                "epsilons": [1.0],
                "out": str(tmp_path),
                "bootstrap": 0,
                "progress": False,
            },
        },
    )
    document = run_experiment(config)
    assert validate_results(document) == []
    base, dp = (run["attacks"] for run in document["runs"])
    assert base["mia_lira"]["auc"] > dp["mia_lira"]["auc"]
    # ε = 1 allows TPR ≤ e·FPR + δ at any FPR; the DP model's noise is fresh each run, so its
    # TPR at 1% FPR is compared with that bound (plus sampling slack), not with the baseline's.
    assert dp["mia_lira"]["tpr_at_fpr"]["0.01"] <= math.e * 0.01 + 0.01
    assert abs(dp["mia_lira"]["auc"] - 0.5) <= 0.03
    assert dp["audit"]["epsilon_lower_bound"] <= 1.0 and dp["audit"]["consistent"] is True
