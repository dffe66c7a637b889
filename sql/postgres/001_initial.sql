-- dm schema v1 (PostgreSQL 15+). Logical schema documented in dm/storage/base.py; the SQLite
-- twin is sql/sqlite/001_initial.sql. Times: BIGINT ns since the UNIX epoch. Prices/sizes:
-- BIGINT fixed point 1e-9. side/action/flags: SMALLINT holding the record's u8 (side 65 'A',
-- 66 'B', 78 'N'; action 65 'A', 77 'M', 67 'C', 82 'R').
-- Tick tables are range-partitioned by day on ts_event (bounds in ns); dm creates the day
-- partitions on demand (dm/storage/postgres.py, names <table>_pYYYYMMDD).
-- schema_migrations is created by the migration runner itself.

CREATE TABLE instruments (
    instrument_id BIGINT NOT NULL PRIMARY KEY CHECK (instrument_id BETWEEN 0 AND 4294967295),
    symbol        TEXT NOT NULL,
    exchange      TEXT NOT NULL,
    venue_symbol  TEXT NOT NULL,
    publisher_id  INTEGER NOT NULL,
    created_ns    BIGINT NOT NULL,
    CONSTRAINT instruments_symbol_exchange_key UNIQUE (symbol, exchange)
);

CREATE TABLE trades (
    instrument_id BIGINT NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      BIGINT NOT NULL,
    ts_recv       BIGINT NOT NULL,
    price         BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    trade_id      BIGINT NOT NULL,
    sequence      BIGINT NOT NULL,
    side          SMALLINT NOT NULL,
    flags         SMALLINT NOT NULL,
    dedup         BIGINT NOT NULL,
    CONSTRAINT trades_key UNIQUE (instrument_id, ts_event, trade_id, dedup)
) PARTITION BY RANGE (ts_event);

CREATE TABLE bbo (
    instrument_id BIGINT NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      BIGINT NOT NULL,
    ts_recv       BIGINT NOT NULL,
    bid_px        BIGINT NOT NULL,
    bid_sz        BIGINT NOT NULL,
    ask_px        BIGINT NOT NULL,
    ask_sz        BIGINT NOT NULL,
    bid_ct        BIGINT NOT NULL,
    ask_ct        BIGINT NOT NULL,
    sequence      BIGINT NOT NULL,
    flags         SMALLINT NOT NULL,
    dedup         BIGINT NOT NULL,
    CONSTRAINT bbo_key UNIQUE (instrument_id, ts_event, dedup)
) PARTITION BY RANGE (ts_event);

CREATE TABLE book_deltas (
    instrument_id BIGINT NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      BIGINT NOT NULL,
    ts_recv       BIGINT NOT NULL,
    price         BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    sequence      BIGINT NOT NULL,
    side          SMALLINT NOT NULL,
    action        SMALLINT NOT NULL,
    flags         SMALLINT NOT NULL,
    dedup         BIGINT NOT NULL,
    CONSTRAINT book_deltas_key UNIQUE (instrument_id, ts_event, dedup)
) PARTITION BY RANGE (ts_event);

CREATE TABLE depth (
    instrument_id BIGINT NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      BIGINT NOT NULL,
    ts_recv       BIGINT NOT NULL,
    sequence      BIGINT NOT NULL,
    flags         SMALLINT NOT NULL,
    n_bid         SMALLINT NOT NULL,
    n_ask         SMALLINT NOT NULL,
    bid_px_00 BIGINT NOT NULL, bid_px_01 BIGINT NOT NULL, bid_px_02 BIGINT NOT NULL, bid_px_03 BIGINT NOT NULL, bid_px_04 BIGINT NOT NULL,
    bid_px_05 BIGINT NOT NULL, bid_px_06 BIGINT NOT NULL, bid_px_07 BIGINT NOT NULL, bid_px_08 BIGINT NOT NULL, bid_px_09 BIGINT NOT NULL,
    ask_px_00 BIGINT NOT NULL, ask_px_01 BIGINT NOT NULL, ask_px_02 BIGINT NOT NULL, ask_px_03 BIGINT NOT NULL, ask_px_04 BIGINT NOT NULL,
    ask_px_05 BIGINT NOT NULL, ask_px_06 BIGINT NOT NULL, ask_px_07 BIGINT NOT NULL, ask_px_08 BIGINT NOT NULL, ask_px_09 BIGINT NOT NULL,
    bid_sz_00 BIGINT NOT NULL, bid_sz_01 BIGINT NOT NULL, bid_sz_02 BIGINT NOT NULL, bid_sz_03 BIGINT NOT NULL, bid_sz_04 BIGINT NOT NULL,
    bid_sz_05 BIGINT NOT NULL, bid_sz_06 BIGINT NOT NULL, bid_sz_07 BIGINT NOT NULL, bid_sz_08 BIGINT NOT NULL, bid_sz_09 BIGINT NOT NULL,
    ask_sz_00 BIGINT NOT NULL, ask_sz_01 BIGINT NOT NULL, ask_sz_02 BIGINT NOT NULL, ask_sz_03 BIGINT NOT NULL, ask_sz_04 BIGINT NOT NULL,
    ask_sz_05 BIGINT NOT NULL, ask_sz_06 BIGINT NOT NULL, ask_sz_07 BIGINT NOT NULL, ask_sz_08 BIGINT NOT NULL, ask_sz_09 BIGINT NOT NULL,
    dedup         BIGINT NOT NULL,
    CONSTRAINT depth_key UNIQUE (instrument_id, ts_event, dedup)
) PARTITION BY RANGE (ts_event);

