"""A hospital's own scikit-learn estimator (`--model package.module:factory`) trained, measured
and attacked like medpriv's methods: imported by name (never unpickled), seeded by the run,
scored by its decision function or its probabilities' log-odds; clear errors otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from medpriv.attacks.runner import run_attacks
from medpriv.config import ExperimentConfig, RunConfig, TrainConfig, load_config
from medpriv.data.splits import split_by_unit
from medpriv.errors import ConfigError
from medpriv.metrics import auroc
from medpriv.train.base import get_trainer
from medpriv.train.estimator import load_factory
from tests.conftest import make_toy_dataset


@pytest.fixture(scope="module")
def splits():
    return split_by_unit(make_toy_dataset(800), seed=0)


@pytest.mark.parametrize(
    ("factory", "model_input", "name"),
    [
        ("forest", "design", "RandomForestClassifier"),
        ("pipeline", "design", "Pipeline"),
        ("table_pipeline", "table", "Pipeline"),  # its own preprocessing of the raw table
    ],
)
def test_a_factory_is_trained_seeded_and_attacked_like_any_method(
    splits, factory, model_input, name
):
    spec = f"tests.train.estimators:{factory}"
    trainer = get_trainer("model", model=spec, model_input=model_input)
    model = trainer.fit(splits=splits, config=TrainConfig(), seed=4)
    again = trainer.fit(splits=splits, config=TrainConfig(), seed=4)
    np.testing.assert_array_equal(model.margin(splits.test), again.margin(splits.test))
    assert auroc(splits.test.labels, model.margin(splits.test)) > 0.75
    assert np.all(np.isfinite(model.margin(splits.test)))
    assert model.params["estimator"] == name and model.privacy.epsilon is None
    assert model.params["model_input"] == model_input
    block, _ = run_attacks(
        model,
        splits,
        attacks=("mia_loss", "mia_lira"),
        trainer=trainer,
        config=TrainConfig(),
        privacy=None,
        n_shadow=2,
    )
    assert 0 <= block["mia_lira"]["auc"] <= 1 and block["mia_lira"]["n_shadow"] == 2


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("no_colon", "package.module:factory"),
        ("nowhere.at_all:f", "cannot import"),
        ("tests.train.estimators:missing", "no callable"),
        ("tests.train.estimators:NOT_CALLABLE", "no callable"),
    ],
)
def test_a_bad_factory_name_is_a_clear_error(spec: str, needle: str):
    with pytest.raises(ConfigError, match=needle):
        load_factory(spec)


def test_what_the_factory_returns_and_the_flags_are_checked(splits):
    odd = get_trainer("model", model="tests.train.estimators:not_a_classifier")
    with pytest.raises(ConfigError, match="scikit-learn classifier"):
        odd.fit(splits=splits, config=TrainConfig(), seed=0)
    with pytest.raises(ConfigError, match="model input must be one of"):
        get_trainer("model", model="tests.train.estimators:forest", model_input="raw")
    with pytest.raises(ConfigError, match="needs --model"):
        get_trainer("model").fit(splits=splits, config=TrainConfig(), seed=0)
    with pytest.raises(ConfigError, match=r"--model package\.module:factory"):
        ExperimentConfig(run=RunConfig(methods=("model",))).validate()
    with pytest.raises(ConfigError, match=r"--model-input\) must be one of design, table"):
        ExperimentConfig(run=RunConfig(model="a:b", model_input="raw")).validate()
    # --model alone adds the user's model to the methods
    spec = "tests.train.estimators:forest"
    config = load_config(None, {"run": {"methods": "baseline,hgb", "model": spec}})
    assert config.run.methods == ("baseline", "hgb", "model")
    again = load_config(None, {"run": {"methods": "model,baseline", "model": spec}})
    assert again.run.methods == ("model", "baseline")
