"""Any CSV with a binary outcome: target by value or threshold, categorical columns detected."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from medpriv.data.dataset import CohortStep, Schema, TabularDataset
from medpriv.errors import DataSchemaError, DataSourceError

MAX_CATEGORY_LEVELS = 100


def read_table(path: Path) -> pd.DataFrame:
    """Read a UTF-8 CSV, refusing empty files, other encodings and duplicate column names."""
    path = Path(path)
    if not path.exists():
        raise DataSourceError(f"CSV file not found: {path}")
    if not path.is_file():
        raise DataSourceError(f"{path} is not a file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataSourceError(
            f"{path} is not UTF-8 (byte {exc.start}); re-save it as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {path.name} > fixed.csv"
        ) from None
    if not text.strip():
        raise DataSourceError(f"{path} is empty")
    header = next(csv.reader(io.StringIO(text)))
    names = [h.strip() for h in header]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataSchemaError(f"{path} has duplicate column names {duplicates}; rename them")
    if "" in names:
        raise DataSchemaError(f"{path} has an unnamed column; give every column a header")
    try:
        frame = pd.read_csv(io.StringIO(text), skipinitialspace=True)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataSourceError(f"cannot parse {path}: {exc}") from None
    frame.columns = names
    if frame.empty:
        raise DataSourceError(f"{path} has a header but no rows")
    return frame


def make_labels(
    column: pd.Series, *, target: str, positive: str | None, threshold: float | None
) -> tuple[np.ndarray, str]:
    """0/1 labels from the target column and a human-readable label name."""
    if positive is not None and threshold is not None:
        raise DataSchemaError("pass either --positive or --threshold, not both")
    if threshold is not None:
        if not pd.api.types.is_numeric_dtype(column):
            raise DataSchemaError(
                f"column {target!r} is not numeric, so --threshold cannot apply; "
                "pass --positive VALUE for a categorical target"
            )
        return (column.to_numpy(dtype=float) > threshold).astype(
            np.int64
        ), f"{target} > {threshold:g}"
    values = column.astype(str).str.strip()
    if positive is not None:
        if not (values == str(positive)).any():
            seen = sorted(values.unique())[:10]
            raise DataSchemaError(
                f"--positive {positive!r} never occurs in {target!r}; values seen: {seen}"
            )
        return (values == str(positive)).to_numpy().astype(np.int64), f"{target} = {positive}"
    levels = set(values.unique())
    if len(levels) == 1:
        raise DataSchemaError(
            f"target {target!r} has a single class ({next(iter(levels))!r} in every row); "
            "a binary outcome needs both classes"
        )
    for pair, pos in (
        ({"0", "1"}, "1"),
        ({"0.0", "1.0"}, "1.0"),
        ({"False", "True"}, "True"),
        ({"no", "yes"}, "yes"),
        ({"No", "Yes"}, "Yes"),
    ):
        if levels == pair:
            return (values == pos).to_numpy().astype(np.int64), f"{target} = {pos}"
    raise DataSchemaError(
        f"target {target!r} is not binary ({len(levels)} values); "
        "pass --positive VALUE or --threshold X"
    )


def load_csv(
    path: Path,
    *,
    target: str | None,
    positive: str | None = None,
    threshold: float | None = None,
    unit_column: str | None = None,
    site_column: str | None = None,
    sensitive: tuple[str, ...] = (),
    drop: tuple[str, ...] = (),
    keep_duplicates: bool = False,
) -> TabularDataset:
    """Load a CSV cohort; every problem with the flags is gathered and reported at once."""
    if not target:
        raise DataSchemaError("a CSV source needs --target COLUMN (the binary outcome)")
    frame = read_table(Path(path))
    named = {
        "--target": [target],
        "--unit-column": [unit_column],
        "--site-column": [site_column],
        "--sensitive": list(sensitive),
        "--drop": list(drop),
    }
    problems = [
        f"{flag} column {c!r} not found"
        for flag, cols in named.items()
        for c in cols
        if c is not None and c not in frame.columns
    ]
    if problems:
        raise DataSchemaError("; ".join(problems) + f"; columns are {list(frame.columns)}")
    notes, flow = [], [CohortStep("rows read", 0, len(frame))]

    frame = frame.drop(columns=list(drop))
    missing_target = frame[target].isna()
    if missing_target.any():
        frame = frame.loc[~missing_target]
        flow.append(CohortStep("target missing", int(missing_target.sum()), len(frame)))
    duplicated = frame.duplicated()
    if duplicated.any():
        n_dup = int(duplicated.sum())
        if keep_duplicates:
            notes.append(
                f"WARNING: {n_dup} exact duplicate rows kept (--keep-duplicates); "
                "membership ground truth for attacks is ambiguous"
            )
        else:
            frame = frame.loc[~duplicated]
            flow.append(CohortStep("exact duplicate row", n_dup, len(frame)))
            notes.append(f"{n_dup} exact duplicate rows dropped")
    frame = frame.reset_index(drop=True)

    labels, label_name = make_labels(
        frame[target], target=target, positive=positive, threshold=threshold
    )
    if len(np.unique(labels)) < 2:
        raise DataSchemaError(
            f"target {label_name!r} has a single class ({int(labels[0])} for all rows); "
            "check --positive/--threshold"
        )
    if unit_column:
        unit_ids = frame[unit_column].to_numpy()
        if pd.Series(unit_ids).duplicated().any():
            notes.append(
                f"several records per unit in {unit_column!r}: splits keep each unit on one side, "
                "but per-record privacy guarantees do not hold per unit"
            )
    else:
        unit_ids = np.arange(len(frame))
        notes.append("no --unit-column: each row is its own privacy unit")
    site_ids = frame[site_column].astype(str).to_numpy(dtype=object) if site_column else None
    features = frame.drop(columns=[c for c in (target, unit_column, site_column) if c])
    schema = infer_schema(features, sensitive=sensitive)
    return TabularDataset(
        name=Path(path).stem,
        features=features[list(schema.columns)],
        labels=labels,
        unit_ids=unit_ids,
        schema=schema,
        site_ids=site_ids,
        unit_name=unit_column or "record",
        label_name=label_name,
        cohort_flow=tuple(flow),
        notes=tuple(notes),
    )


def infer_schema(features: pd.DataFrame, *, sensitive: tuple[str, ...] = ()) -> Schema:
    """Numeric columns stay numeric; everything else is categorical. Empty columns are errors."""
    problems, numeric, categorical = [], [], []
    for column in features.columns:
        values = features[column]
        if values.isna().all():
            problems.append(f"feature {column!r} is empty in every row; pass --drop {column}")
        elif pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            levels = values.nunique(dropna=True)
            if levels > MAX_CATEGORY_LEVELS and levels > 0.5 * len(values):
                problems.append(
                    f"categorical feature {column!r} has {levels} distinct values "
                    "(an identifier?); "
                    f"pass --drop {column} or --unit-column {column}"
                )
            categorical.append(column)
        else:
            numeric.append(column)
    if problems:
        raise DataSchemaError("; ".join(problems))
    return Schema(
        numeric=tuple(numeric), categorical=tuple(categorical), sensitive=tuple(sensitive)
    )
