-- SQLite twin of sql/postgres/005_backfill.sql (INTEGER is SQLite's 64-bit integer).
-- Priced historical backfill (dm.backfill, dm.databento.historical): what was asked, in which
-- chunks, what each paid request delivered and cost. Times are INTEGER ns since the epoch; money
-- is INTEGER nano-USD (1e-9 USD, dm's fixed point: a Databento $/GB price is exactly nano-USD
-- per byte). Rows of a chunk and the chunk's ledger update commit in ONE transaction
-- (Storage.write(..., then=...)), so the ledger never claims data that is not stored.

-- One request for one (provider, dataset, schema, stype_in, symbols, [start_ns, end_ns)); a
-- rerun of the same request finds its job by key and skips what is done.
CREATE TABLE backfill_jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT NOT NULL UNIQUE,
    command         TEXT NOT NULL,             -- fetch | fill-gaps
    provider        TEXT NOT NULL,             -- databento (venue fillers later)
    dataset         TEXT NOT NULL,
    schema          TEXT NOT NULL,
    stype_in        TEXT NOT NULL,
    symbols         TEXT NOT NULL,             -- comma-separated, sorted
    exchange        TEXT NOT NULL,             -- dm registry exchange of the instruments (e.g. GLBX.MDP3)
    start_ns        INTEGER NOT NULL,           -- inclusive
    end_ns          INTEGER NOT NULL,           -- exclusive
    gap_id          INTEGER,                    -- the ledger gap this job fills (fill-gaps)
    state           TEXT NOT NULL DEFAULT 'planned',   -- planned | running | done | failed
    quoted_records  INTEGER NOT NULL DEFAULT 0,
    quoted_bytes    INTEGER NOT NULL DEFAULT 0,
    quoted_usd_nano INTEGER NOT NULL DEFAULT 0,
    detail          TEXT NOT NULL DEFAULT '',
    owner           TEXT NOT NULL DEFAULT '',  -- host:pid of the process running it
    created_ns      INTEGER NOT NULL,
    updated_ns      INTEGER NOT NULL
);

-- dataset x schema x UTC day x <= 2,000 symbols. [start_ns, resume_ns) is stored; the rest
-- [resume_ns, end_ns) is what a rerun requests (and all a rerun requests).
CREATE TABLE backfill_chunks (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          INTEGER NOT NULL REFERENCES backfill_jobs (id),
    dataset         TEXT NOT NULL,
    schema          TEXT NOT NULL,
    stype_in        TEXT NOT NULL,
    symbols         TEXT NOT NULL,
    start_ns        INTEGER NOT NULL,
    end_ns          INTEGER NOT NULL,
    resume_ns       INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',   -- pending | partial | done | failed
    quoted_records  INTEGER NOT NULL DEFAULT 0,
    quoted_bytes    INTEGER NOT NULL DEFAULT 0,
    quoted_usd_nano INTEGER NOT NULL DEFAULT 0,
    records         INTEGER NOT NULL DEFAULT 0,         -- DBN records received
    rows            INTEGER NOT NULL DEFAULT 0,         -- dm rows inserted (duplicates not counted)
    bytes           INTEGER NOT NULL DEFAULT 0,         -- billable bytes received
    usd_nano        INTEGER NOT NULL DEFAULT 0,
    requests        INTEGER NOT NULL DEFAULT 0,        -- paid requests (get_range calls)
    error           TEXT NOT NULL DEFAULT '',
    created_ns      INTEGER NOT NULL,
    updated_ns      INTEGER NOT NULL,
    CONSTRAINT backfill_chunks_key UNIQUE (job_id, start_ns, end_ns, symbols)
);
CREATE INDEX backfill_chunks_cover_idx ON backfill_chunks (dataset, schema, stype_in, start_ns);

-- One row per paid request: when, which window, what it delivered and cost (cost-report).
CREATE TABLE backfill_requests (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id        INTEGER NOT NULL REFERENCES backfill_chunks (id),
    ts_ns           INTEGER NOT NULL,
    dataset         TEXT NOT NULL,
    schema          TEXT NOT NULL,
    start_ns        INTEGER NOT NULL,
    end_ns          INTEGER NOT NULL,
    records         INTEGER NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL DEFAULT 0,
    usd_nano        INTEGER NOT NULL DEFAULT 0,
    outcome         TEXT NOT NULL                      -- complete | cut
);
CREATE INDEX backfill_requests_ts_idx ON backfill_requests (ts_ns);
