"""The Raspberry Pi board: one object that turns a board profile into running drivers behind ``Board``.

Two threads, neither of them the daemon's event loop:
- the sampling thread reads every connector's pilot (and PP) each ``sample_interval_ms``, classifies and
  debounces it, and hands changes to the sink (the safety supervisor, which opens a contactor right there);
  it also toggles the optional hardware watchdog pin, so a stalled loop drops the relays in hardware;
- the I/O thread runs an asyncio loop for the Modbus meters and the RFID reader, which may block on a slow
  bus without delaying the pilot.
GPIO inputs (contactor and lock feedback, RCD) report from gpiozero's own threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evsed.board.interface import (
    BoardEvent,
    CableChanged,
    ContactorFeedback,
    Device,
    DeviceFault,
    EventSink,
    LockFeedback,
    MeterReading,
    PilotChanged,
    TagRead,
)
from evsed.board.rpi.adc import (
    AdcError,
    Ads1115,
    BurstPilotSensor,
    CableCodingError,
    Calibration,
    Mcp3008,
    PeakDetectorPilotSensor,
    ProximitySensor,
    SMBusLike,
    SpiLike,
    cable_ampacity,
    open_smbus,
)
from evsed.board.rpi.gpio import Input, Output, StatusLed
from evsed.board.rpi.meter import MeterError, ModbusBus, ModbusMeter
from evsed.board.rpi.meter_models import MeterModelError, load_model
from evsed.board.rpi.profile import BoardProfile, BusSpec, ConnectorSpec
from evsed.board.rpi.rfid import SerialRfidReader
from evsed.board.rpi.sysfs_pwm import SysfsPwm
from evsed.core.iec61851 import PilotFilter
from evsed.core.pilot import PilotState, classify

log = logging.getLogger(__name__)

# A calibrated pilot voltage beyond this is not a pilot state but a broken measurement (the plateaus are +-12 V
# with 5 % tolerance, plus margin for the divider).
PILOT_RANGE_V = 14.0
PP_INTERVAL_S = 0.25
PILOT_ERROR_CODE = "InternalError"  # OCPP: "error in internal hard- or software component"
# A sampling loop that has not finished a cycle for this long (a hung I2C/SPI transfer, a starved thread) can no
# longer see the pilot: a guard thread opens the contactors, so the 100 ms rule does not depend on the loop.
STALL_MIN_S = 0.06


class BoardSetupError(Exception):
    """A device named in the profile cannot be opened (missing model file, bad pin...)."""


@dataclass
class DeviceFactory:
    """Opens the real devices. Tests, benches and dev runs substitute emulated ones at the lowest layer
    (SMBus/SPI transactions, gpiozero mock pins, a fake sysfs tree)."""

    pin_factory: Any = None  # None: gpiozero's default (lgpio on a Pi)
    sysfs_pwm_root: Path = Path("/sys/class/pwm")

    def smbus(self, bus: int) -> SMBusLike:
        return open_smbus(bus)

    def spi(self, bus: int, device: int, speed_hz: int) -> SpiLike:
        from evsed.board.rpi.spi import LinuxSpi

        return LinuxSpi(bus, device, speed_hz)


@dataclass
class _Connector:
    spec: ConnectorSpec
    pwm: SysfsPwm
    contactor: Output
    sensor: PeakDetectorPilotSensor | BurstPilotSensor
    pilot_filter: PilotFilter
    pp: ProximitySensor | None = None
    lock: Output | None = None
    contactor_feedback: Input | None = None
    lock_feedback: Input | None = None
    meter: ModbusMeter | None = None
    duty: float | None = None
    pilot_failed: bool = False
    cable: float | str | None = "unknown"  # last reported ampacity; "fault" while the coding is unreadable
    next_pp: float = 0.0
    meter_failed: bool = False
    lock_timer: threading.Timer | None = None
    lock_failed: bool = False
    lock_wanted: bool = False


@dataclass
class _Bus:
    spec: BusSpec
    bus: ModbusBus
    meters: list[tuple[int, ModbusMeter]] = field(default_factory=list)


class RpiBoard:
    def __init__(self, profile: BoardProfile, devices: DeviceFactory | None = None) -> None:
        self.profile = profile
        self.devices = devices or DeviceFactory()
        self.connectors = len(profile.connectors)
        self._sink: EventSink | None = None
        self._lock = threading.RLock()
        self._running = False
        self._sampler: threading.Thread | None = None
        self._guard: threading.Thread | None = None
        self._last_cycle = 0.0
        self._stalled = False
        self.stalls = 0
        self._io_thread: threading.Thread | None = None
        self._io_loop: asyncio.AbstractEventLoop | None = None
        self._outputs: list[Output] = []
        self._pwms: list[SysfsPwm] = []
        self._inputs: list[Input] = []
        # (connector, closed, monotonic_ns) of every contactor command, for the latency bench.
        self.contactor_log: deque[tuple[int, bool, int]] = deque(maxlen=100_000)
        # From a PilotChanged handed to the sink to the contactor-open command it caused (ns), for the bench.
        self.event_to_open_ns: deque[int] = deque(maxlen=100_000)
        self._pilot_event_ns: dict[int, int] = {}
        self.sample_cycles = 0
        self.sample_cpu_s = 0.0
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._open_all()
        finally:
            # gpiozero reports each pin factory it could not load as a warning: one log line each, not a traceback.
            for w in caught:
                log.warning("gpiozero: %s", w.message)

    def _open_all(self) -> None:
        profile = self.profile
        try:
            self._c = self._open_connectors()
            self._rcd = self._input(profile.rcd) if profile.rcd else None
            self._led = (StatusLed(profile.led.pin, active_high=profile.led.active_high,
                                   pin_factory=self.devices.pin_factory) if profile.led else None)
            self._watchdog = self._output(profile.watchdog) if profile.watchdog else None
            self._buses = self._open_buses()
        except Exception:
            self.close()
            raise

    # --- construction ---------------------------------------------------------------------------------------
    def _output(self, spec: Any) -> Output:
        out = Output(spec.pin, active_high=spec.active_high, pin_factory=self.devices.pin_factory)
        self._outputs.append(out)
        return out

    def _input(self, spec: Any) -> Input:
        inp = Input(spec.pin, active_high=spec.active_high, pull_up=spec.pull_up,
                    pin_factory=self.devices.pin_factory)
        self._inputs.append(inp)
        return inp

    def _open_connectors(self) -> dict[int, _Connector]:
        # Outputs first, and off: every contactor is open and every pilot safe before anything else can fail.
        outputs: dict[int, tuple[Output, SysfsPwm]] = {}
        for spec in self.profile.connectors:
            contactor = self._output(spec.contactor)
            contactor.set(False)
            pwm = SysfsPwm(spec.pwm.chip, spec.pwm.channel, spec.pwm.frequency_hz, spec.pwm.inverted,
                           root=self.devices.sysfs_pwm_root)
            self._pwms.append(pwm)
            pwm.open()
            pwm.safe(self.profile.safe_pilot)
            outputs[spec.id] = (contactor, pwm)
        adcs: dict[str, Ads1115 | Mcp3008] = {}
        for name, a in self.profile.adcs.items():
            if a.type == "ads1115":
                adcs[name] = Ads1115(self.devices.smbus(a.i2c_bus), a.address, fsr_v=a.fsr_v)
            else:
                adcs[name] = Mcp3008(self.devices.spi(a.spi_bus, a.spi_device, a.speed_hz), vref_v=a.vref_v)
        out: dict[int, _Connector] = {}
        for spec in self.profile.connectors:
            contactor, pwm = outputs[spec.id]
            p = spec.pilot
            cal = Calibration.from_points(p.calibration)
            adc = adcs[p.adc]
            sensor: PeakDetectorPilotSensor | BurstPilotSensor
            if p.method == "peak-detector":
                assert isinstance(adc, Ads1115) and p.high_channel is not None and p.low_channel is not None
                low_cal = Calibration.from_points(p.calibration_low) if p.calibration_low else cal
                sensor = PeakDetectorPilotSensor(adc, p.high_channel, p.low_channel, cal, low_cal)
            else:
                assert isinstance(adc, Mcp3008) and p.channel is not None
                sensor = BurstPilotSensor(adc, p.channel, cal, samples=p.samples, top_k=p.top_k)
            c = _Connector(spec, pwm, contactor, sensor, PilotFilter(self.profile.debounce_ms / 1000.0))
            if spec.pp is not None:
                pp_adc = adcs[spec.pp.adc]
                channel = spec.pp.channel
                c.pp = ProximitySensor(functools.partial(pp_adc.read_volts, channel), spec.pp.pullup_ohm,
                                       spec.pp.supply_v)
            if spec.lock is not None:
                c.lock = self._output(spec.lock)
                if spec.lock.feedback is not None:
                    c.lock_feedback = self._input(spec.lock.feedback)
            if spec.contactor.feedback is not None:
                c.contactor_feedback = self._input(spec.contactor.feedback)
            out[spec.id] = c
        return out

    def _open_buses(self) -> dict[str, _Bus]:
        buses: dict[str, _Bus] = {}
        for cid, c in self._c.items():
            m = c.spec.meter
            if m is None:
                continue
            try:
                model = load_model(m.model)
            except MeterModelError as exc:
                raise BoardSetupError(f"connector {cid}: meter: {exc}") from None
            if m.bus not in buses:
                b = self.profile.buses[m.bus]
                bus = (ModbusBus.tcp(b.host or "127.0.0.1", b.tcp_port, timeout_s=b.timeout_s) if b.type == "tcp"
                       else ModbusBus.rtu(b.port or "", baudrate=b.baudrate, parity=b.parity, stopbits=b.stopbits,
                                          timeout_s=b.timeout_s))
                buses[m.bus] = _Bus(b, bus)
            meter = ModbusMeter(buses[m.bus].bus, model, m.address)
            c.meter = meter
            buses[m.bus].meters.append((cid, meter))
        return buses

    # --- Board interface -----------------------------------------------------------------------------------
    def start(self, sink: EventSink) -> None:
        self._sink = sink
        self._running = True
        for cid, c in self._c.items():
            if c.contactor_feedback is not None:
                c.contactor_feedback.on_change(functools.partial(self._contactor_moved, cid))
                self._emit(ContactorFeedback(cid, c.contactor_feedback.value))
            if c.lock_feedback is not None:
                c.lock_feedback.on_change(functools.partial(self._lock_moved, cid))
        if self._rcd is not None:
            self._rcd.on_change(self._rcd_changed)
            if self._rcd.value:
                self._rcd_changed(True)
        self._last_cycle = time.monotonic()
        self._sampler = threading.Thread(target=self._sample_loop, name="rpi-pilot", daemon=True)
        self._sampler.start()
        self._guard = threading.Thread(target=self._guard_loop, name="rpi-guard", daemon=True)
        self._guard.start()
        if self._buses or self.profile.rfid is not None:
            ready = threading.Event()
            self._io_thread = threading.Thread(target=self._io_main, args=(ready,), name="rpi-io", daemon=True)
            self._io_thread.start()
            ready.wait(5)

    def stop(self) -> None:
        self._running = False
        loop = self._io_loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        for t in (self._sampler, self._guard, self._io_thread):
            if t is not None:
                t.join(timeout=3)
        self.safe_state()
        self.close()

    def close(self) -> None:
        for c in getattr(self, "_c", {}).values():
            if c.lock_timer is not None:
                c.lock_timer.cancel()
        for pwm in self._pwms:
            with contextlib.suppress(Exception):
                pwm.close()
        self._pwms.clear()
        led = getattr(self, "_led", None)
        devices: list[Input | Output | StatusLed] = [*self._inputs, *self._outputs, *([led] if led else [])]
        for dev in devices:
            with contextlib.suppress(Exception):
                dev.close()
        self._inputs.clear()
        self._outputs.clear()

    def set_pwm(self, connector: int, duty_percent: float | None) -> None:
        with self._lock:
            c = self._c[connector]
            c.duty = duty_percent
            # No current offered = +12 V DC (100 % high), the B1/C1 level the EV expects.
            c.pwm.set_duty(100.0 if duty_percent is None else duty_percent)

    def set_contactor(self, connector: int, closed: bool) -> None:
        with self._lock:
            self._c[connector].contactor.set(closed)
            now = time.monotonic_ns()
            self.contactor_log.append((connector, closed, now))
            if not closed and (at := self._pilot_event_ns.pop(connector, 0)):
                self.event_to_open_ns.append(now - at)

    def set_lock(self, connector: int, locked: bool) -> None:
        with self._lock:
            c = self._c[connector]
            if c.lock is None:
                return
            c.lock_wanted = locked
            c.lock.set(locked)
            if c.lock_timer is not None:
                c.lock_timer.cancel()
            # The outcome is judged after the actuator's travel time (from the feedback input, if any).
            timer = threading.Timer(c.spec.lock.move_time_ms / 1000.0 if c.spec.lock else 0.5,
                                    self._lock_settled, (connector,))
            timer.daemon = True
            c.lock_timer = timer
            timer.start()

    def contactor_feedback(self, connector: int) -> bool | None:
        """The aux contact's level now (None: no feedback input), read by the supervisor at its deadline."""
        fb = self._c[connector].contactor_feedback
        return fb.value if fb is not None else None

    def set_indicator(self, pattern: str) -> None:
        """The front-panel LED: "on" ready, "blink" charging, "fast-blink" fault, "off" unavailable."""
        if self._led is not None:
            with contextlib.suppress(Exception):  # a broken LED must not stop charging
                self._led.set(pattern)

    def safe_state(self) -> None:
        with self._lock:
            for cid, c in self._c.items():
                c.contactor.set(False)
                self.contactor_log.append((cid, False, time.monotonic_ns()))
                c.duty = None
                c.pwm.safe(self.profile.safe_pilot)
                # Contactors are open: a released cable carries no current, and a crash must not trap it.
                if c.lock is not None:
                    c.lock.set(False)
                    c.lock_wanted = False

    # --- events ---------------------------------------------------------------------------------------------
    def _emit(self, event: BoardEvent) -> None:
        sink = self._sink
        if sink is not None:
            sink(event)

    def _rcd_changed(self, tripped: bool) -> None:
        if tripped:
            log.warning("residual current device tripped")
        self._emit(DeviceFault(0, Device.RCD, "GroundFailure", tripped,
                               "residual current device tripped" if tripped else "residual current device reset"))

    def _contactor_moved(self, connector: int, closed: bool) -> None:
        self._emit(ContactorFeedback(connector, closed))

    def _lock_moved(self, connector: int, locked: bool) -> None:
        with self._lock:
            c = self._c[connector]
            pending = c.lock_timer is not None
        if not pending:  # moved by itself (forced open, feedback wire broken): report where it is
            self._emit(LockFeedback(connector, locked))
            self._lock_settled(connector)

    def _lock_settled(self, connector: int) -> None:
        with self._lock:
            c = self._c[connector]
            c.lock_timer = None
            where = c.lock_feedback.value if c.lock_feedback is not None else c.lock_wanted
            failed = where != c.lock_wanted
            changed = failed != c.lock_failed
            c.lock_failed = failed
        self._emit(LockFeedback(connector, where))
        if changed:
            self._emit(DeviceFault(connector, Device.LOCK, "ConnectorLockFailure", failed,
                                   f"lock did not reach the {'locked' if c.lock_wanted else 'unlocked'} position"
                                   if failed else "lock position matches the command again"))

    # --- sampling thread -----------------------------------------------------------------------------------
    def _sample_loop(self) -> None:
        interval = self.profile.sample_interval_ms / 1000.0
        next_at = time.monotonic()
        toggle = False
        while self._running:
            for cid, c in self._c.items():
                self._sample_pilot(cid, c)
                if c.pp is not None and time.monotonic() >= c.next_pp:
                    c.next_pp = time.monotonic() + PP_INTERVAL_S
                    self._sample_pp(cid, c)
            self.sample_cycles += 1
            self._last_cycle = time.monotonic()
            self.sample_cpu_s = time.thread_time()  # this thread's CPU time, for the bench
            if self._watchdog is not None:
                toggle = not toggle
                self._watchdog.set(toggle)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()  # overran: don't try to catch up with a burst

    def _guard_loop(self) -> None:
        stall_s = max(STALL_MIN_S, 10 * self.profile.sample_interval_ms / 1000.0)
        while self._running:
            time.sleep(stall_s / 4)
            stalled = time.monotonic() - self._last_cycle > stall_s
            if stalled == self._stalled:
                continue
            self._stalled = stalled
            if stalled:
                self.stalls += 1
                log.error("pilot sampling stalled for more than %.0f ms: opening the contactors", stall_s * 1000)
            for cid, c in self._c.items():
                if not c.pilot_failed:
                    self._emit(DeviceFault(cid, Device.PILOT, PILOT_ERROR_CODE, stalled,
                                           "pilot sampling stalled" if stalled else "pilot sampling runs again"))

    def _sample_pilot(self, cid: int, c: _Connector) -> None:
        duty = c.duty
        pwm_on = duty is not None and 0.0 < duty < 100.0
        try:
            high, low = c.sensor.read()
            if not (-PILOT_RANGE_V <= high <= PILOT_RANGE_V and -PILOT_RANGE_V <= low <= PILOT_RANGE_V):
                raise AdcError(f"pilot reading out of range ({high:.1f} V / {low:.1f} V)")
        except AdcError as exc:
            c.pilot_filter.lost(time.monotonic())
            if not c.pilot_failed:
                c.pilot_failed = True
                log.error("connector %d: pilot measurement failed: %s", cid, exc)
                self._emit(DeviceFault(cid, Device.PILOT, PILOT_ERROR_CODE, True, f"pilot ADC: {exc}"))
            return
        now = time.monotonic()
        change = c.pilot_filter.sample(classify(high, low, pwm_on), pwm_on, now)
        if c.pilot_failed:
            # Recovered: lost() left the filter at F, so the first good state is reported once debounced.
            c.pilot_failed = False
            log.info("connector %d: pilot measurement works again", cid)
            self._emit(DeviceFault(cid, Device.PILOT, PILOT_ERROR_CODE, False, "pilot ADC works again"))
        if change is not None:
            if change.simplified:
                log.info("connector %d: EV went from A to %s without B (simplified mode)", cid, change.state)
            at = time.monotonic_ns()
            self._pilot_event_ns[cid] = at
            self._emit(PilotChanged(cid, change.state, change.diode_fault, at))
            # The supervisor acted inside that call; a later opening (a meter fault...) is not this event's.
            self._pilot_event_ns.pop(cid, None)

    def _sample_pp(self, cid: int, c: _Connector) -> None:
        assert c.pp is not None
        value: float | str | None
        try:
            value = cable_ampacity(c.pp.resistance())
        except AdcError as exc:
            value, info = "fault", f"PP ADC: {exc}"
        except CableCodingError as exc:
            value, info = "fault", f"cable coding: {exc}"
        if value == c.cable:
            return
        if value == "fault":
            log.warning("connector %d: %s", cid, info)
            self._emit(DeviceFault(cid, Device.CABLE, "OtherError", True, info))
        elif c.cable == "fault":
            self._emit(DeviceFault(cid, Device.CABLE, "OtherError", False, "cable coding readable again"))
        c.cable = value
        if not isinstance(value, str):
            self._emit(CableChanged(cid, value))

    # --- I/O thread: meters and RFID ------------------------------------------------------------------------
    def _io_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._io_loop = loop
        asyncio.set_event_loop(loop)
        tasks = [loop.create_task(self._poll_bus(b)) for b in self._buses.values()]
        if self.profile.rfid is not None:
            r = self.profile.rfid
            reader = SerialRfidReader(r.port, baudrate=r.baudrate, protocol=r.protocol, hold_s=r.hold_s)
            tasks.append(loop.create_task(reader.run(self._tag, self._reader_health)))
        ready.set()
        try:
            loop.run_forever()
        finally:
            for t in tasks:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            for b in self._buses.values():
                loop.run_until_complete(b.bus.close())
            loop.close()

    def inject(self, event: BoardEvent) -> None:
        """Hand an event to the sink as if a device had produced it (emulated runs: a card without a reader)."""
        self._emit(event)

    def _tag(self, uid: str) -> None:
        self._emit(TagRead(uid))

    def _reader_health(self, ok: bool, info: str) -> None:
        self._emit(DeviceFault(0, Device.READER, "ReaderFailure", not ok, info))

    async def _poll_bus(self, b: _Bus) -> None:
        while True:
            started = time.monotonic()
            for cid, meter in b.meters:
                await self._read_meter(cid, meter)
            await asyncio.sleep(max(0.0, b.spec.poll_interval_s - (time.monotonic() - started)))

    async def _read_meter(self, cid: int, meter: ModbusMeter) -> None:
        c = self._c[cid]
        try:
            s = await meter.read()
            if s.energy_import_wh is None:
                raise MeterError("the meter model has no import energy register", kind="exception")
        except MeterError as exc:
            if not c.meter_failed:
                c.meter_failed = True
                log.error("connector %d: energy meter failed: %s", cid, exc)
                self._emit(DeviceFault(cid, Device.METER, "PowerMeterFailure", True, f"meter: {exc}"))
            return
        if c.meter_failed:
            c.meter_failed = False
            log.info("connector %d: energy meter answers again", cid)
            self._emit(DeviceFault(cid, Device.METER, "PowerMeterFailure", False, "meter answers again"))
        currents = tuple(x or 0.0 for x in s.current_a)
        volts = tuple(x or 0.0 for x in s.voltage_v)
        power = s.power_w if s.power_w is not None else 0.0
        self._emit(MeterReading(cid, s.energy_import_wh, power, (currents[0], currents[1], currents[2]),
                                (volts[0], volts[1], volts[2]), s.frequency_hz))

    @staticmethod
    def force_safe(profile: BoardProfile, devices: DeviceFactory | None = None) -> list[str]:
        """`evsed --safe-state`: open every contactor and set every pilot to the safe level, touching nothing
        else (no ADC, no bus), each output on its own, so one broken part cannot keep the others unsafe.
        Returns the problems; an empty list means every output is safe."""
        devices = devices or DeviceFactory()
        problems: list[str] = []
        with warnings.catch_warnings():
            # gpiozero warns once per pin factory it cannot load; the problem lines below say what failed.
            warnings.simplefilter("ignore")
            RpiBoard._force_safe(profile, devices, problems)
        return problems

    @staticmethod
    def _force_safe(profile: BoardProfile, devices: DeviceFactory, problems: list[str]) -> None:
        opened: list[Output | SysfsPwm] = []
        for spec in profile.connectors:
            try:
                out = Output(spec.contactor.pin, active_high=spec.contactor.active_high,
                             pin_factory=devices.pin_factory)
                opened.append(out)
                out.set(False)
            except Exception as exc:  # any failure: report it, go on with the rest
                problems.append(f"connector {spec.id}: contactor pin {spec.contactor.pin}: {exc}")
            try:
                pwm = SysfsPwm(spec.pwm.chip, spec.pwm.channel, spec.pwm.frequency_hz, spec.pwm.inverted,
                               root=devices.sysfs_pwm_root)
                opened.append(pwm)
                pwm.open()
                pwm.safe(profile.safe_pilot)
            except Exception as exc:
                problems.append(f"connector {spec.id}: pilot PWM: {exc}")
            if spec.lock is not None:
                try:
                    lock = Output(spec.lock.pin, active_high=spec.lock.active_high, pin_factory=devices.pin_factory)
                    opened.append(lock)
                    lock.set(False)
                except Exception as exc:
                    problems.append(f"connector {spec.id}: lock pin {spec.lock.pin}: {exc}")
        for dev in opened:
            with contextlib.suppress(Exception):
                dev.close()

    # --- for evsectl status and benches -------------------------------------------------------------------
    def pilot_state(self, connector: int) -> PilotState | None:
        return self._c[connector].pilot_filter.state
