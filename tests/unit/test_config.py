"""Loading and validating the daemon's TOML configuration (evsed.config)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from evsed.config import (
    ChargePointConfig,
    Config,
    ConfigError,
    ControlConfig,
    HardwareConfig,
    OcppConfig,
    StorageConfig,
    SystemConfig,
    load,
    parse,
)

MINIMAL = """\
[charge_point]
id = "CP001"
vendor = "evsed"
model = "evsed-sim"

[ocpp]
url = "ws://127.0.0.1:9000/ocpp"
"""

FULL = """\
[charge_point]
id = "CP-0001_x.y"
vendor = "ACME Chargers Ltd."
model = "Wallbox 22"
serial_number = "SN-1234567890123456789012"
firmware_version = "1.2.3"

[ocpp]
url = "wss://csms.example.com:443/ocpp/v16"
call_timeout_s = 15
reconnect_min_s = 0.5
reconnect_max_s = 120
ping_interval_s = 0

[ocpp.config]
HeartbeatInterval = 60
MeterValueSampleInterval = 10
ConnectionTimeOut = 30
AllowOfflineTxForUnknownId = true
MeterValuesSampledData = ["Energy.Active.Import.Register", "Voltage"]
StopTxnSampledData = "Current.Import, Power.Active.Import"
ConnectorPhaseRotation = "0.RST, 1.RST, 2.RTS"
MessageTimeout = 45
AuthorizationKey = "00112233445566778899aabbccddeeff00112233"

[hardware]
backend = "sim"
connectors = 2
max_current_a = 16
phases = 1
voltage_v = 240.0
meter_poll_interval_s = 0.5
fixed_cable = true

[storage]
dir = "/tmp/evsed-state"

[control]
socket = "/tmp/evsed.sock"

