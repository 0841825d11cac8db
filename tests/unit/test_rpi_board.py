"""The rpi backend as a whole: the real daemon object with RpiBoard on a board profile (pi-ads1115 and pi-mcp3008),
every device at its lowest layer: fake sysfs PWM, emulated ADS1115/MCP3008 fed by an EV model, gpiozero mock pins
with relays whose aux contacts follow, a real pymodbus SDM630 on a pty, an RDM6300 reader on a pty.
The CSMS is unreachable (offline charging with AllowOfflineTxForUnknownId), so only the board path is under test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from modbus_sim import MeterServer
from test_rfid import rdm_frame

from evsed.board.rpi.board import RpiBoard
from evsed.board.rpi.emulated_world import EmulatedWorld
from evsed.board.rpi.meter_models import load_model
from evsed.config import parse
from evsed.daemon import Daemon

CARD = "0A00C0FFEE"
# IEC 61851 allows 100 ms from the physical change to an open contactor; the exact timing is asserted in virtual
# time (test_iec_sequences.py) and measured by bench/bench_rpi_latency.py. Here, in real time on a shared CI
# machine, the bound has headroom for scheduling noise while still catching a path that waits for something
# (a meter poll, the OCPP loop, a 1 s tick).
OPEN_BOUND_S = 0.25


class Reader:
    """A pty playing the RDM6300 reader."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def card(self, uid: str = CARD) -> None:
        os.write(self.master, rdm_frame(uid))

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


METER_VALUES = {"voltage_l1": 230.0, "voltage_l2": 231.0, "voltage_l3": 229.0, "current_l1": 0.0,
                "current_l2": 0.0, "current_l3": 0.0, "power_total": 0.0, "frequency": 50.0,
                "energy_import": 1_000_000.0}


