"""Raspberry Pi board profiles: ``hw/boards/<name>.toml`` plus the overrides in the daemon's ``[board]`` table.

A profile says which pins, PWM channels, ADC channels, buses and meters a board uses, so one daemon serves many
boards without code changes. The format is documented key by key in hw/README.md.

Everything is checked here, once, before any hardware is touched: wrong types, ranges, unknown keys, dangling
references to ADCs and buses, pins or PWM channels used twice, combinations that cannot work (burst sampling on
an ADS1115, a proximity pilot on a tethered cable). Each problem becomes one ``ConfigError`` naming the file the
value came from (the profile, or the daemon config for overrides) and the dotted key, with connectors numbered
from 1: ``connector.2.pilot.adc``.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evsed.board.rpi.hwfiles import HwFileError, find_hw_file
from evsed.board.rpi.rfid import PARSERS as RFID_PARSERS
from evsed.config import ConfigError

# --- the parsed profile -------------------------------------------------------------------------------------

Calibration = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class AdcSpec:
    """Only the fields of ``type`` mean anything; the others keep their defaults so that they are never None."""

    name: str
    type: str  # "ads1115" | "mcp3008"
    i2c_bus: int = 1  # ads1115
    address: int = 0x48  # ads1115
    fsr_v: float = 4.096  # ads1115
    spi_bus: int = 0  # mcp3008
    spi_device: int = 0  # mcp3008
    speed_hz: int = 1_000_000  # mcp3008
    vref_v: float = 3.3  # mcp3008


@dataclass(frozen=True)
class BusSpec:
    name: str
    type: str  # "rtu" | "tcp"
    port: str | None = None
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    host: str | None = None
    tcp_port: int = 502
    timeout_s: float = 0.5
    poll_interval_s: float = 1.0


@dataclass(frozen=True)
class RfidSpec:
    port: str
    baudrate: int
    protocol: str
    hold_s: float


@dataclass(frozen=True)
class InputSpec:
    pin: int
    active_high: bool = True
    pull_up: bool | None = None


@dataclass(frozen=True)
class OutputSpec:
    pin: int
    active_high: bool = True


@dataclass(frozen=True)
class PwmSpec:
    chip: str
    channel: int
    frequency_hz: float
    inverted: bool


@dataclass(frozen=True)
class PilotSpec:
    adc: str
    method: str  # "peak-detector" | "burst"
    high_channel: int | None
    low_channel: int | None
    channel: int | None
    samples: int  # burst only (the default otherwise)
    top_k: int  # burst only (the default otherwise)
    calibration: Calibration
    calibration_low: Calibration | None


@dataclass(frozen=True)
class PpSpec:
    adc: str
    channel: int
    pullup_ohm: float
    supply_v: float


@dataclass(frozen=True)
class ContactorSpec:
    pin: int
    active_high: bool
    feedback: InputSpec | None
    feedback_timeout_ms: int


@dataclass(frozen=True)
class LockSpec:
    pin: int
    active_high: bool
    feedback: InputSpec | None
    move_time_ms: int


@dataclass(frozen=True)
class MeterSpec:
    bus: str
    model: str
    address: int


@dataclass(frozen=True)
class OvercurrentSpec:
    tolerance_a: float = 2.0
    time_s: float = 10.0


@dataclass(frozen=True)
class ConnectorSpec:
    id: int  # 1-based, the OCPP connector id
    max_current_a: float
    phases: int
    fixed_cable: bool
    pwm: PwmSpec
    pilot: PilotSpec
    pp: PpSpec | None
    contactor: ContactorSpec
    lock: LockSpec | None
    meter: MeterSpec | None
    overcurrent: OvercurrentSpec | None  # None: the daemon's [hardware] defaults apply


@dataclass(frozen=True)
class BoardProfile:
    name: str
    description: str
    path: Path
    sample_interval_ms: int
    debounce_ms: int
    ventilation: bool
    safe_pilot: str  # "A" | "F"
    adcs: dict[str, AdcSpec]
    buses: dict[str, BusSpec]
    rfid: RfidSpec | None
    rcd: InputSpec | None
    led: OutputSpec | None
    watchdog: OutputSpec | None
    connectors: tuple[ConnectorSpec, ...]


# --- limits -------------------------------------------------------------------------------------------------

ADC_CHANNELS = {"ads1115": 4, "mcp3008": 8}
ADS1115_FSR_V = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
RFID_PROTOCOLS = tuple(sorted(RFID_PARSERS))
MAX_CONNECTORS = 16  # as [hardware].connectors
MAX_BURST = 511  # evsed.board.rpi.adc.Mcp3008.MAX_BURST
BURST_SAMPLES = 200
BURST_TOP_K = 5

# Raspberry Pi 40-pin header (J8, the same on every 40-pin model): physical pin -> BCM GPIO.
_HEADER = {3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10, 21: 9, 22: 25,
           23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26, 38: 20,
           40: 21}
_MAX_BCM = 27


# --- value checks: each returns a problem or None -----------------------------------------------------------

_Check = Callable[[Any], str | None]
_REQUIRED = object()


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


def _string(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"expected a string, got {_tname(v)}"
    if not v.strip():
        return "must not be empty"
    return None


def _any_string(v: Any) -> str | None:
    return None if isinstance(v, str) else f"expected a string, got {_tname(v)}"


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"expected a boolean (true or false), got {_tname(v)}"


def _number(lo: float, hi: float, integer: bool = False) -> _Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
            return f"expected {'an integer' if integer else 'a number'}, got {_tname(v)}"
        if not (math.isfinite(v) and lo <= v <= hi):
            return f"must be between {lo:g} and {hi:g}, got {v}"
        return None

    return check


def _choice(*options: Any) -> _Check:
    def matches(v: Any, o: Any) -> bool:
        if isinstance(v, bool):
            return False
        if isinstance(o, float):  # 4.096 written as 4.096 or 4.0960: compare numerically
            return isinstance(v, int | float) and math.isclose(v, o)
        return type(v) is type(o) and bool(v == o)

    def check(v: Any) -> str | None:
        if any(matches(v, o) for o in options):
            return None
        return f"must be one of {', '.join(repr(o) for o in options)}, got {v!r}"

    return check


def pin_number(v: int | str) -> int | None:
    """The BCM GPIO number of a pin written as 17, "17", "GPIO17", "BCM17", "BOARD11" or "J8:11"."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if 0 <= v <= _MAX_BCM else None
    m = re.fullmatch(r"(?:GPIO|BCM)?(\d{1,2})", v.strip(), re.IGNORECASE)
    if m:
        n = int(m.group(1))
        return n if n <= _MAX_BCM else None
    m = re.fullmatch(r"(?:BOARD|J8:)(\d{1,2})", v.strip(), re.IGNORECASE)
    if m:
        return _HEADER.get(int(m.group(1)))
    return None


