"""Any CSV with a binary outcome: target by value or threshold, categorical columns detected."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from medpriv.data.dataset import CohortStep, Schema, TabularDataset
from medpriv.errors import DataSchemaError, DataSourceError, raise_all

MAX_CATEGORY_LEVELS = 100
# An error lists at most this many column names (a wide table's header would bury the fix).
MAX_NAMES_SHOWN = 30
# Larger magnitudes are overflow or sentinel codes, not measurements: squares and sums of such
# values overflow float64 during standardization, so a column holding one is refused.
MAX_ABS_VALUE = 1e100


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
        shown = "" if looks_headerless(names) else f" {duplicates}"
        raise DataSchemaError(
            f"{path} has duplicate column names{shown}; rename them "
            "(or add a header row, if the first row is data)"
        )
    if "" in names:
        raise DataSchemaError(f"{path} has an unnamed column; give every column a header")
    if len(names) == 1 and any(sep in names[0] for sep in (";", "\t", "|")):
        raise DataSchemaError(
            f"{path} reads as a single column: medpriv reads comma-separated files; re-save "
            "it with commas between the columns"
        )
    try:
        frame = pd.read_csv(io.StringIO(text), skipinitialspace=True)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataSourceError(f"cannot parse {path}: {exc}") from None
    frame.columns = names
    if frame.empty:
        raise DataSourceError(f"{path} has a header but no rows")
    return frame


def looks_headerless(names: list[str]) -> bool:
    """True when a "header" holds a number: the file's first row is probably data, and its
    "names" are then a patient's values, never to be shown."""
    for name in names:
        try:
            float(name)
        except ValueError:
            continue
        return True
    return False


def describe_columns(names: list[str]) -> str:
    """'columns are [...]' (at most `MAX_NAMES_SHOWN`), or, when the first row looks like data,
    a hint that names none of them."""
    if looks_headerless(names):
        return (
            f"the first row holds numbers, so it is probably data, not a header: add a header "
            f"row naming the {len(names)} columns"
        )
    more = f" and {len(names) - MAX_NAMES_SHOWN} more" if len(names) > MAX_NAMES_SHOWN else ""
    return f"columns are {names[:MAX_NAMES_SHOWN]}{more}"


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
            raise DataSchemaError(
                f"--positive {positive!r} never occurs in {target!r} "
                f"({values.nunique()} distinct values); check the spelling"
            )
        return (values == str(positive)).to_numpy().astype(np.int64), f"{target} = {positive}"
    levels = set(values.unique())
    if len(levels) == 1:
        raise DataSchemaError(
            f"target {target!r} has a single class (the same value in every row); "
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
    member_column: str | None = None,
) -> TabularDataset:
    """Load a CSV cohort; every problem with the flags is gathered and reported at once.
    `member_column` (yes/no per record, the same for every record of a unit) marks the records
    a model fitted elsewhere was trained on; it is not a feature."""
    if not target:
        raise DataSchemaError("a CSV source needs --target COLUMN (the binary outcome)")
    frame = read_table(Path(path))
    named = {
        "--target": [target],
        "--unit-column": [unit_column],
        "--site-column": [site_column],
        "--member-column": [member_column],
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
        raise DataSchemaError("; ".join(problems) + f"; {describe_columns(list(frame.columns))}")
    raise_all(_role_conflicts(named), DataSchemaError)
    notes, flow = [], [CohortStep("rows read", 0, len(frame))]

    frame = frame.drop(columns=list(drop))
    frame, inf_notes = _infinite_as_missing(frame)
    notes += inf_notes
    for column, flag, rule in (
        (target, "--target", "target missing"),
        (unit_column, "--unit-column", f"no {unit_column} id"),
        (site_column, "--site-column", f"no {site_column} id"),
        (member_column, "--member-column", f"no {member_column} flag"),
    ):
        if column is None:
            continue
        missing = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if missing.all():
            raise DataSchemaError(
                f"{flag} column {column!r} has no value in any row (blank, missing or infinite)"
            )
        if missing.any():
            frame = frame.loc[~missing]
            flow.append(CohortStep(rule, int(missing.sum()), len(frame)))
            if column != target:
                notes.append(
                    f"{int(missing.sum())} rows without a {column!r} value dropped "
                    "(never merged into one unit or site)"
                )
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
        unit_ids = _whole_ids(frame[unit_column].to_numpy())
        if pd.Series(unit_ids).duplicated().any():
            notes.append(
                f"several records per unit in {unit_column!r}: splits keep each unit on one side, "
                "but per-record privacy guarantees do not hold per unit"
            )
    else:
        unit_ids = np.arange(len(frame))
        notes.append("no --unit-column: each row is its own privacy unit")
    site_ids = frame[site_column].astype(str).to_numpy(dtype=object) if site_column else None
    member_flags = None if not member_column else member_flags_of(frame[member_column], unit_ids)
    roles = (target, unit_column, site_column, member_column)
    features = frame.drop(columns=[c for c in roles if c])
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
        member_flags=member_flags,
    )


