"""Every numeric setting is validated at the door: a declared range for each, NaN and ±inf never
pass, and each problem names the key and its `medpriv run` option (issue 13)."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import typer

from medpriv.cli import app
from medpriv.config import (
    MAX_EPSILON,
    MAX_LAYER_WIDTH,
    MIN_DELTA,
    OPTION_FLAGS,
    RANGES,
    SECTION_TYPES,
    Range,
    build_config,
    parse_method,
)
from medpriv.errors import ConfigError


def _numeric_keys() -> list[str]:
    return [
        f"{section}.{f.name}"
        for section, cls in SECTION_TYPES.items()
        for f in fields(cls)
        if "int" in str(f.type) or "float" in str(f.type)
    ]


def _run_options() -> set[str]:
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    return {name for param in command.params for name in param.opts}


def test_every_numeric_setting_has_a_range_and_every_range_a_setting():
    unchecked = set(_numeric_keys()) - set(RANGES) - {"data.window_hours"}  # 24 or 48, alone
    assert not unchecked, f"numeric settings without a range in RANGES: {sorted(unchecked)}"
    for name in RANGES:
        section, key = name.split(".")
        assert key in {f.name for f in fields(SECTION_TYPES[section])}, name


def test_every_named_option_exists_on_medpriv_run():
    options = _run_options()
    flags = [valid.flag for valid in RANGES.values() if valid.flag] + list(OPTION_FLAGS.values())
    assert not [flag for flag in flags if flag not in options]


def _float_keys() -> list[str]:
    return [
        f"{section}.{f.name}"
        for section, cls in SECTION_TYPES.items()
        for f in fields(cls)
        if "float" in str(f.type)
    ]


@pytest.mark.parametrize("name", _float_keys())
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_no_numeric_setting_accepts_nan_or_inf(name: str, value: float):
    section, key = name.split(".")
    declared = str(next(f.type for f in fields(SECTION_TYPES[section]) if f.name == key))
    item = [value] if declared.startswith("tuple") else value
    with pytest.raises(ConfigError) as refused:
        build_config({section: {key: item}})
    message = str(refused.value)
    assert name in message and "\n" not in message
    if RANGES[name].flag:
        assert RANGES[name].flag in message


@pytest.mark.parametrize(
    ("section", "key", "value", "needle"),
    [
        ("privacy", "target_epsilon", MAX_EPSILON * 10, "privacy.target_epsilon"),
        ("privacy", "noise_multiplier", 1e300, "privacy.noise_multiplier"),
        ("privacy", "delta", MIN_DELTA / 100, "privacy.delta"),
        ("train", "hidden", [MAX_LAYER_WIDTH + 1], "train.hidden"),
        ("train", "epochs", 2**40, "train.epochs"),
        ("run", "shadow_models", 10**6, "run.shadow_models"),
        ("federated", "fraction", 0.0, "federated.fraction"),
        ("split", "val_fraction", 1.0, "split.val_fraction"),
    ],
)
def test_values_beyond_what_can_run_are_refused(section, key, value, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        build_config({section: {key: value}})


def test_a_method_at_epsilon_is_checked_like_target_epsilon():
    assert parse_method("dp-sgd@8") == ("dp-sgd", 8.0)
    for bad in ("dp-sgd@nan", "dp-sgd@inf", "dp-sgd@0", f"dp-sgd@{MAX_EPSILON * 2}"):
        with pytest.raises(ConfigError, match="--methods"):
            parse_method(bad)


def test_a_type_error_names_the_key_and_gathers_with_the_others():
    with pytest.raises(ConfigError) as refused:
        build_config({"data": 5, "train": {"lr": "fast", "epochs": 2.5}})
    message = str(refused.value)
    assert "'data'" in message and "[data] section" in message
    assert "[train] lr (--lr)" in message and "[train] epochs (--epochs)" in message


def test_range_descriptions_read_as_the_rule():
    assert Range(0, low_open=True).describe() == "> 0 and finite"
    assert Range(0, 1, low_open=True, high_open=True).describe() == "in (0, 1)"
    assert Range(1, 10).describe() == ">= 1 and at most 10"
    assert Range().describe() == "finite"
    assert math.nan not in Range() and 0.5 in Range(0, 1)
