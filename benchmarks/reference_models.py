"""Wall time of the attack reference models (LiRA/RMIA shadows) of the scikit-learn methods,
measured side by side in one run on a synthetic cohort.

* logreg   each reference model as `medpriv run` fits it — the trainer (preprocessing and
           scikit-learn's Newton-Cholesky, the target's own solver) on a random half of the
           attack pool — against the same fit with scikit-learn's lbfgs (the solver before,
           `max_iter=2000`), and each against the target's own fit.
* hgb      the target's own fit against its reference models one by one: seconds per reference
           model / seconds of the target fit (the issue's target: at most 3).

`--timed` reference models of each kind are fitted (the per-model time is their mean; K of
them is what a LiRA with K shadows spends). Prints a table and, as the last line, one JSON
object.

    .venv/bin/python benchmarks/reference_models.py                      # synthetic:100000
    .venv/bin/python benchmarks/reference_models.py --data synthetic:20000 --timed 2
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from medpriv.attacks.runner import AttackPool, shadow_in_mask
from medpriv.config import DataConfig, TrainConfig
from medpriv.data.sources import load_dataset
from medpriv.data.splits import split_by_unit
from medpriv.train.base import get_trainer


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic:100000")
    parser.add_argument("--k", type=int, default=16, help="reference models of a LiRA")
    parser.add_argument("--timed", type=int, default=4, help="reference models fitted and timed")
    args = parser.parse_args()

    dataset = load_dataset(DataConfig(spec=args.data))
    splits = split_by_unit(dataset, seed=0)
    pool = AttackPool.from_splits(splits)
    in_mask = shadow_in_mask(pool.records.unit_ids, args.k, seed=1)
    timed = min(args.timed, args.k)
    halves = [
        replace(splits, parts={**splits.parts, "train": pool.records.subset(np.flatnonzero(m))})
        for m in in_mask[:timed]
    ]
    config = TrainConfig()
    out: dict[str, object] = {"data": args.data, "pool": len(pool.records), "k": args.k}

    logreg = get_trainer("logreg")
    target = _seconds(lambda: logreg.fit(splits=splits, config=config, seed=0))
    newton = sum(
        _seconds(lambda s=s, i=i: logreg.fit(splits=s, config=config, seed=1 + i))
        for i, s in enumerate(halves)
    )
    c = config.resolved(logreg.recipe).logreg_c
    lbfgs = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for part in halves:
            x = logreg.fit(splits=part, config=config, seed=0).preprocessor.transform(
                part.train.features
            )
            lbfgs += _seconds(
                lambda x=x, y=part.train.labels: LogisticRegression(C=c, max_iter=2000).fit(x, y)
            )
    out["logreg"] = {
        "target_fit_seconds": round(target, 2),
        "seconds_per_reference_model": round(newton / timed, 3),
        "ratio_to_target_fit": round(newton / timed / target, 2),
        "lira_reference_seconds": round(newton / timed * args.k, 2),
        "lbfgs_seconds_per_reference_model": round(lbfgs / timed, 3),
        "speedup_vs_lbfgs": round(lbfgs / newton, 2),
    }

    hgb = get_trainer("hgb")
    target = _seconds(lambda: hgb.fit(splits=splits, config=config, seed=0))
    reference = sum(
        _seconds(lambda s=s, i=i: hgb.fit(splits=s, config=config, seed=1 + i))
        for i, s in enumerate(halves)
    )
    out["hgb"] = {
        "target_fit_seconds": round(target, 2),
        "seconds_per_reference_model": round(reference / timed, 2),
        "ratio_to_target_fit": round(reference / timed / target, 2),
        "lira_reference_seconds": round(reference / timed * args.k, 2),
    }

    print(f"{args.data}: pool {out['pool']:,} records, K = {args.k}, {timed} timed")
    for name in ("logreg", "hgb"):
        row = out[name]
        print(
            f"{name:<8} target fit {row['target_fit_seconds']:.2f} s, per reference model "
            f"{row['seconds_per_reference_model']:.2f} s (×{row['ratio_to_target_fit']}), "
            f"K of them {row['lira_reference_seconds']:.1f} s"
        )
    lr = out["logreg"]
    print(
        f"{'':<8} lbfgs (the solver before) {lr['lbfgs_seconds_per_reference_model']:.2f} s per "
        f"model: Newton-Cholesky ×{lr['speedup_vs_lbfgs']} faster"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
