"""The storage contract shared by both backends (DESIGN.md section 5).

One *logical* schema, identical in PostgreSQL and SQLite (``sql/postgres``, ``sql/sqlite``):

* every time is a BIGINT of ns since the UNIX epoch (``ts_event``, ``ts_recv``, ``created_ns``,
  ``detected_ns``, ``first_missing``/``last_missing`` when the gap is in time);
* prices and sizes are BIGINT fixed point at 1e-9 (``records.FIXED_SCALE``). Record fields that
  are u64 (sizes, ``ts_*``, ``trade_id``, ``sequence``, ``volume``) must be <= i64 max: a larger
  value raises ``StorageError`` before anything is written, never wraps;
* ``side`` / ``action`` / ``flags`` / ``n_bid`` / ``n_ask`` are SMALLINT holding the record's u8
  (``side`` 65 'A' ask/sell, 66 'B' bid/buy, 78 'N' none; ``action`` 65 'A' add, 77 'M' modify,
  67 'C' cancel, 82 'R' clear — DBN's characters as their code points; PostgreSQL views show
  them as 1-char text). SMALLINT rather than TEXT keeps any u8 exact (a 0 byte cannot be text)
  and keeps the binary COPY fixed-width;
* ``publisher_id`` (u16) is INTEGER; ``instrument_id``, ``bid_ct``/``ask_ct``, ``interval_s``
  (u32) are BIGINT;
* ``depth`` stores the top 10 levels as 40 columns ``bid_px_00 .. bid_px_09``, ``ask_px_00..``,
  ``bid_sz_00..``, ``ask_sz_00..`` (Databento's mbp-10 column names), the same in both backends
  and queryable without array/blob decoding;
* tick tables carry a ``dedup`` BIGINT and a unique key that makes a replayed record a no-op
  (``INSERT .. ON CONFLICT DO NOTHING`` / ``INSERT OR IGNORE``):

  ==============  ===============================================  ==============================
  table           unique key                                       dedup
  ==============  ===============================================  ==============================
  trades          (instrument_id, ts_event, trade_id, dedup)       0 when the venue gave a
                                                                   trade_id, else content hash of
                                                                   (publisher_id, price, size,
                                                                   side, sequence)
  bbo             (instrument_id, ts_event, dedup)                 content hash of every column
  book_deltas     (instrument_id, ts_event, dedup)                 content hash of every column
  depth           (instrument_id, ts_event, dedup)                 content hash of every column
  bars            (instrument_id, publisher_id, interval_s,          (none)
                  ts_event)
  ==============  ===============================================  ==============================

  So a venue trade id identifies a trade (a trade re-received after a reconnect, with another
  ts_recv or the SNAPSHOT flag, is stored once), feeds without trade ids (Databento: trade_id 0)
  keep every distinct trade, and for quotes/book data the same record twice gives one row while
  two different records at the same ts_event/sequence (several book changes in one packet) are
  all kept. Two records identical in every stored field are one row: a venue that sends two
  indistinguishable fills must be told apart by the codec (sequence = position in frame).
  The content hash is ``dedup_hash`` below ("dm-dedup-v1"); it is part of the stored data, so
  changing it needs a migration.

Tables: ``instruments``, ``trades``, ``bbo``, ``book_deltas``, ``depth``, ``bars``, ``gaps``,
``schema_migrations``. PostgreSQL partitions the four tick tables by day on ``ts_event``.
"""
from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from dm.errors import StorageError
from dm.records import DEPTH_LEVELS, DTYPES, I64_MAX, RType

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"  # dm/sql: package data, ships with pip install
NS_PER_DAY = 86_400 * 1_000_000_000

