"""Data-source registry: `--data SPEC` where SPEC is `name[:argument]`."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from medpriv.config import DataConfig
from medpriv.data.csvfile import load_csv
from medpriv.data.dataset import TabularDataset
from medpriv.data.mimic3 import extract_mimic3
from medpriv.errors import ConfigError, DataSourceError
from medpriv.registry import Registry

SourceLoader = Callable[[str | None, DataConfig], TabularDataset]
SOURCES: Registry[SourceLoader] = Registry("data source")
DEFAULT_SYNTHETIC_STAYS = 10_000


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`'csv:path/to.csv'` -> `('csv', 'path/to.csv')`; `'synthetic'` -> `('synthetic', None)`."""
    name, _, argument = spec.partition(":")
    return name.strip().lower(), (argument.strip() or None)


def load_dataset(config: DataConfig) -> TabularDataset:
    """Load the cohort named by `config.spec`."""
    name, argument = parse_spec(config.spec)
    return SOURCES.get(name)(argument, config)


def _mimic_options(config: DataConfig) -> dict:
    return {
        "window_hours": config.window_hours,
        "label": config.label,
        "first_stay_only": not config.all_stays,
    }


@SOURCES.register("synthetic")
def _synthetic(argument: str | None, config: DataConfig) -> TabularDataset:
    from medpriv.data.synthetic import write_synthetic_mimic

    try:
        n_stays = int(argument) if argument else DEFAULT_SYNTHETIC_STAYS
    except ValueError:
        raise ConfigError(
            f"synthetic:N needs a whole number of ICU stays, got {argument!r}"
        ) from None
    with tempfile.TemporaryDirectory(prefix="medpriv-synthetic-") as tmp:
        write_synthetic_mimic(Path(tmp), n_stays=n_stays, seed=config.synthetic_seed)
        return extract_mimic3(Path(tmp), name="synthetic", **_mimic_options(config))


@SOURCES.register("mimic3")
def _mimic3(argument: str | None, config: DataConfig) -> TabularDataset:
    if not argument:
        raise ConfigError("mimic3 needs a directory: --data mimic3:/path/to/mimic-iii")
    return extract_mimic3(Path(argument).expanduser(), name="mimic3", **_mimic_options(config))


@SOURCES.register("csv")
def _csv(argument: str | None, config: DataConfig) -> TabularDataset:
    if not argument:
        raise ConfigError("csv needs a file: --data csv:/path/to/table.csv --target COLUMN")
    path = Path(argument).expanduser()
    if not path.exists():
        raise DataSourceError(f"CSV file not found: {path}")
    return load_csv(
        path,
        target=config.target,
        positive=config.positive,
        threshold=config.threshold,
        unit_column=config.unit_column,
        site_column=config.site_column,
        sensitive=config.sensitive,
        drop=config.drop,
        keep_duplicates=config.keep_duplicates,
    )
