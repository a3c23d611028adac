"""The randomness a privacy guarantee rests on: fresh from the operating system's CSPRNG.

Every draw an ε depends on — DP noise, Poisson masks, accounted client sampling, the mechanism of
an objective-perturbation fit — comes from a `NoiseSource`. `NoiseSource.fresh()` seeds its
generators from `secrets` (the OS CSPRNG) once per run and per resume; the seed is never kept,
returned, logged, pickled or written anywhere, so nobody who reads what medpriv writes (the run
seed, results.json, checkpoints, messages) can replay the noise. The run seed keeps governing
what is no part of a guarantee: splits, initialisation, attack pools, attacker-side simulations.

`NoiseSource.reproducible(seed)` replays the same noise for a seed: for debugging, tests, and
attacker-side simulations (shadow models). A model trained with it carries no guarantee, and the
trainers say so (`PrivacySpent.noise`).

A fresh source draws Gaussian noise as Opacus's `secure_mode` does (after Holohan & Braghin
2021, the Gaussian counterpart of Mironov 2012's floating-point attack on Laplace): a discarded
first draw, then the sum of four N(0, σ²/4) draws, which closes the gaps in the float grid that
let an observer tell which sample a single draw came from. A reproducible source, which carries
no guarantee anyway, draws once (same distribution, a quarter of the cost).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence

import numpy as np
import torch

FRESH = "csprng"
REPRODUCIBLE = "reproducible"
# What results.json and the report say about a model trained with replayable noise.
NO_GUARANTEE = (
    "trained with --reproducible-noise: its noise and Poisson masks can be regenerated from the "
    "run seed, so it carries NO differential-privacy guarantee (for debugging and tests only)"
)


class NoiseSource:
    """Generators for privacy noise and sampling; see the module docstring.

    Use `fresh()` (the default everywhere a guarantee is claimed) or `reproducible(seed)`.
    """

    __slots__ = ("_generators", "_numpy", "_seed", "kind")

    def __init__(self, *, _seed: int | None, _kind: str) -> None:
        self.kind = _kind
        self._seed = _seed  # only for reproducible sources; a fresh one keeps no seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self._numpy = np.random.default_rng(
            secrets.randbits(128) if _seed is None else [int(_seed), 0x5EED]
        )

    @classmethod
    def fresh(cls) -> NoiseSource:
        """Seeded from the OS CSPRNG; the seed is never stored."""
        return cls(_seed=None, _kind=FRESH)

    @classmethod
    def reproducible(cls, seed: int) -> NoiseSource:
        """The same draws for the same seed: no guarantee rests on these."""
        return cls(_seed=int(seed), _kind=REPRODUCIBLE)

    @classmethod
    def for_run(cls, *, reproducible: bool, seed: int) -> NoiseSource:
        """`fresh()`, or `reproducible(seed)` when the user asked for replayable noise."""
        return cls.reproducible(seed) if reproducible else cls.fresh()

    @property
    def guaranteed(self) -> bool:
        """True when nobody can replay the draws (a guarantee may rest on them)."""
        return self.kind == FRESH

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """The torch generator for tensors on `device` (one per device, seeded once)."""
        device = torch.device(device)
        if device not in self._generators:
            if self._seed is None:
                material = secrets.randbits(63)
            else:
                material = (int(self._seed) * 1_000_003 + len(self._generators)) % (2**63)
            self._generators[device] = torch.Generator(device=device).manual_seed(material)
        return self._generators[device]

    # --- draws ------------------------------------------------------------------------------

    def gaussian_(self, out: torch.Tensor, std: float) -> torch.Tensor:
        """Fill `out` with N(0, std²) noise (secure-mode draw); zeros when std is 0."""
        if std < 0:
            raise ValueError(f"noise standard deviation must be >= 0, got {std}")
        if std == 0:
            return out.zero_()
        generator = self.generator(out.device)
        if not self.guaranteed:
            return out.normal_(0.0, std, generator=generator)
        torch.normal(0.0, std, size=(1,), generator=generator, device=out.device)  # discarded
        out.normal_(0.0, std, generator=generator)
        draw = torch.empty_like(out)
        for _ in range(3):
            out.add_(draw.normal_(0.0, std, generator=generator))
        return out.div_(2.0)

    def gaussian(self, shape: Sequence[int], std: float, *, like: torch.Tensor) -> torch.Tensor:
        """A new tensor of N(0, std²) noise with `like`'s dtype and device."""
        out = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
        return self.gaussian_(out, std)

    def poisson_mask(
        self, n: int, rate: float, *, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """The sorted indices of a Poisson sample: each of n rows independently with probability
        `rate`. Drawn as the gaps between successes of the Bernoulli process (geometric with
        parameter `rate`), so the work is O(rate·n), not O(n)."""
        if not 0 < rate <= 1:
            raise ValueError(f"sample rate must be in (0, 1], got {rate}")
        if rate == 1:
            return torch.arange(n, device=device)
        generator = self.generator(device)
        mean = rate * n
        draws = int(mean + 6 * math.sqrt(mean) + 16)
        chunks, last = [], -1
        while last < n:
            gaps = torch.empty(draws, dtype=torch.float64, device=device)
            positions = last + gaps.geometric_(rate, generator=generator).cumsum(0).long()
            chunks.append(positions)
            last = int(positions[-1])
        found = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        return found[found < n]

    def bernoulli_np(self, n: int, rate: float) -> np.ndarray:
        """n independent coins with P(True) = rate (e.g. accounted client participation)."""
        return self._numpy.random(n) < rate

    def uniform_np(self) -> float:
        """One uniform draw in [0, 1) (e.g. the hidden number of trials of a private selection)."""
        return float(self._numpy.random())

    def numpy_seed(self) -> int:
        """A seed for a library that takes one (e.g. diffprivlib's `random_state`): drawn from
        this source, so it is as unreplayable as the source itself, and never stored."""
        return int(self._numpy.integers(0, 2**32 - 1))

    # --- never serialised -------------------------------------------------------------------

    def __reduce__(self):
        raise TypeError("a NoiseSource is never pickled or saved: draw a fresh one on resume")

    def __repr__(self) -> str:
        return f"NoiseSource({self.kind})"
