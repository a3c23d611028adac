"""What one client (hospital) does in a round: train the global model on its own rows.

Shared verbatim by the in-process engine and the Flower ClientApp. A plain (non-private) round
takes its randomness (batch order, dropout) from `seed`, which the server derives from (run
seed, round, client name) with `client_seed`: no guarantee rests on it, and both engines then
give the same weights. A DP round (fedavg-dp) takes none of its randomness from the server: its
Poisson masks and Gaussian noise come from a `NoiseSource` the client creates itself
(`medpriv.privacy`'s `noisy_clipped_sum`), after its own policy admitted the recipe
(`medpriv.train.federated.policy`). torch's global RNG is left as it was.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from medpriv.config import TrainConfig
from medpriv.errors import ProtocolError
from medpriv.models import MLP
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.step import noisy_clipped_sum
from medpriv.train.federated.policy import ClientPolicy, PrivacyLedger, admit
from medpriv.train.federated.weights import Weights, get_weights, set_weights

if TYPE_CHECKING:
    from medpriv.privacy.audit.canaries import DiracCanaries

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class LocalRecipe:
    """How a client trains in one round (a fresh optimizer each round, as in FedAvg)."""

    hidden: tuple[int, ...]
    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    dropout: float = 0.0
    proximal_mu: float = 0.0  # FedProx: + mu/2 ||w - w_global||² on every step
    # Sample-level DP (fedavg-dp): DP-SGD on the client, Poisson sampling with rate
    # min(1, batch_size / n) for round(1/q) steps per local epoch, per-sample clipping, noise.
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None

    @property
    def private(self) -> bool:
        return self.noise_multiplier is not None

    def sampling(self, n_examples: int) -> tuple[float, int]:
        """DP: (Poisson rate q, steps per local epoch) for a client with n examples."""
        q = min(1.0, self.batch_size / n_examples)
        return q, max(1, round(1 / q))

    @classmethod
    def from_train_config(cls, config: TrainConfig) -> LocalRecipe:
        """The client recipe from a resolved TrainConfig (epochs are local epochs)."""
        return cls(
            hidden=tuple(config.hidden),
            epochs=int(config.epochs),
            batch_size=int(config.batch_size),
            lr=float(config.lr),
            optimizer=str(config.optimizer),
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            dropout=float(config.dropout),
        )

    def to_config(self) -> dict[str, int | float | str]:
        """Flat scalars (hidden as "128,64"), as a Flower ConfigRecord holds them."""
        values = asdict(self)
        values["hidden"] = ",".join(str(h) for h in self.hidden)
        for key in ("noise_multiplier", "max_grad_norm"):  # ConfigRecord has no None
            values[key] = -1.0 if values[key] is None else values[key]
        return values

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> LocalRecipe:
        """The inverse of to_config; missing or ill-typed values are a ProtocolError."""
        try:
            recipe = cls(
                hidden=tuple(int(h) for h in str(values["hidden"]).split(",") if h),
                epochs=int(values["epochs"]),
                batch_size=int(values["batch_size"]),
                lr=float(values["lr"]),
                optimizer=str(values["optimizer"]),
                momentum=float(values["momentum"]),
                weight_decay=float(values["weight_decay"]),
                dropout=float(values["dropout"]),
                proximal_mu=float(values["proximal_mu"]),
                noise_multiplier=_optional(values.get("noise_multiplier", -1.0)),
                max_grad_norm=_optional(values.get("max_grad_norm", -1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed local training recipe: {exc!r}") from None
        problems = recipe.problems()
        if problems:
            raise ProtocolError("invalid local training recipe: " + "; ".join(problems))
        return recipe

    def problems(self) -> list[str]:
        found = []
        if any(h < 1 for h in self.hidden):  # no hidden layer: the logistic model
            found.append("hidden widths must be positive")
        if self.epochs < 1 or self.batch_size < 1:
            found.append("epochs and batch_size must be >= 1")
        if not self.lr > 0:
            found.append("lr must be > 0")
        if self.optimizer not in OPTIMIZERS:
            found.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if not 0 <= self.dropout < 1 or self.proximal_mu < 0:
            found.append("dropout must be in [0, 1) and proximal_mu >= 0")
        if self.private and not (
            self.noise_multiplier >= 0 and self.max_grad_norm is not None and self.max_grad_norm > 0
        ):
            found.append("DP clients need noise_multiplier >= 0 and max_grad_norm > 0")
        if self.private and self.dropout > 0:
            found.append("DP clients train without dropout")
        return found


def _optional(value: Any) -> float | None:
    """Negative stands for None in plain configs."""
    value = float(value)
    return None if value < 0 else value


@dataclass(frozen=True)
class ClientUpdate:
    """A client's reply: its new weights, how many examples it trained on, its mean loss
    (None under DP: a loss on training batches would be released without noise), the steps
    taken and, under DP, the Poisson rate, the ε (at δ) its own accountant reports for this run
    so far, and where its noise came from ("csprng" or "reproducible")."""

    weights: Weights
    n_examples: int
    train_loss: float | None
    steps: int
    sample_rate: float | None = None
    epsilon: float | None = None
    delta: float | None = None
    noise: str | None = None


def client_seed(seed: int, round_number: int, client: str) -> int:
    """A stable per-(run, round, client) seed (crc32, not Python's salted hash)."""
    return zlib.crc32(f"{seed}:{round_number}:{client}".encode())


def train_client(
    global_weights: Weights,
    x: np.ndarray,
    y: np.ndarray,
    *,
    recipe: LocalRecipe,
    seed: int,
    noise: NoiseSource | None = None,
    canaries: DiracCanaries | None = None,
) -> ClientUpdate:
    """Start from the global weights; `recipe.epochs` passes over the client's rows in shuffled
    mini-batches of mean cross-entropy (plus the FedProx term), or DP-SGD steps for a private
    recipe; return the new weights. A private recipe draws every mask and all its noise from
    `noise` (a fresh CSPRNG source when None), never from `seed`; `canaries` (the white-box
    audit's own run only) join every private step."""
    if len(x) == 0:
        raise ValueError("a client needs at least one training row")
    features = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    if recipe.private:
        with torch.random.fork_rng(devices=[]):  # the initial values are overwritten
            network = MLP(features.shape[1], recipe.hidden)
        set_weights(network, global_weights)
        network.train()
        optimizer = _optimizer(network, recipe)
        return _train_private(
            network, optimizer, features, labels, recipe, noise or NoiseSource.fresh(), canaries
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = MLP(features.shape[1], recipe.hidden, dropout=recipe.dropout)
        set_weights(network, global_weights)
        anchor = [p.detach().clone() for p in network.parameters()]
        optimizer = _optimizer(network, recipe)
        generator = torch.Generator().manual_seed(seed)
        network.train()
        loss_sum, steps = 0.0, 0
        for _ in range(recipe.epochs):
            order = torch.randperm(len(features), generator=generator)
            for start in range(0, len(order), recipe.batch_size):
                idx = order[start : start + recipe.batch_size]
                loss = F.cross_entropy(network(features[idx]), labels[idx])
                loss_sum += float(loss.detach())
                if recipe.proximal_mu > 0:
                    drift = sum(
                        (p - a).square().sum()
                        for p, a in zip(network.parameters(), anchor, strict=True)
                    )
                    loss = loss + 0.5 * recipe.proximal_mu * drift
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
    return ClientUpdate(
        weights=get_weights(network),
        n_examples=len(features),
        train_loss=loss_sum / max(steps, 1),
        steps=steps,
    )


def _train_private(
    network: MLP,
    optimizer: torch.optim.Optimizer,
    features: torch.Tensor,
    labels: torch.Tensor,
    recipe: LocalRecipe,
    noise: NoiseSource,
    canaries: DiracCanaries | None = None,
) -> ClientUpdate:
    """DP-SGD (Abadi et al. 2016) with Poisson sampling, through the privacy core: each step
    (Σ clipped per-sample gradients + N(0, (σC)²)) / (q·n), masks and noise from `noise`. The
    proximal term is not used under DP."""
    n = len(features)
    q, per_epoch = recipe.sampling(n)
    sigma, clip = float(recipe.noise_multiplier), float(recipe.max_grad_norm)
    params = list(network.parameters())
    steps = 0
    for _ in range(recipe.epochs * per_epoch):
        chosen = noise.poisson_mask(n, q)
        summed = noisy_clipped_sum(
            network,
            features[chosen],
            labels[chosen],
            max_grad_norm=clip,
            noise_multiplier=sigma,
            noise=noise,
            canaries=canaries,
        )
        with torch.no_grad():
            for p, g in zip(params, summed, strict=True):
                p.grad = g.div_(q * n)
        optimizer.step()
        steps += 1
    return ClientUpdate(
        weights=get_weights(network),
        n_examples=n,
        train_loss=None,
        steps=steps,
        sample_rate=q,
        noise=noise.kind,
    )


@dataclass
class LocalClient:
    """One in-process site: its rows, its own privacy policy and ledger (its accountant).

    A DP recipe is admitted by the policy (or refused with `ClientRefusal`), charged to the
    ledger, and trained with noise from a source this client creates each round; `seed`, the
    server's, only drives plain rounds. `report_epsilon` adds the ledger's ε to each update (one
    accountant call per round; off for attackers' shadow copies)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    policy: ClientPolicy = field(default_factory=ClientPolicy)
    ledger: PrivacyLedger = field(default_factory=PrivacyLedger)
    report_epsilon: bool = True
    run: str = "in-process"
    canaries: DiracCanaries | None = None  # the white-box audit's own run only

    def fit(
        self,
        global_weights: Weights,
        recipe: LocalRecipe,
        *,
        round_number: int,
        seed: int,
        rounds_left: int = 1,
    ) -> ClientUpdate:
        if not recipe.private:
            return train_client(global_weights, self.x, self.y, recipe=recipe, seed=seed)
        return private_round(
            global_weights,
            self.x,
            self.y,
            recipe=recipe,
            policy=self.policy,
            ledger=self.ledger,
            client=self.name,
            run=self.run,
            round_number=round_number,
            rounds_left=rounds_left,
            report_epsilon=self.report_epsilon,
            canaries=self.canaries,
        )


def private_round(
    global_weights: Weights,
    x: np.ndarray,
    y: np.ndarray,
    *,
    recipe: LocalRecipe,
    policy: ClientPolicy,
    ledger: PrivacyLedger,
    client: str,
    run: str,
    round_number: int,
    rounds_left: int = 1,
    report_epsilon: bool = True,
    canaries: DiracCanaries | None = None,
    federation_delta: float | None = None,
) -> ClientUpdate:
    """One DP round on a client: admit (or refuse) the recipe under the client's own policy,
    charge its ledger, train with the client's own noise, report the ledger's ε for `run` (at
    the smaller of its own δ and `federation_delta`)."""
    q, per_epoch = recipe.sampling(len(x))
    admitted = admit(
        policy,
        ledger,
        noise_multiplier=float(recipe.noise_multiplier),
        max_grad_norm=float(recipe.max_grad_norm),
        sample_rate=q,
        steps=recipe.epochs * per_epoch,
        n_examples=len(x),
        run=run,
        rounds_left=rounds_left,
        federation_delta=federation_delta,
    )
    noise = policy.noise_source(client=client, round_number=round_number)
    update = train_client(
        global_weights, x, y, recipe=recipe, seed=0, noise=noise, canaries=canaries
    )
    epsilon = (
        ledger.epsilon(accountant=policy.accountant, delta=admitted.delta, run=run)
        if report_epsilon
        else None
    )
    return replace(update, epsilon=epsilon, delta=admitted.delta)


def _optimizer(network: MLP, recipe: LocalRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(
            network.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
        )
    return torch.optim.SGD(
        network.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
