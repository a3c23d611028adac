"""dp-sgd's recipe comes from public quantities (n, ε, δ, the design width) by one rule; the
user's explicit settings win; the run records the recipe and why."""

from __future__ import annotations

import pytest

from medpriv.config import DP_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.train.base import get_trainer
from medpriv.train.dp_recipe import (
    LADDER,
    LEARNING_RATE,
    MAX_NOISE_RATIO,
    PROJECT_ABOVE,
    STEPS,
    dp_sgd_recipe,
    parameter_count,
)
from medpriv.train.projection import PROJECTION_DIMENSIONS
from tests.conftest import make_toy_dataset


def test_parameter_count_counts_weights_and_biases():
    assert parameter_count(10, ()) == 22
    assert parameter_count(10, (4,)) == 10 * 4 + 4 + 4 * 2 + 2


def test_full_batch_few_steps_and_the_largest_model_within_the_noise_ratio():
    recipe = dp_sgd_recipe(n_units=1_000, in_features=96, epsilon=1.0)
    assert recipe.fields["batch_size"] == 1_000 and recipe.fields["epochs"] == STEPS
    assert recipe.fields["lr"] == LEARNING_RATE
    assert recipe.noise_ratio <= MAX_NOISE_RATIO
    chosen = LADDER.index(recipe.fields["hidden"])
    if chosen > 0:  # the next larger model would be too noisy: the ratio grows as √d
        d, larger = parameter_count(96, LADDER[chosen]), parameter_count(96, LADDER[chosen - 1])
        assert recipe.noise_ratio * (larger / d) ** 0.5 > MAX_NOISE_RATIO
    assert "n = 1,000, ε = 1 → full batch (q = 1), 30 steps" in recipe.reason


def test_more_patients_or_more_epsilon_never_give_a_smaller_model():
    sizes = [parameter_count(96, h) for h in LADDER]
    previous = 0
    for n in (100, 500, 1_000, 4_000, 20_000, 100_000):
        size = parameter_count(
            96, dp_sgd_recipe(n_units=n, in_features=96, epsilon=1.0).fields["hidden"]
        )
        assert size >= previous and size in sizes
        previous = size
    small = dp_sgd_recipe(n_units=1_000, in_features=96, epsilon=1.0).fields["hidden"]
    large = dp_sgd_recipe(n_units=1_000, in_features=96, epsilon=8.0).fields["hidden"]
    assert parameter_count(96, large) >= parameter_count(96, small)
    assert dp_sgd_recipe(n_units=200, in_features=96, epsilon=0.5).fields["hidden"] == ()
    assert dp_sgd_recipe(n_units=100_000, in_features=96, epsilon=8.0).fields["hidden"] == LADDER[0]


def test_a_noisy_logistic_model_gets_the_design_projected_first():
    projected = dp_sgd_recipe(n_units=500, in_features=96, epsilon=1.0)
    assert projected.projection == PROJECTION_DIMENSIONS
    assert f"> {PROJECT_ABOVE:g} on 96 columns → the design projected onto 4 directions" in (
        projected.reason
    )
    assert projected.fields["hidden"] == ()  # logistic on the 4 columns
    assert "4 directions fitted on the validation patients, logistic" in projected.reason
    assert projected.noise_ratio <= MAX_NOISE_RATIO
    assert projected.to_dict()["projection"] == PROJECTION_DIMENSIONS
    for kept in (
        dp_sgd_recipe(n_units=4_000, in_features=96, epsilon=0.5),  # logistic, quiet enough
        dp_sgd_recipe(n_units=20_000, in_features=96, epsilon=1.0),  # a hidden layer fits
        dp_sgd_recipe(n_units=500, in_features=4, epsilon=1.0),  # nothing to project away
        dp_sgd_recipe(n_units=500, in_features=96, epsilon=1.0, hidden_given=True),
        dp_sgd_recipe(n_units=500, in_features=96, epsilon=1.0, batch_given=True),
    ):
        assert kept.projection is None and "projected" not in kept.reason


def test_a_fixed_noise_multiplier_and_several_records_per_unit():
    recipe = dp_sgd_recipe(
        n_units=500, n_records=800, in_features=20, epsilon=None, noise_multiplier=2.0
    )
    assert recipe.fields["batch_size"] == 800  # full batch: every record
    assert "σ = 2" in recipe.reason
    with pytest.raises(ValueError, match="target ε or a noise multiplier"):
        dp_sgd_recipe(n_units=500, in_features=20, epsilon=None)
    with pytest.raises(ValueError, match="n_units"):
        dp_sgd_recipe(n_units=0, in_features=20, epsilon=1.0)


def test_the_user_s_settings_win_and_the_run_records_the_recipe():
    splits = split_by_unit(make_toy_dataset(600), seed=0)
    trainer = get_trainer("dp-sgd")
    privacy = PrivacyConfig(target_epsilon=1.0)
    model = trainer.fit(splits=splits, config=TrainConfig(), privacy=privacy, seed=0)
    recipe = model.params["recipe"]
    n = splits.train.n_units
    assert model.params["batch_size"] == n and model.privacy.sample_rate == 1.0
    assert model.params["hidden"] == list(recipe["fields"]["hidden"])
    assert recipe["reason"].startswith(f"n = {n:,}, ε = 1 → full batch")
    assert recipe["set_by_user"] == []
    mine = trainer.fit(
        splits=splits, config=TrainConfig(epochs=3, hidden=(8,), lr=0.1), privacy=privacy, seed=0
    )
    assert mine.params["hidden"] == [8] and mine.params["lr"] == 0.1
    assert mine.params["recipe"]["set_by_user"] == ["epochs", "hidden", "lr"]
    assert mine.privacy.steps <= 3


def test_a_batch_size_the_user_chose_keeps_the_minibatch_recipe_and_the_rule_sets_the_model():
    recipe = dp_sgd_recipe(n_units=1_000, in_features=96, epsilon=1.0, batch_given=True)
    assert set(recipe.fields) == {"hidden"} and "batch size set by the user" in recipe.reason
    splits = split_by_unit(make_toy_dataset(600), seed=0)
    model = get_trainer("dp-sgd").fit(
        splits=splits,
        config=TrainConfig(batch_size=64, epochs=2),
        privacy=PrivacyConfig(target_epsilon=1.0),
        seed=0,
    )
    assert model.params["lr"] == DP_RECIPE["lr"] and model.params["batch_size"] == 64
    assert model.privacy.sample_rate < 1
