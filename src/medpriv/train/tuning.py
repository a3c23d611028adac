"""`--tune private`: dp-sgd's learning rate and model chosen on validation patients by private
selection (Papernot & Steinke 2022; the accounting is `medpriv.privacy.tuning`).

The recipe rule (`medpriv.train.dp_recipe`) needs no tuning: it is the default. With
`--tune private`, K ~ logarithmic(γ) full-batch runs (K from the CSPRNG, E[K] = `tune_trials`),
each with a candidate (learning rate × model of the rule's ladder) drawn at random, all with the
σ calibrated so that releasing the best of them costs the target ε. The best is the run with the
lowest validation loss; only it is released — its model, history and which candidate it was.
K is never written: not in results.json, not in the progress output (the trials run without
per-epoch callbacks), not as the training time (the cost shows the selected run alone).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from medpriv.config import PrivacyConfig, TrainConfig
from medpriv.data.splits import Splits
from medpriv.errors import ConfigError, PrivacyError
from medpriv.privacy.accounting import default_delta
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.tuning import METHOD, Selection, calibrate_tuned_noise, tuned_epsilon
from medpriv.train.base import Cost, TrainedModel, Trainer
from medpriv.train.dp_recipe import LADDER, STEPS, model_name, parameter_count

LEARNING_RATES = (0.1, 0.25, 0.5, 1.0, 2.0)  # momentum SGD on the mean clipped gradient
TUNED = ("lr", "hidden")
CAVEAT = (
    "tuned by private selection: the released model is the best on validation patients of a "
    "hidden number of runs; ε covers the selection (Papernot & Steinke 2022) with that number "
    "hidden — medpriv writes only the selected run's time, but the wall-clock length of the "
    "whole run (file times, your own logs) hints at it"
)


def candidates(config: TrainConfig) -> list[dict[str, Any]]:
    """The public grid: learning rate × model, minus what the user fixed."""
    lrs = (config.lr,) if config.lr is not None else LEARNING_RATES
    models = (tuple(config.hidden),) if config.hidden is not None else LADDER
    return [{"lr": lr, "hidden": hidden} for hidden in models for lr in lrs]


def one_run(privacy: PrivacyConfig, *, n_units: int, steps: int) -> PrivacyConfig:
    """One trial's privacy settings: the σ at which the selection costs the target ε (the
    white-box audit's canary run takes the same, one run)."""
    delta = privacy.delta if privacy.delta is not None else default_delta(n_units)
    sigma = calibrate_tuned_noise(
        target_epsilon=float(privacy.target_epsilon),
        delta=delta,
        sample_rate=1.0,
        steps=steps,
        selection=Selection.expecting(privacy.tune_trials),
    )
    return dataclasses.replace(
        privacy, tune="none", target_epsilon=None, noise_multiplier=sigma, delta=delta, budget=None
    )


def fit_tuned(
    trainer: Trainer,
    *,
    splits: Splits,
    config: TrainConfig,
    privacy: PrivacyConfig,
    seed: int,
) -> TrainedModel:
    """The best of K private runs, its ε that of the selection."""
    if config.batch_size is not None:
        raise ConfigError("--tune private tunes the full-batch recipe; leave --batch-size unset")
    if privacy.target_epsilon is None or privacy.noise_multiplier is not None:
        raise ConfigError("--tune private needs a target ε (and no --noise-multiplier)")
    grid = candidates(config)
    if len(grid) < 2:
        raise ConfigError("--tune private has nothing to tune: --lr and --hidden are both set")
    if len(splits.train) != splits.train.n_units and privacy.unit_policy != "one-per-unit":
        raise PrivacyError("--tune private accounts one record per unit; use one-per-unit")
    steps = int(config.epochs or STEPS)
    trial_privacy = one_run(privacy, n_units=splits.train.n_units, steps=steps)
    sigma, delta = float(trial_privacy.noise_multiplier), float(trial_privacy.delta)
    selection = Selection.expecting(privacy.tune_trials)
    epsilon = tuned_epsilon(
        noise_multiplier=sigma, sample_rate=1.0, steps=steps, delta=delta, selection=selection
    )
    if privacy.budget is not None and epsilon > privacy.budget and not privacy.allow_over_budget:
        raise PrivacyError(
            f"--tune private spends ε = {epsilon:.3g} > --budget {privacy.budget:g}; lower the "
            "target ε or pass --allow-over-budget"
        )
    noise = NoiseSource.for_run(reproducible=privacy.reproducible_noise, seed=seed)
    trials = selection.draw(noise)
    best: TrainedModel | None = None
    best_loss, best_seconds, chosen = math.inf, 0.0, grid[0]
    for _ in range(trials):
        candidate = grid[min(len(grid) - 1, int(noise.uniform_np() * len(grid)))]
        started = time.perf_counter()
        model = trainer.fit(
            splits=splits,
            config=dataclasses.replace(config, epochs=steps, **candidate),
            privacy=trial_privacy,
            seed=seed,
        )
        loss = min((r["val_loss"] for r in model.history if "val_loss" in r), default=math.inf)
        if best is None or loss < best_loss:
            best, best_loss, chosen = model, loss, candidate
            best_seconds = time.perf_counter() - started
    assert best is not None  # K >= 1
    spent = best.privacy
    statement = dataclasses.replace(
        spent,
        epsilon=epsilon,
        delta=delta,
        accountant="rdp",
        mechanism=(
            f"private selection ({METHOD}): the best on validation loss of a hidden number K "
            f"of full-batch DP-SGD runs at σ = {sigma:.4g}, E[K] = {selection.expected_trials:g}"
            f", each with a learning rate and model drawn from a public grid of {len(grid)}"
        ),
        caveats=(*spent.caveats, CAVEAT),
    )
    reason = (
        f"private selection among {len(grid)} candidates (learning rate × model), "
        f"E[K] = {selection.expected_trials:g} trials (their number hidden), σ = {sigma:.3g} "
        f"for ε = {epsilon:.3g} overall → lr {chosen['lr']:g}, "
        f"{model_name(tuple(chosen['hidden']))}"
    )
    rule_fields = dict(best.params.get("recipe", {}).get("fields", {}))
    in_features = len(best.preprocessor.feature_names_)
    user_set = [k for k in ("epochs", "lr", "hidden", "patience") if getattr(config, k) is not None]
    params = {
        **best.params,
        "recipe": {
            "fields": {**rule_fields, "lr": chosen["lr"], "hidden": list(chosen["hidden"])},
            "reason": reason,
            "noise_ratio": math.sqrt(parameter_count(in_features, tuple(chosen["hidden"])))
            * sigma
            / splits.train.n_units,
            "set_by_user": user_set,
        },
        "tuning": {
            "method": METHOD,
            "expected_trials": selection.expected_trials,
            "gamma": selection.gamma,
            "noise_multiplier": sigma,
            "candidates": [{"lr": c["lr"], "hidden": list(c["hidden"])} for c in grid],
            "chosen": {"lr": chosen["lr"], "hidden": list(chosen["hidden"])},
            "reason": reason,
            "history_epsilon": "the per-epoch ε in the history is the selected run's alone",
        },
    }
    return dataclasses.replace(
        best, privacy=statement, params=params, cost=Cost(train_seconds=best_seconds)
    )
