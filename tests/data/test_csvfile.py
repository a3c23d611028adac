from pathlib import Path

import numpy as np
import pytest

from medpriv.data.csvfile import load_csv
from medpriv.errors import DataSchemaError


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_insurance_task(insurance_csv: Path):
    data = load_csv(insurance_csv, target="charges", threshold=15000, sensitive=("sex", "smoker"))
    assert len(data) == 1337  # 1,338 rows, one exact duplicate dropped
    assert data.schema.categorical == ("sex", "smoker", "region")
    assert data.schema.numeric == ("age", "bmi", "children")
    assert "charges" not in data.features.columns
    assert data.label_name == "charges > 15000"
    assert any("duplicate" in note for note in data.notes)
    kept = load_csv(insurance_csv, target="charges", threshold=15000, keep_duplicates=True)
    assert len(kept) == 1338 and any(n.startswith("WARNING") for n in kept.notes)


def test_binary_target_detected_and_categoricals_encoded(tmp_path: Path):
    rows = ["patient,site,age,smoker,outcome"]
    rows += [
        f"p{i % 40},h{i % 3},{30 + i % 50},{'yes' if i % 4 else 'no'},{i % 2}" for i in range(120)
    ]
    path = _write(tmp_path / "t.csv", "\n".join(rows) + "\n")
    data = load_csv(path, target="outcome", unit_column="patient", site_column="site")
    assert set(data.features.columns) == {"age", "smoker"}
    assert data.schema.categorical == ("smoker",)
    assert data.n_units == 40 and data.n_sites == 3
    assert any("several records per unit" in n for n in data.notes)
    assert np.array_equal(np.unique(data.labels), [0, 1])


def test_positive_value_for_a_categorical_target(tmp_path: Path):
    path = _write(tmp_path / "t.csv", "x,y\n1,dead\n2,alive\n3,dead\n4,alive\n5,unknown\n")
    data = load_csv(path, target="y", positive="dead")
    assert data.labels.tolist() == [1, 0, 1, 0, 0]
    with pytest.raises(DataSchemaError, match="never occurs"):
        load_csv(path, target="y", positive="Dead")
    with pytest.raises(DataSchemaError, match="pass --positive VALUE or --threshold"):
        load_csv(path, target="y")


def test_identifier_like_categorical_is_refused(tmp_path: Path):
    rows = ["name,x,y"] + [f"n{i},{i},{i % 2}" for i in range(300)]
    path = _write(tmp_path / "t.csv", "\n".join(rows))
    with pytest.raises(DataSchemaError, match="--drop name"):
        load_csv(path, target="y")
    assert "name" not in load_csv(path, target="y", drop=("name",)).features.columns


def test_all_problems_with_flags_reported_at_once(tmp_path: Path):
    path = _write(tmp_path / "t.csv", "x,y\n1,0\n2,1\n")
    with pytest.raises(DataSchemaError) as info:
        load_csv(path, target="y", unit_column="pid", drop=("nope",))
    assert "'pid'" in str(info.value) and "'nope'" in str(info.value)
