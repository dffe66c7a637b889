-- The gap ledger, statistics and instrument registrations/definitions arrive as records (GAP,
-- STATISTICS, INSTRUMENT_DEF) written by the persister only; same logical schema as
-- sql/postgres/004_records_ledger.sql (documented in dm/storage/base.py). Every column INTEGER
-- or TEXT; no partitions.

ALTER TABLE instruments ADD COLUMN size_precision INTEGER CHECK (size_precision BETWEEN 0 AND 18);

ALTER TABLE gaps ADD COLUMN publisher_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE gaps ADD COLUMN units INTEGER NOT NULL DEFAULT 0;
ALTER TABLE gaps ADD COLUMN ts_recv INTEGER;
ALTER TABLE gaps ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;
ALTER TABLE gaps ADD COLUMN dedup INTEGER;
UPDATE gaps SET units = 1 WHERE kind = 'reconnect';
CREATE UNIQUE INDEX gaps_key ON gaps (publisher_id, instrument_id, dedup);
CREATE INDEX gaps_instrument_idx ON gaps (instrument_id, detected_ns);

CREATE TABLE statistics (
    instrument_id  INTEGER NOT NULL,
    publisher_id   INTEGER NOT NULL,
    ts_event       INTEGER NOT NULL,
    ts_recv        INTEGER NOT NULL,
    ts_ref         INTEGER,
    price          INTEGER NOT NULL,
    quantity       INTEGER NOT NULL,
    sequence       INTEGER NOT NULL,
    ts_in_delta    INTEGER NOT NULL,
    stat_type      INTEGER NOT NULL,
    channel_id     INTEGER NOT NULL,
    update_action  INTEGER NOT NULL,
    stat_flags     INTEGER NOT NULL,
    size_precision INTEGER NOT NULL,
    dedup          INTEGER NOT NULL,
    UNIQUE (instrument_id, ts_event, dedup)
);

CREATE TABLE instrument_definitions (
    instrument_id       INTEGER NOT NULL,
    publisher_id        INTEGER NOT NULL,
    ts_event            INTEGER NOT NULL,
    ts_recv             INTEGER NOT NULL,
    min_price_increment INTEGER NOT NULL,
    display_factor      INTEGER NOT NULL,
    lot_size            INTEGER NOT NULL,
    contract_multiplier INTEGER NOT NULL,
    strike_price        INTEGER NOT NULL,
    expiration          INTEGER,
    activation          INTEGER,
    size_precision      INTEGER NOT NULL,
    price_precision     INTEGER NOT NULL,
    instrument_class    INTEGER NOT NULL,
    flags               INTEGER NOT NULL,
    symbol              TEXT NOT NULL,
    exchange            TEXT NOT NULL,
    raw_symbol          TEXT NOT NULL,
    underlying          TEXT NOT NULL,
    base                TEXT NOT NULL,
    quote               TEXT NOT NULL,
    dedup               INTEGER NOT NULL,
    UNIQUE (instrument_id, ts_event, dedup)
);

-- For people (REAL values are display only; the INTEGER columns are exact).
CREATE VIEW statistics_v AS
SELECT s.instrument_id, i.symbol, i.exchange, s.publisher_id,
       strftime('%Y-%m-%dT%H:%M:%S', s.ts_event / 1000000000, 'unixepoch') || printf('.%09dZ', s.ts_event % 1000000000) AS ts_event,
       strftime('%Y-%m-%dT%H:%M:%S', s.ts_recv / 1000000000, 'unixepoch') || printf('.%09dZ', s.ts_recv % 1000000000) AS ts_recv,
       strftime('%Y-%m-%dT%H:%M:%S', s.ts_ref / 1000000000, 'unixepoch') || printf('.%09dZ', s.ts_ref % 1000000000) AS ts_ref,
       s.stat_type, NULLIF(s.price, 9223372036854775807) / 1e9 AS price,
       NULLIF(s.quantity, 9223372036854775807) / (SELECT v FROM dm_pow10 WHERE p = s.size_precision) AS quantity,
       s.update_action, s.stat_flags, s.sequence, s.ts_in_delta, s.channel_id,
       s.ts_event AS ts_event_ns, s.ts_recv AS ts_recv_ns
FROM statistics s LEFT JOIN instruments i USING (instrument_id);

CREATE VIEW gaps_v AS
SELECT g.id, g.instrument_id, i.symbol, i.exchange, g.publisher_id, g.kind,
       CASE g.units WHEN 0 THEN 'sequence' WHEN 1 THEN 'ns' ELSE g.units END AS units,
       g.first_missing, g.last_missing,
       strftime('%Y-%m-%dT%H:%M:%S', g.detected_ns / 1000000000, 'unixepoch') || printf('.%09dZ', g.detected_ns % 1000000000) AS detected,
       g.state, g.detail, g.detected_ns
FROM gaps g LEFT JOIN instruments i USING (instrument_id);

CREATE VIEW instrument_definitions_v AS
SELECT d.instrument_id, d.symbol, d.exchange, d.raw_symbol, d.publisher_id,
       strftime('%Y-%m-%dT%H:%M:%S', d.ts_event / 1000000000, 'unixepoch') || printf('.%09dZ', d.ts_event % 1000000000) AS ts_event,
       char(d.instrument_class) AS instrument_class,
       NULLIF(d.min_price_increment, 9223372036854775807) / 1e9 AS tick_size,
       NULLIF(d.display_factor, 9223372036854775807) / 1e9 AS display_factor,
       d.lot_size / (SELECT v FROM dm_pow10 WHERE p = d.size_precision) AS lot_size,
       NULLIF(d.contract_multiplier, 9223372036854775807) / 1e9 AS contract_multiplier,
       NULLIF(d.strike_price, 9223372036854775807) / 1e9 AS strike_price,
       d.expiration, d.activation, d.underlying, d.base, d.quote, d.size_precision, d.price_precision,
       d.flags, d.ts_event AS ts_event_ns
FROM instrument_definitions d;
