"""The synthetic MIMIC-III generator: schema, determinism, MIMIC quirks, calibrated signal."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medpriv.data import synthetic
from medpriv.data.mimic3_concepts import CONCEPTS, GCS_COMPONENT_ITEMIDS
from medpriv.data.synthetic import write_synthetic_mimic
from medpriv.errors import ConfigError

# The real MIMIC-III v1.4 headers, written out here so the test needs neither the demo nor the
# generator's own lists.
EXPECTED_COLUMNS = {
    "PATIENTS": "row_id,subject_id,gender,dob,dod,dod_hosp,dod_ssn,expire_flag",
    "ADMISSIONS": (
        "row_id,subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,"
        "admission_location,discharge_location,insurance,language,religion,marital_status,"
        "ethnicity,edregtime,edouttime,diagnosis,hospital_expire_flag,has_chartevents_data"
    ),
    "ICUSTAYS": (
        "row_id,subject_id,hadm_id,icustay_id,dbsource,first_careunit,last_careunit,"
        "first_wardid,last_wardid,intime,outtime,los"
    ),
    "CHARTEVENTS": (
        "row_id,subject_id,hadm_id,icustay_id,itemid,charttime,storetime,cgid,value,valuenum,"
        "valueuom,warning,error,resultstatus,stopped"
    ),
    "LABEVENTS": "row_id,subject_id,hadm_id,itemid,charttime,value,valuenum,valueuom,flag",
    "D_ITEMS": (
        "row_id,itemid,label,abbreviation,dbsource,linksto,category,unitname,param_type,conceptid"
    ),
    "D_LABITEMS": "row_id,itemid,label,fluid,category,loinc_code",
}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
SECONDS_PER_YEAR = 365.2425 * 86400
N_STAYS = 500
CHART_IDS = {i for c in CONCEPTS if c.table == "chartevents" for i in c.itemids}
LAB_IDS = {i for c in CONCEPTS if c.table == "labevents" for i in c.itemids}
HEART_RATE_IDS = next(c for c in CONCEPTS if c.name == "heart_rate").itemids


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("synthetic") / "mimic"  # not created yet: the writer makes it
    return out, write_synthetic_mimic(out, n_stays=N_STAYS, seed=7)


@pytest.fixture(scope="module")
def tables(generated) -> dict[str, pd.DataFrame]:
    out, _ = generated
    times = ("dob", "dod", "admittime", "dischtime", "deathtime", "intime", "outtime", "charttime")
    frames = {}
    for table in EXPECTED_COLUMNS:
        frame = pd.read_csv(out / f"{table}.csv", low_memory=False)
        for column in set(times) & set(frame.columns):
            frame[column] = pd.to_datetime(frame[column], format="%Y-%m-%d %H:%M:%S")
        frames[table] = frame
    return frames


@pytest.fixture(scope="module")
def stays(tables) -> pd.DataFrame:
    """ICU stays with age at intime, outcome and rank among the patient's stays."""
    frame = tables["ICUSTAYS"].merge(tables["PATIENTS"], on="subject_id")
    frame = frame.merge(tables["ADMISSIONS"], on=["subject_id", "hadm_id"])
    frame["age"] = (frame["intime"] - frame["dob"]).dt.total_seconds() / SECONDS_PER_YEAR
    frame = frame.sort_values(["subject_id", "intime"])
    frame["rank"] = frame.groupby("subject_id").cumcount()
    return frame


def _first_adult_stays(stays: pd.DataFrame, min_hours: float = 24) -> pd.DataFrame:
    hours = (stays["outtime"] - stays["intime"]).dt.total_seconds() / 3600
    return stays[(stays["rank"] == 0) & (stays["age"] >= 18) & (hours >= min_hours)]


def test_headers_are_the_mimic_iii_v14_columns(generated):
    out, _ = generated
    for table, header in EXPECTED_COLUMNS.items():
        with open(out / f"{table}.csv", encoding="utf-8") as handle:
            assert handle.readline().rstrip("\n") == header, table


