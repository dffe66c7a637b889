"""History API: stored records by canonical symbol and time range (issue 10).

    from dm.history import History
    h = History("postgresql://postgres@127.0.0.1/dm")          # or sqlite:///var/dm.sqlite
    t = h.trades("BTCUSD", "BINANCE", "2026-11-29", "2026-11-30")  # numpy, TRADE_DTYPE records
    df = h.to_pandas(t)                                          # tz-aware ts, float prices
    df = h.to_pandas(t, prices="decimal")                        # exact Decimal prices and sizes
    for chunk in h.iter("book_deltas", "BTCUSD", "BINANCE", start, end, chunk_rows=1_000_000): ...
    bars = h.bars("ESU4", None, start, end, interval="1m")       # dm's bars (source="dm")

Arrays are the channel record dtypes (``dm.records.DTYPES``: the same as a ``dm.client`` reader
gets live); times are ns since the UNIX epoch (UTC); prices i64 at 1e-9 (``UNDEF_PRICE`` = none);
sizes u64 at 10^-``size_precision``. Ranges are half-open ``[start, end)`` on ``ts_event``;
``start``/``end`` take ns (int), ``datetime`` (naive = UTC), ISO-8601 text or
``pandas.Timestamp``. Reads are ``Storage.scan``: PostgreSQL binary COPY out parsed by numpy
as the bytes arrive, SQLite cursor chunks; ``iter`` keeps memory bounded by ``chunk_rows``.

Errors: ``HistoryError`` (a ``DmError``) for an unknown symbol or schema, a bad time;
``StorageError`` from the database.
"""
from __future__ import annotations

import datetime as _dt
from decimal import Decimal
from typing import Iterator

import numpy as np

from dm.errors import DmError
from dm.records import UNDEF_PRICE
from dm.storage.base import RTYPE_OF, Storage

SCHEMAS = ("trades", "bbo", "depth", "book_deltas", "bars", "mbp_events", "statistics", "definitions")
PRICE_FIELDS = frozenset({"price", "bid_px", "ask_px", "open", "high", "low", "close"})
SIZE_FIELDS = frozenset({"size", "bid_sz", "ask_sz", "volume", "quantity"})
_SKIP = frozenset({"length", "rtype", "_reserved", "_pad"})
_ARCHIVED = ("trades", "bbo", "depth", "book_deltas", "mbp_events", "statistics")
BAR_SOURCES = {"venue": 0, "received": 0, "dm": 1, "built": 1}


class HistoryError(DmError):
    """A history request that cannot be answered (unknown symbol/schema, bad time)."""


def to_ns(t) -> int | None:
    """ns since the epoch of ``t`` (None passes through): int ns, ``datetime`` (naive = UTC),
    ``date``, ISO-8601 text, ``pandas.Timestamp`` / ``numpy.datetime64``."""
    if t is None:
        return None
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return int(t)
    if isinstance(t, np.datetime64):
        return int(t.astype("datetime64[ns]").astype(np.int64))
    if hasattr(t, "value") and hasattr(t, "tz_localize"):  # pandas.Timestamp
        return int(t.tz_localize("UTC").value if t.tzinfo is None else t.value)
    if isinstance(t, str):
        text = t.strip()
        if text.isdigit():
            return int(text)
        try:
            t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise HistoryError(f"time {t!r}: expected ns since the epoch or ISO-8601") from None
    if isinstance(t, _dt.date) and not isinstance(t, _dt.datetime):
        t = _dt.datetime(t.year, t.month, t.day)
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        delta = t - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    raise HistoryError(f"time {t!r}: expected ns, datetime, ISO-8601 text or pandas.Timestamp")


