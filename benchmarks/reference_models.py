"""Wall time of the attack reference models (LiRA/RMIA shadows) of the scikit-learn methods,
measured side by side in one run on a synthetic cohort.

* logreg   K reference models as `medpriv run` fits them — one stacked Newton problem
           (`LogRegTrainer.reference_margins`) — against K one-by-one fits with the trainer
           (scikit-learn's Newton-Cholesky, the target's own solver) and against K one-by-one
           fits with scikit-learn's lbfgs (the solver before: `max_iter=2000`); the largest
           margin difference between the stacked and one-by-one models is printed beside it.
* hgb      the target's own fit against its reference models one by one: seconds per reference
           model / seconds of the target fit (the issue's target: at most 3).

Prints a table and, as the last line, one JSON object.

    .venv/bin/python benchmarks/reference_models.py                      # synthetic:100000
    .venv/bin/python benchmarks/reference_models.py --data synthetic:20000 --k 8
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


def _seconds(work) -> tuple[float, object]:
    start = time.perf_counter()
    found = work()
    return time.perf_counter() - start, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic:100000")
    parser.add_argument("--k", type=int, default=16, help="reference models")
    parser.add_argument(
        "--one-by-one", type=int, default=4, help="one-by-one fits timed (scaled to K)"
    )
    args = parser.parse_args()

    dataset = load_dataset(DataConfig(spec=args.data))
    splits = split_by_unit(dataset, seed=0)
    pool = AttackPool.from_splits(splits)
    in_mask = shadow_in_mask(pool.records.unit_ids, args.k, seed=1)
    config = TrainConfig()
    out: dict[str, object] = {"data": args.data, "pool": len(pool.records), "k": args.k}

    trainer = get_trainer("logreg")
    target_seconds, model = _seconds(lambda: trainer.fit(splits=splits, config=config, seed=0))
    stacked_seconds, stacked = _seconds(
        lambda: trainer.reference_margins(
            model,
            records=pool.records,
            in_mask=in_mask,
            val=splits.val,
            score=(pool.records,),
            config=config,
        )
    )
    design = model.preprocessor.transform
    x, y = design(pool.records.features), pool.records.labels
    resolved = config.resolved(trainer.recipe)
    c = resolved.logreg_c
    timed = min(args.one_by_one, args.k)
    newton, lbfgs, gap = 0.0, 0.0, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(timed):
            rows = in_mask[k]
            seconds, one = _seconds(
                lambda rows=rows, k=k: trainer.estimator(resolved, k).fit(x[rows], y[rows])
            )
            newton += seconds
            gap = max(gap, float(np.abs(stacked[0][k] - one.decision_function(x)).max()))
            seconds, _ = _seconds(
                lambda rows=rows: LogisticRegression(C=c, max_iter=2000).fit(x[rows], y[rows])
            )
            lbfgs += seconds
    scale = args.k / timed
    out["logreg"] = {
        "target_fit_seconds": round(target_seconds, 2),
        "stacked_seconds": round(stacked_seconds, 2),
        "one_by_one_newton_seconds": round(newton * scale, 2),
        "one_by_one_lbfgs_seconds": round(lbfgs * scale, 2),
        "speedup_vs_newton": round(newton * scale / stacked_seconds, 2),
        "speedup_vs_lbfgs": round(lbfgs * scale / stacked_seconds, 2),
        "max_margin_difference": round(gap, 6),
    }

    hgb = get_trainer("hgb")
    hgb_seconds, _ = _seconds(lambda: hgb.fit(splits=splits, config=config, seed=0))
    reference = 0.0
    for k in range(timed):
        part = pool.records.subset(np.flatnonzero(in_mask[k]))
        shadow_splits = replace(splits, parts={**splits.parts, "train": part})
        seconds, _ = _seconds(
            lambda s=shadow_splits, k=k: hgb.fit(splits=s, config=config, seed=1 + k)
        )
        reference += seconds
    out["hgb"] = {
        "target_fit_seconds": round(hgb_seconds, 2),
        "seconds_per_reference_model": round(reference / timed, 2),
        "ratio_to_target_fit": round(reference / timed / hgb_seconds, 2),
    }

    lr, hb = out["logreg"], out["hgb"]
    print(f"{args.data}: pool {out['pool']:,} records, K = {args.k}")
    print(f"{'logreg':<8} target fit {lr['target_fit_seconds']:>8.2f} s")
    print(f"{'':<8} stacked K models {lr['stacked_seconds']:>8.2f} s")
    print(
        f"{'':<8} one by one (Newton) {lr['one_by_one_newton_seconds']:>8.2f} s  "
        f"×{lr['speedup_vs_newton']}"
    )
    print(
        f"{'':<8} one by one (lbfgs)  {lr['one_by_one_lbfgs_seconds']:>8.2f} s  "
        f"×{lr['speedup_vs_lbfgs']}"
    )
    print(f"{'':<8} largest margin difference {lr['max_margin_difference']:.2e}")
    print(
        f"{'hgb':<8} target fit {hb['target_fit_seconds']:.2f} s, per reference model "
        f"{hb['seconds_per_reference_model']:.2f} s (×{hb['ratio_to_target_fit']})"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
