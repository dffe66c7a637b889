"""PostgreSQL storage: psycopg 3, binary COPY into a staging table, then INSERT .. ON CONFLICT.

Write path (``PostgresStorage.write``), for each record table in the batch:

1. validate every array (dtype, u64 values <= i64 max) before touching the database;
2. create the day partitions the batch needs, plus the following day (``<table>_pYYYYMMDD``,
   ``FOR VALUES FROM (day_start_ns) TO (next_day_start_ns)``; the last representable day ends at
   MAXVALUE), each in its own short transaction, tolerant of another writer racing us;
3. in ONE transaction: ``COPY _dm_stage_<table> FROM STDIN (FORMAT BINARY)`` with a payload built
   vectorised in numpy (``binary_copy_payload``; format: PostgreSQL docs, "COPY — Binary Format"),
   then ``INSERT INTO <table> SELECT .. FROM _dm_stage_<table> ON CONFLICT DO NOTHING``.
   The staging tables are session TEMP tables ``ON COMMIT DELETE ROWS``.

Reads (``fetch``) use ``COPY (SELECT ..) TO STDOUT (FORMAT BINARY)`` and parse the same fixed-width
layout with numpy. TimescaleDB is not required (nor used: plain PostgreSQL 15 declarative
partitioning).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import socket
from typing import Any, Iterator

import numpy as np
import psycopg
from psycopg import sql

from dm.errors import StorageDataError, StorageError, StorageTimeoutError
from dm.records import I64_MAX, RType
from dm.storage.base import (
    ALL_TABLES,
    COLUMNS,
    NS_PER_DAY,
    ORDER_BY,
    RECORD_TABLES,
    TICK_TABLES,
    Storage,
    Watchdog,
    dedup_column,
    definition_dedup,
    definitions_from_rows,
    gap_dedup,
    legacy_gap,
    migrations,
    now_ns,
    record_reader,
    records_from_columns,
    redact_text,
    redact_url,
    text_column,
    validate,
)
from dm.storage._copy import make_program

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
COPY_HEADER = COPY_SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # flags 0, no extension
COPY_TRAILER = b"\xff\xff"  # int16 -1
_BE = {"BIGINT": ">i8", "INTEGER": ">i4", "SMALLINT": ">i2"}
MIGRATION_LOCK = 0x646D_6D69_6772  # pg_advisory_lock key: "dm migr"
LAST_DAY = I64_MAX // NS_PER_DAY  # the day whose end does not fit in BIGINT
#: a write creates the missing day partitions of its batch when there are at most this many per
#: table; with more, only days near now get one and the rest of the rows go to the DEFAULT
#: partition. So a batch spanning hundreds of days (a Kraken book snapshot: levels keep the ts of
#: their last change) never runs hundreds of CREATE TABLEs in one write (seconds: the persister
#: would flag storage as hung), nor leaves partitions of random old days behind.
WRITE_PARTITION_BUDGET = 4
#: days of partitions ``maintain`` creates ahead of today
PARTITIONS_AHEAD_DAYS = 2


def _row_dtype(table: str) -> np.dtype:
    """Big-endian packed dtype of one binary COPY tuple of ``table``: i16 field count, then for
    each column i32 length + value."""
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    for i, c in enumerate(COLUMNS[table]):
        fields += [(f"len{i}", ">i4"), (f"v{i}", _BE[c.sqltype])]
    return np.dtype(fields)


ROW_DTYPES: dict[str, np.dtype] = {t: _row_dtype(t) for t in COLUMNS}


def _template(table: str) -> np.void:
    """One tuple with the field count and every length filled in (values zero)."""
    t = np.zeros(1, ROW_DTYPES[table])
    t["nfields"] = len(COLUMNS[table])
    for i, c in enumerate(COLUMNS[table]):
        t[f"len{i}"] = c.width
    return t.view(f"V{t.dtype.itemsize}")[0]


_TEMPLATES = {t: _template(t) for t in COLUMNS}


def _empty_rows(table: str, n: int) -> np.ndarray:
    """n tuples with count and lengths set by one contiguous broadcast copy of the template."""
    dt = ROW_DTYPES[table]
    out = np.empty(n, dtype=dt)
    out.view(f"V{dt.itemsize}")[:] = _TEMPLATES[table]
    return out


def copy_rows(table: str, cols: list[np.ndarray]) -> np.ndarray:
    """The tuples of a binary COPY (no header/trailer) of stored columns as a big-endian packed
    structured array; its ``tobytes()`` is what ``copy.write_row`` sends for the same rows."""
    out = _empty_rows(table, len(cols[0]) if cols else 0)
    for i, v in enumerate(cols):
        out[f"v{i}"] = v
    return out


def copy_rows_from_records(table: str, arr: np.ndarray) -> np.ndarray:
    """``copy_rows`` straight from a validated record array (dtype ``DTYPES`` of the table's
    rtype, u64 values checked by ``row_problems``): one C pass over the records, dedup hash
    included (dm/storage/_copy.pyx), for every table it has a program for; else
    ``copy_rows_from_records_numpy``, which gives the same bytes."""
    pr = _PROGRAMS.get(table)
    if pr is not None:
        return pr.rows(arr)
    return copy_rows_from_records_numpy(table, arr)


def copy_rows_from_records_numpy(table: str, arr: np.ndarray) -> np.ndarray:
    """``copy_rows_from_records`` in numpy: each record field is cast and byte-swapped into its
    big-endian slot, one strided pass per column, then the dedup hash over column copies."""
    spec = COLUMNS[table]
    out = _empty_rows(table, len(arr))
    for i, c in enumerate(spec):
        if c.get is not None:
            out[f"v{i}"] = c.get(arr)  # u64 <= i64 max was validated, so the cast is exact
    d = dedup_column(table, arr)
    if d is not None:
        out[f"v{len(spec) - 1}"] = d
    return out


#: the C conversion of each table (None: numpy) — dm/storage/_copy.pyx
_PROGRAMS = {t: make_program(t, ROW_DTYPES[t]) for t in COLUMNS}


def binary_copy_payload(table: str, arr: np.ndarray) -> bytes:
    """A complete ``COPY <table> (columns) FROM STDIN (FORMAT BINARY)`` payload for a record
    array of the table's rtype (validated by the caller): header + tuples + trailer."""
    return COPY_HEADER + copy_rows_from_records(table, arr).tobytes() + COPY_TRAILER


