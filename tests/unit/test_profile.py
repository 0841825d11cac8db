"""Board profiles (evsed.board.rpi.profile): the shipped hw/boards files, every validation error with its exact
file and key, and the overrides from the daemon config."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from evsed.board.rpi.hwfiles import find_hw_file
from evsed.board.rpi.profile import (
    AdcSpec,
    BoardProfile,
    BusSpec,
    InputSpec,
    OutputSpec,
    OvercurrentSpec,
    PwmSpec,
    RfidSpec,
    load_profile,
    pin_number,
)
from evsed.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BOARDS = ROOT / "hw" / "boards"
PI_PROFILES = sorted(p for p in BOARDS.glob("*.toml") if p.stem != "sim")
CONFIG = "/etc/evsed/evsed.toml"


# ------------------------------------------------------------------------------------------------ helpers


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def dump_toml(d: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML writing for these tests: scalars, arrays, tables and arrays of tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    arrays: list[tuple[str, list[dict[str, Any]]]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in tables:
        lines.append(f"\n[{prefix}{_toml_key(k)}]")
        lines.append(dump_toml(v, f"{prefix}{_toml_key(k)}."))
    for k, items in arrays:
        for item in items:
            lines.append(f"\n[[{prefix}{_toml_key(k)}]]")
            lines.append(dump_toml(item, f"{prefix}{_toml_key(k)}."))
    return "\n".join(lines)


BASE: dict[str, Any] = {
    "name": "test-board",
    "description": "one connector, ADS1115",
    "adc": {"cp": {"type": "ads1115", "address": 0x48}},
    "bus": {"rs485": {"type": "rtu", "port": "/dev/ttyAMA0"}},
    "rfid": {"port": "/dev/ttyUSB0", "protocol": "rdm6300"},
    "rcd": {"pin": 22, "active_high": True, "pull_up": True},
    "led": {"pin": 23},
    "connector": [
        {
            "max_current_a": 32,
            "phases": 3,
            "pwm": {"chip": "1f00098000.pwm", "channel": 2},
            "pilot": {"adc": "cp", "method": "peak-detector", "high_channel": 0, "low_channel": 1,
                      "calibration": [[0.3, -12.0], [3.0, 12.0]]},
            "pp": {"adc": "cp", "channel": 2, "pullup_ohm": 1000.0},
            "contactor": {"pin": 17, "feedback_pin": 27, "feedback_active_high": False, "feedback_pull_up": True},
            "lock": {"pin": 5, "feedback_pin": 6},
            "meter": {"bus": "rs485", "model": "sdm630", "address": 1},
        }
    ],
}

BURST: dict[str, Any] = copy.deepcopy(BASE)
BURST["adc"] = {"fast": {"type": "mcp3008"}}
BURST["connector"][0]["pilot"] = {"adc": "fast", "method": "burst", "channel": 0,
                                  "calibration": [[0.3, -12.0], [3.0, 12.0]]}
BURST["connector"][0]["pp"] = {"adc": "fast", "channel": 1, "pullup_ohm": 1000.0}


def write(tmp_path: Path, data: dict[str, Any], name: str = "board.toml") -> Path:
    path = tmp_path / name
    path.write_text(dump_toml(data) + "\n", encoding="utf-8")
    return path


def second_connector(data: dict[str, Any]) -> dict[str, Any]:
    c2: dict[str, Any] = copy.deepcopy(data["connector"][0])
    c2["pwm"]["channel"] = 3
    c2["pilot"]["high_channel"], c2["pilot"]["low_channel"] = 0, 1
    c2["pilot"]["adc"] = c2["pp"]["adc"] = "cp2"
    c2["contactor"] = {"pin": 20, "feedback_pin": 21}
    c2["lock"] = {"pin": 25, "feedback_pin": 26}
    c2["meter"]["address"] = 2
    data["adc"]["cp2"] = {"type": "ads1115", "address": 0x49}
    data["connector"].append(c2)
    return c2


# ------------------------------------------------------------------------------------------------ shipped files


def test_the_shipped_pi_profiles_are_found() -> None:
    assert [p.stem for p in PI_PROFILES] == ["pi-ads1115", "pi-mcp3008", "pi5-2conn"]


@pytest.mark.parametrize("path", PI_PROFILES, ids=lambda p: p.stem)
def test_shipped_profile_loads(path: Path) -> None:
    profile = load_profile(str(path))
    assert profile.name == path.stem
    assert profile.path == path
    assert profile.description
    assert profile.safe_pilot == "A"
    assert profile.ventilation is False
    for c in profile.connectors:
        assert c.pwm.frequency_hz == 1000.0
        assert c.contactor.feedback is not None
        assert c.meter is not None
        # H1's meter models: every model a shipped profile names must exist.
        assert find_hw_file("meters", c.meter.model).is_file()


@pytest.mark.parametrize("path", PI_PROFILES, ids=lambda p: p.stem)
def test_shipped_profile_names_its_boot_snippet(path: Path) -> None:
    m = re.search(r"^# boot: (hw/boot/\S+\.txt)", path.read_text(), re.MULTILINE)
    assert m, f"{path.name} must name its config.txt snippet in a '# boot: hw/boot/...' comment"
    snippet = (ROOT / m.group(1)).read_text()
    profile = load_profile(str(path))
    lines = {ln.strip() for ln in snippet.splitlines() if ln.strip() and not ln.startswith("#")}
    # The overlay must provide the PWM channels the profile uses, and the buses it talks to.
    channels = sorted(c.pwm.channel for c in profile.connectors)
    if channels == [0]:
        assert "dtoverlay=pwm,pin=18,func=2" in lines
    else:
        assert channels == [2, 3]
        assert "dtoverlay=pwm-2chan" in lines
    types = {a.type for a in profile.adcs.values()}
    assert ("dtparam=i2c_arm=on" in lines) == ("ads1115" in types)
    assert ("dtparam=spi=on" in lines) == ("mcp3008" in types)
    assert any("uart" in ln for ln in lines)


def test_pi_ads1115_values() -> None:
    p = load_profile(str(BOARDS / "pi-ads1115.toml"))
    assert (p.sample_interval_ms, p.debounce_ms) == (5, 20)
    assert p.adcs == {"cp": AdcSpec("cp", "ads1115", i2c_bus=1, address=0x48, fsr_v=4.096)}
    assert p.buses["rs485"] == BusSpec("rs485", "rtu", port="/dev/ttyAMA0", baudrate=9600, parity="N", stopbits=1,
                                       timeout_s=0.5, poll_interval_s=1.0)
    assert p.rfid == RfidSpec("/dev/ttyUSB0", 9600, "rdm6300", 1.0)
    assert p.rcd == InputSpec(22, True, True)
    assert p.led == OutputSpec(23, True)
    assert p.watchdog is None
    (c,) = p.connectors
    assert c.id == 1 and c.max_current_a == 32.0 and c.phases == 3 and not c.fixed_cable
    assert c.pwm == PwmSpec("20c000.pwm", 0, 1000.0, False)
    assert (c.pilot.method, c.pilot.high_channel, c.pilot.low_channel) == ("peak-detector", 0, 1)
    assert c.pilot.calibration == ((0.30, -12.0), (3.00, 12.0))
    assert c.pp is not None and (c.pp.channel, c.pp.pullup_ohm) == (2, 1000.0)
    assert (c.contactor.pin, c.contactor.feedback) == (17, InputSpec(27, False, True))
    assert c.lock is not None and (c.lock.pin, c.lock.feedback) == (5, InputSpec(6, False, True))
    assert c.meter is not None and (c.meter.model, c.meter.address) == ("sdm630", 1)
    assert c.overcurrent is None


def test_pi_mcp3008_values() -> None:
    p = load_profile(str(BOARDS / "pi-mcp3008.toml"))
    assert p.adcs["cp"] == AdcSpec("cp", "mcp3008", spi_bus=0, spi_device=0, speed_hz=1_000_000, vref_v=3.3)
    (c,) = p.connectors
    assert (c.pilot.method, c.pilot.channel, c.pilot.samples, c.pilot.top_k) == ("burst", 0, 200, 5)
    assert c.phases == 1
    assert c.meter is not None and c.meter.model == "sdm120"
    assert p.buses["rs485"].baudrate == 2400


def test_pi5_two_connectors_values() -> None:
    p = load_profile(str(BOARDS / "pi5-2conn.toml"))
    c1, c2 = p.connectors
    assert (c1.id, c2.id) == (1, 2)
    assert (c1.pwm.chip, c1.pwm.channel) == ("1f00098000.pwm", 2)
    assert (c2.pwm.chip, c2.pwm.channel) == ("1f00098000.pwm", 3)
    assert {a.address for a in p.adcs.values()} == {0x48, 0x49}
    assert (c1.pilot.adc, c2.pilot.adc) == ("cp1", "cp2")
    assert c1.meter is not None and c2.meter is not None
    assert (c1.meter.bus, c1.meter.address) == ("rs485", 1)
    assert (c2.meter.bus, c2.meter.address) == ("rs485", 2)
    assert p.rcd is not None and p.rcd.pin == 22


def test_sim_profile_is_not_a_pi_profile() -> None:
    with pytest.raises(ConfigError) as exc:
        load_profile(str(BOARDS / "sim.toml"), config_path="evsed.toml")
    assert (exc.value.path, exc.value.key) == ("evsed.toml", "hardware.board")
    assert "'sim' backend" in exc.value.problem and "sim.toml" in exc.value.problem
    with pytest.raises(ConfigError, match=r"set hardware\.backend"):
        load_profile("sim", config_path="evsed.toml")


def test_profile_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "boards").mkdir()
    path = write(tmp_path / "boards", BASE, "My-Board.toml")
    monkeypatch.setenv("EVSED_HW_DIR", str(tmp_path))
    assert load_profile("my-board").path == path


def test_unknown_profile_names_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVSED_HW_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as exc:
        load_profile("no-such-board", config_path=CONFIG)
    assert (exc.value.path, exc.value.key) == (CONFIG, "hardware.board")
    assert exc.value.problem.startswith("no board named 'no-such-board' (known: ")
    assert "pi-ads1115" in exc.value.problem
    with pytest.raises(ConfigError) as exc:
        load_profile(str(tmp_path / "missing.toml"), config_path=CONFIG)
    assert (exc.value.path, exc.value.key) == (CONFIG, "hardware.board")


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    del data["name"], data["description"]
    p = load_profile(str(write(tmp_path, data, "bench-rig.toml")))
    assert (p.name, p.description) == ("bench-rig", "")
    assert (p.sample_interval_ms, p.debounce_ms, p.ventilation, p.safe_pilot) == (5, 20, False, "A")
    c = p.connectors[0]
    assert c.pwm == PwmSpec("1f00098000.pwm", 2, 1000.0, False)
    assert c.contactor.feedback_timeout_ms == 100
    assert c.lock is not None and c.lock.move_time_ms == 500 and c.lock.feedback == InputSpec(6, True, None)
    assert p.buses["rs485"] == BusSpec("rs485", "rtu", port="/dev/ttyAMA0")


def test_burst_profile_defaults(tmp_path: Path) -> None:
    p = load_profile(str(write(tmp_path, BURST)))
    pilot = p.connectors[0].pilot
    assert (pilot.channel, pilot.samples, pilot.top_k, pilot.high_channel) == (0, 200, 5, None)
    assert p.adcs["fast"] == AdcSpec("fast", "mcp3008", spi_bus=0, spi_device=0, speed_hz=1_000_000, vref_v=3.3)


def test_optional_parts(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    for k in ("rfid", "rcd", "led", "bus"):
        del data[k]
    c = data["connector"][0]
    for k in ("pp", "lock", "meter"):
        del c[k]
    c["fixed_cable"] = True
    c["overcurrent"] = {"time_s": 5}
    data["watchdog"] = {"pin": "GPIO24"}
    p = load_profile(str(write(tmp_path, data)))
    conn = p.connectors[0]
    assert (p.rfid, p.rcd, p.led, p.buses) == (None, None, None, {})
    assert p.watchdog == OutputSpec(24, True)
    assert (conn.pp, conn.lock, conn.meter, conn.fixed_cable) == (None, None, None, True)
    assert conn.overcurrent == OvercurrentSpec(2.0, 5.0)


def test_rfid_default_baudrate_follows_the_protocol(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["rfid"] = {"port": "/dev/ttyUSB0", "protocol": "pn532"}
    assert load_profile(str(write(tmp_path, data))).rfid == RfidSpec("/dev/ttyUSB0", 115200, "pn532", 1.0)
    data["rfid"] = {"port": "/dev/ttyUSB0", "protocol": "ascii"}
    assert load_profile(str(write(tmp_path, data))).rfid == RfidSpec("/dev/ttyUSB0", 9600, "ascii", 1.0)


def test_tcp_bus(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["bus"] = {"lan": {"type": "tcp", "host": "192.168.1.10"}}
    data["connector"][0]["meter"] = {"bus": "lan", "model": "sdm630", "address": 0}
    p = load_profile(str(write(tmp_path, data)))
    assert p.buses["lan"] == BusSpec("lan", "tcp", host="192.168.1.10", tcp_port=502)
    assert p.connectors[0].meter is not None and p.connectors[0].meter.address == 0


@pytest.mark.parametrize(
    ("value", "number"),
    [(17, 17), ("17", 17), ("GPIO17", 17), ("gpio17", 17), ("BCM17", 17), ("BOARD11", 17), ("J8:11", 17),
     (0, 0), ("BOARD40", 21), (28, None), ("BOARD1", None), ("BOARD6", None), ("GPIO28", None), ("pin7", None),
     (-1, None), (True, None)],
)
def test_pin_numbers(value: int | str, number: int | None) -> None:
    assert pin_number(value) == number


# ------------------------------------------------------------------------------------------------ errors


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set (or with value None, delete) a dotted key; numeric parts index connectors from 1."""
    parts = dotted.split(".")
    node: Any = data
    for p in parts[:-1]:
        node = node[int(p) - 1] if p.isdigit() else node.setdefault(p, {})
    if value is None:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value


