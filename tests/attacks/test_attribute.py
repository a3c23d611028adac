"""Attribute inference against an imputation baseline (Jayaraman & Evans 2022)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medpriv.attacks.attribute import AttributeResult, attribute_inference
from medpriv.config import TrainConfig
from medpriv.data.dataset import Schema, TabularDataset
from medpriv.data.splits import Splits, split_by_unit
from medpriv.train.base import TrainedModel, get_trainer
from tests.conftest import make_toy_dataset

METRICS = {
    "attack_accuracy",
    "attack_auc",
    "imputation_accuracy",
    "imputation_auc",
    "advantage_over_imputation",
    "n",
}


def _sensitive_dataset(n: int, *, seed: int, copy: bool) -> TabularDataset:
    """A binary sensitive column `s` next to three numeric features (one with gaps).

    copy=False: s is independent of the features and flips the sign of x1's effect on the label,
    so only a model of P(y | x, s) reveals it. copy=True: s is the sign of x1.
    """
    rng = np.random.default_rng(seed)
    x1, x2, x3 = rng.normal(size=(3, n))
    s = (x1 > 0) if copy else (rng.random(n) < 0.4)
    s = s.astype(np.int64)
    logit = 1.5 * x1 - x2 if copy else 3.0 * (2 * s - 1) * x1 + 0.5 * x2
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    x3[rng.random(n) < 0.1] = np.nan
    features = pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "s": s.astype(float)})
    return TabularDataset(
        name="sensitive-toy",
        features=features,
        labels=labels,
        unit_ids=np.arange(n),
        schema=Schema(numeric=("x1", "x2", "x3", "s"), categorical=(), sensitive=("s",)),
    )


def _fit(dataset: TabularDataset, method: str = "baseline") -> tuple[Splits, TrainedModel]:
    splits = split_by_unit(dataset, seed=0)
    config = TrainConfig(epochs=60, hidden=(64, 64), dropout=0.0, patience=1000)
    return splits, get_trainer(method).fit(splits=splits, config=config, seed=0)


def _attack(splits: Splits, model: TrainedModel, **kwargs) -> AttributeResult | None:
    return attribute_inference(
        model, members=splits.train, nonmembers=splits.test, reference=splits.val, **kwargs
    )


def test_model_reveals_attribute_beyond_imputation():
    splits, model = _fit(_sensitive_dataset(1000, seed=0, copy=False))
    result = _attack(splits, model)
    assert result is not None and result.attribute == "s" and result.target_value == "1"
    members, nonmembers = result.members, result.nonmembers
    assert members["attack_auc"] > 0.8 and members["imputation_auc"] < 0.6
    assert members["advantage_over_imputation"] > 0.2
    assert members["attack_accuracy"] > members["imputation_accuracy"] + 0.1
    assert nonmembers["advantage_over_imputation"] > 0.1
    assert members["n"] == len(splits.train) and nonmembers["n"] == len(splits.test)


def test_no_advantage_when_imputation_already_knows():
    splits, model = _fit(_sensitive_dataset(1000, seed=1, copy=True))
    result = _attack(splits, model, attribute="s")
    assert result is not None
    for group in (result.members, result.nonmembers):
        assert group["imputation_auc"] > 0.95
        assert abs(group["advantage_over_imputation"]) < 0.05


def test_missing_or_unknown_attribute():
    toy = make_toy_dataset(400)
    plain = TabularDataset(
        name="plain",
        features=toy.features,
        labels=toy.labels,
        unit_ids=toy.unit_ids,
        schema=Schema(numeric=("x1", "x2", "noise"), categorical=("group",)),
    )
    splits, model = _fit(plain, "logreg")
    assert _attack(splits, model) is None
    # A continuous sensitive column is not usable by default; naming it is an error.
    continuous = TabularDataset(
        name="continuous",
        features=toy.features,
        labels=toy.labels,
        unit_ids=toy.unit_ids,
        schema=Schema(numeric=("x1", "x2", "noise"), categorical=("group",), sensitive=("x1",)),
    )
    splits, model = _fit(continuous, "logreg")
    assert _attack(splits, model) is None
    with pytest.raises(ValueError, match="binary"):
        _attack(splits, model, attribute="x1")
    splits, model = _fit(toy, "logreg")
    with pytest.raises(ValueError, match=r"sensitive columns .*\['group'\]"):
        _attack(splits, model, attribute="height")
    single = splits.val.features.assign(group="a")
    reference = TabularDataset(
        name="single",
        features=single,
        labels=splits.val.labels,
        unit_ids=splits.val.unit_ids,
        schema=splits.val.schema,
    )
    kwargs = {"members": splits.train, "nonmembers": splits.test, "reference": reference}
    assert attribute_inference(model, **kwargs) is None  # the default skips it
    with pytest.raises(ValueError, match="single value"):
        attribute_inference(model, **kwargs, attribute="group")


def test_multivalued_attribute_and_result_dict():
    toy = make_toy_dataset(600, seed=3)
    features = toy.features.copy()
    features.loc[features.index[::17], "group"] = np.nan  # unknown attribute: not scored
    toy = TabularDataset(
        name="toy",
        features=features,
        labels=toy.labels,
        unit_ids=toy.unit_ids,
        schema=toy.schema,
    )
    splits, model = _fit(toy)
    result = _attack(splits, model)
    assert result is not None and result.attribute == "group"
    counts = splits.val.features["group"].value_counts()
    assert result.target_value == counts.index[1]
    summary = result.to_dict()
    assert set(summary) == {
        "attribute",
        "target_value",
        "members",
        "nonmembers",
        "advantage_over_imputation",
        "method",
    }
    assert summary["advantage_over_imputation"] == summary["members"]["advantage_over_imputation"]
    for group, data in (("members", splits.train), ("nonmembers", splits.test)):
        assert set(summary[group]) == METRICS
        assert all(math.isfinite(v) for v in summary[group].values())
        assert summary[group]["n"] == data.features["group"].notna().sum()
        assert 0 <= summary[group]["attack_accuracy"] <= 1
    assert isinstance(summary["method"], str) and summary["method"]


def test_placeholders_like_unknown_are_never_the_inferred_value():
    dataset = make_toy_dataset(600, seed=4)
    group = dataset.features["group"].to_numpy(copy=True)
    group[np.arange(len(group)) % 3 == 0] = "Unknown"  # the most frequent value after "a"
    dataset = TabularDataset(
        name=dataset.name,
        features=dataset.features.assign(group=group),
        labels=dataset.labels,
        unit_ids=dataset.unit_ids,
        schema=dataset.schema,
    )
    splits, model = _fit(dataset, "logreg")
    result = _attack(splits, model, attribute="group")
    assert result is not None and result.target_value in {"a", "b", "c"}
    assert result.members["n"] < len(splits.train)  # records whose group is unknown are left out
