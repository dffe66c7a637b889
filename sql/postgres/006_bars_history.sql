-- Issue 10: bars built from trades, and a write path that never creates hundreds of partitions.
-- SQLite twin: sql/sqlite/006_bars_history.sql. Logic: dm/bars.py, dm/storage/postgres.py.

-- 1. A DEFAULT partition per tick table. The write path creates day partitions only for the few
--    days a batch needs that are near now (dm/storage/postgres.py: PostgresStorage.ensure_partitions
--    with the write's budget); rows of any other day (a venue snapshot carrying levels last
--    touched years ago: Kraken book snapshots hold hundreds of distinct days) land here instead of
--    costing one CREATE TABLE each inside a write. Day partitions ahead of time are made by
--    maintenance (PostgresStorage.maintain: at migrate and hourly by the persister).
CREATE TABLE IF NOT EXISTS trades_default      PARTITION OF trades      DEFAULT;
CREATE TABLE IF NOT EXISTS bbo_default         PARTITION OF bbo         DEFAULT;
CREATE TABLE IF NOT EXISTS book_deltas_default PARTITION OF book_deltas DEFAULT;
CREATE TABLE IF NOT EXISTS depth_default       PARTITION OF depth       DEFAULT;
CREATE TABLE IF NOT EXISTS mbp_events_default  PARTITION OF mbp_events  DEFAULT;
CREATE TABLE IF NOT EXISTS statistics_default  PARTITION OF statistics  DEFAULT;

-- 2. Bars: dm's own bars (source 1, built from stored trades as they are persisted) beside the
--    bars a venue or Databento sends (source 0), so the two can be compared. A built bar keeps
--    the ordering key of its open and close trade: (ts_event, venue order = trade_id, or
--    sequence when the venue gives no trade id, dedup), so a late trade merges into its closed
--    bar exactly (open = least key, close = greatest key) and a re-delivered trade, which the
--    trades key refuses, never reaches the bar. NULL for received bars.
ALTER TABLE bars ADD COLUMN source SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE bars ADD COLUMN open_ts BIGINT;
ALTER TABLE bars ADD COLUMN open_ord BIGINT;
ALTER TABLE bars ADD COLUMN open_dd BIGINT;
ALTER TABLE bars ADD COLUMN close_ts BIGINT;
ALTER TABLE bars ADD COLUMN close_ord BIGINT;
ALTER TABLE bars ADD COLUMN close_dd BIGINT;
ALTER TABLE bars DROP CONSTRAINT bars_key;
ALTER TABLE bars ADD CONSTRAINT bars_key UNIQUE (instrument_id, publisher_id, interval_s, ts_event, source);

CREATE OR REPLACE VIEW bars_v AS
SELECT b.instrument_id, i.symbol, i.exchange, b.publisher_id, b.interval_s,
       dm_ts(b.ts_event) AS ts_open,
       dm_price(b.open) AS open, dm_price(b.high) AS high, dm_price(b.low) AS low,
       dm_price(b.close) AS close, dm_size(b.volume, b.size_precision) AS volume, b.flags,
       b.ts_event AS ts_event_ns, b.count,
       CASE b.source WHEN 1 THEN 'dm' ELSE 'venue' END AS source
FROM bars b LEFT JOIN instruments i USING (instrument_id);
