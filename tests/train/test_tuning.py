"""`--tune private`: the best of a hidden number of dp-sgd runs on validation loss, its ε that
of the selection; the number of runs is written nowhere (not in params, not as the time, not
through the progress callback)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from medpriv.config import ExperimentConfig, PrivacyConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.errors import ConfigError
from medpriv.privacy.tuning import Selection, tuned_epsilon
from medpriv.train.base import get_trainer
from medpriv.train.dp import DPSGDTrainer
from medpriv.train.dp_recipe import LADDER
from tests.conftest import make_toy_dataset

TUNED = PrivacyConfig(target_epsilon=2.0, tune="private", tune_trials=4.0)
TRIALS = 6


@pytest.fixture(scope="module")
def splits():
    return split_by_unit(make_toy_dataset(900), seed=0)


@pytest.fixture(scope="module")
def tuned(splits) -> tuple:
    """A tuned fit with K forced to 6 and every trial recorded."""
    patch = pytest.MonkeyPatch()
    patch.setattr(Selection, "draw", lambda self, noise: TRIALS)
    trials: list = []
    original = DPSGDTrainer.fit

    def recording(self, **kwargs):
        model = original(self, **kwargs)
        if kwargs["privacy"].tune == "none":
            trials.append((kwargs["config"], kwargs["privacy"], model))
        return model

    patch.setattr(DPSGDTrainer, "fit", recording)
    seen: list = []
    try:
        model = get_trainer("dp-sgd").fit(
            splits=splits,
            config=TrainConfig(epochs=8),
            privacy=TUNED,
            seed=0,
            on_epoch=lambda *args: seen.append(args),
        )
    finally:
        patch.undo()
    return model, trials, seen


def test_the_best_run_on_validation_loss_is_released_with_the_selection_s_epsilon(tuned):
    model, trials, _ = tuned
    assert len(trials) == TRIALS
    losses = [min(r["val_loss"] for r in m.history) for _, _, m in trials]
    best = trials[losses.index(min(losses))]
    assert model.history == best[2].history
    sigma = best[1].noise_multiplier
    assert all(p.noise_multiplier == sigma and p.target_epsilon is None for _, p, _ in trials)
    expected = tuned_epsilon(
        noise_multiplier=sigma,
        sample_rate=1.0,
        steps=8,
        delta=model.privacy.delta,
        selection=Selection.expecting(4.0),
    )
    assert math.isclose(model.privacy.epsilon, expected) and model.privacy.epsilon <= 2.0 + 1e-9
    assert model.privacy.epsilon > best[2].privacy.epsilon  # selection is not free
    assert model.privacy.accountant == "rdp" and "private selection" in model.privacy.mechanism
    tuning = model.params["tuning"]
    assert tuning["chosen"] == {"lr": best[0].lr, "hidden": list(best[0].hidden)}
    assert len(tuning["candidates"]) == 5 * len(LADDER)
    assert "private selection" in model.params["recipe"]["reason"]


def test_the_number_of_runs_is_written_nowhere(tuned):
    model, trials, seen = tuned
    written = json.dumps(model.params) + json.dumps(model.history)
    assert 'trials": 6' not in written and '"trials"' not in written
    assert seen == []  # no per-epoch progress: it would count the runs
    assert model.cost.train_seconds < sum(m.cost.train_seconds for _, _, m in trials)
    assert any("hidden number of runs" in c for c in model.privacy.caveats)


def test_what_cannot_be_tuned_privately_is_refused(splits):
    trainer = get_trainer("dp-sgd")
    for config, privacy, needle in [
        (TrainConfig(batch_size=64), TUNED, "--batch-size"),
        (TrainConfig(), dataclasses.replace(TUNED, noise_multiplier=2.0), "target ε"),
        (TrainConfig(lr=0.1, hidden=(8,)), TUNED, "nothing to tune"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            trainer.fit(splits=splits, config=config, privacy=privacy, seed=0)
    with pytest.raises(ConfigError, match=r"privacy\.tune \(--tune\)"):
        ExperimentConfig(privacy=PrivacyConfig(tune="grid")).validate()