-- OHLCV bars, ts_event = bar open time; small, not partitioned.
CREATE TABLE bars (
    instrument_id BIGINT NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      BIGINT NOT NULL,
    interval_s    BIGINT NOT NULL,
    open          BIGINT NOT NULL,
    high          BIGINT NOT NULL,
    low           BIGINT NOT NULL,
    close         BIGINT NOT NULL,
    volume        BIGINT NOT NULL,
    flags         SMALLINT NOT NULL,
    CONSTRAINT bars_key UNIQUE (instrument_id, interval_s, ts_event)
);

CREATE TABLE gaps (
    id            BIGSERIAL PRIMARY KEY,
    instrument_id BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    first_missing BIGINT NOT NULL,
    last_missing  BIGINT NOT NULL,
    detected_ns   BIGINT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'open',
    detail        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX gaps_state_idx ON gaps (state);

-- For people: ns → timestamptz (truncated to µs, timestamptz's resolution; the exact ns stay in
-- the BIGINT columns) and 1e-9 fixed point → exact numeric.
CREATE FUNCTION dm_ts(ns BIGINT) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN to_timestamp((ns / 1000000000)::double precision)
           + ((ns % 1000000000) / 1000) * interval '1 microsecond';

CREATE FUNCTION dm_fixed(v BIGINT) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN v * 0.000000001;

-- UNDEF_PRICE (i64 max) is "no price": NULL in the views.
CREATE FUNCTION dm_price(v BIGINT) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN NULLIF(v, 9223372036854775807) * 0.000000001;

-- u8 side/action code → its character ('A', 'B', 'N', ...), or the number if not printable.
CREATE FUNCTION dm_char(v SMALLINT) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN CASE WHEN v BETWEEN 32 AND 126 THEN chr(v) ELSE v::text END;

CREATE VIEW trades_v AS
SELECT t.instrument_id, i.symbol, i.exchange, t.publisher_id,
       dm_ts(t.ts_event) AS ts_event, dm_ts(t.ts_recv) AS ts_recv,
       dm_price(t.price) AS price, dm_fixed(t.size) AS size,
       t.trade_id, t.sequence, dm_char(t.side) AS side, t.flags,
       t.ts_event AS ts_event_ns, t.ts_recv AS ts_recv_ns
FROM trades t LEFT JOIN instruments i USING (instrument_id);

CREATE VIEW bbo_v AS
SELECT b.instrument_id, i.symbol, i.exchange, b.publisher_id,
       dm_ts(b.ts_event) AS ts_event, dm_ts(b.ts_recv) AS ts_recv,
       dm_price(b.bid_px) AS bid_px, dm_fixed(b.bid_sz) AS bid_sz,
       dm_price(b.ask_px) AS ask_px, dm_fixed(b.ask_sz) AS ask_sz,
       b.bid_ct, b.ask_ct, b.sequence, b.flags,
       b.ts_event AS ts_event_ns, b.ts_recv AS ts_recv_ns
FROM bbo b LEFT JOIN instruments i USING (instrument_id);

CREATE VIEW book_deltas_v AS
SELECT d.instrument_id, i.symbol, i.exchange, d.publisher_id,
       dm_ts(d.ts_event) AS ts_event, dm_ts(d.ts_recv) AS ts_recv,
       dm_price(d.price) AS price, dm_fixed(d.size) AS size,
       d.sequence, dm_char(d.side) AS side, dm_char(d.action) AS action, d.flags,
       d.ts_event AS ts_event_ns, d.ts_recv AS ts_recv_ns
FROM book_deltas d LEFT JOIN instruments i USING (instrument_id);

CREATE VIEW bars_v AS
SELECT b.instrument_id, i.symbol, i.exchange, b.publisher_id, b.interval_s,
       dm_ts(b.ts_event) AS ts_open,
       dm_price(b.open) AS open, dm_price(b.high) AS high, dm_price(b.low) AS low,
       dm_price(b.close) AS close, dm_fixed(b.volume) AS volume, b.flags,
       b.ts_event AS ts_event_ns
FROM bars b LEFT JOIN instruments i USING (instrument_id);