def _pin(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int | str):
        return f"expected a GPIO number or name (17, \"GPIO17\", \"BOARD11\"), got {_tname(v)}"
    if pin_number(v) is None:
        return (f"not a GPIO of the 40-pin header: {v!r} (use a BCM number 0..{_MAX_BCM}, \"GPIO17\" or "
                "\"BOARD11\"; power and ground pins are not GPIOs)")
    return None


def _calibration(v: Any) -> str | None:
    shape = "expected two [adc_volts, pilot_volts] points, e.g. [[0.30, -12.0], [3.00, 12.0]]"
    if not isinstance(v, list) or len(v) != 2 or any(not isinstance(p, list) or len(p) != 2 for p in v):
        return shape
    for p in v:
        for x in p:
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                return f"{shape}; {x!r} is not a number"
    (a1, v1), (a2, v2) = v
    # Same rule as evsed.board.rpi.adc.Calibration: equal points give no slope (or a map to a constant).
    if math.isclose(a1, a2, abs_tol=1e-9) or math.isclose(v1, v2, abs_tol=1e-9):
        return f"the two points must differ in both ADC volts and pilot volts, got {v}"
    return None


def _as_calibration(v: list[list[float]]) -> Calibration:
    (a1, v1), (a2, v2) = v
    return ((float(a1), float(v1)), (float(a2), float(v2)))


