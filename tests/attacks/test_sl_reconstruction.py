"""Reconstruction of inputs from split learning's activations, and the defenses against it."""

from __future__ import annotations

import torch

from medpriv.attacks.runner import run_attacks
from medpriv.config import ExperimentConfig, SplitLearningConfig, TrainConfig
from medpriv.experiment import make_splits
from medpriv.train.base import get_trainer
from medpriv.train.split.client import distance_correlation
from tests.conftest import make_toy_dataset


def test_distance_correlation_is_one_for_copies_and_small_for_independent_batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 5, generator=g)
    assert abs(float(distance_correlation(x, 3 * x + 1)) - 1.0) < 1e-4
    assert float(distance_correlation(x, torch.randn(256, 4, generator=g))) < 0.3
    z = torch.randn(256, 4, generator=g, requires_grad=True)
    distance_correlation(x, z).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def _reconstruction(splits, **settings):
    trainer = get_trainer("split-ushaped", split_learning=SplitLearningConfig(**settings))
    config = TrainConfig(epochs=20, hidden=(32, 16), lr=0.01, patience=20)
    model = trainer.fit(splits=splits, config=config, seed=0)
    block, _ = run_attacks(
        model, splits, attacks=("sl_reconstruction",), trainer=trainer, config=config, privacy=None
    )
    x = torch.from_numpy(model.preprocessor.transform(splits.test.features)).float()
    with torch.no_grad():
        dcor = float(distance_correlation(x, model.artifacts["sl_client_layers"](x)))
    return block["sl_reconstruction"], dcor


def test_activations_give_inputs_away_unless_noised_or_decorrelated():
    splits = make_splits(make_toy_dataset(1500), ExperimentConfig(), 0)
    open_, open_dcor = _reconstruction(splits)
    assert open_["continuous_accuracy"] > open_["baseline_continuous_accuracy"] + 0.2
    assert open_["n_auxiliary"] > 100
    assert open_["defenses"] == {"activation_noise": 0.0, "nopeek": 0.0}
    noised, _ = _reconstruction(splits, noise=3.0)
    assert noised["continuous_accuracy"] < open_["continuous_accuracy"] - 0.15
    # NoPeek trains the client layers to carry less of the inputs (what it minimizes).
    nopeek, nopeek_dcor = _reconstruction(splits, nopeek=3.0)
    assert nopeek["defenses"]["nopeek"] == 3.0 and nopeek_dcor < open_dcor - 0.05
