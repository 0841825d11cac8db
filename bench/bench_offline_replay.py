"""Offline backlog replay: N queued transaction messages (default 10,000) delivered after the CSMS comes back.

The backlog is written with evsed's own Store, as the OCPP session writes it while offline (closed
transactions of StartTransaction, MeterValues..., StopTransaction; payloads without transactionId). Every
message carries a unique increasing marker: the energy register (meterStart / Energy.Active.Import.Register
/ meterStop) is METER_BASE_WH + its position and its timestamp is BASE + position seconds.

Then a DevCSMS (in a thread of this process; it answers StartTransaction with increasing transactionIds)
and the daemon are started on that database. Measured from the CSMS's BootNotification Accepted until it
answered the last transaction message: messages/s overall and per 1,000-message window, daemon CPU per
message, the daemon's peak RSS (VmHWM). Checked at the CSMS: exactly N transaction messages, identical to
the ones queued, each once, in the queued order; every MeterValues/StopTransaction carries the
transactionId the CSMS gave to its StartTransaction. Exit 1 if a check fails.

    .venv/bin/python bench/bench_offline_replay.py [--messages 10000] [--per-transaction 200]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    CsmsThread,
    Daemon,
    database_path,
    kill_daemons_on_exit,
    median,
    percentile,
    tmpdir,
    write_config,
)

from evsed.devcsms.server import Event
from evsed.ocpp.session import iso
from evsed.store.db import Store

TX_ACTIONS = frozenset({"StartTransaction", "MeterValues", "StopTransaction"})
METER_BASE_WH = 1_000_000
WINDOW = 1000


@dataclass
class Queued:
    action: str
    payload: dict[str, Any]


def _sampled(marker: int, timestamp: str) -> list[dict[str, Any]]:
    return [{"timestamp": timestamp, "sampledValue": [
        {"value": str(METER_BASE_WH + marker), "context": "Sample.Periodic",
         "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unit": "Wh"},
        {"value": "11040", "context": "Sample.Periodic", "measurand": "Power.Active.Import",
         "location": "Outlet", "unit": "W"},
    ]}]


def build_backlog(db: Path, messages: int, per_tx: int) -> tuple[list[Queued], int]:
    """Closed transactions totalling ``messages`` queued messages; returns them in queue order."""
    n_tx = math.ceil(messages / per_tx)
    sizes = [messages // n_tx + (1 if k < messages % n_tx else 0) for k in range(n_tx)]
    base = time.time() - messages - 3600  # recorded offline over the last hours, one message a second
    expected: list[Queued] = []
    store = Store(db)
    try:
        marker = 0
        for k, size in enumerate(sizes):
            id_tag = f"BENCH{k:05d}"
            ts = iso(base + marker)
            start = {"connectorId": 1, "idTag": id_tag, "meterStart": METER_BASE_WH + marker, "timestamp": ts}
            local_id = store.begin_transaction(1, id_tag, METER_BASE_WH + marker, ts, start)
            expected.append(Queued("StartTransaction", start))
            marker += 1
            for _ in range(size - 2):
                ts = iso(base + marker)
                mv = {"connectorId": 1, "meterValue": _sampled(marker, ts)}
                store.add_meter_values(local_id, METER_BASE_WH + marker, mv, ts)
                expected.append(Queued("MeterValues", mv))
                marker += 1
            ts = iso(base + marker)
            local_stop = k % 2 == 1  # half stopped with the card (reason Local, idTag), half by unplugging
            stop: dict[str, Any] = {"meterStop": METER_BASE_WH + marker, "timestamp": ts,
                                    "reason": "Local" if local_stop else "EVDisconnected"}
            if local_stop:
                stop["idTag"] = id_tag
            store.end_transaction(local_id, METER_BASE_WH + marker, ts, str(stop["reason"]),
                                  id_tag if local_stop else None, stop)
            expected.append(Queued("StopTransaction", stop))
            marker += 1
        assert store.queue_length() == messages, (store.queue_length(), messages)
    finally:
        store.close()
    return expected, n_tx


def marker_of(action: str, payload: dict[str, Any]) -> int | None:
    try:
        if action == "StartTransaction":
            return int(payload["meterStart"]) - METER_BASE_WH
        if action == "StopTransaction":
            return int(payload["meterStop"]) - METER_BASE_WH
        for sv in payload["meterValue"][0]["sampledValue"]:
            if sv.get("measurand") == "Energy.Active.Import.Register":
                return int(float(sv["value"])) - METER_BASE_WH
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    return None


@dataclass
class Recorder:
    """on_event of the DevCSMS (runs in the CSMS thread): timestamps of what matters, nothing more."""

    expected: int
    daemon: Daemon | None = None
    boot_at: float | None = None
    boot_cpu: float | None = None
    calls: list[tuple[float, Event]] = field(default_factory=list)
    answers: dict[str, tuple[float, Event]] = field(default_factory=dict)
    connects: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def __call__(self, ev: Event) -> None:
        t = time.perf_counter()
        if ev.kind == "CONNECT":
            self.connects += 1
        elif ev.action == "BootNotification" and ev.direction == "out" and ev.kind == "RESULT":
            if ev.payload.get("status") == "Accepted" and self.boot_at is None:
                self.boot_at = t
                if self.daemon is not None:
                    self.boot_cpu = self.daemon.cpu_seconds()
        elif ev.action in TX_ACTIONS:
            if ev.direction == "in" and ev.kind == "CALL":
                self.calls.append((t, ev))
            elif ev.direction == "out" and ev.kind in ("RESULT", "ERROR"):
                self.answers[ev.unique_id] = (t, ev)
                if len(self.answers) >= self.expected:
                    self.done.set()


def window_rates(times: list[float], start: float, size: int) -> list[float]:
    rates = []
    prev = start
    for end in range(size - 1, len(times), size):
        rates.append(size / (times[end] - prev))
        prev = times[end]
    return rates


def check_delivery(expected: list[Queued], rec: Recorder) -> tuple[list[str], list[int]]:
    """Failures found at the CSMS, and the transactionIds it assigned (in StartTransaction order)."""
    failures: list[str] = []
    calls = [ev for _, ev in rec.calls]
    if len(calls) != len(expected):
        failures.append(f"received {len(calls)} transaction messages, {len(expected)} were queued")
    seen: dict[str, int] = {}
    for ev in calls:
        key = ev.action + json.dumps({k: v for k, v in ev.payload.items() if k != "transactionId"},
                                     sort_keys=True)
        seen[key] = seen.get(key, 0) + 1
    dups = sum(n - 1 for n in seen.values() if n > 1)
    if dups:
        failures.append(f"{dups} message(s) received more than once")
    mismatch = 0
    for i, (want, ev) in enumerate(zip(expected, calls, strict=False)):
        got = {k: v for k, v in ev.payload.items() if k != "transactionId"}
        if ev.action != want.action or got != want.payload:
            if not mismatch:
                failures.append(f"first difference at position {i}: expected {want.action} marker "
                                f"{marker_of(want.action, want.payload)}, got {ev.action} marker "
                                f"{marker_of(ev.action, ev.payload)}")
            mismatch += 1
    if mismatch:
        failures.append(f"{mismatch} position(s) differ from the queued order/content")
    missing = sorted(m for m in {marker_of(q.action, q.payload) for q in expected}
                     - {marker_of(e.action, e.payload) for e in calls} if m is not None)
    if missing:
        failures.append(f"{len(missing)} queued message(s) never arrived (markers {missing[:10]}...)")
    tx_ids: list[int] = []
    current: int | None = None
    wrong = 0
    errors = 0
    for ev in calls:
        answer = rec.answers.get(ev.unique_id)
        if answer is None or answer[1].kind != "RESULT":
            errors += 1
        if ev.action == "StartTransaction":
            current = answer[1].payload.get("transactionId") if answer is not None else None
            if isinstance(current, int):
                tx_ids.append(current)
            if "transactionId" in ev.payload:
                wrong += 1
        elif ev.payload.get("transactionId") != current or current is None:
            if not wrong:
                failures.append(f"{ev.action} marker {marker_of(ev.action, ev.payload)} carries transactionId "
                                f"{ev.payload.get('transactionId')}, its StartTransaction got {current}")
            wrong += 1
    if wrong:
        failures.append(f"{wrong} message(s) with a wrong transactionId")
    if errors:
        failures.append(f"{errors} transaction message(s) answered with a CALLERROR or not answered")
    if tx_ids != sorted(set(tx_ids)):
        failures.append("the CSMS's transactionIds are not strictly increasing")
    return failures, tx_ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10_000, help="queued transaction messages (default 10000)")
    ap.add_argument("--per-transaction", type=int, default=200, metavar="N",
                    help="messages per transaction: 1 StartTransaction, N-2 MeterValues, 1 StopTransaction")
    ap.add_argument("--timeout", type=float, default=0, metavar="S",
                    help="give up after S seconds of delivery (default: 60 + 20 ms per message)")
    args = ap.parse_args()
    if args.messages < 2 or args.per_transaction < 2:
        ap.error("--messages and --per-transaction must be at least 2")
    timeout = args.timeout or 60 + args.messages * 0.02
    kill_daemons_on_exit()

    tmp = tmpdir()
    rec = Recorder(args.messages)
    csms = CsmsThread(on_event=rec)
    db = database_path(write_config(tmp, csms.port))
    t0 = time.perf_counter()
    expected, n_tx = build_backlog(db, args.messages, args.per_transaction)
    build_s = time.perf_counter() - t0
    db_mib = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 2**20
    print(f"backlog: {args.messages} messages in {n_tx} closed transactions, written with Store in {build_s:.1f} s "
          f"({db_mib:.1f} MiB in {db.parent})")

    failures: list[str] = []
    d = Daemon(tmp, csms.port)
    rec.daemon = d
    spawned = time.perf_counter()
    try:
        bench_cpu0 = time.process_time()
        if not rec.done.wait(timeout):
            got = len(rec.answers)
            state = "alive" if d.alive else f"exited with {d.proc.returncode}"
            print(f"FAIL: only {got} of {args.messages} messages answered within {timeout:.0f} s; daemon {state}\n"
                  f"{d.log_tail()}")
            return 1
        end = max(t for t, _ in rec.answers.values())
        bench_cpu = time.process_time() - bench_cpu0
        daemon_cpu = d.cpu_seconds() - (rec.boot_cpu or 0.0)
        status = d.wait(lambda s: s["ocpp"]["queued_transaction_messages"] == 0, timeout=10)
        peak_kib, rss_kib = d.peak_rss_kib(), d.rss_kib()
    finally:
        d.stop()
        csms.stop()
    assert rec.boot_at is not None
    if rec.connects != 1:
        failures.append(f"the daemon connected {rec.connects} times (expected 1)")

    store = Store(db)
    try:
        left = store.queue_length()
        rows = [store.transaction(i) for i in range(1, n_tx + 1)]
    finally:
        store.close()
    delivery_failures, tx_ids = check_delivery(expected, rec)
    failures += delivery_failures
    if left:
        failures.append(f"{left} message(s) still queued after the daemon stopped")
    db_ids = [r.csms_tx_id if r else None for r in rows]
    if db_ids != tx_ids:
        failures.append(f"transactions.csms_tx_id {db_ids[:5]}... differ from the CSMS's ids {tx_ids[:5]}...")

    times = [t for t, _ in rec.calls]
    elapsed = end - rec.boot_at
    rates = window_rates(times, rec.boot_at, WINDOW)
    print(f"daemon spawn -> BootNotification Accepted: {rec.boot_at - spawned:.2f} s")
    print(f"delivered {len(rec.calls)} messages in {elapsed:.2f} s after Accepted (last answer): "
          f"{len(rec.calls) / elapsed:.0f} msg/s overall")
    if rates:
        print(f"  per {WINDOW}-message window: median {median(rates):.0f} msg/s "
              f"(min {min(rates):.0f}, max {max(rates):.0f}, {len(rates)} windows)")
    csms_ms = [(rec.answers[ev.unique_id][0] - t) * 1000 for t, ev in rec.calls if ev.unique_id in rec.answers]
    turn_ms = [(t_next - rec.answers[ev.unique_id][0]) * 1000
               for (_, ev), (t_next, _) in zip(rec.calls, rec.calls[1:], strict=False) if ev.unique_id in rec.answers]
    if turn_ms:
        print(f"  per message: charger turnaround (answer sent -> next CALL received) median "
              f"{median(turn_ms):.3f} ms, p99 {percentile(turn_ms, 99):.3f} ms, max {max(turn_ms):.1f} ms; "
              f"CSMS (CALL received -> answer sent) median {median(csms_ms):.3f} ms")
    print(f"daemon CPU during delivery: {daemon_cpu:.2f} s = {daemon_cpu / len(rec.calls) * 1000:.3f} ms per message "
          f"({daemon_cpu / elapsed * 100:.0f} % of one core); CSMS + bench process CPU {bench_cpu:.2f} s")
    print(f"daemon peak RSS (VmHWM): {peak_kib / 1024:.1f} MiB; VmRSS at the end {rss_kib / 1024:.1f} MiB")
    print(f"queue after delivery: {status['ocpp']['queued_transaction_messages']}; "
          f"CSMS transactionIds {tx_ids[0] if tx_ids else '-'}..{tx_ids[-1] if tx_ids else '-'} ({len(tx_ids)})")
    if failures:
        print("FAIL:")
        for f in failures:
            print(f"  - {f}")
        print(f"(daemon log: {tmp / 'daemon.log'})")
        return 1
    print(f"OK: {len(expected)} messages received exactly once each, in queued order, identical payloads; "
          f"every MeterValues/StopTransaction carried its StartTransaction's transactionId")
    return 0


if __name__ == "__main__":
    sys.exit(main())
