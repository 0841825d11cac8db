"""The sim board stamps every PWM duty change with time.monotonic_ns() and shows it in `sim ev` (ev_snapshot).

The stamp is what bench_charging_profile_latency compares with the CSMS's clock in another process, so it must be
CLOCK_MONOTONIC (system-wide on Linux) and move only when the duty really changes. Virtual time: the module's
monotonic_ns is replaced by a counter the test sets; no board thread runs.
"""

from __future__ import annotations

import pytest

from evsed.board import sim
from evsed.board.sim import SimBoard
from evsed.core.pilot import duty_for_current


class FakeClock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(sim.time, "monotonic_ns", fake)
    return fake


def stamp(board: SimBoard, connector: int) -> object:
    return board.ev_snapshot(connector)["pwm_changed_ns"]


def test_no_change_yet_is_zero(clock: FakeClock) -> None:
    board = SimBoard(2)
    assert stamp(board, 1) == 0 and stamp(board, 2) == 0
    board.set_pwm(1, None)  # PWM off is where it starts: not a change
    assert stamp(board, 1) == 0


def test_each_duty_change_is_stamped_and_a_repeat_is_not(clock: FakeClock) -> None:
    board = SimBoard(2)
    board.plug(1)
    clock.ns = 5_000_000_000
    board.set_pwm(1, duty_for_current(16.0))
    assert stamp(board, 1) == 5_000_000_000
    assert board.ev_snapshot(1)["pwm_duty"] == duty_for_current(16.0)

    clock.ns = 6_000_000_000
    board.set_pwm(1, duty_for_current(16.0))  # the same duty again: nothing changed on the wire
    assert stamp(board, 1) == 5_000_000_000

    clock.ns = 7_000_000_123
    board.set_pwm(1, duty_for_current(10.0))  # a decrease
    assert stamp(board, 1) == 7_000_000_123

    clock.ns = 8_000_000_000
    board.set_pwm(1, None)  # PWM off is a change too
    assert stamp(board, 1) == 8_000_000_000
    assert stamp(board, 2) == 0  # per connector


def test_safe_state_stamps_only_connectors_whose_pwm_it_turned_off(clock: FakeClock) -> None:
    board = SimBoard(2)
    clock.ns = 2_000_000_000
    board.set_pwm(1, duty_for_current(32.0))
    clock.ns = 3_000_000_000
    board.safe_state()
    assert board.ev_snapshot(1)["pwm_duty"] is None
    assert stamp(board, 1) == 3_000_000_000
    assert stamp(board, 2) == 0  # its PWM was already off
