"""Time from SetChargingProfile to the new PWM duty, and how late period boundaries reach the pilot (issue 5).

The real daemon process (sim backend, 1 connector) runs against the dev CSMS; an EV charges on connector 1.

1. SetChargingProfile -> PWM duty. The CSMS sends a TxProfile (same chargingProfileId every time, so each one replaces
   the last) whose single period is 0.1 A below the previous one: 31.9, 31.8, ... 6.1 A, each a new duty. Only
   decreases: an increase waits up to 5 s by design (DUTY_UPDATE_INTERVAL_S). When the steps run out, a fresh
   transaction starts them again. t0 = time.monotonic_ns() in the CSMS just before the CALL goes out (an upper
   bound for "received"), t1 = the sim board's stamp of the duty change (`sim ev` pwm_changed_ns). Both are
   CLOCK_MONOTONIC, which is system-wide on Linux, so the two processes' values compare. Idle, then with the CSMS
   sending GetConfiguration CALLs back to back. Target: < 100 ms.
   The steps start 1 s after the transaction did: a Relative TxProfile inside the transaction's first second waits
   for the next whole second (tests/unit/test_limiter_subsecond_start.py), measured on its own ("first profile of a
   transaction": a fresh transaction each, the profile sent as soon as it charges).
2. Period-boundary lateness. An Absolute TxProfile with a period every 2 s, each limit 1 A below the last; after
   each boundary the bench reads the duty's stamp: lateness = stamp - boundary, the boundary's wall time turned
   into monotonic time with the time.time_ns() - time.monotonic_ns() offset sampled in this process. The daemon's
   wall clock comes from the CSMS's BootNotification currentTime (millisecond resolution, from the same system
   clock), so up to ~1 ms of the lateness can be that clock's own lag; the bench prints an estimate of it.

Usage: python bench/bench_charging_profile_latency.py [--steps N] [--first N] [--boundaries K] [--period S]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from _harness import CsmsThread, Daemon, kill_daemons_on_exit, median, percentile, tmpdir

from evsed.core.pilot import duty_for_current

CP_ID = "BENCH"
PROFILE_ID = 501
STEPS = 200
FIRST = 10
BOUNDARIES = 20
PERIOD_S = 2
TARGET_MS = 100.0
FIRST_TENTH, LAST_TENTH = 319, 61  # 31.9 A down to 6.1 A in 0.1 A steps: 259 distinct duties per transaction
READ_TIMEOUT_S = 2.0

Status = dict[str, Any]


def conn1(s: Status) -> Status:
    return s["connectors"][0]  # type: ignore[no-any-return]


def sim_ev(d: Daemon) -> Status:
    return d.ctl(cmd="sim", action="ev", connector=1)  # type: ignore[no-any-return]


def fresh_transaction(d: Daemon) -> int:
    """Unplug (ending any transaction and its TxProfiles), plug and swipe; the CSMS's transactionId once charging
    at the full 32 A again."""
    if sim_ev(d)["plugged"]:
        d.ctl(cmd="sim", action="unplug", connector=1)
        d.wait(lambda s: conn1(s)["status"] == "Available")
    d.ctl(cmd="sim", action="plug", connector=1)
    d.ctl(cmd="sim", action="swipe", id_tag="BENCH01")
    s = d.wait(lambda s: conn1(s)["status"] == "Charging" and conn1(s)["transaction_id"] is not None
               and conn1(s)["offered_current_a"] == 32.0)
    return int(conn1(s)["transaction_id"])


def tx_profile(tx_id: int, periods: list[dict[str, Any]], *, absolute_from: datetime | None = None,
               duration: int | None = None) -> dict[str, Any]:
    schedule: dict[str, Any] = {"chargingRateUnit": "A", "chargingSchedulePeriod": periods}
    if absolute_from is not None:
        schedule["startSchedule"] = absolute_from.isoformat().replace("+00:00", "Z")
    if duration is not None:
        schedule["duration"] = duration
    return {"connectorId": 1, "csChargingProfiles": {
        "chargingProfileId": PROFILE_ID, "transactionId": tx_id, "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute" if absolute_from is not None else "Relative",
        "chargingSchedule": schedule}}


def send_profile(csms: CsmsThread, payload: dict[str, Any]) -> tuple[int, int, str]:
    """(t0 just before the CALL is sent, t when its CALLRESULT arrived, status); both in the CSMS's loop."""

    async def go() -> tuple[int, int, str]:
        t0 = time.monotonic_ns()
        result = await csms.csms.call(CP_ID, "SetChargingProfile", payload)
        return t0, time.monotonic_ns(), str(result.get("status"))

    return csms.run(go())  # type: ignore[no-any-return]