# table name <-> rtype
TABLE_OF: dict[int, str] = {
    RType.TRADE: "trades",
    RType.BBO: "bbo",
    RType.BOOK_DELTA: "book_deltas",
    RType.DEPTH: "depth",
    RType.BAR: "bars",
    RType.MBP_EVENT: "mbp_events",
}
RTYPE_OF: dict[str, int] = {v: int(k) for k, v in TABLE_OF.items()}
TICK_TABLES = ("trades", "bbo", "book_deltas", "depth", "mbp_events")
ALL_TABLES = ("instruments", "trades", "bbo", "book_deltas", "depth", "bars", "mbp_events", "gaps", "schema_migrations")


class Column:
    """One stored column of a record table: SQL type and how to read/write it from a record array."""

    __slots__ = ("name", "sqltype", "width", "get", "put", "hashed")

    def __init__(self, name: str, sqltype: str, get: Callable[[np.ndarray], np.ndarray] | None,
                 put: Callable[[np.ndarray, np.ndarray], None] | None, hashed: bool = True):
        self.name = name
        self.hashed = hashed  # part of the content hash (dedup)
        self.sqltype = sqltype
        self.width = {"BIGINT": 8, "INTEGER": 4, "SMALLINT": 2}[sqltype]
        self.get = get
        self.put = put


def _field(name: str, sqltype: str, src: str | None = None, hashed: bool = True) -> Column:
    src = src or name

    def get(a):
        return a[src]

    def put(out, v):
        out[src] = v

    return Column(name, sqltype, get, put, hashed)


# the instrument's size scale: stored with every row, not part of the content hash (it is a
# property of the instrument, so hashes of rows stored before migration 003 stay valid)
_SIZE_PRECISION = _field("size_precision", "SMALLINT", hashed=False)


def _level(side_field: str, i: int) -> Column:
    def get(a):
        return a["levels"][side_field][:, i]

    def put(out, v):
        out["levels"][side_field][:, i] = v

    return Column(f"{side_field}_{i:02d}", "BIGINT", get, put)


def _count(side: str, i: int) -> Column:
    def get(a):
        return a[f"{side}_ct"][:, i]

    def put(out, v):
        out[f"{side}_ct"][:, i] = v

    return Column(f"{side}_ct_{i:02d}", "BIGINT", get, put)


_DEDUP = Column("dedup", "BIGINT", None, None)
_HDR = [_field("instrument_id", "BIGINT"), _field("publisher_id", "INTEGER"), _field("ts_event", "BIGINT")]

COLUMNS: dict[str, list[Column]] = {
    "trades": _HDR + [
        _field("ts_recv", "BIGINT"), _field("price", "BIGINT"), _field("size", "BIGINT"),
        _field("trade_id", "BIGINT"), _field("sequence", "BIGINT"), _field("side", "SMALLINT"),
        _field("flags", "SMALLINT"), _SIZE_PRECISION, _DEDUP,
    ],
    "bbo": _HDR + [
        _field("ts_recv", "BIGINT"), _field("bid_px", "BIGINT"), _field("bid_sz", "BIGINT"),
        _field("ask_px", "BIGINT"), _field("ask_sz", "BIGINT"), _field("bid_ct", "BIGINT"),
        _field("ask_ct", "BIGINT"), _field("sequence", "BIGINT"), _field("flags", "SMALLINT"),
        _SIZE_PRECISION, _DEDUP,
    ],
    "book_deltas": _HDR + [
        _field("ts_recv", "BIGINT"), _field("price", "BIGINT"), _field("size", "BIGINT"),
        _field("sequence", "BIGINT"), _field("side", "SMALLINT"), _field("action", "SMALLINT"),
        _field("flags", "SMALLINT"), _SIZE_PRECISION, _DEDUP,
    ],
    "depth": _HDR + [
        _field("ts_recv", "BIGINT"), _field("sequence", "BIGINT"), _field("flags", "SMALLINT"),
        _field("n_bid", "SMALLINT"), _field("n_ask", "SMALLINT"),
    ] + [_level(f, i) for f in ("bid_px", "ask_px", "bid_sz", "ask_sz") for i in range(DEPTH_LEVELS)]
      + [_SIZE_PRECISION, _DEDUP],
    "bars": _HDR + [
        _field("interval_s", "BIGINT"), _field("open", "BIGINT"), _field("high", "BIGINT"),
        _field("low", "BIGINT"), _field("close", "BIGINT"), _field("volume", "BIGINT"),
        _field("flags", "SMALLINT"), _SIZE_PRECISION, _field("count", "BIGINT"),
    ],
    "mbp_events": _HDR + [
        _field("ts_recv", "BIGINT"), _field("price", "BIGINT"), _field("size", "BIGINT"),
        _field("sequence", "BIGINT"), _field("ts_in_delta", "INTEGER"), _field("action", "SMALLINT"),
        _field("side", "SMALLINT"), _field("flags", "SMALLINT"), _field("depth", "SMALLINT"),
    ] + [_count(sd, i) for sd in ("bid", "ask") for i in range(DEPTH_LEVELS)] + [_DEDUP],
}

