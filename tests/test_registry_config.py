from pathlib import Path

import pytest

from medpriv.config import ExperimentConfig, build_config, load_config, to_toml
from medpriv.errors import ConfigError
from medpriv.registry import Registry


def test_registry_rejects_duplicates_and_lists_valid_names():
    registry: Registry[int] = Registry("widget")
    registry.register("a")(1)
    registry.register("b")(2)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(3)
    with pytest.raises(ConfigError, match="unknown widget 'c'; valid: a, b"):
        registry.get("c")
    assert registry.get("b") == 2 and list(registry) == ["a", "b"]


def test_config_round_trips_through_toml(tmp_path: Path):
    config = load_config(
        None,
        {
            "run": {"methods": "baseline,logreg", "seeds": 2},
            "train": {"hidden": [32, 16]},
            "data": {"threshold": 15000},
        },
    )
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config))
    assert load_config(path) == config
    assert config.train.hidden == (32, 16) and config.data.threshold == 15000.0


def test_config_gathers_all_unknown_keys_and_sections():
    with pytest.raises(ConfigError) as info:
        build_config({"trian": {}, "run": {"foo": 1, "bar": 2}})
    message = str(info.value)
    assert "[trian]" in message and "'bar'" in message and "'foo'" in message


def test_config_rejects_wrong_types_and_ranges():
    with pytest.raises(ConfigError, match="epochs"):
        build_config({"train": {"epochs": "3"}})
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        build_config({"train": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="window_hours"):
        build_config({"data": {"window_hours": 12}})


def test_cli_overrides_beat_file_and_none_is_ignored(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 7\nlr = 0.01\n")
    config = load_config(path, {"train": {"epochs": 3, "lr": None}})
    assert config.train.epochs == 3 and config.train.lr == 0.01
    assert isinstance(config, ExperimentConfig)
