"""Planted faults in the one DP mechanism are caught by the white-box canary audit (flagged
*contradicted*), and the correct mechanism is not, beyond the audit's 5% design rate.

Each fault is planted where it would live: in the noise draw (σ = 0; noise × 0.5), in the
step's clipping function (no clipping; canaries' gradients have norm 10·C) and in the
accountant (q / 10). σ = 0, no clipping and q / 10 are caught at a claimed ε = 2 by the
distribution-free bound itself; noise × 0.5 at a claimed ε = 4 makes the true ε about 10, which
one run of 1,000 canaries cannot prove distribution-free (its power is about 4–5), so there it
is the Gaussian-DP estimate that flags it, and the verdict says so. Toy cohorts and 1,000
canaries keep the file within about a minute.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from medpriv.attacks.canary_audit import (
    GAUSSIAN_CONTRADICTION,
    mechanism_runs_audit,
    verdict,
    verdict_text,
    white_box_audit,
)
from medpriv.config import FederatedConfig, PrivacyConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.privacy.audit.canaries import DiracCanaries
from medpriv.privacy.randomness import NoiseSource
from medpriv.train.base import get_trainer
from tests.conftest import make_toy_dataset
from tests.privacy import faults

CANARIES = 1000
SHORT = (2000, TrainConfig(epochs=5, hidden=(64, 32)))  # 5 full-batch steps (the rule: q = 1)
# 2,000 steps at q ≈ 0.02: long enough for halved noise to be visible in one run
LONG = (1000, TrainConfig(epochs=40, hidden=(64, 32), patience=1000, batch_size=13))


def _audit(seed: int, claim: float, run: tuple[int, TrainConfig]) -> dict:
    n, config = run
    return white_box_audit(
        get_trainer("dp-sgd"),
        splits=split_by_unit(make_toy_dataset(n), seed=0),
        config=config,
        privacy=PrivacyConfig(target_epsilon=claim),
        seed=seed,
        canaries=CANARIES,
    )


_half_noise, _no_noise = faults.half_noise, faults.no_noise
_no_clipping, _accountant_q_over_10 = faults.no_clipping, faults.accountant_q_over_10


@pytest.mark.parametrize("plant", [_no_noise, _no_clipping, _accountant_q_over_10])
def test_a_planted_fault_is_contradicted_by_the_bound(plant, monkeypatch: pytest.MonkeyPatch):
    plant(monkeypatch)
    for seed in range(2):
        audit = _audit(seed, 2.0, SHORT)
        assert audit["verdict"] == "contradicted", audit
        assert audit["consistent"] is False
        assert audit["epsilon_lower_bound"] > audit["claimed_epsilon"]
        assert verdict_text(audit).startswith("contradicted")


def test_halved_noise_at_epsilon_4_is_flagged(monkeypatch: pytest.MonkeyPatch):
    _half_noise(monkeypatch)
    for seed in range(2):
        audit = _audit(seed, 4.0, LONG)
        assert audit["verdict"] in ("contradicted", GAUSSIAN_CONTRADICTION), audit
        assert audit["consistent"] is False
        assert "assumes Gaussian noise" in verdict_text(audit) or audit["verdict"] == "contradicted"


@pytest.mark.parametrize(("claim", "run"), [(2.0, SHORT), (4.0, LONG)], ids=["short", "long"])
def test_the_correct_mechanism_is_flagged_no_more_often_than_the_design_rate(claim, run):
    seeds = 3
    audits = [_audit(seed, claim, run) for seed in range(seeds)]
    flagged = sum(a["consistent"] is False for a in audits)
    # at a 5% design rate, 2 or more of 3 happen with probability < 1%
    assert flagged <= stats.binom.ppf(0.99, seeds, 0.05)
    for audit in audits:
        assert audit["canaries"] == CANARIES and audit["confidence"] == 0.95
        assert 0 < audit["canaries_included"] < CANARIES
        assert audit["max_demonstrable"] > 0.9 * claim  # about the claim: it could catch a fault
        assert audit["gaussian_estimate"]["epsilon_estimate"] >= 0
        assert "white-box" in audit["threat_model"]


def _federated_audit(seed: int, method: str = "fedavg-dp") -> dict:
    return white_box_audit(
        get_trainer(method, federated=FederatedConfig(rounds=4, partition="iid:4")),
        splits=split_by_unit(make_toy_dataset(2000), seed=0),
        config=TrainConfig(hidden=(64, 32)),
        privacy=PrivacyConfig(target_epsilon=2.0),
        seed=seed,
    )


def test_a_fedavg_dp_clients_mechanism_is_audited_against_that_clients_own_epsilon(
    monkeypatch: pytest.MonkeyPatch,
):
    seeds = 3
    audits = [_federated_audit(seed) for seed in range(seeds)]
    assert sum(a["consistent"] is False for a in audits) <= stats.binom.ppf(0.99, seeds, 0.05)
    for audit in audits:
        assert 1.5 < audit["claimed_epsilon"] <= 2.0 and audit["steps"] > 0
        assert "one client" in audit["threat_model"]
    _no_noise(monkeypatch)  # the same σ = 0 fault, planted in the one mechanism, reaches clients
    broken = _federated_audit(0)
    assert broken["verdict"] == "contradicted" and broken["consistent"] is False


def test_client_level_dp_is_audited_with_canary_clients(monkeypatch: pytest.MonkeyPatch):
    seeds = 3
    audits = [_federated_audit(seed, "fedavg-cdp") for seed in range(seeds)]
    assert sum(a["consistent"] is False for a in audits) <= stats.binom.ppf(0.99, seeds, 0.05)
    for audit in audits:  # one observation per round: the server's noisy aggregate
        assert audit["steps"] == 4 and 1.5 < audit["claimed_epsilon"] <= 2.0
    _no_noise(monkeypatch)
    broken = _federated_audit(0, "fedavg-cdp")
    assert broken["verdict"] == "contradicted" and broken["consistent"] is False


def test_verdicts_never_say_consistent():
    assert verdict(0.1, 2.0) == "not contradicted"
    assert verdict(1.2, 2.0) == "tight"
    assert verdict(2.5, 2.0) == "contradicted"
    assert verdict(2.5, None) == "no claim"
    assert verdict(1.2, 2.0, estimate=2.3) == GAUSSIAN_CONTRADICTION
    text = verdict_text(
        {"verdict": "not contradicted", "epsilon_lower_bound": 0.2, "max_demonstrable": 4.4}
    )
    assert text == "not contradicted — this audit could show at most ε̂ 4.40"


def test_canary_coins_come_from_the_csprng_and_positions_from_the_seed():
    def planted() -> DiracCanaries:
        return DiracCanaries(
            canaries=500,
            parameters=5000,
            max_grad_norm=1.0,
            noise_multiplier=1.0,
            sample_rate=0.1,
            noise=NoiseSource.reproducible(0),
            seed=3,
        )

    a, b = planted(), planted()
    assert np.array_equal(a.coordinates, b.coordinates)  # public: the run seed
    assert not np.array_equal(a.included, b.included)  # secret: never replayable
    assert len(set(a.coordinates.tolist())) == 500  # one coordinate each


@pytest.fixture(scope="module")
def federated_models() -> dict:
    """fedavg-dp and fedavg-cdp models as trained, for the multi-run audit of their mechanism."""
    splits = split_by_unit(make_toy_dataset(2000), seed=0)
    models = {}
    for method in ("fedavg-dp", "fedavg-cdp"):
        trainer = get_trainer(method, federated=FederatedConfig(rounds=4, partition="iid:4"))
        model = trainer.fit(
            splits=splits,
            config=TrainConfig(hidden=(16,)),
            privacy=PrivacyConfig(target_epsilon=2.0),
            seed=0,
        )
        models[method] = (trainer, model)
    return models


@pytest.mark.parametrize("method", ["fedavg-dp", "fedavg-cdp"])
def test_the_many_runs_audit_covers_the_federated_mechanisms(
    method: str, federated_models: dict, monkeypatch: pytest.MonkeyPatch
):
    trainer, model = federated_models[method]
    spent = model.privacy
    correct = mechanism_runs_audit(trainer, model, runs=20_000)
    # the distribution-free bound passes the claim with probability < 5% (far less: it sits
    # near half the claim), so this is not a coin flip
    assert correct["epsilon_lower_bound"] < spent.epsilon and correct["runs"] == 20_000
    assert correct["claimed_epsilon"] == spent.epsilon and correct["steps"] == spent.steps
    if method == "fedavg-cdp":  # one observation per round: the server's noisy aggregate
        assert spent.steps == 4 and spent.level == "client"
    else:  # the worst-off patients' client: one full-batch step a round (the recipe rule)
        assert spent.steps == 4 and spent.sample_rate == 1 and spent.level == "sample"
    _no_noise(monkeypatch)  # planted in the one mechanism: it reaches the clients and the server
    broken = mechanism_runs_audit(trainer, model, runs=20_000)
    assert broken["verdict"] == "contradicted" and broken["epsilon_lower_bound"] > spent.epsilon
