"""The composite schedule engine (evsed.smartcharging.composite_schedule): OCPP 1.6 section 3.13 rules 1-8 of issue 5,
the spec's examples, the decisions documented in the module, and property tests against a brute-force per-second
oracle written independently from the engine's segment painting."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evsed.smartcharging import composite_schedule

S = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)  # a Wednesday
MONDAY = datetime(2024, 4, 29, tzinfo=UTC)
DAY = 86_400
WEEK = 7 * DAY
LOCAL_A = 32.0
LOCAL_W3 = 32.0 * 230 * 3  # 22080 W: the default local maximum in W (3 phases)

Period = tuple[int, float] | tuple[int, float, int]


# ------------------------------------------------------------------------------------------------ helpers


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def prof(pid: int, *, purpose: str = "TxDefaultProfile", stack: int = 0, kind: str = "Absolute",
         periods: Sequence[Period] = ((0, 16.0),), unit: str = "A", start: datetime | str | None = S,
         duration: int | None = None, valid_from: datetime | None = None, valid_to: datetime | None = None,
         recurrency: str | None = None, tx_id: int | None = None, min_rate: float | None = None) -> dict[str, Any]:
    """A csChargingProfiles dict as in SetChargingProfile.req."""
    sched: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": p[0], "limit": p[1], **({"numberPhases": p[2]} if len(p) > 2 else {})} for p in periods
        ],
    }
    if start is not None and kind != "Relative":
        sched["startSchedule"] = start if isinstance(start, str) else iso(start)
    if duration is not None:
        sched["duration"] = duration
    if min_rate is not None:
        sched["minChargingRate"] = min_rate
    p: dict[str, Any] = {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
                         "chargingProfileKind": kind, "chargingSchedule": sched}
    if kind == "Recurring":
        p["recurrencyKind"] = recurrency or "Daily"
    if valid_from is not None:
        p["validFrom"] = iso(valid_from)
    if valid_to is not None:
        p["validTo"] = iso(valid_to)
    if tx_id is not None:
        p["transactionId"] = tx_id
    return p


def cmax(pid: int, periods: Sequence[Period] = ((0, 20.0),), **kw: Any) -> dict[str, Any]:
    return prof(pid, purpose="ChargePointMaxProfile", periods=periods, **kw)


def txp(pid: int, periods: Sequence[Period] = ((0, 16.0),), kind: str = "Relative", **kw: Any) -> dict[str, Any]:
    return prof(pid, purpose="TxProfile", periods=periods, kind=kind, **kw)


def run(profiles: Sequence[tuple[int, dict[str, Any]]], **kw: Any) -> list[Period]:
    """The schedule's periods as (startPeriod, limit) or (startPeriod, limit, numberPhases)."""
    kw.setdefault("connector_id", 1)
    kw.setdefault("start", S)
    kw.setdefault("duration", DAY)
    kw.setdefault("unit", "A")
    out = composite_schedule(profiles, **kw)
    return [(p["startPeriod"], p["limit"], p["numberPhases"]) if "numberPhases" in p else (p["startPeriod"], p["limit"])
            for p in out["chargingSchedulePeriod"]]


H = 3600
TX1 = {1: (S - timedelta(minutes=10), 7)}


# ------------------------------------------------------------------------------------------------ the spec's examples


SPEC_DAILY = prof(100, kind="Recurring", recurrency="Daily", unit="W", duration=DAY, start="2013-01-01T00:00Z",
                  periods=((0, 11000, 3), (28800, 6000, 3), (72000, 11000, 3)))


def test_spec_3_13_7_daily_6kw_between_8_and_20() -> None:
    day = datetime(2024, 5, 1, tzinfo=UTC)
    assert run([(0, SPEC_DAILY)], start=day, unit="W") == [(0, 11000, 3), (28800, 6000, 3), (72000, 11000, 3)]
    # The same in A: 11000 W / (230 V x 3) = 15.94 -> 15.9 (rounded down), 6000 W -> 8.69 -> 8.6.
    assert run([(0, SPEC_DAILY)], start=day, unit="A") == [(0, 15.9, 3), (28800, 8.6, 3), (72000, 15.9, 3)]


def test_spec_daily_window_crossing_midnight_utc() -> None:
    start = datetime(2024, 5, 1, 18, 0, tzinfo=UTC)
    out = composite_schedule([(0, SPEC_DAILY)], connector_id=1, start=start, duration=DAY, unit="W")
    assert out["startSchedule"] == "2024-05-01T18:00:00Z"
    assert out["duration"] == DAY
    assert out["chargingRateUnit"] == "W"
    assert [(p["startPeriod"], p["limit"]) for p in out["chargingSchedulePeriod"]] == [
        (0, 6000), (2 * H, 11000), (14 * H, 6000)]  # 20:00 -> 11 kW across midnight, 08:00 next day -> 6 kW


def _weekly_calendar() -> dict[str, Any]:
    """3.13.2: one week, full power on weekdays 23:00-06:00 and all weekend, reduced otherwise (from Monday 00:00)."""
    periods: list[Period] = []
    for d in range(5):
        periods += [(d * DAY, 32.0), (d * DAY + 6 * H, 10.0), (d * DAY + 23 * H, 32.0)]
    merged: list[Period] = []
    for p in periods:  # Monday 00:00 and the previous 23:00 are both full: keep the schedule minimal but valid
        if merged and merged[-1][1] == p[1]:
            continue
        merged.append(p)
    return prof(1, kind="Recurring", recurrency="Weekly", start=MONDAY, periods=merged, duration=WEEK)


def test_spec_3_13_2_stacking_weekly_calendar_with_holiday_exception() -> None:
    weekly = _weekly_calendar()
    holiday = prof(2, stack=1, start=datetime(2024, 5, 1, tzinfo=UTC), periods=((0, 32.0),),
                   valid_from=datetime(2024, 5, 1, tzinfo=UTC), valid_to=datetime(2024, 5, 2, tzinfo=UTC))
    tue = datetime(2024, 4, 30, tzinfo=UTC)
    # Without the exception: Tuesday and Wednesday follow the calendar.
    assert run([(0, weekly)], start=tue, duration=2 * DAY) == [
        (0, 32.0), (6 * H, 10.0), (23 * H, 32.0), (DAY + 6 * H, 10.0), (DAY + 23 * H, 32.0)]
    # With the holiday (stack level 1, valid on Wednesday 1 May only): full power from Tuesday 23:00 to Thursday 06:00.
    assert run([(0, weekly), (0, holiday)], start=tue, duration=3 * DAY) == [
        (0, 32.0), (6 * H, 10.0), (23 * H, 32.0), (2 * DAY + 6 * H, 10.0), (2 * DAY + 23 * H, 32.0)]
    # The weekend is full power all day: Friday 23:00 until Monday 06:00.
    fri = datetime(2024, 5, 3, tzinfo=UTC)
    assert run([(0, weekly)], start=fri, duration=4 * DAY) == [
        (0, 32.0), (6 * H, 10.0), (23 * H, 32.0), (3 * DAY + 6 * H, 10.0), (3 * DAY + 23 * H, 32.0)]


