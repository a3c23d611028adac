"""results.json: building run entries and the checked, strict JSON text (DESIGN.md §4)."""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

from medpriv.privacy.statement import PrivacySpent
from medpriv.results_schema import ResultsSchemaError, check_results
from medpriv.train.base import Cost


class RunRecord(Protocol):
    """What a run entry reads from a model: a `TrainedModel`, or a Flower run's outcome."""

    method: str
    params: dict[str, Any]
    privacy: PrivacySpent
    cost: Cost
    history: list


def run_entry(
    *,
    name: str,
    model: RunRecord,
    seed: int,
    utility: dict,
    curves: dict,
    split_sizes: dict[str, int],
) -> dict[str, Any]:
    """One element of `runs`; attacks that do not apply are left out, never faked."""
    return {
        "name": name,
        "method": model.method,
        "seed": seed,
        "params": model.params,
        "utility": utility,
        "privacy": model.privacy.to_dict(),
        "attacks": {},
        "cost": model.cost.to_dict(),
        "history": model.history,
        "curves": curves,
        "splits": split_sizes,
    }


def _clean(value: Any) -> Any:
    """NaN/inf become null so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def results_json(document: dict[str, Any]) -> str:
    """The document as results.json holds it: strict JSON (NaN/inf as null), indented —
    checked against the typed records first (`ResultsSchemaError`: a medpriv bug, never
    written)."""
    cleaned = _clean(document)
    problems = check_results(cleaned)
    if problems:
        raise ResultsSchemaError(problems, source="the results document medpriv built")
    return json.dumps(cleaned, indent=2, allow_nan=False) + "\n"


def validate_results(document: dict[str, Any]) -> list[str]:
    """Problems with a results document against the §4 contract, each with its JSON path
    (empty list when valid): the typed records of `medpriv.results_schema`."""
    return check_results(document)
