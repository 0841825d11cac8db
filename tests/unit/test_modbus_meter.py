"""ModbusBus / ModbusMeter / probe_meter against a real pymodbus server (modbus_sim), RTU frames over a pty pair."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from modbus_sim import MeterServer, frame_fields

from evsed.board.rpi.meter import MeterError, MeterSample, ModbusBus, ModbusMeter
from evsed.board.rpi.meter_models import MeterModel, encode, load_model
from evsed.board.rpi.probe import probe_meter

METERS_DIR = Path(__file__).resolve().parents[2] / "hw" / "meters"
MODEL_FILES = sorted(METERS_DIR.glob("*.toml"))
TIMEOUT = 0.2

# Realistic values in base units: 230.1 V, 15.5 A, 10694 W over three phases, 12345.6 kWh, 50 Hz.
VALUES = {
    "voltage_l1": 230.1,
    "voltage_l2": 231.4,
    "voltage_l3": 229.8,
    "current_l1": 15.5,
    "current_l2": 15.25,
    "current_l3": 15.75,
    "power_l1": 3564.0,
    "power_l2": 3529.0,
    "power_l3": 3601.0,
    "power_total": 10694.0,
    "frequency": 50.0,
    "energy_import": 12345.6e3,
    "energy_export": 123.4e3,
}


def _approx(model: MeterModel, name: str) -> object:
    q = model.quantities[name]
    if q.type == "float32":
        return pytest.approx(VALUES[name], rel=1e-6)
    return pytest.approx(VALUES[name], abs=abs(q.scale) / 2)


def _rtu(port: str, **kw: float) -> ModbusBus:
    return ModbusBus.rtu(port, timeout_s=TIMEOUT, **kw)  # type: ignore[arg-type]


def _check_sample(model: MeterModel, s: MeterSample) -> None:
    phases = (1, 2, 3)
    for field, prefix in (("voltage_v", "voltage"), ("current_a", "current")):
        got = getattr(s, field)
        for i in phases:
            name = f"{prefix}_l{i}"
            if name in model.quantities:
                assert got[i - 1] == _approx(model, name), name
            else:
                assert got[i - 1] is None, name
    if "power_total" in model.quantities:
        assert s.power_w == _approx(model, "power_total")
    else:
        per_phase = [VALUES[f"power_l{i}"] for i in phases if f"power_l{i}" in model.quantities]
        assert s.power_w == pytest.approx(sum(per_phase))
    assert s.energy_import_wh == _approx(model, "energy_import")
    assert s.energy_export_wh == _approx(model, "energy_export")
    assert s.frequency_hz == _approx(model, "frequency")


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
async def test_round_trip_every_model_over_rtu(path: Path) -> None:
    model = load_model(str(path))
    async with MeterServer.rtu(model, VALUES, device_id=7) as srv:
        bus = _rtu(srv.port)
        try:
            sample = await ModbusMeter(bus, model, 7).read()
        finally:
            await bus.close()
    _check_sample(model, sample)
    # One request per block of the plan, exactly as planned, nothing else on the wire.
    plan = [(7, b.function, b.address, b.count) for b in model.read_plan()]
    assert [frame_fields(f) for f in srv.frames] == plan
    assert srv.requests == plan


async def test_values_follow_the_meter() -> None:
    model = load_model("sdm630")
    async with MeterServer.rtu(model, VALUES) as srv:
        meter = ModbusMeter(_rtu(srv.port), model)
        assert (await meter.read()).power_w == pytest.approx(10694.0)
        srv.set("power_total", -1500.0)
        srv.set("energy_import", 12346.1e3)
        s = await meter.read()
        assert s.power_w == pytest.approx(-1500.0)
        assert s.energy_import_wh == pytest.approx(12346.1e3, rel=1e-6)
        await meter.bus.close()


async def test_sdm630_reads_with_three_requests() -> None:
    model = load_model("sdm630")
    async with MeterServer.rtu(model, VALUES) as srv:
        meter = ModbusMeter(_rtu(srv.port), model)
        await meter.read()
        await meter.read()
        await meter.bus.close()
    assert len(srv.frames) == 6
    assert all(count <= 80 for _, _, _, count in map(frame_fields, srv.frames))


async def test_em340_registers_are_low_word_first() -> None:
    model = load_model("em340")
    async with MeterServer.rtu(model, VALUES) as srv:
        image = srv.devices[1].image[4]
        assert [image[0x00], image[0x01]] == [2301, 0]  # 230.1 V in 0.1 V, low word first
        assert [image[0x34], image[0x35]] == [0xE240, 0x0001]  # 12345.6 kWh = 123456 x 0.1 kWh = 0x1E240
        srv.set("energy_import", 7_000_000.0)
        assert [image[0x34], image[0x35]] == [70000 - 0x10000, 1]
        meter = ModbusMeter(_rtu(srv.port), model)
        assert (await meter.read()).energy_import_wh == 7_000_000.0
        await meter.bus.close()


async def test_abb_energy_is_u64() -> None:
    model = load_model("abb-b23")
    big = 5_000_000_000 * 10.0  # 5e9 counts of 10 Wh: needs more than 32 bits
    async with MeterServer.rtu(model, {**VALUES, "energy_import": big}) as srv:
        assert [srv.devices[1].image[3][0x5000 + i] for i in range(4)] == [0, 1, 0x2A05, 0xF200]
        meter = ModbusMeter(_rtu(srv.port), model)
        assert (await meter.read()).energy_import_wh == big
        await meter.bus.close()


# --- failures ---------------------------------------------------------------------------------------------------


async def test_timeout_then_recovery(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    model = load_model("sdm630")
    async with MeterServer.rtu(model, VALUES) as srv:
        meter = ModbusMeter(_rtu(srv.port, retries=1), model)
        srv.pause()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(MeterError) as ei:
            await meter.read()
        elapsed = loop.time() - t0
        assert ei.value.kind == "timeout"
        assert "no answer" in str(ei.value)
        assert 2 * TIMEOUT * 0.9 <= elapsed < 2 * TIMEOUT + 0.5  # first request: tried twice, then gave up
        assert len(srv.frames) == 2 and not srv.requests
        srv.resume()
        _check_sample(model, await meter.read())
        await meter.bus.close()
    # pymodbus logs every unanswered request at ERROR; the bus keeps it quiet (the caller logs once).
    assert not [r for r in caplog.records if r.name.startswith("pymodbus") and r.levelno >= logging.WARNING]


async def test_crc_errors_then_recovery() -> None:
    model = load_model("sdm120")
    async with MeterServer.rtu(model, VALUES) as srv:
        meter = ModbusMeter(_rtu(srv.port, retries=1), model)
        srv.corrupt(2)  # the request and its retry both get a bad CRC
        with pytest.raises(MeterError) as ei:
            await meter.read()
        assert ei.value.kind == "crc"
        assert "CRC" in str(ei.value)
        assert len(srv.requests) == 2  # the server did answer both
        _check_sample(model, await meter.read())
        srv.corrupt(1)  # a single bad frame is absorbed by the retry
        _check_sample(model, await meter.read())
        await meter.bus.close()


async def test_meter_disappears_and_returns() -> None:
    model = load_model("em340")
    async with MeterServer.rtu(model, VALUES) as srv:
        meter = ModbusMeter(_rtu(srv.port, retries=0), model)
        _check_sample(model, await meter.read())
        srv.close()
        for _ in range(2):
            with pytest.raises(MeterError) as ei:
                await meter.read()
            assert ei.value.kind == "io"
        assert str(ei.value) == f"{srv.port}: no such device"
        srv.reopen()
        _check_sample(model, await meter.read())
        await meter.bus.close()


async def test_exception_response() -> None:
    abb = load_model("abb-b23")
    async with MeterServer.rtu(abb, VALUES) as srv:
        meter = ModbusMeter(_rtu(srv.port), load_model("sdm630"))
        with pytest.raises(MeterError) as ei:
            await meter.read()
        assert (ei.value.kind, ei.value.exception_code) == ("exception", 2)
        assert "illegal data address" in str(ei.value)
        await meter.bus.close()


async def test_missing_port(tmp_path: Path) -> None:
    meter = ModbusMeter(_rtu(str(tmp_path / "ttyUSB9")), load_model("sdm630"))
    with pytest.raises(MeterError) as ei:
        await meter.read()
    assert ei.value.kind == "io"
    assert str(ei.value) == f"{tmp_path / 'ttyUSB9'}: no such device"


async def test_two_meters_on_one_bus_never_interleave() -> None:
    sdm, em = load_model("sdm630"), load_model("em340")
    em_values = {**VALUES, "power_total": 2000.0}
    async with MeterServer.rtu(sdm, VALUES, device_id=1, others={2: (em, em_values)}) as srv:
        bus = _rtu(srv.port)
        m1, m2 = ModbusMeter(bus, sdm, 1), ModbusMeter(bus, em, 2)
        results = await asyncio.gather(*(m.read() for _ in range(5) for m in (m1, m2)))
        await bus.close()
    assert srv.overlaps == 0
    for i, s in enumerate(results):
        assert s.power_w == pytest.approx(10694.0 if i % 2 == 0 else 2000.0)
        assert s.voltage_v[0] == pytest.approx(230.1, rel=1e-6)
    devices = [d for d, _, _, _ in map(frame_fields, srv.frames)]
    assert devices.count(1) == 5 * 3 and devices.count(2) == 5 * 4
    assert 1 in devices[: len(devices) // 2] and 2 in devices[: len(devices) // 2]  # really concurrent
    assert len(srv.requests) == len(srv.frames)


async def test_tcp_meter() -> None:
    model = load_model("abb-b24")
    async with MeterServer.tcp(model, VALUES, device_id=3) as srv:
        bus = ModbusBus.tcp(srv.host, srv.port, timeout_s=TIMEOUT)
        meter = ModbusMeter(bus, model, 3)
        _check_sample(model, await meter.read())
        srv.set("power_total", 42.0)
        assert (await meter.read()).power_w == pytest.approx(42.0)
        await bus.close()
    assert len(srv.requests) == 2 * len(model.read_plan())


async def test_tcp_connection_refused() -> None:
    async with MeterServer.tcp(load_model("sdm630"), VALUES) as srv:
        port = srv.port
    bus = ModbusBus.tcp("127.0.0.1", port, timeout_s=TIMEOUT)
    with pytest.raises(MeterError) as ei:
        await ModbusMeter(bus, load_model("sdm630")).read()
    assert ei.value.kind == "io"
    assert "cannot connect" in str(ei.value)
    await bus.close()


# --- probe_meter -------------------------------------------------------------------------------------------------


async def _probe(*args: str, **kw: object) -> tuple[int, str]:
    out = io.StringIO()
    # probe_meter runs its own event loop (it is a CLI function); the server lives in this one.
    code = await asyncio.to_thread(probe_meter, *args, out=out, timeout_s=TIMEOUT, **kw)  # type: ignore[arg-type]
    return code, out.getvalue()


async def test_probe_json(capsys: pytest.CaptureFixture[str]) -> None:
    model = load_model("sdm630")
    async with MeterServer.rtu(model, VALUES, device_id=5) as srv:
        code, out = await _probe(srv.port, "sdm630", address=5, as_json=True)
    assert code == 0, capsys.readouterr().err
    data = json.loads(out)
    assert data["model"] == "sdm630" and data["address"] == 5
    assert data["voltage_v"] == [230.1, 231.4, 229.8]
    assert data["current_a"] == [15.5, 15.25, 15.75]
    assert data["power_w"] == 10694.0
    assert data["energy_import_wh"] == pytest.approx(12345.6e3, rel=1e-6)
    assert data["frequency_hz"] == 50.0
    assert capsys.readouterr().err == ""


async def test_probe_json_single_phase_over_tcp() -> None:
    model = load_model("sdm120")
    async with MeterServer.tcp(model, VALUES) as srv:
        code, out = await _probe(f"tcp://127.0.0.1:{srv.port}", "sdm120", as_json=True)
    assert code == 0
    data = json.loads(out)
    assert data["voltage_v"] == [230.1] and data["current_a"] == [15.5]
    assert data["power_w"] == 3564.0  # no total register: sum of the phases


async def test_probe_table() -> None:
    async with MeterServer.rtu(load_model("abb-b23"), VALUES) as srv:
        code, out = await _probe(srv.port, "abb-b23")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("abb-b23 (ABB B23")
    assert lines[2].split() == ["voltage", "V", "230.1", "231.4", "229.8"]
    assert "10694" in out and "12345.60" in out and "50.00" in out


async def test_probe_missing_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = await _probe(str(tmp_path / "ttyUSB0"), "sdm630")
    assert (code, out) == (1, "")
    assert capsys.readouterr().err == f"evsectl: {tmp_path / 'ttyUSB0'}: no such device\n"


@pytest.fixture
def silent_port(tmp_path: Path) -> Iterator[str]:
    """A serial port with nobody on the other end."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "ttyS9"
    link.symlink_to(os.ttyname(slave))
    yield str(link)
    os.close(master)
    os.close(slave)