def test_spec_charge_point_max_is_the_limit_of_all_connectors_combined() -> None:
    """3.13.3 / Figure 10: a ChargePointMaxProfile on connector 0 limits the combined flow; connector 0 reports it."""
    site = cmax(1, ((0, 40.0), (2 * H, 20.0)))
    profiles = [(0, site), (1, prof(2, periods=((0, 32.0),))), (2, prof(3, periods=((0, 16.0),)))]
    assert run(profiles, connector_id=0, number_of_connectors=2, duration=4 * H) == [(0, 40.0), (2 * H, 20.0)]
    # Each connector: min(its TxDefault, ChargePointMax).
    assert run(profiles, connector_id=1, number_of_connectors=2, duration=4 * H) == [(0, 32.0), (2 * H, 20.0)]
    assert run(profiles, connector_id=2, number_of_connectors=2, duration=4 * H) == [(0, 16.0)]


# ------------------------------------------------------------------------------------------------ stacking, validity


def test_no_profiles_gives_the_local_maximum_over_the_whole_window() -> None:
    assert run([]) == [(0, LOCAL_A)]
    assert run([], unit="W") == [(0, LOCAL_W3)]
    assert run([], default_limit_a=16.0, voltage=120.0, default_phases=1, unit="W") == [(0, 1920.0)]


def test_validity_window_cut_in_the_middle() -> None:
    base = prof(1, periods=((0, 16.0),))
    burst = prof(2, stack=1, periods=((0, 10.0),), valid_from=S + timedelta(hours=1), valid_to=S + timedelta(hours=2))
    assert run([(0, base), (0, burst)]) == [(0, 16.0), (H, 10.0), (2 * H, 16.0)]
    # validFrom in the future for the only profile: the local maximum until then; validTo: back to it after.
    assert run([(0, burst)]) == [(0, LOCAL_A), (H, 10.0), (2 * H, LOCAL_A)]


def test_valid_from_before_and_valid_to_after_the_window_cover_it_all() -> None:
    p = prof(1, periods=((0, 12.0),), valid_from=S - timedelta(days=3), valid_to=S + timedelta(days=3))
    assert run([(0, p)]) == [(0, 12.0)]


def test_expired_or_not_yet_valid_profiles_do_not_apply() -> None:
    old = prof(1, periods=((0, 6.0),), valid_to=S)  # validTo is exclusive
    future = prof(2, stack=1, periods=((0, 7.0),), valid_from=S + timedelta(days=2))
    assert run([(0, old), (0, future)]) == [(0, LOCAL_A)]


def test_higher_stack_level_whose_schedule_ended_lets_the_lower_one_show_through() -> None:
    low = prof(1, stack=0, periods=((0, 16.0),))
    high = prof(2, stack=3, periods=((0, 10.0), (600, 8.0)), duration=1800)
    assert run([(0, low), (0, high)]) == [(0, 10.0), (600, 8.0), (1800, 16.0)]
    # Install order does not matter for the stack, only the level does.
    assert run([(0, high), (0, low)]) == [(0, 10.0), (600, 8.0), (1800, 16.0)]


def test_higher_stack_level_wins_even_when_its_limit_is_higher() -> None:
    low = prof(1, stack=0, periods=((0, 8.0),))
    high = prof(2, stack=1, periods=((0, 20.0),), duration=H)
    assert run([(0, low), (0, high)]) == [(0, 20.0), (H, 8.0)]


def test_three_levels_with_holes_show_through_in_order() -> None:
    p0 = prof(1, stack=0, periods=((0, 6.0),))
    p1 = prof(2, stack=1, periods=((0, 10.0),), valid_from=S + timedelta(hours=1), valid_to=S + timedelta(hours=5))
    p2 = prof(3, stack=2, periods=((0, 20.0),), valid_from=S + timedelta(hours=2), valid_to=S + timedelta(hours=3))
    assert run([(0, p0), (0, p1), (0, p2)], duration=6 * H) == [
        (0, 6.0), (H, 10.0), (2 * H, 20.0), (3 * H, 10.0), (5 * H, 6.0)]


def test_stacking_without_duration_never_falls_back() -> None:
    """3.13.2 note: a top level without duration hides the lower levels forever."""
    low = prof(1, stack=0, periods=((0, 6.0),))
    high = prof(2, stack=1, periods=((0, 20.0), (H, 12.0)))
    assert run([(0, low), (0, high)], duration=7 * DAY) == [(0, 20.0), (H, 12.0)]


def test_stack_levels_are_per_purpose_and_purposes_combine_with_min() -> None:
    tx_default = prof(1, stack=0, periods=((0, 16.0), (2 * H, 25.0)))
    cp = cmax(2, ((0, 20.0),), stack=5)
    assert run([(0, tx_default), (0, cp)], duration=4 * H) == [(0, 16.0), (2 * H, 20.0)]


# ------------------------------------------------------------------------------------------------ kinds


def test_absolute_starting_after_the_window_start_gives_the_local_max_before_it() -> None:
    p = prof(1, start=S + timedelta(minutes=30), periods=((0, 10.0), (600, 12.0)), duration=H)
    assert run([(0, p)], duration=3 * H) == [(0, LOCAL_A), (1800, 10.0), (2400, 12.0), (5400, LOCAL_A)]


def test_absolute_started_in_the_past_is_entered_mid_period() -> None:
    p = prof(1, start=S - timedelta(minutes=45), periods=((0, 10.0), (1800, 12.0), (3600, 14.0)))
    assert run([(0, p)], duration=H) == [(0, 12.0), (900, 14.0)]


