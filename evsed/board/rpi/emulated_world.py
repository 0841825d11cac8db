"""A whole emulated charger for a board profile: the physical world below the Raspberry Pi drivers.

For every device the profile names it provides the lowest layer the real driver talks to, and nothing above it:
- a fake sysfs PWM tree (`pwmchipN/device`, `pwmM/period|duty_cycle|enable`) that the real `SysfsPwm` writes;
- ADS1115 chips on emulated I2C buses and MCP3008 chips on emulated SPI, whose pin voltages come from the pilot
  line (through the profile's own calibration, inverted) and from the plugged cable's PP resistor;
- gpiozero mock pins: relay outputs whose aux contacts (feedback inputs) follow after a travel time, an RCD input;
- an EV model that reacts to the duty cycle the driver wrote into sysfs, like a car reacts to the pilot.
Used by the integration tests, the latency bench and anyone trying the rpi backend without a Pi. Modbus meters and
RFID readers are not here: they are real pymodbus servers and pty pairs (see the tests).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from evsed.board.rpi.adc import SMBusLike, SpiLike
from evsed.board.rpi.board import DeviceFactory
from evsed.board.rpi.emulated import EmulatedAds1115, EmulatedMcp3008, PilotLine
from evsed.board.rpi.profile import BoardProfile, ConnectorSpec
from evsed.core.deadlines import Deadlines

_PLATEAU_V = {"A": 12.0, "B": 9.0, "C": 6.0, "D": 3.0, "E": 0.0}
PERIOD_NS = 1_000_000
# How long the pilot computed from the sysfs files is reused: shorter than one 1 kHz period, so a new duty is
# seen within a millisecond, but a 200-conversion burst does not re-read the files 200 times.
LINE_CACHE_S = 0.0005


class WorldPin(MockPWMPin):  # type: ignore[misc]
    """A mock pin that tells the world when the driver changes an output."""

    on_output: Any = None

    def _change_state(self, value: Any) -> bool:
        changed = bool(super()._change_state(value))
        hook = self.on_output
        if changed and hook is not None and self._function == "output":
            hook(bool(value))
        return changed


@dataclass
class EmulatedEV:
    plugged: bool = False
    wants_energy: bool = True
    needs_ventilation: bool = False  # state D instead of C
    diode_ok: bool = True
    pilot_shorted: bool = False  # state E
    cable_ohm: float = 220.0  # PP coding of the plugged cable (220 ohm = 32 A)
    ignores_pwm: bool = False  # stays in C whatever the duty


@dataclass
class _Conn:
    spec: ConnectorSpec
    line: PilotLine
    duty_path: Path
    enable_path: Path
    inverted: bool
    ev: EmulatedEV = field(default_factory=EmulatedEV)
    contactor_closed: bool = False  # the main contacts (after travel time)
    welded: bool = False
    stuck_open: bool = False
    locked: bool = False
    lock_jammed: bool = False
    changed_ns: int = 0  # when the world last changed the pilot (for latency figures)
    line_valid_until: float = 0.0  # the pilot line computed from sysfs is reused until then


def _inverse(points: tuple[tuple[float, float], tuple[float, float]]) -> Any:
    (a1, v1), (a2, v2) = points

    def pin(pilot_v: float) -> float:
        return a1 + (pilot_v - v1) * (a2 - a1) / (v2 - v1)

    return pin


class EmulatedDevices(DeviceFactory):
    def __init__(self, world: EmulatedWorld) -> None:
        super().__init__(pin_factory=world.pins, sysfs_pwm_root=world.sysfs_root)
        self.world = world

    def smbus(self, bus: int) -> SMBusLike:
        return self.world.i2c[bus]

    def spi(self, bus: int, device: int, speed_hz: int) -> SpiLike:
        return self.world.spi[(bus, device)]


class EmulatedWorld:
    def __init__(self, profile: BoardProfile, root: Path, *, feedback_delay_s: float = 0.02,
                 lock_move_s: float = 0.05) -> None:
        self.profile = profile
        self.sysfs_root = root / "sys-class-pwm"
        self.feedback_delay_s = feedback_delay_s
        self.lock_move_s = lock_move_s
        self.pins = MockFactory(pin_class=WorldPin)
        self._lock = threading.RLock()
        self.rcd_tripped = False
        self.open_latencies_ns: deque[int] = deque(maxlen=100_000)
        self._deadlines = Deadlines("emulated-world")
        self.conn: dict[int, _Conn] = {}
        chips: dict[str, Path] = {}
        for spec in profile.connectors:
            chip_dir = chips.get(spec.pwm.chip)
            if chip_dir is None:
                chip_dir = self._make_chip(root, spec.pwm.chip, len(chips))
                chips[spec.pwm.chip] = chip_dir
            pwm_dir = chip_dir / f"pwm{spec.pwm.channel}"
            pwm_dir.mkdir(exist_ok=True)
            for name, value in (("period", "0"), ("duty_cycle", "0"), ("enable", "0"), ("polarity", "normal")):
                (pwm_dir / name).write_text(value + "\n")
            line = PilotLine(duty=100.0, high_v=12.0, low_v=12.0)
            self.conn[spec.id] = _Conn(spec, line, pwm_dir / "duty_cycle", pwm_dir / "enable", spec.pwm.inverted)
        self.i2c: dict[int, EmulatedAds1115] = {}
        self.spi: dict[tuple[int, int], EmulatedMcp3008] = {}
        self._build_adcs()
        self._wire_pins()

    # --- construction -----------------------------------------------------------------------------------------
    def _make_chip(self, root: Path, chip: str, index: int) -> Path:
        device_name = "pwm" if chip in ("auto",) or chip.startswith("pwmchip") else chip
        number = int(chip[len("pwmchip"):]) if chip.startswith("pwmchip") else index
        devices = root / "devices" / f"soc{index}" / device_name
        devices.mkdir(parents=True, exist_ok=True)
        chip_dir = self.sysfs_root / f"pwmchip{number}"
        chip_dir.mkdir(parents=True, exist_ok=True)
        (chip_dir / "npwm").write_text("4\n")
        (chip_dir / "export").write_text("")
        (chip_dir / "unexport").write_text("")
        link = chip_dir / "device"
        if not link.exists():
            os.symlink(devices, link)
        return chip_dir

    def _build_adcs(self) -> None:
        ads_chips: dict[int, dict[int, dict[int, Any]]] = {}  # bus -> address -> channel -> source
        mcp: dict[tuple[int, int], dict[int, Any]] = {}
        for adc in self.profile.adcs.values():
            if adc.type == "ads1115":
                ads_chips.setdefault(adc.i2c_bus, {}).setdefault(adc.address, {})
            else:
                mcp.setdefault((adc.spi_bus, adc.spi_device), {})
        for cid, c in self.conn.items():
            p = c.spec.pilot
            adc = self.profile.adcs[p.adc]
            to_pin = _inverse(p.calibration)
            if p.method == "peak-detector":
                low_pin = _inverse(p.calibration_low) if p.calibration_low else to_pin
                srcs = ads_chips[adc.i2c_bus][adc.address]
                assert p.high_channel is not None and p.low_channel is not None
                srcs[p.high_channel] = lambda cid=cid, f=to_pin: f(self._line(cid).peak())
                srcs[p.low_channel] = lambda cid=cid, f=low_pin: f(self._line(cid).valley())
            else:
                assert p.channel is not None
                mcp[(adc.spi_bus, adc.spi_device)][p.channel] = \
                    lambda t, cid=cid, f=to_pin: f(self._line(cid).voltage_at(t))
            if c.spec.pp is not None:
                pp = c.spec.pp
                pp_adc = self.profile.adcs[pp.adc]
                if pp_adc.type == "ads1115":
                    ads_chips[pp_adc.i2c_bus][pp_adc.address][pp.channel] = lambda cid=cid: self._pp_volts(cid)
                else:
                    mcp[(pp_adc.spi_bus, pp_adc.spi_device)][pp.channel] = lambda t, cid=cid: self._pp_volts(cid)
        self.i2c = {bus: EmulatedAds1115(chips) for bus, chips in ads_chips.items()}
        self.spi = {key: EmulatedMcp3008(srcs, vref_v=next(
            a.vref_v for a in self.profile.adcs.values() if a.type == "mcp3008"
            and (a.spi_bus, a.spi_device) == key)) for key, srcs in mcp.items()}

    def _wire_pins(self) -> None:
        for cid, c in self.conn.items():
            spec = c.spec
            out = self.pins.pin(spec.contactor.pin)
            out.on_output = lambda level, cid=cid: self._relay_commanded(cid, level)
            if spec.lock is not None:
                lock = self.pins.pin(spec.lock.pin)
                lock.on_output = lambda level, cid=cid: self._lock_commanded(cid, level)

    def settle(self) -> None:
        """Drive every input to the physical state. Call after the board opened its devices: configuring a mock
        input applies its pull resistor, which would otherwise hide what the world says."""
        for c in self.conn.values():
            spec = c.spec
            if spec.contactor.feedback is not None:
                self._drive(spec.contactor.feedback.pin, spec.contactor.feedback.active_high, c.contactor_closed)
            if spec.lock is not None and spec.lock.feedback is not None:
                self._drive(spec.lock.feedback.pin, spec.lock.feedback.active_high, c.locked)
        if self.profile.rcd is not None:
            self._drive(self.profile.rcd.pin, self.profile.rcd.active_high, self.rcd_tripped)

    def _drive(self, pin: int, active_high: bool, active: bool) -> None:
        p = self.pins.pin(pin)
        if active == active_high:
            p.drive_high()
        else:
            p.drive_low()

    # --- the physics ------------------------------------------------------------------------------------------
    def _duty(self, c: _Conn) -> float:
        """What the pilot does, from what the driver wrote into sysfs (100 = +12 V DC, 0 = -12 V DC)."""
        try:
            enabled = c.enable_path.read_text().strip() == "1"
            duty_ns = int(c.duty_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0.0
        if not enabled:
            return 0.0  # a disabled output idles low: -12 V through a non-inverting stage
        duty = 100.0 * duty_ns / PERIOD_NS
        return 100.0 - duty if c.inverted else duty

    def _line(self, cid: int) -> PilotLine:
        c = self.conn[cid]
        with self._lock:
            now = time.monotonic()
            if now < c.line_valid_until:
                return c.line  # a burst reads the line hundreds of times within a few ms
            c.line_valid_until = now + LINE_CACHE_S
            duty = max(0.0, min(100.0, self._duty(c)))
            ev = c.ev
            pwm_on = 0.0 < duty < 100.0
            if duty == 0.0:
                high = low = -12.0  # the EVSE drives state F
            elif ev.pilot_shorted:
                high = low = 0.0
            else:
                state = "A"
                if ev.plugged:
                    charging = ev.wants_energy and (pwm_on or ev.ignores_pwm)
                    state = ("D" if ev.needs_ventilation else "C") if charging else "B"
                high = _PLATEAU_V[state]
                # The EV's diode blocks the negative half; without it the low plateau follows the EV's resistor.
                low = (-12.0 if ev.diode_ok or not ev.plugged else -high) if pwm_on else high
            c.line.set(duty=duty, high_v=high, low_v=low)
        return c.line

    def _pp_volts(self, cid: int) -> float:
        c = self.conn[cid]
        pp = c.spec.pp
        assert pp is not None
        r = c.ev.cable_ohm if c.ev.plugged else math.inf
        if math.isinf(r):
            return pp.supply_v
        return pp.supply_v * r / (r + pp.pullup_ohm)

    def _relay_commanded(self, cid: int, closed: bool) -> None:
        c = self.conn[cid]
        if not closed and c.changed_ns:
            # From the physical change to the coil command: sampling, debounce, supervisor, GPIO write.
            self.open_latencies_ns.append(time.monotonic_ns() - c.changed_ns)
            c.changed_ns = 0
        self._deadlines.after(self.feedback_delay_s, self._relay_moved, cid, closed)

    def _relay_moved(self, cid: int, coil: bool) -> None:
        with self._lock:
            c = self.conn[cid]
            c.contactor_closed = (coil and not c.stuck_open) or c.welded
            closed = c.contactor_closed
        fb = c.spec.contactor.feedback
        if fb is not None:
            self._drive(fb.pin, fb.active_high, closed)

    def _lock_commanded(self, cid: int, level: bool) -> None:
        self._deadlines.after(self.lock_move_s, self._lock_moved, cid, level)

    def _lock_moved(self, cid: int, level: bool) -> None:
        with self._lock:
            c = self.conn[cid]
            if not c.lock_jammed:
                c.locked = level
            locked = c.locked
        lock = c.spec.lock
        if lock is not None and lock.feedback is not None:
            self._drive(lock.feedback.pin, lock.feedback.active_high, locked)

    # --- what a test or bench does to the world ---------------------------------------------------------------
    def ev(self, connector: int, **changes: Any) -> None:
        """Change the EV: plugged, wants_energy, needs_ventilation, diode_ok, pilot_shorted, cable_ohm..."""
        with self._lock:
            c = self.conn[connector]
            for k, v in changes.items():
                if not hasattr(c.ev, k):
                    raise AttributeError(f"EmulatedEV has no {k!r}")
                setattr(c.ev, k, v)
            c.changed_ns = time.monotonic_ns()
            c.line_valid_until = 0.0

    def fault(self, connector: int, *, welded: bool | None = None, stuck_open: bool | None = None,
              lock_jammed: bool | None = None) -> None:
        with self._lock:
            c = self.conn[connector]
            if welded is not None:
                c.welded = welded
            if stuck_open is not None:
                c.stuck_open = stuck_open
            if lock_jammed is not None:
                c.lock_jammed = lock_jammed

    def trip_rcd(self, tripped: bool) -> None:
        assert self.profile.rcd is not None
        self.rcd_tripped = tripped
        self._drive(self.profile.rcd.pin, self.profile.rcd.active_high, tripped)

    def adc_for(self, connector: int) -> EmulatedAds1115 | EmulatedMcp3008:
        adc = self.profile.adcs[self.conn[connector].spec.pilot.adc]
        return self.i2c[adc.i2c_bus] if adc.type == "ads1115" else self.spi[(adc.spi_bus, adc.spi_device)]

    def coil(self, connector: int) -> bool:
        """The contactor coil output as the driver left it (active level resolved)."""
        spec = self.conn[connector].spec.contactor
        return bool(self.pins.pin(spec.pin).state) == spec.active_high

    def duty(self, connector: int) -> float:
        return self._duty(self.conn[connector])

    def devices(self) -> EmulatedDevices:
        return EmulatedDevices(self)

    def close(self) -> None:
        self._deadlines.close()
        self.pins.reset()


class EmulatedSim:
    """`evsectl sim ...` for the rpi backend on an emulated world (EVSED_EMULATE=1): the same commands as the sim
    board, acting on the physics below the real Pi drivers."""

    FAULT_KINDS = ("diode", "pilot-short", "contactor-welded", "contactor-stuck", "lock-failure", "ground-fault",
                   "adc-failure", "cable-short")

    def __init__(self, world: EmulatedWorld, board: Any) -> None:
        self.world = world
        self.board = board
        self.connectors = len(world.conn)

    @property
    def open_latencies_ns(self) -> deque[int]:
        return self.world.open_latencies_ns

    def swipe(self, id_tag: str) -> None:
        from evsed.board.interface import TagRead

        self.board.inject(TagRead(id_tag))

    def plug(self, connector: int, max_current_a: float = 32.0, phases: int = 3) -> None:
        self.world.ev(connector, plugged=True, wants_energy=True)

    def unplug(self, connector: int) -> None:
        self.world.ev(connector, plugged=False)

    def suspend(self, connector: int) -> None:
        self.world.ev(connector, wants_energy=False)

    def resume(self, connector: int) -> None:
        self.world.ev(connector, wants_energy=True)

    def inject_fault(self, connector: int, kind: str) -> None:
        w = self.world
        if kind == "diode":
            w.ev(connector, diode_ok=False)
        elif kind == "pilot-short":
            w.ev(connector, pilot_shorted=True)
        elif kind == "cable-short":
            w.ev(connector, cable_ohm=30.0)
        elif kind == "contactor-welded":
            w.fault(connector, welded=True)
        elif kind == "contactor-stuck":
            w.fault(connector, stuck_open=True)
        elif kind == "lock-failure":
            w.fault(connector, lock_jammed=True)
        elif kind == "ground-fault" and w.profile.rcd is not None:
            w.trip_rcd(True)
        elif kind == "adc-failure":
            w.adc_for(connector).fail = True
        else:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(self.FAULT_KINDS)}")

    def clear_faults(self, connector: int) -> None:
        w = self.world
        w.ev(connector, diode_ok=True, pilot_shorted=False, cable_ohm=220.0)
        w.fault(connector, welded=False, stuck_open=False, lock_jammed=False)
        if w.profile.rcd is not None and w.rcd_tripped:
            w.trip_rcd(False)
        w.adc_for(connector).fail = False

    def ev_snapshot(self, connector: int) -> dict[str, object]:
        c = self.world.conn[connector]
        return {"plugged": c.ev.plugged, "wants_energy": c.ev.wants_energy, "contact_closed": c.contactor_closed,
                "pwm_duty": self.world.duty(connector), "locked": c.locked}


def emulated_board(profile: BoardProfile, root: Path) -> tuple[Any, EmulatedSim]:
    """The rpi board on an emulated world, for `EVSED_EMULATE=1` runs. Meters and the reader are left out (they
    need a real bus): energy stays at 0 and cards come from `evsectl sim swipe`."""
    import dataclasses

    from evsed.board.rpi.board import RpiBoard

    bare = dataclasses.replace(profile, rfid=None,
                               connectors=tuple(dataclasses.replace(c, meter=None) for c in profile.connectors))
    world = EmulatedWorld(bare, root)
    board = RpiBoard(bare, world.devices())
    world.settle()
    return board, EmulatedSim(world, board)