async def test_probe_no_answer(silent_port: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = await _probe(silent_port, "sdm120", address=3)
    assert code == 1
    assert capsys.readouterr().err == (
        f"evsectl: no answer from meter 3 on {silent_port} at 2400 8N1 (timeout 0.2 s): "
        "check wiring, address, baud rate and parity\n"
    )


async def test_probe_overrides_serial_settings(silent_port: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = await _probe(silent_port, "sdm120", baudrate=9600, parity="odd")
    assert code == 1
    err = capsys.readouterr().err
    # Depending on the kernel a pty refuses parity (termios EINVAL: "cannot open at ...") or accepts it and
    # nobody answers; either way the settings used are the overridden ones and the error is one line.
    assert " at 9600 8O1" in err and "2400" not in err and err.count("\n") == 1


async def test_probe_wrong_model_exception(capsys: pytest.CaptureFixture[str]) -> None:
    async with MeterServer.rtu(load_model("abb-b23"), VALUES) as srv:
        code, out = await _probe(srv.port, "sdm630")
    assert (code, out) == (1, "")
    assert capsys.readouterr().err == (
        "evsectl: meter 1 answered with Modbus exception 2 (illegal data address): is it really a sdm630?\n"
    )


async def test_probe_wrong_model_nonsense(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An integer meter at the Eastron addresses: its registers read as floats give denormals and garbage.
    text = (METERS_DIR / "sdm630.toml").read_text()
    text = text.replace('type = "float32"', 'type = "int32"\nword_order = "little"')
    text = text.replace("scale = 1.0", "scale = 0.1")
    path = tmp_path / "intmeter.toml"
    path.write_text(text.replace('name = "sdm630"', 'name = "intmeter"'))
    async with MeterServer.rtu(load_model(str(path)), VALUES) as srv:
        code, _ = await _probe(srv.port, "sdm630")
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("evsectl: meter 1 answered with implausible values (")
    assert err.endswith(": is it really a sdm630?\n")
    assert err.count("\n") == 1


async def test_probe_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = await _probe("/dev/null", "sdm999")
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("evsectl: no meter named 'sdm999' (known: ")
    assert "sdm630" in err and "em340" in err and err.count("\n") == 1


async def test_probe_bad_parity(silent_port: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = await _probe(silent_port, "sdm630", parity="X")
    assert code == 2
    assert capsys.readouterr().err == "evsectl: bad parity 'X' (expected N, E or O)\n"


async def test_probe_bad_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("phases = 3\n")
    code, _ = await _probe("/dev/null", str(path))
    assert code == 2
    assert capsys.readouterr().err == f"evsectl: {path}: quantities: missing\n"


def test_encode_used_by_the_simulator_matches_the_model() -> None:
    """Guard for the helper itself: the sim stores exactly what encode() gives, at the model's addresses."""
    model = load_model("sdm630")
    srv = MeterServer.rtu(model, VALUES)
    q = model.quantities["power_total"]
    assert [srv.devices[1].image[4][q.address + i] for i in range(2)] == encode(q, 10694.0) == [0x4627, 0x1800]
