import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medpriv.experiment as experiment
from medpriv.cli import app
from medpriv.config import ATTACK_NAMES, load_config
from medpriv.data.splits import Splits
from medpriv.experiment import RunPaths, run_experiment
from medpriv.results import validate_results
from tests.conftest import make_toy_dataset


@pytest.fixture
def toy_csv(tmp_path: Path) -> Path:
    data = make_toy_dataset(500)
    frame = data.features.assign(outcome=data.labels)
    path = tmp_path / "toy.csv"
    frame.to_csv(path, index=False)
    return path


def _config(toy_csv: Path, out: Path, epochs: int = 4, attacks: tuple[str, ...] = ()):
    return load_config(
        None,
        {
            "data": {"spec": f"csv:{toy_csv}", "target": "outcome", "sensitive": ["group"]},
            "run": {
                "methods": ["baseline", "logreg"],
                "seeds": 2,
                "out": str(out),
                "bootstrap": 50,
                "attacks": list(attacks),
                "shadow_models": 4,
                "min_group_units": 10,
            },
            "train": {"epochs": epochs, "patience": 50, "batch_size": 64},
        },
    )


def test_experiment_writes_contract_results_report_and_config(toy_csv: Path, tmp_path: Path):
    config = _config(toy_csv, tmp_path / "runs", attacks=ATTACK_NAMES)
    events = []
    document = run_experiment(config, listener=lambda e, i: events.append(e))
    run_dir = next((tmp_path / "runs").iterdir())
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["runs"] == json.loads(json.dumps(document["runs"]))
    assert validate_results(on_disk) == []
    assert [r["name"] for r in on_disk["runs"]] == [
        "baseline seed=0",
        "logreg seed=0",
        "baseline seed=1",
        "logreg seed=1",
    ]
    assert on_disk["dataset"]["n_records"] == 500
    for run in on_disk["runs"]:
        assert run["privacy"]["epsilon"] is None
        not_applicable = {"fl_inversion", "sl_label_leakage", "sl_reconstruction"}
        assert set(run["attacks"]) == set(ATTACK_NAMES) - not_applicable
        assert run["attacks"]["mia_lira"]["n_shadow"] == 4
        audit = run["attacks"]["audit"]  # black-box only: nothing here has gradient canaries
        assert set(audit) >= {"black_box", "deciding"} and "white_box" not in audit
        assert audit["verdict"] == "no claim" and audit["consistent"] is None
        assert 0.7 < run["utility"]["auroc"] <= 1.0
        assert sum(run["splits"].values()) == 500 and set(run["splits"]) == {"train", "val", "test"}
        for name in ("mia_loss", "mia_lira", "mia_rmia"):
            block = run["attacks"][name]
            assert block["n_members"] == run["splits"]["train"]  # one record per unit here
            assert block["n_nonmembers"] == run["splits"]["test"]
            assert block["nonmembers_from"] == "test"
        subgroups = run["subgroups"]  # the sensitive column; a csv has no age or site here
        assert subgroups["membership_attack"] == "mia_lira" and subgroups["min_units"] == 10
        (attribute,) = subgroups["attributes"]
        assert attribute["attribute"] == "group"
        groups = attribute["groups"]
        assert {g["group"] for g in groups} == {"a", "b", "c"}
        assert sum(g["units"] for g in groups) == run["splits"]["test"]
        assert all("auroc" in g and "membership" in g for g in groups)
    assert len(on_disk["runs"][0]["history"]) == 4
    html = (run_dir / "report.html").read_text()
    markdown = (run_dir / "report.md").read_text()
    regenerated = CliRunner().invoke(app, ["report", str(run_dir)])
    assert regenerated.exit_code == 0, regenerated.output
    assert (run_dir / "report.html").read_text() == html  # from results.json alone, identical
    assert (run_dir / "report.md").read_text() == markdown
    assert "baseline seed=1" in html and "data:image/png;base64," in html
    assert "Membership inference" in html and "ε lower bound" in html
    assert 'id="who-pays"' in html and "## Who pays — subgroups" in markdown
    assert load_config(run_dir / "config.toml") == config
    assert events.count("run_end") == 4 and events[-1] == "done"
    assert not list(run_dir.glob(".*.tmp"))