def parse_copy_rows(table: str, data: bytes | memoryview) -> list[np.ndarray]:
    """Parse a ``COPY .. TO STDOUT (FORMAT BINARY)`` result of ``table``'s columns (no NULLs)
    into int64 columns. Raises ``StorageError`` on an unexpected layout."""
    mv = memoryview(data)
    if bytes(mv[:11]) != COPY_SIGNATURE:
        raise StorageError(f"{table}: not a binary COPY stream")
    ext = int.from_bytes(mv[15:19], "big")
    start = 19 + ext
    if bytes(mv[-2:]) != COPY_TRAILER:
        raise StorageError(f"{table}: binary COPY stream has no trailer")
    body = mv[start:-2]
    dt = ROW_DTYPES[table]
    if len(body) % dt.itemsize:
        raise StorageError(f"{table}: binary COPY body of {len(body)} B is not a multiple of {dt.itemsize} B rows")
    rows = np.frombuffer(body, dtype=dt)
    spec = COLUMNS[table]
    if len(rows) and ((rows["nfields"] != len(spec)).any()
                      or any((rows[f"len{i}"] != c.width).any() for i, c in enumerate(spec))):
        raise StorageError(f"{table}: unexpected field count/length in binary COPY stream")
    return [rows[f"v{i}"].astype(np.int64) for i in range(len(spec))]


def _built_row_dtype() -> np.dtype:
    from dm.bars import BUILT_COLUMNS

    f: list[tuple[str, str]] = [("nfields", ">i2")]
    for i in range(len(BUILT_COLUMNS)):
        f += [(f"len{i}", ">i4"), (f"v{i}", ">i8")]
    return np.dtype(f)


_BUILT_ROW = _built_row_dtype()


def _bars_row_dtype() -> np.dtype:
    """A binary COPY tuple of ``bars``: the ``BUILT_COLUMNS`` at their column widths, flags, source."""
    from dm.bars import BUILT_COLUMNS

    width = {"publisher_id": 4, "size_precision": 2}  # integer, smallint (migrations 001/003)
    f: list[tuple[str, str]] = [("nfields", ">i2")]
    for i, c in enumerate(BUILT_COLUMNS):
        f += [(f"len{i}", ">i4"), (f"v{i}", f">i{width.get(c, 8)}")]
    return np.dtype(f + [("len_flags", ">i4"), ("flags", ">i2"), ("len_source", ">i4"), ("source", ">i2")])


_BARS_ROW = _bars_row_dtype()
#: fewer later-than-first bars in a batch than this: all through the ON CONFLICT merge (one
#: statement fewer than the COPY; measured in bench/bench_history.py)
_DIRECT_BARS_MIN = 256
#: at most this many bars merge from array parameters, more through the staging table
_UNNEST_BARS_MAX = 512


def _read_dtype(table: str) -> np.dtype:
    """Big-endian packed dtype of one binary COPY tuple of a read (``scan``) of ``table``: the
    columns of ``record_reader(table).columns`` (``dedup`` left out: no record field holds it)."""
    r = record_reader(table)
    f: list[tuple[str, str]] = [("nfields", ">i2")]
    for i, c in enumerate(r.columns):
        f += [(f"len{i}", ">i4"), (f"v{i}", _BE[c.sqltype])]
    return np.dtype(f)


READ_DTYPES: dict[str, np.dtype] = {t: _read_dtype(t) for t in COLUMNS}
#: the value slots of a read tuple under the record's field names (``RecordReader.source``)
_READ_SOURCE: dict[str, np.dtype] = {
    t: record_reader(t).source([READ_DTYPES[t].fields[f"v{i}"][0] for i in range(len(record_reader(t).columns))],
                               [READ_DTYPES[t].fields[f"v{i}"][1] for i in range(len(record_reader(t).columns))],
                               READ_DTYPES[t].itemsize)
    for t in COLUMNS}


def read_columns_sql(table: str) -> str:
    """The SELECT list of a read: ``record_reader(table).columns``, a nullable column as
    ``coalesce(c, -1)`` so every tuple keeps the same width (-1 reads back as u64 max)."""
    return ", ".join(f"coalesce({c.name}, -1)" if c.nullable else c.name for c in record_reader(table).columns)


def _records_of_rows(table: str, body, n: int) -> np.ndarray:
    """The first ``n`` whole binary COPY tuples of a read of ``table`` in ``body`` (no header)
    → record array, by one structured assignment (``RecordReader.records``)."""
    dt = READ_DTYPES[table]
    rows = np.frombuffer(body, dtype=dt, count=n)
    if n and (rows["nfields"] != len(record_reader(table).columns)).any():
        raise StorageError(f"{table}: unexpected field count in binary COPY stream")
    return record_reader(table).records(rows.view(_READ_SOURCE[table]))


def _bars_from(src: str, pubs: str, ivs: str) -> str:
    """CTEs ``t, g, b``: the built bars (``dm.bars``) of the trades in ``src`` (a CTE name or a
    parenthesised SELECT with the trades' columns) for the (publisher, interval) pairs in the
    arrays ``pubs``/``ivs``, merged into ``bars``; ``b`` returns one row per bar written.
    open/close are the least/greatest ``ARRAY[ts_event, venue order, dedup, price]`` (exact:
    bigint array comparison), volume saturates at i64 max."""
    from dm.bars import merge_clause

    return (
        f"t AS (SELECT s.*, CASE WHEN s.trade_id <> 0 THEN s.trade_id ELSE s.sequence END AS ord, p.iv,"
        f" s.ts_event - mod(s.ts_event, p.iv * 1000000000) AS bar_ts FROM {src} s"
        f" JOIN unnest({pubs}, {ivs}) AS p(pub, iv) ON p.pub = s.publisher_id),"
        " g AS (SELECT instrument_id, publisher_id, iv, bar_ts,"
        " min(ARRAY[ts_event, ord, dedup, price]) AS o, max(ARRAY[ts_event, ord, dedup, price]) AS c,"
        " max(price) AS hi, min(price) AS lo, least(sum(size), 9223372036854775807)::bigint AS vol,"
        " count(*) AS n, max(size_precision) AS sp FROM t GROUP BY instrument_id, publisher_id, iv, bar_ts),"
        " b AS (INSERT INTO bars (instrument_id, publisher_id, ts_event, interval_s, open, high, low, close, volume,"
        " flags, size_precision, count, source, open_ts, open_ord, open_dd, close_ts, close_ord, close_dd)"
        " SELECT instrument_id, publisher_id, bar_ts, iv, o[4], hi, lo, c[4], vol, 0, sp, n, 1, o[1], o[2], o[3],"
        " c[1], c[2], c[3] FROM g" + merge_clause() + " RETURNING 1)")


