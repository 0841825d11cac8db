"""The smart-charging service (evsed.smartcharging.service.SmartCharging) on a real Store: installing, replacing,
clearing and persisting profiles, the limiter's answer (connector_limits) and composite().

Virtual time only: every `now` is passed in. The exhaustive validation rules are in test_charging_profiles.py and
the composite rules in test_composite_schedule.py; here each is reached through the service and the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from evsed.smartcharging.profiles import Limits
from evsed.smartcharging.service import HORIZON_S, SmartCharging
from evsed.store.db import Store

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LIMITS = Limits(max_stack_level=10, allowed_units=("Current", "Power"), max_periods=96, max_installed=32,
                number_of_connectors=2)
LOCAL_MAX = {1: 32.0, 2: 32.0}
PHASES3 = {1: 3, 2: 3}
NO_TX: dict[int, tuple[datetime, int | None]] = {}

Period = tuple[int, float] | tuple[int, float, int]


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def profile(pid: int, purpose: str = "TxDefaultProfile", periods: Sequence[Period] = ((0, 16.0),), *,
            stack: int = 0, kind: str = "Absolute", unit: str = "A", start: datetime | None = T0,
            tx_id: int | None = None, valid_from: datetime | None = None, valid_to: datetime | None = None,
            recurrency: str | None = None, duration: int | None = None) -> dict[str, Any]:
    sched: dict[str, Any] = {"chargingRateUnit": unit, "chargingSchedulePeriod": [
        {"startPeriod": p[0], "limit": p[1], **({"numberPhases": p[2]} if len(p) > 2 else {})} for p in periods]}
    if start is not None and kind != "Relative":
        sched["startSchedule"] = iso(start)
    if duration is not None:
        sched["duration"] = duration
    out: dict[str, Any] = {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
                           "chargingProfileKind": kind, "chargingSchedule": sched}
    if tx_id is not None:
        out["transactionId"] = tx_id
    if valid_from is not None:
        out["validFrom"] = iso(valid_from)
    if valid_to is not None:
        out["validTo"] = iso(valid_to)
    if recurrency is not None:
        out["recurrencyKind"] = recurrency
    return out


class Recorder:
    """on_change: counts the calls and records what the store held at each one (written before on_change?)."""

    def __init__(self, sc: SmartCharging, reopen: Any) -> None:
        self.sc = sc
        self.reopen = reopen
        self.seen: list[list[tuple[int, dict[str, Any]]]] = []
        sc.on_change = self

    def __call__(self) -> None:
        stored = self.reopen()
        assert stored == self.sc.profiles.to_rows(), "on_change ran before the store had the new set"
        self.seen.append(stored)

    @property
    def count(self) -> int:
        return len(self.seen)


class Env:
    """A SmartCharging on a Store that is either in memory or a file; `restart()` opens a new Store on the file."""

    def __init__(self, kind: str, tmp_path: Path, limits: Limits = LIMITS, **kwargs: Any) -> None:
        self.kind = kind
        self.path = tmp_path / "evsed.db"
        self.limits = limits
        self.kwargs = kwargs
        self.store = Store(":memory:" if kind == "memory" else self.path)
        self.sc = SmartCharging(self.store, limits, local_max_a=LOCAL_MAX, **kwargs)
        self.rec = Recorder(self.sc, self.stored)

    def stored(self) -> list[tuple[int, dict[str, Any]]]:
        """What is committed: for a file, read through a second connection."""
        if self.kind == "memory":
            return self.store.charging_profiles()
        other = Store(self.path)
        try:
            return other.charging_profiles()
        finally:
            other.close()

    def restart(self) -> SmartCharging:
        assert self.kind == "file"
        self.store.close()
        self.store = Store(self.path)
        self.sc = SmartCharging(self.store, self.limits, local_max_a=LOCAL_MAX, **self.kwargs)
        self.rec = Recorder(self.sc, self.stored)
        return self.sc

    def close(self) -> None:
        self.store.close()


@pytest.fixture(params=["memory", "file"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    e = Env(request.param, tmp_path)
    yield e
    e.close()


@pytest.fixture
def file_env(tmp_path: Path) -> Iterator[Env]:
    e = Env("file", tmp_path)
    yield e
    e.close()


def ids(sc: SmartCharging) -> list[tuple[int, int]]:
    """(connector, chargingProfileId) in install order."""
    return [(cid, p["chargingProfileId"]) for cid, p in sc.profiles.profiles()]


# --- rejections ---------------------------------------------------------------------------------------------------
TX1: dict[int, tuple[datetime, int | None]] = {1: (T0, 42)}

REJECTED: list[tuple[str, int, dict[str, Any], dict[int, tuple[datetime, int | None]]]] = [
    ("connectorId out of range", 3, profile(1), NO_TX),
    ("stackLevel above ChargeProfileMaxStackLevel", 1, profile(1, stack=11), NO_TX),
    ("negative stackLevel", 1, profile(1, stack=-1), NO_TX),
    ("ChargePointMaxProfile not on connector 0", 1, profile(1, "ChargePointMaxProfile"), NO_TX),
    ("ChargePointMaxProfile Relative", 0, profile(1, "ChargePointMaxProfile", kind="Relative"), NO_TX),
    ("TxProfile on connector 0", 0, profile(1, "TxProfile", kind="Relative"), {0: (T0, 42)}),
    ("TxProfile without a transaction", 2, profile(1, "TxProfile", kind="Relative"), TX1),
    ("TxProfile for another transaction", 1, profile(1, "TxProfile", kind="Relative", tx_id=43), TX1),
    ("TxProfile with an id while the id is unknown", 1, profile(1, "TxProfile", kind="Relative", tx_id=42),
     {1: (T0, None)}),
    ("more periods than ChargingScheduleMaxPeriods", 1, profile(1, periods=[(i * 60, 10.0) for i in range(97)]),
     NO_TX),
    ("first startPeriod not 0", 1, profile(1, periods=[(5, 10.0)]), NO_TX),
    ("startPeriods not increasing", 1, profile(1, periods=[(0, 10.0), (60, 8.0), (60, 6.0)]), NO_TX),
    ("numberPhases 4", 1, profile(1, periods=[(0, 10.0, 4)]), NO_TX),
    ("numberPhases 0", 1, profile(1, periods=[(0, 10.0, 0)]), NO_TX),
    ("negative limit", 1, profile(1, periods=[(0, -0.1)]), NO_TX),
    ("non-finite limit", 1, profile(1, periods=[(0, float("inf"))]), NO_TX),
    ("Absolute without startSchedule", 1, profile(1, start=None), NO_TX),
    ("Recurring without startSchedule", 1, profile(1, kind="Recurring", start=None, recurrency="Daily"), NO_TX),
    ("Recurring without recurrencyKind", 1, profile(1, kind="Recurring"), NO_TX),
    ("unsupported purpose", 1, profile(1, "TxMaxProfile"), NO_TX),
]


@pytest.mark.parametrize(("why", "connector", "prof", "txs"), REJECTED, ids=[r[0] for r in REJECTED])
def test_rejected(env: Env, why: str, connector: int, prof: dict[str, Any],
                  txs: dict[int, tuple[datetime, int | None]]) -> None:
    assert env.sc.set_profile(1, profile(9, stack=5), {}) == "Accepted"  # something already installed
    before = env.stored()
    assert env.rec.count == 1
    assert env.sc.set_profile(connector, prof, txs) == "Rejected", why
    assert ids(env.sc) == [(1, 9)]
    assert env.stored() == before
    assert env.rec.count == 1  # no on_change for a rejection


def test_unit_not_allowed_rejected() -> None:
    for allowed, bad in ((("Current",), "W"), (("Power",), "A")):
        sc = SmartCharging(Store(":memory:"), Limits(10, allowed, 96, 32, 2), local_max_a=LOCAL_MAX)
        assert sc.set_profile(1, profile(1, unit=bad), NO_TX) == "Rejected"
        other = "A" if bad == "W" else "W"
        assert sc.set_profile(1, profile(1, unit=other, periods=[(0, 7000.0 if other == "W" else 10.0)]),
                              NO_TX) == "Accepted"


def test_too_many_profiles_rejected_but_a_replacement_fits(tmp_path: Path) -> None:
    e = Env("file", tmp_path, Limits(10, ("Current", "Power"), 96, 2, 2))
    try:
        assert e.sc.set_profile(1, profile(1), NO_TX) == "Accepted"
        assert e.sc.set_profile(2, profile(2), NO_TX) == "Accepted"
        assert e.sc.set_profile(0, profile(3), NO_TX) == "Rejected"  # a third one
        assert e.rec.count == 2
        # The same id (on another connector) or the same connector+stack+purpose replaces: the count stays 2.
        assert e.sc.set_profile(0, profile(1), NO_TX) == "Accepted"
        assert e.sc.set_profile(2, profile(4), NO_TX) == "Accepted"
        assert ids(e.sc) == [(0, 1), (2, 4)]
        assert e.stored() == e.sc.profiles.to_rows()
    finally:
        e.close()


# --- replacement --------------------------------------------------------------------------------------------------
def test_same_id_replaces_across_connectors(env: Env) -> None:
    assert env.sc.set_profile(1, profile(1, periods=[(0, 10.0)]), NO_TX) == "Accepted"
    assert env.sc.set_profile(2, profile(2, stack=1), NO_TX) == "Accepted"
    assert env.sc.set_profile(2, profile(1, stack=3, periods=[(0, 12.0)]), NO_TX) == "Accepted"
    assert ids(env.sc) == [(2, 2), (2, 1)]  # the old id 1 on connector 1 is gone; the new one goes last
    assert env.sc.profiles.profiles()[1][1]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 12.0
    assert env.stored() == env.sc.profiles.to_rows()
    assert env.rec.count == 3


def test_same_connector_stack_and_purpose_replaces(env: Env) -> None:
    sc = env.sc
    assert sc.set_profile(1, profile(1, stack=2), NO_TX) == "Accepted"
    assert sc.set_profile(1, profile(2, stack=3), NO_TX) == "Accepted"  # other stack level: kept
    assert sc.set_profile(2, profile(3, stack=2), NO_TX) == "Accepted"  # other connector: kept
    assert sc.set_profile(0, profile(4, "ChargePointMaxProfile", stack=2), NO_TX) == "Accepted"
    assert sc.set_profile(1, profile(5, "TxProfile", kind="Relative", stack=2), TX1) == "Accepted"  # other purpose
    assert ids(sc) == [(1, 1), (1, 2), (2, 3), (0, 4), (1, 5)]
    assert sc.set_profile(1, profile(6, stack=2, periods=[(0, 8.0)]), NO_TX) == "Accepted"
    assert ids(sc) == [(1, 2), (2, 3), (0, 4), (1, 5), (1, 6)]
    assert env.stored() == sc.profiles.to_rows()


# --- clearing -----------------------------------------------------------------------------------------------------
def _four(sc: SmartCharging) -> None:
    assert sc.set_profile(1, profile(1, stack=0), NO_TX) == "Accepted"
    assert sc.set_profile(1, profile(2, stack=1), NO_TX) == "Accepted"
    assert sc.set_profile(2, profile(3, stack=1), NO_TX) == "Accepted"
    assert sc.set_profile(0, profile(4, "ChargePointMaxProfile", stack=1), NO_TX) == "Accepted"


def test_clear_by_id_ignores_the_other_fields(env: Env) -> None:
    _four(env.sc)
    assert env.rec.count == 4
    # None of the other fields match profile 1, and they are ignored.
    assert env.sc.clear(id=1, connector_id=2, purpose="ChargePointMaxProfile", stack_level=9) == "Accepted"
    assert ids(env.sc) == [(1, 2), (2, 3), (0, 4)]
    assert env.rec.count == 5
    # An id that matches nothing clears nothing, even though the other fields would match profile 2.
    assert env.sc.clear(id=99, connector_id=1, purpose="TxDefaultProfile", stack_level=1) == "Unknown"
    assert ids(env.sc) == [(1, 2), (2, 3), (0, 4)]
    assert env.rec.count == 5
    assert env.stored() == env.sc.profiles.to_rows()


def test_clear_ands_the_given_fields(env: Env) -> None:
    sc = env.sc
    _four(sc)
    assert sc.clear(connector_id=1, stack_level=1) == "Accepted"  # profile 2 only (1 is stack 0)
    assert ids(sc) == [(1, 1), (2, 3), (0, 4)]
    assert sc.clear(purpose="TxDefaultProfile", stack_level=1) == "Accepted"  # profile 3 (4 is ChargePointMax)
    assert ids(sc) == [(1, 1), (0, 4)]
    assert sc.clear(connector_id=0, purpose="TxDefaultProfile") == "Unknown"
    assert sc.clear(connector_id=2) == "Unknown"
    assert sc.clear(stack_level=1) == "Accepted"  # profile 4
    assert ids(sc) == [(1, 1)]
    assert env.rec.count == 4 + 3
    assert env.stored() == sc.profiles.to_rows()


def test_clear_all_then_unknown(env: Env) -> None:
    assert env.sc.clear() == "Unknown"  # nothing installed
    assert env.rec.count == 0
    _four(env.sc)
    assert env.sc.clear() == "Accepted"
    assert ids(env.sc) == [] and env.stored() == []
    assert env.rec.count == 5
    assert env.sc.clear() == "Unknown"
    assert env.sc.clear(id=1) == "Unknown"
    assert env.rec.count == 5


# --- transaction end, expiry --------------------------------------------------------------------------------------
def test_tx_profile_removed_at_transaction_end(env: Env) -> None:
    sc = env.sc
    txs = {1: (T0, 42), 2: (T0, 43)}
    assert sc.set_profile(1, profile(1, "TxProfile", kind="Relative", tx_id=42), txs) == "Accepted"
    assert sc.set_profile(2, profile(2, "TxProfile", kind="Relative"), txs) == "Accepted"
    assert sc.set_profile(1, profile(3), txs) == "Accepted"  # TxDefault on the same connector stays
    assert env.rec.count == 3
    sc.transaction_ended(1)
    assert ids(sc) == [(2, 2), (1, 3)]
    assert env.stored() == sc.profiles.to_rows()
    assert env.rec.count == 4
    sc.transaction_ended(1)  # nothing left to remove: no change, no on_change
    assert env.rec.count == 4
    sc.transaction_ended(2)
    assert ids(sc) == [(1, 3)]
    assert env.rec.count == 5


def test_purge_expired_at_valid_to(env: Env) -> None:
    sc = env.sc
    assert sc.set_profile(1, profile(1, valid_to=T0 + timedelta(hours=1)), NO_TX) == "Accepted"
    assert sc.set_profile(2, profile(2, valid_to=T0 + timedelta(hours=2)), NO_TX) == "Accepted"
    assert sc.set_profile(0, profile(3), NO_TX) == "Accepted"  # no validTo: never expires
    sc.purge_expired(T0 + timedelta(hours=1) - timedelta(microseconds=1))
    assert len(sc.profiles) == 3 and env.rec.count == 3
    sc.purge_expired(T0 + timedelta(hours=1))  # validTo is the first instant it is no longer valid
    assert ids(sc) == [(2, 2), (0, 3)]
    assert env.stored() == sc.profiles.to_rows()
    assert env.rec.count == 4
    sc.purge_expired(T0 + timedelta(hours=1, minutes=30))
    assert env.rec.count == 4
    sc.purge_expired(T0 + timedelta(days=30))
    assert ids(sc) == [(0, 3)] and env.rec.count == 5


# --- persistence --------------------------------------------------------------------------------------------------
def test_profiles_and_install_order_survive_a_restart(file_env: Env) -> None:
    sc = file_env.sc
    txs = {1: (T0, 42)}
    assert sc.set_profile(1, profile(1, periods=[(0, 20.0), (1800, 10.0)]), txs) == "Accepted"
    assert sc.set_profile(0, profile(2, periods=[(0, 14.0)]), txs) == "Accepted"
    assert sc.set_profile(0, profile(3, "ChargePointMaxProfile", periods=[(0, 24.0)]), txs) == "Accepted"
    assert sc.set_profile(1, profile(4, "TxProfile", kind="Relative", tx_id=42, stack=2), txs) == "Accepted"
    assert sc.set_profile(2, profile(1, stack=4, periods=[(0, 12.0)]), txs) == "Accepted"  # id 1 moves to the end
    assert sc.clear(id=2) == "Accepted"
    before_rows = sc.profiles.to_rows()
    before_limits = sc.connector_limits(T0 + timedelta(seconds=10), txs, PHASES3)
    before_composite = sc.composite(0, T0, 3600, "W", txs)
    assert ids(sc) == [(0, 3), (1, 4), (2, 1)]

    again = file_env.restart()
    assert again is not sc
    assert again.profiles.to_rows() == before_rows
    assert ids(again) == [(0, 3), (1, 4), (2, 1)]
    assert again.connector_limits(T0 + timedelta(seconds=10), txs, PHASES3) == before_limits
    assert again.composite(0, T0, 3600, "W", txs) == before_composite
    # And what happens after the restart is persisted too.
    again.transaction_ended(1)
    assert file_env.rec.count == 1
    third = file_env.restart()
    assert ids(third) == [(0, 3), (2, 1)]


def test_install_order_after_a_replacement_survives_a_restart(file_env: Env) -> None:
    # The store keeps install order, not id or stack order: a profile replaced by id moves to the end.
    sc = file_env.sc
    for pid in (5, 3, 8):
        assert sc.set_profile(0, profile(pid, stack=pid), NO_TX) == "Accepted"
    assert sc.set_profile(0, profile(5, stack=1), NO_TX) == "Accepted"
    assert [p for _cid, p in ids(sc)] == [3, 8, 5]
    assert [p for _cid, p in ids(file_env.restart())] == [3, 8, 5]


def test_on_change_sees_the_store_already_written(env: Env) -> None:
    # The Recorder asserts, inside on_change, that the committed rows (a second connection for a file) are the set
    # as it is now: every one of these calls checks it.
    sc = env.sc
    assert sc.set_profile(1, profile(1), NO_TX) == "Accepted"
    sc.install_remote_start(2, profile(2, "TxProfile", kind="Relative"))
    assert sc.clear(id=1) == "Accepted"
    sc.transaction_ended(2)
    assert env.rec.seen == [
        [(1, profile(1))],
        [(1, profile(1)), (2, profile(2, "TxProfile", kind="Relative"))],
        [(2, profile(2, "TxProfile", kind="Relative"))],
        [],
    ]


def test_on_change_not_called_for_rejections_or_no_op_clears(env: Env) -> None:
    assert env.sc.set_profile(5, profile(1), NO_TX) == "Rejected"
    assert env.sc.clear() == "Unknown"
    env.sc.transaction_ended(1)
    env.sc.purge_expired(T0)
    assert env.rec.count == 0
    assert env.stored() == []


def test_store_is_not_mutated_through_the_callers_dict(env: Env) -> None:
    p = profile(1, periods=[(0, 10.0)])
    assert env.sc.set_profile(1, p, NO_TX) == "Accepted"
    p["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] = 99.0
    assert env.sc.connector_limits(T0, NO_TX, PHASES3).amps[1] == 10.0


# --- check_remote_start -------------------------------------------------------------------------------------------
def test_check_remote_start() -> None:
    sc = SmartCharging(Store(":memory:"), LIMITS, local_max_a=LOCAL_MAX)
    assert sc.check_remote_start(1, profile(1, "TxProfile", kind="Relative")) is None
    assert sc.check_remote_start(None, profile(1, "TxProfile", kind="Relative")) is None  # connector chosen later
    assert sc.check_remote_start(1, profile(1, "TxDefaultProfile")) is not None
    assert sc.check_remote_start(1, profile(1, "TxProfile", kind="Relative", tx_id=42)) is not None
    assert sc.check_remote_start(1, profile(1, "TxProfile", kind="Relative", stack=11)) is not None
    assert len(sc.profiles) == 0  # checking installs nothing


# --- connector_limits ---------------------------------------------------------------------------------------------
def service(**kwargs: Any) -> SmartCharging:
    return SmartCharging(Store(":memory:"), LIMITS, local_max_a=LOCAL_MAX, **kwargs)


def test_no_profile_no_limit_and_the_horizon() -> None:
    result = service().connector_limits(T0, NO_TX, PHASES3)
    assert result.amps == {1: None, 2: None}
    assert result.next_change == T0 + timedelta(seconds=HORIZON_S) == T0 + timedelta(days=1)


@pytest.mark.parametrize("limit", [32.0, 32.05, 40.0, 1000.0])
def test_a_profile_at_or_above_the_local_max_is_no_limit(limit: float) -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, periods=[(0, limit)]), NO_TX) == "Accepted"
    assert sc.connector_limits(T0, NO_TX, PHASES3).amps == {1: None, 2: None}


def test_the_limit_in_amps_on_its_connector_only() -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0)]), NO_TX) == "Accepted"
    assert sc.connector_limits(T0, NO_TX, PHASES3).amps == {1: 10.0, 2: None}
    assert sc.connector_limits(T0, NO_TX, PHASES3).amps[1] == 10.0


def test_a_local_max_below_32_counts_per_connector() -> None:
    sc = SmartCharging(Store(":memory:"), LIMITS, local_max_a={1: 16.0, 2: 32.0})
    assert sc.set_profile(0, profile(1, periods=[(0, 20.0)]), NO_TX) == "Accepted"
    assert sc.connector_limits(T0, NO_TX, PHASES3).amps == {1: None, 2: 20.0}


def test_a_watt_profile_is_converted_with_the_phases_given() -> None:
    sc = service()
    # 3680 W = 16 A on one phase at 230 V, 5.33 A (rounded down to 5.3) on three.
    assert sc.set_profile(1, profile(1, unit="W", periods=[(0, 3680.0)]), NO_TX) == "Accepted"
    assert sc.set_profile(2, profile(2, unit="W", periods=[(0, 3680.0)]), NO_TX) == "Accepted"
    assert sc.connector_limits(T0, NO_TX, {1: 1, 2: 3}).amps == {1: 16.0, 2: 5.3}
    assert sc.connector_limits(T0, NO_TX, {1: 3, 2: 1}).amps == {1: 5.3, 2: 16.0}


def test_a_watt_profile_uses_the_periods_number_phases() -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, unit="W", periods=[(0, 3680.0, 1)]), NO_TX) == "Accepted"
    assert sc.set_profile(2, profile(2, unit="W", periods=[(0, 11040.0, 3)]), NO_TX) == "Accepted"
    # The EVs' actual phase counts do not matter when the period states numberPhases.
    assert sc.connector_limits(T0, NO_TX, {1: 3, 2: 1}).amps == {1: 16.0, 2: 16.0}


def test_a_watt_profile_falls_back_to_default_phases() -> None:
    sc = service(default_phases=1)
    assert sc.set_profile(1, profile(1, unit="W", periods=[(0, 2300.0)]), NO_TX) == "Accepted"
    assert sc.connector_limits(T0, NO_TX, {}).amps[1] == 10.0


@pytest.mark.parametrize("limit", [0.0, 3.0, 5.9])
def test_limits_below_six_amps_are_passed_through(limit: float) -> None:
    # The station pauses the EV below 6 A; the service does not round up or lift such a limit.
    sc = service()
    assert sc.set_profile(1, profile(1, periods=[(0, limit)]), NO_TX) == "Accepted"
    assert sc.connector_limits(T0, NO_TX, PHASES3).amps[1] == limit


def test_next_change_is_the_next_period_boundary() -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0), (3600, 20.0), (5400, 8.0)]), NO_TX) == "Accepted"
    r = sc.connector_limits(T0, NO_TX, PHASES3)
    assert (r.amps[1], r.next_change) == (10.0, T0 + timedelta(seconds=3600))
    r = sc.connector_limits(T0 + timedelta(seconds=3599), NO_TX, PHASES3)
    assert (r.amps[1], r.next_change) == (10.0, T0 + timedelta(seconds=3600))
    r = sc.connector_limits(T0 + timedelta(seconds=3600), NO_TX, PHASES3)
    assert (r.amps[1], r.next_change) == (20.0, T0 + timedelta(seconds=5400))
    r = sc.connector_limits(T0 + timedelta(seconds=5400), NO_TX, PHASES3)
    assert (r.amps[1], r.next_change) == (8.0, T0 + timedelta(seconds=5400 + HORIZON_S))


def test_a_profile_that_starts_later_is_a_boundary() -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, start=T0 + timedelta(minutes=5), periods=[(0, 10.0)]), NO_TX) == "Accepted"
    r = sc.connector_limits(T0, NO_TX, PHASES3)
    assert (r.amps[1], r.next_change) == (None, T0 + timedelta(minutes=5))


def test_next_change_is_the_earliest_across_connectors() -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0), (7200, 20.0)]), NO_TX) == "Accepted"
    assert sc.set_profile(2, profile(2, periods=[(0, 12.0), (1800, 20.0)]), NO_TX) == "Accepted"
    r = sc.connector_limits(T0, NO_TX, PHASES3)
    assert r.amps == {1: 10.0, 2: 12.0}
    assert r.next_change == T0 + timedelta(seconds=1800)
    r = sc.connector_limits(T0 + timedelta(seconds=1800), NO_TX, PHASES3)
    assert r.amps == {1: 10.0, 2: 20.0}
    assert r.next_change == T0 + timedelta(seconds=7200)


def test_next_change_is_the_next_valid_to() -> None:
    sc = service()
    # 40 A is no limit (above the local max), so validTo changes no limit and makes no boundary in the schedule;
    # the limiter still has to wake up then to purge it.
    assert sc.set_profile(1, profile(1, periods=[(0, 40.0)], valid_to=T0 + timedelta(minutes=15)),
                          NO_TX) == "Accepted"
    assert sc.set_profile(2, profile(2, periods=[(0, 10.0), (3600, 12.0)]), NO_TX) == "Accepted"
    r = sc.connector_limits(T0, NO_TX, PHASES3)
    assert r.amps == {1: None, 2: 10.0}
    assert r.next_change == T0 + timedelta(minutes=15)


def test_a_valid_to_inside_a_second_is_exact() -> None:
    sc = service()
    p = profile(1, periods=[(0, 10.0)])
    p["validTo"] = "2026-03-01T12:10:00.250Z"
    assert sc.set_profile(1, p, NO_TX) == "Accepted"
    r = sc.connector_limits(T0, NO_TX, PHASES3)
    assert r.amps[1] == 10.0
    assert r.next_change == T0 + timedelta(minutes=10, milliseconds=250)


def test_a_past_valid_to_is_not_the_next_change() -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0)], valid_to=T0 - timedelta(minutes=1)),
                          NO_TX) == "Accepted"
    r = sc.connector_limits(T0, NO_TX, PHASES3)
    assert r.amps[1] is None  # not valid any more
    assert r.next_change == T0 + timedelta(seconds=HORIZON_S)


def test_a_valid_to_beyond_the_horizon_is_not_the_next_change() -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0)], valid_to=T0 + timedelta(days=3)), NO_TX) == "Accepted"
    r = sc.connector_limits(T0, NO_TX, PHASES3)
    assert (r.amps[1], r.next_change) == (10.0, T0 + timedelta(seconds=HORIZON_S))


@pytest.mark.parametrize("us", [1, 250_000, 999_999])
def test_fractional_now_still_gives_the_boundary_exactly(us: int) -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0), (3600, 20.0)]), NO_TX) == "Accepted"
    for seconds in (0, 100, 3599):
        now = T0 + timedelta(seconds=seconds, microseconds=us)
        r = sc.connector_limits(now, NO_TX, PHASES3)
        assert r.amps[1] == 10.0
        assert r.next_change == T0 + timedelta(seconds=3600), now


def test_relative_tx_profile_is_anchored_at_the_transaction_start() -> None:
    sc = service()
    started = T0 - timedelta(seconds=600)
    txs = {1: (started, 42)}
    assert sc.set_profile(1, profile(1, "TxProfile", kind="Relative", periods=[(0, 10.0), (900, 20.0)]),
                          txs) == "Accepted"
    r = sc.connector_limits(T0, txs, PHASES3)
    assert r.amps == {1: 10.0, 2: None}
    assert r.next_change == started + timedelta(seconds=900) == T0 + timedelta(seconds=300)
    r = sc.connector_limits(T0 + timedelta(seconds=300), txs, PHASES3)
    assert r.amps[1] == 20.0


def test_relative_tx_default_without_a_transaction_starts_now() -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, kind="Relative", periods=[(0, 10.0), (900, 20.0)]), NO_TX) == "Accepted"
    r = sc.connector_limits(T0 + timedelta(seconds=50), NO_TX, PHASES3)
    assert (r.amps[1], r.next_change) == (10.0, T0 + timedelta(seconds=950))


def test_tx_default_on_connector_0_applies_to_every_connector() -> None:
    sc = service()
    assert sc.set_profile(0, profile(1, periods=[(0, 12.0)]), NO_TX) == "Accepted"
    assert sc.connector_limits(T0, NO_TX, PHASES3).amps == {1: 12.0, 2: 12.0}
    # A TxDefault on connector 2 at the same stack level takes precedence there.
    assert sc.set_profile(2, profile(2, periods=[(0, 20.0)]), NO_TX) == "Accepted"
    assert sc.connector_limits(T0, NO_TX, PHASES3).amps == {1: 12.0, 2: 20.0}
    # With a transaction on 1 too (TxDefault applies with and without one).
    assert sc.connector_limits(T0, {1: (T0, 42)}, PHASES3).amps == {1: 12.0, 2: 20.0}


def test_tx_profile_masks_tx_default_for_its_connector() -> None:
    sc = service()
    txs = {1: (T0, 42)}
    assert sc.set_profile(0, profile(1, periods=[(0, 12.0)]), txs) == "Accepted"
    assert sc.set_profile(1, profile(2, "TxProfile", kind="Relative", periods=[(0, 20.0)], duration=600),
                          txs) == "Accepted"
    r = sc.connector_limits(T0, txs, PHASES3)
    assert r.amps == {1: 20.0, 2: 12.0}
    assert r.next_change == T0 + timedelta(seconds=600)
    # After the TxProfile's schedule ends the connector runs at its local max, not the TxDefault.
    assert sc.connector_limits(T0 + timedelta(seconds=600), txs, PHASES3).amps == {1: None, 2: 12.0}
    sc.transaction_ended(1)
    assert sc.connector_limits(T0 + timedelta(seconds=600), {}, PHASES3).amps == {1: 12.0, 2: 12.0}


def test_charge_point_max_caps_a_connector() -> None:
    sc = service()
    assert sc.set_profile(0, profile(1, "ChargePointMaxProfile", periods=[(0, 10.0), (600, 25.0)]),
                          NO_TX) == "Accepted"
    assert sc.set_profile(1, profile(2, periods=[(0, 20.0)]), NO_TX) == "Accepted"
    r = sc.connector_limits(T0, NO_TX, PHASES3)
    assert r.amps == {1: 10.0, 2: 10.0}
    assert r.next_change == T0 + timedelta(seconds=600)
    one_tx = {1: (T0, 42)}
    r = sc.connector_limits(T0 + timedelta(seconds=600), one_tx, PHASES3)
    assert r.amps == {1: 20.0, 2: 25.0}  # min(TxDefault, ChargePointMax) per connector


def test_the_composite_cap_does_not_shorten_the_limiters_horizon() -> None:
    # max_duration_s caps GetCompositeSchedule answers (config allows down to 60 s); the limiter must still see a
    # boundary two hours away, not sleep until the horizon.
    sc = service(max_duration_s=3600)
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0), (7200, 20.0)]), NO_TX) == "Accepted"
    r = sc.connector_limits(T0, NO_TX, PHASES3)
    assert (r.amps[1], r.next_change) == (10.0, T0 + timedelta(seconds=7200))
    assert sc.composite(1, T0, 86400, "A", NO_TX)["duration"] == 3600


# --- composite() --------------------------------------------------------------------------------------------------
def test_composite_duration_capped_at_max_duration() -> None:
    sc = service(max_duration_s=3600)
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0), (1800, 12.0), (7200, 20.0)]), NO_TX) == "Accepted"
    capped = sc.composite(1, T0, 86400, "A", NO_TX)
    assert capped == {"startSchedule": "2026-03-01T12:00:00Z", "duration": 3600, "chargingRateUnit": "A",
                      "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0},
                                                 {"startPeriod": 1800, "limit": 12.0}]}
    assert sc.composite(1, T0, 3599, "A", NO_TX)["duration"] == 3599
    assert sc.composite(1, T0, 3600, "A", NO_TX)["duration"] == 3600
    assert service().composite(1, T0, 10**9, "A", NO_TX)["duration"] == 7 * 86400  # the default cap


def test_composite_start_truncated_to_the_second() -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0), (60, 12.0)]), NO_TX) == "Accepted"
    out = sc.composite(1, T0 + timedelta(seconds=10, microseconds=900_000), 120, "A", NO_TX)
    assert out["startSchedule"] == "2026-03-01T12:00:10Z"
    assert out["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10.0}, {"startPeriod": 50, "limit": 12.0}]


@pytest.mark.parametrize(("allowed", "unit", "limit"), [
    (("Current", "Power"), "A", 32.0),
    (("Power", "Current"), "W", 32 * 230 * 3.0),
    (("Power",), "W", 32 * 230 * 3.0),
    (("Current",), "A", 32.0),
])
def test_composite_without_unit_answers_in_the_first_allowed_unit(allowed: tuple[str, ...], unit: str,
                                                                  limit: float) -> None:
    sc = SmartCharging(Store(":memory:"), Limits(10, allowed, 96, 32, 2), local_max_a=LOCAL_MAX)
    out = sc.composite(1, T0, 60, None, NO_TX)
    assert out["chargingRateUnit"] == unit
    assert out["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": limit}]
    assert sc.composite(1, T0, 60, "A", NO_TX)["chargingRateUnit"] == "A"  # an explicit unit wins


def test_composite_connector_0_sums_the_connectors() -> None:
    sc = service()
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0), (600, 16.0)]), NO_TX) == "Accepted"
    out = sc.composite(0, T0, 1200, "A", NO_TX)
    # Connector 2 has no profile and counts at its local max (32 A).
    assert out["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 42.0}, {"startPeriod": 600, "limit": 48.0}]
    assert sc.set_profile(0, profile(2, "ChargePointMaxProfile", periods=[(0, 45.0)]), NO_TX) == "Accepted"
    out = sc.composite(0, T0, 1200, "A", NO_TX)
    assert out["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 42.0}, {"startPeriod": 600, "limit": 45.0}]


def test_composite_watts_with_the_phases_given() -> None:
    sc = service(voltage=230.0)
    assert sc.set_profile(1, profile(1, periods=[(0, 10.0)]), NO_TX) == "Accepted"
    assert sc.composite(1, T0, 60, "W", NO_TX, {1: 1})["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 2300.0}]
    assert sc.composite(1, T0, 60, "W", NO_TX)["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 6900.0}]
