"""The example configs in examples/ parse, name real columns, and plan the runs they promise."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medpriv.cli import app
from medpriv.config import load_config, parse_method
from medpriv.data.sources import load_dataset
from medpriv.experiment import plan_runs
from medpriv.train.base import get_trainer
from tests.conftest import REPO

EXAMPLES = REPO / "examples"


def _plan(config) -> list[str]:
    names = {parse_method(entry)[0] for entry in config.run.methods}
    private = {name: getattr(get_trainer(name), "private", False) for name in names}
    return [spec.name for spec in plan_runs(config, private)]


@pytest.mark.parametrize("name", ["mimic3.toml", "insurance.toml", "multi_hospital.toml"])
def test_example_configs_parse_and_plan(name: str):
    config = load_config(EXAMPLES / name)
    names = _plan(config)
    assert any("dp-sgd eps=1 " in n for n in names) and any("fedavg-dp eps=3 " in n for n in names)
    assert config.run.attacks and "mia_lira" in config.run.attacks


def test_mimic_example_on_the_demo_tables(mimic_demo_dir: Path):
    config = load_config(EXAMPLES / "mimic3.toml", {"data": {"spec": f"mimic3:{mimic_demo_dir}"}})
    dataset = load_dataset(config.data)
    assert set(config.data.sensitive) <= set(dataset.features.columns)
    assert dataset.n_units == len(dataset)  # one stay per patient


def test_insurance_example_on_the_table(insurance_csv: Path):
    config = load_config(EXAMPLES / "insurance.toml", {"data": {"spec": f"csv:{insurance_csv}"}})
    dataset = load_dataset(config.data)
    assert "charges" not in dataset.features.columns and dataset.n_sites == 4
    assert 0.1 < dataset.positive_rate < 0.5


def test_multi_hospital_example_runs_on_an_extracted_cohort(tmp_path: Path):
    cohort = tmp_path / "hospitals.csv"
    extracted = CliRunner().invoke(
        app, ["data", "extract", "--data", "synthetic:1200", "--out", str(cohort)]
    )
    assert extracted.exit_code == 0, extracted.output
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--config",
            str(EXAMPLES / "multi_hospital.toml"),
            "--data",
            f"csv:{cohort}",
            "--methods",
            "baseline,fedavg",
            "--attacks",
            "mia_loss",
            "--epochs",
            "2",
            "--rounds",
            "2",
            "--out",
            str(tmp_path / "runs"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs").iterdir())
    saved = load_config(run_dir / "config.toml")
    assert saved.data.site_column == "site_id" and saved.run.methods == ("baseline", "fedavg")
    assert saved.federated.rounds == 2  # the flag overrode the file
