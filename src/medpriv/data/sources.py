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
from medpriv.untrusted import printable

SourceLoader = Callable[[str | None, DataConfig], TabularDataset]
SOURCES: Registry[SourceLoader] = Registry("data source")
DEFAULT_SYNTHETIC_STAYS = 10_000
# The most ICU stays `synthetic:N` and `medpriv data synth --stays N` accept: a thousand times
# the default; a larger N is taken for a typo rather than left to fill the disk.
MAX_SYNTHETIC_STAYS = 10_000_000


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`'csv:path/to.csv'` -> `('csv', 'path/to.csv')`; `'synthetic'` -> `('synthetic', None)`."""
    name, _, argument = spec.partition(":")
    return name.strip().lower(), (argument.strip() or None)


def load_dataset(config: DataConfig) -> TabularDataset:
    """Load the cohort named by `config.spec`."""
    check_source(config)
    name, argument = parse_spec(config.spec)
    return SOURCES.get(name)(argument, config)


def check_source(config: DataConfig) -> None:
    """What can be checked of `config.spec` before any work: a registered source, its argument
    well-formed (`synthetic:N` a whole number in range, `csv:FILE` an existing file, `mimic3:DIR`
    given); a one-line error naming the fix otherwise. Loading checks the rest."""
    name, argument = parse_spec(config.spec)
    SOURCES.get(name)  # unknown names fail here, listing the valid ones
    if name == "synthetic":
        synthetic_stays(argument)
    elif name == "csv":
        _csv_path(argument)
    elif name == "mimic3" and not argument:
        raise ConfigError("mimic3 needs a directory: --data mimic3:/path/to/mimic-iii")
    if config.member_column and name != "csv":
        raise ConfigError("--member-column reads a column of a csv:FILE source")


def synthetic_stays(argument: str | None, *, option: str = "synthetic:N") -> int:
    """The N of `synthetic:N` (default `DEFAULT_SYNTHETIC_STAYS`): a whole number from 1 to
    `MAX_SYNTHETIC_STAYS`, or a ConfigError naming `option`."""
    if not argument:
        return DEFAULT_SYNTHETIC_STAYS
    try:
        n_stays = int(argument)
    except ValueError:
        n_stays = None
    if n_stays is None or not 1 <= n_stays <= MAX_SYNTHETIC_STAYS:
        raise ConfigError(
            f"{option} must be a whole number of ICU stays from 1 to {MAX_SYNTHETIC_STAYS:,}, "
            f"got {printable(argument, 40)}"
        )
    return n_stays


def _csv_path(argument: str | None) -> Path:
    if not argument:
        raise ConfigError("csv needs a file: --data csv:/path/to/table.csv --target COLUMN")
    path = Path(argument).expanduser()
    if not path.exists():
        raise DataSourceError(f"CSV file not found: {path}")
    return path


def _mimic_options(config: DataConfig) -> dict:
    return {
        "window_hours": config.window_hours,
        "label": config.label,
        "first_stay_only": not config.all_stays,
    }


@SOURCES.register("synthetic")
def _synthetic(argument: str | None, config: DataConfig) -> TabularDataset:
    from medpriv.data.synthetic import write_synthetic_mimic

    n_stays = synthetic_stays(argument)
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
    return load_csv(
        _csv_path(argument),
        target=config.target,
        positive=config.positive,
        threshold=config.threshold,
        unit_column=config.unit_column,
        site_column=config.site_column,
        sensitive=config.sensitive,
        drop=config.drop,
        keep_duplicates=config.keep_duplicates,
        member_column=config.member_column,
    )
