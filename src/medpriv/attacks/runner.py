"""Attack one trained model: the membership pool, shadow models, MIA, the ε audit, attributes.

Protocol (fixed, ground truth by privacy unit): the units outside validation and test form the
attack pool; the target trained on a random half of them (`train`, members) and never saw the
other half (`nonmember`). Shadows repeat the target's recipe — DP-SGD noise and clipping
included — each on a random half of the pool's units, so that every unit is IN for exactly half
of them. MLP shadows are trained all at once (`medpriv.attacks.shadow`); other methods are
refitted one by one with their own trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from medpriv.attacks.audit import audit_epsilon
from medpriv.attacks.base import AttackInput, AttackResult
from medpriv.attacks.mia import (
    lira_scores,
    logit_confidence,
    loss_scores,
    rmia_scores,
    true_label_probability,
)
from medpriv.config import PrivacyConfig, TrainConfig
from medpriv.data.dataset import TabularDataset, concat
from medpriv.data.splits import Splits
from medpriv.train.base import TrainedModel, Trainer

ALL_ATTACKS = ("mia_loss", "mia_lira", "mia_rmia", "audit", "attribute")
NEEDS_SHADOWS = ("mia_lira", "mia_rmia")
VECTORIZED_METHODS = ("baseline", "dp-sgd")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class AttackPool:
    """Pool records (members first), their membership and the population for RMIA."""

    records: TabularDataset
    member: np.ndarray
    population: TabularDataset

    @classmethod
    def from_splits(cls, splits: Splits) -> AttackPool:
        if "nonmember" not in splits.parts:
            raise ValueError("attacks need splits made with a 'nonmember' part")
        members, others = splits.train, splits.parts["nonmember"]
        member = np.r_[np.ones(len(members), int), np.zeros(len(others), int)]
        return cls(records=concat([members, others]), member=member, population=splits.val)


def shadow_in_mask(unit_ids: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(k, n) bool: each unit is IN for exactly ⌊k/2⌋ shadows, chosen at random per unit."""
    if k < 2:
        raise ValueError("LiRA needs at least 2 shadow models")
    units, index = np.unique(unit_ids, return_inverse=True)
    rng = np.random.default_rng(seed)
    per_unit = np.argsort(rng.random((len(units), k)), axis=1) < k // 2
    return per_unit[index].T


@dataclass(frozen=True)
class ShadowOutputs:
    """Shadow margins on the pool (k, n) and on the population (k, m), with the IN mask."""

    pool: np.ndarray
    population: np.ndarray
    in_mask: np.ndarray


def train_shadow_outputs(
    model: TrainedModel,
    pool: AttackPool,
    splits: Splits,
    *,
    trainer: Trainer,
    config: TrainConfig,
    privacy: PrivacyConfig | None,
    k: int,
    seed: int,
) -> ShadowOutputs:
    """Train k shadows with the target's recipe and collect their margins."""
    in_mask = shadow_in_mask(pool.records.unit_ids, k, seed)
    if model.method in VECTORIZED_METHODS:
        from medpriv.attacks.shadow import train_shadows

        design = model.preprocessor.transform
        shadows = train_shadows(
            design(pool.records.features),
            pool.records.labels,
            in_mask,
            x_val=design(splits.val.features),
            y_val=splits.val.labels,
            recipe=shadow_recipe(model),
            seed=seed,
        )
        return ShadowOutputs(
            pool=shadows.margins(design(pool.records.features)),
            population=shadows.margins(design(pool.population.features)),
            in_mask=in_mask,
        )
    pool_margins, population_margins = [], []
    for index in range(k):
        part = pool.records.subset(np.flatnonzero(in_mask[index]))
        shadow = trainer.fit(
            splits=replace(splits, parts={**splits.parts, "train": part}),
            config=config,
            privacy=privacy,
            seed=seed + 1 + index,
        )
        pool_margins.append(shadow.margin(pool.records))
        population_margins.append(shadow.margin(pool.population))
    return ShadowOutputs(np.stack(pool_margins), np.stack(population_margins), in_mask)


