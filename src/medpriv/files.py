"""Files medpriv writes: output paths checked before any work starts, every file written
atomically (a temp file in the same folder, then a rename), and temp files a kill left behind
removed at the next start."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from medpriv.errors import ConfigError

TEMP_SUFFIX = ".tmp"


def write_atomic(path: Path, write: Callable[[IO[bytes]], None], *, mode: int = 0o644) -> Path:
    """Call `write` on a temp file beside `path`, then rename it over `path` (readers see the old
    file or the new one, never half of one); the temp file is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(text: str, path: Path, *, mode: int = 0o644) -> Path:
    """`text` (UTF-8) into `path`, atomically."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda handle: handle.write(data), mode=mode)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temp files (`.NAME.*.tmp`) an interrupted atomic write left in `folder`;
    returns what was removed. Call only when no other process writes into `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def clean_output_folders(*folders: Path) -> str | None:
    """Remove stale temp files from `folders` (see `remove_stale_temporaries`); one line saying
    what was removed, or None when there was nothing."""
    removed = [path for folder in folders for path in remove_stale_temporaries(folder)]
    if not removed:
        return None
    where = ", ".join(sorted({str(path.parent) for path in removed}))
    return f"removed {len(removed)} temp file(s) an interrupted write left in {where}"


def output_folder(path: Path, *, option: str = "--out") -> Path:
    """`path` as a folder medpriv can write into, created if missing; a one-line ConfigError
    naming the path and the fix when it is a file or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{option} {path} is a file, not a folder: name a folder (new or existing)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".medpriv-write-check.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"{option} {path} cannot be written ({exc.strerror}): name a folder you can write to"
        ) from None
    return path


def output_file(path: Path, *, option: str = "--out", example: str = "out") -> Path:
    """`path` as a file medpriv can write (its folder created if missing); a one-line
    ConfigError naming the path and the fix when it is a folder or cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"{option} {path} is a folder: name a file inside it, e.g. {path / example}"
        )
    output_folder(path.parent, option=f"{option} {path}: its folder")
    return path
