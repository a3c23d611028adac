"""Seeded synthetic MIMIC-III v1.4: the tables the extractor reads, with MIMIC's quirks.

`write_synthetic_mimic` writes PATIENTS, ADMISSIONS, ICUSTAYS, CHARTEVENTS, LABEVENTS, D_ITEMS and
D_LABITEMS with the real v1.4 columns (lower case) and value formats. Stays are generated in
chunks with vectorised numpy and streamed to CSV with pyarrow, so memory stays bounded for any
number of stays; the bytes depend only on `seed` and `n_stays`.

The clinical model: every ICU stay has a latent severity that raises heart rate, respiratory
rate, lactate, creatinine, BUN and WBC and lowers blood pressure, SpO2, GCS, bicarbonate and
platelets, hidden behind individual baselines and measurement noise. In-hospital death depends
on that severity, an unobserved factor, age, admission type and care unit. After the first 24 h
patients who go on to die deteriorate and survivors recover, so events charted after the
observation window are far more predictive than those inside it (a leaking extractor shows it).
MIMIC's quirks are kept: CareVue and MetaVision item ids, °F and °C, GCS charted as three
components in MetaVision, ages over 89 shifted to ~300 years, neonates, several stays per
patient, impossible values, `error=1` rows, text values without `valuenum`, unrelated items.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from medpriv.data.mimic3_concepts import CHART_CONCEPTS, CONCEPTS, GCS_COMPONENT_ITEMIDS
from medpriv.errors import ConfigError

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "PATIENTS": (
        "row_id", "subject_id", "gender", "dob", "dod", "dod_hosp", "dod_ssn", "expire_flag",
    ),
    "ADMISSIONS": (
        "row_id", "subject_id", "hadm_id", "admittime", "dischtime", "deathtime",
        "admission_type", "admission_location", "discharge_location", "insurance", "language",
        "religion", "marital_status", "ethnicity", "edregtime", "edouttime", "diagnosis",
        "hospital_expire_flag", "has_chartevents_data",
    ),
    "ICUSTAYS": (
        "row_id", "subject_id", "hadm_id", "icustay_id", "dbsource", "first_careunit",
        "last_careunit", "first_wardid", "last_wardid", "intime", "outtime", "los",
    ),
    "CHARTEVENTS": (
        "row_id", "subject_id", "hadm_id", "icustay_id", "itemid", "charttime", "storetime",
        "cgid", "value", "valuenum", "valueuom", "warning", "error", "resultstatus", "stopped",
    ),
    "LABEVENTS": (
        "row_id", "subject_id", "hadm_id", "itemid", "charttime", "value", "valuenum",
        "valueuom", "flag",
    ),
    "D_ITEMS": (
        "row_id", "itemid", "label", "abbreviation", "dbsource", "linksto", "category",
        "unitname", "param_type", "conceptid",
    ),
    "D_LABITEMS": ("row_id", "itemid", "label", "fluid", "category", "loinc_code"),
}  # fmt: skip
TABLES: tuple[str, ...] = tuple(TABLE_COLUMNS)

CHUNK_STAYS = 5_000  # stays generated and written at a time (part of what the seed fixes)
MINUTE, HOUR, DAY = 60, 3_600, 86_400
YEAR = 365.2425 * DAY
T2100 = 4_102_444_800  # 2100-01-01 00:00:00 in seconds since 1970
FIRST_ADMIT_SPAN = 90 * YEAR  # first admissions fall in 2100-2190
CHART_HOURS = 72.0  # chart events cover at most the first 72 h of a stay
WINDOW = 24.0  # hours after which dying patients deteriorate and survivors recover

# ----------------------------------------------------------------------------------------------
# Item catalogue: every chart and lab item written, checked against mimic3_concepts.


@dataclass(frozen=True)
class ChartItem:
    """A D_ITEMS row; `concept` names the mimic3_concepts concept the id must belong to."""

    itemid: int
    label: str
    dbsource: str
    uom: str = ""
    abbreviation: str = ""
    category: str = ""
    param_type: str = ""
    concept: str | None = None
    fahrenheit: bool = False


@dataclass(frozen=True)
class LabItem:
    """A D_LABITEMS row, its unit, normal range (for `flag`) and printed decimals."""

    itemid: int
    label: str
    category: str
    loinc: str
    uom: str = ""
    normal: tuple[float, float] = (0.0, 0.0)
    decimals: int = 0
    concept: str | None = None


def _cv(itemid: int, label: str, uom: str = "", concept: str | None = None) -> ChartItem:
    return ChartItem(itemid, label, "carevue", uom, concept=concept, fahrenheit="F" in uom)


def _mv(itemid: int, label: str, abbr: str, category: str, uom: str = "", **kw) -> ChartItem:
    kw.setdefault("param_type", "Numeric")
    return ChartItem(itemid, label, "metavision", uom, abbr, category, fahrenheit="F" in uom, **kw)


_VITAL, _RESP, _NEURO, _TEXT = "Routine Vital Signs", "Respiratory", "Neurological", "Text"
CHART_ITEMS: dict[str, ChartItem] = {
    "cv_hr": _cv(211, "Heart Rate", "BPM", "heart_rate"),
    "cv_art_sbp": _cv(51, "Arterial BP [Systolic]", "mmHg", "sys_bp"),
    "cv_art_dbp": _cv(8368, "Arterial BP [Diastolic]", "mmHg", "dias_bp"),
    "cv_art_mbp": _cv(52, "Arterial BP Mean", "mmHg", "mean_bp"),
    "cv_nbp_sbp": _cv(455, "NBP [Systolic]", "mmHg", "sys_bp"),
    "cv_nbp_dbp": _cv(8441, "NBP [Diastolic]", "mmHg", "dias_bp"),
    "cv_nbp_mbp": _cv(456, "NBP Mean", "mmHg", "mean_bp"),
    "cv_rr": _cv(618, "Respiratory Rate", "BPM", "resp_rate"),
    "cv_spo2": _cv(646, "SpO2", "%", "spo2"),
    "cv_temp_f": _cv(678, "Temperature F", "Deg. F", "temp_c"),
    "cv_temp_c": _cv(676, "Temperature C", "Deg. C", "temp_c"),
    "cv_gcs": _cv(198, "GCS Total", "points", "gcs"),
    "cv_glucose": _cv(807, "Fingerstick Glucose", "", "glucose"),
    "cv_rhythm": _cv(212, "Heart Rhythm"),
    "cv_alarm_hi": _cv(8549, "HR Alarm [High]", "BPM"),
    "cv_alarm_lo": _cv(5815, "HR Alarm [Low]", "BPM"),
    "cv_o2flow": _cv(470, "O2 Flow (lpm)", "lpm"),
    "mv_hr": _mv(220045, "Heart Rate", "HR", _VITAL, "bpm", concept="heart_rate"),
    "mv_art_sbp": _mv(220050, "Arterial Blood Pressure systolic", "ABPs", _VITAL, "mmHg",
                      concept="sys_bp"),
    "mv_art_dbp": _mv(220051, "Arterial Blood Pressure diastolic", "ABPd", _VITAL, "mmHg",
                      concept="dias_bp"),
    "mv_art_mbp": _mv(220052, "Arterial Blood Pressure mean", "ABPm", _VITAL, "mmHg",
                      concept="mean_bp"),
    "mv_nbp_sbp": _mv(220179, "Non Invasive Blood Pressure systolic", "NBPs", _VITAL, "mmHg",
                      concept="sys_bp"),
    "mv_nbp_dbp": _mv(220180, "Non Invasive Blood Pressure diastolic", "NBPd", _VITAL, "mmHg",
                      concept="dias_bp"),
    "mv_nbp_mbp": _mv(220181, "Non Invasive Blood Pressure mean", "NBPm", _VITAL, "mmHg",
                      concept="mean_bp"),
    "mv_rr": _mv(220210, "Respiratory Rate", "RR", _RESP, "insp/min", concept="resp_rate"),
    "mv_spo2": _mv(220277, "O2 saturation pulseoxymetry", "SpO2", _RESP, "%", concept="spo2"),
    "mv_temp_f": _mv(223761, "Temperature Fahrenheit", "Temperature F", _VITAL, "?F",
                     concept="temp_c"),
    "mv_temp_c": _mv(223762, "Temperature Celsius", "Temperature C", _VITAL, "?C",
                     concept="temp_c"),
    "mv_gcs_eye": _mv(220739, "GCS - Eye Opening", "Eye Opening", _NEURO, concept="gcs",
                      param_type=_TEXT),
    "mv_gcs_verbal": _mv(223900, "GCS - Verbal Response", "Verbal Response", _NEURO,
                         concept="gcs", param_type=_TEXT),
    "mv_gcs_motor": _mv(223901, "GCS - Motor Response", "Motor Response", _NEURO,
                        concept="gcs", param_type=_TEXT),
    "mv_glucose": _mv(225664, "Glucose finger stick", "Glucose finger stick", "Labs", "mg/dL",
                      concept="glucose"),
    "mv_rhythm": _mv(220048, "Heart Rhythm", "Heart Rhythm", _VITAL, param_type=_TEXT),
    "mv_alarm_hi": _mv(220046, "Heart rate Alarm - High", "HR Alarm - High", "Alarms", "bpm"),
    "mv_alarm_lo": _mv(220047, "Heart Rate Alarm - Low", "HR Alarm - Low", "Alarms", "bpm"),
    "mv_o2flow": _mv(223834, "O2 Flow", "O2 Flow", _RESP, "L/min"),
    "mv_turn": _mv(224082, "Turn", "Turn", "Treatments", param_type=_TEXT),
}  # fmt: skip
UNUSED_CHART_ITEMS = (
    _cv(1435, "Sustained Nystamus"),
    _mv(224641, "Alarms On", "Alarms On", "Alarms", param_type="Checkbox"),
)

_CHEM, _HEME, _GAS = "Chemistry", "Hematology", "Blood Gas"
LAB_ITEMS: dict[str, LabItem] = {
    "creatinine": LabItem(50912, "Creatinine", _CHEM, "2160-0", "mg/dL", (0.5, 1.2), 1,
                          "creatinine"),
    "bun": LabItem(51006, "Urea Nitrogen", _CHEM, "3094-0", "mg/dL", (6, 20), 0, "bun"),
    "sodium": LabItem(50983, "Sodium", _CHEM, "2951-2", "mEq/L", (133, 145), 0, "sodium"),
    "potassium": LabItem(50971, "Potassium", _CHEM, "2823-3", "mEq/L", (3.3, 5.1), 1,
                         "potassium"),
    "bicarbonate": LabItem(50882, "Bicarbonate", _CHEM, "1963-8", "mEq/L", (22, 32), 0,
                           "bicarbonate"),
    "chloride": LabItem(50902, "Chloride", _CHEM, "2075-0", "mEq/L", (96, 108), 0),
    "glucose": LabItem(50931, "Glucose", _CHEM, "2345-7", "mg/dL", (70, 100), 0),
    "anion_gap": LabItem(50868, "Anion Gap", _CHEM, "1863-0", "mEq/L", (8, 20), 0),
    "magnesium": LabItem(50960, "Magnesium", _CHEM, "2601-3", "mg/dL", (1.6, 2.6), 1),
    "wbc": LabItem(51301, "White Blood Cells", _HEME, "804-5", "K/uL", (4, 11), 1, "wbc"),
    "hemoglobin": LabItem(51222, "Hemoglobin", _HEME, "718-7", "g/dL", (12, 17.5), 1,
                          "hemoglobin"),
    "platelets": LabItem(51265, "Platelet Count", _HEME, "777-3", "K/uL", (150, 440), 0,
                         "platelets"),
    "lactate": LabItem(50813, "Lactate", _GAS, "32693-4", "mmol/L", (0.5, 2), 1, "lactate"),
    "potassium_wb": LabItem(50822, "Potassium, Whole Blood", _GAS, "6298-4", "mEq/L", (3.5, 5.3),
                            1, "potassium"),
    "sodium_wb": LabItem(50824, "Sodium, Whole Blood", _GAS, "2947-0", "mEq/L", (133, 145), 0,
                         "sodium"),
    "hemoglobin_bg": LabItem(50811, "Hemoglobin", _GAS, "718-7", "g/dL", (12, 17.5), 1,
                             "hemoglobin"),
}  # fmt: skip
WBC_COUNT = LabItem(51300, "WBC Count", _HEME, "26464-8", "K/uL", (4, 11), 1, "wbc")
UNUSED_LAB_ITEMS = (LabItem(50820, "pH", _GAS, "11558-4"), LabItem(50821, "pO2", _GAS, "11556-8"))


def check_item_catalogue() -> None:
    """Raise if an item id is not in the concept it stands for, or a filler id is in one."""
    concept_ids = {c.name: set(c.itemids) for c in CONCEPTS}
    concept_ids["gcs"] |= set(GCS_COMPONENT_ITEMIDS)
    any_concept = set().union(*concept_ids.values())
    fahrenheit = {i for c in CHART_CONCEPTS for i in c.fahrenheit_itemids}
    problems = [
        f"{item.itemid} ({item.label})"
        for item in [*CHART_ITEMS.values(), *LAB_ITEMS.values(), WBC_COUNT]
        if (item.concept is None and item.itemid in any_concept)
        or (item.concept is not None and item.itemid not in concept_ids[item.concept])
        or (isinstance(item, ChartItem) and item.fahrenheit != (item.itemid in fahrenheit))
    ]
    if problems:
        raise RuntimeError(f"synthetic item catalogue disagrees with mimic3_concepts: {problems}")


def _impossible_value(concept: str | None) -> float:
    """A value no patient can have: 999, or 0 where 999 is inside the concept's valid range."""
    if concept is None:
        return np.nan
    high = next(c for c in CONCEPTS if c.name == concept).valid[1]
    return 999.0 if high < 999 else 0.0


