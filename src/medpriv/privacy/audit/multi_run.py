"""The multi-run white-box audit: R independent runs of the mechanism, one Dirac canary each
(Jagielski et al. 2020; Nasr et al. 2023, "Tight auditing of differentially private machine
learning"), with Clopper–Pearson over the runs.

What is run. The white-box adversary of DP-SGD's proof sees every noisy sum and knows every other
record, so it subtracts their clipped gradients: what it observes at a canary's coordinate is the
step's noise plus that canary's clipped gradient when Poisson-sampled — whatever the patients are.
Each run is therefore the recorded mechanism (σ, q, T steps, C) on the worst-case pair of
neighbouring datasets, "no record" against "one canary" (a gradient of norm 10·C on a coordinate
of its own), the canary included with probability ½ by a coin only the auditor knows. The R runs
are stacked as R coordinates of one draw per step, through the step's own noise and clipping
(`medpriv.privacy.step.noise_and_canaries_`): a fault planted there reaches every run. Runs are
independent because the coordinates of a Gaussian draw and the canaries' coins are.

The statistic. The runs are split in two halves by index (the coins are random, so the halves are
alike). The first half fixes everything data-dependent — the noise scale the score uses and the
threshold (and direction) of the membership test; the second half, untouched until then, gives
the counts. With Clopper–Pearson bounds on its two error rates, each at half the confidence's
risk, the distribution-free bound is ε̂ = log((TPR_lo − δ) / FPR_hi) (or the same with the roles of
"in" and "out" swapped). Beside it, the Gaussian-DP estimate of Nasr et al. 2023 reads the same
bounds as μ̂ = Φ⁻¹(TPR_lo) − Φ⁻¹(FPR_hi) and reports the ε of the μ̂-GDP Gaussian mechanism at δ:
an ESTIMATE that assumes the trade-off curve is Gaussian (DP-SGD's is only approximately so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from scipy import special, stats

from medpriv.privacy.audit.canaries import DiracCanaries, llr_scores, noise_scale
from medpriv.privacy.audit.gaussian import gdp_epsilon
from medpriv.privacy.audit.one_run import EPS_CEILING
from medpriv.privacy.randomness import NoiseSource

MAX_RUNS = 100_000
MIN_RUNS = 100
# Each run is one coordinate of a step's draw, so runs cost almost nothing; what they cost is
# memory: every observation (steps × R) is kept until the threshold is chosen.
MAX_OBSERVATIONS = 20_000_000
STATISTIC = (
    "multi-run: Clopper–Pearson over independent runs (threshold chosen on a separate half of "
    "the runs)"
)
GAUSSIAN_STATISTIC = (
    "multi-run, Gaussian-DP reading (Nasr et al. 2023): an estimate that assumes the "
    "mechanism's trade-off curve is Gaussian"
)
# Candidate thresholds, as quantiles of the first half's scores: dense in the tails, where the
# distribution-free bound is decided, and coarse enough that choosing among them overfits little.
_TAILS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4)
_THRESHOLD_QUANTILES = np.array(sorted({*_TAILS, 0.5, *(1 - t for t in _TAILS)}))


@dataclass(frozen=True)
class Mechanism:
    """The audited mechanism as it ran: σ, Poisson rate q, steps T, clipping norm C; the claim."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    delta: float
    claimed_epsilon: float

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and 0 < self.sample_rate <= 1):
            raise ValueError("a multi-run audit needs σ > 0 and 0 < q <= 1")
        if not (self.steps >= 1 and self.max_grad_norm > 0 and 0 < self.delta < 1):
            raise ValueError("a multi-run audit needs T >= 1 steps, C > 0 and 0 < δ < 1")


