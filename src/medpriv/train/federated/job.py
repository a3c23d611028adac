"""A federated job as plain JSON, and how a client finds its training rows.

The coordinator writes the job; the Flower ServerApp reads it (its path comes in the run
config). A client's rows come from its own data: all of them, or, when the node is given
`split-seed` (a test federation carved out of one dataset), the training part of the standard
split by privacy unit restricted to its site — exactly the rows the in-process engine gives
that client.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medpriv.config import (
    FEDAVG_CDP_RECIPE,
    FEDAVG_DP_RECIPE,
    FEDAVG_RECIPE,
    DataConfig,
    ExperimentConfig,
    PrivacyConfig,
    SplitConfig,
)
from medpriv.data.dataset import TabularDataset
from medpriv.data.preprocess import Preprocessor
from medpriv.data.sources import load_dataset
from medpriv.data.splits import split_by_unit
from medpriv.errors import ConfigError, DataSchemaError
from medpriv.files import write_text_atomic


@dataclass(frozen=True)
class FederatedJob:
    """Everything the ServerApp needs; JSON-able."""

    data: dict[str, Any]  # the coordinator's DataConfig (validation patients come from it)
    split: dict[str, Any]  # SplitConfig
    seed: int
    recipe: dict[str, Any]  # LocalRecipe.to_config()
    strategy: str
    rounds: int
    fraction: float
    min_clients: int
    out: str  # folder for final.npz, best.npz, history.json, checkpoint.pt, done.json
    server_lr: float = 0.01
    expected_clients: int = 1  # wait for this many SuperNodes before round 1
    round_timeout: float = 120.0
    node_wait_timeout: float = 120.0
    poll_interval: float = 0.2
    resume: bool = False
    notes: list[str] = field(default_factory=list)
    method: str = "fedavg"  # fedavg | fedavg-dp | fedavg-cdp
    privacy: dict[str, Any] | None = None  # PrivacyConfig for the private methods
    secagg: bool = False  # SecAgg+: the coordinator sees only the aggregate of each round
    secagg_shares: float = 1.0  # SecAggSettings.shares
    secagg_threshold: float = 0.67  # SecAggSettings.threshold
    # fedavg-cdp: write each round's participants to the history; ε then uses q = 1
    publish_participants: bool = False
    # fedavg-dp: the training fields the user left to the method, which the client rule sets
    # once the sites' sizes are known (`medpriv.train.federated.private.with_client_rule`)
    rule_fields: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.secagg and self.method == "fedavg-cdp":
            raise ConfigError(
                "--secagg with fedavg-cdp is not supported: DP-FedAvg clips each client's update "
                "on the server, which secure aggregation hides; use fedavg or fedavg-dp"
            )

    def privacy_config(self) -> PrivacyConfig:
        if self.privacy is None:
            raise ConfigError(f"{self.method} needs privacy settings in the job")
        return PrivacyConfig(**self.privacy)

    def write(self, path: Path) -> Path:
        """The job as JSON at `path`, atomically."""
        return write_text_atomic(json.dumps(asdict(self), indent=2), Path(path))

    @classmethod
    def read(cls, path: Path) -> FederatedJob:
        try:
            return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read federated job {path}: {exc}") from None

    def data_config(self) -> DataConfig:
        values = dict(self.data)
        for key in ("sensitive", "drop"):
            values[key] = tuple(values.get(key) or ())
        return DataConfig(**values)

    def split_config(self) -> SplitConfig:
        return SplitConfig(**self.split)


def job_from_config(
    config: ExperimentConfig,
    *,
    out: Path,
    seed: int,
    expected_clients: int,
    resume: bool = False,
    method: str = "fedavg",
    secagg: bool = False,
) -> FederatedJob:
    """The job for a federated run of this experiment config on Flower."""
    from medpriv.train.federated.client import LocalRecipe

    recipes = {
        "fedavg": FEDAVG_RECIPE,
        "fedavg-dp": FEDAVG_DP_RECIPE,
        "fedavg-cdp": FEDAVG_CDP_RECIPE,
    }
    if method not in recipes:
        raise ConfigError(f"unknown federated method {method!r}; valid: {', '.join(recipes)}")
    from medpriv.train.federated.private import RULE_FIELDS

    unset = [key for key in RULE_FIELDS if getattr(config.train, key) is None]
    fed, train = config.federated, config.train.resolved(recipes[method])
    recipe = LocalRecipe.from_train_config(train)
    if fed.strategy == "fedprox":
        recipe = replace(recipe, proximal_mu=fed.proximal_mu)
    return FederatedJob(
        data=asdict(config.data),
        split=asdict(config.split),
        seed=seed,
        recipe=recipe.to_config(),
        strategy=fed.strategy,
        rounds=fed.rounds,
        fraction=fed.fraction,
        min_clients=min(fed.min_clients, expected_clients),
        out=str(out),
        server_lr=fed.server_lr,
        expected_clients=expected_clients,
        resume=resume,
        method=method,
        privacy=asdict(config.privacy) if method != "fedavg" else None,
        secagg=secagg,
        rule_fields=unset if method == "fedavg-dp" else [],
    )


def site_rows(dataset: TabularDataset, site: str | None) -> np.ndarray:
    """Indices of the dataset's rows at `site` (all rows when site is None)."""
    if site is None:
        return np.arange(len(dataset))
    if dataset.site_ids is None:
        raise DataSchemaError(f"{dataset.name} has no sites; drop the site from the node config")
    rows = np.flatnonzero(np.asarray(dataset.site_ids).astype(str) == site)
    if len(rows) == 0:
        known = sorted({str(s) for s in dataset.site_ids})
        raise DataSchemaError(f"no records at site {site!r}; sites here: {known}")
    return rows


