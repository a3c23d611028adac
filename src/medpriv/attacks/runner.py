"""Attack one trained model: the membership pool, shadow models, MIA, the ε audit, attributes.

Protocol (fixed, ground truth by privacy unit): the target is the released model itself, trained
on every unit outside validation and test. Membership attacks take its training units (`train`)
as members and the untouched test units — where utility is measured, never trained on — as
non-members; the two together form the attack pool. Reference (shadow) models repeat the
target's recipe — DP-SGD noise and clipping included — each on a random half of the pool's units
(train ∪ test), so that every unit is IN for exactly half of them; RMIA's population is the
validation split. MLP shadows are trained all at once (`medpriv.attacks.shadow`); other methods
are refitted one by one with their own trainer.

The pool is not balanced (with the default fractions about 3 members to 1 non-member). AUC, TPR
at a fixed FPR and advantage do not depend on that ratio, but an FPR below 1 / (test records) is
met only with no false positive at all, and each shadow trains on half the pool, fewer units
than the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from medpriv.attacks.base import AttackInput, AttackResult
from medpriv.attacks.catalog import ATTACK_NAMES
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
from medpriv.registry import Registry
from medpriv.train.base import TrainedModel, Trainer

ALL_ATTACKS = ATTACK_NAMES  # registry order: membership attacks before the audit
VECTORIZED_METHODS = ("baseline", "dp-sgd")
NONMEMBER_PART = "test"  # the split whose units are the membership attacks' non-members
Progress = Callable[[str], None]


@dataclass(frozen=True)
class AttackPool:
    """Pool records (members first), their membership and the population for RMIA.

    `everyone` is the whole pool (train ∪ test) the reference models train on; `attacked` the
    positions in it of the records the attacks score (None: all of them) — a uniform random
    sample of units on a large table, said in each membership block (`sample`).
    `nonmembers_from` names the split the non-members come from (recorded in each membership
    attack's results.json block)."""

    everyone: TabularDataset
    member_everyone: np.ndarray
    population: TabularDataset
    nonmembers_from: str = NONMEMBER_PART
    attacked: np.ndarray | None = None

    @classmethod
    def from_splits(
        cls, splits: Splits, *, max_units: int | None = None, seed: int = 0
    ) -> AttackPool:
        """Members: the training split; non-members: the test split; population: validation.
        With `max_units`, each side with more units is attacked on `max_units` of them, drawn
        uniformly by unit (seeded: which patients are scored is no part of any guarantee)."""
        missing = [p for p in ("train", NONMEMBER_PART, "val") if p not in splits.parts]
        if missing:
            raise ValueError(
                f"attacks need splits with train, {NONMEMBER_PART} and val parts; "
                f"missing: {', '.join(missing)}"
            )
        if max_units is not None and max_units < 1:
            raise ValueError(f"max_units must be at least 1, got {max_units}")
        members, others = splits.train, splits.parts[NONMEMBER_PART]
        shared = np.intersect1d(members.unit_ids, others.unit_ids)
        if len(shared):
            raise ValueError(
                f"{len(shared)} units are in both train and {NONMEMBER_PART}: membership would "
                "have no ground truth"
            )
        member = np.r_[np.ones(len(members), int), np.zeros(len(others), int)]
        everyone = concat([members, others])
        attacked = None
        if max_units is not None:
            rng = np.random.default_rng([seed, 17])
            keep = np.zeros(len(everyone), bool)
            for side in (1, 0):
                rows = np.flatnonzero(member == side)
                units = np.unique(everyone.unit_ids[rows])
                chosen = (
                    units
                    if len(units) <= max_units
                    else rng.choice(units, max_units, replace=False)
                )
                keep[rows[np.isin(everyone.unit_ids[rows], chosen)]] = True
            if not keep.all():
                attacked = np.flatnonzero(keep)
        return cls(
            everyone=everyone,
            member_everyone=member,
            population=splits.val,
            attacked=attacked,
        )

    @cached_property
    def records(self) -> TabularDataset:
        """The attacked records, members first."""
        return self.everyone if self.attacked is None else self.everyone.subset(self.attacked)

    @property
    def member(self) -> np.ndarray:
        """1 for a member record of `records`, 0 for a non-member."""
        return (
            self.member_everyone if self.attacked is None else self.member_everyone[self.attacked]
        )

    @property
    def members(self) -> TabularDataset:
        return self.records.subset(np.flatnonzero(self.member == 1))

    @property
    def nonmembers(self) -> TabularDataset:
        return self.records.subset(np.flatnonzero(self.member == 0))

    def sample(self) -> dict[str, int] | None:
        """Attacked and total units per side when the attacks score a sample; None otherwise."""
        if self.attacked is None:
            return None

        def units(data: TabularDataset, member: np.ndarray, side: int) -> int:
            return len(np.unique(data.unit_ids[member == side]))

        return {
            "member_units": units(self.records, self.member, 1),
            "member_units_total": units(self.everyone, self.member_everyone, 1),
            "nonmember_units": units(self.records, self.member, 0),
            "nonmember_units_total": units(self.everyone, self.member_everyone, 0),
        }


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
    """Train k shadows with the target's recipe, each on a random half of every pool unit, and
    collect their margins on the attacked records (the IN mask restricted to them)."""
    in_everyone = shadow_in_mask(pool.everyone.unit_ids, k, seed)
    in_mask = in_everyone if pool.attacked is None else in_everyone[:, pool.attacked]
    if model.method in VECTORIZED_METHODS:
        from medpriv.attacks.shadow import train_shadows

        design = model.preprocessor.transform
        shadows = train_shadows(
            design(pool.everyone.features),
            pool.everyone.labels,
            in_everyone,
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
    # Noisy methods: the shadows use the target's σ (public in its privacy statement) rather
    # than re-calibrating to their own data sizes — the same mechanism, and no calibration cost.
    sigma = model.privacy.noise_multiplier
    if privacy is not None and sigma is not None:
        privacy = replace(privacy, noise_multiplier=float(sigma))
    # Trainers may offer a cheaper copy for shadows (no bookkeeping nobody reads).
    trainer = trainer.for_shadows()
    pool_margins, population_margins = [], []
    for index in range(k):
        part = pool.everyone.subset(np.flatnonzero(in_everyone[index]))
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


@dataclass
class AttackContext:
    """One target model under attack: what every registered attack may use, computed once."""

    model: TrainedModel
    splits: Splits
    pool: AttackPool
    trainer: Trainer
    config: TrainConfig
    privacy: PrivacyConfig | None
    requested: tuple[str, ...]
    n_shadow: int
    seed: int
    say: Progress
    inversion_steps: int = 300
    inversion_trials: int = 2
    device: str = "auto"  # `medpriv.device`: where the many-runs audit draws its runs
    results: dict[str, AttackResult] = field(default_factory=dict)
    _shadows: ShadowOutputs | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.pool.records.labels

    @cached_property
    def target_margin(self) -> np.ndarray:
        return self.model.margin(self.pool.records)

    def shadows(self) -> ShadowOutputs:
        """K shadow models' margins on the pool and the population (trained on first use)."""
        if self._shadows is None:
            self.say(f"training {self.n_shadow} shadow models")
            self._shadows = train_shadow_outputs(
                self.model,
                self.pool,
                self.splits,
                trainer=self.trainer,
                config=self.config,
                privacy=self.privacy,
                k=self.n_shadow,
                seed=self.seed + 10_000,
            )
        return self._shadows

    def membership(self, name: str, scores: np.ndarray, **extra: Any) -> AttackResult:
        """Record a membership attack's per-record scores; its results.json block follows."""
        sample = self.pool.sample()
        result = AttackResult.from_input(
            name,
            AttackInput(scores, self.pool.member),
            nonmembers_from=self.pool.nonmembers_from,
            **({"sample": sample} if sample is not None else {}),
            **extra,
        )
        self.results[name] = result
        return result


AttackFn = Callable[[AttackContext], "dict[str, Any] | None"]
ATTACKS: Registry[AttackFn] = Registry("attack")


@ATTACKS.register("mia_loss")
def _mia_loss(ctx: AttackContext) -> dict[str, Any]:
    return ctx.membership("mia_loss", loss_scores(ctx.target_margin, ctx.labels)).to_dict()


@ATTACKS.register("mia_lira")
def _mia_lira(ctx: AttackContext) -> dict[str, Any]:
    shadows = ctx.shadows()
    statistic = logit_confidence(ctx.target_margin, ctx.labels)
    shadow_statistic = logit_confidence(shadows.pool, ctx.labels[None, :])
    offline = AttackResult.from_input(
        "mia_lira_offline",
        AttackInput(
            lira_scores(statistic, shadow_statistic, shadows.in_mask, online=False),
            ctx.pool.member,
        ),
    )
    return ctx.membership(
        "mia_lira",
        lira_scores(statistic, shadow_statistic, shadows.in_mask),
        n_shadow=ctx.n_shadow,
        variant="online, fixed variance",
        offline={"auc": offline.auc, "tpr_at_fpr": offline.tpr_at_fpr()},
    ).to_dict()


@ATTACKS.register("mia_rmia")
def _mia_rmia(ctx: AttackContext) -> dict[str, Any]:
    shadows, population = ctx.shadows(), ctx.pool.population
    scores = rmia_scores(
        true_label_probability(ctx.target_margin, ctx.labels),
        true_label_probability(shadows.pool, ctx.labels[None, :]),
        true_label_probability(ctx.model.margin(population), population.labels),
        true_label_probability(shadows.population, population.labels[None, :]),
    )
    return ctx.membership(
        "mia_rmia", scores, n_shadow=ctx.n_shadow, n_population=len(population)
    ).to_dict()


@ATTACKS.register("audit")
def _audit(ctx: AttackContext) -> dict[str, Any]:
    """The canary audits, each on its own training run (`medpriv.attacks.canary_audit`,
    `medpriv.attacks.input_canaries`): white-box for trainers that take gradient canaries (one
    run, and many runs of the recorded mechanism where it applies), black-box for every
    method."""
    from medpriv.attacks.canary_audit import audit_block, mechanism_runs_audit, white_box_audit
    from medpriv.attacks.input_canaries import black_box_audit
    from medpriv.device import resolve_device

    common = {"splits": ctx.splits, "config": ctx.config, "privacy": ctx.privacy, "seed": ctx.seed}
    white = runs = None
    if ctx.trainer.gradient_canaries:
        ctx.say("auditing the mechanism with gradient canaries")
        white = white_box_audit(ctx.trainer, **common)
    if ctx.trainer.mechanism_runs:
        ctx.say("auditing the mechanism over many runs")
        runs = mechanism_runs_audit(ctx.trainer, ctx.model, device=resolve_device(ctx.device))
    ctx.say("auditing the released model with input canaries")
    black = black_box_audit(ctx.trainer, ctx.model, **common)
    return audit_block(white_box=white, black_box=black, white_box_runs=runs)


@ATTACKS.register("attribute")
def _attribute(ctx: AttackContext) -> dict[str, Any] | None:
    """None (left out) when the dataset has no usable sensitive column."""
    from medpriv.attacks.attribute import attribute_inference

    found = attribute_inference(
        ctx.model,
        members=ctx.pool.members,
        nonmembers=ctx.pool.nonmembers,
        reference=ctx.splits.val,
        seed=ctx.seed,
    )
    if found is None:
        return None
    sample = ctx.pool.sample()
    return found.to_dict() | ({"sample": sample} if sample is not None else {})


@ATTACKS.register("fl_inversion")
def _fl_inversion(ctx: AttackContext) -> dict[str, Any] | None:
    """Gradient inversion of client updates; None (left out) for non-federated models."""
    from medpriv.attacks.fl_inversion import fl_inversion

    ctx.say("inverting client updates")
    return fl_inversion(
        ctx.model,
        ctx.splits,
        seed=ctx.seed,
        steps=ctx.inversion_steps,
        trials=ctx.inversion_trials,
    )


@ATTACKS.register("sl_label_leakage")
def _sl_label_leakage(ctx: AttackContext) -> dict[str, Any] | None:
    """Labels from the gradients a U-shaped split-learning server received; None (left out) for
    other models (vanilla split learning sends the labels themselves)."""
    from medpriv.attacks.sl_leakage import label_leakage

    observed = ctx.model.artifacts.get("sl_gradients")
    if observed is None:
        return None
    found = label_leakage(
        *observed,
        gradient_noise=float(ctx.model.params.get("gradient_noise", 0.0)),
        seed=ctx.seed,
    )
    return None if found is None else found.to_dict()


@ATTACKS.register("sl_reconstruction")
def _sl_reconstruction(ctx: AttackContext) -> dict[str, Any] | None:
    """Inputs from the activations a split-learning server received; None for other models."""
    from medpriv.attacks.sl_reconstruction import sl_reconstruction

    if "sl_client_layers" not in ctx.model.artifacts:
        return None
    ctx.say("reconstructing inputs from activations")
    return sl_reconstruction(ctx.model, ctx.splits, seed=ctx.seed)


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
    inversion_steps: int = 300,
    inversion_trials: int = 2,
    device: str = "auto",
    pool: AttackPool | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, AttackResult]]:
    """(results.json `attacks` block, AttackResults with per-record scores) for one model.

    Attacks run in registry order (membership attacks before the audit that reuses their
    scores); one that does not apply to this model or dataset is left out of the block.
    `pool` is the attack pool (default: every train and test record).
    """
    functions = [(name, ATTACKS.get(name)) for name in attacks]  # unknown names fail here
    ctx = AttackContext(
        model=model,
        splits=splits,
        pool=pool if pool is not None else AttackPool.from_splits(splits),
        trainer=trainer,
        config=config,
        privacy=privacy,
        requested=tuple(attacks),
        n_shadow=n_shadow,
        seed=seed,
        say=progress or (lambda _: None),
        inversion_steps=inversion_steps,
        inversion_trials=inversion_trials,
        device=device,
    )
    order = {name: i for i, name in enumerate(ALL_ATTACKS)}
    block: dict[str, dict[str, Any]] = {}
    for name, attack in sorted(functions, key=lambda item: order.get(item[0], len(order))):
        found = attack(ctx)
        if found is not None:
            block[name] = found
    return block, dict(ctx.results)
