"""The one narrow interface between evsed and charger hardware.

Events in (pilot state, relay feedback, meter readings, RFID tags, device faults); commands out (PWM duty,
contactor, lock, safe state). The sim board and the Raspberry Pi board both implement ``Board``. Events may be
delivered from a board thread: the sink must be thread-safe (see ``core.safety``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from evsed.core.pilot import PilotState


class Device(StrEnum):
    PILOT = "pilot"
    CONTACTOR = "contactor"
    METER = "meter"
    LOCK = "lock"
    READER = "reader"
    RCD = "rcd"  # residual current / ground-fault monitor
    OVERCURRENT = "overcurrent"  # current drawn above what is offered
    CABLE = "cable"  # the plugged cable's PP coding cannot be read (shorted, out of range)


@dataclass(frozen=True, slots=True)
class PilotChanged:
    connector: int
    state: PilotState
    diode_fault: bool
    at_ns: int  # monotonic_ns of the measurement that showed the change


@dataclass(frozen=True, slots=True)
class ContactorFeedback:
    connector: int
    closed: bool


@dataclass(frozen=True, slots=True)
class LockFeedback:
    """Where the connector lock actually is after a command (a lock motor can fail to move)."""

    connector: int
    locked: bool


@dataclass(frozen=True, slots=True)
class MeterReading:
    connector: int
    energy_wh: float  # Energy.Active.Import.Register
    power_w: float  # total active power over all phases
    current_a: tuple[float, float, float]  # per phase L1..L3 (0.0 on unused phases)
    voltage_v: tuple[float, float, float]  # per phase, line to neutral
    frequency_hz: float | None = None  # None when the meter does not measure it


@dataclass(frozen=True, slots=True)
class CableChanged:
    """The plugged cable's current rating from its PP resistor (socketed Type 2); None = no cable."""

    connector: int
    ampacity_a: float | None


@dataclass(frozen=True, slots=True)
class TagRead:
    id_tag: str


@dataclass(frozen=True, slots=True)
class DeviceFault:
    """A device failed (active) or recovered (not active). error_code is an OCPP ChargePointErrorCode."""

    connector: int  # 0 = the whole charge point (e.g. the RFID reader)
    device: Device
    error_code: str
    active: bool
    info: str = ""


BoardEvent = (PilotChanged | ContactorFeedback | LockFeedback | MeterReading | CableChanged | TagRead
              | DeviceFault)
EventSink = Callable[[BoardEvent], None]


class Board(Protocol):
    connectors: int

    def start(self, sink: EventSink) -> None:
        """Begin delivering events; the first PilotChanged per connector reports the initial state."""

    def stop(self) -> None: ...

    def set_pwm(self, connector: int, duty_percent: float | None) -> None:
        """duty_percent None = pilot at +12 V DC (no current offered)."""

    def set_contactor(self, connector: int, closed: bool) -> None: ...

    def set_lock(self, connector: int, locked: bool) -> None:
        """Drive the socket lock; the outcome arrives as LockFeedback (and a DeviceFault when it fails)."""

    def safe_state(self) -> None:
        """All contactors open, PWM off; callable at any time from any thread, idempotent."""
