"""Label leakage in U-shaped split learning: without a defense the gradients a server receives
give the labels away; noise on those gradients pushes the attacks toward guessing."""

from __future__ import annotations

import numpy as np

from medpriv.attacks.runner import run_attacks
from medpriv.attacks.sl_leakage import label_leakage
from medpriv.config import ExperimentConfig, SplitLearningConfig, TrainConfig
from medpriv.experiment import make_splits
from medpriv.train.base import get_trainer
from tests.conftest import make_toy_dataset


def test_softmax_head_gradients_flip_direction_with_the_label():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 6))
    labels = (rng.random(400) < 0.2).astype(int)
    p1 = rng.uniform(0.05, 0.95, size=400)
    residual = np.stack([(1 - p1) - (1 - labels), p1 - labels], axis=1)  # p - e_y
    found = label_leakage(residual @ w, labels)
    assert found is not None and found.cosine_auc == 1.0
    assert label_leakage(residual @ w, np.zeros(400, int)) is None


def _leakage(splits, **settings):
    trainer = get_trainer("split-ushaped", split_learning=SplitLearningConfig(**settings))
    config = TrainConfig(epochs=5, hidden=(16, 8))
    model = trainer.fit(splits=splits, config=config, seed=0)
    block, _ = run_attacks(
        model, splits, attacks=("sl_label_leakage",), trainer=trainer, config=config, privacy=None
    )
    return block


def test_u_shaped_training_leaks_labels_unless_its_gradients_are_noised():
    splits = make_splits(make_toy_dataset(1200), ExperimentConfig(), 0)
    open_block = _leakage(splits)["sl_label_leakage"]
    assert open_block["cosine_auc"] >= 0.99 and open_block["n_gradients"] > 100
    defended = _leakage(splits, gradient_noise=3.0)["sl_label_leakage"]
    assert defended["auc"] < open_block["auc"] - 0.2
    assert defended["defense"] == {"gradient_noise": 3.0}


def test_vanilla_split_and_other_models_leave_the_attack_out():
    splits = make_splits(make_toy_dataset(400), ExperimentConfig(), 0)
    trainer = get_trainer("split", split_learning=SplitLearningConfig())
    config = TrainConfig(epochs=2, hidden=(8,))
    model = trainer.fit(splits=splits, config=config, seed=0)
    block, _ = run_attacks(
        model, splits, attacks=("sl_label_leakage",), trainer=trainer, config=config, privacy=None
    )
    assert block == {}
