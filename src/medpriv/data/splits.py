"""Splits by privacy unit (never by row), stratified by the unit's label, seeded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medpriv.data.dataset import TabularDataset
from medpriv.errors import ConfigError, DataSchemaError


@dataclass(frozen=True)
class Splits:
    """Named disjoint parts of a dataset; `train`, `val` and `test` always exist.

    Later stages may ask for more parts (e.g. attack pools) through `split_by_unit(fractions=...)`.
    """

    parts: Mapping[str, TabularDataset]
    seed: int

    @property
    def train(self) -> TabularDataset:
        return self.parts["train"]

    @property
    def val(self) -> TabularDataset:
        return self.parts["val"]

    @property
    def test(self) -> TabularDataset:
        return self.parts["test"]

    def sizes(self) -> dict[str, int]:
        return {name: len(part) for name, part in self.parts.items()}


def split_by_unit(
    dataset: TabularDataset,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    extra: Mapping[str, float] | None = None,
    seed: int = 0,
) -> Splits:
    """Assign each privacy unit to one part; stratified on whether the unit has a positive record.

    `extra` names further parts and their unit fractions; `train` gets whatever remains.
    """
    fractions = {"test": test_fraction, "val": val_fraction, **(extra or {})}
    if any(not 0 < f < 1 for f in fractions.values()) or sum(fractions.values()) >= 1:
        raise ConfigError(f"split fractions must be in (0, 1) and sum below 1, got {fractions}")
    units, unit_index = np.unique(dataset.unit_ids, return_inverse=True)
    unit_label = pd.Series(dataset.labels).groupby(unit_index).max().to_numpy()
    rng = np.random.default_rng(seed)
    assignment = np.full(len(units), "train", dtype=object)
    for stratum in (0, 1):
        members = rng.permutation(np.flatnonzero(unit_label == stratum))
        start = 0
        for name, fraction in fractions.items():
            count = round(fraction * len(members))
            assignment[members[start : start + count]] = name
            start += count
    row_part = assignment[unit_index]
    parts = {}
    for name in ("train", *fractions):
        rows = np.flatnonzero(row_part == name)
        part = dataset.subset(rows)
        if len(np.unique(part.labels)) < 2:
            raise DataSchemaError(
                f"the {name} split of {dataset.name} ({len(rows)} rows) has a single class; "
                "the dataset is too small or too imbalanced for these split fractions"
            )
        parts[name] = part
    return Splits(parts=parts, seed=seed)
