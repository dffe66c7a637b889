"""numpy mirrors of the record structs in ``dm/_records.pxd``, rtypes, publisher ids, helpers.

Every record is little-endian, 8-byte aligned and starts with the 16-byte header
``(length u8 [4-byte words], rtype u8, publisher_id u16, instrument_id u32, ts_event u64)``.
Timestamps are u64 ns since the UNIX epoch; prices i64 and sizes u64 at fixed point 1e-9.
``tests/test_records.py`` checks these dtypes against the C structs.
"""
from __future__ import annotations

import struct
import zlib
from decimal import Decimal
from enum import IntEnum

import numpy as np

LAYOUT_VERSION = 1
FIXED_DECIMALS = 9
FIXED_SCALE = 1_000_000_000
UNDEF_PRICE = (1 << 63) - 1
I64_MAX = (1 << 63) - 1
I64_MIN = -(1 << 63)
U64_MAX = (1 << 64) - 1


class RType(IntEnum):
    """dm's record kinds (0xE0-0xEF, outside DBN's range); 0xFF is the ring's padding frame."""

    TRADE = 0xE0
    BBO = 0xE1
    DEPTH = 0xE2
    BOOK_DELTA = 0xE3
    BAR = 0xE4
    MBP_EVENT = 0xE5  # Databento: the event behind a trades/mbp-1/mbp-10 record (dm/dbn.py)
    PADDING = 0xFF


class Publisher(IntEnum):
    """publisher_id values. Databento datasets keep Databento's publisher ids (1-999);
    venues dm connects to directly use 1001+."""

    GLBX_MDP3_GLBX = 1
    XNAS_ITCH_XNAS = 2
    BINANCE = 1001
    KRAKEN = 1002
    KRAKEN_FUTURES = 1003


class Flag(IntEnum):
    TS_EVENT_IS_RECV = 1 << 0
    PUBLISHER_SPECIFIC = 1 << 1  # DBN: meaning defined by the publisher (CME: set on most mbp-1)
    MAYBE_BAD_BOOK = 1 << 2
    BAD_TS_RECV = 1 << 3
    MBP = 1 << 4  # DBN: aggregated price level (market by price), not an individual order
    SNAPSHOT = 1 << 5
    TOB = 1 << 6
    LAST = 1 << 7


SIDE_ASK, SIDE_BID, SIDE_NONE = ord("A"), ord("B"), ord("N")
ACTION_ADD, ACTION_MODIFY, ACTION_CANCEL, ACTION_CLEAR = ord("A"), ord("M"), ord("C"), ord("R")
ACTION_TRADE, ACTION_FILL, ACTION_NONE = ord("T"), ord("F"), ord("N")  # DBN actions
DEPTH_LEVELS = 10

_HEADER = [
    ("length", "<u1"),
    ("rtype", "<u1"),
    ("publisher_id", "<u2"),
    ("instrument_id", "<u4"),
    ("ts_event", "<u8"),
]

HEADER_DTYPE = np.dtype(_HEADER)

TRADE_DTYPE = np.dtype(
    _HEADER
    + [
        ("ts_recv", "<u8"),
        ("price", "<i8"),
        ("size", "<u8"),
        ("trade_id", "<u8"),
        ("sequence", "<u8"),
        ("side", "<u1"),
        ("flags", "<u1"),
        ("_reserved", "V6"),
    ]
)

BBO_DTYPE = np.dtype(
    _HEADER
    + [
        ("ts_recv", "<u8"),
        ("bid_px", "<i8"),
        ("ask_px", "<i8"),
        ("bid_sz", "<u8"),
        ("ask_sz", "<u8"),
        ("sequence", "<u8"),
        ("bid_ct", "<u4"),
        ("ask_ct", "<u4"),
        ("flags", "<u1"),
        ("_reserved", "V7"),
    ]
)

DEPTH_LEVEL_DTYPE = np.dtype(
    [("bid_px", "<i8"), ("ask_px", "<i8"), ("bid_sz", "<u8"), ("ask_sz", "<u8")]
)

DEPTH_DTYPE = np.dtype(
    _HEADER
    + [
        ("ts_recv", "<u8"),
        ("sequence", "<u8"),
        ("flags", "<u1"),
        ("n_bid", "<u1"),
        ("n_ask", "<u1"),
        ("_reserved", "V5"),
        ("levels", DEPTH_LEVEL_DTYPE, (DEPTH_LEVELS,)),
    ]
)

