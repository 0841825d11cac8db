"""The pilot debounce filter (evsed.core.iec61851.PilotFilter) in virtual time, one sample every 5 ms."""

from __future__ import annotations

import math

import pytest

from evsed.core.iec61851 import MAX_DEBOUNCE_S, PilotChange, PilotFilter, iec_state
from evsed.core.pilot import PilotReading, PilotState

A, B, C, D, E, F = (PilotState.A, PilotState.B, PilotState.C, PilotState.D, PilotState.E, PilotState.F)
STEP = 0.005
DEBOUNCE = 0.02


class Feed:
    """Samples a filter every STEP seconds; time is an integer sample count so it never drifts."""

    def __init__(self, debounce: float = DEBOUNCE) -> None:
        self.filter = PilotFilter(debounce)
        self.k = 0
        self.changes: list[tuple[float, PilotChange]] = []

    @property
    def now(self) -> float:
        return self.k * STEP

    def run(self, state: PilotState, seconds: float, *, diode: bool = False,
            pwm: bool = False) -> list[tuple[float, PilotChange]]:
        out: list[tuple[float, PilotChange]] = []
        for _ in range(round(seconds / STEP)):
            change = self.filter.sample(PilotReading(state, diode), pwm, self.now)
            if change is not None:
                out.append((self.now, change))
            self.k += 1
        self.changes += out
        return out

    def flicker(self, states: list[PilotState], seconds: float, *, run_s: float = STEP,
                pwm: bool = False) -> list[tuple[float, PilotChange]]:
        out: list[tuple[float, PilotChange]] = []
        for i in range(round(seconds / run_s)):
            out += self.run(states[i % len(states)], run_s, pwm=pwm)
        return out

    def lost(self) -> PilotChange | None:
        change = self.filter.lost(self.now)
        self.k += 1
        return change


def settled(state: PilotState, *, diode: bool = False, pwm: bool = False, debounce: float = DEBOUNCE) -> Feed:
    """A filter that has reported ``state`` (from A, so the report is a real debounced transition) 1 s ago."""
    feed = Feed(debounce)
    feed.run(A, 0.1, pwm=pwm)
    if state != A:
        feed.run(state, 1.0, diode=diode, pwm=pwm)
    assert feed.filter.state == state
    feed.changes.clear()
    return feed


def only(changes: list[tuple[float, PilotChange]]) -> tuple[float, PilotChange]:
    assert len(changes) == 1, changes
    return changes[0]


# --- naming ------------------------------------------------------------------------------------------------
def test_iec_state_naming_table_complete() -> None:
    table = {(s, pwm): iec_state(s, pwm) for s in PilotState for pwm in (False, True)}
    assert table == {
        (A, False): "A1", (A, True): "A2", (B, False): "B1", (B, True): "B2", (C, False): "C1", (C, True): "C2",
        (D, False): "D1", (D, True): "D2", (E, False): "E", (E, True): "E", (F, False): "F", (F, True): "F",
    }


# --- configuration -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("debounce", [0.051, 0.1, -0.001])
def test_debounce_out_of_range_rejected(debounce: float) -> None:
    with pytest.raises(ValueError, match="pilot debounce must be between 0 and 50 ms"):
        PilotFilter(debounce)


def test_debounce_limits_accepted() -> None:
    assert MAX_DEBOUNCE_S == 0.05
    PilotFilter(0.05)
    PilotFilter(0.0)


# --- initial state and debounce delay ---------------------------------------------------------------------------
def test_initial_sample_reported_at_once() -> None:
    feed = Feed()
    assert feed.filter.state is None
    assert feed.run(B, STEP) == [(0.0, PilotChange(B, False, False))]
    assert feed.filter.state == B
    assert feed.run(B, 1.0) == []


def test_initial_charging_state_is_not_simplified() -> None:
    assert Feed().run(C, STEP) == [(0.0, PilotChange(C, False, False))]


@pytest.mark.parametrize("debounce", [0.0, 0.012, 0.02, 0.035, 0.05])
def test_debounce_delay_exact(debounce: float) -> None:
    feed = settled(B, debounce=debounce)
    t0 = feed.now
    at, change = only(feed.run(C, 0.2, pwm=True))
    expected = t0 + math.ceil(debounce / STEP - 1e-9) * STEP  # the first sample at/after t0 + debounce
    assert at == pytest.approx(expected, abs=1e-9), f"reported {1000 * (at - t0):.1f} ms after the change"
    assert change == PilotChange(C, False, False)


def test_zero_debounce_reports_every_change() -> None:
    feed = settled(B, debounce=0.0)
    t0 = feed.now
    assert feed.run(C, STEP) == [(t0, PilotChange(C, False, False))]
    assert feed.run(B, STEP) == [(t0 + STEP, PilotChange(B, False, False))]


