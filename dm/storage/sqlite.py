"""Embedded SQLite storage (stdlib ``sqlite3``, WAL mode): the same logical schema as PostgreSQL
(``sql/sqlite``), no server needed.

URL: ``sqlite:///relative/path.sqlite`` or ``sqlite:////absolute/path.sqlite`` (parent directories
are created), ``sqlite:///:memory:`` for a private in-memory database. Optional query
``?synchronous=normal`` (default ``full``: a committed batch survives a power loss, which the
persister's acknowledge-after-commit relies on; ``normal`` in WAL mode survives a process crash
only).

Writes: one ``BEGIN IMMEDIATE`` transaction, multi-row ``INSERT .. VALUES (..), (..) .. ON CONFLICT DO
NOTHING`` statements per table (not ``INSERT OR IGNORE``, which would also silently drop rows
failing a CHECK or NOT NULL).
Concurrency: SQLite has one writer at a time; other connections wait up to ``busy_timeout_s``
(``timeout_s`` when given). With ``timeout_s`` a watchdog interrupts a call that runs longer
(``StorageTimeoutError``). A CHECK/NOT NULL violation or a value SQLite cannot hold is
``StorageDataError``; "database is locked", I/O errors and the like are ``StorageError``.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs

import numpy as np

from dm.errors import StorageDataError, StorageError, StorageTimeoutError
from dm.records import RType
from dm.storage.base import (
    ALL_TABLES,
    COLUMNS,
    NS_PER_DAY,
    ORDER_BY,
    RECORD_TABLES,
    Storage,
    Watchdog,
    column_arrays,
    definition_dedup,
    definitions_from_rows,
    gap_dedup,
    legacy_gap,
    migrations,
    now_ns,
    record_reader,
    records_from_columns,
    text_column,
    validate,
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

    def __init__(self, url: str, busy_timeout_s: float = 60.0, timeout_s: float | None = None):
        self.url = url
        self.timeout_s = timeout_s
        self.watchdog = Watchdog()
        self._in_call = False
        if timeout_s is not None:
            busy_timeout_s = timeout_s
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
    def _errors(self, what: str, deadline_s: float | None = None) -> Iterator[None]:
        if self._in_call:
            yield
            return
        self._in_call = True
        wd = self.watchdog
        try:
            with wd.guard(deadline_s if deadline_s is not None else self.timeout_s, self._conn.interrupt):
                yield
        except StorageError:
            raise
        except (sqlite3.Error, OverflowError) as e:
            if wd.fired:
                raise StorageTimeoutError(f"sqlite {what}: no answer within {self.timeout_s} s (storage.timeout_s)") from e
            if isinstance(e, (sqlite3.IntegrityError, sqlite3.DataError, OverflowError)):
                raise StorageDataError(f"sqlite {what}: {e}") from e
            err = StorageError(f"sqlite {what}: {e}")
            text = str(e).lower()
            err.outage = isinstance(e, sqlite3.OperationalError) and any(
                k in text for k in ("locked", "busy", "i/o", "unable to open", "disk", "full"))
            raise err from e
        finally:
            self._in_call = False

    @contextlib.contextmanager
    def _txn(self, what: str, deadline_s: float | None = None) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``; rollback and ``StorageError`` on any failure."""
        with self._errors(what, deadline_s):
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
            with self._txn("migrate", None if self.timeout_s is None else max(120.0, 20 * self.timeout_s)) as c:
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

    def ping(self) -> None:
        with self._errors("ping"):
            self._conn.execute("SELECT 1").fetchone()

    # --- records ----------------------------------------------------------------------------
    def write(self, batches: dict[int, np.ndarray], checked: bool = False, then=None) -> dict[str, int]:
        prepared = self._prepare(batches, checked)
        result = {RECORD_TABLES[rt]: 0 for rt, _ in prepared}
        if RType.INSTRUMENT_DEF in batches:
            result["instruments"] = 0
        todo = [(rt, a) for rt, a in prepared if len(a)]
        if not todo and then is None:
            return result
        with self._txn("write") as c:
            for rt, arr in todo:
                table = RECORD_TABLES[rt]
                before = c.total_changes
                if rt == RType.GAP:
                    self._write_gaps(c, arr)
                elif rt == RType.INSTRUMENT_DEF:
                    result["instruments"] = self._write_definitions(c, arr)
                    before = c.total_changes
                    self._insert_definitions(c, arr)
                else:
                    spec = COLUMNS[table]
                    built = table == "trades" and self.bar_plan is not None
                    if built:
                        top = self._scalar("SELECT coalesce(max(rowid), 0) FROM trades")
                    self._insert_rows(c, table, spec, arr)
                    if built:
                        self._build_bars(c, top)
                        result[table] = int(self._scalar("SELECT count(*) FROM trades WHERE rowid > ?", (top,)))
                        continue
                result[table] = c.total_changes - before
            if then is not None:
                then(c.cursor(), dict(result))
        return result

    #: rows per INSERT statement at most (also bounded by the connection's variable limit)
    ROWS_PER_STATEMENT = 500

    def _insert_rows(self, c: sqlite3.Connection, table: str, spec, arr: np.ndarray) -> None:
        """Insert a record batch into ``table``, ``ON CONFLICT DO NOTHING``, as multi-row
        ``INSERT .. VALUES (..), (..), ..`` statements of up to ``ROWS_PER_STATEMENT`` rows.

        One statement per row (``executemany`` of a one-row INSERT) spends most of its time in
        per-statement stepping; many rows per statement is 2-3x faster (``bench/bench_storage.py``,
        ``storage.sqlite.*``). The semantics are the one-row form's: each conflicting row alone
        is skipped, rows are inserted in batch order (ascending rowid, which ``_build_bars``
        relies on), and a CHECK or NOT NULL failure aborts the statement and so the transaction.
        A nullable column's ``UNDEF_TIMESTAMP`` (-1) is bound as NULL."""
        ncol = len(spec)
        flat = np.column_stack(column_arrays(table, arr)).reshape(-1).tolist()
        for k, col in enumerate(spec):
            if col.nullable:
                for j in range(k, len(flat), ncol):
                    if flat[j] == -1:
                        flat[j] = None
        per = max(1, min(self.ROWS_PER_STATEMENT,
                         c.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // ncol))
        names = ", ".join(col.name for col in spec)
        row = "(" + ", ".join("?" * ncol) + ")"

        def q(k: int) -> str:
            return f"INSERT INTO {table} ({names}) VALUES {', '.join([row] * k)} ON CONFLICT DO NOTHING"

        step = per * ncol
        full = len(flat) // step * step
        if full:
            c.executemany(q(per), [flat[j:j + step] for j in range(0, full, step)])
        if full < len(flat):
            c.execute(q((len(flat) - full) // ncol), flat[full:])

    def _build_bars(self, c: sqlite3.Connection, top: int) -> int:
        """Merge the built bars (``dm.bars``) of the trades this transaction inserted (rowid above
        ``top``: SQLite gives a new row max(rowid) + 1, and a refused duplicate inserts nothing)
        into ``bars``. Returns bars written."""
        from dm.bars import build_bars, built_rows, merge_sql

        new = self._trades_where("rowid > ?", (top,))
        if not len(new):
            return 0
        b = build_bars(new, self.bar_plan, dedup=new["dedup"])
        c.executemany(merge_sql("sqlite"), built_rows(b))
        return len(b)

    def _trades_where(self, where: str, params: tuple) -> np.ndarray:
        cols = ("instrument_id", "publisher_id", "ts_event", "price", "size", "trade_id", "sequence",
                "size_precision", "dedup")
        rows = self._conn.execute(f"SELECT {', '.join(cols)} FROM trades WHERE {where}", params).fetchall()
        out = np.zeros(len(rows), [(k, "<i8") for k in cols])
        if rows:
            m = np.array(rows, dtype=np.int64)
            for i, k in enumerate(cols):
                out[k] = m[:, i]
        return out

    def rebuild_bars(self, since_ns: int = 0, plan=None) -> dict[str, int]:
        """See ``Storage.rebuild_bars`` (one transaction; the aggregation of ``dm.bars.build_bars``)."""
        from dm.bars import BarPlan, build_bars, built_rows, merge_sql

        plan = plan or self.bar_plan or BarPlan()
        out = {"deleted": 0, "bars": 0}
        with self._txn("rebuild_bars", None if self.timeout_s is None else max(600.0, 100 * self.timeout_s)) as c:
            pubs = [r[0] for r in c.execute("SELECT DISTINCT publisher_id FROM trades")]
            for p, iv in zip(*plan.pairs(pubs)):
                lo = int(since_ns) - int(since_ns) % (iv * 1_000_000_000)
                out["deleted"] += c.execute("DELETE FROM bars WHERE source = 1 AND publisher_id = ? AND interval_s = ?"
                                            " AND ts_event >= ?", (p, iv, lo)).rowcount
                t = self._trades_where("publisher_id = ? AND ts_event >= ?", (p, lo))
                b = build_bars(t, BarPlan((iv,)), dedup=t["dedup"])
                c.executemany(merge_sql("sqlite"), built_rows(b))
                out["bars"] += len(b)
        return out

    @staticmethod
    def _write_gaps(c: sqlite3.Connection, a: np.ndarray) -> None:
        rows = zip(a["publisher_id"].tolist(), a["instrument_id"].tolist(), text_column(a, "kind"), a["units"].tolist(),
                   a["first_missing"].tolist(), a["last_missing"].tolist(), a["ts_event"].tolist(),
                   a["ts_recv"].tolist(), a["flags"].tolist(), text_column(a, "detail"), gap_dedup(a).tolist())
        c.executemany(
            "INSERT INTO gaps (publisher_id, instrument_id, kind, units, first_missing, last_missing, detected_ns,"
            " ts_recv, flags, detail, dedup, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')"
            " ON CONFLICT DO NOTHING", list(rows))

    @staticmethod
    def _write_definitions(c: sqlite3.Connection, a: np.ndarray) -> int:
        """Register absent instruments, refuse rows whose id is registered to another symbol
        (StorageDataError, the caller's transaction rolls back). Returns instruments inserted."""
        from dm.storage.postgres import _clash

        iid = a["instrument_id"].tolist()
        sym, ex, raw = text_column(a, "symbol"), text_column(a, "exchange"), text_column(a, "raw_symbol")
        sp, pub = a["size_precision"].tolist(), a["publisher_id"].tolist()
        before = c.total_changes
        now = now_ns()
        c.executemany(
            "INSERT INTO instruments (instrument_id, symbol, exchange, venue_symbol, publisher_id, created_ns,"
            " size_precision) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(iid[i], sym[i], ex[i], raw[i], pub[i], now, sp[i]) for i in range(len(a))])
        registered = c.total_changes - before
        rejects = []
        for i in range(len(a)):
            row = c.execute("SELECT symbol, exchange FROM instruments WHERE instrument_id = ?", (iid[i],)).fetchone()
            if row is not None and tuple(row) != (sym[i], ex[i]):
                rejects.append((int(RType.INSTRUMENT_DEF), i, _clash(iid[i], sym[i], ex[i], iid[i], row[0], row[1])))
        if rejects:
            raise StorageDataError(f"{len(rejects)} instrument definition(s) contradict the registry", rejects)
        c.executemany("UPDATE instruments SET size_precision = ? WHERE instrument_id = ? AND size_precision IS NULL",
                      list(zip(sp, iid)))
        return registered

    @staticmethod
    def _insert_definitions(c: sqlite3.Connection, a: np.ndarray) -> None:
        def opt(col):
            return [None if v == -1 else v for v in col.astype(np.int64).tolist()]

        cols = [a["instrument_id"].tolist(), a["publisher_id"].tolist(), a["ts_event"].tolist(), a["ts_recv"].tolist(),
                a["min_price_increment"].tolist(), a["display_factor"].tolist(), a["lot_size"].tolist(),
                a["contract_multiplier"].tolist(), a["strike_price"].tolist(), opt(a["expiration"]),
                opt(a["activation"]), a["size_precision"].tolist(), a["price_precision"].tolist(),
                a["instrument_class"].tolist(), a["flags"].tolist()]
        cols += [text_column(a, f) for f in ("symbol", "exchange", "raw_symbol", "underlying", "base", "quote")]
        cols.append(definition_dedup(a).tolist())
        c.executemany(
            "INSERT INTO instrument_definitions (instrument_id, publisher_id, ts_event, ts_recv, min_price_increment,"
            " display_factor, lot_size, contract_multiplier, strike_price, expiration, activation, size_precision,"
            " price_precision, instrument_class, flags, symbol, exchange, raw_symbol, underlying, base, quote, dedup)"
            f" VALUES ({', '.join('?' * 22)}) ON CONFLICT DO NOTHING", list(zip(*cols)))

    def definitions(self, instrument_id: int | None = None) -> np.ndarray:
        q = ("SELECT instrument_id, publisher_id, ts_event, ts_recv, min_price_increment, display_factor, lot_size,"
             " contract_multiplier, strike_price, coalesce(expiration, -1), coalesce(activation, -1), size_precision,"
             " price_precision, instrument_class, flags, symbol, exchange, raw_symbol, underlying, base, quote"
             " FROM instrument_definitions")
        params: tuple = ()
        if instrument_id is not None:
            q += " WHERE instrument_id = ?"
            params = (int(instrument_id),)
        with self._errors("definitions"):
            rows = self._conn.execute(q + " ORDER BY instrument_id, ts_event, dedup", params).fetchall()
        return definitions_from_rows(rows)

    def fetch(self, table: str, instrument_id: int | None = None) -> np.ndarray:
        self._check_table(table)
        spec = COLUMNS[table]
        q = f"SELECT {', '.join(f'coalesce({c.name}, -1)' if c.nullable else c.name for c in spec)} FROM {table}"
        params: tuple = ()
        conds = ["source = 0"] if table == "bars" else []  # received bars; dm's own: scan / dm.history
        if instrument_id is not None:
            conds.append("instrument_id = ?")
            params = (int(instrument_id),)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        q += f" ORDER BY {ORDER_BY[table]}"
        with self._errors("fetch"):
            rows = self._conn.execute(q, params).fetchall()
        m = np.array(rows, dtype=np.int64).reshape(len(rows), len(spec))
        return records_from_columns(table, [m[:, i] for i in range(len(spec))], len(rows))

    def scan(self, table, instrument_ids=None, start_ns=None, end_ns=None, where=None, chunk_rows=1 << 20):
        """See ``Storage.scan`` (``fetchmany`` chunks of the columns a record holds, turned into
        records by one structured assignment: ``RecordReader``)."""
        if table not in COLUMNS:
            self._check_table(table)
        reader = record_reader(table)
        k = len(reader.columns)
        src = reader.source(["<i8"] * k, [8 * i for i in range(k)], 8 * k)
        cond, params = self._scan_sql(table, instrument_ids, start_ns, end_ns, where, "?")
        q = (f"SELECT {', '.join(f'coalesce({c.name}, -1)' if c.nullable else c.name for c in reader.columns)}"
             f" FROM {table}{cond} ORDER BY {ORDER_BY[table]}")
        with self._errors("scan"):
            cur = self._conn.execute(q, params)
            while True:
                rows = cur.fetchmany(chunk_rows)
                if not rows:
                    break
                yield reader.records(np.array(rows, dtype=np.int64).view(src).reshape(len(rows)))

    def counts(self) -> dict[str, int]:
        with self._errors("counts"):
            return {t: int(self._scalar(f"SELECT count(*) FROM {t}")) for t in ALL_TABLES}

    # --- instruments ------------------------------------------------------------------------
    def load_instruments(self) -> list[tuple[int, str, str, str, int]]:
        return [r[:5] for r in self.instrument_rows()]

    def instrument_rows(self) -> list[tuple[int, str, str, str, int, int | None]]:
        with self._errors("load_instruments"):
            return [tuple(r) for r in self._conn.execute(  # type: ignore[misc]
                "SELECT instrument_id, symbol, exchange, venue_symbol, publisher_id, size_precision FROM instruments"
                " ORDER BY instrument_id"
            )]

    def insert_instrument(self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str,
                          publisher_id: int, size_precision: int | None = None) -> bool:
        with self._txn("insert_instrument") as c:
            cur = c.execute(
                "INSERT INTO instruments (instrument_id, symbol, exchange, venue_symbol, publisher_id, created_ns,"
                " size_precision) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (int(instrument_id), symbol, exchange, venue_symbol, int(publisher_id), now_ns(),
                 None if size_precision is None else int(size_precision)),
            )
            return cur.rowcount == 1

    # --- gaps -------------------------------------------------------------------------------
    def record_gap(self, instrument_id: int, kind: str, first_missing: int, last_missing: int,
                   detected_ns: int, detail: str = "", publisher_id: int = 0, units: int | None = None) -> int:
        a = legacy_gap(instrument_id, kind, first_missing, last_missing, detected_ns, detail, publisher_id, units)
        validate(int(RType.GAP), a)
        with self._txn("record_gap") as c:
            self._write_gaps(c, a)
            return int(self._scalar("SELECT id FROM gaps WHERE publisher_id = ? AND instrument_id = ? AND dedup = ?",
                                    (int(a["publisher_id"][0]), int(a["instrument_id"][0]), int(gap_dedup(a)[0]))))

    def update_gap(self, gap_id: int, state: str, detail: str | None = None) -> bool:
        with self._txn("update_gap") as c:
            cur = c.execute("UPDATE gaps SET state = ?, detail = coalesce(?, detail) WHERE id = ?",
                            (state, detail, int(gap_id)))
            return cur.rowcount == 1

    def gaps(self, state: str | None = None) -> list[dict[str, Any]]:
        q = ("SELECT id, publisher_id, instrument_id, kind, units, first_missing, last_missing, detected_ns, state,"
             " detail FROM gaps")
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

    def days(self, table: str) -> list[int]:
        """UTC days holding rows of ``table`` (for retention, ``dm.archive``)."""
        self._check_table(table)
        with self._errors("days"):
            return [int(r[0]) for r in self._conn.execute(
                f"SELECT DISTINCT ts_event / {NS_PER_DAY} FROM {table} ORDER BY 1")]

    def drop_day(self, table: str, day: int, expect_rows: int | None = None) -> int:
        """Delete one UTC day of ``table`` in one transaction; ``expect_rows`` as on PostgreSQL."""
        self._check_table(table)
        lo, hi = int(day) * NS_PER_DAY, (int(day) + 1) * NS_PER_DAY
        with self._txn("drop_day") as c:
            n = c.execute(f"SELECT count(*) FROM {table} WHERE ts_event >= ? AND ts_event < ?", (lo, hi)).fetchone()[0]
            if expect_rows is not None and n != expect_rows:
                raise StorageError(f"{table} day {day}: {n} rows now, {expect_rows} archived; not removed")
            c.execute(f"DELETE FROM {table} WHERE ts_event >= ? AND ts_event < ?", (lo, hi))
        return int(n)

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
