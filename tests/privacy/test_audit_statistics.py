"""The one-run audit's statistics: the p-value is the binomial tail (plus the δ term), the bound
is valid at its design rate, and power is what a perfect attack would show."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medpriv.privacy.audit.gaussian import gaussian_estimate, gaussian_mu
from medpriv.privacy.audit.one_run import (
    audit_one_run,
    epsilon_lower_bound,
    guess_counts,
    p_value,
)


def test_p_value_without_delta_is_the_binomial_tail():
    q = 1 / (1 + math.exp(-1.5))
    assert p_value(100, 40, 30, 1.5, 0.0) == pytest.approx(stats.binom.sf(29, 40, q))
    assert p_value(100, 40, 30, 1.5, 1e-3) > p_value(100, 40, 30, 1.5, 0.0)
    with pytest.raises(ValueError):
        p_value(10, 4, 5, 1.0, 0.0)


def test_the_bound_grows_with_correct_guesses_and_never_exceeds_power():
    bounds = [epsilon_lower_bound(1000, 100, v, 1e-5, 0.95) for v in range(50, 101, 5)]
    assert bounds == sorted(bounds) and bounds[0] == 0.0 and bounds[-1] > 3
    assert epsilon_lower_bound(1000, 100, 100, 1e-5, 0.95) == max(bounds)
    # p at the bound is the significance level (bisection to its tolerance)
    found = epsilon_lower_bound(1000, 100, 90, 1e-5, 0.95)
    assert p_value(1000, 100, 90, found, 1e-5) <= 0.05 < p_value(1000, 100, 90, found + 1e-3, 1e-5)


def test_the_guess_grid_depends_on_m_alone():
    assert guess_counts(1000) == [20, 50, 100, 200, 500, 1000]
    assert all(k % 2 == 0 for k in guess_counts(37)) and max(guess_counts(37)) <= 37


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_randomized_response_is_never_over_bounded_beyond_the_design_rate(epsilon: float):
    """Scores from ε-DP randomized response (the worst case for this statistic): the bound
    exceeds the true ε in at most the 5% the confidence allows (seeded, so not flaky)."""
    rng = np.random.default_rng(7)
    keep = math.exp(epsilon) / (1 + math.exp(epsilon))
    over, trials, bounds = 0, 60, []
    for _ in range(trials):
        included = rng.random(400) < 0.5
        said = np.where(rng.random(400) < keep, included, ~included)
        found = audit_one_run(said + 1e-3 * rng.random(400), included, delta=0.0)
        over += found.epsilon_lower_bound > epsilon
        bounds.append(found.epsilon_lower_bound)
    assert over <= stats.binom.ppf(0.999, trials, 0.05)
    assert np.median(bounds) > 0.4 * epsilon  # and it has power against this mechanism


def test_a_perfect_attack_reaches_the_power_and_a_useless_one_shows_nothing():
    included = np.arange(1000) % 2 == 0
    perfect = audit_one_run(included.astype(float), included, delta=1e-5)
    assert perfect.epsilon_lower_bound == pytest.approx(perfect.max_demonstrable)
    assert perfect.correct == perfect.guesses and 5 < perfect.max_demonstrable < 6
    rng = np.random.default_rng(0)
    useless = audit_one_run(rng.random(1000), included, delta=1e-5)
    assert useless.epsilon_lower_bound < 0.5
    assert useless.to_dict()["canaries"] == 1000


def test_gaussian_mu_inverts_the_analytic_gaussian_delta():
    for epsilon, delta in ((1.0, 1e-5), (4.0, 1e-5), (8.0, 1e-6)):
        mu = gaussian_mu(epsilon, delta)
        phi = stats.norm.cdf
        back = phi(-epsilon / mu + mu / 2) - math.exp(epsilon) * phi(-epsilon / mu - mu / 2)
        assert back == pytest.approx(delta, rel=1e-4)


def test_the_gaussian_reading_is_labelled_an_estimate_and_reads_higher():
    rng = np.random.default_rng(1)
    included = rng.random(1000) < 0.5
    scores = rng.normal(size=1000) + 2.0 * included  # 2-GDP scores
    bound = audit_one_run(scores, included, delta=1e-5)
    estimate = gaussian_estimate(scores, included, delta=1e-5)
    assert "assumes" in str(estimate["statistic"])
    assert estimate["epsilon_estimate"] > bound.epsilon_lower_bound > 0
    # a 2-GDP mechanism is about (10.7, 1e-5)-DP: the estimate stays below that
    assert estimate["epsilon_estimate"] < 10.7
