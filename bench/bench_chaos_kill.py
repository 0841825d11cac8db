"""kill -9 at random moments during charging sessions: lost and duplicated transaction messages (target 0 and 0).

Loop (--kills N, default 200): start the daemon on the same storage dir, wait for BootNotification
Accepted, run short sessions on every connector (sim plug, swipe, charge 0.3..3 s with
MeterValueSampleInterval=1, stop by unplugging or by swiping again), and SIGKILL the daemon at a uniform
random moment 0..--max-delay s after the activity began. The sim EV lives in the daemon process, so after a
restart the EV is gone and the transaction left open is closed with PowerLoss: that is expected. At the
end the daemon is started once more, everything drains, it is stopped cleanly and the books are compared.

What the charger committed: before the first start the bench adds a ledger table to the daemon's SQLite
database and a trigger copying every row inserted into tx_queue into it. The trigger runs inside the
daemon's own commit, so the ledger holds exactly the transaction messages the charger committed, including
those delivered and deleted long ago. What the CSMS received: a DevCSMS in a thread of this process logs
every transaction CALL (also to csms-log.jsonl in the run directory) with the connection it came on.

    lost        committed (ledger) but never received (payload compared without transactionId)
    duplicated  received more often than committed; "answer window" = the earlier copy was the last CALL
                on a connection cut by the kill, i.e. the CSMS had it but the charger could not record the
                answer before it died. OCPP 1.6 cannot avoid those (at-least-once delivery).
Also checked: every MeterValues/StopTransaction carries the transactionId the charger recorded for its
transaction, first arrivals follow queue order, one StartTransaction per row of `transactions` and one
StopTransaction per stopped row, no transaction left open, queue empty.
Exit 1 if anything was lost, or on a duplicate outside the answer window, a wrong transactionId or order.

    .venv/bin/python bench/bench_chaos_kill.py [--kills 200] [--seed S] [--connectors 2] [--max-delay 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sqlite3
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from _harness import CsmsThread, Daemon, database_path, kill_daemons_on_exit, median, tmpdir, write_config

from evsed.control.protocol import ControlError
from evsed.devcsms.server import Event
from evsed.store.db import Store

TX_ACTIONS = frozenset({"StartTransaction", "MeterValues", "StopTransaction"})
EXTRA = "MeterValueSampleInterval = 1"

LEDGER_SQL = """
CREATE TABLE IF NOT EXISTS bench_ledger (
    seq         INTEGER PRIMARY KEY,
    local_tx_id INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
);
CREATE TRIGGER IF NOT EXISTS bench_ledger_copy AFTER INSERT ON tx_queue BEGIN
    INSERT INTO bench_ledger (seq, local_tx_id, action, payload, created_at)
    VALUES (new.seq, new.local_tx_id, new.action, new.payload, new.created_at);