[system]
reset_command = ["systemctl", "reboot"]
resume_transactions = false
"""


def write(tmp_path: Path, text: str, name: str = "evsed.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    err = info.value
    message = str(err)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}: "), message
    assert err.path == str(path)
    return err


def with_line(table: str, line: str, base: str = MINIMAL) -> str:
    """Insert ``line`` right below the ``[table]`` header (adding the table if missing)."""
    header = f"[{table}]\n"
    if header in base:
        return base.replace(header, header + line + "\n", 1)
    return base + "\n" + header + line + "\n"


def replace_line(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new)


# --- valid files ----------------------------------------------------------------------------------------------
def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    cfg = load(path)
    assert cfg == Config(
        path=str(path),
        charge_point=ChargePointConfig("CP001", "evsed", "evsed-sim"),
        ocpp=OcppConfig(url="ws://127.0.0.1:9000/ocpp"),
    )
    assert cfg.hardware == HardwareConfig()
    assert cfg.hardware.backend == "sim" and cfg.hardware.connectors == 1 and cfg.hardware.max_current_a == 32.0
    assert cfg.hardware.phases == 3 and cfg.hardware.voltage_v == 230.0
    assert cfg.ocpp.config == {}
    assert cfg.ocpp.call_timeout_s == 30.0 and cfg.ocpp.reconnect_min_s == 1.0 and cfg.ocpp.reconnect_max_s == 60.0
    assert cfg.storage == StorageConfig() and cfg.storage.database == Path("/var/lib/evsed/evsed.sqlite3")
    assert cfg.control == ControlConfig() and cfg.control.socket == "/run/evsed/evsed.sock"
    assert cfg.hardware.fixed_cable is False
    assert cfg.system == SystemConfig()
    assert cfg.system.reset_command is None and cfg.system.resume_transactions is True


def test_full_file(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, FULL))
    assert cfg.charge_point == ChargePointConfig("CP-0001_x.y", "ACME Chargers Ltd.", "Wallbox 22",
                                                 "SN-1234567890123456789012", "1.2.3")
    assert cfg.ocpp.url == "wss://csms.example.com:443/ocpp/v16"
    assert (cfg.ocpp.call_timeout_s, cfg.ocpp.reconnect_min_s, cfg.ocpp.reconnect_max_s,
            cfg.ocpp.ping_interval_s) == (15, 0.5, 120, 0)
    assert cfg.ocpp.config == {
        "HeartbeatInterval": 60,
        "MeterValueSampleInterval": 10,
        "ConnectionTimeOut": 30,
        "AllowOfflineTxForUnknownId": True,
        "MeterValuesSampledData": ("Energy.Active.Import.Register", "Voltage"),
        "StopTxnSampledData": ("Current.Import", "Power.Active.Import"),
        "ConnectorPhaseRotation": ("0.RST", "1.RST", "2.RTS"),
        "MessageTimeout": 45,
        "AuthorizationKey": "00112233445566778899aabbccddeeff00112233",
    }
    assert cfg.hardware == HardwareConfig("sim", 2, 16, 1, 240.0, 0.5, True)
    assert cfg.system == SystemConfig(reset_command=("systemctl", "reboot"), resume_transactions=False)
    assert cfg.storage.database == Path("/tmp/evsed-state/evsed.sqlite3")
    assert cfg.control.socket == "/tmp/evsed.sock"


def test_shipped_example_parses() -> None:
    example = Path(__file__).resolve().parents[2] / "etc" / "evsed.toml"
    if not example.exists():
        pytest.skip("etc/evsed.toml not present")
    cfg = load(example)
    assert cfg.charge_point.id == "CP001"


def test_shipped_example_documented_keys_parse() -> None:
    # Every commented-out "# key = value" line in the example must be valid where it stands once uncommented,
    # so the documentation cannot drift from the contract.
    example = Path(__file__).resolve().parents[2] / "etc" / "evsed.toml"
    if not example.exists():
        pytest.skip("etc/evsed.toml not present")
    text = example.read_text(encoding="utf-8")
    pattern = re.compile(r"^# ([A-Za-z_]+ = .+)$", re.MULTILINE)
    documented = pattern.findall(text)
    assert len(documented) >= 3
    cfg = parse(tomllib.loads(pattern.sub(r"\1", text)), example)
    names = {line.split(" = ")[0] for line in documented}
    assert {"reset_command", "AuthorizationKey"} <= names
    assert cfg.system.reset_command is not None


def test_parse_without_file() -> None:
    cfg = parse({"charge_point": {"id": "X", "vendor": "v", "model": "m"}, "ocpp": {"url": "ws://h"}})
    assert cfg.path == "<config>"
    with pytest.raises(ConfigError) as info:
        parse({"charge_point": {"id": "X", "vendor": "v", "model": "m"}})
    assert str(info.value) == "<config>: ocpp: required table is missing"


def test_boundary_values_accepted(tmp_path: Path) -> None:
    text = with_line("hardware", "connectors = 16\nmax_current_a = 80\nvoltage_v = 100")
    text = text.replace('id = "CP001"', 'id = "' + "C" * 48 + '"').replace('vendor = "evsed"', 'vendor = "' +
                                                                          "v" * 20 + '"')
    cfg = load(write(tmp_path, text))
    assert cfg.hardware.connectors == 16 and cfg.hardware.max_current_a == 80
    cfg = load(write(tmp_path, with_line("hardware", "connectors = 1\nmax_current_a = 6.0"), "b.toml"))
    assert cfg.hardware.max_current_a == 6.0


def test_reconnect_min_may_equal_max(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, with_line("ocpp", "reconnect_min_s = 5\nreconnect_max_s = 5")))
    assert cfg.ocpp.reconnect_min_s == cfg.ocpp.reconnect_max_s == 5


# --- file-level errors ------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: -: cannot read file")
    assert "\n" not in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.replace("evsed-sim", "sim\xe9").encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: -: not UTF-8 text"


@pytest.mark.parametrize("text", [
    "[charge_point\nid = 1\n",
    MINIMAL + "url = \n",
    MINIMAL + '[ocpp]\nurl = "ws://again"\n',  # table defined twice
    'a = """never closed\n\n\n',
])
def test_toml_syntax_error(tmp_path: Path, text: str) -> None:
    err = error_for(tmp_path, text)
    assert err.key == "-"
    assert "TOML syntax error" in err.problem
    assert "line" in str(err) or "end of document" in str(err)  # the position is named


# --- tables -----------------------------------------------------------------------------------------------------
def test_unknown_table(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + "\n[hardwre]\nconnectors = 2\n")
    assert err.key == "hardwre"
    assert str(err).endswith("hardwre: unknown table")


@pytest.mark.parametrize("table", ["charge_point", "ocpp"])
def test_missing_required_table(tmp_path: Path, table: str) -> None:
    head, tail = MINIMAL.split("[ocpp]")
    text = {"charge_point": "[ocpp]" + tail, "ocpp": head}[table]
    err = error_for(tmp_path, text)
    assert err.key == table
    assert err.problem == "required table is missing"


