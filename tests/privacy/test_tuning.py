"""The ε of private selection (Papernot & Steinke 2022, Theorem 2 with η = 0): the number of
trials is drawn from the CSPRNG with the stated mean, and the accounting matches the theorem
computed independently for the full-batch Gaussian mechanism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opacus.accountants.analysis.rdp import get_privacy_spent

from medpriv.privacy.accounting import calibrate_noise
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.tuning import ORDERS, Selection, calibrate_tuned_noise, tuned_epsilon


def test_the_number_of_trials_has_the_stated_mean_and_is_at_least_one():
    selection = Selection.expecting(10.0)
    assert math.isclose(selection.expected_trials, 10.0, rel_tol=1e-9)
    noise = NoiseSource.fresh()
    draws = np.array([selection.draw(noise) for _ in range(20_000)])
    assert draws.min() >= 1
    # P(K = 1) = (1 − γ) / log(1/γ); the mean within 5 standard errors
    p1 = (1 - selection.gamma) / math.log(1 / selection.gamma)
    assert abs(np.mean(draws == 1) - p1) < 5 * math.sqrt(p1 * (1 - p1) / len(draws))
    assert abs(draws.mean() - 10.0) < 5 * draws.std() / math.sqrt(len(draws))
    with pytest.raises(ValueError, match="more than one"):
        Selection.expecting(1.0)


def _theorem(sigma: float, steps: int, delta: float, selection: Selection) -> float:
    """Theorem 2 (η = 0) for the Gaussian mechanism at q = 1, written out on its own: base
    ε(λ) = T·λ/(2σ²); λ̂ minimised on a fine grid."""
    rho = steps / (2 * sigma**2)
    hats = np.linspace(1.0, 400.0, 400_001)
    hat = np.min((1 - 1 / hats) * rho * hats + math.log(1 / selection.gamma) / hats)
    rdp = rho * ORDERS + hat + math.log(selection.expected_trials) / (ORDERS - 1)
    return float(get_privacy_spent(orders=list(ORDERS), rdp=list(rdp), delta=delta)[0])


@pytest.mark.parametrize(("sigma", "trials"), [(4.0, 5.0), (15.0, 10.0), (40.0, 20.0)])
def test_the_selection_costs_what_the_theorem_says(sigma: float, trials: float):
    selection = Selection.expecting(trials)
    found = tuned_epsilon(
        noise_multiplier=sigma, sample_rate=1.0, steps=30, delta=1e-5, selection=selection
    )
    # the grid of λ̂ in the library is coarser than the test's: never smaller, barely larger
    expected = _theorem(sigma, 30, 1e-5, selection)
    assert expected <= found <= expected * 1.02 + 1e-3
    one_run = calibrate_noise(
        target_epsilon=found, delta=1e-5, sample_rate=1.0, steps=30, accountant="rdp"
    )
    assert one_run < sigma  # one run at the same ε needs less noise: selection is not free


def test_more_trials_cost_more_and_calibration_hits_the_target():
    costs = [
        tuned_epsilon(
            noise_multiplier=10.0,
            sample_rate=1.0,
            steps=30,
            delta=1e-5,
            selection=Selection.expecting(trials),
        )
        for trials in (2.0, 5.0, 10.0, 50.0)
    ]
    assert costs == sorted(costs) and costs[0] < costs[-1]
    selection = Selection.expecting(10.0)
    for target in (1.0, 4.0):
        sigma = calibrate_tuned_noise(
            target_epsilon=target, delta=1e-5, sample_rate=1.0, steps=30, selection=selection
        )
        at = {
            factor: tuned_epsilon(
                noise_multiplier=sigma * factor,
                sample_rate=1.0,
                steps=30,
                delta=1e-5,
                selection=selection,
            )
            for factor in (1.0, 0.99)
        }
        assert at[1.0] <= target < at[0.99]
