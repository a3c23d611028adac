"""Poisson subsampling, the sampling every reported ε assumes (each row independently, with
probability q, at every step). The masks come from a `NoiseSource`, never from torch's global
RNG, so a checkpoint's RNG state or the run seed cannot replay them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from medpriv.errors import PrivacyError
from medpriv.privacy.randomness import NoiseSource

# How a training loop gets its batches: given n rows, the index tensors of one epoch's steps.
BatchSampler = Callable[[int], Iterator[torch.Tensor]]


class PoissonBatches:
    """DP-SGD's sampler: each step includes every row independently with probability q.

    An epoch is `steps_per_epoch` steps; batches may be empty (the step then adds pure noise).
    """

    def __init__(self, *, sample_rate: float, steps_per_epoch: int, noise: NoiseSource) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample rate must be in (0, 1], got {sample_rate}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps per epoch must be >= 1, got {steps_per_epoch}")
        self.sample_rate = sample_rate
        self.steps_per_epoch = steps_per_epoch
        self.noise = noise

    def __call__(self, n: int) -> Iterator[torch.Tensor]:
        for _ in range(self.steps_per_epoch):
            yield self.noise.poisson_mask(n, self.sample_rate)


def require_poisson(sampler: object) -> PoissonBatches:
    """ε is only reported for Poisson subsampling; anything else is refused."""
    if not isinstance(sampler, PoissonBatches):
        raise PrivacyError(
            f"refusing to report ε: sampler {type(sampler).__name__} is not Poisson sampling, "
            "which the accountant assumes"
        )
    return sampler
