"""The Raspberry Pi backend as real processes: `evsed --check-config` on rpi configurations, `evsed --safe-state`
on a machine without PWM or GPIO, and the daemon on emulated Pi devices (EVSED_EMULATE=1) against the strict CSMS.

The emulated devices are the lowest layer only (sysfs PWM files, I2C ADC registers, gpiozero mock pins, see
evsed/board/rpi/emulated_world.py): the real drivers, sampling thread, pilot state machine and OCPP client run in
the daemon process, and `evsectl sim` acts on the physics below them.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import REPO_ROOT, Daemon, _env, connector
from ocpp_helpers import no_strict_errors, start_daemon, start_local_session, status_is
from strict_csms import StrictCSMS

from evsed.control.protocol import request

MakeConfig = Callable[..., Path]
Factory = Callable[[Path], Daemon]

# `evsectl status --json`, per connector: the contract tools outside the repository read.
CONTRACT_CONNECTOR_FIELDS = {"id", "status", "pilot_state", "offered_current_a", "power_w", "energy_wh",
                             "transaction_id", "id_tag"}
RPI_BOARDS = ("pi-ads1115", "pi-mcp3008", "pi5-2conn")
RPI = {"backend": "rpi", "board": "pi-ads1115", "connectors": None}  # the profile says how many connectors


def run_evsed(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "evsed.cli.daemon", *args], capture_output=True, text=True,
                              timeout=timeout, env=env or _env(), cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"evsed {' '.join(args)} still running after {timeout}s: {e.stderr!r}") from None


def no_hardware_env() -> dict[str, str]:
    """This machine as it is: no emulation, gpiozero left to find (and fail to find) a real pin factory."""
    env = _env()
    for name in ("EVSED_EMULATE", "GPIOZERO_PIN_FACTORY", "EVSED_HW_DIR"):
        env.pop(name, None)
    return env


def one_error_line(res: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == "", res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{res.stderr}"
    return lines[0]


# ---------------------------------------------------------------------------- evsed --check-config


@pytest.mark.parametrize("board", RPI_BOARDS)
def test_check_config_shipped_board(make_config: MakeConfig, board: str) -> None:
    cfg = make_config(hardware={**RPI, "board": board})
    res = run_evsed("--check-config", "--config", str(cfg), env=no_hardware_env())
    assert (res.returncode, res.stdout, res.stderr) == (0, f"{cfg}: OK\n", "")


def test_check_config_board_as_a_path(make_config: MakeConfig, tmp_path: Path) -> None:
    board = tmp_path / "my-board.toml"
    board.write_text((REPO_ROOT / "hw" / "boards" / "pi-ads1115.toml").read_text())
    cfg = make_config(hardware={**RPI, "board": str(board)})
    res = run_evsed("--check-config", "--config", str(cfg), env=no_hardware_env())
    assert (res.returncode, res.stderr) == (0, ""), res.stderr


def test_check_config_unknown_board(make_config: MakeConfig) -> None:
    cfg = make_config(hardware={**RPI, "board": "pi-nope"})
    line = one_error_line(run_evsed("--check-config", "--config", str(cfg)))
    assert line.startswith(f"evsed: {cfg}: hardware.board: no board named 'pi-nope' (known: "), line
    for board in RPI_BOARDS:
        assert board in line, line



def test_check_config_unknown_board_lists_only_usable_boards(make_config: MakeConfig) -> None:
    cfg = make_config(hardware={**RPI, "board": "pi-nope"})
    line = one_error_line(run_evsed("--check-config", "--config", str(cfg)))
    assert line.endswith("(known: pi-ads1115, pi-mcp3008, pi5-2conn)"), line


# (id, [board] text appended to a good rpi config, the key the line must name, words the problem must contain)
BAD_OVERRIDES = [
    ("pin-not-a-gpio", '[board.connector.1.contactor]\npin = "nope"\n', "board.connector.1.contactor.pin", "'nope'"),
    ("pin-out-of-range", "[board.connector.1.contactor]\npin = 40\n", "board.connector.1.contactor.pin", "40"),
    ("unknown-key", '[board.connector.1.contactor]\ncolour = "red"\n', "board.connector.1.contactor.colour",
     "unknown key"),
    ("pin-clash", "[board.connector.1.contactor]\npin = 23\n", "board.connector.1.contactor.pin", "led.pin"),
    ("no-such-connector", "[board.connector.3.contactor]\npin = 4\n", "board.connector.3", "1 connector"),
    ("wrong-type", '[board.connector.1.pwm]\nfrequency_hz = "fast"\n', "board.connector.1.pwm.frequency_hz",
     "a string"),
    ("dangling-adc", '[board.connector.1.pilot]\nadc = "cp9"\n', "board.connector.1.pilot.adc", "cp9"),
]


@pytest.mark.parametrize(("text", "key", "problem"), [b[1:] for b in BAD_OVERRIDES], ids=[b[0] for b in BAD_OVERRIDES])
def test_check_config_bad_board_override(make_config: MakeConfig, text: str, key: str, problem: str) -> None:
    cfg = make_config(hardware=RPI)
    cfg.write_text(cfg.read_text() + "\n" + text)
    line = one_error_line(run_evsed("--check-config", "--config", str(cfg)))
    assert line.startswith(f"evsed: {cfg}: {key}: "), line
    assert problem in line.removeprefix(f"evsed: {cfg}: {key}: "), line


def test_check_config_error_in_a_board_file_names_that_file(make_config: MakeConfig, tmp_path: Path) -> None:
    board = tmp_path / "my-board.toml"
    text = (REPO_ROOT / "hw" / "boards" / "pi-ads1115.toml").read_text()
    board.write_text(text.replace("sample_interval_ms = 5", "sample_interval_ms = -5", 1))
    cfg = make_config(hardware={**RPI, "board": str(board)})
    line = one_error_line(run_evsed("--check-config", "--config", str(cfg)))
    assert line.startswith(f"evsed: {board}: sample_interval_ms: "), line


@pytest.mark.parametrize(
    ("hardware", "board_table", "key"),
    [
        ({"backend": "rpi", "connectors": None}, "", "hardware.board"),
        ({"backend": "sim"}, "[board]\nsample_interval_ms = 5\n", "board"),
        ({"backend": "sim", "board": "pi-ads1115"}, "", "hardware.board"),
        ({**RPI, "connectors": 2}, "", "hardware.connectors"),
        ({**RPI, "board": "pi5-2conn", "connectors": 1}, "", "hardware.connectors"),
    ],
    ids=["rpi-without-board", "board-table-with-sim", "hardware-board-with-sim", "connectors-2-vs-1",
         "connectors-1-vs-2"],
)
def test_check_config_backend_mismatch(make_config: MakeConfig, hardware: dict[str, Any], board_table: str,
                                       key: str) -> None:
    cfg = make_config(hardware=hardware)
    cfg.write_text(cfg.read_text() + "\n" + board_table)
    line = one_error_line(run_evsed("--check-config", "--config", str(cfg)))
    assert line.startswith(f"evsed: {cfg}: {key}: "), line


# ---------------------------------------------------------------------------- evsed --safe-state


SAFE_PREFIX = "evsed: safe state: "


def _safe_state(make_config: MakeConfig, board: str) -> subprocess.CompletedProcess[str]:
    if any(Path("/sys/class/pwm").glob("pwmchip*")) or any(Path("/dev").glob("gpiochip*")):
        pytest.skip("this machine has PWM or GPIO hardware: --safe-state would drive it")
    cfg = make_config(hardware={**RPI, "board": board})
    return run_evsed("--safe-state", "--config", str(cfg), env=no_hardware_env(), timeout=15)


@pytest.mark.parametrize(("board", "connectors"), [("pi-ads1115", 1), ("pi5-2conn", 2)])
def test_safe_state_without_hardware_reports_each_problem(make_config: MakeConfig, board: str,
                                                          connectors: int) -> None:
    res = _safe_state(make_config, board)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert res.stdout == ""
    problems = [line.removeprefix(SAFE_PREFIX) for line in res.stderr.splitlines() if line.startswith(SAFE_PREFIX)]
    # Each output is tried on its own: contactor, pilot PWM and lock of every connector, one line each.
    assert len(problems) == 3 * connectors, res.stderr
    for n in range(1, connectors + 1):
        mine = [p for p in problems if p.startswith(f"connector {n}: ")]
        assert [p.split(":")[1].strip().split()[0] for p in mine] == ["contactor", "pilot", "lock"], mine
    assert any("no PWM chip matching" in p for p in problems), problems


def test_safe_state_without_hardware_prints_only_problem_lines(make_config: MakeConfig) -> None:
    res = _safe_state(make_config, "pi-ads1115")
    assert res.returncode == 1
    assert [line for line in res.stderr.splitlines() if not line.startswith(SAFE_PREFIX)] == []


# ---------------------------------------------------------------------------- the daemon on emulated devices


def assert_status_contract(st: dict[str, Any]) -> None:
    """`evsectl status --json`: exactly the contract's fields, with their types."""
    assert set(st) == {"charge_point_id", "ocpp", "connectors"}, st
    assert set(st["ocpp"]) == {"connected", "registration"}, st
    assert isinstance(st["ocpp"]["connected"], bool)
    for c in st["connectors"]:
        assert set(c) == CONTRACT_CONNECTOR_FIELDS, c
        assert isinstance(c["id"], int) and isinstance(c["status"], str) and isinstance(c["pilot_state"], str)
        for k in ("offered_current_a", "power_w", "energy_wh"):
            assert isinstance(c[k], float), (k, c)
        assert c["transaction_id"] is None or isinstance(c["transaction_id"], int)
        assert c["id_tag"] is None or isinstance(c["id_tag"], str)


