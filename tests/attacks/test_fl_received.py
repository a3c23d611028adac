"""The coordinator's gradient inversion on an update it received, scored at the site with
aggregates only (`medpriv.attacks.fl_received`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medpriv.attacks.catalog import ATTACK_NAMES, ATTACK_TITLES
from medpriv.attacks.fl_received import (
    NAME,
    SCORE_KEYS,
    ReceivedUpdate,
    client_updates_kind,
    invert_received,
    received_block,
    score_at_site,
    target_site,
)
from medpriv.attacks.inversion import FeatureLayout, FeaturePrior
from medpriv.data.dataset import Schema
from medpriv.data.preprocess import Preprocessor
from medpriv.errors import ProtocolError
from medpriv.train.federated.client import LocalRecipe, train_client
from medpriv.train.federated.engine import initial_weights

SCHEMA = Schema(numeric=("age", "bmi", "lactate"), categorical=("sex", "ethnicity"))
RECIPE = LocalRecipe(hidden=(16,), epochs=1, batch_size=8, lr=0.1, momentum=0.0)


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(62, 15, n),
            "bmi": rng.normal(28, 5, n),
            "lactate": rng.lognormal(0.3, 0.5, n),
            "sex": rng.choice(["F", "M"], n),
            "ethnicity": rng.choice(["white", "black", "asian", "other"], n),
        }
    )


@pytest.fixture(scope="module")
def site():
    """A site's 4 training rows, the coordinator's preprocessing and prior (its own patients),
    and the update the site really sent back for one round of the plain recipe."""
    pre = Preprocessor(SCHEMA).fit(_frame(400, 0))
    x_val = pre.transform(_frame(400, 1)).astype(np.float32)
    x = pre.transform(_frame(4, 2)).astype(np.float32)
    y = np.array([0, 1, 0, 1])
    sent = initial_weights(x.shape[1], RECIPE.hidden, seed=0, positive_rate=0.5)
    update = train_client(sent, x, y, recipe=RECIPE, seed=3)
    received = ReceivedUpdate(
        site="MICU", round_number=1, sent=sent, returned=update.weights, n_examples=len(x)
    )
    layout = FeatureLayout.from_preprocessor(pre)
    return received, x, y, layout, FeaturePrior.from_data(x_val)


def test_the_coordinator_reconstructs_a_small_sites_rows_from_its_real_update(site):
    received, x, y, layout, prior = site
    torch.manual_seed(0)
    found = invert_received(
        received, recipe=RECIPE, prior=prior, layout=layout, seed=0, steps=150, restarts=2
    )
    scores = score_at_site(found.x, found.labels, x_true=x, y_true=y, layout=layout, prior=prior)
    # the site's reply: the fixed aggregate figures only, every one a number
    assert set(scores) <= set(SCORE_KEYS) and all(isinstance(v, float) for v in scores.values())
    assert set(scores) >= {"accuracy", "baseline_accuracy", "labels_correct"}
    assert scores["accuracy"] > scores["baseline_accuracy"] + 0.1  # the attack works


def test_a_malformed_reconstruction_is_refused_with_a_clear_error(site):
    _, x, y, layout, prior = site
    with pytest.raises(ProtocolError, match="does not match"):
        score_at_site(x[:3], y[:3], x_true=x, y_true=y, layout=layout, prior=prior)
    with pytest.raises(ProtocolError, match="labels other than 0/1"):
        score_at_site(x, np.array([0, 1, 2, 0]), x_true=x, y_true=y, layout=layout, prior=prior)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ProtocolError, match="non-finite"):
        score_at_site(bad, y, x_true=x, y_true=y, layout=layout, prior=prior)


def test_the_block_says_what_was_attacked_or_why_not(site):
    received = site[0]
    assert target_site({"MICU": 40, "CCU": 12, "SICU": 12}) == "CCU"  # smallest, then by name
    assert target_site({}) is None
    scored = received_block(
        received=received, scores={"accuracy": 0.9}, kind="plain", seconds=1.234
    )
    assert scored["site"] == "MICU" and scored["records"] == 4 and scored["accuracy"] == 0.9
    assert scored["attack_seconds"] == 1.23 and "coordinator" in scored["threat_model"]
    unscored = received_block(received=received, scores="the site did not answer", kind="plain")
    assert unscored["not_scored"] == "the site did not answer" and "accuracy" not in unscored
    skipped = received_block(received=None, scores=None, kind="plain", not_run="secure agg")
    assert skipped["not_run"] == "secure agg" and "site" not in skipped
    private = LocalRecipe(**{**RECIPE.__dict__, "noise_multiplier": 1.0, "max_grad_norm": 1.0})
    assert client_updates_kind(private, "fedavg-dp").startswith("DP-SGD")
    assert "coordinator adds the noise" in client_updates_kind(RECIPE, "fedavg-cdp")
    # a deployment-only block: titled in the report, not an attack `medpriv run` accepts
    assert NAME in ATTACK_TITLES and NAME not in ATTACK_NAMES