END;
"""


def install_ledger(db: Path) -> None:
    Store(db).close()  # the daemon's own migrations create the schema
    con = sqlite3.connect(db)
    try:
        con.executescript(LEDGER_SQL)
    finally:
        con.close()


def key_of(action: str, payload: dict[str, Any]) -> str:
    """Identity of a message: its action and payload, without the transactionId filled in at send time."""
    return action + json.dumps({k: v for k, v in payload.items() if k != "transactionId"}, sort_keys=True)


# --- the CSMS's durable log ----------------------------------------------------------------------------------
@dataclass
class Rx:
    conn: int
    unique_id: str
    action: str
    payload: dict[str, Any]
    at: float


@dataclass
class CsmsLog:
    """on_event of the DevCSMS (its thread). The bench process is never killed, so this outlives the kills."""

    file: TextIO
    connects: int = 0
    disconnects: int = 0
    calls: list[Rx] = field(default_factory=list)  # transaction CALLs received
    answered: dict[str, str] = field(default_factory=dict)  # unique id -> RESULT/ERROR sent
    start_ids: dict[str, int] = field(default_factory=dict)  # StartTransaction unique id -> transactionId
    last_call: dict[int, tuple[str, str]] = field(default_factory=dict)  # conn -> (unique id, action)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, ev: Event) -> None:
        with self.lock:
            if ev.kind == "CONNECT":
                self.connects += 1
            elif ev.kind == "DISCONNECT" and "rejected" not in ev.payload:
                self.disconnects += 1
            elif ev.direction == "in" and ev.kind == "CALL":
                self.last_call[self.connects] = (ev.unique_id, ev.action)
                if ev.action in TX_ACTIONS:
                    self.calls.append(Rx(self.connects, ev.unique_id, ev.action, ev.payload, time.time()))
            elif ev.direction == "out" and ev.kind in ("RESULT", "ERROR") and ev.action in TX_ACTIONS:
                self.answered[ev.unique_id] = ev.kind
                tx_id = ev.payload.get("transactionId")
                if ev.action == "StartTransaction" and isinstance(tx_id, int):
                    self.start_ids[ev.unique_id] = tx_id
            else:
                return
            rec = {"t": round(time.time(), 6), "conn": self.connects, "dir": ev.direction, "kind": ev.kind,
                   "action": ev.action, "id": ev.unique_id, "payload": ev.payload}
            self.file.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self.file.flush()


# --- charging activity -----------------------------------------------------------------------------------
@dataclass
class Stats:
    sessions: int = 0
    not_started: int = 0
    local_stops: int = 0
    unplug_stops: int = 0
    resumed: int = 0


class Driver(threading.Thread):
    """Short sessions on every connector, one control request at a time, until stopped or the daemon dies."""

    def __init__(self, d: Daemon, connectors: int, rng: random.Random, run: int, stats: Stats) -> None:
        super().__init__(daemon=True, name=f"driver-{run}")
        self.d = d
        self.connectors = range(1, connectors + 1)
        self.rng = rng
        self.run_no = run
        self.stats = stats
        self.halt = threading.Event()
        self.n = 0

    def run(self) -> None:
        with contextlib.suppress(ControlError, OSError):  # killed under us: expected
            self._loop()

    def _loop(self) -> None:
        ends: dict[int, float | None] = dict.fromkeys(self.connectors)
        tags: dict[int, str] = {}
        now = time.monotonic()
        next_start = {c: now + self.rng.uniform(0, 0.3) for c in self.connectors}
        # The sim may keep its EVs across a restart (sim-world.json): continue a resumed transaction, unplug an
        # EV left without one.
        for conn in self.d.ctl(cmd="status")["connectors"]:
            c = conn["id"]
            if conn["id_tag"] is not None:
                tags[c] = conn["id_tag"]
                ends[c] = now + self.rng.uniform(0.3, 3.0)
                self.stats.resumed += 1
            elif conn["pilot_state"] != "A":
                self._sim("unplug", connector=c)
        while not self.halt.is_set():
            now = time.monotonic()
            for c in self.connectors:
                end = ends[c]
                if end is not None and now >= end:
                    self._finish(c, tags[c])
                    ends[c] = None
                    next_start[c] = time.monotonic() + self.rng.uniform(0.05, 0.5)
            for c in self.connectors:
                if ends[c] is None and now >= next_start[c] and not self.halt.is_set():
                    self.n += 1
                    tags[c] = f"K{self.run_no:04d}C{c}S{self.n:03d}"
                    if self._start(c, tags[c]):
                        ends[c] = time.monotonic() + self.rng.uniform(0.3, 3.0)
                    else:
                        next_start[c] = time.monotonic() + 0.2
            self.halt.wait(0.02)

    def _sim(self, action: str, **kw: Any) -> None:
        self.d.ctl(cmd="sim", action=action, **kw)

    def _start(self, c: int, tag: str) -> bool:
        # Only this connector is plugged and free when the card is swiped, so the card lands here.
        self._sim("plug", connector=c)
        self._sim("swipe", id_tag=tag)
        end = time.monotonic() + 3.0
        while time.monotonic() < end and not self.halt.is_set():
            if self.d.ctl(cmd="status")["connectors"][c - 1]["id_tag"] == tag:
                self.stats.sessions += 1
                return True
            time.sleep(0.02)
        if not self.halt.is_set():
            self.stats.not_started += 1
            self._sim("unplug", connector=c)
        return False

    def _finish(self, c: int, tag: str) -> None:
        if self.rng.random() < 0.4:
            self._sim("swipe", id_tag=tag)  # stop with the card (Local), then the driver unplugs
            self.stats.local_stops += 1
            time.sleep(self.rng.uniform(0.05, 0.3))
        else:
            self.stats.unplug_stops += 1
        self._sim("unplug", connector=c)


# --- the loop --------------------------------------------------------------------------------------------
def start_daemon(tmp: Path, port: int, connectors: int, extra: str, label: str, retries: int = 8) -> Daemon:
    """Start and wait for Accepted; a daemon that cannot start is retried (others may be editing evsed/)."""
    for attempt in range(1, retries + 1):
        with (tmp / "daemon.log").open("a") as f:
            f.write(f"===== bench: {label} (attempt {attempt}) =====\n")
        d = Daemon(tmp, port, extra, connectors=connectors, log_level="info")
        try:
            d.wait_accepted(30)
            return d
        except (RuntimeError, TimeoutError) as exc:
            tail = "\n    ".join(str(exc).splitlines()[-6:])
            print(f"  daemon did not come up ({label}, attempt {attempt}/{retries}):\n    {tail}", file=sys.stderr)
            d.kill9()
            if attempt < retries:
                time.sleep(30)
    raise SystemExit(f"the daemon does not start; see {tmp / 'daemon.log'}")


def wait_disconnect(log: CsmsLog, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with log.lock:
            if log.disconnects >= log.connects:
                return
        time.sleep(0.005)
    raise TimeoutError("the CSMS did not see the killed daemon's connection close")


def drain(d: Daemon, timeout: float = 120.0) -> str | None:
    """Unplug every EV (ends resumed transactions), wait for an empty queue; a problem as text, else None."""
    def idle(s: dict[str, Any]) -> bool:
        return bool(s["ocpp"]["queued_transaction_messages"] == 0
                    and all(c["id_tag"] is None for c in s["connectors"]))

    try:
        for conn in d.ctl(cmd="status")["connectors"]:
            if conn["pilot_state"] != "A":
                d.ctl(cmd="sim", action="unplug", connector=conn["id"])
        d.wait(idle, timeout)
        time.sleep(2.0)  # anything re-sent or late would show up now
        d.wait(idle, timeout)
    except (TimeoutError, ControlError) as exc:
        return f"final drain did not complete: {exc}"
    return None


# --- the books -------------------------------------------------------------------------------------------
@dataclass
class Books:
    committed: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    lost: list[tuple[int, str, str]] = field(default_factory=list)  # (seq, action, payload)
    dup_window: int = 0
    dup_other: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    wrong_tx_id: list[str] = field(default_factory=list)
    order_violations: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def audit(db: Path, log: CsmsLog, csms_open: int) -> Books:
    b = Books()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        if con.execute("SELECT 1 FROM sqlite_master WHERE type='trigger' AND name='bench_ledger_copy'").fetchone() \
                is None:
            b.problems.append("the ledger trigger is gone (a migration rebuilt tx_queue?): the audit is incomplete")
        ledger = con.execute("SELECT seq, local_tx_id, action, payload FROM bench_ledger ORDER BY seq").fetchall()
        txs = {r["local_id"]: r for r in con.execute("SELECT * FROM transactions")}
        queued = con.execute("SELECT COUNT(*) FROM tx_queue").fetchone()[0]
    finally:
        con.close()

    by_key: dict[str, list[sqlite3.Row]] = defaultdict(list)
    for row in ledger:
        k = key_of(row["action"], json.loads(row["payload"]))
        by_key[k].append(row)
        b.committed[row["action"]] += 1
    copies: dict[str, list[Rx]] = defaultdict(list)
    for rx in log.calls:
        copies[key_of(rx.action, rx.payload)].append(rx)
        b.received[rx.action] += 1

    last_of_conn = {conn: uid for conn, (uid, _) in log.last_call.items()}
    for k, rows in by_key.items():
        got = copies.get(k, [])
        for row in rows[len(got):]:
            b.lost.append((row["seq"], row["action"], row["payload"]))
    for k, got in copies.items():
        n_committed = len(by_key.get(k, []))
        if n_committed == 0:
            b.unknown.append(f"{got[0].action} {got[0].payload}")
            continue
        for prev, again in zip(got[n_committed - 1:], got[n_committed:], strict=False):
            if last_of_conn.get(prev.conn) == prev.unique_id and again.conn > prev.conn:
                b.dup_window += 1
            else:
                b.dup_other.append(f"{again.action} {again.payload} (first on connection {prev.conn}, "
                                   f"again on {again.conn})")

    # transactionId: what the charger recorded for the transaction, i.e. the answer to its last Start.
    local_of = {k: rows[0]["local_tx_id"] for k, rows in by_key.items()}
    seq_of = {k: rows[0]["seq"] for k, rows in by_key.items()}
    for rx in log.calls:
        if rx.action == "StartTransaction":
            continue
        local = local_of.get(key_of(rx.action, rx.payload))
        if local is None:
            continue
        want = txs[local]["csms_tx_id"]
        if rx.payload.get("transactionId") != want or want is None:
            b.wrong_tx_id.append(f"{rx.action} of local transaction {local} carried transactionId "
                                 f"{rx.payload.get('transactionId')}, the charger recorded {want}")

    # Queue order: first arrivals must come in ledger (seq) order.
    seen: set[str] = set()
    last_seq = 0
    for rx in log.calls:
        k = key_of(rx.action, rx.payload)
        if k in seen or k not in seq_of:
            continue
        seen.add(k)
        if seq_of[k] < last_seq:
            b.order_violations += 1
        last_seq = max(last_seq, seq_of[k])

    # The transactions table against what the CSMS saw.
    starts = Counter(local_of[k] for k in copies if k.startswith("StartTransaction") and k in local_of)
    stops = Counter(local_of[k] for k in copies if k.startswith("StopTransaction") and k in local_of)
    no_start = [i for i in txs if starts[i] != 1]
    no_stop = [i for i, r in txs.items() if r["stopped_at"] is not None and stops[i] != 1]
    still_open = [i for i, r in txs.items() if r["stopped_at"] is None]
    if no_start:
        b.problems.append(f"{len(no_start)} transaction(s) without exactly one distinct StartTransaction at the "
                          f"CSMS: local ids {no_start[:10]}")
    if no_stop:
        b.problems.append(f"{len(no_stop)} stopped transaction(s) without exactly one distinct StopTransaction "
                          f"at the CSMS: local ids {no_stop[:10]}")
    if still_open:
        b.problems.append(f"{len(still_open)} transaction(s) still open after the final drain: {still_open[:10]}")
    if b.committed["StartTransaction"] != len(txs):
        b.problems.append(f"ledger has {b.committed['StartTransaction']} StartTransaction for {len(txs)} rows of "
                          "transactions")
    if b.committed["StopTransaction"] != sum(1 for r in txs.values() if r["stopped_at"] is not None):
        b.problems.append("ledger StopTransaction count differs from the stopped rows of transactions")
    if queued:
        b.problems.append(f"{queued} message(s) still in tx_queue after the final drain")
    reasons = Counter(str(r["stop_reason"]) for r in txs.values() if r["stopped_at"] is not None)
    b.notes.append("stop reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    b.notes.append(f"CSMS-side transactions never stopped (a re-sent StartTransaction gets a second id): "
                   f"{csms_open}")
    meter_bad, negative = _meter_consistency(ledger)
    if meter_bad:
        b.notes.append(f"warning: {len(meter_bad)} transaction(s) whose meterStop is below their last "
                       f"MeterValues reading: {meter_bad[:3]}")
    if negative:
        b.notes.append(f"warning: {len(negative)} transaction(s) with meterStop < meterStart (negative energy at "
                       f"the CSMS): {negative[:3]}")
    return b


def _meter_consistency(ledger: list[sqlite3.Row]) -> tuple[list[str], list[str]]:
    """Stops below the transaction's last MeterValues reading, and stops below its meterStart."""
    last_mv: dict[int, float] = {}
    start: dict[int, int] = {}
    bad: list[str] = []
    negative: list[str] = []
    for row in ledger:
        p = json.loads(row["payload"])
        if row["action"] == "StartTransaction":
            start[row["local_tx_id"]] = p["meterStart"]
        elif row["action"] == "MeterValues":
            for mv in p.get("meterValue", []):
                for sv in mv.get("sampledValue", []):
                    if sv.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register":
                        last_mv[row["local_tx_id"]] = float(sv["value"])
        elif row["action"] == "StopTransaction":
            mv_wh = last_mv.get(row["local_tx_id"])
            if mv_wh is not None and p["meterStop"] < int(mv_wh):
                bad.append(f"local {row['local_tx_id']}: meterStop {p['meterStop']} < {mv_wh} ({p.get('reason')})")
            begin = start.get(row["local_tx_id"])
            if begin is not None and p["meterStop"] < begin:
                negative.append(f"local {row['local_tx_id']}: meterStart {begin}, meterStop {p['meterStop']} "
                                f"({p.get('reason')})")
    return bad, negative


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=200, help="kill -9 iterations (default 200)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    ap.add_argument("--connectors", type=int, default=2, help="connectors with sessions (default 2)")
    ap.add_argument("--max-delay", type=float, default=3.0, metavar="S",
                    help="kill uniformly 0..S seconds after the activity began (default 3)")
    ap.add_argument("--no-resume", action="store_true",
                    help="[system] resume_transactions = false: a restart closes open transactions (PowerLoss) "
                         "even when the sim EV is still plugged")
    args = ap.parse_args()
    # config_text puts `extra` into [ocpp.config]; a [system] table after it ends at [hardware].
    extra = EXTRA + ("\n[system]\nresume_transactions = false" if args.no_resume else "")
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    rng = random.Random(seed)
    kill_daemons_on_exit()

    tmp = tmpdir()
    log_file = (tmp / "csms-log.jsonl").open("a")
    log = CsmsLog(log_file)
    csms = CsmsThread(on_event=log)
    db = database_path(write_config(tmp, csms.port, extra, args.connectors))
    install_ledger(db)
    print(f"chaos: {args.kills} kills, seed {seed}, {args.connectors} connector(s), "
          f"{'no resume' if args.no_resume else 'default resume policy'}, run dir {tmp}", flush=True)

    stats = Stats()
    delays: list[float] = []
    in_flight = 0  # kills whose connection's last CALL was a transaction message (in flight or answer window)
    started = time.monotonic()
    d: Daemon | None = None
    try:
        for k in range(1, args.kills + 1):
            d = start_daemon(tmp, csms.port, args.connectors, extra, f"run {k}")
            driver = Driver(d, args.connectors, rng, k, stats)
            delay = rng.uniform(0, args.max_delay)
            driver.start()
            time.sleep(delay)
            d.kill9()
            driver.halt.set()
            driver.join(10)
            wait_disconnect(log)
            delays.append(delay)
            with log.lock:
                last = log.last_call.get(log.connects)
            if last is not None and last[1] in TX_ACTIONS:
                in_flight += 1
            if k % 10 == 0 or k == args.kills:
                print(f"  {k} kills, {stats.sessions} sessions, {len(log.calls)} transaction messages received, "
                      f"{time.monotonic() - started:.0f} s", flush=True)
        d = start_daemon(tmp, csms.port, args.connectors, extra, "final drain")
        drain_problem = drain(d)
        d.stop()
        d = None
    finally:
        if d is not None:
            d.kill9()
        csms.stop()
        log_file.close()
    wall = time.monotonic() - started

    b = audit(db, log, sum(1 for t in csms.csms.transactions.values() if t.active))
    if drain_problem:
        b.problems.insert(0, drain_problem)
    n_lost = len(b.lost)
    n_dup = b.dup_window + len(b.dup_other)
    print(f"kills done: {args.kills} (delay median {median(delays):.2f} s) in {wall:.0f} s wall; "
          f"{in_flight} kills came with a transaction message as the last CALL on the connection (in flight, "
          "in its answer window, or already recorded)")
    print(f"sessions: {stats.sessions} started by the driver ({stats.not_started} swipes without a start), "
          f"{stats.local_stops} card stops, {stats.unplug_stops} unplug stops, {stats.resumed} resumed after a "
          "restart; "
          f"transactions created by the charger: {b.committed['StartTransaction']}")
    print("messages committed (ledger): " + ", ".join(f"{a} {b.committed[a]}" for a in sorted(TX_ACTIONS))
          + f"; total {sum(b.committed.values())}")
    print("messages received (CSMS):    " + ", ".join(f"{a} {b.received[a]}" for a in sorted(TX_ACTIONS))
          + f"; total {sum(b.received.values())}")
    print(f"LOST: {n_lost}   DUPLICATED: {n_dup} ({b.dup_window} re-sent after a kill in the answer window, "
          f"{len(b.dup_other)} other)")
    for note in b.notes:
        print(f"  {note}")
    failed = False
    for seq, action, payload in b.lost[:10]:
        print(f"  lost: seq {seq} {action} {payload}")
    for label, items in (("duplicate outside the answer window", b.dup_other), ("received, never committed",
                         b.unknown), ("wrong transactionId", b.wrong_tx_id), ("problem", b.problems)):
        for item in items[:10]:
            print(f"  {label}: {item}")
        if len(items) > 10:
            print(f"  ... {len(items) - 10} more ({label})")
        failed = failed or bool(items)
    if b.order_violations:
        print(f"  {b.order_violations} message(s) arrived out of queue order")
    print(f"(daemon log: {tmp / 'daemon.log'}; CSMS log: {tmp / 'csms-log.jsonl'}; database: {db})")
    if n_lost or failed or b.order_violations:
        print("FAIL")
        return 1
    print("OK: nothing lost" + (", no duplicates" if not n_dup else ", only answer-window re-sends"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
