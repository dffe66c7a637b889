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
from typing import Any, Iterator

import numpy as np
import psycopg
from psycopg import sql

from dm.errors import StorageError
from dm.records import I64_MAX
from dm.storage.base import (
    ALL_TABLES,
    COLUMNS,
    NS_PER_DAY,
    ORDER_BY,
    TICK_TABLES,
    Storage,
    dedup_column,
    migrations,
    now_ns,
    records_from_columns,
)

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
COPY_HEADER = COPY_SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # flags 0, no extension
COPY_TRAILER = b"\xff\xff"  # int16 -1
_BE = {"BIGINT": ">i8", "INTEGER": ">i4", "SMALLINT": ">i2"}
MIGRATION_LOCK = 0x646D_6D69_6772  # pg_advisory_lock key: "dm migr"
LAST_DAY = I64_MAX // NS_PER_DAY  # the day whose end does not fit in BIGINT


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
    """``copy_rows`` straight from a validated record array: each record field is cast and
    byte-swapped into its big-endian slot in one numpy pass (no int64 intermediate)."""
    spec = COLUMNS[table]
    out = _empty_rows(table, len(arr))
    for i, c in enumerate(spec):
        if c.get is not None:
            out[f"v{i}"] = c.get(arr)  # u64 <= i64 max was validated, so the cast is exact
    d = dedup_column(table, arr)
    if d is not None:
        out[f"v{len(spec) - 1}"] = d
    return out


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


def partition_name(table: str, day: int) -> str:
    """``<table>_pYYYYMMDD`` for a day number (days since 1970-01-01 UTC)."""
    d = _dt.date(1970, 1, 1) + _dt.timedelta(days=int(day))
    return f"{table}_p{d:%Y%m%d}"


