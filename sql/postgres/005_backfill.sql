-- Priced historical backfill (dm.backfill, dm.databento.historical): what was asked, in which
-- chunks, what each paid request delivered and cost. Times are BIGINT ns since the epoch; money
-- is BIGINT nano-USD (1e-9 USD, dm's fixed point: a Databento $/GB price is exactly nano-USD
-- per byte). Rows of a chunk and the chunk's ledger update commit in ONE transaction
-- (Storage.write(..., then=...)), so the ledger never claims data that is not stored.

-- One request for one (provider, dataset, schema, stype_in, symbols, [start_ns, end_ns)); a
-- rerun of the same request finds its job by key and skips what is done.
CREATE TABLE backfill_jobs (
    id              BIGSERIAL PRIMARY KEY,
    key             TEXT NOT NULL UNIQUE,
    command         TEXT NOT NULL,             -- fetch | fill-gaps
    provider        TEXT NOT NULL,             -- databento (venue fillers later)
    dataset         TEXT NOT NULL,
    schema          TEXT NOT NULL,
    stype_in        TEXT NOT NULL,
    symbols         TEXT NOT NULL,             -- comma-separated, sorted
    exchange        TEXT NOT NULL,             -- dm registry exchange of the instruments (e.g. GLBX.MDP3)
    start_ns        BIGINT NOT NULL,           -- inclusive
    end_ns          BIGINT NOT NULL,           -- exclusive
    gap_id          BIGINT,                    -- the ledger gap this job fills (fill-gaps)
    state           TEXT NOT NULL DEFAULT 'planned',   -- planned | running | done | failed
    quoted_records  BIGINT NOT NULL DEFAULT 0,
    quoted_bytes    BIGINT NOT NULL DEFAULT 0,
    quoted_usd_nano BIGINT NOT NULL DEFAULT 0,
    detail          TEXT NOT NULL DEFAULT '',
    owner           TEXT NOT NULL DEFAULT '',  -- host:pid of the process running it
    created_ns      BIGINT NOT NULL,
    updated_ns      BIGINT NOT NULL
);

-- dataset x schema x UTC day x <= 2,000 symbols. [start_ns, resume_ns) is stored; the rest
-- [resume_ns, end_ns) is what a rerun requests (and all a rerun requests).
CREATE TABLE backfill_chunks (
    id              BIGSERIAL PRIMARY KEY,
    job_id          BIGINT NOT NULL REFERENCES backfill_jobs (id),
    dataset         TEXT NOT NULL,
    schema          TEXT NOT NULL,
    stype_in        TEXT NOT NULL,
    symbols         TEXT NOT NULL,
    start_ns        BIGINT NOT NULL,
    end_ns          BIGINT NOT NULL,
    resume_ns       BIGINT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',   -- pending | partial | done | failed
    quoted_records  BIGINT NOT NULL DEFAULT 0,
    quoted_bytes    BIGINT NOT NULL DEFAULT 0,
    quoted_usd_nano BIGINT NOT NULL DEFAULT 0,
    records         BIGINT NOT NULL DEFAULT 0,         -- DBN records received
    rows            BIGINT NOT NULL DEFAULT 0,         -- dm rows inserted (duplicates not counted)
    bytes           BIGINT NOT NULL DEFAULT 0,         -- billable bytes received
    usd_nano        BIGINT NOT NULL DEFAULT 0,
    requests        INTEGER NOT NULL DEFAULT 0,        -- paid requests (get_range calls)
    error           TEXT NOT NULL DEFAULT '',
    created_ns      BIGINT NOT NULL,
    updated_ns      BIGINT NOT NULL,
    CONSTRAINT backfill_chunks_key UNIQUE (job_id, start_ns, end_ns, symbols)
);
CREATE INDEX backfill_chunks_cover_idx ON backfill_chunks (dataset, schema, stype_in, start_ns);

-- One row per paid request: when, which window, what it delivered and cost (cost-report).
CREATE TABLE backfill_requests (
    id              BIGSERIAL PRIMARY KEY,
    chunk_id        BIGINT NOT NULL REFERENCES backfill_chunks (id),
    ts_ns           BIGINT NOT NULL,
    dataset         TEXT NOT NULL,
    schema          TEXT NOT NULL,
    start_ns        BIGINT NOT NULL,
    end_ns          BIGINT NOT NULL,
    records         BIGINT NOT NULL DEFAULT 0,
    bytes           BIGINT NOT NULL DEFAULT 0,
    usd_nano        BIGINT NOT NULL DEFAULT 0,
    outcome         TEXT NOT NULL                      -- complete | cut
);
CREATE INDEX backfill_requests_ts_idx ON backfill_requests (ts_ns);
