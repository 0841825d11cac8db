"""OCPP 1.6 configuration keys: definitions, validation and the live values.

Values are kept as Python values in memory and as OCPP strings in the store. A change from the CSMS
overrides the config file's ``[ocpp.config]`` value; the file only seeds keys the CSMS never changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# What the sim and the meters we support can actually measure; the CSMS may only ask for these.
SUPPORTED_MEASURANDS = frozenset({
    "Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Current.Offered", "Voltage",
})


class ConfigKeyError(ValueError):
    pass


@dataclass(frozen=True)
class KeyDef:
    name: str
    kind: str  # "bool" | "int" | "csl" | "str"
    default: Any
    readonly: bool = False
    minimum: int | None = None
    maximum: int | None = None
    allowed: frozenset[str] | None = None  # CSL members allowed
    max_items: int | None = None
    reboot_required: bool = False
    secret: bool = False

    def parse(self, value: Any) -> Any:
        """Accept native TOML values (config file) and OCPP strings (ChangeConfiguration)."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ConfigKeyError("expected a boolean (true or false)")
        if self.kind == "int":
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
        if self.kind == "csl":
            if isinstance(value, list):
                items = value
            elif isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
            else:
                raise ConfigKeyError("expected a comma-separated list (string or array of strings)")
            if not all(isinstance(i, str) for i in items):
                raise ConfigKeyError("list items must be strings")
            if self.allowed is not None:
                bad = [i for i in items if i not in self.allowed]
                if bad:
                    raise ConfigKeyError(f"unsupported value(s): {', '.join(bad)}")
            if self.max_items is not None and len(items) > self.max_items:
                raise ConfigKeyError(f"at most {self.max_items} items")
            return tuple(items)
        if not isinstance(value, str):
            raise ConfigKeyError("expected a string")
        return value

    def format(self, value: Any) -> str:
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "csl":
            return ",".join(value)
        return str(value)


_K = KeyDef
_DEFS: list[KeyDef] = [
    # Core profile (OCPP 1.6 ed. 2 section 9.1). Keys marked readonly describe fixed capabilities.
    _K("AllowOfflineTxForUnknownId", "bool", False),
    _K("AuthorizationCacheEnabled", "bool", True),
    _K("AuthorizeRemoteTxRequests", "bool", False),
    _K("ClockAlignedDataInterval", "int", 0, minimum=0, maximum=86400),
    _K("ConnectionTimeOut", "int", 60, minimum=1, maximum=3600),
    _K("GetConfigurationMaxKeys", "int", 100, readonly=True),
    _K("HeartbeatInterval", "int", 300, minimum=0, maximum=86400),
    _K("LocalAuthorizeOffline", "bool", True),
    _K("LocalPreAuthorize", "bool", False),
    _K("MeterValuesAlignedData", "csl", ("Energy.Active.Import.Register",), allowed=SUPPORTED_MEASURANDS,
       max_items=8),
    _K("MeterValuesAlignedDataMaxLength", "int", 8, readonly=True),
    _K("MeterValuesSampledData", "csl", ("Energy.Active.Import.Register", "Power.Active.Import"),
       allowed=SUPPORTED_MEASURANDS, max_items=8),
    _K("MeterValuesSampledDataMaxLength", "int", 8, readonly=True),
    _K("MeterValueSampleInterval", "int", 60, minimum=0, maximum=86400),
    _K("MinimumStatusDuration", "int", 0, minimum=0, maximum=3600),
    _K("NumberOfConnectors", "int", 1, readonly=True),
    _K("ResetRetries", "int", 3, minimum=0, maximum=10),
    _K("StopTransactionOnEVSideDisconnect", "bool", True),
    _K("StopTransactionOnInvalidId", "bool", True),
    _K("StopTxnAlignedData", "csl", (), allowed=SUPPORTED_MEASURANDS, max_items=8),
    _K("StopTxnAlignedDataMaxLength", "int", 8, readonly=True),
    _K("StopTxnSampledData", "csl", (), allowed=SUPPORTED_MEASURANDS, max_items=8),
    _K("StopTxnSampledDataMaxLength", "int", 8, readonly=True),
    _K("SupportedFeatureProfiles", "csl", ("Core",), readonly=True),
    _K("TransactionMessageAttempts", "int", 3, minimum=1, maximum=100),
    _K("TransactionMessageRetryInterval", "int", 30, minimum=1, maximum=3600),
    _K("UnlockConnectorOnEVSideDisconnect", "bool", True),
    _K("WebSocketPingInterval", "int", 30, minimum=0, maximum=3600),
]
KEYS: dict[str, KeyDef] = {k.name: k for k in _DEFS}


def validate_initial(name: str, value: Any) -> Any:
    kd = KEYS.get(name)
    if kd is None:
        raise ConfigKeyError("unknown OCPP configuration key")
    if kd.readonly:
        raise ConfigKeyError("read-only key, cannot be set")
    return kd.parse(value)


class KeyStore(Protocol):
    def load_config_keys(self) -> dict[str, str]: ...
    def save_config_key(self, name: str, value: str) -> None: ...


class ConfigKeys:
    """The live key values. Precedence: CSMS change (persisted) > config file > built-in default."""

    def __init__(self, store: KeyStore, initial: dict[str, Any], number_of_connectors: int) -> None:
        self._store = store
        self._values: dict[str, Any] = {k.name: k.default for k in _DEFS}
        self._values["NumberOfConnectors"] = number_of_connectors
        self._values.update(initial)
        for name, text in store.load_config_keys().items():
            kd = KEYS.get(name)
            if kd is None or kd.readonly:
                continue
            try:
                self._values[name] = kd.parse(text)
            except ConfigKeyError:
                continue  # a value valid under an older rule set; the file/default stays in force
        self._listeners: list[Callable[[str, Any], None]] = []

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def on_change(self, listener: Callable[[str, Any], None]) -> None:
        self._listeners.append(listener)

    def change(self, name: str, text: str) -> str:
        """ChangeConfiguration semantics; returns the OCPP ConfigurationStatus."""
        kd = KEYS.get(name)
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
        """GetConfiguration: (configurationKey entries, unknownKey)."""
        wanted = names if names else [k.name for k in _DEFS]
        known: list[dict[str, Any]] = []
        unknown: list[str] = []
        for name in wanted:
            kd = KEYS.get(name)
            if kd is None:
                unknown.append(name)
                continue
            entry: dict[str, Any] = {"key": name, "readonly": kd.readonly}
            if not kd.secret:
                entry["value"] = kd.format(self._values[name])
            known.append(entry)
        return known, unknown
