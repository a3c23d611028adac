"""Write a cohort table to CSV (features, label, unit and site columns)."""

from __future__ import annotations

from pathlib import Path

from medpriv.data.dataset import TabularDataset
from medpriv.errors import DataSchemaError
from medpriv.files import output_file, write_atomic

COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip"}


def write_cohort_csv(dataset: TabularDataset, path: Path) -> Path:
    """One row per record: `unit_id`, `site_id` (if any), the features and `label`; `path` is
    checked first and written atomically."""
    path = output_file(Path(path), option="--out", example="cohort.csv")
    reserved = {"unit_id", "site_id", "label"} & set(dataset.features.columns)
    if reserved:
        raise DataSchemaError(f"feature columns clash with output columns: {sorted(reserved)}")
    frame = dataset.features.copy()
    frame.insert(0, "unit_id", dataset.unit_ids)
    if dataset.site_ids is not None:
        frame.insert(1, "site_id", dataset.site_ids)
    frame["label"] = dataset.labels
    compression = COMPRESSION.get(path.suffix.lower())  # a handle hides the name pandas infers from
    return write_atomic(
        path, lambda handle: frame.to_csv(handle, index=False, compression=compression)
    )
