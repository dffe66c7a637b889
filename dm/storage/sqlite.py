"""Embedded SQLite storage (stdlib ``sqlite3``, WAL mode): the same logical schema as PostgreSQL
(``sql/sqlite``), no server needed.

URL: ``sqlite:///relative/path.sqlite`` or ``sqlite:////absolute/path.sqlite`` (parent directories
are created), ``sqlite:///:memory:`` for a private in-memory database. Optional query
``?synchronous=normal`` (default ``full``: a committed batch survives a power loss, which the
persister's acknowledge-after-commit relies on; ``normal`` in WAL mode survives a process crash
only).

Writes: one ``BEGIN IMMEDIATE`` transaction, ``executemany("INSERT .. ON CONFLICT DO NOTHING")`` per
table (not ``INSERT OR IGNORE``, which would also silently drop rows failing a CHECK or NOT NULL).
Concurrency: SQLite has one writer at a time; other connections wait up to ``busy_timeout_s``.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs

import numpy as np

from dm.errors import StorageError
from dm.storage.base import (
    ALL_TABLES,
    COLUMNS,
    ORDER_BY,
    column_arrays,
    Storage,
    migrations,
    now_ns,
    records_from_columns,
)


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///x`` → (``x``, options). ``sqlite:////abs`` gives ``/abs``."""
    if not url.startswith("sqlite:///"):
        raise StorageError(f"not a sqlite URL (sqlite:///relative or sqlite:////absolute): {url!r}")
    rest = url[len("sqlite:///"):]
    path, _, query = rest.partition("?")
    if not path:
        raise StorageError(f"sqlite URL has no path: {url!r}")
    opts = {k: v[-1] for k, v in parse_qs(query).items()}
    return path, opts


