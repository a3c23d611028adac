"""`baseline`: the non-private MLP (Adam by default, early stopping on validation AUROC)."""

from __future__ import annotations

import time
from pathlib import Path

from medpriv.config import BASELINE_RECIPE, PrivacyConfig, TrainConfig
from medpriv.data.splits import Splits
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import TRAINERS, Cost, TrainedModel, Trainer
from medpriv.train.engine.mlp import finish_scorer, loop_params, new_network, prepare, run_meta
from medpriv.train.loop import EpochCallback, fit_network, shuffled_batches


@TRAINERS.register("baseline")
class BaselineTrainer(Trainer):
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
