"""`medpriv data synth` and `data extract` through the CLI, and the notebook-style Python API."""

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from medpriv.cli import app
from medpriv.config import DataConfig, TrainConfig
from medpriv.data.sources import load_dataset
from medpriv.data.splits import split_by_unit
from medpriv.experiment import evaluate
from medpriv.train.base import get_trainer


def test_synth_then_extract(tmp_path: Path):
    runner = CliRunner()
    tables = tmp_path / "tables"
    result = runner.invoke(app, ["data", "synth", "--out", str(tables), "--stays", "400"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in tables.iterdir()} >= {"CHARTEVENTS.csv", "ICUSTAYS.csv"}
    cohort = tmp_path / "cohort.csv"
    result = runner.invoke(
        app,
        [
            "data",
            "extract",
            "--data",
            f"mimic3:{tables}",
            "--out",
            str(cohort),
            "--window-hours",
            "48",
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(cohort)
    assert {"unit_id", "site_id", "label", "heart_rate_mean", "age"} <= set(frame.columns)
    assert frame["unit_id"].is_unique and 0 < len(frame) < 400
    assert set(frame["label"]) == {0, 1}


def test_python_api_as_in_the_readme(tmp_path: Path):
    # A stand-in for the insurance table (1,338 rows): 300 distinct rows (a table of 50 distinct
    # rows is too small to split into train, validation and test of 10+ per class each).
    smoker = [i % 5 == 0 for i in range(300)]
    rows = ["age,smoker,children,charges"] + [
        f"{20 + i % 50},{'yes' if s else 'no'},{i % 7},{3000 + 400 * (i % 50) + 20000 * s}"
        for i, s in enumerate(smoker)
    ]
    path = tmp_path / "ins.csv"
    path.write_text("\n".join(rows) + "\n")
    data = load_dataset(DataConfig(spec=f"csv:{path}", target="charges", threshold=15000))
    splits = split_by_unit(data, val_fraction=0.15, test_fraction=0.2, seed=0)
    model = get_trainer("logreg").fit(splits=splits, config=TrainConfig(), seed=0)
    utility, curves = evaluate(model, splits, n_boot=100)
    assert utility["auroc"] > 0.9 and "roc" in curves
    assert model.predict_proba(splits.test.features).shape == (len(splits.test),)