def test_headers_equal_the_physionet_demo(generated, mimic_demo_dir):
    out, _ = generated
    for table in EXPECTED_COLUMNS:
        with gzip.open(mimic_demo_dir / f"{table}.csv.gz", "rt", encoding="utf-8") as handle:
            demo = handle.readline().rstrip("\r\n")
        with open(out / f"{table}.csv", encoding="utf-8") as handle:
            assert handle.readline().rstrip("\n") == demo, table


def test_returned_counts_are_the_rows_written(generated, tables):
    _, counts = generated
    assert counts == {table: len(frame) for table, frame in tables.items()}
    assert counts["ICUSTAYS"] == N_STAYS
    assert counts["CHARTEVENTS"] > 100 * N_STAYS
    assert counts["LABEVENTS"] > 20 * N_STAYS


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first, again, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_synthetic_mimic(first, n_stays=300, seed=3)
    write_synthetic_mimic(again, n_stays=300, seed=3)
    write_synthetic_mimic(other, n_stays=300, seed=4)
    for table in EXPECTED_COLUMNS:
        name = f"{table}.csv"
        assert (first / name).read_bytes() == (again / name).read_bytes(), table
    for table in ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "CHARTEVENTS", "LABEVENTS"):
        name = f"{table}.csv"
        assert (first / name).read_bytes() != (other / name).read_bytes(), table


def test_ids_and_row_ids_continue_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "CHUNK_STAYS", 70)
    counts = write_synthetic_mimic(tmp_path, n_stays=250, seed=1)
    assert counts["ICUSTAYS"] == 250
    for table in ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "CHARTEVENTS", "LABEVENTS"):
        frame = pd.read_csv(tmp_path / f"{table}.csv", low_memory=False)
        assert (np.diff(frame["row_id"]) > 0).all(), table
    assert pd.read_csv(tmp_path / "PATIENTS.csv")["subject_id"].is_unique
    assert pd.read_csv(tmp_path / "ADMISSIONS.csv")["hadm_id"].is_unique
    assert pd.read_csv(tmp_path / "ICUSTAYS.csv")["icustay_id"].is_unique


def test_row_ids_increase_and_keys_join(tables):
    for name, frame in tables.items():
        assert (np.diff(frame["row_id"]) > 0).all(), name
    stay_ids = set(tables["ICUSTAYS"]["icustay_id"])
    assert set(tables["CHARTEVENTS"]["icustay_id"]) <= stay_ids
    assert set(tables["ICUSTAYS"]["hadm_id"]) == set(tables["ADMISSIONS"]["hadm_id"])
    assert set(tables["ADMISSIONS"]["subject_id"]) == set(tables["PATIENTS"]["subject_id"])


def test_value_formats_are_mimic_like(generated):
    out, _ = generated
    rows = pd.read_csv(out / "CHARTEVENTS.csv", dtype=str, keep_default_na=False, nrows=20_000)
    assert rows["charttime"].str.match(TIMESTAMP).all()
    numeric = rows[rows["valuenum"] != ""]
    as_number = pd.to_numeric(numeric["value"], errors="coerce")
    assert (pd.to_numeric(numeric["valuenum"])[as_number.notna()] == as_number.dropna()).all()
    words = numeric.loc[as_number.isna(), "itemid"].astype(int)
    assert words.isin(GCS_COMPONENT_ITEMIDS).all()  # text with a number: MetaVision GCS only
    assert not rows["value"].str.contains('"').any()
    stays = pd.read_csv(out / "ICUSTAYS.csv", dtype=str, keep_default_na=False)
    assert stays["intime"].str.match(TIMESTAMP).all()
    assert stays["los"].astype(float).gt(0).all()


