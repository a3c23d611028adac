"""Splits by privacy unit (never by row), stratified by the unit's label, seeded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medpriv.data.dataset import TabularDataset
from medpriv.errors import ConfigError, TooLittleDataError

# The fewest positive and the fewest negative records of the test split, whose AUROC is reported
# with a bootstrap interval. A resample of n records misses all k of a class with probability
# (1 - k/n)^n < e^-k; k >= 5 keeps that below 1% (e^-5 = 0.7%), so the interval rests on at
# least 99% of its resamples. Below it a tiny table gave a 2-record test split reporting
# "AUROC 0.000 (0.000-0.000)". A floor derived from that bound, not a sufficiency (validation
# studies of clinical models ask for 100 events or more), and not tuned on any data set.
MIN_PER_CLASS = 5
# Every other part (train, validation, attack pools) needs both classes: no model can be fitted,
# calibrated or early-stopped on one. No interval is reported on them, so one of each suffices
# (the public MIMIC-III demo, 81 stays, leaves 4 deaths in validation).
MIN_PER_CLASS_OTHER_PARTS = 1
EVALUATED_PART = "test"


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
    min_per_class: int = MIN_PER_CLASS,
) -> Splits:
    """Assign each privacy unit to one part; stratified on whether the unit has a positive record.

    `extra` names further parts and their unit fractions; `train` gets whatever remains. A test
    split with fewer than `min_per_class` (default `MIN_PER_CLASS`) positive or negative records,
    or any other part without both classes, is refused (too little to train on or to measure),
    naming every such part and its counts; a caller that keeps only `train` may pass
    `min_per_class=1` (both classes still required everywhere).
    """
    fractions = {"test": test_fraction, "val": val_fraction, **(extra or {})}
    if any(not 0 < f < 1 for f in fractions.values()) or sum(fractions.values()) >= 1:
        raise ConfigError(f"split fractions must be in (0, 1) and sum below 1, got {fractions}")
    parts = _parts_by_unit(dataset, fractions, rest="train", seed=seed)
    check_class_counts(parts, dataset_name=dataset.name, min_per_class=min_per_class)
    return Splits(parts=parts, seed=seed)


def split_train_val(dataset: TabularDataset, *, val_fraction: float, seed: int) -> Splits:
    """Training and validation parts only (the scikit-learn API, `medpriv.classifiers`: every
    unit not held out trains): `val_fraction` of each stratum's units, at least one and never
    all of them, so that a small table keeps both classes on both sides (refused otherwise)."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"validation_fraction must be in (0, 1), got {val_fraction}")
    parts = _parts_by_unit(dataset, {"val": val_fraction}, rest="train", seed=seed, least=1)
    check_class_counts(parts, dataset_name=dataset.name, min_per_class=1)
    return Splits(parts=parts, seed=seed)


def _parts_by_unit(
    dataset: TabularDataset,
    fractions: Mapping[str, float],
    *,
    rest: str,
    seed: int,
    least: int = 0,
) -> dict[str, TabularDataset]:
    """Each unit to one part: `fractions` of the units of each stratum (whether the unit has a
    positive record), the remainder to `rest`; seeded. With `least`, a part takes at least
    that many units of a stratum and leaves at least that many to the others."""
    units, unit_index = np.unique(dataset.unit_ids, return_inverse=True)
    unit_label = pd.Series(dataset.labels).groupby(unit_index).max().to_numpy()
    rng = np.random.default_rng(seed)
    assignment = np.full(len(units), rest, dtype=object)
    for stratum in (0, 1):
        members = rng.permutation(np.flatnonzero(unit_label == stratum))
        start = 0
        for name, fraction in fractions.items():
            count = round(fraction * len(members))
            if least:
                count = max(0, min(len(members) - start - least, max(least, count)))
            assignment[members[start : start + count]] = name
            start += count
    row_part = assignment[unit_index]
    return {name: dataset.subset(np.flatnonzero(row_part == name)) for name in (rest, *fractions)}


def split_with_members(
    dataset: TabularDataset,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
) -> Splits:
    """For a model fitted elsewhere (`dataset.member_flags`): `train` is the units it was
    trained on; the other units are split into `val` and `test` in the ratio of the two
    fractions, stratified like `split_by_unit`. Every method of the run trains on the same
    `train`, and membership attacks read `test` as the patients the model never saw."""
    if dataset.member_flags is None:
        raise ConfigError("split_with_members needs a dataset with member flags")
    members = np.asarray(dataset.member_flags, dtype=bool)
    outside = dataset.subset(np.flatnonzero(~members))
    share = test_fraction / (val_fraction + test_fraction)
    parts = {
        "train": dataset.subset(np.flatnonzero(members)),
        **_parts_by_unit(outside, {"test": share}, rest="val", seed=seed),
    }
    check_class_counts(parts, dataset_name=dataset.name, min_per_class=min_per_class)
    return Splits(parts=parts, seed=seed)


def check_class_counts(
    parts: Mapping[str, TabularDataset], *, dataset_name: str, min_per_class: int
) -> None:
    """Refuse when the test part has fewer than `min_per_class` positive or negative records, or
    another part lacks a class (counts only in the message, never a record)."""
    least = max(MIN_PER_CLASS_OTHER_PARTS, int(min_per_class))
    short = []
    for name, part in parts.items():
        positives = int(np.sum(part.labels == 1))
        negatives = len(part) - positives
        needed = least if name == EVALUATED_PART else MIN_PER_CLASS_OTHER_PARTS
        if min(positives, negatives) < needed:
            single = (
                " (empty)"
                if not len(part)
                else " (a single class)"
                if not min(positives, negatives)
                else ""
            )
            short.append(f"{name} {positives} positive / {negatives} negative{single}")
    if short:
        raise TooLittleDataError(
            f"too little to measure: the {EVALUATED_PART} split needs at least {least} positive "
            f"and {least} negative records and every other split both classes, and "
            f"{dataset_name} gives fewer ({'; '.join(short)}); use a larger cohort or other "
            "split fractions"
        )
