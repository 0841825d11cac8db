"""The charging core (evsed.core.station.Station): events in, actions out, virtual time."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from evsed.core.pilot import PilotState
from evsed.core.station import (
    DIODE_RECHECK_S,
    EV_REACTION_GRACE_S,
    STOP_UNDER_LOAD_TIMEOUT_S,
    Action,
    AuthorizationRejected,
    AvailabilityChanged,
    RequestAuthorization,
    SetContactor,
    SetLock,
    SetPwm,
    Station,
    Status,
    StatusChanged,
    StopReason,
    TransactionStarted,
    TransactionStopped,
    UnlockDone,
)

A, B, C, D, E, F = (PilotState.A, PilotState.B, PilotState.C, PilotState.D, PilotState.E, PilotState.F)
T = TypeVar("T")
DUTY_32A = 53.3
DUTY_16A = 26.6


def make_keys(**overrides: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {"ConnectionTimeOut": 60, "StopTransactionOnEVSideDisconnect": True,
                            "UnlockConnectorOnEVSideDisconnect": True, "StopTransactionOnInvalidId": True,
                            "MaxEnergyOnInvalidId": 0}
    keys.update(overrides)
    return keys


def of(actions: list[Action], kind: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, kind)]


def statuses(actions: list[Action], connector: int = 1) -> list[Status]:
    return [a.status for a in of(actions, StatusChanged) if a.connector == connector]


def index(actions: list[Action], match: Any) -> int:
    for i, a in enumerate(actions):
        if a == match:
            return i
    raise AssertionError(f"{match!r} not in {actions!r}")


def contactor_cmds(actions: list[Action], connector: int = 1) -> list[bool]:
    return [a.closed for a in of(actions, SetContactor) if a.connector == connector]


def new_station(connectors: int = 1, max_a: float = 32.0, **keys: Any) -> tuple[Station, list[Action]]:
    st = Station(connectors, max_a, make_keys(**keys))
    return st, st.start(0.0)


def authorize(st: Station, tag: str, now: float, parent: str | None = None) -> list[Action]:
    first = st.tag(tag, now)
    assert first == [RequestAuthorization(tag)]
    return st.authorization(tag, "Accepted", parent, now)


def charging_station(**keys: Any) -> Station:
    """One connector, plug-first, card 'TAG' (parent 'GROUP'), EV in C at t=2."""
    st, _ = new_station(**keys)
    st.pilot(1, B, False, 1.0)
    authorize(st, "TAG", 1.0, parent="GROUP")
    st.pilot(1, C, False, 2.0)
    c = st.connectors[1]
    assert c.contactor and c.tx is not None and c.status == Status.CHARGING
    return st


# --- start-up -----------------------------------------------------------------------------------------------
def test_start_reports_available_for_every_connector() -> None:
    st, actions = new_station(connectors=3)
    assert actions == [StatusChanged(i, Status.AVAILABLE, "NoError", "") for i in (1, 2, 3)]
    assert st.next_deadline() is None
    assert st.tick(100.0) == []


def test_status_is_reported_only_on_change() -> None:
    st, _ = new_station()
    assert statuses(st.pilot(1, B, False, 1.0)) == [Status.PREPARING]
    assert st.pilot(1, B, False, 2.0) == []
    assert st.tick(3.0) == []


# --- plug first ------------------------------------------------------------------------------------------------
def test_plug_first_flow() -> None:
    st, first = new_station()
    seen: list[Action] = list(first)
    seen += st.pilot(1, B, False, 1.0)
    assert statuses(seen) == [Status.AVAILABLE, Status.PREPARING]

    assert st.tag("TAG", 2.0) == [RequestAuthorization("TAG")]
    auth = st.authorization("TAG", "Accepted", None, 3.0)
    assert auth == [SetLock(1, True), TransactionStarted(1, "TAG", 0.0, 3.0), SetPwm(1, DUTY_32A, 32.0)]
    assert contactor_cmds(auth) == []  # no contactor before the EV asks for energy in C
    seen += auth

    charging = st.pilot(1, C, False, 4.0)
    assert charging == [SetContactor(1, True), StatusChanged(1, Status.CHARGING, "NoError", "")]
    seen += charging
    assert statuses(seen) == [Status.AVAILABLE, Status.PREPARING, Status.CHARGING]


def test_transaction_started_carries_meter_reading() -> None:
    st, _ = new_station()
    st.meter(1, 12345.0, 0.0, 0.0)
    st.pilot(1, B, False, 1.0)
    actions = authorize(st, "TAG", 2.0)
    assert of(actions, TransactionStarted) == [TransactionStarted(1, "TAG", 12345.0, 2.0)]


def test_max_current_sets_duty() -> None:
    st, _ = new_station(max_a=16.0)
    st.pilot(1, B, False, 1.0)
    assert of(authorize(st, "TAG", 2.0), SetPwm) == [SetPwm(1, DUTY_16A, 16.0)]


def test_ev_reaction_grace_keeps_preparing_then_suspended_ev() -> None:
    st, _ = new_station()
    st.pilot(1, B, False, 1.0)
    authorize(st, "TAG", 10.0)  # PWM offered at t=10
    assert st.connectors[1].status == Status.PREPARING
    assert st.next_deadline() == pytest.approx(10.0 + EV_REACTION_GRACE_S)
    assert st.tick(10.0 + EV_REACTION_GRACE_S - 0.01) == []
    assert st.connectors[1].status == Status.PREPARING
    assert st.tick(10.0 + EV_REACTION_GRACE_S) == [StatusChanged(1, Status.SUSPENDED_EV, "NoError", "")]
    assert st.next_deadline() is None
    # The EV finally closes S2.
    assert st.pilot(1, C, False, 20.0) == [SetContactor(1, True), StatusChanged(1, Status.CHARGING, "NoError", "")]


def test_ev_reacting_within_grace_goes_straight_to_charging() -> None:
    st, _ = new_station()
    seen = st.pilot(1, B, False, 1.0)
    seen += authorize(st, "TAG", 2.0)
    seen += st.tick(3.0)
    seen += st.pilot(1, C, False, 4.5)
    seen += st.tick(10.0)
    assert statuses(seen) == [Status.PREPARING, Status.CHARGING]


def test_pilot_d_charges_only_with_ventilation() -> None:
    st = Station(1, 32.0, make_keys(), ventilation=True)
    st.start(0.0)
    st.pilot(1, B, False, 1.0)
    authorize(st, "TAG", 1.0)
    assert st.pilot(1, D, False, 2.0) == [SetContactor(1, True), StatusChanged(1, Status.CHARGING, "NoError", "")]


def test_pilot_d_without_ventilation_suspends_without_closing() -> None:
    st, _ = new_station()
    st.pilot(1, B, False, 1.0)
    authorize(st, "TAG", 1.0)
    seen = st.pilot(1, D, False, 2.0)
    assert contactor_cmds(seen) == []
    assert statuses(seen) == [Status.SUSPENDED_EVSE]
    # The EV may still go to C and charge (the PWM stays on).
    assert contactor_cmds(st.pilot(1, C, False, 3.0)) == [True]


# --- card first ----------------------------------------------------------------------------------------------
def test_card_first_flow() -> None:
    st, _ = new_station()
    auth = authorize(st, "TAG", 1.0)
    assert auth == [StatusChanged(1, Status.PREPARING, "NoError", "")]  # prepared, nothing plugged yet
    assert of(auth, TransactionStarted) == []
    plugged = st.pilot(1, B, False, 5.0)
    assert plugged == [SetLock(1, True), TransactionStarted(1, "TAG", 0.0, 5.0), SetPwm(1, DUTY_32A, 32.0)]
    assert st.connectors[1].status == Status.PREPARING  # unchanged: no duplicate StatusChanged
    charging = st.pilot(1, C, False, 6.0)
    assert charging == [SetContactor(1, True), StatusChanged(1, Status.CHARGING, "NoError", "")]


def test_connection_timeout_expires_card_first_preparation() -> None:
    st, _ = new_station(ConnectionTimeOut=30)
    authorize(st, "TAG", 100.0)
    assert st.connectors[1].prepared is not None
    assert st.next_deadline() == pytest.approx(130.0)
    assert st.tick(129.99) == []
    assert st.tick(130.0) == [StatusChanged(1, Status.AVAILABLE, "NoError", "")]
    assert st.connectors[1].prepared is None
    assert st.next_deadline() is None
    # Plugging in afterwards does not start the expired transaction.
    late = st.pilot(1, B, False, 131.0)
    assert of(late, TransactionStarted) == []
    assert statuses(late) == [Status.PREPARING]


def test_connection_timeout_is_read_from_keys_at_authorization() -> None:
    keys = make_keys(ConnectionTimeOut=10)
    st = Station(1, 32.0, keys)
    st.start(0.0)
    keys["ConnectionTimeOut"] = "45"  # a live change (string form is accepted too)
    authorize(st, "TAG", 0.0)
    assert st.next_deadline() == pytest.approx(45.0)


def test_plug_in_before_timeout_starts() -> None:
    st, _ = new_station(ConnectionTimeOut=30)
    authorize(st, "TAG", 0.0)
    assert of(st.pilot(1, B, False, 29.9), TransactionStarted) == [TransactionStarted(1, "TAG", 0.0, 29.9)]
    assert st.tick(31.0) == []  # the deadline is gone with the preparation


# --- local stop -------------------------------------------------------------------------------------------------
def test_same_card_stops_with_reason_local() -> None:
    st = charging_station()
    stop = st.tag("TAG", 10.0)
    assert stop[0] == SetPwm(1, None, 0.0)  # PWM off first
    assert contactor_cmds(stop) == []  # the contactor stays closed while the EV is in C
    assert of(stop, TransactionStopped) == []
    assert statuses(stop) == [Status.SUSPENDED_EVSE]
    assert st.connectors[1].stopping is not None

    ev_b = st.pilot(1, B, False, 11.0)
    open_at = index(ev_b, SetContactor(1, False))
    stopped = TransactionStopped(1, 0.0, 11.0, StopReason.LOCAL, "TAG")
    assert index(ev_b, stopped) > open_at
    assert True not in contactor_cmds(ev_b)
    assert statuses(ev_b) == [Status.FINISHING]
    assert st.connectors[1].tx is None
    # Unplug: unlock and back to Available.
    unplug = st.pilot(1, A, False, 12.0)
    assert SetLock(1, False) in unplug
    assert statuses(unplug) == [Status.AVAILABLE]


def test_stop_reports_the_meter_at_stop() -> None:
    st = charging_station()
    st.meter(1, 4321.0, 7000.0, 0.0)
    st.tag("TAG", 10.0)
    st.meter(1, 4330.0, 0.0, 0.0)
    ev_b = st.pilot(1, B, False, 11.0)
    assert of(ev_b, TransactionStopped) == [TransactionStopped(1, 4330.0, 11.0, StopReason.LOCAL, "TAG")]


def test_same_card_twice_while_stopping_does_not_ask_for_authorization_twice() -> None:
    st = charging_station()
    st.tag("TAG", 10.0)
    # The transaction is stopping: the card is treated like any other card.
    assert st.tag("TAG", 10.5) == [RequestAuthorization("TAG")]
    assert st.tag("TAG", 10.6) == []  # already waiting for that authorization


def test_card_with_same_parent_stops() -> None:
    st = charging_station()
    assert st.tag("OTHER", 10.0) == [RequestAuthorization("OTHER")]
    stop = st.authorization("OTHER", "Accepted", "GROUP", 10.5)
    assert stop[0] == SetPwm(1, None, 0.0)
    assert statuses(stop) == [Status.SUSPENDED_EVSE]
    ev_b = st.pilot(1, B, False, 11.0)
    assert of(ev_b, TransactionStopped) == [TransactionStopped(1, 0.0, 11.0, StopReason.LOCAL, "OTHER")]


def test_card_with_other_parent_does_not_stop() -> None:
    st = charging_station()
    st.tag("OTHER", 10.0)
    actions = st.authorization("OTHER", "Accepted", "ELSEWHERE", 10.5)
    assert actions == [AuthorizationRejected("OTHER", "NoConnectorAvailable")]
    assert st.connectors[1].stopping is None
    assert st.connectors[1].tx is not None


def test_other_card_without_parent_does_not_stop() -> None:
    st = charging_station()
    st.tag("OTHER", 10.0)
    assert st.authorization("OTHER", "Accepted", None, 10.5) == [AuthorizationRejected("OTHER",
                                                                                      "NoConnectorAvailable")]
    assert st.connectors[1].tx is not None


# --- rejected authorization ---------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["Invalid", "Blocked", "Expired", "ConcurrentTx"])
def test_rejected_authorization(status: str) -> None:
    st, _ = new_station()
    st.pilot(1, B, False, 1.0)
    assert st.tag("BAD", 2.0) == [RequestAuthorization("BAD")]
    assert st.tag("BAD", 2.1) == []  # already asked
    actions = st.authorization("BAD", status, None, 3.0)
    assert actions == [AuthorizationRejected("BAD", status)]
    c = st.connectors[1]
    assert c.tx is None and c.prepared is None and c.pwm_duty is None
    assert st.tick(100.0) == []
    assert st.tag("BAD", 4.0) == [RequestAuthorization("BAD")]  # may be presented again


def test_rejected_card_does_not_stop_running_transaction_of_parent() -> None:
    st = charging_station()
    st.tag("OTHER", 10.0)
    assert st.authorization("OTHER", "Invalid", "GROUP", 10.5) == [AuthorizationRejected("OTHER", "Invalid")]
    assert st.connectors[1].stopping is None


# --- unplug -----------------------------------------------------------------------------------------------------
def test_unplug_while_charging_stops_with_ev_disconnected() -> None:
    st = charging_station()
    st.meter(1, 900.0, 11000.0, 0.0)
    actions = st.pilot(1, A, False, 10.0)
    assert actions[0] == SetContactor(1, False)
    assert True not in contactor_cmds(actions)
    stopped = of(actions, TransactionStopped)
    assert stopped == [TransactionStopped(1, 900.0, 10.0, StopReason.EV_DISCONNECTED, None)]
    assert index(actions, stopped[0]) > index(actions, SetContactor(1, False))
    assert SetPwm(1, None, 0.0) in actions
    assert SetLock(1, False) in actions
    assert statuses(actions) == [Status.AVAILABLE]
    c = st.connectors[1]
    assert c.tx is None and not c.contactor and c.pwm_duty is None


def test_unplug_during_a_pending_stop_keeps_the_stop_reason() -> None:
    st = charging_station()
    st.tag("TAG", 10.0)
    actions = st.pilot(1, A, False, 11.0)
    assert of(actions, TransactionStopped) == [TransactionStopped(1, 0.0, 11.0, StopReason.LOCAL, "TAG")]
    assert statuses(actions) == [Status.AVAILABLE]


def test_stop_on_ev_side_disconnect_false_keeps_transaction() -> None:
    st = charging_station(StopTransactionOnEVSideDisconnect=False)
    actions = st.pilot(1, A, False, 10.0)
    assert of(actions, TransactionStopped) == []
    assert SetContactor(1, False) in actions
    assert SetPwm(1, None, 0.0) in actions
    # The EVSE is willing, the EV has gone: SuspendedEV; the cable stays locked (spec 4.10 note).
    assert statuses(actions) == [Status.SUSPENDED_EV]
    assert of(actions, SetLock) == []
    assert st.connectors[1].tx is not None
    # Plugged in again: the same transaction continues.
    back = st.pilot(1, B, False, 20.0)
    assert of(back, TransactionStarted) == []
    assert SetPwm(1, DUTY_32A, 32.0) in back
    assert statuses(back) == []  # still SuspendedEV: it has charged before, so no Preparing grace
    assert statuses(st.pilot(1, C, False, 21.0)) == [Status.CHARGING]
    # A card stop still ends it.
    st.tag("TAG", 30.0)
    assert of(st.pilot(1, B, False, 31.0), TransactionStopped)[0].reason == StopReason.LOCAL


# --- suspend by the EV -----------------------------------------------------------------------------------------
def test_ev_suspends_c_to_b_and_resumes() -> None:
    st = charging_station()
    suspend = st.pilot(1, B, False, 10.0)
    assert suspend == [SetContactor(1, False), StatusChanged(1, Status.SUSPENDED_EV, "NoError", "")]
    assert st.connectors[1].tx is not None
    assert st.connectors[1].pwm_duty == pytest.approx(DUTY_32A)  # the offer stays
    resume = st.pilot(1, C, False, 20.0)
    assert resume == [SetContactor(1, True), StatusChanged(1, Status.CHARGING, "NoError", "")]


# --- remote start / stop --------------------------------------------------------------------------------------
def test_remote_start_on_plugged_connector_starts_now() -> None:
    st, _ = new_station()
    st.pilot(1, B, False, 1.0)
    ok, actions = st.remote_start(1, "REMOTE", 2.0)
    assert ok
    assert actions == [SetLock(1, True), TransactionStarted(1, "REMOTE", 0.0, 2.0), SetPwm(1, DUTY_32A, 32.0)]


def test_remote_start_on_unplugged_connector_prepares() -> None:
    st, _ = new_station()
    ok, actions = st.remote_start(1, "REMOTE", 2.0)
    assert ok
    assert actions == [StatusChanged(1, Status.PREPARING, "NoError", "")]
    assert of(st.pilot(1, B, False, 3.0), TransactionStarted) == [TransactionStarted(1, "REMOTE", 0.0, 3.0)]


def test_remote_start_without_connector_picks_plugged_one() -> None:
    st, _ = new_station(connectors=2)
    st.pilot(2, B, False, 1.0)
    ok, actions = st.remote_start(None, "REMOTE", 2.0)
    assert ok
    assert of(actions, TransactionStarted) == [TransactionStarted(2, "REMOTE", 0.0, 2.0)]


def test_remote_start_without_connector_single_connector() -> None:
    st, _ = new_station()
    ok, actions = st.remote_start(None, "REMOTE", 2.0)
    assert ok
    assert statuses(actions) == [Status.PREPARING]


def test_remote_start_on_busy_connector_is_refused() -> None:
    st = charging_station()
    assert st.remote_start(1, "REMOTE", 10.0) == (False, [])
    assert st.remote_start(None, "REMOTE", 10.0) == (False, [])
    assert st.connectors[1].tx is not None and st.connectors[1].tx.id_tag == "TAG"


def test_remote_start_on_prepared_connector_is_refused() -> None:
    st, _ = new_station()
    authorize(st, "TAG", 1.0)
    assert st.remote_start(1, "REMOTE", 2.0) == (False, [])


def test_remote_start_on_faulted_connector_is_refused() -> None:
    st, _ = new_station()
    st.device_fault(1, "meter", "PowerMeterFailure", True, "no answer", 1.0)
    assert st.remote_start(1, "REMOTE", 2.0) == (False, [])
    assert st.remote_start(None, "REMOTE", 2.0) == (False, [])


def test_remote_start_on_unknown_connector_is_refused() -> None:
    st, _ = new_station()
    assert st.remote_start(2, "REMOTE", 1.0) == (False, [])
    assert st.remote_start(0, "REMOTE", 1.0) == (False, [])


def test_remote_start_on_unavailable_connector_is_refused() -> None:
    st, _ = new_station()
    st.connectors[1].available = False
    assert st.remote_start(1, "REMOTE", 1.0) == (False, [])


def test_remote_start_on_explicit_connector_binds_to_that_connector() -> None:
    st, _ = new_station(connectors=2)
    ok, actions = st.remote_start(2, "REMOTE", 1.0)
    assert ok
    assert statuses(actions, connector=2) == [Status.PREPARING]
    # The EV is plugged into connector 1: connector 2's remote start must not start there.
    assert of(st.pilot(1, B, False, 2.0), TransactionStarted) == []
    assert of(st.pilot(2, B, False, 3.0), TransactionStarted) == [TransactionStarted(2, "REMOTE", 0.0, 3.0)]


def test_remote_stop_while_charging() -> None:
    st = charging_station()
    stop = st.stop(1, StopReason.REMOTE, 10.0)
    assert stop == [SetPwm(1, None, 0.0), StatusChanged(1, Status.SUSPENDED_EVSE, "NoError", "stopping")]
    ev_b = st.pilot(1, B, False, 11.0)
    assert of(ev_b, TransactionStopped) == [TransactionStopped(1, 0.0, 11.0, StopReason.REMOTE, None)]
    assert index(ev_b, SetContactor(1, False)) < index(ev_b, of(ev_b, TransactionStopped)[0])
    assert statuses(ev_b) == [Status.FINISHING]


def test_stop_when_not_drawing_finishes_at_once() -> None:
    st, _ = new_station()
    st.pilot(1, B, False, 1.0)
    authorize(st, "TAG", 1.0)
    stop = st.stop(1, StopReason.REMOTE, 2.0)
    assert stop[0] == SetPwm(1, None, 0.0)
    assert of(stop, TransactionStopped) == [TransactionStopped(1, 0.0, 2.0, StopReason.REMOTE, None)]
    assert statuses(stop) == [Status.FINISHING]
    assert st.stop(1, StopReason.REMOTE, 3.0) == []  # nothing left to stop


def test_stop_without_transaction_is_noop() -> None:
    st, _ = new_station()
    assert st.stop(1, StopReason.REMOTE, 1.0) == []


def test_second_stop_while_stopping_is_ignored() -> None:
    st = charging_station()
    st.stop(1, StopReason.REMOTE, 10.0)
    assert st.stop(1, StopReason.DEAUTHORIZED, 10.5) == []
    assert of(st.pilot(1, B, False, 11.0), TransactionStopped)[0].reason == StopReason.REMOTE


def test_stop_under_load_timeout_forces_contactor_open() -> None:
    st = charging_station()
    st.stop(1, StopReason.REMOTE, 10.0)
    deadline = 10.0 + STOP_UNDER_LOAD_TIMEOUT_S
    assert st.next_deadline() == pytest.approx(deadline)
    assert st.tick(deadline - 0.01) == []
    assert st.connectors[1].contactor  # still closed, the EV is still in C
    forced = st.tick(deadline)
    assert forced[0] == SetContactor(1, False)
    assert True not in contactor_cmds(forced)
    assert of(forced, TransactionStopped) == [TransactionStopped(1, 0.0, deadline, StopReason.REMOTE, None)]
    assert not st.connectors[1].contactor
    assert statuses(forced) == [Status.FINISHING]
    # The EV stays in C afterwards: nothing closes again.
    assert contactor_cmds(st.pilot(1, C, False, deadline + 1)) == []
    assert st.pilot(1, B, False, deadline + 2) == []


def test_ev_reaching_b_before_timeout_cancels_it() -> None:
    st = charging_station()
    st.stop(1, StopReason.REMOTE, 10.0)
    st.pilot(1, B, False, 12.0)
    assert st.next_deadline() is None
    assert st.tick(10.0 + STOP_UNDER_LOAD_TIMEOUT_S) == []


def test_unplug_emits_each_command_once() -> None:
    st = charging_station()
    actions = st.pilot(1, A, False, 10.0)
    assert contactor_cmds(actions) == [False]
    assert of(actions, SetLock) == [SetLock(1, False)]


# --- device faults ---------------------------------------------------------------------------------------------
def test_device_fault_while_charging_and_recovery() -> None:
    st = charging_station()
    fault = st.device_fault(1, "meter", "PowerMeterFailure", True, "no answer", 10.0)
    assert fault == [SetPwm(1, None, 0.0), SetContactor(1, False),
                     StatusChanged(1, Status.FAULTED, "PowerMeterFailure", "no answer")]
    assert st.connectors[1].tx is not None  # the transaction survives the fault
    again = st.device_fault(1, "meter", "PowerMeterFailure", True, "no answer", 11.0)
    assert again == []
    recover = st.device_fault(1, "meter", "PowerMeterFailure", False, "", 12.0)
    assert recover == [SetPwm(1, DUTY_32A, 32.0), SetContactor(1, True),
                       StatusChanged(1, Status.CHARGING, "NoError", "")]


def test_device_fault_on_idle_connector_and_recovery_to_available() -> None:
    st, _ = new_station()
    assert st.device_fault(1, "lock", "ConnectorLockFailure", True, "", 1.0) == [
        StatusChanged(1, Status.FAULTED, "ConnectorLockFailure", "")]
    assert st.device_fault(1, "lock", "ConnectorLockFailure", False, "", 2.0) == [
        StatusChanged(1, Status.AVAILABLE, "NoError", "")]


def test_device_fault_recovery_to_preparing() -> None:
    st, _ = new_station()
    st.pilot(1, B, False, 1.0)
    st.device_fault(1, "meter", "PowerMeterFailure", True, "", 2.0)
    assert statuses(st.device_fault(1, "meter", "PowerMeterFailure", False, "", 3.0)) == [Status.PREPARING]


def test_two_faults_both_must_clear() -> None:
    st = charging_station()
    st.device_fault(1, "meter", "PowerMeterFailure", True, "", 10.0)
    st.device_fault(1, "lock", "ConnectorLockFailure", True, "", 10.5)
    after_meter = st.device_fault(1, "meter", "PowerMeterFailure", False, "", 11.0)
    assert statuses(after_meter) == [Status.FAULTED]  # now reported with the remaining code
    assert of(after_meter, StatusChanged)[0].error_code == "ConnectorLockFailure"
    assert contactor_cmds(after_meter) == []
    assert statuses(st.device_fault(1, "lock", "ConnectorLockFailure", False, "", 12.0)) == [Status.CHARGING]


def test_station_wide_fault_affects_all_connectors() -> None:
    # A blocking device on connector 0 (a shared meter bus) faults every connector.
    st, _ = new_station(connectors=2)
    actions = st.device_fault(0, "meter", "PowerMeterFailure", True, "bus down", 1.0)
    assert statuses(actions, 1) == [Status.FAULTED] and statuses(actions, 2) == [Status.FAULTED]
    actions = st.device_fault(0, "meter", "PowerMeterFailure", False, "", 2.0)
    assert statuses(actions, 1) == [Status.AVAILABLE] and statuses(actions, 2) == [Status.AVAILABLE]


def test_reader_failure_is_reported_on_connector_zero() -> None:
    st, _ = new_station(connectors=2)
    actions = st.device_fault(0, "reader", "ReaderFailure", True, "no answer", 1.0)
    assert actions == [StatusChanged(0, Status.FAULTED, "ReaderFailure", "no answer")]
    assert st.device_fault(0, "reader", "ReaderFailure", True, "no answer", 1.5) == []
    assert st.device_fault(0, "reader", "ReaderFailure", False, "", 2.0) == [
        StatusChanged(0, Status.AVAILABLE, "NoError", "")]


def test_faulted_connector_refuses_card() -> None:
    st, _ = new_station()
    st.pilot(1, B, False, 1.0)
    st.device_fault(1, "meter", "PowerMeterFailure", True, "", 1.5)
    st.tag("TAG", 2.0)
    assert st.authorization("TAG", "Accepted", None, 2.5) == [AuthorizationRejected("TAG", "NoConnectorAvailable")]


def test_reader_failure_does_not_interrupt_charging() -> None:
    st = charging_station()
    actions = st.device_fault(0, "reader", "ReaderFailure", True, "no answer", 10.0)
    assert SetPwm(1, None, 0.0) not in actions
    assert False not in contactor_cmds(actions)


@pytest.mark.parametrize("state", [E, F])
def test_pilot_e_f_is_ev_communication_error(state: PilotState) -> None:
    st = charging_station()
    actions = st.pilot(1, state, False, 10.0)
    # Section 4.9: EVCommunicationError is a warning with SuspendedEVSE, not Faulted.
    assert actions == [SetPwm(1, None, 0.0), SetContactor(1, False),
                       StatusChanged(1, Status.SUSPENDED_EVSE, "EVCommunicationError", f"pilot in state {state}")]
    assert of(actions, TransactionStopped) == []
    back = st.pilot(1, C, False, 11.0)
    assert back == [SetPwm(1, DUTY_32A, 32.0), SetContactor(1, True), StatusChanged(1, Status.CHARGING, "NoError", "")]


def test_pilot_f_on_idle_connector() -> None:
    st, _ = new_station()
    actions = st.pilot(1, F, False, 1.0)
    assert of(actions, StatusChanged) == [StatusChanged(1, Status.FAULTED, "OtherError", "pilot in state F")]
    assert statuses(st.pilot(1, A, False, 2.0)) == [Status.AVAILABLE]


def test_pilot_short_with_ev_plugged_is_a_warning() -> None:
    st, _ = new_station()
    st.pilot(1, B, False, 1.0)
    actions = st.pilot(1, E, False, 2.0)
    assert of(actions, StatusChanged) == [StatusChanged(1, Status.PREPARING, "EVCommunicationError",
                                                        "pilot in state E")]


# --- diode fault ---------------------------------------------------------------------------------------------
def test_diode_fault_latches_and_is_reprobed() -> None:
    st = charging_station()
    fault = st.pilot(1, C, True, 10.0)
    assert fault == [SetPwm(1, None, 0.0), SetContactor(1, False),
                     StatusChanged(1, Status.SUSPENDED_EVSE, "EVCommunicationError", "diode check failed")]
    assert st.next_deadline() == pytest.approx(10.0 + DIODE_RECHECK_S)
    # Without PWM the diode cannot be checked: a clean reading does not clear the latch.
    assert st.pilot(1, B, False, 11.0) == []
    assert st.connectors[1].status == Status.SUSPENDED_EVSE
    assert st.tick(10.0 + DIODE_RECHECK_S - 0.01) == []
    probe = st.tick(10.0 + DIODE_RECHECK_S)
    assert probe == [SetPwm(1, DUTY_32A, 32.0)]  # PWM offered again; still the warning, contactor still open
    assert st.connectors[1].error_code == "EVCommunicationError"
    # The re-check fails again: PWM off, next probe 5 s later.
    refail = st.pilot(1, B, True, 15.5)
    assert refail == [SetPwm(1, None, 0.0)]
    assert st.next_deadline() == pytest.approx(15.5 + DIODE_RECHECK_S)
    st.tick(15.5 + DIODE_RECHECK_S)
    # This time the diode is fine: the fault clears.
    ok = st.pilot(1, B, False, 21.0)
    assert ok == [StatusChanged(1, Status.SUSPENDED_EV, "NoError", "")]
    assert st.connectors[1].diode_recheck_at is None
    assert st.pilot(1, C, False, 22.0) == [SetContactor(1, True), StatusChanged(1, Status.CHARGING, "NoError", "")]


def test_diode_fault_ignored_without_pwm() -> None:
    st, _ = new_station()
    assert st.pilot(1, B, True, 1.0) == [StatusChanged(1, Status.PREPARING, "NoError", "")]
    assert "diode" not in st.connectors[1].faults


def test_diode_fault_cleared_by_unplug() -> None:
    st = charging_station()
    st.pilot(1, C, True, 10.0)
    actions = st.pilot(1, A, False, 11.0)
    assert statuses(actions) == [Status.AVAILABLE]
    assert st.connectors[1].diode_recheck_at is None
    assert of(actions, TransactionStopped)[0].reason == StopReason.EV_DISCONNECTED


# --- limits ---------------------------------------------------------------------------------------------------
def test_set_limit_below_minimum_withdraws_pwm() -> None:
    st = charging_station()
    actions = st.set_limit(1, 5.9, 10.0)
    assert actions[0] == SetPwm(1, None, 0.0)
    assert statuses(actions) == [Status.SUSPENDED_EVSE]
    assert of(actions, StatusChanged)[0].info == "no current offered"
    assert st.connectors[1].tx is not None
    back = st.set_limit(1, 16.0, 20.0)
    assert back[0] == SetPwm(1, DUTY_16A, 16.0)
    assert statuses(back) == [Status.CHARGING]


def test_set_limit_changes_duty_without_status_change() -> None:
    st = charging_station()
    assert st.set_limit(1, 16.0, 10.0) == [SetPwm(1, DUTY_16A, 16.0)]
    # An increase waits until 5 s after the last change (IEC 61851-1), then is capped at the connector maximum.
    assert st.set_limit(1, 100.0, 11.0) == []
    assert st.next_deadline() == 15.0
    assert st.tick(14.9) == []
    assert st.tick(15.0) == [SetPwm(1, DUTY_32A, 32.0)]
    assert st.set_limit(1, None, 12.0) == []
    assert st.set_limit(1, 0.0, 13.0)[0] == SetPwm(1, None, 0.0)


def test_limit_before_start_offers_no_pwm() -> None:
    st, _ = new_station()
    st.set_limit(1, 3.0, 0.5)
    st.pilot(1, B, False, 1.0)
    actions = authorize(st, "TAG", 2.0)
    assert of(actions, SetPwm) == []
    assert statuses(actions) == [Status.SUSPENDED_EVSE]


def test_set_limit_below_minimum_does_not_open_under_load() -> None:
    st = charging_station()
    actions = st.set_limit(1, 0.0, 10.0)
    assert contactor_cmds(actions) == []
    assert contactor_cmds(st.pilot(1, B, False, 11.0)) == [False]


# --- several connectors, card first -------------------------------------------------------------------------
def test_two_connectors_card_first_binds_to_first_plugged() -> None:
    st, _ = new_station(connectors=2)
    auth = authorize(st, "TAG", 1.0)
    assert auth == []  # not bound yet: no connector goes Preparing
    assert st.next_deadline() == pytest.approx(61.0)
    plug2 = st.pilot(2, B, False, 5.0)
    assert plug2[:3] == [SetLock(2, True), TransactionStarted(2, "TAG", 0.0, 5.0), SetPwm(2, DUTY_32A, 32.0)]
    assert statuses(plug2, 2) == [Status.PREPARING]
    # The card is used up: plugging connector 1 later starts nothing.
    plug1 = st.pilot(1, B, False, 6.0)
    assert of(plug1, TransactionStarted) == []
    assert statuses(plug1, 1) == [Status.PREPARING]


def test_two_connectors_pending_card_expires() -> None:
    st, _ = new_station(connectors=2, ConnectionTimeOut=20)
    authorize(st, "TAG", 0.0)
    assert st.tick(20.0) == []
    assert st.next_deadline() is None
    assert of(st.pilot(1, B, False, 21.0), TransactionStarted) == []


def test_two_connectors_card_goes_to_the_plugged_one() -> None:
    st, _ = new_station(connectors=2)
    st.pilot(2, B, False, 1.0)
    assert of(authorize(st, "TAG", 2.0), TransactionStarted) == [TransactionStarted(2, "TAG", 0.0, 2.0)]


def test_two_connectors_one_busy_card_first_prepares_the_free_one() -> None:
    st, _ = new_station(connectors=2)
    st.pilot(1, B, False, 1.0)
    authorize(st, "ONE", 1.0)
    st.pilot(1, C, False, 2.0)
    auth = authorize(st, "TWO", 3.0)
    assert auth == [StatusChanged(2, Status.PREPARING, "NoError", "")]
    assert of(st.pilot(2, B, False, 4.0), TransactionStarted) == [TransactionStarted(2, "TWO", 0.0, 4.0)]
    # Each card stops its own transaction.
    assert of(st.tag("TWO", 5.0), SetPwm) == [SetPwm(2, None, 0.0)]
    assert st.connectors[1].stopping is None


def test_no_free_connector_rejects_card() -> None:
    st = charging_station()
    st.tag("OTHER", 10.0)
    assert st.authorization("OTHER", "Accepted", None, 10.0) == [AuthorizationRejected("OTHER",
                                                                                    "NoConnectorAvailable")]


# --- misc ----------------------------------------------------------------------------------------------------
def test_resume_transaction_continues_on_plug() -> None:
    st, _ = new_station()
    st.resume_transaction(1, "OLD", 500.0)
    actions = st.pilot(1, C, False, 1.0)
    assert of(actions, TransactionStarted) == []
    assert SetPwm(1, DUTY_32A, 32.0) in actions
    assert SetContactor(1, True) in actions
    assert statuses(actions) == [Status.CHARGING]
    st.meter(1, 800.0, 0.0, 0.0)
    st.tag("OLD", 2.0)
    assert of(st.pilot(1, B, False, 3.0), TransactionStopped) == [TransactionStopped(1, 800.0, 3.0, StopReason.LOCAL,
                                                                                     "OLD")]


def test_contactor_state_feedback_is_tracked() -> None:
    st = charging_station()
    st.contactor_state(1, False)  # the supervisor opened it on its own
    assert not st.connectors[1].contactor
    # Next update re-requests the close because the state still calls for it.
    assert st.tick(10.0) == [SetContactor(1, True)]


# --- availability (ChangeAvailability) ------------------------------------------------------------------------
def test_change_availability_idle_connector_is_accepted_and_persisted() -> None:
    st, _ = new_station(connectors=2)
    result, actions = st.change_availability(2, False, 1.0)
    assert result == "Accepted"
    assert AvailabilityChanged(2, False) in actions
    assert statuses(actions, 2) == [Status.UNAVAILABLE]
    assert statuses(actions, 1) == []
    # An unavailable connector takes no session.
    assert st.can_start(2) is False and st.can_start(1) is True
    assert st.remote_start(2, "TAG", 2.0) == (False, [])
    result, actions = st.change_availability(2, True, 3.0)
    assert result == "Accepted" and statuses(actions, 2) == [Status.AVAILABLE]


def test_change_availability_unknown_connector_is_rejected() -> None:
    st, _ = new_station(connectors=2)
    assert st.change_availability(3, False, 1.0) == ("Rejected", [])


def test_change_availability_during_transaction_is_scheduled_until_it_ends() -> None:
    st = charging_station()
    result, actions = st.change_availability(1, False, 5.0)
    assert result == "Scheduled"
    assert statuses(actions) == []  # still charging
    assert st.connectors[1].status == Status.CHARGING
    st.tag("TAG", 10.0)
    stopped = st.pilot(1, B, False, 11.0)
    assert of(stopped, TransactionStopped)
    assert st.connectors[1].status == Status.UNAVAILABLE


def test_change_availability_connector_zero_covers_every_connector() -> None:
    st, _ = new_station(connectors=2)
    st.pilot(1, B, False, 1.0)
    authorize(st, "TAG", 1.0)
    result, actions = st.change_availability(0, False, 2.0)
    assert result == "Scheduled"  # connector 1 has a transaction
    assert AvailabilityChanged(0, False) in actions
    assert statuses(actions, 0) == [Status.UNAVAILABLE]
    assert statuses(actions, 2) == [Status.UNAVAILABLE]
    result, actions = st.change_availability(0, True, 3.0)
    assert result == "Accepted"
    assert statuses(actions, 0) == [Status.AVAILABLE] and statuses(actions, 2) == [Status.AVAILABLE]


def test_restored_availability_applies_at_start() -> None:
    st = Station(2, 32.0, make_keys())
    st.restore_availability({0: True, 1: False})
    actions = st.start(0.0)
    assert statuses(actions, 1) == [Status.UNAVAILABLE] and statuses(actions, 2) == [Status.AVAILABLE]
    st = Station(2, 32.0, make_keys())
    st.restore_availability({0: False})
    assert st.cp_status == (Status.UNAVAILABLE, "NoError")  # known before the first board event
    actions = st.start(0.0)
    assert statuses(actions, 1) == [Status.UNAVAILABLE] and statuses(actions, 2) == [Status.UNAVAILABLE]
    # A connector made operative on its own under an inoperative charge point stays so after a restart.
    st = Station(2, 32.0, make_keys())
    st.restore_availability({0: False, 1: True, 2: False})
    actions = st.start(0.0)
    assert statuses(actions, 1) == [Status.AVAILABLE] and statuses(actions, 2) == [Status.UNAVAILABLE]


# --- UnlockConnector ---------------------------------------------------------------------------------------------
def test_unlock_without_transaction_unlocks_at_once() -> None:
    st, _ = new_station()
    result, actions = st.unlock(1, 1.0)
    assert result == "Accepted"
    assert actions == [SetLock(1, False), UnlockDone(1)]


def test_unlock_unknown_connector_or_fixed_cable_is_not_supported() -> None:
    st, _ = new_station()
    assert st.unlock(2, 1.0) == ("NotSupported", [])
    fixed = Station(1, 32.0, make_keys(), fixed_cable=True)
    fixed.start(0.0)
    assert fixed.unlock(1, 1.0) == ("NotSupported", [])


def test_unlock_during_transaction_stops_it_first_with_unlock_command() -> None:
    st = charging_station()
    result, actions = st.unlock(1, 5.0)
    assert result == "Accepted"
    assert SetPwm(1, None, 0.0) in actions and of(actions, TransactionStopped) == []
    assert of(actions, UnlockDone) == []  # the EV still draws: not yet
    done = st.pilot(1, B, False, 6.0)
    stop = of(done, TransactionStopped)
    assert stop and stop[0].reason == StopReason.UNLOCK_COMMAND
    assert index(done, SetLock(1, False)) > index(done, stop[0])
    assert UnlockDone(1) in done


def test_fixed_cable_never_drives_a_lock() -> None:
    st = Station(1, 32.0, make_keys(), fixed_cable=True)
    st.start(0.0)
    seen = st.pilot(1, B, False, 1.0) + authorize(st, "TAG", 1.0) + st.pilot(1, C, False, 2.0)
    seen += st.pilot(1, A, False, 3.0)
    assert of(seen, SetLock) == []
    assert of(seen, TransactionStopped)


# --- EV-side disconnect and the cable lock --------------------------------------------------------------------------
def test_unlock_on_ev_side_disconnect_false_holds_the_cable_for_its_owner() -> None:
    st = charging_station(UnlockConnectorOnEVSideDisconnect=False)
    actions = st.pilot(1, A, False, 10.0)
    assert of(actions, TransactionStopped)[0].reason == StopReason.EV_DISCONNECTED
    assert of(actions, SetLock) == []
    assert st.connectors[1].locked
    # Someone else's card does not release it; it goes to authorization instead.
    assert st.tag("OTHER", 11.0) == [RequestAuthorization("OTHER")]
    assert st.connectors[1].locked
    # The owner's card (any case) releases it without a new transaction.
    assert st.connectors[1].status == Status.FINISHING  # the cable hangs locked in the socket
    released = st.tag("tag", 12.0)
    assert released == [SetLock(1, False), StatusChanged(1, Status.AVAILABLE, "NoError", "")]


def test_held_cable_is_released_by_a_card_with_the_same_parent() -> None:
    st = charging_station(UnlockConnectorOnEVSideDisconnect=False)
    st.pilot(1, A, False, 10.0)
    assert st.tag("SIBLING", 11.0) == [RequestAuthorization("SIBLING")]
    released = st.authorization("SIBLING", "Accepted", "GROUP", 12.0)
    assert of(released, SetLock) == [SetLock(1, False)] and statuses(released) == [Status.AVAILABLE]
    assert of(released, TransactionStarted) == []


def test_unlock_on_ev_side_disconnect_true_unlocks() -> None:
    st = charging_station()
    actions = st.pilot(1, A, False, 10.0)
    assert SetLock(1, False) in actions


def test_card_stop_is_case_insensitive() -> None:
    st = charging_station()
    actions = st.tag("tag", 10.0)
    assert SetPwm(1, None, 0.0) in actions
    assert st.connectors[1].stopping is not None


# --- StartTransaction.conf not Accepted ---------------------------------------------------------------------------
def test_invalid_id_with_stop_on_invalid_id_stops_deauthorized_and_keeps_cable_locked() -> None:
    st = charging_station()
    actions = st.transaction_confirmed(1, "Invalid", None, 5.0)
    assert SetPwm(1, None, 0.0) in actions
    done = st.pilot(1, B, False, 6.0)
    assert of(done, TransactionStopped)[0].reason == StopReason.DEAUTHORIZED
    assert of(done, SetLock) == []
    unplugged = st.pilot(1, A, False, 7.0)
    assert of(unplugged, SetLock) == []  # held until the owner comes back (errata 3.5)
    assert st.connectors[1].status == Status.FINISHING
    assert of(st.tag("TAG", 8.0), SetLock) == [SetLock(1, False)]


def test_invalid_id_without_stop_only_withholds_energy() -> None:
    st = charging_station(StopTransactionOnInvalidId=False)
    actions = st.transaction_confirmed(1, "Blocked", None, 5.0)
    assert SetPwm(1, None, 0.0) in actions
    assert of(actions, TransactionStopped) == []
    assert st.connectors[1].tx is not None
    st.pilot(1, B, False, 6.0)
    assert st.connectors[1].status == Status.SUSPENDED_EVSE


def test_max_energy_on_invalid_id_lets_the_ev_charge_up_to_the_cap() -> None:
    st = charging_station(StopTransactionOnInvalidId=False, MaxEnergyOnInvalidId=500)
    assert st.transaction_confirmed(1, "Invalid", None, 5.0) == []
    assert st.meter(1, 499.0, 7000.0, 6.0) == []
    capped = st.meter(1, 500.0, 7000.0, 7.0)
    assert SetPwm(1, None, 0.0) in capped
    assert statuses(capped) == [Status.SUSPENDED_EVSE]


def test_max_energy_with_stop_on_invalid_id_stops_at_the_cap() -> None:
    st = charging_station(MaxEnergyOnInvalidId=500)
    assert st.transaction_confirmed(1, "Expired", None, 5.0) == []
    capped = st.meter(1, 600.0, 7000.0, 7.0)
    assert SetPwm(1, None, 0.0) in capped
    done = st.pilot(1, B, False, 8.0)
    assert of(done, TransactionStopped)[0].reason == StopReason.DEAUTHORIZED


def test_confirmed_parent_lets_a_sibling_card_stop() -> None:
    st, _ = new_station()
    st.pilot(1, B, False, 1.0)
    authorize(st, "TAG", 1.0)
    st.pilot(1, C, False, 2.0)
    assert st.transaction_confirmed(1, "Accepted", "FLEET", 3.0) == []
    st.tag("OTHER", 4.0)
    actions = st.authorization("OTHER", "Accepted", "FLEET", 5.0)
    assert SetPwm(1, None, 0.0) in actions
    assert st.connectors[1].stopping is not None and st.connectors[1].stopping[1] == "OTHER"


# --- ConnectionTimeOut for plug first (errata 3.20, B6) ----------------------------------------------------------
def test_plug_first_timeout_goes_to_finishing_with_several_connectors() -> None:
    st, _ = new_station(connectors=2, ConnectionTimeOut=30)
    st.pilot(1, B, False, 1.0)
    assert st.next_deadline() == 31.0
    assert statuses(st.tick(30.0)) == []
    assert statuses(st.tick(31.0)) == [Status.FINISHING]
    # The next card does not start on that cable: it waits for a plug on a free connector.
    assert authorize(st, "TAG", 32.0) == []
    assert st.connectors[1].tx is None
    # Unplug and plug again: Preparing again.
    st.pilot(1, A, False, 40.0)
    assert statuses(st.pilot(1, B, False, 41.0)) == [Status.PREPARING]


def test_plug_first_without_timeout_on_a_single_connector() -> None:
    st, _ = new_station(ConnectionTimeOut=30)
    st.pilot(1, B, False, 1.0)
    assert st.next_deadline() is None
    assert st.tick(100.0) == []
    assert of(authorize(st, "TAG", 101.0), TransactionStarted)


def test_resumed_transaction_commands_the_lock_again() -> None:
    st, _ = new_station()
    actions = st.resume_transaction(1, "TAG", 100.0, "GROUP")
    assert actions == [SetLock(1, True)]
    st.pilot(1, C, False, 1.0)
    assert st.connectors[1].tx is not None and st.connectors[1].tx.parent_id_tag == "GROUP"
