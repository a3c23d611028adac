"""A real Flower 1.41 deployment on 127.0.0.1: a SuperLink and three SuperNodes as processes.

It must reproduce the in-process engine's weights for the same data and seeds (plain FedAvg's
equality is checked by `medpriv run --engine flower` in test_engine_flower.py), carry on when a
SuperNode is killed mid-run, and resume from the coordinator's checkpoint; every process is
stopped by PID. Slow (process start-up and Flower's polling): about three minutes.

DP noise is drawn by each SuperNode (fedavg-dp) or by the coordinator (fedavg-cdp) from a fresh
CSPRNG source, so a private deployment cannot match an in-process run bit for bit. Here the
SuperNodes are started with their own policy (budget, δ) and with replayable noise configured
on the nodes themselves (and the cdp job asks its coordinator for it): then weights and ε
statements must agree exactly. That no message can switch a node to replayable noise, and that
nodes refuse what their policy forbids, is tested on the ClientApp itself
(test_flower_client_policy.py).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from medpriv.config import DataConfig, PrivacyConfig, SplitConfig
from medpriv.train.federated.client import LocalClient, LocalRecipe
from medpriv.train.federated.deployment import LocalFederation, NodeSpec
from medpriv.train.federated.engine import initial_weights, run_rounds
from medpriv.train.federated.job import FederatedJob, client_arrays
from medpriv.train.federated.policy import ClientPolicy
from medpriv.train.federated.private import ONE_SITE_CAVEAT

pytestmark = pytest.mark.slow

SPEC = "synthetic:1500"
SITES = ("CCU", "MICU", "SICU")
RECIPE = LocalRecipe(hidden=(16,), epochs=1, batch_size=64, lr=0.05)
DELTA = 1e-5
# Each SuperNode's own policy: a budget for both DP runs below, the coordinator's δ, and noise
# replayable from the node's own seed (configured on the node, never by a message).
POLICY = ClientPolicy(max_epsilon=50.0, delta=DELTA, reproducible_noise=True, noise_seed=0)


def _job(out: Path, **changes) -> FederatedJob:
    job = FederatedJob(
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
        round_timeout=60.0,
    )
    return replace(job, **changes)


def _in_process(job: FederatedJob) -> tuple[list[np.ndarray], float | None]:
    """The same federation through the in-process engine (the same plan for private methods,
    clients with the SuperNodes' policy): its weights and, for fedavg-dp, the largest ε the
    clients' own ledgers give."""
    from medpriv.train.federated.flower_app import coordinator_validation, plan_method

    pre, x_val, y_val = coordinator_validation(job)
    clients = {
        site: LocalClient(
            site,
            *client_arrays(
                job.data_config(),
                site=site,
                split_seed=job.seed,
                split=job.split_config(),
                preprocessor_state=pre.state_dict(),
                one_per_unit=job.method == "fedavg-dp",
            ),
            policy=POLICY,
        )
        for site in SITES
    }
    sizes = {site: len(c.x) for site, c in clients.items()}
    recipe, strategy, _, min_clients, participation = plan_method(
        job, RECIPE, sizes, in_features=x_val.shape[1]
    )
    start = initial_weights(
        x_val.shape[1], recipe.hidden, seed=job.seed, positive_rate=float(np.mean(y_val))
    )
    weights = run_rounds(
        clients,
        start,
        recipe=recipe,
        strategy=strategy,
        rounds=job.rounds,
        fraction=job.fraction,
        min_clients=min_clients,
        seed=job.seed,
        validation=(x_val, y_val),
        participation=participation,
    )
    epsilons = [c.ledger.epsilon(accountant="prv", delta=DELTA) for c in clients.values()]
    return weights, max(epsilons) if job.method == "fedavg-dp" else None


def _attacks(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["runs"][0]["attacks"]


def _npz(path: Path) -> list[np.ndarray]:
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_flower_deployment_matches_in_process_survives_a_lost_node_and_resumes(tmp_path):
    nodes = {
        site: NodeSpec(
            data=SPEC,
            site=site,
            split_seed=0,
            policy=POLICY,
            ledger=tmp_path / "ledgers" / f"{site}.json",
        )
        for site in SITES
    }
    with LocalFederation(tmp_path, nodes) as federation:
        pids = federation.pids()
        assert len(pids) == 4 and all(_alive(pid) for pid in pids)

        # 1. Two rounds, all three hospitals, sample-level DP (DP-SGD inside every client,
        # noise replayable by the nodes' own configuration) under SecAgg+ (the coordinator sees
        # only each round's aggregate, quantized to 2^30 levels on ±8): the same weights as in
        # process, and the ε the clients report is the in-process one.
        private = _job(
            tmp_path / "dp",
            method="fedavg-dp",
            privacy=asdict(PrivacyConfig(3.0, delta=DELTA)),
            secagg=True,
        )
        outcome = federation.run(private.write(tmp_path / "dp.json"), timeout=300)
        assert outcome.completed, outcome.log[-3000:]
        flower = _npz(tmp_path / "dp" / "final.npz")
        expected, epsilon = _in_process(private)
        assert max(_max_diff(a, b) for a, b in zip(flower, expected, strict=True)) <= 1e-5
        done = json.loads((tmp_path / "dp" / "done.json").read_text())
        spent = done["privacy"]
        assert 0 < spent["epsilon"] <= 3.0 and spent["sampling"] == "poisson"
        assert spent["epsilon"] == pytest.approx(epsilon) and spent["delta"] == DELTA
        assert spent["noise"] == "reproducible" and ONE_SITE_CAVEAT in spent["caveats"]
        assert done["secure_aggregation"].startswith("SecAgg+")
        history = json.loads((tmp_path / "dp" / "history.json").read_text())
        assert set(history[-1]["client_privacy"]) == set(SITES)
        assert [r["secure_aggregation"] for r in history] == ["SecAgg+", "SecAgg+"]
        # the coordinator never saw one site's update: its inversion attack says so
        inversion = _attacks(tmp_path / "dp")["fl_inversion_received"]
        assert inversion["not_run"].startswith("secure aggregation")
        # the mechanism the sites reported, audited over many runs at the coordinator
        audit = _attacks(tmp_path / "dp")["audit"]
        assert (
            audit["deciding"] == "white_box_runs" and audit["claimed_epsilon"] == spent["epsilon"]
        )
        assert audit["verdict"] != "contradicted" and "deployment" in audit["threat_model"]
        assert all(r["clients"] == 3 and r["dropped"] == {} for r in history)

        # 1b. Client-level DP (clipped updates, server noise, Poisson client sampling), with the
        # coordinator's noise replayable by its own job: the same weights; a replayable
        # participation draw earns no amplification (q = 1), and no per-site loss is written.
        central = _job(
            tmp_path / "cdp",
            method="fedavg-cdp",
            fraction=0.9,
            privacy=asdict(PrivacyConfig(8.0, reproducible_noise=True)),
        )
        outcome = federation.run(central.write(tmp_path / "cdp.json"), timeout=300)
        assert outcome.completed, outcome.log[-3000:]
        flower = _npz(tmp_path / "cdp" / "final.npz")
        expected, _ = _in_process(central)
        assert max(_max_diff(a, b) for a, b in zip(flower, expected, strict=True)) <= 1e-5
        spent = json.loads((tmp_path / "cdp" / "done.json").read_text())["privacy"]
        assert spent["unit"] == "site" and 0 < spent["epsilon"] <= 8.0
        assert spent["sample_rate"] == 1.0 and spent["delta"] <= 1e-5
        history = json.loads((tmp_path / "cdp" / "history.json").read_text())
        assert all("client_train_loss" not in r for r in history)
        # the coordinator inverts the smallest site's real round-1 update (clipped, not yet
        # noised: client-level DP trusts it); that site scores it and returns aggregates only
        inversion = _attacks(tmp_path / "cdp")["fl_inversion_received"]
        sizes = json.loads((tmp_path / "cdp" / "done.json").read_text())["sizes"]
        assert inversion["site"] == min(sorted(sizes), key=lambda site: sizes[site])
        assert inversion["round"] == 1 and inversion["records"] > 0
        assert set(inversion) >= {"accuracy", "baseline_accuracy", "labels_correct"}
        assert all(not isinstance(v, list | dict) for v in inversion.values())
        assert "coordinator adds the noise" in inversion["client_updates"]

        # 2. A SuperNode killed (SIGKILL) after round 1: round 2 goes on with the other two once
        # the round timeout passes (a killed node never answers).
        lost = _job(tmp_path / "lost", rounds=2, round_timeout=30.0)
        path = lost.write(tmp_path / "lost.json")
        result = {}
        runner = threading.Thread(target=lambda: result.update(o=federation.run(path)))
        runner.start()
        deadline = time.monotonic() + 240
        while not (tmp_path / "lost" / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(federation.supernodes["SICU"].pid, signal.SIGKILL)
        runner.join(360)
        assert result["o"].completed, result["o"].log[-3000:]
        rounds = json.loads((tmp_path / "lost" / "history.json").read_text())
        assert rounds[0]["clients"] == 3 and rounds[0]["dropped"] == {}
        assert rounds[1]["clients"] == 2 and "SICU" in rounds[1]["dropped"]
        # the lost hospital is said to have returned no held-out figures; the report renders
        done = json.loads((tmp_path / "lost" / "done.json").read_text())
        assert done["evaluation"]["missing"]["SICU"].startswith("not asked")  # no wait for it
        assert set(done["evaluation"]["sites"]) == {"CCU", "MICU"}
        assert (tmp_path / "lost" / "report.html").is_file()
        assert json.loads((tmp_path / "lost" / "results.json").read_text())["engine"] == "flower"

        # 3. The coordinator restarts from its checkpoint: round 3 follows the two done.
        resumed = replace(lost, rounds=3, resume=True, node_wait_timeout=10.0)
        outcome = federation.run(resumed.write(tmp_path / "resume.json"), timeout=300)
        assert outcome.completed, outcome.log[-3000:]
        again = json.loads((tmp_path / "lost" / "history.json").read_text())
        assert [r["round"] for r in again] == [1, 2, 3] and again[:2] == rounds
    assert not any(_alive(pid) for pid in pids)  # every process stopped by PID
