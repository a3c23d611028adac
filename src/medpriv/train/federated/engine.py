"""The in-process engine: every client in this process, one after another, through the same
client and server code as the Flower deployment."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from medpriv.config import MIN_FEDERATED_CLIENTS
from medpriv.errors import TooLittleDataError
from medpriv.models import MLP
from medpriv.privacy.randomness import NoiseSource
from medpriv.train.federated.client import ClientUpdate, LocalClient, LocalRecipe, client_seed
from medpriv.train.federated.policy import ClientRefusal
from medpriv.train.federated.server import evaluate_weights, finish_round, select_clients
from medpriv.train.federated.strategy import Strategy
from medpriv.train.federated.weights import Weights, get_weights

# Each client: a LocalClient (its own policy and ledger), or its (x, y) for a client without a
# policy of its own (it then accepts any recipe: tests and plain FedAvg).
ClientData = Mapping[str, LocalClient | tuple[np.ndarray, np.ndarray]]
RoundCallback = Callable[[int, Weights, dict], None]


def check_enough_clients(
    n_clients: int,
    *,
    min_clients: int,
    source: str,
    fix: str = "add sites, use --partition iid:K, or lower --min-client-size",
) -> None:
    """Refuse a federation that could never aggregate a round: fewer clients than
    max(`MIN_FEDERATED_CLIENTS`, `min_clients`) would leave the initial model untrained.
    `source` says where the clients came from (e.g. "--partition site"), `fix` what to do."""
    least = max(MIN_FEDERATED_CLIENTS, min_clients)
    if n_clients < least:
        raise TooLittleDataError(
            f"too few clients: {source} gives {n_clients} client(s) with enough records, fewer "
            f"than the minimum of {least} (a federation needs {MIN_FEDERATED_CLIENTS}; "
            f"federated.min_clients is {min_clients}), so no model would be trained; {fix}"
        )


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
    participation: NoiseSource | None = None,
    quiet: bool = False,
) -> Weights:
    """Rounds `start_round`..`rounds`; `on_round(round, weights, record)` after each one.

    A client whose training raises is recorded as dropped for that round (with the error), one
    whose policy refuses the recipe as refused (with its reason), and the round goes on with the
    others. `participation`: each client joins a round independently with probability
    `fraction`, drawn from this source (client-level DP); `quiet`: log nothing about who took
    part.
    """
    x_val, y_val = validation
    pool = {
        name: c if isinstance(c, LocalClient) else LocalClient(name, *c)
        for name, c in clients.items()
    }
    for round_number in range(start_round, rounds + 1):
        chosen = select_clients(
            list(pool),
            fraction=fraction,
            min_clients=min_clients,
            seed=seed,
            round_number=round_number,
            participation=participation,
        )
        replies: dict[str, ClientUpdate | str] = {}
        for name in chosen:
            try:
                replies[name] = pool[name].fit(
                    weights,
                    recipe,
                    round_number=round_number,
                    seed=client_seed(seed, round_number, name),
                    rounds_left=rounds - round_number + 1,
                )
            except ClientRefusal as exc:
                replies[name] = f"refused: {exc}"
            except Exception as exc:  # one failing hospital must not end the federation
                replies[name] = f"failed: {type(exc).__name__}: {exc}"
        weights, record = finish_round(
            strategy,
            weights,
            replies,
            round_number=round_number,
            min_clients=min_clients,
            quiet=quiet,
        )
        record.update(evaluate_weights(weights, recipe.hidden, x_val, y_val))
        if on_round is not None:
            on_round(round_number, weights, record)
    return weights
