"""THE round loop of a federation, for both engines: client selection, one round of local
training through a client pool, the aggregation (plain or SecAgg+), the global model's
validation, the accountant, the best-round rule, the history, the checkpoint after every round
and the resume from it.

A `ClientPool` carries the messages: `LocalPool` (`medpriv.train.federated.engine`) calls the
clients in this process; `GridPool` (`medpriv.train.federated.flower_app`) sends Flower
messages to SuperNodes. Everything else — what a round means — exists here once; the engines
differ only in what they do after each round (`on_round`: checkpoint, progress, log lines).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from medpriv.privacy.randomness import NoiseSource
from medpriv.train.federated.client import ClientUpdate, LocalRecipe
from medpriv.train.federated.private import ClientLevelAccountant, SampleLevelAccountant
from medpriv.train.federated.server import (
    best_of,
    better_round,
    evaluate_weights,
    finish_round,
    finish_secure_round,
    load_federation,
    save_federation,
    select_clients,
)
from medpriv.train.federated.strategy import Strategy
from medpriv.train.federated.weights import Weights

if TYPE_CHECKING:
    from medpriv.train.federated.secagg import SecureRound

Replies = Mapping[str, ClientUpdate | str]  # a client's update, or why there is none


class ClientPool(Protocol):
    """The clients of a federation, however they are reached."""

    def names(self) -> list[str]:
        """Every client that may be chosen for a round."""
        ...

    def collect(
        self,
        chosen: list[str],
        weights: Weights,
        recipe: LocalRecipe,
        *,
        round_number: int,
        rounds: int,
    ) -> Replies | SecureRound:
        """One round of local training by the chosen clients: each one's update or why there
        is none, or, under SecAgg+, what the protocol revealed (the aggregate only)."""
        ...


@dataclass
class RoundPlan:
    """How the rounds run: the client recipe, the aggregation, the selection, the accountant
    (None for plain FedAvg; with `report_epsilon`, ε is written into every round's record)."""

    recipe: LocalRecipe
    strategy: Strategy
    rounds: int
    fraction: float
    min_clients: int
    seed: int
    accountant: SampleLevelAccountant | ClientLevelAccountant | None = None
    participation: NoiseSource | None = None  # Poisson client sampling (client-level DP)
    quiet: bool = False  # log nothing about who took part
    report_epsilon: bool = True
    checkpoint: Path | None = None  # written after every round
    meta: dict[str, Any] = field(default_factory=dict)  # what a resume must match
    # in process, the simulated clients' own privacy ledgers (as JSON), kept in the checkpoint
    ledgers: Callable[[], dict[str, str]] | None = None


@dataclass
class Federation:
    """The coordinator's state: the global model, the best one so far and the rounds' records."""

    weights: Weights
    best: Weights
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, weights: Weights) -> Federation:
        return cls(weights=weights, best=weights)

    @classmethod
    def resumed(cls, plan: RoundPlan) -> tuple[Federation, dict[str, str]]:
        """The federation as `plan.checkpoint` left it (the strategy's state restored in
        place, the accountant replayed over the rounds done), and the saved client ledgers."""
        assert plan.checkpoint is not None
        weights, best, history, ledgers = load_federation(
            plan.checkpoint, strategy=plan.strategy, meta=plan.meta
        )
        for record in history if plan.accountant is not None else []:
            plan.accountant.after_round(record, report=False)
        return cls(weights=weights, best=best, history=history), ledgers


RoundCallback = Callable[[int, Federation, dict[str, Any]], None]


def drive(
    pool: ClientPool,
    federation: Federation,
    plan: RoundPlan,
    *,
    validation: tuple[np.ndarray, np.ndarray],
    on_round: RoundCallback | None = None,
) -> Federation:
    """Rounds len(history)+1 .. plan.rounds (a resumed federation goes on where it stopped);
    `on_round(round, federation, record)` after each one."""
    x_val, y_val = validation
    accountant = plan.accountant
    best_record = best_of(federation.history)
    for round_number in range(len(federation.history) + 1, plan.rounds + 1):
        chosen = select_clients(
            pool.names(),
            fraction=plan.fraction,
            min_clients=plan.min_clients,
            seed=plan.seed,
            round_number=round_number,
            participation=plan.participation,
        )
        outcome = pool.collect(
            chosen,
            federation.weights,
            plan.recipe,
            round_number=round_number,
            rounds=plan.rounds,
        )
        finish = {"round_number": round_number, "min_clients": plan.min_clients}
        if isinstance(outcome, Mapping):
            weights, record = finish_round(
                plan.strategy, federation.weights, outcome, quiet=plan.quiet, **finish
            )
        else:
            weights, record = finish_secure_round(
                plan.strategy, federation.weights, outcome, **finish
            )
        record = {
            "epoch": round_number,
            **record,
            **evaluate_weights(weights, plan.recipe.hidden, x_val, y_val),
        }
        if accountant is not None:
            record.update(accountant.after_round(record, report=plan.report_epsilon))
        if isinstance(accountant, ClientLevelAccountant):
            record = accountant.redact(record)
        federation.weights = weights
        if better_round(record, best_record):
            federation.best, best_record = weights, record
        federation.history.append(record)
        if plan.checkpoint is not None:
            save_federation(
                plan.checkpoint,
                weights=federation.weights,
                best=federation.best,
                history=federation.history,
                strategy=plan.strategy,
                meta=plan.meta,
                ledgers=None if plan.ledgers is None else plan.ledgers(),
            )
        if on_round is not None:
            on_round(round_number, federation, record)
    return federation
