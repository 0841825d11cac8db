"""The sim board's meter readings carry per-phase voltage and a grid frequency (no board thread, no sleeps)."""

from __future__ import annotations

import pytest

from evsed.board.interface import MeterReading
from evsed.board.sim import SimBoard
from evsed.core.pilot import duty_for_current


def readings(board: SimBoard) -> dict[int, MeterReading]:
    board._integrate()  # what the board thread does before it reads the meters
    return {ev.connector: ev for ev in board._meter_events() if isinstance(ev, MeterReading)}


@pytest.mark.parametrize(("phases", "current"), [(1, (16.0, 0.0, 0.0)), (3, (16.0, 16.0, 16.0))])
def test_charging_reading_has_per_phase_voltage_and_frequency(phases: int, current: tuple[float, ...]) -> None:
    board = SimBoard(2, voltage_v=240.0)
    board.plug(1, max_current_a=16.0, phases=phases)
    board.set_pwm(1, duty_for_current(16.0))
    board.set_contactor(1, True)

    r = readings(board)
    assert r[1].current_a == pytest.approx(current, abs=0.1)  # the PWM duty is quantised
    assert r[1].voltage_v == (240.0, 240.0, 240.0)  # the supply is live on all phases, whatever the EV draws
    assert r[1].frequency_hz == 50.0
    assert r[1].power_w == pytest.approx(240.0 * r[1].current_a[0] * phases)
    assert r[2].current_a == (0.0, 0.0, 0.0) and r[2].voltage_v == (240.0, 240.0, 240.0)


def test_offline_meter_gives_no_reading() -> None:
    board = SimBoard(1)
    board.inject_fault(1, "meter-offline")
    assert readings(board) == {}
