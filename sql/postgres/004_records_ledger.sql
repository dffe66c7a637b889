-- The gap ledger, statistics and instrument registrations/definitions arrive as records (GAP
-- 0xE6, STATISTICS 0xE7, INSTRUMENT_DEF 0xE8, dm/records.py) through the persist queues: the
-- persister is their only writer, and every table is idempotent so a re-delivered record is a
-- no-op. Layouts and keys: dm/storage/base.py. SQLite twin: sql/sqlite/004_records_ledger.sql.

-- instruments: the size scale chosen at registration (NULL: registered before this migration)
ALTER TABLE instruments ADD COLUMN size_precision SMALLINT
    CHECK (size_precision BETWEEN 0 AND 18);

-- gaps: whose ledger entry (publisher), what first/last_missing count (units 0 = sequence,
-- 1 = ns), the record's own ts_recv and flags, and the idempotency key (a hash of the GAP record,
-- NULL for rows written before this migration, which never conflict).
ALTER TABLE gaps ADD COLUMN publisher_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE gaps ADD COLUMN units SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE gaps ADD COLUMN ts_recv BIGINT;
ALTER TABLE gaps ADD COLUMN flags SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE gaps ADD COLUMN dedup BIGINT;
UPDATE gaps SET units = 1 WHERE kind = 'reconnect';  -- the workers' reconnect windows were in ns
ALTER TABLE gaps ADD CONSTRAINT gaps_key UNIQUE (publisher_id, instrument_id, dedup);
CREATE INDEX gaps_instrument_idx ON gaps (instrument_id, detected_ns);

-- DBN StatMsg (RType.STATISTICS), partitioned by day like the other tick tables.
-- ts_ref NULL: DBN's UNDEF_TIMESTAMP; price i64 max: none; quantity i64 max: none.
CREATE TABLE statistics (
    instrument_id  BIGINT NOT NULL,
    publisher_id   INTEGER NOT NULL,
    ts_event       BIGINT NOT NULL,
    ts_recv        BIGINT NOT NULL,
    ts_ref         BIGINT,
    price          BIGINT NOT NULL,
    quantity       BIGINT NOT NULL,
    sequence       BIGINT NOT NULL,
    ts_in_delta    INTEGER NOT NULL,
    stat_type      INTEGER NOT NULL,
    channel_id     INTEGER NOT NULL,
    update_action  SMALLINT NOT NULL,
    stat_flags     SMALLINT NOT NULL,
    size_precision SMALLINT NOT NULL,
    dedup          BIGINT NOT NULL,
    CONSTRAINT statistics_key UNIQUE (instrument_id, ts_event, dedup)
) PARTITION BY RANGE (ts_event);

-- Instrument definitions (RType.INSTRUMENT_DEF): one row per distinct definition of an
-- instrument over time (Databento sends one per instrument and day). Prices/tick/display
-- factor/multiplier/strike at 1e-9 (i64 max = unknown/none), lot_size at 10^-size_precision,
-- expiration/activation ns (NULL = none), instrument_class the DBN char code.
CREATE TABLE instrument_definitions (
    instrument_id       BIGINT NOT NULL,
    publisher_id        INTEGER NOT NULL,
    ts_event            BIGINT NOT NULL,
    ts_recv             BIGINT NOT NULL,
    min_price_increment BIGINT NOT NULL,
    display_factor      BIGINT NOT NULL,
    lot_size            BIGINT NOT NULL,
    contract_multiplier BIGINT NOT NULL,
    strike_price        BIGINT NOT NULL,
    expiration          BIGINT,
    activation          BIGINT,
    size_precision      SMALLINT NOT NULL,
    price_precision     SMALLINT NOT NULL,
    instrument_class    SMALLINT NOT NULL,
    flags               SMALLINT NOT NULL,
    symbol              TEXT NOT NULL,
    exchange            TEXT NOT NULL,
    raw_symbol          TEXT NOT NULL,
    underlying          TEXT NOT NULL,
    base                TEXT NOT NULL,
    quote               TEXT NOT NULL,
    dedup               BIGINT NOT NULL,
    CONSTRAINT instrument_definitions_key UNIQUE (instrument_id, ts_event, dedup)
);