# --- reading tables with exact keys in errors -----------------------------------------------------------------


class _Source:
    """Which file each value came from: the profile, or the daemon config for overridden keys."""

    def __init__(self, profile_path: Path, config_path: str, overridden: set[str], overrides_prefix: str) -> None:
        self.profile_path = profile_path
        self.config_path = config_path
        self.overridden = overridden
        self.overrides_prefix = overrides_prefix

    def from_overrides(self, key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:i]) in self.overridden for i in range(1, len(parts) + 1))

    def error(self, key: str, problem: str) -> ConfigError:
        if self.from_overrides(key):
            shown = f"{self.overrides_prefix}.{key}" if self.overrides_prefix else key
            return ConfigError(self.config_path, shown, problem)
        return ConfigError(self.profile_path, key, problem)

    def clash(self, what: str, first: str, second: str) -> ConfigError:
        """``what`` is used by both keys; blame the one the user just changed in the config, if any."""
        if self.from_overrides(first) and not self.from_overrides(second):
            return self.error(first, f"{what} is also used by {second}")
        return self.error(second, f"{what} is already used by {first}")


class _Table:
    def __init__(self, src: _Source, key: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise src.error(key, f"expected a table, got {_tname(data)}")
        self.src = src
        self.key = key
        self.data: dict[str, Any] = data
        self._seen: set[str] = set()

    def k(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def error(self, name: str, problem: str) -> ConfigError:
        return self.src.error(self.k(name), problem)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> Any:
        """The unchecked value (None if absent), for keys with their own checks."""
        self._seen.add(name)
        return self.data.get(name)

    def pin(self, name: str) -> int:
        value = self.get(name, _pin)
        number = pin_number(value)
        assert number is not None  # _pin accepted it
        return number

    def get(self, name: str, check: _Check, default: Any = _REQUIRED) -> Any:
        self._seen.add(name)
        if name not in self.data:
            if default is _REQUIRED:
                raise self.error(name, "required key is missing")
            return default
        value = self.data[name]
        if (problem := check(value)) is not None:
            raise self.error(name, problem)
        return value

    def number(self, name: str, lo: float, hi: float, default: Any = _REQUIRED) -> float:
        v = self.get(name, _number(lo, hi), default)
        return float(v)

    def integer(self, name: str, lo: int, hi: int, default: Any = _REQUIRED) -> int:
        return int(self.get(name, _number(lo, hi, integer=True), default))

    def table(self, name: str) -> _Table | None:
        self._seen.add(name)
        if name not in self.data:
            return None
        return _Table(self.src, self.k(name), self.data[name])

    def forbid(self, names: tuple[str, ...], why: str) -> None:
        for name in names:
            if name in self.data:
                raise self.error(name, why)

    def finish(self) -> None:
        for name in self.data:
            if name not in self._seen:
                raise self.error(name, "unknown key")


# --- merging overrides --------------------------------------------------------------------------------------


def _merge(base: dict[str, Any], over: dict[str, Any], prefix: str, overridden: set[str]) -> None:
    for name, value in over.items():
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict) and isinstance(base.get(name), dict):
            _merge(base[name], value, key, overridden)
        else:
            # A leaf, a table the profile lacks, or a type change: all of it comes from the config file.
            base[name] = copy.deepcopy(value)
            overridden.add(key)


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any], src: _Source) -> None:
    over = dict(overrides)
    conn_over = over.pop("connector", None)
    _merge(data, over, "", src.overridden)
    if conn_over is None:
        return
    if not isinstance(conn_over, dict):
        src.overridden.add("connector")
        raise src.error("connector", "expected a table keyed by connector number, e.g. [board.connector.1.meter], "
                        f"got {_tname(conn_over)}")
    connectors = data.get("connector")
    if not isinstance(connectors, list) or not connectors:
        return  # the profile itself is wrong there: the parser reports that, in the profile's key
    count = len(connectors)
    for number, value in conn_over.items():
        key = f"connector.{number}"
        if not re.fullmatch(r"[1-9]\d*", number) or int(number) > count:
            src.overridden.add(key)
            raise src.error(key, f"no such connector: the profile {src.profile_path.stem!r} has {count} "
                            f"connector(s), numbered 1..{count}")
        if not isinstance(value, dict):
            src.overridden.add(key)
            raise src.error(key, f"expected a table, got {_tname(value)}")
        target = connectors[int(number) - 1]
        if not isinstance(target, dict):
            raise src.error(key, f"expected a table, got {_tname(target)}")
        _merge(target, value, key, src.overridden)