BOOK_DELTA_DTYPE = np.dtype(
    _HEADER
    + [
        ("ts_recv", "<u8"),
        ("price", "<i8"),
        ("size", "<u8"),
        ("sequence", "<u8"),
        ("side", "<u1"),
        ("action", "<u1"),
        ("flags", "<u1"),
        ("_reserved", "V5"),
    ]
)

BAR_DTYPE = np.dtype(
    _HEADER
    + [
        ("open", "<i8"),
        ("high", "<i8"),
        ("low", "<i8"),
        ("close", "<i8"),
        ("volume", "<u8"),
        ("interval_s", "<u4"),
        ("flags", "<u1"),
        ("_reserved", "V3"),
    ]
)

# Databento MBP event (RType.MBP_EVENT, 136 B): follows the TRADE / BBO / DEPTH record converted
# from a DBN trades / mbp-1 / mbp-10 record (same header) and carries what that record cannot:
# action, depth, ts_in_delta, the event's own price/size/side, and order counts per level.
MBP_EVENT_DTYPE = np.dtype(
    _HEADER
    + [
        ("ts_recv", "<u8"),
        ("price", "<i8"),
        ("size", "<u8"),
        ("sequence", "<u8"),
        ("ts_in_delta", "<i4"),
        ("action", "<u1"),
        ("side", "<u1"),
        ("flags", "<u1"),
        ("depth", "<u1"),
        ("bid_ct", "<u4", (DEPTH_LEVELS,)),
        ("ask_ct", "<u4", (DEPTH_LEVELS,)),
    ]
)

DTYPES: dict[int, np.dtype] = {
    RType.TRADE: TRADE_DTYPE,
    RType.BBO: BBO_DTYPE,
    RType.DEPTH: DEPTH_DTYPE,
    RType.BOOK_DELTA: BOOK_DELTA_DTYPE,
    RType.BAR: BAR_DTYPE,
    RType.MBP_EVENT: MBP_EVENT_DTYPE,
}

SIZES: dict[int, int] = {int(k): v.itemsize for k, v in DTYPES.items()}


def _layout_hash() -> int:
    """CRC32 of every record dtype's field names, formats and offsets: a reader compares it
    with the segment header and refuses a segment written with another layout."""
    parts = [f"v{LAYOUT_VERSION}"]
    for rtype, dt in sorted(DTYPES.items()):
        fields = ",".join(f"{n}:{dt.fields[n][0].str}:{dt.fields[n][1]}" for n in dt.names)
        parts.append(f"{int(rtype):#x}[{dt.itemsize}]{{{fields}}}")
    return zlib.crc32(";".join(parts).encode())


LAYOUT_HASH = _layout_hash()

_HDR = struct.Struct("<BBHIQ")


def header(buf) -> tuple[int, int, int, int, int]:
    """Decode a record header: ``(length_words, rtype, publisher_id, instrument_id, ts_event)``."""
    return _HDR.unpack_from(buf, 0)


def view(buf) -> np.ndarray:
    """One record (bytes-like, starting at its header) as a numpy structured scalar of its rtype.

    Raises ``KeyError`` for an unknown rtype."""
    rtype = buf[1]
    return np.frombuffer(buf, DTYPES[rtype], count=1)[0]


def to_decimal(value: int) -> Decimal:
    """Fixed-point 1e-9 integer → exact ``Decimal``."""
    return Decimal(value).scaleb(-FIXED_DECIMALS)


def to_float(value: int) -> float:
    """Fixed-point 1e-9 integer → nearest ``float`` (for display and analytics, not for storage)."""
    return value / FIXED_SCALE


def from_decimal(value: Decimal | str | int) -> int:
    """Exact decimal → fixed point 1e-9. Raises ``ValueError`` when the value has more than 9
    significant fractional digits or does not fit in i64."""
    d = Decimal(value)
    scaled = d.scaleb(FIXED_DECIMALS)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value!r} has more than {FIXED_DECIMALS} fractional digits")
    out = int(scaled)
    if not I64_MIN <= out <= I64_MAX:
        raise ValueError(f"{value!r} does not fit in i64 at 1e-9")
    return out