def read_change(d: Daemon, after_ns: int, timeout: float = READ_TIMEOUT_S) -> Status | None:
    """The `sim ev` answer once the duty changed at or after after_ns; None if it did not within the timeout."""
    end = time.monotonic() + timeout
    while True:
        ev = sim_ev(d)
        if ev["pwm_changed_ns"] >= after_ns:
            return ev
        if time.monotonic() >= end:
            return None
        time.sleep(0.001)


@dataclass
class Run:
    ms: list[float] = field(default_factory=list)  # CALL sent -> duty changed
    rtt_ms: list[float] = field(default_factory=list)  # CALL sent -> CALLRESULT in
    before_result: int = 0  # duty changed before the CALLRESULT reached the CSMS
    rejected: int = 0
    missed: int = 0  # no duty change within READ_TIMEOUT_S
    wrong_duty: int = 0
    transactions: int = 0
    took_s: float = 0.0


    def step(self, d: Daemon, csms: CsmsThread, tx_id: int, limit: float) -> None:
        """One SetChargingProfile to `limit` (a decrease) and the duty change it causes."""
        t0, t_result, status = send_profile(csms, tx_profile(tx_id, [{"startPeriod": 0, "limit": limit}]))
        self.rtt_ms.append((t_result - t0) / 1e6)
        if status != "Accepted":
            self.rejected += 1
            return
        ev = read_change(d, t0)
        if ev is None:
            self.missed += 1
            return
        t1 = int(ev["pwm_changed_ns"])
        self.ms.append((t1 - t0) / 1e6)
        self.before_result += t1 <= t_result
        if ev["pwm_duty"] != duty_for_current(limit):
            self.wrong_duty += 1


def profile_steps(d: Daemon, csms: CsmsThread, n: int) -> Run:
    run = Run()
    started = time.monotonic()
    tenth, tx_id = LAST_TENTH - 1, 0
    for _ in range(n):
        if tenth < LAST_TENTH:
            tx_id, tenth = fresh_transaction(d), FIRST_TENTH
            run.transactions += 1
            time.sleep(1.0)  # past the transaction's first (whole) second: see first_profiles
        run.step(d, csms, tx_id, tenth / 10)
        tenth -= 1
    run.took_s = time.monotonic() - started
    return run


def first_profiles(d: Daemon, csms: CsmsThread, n: int) -> Run:
    """n fresh transactions, each sent a 16 A Relative TxProfile as soon as it charges (at 32 A)."""
    run = Run()
    started = time.monotonic()
    for _ in range(n):
        run.step(d, csms, fresh_transaction(d), 16.0)
        run.transactions += 1
    run.took_s = time.monotonic() - started
    return run


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def figures(ms: list[float]) -> str:
    return (f"median {median(ms):.3f} ms, p90 {percentile(ms, 90):.3f} ms, p99 {percentile(ms, 99):.3f} ms, "
            f"max {max(ms):.3f} ms")


def report_steps(label: str, n: int, run: Run) -> None:
    print(f"{label}: {n} SetChargingProfile in {run.took_s:.1f} s ({run.transactions} transaction(s))")
    if run.ms:
        worst = max(run.ms)
        print(f"  CALL sent -> PWM duty applied: N {len(run.ms)}, {figures(run.ms)}  "
              f"[target < {TARGET_MS:g} ms: {verdict(worst < TARGET_MS)}]")
        print(f"  CALL sent -> CALLRESULT in:    N {len(run.rtt_ms)}, {figures(run.rtt_ms)}; "
              f"duty applied before the CALLRESULT arrived in {run.before_result}/{len(run.ms)}")
    problems = [f"{k} {v}" for k, v in (("rejected", run.rejected), ("no duty change within "
                                         f"{READ_TIMEOUT_S:g} s", run.missed), ("unexpected duty", run.wrong_duty))
                if v]
    if problems:
        print(f"  PROBLEMS: {', '.join(problems)}")


