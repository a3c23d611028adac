"""Cross-check against an independent implementation: IBM ART's MembershipInferenceBlackBox."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medpriv.attacks.base import RocCurve
from medpriv.attacks.runner import run_attacks
from medpriv.config import TrainConfig
from medpriv.data.dataset import Schema, TabularDataset
from medpriv.data.splits import split_by_unit
from medpriv.train.base import get_trainer

art = pytest.importorskip("art", reason="adversarial-robustness-toolbox is a test dependency")


def wide_dataset(n: int, d: int, seed: int) -> TabularDataset:
    """Two informative columns among d: few records per parameter, so an MLP memorizes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    labels = (rng.random(n) < 1 / (1 + np.exp(-(x[:, 0] - 0.8 * x[:, 1])))).astype(np.int64)
    columns = [f"f{i}" for i in range(d)]
    return TabularDataset(
        name="wide",
        features=pd.DataFrame(x, columns=columns),
        labels=labels,
        unit_ids=np.arange(n),
        schema=Schema(numeric=tuple(columns), categorical=(), sensitive=()),
        site_ids=np.full(n, "a", dtype=object),
    )


def test_our_attacks_agree_with_art_on_an_overfit_model():
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
    from art.estimators.classification import BlackBoxClassifier

    # Members: the training split; non-members: the test split (the runner's protocol), here
    # sized alike so that ART's attack model has as many of each to learn from.
    splits = split_by_unit(
        wide_dataset(600, 40, seed=3), val_fraction=0.25, test_fraction=0.375, seed=0
    )
    # Memorizes: 40 columns, a wide net without dropout, small batches, on ~230 members.
    config = TrainConfig(
        epochs=60, hidden=(256, 256), dropout=0.0, patience=1000, lr=0.003, batch_size=32
    )
    trainer = get_trainer("baseline")
    model = trainer.fit(splits=splits, config=config, seed=0)
    block, results = run_attacks(
        model,
        splits,
        attacks=("mia_loss", "mia_lira"),
        trainer=trainer,
        config=config,
        privacy=None,
        n_shadow=8,
    )

    members, others = splits.train, splits.test
    design = model.preprocessor.transform

    def proba(x: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-model.scorer.margin(x)))
        return np.column_stack([1 - p, p])

    classifier = BlackBoxClassifier(
        proba, input_shape=(design(members.features).shape[1],), nb_classes=2
    )
    half_in, half_out = len(members) // 2, len(others) // 2
    x_in, x_out = design(members.features), design(others.features)
    attack = MembershipInferenceBlackBox(classifier, attack_model_type="rf")
    attack.fit(
        x=x_in[:half_in],
        y=members.labels[:half_in],
        test_x=x_out[:half_out],
        test_y=others.labels[:half_out],
    )
    eval_x = np.vstack([x_in[half_in:], x_out[half_out:]])
    eval_y = np.r_[members.labels[half_in:], others.labels[half_out:]]
    truth = np.r_[np.ones(len(members) - half_in), np.zeros(len(others) - half_out)]
    art_scores = attack.infer(eval_x, eval_y, probabilities=True)[:, -1]
    art_roc = RocCurve.from_scores(truth, art_scores)

    # Our scores on the same evaluation records (the pool lists members first).
    held_out = np.r_[
        np.arange(half_in, len(members)), len(members) + np.arange(half_out, len(others))
    ]
    lira_roc = RocCurve.from_scores(truth, results["mia_lira"].scores[held_out])

    assert block["mia_loss"]["auc"] > 0.6 and art_roc.auc > 0.6
    assert lira_roc.tpr_at(0.01) >= art_roc.tpr_at(0.01)
