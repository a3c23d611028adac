"""results.json: building run entries and writing the document atomically (DESIGN.md §4)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

from medpriv.files import write_text_atomic
from medpriv.privacy.statement import PrivacySpent
from medpriv.train.base import Cost

RUN_KEYS = ("name", "method", "seed", "params", "utility", "privacy", "attacks", "cost")


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
    """The document as results.json holds it: strict JSON (NaN/inf as null), indented."""
    return json.dumps(_clean(document), indent=2, allow_nan=False) + "\n"


def write_json_atomic(document: dict[str, Any], path: Path) -> Path:
    """Write `results_json(document)` to `path` atomically."""
    return write_text_atomic(results_json(document), path)


def validate_results(document: dict[str, Any]) -> list[str]:
    """Problems with a results document against the §4 contract (empty list when valid)."""
    problems = [
        f"missing top-level key {k!r}"
        for k in ("medpriv_version", "config", "dataset", "runs")
        if k not in document
    ]
    for key in ("name", "n_records", "n_units", "n_features", "positive_rate", "n_sites"):
        if key not in document.get("dataset", {}):
            problems.append(f"dataset lacks {key!r}")
    for i, run in enumerate(document.get("runs", [])):
        problems += [f"runs[{i}] lacks {k!r}" for k in RUN_KEYS if k not in run]
        utility = run.get("utility", {})
        problems += [
            f"runs[{i}].utility lacks {k!r}"
            for k in (
                "auroc",
                "auroc_ci95",
                "auprc",
                "accuracy",
                "balanced_accuracy",
                "f1",
                "brier",
                "confusion_matrix",
            )
            if k not in utility
        ]
        privacy = run.get("privacy", {})
        problems += [
            f"runs[{i}].privacy lacks {k!r}"
            for k in (
                "epsilon",
                "delta",
                "accountant",
                "sampling",
                "unit",
                "level",
                "clipping_norm",
            )
            if k not in privacy
        ]
    return problems