def client_training_rows(
    dataset: TabularDataset,
    *,
    site: str | None,
    split_seed: int | None,
    split: SplitConfig,
) -> TabularDataset:
    """The client's training records: all of its rows, or (with `split_seed`) the training part
    of the standard split of `dataset` at its site."""
    if split_seed is not None:
        dataset = split_by_unit(
            dataset,
            val_fraction=split.val_fraction,
            test_fraction=split.test_fraction,
            seed=split_seed,
        ).train
    return dataset.subset(site_rows(dataset, site))


def client_arrays(
    data: DataConfig,
    *,
    site: str | None,
    split_seed: int | None,
    split: SplitConfig,
    preprocessor_state: dict,
    one_per_unit: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(design matrix, labels) of a client's training rows, with the server's preprocessing;
    `one_per_unit` (DP clients) keeps one random record of each privacy unit."""
    rows = client_training_rows(load_dataset(data), site=site, split_seed=split_seed, split=split)
    if one_per_unit and rows.n_units < len(rows):
        from medpriv.privacy.plan import one_record_per_unit

        rows = one_record_per_unit(rows, split_seed or 0)
    pre = Preprocessor.from_state(rows.schema, preprocessor_state)
    return pre.transform(rows.features), rows.labels.astype(np.int64)


def client_held_out_arrays(
    data: DataConfig,
    *,
    site: str | None,
    split_seed: int | None,
    split: SplitConfig,
    preprocessor_state: dict,
    held_out: DataConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(design matrix, labels) of a client's held-out patients, with the server's
    preprocessing: the test part of the standard split at its site (with `split_seed`), or all
    of `held_out` (a node's own evaluation table). A client with neither has none to offer."""
    if split_seed is not None:
        dataset = split_by_unit(
            load_dataset(data),
            val_fraction=split.val_fraction,
            test_fraction=split.test_fraction,
            seed=split_seed,
        ).test
        rows = dataset.subset(site_rows(dataset, site))
    elif held_out is not None:
        rows = load_dataset(held_out)
    else:
        raise DataSchemaError(
            "this node has no held-out patients: give it eval-data in its node config"
        )
    pre = Preprocessor.from_state(rows.schema, preprocessor_state)
    return pre.transform(rows.features), rows.labels.astype(np.int64)