# ----------------------------------------------------------------------------------------------
# Cohort: patients, admissions and ICU stays with their outcome and latent severity.

CARE_UNITS = np.array(["MICU", "SICU", "CCU", "CSRU", "TSICU", "NICU"])
NICU, CSRU = 5, 3
UNIT_P = np.array([0.37, 0.15, 0.16, 0.19, 0.13])  # adults
UNIT_RISK = np.array([0.35, 0.0, 0.1, -0.9, -0.1, 0.0])
UNIT_ELECTIVE = np.array([0.03, 0.2, 0.1, 0.55, 0.04, 0.0])
UNIT_ARTERIAL = np.array([0.45, 0.6, 0.35, 0.9, 0.6, 0.1])
UNIT_WARD = np.array([50, 33, 7, 14, 57, 56])
ADMISSION_TYPES = np.array(["EMERGENCY", "ELECTIVE", "URGENT", "NEWBORN"])
EMERGENCY, ELECTIVE, URGENT, NEWBORN = range(4)
TYPE_RISK = np.array([0.25, -0.9, 0.1, 0.0])
DEATH_LOGIT = {"intercept": -3.6, "severity": 2.1, "hidden": 0.5, "age": 0.03}
ETHNICITIES = np.array([
    "WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC OR LATINO", "HISPANIC/LATINO - PUERTO RICAN",
    "ASIAN", "ASIAN - CHINESE", "UNKNOWN/NOT SPECIFIED", "UNABLE TO OBTAIN",
    "PATIENT DECLINED TO ANSWER", "OTHER",
])  # fmt: skip
ETHNICITY_P = np.array([0.71, 0.09, 0.03, 0.01, 0.02, 0.01, 0.08, 0.015, 0.01, 0.025])
DIAGNOSES = np.array([
    ("SEPSIS", "PNEUMONIA", "GASTROINTESTINAL BLEED", "ALTERED MENTAL STATUS", "HYPOTENSION"),
    ("ABDOMINAL PAIN", "SMALL BOWEL OBSTRUCTION", "PANCREATITIS", "BOWEL PERFORATION", "SEPSIS"),
    ("CONGESTIVE HEART FAILURE", "ACUTE MYOCARDIAL INFARCTION", "CHEST PAIN", "STEMI", "SYNCOPE"),
    ("CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA", "AORTIC STENOSIS",
     "MITRAL REGURGITATION", "CORONARY ARTERY DISEASE", "AORTIC VALVE REPLACEMENT"),
    ("S/P FALL", "MOTOR VEHICLE ACCIDENT", "SUBDURAL HEMATOMA", "INTRACRANIAL HEMORRHAGE",
     "TRAUMA"),
    ("NEWBORN",) * 5,
])  # fmt: skip
CHOICES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "emergency_location": (
        ("EMERGENCY ROOM ADMIT", "TRANSFER FROM HOSP/EXTRAM", "CLINIC REFERRAL/PREMATURE"),
        (0.72, 0.2, 0.08),
    ),
    "discharge_location": (
        ("HOME", "HOME HEALTH CARE", "SNF", "REHAB/DISTINCT PART HOSP", "LONG TERM CARE HOSPITAL"),
        (0.34, 0.3, 0.2, 0.12, 0.04),
    ),
    "insurance_under_65": (
        ("Private", "Medicaid", "Medicare", "Government", "Self Pay"),
        (0.55, 0.25, 0.1, 0.06, 0.04),
    ),
    "language": (("ENGL", "", "SPAN", "RUSS", "PTUN"), (0.6, 0.3, 0.05, 0.02, 0.03)),
    "religion": (
        ("CATHOLIC", "NOT SPECIFIED", "PROTESTANT QUAKER", "JEWISH", "UNOBTAINABLE", "OTHER"),
        (0.35, 0.2, 0.15, 0.1, 0.12, 0.08),
    ),
    "marital_status": (
        ("MARRIED", "SINGLE", "WIDOWED", "DIVORCED", "", "SEPARATED"),
        (0.45, 0.25, 0.14, 0.07, 0.07, 0.02),
    ),
}


