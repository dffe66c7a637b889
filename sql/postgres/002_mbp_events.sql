-- Databento MBP companion records (rtype 0xE5, dm.records.MBP_EVENT_DTYPE): what a TRADE /
-- BBO / DEPTH record converted from DBN trades / mbp-1 / mbp-10 cannot hold (action, depth,
-- ts_in_delta, the event's own price/size/side, order counts per level), so DBN data is stored
-- losslessly. Partitioned by day like the other tick tables.
CREATE TABLE mbp_events (
    instrument_id BIGINT NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      BIGINT NOT NULL,
    ts_recv       BIGINT NOT NULL,
    price         BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    sequence      BIGINT NOT NULL,
    ts_in_delta   INTEGER NOT NULL,
    action        SMALLINT NOT NULL,
    side          SMALLINT NOT NULL,
    flags         SMALLINT NOT NULL,
    depth         SMALLINT NOT NULL,
    bid_ct_00 BIGINT NOT NULL, bid_ct_01 BIGINT NOT NULL, bid_ct_02 BIGINT NOT NULL, bid_ct_03 BIGINT NOT NULL, bid_ct_04 BIGINT NOT NULL, bid_ct_05 BIGINT NOT NULL, bid_ct_06 BIGINT NOT NULL, bid_ct_07 BIGINT NOT NULL, bid_ct_08 BIGINT NOT NULL, bid_ct_09 BIGINT NOT NULL, ask_ct_00 BIGINT NOT NULL, ask_ct_01 BIGINT NOT NULL, ask_ct_02 BIGINT NOT NULL, ask_ct_03 BIGINT NOT NULL, ask_ct_04 BIGINT NOT NULL, ask_ct_05 BIGINT NOT NULL, ask_ct_06 BIGINT NOT NULL, ask_ct_07 BIGINT NOT NULL, ask_ct_08 BIGINT NOT NULL, ask_ct_09 BIGINT NOT NULL,
    dedup         BIGINT NOT NULL,
    CONSTRAINT mbp_events_key UNIQUE (instrument_id, ts_event, dedup)
) PARTITION BY RANGE (ts_event);
