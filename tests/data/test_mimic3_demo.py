"""An independent check of the MIMIC-III extractor on the PhysioNet demo.

Every expected number here is derived with pandas straight from the raw tables, from the cohort
rules as written in the specification; no medpriv code is used to compute them. The extractor's
output (cohort flow, labels, top-coded age, window aggregates) is then compared with them.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpriv.data.mimic3 import extract_mimic3
from medpriv.errors import DataSourceError

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MEDPRIV_SHARED_DATA") or REPO.parent / "shared" / "data")
DEMO = SHARED / "mimic-iii-demo"

pytestmark = pytest.mark.skipif(
    not DEMO.is_dir(),
    reason=f"MIMIC-III demo absent: {DEMO} (set MEDPRIV_SHARED_DATA to the shared data folder)",
)

TABLES = ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "CHARTEVENTS", "LABEVENTS")
SECONDS_PER_YEAR = 365.2425 * 86400
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# (table, item ids, inclusive valid range after conversion, item ids charted in °F)
CHECKED_CONCEPTS = {
    "heart_rate": ("chartevents", (211, 220045), (1, 299), ()),
    "sys_bp": ("chartevents", (51, 442, 455, 6701, 220179, 220050), (1, 399), ()),
    "temp_c": ("chartevents", (223762, 676, 223761, 678), (15, 45), (223761, 678)),
    "creatinine": ("labevents", (50912,), (0.1, 150), ()),
    "lactate": ("labevents", (50813,), (0.1, 49), ()),
}
OUTCOME_COLUMNS = (
    "deathtime",
    "dischtime",
    "discharge_location",
    "dod",
    "los",
    "hospital_expire_flag",
    "expire_flag",
    "outtime",
)


# ---------------------------------------------------------------------------------------------
# Independent derivation with pandas
# ---------------------------------------------------------------------------------------------


def _seconds(times: pd.Series) -> pd.Series:
    """Seconds since the epoch (MIMIC's shifted dates span centuries: no nanosecond overflow)."""
    return times.astype("datetime64[s]").astype("int64").astype(float).where(times.notna())


def _read_raw(directory: Path) -> dict[str, pd.DataFrame]:
    """The three small tables, parsed (file names matched case-insensitively)."""
    by_lower = {p.name.lower(): p for p in directory.iterdir()}

    def read(table: str, dates: list[str]) -> pd.DataFrame:
        path = by_lower.get(f"{table}.csv.gz") or by_lower[f"{table}.csv"]
        frame = pd.read_csv(path)
        frame.columns = [c.lower() for c in frame.columns]
        for column in dates:
            frame[column] = pd.to_datetime(frame[column], format=TIME_FORMAT)
        return frame

    return {
        "patients": read("patients", ["dob"]),
        "admissions": read("admissions", ["deathtime"]),
        "icustays": read("icustays", ["intime", "outtime"]),
    }


def derive_cohort(raw: dict[str, pd.DataFrame], window_hours: int) -> tuple[list, pd.DataFrame]:
    """The cohort flow [(excluded, remaining), ...] and the cohort, sorted by subject, stay."""
    patients, admissions = raw["patients"], raw["admissions"]
    stays = raw["icustays"].copy()
    # Rule 2 ranks over ALL of the patient's stays, before any other rule is applied.
    order = stays.sort_values(["intime", "icustay_id"], na_position="last").index
    stays.loc[order, "rank"] = stays.loc[order].groupby("subject_id").cumcount() + 1
    stays = stays.merge(patients[["subject_id", "dob"]], on="subject_id", how="left")
    stays = stays.merge(
        admissions[["hadm_id", "hospital_expire_flag", "deathtime"]], on="hadm_id", how="left"
    )
    stays["age_raw"] = (_seconds(stays["intime"]) - _seconds(stays["dob"])) / SECONDS_PER_YEAR
    stays["stay_hours"] = (stays["outtime"] - stays["intime"]).dt.total_seconds() / 3600

    has_records = (
        stays["hadm_id"].isin(admissions["hadm_id"])
        & stays["subject_id"].isin(patients["subject_id"])
        & stays["intime"].notna()
    )
    rules = [
        ~has_records,
        stays["rank"] != 1,
        ~(stays["age_raw"] >= 18),  # NaN age is excluded too
        ~(stays["stay_hours"] >= window_hours),  # NaN (no outtime) is excluded too
    ]
    flow = [(0, len(stays))]
    kept = pd.Series(True, index=stays.index)
    for excluded_if in rules:
        remaining = kept & ~excluded_if
        flow.append((int(kept.sum() - remaining.sum()), int(remaining.sum())))
        kept = remaining
    cohort = stays.loc[kept].sort_values(["subject_id", "icustay_id"]).reset_index(drop=True)
    cohort["hospital_death"] = cohort["hospital_expire_flag"].fillna(0).astype(int)
    icu_end = cohort["outtime"] + pd.Timedelta(hours=6)
    cohort["icu_death"] = (
        (cohort["deathtime"] >= cohort["intime"]) & (cohort["deathtime"] <= icu_end)
    ).astype(int)
    return flow, cohort


def _read_events(directory: Path, table: str, itemids: set[int]) -> pd.DataFrame:
    by_lower = {p.name.lower(): p for p in directory.iterdir()}
    path = by_lower.get(f"{table}.csv.gz") or by_lower[f"{table}.csv"]
    key = "icustay_id" if table == "chartevents" else "subject_id"
    columns = [key, "itemid", "charttime", "valuenum"]
    columns += ["error"] if table == "chartevents" else []
    frame = pd.read_csv(path, usecols=columns)
    frame = frame[frame["itemid"].isin(itemids)].copy()
    frame["charttime"] = pd.to_datetime(frame["charttime"], format=TIME_FORMAT)
    return frame


def derive_aggregates(
    cohort: pd.DataFrame, events: dict[str, pd.DataFrame], concept: str, window_hours: int
) -> pd.DataFrame:
    """min/max/mean/count and the set of admissible `last` values, per cohort stay (in order)."""
    table, itemids, (lo, hi), fahrenheit = CHECKED_CONCEPTS[concept]
    frame = events[table]
    frame = frame[frame["itemid"].isin(itemids) & frame["valuenum"].notna()]
    if table == "chartevents":
        frame = frame[frame["error"] != 1]  # NaN error is kept
        key = "icustay_id"
    else:
        key = "subject_id"
    stays = cohort[list(dict.fromkeys([key, "icustay_id", "intime"]))].drop_duplicates(key)
    frame = frame.merge(stays, on=key)
    end = frame["intime"] + pd.Timedelta(hours=window_hours)
    frame = frame[(frame["charttime"] >= frame["intime"]) & (frame["charttime"] < end)].copy()
    in_f = frame["itemid"].isin(fahrenheit)
    frame["v"] = frame["valuenum"].where(~in_f, (frame["valuenum"] - 32) / 1.8)
    frame = frame[(frame["v"] >= lo) & (frame["v"] <= hi)]

    grouped = frame.groupby("icustay_id")["v"]
    result = pd.DataFrame(
        {
            "min": grouped.min(),
            "max": grouped.max(),
            "mean": grouped.mean(),
            "count": grouped.size(),
        }
    )
    latest = frame["charttime"] == frame.groupby("icustay_id")["charttime"].transform("max")
    result["last_options"] = frame[latest].groupby("icustay_id")["v"].agg(lambda s: sorted(set(s)))
    result = result.reindex(cohort["icustay_id"])
    result["count"] = result["count"].fillna(0)
    return result.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw() -> dict[str, pd.DataFrame]:
    return _read_raw(DEMO)


@pytest.fixture(scope="module")
def events() -> dict[str, pd.DataFrame]:
    ids = {t: set() for t in ("chartevents", "labevents")}
    for table, itemids, _, _ in CHECKED_CONCEPTS.values():
        ids[table] |= set(itemids)
    return {table: _read_events(DEMO, table, itemids) for table, itemids in ids.items()}


@pytest.fixture(scope="module")
def extracted():
    cache: dict[tuple, object] = {}

    def get(window_hours: int = 24, label: str = "hospital"):
        key = (window_hours, label)
        if key not in cache:
            cache[key] = extract_mimic3(DEMO, window_hours=window_hours, label=label)
        return cache[key]

    return get


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        target.symlink_to(source)
    except OSError:
        shutil.copy(source, target)


# ---------------------------------------------------------------------------------------------
# Cohort
# ---------------------------------------------------------------------------------------------


def test_independent_derivation_matches_the_published_demo_facts(raw):
    """Sanity check of the derivation itself against PROVENANCE.md and the rules."""
    assert len(raw["icustays"]) == 136
    assert len(raw["patients"]) == 100
    flow24, cohort24 = derive_cohort(raw, 24)
    flow48, cohort48 = derive_cohort(raw, 48)
    assert flow24 == [(0, 136), (0, 136), (36, 100), (1, 99), (18, 81)]
    assert flow48 == [(0, 136), (0, 136), (36, 100), (1, 99), (48, 51)]
    assert (cohort24["hospital_death"].sum(), cohort24["icu_death"].sum()) == (25, 16)
    assert (cohort48["hospital_death"].sum(), cohort48["icu_death"].sum()) == (17, 13)


@pytest.mark.parametrize(
    ("window_hours", "label"), [(24, "hospital"), (48, "hospital"), (24, "icu"), (48, "icu")]
)
def test_cohort_flow_size_and_deaths(raw, extracted, window_hours, label):
    flow, cohort = derive_cohort(raw, window_hours)
    data = extracted(window_hours, label)

    assert data.cohort_flow[0].rule == "ICU stays seen"
    assert len(data.cohort_flow) == 5
    assert [(s.excluded, s.remaining) for s in data.cohort_flow] == flow
    rules = [s.rule.lower() for s in data.cohort_flow[1:]]
    assert "admission" in rules[0]
    assert "first" in rules[1]
    assert "18" in rules[2]
    assert str(window_hours) in rules[3]

    assert len(data) == len(cohort) == flow[-1][1]
    np.testing.assert_array_equal(data.unit_ids, cohort["subject_id"].to_numpy())
    expected = cohort["hospital_death" if label == "hospital" else "icu_death"].to_numpy()
    np.testing.assert_array_equal(data.labels, expected)
    assert int(data.labels.sum()) == int(expected.sum())


def test_cohort_rules_on_a_damaged_copy(raw, tmp_path):
    """Rule 1 excludes nothing on the demo; break some records so that every rule bites."""
    stays = raw["icustays"].sort_values(["subject_id", "intime"])
    multi = stays[stays.duplicated("subject_id", keep=False)]
    first_of_multi = multi.drop_duplicates("subject_id").iloc[0]  # 2nd stay then excluded by 2
    singles = stays[~stays["subject_id"].isin(multi["subject_id"])]
    no_patient, no_intime, no_outtime = singles.iloc[0], singles.iloc[1], singles.iloc[2]

    admissions = raw["admissions"][raw["admissions"]["hadm_id"] != first_of_multi["hadm_id"]]
    patients = raw["patients"][raw["patients"]["subject_id"] != no_patient["subject_id"]]
    icustays = raw["icustays"].copy()
    icustays.loc[icustays["icustay_id"] == no_intime["icustay_id"], "intime"] = pd.NaT
    icustays.loc[icustays["icustay_id"] == no_outtime["icustay_id"], "outtime"] = pd.NaT

    directory = tmp_path / "damaged"
    directory.mkdir()
    for name, frame in (("ADMISSIONS", admissions), ("PATIENTS", patients), ("ICUSTAYS", icustays)):
        frame.to_csv(directory / f"{name}.csv", index=False, date_format=TIME_FORMAT)
    for name in ("CHARTEVENTS", "LABEVENTS"):
        _link_or_copy(DEMO / f"{name}.csv.gz", directory / f"{name}.csv.gz")

    damaged_raw = _read_raw(directory)
    flow, cohort = derive_cohort(damaged_raw, 24)
    assert flow[1][0] == 3  # no admission, no patient, no intime
    assert first_of_multi["subject_id"] not in set(cohort["subject_id"])
    assert no_outtime["subject_id"] not in set(cohort["subject_id"])

    data = extract_mimic3(directory)
    assert [(s.excluded, s.remaining) for s in data.cohort_flow] == flow
    np.testing.assert_array_equal(data.unit_ids, cohort["subject_id"].to_numpy())
    np.testing.assert_array_equal(data.labels, cohort["hospital_death"].to_numpy())


def test_one_record_per_patient_and_age_top_coded(raw, extracted):
    _, cohort = derive_cohort(raw, 24)
    data = extracted(24)
    assert len(np.unique(data.unit_ids)) == len(data)

    age = data.features["age"].to_numpy(dtype=float)
    assert np.nanmax(age) <= 90
    over_89 = cohort["age_raw"].to_numpy() > 89
    assert over_89.sum() > 0  # the demo has shifted (~300 year old) dates of birth
    np.testing.assert_array_equal(age[over_89], 90.0)
    np.testing.assert_allclose(age[~over_89], cohort["age_raw"].to_numpy()[~over_89], atol=0.006)
    assert (age >= 18).all()


def test_no_outcome_derived_feature_columns(extracted):
    for window_hours, label in ((24, "hospital"), (48, "icu")):
        columns = [c.lower() for c in extracted(window_hours, label).features.columns]
        for column in columns:
            padded = f"_{column}_"
            leaked = [b for b in OUTCOME_COLUMNS if f"_{b}_" in padded]
            assert not leaked, f"outcome-derived feature {column!r}"
            assert not any(word in column for word in ("death", "expire", "disch")), column


# ---------------------------------------------------------------------------------------------
# Window aggregates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window_hours", [24, 48])
@pytest.mark.parametrize("concept", sorted(CHECKED_CONCEPTS))
def test_window_aggregates_match_pandas(raw, events, extracted, concept, window_hours):
    _, cohort = derive_cohort(raw, window_hours)
    expected = derive_aggregates(cohort, events, concept, window_hours)
    features = extracted(window_hours).features
    assert len(features) == len(expected)

    count = features[f"{concept}_count"].to_numpy(dtype=float)
    np.testing.assert_array_equal(count, expected["count"].to_numpy(dtype=float))
    assert expected["count"].sum() > 0, "the check would be vacuous"
    for agg in ("min", "max", "mean"):
        np.testing.assert_allclose(
            features[f"{concept}_{agg}"].to_numpy(dtype=float),
            expected[agg].to_numpy(dtype=float),
            rtol=1e-6,
            equal_nan=True,
            err_msg=f"{concept}_{agg}",
        )
    last = features[f"{concept}_last"].to_numpy(dtype=float)
    for i, options in enumerate(expected["last_options"]):
        if not isinstance(options, list):
            assert np.isnan(last[i]), f"{concept}_last row {i}: expected NaN"
        else:
            assert np.isclose(last[i], options, rtol=1e-6).any(), (
                f"{concept}_last row {i}: {last[i]} not in {options}"
            )


def test_temperature_is_converted_before_the_range_check(raw, events, extracted):
    """Celsius values only: a °F reading (e.g. 98.6) kept unconverted would exceed 45."""
    _, cohort = derive_cohort(raw, 24)
    features = extracted(24).features
    assert features["temp_c_max"].max() <= 45
    assert features["temp_c_min"].min() >= 15
    fahrenheit_rows = events["chartevents"]["itemid"].isin((223761, 678))
    assert fahrenheit_rows.any()
    expected = derive_aggregates(cohort, events, "temp_c", 24)
    assert expected["count"].sum() == features["temp_c_count"].sum()


# ---------------------------------------------------------------------------------------------
# File layout
# ---------------------------------------------------------------------------------------------


def test_upper_case_file_names_and_headers(raw, extracted, tmp_path):
    directory = tmp_path / "upper"
    directory.mkdir()
    for table in TABLES:
        with (
            gzip.open(DEMO / f"{table}.csv.gz", "rb") as source,
            open(directory / f"{table}.csv", "wb") as target,
        ):
            target.write(source.readline().upper())
            shutil.copyfileobj(source, target, length=1 << 20)
    header = (directory / "CHARTEVENTS.csv").open(encoding="utf-8").readline()
    assert "ICUSTAY_ID" in header and "icustay_id" not in header

    _, cohort = derive_cohort(raw, 24)
    data = extract_mimic3(directory)
    assert len(data) == len(cohort) == 81
    assert int(data.labels.sum()) == int(cohort["hospital_death"].sum()) == 25
    pd.testing.assert_frame_equal(data.features, extracted(24).features)


@pytest.mark.parametrize("missing", ["CHARTEVENTS", "LABEVENTS"])
def test_missing_table_is_a_data_source_error_naming_it(tmp_path, missing):
    directory = tmp_path / "partial"
    directory.mkdir()
    for table in TABLES:
        if table != missing:
            _link_or_copy(DEMO / f"{table}.csv.gz", directory / f"{table}.csv.gz")
    with pytest.raises(DataSourceError, match=missing) as info:
        extract_mimic3(directory)
    message = str(info.value)
    assert f"['{missing}']" in message  # only the absent table is listed as missing
    for present in ("PATIENTS", "ADMISSIONS", "ICUSTAYS"):
        assert present not in message