# (changes, expected key, expected problem as a regex)
ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({"colour": "red"}, "colour", "unknown key"),
    ({"sample_interval_ms": "5"}, "sample_interval_ms", "expected an integer, got a string"),
    ({"sample_interval_ms": 0}, "sample_interval_ms", "must be between 1 and 50, got 0"),
    ({"debounce_ms": 60}, "debounce_ms", "must be between 0 and 50, got 60"),
    ({"ventilation": "no"}, "ventilation", r"expected a boolean \(true or false\), got a string"),
    ({"safe_pilot": "B"}, "safe_pilot", "must be one of 'A', 'F', got 'B'"),
    ({"name": ""}, "name", "must not be empty"),
    ({"adc.cp": 1}, "adc.cp", "expected a table, got an integer"),
    ({"adc.cp.type": "ads1015"}, "adc.cp.type", "must be one of 'ads1115', 'mcp3008', got 'ads1015'"),
    ({"adc.cp.type": None}, "adc.cp.type", "required key is missing"),
    ({"adc.cp.address": 0x50}, "adc.cp.address", "must be between 72 and 75, got 80"),
    ({"adc.cp.fsr_v": 5.0}, "adc.cp.fsr_v", "must be one of 6.144, 4.096"),
    ({"adc.cp.vref_v": 3.3}, "adc.cp.vref_v", r"not used by type ads1115"),
    ({"adc.cp.gain": 1}, "adc.cp.gain", "unknown key"),
    ({"bus.rs485.port": None}, "bus.rs485.port", "required key is missing"),
    ({"bus.rs485.parity": "X"}, "bus.rs485.parity", "must be one of 'N', 'E', 'O', got 'X'"),
    ({"bus.rs485.baudrate": 9601}, "bus.rs485.baudrate", "must be one of 1200, 2400"),
    ({"bus.rs485.baudrate": 9600.0}, "bus.rs485.baudrate", "must be one of"),
    ({"bus.rs485.host": "10.0.0.1"}, "bus.rs485.host", r"not used by type rtu"),
    ({"bus.rs485.timeout_s": 0}, "bus.rs485.timeout_s", "must be between 0.05 and 10, got 0"),
    ({"rfid.protocol": "wiegand"}, "rfid.protocol", "must be one of 'ascii', .*'rdm6300'.*, got 'wiegand'"),
    ({"rfid.port": "/dev/ttyAMA0"}, "rfid.port", "/dev/ttyAMA0 is already used by bus.rs485.port"),
    ({"rcd": 5}, "rcd", "expected a table, got an integer"),
    ({"rcd.pin": None}, "rcd.pin", "required key is missing"),
    ({"rcd.pin": "BOARD1"}, "rcd.pin", "not a GPIO of the 40-pin header: 'BOARD1'"),
    ({"rcd.pin": 40}, "rcd.pin", "not a GPIO of the 40-pin header: 40"),
    ({"rcd.pin": 2.5}, "rcd.pin", "expected a GPIO number or name"),
    ({"led.pin": "BOARD11"}, "connector.1.contactor.pin", "GPIO17 is already used by led.pin"),
    ({"connector.1.lock.pin": "GPIO17"}, "connector.1.lock.pin", "GPIO17 is already used by connector.1.contactor.pin"),
    ({"connector.1.lock.feedback_pin": 22}, "connector.1.lock.feedback_pin", "GPIO22 is already used by rcd.pin"),
    ({"connector": None}, "connector", r"no connectors: the profile needs at least one \[\[connector\]\] table"),
    ({"connector": {"max_current_a": 32}}, "connector", r"expected an array of tables \(\[\[connector\]\]\)"),
    ({"connector.1.max_current_a": 100}, "connector.1.max_current_a", "must be between 6 and 80, got 100"),
    ({"connector.1.max_current_a": None}, "connector.1.max_current_a", "required key is missing"),
    ({"connector.1.phases": 2}, "connector.1.phases", "must be one of 1, 3, got 2"),
    ({"connector.1.fixed_cable": 1}, "connector.1.fixed_cable", "expected a boolean"),
    ({"connector.1.socket": "type2"}, "connector.1.socket", "unknown key"),
    ({"connector.1.pwm": None}, "connector.1.pwm", "required table is missing"),
    ({"connector.1.pwm.frequency_hz": 1100}, "connector.1.pwm.frequency_hz", "must be between 980 and 1020"),
    ({"connector.1.pwm.channel": -1}, "connector.1.pwm.channel", "must be between 0 and 15"),
    ({"connector.1.pwm.chip": ""}, "connector.1.pwm.chip", "must not be empty"),
    ({"connector.1.pwm.polarity": "inversed"}, "connector.1.pwm.polarity", "unknown key"),
    ({"connector.1.pilot": None}, "connector.1.pilot", "required table is missing"),
    ({"connector.1.pilot.adc": "nope"}, "connector.1.pilot.adc", r"no ADC named 'nope' \(defined: 'cp'\)"),
    ({"connector.1.pilot.method": "average"}, "connector.1.pilot.method", "must be one of 'peak-detector', 'burst'"),
    ({"connector.1.pilot.low_channel": None}, "connector.1.pilot.low_channel", "required key is missing"),
    ({"connector.1.pilot.high_channel": None}, "connector.1.pilot.high_channel", "required key is missing"),
    ({"connector.1.pilot.low_channel": 0}, "connector.1.pilot.low_channel",
     "channel 0 of ADC 'cp' is already used by connector.1.pilot.high_channel"),
    ({"connector.1.pilot.high_channel": 4}, "connector.1.pilot.high_channel",
     r"ADC 'cp' \(ads1115\) has channels 0\.\.3, got 4"),
    ({"connector.1.pilot.channel": 3}, "connector.1.pilot.channel", 'only used with method = "burst"'),
    ({"connector.1.pilot.method": "burst", "connector.1.pilot.high_channel": None,
      "connector.1.pilot.low_channel": None, "connector.1.pilot.channel": 0},
     "connector.1.pilot.method", r"burst sampling needs a fast ADC \(mcp3008\), but 'cp' is an ads1115"),
    ({"connector.1.pilot.calibration": None}, "connector.1.pilot.calibration", "required key is missing"),
    ({"connector.1.pilot.calibration": [[0.3, -12.0]]}, "connector.1.pilot.calibration",
     r"expected two \[adc_volts, pilot_volts\] points"),
    ({"connector.1.pilot.calibration": [[0.3, -12.0], [3.0, "12"]]}, "connector.1.pilot.calibration",
     "'12' is not a number"),
    ({"connector.1.pilot.calibration": [[0.3, -12.0], [0.3, 12.0]]}, "connector.1.pilot.calibration",
     "must differ in both ADC volts and pilot volts"),
    ({"connector.1.pilot.calibration_low": [[1.0, 1.0], [1.0, 1.0]]}, "connector.1.pilot.calibration_low",
     "must differ"),
    ({"connector.1.pp.channel": 1}, "connector.1.pp.channel",
     "channel 1 of ADC 'cp' is already used by connector.1.pilot.low_channel"),
    ({"connector.1.pp.adc": "cp9"}, "connector.1.pp.adc", "no ADC named 'cp9'"),
    ({"connector.1.pp.pullup_ohm": None}, "connector.1.pp.pullup_ohm", "required key is missing"),
    ({"connector.1.fixed_cable": True}, "connector.1.pp", r"a fixed \(tethered\) cable has no proximity pilot"),
    ({"connector.1.fixed_cable": True, "connector.1.pp": None}, "connector.1.lock",
     r"a fixed \(tethered\) cable has no socket lock"),
    ({"connector.1.contactor": None}, "connector.1.contactor", "required table is missing"),
    ({"connector.1.contactor.feedback_pin": None}, "connector.1.contactor.feedback_active_high",
     "only used with feedback_pin"),
    ({"connector.1.contactor.feedback_timeout_ms": 5}, "connector.1.contactor.feedback_timeout_ms",
     "must be between 10 and 1000, got 5"),
    ({"connector.1.lock.move_time_ms": 0.5}, "connector.1.lock.move_time_ms", "expected an integer, got a float"),
    ({"connector.1.meter.bus": "rs232"}, "connector.1.meter.bus", r"no bus named 'rs232' \(defined: 'rs485'\)"),
    ({"connector.1.meter.model": " "}, "connector.1.meter.model", "must not be empty"),
    ({"connector.1.meter.address": 0}, "connector.1.meter.address", "must be between 1 and 247, got 0"),
    ({"connector.1.meter.address": 248}, "connector.1.meter.address", "must be between 1 and 247, got 248"),
    ({"connector.1.overcurrent": {"tolerance_a": -1}}, "connector.1.overcurrent.tolerance_a", "must be between 0"),
    ({"connector.1.overcurrent": {"time": 5}}, "connector.1.overcurrent.time", "unknown key"),
]


