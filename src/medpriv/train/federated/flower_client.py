"""The Flower ClientApp: what runs on each hospital's SuperNode.

It answers two messages: QUERY (which site this node is, how many training records it holds)
and TRAIN (one round of local training with the recipe, seed and preprocessing the coordinator
sent, on the same `train_client` as the in-process engine). In a SecAgg+ round the TRAIN stages
pass through Flower's `secaggplus_mod`, which masks the reply before it leaves the node.

Flower starts a fresh process for every message, so this module imports only Flower and NumPy
at the top; torch and the data stack load only where a message needs them (the key-exchange
stages of SecAgg+ never do).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from medpriv.errors import ProtocolError
from medpriv.train.federated.secagg import secagg_mod

if TYPE_CHECKING:
    from medpriv.config import DataConfig, SplitConfig
    from medpriv.train.federated.client import ClientUpdate

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
    from medpriv.train.federated.job import client_arrays

    data, site, split_seed = _node_settings(context)
    config = msg.content["config"]
    state = json.loads(str(config["preprocessor"]))
    x, _ = client_arrays(
        data,
        site=site,
        split_seed=split_seed,
        split=_split_from(config),
        preprocessor_state=state,
        one_per_unit=bool(config.get("private", False)),
    )
    name = site or f"node{context.node_id}"
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
    """One round on this node's rows with the recipe, seed and preprocessing sent by the server.
    In a SecAgg+ round the instructions arrive in Flower's FitIns shape (through `secaggplus_mod`,
    which masks the reply before it leaves the node)."""
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
    update = _local_update(config, msg.content["arrays"].to_numpy_ndarrays(), context)
    return Message(
        content=RecordDict(
            {
                "arrays": ArrayRecord(update.weights),
                "metrics": MetricRecord(_update_metrics(update)),
            }
        ),
        reply_to=msg,
    )


def _local_update(
    config: dict[str, Any], weights: list[np.ndarray], context: Context
) -> ClientUpdate:
    from medpriv.train.federated.client import LocalRecipe, train_client
    from medpriv.train.federated.job import client_arrays

    data, site, split_seed = _node_settings(context)
    recipe = LocalRecipe.from_config(config)
    x, y = client_arrays(
        data,
        site=site,
        split_seed=split_seed,
        split=_split_from(config),
        preprocessor_state=json.loads(str(config["preprocessor"])),
        one_per_unit=recipe.private,
    )
    return train_client(weights, x, y, recipe=recipe, seed=int(config["seed"]))


def _update_metrics(update: ClientUpdate) -> dict[str, int | float]:
    return {
        "num-examples": update.n_examples,
        "steps": update.steps,
        "train-loss": -1.0 if update.train_loss is None else update.train_loss,
        "sample-rate": -1.0 if update.sample_rate is None else update.sample_rate,
    }