def test_times_are_shifted_into_2100_to_2200(stays, tables):
    for column in ("intime", "outtime", "admittime", "dischtime"):
        assert stays[column].dt.year.between(2100, 2200).all(), column
    chart_years = tables["CHARTEVENTS"]["charttime"].dt.year
    assert chart_years.between(2100, 2200).all()
    assert (stays["outtime"] > stays["intime"]).all()
    assert (stays["intime"] >= stays["admittime"]).all()
    assert (stays["dischtime"] >= stays["admittime"]).all()


def test_both_eras_chart_with_their_own_item_ids(tables):
    stays = tables["ICUSTAYS"]
    share_carevue = (stays["dbsource"] == "carevue").mean()
    assert 0.4 < share_carevue < 0.7
    chart = tables["CHARTEVENTS"].merge(stays[["icustay_id", "dbsource"]], on="icustay_id")
    carevue = chart[chart["dbsource"] == "carevue"]["itemid"]
    metavision = chart[chart["dbsource"] == "metavision"]["itemid"]
    assert (carevue < 220_000).all() and (metavision >= 220_000).all()
    for ids in ({211, 678, 198}, {220045, 223761, *GCS_COMPONENT_ITEMIDS}):
        assert ids <= set(chart["itemid"])
    assert set(carevue) & CHART_IDS and set(metavision) & CHART_IDS
    assert not {220739, 223900, 223901} & set(carevue)


def test_metavision_gcs_components_share_a_chart_time(tables):
    chart = tables["CHARTEVENTS"]
    gcs = chart[chart["itemid"].isin(GCS_COMPONENT_ITEMIDS)]
    per_time = gcs.groupby(["icustay_id", "charttime"])["itemid"].nunique()
    assert len(per_time) > 0 and (per_time == 3).mean() > 0.99
    total = gcs.groupby(["icustay_id", "charttime"])["valuenum"].sum()
    assert total.between(3, 15).all()
    limits = {220739: (1, 4), 223900: (1, 5), 223901: (1, 6)}
    for itemid, (low, high) in limits.items():
        assert gcs.loc[gcs["itemid"] == itemid, "valuenum"].between(low, high).all()
    assert gcs["value"].str.isalpha().mean() < 0.5  # text such as "Obeys Commands"
    assert gcs["value"].str.contains(" ").any()


def test_patients_with_several_stays(stays):
    per_patient = stays.groupby("subject_id").size()
    share = (per_patient > 1).mean()
    assert 0.07 < share < 0.25
    assert per_patient.max() <= 3
    same_admission = stays.groupby("hadm_id").size()
    assert (same_admission > 1).any()  # ICU readmission within one hospital stay
    assert (stays.groupby("subject_id")["hadm_id"].nunique() > 1).any()  # a later admission
    assert len(_first_adult_stays(stays, min_hours=0)) < N_STAYS


def test_ages_like_mimic(stays):
    adults = stays[stays["age"] >= 18]
    old = adults["age"] > 89
    assert 0.015 < old.mean() < 0.08
    assert adults.loc[old, "age"].between(299.5, 310).all()  # shifted to ~300 years
    assert adults.loc[~old, "age"].between(18, 89.0).all()
    neonates = stays[stays["age"] < 1]
    assert len(neonates) > 0 and (neonates["first_careunit"] == "NICU").all()
    assert (stays.loc[stays["first_careunit"] == "NICU", "age"] < 1).all()
    assert stays["age"].between(0, 18).mean() < 0.05


def test_care_units_and_short_stays(stays):
    units = stays["first_careunit"].value_counts(normalize=True)
    assert set(units.index) == {"MICU", "SICU", "CCU", "CSRU", "TSICU", "NICU"}
    assert units["MICU"] == units.max()
    hours = (stays["outtime"] - stays["intime"]).dt.total_seconds() / 3600
    assert 0.08 < (hours < 24).mean() < 0.35
    assert np.allclose(stays["los"], hours / 24, atol=1e-4)


