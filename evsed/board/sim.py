"""The simulated board: N connectors with an EV model, contactor with feedback, energy meter and RFID reader.

It is simulated at the physical layer: the EV model sets the pilot's plateau voltages and the board samples
them with the same classifier the Raspberry Pi board uses; the meter integrates the power the EV draws
through the (possibly welded) contactor. One board thread delivers every event, like an ADC sampling loop
would, so the safety path under test is the one in the field.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evsed.board.interface import (
    BoardEvent,
    ContactorFeedback,
    Device,
    DeviceFault,
    EventSink,
    LockFeedback,
    MeterReading,
    PilotChanged,
    TagRead,
)
from evsed.core.pilot import PilotState, classify, current_for_duty

log = logging.getLogger(__name__)

FAULT_KINDS = ("diode", "pilot-short", "contactor-welded", "meter-offline", "lock-failure", "ground-fault",
               "over-current", "reader-offline", "ev-overdraw")
# Faults reported as they are, without a physical model behind them: (device, OCPP error code, info).
_REPORTED_FAULTS = {
    "ground-fault": (Device.RCD, "GroundFailure", "residual current device tripped"),
    "over-current": (Device.OVERCURRENT, "OverCurrentFailure", "current above the offered limit"),
    "reader-offline": (Device.READER, "ReaderFailure", "RFID reader does not answer"),
}
_HIGH_V = {PilotState.A: 12.0, PilotState.B: 9.0, PilotState.C: 6.0, PilotState.D: 3.0}


@dataclass
class EVModel:
    """What the car does: plugged or not, wants energy or not, how much it can take."""

    plugged: bool = False
    wants_energy: bool = True
    max_current_a: float = 32.0
    phases: int = 3
    ignores_limit: bool = False  # a faulty EV: draws its maximum whatever is offered, and stays in C

    def pilot_state(self, pwm_duty: float | None) -> PilotState:
        if not self.plugged:
            return PilotState.A
        if self.ignores_limit and self.wants_energy:
            return PilotState.C
        offered = current_for_duty(pwm_duty) if pwm_duty is not None else 0.0
        # A real EV closes S2 only once the EVSE signals it may draw current.
        return PilotState.C if self.wants_energy and offered > 0 else PilotState.B


@dataclass
class _Connector:
    ev: EVModel = field(default_factory=EVModel)
    pwm_duty: float | None = None
    contactor_cmd: bool = False
    welded: bool = False
    diode_fault: bool = False
    pilot_short: bool = False
    meter_offline: bool = False
    lock_failure: bool = False
    locked: bool = False
    reported: set[str] = field(default_factory=set)  # active _REPORTED_FAULTS kinds
    energy_wh: float = 0.0
    power_w: float = 0.0
    current_a: float = 0.0
    reported_pilot: tuple[PilotState, bool] | None = None
    phys_change_ns: int = 0  # when the pilot's physical state last changed (for latency figures)
    pwm_changed_ns: int = 0  # time.monotonic_ns() of the last PWM duty change, 0 = never (for latency figures)
    meter_fault_reported: bool = False
    lock_fault_reported: bool = False

    @property
    def contact_closed(self) -> bool:
        return self.contactor_cmd or self.welded


class SimBoard:
    def __init__(self, connectors: int, voltage_v: float = 230.0, meter_interval_s: float = 1.0,
                 initial_energy_wh: dict[int, float] | None = None, world_path: Path | None = None) -> None:
        self.connectors = connectors
        # The simulated cars are the physical world: they stay plugged in when the daemon restarts (crash,
        # kill -9, reset), so the world is kept in a file next to the database.
        self._world_path = world_path
        self._voltage = voltage_v
        self._meter_interval = meter_interval_s
        self._c = {i: _Connector() for i in range(1, connectors + 1)}
        for cid, wh in (initial_energy_wh or {}).items():
            if cid in self._c:
                self._c[cid].energy_wh = wh
        self._load_world()
        self._cv = threading.Condition()
        self._pending: deque[BoardEvent] = deque()
        self._sink: EventSink | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._last_integrate = time.monotonic()
        self._next_meter = 0.0
        self.open_latencies_ns: deque[int] = deque(maxlen=100_000)

    # --- Board interface ---------------------------------------------------------------------------------
    def start(self, sink: EventSink) -> None:
        self._sink = sink
        self._running = True
        self._thread = threading.Thread(target=self._run, name="sim-board", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def set_pwm(self, connector: int, duty_percent: float | None) -> None:
        with self._cv:
            c = self._c[connector]
            if c.pwm_duty != duty_percent:
                self._integrate()
                before = c.ev.pilot_state(c.pwm_duty)
                c.pwm_duty = duty_percent
                c.pwm_changed_ns = time.monotonic_ns()
                self._physical_change(c, before)

    def set_contactor(self, connector: int, closed: bool) -> None:
        now = time.monotonic_ns()
        with self._cv:
            c = self._c[connector]
            self._integrate()
            if c.contactor_cmd and not closed and c.phys_change_ns:
                self.open_latencies_ns.append(now - c.phys_change_ns)
                c.phys_change_ns = 0
            c.contactor_cmd = closed
            self._pending.append(ContactorFeedback(connector, c.contact_closed))
            self._cv.notify()

    def set_lock(self, connector: int, locked: bool) -> None:
        with self._cv:
            c = self._c[connector]
            if c.lock_failure:
                # A jammed lock stays where it was.
                if not c.lock_fault_reported:
                    c.lock_fault_reported = True
                    self._pending.append(DeviceFault(connector, Device.LOCK, "ConnectorLockFailure", True,
                                                     "lock motor did not reach position"))
            else:
                c.locked = locked
            self._pending.append(LockFeedback(connector, c.locked))
            self._cv.notify()

    def safe_state(self) -> None:
        with self._cv:
            self._integrate()
            for cid, c in self._c.items():
                before = c.ev.pilot_state(c.pwm_duty)
                c.contactor_cmd = False
                if c.pwm_duty is not None:
                    c.pwm_duty = None
                    c.pwm_changed_ns = time.monotonic_ns()
                self._pending.append(ContactorFeedback(cid, c.contact_closed))
                self._physical_change(c, before)

    # --- the simulated world (driven by evsectl sim ...) ------------------------------------------------
    def plug(self, connector: int, max_current_a: float = 32.0, phases: int = 3) -> None:
        self._ev_change(connector, plugged=True, max_current_a=max_current_a, phases=phases, wants_energy=True)

    def unplug(self, connector: int) -> None:
        self._ev_change(connector, plugged=False)

    def suspend(self, connector: int) -> None:
        self._ev_change(connector, wants_energy=False)

    def resume(self, connector: int) -> None:
        self._ev_change(connector, wants_energy=True)

    def swipe(self, id_tag: str) -> None:
        with self._cv:
            self._pending.append(TagRead(id_tag))
            self._cv.notify()

    def inject_fault(self, connector: int, kind: str) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        with self._cv:
            c = self._c[connector]
            self._integrate()
            before = c.ev.pilot_state(c.pwm_duty)
            if kind == "diode":
                c.diode_fault = True
            elif kind == "pilot-short":
                c.pilot_short = True
            elif kind == "contactor-welded":
                c.welded = True
                self._pending.append(ContactorFeedback(connector, c.contact_closed))
            elif kind == "meter-offline":
                c.meter_offline = True
            elif kind == "ev-overdraw":
                c.ev.ignores_limit = True
            elif kind == "lock-failure":
                c.lock_failure = True
                c.lock_fault_reported = True
                self._pending.append(DeviceFault(connector, Device.LOCK, "ConnectorLockFailure", True,
                                                 "lock motor did not reach position"))
            elif kind in _REPORTED_FAULTS and kind not in c.reported:
                c.reported.add(kind)
                device, code, info = _REPORTED_FAULTS[kind]
                # The reader serves the whole charge point: its failure is reported on connector 0.
                self._pending.append(DeviceFault(0 if device == Device.READER else connector, device, code, True,
                                                 info))
            self._physical_change(c, before, force=True)

    def clear_faults(self, connector: int) -> None:
        with self._cv:
            c = self._c[connector]
            self._integrate()
            before = c.ev.pilot_state(c.pwm_duty)
            c.diode_fault = c.pilot_short = c.meter_offline = False
            c.ev.ignores_limit = False
            if c.welded:
                c.welded = False
                self._pending.append(ContactorFeedback(connector, c.contact_closed))
            if c.lock_failure:
                c.lock_failure = c.lock_fault_reported = False
                self._pending.append(DeviceFault(connector, Device.LOCK, "ConnectorLockFailure", False,
                                                 "lock works again"))
            for kind in sorted(c.reported):
                device, code, _ = _REPORTED_FAULTS[kind]
                self._pending.append(DeviceFault(0 if device == Device.READER else connector, device, code, False,
                                                 "back to normal"))
            c.reported.clear()
            self._physical_change(c, before, force=True)

    def ev_snapshot(self, connector: int) -> dict[str, object]:
        with self._cv:
            c = self._c[connector]
            return {"plugged": c.ev.plugged, "wants_energy": c.ev.wants_energy,
                    "max_current_a": c.ev.max_current_a, "phases": c.ev.phases,
                    "contact_closed": c.contact_closed, "pwm_duty": c.pwm_duty, "locked": c.locked,
                    "pwm_changed_ns": c.pwm_changed_ns}

    # --- internals (called with self._cv held) -----------------------------------------------------------
    def _ev_change(self, connector: int, **changes: object) -> None:
        with self._cv:
            c = self._c[connector]
            self._integrate()
            before = c.ev.pilot_state(c.pwm_duty)
            for k, v in changes.items():
                setattr(c.ev, k, v)
            self._save_world()
            self._physical_change(c, before)

    def _load_world(self) -> None:
        if self._world_path is None:
            return
        try:
            world = json.loads(self._world_path.read_text(encoding="utf-8"))
            for cid, ev in world.get("ev", {}).items():
                if int(cid) in self._c:
                    self._c[int(cid)].ev = EVModel(**ev)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as exc:
            log.warning("sim: ignoring unreadable world file %s: %s", self._world_path, exc)

    def _save_world(self) -> None:
        if self._world_path is None:
            return
        tmp = self._world_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"ev": {str(cid): asdict(c.ev) for cid, c in self._c.items()}}),
                           encoding="utf-8")
            os.replace(tmp, self._world_path)
        except OSError as exc:
            log.warning("sim: cannot save the world file %s: %s", self._world_path, exc)

    def _physical_change(self, c: _Connector, before: PilotState, force: bool = False) -> None:
        if force or c.ev.pilot_state(c.pwm_duty) != before:
            c.phys_change_ns = time.monotonic_ns()
        self._cv.notify()

    def _voltages(self, c: _Connector) -> tuple[float, float]:
        if c.pilot_short:
            return 0.0, 0.0
        high = _HIGH_V[c.ev.pilot_state(c.pwm_duty)]
        if c.pwm_duty is None:
            return high, high
        # Without the EV's diode the low plateau is pulled toward the EV's resistor, far from -12 V.
        low = -high if c.diode_fault and c.ev.plugged else -12.0
        return high, low

    def _integrate(self) -> None:
        now = time.monotonic()
        dt = now - self._last_integrate
        self._last_integrate = now
        for c in self._c.values():
            c.energy_wh += c.power_w * dt / 3600.0
            drawing = c.contact_closed and c.ev.pilot_state(c.pwm_duty) == PilotState.C
            offered = current_for_duty(c.pwm_duty) if c.pwm_duty is not None else 0.0
            # A welded contact with PWM off: the EV stops drawing once it sees no current offered.
            wanted = c.ev.max_current_a if c.ev.ignores_limit else min(offered, c.ev.max_current_a)
            c.current_a = wanted if drawing else 0.0
            c.power_w = round(self._voltage * c.current_a * c.ev.phases, 1)

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._running:
                    return
                timeout = max(0.0, self._next_meter - time.monotonic())
                if not self._pending:
                    self._cv.wait(timeout=min(timeout, 0.05))
                if not self._running:
                    return
                self._integrate()
                events: list[BoardEvent] = list(self._pending)
                self._pending.clear()
                for cid, c in self._c.items():
                    high, low = self._voltages(c)
                    reading = classify(high, low, c.pwm_duty is not None)
                    key = (reading.state, reading.diode_fault)
                    if key != c.reported_pilot:
                        c.reported_pilot = key
                        events.append(PilotChanged(cid, reading.state, reading.diode_fault,
                                                   time.monotonic_ns()))
                if time.monotonic() >= self._next_meter:
                    self._next_meter = time.monotonic() + self._meter_interval
                    events.extend(self._meter_events())
            sink = self._sink
            for ev in events:
                if sink is not None:
                    try:
                        sink(ev)
                    except Exception:  # the board thread must survive a bug upstream
                        log.exception("board event handler failed for %r", ev)

    def _meter_events(self) -> list[BoardEvent]:
        out: list[BoardEvent] = []
        for cid, c in self._c.items():
            if c.meter_offline:
                if not c.meter_fault_reported:
                    c.meter_fault_reported = True
                    out.append(DeviceFault(cid, Device.METER, "PowerMeterFailure", True,
                                           "meter does not answer (timeout)"))
                continue
            if c.meter_fault_reported:
                c.meter_fault_reported = False
                out.append(DeviceFault(cid, Device.METER, "PowerMeterFailure", False, "meter answers again"))
            phases = (c.current_a,) * c.ev.phases + (0.0,) * (3 - c.ev.phases)
            # The supply is live on every phase whatever the EV draws; 50 Hz keeps the sim deterministic.
            out.append(MeterReading(cid, round(c.energy_wh, 3), c.power_w,
                                    (phases[0], phases[1], phases[2]),
                                    (self._voltage, self._voltage, self._voltage), frequency_hz=50.0))
        return out
