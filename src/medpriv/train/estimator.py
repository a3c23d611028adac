"""A scikit-learn estimator as a medpriv method: the hospital's own model (`--model
package.module:factory`) or a built-in one (`hgb`), trained on the same splits and preprocessing,
measured and attacked like medpriv's own methods.

The factory is a callable that returns an *unfitted* scikit-learn-compatible classifier (an
estimator or a Pipeline). With `model_input = "design"` it takes medpriv's design matrix:
standardized numerics with missing indicators and one-hot categoricals, fitted on the training
patients; with `"table"` it takes the feature table itself (`TableColumns`: numerics with NaN,
categoricals as pandas categories) and brings its own preprocessing. It is imported from the
user's own code by name, or it clones the estimator of a `.skops` file read with trusted types
only (`medpriv.train.model_file`) — never unpickled. Each fit calls the factory afresh (attack
reference models are fresh refits on random halves); a `random_state` parameter, where the
estimator has one, is set from the run seed. Its score is `decision_function` where the
estimator has one, else the log-odds of `predict_proba`; Platt scaling on the validation
patients is applied when asked (`--calibrate`).
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy.linalg import LinAlgWarning
from scipy.special import logit
from sklearn.exceptions import ConvergenceWarning

from medpriv.config import MODEL_INPUTS, PrivacyConfig, TrainConfig
from medpriv.data.preprocess import Preprocessor, TableColumns
from medpriv.data.splits import Splits
from medpriv.errors import ConfigError
from medpriv.metrics import auroc
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import TRAINERS, Cost, TrainedModel, Trainer
from medpriv.train.calibration import maybe_calibrate
from medpriv.train.loop import EpochCallback
from medpriv.train.model_file import is_model_file, load_model_file

Factory = Callable[[], Any]
PROBABILITY_FLOOR = 1e-12  # keeps log-odds finite where predict_proba says 0 or 1


def load_factory(spec: str) -> Factory:
    """The callable named by `package.module:factory`, imported from the user's own code."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"--model must read package.module:factory, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--model {spec}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"--model {spec}: {module_name} has no callable {attribute!r}")
    return factory


def template_factory(template: Any) -> Factory:
    """Unfitted clones of a template estimator (a file's, or one given from Python): its
    settings, never its weights."""
    from sklearn.base import clone

    if not hasattr(template, "get_params"):
        raise ConfigError(
            f"the model file holds a {type(template).__name__}, not a scikit-learn estimator"
        )
    return partial(clone, template)


@dataclass
class EstimatorScorer:
    """Scores design matrices with a fitted classifier: its decision function, or the log-odds
    of its probability of the positive class."""

    estimator: Any
    columns: list[str] | None = None  # a feature table's columns the estimator was fitted on

    def margin(self, x: Any) -> np.ndarray:
        if self.columns is not None and hasattr(x, "columns"):
            x = x[self.columns]
        if hasattr(self.estimator, "decision_function"):
            return np.asarray(self.estimator.decision_function(x), dtype=np.float64).ravel()
        positive = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)[:, 1]
        return logit(np.clip(positive, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR))


def _fresh(factory: Factory, seed: int, source: str) -> Any:
    estimator = factory()
    for needed in ("fit", "get_params"):
        if not hasattr(estimator, needed):
            raise ConfigError(f"{source} did not return a scikit-learn classifier (no {needed})")
    if not (hasattr(estimator, "decision_function") or hasattr(estimator, "predict_proba")):
        raise ConfigError(f"{source}: the classifier has no decision_function or predict_proba")
    seeded = {
        key: seed
        for key in estimator.get_params()
        if key == "random_state" or key.endswith("__random_state")
    }
    if seeded:  # a Pipeline's steps too
        estimator.set_params(**seeded)
    return estimator


def _iterations(estimator: Any) -> dict[str, int]:
    """The iterations a fitted iterative estimator ran (n_iter_), when it says."""
    found = getattr(estimator, "n_iter_", None)
    return {} if found is None else {"iterations": int(np.max(found))}


