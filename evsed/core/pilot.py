"""IEC 61851-1 control pilot: states, classification of measured voltages, duty <-> current.

Pure functions shared by every board: the sim board feeds them simulated plateau voltages, the Raspberry Pi
board feeds them ADC readings, so the classification code under test is the code in the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class PilotState(StrEnum):
    A = "A"  # no EV
    B = "B"  # EV connected, not ready
    C = "C"  # EV ready, charging
    D = "D"  # EV ready, ventilation required
    E = "E"  # pilot shorted to PE / EVSE unpowered
    F = "F"  # EVSE fault (-12 V) or a pilot that cannot be classified


# Midpoint thresholds between the nominal plateaus (hardware.md 1.1).
_HIGH_THRESHOLDS: tuple[tuple[float, PilotState], ...] = (
    (10.5, PilotState.A), (7.5, PilotState.B), (4.5, PilotState.C), (1.5, PilotState.D), (-1.5, PilotState.E),
)
# While the PWM oscillates the low plateau must be near -12 V; above this the EV's diode is missing.
DIODE_LOW_MAX_V = -10.5
CHARGING_STATES = frozenset({PilotState.C, PilotState.D})


@dataclass(frozen=True, slots=True)
class PilotReading:
    state: PilotState
    diode_fault: bool = False


def classify(high_v: float, low_v: float, pwm_on: bool) -> PilotReading:
    """Classify one measurement of the pilot's high and low plateau voltages."""
    if math.isnan(high_v) or high_v > 13.5 or high_v < -13.5:
        return PilotReading(PilotState.F)  # out of the physical range: treat as a lost reading
    state = PilotState.F
    for threshold, candidate in _HIGH_THRESHOLDS:
        if high_v > threshold:
            state = candidate
            break
    diode_fault = (
        pwm_on and state in (PilotState.B, PilotState.C, PilotState.D) and not low_v <= DIODE_LOW_MAX_V
    )
    return PilotReading(state, diode_fault)


MIN_CURRENT_A = 6.0
MAX_CURRENT_A = 80.0
_DUTY_STEP = 0.1  # percent; the sysfs PWM resolves far finer, but the EV reads no better than this


def duty_for_current(amps: float) -> float | None:
    """Duty cycle in percent for an offered current, rounded toward less current; None below 6 A."""
    if amps < MIN_CURRENT_A:
        return None
    amps = min(amps, MAX_CURRENT_A)
    if amps <= 51.0:
        duty = amps / 0.6
    elif amps < 52.5:
        duty = 51.0 / 0.6  # the norm's gap between the two formulas: stay at 51 A
    else:
        duty = amps / 2.5 + 64.0
    # Floor to the step (with a small epsilon so exact values such as 10.0 survive float error).
    return round(math.floor(duty / _DUTY_STEP + 1e-9) * _DUTY_STEP, 1)


def current_for_duty(duty: float) -> float:
    """The current an EV reads from a duty cycle (IEC 61851-1 table A.7)."""
    if duty < 8.0 or duty > 97.0:
        return 0.0
    if duty < 10.0:
        return 6.0
    if duty <= 85.0:
        return duty * 0.6
    if duty <= 96.0:
        return (duty - 64.0) * 2.5
    return 80.0
