"""results.json as typed records (DESIGN.md §4), checked when written and when read.

Required fields are those of the contract's example document; the rest have defaults.

Each block of the document is a frozen dataclass here; `read_results` turns a parsed JSON
document into a `ResultsRecord`, gathering every problem with its JSON path
("runs[2].utility.auroc: expected a number or null, got text") into one `ResultsSchemaError`;
`check_results` returns the problems only. The contract holds: keys are added, never renamed —
a record names the keys medpriv reads and their types, keys it does not name are allowed (a
newer writer, a block an older reader does not know), and a field with a default may be absent
(a file written before it existed).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from medpriv.attacks.catalog import MEMBERSHIP_ATTACKS
from medpriv.errors import MedprivError


class ResultsSchemaError(MedprivError):
    """A results document that does not follow the schema; `problems` lists each with its path."""

    def __init__(self, problems: list[str], source: str = "results.json") -> None:
        self.problems = problems
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        super().__init__(f"{source} does not follow medpriv's results schema: {shown}")


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    n_records: int
    n_units: int
    n_features: int
    positive_rate: float
    n_sites: int
    unit: str = "patient"
    label: str = "label"
    numeric_features: list[str] = field(default_factory=list)
    categorical_features: list[str] = field(default_factory=list)
    sensitive_features: list[str] = field(default_factory=list)
    cohort_flow: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    site_sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class UtilityRecord:
    auroc: float | None
    auroc_ci95: list[float | None] | None
    auprc: float | None
    accuracy: float | None
    balanced_accuracy: float | None
    f1: float | None
    brier: float | None
    confusion_matrix: list[list[int]]
    threshold: float = 0.5
    n_test: int | None = None
    positive_rate: float | None = None


@dataclass(frozen=True)
class PrivacyRecord:
    epsilon: float | None
    delta: float | None
    accountant: str | None
    sampling: str
    unit: str
    level: str | None
    clipping_norm: float | None
    noise_multiplier: float | None = None
    steps: int | None = None
    sample_rate: float | None = None
    mechanism: str | None = None
    noise: str | None = None
    caveats: list[str] = field(default_factory=list)
    public: list[str] = field(default_factory=list)
    trusts: list[str] = field(default_factory=list)
    unprotected: list[str] = field(default_factory=list)
    adjacency: str | None = None
    statement: str = ""


@dataclass(frozen=True)
class CostRecord:
    train_seconds: float
    bytes_communicated: int
    eval_seconds: float | None = None
    attack_seconds: float | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None
    round_trips: int | None = None


@dataclass(frozen=True)
class MembershipRecord:
    """A membership-inference attack's block (`medpriv.attacks.catalog.MEMBERSHIP_ATTACKS`)."""

    auc: float | None
    tpr_at_fpr: dict[str, float | None]
    advantage: float | None = None
    n_members: int | None = None
    n_nonmembers: int | None = None
    # attacked and total units per side when the attack scored a random sample (large tables)
    sample: dict[str, int] | None = None


@dataclass(frozen=True)
class AuditRecord:
    """The canary audits' block: the deciding threat model's figures and the verdict."""

    epsilon_lower_bound: float | None = None
    confidence: float | None = None
    consistent: bool | None = None
    verdict: str | None = None
    max_demonstrable: float | None = None
    claimed_epsilon: float | None = None


@dataclass(frozen=True)
class RunRecord:
    name: str
    method: str
    seed: int
    params: dict[str, Any]
    utility: UtilityRecord
    privacy: PrivacyRecord
    attacks: dict[str, dict[str, Any]]
    cost: CostRecord
    history: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    subgroups: dict[str, Any] | None = None

    def membership(self, attack: str) -> MembershipRecord | None:
        """A membership attack's typed block, or None when the run has none."""
        block = self.attacks.get(attack)
        return None if block is None else _parse(MembershipRecord, block, attack, [])

    @property
    def audit(self) -> AuditRecord | None:
        block = self.attacks.get("audit")
        return None if block is None else _parse(AuditRecord, block, "audit", [])


@dataclass(frozen=True)
class ResultsRecord:
    medpriv_version: str
    config: dict[str, Any]
    dataset: DatasetRecord
    runs: list[RunRecord]
    created: str | None = None
    complete: bool = False
    engine: str | None = None


def check_results(document: Any) -> list[str]:
    """Every problem of a parsed results document, each with its JSON path; [] when valid."""
    return _checked(document)[1]


def read_results(document: Any, source: str = "results.json") -> ResultsRecord:
    """The typed record of a parsed results document; `ResultsSchemaError` listing every
    problem otherwise."""
    record, problems = _checked(document)
    if problems:
        raise ResultsSchemaError(problems, source)
    return record


def _checked(document: Any) -> tuple[Any, list[str]]:
    """(the document as a `ResultsRecord` where it fits, every problem with its path)."""
    problems: list[str] = []
    record = _parse(ResultsRecord, document, "", problems)
    if isinstance(document, dict) and isinstance(document.get("runs"), list):
        for i, run in enumerate(document["runs"]):
            attacks = run.get("attacks") if isinstance(run, dict) else None
            if not isinstance(attacks, dict):
                continue
            for name, block in attacks.items():
                kind = (
                    MembershipRecord
                    if name in MEMBERSHIP_ATTACKS
                    else AuditRecord
                    if name == "audit"
                    else None
                )
                if kind is not None:
                    _parse(kind, block, f"runs[{i}].attacks.{name}", problems)
    return record, problems


_NAMES = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}


def _describe(kind: Any) -> str:
    args = typing.get_args(kind)
    if _is_union(kind):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    origin = typing.get_origin(kind)
    if origin is list:
        return "a list"
    if origin is dict or kind is dict or dataclasses.is_dataclass(kind):
        return "an object"
    return _NAMES.get(kind, getattr(kind, "__name__", str(kind)))


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return {str: "text", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _parse(kind: Any, value: Any, path: str, problems: list[str]) -> Any:
    """`value` as `kind` (a record, a container, a scalar); problems are appended, and the
    value passes through unchanged where it does not fit."""
    where = path or "the document"
    if kind is Any:
        return value
    if _is_union(kind):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            trial: list[str] = []
            parsed = _parse(arg, value, path, trial)
            if not trial:
                return parsed
        problems.append(f"{where}: expected {_describe(kind)}, got {_got(value)}")
        return value
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected {_describe(kind)}, got {_got(value)}")
            return value
        hints = typing.get_type_hints(kind)
        values = {}
        for f in dataclasses.fields(kind):
            inner = f"{path}.{f.name}" if path else f.name
            if f.name in value:
                values[f.name] = _parse(hints[f.name], value[f.name], inner, problems)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{inner}: missing")
        try:
            return kind(**values)
        except TypeError:  # a required field was missing: already a problem
            return value
    if origin is list or kind is list:
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {_got(value)}")
            return value
        (item,) = typing.get_args(kind) or (Any,)
        return [_parse(item, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected an object, got {_got(value)}")
            return value
        _, item = typing.get_args(kind) or (str, Any)
        return {k: _parse(item, v, f"{path}.{k}", problems) for k, v in value.items()}
    fits = (
        isinstance(value, bool)
        if kind is bool
        else isinstance(value, int | float) and not isinstance(value, bool)
        if kind is float
        else isinstance(value, int) and not isinstance(value, bool)
        if kind is int
        else isinstance(value, kind)
    )
    if not fits:
        problems.append(f"{where}: expected {_describe(kind)}, got {_got(value)}")
    return value
