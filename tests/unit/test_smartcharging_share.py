"""Sharing ChargePointMaxProfile among running transactions (evsed.smartcharging.service.share and the limiter)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from evsed.smartcharging.profiles import Limits
from evsed.smartcharging.service import SmartCharging, share
from evsed.store.db import Store

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LIMITS = Limits(max_stack_level=10, allowed_units=("Current", "Power"), max_periods=96, max_installed=32,
                number_of_connectors=3)


def test_equal_shares() -> None:
    assert share(32.0, {1: 32.0, 2: 32.0}) == {1: 16.0, 2: 16.0}


def test_what_one_does_not_need_goes_to_the_other() -> None:
    assert share(32.0, {1: 10.0, 2: 32.0}) == {1: 10.0, 2: 22.0}
    assert share(40.0, {1: 10.0, 2: 16.0, 3: 32.0}) == {1: 10.0, 2: 15.0, 3: 15.0}


def test_enough_for_everyone_changes_nothing() -> None:
    assert share(100.0, {1: 16.0, 2: 32.0}) == {1: 16.0, 2: 32.0}


def test_rounded_down_never_above_the_total() -> None:
    shares = share(20.0, {1: 32.0, 2: 32.0, 3: 32.0})
    assert shares == {1: 6.6, 2: 6.7, 3: 6.7}  # 6.66... rounded down, the remainder to the others
    assert sum(shares.values()) <= 20.0


def test_below_six_amps_each_the_first_connectors_are_served() -> None:
    # 10 A for two EVs: two shares of 5 A would pause both; one EV charges at 10 A instead.
    assert share(10.0, {1: 32.0, 2: 32.0}) == {1: 10.0, 2: 0.0}
    assert share(13.0, {2: 32.0, 3: 32.0, 1: 32.0}) == {1: 6.5, 2: 6.5, 3: 0.0}
    assert share(5.0, {1: 32.0, 2: 32.0}) == {1: 0.0, 2: 0.0}


@given(st.floats(0, 200), st.dictionaries(st.integers(1, 8), st.floats(6, 80), min_size=1, max_size=8))
def test_share_properties(total: float, wanted: dict[int, float]) -> None:
    shares = share(total, wanted)
    assert set(shares) == set(wanted)
    assert sum(shares.values()) <= total + 1e-6
    for cid, amps in shares.items():
        assert 0 <= amps <= wanted[cid] + 1e-9
        assert amps == 0 or amps >= 6.0 - 1e-9


def _profile(pid: int, purpose: str, limit: float, *, stack: int = 0, periods: Any = None) -> dict[str, Any]:
    return {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {"startSchedule": "2026-03-01T00:00:00Z", "chargingRateUnit": "A",
                                 "chargingSchedulePeriod": periods or [{"startPeriod": 0, "limit": limit}]}}


def _service() -> SmartCharging:
    return SmartCharging(Store(":memory:"), LIMITS, local_max_a={1: 32.0, 2: 32.0, 3: 32.0})


def test_charge_point_max_is_shared_by_running_transactions() -> None:
    sc = _service()
    assert sc.set_profile(0, _profile(1, "ChargePointMaxProfile", 40.0), {}) == "Accepted"
    one = {1: (T0, 1)}
    assert sc.connector_limits(T0, one, {1: 3, 2: 3, 3: 3}).amps == {1: None, 2: None, 3: None}
    two = {1: (T0, 1), 2: (T0, 2)}
    assert sc.connector_limits(T0, two, {1: 3, 2: 3, 3: 3}).amps == {1: 20.0, 2: 20.0, 3: None}


def test_sharing_respects_each_connectors_own_limit() -> None:
    sc = _service()
    sc.set_profile(0, _profile(1, "ChargePointMaxProfile", 40.0), {})
    sc.set_profile(1, _profile(2, "TxDefaultProfile", 10.0), {})
    two = {1: (T0, 1), 2: (T0, 2)}
    assert sc.connector_limits(T0, two, {1: 3, 2: 3, 3: 3}).amps == {1: 10.0, 2: 30.0, 3: None}


def test_a_change_of_the_charge_point_max_is_a_boundary_while_sharing() -> None:
    sc = _service()
    # 64 A until 13:00, then 40 A: each connector alone is capped at 32 A by its local maximum either way, so
    # only the shared view changes at 13:00.
    sc.set_profile(0, _profile(1, "ChargePointMaxProfile", 0, periods=[
        {"startPeriod": 0, "limit": 64.0}, {"startPeriod": 13 * 3600, "limit": 40.0}]), {})
    two = {1: (T0, 1), 2: (T0, 2)}
    now = T0 + timedelta(minutes=30, microseconds=250_000)
    result = sc.connector_limits(now, two, {1: 3, 2: 3, 3: 3})
    assert result.amps == {1: None, 2: None, 3: None}
    assert result.next_change == datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    after = sc.connector_limits(result.next_change, two, {1: 3, 2: 3, 3: 3})
    assert after.amps == {1: 20.0, 2: 20.0, 3: None}