def wall_minus_mono_ns() -> int:
    """time.time_ns() - time.monotonic_ns(), from the tightest of a few bracketed samples."""
    best: tuple[int, int] | None = None
    for _ in range(20):
        m1 = time.monotonic_ns()
        w = time.time_ns()
        m2 = time.monotonic_ns()
        if best is None or m2 - m1 < best[0]:
            best = (m2 - m1, w - (m1 + m2) // 2)
    assert best is not None
    return best[1]


def daemon_clock_lag_ms(csms: CsmsThread) -> float | None:
    """How far the currentTime the CSMS sent in its BootNotification answer (what the daemon set its wall clock to)
    was behind the system clock when the answer went out: millisecond truncation plus handler time. The transit to
    the daemon comes on top."""
    for ev in reversed(csms.csms.messages):
        if ev.direction == "out" and ev.kind == "RESULT" and ev.action == "BootNotification":
            sent = datetime.fromisoformat(str(ev.payload["currentTime"]).replace("Z", "+00:00"))
            return float((ev.time - sent).total_seconds() * 1e3)
    return None


@dataclass
class Boundaries:
    late_ms: list[float] = field(default_factory=list)
    missed: int = 0
    wrong_duty: int = 0


def period_boundaries(d: Daemon, csms: CsmsThread, k: int, period_s: int) -> Boundaries:
    """An Absolute TxProfile starting on a whole second in the near future, k + 1 periods each 1 A below the last
    (31 A first: the profile's start is the first boundary, from the local maximum of 32 A)."""
    out = Boundaries()
    tx_id = fresh_transaction(d)
    offset_ns = wall_minus_mono_ns()
    start = math.ceil(time.time()) + 2
    limits = [31.0 - i for i in range(k + 1)]  # k <= 25: down to 6 A at the lowest
    periods = [{"startPeriod": i * period_s, "limit": lim} for i, lim in enumerate(limits)]
    payload = tx_profile(tx_id, periods, absolute_from=datetime.fromtimestamp(start, UTC),
                         duration=(k + 1) * period_s)
    _t0, _t, status = send_profile(csms, payload)
    if status != "Accepted":
        raise RuntimeError(f"the Absolute profile was {status}")
    for i, lim in enumerate(limits):
        boundary_mono_ns = (start + i * period_s) * 1_000_000_000 - offset_ns
        # Read a little after the boundary (well before the next one): the stamp is when the duty changed.
        pause = (boundary_mono_ns - time.monotonic_ns()) / 1e9 + min(0.3, period_s / 4)
        if pause > 0:
            time.sleep(pause)
        ev = read_change(d, boundary_mono_ns - 500_000_000)  # an early change (up to 0.5 s) shows as negative
        if ev is None:
            out.missed += 1
            continue
        out.late_ms.append((int(ev["pwm_changed_ns"]) - boundary_mono_ns) / 1e6)
        if ev["pwm_duty"] != duty_for_current(lim):
            out.wrong_duty += 1
    return out


def report_boundaries(label: str, k: int, period_s: int, b: Boundaries, clock_lag_ms: float | None) -> None:
    print(f"{label}: {k + 1} boundaries {period_s} s apart (Absolute TxProfile, decreasing limits)")
    if b.late_ms:
        early = sum(1 for v in b.late_ms if v < 0)
        print(f"  boundary -> PWM duty applied: N {len(b.late_ms)}, {figures(b.late_ms)}"
              + (f", {early} EARLY" if early else "") + f"  [target < {TARGET_MS:g} ms: "
              f"{verdict(min(b.late_ms) >= 0 and max(b.late_ms) < TARGET_MS)}]")
    if clock_lag_ms is not None:
        print(f"  (the daemon's wall clock is the CSMS's BootNotification currentTime, {clock_lag_ms:.3f} ms behind "
              "the system clock when sent, plus transit: that much of the lateness is the clock, not the timer)")
    if b.missed or b.wrong_duty:
        print(f"  PROBLEMS: {b.missed} boundaries without a duty change, {b.wrong_duty} with an unexpected duty")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=STEPS, help=f"SetChargingProfile per phase (default {STEPS})")
    ap.add_argument("--first", type=int, default=FIRST,
                    help=f"transactions for the first-profile figure (default {FIRST}, 0 = skip)")
    ap.add_argument("--boundaries", type=int, default=BOUNDARIES,
                    help=f"period boundaries per phase after the first (default {BOUNDARIES}, at most 25)")
    ap.add_argument("--period", type=int, default=PERIOD_S, help=f"seconds between boundaries (default {PERIOD_S})")
    args = ap.parse_args()
    if not 1 <= args.boundaries <= 25 or args.period < 1 or args.steps < 1 or args.first < 0:
        ap.error("--steps >= 1, --first >= 0, --boundaries 1..25 (limits 31 A down by 1 A stay >= 6 A), --period >= 1")
    kill_daemons_on_exit()
    csms = CsmsThread()
    d = Daemon(tmpdir(), csms.port)
    try:
        d.wait_accepted()
        lag = daemon_clock_lag_ms(csms)
        report_steps("idle", args.steps, profile_steps(d, csms, args.steps))
        if args.first:
            report_steps("first profile of a transaction, idle", args.first, first_profiles(d, csms, args.first))
        report_boundaries("idle", args.boundaries, args.period,
                          period_boundaries(d, csms, args.boundaries, args.period), lag)
        calls, end_flood = csms.flood(CP_ID)
        try:
            report_steps("under CSMS flood", args.steps, profile_steps(d, csms, args.steps))
            report_boundaries("under CSMS flood", args.boundaries, args.period,
                              period_boundaries(d, csms, args.boundaries, args.period), lag)
        finally:
            end_flood()
        print(f"  (the CSMS completed {calls()} GetConfiguration CALLs during the loaded phase)")
        d.ctl(cmd="sim", action="unplug", connector=1)
    finally:
        d.stop()
        csms.stop()


if __name__ == "__main__":
    main()
