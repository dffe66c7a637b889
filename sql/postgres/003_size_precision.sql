-- Sizes at each instrument's own scale (dm/_records.pxd): a size is stored as the record's u64
-- integer in units of 10^-size_precision; rows written before this migration were at 1e-9.
-- Bars also keep their trade count and are keyed by publisher (several Databento publishers
-- send bars of the same instrument and minute: OPRA).
ALTER TABLE trades      ADD COLUMN size_precision SMALLINT NOT NULL DEFAULT 9;
ALTER TABLE bbo         ADD COLUMN size_precision SMALLINT NOT NULL DEFAULT 9;
ALTER TABLE book_deltas ADD COLUMN size_precision SMALLINT NOT NULL DEFAULT 9;
ALTER TABLE depth       ADD COLUMN size_precision SMALLINT NOT NULL DEFAULT 9;
ALTER TABLE bars        ADD COLUMN size_precision SMALLINT NOT NULL DEFAULT 9;
ALTER TABLE bars        ADD COLUMN count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE bars DROP CONSTRAINT bars_key;
ALTER TABLE bars ADD CONSTRAINT bars_key UNIQUE (instrument_id, publisher_id, interval_s, ts_event);

-- a size at its precision → exact numeric
CREATE FUNCTION dm_size(v BIGINT, p SMALLINT) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN v * power(10::numeric, -p);

CREATE OR REPLACE VIEW trades_v AS
SELECT t.instrument_id, i.symbol, i.exchange, t.publisher_id,
       dm_ts(t.ts_event) AS ts_event, dm_ts(t.ts_recv) AS ts_recv,
       dm_price(t.price) AS price, dm_size(t.size, t.size_precision) AS size,
       t.trade_id, t.sequence, dm_char(t.side) AS side, t.flags,
       t.ts_event AS ts_event_ns, t.ts_recv AS ts_recv_ns
FROM trades t LEFT JOIN instruments i USING (instrument_id);

CREATE OR REPLACE VIEW bbo_v AS
SELECT b.instrument_id, i.symbol, i.exchange, b.publisher_id,
       dm_ts(b.ts_event) AS ts_event, dm_ts(b.ts_recv) AS ts_recv,
       dm_price(b.bid_px) AS bid_px, dm_size(b.bid_sz, b.size_precision) AS bid_sz,
       dm_price(b.ask_px) AS ask_px, dm_size(b.ask_sz, b.size_precision) AS ask_sz,
       b.bid_ct, b.ask_ct, b.sequence, b.flags,
       b.ts_event AS ts_event_ns, b.ts_recv AS ts_recv_ns
FROM bbo b LEFT JOIN instruments i USING (instrument_id);

CREATE OR REPLACE VIEW book_deltas_v AS
SELECT d.instrument_id, i.symbol, i.exchange, d.publisher_id,
       dm_ts(d.ts_event) AS ts_event, dm_ts(d.ts_recv) AS ts_recv,
       dm_price(d.price) AS price, dm_size(d.size, d.size_precision) AS size,
       d.sequence, dm_char(d.side) AS side, dm_char(d.action) AS action, d.flags,
       d.ts_event AS ts_event_ns, d.ts_recv AS ts_recv_ns
FROM book_deltas d LEFT JOIN instruments i USING (instrument_id);

CREATE OR REPLACE VIEW bars_v AS
SELECT b.instrument_id, i.symbol, i.exchange, b.publisher_id, b.interval_s,
       dm_ts(b.ts_event) AS ts_open,
       dm_price(b.open) AS open, dm_price(b.high) AS high, dm_price(b.low) AS low,
       dm_price(b.close) AS close, dm_size(b.volume, b.size_precision) AS volume, b.flags,
       b.ts_event AS ts_event_ns, b.count
FROM bars b LEFT JOIN instruments i USING (instrument_id);
