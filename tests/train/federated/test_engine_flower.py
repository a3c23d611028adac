"""`medpriv run --engine flower`: a federated method trained by a real local deployment (a
SuperLink and one SuperNode per site as processes on 127.0.0.1, stopped by PID) lands in the same
results.json as the in-process engine — the same utility for the same data and seeds — and is
attacked like any other model."""

from __future__ import annotations

import pytest

from medpriv.config import load_config
from medpriv.errors import ConfigError
from medpriv.experiment import run_experiment

pytestmark = pytest.mark.slow


def _config(tmp_path, engine: str, attacks: list[str], **federated):
    return load_config(
        None,
        {
            "data": {"spec": "synthetic:1200"},
            "run": {
                "methods": ["fedavg"],
                "attacks": attacks,
                "out": str(tmp_path / engine),
                "bootstrap": 0,
                "progress": False,
            },
            "train": {"hidden": [16]},
            "federated": {"rounds": 1, "engine": engine, **federated},
        },
    )


def test_the_flower_engine_gives_the_in_process_model_and_is_attacked(tmp_path):
    flower = run_experiment(_config(tmp_path, "flower", ["mia_loss"]))["runs"][0]
    local = run_experiment(_config(tmp_path, "inprocess", []))["runs"][0]
    assert flower["params"]["engine"] == "flower" and local["params"]["engine"] == "inprocess"
    assert flower["utility"]["auroc"] == pytest.approx(local["utility"]["auroc"], abs=1e-6)
    assert flower["history"][-1]["val_auroc"] == pytest.approx(
        local["history"][-1]["val_auroc"], abs=1e-6
    )
    assert "mia_loss" in flower["attacks"]
    # the sites' own federated evaluation travels with the run
    sites = flower["params"]["federated_evaluation"]["sites"]
    assert set(sites) == set(flower["params"]["clients"])
    deployment = next((tmp_path / "flower").glob("*/checkpoints/*/logs/superlink.log"))
    assert deployment.is_file()  # the deployment's logs stay beside the run's checkpoints


def test_the_flower_engine_needs_one_supernode_per_site(tmp_path):
    with pytest.raises(ConfigError, match="--partition site"):
        run_experiment(_config(tmp_path, "flower", [], partition="iid:3"))
