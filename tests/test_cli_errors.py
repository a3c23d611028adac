"""Bad input gets one clear `error:` line and a non-zero exit from the CLI, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medpriv.cli import app

MIMIC_TABLES = ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "CHARTEVENTS", "LABEVENTS")


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _valid_csv(path: Path, n: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": np.round(rng.uniform(18, 90, size=n), 3),
            "ward": rng.choice(["north", "south", "east"], size=n),
            "died": (rng.random(n) < 0.3).astype(int),
        }
    )
    frame.loc[:1, "died"] = [0, 1]  # both classes, whatever the seed
    frame.to_csv(path, index=False)
    return path


def single_error_line(text: str) -> str:
    """The one `error:` line; nothing else on the stream but blank lines, no traceback."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, text
    assert lines == errors, f"more than one line of output:\n{text}"
    return errors[0]


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medpriv.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), f"uncaught {result.exception!r}"
    return result


def extract_args(tmp_path: Path, data: str, *extra: str) -> list[str]:
    return ["data", "extract", "--out", str(tmp_path / "out.csv"), "--data", data, *extra]


# ---------------------------------------------------------------------------------------------
# Subprocess: the real entry point, proving no traceback reaches stderr
# ---------------------------------------------------------------------------------------------


def test_subprocess_missing_csv_file(tmp_path):
    proc = run_module(*extract_args(tmp_path, "csv:missing.csv", "--target", "y"), cwd=tmp_path)
    assert proc.returncode != 0
    line = single_error_line(proc.stderr)
    assert "missing.csv" in line and "not found" in line
    assert not (tmp_path / "out.csv").exists()


def test_subprocess_non_utf8_file(tmp_path):
    _write(tmp_path / "latin.csv", "caf\xe9,age,y\nx,1,0\ny,2,1\n".encode("latin-1"))
    proc = run_module(*extract_args(tmp_path, "csv:latin.csv", "--target", "y"), cwd=tmp_path)
    assert proc.returncode != 0
    line = single_error_line(proc.stderr)
    assert "latin.csv" in line and "UTF-8" in line


def test_subprocess_mimic_directory_without_tables(tmp_path):
    empty = tmp_path / "mimic"
    empty.mkdir()
    proc = run_module(*extract_args(tmp_path, f"mimic3:{empty}"), cwd=tmp_path)
    assert proc.returncode != 0
    line = single_error_line(proc.stderr)
    for table in MIMIC_TABLES:
        assert table in line


