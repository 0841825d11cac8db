"""IEC 61851-1 sequences (hardware.md 1.3; EVerest's "Table A.6" sequences) through the real layers, in virtual time.

raw pilot voltages -> classify() -> PilotFilter -> SafetySupervisor(FakeBoard) -> Station, with the Station's
actions applied the way the daemon applies them. The EV is a plateau-voltage model; the pilot is sampled every
5 ms and Station.tick() runs at exactly Station.next_deadline(). Every delay is measured from the physical change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from evsed.board.interface import BoardEvent, EventSink, PilotChanged
from evsed.core.iec61851 import PilotChange, PilotFilter, iec_state
from evsed.core.pilot import PilotState, classify
from evsed.core.safety import SafetySupervisor
from evsed.core.station import (
    Action,
    RequestAuthorization,
    SetContactor,
    SetLock,
    SetPwm,
    Station,
    Status,
    StatusChanged,
    StopReason,
    TransactionStarted,
    TransactionStopped,
)

A, B, C, D, E, F = (PilotState.A, PilotState.B, PilotState.C, PilotState.D, PilotState.E, PilotState.F)
STEP = 0.005  # pilot sampling period
DEBOUNCE = 0.02
OPEN_WITHIN_S = 0.1  # IEC 61851-1 via EVerest: "Table A.6 Sequence 8.1 within 100ms"
CLOSE_WITHIN_S = 3.0  # "Table A.6: Sequence 4 ... within 3 seconds"
STOP_UNDER_LOAD_S = 6.0
DUTY_32A = 53.3
DUTY_16A = 26.6
# Nominal high plateaus (hardware.md 1.1).
_HIGH_V = {A: 12.0, B: 9.0, C: 6.0, D: 3.0, E: 0.0, F: -12.0}


def make_keys(**overrides: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {"ConnectionTimeOut": 60, "StopTransactionOnEVSideDisconnect": True,
                            "UnlockConnectorOnEVSideDisconnect": True, "StopTransactionOnInvalidId": True,
                            "MaxEnergyOnInvalidId": 0}
    keys.update(overrides)
    return keys


class FakeBoard:
    """Records every command with the virtual time it was given at."""

    def __init__(self, rig: Rig) -> None:
        self.connectors = 1
        self._rig = rig
        self.log: list[tuple[float, str, Any]] = []
        self.duty: float | None = None
        self.closed = False

    def start(self, sink: EventSink) -> None:
        pass

    def stop(self) -> None:
        pass

    def set_pwm(self, connector: int, duty_percent: float | None) -> None:
        self.duty = duty_percent
        self.log.append((self._rig.now, "pwm", duty_percent))

    def set_contactor(self, connector: int, closed: bool) -> None:
        self.closed = closed
        self.log.append((self._rig.now, "contactor", closed))

    def set_lock(self, connector: int, locked: bool) -> None:
        self.log.append((self._rig.now, "lock", locked))

    def safe_state(self) -> None:
        self.duty = None
        self.closed = False
        self.log.append((self._rig.now, "safe_state", None))

    def commands(self, kind: str, since: float = 0.0) -> list[tuple[float, Any]]:
        return [(t, v) for t, k, v in self.log if k == kind and t >= since]


@dataclass
class Ev:
    """The physical side of the pilot: which resistor the EV presents, and whether it has its diode."""

    state: PilotState = A
    diode_ok: bool = True
    adc_ok: bool = True  # False: the pilot ADC fails (AdcError)

    def voltages(self, pwm_on: bool) -> tuple[float, float]:
        high = _HIGH_V[self.state]
        if not pwm_on:
            return high, high
        # Without the EV's diode the low plateau is pulled toward the EV's resistor, far from -12 V.
        low = -12.0 if self.diode_ok or self.state in (A, E, F) else -high
        return high, low


class Rig:
    def __init__(self, *, ventilation: bool = False, max_a: float = 32.0, **keys: Any) -> None:
        self.k = 0  # sample count; virtual time is k * STEP except while a deadline runs between samples
        self.now = 0.0
        self.ev = Ev()
        self.board = FakeBoard(self)
        self.filter = PilotFilter(DEBOUNCE)
        self.station = Station(1, max_a, make_keys(**keys), ventilation=ventilation)
        self.supervisor = SafetySupervisor(self.board, self._forward, 1, ventilation=ventilation)
        self.reports: list[tuple[float, PilotChange]] = []
        self.statuses: list[tuple[float, StatusChanged]] = []
        self.actions: list[tuple[float, Action]] = []
        self.sample()  # the first reading reports the initial state
        self.apply(self.station.start(self.now))
        self.k += 1

    # --- the daemon's wiring ------------------------------------------------------------------------------
    def _forward(self, event: BoardEvent) -> None:
        if isinstance(event, PilotChanged):
            self.apply(self.station.pilot(event.connector, event.state, event.diode_fault, self.now))

    def apply(self, actions: list[Action]) -> None:
        for a in actions:
            self.actions.append((self.now, a))
            if isinstance(a, SetPwm):
                self.board.set_pwm(a.connector, a.duty)
            elif isinstance(a, SetContactor):
                self.supervisor.request_contactor(a.connector, a.closed)
                self.station.contactor_state(a.connector, self.supervisor.contactor_closed(a.connector))
            elif isinstance(a, SetLock):
                self.board.set_lock(a.connector, a.locked)
            elif isinstance(a, StatusChanged):
                self.statuses.append((self.now, a))

    def sample(self) -> None:
        pwm_on = self.board.duty is not None
        if self.ev.adc_ok:
            high, low = self.ev.voltages(pwm_on)
            change = self.filter.sample(classify(high, low, pwm_on), pwm_on, self.now)
        else:
            change = self.filter.lost(self.now)
        if change is not None:
            self.reports.append((self.now, change))
            self.supervisor.on_board_event(PilotChanged(1, change.state, change.diode_fault,
                                                        round(self.now * 1e9)))

    # --- driving time -------------------------------------------------------------------------------------
    def run(self, seconds: float) -> None:
        end = self.k + round(seconds / STEP)
        while self.k < end:
            t = self.k * STEP
            deadline = self.station.next_deadline()
            while deadline is not None and deadline <= t:
                # The daemon sleeps until the deadline itself, not until the next pilot sample.
                self.now = max(self.now, deadline)
                self.apply(self.station.tick(self.now))
                deadline = self.station.next_deadline()
            self.now = t
            self.sample()
            self.k += 1

    def run_until(self, condition: Any, limit_s: float) -> float:
        """Run until ``condition()`` holds; returns the virtual time it first held at."""
        end = self.k + round(limit_s / STEP)
        while self.k < end:
            self.run(STEP)
            if condition():
                return self.now
        raise AssertionError(f"not reached within {limit_s} s")

    def set_ev(self, state: PilotState, *, diode_ok: bool | None = None) -> float:
        """The EV changes its load now; returns the time of the physical change (before the next sample)."""
        self.ev.state = state
        if diode_ok is not None:
            self.ev.diode_ok = diode_ok
        return self.k * STEP

    # --- user actions -------------------------------------------------------------------------------------
    def swipe(self, tag: str = "TAG") -> None:
        self.now = self.k * STEP
        first = self.station.tag(tag, self.now)
        assert first == [RequestAuthorization(tag)]
        self.apply(self.station.authorization(tag, "Accepted", None, self.now))

    def set_limit(self, amps: float | None) -> float:
        self.now = self.k * STEP
        self.apply(self.station.set_limit(1, amps, self.now))
        return self.now

    def remote_stop(self) -> float:
        self.now = self.k * STEP
        self.apply(self.station.stop(1, StopReason.REMOTE, self.now))
        return self.now

    # --- observations -------------------------------------------------------------------------------------
    def iec(self) -> str:
        return iec_state(self.ev.state, self.board.duty is not None)

    def status(self) -> Status | None:
        return self.station.connectors[1].status

    def contactor_opened_at(self, since: float) -> float:
        opens = [t for t, closed in self.board.commands("contactor", since) if not closed]
        assert opens, f"contactor never opened after t={since:.3f} (board log {self.board.log})"
        return opens[0]

    def contactor_closed_at(self, since: float) -> float:
        closes = [t for t, closed in self.board.commands("contactor", since) if closed]
        assert closes, f"contactor never closed after t={since:.3f} (board log {self.board.log})"
        return closes[0]

    def closes(self) -> list[float]:
        return [t for t, closed in self.board.commands("contactor") if closed]


def charging(**kwargs: Any) -> Rig:
    """Plug in (B1), card, B2, EV to C2: the contactor is closed at the end."""
    rig = Rig(**kwargs)
    rig.run(0.5)
    rig.set_ev(B)
    rig.run(0.5)
    rig.swipe()
    rig.run(0.5)
    rig.set_ev(C)
    rig.run(1.0)
    assert rig.board.closed and rig.iec() == "C2" and rig.status() == Status.CHARGING
    return rig


def within(start: float, end: float, limit: float, what: str) -> None:
    """Assert a virtual delay, naming the measured value on failure."""
    delay = end - start
    assert 0.0 <= delay <= limit + 1e-9, f"{what}: {1000 * delay:.1f} ms (limit {1000 * limit:g} ms)"


# --- A -> B -> B2 -> C2 -----------------------------------------------------------------------------------------
def test_plug_in_b1_until_authorized_then_b2_with_duty_and_lock() -> None:
    rig = Rig()
    rig.run(0.5)
    rig.set_ev(B)
    rig.run(2.0)
    assert rig.iec() == "B1"  # EV connected, EVSE not ready: no PWM before authorization
    assert rig.board.commands("pwm") == []
    assert rig.status() == Status.PREPARING
    t_swipe = rig.k * STEP
    rig.swipe()
    assert rig.board.commands("pwm") == [(t_swipe, DUTY_32A)]  # 32 A -> 53.3 %
    assert rig.board.commands("lock") == [(t_swipe, True)]
    assert rig.iec() == "B2"
    assert [a for _, a in rig.actions if isinstance(a, TransactionStarted)] == [
        TransactionStarted(1, "TAG", 0.0, t_swipe)]
    rig.run(1.0)
    assert not rig.board.closed  # B2: no energy until the EV closes S2
    assert rig.filter.state == B


def test_b2_to_c2_closes_contactor() -> None:
    rig = Rig()
    rig.run(0.5)
    rig.set_ev(B)
    rig.run(0.5)
    rig.swipe()
    rig.run(1.0)
    t_c = rig.set_ev(C)
    rig.run(3.5)
    closed = rig.contactor_closed_at(0.0)
    within(t_c, closed, CLOSE_WITHIN_S, "C -> contactor closed")
    # Our implementation closes as soon as the debounced C is reported.
    reported_c = next(t for t, ch in rig.reports if ch.state == C)
    within(reported_c, closed, 0.0, "C reported -> contactor closed")
    within(t_c, closed, DEBOUNCE, "C -> contactor closed")
    assert rig.iec() == "C2" and rig.status() == Status.CHARGING
    assert rig.closes() == [closed]


# --- leaving C2: open within 100 ms -------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "status"), [
    ("B", Status.SUSPENDED_EV),  # EV pauses: opens S2
    ("A", Status.AVAILABLE),  # unplugged
    ("E", Status.SUSPENDED_EVSE),  # pilot shorted to PE
    ("F", Status.SUSPENDED_EVSE),  # pilot at -12 V
    ("D", Status.SUSPENDED_EVSE),  # ventilation requested, none configured
    ("diode", Status.SUSPENDED_EVSE),  # diode check fails during C2
    ("adc-lost", Status.SUSPENDED_EVSE),  # the pilot measurement itself fails
])
def test_leaving_c2_opens_within_100ms(change: str, status: Status) -> None:
    rig = charging()
    if change == "diode":
        t0 = rig.set_ev(C, diode_ok=False)
    elif change == "adc-lost":
        rig.ev.adc_ok = False
        t0 = rig.k * STEP
    else:
        t0 = rig.set_ev(PilotState(change))
    rig.run(0.5)
    opened = rig.contactor_opened_at(t0)
    within(t0, opened, OPEN_WITHIN_S, f"{change} -> contactor open")
    assert not rig.board.closed
    assert rig.closes() == [rig.closes()[0]], "closed again"
    assert rig.status() == status
    if change == "B":
        assert rig.iec() == "B2"  # the EVSE keeps offering: the EV may resume


def test_ev_resumes_after_pause() -> None:
    rig = charging()
    rig.set_ev(B)
    rig.run(10.0)
    assert rig.status() == Status.SUSPENDED_EV and not rig.board.closed
    t_c = rig.set_ev(C)
    rig.run(0.5)
    within(t_c, rig.contactor_closed_at(t_c), DEBOUNCE, "C -> contactor closed")
    assert rig.status() == Status.CHARGING


# --- C2 -> C1: the EVSE withdraws the PWM ---------------------------------------------------------------------
def test_remote_stop_keeps_contactor_while_ev_draws_then_opens_on_b() -> None:
    rig = charging()
    t_stop = rig.remote_stop()
    assert rig.board.commands("pwm", t_stop) == [(t_stop, None)]
    assert rig.iec() == "C1"
    rig.run(3.0)  # the EV is slow to react but still within the 6 s
    assert rig.board.closed, "opened under load before the EV left C"
    t_b = rig.set_ev(B)
    rig.run(0.5)
    opened = rig.contactor_opened_at(t_stop)
    within(t_b, opened, DEBOUNCE, "EV to B -> contactor open")
    stopped = [(t, a) for t, a in rig.actions if isinstance(a, TransactionStopped)]
    assert [(t, a.reason) for t, a in stopped] == [(opened, StopReason.REMOTE)]
    assert rig.iec() == "B1"


@pytest.mark.parametrize("how", ["remote-stop", "limit-below-6A"])
def test_pwm_off_in_c_forces_open_after_6s(how: str) -> None:
    rig = charging()
    t_off = rig.remote_stop() if how == "remote-stop" else rig.set_limit(5.0)
    assert rig.board.commands("pwm", t_off) == [(t_off, None)]
    rig.run(STOP_UNDER_LOAD_S - 0.1)
    assert rig.board.closed, f"opened {rig.contactor_opened_at(t_off) - t_off:.3f} s after PWM off"
    rig.run(1.0)  # the EV stays in C (e.g. a Kona)
    opened = rig.contactor_opened_at(t_off)
    assert opened - t_off == pytest.approx(STOP_UNDER_LOAD_S, abs=1e-9), \
        f"forced open {opened - t_off:.6f} s after PWM off"
    assert rig.closes() == [rig.closes()[0]], "closed again in C1"


# --- never close outside C2 (and D2 with ventilation) -----------------------------------------------------------
@pytest.mark.parametrize(("ev", "authorized", "ventilation"), [
    (B, True, False),  # B2
    (C, False, False),  # C1: EV ready, no PWM
    (D, True, False),  # D2 without ventilation
    (D, False, True),  # D1 even with ventilation
    (E, True, False),
    (F, True, False),
])
def test_never_closes(ev: PilotState, authorized: bool, ventilation: bool) -> None:
    rig = Rig(ventilation=ventilation)
    rig.run(0.5)
    rig.set_ev(B)
    rig.run(0.5)
    if authorized:
        rig.swipe()
        rig.run(0.5)
    rig.set_ev(ev)
    rig.run(10.0)
    assert rig.board.commands("contactor") == []
    assert not rig.supervisor.contactor_closed(1)


def test_d2_closes_with_ventilation() -> None:
    rig = Rig(ventilation=True)
    rig.run(0.5)
    rig.set_ev(B)
    rig.run(0.5)
    rig.swipe()
    rig.run(0.5)
    t_d = rig.set_ev(D)
    rig.run(1.0)
    assert rig.iec() == "D2"
    closed = rig.contactor_closed_at(0.0)
    within(t_d, closed, DEBOUNCE, "D -> contactor closed")
    assert rig.status() == Status.CHARGING
    t_b = rig.set_ev(B)
    rig.run(0.5)
    opened = rig.contactor_opened_at(t_b)
    within(t_b, opened, OPEN_WITHIN_S, "D -> B -> contactor open")


# --- simplified mode ----------------------------------------------------------------------------------------
def test_a_to_c_directly_still_charges() -> None:
    rig = Rig()
    rig.run(0.5)
    t_c = rig.set_ev(C)  # no B: an EV without the S2 sequence
    rig.run(0.5)
    assert rig.reports[-1][1] == PilotChange(C, False, True)
    assert rig.iec() == "C1" and not rig.board.closed and rig.status() == Status.PREPARING
    t_swipe = rig.k * STEP
    rig.swipe()
    rig.run(0.5)
    assert rig.iec() == "C2"
    closed = rig.contactor_closed_at(t_c)
    within(t_swipe, closed, DEBOUNCE, "authorization in C1 -> contactor closed")
    assert rig.status() == Status.CHARGING


# --- noise on the pilot during C2 ------------------------------------------------------------------------------
@pytest.mark.parametrize(("glitch", "length_s"), [(B, STEP), (B, 0.015), (A, 0.01), (E, 0.015), (F, STEP)])
def test_short_glitches_during_c2_do_not_open(glitch: PilotState, length_s: float) -> None:
    rig = charging()
    reports = len(rig.reports)
    for _ in range(20):
        rig.set_ev(glitch)
        rig.run(length_s)
        rig.set_ev(C)
        rig.run(0.1)
    assert rig.board.commands("contactor") == [(rig.closes()[0], True)]
    assert len(rig.reports) == reports
    assert rig.status() == Status.CHARGING


def test_200ms_b_pulse_during_c2_opens_then_recloses() -> None:
    rig = charging()
    t_b = rig.set_ev(B)
    rig.run(0.2)
    t_c = rig.set_ev(C)
    rig.run(0.5)
    opened = rig.contactor_opened_at(t_b)
    reclosed = rig.contactor_closed_at(t_b)
    within(t_b, opened, OPEN_WITHIN_S, "B pulse -> contactor open")
    assert opened < t_c
    within(t_c, reclosed, DEBOUNCE, "end of B pulse -> contactor closed")


def test_continuous_flicker_during_c2_opens_within_100ms() -> None:
    rig = charging()
    t0 = rig.k * STEP
    for _ in range(50):
        rig.set_ev(B)
        rig.run(STEP)
        rig.set_ev(C)
        rig.run(STEP)
    opened = rig.contactor_opened_at(t0)
    within(t0, opened, OPEN_WITHIN_S, "flicker -> contactor open")
    assert rig.closes() == [rig.closes()[0]], "closed again while flickering"


# --- current below 6 A ---------------------------------------------------------------------------------------
def test_limit_below_6a_in_b2_withdraws_pwm_and_restores_it() -> None:
    rig = Rig()
    rig.run(0.5)
    rig.set_ev(B)
    rig.run(0.5)
    rig.swipe()
    rig.run(4.0)
    t_low = rig.set_limit(5.0)
    assert rig.board.commands("pwm", t_low) == [(t_low, None)]
    assert rig.iec() == "B1"
    rig.run(1.0)
    assert rig.status() == Status.SUSPENDED_EVSE
    assert rig.station.connectors[1].error_code == "NoError"
    t_up = rig.set_limit(16.0)
    on = rig.run_until(lambda: rig.board.duty is not None, 6.0)
    within(t_up, on, 5.0, "limit back >= 6 A -> PWM on")
    assert rig.board.duty == DUTY_16A and rig.iec() == "B2"
    t_c = rig.set_ev(C)
    rig.run(0.5)
    within(t_c, rig.contactor_closed_at(t_c), DEBOUNCE, "C -> contactor closed")
    assert rig.status() == Status.CHARGING


def test_limit_below_6a_in_c2_goes_c1_suspended_evse_then_back() -> None:
    rig = charging()
    t_low = rig.set_limit(5.0)
    assert rig.board.commands("pwm", t_low) == [(t_low, None)]
    assert rig.iec() == "C1"
    assert rig.status() == Status.SUSPENDED_EVSE
    assert rig.station.connectors[1].error_code == "NoError"
    assert rig.board.closed  # still closed: the EV gets time to leave C
    t_b = rig.set_ev(B)  # a well-behaved EV stops drawing
    rig.run(0.5)
    opened = rig.contactor_opened_at(t_low)
    within(t_b, opened, DEBOUNCE, "EV to B -> contactor open")
    assert rig.status() == Status.SUSPENDED_EVSE
    assert rig.station.connectors[1].error_code == "NoError"
    t_up = rig.set_limit(32.0)
    on = rig.run_until(lambda: rig.board.duty is not None, 6.0)
    within(t_up, on, 5.0, "limit back >= 6 A -> PWM on")
    assert rig.board.duty == DUTY_32A
    t_c = rig.set_ev(C)
    rig.run(0.5)
    within(t_c, rig.contactor_closed_at(t_c), DEBOUNCE, "C -> contactor closed")
    assert rig.status() == Status.CHARGING


# --- diode fault recovery through the filter --------------------------------------------------------------------
def test_diode_fault_is_rechecked_and_cleared() -> None:
    rig = charging()
    t_bad = rig.set_ev(C, diode_ok=False)
    rig.run(0.1)
    assert rig.board.duty is None and not rig.board.closed  # PWM withdrawn, contactor open
    rig.set_ev(B)
    # The re-check (PWM offered again after a few seconds) still sees no diode: PWM off again.
    rig.run(7.0)
    pwm = rig.board.commands("pwm", t_bad)
    assert [d for _, d in pwm][:3] == [None, DUTY_32A, None], pwm
    assert rig.status() == Status.SUSPENDED_EVSE
    # The diode works again: the next re-check clears the fault and the EV may charge.
    rig.ev.diode_ok = True
    rig.run_until(lambda: rig.station.connectors[1].error_code == "NoError", 10.0)
    assert rig.board.duty == DUTY_32A
    t_c = rig.set_ev(C)
    rig.run(0.5)
    within(t_c, rig.contactor_closed_at(t_c), DEBOUNCE, "C -> contactor closed")
    assert rig.status() == Status.CHARGING