def test_table_of_wrong_type(tmp_path: Path) -> None:
    err = error_for(tmp_path, "hardware = 3\n" + MINIMAL)
    assert err.key == "hardware"
    assert err.problem == "expected a table, got an integer"


def test_ocpp_config_not_a_table(tmp_path: Path) -> None:
    err = error_for(tmp_path, with_line("ocpp", 'config = "HeartbeatInterval=5"'))
    assert err.key == "ocpp.config"
    assert err.problem == "expected a table, got a string"


# --- keys -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("table", "line", "key"), [
    ("charge_point", 'identity = "x"', "charge_point.identity"),
    ("ocpp", "timeout = 5", "ocpp.timeout"),
    ("hardware", "conectors = 2", "hardware.conectors"),
    ("storage", 'path = "/x"', "storage.path"),
    ("control", 'sock = "/x"', "control.sock"),
])
def test_unknown_key(tmp_path: Path, table: str, line: str, key: str) -> None:
    err = error_for(tmp_path, with_line(table, line))
    assert err.key == key
    assert str(err).endswith(f"{key}: unknown key")


def test_nested_unknown_table_is_an_unknown_key(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + "\n[hardware.extra]\nx = 1\n")
    assert err.key == "hardware.extra"


@pytest.mark.parametrize(("old", "key"), [
    ('id = "CP001"\n', "charge_point.id"),
    ('vendor = "evsed"\n', "charge_point.vendor"),
    ('model = "evsed-sim"\n', "charge_point.model"),
    ('url = "ws://127.0.0.1:9000/ocpp"\n', "ocpp.url"),
])
def test_missing_required_key(tmp_path: Path, old: str, key: str) -> None:
    err = error_for(tmp_path, replace_line(old, ""))
    assert err.key == key
    assert err.problem == "required key is missing"


@pytest.mark.parametrize(("table", "line", "key", "problem"), [
    ("hardware", 'connectors = "2"', "hardware.connectors", "expected an integer, got a string"),
    ("hardware", "connectors = 2.0", "hardware.connectors", "expected an integer, got a float"),
    ("hardware", "connectors = true", "hardware.connectors", "expected an integer, got a boolean"),
    ("hardware", "max_current_a = true", "hardware.max_current_a", "expected a number, got a boolean"),
    ("hardware", 'max_current_a = "32"', "hardware.max_current_a", "expected a number, got a string"),
    ("hardware", "phases = true", "hardware.phases", None),
    ("hardware", "backend = 1", "hardware.backend", None),
    ("ocpp", "call_timeout_s = false", "ocpp.call_timeout_s", "expected a number, got a boolean"),
    ("ocpp", "ping_interval_s = [1]", "ocpp.ping_interval_s", "expected a number, got an array"),
    ("storage", "dir = 5", "storage.dir", "expected a string, got an integer"),
    ("control", "socket = {a = 1}", "control.socket", "expected a string, got a table"),
])
def test_wrong_type(tmp_path: Path, table: str, line: str, key: str, problem: str | None) -> None:
    err = error_for(tmp_path, with_line(table, line))
    assert err.key == key
    if problem is not None:
        assert err.problem == problem


def test_wrong_type_for_string_key(tmp_path: Path) -> None:
    err = error_for(tmp_path, replace_line('vendor = "evsed"', "vendor = 7"))
    assert err.key == "charge_point.vendor"
    assert err.problem == "expected a string, got an integer"


@pytest.mark.parametrize(("table", "line", "key"), [
    ("hardware", "connectors = 0", "hardware.connectors"),
    ("hardware", "connectors = -1", "hardware.connectors"),
    ("hardware", "connectors = 17", "hardware.connectors"),
    ("hardware", "max_current_a = 5", "hardware.max_current_a"),
    ("hardware", "max_current_a = 5.99", "hardware.max_current_a"),
    ("hardware", "max_current_a = 80.1", "hardware.max_current_a"),
    ("hardware", "max_current_a = nan", "hardware.max_current_a"),
    ("hardware", "max_current_a = inf", "hardware.max_current_a"),
    ("hardware", "phases = 2", "hardware.phases"),
    ("hardware", 'backend = "gpio"', "hardware.backend"),
    ("hardware", "voltage_v = 99", "hardware.voltage_v"),
    ("hardware", "meter_poll_interval_s = 0", "hardware.meter_poll_interval_s"),
    ("ocpp", "call_timeout_s = 0", "ocpp.call_timeout_s"),
    ("ocpp", "reconnect_min_s = 0", "ocpp.reconnect_min_s"),
    ("ocpp", "ping_interval_s = -1", "ocpp.ping_interval_s"),
    ("storage", 'dir = ""', "storage.dir"),
    ("control", 'socket = "   "', "control.socket"),
])
def test_impossible_values(tmp_path: Path, table: str, line: str, key: str) -> None:
    err = error_for(tmp_path, with_line(table, line))
    assert err.key == key


