"""The console summary shows attack figures and warns loudly on a failed ε audit."""

from __future__ import annotations

import pytest

from medpriv.console import print_summary


def _run(name: str, epsilon: float | None, bound: float, consistent: bool | None) -> dict:
    return {
        "name": name,
        "utility": {
            "auroc": 0.8,
            "auroc_ci95": [0.7, 0.9],
            "auprc": 0.5,
            "accuracy": 0.9,
            "f1": 0.4,
            "brier": 0.1,
        },
        "privacy": {"epsilon": epsilon, "delta": None if epsilon is None else 1e-5},
        "cost": {"train_seconds": 1.0},
        "attacks": {
            "mia_lira": {"auc": 0.61, "tpr_at_fpr": {"0.001": 0.012, "0.01": 0.034}},
            "audit": {
                "epsilon_lower_bound": bound,
                "consistent": consistent,
                "deciding": "black_box" if epsilon is None else "white_box",
                "verdict": "no claim" if epsilon is None else "contradicted",
                "black_box": {"epsilon_lower_bound": bound, "max_demonstrable": 3.8},
                **({} if epsilon is None else {"white_box": {"epsilon_lower_bound": bound}}),
            },
        },
    }


def test_summary_has_attack_columns_and_warns_on_an_inconsistent_audit(
    capsys: pytest.CaptureFixture[str],
):
    document = {
        "dataset": {"name": "toy"},
        "runs": [_run("baseline seed=0", None, 0.4, None), _run("dp-sgd eps=1", 1.0, 2.5, False)],
    }
    print_summary(document)
    out, err = capsys.readouterr()
    assert "LiRA TPR @ 0.1% FPR" in out and "0.012" in out and "Audit ε̂ (white-box)" in out
    assert "Worst-case patient ε̂" in out and "can show ≤ 3.80" in out
    assert "not private" in out and "0.800" in out
    assert "WARNING: dp-sgd eps=1" in err and "bounds ε below by 2.50" in err
    assert "CONTRADICTS the claim" in err
    assert "baseline" not in err


def test_summary_averages_seeds(capsys: pytest.CaptureFixture[str]):
    runs = [_run(f"baseline seed={s}", None, 0.4, None) for s in range(3)]
    runs[1]["utility"]["auroc"] = 0.9
    print_summary({"dataset": {"name": "toy"}, "runs": runs})
    out, _ = capsys.readouterr()
    assert "mean ± SD over 3 seeds" in out and "0.833±0.058" in out


def test_summary_shows_the_largest_epsilon_over_seeds(capsys: pytest.CaptureFixture[str]):
    runs = [_run(f"dp-sgd eps=1 seed={s}", eps, 0.1, True) for s, eps in enumerate((0.9, 1.4))]
    print_summary({"dataset": {"name": "toy"}, "runs": runs})
    out, err = capsys.readouterr()
    assert "ε: the largest over seeds" in out and "1.4" in out and "1.15" not in out
    assert "NO PRIVACY GUARANTEE" not in err


def test_summary_says_a_model_with_reproducible_noise_has_no_guarantee(
    capsys: pytest.CaptureFixture[str],
):
    replayable = _run("dp-logreg eps=1 seed=0", 1.0, 0.1, True)
    replayable["privacy"]["noise"] = "reproducible"
    fresh = _run("dp-sgd eps=1 seed=0", 1.0, 0.1, True)
    fresh["privacy"]["noise"] = "csprng"
    print_summary({"dataset": {"name": "toy"}, "runs": [replayable, fresh]})
    out, err = capsys.readouterr()
    assert "NO PRIVACY GUARANTEE: dp-logreg eps=1: trained with reproducible noise" in err
    assert "dp-sgd" not in err and "NO GUARANTEE" in out


def test_the_cohort_card_says_its_counts_are_not_protected(capsys: pytest.CaptureFixture[str]):
    from medpriv.console import print_cohort
    from tests.conftest import make_toy_dataset

    print_cohort(make_toy_dataset(50))
    _, err = capsys.readouterr()
    assert "600" not in err and "50 records" in err
    assert "exact counts are computed from every record without noise" in err
