"""Conformance: every registered trainer honours the same contract."""

import numpy as np
import pytest

from medpriv.config import FederatedConfig, PrivacyConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.metrics import auroc
from medpriv.train.base import TrainedModel, get_trainer, trainer_names
from tests.conftest import make_toy_dataset


@pytest.mark.parametrize("method", trainer_names())
def test_trainer_contract(method: str):
    splits = split_by_unit(make_toy_dataset(800), seed=0)
    # Federated methods: 20 clients (client-level DP needs many), few rounds; others ignore it.
    trainer = get_trainer(
        method,
        federated=FederatedConfig(partition="iid:20", rounds=8),
        model="tests.train.estimators:pipeline",  # the user's-estimator method's factory
    )
    private = getattr(trainer, "private", False)
    model = trainer.fit(
        splits=splits,
        config=TrainConfig(epochs=15),
        privacy=PrivacyConfig(target_epsilon=8.0),
        seed=0,
    )
    assert isinstance(model, TrainedModel) and model.method == method
    prob = model.predict_proba(splits.test)
    assert prob.shape == (len(splits.test),) and np.all((prob >= 0) & (prob <= 1))
    assert auroc(splits.test.labels, prob) > 0.75  # the toy signal is strong
    losses = model.losses(splits.test)
    assert losses.shape == prob.shape and np.all(losses >= 0)
    expected = -np.log(np.where(splits.test.labels == 1, prob, 1 - prob))
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-6)
    assert model.history and all("epoch" in h for h in model.history)
    assert model.cost.train_seconds > 0
    if private:
        assert 0 < model.privacy.epsilon <= 8.0 and model.privacy.delta < 1 / splits.train.n_units
        assert model.privacy.statement().startswith("ε = ")
        if model.privacy.sample_rate is not None:  # subsampled mechanisms must be Poisson
            assert model.privacy.sampling == "poisson"
    else:
        assert model.privacy.epsilon is None
    # pandas input works the same as a dataset
    np.testing.assert_allclose(model.predict_proba(splits.test.features), prob)


def test_fit_is_keyword_only():
    splits = split_by_unit(make_toy_dataset(200), seed=0)
    with pytest.raises(TypeError):
        get_trainer("logreg").fit(splits, TrainConfig())  # type: ignore[misc]
