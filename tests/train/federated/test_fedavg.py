"""Federated learning core: client training, aggregation, rejected updates, the fedavg trainer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medpriv.config import FederatedConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.errors import ProtocolError
from medpriv.metrics import auroc
from medpriv.models import MLP
from medpriv.train.base import get_trainer
from medpriv.train.federated.client import (
    ClientUpdate,
    LocalRecipe,
    client_seed,
    train_client,
)
from medpriv.train.federated.engine import run_rounds
from medpriv.train.federated.server import finish_round, select_clients
from medpriv.train.federated.strategy import FedAdam, FedAvg, make_strategy
from medpriv.train.federated.weights import get_weights, weighted_mean
from tests.conftest import make_toy_dataset

RECIPE = LocalRecipe(hidden=(8,), epochs=2, batch_size=16, lr=0.1, optimizer="sgd")


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    return x, y


def _initial(seed: int = 0) -> list[np.ndarray]:
    torch.manual_seed(seed)
    return get_weights(MLP(4, (8,)))


def test_client_training_is_seeded_and_leaves_the_global_rng_alone():
    x, y = _data(100, 0)
    start = _initial()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = train_client(start, x, y, recipe=RECIPE, seed=5)
    assert torch.equal(torch.rand(1), before)
    again = train_client(start, x, y, recipe=RECIPE, seed=5)
    other = train_client(start, x, y, recipe=RECIPE, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first.weights, again.weights, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first.weights, other.weights, strict=True))
    assert first.n_examples == 100 and first.steps == 2 * 7 and first.train_loss > 0
    assert client_seed(0, 1, "a") == client_seed(0, 1, "a") != client_seed(0, 2, "a")


def test_fedprox_term_keeps_clients_near_the_global_model():
    x, y = _data(100, 0)
    start = _initial()

    def drift(mu: float) -> float:
        recipe = dataclasses.replace(RECIPE, proximal_mu=mu, epochs=5)
        new = train_client(start, x, y, recipe=recipe, seed=1).weights
        return float(sum(np.square(a - b).sum() for a, b in zip(new, start, strict=True)))

    assert drift(10.0) < 0.5 * drift(0.0)


def test_fedavg_is_the_sample_weighted_mean():
    a = ClientUpdate([np.ones(3, np.float32)], n_examples=1, train_loss=0.0, steps=1)
    b = ClientUpdate([np.full(3, 4.0, np.float32)], n_examples=3, train_loss=0.0, steps=1)
    np.testing.assert_allclose(FedAvg().aggregate([np.zeros(3)], [a, b])[0], 3.25)
    np.testing.assert_allclose(weighted_mean([([np.ones(2)], 2.0)])[0], 1.0)


def test_fedadam_moves_toward_the_mean_update_and_its_state_round_trips():
    start = [np.zeros(2, np.float32)]
    up = ClientUpdate([np.ones(2, np.float32)], n_examples=1, train_loss=0.0, steps=1)
    adam = FedAdam(server_lr=0.1)
    first = adam.aggregate(start, [up])
    assert (first[0] > 0).all() and (first[0] <= 1).all()
    copy = FedAdam(server_lr=0.1)
    copy.load_state(adam.state())
    np.testing.assert_array_equal(copy.aggregate(first, [up])[0], adam.aggregate(first, [up])[0])
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("fedsgd")


def test_malformed_updates_are_rejected_and_the_round_goes_on():
    start = _initial()
    x, y = _data(60, 0)
    good = train_client(start, x, y, recipe=RECIPE, seed=1)
    wrong_shape = ClientUpdate([w[..., :1] for w in good.weights], 60, 0.1, 1)
    nan = ClientUpdate([w * np.nan for w in good.weights], 60, 0.1, 1)
    weights, record = finish_round(
        FedAvg(),
        start,
        {"a": good, "b": wrong_shape, "c": nan, "d": "failed: node lost"},
        round_number=3,
        min_clients=1,
    )
    assert all(np.array_equal(w, g) for w, g in zip(weights, good.weights, strict=True))
    assert record["clients"] == 1 and record["aggregated"] is True
    assert "shape" in record["dropped"]["b"] and "NaN" in record["dropped"]["c"]
    assert record["dropped"]["d"] == "failed: node lost"
    kept, record = finish_round(FedAvg(), start, {"a": good}, round_number=4, min_clients=2)
    assert kept is start and record["aggregated"] is False


def test_client_selection_depends_only_on_seed_and_round():
    names = [f"c{i}" for i in range(10)]
    chosen = select_clients(names, fraction=0.3, min_clients=2, seed=1, round_number=2)
    assert len(chosen) == 3 and chosen == sorted(chosen)
    assert chosen == select_clients(
        names[::-1], fraction=0.3, min_clients=2, seed=1, round_number=2
    )
    assert len(select_clients(names, fraction=0.05, min_clients=4, seed=1, round_number=1)) == 4


def test_a_failing_client_is_recorded_and_training_continues():
    x, y = _data(80, 0)
    clients = {"ok": (x, y), "broken": (x[:, :2], y)}  # wrong feature count: its training fails
    records = []
    run_rounds(
        clients,
        _initial(),
        recipe=RECIPE,
        strategy=FedAvg(),
        rounds=2,
        fraction=1.0,
        min_clients=1,
        seed=0,
        validation=_data(50, 1),
        on_round=lambda r, w, record: records.append(record),
    )
    assert [r["clients"] for r in records] == [1, 1]
    assert records[0]["dropped"]["broken"].startswith("failed: ")


def test_local_recipe_round_trips_through_plain_config():
    assert LocalRecipe.from_config(RECIPE.to_config()) == RECIPE
    with pytest.raises(ProtocolError, match="malformed"):
        LocalRecipe.from_config({"hidden": "8"})
    with pytest.raises(ProtocolError, match="invalid"):
        LocalRecipe.from_config({**RECIPE.to_config(), "optimizer": "lbfgs"})


def _fedavg(rounds: int, **kwargs):
    return get_trainer("fedavg", federated=FederatedConfig(rounds=rounds, **kwargs))


def test_fedavg_trainer_learns_and_records_each_round(tmp_path):
    splits = split_by_unit(make_toy_dataset(900), seed=0)
    model = _fedavg(6).fit(splits=splits, config=TrainConfig(hidden=(16,)), seed=0)
    assert auroc(splits.test.labels, model.margin(splits.test)) > 0.75
    assert [r["round"] for r in model.history] == list(range(1, 7))
    last = model.history[-1]
    assert set(last["client_sizes"]) == {"north", "south"} == set(last["client_train_loss"])
    assert sum(last["client_sizes"].values()) == len(splits.train)
    assert last["bytes_up"] > 0 and last["bytes_down"] > 0 and last["dropped"] == {}
    assert model.cost.bytes_communicated == sum(
        r["bytes_up"] + r["bytes_down"] for r in model.history
    )
    assert model.params["clients"] == {
        "north": last["client_sizes"]["north"],
        "south": last["client_sizes"]["south"],
    }
    assert model.privacy.epsilon is None and 1 <= model.params["best_epoch"] <= 6


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_resuming_a_federation_gives_the_same_model_as_one_go(tmp_path, strategy: str):
    splits = split_by_unit(make_toy_dataset(500), seed=0)
    config = TrainConfig(hidden=(8,))
    whole = _fedavg(4, strategy=strategy).fit(splits=splits, config=config, seed=0)
    path = tmp_path / "fl.pt"
    _fedavg(2, strategy=strategy).fit(splits=splits, config=config, seed=0, checkpoint=path)
    resumed = _fedavg(4, strategy=strategy).fit(
        splits=splits, config=config, seed=0, checkpoint=path, resume=True
    )
    assert [r["round"] for r in resumed.history] == [1, 2, 3, 4]
    np.testing.assert_array_equal(resumed.margin(splits.test), whole.margin(splits.test))
