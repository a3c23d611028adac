"""Who pays: utility and membership exposure by subgroup — each sensitive column, age band and
site — for the results.json `subgroups` block.

Aggregates only. Groups come from public rules (a categorical column's values, fixed age bands,
sites); a numeric sensitive column other than age is cut at the quartiles of the validation
patients (never the test patients). A group with fewer than `min_units` privacy units where it
is measured is suppressed: its name is kept, its size and figures are not written. The
complement of a suppressed group can still be read from the overall figures minus the others:
the threshold protects small groups from being described, it is not a privacy guarantee.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from medpriv.attacks.base import AttackInput, AttackResult
from medpriv.config import MIN_GROUP_UNITS
from medpriv.data.dataset import TabularDataset
from medpriv.metrics import auroc, bootstrap_auroc_ci

AGE_COLUMNS = ("age", "age_years", "anchor_age")  # a numeric column with one of these names
AGE_BANDS = ((18.0, "<18"), (45.0, "18–44"), (65.0, "45–64"), (80.0, "65–79"), (np.inf, "80+"))
MAX_LEVELS = 12  # a numeric sensitive column with at most this many values is read as levels
# The membership attack shown per group: the strongest of those run, in this order.
MEMBERSHIP_PREFERENCE = ("mia_lira", "mia_rmia", "mia_loss")
SUBGROUP_FPRS = (0.01, 0.1)  # TPR at these FPRs, where the group has enough non-members
MISSING = "missing"
MEASURED_ON = (
    "utility on the test patients of each group; membership exposure with the group's training "
    "patients as members and its test patients as non-members"
)


@dataclass(frozen=True)
class Grouping:
    """One attribute the report splits patients by, and how a record's group is read."""

    attribute: str
    source: str  # "sensitive column", "age band" or "site"
    column: str | None = None  # the feature column (None for the site)
    edges: tuple[float, ...] = ()  # quartile cut points of a numeric sensitive column

    def labels(self, part: TabularDataset) -> np.ndarray:
        """Each record's group name (missing values form their own group)."""
        if self.source == "site":
            sites = part.site_ids if part.site_ids is not None else np.full(len(part), MISSING)
            return _text(pd.Series(sites, dtype=object))
        values = part.features[self.column]
        if self.source == "age band":
            return _bands(pd.to_numeric(values, errors="coerce").to_numpy(float))
        if self.edges:
            return _quartiles(pd.to_numeric(values, errors="coerce").to_numpy(float), self.edges)
        return _text(values.astype(object))


def _text(values: pd.Series) -> np.ndarray:
    return np.where(values.isna(), MISSING, values.astype(str)).astype(object)


def _bands(age: np.ndarray) -> np.ndarray:
    out = np.full(len(age), MISSING, dtype=object)
    lower = -np.inf
    for upper, name in AGE_BANDS:
        out[(age >= lower) & (age < upper)] = name
        lower = upper
    return out


