"""Wall time of the in-process federated engine at scale: 100 clients x 20 rounds.

On the default synthetic cohort, the training split dealt by patient into 100 clients
(iid:100), FedAvg with the federated recipe (1 local epoch, batch 64, SGD 0.05 + momentum),
every client every round; beside it, the centralized non-private MLP trained for the same 20
passes over the same rows with the same recipe (the cost FL adds is the difference). Prints a
summary and, last, one JSON line with `clients`, `rounds`, `seconds`, `centralized_s`.

    .venv/bin/python benchmarks/fl_scale.py
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from medpriv.config import DataConfig, FederatedConfig, TrainConfig
from medpriv.data.sources import load_dataset
from medpriv.data.splits import split_by_unit
from medpriv.metrics import auroc
from medpriv.train.base import get_trainer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    splits = split_by_unit(load_dataset(DataConfig(spec="synthetic")), seed=args.seed)
    federated = FederatedConfig(
        partition=f"iid:{args.clients}", rounds=args.rounds, min_client_size=1
    )
    config = TrainConfig()
    start = time.perf_counter()
    model = get_trainer("fedavg", federated=federated).fit(
        splits=splits, config=config, seed=args.seed
    )
    seconds = time.perf_counter() - start
    central_config = TrainConfig(
        epochs=args.rounds, batch_size=64, lr=0.05, optimizer="sgd", dropout=0.0, patience=10_000
    )
    start = time.perf_counter()
    central = get_trainer("baseline").fit(splits=splits, config=central_config, seed=args.seed)
    centralized = time.perf_counter() - start
    fl_auroc = auroc(splits.test.labels, model.margin(splits.test))
    central_auroc = auroc(splits.test.labels, central.margin(splits.test))
    print(
        f"{len(model.params['clients'])} clients x {args.rounds} rounds on "
        f"{len(splits.train):,} training rows, {torch.get_num_threads()} threads: "
        f"{seconds:.1f} s (test AUROC {fl_auroc:.3f}); centralized, same passes: "
        f"{centralized:.1f} s (test AUROC {central_auroc:.3f}); "
        f"{model.cost.bytes_communicated / 1e6:.0f} MB communicated"
    )
    result = {
        "clients": len(model.params["clients"]),
        "rounds": args.rounds,
        "seconds": round(seconds, 3),
        "centralized_s": round(centralized, 3),
        "fl_test_auroc": round(fl_auroc, 4),
        "centralized_test_auroc": round(central_auroc, 4),
        "bytes_communicated": model.cost.bytes_communicated,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
