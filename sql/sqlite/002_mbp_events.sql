-- Databento MBP companion records (rtype 0xE5): see sql/postgres/002_mbp_events.sql.
CREATE TABLE mbp_events (
    instrument_id INTEGER NOT NULL,
    publisher_id  INTEGER NOT NULL,
    ts_event      INTEGER NOT NULL,
    ts_recv       INTEGER NOT NULL,
    price         INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    sequence      INTEGER NOT NULL,
    ts_in_delta   INTEGER NOT NULL,
    action        INTEGER NOT NULL,
    side          INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    depth         INTEGER NOT NULL,
    bid_ct_00 INTEGER NOT NULL, bid_ct_01 INTEGER NOT NULL, bid_ct_02 INTEGER NOT NULL, bid_ct_03 INTEGER NOT NULL, bid_ct_04 INTEGER NOT NULL, bid_ct_05 INTEGER NOT NULL, bid_ct_06 INTEGER NOT NULL, bid_ct_07 INTEGER NOT NULL, bid_ct_08 INTEGER NOT NULL, bid_ct_09 INTEGER NOT NULL, ask_ct_00 INTEGER NOT NULL, ask_ct_01 INTEGER NOT NULL, ask_ct_02 INTEGER NOT NULL, ask_ct_03 INTEGER NOT NULL, ask_ct_04 INTEGER NOT NULL, ask_ct_05 INTEGER NOT NULL, ask_ct_06 INTEGER NOT NULL, ask_ct_07 INTEGER NOT NULL, ask_ct_08 INTEGER NOT NULL, ask_ct_09 INTEGER NOT NULL,
    dedup         INTEGER NOT NULL,
    UNIQUE (instrument_id, ts_event, dedup)
);
CREATE INDEX mbp_events_ts ON mbp_events (ts_event);
