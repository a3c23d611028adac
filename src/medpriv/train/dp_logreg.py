"""`dp-logreg`: logistic regression with objective perturbation (diffprivlib; pure ε-DP).

The guarantee is Chaudhuri, Monteleoni & Sarwate (2011), Algorithm 2 / Theorem 9, and it holds
only under that theorem's conditions, each enforced here:

* **Every coordinate is regularised.** The proof needs the objective strongly convex in every
  coordinate. diffprivlib 0.6.6 fits its intercept outside the L2 penalty, so medpriv never lets
  it: a constant column is put *inside* each row (`design_rows`) and the fit uses
  `fit_intercept=False`; the constant's weight is the intercept, penalised like every other.
  The scorer applies the same transformation.
* **Rows are bounded.** Every row given to diffprivlib, constant included, has L2 norm at most
  `data_norm`: the constant takes `CONSTANT_SHARE` of the bound and the features are clipped to
  the rest. The bound never comes from the private values: by default a constant fixed in
  advance (`DEFAULT_DATA_NORM`, like DP-SGD's clipping norm), or `privacy.data_norm` from public
  knowledge.
* **The curvature term uses the squared row bound.** With rows of norm ≤ R the loss's Hessian
  changes by at most c·R² between neighbours, so ε' = ε − 2·log(1 + c·R²·C); diffprivlib 0.6.6's
  `Vector` subtracts 2·log(1 + c·R·C) (R, not R²), which is too little for R > 1. medpriv hands
  diffprivlib the ε that makes its ε' the correct one (`mechanism_epsilon`).
* **The released weights are the exact minimiser.** A fit whose solver does not converge is
  refused (`PrivacyError`), never reported with an ε. (diffprivlib reports running out of
  iterations; a line-search failure inside scipy's L-BFGS is not surfaced by diffprivlib.)
* **The mechanism's randomness is unreplayable.** With `random_state=None`, diffprivlib's
  `Vector` mechanism draws from `secrets.SystemRandom` (`diffprivlib.utils.check_random_state`
  with `secure=True` turns numpy's global-state marker into a SystemRandom); nothing medpriv
  writes can regenerate it. Only `privacy.reproducible_noise` passes a seed (derived from the run
  seed), and such a model says it carries no guarantee.

**The rows live in a few dimensions fitted on validation patients.** Objective perturbation's
noise vector has norm about 2·d·R/ε' in d dimensions, against a data gradient that grows with
n: on a table of a thousand patients and a one-hot design of dozens of columns it swamps the
signal (synthetic cohort, ~1,000 training patients, ε = 1: AUROC ≈ 0.6). So the design is first
projected onto `medpriv.train.projection.PROJECTION_DIMENSIONS` directions fitted on the
validation patients — who are
not protected and already fit the preprocessing and the calibration —: the direction of a
logistic regression fitted on them, and the leading principal components of the rest, each
scaled to unit variance on them (`ValidationProjection`). The training records never shape the
projection, so the mechanism's guarantee for them is unchanged; the statement names the
validation patients, labels included, as unprotected.

The guarantee is for *replacing* one record with another (n is treated as public). The released
weights are then Platt-calibrated on the validation patients (post-processing; the default
recipe, `DP_LOGREG_RECIPE`). With several records per unit, `one-per-unit` keeps one, `group`
fits at ε/k so that group privacy gives ε per unit.
"""

from __future__ import annotations

import math
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
from medpriv.privacy.randomness import FRESH, REPRODUCIBLE, NoiseSource
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import TRAINERS, Cost, TrainedModel, Trainer
from medpriv.train.calibration import maybe_calibrate
from medpriv.train.loop import EpochCallback
from medpriv.train.projection import ProjectedPreprocessor, ValidationProjection

# The share of the row bound taken by the constant (intercept) column: the constant is
# CONSTANT_SHARE · data_norm and the features are clipped to √(1 − CONSTANT_SHARE²) · data_norm,
# so every row given to diffprivlib has norm ≤ data_norm.
CONSTANT_SHARE = 0.5
# L-BFGS iterations before a fit is refused as not converged, and the gradient tolerance it must
# reach: the proof is about the exact minimiser, so the tolerance is far below diffprivlib's 1e-4
# (the objective is strongly convex, so this costs a few iterations).
MAX_ITER = 1000
TOL = 1e-10
# Logistic loss: |ℓ'| ≤ 1 and ℓ'' ≤ 1/4 (Chaudhuri et al.'s c).
LOSS_CURVATURE = 0.25