def test_connectors_zero_message(tmp_path: Path) -> None:
    err = error_for(tmp_path, with_line("hardware", "connectors = 0"))
    assert err.problem == "must be between 1 and 16, got 0"


def test_max_current_message(tmp_path: Path) -> None:
    err = error_for(tmp_path, with_line("hardware", "max_current_a = 5"))
    assert err.problem == "must be between 6 and 80, got 5"


@pytest.mark.parametrize("url", ["http://csms.example.com/ocpp", "https://x/y", "ws://", "wss:///path",
                                 "csms.example.com", "", "ftp://h/"])
def test_bad_url(tmp_path: Path, url: str) -> None:
    err = error_for(tmp_path, replace_line('url = "ws://127.0.0.1:9000/ocpp"', f'url = "{url}"'))
    assert err.key == "ocpp.url"


def test_http_url_message(tmp_path: Path) -> None:
    err = error_for(tmp_path, replace_line('url = "ws://127.0.0.1:9000/ocpp"', 'url = "http://h/ocpp"'))
    assert err.problem == "must be a ws:// or wss:// URL, got 'http://h/ocpp'"


@pytest.mark.parametrize("ident", ["CP/001", "CP 001", "CP?1", "CP#1", "CP%201", "CP\\t1", "", "   ", "x" * 49])
def test_bad_identity(tmp_path: Path, ident: str) -> None:
    err = error_for(tmp_path, replace_line('id = "CP001"', f'id = "{ident}"'))
    assert err.key == "charge_point.id"


def test_identity_message_names_the_characters(tmp_path: Path) -> None:
    err = error_for(tmp_path, replace_line('id = "CP001"', 'id = "a b/c"'))
    assert err.problem == "contains characters not allowed in a URL path segment: ' /'"


@pytest.mark.parametrize(("old", "new", "key"), [
    ('vendor = "evsed"', 'vendor = "' + "v" * 21 + '"', "charge_point.vendor"),
    ('model = "evsed-sim"', 'model = "' + "m" * 21 + '"', "charge_point.model"),
])
def test_too_long_strings(tmp_path: Path, old: str, new: str, key: str) -> None:
    err = error_for(tmp_path, replace_line(old, new))
    assert err.key == key
    assert err.problem == "at most 20 characters (OCPP limit), got 21"


def test_too_long_optional_strings(tmp_path: Path) -> None:
    err = error_for(tmp_path, with_line("charge_point", 'serial_number = "' + "s" * 26 + '"'))
    assert err.key == "charge_point.serial_number"
    err = error_for(tmp_path, with_line("charge_point", 'firmware_version = "' + "f" * 51 + '"'))
    assert err.key == "charge_point.firmware_version"


def test_reconnect_min_above_max(tmp_path: Path) -> None:
    err = error_for(tmp_path, with_line("ocpp", "reconnect_min_s = 10\nreconnect_max_s = 5"))
    assert err.key == "ocpp.reconnect_min_s"
    assert "reconnect_max_s" in err.problem


def test_reconnect_min_above_default_max(tmp_path: Path) -> None:
    err = error_for(tmp_path, with_line("ocpp", "reconnect_min_s = 100"))
    assert err.key == "ocpp.reconnect_min_s"


# --- [ocpp.config] ------------------------------------------------------------------------------------------
def ocpp_config(line: str) -> str:
    return MINIMAL + "\n[ocpp.config]\n" + line + "\n"


