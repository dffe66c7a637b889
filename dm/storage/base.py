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
  statistics      (instrument_id, ts_event, dedup)                 content hash of every column
  gaps            (publisher_id, instrument_id, dedup)             content hash of the GAP record
                                                                   (NULL for rows written before
                                                                   migration 004)
  instrument_     (instrument_id, ts_event, dedup)                 content hash of every column
  definitions                                                      but ts_recv
  ==============  ===============================================  ==============================

  So a venue trade id identifies a trade (a trade re-received after a reconnect, with another
  ts_recv or the SNAPSHOT flag, is stored once), feeds without trade ids (Databento: trade_id 0)
  keep every distinct trade, and for quotes/book data the same record twice gives one row while
  two different records at the same ts_event/sequence (several book changes in one packet) are
  all kept. Two records identical in every stored field are one row: a venue that sends two
  indistinguishable fills must be told apart by the codec (sequence = position in frame).
  The content hash is ``dedup_hash`` below ("dm-dedup-v1"); it is part of the stored data, so
  changing it needs a migration.

* a u64 timestamp that DBN leaves undefined (``UNDEF_TIMESTAMP`` = u64 max: ``statistics.ts_ref``,
  ``instrument_definitions.expiration`` / ``activation``) is stored as NULL and read back as u64
  max; any other u64 above i64 max is refused;
* text (gap ``kind`` / ``detail``, the names of an instrument definition) is the record's
  NUL-padded field as UTF-8; a field that is not valid UTF-8 or holds a NUL before its padding
  is refused.

Rows the tables cannot hold are found row by row, vectorised, before anything is written
(``row_problems``); ``write`` refuses a batch holding any with ``StorageDataError`` whose
``rejects`` name every such row, so a caller (the persister) can set them aside and store the
rest. The GAP records become ``gaps`` rows (state ``'open'``; a re-delivered record is a no-op);
an INSTRUMENT_DEF record registers its instrument in ``instruments`` when absent (refused as
``StorageDataError`` when its id is registered to another (symbol, exchange)) and adds a row to
``instrument_definitions``. A (symbol, exchange) already registered under another id keeps that
registration and the definition is still stored: Databento re-assigns instrument ids from day to
day (XNAS MSFT is 6819 on 2021-10-04 and 6830 on 2021-10-05), so ``instruments`` holds the first
id of such a symbol and ``instrument_definitions`` every id it had.

