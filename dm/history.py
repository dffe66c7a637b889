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

SCHEMAS = ("trades", "bbo", "depth", "book_deltas", "bars", "mbp_events", "statistics")
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
             chunk_rows: int = 1 << 20, interval=None, source: str | None = "dm") -> Iterator[np.ndarray]:
        """Chunks (record arrays of ``schema``'s rtype, ``ORDER_BY`` order) of at most
        ``chunk_rows``. ``symbol`` None: every instrument. Bars: ``interval`` ("1m", 60, ...) and
        ``source`` ("dm": built by dm, "venue": received, None: both)."""
        if schema not in SCHEMAS:
            raise HistoryError(f"unknown schema {schema!r}; one of {', '.join(SCHEMAS)}")
        ids = None if symbol is None else self.instrument_ids(symbol, exchange)
        where: dict[str, int] = {}
        if schema == "bars":
            if interval is not None:
                from dm.bars import parse_interval

                where["interval_s"] = parse_interval(interval)
            if source is not None:
                if source not in BAR_SOURCES:
                    raise HistoryError(f"bar source {source!r}: one of dm, venue")
                where["source"] = BAR_SOURCES[source]
        lo, hi = to_ns(start), to_ns(end)
        if self.archive_dir is None or schema not in _ARCHIVED:
            yield from self.storage.scan(schema, ids, lo, hi, where, chunk_rows)
            return
        yield from self._with_archive(schema, ids, lo, hi, where, chunk_rows)

    def _with_archive(self, schema, ids, lo, hi, where, chunk_rows):
        """Archived days from their Parquet files (merged with any rows of the same day still in
        the database: late rows, or an archive run between writing and removing), the other
        stretches of the range from the database, in time order."""
        from dm.archive import archived_days, read_archive
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
            parts = list(read_archive(self.archive_dir, schema, ids, a_lo, a_hi, where))
            parts += list(self.storage.scan(schema, ids, a_lo, a_hi, where, chunk_rows))
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
        from dm.records import DTYPES

        parts = list(self.iter(schema, symbol, exchange, start, end, **kw))
        if not parts:
            return np.zeros(0, DTYPES[RTYPE_OF[schema]])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

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


#: DBN v3 record layouts dm exports (Databento's "DBN encoding" docs: TradeMsg 48 B, OhlcvMsg 56 B)
_DBN_HEADER = [("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"),
               ("ts_event", "<u8")]
DBN_TRADE = np.dtype(_DBN_HEADER + [("price", "<i8"), ("size", "<u4"), ("action", "u1"), ("side", "u1"),
                                    ("flags", "u1"), ("depth", "u1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"),
                                    ("sequence", "<u4")])
DBN_OHLCV = np.dtype(_DBN_HEADER + [("open", "<i8"), ("high", "<i8"), ("low", "<i8"), ("close", "<i8"),
                                    ("volume", "<u8")])
_OHLCV_RTYPE = {1: 0x20, 60: 0x21, 3600: 0x22, 86400: 0x23}


def _whole_units(size: np.ndarray, sp: np.ndarray, what: str, limit: int) -> np.ndarray:
    """Sizes at 10^-sp → whole units (DBN's integer sizes); HistoryError when one is fractional
    or does not fit."""
    scale = np.power(np.uint64(10), sp.astype(np.uint64))
    whole, frac = np.divmod(size.astype(np.uint64), scale)
    bad = np.flatnonzero((frac != 0) | (whole > np.uint64(limit)))
    if len(bad):
        i = int(bad[0])
        raise HistoryError(f"DBN export: {what} row {i}: size {int(size[i])} at 10^-{int(sp[i])} is not a whole "
                           f"number of units up to {limit} (DBN sizes are integers); use --format parquet or csv")
    return whole


def to_dbn(arr: np.ndarray, schema: str) -> np.ndarray:
    """dm TRADE or BAR records → DBN ``TradeMsg`` / ``OhlcvMsg`` records (a structured array whose
    bytes are the DBN records). Raises ``HistoryError`` for what DBN cannot hold."""
    if schema == "trades":
        out = np.zeros(len(arr), DBN_TRADE)
        out["rtype"] = 0  # MBP_0 (trades)
        for f in ("publisher_id", "instrument_id", "ts_event", "price", "flags", "ts_recv"):
            out[f] = arr[f]
        out["size"] = _whole_units(arr["size"], arr["size_precision"], "trades", 0xFFFF_FFFF)
        seq = arr["sequence"].astype(np.uint64)
        if (seq > np.uint64(0xFFFF_FFFF)).any():
            raise HistoryError("DBN export: a sequence does not fit DBN's u32; use --format parquet or csv")
        out["sequence"] = seq
        out["action"] = ord("T")
        out["side"] = arr["side"]
    elif schema == "bars":
        ivs = set(arr["interval_s"].tolist())
        if len(ivs) > 1 or not ivs <= set(_OHLCV_RTYPE):
            raise HistoryError(f"DBN export: OHLCV intervals are 1s, 1m, 1h, 1d (one per file), got {sorted(ivs)}")
        out = np.zeros(len(arr), DBN_OHLCV)
        out["rtype"] = _OHLCV_RTYPE[ivs.pop()] if len(arr) else 0x21
        for f in ("publisher_id", "instrument_id", "ts_event", "open", "high", "low", "close"):
            out[f] = arr[f]
        out["volume"] = _whole_units(arr["volume"], arr["size_precision"], "bars", (1 << 64) - 1)
    else:
        raise HistoryError(f"DBN export covers trades and bars, not {schema}; use --format parquet or csv")
    out["length"] = out.dtype.itemsize // 4
    return out


def write_dbn(chunks, path: str, schema: str) -> int:
    """Record-array chunks → an uncompressed DBN file (metadata from ``databento_dbn``, stype
    instrument_id, dataset ``DM``) the ``databento`` packages read back. Returns rows."""
    try:
        import databento_dbn as dbn
    except ImportError:
        raise HistoryError("DBN export needs databento-dbn (pip install 'dm[databento]')") from None
    parts = [to_dbn(a, schema) for a in chunks]
    recs = np.concatenate(parts) if parts else np.zeros(0, DBN_TRADE if schema == "trades" else DBN_OHLCV)
    if schema == "trades":
        sch = dbn.Schema.TRADES
    else:
        sch = {0x20: dbn.Schema.OHLCV_1S, 0x21: dbn.Schema.OHLCV_1M, 0x22: dbn.Schema.OHLCV_1H,
               0x23: dbn.Schema.OHLCV_1D}[int(recs["rtype"][0]) if len(recs) else 0x21]
    start = int(recs["ts_event"].min()) if len(recs) else 0
    end = int(recs["ts_event"].max()) + 1 if len(recs) else None
    meta = dbn.Metadata(dataset="DM", start=start, end=end, stype_in=dbn.SType.INSTRUMENT_ID,
                        stype_out=dbn.SType.INSTRUMENT_ID, schema=sch)
    with open(path, "wb") as f:
        f.write(bytes(meta.encode()))
        f.write(recs.tobytes())
    return len(recs)


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
