"""How dp-sgd's recipe constants are compared — on validation patients only, never on a test split.

Every cohort is split exactly as `medpriv run` splits it (same seeds); its TEST patients are
dropped unseen. The run's VALIDATION patients become this comparison's evaluation set, and a new
validation part (for preprocessing, calibration and the kept iterate) is carved from the
training patients. The cohorts are draws of the public synthetic generator other than the one
`benchmarks/dp_utility.py` reports on (`--synthetic-seed`, default 1), at about 1,500 and 6,600
patients, and the insurance table (`../shared/data`, when present; its own validation
patients). Each candidate is a set of overrides of the rule's constants
(`medpriv.train.dp_recipe`); printed per cohort and ε: validation AUROC of each candidate, mean
and seeds' sd, and its paired gap to the non-private baseline (with its standard error over
seeds) and to logreg, measured the same way. The noise is fresh in every fit: a repeat differs.

`--candidates` picks from `CANDIDATES` (default all). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medpriv.config import DataConfig, PrivacyConfig, TrainConfig
from medpriv.data.sources import DEFAULT_SYNTHETIC_STAYS, load_dataset
from medpriv.data.splits import Splits, split_by_unit, split_train_val
from medpriv.metrics import auroc
from medpriv.train import dp_recipe
from medpriv.train.base import TRAINERS, trainer_names

# name → overrides of `medpriv.train.dp_recipe`'s module constants
CANDIDATES: dict[str, dict] = {
    "rule": {},
    "steps10": {"STEPS": 10},
    "steps20": {"STEPS": 20},
    "steps50": {"STEPS": 50},
    "lr0.25": {"LEARNING_RATE": 0.25},
    "lr1": {"LEARNING_RATE": 1.0},
    "ratio0.25": {"MAX_NOISE_RATIO": 0.25},
    "ratio1": {"MAX_NOISE_RATIO": 1.0},
    "never_project": {"PROJECT_ABOVE": float("inf")},
    "project_above0.1": {"PROJECT_ABOVE": 0.1},
    "projected_full_ladder": {"PROJECTED_LADDER": dp_recipe.LADDER},
    "projected_mlp16": {"PROJECTED_LADDER": ((16,), ())},
    "logistic_only": {"LADDER": ((),)},
    "at_most_mlp64": {"LADDER": ((64,), (32,), ())},
}
COHORTS = {"synthetic_1500": 2300, "synthetic_6600": DEFAULT_SYNTHETIC_STAYS, "insurance": 0}
INSURANCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "insurance" / "insurance.csv"


@contextmanager
def constants(overrides: dict):
    saved = {k: getattr(dp_recipe, k) for k in overrides}
    try:
        for k, v in overrides.items():
            setattr(dp_recipe, k, v)
        yield
    finally:
        for k, v in saved.items():
            setattr(dp_recipe, k, v)


def validation_splits(splits: Splits, seed: int) -> Splits:
    """The run's validation patients as the evaluation set; a new validation part from train;
    the test patients dropped."""
    inner = split_train_val(splits.train, val_fraction=0.15 / 0.65, seed=seed + 1000)
    return Splits(parts={**inner.parts, "test": splits.val}, seed=seed)


def score(method: str, splits: Splits, seed: int, epsilon: float | None) -> float:
    privacy = PrivacyConfig(target_epsilon=epsilon) if epsilon is not None else None
    trainer = TRAINERS.get(method)()
    model = trainer.fit(splits=splits, config=TrainConfig(), privacy=privacy, seed=seed)
    return auroc(splits.test.labels, model.margin(splits.test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", default="1,8")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--synthetic-seed", type=int, default=1)
    parser.add_argument("--cohorts", default=",".join(COHORTS))
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    args = parser.parse_args()
    trainer_names()  # registers the built-in trainers
    epsilons = [float(e) for e in args.epsilons.split(",")]
    figures: dict = {}
    for cohort in args.cohorts.split(","):
        if cohort == "insurance":
            data = DataConfig(spec=f"csv:{INSURANCE}", target="charges", threshold=15000)
        else:
            data = DataConfig(
                spec=f"synthetic:{COHORTS[cohort]}", synthetic_seed=args.synthetic_seed
            )
        dataset = load_dataset(data)
        splits = [validation_splits(split_by_unit(dataset, seed=s), s) for s in range(args.seeds)]
        reference = {
            m: np.array([score(m, sp, s, None) for s, sp in enumerate(splits)])
            for m in ("baseline", "logreg")
        }
        row = {m: round(float(v.mean()), 4) for m, v in reference.items()}
        print(f"{cohort:<16}n_train {len(splits[0].train)}  " + json.dumps(row))
        figures[cohort] = {"reference": row}
        for eps in epsilons:
            for name in args.candidates.split(","):
                started = time.perf_counter()
                with constants(CANDIDATES[name]):
                    values = np.array([score("dp-sgd", sp, s, eps) for s, sp in enumerate(splits)])
                gap = reference["baseline"] - values
                result = {
                    "mean": round(float(values.mean()), 4),
                    "sd": round(float(values.std(ddof=1)), 4),
                    "gap_baseline": round(float(gap.mean()), 4),
                    "gap_baseline_se": round(float(gap.std(ddof=1) / np.sqrt(len(gap))), 4),
                    "gap_logreg": round(float((reference["logreg"] - values).mean()), 4),
                    "seconds": round(time.perf_counter() - started, 1),
                }
                figures[cohort][f"{name}@{eps:g}"] = result
                print(f"{cohort:<16}{name + '@' + format(eps, 'g'):<14}" + json.dumps(result))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
