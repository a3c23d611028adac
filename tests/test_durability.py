"""Kill-safety and output paths: `complete` is written last, temp files a kill left are removed
at the next start, every file is written atomically, and a bad output path is one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medpriv.cli import app
from medpriv.config import load_config
from medpriv.errors import ConfigError
from medpriv.experiment import RunPaths, run_experiment
from medpriv.files import clean_output_folders
from medpriv.report.files import write_reports


def _config(out: Path):
    return load_config(
        None,
        {
            "data": {"spec": "synthetic:1500"},
            "run": {
                "methods": ["logreg"],
                "seeds": 2,
                "out": str(out),
                "bootstrap": 10,
                "attacks": [],
            },
            "train": {"epochs": 2},
        },
    )


class _Events:
    """A listener that records (event, info)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def __call__(self, event: str, info: dict) -> None:
        self.seen.append((event, info))


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


def test_killed_before_the_report_is_not_complete_and_resume_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A crash between the last run and the reports: results.json keeps every run but is not
    `complete`; the resume recomputes nothing, removes the stale temp files, and completes it."""
    config, paths = _config(tmp_path), RunPaths(tmp_path / "run")

    def killed(document: dict, folder: Path) -> None:
        raise RuntimeError("killed while writing the report")

    monkeypatch.setattr("medpriv.report.files.write_reports", killed)
    with pytest.raises(RuntimeError, match="killed"):
        run_experiment(config, paths=paths)
    saved = json.loads(paths.results.read_text())
    assert saved["complete"] is False
    assert [r["name"] for r in saved["runs"]] == ["logreg seed=0", "logreg seed=1"]
    assert not paths.report.exists()

    monkeypatch.undo()
    stale = [paths.root / ".results.json.k1ll3d.tmp", paths.root / "checkpoints" / ".x.pt.a.tmp"]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_text("half a file")
    events = _Events()
    document = run_experiment(config, paths=paths, resume=True, listener=events)
    assert document["complete"] is True
    assert not [e for e, _ in events.seen if e == "run_start"]  # nothing recomputed
    assert json.loads(paths.results.read_text())["complete"] is True
    assert paths.report.is_file() and (paths.root / "report.md").is_file()
    assert _temps(paths.root) == []
    [note] = [info["text"] for event, info in events.seen if event == "cleaned"]
    assert note.startswith("removed 2 temp file(s)") and "\n" not in note


def test_clean_output_folders_removes_only_temp_files(tmp_path: Path):
    keep = [tmp_path / "results.json", tmp_path / ".hidden", tmp_path / "notes.tmp"]
    for path in keep:
        path.write_text("x")
    (tmp_path / ".report.html.abc.tmp").write_text("half")
    note = clean_output_folders(tmp_path, tmp_path / "missing")
    assert note == f"removed 1 temp file(s) an interrupted write left in {tmp_path}"
    assert all(path.exists() for path in keep) and _temps(tmp_path) == []
    assert clean_output_folders(tmp_path) is None


def test_config_toml_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A failure while config.toml is renamed into place leaves no config.toml and no temp."""
    real_replace = os.replace

    def failing_replace(src: str, dst: str) -> None:
        if Path(dst).name == "config.toml":
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr("medpriv.files.os.replace", failing_replace)
    paths = RunPaths(tmp_path / "run")
    with pytest.raises(OSError, match="disk full"):
        run_experiment(_config(tmp_path), paths=paths)
    assert not paths.config.exists()
    assert _temps(tmp_path) == []


def test_write_reports_names_an_unwritable_folder(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot be written") as caught:
        write_reports({"runs": []}, blocker / "reports")
    assert str(blocker / "reports") in str(caught.value) and "\n" not in str(caught.value)


def _one_error_line(result, path: Path) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert str(path) in errors[0], errors[0]
    return errors[0]


def _blocker(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--data", "synthetic:300", "--methods", "logreg", "--no-progress"],
        ["fl", "run"],
        ["fl", "local", "--data", "synthetic:300"],
    ],
    ids=["run", "fl-run", "fl-local"],
)
def test_out_naming_a_file_or_an_unwritable_folder_is_one_line(command: list[str], tmp_path: Path):
    blocker = _blocker(tmp_path)
    line = _one_error_line(CliRunner().invoke(app, [*command, "--out", str(blocker)]), blocker)
    assert "is a file, not a folder" in line
    inside = blocker / "runs"  # root writes anywhere, but not under a regular file
    line = _one_error_line(CliRunner().invoke(app, [*command, "--out", str(inside)]), inside)
    assert "cannot be written" in line and "name a folder you can write to" in line
    assert blocker.read_text() == "not a folder"


def test_data_extract_out_naming_a_folder_is_one_line(tmp_path: Path):
    args = ["data", "extract", "--data", "synthetic:300", "--out", str(tmp_path)]
    line = _one_error_line(CliRunner().invoke(app, args), tmp_path)
    assert "is a folder" in line and str(tmp_path / "cohort.csv") in line


def test_data_extract_writes_the_cohort_atomically(tmp_path: Path):
    out = tmp_path / "new" / "cohort.csv.gz"
    result = CliRunner().invoke(
        app, ["data", "extract", "--data", "synthetic:300", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)  # gzip, inferred from the name as before
    assert {"unit_id", "label"} <= set(frame.columns) and len(frame) > 0
    assert _temps(tmp_path) == []
