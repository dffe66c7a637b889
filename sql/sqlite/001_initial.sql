-- dm schema v1 (SQLite 3, WAL mode). Same logical schema as sql/postgres/001_initial.sql
-- (documented in dm/storage/base.py): every column is an INTEGER (SQLite's 64-bit signed
-- integer), times ns since the UNIX epoch, prices/sizes fixed point 1e-9, side/action/flags the
-- record's u8. No partitions. schema_migrations is created by the migration runner itself.

CREATE TABLE instruments (
    instrument_id INTEGER NOT NULL PRIMARY KEY CHECK (instrument_id BETWEEN 0 AND 4294967295),
    symbol        TEXT NOT NULL,
    exchange      TEXT NOT NULL,
    venue_symbol  TEXT NOT NULL,
    publisher_id  INTEGER NOT NULL,
    created_ns    INTEGER NOT NULL,
    UNIQUE (symbol, exchange)
);

CREATE TABLE trades (
    instrument_id INTEGER NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      INTEGER NOT NULL,
    ts_recv       INTEGER NOT NULL,
    price         INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    trade_id      INTEGER NOT NULL,
    sequence      INTEGER NOT NULL,
    side          INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    dedup         INTEGER NOT NULL,
    UNIQUE (instrument_id, ts_event, trade_id, dedup)
);

CREATE TABLE bbo (
    instrument_id INTEGER NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      INTEGER NOT NULL,
    ts_recv       INTEGER NOT NULL,
    bid_px        INTEGER NOT NULL,
    bid_sz        INTEGER NOT NULL,
    ask_px        INTEGER NOT NULL,
    ask_sz        INTEGER NOT NULL,
    bid_ct        INTEGER NOT NULL,
    ask_ct        INTEGER NOT NULL,
    sequence      INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    dedup         INTEGER NOT NULL,
    UNIQUE (instrument_id, ts_event, dedup)
);

CREATE TABLE book_deltas (
    instrument_id INTEGER NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      INTEGER NOT NULL,
    ts_recv       INTEGER NOT NULL,
    price         INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    sequence      INTEGER NOT NULL,
    side          INTEGER NOT NULL,
    action        INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    dedup         INTEGER NOT NULL,
    UNIQUE (instrument_id, ts_event, dedup)
);

CREATE TABLE depth (
    instrument_id INTEGER NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      INTEGER NOT NULL,
    ts_recv       INTEGER NOT NULL,
    sequence      INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    n_bid         INTEGER NOT NULL,
    n_ask         INTEGER NOT NULL,
    bid_px_00 INTEGER NOT NULL, bid_px_01 INTEGER NOT NULL, bid_px_02 INTEGER NOT NULL, bid_px_03 INTEGER NOT NULL, bid_px_04 INTEGER NOT NULL,
    bid_px_05 INTEGER NOT NULL, bid_px_06 INTEGER NOT NULL, bid_px_07 INTEGER NOT NULL, bid_px_08 INTEGER NOT NULL, bid_px_09 INTEGER NOT NULL,
    ask_px_00 INTEGER NOT NULL, ask_px_01 INTEGER NOT NULL, ask_px_02 INTEGER NOT NULL, ask_px_03 INTEGER NOT NULL, ask_px_04 INTEGER NOT NULL,
    ask_px_05 INTEGER NOT NULL, ask_px_06 INTEGER NOT NULL, ask_px_07 INTEGER NOT NULL, ask_px_08 INTEGER NOT NULL, ask_px_09 INTEGER NOT NULL,
    bid_sz_00 INTEGER NOT NULL, bid_sz_01 INTEGER NOT NULL, bid_sz_02 INTEGER NOT NULL, bid_sz_03 INTEGER NOT NULL, bid_sz_04 INTEGER NOT NULL,
    bid_sz_05 INTEGER NOT NULL, bid_sz_06 INTEGER NOT NULL, bid_sz_07 INTEGER NOT NULL, bid_sz_08 INTEGER NOT NULL, bid_sz_09 INTEGER NOT NULL,
    ask_sz_00 INTEGER NOT NULL, ask_sz_01 INTEGER NOT NULL, ask_sz_02 INTEGER NOT NULL, ask_sz_03 INTEGER NOT NULL, ask_sz_04 INTEGER NOT NULL,
    ask_sz_05 INTEGER NOT NULL, ask_sz_06 INTEGER NOT NULL, ask_sz_07 INTEGER NOT NULL, ask_sz_08 INTEGER NOT NULL, ask_sz_09 INTEGER NOT NULL,
    dedup         INTEGER NOT NULL,
    UNIQUE (instrument_id, ts_event, dedup)
);

CREATE TABLE bars (
    instrument_id INTEGER NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      INTEGER NOT NULL,
    interval_s    INTEGER NOT NULL,
    open          INTEGER NOT NULL,
    high          INTEGER NOT NULL,
    low           INTEGER NOT NULL,
    close         INTEGER NOT NULL,
    volume        INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    UNIQUE (instrument_id, interval_s, ts_event)
);

CREATE TABLE gaps (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    instrument_id INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    first_missing INTEGER NOT NULL,
    last_missing  INTEGER NOT NULL,
    detected_ns   INTEGER NOT NULL,
    state         TEXT NOT NULL DEFAULT 'open',
    detail        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX gaps_state_idx ON gaps (state);

-- For people: ISO-8601 UTC text with all 9 ns digits; prices as REAL (inexact, display only:
-- the exact value is the INTEGER column). UNDEF_PRICE (i64 max) shows as NULL.
CREATE VIEW trades_v AS
SELECT t.instrument_id, i.symbol, i.exchange, t.publisher_id,
       strftime('%Y-%m-%dT%H:%M:%S', t.ts_event / 1000000000, 'unixepoch') || printf('.%09dZ', t.ts_event % 1000000000) AS ts_event,
       strftime('%Y-%m-%dT%H:%M:%S', t.ts_recv / 1000000000, 'unixepoch') || printf('.%09dZ', t.ts_recv % 1000000000) AS ts_recv,
       NULLIF(t.price, 9223372036854775807) / 1e9 AS price, t.size / 1e9 AS size,
       t.trade_id, t.sequence, char(t.side) AS side, t.flags,
       t.ts_event AS ts_event_ns, t.ts_recv AS ts_recv_ns
FROM trades t LEFT JOIN instruments i USING (instrument_id);

CREATE VIEW bbo_v AS
SELECT b.instrument_id, i.symbol, i.exchange, b.publisher_id,
       strftime('%Y-%m-%dT%H:%M:%S', b.ts_event / 1000000000, 'unixepoch') || printf('.%09dZ', b.ts_event % 1000000000) AS ts_event,
       strftime('%Y-%m-%dT%H:%M:%S', b.ts_recv / 1000000000, 'unixepoch') || printf('.%09dZ', b.ts_recv % 1000000000) AS ts_recv,
       NULLIF(b.bid_px, 9223372036854775807) / 1e9 AS bid_px, b.bid_sz / 1e9 AS bid_sz,
       NULLIF(b.ask_px, 9223372036854775807) / 1e9 AS ask_px, b.ask_sz / 1e9 AS ask_sz,
       b.bid_ct, b.ask_ct, b.sequence, b.flags,
       b.ts_event AS ts_event_ns, b.ts_recv AS ts_recv_ns
FROM bbo b LEFT JOIN instruments i USING (instrument_id);