@pytest.mark.parametrize(("line", "key", "problem"), [
    ("NoSuchKey = 1", "ocpp.config.NoSuchKey", "unknown OCPP configuration key"),
    ("NumberOfConnectors = 2", "ocpp.config.NumberOfConnectors", "read-only key, cannot be set"),
    ("GetConfigurationMaxKeys = 5", "ocpp.config.GetConfigurationMaxKeys", "read-only key, cannot be set"),
    ('SupportedFeatureProfiles = "Core"', "ocpp.config.SupportedFeatureProfiles", "read-only key, cannot be set"),
    ('HeartbeatInterval = "x"', "ocpp.config.HeartbeatInterval", "expected an integer, got 'x'"),
    ("HeartbeatInterval = 1.5", "ocpp.config.HeartbeatInterval", "expected an integer, got float"),
    ("HeartbeatInterval = true", "ocpp.config.HeartbeatInterval", "expected an integer, got a boolean"),
    ("HeartbeatInterval = -1", "ocpp.config.HeartbeatInterval", "must be at least 0, got -1"),
    ("MeterValueSampleInterval = -60", "ocpp.config.MeterValueSampleInterval", "must be at least 0, got -60"),
    ("ConnectionTimeOut = 0", "ocpp.config.ConnectionTimeOut", "must be at least 1, got 0"),
    ("ConnectionTimeOut = 3601", "ocpp.config.ConnectionTimeOut", "must be at most 3600, got 3601"),
    ("AllowOfflineTxForUnknownId = 1", "ocpp.config.AllowOfflineTxForUnknownId",
     "expected a boolean (true or false)"),
    ('AllowOfflineTxForUnknownId = "yes"', "ocpp.config.AllowOfflineTxForUnknownId",
     "expected a boolean (true or false)"),
    ('MeterValuesSampledData = ["SoC"]', "ocpp.config.MeterValuesSampledData", "unsupported value(s): SoC"),
    ("MeterValuesSampledData = [1]", "ocpp.config.MeterValuesSampledData", "list items must be strings"),
    ("MeterValuesSampledData = 5", "ocpp.config.MeterValuesSampledData",
     "expected a comma-separated list (string or array of strings)"),
    ('MeterValuesSampledData = "' + ",".join(["Voltage"] * 9) + '"', "ocpp.config.MeterValuesSampledData",
     "at most 8 items"),
])
def test_ocpp_config_errors(tmp_path: Path, line: str, key: str, problem: str) -> None:
    err = error_for(tmp_path, ocpp_config(line))
    assert err.key == key
    assert err.problem == problem
    assert str(err) == f"{err.path}: {key}: {problem}"


def test_ocpp_config_string_forms_accepted(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ocpp_config('HeartbeatInterval = "120"\nStopTransactionOnEVSideDisconnect = "FALSE"')))
    assert cfg.ocpp.config == {"HeartbeatInterval": 120, "StopTransactionOnEVSideDisconnect": False}


# --- one line, whatever the input ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    with_line("hardware", '"con\\nnectors" = 2'),
    ocpp_config('"Heart\\nbeat" = 1'),
    ocpp_config('MeterValuesSampledData = ["Voltage", "So\\nC"]'),
])
def test_error_is_one_line_even_for_control_characters(tmp_path: Path, text: str) -> None:
    error_for(tmp_path, text)


def test_errors_are_single_line_for_all_cases(tmp_path: Path) -> None:
    # A sweep over a mix of broken inputs, each giving exactly one line naming the file.
    cases = [
        "",
        "x = 1\n",
        MINIMAL.replace("[ocpp]", "[ocp]"),
        with_line("hardware", "connectors = 0"),
        with_line("charge_point", 'serial_number = ""'),
        ocpp_config("HeartbeatInterval = -5"),
        "[charge_point]\n[ocpp]\n",
    ]
    for i, text in enumerate(cases):
        path = write(tmp_path, text, f"case{i}.toml")
        with pytest.raises(ConfigError) as info:
            load(path)
        message = str(info.value)
        assert message.count("\n") == 0
        assert message.startswith(str(path))


# --- [hardware] fixed_cable and [system] ----------------------------------------------------------------------
def test_fixed_cable(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, with_line("hardware", "fixed_cable = true")))
    assert cfg.hardware.fixed_cable is True
    cfg = load(write(tmp_path, with_line("hardware", "fixed_cable = false"), "b.toml"))
    assert cfg.hardware.fixed_cable is False


def test_fixed_cable_file_may_still_set_unlock_on_ev_side_disconnect(tmp_path: Path) -> None:
    # Read-only only at run time (ConfigKeys ignores the value with a fixed cable); the file stays loadable.
    text = with_line("hardware", "fixed_cable = true", ocpp_config("UnlockConnectorOnEVSideDisconnect = true"))
    cfg = load(write(tmp_path, text))
    assert cfg.hardware.fixed_cable is True
    assert cfg.ocpp.config == {"UnlockConnectorOnEVSideDisconnect": True}


