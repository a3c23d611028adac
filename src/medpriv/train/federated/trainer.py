"""`fedavg`: hospitals train an MLP together; the server only ever sees model weights.

The training split is partitioned into clients by privacy unit (`--partition`). The coordinator
holds the validation patients: preprocessing is fitted on them and shipped to the clients (no
client row leaves its site), and the global model is validated on them after every round. The
model kept is the round's global model with the best validation AUROC (ties: lower loss), as the
baseline keeps its best epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medpriv.config import (
    FEDAVG_CDP_RECIPE,
    FEDAVG_DP_RECIPE,
    FEDAVG_RECIPE,
    ExperimentConfig,
    FederatedConfig,
    PrivacyConfig,
    TrainConfig,
)
from medpriv.data.partition import partition
from medpriv.data.splits import Splits
from medpriv.errors import ConfigError, PrivacyError
from medpriv.models import MLP
from medpriv.privacy.plan import VALIDATION_CAVEAT, apply_unit_policy
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import TRAINERS, Cost, TrainedModel, Trainer
from medpriv.train.engine.mlp import finish_scorer, prepare
from medpriv.train.federated.client import LocalClient, LocalRecipe
from medpriv.train.federated.engine import LocalPool, check_enough_clients, initial_weights
from medpriv.train.federated.policy import ClientPolicy, PrivacyLedger
from medpriv.train.federated.private import (
    RULE_FIELDS,
    ClientLevelAccountant,
    SampleLevelAccountant,
    refusal_caveats,
    unit_site_groups,
    with_client_rule,
)
from medpriv.train.federated.rounds import Federation, RoundPlan, drive
from medpriv.train.federated.server import (
    best_of,
    clients_per_round,
)
from medpriv.train.federated.strategy import Strategy, make_strategy
from medpriv.train.federated.weights import Weights, n_bytes, set_weights
from medpriv.train.loop import EpochCallback

if TYPE_CHECKING:
    from medpriv.privacy.audit.canaries import DiracCanaries


@dataclass
class _Plan:
    """What differs between the federated methods: the client recipe, the aggregation, the
    client sampling (`participation`: Poisson from this source), the accountant (None for the
    non-private method) and, for DP clients, their own policy and ledgers."""

    recipe: LocalRecipe
    strategy: Strategy
    min_clients: int
    participation: NoiseSource | None = None
    accountant: SampleLevelAccountant | ClientLevelAccountant | None = None
    policy: ClientPolicy | None = None
    ledgers: dict[str, PrivacyLedger] | None = None
    rule: dict[str, Any] | None = None  # fedavg-dp: the client rule's record (params.recipe)

    @property
    def hidden(self) -> bool:
        """Who takes part in each round may not be disclosed (client-level DP amplification)."""
        return isinstance(self.accountant, ClientLevelAccountant) and self.accountant.hidden


@TRAINERS.register("fedavg")
class FedAvgTrainer(Trainer):
    """Federated averaging (or FedProx / FedAdam, by `federated.strategy`) over the clients."""

    method = "fedavg"
    recipe = FEDAVG_RECIPE
    private = False

    def __init__(
        self,
        federated: FederatedConfig | None = None,
        *,
        epsilon_each_round: bool = True,
        attacker_simulation: bool = False,
        publish_participants: bool = False,
        experiment: ExperimentConfig | None = None,
    ) -> None:
        self.federated = federated or FederatedConfig()
        # the whole experiment (its data spec): what --engine flower's SuperNodes load
        self.experiment = experiment
        self.epsilon_each_round = epsilon_each_round
        # An attacker's copy of the training (shadow models): replayable noise from the seed,
        # the same plan and accounting as the model it imitates. Never for a released model.
        self.attacker_simulation = attacker_simulation
        # fedavg-cdp: write each round's participants to the history (ε then has q = 1).
        self.publish_participants = publish_participants

    def for_shadows(self) -> FedAvgTrainer:
        """The attacker's copy of this training: replayable noise seeded by the shadow's seed,
        and no per-round ε in the history (one accountant call per client per round, most of a
        private fit's time); the final ε is still computed."""
        return type(self)(  # in process, whichever engine trained the model it imitates
            dataclasses.replace(self.federated, engine="inprocess"),
            epsilon_each_round=False,
            attacker_simulation=True,
            publish_participants=self.publish_participants,
        )

    def planned_epochs(self, config: TrainConfig) -> int:
        """What the progress bar counts: rounds."""
        return self.federated.rounds

    def _fit_on_flower(
        self,
        *,
        splits: Splits,
        config: TrainConfig,
        privacy: PrivacyConfig | None,
        seed: int,
        checkpoint: Path | None,
    ) -> TrainedModel:
        from medpriv.train.federated.on_flower import fit_on_flower

        if self.experiment is None:
            raise ConfigError("--engine flower needs the experiment's data settings")
        if self.private and privacy is None:
            raise PrivacyError(f"{self.method} needs privacy settings (a target ε)")
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if checkpoint is None:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            else:  # the deployment's logs and outputs stay beside the run's checkpoints
                workdir = Path(checkpoint).with_suffix("")
                workdir.mkdir(parents=True, exist_ok=True)
            model = fit_on_flower(
                self,
                experiment=self.experiment,
                splits=splits,
                config=config,
                privacy=privacy,
                seed=seed,
                workdir=workdir,
            )
        return dataclasses.replace(
            model, cost=dataclasses.replace(model.cost, train_seconds=time.perf_counter() - start)
        )

    def _plan(
        self,
        recipe: LocalRecipe,
        sizes: dict[str, int],
        *,
        privacy: PrivacyConfig | None,
        n_units: int,
        unit: str,
        seed: int,
        units: dict[str, Any],
        in_features: int,
        unset: frozenset[str],
    ) -> _Plan:
        """The plan; `unset` are the TrainConfig fields the user left to the method."""
        fed = self.federated
        if fed.strategy == "fedprox":
            recipe = dataclasses.replace(recipe, proximal_mu=fed.proximal_mu)
        return _Plan(recipe, make_strategy(fed.strategy, server_lr=fed.server_lr), fed.min_clients)

    def _plant(
        self,
        canaries: Callable[..., DiracCanaries],
        plan: _Plan,
        clients: dict[str, LocalClient],
        *,
        parameters: int,
        seed: int,
    ) -> tuple[DiracCanaries, str | None]:
        """Plant gradient canaries in this method's mechanism: (canaries, the audited client or
        None when the mechanism is the server's). Methods without one refuse."""
        raise PrivacyError(f"{self.method} takes no gradient canaries")

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
        """The federated model; with `canaries` (the white-box audit's own run only), the
        factory's canaries are planted in the private mechanism (`_plant`) and returned in
        `artifacts["canaries"]`. On `--engine flower` the model comes from a local deployment
        (`medpriv.train.federated.on_flower`); the canary run stays in process."""
        if self.federated.engine == "flower" and canaries is None:
            return self._fit_on_flower(
                splits=splits, config=config, privacy=privacy, seed=seed, checkpoint=checkpoint
            )
        start = time.perf_counter()
        unset = frozenset(key for key in RULE_FIELDS if getattr(config, key) is None)
        fed, config = self.federated, config.resolved(self.recipe)
        caveats: list[str] = []
        if self.private:
            if privacy is None:
                raise PrivacyError(f"{self.method} needs privacy settings (a target ε)")
            if privacy.unit_policy != "one-per-unit":
                raise PrivacyError(
                    f"{self.method} accounts with one record per unit; use --unit-policy "
                    "one-per-unit"
                )
            splits, caveats = apply_unit_policy(splits, privacy, seed)
            caveats = [VALIDATION_CAVEAT, *caveats]
        pre, data = prepare(splits, fit_on="val")
        parts = partition(splits.train, fed.partition, seed=seed, min_size=fed.min_client_size)
        check_enough_clients(
            len(parts.clients), min_clients=fed.min_clients, source=f"--partition {fed.partition}"
        )
        x_train, y_train = data.x_train.numpy(), data.y_train.numpy()
        plan = self._plan(
            LocalRecipe.from_train_config(config),
            parts.sizes(),
            privacy=privacy,
            n_units=splits.train.n_units,
            unit=splits.train.unit_name,
            seed=seed,
            units={name: splits.train.unit_ids[rows] for name, rows in parts.clients.items()},
            in_features=x_train.shape[1],
            unset=unset,
        )
        recipe, strategy, accountant = plan.recipe, plan.strategy, plan.accountant
        ledgers = plan.ledgers or {}
        clients = {
            name: LocalClient(
                name,
                x_train[rows],
                y_train[rows],
                policy=plan.policy or ClientPolicy(),
                ledger=ledgers.get(name, PrivacyLedger()),
                report_epsilon=self.epsilon_each_round,
            )
            for name, rows in parts.clients.items()
        }
        planted = None
        if canaries is not None:
            parameters = sum(p.numel() for p in MLP(x_train.shape[1], recipe.hidden).parameters())
            planted = self._plant(canaries, plan, clients, parameters=parameters, seed=seed)
        meta = {
            "method": self.method,
            "seed": seed,
            "features": pre.feature_names_,
            "preprocessor": pre.state_dict(),
            "clients": parts.sizes(),
            "recipe": recipe.to_config(),
            "strategy": strategy.name,
            "server_lr": fed.server_lr,
            "fraction": fed.fraction,
            "min_clients": plan.min_clients,
        }
        rounds_plan = RoundPlan(
            recipe=recipe,
            strategy=strategy,
            rounds=fed.rounds,
            fraction=fed.fraction,
            min_clients=plan.min_clients,
            seed=seed,
            accountant=accountant,
            participation=plan.participation,
            quiet=plan.hidden,
            report_epsilon=self.epsilon_each_round,
            checkpoint=None if checkpoint is None else Path(checkpoint),
            meta=meta,
            ledgers=lambda: {name: ledger.to_json() for name, ledger in ledgers.items()},
        )
        federation = Federation.start(
            _initial(data.x_train.shape[1], recipe.hidden, seed, data.y_val)
        )
        if resume and checkpoint is not None and Path(checkpoint).exists():
            federation, saved = Federation.resumed(rounds_plan)
            for name, text in saved.items():  # the simulated clients' own ledgers
                if name in ledgers:
                    ledgers[name].entries[:] = PrivacyLedger.from_json(text).entries
        drive(
            LocalPool(clients, seed=seed),
            federation,
            rounds_plan,
            validation=(data.x_val.numpy(), data.y_val.numpy()),
            on_round=None
            if on_epoch is None
            else lambda number, _state, record: on_epoch(number, record),
        )
        best, history = federation.best, federation.history
        best_record = best_of(history)
        network = MLP(data.x_train.shape[1], recipe.hidden)
        set_weights(network, best)
        scorer, calibration = finish_scorer(network, data, calibrate=bool(config.calibrate))
        spent = (
            accountant.spent([*caveats, *refusal_caveats(history)])
            if accountant is not None
            else PrivacySpent(unit=splits.train.unit_name, sampling="shuffle")
        )
        params = {
            "hidden": list(recipe.hidden),
            "dropout": recipe.dropout,
            "optimizer": recipe.optimizer,
            "momentum": recipe.momentum,
            "weight_decay": recipe.weight_decay,
            "lr": recipe.lr,
            "batch_size": recipe.batch_size,
            "local_epochs": recipe.epochs,
            "epochs_run": len(history),
            "best_epoch": None if best_record is None else best_record["round"],
            "rounds": fed.rounds,
            "strategy": strategy.name,
            "proximal_mu": recipe.proximal_mu,
            "server_lr": fed.server_lr if strategy.name.endswith("fedadam") else None,
            "fraction": fed.fraction,
            "client_sampling": "poisson" if plan.participation is not None else "fixed size",
            "min_clients": plan.min_clients,
            "engine": fed.engine,
            "partition": fed.partition,
            "clients": parts.sizes(),
            "partition_notes": list(parts.notes),
            "preprocessing": "fitted on the coordinator's validation patients",
            "calibration": calibration,
        }
        if plan.rule is not None:
            params["recipe"] = plan.rule
        if isinstance(accountant, SampleLevelAccountant):
            params["noise_multiplier"] = accountant.sigma
            params["client_epsilon"] = accountant.client_epsilons()
        elif isinstance(accountant, ClientLevelAccountant):
            params["noise_multiplier"] = accountant.sigma
            params["update_clip"] = privacy.max_grad_norm if privacy else None
            params["participation"] = (
                "withheld" if accountant.hidden else "published" if accountant.sampled else "all"
            )
            params["accounted_sample_rate"] = accountant.sample_rate
        if plan.hidden:  # exact byte counts would reveal how many sites took part
            each_way = accountant.expected_bytes(n_bytes(best)) * len(history)
            up = down = each_way
            params["bytes_note"] = (
                "expected values: exact counts would reveal which sites took part in each round"
            )
        else:
            up = int(sum(r["bytes_up"] for r in history))
            down = int(sum(r["bytes_down"] for r in history))
        artifacts: dict[str, Any] = {}
        if planted is not None:
            canaries_planted, audited = planted
            artifacts = {"canaries": canaries_planted}
            if audited is not None:  # one client's mechanism: that client's own ε
                artifacts["canary_epsilon"] = params.get("client_epsilon", {}).get(audited)
        return TrainedModel(
            method=self.method,
            preprocessor=pre,
            scorer=scorer,
            history=history,
            privacy=spent,
            artifacts=artifacts,
            cost=Cost(
                train_seconds=time.perf_counter() - start,
                bytes_communicated=up + down,
                bytes_up=up,
                bytes_down=down,
                epochs=len(history),
            ),
            params=params,
        )


@TRAINERS.register("fedavg-dp")
class FedAvgDPTrainer(FedAvgTrainer):
    """Sample-level DP: DP-SGD inside every client (σ for the target ε), unit = patient."""

    method = "fedavg-dp"
    recipe = FEDAVG_DP_RECIPE
    private = True
    gradient_canaries = True
    mechanism_runs = True

    def _plant(self, canaries, plan, clients, *, parameters, seed):  # type: ignore[override]
        """Canaries join every local step of one client: the smallest, whose sampling rate
        (and so ε) is the largest; the verdict compares with that client's own ε."""
        name = min(clients, key=lambda client: (len(clients[client].x), client))
        recipe = plan.recipe
        clients[name].canaries = canaries(
            parameters=parameters,
            max_grad_norm=float(recipe.max_grad_norm),
            noise_multiplier=float(recipe.noise_multiplier),
            sample_rate=recipe.sampling(len(clients[name].x))[0],
            noise=NoiseSource.fresh(),
            seed=seed,
        )
        return clients[name].canaries, name

    def _plan(self, recipe, sizes, *, privacy, n_units, unit, seed, units, in_features, unset):  # type: ignore[override]
        fed = self.federated
        recipe, rule = with_client_rule(
            recipe,
            sizes,
            in_features=in_features,
            privacy=privacy,
            rounds=fed.rounds,
            per_round=clients_per_round(
                len(sizes), fraction=fed.fraction, min_clients=fed.min_clients
            ),
            n_units=n_units,
            unset=unset,
        )
        reproducible = bool(privacy.reproducible_noise or self.attacker_simulation)
        ledgers = {name: PrivacyLedger() for name in sizes}
        accountant = SampleLevelAccountant(
            sizes=sizes,
            recipe=recipe,
            rounds=self.federated.rounds,
            privacy=privacy,
            n_units=n_units,
            unit=unit,
            ledgers=ledgers,
            unit_sites=unit_site_groups(units),
            noise_kind="reproducible" if reproducible else "csprng",
        )
        return _Plan(
            accountant.private_recipe(),
            make_strategy("fedavg"),
            self.federated.min_clients,
            accountant=accountant,
            policy=accountant.client_policy(seed=seed, reproducible=reproducible),
            ledgers=ledgers,
            rule=rule,
        )


@TRAINERS.register("fedavg-cdp")
class FedAvgCDPTrainer(FedAvgTrainer):
    """Client-level DP (DP-FedAvg): clipped updates, Gaussian noise at the server from a fresh
    CSPRNG source, sites sampled by Poisson with rate `federated.fraction` from the same source;
    unit = site. Each round's participants are withheld from the history (so ε may use
    q = fraction) unless `publish_participants`; no per-site loss is ever published."""

    method = "fedavg-cdp"
    recipe = FEDAVG_CDP_RECIPE
    private = True
    gradient_canaries = True
    mechanism_runs = True

    def _plant(self, canaries, plan, clients, *, parameters, seed):  # type: ignore[override]
        """Canary clients: each a Dirac update of norm 10·C on its own coordinate, taking part
        in a round with the accounted rate q, clipped and noised with the real clients."""
        accountant = plan.accountant
        strategy = plan.strategy
        strategy.canaries = canaries(
            parameters=parameters,
            max_grad_norm=float(strategy.clip),
            noise_multiplier=float(strategy.noise_multiplier),
            sample_rate=float(accountant.sample_rate),
            noise=NoiseSource.fresh(),
            seed=seed,
        )
        return strategy.canaries, None

    def _plan(self, recipe, sizes, *, privacy, n_units, unit, seed, units, **_):  # type: ignore[override]
        fed = self.federated
        if fed.strategy == "fedprox":  # clients train without noise here: the proximal term holds
            recipe = dataclasses.replace(recipe, proximal_mu=fed.proximal_mu)
        noise = NoiseSource.for_run(
            reproducible=bool(privacy.reproducible_noise or self.attacker_simulation), seed=seed
        )
        accountant = ClientLevelAccountant(
            n_clients=len(sizes),
            fraction=self.federated.fraction,
            rounds=self.federated.rounds,
            privacy=privacy,
            n_units=n_units,
            noise=noise,
            publish_participants=self.publish_participants,
            simulation=self.attacker_simulation,
            data_unit=unit,
        )
        return _Plan(
            recipe,
            accountant.strategy(make_strategy(fed.strategy, server_lr=fed.server_lr)),
            0,
            accountant.participation(),
            accountant=accountant,
        )


def _initial(in_features: int, hidden: tuple[int, ...], seed: int, y_val: torch.Tensor) -> Weights:
    """Round-0 weights: seeded, output bias at the validation prior."""
    rate = float(y_val.float().mean())
    return initial_weights(in_features, hidden, seed=seed, positive_rate=rate)
