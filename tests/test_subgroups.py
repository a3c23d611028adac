"""Who pays: the `subgroups` block — groups from public rules, figures that are the group's own,
suppression of small groups, aggregates only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medpriv.attacks.base import AttackInput, AttackResult
from medpriv.data.dataset import Schema, TabularDataset, concat
from medpriv.metrics import auroc
from medpriv.subgroups import groupings, subgroup_block
from tests.conftest import make_toy_dataset


def _with_age_and_weight(data: TabularDataset, seed: int) -> TabularDataset:
    rng = np.random.default_rng(seed)
    features = data.features.assign(
        age=rng.uniform(20, 95, len(data)), weight=rng.normal(80, 15, len(data))
    )
    schema = Schema(
        numeric=(*data.schema.numeric, "age", "weight"),
        categorical=data.schema.categorical,
        sensitive=("group", "weight"),
    )
    return TabularDataset(
        name=data.name,
        features=features,
        labels=data.labels,
        unit_ids=data.unit_ids,
        schema=schema,
        site_ids=data.site_ids,
    )


def test_groups_come_from_sensitive_columns_age_bands_and_sites():
    reference = _with_age_and_weight(make_toy_dataset(400, seed=1), seed=1)
    found = {g.attribute: g for g in groupings(reference)}
    assert list(found) == ["group", "weight", "age band", "site"]
    ages = pd.DataFrame({"age": [17.0, 18.0, 44.9, 45.0, 79.9, 80.0, 101.0, np.nan]})
    part = TabularDataset(
        name="ages",
        features=ages,
        labels=np.zeros(8, int),
        unit_ids=np.arange(8),
        schema=Schema(numeric=("age",), categorical=()),
    )
    bands = found["age band"].labels(part).tolist()
    assert bands == ["<18", "18–44", "18–44", "45–64", "65–79", "80+", "80+", "missing"]
    # a numeric sensitive column is cut at the reference patients' quartiles
    edges = np.quantile(reference.features["weight"], [0.25, 0.5, 0.75])
    assert np.allclose(found["weight"].edges, edges, rtol=1e-2)
    assert len(set(found["weight"].labels(reference))) == 4


def test_each_groups_figures_are_its_own_and_small_groups_are_suppressed():
    data = make_toy_dataset(3000, seed=2)
    test, reference = data.subset(np.arange(1000)), data.subset(np.arange(1000, 1500))
    rng = np.random.default_rng(0)
    prob = np.clip(test.labels * 0.3 + rng.uniform(0, 0.7, len(test)), 0, 1)
    members = data.subset(np.arange(1500, 3000))
    pool = concat([members, test])
    member = np.r_[np.ones(len(members), int), np.zeros(len(test), int)]
    scores = rng.normal(size=len(pool)) + 0.5 * member
    lira = AttackResult.from_input("mia_lira", AttackInput(scores, member))
    block = subgroup_block(
        test=test,
        test_prob=prob,
        reference=reference,
        pool=pool,
        membership={"mia_loss": lira, "mia_lira": lira},
        min_units=340,  # the sites hold about 333 and 667 test patients
        n_boot=50,
    )
    assert block["membership_attack"] == "mia_lira" and block["min_units"] == 340
    by_name = {a["attribute"]: {g["group"]: g for g in a["groups"]} for a in block["attributes"]}
    assert by_name["site"]["north"] == {"group": "north", "suppressed": True}
    south = by_name["site"]["south"]
    in_south = test.site_ids == "south"
    assert south["units"] == in_south.sum()
    assert south["auroc"] == round(auroc(test.labels[in_south], prob[in_south]), 6)
    assert south["observed_rate"] == round(test.labels[in_south].mean(), 6)
    lo, hi = south["auroc_ci95"]
    assert lo < south["auroc"] < hi
    in_pool = pool.site_ids == "south"
    own = AttackResult.from_input("x", AttackInput(scores[in_pool], member[in_pool]))
    exposure = south["membership"]
    assert exposure["auc"] == round(own.auc, 6)
    assert exposure["tpr_at_fpr"]["0.01"] == round(own.roc.tpr_at(0.01), 6)
    assert exposure["nonmembers"] == in_south.sum()
    # aggregates only: the block's size does not grow with the number of patients
    assert len(json.dumps(block)) < 4000


def test_a_group_too_small_to_resolve_a_low_fpr_leaves_it_out():
    data = make_toy_dataset(900, seed=3)
    test, reference = data.subset(np.arange(150)), data.subset(np.arange(150, 300))
    members = data.subset(np.arange(300, 900))
    pool = concat([members, test])
    member = np.r_[np.ones(len(members), int), np.zeros(len(test), int)]
    result = AttackResult.from_input(
        "mia_loss", AttackInput(np.random.default_rng(1).normal(size=len(pool)), member)
    )
    block = subgroup_block(
        test=test,
        test_prob=np.full(len(test), 0.5),
        reference=reference,
        pool=pool,
        membership={"mia_loss": result},
        min_units=10,
        n_boot=20,
    )
    site = next(a for a in block["attributes"] if a["attribute"] == "site")
    north = next(g for g in site["groups"] if g["group"] == "north")
    assert north["membership"]["nonmembers"] == 50
    assert set(north["membership"]["tpr_at_fpr"]) == {"0.1"}  # 1% of 50 is no false positive


def test_without_attacks_or_groups():
    data = make_toy_dataset(600, seed=4)
    test, reference = data.subset(np.arange(300)), data.subset(np.arange(300, 600))
    block = subgroup_block(test=test, test_prob=np.full(300, 0.3), reference=reference, n_boot=10)
    assert block["membership_attack"] is None
    assert all("membership" not in g for a in block["attributes"] for g in a["groups"])
    plain = TabularDataset(
        name="plain",
        features=data.features[["x1"]],
        labels=data.labels,
        unit_ids=data.unit_ids,
        schema=Schema(numeric=("x1",), categorical=()),
    )
    assert subgroup_block(test=plain, test_prob=np.zeros(600), reference=plain) is None