class Rig:
    def __init__(self, daemon: Daemon, world: EmulatedWorld, meter: MeterServer, reader: Reader) -> None:
        self.daemon, self.world, self.meter, self.reader = daemon, world, meter, reader

    def connector(self, n: int = 1) -> dict[str, Any]:
        return next(c for c in self.daemon.status()["connectors"] if c["id"] == n)

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> float:
        """Wait until predicate() holds; returns the seconds it took."""
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out waiting for {what}; connector: {self.connector()}, "
                                     f"coil {self.world.coil(1)}, duty {self.world.duty(1)}")
            await asyncio.sleep(0.002)
        return time.monotonic() - start

    async def status(self, status: str, n: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        await self.until(lambda: self.connector(n)["status"] == status, f"status {status}", timeout)
        return self.connector(n)

    async def charging(self) -> None:
        self.world.ev(1, plugged=True, wants_energy=True)
        await self.status("Preparing")
        self.reader.card()
        await self.status("Charging")
        await self.until(lambda: self.world.coil(1), "contactor closed")


def config(tmp_path: Path, board: str, overrides: dict[str, Any]) -> Any:
    return parse({
        "charge_point": {"id": "CP-RPI", "vendor": "evsed", "model": "test"},
        "ocpp": {"url": "ws://127.0.0.1:9/ocpp", "reconnect_min_s": 5.0,
                 "config": {"LocalAuthorizeOffline": True, "AllowOfflineTxForUnknownId": True,
                            "MeterValueSampleInterval": 0}},
        "hardware": {"backend": "rpi", "board": board},
        "storage": {"dir": str(tmp_path / "state")},
        "control": {"socket": str(tmp_path / "evsed.sock")},
        "board": overrides,
    }, tmp_path / "evsed.toml")


@pytest.fixture(params=["pi-ads1115", "pi-mcp3008"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    board_name: str = request.param
    model = "sdm630" if board_name == "pi-ads1115" else "sdm120"
    values = dict(METER_VALUES)
    if model == "sdm120":
        values = {k: v for k, v in values.items() if not k.endswith(("l2", "l3")) and k != "power_total"}
        values["power_l1"] = 0.0
    (tmp_path / "state").mkdir()
    reader = Reader()
    async with MeterServer.rtu(load_model(model), values) as meter:
        cfg = config(tmp_path, board_name, {
            "bus": {"rs485": {"port": meter.port, "timeout_s": 0.2, "poll_interval_s": 0.2}},
            "rfid": {"port": reader.path}})
        world = EmulatedWorld(cfg.board, tmp_path / "world")
        board = RpiBoard(cfg.board, world.devices())
        world.settle()
        daemon = Daemon(cfg, board=board)
        task = asyncio.create_task(daemon.run())
        rig = Rig(daemon, world, meter, reader)
        try:
            await rig.status("Available")
            yield rig
        finally:
            daemon._stop.set()
            await asyncio.wait_for(task, 15)
            world.close()
            reader.close()


async def test_safe_at_start_then_a_whole_session(rig: Rig) -> None:
    w = rig.world
    assert not w.coil(1)
    assert w.duty(1) == 100.0  # +12 V DC: state A, nothing offered
    await rig.charging()
    # 32 A offered (the cable's 220 ohm PP coding allows 32 A too): 53.3 % written into sysfs.
    assert w.duty(1) == pytest.approx(53.3)
    c = rig.connector()
    assert (c["offered_current_a"], c["pilot_state"], c["id_tag"]) == (32.0, "C", CARD)
    led = rig.daemon.board._led  # type: ignore[attr-defined]
    assert led is not None and led.pattern == "blink"  # the front LED blinks while charging
    # The meter's reading arrives through real RTU frames.
    rig.meter.set("energy_import", 1_002_500.0)
    await rig.until(lambda: rig.connector()["energy_wh"] == 1_002_500.0, "meter reading")
    # The EV pauses: the contactor opens after the debounce (20 ms) and one 5 ms sample.
    w.ev(1, wants_energy=False)
    took = await rig.until(lambda: not w.coil(1), "contactor open after C -> B")
    assert took < OPEN_BOUND_S, took
    await rig.status("SuspendedEV")
    # Unplugged: the transaction ends, the pilot goes back to +12 V DC.
    w.ev(1, plugged=False)
    await rig.status("Available")
    assert w.duty(1) == 100.0 and not w.coil(1)
    assert led.pattern == "on"


async def test_cable_ampacity_limits_the_offer(rig: Rig) -> None:
    rig.world.ev(1, cable_ohm=680.0)  # a 20 A cable
    await rig.charging()
    await rig.until(lambda: rig.connector()["offered_current_a"] == 20.0, "20 A offered")
    assert rig.world.duty(1) == pytest.approx(33.3)
    # A shorted PP coding: a fault that stops the energy (the contactor opens, under load only for a fault).
    rig.world.ev(1, cable_ohm=30.0)
    await rig.until(lambda: not rig.world.coil(1), "contactor open on a shorted PP")
    await rig.status("Faulted")
    rig.world.ev(1, cable_ohm=220.0)
    await rig.until(lambda: rig.connector()["status"] != "Faulted", "cable fault cleared")


async def test_unplug_and_short_open_the_contactor_fast(rig: Rig) -> None:
    w = rig.world
    await rig.charging()
    w.ev(1, pilot_shorted=True)  # state E
    assert await rig.until(lambda: not w.coil(1), "open on E") < OPEN_BOUND_S
    w.ev(1, pilot_shorted=False)
    await rig.status("Charging")
    await rig.until(lambda: w.coil(1), "closed again")
    w.ev(1, plugged=False)
    assert await rig.until(lambda: not w.coil(1), "open on unplug") < OPEN_BOUND_S


async def test_diode_fault_opens_and_pilot_adc_failure_is_reported_and_recovers(rig: Rig) -> None:
    w = rig.world
    await rig.charging()
    w.ev(1, diode_ok=False)
    assert await rig.until(lambda: not w.coil(1), "open on diode fault") < OPEN_BOUND_S
    c = await rig.status("SuspendedEVSE")
    assert c["error_code"] == "EVCommunicationError"
    w.ev(1, diode_ok=True)
    await rig.status("Charging", timeout=10)  # the diode is re-checked every 5 s
    adc = w.adc_for(1)
    adc.fail = True
    await rig.until(lambda: not w.coil(1), "open on ADC failure")
    c = await rig.status("Faulted")
    assert c["error_code"] == "InternalError"
    adc.fail = False
    await rig.status("Charging", timeout=10)


async def test_meter_failure_and_recovery(rig: Rig) -> None:
    await rig.charging()
    rig.meter.pause()
    c = await rig.status("Faulted")
    assert c["error_code"] == "PowerMeterFailure"
    assert not rig.world.coil(1)
    rig.meter.resume()
    await rig.status("Charging", timeout=10)


async def test_rcd_trip_faults_every_connector(rig: Rig) -> None:
    await rig.charging()
    rig.world.trip_rcd(True)
    assert await rig.until(lambda: not rig.world.coil(1), "open on RCD trip") < OPEN_BOUND_S
    c = await rig.status("Faulted")
    assert c["error_code"] == "GroundFailure"
    rig.world.trip_rcd(False)
    await rig.status("Charging", timeout=10)


async def test_welded_contactor_is_detected(rig: Rig) -> None:
    await rig.charging()
    rig.world.fault(1, welded=True)
    rig.world.ev(1, wants_energy=False)  # the supervisor opens the coil; the contacts stay closed
    c = await rig.status("Faulted")
    assert c["error_code"] == "PowerSwitchFailure"


async def test_reader_gone_is_reported_on_connector_0(rig: Rig) -> None:
    rig.reader.close()
    await rig.until(lambda: rig.daemon.station.cp_status[1] == "ReaderFailure", "ReaderFailure on connector 0")
    # Charging itself is not affected.
    assert rig.connector()["status"] == "Available"


async def test_force_safe_opens_contactor_and_sets_pilot(tmp_path: Path) -> None:
    cfg = config(tmp_path, "pi-ads1115", {})
    world = EmulatedWorld(cfg.board, tmp_path / "world")
    devices = world.devices()
    # Something left the contactor closed and the PWM at 53 % (a crashed daemon).
    from evsed.board.rpi.gpio import Output
    from evsed.board.rpi.sysfs_pwm import SysfsPwm

    out = Output(17, pin_factory=devices.pin_factory)
    out.set(True)
    pwm = SysfsPwm("20c000.pwm", 0, root=devices.sysfs_pwm_root)
    pwm.open()
    pwm.set_duty(53.3)
    assert world.coil(1) and world.duty(1) == pytest.approx(53.3)
    out.close()
    pwm.close()
    assert RpiBoard.force_safe(cfg.board, devices) == []
    assert not world.coil(1)
    assert world.duty(1) == 100.0
    world.close()


async def test_a_hung_adc_transfer_opens_the_contactor_through_the_guard(rig: Rig) -> None:
    w = rig.world
    adc = w.adc_for(1)
    await rig.charging()
    adc.hang_s = 1.0  # the sampling loop blocks inside a read
    took = await rig.until(lambda: not w.coil(1), "contactor open while sampling is stalled")
    assert took < OPEN_BOUND_S, took
    c = await rig.status("Faulted")
    assert c["error_code"] == "InternalError"
    adc.hang_s = 0.0
    await rig.status("Charging", timeout=10)
    assert rig.daemon.board.stalls == 1  # type: ignore[attr-defined]


async def test_a_remote_start_profile_is_the_first_duty_the_ev_sees(rig: Rig) -> None:
    """The profile is installed when the transaction starts, in the same pass as the station's first PWM: the pilot
    must never carry the connector's maximum first (the superseded duty is not written)."""
    written: list[float | None] = []
    board = rig.daemon.board
    real_set_pwm = board.set_pwm

    def recording(connector: int, duty: float | None) -> None:
        if connector == 1:
            written.append(duty)
        real_set_pwm(connector, duty)

    board.set_pwm = recording  # type: ignore[method-assign]
    rig.world.ev(1, plugged=True, wants_energy=True)
    await rig.status("Preparing")
    profile = {"chargingProfileId": 5, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
               "chargingProfileKind": "Relative",
               "chargingSchedule": {"chargingRateUnit": "A",
                                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10}]}}
    assert rig.daemon.remote_start(1, CARD, profile)
    await rig.status("Charging")
    await rig.until(lambda: rig.world.coil(1), "contactor closed")
    assert [d for d in written if d is not None] == [16.6]  # 10 A: 16.6 % (rounded toward less current)
    assert rig.world.duty(1) == pytest.approx(16.6)
    assert (rig.connector()["current_limit_a"], rig.connector()["limit_source"]) == (10.0, "ocpp")
    # The TxProfile ends with its transaction.
    rig.world.ev(1, plugged=False)
    await rig.status("Available")
    assert rig.daemon.smart_charging.profiles.profiles() == []
    assert rig.connector()["limit_source"] == "hardware"
