"""The composite charging schedule of OCPP 1.6 (section 3.13, GetCompositeSchedule), as a pure function.

`composite_schedule` combines the installed charging profiles into one ChargingSchedule for a connector over
[start, start + duration). It is pure (no clock, no I/O; the only state is a memo of parsed date strings, which does
not change results): the daemon's limiter and GetCompositeSchedule both call it, and so can integrators and tests.

How it works. Every instant is first turned into a whole-second offset from `start` (rounded up, see "Time grid").
Each profile then yields segments (offset range, limit, phases) inside the window: its schedule periods placed at its
anchor (Absolute: startSchedule; Relative: the connector's transaction start, else `start`; Recurring: every Daily or
Weekly occurrence counted in UTC from startSchedule), clipped to validFrom/validTo, to the schedule duration and, for
Recurring, to the recurrence period. Within one purpose, profiles are painted from the highest rank down, each only
filling what higher ranks left uncovered; that is the stack rule, and it lets a lower level show through where a
higher one has ended. The TxProfile/TxDefault timeline and the ChargePointMaxProfile timeline are then combined with
min (connector N) or summed over connectors and capped (connector 0), the local maximum fills every gap, limits are
rounded and equal neighbours merged. The cost grows with the number of segments actually painted, not with
profiles x breakpoints: 20 profiles x 48 periods over 24 h take a fraction of a millisecond (bench/bench_composite.py).

Decisions where the specification is silent (tested in tests/unit/test_composite_schedule.py):
- Time grid: OCPP startPeriod is an integer, so a boundary that falls inside a second (fractional `start`,
  startSchedule, validFrom/validTo or transaction start) is reported at the next whole second after `start`; the
  value before it holds until then. With whole-second inputs the schedule is exact.
- Limits: rounded DOWN to one decimal (ChargingSchedulePeriod.limit "accepts at most one digit fraction"), so the
  reported limit never exceeds the real one (e.g. 11000 W on 3 x 230 V = 15.94 A -> 15.9 A).
- Local maximum: a connector never gets more than its local maximum (default_limit_a, in W times voltage and the
  period's phases), also when a profile allows more ("Local Limits might be taken into account", errata 3.1);
  connector 0 reports the expected total, so it never exceeds number_of_connectors x the local maximum.
- numberPhases: reported only when some contributing period states it. A min takes the smallest stated count, a sum
  the largest stated count; unstated counts are ignored (the local maximum states none).
- Unit mixing: every limit is converted to the requested unit (voltage x numberPhases, the period's else
  default_phases) and compared there, so the lower limit after conversion wins.
- TxProfile mask: a TxProfile for the running transaction (on connector N, transactionId absent or equal) hides all
  TxDefaultProfiles of that connector from `start` until the TxProfile's validTo (forever without one), whether or not
  its own schedule covers that time; after validTo it would be purged, so TxDefault shows again. validFrom in the
  future does not lift the mask: the transaction "has" a TxProfile, so the connector runs at its local maximum until
  then (the spec's "revert to default behavior").
- Recurring: occurrences are startSchedule + k x 86400 s (Daily) or 604800 s (Weekly), k >= 0, in UTC: no occurrence
  before startSchedule, and local wall-clock time shifts at DST changes. A duration longer than the recurrence period
  is cut at the period ("the remainder periods SHALL NOT be executed", errata 3.43/3.44).
- Relative anchors: a Relative TxDefaultProfile on connector 0 is anchored at the transaction of the connector being
  evaluated; ChargePointMaxProfile (never Relative once validated) is anchored at `start`.
- Malformed input that validation rejects upstream is tolerated, not raised: an unknown purpose, kind or unit, a
  Recurring profile without recurrencyKind and an empty period list contribute nothing; Absolute or Recurring without
  startSchedule count from the Relative anchor (7.13: "If absent the schedule will be relative to start of
  charging"); a ChargePointMaxProfile not on connector 0 and a TxProfile on connector 0 are ignored; negative or NaN
  limits count as 0; periods are sorted by startPeriod and time before the first startPeriod is uncovered.
- Naive datetimes (and ISO strings without an offset) are taken as UTC (OCPP recommends UTC, 3.14).
- duration 0 reports the value at `start` as a single period; a negative duration is a ValueError.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Any

__all__ = ["composite_schedule"]

_DAY = 86_400
_WEEK = 604_800
_INF = 1 << 62  # "forever" on the offset axis; far beyond any window
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

_CP_MAX = "ChargePointMaxProfile"
_TX_DEFAULT = "TxDefaultProfile"
_TX = "TxProfile"

# A segment of a timeline: [start, end) in whole-second offsets from `start`, the limit in the requested unit (None =
# no profile gives one there) and the stated number of phases (None = not stated).
_Seg = tuple[int, int, float | None, int | None]
# A profile's painted piece: same, but always with a limit.
_Piece = tuple[int, int, float, int | None]


@lru_cache(maxsize=4096)
def _parse_us(text: str) -> int:
    """_to_us of a string, cached: the installed profiles' dates are parsed again on every call otherwise."""
    return _to_us(datetime.fromisoformat(text))