class History:
    """Read-only access to a dm store. ``source``: a storage URL or an open ``Storage`` (not
    closed by ``close`` then). One History per thread."""

    def __init__(self, source: str | Storage, archive_dir=None):
        from dm.storage import open_storage

        #: the retention archive (``dm.archive``): days moved out of the database are read from
        #: there transparently (None: database only)
        self.archive_dir = archive_dir
        self._own = isinstance(source, str)
        self.storage: Storage = open_storage(source) if self._own else source
        self._instruments: list[tuple] | None = None

    def close(self) -> None:
        if self._own:
            self.storage.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- instruments --------------------------------------------------------------------------
    def instrument_ids(self, symbol: str | int, exchange: str | None = None) -> list[int]:
        """Instrument ids of a canonical symbol (on ``exchange``, or on every exchange when None;
        ``SYMBOL@EXCHANGE`` also works); an int is taken as the instrument id itself. Raises
        ``HistoryError`` when nothing matches."""
        if isinstance(symbol, (int, np.integer)):
            return [int(symbol)]
        if exchange is None and "@" in symbol:
            symbol, exchange = symbol.split("@", 1)
        if self._instruments is None:
            self._instruments = self.storage.instrument_rows()
        sym = symbol.upper()
        ex = None if exchange is None else exchange.upper()
        ids = [int(r[0]) for r in self._instruments if r[1].upper() == sym and (ex is None or r[2].upper() == ex)]
        if not ids:
            # instruments registered later (a running persister): look again once
            self._instruments = self.storage.instrument_rows()
            ids = [int(r[0]) for r in self._instruments
                   if r[1].upper() == sym and (ex is None or r[2].upper() == ex)]
        if not ids:
            raise HistoryError(f"no instrument {symbol}" + (f"@{exchange}" if exchange else "") + " in the store")
        return ids

    # -- records ------------------------------------------------------------------------------
    def iter(self, schema: str, symbol: str | int | None, exchange: str | None = None, start=None, end=None, *,
             chunk_rows: int = 1 << 20, interval=None, source: str | None = "dm",
             stat_type: int | None = None, _lazy: bool = False) -> Iterator[np.ndarray]:
        """Chunks (record arrays of ``schema``'s rtype, ``ORDER_BY`` order) of at most
        ``chunk_rows``. ``symbol`` None: every instrument. Bars: ``interval`` ("1m", 60, ...) and
        ``source`` ("dm": built by dm, "venue": received, None: both). Statistics: ``stat_type``
        (one code of ``dm.records.StatType``; None: all). ``definitions``: the stored
        INSTRUMENT_DEF records (by instrument id, then ``ts_event``)."""
        if schema not in SCHEMAS:
            raise HistoryError(f"unknown schema {schema!r}; one of {', '.join(SCHEMAS)}")
        ids = None if symbol is None else self.instrument_ids(symbol, exchange)
        lo, hi = to_ns(start), to_ns(end)
        if schema == "definitions":
            d = self.storage.definitions()
            m = np.ones(len(d), bool) if ids is None else np.isin(d["instrument_id"], ids)
            if lo is not None:
                m &= d["ts_event"] >= np.uint64(lo)
            if hi is not None:
                m &= d["ts_event"] < np.uint64(hi)
            d = d[m]
            for i in range(0, len(d), chunk_rows):
                yield d[i:i + chunk_rows]
            return
        where: dict[str, int] = {}
        if schema == "statistics" and stat_type is not None:
            where["stat_type"] = int(stat_type)
        if schema == "bars":
            if interval is not None:
                from dm.bars import parse_interval

                where["interval_s"] = parse_interval(interval)
            if source is not None:
                if source not in BAR_SOURCES:
                    raise HistoryError(f"bar source {source!r}: one of dm, venue")
                where["source"] = BAR_SOURCES[source]
        if self.archive_dir is None or schema not in _ARCHIVED:
            yield from self.storage.scan(schema, ids, lo, hi, where, chunk_rows)
            return
        yield from self._with_archive(schema, ids, lo, hi, where, chunk_rows, lazy=_lazy)

    def _with_archive(self, schema, ids, lo, hi, where, chunk_rows, lazy=False):
        """Archived days from their Parquet files (merged with any rows of the same day still in
        the database: late rows, or an archive run between writing and removing), the other
        stretches of the range from the database, in time order. ``lazy``: an archived day
        with nothing to merge comes as its ``dm.archive.ArchivedDay`` (for ``get``)."""
        from dm.archive import archived_days, archived_pieces
        from dm.storage.base import NS_PER_DAY, ORDER_BY, column_arrays, COLUMNS

        days = [d for d in archived_days(self.archive_dir, schema)
                if (hi is None or d * NS_PER_DAY < hi) and (lo is None or (d + 1) * NS_PER_DAY > lo)]
        pos = lo
        names = [c.name for c in COLUMNS[schema]]
        keys = [k.strip() for k in ORDER_BY[schema].split(",")]
        for d in days:
            d_lo, d_hi = d * NS_PER_DAY, (d + 1) * NS_PER_DAY
            if pos is None or pos < d_lo:
                yield from self.storage.scan(schema, ids, pos, d_lo if hi is None else min(d_lo, hi), where, chunk_rows)
            a_lo = d_lo if lo is None else max(lo, d_lo)
            a_hi = d_hi if hi is None else min(hi, d_hi)
            pieces = list(archived_pieces(self.archive_dir, schema, ids, a_lo, a_hi, where))
            db = list(self.storage.scan(schema, ids, a_lo, a_hi, where, chunk_rows))
            if len(pieces) == 1 and not db and (lazy or pieces[0].n <= chunk_rows):
                yield pieces[0] if lazy else pieces[0].records()
                pos = d_hi
                continue
            parts = [p.records() for p in pieces] + db
            if parts:
                a = parts[0] if len(parts) == 1 else np.concatenate(parts)
                if len(parts) > 1:
                    a = np.unique(a.view(f"V{a.dtype.itemsize}")).view(a.dtype)
                    cols = column_arrays(schema, a)
                    a = a[np.lexsort([cols[names.index(k)] for k in reversed(keys)])]
                for i in range(0, len(a), chunk_rows):
                    yield a[i:i + chunk_rows]
            pos = d_hi
        if hi is None or pos is None or pos < hi:
            yield from self.storage.scan(schema, ids, pos, hi, where, chunk_rows)

    def get(self, schema: str, symbol, exchange=None, start=None, end=None, **kw) -> np.ndarray:
        """All rows of ``iter`` in one array."""
        from dm.records import DTYPES, RType

        if schema not in SCHEMAS:
            raise HistoryError(f"unknown schema {schema!r}; one of {', '.join(SCHEMAS)}")
        dt = DTYPES[RType.INSTRUMENT_DEF if schema == "definitions" else RTYPE_OF[schema]]
        # archived days come undecoded into records (``ArchivedDay``): each is filled straight
        # into the one array returned, rather than built apart and copied by a concatenate
        parts = list(self.iter(schema, symbol, exchange, start, end, _lazy=True, **kw))
        if len(parts) == 1:
            return parts[0] if isinstance(parts[0], np.ndarray) else parts[0].records()
        out = np.empty(sum(len(p) if isinstance(p, np.ndarray) else p.n for p in parts), dt)
        pos = 0
        for p in parts:
            if isinstance(p, np.ndarray):
                out[pos:pos + len(p)] = p
                pos += len(p)
            else:
                p.fill(out[pos:pos + p.n])
                pos += p.n
        return out

    def trades(self, symbol, exchange=None, start=None, end=None, **kw) -> np.ndarray:
        return self.get("trades", symbol, exchange, start, end, **kw)

    def bbo(self, symbol, exchange=None, start=None, end=None, **kw) -> np.ndarray:
        return self.get("bbo", symbol, exchange, start, end, **kw)

    def depth(self, symbol, exchange=None, start=None, end=None, **kw) -> np.ndarray:
        return self.get("depth", symbol, exchange, start, end, **kw)

    def book_deltas(self, symbol, exchange=None, start=None, end=None, **kw) -> np.ndarray:
        return self.get("book_deltas", symbol, exchange, start, end, **kw)

    def statistics(self, symbol, exchange=None, start=None, end=None, **kw) -> np.ndarray:
        return self.get("statistics", symbol, exchange, start, end, **kw)

    def definitions(self, symbol, exchange=None, start=None, end=None, **kw) -> np.ndarray:
        """Stored instrument definitions (INSTRUMENT_DEF records) of the symbol, ``ts_event`` in
        ``[start, end)``."""
        return self.get("definitions", symbol, exchange, start, end, **kw)

    def bars(self, symbol, exchange=None, start=None, end=None, interval="1m", source: str | None = "dm",
             **kw) -> np.ndarray:
        return self.get("bars", symbol, exchange, start, end, interval=interval, source=source, **kw)

    def gaps(self, symbol=None, exchange=None, start=None, end=None, state: str | None = None) -> list[dict]:
        """Gap ledger entries (dicts, ``Storage.gaps``) of the instruments, detected in
        ``[start, end)``."""
        ids = None if symbol is None else set(self.instrument_ids(symbol, exchange))
        lo, hi = to_ns(start), to_ns(end)
        return [g for g in self.storage.gaps(state)
                if (ids is None or int(g["instrument_id"]) in ids)
                and (lo is None or g["detected_ns"] >= lo) and (hi is None or g["detected_ns"] < hi)]

    # -- pandas -------------------------------------------------------------------------------
    @staticmethod
    def to_pandas(arr: np.ndarray, prices: str = "float"):
        """A record array → ``pandas.DataFrame``: ``ts_*`` as tz-aware UTC timestamps (ns kept),
        prices and sizes as float (``prices="float"``, NaN for none) or exact ``Decimal``
        (``"decimal"``; None for none), sizes scaled by the row's ``size_precision``; depth
        levels flattened to ``bid_px_00 .. ask_sz_09``. Requires pandas."""
        import pandas as pd

        if prices not in ("float", "decimal"):
            raise HistoryError("prices must be 'float' or 'decimal'")
        cols: dict[str, object] = {}
        sp = arr["size_precision"].astype(np.int64) if "size_precision" in arr.dtype.names else None
        for name in arr.dtype.names:
            if name in _SKIP or name.startswith("_"):
                continue
            v = arr[name]
            if v.dtype.names:  # depth levels: (n, 10) per field
                for f in v.dtype.names:
                    for i in range(v.shape[1]):
                        cols[f"{f}_{i:02d}"] = _convert(f, v[f][:, i], sp, prices)
                continue
            if v.ndim > 1:
                for i in range(v.shape[1]):
                    cols[f"{name}_{i:02d}"] = v[:, i]
                continue
            if v.dtype.kind == "S":
                cols[name] = np.char.decode(v, "utf-8", "replace")
                continue
            cols[name] = _convert(name, v, sp, prices)
        return pd.DataFrame(cols)


