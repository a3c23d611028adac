"""`fl_inversion_received`: gradient inversion by a deployment's coordinator, on an update it
actually received (issue 16, item 3).

The in-process `fl_inversion` simulates the server's view; here the coordinator of a Flower
deployment attacks its real view: the weights it sent in round 1 and the weights one site sent
back. It unrolls the site's local recipe (which the coordinator itself sent: epochs, batch
size, learning rate, momentum) on dummy rows and matches the received update
(`medpriv.attacks.inversion.invert_fedavg`), with the coordinator's validation patients'
feature distribution as prior. The target is the smallest site that answered round 1 (sizes
are public to the coordinator; fewer rows are easier to reconstruct).

The coordinator holds no ground truth, so the site scores the reconstruction against the rows
it trained on and returns aggregates only (per-feature accuracy means, the distribution
baseline, the share of labels right) — never a row, never a per-patient score. Sending the
reconstruction to the site it came from tells that site nothing it did not hold. Under SecAgg+
the coordinator never sees one site's update: the attack is not run and the block says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medpriv.attacks.inversion import (
    FeatureLayout,
    FeaturePrior,
    Reconstruction,
    evaluate_inversion,
    invert_fedavg,
)
from medpriv.errors import ProtocolError
from medpriv.models import MLP
from medpriv.train.federated.client import LocalRecipe
from medpriv.train.federated.weights import Weights, set_weights

NAME = "fl_inversion_received"
SCORE_TASK = "score-reconstruction"  # the EVALUATE message's `task` that asks a site to score
STEPS, RESTARTS = 200, 2
MAX_ROWS = 1_000  # a site's update over more rows is beyond this attack's reach (said so)
# The figures a site returns: aggregates over its rows, never a row or a per-patient score.
SCORE_KEYS = (
    "accuracy",
    "baseline_accuracy",
    "advantage_over_baseline",
    "continuous_accuracy",
    "categorical_accuracy",
    "labels_correct",
    "tolerance",
)
THREAT_MODEL = (
    "the coordinator of the deployment (honest-but-curious): it holds the global model it sent, "
    "the update one site returned, the local recipe it sent and its validation patients' "
    "feature distribution as prior; the site scores the reconstruction and returns aggregates"
)


@dataclass(frozen=True)
class ReceivedUpdate:
    """What the coordinator holds of one site's round: the weights sent and returned."""

    site: str
    round_number: int
    sent: Weights
    returned: Weights
    n_examples: int


def target_site(n_examples: dict[str, int]) -> str | None:
    """The smallest site that sent an update (ties by name), or None."""
    return min(n_examples, key=lambda site: (n_examples[site], site)) if n_examples else None


def client_updates_kind(recipe: LocalRecipe, method: str) -> str:
    """What the attacked update is, in words."""
    if recipe.private:
        return "DP-SGD (clipped, noised at the site)"
    if method == "fedavg-cdp":
        return "plain (client-level DP: the coordinator adds the noise after receiving it)"
    return "plain"


def invert_received(
    received: ReceivedUpdate,
    *,
    recipe: LocalRecipe,
    prior: FeaturePrior,
    layout: FeatureLayout,
    seed: int,
    steps: int = STEPS,
    restarts: int = RESTARTS,
) -> Reconstruction:
    """The coordinator's reconstruction of the site's rows from its received update (local
    training simulated as the recipe's SGD, in eval mode: dropout and DP noise unmodelled)."""
    with torch.random.fork_rng(devices=[]):
        network = MLP(layout.n_features, recipe.hidden)
    set_weights(network, received.sent)
    network.eval()
    update = [
        np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
        for after, before in zip(received.returned, received.sent, strict=True)
    ]
    return invert_fedavg(
        network,
        update,
        local_epochs=recipe.epochs,
        local_lr=recipe.lr,
        local_batch_size=min(recipe.batch_size, received.n_examples),
        n_examples=received.n_examples,
        local_momentum=recipe.momentum if recipe.optimizer == "sgd" else 0.0,
        local_weight_decay=recipe.weight_decay,
        layout=layout,
        prior=prior,
        steps=steps,
        restarts=restarts,
        seed=seed,
    )


def score_at_site(
    x_hat: np.ndarray,
    labels_hat: np.ndarray,
    *,
    x_true: np.ndarray,
    y_true: np.ndarray,
    layout: FeatureLayout,
    prior: FeaturePrior,
) -> dict[str, float]:
    """At the site: the reconstruction scored against the rows it trained on — aggregates
    only. A malformed reconstruction is a ProtocolError (the node answers with an error)."""
    x_hat, labels_hat = np.asarray(x_hat), np.asarray(labels_hat)
    if x_hat.ndim != 2 or x_hat.shape != x_true.shape or labels_hat.shape != (len(x_true),):
        raise ProtocolError(
            f"reconstruction of shape {x_hat.shape} with {labels_hat.shape} labels does not "
            f"match this site's {x_true.shape} training rows"
        )
    if not np.isfinite(x_hat).all() or not np.isin(labels_hat, (0, 1)).all():
        raise ProtocolError("reconstruction holds non-finite values or labels other than 0/1")
    found = Reconstruction(
        x=x_hat.astype(np.float64), labels=labels_hat.astype(np.int64), loss=0.0, method=""
    )
    result = evaluate_inversion(found, x_true=x_true, y_true=y_true, layout=layout, prior=prior)
    figures = result.to_dict()
    return {k: float(figures[k]) for k in SCORE_KEYS if figures.get(k) is not None}


def received_block(
    *,
    received: ReceivedUpdate | None,
    scores: dict[str, float] | str | None,
    kind: str,
    seconds: float | None = None,
    not_run: str | None = None,
    method: str = "",
) -> dict[str, Any]:
    """The results.json block: the site's aggregate scores and how they were made, or why the
    attack did not run (`not_run`) or was not scored (`scores` as text)."""
    block: dict[str, Any] = {"client_updates": kind, "threat_model": THREAT_MODEL}
    if not_run is not None or received is None:
        return {**block, "not_run": not_run or "no site sent an update in round 1"}
    block |= {
        "site": received.site,
        "round": received.round_number,
        "records": received.n_examples,
        "attack_seconds": None if seconds is None else round(seconds, 2),
        "steps": STEPS,
        "restarts": RESTARTS,
        "method": method,
    }
    if isinstance(scores, str) or scores is None:
        return {**block, "not_scored": scores or "the site returned no score"}
    return {**block, **scores}


def timed_inversion(received: ReceivedUpdate, **kwargs: Any) -> tuple[Reconstruction, float]:
    """`invert_received` and its wall time in seconds."""
    started = time.perf_counter()
    found = invert_received(received, **kwargs)
    return found, time.perf_counter() - started
