"""Federated partitions: by privacy unit, site / iid / Dirichlet label skew, small clients."""

from __future__ import annotations

import numpy as np
import pytest

from medpriv.data.partition import PartitionSpec, partition
from medpriv.errors import ConfigError
from tests.conftest import make_toy_dataset


def _check_disjoint_cover(dataset, parts) -> None:
    rows = np.concatenate(list(parts.clients.values()))
    assert len(rows) == len(np.unique(rows))
    unit_client = {}
    for name, client_rows in parts.clients.items():
        for unit in np.unique(dataset.unit_ids[client_rows]):
            assert unit_client.setdefault(unit, name) == name  # a unit never spans clients


def test_site_partition_has_one_client_per_site():
    dataset = make_toy_dataset(600)
    parts = partition(dataset, "site", seed=0)
    assert sorted(parts.clients) == ["north", "south"]
    assert sum(parts.sizes().values()) == len(dataset)
    for name, rows in parts.clients.items():
        assert set(dataset.site_ids[rows]) == {name}
    _check_disjoint_cover(dataset, parts)


def test_small_sites_are_merged_with_a_note():
    dataset = make_toy_dataset(600)
    sites = dataset.site_ids.copy()
    sites[:10] = "tiny"
    dataset = type(dataset)(**{**dataset.__dict__, "site_ids": sites})
    parts = partition(dataset, "site", seed=0, min_size=20)
    assert len(parts.clients) == 2 and any("tiny" in name for name in parts.clients)
    assert "site 'tiny' has 10 records (< 20)" in parts.notes[0]
    assert sum(parts.sizes().values()) == len(dataset)


def test_iid_partition_keeps_each_unit_whole_and_balances_sizes():
    dataset = make_toy_dataset(800, records_per_unit=2)
    parts = partition(dataset, "iid:4", seed=1)
    assert sorted(parts.clients) == ["client0", "client1", "client2", "client3"]
    assert max(parts.sizes().values()) - min(parts.sizes().values()) <= 2
    _check_disjoint_cover(dataset, parts)
    assert partition(dataset, "iid:4", seed=1).sizes() == parts.sizes()


def test_dirichlet_partition_skews_labels_and_drops_tiny_clients():
    dataset = make_toy_dataset(2000)
    iid = partition(dataset, "iid:5", seed=0)
    skewed = partition(dataset, "dirichlet:5:0.1", seed=0, min_size=1)

    def spread(parts) -> float:
        rates = [dataset.labels[rows].mean() for rows in parts.clients.values() if len(rows)]
        return float(np.ptp(rates))

    assert spread(skewed) > 0.4 > 0.2 > spread(iid)
    _check_disjoint_cover(dataset, skewed)
    few = partition(dataset, "dirichlet:20:0.05", seed=0, min_size=50)
    assert len(few.clients) < 20 and "clients below 50 records dropped" in few.notes[0]


@pytest.mark.parametrize(
    "text", ["iid", "dirichlet:3", "sites", "iid:0", "dirichlet:3:-1", "iid:x"]
)
def test_bad_partition_specs_name_the_valid_forms(text: str):
    with pytest.raises(ConfigError, match="'site', 'iid:K' or 'dirichlet:K:ALPHA'"):
        PartitionSpec.parse(text)


def test_site_partition_needs_site_ids():
    dataset = make_toy_dataset(100)
    dataset = type(dataset)(**{**dataset.__dict__, "site_ids": None})
    with pytest.raises(ConfigError, match="--site-column"):
        partition(dataset, "site", seed=0)
