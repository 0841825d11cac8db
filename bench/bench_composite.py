"""Time per composite_schedule call: 20 profiles x 48 periods over 24 h (run: python bench/bench_composite.py).

The profile set is built so that the engine cannot take shortcuts: every profile has 48 half-hour periods whose
boundaries are staggered (no two profiles share a breakpoint), the higher stack levels are valid only for part of the
day so the lower ones show through, limits alternate between A and W and between 1 and 3 phases, and there are
Recurring (Daily, Weekly), Absolute and Relative profiles of all three purposes. Reported: median and p90 over
2,000 calls for connector 1 and for connector 0 with 2 connectors, in both units.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from evsed.smartcharging import composite_schedule

START = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
PERIODS = 48
STEP = 1800  # 48 x 30 min = 24 h


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _profile(pid: int, purpose: str, stack: int, kind: str, *, shift: int, unit: str, phases: int | None,
             valid_hours: tuple[float, float] | None = None, recurrency: str | None = None,
             transaction_id: int | None = None) -> dict[str, Any]:
    periods: list[dict[str, Any]] = []
    for i in range(PERIODS):
        base = 6.0 + (i * 7 + pid * 3) % 27 if unit == "A" else 1500.0 + ((i * 13 + pid * 5) % 40) * 500.0
        period: dict[str, Any] = {"startPeriod": i * STEP, "limit": base}
        if phases is not None:
            period["numberPhases"] = phases
        periods.append(period)
    schedule: dict[str, Any] = {"chargingRateUnit": unit, "chargingSchedulePeriod": periods}
    if kind != "Relative":
        schedule["startSchedule"] = _iso(START - timedelta(hours=3) + timedelta(seconds=shift))
    if kind != "Recurring":
        schedule["duration"] = PERIODS * STEP
    prof: dict[str, Any] = {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
    }
    if recurrency:
        prof["recurrencyKind"] = recurrency
    if transaction_id is not None:
        prof["transactionId"] = transaction_id
    if valid_hours is not None:
        prof["validFrom"] = _iso(START + timedelta(hours=valid_hours[0]))
        prof["validTo"] = _iso(START + timedelta(hours=valid_hours[1]))
    return prof


def build_profiles() -> list[tuple[int, dict[str, Any]]]:
    """20 profiles: 4 ChargePointMax, 12 TxDefault (connectors 0, 1, 2), 4 TxProfile (connectors 1 and 2)."""
    out: list[tuple[int, dict[str, Any]]] = []
    pid = 1
    kinds = ("Absolute", "Recurring", "Absolute", "Recurring")
    for s in range(4):  # ChargePointMaxProfile, stacked, higher ones valid for part of the day
        vh = None if s == 0 else (2.0 * s, 2.0 * s + 6)
        out.append((0, _profile(pid, "ChargePointMaxProfile", s, kinds[s], shift=pid * 97, unit="W" if s % 2 else "A",
                                phases=3, valid_hours=vh, recurrency="Daily" if kinds[s] == "Recurring" else None)))
        pid += 1
    for s in range(12):  # TxDefault on connector 0, 1 and 2 at mixed stack levels
        cid = (0, 1, 2)[s % 3]
        kind = ("Absolute", "Recurring", "Relative")[s % 3]
        vh = None if s < 3 else (1.5 * s - 3, 1.5 * s + 4)
        out.append((cid, _profile(pid, "TxDefaultProfile", s // 2, kind, shift=pid * 97,
                                  unit="A" if s % 2 else "W", phases=(1, 3, None)[s % 3], valid_hours=vh,
                                  recurrency=("Daily", "Weekly")[s % 2] if kind == "Recurring" else None)))
        pid += 1
    for s in range(4):  # TxProfile for the running transactions on connectors 1 and 2
        cid = 1 + s % 2
        vh = None if s < 2 else (3.0 * s, 3.0 * s + 5)
        out.append((cid, _profile(pid, "TxProfile", s, "Relative" if s % 2 else "Absolute", shift=pid * 97,
                                  unit="A", phases=3, valid_hours=vh, transaction_id=100 + cid)))
        pid += 1
    return out


def measure(calls: int, **kwargs: Any) -> tuple[float, float, int]:
    profiles = build_profiles()
    samples: list[float] = []
    result: dict[str, Any] = {}
    for _ in range(calls):
        t0 = time.perf_counter()
        result = composite_schedule(profiles, **kwargs)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.9)], len(result["chargingSchedulePeriod"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    txs = {1: (START - timedelta(minutes=20), 101), 2: (START - timedelta(minutes=50), 102)}
    common: dict[str, Any] = {"start": START, "duration": 86400, "transactions": txs, "number_of_connectors": 2}
    print(f"composite_schedule, 20 profiles x {PERIODS} periods, 24 h window, {args.calls} calls")
    for label, cid, unit, with_tx in (
        ("connector 1, A, transaction", 1, "A", True),
        ("connector 1, W, transaction", 1, "W", True),
        ("connector 1, A, no transaction", 1, "A", False),
        ("connector 0 (2 connectors), A", 0, "A", True),
        ("connector 0 (2 connectors), W", 0, "W", True),
    ):
        kw = dict(common, connector_id=cid, unit=unit)
        if not with_tx:
            kw["transactions"] = None
        med, p90, n = measure(args.calls, **kw)
        print(f"  {label:32s} median {med * 1e3:7.3f} ms   p90 {p90 * 1e3:7.3f} ms   ({n} periods out)")


if __name__ == "__main__":
    main()
