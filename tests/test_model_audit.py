"""`medpriv.audit`: `medpriv run` from Python on a model a team brings to a notebook — the same
run, results.json and reports as the command line."""

from __future__ import annotations

import json

import pytest
from sklearn.ensemble import RandomForestClassifier

import medpriv
from medpriv.errors import ConfigError
from tests.conftest import make_toy_dataset
from tests.train import estimators


@pytest.fixture(scope="module")
def toy():
    return make_toy_dataset(900)


def test_an_unfitted_estimator_is_audited_like_a_method(toy, tmp_path):
    forest = RandomForestClassifier(n_estimators=15, min_samples_leaf=5)
    result = medpriv.audit(forest, toy, attacks="mia_loss,mia_lira", quick=True, out=tmp_path)
    assert result.folder.parent == tmp_path and result.report_html.is_file()
    assert result.report_md.is_file()
    written = json.loads((result.folder / "results.json").read_text(encoding="utf-8"))
    assert written["complete"] and [r["name"] for r in written["runs"]] == ["model seed=0"]
    assert [r["name"] for r in result.runs] == ["model seed=0"]
    run = written["runs"][0]
    assert run["params"]["estimator"] == "RandomForestClassifier"
    assert run["params"]["model"] == "sklearn.ensemble._forest:RandomForestClassifier()"
    assert {"mia_loss", "mia_lira"} <= set(run["attacks"]) and run["utility"]["auroc"] > 0.7
    assert written["config"]["data"]["spec"] == "python:toy"
    assert forest.get_params()["n_estimators"] == 15 and not hasattr(forest, "estimators_")


def test_a_factory_beside_medpriv_methods(toy, tmp_path):
    result = medpriv.audit(
        estimators.pipeline,
        toy,
        methods="baseline,model",
        attacks="none",
        quick=True,
        out=tmp_path,
        config={"train": {"epochs": 3}},
    )
    assert [r["method"] for r in result.runs] == ["baseline", "model"]
    assert result.runs[1]["params"]["model"] == "tests.train.estimators:pipeline"
    assert result.results["config"]["train"]["epochs"] == 3


def test_a_bad_model_or_option_is_a_clear_error(toy, tmp_path):
    with pytest.raises(ConfigError, match="model must be a factory"):
        medpriv.audit(3, toy, out=tmp_path)
    with pytest.raises(ConfigError, match="unknown attacks"):
        medpriv.audit(estimators.forest, toy, attacks="nope", out=tmp_path)
