"""OCPP configuration keys (evsed.ocpp.configkeys) with a fake key store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evsed.ocpp import metering
from evsed.ocpp.configkeys import (
    KEYS,
    MEASURAND_LIST_MAX_ITEMS,
    SMART_CHARGING_KEYS,
    STOP_TRANSACTION_MAX_METER_VALUES,
    SUPPORTED_MEASURANDS,
    ConfigKeyError,
    ConfigKeys,
    redact,
    validate_initial,
)
from evsed.store.db import Store

AUTH_KEY = "0123456789abcdef0123456789ABCDEF01234567"  # 40 hex digits = 20 bytes, the maximum


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
         connectors: int = 2, **kwargs: Any) -> tuple[ConfigKeys, FakeStore]:
    store = FakeStore(stored)
    kwargs.setdefault("feature_profiles", ("Core", "SmartCharging"))  # every key of the table exists
    return ConfigKeys(store, initial or {}, connectors, **kwargs), store


# --- precedence -------------------------------------------------------------------------------------------
def test_defaults() -> None:
    keys, store = make()
    assert keys["HeartbeatInterval"] == 300
    assert keys["ConnectionTimeOut"] == 60
    assert keys["AllowOfflineTxForUnknownId"] is False
    assert keys["StopTransactionOnEVSideDisconnect"] is True
    assert keys["MeterValuesSampledData"] == ("Energy.Active.Import.Register", "Power.Active.Import")
    assert keys["StopTxnSampledData"] == ()
    assert keys["SupportedFeatureProfiles"] == ("Core", "SmartCharging")
    assert keys["NumberOfConnectors"] == 2
    assert store.saves == []  # reading never writes


def test_every_default_parses_under_its_own_rules() -> None:
    for kd in KEYS.values():
        if kd.default is None:  # a secret without default: unset until configured
            assert kd.secret, kd.name
            continue
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
        assert isinstance(e["readonly"], bool)
        if e["key"] != "AuthorizationKey":
            assert isinstance(e["value"], str)


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


def test_supported_measurands_come_from_metering() -> None:
    # One list: what the CSMS may configure is exactly what metering can produce.
    assert SUPPORTED_MEASURANDS is metering.SUPPORTED_MEASURANDS


# --- the key table against the spec (1.6 ed. 2 section 9.1, errata v4.0, security whitepaper ed. 3 7.2) -------
# name -> (type, readonly). "csl" values are comma-separated strings; AuthorizationKey is write-only.
SPEC_TABLE: dict[str, tuple[str, bool]] = {
    "AllowOfflineTxForUnknownId": ("bool", False),
    "AuthorizationCacheEnabled": ("bool", False),
    "AuthorizeRemoteTxRequests": ("bool", False),  # R or RW: our choice is RW
    "BlinkRepeat": ("int", False),
    "ClockAlignedDataInterval": ("int", False),
    "ConnectionTimeOut": ("int", False),
    "ConnectorPhaseRotation": ("csl", False),
    "ConnectorPhaseRotationMaxLength": ("int", True),
    "GetConfigurationMaxKeys": ("int", True),
    "HeartbeatInterval": ("int", False),
    "LightIntensity": ("int", False),
    "LocalAuthorizeOffline": ("bool", False),
    "LocalPreAuthorize": ("bool", False),
    "MaxEnergyOnInvalidId": ("int", False),
    "MessageTimeout": ("int", False),  # errata 3.82
    "MeterValuesAlignedData": ("csl", False),
    "MeterValuesAlignedDataMaxLength": ("int", True),
    "MeterValuesSampledData": ("csl", False),
    "MeterValuesSampledDataMaxLength": ("int", True),
    "MeterValueSampleInterval": ("int", False),
    "MinimumStatusDuration": ("int", False),
    "NumberOfConnectors": ("int", True),
    "ResetRetries": ("int", False),
    "StopTransactionMaxMeterValues": ("int", True),  # errata 3.89
    "StopTransactionOnEVSideDisconnect": ("bool", False),  # errata 3.79 allows R; we keep RW
    "StopTransactionOnInvalidId": ("bool", False),
    "StopTxnAlignedData": ("csl", False),
    "StopTxnAlignedDataMaxLength": ("int", True),
    "StopTxnSampledData": ("csl", False),
    "StopTxnSampledDataMaxLength": ("int", True),
    "SupportedFeatureProfiles": ("csl", True),
    "TransactionMessageAttempts": ("int", False),
    "TransactionMessageRetryInterval": ("int", False),
    "UnlockConnectorOnEVSideDisconnect": ("bool", False),
    "WebSocketPingInterval": ("int", False),
    "AuthorizationKey": ("secret", False),
    # 9.4 Smart Charging: all read-only.
    "ChargeProfileMaxStackLevel": ("int", True),
    "ChargingScheduleAllowedChargingRateUnit": ("csl", True),
    "ChargingScheduleMaxPeriods": ("int", True),
    "ConnectorSwitch3to1PhaseSupported": ("bool", True),
    "MaxChargingProfilesInstalled": ("int", True),
}


def test_key_set_matches_the_spec_table() -> None:
    assert set(KEYS) == set(SPEC_TABLE)
    # Errata 3.80: need not be implemented, and it is not.
    assert "SupportedFeatureProfilesMaxLength" not in KEYS


@pytest.mark.parametrize(("name", "kind", "readonly"), [(n, k, r) for n, (k, r) in SPEC_TABLE.items()])
def test_get_configuration_type_and_access(name: str, kind: str, readonly: bool) -> None:
    keys, _ = make()
    known, unknown = keys.entries([name])
    assert unknown == []
    [entry] = known
    assert entry["key"] == name
    assert entry["readonly"] is readonly
    if kind == "secret":
        assert "value" not in entry
        return
    value = entry["value"]
    assert isinstance(value, str)
    if kind == "bool":
        assert value in ("true", "false")
    elif kind == "int":
        assert value.isdigit()
    # Whatever GetConfiguration reports for a writable key, ChangeConfiguration takes back unchanged.
    if not readonly:
        assert keys.change(name, value) == "Accepted"
        assert keys.entries([name])[0][0]["value"] == value


@pytest.mark.parametrize("name", [n for n, (_, r) in SPEC_TABLE.items() if r])
def test_every_readonly_key_rejects_change_and_config_file(name: str) -> None:
    keys, store = make()
    current = keys.entries([name])[0][0]["value"]
    assert keys.change(name, current) == "Rejected"
    assert store.saves == []
    with pytest.raises(ConfigKeyError, match="read-only"):
        validate_initial(name, current)


@pytest.mark.parametrize(("name", "default"), [
    ("BlinkRepeat", 3),
    ("LightIntensity", 100),
    ("MaxEnergyOnInvalidId", 0),
    ("MessageTimeout", 30),
    ("StopTransactionMaxMeterValues", 500),
    ("ConnectorPhaseRotation", ("0.Unknown",)),
    ("ConnectorPhaseRotationMaxLength", 3),  # 2 connectors + index 0
    ("AuthorizationKey", None),
    ("UnlockConnectorOnEVSideDisconnect", True),
])
def test_new_key_defaults(name: str, default: Any) -> None:
    keys, _ = make()
    assert keys[name] == default


@pytest.mark.parametrize(("name", "text", "status"), [
    ("BlinkRepeat", "0", "Accepted"),
    ("BlinkRepeat", "100", "Accepted"),
    ("BlinkRepeat", "-1", "Rejected"),
    ("BlinkRepeat", "101", "Rejected"),
    ("LightIntensity", "0", "Accepted"),
    ("LightIntensity", "100", "Accepted"),
    ("LightIntensity", "101", "Rejected"),
    ("LightIntensity", "-5", "Rejected"),
    ("LightIntensity", "50%", "Rejected"),
    ("MaxEnergyOnInvalidId", "0", "Accepted"),
    ("MaxEnergyOnInvalidId", "250000", "Accepted"),
    ("MaxEnergyOnInvalidId", "2147483647", "Accepted"),
    ("MaxEnergyOnInvalidId", "2147483648", "Rejected"),
    ("MaxEnergyOnInvalidId", "-1", "Rejected"),
    ("MessageTimeout", "1", "Accepted"),
    ("MessageTimeout", "600", "Accepted"),
    ("MessageTimeout", "0", "Rejected"),
    ("MessageTimeout", "601", "Rejected"),
    ("MessageTimeout", "2.5", "Rejected"),
    ("WebSocketPingInterval", "-1", "Rejected"),  # 9.1.34: negative values SHALL be rejected
    ("StopTransactionMaxMeterValues", "1000", "Rejected"),
    ("ConnectorPhaseRotationMaxLength", "9", "Rejected"),
    ("SupportedFeatureProfilesMaxLength", "1", "NotSupported"),
])
def test_new_key_ranges(name: str, text: str, status: str) -> None:
    keys, store = make()
    before = keys[name] if name in KEYS else None
    assert keys.change(name, text) == status
    if status == "Accepted":
        assert keys[name] == int(text)
        assert store.saves == [(name, text)]
    else:
        assert store.saves == []
        if name in KEYS:
            assert keys[name] == before


# --- the *MaxLength keys report the limit really enforced ----------------------------------------------------
@pytest.mark.parametrize("name", ["MeterValuesAlignedData", "MeterValuesSampledData", "StopTxnAlignedData",
                                  "StopTxnSampledData"])
def test_measurand_max_length_is_the_enforced_limit(name: str) -> None:
    keys, _ = make()
    limit = int(keys.entries([f"{name}MaxLength"])[0][0]["value"])
    assert limit == MEASURAND_LIST_MAX_ITEMS
    supported = sorted(SUPPORTED_MEASURANDS)
    items = [supported[i % len(supported)] for i in range(limit + 1)]
    assert keys.change(name, ",".join(items)) == "Rejected"
    assert keys.change(name, ",".join(items[:limit])) == "Accepted"
    assert len(keys[name]) == limit


@pytest.mark.parametrize("connectors", [1, 2, 4])
def test_phase_rotation_max_length_is_the_enforced_limit(connectors: int) -> None:
    keys, _ = make(connectors=connectors)
    limit = int(keys.entries(["ConnectorPhaseRotationMaxLength"])[0][0]["value"])
    assert limit == connectors + 1
    full = ",".join(f"{c}.RST" for c in range(limit))
    assert keys.change("ConnectorPhaseRotation", full) == "Accepted"
    assert len(keys["ConnectorPhaseRotation"]) == limit
    assert keys.change("ConnectorPhaseRotation", full + f",{limit}.RST") == "Rejected"


def test_stop_transaction_max_meter_values_is_the_exported_constant() -> None:
    keys, _ = make()
    assert keys["StopTransactionMaxMeterValues"] == STOP_TRANSACTION_MAX_METER_VALUES
    assert keys.entries(["StopTransactionMaxMeterValues"])[0] == [
        {"key": "StopTransactionMaxMeterValues", "readonly": True, "value": str(STOP_TRANSACTION_MAX_METER_VALUES)}]


# --- unsupported measurands (errata 3.14.4) ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["MeterValuesAlignedData", "MeterValuesSampledData", "StopTxnAlignedData",
                                  "StopTxnSampledData"])
@pytest.mark.parametrize("text", ["SoC", "Voltage,SoC", "Energy.Active.Import.Register,Temperature",
                                  "voltage", "Energy.Reactive.Import.Register"])
def test_unsupported_measurand_rejected_nothing_changed(name: str, text: str) -> None:
    keys, store = make(initial={name: ("Voltage",)})
    calls: list[str] = []
    keys.on_change(lambda n, v: calls.append(n))
    assert keys.change(name, text) == "Rejected"
    assert keys[name] == ("Voltage",)
    assert keys.entries([name])[0][0]["value"] == "Voltage"
    assert store.saves == [] and calls == []


def test_every_supported_measurand_is_accepted() -> None:
    keys, _ = make()
    for measurand in sorted(SUPPORTED_MEASURANDS):
        assert keys.change("MeterValuesSampledData", measurand) == "Accepted", measurand
        assert keys["MeterValuesSampledData"] == (measurand,)


# --- ConnectorPhaseRotation ----------------------------------------------------------------------------------
def test_phase_rotation_default_reported() -> None:
    keys, _ = make()
    assert keys.entries(["ConnectorPhaseRotation"])[0] == [
        {"key": "ConnectorPhaseRotation", "readonly": False, "value": "0.Unknown"}]


@pytest.mark.parametrize(("text", "value"), [
    ("0.RST,1.RST,2.RTS", ("0.RST", "1.RST", "2.RTS")),
    ("0.RST, 1.RST, 2.RTS", ("0.RST", "1.RST", "2.RTS")),  # the spec's own example has spaces
    ("1.NotApplicable", ("1.NotApplicable",)),
    ("2.TSR,0.Unknown", ("2.TSR", "0.Unknown")),
    ("0.SRT,1.STR,2.TRS", ("0.SRT", "1.STR", "2.TRS")),
])
def test_phase_rotation_valid(text: str, value: tuple[str, ...]) -> None:
    keys, store = make(connectors=2)
    assert keys.change("ConnectorPhaseRotation", text) == "Accepted"
    assert keys["ConnectorPhaseRotation"] == value
    assert store.saves == [("ConnectorPhaseRotation", ",".join(value))]


@pytest.mark.parametrize("text", [
    "3.RST",  # connector beyond NumberOfConnectors (2)
    "0.RST,3.RTS",
    "-1.RST",
    "1.rst",  # values are case-sensitive
    "1.XYZ",
    "1RST",
    "1.",
    ".RST",
    "RST",
    "a.RST",
    "01.RST",
    "1.RST.2",
    "1.RST;2.RST",
    "1.RST,1.RTS",  # the same connector twice
    "0.Unknown,0.Unknown",
    "",
    " , ",
    "1 .RST",
    "\u0661.RST",  # a non-ASCII digit
])
def test_phase_rotation_invalid(text: str) -> None:
    keys, store = make(connectors=2)
    assert keys.change("ConnectorPhaseRotation", text) == "Rejected"
    assert keys["ConnectorPhaseRotation"] == ("0.Unknown",)
    assert store.saves == []


def test_phase_rotation_range_follows_number_of_connectors() -> None:
    keys, _ = make(connectors=4)
    assert keys.change("ConnectorPhaseRotation", "4.RST") == "Accepted"
    assert keys.change("ConnectorPhaseRotation", "5.RST") == "Rejected"
    keys, _ = make(connectors=1)
    assert keys.change("ConnectorPhaseRotation", "2.RST") == "Rejected"


def test_phase_rotation_in_the_config_file() -> None:
    assert validate_initial("ConnectorPhaseRotation", "0.RST,1.RST", 1) == ("0.RST", "1.RST")
    assert validate_initial("ConnectorPhaseRotation", ["0.RST", "1.TRS"], 1) == ("0.RST", "1.TRS")
    with pytest.raises(ConfigKeyError, match=r"connectorId 2 out of range 0\.\.1"):
        validate_initial("ConnectorPhaseRotation", "2.RST", 1)
    with pytest.raises(ConfigKeyError, match="phase rotation"):
        validate_initial("ConnectorPhaseRotation", "1.ABC", 1)


def test_stored_phase_rotation_for_a_removed_connector_is_ignored() -> None:
    # Valid when 4 connectors were configured, invalid after going down to 2: the file/default applies.
    keys, _ = make(stored={"ConnectorPhaseRotation": "0.RST,4.RST"}, connectors=2,
                   initial={"ConnectorPhaseRotation": ("0.RTS",)})
    assert keys["ConnectorPhaseRotation"] == ("0.RTS",)


# --- AuthorizationKey (write-only secret) --------------------------------------------------------------------
def all_text(keys: ConfigKeys) -> str:
    return repr(keys.entries()) + repr(keys.entries(["AuthorizationKey"]))


def test_authorization_key_accepted_persisted_and_never_reported() -> None:
    keys, store = make()
    calls: list[tuple[str, Any]] = []
    keys.on_change(lambda n, v: calls.append((n, v)))
    assert keys.change("AuthorizationKey", AUTH_KEY) == "Accepted"
    assert keys["AuthorizationKey"] == AUTH_KEY  # the client needs it for HTTP Basic
    assert store.saves == [("AuthorizationKey", AUTH_KEY)]
    assert calls == [("AuthorizationKey", AUTH_KEY)]  # the connection has to pick up the new password
    assert keys.entries(["AuthorizationKey"]) == ([{"key": "AuthorizationKey", "readonly": False}], [])
    by_name = {e["key"]: e for e in keys.entries()[0]}
    assert by_name["AuthorizationKey"] == {"key": "AuthorizationKey", "readonly": False}
    assert AUTH_KEY not in all_text(keys)
    assert AUTH_KEY.lower() not in all_text(keys).lower()


def test_authorization_key_unset_is_listed_without_value() -> None:
    keys, _ = make()
    assert keys["AuthorizationKey"] is None
    assert keys.entries(["AuthorizationKey"]) == ([{"key": "AuthorizationKey", "readonly": False}], [])


@pytest.mark.parametrize("text", [
    "00" * 16,  # 16 bytes: the minimum
    "ab" * 20,  # 20 bytes: the maximum
    "AbCdEf" + "0" * 28,
    "0123456789abcdef" * 2 + "01",  # 17 bytes
])
def test_authorization_key_valid(text: str) -> None:
    keys, _ = make()
    assert keys.change("AuthorizationKey", text) == "Accepted"
    assert keys["AuthorizationKey"] == text  # used exactly as sent, case included


@pytest.mark.parametrize("text", [
    "",
    "00" * 15,  # 15 bytes: too short
    "0" * 31,  # odd number of digits
    "0" * 33,
    "ab" * 21,  # 21 bytes: too long
    "g" * 32,  # not hex
    "0x" + "00" * 16,
    " " + "00" * 16,
    "00" * 16 + "\n",
    "correct horse battery staple 123",
    "\u0660" * 32,  # non-ASCII digits
])
def test_authorization_key_invalid_rejected_and_not_quoted(text: str) -> None:
    keys, store = make(initial={"AuthorizationKey": AUTH_KEY})
    assert keys.change("AuthorizationKey", text) == "Rejected"
    assert keys["AuthorizationKey"] == AUTH_KEY
    assert store.saves == []
    for call in (lambda: KEYS["AuthorizationKey"].parse(text), lambda: validate_initial("AuthorizationKey", text),
                 lambda: ConfigKeys(FakeStore(), {"AuthorizationKey": text}, 1)):
        with pytest.raises(ConfigKeyError) as info:
            call()
        message = str(info.value)
        if text.strip():
            assert text.strip() not in message
        assert "hex digits" in message


@pytest.mark.parametrize("value", [1234567890123456, ["00" * 16], None, True])
def test_authorization_key_wrong_type_in_config_file(value: Any) -> None:
    with pytest.raises(ConfigKeyError, match="expected a string"):
        validate_initial("AuthorizationKey", value)


def test_authorization_key_precedence() -> None:
    other = "11" * 16
    keys, _ = make(initial={"AuthorizationKey": AUTH_KEY})
    assert keys["AuthorizationKey"] == AUTH_KEY
    keys, _ = make(initial={"AuthorizationKey": AUTH_KEY}, stored={"AuthorizationKey": other})
    assert keys["AuthorizationKey"] == other
    # A stored value that no longer meets the rules (e.g. written by an older version) is ignored.
    keys, _ = make(initial={"AuthorizationKey": AUTH_KEY}, stored={"AuthorizationKey": "short"})
    assert keys["AuthorizationKey"] == AUTH_KEY


def test_authorization_key_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    keys, store = make(initial={"AuthorizationKey": AUTH_KEY})
    keys.change("AuthorizationKey", "22" * 20)
    keys.change("AuthorizationKey", "bad")
    keys.entries()
    ConfigKeys(store, {}, 2)
    for secret in (AUTH_KEY, "22" * 20):
        assert secret not in caplog.text


@pytest.mark.parametrize(("name", "secret"), [
    ("AuthorizationKey", True),
    ("authorizationkey", True),  # not a key for ChangeConfiguration (case-sensitive), but still hidden in logs
    ("AUTHORIZATIONKEY", True),
    (" AuthorizationKey ", True),
    ("HeartbeatInterval", False),
    ("Bogus", False),
    ("", False),
])
def test_redact_and_is_secret(name: str, secret: bool) -> None:
    keys, _ = make()
    assert keys.is_secret(name) is secret
    assert redact(name, AUTH_KEY) == ("***" if secret else AUTH_KEY)


def test_misspelled_secret_name_is_not_supported() -> None:
    keys, store = make()
    assert keys.change("authorizationkey", AUTH_KEY) == "NotSupported"
    assert store.saves == []


# --- fixed cable (errata 3.83) --------------------------------------------------------------------------------
def test_fixed_cable_unlock_on_ev_side_disconnect_is_readonly_false() -> None:
    keys, store = make(fixed_cable=True, initial={"UnlockConnectorOnEVSideDisconnect": True},
                       stored={"UnlockConnectorOnEVSideDisconnect": "true"})
    assert keys["UnlockConnectorOnEVSideDisconnect"] is False
    assert keys.entries(["UnlockConnectorOnEVSideDisconnect"])[0] == [
        {"key": "UnlockConnectorOnEVSideDisconnect", "readonly": True, "value": "false"}]
    assert keys.change("UnlockConnectorOnEVSideDisconnect", "true") == "Rejected"
    assert keys.change("UnlockConnectorOnEVSideDisconnect", "false") == "Rejected"
    assert store.saves == []
    assert keys["UnlockConnectorOnEVSideDisconnect"] is False


def test_socket_unlock_on_ev_side_disconnect_is_rw() -> None:
    keys, _ = make(fixed_cable=False)
    assert keys.entries(["UnlockConnectorOnEVSideDisconnect"])[0][0]["readonly"] is False
    assert keys.change("UnlockConnectorOnEVSideDisconnect", "false") == "Accepted"
    assert keys["UnlockConnectorOnEVSideDisconnect"] is False


def test_fixed_cable_leaves_other_keys_alone() -> None:
    keys, _ = make(fixed_cable=True)
    assert keys.change("StopTransactionOnEVSideDisconnect", "false") == "Accepted"


# --- constructor parameters -----------------------------------------------------------------------------------
def test_message_timeout_default_from_constructor() -> None:
    keys, _ = make(message_timeout_s=15)
    assert keys["MessageTimeout"] == 15
    assert keys.entries(["MessageTimeout"])[0] == [{"key": "MessageTimeout", "readonly": False, "value": "15"}]
    keys, _ = make(message_timeout_s=15, initial={"MessageTimeout": 45})
    assert keys["MessageTimeout"] == 45
    keys, _ = make(message_timeout_s=15, initial={"MessageTimeout": 45}, stored={"MessageTimeout": "90"})
    assert keys["MessageTimeout"] == 90


def test_message_timeout_from_a_float_call_timeout_rounds_up() -> None:
    keys, _ = make(message_timeout_s=12.5)  # type: ignore[arg-type]  # [ocpp] call_timeout_s is a float
    assert keys["MessageTimeout"] == 13


@pytest.mark.parametrize("timeout", [0, -1, 601])
def test_message_timeout_out_of_range(timeout: int) -> None:
    with pytest.raises(ValueError, match="message_timeout_s"):
        make(message_timeout_s=timeout)


def test_feature_profiles_from_constructor() -> None:
    keys, _ = make(feature_profiles=("Core",))
    assert keys["SupportedFeatureProfiles"] == ("Core",)
    keys, _ = make(feature_profiles=("Core", "RemoteTrigger", "SmartCharging"))
    assert keys["SupportedFeatureProfiles"] == ("Core", "RemoteTrigger", "SmartCharging")
    assert keys.entries(["SupportedFeatureProfiles"])[0] == [
        {"key": "SupportedFeatureProfiles", "readonly": True, "value": "Core,RemoteTrigger,SmartCharging"}]
    assert keys.change("SupportedFeatureProfiles", "Core") == "Rejected"


@pytest.mark.parametrize("profiles", [(), ("RemoteTrigger",), ("Core", "Bogus"), ("Core", "Core"), ("core",)])
def test_feature_profiles_invalid(profiles: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="feature_profiles"):
        make(feature_profiles=profiles)


def test_positional_arguments_still_work() -> None:
    keys = ConfigKeys(FakeStore(), {"HeartbeatInterval": 10}, 3)
    assert keys["HeartbeatInterval"] == 10 and keys["NumberOfConnectors"] == 3
    assert keys["MessageTimeout"] == 30 and keys["UnlockConnectorOnEVSideDisconnect"] is True


@pytest.mark.parametrize(("initial", "match"), [
    ({"Bogus": 1}, "Bogus: unknown"),
    ({"NumberOfConnectors": 3}, "NumberOfConnectors: read-only"),
    ({"HeartbeatInterval": -1}, "HeartbeatInterval: must be at least 0"),
    ({"ConnectorPhaseRotation": "3.RST"}, "ConnectorPhaseRotation: connectorId 3 out of range"),
])
def test_invalid_initial_values_raise(initial: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigKeyError, match=match):
        make(initial=initial)


def test_zero_connectors_rejected() -> None:
    with pytest.raises(ValueError, match="number_of_connectors"):
        make(connectors=0)


# --- persistence through the real store -----------------------------------------------------------------------
def test_changes_survive_a_restart_on_the_real_store(tmp_path: Path) -> None:
    path = tmp_path / "state" / "evsed.sqlite3"
    store = Store(path)
    keys = ConfigKeys(store, {"HeartbeatInterval": 60}, 2, message_timeout_s=20)
    changes = {
        "HeartbeatInterval": "45",
        "ConnectorPhaseRotation": "0.RST,1.RST,2.RTS",
        "MessageTimeout": "120",
        "MeterValuesSampledData": "Voltage,Frequency",
        "StopTxnSampledData": "",
        "AuthorizationKey": AUTH_KEY,
        "LightIntensity": "40",
        "MaxEnergyOnInvalidId": "1500",
        "StopTransactionOnEVSideDisconnect": "false",
    }
    for name, text in changes.items():
        assert keys.change(name, text) == "Accepted", name
    store.close()

    store = Store(path)
    again = ConfigKeys(store, {"HeartbeatInterval": 60, "StopTxnSampledData": ("Voltage",)}, 2, message_timeout_s=20)
    assert again["HeartbeatInterval"] == 45
    assert again["ConnectorPhaseRotation"] == ("0.RST", "1.RST", "2.RTS")
    assert again["MessageTimeout"] == 120
    assert again["MeterValuesSampledData"] == ("Voltage", "Frequency")
    assert again["StopTxnSampledData"] == ()  # an empty list persists as empty, not as "unset"
    assert again["AuthorizationKey"] == AUTH_KEY
    assert again["LightIntensity"] == 40
    assert again["MaxEnergyOnInvalidId"] == 1500
    assert again["StopTransactionOnEVSideDisconnect"] is False
    assert AUTH_KEY not in all_text(again)
    store.close()


def test_real_store_fixed_cable_after_a_socket_setup(tmp_path: Path) -> None:
    # A station rebuilt from socket to tethered cable: the old persisted CSMS choice must not resurface.
    path = tmp_path / "evsed.sqlite3"
    store = Store(path)
    ConfigKeys(store, {}, 1).change("UnlockConnectorOnEVSideDisconnect", "true")
    store.close()
    store = Store(path)
    keys = ConfigKeys(store, {}, 1, fixed_cable=True)
    assert keys["UnlockConnectorOnEVSideDisconnect"] is False
    store.close()


# --- Smart Charging keys (9.4) -----------------------------------------------------------------------------------
def test_smart_charging_keys_exist_with_the_profile_and_are_read_only() -> None:
    keys = ConfigKeys(Store(":memory:"), {}, 2, feature_profiles=("Core", "SmartCharging"),
                      fixed={"ChargeProfileMaxStackLevel": 5, "ChargingScheduleAllowedChargingRateUnit": ["Current"],
                             "ChargingScheduleMaxPeriods": 48, "MaxChargingProfilesInstalled": 20})
    known, unknown = keys.entries(list(SMART_CHARGING_KEYS))
    assert unknown == []
    assert {e["key"]: (e["readonly"], e["value"]) for e in known} == {
        "ChargeProfileMaxStackLevel": (True, "5"),
        "ChargingScheduleAllowedChargingRateUnit": (True, "Current"),
        "ChargingScheduleMaxPeriods": (True, "48"),
        "ConnectorSwitch3to1PhaseSupported": (True, "false"),
        "MaxChargingProfilesInstalled": (True, "20"),
    }
    assert keys["SupportedFeatureProfiles"] == ("Core", "SmartCharging")
    for name in SMART_CHARGING_KEYS:
        assert keys.change(name, "1") == "Rejected"


def test_smart_charging_keys_absent_without_the_profile() -> None:
    keys = ConfigKeys(Store(":memory:"), {}, 1)
    known, unknown = keys.entries(["ChargeProfileMaxStackLevel"])
    assert known == [] and unknown == ["ChargeProfileMaxStackLevel"]
    assert keys.change("MaxChargingProfilesInstalled", "3") == "NotSupported"


def test_fixed_values_are_checked() -> None:
    with pytest.raises(ValueError, match="HeartbeatInterval"):
        ConfigKeys(Store(":memory:"), {}, 1, fixed={"HeartbeatInterval": 5})
    with pytest.raises(ConfigKeyError):
        ConfigKeys(Store(":memory:"), {}, 1, feature_profiles=("Core", "SmartCharging"),
                   fixed={"ChargingScheduleAllowedChargingRateUnit": ["Watts"]})
