"""fedavg-dp's clients get their recipe from public quantities by the same rule as dp-sgd (the
sites' sizes, ε, δ, the width): one full-batch DP step per round; the model from the noise of
the averaged update. The same rule runs in process and on Flower; the user's settings win."""

from __future__ import annotations

import math

from medpriv.config import ExperimentConfig, FederatedConfig, PrivacyConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.privacy.accounting import calibrate_noise, default_delta
from medpriv.train.base import get_trainer
from medpriv.train.dp_recipe import (
    FEDERATED_LEARNING_RATE,
    LADDER,
    MAX_NOISE_RATIO,
    fedavg_dp_recipe,
    parameter_count,
)
from medpriv.train.federated.client import LocalRecipe
from medpriv.train.federated.job import job_from_config
from tests.conftest import make_toy_dataset

SIZES = {"a": 400, "b": 700, "c": 1_100, "d": 1_800}


def test_one_full_batch_step_per_round_and_the_model_from_the_averaged_noise():
    rule = fedavg_dp_recipe(sizes=SIZES, in_features=60, epsilon=1.0, delta=1e-5, rounds=20)
    assert rule.fields["batch_size"] == 1_800 and rule.fields["epochs"] == 1  # q = 1 everywhere
    assert rule.fields["lr"] == FEDERATED_LEARNING_RATE
    sigma = calibrate_noise(
        target_epsilon=1.0, delta=1e-5, sample_rate=1.0, steps=20, accountant="prv"
    )
    hidden = rule.fields["hidden"]
    # FedAvg over K = 4 sites of N patients: noise of norm √(d·K)·σ/N in the averaged update
    expected = math.sqrt(parameter_count(60, hidden) * 4) * sigma / sum(SIZES.values())
    assert math.isclose(rule.noise_ratio, expected, rel_tol=1e-9)
    assert rule.noise_ratio <= MAX_NOISE_RATIO or hidden == ()
    chosen = LADDER.index(hidden)
    if chosen > 0:
        larger = parameter_count(60, LADDER[chosen - 1]) / parameter_count(60, hidden)
        assert rule.noise_ratio * math.sqrt(larger) > MAX_NOISE_RATIO
    assert "4 sites of 400 to 1,800 patients, ε = 1 → every client full batch" in rule.reason
    fewer = fedavg_dp_recipe(
        sizes=SIZES, in_features=60, epsilon=1.0, delta=1e-5, rounds=20, clients_per_round=2
    )
    # half the sites per round: a noisier average, so never a larger model
    assert parameter_count(60, fewer.fields["hidden"]) <= parameter_count(60, hidden)
    big = fedavg_dp_recipe(
        sizes={k: 100 * v for k, v in SIZES.items()},
        in_features=60,
        epsilon=8.0,
        delta=1e-7,
        rounds=20,
    )
    assert big.fields["hidden"] == LADDER[0]
    given = fedavg_dp_recipe(
        sizes=SIZES, in_features=60, epsilon=1.0, delta=1e-5, rounds=20, batch_given=True
    )
    assert set(given.fields) == {"hidden"} and "batch size set by the user" in given.reason


def test_the_in_process_clients_take_one_full_batch_step_a_round_and_record_why():
    splits = split_by_unit(make_toy_dataset(1200), seed=0)
    trainer = get_trainer("fedavg-dp", federated=FederatedConfig(rounds=3, partition="iid:3"))
    model = trainer.fit(
        splits=splits, config=TrainConfig(), privacy=PrivacyConfig(target_epsilon=2.0), seed=0
    )
    rule = model.params["recipe"]
    assert model.privacy.sample_rate == 1.0 and model.privacy.steps == 3  # one step a round
    assert model.params["local_epochs"] == 1 and model.params["lr"] == FEDERATED_LEARNING_RATE
    assert model.params["hidden"] == list(rule["fields"]["hidden"])
    assert rule["set_by_user"] == [] and "3 sites" in rule["reason"]
    mine = trainer.fit(
        splits=splits,
        config=TrainConfig(hidden=(8,), lr=0.2),
        privacy=PrivacyConfig(target_epsilon=2.0),
        seed=0,
    )
    assert mine.params["hidden"] == [8] and mine.params["lr"] == 0.2
    assert mine.params["recipe"]["set_by_user"] == ["hidden", "lr"]


def test_the_flower_coordinator_applies_the_same_rule_once_it_knows_the_sites():
    from medpriv.train.federated.flower_app import plan_method

    config = ExperimentConfig(train=TrainConfig(lr=0.2), privacy=PrivacyConfig(target_epsilon=1.0))
    job = job_from_config(config, out=None, seed=0, expected_clients=4, method="fedavg-dp")
    assert set(job.rule_fields) == {"batch_size", "epochs", "hidden"}
    recipe, *_ = plan_method(job, LocalRecipe.from_config(job.recipe), SIZES, in_features=60)
    delta = default_delta(sum(SIZES.values()))
    rule = fedavg_dp_recipe(
        sizes=SIZES, in_features=60, epsilon=1.0, delta=delta, rounds=job.rounds
    )
    assert recipe.batch_size == 1_800 and recipe.epochs == 1 and recipe.lr == 0.2
    assert recipe.hidden == rule.fields["hidden"]
    sigma = calibrate_noise(
        target_epsilon=1.0, delta=delta, sample_rate=1.0, steps=job.rounds, accountant="prv"
    )
    assert math.isclose(recipe.noise_multiplier, sigma, rel_tol=1e-9)


def test_the_rules_logistic_model_reaches_the_clients_and_trains():
    """A small federation at a small ε gets the logistic model (no hidden layer): the recipe
    survives the message round trip and a client trains it, plainly and under DP-SGD (it was
    refused as 'hidden widths must be positive', failing every client of a deployment)."""
    import numpy as np

    from medpriv.train.federated.client import LocalRecipe, train_client
    from medpriv.train.federated.engine import initial_weights

    rule = fedavg_dp_recipe(
        sizes={"a": 150, "b": 150, "c": 150},
        in_features=60,
        epsilon=1.0,
        delta=1e-5,
        rounds=5,
    )
    assert rule.fields["hidden"] == ()
    base = LocalRecipe(hidden=(), epochs=1, batch_size=150, lr=3.0)
    private = LocalRecipe(**{**base.__dict__, "noise_multiplier": 2.0, "max_grad_norm": 1.0})
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(150, 60)).astype(np.float32), rng.integers(0, 2, 150)
    for recipe in (base, private):
        assert LocalRecipe.from_config(recipe.to_config()) == recipe
        update = train_client(
            initial_weights(60, (), seed=0, positive_rate=0.5), x, y, recipe=recipe, seed=0
        )
        assert [w.shape for w in update.weights] == [(2, 60), (2,)]
