"""The charging core: per-connector session state machines and the station-level authorization flow.

Pure: every method takes the event and the current monotonic time and returns the actions to carry out.
It never touches hardware, sockets or clocks. The OCPP layer sees only its actions (transaction started or
stopped, status changed, authorization needed) and feeds it authorization results and remote commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from evsed.core.pilot import CHARGING_STATES, MIN_CURRENT_A, PilotState, duty_for_current

# Device failures (board.interface.Device values) that forbid energy flow; see core.safety.
BLOCKING_SOURCES = frozenset({"pilot", "contactor", "meter", "lock", "rcd", "overcurrent", "cable"})
# Faults in talking to the EV (pilot E/F while an EV is there, a failed diode check): energy stops, but OCPP 1.6
# section 4.9 makes EVCommunicationError a warning, only with Preparing, SuspendedEV(SE) or Finishing.
EV_COMMUNICATION = "EVCommunicationError"
# When the EVSE withdraws PWM during C2, the EV should go to B; after this it is opened under load.
STOP_UNDER_LOAD_TIMEOUT_S = 6.0
# The EV gets this long to answer an offered PWM by closing S2 before it counts as SuspendedEV
# (IEC 61851-1 lets B2 -> C2 take a few seconds); the status stays Preparing meanwhile.
EV_REACTION_GRACE_S = 3.0
# After a diode fault the PWM is withdrawn; it is offered again this often to re-check the diode.
DIODE_RECHECK_S = 5.0
# IEC 61851-1: the duty cycle may change at most once per 5 s while charging (a decrease applies at once, it
# protects the installation); the EV then has as long to follow a lower current.
DUTY_UPDATE_INTERVAL_S = 5.0
EV_FOLLOW_S = 5.0
# Over-current: after the PWM was withdrawn for it, it is offered again after this pause.
OVERCURRENT_RETRY_S = 60.0


class Settings(Protocol):
    """Read access to the OCPP configuration keys the core obeys (ConnectionTimeOut, ...)."""

    def __getitem__(self, name: str) -> Any: ...


class Status(StrEnum):
    """OCPP 1.6 ChargePointStatus."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class StopReason(StrEnum):
    LOCAL = "Local"
    REMOTE = "Remote"
    EV_DISCONNECTED = "EVDisconnected"
    HARD_RESET = "HardReset"
    SOFT_RESET = "SoftReset"
    POWER_LOSS = "PowerLoss"
    REBOOT = "Reboot"
    UNLOCK_COMMAND = "UnlockCommand"
    DEAUTHORIZED = "DeAuthorized"
    EMERGENCY_STOP = "EmergencyStop"
    OTHER = "Other"


# --- actions ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SetPwm:
    connector: int
    duty: float | None  # None = +12 V DC, no current offered
    amps: float


@dataclass(frozen=True, slots=True)
class SetContactor:
    connector: int
    closed: bool


@dataclass(frozen=True, slots=True)
class SetLock:
    connector: int
    locked: bool


@dataclass(frozen=True, slots=True)
class RequestAuthorization:
    id_tag: str


@dataclass(frozen=True, slots=True)
class TransactionStarted:
    connector: int
    id_tag: str
    meter_wh: float
    at: float
    parent_id_tag: str | None = None


@dataclass(frozen=True, slots=True)
class TransactionStopped:
    connector: int
    meter_wh: float
    at: float
    reason: StopReason
    id_tag: str | None  # the idTag that stopped it, when it was a card


@dataclass(frozen=True, slots=True)
class StatusChanged:
    connector: int
    status: Status
    error_code: str
    info: str = ""


@dataclass(frozen=True, slots=True)
class AuthorizationRejected:
    id_tag: str
    status: str


@dataclass(frozen=True, slots=True)
class AvailabilityChanged:
    """The operative state to persist for a connector (0 = the whole charge point); survives restarts."""

    connector: int
    operative: bool


@dataclass(frozen=True, slots=True)
class UnlockDone:
    """An UnlockConnector request reached the lock command (the board reports the outcome)."""

    connector: int


Action = (SetPwm | SetContactor | SetLock | RequestAuthorization | TransactionStarted | TransactionStopped
          | StatusChanged | AuthorizationRejected | AvailabilityChanged | UnlockDone)


def same_tag(a: str | None, b: str | None) -> bool:
    """IdToken is a CiString20: identifiers compare case-insensitively."""
    return a is not None and b is not None and a.lower() == b.lower()


