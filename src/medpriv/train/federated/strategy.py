"""Server-side aggregation: FedAvg (sample-weighted), FedProx (FedAvg's aggregation; its
proximal term lives in the client recipe) and FedAdam (Reddi et al. 2021: Adam on the
pseudo-gradient, the mean client update)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.step import clipped_noisy_update_sum
from medpriv.train.federated.client import ClientUpdate
from medpriv.train.federated.weights import Weights, weighted_mean

if TYPE_CHECKING:
    from medpriv.privacy.audit.canaries import DiracCanaries

STRATEGIES = ("fedavg", "fedprox", "fedadam")


@dataclass
class FedAvg:
    """New global = the clients' weights averaged with weights n_examples (McMahan et al. 2017)."""

    name: str = "fedavg"

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        return self.from_mean(global_weights, _mean(updates))

    def from_mean(self, global_weights: Weights, mean: Weights) -> Weights:
        """The new global model from the records-weighted mean of the clients' weights (all a
        server sees under secure aggregation)."""
        return [np.asarray(m, dtype=np.float32) for m in mean]

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
        return self.from_mean(global_weights, _mean(updates))

    def from_mean(self, global_weights: Weights, mean: Weights) -> Weights:
        """One Adam step on Δ = mean − w."""
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


@dataclass
class DPFedAvg:
    """Client-level DP (DP-FedAvg, McMahan et al. 2018): each client's update Δᵢ = wᵢ − w is
    clipped to L2 norm `clip` (over all arrays together), the clipped updates are summed, Gaussian
    noise N(0, (σ·clip)²) is added to every coordinate, and the sum is divided by the expected
    number of clients q·N (a fixed denominator, so one client changes the mean by at most
    clip/(qN)). Every client counts equally. The noise comes from `noise`, the coordinator's
    source: fresh from the CSPRNG for every run and every resume, never saved."""

    clip: float
    noise_multiplier: float
    expected_clients: float
    noise: NoiseSource
    rounds_done: int = 0
    canaries: DiracCanaries | None = None  # canary clients: the white-box audit's own run only
    # The server strategy the noisy mean is handed to (post-processing of the DP release, as
    # Flower's DifferentialPrivacyServerSideFixedClipping wraps any strategy): FedAvg takes it
    # as the new model, FedAdam takes an Adam step towards it.
    inner: FedAvg | FedAdam = field(default_factory=FedAvg)

    @property
    def name(self) -> str:
        return f"dp-{self.inner.name}"

    def aggregate(self, global_weights: Weights, updates: Sequence[ClientUpdate]) -> Weights:
        self.rounds_done += 1
        start = _flat(global_weights)
        deltas = torch.stack([_flat(u.weights) - start for u in updates]) if updates else None
        total = clipped_noisy_update_sum(
            start.new_empty((0, start.numel())) if deltas is None else deltas,
            max_norm=self.clip,
            noise_multiplier=self.noise_multiplier,
            noise=self.noise,
            canaries=self.canaries,
        )
        flat = (start + total / self.expected_clients).numpy()
        parts = np.split(flat, np.cumsum([g.size for g in global_weights])[:-1])
        noisy_mean = [
            part.reshape(np.shape(g)).astype(np.float32)
            for part, g in zip(parts, global_weights, strict=True)
        ]
        return self.inner.from_mean(global_weights, noisy_mean)

    def state(self) -> dict[str, np.ndarray]:
        return {"rounds_done": np.asarray(self.rounds_done), **self.inner.state()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.rounds_done = int(state.get("rounds_done", 0))
        self.inner.load_state({k: v for k, v in state.items() if k != "rounds_done"})


Strategy = FedAvg | FedAdam | DPFedAvg


def _flat(weights: Weights) -> torch.Tensor:
    """All arrays of a model as one float64 vector."""
    return torch.from_numpy(np.concatenate([np.asarray(w, np.float64).ravel() for w in weights]))


def _mean(updates: Sequence[ClientUpdate]) -> Weights:
    return weighted_mean([(u.weights, float(u.n_examples)) for u in updates])


def make_strategy(name: str, *, server_lr: float = 0.01) -> Strategy:
    """The server's aggregation for a strategy name."""
    if name in ("fedavg", "fedprox"):
        return FedAvg(name=name)
    if name == "fedadam":
        return FedAdam(server_lr=server_lr)
    raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