@pytest.mark.parametrize(("changes", "key", "problem"), ERRORS, ids=[e[1] + ":" + e[2][:24] for e in ERRORS])
def test_validation_errors(tmp_path: Path, changes: dict[str, Any], key: str, problem: str) -> None:
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        _set(data, dotted, value)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_profile(str(path), config_path=CONFIG)
    assert (exc.value.path, exc.value.key) == (str(path), key), exc.value.problem
    assert re.search(problem, exc.value.problem), exc.value.problem
    assert str(exc.value) == f"{path}: {key}: {exc.value.problem}"
    assert "\n" not in str(exc.value)


BURST_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({"connector.1.pilot.high_channel": 1}, "connector.1.pilot.high_channel",
     'only used with method = "peak-detector"'),
    ({"connector.1.pilot.channel": 8}, "connector.1.pilot.channel", r"ADC 'fast' \(mcp3008\) has channels 0\.\.7"),
    ({"connector.1.pilot.samples": 600}, "connector.1.pilot.samples", "must be between 10 and 511"),
    ({"connector.1.pilot.samples": 20, "connector.1.pilot.top_k": 11}, "connector.1.pilot.top_k",
     "must be between 1 and 10, got 11"),
    ({"adc.fast.address": 0x48}, "adc.fast.address", r"not used by type mcp3008"),
    ({"adc.fast.speed_hz": 5_000_000}, "adc.fast.speed_hz", "must be between 10000 and 3.6e\\+06"),
]