@pytest.mark.parametrize(("lines", "system"), [
    ("", SystemConfig()),
    ('reset_command = ["systemctl", "reboot"]', SystemConfig(reset_command=("systemctl", "reboot"))),
    ('reset_command = ["/sbin/reboot"]', SystemConfig(reset_command=("/sbin/reboot",))),
    ("resume_transactions = false", SystemConfig(resume_transactions=False)),
    ("resume_transactions = true", SystemConfig(resume_transactions=True)),
    ('reset_command = ["sh", "-c", "sync; reboot -f"]\nresume_transactions = false',
     SystemConfig(reset_command=("sh", "-c", "sync; reboot -f"), resume_transactions=False)),
])
def test_system_table(tmp_path: Path, lines: str, system: SystemConfig) -> None:
    cfg = load(write(tmp_path, MINIMAL + "\n[system]\n" + lines + "\n"))
    assert cfg.system == system
    assert isinstance(cfg.system.reset_command, tuple | type(None))


def test_config_constructed_without_system_gets_the_default() -> None:
    cfg = Config(path="x", charge_point=ChargePointConfig("CP", "v", "m"), ocpp=OcppConfig(url="ws://h"))
    assert cfg.system == SystemConfig()
    assert cfg.hardware.fixed_cable is False


@pytest.mark.parametrize(("table", "line", "key", "problem"), [
    ("hardware", 'fixed_cable = "true"', "hardware.fixed_cable", "expected a boolean (true or false), got a string"),
    ("hardware", "fixed_cable = 1", "hardware.fixed_cable", "expected a boolean (true or false), got an integer"),
    ("system", 'reset_command = "systemctl reboot"', "system.reset_command",
     "expected an array of strings (program and arguments), got a string"),
    ("system", "reset_command = 5", "system.reset_command",
     "expected an array of strings (program and arguments), got an integer"),
    ("system", "reset_command = {a = 1}", "system.reset_command",
     "expected an array of strings (program and arguments), got a table"),
    ("system", "reset_command = []", "system.reset_command",
     "must not be empty (the first item is the program to run)"),
    ("system", 'reset_command = [""]', "system.reset_command", "item 1: must not be empty"),
    ("system", 'reset_command = ["systemctl", ""]', "system.reset_command", "item 2: must not be empty"),
    ("system", 'reset_command = ["systemctl", "  "]', "system.reset_command", "item 2: must not be empty"),
    ("system", 'reset_command = ["systemctl", 1]', "system.reset_command", "item 2: expected a string, got an integer"),
    ("system", 'reset_command = [["reboot"]]', "system.reset_command", "item 1: expected a string, got an array"),
    ("system", 'resume_transactions = "yes"', "system.resume_transactions",
     "expected a boolean (true or false), got a string"),
    ("system", "resume_transactions = 0", "system.resume_transactions",
     "expected a boolean (true or false), got an integer"),
    ("system", "reboot_command = []", "system.reboot_command", "unknown key"),
])
def test_system_and_fixed_cable_errors(tmp_path: Path, table: str, line: str, key: str, problem: str) -> None:
    err = error_for(tmp_path, with_line(table, line))
    assert err.key == key
    assert err.problem == problem
    assert str(err) == f"{err.path}: {key}: {problem}"


def test_system_not_a_table(tmp_path: Path) -> None:
    err = error_for(tmp_path, "system = 1\n" + MINIMAL)
    assert err.key == "system"
    assert err.problem == "expected a table, got an integer"


def test_system_item_with_control_characters_stays_one_line(tmp_path: Path) -> None:
    error_for(tmp_path, with_line("system", 'reset_command = ["a", 2, "\\n"]'))


