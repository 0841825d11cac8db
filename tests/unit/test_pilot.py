"""IEC 61851-1 pilot classification and duty <-> current conversion (evsed.core.pilot)."""

from __future__ import annotations

import math

import pytest

from evsed.core.pilot import (
    CHARGING_STATES,
    DIODE_LOW_MAX_V,
    MAX_CURRENT_A,
    MIN_CURRENT_A,
    PilotReading,
    PilotState,
    classify,
    current_for_duty,
    duty_for_current,
)

A, B, C, D, E, F = (PilotState.A, PilotState.B, PilotState.C, PilotState.D, PilotState.E, PilotState.F)
LOW_OK = -12.0  # a healthy low plateau while the PWM oscillates


# --- classify: nominal plateaus -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("high_v", "expected"),
    [(12.0, A), (9.0, B), (6.0, C), (3.0, D), (0.0, E), (-12.0, F)],
)
def test_nominal_plateaus(high_v: float, expected: PilotState) -> None:
    assert classify(high_v, LOW_OK, pwm_on=False) == PilotReading(expected, False)
    assert classify(high_v, LOW_OK, pwm_on=True).state == expected


# Thresholds are strict "greater than": exactly on a threshold falls into the lower state.
@pytest.mark.parametrize(
    ("high_v", "expected"),
    [
        (13.5, A), (10.51, A), (10.5, B), (10.49, B),
        (7.51, B), (7.5, C), (7.49, C),
        (4.51, C), (4.5, D), (4.49, D),
        (1.51, D), (1.5, E), (1.49, E),
        (-1.49, E), (-1.5, F), (-1.51, F), (-13.5, F),
    ],
)
def test_threshold_boundaries(high_v: float, expected: PilotState) -> None:
    assert classify(high_v, LOW_OK, pwm_on=False).state == expected


@pytest.mark.parametrize("high_v", [math.nan, math.inf, -math.inf, 13.51, 20.0, -13.51, -50.0])
def test_nan_and_out_of_range_are_f(high_v: float) -> None:
    for pwm_on in (False, True):
        reading = classify(high_v, LOW_OK, pwm_on)
        assert reading.state == F
        assert reading.diode_fault is False


def test_range_edges_are_inside() -> None:
    assert classify(13.5, LOW_OK, False).state == A
    assert classify(-13.5, LOW_OK, False).state == F  # inside the range, but below every threshold


# --- classify: diode check --------------------------------------------------------------------------------
@pytest.mark.parametrize("high_v", [9.0, 6.0, 3.0])  # B, C, D
def test_diode_fault_when_pwm_on_and_low_plateau_missing(high_v: float) -> None:
    assert classify(high_v, -5.0, pwm_on=True).diode_fault is True
    assert classify(high_v, 0.0, pwm_on=True).diode_fault is True
    assert classify(high_v, math.nan, pwm_on=True).diode_fault is True  # an unreadable low plateau fails


@pytest.mark.parametrize("high_v", [9.0, 6.0, 3.0])
def test_no_diode_fault_with_healthy_low_plateau(high_v: float) -> None:
    assert classify(high_v, -12.0, pwm_on=True).diode_fault is False
    assert classify(high_v, DIODE_LOW_MAX_V, pwm_on=True).diode_fault is False  # boundary: <= is fine
    assert classify(high_v, DIODE_LOW_MAX_V + 0.01, pwm_on=True).diode_fault is True


@pytest.mark.parametrize("high_v", [9.0, 6.0, 3.0])
def test_no_diode_fault_without_pwm(high_v: float) -> None:
    # +12 V DC: there is no low plateau to check.
    assert classify(high_v, 0.0, pwm_on=False).diode_fault is False
    assert classify(high_v, 12.0, pwm_on=False).diode_fault is False


@pytest.mark.parametrize("high_v", [12.0, 0.0, -12.0])  # A, E, F
def test_no_diode_fault_outside_b_c_d(high_v: float) -> None:
    assert classify(high_v, 0.0, pwm_on=True).diode_fault is False


def test_charging_states() -> None:
    assert frozenset({C, D}) == CHARGING_STATES


def test_reading_is_immutable() -> None:
    r = classify(9.0, LOW_OK, False)
    with pytest.raises(AttributeError):
        r.state = A  # type: ignore[misc]


