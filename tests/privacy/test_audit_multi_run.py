"""The multi-run white-box audit: R independent runs of the recorded mechanism, one Dirac canary
each, Clopper–Pearson over the runs. Planted faults in the one mechanism (the noise draw, the
step's clipping, the accountant) are flagged in every one of ten repetitions: σ = 0, no clipping
and q / 10 by the distribution-free bound itself, far above the claim; half noise at ε = 4 (a
true ε near 9) by the Gaussian-DP estimate always and by the distribution-free bound in most
runs (its ε̂ sits near 4.5, so a run may fall just short). The correct mechanism is flagged no
more often than its design rate allows. Runs are coordinates of one draw, so each audit
takes about a second."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from medpriv.attacks.canary_audit import audit_block, mechanism_runs_audit
from medpriv.config import DP_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.privacy.audit.gaussian import gaussian_mu, gdp_epsilon
from medpriv.privacy.audit.multi_run import (
    MAX_RUNS,
    MIN_RUNS,
    Mechanism,
    audit_runs,
    default_runs,
    run_canaries,
)
from medpriv.privacy.plan import RunAccountant, plan_privacy
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import get_trainer
from tests.conftest import make_toy_dataset
from tests.privacy import faults

REPEATS = 10
CONFIG = TrainConfig(epochs=10)  # the DP recipe's batch of 512: q ≈ 0.37, 30 steps


def _model(claim: float) -> SimpleNamespace:
    """What mechanism_runs_audit reads from a trained dp-sgd model, planned as the trainer
    plans (so a fault in the accountant reaches σ)."""
    train = split_by_unit(make_toy_dataset(2000), seed=0).train
    config = CONFIG.resolved(DP_RECIPE)
    plan = plan_privacy(train, config=config, privacy=PrivacyConfig(target_epsilon=claim))
    accountant = RunAccountant(plan)  # the trainer's own bookkeeping, epoch by epoch
    for epoch in range(1, config.epochs + 1):
        accountant.after_epoch(epoch)
    steps = accountant.accountant.steps
    epsilon, delta = accountant.unit_guarantee()
    spent = PrivacySpent(
        epsilon=epsilon,
        delta=delta,
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=steps,
        clipping_norm=plan.max_grad_norm,
        level="sample",
    )
    return SimpleNamespace(privacy=spent, params={"engine": "fast"})


def _audit(claim: float) -> dict:
    return mechanism_runs_audit(get_trainer("dp-sgd"), _model(claim))


_half_noise, _no_noise = faults.half_noise, faults.no_noise
_no_clipping, _accountant_q_over_10 = faults.no_clipping, faults.accountant_q_over_10


@pytest.mark.parametrize(
    "plant", [_no_noise, _no_clipping, _accountant_q_over_10], ids=["sigma0", "no-clip", "q/10"]
)
def test_gross_faults_are_contradicted_by_the_distribution_free_bound(
    plant, monkeypatch: pytest.MonkeyPatch
):
    plant(monkeypatch)
    for _ in range(REPEATS):
        audit = _audit(2.0)
        assert audit["verdict"] == "contradicted", audit
        assert audit["consistent"] is False
        assert audit["epsilon_lower_bound"] > 2 * audit["claimed_epsilon"]


def test_halved_noise_at_epsilon_4_is_flagged_every_time(monkeypatch: pytest.MonkeyPatch):
    _half_noise(monkeypatch)
    audits = [_audit(4.0) for _ in range(REPEATS)]
    for audit in audits:
        assert audit["consistent"] is False, audit  # contradicted, by one statistic or both
        assert audit["gaussian_estimate"]["epsilon_estimate"] > 1.5 * audit["claimed_epsilon"]
    by_bound = sum(a["verdict"] == "contradicted" for a in audits)
    assert by_bound >= REPEATS // 2  # the distribution-free bound alone, most of the time


@pytest.mark.parametrize("claim", [1.0, 4.0])
def test_the_correct_mechanism_is_flagged_no_more_often_than_the_design_rate(claim):
    audits = [_audit(claim) for _ in range(REPEATS)]
    flagged = sum(a["consistent"] is False for a in audits)
    # each statistic errs with probability ≤ 5%, so a flag at most 10% of the time; more than
    # 4 of 10 happens with probability < 0.2%
    assert flagged <= stats.binom.ppf(0.998, REPEATS, 0.10)
    for audit in audits:
        assert audit["runs"] == default_runs(audit["steps"]) == MAX_RUNS
        assert audit["guesses"] == audit["runs"] // 2
        assert 0.45 * MAX_RUNS < audit["canaries_included"] < 0.55 * MAX_RUNS
        assert audit["max_demonstrable"] > 2 * claim  # it could catch a fault
        assert "many runs" in audit["threat_model"]
    # the Gaussian-DP reading is close to the claim: most of it is demonstrated
    estimates = [a["gaussian_estimate"]["epsilon_estimate"] for a in audits]
    assert np.median(estimates) >= 0.5 * claim


def test_runs_are_independent_coins_and_only_the_auditor_knows_them():
    mechanism = Mechanism(
        noise_multiplier=1.0,
        sample_rate=0.5,
        steps=5,
        max_grad_norm=1.0,
        delta=1e-5,
        claimed_epsilon=3.0,
    )
    a, b = run_canaries(mechanism, runs=1000), run_canaries(mechanism, runs=1000)
    assert a.observations.shape == (5, 1000)
    assert not np.array_equal(a.included, b.included)  # fresh CSPRNG coins
    assert 400 < a.included.sum() < 600


def test_scores_unrelated_to_the_coins_show_nothing():
    rng = np.random.default_rng(0)
    mechanism = Mechanism(1.0, 0.5, 3, 1.0, 1e-5, 1.0)
    observations = rng.normal(size=(3, 20_000))
    included = rng.random(20_000) < 0.5
    bound, estimate = audit_runs(observations, included, mechanism=mechanism)
    assert bound.epsilon_lower_bound < 0.2 and estimate["epsilon_estimate"] < 0.5
    assert bound.guesses == 10_000 and bound.max_demonstrable > 5


def test_the_gaussian_reading_inverts_the_gaussian_mechanism():
    for epsilon in (0.5, 1.0, 4.0):
        assert gdp_epsilon(gaussian_mu(epsilon, 1e-5), 1e-5) == pytest.approx(epsilon, rel=1e-6)
    assert gdp_epsilon(0.0, 1e-5) == 0.0


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="σ > 0"):
        Mechanism(0.0, 0.5, 3, 1.0, 1e-5, 1.0)
    with pytest.raises(ValueError, match="at least"):
        run_canaries(Mechanism(1.0, 0.5, 3, 1.0, 1e-5, 1.0), runs=MIN_RUNS - 1)
    with pytest.raises(ValueError, match="steps × R"):
        audit_runs(
            np.zeros((3, 10)), np.zeros(200, bool), mechanism=Mechanism(1, 0.5, 3, 1, 1e-5, 1)
        )


def test_runs_fit_a_memory_budget_set_by_the_steps_alone():
    assert default_runs(120) == MAX_RUNS
    assert MIN_RUNS <= default_runs(10_000) < MAX_RUNS
    assert default_runs(10**9) == MIN_RUNS


def test_the_audit_block_carries_the_many_runs_beside_the_one_run():
    runs = _audit(2.0)
    block = audit_block(white_box=None, black_box=None, white_box_runs=runs)
    assert block["deciding"] == "white_box_runs" and block["white_box_runs"] is runs
    assert mechanism_runs_audit(get_trainer("baseline"), _model(2.0)) is None
    opacus = SimpleNamespace(privacy=_model(2.0).privacy, params={"engine": "opacus"})
    assert mechanism_runs_audit(get_trainer("dp-sgd"), opacus) is None


def test_a_deployments_recorded_mechanism_is_audited_from_its_statement_alone():
    """At a deployment's coordinator the audit reads only the privacy statement (σ, q, steps, C
    as the sites reported them): a σ reported with a claim four times too small is caught, the
    true claim is not, and an incomplete record gets no block."""
    from dataclasses import replace

    from medpriv.attacks.canary_audit import (
        DEPLOYMENT_RUNS_THREAT_MODEL,
        recorded_mechanism_audit,
    )

    honest = _model(4.0).privacy
    kept = recorded_mechanism_audit(honest, threat_model=DEPLOYMENT_RUNS_THREAT_MODEL)
    assert kept["verdict"] != "contradicted" and "deployment" in kept["threat_model"]
    understated = replace(honest, epsilon=honest.epsilon / 4)
    caught = recorded_mechanism_audit(understated, threat_model=DEPLOYMENT_RUNS_THREAT_MODEL)
    assert caught["consistent"] is False and caught["claimed_epsilon"] == honest.epsilon / 4
    assert recorded_mechanism_audit(replace(honest, sample_rate=None)) is None