Tables: ``instruments``, ``trades``, ``bbo``, ``book_deltas``, ``depth``, ``bars``, ``mbp_events``,
``statistics``, ``gaps``, ``instrument_definitions``, ``schema_migrations``. PostgreSQL partitions
the tick tables (trades, bbo, book_deltas, depth, mbp_events, statistics) by day on ``ts_event``.
"""
from __future__ import annotations

import abc
import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from dm.errors import StorageDataError, StorageError
from dm.records import DEPTH_LEVELS, DTYPES, I64_MAX, MAX_SIZE_PRECISION, U64_MAX, RType

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"  # dm/sql -> ../sql (top level): package data, ships with pip install
NS_PER_DAY = 86_400 * 1_000_000_000

# table name <-> rtype
TABLE_OF: dict[int, str] = {
    RType.TRADE: "trades",
    RType.BBO: "bbo",
    RType.BOOK_DELTA: "book_deltas",
    RType.DEPTH: "depth",
    RType.BAR: "bars",
    RType.MBP_EVENT: "mbp_events",
    RType.STATISTICS: "statistics",
}
RTYPE_OF: dict[str, int] = {v: int(k) for k, v in TABLE_OF.items()}
#: every rtype ``write`` stores: the fixed-width tables above (binary COPY) plus the records
#: with text fields, written row-wise (few rows)
RECORD_TABLES: dict[int, str] = {int(k): v for k, v in TABLE_OF.items()} | {
    int(RType.GAP): "gaps",
    int(RType.INSTRUMENT_DEF): "instrument_definitions",
}
TICK_TABLES = ("trades", "bbo", "book_deltas", "depth", "mbp_events", "statistics")
ALL_TABLES = ("instruments", "trades", "bbo", "book_deltas", "depth", "bars", "mbp_events", "statistics", "gaps",
              "instrument_definitions", "schema_migrations")


class Column:
    """One stored column of a record table: SQL type and how to read/write it from a record array.

    ``nullable``: a u64 field whose u64 max (DBN's UNDEF_TIMESTAMP) is stored as NULL. In the
    int64 column arrays and the COPY payload that value travels as its bit pattern -1 (never a
    stored value: every other u64 above i64 max is refused), turned into NULL by the INSERT."""

    __slots__ = ("name", "sqltype", "width", "get", "put", "hashed", "nullable")

    def __init__(self, name: str, sqltype: str, get: Callable[[np.ndarray], np.ndarray] | None,
                 put: Callable[[np.ndarray, np.ndarray], None] | None, hashed: bool = True,
                 nullable: bool = False):
        self.name = name
        self.hashed = hashed  # part of the content hash (dedup)
        self.nullable = nullable
        self.sqltype = sqltype
        self.width = {"BIGINT": 8, "INTEGER": 4, "SMALLINT": 2}[sqltype]
        self.get = get
        self.put = put


def _field(name: str, sqltype: str, src: str | None = None, hashed: bool = True, nullable: bool = False) -> Column:
    src = src or name

    def get(a):
        return a[src]

    def put(out, v):
        out[src] = v

    return Column(name, sqltype, get, put, hashed, nullable)


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
    # DBN StatMsg (RType.STATISTICS); ts_ref NULL when undefined
    "statistics": _HDR + [
        _field("ts_recv", "BIGINT"), _field("ts_ref", "BIGINT", nullable=True), _field("price", "BIGINT"),
        _field("quantity", "BIGINT"), _field("sequence", "BIGINT"), _field("ts_in_delta", "INTEGER"),
        _field("stat_type", "INTEGER"), _field("channel_id", "INTEGER"), _field("update_action", "SMALLINT"),
        _field("stat_flags", "SMALLINT"), _SIZE_PRECISION, _DEDUP,
    ],
}

#: columns a table holds beyond its record's (not written by COPY/executemany, not fetched):
#: the built-bar bookkeeping of migration 006 (``dm.bars``)
EXTRA_COLUMNS: dict[str, tuple[str, ...]] = {
    "bars": ("source", "open_ts", "open_ord", "open_dd", "close_ts", "close_ord", "close_dd"),
}

# fetch order: ts_event, ts_recv, then enough to make the order deterministic
ORDER_BY: dict[str, str] = {
    "trades": "ts_event, ts_recv, instrument_id, sequence, trade_id, dedup",
    "bbo": "ts_event, ts_recv, instrument_id, sequence, dedup",
    "book_deltas": "ts_event, ts_recv, instrument_id, sequence, dedup",
    "depth": "ts_event, ts_recv, instrument_id, sequence, dedup",
    "bars": "ts_event, interval_s, instrument_id",
    "mbp_events": "ts_event, ts_recv, instrument_id, sequence, dedup",
    "statistics": "ts_event, ts_recv, instrument_id, sequence, dedup",
}

#: u64 fields stored as NULL when they hold u64 max (UNDEF_TIMESTAMP), per rtype
_NULLABLE_U64: dict[int, frozenset[str]] = {
    int(RType.STATISTICS): frozenset({"ts_ref"}),
    int(RType.INSTRUMENT_DEF): frozenset({"expiration", "activation"}),
}

# u64 record fields that are stored in BIGINT and must be <= i64 max (or, if nullable, u64 max)
_U64_FIELDS: dict[int, list[str]] = {
    int(rt): [n for n in dt.names if dt.fields[n][0].kind == "u" and dt.fields[n][0].itemsize == 8]
    for rt, dt in DTYPES.items()
}
#: text fields (NUL-padded bytes) per rtype: name -> may be empty
_TEXT_FIELDS: dict[int, dict[str, bool]] = {
    int(RType.GAP): {"kind": False, "detail": True},
    int(RType.INSTRUMENT_DEF): {"symbol": False, "exchange": False, "raw_symbol": True, "underlying": True,
                                "base": True, "quote": True},
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


def check_dtype(rtype: int, arr: np.ndarray) -> None:
    """Raise ``StorageError`` unless ``rtype`` is storable and ``arr`` a 1-d array of
    ``DTYPES[rtype]`` (a caller's mistake, not a data problem)."""
    if rtype not in RECORD_TABLES:
        raise StorageError(f"unknown rtype {rtype!r}; storable: {[hex(r) for r in RECORD_TABLES]}")
    dt = DTYPES[rtype]
    if not isinstance(arr, np.ndarray) or arr.dtype != dt or arr.ndim != 1:
        raise StorageError(
            f"{RECORD_TABLES[rtype]}: expected a 1-d array of dm.records.DTYPES[{rtype:#x}], got "
            f"{getattr(arr, 'dtype', type(arr))!r}"
        )


def _text_problems(col: np.ndarray, may_be_empty: bool) -> np.ndarray | None:
    """Mask of the rows whose NUL-padded text field is not storable (invalid UTF-8, a NUL inside,
    empty when it must not be); None when every row is fine (the vectorised common case)."""
    n, width = len(col), col.dtype.itemsize
    length = np.char.str_len(col)  # up to the last non-NUL byte (numpy strips the padding)
    is_nul = np.ascontiguousarray(col).view(np.uint8).reshape(n, width) == 0
    first_nul = np.where(is_nul.any(axis=1), is_nul.argmax(axis=1), width)
    bad = first_nul < length  # a NUL before the end of the text
    if not may_be_empty:
        bad |= length == 0
    try:
        np.char.decode(col, "utf-8")
    except UnicodeDecodeError:
        for i, v in enumerate(col.tolist()):
            try:
                v.decode("utf-8")
            except UnicodeDecodeError:
                bad[i] = True
    return bad if bad.any() else None


def row_problems(rtype: int, arr: np.ndarray) -> list[tuple[int, str]]:
    """``[(row_index, reason)]`` of the rows of a record array (dtype checked) that its table cannot
    hold: a u64 above i64 max (except a nullable field's u64 max), a depth level size above i64
    max, unstorable text, an instrument definition with instrument_id 0. Vectorised: one
    reduction per field when every row is fine; per-row work only for the bad ones."""
    n = len(arr)
    if n == 0:
        return []
    table = RECORD_TABLES[rtype]
    found: dict[int, str] = {}

    def add(mask: np.ndarray, why) -> None:
        for i in np.flatnonzero(mask).tolist():
            found.setdefault(i, why(i))

    nullable = _NULLABLE_U64.get(rtype, frozenset())
    for f in _U64_FIELDS[rtype]:
        col = arr[f]
        if int(col.max()) <= I64_MAX:
            continue
        mask = col > I64_MAX
        if f in nullable:
            mask &= col != U64_MAX
        add(mask, lambda i, f=f, col=col: f"{table}.{f} = {int(col[i])} exceeds i64 max ({I64_MAX}); refusing to wrap it into BIGINT")
    if rtype == RType.DEPTH:
        for f in ("bid_sz", "ask_sz"):
            lv = arr["levels"][f]
            if int(lv.max()) > I64_MAX:
                add((lv > I64_MAX).any(axis=1), lambda i, f=f, lv=lv: (
                    f"{table}.{f}_{int(np.argmax(lv[i] > I64_MAX)):02d} = {int(lv[i].max())} exceeds i64 max "
                    f"({I64_MAX}); refusing to wrap it into BIGINT"))
    for f, may_be_empty in _TEXT_FIELDS.get(rtype, {}).items():
        mask = _text_problems(arr[f], may_be_empty)
        if mask is not None:
            add(mask, lambda i, f=f: f"{table}.{f} = {bytes(arr[f][i])!r} is not storable text (empty, not UTF-8 or a NUL inside)")
    if rtype == RType.INSTRUMENT_DEF:
        zero = arr["instrument_id"] == 0
        if zero.any():
            add(zero, lambda i: f"{table}: instrument_id 0 is 'no instrument'")
        big = arr["size_precision"] > MAX_SIZE_PRECISION
        if big.any():
            add(big, lambda i: f"{table}.size_precision = {int(arr['size_precision'][i])} > {MAX_SIZE_PRECISION}")
    if rtype == RType.GAP:  # few rows: per row
        not_ascii = np.array([not k.isascii() for k in arr["kind"].tolist()], bool)
        if not_ascii.any():
            add(not_ascii, lambda i: f"{table}.kind = {bytes(arr['kind'][i])!r} is not ASCII")
    return sorted(found.items())


def validate(rtype: int, arr: np.ndarray) -> None:
    """Raise ``StorageError`` unless ``arr`` is a 1-d array of ``DTYPES[rtype]`` every row of which
    its table can hold (``StorageDataError`` naming every refused row otherwise)."""
    check_dtype(rtype, arr)
    bad = row_problems(rtype, arr)
    if bad:
        raise StorageDataError(
            f"{len(bad)} row(s) of {RECORD_TABLES[rtype]} cannot be stored; first: row {bad[0][0]}: {bad[0][1]}",
            [(rtype, i, why) for i, why in bad])


def drop_rows(batches: dict[int, np.ndarray], rejects) -> dict[int, np.ndarray]:
    """``batches`` without the rows named by ``rejects`` (``(rtype, row_index, ...)``), copies
    only for the rtypes that lose rows."""
    by_rtype: dict[int, list[int]] = {}
    for r in rejects:
        by_rtype.setdefault(int(r[0]), []).append(int(r[1]))
    out = dict(batches)
    for rt, idx in by_rtype.items():
        keep = np.ones(len(out[rt]), bool)
        keep[idx] = False
        out[rt] = out[rt][keep]
    return out


def text_column(arr: np.ndarray, field: str) -> list[str]:
    """A NUL-padded text field of a (validated) record array as a list of str."""
    return np.char.decode(arr[field], "utf-8").tolist()


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
    in ``COLUMNS[table]`` order, ``dedup`` computed (a nullable column's NULL is -1 here)."""
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
            c.put(out, v)  # a nullable column's -1 (NULL) becomes u64 max again
    return out


def _record_slot(dt: np.dtype, name: str) -> tuple[np.dtype, int]:
    """(dtype, byte offset) of stored column ``name`` inside a record of dtype ``dt``: a field,
    one element of a subarray field (``bid_ct_03``) or a depth level field (``bid_px_03``)."""
    if name in dt.names:
        f, off = dt.fields[name][:2]
        return f, off
    base, i = name[:-3], int(name[-2:])
    if base in dt.names:  # a subarray field, e.g. mbp_events bid_ct (u4, (10,))
        f, off = dt.fields[base][:2]
        sub = f.subdtype[0]
        return sub, off + i * sub.itemsize
    lv, off = dt.fields["levels"][:2]  # depth: levels[i].<base>
    ld = lv.subdtype[0]
    f, foff = ld.fields[base][:2]
    return f, off + i * ld.itemsize + foff


class RecordReader:
    """Stored columns of ``table`` arriving as rows of a fixed-width source layout (a binary COPY
    tuple, a numpy row of int64) → record arrays of the table's rtype in ONE structured numpy
    assignment (fields matched by position, each cast on the way: no per-column passes, no
    per-row Python). ``columns``: the stored columns a read selects (those with a record field,
    ``dedup`` left out), in ``COLUMNS`` order."""

    def __init__(self, table: str):
        self.table = table
        rtype = RTYPE_OF[table]
        self.dtype = DTYPES[rtype]
        self.columns = [c for c in COLUMNS[table] if c.put is not None]
        slots = [_record_slot(self.dtype, c.name) for c in self.columns]
        #: the record fields written by a read, in ``columns`` order (a view dtype of the record)
        self.view = np.dtype({"names": [c.name for c in self.columns], "formats": [f for f, _ in slots],
                              "offsets": [o for _, o in slots], "itemsize": self.dtype.itemsize})
        t = np.zeros(1, self.dtype)
        t["length"] = self.dtype.itemsize // 4
        t["rtype"] = rtype
        self._template = t.view(f"V{self.dtype.itemsize}")[0]

    def source(self, formats: list, offsets: list[int], itemsize: int) -> np.dtype:
        """A source row dtype with the columns at ``offsets`` in ``formats`` (e.g. ``>i8``)."""
        return np.dtype({"names": [c.name for c in self.columns], "formats": formats, "offsets": offsets,
                         "itemsize": itemsize})

    def fill_template(self, out: np.ndarray) -> None:
        """Set ``length``/``rtype`` and zero every other byte of the records ``out``."""
        out.view(f"V{self.dtype.itemsize}")[:] = self._template

    def records(self, rows: np.ndarray) -> np.ndarray:
        """Source rows (a structured array of a ``source`` dtype) → record array (``length``,
        ``rtype`` set, reserved bytes zero; a nullable column's -1 becomes u64 max again)."""
        out = np.empty(len(rows), self.dtype)
        out.view(f"V{self.dtype.itemsize}")[:] = self._template
        out.view(self.view)[:] = rows
        return out


_READERS: dict[str, RecordReader] = {}


def record_reader(table: str) -> RecordReader:
    r = _READERS.get(table)
    if r is None:
        r = _READERS[table] = RecordReader(table)
    return r


def _words(col: np.ndarray) -> list[np.ndarray]:
    """A fixed-width bytes column as its little-endian 8-byte words (zero-padded to a multiple of
    8 bytes), one u64 array per word: text fields enter the content hash this way."""
    n, w = len(col), col.dtype.itemsize
    raw = np.zeros((n, -(-w // 8) * 8), np.uint8)
    raw[:, :w] = np.ascontiguousarray(col).view(np.uint8).reshape(n, w)
    words = raw.view("<u8")
    return [words[:, k] for k in range(words.shape[1])]


def gap_dedup(arr: np.ndarray) -> np.ndarray:
    """The ``gaps.dedup`` key (int64) of GAP records: the dm-dedup-v1 hash of every field of the
    record (kind and detail as their 8-byte words), so a re-delivered record is a no-op and two
    different gaps never are."""
    n = len(arr)
    cols = [arr[f] for f in ("publisher_id", "instrument_id", "ts_event", "ts_recv", "first_missing",
                             "last_missing", "units", "flags")]
    for f in ("kind", "detail"):
        cols += _words(arr[f])
    return dedup_hash(cols, n)


#: numeric fields of INSTRUMENT_DEF that instrument_definitions stores (besides the header)
DEFINITION_NUMBERS = ("ts_recv", "min_price_increment", "display_factor", "lot_size", "contract_multiplier",
                      "strike_price", "expiration", "activation", "size_precision", "price_precision",
                      "instrument_class", "flags")
DEFINITION_TEXTS = ("symbol", "exchange", "raw_symbol", "underlying", "base", "quote")


def definition_dedup(arr: np.ndarray) -> np.ndarray:
    """The ``instrument_definitions.dedup`` key (int64): the dm-dedup-v1 hash of every field but
    ts_recv (the same definition received twice is one row)."""
    n = len(arr)
    cols = [arr[f] for f in ("publisher_id", "instrument_id", "ts_event") + DEFINITION_NUMBERS[1:]]
    for f in DEFINITION_TEXTS:
        cols += _words(arr[f])
    return dedup_hash(cols, n)


def definitions_from_rows(rows) -> np.ndarray:
    """SQL rows ``(instrument_id, publisher_id, ts_event, *DEFINITION_NUMBERS, *DEFINITION_TEXTS)``
    (NULL expiration/activation as -1) → INSTRUMENT_DEF records."""
    dt = DTYPES[RType.INSTRUMENT_DEF]
    out = np.zeros(len(rows), dt)
    out["length"] = dt.itemsize // 4
    out["rtype"] = RType.INSTRUMENT_DEF
    names = ("instrument_id", "publisher_id", "ts_event") + DEFINITION_NUMBERS + DEFINITION_TEXTS
    for k, name in enumerate(names):
        vals = [r[k] for r in rows]
        if name in DEFINITION_TEXTS:
            out[name] = [v.encode() for v in vals]
        else:
            out[name] = np.array(vals, dtype=np.int64).astype(dt.fields[name][0], casting="unsafe")
    return out


def legacy_gap(instrument_id: int, kind: str, first_missing: int, last_missing: int, detected_ns: int,
               detail: str = "", publisher_id: int = 0, units: int | None = None) -> np.ndarray:
    """``Storage.record_gap``'s arguments as a one-row GAP record array (``units`` None: ns for
    kind ``reconnect``, else sequence). Raises ``StorageDataError`` for a kind that does not fit."""
    from dm.records import GapUnits, gap_record

    if units is None:
        units = GapUnits.NS if kind == "reconnect" else GapUnits.SEQUENCE
    try:
        raw = gap_record(publisher_id, instrument_id, kind, first_missing, last_missing, units, detected_ns, detail)
    except (ValueError, OverflowError) as e:
        raise StorageDataError(f"gap {kind!r}: {e}") from None
    return np.frombuffer(raw, DTYPES[RType.GAP]).copy()


def definition_conflicts(arr: np.ndarray) -> list[tuple[int, str]]:
    """Rows of INSTRUMENT_DEF records whose instrument_id an earlier row of the same array
    registers to another (symbol, exchange). (One symbol under several ids is not a conflict:
    Databento re-assigns ids from day to day; every definition is kept, the registry keeps the
    first id.)"""
    by_id: dict[int, tuple[str, str]] = {}
    out = []
    for i, (iid, sym, ex) in enumerate(zip(arr["instrument_id"].tolist(), text_column(arr, "symbol"),
                                           text_column(arr, "exchange"))):
        have = by_id.setdefault(iid, (sym, ex))
        if have != (sym, ex):
            out.append((i, f"instrument_id {iid} is registered to {have[0]}@{have[1]} earlier in the batch, not {sym}@{ex}"))
    return out


def now_ns() -> int:
    return time.time_ns()


_SECRET_KEYS = frozenset({"password", "sslpassword", "passfile"})


def redact_url(url: str) -> str:
    """A storage URL without secrets: the password of ``user:password@host`` and any
    ``password=`` / ``sslpassword=`` / ``passfile=`` query parameter are replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable storage URL>"
    netloc, query, changed = parts.netloc, parts.query, False
    if "@" in netloc:
        cred, host = netloc.rsplit("@", 1)
        if ":" in cred:
            netloc, changed = cred.split(":", 1)[0] + ":***@" + host, True
    if query:
        q = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_KEYS for k, _ in q):
            query = urlencode([(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in q], safe="*/")
            changed = True
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)) if changed else url


def url_secrets(url: str) -> list[str]:
    """The secret strings in a storage URL (password in the netloc or the query), longest first."""
    out = []
    try:
        parts = urlsplit(url)
        if parts.password:
            out.append(parts.password)
        out += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in _SECRET_KEYS and v]
    except ValueError:
        pass
    return sorted({x for x in out if x}, key=len, reverse=True)


def redact_text(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with every secret of ``url`` replaced by ``***``."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


class Watchdog:
    """A client-side deadline for blocking database calls: while a call is armed (``guard``), a
    daemon thread calls its ``abort`` once the deadline passes (e.g. shuts the connection's
    socket down, so a call blocked on a blackholed connection fails at once). ``fired`` tells
    the caller that its call was aborted. One call armed at a time (a storage is used by one
    thread)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._deadline: float | None = None
        self._abort: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self.fired = False
        self.aborts = 0

    @contextlib.contextmanager
    def guard(self, seconds: float | None, abort: Callable[[], None]) -> Iterator[None]:
        if seconds is None:
            self.fired = False
            yield
            return
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dm-storage-watchdog", daemon=True)
                self._thread.start()
            self._deadline = time.monotonic() + seconds
            self._abort = abort
            self.fired = False
            self._cv.notify()
        try:
            yield
        finally:
            with self._cv:
                self._deadline = None
                self._abort = None

    def _run(self) -> None:
        with self._cv:
            while True:
                if self._deadline is None:
                    self._cv.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cv.wait(left)
                    continue
                abort, self._deadline, self._abort = self._abort, None, None
                self.fired = True
                self.aborts += 1
                try:
                    if abort is not None:
                        abort()
                except Exception:  # noqa: BLE001 - the blocked call reports the failure
                    pass


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
    #: bars to build from the trades each ``write`` inserts (``dm.bars.BarPlan``; the persister
    #: sets it from ``[bars]``); None: no bars are built
    bar_plan = None

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
    def write(self, batches: dict[int, np.ndarray], checked: bool = False,
              then: Callable[[Any, dict[str, int]], None] | None = None) -> dict[str, int]:
        """Store record arrays ``{rtype: array of DTYPES[rtype]}`` (TRADE, BBO, BOOK_DELTA, DEPTH,
        BAR, MBP_EVENT, STATISTICS, GAP, INSTRUMENT_DEF) in ONE transaction, committed before
        returning. Records already stored (same unique key, see module doc) are skipped. Returns
        ``{table: rows actually inserted}`` for each table given (INSTRUMENT_DEF:
        ``instrument_definitions`` and ``instruments``, the registrations it added).

        Raises, with nothing written: ``StorageError`` on an unknown rtype or a wrong dtype;
        ``StorageDataError`` when rows cannot be stored (``row_problems``, an instrument
        registration contradicting the database or the batch: ``rejects`` names them) or when
        the database refuses the data for a reason it does not pin on a row (``rejects`` empty);
        ``StorageTimeoutError`` when the database did not answer within the timeout;
        ``StorageError`` on any other database failure (connection lost, ...: retry later).
        ``checked=True`` skips ``row_problems`` (the caller ran it).

        ``then(cursor, inserted)``: called with the backend's DB-API cursor (``execute(sql,
        params)``; placeholders ``%s`` on PostgreSQL, ``?`` on SQLite: see ``backend``) and the
        ``{table: rows inserted}`` of this write, inside the same transaction, after the rows are
        inserted (also when ``batches`` is empty). Whatever it executes commits with the rows,
        and an exception from it rolls everything back and propagates. For bookkeeping that must
        be exactly as durable as the rows it describes (``dm.backfill``'s ledger)."""

    def ping(self) -> None:
        """One round trip to the database (raises like ``write``)."""

    def instrument_rows(self) -> list[tuple[int, str, str, str, int, int | None]]:
        """Every instrument as ``(instrument_id, symbol, exchange, venue_symbol, publisher_id,
        size_precision)`` (None: not known), ordered by instrument_id."""
        raise NotImplementedError

    def definitions(self, instrument_id: int | None = None) -> np.ndarray:
        """Rows of ``instrument_definitions`` as INSTRUMENT_DEF records (ordered by
        instrument_id, ts_event)."""
        raise NotImplementedError

    @abc.abstractmethod
    def fetch(self, table: str, instrument_id: int | None = None) -> np.ndarray:
        """Rows of ``table`` (trades, bbo, book_deltas, depth, bars) as a structured array of the
        table's rtype dtype, ordered by ts_event, ts_recv (bars: ts_event, interval_s). Bars: the
        received ones (BAR records ``write`` stored); the bars dm builds from trades (source 1)
        are read with ``scan(.., where={"source": 1})`` / ``dm.history``."""

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
                          publisher_id: int, size_precision: int | None = None) -> bool:
        """Insert and commit one instrument. Returns False (no exception, nothing changed) when
        ``instrument_id`` or ``(symbol, exchange)`` is already taken."""

    # --- gaps -------------------------------------------------------------------------------
    @abc.abstractmethod
    def record_gap(self, instrument_id: int, kind: str, first_missing: int, last_missing: int,
                   detected_ns: int, detail: str = "", publisher_id: int = 0, units: int | None = None) -> int:
        """Insert a gap (state ``'open'``) and commit; returns its id (the existing row's when the
        same gap is already recorded). ``first_missing`` / ``last_missing`` are the first and
        last missing sequence numbers or ns times (``units``: ``GapUnits``; None: ns for kind
        ``reconnect``, else sequence). The persister stores GAP records instead (``write``)."""

    @abc.abstractmethod
    def update_gap(self, gap_id: int, state: str, detail: str | None = None) -> bool:
        """Set a gap's state (e.g. ``'filled'``, ``'unfillable'``), optionally its detail; commit.
        Returns False when no gap has that id."""

    @abc.abstractmethod
    def gaps(self, state: str | None = None) -> list[dict[str, Any]]:
        """Gaps (all, or those in ``state``) ordered by id, as dicts with keys id, publisher_id,
        instrument_id, kind, units, first_missing, last_missing, detected_ns, state, detail."""

    # --- maintenance ------------------------------------------------------------------------
    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """``{"backend", "url", "schema_version", "bytes", "tables": {table: {"rows", "bytes",
        "ts_min", "ts_max", "partitions"}}}``; ``bytes`` on disk (None when unknown), ``ts_*``
        ns since the epoch of ts_event (None when empty or not a time table)."""

    def scan(self, table: str, instrument_ids=None, start_ns: int | None = None, end_ns: int | None = None,
             where: dict[str, int] | None = None, chunk_rows: int = 1 << 20) -> Iterator[np.ndarray]:
        """Rows of ``table`` with ``instrument_id`` in ``instrument_ids`` (None: all) and
        ``start_ns <= ts_event < end_ns`` (None: open), and each ``column = value`` of ``where``
        (e.g. bars ``interval_s`` / ``source``), as record arrays of the table's rtype in
        ``ORDER_BY`` order, in chunks of at most ``chunk_rows`` (bounded memory). Raises
        ``StorageError``. A generator: on PostgreSQL it holds the connection's COPY until it is
        exhausted or closed, so interleaved scans need one storage each."""
        raise NotImplementedError

    def _scan_sql(self, table: str, instrument_ids, start_ns, end_ns, where, ph: str) -> tuple[str, list]:
        """(``WHERE ..`` text, params) of ``scan`` with placeholder ``ph``."""
        self._check_table(table)
        conds, params = [], []
        if instrument_ids is not None:
            ids = [int(i) for i in instrument_ids]
            if not ids:
                ids = [-1]
            conds.append(f"instrument_id IN ({', '.join([ph] * len(ids))})")
            params += ids
        if start_ns is not None:
            conds.append(f"ts_event >= {ph}")
            params.append(int(start_ns))
        if end_ns is not None:
            conds.append(f"ts_event < {ph}")
            params.append(int(end_ns))
        known = {c.name for c in COLUMNS[table]} | set(EXTRA_COLUMNS.get(table, ()))
        for k, v in (where or {}).items():
            if k not in known:
                raise StorageError(f"{table}: no column {k!r} to filter on")
            conds.append(f"{k} = {ph}")
            params.append(int(v))
        return (" WHERE " + " AND ".join(conds)) if conds else "", params

    def rebuild_bars(self, since_ns: int = 0, plan=None) -> dict[str, int]:
        """Recompute built bars (source 1) starting at or after ``since_ns`` from stored trades
        (``dm db rebuild-bars``); equal to what ``write`` built incrementally."""
        raise NotImplementedError

    def maintain(self, ahead_days: int = 2, now: int | None = None) -> list[str]:
        """Maintenance outside the write path (PostgreSQL: day partitions from today to
        ``ahead_days`` ahead). Returns what it created; SQLite has nothing to do."""
        return []

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

    def _prepare(self, batches: dict[int, np.ndarray], checked: bool = False) -> list[tuple[int, np.ndarray]]:
        """Validate every batch first (so a bad one writes nothing): ``[(rtype, array)]``, the
        COPY tables first, then GAP and INSTRUMENT_DEF. Raises like ``write``."""
        if not isinstance(batches, dict):
            raise StorageError(f"write() takes {{rtype: array}}, got {type(batches).__name__}")
        rejects = []
        for rtype, arr in batches.items():
            check_dtype(int(rtype), arr)
            if not checked:
                rejects += [(int(rtype), i, why) for i, why in row_problems(int(rtype), arr)]
        defs = batches.get(RType.INSTRUMENT_DEF)
        if defs is not None and len(defs):
            bad = {r[1] for r in rejects if r[0] == RType.INSTRUMENT_DEF}
            rejects += [(int(RType.INSTRUMENT_DEF), i, why) for i, why in definition_conflicts(defs) if i not in bad]
        if rejects:
            rt, i, why = rejects[0]
            raise StorageDataError(f"{len(rejects)} row(s) cannot be stored; first: {RECORD_TABLES[rt]} row {i}: {why}", rejects)
        return sorted(((int(rt), arr) for rt, arr in batches.items()), key=lambda x: x[0] in (RType.GAP, RType.INSTRUMENT_DEF))