@dataclass
class _Tx:
    id_tag: str
    parent_id_tag: str | None
    meter_start_wh: float
    # Set when StartTransaction.conf did not accept the idTag: energy allowed before the EVSE stops offering
    # (MaxEnergyOnInvalidId) and whether the transaction is then stopped (StopTransactionOnInvalidId).
    invalid_cap_wh: float | None = None
    stop_when_invalid: bool = False


@dataclass
class Connector:
    id: int
    max_current_a: float
    pilot: PilotState = PilotState.A
    diode_fault: bool = False
    faults: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (error code, info)
    energy_wh: float = 0.0
    power_w: float = 0.0
    tx: _Tx | None = None
    prepared: tuple[str, str | None, float] | None = None  # (idTag, parent, deadline) before plug-in
    stopping: tuple[StopReason, str | None, float] | None = None  # (reason, idTag, force-open deadline)
    finishing: bool = False
    available: bool = True
    unavailable_scheduled: bool = False  # ChangeAvailability(Inoperative) during a transaction
    plugged_at: float | None = None
    lock_owner: tuple[str, str | None] | None = None  # (idTag, parent): cable held locked for its owner
    unlock_after_stop: bool = False  # UnlockConnector during a transaction: unlock once it has stopped
    limit_a: float | None = None  # from smart charging (OCPP); None = no limit
    local_limit_a: float | None = None  # set on the charger (evsectl limit); None = no limit
    cable_a: float | None = None  # ampacity of the plugged cable from PP (socketed Type 2); None = not known
    overcurrent_tolerance_a: float = 2.0
    overcurrent_time_s: float = 10.0
    overcurrent_since: float | None = None  # drawing above offered + tolerance since
    overcurrent_off_at: float | None = None  # PWM withdrawn for over-current at
    pwm_changed_at: float = 0.0
    pwm_raise_at: float | None = None  # a deferred duty increase may apply from then
    pwm_prev_amps: float = 0.0  # before the last decrease: the EV may draw it for EV_FOLLOW_S more
    drawn_a: float = 0.0  # highest phase current at the last meter reading
    pwm_duty: float | None = None
    pwm_amps: float = 0.0
    pwm_since: float = 0.0
    pwm_off_at: float | None = None  # PWM withdrawn while the contactor was closed: the EV has 6 s to leave C
    locked: bool = False
    ever_charged: bool = False  # the EV has drawn (entered C) in this transaction
    contactor: bool = False
    diode_recheck_at: float | None = None
    diode_probe: bool = False  # PWM offered again despite a diode fault, to re-check the diode
    status: Status | None = None
    error_code: str = "NoError"

    @property
    def plugged(self) -> bool:
        return self.pilot not in (PilotState.A, PilotState.E, PilotState.F)

    def limits(self) -> dict[str, float]:
        """Every current limit that applies now, by source."""
        out = {"hardware": self.max_current_a}
        for source, value in (("cable", self.cable_a), ("ocpp", self.limit_a), ("local", self.local_limit_a)):
            if value is not None:
                out[source] = value
        return out

    @property
    def limit_source(self) -> str:
        limits = self.limits()
        return min(limits, key=lambda k: limits[k])

    @property
    def offered_a(self) -> float:
        limit = min(self.limits().values())
        return limit if limit >= MIN_CURRENT_A else 0.0  # below 6 A the EV must pause: no PWM, not a fault


