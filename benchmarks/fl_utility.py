"""Federated utility on the synthetic cohort partitioned by site (care unit).

Per seed: the centralized non-private baseline, FedAvg (one client per site, 20 rounds) and,
beside them, fedavg-dp at ε = 3 (DP-SGD inside every client) and fedavg-cdp at ε = 3
(client-level DP over only five sites: expect it to fail — client-level DP needs many
clients). Test AUROC on the same split. Target: FedAvg within 0.02 of the baseline. Prints a
table and, last, one JSON line.

    .venv/bin/python benchmarks/fl_utility.py --seeds 3
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from medpriv.config import DataConfig, FederatedConfig, PrivacyConfig, TrainConfig
from medpriv.data.sources import load_dataset
from medpriv.data.splits import split_by_unit
from medpriv.metrics import auroc
from medpriv.train.base import get_trainer

METHODS = ("baseline", "fedavg", "fedavg-dp", "fedavg-cdp")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=3.0)
    args = parser.parse_args(argv)
    dataset = load_dataset(DataConfig(spec="synthetic"))
    privacy = PrivacyConfig(target_epsilon=args.epsilon)
    scores: dict[str, list[float]] = {m: [] for m in METHODS}
    epsilons: dict[str, list[float]] = {m: [] for m in METHODS}
    for seed in range(args.seeds):
        splits = split_by_unit(dataset, seed=seed)
        for method in METHODS:
            trainer = get_trainer(method, federated=FederatedConfig(partition="site"))
            model = trainer.fit(splits=splits, config=TrainConfig(), privacy=privacy, seed=seed)
            scores[method].append(auroc(splits.test.labels, model.margin(splits.test)))
            epsilons[method].append(model.privacy.epsilon or 0.0)
        print(f"seed {seed}: " + ", ".join(f"{m} {scores[m][-1]:.4f}" for m in METHODS))
    mean = {m: float(np.mean(v)) for m, v in scores.items()}
    print(f"{'method':<12}{'test AUROC':>12}{'ε':>8}")
    for method in METHODS:
        eps = np.mean(epsilons[method])
        print(f"{method:<12}{mean[method]:>12.4f}{(f'{eps:.2f}' if eps else '—'):>8}")
    gap = mean["baseline"] - mean["fedavg"]
    print(f"FedAvg gap to the centralized baseline: {gap:+.4f} (target ≤ 0.02)")
    result = {
        "seeds": args.seeds,
        "baseline_auroc": round(mean["baseline"], 4),
        "fedavg_auroc": round(mean["fedavg"], 4),
        "fedavg_gap": round(gap, 4),
        "fedavg_dp_auroc": round(mean["fedavg-dp"], 4),
        "fedavg_dp_epsilon": round(float(np.mean(epsilons["fedavg-dp"])), 3),
        "fedavg_cdp_auroc": round(mean["fedavg-cdp"], 4),
        "fedavg_cdp_epsilon": round(float(np.mean(epsilons["fedavg-cdp"])), 3),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
