"""OCPP configuration keys (evsed.ocpp.configkeys) with a fake key store."""

from __future__ import annotations

from typing import Any

import pytest

from evsed.ocpp.configkeys import KEYS, SUPPORTED_MEASURANDS, ConfigKeyError, ConfigKeys, validate_initial


class FakeStore:
    def __init__(self, stored: dict[str, str] | None = None) -> None:
        self.stored: dict[str, str] = dict(stored or {})
        self.saves: list[tuple[str, str]] = []

    def load_config_keys(self) -> dict[str, str]:
        return dict(self.stored)

    def save_config_key(self, name: str, value: str) -> None:
        self.saves.append((name, value))
        self.stored[name] = value


def make(stored: dict[str, str] | None = None, initial: dict[str, Any] | None = None,
         connectors: int = 2) -> tuple[ConfigKeys, FakeStore]:
    store = FakeStore(stored)
    return ConfigKeys(store, initial or {}, connectors), store


# --- precedence -------------------------------------------------------------------------------------------
def test_defaults() -> None:
    keys, store = make()
    assert keys["HeartbeatInterval"] == 300
    assert keys["ConnectionTimeOut"] == 60
    assert keys["AllowOfflineTxForUnknownId"] is False
    assert keys["StopTransactionOnEVSideDisconnect"] is True
    assert keys["MeterValuesSampledData"] == ("Energy.Active.Import.Register", "Power.Active.Import")
    assert keys["StopTxnSampledData"] == ()
    assert keys["SupportedFeatureProfiles"] == ("Core",)
    assert keys["NumberOfConnectors"] == 2
    assert store.saves == []  # reading never writes


def test_every_default_parses_under_its_own_rules() -> None:
    for kd in KEYS.values():
        assert kd.parse(kd.format(kd.default)) == kd.default, kd.name


def test_initial_overrides_default() -> None:
    keys, _ = make(initial={"HeartbeatInterval": 60, "MeterValuesSampledData": ("Voltage",)})
    assert keys["HeartbeatInterval"] == 60
    assert keys["MeterValuesSampledData"] == ("Voltage",)


def test_stored_overrides_initial_and_default() -> None:
    keys, _ = make(stored={"HeartbeatInterval": "900", "AllowOfflineTxForUnknownId": "true",
                           "MeterValuesSampledData": "Voltage,Current.Import"},
                   initial={"HeartbeatInterval": 60})
    assert keys["HeartbeatInterval"] == 900
    assert keys["AllowOfflineTxForUnknownId"] is True
    assert keys["MeterValuesSampledData"] == ("Voltage", "Current.Import")


def test_stored_empty_list() -> None:
    keys, _ = make(stored={"MeterValuesSampledData": ""})
    assert keys["MeterValuesSampledData"] == ()


def test_invalid_stored_value_falls_back_to_initial() -> None:
    keys, _ = make(stored={"HeartbeatInterval": "soon", "ConnectionTimeOut": "0"},
                   initial={"HeartbeatInterval": 60})
    assert keys["HeartbeatInterval"] == 60
    assert keys["ConnectionTimeOut"] == 60  # default


def test_stored_unknown_and_readonly_keys_are_ignored() -> None:
    keys, _ = make(stored={"Bogus": "1", "NumberOfConnectors": "7", "GetConfigurationMaxKeys": "1"})
    assert keys["NumberOfConnectors"] == 2
    assert keys["GetConfigurationMaxKeys"] == 100
    with pytest.raises(KeyError):
        keys["Bogus"]


def test_number_of_connectors_comes_from_the_constructor() -> None:
    keys, _ = make(connectors=4)
    assert keys["NumberOfConnectors"] == 4
    known, _ = keys.entries(["NumberOfConnectors"])
    assert known == [{"key": "NumberOfConnectors", "readonly": True, "value": "4"}]


# --- change ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "text", "value", "stored"), [
    ("HeartbeatInterval", "120", 120, "120"),
    ("HeartbeatInterval", " 0 ", 0, "0"),
    ("AllowOfflineTxForUnknownId", "TRUE", True, "true"),
    ("StopTransactionOnEVSideDisconnect", "false", False, "false"),
    ("MeterValuesSampledData", "Voltage, Current.Import", ("Voltage", "Current.Import"), "Voltage,Current.Import"),
    ("MeterValuesSampledData", "", (), ""),
    ("ConnectionTimeOut", "3600", 3600, "3600"),
])
def test_change_accepted_and_persisted(name: str, text: str, value: Any, stored: str) -> None:
    keys, store = make()
    calls: list[tuple[str, Any]] = []
    keys.on_change(lambda n, v: calls.append((n, v)))
    assert keys.change(name, text) == "Accepted"
    assert keys[name] == value
    assert store.saves == [(name, stored)]  # OCPP string form
    assert calls == [(name, value)]


def test_changed_value_survives_restart() -> None:
    keys, store = make(initial={"HeartbeatInterval": 60})
    keys.change("HeartbeatInterval", "45")
    again = ConfigKeys(store, {"HeartbeatInterval": 60}, 2)
    assert again["HeartbeatInterval"] == 45


