"""The limiter (SmartCharging.connector_limits) right after a transaction start that falls inside a second.

Found by bench/bench_charging_profile_latency.py: the first SetChargingProfile of a transaction (a Relative TxProfile)
reached the pilot only at the next whole second. The composite's time grid rounds the fractional transaction start
(the Relative anchor) UP to the next whole second after its `start`; evaluated from `now` truncated, the TxProfile
covered nothing until then and, since it masks TxDefault, the connector ran at its local maximum. The service now
puts transaction starts on the grid rounded down, and connector_limits takes the value at `now` exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from evsed.smartcharging.profiles import Limits
from evsed.smartcharging.service import SmartCharging
from evsed.store.db import Store

TX_START = datetime(2026, 3, 1, 12, 0, 0, 300_000, tzinfo=UTC)  # 12:00:00.300
LIMITS = Limits(max_stack_level=10, allowed_units=("Current", "Power"), max_periods=96, max_installed=32,
                number_of_connectors=1)
PHASES = {1: 3}


def relative_tx_profile(limit: float) -> dict[str, Any]:
    return {"chargingProfileId": 7, "transactionId": 42, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "A",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}}


def service_with_profile() -> tuple[SmartCharging, dict[int, tuple[datetime, int | None]]]:
    sc = SmartCharging(Store(":memory:"), LIMITS, local_max_a={1: 32.0})
    txs: dict[int, tuple[datetime, int | None]] = {1: (TX_START, 42)}
    assert sc.set_profile(1, relative_tx_profile(10.0), txs) == "Accepted"
    return sc, txs


def test_from_the_next_whole_second_the_profile_limits() -> None:
    sc, txs = service_with_profile()
    assert sc.connector_limits(datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC), txs, PHASES).amps == {1: 10.0}


def test_a_relative_tx_profile_limits_at_once_inside_the_first_second() -> None:
    sc, txs = service_with_profile()
    now = TX_START + timedelta(milliseconds=20)  # the profile arrives 20 ms after the transaction started
    assert sc.connector_limits(now, txs, PHASES).amps == {1: 10.0}


def test_the_next_boundary_stays_on_the_whole_second_grid() -> None:
    sc, txs = service_with_profile()
    sc.set_profile(1, {**relative_tx_profile(10.0), "chargingSchedule": {"chargingRateUnit": "A",
                   "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}, {"startPeriod": 60, "limit": 8.0}]}},
                   txs)
    result = sc.connector_limits(TX_START + timedelta(milliseconds=20), txs, PHASES)
    assert result.amps == {1: 10.0}
    # The transaction start 12:00:00.300 goes on the grid at 12:00:00 (rounded down, so the profile covers the
    # transaction from its first instant): the 60 s period begins at 12:01:00, 0.3 s early rather than 0.7 s late.
    assert result.next_change == datetime(2026, 3, 1, 12, 1, 0, tzinfo=UTC)
    assert sc.connector_limits(result.next_change, txs, PHASES).amps == {1: 8.0}


def test_the_composite_in_the_first_second_is_what_the_pilot_gets() -> None:
    sc, txs = service_with_profile()
    now = TX_START + timedelta(milliseconds=20)
    schedule = sc.composite(1, now, 60, "A", txs)
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10.0}]
    assert sc.connector_limits(now, txs, PHASES).amps == {1: 10.0}
