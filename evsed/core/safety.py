"""The safety supervisor: sole owner of the contactors.

It sees every board event first, in the board's own thread, and opens a contactor right there when the pilot
leaves C/D, the diode check fails or a blocking device fault appears; only then is the event forwarded to the
asyncio side. So a busy event loop (an OCPP burst, a slow SQLite write) cannot delay the opening. The charge
controller asks the supervisor to close; the supervisor refuses unless the pilot allows it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from evsed.board.interface import (
    Board,
    BoardEvent,
    ContactorFeedback,
    Device,
    DeviceFault,
    EventSink,
    PilotChanged,
)
from evsed.core.deadlines import Deadline, Deadlines
from evsed.core.pilot import CHARGING_STATES, PilotState
from evsed.core.station import BLOCKING_SOURCES

log = logging.getLogger(__name__)

# Device failures that forbid energy flow on their connector until they clear.
BLOCKING_DEVICES = frozenset(Device(source) for source in BLOCKING_SOURCES)


class SafetySupervisor:
    def __init__(self, board: Board, forward: EventSink, connectors: int, ventilation: bool = False,
                 feedback_timeout_s: float | dict[int, float] = 0.0) -> None:
        self._board = board
        self._forward = forward
        self._lock = threading.Lock()
        self._allowed_states = CHARGING_STATES if ventilation else frozenset({PilotState.C})
        ids = range(1, connectors + 1)
        self._pilot: dict[int, PilotState] = dict.fromkeys(ids, PilotState.A)
        self._diode_fault: dict[int, bool] = dict.fromkeys(ids, False)
        self._commanded: dict[int, bool] = dict.fromkeys(ids, False)
        self._feedback_fault: dict[int, bool] = dict.fromkeys(ids, False)
        self._faults: dict[int, set[Device]] = {c: set() for c in ids}
        # The aux contact follows the coil with a delay: a mismatch counts only once it outlasts this.
        self._feedback_timeout = (dict(feedback_timeout_s) if isinstance(feedback_timeout_s, dict)
                                  else dict.fromkeys(ids, feedback_timeout_s))
        self._feedback: dict[int, bool | None] = dict.fromkeys(ids)  # None: no feedback input seen
        self._feedback_timer: dict[int, Deadline | None] = dict.fromkeys(ids)
        self._deadlines = Deadlines("safety-deadlines")
        # Boards that can read the aux contact's level on demand: the deadline then judges the level itself, not
        # the last edge delivered (an edge callback can run late on a busy machine, or get lost).
        self._read_feedback: Callable[[int], bool | None] | None = getattr(board, "contactor_feedback", None)

    # --- board thread -------------------------------------------------------------------------------------
    def on_board_event(self, event: BoardEvent) -> None:
        extra: BoardEvent | None = None
        with self._lock:
            if isinstance(event, PilotChanged):
                self._pilot[event.connector] = event.state
                self._diode_fault[event.connector] = event.diode_fault
                self._enforce(event.connector)
            elif isinstance(event, DeviceFault) and event.device in BLOCKING_DEVICES:
                # Connector 0 means a device every connector depends on.
                targets = list(self._faults) if event.connector == 0 else [event.connector]
                for c in targets:
                    if c not in self._faults:
                        continue
                    if event.active:
                        self._faults[c].add(event.device)
                    else:
                        self._faults[c].discard(event.device)
                    self._enforce(c)
            elif isinstance(event, ContactorFeedback):
                self._feedback[event.connector] = event.closed
                extra = self._check_feedback(event.connector)
        self._forward(event)
        if extra is not None:
            self._forward(extra)

    def _may_close(self, connector: int) -> bool:
        return (
            self._pilot[connector] in self._allowed_states
            and not self._diode_fault[connector]
            and not self._faults[connector]
        )

    def _enforce(self, connector: int) -> None:
        if self._commanded[connector] and not self._may_close(connector):
            self._board.set_contactor(connector, False)
            self._commanded[connector] = False
            self._arm_feedback_check(connector)
            log.info("safety: contactor %d opened (pilot %s, diode fault %s, faults %s)", connector,
                     self._pilot[connector], self._diode_fault[connector],
                     ",".join(sorted(self._faults[connector])) or "none")

    def _arm_feedback_check(self, connector: int) -> None:
        """After a command, the feedback must follow within the timeout (welded / stuck-open detection)."""
        timeout = self._feedback_timeout.get(connector, 0.0)
        if self._feedback[connector] is None or timeout <= 0:
            return
        if (old := self._feedback_timer[connector]) is not None:
            old.cancel()
        self._feedback_timer[connector] = self._deadlines.after(timeout, self._feedback_deadline, connector)

    def _feedback_deadline(self, connector: int) -> None:
        level = self._read_feedback(connector) if self._read_feedback is not None else None
        with self._lock:
            self._feedback_timer[connector] = None
            if level is not None:
                self._feedback[connector] = level
            extra = self._check_feedback(connector, deadline=True)
        if extra is not None:
            self._forward(extra)

    def _check_feedback(self, c: int, deadline: bool = False) -> DeviceFault | None:
        closed = self._feedback[c]
        if closed is None:
            return None
        bad = closed != self._commanded[c]
        if bad == self._feedback_fault[c]:
            return None
        if bad and not deadline and self._feedback_timeout.get(c, 0.0) > 0:
            # Give the contact its travel time; the deadline decides (a timer may already be running).
            if self._feedback_timer[c] is None:
                self._arm_feedback_check(c)
            return None
        self._feedback_fault[c] = bad
        # A contact that stays closed when commanded open is welded; one that stays open is stuck.
        kind = "welded" if closed else "stuck open"
        info = f"contactor {kind}" if bad else "contactor feedback matches command again"
        if bad:
            self._faults[c].add(Device.CONTACTOR)
            self._enforce(c)
        else:
            self._faults[c].discard(Device.CONTACTOR)
        return DeviceFault(c, Device.CONTACTOR, "PowerSwitchFailure", bad, info)

    # --- controller side (any thread) --------------------------------------------------------------------
    def request_contactor(self, connector: int, closed: bool) -> bool:
        """Close only when the pilot and faults allow it; opening is always granted."""
        with self._lock:
            if closed and not self._may_close(connector):
                return False
            if self._commanded[connector] != closed:
                self._commanded[connector] = closed
                self._board.set_contactor(connector, closed)
                self._arm_feedback_check(connector)
            return True

    def contactor_closed(self, connector: int) -> bool:
        with self._lock:
            return self._commanded[connector]

    def safe_state(self) -> None:
        with self._lock:
            self._board.safe_state()
            for c in self._commanded:
                if self._commanded[c]:
                    self._commanded[c] = False
                    self._arm_feedback_check(c)

    def close(self) -> None:
        """Stop pending feedback checks (at shutdown)."""
        with self._lock:
            for c, timer in self._feedback_timer.items():
                if timer is not None:
                    timer.cancel()
                    self._feedback_timer[c] = None
        self._deadlines.close()
