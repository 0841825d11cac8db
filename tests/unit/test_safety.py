"""The safety supervisor (evsed.core.safety.SafetySupervisor) with a recording fake board."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from evsed.board.interface import (
    BoardEvent,
    ContactorFeedback,
    Device,
    DeviceFault,
    EventSink,
    MeterReading,
    PilotChanged,
    TagRead,
)
from evsed.core.pilot import PilotState
from evsed.core.safety import BLOCKING_DEVICES, SafetySupervisor

A, B, C, D, E, F = (PilotState.A, PilotState.B, PilotState.C, PilotState.D, PilotState.E, PilotState.F)


class FakeBoard:
    """Records every command; ``log`` interleaves commands and forwarded events in call order."""

    def __init__(self, connectors: int = 2) -> None:
        self.connectors = connectors
        self.log: list[tuple[str, Any]] = []
        self.closed: dict[int, bool] = dict.fromkeys(range(1, connectors + 1), False)
        self.safe_states = 0

    def start(self, sink: EventSink) -> None:
        pass

    def stop(self) -> None:
        pass

    def set_pwm(self, connector: int, duty_percent: float | None) -> None:
        self.log.append(("pwm", (connector, duty_percent)))

    def set_contactor(self, connector: int, closed: bool) -> None:
        self.closed[connector] = closed
        self.log.append(("contactor", (connector, closed)))

    def set_lock(self, connector: int, locked: bool) -> None:
        self.log.append(("lock", (connector, locked)))

    def safe_state(self) -> None:
        self.safe_states += 1
        for c in self.closed:
            self.closed[c] = False
        self.log.append(("safe_state", None))

    def contactor_calls(self) -> list[tuple[int, bool]]:
        return [v for k, v in self.log if k == "contactor"]


def make(connectors: int = 2, ventilation: bool = False) -> tuple[SafetySupervisor, FakeBoard, list[BoardEvent]]:
    board = FakeBoard(connectors)
    forwarded: list[BoardEvent] = []

    def forward(event: BoardEvent) -> None:
        forwarded.append(event)
        board.log.append(("forward", event))

    return SafetySupervisor(board, forward, connectors, ventilation=ventilation), board, forwarded


def pilot(connector: int, state: PilotState, diode_fault: bool = False) -> PilotChanged:
    return PilotChanged(connector, state, diode_fault, 0)


def closed_in(state: PilotState, ventilation: bool = False) -> tuple[SafetySupervisor, FakeBoard, list[BoardEvent]]:
    sup, board, fwd = make(ventilation=ventilation)
    sup.on_board_event(pilot(1, state))
    assert sup.request_contactor(1, True)
    assert sup.contactor_closed(1)
    board.log.clear()
    fwd.clear()
    return sup, board, fwd


# --- closing -------------------------------------------------------------------------------------------------
def test_initially_open() -> None:
    sup, board, _ = make()
    assert not sup.contactor_closed(1) and not sup.contactor_closed(2)
    assert board.log == []


@pytest.mark.parametrize("state", [A, B, D, E, F])
def test_close_refused_unless_pilot_c(state: PilotState) -> None:
    sup, board, _ = make()
    sup.on_board_event(pilot(1, state))
    assert sup.request_contactor(1, True) is False
    assert not sup.contactor_closed(1)
    assert board.contactor_calls() == []


def test_close_granted_in_c() -> None:
    sup, board, _ = make()
    sup.on_board_event(pilot(1, C))
    assert sup.request_contactor(1, True) is True
    assert sup.contactor_closed(1)
    assert board.contactor_calls() == [(1, True)]
    # Idempotent: a second close does not command the board again.
    assert sup.request_contactor(1, True) is True
    assert board.contactor_calls() == [(1, True)]
    # Connector 2 is independent.
    assert sup.request_contactor(2, True) is False


def test_close_before_any_pilot_reading_is_refused() -> None:
    sup, _, _ = make()
    assert sup.request_contactor(1, True) is False


def test_d_needs_ventilation() -> None:
    sup, board, _ = make(ventilation=True)
    sup.on_board_event(pilot(1, D))
    assert sup.request_contactor(1, True) is True
    assert board.contactor_calls() == [(1, True)]
    sup.on_board_event(pilot(1, C))  # C is fine with ventilation too
    assert sup.contactor_closed(1)


def test_close_refused_with_diode_fault() -> None:
    sup, _, _ = make()
    sup.on_board_event(pilot(1, C, diode_fault=True))
    assert sup.request_contactor(1, True) is False


@pytest.mark.parametrize("device", sorted(BLOCKING_DEVICES))
def test_close_refused_with_blocking_fault(device: Device) -> None:
    sup, board, _ = make()
    sup.on_board_event(pilot(1, C))
    sup.on_board_event(DeviceFault(1, device, "OtherError", True, "broken"))
    assert sup.request_contactor(1, True) is False
    sup.on_board_event(DeviceFault(1, device, "OtherError", False, "ok again"))
    assert sup.request_contactor(1, True) is True
    assert board.contactor_calls() == [(1, True)]


def test_reader_fault_is_not_blocking() -> None:
    assert Device.READER not in BLOCKING_DEVICES
    sup, _, _ = make()
    sup.on_board_event(pilot(1, C))
    sup.on_board_event(DeviceFault(1, Device.READER, "ReaderFailure", True, ""))
    assert sup.request_contactor(1, True) is True


def test_open_is_always_granted() -> None:
    sup, board, _ = make()
    assert sup.request_contactor(1, False) is True
    assert board.contactor_calls() == []  # already open: nothing to command
    sup.on_board_event(pilot(1, C))
    sup.request_contactor(1, True)
    sup.on_board_event(DeviceFault(1, Device.METER, "PowerMeterFailure", True, ""))
    assert sup.request_contactor(1, False) is True


def test_controller_open_commands_board() -> None:
    sup, board, _ = closed_in(C)
    assert sup.request_contactor(1, False) is True
    assert board.contactor_calls() == [(1, False)]
    assert not sup.contactor_closed(1)


# --- opening on its own ------------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [A, B, D, E, F])
def test_opens_when_pilot_leaves_c_before_forwarding(state: PilotState) -> None:
    sup, board, fwd = closed_in(C)
    event = pilot(1, state)
    sup.on_board_event(event)
    assert board.log == [("contactor", (1, False)), ("forward", event)]  # opened first, then forwarded
    assert not sup.contactor_closed(1)
    assert fwd == [event]


def test_d_without_ventilation_opens() -> None:
    sup, board, _ = closed_in(C)
    sup.on_board_event(pilot(1, D))
    assert board.contactor_calls() == [(1, False)]


def test_d_with_ventilation_stays_closed() -> None:
    sup, board, _ = closed_in(C, ventilation=True)
    sup.on_board_event(pilot(1, D))
    assert board.contactor_calls() == []
    assert sup.contactor_closed(1)


def test_repeated_c_keeps_closed() -> None:
    sup, board, fwd = closed_in(C)
    sup.on_board_event(pilot(1, C))
    assert board.contactor_calls() == []
    assert len(fwd) == 1


def test_opens_on_diode_fault() -> None:
    sup, board, _ = closed_in(C)
    event = pilot(1, C, diode_fault=True)
    sup.on_board_event(event)
    assert board.log == [("contactor", (1, False)), ("forward", event)]


@pytest.mark.parametrize("device", sorted(BLOCKING_DEVICES))
def test_opens_on_blocking_device_fault(device: Device) -> None:
    sup, board, _ = closed_in(C)
    event = DeviceFault(1, device, "OtherError", True, "gone")
    sup.on_board_event(event)
    assert board.log == [("contactor", (1, False)), ("forward", event)]
    # Recovery does not close again by itself.
    sup.on_board_event(DeviceFault(1, device, "OtherError", False, ""))
    assert board.contactor_calls() == [(1, False)]
    assert not sup.contactor_closed(1)


def test_reader_fault_does_not_open() -> None:
    sup, board, fwd = closed_in(C)
    event = DeviceFault(1, Device.READER, "ReaderFailure", True, "")
    sup.on_board_event(event)
    assert board.contactor_calls() == []
    assert fwd == [event]


def test_fault_on_other_connector_does_not_open() -> None:
    sup, board, _ = closed_in(C)
    sup.on_board_event(DeviceFault(2, Device.METER, "PowerMeterFailure", True, ""))
    sup.on_board_event(pilot(2, B))
    assert board.contactor_calls() == []
    assert sup.contactor_closed(1)


def test_station_wide_fault_is_forwarded() -> None:
    sup, board, fwd = closed_in(C)
    event = DeviceFault(0, Device.READER, "ReaderFailure", True, "")
    sup.on_board_event(event)
    assert fwd == [event]
    assert board.contactor_calls() == []


@pytest.mark.parametrize("event", [MeterReading(1, 10.0, 0.0, (0.0, 0.0, 0.0), (230.0, 230.0, 230.0)), TagRead("CARD")])
def test_other_events_are_forwarded_untouched(event: BoardEvent) -> None:
    sup, board, fwd = closed_in(C)
    sup.on_board_event(event)
    assert fwd == [event]
    assert board.contactor_calls() == []


# --- contactor feedback ---------------------------------------------------------------------------------------
def test_matching_feedback_forwarded_without_fault() -> None:
    sup, _, fwd = closed_in(C)
    sup.on_board_event(ContactorFeedback(1, True))
    assert fwd == [ContactorFeedback(1, True)]


def test_welded_contact_detected_and_recovered() -> None:
    sup, board, fwd = make()
    feedback = ContactorFeedback(1, True)  # closed while commanded open
    sup.on_board_event(feedback)
    assert fwd == [feedback, DeviceFault(1, Device.CONTACTOR, "PowerSwitchFailure", True, "contactor welded")]
    # The fault blocks closing even in C.
    sup.on_board_event(pilot(1, C))
    assert sup.request_contactor(1, True) is False
    # Repeated mismatching feedback reports nothing new.
    fwd.clear()
    sup.on_board_event(feedback)
    assert fwd == [feedback]
    # The contact opens: recovery is reported after the feedback event.
    fwd.clear()
    sup.on_board_event(ContactorFeedback(1, False))
    assert fwd == [ContactorFeedback(1, False),
                   DeviceFault(1, Device.CONTACTOR, "PowerSwitchFailure", False,
                               "contactor feedback matches command again")]
    assert sup.request_contactor(1, True) is True
    assert board.contactor_calls() == [(1, True)]


def test_welded_after_open_command() -> None:
    sup, _, fwd = closed_in(C)
    sup.on_board_event(pilot(1, B))  # opens
    fwd.clear()
    sup.on_board_event(ContactorFeedback(1, True))
    assert [e for e in fwd if isinstance(e, DeviceFault)] == [
        DeviceFault(1, Device.CONTACTOR, "PowerSwitchFailure", True, "contactor welded")]


def test_stuck_open_contact_detected_and_opened() -> None:
    sup, board, fwd = closed_in(C)
    feedback = ContactorFeedback(1, False)  # open while commanded closed
    sup.on_board_event(feedback)
    assert board.contactor_calls() == [(1, False)]  # the command follows reality: open
    assert not sup.contactor_closed(1)
    assert fwd == [feedback, DeviceFault(1, Device.CONTACTOR, "PowerSwitchFailure", True, "contactor stuck open")]
    # Contact open and commanded open now match again.
    fwd.clear()
    sup.on_board_event(ContactorFeedback(1, False))
    assert fwd[-1] == DeviceFault(1, Device.CONTACTOR, "PowerSwitchFailure", False,
                                  "contactor feedback matches command again")


# --- safe state -----------------------------------------------------------------------------------------------
def test_safe_state_opens_everything() -> None:
    sup, board, _ = make()
    sup.on_board_event(pilot(1, C))
    sup.on_board_event(pilot(2, C))
    sup.request_contactor(1, True)
    sup.request_contactor(2, True)
    sup.safe_state()
    assert board.safe_states == 1
    assert not sup.contactor_closed(1) and not sup.contactor_closed(2)
    assert board.closed == {1: False, 2: False}
    # Still allowed to close afterwards (the pilot says C), and an open request is a no-op.
    board.log.clear()
    assert sup.request_contactor(1, False) is True
    assert board.contactor_calls() == []
    sup.safe_state()  # idempotent
    assert board.safe_states == 2


# --- threads -----------------------------------------------------------------------------------------------
class CheckingBoard(FakeBoard):
    """Fails the test if a close is ever commanded while the supervisor's pilot view forbids it."""

    sup: SafetySupervisor
    violations: list[str]

    def set_contactor(self, connector: int, closed: bool) -> None:
        if closed and self.sup._pilot[connector] != C:
            self.violations.append(f"closed in {self.sup._pilot[connector]}")
        super().set_contactor(connector, closed)


