"""The attack protocol end to end on one model: pool, shadows, MIA, audit, attribute."""

from __future__ import annotations

import numpy as np
import pytest

from medpriv.attacks.runner import AttackPool, run_attacks, shadow_in_mask
from medpriv.config import PrivacyConfig, TrainConfig, load_config
from medpriv.data.splits import split_by_unit
from medpriv.experiment import make_splits
from medpriv.train.base import get_trainer
from tests.conftest import make_toy_dataset


def _splits(n: int = 800, seed: int = 0):
    return split_by_unit(make_toy_dataset(n), extra={"nonmember": 0.325}, seed=seed)


def test_attack_splits_halve_the_pool_by_unit():
    dataset = make_toy_dataset(1000, records_per_unit=2)
    on = make_splits(dataset, load_config(None, {}), seed=0)
    off = make_splits(dataset, load_config(None, {"run": {"attacks": []}}), seed=0)
    assert "nonmember" not in off.parts
    members, others = on.train, on.parts["nonmember"]
    assert abs(len(members) - len(others)) <= 0.1 * len(members)
    assert not set(members.unit_ids) & set(others.unit_ids)
    assert len(members) + len(others) == len(off.train)
    pool = AttackPool.from_splits(on)
    assert pool.member.sum() == len(members) and len(pool.records) == len(off.train)


@pytest.mark.parametrize("method", ["logreg", "dp-logreg"])
def test_every_attack_reports_for_one_shot_methods(method: str):
    splits = _splits()
    config = TrainConfig()
    privacy = PrivacyConfig(target_epsilon=1.0)
    trainer = get_trainer(method)
    model = trainer.fit(splits=splits, config=config, privacy=privacy, seed=0)
    block, results = run_attacks(
        model,
        splits,
        attacks=("mia_loss", "mia_lira", "mia_rmia", "audit", "attribute"),
        trainer=trainer,
        config=config,
        privacy=privacy,
        n_shadow=4,
    )
    assert set(block) == {"mia_loss", "mia_lira", "mia_rmia", "audit", "attribute"}
    for name in ("mia_loss", "mia_lira", "mia_rmia"):
        assert 0.0 <= block[name]["auc"] <= 1.0 and set(block[name]["tpr_at_fpr"]) == {
            "0.001",
            "0.01",
        }
        assert len(results[name].scores) == len(splits.train) + len(splits.parts["nonmember"])
    assert block["mia_lira"]["n_shadow"] == 4 and "offline" in block["mia_lira"]
    audit = block["audit"]
    if method == "dp-logreg":
        assert audit["claimed_epsilon"] == 1.0 and audit["consistent"] is True
        assert audit["epsilon_lower_bound"] <= 1.0
    else:
        assert audit["claimed_epsilon"] is None and audit["consistent"] is None
    assert block["attribute"]["attribute"] == "group"


def test_only_the_requested_attacks_run():
    splits = _splits()
    trainer = get_trainer("logreg")
    model = trainer.fit(splits=splits, config=TrainConfig(), seed=0)
    block, _ = run_attacks(
        model, splits, attacks=("mia_loss",), trainer=trainer, config=TrainConfig(), privacy=None
    )
    assert set(block) == {"mia_loss"}


def test_shadow_masks_are_seeded():
    units = np.arange(50)
    assert np.array_equal(shadow_in_mask(units, 8, 1), shadow_in_mask(units, 8, 1))
    assert not np.array_equal(shadow_in_mask(units, 8, 1), shadow_in_mask(units, 8, 2))
    with pytest.raises(ValueError, match="at least 2"):
        shadow_in_mask(units, 1, 0)