# --- duty_for_current ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("amps", "duty"),
    [
        (6.0, 10.0),
        (10.0, 16.6),  # 16.666.. floored
        (13.0, 21.6),
        (16.0, 26.6),  # 26.666.. rounded down toward less current
        (20.0, 33.3),
        (25.0, 41.6),
        (32.0, 53.3),
        (40.0, 66.6),
        (51.0, 85.0),
        (51.5, 85.0),  # the norm's gap between the two formulas: stays at 51 A's duty
        (52.0, 85.0),
        (52.4, 85.0),
        (52.5, 85.0),  # 52.5/2.5 + 64 = 85.0 too
        (55.0, 86.0),
        (63.0, 89.2),
        (80.0, 96.0),
    ],
)
def test_duty_for_current_table(amps: float, duty: float) -> None:
    got = duty_for_current(amps)
    assert got is not None
    assert got == pytest.approx(duty, abs=1e-9)


def test_duty_is_an_exact_tenth() -> None:
    # A duty is a 0.1 % step without float noise (53.3, not 53.300000000000004): logs, evsectl and status
    # consumers see the value as is.
    assert duty_for_current(32.0) == 53.3
    for tenth in range(600, 8001):
        duty = duty_for_current(tenth / 100)
        assert duty is not None
        assert duty == round(duty, 1)


@pytest.mark.parametrize("amps", [5.99, 5.0, 0.0, -1.0, -math.inf])
def test_below_minimum_is_none(amps: float) -> None:
    assert duty_for_current(amps) is None


def test_minimum_exactly_is_offered() -> None:
    assert duty_for_current(MIN_CURRENT_A) == pytest.approx(10.0)


@pytest.mark.parametrize("amps", [80.0, 80.01, 81.0, 100.0, 1e6, math.inf])
def test_above_maximum_clamps(amps: float) -> None:
    assert duty_for_current(amps) == pytest.approx(96.0)


def test_duty_is_monotonic_and_in_range() -> None:
    previous = 0.0
    for i in range(600, 9001):
        duty = duty_for_current(i / 100)
        assert duty is not None
        assert 10.0 - 1e-9 <= duty <= 96.0 + 1e-9
        assert duty >= previous - 1e-9
        previous = duty


def test_duty_resolution_is_a_tenth() -> None:
    for i in range(600, 9001, 7):
        duty = duty_for_current(i / 100)
        assert duty is not None
        assert abs(duty * 10 - round(duty * 10)) < 1e-6


# --- round trip: never offer more than asked -------------------------------------------------------------
def test_round_trip_never_exceeds_requested_current_dense() -> None:
    # hypothesis is not installed in the venv: a dense deterministic sweep over 6..85 A in 1 mA steps.
    # The 1e-9 A slack only absorbs binary float noise of duty * 0.6 (10.1 * 0.6 == 6.0600000000000005).
    for i in range(6000, 85001):
        amps = i / 1000
        duty = duty_for_current(amps)
        assert duty is not None
        assert current_for_duty(duty) <= amps + 1e-9, (amps, duty, current_for_duty(duty))


def test_round_trip_is_close_to_requested_current() -> None:
    # Flooring to 0.1 % costs at most 0.06 A below 51 A and 0.25 A above the 51..52.75 A plateau.
    for i in range(600, 8001):
        amps = i / 100
        duty = duty_for_current(amps)
        assert duty is not None
        got = current_for_duty(duty)
        if amps <= 51.0:
            assert amps - got <= 0.06 + 1e-9
        elif amps < 52.75:  # duty 85.0..85.09 still reads as 51 A (first formula up to 85 %)
            assert got == pytest.approx(51.0)
        else:
            assert amps - got <= 0.25 + 1e-9


def test_round_trip_exact_for_tenth_duty_values() -> None:
    for amps in (6.0, 12.0, 18.0, 24.0, 30.0, 36.0, 42.0, 48.0, 51.0, 60.0, 65.0, 70.0, 75.0, 80.0):
        duty = duty_for_current(amps)
        assert duty is not None
        assert current_for_duty(duty) == pytest.approx(amps)


# --- current_for_duty (table A.7) --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("duty", "amps"),
    [
        (0.0, 0.0), (3.0, 0.0), (7.99, 0.0),
        (8.0, 6.0), (9.99, 6.0),
        (10.0, 6.0), (50.0, 30.0), (85.0, 51.0),
        (85.01, (85.01 - 64.0) * 2.5), (90.0, 65.0), (96.0, 80.0),
        (96.5, 80.0), (97.0, 80.0),
        (97.01, 0.0), (100.0, 0.0),
    ],
)
def test_current_for_duty(duty: float, amps: float) -> None:
    assert current_for_duty(duty) == pytest.approx(amps)


def test_max_constant() -> None:
    assert MAX_CURRENT_A == 80.0
    assert MIN_CURRENT_A == 6.0
