-- Installed charging profiles (OCPP 1.6 3.13, SetChargingProfile). They must survive reboots (errata 3.37), and
-- the order matters: the engine applies install-order replacement, so rows are read back by seq.
CREATE TABLE charging_profiles (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    connector_id INTEGER NOT NULL,
    profile      TEXT NOT NULL     -- the csChargingProfiles object as JSON, as received
);