# --- glitches ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("glitch", [A, C, D, E, F])
def test_glitch_shorter_than_debounce_ignored(glitch: PilotState) -> None:
    feed = settled(B, pwm=True)
    for _ in range(10):
        assert feed.run(glitch, DEBOUNCE - STEP, pwm=True) == []
        assert feed.run(B, 0.1, pwm=True) == []
    assert feed.filter.state == B


def test_single_glitch_sample_restarts_candidate() -> None:
    feed = settled(A)
    t0 = feed.now
    assert feed.run(B, 0.015) == []
    assert feed.run(E, STEP) == []  # one stray sample: B must again be seen for a full debounce
    at, change = only(feed.run(B, 0.1))
    assert at == pytest.approx(t0 + 0.02 + DEBOUNCE, abs=1e-9)
    assert change == PilotChange(B, False, False)


def test_glitches_with_steady_c_between_do_not_leave_c() -> None:
    # 15 ms of B every 50 ms: C is stable again in between, so this is noise, not flicker.
    feed = settled(C, pwm=True)
    assert feed.flicker([B, C, C, C, C, C, C, C, C, C], 2.0, pwm=True) == []
    assert feed.filter.state == C


# --- wake-up pulses -------------------------------------------------------------------------------------------
def test_200ms_c_pulse_from_b_detected() -> None:
    feed = settled(B, pwm=True)
    t0 = feed.now
    feed.run(C, 0.2, pwm=True)
    feed.run(B, 0.2, pwm=True)
    assert [t for t, _ in feed.changes] == pytest.approx([t0 + DEBOUNCE, t0 + 0.2 + DEBOUNCE], abs=1e-9)
    assert [ch for _, ch in feed.changes] == [PilotChange(C, False, False), PilotChange(B, False, False)]


def test_200ms_b_pulse_from_c_detected() -> None:
    feed = settled(C, pwm=True)
    t0 = feed.now
    feed.run(B, 0.2, pwm=True)
    feed.run(C, 0.2, pwm=True)
    assert [t for t, _ in feed.changes] == pytest.approx([t0 + DEBOUNCE, t0 + 0.2 + DEBOUNCE], abs=1e-9)
    assert [ch for _, ch in feed.changes] == [PilotChange(B, False, False), PilotChange(C, False, False)]


# --- lost readings ----------------------------------------------------------------------------------------------
def test_lost_reported_at_once_as_f() -> None:
    feed = settled(C, pwm=True)
    assert feed.lost() == PilotChange(F, False, False)
    assert feed.filter.state == F
    assert feed.lost() is None  # still lost: nothing new


def test_lost_before_any_sample() -> None:
    assert PilotFilter().lost(0.0) == PilotChange(F, False, False)


def test_recovery_after_lost_is_debounced() -> None:
    feed = settled(C, pwm=True)
    feed.lost()
    t0 = feed.now
    at, change = only(feed.run(C, 0.1, pwm=True))
    assert at == pytest.approx(t0 + DEBOUNCE, abs=1e-9), f"recovered {1000 * (at - t0):.1f} ms after the lost reading"
    assert change == PilotChange(C, False, False)  # F -> C is not simplified mode


def test_lost_breaks_a_running_candidate() -> None:
    feed = settled(B, pwm=True)
    feed.run(C, 0.015, pwm=True)
    assert feed.lost() == PilotChange(F, False, False)
    t0 = feed.now
    assert only(feed.run(C, 0.1, pwm=True))[0] == pytest.approx(t0 + DEBOUNCE, abs=1e-9)


# --- simplified mode ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("before", "after", "simplified"), [
    (A, C, True), (A, D, True), (A, B, False), (B, C, False), (B, D, False), (C, D, False), (D, C, False),
    (E, C, False), (F, C, False), (F, D, False), (A, E, False), (A, F, False), (C, A, False),
])
def test_simplified_flag_only_on_a_to_c_or_d(before: PilotState, after: PilotState, simplified: bool) -> None:
    feed = settled(before)
    assert only(feed.run(after, 0.1))[1] == PilotChange(after, False, simplified)


# --- flicker -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("other", "run_s"), [(B, STEP), (B, 0.015), (A, STEP), (E, 0.01), (D, STEP)])
def test_flicker_while_charging_reported_as_least_permissive(other: PilotState, run_s: float) -> None:
    feed = settled(C, pwm=True)
    t0 = feed.now
    changes = feed.flicker([other, C], 1.0, run_s=run_s, pwm=True)
    at, change = only(changes)  # reported once, then it stays there while the flicker goes on
    assert change == PilotChange(other, False, False)
    assert at - t0 <= 2 * DEBOUNCE + 1e-9, f"flicker reported after {1000 * (at - t0):.1f} ms"


def test_flicker_among_several_states_picks_least_permissive() -> None:
    feed = settled(C, pwm=True)
    assert only(feed.flicker([B, C, E, C], 0.2, pwm=True))[1] == PilotChange(E, False, False)


def test_flicker_between_c_and_d_reports_d() -> None:
    feed = settled(C, pwm=True)
    assert only(feed.flicker([D, C], 0.2, pwm=True))[1] == PilotChange(D, False, False)


