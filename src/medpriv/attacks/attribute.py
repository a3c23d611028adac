"""Attribute inference, measured against an imputation baseline (Jayaraman & Evans 2022).

The adversary knows a target record's other features and its true label, may query the model,
and wants one sensitive column. The task is binary: "is the attribute `v`", where `v` (the
positive value) is the second most frequent value of the attribute in the adversary's
`reference` data (the minority value of a binary column; ties broken by the value's text).

* Attack (confidence-based, Mehnaz et al. 2022, in the spirit of Fredrikson et al. 2014 and
  Yeom et al. 2018): the record's attribute is set to each candidate value in turn (every value
  seen in the reference data, the MAX_CANDIDATES most frequent at most), the model is queried and
  its loss on the true label recorded. A logistic regression fitted on the reference data reads
  the other features, the label, these per-candidate losses and the contrast
  min over c ≠ v of loss(c) − loss(v).
* Imputation baseline: the same logistic regression without the model-derived columns, i.e.
  what the adversary infers from the data distribution alone.

Both are scored on members and non-members separately; `advantage_over_imputation` is the
attack's AUC minus the imputation's. Records whose attribute is missing are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medpriv.attacks.base import RocCurve
from medpriv.data.dataset import Schema, TabularDataset
from medpriv.data.preprocess import Preprocessor
from medpriv.train.base import TrainedModel

METHOD = (
    "confidence-based attribute inference (Mehnaz et al. 2022): logistic regression on the "
    "other features, the true label and the model's loss under each candidate value, fitted on "
    "reference data; baseline: the same regression without model queries (imputation, "
    "Jayaraman & Evans 2022)"
)
# At most this many candidate values are substituted into each record (the most frequent ones).
MAX_CANDIDATES = 20
# Placeholders that say the value was not recorded (compared lower-case): treated as missing,
# neither a target nor a candidate value ("ethnicity = unknown" is nothing worth inferring).
NOT_RECORDED = frozenset(
    {
        "unknown",
        "unknown/not specified",
        "not specified",
        "unable to obtain",
        "declined",
        "patient declined to answer",
        "n/a",
        "na",
        "none",
        "missing",
    }
)
# Per-candidate losses are clipped here so that a few saturated predictions do not dominate.
LOSS_CAP = 30.0
# Inverse regularization of the attack and imputation regressions (sklearn's default).
ATTACK_C = 1.0


@dataclass(frozen=True)
class AttributeResult:
    """Attack and imputation accuracy/AUC on members and on non-members.

    Each of `members` and `nonmembers` holds attack_accuracy, attack_auc, imputation_accuracy,
    imputation_auc, advantage_over_imputation (attack AUC − imputation AUC) and n (records
    scored). An AUC is NaN when the group lacks one of the two classes.
    """

    attribute: str
    target_value: str
    members: dict[str, float]
    nonmembers: dict[str, float]

    @property
    def advantage_over_imputation(self) -> float:
        """The headline number: the attack's AUC gain over imputation on members."""
        return self.members["advantage_over_imputation"]

    def to_dict(self) -> dict[str, Any]:
        """The results.json block."""
        return {
            "attribute": self.attribute,
            "target_value": self.target_value,
            "members": dict(self.members),
            "nonmembers": dict(self.nonmembers),
            "advantage_over_imputation": self.advantage_over_imputation,
            "method": METHOD,
        }


@dataclass(frozen=True)
class _Target:
    """The attacked column: its name, kind, candidate values (by frequency) and positive value."""

    name: str
    numeric: bool
    candidates: tuple[Any, ...]
    positive: Any

    def values(self, features: pd.DataFrame) -> pd.Series:
        """The column as comparable values (numbers or stripped strings), missing as NA."""
        return _values(features[self.name], self.numeric)


def attribute_inference(
    model: TrainedModel,
    *,
    members: TabularDataset,
    nonmembers: TabularDataset,
    reference: TabularDataset,
    attribute: str | None = None,
    seed: int = 0,
) -> AttributeResult | None:
    """Infer a sensitive attribute of members and non-members; compare with imputation.

    `reference` is the adversary's own labelled data (disjoint from the members, e.g. the
    validation split); both regressions are fitted on it. `attribute` must be one of
    `schema.sensitive`; by default the first usable one (categorical, or numeric with exactly
    two values, with at least two values in the reference data). Returns None when no sensitive
    column is usable.
    """
    target = _choose_target(reference, attribute)
    if target is None:
        return None
    schema = reference.schema
    others = Schema(
        numeric=tuple(c for c in schema.numeric if c != target.name),
        categorical=tuple(c for c in schema.categorical if c != target.name),
    )
    preprocessor = Preprocessor(others).fit(reference.features)

    x_ref, q_ref, truth_ref = _design(model, reference, target, preprocessor)
    scaler = StandardScaler().fit(q_ref)
    attack = _regression(seed).fit(np.hstack([x_ref, scaler.transform(q_ref)]), truth_ref)
    imputation = _regression(seed).fit(x_ref, truth_ref)

    def evaluate(data: TabularDataset) -> dict[str, float]:
        x, q, truth = _design(model, data, target, preprocessor)
        if not len(truth):
            return _scores(truth, np.zeros(0), np.zeros(0))
        p_attack = attack.predict_proba(np.hstack([x, scaler.transform(q)]))[:, 1]
        p_imputation = imputation.predict_proba(x)[:, 1]
        return _scores(truth, p_attack, p_imputation)

    return AttributeResult(
        attribute=target.name,
        target_value=_text(target.positive),
        members=evaluate(members),
        nonmembers=evaluate(nonmembers),
    )


