"""`evsectl probe meter` and `evsectl probe rfid` as real processes: the command-line contract that tools outside
the repository rely on.

    evsectl probe meter --port PORT --model MODEL [--address N] [--baudrate B] [--parity N|E|O] [--json]
    evsectl probe rfid --port PORT [--baudrate B] [--protocol NAME] [--count N] [--json]

The meter is a real pymodbus server (tests/unit/modbus_sim.py) on a pty or on TCP, the RFID reader is a pty whose
master the test writes frames to. The servers live in the test's event loop, so the probes run as asyncio
subprocesses: a blocking subprocess.run would stall the server the probe talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import operator
import os
import subprocess
import sys
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import REPO_ROOT, _env

from evsed.board.rpi.meter_models import load_model

# modbus_sim is a helper of the unit tests; tests/unit is not on sys.path when only tests/e2e is collected.
_UNIT_TESTS = str(Path(__file__).resolve().parents[1] / "unit")
if _UNIT_TESTS not in sys.path:
    sys.path.append(_UNIT_TESTS)
from modbus_sim import MeterServer  # noqa: E402

METERS_DIR = REPO_ROOT / "hw" / "meters"
EVSECTL = [sys.executable, "-m", "evsed.cli.evsectl"]

# Engineering values chosen to survive every model's encoding exactly (float32, 0.1 V / 0.01 A / 0.1 kWh integers),
# so that the JSON can be compared with ==.
VALUES = {
    "voltage_l1": 229.6,
    "voltage_l2": 231.2,
    "voltage_l3": 230.4,
    "current_l1": 16.0,
    "current_l2": 15.5,
    "current_l3": 15.25,
    "power_l1": 3680.0,
    "power_l2": 3580.0,
    "power_l3": 3510.0,
    "power_total": 10770.0,
    "frequency": 50.0,
    "energy_import": 1_234_500.0,
    "energy_export": 123_400.0,
}
THREE_PHASES = {
    "voltage_v": [229.6, 231.2, 230.4],
    "current_a": [16.0, 15.5, 15.25],
    "power_w": 10770.0,
    "energy_import_wh": 1_234_500.0,
    "frequency_hz": 50.0,
}
EXPECTED = {
    "sdm630": THREE_PHASES,
    "em340": THREE_PHASES,
    "abb-b23": THREE_PHASES,
    # One phase, no total-power register: the power is L1's.
    "sdm120": {"voltage_v": [229.6], "current_a": [16.0], "power_w": 3680.0, "energy_import_wh": 1_234_500.0,
               "frequency_hz": 50.0},
}
CONTRACT_KEYS = {"voltage_v", "current_a", "power_w", "energy_import_wh", "frequency_hz"}


async def evsectl(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(*EVSECTL, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=_env(), cwd=REPO_ROOT)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"evsectl {' '.join(args)} still running after {timeout}s: {out!r} {err!r}") from None
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


def error_line(res: subprocess.CompletedProcess[str], code: int) -> str:
    """The single line a user error must produce (and nothing on stdout, no traceback)."""
    assert "Traceback" not in res.stderr, res.stderr
    assert (res.returncode, res.stdout) == (code, ""), (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{res.stderr}"
    return lines[0]


def json_object(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert (res.returncode, res.stderr) == (0, ""), (res.returncode, res.stderr)
    lines = res.stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON object, got:\n{res.stdout}"
    data: dict[str, Any] = json.loads(lines[0])
    return data


@contextlib.asynccontextmanager
async def meter(model: str, transport: str, values: dict[str, float] = VALUES,
                device_id: int = 1) -> AsyncIterator[str]:
    """A meter server; yields what to pass as --port."""
    make = MeterServer.rtu if transport == "rtu" else MeterServer.tcp
    async with make(load_model(model), values, device_id) as srv:
        yield srv.port if transport == "rtu" else f"tcp://127.0.0.1:{srv.port}"


class Pty:
    """A pty pair: the probe opens `path` like a /dev/ttyUSB*, the test plays the device on the master."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        # Raw: with the default ECHO the frames written to the master would come back to it.
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.close()


# ---------------------------------------------------------------------------- probe meter


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
@pytest.mark.parametrize("model", sorted(EXPECTED))
async def test_probe_meter_json(model: str, transport: str) -> None:
    async with meter(model, transport, device_id=7) as port:
        data = json_object(await evsectl("probe", "meter", "--port", port, "--model", model, "--address", "7",
                                         "--json"))
    assert set(data) >= CONTRACT_KEYS, data
    assert {k: data[k] for k in CONTRACT_KEYS} == EXPECTED[model]
    assert (data["model"], data["address"], data["port"]) == (model, 7, port)


def _model_without_frequency(tmp_path: Path) -> Path:
    text = (METERS_DIR / "sdm630.toml").read_text()
    start = text.index("[quantities.frequency]")
    end = text.index("[quantities.", start + 1)
    path = tmp_path / "sdm630-nofreq.toml"
    path.write_text(text[:start] + text[end:])
    assert "frequency" not in load_model(str(path)).quantities  # none of the shipped models lacks it
    return path


