"""What the server does each round, whichever engine carries the messages: pick clients,
check each reply, aggregate, and record the round."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from medpriv.errors import CheckpointError
from medpriv.metrics import auroc
from medpriv.models import MLP
from medpriv.privacy.randomness import NoiseSource
from medpriv.train.checkpoint import load_checkpoint, save_checkpoint
from medpriv.train.federated.client import ClientUpdate
from medpriv.train.federated.strategy import Strategy
from medpriv.train.federated.weights import Weights, n_bytes, set_weights, update_problems
from medpriv.untrusted import printable

if TYPE_CHECKING:  # Flower is imported only where SecAgg+ runs
    from medpriv.train.federated.secagg import SecureRound

log = logging.getLogger(__name__)


def clients_per_round(n_clients: int, *, fraction: float, min_clients: int) -> int:
    """max(min_clients, ⌈fraction·N⌉), at most N: the clients a round asks for."""
    return min(n_clients, max(min_clients, math.ceil(fraction * n_clients)))


def select_clients(
    names: Sequence[str],
    *,
    fraction: float,
    min_clients: int,
    seed: int,
    round_number: int,
    participation: NoiseSource | None = None,
) -> list[str]:
    """The round's clients: max(min_clients, ⌈fraction·N⌉) of them (at most N), drawn from
    (seed, round) alone — no guarantee rests on this choice; or, with `participation` (the
    coordinator's noise source, client-level DP), each client independently with probability
    `fraction` (possibly none), drawn from that source and never from the seed."""
    pool = sorted(names)
    if participation is not None:
        joins = participation.bernoulli_np(len(pool), fraction)
        return [name for name, joined in zip(pool, joins, strict=True) if joined]
    rng = np.random.default_rng([seed, round_number])
    k = clients_per_round(len(pool), fraction=fraction, min_clients=min_clients)
    return sorted(rng.choice(np.array(pool, dtype=object), size=k, replace=False).tolist())


def finish_round(
    strategy: Strategy,
    global_weights: Weights,
    replies: Mapping[str, ClientUpdate | str],
    *,
    round_number: int,
    min_clients: int,
    quiet: bool = False,
) -> tuple[Weights, dict[str, Any]]:
    """(new global weights, the round's record). A reply is a ClientUpdate or, for a client that
    failed, refused or did not answer, the reason as text. Malformed updates are rejected with a
    logged reason (not logged with `quiet`: who took part may not be disclosed); with fewer than
    `min_clients` accepted updates the global model stays as it was."""
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
    for name, reason in dropped.items() if not quiet else ():
        log.info(
            "round %d: client %s left out: %s", round_number, printable(name), printable(reason)
        )
    aggregated = len(accepted) >= min_clients
    weights = (
        strategy.aggregate(global_weights, list(accepted.values()))
        if aggregated
        else global_weights
    )
    record = _round_record(
        round_number,
        aggregated=aggregated,
        sizes={name: u.n_examples for name, u in accepted.items()},
        losses={name: u.train_loss for name, u in accepted.items()},
        dropped=dropped,
        bytes_down=n_bytes(global_weights) * len(replies),
        bytes_up=sum(n_bytes(u.weights) for u in accepted.values()),
    )
    reports = {name: _report(u) for name, u in accepted.items() if u.epsilon is not None}
    if reports:
        record["client_privacy"] = reports
    return weights, record


def _report(update: ClientUpdate) -> dict[str, Any]:
    """What a DP client reported of its own accountant: ε so far in this run, at its δ."""
    return {"epsilon": update.epsilon, "delta": update.delta, "noise": update.noise}


def finish_secure_round(
    strategy: Strategy,
    global_weights: Weights,
    outcome: SecureRound,
    *,
    round_number: int,
    min_clients: int,
) -> tuple[Weights, dict[str, Any]]:
    """`finish_round` for a SecAgg+ round: the server holds only the weighted mean of the
    surviving clients' weights, so a client is counted or dropped as a whole by the protocol, and
    the mean is checked instead of each update."""
    dropped = dict(sorted(outcome.dropped.items()))
    mean = outcome.mean
    if mean is not None:
        problems = update_problems(global_weights, mean)
        if problems:
            dropped.update(
                {
                    site: "rejected: the aggregate is " + "; ".join(problems)
                    for site in outcome.sizes
                }
            )
            mean = None
    for name, reason in dropped.items():
        log.info(
            "round %d: client %s left out: %s", round_number, printable(name), printable(reason)
        )
    sizes = outcome.sizes if mean is not None else {}
    aggregated = mean is not None and len(sizes) >= min_clients
    weights = strategy.from_mean(global_weights, mean) if aggregated else global_weights
    losses = {
        name: (None if float(m.get("train-loss", -1.0)) < 0 else float(m["train-loss"]))
        for name, m in outcome.metrics.items()
        if name in sizes
    }
    record = _round_record(
        round_number,
        aggregated=aggregated,
        sizes=sizes,
        losses=losses,
        dropped=dropped,
        bytes_down=outcome.bytes_down,
        bytes_up=outcome.bytes_up,
    )
    reports = {
        name: report
        for name, m in outcome.metrics.items()
        if name in sizes and (report := report_from_metrics(m)) is not None
    }
    if reports:
        record["client_privacy"] = reports
    record["secure_aggregation"] = "SecAgg+" if outcome.halted is None else outcome.halted
    return weights, record


def report_from_metrics(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """A DP client's own ε report from its reply metrics (None for a plain client)."""
    epsilon = float(metrics.get("epsilon", -1.0))
    if epsilon < 0:
        return None
    reproducible = float(metrics.get("reproducible-noise", 0.0)) > 0
    return {
        "epsilon": epsilon,
        "delta": float(metrics["delta"]),
        "noise": "reproducible" if reproducible else "csprng",
    }


def _round_record(
    round_number: int,
    *,
    aggregated: bool,
    sizes: dict[str, int],
    losses: dict[str, float | None],
    dropped: dict[str, str],
    bytes_down: int,
    bytes_up: int,
) -> dict[str, Any]:
    return {
        "round": round_number,
        "clients": len(sizes),
        "aggregated": aggregated,
        "client_sizes": sizes,
        "client_train_loss": losses,
        "dropped": dropped,
        "bytes_down": int(bytes_down),
        "bytes_up": int(bytes_up),
    }


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


def round_key(record: dict) -> tuple[float, float]:
    """How rounds compare: validation AUROC, then the lower validation loss."""
    return record["val_auroc"], -record["val_loss"]


def best_of(history: list[dict]) -> dict | None:
    """The best round so far (the first of equals), None before any round."""
    return max(history, key=round_key, default=None)


def better_round(record: dict, than: dict | None) -> bool:
    """Strictly better than `than` by `round_key` (True against None)."""
    return than is None or round_key(record) > round_key(than)


def save_federation(
    path: Path,
    *,
    weights: Weights,
    best: Weights,
    history: list[dict],
    strategy: Strategy,
    meta: dict[str, Any],
    ledgers: Mapping[str, str] | None = None,
) -> None:
    """The coordinator's state after a round: global and best weights, strategy state,
    history, `meta` (what a resume must match) and, in process, the simulated clients' privacy
    ledgers (name -> JSON; a deployment's clients keep their own). No noise state: every
    resume draws from a fresh source."""
    state = {f"w{i}": torch.from_numpy(np.asarray(w)) for i, w in enumerate(weights)}
    state.update({f"b{i}": torch.from_numpy(np.asarray(w)) for i, w in enumerate(best)})
    state.update({f"s_{k}": torch.from_numpy(np.asarray(v)) for k, v in strategy.state().items()})
    extra = {"client_ledgers": dict(ledgers)} if ledgers else {}
    save_checkpoint(path, state=state, meta={**meta, "history": history, **extra})


def load_federation(
    path: Path, *, strategy: Strategy, meta: dict[str, Any]
) -> tuple[Weights, Weights, list[dict], dict[str, str]]:
    """(global weights, best weights, history, client ledgers) from `save_federation`; the
    strategy's state is restored in place. A checkpoint written with other `meta` is refused."""
    state, saved = load_checkpoint(path)
    history = saved.pop("history", [])
    ledgers = saved.pop("client_ledgers", {})
    saved.pop("format", None)
    changed = sorted(k for k in set(meta) | set(saved) if meta.get(k) != saved.get(k))
    if changed:
        raise CheckpointError(
            f"checkpoint {path} was written by a different federated run (differs in "
            f"{', '.join(changed)}); start fresh without resuming"
        )
    n = len([k for k in state if k.startswith("w")])
    strategy.load_state({k[2:]: v.numpy() for k, v in state.items() if k.startswith("s_")})
    return (
        [state[f"w{i}"].numpy() for i in range(n)],
        [state[f"b{i}"].numpy() for i in range(n)],
        list(history),
        dict(ledgers),
    )