def test_thread_safety_smoke() -> None:
    board = CheckingBoard(1)
    board.violations = []
    sup = SafetySupervisor(board, lambda event: None, 1)
    board.sup = sup
    rounds = 20000
    done = threading.Event()

    def board_thread() -> None:
        for i in range(rounds):
            sup.on_board_event(pilot(1, C if i % 2 else B))
        sup.on_board_event(pilot(1, B))
        done.set()

    t = threading.Thread(target=board_thread)
    t.start()
    requests = 0
    while not done.is_set():
        sup.request_contactor(1, True)
        requests += 1
    t.join()
    sup.request_contactor(1, True)  # after the final B: must be refused
    assert board.violations == []
    assert requests > 0
    assert not sup.contactor_closed(1)
    assert board.closed[1] is False


# --- feedback with travel time (real timers, short) ---------------------------------------------------------
def make_timed(timeout: float = 0.05) -> tuple[SafetySupervisor, FakeBoard, list[BoardEvent], threading.Event]:
    board = FakeBoard(1)
    forwarded: list[BoardEvent] = []
    fault = threading.Event()

    def forward(event: BoardEvent) -> None:
        forwarded.append(event)
        if isinstance(event, DeviceFault):
            fault.set()

    sup = SafetySupervisor(board, forward, 1, feedback_timeout_s=timeout)
    sup.on_board_event(ContactorFeedback(1, False))  # the board reports the input's level at start
    sup.on_board_event(pilot(1, C))
    return sup, board, forwarded, fault


