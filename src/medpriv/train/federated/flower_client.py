"""The Flower ClientApp: what runs on each hospital's SuperNode.

It answers three messages: QUERY (which site this node is, how many training records it
holds), TRAIN (one round of local training with the recipe and preprocessing the coordinator
sent, on the same client code as the in-process engine) and EVALUATE (the global model scored
on this node's held-out patients, returned as a histogram by label: aggregates only; or, with
`task` = "score-reconstruction", the coordinator's reconstruction of this node's update scored
against the rows it trained on, returned as a few aggregate accuracies). In a
SecAgg+ round the TRAIN stages pass through Flower's `secaggplus_mod`, which masks the reply
before it leaves the node.

A DP recipe (fedavg-dp) is checked against this node's own privacy policy, set in its node
config (`medpriv fl supernode --max-epsilon E --min-noise-multiplier S --max-grad-norm C`),
never by a message: a node without a budget, or a recipe below its minimum σ, above its maximum
clipping norm, or whose announced plan would spend more than its budget by its own accountant,
is refused with the reason (a `refusal` reply; in a SecAgg+ round an error reply), and the node
goes on serving. The node keeps its ledger in the file named by `privacy-ledger` (across runs)
or, without one, in the run's context; it draws its noise and Poisson masks from its own fresh
CSPRNG source (replayable only when its own node config says `reproducible-noise`), and reports
the ε its own accountant spent in this run.

Flower starts a fresh process for every message, so this module imports only Flower and NumPy
at the top; torch and the data stack load only where a message needs them (the key-exchange
stages of SecAgg+ never do).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from medpriv.errors import ProtocolError
from medpriv.train.federated.secagg import secagg_mod
from medpriv.untrusted import printable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from medpriv.config import DataConfig, SplitConfig
    from medpriv.train.federated.client import ClientUpdate
    from medpriv.train.federated.policy import PrivacyLedger

client_app = ClientApp()


def _node_settings(context: Context) -> tuple[DataConfig, str | None, int | None]:
    """The node's data (its `--node-config`): data spec, CSV options, site, split seed."""
    from medpriv.config import DataConfig

    cfg = context.node_config
    if "data" not in cfg:
        raise ProtocolError("this SuperNode has no 'data' in its --node-config")
    data = DataConfig(
        spec=str(cfg["data"]),
        target=_opt_str(cfg.get("target")),
        positive=_opt_str(cfg.get("positive")),
        threshold=float(cfg["threshold"]) if "threshold" in cfg else None,
        unit_column=_opt_str(cfg.get("unit-column")),
        site_column=_opt_str(cfg.get("site-column")),
    )
    split_seed = int(cfg["split-seed"]) if "split-seed" in cfg else None
    return data, _opt_str(cfg.get("site")), split_seed


def _site_name(context: Context) -> str:
    site = _opt_str(context.node_config.get("site"))
    return site or f"node{context.node_id}"


