"""The in-process engine: every client in this process, one after another, through the same
client and server code as the Flower deployment."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from medpriv.models import MLP
from medpriv.train.federated.client import LocalRecipe, client_seed, train_client
from medpriv.train.federated.server import evaluate_weights, finish_round, select_clients
from medpriv.train.federated.strategy import Strategy
from medpriv.train.federated.weights import Weights, get_weights

ClientData = Mapping[str, tuple[np.ndarray, np.ndarray]]
RoundCallback = Callable[[int, Weights, dict], None]


def initial_weights(
    in_features: int, hidden: tuple[int, ...], *, seed: int, positive_rate: float
) -> Weights:
    """The round-0 global model: seeded init, output bias at the validation prior's log-odds."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = MLP(in_features, hidden)
    network.start_at_prior(positive_rate)
    return get_weights(network)


def run_rounds(
    clients: ClientData,
    weights: Weights,
    *,
    recipe: LocalRecipe,
    strategy: Strategy,
    rounds: int,
    fraction: float,
    min_clients: int,
    seed: int,
    validation: tuple[np.ndarray, np.ndarray],
    start_round: int = 1,
    on_round: RoundCallback | None = None,
    poisson_clients: bool = False,
) -> Weights:
    """Rounds `start_round`..`rounds`; `on_round(round, weights, record)` after each one.

    A client whose training raises is recorded as dropped for that round (with the error) and
    the round goes on with the others. `poisson_clients`: each client joins a round
    independently with probability `fraction` (client-level DP accounting needs it).
    """
    x_val, y_val = validation
    for round_number in range(start_round, rounds + 1):
        chosen = select_clients(
            list(clients),
            fraction=fraction,
            min_clients=min_clients,
            seed=seed,
            round_number=round_number,
            poisson=poisson_clients,
        )
        replies = {}
        for name in chosen:
            x, y = clients[name]
            try:
                replies[name] = train_client(
                    weights, x, y, recipe=recipe, seed=client_seed(seed, round_number, name)
                )
            except Exception as exc:  # one failing hospital must not end the federation
                replies[name] = f"failed: {type(exc).__name__}: {exc}"
        weights, record = finish_round(
            strategy, weights, replies, round_number=round_number, min_clients=min_clients
        )
        record.update(evaluate_weights(weights, recipe.hidden, x_val, y_val))
        if on_round is not None:
            on_round(round_number, weights, record)
    return weights
