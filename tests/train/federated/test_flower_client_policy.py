"""A SuperNode owns its privacy: TRAIN messages through the real ClientApp (in this process),
with the node's policy in its own node config. A recipe below its σ, above its clipping norm or
over its budget is refused with the reason (a reply, not a crash) and recorded as dropped; no
message can make its noise replayable; its ledger holds across runs."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from medpriv.config import DataConfig, SplitConfig
from medpriv.errors import ProtocolError
from medpriv.train.federated.client import LocalRecipe
from medpriv.train.federated.engine import initial_weights
from medpriv.train.federated.flower_app import _as_update, coordinator_validation
from medpriv.train.federated.flower_client import client_app
from medpriv.train.federated.job import FederatedJob
from medpriv.train.federated.policy import NO_BUDGET, ClientPolicy, PrivacyLedger
from medpriv.train.federated.server import finish_round
from medpriv.train.federated.strategy import FedAvg

SPEC = "synthetic:1500"
RECIPE = LocalRecipe(
    hidden=(8,), epochs=1, batch_size=64, lr=0.05, noise_multiplier=1.0, max_grad_norm=1.0
)


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
        min_clients=1,
        out="unused",
    )
    pre, x_val, _ = coordinator_validation(job)
    shared = {
        "preprocessor": json.dumps(pre.state_dict()),
        "val-fraction": SplitConfig().val_fraction,
        "test-fraction": SplitConfig().test_fraction,
        "private": True,
    }
    return shared, initial_weights(x_val.shape[1], RECIPE.hidden, seed=0, positive_rate=0.1)


def _context(policy: dict, *, run: int = 1, ledger=None) -> Context:
    config = {"data": SPEC, "site": "MICU", "split-seed": 0, **policy}
    if ledger is not None:
        config["privacy-ledger"] = str(ledger)
    return Context(run_id=run, node_id=7, node_config=config, state=RecordDict(), run_config={})


def _train(setup, context: Context, recipe=RECIPE, **extra) -> Message:
    shared, weights = setup
    config = {**shared, **recipe.to_config(), "round": 1, "planned-rounds": 1, **extra}
    message = Message(
        content=RecordDict(
            {
                "arrays": ArrayRecord([np.asarray(w) for w in weights]),
                "config": ConfigRecord(config),
            }
        ),
        dst_node_id=context.node_id,
        message_type=MessageType.TRAIN,
    )
    return client_app(message, context)


def _refusal(reply: Message) -> str:
    assert not reply.has_error()
    return str(reply.content.config_records["refusal"]["reason"])


def test_a_supernode_refuses_a_recipe_below_its_noise_or_above_its_clipping_norm(setup):
    policy = ClientPolicy(max_epsilon=20.0, min_noise_multiplier=1.5, max_grad_norm=0.5)
    context = _context(policy.node_config())
    reply = _train(setup, context)
    reason = _refusal(reply)
    assert "below this client's minimum of 1.5" in reason
    assert "above this client's maximum of 0.5" in reason
    # The coordinator records it as dropped with the reason, and the round goes on.
    update = _as_update(reply)
    assert update == f"refused: {reason}"
    _, record = finish_round(FedAvg(), setup[1], {"MICU": update}, round_number=1, min_clients=1)
    assert record["dropped"] == {"MICU": f"refused: {reason}"} and not record["aggregated"]
    # Nothing was charged: the node's ledger is empty.
    saved = context.state.config_records.get("privacy-ledger")
    assert saved is None or PrivacyLedger.from_json(str(saved["entries"])).entries == []


def test_a_supernode_without_a_budget_refuses_dp_and_one_over_budget_refuses_the_plan(setup):
    assert _refusal(_train(setup, _context({}))) == NO_BUDGET
    tight = _context(ClientPolicy(max_epsilon=3.0).node_config())
    reason = _refusal(_train(setup, tight, **{"planned-rounds": 50}))
    assert "over this client's budget of ε = 3" in reason and "50 more round(s)" in reason
    # σ = 0 cannot be forced on it either.
    silent = replace(RECIPE, noise_multiplier=0.0)
    assert "ε = inf" in _refusal(_train(setup, _context({"max-epsilon": 100.0}), silent))


def test_a_supernode_draws_its_own_noise_and_reports_its_own_epsilon(setup, tmp_path):
    policy = ClientPolicy(max_epsilon=20.0).node_config()
    first = _train(setup, _context(policy, ledger=tmp_path / "a.json"))
    # A message asking for replayable noise and carrying a seed changes nothing.
    second = _train(
        setup,
        _context(policy, ledger=tmp_path / "b.json"),
        seed=0,
        **{"reproducible-noise": True, "noise-seed": 0},
    )
    a, b = _as_update(first), _as_update(second)
    assert not isinstance(a, str) and not isinstance(b, str)
    assert not all(np.array_equal(x, y) for x, y in zip(a.weights, b.weights, strict=True))
    assert a.noise == b.noise == "csprng" and 0 < a.epsilon <= 20.0 and a.train_loss is None
    ledger = PrivacyLedger.from_json((tmp_path / "a.json").read_text())
    assert ledger.history() == ((1.0, a.sample_rate, a.steps),)
    _, record = finish_round(FedAvg(), setup[1], {"MICU": a}, round_number=1, min_clients=1)
    assert record["client_privacy"]["MICU"] == {
        "epsilon": a.epsilon,
        "delta": a.delta,
        "noise": "csprng",
    }


def test_only_the_nodes_own_config_makes_its_noise_replayable(setup):
    policy = ClientPolicy(max_epsilon=20.0, reproducible_noise=True, noise_seed=4).node_config()
    a = _as_update(_train(setup, _context(policy)))
    b = _as_update(_train(setup, _context(policy)))
    assert a.noise == "reproducible"
    assert all(np.array_equal(x, y) for x, y in zip(a.weights, b.weights, strict=True))


def test_a_supernodes_ledger_holds_its_budget_across_runs(setup, tmp_path):
    ledger = tmp_path / "ledger.json"
    policy = ClientPolicy(max_epsilon=6.0).node_config()
    accepted = _as_update(_train(setup, _context(policy, run=1, ledger=ledger)))
    assert not isinstance(accepted, str)
    # A new run (e.g. a restarted coordinator) starts no new budget.
    rounds = 1
    while rounds < 50:
        reply = _train(setup, _context(policy, run=1 + rounds, ledger=ledger))
        if "refusal" in reply.content.config_records:
            break
        rounds += 1
    assert 1 < rounds < 50 and "already spent" in _refusal(reply)
    spent = PrivacyLedger.from_json(ledger.read_text())
    assert len({run for run, *_ in spent.entries}) == rounds
    assert spent.epsilon(accountant="prv", delta=accepted.delta) <= 6.0


def test_a_supernode_accounts_at_the_federations_delta_when_smaller(setup):
    """A site's default δ is a power of ten below 1/(10·its records); the federation's n is
    larger, so the coordinator's δ (below 1/n for every patient of the federation) is used
    when smaller — the ε reported is then the stricter one. A larger one changes nothing, and
    a malformed one is refused with a clear error."""
    policy = ClientPolicy(max_epsilon=50.0).node_config()
    own = _as_update(_train(setup, _context(policy)))
    federation = _as_update(_train(setup, _context(policy), **{"federation-delta": 1e-7}))
    looser = _as_update(_train(setup, _context(policy), **{"federation-delta": 0.5}))
    assert not isinstance(own, str) and not isinstance(federation, str)
    assert federation.delta == 1e-7 < own.delta and federation.epsilon > own.epsilon
    assert not isinstance(looser, str) and looser.delta == own.delta
    assert ClientPolicy(delta=1e-6).delta_for(100, 1e-5) == 1e-6  # its own, when smaller
    with pytest.raises(ProtocolError, match="expected a number, got lots"):
        _train(setup, _context(policy), **{"federation-delta": "lots"})
