"""`medpriv run --model hospital.skops --fitted --member-column COL`: a model a hospital already
fitted is attacked as it is — its training patients (the member column) are the members, the
patients it never saw the non-members, reference models are refits of clones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from typer.testing import CliRunner

from medpriv.cli import app
from medpriv.config import load_config
from medpriv.data.csvfile import load_csv
from medpriv.data.splits import split_with_members
from medpriv.errors import ConfigError, DataSchemaError
from medpriv.train.base import get_trainer
from tests.conftest import make_toy_dataset

NUMERIC = ["x1", "x2", "noise"]
TRUST = "numpy.dtype,sklearn.tree._tree.Tree"  # what a forest's skops file holds beyond defaults


def hospital_table(n: int = 1200) -> pd.DataFrame:
    toy = make_toy_dataset(n, seed=2)
    frame = toy.features.assign(died=toy.labels, patient=toy.unit_ids)
    rng = np.random.default_rng(5)
    return frame.assign(in_training=np.where(rng.random(n) < 0.5, "yes", "no"))


def hospital_model(frame: pd.DataFrame):
    """What a hospital team fitted on its own patients, with its own preprocessing."""
    columns = make_column_transformer(
        (SimpleImputer(strategy="median"), NUMERIC),
        (OneHotEncoder(handle_unknown="ignore"), ["group"]),
    )
    model = make_pipeline(columns, RandomForestClassifier(n_estimators=40, random_state=0))
    members = frame[frame.in_training == "yes"]
    return model.fit(members[[*NUMERIC, "group"]], members.died)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("hospital")
    frame = hospital_table()
    frame.to_csv(folder / "cohort.csv", index=False)
    sio.dump(hospital_model(frame), folder / "forest.skops")
    return folder / "cohort.csv", folder / "forest.skops"


def test_the_fitted_weights_are_attacked_with_their_own_training_patients(hospital, tmp_path):
    cohort, model_file = hospital
    args = ["run", "--data", f"csv:{cohort}", "--target", "died", "--unit-column", "patient"]
    args += ["--member-column", "in_training", "--model", str(model_file), "--fitted"]
    args += ["--model-input", "table", "--methods", "baseline", "--attacks", "mia_loss,mia_lira"]
    args += ["--quick", "--epochs", "3", "--out", str(tmp_path), "--no-progress"]
    refused = CliRunner().invoke(app, args)
    assert (
        refused.exit_code != 0 and "--trust-type numpy.dtype,sklearn.tree._tree" in refused.output
    )
    args += ["--trust-type", TRUST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads(next(tmp_path.glob("*/results.json")).read_text(encoding="utf-8"))
    runs = {run["method"]: run for run in document["runs"]}
    members = int((hospital_table().in_training == "yes").sum())
    assert runs["model"]["splits"]["train"] == runs["baseline"]["splits"]["train"] == members
    assert runs["model"]["params"]["weights"].startswith("fitted elsewhere")
    assert runs["model"]["utility"]["auroc"] > 0.75
    # a full-depth forest remembers its training patients: the right ground truth shows it
    assert runs["model"]["attacks"]["mia_loss"]["auc"] > 0.65
    assert runs["model"]["attacks"]["mia_lira"]["n_shadow"] >= 2


def test_member_splits_keep_members_in_training_and_split_the_rest(hospital):
    cohort, _ = hospital
    data = load_csv(cohort, target="died", unit_column="patient", member_column="in_training")
    assert "in_training" not in data.features.columns
    splits = split_with_members(data, val_fraction=0.15, test_fraction=0.2, seed=3)
    assert splits.train.member_flags.all() and not splits.test.member_flags.any()
    assert not splits.val.member_flags.any()
    outside = int((~data.member_flags).sum())
    assert len(splits.test) == pytest.approx(outside * 0.2 / 0.35, abs=2)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        (["yes", "maybe"], "neither yes/true/1 nor no/false/0"),
        (["yes", "yes"], "marks every record"),
    ],
)
def test_a_bad_member_column_is_a_clear_error(tmp_path, values, needle):
    frame = hospital_table(40)
    frame["in_training"] = (values * 20)[:40]
    frame.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataSchemaError, match=needle):
        load_csv(tmp_path / "c.csv", target="died", member_column="in_training")


def test_a_unit_half_in_training_is_refused(tmp_path):
    frame = hospital_table(40).assign(patient=np.arange(40) // 2)
    frame["in_training"] = ["yes", "no"] * 20
    frame.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataSchemaError, match="20 units have records both in and out"):
        load_csv(
            tmp_path / "c.csv", target="died", unit_column="patient", member_column="in_training"
        )


def test_fitted_needs_a_model_file_and_members(hospital, tmp_path):
    cohort, model_file = hospital
    args = ["run", "--data", f"csv:{cohort}", "--target", "died", "--model", str(model_file)]
    args += ["--fitted", "--trust-type", TRUST, "--out", str(tmp_path), "--no-progress"]
    no_members = CliRunner().invoke(app, args)
    assert no_members.exit_code != 0 and "--fitted needs --member-column" in no_members.output
    with pytest.raises(ConfigError, match=r"needs --model FILE\.skops"):
        get_trainer("model", model="tests.train.estimators:forest", fitted=True)
    with pytest.raises(ConfigError, match=r"run.fitted \(--fitted\) needs run.model"):
        load_config(None, {"run": {"fitted": True, "methods": "baseline"}})
