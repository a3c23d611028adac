"""The attack protocol end to end on one model: pool, shadows, MIA, audit, attribute."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from medpriv.attacks.runner import (
    ALL_ATTACKS,
    ATTACKS,
    AttackPool,
    run_attacks,
    shadow_in_mask,
    train_shadow_outputs,
)
from medpriv.config import ATTACK_NAMES, FederatedConfig, PrivacyConfig, TrainConfig, load_config
from medpriv.data.splits import split_by_unit
from medpriv.errors import ConfigError
from medpriv.experiment import make_splits
from medpriv.train.base import get_trainer, trainer_names
from tests.conftest import make_toy_dataset


def _splits(n: int = 800, seed: int = 0):
    return split_by_unit(make_toy_dataset(n), seed=seed)


def test_attacks_do_not_change_the_splits():
    dataset = make_toy_dataset(1000, records_per_unit=2)
    on = make_splits(dataset, load_config(None, {}), seed=0)
    off = make_splits(dataset, load_config(None, {"run": {"attacks": []}}), seed=0)
    assert set(on.parts) == set(off.parts) == {"train", "val", "test"}
    for name in on.parts:
        assert np.array_equal(on.parts[name].unit_ids, off.parts[name].unit_ids)


def test_the_pool_is_the_training_units_against_the_test_units():
    splits = make_splits(make_toy_dataset(1000, records_per_unit=2), load_config(None, {}), 0)
    pool = AttackPool.from_splits(splits)
    ids, member = pool.records.unit_ids, pool.member.astype(bool)
    assert len(pool.records) == len(splits.train) + len(splits.test)
    assert np.array_equal(ids[member], splits.train.unit_ids)  # every record, members first
    assert np.array_equal(ids[~member], splits.test.unit_ids)
    assert not set(ids) & set(splits.val.unit_ids)
    assert np.array_equal(pool.population.unit_ids, splits.val.unit_ids)
    # Reference models train on random halves of train ∪ test, each unit IN for half of them.
    in_mask = shadow_in_mask(ids, 4, seed=0)
    assert np.all(in_mask.sum(axis=0) == 2)
    assert in_mask[:, member].any() and in_mask[:, ~member].any()


def test_a_large_pool_is_attacked_on_a_random_sample_of_units():
    splits = make_splits(make_toy_dataset(1000, records_per_unit=2), load_config(None, {}), 0)
    whole = AttackPool.from_splits(splits)
    assert whole.attacked is None and whole.sample() is None
    assert AttackPool.from_splits(splits, max_units=10_000).attacked is None  # nothing to cut
    pool = AttackPool.from_splits(splits, max_units=40, seed=3)
    assert len(pool.everyone) == len(whole.records)  # the reference models' pool is whole
    member = pool.member.astype(bool)
    ids = pool.records.unit_ids
    assert len(set(ids[member])) == 40 and len(set(ids[~member])) == 40
    assert set(ids[member]) <= set(splits.train.unit_ids)  # membership truth kept
    assert set(ids[~member]) <= set(splits.test.unit_ids)
    for unit in set(ids):  # a sampled unit brings every one of its records
        assert (ids == unit).sum() == (pool.everyone.unit_ids == unit).sum()
    assert pool.sample() == {
        "member_units": 40,
        "member_units_total": splits.train.n_units,
        "nonmember_units": 40,
        "nonmember_units_total": splits.test.n_units,
    }
    assert np.array_equal(pool.members.unit_ids, ids[member])
    assert np.array_equal(pool.nonmembers.unit_ids, ids[~member])
    again = AttackPool.from_splits(splits, max_units=40, seed=3)
    assert np.array_equal(again.attacked, pool.attacked)  # seeded
    assert not np.array_equal(
        AttackPool.from_splits(splits, max_units=40, seed=4).attacked, pool.attacked
    )
    with pytest.raises(ValueError, match="at least 1"):
        AttackPool.from_splits(splits, max_units=0)


@pytest.mark.parametrize("method", ["baseline", "logreg"])  # vectorized and refitted shadows
def test_a_sampled_pool_keeps_its_reference_models_at_full_size(method, monkeypatch):
    splits = make_splits(make_toy_dataset(800), load_config(None, {}), 0)
    pool = AttackPool.from_splits(splits, max_units=50, seed=0)
    config = TrainConfig(epochs=2, hidden=(8,))
    trainer = get_trainer(method)
    model = trainer.fit(splits=splits, config=config, seed=0)
    sizes = []
    if method == "baseline":
        import medpriv.attacks.shadow as shadow

        real = shadow.train_shadows

        def recording(x, y, in_mask, **kwargs):
            sizes.extend(in_mask.sum(axis=1).tolist())
            assert len(x) == len(pool.everyone)
            return real(x, y, in_mask, **kwargs)

        monkeypatch.setattr(shadow, "train_shadows", recording)
    else:
        real_fit = type(trainer).fit

        def recording_fit(self, *, splits, **kwargs):
            sizes.append(len(splits.train))
            return real_fit(self, splits=splits, **kwargs)

        monkeypatch.setattr(type(trainer), "fit", recording_fit)
    outputs = train_shadow_outputs(
        model, pool, splits, trainer=trainer, config=config, privacy=None, k=4, seed=0
    )
    in_everyone = shadow_in_mask(pool.everyone.unit_ids, 4, 0)
    assert sizes == in_everyone.sum(axis=1).tolist()  # half of every pool unit each
    assert min(sizes) > 2 * 2 * 50 * 0.9  # far more than the attacked records
    assert outputs.pool.shape == (4, len(pool.records))
    assert np.array_equal(outputs.in_mask, in_everyone[:, pool.attacked])


def test_sampled_attacks_say_so_in_every_membership_block():
    splits = _splits(800)
    pool = AttackPool.from_splits(splits, max_units=60, seed=1)
    trainer = get_trainer("logreg")
    model = trainer.fit(splits=splits, config=TrainConfig(), seed=0)
    block, results = run_attacks(
        model,
        splits,
        attacks=("mia_loss", "mia_lira", "attribute"),
        trainer=trainer,
        config=TrainConfig(),
        privacy=None,
        n_shadow=4,
        pool=pool,
    )
    for name in ("mia_loss", "mia_lira"):
        assert block[name]["sample"] == pool.sample()
        assert block[name]["n_members"] == block[name]["n_nonmembers"] == 60
        assert len(results[name].scores) == 120
    attribute = block["attribute"]
    assert attribute["members"]["n"] <= 60 and attribute["nonmembers"]["n"] <= 60
    assert attribute["sample"] == pool.sample()


def test_the_pool_refuses_splits_without_a_test_part_or_sharing_units():
    splits = _splits(400)
    parts = {k: v for k, v in splits.parts.items() if k != "test"}
    with pytest.raises(ValueError, match="missing: test"):
        AttackPool.from_splits(replace(splits, parts=parts))
    overlapping = {**splits.parts, "test": splits.train}
    with pytest.raises(ValueError, match="in both train and test"):
        AttackPool.from_splits(replace(splits, parts=overlapping))


def test_the_registry_holds_every_configurable_attack():
    assert ATTACKS.names() == sorted(ATTACK_NAMES) == sorted(ALL_ATTACKS)
    with pytest.raises(ConfigError, match="unknown attack 'nope'; valid: attribute, audit"):
        ATTACKS.get("nope")


@pytest.mark.parametrize("method", trainer_names())
def test_every_registered_attack_reports_on_every_trainer(method: str):
    """Conformance: each attack against each method gives a well-formed, JSON-ready block."""
    splits = _splits()
    config = TrainConfig(epochs=3, hidden=(16, 8))  # two layers: U-shaped split needs one
    privacy = PrivacyConfig(target_epsilon=1.0)
    trainer = get_trainer(
        method,
        federated=FederatedConfig(rounds=3, partition="iid:4"),
        model="tests.train.estimators:forest",  # the user's-estimator method's factory
    )
    model = trainer.fit(splits=splits, config=config, privacy=privacy, seed=0)
    block, results = run_attacks(
        model,
        splits,
        attacks=tuple(ATTACKS.names()),
        trainer=trainer,
        config=config,
        privacy=privacy,
        n_shadow=4,
    )
    federated = method.startswith("fedavg")
    left_out = set() if federated else {"fl_inversion"}
    if method != "split-ushaped":
        left_out.add("sl_label_leakage")
    if not method.startswith("split"):
        left_out.add("sl_reconstruction")
    assert set(block) == set(ATTACKS.names()) - left_out
    assert json.loads(json.dumps(block)) == block
    for name in ("mia_loss", "mia_lira", "mia_rmia"):
        assert 0.0 <= block[name]["auc"] <= 1.0
        assert set(block[name]["tpr_at_fpr"]) == {"0.001", "0.01"}
        assert len(results[name].scores) == len(splits.train) + len(splits.test)
        assert block[name]["n_members"] == len(splits.train)
        assert block[name]["n_nonmembers"] == len(splits.test)
        assert block[name]["nonmembers_from"] == "test"
    assert block["mia_lira"]["n_shadow"] == 4 and "offline" in block["mia_lira"]
    audit = block["audit"]
    assert ("white_box" in audit) == trainer.gradient_canaries and "black_box" in audit
    for threat_model in ("white_box", "black_box"):
        if threat_model not in audit:
            continue
        found = audit[threat_model]
        assert found["epsilon_lower_bound"] <= found["max_demonstrable"] == found["power"]
        if trainer.private:  # the audit run's own claim, near the released model's
            assert found["claimed_epsilon"] == pytest.approx(model.privacy.epsilon, rel=0.1)
            assert found["verdict"] in ("not contradicted", "tight") and found["consistent"]
        else:
            assert found["claimed_epsilon"] is None and found["verdict"] == "no claim"
    assert audit["deciding"] in audit and audit["verdict"] == audit[audit["deciding"]]["verdict"]
    assert block["attribute"]["attribute"] == "group"
    if method == "split-ushaped":
        assert 0.5 <= block["sl_label_leakage"]["auc"] <= 1.0
    if method.startswith("split"):
        recon = block["sl_reconstruction"]
        assert 0.0 <= recon["baseline_accuracy"] <= 1.0 and 0.0 <= recon["accuracy"] <= 1.0
    if federated:
        views = block["fl_inversion"]
        assert set(views) >= {"fedsgd", "fedavg", "dp", "secagg"}
        assert 0 <= views["fedsgd"]["1"]["accuracy"] <= 1


def test_the_audits_run_on_their_own_canary_runs_white_box_where_it_applies():
    splits = _splits()
    config = TrainConfig(epochs=2, hidden=(16, 8))
    for method, applies in (("logreg", False), ("dp-sgd", True)):
        trainer = get_trainer(method)
        privacy = PrivacyConfig(target_epsilon=2.0) if trainer.private else None
        model = trainer.fit(splits=splits, config=config, privacy=privacy, seed=0)
        block, results = run_attacks(
            model, splits, attacks=("audit",), trainer=trainer, config=config, privacy=privacy
        )
        assert set(block) == {"audit"} and not results
        assert ("white_box" in block["audit"]) == applies and "black_box" in block["audit"]
        assert "canaries" not in model.artifacts  # the released model never sees a canary


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
