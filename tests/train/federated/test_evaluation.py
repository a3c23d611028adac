"""Federated evaluation from histograms of the log-odds: the AUROC read from the histogram is
within its stated binning error of the exact AUROC; accuracy at ½ is exact; a site's histogram
holds a fixed number of counts whatever its number of patients; malformed replies are refused."""

from __future__ import annotations

import numpy as np
import pytest

from medpriv.metrics import auroc
from medpriv.train.federated.evaluation import (
    BINS,
    ScoreHistogram,
    exposure,
    federated_exposure,
    federated_utility,
)


def _scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.15
    logits = rng.normal(size=n) + 1.4 * labels - 1.8
    return logits, labels.astype(int)


@pytest.mark.parametrize("seed", range(5))
def test_the_histogram_auroc_is_within_its_binning_error_and_accuracy_is_exact(seed: int):
    p, y = _scores(3000, seed)
    utility = ScoreHistogram.of(p, y).utility()
    exact = auroc(y, p)
    assert abs(utility["auroc"] - exact) <= utility["auroc_binning_error"] + 1e-12
    assert 0 < utility["auroc_binning_error"] < 0.005
    assert utility["accuracy"] == pytest.approx(np.mean((p >= 0) == y.astype(bool)))
    assert utility["n"] == 3000 and utility["positives"] == int(y.sum())


def test_sites_add_up_and_each_keeps_its_own_figure():
    sites = {name: _scores(800, seed) for seed, name in enumerate(("north", "south", "east"))}
    histograms = {name: ScoreHistogram.of(p, y) for name, (p, y) in sites.items()}
    found = federated_utility(histograms)
    p = np.concatenate([s[0] for s in sites.values()])
    y = np.concatenate([s[1] for s in sites.values()])
    combined = found["combined"]
    assert abs(combined["auroc"] - auroc(y, p)) <= combined["auroc_binning_error"] + 1e-12
    assert set(found["sites"]) == set(sites) and combined["n"] == 2400
    for name, (p_site, y_site) in sites.items():
        assert found["sites"][name]["auroc"] == pytest.approx(
            ScoreHistogram.of(p_site, y_site).utility()["auroc"]
        )
        assert found["sites"][name]["n"] == len(y_site)


def test_a_reply_holds_counts_only_and_a_malformed_one_is_refused():
    p, y = _scores(57, 0)
    metrics = ScoreHistogram.of(p, y).to_metrics()
    assert set(metrics) == {"positives", "negatives"}
    assert all(len(counts) == BINS for counts in metrics.values())  # not one value per patient
    assert ScoreHistogram.from_metrics(metrics).utility()["n"] == 57
    for bad in ({"positives": [1, 2]}, {"positives": [-1] * BINS, "negatives": [0] * BINS}, {}):
        with pytest.raises(ValueError):
            ScoreHistogram.from_metrics(bad)
    one_class = ScoreHistogram.of(np.array([-1.2, 0.7]), np.array([0, 0])).utility()
    assert one_class["auroc"] is None and one_class["accuracy"] == 0.5


def test_membership_exposure_reads_auc_and_tpr_at_low_fpr_at_bin_edges():
    rng = np.random.default_rng(0)
    members, others = rng.normal(1.0, 1.0, 4000), rng.normal(0.0, 1.0, 4000)
    scores = np.concatenate([members, others])
    labels = np.concatenate([np.ones(4000, int), np.zeros(4000, int)])
    found = exposure(ScoreHistogram.of(scores, labels))
    assert abs(found["auc"] - auroc(labels, scores)) <= found["auc_binning_error"] + 1e-12
    for level, tpr in found["tpr_at_fpr"].items():
        # a threshold with FPR at most the level exists at a bin edge: check it exactly
        cut = np.quantile(others, 1 - float(level))
        assert tpr <= np.mean(members >= cut) + 0.02  # at most the exact rate at that FPR
        assert tpr >= 0.0
    assert found["members"] == found["non_members"] == 4000
    empty = exposure(ScoreHistogram.of(members, np.ones(4000, int)))
    assert empty["auc"] is None and empty["tpr_at_fpr"] == {}
    both = federated_exposure({"a": ScoreHistogram.of(scores, labels)})
    assert both["combined"]["auc"] == found["auc"] and "threat_model" in both


def test_a_deployment_whose_sites_returned_no_held_out_patients_still_writes_its_report(tmp_path):
    """No site returned held-out figures (all failed, or none holds held-out patients): the
    results document says so with null figures, passes the schema and renders — the run's
    weights and history are not lost to a crash at the end."""
    import json
    from dataclasses import asdict

    from medpriv.config import DataConfig, SplitConfig
    from medpriv.data.sources import load_dataset
    from medpriv.privacy.statement import PrivacySpent
    from medpriv.report.files import write_reports
    from medpriv.results import results_json
    from medpriv.train.federated.client import LocalRecipe
    from medpriv.train.federated.job import FederatedJob
    from medpriv.train.federated.outcome import federated_results

    recipe = LocalRecipe(hidden=(), epochs=1, batch_size=64, lr=0.05)  # the rule's logistic model
    job = FederatedJob(
        data=asdict(DataConfig(spec="synthetic:300")),
        split=asdict(SplitConfig()),
        seed=0,
        recipe=recipe.to_config(),
        strategy="fedavg",
        rounds=1,
        fraction=1.0,
        min_clients=1,
        out=str(tmp_path),
    )
    document = federated_results(
        job,
        dataset=load_dataset(job.data_config()),
        recipe=recipe,
        strategy="fedavg",
        sizes={"north": 40},
        history=[],
        histograms={},
        evaluation={**federated_utility({}), "missing": {"north": "failed"}},
        exposure=federated_exposure({}),
        spent=PrivacySpent(),
        train_seconds=1.0,
    )
    written = json.loads(results_json(document))
    utility = written["runs"][0]["utility"]
    assert utility["auroc"] is None and "too few held-out patients" in utility["note"]
    write_reports(written, tmp_path)
    assert "fedavg seed=0" in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert (tmp_path / "report.md").read_text(encoding="utf-8").startswith("# medpriv report")