# fetch order: ts_event, ts_recv, then enough to make the order deterministic
ORDER_BY: dict[str, str] = {
    "trades": "ts_event, ts_recv, instrument_id, sequence, trade_id, dedup",
    "bbo": "ts_event, ts_recv, instrument_id, sequence, dedup",
    "book_deltas": "ts_event, ts_recv, instrument_id, sequence, dedup",
    "depth": "ts_event, ts_recv, instrument_id, sequence, dedup",
    "bars": "ts_event, interval_s, instrument_id",
    "mbp_events": "ts_event, ts_recv, instrument_id, sequence, dedup",
}

# u64 record fields that are stored in BIGINT and must be <= i64 max
_U64_FIELDS: dict[int, list[str]] = {
    int(rt): [n for n in dt.names if dt.fields[n][0].kind == "u" and dt.fields[n][0].itemsize == 8]
    for rt, dt in DTYPES.items()
}

_M1 = np.uint64(0x9E3779B97F4A7C15)
_F1 = np.uint64(0xFF51AFD7ED558CCD)
_F2 = np.uint64(0xC4CEB9FE1A85EC53)
_SEED = 0x646D2D6465647570  # "dm-dedup"


def dedup_hash(cols: Iterable[np.ndarray], n: int) -> np.ndarray:
    """dm-dedup-v1: a 64-bit hash per row of integer columns, vectorised, as int64.

    For each column value v (as u64): ``h = (h ^ v) * 0x9E3779B97F4A7C15; h ^= h >> 32``, starting
    from 0x646D2D6465647570, then the murmur3 fmix64 finaliser. Deterministic across runs and
    machines (never Python's ``hash()``)."""
    h = np.full(n, _SEED, dtype=np.uint64)
    s32, s33 = np.uint64(32), np.uint64(33)
    for c in cols:
        np.bitwise_xor(h, np.asarray(c).astype(np.int64, copy=False).view(np.uint64), out=h)
        np.multiply(h, _M1, out=h)
        np.bitwise_xor(h, h >> s32, out=h)
    np.bitwise_xor(h, h >> s33, out=h)
    np.multiply(h, _F1, out=h)
    np.bitwise_xor(h, h >> s33, out=h)
    np.multiply(h, _F2, out=h)
    np.bitwise_xor(h, h >> s33, out=h)
    return h.view(np.int64)