# -- Python record objects ---------------------------------------------------------------------
# Thin namedtuples over struct.unpack_from: cheap to build (~0.3 µs), raw fixed-point ints, with
# helpers for Decimal/float. Field order is the struct's (padding skipped).
from typing import NamedTuple  # noqa: E402


def _dec(self, name: str) -> Decimal:
    """A fixed-point field (price or size) as an exact Decimal, e.g. ``t.dec("price")``."""
    return to_decimal(getattr(self, name))


def _float(self, name: str) -> float:
    """A fixed-point field as float (display/analytics only), e.g. ``t.f("price")``."""
    return getattr(self, name) / FIXED_SCALE


class Trade(NamedTuple):
    length: int
    rtype: int
    publisher_id: int
    instrument_id: int
    ts_event: int
    ts_recv: int
    price: int
    size: int
    trade_id: int
    sequence: int
    side: int
    flags: int


class Bbo(NamedTuple):
    length: int
    rtype: int
    publisher_id: int
    instrument_id: int
    ts_event: int
    ts_recv: int
    bid_px: int
    ask_px: int
    bid_sz: int
    ask_sz: int
    sequence: int
    bid_ct: int
    ask_ct: int
    flags: int


class BookDelta(NamedTuple):
    length: int
    rtype: int
    publisher_id: int
    instrument_id: int
    ts_event: int
    ts_recv: int
    price: int
    size: int
    sequence: int
    side: int
    action: int
    flags: int


class Bar(NamedTuple):
    length: int
    rtype: int
    publisher_id: int
    instrument_id: int
    ts_event: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    interval_s: int
    flags: int


class Depth(NamedTuple):
    length: int
    rtype: int
    publisher_id: int
    instrument_id: int
    ts_event: int
    ts_recv: int
    sequence: int
    flags: int
    n_bid: int
    n_ask: int
    levels: tuple  # ((bid_px, ask_px, bid_sz, ask_sz), ...) x 10


class MbpEvent(NamedTuple):
    length: int
    rtype: int
    publisher_id: int
    instrument_id: int
    ts_event: int
    ts_recv: int
    price: int
    size: int
    sequence: int
    ts_in_delta: int
    action: int
    side: int
    flags: int
    depth: int
    bid_ct: tuple  # 10 x u32
    ask_ct: tuple  # 10 x u32


for _cls in (Trade, Bbo, BookDelta, Bar, Depth, MbpEvent):
    _cls.dec = _dec
    _cls.f = _float

_STRUCTS = {
    RType.TRADE: (struct.Struct("<BBHIQQqQQQBB6x"), Trade),
    RType.BBO: (struct.Struct("<BBHIQQqqQQQIIB7x"), Bbo),
    RType.BOOK_DELTA: (struct.Struct("<BBHIQQqQQBBB5x"), BookDelta),
    RType.BAR: (struct.Struct("<BBHIQqqqqQIB3x"), Bar),
}
_DEPTH_HEAD = struct.Struct("<BBHIQQQBBB5x")
_DEPTH_LEVEL = struct.Struct("<qqQQ")
_TUPLE_NEW = tuple.__new__
_MBP_EVENT = struct.Struct("<BBHIQQqQQiBBBB10I10I")


_UNPACK = {int(k): (s.unpack_from, cls) for k, (s, cls) in _STRUCTS.items()}  # plain int keys: no IntEnum on the hot path
_RT_DEPTH, _RT_MBP_EVENT = int(RType.DEPTH), int(RType.MBP_EVENT)


def unpack(buf):
    """One record (bytes-like, starting at its header) → Trade | Bbo | BookDelta | Bar | Depth |
    MbpEvent.

    Raises ``KeyError`` for an unknown rtype."""
    rtype = buf[1]
    u = _UNPACK.get(rtype)
    if u is not None:
        return _TUPLE_NEW(u[1], u[0](buf))
    if rtype == _RT_DEPTH:
        head = _DEPTH_HEAD.unpack_from(buf, 0)
        levels = tuple(_DEPTH_LEVEL.unpack_from(buf, 40 + 32 * i) for i in range(DEPTH_LEVELS))
        return _TUPLE_NEW(Depth, head + (levels,))
    if rtype == _RT_MBP_EVENT:
        v = _MBP_EVENT.unpack_from(buf, 0)
        return _TUPLE_NEW(MbpEvent, v[:14] + (v[14:24], v[24:34]))
    raise KeyError(rtype)
