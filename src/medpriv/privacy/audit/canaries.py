"""White-box gradient canaries for DP-SGD (Dirac canaries, Nasr et al. 2023; Steinke, Nasr &
Jagielski 2023 §5): m extra privacy units whose per-sample gradient is a fixed vector of norm
`raw_norm` on a coordinate of its own.

Each canary is included in the audit's training run independently with probability ½ (coins
drawn from the operating system's CSPRNG, known only to the auditor) and, when included, is
Poisson-sampled at every step with the run's rate q, like any patient. A sampled canary's
gradient goes through the step's own clipping function and is added to the noisy sum, so a
fault in sampling, clipping or noise reaches the canaries exactly as it reaches the patients.

The adversary is the one DP-SGD's proof allows: it sees every noisy sum and knows every other
record, so it subtracts their clipped gradients and observes, at each canary's coordinate,
noise plus that canary's clipped gradient when sampled. Each canary's score is the
log-likelihood ratio of "included" against "not included" summed over the steps: with
x = observation / C, a step contributes log(1 − q + q·exp((2x − 1) / (2s²))), with the claimed
q and s the noise scale read from the observations themselves (a robust spread of every
canary's observations, coins unseen — so the score stays a function of the output alone, as
the one-run bound requires, and stays sharp when the noise is not what was claimed).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from medpriv.privacy.randomness import NoiseSource

RAW_NORM_FACTOR = 10.0  # a canary's gradient before clipping, in units of C
ClipFactors = Callable[[torch.Tensor], torch.Tensor]


class DiracCanaries:
    """m gradient canaries on distinct coordinates of the flat parameter vector."""

    def __init__(
        self,
        *,
        canaries: int,
        parameters: int,
        max_grad_norm: float,
        noise_multiplier: float,
        sample_rate: float,
        noise: NoiseSource,
        seed: int,
    ) -> None:
        if not 2 <= canaries <= parameters:
            raise ValueError(
                f"need 2 <= canaries <= parameters ({parameters}), got {canaries} canaries"
            )
        if not (noise_multiplier > 0 and 0 < sample_rate <= 1 and max_grad_norm > 0):
            raise ValueError("canaries need the claimed σ > 0, 0 < q <= 1 and C > 0")
        # Where the canaries sit is public (the run seed); whether each is in is not.
        self.coordinates = torch.from_numpy(
            np.random.default_rng([seed, 0xCA]).choice(parameters, canaries, replace=False)
        )
        self.included = NoiseSource.fresh().bernoulli_np(canaries, 0.5)
        self._members = torch.from_numpy(np.flatnonzero(self.included))
        self.max_grad_norm, self.sigma, self.rate = max_grad_norm, noise_multiplier, sample_rate
        self.raw_norm = RAW_NORM_FACTOR * max_grad_norm
        self.noise = noise
        self._observed: list[np.ndarray] = []

    @property
    def m(self) -> int:
        return len(self.coordinates)

    @property
    def steps(self) -> int:
        return len(self._observed)

    @property
    def observations(self) -> np.ndarray:
        """What the adversary observed at each canary's coordinate, in units of C (steps × m)."""
        return np.stack(self._observed) if self._observed else np.zeros((0, self.m))

    @property
    def noise_scale(self) -> float:
        """The per-step noise s in units of C, estimated from every observation."""
        return noise_scale(self.observations, self.sigma)

    @property
    def scores(self) -> np.ndarray:
        """Each canary's log-likelihood ratio over every step so far (higher = included)."""
        return llr_scores(self.observations, rate=self.rate, scale=self.noise_scale)

    def inject_(self, flat: torch.Tensor, clip_factors: ClipFactors) -> None:
        """Add the sampled canaries' clipped gradients to the noisy flat sum (which holds only
        noise so far) and score what the adversary then observes at every canary coordinate."""
        sampled = self._members[self.noise.poisson_mask(len(self._members), self.rate)]
        if len(sampled):
            norms = torch.full((len(sampled),), self.raw_norm, dtype=flat.dtype)
            clipped = clip_factors(norms) * self.raw_norm
            flat.index_add_(0, self.coordinates[sampled].to(flat.device), clipped.to(flat.device))
        observed = flat[self.coordinates.to(flat.device)].float().cpu().numpy()
        self._observed.append(observed / self.max_grad_norm)


def noise_scale(observations: np.ndarray, claimed_sigma: float) -> float:
    """The per-step noise in units of C read from observations alone (median absolute
    deviation: most observations are pure noise), floored at 0.1% of the claimed σ."""
    x = np.asarray(observations, dtype=float).reshape(-1)
    if not len(x):
        return claimed_sigma
    spread = 1.4826 * float(np.median(np.abs(x - np.median(x))))
    return max(spread, 1e-3 * claimed_sigma)


def llr_scores(observations: np.ndarray, *, rate: float, scale: float) -> np.ndarray:
    """Per canary (column), the log-likelihood ratio of "included" over "not included" summed
    over the steps (rows): a step contributes log(1 − q + q·exp((2x − 1) / (2s²)))."""
    x = np.asarray(observations)
    total = np.zeros(x.shape[1] if x.ndim == 2 else 0)
    absent = np.log1p(-rate) if rate < 1 else -np.inf
    for rows in np.array_split(x, max(1, x.size // 4_000_000)):  # a few MB at a time
        present = np.log(rate) + (2 * rows.astype(float) - 1) / (2 * scale**2)
        total += np.logaddexp(absent, present).sum(axis=0)
    return total
