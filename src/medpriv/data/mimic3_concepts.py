"""Vital-sign and lab concepts: MIMIC-III item ids (CareVue and MetaVision), units, valid ranges.

Item ids follow the MIT-LCP mimic-code concept definitions. A value outside `valid` (after unit
conversion) is physiologically impossible and dropped before aggregation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Concept:
    """One measured quantity, gathered from several item ids."""

    name: str
    table: str  # "chartevents" or "labevents"
    itemids: tuple[int, ...]
    valid: tuple[float, float]  # inclusive physiological bounds after conversion
    unit: str
    fahrenheit_itemids: tuple[int, ...] = ()  # converted with (x - 32) / 1.8


CHART_CONCEPTS: tuple[Concept, ...] = (
    Concept("heart_rate", "chartevents", (211, 220045), (1, 299), "bpm"),
    Concept("sys_bp", "chartevents", (51, 442, 455, 6701, 220179, 220050), (1, 399), "mmHg"),
    Concept("dias_bp", "chartevents", (8368, 8440, 8441, 8555, 220180, 220051), (1, 299), "mmHg"),
    Concept(
        "mean_bp", "chartevents", (456, 52, 6702, 443, 220052, 220181, 225312), (1, 299), "mmHg"
    ),
    Concept("resp_rate", "chartevents", (615, 618, 220210, 224690), (1, 69), "/min"),
    Concept(
        "temp_c",
        "chartevents",
        (223762, 676, 223761, 678),
        (15, 45),
        "degC",
        fahrenheit_itemids=(223761, 678),
    ),
    Concept("spo2", "chartevents", (646, 220277), (1, 100), "%"),
    # GCS total is charted directly in CareVue (198); MetaVision charts eye/verbal/motor
    # separately (220739, 223900, 223901) and the extractor sums them per chart time.
    Concept("gcs", "chartevents", (198,), (3, 15), "points"),
    Concept(
        "glucose",
        "chartevents",
        (807, 811, 1529, 3745, 3744, 225664, 220621, 226537),
        (1, 1999),
        "mg/dL",
    ),
)

GCS_COMPONENT_ITEMIDS: tuple[int, ...] = (220739, 223900, 223901)

LAB_CONCEPTS: tuple[Concept, ...] = (
    Concept("creatinine", "labevents", (50912,), (0.1, 150), "mg/dL"),
    Concept("bun", "labevents", (51006,), (1, 299), "mg/dL"),
    Concept("sodium", "labevents", (50983, 50824), (90, 199), "mEq/L"),
    Concept("potassium", "labevents", (50971, 50822), (0.5, 29), "mEq/L"),
    Concept("bicarbonate", "labevents", (50882,), (1, 99), "mEq/L"),
    Concept("wbc", "labevents", (51300, 51301), (0.01, 999), "K/uL"),
    Concept("hemoglobin", "labevents", (51222, 50811), (1, 49), "g/dL"),
    Concept("platelets", "labevents", (51265,), (1, 9999), "K/uL"),
    Concept("lactate", "labevents", (50813,), (0.1, 49), "mmol/L"),
)

CONCEPTS: tuple[Concept, ...] = CHART_CONCEPTS + LAB_CONCEPTS
AGGREGATES: tuple[str, ...] = ("min", "max", "mean", "last", "count")

# Categorical columns known at admission, and how raw MIMIC ethnicity strings are grouped.
ETHNICITY_GROUPS: tuple[tuple[str, str], ...] = (
    ("WHITE", "white"),
    ("BLACK", "black"),
    ("HISPANIC", "hispanic"),
    ("SOUTH AMERICAN", "hispanic"),
    ("ASIAN", "asian"),
    ("UNKNOWN", "unknown"),
    ("UNABLE TO OBTAIN", "unknown"),
    ("PATIENT DECLINED", "unknown"),
)

# MIMIC shifts the date of birth of patients older than 89 so that they appear ~300 years old.
AGE_TOP_CODE = 90.0


def feature_names() -> list[str]:
    """Numeric feature columns the extractor produces, in order."""
    return [f"{c.name}_{agg}" for c in CONCEPTS for agg in AGGREGATES]