# --- parsing ------------------------------------------------------------------------------------------------


def _parse_adc(src: _Source, name: str, data: Any) -> AdcSpec:
    t = _Table(src, f"adc.{name}", data)
    kind = t.get("type", _choice("ads1115", "mcp3008"))
    i2c_keys = ("i2c_bus", "address", "fsr_v")
    spi_keys = ("spi_bus", "spi_device", "speed_hz", "vref_v")
    if kind == "ads1115":
        t.forbid(spi_keys, "not used by type ads1115 (an I2C chip)")
        spec = AdcSpec(
            name, kind,
            i2c_bus=t.integer("i2c_bus", 0, 99, 1),
            address=t.integer("address", 0x48, 0x4B, 0x48),
            fsr_v=float(t.get("fsr_v", _choice(*ADS1115_FSR_V), 4.096)),
        )
    else:
        t.forbid(i2c_keys, "not used by type mcp3008 (an SPI chip)")
        spec = AdcSpec(
            name, kind,
            spi_bus=t.integer("spi_bus", 0, 6, 0),
            spi_device=t.integer("spi_device", 0, 3, 0),
            # 3.6 MHz is the datasheet limit at 5 V; hardware.md 3.2 saw non-linearity above 1 MHz.
            speed_hz=t.integer("speed_hz", 10_000, 3_600_000, 1_000_000),
            vref_v=t.number("vref_v", 0.25, 5.5, 3.3),
        )
    t.finish()
    return spec


def _parse_bus(src: _Source, name: str, data: Any) -> BusSpec:
    t = _Table(src, f"bus.{name}", data)
    kind = t.get("type", _choice("rtu", "tcp"))
    timeout_s = t.number("timeout_s", 0.05, 10, 0.5)
    poll_interval_s = t.number("poll_interval_s", 0.1, 3600, 1.0)
    if kind == "rtu":
        t.forbid(("host", "tcp_port"), "not used by type rtu (a serial line)")
        spec = BusSpec(
            name, kind,
            port=t.get("port", _string),
            baudrate=t.get("baudrate", _choice(*BAUDRATES), 9600),
            parity=t.get("parity", _choice("N", "E", "O"), "N"),
            stopbits=t.get("stopbits", _choice(1, 2), 1),
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
        )
    else:
        t.forbid(("port", "baudrate", "parity", "stopbits"), "not used by type tcp (Modbus TCP)")
        spec = BusSpec(name, kind, host=t.get("host", _string), tcp_port=t.integer("tcp_port", 1, 65535, 502),
                       timeout_s=timeout_s, poll_interval_s=poll_interval_s)
    t.finish()
    return spec


def _parse_input(t: _Table, default_active_high: bool = True) -> InputSpec:
    spec = InputSpec(t.pin("pin"), t.get("active_high", _boolean, default_active_high),
                     t.get("pull_up", _boolean, None))
    t.finish()
    return spec


def _parse_output(t: _Table) -> OutputSpec:
    spec = OutputSpec(t.pin("pin"), t.get("active_high", _boolean, True))
    t.finish()
    return spec


def _parse_feedback(t: _Table) -> InputSpec | None:
    if not t.has("feedback_pin"):
        t.forbid(("feedback_active_high", "feedback_pull_up"), "only used with feedback_pin")
        return None
    return InputSpec(t.pin("feedback_pin"), t.get("feedback_active_high", _boolean, True),
                     t.get("feedback_pull_up", _boolean, None))


