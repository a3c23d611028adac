"""The shared training loop: tensor-indexed batches, early stopping, per-epoch history, checkpoints.

DP, federated and split trainers wrap this loop through `batches` (how rows are sampled) and
`step` (how one batch updates the model) rather than forking it. The run seed seeds torch's
global RNG here (initialisation, shuffling, dropout: no part of any guarantee); DP noise and
Poisson masks never come from it (`medpriv.privacy.randomness`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medpriv.errors import CheckpointError
from medpriv.metrics import auroc
from medpriv.privacy.sampler import BatchSampler
from medpriv.privacy.step import Step
from medpriv.train.checkpoint import load_checkpoint, save_checkpoint


class Stateful(Protocol):
    """Something whose state a checkpoint carries (e.g. the DP accountant)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


EpochCallback = Callable[[int, dict[str, float]], None]
AUROC_TOLERANCE = 0.01


def shuffled_batches(batch_size: int) -> BatchSampler:
    """Each epoch, a random permutation cut into batches (torch's global RNG; not private)."""

    def batches(n: int) -> Iterator[torch.Tensor]:
        order = torch.randperm(n)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]

    return batches


def plain_step(
    network: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """One non-private optimizer step; returns the batch logits (detached)."""
    optimizer.zero_grad(set_to_none=True)
    logits = network(x)
    F.cross_entropy(logits, y).backward()
    optimizer.step()
    return logits.detach()


@dataclass
class LoopState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -math.inf
    best_loss: float = math.inf
    lowest_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False


@dataclass
class TrainingData:
    """Preprocessed tensors for the training and validation parts."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    @classmethod
    def of(cls, design: Callable[[Any], np.ndarray], train: Any, val: Any) -> TrainingData:
        """The tensors of a training and a validation part (datasets with `features` and
        `labels`) through one fitted design transformation."""
        return cls.from_arrays(
            design(train.features), train.labels, design(val.features), val.labels
        )

    @classmethod
    def from_arrays(
        cls, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
    ) -> TrainingData:
        return cls(
            torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
            torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(x_val, dtype=np.float32)),
            torch.from_numpy(np.asarray(y_val, dtype=np.int64)),
        )


@torch.no_grad()
def _validate(network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    network.eval()
    logits = network(x)
    network.train()
    loss = float(F.cross_entropy(logits, y))
    margin = (logits[:, 1] - logits[:, 0]).numpy()
    return loss, auroc(y.numpy(), margin)


def fit_network(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainingData,
    *,
    epochs: int,
    patience: int,
    seed: int,
    batches: BatchSampler,
    step: Step = plain_step,
    checkpoint: Path | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
    annotate: Callable[[int], dict[str, float]] | None = None,
    record_train_metrics: bool = True,
    end_epoch: Callable[[], None] | None = None,
    stateful: Mapping[str, Stateful] | None = None,
) -> LoopState:
    """Train until `epochs` or early stopping; leaves the best weights loaded.

    The kept epoch is the one with the best validation AUROC (ties within AUROC_TOLERANCE go to
    the lower validation loss); training stops after `patience` epochs in which neither the
    validation AUROC nor the validation loss improved.

    With `checkpoint`, state is saved after every epoch; with `resume`, training continues from it
    (weights, optimizer, history, RNG state), checking that `meta` still matches. `annotate(epoch)`
    adds fields (e.g. ε spent) to each epoch's history record. Every batch the sampler yields is
    a step, empty ones included. Private trainers pass `record_train_metrics=False`: the loss
    and accuracy on training batches would be released without DP. `end_epoch()` runs after an
    epoch's last batch, before validation (SplitFed averages its clients' layers there).
    `stateful` objects (e.g. the DP accountant) are saved in every checkpoint's meta and
    restored on resume; a checkpoint without their state is refused.
    """
    meta, stateful = meta or {}, stateful or {}
    torch.manual_seed(seed)
    state, best = LoopState(), copy.deepcopy(network.state_dict())
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state, best = _restore(checkpoint, network, optimizer, meta, stateful)
    network.train()
    n = len(data.x_train)
    while state.epoch < epochs and not state.stopped_early:
        loss_sum, correct, seen = 0.0, 0, 0
        for idx in batches(n):
            x, y = data.x_train[idx], data.y_train[idx]
            logits = step(network, optimizer, x, y)
            if len(idx) == 0 or not record_train_metrics:
                continue
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        if end_epoch is not None:
            end_epoch()
        val_loss, val_auroc = _validate(network, data.x_val, data.y_val)
        state.epoch += 1
        record = {
            "epoch": state.epoch,
            **(
                {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)}
                if record_train_metrics
                else {}
            ),
            "val_loss": val_loss,
            "val_auroc": val_auroc,
            **(annotate(state.epoch) if annotate is not None else {}),
        }
        state.history.append(record)
        still_learning = val_loss < state.lowest_loss
        state.lowest_loss = min(state.lowest_loss, val_loss)
        if _improves(state, val_auroc, val_loss):
            state.best_score = max(state.best_score, val_auroc)
            state.best_loss, state.best_epoch = val_loss, state.epoch
            best = copy.deepcopy(network.state_dict())
            still_learning = True
        state.bad_epochs = 0 if still_learning else state.bad_epochs + 1
        state.stopped_early = state.bad_epochs >= patience
        if checkpoint is not None:
            _save(checkpoint, network, optimizer, best, state, meta, stateful)
        if on_epoch is not None:
            on_epoch(state.epoch, record)
    network.load_state_dict(best)
    return state


def _improves(state: LoopState, val_auroc: float, val_loss: float) -> bool:
    """Better validation AUROC, or as good (within AUROC_TOLERANCE) with a lower validation loss.

    On small validation sets AUROC alone peaks while the model is still poorly calibrated; the
    loss tie-break keeps ranking quality first and prefers the better-calibrated epoch among equals.
    """
    if val_auroc > state.best_score + AUROC_TOLERANCE:
        return True
    return val_auroc >= state.best_score - AUROC_TOLERANCE and val_loss < state.best_loss


def _save(
    path: Path,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    best: dict[str, torch.Tensor],
    state: LoopState,
    meta: dict[str, Any],
    stateful: Mapping[str, Stateful],
) -> None:
    save_checkpoint(
        path,
        state={
            "network": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "best_network": best,
            "rng": torch.get_rng_state(),
        },
        meta={
            **meta,
            "loop": asdict(state),
            "stateful": {name: part.state_dict() for name, part in stateful.items()},
        },
    )


def _restore(
    path: Path,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    stateful: Mapping[str, Stateful],
) -> tuple[LoopState, dict[str, torch.Tensor]]:
    payload, saved = load_checkpoint(path)
    changed = sorted(k for k in meta if saved.get(k) != meta[k])
    if changed:
        raise CheckpointError(
            f"checkpoint {path} was written for a different run ({', '.join(changed)} changed); "
            "start fresh without --resume or restore the original data and settings"
        )
    try:
        network.load_state_dict(payload["network"])
        optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["rng"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {exc}") from None
    for name, part in stateful.items():
        if name not in saved.get("stateful", {}):
            raise CheckpointError(f"checkpoint {path} holds no {name} state; start fresh")
        part.load_state_dict(saved["stateful"][name])
    loop = saved["loop"]
    floats = {k: float(loop[k]) for k in ("best_score", "best_loss", "lowest_loss")}
    state = LoopState(**{**loop, **floats})
    return state, payload["best_network"]
