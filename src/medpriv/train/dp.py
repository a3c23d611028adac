"""`dp-sgd`: the MLP trained with DP-SGD (Poisson sampling, per-sample clipping, Gaussian noise).

Two engines compute the same update: `fast` (closed-form per-layer per-sample gradient norms,
`medpriv.train.dp_fast`) and `opacus` (Opacus 1.6 GradSampleModule + DPOptimizer, the reference
and the fallback for models the fast path does not cover). Both run inside the shared loop with
the Poisson sampler; ε comes from Opacus's PRV or RDP accountant over every step since the start.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from medpriv.config import DP_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.dataset import TabularDataset
from medpriv.data.splits import Splits
from medpriv.errors import PrivacyError
from medpriv.privacy.accounting import (
    PrivacySpent,
    calibrate_noise,
    check_delta,
    default_delta,
    epsilon_spent,
    group_privacy,
)
from medpriv.train.base import TRAINERS, Cost, TrainedModel
from medpriv.train.baseline import finish_scorer, loop_params, new_network, prepare, run_meta
from medpriv.train.checkpoint import load_checkpoint
from medpriv.train.loop import EpochCallback, PoissonBatches, Step, fit_network

VALIDATION_CAVEAT = (
    "validation records (used for preprocessing statistics, the initial output bias, early "
    "stopping and calibration) are not protected; ε covers every training record"
)


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


def saved_mechanism(checkpoint: Path | None, resume: bool) -> tuple[float, float] | None:
    """(σ, record δ) of the run being resumed: resuming continues the same mechanism."""
    if not resume or checkpoint is None or not Path(checkpoint).exists():
        return None
    meta = load_checkpoint(checkpoint)[1]
    return float(meta["noise_multiplier"]), float(meta["delta"])


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


def make_opacus_step(
    network: nn.Module, optimizer: torch.optim.Optimizer, *, plan: DPPlan
) -> tuple[Step, Callable[[], None]]:
    """Reference engine: Opacus GradSampleModule (hooks) + DPOptimizer; returns (step, close)."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    module = GradSampleModule(network, loss_reduction="mean")
    dp_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=plan.expected_batch_size,
        loss_reduction="mean",
    )

    def step(
        _network: nn.Module, _optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        dp_optimizer.zero_grad(set_to_none=True)
        logits = module(x)
        loss = F.cross_entropy(logits, y) if len(x) else logits.sum() * 0.0
        with warnings.catch_warnings():  # inputs never require grad; Opacus's hooks still fire
            warnings.filterwarnings("ignore", message="Full backward hook")
            loss.backward()
        dp_optimizer.step()
        return logits.detach()

    return step, module._close


def make_step(
    engine: str, network: nn.Module, optimizer: torch.optim.Optimizer, *, plan: DPPlan
) -> tuple[Step, Callable[[], None], str]:
    """(step, close, engine used): `fast` where it applies, else Opacus."""
    if engine == "fast":
        from medpriv.train import dp_fast

        if not dp_fast.supports(network):
            engine = "opacus"
    if engine == "fast":
        step = dp_fast.make_fast_dp_step(
            max_grad_norm=plan.max_grad_norm,
            noise_multiplier=plan.noise_multiplier,
            expected_batch_size=plan.expected_batch_size,
        )
        return step, lambda: None, "fast"
    step, close = make_opacus_step(network, optimizer, plan=plan)
    return step, close, "opacus"


def require_poisson(sampler: object) -> None:
    """ε is only reported for Poisson subsampling; anything else is refused."""
    if not getattr(sampler, "poisson", False):
        raise PrivacyError(
            f"refusing to report ε: sampler {type(sampler).__name__} is not Poisson sampling, "
            "which the accountant assumes"
        )


@TRAINERS.register("dp-sgd")
class DPSGDTrainer:
    """DP-SGD on the MLP; privacy unit = the dataset's unit (the patient)."""

    method = "dp-sgd"
    private = True
    recipe = DP_RECIPE

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
        privacy = privacy or PrivacyConfig()
        splits, unit_caveats = apply_unit_policy(splits, privacy, seed)
        caveats = [VALIDATION_CAVEAT, *unit_caveats]
        plan = plan_privacy(
            splits.train,
            config=config,
            privacy=privacy,
            saved=saved_mechanism(checkpoint, resume),
        )
        caveats += check_budget(
            plan, planned_steps=config.epochs * plan.steps_per_epoch, privacy=privacy
        )
        pre, data = prepare(splits, fit_on="val")
        network, optimizer = new_network(
            config, data.x_train.shape[1], seed, positive_rate=float(data.y_val.float().mean())
        )
        step, close, engine = make_step(privacy.engine, network, optimizer, plan=plan)
        sampler = PoissonBatches(sample_rate=plan.sample_rate, steps_per_epoch=plan.steps_per_epoch)
        require_poisson(sampler)
        try:
            state = fit_network(
                network,
                optimizer,
                data,
                epochs=config.epochs,
                patience=config.patience,
                seed=seed,
                batches=sampler,
                step=step,
                checkpoint=checkpoint,
                resume=resume,
                meta={**run_meta(self.method, pre, config, seed, data), **plan.meta()},
                on_epoch=on_epoch,
                record_train_metrics=False,
                annotate=lambda epoch: {
                    "epsilon": plan.unit_epsilon(epoch * plan.steps_per_epoch),
                    "steps": epoch * plan.steps_per_epoch,
                },
            )
        finally:
            close()
        scorer, calibration = finish_scorer(network, data, calibrate=bool(config.calibrate))
        steps = state.epoch * plan.steps_per_epoch
        epsilon, delta = plan.unit_guarantee(steps)
        spent = PrivacySpent(
            epsilon=epsilon,
            delta=delta,
            accountant=plan.accountant,
            sampling="poisson",
            unit=splits.train.unit_name,
            level="sample",
            clipping_norm=plan.max_grad_norm,
            noise_multiplier=plan.noise_multiplier,
            steps=steps,
            sample_rate=plan.sample_rate,
            caveats=tuple(caveats),
        )
        return TrainedModel(
            method=self.method,
            preprocessor=pre,
            scorer=scorer,
            history=state.history,
            privacy=spent,
            cost=Cost(train_seconds=time.perf_counter() - start),
            params={
                **loop_params(config, state),
                "calibration": calibration,
                "prior_init": True,
                "engine": engine,
                "target_epsilon": None if privacy.noise_multiplier else privacy.target_epsilon,
                "noise_multiplier": plan.noise_multiplier,
                "record_delta": plan.delta,
                "group_size": plan.group_size,
                "unit_policy": privacy.unit_policy,
                "budget": privacy.budget,
            },
        )
