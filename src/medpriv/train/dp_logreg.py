"""`dp-logreg`: logistic regression with objective perturbation (diffprivlib; pure ε-DP).

diffprivlib needs a bound on each row's L2 norm. It never comes from the private values: by
default a constant fixed in advance (`DEFAULT_DATA_NORM`, like DP-SGD's clipping norm), or
`privacy.data_norm` from public knowledge; rows are clipped to it, so the bound holds by
construction. The released weights are then Platt-calibrated on the validation patients
(post-processing; the default recipe, `DP_LOGREG_RECIPE`). With several records per unit,
`one-per-unit` keeps one, `group` fits at ε/k so that group privacy gives ε per unit.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medpriv.config import DEFAULT_DATA_NORM, DP_LOGREG_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import Splits
from medpriv.errors import PrivacyError
from medpriv.metrics import auroc
from medpriv.privacy.plan import apply_unit_policy
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import TRAINERS, Cost, TrainedModel
from medpriv.train.calibration import maybe_calibrate
from medpriv.train.loop import EpochCallback


@dataclass
class ClippedLinearScorer:
    """Scores rows clipped to the same L2 norm bound the private fit used."""

    estimator: object
    data_norm: float

    def margin(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.decision_function(clip_rows(x, self.data_norm))


def clip_rows(x: np.ndarray, bound: float) -> np.ndarray:
    """Rows scaled down (never up) to L2 norm at most `bound`."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, bound / np.maximum(norms, 1e-12))


def epsilon_for_fit(privacy: PrivacyConfig, group_size: int) -> float:
    """The ε the fit may spend per record; refuses a target above the budget."""
    target = privacy.target_epsilon
    if target is None:
        raise PrivacyError("dp-logreg needs --target-epsilon (or --epsilons); σ does not apply")
    if privacy.budget is not None and target > privacy.budget and not privacy.allow_over_budget:
        raise PrivacyError(
            f"ε = {target:g} is over the budget of {privacy.budget:g}; lower --target-epsilon, "
            "or pass --allow-over-budget"
        )
    return target / group_size


@TRAINERS.register("dp-logreg")
class DPLogRegTrainer:
    """One private release of L2-regularized logistic-regression weights."""

    method = "dp-logreg"
    private = True
    recipe = DP_LOGREG_RECIPE

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
        from diffprivlib.accountant import BudgetAccountant
        from diffprivlib.models import LogisticRegression

        start = time.perf_counter()
        config = config.resolved(self.recipe)
        privacy = privacy or PrivacyConfig()
        splits, unit_caveats = apply_unit_policy(splits, privacy, seed)
        caveats = [
            "validation records (used for preprocessing statistics and calibration) are not "
            "protected; ε covers every training record",
            *unit_caveats,
        ]
        train = splits.train
        k = int(pd.Series(train.unit_ids).value_counts().max())
        record_epsilon = epsilon_for_fit(privacy, k)
        if privacy.budget is not None and privacy.target_epsilon > privacy.budget:
            caveats.append(
                f"ε over the budget of {privacy.budget:g} (allowed by --allow-over-budget)"
            )
        pre = Preprocessor(train.schema).fit(splits.val.features)  # see baseline.prepare
        x = pre.transform(train.features)
        data_norm = privacy.data_norm or DEFAULT_DATA_NORM
        bound = (
            "set in config (public knowledge)"
            if privacy.data_norm
            else "medpriv's default, fixed in advance, not computed from the data"
        )
        estimator = LogisticRegression(
            epsilon=record_epsilon,
            data_norm=data_norm,
            C=config.logreg_c,
            max_iter=1000,
            random_state=seed,
            accountant=BudgetAccountant(),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn convergence notices
            estimator.fit(clip_rows(x, data_norm), train.labels)
        x_val = pre.transform(splits.val.features)
        scorer, calibration = maybe_calibrate(
            ClippedLinearScorer(estimator, data_norm),
            x_val,
            splits.val.labels,
            calibrate=bool(config.calibrate),
        )
        record = {
            "epoch": 1,
            "val_auroc": auroc(splits.val.labels, scorer.margin(x_val)),
            "epsilon": record_epsilon * k,
        }
        if on_epoch is not None:
            on_epoch(1, record)
        spent = PrivacySpent(
            epsilon=record_epsilon * k,
            delta=0.0,
            accountant=None,
            sampling="none (one full-data release)",
            unit=train.unit_name,
            level="sample",
            mechanism=(
                f"objective perturbation (diffprivlib vector mechanism), rows clipped "
                f"to L2 norm {data_norm:.3g} = {bound}"
                + (f", group privacy over {k} records per unit" if k > 1 else "")
            ),
            caveats=tuple(caveats),
        )
        return TrainedModel(
            method=self.method,
            preprocessor=pre,
            scorer=scorer,
            history=[record],
            privacy=spent,
            cost=Cost(train_seconds=time.perf_counter() - start),
            params={
                "C": config.logreg_c,
                "calibration": calibration,
                "data_norm": data_norm,
                "data_norm_source": bound,
                "record_epsilon": record_epsilon,
                "group_size": k,
                "target_epsilon": privacy.target_epsilon,
                "budget": privacy.budget,
            },
        )
