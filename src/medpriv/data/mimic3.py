"""MIMIC-III v1.4 cohort extraction with DuckDB: SQL over the CSVs, streaming, bounded memory.

Cohort: ICU stays with an admission record, the patient's first ICU stay (the privacy unit is the
patient), adults (age >= 18 at ICU admission), stays at least as long as the observation window.
Features: demographics known at admission and min/max/mean/last/count of vitals and labs charted
inside the window [intime, intime + window). Label: in-hospital death (or ICU death). Nothing
from after the window or from the outcome (deathtime, dischtime, discharge location, dod, length
of stay) becomes a feature.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from medpriv.data.dataset import CohortStep, Schema, TabularDataset
from medpriv.data.mimic3_concepts import (
    AGE_TOP_CODE,
    AGGREGATES,
    CHART_CONCEPTS,
    CONCEPTS,
    ETHNICITY_GROUPS,
    GCS_COMPONENT_ITEMIDS,
    LAB_CONCEPTS,
)
from medpriv.errors import ConfigError, DataSourceError

# Columns each table must have; type overrides for the ones the extractor reads.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("subject_id", "gender", "dob"),
    "admissions": (
        "subject_id",
        "hadm_id",
        "admission_type",
        "insurance",
        "ethnicity",
        "hospital_expire_flag",
        "deathtime",
    ),
    "icustays": ("subject_id", "hadm_id", "icustay_id", "first_careunit", "intime", "outtime"),
    "chartevents": ("icustay_id", "itemid", "charttime", "valuenum", "error"),
    "labevents": ("subject_id", "itemid", "charttime", "valuenum"),
}
COLUMN_TYPES: dict[str, str] = {
    "row_id": "BIGINT",
    "subject_id": "BIGINT",
    "hadm_id": "BIGINT",
    "icustay_id": "BIGINT",
    "itemid": "BIGINT",
    "valuenum": "DOUBLE",
    "error": "DOUBLE",
    "hospital_expire_flag": "INTEGER",
    "dob": "TIMESTAMP",
    "intime": "TIMESTAMP",
    "outtime": "TIMESTAMP",
    "charttime": "TIMESTAMP",
    "deathtime": "TIMESTAMP",
}
LABELS = {"hospital": "in-hospital death", "icu": "ICU death"}
CATEGORICAL = ("sex", "admission_type", "first_careunit", "ethnicity_group", "insurance")
SENSITIVE = ("ethnicity_group", "sex")
SECONDS_PER_YEAR = 365.2425 * 86400


@dataclass(frozen=True)
class TableFile:
    """A located MIMIC table: its path and its header as written in the file."""

    path: Path
    columns: tuple[str, ...]


def locate_tables(directory: Path) -> dict[str, TableFile]:
    """Find the needed tables (.csv or .csv.gz, any case) and check their columns."""
    directory = Path(directory)
    if not directory.exists():
        raise DataSourceError(f"MIMIC-III directory not found: {directory}")
    if not directory.is_dir():
        raise DataSourceError(f"{directory} is a file; mimic3:DIR needs the folder of tables")
    by_lower = {p.name.lower(): p for p in directory.iterdir() if p.is_file()}
    found: dict[str, TableFile] = {}
    missing_tables, problems = [], []
    for table, needed in REQUIRED_COLUMNS.items():
        path = by_lower.get(f"{table}.csv") or by_lower.get(f"{table}.csv.gz")
        if path is None:
            missing_tables.append(table.upper())
            continue
        columns = read_header(path)
        lower = {c.lower() for c in columns}
        absent = [c for c in needed if c not in lower]
        if absent:
            problems.append(f"{path.name} lacks columns {absent}")
        found[table] = TableFile(path, columns)
    if missing_tables:
        problems.insert(
            0,
            f"{directory} lacks MIMIC-III tables {missing_tables} "
            "(expected e.g. CHARTEVENTS.csv or CHARTEVENTS.csv.gz)",
        )
    if problems:
        raise DataSourceError("; ".join(problems))
    return found


def read_header(path: Path) -> tuple[str, ...]:
    """The column names on the first line of a CSV or gzipped CSV."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            line = handle.readline()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataSourceError(f"cannot read {path}: {exc}") from None
    if not line.strip():
        raise DataSourceError(f"{path} is empty")
    return tuple(c.strip().strip('"') for c in line.rstrip("\r\n").split(","))