def validate(rtype: int, arr: np.ndarray) -> None:
    """Raise ``StorageError`` unless ``arr`` is a 1-d array of ``DTYPES[rtype]`` whose u64 fields
    all fit in i64 (BIGINT)."""
    if rtype not in TABLE_OF:
        raise StorageError(f"unknown rtype {rtype!r}; storable: {[hex(r) for r in TABLE_OF]}")
    dt = DTYPES[rtype]
    if not isinstance(arr, np.ndarray) or arr.dtype != dt or arr.ndim != 1:
        raise StorageError(
            f"{TABLE_OF[rtype]}: expected a 1-d array of dm.records.DTYPES[{rtype:#x}], got "
            f"{getattr(arr, 'dtype', type(arr))!r}"
        )
    if len(arr) == 0:
        return
    for f in _U64_FIELDS[rtype]:
        if int(arr[f].max()) > I64_MAX:
            i = int(np.argmax(arr[f] > I64_MAX))
            raise StorageError(
                f"{TABLE_OF[rtype]}.{f} = {int(arr[f][i])} at row {i} exceeds i64 max "
                f"({I64_MAX}); refusing to wrap it into BIGINT"
            )
    if rtype == RType.DEPTH:
        for f in ("bid_sz", "ask_sz"):
            lv = arr["levels"][f]
            if int(lv.max()) > I64_MAX:
                raise StorageError(f"depth.levels.{f} has a value > i64 max ({I64_MAX}); refusing to wrap it")


def dedup_column(table: str, arr: np.ndarray) -> np.ndarray | None:
    """The ``dedup`` column (int64) of a validated record array, None for tables without one."""
    cols = COLUMNS[table]
    if cols[-1] is not _DEDUP:
        return None
    n = len(arr)
    if table == "trades":
        h = dedup_hash([arr["publisher_id"], arr["price"], arr["size"], arr["side"], arr["sequence"]], n)
        return np.where(arr["trade_id"] != 0, np.int64(0), h)
    return dedup_hash([c.get(arr) for c in cols[:-1] if c.hashed], n)


def column_arrays(table: str, arr: np.ndarray) -> list[np.ndarray]:
    """The table's stored columns for a (validated) record array, each an int64 array of len(arr),
    in ``COLUMNS[table]`` order, ``dedup`` computed."""
    out = [c.get(arr).astype(np.int64) for c in COLUMNS[table] if c.get is not None]
    d = dedup_column(table, arr)
    if d is not None:
        out.append(d)
    return out


def records_from_columns(table: str, cols: list[np.ndarray], n: int) -> np.ndarray:
    """Inverse of ``column_arrays``: stored columns → structured array of the table's rtype
    (``length``/``rtype`` filled in, reserved bytes zero)."""
    rtype = RTYPE_OF[table]
    dt = DTYPES[rtype]
    out = np.zeros(n, dtype=dt)
    out["length"] = dt.itemsize // 4
    out["rtype"] = rtype
    for c, v in zip(COLUMNS[table], cols):
        if c.put is not None:
            c.put(out, v)
    return out


def now_ns() -> int:
    return time.time_ns()