class _Parser:
    def __init__(self, src: _Source, data: dict[str, Any]) -> None:
        self.src = src
        self.root = _Table(src, "", data)
        self.adcs: dict[str, AdcSpec] = {}
        self.buses: dict[str, BusSpec] = {}
        self.pins: dict[int, str] = {}  # BCM number -> key that uses it
        self.ports: dict[str, str] = {}  # serial device -> key
        self.adc_channels: dict[tuple[str, int], str] = {}
        self.pwms: dict[tuple[str, int], str] = {}
        self.meter_addresses: dict[tuple[str, int], str] = {}

    def claim_pin(self, pin: int, key: str) -> None:
        if pin in self.pins:
            raise self.src.clash(f"GPIO{pin}", self.pins[pin], key)
        self.pins[pin] = key

    def claim_port(self, port: str, key: str) -> None:
        if port in self.ports:
            raise self.src.clash(port, self.ports[port], key)
        self.ports[port] = key

    def parse(self) -> BoardProfile:
        r = self.root
        name = r.get("name", _string, self.src.profile_path.stem)
        description = r.get("description", _any_string, "")
        sample_interval_ms = r.integer("sample_interval_ms", 1, 50, 5)
        # The contactor must open within 100 ms of the EV leaving state C (hardware.md 1.3): filter <= 50 ms.
        debounce_ms = r.integer("debounce_ms", 0, 50, 20)
        ventilation = r.get("ventilation", _boolean, False)
        safe_pilot = r.get("safe_pilot", _choice("A", "F"), "A")

        if (adc := r.table("adc")) is not None:
            for n, d in adc.data.items():
                self.adcs[n] = _parse_adc(self.src, n, d)
        if (bus := r.table("bus")) is not None:
            for n, d in bus.data.items():
                b = _parse_bus(self.src, n, d)
                if b.port is not None:
                    self.claim_port(b.port, f"bus.{n}.port")
                self.buses[n] = b
        rfid = None
        if (t := r.table("rfid")) is not None:
            protocol = t.get("protocol", _choice(*RFID_PROTOCOLS))
            rfid = RfidSpec(
                port=t.get("port", _string),
                # A PN532 speaks HSU at 115200 out of the box; the 125 kHz UART readers at 9600.
                baudrate=t.get("baudrate", _choice(*BAUDRATES), 115200 if protocol == "pn532" else 9600),
                protocol=protocol,
                hold_s=t.number("hold_s", 0, 60, 1.0),
            )
            t.finish()
            self.claim_port(rfid.port, "rfid.port")
        rcd = led = watchdog = None
        if (t := r.table("rcd")) is not None:
            rcd = _parse_input(t)
            self.claim_pin(rcd.pin, "rcd.pin")
        if (t := r.table("led")) is not None:
            led = _parse_output(t)
            self.claim_pin(led.pin, "led.pin")
        if (t := r.table("watchdog")) is not None:
            watchdog = _parse_output(t)
            self.claim_pin(watchdog.pin, "watchdog.pin")

        raw = r.raw("connector")
        if raw is None or raw == []:
            raise self.src.error("connector", "no connectors: the profile needs at least one [[connector]] table")
        if not isinstance(raw, list):
            raise self.src.error("connector", f"expected an array of tables ([[connector]]), got {_tname(raw)}")
        if len(raw) > MAX_CONNECTORS:
            raise self.src.error("connector", f"at most {MAX_CONNECTORS} connectors, got {len(raw)}")
        connectors = tuple(self.connector(i, d) for i, d in enumerate(raw, 1))
        r.finish()
        return BoardProfile(
            name=name, description=description, path=self.src.profile_path,
            sample_interval_ms=sample_interval_ms, debounce_ms=debounce_ms, ventilation=ventilation,
            safe_pilot=safe_pilot, adcs=self.adcs, buses=self.buses, rfid=rfid, rcd=rcd, led=led,
            watchdog=watchdog, connectors=connectors,
        )

    def adc_ref(self, t: _Table, name: str = "adc") -> AdcSpec:
        ref = t.get(name, _string)
        if ref not in self.adcs:
            defined = ", ".join(repr(a) for a in self.adcs) or "none; add an [adc.NAME] table"
            raise t.error(name, f"no ADC named {ref!r} (defined: {defined})")
        return self.adcs[ref]

    def adc_channel(self, t: _Table, name: str, adc: AdcSpec) -> int:
        n = ADC_CHANNELS[adc.type]
        ch = t.integer(name, 0, 99)
        if ch >= n:
            raise t.error(name, f"ADC {adc.name!r} ({adc.type}) has channels 0..{n - 1}, got {ch}")
        used = self.adc_channels.get((adc.name, ch))
        if used is not None:
            raise self.src.clash(f"channel {ch} of ADC {adc.name!r}", used, t.k(name))
        self.adc_channels[(adc.name, ch)] = t.k(name)
        return ch

    def connector(self, cid: int, data: Any) -> ConnectorSpec:
        t = _Table(self.src, f"connector.{cid}", data)
        max_current_a = t.number("max_current_a", 6, 80)
        phases = t.get("phases", _choice(1, 3))
        fixed_cable = t.get("fixed_cable", _boolean, False)

        pwm_t = self.required_table(t, "pwm")
        pwm = PwmSpec(
            chip=pwm_t.get("chip", _string, "auto").strip(),
            channel=pwm_t.integer("channel", 0, 15, 0),
            # EVerest's bring-up limit for the pilot oscillator (hardware.md 1.1).
            frequency_hz=pwm_t.number("frequency_hz", 980, 1020, 1000.0),
            inverted=pwm_t.get("inverted", _boolean, False),
        )
        pwm_t.finish()
        if (pwm.chip, pwm.channel) in self.pwms:
            raise self.src.clash(f"PWM channel {pwm.channel} of chip {pwm.chip!r}", self.pwms[(pwm.chip, pwm.channel)],
                                 pwm_t.k("channel"))
        self.pwms[(pwm.chip, pwm.channel)] = pwm_t.k("channel")

        pilot = self.pilot(self.required_table(t, "pilot"))

        pp = None
        if (pp_t := t.table("pp")) is not None:
            if fixed_cable:
                raise self.src.error(pp_t.key, "a fixed (tethered) cable has no proximity pilot to read: remove "
                                     "this table or set fixed_cable = false")
            adc = self.adc_ref(pp_t)
            pp = PpSpec(adc.name, self.adc_channel(pp_t, "channel", adc), pp_t.number("pullup_ohm", 10, 100_000),
                        pp_t.number("supply_v", 1.0, 5.5, 3.3))
            pp_t.finish()

        c_t = self.required_table(t, "contactor")
        contactor = ContactorSpec(
            pin=c_t.pin("pin"),
            active_high=c_t.get("active_high", _boolean, True),
            feedback=_parse_feedback(c_t),
            feedback_timeout_ms=c_t.integer("feedback_timeout_ms", 10, 1000, 100),
        )
        c_t.finish()
        self.claim_pin(contactor.pin, c_t.k("pin"))
        if contactor.feedback is not None:
            self.claim_pin(contactor.feedback.pin, c_t.k("feedback_pin"))

        lock = None
        if (l_t := t.table("lock")) is not None:
            if fixed_cable:
                raise self.src.error(l_t.key, "a fixed (tethered) cable has no socket lock: remove this table or "
                                     "set fixed_cable = false")
            lock = LockSpec(
                pin=l_t.pin("pin"),
                active_high=l_t.get("active_high", _boolean, True),
                feedback=_parse_feedback(l_t),
                move_time_ms=l_t.integer("move_time_ms", 50, 10_000, 500),
            )
            l_t.finish()
            self.claim_pin(lock.pin, l_t.k("pin"))
            if lock.feedback is not None:
                self.claim_pin(lock.feedback.pin, l_t.k("feedback_pin"))

        meter = None
        if (m_t := t.table("meter")) is not None:
            bus_name = m_t.get("bus", _string)
            if bus_name not in self.buses:
                defined = ", ".join(repr(b) for b in self.buses) or "none; add a [bus.NAME] table"
                raise m_t.error("bus", f"no bus named {bus_name!r} (defined: {defined})")
            bus = self.buses[bus_name]
            # Serial Modbus unit ids are 1..247; Modbus TCP gateways also use 0 and 248..255.
            address = m_t.integer("address", 1, 247) if bus.type == "rtu" else m_t.integer("address", 0, 255)
            meter = MeterSpec(bus_name, m_t.get("model", _string).strip(), address)
            m_t.finish()
            used = self.meter_addresses.get((bus_name, address))
            if used is not None:
                raise self.src.clash(f"address {address} on bus {bus_name!r}", used, m_t.k("address"))
            self.meter_addresses[(bus_name, address)] = m_t.k("address")

        overcurrent = None
        if (o_t := t.table("overcurrent")) is not None:
            overcurrent = OvercurrentSpec(o_t.number("tolerance_a", 0, 80, 2.0), o_t.number("time_s", 0.1, 600, 10.0))
            o_t.finish()
        t.finish()
        return ConnectorSpec(cid, max_current_a, phases, fixed_cable, pwm, pilot, pp, contactor, lock, meter,
                             overcurrent)

    def required_table(self, t: _Table, name: str) -> _Table:
        sub = t.table(name)
        if sub is None:
            raise t.error(name, "required table is missing")
        return sub

    def pilot(self, t: _Table) -> PilotSpec:
        adc = self.adc_ref(t)
        method = t.get("method", _choice("peak-detector", "burst"))
        calibration = _as_calibration(t.get("calibration", _calibration))
        if method == "peak-detector":
            t.forbid(("channel", "samples", "top_k"), "only used with method = \"burst\"")
            high = self.adc_channel(t, "high_channel", adc)
            low = self.adc_channel(t, "low_channel", adc)
            raw_low = t.get("calibration_low", _calibration, None)
            spec = PilotSpec(adc.name, method, high, low, None, BURST_SAMPLES, BURST_TOP_K, calibration,
                             _as_calibration(raw_low) if raw_low is not None else None)
        else:
            t.forbid(("high_channel", "low_channel", "calibration_low"), "only used with method = \"peak-detector\"")
            if adc.type != "mcp3008":
                raise t.error("method", f"burst sampling needs a fast ADC (mcp3008), but {adc.name!r} is an "
                              f"{adc.type}, which averages over a whole PWM period: use method = \"peak-detector\"")
            channel = self.adc_channel(t, "channel", adc)
            samples = t.integer("samples", 10, MAX_BURST, BURST_SAMPLES)
            # The median of the top k is the plateau only while k is well below the samples on it (adc.py).
            top_k = t.integer("top_k", 1, samples // 2, BURST_TOP_K)
            spec = PilotSpec(adc.name, method, None, None, channel, samples, top_k, calibration, None)
        t.finish()
        return spec


def _read_profile(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, "-", f"cannot read file: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "-", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "-", f"TOML syntax error: {exc}") from None


def load_profile(
    name_or_path: str,
    overrides: dict[str, Any] | None = None,
    *,
    config_path: str = "<config>",
    overrides_prefix: str = "",
) -> BoardProfile:
    """Load and check a board profile, with ``overrides`` (same shape; ``connector`` keyed "1", "2", ...)
    deep-merged over it.

    ``overrides_prefix`` is prepended to the keys of errors in overridden values, e.g. "board" so that the
    message names the key as written in the daemon config (``board.connector.1.meter.address``).
    """
    if name_or_path.lower() == "sim":
        raise ConfigError(config_path, "hardware.board", "'sim' is the simulated board: set hardware.backend = "
                          '"sim" instead')
    try:
        # sim.toml only documents the simulated board: not a choice for the rpi backend.
        path = find_hw_file("boards", name_or_path, exclude=("sim",))
    except HwFileError as exc:
        raise ConfigError(config_path, "hardware.board", str(exc)) from None
    data = _read_profile(path)
    board = data.get("board")
    if isinstance(board, dict) and board.get("backend", "rpi") != "rpi":
        raise ConfigError(config_path, "hardware.board", f"{path} describes the {board.get('backend')!r} backend, "
                          "not a Raspberry Pi board")
    src = _Source(path, config_path, set(), overrides_prefix)
    if overrides:
        _apply_overrides(data, overrides, src)
    return _Parser(src, data).parse()