def flat_columns(arr: np.ndarray) -> dict[str, np.ndarray]:
    """A record array's stored fields as flat integer/bytes columns (exact: ns, fixed point),
    header bookkeeping (length, rtype, padding) left out, depth levels as ``bid_px_00 ..``."""
    out: dict[str, np.ndarray] = {}
    for name in arr.dtype.names:
        if name in _SKIP or name.startswith("_"):
            continue
        v = arr[name]
        if v.dtype.names:
            for f in v.dtype.names:
                for i in range(v.shape[1]):
                    out[f"{f}_{i:02d}"] = v[f][:, i]
        elif v.ndim > 1:
            for i in range(v.shape[1]):
                out[f"{name}_{i:02d}"] = v[:, i]
        else:
            out[name] = v
    return out


def _convert(name: str, v: np.ndarray, sp: np.ndarray | None, prices: str):
    import pandas as pd

    if name.startswith("ts_") and name != "ts_in_delta":
        return pd.to_datetime(v.astype(np.int64), unit="ns", utc=True)
    base = name[:-3] if name[-3:-2] == "_" and name[-2:].isdigit() else name
    if base in PRICE_FIELDS:
        undef = v.astype(np.int64) == UNDEF_PRICE
        if prices == "float":
            out = v.astype(np.int64) / 1e9
            out[undef] = np.nan
            return out
        return [None if u else Decimal(int(x)).scaleb(-9) for x, u in zip(v.tolist(), undef.tolist())]
    if base in SIZE_FIELDS and sp is not None:
        if prices == "float":
            return v.astype(np.float64) / np.power(10.0, sp)
        return [Decimal(int(x)).scaleb(-int(p)) for x, p in zip(v.tolist(), sp.tolist())]
    return v


