"""`dp-sgd`: the MLP trained with DP-SGD (Poisson sampling, per-sample clipping, Gaussian noise).

The trainer wraps the shared loop and the privacy core: the plan (`medpriv.privacy.plan`), the
Poisson sampler and the DP step (`medpriv.privacy.sampler`, `.step`, engines `fast` and
`opacus`), all drawing from a fresh CSPRNG-seeded `NoiseSource`; it draws no noise itself. ε
comes from Opacus's PRV or RDP accountant over every step since the start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from medpriv.config import DP_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.splits import Splits
from medpriv.privacy.audit.canaries import DiracCanaries
from medpriv.privacy.plan import (
    VALIDATION_CAVEAT,
    RunAccountant,
    apply_unit_policy,
    check_budget,
    plan_privacy,
    public_and_unprotected,
)
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.sampler import PoissonBatches
from medpriv.privacy.statement import PrivacySpent
from medpriv.privacy.step import make_dp_step
from medpriv.train.base import TRAINERS, Cost, TrainedModel, Trainer
from medpriv.train.checkpoint import saved_mechanism
from medpriv.train.dp_recipe import STEPS, dp_sgd_recipe
from medpriv.train.engine.mlp import finish_scorer, loop_params, new_network, prepare, run_meta
from medpriv.train.loop import EpochCallback, fit_network
from medpriv.train.projection import PROJECTION_CAVEAT, projected
from medpriv.train.tuning import fit_tuned, one_run


@TRAINERS.register("dp-sgd")
class DPSGDTrainer(Trainer):
    """DP-SGD on the MLP; privacy unit = the dataset's unit (the patient). The recipe comes from
    public quantities (`medpriv.train.dp_recipe`); the run records it and why."""

    method = "dp-sgd"
    private = True
    recipe = DP_RECIPE
    gradient_canaries = True
    mechanism_runs = True

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
        canaries: Callable[..., DiracCanaries] | None = None,
    ) -> TrainedModel:
        """The DP-SGD model; with `canaries` (the white-box audit only), the factory's canaries
        are planted in this run's mechanism and returned in `artifacts["canaries"]`."""
        start = time.perf_counter()
        privacy = privacy or PrivacyConfig()
        if privacy.tune == "private":
            if canaries is None:
                return fit_tuned(self, splits=splits, config=config, privacy=privacy, seed=seed)
            # the canary run audits one run of the mechanism at the tuned σ
            privacy = one_run(
                privacy, n_units=splits.train.n_units, steps=int(config.epochs or STEPS)
            )
        splits, unit_caveats = apply_unit_policy(splits, privacy, seed)
        caveats = [VALIDATION_CAVEAT, *unit_caveats]
        pre, data = prepare(splits, fit_on="val")
        recipe = dp_sgd_recipe(
            n_units=splits.train.n_units,
            n_records=len(splits.train),
            in_features=data.x_train.shape[1],
            epsilon=privacy.target_epsilon,
            delta=privacy.delta,
            noise_multiplier=privacy.noise_multiplier,
            accountant=privacy.accountant,
            steps=config.epochs if config.batch_size is None else None,
            batch_given=config.batch_size is not None,
            hidden_given=config.hidden is not None,
        )
        if recipe.projection is not None:
            pre, data = projected(pre, splits, recipe.projection)
            caveats.append(PROJECTION_CAVEAT.format(k=recipe.projection))
        user_set = sorted(k for k in recipe.fields if getattr(config, k) is not None)
        config = recipe.apply(config).resolved(self.recipe)
        plan = plan_privacy(
            splits.train,
            config=config,
            privacy=privacy,
            saved=saved_mechanism(checkpoint, resume),
        )
        caveats += check_budget(
            plan, planned_steps=config.epochs * plan.steps_per_epoch, privacy=privacy
        )
        network, optimizer = new_network(
            config, data.x_train.shape[1], seed, positive_rate=float(data.y_val.float().mean())
        )
        # Fresh per run and per resume; never saved (a checkpoint holds no noise state).
        noise = NoiseSource.for_run(reproducible=privacy.reproducible_noise, seed=seed)
        planted = (
            None
            if canaries is None
            else canaries(
                parameters=sum(p.numel() for p in network.parameters()),
                max_grad_norm=plan.max_grad_norm,
                noise_multiplier=plan.noise_multiplier,
                sample_rate=plan.sample_rate,
                noise=noise,
                seed=seed,
            )
        )
        step, close, engine = make_dp_step(
            privacy.engine,
            network,
            optimizer,
            max_grad_norm=plan.max_grad_norm,
            noise_multiplier=plan.noise_multiplier,
            expected_batch_size=plan.expected_batch_size,
            noise=noise,
            canaries=planted,
        )
        accountant = RunAccountant(plan)
        sampler = PoissonBatches(
            sample_rate=plan.sample_rate, steps_per_epoch=plan.steps_per_epoch, noise=noise
        )
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
                annotate=accountant.after_epoch,
                stateful={"accountant": accountant},
            )
        finally:
            close()
        scorer, calibration = finish_scorer(network, data, calibrate=bool(config.calibrate))
        accountant.check(state.epoch)
        steps = accountant.accountant.steps
        epsilon, delta = accountant.unit_guarantee()
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
            noise=noise.kind,
            caveats=tuple(caveats),
            **public_and_unprotected(splits.train),
        )
        return TrainedModel(
            method=self.method,
            preprocessor=pre,
            scorer=scorer,
            history=state.history,
            privacy=spent,
            cost=Cost(train_seconds=time.perf_counter() - start),
            artifacts={} if planted is None else {"canaries": planted},
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
                "noise_source": noise.kind,
                "recipe": {**recipe.to_dict(), "set_by_user": user_set},
            },
        )
