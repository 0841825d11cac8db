-- Transactions as the charge point knows them; csms_tx_id arrives with StartTransaction.conf.
CREATE TABLE transactions (
    local_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    connector       INTEGER NOT NULL,
    id_tag          TEXT    NOT NULL,
    meter_start_wh  REAL    NOT NULL,
    started_at      TEXT    NOT NULL,   -- ISO 8601 UTC, as sent in StartTransaction.req
    csms_tx_id      INTEGER,
    start_status    TEXT,               -- idTagInfo.status of StartTransaction.conf
    last_meter_wh   REAL    NOT NULL,   -- last register seen; a PowerLoss stop after a crash uses it
    meter_stop_wh   REAL,
    stopped_at      TEXT,
    stop_reason     TEXT,
    stop_id_tag     TEXT
);
CREATE INDEX transactions_open ON transactions (connector) WHERE stopped_at IS NULL;

-- Outgoing transaction messages, in order; a row leaves only when the CSMS answered it.
-- The payload lacks transactionId: it is filled in at send time from transactions.csms_tx_id,
-- so messages of a transaction started offline carry the id the CSMS assigned later.
CREATE TABLE tx_queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    local_tx_id INTEGER NOT NULL REFERENCES transactions (local_id),
    action      TEXT    NOT NULL CHECK (action IN ('StartTransaction', 'MeterValues', 'StopTransaction')),
    payload     TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT    NOT NULL
);

-- OCPP configuration keys changed by the CSMS (OCPP string form).
CREATE TABLE config_keys (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Last energy register per connector, so a meter that restarts (the sim) continues where it was.
CREATE TABLE meter_registers (
    connector INTEGER PRIMARY KEY,
    energy_wh REAL NOT NULL
);

-- Small facts about the daemon itself, e.g. whether the last run ended cleanly.
CREATE TABLE daemon_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