def test_attacks_leave_the_splits_and_the_released_model_unchanged(
    toy_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The release-model protocol: the attacked model is the one a run without attacks gives."""
    made: list[Splits] = []
    make_splits = experiment.make_splits

    def recording(*args, **kwargs) -> Splits:
        made.append(make_splits(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(experiment, "make_splits", recording)
    documents = []
    for attacks in (["mia_loss"], []):
        config = load_config(
            None,
            {
                "data": {"spec": f"csv:{toy_csv}", "target": "outcome"},
                "run": {
                    "methods": ["baseline"],
                    "out": str(tmp_path / "runs"),
                    "bootstrap": 20,
                    "attacks": attacks,
                },
                "train": {"epochs": 3, "batch_size": 64},
            },
        )
        documents.append(run_experiment(config))
    on, off = made
    assert set(on.parts) == set(off.parts) == {"train", "val", "test"}
    for name in on.parts:
        assert np.array_equal(on.parts[name].unit_ids, off.parts[name].unit_ids)
    (run_on,), (run_off,) = (document["runs"] for document in documents)
    assert run_on["splits"] == run_off["splits"]
    assert run_on["utility"] == run_off["utility"] and run_on["history"] == run_off["history"]
    assert set(run_on["attacks"]) == {"mia_loss"} and not run_off.get("attacks")
    assert run_on["attacks"]["mia_loss"]["n_members"] == run_on["splits"]["train"]
    assert run_on["attacks"]["mia_loss"]["n_nonmembers"] == run_on["splits"]["test"]


def test_a_large_table_is_attacked_on_a_sample_and_the_report_says_so(
    toy_csv: Path, tmp_path: Path
):
    config = load_config(
        None,
        {
            "data": {"spec": f"csv:{toy_csv}", "target": "outcome", "sensitive": ["group"]},
            "run": {
                "methods": ["logreg"],
                "out": str(tmp_path / "runs"),
                "bootstrap": 20,
                "attacks": ["mia_loss", "mia_lira"],
                "shadow_models": 4,
                "attack_units": 60,
                "min_group_units": 10,
            },
        },
    )
    (run,) = run_experiment(config)["runs"]
    for name in ("mia_loss", "mia_lira"):
        block = run["attacks"][name]
        assert block["n_members"] == block["n_nonmembers"] == 60  # one record per unit here
        assert block["sample"] == {
            "member_units": 60,
            "member_units_total": run["splits"]["train"],
            "nonmember_units": 60,
            "nonmember_units_total": run["splits"]["test"],
        }
    exposure = run["subgroups"]["attributes"][0]["groups"]
    assert sum(g["membership"]["members"] for g in exposure if g.get("membership")) <= 60
    run_dir = next((tmp_path / "runs").iterdir())
    said = f"a uniform random sample of 60 of {run['splits']['train']:,} training patients"
    assert said in (run_dir / "report.md").read_text()
    assert said in (run_dir / "report.html").read_text()


def test_resume_extends_training_from_checkpoints(toy_csv: Path, tmp_path: Path):
    first = run_experiment(_config(toy_csv, tmp_path / "runs", epochs=2))
    run_dir = next((tmp_path / "runs").iterdir())
    again = run_experiment(
        _config(toy_csv, tmp_path / "runs", epochs=5), paths=RunPaths(run_dir), resume=True
    )
    before = first["runs"][0]["history"]
    after = again["runs"][0]["history"]
    assert [h["epoch"] for h in after] == [1, 2, 3, 4, 5]
    assert after[:2] == before
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_cli_run_end_to_end(toy_csv: Path, tmp_path: Path):
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--data",
            f"csv:{toy_csv}",
            "--target",
            "outcome",
            "--methods",
            "logreg",
            "--out",
            str(tmp_path / "runs"),
            "--no-progress",
            "--epochs",
            "2",
            "--shadow-models",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "logreg" in result.output and "not private" in result.output
    run_dir = next((tmp_path / "runs").iterdir())
    assert (run_dir / "report.html").is_file() and (run_dir / "results.json").is_file()
    resumed = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output


def test_unknown_method_fails_before_loading_data(tmp_path: Path):
    config = load_config(
        None,
        {
            "data": {"spec": "csv:/nonexistent.csv"},
            "run": {"methods": ["nope"], "out": str(tmp_path)},
        },
    )
    with pytest.raises(
        ValueError,
        match="unknown method 'nope'; valid: baseline, dp-logreg, dp-sgd, fedavg, fedavg-cdp, "
        "fedavg-dp, hgb, logreg, model",
    ):
        run_experiment(config)


def test_cli_epsilon_sweep_with_private_methods(toy_csv: Path, tmp_path: Path):
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--data",
            f"csv:{toy_csv}",
            "--target",
            "outcome",
            "--methods",
            "dp-logreg,dp-sgd",
            "--epsilons",
            "1,4",
            "--epochs",
            "2",
            "--data-norm",
            "2",
            "--shadow-models",
            "4",
            "--out",
            str(tmp_path / "runs"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    runs = json.loads((run_dir / "results.json").read_text())["runs"]
    assert [r["name"] for r in runs] == [
        "dp-logreg eps=1 seed=0",
        "dp-logreg eps=4 seed=0",
        "dp-sgd eps=1 seed=0",
        "dp-sgd eps=4 seed=0",
    ]
    for run in runs:
        target = float(run["name"].split("eps=")[1].split()[0])
        assert 0 < run["privacy"]["epsilon"] <= target
    assert runs[0]["params"]["data_norm"] == 2.0
    assert runs[2]["privacy"]["sampling"] == "poisson"
    for run in runs:  # every private model is attacked and audited against its own claim
        assert run["attacks"]["mia_lira"]["n_shadow"] == 4
        audit = run["attacks"]["audit"]
        assert ("white_box" in audit) == (run["method"] == "dp-sgd") and "black_box" in audit
        assert audit["claimed_epsilon"] == pytest.approx(run["privacy"]["epsilon"], rel=0.1)
        assert audit["consistent"] is True and not audit["verdict"].startswith("contradicted")
    assert len(list((run_dir / "checkpoints").glob("dp-sgd*.pt"))) == 2


def test_cli_federated_methods_fill_results_and_attacks(toy_csv: Path, tmp_path: Path):
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--data",
            f"csv:{toy_csv}",
            "--target",
            "outcome",
            "--methods",
            "fedavg,fedavg-dp,fedavg-cdp",
            "--epsilons",
            "3",
            "--partition",
            "iid:6",
            "--rounds",
            "3",
            "--hidden",
            "16",
            "--fraction",
            "0.5",
            "--attacks",
            "mia_loss,audit,fl_inversion",
            "--out",
            str(tmp_path / "runs"),
            "--no-progress",
            "--quick",  # small attack budgets (the flags above win over its data and rounds)
        ],
    )
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    document = json.loads((run_dir / "results.json").read_text())
    assert validate_results(document) == []
    runs = {r["method"]: r for r in document["runs"]}
    assert set(runs) == {"fedavg", "fedavg-dp", "fedavg-cdp"}
    assert runs["fedavg"]["privacy"]["epsilon"] is None
    assert runs["fedavg-dp"]["privacy"]["unit"] == "record"  # a CSV without --unit-column
    assert runs["fedavg-cdp"]["privacy"]["unit"] == "site"
    for run in runs.values():
        assert len(run["history"]) == 3 and run["cost"]["bytes_communicated"] > 0
        assert {"mia_loss", "audit", "fl_inversion"} <= set(run["attacks"])
        assert run["params"]["partition"] == "iid:6"
    assert "Gradient inversion" in (run_dir / "report.html").read_text()


def test_cli_reproducible_noise_is_recorded_and_stated_as_no_guarantee(
    toy_csv: Path, tmp_path: Path
):
    def run(*extra: str) -> dict:
        out = tmp_path / f"runs{len(extra)}"
        result = CliRunner().invoke(
            app,
            [
                "run",
                "--data",
                f"csv:{toy_csv}",
                "--target",
                "outcome",
                "--methods",
                "dp-sgd",
                "--epsilons",
                "2",
                "--attacks",
                "none",
                "--epochs",
                "2",
                "--out",
                str(out),
                "--no-progress",
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        run_dir = next(out.iterdir())
        return json.loads((run_dir / "results.json").read_text())["runs"][0]["privacy"]

    plain, replayable = run(), run("--reproducible-noise")
    assert plain["noise"] == "csprng" and not plain["statement"].startswith("NO GUARANTEE")
    assert replayable["noise"] == "reproducible"
    assert replayable["statement"].startswith("NO GUARANTEE")