def write_parquet(chunks, path: str) -> int:
    """Record-array chunks → one zstd Parquet file of ``flat_columns`` (exact integers; text as
    strings), written chunk by chunk (bounded memory). Returns rows. Requires pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise HistoryError("Parquet needs pyarrow (pip install 'dm[history]'); use --format csv") from None
    writer = None
    n = 0
    try:
        for arr in chunks:
            cols = flat_columns(arr)
            table = pa.table({k: (np.char.decode(v, "utf-8", "replace") if v.dtype.kind == "S" else v)
                              for k, v in cols.items()})
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table)
            n += len(arr)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise HistoryError("nothing to export: no rows in that range")
    return n


#: DBN v3 record layouts dm exports (Databento's "DBN encoding" docs, databento/dbn
#: ``rust/dbn/src/record.rs``: TradeMsg 48 B, OhlcvMsg 56 B, Mbp1Msg 80 B, Mbp10Msg 368 B,
#: StatMsg 80 B; InstrumentDefMsg 520 B is built by ``databento_dbn`` itself)
_DBN_HEADER = [("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"),
               ("ts_event", "<u8")]
DBN_TRADE = np.dtype(_DBN_HEADER + [("price", "<i8"), ("size", "<u4"), ("action", "u1"), ("side", "u1"),
                                    ("flags", "u1"), ("depth", "u1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"),
                                    ("sequence", "<u4")])
DBN_OHLCV = np.dtype(_DBN_HEADER + [("open", "<i8"), ("high", "<i8"), ("low", "<i8"), ("close", "<i8"),
                                    ("volume", "<u8")])
DBN_LEVEL = np.dtype([("bid_px", "<i8"), ("ask_px", "<i8"), ("bid_sz", "<u4"), ("ask_sz", "<u4"),
                      ("bid_ct", "<u4"), ("ask_ct", "<u4")])
DBN_MBP1 = np.dtype(DBN_TRADE.descr + [("levels", DBN_LEVEL, (1,))])
DBN_MBP10 = np.dtype(DBN_TRADE.descr + [("levels", DBN_LEVEL, (10,))])
DBN_STAT = np.dtype(_DBN_HEADER + [("ts_recv", "<u8"), ("ts_ref", "<u8"), ("price", "<i8"), ("quantity", "<i8"),
                                   ("sequence", "<u4"), ("ts_in_delta", "<i4"), ("stat_type", "<u2"),
                                   ("channel_id", "<u2"), ("update_action", "u1"), ("stat_flags", "u1"),
                                   ("_reserved", "V18")])
assert (DBN_TRADE.itemsize, DBN_OHLCV.itemsize, DBN_MBP1.itemsize, DBN_MBP10.itemsize, DBN_STAT.itemsize) == \
    (48, 56, 80, 368, 80)
_OHLCV_RTYPE = {1: 0x20, 60: 0x21, 3600: 0x22, 86400: 0x23}
_DBN_RTYPE = {"trades": 0x00, "bbo": 0x01, "depth": 0x0A, "statistics": 0x18}
#: dm schema → the DBN schema of its export (bars: ohlcv-<interval>)
DBN_SCHEMAS = {"trades": "trades", "bbo": "mbp-1", "depth": "mbp-10", "bars": "ohlcv-1s/1m/1h/1d",
               "statistics": "statistics", "definitions": "definition"}
_U32 = 0xFFFF_FFFF
_I32 = 0x7FFF_FFFF
_I64_MAX = (1 << 63) - 1
#: DBN's "no value" of StatMsg.quantity (v3: i64 max), InstrumentDefMsg i32 fields (i32 max)
UNDEF_STAT_QUANTITY = _I64_MAX
#: DBN instrument classes (databento_dbn.InstrumentClass): dm's 'W' (perpetual swap) has none
_DBN_CLASSES = frozenset(b"BCFKMPSTXY")


def _refuse(schema: str, i: int, what: str) -> HistoryError:
    return HistoryError(f"DBN export of {schema}: row {i}: {what}; use --format parquet or csv")


def _whole_units(size: np.ndarray, sp: np.ndarray, what: str, limit: int) -> np.ndarray:
    """Sizes at 10^-sp (one precision per row; ``size`` may be (n, k)) → whole units (DBN's
    integer sizes); HistoryError naming the first value that is fractional or above ``limit``."""
    size = size.astype(np.uint64)
    scale = np.power(np.uint64(10), sp.astype(np.uint64))
    if size.ndim > 1:
        scale = scale[:, None]
    whole, frac = np.divmod(size, scale)
    bad = np.argwhere((frac != 0) | (whole > np.uint64(limit)))
    if len(bad):
        i = int(bad[0][0])
        v = int(size[tuple(bad[0])])
        raise _refuse(what, i, f"size {v} at 10^-{int(sp[i])} is not a whole number of units up to {limit} "
                               "(DBN sizes are integers)")
    return whole


def _fits(v: np.ndarray, limit: int, schema: str, name: str) -> np.ndarray:
    """``v`` unchanged when every value is in [0, limit]; else HistoryError naming the first."""
    v = v.astype(np.uint64)
    bad = np.flatnonzero(v > np.uint64(limit))
    if len(bad):
        raise _refuse(schema, int(bad[0]), f"{name} {int(v[bad[0]])} does not fit DBN's {limit.bit_length()}-bit field")
    return v


def _changed_side(iid: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(side, depth) of each top-of-book / depth update against the previous record of the same
    instrument: only the bid levels changed → 'B', only the ask levels → 'A', both, neither or
    no previous record → 'N' (Databento's mbp-1 docs: "where the side is indeterminate, ... side
    code N"); depth = the first level that changed on that side (0 for 'N'). ``bid``/``ask``:
    (n, levels, k) arrays of a side's stored values per level."""
    n = len(iid)
    side = np.full(n, ord("N"), np.uint8)
    depth = np.zeros(n, np.uint8)
    if n < 2:
        return side, depth
    order = np.argsort(iid, kind="stable")  # rows of one instrument, in their (time) order
    same = iid[order][1:] == iid[order][:-1]
    b, a = bid[order].reshape(n, -1), ask[order].reshape(n, -1)
    db, da = b[1:] != b[:-1], a[1:] != a[:-1]
    cb, ca = db.any(axis=1) & same, da.any(axis=1) & same
    s = np.where(cb & ~ca, ord("B"), np.where(ca & ~cb, ord("A"), ord("N"))).astype(np.uint8)
    per = bid.shape[2]  # values per level
    lv_b, lv_a = db.argmax(axis=1) // per, da.argmax(axis=1) // per
    d = np.where(s == ord("B"), lv_b, np.where(s == ord("A"), lv_a, 0)).astype(np.uint8)
    side[order[1:]] = s
    depth[order[1:]] = d
    return side, depth


