"""What every MLP trainer shares: preprocessing into tensors, a seeded network and optimizer,
the scorer (Platt-calibrated on validation when asked), checkpoint meta and reported params."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medpriv.config import TrainConfig
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import Splits
from medpriv.models import MLP, positive_margin
from medpriv.train.base import Scorer
from medpriv.train.calibration import maybe_calibrate
from medpriv.train.loop import LoopState, TrainingData


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
    return pre, TrainingData.of(pre.transform, splits.train, splits.val)


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