def test_relative_without_transaction_counts_from_the_window_start() -> None:
    p = prof(1, kind="Relative", periods=((0, 10.0), (600, 20.0)), duration=1200)
    assert run([(0, p)], duration=H) == [(0, 10.0), (600, 20.0), (1200, LOCAL_A)]


def test_relative_with_transaction_counts_from_the_transaction_start() -> None:
    p = prof(1, kind="Relative", periods=((0, 10.0), (900, 20.0)), duration=1800)
    txs = {1: (S - timedelta(minutes=10), 42)}
    assert run([(0, p)], duration=H, transactions=txs) == [(0, 10.0), (300, 20.0), (1200, LOCAL_A)]
    # A transaction on another connector does not move connector 1's anchor.
    assert run([(0, p)], duration=H, transactions={2: txs[1]}, number_of_connectors=2) == [
        (0, 10.0), (900, 20.0), (1800, LOCAL_A)]


def test_relative_txdefault_on_connector_0_uses_each_connectors_own_transaction() -> None:
    p = prof(1, kind="Relative", periods=((0, 10.0), (600, 20.0)))
    txs = {1: (S - timedelta(seconds=500), 1), 2: (S - timedelta(seconds=100), 2)}
    assert run([(0, p)], connector_id=1, transactions=txs, number_of_connectors=2) == [(0, 10.0), (100, 20.0)]
    assert run([(0, p)], connector_id=2, transactions=txs, number_of_connectors=2) == [(0, 10.0), (500, 20.0)]
    # Connector 0 sums both: 20 until 100 s, 30 until 500 s, then 40.
    assert run([(0, p)], connector_id=0, transactions=txs, number_of_connectors=2) == [
        (0, 20.0), (100, 30.0), (500, 40.0)]


def test_schedule_duration_longer_than_the_periods_keeps_the_last_period() -> None:
    p = prof(1, periods=((0, 10.0), (600, 12.0)), duration=2 * H)
    assert run([(0, p)], duration=3 * H) == [(0, 10.0), (600, 12.0), (2 * H, LOCAL_A)]


def test_periods_beyond_the_schedule_duration_are_not_executed() -> None:
    p = prof(1, periods=((0, 10.0), (600, 12.0), (1200, 14.0)), duration=900)
    assert run([(0, p)], duration=H) == [(0, 10.0), (600, 12.0), (900, LOCAL_A)]


def test_min_charging_rate_is_ignored() -> None:
    p = prof(1, periods=((0, 10.0),), min_rate=20.0)
    assert run([(0, p)]) == [(0, 10.0)]


# ------------------------------------------------------------------------------------------------ recurrence


def test_daily_recurrence_repeats_every_utc_day() -> None:
    p = prof(1, kind="Recurring", recurrency="Daily", start=datetime(2024, 1, 1, 22, 0, tzinfo=UTC),
             periods=((0, 10.0), (4 * H, 20.0)))  # 22:00-02:00 -> 10 A, then 20 A until the next 22:00
    start = datetime(2024, 5, 1, 21, 0, tzinfo=UTC)
    assert run([(0, p)], start=start, duration=2 * DAY) == [
        (0, 20.0), (H, 10.0), (5 * H, 20.0), (DAY + H, 10.0), (DAY + 5 * H, 20.0)]


def test_daily_recurrence_with_a_duration_shorter_than_a_day_falls_back() -> None:
    """Errata 3.43: after the duration, a lower stack level, else as if no profile is installed."""
    night = prof(1, stack=2, kind="Recurring", recurrency="Daily", start=datetime(2024, 1, 1, 22, 0, tzinfo=UTC),
                 periods=((0, 16.0),), duration=8 * H)
    day = prof(2, stack=0, periods=((0, 6.0),), start=datetime(2024, 1, 1, tzinfo=UTC))
    start = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)
    assert run([(0, night), (0, day)], start=start) == [(0, 16.0), (6 * H, 6.0), (22 * H, 16.0)]
    assert run([(0, night)], start=start) == [(0, 16.0), (6 * H, LOCAL_A), (22 * H, 16.0)]
    assert run([(0, night)], start=start, unit="W", duration=7 * H) == [(0, 16.0 * 690), (6 * H, LOCAL_W3)]


def test_recurrence_cuts_periods_and_duration_longer_than_the_recurrence_period() -> None:
    """Errata 3.44: periods beyond the recurrence period are not executed; the next occurrence starts over."""
    p = prof(1, kind="Recurring", recurrency="Daily", start=datetime(2024, 1, 1, tzinfo=UTC),
             periods=((0, 10.0), (20 * H, 12.0), (30 * H, 6.0)), duration=2 * DAY)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    assert run([(0, p)], start=start, duration=2 * DAY) == [
        (0, 10.0), (20 * H, 12.0), (DAY, 10.0), (DAY + 20 * H, 12.0)]


def test_recurring_before_its_start_schedule_does_not_apply() -> None:
    p = prof(1, kind="Recurring", recurrency="Daily", start=S + timedelta(hours=2), periods=((0, 10.0),))
    assert run([(0, p)], duration=DAY + 3 * H) == [(0, LOCAL_A), (2 * H, 10.0)]


def test_weekly_recurrence_across_a_week_boundary() -> None:
    # From Monday 00:00 UTC: 10 A on weekdays, 20 A from Saturday 00:00.
    p = prof(1, kind="Recurring", recurrency="Weekly", start=datetime(2024, 1, 1, tzinfo=UTC),  # a Monday
             periods=((0, 10.0), (5 * DAY, 20.0)))
    sunday_evening = datetime(2024, 5, 5, 20, 0, tzinfo=UTC)
    assert run([(0, p)], start=sunday_evening, duration=DAY) == [(0, 20.0), (4 * H, 10.0)]
    # Over a whole week starting Friday noon: Saturday 00:00 (+12 h), Monday 00:00 (+60 h), next Saturday.
    friday_noon = datetime(2024, 5, 3, 12, 0, tzinfo=UTC)
    assert run([(0, p)], start=friday_noon, duration=WEEK + DAY) == [
        (0, 10.0), (12 * H, 20.0), (60 * H, 10.0), (WEEK + 12 * H, 20.0)]


