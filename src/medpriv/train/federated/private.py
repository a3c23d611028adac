"""Privacy accounting for federated learning.

* Sample-level DP (`fedavg-dp`): every client runs DP-SGD with Poisson sampling on its own
  patients; each patient is at one client, so the global model is as private as the least
  private client (parallel composition; the server's aggregation is post-processing). ε is the
  maximum over clients of each client's accountant, unit = patient.
* Client-level DP (`fedavg-cdp`): the server clips each client's update and adds Gaussian noise
  (DP-FedAvg); clients join each round independently with probability q. One accountant over
  (σ, q, rounds); unit = site: the guarantee covers a whole hospital's contribution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from medpriv.config import PrivacyConfig
from medpriv.errors import PrivacyError
from medpriv.privacy.accounting import (
    calibrate_noise,
    check_delta,
    default_delta,
    epsilon_spent,
)
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.federated.client import LocalRecipe
from medpriv.train.federated.strategy import DPFedAvg

SIZES_CAVEAT = (
    "each client's record count (its sampling rate and FedAvg weight) is treated as public, as "
    "DP-SGD treats the dataset size"
)


@lru_cache(maxsize=4096)
def _epsilon(accountant: str, sigma: float, q: float, steps: int, delta: float) -> float:
    return epsilon_spent(
        accountant=accountant, noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta
    )


@lru_cache(maxsize=1024)
def _sigma(accountant: str, target: float, q: float, steps: int, delta: float) -> float:
    """σ for a target ε; clients of equal size share one calibration (each takes ~1 s)."""
    return calibrate_noise(
        target_epsilon=target, delta=delta, sample_rate=q, steps=steps, accountant=accountant
    )


def _target(privacy: PrivacyConfig) -> float:
    if privacy.target_epsilon is None:
        raise PrivacyError("give a target ε (--target-epsilon) or --noise-multiplier")
    return float(privacy.target_epsilon)


@dataclass
class SampleLevelAccountant:
    """Per-client DP-SGD accountants; σ is the largest one any client needs for the target ε
    when it takes part in every planned round."""

    sizes: Mapping[str, int]
    recipe: LocalRecipe
    rounds: int
    privacy: PrivacyConfig
    n_units: int
    unit: str = "patient"
    sigma: float = field(init=False)
    delta: float = field(init=False)
    steps: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.delta = (
            self.privacy.delta if self.privacy.delta is not None else default_delta(self.n_units)
        )
        check_delta(self.delta, self.n_units)
        if self.privacy.noise_multiplier is not None:
            self.sigma = float(self.privacy.noise_multiplier)
        else:
            target = _target(self.privacy)
            self.sigma = max(
                _sigma(
                    self.privacy.accountant,
                    target,
                    self._rate(name),
                    self.rounds * self._per_round(name),
                    self.delta,
                )
                for name in self.sizes
            )
        self.steps = {name: 0 for name in self.sizes}

    def _rate(self, name: str) -> float:
        return self.recipe.sampling(self.sizes[name])[0]

    def _per_round(self, name: str) -> int:
        return self.recipe.epochs * self.recipe.sampling(self.sizes[name])[1]

    def private_recipe(self) -> LocalRecipe:
        return dataclasses.replace(
            self.recipe,
            noise_multiplier=self.sigma,
            max_grad_norm=self.privacy.max_grad_norm,
            dropout=0.0,
            proximal_mu=0.0,
        )

    def after_round(self, record: dict, *, report: bool = True) -> dict[str, float]:
        """Charge every client that was asked to train this round (answered or not); with
        `report`, the ε spent so far (one accountant call per client)."""
        for name in [*record["client_sizes"], *record["dropped"]]:
            if name in self.steps:
                self.steps[name] += self._per_round(name)
        return {"epsilon": self.epsilon()} if report else {}

    def client_epsilons(self) -> dict[str, float]:
        return {
            name: _epsilon(self.privacy.accountant, self.sigma, self._rate(name), steps, self.delta)
            for name, steps in self.steps.items()
        }

    def epsilon(self) -> float:
        return max(self.client_epsilons().values(), default=0.0)

    def spent(self, caveats: list[str]) -> PrivacySpent:
        epsilons = self.client_epsilons()
        worst = max(epsilons, key=lambda name: epsilons[name])
        return PrivacySpent(
            epsilon=epsilons[worst],
            delta=self.delta,
            accountant=self.privacy.accountant,
            sampling="poisson",
            unit=self.unit,
            level="sample",
            clipping_norm=self.privacy.max_grad_norm,
            noise_multiplier=self.sigma,
            steps=self.steps[worst],
            sample_rate=self._rate(worst),
            mechanism=(
                f"DP-SGD on every client; ε is the largest client's ({worst}), whose q and steps "
                "are shown"
            ),
            caveats=(*caveats, SIZES_CAVEAT),
        )


@dataclass
class ClientLevelAccountant:
    """DP-FedAvg: σ for the target ε over `rounds` rounds with client sampling rate q."""

    n_clients: int
    sample_rate: float
    rounds: int
    privacy: PrivacyConfig
    seed: int
    sigma: float = field(init=False)
    delta: float = field(init=False)
    rounds_done: int = 0

    def __post_init__(self) -> None:
        self.delta = (
            self.privacy.delta if self.privacy.delta is not None else default_delta(self.n_clients)
        )
        check_delta(self.delta, self.n_clients)
        if self.privacy.noise_multiplier is not None:
            self.sigma = float(self.privacy.noise_multiplier)
        else:
            self.sigma = _sigma(
                self.privacy.accountant,
                _target(self.privacy),
                self.sample_rate,
                self.rounds,
                self.delta,
            )

    def strategy(self) -> DPFedAvg:
        return DPFedAvg(
            clip=self.privacy.max_grad_norm,
            noise_multiplier=self.sigma,
            expected_clients=self.sample_rate * self.n_clients,
            seed=self.seed,
        )

    def after_round(self, record: dict, *, report: bool = True) -> dict[str, float]:
        self.rounds_done += 1
        return {"epsilon": self.epsilon()} if report else {}

    def epsilon(self) -> float:
        return _epsilon(
            self.privacy.accountant, self.sigma, self.sample_rate, self.rounds_done, self.delta
        )

    def spent(self, caveats: list[str]) -> PrivacySpent:
        return PrivacySpent(
            epsilon=self.epsilon(),
            delta=self.delta,
            accountant=self.privacy.accountant,
            sampling="poisson",
            unit="site",
            level="client",
            clipping_norm=self.privacy.max_grad_norm,
            noise_multiplier=self.sigma,
            steps=self.rounds_done,
            sample_rate=self.sample_rate,
            mechanism=(
                f"DP-FedAvg over {self.n_clients} clients: each client's update clipped and "
                "Gaussian noise added at the server; steps are rounds, q the client sampling rate"
            ),
            caveats=tuple(caveats),
        )
