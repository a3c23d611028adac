"""Private hyperparameter selection: what tuning on validation patients costs in ε.

Comparing candidate private recipes on validation patients is a selection among several DP
releases on the same training patients; it is not free. Papernot & Steinke 2022
("Hyperparameter tuning with Rényi differential privacy", Theorem 2) bound it: run the
mechanism Q a random number K of times, K drawn from a truncated negative binomial distribution
TNB(η, γ) and never revealed, each time with a candidate drawn at random, and release only the
best run (its model and which candidate it was). If Q is (λ, ε(λ))-RDP for every order, the
selection is (λ, ε'(λ))-RDP with

    ε'(λ) = ε(λ) + (1 + η)·(1 − 1/λ̂)·ε(λ̂) + (1 + η)·log(1/γ)/λ̂ + log(E[K])/(λ − 1)

for any λ̂ ≥ 1 (the best is taken). medpriv uses η = 0, the logarithmic distribution
P(K = k) = (1 − γ)^k / (k·log(1/γ)), k ≥ 1, the cheapest member of the family for a given
expected number of trials. K comes from the CSPRNG and is never recorded: a guarantee that
treats K as hidden would not hold if K were written down.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize

from medpriv.privacy.randomness import NoiseSource

# Opacus's RDP orders (its `RDPAccountant.DEFAULT_ALPHAS`), extended for small ε
ORDERS = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256)), dtype=float)
METHOD = "Papernot & Steinke 2022, Theorem 2 (random search, K ~ logarithmic distribution)"


@dataclass(frozen=True)
class Selection:
    """K ~ TNB(η = 0, γ): the logarithmic distribution on k ≥ 1."""

    gamma: float

    def __post_init__(self) -> None:
        if not 0 < self.gamma < 1:
            raise ValueError(f"γ must be in (0, 1), got {self.gamma}")

    @classmethod
    def expecting(cls, trials: float) -> Selection:
        """The distribution with E[K] = `trials` (> 1)."""
        if not trials > 1:
            raise ValueError(f"a selection needs more than one expected trial, got {trials}")
        gamma = optimize.brentq(
            lambda g: (1 / g - 1) / math.log(1 / g) - trials, 1e-12, 1 - 1e-12, xtol=1e-14
        )
        return cls(gamma=float(gamma))

    @property
    def expected_trials(self) -> float:
        return (1 / self.gamma - 1) / math.log(1 / self.gamma)

    def draw(self, noise: NoiseSource) -> int:
        """K by inversion of the CDF, from one CSPRNG uniform."""
        u, k, cdf = noise.uniform_np(), 0, 0.0
        scale = 1.0 / math.log(1 / self.gamma)
        while cdf <= u and k < 100_000:
            k += 1
            cdf += scale * math.exp(k * math.log1p(-self.gamma)) / k
        return k

    def rdp(self, base: np.ndarray) -> np.ndarray:
        """ε'(λ) at every order of `ORDERS` from the base mechanism's ε(λ) at the same orders."""
        base = np.asarray(base, dtype=float)
        hat = np.min((1 - 1 / ORDERS) * base + math.log(1 / self.gamma) / ORDERS)
        return base + hat + math.log(self.expected_trials) / (ORDERS - 1)


def _base_rdp(noise_multiplier: float, sample_rate: float, steps: int) -> np.ndarray:
    from opacus.accountants.analysis.rdp import compute_rdp

    return np.asarray(
        compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=list(ORDERS)
        ),
        dtype=float,
    )


def tuned_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    selection: Selection,
) -> float:
    """ε at δ of releasing the best of K ~ `selection` runs of DP-SGD (σ, q, steps)."""
    from opacus.accountants.analysis.rdp import get_privacy_spent

    rdp = selection.rdp(_base_rdp(noise_multiplier, sample_rate, steps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epsilon, _ = get_privacy_spent(orders=list(ORDERS), rdp=list(rdp), delta=delta)
    return float(epsilon)


@lru_cache(maxsize=256)
def calibrate_tuned_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    selection: Selection,
) -> float:
    """The smallest σ (to 0.1%) for which the selection's ε is at most the target."""

    def excess(log_sigma: float) -> float:
        sigma = math.exp(log_sigma)
        spent = tuned_epsilon(
            noise_multiplier=sigma,
            sample_rate=sample_rate,
            steps=steps,
            delta=delta,
            selection=selection,
        )
        return spent - target_epsilon

    low, high = math.log(0.05), math.log(500.0)
    if excess(high) > 0:
        raise ValueError(
            f"no σ up to 500 reaches ε = {target_epsilon} with private selection over "
            f"{selection.expected_trials:g} expected trials; raise ε or lower the trials"
        )
    while excess(low) <= 0:
        low -= 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if excess(middle) > 0:
            low = middle
        else:
            high = middle
        if high - low < 1e-3:
            break
    return math.exp(high)
