"""SecAgg+ rounds through Flower's own protocol code, with the ClientApp called in this process
(a loopback stand-in for the SuperLink; the real deployment is in test_flower_deployment.py).

The coordinator must get the records-weighted mean of the clients' weights — and nothing that is
one client's update — and must still unmask when a client drops out after sharing its keys."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import asdict

import numpy as np
import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from medpriv.config import DataConfig, SplitConfig
from medpriv.train.federated.client import LocalRecipe, client_seed, train_client
from medpriv.train.federated.engine import initial_weights
from medpriv.train.federated.flower_app import coordinator_validation
from medpriv.train.federated.flower_client import client_app
from medpriv.train.federated.job import FederatedJob, client_arrays
from medpriv.train.federated.secagg import SecAggSettings, quantization_range, secure_round
from medpriv.train.federated.server import finish_secure_round
from medpriv.train.federated.strategy import FedAvg
from medpriv.train.federated.weights import weighted_mean

SPEC = "synthetic:1500"
SITES = ("CCU", "MICU", "SICU")
RECIPE = LocalRecipe(hidden=(16,), epochs=1, batch_size=64, lr=0.05)


class LoopbackGrid:
    """Delivers each pushed message to the ClientApp of its node, in this process; a node in
    `fail_at` (node id -> stage name) answers that stage with an error, as a crashed node would."""

    def __init__(self, contexts: dict[int, Context], fail_at: dict[int, str] | None = None):
        self.contexts = contexts
        self.fail_at = fail_at or {}
        self.replies: dict[str, Message] = {}
        self.masked: dict[int, list[bytes]] = {}

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            message = copy.deepcopy(message)  # what the wire does: each node gets its own copy
            node = message.metadata.dst_node_id
            stage = message.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]
            if self.fail_at.get(node) == stage:
                reply = Message(Error(code=1, reason="node crashed"), reply_to=message)
            else:
                try:
                    reply = client_app(message, self.contexts[node])
                except Exception as ex:  # what flwr-clientapp replies when the app raises
                    reason = str(type(ex)) + ":<'" + str(ex) + "'>"
                    reply = Message(Error(code=3, reason=reason), reply_to=message)
                    self.replies[message_id] = reply
                    ids.append(message_id)
                    continue
                configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
                if configs is not None and Key.MASKED_PARAMETERS in configs:
                    self.masked[node] = list(configs[Key.MASKED_PARAMETERS])
            self.replies[message_id] = reply
            ids.append(message_id)
        return ids

    def pull_messages(self, ids):
        return [self.replies.pop(i) for i in list(ids) if i in self.replies]


@pytest.fixture(autouse=True)
def _server_identity():
    """What Flower sets in a ServerApp process before it builds messages."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture(scope="module")
def setup():
    job = FederatedJob(
        data=asdict(DataConfig(spec=SPEC)),
        split=asdict(SplitConfig()),
        seed=0,
        recipe=RECIPE.to_config(),
        strategy="fedavg",
        rounds=1,
        fraction=1.0,
        min_clients=2,
        out="unused",
    )
    pre, x_val, _ = coordinator_validation(job)
    shared = {
        "preprocessor": json.dumps(pre.state_dict()),
        "val-fraction": SplitConfig().val_fraction,
        "test-fraction": SplitConfig().test_fraction,
        "private": False,
    }
    weights = initial_weights(x_val.shape[1], RECIPE.hidden, seed=0, positive_rate=0.1)
    clients = {
        site: client_arrays(
            job.data_config(),
            site=site,
            split_seed=0,
            split=job.split_config(),
            preprocessor_state=pre.state_dict(),
        )
        for site in SITES
    }
    return shared, weights, clients


def _contexts(policies: dict[str, dict] | None = None) -> tuple[dict[str, int], dict[int, Context]]:
    nodes = {site: 101 + i for i, site in enumerate(SITES)}
    contexts = {
        node: Context(
            run_id=1,
            node_id=node,
            node_config={
                "data": SPEC,
                "site": site,
                "split-seed": 0,
                **(policies or {}).get(site, {}),
            },
            state=RecordDict(),
            run_config={},
        )
        for site, node in nodes.items()
    }
    return nodes, contexts


def _round(setup, fail_at: dict[str, str] | None = None):
    shared, weights, clients = setup
    nodes, contexts = _contexts()
    grid = LoopbackGrid(contexts, {nodes[s]: stage for s, stage in (fail_at or {}).items()})
    configs = {
        site: {
            **shared,
            **RECIPE.to_config(),
            "seed": client_seed(0, 1, site),
            "round": 1,
            "secagg-clip": 8.0,
        }
        for site in SITES
    }
    outcome = secure_round(
        grid,
        nodes=nodes,
        fit_configs=configs,
        weights=weights,
        sizes={site: len(x) for site, (x, _) in clients.items()},
        round_number=1,
        timeout=5.0,
        poll=0.0,
        settings=SecAggSettings(),
    )
    plain = {
        site: train_client(weights, x, y, recipe=RECIPE, seed=client_seed(0, 1, site))
        for site, (x, y) in clients.items()
    }
    return outcome, plain, grid