def _training_rows(
    context: Context, config: ConfigRecord | dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """This node's training rows with the coordinator's preprocessing (one record per unit for
    a private method's clients, as they train)."""
    from medpriv.train.federated.job import client_arrays

    data, site, split_seed = _node_settings(context)
    return client_arrays(
        data,
        site=site,
        split_seed=split_seed,
        split=_split_from(config),
        preprocessor_state=json.loads(str(config["preprocessor"])),
        one_per_unit=bool(config.get("private", False)),
    )


def _optional_float(value: Any) -> float | None:
    """A positive number from a message, else None (a malformed one is a ProtocolError)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProtocolError(f"expected a number, got {printable(str(value))}") from None
    return number if number > 0 else None


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _split_from(config: ConfigRecord | dict[str, Any]) -> SplitConfig:
    from medpriv.config import SplitConfig

    return SplitConfig(
        val_fraction=float(config["val-fraction"]), test_fraction=float(config["test-fraction"])
    )


@client_app.query()
def describe(msg: Message, context: Context) -> Message:
    """Which site this node is and how many training records it holds (sizes are public to the
    coordinator, as in every FedAvg deployment: they weight the average)."""
    x, _ = _training_rows(context, msg.content["config"])
    name = _site_name(context)
    return Message(
        content=RecordDict(
            {
                "site": ConfigRecord({"name": name}),
                "metrics": MetricRecord({"num-examples": len(x), "features": int(x.shape[1])}),
            }
        ),
        reply_to=msg,
    )


@client_app.train(mods=[secagg_mod])
def train(msg: Message, context: Context) -> Message:
    """One round on this node's rows with the recipe and preprocessing sent by the server (and,
    for a plain round, its seed), or a refusal when this node's policy forbids the recipe.
    In a SecAgg+ round the instructions arrive in Flower's FitIns shape (through `secaggplus_mod`,
    which masks the reply before it leaves the node); a refusal there is an error reply."""
    from medpriv.train.federated.policy import ClientRefusal

    if "fitins.config" in msg.content.config_records:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        config = dict(fitins.config)
        update = _local_update(config, parameters_to_ndarrays(fitins.parameters), context)
        limit = float(config["secagg-clip"])
        if max(float(np.abs(w).max()) for w in update.weights) > limit:
            raise ProtocolError(f"local weights exceed the SecAgg+ range ±{limit:g}")
        fitres = FitRes(
            status=Status(Code.OK, "ok"),
            # float64: the mod quantizes in the arrays' precision, and float32 cannot hold 2³⁰ steps
            parameters=ndarrays_to_parameters([w.astype(np.float64) for w in update.weights]),
            num_examples=update.n_examples,
            metrics=_update_metrics(update),
        )
        return Message(content=compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)
    config = dict(msg.content["config"])
    try:
        update = _local_update(config, msg.content["arrays"].to_numpy_ndarrays(), context)
    except ClientRefusal as refusal:
        print(f"[medpriv] refused round {printable(config.get('round'))}: {refusal}", flush=True)
        return Message(
            content=RecordDict({"refusal": ConfigRecord({"reason": str(refusal)})}),
            reply_to=msg,
        )
    return Message(
        content=RecordDict(
            {
                "arrays": ArrayRecord(update.weights),
                "metrics": MetricRecord(_update_metrics(update)),
            }
        ),
        reply_to=msg,
    )


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global model scored on this node's held-out patients, and attacked with its own
    patients (training against held-out, the loss-threshold attack); the reply holds two
    histograms at a fixed binning (`federated.evaluation`) — the log-odds by label and the
    true label's log-odds by membership — aggregates only, never a per-patient score or row."""
    import torch

    from medpriv.attacks.fl_received import SCORE_TASK
    from medpriv.models import MLP
    from medpriv.train.federated.evaluation import ScoreHistogram
    from medpriv.train.federated.job import client_held_out_arrays
    from medpriv.train.federated.weights import set_weights

    config = dict(msg.content["config"])
    if str(config.get("task", "")) == SCORE_TASK:
        return _score_reconstruction(msg, context, config)
    data, site, split_seed = _node_settings(context)
    eval_data = _opt_str(context.node_config.get("eval-data"))
    x, y = client_held_out_arrays(
        data,
        site=site,
        split_seed=split_seed,
        split=_split_from(config),
        preprocessor_state=json.loads(str(config["preprocessor"])),
        held_out=None if eval_data is None else replace(data, spec=eval_data),
    )
    x_train, y_train = _training_rows(context, config)
    hidden = tuple(int(h) for h in json.loads(str(config["hidden"])))
    network = MLP(x.shape[1], hidden)
    set_weights(network, msg.content["arrays"].to_numpy_ndarrays())
    network.eval()

    def log_odds(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = network(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
        return (logits[:, 1] - logits[:, 0]).numpy()

    held_out = log_odds(x)
    # the loss-threshold attack: each patient's log-odds of its own label, members vs not
    confidence = np.concatenate(
        [np.where(y_train == 1, 1, -1) * log_odds(x_train), np.where(y == 1, 1, -1) * held_out]
    )
    membership = np.concatenate([np.ones(len(y_train), int), np.zeros(len(y), int)])
    return Message(
        content=RecordDict(
            {
                "histogram": MetricRecord(ScoreHistogram.of(held_out, y).to_metrics()),
                "membership": MetricRecord(ScoreHistogram.of(confidence, membership).to_metrics()),
            }
        ),
        reply_to=msg,
    )


def _score_reconstruction(msg: Message, context: Context, config: dict[str, Any]) -> Message:
    """The coordinator's reconstruction of this node's round update, scored against the rows
    it trained on (`medpriv.attacks.fl_received`): aggregates only in the reply."""
    from medpriv.attacks.fl_received import score_at_site
    from medpriv.attacks.inversion import FeatureLayout, FeaturePrior
    from medpriv.data.preprocess import Preprocessor
    from medpriv.data.sources import load_dataset

    x_true, y_true = _training_rows(context, config)
    data, _, _ = _node_settings(context)
    layout = FeatureLayout.from_preprocessor(
        Preprocessor.from_state(load_dataset(data).schema, json.loads(str(config["preprocessor"])))
    )
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    if len(arrays) != 4:
        raise ProtocolError(f"a reconstruction message holds 4 arrays, got {len(arrays)}")
    x_hat, labels, mean, std = arrays
    width = (layout.n_features,)
    if mean.shape != width or std.shape != width or not (np.isfinite(std).all() and std.min() > 0):
        raise ProtocolError(f"the prior must be {width[0]} finite means and positive stds")
    scores = score_at_site(
        x_hat,
        labels,
        x_true=x_true,
        y_true=y_true,
        layout=layout,
        prior=FeaturePrior(mean=mean.astype(np.float64), std=std.astype(np.float64)),
    )
    return Message(content=RecordDict({"inversion": MetricRecord(scores)}), reply_to=msg)


def _local_update(
    config: dict[str, Any], weights: list[np.ndarray], context: Context
) -> ClientUpdate:
    """A plain round with the server's seed, or a DP round under this node's own policy,
    ledger and noise (`ClientRefusal` when the policy forbids it)."""
    from medpriv.train.federated.client import LocalRecipe, private_round, train_client
    from medpriv.train.federated.job import client_arrays
    from medpriv.train.federated.policy import ClientPolicy

    data, site, split_seed = _node_settings(context)
    recipe = LocalRecipe.from_config(config)
    policy = ClientPolicy.from_node_config(context.node_config) if recipe.private else None
    x, y = client_arrays(
        data,
        site=site,
        split_seed=split_seed,
        split=_split_from(config),
        preprocessor_state=json.loads(str(config["preprocessor"])),
        one_per_unit=recipe.private,
    )
    if policy is None:
        return train_client(weights, x, y, recipe=recipe, seed=int(config["seed"]))
    round_number = int(config["round"])
    planned = int(config.get("planned-rounds", round_number))
    with _ledger(context) as ledger:  # charged before training; kept if training fails
        return private_round(
            weights,
            x,
            y,
            recipe=recipe,
            policy=policy,
            ledger=ledger,
            client=_site_name(context),
            run=str(context.run_id),
            round_number=round_number,
            rounds_left=max(1, planned - round_number + 1),
            federation_delta=_optional_float(config.get("federation-delta")),
        )


@contextlib.contextmanager
def _ledger(context: Context) -> Iterator[PrivacyLedger]:
    """This node's ledger: the file its node config names (across runs), else the run's
    context (this run only)."""
    from medpriv.train.federated.policy import LEDGER_KEY, PrivacyLedger, ledger_file

    path = _opt_str(context.node_config.get(LEDGER_KEY))
    if path is not None:
        with ledger_file(path) as ledger:
            yield ledger
        return
    saved = context.state.config_records.get(LEDGER_KEY)
    ledger = PrivacyLedger() if saved is None else PrivacyLedger.from_json(str(saved["entries"]))
    try:
        yield ledger
    finally:
        context.state[LEDGER_KEY] = ConfigRecord({"entries": ledger.to_json()})


def _update_metrics(update: ClientUpdate) -> dict[str, int | float]:
    metrics: dict[str, int | float] = {
        "num-examples": update.n_examples,
        "steps": update.steps,
        "train-loss": -1.0 if update.train_loss is None else update.train_loss,
        "sample-rate": -1.0 if update.sample_rate is None else update.sample_rate,
    }
    if update.epsilon is not None:  # a DP client's own report
        metrics["epsilon"] = float(update.epsilon)
        metrics["delta"] = float(update.delta or 0.0)
        metrics["reproducible-noise"] = 1.0 if update.noise == "reproducible" else 0.0
    return metrics