def test_every_item_is_described_in_the_dictionaries(tables):
    chart_ids = set(tables["CHARTEVENTS"]["itemid"])
    lab_ids = set(tables["LABEVENTS"]["itemid"])
    assert chart_ids <= set(tables["D_ITEMS"]["itemid"])
    assert lab_ids <= set(tables["D_LABITEMS"]["itemid"])
    assert set(tables["D_ITEMS"]["linksto"]) == {"chartevents"}
    assert lab_ids >= LAB_IDS
    assert {223834, 224082} <= chart_ids  # items of no concept, to be filtered out
    assert chart_ids - CHART_IDS - set(GCS_COMPONENT_ITEMIDS)
    assert lab_ids - LAB_IDS


def test_outcomes_are_consistent_and_rate_is_sane(stays, tables):
    admissions = tables["ADMISSIONS"]
    dead = admissions[admissions["hospital_expire_flag"] == 1]
    alive = admissions[admissions["hospital_expire_flag"] == 0]
    assert (dead["deathtime"] == dead["dischtime"]).all()
    assert (dead["discharge_location"] == "DEAD/EXPIRED").all()
    assert alive["deathtime"].isna().all()
    assert (alive["discharge_location"] != "DEAD/EXPIRED").all()
    patients = tables["PATIENTS"].set_index("subject_id")
    died = patients.loc[dead["subject_id"]]
    assert (died["expire_flag"] == 1).all()
    assert (died["dod"] == dead["deathtime"].dt.normalize().to_numpy()).all()
    rate = _first_adult_stays(stays)["hospital_expire_flag"].mean()
    assert 0.06 < rate < 0.2


def test_quirks_the_extractor_must_handle(tables, stays):
    chart, labs = tables["CHARTEVENTS"], tables["LABEVENTS"]
    heart = chart[chart["itemid"].isin(HEART_RATE_IDS)]
    assert heart["valuenum"].isin([0, 999]).any()  # physiologically impossible
    assert heart["valuenum"].between(20, 250).mean() > 0.99
    assert (chart["error"] == 1).any()
    assert chart.loc[chart["error"].notna(), "itemid"].min() >= 220_000  # MetaVision only
    assert (
        chart["valuenum"].isna() & chart["value"].notna() & chart["itemid"].isin(CHART_IDS)
    ).any()
    assert (labs["valuenum"].isna() & labs["value"].notna()).any()
    assert labs["hadm_id"].isna().any() and labs["hadm_id"].notna().mean() > 0.9
    lab_times = labs.merge(stays[["subject_id", "intime"]], on="subject_id")
    before = (lab_times["charttime"] - lab_times["intime"]).dt.total_seconds() / 3600
    assert ((before < 0) & (before > -12)).any()
    chart_times = chart.merge(stays[["icustay_id", "intime"]], on="icustay_id")
    offset = (chart_times["charttime"] - chart_times["intime"]).dt.total_seconds() / 3600
    assert (offset < 0).any() and (offset > 24).any() and offset.max() < 72.5


def test_some_stays_chart_nothing_in_the_first_day_and_lactate_is_often_missing(tables, stays):
    chart = tables["CHARTEVENTS"].merge(stays[["icustay_id", "intime"]], on="icustay_id")
    hours = (chart["charttime"] - chart["intime"]).dt.total_seconds() / 3600
    charted = set(chart.loc[(hours >= 0) & (hours < 24), "icustay_id"])
    long_stays = stays[(stays["outtime"] - stays["intime"]).dt.total_seconds() >= 24 * 3600]
    missing = 1 - long_stays["icustay_id"].isin(charted).mean()
    assert 0.01 < missing < 0.12
    with_lactate = tables["LABEVENTS"].loc[tables["LABEVENTS"]["itemid"] == 50813, "subject_id"]
    assert 0.25 < stays["subject_id"].isin(with_lactate).mean() < 0.75


