"""`baseline`: the non-private MLP (Adam by default, early stopping on validation AUROC)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medpriv.config import BASELINE_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import Splits
from medpriv.models import MLP, positive_margin
from medpriv.privacy.accounting import PrivacySpent
from medpriv.train.base import TRAINERS, Cost, Scorer, TrainedModel
from medpriv.train.calibration import maybe_calibrate
from medpriv.train.loop import (
    EpochCallback,
    LoopState,
    TrainingData,
    fit_network,
    shuffled_batches,
)


@dataclass
class NetworkScorer:
    """Scores design matrices with a torch network."""

    network: torch.nn.Module

    def margin(self, x: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return positive_margin(self.network, tensor).numpy()


def prepare(splits: Splits, *, fit_on: str = "train") -> tuple[Preprocessor, TrainingData]:
    """Fit preprocessing on one part (never the test part) and build the training tensors.

    Non-private trainers fit on the training rows. Private trainers fit on the validation rows,
    so that the released preprocessing statistics reveal nothing about the training patients
    that ε does not cover (validation patients are not protected; the statement says so).
    """
    if fit_on not in ("train", "val"):
        raise ValueError(f"preprocessing is fitted on 'train' or 'val', not {fit_on!r}")
    pre = Preprocessor(splits.train.schema).fit(splits.parts[fit_on].features)
    data = TrainingData.from_arrays(
        pre.transform(splits.train.features),
        splits.train.labels,
        pre.transform(splits.val.features),
        splits.val.labels,
    )
    return pre, data


def run_meta(
    method: str, pre: Preprocessor, config: TrainConfig, seed: int, data: TrainingData
) -> dict:
    """What a checkpoint must match to be resumed: method, data shape, preprocessing, settings."""
    return {
        "method": method,
        "seed": seed,
        "n_train": len(data.x_train),
        "features": pre.feature_names_,
        "preprocessor": pre.state_dict(),
        "hidden": list(config.hidden),
        "dropout": config.dropout,
        "optimizer": config.optimizer,
        "momentum": config.momentum,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "weight_decay": config.weight_decay,
    }


def new_network(
    config: TrainConfig, in_features: int, seed: int, *, positive_rate: float | None = None
) -> tuple[MLP, torch.optim.Optimizer]:
    """A freshly initialized MLP (seeded) and its optimizer (Adam, or SGD with momentum).

    With `positive_rate`, the output bias starts at the class prior's log-odds, so the first
    steps are not spent learning the base rate.
    """
    torch.manual_seed(seed)
    network = MLP(in_features, config.hidden, dropout=config.dropout)
    if positive_rate is not None:
        network.start_at_prior(positive_rate)
    optimizer: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            network.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    else:
        optimizer = torch.optim.Adam(
            network.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    return network, optimizer


def finish_scorer(
    network: torch.nn.Module, data: TrainingData, *, calibrate: bool
) -> tuple[Scorer, dict | None]:
    """The network's scorer, Platt-calibrated on the validation rows when asked."""
    return maybe_calibrate(  # type: ignore[return-value]
        NetworkScorer(network), data.x_val.numpy(), data.y_val.numpy(), calibrate=calibrate
    )


def loop_params(config: TrainConfig, state: LoopState) -> dict:
    """The `params` block every MLP trainer reports."""
    return {
        "hidden": list(config.hidden),
        "dropout": config.dropout,
        "optimizer": config.optimizer,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "stopped_early": state.stopped_early,
    }


@TRAINERS.register("baseline")
class BaselineTrainer:
    """Non-private MLP; batches by tensor indexing, not a row-by-row DataLoader."""

    method = "baseline"
    recipe = BASELINE_RECIPE

    def fit(
        self,
        *,
        splits: Splits,
        config: TrainConfig,
        privacy: PrivacyConfig | None = None,
        seed: int = 0,
        checkpoint: Path | None = None,
        resume: bool = False,
        on_epoch: EpochCallback | None = None,
    ) -> TrainedModel:
        start = time.perf_counter()
        config = config.resolved(self.recipe)
        pre, data = prepare(splits)
        network, optimizer = new_network(config, data.x_train.shape[1], seed)
        state = fit_network(
            network,
            optimizer,
            data,
            epochs=config.epochs,
            patience=config.patience,
            seed=seed,
            batches=shuffled_batches(config.batch_size),
            checkpoint=checkpoint,
            resume=resume,
            meta=run_meta(self.method, pre, config, seed, data),
            on_epoch=on_epoch,
        )
        scorer, calibration = finish_scorer(network, data, calibrate=bool(config.calibrate))
        return TrainedModel(
            method=self.method,
            preprocessor=pre,
            scorer=scorer,
            history=state.history,
            privacy=PrivacySpent(unit=splits.train.unit_name, sampling="shuffle"),
            cost=Cost(train_seconds=time.perf_counter() - start),
            params={**loop_params(config, state), "calibration": calibration},
        )
