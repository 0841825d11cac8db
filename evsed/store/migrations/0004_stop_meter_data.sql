-- Meter values collected for StopTransaction.transactionData (StopTxnSampledData / StopTxnAlignedData,
-- Transaction.Begin): kept here so a StopTransaction built after a crash still carries them. Rows go away
-- when the StopTransaction that carries them is queued.
CREATE TABLE stop_meter_data (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    local_tx_id INTEGER NOT NULL REFERENCES transactions (local_id),
    meter_value TEXT    NOT NULL   -- one OCPP MeterValue object (JSON)
);
CREATE INDEX stop_meter_data_tx ON stop_meter_data (local_tx_id, id);

-- The parentIdTag the CSMS gave for the transaction's idTag: a card of the same group may stop it, also after
-- a restart that resumed the transaction.
ALTER TABLE transactions ADD COLUMN parent_id_tag TEXT