# --- [ocpp.config]: the new keys --------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "expected"), [
    ("MessageTimeout = 60", {"MessageTimeout": 60}),
    ("BlinkRepeat = 5", {"BlinkRepeat": 5}),
    ("LightIntensity = 0", {"LightIntensity": 0}),
    ("MaxEnergyOnInvalidId = 1000", {"MaxEnergyOnInvalidId": 1000}),
    ('ConnectorPhaseRotation = "0.RST,1.RTS"', {"ConnectorPhaseRotation": ("0.RST", "1.RTS")}),
    ('ConnectorPhaseRotation = ["1.NotApplicable"]', {"ConnectorPhaseRotation": ("1.NotApplicable",)}),
    ('AuthorizationKey = "' + "ab" * 16 + '"', {"AuthorizationKey": "ab" * 16}),
    ('MeterValuesSampledData = ["Frequency", "Power.Offered"]',
     {"MeterValuesSampledData": ("Frequency", "Power.Offered")}),
])
def test_ocpp_config_new_keys(tmp_path: Path, line: str, expected: dict[str, Any]) -> None:
    assert load(write(tmp_path, ocpp_config(line))).ocpp.config == expected


@pytest.mark.parametrize(("line", "key", "problem"), [
    ("LightIntensity = 101", "ocpp.config.LightIntensity", "must be at most 100, got 101"),
    ("MaxEnergyOnInvalidId = -1", "ocpp.config.MaxEnergyOnInvalidId", "must be at least 0, got -1"),
    ("MessageTimeout = 0", "ocpp.config.MessageTimeout", "must be at least 1, got 0"),
    ("StopTransactionMaxMeterValues = 10", "ocpp.config.StopTransactionMaxMeterValues",
     "read-only key, cannot be set"),
    ("ConnectorPhaseRotationMaxLength = 10", "ocpp.config.ConnectorPhaseRotationMaxLength",
     "read-only key, cannot be set"),
    ("SupportedFeatureProfilesMaxLength = 1", "ocpp.config.SupportedFeatureProfilesMaxLength",
     "unknown OCPP configuration key"),
    ('ConnectorPhaseRotation = "1.XYZ"', "ocpp.config.ConnectorPhaseRotation", None),
    ('ConnectorPhaseRotation = ""', "ocpp.config.ConnectorPhaseRotation", None),
])
def test_ocpp_config_new_key_errors(tmp_path: Path, line: str, key: str, problem: str | None) -> None:
    err = error_for(tmp_path, ocpp_config(line))
    assert err.key == key
    if problem is not None:
        assert err.problem == problem


def test_phase_rotation_range_uses_hardware_connectors(tmp_path: Path) -> None:
    # [hardware] after [ocpp.config] in the file: the connector count still applies.
    text = ocpp_config('ConnectorPhaseRotation = "0.RST,1.RST,2.RST,3.RST"') + "\n[hardware]\nconnectors = 3\n"
    cfg = load(write(tmp_path, text))
    assert cfg.ocpp.config["ConnectorPhaseRotation"] == ("0.RST", "1.RST", "2.RST", "3.RST")
    err = error_for(tmp_path, text.replace("connectors = 3", "connectors = 2"))
    assert err.key == "ocpp.config.ConnectorPhaseRotation"
    assert err.problem == "connectorId 3 out of range 0..2"
    err = error_for(tmp_path, ocpp_config('ConnectorPhaseRotation = "2.RST"'))  # default: 1 connector
    assert err.problem == "connectorId 2 out of range 0..1"


SECRET = "c0ffee" * 6  # 36 hex digits: valid on its own, made invalid below in several ways


@pytest.mark.parametrize("bad", [
    SECRET[:30],  # 15 bytes
    SECRET + "0",  # odd
    SECRET + "c0ffeec0",  # 22 bytes
    SECRET[:-2] + "zz",  # not hex
    " " + SECRET,
    SECRET + "\\n",
    "my-password-" + SECRET,
])
def test_authorization_key_error_never_echoes_the_value(tmp_path: Path, bad: str) -> None:
    err = error_for(tmp_path, ocpp_config(f'AuthorizationKey = "{bad}"'))
    assert err.key == "ocpp.config.AuthorizationKey"
    message = str(err)
    for fragment in (bad, bad.strip(), SECRET[:16], SECRET[-16:]):
        assert fragment not in message
        assert fragment not in repr(err)
    assert "hex digits" in err.problem


@pytest.mark.parametrize("value", ["12345678901234567890", "[\"" + SECRET + "\"]", "true"])
def test_authorization_key_wrong_type_never_echoes_the_value(tmp_path: Path, value: str) -> None:
    err = error_for(tmp_path, ocpp_config(f"AuthorizationKey = {value}"))
    assert err.problem == "expected a string"
    assert SECRET not in str(err) and "12345678901234567890" not in str(err)
