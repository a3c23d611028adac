"""dp-logreg: pure ε-DP objective perturbation with a row-norm bound that never reads the data."""

import numpy as np
import pytest

from medpriv.config import DEFAULT_DATA_NORM, DP_LOGREG_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import split_by_unit
from medpriv.errors import PrivacyError
from medpriv.train.base import get_trainer
from medpriv.train.dp_logreg import clip_rows
from tests.conftest import make_toy_dataset


@pytest.fixture
def splits():
    return split_by_unit(make_toy_dataset(800), seed=0)


def test_pure_epsilon_and_a_bound_fixed_in_advance(splits):
    model = get_trainer("dp-logreg").fit(
        splits=splits, config=TrainConfig(), privacy=PrivacyConfig(target_epsilon=2.0), seed=0
    )
    p = model.privacy
    assert p.epsilon == 2.0 and p.delta == 0.0 and "pure ε-DP" in p.statement()
    assert model.params["data_norm"] == DEFAULT_DATA_NORM
    assert "fixed in advance, not computed from the data" in p.statement()
    assert "validation records (used for preprocessing statistics" in p.statement()
    assert model.params["C"] == DP_LOGREG_RECIPE["logreg_c"] and model.params["calibration"]
    fitted_on_val = Preprocessor(splits.val.schema).fit(splits.val.features).state_dict()
    assert model.preprocessor.state_dict() == fitted_on_val  # nothing fitted on training rows


def test_public_data_norm_is_used_and_rows_are_clipped(splits):
    model = get_trainer("dp-logreg").fit(
        splits=splits, config=TrainConfig(), privacy=PrivacyConfig(data_norm=0.5), seed=0
    )
    assert model.params["data_norm"] == 0.5 and "public knowledge" in model.privacy.statement()
    x = np.random.default_rng(0).normal(size=(50, 4)) * 3
    clipped = clip_rows(x, 0.5)
    assert np.all(np.linalg.norm(clipped, axis=1) <= 0.5 + 1e-12)
    small = x[:1] / (10 * np.linalg.norm(x[:1]))
    assert np.allclose(clip_rows(small, 0.5), small)  # never scaled up


def test_noise_depends_on_the_seed_and_shrinks_with_epsilon(splits):
    trainer = get_trainer("dp-logreg")

    def weights(eps: float, seed: int) -> np.ndarray:
        model = trainer.fit(
            splits=splits,
            config=TrainConfig(calibrate=False),  # the released weights themselves
            privacy=PrivacyConfig(target_epsilon=eps),
            seed=seed,
        )
        return model.scorer.estimator.coef_.ravel()

    assert not np.allclose(weights(1.0, 0), weights(1.0, 1))
    assert np.allclose(weights(1.0, 0), weights(1.0, 0))
    spread_low = np.std([weights(0.2, s) for s in range(6)], axis=0).mean()
    spread_high = np.std([weights(20.0, s) for s in range(6)], axis=0).mean()
    assert spread_high < spread_low


def test_budget_and_group_privacy():
    trainer = get_trainer("dp-logreg")
    splits = split_by_unit(make_toy_dataset(600, records_per_unit=2), seed=0)
    with pytest.raises(PrivacyError, match="over the budget"):
        trainer.fit(
            splits=splits,
            config=TrainConfig(),
            privacy=PrivacyConfig(target_epsilon=2.0, budget=1.0),
        )
    grouped = trainer.fit(
        splits=splits,
        config=TrainConfig(),
        privacy=PrivacyConfig(target_epsilon=2.0, unit_policy="group"),
    )
    assert grouped.params["group_size"] == 2 and grouped.params["record_epsilon"] == 1.0
    assert grouped.privacy.epsilon == 2.0 and "group privacy over 2" in grouped.privacy.statement()
