"""Loading and validating the daemon's TOML configuration.

Every problem becomes one ``ConfigError`` naming the file, the key and the problem, so the CLI can print a
single line and exit 2. The schema below is the contract with tools that write these files: keys are only
ever added, never renamed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(Exception):
    def __init__(self, path: str | Path, key: str, problem: str) -> None:
        super().__init__(f"{_printable(str(path))}: {_printable(key)}: {_printable(problem)}")
        self.path = str(path)
        self.key = key
        self.problem = problem


def _printable(text: str) -> str:
    """Escape control characters so the message stays on one line whatever the file contains."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class ChargePointConfig:
    id: str
    vendor: str
    model: str
    serial_number: str | None = None
    firmware_version: str | None = None


@dataclass(frozen=True)
class OcppConfig:
    url: str
    # Initial values of OCPP configuration keys; the CSMS may override them later.
    config: dict[str, Any] = field(default_factory=dict)
    call_timeout_s: float = 30.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    ping_interval_s: float = 30.0


@dataclass(frozen=True)
class HardwareConfig:
    backend: str = "sim"
    connectors: int = 1
    max_current_a: float = 32.0
    phases: int = 3
    voltage_v: float = 230.0
    # Sim only: how often the simulated meter reports (the real one is polled at this rate too).
    meter_poll_interval_s: float = 1.0
    # Tethered cable: no socket lock, so UnlockConnector answers NotSupported and UnlockConnectorOnEVSideDisconnect
    # is read-only false (OCPP 1.6 errata 3.83).
    fixed_cable: bool = False
    # backend "rpi": the board profile (a name from hw/boards/ or a path); [board] in this file overrides parts.
    board: str | None = None
    # Over-current supervision (sim backend, and rpi connectors whose profile does not set it).
    overcurrent_tolerance_a: float = 2.0
    overcurrent_time_s: float = 10.0


@dataclass(frozen=True)
class StorageConfig:
    dir: str = "/var/lib/evsed"

    @property
    def database(self) -> Path:
        return Path(self.dir) / "evsed.sqlite3"


@dataclass(frozen=True)
class ControlConfig:
    socket: str = "/run/evsed/evsed.sock"


@dataclass(frozen=True)
class SystemConfig:
    # argv run for a Hard Reset (e.g. ("systemctl", "reboot")); None = re-execute evsed.
    reset_command: tuple[str, ...] | None = None
    # After a restart with a transaction open and the EV still connected: resume it (True) or stop it with
    # reason PowerLoss/Reboot (False).
    resume_transactions: bool = True


@dataclass(frozen=True)
class SmartChargingConfig:
    """What the charger accepts (reported as the read-only OCPP 1.6 9.4 keys) and the composite-schedule cap."""

    max_stack_level: int = 10  # ChargeProfileMaxStackLevel
    allowed_units: tuple[str, ...] = ("Current", "Power")  # ChargingScheduleAllowedChargingRateUnit
    max_periods: int = 96  # ChargingScheduleMaxPeriods: 24 h of quarter hours
    max_profiles: int = 32  # MaxChargingProfilesInstalled
    # GetCompositeSchedule / evsectl schedule: a longer duration is answered for this long.
    max_composite_duration_s: int = 7 * 86400

    def ocpp_keys(self) -> dict[str, Any]:
        return {"ChargeProfileMaxStackLevel": self.max_stack_level,
                "ChargingScheduleAllowedChargingRateUnit": list(self.allowed_units),
                "ChargingScheduleMaxPeriods": self.max_periods,
                "MaxChargingProfilesInstalled": self.max_profiles}


@dataclass(frozen=True)
class Config:
    path: str
    charge_point: ChargePointConfig
    ocpp: OcppConfig
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    smart_charging: SmartChargingConfig = field(default_factory=SmartChargingConfig)
    board: Any = None  # the loaded BoardProfile (evsed.board.rpi.profile) with backend "rpi"


# One checker per key: (type name, predicate, required, default). Defaults that are None mean "optional".
_Check = Callable[[Any], str | None]


def _string(max_len: int = 0, nonempty: bool = True) -> _Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"expected a string, got {_tname(v)}"
        if nonempty and not v.strip():
            return "must not be empty"
        if max_len and len(v) > max_len:
            return f"at most {max_len} characters (OCPP limit), got {len(v)}"
        return None

    return check


