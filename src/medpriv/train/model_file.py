"""A scikit-learn model read from a file, only in a format that cannot run code on load.

`.skops` files (`skops.io.dump`) are read with `skops.io.load`: every type in the file must be
one skops trusts by default (scikit-learn estimators, numpy and scipy containers, audited by
skops) or one the user names (`--trust-type`, `run.trusted_types`): naming a type says "I trust
this code to run when the file is read". Anything else is refused before a single object is
built, with the list of types to review. Pickle, joblib and torch files are refused outright:
loading them runs whatever code they carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medpriv.errors import ConfigError

MODEL_FILE_SUFFIX = ".skops"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".sav", ".dill")


def is_model_file(spec: str) -> bool:
    """Whether `--model` names a file (by its suffix) rather than `package.module:factory`."""
    return Path(spec).suffix.lower() in (MODEL_FILE_SUFFIX, *PICKLE_SUFFIXES)


def load_model_file(path: str | Path, trusted_types: Sequence[str] = ()) -> Any:
    """The estimator stored in a `.skops` file; a ConfigError (never an unpickling) otherwise."""
    import skops.io as sio

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ConfigError(
            f"--model {path}: a {path.suffix} file is a pickle, which runs code when loaded; "
            "save the model with skops.io.dump(model, 'model.skops') and pass that file"
        )
    if path.suffix.lower() != MODEL_FILE_SUFFIX:
        raise ConfigError(f"--model {path}: a model file must be a {MODEL_FILE_SUFFIX} file")
    if not path.is_file():
        raise ConfigError(f"--model {path}: no such file")
    try:
        found = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a damaged or foreign file: say so, never crash
        raise ConfigError(f"--model {path} is not a readable skops file ({exc})") from None
    unnamed = sorted(set(found) - set(trusted_types))
    if unnamed:
        raise ConfigError(
            f"--model {path} holds types skops does not trust by default: {', '.join(unnamed)}. "
            "Each runs code when the file is read; if you trust them, pass "
            f"--trust-type {','.join(unnamed)} (run.trusted_types in a config file)"
        )
    try:
        return sio.load(path, trusted=found)
    except Exception as exc:
        raise ConfigError(f"--model {path} could not be read ({exc})") from None
