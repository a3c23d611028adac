"""results.json as typed records (`medpriv.results_schema`): checked when written and when
read, every problem named by its JSON path; keys added by a newer writer are allowed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medpriv.cli import app
from medpriv.config import load_config
from medpriv.experiment import RunPaths, run_experiment
from medpriv.results import results_json
from medpriv.results_schema import (
    MembershipRecord,
    ResultsSchemaError,
    check_results,
    read_results,
)
from tests.conftest import make_toy_dataset


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    config = load_config(
        None,
        {"run": {"methods": "logreg", "attacks": "mia_loss", "bootstrap": 50, "progress": False}},
    )
    paths = RunPaths.new(out)
    run_experiment(config, paths=paths, dataset=make_toy_dataset(600))
    return paths.root


@pytest.fixture
def document(run_folder: Path) -> dict:
    return json.loads((run_folder / "results.json").read_text(encoding="utf-8"))


def test_a_written_document_reads_as_typed_records(document):
    record = read_results(document)
    run = record.runs[0]
    assert record.dataset.n_units == 600 and record.complete
    assert run.method == "logreg" and isinstance(run.utility.auroc, float)
    assert run.privacy.epsilon is None and run.privacy.statement.startswith("Not differentially")
    mia = run.membership("mia_loss")
    assert isinstance(mia, MembershipRecord) and 0 <= mia.auc <= 1
    assert run.membership("mia_lira") is None and run.audit is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda d: d["runs"][0]["utility"].update(auroc="high"),
            "runs[0].utility.auroc: expected a number or null, got text",
        ),
        (lambda d: d["dataset"].pop("n_units"), "dataset.n_units: missing"),
        (
            lambda d: d["runs"][0].update(seed=True),
            "runs[0].seed: expected a whole number, got true/false",
        ),
        (
            lambda d: d["runs"][0]["attacks"]["mia_loss"].update(tpr_at_fpr=[0.1]),
            "runs[0].attacks.mia_loss.tpr_at_fpr: expected an object, got a list",
        ),
        (
            lambda d: d["runs"][0]["utility"]["confusion_matrix"][1].__setitem__(0, "x"),
            "runs[0].utility.confusion_matrix[1][0]: expected a whole number, got text",
        ),
        (lambda d: d.update(runs={}), "runs: expected a list, got an object"),
    ],
)
def test_every_problem_is_named_by_its_path(document, change, problem):
    broken = copy.deepcopy(document)
    change(broken)
    assert problem in check_results(broken)
    with pytest.raises(ResultsSchemaError, match="does not follow medpriv's results schema"):
        read_results(broken)


def test_keys_a_newer_writer_adds_are_allowed(document):
    newer = copy.deepcopy(document)
    newer["runs"][0]["fairness"] = {"gap": 0.1}
    newer["runs"][0]["utility"]["log_loss"] = 0.3
    newer["provenance"] = "site A"
    assert check_results(newer) == []


def test_a_broken_document_is_never_written(document):
    broken = copy.deepcopy(document)
    broken["runs"][0]["privacy"]["epsilon"] = "one"
    with pytest.raises(ResultsSchemaError, match=r"runs\[0\]\.privacy\.epsilon"):
        results_json(broken)


def test_report_and_resume_refuse_a_tampered_file_with_its_paths(run_folder, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    document = json.loads((run_folder / "results.json").read_text(encoding="utf-8"))
    document["runs"][0]["utility"]["auroc"] = "0.9"
    (folder / "results.json").write_text(json.dumps(document), encoding="utf-8")
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code != 0 and "runs[0].utility.auroc" in result.output
    assert not (folder / "report.html").exists()
    (folder / "config.toml").write_text((run_folder / "config.toml").read_text())
    resumed = CliRunner().invoke(app, ["run", "--resume", str(folder), "--no-progress"])
    assert resumed.exit_code != 0 and "runs[0].utility.auroc" in resumed.output


def test_the_privacy_record_names_every_key_privacy_spent_writes():
    """The schema's privacy block and the statement object that writes it cannot drift apart."""
    import dataclasses

    from medpriv.privacy.statement import PrivacySpent
    from medpriv.results_schema import PrivacyRecord

    written = set(PrivacySpent(epsilon=1.0, delta=1e-5).to_dict())
    assert written == {f.name for f in dataclasses.fields(PrivacyRecord)}