@TRAINERS.register("model")
class EstimatorTrainer(Trainer):
    """The user's estimator (`--model package.module:factory`). Fits once; nothing to resume,
    so `checkpoint`/`resume` are accepted and unused."""

    method = "model"

    def __init__(
        self,
        model: str | None = None,
        model_input: str = "design",
        trusted_types: tuple[str, ...] = (),
        fitted: bool = False,
        factory: Factory | None = None,
    ) -> None:
        """`model`: `package.module:factory` or a `.skops` file whose estimator is the template
        (read only with every type trusted: `medpriv.train.model_file`); from Python
        (`medpriv.audit`) `factory` is the factory itself and `model` only names it. With
        `fitted`, the run's model is the file's estimator with its own weights (`load_fitted`);
        reference models and canary runs refit clones."""
        if model_input not in MODEL_INPUTS:
            raise ConfigError(f"model input must be one of {', '.join(MODEL_INPUTS)}")
        self.model_input, self.trusted_types = model_input, tuple(trusted_types)
        self.spec, self._factory = model, factory
        self.template, self.fitted_elsewhere = None, fitted
        if factory is None and model is not None and is_model_file(model):
            # read once, before any training; every fit starts from an unfitted clone
            self.template = load_model_file(model, self.trusted_types)
            self._factory = template_factory(self.template)
        if fitted and self.template is None:
            raise ConfigError("--fitted needs --model FILE.skops (the fitted model to attack)")

    def factory(self) -> Factory:
        if self._factory is not None:
            return self._factory
        if self.spec is None:
            raise ConfigError("the 'model' method needs --model package.module:factory")
        return load_factory(self.spec)

    def estimator(self, config: TrainConfig, seed: int) -> Any:
        """A fresh, unfitted, seeded classifier for one fit."""
        return _fresh(self.factory(), seed, f"the {self.method} factory")

    def settings(self, estimator: Any) -> dict[str, Any]:
        """What the run records about the estimator (plain values only)."""
        plain = (bool, int, float, str, type(None))
        params = {k: v for k, v in estimator.get_params(deep=False).items() if isinstance(v, plain)}
        return {
            "estimator": type(estimator).__name__,
            "model": self.spec,
            "model_input": self.model_input,
            **params,
        }

    def fit_options(self, x_val: Any, y_val: np.ndarray) -> dict[str, Any]:
        """Keyword arguments of the estimator's `fit` beyond X and y, given the validation
        patients' inputs and labels (none by default)."""
        return {}

    def load_fitted(self, *, splits: Splits, config: TrainConfig) -> TrainedModel:
        """The file's fitted estimator as it is (no fit, no calibration): `splits.train` must be
        the patients it was trained on (`--member-column`)."""
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self.template)
        except NotFittedError:
            raise ConfigError(
                f"--fitted: {self.spec} holds an unfitted estimator; save the fitted one, or drop "
                "--fitted to have medpriv fit it"
            ) from None
        columns = TableColumns if self.model_input == "table" else Preprocessor
        pre = columns(splits.train.schema).fit(splits.train.features)
        names = getattr(self.template, "feature_names_in_", None)
        if names is not None and self.model_input == "table":
            absent = sorted(set(names) - set(pre.feature_names_))
            if absent:
                raise ConfigError(
                    f"--fitted: {self.spec} was fitted on columns the data lack: {absent}"
                )
        scorer = EstimatorScorer(
            self.template, columns=None if names is None else [str(n) for n in names]
        )
        return self._trained(
            self.template,
            pre=pre,
            scorer=scorer,
            splits=splits,
            x_val=pre.transform(splits.val.features),
            params={
                "weights": "fitted elsewhere: the file's, as they are (never refitted)",
                "calibration": None,
            },
        )

    def _trained(
        self,
        estimator: Any,
        *,
        pre: Preprocessor | TableColumns,
        scorer: Any,
        splits: Splits,
        x_val: Any,
        params: dict[str, Any],
        seconds: float = 0.0,
        on_epoch: EpochCallback | None = None,
    ) -> TrainedModel:
        """The TrainedModel of a fitted estimator: its validation AUROC (on `x_val`, the
        validation patients' inputs) as the one epoch."""
        record = {"epoch": 1, "val_auroc": auroc(splits.val.labels, scorer.margin(x_val))}
        if on_epoch is not None:
            on_epoch(1, record)
        return TrainedModel(
            method=self.method,
            preprocessor=pre,
            scorer=scorer,
            history=[record],
            privacy=PrivacySpent(unit=splits.train.unit_name, sampling="none (not private)"),
            cost=Cost(train_seconds=seconds),
            params={**self.settings(estimator), **_iterations(estimator), **params},
        )

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
        columns = TableColumns if self.model_input == "table" else Preprocessor
        pre = columns(splits.train.schema).fit(splits.train.features)
        estimator = self.estimator(config, seed)
        x_val = pre.transform(splits.val.features)
        with warnings.catch_warnings():  # an iteration cap reached is the recipe's, not an error
            warnings.simplefilter("ignore", ConvergenceWarning)
            # Newton-Cholesky meeting collinear one-hot columns switches to lbfgs by itself and
            # still reaches the minimiser: a notice for scikit-learn's developers, not the user's
            warnings.simplefilter("ignore", LinAlgWarning)
            estimator.fit(
                pre.transform(splits.train.features),
                splits.train.labels,
                **self.fit_options(x_val, splits.val.labels),
            )
        scorer, calibration = maybe_calibrate(
            EstimatorScorer(estimator), x_val, splits.val.labels, calibrate=bool(config.calibrate)
        )
        return self._trained(
            estimator,
            pre=pre,
            scorer=scorer,
            splits=splits,
            x_val=x_val,
            params={"calibration": calibration},
            seconds=time.perf_counter() - start,
            on_epoch=on_epoch,
        )
