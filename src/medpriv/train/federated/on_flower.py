"""`medpriv run --engine flower`: a federated method trained by a real Flower deployment on this
machine — a SuperLink and one SuperNode per site, processes on 127.0.0.1 stopped by PID — for
tests and demos. Each SuperNode loads the same table and keeps its site's training part of the
run's split (`split-seed`), so the sites hold exactly the rows the in-process engine gives them;
the ServerApp runs the job through the one round driver. The released model is rebuilt from the
coordinator's best weights with the same preprocessing (fitted on the validation patients) and
calibration as in process, and `medpriv run` then measures it like any other model: utility on
the test patients, every attack. Attack reference models and the white-box audit's own run are
simulations of the same algorithm in process (the attacker's copy).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medpriv.config import ExperimentConfig, PrivacyConfig, TrainConfig
from medpriv.data.partition import PartitionSpec, partition
from medpriv.data.splits import Splits
from medpriv.errors import ConfigError, MedprivError
from medpriv.models import MLP
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import Cost, TrainedModel
from medpriv.train.engine.mlp import finish_scorer, prepare
from medpriv.train.federated.deployment import LocalFederation, NodeSpec
from medpriv.train.federated.engine import check_enough_clients
from medpriv.train.federated.weights import set_weights

if TYPE_CHECKING:
    from medpriv.train.federated.trainer import FedAvgTrainer

CSV_OPTIONS = {
    "target": "target",
    "positive": "positive",
    "threshold": "threshold",
    "site_column": "site-column",
    "unit_column": "unit-column",
}


def site_nodes(
    experiment: ExperimentConfig, sites: list[str], *, seed: int, privacy: PrivacyConfig
) -> dict[str, NodeSpec]:
    """One SuperNode per site on the experiment's data, keeping its site's training rows of
    the split of `seed`, with the policy a hospital would choose for this run: the run's budget
    (or the target ε the coordinator calibrates σ to), noise replayable only if the run asks."""
    from medpriv.train.federated.policy import ClientPolicy

    budget = privacy.budget if privacy.budget is not None else privacy.target_epsilon
    policy = ClientPolicy(
        max_epsilon=budget,
        max_grad_norm=privacy.max_grad_norm,
        reproducible_noise=privacy.reproducible_noise,
        noise_seed=seed,
    )
    data = experiment.data
    options = {
        flag: getattr(data, key)
        for key, flag in CSV_OPTIONS.items()
        if getattr(data, key) is not None
    }
    return {
        site: NodeSpec(data=data.spec, site=site, split_seed=seed, options=options, policy=policy)
        for site in sites
    }


def fit_on_flower(
    trainer: FedAvgTrainer,
    *,
    experiment: ExperimentConfig,
    splits: Splits,
    config: TrainConfig,
    privacy: PrivacyConfig | None,
    seed: int,
    workdir: Path,
) -> TrainedModel:
    """The trainer's method on a local Flower deployment (see the module docstring)."""
    from medpriv.train.federated.job import job_from_config

    fed = trainer.federated
    if PartitionSpec.parse(fed.partition).kind != "site":
        raise ConfigError(
            "--engine flower runs one SuperNode per site: use --partition site (the default)"
        )
    if splits.train.site_ids is None:
        raise ConfigError("--engine flower needs a table with sites (--site-column for a CSV)")
    parts = partition(splits.train, "site", seed=seed, min_size=fed.min_client_size)
    if parts.notes:  # a SuperNode serves one site's rows: small sites cannot be merged
        raise ConfigError(
            f"--engine flower: {'; '.join(parts.notes)}; a SuperNode serves one whole site, so "
            "lower --min-client-size or use the in-process engine"
        )
    sites = sorted(parts.clients)
    check_enough_clients(len(sites), min_clients=fed.min_clients, source="the table's sites")
    run_privacy = privacy or experiment.privacy
    settings = dataclasses.replace(experiment, train=config, privacy=run_privacy, federated=fed)
    job = job_from_config(
        settings,
        out=workdir / "run",
        seed=seed,
        expected_clients=len(sites),
        method=trainer.method,
    )
    nodes = site_nodes(experiment, sites, seed=seed, privacy=run_privacy)
    with LocalFederation(workdir, nodes) as federation:
        outcome = federation.run(job.write(workdir / "job.json"))
    out = workdir / "run"
    if not outcome.completed:
        error = out / "error.txt"
        detail = error.read_text()[-1500:] if error.exists() else (outcome.details or "")
        raise MedprivError(
            f"the Flower run did not complete ({outcome.status}); logs in {workdir / 'logs'}: "
            f"{detail}"
        )
    return _released(trainer, out, splits=splits, config=config)


def _released(
    trainer: FedAvgTrainer, out: Path, *, splits: Splits, config: TrainConfig
) -> TrainedModel:
    """The deployment's best model with the coordinator's preprocessing and calibration."""
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    run = results["runs"][0]
    params: dict[str, Any] = dict(run["params"])
    with np.load(out / "best.npz") as arrays:
        best = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    pre, data = prepare(splits, fit_on="val")
    network = MLP(data.x_train.shape[1], tuple(params["hidden"]))
    set_weights(network, best)
    resolved = config.resolved(trainer.recipe)
    scorer, calibration = finish_scorer(network, data, calibrate=bool(resolved.calibrate))
    spent = PrivacySpent(
        **{
            key: tuple(value) if isinstance(value, list) else value
            for key, value in run["privacy"].items()
            if key != "statement"
        }
    )
    cost = run["cost"]
    return TrainedModel(
        method=trainer.method,
        preprocessor=pre,
        scorer=scorer,
        history=run["history"],
        privacy=spent,
        cost=Cost(
            train_seconds=0.0,
            bytes_communicated=cost.get("bytes_communicated", 0),
            bytes_up=cost.get("bytes_up"),
            bytes_down=cost.get("bytes_down"),
            epochs=len(run["history"]),
        ),
        params={
            **params,
            "calibration": calibration,
            "federated_evaluation": run["utility"].get("federated"),
        },
    )