def to_dbn(arr: np.ndarray, schema: str) -> np.ndarray:
    """dm records → DBN v3 records (a structured array whose bytes are the DBN records):

    ============  ===========  ==================================================================
    dm schema     DBN schema   mapping
    ============  ===========  ==================================================================
    trades        trades       TradeMsg, action 'T', depth 0, ts_in_delta 0
    bars          ohlcv-1s..   OhlcvMsg (one interval of 1s, 1m, 1h, 1d per file)
    bbo           mbp-1        Mbp1Msg: level 0 = bid/ask px, sz, ct; action 'M' (a top-of-book
                               update: dm's trades are their own schema), side = the side whose
                               level changed against the instrument's previous BBO ('N' when both
                               or neither did, or for the first), depth 0, price UNDEF_PRICE and
                               size 0 (the event itself is not stored), ts_in_delta 0
    depth         mbp-10       Mbp10Msg: levels 0-9 px/sz (counts 0: DEPTH has none); action
                               'M', side as for mbp-1 over the 10 levels, depth = the first
                               changed level of that side, price UNDEF_PRICE, size 0
    statistics    statistics   StatMsg: the same fields (dm's STATISTICS is DBN's layout);
                               stat_type 1-16 are DBN's codes and kept, quantity in whole units
                               (i64 max = undefined kept)
    ============  ===========  ==================================================================

    Sizes become whole units (``size_precision`` applied). Raises ``HistoryError`` naming the
    first value DBN cannot hold (a fractional or too large size, a sequence above u32, a dm-only
    stat_type such as 1001 MARK_PRICE): never wrapped or rounded."""
    n = len(arr)
    if schema == "trades":
        out = np.zeros(n, DBN_TRADE)
        for f in ("publisher_id", "instrument_id", "ts_event", "price", "flags", "ts_recv"):
            out[f] = arr[f]
        out["size"] = _whole_units(arr["size"], arr["size_precision"], "trades", _U32)
        out["sequence"] = _fits(arr["sequence"], _U32, "trades", "sequence")
        out["action"] = ord("T")
        out["side"] = arr["side"]
    elif schema == "bars":
        ivs = set(arr["interval_s"].tolist())
        if len(ivs) > 1 or not ivs <= set(_OHLCV_RTYPE):
            raise HistoryError(f"DBN export: OHLCV intervals are 1s, 1m, 1h, 1d (one per file), got {sorted(ivs)}")
        out = np.zeros(n, DBN_OHLCV)
        out["rtype"] = _OHLCV_RTYPE[ivs.pop()] if n else 0x21
        for f in ("publisher_id", "instrument_id", "ts_event", "open", "high", "low", "close"):
            out[f] = arr[f]
        out["volume"] = _whole_units(arr["volume"], arr["size_precision"], "bars", (1 << 64) - 1)
    elif schema in ("bbo", "depth"):
        out = np.zeros(n, DBN_MBP1 if schema == "bbo" else DBN_MBP10)
        for f in ("publisher_id", "instrument_id", "ts_event", "flags", "ts_recv"):
            out[f] = arr[f]
        out["sequence"] = _fits(arr["sequence"], _U32, schema, "sequence")
        out["price"] = UNDEF_PRICE
        out["action"] = ord("M")
        lv = out["levels"]
        if schema == "bbo":
            for f in ("bid_px", "ask_px"):
                lv[f][:, 0] = arr[f]
            for f in ("bid_sz", "ask_sz"):
                lv[f][:, 0] = _whole_units(arr[f], arr["size_precision"], schema, _U32)
            for f in ("bid_ct", "ask_ct"):
                lv[f][:, 0] = arr[f]
            bid = np.stack([arr["bid_px"].view(np.uint64), arr["bid_sz"], arr["bid_ct"].astype(np.uint64)],
                           axis=1)[:, None, :]
            ask = np.stack([arr["ask_px"].view(np.uint64), arr["ask_sz"], arr["ask_ct"].astype(np.uint64)],
                           axis=1)[:, None, :]
            out["side"], _ = _changed_side(arr["instrument_id"], bid, ask)
        else:
            src = arr["levels"]
            for f in ("bid_px", "ask_px"):
                lv[f] = src[f]
            for f in ("bid_sz", "ask_sz"):
                lv[f] = _whole_units(src[f], arr["size_precision"], schema, _U32)
            bid = np.stack([src["bid_px"].view(np.uint64), src["bid_sz"]], axis=2)  # (n, 10, 2)
            ask = np.stack([src["ask_px"].view(np.uint64), src["ask_sz"]], axis=2)
            out["side"], out["depth"] = _changed_side(arr["instrument_id"], bid, ask)
    elif schema == "statistics":
        out = np.zeros(n, DBN_STAT)
        for f in ("publisher_id", "instrument_id", "ts_event", "ts_recv", "ts_ref", "price", "sequence",
                  "ts_in_delta", "channel_id", "update_action", "stat_flags"):
            out[f] = arr[f]
        st = arr["stat_type"].astype(np.int64)
        bad = np.flatnonzero(~np.isin(st, _DBN_STAT_TYPES))
        if len(bad):
            v = int(st[bad[0]])
            raise _refuse("statistics", int(bad[0]), f"stat_type {v} ({_stat_name(v)}) has no DBN StatType code")
        out["stat_type"] = st
        q = arr["quantity"].astype(np.int64)
        undef = q == UNDEF_STAT_QUANTITY
        neg = np.flatnonzero((q < 0) & ~undef)
        if len(neg):
            raise _refuse("statistics", int(neg[0]), f"quantity {int(q[neg[0]])} is negative")
        whole = _whole_units(np.where(undef, 0, q), arr["size_precision"], "statistics", _I64_MAX)
        out["quantity"] = np.where(undef, UNDEF_STAT_QUANTITY, whole.astype(np.int64))
    else:
        raise HistoryError(f"DBN export covers {', '.join(f'{k} ({v})' for k, v in DBN_SCHEMAS.items())}, "
                           f"not {schema}; use --format parquet or csv")
    if schema in _DBN_RTYPE:
        out["rtype"] = _DBN_RTYPE[schema]
    out["length"] = out.dtype.itemsize // 4
    return out


