"""The one SQLite database for all persistent state, with numbered migrations.

Durability rule: anything that reports a transaction is committed (WAL, synchronous=FULL) before the
message that reports it is sent, so ``kill -9`` or a power cut loses nothing.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from evsed.core.authorization import IdTagInfo


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    seq: int
    local_tx_id: int
    action: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class TransactionRow:
    local_id: int
    connector: int
    id_tag: str
    meter_start_wh: float
    started_at: str
    csms_tx_id: int | None
    last_meter_wh: float
    stopped_at: str | None
    last_meter_at: str | None = None
    parent_id_tag: str | None = None


def migrations() -> list[tuple[int, str]]:
    folder = resources.files("evsed.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(found)


class Store:
    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        current = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, sql in migrations():
            if number <= current:
                continue
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in sql.split(";\n"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={number}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    # --- configuration keys -------------------------------------------------------------------------------
    def load_config_keys(self) -> dict[str, str]:
        return {r["name"]: r["value"] for r in self._db.execute("SELECT name, value FROM config_keys")}

    def save_config_key(self, name: str, value: str) -> None:
        self._db.execute("INSERT INTO config_keys (name, value) VALUES (?, ?) "
                         "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))

    # --- transactions -------------------------------------------------------------------------------------
    def begin_transaction(self, connector: int, id_tag: str, meter_start_wh: float, started_at: str,
                          payload: dict[str, Any]) -> int:
        """Record a new transaction and queue its StartTransaction in one commit."""
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO transactions (connector, id_tag, meter_start_wh, started_at, last_meter_wh) "
                "VALUES (?, ?, ?, ?, ?)", (connector, id_tag, meter_start_wh, started_at, meter_start_wh))
            local_id = int(cur.lastrowid or 0)
            self._enqueue(local_id, "StartTransaction", payload, started_at)
        return local_id

    def add_meter_values(self, local_id: int, energy_wh: float, payload: dict[str, Any], at: str) -> None:
        with self._tx():
            self._record_meter(local_id, energy_wh, at)
            self._enqueue(local_id, "MeterValues", payload, at)

    def touch_transaction(self, local_id: int, energy_wh: float, at: str) -> None:
        """Last known register and time of a running transaction (clean shutdown, periodic persistence)."""
        with self._tx():
            self._record_meter(local_id, energy_wh, at)

    def _record_meter(self, local_id: int, energy_wh: float, at: str) -> None:
        self._db.execute("UPDATE transactions SET last_meter_wh = ?, last_meter_at = ? WHERE local_id = ?",
                         (energy_wh, at, local_id))

    def end_transaction(self, local_id: int, meter_stop_wh: float, stopped_at: str, reason: str,
                        stop_id_tag: str | None, payload: dict[str, Any]) -> None:
        with self._tx():
            self._db.execute(
                "UPDATE transactions SET meter_stop_wh = ?, stopped_at = ?, stop_reason = ?, stop_id_tag = ?, "
                "last_meter_wh = ? WHERE local_id = ?",
                (meter_stop_wh, stopped_at, reason, stop_id_tag, meter_stop_wh, local_id))
            self._enqueue(local_id, "StopTransaction", payload, stopped_at)
            self._db.execute("DELETE FROM stop_meter_data WHERE local_tx_id = ?", (local_id,))

    def set_transaction_parent(self, local_id: int, parent_id_tag: str | None) -> None:
        self._db.execute("UPDATE transactions SET parent_id_tag = ? WHERE local_id = ?", (parent_id_tag, local_id))

    def open_transactions(self) -> list[TransactionRow]:
        rows = self._db.execute("SELECT * FROM transactions WHERE stopped_at IS NULL ORDER BY local_id")
        return [self._row(r) for r in rows]

    def transaction(self, local_id: int) -> TransactionRow | None:
        r = self._db.execute("SELECT * FROM transactions WHERE local_id = ?", (local_id,)).fetchone()
        return self._row(r) if r else None

    def find_by_csms_id(self, csms_tx_id: int) -> TransactionRow | None:
        r = self._db.execute("SELECT * FROM transactions WHERE csms_tx_id = ? ORDER BY local_id DESC",
                             (csms_tx_id,)).fetchone()
        return self._row(r) if r else None

    @staticmethod
    def _row(r: sqlite3.Row) -> TransactionRow:
        return TransactionRow(r["local_id"], r["connector"], r["id_tag"], r["meter_start_wh"], r["started_at"],
                              r["csms_tx_id"], r["last_meter_wh"], r["stopped_at"], r["last_meter_at"],
                              r["parent_id_tag"])

    # --- the outgoing transaction-message queue -----------------------------------------------------------
    def _enqueue(self, local_id: int, action: str, payload: dict[str, Any], at: str) -> None:
        self._db.execute("INSERT INTO tx_queue (local_tx_id, action, payload, created_at) VALUES (?, ?, ?, ?)",
                         (local_id, action, json.dumps(payload, separators=(",", ":")), at))

    def queue_head(self) -> QueuedMessage | None:
        r = self._db.execute("SELECT * FROM tx_queue ORDER BY seq LIMIT 1").fetchone()
        if r is None:
            return None
        return QueuedMessage(r["seq"], r["local_tx_id"], r["action"], json.loads(r["payload"]), r["attempts"])

    def last_queued_seq(self) -> int:
        """The newest queued message's sequence number (0 when the queue is empty)."""
        return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM tx_queue").fetchone()[0])

    def queue_length(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM tx_queue").fetchone()[0])

    def message_delivered(self, seq: int, local_tx_id: int | None = None, csms_tx_id: int | None = None,
                          start_status: str | None = None) -> None:
        """Remove an answered message; for StartTransaction also record the CSMS transactionId (one commit)."""
        with self._tx():
            if local_tx_id is not None and csms_tx_id is not None:
                self._db.execute("UPDATE transactions SET csms_tx_id = ?, start_status = ? WHERE local_id = ?",
                                 (csms_tx_id, start_status, local_tx_id))
            self._db.execute("DELETE FROM tx_queue WHERE seq = ?", (seq,))

    def message_failed(self, seq: int) -> int:
        with self._tx():
            self._db.execute("UPDATE tx_queue SET attempts = attempts + 1 WHERE seq = ?", (seq,))
            r = self._db.execute("SELECT attempts FROM tx_queue WHERE seq = ?", (seq,)).fetchone()
        return int(r[0]) if r else 0

    def drop_message(self, seq: int) -> None:
        self._db.execute("DELETE FROM tx_queue WHERE seq = ?", (seq,))

    # --- meter values for StopTransaction.transactionData --------------------------------------------------
    def add_stop_meter_value(self, local_id: int, meter_value: dict[str, Any]) -> int:
        """Append one MeterValue for the transaction's StopTransaction; returns how many it now has."""
        with self._tx():
            self._db.execute("INSERT INTO stop_meter_data (local_tx_id, meter_value) VALUES (?, ?)",
                             (local_id, json.dumps(meter_value, separators=(",", ":"))))
            r = self._db.execute("SELECT COUNT(*) FROM stop_meter_data WHERE local_tx_id = ?", (local_id,)).fetchone()
        return int(r[0])

    def stop_meter_values(self, local_id: int) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT meter_value FROM stop_meter_data WHERE local_tx_id = ? ORDER BY id",
                                (local_id,))
        return [json.loads(r[0]) for r in rows]

    def replace_stop_meter_values(self, local_id: int, meter_values: list[dict[str, Any]]) -> None:
        """Thinned-out list (StopTransactionMaxMeterValues), in one commit."""
        with self._tx():
            self._db.execute("DELETE FROM stop_meter_data WHERE local_tx_id = ?", (local_id,))
            self._db.executemany("INSERT INTO stop_meter_data (local_tx_id, meter_value) VALUES (?, ?)",
                                 [(local_id, json.dumps(mv, separators=(",", ":"))) for mv in meter_values])

    # --- meter registers ----------------------------------------------------------------------------------
    def save_meter_register(self, connector: int, energy_wh: float) -> None:
        self._db.execute("INSERT INTO meter_registers (connector, energy_wh) VALUES (?, ?) "
                         "ON CONFLICT (connector) DO UPDATE SET energy_wh = excluded.energy_wh",
                         (connector, energy_wh))

    def last_transaction_meters(self) -> dict[int, float]:
        """Per connector, the highest meter value any transaction recorded."""
        return {r[0]: r[1] for r in self._db.execute(
            "SELECT connector, MAX(last_meter_wh) FROM transactions GROUP BY connector")}

    def meter_registers(self) -> dict[int, float]:
        return {r[0]: r[1] for r in self._db.execute("SELECT connector, energy_wh FROM meter_registers")}

    # --- daemon facts -------------------------------------------------------------------------------------
    def get_state(self, key: str) -> str | None:
        r = self._db.execute("SELECT value FROM daemon_state WHERE key = ?", (key,)).fetchone()
        return str(r[0]) if r else None

    def set_state(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO daemon_state (key, value) VALUES (?, ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # --- authorization cache ------------------------------------------------------------------------------
    def auth_cache_get(self, id_tag: str) -> IdTagInfo | None:
        r = self._db.execute("SELECT status, expiry, parent_id_tag FROM auth_cache WHERE id_tag = ?",
                             (id_tag,)).fetchone()
        return IdTagInfo(r["status"], r["expiry"], r["parent_id_tag"]) if r else None

    def auth_cache_put(self, id_tag: str, info: IdTagInfo, updated_at: float, max_entries: int) -> None:
        """Upsert one entry; when over max_entries, evict NOT-valid entries first, then the oldest (3.5.1)."""
        with self._tx():
            self._db.execute(
                "INSERT INTO auth_cache (id_tag, status, expiry, parent_id_tag, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id_tag) DO UPDATE SET id_tag = excluded.id_tag, status = excluded.status, "
                "expiry = excluded.expiry, parent_id_tag = excluded.parent_id_tag, updated_at = excluded.updated_at",
                (id_tag, info.status, info.expiry, info.parent_id_tag, updated_at))
            excess = int(self._db.execute("SELECT COUNT(*) FROM auth_cache").fetchone()[0]) - max_entries
            if excess > 0:
                # The entry just received is what the space is made for, so it is never the one evicted.
                self._db.execute(
                    "DELETE FROM auth_cache WHERE rowid IN (SELECT rowid FROM auth_cache WHERE id_tag <> ? "
                    "ORDER BY (status IN ('Accepted', 'ConcurrentTx') AND (expiry IS NULL OR expiry > ?)), "
                    "updated_at, rowid LIMIT ?)", (id_tag, updated_at, excess))

    def auth_cache_clear(self) -> int:
        return int(self._db.execute("DELETE FROM auth_cache").rowcount)

    def auth_cache_size(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM auth_cache").fetchone()[0])

    # --- charging profiles --------------------------------------------------------------------------------
    def charging_profiles(self) -> list[tuple[int, dict[str, Any]]]:
        """(connectorId, csChargingProfiles) in install order."""
        return [(int(r[0]), json.loads(r[1]))
                for r in self._db.execute("SELECT connector_id, profile FROM charging_profiles ORDER BY seq")]

    def replace_charging_profiles(self, rows: list[tuple[int, dict[str, Any]]]) -> None:
        """The whole installed set at once: a handful of rows, and one commit keeps install order exact."""
        with self._tx():
            self._db.execute("DELETE FROM charging_profiles")
            self._db.executemany("INSERT INTO charging_profiles (connector_id, profile) VALUES (?, ?)",
                                 [(cid, json.dumps(p, separators=(",", ":"))) for cid, p in rows])

    # --- helpers ------------------------------------------------------------------------------------------
    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
