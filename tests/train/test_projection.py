"""The design's projection onto a few directions fitted on validation patients only (the
private methods' defence against noise that grows with the number of columns): what it keeps,
that the training records never shape it, and that a model trained on it is attacked and
scored through it."""

from __future__ import annotations

import numpy as np

import medpriv.train.projection as projection
from medpriv.attacks.runner import run_attacks
from medpriv.config import PrivacyConfig, TrainConfig
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import split_by_unit
from medpriv.train.base import get_trainer
from medpriv.train.projection import ProjectedPreprocessor, projected
from tests.conftest import make_toy_dataset


def test_the_projection_leads_with_the_validation_logistic_direction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12)) * np.linspace(3, 0.5, 12)  # variance led by column 0
    y = (x[:, 5] + 0.3 * rng.normal(size=400) > 0).astype(int)  # signal in a minor column
    fitted = projection.ValidationProjection.fit(x, y, dimensions=3)
    assert fitted.components.shape == (12, 3)
    assert np.argmax(np.abs(fitted.components[:, 0])) == 5  # the label's direction first
    z = fitted.transform(x)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-9)  # unit variance on validation
    np.testing.assert_allclose(
        fitted.components[:, 0] @ fitted.components[:, 1:], 0, atol=1e-9
    )  # the components after it are orthogonal to it
    assert projection.ValidationProjection.fit(x[:, :2], y, dimensions=5).dimensions == 2


def test_the_projected_design_is_the_preprocessed_one_through_the_projection():
    splits = split_by_unit(make_toy_dataset(400), seed=0)
    pre = Preprocessor(splits.train.schema).fit(splits.val.features)
    design, data = projected(pre, splits, 3)
    assert isinstance(design, ProjectedPreprocessor) and design.projection.dimensions == 3
    assert design.feature_names_ == ["direction 1", "direction 2", "direction 3"]
    expected = design.projection.transform(pre.transform(splits.test.features))
    np.testing.assert_allclose(design.transform(splits.test.features), expected, rtol=1e-6)
    assert data.x_train.shape == (len(splits.train), 3) and data.x_val.shape[1] == 3
    assert design.state_dict()["projection_dimensions"] == 3
    fitted_on_val = projection.ValidationProjection.fit(
        pre.transform(splits.val.features), splits.val.labels, 3
    )
    np.testing.assert_array_equal(design.projection.components, fitted_on_val.components)


def test_a_small_dp_sgd_run_trains_on_the_projection_and_is_attacked_through_it():
    """ε = 0.5 on 260 training patients: the logistic model's noise ratio is over the rule's
    threshold, so the design is projected; the statement says so; attacks score through it."""
    splits = split_by_unit(make_toy_dataset(400), seed=0)
    trainer = get_trainer("dp-sgd")
    privacy = PrivacyConfig(target_epsilon=0.5)
    model = trainer.fit(splits=splits, config=TrainConfig(), privacy=privacy, seed=0)
    assert isinstance(model.preprocessor, ProjectedPreprocessor)
    assert model.params["recipe"]["projection"] == projection.PROJECTION_DIMENSIONS
    assert (
        "projected onto 4 directions fitted on the validation patients"
        in (model.params["recipe"]["reason"])
    )
    assert projection.PROJECTION_CAVEAT.format(k=4) in model.privacy.statement()
    assert model.margin(splits.test).shape == (len(splits.test),)
    block, _ = run_attacks(
        model,
        splits,
        attacks=("mia_loss", "mia_lira"),
        trainer=trainer,
        config=TrainConfig(),
        privacy=privacy,
        n_shadow=4,
    )
    assert 0.0 <= block["mia_lira"]["auc"] <= 1.0
    # the user's model choice is never projected
    chosen = trainer.fit(splits=splits, config=TrainConfig(hidden=()), privacy=privacy, seed=0)
    assert isinstance(chosen.preprocessor, Preprocessor)
    assert chosen.params["recipe"]["projection"] is None