def _regression(seed: int) -> LogisticRegression:
    return LogisticRegression(C=ATTACK_C, max_iter=5000, random_state=seed)


def _design(
    model: TrainedModel, data: TabularDataset, target: _Target, preprocessor: Preprocessor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Imputation features, model-derived features and truth for rows with a known attribute."""
    values = target.values(data.features)
    known = values.notna().to_numpy()
    features = data.features.loc[known].reset_index(drop=True)
    labels = np.asarray(data.labels)[known]
    truth = (values[known] == target.positive).to_numpy(dtype=np.int64)
    x = np.hstack(
        [preprocessor.transform(features).astype(np.float64), labels[:, None].astype(np.float64)]
    )
    return x, _model_features(model, features, labels, target), truth


def _model_features(
    model: TrainedModel, features: pd.DataFrame, labels: np.ndarray, target: _Target
) -> np.ndarray:
    """Per-candidate losses of the true label, clipped, and the contrast min_{c≠v} − loss(v)."""
    if not len(features):
        return np.zeros((0, len(target.candidates) + 1))
    losses = np.empty((len(features), len(target.candidates)))
    for j, value in enumerate(target.candidates):
        counterfactual = features.copy()
        counterfactual[target.name] = value
        margin = model.margin(counterfactual)
        signed = np.where(labels == 1, margin, -margin)
        losses[:, j] = np.logaddexp(0.0, -signed)
    losses = np.clip(losses, 0.0, LOSS_CAP)
    positive = target.candidates.index(target.positive)
    rest = np.delete(losses, positive, axis=1).min(axis=1)
    return np.column_stack([losses, rest - losses[:, positive]])


def _scores(truth: np.ndarray, p_attack: np.ndarray, p_imputation: np.ndarray) -> dict[str, float]:
    attack_auc, imputation_auc = _auc(truth, p_attack), _auc(truth, p_imputation)
    return {
        "attack_accuracy": _accuracy(truth, p_attack),
        "attack_auc": attack_auc,
        "imputation_accuracy": _accuracy(truth, p_imputation),
        "imputation_auc": imputation_auc,
        "advantage_over_imputation": attack_auc - imputation_auc,
        "n": float(len(truth)),
    }


def _accuracy(truth: np.ndarray, prob: np.ndarray) -> float:
    return float(np.mean((prob >= 0.5) == (truth == 1))) if len(truth) else math.nan


def _auc(truth: np.ndarray, scores: np.ndarray) -> float:
    if len(np.unique(truth)) < 2:
        return math.nan
    return RocCurve.from_scores(truth, scores).auc


def _choose_target(reference: TabularDataset, attribute: str | None) -> _Target | None:
    """The attacked column; ValueError for an unknown or unusable named attribute."""
    schema = reference.schema
    if attribute is None:
        for name in schema.sensitive:
            try:
                return _target(reference, name)
            except ValueError:
                continue
        return None
    if attribute not in schema.sensitive:
        raise ValueError(
            f"unknown attribute {attribute!r}; the sensitive columns of {reference.name} are "
            f"{list(schema.sensitive)}"
        )
    return _target(reference, attribute)


def _target(reference: TabularDataset, name: str) -> _Target:
    """Candidate values by frequency in the reference data; the second most frequent is positive."""
    numeric = name in reference.schema.numeric
    values = _values(reference.features[name], numeric).dropna()
    counts = values.value_counts()
    if len(counts) < 2:
        raise ValueError(
            f"attribute {name!r} takes a single value in the reference data; nothing to infer"
        )
    if numeric and len(counts) > 2:
        raise ValueError(
            f"attribute {name!r} is numeric with {len(counts)} values; only categorical or "
            "binary attributes can be inferred"
        )
    ordered = sorted(counts.items(), key=lambda item: (-item[1], _text(item[0])))
    candidates = tuple(value for value, _ in ordered[:MAX_CANDIDATES])
    return _Target(name=name, numeric=numeric, candidates=candidates, positive=candidates[1])


def _values(column: pd.Series, numeric: bool) -> pd.Series:
    """Numbers for a numeric column; stripped strings for a categorical one; missing (and
    NOT_RECORDED placeholders) as NA."""
    if numeric:
        return pd.to_numeric(column, errors="coerce").astype(np.float64)
    text = column.astype("object").map(lambda v: None if pd.isna(v) else str(v).strip())
    recorded = ~text.str.lower().isin(NOT_RECORDED | {"", "nan"})
    return text.where(text.notna() & recorded)


def _text(value: Any) -> str:
    """A value as the string reported in results (integral numbers without the '.0')."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)