# The diffprivlib whose Vector mechanism, random-state handling and intercept handling were read
# and corrected for here.
CHECKED_DIFFPRIVLIB = "0.6.6"

VALIDATION_CAVEAT = (
    "validation records (used, labels included, for preprocessing statistics, the projection "
    "of the design and calibration) are not protected; ε covers every training record"
)


@dataclass
class ClippedLinearScorer:
    """Scores rows transformed exactly as the private fit's rows were (`design_rows`)."""

    estimator: object
    data_norm: float

    def margin(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.decision_function(design_rows(x, self.data_norm))


def clip_rows(x: np.ndarray, bound: float) -> np.ndarray:
    """Rows scaled down (never up) to L2 norm at most `bound`."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, bound / np.maximum(norms, 1e-12))


def design_rows(x: np.ndarray, data_norm: float) -> np.ndarray:
    """Features clipped to their share of `data_norm`, then a constant column (the intercept's
    feature): every row has L2 norm ≤ `data_norm`, constant included."""
    x = np.asarray(x, dtype=np.float64)
    constant = CONSTANT_SHARE * data_norm
    features = clip_rows(x, math.sqrt(data_norm**2 - constant**2))
    return np.column_stack([features, np.full(len(x), constant)])


def mechanism_epsilon(epsilon: float, *, data_norm: float, c: float) -> float:
    """The ε to hand diffprivlib 0.6.6's `LogisticRegression` so that its objective
    perturbation spends `epsilon` for rows of L2 norm ≤ `data_norm` and inverse regularisation
    `c` (see the module docstring: diffprivlib's ε' uses the row bound where its square belongs).

    Refuses when ε' would not be positive (Chaudhuri et al.'s extra-regularisation branch, which
    diffprivlib's correction would get wrong too)."""
    penalty = 2 * math.log1p(LOSS_CURVATURE * data_norm**2 * c)
    epsilon_prime = epsilon - penalty
    if epsilon_prime <= 0:
        raise PrivacyError(
            f"dp-logreg cannot spend ε = {epsilon:g} per record with C = {c:g} and rows of norm "
            f"≤ {data_norm:g}: the curvature term alone costs {penalty:.3g}; lower "
            "train.logreg_c or privacy.data_norm, or raise the target ε"
        )
    # diffprivlib subtracts 2·log(1 + c·R·C) itself; a relative hair less ε' errs towards noise.
    return epsilon_prime * (1 - 1e-12) + 2 * math.log1p(LOSS_CURVATURE * data_norm * c)


def check_diffprivlib() -> None:
    """`mechanism_epsilon` corrects diffprivlib 0.6.6's ε'; another version needs a re-check."""
    import diffprivlib

    if diffprivlib.__version__ != CHECKED_DIFFPRIVLIB:
        raise PrivacyError(
            f"dp-logreg's privacy accounting was checked against diffprivlib "
            f"{CHECKED_DIFFPRIVLIB}, found {diffprivlib.__version__}: install "
            f"diffprivlib=={CHECKED_DIFFPRIVLIB} (re-check mechanism_epsilon before moving)"
        )


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


def fit_converged(estimator, caught: list[warnings.WarningMessage]) -> bool:
    """Whether L-BFGS stopped at a minimiser: no convergence warning, iterations left over."""
    from sklearn.exceptions import ConvergenceWarning

    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        return False
    n_iter = np.atleast_1d(getattr(estimator, "n_iter_", [estimator.max_iter]))
    return bool(np.all(n_iter < estimator.max_iter))


def statement_scope(n_units: int, unit: str, *, data_norm: float, c: float) -> dict:
    """What dp-logreg's statement treats as public, whom it trusts, what it does not protect."""
    return {
        "public": (
            f"the number of training {unit}s ({n_units:,}): objective perturbation protects "
            f"replacing one {unit}'s record with another's, not adding or removing one",
            f"the row-norm bound ({data_norm:g}) and the regularisation C ({c:g}), both fixed "
            "before the data are seen",
        ),
        "trusts": ("the machine that trains, which reads the raw training records",),
        "unprotected": (
            f"validation {unit}s, labels included (preprocessing statistics, the design's "
            "projection, calibration)",
            "the exact counts in the dataset card",
        ),
    }


@TRAINERS.register("dp-logreg")
class DPLogRegTrainer(Trainer):
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
        from sklearn.exceptions import ConvergenceWarning

        check_diffprivlib()
        start = time.perf_counter()
        config = config.resolved(self.recipe)
        privacy = privacy or PrivacyConfig()
        splits, unit_caveats = apply_unit_policy(splits, privacy, seed)
        caveats = [VALIDATION_CAVEAT, *unit_caveats]
        train = splits.train
        k = int(pd.Series(train.unit_ids).value_counts().max())
        record_epsilon = epsilon_for_fit(privacy, k)
        if privacy.budget is not None and privacy.target_epsilon > privacy.budget:
            caveats.append(
                f"ε over the budget of {privacy.budget:g} (allowed by --allow-over-budget)"
            )
        pre = Preprocessor(train.schema).fit(splits.val.features)  # see baseline.prepare
        projection = ValidationProjection.fit(pre.transform(splits.val.features), splits.val.labels)
        design = ProjectedPreprocessor(pre, projection)
        x, x_val = design.transform(train.features), design.transform(splits.val.features)
        data_norm = privacy.data_norm or DEFAULT_DATA_NORM
        bound = (
            "set in config (public knowledge)"
            if privacy.data_norm
            else "medpriv's default, fixed in advance, not computed from the data"
        )
        # None: diffprivlib's Vector mechanism draws from secrets.SystemRandom (never recorded).
        # A seed only when the user asked for replayable noise (no guarantee).
        if privacy.reproducible_noise:
            noise_kind, random_state = REPRODUCIBLE, NoiseSource.reproducible(seed).numpy_seed()
        else:
            noise_kind, random_state = FRESH, None
        estimator = LogisticRegression(
            epsilon=mechanism_epsilon(record_epsilon, data_norm=data_norm, c=config.logreg_c),
            data_norm=data_norm,
            C=config.logreg_c,
            fit_intercept=False,  # the intercept is the constant column's weight, penalised
            max_iter=MAX_ITER,
            tol=TOL,
            n_jobs=1,  # in process: SystemRandom is chosen by identity with numpy's global state
            random_state=random_state,
            accountant=BudgetAccountant(),
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)  # never swallowed as seen
            # diffprivlib 0.6.6 passes scipy an option scipy deprecates: not ours to act on
            warnings.filterwarnings("ignore", "scipy.optimize: The `disp` and `iprint`")
            estimator.fit(design_rows(x, data_norm), train.labels)
        for w in caught:  # pass on everything but the convergence notice we act on
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if not fit_converged(estimator, caught):
            raise PrivacyError(
                f"dp-logreg's solver did not converge within {MAX_ITER} iterations, so the "
                "released weights are not the minimiser the objective-perturbation guarantee "
                "is about and no ε can be reported; lower train.logreg_c (stronger "
                "regularisation converges faster) or privacy.data_norm, or raise the iteration "
                "limit (medpriv.train.dp_logreg.MAX_ITER)"
            )
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
                f"objective perturbation (diffprivlib vector mechanism, every coordinate "
                f"regularised: the intercept is a constant column inside the row) on the "
                f"design projected onto {projection.dimensions} directions fitted on the "
                f"validation patients, rows clipped to L2 norm {data_norm:.3g} = {bound}"
                + (f", group privacy over {k} records per unit" if k > 1 else "")
            ),
            noise=noise_kind,
            adjacency="replace",
            caveats=tuple(caveats),
            **statement_scope(
                train.n_units, train.unit_name, data_norm=data_norm, c=config.logreg_c
            ),
        )
        return TrainedModel(
            method=self.method,
            preprocessor=design,
            scorer=scorer,
            history=[record],
            privacy=spent,
            cost=Cost(train_seconds=time.perf_counter() - start),
            params={
                "C": config.logreg_c,
                "calibration": calibration,
                "data_norm": data_norm,
                "data_norm_source": bound,
                "intercept": "constant column inside the clipped row (fit_intercept=False)",
                "projection": {
                    "dimensions": projection.dimensions,
                    "of": len(pre.feature_names_),
                    "fitted_on": "validation patients (a logistic direction, then the leading "
                    "principal components of the rest)",
                },
                "iterations": int(np.max(estimator.n_iter_)),
                "record_epsilon": record_epsilon,
                "group_size": k,
                "target_epsilon": privacy.target_epsilon,
                "budget": privacy.budget,
                "noise_source": noise_kind,
            },
        )
