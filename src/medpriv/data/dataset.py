"""`TabularDataset`: the one cohort type every later stage takes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medpriv.errors import DataSchemaError


@dataclass(frozen=True)
class Schema:
    """Which feature columns are numeric, categorical, sensitive (attribute-inference targets)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    sensitive: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


@dataclass(frozen=True)
class CohortStep:
    """One line of the cohort flow: a rule and how many records it removed."""

    rule: str
    excluded: int
    remaining: int


def count_missing_ids(ids: np.ndarray) -> int:
    """How many ids are missing (None, NaN) or blank text; integer ids never are."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iub":
        return 0
    if ids.dtype.kind == "f":
        return int(np.isnan(ids).sum())
    values = pd.Series(ids, dtype=object)
    return int((values.isna() | (values.astype(str).str.strip() == "")).sum())


@dataclass(frozen=True)
class TabularDataset:
    """Features (one row per record), a binary label, the privacy unit and an optional site.

    `unit_ids` names the privacy unit (the patient); `site_ids` the hospital or care unit;
    `member_flags` (optional) marks the records a model fitted elsewhere was trained on
    (`--fitted`: they become its training split, its membership ground truth).
    `cohort_flow` records how the rows were selected; `notes` are human-readable remarks
    (duplicates dropped, top-coded ages, ...) that end up in results.json.
    """

    name: str
    features: pd.DataFrame
    labels: np.ndarray
    unit_ids: np.ndarray
    schema: Schema
    site_ids: np.ndarray | None = None
    unit_name: str = "patient"
    label_name: str = "label"
    cohort_flow: tuple[CohortStep, ...] = ()
    notes: tuple[str, ...] = field(default=())
    member_flags: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.features)
        problems = []
        if len(self.labels) != n or len(self.unit_ids) != n:
            problems.append(f"features ({n} rows), labels and unit ids must have equal length")
        elif missing_units := count_missing_ids(self.unit_ids):
            problems.append(
                f"{missing_units} records have no {self.unit_name} id (missing or blank); every "
                "record needs its privacy unit: drop those records, never merge them into one unit"
            )
        if self.site_ids is not None and len(self.site_ids) != n:
            problems.append("site ids must have one entry per row")
        if self.member_flags is not None and len(self.member_flags) != n:
            problems.append("member flags must have one entry per row")
        missing = [c for c in self.schema.columns if c not in self.features.columns]
        if missing:
            problems.append(f"schema names columns absent from the features: {missing}")
        extra = [c for c in self.features.columns if c not in self.schema.columns]
        if extra:
            problems.append(f"feature columns missing from the schema: {extra}")
        bad_sensitive = [c for c in self.schema.sensitive if c not in self.schema.columns]
        if bad_sensitive:
            problems.append(f"sensitive columns are not features: {bad_sensitive}")
        if n and not np.isin(self.labels, (0, 1)).all():
            problems.append("labels must be 0 or 1")
        if problems:
            raise DataSchemaError("; ".join(problems))

    def __len__(self) -> int:
        return len(self.features)

    @property
    def n_units(self) -> int:
        return int(pd.unique(self.unit_ids).size)

    @property
    def n_sites(self) -> int:
        return 0 if self.site_ids is None else int(pd.unique(self.site_ids).size)

    @property
    def positive_rate(self) -> float:
        return float(np.mean(self.labels)) if len(self) else 0.0

    def subset(self, rows: np.ndarray) -> TabularDataset:
        """The rows at positional indices `rows`, as a new dataset (cohort flow kept)."""
        rows = np.asarray(rows)
        return TabularDataset(
            name=self.name,
            features=self.features.iloc[rows].reset_index(drop=True),
            labels=self.labels[rows],
            unit_ids=self.unit_ids[rows],
            schema=self.schema,
            site_ids=None if self.site_ids is None else self.site_ids[rows],
            unit_name=self.unit_name,
            label_name=self.label_name,
            cohort_flow=self.cohort_flow,
            notes=self.notes,
            member_flags=None if self.member_flags is None else self.member_flags[rows],
        )

    def summary(self) -> dict:
        """The `dataset` block of results.json."""
        return {
            "name": self.name,
            "n_records": len(self),
            "n_units": self.n_units,
            "n_features": len(self.schema.columns),
            "positive_rate": round(self.positive_rate, 6),
            "n_sites": self.n_sites,
            "unit": self.unit_name,
            "label": self.label_name,
            "numeric_features": list(self.schema.numeric),
            "categorical_features": list(self.schema.categorical),
            "sensitive_features": list(self.schema.sensitive),
            "cohort_flow": [
                {"rule": s.rule, "excluded": s.excluded, "remaining": s.remaining}
                for s in self.cohort_flow
            ],
            "notes": list(self.notes),
            "site_sizes": self.site_sizes(),
        }

    def site_sizes(self) -> dict[str, int]:
        """Records per site (aggregate counts; empty without sites)."""
        if self.site_ids is None:
            return {}
        names, counts = np.unique(np.asarray(self.site_ids).astype(str), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def concat(parts: list[TabularDataset]) -> TabularDataset:
    """Rows of several datasets with the same schema, in order (cohort flow of the first)."""
    if not parts:
        raise ValueError("nothing to concatenate")
    first = parts[0]
    if any(p.schema != first.schema for p in parts):
        raise DataSchemaError("only datasets with the same schema can be concatenated")
    sites = [p.site_ids for p in parts]
    flags = [p.member_flags for p in parts]
    return TabularDataset(
        name=first.name,
        features=pd.concat([p.features for p in parts], ignore_index=True),
        labels=np.concatenate([p.labels for p in parts]),
        unit_ids=np.concatenate([p.unit_ids for p in parts]),
        schema=first.schema,
        site_ids=None if any(s is None for s in sites) else np.concatenate(sites),
        unit_name=first.unit_name,
        label_name=first.label_name,
        cohort_flow=first.cohort_flow,
        notes=first.notes,
        member_flags=None if any(f is None for f in flags) else np.concatenate(flags),
    )
