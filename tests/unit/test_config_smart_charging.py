"""The [smart_charging] table of the daemon configuration (evsed.config): loading, defaults and every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import MINIMAL

from evsed.config import ConfigError, SmartChargingConfig, load
from evsed.ocpp.configkeys import ConfigKeys
from evsed.store.db import Store


def write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "evsed.toml"
    path.write_text(MINIMAL + "\n" + extra, encoding="utf-8")
    return path


def test_defaults_without_the_table(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""))
    assert cfg.smart_charging == SmartChargingConfig()
    assert cfg.smart_charging == SmartChargingConfig(max_stack_level=10, allowed_units=("Current", "Power"),
                                                     max_periods=96, max_profiles=32,
                                                     max_composite_duration_s=604800)


def test_an_empty_table_gives_the_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "[smart_charging]\n")).smart_charging == SmartChargingConfig()


def test_the_table_loads(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, """\
[smart_charging]
max_stack_level = 3
allowed_units = ["Power", "Current"]
max_periods = 48
max_profiles = 12
max_composite_duration_s = 3600
"""))
    assert cfg.smart_charging == SmartChargingConfig(max_stack_level=3, allowed_units=("Power", "Current"),
                                                     max_periods=48, max_profiles=12, max_composite_duration_s=3600)
    assert isinstance(cfg.smart_charging.allowed_units, tuple)


def test_some_keys_only(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, '[smart_charging]\nallowed_units = ["Current"]\nmax_periods = 1\n'))
    assert cfg.smart_charging == SmartChargingConfig(allowed_units=("Current",), max_periods=1)


@pytest.mark.parametrize(("key", "value"), [
    ("max_stack_level", 0), ("max_stack_level", 1000),
    ("max_periods", 1), ("max_periods", 1000),
    ("max_profiles", 1), ("max_profiles", 1000),
    ("max_composite_duration_s", 60), ("max_composite_duration_s", 31 * 86400),
])
def test_range_edges_accepted(tmp_path: Path, key: str, value: int) -> None:
    cfg = load(write(tmp_path, f"[smart_charging]\n{key} = {value}\n"))
    assert getattr(cfg.smart_charging, key) == value


def test_the_ocpp_keys_the_daemon_reports(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, """\
[smart_charging]
max_stack_level = 4
allowed_units = ["Power"]
max_periods = 24
max_profiles = 8
"""))
    sc = cfg.smart_charging
    assert sc.ocpp_keys() == {"ChargeProfileMaxStackLevel": 4, "ChargingScheduleAllowedChargingRateUnit": ["Power"],
                              "ChargingScheduleMaxPeriods": 24, "MaxChargingProfilesInstalled": 8}
    # As the daemon does: the values become the read-only 9.4 keys (the order of the units is kept).
    keys = ConfigKeys(Store(":memory:"), {}, 1, feature_profiles=("Core", "SmartCharging"), fixed=sc.ocpp_keys())
    known, unknown = keys.entries(["ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit",
                                   "ChargingScheduleMaxPeriods", "MaxChargingProfilesInstalled"])
    assert unknown == []
    assert [(e["key"], e["value"], e["readonly"]) for e in known] == [
        ("ChargeProfileMaxStackLevel", "4", True), ("ChargingScheduleAllowedChargingRateUnit", "Power", True),
        ("ChargingScheduleMaxPeriods", "24", True), ("MaxChargingProfilesInstalled", "8", True)]
    both = ConfigKeys(Store(":memory:"), {}, 1, feature_profiles=("Core", "SmartCharging"),
                      fixed=SmartChargingConfig(allowed_units=("Power", "Current")).ocpp_keys())
    assert both["ChargingScheduleAllowedChargingRateUnit"] == ("Power", "Current")


BAD: list[tuple[str, str, str]] = [
    # (key, TOML value, a piece of the problem)
    ("max_stack_level", '"5"', "expected an integer, got a string"),
    ("max_stack_level", "2.0", "expected an integer, got a float"),
    ("max_stack_level", "true", "expected an integer, got a boolean"),
    ("max_stack_level", "-1", "between 0 and 1000"),
    ("max_stack_level", "1001", "between 0 and 1000"),
    ("allowed_units", '"Current"', "non-empty array"),
    ("allowed_units", "[]", "non-empty array"),
    ("allowed_units", '["Current", "Watts"]', "unknown unit 'Watts'"),
    ("allowed_units", '["A"]', "unknown unit 'A'"),
    ("allowed_units", "[1]", "unknown unit 1"),
    ("allowed_units", '["Power", "Power"]', "twice"),
    ("max_periods", "0", "between 1 and 1000"),
    ("max_periods", "1001", "between 1 and 1000"),
    ("max_periods", '"96"', "expected an integer"),
    ("max_profiles", "0", "between 1 and 1000"),
    ("max_profiles", "1001", "between 1 and 1000"),
    ("max_profiles", "[32]", "expected an integer, got an array"),
    ("max_composite_duration_s", "59", "must be between 60 and "),
    ("max_composite_duration_s", "2678401", "must be between 60 and "),
    ("max_composite_duration_s", "3600.5", "expected an integer"),
    ("max_composite_duration_s", "inf", "expected an integer"),
    ("max_duration", "3600", "unknown key"),
    ("MaxChargingProfilesInstalled", "3", "unknown key"),
]


@pytest.mark.parametrize(("key", "value", "problem"), BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_values_name_the_key(tmp_path: Path, key: str, value: str, problem: str) -> None:
    path = write(tmp_path, f"[smart_charging]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    err = info.value
    assert err.key == f"smart_charging.{key}"
    assert problem in err.problem, err.problem
    assert str(err).startswith(f"{path}: smart_charging.{key}: ")
    assert "\n" not in str(err)


def test_the_range_message_prints_the_upper_bound_in_full(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "[smart_charging]\nmax_composite_duration_s = 2678401\n"))
    assert info.value.problem == "must be between 60 and 2678400, got 2678401"


@pytest.mark.parametrize("table", ['smart_charging = 5', 'smart_charging = "yes"', 'smart_charging = [1, 2]'])
def test_smart_charging_must_be_a_table(tmp_path: Path, table: str) -> None:
    # A top-level key: it has to come before the first table header.
    path = tmp_path / "evsed.toml"
    path.write_text(table + "\n" + MINIMAL, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == "smart_charging"
    assert "expected a table" in info.value.problem


def test_a_misspelt_table_is_an_unknown_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "[smartcharging]\nmax_periods = 4\n"))
    assert info.value.key == "smartcharging" and info.value.problem == "unknown table"


def test_values_are_parsed_not_guessed(tmp_path: Path) -> None:
    # A string that looks like a number is still a string.
    with pytest.raises(ConfigError, match=r"smart_charging\.max_profiles: expected an integer, got a string"):
        load(write(tmp_path, '[smart_charging]\nmax_profiles = "32"\n'))