def test_feedback_following_within_travel_time_is_no_fault() -> None:
    sup, _, fwd, fault = make_timed(0.05)
    assert sup.request_contactor(1, True)
    sup.on_board_event(ContactorFeedback(1, True))  # the aux contact follows 'at once' (well within 50 ms)
    assert not fault.wait(0.15)
    sup.on_board_event(pilot(1, B))  # opens
    sup.on_board_event(ContactorFeedback(1, False))
    assert not fault.wait(0.15)
    assert not [e for e in fwd if isinstance(e, DeviceFault)]


def test_contact_that_never_closes_is_stuck_open_after_the_timeout() -> None:
    sup, board, fwd, fault = make_timed(0.05)
    assert sup.request_contactor(1, True)
    # No feedback edge arrives: only the deadline can notice.
    assert fault.wait(2.0)
    assert [e for e in fwd if isinstance(e, DeviceFault)] == [
        DeviceFault(1, Device.CONTACTOR, "PowerSwitchFailure", True, "contactor stuck open")]
    assert board.contactor_calls() == [(1, True), (1, False)]
    assert sup.request_contactor(1, True) is False


def test_contact_that_stays_closed_after_open_is_welded() -> None:
    sup, _, fwd, fault = make_timed(0.05)
    assert sup.request_contactor(1, True)
    sup.on_board_event(ContactorFeedback(1, True))
    sup.on_board_event(pilot(1, A))  # unplug: opened by the supervisor, the contact stays closed
    assert fault.wait(2.0)
    assert [e for e in fwd if isinstance(e, DeviceFault)] == [
        DeviceFault(1, Device.CONTACTOR, "PowerSwitchFailure", True, "contactor welded")]
    sup.close()
