import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medpriv.data.dataset import Schema
from medpriv.data.preprocess import Preprocessor
from medpriv.data.splits import MIN_PER_CLASS, split_by_unit
from medpriv.errors import ConfigError, DataSchemaError, NotFittedError, TooLittleDataError
from tests.conftest import make_toy_dataset


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), per_unit=st.integers(1, 4))
def test_no_unit_on_two_sides_and_every_row_assigned(seed: int, per_unit: int):
    dataset = make_toy_dataset(400, seed=seed % 7, records_per_unit=per_unit)
    splits = split_by_unit(dataset, val_fraction=0.15, test_fraction=0.2, seed=seed)
    units = {name: set(part.unit_ids) for name, part in splits.parts.items()}
    names = list(units)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not units[a] & units[b], f"unit on both {a} and {b}"
    assert sum(splits.sizes().values()) == len(dataset)


def test_split_is_seeded_stratified_and_sized(toy_dataset):
    a = split_by_unit(toy_dataset, seed=3)
    b = split_by_unit(toy_dataset, seed=3)
    c = split_by_unit(toy_dataset, seed=4)
    assert np.array_equal(a.test.unit_ids, b.test.unit_ids)
    assert not np.array_equal(a.test.unit_ids, c.test.unit_ids)
    rate = toy_dataset.positive_rate
    for part in a.parts.values():
        assert abs(part.positive_rate - rate) < 0.03
    assert abs(len(a.test) / len(toy_dataset) - 0.2) < 0.01
    assert abs(len(a.val) / len(toy_dataset) - 0.15) < 0.01


def test_extra_parts_for_later_attack_pools(toy_dataset):
    splits = split_by_unit(toy_dataset, extra={"attack": 0.3}, seed=0)
    assert set(splits.parts) == {"train", "test", "val", "attack"}
    with pytest.raises(ConfigError):
        split_by_unit(toy_dataset, val_fraction=0.5, test_fraction=0.5)


def test_single_class_split_is_a_clear_error():
    dataset = make_toy_dataset(20, seed=0)
    labels = np.zeros(len(dataset), dtype=np.int64)
    labels[0] = 1
    tiny = type(dataset)(
        name="tiny",
        features=dataset.features,
        labels=labels,
        unit_ids=dataset.unit_ids,
        schema=dataset.schema,
    )
    with pytest.raises(DataSchemaError, match="single class"):
        split_by_unit(tiny, seed=0)


def _with_positives(n: int, positives: int):
    dataset = make_toy_dataset(n, seed=0)
    labels = np.zeros(len(dataset), dtype=np.int64)
    labels[:positives] = 1
    return type(dataset)(
        name="rare",
        features=dataset.features,
        labels=labels,
        unit_ids=dataset.unit_ids,
        schema=dataset.schema,
    )


def test_too_few_positives_in_the_test_split_is_refused_with_counts_only():
    # 20 positives among 400: the test split (20%) gets 4, below the floor of 5.
    rare = _with_positives(400, 4 * 5)
    with pytest.raises(TooLittleDataError) as refused:
        split_by_unit(rare, seed=0)
    message = str(refused.value)
    assert f"at least {MIN_PER_CLASS} positive" in message and "test 4 positive / 76" in message
    # A caller that keeps only the training part asks for both classes, nothing more.
    assert split_by_unit(rare, seed=0, min_per_class=1).train.labels.sum() > 0
    # Enough positives for the test split, and validation with a handful still runs.
    assert split_by_unit(_with_positives(400, 30), seed=0).test.labels.sum() >= MIN_PER_CLASS


def test_preprocessor_uses_training_rows_only():
    schema = Schema(numeric=("x",), categorical=("c",))
    train = pd.DataFrame({"x": [1.0, 2.0, np.nan, 5.0], "c": ["a", "b", "a", None]})
    test = pd.DataFrame({"x": [1000.0, np.nan], "c": ["zzz", "b"]})
    pre = Preprocessor(schema).fit(train)
    before = pre.state_dict()
    out = pre.transform(test)
    assert pre.state_dict() == before  # transform never refits
    assert pre.feature_names_ == ["x", "x_missing", "c=<missing>", "c=a", "c=b"]
    median, mean = 2.0, np.mean([1.0, 2.0, 2.0, 5.0])
    std = np.std([1.0, 2.0, 2.0, 5.0])
    assert out[1, 0] == pytest.approx((median - mean) / std)
    assert out[0, 0] == pytest.approx((1000.0 - mean) / std)
    assert out[1, 1] == 1.0 and out[0, 1] == 0.0
    assert out[0, 2:].sum() == 0.0  # unseen category: all zeros
    assert out.dtype == np.float32


def test_preprocessor_refuses_use_before_fit():
    with pytest.raises(NotFittedError):
        Preprocessor(Schema(numeric=("x",), categorical=())).transform(pd.DataFrame({"x": [1.0]}))
