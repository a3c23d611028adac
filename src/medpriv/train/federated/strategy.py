"""Server-side aggregation: FedAvg (sample-weighted), FedProx (FedAvg's aggregation; its
proximal term lives in the client recipe) and FedAdam (Reddi et al. 2021: Adam on the
pseudo-gradient, the mean client update)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medpriv.train.federated.client import ClientUpdate
from medpriv.train.federated.weights import Weights, weighted_mean

STRATEGIES = ("fedavg", "fedprox", "fedadam")


@dataclass
class FedAvg:
    """New global = the clients' weights averaged with weights n_examples (McMahan et al. 2017)."""

    name: str = "fedavg"

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        return weighted_mean([(u.weights, float(u.n_examples)) for u in updates])

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        return None


@dataclass
class FedAdam:
    """w ← w + η·m̂/(√v̂ + τ) with m, v the Adam moments of Δ = mean update − w (no bias
    correction, as in Reddi et al. and Flower's FedAdam)."""

    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    name: str = "fedadam"
    _m: list[np.ndarray] = field(default_factory=list)
    _v: list[np.ndarray] = field(default_factory=list)

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        mean = weighted_mean([(u.weights, float(u.n_examples)) for u in updates])
        delta = [m.astype(np.float64) - g for m, g in zip(mean, global_weights, strict=True)]
        if not self._m:
            self._m = [np.zeros_like(d) for d in delta]
            self._v = [np.zeros_like(d) for d in delta]
        out = []
        for i, (g, d) in enumerate(zip(global_weights, delta, strict=True)):
            self._m[i] = self.beta1 * self._m[i] + (1 - self.beta1) * d
            self._v[i] = self.beta2 * self._v[i] + (1 - self.beta2) * d * d
            step = self.server_lr * self._m[i] / (np.sqrt(self._v[i]) + self.tau)
            out.append((g + step).astype(np.float32))
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {
            **{f"m{i}": m for i, m in enumerate(self._m)},
            **{f"v{i}": v for i, v in enumerate(self._v)},
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        n = len([k for k in state if k.startswith("m")])
        self._m = [np.asarray(state[f"m{i}"], dtype=np.float64) for i in range(n)]
        self._v = [np.asarray(state[f"v{i}"], dtype=np.float64) for i in range(n)]


Strategy = FedAvg | FedAdam


def make_strategy(name: str, *, server_lr: float = 0.01) -> Strategy:
    """The server's aggregation for a strategy name."""
    if name in ("fedavg", "fedprox"):
        return FedAvg(name=name)
    if name == "fedadam":
        return FedAdam(server_lr=server_lr)
    raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