@pytest.mark.parametrize(("changes", "key", "problem"), BURST_ERRORS, ids=[e[1] for e in BURST_ERRORS])
def test_burst_validation_errors(tmp_path: Path, changes: dict[str, Any], key: str, problem: str) -> None:
    data = copy.deepcopy(BURST)
    for dotted, value in changes.items():
        _set(data, dotted, value)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_profile(str(path))
    assert (exc.value.path, exc.value.key) == (str(path), key), exc.value.problem
    assert re.search(problem, exc.value.problem), exc.value.problem


def test_two_connectors_sharing_things(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    c2 = second_connector(data)
    path = write(tmp_path, data)
    assert len(load_profile(str(path)).connectors) == 2

    c2["pwm"]["channel"] = 2
    with pytest.raises(ConfigError) as exc:
        load_profile(str(write(tmp_path, data)))
    assert exc.value.key == "connector.2.pwm.channel"
    assert exc.value.problem == ("PWM channel 2 of chip '1f00098000.pwm' is already used by "
                                 "connector.1.pwm.channel")
    c2["pwm"]["channel"] = 3

    c2["meter"]["address"] = 1
    with pytest.raises(ConfigError) as exc:
        load_profile(str(write(tmp_path, data)))
    assert exc.value.key == "connector.2.meter.address"
    assert exc.value.problem == "address 1 on bus 'rs485' is already used by connector.1.meter.address"
    c2["meter"]["address"] = 2

    c2["pp"]["adc"] = "cp"
    with pytest.raises(ConfigError) as exc:
        load_profile(str(write(tmp_path, data)))
    assert exc.value.key == "connector.2.pp.channel"
    assert exc.value.problem == "channel 2 of ADC 'cp' is already used by connector.1.pp.channel"


def test_too_many_connectors(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["connector"] = [copy.deepcopy(data["connector"][0]) for _ in range(17)]
    with pytest.raises(ConfigError) as exc:
        load_profile(str(write(tmp_path, data)))
    assert (exc.value.key, exc.value.problem) == ("connector", "at most 16 connectors, got 17")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigError) as exc:
        load_profile(str(path))
    assert (exc.value.path, exc.value.key) == (str(path), "-")
    assert exc.value.problem.startswith("TOML syntax error: ")
    path.write_bytes(b"name = \"\xff\"\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_profile(str(path))


# ------------------------------------------------------------------------------------------------ overrides


def test_overrides_merge_into_the_profile(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    before = path.read_text()
    overrides = {
        "debounce_ms": 30,
        "rfid": {"port": "/dev/ttyUSB1"},
        "watchdog": {"pin": 24},
        "connector": {"1": {"meter": {"address": 7}, "pilot": {"calibration": [[0.25, -12.0], [3.1, 12.0]]}}},
    }
    snapshot = copy.deepcopy(overrides)
    p = load_profile(str(path), overrides, config_path=CONFIG)
    assert p.debounce_ms == 30
    assert p.rfid == RfidSpec("/dev/ttyUSB1", 9600, "rdm6300", 1.0)  # the rest of [rfid] stays
    assert p.watchdog == OutputSpec(24, True)  # a table the profile lacks
    c = p.connectors[0]
    assert c.meter is not None and (c.meter.bus, c.meter.model, c.meter.address) == ("rs485", "sdm630", 7)
    assert c.pilot.calibration == ((0.25, -12.0), (3.1, 12.0))  # arrays are replaced, not merged
    assert c.pilot.high_channel == 0
    assert overrides == snapshot
    assert path.read_text() == before
    # Nothing leaks into the next load.
    assert load_profile(str(path)).connectors[0].meter == load_profile(str(path)).connectors[0].meter
    assert load_profile(str(path)).debounce_ms == 20


def test_overrides_on_a_shipped_profile() -> None:
    p = load_profile("pi5-2conn", {"connector": {"2": {"max_current_a": 16, "lock": {"move_time_ms": 800}}}},
                     config_path=CONFIG)
    assert isinstance(p, BoardProfile)
    assert [c.max_current_a for c in p.connectors] == [32.0, 16.0]
    assert p.connectors[1].lock is not None and p.connectors[1].lock.move_time_ms == 800


# (overrides, expected key, expected problem as a regex, which file the error names)
OVERRIDE_ERRORS: list[tuple[dict[str, Any], str, str, str]] = [
    ({"connector": {"1": {"meter": {"address": 300}}}}, "connector.1.meter.address",
     "must be between 1 and 247, got 300", "config"),
    ({"connector": {"1": {"meter": {"adress": 2}}}}, "connector.1.meter.adress", "unknown key", "config"),
    ({"connector": {"2": {"meter": {"address": 2}}}}, "connector.2",
     r"no such connector: the profile 'board' has 1 connector\(s\), numbered 1\.\.1", "config"),
    ({"connector": {"0": {"max_current_a": 16}}}, "connector.0", "no such connector", "config"),
    ({"connector": {"one": {"max_current_a": 16}}}, "connector.one", "no such connector", "config"),
    ({"connector": [{"max_current_a": 16}]}, "connector", "expected a table keyed by connector number", "config"),
    ({"connector": {"1": 16}}, "connector.1", "expected a table, got an integer", "config"),
    ({"connector": {"1": {"pilot": {"adc": "nope"}}}}, "connector.1.pilot.adc", "no ADC named 'nope'", "config"),
    ({"connector": {"1": {"pilot": 3}}}, "connector.1.pilot", "expected a table, got an integer", "config"),
    ({"rfid": {"baudrate": 9601}}, "rfid.baudrate", "must be one of", "config"),
    ({"colour": "red"}, "colour", "unknown key", "config"),
    # A new table from the config: errors inside it are the config's.
    ({"watchdog": {"pin": 99}}, "watchdog.pin", "not a GPIO", "config"),
    # The clash comes from the config: blame the overridden key although the profile's key is parsed later.
    ({"led": {"pin": 17}}, "led.pin", "GPIO17 is also used by connector.1.contactor.pin", "config"),
    ({"connector": {"1": {"lock": {"pin": 22}}}}, "connector.1.lock.pin", "GPIO22 is already used by rcd.pin",
     "config"),
    # Switching the ADC type makes the profile's ads1115 keys invalid: that error is in the profile's key.
    ({"adc": {"cp": {"type": "mcp3008"}}}, "adc.cp.address", "not used by type mcp3008", "profile"),
]


@pytest.mark.parametrize(("overrides", "key", "problem", "where"), OVERRIDE_ERRORS,
                         ids=[e[1] + ":" + e[2][:20] for e in OVERRIDE_ERRORS])
def test_override_errors_name_the_config_file(tmp_path: Path, overrides: dict[str, Any], key: str, problem: str,
                                              where: str) -> None:
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as exc:
        load_profile(str(path), overrides, config_path=CONFIG)
    expected_file = CONFIG if where == "config" else str(path)
    assert (exc.value.path, exc.value.key) == (expected_file, key), exc.value.problem
    assert re.search(problem, exc.value.problem), exc.value.problem


def test_override_of_connectors_on_a_profile_without_them(tmp_path: Path) -> None:
    """The profile's own mistake is reported, not a confusing "connector 1 of 0"."""
    data = copy.deepcopy(BASE)
    del data["connector"]
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_profile(str(path), {"connector": {"1": {"max_current_a": 16}}}, config_path=CONFIG)
    assert (exc.value.path, exc.value.key) == (str(path), "connector")
    assert exc.value.problem.startswith("no connectors")


def test_override_error_keys_can_carry_the_config_table(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as exc:
        load_profile(str(path), {"connector": {"1": {"meter": {"address": 0}}}}, config_path=CONFIG,
                     overrides_prefix="board")
    assert (exc.value.path, exc.value.key) == (CONFIG, "board.connector.1.meter.address")
    # Errors in the profile's own values keep the profile's key.
    data = copy.deepcopy(BASE)
    data["debounce_ms"] = 99
    with pytest.raises(ConfigError) as exc:
        load_profile(str(write(tmp_path, data)), {"connector": {"1": {"meter": {"address": 2}}}},
                     config_path=CONFIG, overrides_prefix="board")
    assert (exc.value.path, exc.value.key) == (str(tmp_path / "board.toml"), "debounce_ms")
