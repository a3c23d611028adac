"""Experiment configuration: frozen dataclasses per section, from TOML; unknown keys are errors."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from medpriv.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Where the cohort comes from (`spec`: synthetic[:N], mimic3:DIR, csv:FILE), how to read it."""

    spec: str = "synthetic"
    target: str | None = None
    positive: str | None = None
    threshold: float | None = None
    unit_column: str | None = None
    site_column: str | None = None
    sensitive: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    keep_duplicates: bool = False
    window_hours: int = 24
    label: str = "hospital"
    all_stays: bool = False
    synthetic_seed: int = 0


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of privacy units per split; the training part gets the rest."""

    val_fraction: float = 0.15
    test_fraction: float = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters shared by the trainers."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    patience: int = 5
    logreg_c: float = 1.0


@dataclass(frozen=True)
class RunConfig:
    """What to run and where to write it."""

    methods: tuple[str, ...] = ("baseline", "logreg")
    seeds: int = 1
    out: str = "runs"
    bootstrap: int = 1000
    progress: bool = True


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> ExperimentConfig:
        """Check value ranges, gathering every problem into one error."""
        problems = []
        s, t, r = self.split, self.train, self.run
        if not (0 < s.val_fraction < 1 and 0 < s.test_fraction < 1):
            problems.append("split fractions must lie strictly between 0 and 1")
        elif s.val_fraction + s.test_fraction >= 0.9:
            problems.append("val_fraction + test_fraction must leave at least 10% for training")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(t, name) < 1:
                problems.append(f"train.{name} must be >= 1")
        if t.lr <= 0:
            problems.append("train.lr must be > 0")
        if not t.hidden or any(h < 1 for h in t.hidden):
            problems.append("train.hidden must list positive layer widths, e.g. [128, 64]")
        if not 0 <= t.dropout < 1:
            problems.append("train.dropout must be in [0, 1)")
        if r.seeds < 1:
            problems.append("run.seeds must be >= 1")
        if not r.methods:
            problems.append("run.methods is empty; name at least one method")
        if self.data.window_hours not in (24, 48):
            problems.append("data.window_hours must be 24 or 48")
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


SECTION_TYPES = {
    "data": DataConfig,
    "split": SplitConfig,
    "train": TrainConfig,
    "run": RunConfig,
}


def _coerce(section: type, key: str, value: Any) -> Any:
    """Lists from TOML/CLI become tuples; a value of the wrong type is an error."""
    default = next(f for f in fields(section) if f.name == key).default
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple):
            return tuple(value)
    elif isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float) or key == "threshold":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, str):
        return value
    if default is None and value is not None and isinstance(value, str | int | float):
        return str(value) if key != "threshold" else value
    raise ConfigError(f"[{section.__name__}] {key} = {value!r} has the wrong type")


def build_config(values: dict[str, dict[str, Any]]) -> ExperimentConfig:
    """An ExperimentConfig from nested section dicts; unknown sections or keys are errors."""
    problems, sections = [], {}
    for name, body in values.items():
        if name not in SECTION_TYPES:
            problems.append(f"unknown config section [{name}]; valid: {sorted(SECTION_TYPES)}")
            continue
        cls = SECTION_TYPES[name]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            problems.append(f"unknown keys in [{name}]: {unknown}; valid: {sorted(known)}")
            continue
        sections[name] = cls(**{k: _coerce(cls, k, v) for k, v in body.items()})
    if problems:
        raise ConfigError("; ".join(problems))
    return ExperimentConfig(**sections).validate()


def load_config(
    path: Path | None, overrides: dict[str, dict[str, Any]] | None = None
) -> ExperimentConfig:
    """Read a TOML file (optional) and apply CLI overrides (None values are ignored)."""
    values: dict[str, dict[str, Any]] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot parse {path}: {exc}") from None
    for section, body in (overrides or {}).items():
        for key, value in body.items():
            if value is not None:
                values.setdefault(section, {})[key] = value
    return build_config(values)


def to_toml(config: ExperimentConfig) -> str:
    """The resolved config as TOML (None values are omitted)."""
    lines = []
    for section, body in config.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in body.items():
            if value is not None:
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)
