"""Write a cohort table to CSV (features, label, unit and site columns)."""

from __future__ import annotations

from pathlib import Path

from medpriv.data.dataset import TabularDataset
from medpriv.errors import DataSchemaError


def write_cohort_csv(dataset: TabularDataset, path: Path) -> Path:
    """One row per record: `unit_id`, `site_id` (if any), the features and `label`."""
    reserved = {"unit_id", "site_id", "label"} & set(dataset.features.columns)
    if reserved:
        raise DataSchemaError(f"feature columns clash with output columns: {sorted(reserved)}")
    frame = dataset.features.copy()
    frame.insert(0, "unit_id", dataset.unit_ids)
    if dataset.site_ids is not None:
        frame.insert(1, "site_id", dataset.site_ids)
    frame["label"] = dataset.labels
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