@dataclass(frozen=True)
class MultiRunBound:
    """ε̂ with its confidence and power; counts are of runs (one canary, one privacy unit each)."""

    epsilon_lower_bound: float
    max_demonstrable: float  # ε̂ if every evaluated run were guessed right
    confidence: float
    runs: int  # R
    guesses: int  # the evaluation half
    correct: int  # right guesses at the chosen threshold
    delta: float
    guessing: str  # which error pair the bound uses
    statistic: str = STATISTIC

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_runs(steps: int) -> int:
    """R from the steps alone: as many runs as 2·10⁷ kept observations allow, at most 100,000."""
    return max(MIN_RUNS, min(MAX_RUNS, MAX_OBSERVATIONS // max(1, steps)))


def run_canaries(
    mechanism: Mechanism,
    *,
    runs: int | None = None,
    device: torch.device | str = "cpu",
    noise: NoiseSource | None = None,
) -> DiracCanaries:
    """R runs of the mechanism on the worst-case neighbouring pair, stacked: each run is one
    coordinate, its canary in with probability ½ (CSPRNG coins), Poisson-sampled at every step."""
    from medpriv.privacy.step import noise_and_canaries_  # the step's own noise and clipping

    runs = default_runs(mechanism.steps) if runs is None else runs
    if runs < MIN_RUNS:
        raise ValueError(f"a multi-run audit needs at least {MIN_RUNS} runs, got {runs}")
    noise = noise or NoiseSource.fresh()
    canaries = DiracCanaries(
        canaries=runs,
        parameters=runs,
        max_grad_norm=mechanism.max_grad_norm,
        noise_multiplier=mechanism.noise_multiplier,
        sample_rate=mechanism.sample_rate,
        noise=noise,
        seed=0,
    )
    flat = torch.empty(runs, dtype=torch.float32, device=device)
    std = mechanism.noise_multiplier * mechanism.max_grad_norm
    for _ in range(mechanism.steps):
        noise_and_canaries_(
            flat,
            std=std,
            max_grad_norm=mechanism.max_grad_norm,
            noise=noise,
            canaries=canaries,
        )
    return canaries


def _cp_low(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper–Pearson lower bound on a rate (0 for no successes)."""
    if successes == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, successes, trials - successes + 1))


def _cp_high(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper–Pearson upper bound on a rate (1 for all successes)."""
    if successes == trials:
        return 1.0
    return float(stats.beta.ppf(1 - alpha, successes + 1, trials - successes))


Counts = tuple[int, int, int, int]  # (hits, positives, false alarms, negatives)


def _pure_bound(counts: Counts, *, delta: float, alpha: float) -> float:
    """log((TPR_lo − δ) / FPR_hi), each bound at risk α/2 (0 when not positive)."""
    hits, positives, false, negatives = counts
    tpr, fpr = _cp_low(hits, positives, alpha / 2), _cp_high(false, negatives, alpha / 2)
    if tpr <= delta:
        return 0.0
    return max(0.0, min(EPS_CEILING, float(np.log((tpr - delta) / fpr))))


def _gaussian_mu(counts: Counts, *, alpha: float) -> float:
    """Φ⁻¹(TPR_lo) − Φ⁻¹(FPR_hi), each bound at risk α/2 (0 when not positive)."""
    hits, positives, false, negatives = counts
    tpr, fpr = _cp_low(hits, positives, alpha / 2), _cp_high(false, negatives, alpha / 2)
    if tpr <= 0 or fpr >= 1:
        return 0.0
    return max(0.0, float(special.ndtri(tpr) - special.ndtri(fpr)))


def _counts(scores: np.ndarray, included: np.ndarray, threshold: float, swap: bool) -> Counts:
    """Guessing "in" at score ≥ τ: (true positives, positives, false positives, negatives); with
    `swap`, the same test read the other way ("out" below τ: true negatives over negatives,
    false negatives over positives)."""
    guessed = scores >= threshold
    hits, positives = int(np.sum(guessed & included)), int(np.sum(included))
    false, negatives = int(np.sum(guessed & ~included)), int(np.sum(~included))
    if swap:
        return negatives - false, negatives, positives - hits, positives
    return hits, positives, false, negatives


def _correct(counts: Counts) -> int:
    hits, _, false, negatives = counts
    return hits + negatives - false


def audit_runs(
    observations: np.ndarray,
    included: np.ndarray,
    *,
    mechanism: Mechanism,
    confidence: float = 0.95,
) -> tuple[MultiRunBound, dict[str, Any]]:
    """ε̂ (distribution-free) and the Gaussian-DP estimate from R runs' observations (steps × R,
    in units of C) and the auditor's coins."""
    observations = np.asarray(observations)
    included = np.asarray(included, dtype=bool)
    runs = len(included)
    if observations.ndim != 2 or observations.shape[1] != runs or runs < MIN_RUNS:
        raise ValueError(f"need steps × R observations for R >= {MIN_RUNS} runs")
    alpha = 1.0 - confidence
    chosen, held = np.arange(runs // 2), np.arange(runs // 2, runs)
    # everything data-dependent comes from the first half: the score's noise scale, the test
    scale = noise_scale(observations[:, chosen], mechanism.noise_multiplier)
    scores = llr_scores(observations, rate=mechanism.sample_rate, scale=scale)
    thresholds = np.unique(np.quantile(scores[chosen], _THRESHOLD_QUANTILES))
    pure = partial(_pure_bound, delta=mechanism.delta, alpha=alpha)
    gaussian = partial(_gaussian_mu, alpha=alpha)

    def held_out(statistic: Callable[[Counts], float]) -> tuple[float, Counts, str]:
        """The statistic on the second half, at the test that maximised it on the first."""
        _, threshold, swap = max(
            (statistic(_counts(scores[chosen], included[chosen], t, swap)), t, swap)
            for t in thresholds
            for swap in (False, True)
        )
        counts = _counts(scores[held], included[held], threshold, swap)
        return statistic(counts), counts, "out below" if swap else "in above"

    found, counts, guessing = held_out(pure)
    members = int(included[held].sum())
    perfect = (members, members, 0, len(held) - members)
    bound = MultiRunBound(
        epsilon_lower_bound=found,
        max_demonstrable=pure(perfect),
        confidence=confidence,
        runs=runs,
        guesses=len(held),
        correct=_correct(counts),
        delta=mechanism.delta,
        guessing=f"{guessing} a threshold",
    )
    mu, g_counts, _ = held_out(gaussian)
    estimate = {
        "epsilon_estimate": gdp_epsilon(mu, mechanism.delta),
        "mu_lower_bound": mu,
        "max_demonstrable": gdp_epsilon(gaussian(perfect), mechanism.delta),
        "guesses": len(held),
        "correct": _correct(g_counts),
        "confidence": confidence,
        "statistic": GAUSSIAN_STATISTIC,
    }
    return bound, estimate
