"""Wall time of training K LiRA shadow models at once against one at a time.

On the default synthetic cohort (training part as the shadow pool, preprocessing fitted on it),
each of K shadows gets a random half of the pool as its IN set and trains with the non-private
BASELINE_RECIPE (50 epochs, batch 256, Adam 1e-3, dropout 0.1, hidden 128-64, no early stopping):

* vectorized  one `train_shadows` call with all K models stacked;
* sequential  K calls of `train_shadows` with K = 1 each (the same code path, one model at a time).

Both are warmed up on a one-epoch run first. Then an end-to-end LiRA as `medpriv run` does it: the
default baseline target trained on every training patient (the released model), K = 16 shadows
with its recipe, the online and offline LiRA scores; `lira_seconds_per_model` is that attack's
wall time / K.
Prints a table and, as the last line, one JSON object.

    .venv/bin/python benchmarks/shadow_throughput.py
    .venv/bin/python benchmarks/shadow_throughput.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from medpriv.attacks.runner import run_attacks
from medpriv.attacks.shadow import ShadowRecipe, train_shadows
from medpriv.config import BASELINE_RECIPE, DataConfig, ExperimentConfig, RunConfig
from medpriv.data.preprocess import Preprocessor
from medpriv.data.sources import load_dataset
from medpriv.data.splits import split_by_unit
from medpriv.experiment import make_splits
from medpriv.train.base import get_trainer

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(BASELINE_RECIPE["epochs"]))
    parser.add_argument("--ks", default="16,64", help="comma-separated numbers of shadows")
    parser.add_argument("--quick", action="store_true", help="3 epochs: a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_pool() -> Arrays:
    """(x_pool, y_pool, x_val, y_val) from the default synthetic cohort."""
    dataset = load_dataset(DataConfig(spec="synthetic"))
    splits = split_by_unit(dataset, seed=0)
    pre = Preprocessor(dataset.schema).fit(splits.train.features)
    return (
        pre.transform(splits.train.features),
        splits.train.labels,
        pre.transform(splits.val.features),
        splits.val.labels,
    )


def baseline_recipe(epochs: int) -> ShadowRecipe:
    return ShadowRecipe(
        hidden=(128, 64),
        epochs=epochs,
        batch_size=int(BASELINE_RECIPE["batch_size"]),
        lr=float(BASELINE_RECIPE["lr"]),
        optimizer=str(BASELINE_RECIPE["optimizer"]),
        dropout=float(BASELINE_RECIPE["dropout"]),
    )


def vectorized(data: Arrays, masks: np.ndarray, recipe: ShadowRecipe, seed: int) -> float:
    x, y, x_val, y_val = data
    start = time.perf_counter()
    train_shadows(x, y, masks, x_val=x_val, y_val=y_val, recipe=recipe, seed=seed)
    return time.perf_counter() - start


def sequential(data: Arrays, masks: np.ndarray, recipe: ShadowRecipe, seed: int) -> float:
    x, y, x_val, y_val = data
    start = time.perf_counter()
    for k in range(len(masks)):
        train_shadows(x, y, masks[k : k + 1], x_val=x_val, y_val=y_val, recipe=recipe, seed=seed)
    return time.perf_counter() - start


def end_to_end_lira(k: int, seed: int) -> dict:
    """Train the default baseline target, then time LiRA with k shadows (as `medpriv run`)."""
    config = ExperimentConfig(data=DataConfig(spec="synthetic"), run=RunConfig(shadow_models=k))
    splits = make_splits(load_dataset(config.data), config, seed)
    trainer = get_trainer("baseline")
    model = trainer.fit(splits=splits, config=config.train, seed=seed)
    start = time.perf_counter()
    block, _ = run_attacks(
        model,
        splits,
        attacks=("mia_lira",),
        trainer=trainer,
        config=config.train,
        privacy=None,
        n_shadow=k,
        seed=seed,
    )
    seconds = time.perf_counter() - start
    lira = block["mia_lira"]
    return {
        "lira_k": k,
        "lira_seconds": round(seconds, 3),
        "lira_seconds_per_model": round(seconds / k, 4),
        "lira_shadow_epochs": int(model.params["best_epoch"]),
        "lira_pool_rows": lira["n_members"] + lira["n_nonmembers"],
        "lira_auc": round(lira["auc"], 4),
        "lira_tpr_at_1pct_fpr": round(lira["tpr_at_fpr"]["0.01"], 4),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    epochs = 3 if args.quick else args.epochs
    ks = [int(k) for k in args.ks.split(",")]
    data = load_pool()
    recipe = baseline_recipe(epochs)
    rng = np.random.default_rng(args.seed)
    warm = dataclasses.replace(recipe, epochs=1)
    vectorized(data, rng.random((4, len(data[0]))) < 0.5, warm, args.seed)
    sequential(data, rng.random((2, len(data[0]))) < 0.5, warm, args.seed)
    print(
        f"shadow MLPs {data[0].shape[1]}->128->64->2, pool {len(data[0]):,} rows (half IN), "
        f"batch {recipe.batch_size}, {epochs} epochs, Adam, dropout {recipe.dropout}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'K':>4}{'vectorized s':>14}{'sequential s':>14}{'speedup':>9}{'s/model':>9}")
    rows = {}
    for k in ks:
        masks = rng.random((k, len(data[0]))) < 0.5
        fast = vectorized(data, masks, recipe, args.seed)
        slow = sequential(data, masks, recipe, args.seed)
        rows[k] = (fast, slow)
        print(f"{k:>4}{fast:>14.2f}{slow:>14.2f}{slow / fast:>9.2f}{fast / k:>9.3f}")
    result: dict = {"epochs": epochs, "pool_rows": len(data[0]), "features": data[0].shape[1]}
    for k, (fast, slow) in rows.items():
        prefix = "" if k == max(ks) else f"k{k}_"
        result.update(
            {
                f"{prefix}vectorized_s": round(fast, 3),
                f"{prefix}sequential_s": round(slow, 3),
                f"{prefix}speedup": round(slow / fast, 3),
                f"seconds_per_model_vectorized_k{k}": round(fast / k, 4),
            }
        )
    result["k"] = max(ks)
    lira = end_to_end_lira(16, args.seed)
    print(
        f"end-to-end LiRA, K={lira['lira_k']} shadows x {lira['lira_shadow_epochs']} epochs on "
        f"{lira['lira_pool_rows']:,} pool rows: {lira['lira_seconds']:.1f} s "
        f"({lira['lira_seconds_per_model']:.2f} s/model), AUC {lira['lira_auc']:.3f}, "
        f"TPR@1%FPR {lira['lira_tpr_at_1pct_fpr']:.3f}"
    )
    result.update(lira)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
