"""Databento DBN files and streams → dm records (DESIGN.md section 2: "Databento DBN records
(trades, mbp-1, mbp-10, ohlcv) convert losslessly into dm records").

``read_dbn(path_or_bytes)`` reads a whole ``.dbn`` or ``.dbn.zst`` (Zstandard, one or more
frames) of DBN version 1, 2 or 3 and returns a :class:`DbnResult`; ``DbnConverter`` (from the
Cython module ``dm._dbn``) converts a byte stream chunk by chunk (the live gateway sends the same
metadata + records).

What becomes what (details and layouts in ``dm/_dbn.pyx``; the format is Databento's DBN spec,
databento/dbn ``rust/dbn/src/record.rs``):

* trades (rtype 0x00) → TRADE + MBP_EVENT
* mbp-1 / tbbo (0x01) → BBO + MBP_EVENT
* mbp-10 (0x0A) → DEPTH + MBP_EVENT (order counts of all 10 levels)
* ohlcv-1s/1m/1h/1d (0x20-0x23, v1's deprecated 0x11) → BAR (interval_s 1/60/3600/86400)
* definition (0x13) → INSTRUMENT_DEF (tick size, display factor, lot size, contract multiplier,
  expiry, activation, strike, class, underlying, base/quote, raw symbol: DBN's native values,
  mapping in ``dm/_dbn.pyx``) and ``definitions`` (raw symbol, tick size); symbol mapping (0x16)
  → ``symbols``

Fixed point: DBN prices are already i64 at 1e-9 and are copied; DBN sizes (u32 counts) and bar
volumes (u64) keep their native scale: records carry ``size_precision`` 0, so a DBN size is the
same integer in dm (a volume above i64 max, not storable, raises ``DbnError``). Timestamps are ns since the UNIX epoch, unchanged.
``publisher_id`` and ``instrument_id`` are Databento's own (records are not renumbered). dm's
instrument registry takes Databento raw symbols as they are (``dm.symbology.NativeSymbology``:
``ESU4``, ``NVDA``); ``DbnResult.symbols`` / ``DbnConverter.symbols`` give instrument_id → raw
symbol from the metadata's symbology mappings, definition records and (live) symbol-mapping
records, which is what a provider needs to relate the two.
Not carried: DBN's per-record ``ts_out`` (gateway send time, only with ``ts_out`` sessions).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from dm._dbn import SCHEMA_NAMES, STYPE_NAMES, VENUE, DbnConverter, DbnDefinition, DbnError
from dm.records import DTYPES

__all__ = [
    "DbnConverter",
    "DbnDefinition",
    "DbnError",
    "DbnResult",
    "SCHEMA_NAMES",
    "STYPE_NAMES",
    "decompress",
    "read_dbn",
    "split_records",
]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class DbnResult:
    """A converted DBN file.

    ``records``: the dm records, concatenated in DBN order (each TRADE/BBO/DEPTH followed by its
    MBP_EVENT when ``events``); ``count``: how many dm records; ``dbn_count``: DBN records read;
    ``symbols``: instrument_id → raw symbol; ``mappings``: the metadata's symbology intervals
    ``(raw_symbol, start_date, end_date, symbol)``; ``skipped``: ``{dbn_rtype: n}`` of records
    that produced nothing (status, statistics, mbo, ...); ``rejected``: definitions that do not
    fit an INSTRUMENT_DEF record, as ``(instrument_id, raw_symbol, reason)``."""

    version: int
    dataset: str
    schema: str | None
    stype_in: str | None
    stype_out: str
    start: int
    end: int | None
    symbols: dict[int, str]
    records: bytes
    count: int
    dbn_count: int = 0
    mappings: list = field(default_factory=list)
    definitions: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    rejected: list = field(default_factory=list)

    def arrays(self) -> dict[int, np.ndarray]:
        """``{rtype: numpy structured array of dm.records.DTYPES[rtype]}`` (copies)."""
        return split_records(self.records)


def split_records(buf) -> dict[int, np.ndarray]:
    """Concatenated dm records → ``{rtype: array}`` (order kept within an rtype). Raises
    ``DbnError`` on a truncated record or an rtype dm does not know."""
    mv = memoryview(buf).cast("B")
    parts: dict[int, list] = {}
    off, n = 0, len(mv)
    while off < n:
        ln = mv[off] * 4
        if ln < 16 or off + ln > n:
            raise DbnError(VENUE, f"bad dm record length {ln}", "length", off)
        parts.setdefault(mv[off + 1], []).append(mv[off:off + ln])
        off += ln
    out = {}
    for rt, chunks in parts.items():
        if rt not in DTYPES:
            raise DbnError(VENUE, f"unknown dm rtype {rt:#04x}", "rtype", -1)
        out[rt] = np.frombuffer(b"".join(chunks), dtype=DTYPES[rt])
    return out


def decompress(data: bytes) -> bytes:
    """``data`` if it is plain DBN, else the Zstandard frames decompressed (all of them).
    Raises ``DbnError`` on a corrupt or truncated Zstandard stream."""
    if not data.startswith(ZSTD_MAGIC):
        return data
    import zstandard

    out = []
    rest = data
    try:
        while rest:
            d = zstandard.ZstdDecompressor().decompressobj()
            out.append(d.decompress(rest))
            if not d.eof:
                raise DbnError(VENUE, "zstd: truncated frame", "zstd", len(data))
            rest = d.unused_data
    except zstandard.ZstdError as e:
        raise DbnError(VENUE, f"zstd: {e}", "zstd", len(data) - len(rest)) from None
    return b"".join(out)


def read_dbn(src: str | os.PathLike | bytes | bytearray | memoryview, events: bool = True) -> DbnResult:
    """Read a whole DBN file (path) or buffer (bytes), plain or Zstandard-compressed, and convert
    every record to dm records.

    Raises ``DbnError`` (a ``dm.errors.CodecError``, venue "DATABENTO") on a corrupt, truncated
    or non-convertible input, ``OSError`` when the file cannot be read."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        with open(src, "rb") as f:
            data = f.read()
    data = decompress(data)
    conv = DbnConverter(events=events)
    records = conv.feed(data)
    conv.finish()
    return DbnResult(
        version=conv.version,
        dataset=conv.dataset,
        schema=conv.schema,
        stype_in=conv.stype_in,
        stype_out=conv.stype_out,
        start=conv.start,
        end=conv.end,
        symbols=dict(conv.symbols),
        records=records,
        count=conv.count,
        dbn_count=conv.dbn_count,
        mappings=list(conv.mappings),
        definitions=list(conv.definitions),
        skipped=conv.skipped,
        rejected=list(conv.rejected),
    )
