"""Exception hierarchy: every expected failure is a MedprivError with a message naming the fix."""

from __future__ import annotations


class MedprivError(ValueError):
    """Base class for errors the CLI reports as one line and a non-zero exit."""


class ConfigError(MedprivError):
    """A configuration value or flag is invalid."""


class DataSourceError(MedprivError):
    """A data source is missing, unreadable or lacks required tables."""


class DataSchemaError(MedprivError):
    """A table or column does not have the shape the pipeline needs."""


class CheckpointError(MedprivError):
    """A checkpoint is missing, corrupt or does not match the run."""


class NotFittedError(MedprivError):
    """An estimator was used before `fit`."""


def raise_all(problems: list[str], error: type[MedprivError] = MedprivError) -> None:
    """Raise once with every gathered problem, if there are any."""
    if problems:
        raise error("; ".join(problems))


class PrivacyError(MedprivError):
    """A privacy guarantee cannot be stated: wrong δ, non-Poisson sampling, budget exceeded."""


class ProtocolError(MedprivError):
    """A message between federated or split-learning parties is malformed or out of order."""


class TooLittleDataError(DataSchemaError):
    """Too few records, classes or clients to train or measure anything meaningful."""
