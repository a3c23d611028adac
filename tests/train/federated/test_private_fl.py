"""Federated DP: DP-SGD inside clients (sample level) and DP-FedAvg at the server (client level)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medpriv.config import FederatedConfig, PrivacyConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.errors import PrivacyError
from medpriv.models import MLP
from medpriv.train.base import get_trainer
from medpriv.train.federated.client import ClientUpdate, LocalRecipe, train_client
from medpriv.train.federated.strategy import DPFedAvg
from medpriv.train.federated.weights import get_weights
from tests.conftest import make_toy_dataset

RECIPE = LocalRecipe(hidden=(8,), epochs=3, batch_size=1000, lr=0.1, optimizer="sgd")


def _data(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _start() -> list[np.ndarray]:
    torch.manual_seed(0)
    return get_weights(MLP(4, (8,)))


def test_a_dp_client_without_noise_or_clipping_is_full_batch_sgd():
    x, y = _data()
    plain = train_client(_start(), x, y, recipe=RECIPE, seed=0)
    private = dataclasses.replace(RECIPE, noise_multiplier=0.0, max_grad_norm=1e6)
    dp = train_client(_start(), x, y, recipe=private, seed=0)
    assert dp.steps == plain.steps == 3 and dp.sample_rate == 1.0 and dp.train_loss is None
    for a, b in zip(dp.weights, plain.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_dp_clients_sample_by_poisson_and_add_noise():
    x, y = _data(400)
    recipe = dataclasses.replace(
        RECIPE, batch_size=40, epochs=1, noise_multiplier=1.0, max_grad_norm=1.0
    )
    update = train_client(_start(), x, y, recipe=recipe, seed=0)
    assert update.sample_rate == pytest.approx(0.1) and update.steps == 10
    other = train_client(_start(), x, y, recipe=recipe, seed=1)
    assert not np.allclose(update.weights[0], other.weights[0])


def test_dp_fedavg_bounds_one_clients_influence():
    start = [np.zeros(3, np.float32)]
    huge = ClientUpdate([np.full(3, 1e6, np.float32)], n_examples=10, train_loss=None, steps=1)
    small = ClientUpdate([np.full(3, 0.01, np.float32)], n_examples=10, train_loss=None, steps=1)
    strategy = DPFedAvg(clip=1.0, noise_multiplier=0.0, expected_clients=2.0, seed=0)
    with_huge = strategy.aggregate(start, [huge, small])[0]
    without = DPFedAvg(clip=1.0, noise_multiplier=0.0, expected_clients=2.0, seed=0).aggregate(
        start, [small]
    )[0]
    assert np.linalg.norm(with_huge - without) <= 1.0 / 2.0 + 1e-6
    noisy = DPFedAvg(clip=1.0, noise_multiplier=1.0, expected_clients=2.0, seed=0)
    assert not np.allclose(noisy.aggregate(start, [small])[0], without)


def _fit(method: str, epsilon: float, **federated):
    splits = split_by_unit(make_toy_dataset(1000), seed=0)
    trainer = get_trainer(method, federated=FederatedConfig(**federated))
    model = trainer.fit(
        splits=splits,
        config=TrainConfig(hidden=(16,)),
        privacy=PrivacyConfig(target_epsilon=epsilon),
        seed=0,
    )
    return splits, model


def test_fedavg_dp_reports_the_worst_clients_epsilon_per_patient():
    splits, model = _fit("fedavg-dp", 3.0, rounds=4)
    spent = model.privacy
    assert 2.5 < spent.epsilon <= 3.0 and spent.unit == "patient" and spent.level == "sample"
    assert spent.sampling == "poisson" and spent.delta < 1 / splits.train.n_units
    assert spent.epsilon == pytest.approx(max(model.params["client_epsilon"].values()))
    epsilons = [r["epsilon"] for r in model.history]
    assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(spent.epsilon)
    assert all(v is None for r in model.history for v in r["client_train_loss"].values())
    assert "largest client" in spent.statement()


def test_shadow_copies_train_identically_and_skip_only_the_per_round_epsilon():
    splits, model = _fit("fedavg-dp", 3.0, rounds=4)
    trainer = get_trainer("fedavg-dp", federated=FederatedConfig(rounds=4)).for_shadows()
    shadow = trainer.fit(
        splits=splits,
        config=TrainConfig(hidden=(16,)),
        privacy=PrivacyConfig(target_epsilon=3.0),
        seed=0,
    )
    assert all("epsilon" not in r for r in shadow.history)
    assert shadow.privacy.epsilon == model.privacy.epsilon
    assert np.array_equal(shadow.margin(splits.test), model.margin(splits.test))


def test_fedavg_cdp_accounts_per_site_with_poisson_client_sampling():
    _, model = _fit("fedavg-cdp", 5.0, rounds=6, fraction=0.5, partition="iid:6")
    spent = model.privacy
    assert 0 < spent.epsilon <= 5.0 and spent.unit == "site" and spent.level == "client"
    assert spent.delta < 1 / 6 and spent.sample_rate == 0.5 and spent.steps == 6
    counts = {r["clients"] for r in model.history}
    assert len(counts) > 1  # Poisson client sampling: the number per round varies
    assert model.params["client_sampling"] == "poisson"


def test_fedavg_dp_refuses_group_accounting():
    with pytest.raises(PrivacyError, match="one-per-unit"):
        splits = split_by_unit(make_toy_dataset(300, records_per_unit=2), seed=0)
        get_trainer("fedavg-dp").fit(
            splits=splits,
            config=TrainConfig(),
            privacy=PrivacyConfig(target_epsilon=1.0, unit_policy="group"),
            seed=0,
        )