def _dm_stat_types() -> np.ndarray:
    from dm.records import StatType

    return np.array(sorted(int(s) for s in StatType if int(s) < 1000), np.int64)


#: dm's StatType codes below 1000 are DBN's own (same numbers): those export as they are
_DBN_STAT_TYPES = _dm_stat_types()


def _stat_name(v: int) -> str:
    from dm.records import StatType

    try:
        return StatType(v).name
    except ValueError:
        return "unknown"


def _text(v: bytes, limit: int, i: int, name: str) -> str:
    t = v.decode("utf-8")
    if len(t.encode()) > limit:
        raise _refuse("definitions", i, f"{name} {t!r} is longer than DBN's {limit} bytes")
    return t


def definitions_to_dbn(arr: np.ndarray) -> bytes:
    """dm INSTRUMENT_DEF records → DBN v3 ``InstrumentDefMsg`` bytes (built by ``databento_dbn``),
    the inverse of dm's import (``dm/_dbn.pyx``, "Instrument definitions"):

    ====================  =========================================================================
    InstrumentDefMsg      from INSTRUMENT_DEF
    ====================  =========================================================================
    header, ts_recv       the same
    min_price_increment,  the same (1e-9; UNDEF_PRICE kept)
    display_factor,
    strike_price
    expiration,           the same (ns; UNDEF_TIMESTAMP kept)
    activation
    unit_of_measure_qty   contract_multiplier (1e-9)
    min_lot_size_round_   lot_size in whole units (i32; 0 = none → DBN's i32 max)
    lot
    instrument_class      instrument_class (DBN's chars; dm's 'W' perpetual has none: refused)
    raw_symbol, exchange, raw_symbol, exchange, underlying, base, quote (refused when longer than
    underlying, asset,    DBN's fields: 70, 4, 20, 10, 3 bytes)
    currency
    security_update_      'A' (added)
    action
    ====================  =========================================================================

    Other fields keep ``databento_dbn``'s defaults (DBN's "undefined"). Raises ``HistoryError``."""
    import databento_dbn as dbn

    out = []
    for i, r in enumerate(arr):
        cls = int(r["instrument_class"])
        if cls not in _DBN_CLASSES:
            raise _refuse("definitions", i, f"instrument_class {chr(cls)!r} has no DBN InstrumentClass")
        sp = int(r["size_precision"])
        lot = int(r["lot_size"])
        if lot % 10**sp or lot // 10**sp >= _I32 or lot < 0:
            raise _refuse("definitions", i, f"lot_size {lot} at 10^-{sp} is not a whole number of units below "
                                            f"{_I32}")
        msg = dbn.InstrumentDefMsg(
            int(r["publisher_id"]), int(r["instrument_id"]), int(r["ts_event"]), int(r["ts_recv"]),
            int(r["min_price_increment"]), int(r["display_factor"]),
            _text(r["raw_symbol"], 70, i, "raw_symbol"), _text(r["base"], 10, i, "base"), "",
            dbn.InstrumentClass(chr(cls)), dbn.SecurityUpdateAction("A"),
            expiration=int(r["expiration"]), activation=int(r["activation"]),
            unit_of_measure_qty=int(r["contract_multiplier"]), strike_price=int(r["strike_price"]),
            min_lot_size_round_lot=lot // 10**sp if lot else _I32,
            currency=_text(r["quote"], 3, i, "quote"), exchange=_text(r["exchange"], 4, i, "exchange"),
            underlying=_text(r["underlying"], 20, i, "underlying"))
        out.append(bytes(msg))
    return b"".join(out)