def test_weekly_recurrence_with_short_duration_ends_each_week() -> None:
    p = prof(1, kind="Recurring", recurrency="Weekly", start=MONDAY, periods=((0, 8.0),), duration=DAY)
    sunday = datetime(2024, 5, 5, tzinfo=UTC)
    assert run([(0, p)], start=sunday, duration=3 * DAY) == [(0, LOCAL_A), (DAY, 8.0), (2 * DAY, LOCAL_A)]


@pytest.mark.parametrize(
    ("schedule_start", "query_start", "expected_offset", "local_offset", "local_hour"),
    [
        # Spring: the profile was set at 08:00 CET (+01:00) = 07:00 UTC. After the switch to CEST (31 March 2024),
        # the recurrence, counted in UTC, still starts at 07:00 UTC, which is 09:00 local time.
        ("2024-03-30T08:00:00+01:00", "2024-04-01T00:00:00+02:00", 9 * H, 2, 9),
        # Autumn: 08:00 CEST (+02:00) = 06:00 UTC; after 27 October 2024 it is 07:00 local time (+01:00).
        ("2024-10-26T08:00:00+02:00", "2024-10-28T00:00:00+01:00", 7 * H, 1, 7),
    ],
)
def test_daily_recurrence_is_counted_in_utc_across_a_dst_change(
        schedule_start: str, query_start: str, expected_offset: int, local_offset: int, local_hour: int) -> None:
    p = prof(1, kind="Recurring", recurrency="Daily", start=schedule_start, periods=((0, 10.0), (2 * H, 20.0)))
    start = datetime.fromisoformat(query_start)
    out = composite_schedule([(0, p)], connector_id=1, start=start, duration=DAY, unit="A")
    assert out["startSchedule"] == iso(start)
    periods = [(q["startPeriod"], q["limit"]) for q in out["chargingSchedulePeriod"]]
    assert periods == [(0, 20.0), (expected_offset, 10.0), (expected_offset + 2 * H, 20.0)]
    local = (start + timedelta(seconds=expected_offset)).astimezone(timezone(timedelta(hours=local_offset)))
    assert local.hour == local_hour  # the wall-clock time moved by an hour compared with the 08:00 it was set at


def test_recurrence_over_the_dst_night_itself() -> None:
    # Window 30 March 20:00 UTC .. 31 March 20:00 UTC includes the switch at 01:00 UTC; nothing moves in UTC.
    p = prof(1, kind="Recurring", recurrency="Daily", start="2024-03-01T00:00:00+01:00", periods=((0, 10.0),),
             duration=H)
    start = datetime(2024, 3, 30, 20, 0, tzinfo=UTC)
    assert run([(0, p)], start=start) == [(0, LOCAL_A), (3 * H, 10.0), (4 * H, LOCAL_A)]


# ------------------------------------------------------------------------------------------------ TxProfile, TxDefault


def test_txprofile_masks_txdefault_for_the_whole_transaction() -> None:
    default = prof(1, stack=5, periods=((0, 10.0),))
    tx = txp(2, ((0, 16.0),), duration=1800)  # relative to the transaction start, 10 min before S
    # While the TxProfile runs: 16 A; after its schedule ended: the local maximum, NOT the TxDefault's 10 A.
    assert run([(0, default), (1, tx)], transactions=TX1, duration=H) == [(0, 16.0), (1200, LOCAL_A)]
    # ChargePointMax still applies on top.
    assert run([(0, default), (1, tx), (0, cmax(3, ((0, 12.0),)))], transactions=TX1, duration=H) == [(0, 12.0)]


def test_txprofile_applies_only_while_a_transaction_runs() -> None:
    default = prof(1, periods=((0, 10.0),))
    tx = txp(2, ((0, 16.0),))
    assert run([(0, default), (1, tx)]) == [(0, 10.0)]
    assert run([(0, default), (1, tx)], transactions={2: TX1[1]}, number_of_connectors=2) == [(0, 10.0)]


def test_txprofile_with_wrong_transaction_id_is_ignored() -> None:
    default = prof(1, periods=((0, 10.0),))
    assert run([(0, default), (1, txp(2, tx_id=8))], transactions=TX1) == [(0, 10.0)]
    assert run([(0, default), (1, txp(2, tx_id=7))], transactions=TX1) == [(0, 16.0)]
    # Without transactionId it belongs to whatever transaction runs on the connector.
    assert run([(0, default), (1, txp(2))], transactions=TX1) == [(0, 16.0)]
    # A transaction whose id is not known yet does not match a profile that names one.
    assert run([(0, default), (1, txp(2, tx_id=7))], transactions={1: (S, None)}) == [(0, 10.0)]


def test_txprofile_stack_levels_and_fall_through_to_local_max() -> None:
    t0 = txp(1, ((0, 10.0),), stack=0, duration=1200)
    t1 = txp(2, ((0, 20.0),), stack=1, duration=900)
    assert run([(1, t0), (1, t1)], transactions={1: (S, 7)}, duration=H) == [
        (0, 20.0), (900, 10.0), (1200, LOCAL_A)]


def test_txprofile_on_another_connector_or_on_connector_0_is_ignored() -> None:
    assert run([(2, txp(1))], transactions=TX1, number_of_connectors=2) == [(0, LOCAL_A)]
    assert run([(0, txp(1))], transactions=TX1) == [(0, LOCAL_A)]


def test_txprofile_validto_ends_the_mask() -> None:
    """Decision: at validTo the TxProfile would be purged, so the TxDefault shows again."""
    default = prof(1, periods=((0, 10.0),))
    tx = txp(2, ((0, 16.0),), valid_to=S + timedelta(minutes=30))
    assert run([(0, default), (1, tx)], transactions=TX1, duration=H) == [(0, 16.0), (1800, 10.0)]


def test_txprofile_valid_from_in_the_future_still_masks() -> None:
    """Decision: the transaction has a TxProfile, so TxDefault is ignored; until validFrom: the local maximum."""
    default = prof(1, periods=((0, 10.0),))
    tx = txp(2, ((0, 16.0),), valid_from=S + timedelta(minutes=30))
    assert run([(0, default), (1, tx)], transactions=TX1, duration=H) == [(0, LOCAL_A), (1800, 16.0)]


