"""The one-run audit read through Gaussian DP (Mahloujifar, Melis & Chaudhuri 2024, "Auditing
f-differential privacy in one run", the `audit_rh_with_cap` recursion; jax_privacy's
`CanaryScoreAuditor` offers the same reading).

The claim tested is not "(ε, δ)-DP" but "as private as the Gaussian mechanism with that (ε, δ)":
its trade-off curve, the whole curve rather than one point, bounds every test. That is an
ASSUMPTION about the noise (true for one Gaussian release, only approximately true for DP-SGD's
subsampled and composed one), so the number it gives is an estimate, reported as such beside the
distribution-free bound of `one_run` and never used for a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import optimize, special

from medpriv.privacy.audit.one_run import EPS_CEILING, GUESS_SHARES, guess_counts

STATISTIC = (
    "one-run, Gaussian-DP reading (Mahloujifar et al. 2024): an estimate that assumes the "
    "mechanism's trade-off curve is Gaussian"
)


def _phi(x: float) -> float:
    return float(special.ndtr(x))


@lru_cache(maxsize=4096)
def gaussian_mu(epsilon: float, delta: float) -> float:
    """μ of the μ-GDP Gaussian mechanism that is exactly (ε, δ)-DP (Balle & Wang 2018):
    δ = Φ(−ε/μ + μ/2) − e^ε·Φ(−ε/μ − μ/2)."""
    if not (epsilon >= 0 and 0 < delta < 1):
        raise ValueError(f"need ε >= 0 and 0 < δ < 1, got ε={epsilon}, δ={delta}")

    def excess(mu: float) -> float:
        return gdp_delta(epsilon, mu) - delta

    low, high = 1e-6, 1.0
    while excess(high) < 0:
        high *= 2
        if high > 1e4:
            return high
    return float(optimize.brentq(excess, low, high, xtol=1e-10))


def gdp_delta(epsilon: float, mu: float) -> float:
    """The δ at which the μ-GDP Gaussian mechanism is (ε, δ)-DP (Balle & Wang 2018)."""
    if mu <= 0:
        return 0.0
    tail = -epsilon / mu
    return _phi(tail + mu / 2) - math.exp(epsilon) * _phi(tail - mu / 2)


def gdp_epsilon(mu: float, delta: float) -> float:
    """The ε at which the μ-GDP Gaussian mechanism is (ε, δ)-DP (0 when it already is at ε = 0;
    capped at 64)."""
    if not 0 < delta < 1:
        raise ValueError(f"need 0 < δ < 1, got {delta}")
    if mu <= 0 or gdp_delta(0.0, mu) <= delta:
        return 0.0
    if gdp_delta(EPS_CEILING, mu) > delta:
        return EPS_CEILING
    return float(optimize.brentq(lambda e: gdp_delta(e, mu) - delta, 0.0, EPS_CEILING))


def _rejects(epsilon: float, m: int, r: int, v: int, delta: float, level: float) -> bool:
    """Whether v correct of r guesses (m canaries) reject μ(ε, δ)-GDP at `level`."""
    mu = gaussian_mu(epsilon, delta)
    right, wrong = level * v / m, level * (r - v) / m
    for i in range(v - 1, -1, -1):
        raised = max(wrong, _phi(float(special.ndtri(min(right, 1.0))) - mu))
        if raised == wrong:
            break
        right = min(right + i / (r - i) * (raised - wrong), 1.0)
        wrong = raised
    return right + wrong - r / m > 0


@lru_cache(maxsize=4096)
def gaussian_epsilon(m: int, r: int, v: int, delta: float, level: float) -> float:
    """The largest ε whose Gaussian mechanism the guesses reject at `level` (0 if none)."""
    if v == 0 or not _rejects(1e-9, m, r, v, delta, level):
        return 0.0
    low, high = 0.0, 1.0
    while _rejects(high, m, r, v, delta, level):
        if high >= EPS_CEILING:
            return EPS_CEILING
        low, high = high, min(2 * high, EPS_CEILING)
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if _rejects(middle, m, r, v, delta, level) else (low, middle)
    return low


def gaussian_estimate(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    shares: Sequence[float] = GUESS_SHARES,
) -> dict[str, float | int | str]:
    """The Gaussian-DP reading of the same guesses as `one_run.audit_one_run` (same grid,
    same Bonferroni correction), with its own power (every guess right)."""
    scores, included = np.asarray(scores, float), np.asarray(included, bool)
    m = len(scores)
    grid = guess_counts(m, shares)
    level = (1.0 - confidence) / len(grid)
    order = np.argsort(scores, kind="stable")
    best = (0.0, 0, 0)
    for k in grid:
        low, high = order[: k // 2], order[m - k // 2 :]
        correct = int(included[high].sum() + (~included[low]).sum())
        found = gaussian_epsilon(m, k, correct, float(delta), level)
        if found > best[0] or best[1] == 0:
            best = (found, k, correct)
    power = max(gaussian_epsilon(m, k, k, float(delta), level) for k in grid)
    return {
        "epsilon_estimate": best[0],
        "max_demonstrable": power,
        "guesses": best[1],
        "correct": best[2],
        "confidence": confidence,
        "statistic": STATISTIC,
    }
