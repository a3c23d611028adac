"""Secure aggregation for the Flower engine: SecAgg+ (Bell et al. 2020) on Flower's own protocol
code — the four stages of `SecAggPlusWorkflow` on the coordinator, `secaggplus_mod` on every
SuperNode — driven round by round from our push/pull loop.

Each client uploads its weights multiplied by its share of the round's records, quantized to
integers and masked: pairwise masks that cancel in the sum, plus a self mask whose seed is
secret-shared among its neighbours. The coordinator learns only the records-weighted mean over
the clients that finished the masking stage (clients that drop out after sharing keys are
unmasked from their neighbours' shares), and each client's record count and training metrics,
which are sent in the clear as in every FedAvg deployment.

What it does not give (stated in the README): integrity against a malicious client (a masked
update cannot be inspected, so the per-client checks of plain rounds do not apply), and strong
masks — Flower 1.41 derives every mask from a 32-bit seed with NumPy's Mersenne Twister, which
a determined server could search; it protects against an honest-but-curious coordinator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import FitIns, FitRes, Parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import (
    SecAggPlusWorkflow,
    WorkflowState,
)
from flwr.serverapp import Grid

from medpriv.errors import ConfigError
from medpriv.train.federated.messaging import exchange

if TYPE_CHECKING:
    from medpriv.train.federated.weights import Weights

STAGES = ("setup", "share keys", "collect masked vectors", "unmask")


@dataclass(frozen=True)
class SecAggSettings:
    """SecAgg+ parameters. `shares`: the fraction of the round's clients each secret is shared
    with (1.0 = all, the original SecAgg); `threshold`: the fraction of those shares needed to
    unmask (more = safer against collusion, less tolerant of dropouts); every client's weights
    must lie in ±`clipping_range` (they are quantized on that range)."""

    shares: float = 1.0
    threshold: float = 0.67
    clipping_range: float = 8.0

    def __post_init__(self) -> None:
        if not 0 < self.shares <= 1 or not 0 < self.threshold <= 1:
            raise ConfigError("SecAgg+ shares and threshold are fractions in (0, 1]")
        if self.clipping_range <= 0:
            raise ConfigError("SecAgg+ clipping_range must be > 0")


def quantization_range(n_clients: int) -> int:
    """The largest power of two q ≤ 2³⁰ with n·q < 2³² (the sum of n quantized values must not
    wrap around the 2³² modulus; Flower quantizes into int32). With ±8 that is a step of
    1.5e-8 for up to three clients."""
    return min(2**30, 2 ** (32 - math.ceil(math.log2(n_clients + 1))))


def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's `secaggplus_mod` for the messages of a SecAgg+ round; other TRAIN messages pass
    straight through (the same ClientApp serves plain and secure runs)."""
    from flwr.client.mod import secaggplus_mod

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


@dataclass
class SecureRound:
    """What the coordinator learned in one SecAgg+ round."""

    mean: Weights | None  # the records-weighted mean of the surviving clients' weights
    sizes: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0
    halted: str | None = None  # why the protocol stopped before unmasking, if it did