def test_txdefault_on_connector_n_beats_connector_0_at_the_same_stack_level() -> None:
    general = prof(1, stack=1, periods=((0, 10.0),))
    specific = prof(2, stack=1, periods=((0, 20.0),), valid_to=S + timedelta(hours=2))
    profiles = [(0, general), (1, specific)]
    # Connector 1: its own profile while valid, then connector 0's shows through.
    assert run(profiles, number_of_connectors=2) == [(0, 20.0), (2 * H, 10.0)]
    assert run(list(reversed(profiles)), number_of_connectors=2) == [(0, 20.0), (2 * H, 10.0)]
    # Connector 2 only sees connector 0's.
    assert run(profiles, connector_id=2, number_of_connectors=2) == [(0, 10.0)]


def test_txdefault_on_connector_0_at_a_higher_level_beats_connector_n() -> None:
    general = prof(1, stack=2, periods=((0, 8.0),))
    specific = prof(2, stack=1, periods=((0, 20.0),))
    assert run([(0, general), (1, specific)]) == [(0, 8.0)]


def test_txdefault_applies_without_transaction_and_during_one_without_txprofile() -> None:
    default = prof(1, periods=((0, 10.0),))
    assert run([(0, default)]) == [(0, 10.0)]
    assert run([(0, default)], transactions=TX1) == [(0, 10.0)]


def test_charge_point_max_not_on_connector_0_is_ignored() -> None:
    assert run([(1, cmax(1, ((0, 6.0),)))]) == [(0, LOCAL_A)]


# ------------------------------------------------------------------------------------------------ units and phases


def test_unit_mixing_the_lower_after_conversion_wins() -> None:
    amps = prof(1, periods=((0, 16.0),))  # 16 A x 3 x 230 V = 11040 W
    watts = cmax(2, ((0, 7000.0),), unit="W")  # 7000 W / 690 V = 10.14 A
    assert run([(0, amps), (0, watts)]) == [(0, 10.1)]
    assert run([(0, amps), (0, watts)], unit="W") == [(0, 7000.0)]
    watts_high = cmax(2, ((0, 11500.0),), unit="W")  # 16.67 A: the A profile is lower
    assert run([(0, amps), (0, watts_high)]) == [(0, 16.0)]
    assert run([(0, amps), (0, watts_high)], unit="W") == [(0, 11040.0)]


def test_unit_mixing_switches_over_time() -> None:
    amps = prof(1, periods=((0, 10.0), (H, 20.0)))
    watts = cmax(2, ((0, 9200.0),), unit="W")  # 13.33 A
    assert run([(0, amps), (0, watts)], duration=2 * H) == [(0, 10.0), (H, 13.3)]
    assert run([(0, amps), (0, watts)], duration=2 * H, unit="W") == [(0, 6900.0), (H, 9200.0)]


def test_one_phase_period_converts_with_one_phase() -> None:
    p = prof(1, unit="W", periods=((0, 3680.0, 1),))  # 3680 W / 230 V = 16 A on one phase
    assert run([(0, p)]) == [(0, 16.0, 1)]
    assert run([(0, p)], unit="W") == [(0, 3680.0, 1)]
    a = prof(1, periods=((0, 16.0, 1),))
    assert run([(0, a)], unit="W") == [(0, 3680.0, 1)]
    a3 = prof(1, periods=((0, 16.0, 3),))
    assert run([(0, a3)], unit="W") == [(0, 11040.0, 3)]


def test_conversion_without_number_phases_assumes_default_phases() -> None:
    p = prof(1, unit="W", periods=((0, 6900.0),))
    assert run([(0, p)]) == [(0, 10.0)]
    assert run([(0, p)], default_phases=1) == [(0, 30.0)]
    assert run([(0, p)], voltage=115.0) == [(0, 20.0)]


def test_phases_of_a_min_is_the_smallest() -> None:
    tx_default = prof(1, periods=((0, 16.0, 3),))
    cp = cmax(2, ((0, 20.0, 1),))
    assert run([(0, tx_default), (0, cp)]) == [(0, 16.0, 1)]


def test_periods_with_equal_limit_but_different_phases_do_not_merge() -> None:
    p = prof(1, periods=((0, 16.0, 3), (600, 16.0, 1)))
    assert run([(0, p)], duration=1200) == [(0, 16.0, 3), (600, 16.0, 1)]


def test_local_maximum_caps_profiles_in_a_and_in_w_with_the_periods_phases() -> None:
    assert run([(0, prof(1, periods=((0, 40.0),)))]) == [(0, LOCAL_A)]
    # 11000 W on one phase would be 47.8 A: capped at 32 A x 230 V x 1 = 7360 W.
    p = prof(1, unit="W", periods=((0, 11000.0, 1),))
    assert run([(0, p)], unit="W") == [(0, 7360.0, 1)]
    assert run([(0, p)]) == [(0, 32.0, 1)]


def test_limits_are_rounded_down_to_one_decimal() -> None:
    p = prof(1, unit="W", periods=((0, 7359.0, 1), (600, 7360.0, 1)))  # 31.996 A -> 31.9; 32.0 A stays 32.0
    assert run([(0, p)], duration=1200) == [(0, 31.9, 1), (600, 32.0, 1)]
    assert run([(0, prof(1, periods=((0, 12.34),)))]) == [(0, 12.3)]


# ------------------------------------------------------------------------------------------------ connector 0


def test_connector_0_sums_connectors_with_local_max_where_no_limit() -> None:
    p1 = prof(1, periods=((0, 10.0),))
    assert run([(1, p1)], connector_id=0, number_of_connectors=2) == [(0, 42.0)]
    assert run([], connector_id=0, number_of_connectors=2) == [(0, 64.0)]
    assert run([], connector_id=0, number_of_connectors=3, unit="W") == [(0, 3 * LOCAL_W3)]


def test_connector_0_sum_is_capped_by_charge_point_max_not_per_connector() -> None:
    profiles = [(1, prof(1, periods=((0, 10.0),))), (2, prof(2, periods=((0, 10.0),))),
                (0, cmax(3, ((0, 60.0), (H, 8.0))))]
    assert run(profiles, connector_id=0, number_of_connectors=2, duration=2 * H) == [(0, 20.0), (H, 8.0)]
    assert run(profiles, connector_id=1, number_of_connectors=2, duration=2 * H) == [(0, 10.0), (H, 8.0)]


def test_connector_0_sum_with_schedules_and_transactions() -> None:
    txs = {1: (S, 1), 2: (S, 2)}
    profiles = [(1, txp(1, ((0, 6.0), (H, 16.0)), tx_id=1)), (0, prof(2, periods=((0, 10.0),))),
                (0, cmax(3, ((0, 30.0),)))]
    # Connector 1: TxProfile 6 then 16; connector 2: TxDefault 10. Sum 16 then 26; cap 30 does not bind.
    assert run(profiles, connector_id=0, number_of_connectors=2, transactions=txs, duration=2 * H) == [
        (0, 16.0), (H, 26.0)]


