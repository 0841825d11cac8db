"""OCPP 1.6 configuration keys: definitions, validation and the live values.

Values are kept as Python values in memory and as OCPP strings in the store. A change from the CSMS
overrides the config file's ``[ocpp.config]`` value; the file only seeds keys the CSMS never changed.

Sources: OCPP 1.6 edition 2 section 9.1 (Core profile), errata sheet v4.0 (3.79, 3.80, 3.82, 3.83, 3.89) and
the security whitepaper edition 3 section 7.2 (AuthorizationKey).

Secret keys (AuthorizationKey) are write-only: GetConfiguration lists them without a value, and no exception
text raised here contains their value, so callers may log our messages as they are.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# Re-exported (explicit alias) because callers and tests import it from here; metering owns the list since it
# is the code that has to produce every measurand the CSMS may configure.
from evsed.ocpp.metering import SUPPORTED_MEASURANDS as SUPPORTED_MEASURANDS

# Profile identifiers of 9.1.29; the daemon passes the subset it really implements.
FEATURE_PROFILES = frozenset({
    "Core", "FirmwareManagement", "LocalAuthListManagement", "Reservation", "SmartCharging", "RemoteTrigger",
})
# 9.1.7. R, S and T are phases L1, L2 and L3.
PHASE_ROTATIONS = frozenset({"NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR"})
# The one limit enforced for all four measurand lists; the *MaxLength keys report this very number.
MEASURAND_LIST_MAX_ITEMS = 8
# Reported as StopTransactionMaxMeterValues (errata 3.89); the session thins transactionData to this many.
STOP_TRANSACTION_MAX_METER_VALUES = 500
# MessageTimeout shares the range of the config file's [ocpp] call_timeout_s, its default.
MESSAGE_TIMEOUT_RANGE_S = (1, 600)
_INT32_MAX = 2**31 - 1  # OCPP-J integers: CSMSs commonly store them as 32-bit
_REDACTED = "***"


class ConfigKeyError(ValueError):
    pass


@dataclass(frozen=True)
class KeyDef:
    name: str
    # "bool" | "int" | "csl" | "str" | "rotation" (ConnectorPhaseRotation CSL) | "hex" (bytes as hex digits;
    # minimum/maximum then count bytes)
    kind: str
    default: Any
    readonly: bool = False
    minimum: int | None = None
    maximum: int | None = None
    allowed: frozenset[str] | None = None  # CSL members allowed
    max_items: int | None = None
    reboot_required: bool = False
    # Write-only: never reported by GetConfiguration and never quoted in an error message.
    secret: bool = False
    # "rotation" only: highest connectorId accepted; None = not known here (config file checked without it).
    connectors: int | None = None

    def parse(self, value: Any) -> Any:
        """Accept native TOML values (config file) and OCPP strings (ChangeConfiguration)."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ConfigKeyError("expected a boolean (true or false)")
        if self.kind == "int":
            return self._parse_int(value)
        if self.kind == "csl":
            items = self._items(value)
            if self.allowed is not None:
                bad = [i for i in items if i not in self.allowed]
                if bad:
                    raise ConfigKeyError(f"unsupported value(s): {', '.join(bad)}")
            if self.max_items is not None and len(items) > self.max_items:
                raise ConfigKeyError(f"at most {self.max_items} items")
            return items
        if self.kind == "rotation":
            return self._parse_rotation(value)
        if self.kind == "hex":
            return self._parse_hex(value)
        if not isinstance(value, str):
            raise ConfigKeyError("expected a string")
        return value

    def format(self, value: Any) -> str:
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind in ("csl", "rotation"):
            return ",".join(value)
        return str(value)

    def _parse_int(self, value: Any) -> int:
        if isinstance(value, bool):
            raise ConfigKeyError("expected an integer, got a boolean")
        if isinstance(value, str):
            # Plain ASCII digits only: int() would also take "1_000" or non-ASCII digits.
            if not re.fullmatch(r"[+-]?[0-9]+", value.strip()):
                raise ConfigKeyError(f"expected an integer, got {value!r}")
            value = int(value.strip())
        if not isinstance(value, int):
            raise ConfigKeyError(f"expected an integer, got {type(value).__name__}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigKeyError(f"must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigKeyError(f"must be at most {self.maximum}, got {value}")
        return value

    @staticmethod
    def _items(value: Any) -> tuple[str, ...]:
        if isinstance(value, list | tuple):
            items = list(value)
        elif isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        else:
            raise ConfigKeyError("expected a comma-separated list (string or array of strings)")
        if not all(isinstance(i, str) for i in items):
            raise ConfigKeyError("list items must be strings")
        return tuple(items)

    def _parse_rotation(self, value: Any) -> tuple[str, ...]:
        items = self._items(value)
        if not items:
            # The key is required (9.1.7); "<id>.Unknown" says "not known" explicitly, an empty list says nothing.
            raise ConfigKeyError("must list at least one <connectorId>.<rotation> item")
        seen: set[int] = set()
        for item in items:
            m = re.fullmatch(r"(0|[1-9][0-9]{0,3})\.([A-Za-z]+)", item)
            if m is None:
                raise ConfigKeyError(f"expected <connectorId>.<rotation> items, got {item!r}")
            connector, rotation = int(m.group(1)), m.group(2)
            if rotation not in PHASE_ROTATIONS:
                raise ConfigKeyError(f"unknown phase rotation {rotation!r} (allowed: "
                                     f"{', '.join(sorted(PHASE_ROTATIONS))})")
            if self.connectors is not None and connector > self.connectors:
                raise ConfigKeyError(f"connectorId {connector} out of range 0..{self.connectors}")
            if connector in seen:
                raise ConfigKeyError(f"connectorId {connector} listed more than once")
            seen.add(connector)
        if self.max_items is not None and len(items) > self.max_items:
            raise ConfigKeyError(f"at most {self.max_items} items")
        return items

    def _parse_hex(self, value: Any) -> str:
        # Never quote `value` here: this kind carries the AuthorizationKey.
        if not isinstance(value, str):
            raise ConfigKeyError("expected a string")
        lo, hi = self.minimum or 0, self.maximum
        size = f"{2 * lo} to {2 * hi} hex digits ({lo} to {hi} bytes)" if hi else f"at least {2 * lo} hex digits"
        if not re.fullmatch(r"[0-9A-Fa-f]*", value):
            raise ConfigKeyError(f"expected {size}, got other characters")
        if len(value) % 2:
            raise ConfigKeyError(f"expected {size}, got an odd number of digits (2 per byte)")
        if len(value) < 2 * lo or (hi is not None and len(value) > 2 * hi):
            raise ConfigKeyError(f"expected {size}")
        return value


_K = KeyDef
_DEFS: list[KeyDef] = [
    # Core profile (OCPP 1.6 ed. 2 section 9.1, errata v4.0). Keys marked readonly describe fixed capabilities.
    _K("AllowOfflineTxForUnknownId", "bool", False),
    _K("AuthorizationCacheEnabled", "bool", True),
    # R or RW is our choice (9.1.3); RW lets a CSMS that authorizes before RemoteStart skip the second round trip.
    _K("AuthorizeRemoteTxRequests", "bool", False),
    # Only stored for now: the status LED driver is a later issue, and optional keys may exist before they act.
    _K("BlinkRepeat", "int", 3, minimum=0, maximum=100),
    _K("ClockAlignedDataInterval", "int", 0, minimum=0, maximum=86400),
    _K("ConnectionTimeOut", "int", 60, minimum=1, maximum=3600),
    # Nobody has measured the wiring of a sim board (or of a fresh installation), so "Unknown" ("not (yet)
    # known") is the only honest default; claiming RST would be a statement about wiring we never saw. Index 0
    # (grid connection to main meter) covers the whole board; the installer or the CSMS sets the real rotation
    # per connector. ConfigKeys narrows the connectorId range to NumberOfConnectors.
    _K("ConnectorPhaseRotation", "rotation", ("0.Unknown",)),
    # One item per connector plus index 0: ConfigKeys sets the real value (NumberOfConnectors + 1).
    _K("ConnectorPhaseRotationMaxLength", "int", 2, readonly=True),
    _K("GetConfigurationMaxKeys", "int", 100, readonly=True),
    _K("HeartbeatInterval", "int", 300, minimum=0, maximum=86400),
    _K("LightIntensity", "int", 100, minimum=0, maximum=100),  # % of maximum; stored for the LED driver
    _K("LocalAuthorizeOffline", "bool", True),
    _K("LocalPreAuthorize", "bool", False),
    # Wh; 0 = nothing more once the CSMS invalidates the idTag of a running transaction.
    _K("MaxEnergyOnInvalidId", "int", 0, minimum=0, maximum=_INT32_MAX),
    # Errata 3.82. The default comes from the constructor (the daemon's [ocpp] call_timeout_s).
    _K("MessageTimeout", "int", 30, minimum=MESSAGE_TIMEOUT_RANGE_S[0], maximum=MESSAGE_TIMEOUT_RANGE_S[1]),
    _K("MeterValuesAlignedData", "csl", ("Energy.Active.Import.Register",), allowed=SUPPORTED_MEASURANDS,
       max_items=MEASURAND_LIST_MAX_ITEMS),
    _K("MeterValuesAlignedDataMaxLength", "int", MEASURAND_LIST_MAX_ITEMS, readonly=True),
    _K("MeterValuesSampledData", "csl", ("Energy.Active.Import.Register", "Power.Active.Import"),
       allowed=SUPPORTED_MEASURANDS, max_items=MEASURAND_LIST_MAX_ITEMS),
    _K("MeterValuesSampledDataMaxLength", "int", MEASURAND_LIST_MAX_ITEMS, readonly=True),
    _K("MeterValueSampleInterval", "int", 60, minimum=0, maximum=86400),
    _K("MinimumStatusDuration", "int", 0, minimum=0, maximum=3600),
    _K("NumberOfConnectors", "int", 1, readonly=True),
    _K("ResetRetries", "int", 3, minimum=0, maximum=10),
    # Errata 3.79 allows R; we keep RW so a CSMS can turn it off where the local metrology law requires it.
    _K("StopTransactionOnEVSideDisconnect", "bool", True),
    _K("StopTransactionOnInvalidId", "bool", True),
    _K("StopTransactionMaxMeterValues", "int", STOP_TRANSACTION_MAX_METER_VALUES, readonly=True),  # errata 3.89
    _K("StopTxnAlignedData", "csl", (), allowed=SUPPORTED_MEASURANDS, max_items=MEASURAND_LIST_MAX_ITEMS),
    _K("StopTxnAlignedDataMaxLength", "int", MEASURAND_LIST_MAX_ITEMS, readonly=True),
    _K("StopTxnSampledData", "csl", (), allowed=SUPPORTED_MEASURANDS, max_items=MEASURAND_LIST_MAX_ITEMS),
    _K("StopTxnSampledDataMaxLength", "int", MEASURAND_LIST_MAX_ITEMS, readonly=True),
    # The value is what the daemon implements, passed to ConfigKeys. SupportedFeatureProfilesMaxLength is left
    # out on purpose: errata 3.80 says it need not be implemented (this list is read-only anyway).
    _K("SupportedFeatureProfiles", "csl", ("Core",), readonly=True, allowed=FEATURE_PROFILES),
    _K("TransactionMessageAttempts", "int", 3, minimum=1, maximum=100),
    _K("TransactionMessageRetryInterval", "int", 30, minimum=1, maximum=3600),
    # Read-only and false with a fixed cable (errata 3.83); ConfigKeys applies that.
    _K("UnlockConnectorOnEVSideDisconnect", "bool", True),
    _K("WebSocketPingInterval", "int", 30, minimum=0, maximum=3600),
    # Security whitepaper ed. 3, 7.2 / A00.FR.205: the HTTP Basic password, "minimal 16 bytes ... 20 bytes
    # maximum, represented as a string of up to 40 hexadecimal digits" - so 32 to 40 hex digits, 2 per byte. It
    # is stored and used as the string the CSMS sent. Write-only (no default: unset until configured).
    _K("AuthorizationKey", "hex", None, minimum=16, maximum=20, secret=True),
    # Smart Charging profile (9.4), all read-only: they describe what the charger accepts. The daemon sets them
    # from the config file's [smart_charging] table; they exist only when SmartCharging is a supported profile.
    _K("ChargeProfileMaxStackLevel", "int", 10, readonly=True),
    _K("ChargingScheduleAllowedChargingRateUnit", "csl", ("Current", "Power"), readonly=True,
       allowed=frozenset({"Current", "Power"})),
    _K("ChargingScheduleMaxPeriods", "int", 96, readonly=True),
    # No phase switching hardware: a numberPhases below the wired phases is only used to convert W to A.
    _K("ConnectorSwitch3to1PhaseSupported", "bool", False, readonly=True),
    _K("MaxChargingProfilesInstalled", "int", 32, readonly=True),
]
KEYS: dict[str, KeyDef] = {k.name: k for k in _DEFS}
SMART_CHARGING_KEYS = ("ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit",
                       "ChargingScheduleMaxPeriods", "ConnectorSwitch3to1PhaseSupported",
                       "MaxChargingProfilesInstalled")
_SECRET_NAMES = frozenset(k.name.lower() for k in _DEFS if k.secret)


def redact(name: str, value: str) -> str:
    """The value as it may be logged: "***" for secret keys.

    The name is compared case-insensitively, unlike ChangeConfiguration: a CSMS that misspells the case gets
    NotSupported, but its request still carries the secret and must not reach a log line.
    """
    return _REDACTED if name.strip().lower() in _SECRET_NAMES else value


def validate_initial(name: str, value: Any, number_of_connectors: int | None = None) -> Any:
    """Check a config-file ``[ocpp.config]`` value; the connector count narrows ConnectorPhaseRotation."""
    kd = KEYS.get(name)
    if kd is None:
        raise ConfigKeyError("unknown OCPP configuration key")
    if kd.readonly:
        raise ConfigKeyError("read-only key, cannot be set")
    if kd.kind == "rotation" and number_of_connectors is not None:
        kd = dataclasses.replace(kd, connectors=number_of_connectors, max_items=number_of_connectors + 1)
    return kd.parse(value)


class KeyStore(Protocol):
    def load_config_keys(self) -> dict[str, str]: ...
    def save_config_key(self, name: str, value: str) -> None: ...


class ConfigKeys:
    """The live key values. Precedence: CSMS change (persisted) > config file > built-in default.

    ``fixed_cable``: UnlockConnectorOnEVSideDisconnect is read-only false (errata 3.83), whatever the file or
    an earlier CSMS change said. ``message_timeout_s``: default of MessageTimeout. ``feature_profiles``: the
    SupportedFeatureProfiles value, i.e. what the daemon really implements; the keys of a profile that is not
    listed do not exist. ``fixed``: values of read-only keys that describe this charger (e.g. the Smart Charging
    capabilities from the config file), given as native values.
    """

    def __init__(self, store: KeyStore, initial: dict[str, Any], number_of_connectors: int, *,
                 fixed_cable: bool = False, message_timeout_s: int = 30,
                 feature_profiles: tuple[str, ...] = ("Core",), fixed: dict[str, Any] | None = None) -> None:
        if number_of_connectors < 1:
            raise ValueError(f"number_of_connectors must be at least 1, got {number_of_connectors}")
        profiles = tuple(feature_profiles)
        unknown = [p for p in profiles if p not in FEATURE_PROFILES]
        if unknown or "Core" not in profiles or len(set(profiles)) != len(profiles):
            raise ValueError(f"feature_profiles must hold Core and known profiles once each, got {profiles!r}")
        # call_timeout_s is a float in the config file; rounding up waits a little longer, never shorter.
        timeout = math.ceil(message_timeout_s)
        lo, hi = MESSAGE_TIMEOUT_RANGE_S
        if not lo <= timeout <= hi:
            raise ValueError(f"message_timeout_s must be between {lo} and {hi}, got {message_timeout_s}")
        self._store = store
        self._defs: dict[str, KeyDef] = {kd.name: kd for kd in _DEFS
                                         if "SmartCharging" in profiles or kd.name not in SMART_CHARGING_KEYS}
        for name, value in (fixed or {}).items():
            kd = self._defs.get(name)
            if kd is None or not kd.readonly:
                raise ValueError(f"{name}: not a read-only key of the supported profiles")
            self._override(name, default=dataclasses.replace(kd, readonly=False).parse(value))
        self._override("NumberOfConnectors", default=number_of_connectors)
        self._override("ConnectorPhaseRotation", connectors=number_of_connectors, max_items=number_of_connectors + 1)
        self._override("ConnectorPhaseRotationMaxLength", default=number_of_connectors + 1)
        self._override("MessageTimeout", default=timeout)
        self._override("SupportedFeatureProfiles", default=profiles)
        if fixed_cable:
            self._override("UnlockConnectorOnEVSideDisconnect", default=False, readonly=True)
        self._values: dict[str, Any] = {kd.name: kd.default for kd in self._defs.values()}
        for name, value in initial.items():
            kd = self._defs.get(name)
            if kd is None:
                raise ConfigKeyError(f"{name}: unknown OCPP configuration key")
            if kd.readonly:
                if fixed_cable and name == "UnlockConnectorOnEVSideDisconnect":
                    continue  # the file may still carry it from a socket setup; the hardware wins
                raise ConfigKeyError(f"{name}: read-only key, cannot be set")
            try:
                self._values[name] = kd.parse(value)
            except ConfigKeyError as exc:
                raise ConfigKeyError(f"{name}: {exc}") from None
        for name, text in store.load_config_keys().items():
            kd = self._defs.get(name)
            if kd is None or kd.readonly:
                continue
            try:
                self._values[name] = kd.parse(text)
            except ConfigKeyError:
                continue  # a value valid under an older rule set; the file/default stays in force
        self._listeners: list[Callable[[str, Any], None]] = []

    def _override(self, name: str, **changes: Any) -> None:
        self._defs[name] = dataclasses.replace(self._defs[name], **changes)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def is_secret(self, name: str) -> bool:
        """Whether values under this name must be hidden (case-insensitive, see ``redact``)."""
        return name.strip().lower() in _SECRET_NAMES

    def on_change(self, listener: Callable[[str, Any], None]) -> None:
        self._listeners.append(listener)

    def change(self, name: str, text: str) -> str:
        """ChangeConfiguration semantics; returns the OCPP ConfigurationStatus."""
        kd = self._defs.get(name)
        if kd is None:
            return "NotSupported"
        if kd.readonly:
            return "Rejected"
        try:
            value = kd.parse(text)
        except ConfigKeyError:
            return "Rejected"
        self._store.save_config_key(name, kd.format(value))
        self._values[name] = value
        for listener in self._listeners:
            listener(name, value)
        return "RebootRequired" if kd.reboot_required else "Accepted"

    def entries(self, names: list[str] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """GetConfiguration: (configurationKey entries, unknownKey). No names (None or empty) = every key."""
        wanted = names if names else list(self._defs)
        known: list[dict[str, Any]] = []
        unknown: list[str] = []
        for name in wanted:
            kd = self._defs.get(name)
            if kd is None:
                unknown.append(name)
                continue
            entry: dict[str, Any] = {"key": name, "readonly": kd.readonly}
            # Secrets are listed (so the CSMS sees the key exists and is writable) but without a value
            # (whitepaper 7.2, OCPP-J 1.6 section 7). Unset values (no default) are likewise left out.
            if not kd.secret and self._values[name] is not None:
                entry["value"] = kd.format(self._values[name])
            known.append(entry)
        return known, unknown
