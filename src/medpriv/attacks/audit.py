"""Empirical ε lower bound from a membership attack, with Clopper–Pearson confidence intervals.

An (ε, δ)-DP training algorithm bounds every membership test: TPR ≤ e^ε·FPR + δ and
(1 − FPR) ≤ e^ε·(1 − TPR) + δ. Given an attack's scores, the threshold is chosen on one random half
of the records and TPR/FPR are counted on the other half (with several attacks, the attack is
chosen on the first half too); Clopper–Pearson intervals (a lower bound
on TPR, an upper bound on FPR, together at the stated confidence) turn them into a lower bound on
ε that holds with that confidence. A lower bound above the accountant's ε means the DP
implementation (or its accounting) is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta


@dataclass(frozen=True)
class AuditResult:
    epsilon_lower_bound: float
    confidence: float
    claimed_epsilon: float | None
    delta: float
    attack: str
    threshold_half: int
    audit_half: int

    @property
    def consistent(self) -> bool | None:
        """False when the measured bound exceeds the claimed ε; None for non-private models."""
        if self.claimed_epsilon is None:
            return None
        return self.epsilon_lower_bound <= self.claimed_epsilon + 1e-9

    def to_dict(self) -> dict[str, Any]:
        return {
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "confidence": self.confidence,
            "consistent": self.consistent,
            "claimed_epsilon": self.claimed_epsilon,
            "delta": self.delta,
            "attack": self.attack,
            "method": (
                "Clopper-Pearson on a held-out half; attack and threshold chosen on the other half"
            ),
            "n_threshold": self.threshold_half,
            "n_audit": self.audit_half,
        }


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two-sided exact binomial interval at level 1 − alpha."""
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = (
        1.0
        if successes == trials
        else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    )
    return low, high


def epsilon_from_rates(
    tpr_low: float, fpr_high: float, fnr_high: float, tnr_low: float, delta: float
) -> float:
    """The larger of the two DP inequalities' bounds, log((TPR − δ)/FPR) and log((TNR − δ)/FNR)."""
    bounds = [0.0]
    if tpr_low - delta > 0 and fpr_high > 0:
        bounds.append(math.log((tpr_low - delta) / fpr_high))
    if tnr_low - delta > 0 and fnr_high > 0:
        bounds.append(math.log((tnr_low - delta) / fnr_high))
    return max(bounds)


def _bound_at(
    scores: np.ndarray, member: np.ndarray, threshold: float, delta: float, alpha: float
) -> float:
    guess = scores >= threshold
    n_in, n_out = int(member.sum()), int((1 - member).sum())
    tp, fp = int((guess & (member == 1)).sum()), int((guess & (member == 0)).sum())
    # One tail (alpha/2) of each two-sided interval: both hold together with prob. >= 1 - alpha.
    tpr_low = clopper_pearson(tp, n_in, alpha)[0]
    fpr_high = clopper_pearson(fp, n_out, alpha)[1]
    return epsilon_from_rates(tpr_low, fpr_high, 1 - tpr_low, 1 - fpr_high, delta)


def _best_threshold(
    scores: np.ndarray, member: np.ndarray, delta: float, alpha: float
) -> tuple[float, float]:
    """(threshold, its ε bound): the score quantile with the highest bound on this half."""
    candidates = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, 201)))
    bounds = [_bound_at(scores, member, t, delta, alpha) for t in candidates]
    best = int(np.argmax(bounds))
    return float(candidates[best]), float(bounds[best])


def audit_epsilon(
    scores: np.ndarray,
    member: np.ndarray,
    *,
    delta: float,
    claimed_epsilon: float | None,
    attack: str,
    confidence: float = 0.95,
    seed: int = 0,
) -> AuditResult:
    """ε lower bound: threshold chosen on a random half, counted on the other half."""
    return audit_strongest(
        {attack: scores},
        member,
        delta=delta,
        claimed_epsilon=claimed_epsilon,
        confidence=confidence,
        seed=seed,
    )


def audit_strongest(
    scores_by_attack: dict[str, np.ndarray],
    member: np.ndarray,
    *,
    delta: float,
    claimed_epsilon: float | None,
    confidence: float = 0.95,
    seed: int = 0,
) -> AuditResult:
    """ε lower bound from the best of several attacks: the attack and its threshold are both
    chosen on a random half of the records, and only that one pair is counted on the other
    half, so the choice costs no confidence."""
    if not scores_by_attack:
        raise ValueError("the audit needs at least one attack's scores")
    member = np.asarray(member).astype(int)
    alpha = 1 - confidence
    order = np.random.default_rng(seed).permutation(len(member))
    choose, count = order[: len(order) // 2], order[len(order) // 2 :]
    best: tuple[float, str, float] | None = None
    for attack, scores in scores_by_attack.items():
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != member.shape:
            raise ValueError(f"{attack}: {scores.shape[0]} scores for {len(member)} records")
        threshold, bound = _best_threshold(scores[choose], member[choose], delta, alpha)
        if best is None or bound > best[0]:
            best = (bound, attack, threshold)
    _, attack, threshold = best
    scores = np.asarray(scores_by_attack[attack], dtype=np.float64)
    bound = _bound_at(scores[count], member[count], threshold, delta, alpha)
    return AuditResult(
        epsilon_lower_bound=bound,
        confidence=confidence,
        claimed_epsilon=claimed_epsilon,
        delta=delta,
        attack=attack,
        threshold_half=len(choose),
        audit_half=len(count),
    )
