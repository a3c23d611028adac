"""Trainers `split` (vanilla: the client sends activations and labels) and `split-ushaped` (the
client keeps the output layer and the labels), over the shared training loop.

The server runs in this process unless `split_learning.server` names a `medpriv sl server`;
either way every batch goes through the same encoded messages. After training the best epoch's
weights (both sides) are composed into one local MLP for evaluation and the attacks.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np

from medpriv.config import SPLIT_RECIPE, PrivacyConfig, SplitLearningConfig, TrainConfig
from medpriv.data.partition import partition
from medpriv.data.splits import Splits
from medpriv.errors import ConfigError, PrivacyError
from medpriv.privacy.plan import VALIDATION_CAVEAT, DPPlan, apply_unit_policy, plan_privacy
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.sampler import PoissonBatches
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import TRAINERS, Cost, TrainedModel, Trainer
from medpriv.train.checkpoint import saved_mechanism
from medpriv.train.engine.mlp import finish_scorer, loop_params, new_network, prepare, run_meta
from medpriv.train.loop import EpochCallback, fit_network, shuffled_batches
from medpriv.train.split.client import (
    RemotePart,
    SplitNetwork,
    compose,
    cut_mlp,
    part_widths,
    split_step,
)
from medpriv.train.split.clients import Cursor, SplitFedClients, client_batches
from medpriv.train.split.private import make_private_split_step
from medpriv.train.split.server import make_optimizer
from medpriv.train.split.transport import GrpcTransport, InProcessTransport, Transport

TOKEN_ENV = "MEDPRIV_SL_TOKEN"
MIN_CLIENT_ROWS = 20  # hospitals below this are merged (sites) or dropped, with a note
OBSERVED_ROWS = 4096  # gradient rows kept for the label-leakage attack (about the last epoch)


def connect(settings: SplitLearningConfig) -> Transport:
    """The transport to the configured server (a fresh in-process server when none is named)."""
    if settings.server is None:
        return InProcessTransport()
    ca = Path(settings.ca_certificate) if settings.ca_certificate else None
    return GrpcTransport(settings.server, ca_certificate=ca)


@TRAINERS.register("split")
class SplitTrainer(Trainer):
    """Vanilla split learning: one round trip per batch (activations and labels up, the
    gradient at the cut down)."""

    method = "split"
    recipe = SPLIT_RECIPE
    ushaped = False
    parallel = False  # SplitFed
    default_clients: str | None = None

    def __init__(self, split_learning: SplitLearningConfig | None = None) -> None:
        self.settings = split_learning or SplitLearningConfig()
        # With DP on the client's layers the run takes part in the ε sweep.
        self.private = self.settings.client_dp
        self._nominal_epsilon: float | None = None

    def _clients(self, splits: Splits, seed: int) -> tuple[dict[str, np.ndarray] | None, list[str]]:
        """The hospitals' training rows (None: one client holding them all), and notes."""
        spec = self.settings.clients or self.default_clients
        if spec is None:
            return None, []
        found = partition(splits.train, spec, seed=seed, min_size=MIN_CLIENT_ROWS)
        if self.parallel and len(found.clients) < 2:
            raise ConfigError(f"splitfed needs at least 2 clients; {spec} gives one")
        return found.clients, list(found.notes)

    def _check_client_dp(
        self, splits: Splits, privacy: PrivacyConfig | None, seed: int
    ) -> tuple[Splits, list[str]]:
        """DP-SGD on the client's layers: one client, no NoPeek, a target ε (or σ)."""
        if privacy is None or (privacy.target_epsilon is None and privacy.noise_multiplier is None):
            raise PrivacyError(
                "--client-dp needs a target ε (--target-epsilon) or --noise-multiplier"
            )
        if self.parallel or self.settings.clients is not None:
            raise ConfigError("--client-dp is for one client (not several hospitals or splitfed)")
        if self.settings.nopeek > 0:
            raise ConfigError(
                "--client-dp cannot be combined with --nopeek (its loss is not clipped)"
            )
        if privacy.unit_policy != "one-per-unit":
            raise PrivacyError(
                "--client-dp accounts with one record per unit (--unit-policy one-per-unit)"
            )
        splits, notes = apply_unit_policy(splits, privacy, seed)
        return splits, [VALIDATION_CAVEAT, *notes]

    def _composed_privacy(
        self, splits: Splits, dp_plan: DPPlan | None, epochs: int, caveats: list[str]
    ) -> tuple[PrivacySpent, dict | None]:
        """(the composed model's privacy — never DP —, what --client-dp did, or None).

        No ε is claimed for the client's layers either: the per-sample gradient at the cut comes
        from server layers trained without DP on raw activations (and, vanilla, raw labels), so
        removing one patient changes every other record's clipped gradient and the clipping norm
        does not bound the sensitivity of an update. The clipping and noise stay as a defense.
        """
        unit = splits.train.unit_name
        if dp_plan is None:
            return PrivacySpent(unit=unit, sampling="shuffle"), None
        steps = epochs * dp_plan.steps_per_epoch
        sent = "activations and labels" if not self.ushaped else "activations"
        note = (
            "--client-dp clips and noises the client's layers' per-sample gradients, but no ε is "
            "claimed: the server's layers train without DP on the raw "
            f"{sent}, so one {unit} changes every other record's gradient at the cut and the "
            "clipping norm does not bound its influence"
            + ("; labels leave the hospital (vanilla split learning)" if not self.ushaped else "")
        )
        client = {
            "epsilon": None,
            "defense": "per-sample clipping and Gaussian noise on the client's layers (no ε)",
            "noise_multiplier": dp_plan.noise_multiplier,
            "noise_calibrated_for_epsilon": self._nominal_epsilon,
            "clipping_norm": dp_plan.max_grad_norm,
            "sample_rate": dp_plan.sample_rate,
            "steps": steps,
            "why_no_epsilon": note,
            "caveats": list(caveats),
        }
        return PrivacySpent(unit=unit, sampling="poisson", caveats=(note,)), client

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
        caveats: list[str] = []
        if self.settings.client_dp:
            splits, caveats = self._check_client_dp(splits, privacy, seed)
        pre, data = prepare(splits, fit_on="val" if self.settings.client_dp else "train")
        full, _ = new_network(config, data.x_train.shape[1], seed)
        bottom, server_part, head = cut_mlp(full, self.settings.cut, ushaped=self.ushaped)
        spec = {
            "optimizer": config.optimizer,
            "lr": config.lr,
            "momentum": config.momentum,
            "weight_decay": config.weight_decay,
        }
        groups, notes = self._clients(splits, seed)
        reproducible = privacy is not None and privacy.reproducible_noise
        noise = NoiseSource.for_run(reproducible=reproducible, seed=seed)
        sizes = {name: len(rows) for name, rows in (groups or {"client": data.x_train}).items()}
        remote = RemotePart(connect(self.settings), token=os.environ.get(TOKEN_ENV, ""))
        try:
            remote.open(
                "ushaped" if self.ushaped else "vanilla",
                part_widths(server_part),
                [p.detach().numpy().copy() for p in server_part.parameters()],
                spec,
            )
            network = SplitNetwork(
                bottom,
                remote,
                head,
                noise=self.settings.noise,
                gradient_noise=self.settings.gradient_noise if self.ushaped else 0.0,
                nopeek=self.settings.nopeek,
                keep_rows=min(len(data.x_train), OBSERVED_ROWS) if self.ushaped else 0,
                noise_source=noise,
            )
            optimizer = make_optimizer(list(network.local_parameters()), spec)
            meta = {
                **run_meta(self.method, pre, config, seed, data),
                "cut": self.settings.cut,
                "noise": self.settings.noise,
                "nopeek": self.settings.nopeek,
                "clients": sizes,
            }
            cursor = Cursor()
            batches, step, end_epoch = shuffled_batches(config.batch_size), split_step, None
            if groups is not None:
                batches = client_batches(
                    list(groups.values()),
                    config.batch_size,
                    interleave=self.parallel,
                    cursor=cursor,
                )
            if self.parallel:
                assert groups is not None
                clients = SplitFedClients(network, list(sizes.values()), spec, cursor)
                step, end_epoch = clients.step, clients.average
            dp_plan, annotate = None, None
            if self.settings.client_dp:
                assert privacy is not None
                dp_plan = plan_privacy(
                    splits.train,
                    config=config,
                    privacy=privacy,
                    saved=saved_mechanism(checkpoint, resume),
                )
                self._nominal_epsilon = privacy.target_epsilon
                batches = PoissonBatches(
                    sample_rate=dp_plan.sample_rate,
                    steps_per_epoch=dp_plan.steps_per_epoch,
                    noise=noise,
                )
                step = make_private_split_step(
                    max_grad_norm=dp_plan.max_grad_norm,
                    noise_multiplier=dp_plan.noise_multiplier,
                    expected_batch_size=dp_plan.expected_batch_size,
                    noise=noise,
                )
                meta.update(dp_plan.meta())

            state = fit_network(
                network,
                optimizer,
                data,
                epochs=config.epochs,
                patience=config.patience,
                seed=seed,
                batches=batches,
                step=step,
                checkpoint=checkpoint,
                resume=resume,
                meta=meta,
                on_epoch=on_epoch,
                end_epoch=end_epoch,
                annotate=annotate,
                record_train_metrics=dp_plan is None,
            )
            composed = compose(network, data.x_train.shape[1], tuple(config.hidden))
            remote.close()
        finally:
            remote.transport.close()
        scorer, calibration = finish_scorer(composed, data, calibrate=bool(config.calibrate))
        traffic = remote.traffic.to_dict()
        return TrainedModel(
            method=self.method,
            preprocessor=pre,
            scorer=scorer,
            history=state.history,
            privacy=self._composed_privacy(splits, dp_plan, state.epoch, caveats)[0],
            cost=Cost(
                train_seconds=time.perf_counter() - start,
                bytes_communicated=traffic["bytes_sent"] + traffic["bytes_received"],
                bytes_up=traffic["bytes_sent"],
                bytes_down=traffic["bytes_received"],
                round_trips=traffic["round_trips"],
                epochs=len(state.history),
            ),
            artifacts={
                # What an honest-but-curious server could rebuild or saw: the client's layers
                # (queried on its own patients by the reconstruction attack) and, U-shaped, the
                # gradient rows sent back to it.
                "sl_client_layers": copy.deepcopy(network.bottom).eval(),
                **(
                    {"sl_gradients": observed}
                    if (observed := network.observed_gradients()) is not None
                    else {}
                ),
            },
            params={
                **loop_params(config, state),
                "calibration": calibration,
                "cut": self.settings.cut,
                "mode": "ushaped" if self.ushaped else "vanilla",
                "transport": "grpc" if self.settings.server else "in-process",
                "activation_noise": self.settings.noise,
                "nopeek": self.settings.nopeek,
                "gradient_noise": self.settings.gradient_noise if self.ushaped else 0.0,
                "traffic": traffic,
                "client_layers_privacy": self._composed_privacy(
                    splits, dp_plan, state.epoch, caveats
                )[1],
                "clients": sizes,
                "client_schedule": (
                    "one client"
                    if groups is None
                    else "in parallel, averaged each epoch"
                    if self.parallel
                    else "in turn"
                ),
                "notes": notes,
            },
        )


@TRAINERS.register("splitfed")
class SplitFedTrainer(SplitTrainer):
    """SplitFed: the hospitals train in parallel against one server (vanilla: activations and
    labels up); their client layers are averaged by record count after every epoch."""

    method = "splitfed"
    parallel = True
    default_clients = "site"


@TRAINERS.register("split-ushaped")
class USplitTrainer(SplitTrainer):
    """U-shaped split learning: the client keeps the head and the labels (two round trips per
    batch: activations up, the server's output down; its gradient up, the cut's gradient down)."""

    method = "split-ushaped"
    ushaped = True