class Station:
    def __init__(self, connectors: int, max_current_a: float, keys: Settings, *, fixed_cable: bool = False,
                 ventilation: bool = False) -> None:
        self.connectors = {i: Connector(i, max_current_a) for i in range(1, connectors + 1)}
        self._keys = keys
        # State D (EV needs ventilation) allows energy only where the site has ventilation.
        self._energy_states = CHARGING_STATES if ventilation else frozenset({PilotState.C})
        self.fixed_cable = fixed_cable  # a tethered cable has no socket lock to drive
        self.cp_available = True
        self._pending_card: tuple[str, str | None, float] | None = None  # card first, several connectors
        self._awaiting_auth: set[str] = set()
        self.cp_faults: dict[str, tuple[str, str]] = {}  # faults of the charge point itself (connector 0)
        self.cp_status: tuple[Status, str] = (Status.AVAILABLE, "NoError")

    # --- inputs ------------------------------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """Initial statuses once the board reports; called after the first pilot readings."""
        return [a for c in self.connectors.values() for a in self._update(c, now)] + self._update_cp()

    def restore_availability(self, operative: dict[int, bool]) -> None:
        """Persisted ChangeAvailability results from before a restart (0 = the charge point)."""
        self.cp_available = operative.get(0, True)
        for cid, c in self.connectors.items():
            # Each connector's own last value; connector 0's for those never set on their own.
            c.available = operative.get(cid, self.cp_available)
        self._update_cp()  # connector 0's status is reported at boot before any event arrives

    def pilot(self, connector: int, state: PilotState, diode_fault: bool, now: float) -> list[Action]:
        c = self.connectors[connector]
        previous = c.pilot
        c.pilot = state
        pwm_on = c.pwm_duty is not None
        if state in (PilotState.E, PilotState.F):
            # With an EV there (or a session) it is the EV link that failed; on an idle connector the pilot
            # circuit itself is at fault (a short in the socket or cable, a dead pilot generator).
            ev_side = c.tx is not None or previous not in (PilotState.A, PilotState.E, PilotState.F)
            if "pilot" not in c.faults or not c.faults["pilot"][1].startswith("pilot in state"):
                code = EV_COMMUNICATION if ev_side else "OtherError"
            else:
                code = c.faults["pilot"][0]
            c.faults["pilot"] = (code, f"pilot in state {state}")
        elif "pilot" in c.faults and c.faults["pilot"][1].startswith("pilot in state"):
            del c.faults["pilot"]
        if diode_fault and pwm_on:
            c.faults["diode"] = (EV_COMMUNICATION, "diode check failed")
            c.diode_recheck_at = now + DIODE_RECHECK_S
            c.diode_probe = False
        elif "diode" in c.faults and (state == PilotState.A or (pwm_on and not diode_fault)):
            del c.faults["diode"]
            c.diode_recheck_at = None
            c.diode_probe = False
        actions: list[Action] = []
        if state == PilotState.A and previous != PilotState.A:
            actions += self._unplugged(c, now)
        elif c.plugged and previous in (PilotState.A, PilotState.E, PilotState.F):
            actions += self._plugged(c, now)
        if c.stopping is not None and state not in CHARGING_STATES:
            actions += self._finish_stop(c, now)
        return actions + self._update(c, now)

    def meter(self, connector: int, energy_wh: float, power_w: float, now: float,
              current_a: tuple[float, ...] | None = None) -> list[Action]:
        c = self.connectors[connector]
        c.energy_wh = energy_wh
        c.power_w = power_w
        tx = c.tx
        if tx is not None and tx.invalid_cap_wh is not None and c.stopping is None \
                and energy_wh - tx.meter_start_wh >= tx.invalid_cap_wh:
            if tx.stop_when_invalid:
                return self._request_stop(c, StopReason.DEAUTHORIZED, None, now)
            return self._update(c, now)
        if current_a:
            c.drawn_a = max(current_a)
            return self._check_overcurrent(c, c.drawn_a, now)
        return []

    def configure_overcurrent(self, connector: int, tolerance_a: float, time_s: float) -> None:
        c = self.connectors[connector]
        c.overcurrent_tolerance_a, c.overcurrent_time_s = tolerance_a, time_s

    def set_cable(self, connector: int, amps: float | None, now: float) -> list[Action]:
        """The plugged cable's ampacity from PP (None: no cable coding, e.g. unplugged or a tethered cable)."""
        c = self.connectors[connector]
        c.cable_a = amps
        return self._update(c, now)

    def set_local_limit(self, connector: int, amps: float | None, now: float) -> list[Action]:
        c = self.connectors[connector]
        c.local_limit_a = amps
        return self._update(c, now)

    def _check_overcurrent(self, c: Connector, drawn_a: float, now: float) -> list[Action]:
        """The EV draws more than offered: withdraw the PWM (SuspendedEVSE); if it keeps drawing, a fault."""
        if c.overcurrent_off_at is not None:
            if drawn_a > c.overcurrent_tolerance_a and now >= c.overcurrent_off_at + STOP_UNDER_LOAD_TIMEOUT_S:
                return self._overcurrent_fault(c, drawn_a, now)
            return []
        allowed = c.pwm_amps
        if now < c.pwm_changed_at + EV_FOLLOW_S:
            allowed = max(allowed, c.pwm_prev_amps)  # the EV is still following a decrease
        if c.pwm_duty is None or not c.contactor or drawn_a <= allowed + c.overcurrent_tolerance_a:
            c.overcurrent_since = None
            return []
        if c.overcurrent_since is None:
            c.overcurrent_since = now
        if now - c.overcurrent_since < c.overcurrent_time_s:
            return []
        c.overcurrent_since = None
        c.overcurrent_off_at = now
        c.faults.pop("overcurrent", None)
        return self._update(c, now)

    def _overcurrent_fault(self, c: Connector, drawn_a: float, now: float) -> list[Action]:
        c.faults["overcurrent"] = ("OverCurrentFailure",
                                   f"EV kept drawing {drawn_a:.1f} A after the PWM was withdrawn")
        return self._update(c, now)

    def device_fault(self, connector: int, source: str, error_code: str, active: bool, info: str,
                     now: float) -> list[Action]:
        if connector == 0 and source in BLOCKING_SOURCES:
            # A blocking device shared by every connector (a meter bus, a ground-fault monitor).
            actions: list[Action] = []
            for cid in self.connectors:
                actions += self.device_fault(cid, source, error_code, active, info, now)
            return actions
        if connector == 0:
            # A charge-point-wide device that does not carry energy (the RFID reader) failing does not stop
            # the connectors; it is reported on connector 0.
            if active:
                self.cp_faults[source] = (error_code, info)
            else:
                self.cp_faults.pop(source, None)
            return self._update_cp()
        c = self.connectors[connector]
        if active:
            c.faults[source] = (error_code, info)
        else:
            c.faults.pop(source, None)
        return self._update(c, now)

    def contactor_state(self, connector: int, closed: bool) -> None:
        """What the supervisor actually did (it may refuse a close or open on its own)."""
        self.connectors[connector].contactor = closed

    def tag(self, id_tag: str, now: float) -> list[Action]:
        """A card on the reader: stop its own transaction or release its cable, else ask for authorization."""
        for c in self.connectors.values():
            if c.tx is not None and c.stopping is None and same_tag(c.tx.id_tag, id_tag):
                return self._request_stop(c, StopReason.LOCAL, id_tag, now)
        for c in self.connectors.values():
            if c.tx is None and c.lock_owner is not None and same_tag(c.lock_owner[0], id_tag):
                return self._release_lock(c, now)
        if id_tag in self._awaiting_auth:
            return []
        self._awaiting_auth.add(id_tag)
        return [RequestAuthorization(id_tag)]

    def authorization(self, id_tag: str, status: str, parent_id_tag: str | None, now: float) -> list[Action]:
        """The result of authorizing a card presented at the reader."""
        self._awaiting_auth.discard(id_tag)
        if status != "Accepted":
            return [AuthorizationRejected(id_tag, status)]
        if parent_id_tag:
            for c in self.connectors.values():
                if c.tx is not None and c.stopping is None and same_tag(c.tx.parent_id_tag, parent_id_tag):
                    return self._request_stop(c, StopReason.LOCAL, id_tag, now)
            for c in self.connectors.values():
                if c.tx is None and c.lock_owner is not None and same_tag(c.lock_owner[1], parent_id_tag):
                    return self._release_lock(c, now)
        target = self._connector_for_card()
        if target is None:
            return [AuthorizationRejected(id_tag, "NoConnectorAvailable")]
        return self._prepare(target, id_tag, parent_id_tag, now, bind=False)

    def remote_start(self, connector: int | None, id_tag: str, now: float) -> tuple[bool, list[Action]]:
        if connector is None:
            target = self._connector_for_card()
        else:
            target = self.connectors.get(connector)
            if target is not None and not self._can_prepare(target):
                target = None
        if target is None:
            return False, []
        return True, self._prepare(target, id_tag, None, now, bind=connector is not None)

    def can_start(self, connector: int | None) -> bool:
        """Whether a remote start for this connector (None = any) could begin now."""
        if connector is None:
            return self._connector_for_card() is not None
        c = self.connectors.get(connector)
        return c is not None and self._can_prepare(c)

    def stop(self, connector: int, reason: StopReason, now: float) -> list[Action]:
        c = self.connectors[connector]
        if c.tx is None or c.stopping is not None:
            return []
        return self._request_stop(c, reason, None, now)

    def stop_all(self, reason: StopReason, now: float) -> list[Action]:
        return [a for cid in self.connectors for a in self.stop(cid, reason, now)]

    def finish_stops(self, now: float) -> list[Action]:
        """Shutdown: end every pending stop now, even if the EV still draws (the process is going away)."""
        actions: list[Action] = []
        for c in self.connectors.values():
            if c.stopping is not None:
                actions += self._finish_stop(c, now)
            actions += self._update(c, now)
        return actions

    def resume_transaction(self, connector: int, id_tag: str, meter_start_wh: float,
                           parent_id_tag: str | None = None, last_meter_wh: float = 0.0) -> list[Action]:
        """A transaction persisted before a restart that is still running (the EV never left)."""
        c = self.connectors[connector]
        c.tx = _Tx(id_tag, parent_id_tag, meter_start_wh)
        # Until the meter answers again, the register is at least what was last persisted: a stop in that
        # moment must not report less energy than the transaction already had.
        c.energy_wh = max(c.energy_wh, last_meter_wh, meter_start_wh)
        c.ever_charged = True
        return self._lock(c, True, force=True)  # the lock state after a restart is unknown: command it again

    def transaction_confirmed(self, connector: int, status: str, parent_id_tag: str | None,
                              now: float) -> list[Action]:
        """StartTransaction.conf arrived for the running transaction on this connector."""
        c = self.connectors[connector]
        if c.tx is None:
            return []
        if parent_id_tag:
            c.tx.parent_id_tag = parent_id_tag
        if status == "Accepted":
            return []
        # Errata 3.17: not accepted while still running -> stop (DeAuthorized) or only stop the energy, after
        # at most MaxEnergyOnInvalidId.
        c.tx.invalid_cap_wh = float(self._keys["MaxEnergyOnInvalidId"])
        c.tx.stop_when_invalid = bool(self._keys["StopTransactionOnInvalidId"])
        return self.meter(connector, c.energy_wh, c.power_w, now) or self._update(c, now)

    def change_availability(self, connector: int, operative: bool, now: float) -> tuple[str, list[Action]]:
        """ChangeAvailability: Accepted, Scheduled (a transaction runs; applied when it ends) or Rejected."""
        if connector == 0:
            targets = list(self.connectors.values())
            self.cp_available = operative
            actions: list[Action] = [AvailabilityChanged(0, operative)]
        elif connector in self.connectors:
            targets = [self.connectors[connector]]
            actions = []
        else:
            return "Rejected", []
        scheduled = False
        for c in targets:
            actions.append(AvailabilityChanged(c.id, operative))
            if operative:
                c.available = True
                c.unavailable_scheduled = False
            elif c.tx is not None:
                c.unavailable_scheduled = True
                scheduled = True
            else:
                c.available = False
                c.prepared = None
            actions += self._update(c, now)
        if not operative and self._pending_card is not None and not any(
                self._can_prepare(c) for c in self.connectors.values()):
            self._pending_card = None
        actions += self._update_cp()
        return ("Scheduled" if scheduled else "Accepted"), actions

    def unlock(self, connector: int, now: float) -> tuple[str, list[Action]]:
        """UnlockConnector: NotSupported for a fixed cable or an unknown connector; a running transaction is
        stopped first (UnlockCommand) and the lock opens when it has ended. 'Accepted' means an UnlockDone will
        follow."""
        c = self.connectors.get(connector)
        if c is None or self.fixed_cable:
            return "NotSupported", []
        if c.tx is not None:
            c.unlock_after_stop = True
            if c.stopping is None:
                return "Accepted", self._request_stop(c, StopReason.UNLOCK_COMMAND, None, now)
            return "Accepted", []
        return "Accepted", self._release_lock(c, now, force=True)

    def set_limit(self, connector: int, amps: float | None, now: float) -> list[Action]:
        c = self.connectors[connector]
        c.limit_a = amps
        return self._update(c, now)

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self._pending_card is not None and now >= self._pending_card[2]:
            self._pending_card = None
        timeout = float(self._keys["ConnectionTimeOut"])
        for c in self.connectors.values():
            if c.prepared is not None and now >= c.prepared[2]:
                c.prepared = None  # ConnectionTimeOut: the user never plugged in
            if self._plug_timed_out(c, now, timeout):
                # Errata 3.20 (B6): plugged but no card in time. With several connectors sharing one reader
                # the connector goes to Finishing so the next card does not start on this cable by accident.
                c.finishing = True
            if c.stopping is not None and now >= c.stopping[2]:
                actions += self._finish_stop(c, now)
            if (deadline := self._overcurrent_deadline(c)) is not None and now >= deadline:
                if c.contactor and c.pilot in CHARGING_STATES:
                    # It neither followed the offered current nor stopped when the PWM went: forced open.
                    actions += self._overcurrent_fault(c, c.drawn_a, now)
                else:
                    c.overcurrent_off_at = None  # the pause is over: offer energy again
            if c.diode_recheck_at is not None and now >= c.diode_recheck_at:
                c.diode_recheck_at = now + DIODE_RECHECK_S
                c.diode_probe = True
            actions += self._update(c, now)
        return actions

    def next_deadline(self) -> float | None:
        timeout = float(self._keys["ConnectionTimeOut"])
        times = [t for c in self.connectors.values()
                 for t in (c.prepared[2] if c.prepared else None, c.stopping[2] if c.stopping else None,
                           c.diode_recheck_at, self._grace_end(c), c.pwm_raise_at,
                           self._overcurrent_deadline(c),
                           c.pwm_off_at + STOP_UNDER_LOAD_TIMEOUT_S if c.pwm_off_at is not None and c.contactor
                           else None,
                           c.plugged_at + timeout if self._plug_timeout_applies(c) and c.plugged_at is not None
                           else None) if t is not None]
        if self._pending_card is not None:
            times.append(self._pending_card[2])
        return min(times) if times else None

    @staticmethod
    def _overcurrent_deadline(c: Connector) -> float | None:
        if c.overcurrent_off_at is None or "overcurrent" in c.faults:
            return None
        if c.contactor and c.pilot in CHARGING_STATES:
            return c.overcurrent_off_at + STOP_UNDER_LOAD_TIMEOUT_S
        return c.overcurrent_off_at + OVERCURRENT_RETRY_S

    def _plug_timeout_applies(self, c: Connector) -> bool:
        return (len(self.connectors) > 1 and c.plugged and c.tx is None and c.prepared is None
                and not c.finishing and c.plugged_at is not None)

    def _plug_timed_out(self, c: Connector, now: float, timeout: float) -> bool:
        return self._plug_timeout_applies(c) and c.plugged_at is not None and now >= c.plugged_at + timeout

    def _grace_end(self, c: Connector) -> float | None:
        if c.tx is None or c.ever_charged or c.pwm_duty is None or c.status != Status.PREPARING:
            return None
        return c.pwm_since + EV_REACTION_GRACE_S

    # --- internals ---------------------------------------------------------------------------------------
    def _can_prepare(self, c: Connector) -> bool:
        return c.available and not c.faults and c.tx is None and c.prepared is None

    def _connector_for_card(self) -> Connector | None:
        free = [c for c in self.connectors.values() if self._can_prepare(c)]
        if len(self.connectors) > 1:
            # A cable left plugged after a session or a timeout (Finishing) is not taken by the next card.
            free = [c for c in free if not (c.finishing and c.plugged)]
        plugged = [c for c in free if c.plugged]
        if plugged:
            return plugged[0]
        return free[0] if free else None

    def _prepare(self, c: Connector, id_tag: str, parent: str | None, now: float, bind: bool) -> list[Action]:
        if c.plugged:
            return self._start_tx(c, id_tag, parent, now)
        deadline = now + float(self._keys["ConnectionTimeOut"])
        free = [x for x in self.connectors.values() if self._can_prepare(x)]
        if not bind and len(free) > 1:
            # With several free connectors the card is not bound until the EV plugs in somewhere.
            self._pending_card = (id_tag, parent, deadline)
            return []
        c.prepared = (id_tag, parent, deadline)
        return self._update(c, now)

    def _plugged(self, c: Connector, now: float) -> list[Action]:
        c.finishing = False
        c.plugged_at = now
        if c.tx is not None:
            return []  # a transaction kept across an unplug (StopTransactionOnEVSideDisconnect = false)
        if c.prepared is not None:
            id_tag, parent, _ = c.prepared
            c.prepared = None
            return self._start_tx(c, id_tag, parent, now)
        if self._pending_card is not None and self._can_prepare(c):
            id_tag, parent, _ = self._pending_card
            self._pending_card = None
            return self._start_tx(c, id_tag, parent, now)
        return []

    def _open(self, c: Connector) -> list[Action]:
        if not c.contactor:
            return []
        c.contactor = False
        return [SetContactor(c.id, False)]

    def _lock(self, c: Connector, locked: bool, force: bool = False) -> list[Action]:
        if self.fixed_cable or (c.locked == locked and not force):
            return []
        c.locked = locked
        return [SetLock(c.id, locked)]

    def _release_lock(self, c: Connector, now: float, force: bool = False) -> list[Action]:
        c.lock_owner = None
        actions = self._lock(c, False, force=force)
        if force:
            actions.append(UnlockDone(c.id))
        return actions + self._update(c, now)

    def _unplugged(self, c: Connector, now: float) -> list[Action]:
        c.finishing = False
        c.plugged_at = None
        # An over-current episode belongs to the EV that caused it.
        c.overcurrent_since = c.overcurrent_off_at = None
        c.faults.pop("overcurrent", None)
        actions: list[Action] = [*self._open(c)]
        stop_it = c.stopping is not None or bool(self._keys["StopTransactionOnEVSideDisconnect"])
        if c.tx is not None and not stop_it:
            return actions  # the transaction and the lock stay until the user comes back (section 3.?.5)
        if c.tx is not None:
            reason = c.stopping[0] if c.stopping is not None else StopReason.EV_DISCONNECTED
            id_tag = c.stopping[1] if c.stopping is not None else None
            c.stopping = (reason, id_tag, now)
            if not bool(self._keys["UnlockConnectorOnEVSideDisconnect"]) and reason == StopReason.EV_DISCONNECTED:
                c.lock_owner = (c.tx.id_tag, c.tx.parent_id_tag)
            actions += self._finish_stop(c, now)
        if c.lock_owner is None or c.unlock_after_stop:
            actions += self._lock(c, False)
        return actions

    def _start_tx(self, c: Connector, id_tag: str, parent: str | None, now: float) -> list[Action]:
        c.tx = _Tx(id_tag, parent, c.energy_wh)
        c.prepared = None
        c.finishing = False
        c.ever_charged = False
        c.lock_owner = None
        return [*self._lock(c, True), TransactionStarted(c.id, id_tag, c.energy_wh, now, parent), *self._update(c, now)]

    def _request_stop(self, c: Connector, reason: StopReason, id_tag: str | None, now: float) -> list[Action]:
        c.stopping = (reason, id_tag, now + STOP_UNDER_LOAD_TIMEOUT_S)
        actions = self._set_pwm(c, None, now)
        if not (c.contactor and c.pilot in CHARGING_STATES):
            actions += self._finish_stop(c, now)
        return actions + self._update(c, now)

    def _finish_stop(self, c: Connector, now: float) -> list[Action]:
        if c.tx is None or c.stopping is None:
            return []
        reason, id_tag, _ = c.stopping
        tx = c.tx
        c.tx = None
        c.stopping = None
        c.finishing = c.plugged
        actions: list[Action] = [*self._open(c), *self._set_pwm(c, None, now)]
        actions.append(TransactionStopped(c.id, c.energy_wh, now, reason, id_tag))
        if reason == StopReason.DEAUTHORIZED and c.plugged:
            # Errata 3.5: keep the cable locked until the same identifier (or one with its parent) is shown.
            c.lock_owner = (tx.id_tag, tx.parent_id_tag)
        if c.unlock_after_stop:
            c.unlock_after_stop = False
            actions += self._release_lock(c, now, force=True)
        elif not c.plugged and c.lock_owner is None:
            actions += self._lock(c, False)
        if c.unavailable_scheduled:
            c.unavailable_scheduled = False
            c.available = False
        return actions

    def _wants_pwm(self, c: Connector) -> bool:
        blocking = set(c.faults) - ({"diode"} if c.diode_probe else set())
        return (c.tx is not None and c.stopping is None and c.plugged and not blocking and c.offered_a > 0
                and not self._energy_withheld(c) and c.overcurrent_off_at is None)

    @staticmethod
    def _energy_withheld(c: Connector) -> bool:
        tx = c.tx
        return (tx is not None and tx.invalid_cap_wh is not None
                and c.energy_wh - tx.meter_start_wh >= tx.invalid_cap_wh)

    def _set_pwm(self, c: Connector, amps: float | None, now: float) -> list[Action]:
        duty = duty_for_current(amps) if amps else None
        if duty == c.pwm_duty:
            c.pwm_raise_at = None
            return []
        if duty is not None and c.pwm_duty is not None and duty > c.pwm_duty \
                and now < c.pwm_changed_at + DUTY_UPDATE_INTERVAL_S:
            c.pwm_raise_at = c.pwm_changed_at + DUTY_UPDATE_INTERVAL_S
            return []  # an increase waits; tick() applies it when the interval is over
        c.pwm_raise_at = None
        if c.pwm_duty is None:
            c.pwm_since = now
            c.pwm_off_at = None
        elif duty is None and c.contactor:
            c.pwm_off_at = now
        c.pwm_prev_amps = c.pwm_amps
        c.pwm_changed_at = now
        c.pwm_duty = duty
        c.pwm_amps = amps if duty is not None and amps is not None else 0.0
        return [SetPwm(c.id, duty, c.pwm_amps)]

    def _update(self, c: Connector, now: float) -> list[Action]:
        """Bring PWM and contactor in line with the state, then report a status change."""
        actions: list[Action] = []
        actions += self._set_pwm(c, c.offered_a if self._wants_pwm(c) else None, now)
        in_c = c.pilot in self._energy_states
        want_closed = c.tx is not None and c.stopping is None and c.pwm_duty is not None and in_c and not c.faults
        # PWM withdrawn under load (C2 -> C1): give the EV time to stop drawing and go to B before opening,
        # unless a fault demands it now (IEC 61851-1: never switch under load except to end a fault).
        grace = (c.contactor and in_c and not c.faults and c.pwm_off_at is not None
                 and now < c.pwm_off_at + STOP_UNDER_LOAD_TIMEOUT_S)
        if want_closed and not c.contactor:
            c.contactor = True
            actions.append(SetContactor(c.id, True))
        elif not want_closed and c.contactor and not grace:
            actions += self._open(c)
        if c.tx is not None and c.pilot in CHARGING_STATES:
            c.ever_charged = True
        status, error_code, info = self.status_of(c, now)
        if (status, error_code) != (c.status, c.error_code):
            c.status, c.error_code = status, error_code
            actions.append(StatusChanged(c.id, status, error_code, info))
        return actions

    def _update_cp(self) -> list[Action]:
        """Connector 0: Faulted by a charge-point-wide fault, Unavailable when set inoperative."""
        if self.cp_faults:
            code, text = next(iter(self.cp_faults.values()))
            status: tuple[Status, str] = (Status.FAULTED, code)
        else:
            code, text = "NoError", ""
            status = (Status.AVAILABLE if self.cp_available else Status.UNAVAILABLE, code)
        if status == self.cp_status:
            return []
        self.cp_status = status
        return [StatusChanged(0, status[0], code, text)]

    def status_of(self, c: Connector, now: float) -> tuple[Status, str, str]:
        hard = [(code, info) for code, info in c.faults.values() if code != EV_COMMUNICATION]
        if hard:
            return Status.FAULTED, hard[0][0], hard[0][1]
        if not c.available and c.tx is None:
            return Status.UNAVAILABLE, "NoError", ""
        if c.faults:  # only EV communication warnings: energy is withheld, the session goes on
            info = next(iter(c.faults.values()))[1]
            if c.tx is not None:
                return Status.SUSPENDED_EVSE, EV_COMMUNICATION, info
            return (Status.FINISHING if c.finishing else Status.PREPARING), EV_COMMUNICATION, info
        if c.tx is not None:
            if c.stopping is not None:
                return Status.SUSPENDED_EVSE, "NoError", "stopping"
            if not c.plugged:
                # StopTransactionOnEVSideDisconnect = false: the EVSE would offer energy, the EV is gone.
                return Status.SUSPENDED_EV, "NoError", "EV disconnected"
            if self._energy_withheld(c):
                return Status.SUSPENDED_EVSE, "NoError", "idTag not accepted"
            if c.overcurrent_off_at is not None:
                return Status.SUSPENDED_EVSE, "OverCurrentFailure", "EV drew more than offered; PWM withdrawn"
            if c.pilot == PilotState.D and c.pilot not in self._energy_states:
                return Status.SUSPENDED_EVSE, "NoError", "EV requests ventilation (state D), none available"
            if c.pwm_duty is None:
                return Status.SUSPENDED_EVSE, "NoError", "no current offered"
            if c.pilot in CHARGING_STATES:
                return Status.CHARGING, "NoError", ""
            if not c.ever_charged and now < c.pwm_since + EV_REACTION_GRACE_S:
                return Status.PREPARING, "NoError", "waiting for the EV"
            return Status.SUSPENDED_EV, "NoError", ""
        if c.finishing and c.plugged:
            return Status.FINISHING, "NoError", ""
        if c.lock_owner is not None and not self.fixed_cable:
            # The cable hangs locked in the socket for its owner's card (section 4.10, errata 3.5).
            return Status.FINISHING, "NoError", "cable locked for its owner"
        if c.plugged or c.prepared is not None:
            return Status.PREPARING, "NoError", ""
        return Status.AVAILABLE, "NoError", ""