def _quartiles(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    names = [f"≤ {edges[0]:.3g}"]
    names += [f"{lo:.3g}–{hi:.3g}" for lo, hi in pairwise(edges)]
    names += [f"> {edges[-1]:.3g}"]
    index = np.searchsorted(np.asarray(edges), values, side="left")
    out = np.asarray(names, dtype=object)[np.minimum(index, len(names) - 1)]
    out[np.isnan(values)] = MISSING
    return out


def groupings(reference: TabularDataset) -> list[Grouping]:
    """The attributes to split by: sensitive columns, the age band and the site. `reference`
    (the validation patients) only fixes the quartiles of numeric sensitive columns."""
    schema, found = reference.schema, []
    age = next((c for c in schema.numeric if c.lower() in AGE_COLUMNS), None)
    for column in schema.sensitive:
        if column == age or column not in reference.features:
            continue
        edges: tuple[float, ...] = ()
        if column in schema.numeric:
            values = pd.to_numeric(reference.features[column], errors="coerce").dropna()
            if values.nunique() > MAX_LEVELS:
                quartiles = np.quantile(values.to_numpy(float), [0.25, 0.5, 0.75])
                edges = tuple(float(f"{q:.3g}") for q in np.unique(quartiles))
        found.append(Grouping(column, "sensitive column", column, edges))
    if age is not None:
        found.append(Grouping("age band", "age band", age))
    if reference.site_ids is not None:
        found.append(Grouping("site", "site"))
    return found


def _utility(labels: np.ndarray, prob: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "records": len(labels),
        "positives": int(labels.sum()),
        "observed_rate": round(float(labels.mean()), 6),
        "predicted_rate": round(float(prob.mean()), 6),
    }
    out["calibration_gap"] = round(out["predicted_rate"] - out["observed_rate"], 6)
    if 0 < out["positives"] < len(labels):
        out["auroc"] = round(auroc(labels, prob), 6)
        ci = bootstrap_auroc_ci(labels, prob, n_boot=n_boot, seed=seed)
        out["auroc_ci95"] = [round(v, 6) for v in ci]
    else:
        out["auroc"], out["auroc_note"] = None, "one outcome class only"
    return out


def _exposure(result: AttackResult, mask: np.ndarray) -> dict[str, Any] | None:
    """The group's membership AUC, TPR at low FPR and advantage (its per-record scores stay
    here); None when the group has only members or only non-members."""
    member = result.member[mask]
    if member.min() == member.max():
        return None
    part = AttackResult.from_input(result.attack, AttackInput(result.scores[mask], member))
    nonmembers = int(len(member) - member.sum())
    return {
        "auc": round(part.auc, 6),
        # only the FPRs the group's non-members can resolve (at least one false positive)
        "tpr_at_fpr": {
            f"{fpr:g}": round(part.roc.tpr_at(fpr), 6)
            for fpr in SUBGROUP_FPRS
            if fpr * nonmembers >= 1
        },
        "advantage": round(part.advantage, 6),
        "members": int(member.sum()),
        "nonmembers": nonmembers,
    }


def subgroup_block(
    *,
    test: TabularDataset,
    test_prob: np.ndarray,
    reference: TabularDataset,
    pool: TabularDataset | None = None,
    membership: Mapping[str, AttackResult] | None = None,
    min_units: int = MIN_GROUP_UNITS,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The results.json `subgroups` block, or None when the data name no group.

    `test_prob` are the model's probabilities on `test`; `pool` and `membership` (the attack
    pool's records and the membership attacks' results on them, members first) add each group's
    exposure.
    """
    found = groupings(reference)
    if not found:
        return None
    attack = next((a for a in MEMBERSHIP_PREFERENCE if membership and a in membership), None)
    result = membership[attack] if attack and membership else None
    block: dict[str, Any] = {
        "min_units": min_units,
        "unit": test.unit_name,
        "measured_on": MEASURED_ON,
        "membership_attack": attack,
        "attributes": [],
    }
    test_prob = np.asarray(test_prob, float)
    for grouping in found:
        test_groups = grouping.labels(test)
        pool_groups = grouping.labels(pool) if pool is not None and result is not None else None
        rows = []
        for name in sorted(set(test_groups), key=str):
            in_test = test_groups == name
            units = len(np.unique(test.unit_ids[in_test]))
            if units < min_units:
                rows.append({"group": str(name), "suppressed": True})
                continue
            row = {
                "group": str(name),
                "units": units,
                **_utility(test.labels[in_test], test_prob[in_test], n_boot=n_boot, seed=seed),
            }
            if pool_groups is not None and result is not None:
                in_pool = pool_groups == name
                members = np.unique(pool.unit_ids[in_pool & (result.member == 1)])
                if len(members) >= min_units:
                    row["membership"] = _exposure(result, in_pool)
            rows.append(row)
        entry: dict[str, Any] = {
            "attribute": grouping.attribute,
            "source": grouping.source,
            "groups": rows,
        }
        if grouping.edges:
            entry["cut_points"] = list(grouping.edges)
        block["attributes"].append(entry)
    return block
