"""Trainer registry, the `TrainedModel` every trainer returns, and the scorer protocol."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import pandas as pd
from scipy.special import expit

from medpriv.config import PrivacyConfig, TrainConfig
from medpriv.data.dataset import TabularDataset
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import Splits
from medpriv.privacy.statement import PrivacySpent
from medpriv.registry import Registry


class Scorer(Protocol):
    """Maps a preprocessed design matrix to logit(P(y=1)) per row."""

    def margin(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Cost:
    """Training cost. Methods that communicate add bytes each way (up = client to server) and
    round trips; `epochs` lets the report show them per epoch."""

    train_seconds: float = 0.0
    bytes_communicated: int = 0
    bytes_up: int | None = None
    bytes_down: int | None = None
    round_trips: int | None = None
    epochs: int | None = None

    def to_dict(self) -> dict:
        out: dict = {
            "train_seconds": round(self.train_seconds, 4),
            "bytes_communicated": self.bytes_communicated,
        }
        if self.bytes_up is not None and self.bytes_down is not None:
            out.update(bytes_up=self.bytes_up, bytes_down=self.bytes_down)
            if self.epochs:
                out["bytes_per_epoch"] = {
                    "up": round(self.bytes_up / self.epochs),
                    "down": round(self.bytes_down / self.epochs),
                }
        if self.round_trips is not None:
            out["round_trips"] = self.round_trips
        return out


@dataclass
class TrainedModel:
    """A fitted model with its preprocessing, history, privacy spent and cost."""

    method: str
    preprocessor: Preprocessor
    scorer: Scorer
    history: list[dict[str, float]] = field(default_factory=list)
    privacy: PrivacySpent = field(default_factory=PrivacySpent)
    cost: Cost = field(default_factory=Cost)
    params: dict[str, Any] = field(default_factory=dict)
    # What attacks read beyond the model (e.g. the gradients a split-learning server received);
    # kept in memory only, never written to results.json.
    artifacts: dict[str, Any] = field(default_factory=dict)

    def _design(self, data: TabularDataset | pd.DataFrame) -> np.ndarray:
        features = data.features if isinstance(data, TabularDataset) else data
        return self.preprocessor.transform(features)

    def margin(self, data: TabularDataset | pd.DataFrame) -> np.ndarray:
        """logit(P(y=1)) per row."""
        return np.asarray(self.scorer.margin(self._design(data)), dtype=np.float64)

    def predict_proba(self, data: TabularDataset | pd.DataFrame) -> np.ndarray:
        """P(y=1) per row."""
        return expit(self.margin(data))

    def losses(self, data: TabularDataset) -> np.ndarray:
        """Per-record cross-entropy of the true label (what loss-based attacks read)."""
        m = self.margin(data)
        signed = np.where(data.labels == 1, m, -m)
        return np.logaddexp(0.0, -signed)


class Trainer:
    """The trainer contract, declared: one subclass per method, registered by name.

    `fit` is keyword-only and returns a TrainedModel. `private` says whether the method takes
    privacy settings (it then runs once per ε of a sweep); `recipe` holds the method's defaults
    for TrainConfig fields left unset; `planned_epochs` is what a progress bar counts;
    `for_shadows` may return a cheaper copy for attack reference models (same training, no
    bookkeeping nobody reads); `gradient_canaries` and `mechanism_runs` say whether the
    white-box canary audits (one run, many runs) apply.
    """

    method: str = ""
    private: bool = False
    # True when `fit` also takes `canaries=` (a factory of `DiracCanaries`, called with the
    # network's parameter count and the mechanism): the white-box audit's own run.
    gradient_canaries: bool = False
    # True when the model's PrivacySpent (σ, q, steps, C) describes one Poisson-subsampled
    # Gaussian mechanism run by `medpriv.privacy.step`: the multi-run white-box audit applies.
    mechanism_runs: bool = False
    recipe: Mapping[str, Any] = MappingProxyType({})

    def fit(
        self,
        *,
        splits: Splits,
        config: TrainConfig,
        privacy: PrivacyConfig | None = None,
        seed: int = 0,
        checkpoint: Path | None = None,
        resume: bool = False,
        on_epoch: Callable[[int, dict], None] | None = None,
    ) -> TrainedModel:
        raise NotImplementedError

    def planned_epochs(self, config: TrainConfig) -> int:
        return int(config.resolved(dict(self.recipe)).epochs or 1)

    def for_shadows(self) -> Trainer:
        return self

    # True when the run's model was fitted elsewhere (`--fitted`): the run reads it with
    # `load_fitted` instead of `fit`; `fit` still serves reference models and canary runs.
    fitted_elsewhere: bool = False

    def load_fitted(self, *, splits: Splits, config: TrainConfig) -> TrainedModel:
        raise NotImplementedError(f"{self.method} has no model fitted elsewhere")


TRAINERS: Registry[type[Trainer]] = Registry("method")


def _load_builtin_trainers() -> None:
    import medpriv.train.baseline
    import medpriv.train.dp
    import medpriv.train.dp_logreg
    import medpriv.train.estimator
    import medpriv.train.federated.trainer
    import medpriv.train.hgb
    import medpriv.train.logreg
    import medpriv.train.split.trainer  # noqa: F401


def trainer_names() -> list[str]:
    """Every registered method name, the built-in trainers included."""
    _load_builtin_trainers()
    return TRAINERS.names()


def get_trainer(name: str, **options: Any) -> Trainer:
    """A new trainer instance for a registered method name. `options` (e.g. `federated=`) go
    to the trainers whose constructor takes them; the others ignore them."""
    _load_builtin_trainers()
    cls = TRAINERS.get(name)
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})
