"""Both engines run their rounds through the one round driver (`rounds.drive`): the in-process
`LocalPool` and the Flower `GridPool`. Conformance: the Flower ServerApp, driven over an
in-memory Grid whose nodes answer with the real ClientApp (the same message encoding as a
deployment, without processes), ends on the same weights and the same round records as the
in-process trainer's pool on the same data and seeds."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, RecordDict
from typer.testing import CliRunner

import medpriv.train.federated.flower_app as flower_app
import medpriv.train.federated.rounds as rounds
import medpriv.train.federated.trainer as trainer_module
from medpriv.cli import app
from medpriv.config import DataConfig, FederatedConfig, SplitConfig, TrainConfig
from medpriv.data.splits import split_by_unit
from medpriv.metrics import auroc
from medpriv.models import MLP
from medpriv.results import validate_results
from medpriv.train.base import get_trainer
from medpriv.train.federated.client import LocalClient, LocalRecipe
from medpriv.train.federated.engine import LocalPool, initial_weights
from medpriv.train.federated.flower_client import client_app
from medpriv.train.federated.job import FederatedJob, client_arrays, client_held_out_arrays
from medpriv.train.federated.strategy import make_strategy
from medpriv.train.federated.weights import set_weights
from tests.conftest import make_toy_dataset

SPEC = "synthetic:1500"
SITES = ("CCU", "MICU", "SICU")
RECIPE = LocalRecipe(hidden=(16,), epochs=1, batch_size=64, lr=0.05)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a Flower process sets at start-up (messages carry the run's id)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


class InMemoryGrid:
    """The part of Flower's Grid the ServerApp uses; each node answers with the real ClientApp
    (message ids as Flower's own InMemoryGrid sets them)."""

    def __init__(self, node_configs: dict[int, dict]) -> None:
        self.contexts = {
            node: Context(
                run_id=1, node_id=node, node_config=config, state=RecordDict(), run_config={}
            )
            for node, config in node_configs.items()
        }
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            reply = client_app(message, self.contexts[message.metadata.dst_node_id])
            self.replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        return [self.replies.pop(i) for i in ids if i in self.replies]


def _job(out: Path) -> FederatedJob:
    return FederatedJob(
        data=asdict(DataConfig(spec=SPEC)),
        split=asdict(SplitConfig()),
        seed=0,
        recipe=RECIPE.to_config(),
        strategy="fedavg",
        rounds=2,
        fraction=1.0,
        min_clients=2,
        out=str(out),
        expected_clients=len(SITES),
        poll_interval=0.0,
    )


def test_the_flower_server_and_the_in_process_pool_give_the_same_federation(tmp_path):
    job = _job(tmp_path / "flower")
    grid = InMemoryGrid(
        {10 + i: {"data": SPEC, "site": site, "split-seed": 0} for i, site in enumerate(SITES)}
    )
    flower_app.run_server(grid, job)
    with np.load(tmp_path / "flower" / "final.npz") as arrays:
        flower = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    flower_history = json.loads((tmp_path / "flower" / "history.json").read_text())

    pre, x_val, y_val = flower_app.coordinator_validation(job)
    pool = LocalPool(
        {
            site: LocalClient(
                site,
                *client_arrays(
                    job.data_config(),
                    site=site,
                    split_seed=0,
                    split=job.split_config(),
                    preprocessor_state=pre.state_dict(),
                ),
            )
            for site in SITES
        },
        seed=job.seed,
    )
    start = initial_weights(x_val.shape[1], RECIPE.hidden, seed=0, positive_rate=y_val.mean())
    local = rounds.drive(
        pool,
        rounds.Federation.start(start),
        rounds.RoundPlan(
            recipe=RECIPE,
            strategy=make_strategy("fedavg"),
            rounds=job.rounds,
            fraction=1.0,
            min_clients=2,
            seed=0,
        ),
        validation=(x_val, y_val),
    )
    assert (
        max(float(np.abs(a - b).max()) for a, b in zip(flower, local.weights, strict=True)) < 1e-5
    )
    assert len(flower_history) == len(local.history) == job.rounds
    for theirs, ours in zip(flower_history, local.history, strict=True):
        assert theirs["clients"] == ours["clients"] == len(SITES)
        assert theirs["val_auroc"] == pytest.approx(ours["val_auroc"], abs=1e-6)
        assert set(theirs) == set(ours)  # the same record, whichever engine

    # Federated evaluation: the sites' histograms of the best model on their held-out
    # patients give the AUROC of the union within the stated binning error.
    evaluation = json.loads((tmp_path / "flower" / "done.json").read_text())["evaluation"]

    def union(rows_of) -> tuple[np.ndarray, np.ndarray]:
        """Every site's rows by `rows_of` (training or held-out), stacked."""
        parts = [
            rows_of(
                job.data_config(),
                site=site,
                split_seed=0,
                split=job.split_config(),
                preprocessor_state=pre.state_dict(),
            )
            for site in SITES
        ]
        return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])

    x_test, y_test = union(client_held_out_arrays)
    network = MLP(x_test.shape[1], RECIPE.hidden)
    set_weights(network, local.best)
    network.eval()
    with torch.no_grad():
        logits = network(torch.from_numpy(x_test.astype(np.float32)))
    exact = auroc(y_test, (logits[:, 1] - logits[:, 0]).numpy())
    combined = evaluation["combined"]
    assert combined["n"] == len(y_test) and evaluation["missing"] == {}
    assert abs(combined["auroc"] - exact) <= combined["auroc_binning_error"] + 1e-9
    assert combined["auroc_binning_error"] < 0.01
    assert set(evaluation["sites"]) == set(SITES)

    # The same outputs as `medpriv run`: results.json (marked as Flower's) and the reports,
    # which `medpriv report` regenerates from results.json alone.
    out = tmp_path / "flower"
    document = json.loads((out / "results.json").read_text())
    assert document["engine"] == "flower" and validate_results(document) == []
    run = document["runs"][0]
    assert run["utility"]["auroc"] == pytest.approx(combined["auroc"], abs=1e-6)
    assert run["utility"]["n_test"] == len(y_test)
    assert run["privacy"]["statement"].startswith("Not differentially private")
    assert any("held-out patients" in item for item in run["privacy"]["unprotected"])
    assert len(run["history"]) == job.rounds
    # Attacks in the deployment: each site's loss-threshold attack (its training patients
    # against its held-out ones), returned as histograms; the sum is within its binning error
    # of the exact attack on the union.
    exposure = run["attacks"]["mia_sites"]
    x_in, y_in = union(client_arrays)

    def true_label_log_odds(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out_logits = network(torch.from_numpy(x.astype(np.float32)))
        return np.where(y == 1, 1, -1) * (out_logits[:, 1] - out_logits[:, 0]).numpy()

    scores = np.concatenate([true_label_log_odds(x_in, y_in), true_label_log_odds(x_test, y_test)])
    members = np.concatenate([np.ones(len(y_in), int), np.zeros(len(y_test), int)])
    attack = exposure["combined"]
    assert attack["members"] == len(y_in) and attack["non_members"] == len(y_test)
    assert abs(attack["auc"] - auroc(members, scores)) <= attack["auc_binning_error"] + 1e-9
    assert set(exposure["sites"]) == set(SITES) and "threat_model" in exposure
    assert any("membership-exposure" in item for item in run["privacy"]["unprotected"])
    (out / "report.html").unlink()
    regenerated = CliRunner().invoke(app, ["report", str(out)])
    assert regenerated.exit_code == 0, regenerated.output
    page = (out / "report.html").read_text()
    assert "fedavg" in page and "A real Flower federation" in page  # what it is measured on


def test_both_engines_call_the_one_driver(tmp_path, monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []
    real = rounds.drive

    def spy(pool, *args, **kwargs):
        calls.append(type(pool).__name__)
        return real(pool, *args, **kwargs)

    monkeypatch.setattr(flower_app, "drive", spy)
    monkeypatch.setattr(trainer_module, "drive", spy)
    get_trainer("fedavg", federated=FederatedConfig(rounds=1, partition="iid:2")).fit(
        splits=split_by_unit(make_toy_dataset(300), seed=0),
        config=TrainConfig(hidden=(8,)),
        seed=0,
    )
    grid = InMemoryGrid(
        {
            1: {"data": SPEC, "site": "CCU", "split-seed": 0},
            2: {"data": SPEC, "site": "MICU", "split-seed": 0},
        }
    )
    job = _job(tmp_path / "spy")
    flower_app.run_server(grid, FederatedJob(**{**asdict(job), "rounds": 1, "expected_clients": 2}))
    assert calls == ["LocalPool", "GridPool"]
