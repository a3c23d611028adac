"""Interrupted runs keep every finished run; `--resume` completes them without recomputing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medpriv.config import load_config
from medpriv.errors import MedprivError
from medpriv.experiment import RunPaths, run_experiment
from medpriv.results import validate_results


def _config(out: Path, **run: object):
    return load_config(
        None,
        {
            "data": {"spec": "synthetic:1500"},
            "run": {
                "methods": ["baseline", "logreg"],
                "seeds": 2,
                "out": str(out),
                "bootstrap": 20,
                "attacks": [],
                **run,
            },
            "train": {"epochs": 3},
        },
    )


class _StopAfter:
    """A listener that presses Ctrl-C after `n` finished runs, and records what it saw."""

    def __init__(self, n: int | None = None) -> None:
        self.n, self.events = n, []

    def __call__(self, event: str, info: dict) -> None:
        self.events.append((event, info.get("name")))
        if event == "run_end" and sum(e == "run_end" for e, _ in self.events) == self.n:
            raise KeyboardInterrupt


def test_ctrl_c_keeps_finished_runs_and_resume_skips_them(tmp_path: Path):
    config = _config(tmp_path)
    paths = RunPaths(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, paths=paths, listener=_StopAfter(2))
    saved = json.loads(paths.results.read_text())
    assert saved["complete"] is False and validate_results(saved) == []
    assert [r["name"] for r in saved["runs"]] == ["baseline seed=0", "logreg seed=0"]
    assert paths.report.is_file()  # the partial report is there too

    listener = _StopAfter()
    document = run_experiment(config, paths=paths, resume=True, listener=listener)
    assert document["complete"] is True
    assert [r["name"] for r in document["runs"]] == [
        "baseline seed=0",
        "logreg seed=0",
        "baseline seed=1",
        "logreg seed=1",
    ]
    assert [n for e, n in listener.events if e == "run_start"] == [
        "baseline seed=1",
        "logreg seed=1",
    ]
    assert [n for e, n in listener.events if e == "run_skipped"] == [
        "baseline seed=0",
        "logreg seed=0",
    ]
    assert document["runs"][:2] == saved["runs"]  # reused as they were, train_seconds included
    assert document["created"] == saved["created"]


def test_resume_refuses_a_changed_question(tmp_path: Path):
    paths = RunPaths(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(tmp_path), paths=paths, listener=_StopAfter(1))
    changed = _config(tmp_path, shadow_models=4)
    with pytest.raises(MedprivError, match=r"differs from the saved run in run\.shadow_models"):
        run_experiment(changed, paths=paths, resume=True)


def test_killed_process_resumes_without_recomputing(tmp_path: Path):
    """SIGKILL (no clean-up at all) right after the first run lands; then `--resume`."""
    out = tmp_path / "runs"
    args = [sys.executable, "-m", "medpriv.cli", "run", "--data", "synthetic:3000"]
    args += ["--methods", "baseline", "--seeds", "4", "--attacks", "none", "--epochs", "20"]
    args += ["--no-progress", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline, results = time.monotonic() + 240, None
        while time.monotonic() < deadline and process.poll() is None:
            found = list(out.glob("*/results.json"))
            if found:
                results = found[0]
                break
            time.sleep(0.02)
        assert results is not None, process.stderr.read().decode() if process.stderr else ""
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    saved = json.loads(results.read_text())
    assert saved["complete"] is False and 1 <= len(saved["runs"]) < 4
    assert not list(results.parent.glob(".*.tmp"))
    resumed = subprocess.run(
        [*args[:4], "--resume", str(results.parent), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(results.read_text())
    assert final["complete"] is True
    assert [r["name"] for r in final["runs"]] == [f"baseline seed={s}" for s in range(4)]
    assert final["runs"][: len(saved["runs"])] == saved["runs"]


def test_sigterm_stops_like_ctrl_c(tmp_path: Path):
    """`kill PID`: finished runs saved, a partial report written, the resume command printed."""
    out = tmp_path / "runs"
    args = [sys.executable, "-m", "medpriv.cli", "run", "--data", "synthetic:3000"]
    args += ["--methods", "baseline", "--seeds", "4", "--attacks", "none", "--epochs", "20"]
    args += ["--no-progress", "--out", str(out)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if list(out.glob("*/results.json")):
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == 130, stderr
    assert "medpriv run --resume" in stderr
    run_dir = next(out.iterdir())
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["complete"] is False and 1 <= len(saved["runs"]) < 4
    assert "interrupted" in (run_dir / "report.html").read_text()
    assert (run_dir / "report.md").is_file()


def test_resume_refuses_data_that_changed(tmp_path: Path):
    from medpriv.config import DataConfig
    from medpriv.data.sources import load_dataset

    paths = RunPaths(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(tmp_path), paths=paths, listener=_StopAfter(1))
    other = load_dataset(DataConfig(spec="synthetic:1400"))  # same config, other rows
    with pytest.raises(MedprivError, match="the data no longer match"):
        run_experiment(_config(tmp_path), paths=paths, resume=True, dataset=other)