def _max_diff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_the_coordinator_gets_the_weighted_mean_and_no_single_update(setup):
    outcome, plain, grid = _round(setup)
    assert outcome.halted is None and outcome.dropped == {}
    assert outcome.sizes == {site: u.n_examples for site, u in plain.items()}
    expected = weighted_mean([(u.weights, float(u.n_examples)) for u in plain.values()])
    assert _max_diff(outcome.mean, expected) <= 1e-6  # quantization step 1.5e-8
    # What crossed the wire from each client is masked: integers spread over the whole modulus,
    # unrelated to that client's weights.
    from flwr.common import bytes_to_ndarray

    for node, site in zip(sorted(grid.masked), SITES, strict=True):
        masked = np.concatenate([bytes_to_ndarray(b).ravel() for b in grid.masked[node]][1:])
        mine = np.concatenate([w.ravel() for w in plain[site].weights])
        assert np.issubdtype(masked.dtype, np.integer) and masked.max() > 2**31
        assert abs(np.corrcoef(masked.astype(np.float64), mine)[0, 1]) < 0.1
    assert outcome.bytes_up > 3 * sum(w.nbytes for w in expected)


def test_a_client_lost_after_sharing_keys_is_unmasked_from_its_neighbours_shares(setup):
    outcome, plain, _ = _round(setup, fail_at={"MICU": "collect_masked_vectors"})
    assert outcome.halted is None
    assert set(outcome.sizes) == {"CCU", "SICU"}
    assert "collect masked vectors" in outcome.dropped["MICU"]
    expected = weighted_mean(
        [(plain[s].weights, float(plain[s].n_examples)) for s in ("CCU", "SICU")]
    )
    assert _max_diff(outcome.mean, expected) <= 1e-6
    new, record = finish_secure_round(FedAvg(), setup[1], outcome, round_number=1, min_clients=2)
    assert record["aggregated"] and record["clients"] == 2 and "MICU" in record["dropped"]
    assert _max_diff(new, outcome.mean) == 0.0  # FedAvg adopts the mean


def test_too_few_clients_left_halts_the_round_and_keeps_the_model(setup):
    outcome, _, _ = _round(setup, fail_at={"MICU": "setup", "SICU": "setup"})
    assert outcome.mean is None and "setup" in outcome.halted
    assert set(outcome.dropped) == set(SITES)
    kept, record = finish_secure_round(FedAvg(), setup[1], outcome, round_number=1, min_clients=2)
    assert not record["aggregated"] and record["clients"] == 0
    assert _max_diff(kept, setup[1]) == 0.0


def test_quantization_range_leaves_room_for_the_sum():
    for n in range(2, 200):
        q = quantization_range(n)
        assert n * q < 2**32 and q <= 2**30 and 2 * n * q >= 2**32 / 2


def test_a_node_whose_policy_refuses_a_dp_round_drops_out_of_the_secure_round(setup):
    """Under SecAgg+ a refusal is an error reply: the node is dropped with its reason, its
    neighbours' shares unmask the rest, and the others' own ε reports reach the coordinator."""
    from medpriv.train.federated.policy import NO_BUDGET, ClientPolicy

    shared, weights, clients = setup
    budget = ClientPolicy(max_epsilon=50.0).node_config()
    nodes, contexts = _contexts({"CCU": budget, "SICU": budget})  # MICU has no budget
    private = LocalRecipe(
        hidden=(16,), epochs=1, batch_size=64, lr=0.05, noise_multiplier=1.0, max_grad_norm=1.0
    )
    configs = {
        site: {
            **shared,
            "private": True,
            **private.to_config(),
            "round": 1,
            "planned-rounds": 1,
            "secagg-clip": 8.0,
        }
        for site in SITES
    }
    outcome = secure_round(
        LoopbackGrid(contexts),
        nodes=nodes,
        fit_configs=configs,
        weights=weights,
        sizes={site: len(x) for site, (x, _) in clients.items()},
        round_number=1,
        timeout=5.0,
        poll=0.0,
        settings=SecAggSettings(),
    )
    assert outcome.halted is None and set(outcome.sizes) == {"CCU", "SICU"}
    assert "collect masked vectors" in outcome.dropped["MICU"]
    assert NO_BUDGET in outcome.dropped["MICU"]
    _, record = finish_secure_round(FedAvg(), weights, outcome, round_number=1, min_clients=2)
    assert record["aggregated"] and set(record["client_privacy"]) == {"CCU", "SICU"}
    assert all(0 < r["epsilon"] <= 50 for r in record["client_privacy"].values())