def test_subprocess_run_with_unknown_method(tmp_path):
    csv = _valid_csv(tmp_path / "cohort.csv")
    proc = run_module(
        "run",
        *("--data", f"csv:{csv}", "--target", "died", "--methods", "nope"),
        *("--out", str(tmp_path / "runs")),
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    line = single_error_line(proc.stderr)
    assert "'nope'" in line and "baseline" in line and "logreg" in line
    assert not (tmp_path / "runs").exists()


def test_subprocess_run_with_missing_data_prints_only_the_error(tmp_path):
    """`run` with the default progress display: the error line must be the only output."""
    proc = run_module(
        *("run", "--data", "csv:missing.csv", "--target", "y"),
        *("--out", str(tmp_path / "runs")),
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    line = single_error_line(proc.stderr)
    assert "missing.csv" in line


def test_subprocess_window_hours_12(tmp_path):
    proc = run_module(
        *extract_args(tmp_path, f"mimic3:{tmp_path}", "--window-hours", "12"), cwd=tmp_path
    )
    assert proc.returncode != 0
    line = single_error_line(proc.stderr)
    assert "window_hours" in line and "24 or 48" in line


# ---------------------------------------------------------------------------------------------
# CliRunner: the rest of the cases, in-process
# ---------------------------------------------------------------------------------------------


def _check(result, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    line = single_error_line(result.stderr)
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def test_directory_given_to_csv(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    _check(invoke(*extract_args(tmp_path, f"csv:{folder}", "--target", "y")), str(folder), "file")


def test_missing_mimic_directory(tmp_path):
    _check(invoke(*extract_args(tmp_path, "mimic3:/nonexistent")), "/nonexistent", "not found")


def test_missing_target_column_lists_available_columns(tmp_path):
    csv = _valid_csv(tmp_path / "cohort.csv")
    _check(
        invoke(*extract_args(tmp_path, f"csv:{csv}", "--target", "outcome")),
        "--target",
        "'outcome'",
        "'age'",
        "'ward'",
        "'died'",
    )


def test_target_omitted_for_csv(tmp_path):
    csv = _valid_csv(tmp_path / "cohort.csv")
    _check(invoke(*extract_args(tmp_path, f"csv:{csv}")), "--target")


def test_target_with_one_class(tmp_path):
    csv = _write(tmp_path / "one.csv", "age,ward,y\n1,a,1\n2,b,1\n3,a,1\n")
    result = invoke(*extract_args(tmp_path, f"csv:{csv}", "--target", "y"))
    line = _check(result, "'y'")
    assert "single class" in line or "1 value" in line


def test_positive_value_giving_one_class(tmp_path):
    csv = _write(tmp_path / "one.csv", "age,ward,y\n1,a,1\n2,b,1\n3,a,1\n")
    result = invoke(*extract_args(tmp_path, f"csv:{csv}", "--target", "y", "--positive", "1"))
    _check(result, "single class", "--positive")


def test_threshold_on_non_numeric_target_suggests_positive(tmp_path):
    csv = _write(tmp_path / "cat.csv", "age,ward,y\n1,a,no\n2,b,yes\n3,a,no\n")
    result = invoke(*extract_args(tmp_path, f"csv:{csv}", "--target", "y", "--threshold", "0.5"))
    _check(result, "'y'", "--threshold", "--positive")


def test_empty_file(tmp_path):
    csv = _write(tmp_path / "empty.csv", b"")
    _check(invoke(*extract_args(tmp_path, f"csv:{csv}", "--target", "y")), "empty.csv", "empty")


def test_header_only_file(tmp_path):
    csv = _write(tmp_path / "header.csv", "age,ward,y\n")
    _check(invoke(*extract_args(tmp_path, f"csv:{csv}", "--target", "y")), "header.csv", "no rows")


def test_feature_empty_in_every_row_names_drop(tmp_path):
    csv = _write(tmp_path / "gap.csv", "age,remarks,y\n1,,0\n2,,1\n3,,0\n4,,1\n")
    _check(
        invoke(*extract_args(tmp_path, f"csv:{csv}", "--target", "y")),
        "'remarks'",
        "--drop remarks",
    )


def test_non_utf8_file(tmp_path):
    csv = _write(tmp_path / "latin.csv", "name,age,y\ncaf\xe9,1,0\nbar,2,1\n".encode("latin-1"))
    _check(invoke(*extract_args(tmp_path, f"csv:{csv}", "--target", "y")), "UTF-8")


def test_duplicate_column_names(tmp_path):
    csv = _write(tmp_path / "dup.csv", "age,age,y\n1,2,0\n3,4,1\n")
    _check(invoke(*extract_args(tmp_path, f"csv:{csv}", "--target", "y")), "duplicate", "'age'")


def test_unknown_method_lists_valid_methods(tmp_path):
    csv = _valid_csv(tmp_path / "cohort.csv")
    result = invoke(
        "run",
        *("--data", f"csv:{csv}", "--target", "died", "--methods", "nope"),
        *("--out", str(tmp_path / "runs"), "--no-progress"),
    )
    _check(result, "'nope'", "baseline", "logreg")


def test_unknown_attack_lists_valid_attacks(tmp_path):
    csv = _valid_csv(tmp_path / "cohort.csv")
    result = invoke(
        "run",
        *("--data", f"csv:{csv}", "--target", "died", "--attacks", "mia_loss,psychic"),
        *("--out", str(tmp_path / "runs"), "--no-progress"),
    )
    _check(result, "psychic", "mia_lira", "none")


def test_unknown_config_key(tmp_path):
    config = _write(tmp_path / "exp.toml", "[train]\nepochs = 2\nlearning_rate = 0.1\n")
    result = invoke("run", "--config", str(config), "--out", str(tmp_path / "runs"))
    _check(result, "learning_rate", "[train]", "valid", "'lr'")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["extract", "run"])
def test_window_hours_12(tmp_path, command):
    csv = _valid_csv(tmp_path / "cohort.csv")
    if command == "extract":
        args = extract_args(tmp_path, "mimic3:/nonexistent", "--window-hours", "12")
    else:
        args = ["run", "--data", f"csv:{csv}", "--target", "died", "--window-hours", "12"]
        args += ["--out", str(tmp_path / "runs"), "--no-progress"]
    _check(invoke(*args), "window_hours", "24 or 48")


# ---------------------------------------------------------------------------------------------
# Happy path
# ---------------------------------------------------------------------------------------------


def test_extract_writes_the_cohort_csv(tmp_path):
    csv = _valid_csv(tmp_path / "cohort.csv", n=200)
    out = tmp_path / "out" / "cohort_out.csv"
    result = CliRunner().invoke(
        app, ["data", "extract", "--out", str(out), "--data", f"csv:{csv}", "--target", "died"]
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert not [line for line in result.stderr.splitlines() if line.startswith("error:")]
    written = pd.read_csv(out)
    source = pd.read_csv(csv)
    assert len(written) == 200
    assert {"unit_id", "label", "age", "ward"} <= set(written.columns)
    assert "died" not in written.columns
    assert written["unit_id"].is_unique
    np.testing.assert_array_equal(written["label"].to_numpy(), source["died"].to_numpy())
    np.testing.assert_allclose(written["age"].to_numpy(), source["age"].to_numpy())


def test_no_typer_app_shows_local_variables_on_errors():
    """Typer's default exception display prints locals, which may hold patient rows."""
    from medpriv.cli import data_app
    from medpriv.cli_fl import fl_app
    from medpriv.cli_sl import sl_app

    for typer_app in (app, data_app, fl_app, sl_app):
        assert typer_app.pretty_exceptions_show_locals is False
