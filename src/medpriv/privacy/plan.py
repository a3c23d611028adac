"""The privacy plan: δ, sampling rate, steps and σ fixed before the first step, the unit policy
(one record per unit, or group privacy), the budget, and the caveats every DP trainer states.

dp-sgd, fedavg-dp, split client-DP and the shadows of a DP model all plan through here."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from medpriv.config import DP_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.dataset import TabularDataset
from medpriv.data.splits import Splits
from medpriv.errors import PrivacyError
from medpriv.privacy.accounting import (
    Accountant,
    calibrate_noise,
    check_delta,
    default_delta,
    epsilon_spent,
    group_privacy,
)

VALIDATION_CAVEAT = (
    "validation records (used for preprocessing statistics, the initial output bias, early "
    "stopping and calibration) are not protected; ε covers every training record"
)


def public_and_unprotected(train: TabularDataset) -> dict[str, tuple[str, ...]]:
    """What a central DP statement treats as public, whom it trusts, what it does not protect."""
    unit = train.unit_name
    return {
        "public": (
            f"the number of training {unit}s ({train.n_units:,}), which sets the sampling rate "
            "and δ",
        ),
        "trusts": ("the machine that trains, which reads the raw training records",),
        "unprotected": (
            f"validation {unit}s (preprocessing statistics, initial output bias, early stopping, "
            "calibration)",
            "the exact counts in the dataset card",
        ),
    }


@dataclass(frozen=True)
class DPPlan:
    """Everything the accountant needs, fixed before the first step."""

    noise_multiplier: float
    sample_rate: float
    steps_per_epoch: int
    delta: float  # per record; group privacy turns it into the per-unit δ
    accountant: str
    max_grad_norm: float
    group_size: int
    n_records: int

    @property
    def expected_batch_size(self) -> float:
        return self.sample_rate * self.n_records

    def record_epsilon(self, steps: int) -> float:
        return _epsilon(self.accountant, self.noise_multiplier, self.sample_rate, steps, self.delta)

    def unit_guarantee(self, steps: int) -> tuple[float, float]:
        """(ε, δ) per privacy unit: group privacy over `group_size` records when it is above 1."""
        return group_privacy(self.record_epsilon(steps), self.delta, self.group_size)

    def unit_epsilon(self, steps: int) -> float:
        return self.unit_guarantee(steps)[0]

    def meta(self) -> dict[str, Any]:
        """What a checkpoint must match to continue the same accounting."""
        return {
            "accountant": self.accountant,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "max_grad_norm": self.max_grad_norm,
            "delta": self.delta,
            "group_size": self.group_size,
        }


class RunAccountant:
    """The accountant of one DP training run: stepped with the plan's (σ, q) after every epoch,
    saved in every checkpoint, and checked when a run resumes — a checkpoint whose accountant
    does not match the plan or the epochs run is refused, so ε is never understated."""

    def __init__(self, plan: DPPlan) -> None:
        self.plan = plan
        self.accountant = Accountant(plan.accountant)

    def after_epoch(self, epoch: int) -> dict[str, float]:
        """Charge one epoch's steps; the history fields (ε per unit, steps so far)."""
        self.accountant.step(
            noise_multiplier=self.plan.noise_multiplier,
            sample_rate=self.plan.sample_rate,
            steps=self.plan.steps_per_epoch,
        )
        self.check(epoch)
        return {"epsilon": self.unit_guarantee()[0], "steps": self.accountant.steps}

    def check(self, epochs: int) -> None:
        """The history must be exactly `epochs` epochs of the plan's mechanism."""
        expected = (self.plan.noise_multiplier, self.plan.sample_rate)
        if self.accountant.mechanism != self.plan.accountant or any(
            entry[:2] != expected for entry in self.accountant.history
        ):
            raise PrivacyError(
                "the saved accountant does not match this run's mechanism; start fresh"
            )
        if self.accountant.steps != epochs * self.plan.steps_per_epoch:
            raise PrivacyError(
                f"the saved accountant counts {self.accountant.steps:,} steps for {epochs} "
                f"epochs of {self.plan.steps_per_epoch:,}; the checkpoint is inconsistent"
            )

    def unit_guarantee(self) -> tuple[float, float]:
        """(ε, δ) per privacy unit over the steps taken so far."""
        record = self.accountant.get_epsilon(self.plan.delta)
        return group_privacy(record, self.plan.delta, self.plan.group_size)

    def state_dict(self) -> dict:
        return self.accountant.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.accountant = Accountant.from_state_dict(state)