def write_dbn(chunks, path: str, schema: str) -> int:
    """Record-array chunks → an uncompressed DBN v3 file (metadata from ``databento_dbn``, stype
    instrument_id, dataset ``DM``) the ``databento`` packages read back (``to_dbn`` /
    ``definitions_to_dbn`` say what becomes what). Returns rows. Raises ``HistoryError``."""
    try:
        import databento_dbn as dbn
    except ImportError:
        raise HistoryError("DBN export needs databento-dbn (pip install 'dm[databento]')") from None
    if schema not in DBN_SCHEMAS:
        to_dbn(np.zeros(0), schema)  # raises the "covers .." error
    parts = list(chunks)
    arr = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else None)
    n = 0 if arr is None else len(arr)
    if schema == "definitions":
        body = definitions_to_dbn(arr) if n else b""
        sch = dbn.Schema.DEFINITION
    else:
        recs = to_dbn(arr, schema) if n else np.zeros(0, DBN_TRADE)
        body = recs.tobytes()
        if schema == "bars":
            sch = {0x20: dbn.Schema.OHLCV_1S, 0x21: dbn.Schema.OHLCV_1M, 0x22: dbn.Schema.OHLCV_1H,
                   0x23: dbn.Schema.OHLCV_1D}[int(recs["rtype"][0]) if n else 0x21]
        else:
            sch = {"trades": dbn.Schema.TRADES, "bbo": dbn.Schema.MBP_1, "depth": dbn.Schema.MBP_10,
                   "statistics": dbn.Schema.STATISTICS}[schema]
    start = int(arr["ts_event"].min()) if n else 0
    end = int(arr["ts_event"].max()) + 1 if n else None
    meta = dbn.Metadata(dataset="DM", start=start, end=end, stype_in=dbn.SType.INSTRUMENT_ID,
                        stype_out=dbn.SType.INSTRUMENT_ID, schema=sch)
    with open(path, "wb") as f:
        f.write(bytes(meta.encode()))
        f.write(body)
    return n