def test_connector_0_phases_of_a_sum_is_the_largest_then_min_with_charge_point_max() -> None:
    p1 = prof(1, periods=((0, 10.0, 1),))
    p2 = prof(2, periods=((0, 10.0, 3),))
    assert run([(1, p1), (2, p2)], connector_id=0, number_of_connectors=2) == [(0, 20.0, 3)]
    assert run([(1, p1), (2, p2), (0, cmax(3, ((0, 15.0, 1),)))], connector_id=0, number_of_connectors=2) == [
        (0, 15.0, 1)]


def test_connector_0_in_w_converts_each_connector_with_its_phases() -> None:
    p1 = prof(1, periods=((0, 16.0, 1),))  # 3680 W
    p2 = prof(2, periods=((0, 16.0, 3),))  # 11040 W
    assert run([(1, p1), (2, p2)], connector_id=0, number_of_connectors=2, unit="W") == [(0, 14720.0, 3)]
    cp = cmax(3, ((0, 11000.0),), unit="W")
    assert run([(1, p1), (2, p2), (0, cp)], connector_id=0, number_of_connectors=2, unit="W") == [(0, 11000.0, 3)]


# ------------------------------------------------------------------------------------------------ output shape


def test_merging_of_adjacent_equal_periods_from_different_sources() -> None:
    a = prof(1, stack=1, periods=((0, 16.0),), duration=H)
    b = prof(2, stack=0, periods=((0, 16.0), (2 * H, 10.0)))
    assert run([(0, a), (0, b)], duration=3 * H) == [(0, 16.0), (2 * H, 10.0)]
    # A profile with repeated limits is merged too.
    c = prof(3, periods=((0, 10.0), (600, 10.0), (1200, 12.0), (1800, 12.0)))
    assert run([(0, c)], duration=H) == [(0, 10.0), (1200, 12.0)]


def test_duration_caps_the_schedule() -> None:
    p = prof(1, periods=((0, 10.0), (600, 12.0), (1200, 14.0)))
    out = composite_schedule([(0, p)], connector_id=1, start=S, duration=900, unit="A")
    assert out["duration"] == 900
    assert [(q["startPeriod"], q["limit"]) for q in out["chargingSchedulePeriod"]] == [(0, 10.0), (600, 12.0)]
    out = composite_schedule([(0, p)], connector_id=1, start=S, duration=600, unit="A")
    assert [(q["startPeriod"], q["limit"]) for q in out["chargingSchedulePeriod"]] == [(0, 10.0)]