async def wait_ev(d: Daemon, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
    """The emulated world below the drivers (relay contacts after their travel time, the duty written to sysfs),
    through the control socket's `sim ev` answer, which evsectl does not print."""
    deadline = time.monotonic() + timeout
    ev: dict[str, Any] = {}
    while time.monotonic() < deadline:
        ev = await asyncio.to_thread(request, str(d.socket_path), {"cmd": "sim", "action": "ev", "connector": 1})
        if predicate(ev):
            return ev
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; last EV snapshot {ev}")


async def start_emulated(csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory,
                         monkeypatch: pytest.MonkeyPatch) -> Daemon:
    # daemon_harness passes the test process's environment on to the daemon and evsectl.
    monkeypatch.setenv("EVSED_EMULATE", "1")
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    mark = csms.mark()
    d = await start_daemon(csms, make_config, daemon_factory, connectors=1,
                           hardware={"backend": "rpi", "board": "pi-ads1115"})
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    assert "EMULATED devices" in d.log_text()
    return d


async def test_emulated_rpi_session_with_suspend_and_pilot_short(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    csms = strict_csms
    d = await start_emulated(csms, make_config, daemon_factory, monkeypatch)
    boot = csms.calls_of("BootNotification")[0]["payload"]
    assert (boot["chargePointVendor"], boot["chargePointModel"]) == ("EvsedTest", "E2E-Sim")
    st = await d.status()
    assert_status_contract(st)
    assert connector(st, 1)["pilot_state"] == "A"

    mark = csms.mark()
    tx, start = await start_local_session(d, csms, 1, "TAG0001")
    auth = await csms.wait_call("Authorize", since=mark)
    assert auth["payload"] == {"idTag": "TAG0001"}
    assert (start["connectorId"], start["idTag"], start["meterStart"]) == (1, "TAG0001", 0)
    st = await d.status()
    assert_status_contract(st)
    c = connector(st, 1)
    # The emulated EV closed S2 when the real SysfsPwm wrote a 32 A duty cycle: state C through the real ADC chain.
    assert (c["status"], c["pilot_state"], c["offered_current_a"]) == ("Charging", "C", 32.0), c
    assert (c["transaction_id"], c["id_tag"]) == (tx, "TAG0001"), c
    ev = await wait_ev(d, lambda ev: ev["contact_closed"])
    assert ev["pwm_duty"] == pytest.approx(32 / 0.6, abs=0.1), ev  # IEC 61851-1: duty = A / 0.6 below 51 A

    mark = csms.mark()
    await d.ctl("sim", "suspend", "1")
    sn = await csms.wait_call("StatusNotification", status_is(1, "SuspendedEV"), since=mark)
    assert sn["payload"]["errorCode"] == "NoError"
    await d.wait_connector(1, lambda c: c["pilot_state"] == "B" and c["status"] == "SuspendedEV")
    await d.ctl("sim", "resume", "1")
    await csms.wait_call("StatusNotification", status_is(1, "Charging"), since=mark)

    mark = csms.mark()
    await d.ctl("sim", "fault", "1", "pilot-short")
    sn = await csms.wait_call("StatusNotification", lambda p: p["connectorId"] == 1
                              and p["errorCode"] == "EVCommunicationError", since=mark)
    # OCPP 1.6 4.9: a warning with a session open, not Faulted.
    assert sn["payload"]["status"] == "SuspendedEVSE", sn
    c = await d.wait_connector(1, lambda c: c["pilot_state"] == "E")
    assert (c["status"], c["transaction_id"], c["offered_current_a"]) == ("SuspendedEVSE", tx, 0.0), c
    ev = await wait_ev(d, lambda ev: not ev["contact_closed"])
    assert ev["pwm_duty"] in (0.0, 100.0), ev  # no PWM while the pilot is shorted

    mark = csms.mark()
    await d.ctl("sim", "clear", "1")
    await csms.wait_call("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Charging"
                         and p["errorCode"] == "NoError", since=mark)
    await d.ctl("sim", "unplug", "1")
    stop = await csms.wait_call("StopTransaction", lambda p: p["transactionId"] == tx, since=mark)
    assert stop["payload"]["reason"] == "EVDisconnected", stop
    assert stop["payload"]["meterStop"] == 0  # the emulated board has no meter
    await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    st = await d.wait_connector(1, lambda c: c["status"] == "Available" and c["transaction_id"] is None)
    assert st["pilot_state"] == "A"
    await wait_ev(d, lambda ev: not ev["contact_closed"] and ev["pwm_duty"] == 100.0)  # +12 V DC, state A
    assert_status_contract(await d.status())
    assert csms.strict_errors == [], no_strict_errors(csms)
    assert await d.terminate() == 0


async def test_emulated_rpi_adc_failure_faults_the_idle_connector(
    strict_csms: StrictCSMS, make_config: MakeConfig, daemon_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    csms = strict_csms
    d = await start_emulated(csms, make_config, daemon_factory, monkeypatch)
    mark = csms.mark()
    await d.ctl("sim", "fault", "1", "adc-failure")
    sn = await csms.wait_call("StatusNotification", status_is(1, "Faulted"), since=mark)
    assert sn["payload"]["errorCode"] == "InternalError", sn
    c = await d.wait_connector(1, lambda c: c["status"] == "Faulted")
    assert c["transaction_id"] is None and c["offered_current_a"] == 0.0, c
    assert_status_contract(await d.status())
    mark = csms.mark()
    await d.ctl("sim", "clear", "1")
    sn = await csms.wait_call("StatusNotification", status_is(1, "Available"), since=mark)
    assert sn["payload"]["errorCode"] == "NoError"
    assert csms.strict_errors == [], no_strict_errors(csms)