class _Node:
    """What the workflow needs of a Flower ClientProxy: its node id."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


class _Collector:
    """The legacy Strategy the workflow talks to: hands out each site's instructions and keeps
    the unmasked aggregate."""

    def __init__(self, fit_configs: Mapping[int, dict[str, Any]]) -> None:
        self.fit_configs = fit_configs
        self.results: list[tuple[_Node, FitRes]] = []
        self.parameters: Parameters | None = None

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any):
        return [
            (_Node(nid), FitIns(parameters, dict(cfg))) for nid, cfg in self.fit_configs.items()
        ]

    def aggregate_fit(self, server_round: int, results: list, failures: list):
        self.results = list(results)
        self.parameters = results[0][1].parameters if results else None
        return self.parameters, {}


class _CountingGrid:
    """`send_and_receive` over `exchange` (our poll interval), recording bytes and, per node, the
    first stage it failed; nodes without a good reply are left out, as the workflow expects."""

    def __init__(self, grid: Grid, timeout: float, poll: float) -> None:
        self.grid, self.timeout, self.poll = grid, timeout, poll
        self.stage = 0
        self.failed: dict[int, str] = {}
        self.bytes_down = 0
        self.bytes_up = 0

    def send_and_receive(self, messages: Sequence[Message], timeout: float | None = None):
        by_node = {m.metadata.dst_node_id: m for m in messages}
        self.bytes_down += sum(_payload_bytes(m) for m in messages)
        replies = exchange(self.grid, by_node, self.timeout, self.poll)
        good = []
        for node, reply in replies.items():
            if isinstance(reply, str):
                self.failed.setdefault(int(node), f"SecAgg+ {STAGES[self.stage]} stage: {reply}")
            else:
                self.bytes_up += _payload_bytes(reply)
                good.append(reply)
        self.stage += 1
        return good


def _payload_bytes(message: Message) -> int:
    """Bytes of arrays and byte strings a message carries (the protocol's payload)."""
    total = 0
    for record in message.content.array_records.values():
        total += sum(len(array.data) for array in record.values())
    for record in message.content.config_records.values():
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            total += sum(len(v) for v in items if isinstance(v, bytes))
    return total


def secure_round(
    grid: Grid,
    *,
    nodes: Mapping[str, int],
    fit_configs: Mapping[str, dict[str, Any]],
    weights: Weights,
    sizes: Mapping[str, int],
    round_number: int,
    timeout: float,
    poll: float,
    settings: SecAggSettings,
) -> SecureRound:
    """One SecAgg+ round with the sites in `fit_configs` (site -> its TRAIN config), reached at
    `nodes` (site -> node id). Only the aggregate comes back; a site that does not finish a stage
    is recorded as dropped with the stage."""
    site_of = {nodes[site]: site for site in fit_configs}
    chosen = sorted(fit_configs)
    if len(chosen) < 2:
        reason = "SecAgg+ needs at least 2 clients in a round"
        return SecureRound(mean=None, dropped=dict.fromkeys(chosen, reason), halted=reason)
    workflow = SecAggPlusWorkflow(
        num_shares=float(settings.shares),
        reconstruction_threshold=float(settings.threshold),
        max_weight=float(sum(sizes[site] for site in chosen)),
        clipping_range=settings.clipping_range,
        quantization_range=quantization_range(len(chosen)),
        timeout=timeout,
    )
    collector = _Collector({nodes[site]: fit_configs[site] for site in chosen})
    context = SimpleNamespace(
        state=RecordDict(
            {
                "parameters": ArrayRecord([np.asarray(w) for w in weights]),
                "config": ConfigRecord({"current_round": round_number}),
            }
        ),
        strategy=collector,
        client_manager=SimpleNamespace(num_available=lambda: len(nodes)),
        history=SimpleNamespace(add_metrics_distributed_fit=lambda **_: None),
    )
    io = _CountingGrid(grid, timeout, poll)
    state = WorkflowState()
    halted = None
    for name, stage in zip(
        STAGES,
        (
            workflow.setup_stage,
            workflow.share_keys_stage,
            workflow.collect_masked_vectors_stage,
            workflow.unmask_stage,
        ),
        strict=True,
    ):
        if not stage(io, context, state):
            halted = f"SecAgg+ halted in the {name} stage: too few clients left to unmask"
            break
    outcome = SecureRound(mean=None, bytes_down=io.bytes_down, bytes_up=io.bytes_up)
    survivors = {proxy.node_id for proxy, _ in collector.results}
    for node, site in site_of.items():
        if halted is not None:
            outcome.dropped[site] = io.failed.get(node, halted)
        elif node not in survivors:
            outcome.dropped[site] = io.failed.get(node, "left out of the SecAgg+ round")
    if halted is not None or collector.parameters is None:
        outcome.halted = halted or "SecAgg+ produced no aggregate"
        return outcome
    for proxy, fitres in collector.results:
        site = site_of[proxy.node_id]
        outcome.sizes[site] = int(fitres.num_examples)
        outcome.metrics[site] = dict(fitres.metrics)
    outcome.mean = [
        np.asarray(a, dtype=np.float64).astype(np.float32).reshape(np.shape(w))
        for a, w in zip(parameters_to_ndarrays(collector.parameters), weights, strict=True)
    ]
    return outcome
