"""Smart charging through the OCPP session: SetChargingProfile, ClearChargingProfile, GetCompositeSchedule and the
chargingProfile of RemoteStartTransaction, on an OcppSession wired to a real SmartCharging and Store.

Driven like test_session.py (virtual time; the Harness checks every frame the session emits against the schemas:
CALLRESULTs against the response schema of their action, CALLERRORs for a 1.6 error code).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_session import BOOT_WALL, IDENTITY, VALIDATOR, WALL0, FakeController, Harness

from evsed.ocpp.configkeys import ConfigKeys
from evsed.ocpp.session import OcppSession, iso
from evsed.smartcharging.profiles import Limits
from evsed.smartcharging.service import SmartCharging
from evsed.store.db import Store

BOOT_DT = datetime.fromtimestamp(BOOT_WALL, UTC)  # the wall time at monotonic 0 once booted (2024-05-01T12:00:00Z)


def iso_s(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class SCHarness(Harness):
    """The test_session Harness with the 9.4 keys and a SmartCharging built from them, as the daemon does."""

    def __init__(self, connectors: int = 2, *, smart: bool = True, fixed: dict[str, Any] | None = None,
                 max_duration_s: int = 7 * 86400, **initial: Any) -> None:
        super().__init__(connectors, **initial)
        self.store = Store(":memory:")
        self.keys = ConfigKeys(self.store, {"HeartbeatInterval": 0, **initial}, connectors, message_timeout_s=30,
                               feature_profiles=("Core", "SmartCharging"), fixed=fixed)
        self.ctl = FakeController(connectors)
        self.sc: SmartCharging | None = None
        self.changes = 0
        self.clock_sets = 0
        if smart:
            limits = Limits(max_stack_level=int(self.keys["ChargeProfileMaxStackLevel"]),
                            allowed_units=tuple(self.keys["ChargingScheduleAllowedChargingRateUnit"]),
                            max_periods=int(self.keys["ChargingScheduleMaxPeriods"]),
                            max_installed=int(self.keys["MaxChargingProfilesInstalled"]),
                            number_of_connectors=connectors)
            self.sc = SmartCharging(self.store, limits, local_max_a={c: 32.0 for c in range(1, connectors + 1)},
                                    max_duration_s=max_duration_s)
            self.sc.on_change = self._changed
        self.s = OcppSession(IDENTITY, self.keys, self.store, self.ctl, VALIDATOR, connectors=connectors, now=0.0,
                             wall_offset=WALL0, rng=random.Random(7), smart_charging=self.sc)
        self.s.on_clock_set = self._clock_set

    def _changed(self) -> None:
        self.changes += 1

    def _clock_set(self) -> None:
        self.clock_sets += 1

    @property
    def smart(self) -> SmartCharging:
        assert self.sc is not None
        return self.sc

    def installed(self) -> list[tuple[int, int]]:
        return [(cid, p["chargingProfileId"]) for cid, p in self.smart.profiles.profiles()]

    def start_tx(self, connector: int, at: float, tx_id: int | None = 4242) -> None:
        """A local transaction; its StartTransaction.conf (transactionId tx_id) only when tx_id is not None."""
        self.s.transaction_started(connector, "TAG", 0.0, at)
        call = self.one_call("StartTransaction")
        if tx_id is not None:
            self.reply(call, {"transactionId": tx_id, "idTagInfo": {"status": "Accepted"}}, at)
            self.nothing()
        else:
            self.pending = call


def profile(pid: int, purpose: str = "TxDefaultProfile", periods: Any = ((0, 16.0),), *, stack: int = 0,
            kind: str = "Absolute", unit: str = "A", start: datetime | None = BOOT_DT,
            tx_id: int | None = None) -> dict[str, Any]:
    sched: dict[str, Any] = {"chargingRateUnit": unit,
                             "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods]}
    if start is not None and kind != "Relative":
        sched["startSchedule"] = iso_s(start)
    out: dict[str, Any] = {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
                           "chargingProfileKind": kind, "chargingSchedule": sched}
    if tx_id is not None:
        out["transactionId"] = tx_id
    return out


def tx_profile(pid: int, *, stack: int = 0, tx_id: int | None = None, limit: float = 10.0) -> dict[str, Any]:
    return profile(pid, "TxProfile", [(0, limit)], kind="Relative", stack=stack, tx_id=tx_id)


def set_profile(h: SCHarness, uid: str, connector: int, prof: dict[str, Any], now: float) -> str:
    res = h.csms_call(uid, "SetChargingProfile", {"connectorId": connector, "csChargingProfiles": prof}, now)
    assert res[0] == 3, res
    status: str = res[2]["status"]
    return status


@pytest.fixture
def h() -> SCHarness:
    harness = SCHarness()
    harness.boot(now=0.0)
    return harness


# --- SetChargingProfile -------------------------------------------------------------------------------------------
def test_set_charging_profile_accepted_installs_persists_and_notifies(h: SCHarness) -> None:
    res = h.csms_call("p1", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile(1)}, 1.0)
    assert res == [3, "p1", {"status": "Accepted"}]
    assert h.installed() == [(1, 1)]
    assert h.store.charging_profiles() == [(1, profile(1))]
    assert h.changes == 1


@pytest.mark.parametrize(("connector", "prof"), [
    (3, profile(1)),
    (1, profile(1, stack=11)),
    (1, profile(1, "ChargePointMaxProfile")),
    (1, profile(1, periods=[(i, 10.0) for i in range(97)])),
    (1, profile(1, periods=[(10, 10.0)])),
    (1, profile(1, start=None)),
    (0, tx_profile(1)),
], ids=["connector-3-of-2", "stack-above-max", "cpmax-on-1", "97-periods", "first-period-not-0",
        "absolute-without-start", "txprofile-on-0"])
def test_set_charging_profile_rejected(h: SCHarness, connector: int, prof: dict[str, Any]) -> None:
    res = h.csms_call("p1", "SetChargingProfile", {"connectorId": connector, "csChargingProfiles": prof}, 1.0)
    assert res == [3, "p1", {"status": "Rejected"}]
    assert h.installed() == [] and h.store.charging_profiles() == [] and h.changes == 0


def test_set_charging_profile_with_a_unit_the_keys_do_not_allow() -> None:
    h = SCHarness(fixed={"ChargingScheduleAllowedChargingRateUnit": ["Current"]})
    h.boot(now=0.0)
    assert set_profile(h, "p1", 1, profile(1, unit="W", periods=[(0, 7000.0)]), 1.0) == "Rejected"
    assert set_profile(h, "p2", 1, profile(1, unit="A"), 1.0) == "Accepted"


def test_set_charging_profile_with_the_configured_max_stack_level() -> None:
    h = SCHarness(fixed={"ChargeProfileMaxStackLevel": 2})
    h.boot(now=0.0)
    assert set_profile(h, "p1", 1, profile(1, stack=3), 1.0) == "Rejected"
    assert set_profile(h, "p2", 1, profile(1, stack=2), 1.0) == "Accepted"


def test_set_charging_profile_schema_violation_is_a_callerror(h: SCHarness) -> None:
    bad = profile(1, periods=[(0, 10.05)])  # limit: multipleOf 0.1
    res = h.csms_call("p1", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": bad}, 1.0)
    assert res[0] == 4 and res[2] == "PropertyConstraintViolation", res
    assert h.installed() == [] and h.changes == 0


def test_tx_profile_needs_the_active_transaction(h: SCHarness) -> None:
    # No transaction yet on connector 1.
    assert set_profile(h, "a", 1, tx_profile(5, tx_id=4242), 1.0) == "Rejected"
    assert set_profile(h, "b", 1, tx_profile(5), 1.0) == "Rejected"
    h.start_tx(1, 2.0)
    assert h.s.transactions() == {1: (BOOT_DT + timedelta(seconds=2), 4242)}
    assert set_profile(h, "c", 1, tx_profile(5, tx_id=4242), 3.0) == "Accepted"
    assert set_profile(h, "d", 1, tx_profile(6, stack=1, tx_id=999), 3.0) == "Rejected"
    assert set_profile(h, "e", 2, tx_profile(7, stack=1, tx_id=4242), 3.0) == "Rejected"  # no transaction on 2
    # Without a transactionId it is for the connector's running transaction.
    assert set_profile(h, "f", 1, tx_profile(8, stack=1), 3.0) == "Accepted"
    assert set_profile(h, "g", 2, tx_profile(9, stack=1), 3.0) == "Rejected"
    assert h.installed() == [(1, 5), (1, 8)]
    assert h.changes == 2


def test_tx_profile_before_start_transaction_conf_only_without_transaction_id(h: SCHarness) -> None:
    h.start_tx(1, 2.0, tx_id=None)  # StartTransaction sent, not answered: the CSMS id is not known yet
    assert h.s.transactions() == {1: (BOOT_DT + timedelta(seconds=2), None)}
    assert set_profile(h, "a", 1, tx_profile(5, tx_id=4242), 2.5) == "Rejected"
    assert set_profile(h, "b", 1, tx_profile(6), 2.5) == "Accepted"
    assert h.installed() == [(1, 6)]
    # The StartTransaction.conf arrives: the id is known and a TxProfile naming it is accepted (it replaces profile 6:
    # same connector, stack level and purpose).
    assert h.pending is not None
    h.reply(h.pending, {"transactionId": 4242, "idTagInfo": {"status": "Accepted"}}, 3.0)
    assert h.s.transactions() == {1: (BOOT_DT + timedelta(seconds=2), 4242)}
    assert set_profile(h, "c", 1, tx_profile(5, tx_id=4242), 3.5) == "Accepted"
    assert h.installed() == [(1, 5)]


def test_transactions_without_a_usable_csms_id(h: SCHarness) -> None:
    # A StartTransaction.conf whose transactionId is not an integer leaves the id unknown (-1 in the store).
    h.s.transaction_started(1, "TAG", 0.0, 2.0)
    h.reply(h.one_call("StartTransaction"), {"transactionId": "x", "idTagInfo": {"status": "Accepted"}}, 2.0)
    assert h.s.csms_transaction_id(1) == -1
    assert h.s.transactions() == {1: (BOOT_DT + timedelta(seconds=2), None)}
    assert set_profile(h, "a", 1, tx_profile(5, tx_id=-1), 3.0) == "Rejected"
    assert set_profile(h, "b", 1, tx_profile(5), 3.0) == "Accepted"


def test_transactions_follow_start_and_stop(h: SCHarness) -> None:
    assert h.s.transactions() == {}
    h.start_tx(1, 2.25)
    h.start_tx(2, 5.0, tx_id=None)
    assert h.s.transactions() == {1: (BOOT_DT + timedelta(seconds=2.25), 4242),
                                  2: (BOOT_DT + timedelta(seconds=5), None)}
    h.s.transaction_stopped(1, 100.0, 6.0, "Local", "TAG")
    assert h.s.transactions() == {2: (BOOT_DT + timedelta(seconds=5), None)}


# --- ClearChargingProfile -----------------------------------------------------------------------------------------
def test_clear_charging_profile_accepted_then_unknown(h: SCHarness) -> None:
    assert set_profile(h, "p1", 1, profile(1), 1.0) == "Accepted"
    assert set_profile(h, "p2", 2, profile(2, stack=3), 1.0) == "Accepted"
    assert set_profile(h, "p3", 0, profile(3, "ChargePointMaxProfile", stack=3), 1.0) == "Accepted"
    assert set_profile(h, "p4", 2, profile(4, stack=0), 1.0) == "Accepted"
    assert h.changes == 4
    res = h.csms_call("c1", "ClearChargingProfile", {"id": 1, "connectorId": 2}, 2.0)  # only the id matters
    assert res == [3, "c1", {"status": "Accepted"}]
    assert h.installed() == [(2, 2), (0, 3), (2, 4)]
    res = h.csms_call("c2", "ClearChargingProfile", {"id": 1}, 2.0)
    assert res == [3, "c2", {"status": "Unknown"}]
    # The given fields are ANDed: TxDefault and stack level 3 is profile 2 only (not 3: ChargePointMax, not 4: 0).
    res = h.csms_call("c3", "ClearChargingProfile", {"chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 3},
                      2.0)
    assert res == [3, "c3", {"status": "Accepted"}]
    assert h.installed() == [(0, 3), (2, 4)]
    res = h.csms_call("c4", "ClearChargingProfile", {"connectorId": 2, "stackLevel": 3}, 2.0)
    assert res == [3, "c4", {"status": "Unknown"}]
    res = h.csms_call("c5", "ClearChargingProfile", {"connectorId": 0, "chargingProfilePurpose": "TxDefaultProfile"},
                      2.0)
    assert res == [3, "c5", {"status": "Unknown"}]
    assert h.installed() == [(0, 3), (2, 4)]
    res = h.csms_call("c6", "ClearChargingProfile", {}, 2.0)
    assert res == [3, "c6", {"status": "Accepted"}]
    assert h.installed() == [] and h.store.charging_profiles() == []
    res = h.csms_call("c7", "ClearChargingProfile", {}, 2.0)
    assert res == [3, "c7", {"status": "Unknown"}]
    assert h.changes == 4 + 3


# --- GetCompositeSchedule -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("connector", [3, 99, -1])
def test_get_composite_schedule_unknown_connector_rejected(h: SCHarness, connector: int) -> None:
    res = h.csms_call("g1", "GetCompositeSchedule", {"connectorId": connector, "duration": 60}, 1.0)
    assert res == [3, "g1", {"status": "Rejected"}]


def test_get_composite_schedule_from_the_request_time(h: SCHarness) -> None:
    # TxDefault on connector 0 from boot + 10 s: 10 A, then 16 A 20 s later.
    start = BOOT_DT + timedelta(seconds=10)
    assert set_profile(h, "p1", 0, profile(1, periods=[(0, 10.0), (20, 16.0)], start=start), 1.0) == "Accepted"
    res = h.csms_call("g1", "GetCompositeSchedule", {"connectorId": 1, "duration": 60}, 3.7)
    # Time X = the request's wall time (boot + 3.7 s) truncated to the second; no unit -> the first allowed one (A).
    assert res == [3, "g1", {"status": "Accepted", "connectorId": 1, "scheduleStart": "2024-05-01T12:00:03Z",
                             "chargingSchedule": {
                                 "duration": 60, "chargingRateUnit": "A",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32.0},
                                                            {"startPeriod": 7, "limit": 10.0},
                                                            {"startPeriod": 27, "limit": 16.0}]}}]
    # Connector 0 in W: both connectors summed (3 phases at 230 V), from boot + 12.999 s -> 12:00:12.
    res = h.csms_call("g2", "GetCompositeSchedule", {"connectorId": 0, "duration": 30, "chargingRateUnit": "W"},
                      12.999)
    assert res == [3, "g2", {"status": "Accepted", "connectorId": 0, "scheduleStart": "2024-05-01T12:00:12Z",
                             "chargingSchedule": {
                                 "duration": 30, "chargingRateUnit": "W",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 2 * 10 * 690.0},
                                                            {"startPeriod": 18, "limit": 2 * 16 * 690.0}]}}]


def test_get_composite_schedule_with_a_relative_tx_profile(h: SCHarness) -> None:
    h.start_tx(2, 4.5)  # transaction start 12:00:04.500
    assert set_profile(h, "p1", 2, profile(1, "TxProfile", [(0, 8.0), (60, 12.0)], kind="Relative"), 5.0) == "Accepted"
    res = h.csms_call("g1", "GetCompositeSchedule", {"connectorId": 2, "duration": 120}, 10.2)
    sched = res[2]["chargingSchedule"]
    assert res[2]["scheduleStart"] == "2024-05-01T12:00:10Z"
    assert "startSchedule" not in sched  # errata 3.57
    # The transaction start 12:00:04.5 goes on the grid at 12:00:04 (rounded down): + 60 s = 12:01:04, 54 s after
    # 12:00:10.
    assert sched["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 8.0}, {"startPeriod": 54, "limit": 12.0}]


def test_get_composite_schedule_duration_capped() -> None:
    h = SCHarness(max_duration_s=3600)
    h.boot(now=0.0)
    res = h.csms_call("g1", "GetCompositeSchedule", {"connectorId": 1, "duration": 86400}, 1.0)
    assert res[2]["chargingSchedule"]["duration"] == 3600
    res = h.csms_call("g2", "GetCompositeSchedule", {"connectorId": 1, "duration": 0}, 1.0)
    assert res[2]["chargingSchedule"] == {"duration": 0,
                                          "chargingRateUnit": "A",
                                          "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32.0}]}


def test_get_composite_schedule_first_allowed_unit_from_the_keys() -> None:
    h = SCHarness(fixed={"ChargingScheduleAllowedChargingRateUnit": ["Power", "Current"]})
    h.boot(now=0.0)
    res = h.csms_call("g1", "GetCompositeSchedule", {"connectorId": 1, "duration": 60}, 1.0)
    assert res[2]["chargingSchedule"]["chargingRateUnit"] == "W"
    assert res[2]["chargingSchedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 32 * 690.0}]


def test_get_composite_schedule_invalid_unit_is_property_constraint_violation(h: SCHarness) -> None:
    # Errata 3.24: an invalid chargingRateUnit -> CALLERROR PropertyConstraintViolation (the schema's enum).
    res = h.csms_call("g1", "GetCompositeSchedule", {"connectorId": 1, "duration": 60, "chargingRateUnit": "kW"}, 1.0)
    assert res[0] == 4 and res[2] == "PropertyConstraintViolation", res


def test_get_composite_schedule_negative_duration_is_property_constraint_violation(h: SCHarness) -> None:
    # The schema lets any integer through; the engine raises on a negative duration, which used to answer
    # InternalError ("handler failed").
    res = h.csms_call("g1", "GetCompositeSchedule", {"connectorId": 1, "duration": -5}, 1.0)
    assert res[0] == 4 and res[2] == "PropertyConstraintViolation", res


def test_get_composite_schedule_follows_the_csms_clock() -> None:
    h = SCHarness(HeartbeatInterval=10)
    h.boot(now=0.0, interval=10)
    assert h.clock_sets == 1  # the BootNotification.conf moved the wall clock from WALL0 to BOOT_TIME
    h.s.tick(10.0)
    hb = h.one_call("Heartbeat")
    h.reply(hb, {"currentTime": iso(BOOT_WALL + 10.4)}, 10.0)  # 0.4 s off: taken, but not a "clock set"
    assert h.clock_sets == 1
    h.s.tick(20.0)
    hb = h.one_call("Heartbeat")
    h.reply(hb, {"currentTime": iso(BOOT_WALL + 3600 + 20.4)}, 20.0)  # an hour ahead
    assert h.clock_sets == 2
    res = h.csms_call("g1", "GetCompositeSchedule", {"connectorId": 1, "duration": 60}, 21.0)
    assert res[2]["scheduleStart"] == "2024-05-01T13:00:21Z"


# --- without smart charging ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("action", "payload"), [
    ("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile(1)}),
    ("ClearChargingProfile", {}),
    ("GetCompositeSchedule", {"connectorId": 1, "duration": 60}),
])
def test_without_smart_charging_the_actions_are_not_supported(action: str, payload: dict[str, Any]) -> None:
    h = SCHarness(smart=False)
    h.boot(now=0.0)
    res = h.csms_call("x1", action, payload, 1.0)
    assert res[0] == 4 and res[2] == "NotSupported", res


# --- RemoteStartTransaction with a chargingProfile ----------------------------------------------------------------
def remote_start(h: SCHarness, uid: str, prof: dict[str, Any] | None, connector: int | None = 1) -> str:
    payload: dict[str, Any] = {"idTag": "R"}
    if connector is not None:
        payload["connectorId"] = connector
    if prof is not None:
        payload["chargingProfile"] = prof
    res = h.csms_call(uid, "RemoteStartTransaction", payload, 1.0)
    assert res[0] == 3, res
    status: str = res[2]["status"]
    return status


@pytest.mark.parametrize("prof", [
    profile(1, "TxDefaultProfile"),
    profile(1, "ChargePointMaxProfile"),
    tx_profile(1, tx_id=7),
    tx_profile(1, stack=11),
    profile(1, "TxProfile", [(5, 10.0)], kind="Relative"),
], ids=["txdefault", "cpmax", "with-transaction-id", "stack-above-max", "first-period-not-0"])
def test_remote_start_with_an_unacceptable_profile_rejected(h: SCHarness, prof: dict[str, Any]) -> None:
    assert remote_start(h, "r1", prof) == "Rejected"
    assert h.ctl.calls == []  # the controller is not asked
    assert h.installed() == [] and h.changes == 0


def test_remote_start_with_a_tx_profile_accepted_and_handed_to_the_controller(h: SCHarness) -> None:
    prof = tx_profile(1, limit=12.0)
    assert remote_start(h, "r1", prof) == "Accepted"
    assert h.ctl.calls == [("can_remote_start", 1), ("remote_start", 1, "R", prof)]
    # Installed only when its transaction starts (the daemon calls install_remote_start then).
    assert h.installed() == [] and h.changes == 0


def test_remote_start_without_connector_with_a_tx_profile(h: SCHarness) -> None:
    prof = tx_profile(1, limit=12.0)
    assert remote_start(h, "r1", prof, connector=None) == "Accepted"
    assert h.ctl.calls == [("can_remote_start", None), ("remote_start", None, "R", prof)]


def test_remote_start_profile_goes_through_authorization() -> None:
    h = SCHarness(AuthorizeRemoteTxRequests=True)
    h.boot(now=0.0)
    prof = tx_profile(1)
    assert remote_start(h, "r1", prof) == "Accepted"
    auth = h.one_call("Authorize")
    h.reply(auth, {"idTagInfo": {"status": "Accepted"}}, 2.0)
    assert h.ctl.calls == [("can_remote_start", 1), ("remote_start", 1, "R", prof)]


def test_remote_start_without_smart_charging_rejects_non_tx_profiles() -> None:
    h = SCHarness(smart=False)
    h.boot(now=0.0)
    assert remote_start(h, "r1", profile(1, "TxDefaultProfile")) == "Rejected"
    assert remote_start(h, "r2", tx_profile(1)) == "Accepted"
