"""The extractor reads only what was charted inside the window, and nothing outcome-derived."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpriv.data.mimic3 import extract_mimic3
from medpriv.errors import ConfigError

TABLES = ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "CHARTEVENTS", "LABEVENTS")


def _copy_demo(demo: Path, target: Path) -> Path:
    target.mkdir()
    for table in TABLES:
        shutil.copy(demo / f"{table}.csv.gz", target / f"{table}.csv.gz")
    return target


def _append_rows(path: Path, rows: pd.DataFrame) -> None:
    with gzip.open(path, "at", encoding="utf-8", newline="") as handle:
        rows.to_csv(handle, header=False, index=False)


def test_events_outside_the_window_and_error_rows_change_nothing(mimic_demo_dir, tmp_path):
    base = extract_mimic3(mimic_demo_dir)
    tampered_dir = _copy_demo(mimic_demo_dir, tmp_path / "tampered")
    stays = pd.read_csv(mimic_demo_dir / "ICUSTAYS.csv.gz", parse_dates=["intime"])
    columns = pd.read_csv(mimic_demo_dir / "CHARTEVENTS.csv.gz", nrows=0).columns
    fake = []
    for offset_hours, error in ((24.0, 0), (30.0, 0), (-0.5, 0), (3.0, 1)):
        when = stays["intime"] + pd.to_timedelta(offset_hours, unit="h")
        rows = pd.DataFrame({c: "" for c in columns}, index=stays.index)
        rows["row_id"] = 90_000_000 + len(fake) * 1000 + np.arange(len(stays))
        rows["subject_id"], rows["hadm_id"] = stays["subject_id"], stays["hadm_id"]
        rows["icustay_id"], rows["itemid"] = stays["icustay_id"], 220045
        rows["charttime"] = when.dt.strftime("%Y-%m-%d %H:%M:%S")
        rows["value"], rows["valuenum"], rows["error"] = "250", 250, error
        fake.append(rows)
    _append_rows(tampered_dir / "CHARTEVENTS.csv.gz", pd.concat(fake))
    tampered = extract_mimic3(tampered_dir)
    pd.testing.assert_frame_equal(base.features, tampered.features)
    assert base.features["heart_rate_max"].max() < 250


def test_an_event_inside_the_window_is_counted(mimic_demo_dir, tmp_path):
    base = extract_mimic3(mimic_demo_dir)
    changed_dir = _copy_demo(mimic_demo_dir, tmp_path / "changed")
    stays = pd.read_csv(mimic_demo_dir / "ICUSTAYS.csv.gz", parse_dates=["intime"])
    first = stays[stays["subject_id"] == base.unit_ids[0]].sort_values("intime").iloc[0]
    columns = pd.read_csv(mimic_demo_dir / "CHARTEVENTS.csv.gz", nrows=0).columns
    row = {c: "" for c in columns} | {
        "row_id": 99_999_999,
        "subject_id": first.subject_id,
        "hadm_id": first.hadm_id,
        "icustay_id": first.icustay_id,
        "itemid": 220045,
        "charttime": (first.intime + pd.Timedelta(hours=23, minutes=59)).strftime(
            "%Y-%m-%d %H:%M:%S"
        ),
        "value": "280",
        "valuenum": 280,
        "error": 0,
    }
    _append_rows(changed_dir / "CHARTEVENTS.csv.gz", pd.DataFrame([row]))
    changed = extract_mimic3(changed_dir)
    assert changed.features.loc[0, "heart_rate_max"] == 280
    assert changed.features.loc[0, "heart_rate_last"] == 280
    assert (
        changed.features.loc[0, "heart_rate_count"] == base.features.loc[0, "heart_rate_count"] + 1
    )


def test_no_outcome_columns_among_features(mimic_demo_dir):
    data = extract_mimic3(mimic_demo_dir, window_hours=48, label="icu")
    banned = ("death", "disch", "dod", "los", "expire", "outtime", "discharge")
    assert not [c for c in data.features.columns if any(b in c for b in banned)]
    assert data.label_name == "ICU death"
    assert len(np.unique(data.unit_ids)) == len(data)


def test_bad_window_and_label_are_config_errors(mimic_demo_dir):
    with pytest.raises(ConfigError, match="24 or 48"):
        extract_mimic3(mimic_demo_dir, window_hours=12)
    with pytest.raises(ConfigError, match="label"):
        extract_mimic3(mimic_demo_dir, label="30-day")


def test_extraction_is_bitwise_deterministic(tmp_path):
    from medpriv.data.synthetic import write_synthetic_mimic

    write_synthetic_mimic(tmp_path, n_stays=3000, seed=4)
    first, second = extract_mimic3(tmp_path), extract_mimic3(tmp_path)
    pd.testing.assert_frame_equal(first.features, second.features, check_exact=True)
    assert np.array_equal(first.labels, second.labels)