@dataclass
class Cohort:
    """One chunk's ICU stays (arrays of one entry per stay unless noted); times in seconds."""

    subject_id: np.ndarray
    hadm_id: np.ndarray
    icustay_id: np.ndarray
    patient: np.ndarray  # index into the per-patient arrays below
    first_of_admission: np.ndarray
    neonate: np.ndarray
    metavision: np.ndarray
    unit: np.ndarray
    last_unit: np.ndarray
    admission_type: np.ndarray
    age: np.ndarray  # true age at the first admission (over 89 for the top-coded)
    severity: np.ndarray
    dies: np.ndarray  # the stay's admission ends in death
    admittime: np.ndarray
    intime: np.ndarray
    outtime: np.ndarray
    dischtime: np.ndarray  # of the stay's admission; also the death time when `dies`
    patient_subject_id: np.ndarray  # per patient
    dob: np.ndarray  # per patient
    gender: np.ndarray  # per patient
    ethnicity: np.ndarray  # per patient

    @property
    def death_hours(self) -> np.ndarray:
        """Hours from intime to death (inf when the admission survives)."""
        return np.where(self.dies, (self.dischtime - self.intime) / HOUR, np.inf)


@dataclass
class IdCounters:
    """Running ids and row ids carried from one chunk to the next."""

    patients: int = 0
    admissions: int = 0
    stays: int = 0
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))

    def take_rows(self, table: str, n: int) -> np.ndarray:
        """`n` consecutive row ids for `table`, continuing from the previous chunk."""
        start = self.rows[table]
        self.rows[table] = start + n
        return np.arange(start + 1, start + n + 1, dtype=np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _group_starts(group: np.ndarray) -> np.ndarray:
    """For sorted group labels, the position where each element's group starts."""
    start = np.r_[True, group[1:] != group[:-1]]
    return np.maximum.accumulate(np.where(start, np.arange(len(group)), 0))


def _to_minute(seconds: np.ndarray) -> np.ndarray:
    return np.floor(seconds / MINUTE) * MINUTE


def _stays_per_patient(rng: np.random.Generator, n_stays: int) -> tuple[np.ndarray, np.ndarray]:
    """(number of ICU stays, neonate flag) per patient; the stays add up to exactly n_stays."""
    neonate = rng.random(n_stays) < 0.02
    counts = np.where(neonate, 1, rng.choice([1, 2, 3], size=n_stays, p=[0.84, 0.115, 0.045]))
    n_patients = int(np.searchsorted(np.cumsum(counts), n_stays)) + 1
    counts = counts[:n_patients].copy()
    counts[-1] -= counts.sum() - n_stays
    return counts, neonate[:n_patients]


def _unit_and_type(rng: np.random.Generator, neonate: np.ndarray) -> tuple[np.ndarray, ...]:
    """First and last care unit and admission type per stay."""
    n = len(neonate)
    unit = np.where(neonate, NICU, rng.choice(5, size=n, p=UNIT_P))
    moved = (rng.random(n) < 0.08) & ~neonate
    last_unit = np.where(moved, rng.choice(5, size=n, p=UNIT_P), unit)
    u = rng.random(n)
    elective = UNIT_ELECTIVE[unit]
    kind = np.where(u < elective, ELECTIVE, np.where(u < elective + 0.03, URGENT, EMERGENCY))
    return unit, last_unit, np.where(neonate, NEWBORN, kind)


def _death_draw(
    rng: np.random.Generator,
    severity: np.ndarray,
    age: np.ndarray,
    kind: np.ndarray,
    unit: np.ndarray,
    neonate: np.ndarray,
) -> np.ndarray:
    """Whether an admission starting with this stay would end in death."""
    n, w = len(severity), DEATH_LOGIT
    logit = (
        w["intercept"]
        + w["severity"] * severity
        + w["hidden"] * rng.normal(0.0, 1.0, n)  # never observed in the tables
        + w["age"] * (np.minimum(age, 95) - 65)
        + TYPE_RISK[kind]
        + UNIT_RISK[unit]
    )
    return np.where(neonate, rng.random(n) < 0.01, rng.random(n) < _sigmoid(logit))


def _admissions(
    rng: np.random.Generator, order: np.ndarray, patient: np.ndarray, dies_draw: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(admission index, first stay of its admission, admission ends in death) per stay.

    A later stay is a readmission to the ICU in the same admission or a new admission; once an
    admission ends in death, the patient's later stays belong to it.
    """
    new = (order == 0) | (rng.random(len(order)) < 0.65)
    died = (new & dies_draw).astype(np.int64)
    deaths_before = np.cumsum(died) - died
    new &= ~(deaths_before > deaths_before[_group_starts(patient)])
    admission = np.cumsum(new) - 1
    dies = (new & dies_draw)[np.flatnonzero(new)][admission]
    return admission, new, dies


def draw_cohort(rng: np.random.Generator, n_stays: int, ids: IdCounters) -> Cohort:
    """Patients, admissions and stays of one chunk, with outcomes and times."""
    counts, neonate_p = _stays_per_patient(rng, n_stays)
    n_patients = len(counts)
    patient = np.repeat(np.arange(n_patients), counts)
    order = np.arange(n_stays) - _group_starts(patient)
    neonate = neonate_p[patient]

    age_p = rng.normal(62, 15.5, n_patients)  # ~4% over 89
    age_p = np.where(age_p < 18, rng.uniform(18, 30, n_patients), age_p)
    age_p = np.where(neonate_p, 0.0, age_p)
    metavision_p = rng.random(n_patients) < 0.45

    unit, last_unit, kind = _unit_and_type(rng, neonate)
    severity = rng.normal(0.0, 1.0, n_stays) + 0.15 * (unit == 0) - 0.3 * (kind == ELECTIVE)
    age = age_p[patient]
    dies_draw = _death_draw(rng, severity, age, kind, unit, neonate)
    admission, first_of_admission, dies = _admissions(rng, order, patient, dies_draw)

    first_admit = _to_minute(T2100 + rng.uniform(0, FIRST_ADMIT_SPAN, n_patients))
    times = _timeline(rng, order, first_admit[patient], first_of_admission, admission, dies, unit)
    subject_p = 10_000 + ids.patients + np.arange(n_patients)
    last_intime = times["intime"][np.r_[patient[1:] != patient[:-1], True]]
    top_coded = ~neonate_p & (age_p + (last_intime - first_admit) / YEAR > 89)
    cohort = Cohort(
        subject_id=subject_p[patient],
        hadm_id=100_000 + ids.admissions + admission,
        icustay_id=200_000 + ids.stays + np.arange(n_stays),
        patient=patient,
        first_of_admission=first_of_admission,
        neonate=neonate,
        metavision=metavision_p[patient],
        unit=unit,
        last_unit=last_unit,
        admission_type=kind,
        age=age,
        severity=severity,
        dies=dies,
        **times,
        patient_subject_id=subject_p,
        dob=_dates_of_birth(rng, first_admit, age_p, top_coded, neonate_p),
        gender=np.where(rng.random(n_patients) < 0.56, "M", "F"),
        ethnicity=rng.choice(len(ETHNICITIES), size=n_patients, p=ETHNICITY_P),
    )
    ids.patients += n_patients
    ids.admissions += int(admission[-1]) + 1
    ids.stays += n_stays
    return cohort


def _timeline(
    rng: np.random.Generator,
    order: np.ndarray,
    first_admit: np.ndarray,
    new_admission: np.ndarray,
    admission: np.ndarray,
    dies: np.ndarray,
    unit: np.ndarray,
) -> dict[str, np.ndarray]:
    """admittime, intime, outtime and dischtime per stay, stay after stay of each patient."""
    n = len(order)
    last_of_admission = np.r_[admission[1:] != admission[:-1], True]
    neonate = unit == NICU
    dies_in_icu = dies & last_of_admission & (rng.random(n) < 0.72)
    los_h = np.where(
        dies_in_icu, 4 + rng.lognormal(np.log(55), 0.9, n), rng.lognormal(np.log(50), 0.85, n)
    )
    los_h = np.clip(np.where(neonate, rng.lognormal(np.log(60), 1.0, n), los_h), 0.5, 60 * 24)
    ward_h = np.where(dies, rng.lognormal(np.log(60), 0.9, n), rng.lognormal(np.log(96), 0.7, n))
    ward_h = np.where(dies_in_icu | ~last_of_admission, 0.0, ward_h)  # ICU out to discharge
    delay_h = np.where(rng.random(n) < 0.75, rng.uniform(0.2, 10, n), rng.uniform(10, 96, n))
    delay_h = np.where(unit == CSRU, rng.uniform(3, 9, n), delay_h)  # after surgery
    delay_h = np.where(neonate, rng.uniform(0.1, 3, n), delay_h)
    readmit_h = rng.uniform(12, 24 * 8, n)
    gap_days = 2 + rng.exponential(250, n)

    admittime, intime, outtime = np.zeros(n), np.zeros(n), np.zeros(n)
    for j in range(int(order.max()) + 1):
        now = np.flatnonzero(order == j)
        prev, new = now - 1, new_admission[now]
        if j == 0:
            admittime[now] = first_admit[now]
        else:
            next_admit = _to_minute(outtime[prev] + ward_h[prev] * HOUR + gap_days[now] * DAY)
            admittime[now] = np.where(new, next_admit, admittime[prev])
        readmit = outtime[np.maximum(prev, 0)] + readmit_h[now] * HOUR
        intime[now] = np.floor(np.where(new, admittime[now] + delay_h[now] * HOUR, readmit))
        outtime[now] = np.floor(intime[now] + los_h[now] * HOUR)
    discharge = _to_minute(outtime + ward_h * HOUR)[last_of_admission][admission]
    return {"admittime": admittime, "intime": intime, "outtime": outtime, "dischtime": discharge}


def _dates_of_birth(
    rng: np.random.Generator,
    first_admit: np.ndarray,
    age: np.ndarray,
    top_coded: np.ndarray,
    neonate: np.ndarray,
) -> np.ndarray:
    """Midnight dates of birth; patients over 89 at any stay appear 300 at their first admission."""
    shown_age = np.where(top_coded, 300.0 + rng.uniform(0, 0.2, len(age)), age)
    dob = np.where(neonate, first_admit - rng.uniform(0, 6 * HOUR, len(age)), first_admit)
    return np.floor((dob - np.where(neonate, 0.0, shown_age * YEAR)) / DAY) * DAY


# ----------------------------------------------------------------------------------------------
# PATIENTS, ADMISSIONS, ICUSTAYS.


def _timestamps(seconds: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Seconds since 1970 as timestamps (written `YYYY-MM-DD HH:MM:SS`), null where not valid."""
    mask = None if valid is None else ~np.asarray(valid, dtype=bool)
    return pa.array(np.asarray(seconds, dtype=np.int64), type=pa.timestamp("s"), mask=mask)


def _strings(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values).astype(object), type=pa.string())


def _pick(rng: np.random.Generator, key: str, n: int) -> np.ndarray:
    options, p = CHOICES[key]
    return np.asarray(options)[rng.choice(len(options), size=n, p=p)]


def patients_table(rng: np.random.Generator, c: Cohort, ids: IdCounters) -> pa.Table:
    """One row per patient; hospital deaths have dod = dod_hosp, a quarter of the rest die later."""
    n = len(c.dob)
    hospital_death = np.zeros(n)
    np.maximum.at(hospital_death, c.patient, np.where(c.dies, c.dischtime, 0.0))
    last_discharge = np.zeros(n)
    np.maximum.at(last_discharge, c.patient, c.dischtime)
    in_hospital = hospital_death > 0
    dead = in_hospital | (rng.random(n) < 0.25)
    later = last_discharge + (1 + rng.exponential(400, n)) * DAY
    dod = np.floor(np.where(in_hospital, hospital_death, later) / DAY) * DAY
    ssn = dead & (~in_hospital | (rng.random(n) < 0.7))
    return pa.table(
        {
            "row_id": ids.take_rows("PATIENTS", n),
            "subject_id": c.patient_subject_id,
            "gender": _strings(c.gender),
            "dob": _timestamps(c.dob),
            "dod": _timestamps(dod, dead),
            "dod_hosp": _timestamps(dod, in_hospital),
            "dod_ssn": _timestamps(dod, ssn),
            "expire_flag": dead.astype(np.int64),
        }
    )


def _admission_locations(rng: np.random.Generator, kind: np.ndarray) -> np.ndarray:
    elective = (kind == ELECTIVE) | (kind == NEWBORN)
    location = np.where(kind == URGENT, "TRANSFER FROM HOSP/EXTRAM", "PHYS REFERRAL/NORMAL DELI")
    return np.where(
        elective | (kind == URGENT), location, _pick(rng, "emergency_location", len(kind))
    )


def admissions_table(rng: np.random.Generator, c: Cohort, ids: IdCounters) -> pa.Table:
    """One row per admission, described by its first ICU stay."""
    first = np.flatnonzero(c.first_of_admission)
    n, kind, dies, admit = len(first), c.admission_type[first], c.dies[first], c.admittime[first]
    location = _admission_locations(rng, kind)
    via_ed = location == "EMERGENCY ROOM ADMIT"
    newborn = kind == NEWBORN
    insurance = np.where(
        c.age[first] >= 65,
        np.where(rng.random(n) < 0.88, "Medicare", "Private"),
        _pick(rng, "insurance_under_65", n),
    )
    insurance = np.where(newborn, np.where(rng.random(n) < 0.6, "Private", "Medicaid"), insurance)
    return pa.table(
        {
            "row_id": ids.take_rows("ADMISSIONS", n),
            "subject_id": c.subject_id[first],
            "hadm_id": c.hadm_id[first],
            "admittime": _timestamps(admit),
            "dischtime": _timestamps(c.dischtime[first]),
            "deathtime": _timestamps(c.dischtime[first], dies),
            "admission_type": _strings(ADMISSION_TYPES[kind]),
            "admission_location": _strings(location),
            "discharge_location": _strings(
                np.where(dies, "DEAD/EXPIRED", _pick(rng, "discharge_location", n))
            ),
            "insurance": _strings(insurance),
            "language": _strings(np.where(newborn, "", _pick(rng, "language", n))),
            "religion": _strings(_pick(rng, "religion", n)),
            "marital_status": _strings(np.where(newborn, "", _pick(rng, "marital_status", n))),
            "ethnicity": _strings(ETHNICITIES[c.ethnicity[c.patient[first]]]),
            "edregtime": _timestamps(_to_minute(admit - rng.uniform(1, 8, n) * HOUR), via_ed),
            "edouttime": _timestamps(_to_minute(admit + rng.uniform(0, 1, n) * HOUR), via_ed),
            "diagnosis": _strings(DIAGNOSES[c.unit[first], rng.integers(0, 5, n)]),
            "hospital_expire_flag": dies.astype(np.int64),
            "has_chartevents_data": np.ones(n, dtype=np.int64),
        }
    )


def icustays_table(c: Cohort, ids: IdCounters) -> pa.Table:
    """One row per ICU stay; `los` in fractional days."""
    n = len(c.intime)
    return pa.table(
        {
            "row_id": ids.take_rows("ICUSTAYS", n),
            "subject_id": c.subject_id,
            "hadm_id": c.hadm_id,
            "icustay_id": c.icustay_id,
            "dbsource": _strings(np.where(c.metavision, "metavision", "carevue")),
            "first_careunit": _strings(CARE_UNITS[c.unit]),
            "last_careunit": _strings(CARE_UNITS[c.last_unit]),
            "first_wardid": UNIT_WARD[c.unit],
            "last_wardid": UNIT_WARD[c.last_unit],
            "intime": _timestamps(c.intime),
            "outtime": _timestamps(c.outtime),
            "los": np.round((c.outtime - c.intime) / DAY, 4),
        }
    )


# ----------------------------------------------------------------------------------------------
# Physiology: individual baseline + severity + deterioration before death + noise.


@dataclass(frozen=True)
class Signal:
    """How one measurement depends on the latent state (on the log scale when `log`)."""

    mean: float
    between: float  # SD of the individual baseline
    severity: float  # shift per SD of severity
    noise: float  # SD of one measurement around the baseline
    dying: float  # shift once a dying patient has fully deteriorated
    log: bool = False


SIGNALS: dict[str, Signal] = {
    "hr": Signal(86, 13, 6.5, 7, 24),
    "sbp": Signal(121, 16, -7, 10, -32),
    "dbp": Signal(62, 10, -4, 7, -16),
    "rr": Signal(19, 3.6, 2.0, 3.2, 8),
    "spo2": Signal(97.2, 1.5, -0.9, 1.6, -7),
    "temp": Signal(37.0, 0.35, 0.3, 0.3, 1.2),
    "gcs": Signal(-1.2, 1.0, 0.55, 0.35, 1.6),  # impairment, see _gcs_components
    "glucose": Signal(np.log(130), 0.22, 0.05, 0.18, 0.25, log=True),
    "creatinine": Signal(np.log(1.1), 0.5, 0.2, 0.08, 0.55, log=True),
    "bun": Signal(np.log(22), 0.5, 0.2, 0.07, 0.5, log=True),
    "sodium": Signal(139, 3.6, 0.0, 1.5, 3),
    "potassium": Signal(4.1, 0.35, 0.07, 0.3, 0.5),
    "bicarbonate": Signal(24, 3.2, -1.5, 1.3, -7),
    "chloride": Signal(104, 4, 0.0, 1.6, 0),
    "magnesium": Signal(2.0, 0.2, 0.0, 0.15, 0),
    "wbc": Signal(np.log(10.5), 0.4, 0.14, 0.12, 0.45, log=True),
    "hemoglobin": Signal(10.6, 1.6, -0.22, 0.45, -1.2),
    "platelets": Signal(np.log(210), 0.48, -0.14, 0.08, -0.55, log=True),
    "lactate": Signal(np.log(1.7), 0.38, 0.26, 0.15, 0.9, log=True),
}
SIGNAL_INDEX = {name: i for i, name in enumerate(SIGNALS)}
NEONATE_SHIFT = {"hr": 55.0, "sbp": -55.0, "dbp": -30.0, "rr": 25.0}


@dataclass
class Physiology:
    """The per-stay latent state that measurements are drawn around."""

    cohort: Cohort
    baseline: np.ndarray  # (stays, signals), standard normal
    direction: np.ndarray  # per stay: +1 fever, -1 hypothermia with severity

    @classmethod
    def draw(cls, rng: np.random.Generator, cohort: Cohort) -> Physiology:
        n = len(cohort.intime)
        direction = np.where(rng.random(n) < 0.75, 1.0, -1.0)
        return cls(cohort, rng.standard_normal((n, len(SIGNALS))), direction)

    def level(
        self, rng: np.random.Generator, name: str, stay: np.ndarray, hours: np.ndarray
    ) -> np.ndarray:
        """One draw of `name` per (stay, hours after intime).

        Dying patients deteriorate over the 30 h before death and, more slowly, from the end of
        the window on; survivors' severity fades after the window.
        """
        sig, c = SIGNALS[name], self.cohort
        severity, dies = c.severity[stay], c.dies[stay]
        after = np.clip((hours - WINDOW) / 36.0, 0.0, 1.0)
        now = np.where(dies, severity, severity - 0.6 * after * np.maximum(severity, 0.0))
        ramp = np.clip((hours - c.death_hours[stay] + 30.0) / 30.0, 0.0, 1.0)
        ramp = np.where(dies, np.maximum(ramp, 0.5 * after), 0.0)
        if name == "temp":
            now, ramp = np.maximum(now, 0.0) * self.direction[stay], ramp * self.direction[stay]
        value = (
            sig.mean
            + sig.between * self.baseline[stay, SIGNAL_INDEX[name]]
            + sig.severity * now
            + sig.dying * ramp
            + sig.noise * rng.standard_normal(len(stay))
        )
        if sig.log:
            value = np.exp(value)
        return value + np.where(c.neonate[stay], NEONATE_SHIFT.get(name, 0.0), 0.0)


# ----------------------------------------------------------------------------------------------
# CHARTEVENTS: an hourly grid per stay with one column per charted quantity.


@dataclass(frozen=True)
class ChartColumn:
    """A charted quantity: every `every` grid hours at `phase`, `dropout` of those missing."""

    name: str
    every: int
    phase: int
    dropout: float
    decimals: int = 0
    concept: str | None = None  # gets impossible values, error rows and unreadable entries


CHART_COLUMNS: tuple[ChartColumn, ...] = (
    ChartColumn("hr", 1, 0, 0.02, concept="heart_rate"),
    ChartColumn("sbp", 1, 0, 0.03, concept="sys_bp"),
    ChartColumn("dbp", 1, 0, 0.03, concept="dias_bp"),
    ChartColumn("mbp", 1, 0, 0.04, concept="mean_bp"),
    ChartColumn("rr", 1, 0, 0.03, concept="resp_rate"),
    ChartColumn("spo2", 1, 0, 0.03, concept="spo2"),
    ChartColumn("temp", 4, 1, 0.05, 1, concept="temp_c"),
    ChartColumn("gcs_a", 4, 0, 0.04, concept="gcs"),  # CareVue total (numeric), MV eye (text)
    ChartColumn("gcs_v", 4, 0, 0.0),  # MetaVision only, charted with gcs_a
    ChartColumn("gcs_m", 4, 0, 0.0),
    ChartColumn("glucose", 6, 2, 0.1, concept="glucose"),
    ChartColumn("rhythm", 4, 0, 0.05),
    ChartColumn("alarm_hi", 12, 3, 0.0),
    ChartColumn("alarm_lo", 12, 3, 0.0),
    ChartColumn("o2flow", 4, 2, 0.1),
    ChartColumn("turn", 2, 1, 0.1),
)
COL = {col.name: j for j, col in enumerate(CHART_COLUMNS)}
GCS_COLUMNS = [COL["gcs_a"], COL["gcs_v"], COL["gcs_m"]]


def _chart_role(column: str, metavision: bool, arterial: bool, fahrenheit: bool) -> str | None:
    """The CHART_ITEMS key that charts `column` in a stay of this kind, or None."""
    bp = "art" if arterial else "nbp"
    roles = {
        "sbp": f"{bp}_sbp",
        "dbp": f"{bp}_dbp",
        "mbp": f"{bp}_mbp",
        "temp": "temp_f" if fahrenheit else "temp_c",
        "gcs_a": "gcs_eye" if metavision else "gcs",
        "gcs_v": "gcs_verbal" if metavision else None,
        "gcs_m": "gcs_motor" if metavision else None,
        "turn": "turn" if metavision else None,
    }
    role = roles.get(column, column)
    return None if role is None else f"{'mv' if metavision else 'cv'}_{role}"


def _chart_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item id and unit code per (stay kind, column), and the unit vocabulary.

    Stay kind = 4 * metavision + 2 * arterial line + temperature in °F.
    """
    units = sorted({item.uom for item in CHART_ITEMS.values()})
    itemid = np.zeros((8, len(CHART_COLUMNS)), dtype=np.int64)
    unit = np.zeros((8, len(CHART_COLUMNS)), dtype=np.int32)
    for kind in range(8):
        for j, col in enumerate(CHART_COLUMNS):
            role = _chart_role(col.name, kind >= 4, bool(kind & 2), bool(kind & 1))
            if role is not None:
                itemid[kind, j] = CHART_ITEMS[role].itemid
                unit[kind, j] = units.index(CHART_ITEMS[role].uom)
    return itemid, unit, np.array(units, dtype=object)


CHART_ITEMID, CHART_UNIT, CHART_UNITS = _chart_tables()
CHART_DECIMALS = np.array([col.decimals for col in CHART_COLUMNS])
CHART_IMPOSSIBLE = np.array([_impossible_value(col.concept) for col in CHART_COLUMNS])
TEXT_GROUPS: dict[str, tuple[str, ...]] = {
    "rhythm_cv": ("Sinus Rhythm", "Sinus Tachy", "Atrial Fib"),
    "rhythm_mv": ("SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "AF (Atrial Fibrillation)"),
    "gcs_a": ("None", "To Pain", "To Speech", "Spontaneously"),
    "gcs_v": ("No Response-ETT", "Incomprehensible sounds", "Inappropriate Words", "Confused",
              "Oriented"),
    "gcs_m": ("No response", "Abnormal extension", "Abnormal Flexion", "Flex-withdraws",
              "Localizes Pain", "Obeys Commands"),
    "turn": ("Side to Side", "Supine", "Right Side", "Left Side"),
    "unreadable": ("Unable to assess", "Refused"),
}  # fmt: skip
TEXT_OFFSET = dict(
    zip(TEXT_GROUPS, np.cumsum([0] + [len(g) for g in TEXT_GROUPS.values()])[:-1], strict=True)
)
CHART_TEXT = pa.array([t for group in TEXT_GROUPS.values() for t in group], type=pa.string())
NO_TEXT, EMPTY_VALUE = -1, -2


def _grid(rng: np.random.Generator, c: Cohort) -> tuple[np.ndarray, np.ndarray]:
    """(stay, seconds) of every chart time: one near intime, then on the hour, up to 72 h."""
    n = len(c.intime)
    end = c.intime + np.minimum(c.outtime - c.intime, CHART_HOURS * HOUR)
    top = np.ceil((c.intime + 1) / HOUR) * HOUR
    first = _to_minute(np.minimum(c.intime + rng.uniform(-90, 20, n) * MINUTE, top - 300))
    times = 1 + np.maximum(np.floor((end - top) / HOUR) + 1, 0).astype(np.int64)
    stay = np.repeat(np.arange(n), times)
    k = np.arange(len(stay)) - _group_starts(stay)
    time = np.where(k == 0, first[stay], top[stay] + (k - 1) * HOUR)
    jitter = np.where((k > 0) & (rng.random(len(k)) < 0.2), rng.integers(-15, 16, len(k)), 0)
    return stay, time + jitter * MINUTE


def _gcs_components(
    rng: np.random.Generator, phys: Physiology, stay: np.ndarray, hours: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eye (1-4), verbal (1-5), motor (1-6) from a latent impairment."""
    impairment = _sigmoid(2.2 * phys.level(rng, "gcs", stay, hours))
    noise = rng.standard_normal((3, len(stay))) * 0.45
    eye = np.clip(np.rint(4 - 3.2 * impairment + noise[0]), 1, 4)
    verbal = np.clip(np.rint(5 - 4.4 * impairment + noise[1]), 1, 5)
    motor = np.clip(np.rint(6 - 5.2 * impairment + noise[2]), 1, 6)
    return eye, verbal, motor


def _chart_values(
    rng: np.random.Generator,
    phys: Physiology,
    stay: np.ndarray,
    hours: np.ndarray,
    kind: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(valuenum, text code) per grid time and chart column, in charted units."""
    c, g = phys.cohort, len(stay)
    values = np.full((g, len(CHART_COLUMNS)), np.nan)
    text = np.full((g, len(CHART_COLUMNS)), NO_TEXT, dtype=np.int64)
    for name in ("hr", "sbp", "dbp", "rr", "spo2", "temp", "glucose"):
        values[:, COL[name]] = phys.level(rng, name, stay, hours)
    values[:, COL["spo2"]] = np.minimum(values[:, COL["spo2"]], 100)
    values[:, COL["dbp"]] = np.minimum(values[:, COL["dbp"]], values[:, COL["sbp"]] - 10)
    values[:, COL["mbp"]] = (values[:, COL["sbp"]] + 2 * values[:, COL["dbp"]]) / 3
    values[:, COL["mbp"]] += rng.normal(0, 2, g)
    temp = values[:, COL["temp"]]
    values[:, COL["temp"]] = np.where(kind & 1, temp * 1.8 + 32, temp)

    metavision = c.metavision[stay]
    scores = _gcs_components(rng, phys, stay, hours)
    values[:, COL["gcs_a"]] = np.where(metavision, scores[0], sum(scores))
    values[:, COL["gcs_v"]], values[:, COL["gcs_m"]] = scores[1], scores[2]
    for j, score in zip(GCS_COLUMNS, scores, strict=True):
        offset = TEXT_OFFSET[CHART_COLUMNS[j].name]
        text[:, j] = np.where(metavision, offset + score - 1, NO_TEXT)

    afib = (rng.random(len(c.intime)) < 0.1)[stay]
    rhythm = np.where(afib, 2, np.where(values[:, COL["hr"]] > 100, 1, 0))
    text[:, COL["rhythm"]] = rhythm + np.where(
        metavision, TEXT_OFFSET["rhythm_mv"], TEXT_OFFSET["rhythm_cv"]
    )
    values[:, COL["alarm_hi"]] = np.where(
        metavision, 120, rng.choice([100, 120], len(c.intime))[stay]
    )
    values[:, COL["alarm_lo"]] = np.where(metavision, 50, 60)
    values[:, COL["o2flow"]] = rng.choice([2.0, 3.0, 4.0, 6.0], size=len(c.intime))[stay]
    text[:, COL["turn"]] = TEXT_OFFSET["turn"] + rng.integers(0, 4, g)
    return values, text


def _chart_mask(
    rng: np.random.Generator, c: Cohort, stay: np.ndarray, hours: np.ndarray, kind: np.ndarray
) -> np.ndarray:
    """Which (grid time, column) cells are charted; ~5% of stays chart nothing in the window."""
    n, g = len(c.intime), len(stay)
    k = np.arange(g) - _group_starts(stay)
    no_early = rng.random(n) < 0.05
    on_oxygen = rng.random(n) < 0.5
    row_ok = (rng.random(g) > 0.05) & ~(no_early[stay] & (hours < WINDOW))
    every = np.array([col.every for col in CHART_COLUMNS])
    phase = np.array([col.phase for col in CHART_COLUMNS])
    dropout = np.array([col.dropout for col in CHART_COLUMNS])
    mask = (k[:, None] % every == phase) & (rng.random((g, len(every))) > dropout)
    mask[:, GCS_COLUMNS] = mask[:, GCS_COLUMNS[:1]]  # components charted together
    mask &= row_ok[:, None] & (CHART_ITEMID[kind] > 0)
    mask[:, COL["o2flow"]] &= on_oxygen[stay]
    return mask


def _chart_quirks(
    rng: np.random.Generator,
    valuenum: np.ndarray,
    code: np.ndarray,
    col: np.ndarray,
    mv: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Impossible values (0.3%), MetaVision `error=1` rows (0.5%), unreadable entries (0.1%).

    Returns (valuenum, text code, error, warning).
    """
    m = len(valuenum)
    numeric = ~np.isnan(CHART_IMPOSSIBLE[col]) & (code == NO_TEXT)
    draw, coin = rng.random(m), rng.random(m) < 0.5
    impossible = numeric & (draw < 0.003)
    error = numeric & mv & (draw >= 0.003) & (draw < 0.008)
    unreadable = numeric & (draw >= 0.008) & (draw < 0.009)
    valuenum = np.where(impossible, np.where(coin, CHART_IMPOSSIBLE[col], 0.0), valuenum)
    valuenum = np.where(error, np.rint(valuenum * rng.uniform(0.4, 1.6, m)), valuenum)
    unreadable_text = TEXT_OFFSET["unreadable"] + rng.integers(0, 2, m)
    code = np.where(unreadable, np.where(coin, unreadable_text, EMPTY_VALUE), code)
    no_number = unreadable | np.isin(col, [COL["rhythm"], COL["turn"]])
    return np.where(no_number, np.nan, valuenum), code, error, error & coin


def _value_text(valuenum: np.ndarray, code: np.ndarray, vocabulary: pa.Array) -> pa.Array:
    """`value` column: the number as text, a word from `vocabulary`, or empty."""
    number = pc.cast(pa.array(valuenum, from_pandas=True), pa.string())
    words = pc.take(vocabulary, pa.array(np.maximum(code, 0)))
    value = pc.if_else(pa.array(code >= 0), words, number)
    return pc.if_else(pa.array(code == EMPTY_VALUE), pa.scalar(None, pa.string()), value)


def _dictionary(codes: np.ndarray, vocabulary: np.ndarray, null: np.ndarray) -> pa.Array:
    """A dictionary-encoded string column (cheap to build and write); nulls where `null`."""
    indices = pa.array(np.asarray(codes, dtype=np.int32), mask=np.asarray(null, dtype=bool))
    return pa.DictionaryArray.from_arrays(indices, pa.array(vocabulary, type=pa.string()))


def chart_events(rng: np.random.Generator, phys: Physiology, ids: IdCounters) -> pa.Table:
    """All chart rows of one chunk, ordered by stay, chart time and item."""
    c, n = phys.cohort, len(phys.cohort.intime)
    arterial = rng.random(n) < UNIT_ARTERIAL[c.unit]
    fahrenheit = rng.random(n) < 0.7
    stay_kind = 4 * c.metavision + 2 * arterial + fahrenheit
    grid_stay, grid_time = _grid(rng, c)
    hours = (grid_time - c.intime[grid_stay]) / HOUR
    values, text = _chart_values(rng, phys, grid_stay, hours, stay_kind[grid_stay])
    cell = np.flatnonzero(_chart_mask(rng, c, grid_stay, hours, stay_kind[grid_stay]).ravel())
    row, col = np.divmod(cell, len(CHART_COLUMNS))
    stay = grid_stay[row]
    kind, mv, m = stay_kind[stay], c.metavision[stay], len(cell)
    scale = 10.0 ** CHART_DECIMALS[col]
    valuenum = np.rint(values.ravel()[cell] * scale) / scale
    valuenum, code, error, warning = _chart_quirks(rng, valuenum, text.ravel()[cell], col, mv)
    del values, text
    unit = CHART_UNIT[kind, col]
    storetime = grid_time + rng.integers(1, 91, len(grid_time)) * MINUTE
    return pa.table(
        {
            "row_id": ids.take_rows("CHARTEVENTS", m),
            "subject_id": c.subject_id[stay],
            "hadm_id": c.hadm_id[stay],
            "icustay_id": c.icustay_id[stay],
            "itemid": CHART_ITEMID[kind, col],
            "charttime": _timestamps(grid_time[row]),
            "storetime": _timestamps(storetime[row]),
            "cgid": rng.integers(14_000, 21_600, len(grid_time))[row],
            "value": _value_text(valuenum, code, CHART_TEXT),
            "valuenum": pa.array(valuenum, from_pandas=True),
            "valueuom": _dictionary(unit, CHART_UNITS, CHART_UNITS[unit] == ""),
            "warning": pa.array(warning.astype(np.int64), mask=~mv),
            "error": pa.array(error.astype(np.int64), mask=~mv),
            "resultstatus": pa.nulls(m, pa.string()),
            "stopped": _dictionary(np.zeros(m), np.array(["NotStopd"], dtype=object), mv),
        }
    )


# ----------------------------------------------------------------------------------------------
# LABEVENTS: panels every 5-12 h, from up to 12 h before intime to 12 h after the charted part.

LAB_PANELS: dict[str, tuple[str, ...]] = {
    "chem": ("creatinine", "bun", "sodium", "potassium", "bicarbonate", "chloride", "glucose",
             "anion_gap", "magnesium"),
    "heme": ("wbc", "hemoglobin", "platelets"),
    "gas": ("lactate", "potassium_wb", "sodium_wb", "hemoglobin_bg"),
}  # fmt: skip
LAB_COLUMNS: tuple[str, ...] = tuple(LAB_ITEMS)
LAB = {name: j for j, name in enumerate(LAB_COLUMNS)}
LAB_OPTIONAL = {"magnesium": 0.6, "potassium_wb": 0.35, "sodium_wb": 0.35, "hemoglobin_bg": 0.2}
LAB_ITEMID = np.array([LAB_ITEMS[name].itemid for name in LAB_COLUMNS])
LAB_DECIMALS = np.array([LAB_ITEMS[name].decimals for name in LAB_COLUMNS])
LAB_NORMAL = np.array([LAB_ITEMS[name].normal for name in LAB_COLUMNS])
LAB_UNITS = np.array(sorted({item.uom for item in LAB_ITEMS.values()}), dtype=object)
LAB_UNIT = np.array([list(LAB_UNITS).index(LAB_ITEMS[name].uom) for name in LAB_COLUMNS])
LAB_IN_CONCEPT = np.array([LAB_ITEMS[name].concept is not None for name in LAB_COLUMNS])
LAB_TEXT = pa.array(["ERROR", "UNABLE TO REPORT", "HEMOLYZED"], type=pa.string())


def _lab_draws(rng: np.random.Generator, c: Cohort) -> tuple[np.ndarray, np.ndarray]:
    """(stay, seconds) of every blood draw."""
    n = len(c.intime)
    early = rng.random(n) < 0.75
    start = c.intime + np.where(early, -rng.uniform(0, 12, n), rng.uniform(0.3, 4, n)) * HOUR
    end = c.intime + np.minimum(c.outtime - c.intime, CHART_HOURS * HOUR) + 12 * HOUR
    draws = np.ceil((end - start) / (5 * HOUR)).astype(np.int64) + 1
    stay = np.repeat(np.arange(n), draws)
    elapsed = np.cumsum(rng.uniform(5, 12, len(stay)) * HOUR)
    elapsed -= elapsed[_group_starts(stay)]
    time = _to_minute(start[stay] + elapsed)
    keep = time <= end[stay]
    return stay[keep], time[keep]


def _lab_values(
    rng: np.random.Generator, phys: Physiology, stay: np.ndarray, hours: np.ndarray
) -> np.ndarray:
    """(draws, lab columns) values in reported units."""
    values = np.empty((len(stay), len(LAB_COLUMNS)))
    for name in LAB_COLUMNS:
        if name in SIGNALS:
            values[:, LAB[name]] = phys.level(rng, name, stay, hours)
    anion_gap = (
        values[:, LAB["sodium"]] - values[:, LAB["chloride"]] - values[:, LAB["bicarbonate"]]
    )
    values[:, LAB["anion_gap"]] = np.maximum(anion_gap, 3)
    noise = rng.standard_normal((3, len(stay)))
    values[:, LAB["potassium_wb"]] = values[:, LAB["potassium"]] + 0.15 * noise[0]
    values[:, LAB["sodium_wb"]] = values[:, LAB["sodium"]] - 2 + noise[1]
    values[:, LAB["hemoglobin_bg"]] = values[:, LAB["hemoglobin"]] + 0.3 * noise[2]
    return values


def _lab_mask(rng: np.random.Generator, c: Cohort, stay: np.ndarray) -> np.ndarray:
    """Which (draw, column) cells were measured; blood gases (lactate) for about half the stays."""
    n, d = len(c.intime), len(stay)
    first = np.r_[True, stay[1:] != stay[:-1]]
    has_gas = rng.random(n) < _sigmoid(-0.1 + 0.9 * c.severity)
    panel = {
        "chem": first | (rng.random(d) < 0.92),
        "heme": first | (rng.random(d) < 0.85),
        "gas": has_gas[stay] & (rng.random(d) < 0.6),
    }
    mask = np.zeros((d, len(LAB_COLUMNS)), dtype=bool)
    for name, members in LAB_PANELS.items():
        for member in members:
            mask[:, LAB[member]] = panel[name] & (rng.random(d) < LAB_OPTIONAL.get(member, 1.0))
    return mask


def lab_events(rng: np.random.Generator, phys: Physiology, ids: IdCounters) -> pa.Table:
    """All lab rows of one chunk; draws before the admission have no hadm_id."""
    c = phys.cohort
    draw_stay, draw_time = _lab_draws(rng, c)
    hours = (draw_time - c.intime[draw_stay]) / HOUR
    values = _lab_values(rng, phys, draw_stay, hours)
    cell = np.flatnonzero(_lab_mask(rng, c, draw_stay).ravel())
    row, col = np.divmod(cell, len(LAB_COLUMNS))
    stay, time, m = draw_stay[row], draw_time[row], len(cell)
    scale = 10.0 ** LAB_DECIMALS[col]
    valuenum = np.maximum(np.rint(values.ravel()[cell] * scale) / scale, 1 / scale)
    del values

    itemid = np.where(
        (col == LAB["wbc"]) & (rng.random(m) < 0.1), WBC_COUNT.itemid, LAB_ITEMID[col]
    )
    draw = rng.random(m)
    as_text = LAB_IN_CONCEPT[col] & (draw < 0.002)
    valuenum = np.where(LAB_IN_CONCEPT[col] & (draw >= 0.002) & (draw < 0.0025), 0.0, valuenum)
    normal = (valuenum >= LAB_NORMAL[col, 0]) & (valuenum <= LAB_NORMAL[col, 1])
    valuenum = np.where(as_text, np.nan, valuenum)
    code = np.where(as_text, rng.integers(0, len(LAB_TEXT), m), NO_TEXT)
    return pa.table(
        {
            "row_id": ids.take_rows("LABEVENTS", m),
            "subject_id": c.subject_id[stay],
            "hadm_id": pa.array(c.hadm_id[stay], mask=time < c.admittime[stay]),
            "itemid": itemid,
            "charttime": _timestamps(time),
            "value": _value_text(valuenum, code, LAB_TEXT),
            "valuenum": pa.array(valuenum, from_pandas=True),
            "valueuom": _dictionary(LAB_UNIT[col], LAB_UNITS, np.zeros(m, dtype=bool)),
            "flag": _dictionary(
                np.zeros(m), np.array(["abnormal"], dtype=object), normal | as_text
            ),
        }
    )


# ----------------------------------------------------------------------------------------------
# Dictionaries and writing.


def d_items_rows() -> list[tuple]:
    """D_ITEMS rows for every chart item written plus a few unused ones, by item id."""
    items = sorted([*CHART_ITEMS.values(), *UNUSED_CHART_ITEMS], key=lambda item: item.itemid)
    return [
        (row_id, it.itemid, it.label, it.abbreviation, it.dbsource, "chartevents", it.category,
         it.uom if it.dbsource == "metavision" else "", it.param_type, "")
        for row_id, it in enumerate(items, start=1)
    ]  # fmt: skip


def d_labitems_rows() -> list[tuple]:
    """D_LABITEMS rows for every lab item written plus a few unused ones, by item id."""
    items = sorted([*LAB_ITEMS.values(), WBC_COUNT, *UNUSED_LAB_ITEMS], key=lambda it: it.itemid)
    return [
        (row_id, it.itemid, it.label, "Blood", it.category, it.loinc)
        for row_id, it in enumerate(items, start=1)
    ]


class CsvSink:
    """One table's CSV file, optionally gzipped with a fixed header so the bytes reproduce."""

    OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="none")

    def __init__(self, path: Path, columns: tuple[str, ...], compress: bool) -> None:
        self._raw: BinaryIO = path.open("wb")
        self._file: BinaryIO = self._raw
        if compress:
            self._file = gzip.GzipFile(
                filename="", mode="wb", fileobj=self._raw, compresslevel=6, mtime=0
            )
        self._file.write((",".join(columns) + "\n").encode())
        self.columns = columns
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Append a table without quoting (generated values contain no commas or quotes)."""
        if tuple(table.column_names) != self.columns:
            raise RuntimeError(f"columns {table.column_names} differ from {self.columns}")
        pacsv.write_csv(table, self._file, self.OPTIONS)
        self.rows += table.num_rows

    def write_rows(self, rows: list[tuple]) -> None:
        """Append rows through the csv module, which quotes where needed."""
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        self._file.write(buffer.getvalue().encode())
        self.rows += len(rows)

    def close(self) -> None:
        if self._file is not self._raw:
            self._file.close()
        self._raw.close()


def _chunks(n_stays: int) -> Iterator[tuple[int, int]]:
    """(chunk index, stays in the chunk)."""
    for index, start in enumerate(range(0, n_stays, CHUNK_STAYS)):
        yield index, min(CHUNK_STAYS, n_stays - start)


def _check_arguments(n_stays: object, seed: object) -> None:
    for name, value, least in (("n_stays", n_stays, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise ConfigError(f"{name} must be a whole number >= {least}, got {value!r}")


def write_synthetic_mimic(
    out_dir: Path, *, n_stays: int = 10_000, seed: int = 0, compress: bool = False
) -> dict[str, int]:
    """Write PATIENTS, ADMISSIONS, ICUSTAYS, CHARTEVENTS, LABEVENTS, D_ITEMS, D_LABITEMS as CSV;
    return rows per table.

    Files are `<TABLE>.csv` (`.csv.gz` with `compress`) in `out_dir`, created if needed. The same
    `seed` and `n_stays` give the same bytes; stays are made in chunks so memory stays bounded.
    """
    _check_arguments(n_stays, seed)
    check_item_catalogue()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".csv.gz" if compress else ".csv"
    ids = IdCounters()
    with ExitStack() as stack:
        sinks: dict[str, CsvSink] = {}
        for table, columns in TABLE_COLUMNS.items():
            sinks[table] = CsvSink(out_dir / f"{table}{suffix}", columns, compress)
            stack.callback(sinks[table].close)
        for index, size in _chunks(int(n_stays)):
            rng = np.random.default_rng([int(seed), index])
            cohort = draw_cohort(rng, size, ids)
            physiology = Physiology.draw(rng, cohort)
            sinks["PATIENTS"].write(patients_table(rng, cohort, ids))
            sinks["ADMISSIONS"].write(admissions_table(rng, cohort, ids))
            sinks["ICUSTAYS"].write(icustays_table(cohort, ids))
            sinks["CHARTEVENTS"].write(chart_events(rng, physiology, ids))
            sinks["LABEVENTS"].write(lab_events(rng, physiology, ids))
        sinks["D_ITEMS"].write_rows(d_items_rows())
        sinks["D_LABITEMS"].write_rows(d_labitems_rows())
        return {table: sink.rows for table, sink in sinks.items()}
