-- The Authorization Cache (OCPP 1.6 3.5.1): the last idTagInfo the CSMS gave for each identifier, valid or not,
-- so cards can be authorized offline (LocalAuthorizeOffline) or at once (LocalPreAuthorize). Kept on disk because
-- it must survive reboots, resets and power outages (errata 3.4). IdToken is case-insensitive, hence NOCASE.
CREATE TABLE auth_cache (
    id_tag        TEXT PRIMARY KEY COLLATE NOCASE,
    status        TEXT NOT NULL,      -- AuthorizationStatus as received
    expiry        REAL,               -- expiryDate as wall-clock epoch seconds (UTC); NULL = no end date
    parent_id_tag TEXT,
    updated_at    REAL NOT NULL       -- wall-clock epoch seconds of the last idTagInfo; oldest go first when full
);
CREATE INDEX auth_cache_updated ON auth_cache (updated_at);
