"""The one-run audit bound of Steinke, Nasr & Jagielski 2023 ("Privacy auditing with one (1)
training run", NeurIPS 2023, Theorem 3.1 / Algorithm 1 with the δ term of their Appendix D code).

m canaries are each included in the training run independently with probability ½ (coins the
auditor alone knows). After training the auditor scores every canary, guesses "in" for the k/2
highest scores and "out" for the k/2 lowest (or "in" for the k highest only), and abstains on
the rest: r = k guesses, v correct. Guesses may be any function of the scores (their Theorem 3.1
conditions on the guess pattern), so both ways of guessing are valid.
Under (ε, δ)-DP, P[v or more correct] ≤ P[Binomial(r, e^ε/(1+e^ε)) ≥ v] + 2mδ·α (α from the
tail's shape); the largest ε that this bound rejects at the chosen confidence is ε̂, a lower bound
on the mechanism's ε that holds with that confidence. k and the way of guessing are taken from a
fixed grid chosen before looking at the scores, with a Bonferroni correction over the grid, so
picking the best is paid for. Beside ε̂ the audit reports its power: the ε̂ it would show if
every guess were right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

STATISTIC = "one-run (Steinke, Nasr & Jagielski 2023), Bonferroni over the guess grid"
GUESS_SHARES = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # k / m, fixed before any score is seen
IN_ONLY_SHARES = (0.02, 0.05, 0.1, 0.2, 0.5)  # k / m guessing "in" only (at most the expected ½)
BOTH_WAYS, IN_ONLY = "in and out", "in only"
EPS_CEILING = 64.0  # the largest ε any audit statistic reports


@dataclass(frozen=True)
class OneRunBound:
    """ε̂ with its confidence and power; counts are of canaries (privacy units)."""

    epsilon_lower_bound: float
    max_demonstrable: float  # ε̂ if every guess at the chosen k were right
    confidence: float
    canaries: int  # m
    guesses: int  # r at the k that gave ε̂
    correct: int  # v
    delta: float
    guessing: str = BOTH_WAYS  # how the guesses that gave ε̂ were made
    statistic: str = STATISTIC

    def to_dict(self) -> dict:
        return asdict(self)


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[at least v of r guesses correct] under (ε, δ)-DP with m canaries (an upper bound)."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if not (epsilon >= 0 and 0 <= delta <= 1):
        raise ValueError(f"need ε >= 0 and 0 <= δ <= 1, got ε={epsilon}, δ={delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(1.0, tail)
    pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], ..., P[B = 0]
    alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(1.0, tail + 2.0 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    """The largest ε with p_value(ε) ≤ 1 − confidence (0 when even ε = 0 is not rejected)."""
    return _bound(m, r, v, float(delta), float(confidence))


@lru_cache(maxsize=4096)
def _bound(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    level = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) > level:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) <= level:
        if high >= EPS_CEILING:
            return EPS_CEILING
        low, high = high, min(2 * high, EPS_CEILING)
    for _ in range(40):
        middle = (low + high) / 2
        if p_value(m, r, v, middle, delta) <= level:
            low = middle
        else:
            high = middle
    return low


def guess_counts(m: int, shares: Sequence[float] = GUESS_SHARES) -> list[int]:
    """The grid of r (even, ≥ 2, ≤ m) the audit may use, fixed by m alone."""
    counts = sorted({min(m - m % 2, max(2, 2 * round(share * m / 2))) for share in shares})
    return [k for k in counts if 2 <= k <= m]


def audit_one_run(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    shares: Sequence[float] = GUESS_SHARES,
    in_only_shares: Sequence[float] = IN_ONLY_SHARES,
) -> OneRunBound:
    """ε̂ from canary scores (higher = more likely included) and the auditor's coins."""
    scores = np.asarray(scores, dtype=float)
    included = np.asarray(included, dtype=bool)
    if scores.shape != included.shape or scores.ndim != 1:
        raise ValueError("scores and included must be 1-D arrays of the same length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("canary scores must be finite")
    m = len(scores)
    grid = [(k, BOTH_WAYS) for k in guess_counts(m, shares)]
    grid += [(k, IN_ONLY) for k in guess_counts(m, in_only_shares)]
    if not grid:
        raise ValueError(f"an audit needs at least 2 canaries, got {m}")
    per_k = 1.0 - (1.0 - confidence) / len(grid)  # Bonferroni over the grid
    order = np.argsort(scores, kind="stable")
    best = None
    for k, guessing in grid:
        if guessing == BOTH_WAYS:
            low, high = order[: k // 2], order[m - k // 2 :]
            correct = int(included[high].sum() + (~included[low]).sum())
        else:
            correct = int(included[order[m - k :]].sum())
        found = epsilon_lower_bound(m, k, correct, delta, per_k)
        power = epsilon_lower_bound(m, k, k, delta, per_k)
        candidate = (found, power, k, correct, guessing)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    found, _, k, correct, guessing = best
    power = max(epsilon_lower_bound(m, k, k, delta, per_k) for k, _ in grid)
    return OneRunBound(
        epsilon_lower_bound=found,
        max_demonstrable=power,
        confidence=confidence,
        canaries=m,
        guesses=k,
        correct=correct,
        delta=delta,
        guessing=guessing,
    )