def test_duration_zero_reports_the_value_at_start() -> None:
    p = prof(1, periods=((0, 10.0),))
    out = composite_schedule([(0, p)], connector_id=1, start=S, duration=0, unit="A")
    assert out["duration"] == 0
    assert out["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10.0}]


def test_output_is_an_ocpp_charging_schedule() -> None:
    out = composite_schedule([(0, SPEC_DAILY)], connector_id=1, start=S, duration=DAY, unit="A")
    assert set(out) == {"startSchedule", "duration", "chargingRateUnit", "chargingSchedulePeriod"}
    for q in out["chargingSchedulePeriod"]:
        assert set(q) <= {"startPeriod", "limit", "numberPhases"}
        assert isinstance(q["startPeriod"], int)
        assert isinstance(q["limit"], float)
    assert "numberPhases" not in composite_schedule([], connector_id=1, start=S, duration=60,
                                                    unit="A")["chargingSchedulePeriod"][0]


def test_start_with_offset_is_reported_in_utc_with_z() -> None:
    start = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    out = composite_schedule([], connector_id=1, start=start, duration=60, unit="A")
    assert out["startSchedule"] == "2024-05-01T12:00:00Z"


def test_profile_dates_accept_offsets_and_fractions() -> None:
    p = prof(1, start="2024-05-01T14:30:00.000+02:00", periods=((0, 10.0),),
             valid_to=None)
    p["validTo"] = "2024-05-01T13:00:00.000000+00:00"
    assert run([(0, p)], duration=2 * H) == [(0, LOCAL_A), (1800, 10.0), (H, LOCAL_A)]


def test_sub_second_boundaries_take_effect_at_the_next_whole_second() -> None:
    start = S + timedelta(milliseconds=400)
    p = prof(1, start=S + timedelta(seconds=10), periods=((0, 10.0),))  # 9.6 s after start -> reported at 10
    out = composite_schedule([(0, p)], connector_id=1, start=start, duration=60, unit="A")
    assert out["startSchedule"] == "2024-05-01T12:00:00.400Z"
    assert [(q["startPeriod"], q["limit"]) for q in out["chargingSchedulePeriod"]] == [(0, LOCAL_A), (10, 10.0)]


def test_naive_datetimes_are_utc() -> None:
    p = prof(1, start="2024-05-01T12:30:00", periods=((0, 10.0),))
    assert run([(0, p)], start=S.replace(tzinfo=None), duration=H) == [(0, LOCAL_A), (1800, 10.0)]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        composite_schedule([], connector_id=1, start=S, duration=60, unit="kW")
    with pytest.raises(ValueError):
        composite_schedule([], connector_id=1, start=S, duration=-1, unit="A")


def test_malformed_profiles_are_tolerated() -> None:
    no_kind = prof(1, kind="Recurring", periods=((0, 6.0),))
    del no_kind["recurrencyKind"]
    bad_purpose = prof(2, purpose="Whatever", periods=((0, 6.0),), stack=1)
    absolute_without_start = prof(3, stack=2, periods=((0, 8.0), (600, 9.0)), start=None, duration=1200)
    negative = prof(4, stack=3, periods=((0, -5.0),), start=S + timedelta(hours=1), duration=60)
    assert run([(0, no_kind), (0, bad_purpose), (0, absolute_without_start), (0, negative)], duration=2 * H) == [
        (0, 8.0), (600, 9.0), (1200, LOCAL_A), (H, 0.0), (H + 60, LOCAL_A)]


def test_transaction_start_given_as_iso_string() -> None:
    p = prof(1, kind="Relative", periods=((0, 10.0), (900, 20.0)))
    assert run([(0, p)], transactions={1: (iso(S - timedelta(minutes=5)), 1)}, duration=H) == [(0, 10.0), (600, 20.0)]


# ------------------------------------------------------------------------------------------------ replacement


def test_replacement_same_id_on_any_connector() -> None:
    first = prof(9, stack=0, periods=((0, 6.0),))
    second = prof(9, stack=3, periods=((0, 12.0),))
    assert run([(0, first), (2, second)], number_of_connectors=2) == [(0, LOCAL_A)]  # the one on 0 is gone
    assert run([(0, first), (2, second)], connector_id=2, number_of_connectors=2) == [(0, 12.0)]


def test_replacement_same_connector_stack_and_purpose() -> None:
    first = prof(1, stack=1, periods=((0, 6.0),))
    second = prof(2, stack=1, periods=((0, 12.0),))
    assert run([(1, first), (1, second)]) == [(0, 12.0)]
    assert run([(1, second), (1, first)]) == [(0, 6.0)]
    # Different connector, purpose or level: both stay.
    assert run([(1, first), (0, second)]) == [(0, 6.0)]  # connector 1 beats connector 0 at the same level
    assert run([(1, first), (1, cmax(2, ((0, 12.0),), stack=1))]) == [(0, 6.0)]
    assert run([(1, first), (1, prof(2, stack=0, periods=((0, 12.0),)))]) == [(0, 6.0)]


def test_replacement_chain_keeps_the_latest() -> None:
    a = prof(1, stack=0, periods=((0, 6.0),))
    b = prof(2, stack=0, periods=((0, 7.0),))  # replaces a (same key)
    c = prof(2, stack=1, periods=((0, 8.0),))  # replaces b (same id)
    d = prof(3, stack=1, periods=((0, 9.0),), valid_to=S + timedelta(hours=1))  # replaces c (same key)
    assert run([(0, a), (0, b), (0, c), (0, d)], duration=2 * H) == [(0, 9.0), (H, LOCAL_A)]


def test_replacement_of_a_txprofile_given_at_remote_start() -> None:
    """5.16.2: a SetChargingProfile for the transaction at the same stack level replaces the RemoteStart one."""
    remote = txp(1, ((0, 6.0),), stack=2)
    later = txp(2, ((0, 13.0),), stack=2, tx_id=7)
    assert run([(1, remote), (1, later)], transactions=TX1) == [(0, 13.0)]


# ------------------------------------------------------------------------------------------------ properties


def _replace(profiles: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """Install-order replacement, the obvious O(n^2) way."""
    kept: list[tuple[int, dict[str, Any]]] = []
    for cid, p in profiles:
        kept = [(c, q) for c, q in kept if q["chargingProfileId"] != p["chargingProfileId"]
                and (c, q["stackLevel"], q["chargingProfilePurpose"]) != (cid, p["stackLevel"],
                                                                          p["chargingProfilePurpose"])]
        kept.append((cid, p))
    return kept


def _oracle(profiles: list[tuple[int, dict[str, Any]]], *, connector_id: int, duration: int, unit: str,
            transactions: dict[int, tuple[datetime, int | None]], number_of_connectors: int) -> list[Period]:
    """A second-by-second evaluation of the rules, written from the issue text (whole-second inputs only)."""
    kept = _replace(profiles)

    def off(v: str) -> int:
        return int((datetime.fromisoformat(v) - S).total_seconds())

    def value(p: dict[str, Any], t: int, anchor: int) -> tuple[float, int | None] | None:
        if "validFrom" in p and t < off(p["validFrom"]):
            return None
        if "validTo" in p and t >= off(p["validTo"]):
            return None
        sc = p["chargingSchedule"]
        origin = anchor if p["chargingProfileKind"] == "Relative" else off(sc["startSchedule"])
        dur = sc.get("duration", math.inf)
        if p["chargingProfileKind"] == "Recurring":
            per = DAY if p["recurrencyKind"] == "Daily" else WEEK
            if t < origin:
                return None
            origin += (t - origin) // per * per
            dur = min(dur, per)
        if not origin <= t < origin + dur:
            return None
        best = None
        for q in sc["chargingSchedulePeriod"]:
            if q["startPeriod"] <= t - origin:
                best = q
        if best is None:
            return None
        lim, ph = float(best["limit"]), best.get("numberPhases")
        if sc["chargingRateUnit"] != unit:
            lim = lim * 230 * (ph or 3) if unit == "W" else lim / (230 * (ph or 3))
        return lim, ph

    def first(cands: list[tuple[dict[str, Any], int]], t: int) -> tuple[float, int | None] | None:
        for p, anchor in cands:
            v = value(p, t, anchor)
            if v is not None:
                return v
        return None

    def local(ph: int | None) -> float:
        return 32.0 if unit == "A" else 32.0 * 230 * (ph or 3)

    def minv(a: tuple[float, int | None] | None, b: tuple[float, int | None] | None) -> tuple[float, int | None] | None:
        if a is None or b is None:
            return a or b
        phs = [x for x in (a[1], b[1]) if x is not None]
        return min(a[0], b[0]), (min(phs) if phs else None)

    cps = sorted((p for c, p in kept if c == 0 and p["chargingProfilePurpose"] == "ChargePointMaxProfile"),
                 key=lambda p: -p["stackLevel"])

    def conn(n: int, t: int) -> tuple[float, int | None] | None:
        tx = transactions.get(n)
        anchor = int((tx[0] - S).total_seconds()) if tx else 0
        txps = [p for c, p in kept if c == n and p["chargingProfilePurpose"] == "TxProfile" and tx
                and p.get("transactionId") in (None, tx[1])]
        cands = [(p, anchor) for p in sorted(txps, key=lambda p: -p["stackLevel"])]
        mask = max((off(p["validTo"]) if "validTo" in p else math.inf for p in txps), default=-math.inf)
        if t >= mask:
            defaults = [(c, p) for c, p in kept if c in (0, n) and p["chargingProfilePurpose"] == "TxDefaultProfile"]
            defaults.sort(key=lambda cp: (-cp[1]["stackLevel"], cp[0] == 0))
            cands += [(p, anchor) for _, p in defaults]
        return first(cands, t)

    out: list[Period] = []
    for t in range(duration):
        cp = first([(p, 0) for p in cps], t)
        if connector_id == 0:
            total, phs = 0.0, []
            for n in range(1, number_of_connectors + 1):
                v = conn(n, t)
                ph = v[1] if v else None
                lim = min(v[0], local(ph)) if v else local(None)
                total += lim
                if ph is not None:
                    phs.append(ph)
            res = minv((total, max(phs) if phs else None), cp)
            assert res is not None
        else:
            m = minv(conn(connector_id, t), cp)
            res = (min(m[0], local(m[1])), m[1]) if m else (local(None), None)
        lim = math.floor(res[0] * 10 + 1e-6) / 10
        entry: Period = (t, lim, res[1]) if res[1] is not None else (t, lim)
        if not out or out[-1][1:] != entry[1:]:
            out.append(entry)
    return out


_PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxDefaultProfile", "TxProfile")


@st.composite
def _profile_sets(draw: st.DrawFn) -> tuple[list[tuple[int, dict[str, Any]]], dict[int, tuple[datetime, int | None]]]:
    n_conn = 2
    txs: dict[int, tuple[datetime, int | None]] = {}
    for c in range(1, n_conn + 1):
        if draw(st.booleans()):
            txs[c] = (S - timedelta(seconds=draw(st.integers(0, 300))), draw(st.sampled_from([1, 2, None])))
    out: list[tuple[int, dict[str, Any]]] = []
    for _ in range(draw(st.integers(1, 7))):
        purpose = draw(st.sampled_from(_PURPOSES))
        cid = 0 if purpose == "ChargePointMaxProfile" else draw(st.integers(0 if purpose != "TxProfile" else 1,
                                                                           n_conn))
        kind = draw(st.sampled_from(["Absolute", "Relative", "Recurring"] if purpose != "ChargePointMaxProfile"
                                    else ["Absolute", "Recurring"]))
        starts = sorted(draw(st.sets(st.integers(1, 250), max_size=4)))
        unit = draw(st.sampled_from(["A", "W"]))
        periods: list[Period] = []
        for sp in [0, *starts]:
            lim = draw(st.integers(0, 300)) / 10 if unit == "A" else float(draw(st.integers(0, 30)) * 500)
            ph = draw(st.sampled_from([None, 1, 3]))
            periods.append((sp, lim, ph) if ph else (sp, lim))
        recurrency = draw(st.sampled_from(["Daily", "Weekly"]))
        per = DAY if recurrency == "Daily" else WEEK
        shift = draw(st.integers(-300, 200)) - (draw(st.integers(0, 2)) * per if kind == "Recurring" else 0)
        vf = draw(st.sampled_from([None, None]) | st.integers(-100, 400))
        vt = draw(st.sampled_from([None, None]) | st.integers(0, 600))
        out.append((cid, prof(
            draw(st.integers(1, 8)), purpose=purpose, stack=draw(st.integers(0, 3)), kind=kind, periods=periods,
            unit=unit, start=S + timedelta(seconds=shift), duration=draw(st.none() | st.integers(1, 400)),
            valid_from=None if vf is None else S + timedelta(seconds=vf),
            valid_to=None if vt is None else S + timedelta(seconds=vt), recurrency=recurrency,
            tx_id=draw(st.sampled_from([None, 1, 2])) if purpose == "TxProfile" else None)))
    return out, txs


_PROPS = settings(derandomize=True, max_examples=400, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])


@_PROPS
@given(data=_profile_sets(), connector=st.integers(0, 2), unit=st.sampled_from(["A", "W"]),
       duration=st.sampled_from([600, 541, 450, 300, 120, 7, 1]))
def test_property_matches_the_per_second_oracle_and_invariants(
        data: tuple[list[tuple[int, dict[str, Any]]], dict[int, tuple[datetime, int | None]]], connector: int,
        unit: str, duration: int) -> None:
    profiles, txs = data
    got = run(profiles, connector_id=connector, duration=duration, unit=unit, transactions=txs,
              number_of_connectors=2)
    # Invariants: covers [0, duration) from 0 without a hole, strictly increasing starts inside the window,
    # limits >= 0, one decimal, never above the local maximum (x2 for connector 0), neighbours differ.
    assert got[0][0] == 0
    assert all(a[0] < b[0] for a, b in pairwise(got))
    assert all(p[0] < duration for p in got)
    assert all(a[1:] != b[1:] for a, b in pairwise(got))
    for p in got:
        assert p[1] >= 0
        assert abs(p[1] * 10 - round(p[1] * 10)) < 1e-6
        phases = p[2] if len(p) > 2 and connector != 0 else 3  # connector 0: a 1-phase cap may end a 3-phase sum
        local = 32.0 if unit == "A" else 32.0 * 230 * phases
        assert p[1] <= (2 if connector == 0 else 1) * local + 1e-6
    assert got == _oracle(profiles, connector_id=connector, duration=duration, unit=unit, transactions=txs,
                          number_of_connectors=2)


@_PROPS
@given(data=_profile_sets(), unit=st.sampled_from(["A", "W"]))
def test_property_connector_limits_never_exceed_charge_point_max(
        data: tuple[list[tuple[int, dict[str, Any]]], dict[int, tuple[datetime, int | None]]], unit: str) -> None:
    """Connector 0 is capped by ChargePointMax; each connector too; and connector 0 >= each connector's value."""
    profiles, txs = data
    kw: dict[str, Any] = {"duration": 600, "unit": unit, "transactions": txs, "number_of_connectors": 2}
    cp_only = [(c, p) for c, p in _replace(profiles) if p["chargingProfilePurpose"] == "ChargePointMaxProfile"]
    total = _expand(run(profiles, connector_id=0, **kw), 600)
    cap = _expand(run(cp_only, connector_id=0, **{**kw, "number_of_connectors": 1, "default_limit_a": 1e9}), 600)
    for n in (1, 2):
        per = _expand(run(profiles, connector_id=n, **kw), 600)
        for t in range(600):
            if unit == "A":  # in W the phase counts of the operands may differ, so only compare in A
                assert per[t] <= total[t] + 1e-6
            assert per[t] <= cap[t] + 1e-6
    assert all(total[t] <= cap[t] + 1e-6 for t in range(600))


def _expand(periods: list[Period], duration: int) -> list[float]:
    out: list[float] = []
    for i, p in enumerate(periods):
        end = periods[i + 1][0] if i + 1 < len(periods) else duration
        out += [p[1]] * (end - p[0])
    return out