@pytest.mark.parametrize(("name", "text"), [
    ("HeartbeatInterval", "x"),
    ("HeartbeatInterval", "-1"),
    ("HeartbeatInterval", "1.5"),
    ("HeartbeatInterval", ""),
    ("HeartbeatInterval", "86401"),
    ("ConnectionTimeOut", "0"),
    ("AllowOfflineTxForUnknownId", "yes"),
    ("AllowOfflineTxForUnknownId", "1"),
    ("MeterValuesSampledData", "SoC"),
    ("MeterValuesSampledData", "Voltage,Bogus"),
    ("MeterValuesSampledData", ",".join(["Voltage"] * 9)),
    ("TransactionMessageAttempts", "0"),
])
def test_change_rejected_bad_value(name: str, text: str) -> None:
    keys, store = make()
    before = keys[name]
    calls: list[Any] = []
    keys.on_change(lambda n, v: calls.append(n))
    assert keys.change(name, text) == "Rejected"
    assert keys[name] == before
    assert store.saves == []
    assert calls == []


@pytest.mark.parametrize("name", ["NumberOfConnectors", "GetConfigurationMaxKeys", "SupportedFeatureProfiles",
                                  "MeterValuesSampledDataMaxLength"])
def test_change_rejected_readonly(name: str) -> None:
    keys, store = make()
    before = keys[name]
    assert keys.change(name, "5") == "Rejected"
    assert keys[name] == before
    assert store.saves == []


@pytest.mark.parametrize("name", ["NoSuchKey", "heartbeatinterval", ""])
def test_change_unknown_not_supported(name: str) -> None:
    keys, store = make()
    assert keys.change(name, "1") == "NotSupported"
    assert store.saves == []


def test_several_listeners_in_order() -> None:
    keys, _ = make()
    calls: list[str] = []
    keys.on_change(lambda n, v: calls.append("first"))
    keys.on_change(lambda n, v: calls.append("second"))
    keys.change("HeartbeatInterval", "10")
    assert calls == ["first", "second"]


def test_change_is_persisted_before_listeners_run() -> None:
    keys, store = make()
    seen: list[str] = []
    keys.on_change(lambda n, v: seen.append(store.stored[n]))
    keys.change("MeterValueSampleInterval", "15")
    assert seen == ["15"]


def test_change_rejects_python_only_integer_syntax() -> None:
    keys, _ = make()
    assert keys.change("HeartbeatInterval", "1_000") == "Rejected"


# --- entries ---------------------------------------------------------------------------------------------------
def test_entries_all() -> None:
    keys, _ = make(initial={"HeartbeatInterval": 60})
    known, unknown = keys.entries()
    assert unknown == []
    assert [e["key"] for e in known] == list(KEYS)
    by_name = {e["key"]: e for e in known}
    assert by_name["HeartbeatInterval"] == {"key": "HeartbeatInterval", "readonly": False, "value": "60"}
    assert by_name["NumberOfConnectors"] == {"key": "NumberOfConnectors", "readonly": True, "value": "2"}
    assert by_name["AllowOfflineTxForUnknownId"]["value"] == "false"
    assert by_name["MeterValuesSampledData"]["value"] == "Energy.Active.Import.Register,Power.Active.Import"
    assert by_name["StopTxnSampledData"]["value"] == ""
    for e in known:
        assert isinstance(e["value"], str) and isinstance(e["readonly"], bool)


def test_entries_empty_list_means_all() -> None:
    keys, _ = make()
    assert keys.entries([]) == keys.entries(None)


def test_entries_by_name_with_unknown() -> None:
    keys, _ = make()
    keys.change("ConnectionTimeOut", "30")
    known, unknown = keys.entries(["ConnectionTimeOut", "Nope", "HeartbeatInterval", "AlsoNope"])
    assert known == [
        {"key": "ConnectionTimeOut", "readonly": False, "value": "30"},
        {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
    ]
    assert unknown == ["Nope", "AlsoNope"]


def test_entries_only_unknown() -> None:
    keys, _ = make()
    assert keys.entries(["X"]) == ([], ["X"])


# --- validate_initial (the config file path) ---------------------------------------------------------------
def test_validate_initial() -> None:
    assert validate_initial("HeartbeatInterval", 60) == 60
    assert validate_initial("MeterValuesSampledData", ["Voltage"]) == ("Voltage",)
    assert validate_initial("AllowOfflineTxForUnknownId", True) is True
    with pytest.raises(ConfigKeyError, match="unknown"):
        validate_initial("Nope", 1)
    with pytest.raises(ConfigKeyError, match="read-only"):
        validate_initial("NumberOfConnectors", 1)
    with pytest.raises(ConfigKeyError):
        validate_initial("HeartbeatInterval", 1.0)


def test_supported_measurands_all_have_a_unit_in_the_session() -> None:
    from evsed.ocpp.session import _UNITS

    assert set(_UNITS) == set(SUPPORTED_MEASURANDS)
