-- Sizes at each instrument's own scale (see sql/postgres/003_size_precision.sql): stored as the
-- record's integer in units of 10^-size_precision (rows before this migration: 1e-9). Bars keep
-- their trade count and are keyed by publisher; SQLite cannot change a constraint in place, so
-- the bars table is rebuilt.
ALTER TABLE trades      ADD COLUMN size_precision INTEGER NOT NULL DEFAULT 9;
ALTER TABLE bbo         ADD COLUMN size_precision INTEGER NOT NULL DEFAULT 9;
ALTER TABLE book_deltas ADD COLUMN size_precision INTEGER NOT NULL DEFAULT 9;
ALTER TABLE depth       ADD COLUMN size_precision INTEGER NOT NULL DEFAULT 9;

DROP VIEW IF EXISTS bars_v;
CREATE TABLE bars_new (
    instrument_id  INTEGER NOT NULL,
    publisher_id   INTEGER NOT NULL,
    ts_event       INTEGER NOT NULL,
    interval_s     INTEGER NOT NULL,
    open           INTEGER NOT NULL,
    high           INTEGER NOT NULL,
    low            INTEGER NOT NULL,
    close          INTEGER NOT NULL,
    volume         INTEGER NOT NULL,
    flags          INTEGER NOT NULL,
    size_precision INTEGER NOT NULL DEFAULT 9,
    count          INTEGER NOT NULL DEFAULT 0,
    UNIQUE (instrument_id, publisher_id, interval_s, ts_event)
);
INSERT INTO bars_new (instrument_id, publisher_id, ts_event, interval_s, open, high, low, close, volume, flags)
    SELECT instrument_id, publisher_id, ts_event, interval_s, open, high, low, close, volume, flags FROM bars;
DROP TABLE bars;
ALTER TABLE bars_new RENAME TO bars;

-- 10^p for the views (SQLite's math functions are optional at build time)
CREATE TABLE dm_pow10 (p INTEGER PRIMARY KEY, v REAL NOT NULL);
WITH RECURSIVE n(p, v) AS (SELECT 0, 1.0 UNION ALL SELECT p + 1, v * 10 FROM n WHERE p < 18)
INSERT INTO dm_pow10 SELECT p, v FROM n;

DROP VIEW IF EXISTS trades_v;
CREATE VIEW trades_v AS
SELECT t.instrument_id, i.symbol, i.exchange, t.publisher_id,
       strftime('%Y-%m-%dT%H:%M:%S', t.ts_event / 1000000000, 'unixepoch') || printf('.%09dZ', t.ts_event % 1000000000) AS ts_event,
       strftime('%Y-%m-%dT%H:%M:%S', t.ts_recv / 1000000000, 'unixepoch') || printf('.%09dZ', t.ts_recv % 1000000000) AS ts_recv,
       NULLIF(t.price, 9223372036854775807) / 1e9 AS price,
       t.size / (SELECT v FROM dm_pow10 WHERE p = t.size_precision) AS size,
       t.trade_id, t.sequence, char(t.side) AS side, t.flags,
       t.ts_event AS ts_event_ns, t.ts_recv AS ts_recv_ns
FROM trades t LEFT JOIN instruments i USING (instrument_id);

DROP VIEW IF EXISTS bbo_v;
CREATE VIEW bbo_v AS
SELECT b.instrument_id, i.symbol, i.exchange, b.publisher_id,
       strftime('%Y-%m-%dT%H:%M:%S', b.ts_event / 1000000000, 'unixepoch') || printf('.%09dZ', b.ts_event % 1000000000) AS ts_event,
       strftime('%Y-%m-%dT%H:%M:%S', b.ts_recv / 1000000000, 'unixepoch') || printf('.%09dZ', b.ts_recv % 1000000000) AS ts_recv,
       NULLIF(b.bid_px, 9223372036854775807) / 1e9 AS bid_px,
       b.bid_sz / (SELECT v FROM dm_pow10 WHERE p = b.size_precision) AS bid_sz,
       NULLIF(b.ask_px, 9223372036854775807) / 1e9 AS ask_px,
       b.ask_sz / (SELECT v FROM dm_pow10 WHERE p = b.size_precision) AS ask_sz,
       b.bid_ct, b.ask_ct, b.sequence, b.flags,
       b.ts_event AS ts_event_ns, b.ts_recv AS ts_recv_ns
FROM bbo b LEFT JOIN instruments i USING (instrument_id);

CREATE VIEW bars_v AS
SELECT b.instrument_id, i.symbol, i.exchange, b.publisher_id, b.interval_s,
       strftime('%Y-%m-%dT%H:%M:%S', b.ts_event / 1000000000, 'unixepoch') || printf('.%09dZ', b.ts_event % 1000000000) AS ts_open,
       NULLIF(b.open, 9223372036854775807) / 1e9 AS open, NULLIF(b.high, 9223372036854775807) / 1e9 AS high,
       NULLIF(b.low, 9223372036854775807) / 1e9 AS low, NULLIF(b.close, 9223372036854775807) / 1e9 AS close,
       b.volume / (SELECT v FROM dm_pow10 WHERE p = b.size_precision) AS volume, b.flags, b.count,
       b.ts_event AS ts_event_ns
FROM bars b LEFT JOIN instruments i USING (instrument_id);
