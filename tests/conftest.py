"""Shared fixtures: a small labelled dataset with signal, and the real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpriv.data.dataset import Schema, TabularDataset

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """../shared/data next to the repository, or $MEDPRIV_SHARED_DATA."""
    return Path(os.environ.get("MEDPRIV_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def insurance_csv() -> Path:
    path = shared_data_dir() / "insurance" / "insurance.csv"
    if not path.is_file():
        pytest.skip(f"real data absent: {path} (set MEDPRIV_SHARED_DATA to ../shared/data)")
    return path


@pytest.fixture
def mimic_demo_dir() -> Path:
    path = shared_data_dir() / "mimic-iii-demo"
    if not path.is_dir():
        pytest.skip(f"real data absent: {path} (set MEDPRIV_SHARED_DATA to ../shared/data)")
    return path


def make_toy_dataset(n: int = 600, *, seed: int = 0, records_per_unit: int = 1) -> TabularDataset:
    """Two informative numeric features, one noise feature with gaps, one categorical."""
    rng = np.random.default_rng(seed)
    x1, x2, noise = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    group = rng.choice(["a", "b", "c"], size=n)
    logit = 1.8 * x1 - 1.2 * x2 + (group == "c") * 0.8 - 1.0
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    noise[rng.random(n) < 0.1] = np.nan
    features = pd.DataFrame({"x1": x1, "x2": x2, "noise": noise, "group": group})
    return TabularDataset(
        name="toy",
        features=features,
        labels=labels,
        unit_ids=np.arange(n) // records_per_unit,
        schema=Schema(numeric=("x1", "x2", "noise"), categorical=("group",), sensitive=("group",)),
        site_ids=np.where(np.arange(n) % 3 == 0, "north", "south").astype(object),
    )


@pytest.fixture
def toy_dataset() -> TabularDataset:
    return make_toy_dataset()
