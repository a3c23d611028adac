"""What the server does each round, whichever engine carries the messages: pick clients,
check each reply, aggregate, and record the round."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from medpriv.metrics import auroc
from medpriv.models import MLP
from medpriv.train.federated.client import ClientUpdate
from medpriv.train.federated.strategy import Strategy
from medpriv.train.federated.weights import Weights, n_bytes, set_weights, update_problems

log = logging.getLogger(__name__)


def select_clients(
    names: Sequence[str],
    *,
    fraction: float,
    min_clients: int,
    seed: int,
    round_number: int,
    poisson: bool = False,
) -> list[str]:
    """The round's clients, drawn from (seed, round) alone: max(min_clients, ⌈fraction·N⌉) of
    them (at most N); or, with `poisson` (client-level DP), each client independently with
    probability `fraction` (possibly none)."""
    pool = sorted(names)
    rng = np.random.default_rng([seed, round_number])
    if poisson:
        return [name for name, u in zip(pool, rng.random(len(pool)), strict=True) if u < fraction]
    k = min(len(pool), max(min_clients, math.ceil(fraction * len(pool))))
    return sorted(rng.choice(np.array(pool, dtype=object), size=k, replace=False).tolist())


def finish_round(
    strategy: Strategy,
    global_weights: Weights,
    replies: Mapping[str, ClientUpdate | str],
    *,
    round_number: int,
    min_clients: int,
) -> tuple[Weights, dict[str, Any]]:
    """(new global weights, the round's record). A reply is a ClientUpdate or, for a client that
    failed or did not answer, the reason as text. Malformed updates are rejected with a logged
    reason; with fewer than `min_clients` accepted updates the global model stays as it was."""
    accepted: dict[str, ClientUpdate] = {}
    dropped: dict[str, str] = {}
    for name, reply in sorted(replies.items()):
        if isinstance(reply, str):
            dropped[name] = reply
            continue
        problems = update_problems(global_weights, reply.weights)
        if reply.n_examples < 1:
            problems.append(f"n_examples must be >= 1, got {reply.n_examples}")
        if problems:
            dropped[name] = "rejected: " + "; ".join(problems)
        else:
            accepted[name] = reply
    for name, reason in dropped.items():
        log.info("round %d: client %s left out: %s", round_number, name, reason)
    aggregated = len(accepted) >= min_clients
    weights = (
        strategy.aggregate(global_weights, list(accepted.values()))
        if aggregated
        else global_weights
    )
    record = {
        "round": round_number,
        "clients": len(accepted),
        "aggregated": aggregated,
        "client_sizes": {name: u.n_examples for name, u in accepted.items()},
        "client_train_loss": {name: u.train_loss for name, u in accepted.items()},
        "dropped": dropped,
        "bytes_down": n_bytes(global_weights) * len(replies),
        "bytes_up": sum(n_bytes(u.weights) for u in accepted.values()),
    }
    return weights, record


@torch.no_grad()
def evaluate_weights(
    weights: Weights, hidden: Sequence[int], x: np.ndarray, y: np.ndarray
) -> dict[str, float]:
    """Validation loss and AUROC of a global model (eval mode)."""
    network = MLP(x.shape[1], tuple(hidden))
    set_weights(network, weights)
    network.eval()
    logits = network(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    margin = (logits[:, 1] - logits[:, 0]).numpy()
    return {"val_loss": float(F.cross_entropy(logits, labels)), "val_auroc": auroc(y, margin)}
