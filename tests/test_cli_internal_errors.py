"""An unexpected error is one line naming its type and module (exit 3): never its message or a
local variable (either may hold a patient's values); `--debug` adds the traceback, still without
locals. Expected failures keep exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medpriv import cli_common
from medpriv.cli import app
from medpriv.cli_common import (
    BAD_INPUT_EXIT,
    INTERNAL_ERROR_EXIT,
    internal_error_line,
    take_debug_flag,
)
from medpriv.errors import ConfigError

SECRET = "patient-0042-glucose-513.7"


def _raise_internal(*_args, **_kwargs):
    rows = pd.DataFrame({"note": [SECRET]})  # a local holding a patient row
    raise KeyError(f"{rows.iloc[0, 0]} not found")


@pytest.fixture()
def broken_report(monkeypatch):
    """`medpriv report` fails inside with a message and a local that carry a patient value."""
    monkeypatch.setattr("medpriv.cli.load_results", _raise_internal, raising=False)
    monkeypatch.setattr("medpriv.report.files.write_reports", _raise_internal)


def _results_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_text(
        '{"medpriv_version": "0", "config": {}, "runs": [], "dataset": {"name": "d", '
        '"n_records": 0, "n_units": 0, "n_features": 0, "positive_rate": 0.0, "n_sites": 0}}',
        encoding="utf-8",
    )
    return folder


def test_internal_error_is_one_line_without_message_or_locals(tmp_path, broken_report, monkeypatch):
    monkeypatch.delenv(cli_common.DEBUG_ENV, raising=False)
    result = CliRunner().invoke(app, ["report", str(_results_folder(tmp_path))])
    output = result.output  # stdout and stderr together
    assert result.exit_code == INTERNAL_ERROR_EXIT, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: internal error: KeyError in "), output
    assert "rerun with --debug" in lines[0]
    assert SECRET not in output and "Traceback" not in output


def test_debug_shows_traceback_but_not_locals(tmp_path, broken_report, monkeypatch):
    monkeypatch.setenv(cli_common.DEBUG_ENV, "1")
    result = CliRunner().invoke(app, ["report", str(_results_folder(tmp_path))])
    output = result.output  # stdout and stderr together
    assert result.exit_code == INTERNAL_ERROR_EXIT
    assert "Traceback" in output and "_raise_internal" in output
    assert "locals" not in output and "note  " not in output  # no locals panel, no frame dump
    assert output.count(SECRET) <= 1  # at most the exception's own message, never the rows


def test_expected_errors_keep_their_own_exit_code(tmp_path, monkeypatch):
    def bad(*_args, **_kwargs):
        raise ConfigError("the setting x must be > 0")

    monkeypatch.setattr("medpriv.report.files.write_reports", bad)
    result = CliRunner().invoke(app, ["report", str(_results_folder(tmp_path))])
    assert result.exit_code == BAD_INPUT_EXIT != INTERNAL_ERROR_EXIT


def test_internal_error_line_names_only_type_and_module():
    try:
        _raise_internal()
    except KeyError as exc:
        line = internal_error_line(exc)
    assert line.startswith("internal error: KeyError in ") and SECRET not in line
    assert "test_cli_internal_errors" in line


def test_debug_flag_is_taken_from_anywhere_on_the_line(monkeypatch):
    monkeypatch.delenv(cli_common.DEBUG_ENV, raising=False)
    assert take_debug_flag(["run", "--quick"]) == ["run", "--quick"]
    assert not cli_common.debugging()
    assert take_debug_flag(["run", "--debug", "--quick"]) == ["run", "--quick"]
    assert cli_common.debugging()


def test_entry_point_accepts_debug_after_the_command(tmp_path):
    """The real entry point: `medpriv report DIR --debug` on a folder without results.json is an
    expected error (exit 2, one line) — `--debug` is accepted there and changes nothing else."""
    done = subprocess.run(
        [sys.executable, "-m", "medpriv.cli", "report", str(tmp_path), "--debug"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == BAD_INPUT_EXIT, done.stderr
    assert "no such option" not in done.stderr.lower()
    assert next(line for line in done.stderr.splitlines() if line.strip()).startswith("error:")