def _to_us(value: Any) -> int:
    """Microseconds since the epoch of a datetime or an OCPP ISO 8601 string ("Z" or an offset; naive = UTC)."""
    if not isinstance(value, datetime):
        return _parse_us(str(value))
    dt = value
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _US


def _offset(value: Any, origin_us: int) -> int:
    """Whole-second offset of an instant from the window start, rounded up (a boundary inside a second takes effect
    at the next whole second, see the module docstring)."""
    return -((origin_us - _to_us(value)) // 1_000_000)


class _Profile:
    """One installed profile, with its dates turned into offsets. Periods are converted lazily and only once per call:
    in a deep stack most profiles are never reached because a higher level covers the window."""

    __slots__ = (
        "_converted",
        "connector_id",
        "duration",
        "kind",
        "period",
        "purpose",
        "raw",
        "stack",
        "start_schedule",
        "transaction_id",
        "valid_from",
        "valid_to",
    )

    def __init__(self, connector_id: int, raw: Mapping[str, Any], origin_us: int) -> None:
        self.connector_id = connector_id
        self.raw = raw
        self.purpose: str = raw.get("chargingProfilePurpose", "")
        self.stack: int = int(raw.get("stackLevel", 0))
        self.kind: str = raw.get("chargingProfileKind", "")
        self.transaction_id: Any = raw.get("transactionId")
        vf, vt = raw.get("validFrom"), raw.get("validTo")
        self.valid_from = -_INF if vf is None else _offset(vf, origin_us)
        self.valid_to = _INF if vt is None else _offset(vt, origin_us)
        sched: Mapping[str, Any] = raw.get("chargingSchedule") or {}
        ss = sched.get("startSchedule")
        self.start_schedule: int | None = None if ss is None else _offset(ss, origin_us)
        dur = sched.get("duration")
        self.duration = _INF if dur is None else max(int(dur), 0)
        # 0 = not recurring; None = unusable (Recurring without a known recurrencyKind, or an unknown kind).
        self.period: int | None = 0
        if self.kind == "Recurring":
            self.period = {"Daily": _DAY, "Weekly": _WEEK}.get(raw.get("recurrencyKind", ""))
            if self.period is not None:
                self.duration = min(self.duration, self.period)
        elif self.kind not in ("Absolute", "Relative"):
            self.period = None
        self._converted: tuple[list[int], list[float], list[int | None]] | None = None

    def periods(self, unit: str, voltage: float, default_phases: int,
                ) -> tuple[list[int], list[float], list[int | None]]:
        """(startPeriods, limits in `unit`, stated phases), sorted by startPeriod. Empty when unusable."""
        if self._converted is None:
            sched: Mapping[str, Any] = self.raw.get("chargingSchedule") or {}
            own = str(sched.get("chargingRateUnit", "")).upper()
            plist: Sequence[Mapping[str, Any]] = ()
            if own in ("A", "W"):
                plist = sched.get("chargingSchedulePeriod") or ()
            # Comprehensions rather than one loop: this is the hot spot of a call (48 periods x the profiles reached).
            starts = [int(p["startPeriod"]) for p in plist]
            limits = [float(p["limit"]) for p in plist]
            phases: list[int | None] = [None if p.get("numberPhases") is None else int(p["numberPhases"])
                                        for p in plist]
            if not all(v >= 0.0 for v in limits):
                # Negative or NaN: validation rejects it; should one get here, it stops charging, to be safe.
                limits = [v if v >= 0.0 else 0.0 for v in limits]
            if own != unit:
                if unit == "W":
                    limits = [v * voltage * (n or default_phases) for v, n in zip(limits, phases, strict=True)]
                else:
                    limits = [v / (voltage * (n or default_phases)) for v, n in zip(limits, phases, strict=True)]
            if any(a >= b for a, b in pairwise(starts)):  # out of order (invalid): sort, keep the last duplicate
                rows = sorted(dict(zip(starts, zip(limits, phases, strict=True), strict=True)).items())
                starts = [r[0] for r in rows]
                limits = [r[1][0] for r in rows]
                phases = [r[1][1] for r in rows]
            self._converted = (starts, limits, phases)
        return self._converted

    def pieces(self, lo: int, hi: int, relative_anchor: int, unit: str, voltage: float, default_phases: int,
               ) -> list[_Piece]:
        """This profile's pieces inside [lo, hi) (already clipped to its validity), in time order."""
        if self.period is None:
            return []
        starts, limits, phases = self.periods(unit, voltage, default_phases)
        if not starts:
            return []
        origin = relative_anchor if self.kind == "Relative" or self.start_schedule is None else self.start_schedule
        if self.period:
            # Most recent occurrence at or before lo, but never before startSchedule itself.
            k = max(0, (lo - origin) // self.period)
            anchors: Iterable[int] = range(origin + k * self.period, hi, self.period)
        else:
            anchors = (origin,)
        out: list[_Piece] = []
        n = len(starts)
        dur = self.duration
        for a in anchors:
            s0 = max(lo, a)
            e0 = hi if dur >= _INF else min(hi, a + dur)
            if s0 >= e0:
                continue
            i = bisect_right(starts, s0 - a) - 1
            if i < 0:  # first startPeriod > 0 (invalid): nothing before it
                i = 0
            while i < n:
                ps = max(s0, a + starts[i])
                pe = min(e0, a + starts[i + 1]) if i + 1 < n else e0
                if ps >= e0:
                    break
                if ps < pe:
                    out.append((ps, pe, limits[i], phases[i]))
                i += 1
        return out


def _paint(ranked: Sequence[tuple[_Profile, int, int]], duration: int, unit: str, voltage: float,
           default_phases: int) -> list[_Seg]:
    """The stack rule: `ranked` is (profile, relative anchor, earliest offset it may apply), best rank first. Each
    profile fills only what better-ranked ones left uncovered. Returns a timeline covering [0, duration) exactly,
    with None where no profile gives a limit."""
    gaps: list[tuple[int, int]] = [(0, duration)]
    painted: list[_Seg] = []
    for prof, anchor, not_before in ranked:
        if not gaps:
            break
        lo = max(gaps[0][0], prof.valid_from, not_before)
        hi = min(gaps[-1][1], prof.valid_to)
        if lo >= hi:
            continue
        segs = prof.pieces(lo, hi, anchor, unit, voltage, default_phases)
        if not segs:
            continue
        # Intersect the sorted, disjoint pieces with the sorted, disjoint gaps (two pointers).
        new_gaps: list[tuple[int, int]] = []
        j, m = 0, len(segs)
        for g0, g1 in gaps:
            cur = g0
            while j < m and segs[j][1] <= cur:
                j += 1
            while j < m and segs[j][0] < g1:
                s, e, v, ph = segs[j]
                s = max(s, cur)
                e = min(e, g1)
                if s > cur:
                    new_gaps.append((cur, s))
                painted.append((s, e, v, ph))
                cur = e
                if segs[j][1] <= g1:
                    j += 1
                else:
                    break
            if cur < g1:
                new_gaps.append((cur, g1))
        gaps = new_gaps
    if not gaps:
        painted.sort()
        return painted
    timeline: list[_Seg] = painted
    timeline.extend((g0, g1, None, None) for g0, g1 in gaps)
    timeline.sort(key=lambda seg: seg[0])
    return timeline


def _min_phases(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a < b else b


def _max_phases(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a > b else b


def _combine_min(x: list[_Seg], y: list[_Seg]) -> list[_Seg]:
    """Pointwise min of two timelines covering the same window; None (no limit) loses to any limit."""
    out: list[_Seg] = []
    i = j = 0
    cur = 0
    while i < len(x) and j < len(y):
        _, xe, xv, xp = x[i]
        _, ye, yv, yp = y[j]
        end = xe if xe < ye else ye
        if xv is None:
            v, ph = yv, yp
        elif yv is None:
            v, ph = xv, xp
        else:
            v = xv if xv < yv else yv
            ph = _min_phases(xp, yp)
        out.append((cur, end, v, ph))
        cur = end
        if xe == end:
            i += 1
        if ye == end:
            j += 1
    return out


def _cap_local(tl: list[_Seg], unit: str, limit_a: float, voltage: float, default_phases: int) -> list[_Seg]:
    """Fill the gaps of a connector's timeline with its local maximum and cap every limit by it."""
    out: list[_Seg] = []
    for s, e, v, ph in tl:
        local = limit_a if unit == "A" else limit_a * voltage * (ph or default_phases)
        out.append((s, e, local if v is None or v > local else v, ph))
    return out


def _sum(timelines: list[list[_Seg]]) -> list[_Seg]:
    """Pointwise sum of complete timelines (all limits set); phases: the largest stated."""
    if len(timelines) == 1:
        return timelines[0]
    bounds = sorted({seg[1] for tl in timelines for seg in tl})
    idx = [0] * len(timelines)
    out: list[_Seg] = []
    cur = 0
    for end in bounds:
        total = 0.0
        phases: int | None = None
        for k, tl in enumerate(timelines):
            seg = tl[idx[k]]
            total += seg[2] or 0.0
            phases = _max_phases(phases, seg[3])
            if seg[1] == end:
                idx[k] += 1
        out.append((cur, end, total, phases))
        cur = end
    return out


def _round_down(v: float) -> float:
    """One decimal, rounded down; the tolerance keeps 7360 W / 230 V = 32.0 A from becoming 31.9 through float
    noise."""
    return math.floor(v * 10.0 + 1e-6) / 10.0


def _iso_z(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    spec = "seconds" if dt.microsecond == 0 else "milliseconds"
    return dt.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _dedupe(profiles: Iterable[tuple[int, Mapping[str, Any]]]) -> list[tuple[int, Mapping[str, Any]]]:
    """Install-order replacement: a later profile replaces an earlier one with the same chargingProfileId (on any
    connector) or with the same connectorId + stackLevel + purpose (3.13.2, 5.16.3). Survivors keep install order."""
    kept: dict[int, tuple[int, Mapping[str, Any]]] = {}
    by_id: dict[Any, int] = {}
    by_key: dict[tuple[int, Any, Any], int] = {}
    for n, (cid, prof) in enumerate(profiles):
        pid = prof.get("chargingProfileId")
        key = (cid, prof.get("stackLevel"), prof.get("chargingProfilePurpose"))
        for old in (by_id.get(pid), by_key.get(key)):
            if old is not None and old in kept:
                ocid, oprof = kept.pop(old)
                by_id.pop(oprof.get("chargingProfileId"), None)
                by_key.pop((ocid, oprof.get("stackLevel"), oprof.get("chargingProfilePurpose")), None)
        kept[n] = (cid, prof)
        by_id[pid] = n
        by_key[key] = n
    return list(kept.values())


def composite_schedule(
    profiles: Iterable[tuple[int, Mapping[str, Any]]],
    *,
    connector_id: int,
    start: datetime,
    duration: int,
    unit: str,
    transactions: Mapping[int, tuple[datetime | str, int | None]] | None = None,
    number_of_connectors: int = 1,
    default_limit_a: float = 32.0,
    voltage: float = 230.0,
    default_phases: int = 3,
) -> dict[str, Any]:
    """The composite schedule of `connector_id` (0 = the whole charge point) over [start, start + duration).

    `profiles`: (connectorId, csChargingProfiles dict as in SetChargingProfile.req) in install order.
    `transactions`: {connector_id: (transaction start, transactionId or None)} of the running transactions.
    `default_limit_a`: the local maximum per connector in A (per phase). Returns an OCPP 1.6 ChargingSchedule dict:
    startSchedule (`start` in UTC, ISO 8601 with "Z"), duration, chargingRateUnit and chargingSchedulePeriod
    [{startPeriod, limit, numberPhases?}] covering the whole window with no hole. See the module docstring for the
    rules and the decisions taken where OCPP is silent.
    """
    if unit not in ("A", "W"):
        raise ValueError(f"unit must be 'A' or 'W', not {unit!r}")
    if duration < 0:
        raise ValueError("duration must be >= 0")
    if default_phases not in (1, 2, 3):
        raise ValueError("default_phases must be 1..3")
    window = max(int(duration), 1)  # duration 0: report the value at `start`
    origin_us = _to_us(start)
    txs = transactions or {}

    parsed = [_Profile(cid, prof, origin_us) for cid, prof in _dedupe(profiles)]
    cp_max = sorted((p for p in parsed if p.purpose == _CP_MAX and p.connector_id == 0), key=lambda p: -p.stack)
    cp_ranked = [(p, 0, -_INF) for p in cp_max]

    def connector_timeline(n: int) -> list[_Seg]:
        """TxProfile or TxDefaultProfile for connector n, gaps = None."""
        tx = txs.get(n)
        anchor = 0
        ranked: list[tuple[_Profile, int, int]] = []
        mask_end = -_INF
        if tx is not None:
            anchor = _offset(tx[0], origin_us)
            tx_profiles = [p for p in parsed if p.purpose == _TX and p.connector_id == n
                           and (p.transaction_id is None or p.transaction_id == tx[1])]
            if tx_profiles:
                mask_end = max(p.valid_to for p in tx_profiles)
                tx_profiles.sort(key=lambda p: -p.stack)
                ranked.extend((p, anchor, -_INF) for p in tx_profiles)
        if mask_end < window:
            # Same stack level: the connector's own TxDefault beats the one on connector 0 (3.13.1).
            defaults = sorted((p for p in parsed if p.purpose == _TX_DEFAULT and p.connector_id in (0, n)),
                              key=lambda p: (-p.stack, p.connector_id == 0))
            ranked.extend((p, anchor, mask_end) for p in defaults)
        return _paint(ranked, window, unit, voltage, default_phases)

    cp_tl = _paint(cp_ranked, window, unit, voltage, default_phases)
    if connector_id == 0:
        per_connector = [_cap_local(connector_timeline(n), unit, default_limit_a, voltage, default_phases)
                         for n in range(1, max(number_of_connectors, 1) + 1)]
        timeline = _combine_min(_sum(per_connector), cp_tl)
    else:
        timeline = _cap_local(_combine_min(connector_timeline(connector_id), cp_tl), unit, default_limit_a, voltage,
                              default_phases)

    periods: list[dict[str, Any]] = []
    last: tuple[float, int | None] | None = None
    for s, _e, v, ph in timeline:
        if s >= window:
            break
        key = (_round_down(v or 0.0), ph)
        if key == last:
            continue
        last = key
        period: dict[str, Any] = {"startPeriod": s, "limit": key[0]}
        if ph is not None:
            period["numberPhases"] = ph
        periods.append(period)
    return {
        "startSchedule": _iso_z(start if start.tzinfo is not None else start.replace(tzinfo=UTC)),
        "duration": int(duration),
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": periods,
    }
