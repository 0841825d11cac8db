"""The SQLite store (evsed.store.db): migrations, transactions, the transaction-message queue, durability."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from evsed.core.authorization import IdTagInfo
from evsed.store.db import QueuedMessage, Store, TransactionRow, migrations

T0 = "2024-05-01T12:00:00.000Z"
T1 = "2024-05-01T12:01:00.000Z"
T2 = "2024-05-01T12:02:00.000Z"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "evsed.sqlite3"  # the parent directory does not exist yet


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    yield s
    s.close()


def start_payload(connector: int = 1, tag: str = "TAG", meter: int = 100) -> dict[str, object]:
    return {"connectorId": connector, "idTag": tag, "meterStart": meter, "timestamp": T0}


def drain(store: Store) -> list[QueuedMessage]:
    out = []
    while (head := store.queue_head()) is not None:
        out.append(head)
        store.message_delivered(head.seq)
    return out


# --- migrations ---------------------------------------------------------------------------------------------
def test_migrations_are_numbered_and_sorted() -> None:
    found = migrations()
    assert found, "no migrations bundled"
    numbers = [n for n, _ in found]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)
    assert numbers[0] == 1


def test_schema_version_is_highest_migration(store: Store, db_path: Path) -> None:
    assert db_path.exists()
    highest = max(n for n, _ in migrations())
    assert store.schema_version == highest
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == highest
    tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"transactions", "tx_queue", "config_keys", "meter_registers", "daemon_state"} <= tables


def test_migrations_idempotent_on_reopen(store: Store, db_path: Path) -> None:
    store.begin_transaction(1, "TAG", 100.0, T0, start_payload())
    store.save_config_key("HeartbeatInterval", "60")
    version = store.schema_version
    store.close()
    for _ in range(3):
        again = Store(db_path)
        assert again.schema_version == version
        assert again.queue_length() == 1
        assert again.load_config_keys() == {"HeartbeatInterval": "60"}
        again.close()


def test_memory_store() -> None:
    s = Store(":memory:")
    assert s.schema_version == max(n for n, _ in migrations())
    s.close()


# --- pragmas ------------------------------------------------------------------------------------------------
def test_wal_and_synchronous_full(store: Store) -> None:
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_wal_persists_in_the_file(store: Store, db_path: Path) -> None:
    store.close()
    again = Store(db_path)
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    again.close()


# --- transactions -------------------------------------------------------------------------------------------
def test_begin_transaction_records_and_queues(store: Store) -> None:
    payload = start_payload()
    local_id = store.begin_transaction(1, "TAG", 100.0, T0, payload)
    assert local_id >= 1
    row = store.transaction(local_id)
    assert row == TransactionRow(local_id, 1, "TAG", 100.0, T0, None, 100.0, None)
    assert store.open_transactions() == [row]
    head = store.queue_head()
    assert head is not None
    assert (head.local_tx_id, head.action, head.payload, head.attempts) == (local_id, "StartTransaction", payload, 0)
    assert store.queue_length() == 1


def test_full_transaction_queue_order(store: Store) -> None:
    local_id = store.begin_transaction(1, "TAG", 100.0, T0, start_payload())
    mv1 = {"connectorId": 1, "meterValue": [{"timestamp": T1, "sampledValue": [{"value": "150"}]}]}
    mv2 = {"connectorId": 1, "meterValue": [{"timestamp": T1, "sampledValue": [{"value": "175"}]}]}
    store.add_meter_values(local_id, 150.0, mv1, T1)
    store.add_meter_values(local_id, 175.0, mv2, T1)
    assert store.transaction(local_id).last_meter_wh == 175.0  # type: ignore[union-attr]
    stop = {"meterStop": 200, "timestamp": T2, "reason": "Local", "idTag": "TAG"}
    store.end_transaction(local_id, 200.0, T2, "Local", "TAG", stop)
    row = store.transaction(local_id)
    assert row is not None
    assert row.stopped_at == T2 and row.last_meter_wh == 200.0
    assert store.open_transactions() == []
    assert store.queue_length() == 4
    sent = drain(store)
    assert [m.action for m in sent] == ["StartTransaction", "MeterValues", "MeterValues", "StopTransaction"]
    assert [m.payload for m in sent[1:]] == [mv1, mv2, stop]
    assert [m.seq for m in sent] == sorted(m.seq for m in sent)
    assert store.queue_length() == 0


def test_stop_columns(store: Store) -> None:
    local_id = store.begin_transaction(2, "TAG", 0.0, T0, start_payload(2))
    store.end_transaction(local_id, 10.0, T1, "EVDisconnected", None, {"meterStop": 10, "timestamp": T1,
                                                                       "reason": "EVDisconnected"})
    r = store._db.execute("SELECT meter_stop_wh, stop_reason, stop_id_tag FROM transactions WHERE local_id = ?",
                          (local_id,)).fetchone()
    assert tuple(r) == (10.0, "EVDisconnected", None)


def test_interleaved_transactions_keep_global_order(store: Store) -> None:
    a = store.begin_transaction(1, "A", 0.0, T0, start_payload(1, "A"))
    b = store.begin_transaction(2, "B", 0.0, T0, start_payload(2, "B"))
    store.end_transaction(a, 5.0, T1, "Local", "A", {"meterStop": 5, "timestamp": T1, "reason": "Local"})
    store.add_meter_values(b, 3.0, {"connectorId": 2, "meterValue": []}, T1)
    sent = drain(store)
    assert [(m.local_tx_id, m.action) for m in sent] == [(a, "StartTransaction"), (b, "StartTransaction"),
                                                         (a, "StopTransaction"), (b, "MeterValues")]
    assert [r.local_id for r in store.open_transactions()] == [b]


def test_open_transactions_ordered(store: Store) -> None:
    ids = [store.begin_transaction(c, f"T{c}", 0.0, T0, start_payload(c)) for c in (3, 1, 2)]
    assert [r.local_id for r in store.open_transactions()] == ids
    assert [r.connector for r in store.open_transactions()] == [3, 1, 2]


def test_unknown_transaction(store: Store) -> None:
    assert store.transaction(999) is None
    assert store.find_by_csms_id(4242) is None
    assert store.queue_head() is None


def test_queue_rejects_unknown_transaction_reference(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store.add_meter_values(12345, 1.0, {}, T0)
    assert store.queue_length() == 0  # the failed commit was rolled back


# --- delivery -----------------------------------------------------------------------------------------------
def test_message_delivered_records_csms_id(store: Store) -> None:
    local_id = store.begin_transaction(1, "TAG", 100.0, T0, start_payload())
    head = store.queue_head()
    assert head is not None
    store.message_delivered(head.seq, local_id, 4242, "Accepted")
    assert store.queue_length() == 0
    row = store.transaction(local_id)
    assert row is not None and row.csms_tx_id == 4242
    assert store.find_by_csms_id(4242) == row
    status = store._db.execute("SELECT start_status FROM transactions WHERE local_id = ?", (local_id,)).fetchone()
    assert status[0] == "Accepted"


def test_message_delivered_without_csms_id_keeps_row(store: Store) -> None:
    local_id = store.begin_transaction(1, "TAG", 100.0, T0, start_payload())
    head = store.queue_head()
    assert head is not None
    store.message_delivered(head.seq)
    assert store.transaction(local_id).csms_tx_id is None  # type: ignore[union-attr]


def test_find_by_csms_id_prefers_newest(store: Store) -> None:
    first = store.begin_transaction(1, "A", 0.0, T0, start_payload())
    second = store.begin_transaction(1, "B", 0.0, T1, start_payload())
    for local_id in (first, second):
        head = store.queue_head()
        assert head is not None and head.local_tx_id == local_id
        store.message_delivered(head.seq, local_id, 7, "Accepted")  # a CSMS that reuses ids
    assert store.find_by_csms_id(7).local_id == second  # type: ignore[union-attr]


def test_message_failed_counts_attempts(store: Store) -> None:
    store.begin_transaction(1, "TAG", 0.0, T0, start_payload())
    head = store.queue_head()
    assert head is not None
    assert store.message_failed(head.seq) == 1
    assert store.message_failed(head.seq) == 2
    assert store.queue_head().attempts == 2  # type: ignore[union-attr]
    assert store.message_failed(head.seq) == 3
    store.drop_message(head.seq)
    assert store.queue_length() == 0
    assert store.message_failed(head.seq) == 0  # gone


# --- durability ---------------------------------------------------------------------------------------------
def test_everything_survives_close_and_reopen(store: Store, db_path: Path) -> None:
    done = store.begin_transaction(1, "DONE", 0.0, T0, start_payload(1, "DONE"))
    head = store.queue_head()
    assert head is not None
    store.message_delivered(head.seq, done, 11, "Accepted")
    store.end_transaction(done, 50.0, T1, "Local", "DONE", {"meterStop": 50, "timestamp": T1, "reason": "Local"})
    running = store.begin_transaction(2, "RUN", 5.0, T1, start_payload(2, "RUN"))
    store.add_meter_values(running, 7.0, {"connectorId": 2, "meterValue": []}, T2)
    head = store.queue_head()
    assert head is not None
    store.message_failed(head.seq)
    store.save_config_key("HeartbeatInterval", "60")
    store.save_config_key("HeartbeatInterval", "90")
    store.save_meter_register(1, 1234.5)
    store.save_meter_register(1, 1240.0)
    store.set_state("clean_shutdown", "no")
    queue_before = [(m.action, m.payload, m.attempts) for m in _peek_all(store)]
    store.close()

    again = Store(db_path)
    try:
        assert [(m.action, m.payload, m.attempts) for m in _peek_all(again)] == queue_before
        assert [r.local_id for r in again.open_transactions()] == [running]
        assert again.transaction(running).last_meter_wh == 7.0  # type: ignore[union-attr]
        assert again.find_by_csms_id(11).local_id == done  # type: ignore[union-attr]
        assert again.load_config_keys() == {"HeartbeatInterval": "90"}
        assert again.meter_registers() == {1: 1240.0}
        assert again.get_state("clean_shutdown") == "no"
        assert again.get_state("missing") is None
        # New rows continue the sequences.
        assert again.begin_transaction(1, "NEW", 0.0, T2, start_payload()) > running
    finally:
        again.close()


def test_committed_data_visible_to_a_second_connection(store: Store, db_path: Path) -> None:
    # Every write is committed at once (autocommit / explicit COMMIT): another reader sees it immediately.
    store.begin_transaction(1, "TAG", 0.0, T0, start_payload())
    other = Store(db_path)
    try:
        assert other.queue_length() == 1
        assert len(other.open_transactions()) == 1
    finally:
        other.close()


def _peek_all(store: Store) -> list[QueuedMessage]:
    rows = store._db.execute("SELECT seq FROM tx_queue ORDER BY seq").fetchall()
    out = []
    for (seq,) in rows:
        r = store._db.execute("SELECT * FROM tx_queue WHERE seq = ?", (seq,)).fetchone()
        out.append(QueuedMessage(r["seq"], r["local_tx_id"], r["action"], json.loads(r["payload"]), r["attempts"]))
    return out


# --- small key/value tables -----------------------------------------------------------------------------------
def test_config_keys_upsert(store: Store) -> None:
    assert store.load_config_keys() == {}
    store.save_config_key("A", "1")
    store.save_config_key("B", "2")
    store.save_config_key("A", "3")
    assert store.load_config_keys() == {"A": "3", "B": "2"}


def test_state_upsert(store: Store) -> None:
    store.set_state("k", "v1")
    store.set_state("k", "v2")
    assert store.get_state("k") == "v2"


# --- authorization cache --------------------------------------------------------------------------------------
def test_auth_cache_table_exists_after_migration(store: Store) -> None:
    tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "auth_cache" in tables
    indexes = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "auth_cache_updated" in indexes


def test_auth_cache_put_get_roundtrip(store: Store) -> None:
    assert store.auth_cache_get("TAG") is None
    assert store.auth_cache_size() == 0
    store.auth_cache_put("TAG", IdTagInfo("Accepted", 1_800_000_000.5, "PARENT"), 100.0, 10)
    store.auth_cache_put("OTHER", IdTagInfo("Blocked"), 101.0, 10)
    assert store.auth_cache_get("TAG") == IdTagInfo("Accepted", 1_800_000_000.5, "PARENT")
    assert store.auth_cache_get("OTHER") == IdTagInfo("Blocked", None, None)
    assert store.auth_cache_size() == 2


def test_auth_cache_is_case_insensitive_and_upserts(store: Store) -> None:
    store.auth_cache_put("abc", IdTagInfo("Accepted", None, "P1"), 100.0, 10)
    assert store.auth_cache_get("ABC") == IdTagInfo("Accepted", None, "P1")
    store.auth_cache_put("ABC", IdTagInfo("Blocked"), 101.0, 10)
    assert store.auth_cache_size() == 1
    # The update replaces every field, the parent and the expiry too.
    assert store.auth_cache_get("abc") == IdTagInfo("Blocked")
    assert tuple(store._db.execute("SELECT id_tag, updated_at FROM auth_cache").fetchone()) == ("ABC", 101.0)


def test_auth_cache_evicts_oldest_beyond_max(store: Store) -> None:
    for i, tag in enumerate(["A", "B", "C"]):
        store.auth_cache_put(tag, IdTagInfo("Accepted"), 100.0 + i, 3)
    store.auth_cache_put("A", IdTagInfo("Accepted"), 110.0, 3)  # refreshed: B is now the oldest
    store.auth_cache_put("D", IdTagInfo("Accepted"), 111.0, 3)
    assert store.auth_cache_size() == 3
    assert store.auth_cache_get("B") is None
    assert all(store.auth_cache_get(t) is not None for t in ("A", "C", "D"))


def test_auth_cache_evicts_not_valid_entries_first(store: Store) -> None:
    store.auth_cache_put("OLD_OK", IdTagInfo("Accepted"), 100.0, 3)
    store.auth_cache_put("BLOCKED", IdTagInfo("Blocked"), 101.0, 3)
    store.auth_cache_put("RUN_OUT", IdTagInfo("Accepted", expiry=150.0), 102.0, 3)  # expired by t=200
    store.auth_cache_put("NEW1", IdTagInfo("Accepted"), 200.0, 3)
    assert store.auth_cache_get("BLOCKED") is None  # NOT-valid goes before the older valid OLD_OK
    assert store.auth_cache_get("OLD_OK") is not None
    store.auth_cache_put("NEW2", IdTagInfo("ConcurrentTx"), 201.0, 3)
    assert store.auth_cache_get("RUN_OUT") is None  # expired counts as NOT-valid
    store.auth_cache_put("NEW3", IdTagInfo("Accepted"), 202.0, 3)
    assert store.auth_cache_get("OLD_OK") is None  # then the oldest valid
    assert {r[0] for r in store._db.execute("SELECT id_tag FROM auth_cache")} == {"NEW1", "NEW2", "NEW3"}


def test_auth_cache_never_evicts_the_entry_being_put(store: Store) -> None:
    store.auth_cache_put("A", IdTagInfo("Accepted"), 100.0, 1)
    # Older timestamp and NOT-valid, yet it is the new data the space is made for.
    store.auth_cache_put("B", IdTagInfo("Invalid"), 50.0, 1)
    assert store.auth_cache_size() == 1
    assert store.auth_cache_get("B") == IdTagInfo("Invalid")


def test_auth_cache_clear(store: Store) -> None:
    assert store.auth_cache_clear() == 0
    store.auth_cache_put("A", IdTagInfo("Accepted"), 100.0, 10)
    store.auth_cache_put("B", IdTagInfo("Blocked"), 100.0, 10)
    assert store.auth_cache_clear() == 2
    assert store.auth_cache_size() == 0
    assert store.auth_cache_get("A") is None


def test_auth_cache_survives_close_and_reopen(store: Store, db_path: Path) -> None:
    store.auth_cache_put("Card1", IdTagInfo("Accepted", 1_900_000_000.0, "GROUP"), 100.0, 10)
    store.auth_cache_put("card2", IdTagInfo("Blocked"), 101.0, 10)
    store.close()
    again = Store(db_path)
    try:
        assert again.auth_cache_size() == 2
        assert again.auth_cache_get("CARD1") == IdTagInfo("Accepted", 1_900_000_000.0, "GROUP")
        assert again.auth_cache_get("CARD2") == IdTagInfo("Blocked")
    finally:
        again.close()


def test_auth_cache_migration_keeps_existing_data(db_path: Path) -> None:
    # A database from before the cache existed (user_version 2) gains the table and keeps its rows.
    db_path.parent.mkdir(parents=True)
    db = sqlite3.connect(str(db_path), isolation_level=None)
    for number, sql in migrations():
        if number > 2:
            break
        for statement in sql.split(";\n"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={number}")
    db.execute("INSERT INTO config_keys (name, value) VALUES ('HeartbeatInterval', '60')")
    db.close()
    upgraded = Store(db_path)
    try:
        assert upgraded.schema_version >= 3
        assert upgraded.load_config_keys() == {"HeartbeatInterval": "60"}
        assert upgraded.auth_cache_size() == 0
    finally:
        upgraded.close()