def migrations(backend: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of ``sql/<backend>/NNN_name.sql``, sorted by version."""
    d = SQL_DIR / backend
    out = []
    for p in sorted(d.glob("[0-9][0-9][0-9]_*.sql")):
        out.append((int(p.name[:3]), p.stem[4:], p.read_text()))
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise StorageError(f"duplicate migration numbers in {d}: {versions}")
    return out


class Storage(abc.ABC):
    """A dm database. Not thread-safe: one Storage per thread/process.

    Every method raises ``StorageError`` when the backend fails (the driver error is chained)."""

    backend: str = ""
    url: str = ""

    # --- schema -----------------------------------------------------------------------------
    @abc.abstractmethod
    def migrate(self) -> list[str]:
        """Apply pending ``sql/<backend>/NNN_name.sql`` migrations in order, each in a transaction,
        serialised across processes (PostgreSQL advisory lock / SQLite ``BEGIN IMMEDIATE``).
        Returns the applied ``NNN_name`` list (empty when up to date)."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """Highest applied migration number, 0 on an empty database."""

    # --- records ----------------------------------------------------------------------------
    @abc.abstractmethod
    def write(self, batches: dict[int, np.ndarray], then: Callable[[Any, dict[str, int]], None] | None = None) -> dict[str, int]:
        """Store record arrays ``{rtype: array of DTYPES[rtype]}`` (TRADE, BBO, BOOK_DELTA, DEPTH,
        BAR) in ONE transaction, committed before returning. Records already stored (same unique
        key, see module doc) are skipped. Returns ``{table: rows actually inserted}`` for each
        table given. Raises ``StorageError`` (nothing written) on an unknown rtype, a wrong dtype,
        a u64 value > i64 max or a database failure.

        ``then(cursor, inserted)``: called with the backend's DB-API cursor (``execute(sql,
        params)``; placeholders ``%s`` on PostgreSQL, ``?`` on SQLite: see ``backend``) and the
        ``{table: rows inserted}`` of this write, inside the same transaction, after the rows are
        inserted (also when ``batches`` is empty). Whatever it executes commits with
        the rows, and an exception from it rolls everything back and propagates. For bookkeeping
        that must be exactly as durable as the rows it describes (``dm.backfill``'s ledger)."""

    @abc.abstractmethod
    def fetch(self, table: str, instrument_id: int | None = None) -> np.ndarray:
        """Rows of ``table`` (trades, bbo, book_deltas, depth, bars) as a structured array of the
        table's rtype dtype, ordered by ts_event, ts_recv (bars: ts_event, interval_s)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Rows per table (every table of the schema)."""

    # --- instruments ------------------------------------------------------------------------
    @abc.abstractmethod
    def load_instruments(self) -> list[tuple[int, str, str, str, int]]:
        """Every instrument as ``(instrument_id, symbol, exchange, venue_symbol, publisher_id)``,
        ordered by instrument_id."""

    @abc.abstractmethod
    def insert_instrument(self, instrument_id: int, symbol: str, exchange: str, venue_symbol: str,
                          publisher_id: int) -> bool:
        """Insert and commit one instrument. Returns False (no exception, nothing changed) when
        ``instrument_id`` or ``(symbol, exchange)`` is already taken."""

    # --- gaps -------------------------------------------------------------------------------
    @abc.abstractmethod
    def record_gap(self, instrument_id: int, kind: str, first_missing: int, last_missing: int,
                   detected_ns: int, detail: str = "") -> int:
        """Insert a gap (state ``'open'``) and commit; returns its id. ``first_missing`` /
        ``last_missing`` are the first and last missing sequence numbers (or ns times, by
        ``kind``)."""

    @abc.abstractmethod
    def update_gap(self, gap_id: int, state: str, detail: str | None = None) -> bool:
        """Set a gap's state (e.g. ``'filled'``, ``'unfillable'``), optionally its detail; commit.
        Returns False when no gap has that id."""

    @abc.abstractmethod
    def gaps(self, state: str | None = None) -> list[dict[str, Any]]:
        """Gaps (all, or those in ``state``) ordered by id, as dicts with keys id, instrument_id,
        kind, first_missing, last_missing, detected_ns, state, detail."""

    # --- maintenance ------------------------------------------------------------------------
    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """``{"backend", "url", "schema_version", "bytes", "tables": {table: {"rows", "bytes",
        "ts_min", "ts_max", "partitions"}}}``; ``bytes`` on disk (None when unknown), ``ts_*``
        ns since the epoch of ts_event (None when empty or not a time table)."""

    @abc.abstractmethod
    def compress(self) -> str:
        """Reclaim/compact storage; returns a sentence saying what was done."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection; idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_table(self, table: str) -> None:
        if table not in COLUMNS:
            raise StorageError(f"unknown record table {table!r}; one of {sorted(COLUMNS)}")

    def _prepare(self, batches: dict[int, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        """Validate every batch first (so a bad one writes nothing): ``[(table, array)]``."""
        if not isinstance(batches, dict):
            raise StorageError(f"write() takes {{rtype: array}}, got {type(batches).__name__}")
        for rtype, arr in batches.items():
            validate(int(rtype), arr)
        return [(TABLE_OF[int(rt)], arr) for rt, arr in batches.items()]