def partition_name(table: str, day: int) -> str:
    """``<table>_pYYYYMMDD`` for a day number (days since 1970-01-01 UTC)."""
    d = _dt.date(1970, 1, 1) + _dt.timedelta(days=int(day))
    return f"{table}_p{d:%Y%m%d}"


class PostgresStorage(Storage):
    """Storage on PostgreSQL 15+ (``postgresql://user@host:port/db``).

    ``timeout_s`` (the persister passes ``storage.timeout_s``; None: no deadlines, for tools):
    every call must get its answer within it, or it fails with ``StorageTimeoutError``. Three
    layers make a hung server or a blackholed connection (open, no bytes passing) an error in
    time: libpq ``connect_timeout``; TCP keepalives and ``tcp_user_timeout`` (the kernel drops a
    connection whose peer stopped acknowledging); the server's ``statement_timeout`` (0.8 x
    ``timeout_s``: a live but slow server cancels the statement itself and the connection survives); and a
    client-side watchdog that shuts the socket down when a call runs past the deadline (the only
    layer that catches a peer that acknowledges bytes but never answers). The connection is
    re-opened by the next call. ``connect=False`` opens nothing until the first call (a
    persister starts while the database is down)."""

    backend = "postgresql"
    #: try a plain INSERT .. SELECT first (see ``write``); False: always ON CONFLICT DO NOTHING
    optimistic_insert: bool = True

    def __init__(self, url: str, timeout_s: float | None = None, connect: bool = True):
        self.url = url
        self.timeout_s = timeout_s
        self._conn: psycopg.Connection | None = None
        self._parts: set[str] = set()
        self._bar_stage = False
        self._routed_default = 0  # days sent to DEFAULT partitions instead of their own (budget, clash)
        self._staged: set[str] = set()
        self._closed = False
        self._in_call = False
        self._fd = -1
        self.watchdog = Watchdog()
        if connect:
            try:
                self._connect()
            except psycopg.Error as e:
                err = StorageError(f"cannot connect to PostgreSQL at {redact_url(url)}: {redact_text(str(e), url)}")
                err.outage = True
                raise err from e

    # --- helpers ----------------------------------------------------------------------------
    def _connect(self) -> None:
        kw: dict[str, Any] = {"autocommit": True, "connect_timeout": 10}
        if self.timeout_s is not None:
            t = self.timeout_s
            kw.update(
                connect_timeout=max(2, math.ceil(t)),  # libpq: whole seconds, 2 at least
                keepalives=1, keepalives_idle=max(1, math.ceil(t / 2)), keepalives_interval=1,
                keepalives_count=max(1, math.ceil(t / 2)), tcp_user_timeout=max(1, int(t * 1000)),
                # the server cancels a slow statement first (the connection survives); the
                # watchdog at timeout_s catches what the server cannot (a dead path)
                options=f"-c statement_timeout={max(1, int(t * 800))}",
            )
        self._conn = psycopg.connect(self.url, **kw)
        self._staged.clear()  # TEMP staging tables live in a session
        self._bar_stage = False

    def _abort(self) -> None:
        """Watchdog thread: shut the connection's socket down so the blocked call fails now
        (shutdown, not close: the fd stays owned by libpq, nobody else can reuse it)."""
        try:
            sock = socket.socket(fileno=os.dup(self._fd))
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is broken anyway
                pass

    @contextlib.contextmanager
    def _errors(self, what: str, deadline_s: float | None = None) -> Iterator[None]:
        """One public call: (re)connect if needed, arm the deadline, map driver errors to
        ``StorageError`` / ``StorageDataError`` / ``StorageTimeoutError`` (messages without
        secrets). Nested calls run inside the outer one's deadline."""
        if self._closed:
            raise StorageError("postgresql storage is closed")
        if self._in_call:
            yield
            return
        self._in_call = True
        deadline = deadline_s if deadline_s is not None else self.timeout_s
        wd = self.watchdog
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._drop_connection()
                with wd.guard(deadline, lambda: None):
                    self._connect()
            self._fd = self._conn.pgconn.socket
            with wd.guard(deadline, self._abort):
                yield
            if wd.fired:  # answered just as the deadline passed: the socket is shut anyway
                self._drop_connection()
        except (StorageDataError, StorageTimeoutError):
            raise
        except Exception as e:
            msg = redact_text(str(e), self.url)
            if wd.fired:
                self._drop_connection()
                raise StorageTimeoutError(
                    f"postgresql {what}: no answer from {redact_url(self.url)} within {deadline} s "
                    f"(storage.timeout_s); connection closed") from e
            if isinstance(e, StorageError):
                raise
            if not isinstance(e, psycopg.Error):
                raise
            state = getattr(e, "sqlstate", None) or ""
            if state == "57014" and "statement timeout" in msg:
                raise StorageTimeoutError(f"postgresql {what}: {msg}") from e
            if state.startswith("22") or (state.startswith("23") and state != "23505"):
                raise StorageDataError(f"postgresql {what}: {msg}") from e
            err = StorageError(f"postgresql {what}: {msg}")
            if self._conn is None or self._conn.broken or self._conn.closed:
                self._drop_connection()
                err.outage = True  # refused, lost, or never made
            elif state[:2] in ("08", "53") or state in ("57P01", "57P02", "57P03"):
                err.outage = True  # connection exception, server out of resources or shutting down
            raise err from e
        finally:
            self._in_call = False

    def _scalar(self, query, params=None):
        row = self._conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    # --- schema -----------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        applied: list[str] = []
        # migrations may rewrite big tables: no statement timeout, a generous client deadline
        long = None if self.timeout_s is None else max(120.0, 20 * self.timeout_s)
        with self._errors("migrate", long):
            self._conn.execute("SET statement_timeout = 0")
            self._conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ns BIGINT NOT NULL)"
                )
                done = {r[0] for r in self._conn.execute("SELECT version FROM schema_migrations")}
                for version, name, text in migrations("postgres"):
                    if version in done:
                        continue
                    with self._conn.transaction():
                        self._conn.execute(text)
                        self._conn.execute(
                            "INSERT INTO schema_migrations (version, name, applied_ns) VALUES (%s, %s, %s)",
                            (version, name, now_ns()),
                        )
                    applied.append(f"{version:03d}_{name}")
            finally:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
                self._conn.execute("RESET statement_timeout")
            self.maintain()
        return applied

    def schema_version(self) -> int:
        with self._errors("schema_version"):
            if self._scalar("SELECT to_regclass('schema_migrations')") is None:
                return 0
            return int(self._scalar("SELECT coalesce(max(version), 0) FROM schema_migrations"))

    def ping(self) -> None:
        with self._errors("ping"):
            self._conn.execute("SELECT 1").fetchone()

    def ensure_partitions(self, days, tables=TICK_TABLES, budget: int | None = None) -> list[str]:
        """Create the day partitions (days since the epoch, UTC) of the tick tables that do not
        exist yet, each in its own transaction; a concurrent creator is tolerated. Returns the
        names created by this call.

        ``budget`` (the write path passes ``WRITE_PARTITION_BUDGET``): when more days than that
        lack a partition, only those from yesterday to ``PARTITIONS_AHEAD_DAYS`` ahead get one
        (normally made already by ``maintain``); rows of the other days go to the table's DEFAULT
        partition (migration 006). A day whose rows are
        already in the DEFAULT partition cannot get its own partition (PostgreSQL refuses:
        check_violation); it is remembered and its rows keep going to DEFAULT."""
        created = []
        with self._errors("ensure_partitions"):
            for table in tables:
                todo = [d for d in sorted({int(d) for d in days if 0 <= int(d) <= LAST_DAY}, reverse=True)
                        if partition_name(table, d) not in self._parts]
                if budget is not None and len(todo) > budget:
                    # many days at once (a snapshot of old levels): only days near now get their
                    # partition here; the others' rows go to DEFAULT
                    today = now_ns() // NS_PER_DAY
                    near = [d for d in todo if today - 1 <= d <= today + PARTITIONS_AHEAD_DAYS][:budget]
                    self._routed_default += len(todo) - len(near)
                    todo = near
                for day in todo:
                    name = partition_name(table, day)
                    lo = day * NS_PER_DAY
                    hi = sql.SQL("MAXVALUE") if day >= LAST_DAY else sql.Literal((day + 1) * NS_PER_DAY)
                    stmt = sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(name), sql.Identifier(table), sql.Literal(lo), hi
                    )
                    try:
                        if self._scalar("SELECT to_regclass(%s)", (name,)) is None:
                            self._conn.execute(stmt)
                            created.append(name)
                    except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                        pass  # another writer created it between our check and our CREATE
                    except psycopg.errors.CheckViolation:
                        self._routed_default += 1  # that day's rows are in DEFAULT already: they stay there
                    self._parts.add(name)
        return created

    def maintain(self, ahead_days: int = PARTITIONS_AHEAD_DAYS, now: int | None = None) -> list[str]:
        """Maintenance, outside the write path: create the day partitions of every tick table
        from today (UTC) to ``ahead_days`` days ahead, so writes of current data never run DDL.
        Run by ``migrate``, by the persister every ``MAINTAIN_EVERY_S`` and by ``dm db maintain``.
        Returns the partitions created."""
        today = (now_ns() if now is None else int(now)) // NS_PER_DAY
        return self.ensure_partitions(range(today - 1, today + ahead_days + 1))

    def _ensure_stage(self, table: str) -> str:
        stage = f"_dm_stage_{table}"
        if table not in self._staged:
            cols = sql.SQL(", ").join(
                sql.SQL("{} {} NOT NULL").format(sql.Identifier(c.name), sql.SQL(c.sqltype)) for c in COLUMNS[table]
            )
            self._conn.execute(
                sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(sql.Identifier(stage), cols)
            )
            self._staged.add(table)
        return stage

    # --- records ----------------------------------------------------------------------------
    def write(self, batches: dict[int, np.ndarray], checked: bool = False, then=None) -> dict[str, int]:
        """See ``Storage.write``. Per COPY table: binary COPY into the TEMP staging table, then a
        plain ``INSERT .. SELECT`` in a savepoint (the common case: nothing is a duplicate, and a
        plain insert is about twice as fast as ON CONFLICT's speculative insertion); on a unique
        violation the savepoint is rolled back and ``INSERT .. ON CONFLICT DO NOTHING`` runs.
        GAP and INSTRUMENT_DEF rows go in with one ``INSERT .. SELECT FROM unnest(arrays)`` per
        table, in the same transaction."""
        prepared = self._prepare(batches, checked)
        result = {RECORD_TABLES[rt]: 0 for rt, _ in prepared}
        if RType.INSTRUMENT_DEF in batches:
            result["instruments"] = 0
        todo = [(rt, a) for rt, a in prepared if len(a)]
        if not todo and then is None:
            return result
        with self._errors("write"):
            for rt, arr in todo:
                table = RECORD_TABLES[rt]
                if table in TICK_TABLES:
                    days = np.unique(arr["ts_event"] // np.uint64(NS_PER_DAY)).tolist()
                    self.ensure_partitions(days + [days[-1] + 1], (table,), budget=WRITE_PARTITION_BUDGET)
                if table in COLUMNS:
                    self._ensure_stage(table)
            with self._conn.transaction(), self._conn.cursor() as cur:
                for rt, arr in todo:
                    table = RECORD_TABLES[rt]
                    if rt == RType.GAP:
                        result[table] = self._write_gaps(cur, arr)
                    elif rt == RType.INSTRUMENT_DEF:
                        result["instruments"], result[table] = self._write_definitions(cur, arr)
                    else:
                        result[table] = self._copy(cur, table, arr)
                if then is not None:
                    then(cur, dict(result))
        return result

    def _copy(self, cur: psycopg.Cursor, table: str, arr: np.ndarray) -> int:
        spec = COLUMNS[table]
        names = sql.SQL(", ").join(sql.Identifier(c.name) for c in spec)
        exprs = sql.SQL(", ").join(
            sql.SQL("NULLIF({}, -1)").format(sql.Identifier(c.name)) if c.nullable else sql.Identifier(c.name)
            for c in spec)
        stage = sql.Identifier(f"_dm_stage_{table}")
        rows = copy_rows_from_records(table, arr)
        payload = memoryview(rows).cast("B")
        direct = self.optimistic_insert and not any(c.nullable for c in spec)
        if direct:
            # The common case (nothing stored yet, nothing repeated): COPY straight into the
            # table in a savepoint — the unique index still refuses any duplicate, and then the
            # savepoint is rolled back and the batch goes through the staging table with
            # ON CONFLICT DO NOTHING. Same guarantee, one pass over the rows instead of two.
            try:
                with self._conn.transaction():
                    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table), names)) as cp:
                        cp.write(COPY_HEADER)
                        cp.write(payload)
                        cp.write(COPY_TRAILER)
                    if table == "trades" and self.bar_plan is not None:
                        # every row was inserted: its bars are built client-side (numpy)
                        self._merge_built(cur, arr)
                return len(arr)
            except psycopg.errors.UniqueViolation:
                pass
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, names)) as cp:
            cp.write(COPY_HEADER)
            cp.write(payload)
            cp.write(COPY_TRAILER)
        insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(sql.Identifier(table), names, exprs, stage)
        if table == "trades" and self.bar_plan is not None:
            pubs, ivs = self.bar_plan.pairs(np.unique(arr["publisher_id"]).tolist())
            if pubs:
                return self._insert_trades_with_bars(cur, insert, pubs, ivs, arr, try_plain=not direct)
        if direct:  # duplicates are known to be there
            cur.execute(insert + sql.SQL(" ON CONFLICT DO NOTHING"))
            return cur.rowcount
        return self._insert_from_stage(cur, insert)

    def _insert_trades_with_bars(self, cur: psycopg.Cursor, insert: sql.Composable, pubs: list[int],
                                 ivs: list[int], arr: np.ndarray, try_plain: bool = True) -> int:
        """``insert`` (trades from the staging table) and the built bars (``dm.bars``) of exactly
        the rows it inserted merged into ``bars``, so a refused (re-delivered) trade never reaches
        a bar. Common case (``optimistic_insert``, nothing refused): the plain insert, then the
        batch's bars built with numpy. Otherwise one statement: a data-modifying CTE ``INSERT ..
        ON CONFLICT DO NOTHING RETURNING`` feeding the same aggregation in SQL. Returns trades
        inserted."""
        def stmt(conflict: sql.Composable) -> sql.Composable:
            ins = sql.SQL("ins AS ({}{} RETURNING instrument_id, publisher_id, ts_event, price, size, trade_id,"
                          " sequence, size_precision, dedup)").format(insert, conflict)
            return sql.SQL("WITH {}, {} SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM b)").format(
                ins, sql.SQL(_bars_from("ins", "%s::integer[]", "%s::bigint[]")))

        params = (pubs, ivs)
        if self.optimistic_insert and try_plain:  # (the direct COPY of _copy already tried)
            try:
                with self._conn.transaction():  # a savepoint
                    cur.execute(insert)
                    n = cur.rowcount
                    # every row of the batch was inserted: its bars are built client-side (numpy)
                    # and merged, cheaper than RETURNING every row to the aggregation
                    self._merge_built(cur, arr)
            except psycopg.errors.UniqueViolation:
                pass  # some rows are stored already (a replay) or repeated in the batch
            else:
                return n
        cur.execute(stmt(sql.SQL(" ON CONFLICT DO NOTHING")), params)
        return int(cur.fetchone()[0])

    def _merge_built(self, cur: psycopg.Cursor, arr: np.ndarray) -> int:
        """Merge the bars (``dm.bars.build_bars``) of trades that were all just inserted into
        ``bars``; call it inside the savepoint of that insert (a ``UniqueViolation`` from here
        must send the batch down the ON CONFLICT path, ``_insert_trades_with_bars``).

        Trades arrive in time order, so of the bars of one (instrument, publisher, interval) in a
        batch only the first can be stored already (the bar the previous batch ended in). Those
        go through the staging table and ``INSERT .. ON CONFLICT DO UPDATE``; the others, when
        there are many (1s bars: about one per trade), with one binary COPY straight into
        ``bars`` (ON CONFLICT's speculative insertion costs several plain rows). A bar that is
        stored after all (late trades, a replayed batch) makes the unique key refuse the COPY and
        the caller redoes the batch on the exact path. Returns bars written."""
        from dm.bars import build_bars

        b = build_bars(arr, self.bar_plan)
        if not len(b):
            return 0
        # b is ordered by (instrument, publisher, interval, ts_event): one segment per key
        iid, pub, iv = b["instrument_id"], b["publisher_id"], b["interval_s"]
        first = np.empty(len(b), bool)
        first[0] = True
        first[1:] = (iid[1:] != iid[:-1]) | (pub[1:] != pub[:-1]) | (iv[1:] != iv[:-1])
        n_first = int(first.sum())
        if len(b) - n_first < _DIRECT_BARS_MIN:  # a few bars per key (1m/1h/1d): one merge
            self._upsert_built(cur, b)
            return len(b)
        self._upsert_built(cur, b[first])
        self._copy_bars(cur, b[~first])
        return len(b)

    def _copy_bars(self, cur: psycopg.Cursor, b: np.ndarray) -> None:
        """Binary COPY of built bars (``BUILT_DTYPE``) straight into ``bars`` (flags 0, source 1)."""
        from dm.bars import BUILT_COLUMNS, SOURCE_BUILT

        rows = np.empty(len(b), _BARS_ROW)
        rows["nfields"] = len(BUILT_COLUMNS) + 2
        for i, c in enumerate(BUILT_COLUMNS):
            rows[f"len{i}"] = _BARS_ROW[f"v{i}"].itemsize
            rows[f"v{i}"] = b[c]
        rows["len_flags"], rows["flags"], rows["len_source"], rows["source"] = 2, 0, 2, SOURCE_BUILT
        with cur.copy(f"COPY bars ({', '.join(BUILT_COLUMNS)}, flags, source) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(COPY_HEADER)
            cp.write(memoryview(rows).cast("B"))
            cp.write(COPY_TRAILER)

    def _upsert_built(self, cur: psycopg.Cursor, b: np.ndarray) -> int:
        """Merge built bars into ``bars``: one ``INSERT .. SELECT .. ON CONFLICT DO UPDATE``
        (``dm.bars.merge_clause``) from array parameters (a few rows: one round trip) or from the
        staging table filled by binary COPY."""
        from dm.bars import BUILT_COLUMNS, SOURCE_BUILT, merge_clause

        names = ", ".join(BUILT_COLUMNS)
        if len(b) <= _UNNEST_BARS_MAX:  # one round trip: the rows as array parameters
            arrays = ", ".join(["%s::bigint[]"] * len(BUILT_COLUMNS))
            cur.execute(f"INSERT INTO bars ({names}, flags, source) SELECT *, 0, {SOURCE_BUILT} FROM unnest({arrays})"
                        + merge_clause(), [b[c].tolist() for c in BUILT_COLUMNS])
            return cur.rowcount
        if not self._bar_stage:
            cols = ", ".join(f"{c} BIGINT NOT NULL" for c in BUILT_COLUMNS)
            self._conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS _dm_stage_built ({cols}) ON COMMIT DELETE ROWS")
            self._bar_stage = True
        rows = np.empty(len(b), _BUILT_ROW)
        rows["nfields"] = len(BUILT_COLUMNS)
        for i, c in enumerate(BUILT_COLUMNS):
            rows[f"len{i}"] = 8
            rows[f"v{i}"] = b[c]
        with cur.copy(f"COPY _dm_stage_built ({names}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(COPY_HEADER)
            cp.write(memoryview(rows).cast("B"))
            cp.write(COPY_TRAILER)
        cur.execute(f"INSERT INTO bars ({names}, flags, source) SELECT {names}, 0, {SOURCE_BUILT} FROM _dm_stage_built"
                    + merge_clause())
        return cur.rowcount

    def rebuild_bars(self, since_ns: int = 0, plan=None) -> dict[str, int]:
        """Recompute the built bars (source 1) from the stored trades: for each interval of
        ``plan`` (default: this storage's ``bar_plan``, else ``dm.bars.BarPlan()``), every bar
        starting at or after ``since_ns`` floored to the interval is deleted and rebuilt with the
        same aggregation the write path uses, in one transaction. Returns ``{"deleted",
        "bars"}``."""
        from dm.bars import BarPlan

        plan = plan or self.bar_plan or BarPlan()
        long = None if self.timeout_s is None else max(600.0, 100 * self.timeout_s)
        out = {"deleted": 0, "bars": 0}
        with self._errors("rebuild_bars", long):
            pubs_all = [r[0] for r in self._conn.execute("SELECT DISTINCT publisher_id FROM trades")]
            pubs, ivs = plan.pairs(pubs_all)
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SET LOCAL statement_timeout = 0")
                for p, iv in zip(pubs, ivs):
                    lo = int(since_ns) - int(since_ns) % (iv * 1_000_000_000)
                    cur.execute("DELETE FROM bars WHERE source = 1 AND publisher_id = %s AND interval_s = %s"
                                " AND ts_event >= %s", (p, iv, lo))
                    out["deleted"] += cur.rowcount
                    src = ("(SELECT instrument_id, publisher_id, ts_event, price, size, trade_id, sequence,"
                           f" size_precision, dedup FROM trades WHERE publisher_id = {int(p)} AND ts_event >= {lo})")
                    cur.execute(sql.SQL("WITH {} SELECT count(*) FROM b").format(
                        sql.SQL(_bars_from(src, "%s::integer[]", "%s::bigint[]"))), ([p], [iv]))
                    out["bars"] += int(cur.fetchone()[0])
        return out

    def _insert_from_stage(self, cur: psycopg.Cursor, insert: sql.Composable) -> int:
        """Run ``insert`` (INSERT .. SELECT from a staging table) idempotently; rows inserted."""
        if self.optimistic_insert:
            try:
                with self._conn.transaction():  # a savepoint
                    cur.execute(insert)
                return cur.rowcount
            except psycopg.errors.UniqueViolation:
                pass  # some rows are already stored (a replay) or repeated in the batch
        cur.execute(insert + sql.SQL(" ON CONFLICT DO NOTHING"))
        return cur.rowcount

    def _write_gaps(self, cur: psycopg.Cursor, a: np.ndarray) -> int:
        cur.execute(
            "INSERT INTO gaps (publisher_id, instrument_id, kind, units, first_missing, last_missing, detected_ns,"
            " ts_recv, flags, detail, dedup, state)"
            " SELECT *, 'open' FROM unnest(%s::integer[], %s::bigint[], %s::text[], %s::smallint[], %s::bigint[],"
            " %s::bigint[], %s::bigint[], %s::bigint[], %s::smallint[], %s::text[], %s::bigint[])"
            " ON CONFLICT (publisher_id, instrument_id, dedup) DO NOTHING",
            (a["publisher_id"].tolist(), a["instrument_id"].tolist(), text_column(a, "kind"), a["units"].tolist(),
             a["first_missing"].tolist(), a["last_missing"].tolist(), a["ts_event"].tolist(), a["ts_recv"].tolist(),
             a["flags"].tolist(), text_column(a, "detail"), gap_dedup(a).tolist()))
        return cur.rowcount

    def _write_definitions(self, cur: psycopg.Cursor, a: np.ndarray) -> tuple[int, int]:
        """Register the instruments (when absent), refuse rows whose id the database registers to
        another symbol (checked after the insert, so a concurrent registrant is seen), store the
        definitions. Returns (instruments inserted, definitions inserted)."""
        iid = a["instrument_id"].tolist()
        sym, ex = text_column(a, "symbol"), text_column(a, "exchange")
        raw = text_column(a, "raw_symbol")
        sp = a["size_precision"].tolist()
        idx = list(range(len(a)))
        cur.execute(
            "INSERT INTO instruments (instrument_id, symbol, exchange, venue_symbol, publisher_id, created_ns, size_precision)"
            " SELECT DISTINCT ON (iid) iid, sym, ex, raw, pub, %s, sp"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::integer[], %s::smallint[])"
            "   AS d(iid, sym, ex, raw, pub, sp)"
            " ORDER BY iid ON CONFLICT DO NOTHING",
            (now_ns(), iid, sym, ex, raw, a["publisher_id"].tolist(), sp))
        registered = cur.rowcount
        cur.execute(
            "WITH d(idx, iid, sym, ex) AS (SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::text[], %s::text[]))"
            " SELECT d.idx, i.instrument_id, i.symbol, i.exchange FROM d JOIN instruments i ON i.instrument_id = d.iid"
            "   WHERE (i.symbol, i.exchange) <> (d.sym, d.ex)",
            (idx, iid, sym, ex))
        clashes = cur.fetchall()
        if clashes:
            raise StorageDataError(
                f"{len(clashes)} instrument definition(s) contradict the registry",
                [(int(RType.INSTRUMENT_DEF), int(i), _clash(iid[i], sym[i], ex[i], int(oid), osym, oex))
                 for i, oid, osym, oex in sorted(clashes)])
        cur.execute(
            "UPDATE instruments i SET size_precision = d.sp"
            " FROM unnest(%s::bigint[], %s::smallint[]) AS d(iid, sp)"
            " WHERE i.instrument_id = d.iid AND i.size_precision IS NULL",
            (iid, sp))
        cur.execute(
            "INSERT INTO instrument_definitions (instrument_id, publisher_id, ts_event, ts_recv, min_price_increment,"
            " display_factor, lot_size, contract_multiplier, strike_price, expiration, activation, size_precision,"
            " price_precision, instrument_class, flags, symbol, exchange, raw_symbol, underlying, base, quote, dedup)"
            " SELECT iid, pub, ts, tr, tick, df, lot, mult, strike, NULLIF(exp, -1), NULLIF(act, -1), sp, pp, cls,"
            "   fl, sym, ex, raw, und, base, quote, dd"
            " FROM unnest(%s::bigint[], %s::integer[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],"
            "   %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::smallint[], %s::smallint[],"
            "   %s::smallint[], %s::smallint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
            "   %s::text[], %s::bigint[])"
            "   AS d(iid, pub, ts, tr, tick, df, lot, mult, strike, exp, act, sp, pp, cls, fl, sym, ex, raw, und, base,"
            "        quote, dd)"
            " ON CONFLICT DO NOTHING",
            (iid, a["publisher_id"].tolist(), a["ts_event"].tolist(), a["ts_recv"].tolist(),
             a["min_price_increment"].tolist(), a["display_factor"].tolist(), a["lot_size"].tolist(),
             a["contract_multiplier"].tolist(), a["strike_price"].tolist(),
             a["expiration"].astype(np.int64).tolist(), a["activation"].astype(np.int64).tolist(), sp,
             a["price_precision"].tolist(), a["instrument_class"].tolist(), a["flags"].tolist(), sym, ex, raw,
             text_column(a, "underlying"), text_column(a, "base"), text_column(a, "quote"),
             definition_dedup(a).tolist()))
        return registered, cur.rowcount

    def fetch(self, table: str, instrument_id: int | None = None) -> np.ndarray:
        self._check_table(table)
        names = sql.SQL(", ").join(
            sql.SQL("coalesce({}, -1)").format(sql.Identifier(c.name)) if c.nullable else sql.Identifier(c.name)
            for c in COLUMNS[table])
        conds = ["source = 0"] if table == "bars" else []  # received bars; dm's own: scan / dm.history
        if instrument_id is not None:
            conds.append(f"instrument_id = {int(instrument_id)}")
        where = sql.SQL(" WHERE " + " AND ".join(conds) if conds else "")
        q = sql.SQL("COPY (SELECT {} FROM {}{} ORDER BY {}) TO STDOUT (FORMAT BINARY)").format(
            names, sql.Identifier(table), where, sql.SQL(ORDER_BY[table])
        )
        with self._errors("fetch"), self._conn.cursor() as cur:
            buf = bytearray()
            with cur.copy(q) as cp:
                for chunk in cp:
                    buf += chunk
        cols = parse_copy_rows(table, buf)
        return records_from_columns(table, cols, len(cols[0]))

    def scan(self, table, instrument_ids=None, start_ns=None, end_ns=None, where=None, chunk_rows=1 << 20):
        """See ``Storage.scan``: ``COPY (SELECT ..) TO STDOUT (FORMAT BINARY)`` of the columns a
        record holds (``read_columns_sql``: fixed-width tuples), the bytes gathered as they
        arrive and turned into records by one numpy structured assignment per ``chunk_rows``
        rows (bounded memory, no per-row parsing)."""
        self._check_table(table)
        cond, params = self._scan_sql(table, instrument_ids, start_ns, end_ns, where, "%s")
        # literal parameters: COPY cannot take bind parameters
        q = (f"COPY (SELECT {read_columns_sql(table)} FROM {table}{cond} ORDER BY {ORDER_BY[table]})"
             " TO STDOUT (FORMAT BINARY)")
        q = sql.SQL(q.replace("%s", "{}")).format(*[sql.Literal(int(v)) for v in params])
        size = READ_DTYPES[table].itemsize
        limit = max(1, int(chunk_rows)) * size
        with self._errors("scan", None), self._conn.cursor() as cur:
            with cur.copy(q) as cp:
                buf = bytearray()
                head = None
                for chunk in cp:
                    buf += chunk
                    if head is None:
                        if len(buf) < 19:
                            continue
                        if bytes(buf[:11]) != COPY_SIGNATURE:
                            raise StorageError(f"{table}: not a binary COPY stream")
                        head = 19 + int.from_bytes(buf[15:19], "big")
                        if len(buf) < head:
                            head = None
                            continue
                        del buf[:head]
                    if len(buf) >= limit:
                        n = len(buf) // size
                        yield _records_of_rows(table, buf, min(n, chunk_rows))
                        del buf[:min(n, chunk_rows) * size]
                if head is None or bytes(buf[-2:]) != COPY_TRAILER:
                    raise StorageError(f"{table}: binary COPY stream has no trailer")
                del buf[-2:]
                if len(buf) % size:
                    raise StorageError(f"{table}: binary COPY body of {len(buf)} B is not a multiple of {size} B rows")
                while buf:
                    n = min(len(buf) // size, chunk_rows)
                    yield _records_of_rows(table, buf, n)
                    del buf[:n * size]

    def definitions(self, instrument_id: int | None = None) -> np.ndarray:
        q = ("SELECT instrument_id, publisher_id, ts_event, ts_recv, min_price_increment, display_factor, lot_size,"
             " contract_multiplier, strike_price, coalesce(expiration, -1), coalesce(activation, -1), size_precision,"
             " price_precision, instrument_class, flags, symbol, exchange, raw_symbol, underlying, base, quote"
             " FROM instrument_definitions")
        params: tuple = ()
        if instrument_id is not None:
            q += " WHERE instrument_id = %s"
            params = (int(instrument_id),)
        with self._errors("definitions"):
            rows = self._conn.execute(q + " ORDER BY instrument_id, ts_event, dedup", params).fetchall()
        return definitions_from_rows(rows)

    def counts(self) -> dict[str, int]:
        with self._errors("counts"):
            return {
                t: int(self._scalar(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))))
                for t in ALL_TABLES
            }

    # --- instruments ------------------------------------------------------------------------
    def load_instruments(self) -> list[tuple[int, str, str, str, int]]:
        return [r[:5] for r in self.instrument_rows()]

    def instrument_rows(self) -> list[tuple[int, str, str, str, int, int | None]]:
        with self._errors("load_instruments"):
            rows = self._conn.execute(
                "SELECT instrument_id, symbol, exchange, venue_symbol, publisher_id, size_precision"
                " FROM instruments ORDER BY instrument_id"
            ).fetchall()
        return [(int(a), b, c, d, int(e), None if f is None else int(f)) for a, b, c, d, e, f in rows]

    def insert_instrument(self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str,
                          publisher_id: int, size_precision: int | None = None) -> bool:
        with self._errors("insert_instrument"):
            cur = self._conn.execute(
                "INSERT INTO instruments (instrument_id, symbol, exchange, venue_symbol, publisher_id, created_ns,"
                " size_precision) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (int(instrument_id), symbol, exchange, venue_symbol, int(publisher_id), now_ns(),
                 None if size_precision is None else int(size_precision)),
            )
            return cur.rowcount == 1

    # --- gaps -------------------------------------------------------------------------------
    def record_gap(self, instrument_id: int, kind: str, first_missing: int, last_missing: int,
                   detected_ns: int, detail: str = "", publisher_id: int = 0, units: int | None = None) -> int:
        a = legacy_gap(instrument_id, kind, first_missing, last_missing, detected_ns, detail, publisher_id, units)
        validate(int(RType.GAP), a)
        with self._errors("record_gap"):
            with self._conn.transaction(), self._conn.cursor() as cur:
                self._write_gaps(cur, a)
            return int(self._scalar(
                "SELECT id FROM gaps WHERE publisher_id = %s AND instrument_id = %s AND dedup = %s",
                (int(a["publisher_id"][0]), int(a["instrument_id"][0]), int(gap_dedup(a)[0]))))

    def update_gap(self, gap_id: int, state: str, detail: str | None = None) -> bool:
        with self._errors("update_gap"):
            cur = self._conn.execute(
                "UPDATE gaps SET state = %s, detail = coalesce(%s, detail) WHERE id = %s",
                (state, detail, int(gap_id)),
            )
            return cur.rowcount == 1

    def gaps(self, state: str | None = None) -> list[dict[str, Any]]:
        q = ("SELECT id, publisher_id, instrument_id, kind, units, first_missing, last_missing, detected_ns, state,"
             " detail FROM gaps")
        with self._errors("gaps"), self._conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            if state is None:
                cur.execute(q + " ORDER BY id")
            else:
                cur.execute(q + " WHERE state = %s ORDER BY id", (state,))
            return cur.fetchall()

    # --- maintenance ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "url": redact_url(self.url)}
        with self._errors("stats"):
            out["schema_version"] = self.schema_version()
            out["bytes"] = int(self._scalar("SELECT pg_database_size(current_database())"))
            tables: dict[str, Any] = {}
            for t in ALL_TABLES:
                ident = sql.Identifier(t)
                rows = int(self._scalar(sql.SQL("SELECT count(*) FROM {}").format(ident)))
                size, parts = self._conn.execute(
                    "SELECT coalesce(sum(pg_total_relation_size(relid)), 0), count(*) FILTER (WHERE level > 0)"
                    " FROM pg_partition_tree(%s::regclass)", (t,)
                ).fetchone()
                info = {"rows": rows, "bytes": int(size), "ts_min": None, "ts_max": None, "partitions": int(parts)}
                if t in COLUMNS:
                    lo, hi = self._conn.execute(
                        sql.SQL("SELECT min(ts_event), max(ts_event) FROM {}").format(ident)
                    ).fetchone()
                    info["ts_min"], info["ts_max"] = lo, hi
                tables[t] = info
            out["tables"] = tables
        return out

    def days(self, table: str) -> list[int]:
        """UTC days holding rows of ``table``: its day partitions (named ``<table>_pYYYYMMDD``),
        plus the days found in its DEFAULT partition. For retention (``dm.archive``)."""
        self._check_table(table)
        out = set()
        with self._errors("days"):
            for (name,) in self._conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = %s::regclass", (table,)):
                if name.startswith(f"{table}_p") and name[-8:].isdigit():
                    d = _dt.date(int(name[-8:-4]), int(name[-4:-2]), int(name[-2:]))
                    out.add((d - _dt.date(1970, 1, 1)).days)
            if self._scalar("SELECT to_regclass(%s)", (f"{table}_default",)) is not None:
                for (d,) in self._conn.execute(sql.SQL("SELECT DISTINCT ts_event / {} FROM {}").format(
                        sql.Literal(NS_PER_DAY), sql.Identifier(f"{table}_default"))):
                    out.add(int(d))
        return sorted(out)

    def drop_day(self, table: str, day: int, expect_rows: int | None = None) -> int:
        """Remove one UTC day of ``table`` in one transaction: its day partition is detached and
        dropped, its rows in the DEFAULT partition deleted. The table is locked first (writers
        wait a moment), then the day's rows are counted: ``expect_rows`` given and different
        (rows arrived after they were archived) raises ``StorageError`` with nothing removed.
        Returns rows removed."""
        self._check_table(table)
        name = partition_name(table, day)
        lo, hi = int(day) * NS_PER_DAY, (int(day) + 1) * NS_PER_DAY
        long = None if self.timeout_s is None else max(600.0, 100 * self.timeout_s)
        with self._errors("drop_day", long), self._conn.transaction():
            self._conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table)))
            n = int(self._scalar(sql.SQL("SELECT count(*) FROM {} WHERE ts_event >= %s AND ts_event < %s").format(
                sql.Identifier(table)), (lo, hi)))
            if expect_rows is not None and n != expect_rows:
                raise StorageError(f"{table} {name}: {n} rows now, {expect_rows} archived; not removed")
            if self._scalar("SELECT to_regclass(%s)", (name,)) is not None:
                self._conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                    sql.Identifier(table), sql.Identifier(name)))
                self._conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            if self._scalar("SELECT to_regclass(%s)", (f"{table}_default",)) is not None:
                self._conn.execute(sql.SQL("DELETE FROM {} WHERE ts_event >= %s AND ts_event < %s").format(
                    sql.Identifier(f"{table}_default")), (lo, hi))
        self._parts.discard(name)
        return n

    def compress(self) -> str:
        with self._errors("compress", None if self.timeout_s is None else max(600.0, 100 * self.timeout_s)):
            self._conn.execute("SET statement_timeout = 0")
            has_tsdb = self._scalar("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
            for t in ALL_TABLES:
                self._conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(t)))
            self._conn.execute("RESET statement_timeout")
        why = ("TimescaleDB is installed but dm's tables are native partitions, not hypertables"
               if has_tsdb else "TimescaleDB is not available")
        return f"{why}: ran VACUUM (ANALYZE) on {len(ALL_TABLES)} tables and their partitions"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._drop_connection()


def _clash(iid: int, sym: str, ex: str, oid: int, osym: str, oex: str) -> str:
    if oid == iid:
        return f"instrument_id {iid} is registered to {osym}@{oex} in the database, not {sym}@{ex}"
    return f"{sym}@{ex} is registered as instrument_id {oid} in the database, not {iid}"


def _redact(url: str) -> str:
    """The URL without secrets (kept for callers of the old name)."""
    return redact_url(url)