def _read_csv_sql(table: TableFile) -> str:
    """A DuckDB read_csv call with explicit types (no sniffing) and lower-case column names."""
    types = ", ".join(
        f"'{c.lower()}': '{COLUMN_TYPES.get(c.lower(), 'VARCHAR')}'" for c in table.columns
    )
    path = str(table.path).replace("'", "''")
    return (
        f"read_csv('{path}', header=true, delim=',', quote='\"', escape='\"', "
        f"columns={{{types}}}, timestampformat='%Y-%m-%d %H:%M:%S')"
    )


def _connect(memory_limit: str, threads: int | None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit='{memory_limit}'")
    con.execute("SET preserve_insertion_order=false")
    if threads:
        con.execute(f"SET threads={int(threads)}")
    return con


def _stays_sql(tables: dict[str, TableFile]) -> str:
    """Every ICU stay with the fields the cohort rules and demographic features need."""
    ethnicity_case = " ".join(
        f"WHEN upper(trim(a.ethnicity)) LIKE '{prefix}%' THEN '{group}'"
        for prefix, group in ETHNICITY_GROUPS
    )
    return f"""
    SELECT i.subject_id, i.hadm_id, i.icustay_id, i.intime, i.outtime,
           nullif(trim(i.first_careunit), '') AS first_careunit,
           a.hadm_id IS NOT NULL AND p.subject_id IS NOT NULL AND i.intime IS NOT NULL
               AS has_records,
           row_number() OVER (PARTITION BY i.subject_id ORDER BY i.intime, i.icustay_id)
               AS stay_rank,
           (epoch(i.intime) - epoch(p.dob)) / {SECONDS_PER_YEAR} AS age_raw,
           (epoch(i.outtime) - epoch(i.intime)) / 3600.0 AS stay_hours,
           nullif(nullif(trim(p.gender), ''), 'NA') AS sex,
           nullif(nullif(trim(a.admission_type), ''), 'NA') AS admission_type,
           nullif(nullif(trim(a.insurance), ''), 'NA') AS insurance,
           CASE WHEN a.ethnicity IS NULL OR trim(a.ethnicity) IN ('', 'NA') THEN 'unknown'
                {ethnicity_case} ELSE 'other' END AS ethnicity_group,
           coalesce(a.hospital_expire_flag, 0) AS hospital_death,
           coalesce(a.deathtime BETWEEN i.intime AND i.outtime + INTERVAL 6 HOUR, false)
               AS icu_death
    FROM {_read_csv_sql(tables["icustays"])} i
    LEFT JOIN {_read_csv_sql(tables["admissions"])} a ON i.hadm_id = a.hadm_id
    LEFT JOIN {_read_csv_sql(tables["patients"])} p ON i.subject_id = p.subject_id
    """


def _cohort_rules(window_hours: int, first_stay_only: bool, min_stay_hours: float) -> list:
    """(description, SQL predicate that EXCLUDES a stay), applied in order."""
    rules = [("no matching admission or patient record", "NOT has_records")]
    if first_stay_only:
        rules.append(("not the patient's first ICU stay", "stay_rank > 1"))
    rules.append(("age < 18 at ICU admission", "age_raw IS NULL OR age_raw < 18"))
    if min_stay_hours > 0:
        rules.append(
            (
                f"ICU stay shorter than {min_stay_hours:g} h (the {window_hours} h window)",
                f"stay_hours IS NULL OR stay_hours < {float(min_stay_hours)}",
            )
        )
    return rules


def _values_in_range_sql(window_hours: int) -> str:
    """Per-stay values of every concept charted inside the window, converted and range-checked."""
    return f"""
    SELECT e.icustay_id, m.concept, e.charttime,
           CASE WHEN m.fahrenheit THEN (e.valuenum - 32) / 1.8 ELSE e.valuenum END AS v
    FROM events e JOIN concept_items m ON e.itemid = m.itemid
    UNION ALL
    SELECT icustay_id, 'gcs' AS concept, charttime, sum(valuenum) AS v
    FROM events WHERE itemid IN {tuple(GCS_COMPONENT_ITEMIDS)}
    GROUP BY icustay_id, charttime HAVING count(DISTINCT itemid) = 3
    """


def extract_mimic3(
    directory: Path,
    *,
    window_hours: int = 24,
    label: str = "hospital",
    first_stay_only: bool = True,
    min_stay_hours: float | None = None,
    name: str = "mimic3",
    memory_limit: str = "1GB",
    threads: int | None = None,
) -> TabularDataset:
    """Extract the ICU-mortality cohort from a MIMIC-III v1.4 directory (demo or full)."""
    if window_hours not in (24, 48):
        raise ConfigError(f"window_hours must be 24 or 48, got {window_hours}")
    if label not in LABELS:
        raise ConfigError(f"label must be one of {sorted(LABELS)}, got {label!r}")
    min_stay = float(window_hours if min_stay_hours is None else min_stay_hours)
    tables = locate_tables(Path(directory))
    con = _connect(memory_limit, threads)
    try:
        return _extract(con, tables, window_hours, label, first_stay_only, min_stay, name)
    except duckdb.Error as exc:
        raise DataSourceError(f"cannot read MIMIC-III tables in {directory}: {exc}") from None
    finally:
        con.close()


def _extract(
    con: duckdb.DuckDBPyConnection,
    tables: dict[str, TableFile],
    window_hours: int,
    label: str,
    first_stay_only: bool,
    min_stay: float,
    name: str,
) -> TabularDataset:
    con.execute(f"CREATE TEMP TABLE stays AS {_stays_sql(tables)}")
    flow = [
        CohortStep("ICU stays seen", 0, con.execute("SELECT count(*) FROM stays").fetchone()[0])
    ]
    kept = "TRUE"
    for rule, excluded_if in _cohort_rules(window_hours, first_stay_only, min_stay):
        n_left = con.execute(
            f"SELECT count(*) FROM stays WHERE ({kept}) AND NOT ({excluded_if})"
        ).fetchone()[0]
        flow.append(CohortStep(rule, flow[-1].remaining - n_left, n_left))
        kept = f"{kept} AND NOT ({excluded_if})"
    con.execute(f"CREATE TEMP TABLE cohort AS SELECT * FROM stays WHERE {kept}")

    con.register("concept_items", _concept_items_frame())
    window = f"INTERVAL {int(window_hours)} HOUR"
    chart_ids = sorted({i for c in CHART_CONCEPTS for i in c.itemids} | set(GCS_COMPONENT_ITEMIDS))
    lab_ids = sorted({i for c in LAB_CONCEPTS for i in c.itemids})
    con.execute(
        f"""
        CREATE TEMP TABLE events AS
        SELECT ce.icustay_id, ce.itemid, ce.charttime, ce.valuenum
        FROM {_read_csv_sql(tables["chartevents"])} ce
        JOIN cohort c0 ON ce.icustay_id = c0.icustay_id
        WHERE ce.itemid IN ({", ".join(map(str, chart_ids))})
          AND ce.valuenum IS NOT NULL AND coalesce(ce.error, 0) = 0
          AND ce.charttime >= c0.intime AND ce.charttime < c0.intime + {window}
        UNION ALL
        SELECT c0.icustay_id, le.itemid, le.charttime, le.valuenum
        FROM {_read_csv_sql(tables["labevents"])} le
        JOIN cohort c0 ON le.subject_id = c0.subject_id
        WHERE le.itemid IN ({", ".join(map(str, lab_ids))})
          AND le.valuenum IS NOT NULL
          AND le.charttime >= c0.intime AND le.charttime < c0.intime + {window}
        """
    )
    bounds = ", ".join(f"('{c.name}', {c.valid[0]}, {c.valid[1]})" for c in CONCEPTS)
    long = con.execute(
        f"""
        WITH vals AS ({_values_in_range_sql(window_hours)}),
             bounds(concept, lo, hi) AS (VALUES {bounds})
        SELECT v.icustay_id, v.concept, min(v.v) AS "min", max(v.v) AS "max",
               avg(v.v::DECIMAL(18, 6))::DOUBLE AS "mean",
               arg_max(v.v, (v.charttime, v.v)) AS "last", count(*) AS "count"
        FROM vals v JOIN bounds b ON v.concept = b.concept
        WHERE v.v BETWEEN b.lo AND b.hi
        GROUP BY v.icustay_id, v.concept
        """  # exact decimal sums and a total order for `last`: the same bytes on every run
    ).df()
    cohort = con.execute("SELECT * FROM cohort ORDER BY subject_id, icustay_id").df()
    return _assemble(cohort, long, flow, window_hours, label, first_stay_only, name)


def _concept_items_frame() -> pd.DataFrame:
    rows = [
        (itemid, c.name, itemid in c.fahrenheit_itemids) for c in CONCEPTS for itemid in c.itemids
    ]
    return pd.DataFrame(rows, columns=["itemid", "concept", "fahrenheit"])


def _assemble(
    cohort: pd.DataFrame,
    long: pd.DataFrame,
    flow: list[CohortStep],
    window_hours: int,
    label: str,
    first_stay_only: bool,
    name: str,
) -> TabularDataset:
    """Join demographics and pivoted window aggregates into a TabularDataset."""
    columns = [f"{c.name}_{agg}" for c in CONCEPTS for agg in AGGREGATES]
    wide = long.pivot(index="icustay_id", columns="concept", values=list(AGGREGATES))
    wide.columns = [f"{concept}_{agg}" for agg, concept in wide.columns]
    wide = wide.reindex(index=cohort["icustay_id"], columns=columns)
    count_columns = [c for c in columns if c.endswith("_count")]
    wide[count_columns] = wide[count_columns].fillna(0)

    age = cohort["age_raw"].to_numpy(dtype=float)
    n_top_coded = int((age > 89).sum())
    features = pd.DataFrame({"age": np.where(age > 89, AGE_TOP_CODE, np.round(age, 2))})
    for column in CATEGORICAL:
        features[column] = cohort[column].astype("object").where(cohort[column].notna(), None)
    features = pd.concat([features, wide.reset_index(drop=True).astype(float)], axis=1)
    numeric = ("age", *columns)

    labels = cohort["hospital_death" if label == "hospital" else "icu_death"].astype(int)
    notes = [
        f"observation window: first {window_hours} h of the ICU stay; events outside it ignored",
        f"ages over 89 ({n_top_coded} stays) top-coded at {AGE_TOP_CODE:g}",
        "values outside physiological ranges dropped; temperatures in °F converted to °C",
    ]
    if not first_stay_only:
        notes.append(
            "several ICU stays per patient kept: records are stays, the privacy unit is the "
            "patient (per-record guarantees do not hold per patient)"
        )
    return TabularDataset(
        name=name,
        features=features,
        labels=labels.to_numpy(dtype=np.int64),
        unit_ids=cohort["subject_id"].to_numpy(),
        schema=Schema(numeric=numeric, categorical=CATEGORICAL, sensitive=SENSITIVE),
        site_ids=cohort["first_careunit"].fillna("unknown").to_numpy(dtype=object),
        unit_name="patient",
        label_name=LABELS[label],
        cohort_flow=tuple(flow),
        notes=tuple(notes),
    )