def shadow_recipe(model: TrainedModel):  # -> ShadowRecipe
    """The target's recipe as the vectorized shadow trainer takes it."""
    from medpriv.attacks.shadow import ShadowRecipe

    p = model.params
    private = model.privacy.epsilon is not None
    q = model.privacy.sample_rate
    return ShadowRecipe(
        hidden=tuple(p["hidden"]),
        epochs=max(1, int(p.get("best_epoch") or p["epochs_run"])),
        batch_size=int(p["batch_size"]),
        lr=float(p["lr"]),
        optimizer=str(p["optimizer"]),
        momentum=float(p.get("momentum", 0.9)),
        weight_decay=float(p.get("weight_decay", 0.0)),
        dropout=float(p["dropout"]),
        calibrate=p.get("calibration") is not None,
        prior_init=bool(p.get("prior_init", False)),
        noise_multiplier=float(p["noise_multiplier"]) if private else None,
        max_grad_norm=float(model.privacy.clipping_norm) if private else None,
        sample_rate=float(q) if private else None,
        steps_per_epoch=max(1, round(1 / q)) if private else None,
    )


def run_attacks(
    model: TrainedModel,
    splits: Splits,
    *,
    attacks: tuple[str, ...],
    trainer: Trainer,
    config: TrainConfig,
    privacy: PrivacyConfig | None,
    n_shadow: int = 16,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, AttackResult]]:
    """(results.json `attacks` block, AttackResults with per-record scores) for one model."""
    say = progress or (lambda _: None)
    pool = AttackPool.from_splits(splits)
    labels = pool.records.labels
    target_margin = model.margin(pool.records)
    results: dict[str, AttackResult] = {}
    if "mia_loss" in attacks or "audit" in attacks:
        results["mia_loss"] = AttackResult.from_input(
            "mia_loss",
            AttackInput(loss_scores(target_margin, labels), pool.member, labels),
        )
    if any(a in attacks for a in NEEDS_SHADOWS):
        say(f"training {n_shadow} shadow models")
        shadows = train_shadow_outputs(
            model,
            pool,
            splits,
            trainer=trainer,
            config=config,
            privacy=privacy,
            k=n_shadow,
            seed=seed + 10_000,
        )
        statistic = logit_confidence(target_margin, labels)
        shadow_statistic = logit_confidence(shadows.pool, labels[None, :])
        if "mia_lira" in attacks:
            offline = AttackResult.from_input(
                "mia_lira_offline",
                AttackInput(
                    lira_scores(statistic, shadow_statistic, shadows.in_mask, online=False),
                    pool.member,
                ),
            )
            results["mia_lira"] = AttackResult.from_input(
                "mia_lira",
                AttackInput(lira_scores(statistic, shadow_statistic, shadows.in_mask), pool.member),
                n_shadow=n_shadow,
                variant="online, fixed variance",
                offline={"auc": offline.auc, "tpr_at_fpr": offline.tpr_at_fpr()},
            )
        if "mia_rmia" in attacks:
            population_labels = pool.population.labels
            results["mia_rmia"] = AttackResult.from_input(
                "mia_rmia",
                AttackInput(
                    rmia_scores(
                        true_label_probability(target_margin, labels),
                        true_label_probability(shadows.pool, labels[None, :]),
                        true_label_probability(model.margin(pool.population), population_labels),
                        true_label_probability(shadows.population, population_labels[None, :]),
                    ),
                    pool.member,
                ),
                n_shadow=n_shadow,
                n_population=len(pool.population),
            )
    block = {name: r.to_dict() for name, r in results.items() if name in attacks}
    if "audit" in attacks:
        strongest = "mia_lira" if "mia_lira" in results else "mia_loss"
        claimed = model.privacy.epsilon
        block["audit"] = audit_epsilon(
            results[strongest].scores,
            results[strongest].member,
            delta=model.privacy.delta or 0.0,
            claimed_epsilon=claimed,
            attack=strongest,
            seed=seed,
        ).to_dict()
    if "attribute" in attacks:
        from medpriv.attacks.attribute import attribute_inference

        found = attribute_inference(
            model,
            members=splits.train,
            nonmembers=splits.parts["nonmember"],
            reference=splits.val,
            seed=seed,
        )
        if found is not None:
            block["attribute"] = found.to_dict()
    return block, results