TRUE_WORDS = frozenset({"1", "1.0", "true", "yes", "y", "t"})
FALSE_WORDS = frozenset({"0", "0.0", "false", "no", "n", "f"})


def member_flags_of(values: pd.Series, unit_ids: np.ndarray) -> np.ndarray:
    """--member-column as booleans: yes/no words or 1/0, one value per unit (counts only in
    errors, never a value)."""
    words = values.astype(str).str.strip().str.lower()
    unknown = ~(words.isin(TRUE_WORDS) | words.isin(FALSE_WORDS))
    if unknown.any():
        raise DataSchemaError(
            f"--member-column {values.name!r}: {int(unknown.sum())} rows are neither yes/true/1 "
            "nor no/false/0"
        )
    flags = words.isin(TRUE_WORDS).to_numpy()
    mixed = pd.Series(flags).groupby(unit_ids).nunique().gt(1)
    if mixed.any():
        raise DataSchemaError(
            f"--member-column {values.name!r}: {int(mixed.sum())} units have records both in and "
            "out of the model's training set; a unit is trained on whole or not at all"
        )
    if flags.all() or not flags.any():
        raise DataSchemaError(
            f"--member-column {values.name!r} marks {'every' if flags.all() else 'no'} record: "
            "the audit needs the model's training patients and patients it never saw"
        )
    return flags


def _whole_ids(ids: np.ndarray) -> np.ndarray:
    """Numeric ids read as floats (a blank in the column makes pandas do that) back as ints
    when every one is a whole number that a float holds exactly."""
    if ids.dtype.kind != "f" or not len(ids):
        return ids
    if np.all(np.isfinite(ids)) and np.all(ids == np.round(ids)) and np.abs(ids).max() < 2**53:
        return ids.astype(np.int64)
    return ids


def _role_conflicts(named: dict[str, list[str | None]]) -> list[str]:
    """Problems when one column is given two roles (target, unit, site) or a role and --drop."""
    roles = {flag: named[flag][0] for flag in ("--target", "--unit-column", "--site-column")}
    problems = []
    seen: dict[str, str] = {}
    for flag, column in roles.items():
        if column is None:
            continue
        if column in seen:
            problems.append(f"column {column!r} is given to both {seen[column]} and {flag}")
        seen.setdefault(column, flag)
        if column in named["--drop"]:
            problems.append(f"column {column!r} is given to both {flag} and --drop")
    return problems


def _infinite_as_missing(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """±inf in numeric columns becomes missing, with a note per column; magnitudes beyond
    `MAX_ABS_VALUE` are refused naming the column (never quoting a value)."""
    notes, problems = [], []
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            continue
        numbers = values.to_numpy(dtype=float)
        infinite = np.isinf(numbers)
        if infinite.any():
            frame[column] = values.astype(float).where(~infinite)
            notes.append(
                f"column {column!r}: {int(infinite.sum())} infinite values treated as missing"
            )
        huge = int((np.abs(np.where(infinite, 0.0, numbers)) > MAX_ABS_VALUE).sum())
        if huge:
            problems.append(
                f"column {column!r} has {huge} values beyond ±{MAX_ABS_VALUE:g} (overflow or a "
                f"sentinel code?); fix them or pass --drop {column}"
            )
    raise_all(problems, DataSchemaError)
    return frame, notes


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
