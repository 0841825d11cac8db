-- When last_meter_wh was recorded: a transaction closed after a crash (PowerLoss) is stamped with the last
-- moment the charge point is known to have been alive, not with the time it came back.
ALTER TABLE transactions ADD COLUMN last_meter_at TEXT;
