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


def test_default_run_is_the_issue_comparison():
    from medpriv.config import DEFAULT_ATTACKS, DEFAULT_METHODS

    config = load_config(None)
    assert config.run.methods == DEFAULT_METHODS
    assert config.run.methods == (
        "baseline",
        "logreg",
        "dp-sgd@1",
        "dp-sgd@8",
        "dp-logreg@1",
        "fedavg",
        "fedavg-dp@3",
        "split-ushaped",
    )
    assert config.run.attacks == DEFAULT_ATTACKS and config.run.shadow_models == 16
    assert config.federated.partition == "site" and config.run.seeds == 1


def test_method_at_epsilon_plans_one_run_per_entry():
    from medpriv.experiment import plan_runs

    config = load_config(
        None, {"run": {"methods": "baseline,dp-sgd@1,dp-sgd@8,dp-logreg", "seeds": 2}}
    )
    private = {"baseline": False, "dp-sgd": True, "dp-logreg": True}
    runs = plan_runs(config, private)
    assert [r.name for r in runs[:4]] == [
        "baseline seed=0",
        "dp-sgd eps=1 seed=0",
        "dp-sgd eps=8 seed=0",
        "dp-logreg eps=1 seed=0",  # privacy.target_epsilon
    ]
    assert [r.privacy.target_epsilon for r in runs[1:3]] == [1.0, 8.0]
    assert len(runs) == 8 and runs[4].seed == 1
    with pytest.raises(ConfigError, match="not private; drop the @ε"):
        plan_runs(load_config(None, {"run": {"methods": "baseline@3"}}), private)
    with pytest.raises(ConfigError, match="the same run twice"):
        plan_runs(load_config(None, {"run": {"methods": "dp-sgd@1,dp-sgd@1.0"}}), private)
    for bad in ("dp-sgd@x", "dp-sgd@0", "dp-sgd@-1", "dp-sgd@inf"):
        with pytest.raises(ConfigError, match="dp-sgd@"):
            load_config(None, {"run": {"methods": bad}})


def test_quick_replaces_defaults_but_not_the_file_or_flags(tmp_path: Path):
    from medpriv.config import QUICK

    quick = load_config(None, base=QUICK)
    assert quick.data.spec == "synthetic:4000" and quick.run.shadow_models == 4
    assert quick.federated.rounds == 8 and quick.run.inversion_steps == 50
    path = tmp_path / "x.toml"
    path.write_text('[data]\nspec = "csv:mine.csv"\ntarget = "y"\n[federated]\nrounds = 9\n')
    mine = load_config(path, {"train": {"epochs": 2}}, base=QUICK)
    assert mine.data.spec == "csv:mine.csv" and mine.data.target == "y"
    assert mine.federated.rounds == 9 and mine.train.epochs == 2 and mine.run.shadow_models == 4
    assert load_config(None).run.inversion_steps == 300
    path.write_text("run = 3\n")
    with pytest.raises(ConfigError, match=r"must be a \[run\] section"):
        load_config(path)
