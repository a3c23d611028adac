"""`--model FILE.skops`: a hospital's model read from a file that cannot run code on load —
skops with its default trusted types plus the ones the user names; pickles refused unread."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier

from medpriv.config import TrainConfig, load_config
from medpriv.data.splits import split_by_unit
from medpriv.errors import ConfigError
from medpriv.metrics import auroc
from medpriv.train.base import get_trainer
from medpriv.train.model_file import is_model_file, load_model_file
from tests.conftest import make_toy_dataset
from tests.train import estimators

TREE_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


@pytest.fixture(scope="module")
def splits():
    return split_by_unit(make_toy_dataset(800), seed=0)


class RunsCodeOnLoad:
    """A pickle payload: unpickling it creates `marker` (what a hostile model file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_skops_estimator_is_the_template_of_every_fit(splits, tmp_path: Path):
    fitted = estimators.pipeline().fit(np.random.default_rng(0).normal(size=(40, 5)), [0, 1] * 20)
    path = tmp_path / "hospital.skops"
    sio.dump(fitted, path)
    trainer = get_trainer("model", model=str(path))
    model = trainer.fit(splits=splits, config=TrainConfig(), seed=1)
    assert model.params["model"] == str(path) and model.params["estimator"] == "Pipeline"
    assert auroc(splits.test.labels, model.margin(splits.test)) > 0.75  # refitted on the splits
    fresh = trainer.factory()()
    assert not hasattr(fresh[-1], "coef_")  # a clone: the file's settings, never its weights


def test_types_skops_does_not_trust_must_be_named(splits, tmp_path: Path):
    tree = HistGradientBoostingClassifier(max_iter=5).fit([[0.0], [1.0]] * 10, [0, 1] * 10)
    path = tmp_path / "trees.skops"
    sio.dump(tree, path)
    with pytest.raises(ConfigError, match=f"--trust-type {TREE_PREDICTOR}"):
        get_trainer("model", model=str(path))
    trainer = get_trainer("model", model=str(path), trusted_types=(TREE_PREDICTOR,))
    assert trainer.fit(splits=splits, config=TrainConfig(), seed=0).params["max_iter"] == 5
    config = load_config(None, {"run": {"model": str(path), "trusted_types": f"{TREE_PREDICTOR}"}})
    assert config.run.trusted_types == (TREE_PREDICTOR,) and "model" in config.run.methods


def test_a_pickle_is_refused_unread(tmp_path: Path):
    marker = tmp_path / "code-ran"
    for name in ("model.pkl", "model.joblib"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(RunsCodeOnLoad(marker)))
        assert is_model_file(str(path))
        with pytest.raises(ConfigError, match="pickle, which runs code when loaded"):
            get_trainer("model", model=str(path))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("absent.skops", None, "no such file"),
        ("garbage.skops", b"not a zip archive", "not a readable skops file"),
        ("model.onnx", b"", "must be a .skops file"),
    ],
)
def test_a_bad_model_file_is_a_clear_error(tmp_path: Path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=needle):
        load_model_file(path)


def test_a_file_holding_no_estimator_is_refused(tmp_path: Path):
    path = tmp_path / "numbers.skops"
    sio.dump({"weights": np.zeros(3)}, path)
    with pytest.raises(ConfigError, match="not a scikit-learn estimator"):
        get_trainer("model", model=str(path))