async def test_probe_meter_json_frequency_null_when_the_model_lacks_it(tmp_path: Path) -> None:
    model = _model_without_frequency(tmp_path)
    async with meter(str(model), "rtu") as port:
        res = await evsectl("probe", "meter", "--port", port, "--model", str(model), "--json")
    data = json_object(res)
    assert '"frequency_hz": null' in res.stdout
    assert data["frequency_hz"] is None
    assert {k: data[k] for k in CONTRACT_KEYS - {"frequency_hz"}} == {
        k: v for k, v in THREE_PHASES.items() if k != "frequency_hz"}


async def test_probe_meter_human_output(tmp_path: Path) -> None:
    async with meter("sdm630", "rtu", device_id=3) as port:
        # A pty ignores the baud rate: the override only has to reach the port settings that are shown.
        res = await evsectl("probe", "meter", "--port", port, "--model", "sdm630", "--address", "3",
                            "--baudrate", "19200")
    assert (res.returncode, res.stderr) == (0, ""), res
    lines = res.stdout.splitlines()
    assert lines[0] == f"sdm630 (Eastron SDM630 v2 / SDM630MCT (3 phases)), meter 3 on {port} (19200 8N1)"
    assert [line.split() for line in lines[1:]] == [
        ["L1", "L2", "L3"],
        ["voltage", "V", "229.6", "231.2", "230.4"],
        ["current", "A", "16.00", "15.50", "15.25"],
        ["power", "W", "10770"],
        ["energy", "import", "kWh", "1234.50"],
        ["energy", "export", "kWh", "123.40"],
        ["frequency", "Hz", "50.00"],
    ]
    model = _model_without_frequency(tmp_path)
    async with meter(str(model), "rtu") as port:
        res = await evsectl("probe", "meter", "--port", port, "--model", str(model))
    assert res.returncode == 0, res
    assert res.stdout.splitlines()[-1].split() == ["frequency", "Hz", "-"]


async def test_probe_meter_installed_script() -> None:
    """The `evsectl` console script itself, as a tool outside the repository runs it."""
    script = Path(sys.executable).with_name("evsectl")
    if not script.exists():
        pytest.skip(f"no evsectl script next to {sys.executable}")
    async with meter("sdm120", "tcp") as port:
        proc = await asyncio.create_subprocess_exec(
            str(script), "probe", "meter", "--port", port, "--model", "sdm120", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env())
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert (proc.returncode, err) == (0, b""), err
    data = json.loads(out)
    assert {k: data[k] for k in CONTRACT_KEYS} == EXPECTED["sdm120"]


