"""The README's configuration example is a valid experiment file."""

import re
from pathlib import Path

from medpriv.config import load_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_toml_example_loads(tmp_path: Path):
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    path = tmp_path / "experiment.toml"
    path.write_text(blocks[0], encoding="utf-8")
    config = load_config(path)
    assert config.run.epsilons == (0.5, 1.0, 3.0, 8.0)
    assert "dp-sgd" in config.run.methods and config.data.threshold == 15000