class PostgresStorage(Storage):
    """Storage on PostgreSQL 15+ (``postgresql://user@host:port/db``)."""

    backend = "postgresql"
    #: try a plain INSERT .. SELECT first (see ``write``); False: always ON CONFLICT DO NOTHING
    optimistic_insert: bool = True

    def __init__(self, url: str):
        self.url = url
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise StorageError(f"cannot connect to PostgreSQL at {_redact(url)}: {e}") from e
        self._parts: set[str] = set()
        self._staged: set[str] = set()
        self._closed = False

    # --- helpers ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Driver errors → ``StorageError``; reconnects first if the connection was lost (the
        call that saw it break raised; the caller's retry of an idempotent write is safe)."""
        if self._closed:
            raise StorageError("postgresql storage is closed")
        try:
            if self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
                self._staged.clear()  # TEMP staging tables died with the old session
            yield
        except StorageError:
            raise
        except psycopg.Error as e:
            raise StorageError(f"postgresql {what}: {e}") from e

    def _scalar(self, query, params=None):
        row = self._conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    # --- schema -----------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        applied: list[str] = []
        with self._errors("migrate"):
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
            today = now_ns() // NS_PER_DAY
            self.ensure_partitions([today, today + 1])
        return applied

    def schema_version(self) -> int:
        with self._errors("schema_version"):
            if self._scalar("SELECT to_regclass('schema_migrations')") is None:
                return 0
            return int(self._scalar("SELECT coalesce(max(version), 0) FROM schema_migrations"))

    def ensure_partitions(self, days, tables=TICK_TABLES) -> list[str]:
        """Create the day partitions (days since the epoch, UTC) of the tick tables that do not
        exist yet, each in its own transaction; a concurrent creator is tolerated. Returns the
        names created by this call."""
        created = []
        for table in tables:
            for day in sorted({int(d) for d in days if 0 <= int(d) <= LAST_DAY}):
                name = partition_name(table, day)
                if name in self._parts:
                    continue
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
                except psycopg.Error as e:
                    raise StorageError(f"postgresql: cannot create partition {name}: {e}") from e
                self._parts.add(name)
        return created

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
    def write(self, batches: dict[int, np.ndarray], then=None) -> dict[str, int]:
        """See ``Storage.write``. Per table: binary COPY into the TEMP staging table, then a plain
        ``INSERT .. SELECT`` in a savepoint (the common case: nothing is a duplicate, and a plain
        insert is about twice as fast as ON CONFLICT's speculative insertion); on a unique
        violation the savepoint is rolled back and ``INSERT .. ON CONFLICT DO NOTHING`` runs."""
        prepared = self._prepare(batches)
        result = {table: 0 for table, _ in prepared}
        todo = [(t, a) for t, a in prepared if len(a)]
        if not todo and then is None:
            return result
        with self._errors("write"):
            for table, arr in todo:
                if table in TICK_TABLES:
                    days = np.unique(arr["ts_event"] // np.uint64(NS_PER_DAY)).tolist()
                    self.ensure_partitions(days + [days[-1] + 1], (table,))
                self._ensure_stage(table)
            with self._conn.transaction(), self._conn.cursor() as cur:
                for table, arr in todo:
                    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in COLUMNS[table])
                    stage = sql.Identifier(f"_dm_stage_{table}")
                    rows = copy_rows_from_records(table, arr)
                    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, names)) as cp:
                        cp.write(COPY_HEADER)
                        cp.write(memoryview(rows).cast("B"))
                        cp.write(COPY_TRAILER)
                    insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                        sql.Identifier(table), names, names, stage)
                    result[table] = self._insert_from_stage(cur, insert)
                if then is not None:
                    then(cur, dict(result))
        return result

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

    def fetch(self, table: str, instrument_id: int | None = None) -> np.ndarray:
        self._check_table(table)
        names = sql.SQL(", ").join(sql.Identifier(c.name) for c in COLUMNS[table])
        where = sql.SQL("")
        if instrument_id is not None:
            where = sql.SQL(" WHERE instrument_id = {}").format(sql.Literal(int(instrument_id)))
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

    def counts(self) -> dict[str, int]:
        with self._errors("counts"):
            return {
                t: int(self._scalar(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))))
                for t in ALL_TABLES
            }

    # --- instruments ------------------------------------------------------------------------
    def load_instruments(self) -> list[tuple[int, str, str, str, int]]:
        with self._errors("load_instruments"):
            rows = self._conn.execute(
                "SELECT instrument_id, symbol, exchange, venue_symbol, publisher_id FROM instruments ORDER BY instrument_id"
            ).fetchall()
        return [(int(a), b, c, d, int(e)) for a, b, c, d, e in rows]

    def insert_instrument(self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str,
                          publisher_id: int) -> bool:
        with self._errors("insert_instrument"):
            cur = self._conn.execute(
                "INSERT INTO instruments (instrument_id, symbol, exchange, venue_symbol, publisher_id, created_ns)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (int(instrument_id), symbol, exchange, venue_symbol, int(publisher_id), now_ns()),
            )
            return cur.rowcount == 1

    # --- gaps -------------------------------------------------------------------------------
    def record_gap(self, instrument_id: int, kind: str, first_missing: int, last_missing: int,
                   detected_ns: int, detail: str = "") -> int:
        with self._errors("record_gap"):
            return int(self._scalar(
                "INSERT INTO gaps (instrument_id, kind, first_missing, last_missing, detected_ns, state, detail)"
                " VALUES (%s, %s, %s, %s, %s, 'open', %s) RETURNING id",
                (int(instrument_id), kind, int(first_missing), int(last_missing), int(detected_ns), detail),
            ))

    def update_gap(self, gap_id: int, state: str, detail: str | None = None) -> bool:
        with self._errors("update_gap"):
            cur = self._conn.execute(
                "UPDATE gaps SET state = %s, detail = coalesce(%s, detail) WHERE id = %s",
                (state, detail, int(gap_id)),
            )
            return cur.rowcount == 1

    def gaps(self, state: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT id, instrument_id, kind, first_missing, last_missing, detected_ns, state, detail FROM gaps"
        with self._errors("gaps"), self._conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            if state is None:
                cur.execute(q + " ORDER BY id")
            else:
                cur.execute(q + " WHERE state = %s ORDER BY id", (state,))
            return cur.fetchall()

    # --- maintenance ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "url": _redact(self.url)}
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

    def compress(self) -> str:
        with self._errors("compress"):
            has_tsdb = self._scalar("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
            for t in ALL_TABLES:
                self._conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(t)))
        why = ("TimescaleDB is installed but dm's tables are native partitions, not hypertables"
               if has_tsdb else "TimescaleDB is not available")
        return f"{why}: ran VACUUM (ANALYZE) on {len(ALL_TABLES)} tables and their partitions"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()


def _redact(url: str) -> str:
    """The URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return url
