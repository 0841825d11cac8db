"""Current limiting in the session layer: where the offered current comes from, how fast the duty may change,
the 6 A pause, and over-current supervision (virtual time)."""

from __future__ import annotations

from test_station import DUTY_16A, DUTY_32A, B, C, charging_station, contactor_cmds, of, statuses

from evsed.core.pilot import PilotState, duty_for_current
from evsed.core.station import (
    OVERCURRENT_RETRY_S,
    STOP_UNDER_LOAD_TIMEOUT_S,
    SetPwm,
    Status,
    StopReason,
)


def pwm(actions: list) -> list[float | None]:  # type: ignore[type-arg]
    return [a.duty for a in of(actions, SetPwm)]


def test_offered_current_is_the_lowest_limit() -> None:
    st = charging_station()
    c = st.connectors[1]
    assert c.limit_source == "hardware" and c.offered_a == 32.0
    assert pwm(st.set_cable(1, 20.0, 10.0)) == [duty_for_current(20.0)]
    assert c.limit_source == "cable"
    assert pwm(st.set_limit(1, 16.0, 11.0)) == [DUTY_16A]
    assert c.limit_source == "ocpp"
    assert pwm(st.set_local_limit(1, 10.0, 12.0)) == [duty_for_current(10.0)]
    assert c.limit_source == "local"
    assert c.limits() == {"hardware": 32.0, "cable": 20.0, "ocpp": 16.0, "local": 10.0}


def test_decreases_apply_at_once_increases_once_per_5_s() -> None:
    st = charging_station()  # PWM started at t=1
    assert pwm(st.set_limit(1, 20.0, 2.0)) == [duty_for_current(20.0)]  # decrease: at once
    assert pwm(st.set_limit(1, 16.0, 3.0)) == [DUTY_16A]  # decrease again: at once
    assert pwm(st.set_limit(1, 32.0, 4.0)) == []  # increase: 5 s after the last change (t=3)
    assert st.next_deadline() == 8.0
    assert pwm(st.tick(7.99)) == []
    assert pwm(st.tick(8.0)) == [DUTY_32A]
    # Another increase right after waits again; a decrease in between resets the clock.
    assert pwm(st.set_limit(1, 6.0, 9.0)) == [duty_for_current(6.0)]
    assert pwm(st.set_limit(1, None, 10.0)) == []  # type: ignore[arg-type]
    assert pwm(st.tick(13.99)) == []
    assert pwm(st.tick(14.0)) == [DUTY_32A]


def test_an_increase_that_is_withdrawn_before_its_time_is_dropped() -> None:
    st = charging_station()
    st.set_limit(1, 16.0, 2.0)
    assert st.set_limit(1, 32.0, 3.0) == []
    assert st.set_limit(1, 16.0, 4.0) == []  # back to the current duty: nothing pending
    assert st.connectors[1].pwm_raise_at is None
    assert pwm(st.tick(7.0)) == []


def test_below_6_a_pauses_without_fault_and_resumes() -> None:
    st = charging_station()
    seen = st.set_limit(1, 5.9, 10.0)
    assert pwm(seen) == [None]
    assert statuses(seen) == [Status.SUSPENDED_EVSE]
    assert st.connectors[1].error_code == "NoError"
    # The EV leaves C when the PWM goes: the contactor opens without load.
    assert contactor_cmds(st.pilot(1, B, False, 10.5)) == [False]
    seen = st.set_limit(1, 6.0, 11.0)  # PWM start is not rate-limited
    assert pwm(seen) == [duty_for_current(6.0)]
    assert contactor_cmds(st.pilot(1, C, False, 12.0)) == [True]
    assert st.connectors[1].status == Status.CHARGING


def test_cable_ampacity_below_6_a_never_offers() -> None:
    st = charging_station()
    assert pwm(st.set_cable(1, 0.0, 5.0)) == [None]


# --- over-current -------------------------------------------------------------------------------------------
def overdraw(st, t: float, amps: float) -> list:  # type: ignore[no-untyped-def,type-arg]
    return st.meter(1, 1000.0 + t, amps * 690, t, (amps, amps, amps))


def test_within_tolerance_is_fine() -> None:
    st = charging_station()
    for t in range(10, 40):
        assert overdraw(st, float(t), 33.9) == []
    assert st.connectors[1].status == Status.CHARGING


def test_overcurrent_withdraws_pwm_after_the_configured_time_then_retries() -> None:
    st = charging_station()
    st.configure_overcurrent(1, 2.0, 10.0)
    assert overdraw(st, 10.0, 40.0) == []
    assert overdraw(st, 19.9, 40.0) == []
    seen = overdraw(st, 20.0, 40.0)
    assert pwm(seen) == [None]
    assert [(a.status, a.error_code) for a in seen if hasattr(a, "status")] == \
        [(Status.SUSPENDED_EVSE, "OverCurrentFailure")]
    # The EV obeys: it leaves C, the contactor opens without load, and after the pause energy is offered again.
    assert contactor_cmds(st.pilot(1, B, False, 20.5)) == [False]
    assert st.next_deadline() == 20.0 + OVERCURRENT_RETRY_S
    assert pwm(st.tick(20.0 + OVERCURRENT_RETRY_S)) == [DUTY_32A]


def test_overcurrent_that_goes_on_ends_in_a_fault() -> None:
    st = charging_station()
    st.configure_overcurrent(1, 2.0, 5.0)
    overdraw(st, 10.0, 40.0)
    overdraw(st, 15.0, 40.0)  # PWM withdrawn
    assert st.connectors[1].pwm_duty is None
    # The EV stays in C and keeps drawing: 6 s after the PWM went, the contactor opens under load and a fault.
    assert st.next_deadline() == 15.0 + STOP_UNDER_LOAD_TIMEOUT_S
    seen = st.tick(15.0 + STOP_UNDER_LOAD_TIMEOUT_S)
    assert contactor_cmds(seen) == [False]
    assert (st.connectors[1].status, st.connectors[1].error_code) == (Status.FAULTED, "OverCurrentFailure")
    # Until the EV is unplugged.
    st.pilot(1, PilotState.A, False, 30.0)
    assert st.connectors[1].status == Status.AVAILABLE


def test_ev_gets_5_s_to_follow_a_decrease() -> None:
    st = charging_station()
    st.configure_overcurrent(1, 2.0, 1.0)
    st.set_limit(1, 16.0, 10.0)
    # Still drawing 32 A: allowed for 5 s after the decrease.
    for t in (10.5, 12.0, 14.9):
        assert overdraw(st, t, 32.0) == []
    assert overdraw(st, 15.0, 32.0) == []  # over since 15.0 ...
    assert pwm(overdraw(st, 16.0, 32.0)) == [None]  # ... for the configured 1 s


def test_no_overcurrent_check_without_pwm_or_open_contactor() -> None:
    st = charging_station()
    st.configure_overcurrent(1, 2.0, 1.0)
    st.stop(1, StopReason.REMOTE, 10.0)
    for t in (10.5, 12.0, 14.0):
        assert pwm(overdraw(st, t, 40.0)) == []
    assert st.connectors[1].status != Status.FAULTED


def test_a_pwm_change_itself_is_not_charged_as_overcurrent_when_the_ev_is_in_c() -> None:
    st = charging_station()
    assert st.pilot(1, C, False, 3.0) == []