def test_flicker_from_d_towards_c_changes_nothing() -> None:
    # D is already the less permissive of the two.
    feed = settled(D, pwm=True)
    assert feed.flicker([C, D], 1.0, pwm=True) == []


@pytest.mark.parametrize(("reported", "other"), [(B, C), (A, B), (A, C), (B, A)])
def test_flicker_outside_charging_changes_nothing(reported: PilotState, other: PilotState) -> None:
    feed = settled(reported, pwm=True)
    assert feed.flicker([other, reported], 2.0, pwm=True) == []
    assert feed.filter.state == reported


def test_steady_state_after_flicker_is_reported() -> None:
    feed = settled(C, pwm=True)
    feed.flicker([B, C], 0.205, pwm=True)  # ends on a B sample
    assert feed.filter.state == B
    t0 = feed.now
    at, change = only(feed.run(C, 0.1, pwm=True))
    assert at == pytest.approx(t0 + DEBOUNCE, abs=1e-9)
    assert change == PilotChange(C, False, False)


# --- PWM and the diode check ------------------------------------------------------------------------------------
def test_pwm_switching_does_not_restart_state_debounce() -> None:
    feed = settled(B)
    t0 = feed.now
    assert feed.run(C, 0.01, pwm=False) == []
    at, change = only(feed.run(C, 0.1, pwm=True))  # C1 -> C2 half way through the debounce
    assert at == pytest.approx(t0 + DEBOUNCE, abs=1e-9), f"reported {1000 * (at - t0):.1f} ms after the change"
    assert change == PilotChange(C, False, False)


def test_b1_to_b2_is_not_a_pilot_change() -> None:
    feed = settled(B)
    assert feed.run(B, 0.5, pwm=True) == []
    assert feed.run(B, 0.5, pwm=False) == []


def test_diode_fault_is_debounced() -> None:
    feed = settled(C, pwm=True)
    assert feed.run(C, DEBOUNCE - STEP, diode=True, pwm=True) == []
    assert feed.run(C, 0.1, pwm=True) == []
    t0 = feed.now
    at, change = only(feed.run(C, 0.1, diode=True, pwm=True))
    assert at == pytest.approx(t0 + DEBOUNCE, abs=1e-9)
    assert change == PilotChange(C, True, False)


def test_diode_flicker_while_charging_reported_as_fault() -> None:
    feed = settled(C, pwm=True)
    t0 = feed.now
    out: list[tuple[float, PilotChange]] = []
    for _ in range(20):
        out += feed.run(C, STEP, diode=True, pwm=True)
        out += feed.run(C, STEP, diode=False, pwm=True)
    at, change = only(out)
    assert change == PilotChange(C, True, False)
    assert at - t0 <= 2 * DEBOUNCE + 1e-9


def test_diode_fault_flag_ignored_in_states_without_diode() -> None:
    feed = settled(A, pwm=True)
    assert feed.run(A, 0.1, diode=True, pwm=True) == []


def test_diode_verdict_kept_while_pwm_off() -> None:
    feed = settled(C, diode=True, pwm=True)
    # The controller withdraws the PWM: a DC pilot cannot show the diode, classify() says "no fault".
    assert feed.run(C, 0.5, pwm=False) == []
    assert only(feed.run(B, 0.5, pwm=False))[1] == PilotChange(B, True, False)  # same EV, same verdict
    # Unplugged: the verdict goes with the EV.
    assert only(feed.run(A, 0.5, pwm=False))[1] == PilotChange(A, False, False)
    assert only(feed.run(B, 0.5, pwm=False))[1] == PilotChange(B, False, False)


def test_diode_recheck_that_passes_is_reported() -> None:
    feed = settled(C, diode=True, pwm=True)
    feed.run(B, 0.5, pwm=False)
    t0 = feed.now
    at, change = only(feed.run(B, 0.5, pwm=True))
    assert change == PilotChange(B, False, False)
    assert at == pytest.approx(t0 + DEBOUNCE, abs=1e-9)


def test_diode_recheck_that_fails_is_reported_again() -> None:
    feed = settled(C, diode=True, pwm=True)
    feed.run(B, 0.5, pwm=False)
    t0 = feed.now
    at, change = only(feed.run(B, 0.5, diode=True, pwm=True))  # the same verdict, but a new measurement
    assert change == PilotChange(B, True, False)
    assert at == pytest.approx(t0 + DEBOUNCE, abs=1e-9)
    # Once only per PWM period.
    assert feed.run(B, 0.5, diode=True, pwm=True) == []
    feed.run(B, 0.5, pwm=False)
    assert only(feed.run(B, 0.5, diode=True, pwm=True))[1] == PilotChange(B, True, False)


def test_no_recheck_report_without_a_diode_fault() -> None:
    feed = settled(B, pwm=True)
    assert feed.run(B, 0.5, pwm=False) == []
    assert feed.run(B, 0.5, pwm=True) == []
