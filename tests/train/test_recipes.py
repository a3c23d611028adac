"""Per-method recipes, the prior-initialized output bias, and Platt calibration on validation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.special import expit, logit

from medpriv.config import BASELINE_RECIPE, DP_RECIPE, PrivacyConfig, TrainConfig, load_config
from medpriv.data.splits import split_by_unit
from medpriv.errors import ConfigError
from medpriv.models import MLP
from medpriv.train.base import get_trainer
from medpriv.train.calibration import CalibratedScorer, Platt
from medpriv.train.engine.mlp import NetworkScorer
from tests.conftest import make_toy_dataset


def test_unset_fields_take_the_method_recipe_and_given_ones_apply_to_all():
    assert TrainConfig().resolved(DP_RECIPE) == replace(TrainConfig(), **DP_RECIPE)
    mine = TrainConfig(lr=0.2, batch_size=32).resolved(DP_RECIPE)
    assert (mine.lr, mine.batch_size, mine.optimizer) == (0.2, 32, DP_RECIPE["optimizer"])
    assert DP_RECIPE["optimizer"] == "sgd" and BASELINE_RECIPE["optimizer"] == "adam"


def test_trainers_report_the_recipe_they_used():
    splits = split_by_unit(make_toy_dataset(400), seed=0)
    config = TrainConfig(epochs=2, hidden=(16,))
    base = get_trainer("baseline").fit(splits=splits, config=config)
    dp = get_trainer("dp-sgd").fit(
        splits=splits, config=config, privacy=PrivacyConfig(noise_multiplier=1.0)
    )
    for key in ("lr", "batch_size", "optimizer", "dropout"):
        assert base.params[key] == BASELINE_RECIPE[key]
    for key in ("optimizer", "dropout"):  # dp-sgd's batch, steps and lr come from its rule
        assert dp.params[key] == DP_RECIPE[key]
    assert dp.params["batch_size"] == len(splits.train) and dp.params["recipe"]["reason"]
    assert base.params["calibration"] is None and dp.params["calibration"] is not None


def test_bad_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="optimizer"):
        load_config(None, {"train": {"optimizer": "rmsprop"}})
    with pytest.raises(ConfigError, match="momentum"):
        load_config(None, {"train": {"momentum": 1.5}})


def test_output_bias_starts_at_the_prior_log_odds():
    network = MLP(5, (8,))
    network.start_at_prior(0.2)
    bias = network[-1].bias.detach()
    assert float(bias[1] - bias[0]) == pytest.approx(float(logit(0.2)), abs=1e-6)


def test_platt_recovers_a_known_scale_and_shift():
    rng = np.random.default_rng(0)
    margin = rng.normal(0, 2, size=20_000)
    labels = rng.random(margin.size) < expit(0.5 * margin - 1.0)
    platt = Platt.fit(margin, labels)
    assert platt.scale == pytest.approx(0.5, abs=0.03)
    assert platt.shift == pytest.approx(-1.0, abs=0.05)


@pytest.mark.parametrize("spread", [1.0, 1e3, 1e6])
def test_platt_stays_finite_on_separable_and_saturated_margins(spread: float):
    labels = np.array([0] * 50 + [1] * 50)
    margin = spread * np.where(labels == 1, 1.0, -1.0) + np.linspace(0, spread / 10, 100)
    platt = Platt.fit(margin, labels)
    prob = expit(platt.apply(margin))
    assert np.isfinite(platt.scale) and np.isfinite(platt.shift) and platt.scale > 0
    # Platt's smoothed targets cap the confidence at about (n+1)/(n+2)
    assert prob[labels == 1].min() > 0.5 and prob[labels == 1].max() < 1 - 1e-4


def test_platt_with_one_class_is_the_identity():
    assert Platt.fit(np.array([0.3, -2.0]), np.array([1, 1])) == Platt()


def test_calibrated_scorer_applies_the_map_to_the_network_margin():
    torch.manual_seed(0)
    scorer = NetworkScorer(MLP(3, (4,)))
    x = np.random.default_rng(1).normal(size=(10, 3))
    calibrated = CalibratedScorer(scorer, Platt(scale=2.0, shift=-0.5))
    np.testing.assert_allclose(calibrated.margin(x), 2.0 * scorer.margin(x) - 0.5, rtol=1e-6)


def test_platt_fixes_an_overconfident_scale():
    rng = np.random.default_rng(2)
    margin = rng.normal(0, 1.5, size=4000)
    labels = rng.random(margin.size) < expit(margin)
    val, test = slice(0, 2000), slice(2000, None)
    overconfident = 6.0 * margin - 2.0
    platt = Platt.fit(overconfident[val], labels[val])

    def brier(m):
        return float(np.mean((expit(m[test]) - labels[test]) ** 2))

    assert brier(platt.apply(overconfident)) < brier(overconfident) - 0.02
    assert brier(platt.apply(overconfident)) == pytest.approx(brier(margin), abs=0.002)


def test_dp_sgd_is_calibrated_on_validation_without_changing_its_ranking():
    splits = split_by_unit(make_toy_dataset(800), seed=0)
    config = TrainConfig(epochs=3, hidden=(16,))
    # the same noise in both fits (the comparison is of one model, calibrated or not)
    privacy = PrivacyConfig(noise_multiplier=1.0, reproducible_noise=True)
    raw = get_trainer("dp-sgd").fit(
        splits=splits, config=replace(config, calibrate=False), privacy=privacy
    )
    fixed = get_trainer("dp-sgd").fit(splits=splits, config=config, privacy=privacy)
    # maximum likelihood with an intercept: mean predicted P(y=1) = mean smoothed target
    y = splits.val.labels
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    smoothed = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2)).mean()
    assert fixed.predict_proba(splits.val).mean() == pytest.approx(smoothed, abs=1e-5)
    assert fixed.params["calibration"]["scale"] > 0  # monotone: the ranking (AUROC) is kept
    np.testing.assert_array_equal(
        np.argsort(fixed.margin(splits.test), kind="stable"),
        np.argsort(raw.margin(splits.test), kind="stable"),
    )
