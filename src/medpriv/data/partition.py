"""Federated partitions of a training set into clients (hospitals), always by privacy unit.

Specs: `site` (one client per `site_id`: care units in the synthetic cohort and MIMIC, a hospital
column via `--site-column` for any CSV), `iid:K` (units dealt at random into K clients) and
`dirichlet:K:ALPHA` (label skew: each client's share of each class drawn from Dirichlet(ALPHA);
small ALPHA = strong skew). Clients below `min_size` records are merged (site: into the smallest
other site until large enough) or, for synthetic partitions, dropped — with a note saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medpriv.data.dataset import TabularDataset
from medpriv.errors import ConfigError

DEFAULT_MIN_CLIENT_SIZE = 20


@dataclass(frozen=True)
class PartitionSpec:
    kind: str  # "site" | "iid" | "dirichlet"
    clients: int | None = None
    alpha: float | None = None

    @classmethod
    def parse(cls, text: str) -> PartitionSpec:
        """`site`, `iid:K` or `dirichlet:K:ALPHA`; a clear error otherwise."""
        parts = text.strip().split(":")
        usage = "partition must be 'site', 'iid:K' or 'dirichlet:K:ALPHA' (e.g. dirichlet:10:0.5)"
        try:
            if parts == ["site"]:
                return cls("site")
            if parts[0] == "iid" and len(parts) == 2:
                spec = cls("iid", clients=int(parts[1]))
            elif parts[0] == "dirichlet" and len(parts) == 3:
                spec = cls("dirichlet", clients=int(parts[1]), alpha=float(parts[2]))
            else:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{usage}; got {text!r}") from None
        if spec.clients is None or spec.clients < 1:
            raise ConfigError(f"{usage}; the number of clients must be >= 1, got {text!r}")
        if spec.alpha is not None and not (spec.alpha > 0 and math.isfinite(spec.alpha)):
            raise ConfigError(f"{usage}; ALPHA must be a positive number, got {text!r}")
        return spec

    def __str__(self) -> str:
        if self.kind == "site":
            return "site"
        if self.kind == "iid":
            return f"iid:{self.clients}"
        return f"dirichlet:{self.clients}:{self.alpha:g}"


@dataclass(frozen=True)
class Partition:
    """Client name -> row indices into the partitioned dataset (disjoint, by unit)."""

    clients: dict[str, np.ndarray]
    notes: tuple[str, ...] = ()

    def sizes(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.clients.items()}


def partition(
    dataset: TabularDataset,
    spec: str | PartitionSpec,
    *,
    seed: int,
    min_size: int = DEFAULT_MIN_CLIENT_SIZE,
) -> Partition:
    """Split `dataset`'s rows into clients; every unit's rows go to exactly one client."""
    spec = spec if isinstance(spec, PartitionSpec) else PartitionSpec.parse(spec)
    if len(dataset) == 0:
        raise ConfigError("cannot partition an empty training set")
    units, unit_index = np.unique(dataset.unit_ids, return_inverse=True)
    rng = np.random.default_rng(seed)
    if spec.kind == "site":
        unit_client = _site_of_units(dataset, unit_index, len(units))
        names = sorted({str(site) for site in unit_client})
        groups = {name: np.flatnonzero(unit_client == name) for name in names}
        groups, notes = _merge_small_sites(groups, unit_index, min_size)
    else:
        unit_labels = _unit_labels(dataset.labels, unit_index, len(units))
        assert spec.clients is not None
        if spec.kind == "iid":
            assignment = rng.permutation(len(units)) % spec.clients
        else:
            assert spec.alpha is not None
            assignment = _dirichlet_assignment(unit_labels, spec.clients, spec.alpha, rng)
        width = len(str(spec.clients - 1))
        groups = {
            f"client{c:0{width}d}": np.flatnonzero(assignment == c) for c in range(spec.clients)
        }
        groups, notes = _drop_small_clients(groups, unit_index, min_size)
    if not groups:
        raise ConfigError(
            f"partition {spec} leaves no client with at least {min_size} records; lower "
            "--min-client-size or use fewer clients"
        )
    clients = {name: _rows_of_units(unit_index, members) for name, members in groups.items()}
    return Partition(clients=clients, notes=tuple(notes))


def _site_of_units(dataset: TabularDataset, unit_index: np.ndarray, n_units: int) -> np.ndarray:
    if dataset.site_ids is None:
        raise ConfigError(
            f"partition 'site' needs site ids, and {dataset.name} has none; pass --site-column "
            "for a CSV, or use iid:K / dirichlet:K:ALPHA"
        )
    sites = np.asarray(dataset.site_ids).astype(str)
    unit_site = np.empty(n_units, dtype=object)
    unit_site[unit_index] = sites
    mixed = np.unique(unit_index[sites != unit_site[unit_index]])
    if len(mixed):
        raise ConfigError(
            f"{len(mixed)} privacy units have records at several sites; a site partition needs "
            "each unit at one site (keep one record per unit, or partition iid:K)"
        )
    return unit_site.astype(str)


def _unit_labels(labels: np.ndarray, unit_index: np.ndarray, n_units: int) -> np.ndarray:
    """A unit's label for stratification: positive if any of its records is positive."""
    positive = np.bincount(unit_index, weights=np.asarray(labels, float), minlength=n_units)
    return (positive > 0).astype(int)


def _dirichlet_assignment(
    unit_labels: np.ndarray, k: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Per class, shares over the k clients from Dirichlet(alpha); units dealt accordingly."""
    assignment = np.empty(len(unit_labels), dtype=int)
    for label in np.unique(unit_labels):
        members = rng.permutation(np.flatnonzero(unit_labels == label))
        shares = rng.dirichlet(np.full(k, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(int)
        for client, chunk in enumerate(np.split(members, cuts)):
            assignment[chunk] = client
    return assignment


def _records(unit_index: np.ndarray, members: np.ndarray) -> int:
    return int(np.isin(unit_index, members).sum())


def _merge_small_sites(
    groups: dict[str, np.ndarray], unit_index: np.ndarray, min_size: int
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Merge each too-small site into the smallest other site, until all are large enough."""
    notes = []
    groups = dict(groups)
    while len(groups) > 1:
        sizes = {name: _records(unit_index, members) for name, members in groups.items()}
        small = min(sizes, key=lambda name: (sizes[name], name))
        if sizes[small] >= min_size:
            break
        into = min((n for n in sizes if n != small), key=lambda name: (sizes[name], name))
        merged = f"{into}+{small}"
        groups[merged] = np.concatenate([groups.pop(into), groups.pop(small)])
        notes.append(
            f"site {small!r} has {sizes[small]} records (< {min_size}); merged into {into!r}"
        )
    return groups, notes


def _drop_small_clients(
    groups: dict[str, np.ndarray], unit_index: np.ndarray, min_size: int
) -> tuple[dict[str, np.ndarray], list[str]]:
    kept, dropped = {}, []
    for name, members in groups.items():
        if _records(unit_index, members) >= min_size:
            kept[name] = members
        else:
            dropped.append(f"{name} ({_records(unit_index, members)})")
    notes = []
    if dropped:
        notes.append(
            f"{len(dropped)} clients below {min_size} records dropped: {', '.join(dropped)}"
        )
    return kept, notes


def _rows_of_units(unit_index: np.ndarray, members: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isin(unit_index, members))
