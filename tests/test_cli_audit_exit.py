"""`medpriv run` exits 4 when a canary audit contradicts a claimed ε — after writing every
output — unless --allow-audit-failure; a correct mechanism exits 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medpriv.cli import app
from medpriv.cli_common import AUDIT_EXIT
from medpriv.privacy.randomness import NoiseSource

ARGS = (
    *("run", "--data", "synthetic:1500", "--methods", "dp-sgd", "--attacks", "audit"),
    *("--epsilons", "2", "--epochs", "3", "--no-progress"),
)


def _run(out: Path, *extra: str):
    return CliRunner().invoke(app, [*ARGS, "--out", str(out), *extra])


def test_a_contradicted_audit_fails_the_run_after_writing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    draw = NoiseSource.gaussian_
    monkeypatch.setattr(NoiseSource, "gaussian_", lambda self, out, std: draw(self, out, 0.0))
    failed = _run(tmp_path / "a")
    assert failed.exit_code == AUDIT_EXIT, failed.output
    assert "contradicts the claimed ε" in failed.output and "Traceback" not in failed.output
    results = json.loads(next((tmp_path / "a").rglob("results.json")).read_text())
    assert results["complete"] is True
    audit = results["runs"][0]["attacks"]["audit"]
    assert audit["consistent"] is False and audit["white_box"]["verdict"] == "contradicted"
    assert next((tmp_path / "a").rglob("report.html")).is_file()
    allowed = _run(tmp_path / "b", "--allow-audit-failure")
    assert allowed.exit_code == 0, allowed.output


def test_a_correct_mechanism_passes_its_audit(tmp_path: Path):
    result = _run(tmp_path)
    assert result.exit_code == 0, result.output
    results = json.loads(next(tmp_path.rglob("results.json")).read_text())
    audit = results["runs"][0]["attacks"]["audit"]
    assert audit["consistent"] is True and {"white_box", "black_box"} <= set(audit)