@lru_cache(maxsize=4096)
def _epsilon(accountant: str, sigma: float, q: float, steps: int, delta: float) -> float:
    return epsilon_spent(
        accountant=accountant, noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta
    )


def one_record_per_unit(dataset: TabularDataset, seed: int) -> TabularDataset:
    """Keep one random record of each privacy unit (per-record DP is then per-unit DP)."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    first = ~pd.Series(dataset.unit_ids[order]).duplicated().to_numpy()
    return dataset.subset(np.sort(order[first]))


def apply_unit_policy(
    splits: Splits, privacy: PrivacyConfig, seed: int
) -> tuple[Splits, list[str]]:
    """With `one-per-unit`, keep one random training record per unit; returns caveats to state."""
    train = splits.train
    if privacy.unit_policy != "one-per-unit" or train.n_units == len(train):
        return splits, []
    kept = one_record_per_unit(train, seed)
    note = f"{len(train) - len(kept):,} extra training records dropped to keep one per unit"
    return replace(splits, parts={**splits.parts, "train": kept}), [note]


def plan_privacy(
    train: TabularDataset,
    *,
    config: TrainConfig,
    privacy: PrivacyConfig,
    saved: tuple[float, float] | None = None,
) -> DPPlan:
    """Fix δ, q, steps and σ (calibrated to the target ε over the planned epochs, per unit).

    With k records per unit (unit_policy 'group'), the record-level (ε_r, δ_r) is chosen so that
    group privacy, (kε_r, k·e^{(k−1)ε_r}·δ_r), meets the per-unit target at the planned steps.
    """
    config = config.resolved(DP_RECIPE)
    n_records, n_units = len(train), train.n_units
    k = int(pd.Series(train.unit_ids).value_counts().max()) if n_records else 1
    unit_delta = privacy.delta if privacy.delta is not None else default_delta(n_units)
    check_delta(unit_delta, n_units)
    sample_rate = min(1.0, config.batch_size / n_records)
    steps_per_epoch = max(1, round(1 / sample_rate))
    planned_steps = config.epochs * steps_per_epoch
    if saved is not None:
        sigma, record_delta = saved
    elif privacy.noise_multiplier is not None:
        sigma = privacy.noise_multiplier
        record_delta = _record_delta_for_noise(
            unit_delta, k, sigma, sample_rate, planned_steps, privacy.accountant
        )
    else:
        record_epsilon = privacy.target_epsilon / k
        record_delta = unit_delta / (k * np.exp((k - 1) * record_epsilon))
        sigma = calibrate_noise(
            target_epsilon=record_epsilon,
            delta=record_delta,
            sample_rate=sample_rate,
            steps=planned_steps,
            accountant=privacy.accountant,
        )
    plan = DPPlan(
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps_per_epoch=steps_per_epoch,
        delta=record_delta,
        accountant=privacy.accountant,
        max_grad_norm=privacy.max_grad_norm,
        group_size=k,
        n_records=n_records,
    )
    planned_delta = plan.unit_guarantee(planned_steps)[1]
    if planned_delta >= 1 / n_units:
        raise PrivacyError(
            f"group privacy over {k} records per unit gives δ = {planned_delta:.3g} per unit, "
            f"not below 1/n; use --unit-policy one-per-unit or more noise"
        )
    return plan


def _record_delta_for_noise(
    unit_delta: float, k: int, sigma: float, q: float, steps: int, accountant: str
) -> float:
    """The largest record δ (to a factor of 2) with k·e^{(k−1)ε_r(δ)}·δ ≤ the unit δ."""
    if k == 1:
        return unit_delta
    delta = unit_delta / k
    for _ in range(60):
        eps = epsilon_spent(
            accountant=accountant, noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta
        )
        if group_privacy(eps, delta, k)[1] <= unit_delta:
            return delta
        delta /= 2
    raise PrivacyError(f"no record-level δ meets the per-unit δ {unit_delta:g} for groups of {k}")


def check_budget(plan: DPPlan, *, planned_steps: int, privacy: PrivacyConfig) -> list[str]:
    """Refuse to train past the budget unless allowed; returns caveats to record."""
    if privacy.budget is None:
        return []
    projected = plan.unit_epsilon(planned_steps)
    if projected <= privacy.budget:
        return []
    message = (
        f"continuing to {planned_steps:,} steps would spend ε = {projected:.3g}, over the "
        f"budget of {privacy.budget:g}"
    )
    if not privacy.allow_over_budget:
        raise PrivacyError(f"{message}; lower --epochs, or pass --allow-over-budget")
    return [f"{message} (allowed by --allow-over-budget)"]
