"""What a real federation ends in: the same results.json and report as `medpriv run`.

The ServerApp has the rounds' history, the privacy statement its plan and the SuperNodes'
reports produced, and the sites' score histograms of the best model on their held-out patients
(`federated.evaluation`). The utility block is computed by the same function as `medpriv run`
(`medpriv.metrics.utility_metrics`, `curves`) from the histograms expanded into one score per
held-out patient at its bin's centre — the histogram's own information, nothing per patient
leaves a site — so its AUROC carries the binning error stated beside it, and AUPRC, the Brier
score and the curves are binned too. The document is marked `"engine": "flower"`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from medpriv import __version__
from medpriv.config import (
    ExperimentConfig,
    FederatedConfig,
    RunConfig,
    TrainConfig,
)
from medpriv.data.dataset import TabularDataset
from medpriv.metrics import curves, utility_metrics
from medpriv.privacy.statement import PrivacySpent
from medpriv.results import run_entry
from medpriv.results_schema import UtilityRecord
from medpriv.train.base import Cost
from medpriv.train.federated.client import LocalRecipe
from medpriv.train.federated.evaluation import BINS, SPAN, ScoreHistogram
from medpriv.train.federated.job import FederatedJob
from medpriv.train.federated.server import best_of

ENGINE = "flower"
HELD_OUT_UNPROTECTED = (
    "each site's held-out patients: the histogram of their scores a site returns is exact "
    "counts, covered by no ε"
)
EXPOSURE_UNPROTECTED = (
    "the sites' membership-exposure histograms (exact counts of their training patients' "
    "scores under the released model), covered by no ε"
)
DATASET_NOTE = (
    "the coordinator's own table (its validation patients); the sites' training and held-out "
    "patients never left the sites"
)


@dataclass
class FederationOutcome:
    """The released global model as a run entry reads it (`medpriv.results.RunRecord`)."""

    method: str
    history: list[dict[str, Any]]
    privacy: PrivacySpent
    cost: Cost
    params: dict[str, Any] = field(default_factory=dict)


# the utility figures a run without held-out patients of both labels cannot measure (null):
# the schema's required fields, the confusion matrix aside (zero counts)
UNMEASURED = tuple(
    f.name
    for f in dataclasses.fields(UtilityRecord)
    if f.default is dataclasses.MISSING and f.name != "confusion_matrix"
)


def expanded(histogram: ScoreHistogram) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities): one score per held-out patient at its bin's centre."""
    centres = -SPAN + (np.arange(BINS) + 0.5) * (2 * SPAN / BINS)
    probabilities = 1 / (1 + np.exp(-centres))
    n_pos, n_neg = int(histogram.positives.sum()), int(histogram.negatives.sum())
    labels = np.concatenate([np.ones(n_pos, int), np.zeros(n_neg, int)])
    scores = np.concatenate(
        [
            np.repeat(probabilities, histogram.positives),
            np.repeat(probabilities, histogram.negatives),
        ]
    )
    return labels, scores


def federated_results(
    job: FederatedJob,
    *,
    dataset: TabularDataset,
    recipe: LocalRecipe,
    strategy: str,
    sizes: dict[str, int],
    history: list[dict[str, Any]],
    histograms: dict[str, ScoreHistogram],
    evaluation: dict[str, Any],
    exposure: dict[str, Any],
    spent: PrivacySpent,
    train_seconds: float,
    inversion: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
    bootstrap: int = 1000,
) -> dict[str, Any]:
    """The results.json document of a Flower run (one run: the job's method and seed);
    `train_seconds` is the rounds' wall time at the coordinator (after a resume, the resumed
    rounds only)."""
    total = ScoreHistogram.total(histograms.values())
    labels, scores = expanded(total)
    if len(np.unique(labels)) < 2:
        utility: dict[str, Any] = {
            **dict.fromkeys(UNMEASURED),
            "confusion_matrix": [[0, 0], [0, 0]],
            "n_test": len(labels),
            "note": "too few held-out patients came back from the sites (both labels needed)",
        }
        run_curves: dict[str, Any] = {}
    else:
        utility = utility_metrics(labels, scores, n_boot=bootstrap, seed=job.seed)
        run_curves = curves(labels, scores)
    utility["federated"] = evaluation  # combined and per-site, with the binning error
    best = best_of(history)  # the round the driver kept
    params = {
        **asdict(recipe),
        "hidden": list(recipe.hidden),
        "local_epochs": recipe.epochs,
        "epochs_run": len(history),
        "best_epoch": None if best is None else best["round"],
        "rounds": job.rounds,
        "strategy": strategy,
        "fraction": job.fraction,
        "min_clients": job.min_clients,
        "engine": ENGINE,
        "clients": dict(sizes),
        "secure_aggregation": job.secagg,
        "preprocessing": "fitted on the coordinator's validation patients",
    }
    up = int(sum(r.get("bytes_up") or 0 for r in history))
    down = int(sum(r.get("bytes_down") or 0 for r in history))
    model = FederationOutcome(
        method=job.method,
        history=history,
        privacy=replace(
            spent, unprotected=(*spent.unprotected, HELD_OUT_UNPROTECTED, EXPOSURE_UNPROTECTED)
        ),
        cost=Cost(
            train_seconds=train_seconds,
            bytes_communicated=up + down,
            bytes_up=up,
            bytes_down=down,
            epochs=len(history),
        ),
        params=params,
    )
    entry = run_entry(
        name=f"{job.method} seed={job.seed}",
        model=model,
        seed=job.seed,
        utility=utility,
        curves=run_curves,
        split_sizes={"train": int(sum(sizes.values())), "test": len(labels)},
    )
    entry["attacks"]["mia_sites"] = exposure
    if inversion is not None:
        entry["attacks"]["fl_inversion_received"] = inversion
    if audit is not None:
        entry["attacks"]["audit"] = audit
    config = ExperimentConfig(
        data=job.data_config(),
        split=job.split_config(),
        train=TrainConfig(
            epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr, hidden=recipe.hidden
        ),
        privacy=job.privacy_config() if job.privacy is not None else ExperimentConfig().privacy,
        run=RunConfig(methods=(job.method,), attacks=(), bootstrap=bootstrap),
        federated=FederatedConfig(
            rounds=job.rounds,
            fraction=job.fraction,
            min_clients=job.min_clients,
            strategy=job.strategy,
            server_lr=job.server_lr,
        ),
    )
    summary = dataset.summary()
    summary["notes"] = [*summary.get("notes", []), DATASET_NOTE]
    return {
        "medpriv_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "engine": ENGINE,
        "config": config.to_dict(),
        "dataset": summary,
        "complete": True,
        "runs": [entry],
    }