def _statements(script: str) -> Iterator[str]:
    """Split a SQL script into complete statements (trigger bodies included)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()):
        raise StorageError(f"incomplete SQL statement at the end of a migration: {buf[:80]!r}")


class SqliteStorage(Storage):
    """Storage in one SQLite file (WAL mode)."""

    backend = "sqlite"

    def __init__(self, url: str, busy_timeout_s: float = 60.0):
        self.url = url
        path, opts = parse_sqlite_url(url)
        sync = opts.get("synchronous", "full").upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StorageError(f"sqlite synchronous must be off|normal|full|extra, got {sync!r}")
        self.path = None if path == ":memory:" else Path(path)
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={sync}")
        except (sqlite3.Error, OSError) as e:
            raise StorageError(f"cannot open SQLite database {path!r}: {e}") from e
        self._closed = False

    # --- helpers ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except sqlite3.Error as e:
            raise StorageError(f"sqlite {what}: {e}") from e

    @contextlib.contextmanager
    def _txn(self, what: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``; rollback and ``StorageError`` on any failure."""
        with self._errors(what):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _scalar(self, q: str, params=()):
        row = self._conn.execute(q, params).fetchone()
        return None if row is None else row[0]

    # --- schema -----------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        # Each migration commits on its own; an exclusive lock file next to the database makes the
        # whole sequence one critical section, so racing processes never interleave migrations
        # (PostgreSQL does the same with an advisory lock).
        with self._migration_lock():
            return self._migrate()

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        import fcntl

        with open(f"{self.path}.migrate-lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _migrate(self) -> list[str]:
        applied = []
        for version, name, text in migrations("sqlite"):
            with self._txn("migrate") as c:
                c.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ns INTEGER NOT NULL)"
                )
                if c.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                    continue
                for stmt in _statements(text):
                    c.execute(stmt)
                c.execute("INSERT INTO schema_migrations (version, name, applied_ns) VALUES (?, ?, ?)",
                          (version, name, now_ns()))
            applied.append(f"{version:03d}_{name}")
        return applied

    def schema_version(self) -> int:
        with self._errors("schema_version"):
            if not self._scalar("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_migrations'"):
                return 0
            return int(self._scalar("SELECT coalesce(max(version), 0) FROM schema_migrations"))

    # --- records ----------------------------------------------------------------------------
    def write(self, batches: dict[int, np.ndarray], then=None) -> dict[str, int]:
        prepared = self._prepare(batches)
        result = {table: 0 for table, _ in prepared}
        todo = [(t, a) for t, a in prepared if len(a)]
        if not todo and then is None:
            return result
        with self._txn("write") as c:
            for table, arr in todo:
                cols = column_arrays(table, arr)
                names = [col.name for col in COLUMNS[table]]
                q = (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
                     " ON CONFLICT DO NOTHING")
                before = c.total_changes
                c.executemany(q, np.column_stack(cols).tolist())
                result[table] = c.total_changes - before
            if then is not None:
                then(c.cursor(), dict(result))
        return result

    def fetch(self, table: str, instrument_id: int | None = None) -> np.ndarray:
        self._check_table(table)
        spec = COLUMNS[table]
        q = f"SELECT {', '.join(c.name for c in spec)} FROM {table}"
        params: tuple = ()
        if instrument_id is not None:
            q += " WHERE instrument_id = ?"
            params = (int(instrument_id),)
        q += f" ORDER BY {ORDER_BY[table]}"
        with self._errors("fetch"):
            rows = self._conn.execute(q, params).fetchall()
        m = np.array(rows, dtype=np.int64).reshape(len(rows), len(spec))
        return records_from_columns(table, [m[:, i] for i in range(len(spec))], len(rows))

    def counts(self) -> dict[str, int]:
        with self._errors("counts"):
            return {t: int(self._scalar(f"SELECT count(*) FROM {t}")) for t in ALL_TABLES}

    # --- instruments ------------------------------------------------------------------------
    def load_instruments(self) -> list[tuple[int, str, str, str, int]]:
        with self._errors("load_instruments"):
            return [tuple(r) for r in self._conn.execute(  # type: ignore[misc]
                "SELECT instrument_id, symbol, exchange, venue_symbol, publisher_id FROM instruments ORDER BY instrument_id"
            )]

    def insert_instrument(self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str,
                          publisher_id: int) -> bool:
        with self._txn("insert_instrument") as c:
            cur = c.execute(
                "INSERT INTO instruments (instrument_id, symbol, exchange, venue_symbol, publisher_id, created_ns)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (int(instrument_id), symbol, exchange, venue_symbol, int(publisher_id), now_ns()),
            )
            return cur.rowcount == 1

    # --- gaps -------------------------------------------------------------------------------
    def record_gap(self, instrument_id: int, kind: str, first_missing: int, last_missing: int,
                   detected_ns: int, detail: str = "") -> int:
        with self._txn("record_gap") as c:
            cur = c.execute(
                "INSERT INTO gaps (instrument_id, kind, first_missing, last_missing, detected_ns, state, detail)"
                " VALUES (?, ?, ?, ?, ?, 'open', ?)",
                (int(instrument_id), kind, int(first_missing), int(last_missing), int(detected_ns), detail),
            )
            return int(cur.lastrowid)

    def update_gap(self, gap_id: int, state: str, detail: str | None = None) -> bool:
        with self._txn("update_gap") as c:
            cur = c.execute("UPDATE gaps SET state = ?, detail = coalesce(?, detail) WHERE id = ?",
                            (state, detail, int(gap_id)))
            return cur.rowcount == 1

    def gaps(self, state: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT id, instrument_id, kind, first_missing, last_missing, detected_ns, state, detail FROM gaps"
        with self._errors("gaps"):
            cur = self._conn.execute(q + " ORDER BY id") if state is None else \
                self._conn.execute(q + " WHERE state = ? ORDER BY id", (state,))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    # --- maintenance ------------------------------------------------------------------------
    def _table_bytes(self, table: str) -> int | None:
        try:
            return int(self._scalar(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = ? AND type IN ('table', 'index'))",
                (table,),
            ))
        except sqlite3.Error:  # dbstat not compiled in
            return None

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "url": self.url}
        with self._errors("stats"):
            out["schema_version"] = self.schema_version()
            size = None
            if self.path is not None and self.path.exists():
                size = sum(os.path.getsize(p) for p in (str(self.path), f"{self.path}-wal", f"{self.path}-shm")
                           if os.path.exists(p))
            out["bytes"] = size
            tables: dict[str, Any] = {}
            for t in ALL_TABLES:
                info = {"rows": int(self._scalar(f"SELECT count(*) FROM {t}")), "bytes": self._table_bytes(t),
                        "ts_min": None, "ts_max": None, "partitions": 0}
                if t in COLUMNS:
                    info["ts_min"], info["ts_max"] = self._conn.execute(
                        f"SELECT min(ts_event), max(ts_event) FROM {t}").fetchone()
                tables[t] = info
            out["tables"] = tables
        return out

    def compress(self) -> str:
        with self._errors("compress"):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.execute("VACUUM")
            self._conn.execute("ANALYZE")
        return "SQLite has no compression: checkpointed the WAL, ran VACUUM and ANALYZE"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()