def _number(lo: float, hi: float, integer: bool = False) -> _Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
            return f"expected {'an integer' if integer else 'a number'}, got {_tname(v)}"
        if not lo <= v <= hi:
            return f"must be between {_bound(lo)} and {_bound(hi)}, got {v}"
        return None

    return check


def _bound(x: float) -> str:
    """A range bound as people write it: 2678400, not 2.6784e+06."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _choice(*options: Any) -> _Check:
    def check(v: Any) -> str | None:
        if v not in options or isinstance(v, bool) != isinstance(options[0], bool):
            return f"must be one of {', '.join(repr(o) for o in options)}, got {v!r}"
        return None

    return check


def _boolean(v: Any) -> str | None:
    if not isinstance(v, bool):
        return f"expected a boolean (true or false), got {_tname(v)}"
    return None


def _argv(v: Any) -> str | None:
    if not isinstance(v, list):
        return f"expected an array of strings (program and arguments), got {_tname(v)}"
    if not v:
        return "must not be empty (the first item is the program to run)"
    for i, item in enumerate(v, 1):
        if not isinstance(item, str):
            return f"item {i}: expected a string, got {_tname(item)}"
        if not item.strip():
            return f"item {i}: must not be empty"
    return None


def _ws_url(v: Any) -> str | None:
    if (err := _string()(v)) is not None:
        return err
    parts = urlsplit(v)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        return f"must be a ws:// or wss:// URL, got {v!r}"
    return None


def _identity(v: Any) -> str | None:
    if (err := _string(max_len=48)(v)) is not None:
        return err
    # The identity becomes a URL path segment; the Security Whitepaper restricts it to printable, non-"/"
    bad = [c for c in v if not c.isprintable() or c in "/ ?#%"]
    if bad:
        return f"contains characters not allowed in a URL path segment: {''.join(sorted(set(bad)))!r}"
    return None


def _path(v: Any) -> str | None:
    return _string()(v)


def _rate_units(v: Any) -> str | None:
    if not isinstance(v, list) or not v:
        return f"expected a non-empty array of \"Current\" and/or \"Power\", got {_tname(v)}"
    bad = [u for u in v if u not in ("Current", "Power")]
    if bad:
        return f"unknown unit {bad[0]!r} (allowed: \"Current\", \"Power\")"
    if len(set(v)) != len(v):
        return "lists a unit twice"
    return None


_SCHEMA: dict[str, dict[str, tuple[_Check, bool]]] = {
    "charge_point": {
        "id": (_identity, True),
        "vendor": (_string(20), True),  # BootNotification CiString20
        "model": (_string(20), True),
        "serial_number": (_string(25), False),
        "firmware_version": (_string(50), False),
    },
    "ocpp": {
        "url": (_ws_url, True),
        "call_timeout_s": (_number(1, 600), False),
        "reconnect_min_s": (_number(0.1, 600), False),
        "reconnect_max_s": (_number(1, 3600), False),
        "ping_interval_s": (_number(0, 3600), False),
    },
    "hardware": {
        "backend": (_choice("sim", "rpi"), False),
        "connectors": (_number(1, 16, integer=True), False),
        "max_current_a": (_number(6, 80), False),
        "phases": (_choice(1, 3), False),
        "voltage_v": (_number(100, 400), False),
        "meter_poll_interval_s": (_number(0.1, 60), False),
        "fixed_cable": (_boolean, False),
        "board": (_string(), False),
        "overcurrent_tolerance_a": (_number(0, 80), False),
        "overcurrent_time_s": (_number(0.1, 600), False),
    },
    "storage": {"dir": (_path, False)},
    "control": {"socket": (_path, False)},
    "system": {
        "reset_command": (_argv, False),
        "resume_transactions": (_boolean, False),
    },
    "smart_charging": {
        "max_stack_level": (_number(0, 1000, integer=True), False),
        "allowed_units": (_rate_units, False),
        "max_periods": (_number(1, 1000, integer=True), False),
        "max_profiles": (_number(1, 1000, integer=True), False),
        "max_composite_duration_s": (_number(60, 31 * 86400, integer=True), False),
    },
}
_REQUIRED_TABLES = ("charge_point", "ocpp")


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


def load(path: str | Path) -> Config:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(path, "-", f"cannot read file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "-", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "-", f"TOML syntax error: {exc}") from None
    return parse(data, path)


def parse(data: dict[str, Any], path: str | Path = "<config>") -> Config:
    from evsed.ocpp.configkeys import ConfigKeyError, validate_initial  # OCPP key rules live with the keys

    for table in data:
        if table not in _SCHEMA and table != "board":
            raise ConfigError(path, table, "unknown table")
    for table in _REQUIRED_TABLES:
        if table not in data:
            raise ConfigError(path, table, "required table is missing")
    values: dict[str, dict[str, Any]] = {}
    raw_ocpp_keys: dict[str, Any] = {}
    for table, keys in _SCHEMA.items():
        section = data.get(table, {})
        if not isinstance(section, dict):
            raise ConfigError(path, table, f"expected a table, got {_tname(section)}")
        values[table] = {}
        for key, value in section.items():
            if table == "ocpp" and key == "config":
                if not isinstance(value, dict):
                    raise ConfigError(path, "ocpp.config", f"expected a table, got {_tname(value)}")
                raw_ocpp_keys = value  # checked below, once the connector count is known
                continue
            if key not in keys:
                raise ConfigError(path, f"{table}.{key}", "unknown key")
            check, _ = keys[key]
            if (problem := check(value)) is not None:
                raise ConfigError(path, f"{table}.{key}", problem)
            values[table][key] = tuple(value) if isinstance(value, list) else value
        for key, (_, required) in keys.items():
            if required and key not in values[table]:
                raise ConfigError(path, f"{table}.{key}", "required key is missing")
    connectors = values["hardware"].get("connectors", HardwareConfig.connectors)
    ocpp_keys: dict[str, Any] = {}
    for ck, cv in raw_ocpp_keys.items():
        try:
            ocpp_keys[ck] = validate_initial(ck, cv, connectors)
        except ConfigKeyError as exc:
            # The key rules never quote a secret (AuthorizationKey) value, so the message is safe to print.
            raise ConfigError(path, f"ocpp.config.{ck}", str(exc)) from None
    ocpp = values["ocpp"]
    if ocpp.get("reconnect_min_s", 1.0) > ocpp.get("reconnect_max_s", 60.0):
        raise ConfigError(path, "ocpp.reconnect_min_s", "must not exceed ocpp.reconnect_max_s")
    hw = values["hardware"]
    profile = _board_profile(hw, data.get("board"), path)
    if profile is not None:
        n = len(profile.connectors)
        if "connectors" in hw and hw["connectors"] != n:
            raise ConfigError(path, "hardware.connectors",
                              f"is {hw['connectors']}, but board {profile.name!r} has {n} connector(s)")
        hw["connectors"] = n
        if "phases" not in hw:
            hw["phases"] = max(c.phases for c in profile.connectors)
        if "fixed_cable" not in hw:
            hw["fixed_cable"] = all(c.fixed_cable for c in profile.connectors)
    return Config(
        path=str(path),
        charge_point=ChargePointConfig(**values["charge_point"]),
        ocpp=OcppConfig(config=ocpp_keys, **ocpp),
        board=profile,
        hardware=HardwareConfig(**hw),
        storage=StorageConfig(**values["storage"]),
        control=ControlConfig(**values["control"]),
        system=SystemConfig(**values["system"]),
        smart_charging=SmartChargingConfig(**values["smart_charging"]),
    )


def _board_profile(hw: dict[str, Any], overrides: Any, path: str | Path) -> Any:
    """backend "rpi" needs a board profile; it is loaded (and checked) with the configuration."""
    if hw.get("backend", "sim") != "rpi":
        if overrides is not None:
            raise ConfigError(path, "board", 'only used with hardware.backend = "rpi"')
        if "board" in hw:
            raise ConfigError(path, "hardware.board", 'only used with hardware.backend = "rpi"')
        return None
    if "board" not in hw:
        raise ConfigError(path, "hardware.board", 'required with backend "rpi": a profile name from hw/boards/ '
                          "or the path of a .toml file")
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(path, "board", f"expected a table, got {_tname(overrides)}")
    from evsed.board.rpi.profile import load_profile

    return load_profile(hw["board"], overrides, config_path=str(path), overrides_prefix="board")
