"""Charging-profile validation and the installed-profile set (evsed.smartcharging.profiles)."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from evsed.smartcharging.profiles import Limits, ProfileSet, parse_datetime, validate

LIMITS = Limits(max_stack_level=8, allowed_units=("Current", "Power"), max_periods=4, max_installed=5,
                number_of_connectors=2)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACTIVE = {1: 42}  # connector 1 runs transaction 42; connector 2 is idle


def prof(pid: int = 1, *, purpose: str = "TxDefaultProfile", kind: str = "Absolute", stack: int = 0,
         **extra: Any) -> dict[str, Any]:
    schedule: dict[str, Any] = {"chargingRateUnit": "A", "startSchedule": "2026-03-01T00:00:00Z",
                                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}
    schedule.update(extra.pop("schedule", {}))
    p: dict[str, Any] = {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
                         "chargingProfileKind": kind, "chargingSchedule": schedule}
    p.update(extra)
    return p


def check(connector_id: int, profile: dict[str, Any], *, limits: Limits = LIMITS,
          active: dict[int, int | None] | None = None, installed: ProfileSet | None = None,
          remote_start: bool = False) -> str | None:
    return validate(connector_id, profile, limits, active_transactions=ACTIVE if active is None else active,
                    installed=installed or ProfileSet(), remote_start=remote_start)


def periods(*items: dict[str, Any]) -> dict[str, Any]:
    return {"chargingSchedulePeriod": list(items)}


def ids(s: ProfileSet) -> list[tuple[int, int]]:
    return [(cid, p["chargingProfileId"]) for cid, p in s.profiles()]


# --- validation: acceptable profiles ------------------------------------------------------------------------------

@pytest.mark.parametrize(("connector_id", "profile"), [
    (0, prof(purpose="TxDefaultProfile")),  # connector 0: applies to all connectors (errata 3.53)
    (1, prof(purpose="TxDefaultProfile")),
    (2, prof(purpose="TxDefaultProfile", kind="Relative", schedule={"startSchedule": None})),
    (0, prof(purpose="ChargePointMaxProfile", stack=8)),  # stackLevel == ChargeProfileMaxStackLevel is fine
    (0, prof(purpose="ChargePointMaxProfile", kind="Recurring", recurrencyKind="Weekly")),
    (1, prof(purpose="TxProfile", transactionId=42)),
    (1, prof(purpose="TxProfile", kind="Relative", schedule={"startSchedule": None})),  # no transactionId: ok
    (1, prof(purpose="TxProfile", validFrom="2026-03-01T00:00:00Z", validTo="2026-03-02T00:00:00Z")),  # 3.65/3.66
    (1, prof(schedule={"chargingRateUnit": "W", "duration": 3600, "minChargingRate": 6.0,
                       "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 0, "numberPhases": 1},
                                                  {"startPeriod": 60, "limit": 11000, "numberPhases": 3},
                                                  {"startPeriod": 120, "limit": 7.5},
                                                  {"startPeriod": 180, "limit": 32}]})),  # exactly max_periods
], ids=["txdefault-connector-0", "txdefault-connector-1", "relative-txdefault", "cpmax-top-stack",
        "cpmax-recurring", "txprofile-matching-id", "txprofile-without-id", "txprofile-validity", "full-schedule"])
def test_acceptable_profiles(connector_id: int, profile: dict[str, Any]) -> None:
    assert check(connector_id, profile) is None


# --- validation: one test per rejection rule -----------------------------------------------------------------------

REJECTIONS: list[tuple[str, int, dict[str, Any], dict[str, Any], str]] = [
    # (id, connector_id, profile, keyword arguments of check(), part of the reason)
    ("purpose-not-supported", 1, prof(purpose="ChargerMaxProfile"), {}, "purpose"),
    ("purpose-missing", 1, prof(chargingProfilePurpose=None), {}, "purpose"),
    ("kind-not-supported", 1, prof(kind="Sometimes"), {}, "kind"),
    ("connector-negative", -1, prof(), {}, "connectorId"),
    ("connector-too-high", 3, prof(), {}, "connectorId"),
    ("stack-negative", 1, prof(stack=-1), {}, "stackLevel"),
    ("stack-above-max", 1, prof(stack=9), {}, "stackLevel"),
    ("cpmax-not-on-connector-0", 1, prof(purpose="ChargePointMaxProfile"), {}, "connector 0"),
    ("cpmax-relative", 0, prof(purpose="ChargePointMaxProfile", kind="Relative"), {}, "Relative"),
    ("txprofile-on-connector-0", 0, prof(purpose="TxProfile"), {}, "connector 0"),
    ("txprofile-no-transaction", 2, prof(purpose="TxProfile"), {}, "active transaction"),
    ("txprofile-no-transaction-at-all", 1, prof(purpose="TxProfile"), {"active": {}}, "active transaction"),
    ("txprofile-other-transaction", 1, prof(purpose="TxProfile", transactionId=41), {}, "not the active"),
    ("txprofile-transaction-id-not-known-yet", 1, prof(purpose="TxProfile", transactionId=41),
     {"active": {1: None}}, "not known yet"),
    ("transaction-id-on-txdefault", 1, prof(transactionId=42), {}, "only valid for a TxProfile"),
    ("transaction-id-on-cpmax", 0, prof(purpose="ChargePointMaxProfile", transactionId=42), {},
     "only valid for a TxProfile"),
    ("too-many-periods", 1, prof(schedule=periods(*({"startPeriod": 60 * i, "limit": 10} for i in range(5)))), {},
     "ChargingScheduleMaxPeriods"),
    ("no-periods", 1, prof(schedule=periods()), {}, "chargingSchedulePeriod"),
    ("unit-power-not-allowed", 1, prof(schedule={"chargingRateUnit": "W"}),
     {"limits": Limits(8, ("Current",), 4, 5, 2)}, "chargingRateUnit"),
    ("unit-current-not-allowed", 1, prof(), {"limits": Limits(8, ("Power",), 4, 5, 2)}, "chargingRateUnit"),
    ("unit-unknown", 1, prof(schedule={"chargingRateUnit": "kW"}), {}, "chargingRateUnit"),
    ("first-start-period-not-0", 1, prof(schedule=periods({"startPeriod": 10, "limit": 10})), {}, "first startPeriod"),
    ("start-periods-equal", 1, prof(schedule=periods({"startPeriod": 0, "limit": 10}, {"startPeriod": 0, "limit": 8})),
     {}, "strictly increasing"),
    ("start-periods-decreasing", 1, prof(schedule=periods({"startPeriod": 0, "limit": 10},
                                                          {"startPeriod": 600, "limit": 8},
                                                          {"startPeriod": 300, "limit": 6})),
     {}, "strictly increasing"),
    ("number-phases-0", 1, prof(schedule=periods({"startPeriod": 0, "limit": 10, "numberPhases": 0})), {},
     "numberPhases"),
    ("number-phases-4", 1, prof(schedule=periods({"startPeriod": 0, "limit": 10, "numberPhases": 4})), {},
     "numberPhases"),
    ("limit-negative", 1, prof(schedule=periods({"startPeriod": 0, "limit": -0.1})), {}, "limit"),
    ("limit-nan", 1, prof(schedule=periods({"startPeriod": 0, "limit": math.nan})), {}, "limit"),
    ("limit-infinite", 1, prof(schedule=periods({"startPeriod": 0, "limit": math.inf})), {}, "limit"),
    ("limit-missing", 1, prof(schedule=periods({"startPeriod": 0})), {}, "limit"),
    ("absolute-without-start", 1, prof(schedule={"startSchedule": None}), {}, "without startSchedule"),
    ("recurring-without-start", 1, prof(kind="Recurring", recurrencyKind="Daily", schedule={"startSchedule": None}),
     {}, "without startSchedule"),
    ("recurring-without-recurrency", 1, prof(kind="Recurring"), {}, "without recurrencyKind"),
    ("recurrency-unknown", 1, prof(kind="Recurring", recurrencyKind="Monthly"), {}, "recurrencyKind"),
    ("duration-negative", 1, prof(schedule={"duration": -1}), {}, "duration"),
    ("start-schedule-not-a-date", 1, prof(schedule={"startSchedule": "yesterday"}), {}, "startSchedule"),
    ("valid-to-not-a-date", 1, prof(validTo="soon"), {}, "validTo"),
    ("too-many-profiles", 1, prof(99, stack=6),
     {"installed": ProfileSet.from_rows([(1, prof(i, stack=i)) for i in range(1, 6)])}, "too many profiles"),
    ("remote-start-not-txprofile", 1, prof(), {"remote_start": True}, "must be a TxProfile"),
    ("remote-start-with-transaction-id", 1, prof(purpose="TxProfile", transactionId=42), {"remote_start": True},
     "must not have a transactionId"),
]


@pytest.mark.parametrize(("connector_id", "profile", "kwargs", "reason"), [r[1:] for r in REJECTIONS],
                         ids=[r[0] for r in REJECTIONS])
def test_rejections(connector_id: int, profile: dict[str, Any], kwargs: dict[str, Any], reason: str) -> None:
    got = check(connector_id, profile, **kwargs)
    assert got is not None and reason.lower() in got.lower(), got


def test_a_profile_that_only_breaks_one_rule_is_accepted_without_it() -> None:
    # Guard against the rejection table passing for the wrong reason: each base profile is valid on its own.
    assert check(1, prof()) is None
    assert check(0, prof(purpose="ChargePointMaxProfile")) is None
    assert check(1, prof(kind="Recurring", recurrencyKind="Daily")) is None
    assert check(1, prof(purpose="TxProfile")) is None


def test_remote_start_profile_needs_no_running_transaction() -> None:
    assert check(2, prof(purpose="TxProfile", kind="Relative", schedule={"startSchedule": None}),
                 active={}, remote_start=True) is None
    assert "connector 0" in (check(0, prof(purpose="TxProfile"), remote_start=True) or "")


def test_the_set_never_mutates_what_it_validates() -> None:
    profile = prof(purpose="TxProfile", transactionId=42)
    before = copy.deepcopy(profile)
    assert check(1, profile) is None
    assert profile == before


# --- MaxChargingProfilesInstalled counts the set after replacement --------------------------------------------------

def full_set() -> ProfileSet:
    s = ProfileSet.from_rows([(1, prof(i, stack=i)) for i in range(1, 6)])  # 5 == max_installed
    assert len(s) == 5
    return s


@pytest.mark.parametrize(("connector_id", "profile"), [
    (2, prof(3, stack=7)),  # same id, other connector and stack: replaces profile 3
    (1, prof(77, stack=2)),  # same connector, stack and purpose: replaces profile 2
    (1, prof(4, stack=1)),  # replaces two at once (id 4 and connector/stack of id 1): the set shrinks
], ids=["same-id", "same-connector-stack-purpose", "replaces-two"])
def test_replacing_on_a_full_set_is_accepted(connector_id: int, profile: dict[str, Any]) -> None:
    s = full_set()
    assert check(connector_id, profile, installed=s) is None
    assert s.count_after_install(connector_id, profile) <= 5
    s.install(connector_id, profile)
    assert len(s) <= 5


@pytest.mark.parametrize(("connector_id", "profile"), [
    (2, prof(77, stack=2)),  # same stack and purpose but another connector: an extra one
    (1, prof(77, stack=2, purpose="ChargePointMaxProfile")),  # same stack, another purpose: an extra one
], ids=["other-connector", "other-purpose"])
def test_adding_to_a_full_set_is_rejected(connector_id: int, profile: dict[str, Any]) -> None:
    connector_id = 0 if profile["chargingProfilePurpose"] == "ChargePointMaxProfile" else connector_id
    reason = check(connector_id, profile, installed=full_set())
    assert reason is not None and "too many profiles" in reason


# --- replacement ------------------------------------------------------------------------------------------------

def test_install_appends_in_install_order() -> None:
    s = ProfileSet()
    s.install(0, prof(1))
    s.install(1, prof(2, stack=1))
    s.install(2, prof(3, stack=1))
    assert ids(s) == [(0, 1), (1, 2), (2, 3)]
    assert len(s) == 3


def test_same_id_replaces_on_any_connector_and_goes_last() -> None:
    s = ProfileSet.from_rows([(1, prof(1)), (2, prof(2)), (0, prof(3))])
    s.install(2, prof(1, stack=5, schedule=periods({"startPeriod": 0, "limit": 6})))
    assert ids(s) == [(2, 2), (0, 3), (2, 1)]
    assert s.profiles()[-1][1]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 6


def test_same_connector_stack_and_purpose_replaces() -> None:
    s = ProfileSet.from_rows([(1, prof(1, stack=2)), (1, prof(2, stack=3))])
    s.install(1, prof(9, stack=2))
    assert ids(s) == [(1, 2), (1, 9)]


@pytest.mark.parametrize(("connector_id", "profile"), [
    (2, prof(9, stack=2)),  # another connector
    (0, prof(9, stack=2)),  # connector 0 does not replace connector 1's profile (3.13.1: N overrides 0 instead)
    (1, prof(9, stack=1)),  # another stack level
    (1, prof(9, stack=2, purpose="TxProfile")),  # another purpose
], ids=["other-connector", "connector-0", "other-stack", "other-purpose"])
def test_no_replacement_when_a_field_differs(connector_id: int, profile: dict[str, Any]) -> None:
    s = ProfileSet.from_rows([(1, prof(1, stack=2))])
    s.install(connector_id, profile)
    assert ids(s) == [(1, 1), (connector_id, 9)]


def test_remote_start_profile_is_replaced_by_a_set_charging_profile_with_its_stack_level() -> None:
    # Errata 3.42: RemoteStart profile (no transactionId), then SetChargingProfile for that transaction.
    s = ProfileSet()
    s.install(1, prof(10, purpose="TxProfile", stack=1))
    s.install(1, prof(11, purpose="TxProfile", stack=1, transactionId=42))
    s.install(1, prof(12, purpose="TxProfile", stack=2, transactionId=42))  # another stack: stacks next to it
    assert ids(s) == [(1, 11), (1, 12)]


def test_the_set_keeps_its_own_copy() -> None:
    profile = prof(1)
    s = ProfileSet()
    s.install(1, profile)
    profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] = 1.0
    assert s.profiles()[0][1]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 16.0


# --- ClearChargingProfile ------------------------------------------------------------------------------------------

def clear_set() -> ProfileSet:
    return ProfileSet.from_rows([
        (0, prof(1, purpose="ChargePointMaxProfile", stack=0)),
        (0, prof(2, purpose="TxDefaultProfile", stack=1)),
        (1, prof(3, purpose="TxDefaultProfile", stack=1)),
        (1, prof(4, purpose="TxProfile", stack=1)),
        (2, prof(5, purpose="TxDefaultProfile", stack=2)),
    ])


@pytest.mark.parametrize(("kwargs", "left"), [
    ({"id": 3}, [1, 2, 4, 5]),
    ({"id": 3, "connector_id": 2, "purpose": "TxProfile", "stack_level": 7}, [1, 2, 4, 5]),  # id wins
    ({"connector_id": 1}, [1, 2, 5]),
    ({"purpose": "TxDefaultProfile"}, [1, 4]),
    ({"stack_level": 1}, [1, 5]),
    ({"connector_id": 1, "purpose": "TxDefaultProfile"}, [1, 2, 4, 5]),  # AND
    ({"connector_id": 0, "stack_level": 1}, [1, 3, 4, 5]),
    ({"purpose": "TxDefaultProfile", "stack_level": 1}, [1, 4, 5]),
    ({"connector_id": 1, "purpose": "TxProfile", "stack_level": 1}, [1, 2, 3, 5]),
    ({}, []),  # nothing given: all go
], ids=["id", "id-wins", "connector", "purpose", "stack", "connector-and-purpose", "connector-0-and-stack",
        "purpose-and-stack", "all-three", "nothing"])
def test_clear(kwargs: dict[str, Any], left: list[int]) -> None:
    s = clear_set()
    assert s.clear(**kwargs) is True
    assert [p["chargingProfileId"] for _cid, p in s.profiles()] == left


@pytest.mark.parametrize("kwargs", [
    {"id": 99},
    {"id": 99, "connector_id": 1},  # the id does not match: the other fields are ignored, nothing is cleared
    {"connector_id": 2, "purpose": "TxProfile"},  # each matches something, together nothing
    {"stack_level": 5},
], ids=["unknown-id", "unknown-id-with-fields", "no-and-match", "unknown-stack"])
def test_clear_without_a_match_is_unknown(kwargs: dict[str, Any]) -> None:
    s = clear_set()
    assert s.clear(**kwargs) is False
    assert len(s) == 5


def test_clear_all_on_an_empty_set_is_unknown() -> None:
    assert ProfileSet().clear() is False


# --- transaction end, expiry ----------------------------------------------------------------------------------------

def test_transaction_ended_removes_only_that_connectors_tx_profiles() -> None:
    s = ProfileSet.from_rows([
        (1, prof(1, purpose="TxProfile", stack=0)),
        (1, prof(2, purpose="TxDefaultProfile", stack=0)),
        (2, prof(3, purpose="TxProfile", stack=0)),
        (1, prof(4, purpose="TxProfile", stack=3, transactionId=42)),
        (0, prof(5, purpose="ChargePointMaxProfile", stack=0)),
    ])
    assert s.transaction_ended(1) is True
    assert ids(s) == [(1, 2), (2, 3), (0, 5)]
    assert s.transaction_ended(1) is False
    assert s.transaction_ended(0) is False


def test_purge_expired_removes_profiles_whose_valid_to_has_passed() -> None:
    s = ProfileSet.from_rows([
        (1, prof(1, stack=0, validTo="2026-03-01T11:59:59Z")),  # past
        (1, prof(2, stack=1, validTo="2026-03-01T12:00:00Z")),  # exactly now: no longer valid
        (1, prof(3, stack=2, validTo="2026-03-01T12:00:01Z")),  # future
        (1, prof(4, stack=3, validFrom="2026-01-01T00:00:00Z")),  # no validTo: valid until replaced
        (1, prof(5, stack=4, validTo="2026-03-01T13:30:00+02:00")),  # 11:30 UTC: past, offsets count
        (1, prof(6, stack=5, validTo="2026-03-01T12:30:00")),  # no offset: UTC, future
    ])
    assert s.next_expiry() == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    assert s.purge_expired(NOW) is True
    assert ids(s) == [(1, 3), (1, 4), (1, 6)]
    assert s.purge_expired(NOW) is False
    assert s.next_expiry() == NOW + timedelta(seconds=1)
    # The same instant in another zone gives the same answer.
    assert s.purge_expired(NOW.astimezone(timezone(timedelta(hours=-5))) + timedelta(minutes=30)) is True
    assert ids(s) == [(1, 4)]
    assert s.next_expiry() is None


def test_purge_expired_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        ProfileSet().purge_expired(datetime(2026, 3, 1, 12, 0))


# --- persistence rows ----------------------------------------------------------------------------------------------

def test_rows_round_trip_through_json() -> None:
    s = clear_set()
    s.install(1, prof(3, purpose="TxProfile", stack=4, transactionId=42, validTo="2026-03-02T00:00:00Z"))
    rows = s.to_rows()
    stored = [(cid, json.dumps(p)) for cid, p in rows]  # what the store keeps
    restored = ProfileSet.from_rows((cid, json.loads(text)) for cid, text in stored)
    assert restored.profiles() == s.profiles()
    assert ids(restored) == [(0, 1), (0, 2), (1, 4), (2, 5), (1, 3)]
    # The rows are copies: editing them changes neither set.
    rows[0][1]["stackLevel"] = 99
    assert s.profiles()[0][1]["stackLevel"] == 0


def test_from_rows_applies_replacement_in_order() -> None:
    restored = ProfileSet.from_rows([(1, prof(1, stack=1)), (2, prof(2)), (1, prof(3, stack=1))])
    assert ids(restored) == [(2, 2), (1, 3)]


def test_empty_round_trip() -> None:
    assert len(ProfileSet.from_rows(ProfileSet().to_rows())) == 0


# --- dates ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("2026-03-01T12:00:00Z", NOW),
    ("2026-03-01T12:00:00.000Z", NOW),
    ("2026-03-01T14:00:00+02:00", NOW),
    ("2026-03-01T12:00:00", NOW),
    ("noon", None),
    (None, None),
    (1772366400, None),
])
def test_parse_datetime(text: Any, expected: datetime | None) -> None:
    assert parse_datetime(text) == expected


def test_limit_checks_use_the_given_limits() -> None:
    one = Limits(max_stack_level=0, allowed_units=("Current",), max_periods=1, max_installed=1, number_of_connectors=1)
    assert check(1, prof(), limits=one) is None
    assert check(2, prof(), limits=one) is not None
    assert check(1, prof(stack=1), limits=one) is not None