# -- replay from storage ---------------------------------------------------------------------------

REPLAY_SCHEMAS = ("trades", "bbo", "book_deltas", "depth", "bars", "statistics")


def replay_from_db(source: str | Storage, symbols: list[str], start=None, end=None, *, exchange: str | None = None,
                   schemas=REPLAY_SCHEMAS, speed: float = 0.0, rate: float = 0.0, instance: str = "replay",
                   registry: str = "/dm.registry", channel_bytes: int = 1 << 24, linger_s: float = 1.0,
                   chunk_rows: int = 1 << 16, stop=None) -> dict[str, int]:
    """Publish stored records of ``symbols`` (``SYMBOL@EXCHANGE``, or ``SYMBOL`` with
    ``exchange``) in ``[start, end)`` into shm channel rings registered in the service registry
    as instance ``instance`` (provider ``replay-db``), so ``dm.client`` readers get history
    through the live API. Records of every schema in ``schemas`` go out merged in ``ts_event``
    order (bars: dm's own, at their interval's start). Pace: ``speed`` > 0 keeps the recorded
    gaps divided by ``speed``; else ``rate`` > 0 records/s; else as fast as possible (readers
    are overrun if slower: they are told). After the last record the channels stay up
    ``linger_s`` s, then close (readers with ``follow=False`` end). ``stop()``: True ends early.
    Returns records published per symbol. Raises ``HistoryError`` / ``StorageError`` /
    ``RingError``."""
    import heapq
    import time

    from dm._ring import ChannelWriter
    from dm.records import LAYOUT_HASH
    from dm.registry import Registry

    h = History(source)
    writers: dict[int, tuple[str, ChannelWriter]] = {}
    slots = []
    stores: list[Storage] = []
    counts: dict[str, int] = {}
    try:
        by_exchange: dict[str, list[str]] = {}
        meta = {int(r[0]): r for r in h.storage.instrument_rows()}
        for spec in symbols:
            sym, ex = (spec.split("@", 1) + [exchange])[:2] if "@" in spec else (spec, exchange)
            for iid in h.instrument_ids(sym, ex):
                _, csym, cex, _, pub, sp = meta[iid]
                name = f"/dm.{instance}.{cex.upper()}.{csym.upper()}"
                w = ChannelWriter(name, channel_bytes, LAYOUT_HASH, instrument_id=iid,
                                  size_precision=9 if sp is None else int(sp), publisher_id=int(pub) & 0xFFFF)
                writers[iid] = (f"{csym}@{cex}", w)
                counts[f"{csym}@{cex}"] = 0
                by_exchange.setdefault(cex.upper(), []).append(csym.upper())
        reg = Registry(registry)
        for ex, syms in by_exchange.items():
            slots.append(reg.register(instance, f"replay-db-{ex.lower()}"[:31], ex, f"/dm.{instance}.{ex}.", syms))
        ids = sorted(writers)
        lo, hi = to_ns(start), to_ns(end)

        from dm.storage import open_storage

        def stream(k: int, schema: str):
            # one connection per schema: the streams are read interleaved, and a PostgreSQL
            # connection runs one COPY at a time
            st = open_storage(h.storage.url)
            stores.append(st)
            where = {"source": 1} if schema == "bars" else None
            for chunk in st.scan(schema, ids, lo, hi, where, chunk_rows):
                raw = chunk.tobytes()
                size = chunk.dtype.itemsize
                for i, (ts, iid) in enumerate(zip(chunk["ts_event"].tolist(), chunk["instrument_id"].tolist())):
                    yield ts, k, iid, raw[i * size:(i + 1) * size]

        merged = heapq.merge(*(stream(k, s) for k, s in enumerate(schemas)), key=lambda x: (x[0], x[1]))
        t_wall0 = time.monotonic()
        t_rec0 = None
        last_hb = t_wall0
        n = 0
        for ts, _, iid, raw in merged:
            if stop is not None and stop():
                break
            if speed > 0:
                if t_rec0 is None:
                    t_rec0 = ts
                due = t_wall0 + (ts - t_rec0) / 1e9 / speed
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            elif rate > 0:
                wait = t_wall0 + n / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            label, w = writers[iid]
            w.write(raw)
            counts[label] += 1
            n += 1
            now = time.monotonic()
            if now - last_hb >= 1.0:
                last_hb = now
                for _, w2 in writers.values():
                    w2.heartbeat()
                for s in slots:
                    s.heartbeat()
        deadline = time.monotonic() + linger_s
        while time.monotonic() < deadline and not (stop is not None and stop()):
            for _, w2 in writers.values():
                w2.heartbeat()
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return counts
    finally:
        for s in slots:
            s.release()
        for _, w in writers.values():
            w.close(unlink=True)
        for st in stores:
            st.close()
        h.close()