def test_values_after_the_window_predict_death_far_better(tables, stays):
    """A crude shock score (HR - SBP + 2 RR - 2 SpO2) of the first 24 h vs of later hours."""
    weights = {"heart_rate": 1, "sys_bp": -1, "resp_rate": 2, "spo2": -2}
    concepts = {c.name: c for c in CONCEPTS if c.name in weights}
    cohort = _first_adult_stays(stays).set_index("icustay_id")
    chart = tables["CHARTEVENTS"]
    chart = chart[chart["icustay_id"].isin(cohort.index) & (chart["error"].fillna(0) == 0)]
    hours = chart["charttime"] - cohort.loc[chart["icustay_id"], "intime"].to_numpy()
    hours = hours.dt.total_seconds() / 3600

    def auroc(selected: pd.Series) -> float:
        means = {}
        for name, concept in concepts.items():
            rows = chart[selected & chart["itemid"].isin(concept.itemids)]
            rows = rows[rows["valuenum"].between(*concept.valid)]
            means[name] = rows.groupby("icustay_id")["valuenum"].mean()
        frame = pd.DataFrame(means).dropna()
        score = sum(weight * frame[name] for name, weight in weights.items())
        return roc_auc_score(cohort.loc[frame.index, "hospital_expire_flag"], score)

    inside, after = auroc((hours >= 0) & (hours < 24)), auroc(hours >= 24)
    assert 0.6 < inside < 0.9
    assert after > inside + 0.08


@pytest.mark.parametrize("n_stays", [0, -5, 2.5, True, "100", None])
def test_bad_n_stays_raises_config_error(tmp_path, n_stays):
    with pytest.raises(ConfigError, match="n_stays"):
        write_synthetic_mimic(tmp_path, n_stays=n_stays)


def test_bad_seed_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="seed"):
        write_synthetic_mimic(tmp_path, n_stays=10, seed=-1)


def test_one_stay_is_enough(tmp_path):
    counts = write_synthetic_mimic(tmp_path, n_stays=1, seed=5)
    assert counts["ICUSTAYS"] == 1 and counts["PATIENTS"] == 1 and counts["ADMISSIONS"] == 1


def test_compress_writes_readable_gzip_with_the_same_content(tmp_path):
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    write_synthetic_mimic(plain, n_stays=60, seed=2)
    counts = write_synthetic_mimic(packed, n_stays=60, seed=2, compress=True)
    assert not list(packed.glob("*.csv"))
    for table in EXPECTED_COLUMNS:
        path = packed / f"{table}.csv.gz"
        with gzip.open(path, "rb") as handle:
            assert handle.read() == (plain / f"{table}.csv").read_bytes(), table
        assert len(pd.read_csv(path, low_memory=False)) == counts[table]


@pytest.mark.slow
def test_extracted_cohort_supports_a_good_but_imperfect_model(tmp_path):
    try:
        from medpriv.data.mimic3 import extract_mimic3
    except ImportError as exc:  # pragma: no cover - the extractor is developed separately
        pytest.skip(f"medpriv.data.mimic3.extract_mimic3 is not available yet: {exc}")
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    write_synthetic_mimic(tmp_path, n_stays=3000, seed=11)
    data = extract_mimic3(tmp_path, window_hours=24, label="hospital")
    assert 1500 < len(data) < 3000  # first stays of adults lasting 24 h
    assert 0.07 < data.labels.mean() < 0.17
    features = data.features.copy()
    for column in features.columns:
        if not pd.api.types.is_numeric_dtype(features[column]):
            features[column] = features[column].astype("category")
    x_train, x_test, y_train, y_test = train_test_split(
        features, data.labels, test_size=0.3, random_state=0, stratify=data.labels
    )
    model = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, categorical_features="from_dtype", random_state=0
    ).fit(x_train, y_train)
    auroc = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
    assert 0.78 <= auroc <= 0.93, auroc