-- For people.
CREATE FUNCTION dm_stat_name(t INTEGER) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN CASE t
        WHEN 1 THEN 'opening_price' WHEN 2 THEN 'indicative_opening_price' WHEN 3 THEN 'settlement_price'
        WHEN 4 THEN 'trading_session_low_price' WHEN 5 THEN 'trading_session_high_price'
        WHEN 6 THEN 'cleared_volume' WHEN 7 THEN 'lowest_offer' WHEN 8 THEN 'highest_bid'
        WHEN 9 THEN 'open_interest' WHEN 10 THEN 'fixing_price' WHEN 11 THEN 'close_price'
        WHEN 12 THEN 'net_change' WHEN 13 THEN 'vwap' WHEN 14 THEN 'volatility' WHEN 15 THEN 'delta'
        WHEN 16 THEN 'uncrossing_price'
        WHEN 1001 THEN 'mark_price' WHEN 1002 THEN 'index_price' WHEN 1003 THEN 'funding_rate'
        WHEN 1004 THEN 'predicted_funding_rate' WHEN 1005 THEN 'liquidation'
        WHEN 1006 THEN 'estimated_settlement_price' WHEN 1007 THEN 'implied_volatility'
        WHEN 1008 THEN 'underlying_price'
        ELSE t::text END;

CREATE VIEW statistics_v AS
SELECT s.instrument_id, i.symbol, i.exchange, s.publisher_id,
       dm_ts(s.ts_event) AS ts_event, dm_ts(s.ts_recv) AS ts_recv, dm_ts(s.ts_ref) AS ts_ref,
       s.stat_type, dm_stat_name(s.stat_type) AS stat_name,
       dm_price(s.price) AS price,
       dm_size(NULLIF(s.quantity, 9223372036854775807), s.size_precision) AS quantity,
       s.update_action, s.stat_flags, s.sequence, s.ts_in_delta, s.channel_id,
       s.ts_event AS ts_event_ns, s.ts_recv AS ts_recv_ns
FROM statistics s LEFT JOIN instruments i USING (instrument_id);

CREATE VIEW gaps_v AS
SELECT g.id, g.instrument_id, i.symbol, i.exchange, g.publisher_id, g.kind,
       CASE g.units WHEN 0 THEN 'sequence' WHEN 1 THEN 'ns' ELSE g.units::text END AS units,
       g.first_missing, g.last_missing,
       CASE WHEN g.units = 1 THEN dm_ts(g.first_missing) END AS first_missing_ts,
       CASE WHEN g.units = 1 THEN dm_ts(g.last_missing) END AS last_missing_ts,
       dm_ts(g.detected_ns) AS detected, g.state, g.detail, g.detected_ns
FROM gaps g LEFT JOIN instruments i USING (instrument_id);

CREATE VIEW instrument_definitions_v AS
SELECT d.instrument_id, d.symbol, d.exchange, d.raw_symbol, d.publisher_id,
       dm_ts(d.ts_event) AS ts_event, dm_ts(d.ts_recv) AS ts_recv,
       dm_char(d.instrument_class) AS instrument_class,
       dm_price(d.min_price_increment) AS tick_size, dm_price(d.display_factor) AS display_factor,
       dm_size(d.lot_size, d.size_precision) AS lot_size,
       dm_price(d.contract_multiplier) AS contract_multiplier, dm_price(d.strike_price) AS strike_price,
       dm_ts(d.expiration) AS expiration, dm_ts(d.activation) AS activation,
       d.underlying, d.base, d.quote, d.size_precision, d.price_precision, d.flags,
       d.ts_event AS ts_event_ns
FROM instrument_definitions d;
