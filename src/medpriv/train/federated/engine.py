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
from medpriv.train.federated.rounds import Federation, RoundPlan, drive
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


class LocalPool:
    """The in-process `ClientPool`: every client in this process, one after another. A client
    whose training raises is recorded as failed for that round (with the error), one whose
    policy refuses the recipe as refused (with its reason); the round goes on with the
    others."""

    def __init__(self, clients: ClientData, *, seed: int) -> None:
        self.clients = {
            name: c if isinstance(c, LocalClient) else LocalClient(name, *c)
            for name, c in clients.items()
        }
        self.seed = seed

    def names(self) -> list[str]:
        return list(self.clients)

    def collect(
        self,
        chosen: list[str],
        weights: Weights,
        recipe: LocalRecipe,
        *,
        round_number: int,
        rounds: int,
    ) -> dict[str, ClientUpdate | str]:
        replies: dict[str, ClientUpdate | str] = {}
        for name in chosen:
            try:
                replies[name] = self.clients[name].fit(
                    weights,
                    recipe,
                    round_number=round_number,
                    seed=client_seed(self.seed, round_number, name),
                    rounds_left=rounds - round_number + 1,
                )
            except ClientRefusal as exc:
                replies[name] = f"refused: {exc}"
            except Exception as exc:  # one failing hospital must not end the federation
                replies[name] = f"failed: {type(exc).__name__}: {exc}"
        return replies


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
    on_round: RoundCallback | None = None,
    participation: NoiseSource | None = None,
) -> Weights:
    """A federation without an accountant from round 1 through the one round driver
    (`medpriv.train.federated.rounds.drive`); `on_round(round, weights, record)` after each
    round. Returns the last global weights."""
    plan = RoundPlan(
        recipe=recipe,
        strategy=strategy,
        rounds=rounds,
        fraction=fraction,
        min_clients=min_clients,
        seed=seed,
        participation=participation,
    )
    federation = drive(
        LocalPool(clients, seed=seed),
        Federation.start(weights),
        plan,
        validation=validation,
        on_round=None
        if on_round is None
        else lambda number, state, record: on_round(number, state.weights, record),
    )
    return federation.weights