async def test_probe_meter_missing_port(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyUSB9")
    line = error_line(await evsectl("probe", "meter", "--port", port, "--model", "sdm630", "--json"), 1)
    assert line == f"evsectl: {port}: no such device"


async def test_probe_meter_nobody_listening_on_tcp() -> None:
    async with meter("sdm630", "tcp") as port:
        pass  # the port was just free: nobody listens there now
    line = error_line(await evsectl("probe", "meter", "--port", port, "--model", "sdm630", "--json"), 1)
    assert line == f"evsectl: {port}: cannot connect"


async def test_probe_meter_no_answer(pty: Pty) -> None:
    line = error_line(await evsectl("probe", "meter", "--port", pty.path, "--model", "sdm120", "--address", "4",
                                    "--json"), 1)
    # The model's factory settings (SDM120: 2400 baud) are used and shown.
    assert line.startswith(f"evsectl: no answer from meter 4 on {pty.path} at 2400 8N1 (timeout "), line
    assert line.endswith("check wiring, address, baud rate and parity"), line


@pytest.mark.parametrize("transport", ["rtu", "tcp"])
async def test_probe_meter_wrong_model(transport: str) -> None:
    async with meter("abb-b23", transport) as port:
        line = error_line(await evsectl("probe", "meter", "--port", port, "--model", "sdm630", "--json"), 1)
    assert line == "evsectl: meter 1 answered with Modbus exception 2 (illegal data address): is it really a sdm630?"


async def test_probe_meter_unknown_model(pty: Pty) -> None:
    line = error_line(await evsectl("probe", "meter", "--port", pty.path, "--model", "sdm999", "--json"), 2)
    known = ", ".join(sorted(p.stem for p in METERS_DIR.glob("*.toml")))
    assert line == f"evsectl: no meter named 'sdm999' (known: {known})"


@pytest.mark.parametrize(
    "args",
    [["--model", "sdm630"], ["--port", "/dev/null"], ["--port", "/dev/null", "--model", "sdm630", "--parity", "X"],
     ["--port", "/dev/null", "--model", "sdm630", "--address", "one"]],
    ids=["no-port", "no-model", "bad-parity", "bad-address"],
)
async def test_probe_meter_usage_errors(args: list[str]) -> None:
    res = await evsectl("probe", "meter", *args)
    assert res.returncode == 2 and res.stdout == "" and "Traceback" not in res.stderr, res


# ---------------------------------------------------------------------------- probe rfid

# An RDM6300 frame as documented (62^E3^08^6C^ED = 08): STX, 10 hex digits of UID, 2 of XOR checksum, ETX.
KNOWN_FRAME = b"\x0262E3086CED08\x03"
CARD_A, CARD_B, CARD_C = "62E3086CED", "0F002F6E31", "1A2B3C4D5E"


def rdm_frame(uid: str, checksum: str | None = None) -> bytes:
    if checksum is None:
        checksum = f"{functools.reduce(operator.xor, bytes.fromhex(uid)):02X}"
    return b"\x02" + uid.encode() + checksum.encode() + b"\x03"


def test_rdm_frame_matches_the_documented_frame() -> None:
    assert rdm_frame(CARD_A) == KNOWN_FRAME


# Between frames: line noise, a frame with a bad checksum (card C must never appear), a cut frame.
GARBAGE = b"\x00\xff\x13noise" + rdm_frame(CARD_C, checksum="00") + b"\x02" + CARD_B[:4].encode()


async def _read_lines(stream: asyncio.StreamReader, lines: list[str], first: asyncio.Event) -> None:
    while line := await stream.readline():
        lines.append(line.decode())
        first.set()


async def test_probe_rfid_json_two_cards_then_exits(pty: Pty) -> None:
    proc = await asyncio.create_subprocess_exec(
        *EVSECTL, "probe", "rfid", "--port", pty.path, "--count", "2", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(), cwd=REPO_ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    first = asyncio.Event()
    reader = asyncio.create_task(_read_lines(proc.stdout, lines, first))
    try:
        async with asyncio.timeout(10):
            # Card A is held on the reader: its frame repeats every 20 ms. The probe opens the port at some point
            # (opening flushes what was written before); the repeats make the first read whenever that is.
            while not first.is_set():
                pty.write(GARBAGE + KNOWN_FRAME)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(first.wait(), 0.02)
            # Still held after it was read: 20 more repeats must not count as a second card.
            for _ in range(20):
                pty.write(KNOWN_FRAME + GARBAGE)
                await asyncio.sleep(0.02)
            # Card B; the probe must stop by itself after this second card.
            while proc.returncode is None:
                pty.write(GARBAGE + rdm_frame(CARD_B))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.02)
            await reader
            err = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()
    assert (proc.returncode, err) == (0, ""), (proc.returncode, err, lines)
    assert lines == [f'{{"id_tag": "{CARD_A}"}}\n', f'{{"id_tag": "{CARD_B}"}}\n']
    assert [json.loads(line) for line in lines] == [{"id_tag": CARD_A}, {"id_tag": CARD_B}]


async def test_probe_rfid_human_ascii(pty: Pty) -> None:
    proc = await asyncio.create_subprocess_exec(
        *EVSECTL, "probe", "rfid", "--port", pty.path, "--protocol", "ascii", "--baudrate", "19200",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(), cwd=REPO_ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(10):
            # Without --json the probe says on stderr when the port is open: only then is the card presented.
            hint = (await proc.stderr.readline()).decode()
            assert hint == f"reading ascii cards on {pty.path} at 19200 baud; present a card\n"
            pty.write(b"noise without end of line\x00\r\n04:a1:b2:c3\r\n")
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (proc.returncode, out.decode(), err.decode()) == (0, "card 04A1B2C3\n", "")


async def test_probe_rfid_no_card_within_timeout(pty: Pty) -> None:
    line = error_line(await evsectl("probe", "rfid", "--port", pty.path, "--json", "--timeout", "0.3"), 1)
    assert line == "evsectl: no card read within 0.3 s"


async def test_probe_rfid_missing_port(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyUSB9")
    res = await evsectl("probe", "rfid", "--port", port, "--json")
    assert (res.returncode, res.stdout) == (1, ""), res
    assert "Traceback" not in res.stderr
    assert res.stderr.splitlines()[-1] == f"evsectl: {port}: no such device", res.stderr


async def test_probe_rfid_missing_port_is_one_line(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyUSB9")
    line = error_line(await evsectl("probe", "rfid", "--port", port, "--json"), 1)
    assert line == f"evsectl: {port}: no such device"


async def test_probe_rfid_unknown_protocol(pty: Pty) -> None:
    line = error_line(await evsectl("probe", "rfid", "--port", pty.path, "--protocol", "wiegand"), 2)
    assert line == "evsectl: unknown RFID protocol 'wiegand' (known: ascii, pn532, rdm6300)"


@pytest.mark.parametrize(("args", "message"), [(["--count", "0"], "evsectl: --count must be at least 1"),
                                               (["--timeout", "0"], "evsectl: timeout must be positive")])
async def test_probe_rfid_bad_numbers(pty: Pty, args: list[str], message: str) -> None:
    assert error_line(await evsectl("probe", "rfid", "--port", pty.path, *args), 2) == message
