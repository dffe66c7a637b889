"""numpy mirrors of the record structs in ``dm/_records.pxd``, rtypes, publisher ids, helpers.

Every record is little-endian, 8-byte aligned and starts with the 16-byte header
``(length u8 [4-byte words], rtype u8, publisher_id u16, instrument_id u32, ts_event u64)``.
Timestamps are u64 ns since the UNIX epoch; prices are i64 at fixed point 1e-9; sizes are u64 in
units of ``10**-size_precision``, a per-instrument scale carried by every record with a size (see
``dm/_records.pxd``: one 1e-9 scale cannot hold meme-coin sizes). ``tests/test_records.py``
checks these dtypes against the C structs.
"""
from __future__ import annotations

import struct
import zlib
from decimal import Decimal
from enum import IntEnum

import numpy as np

LAYOUT_VERSION = 2
FIXED_DECIMALS = 9
FIXED_SCALE = 1_000_000_000
UNDEF_PRICE = (1 << 63) - 1
UNDEF_TIMESTAMP = (1 << 64) - 1
MAX_SIZE_PRECISION = 18
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
    GAP = 0xE6  # a lost window (the gap ledger travels as records)
    STATISTICS = 0xE7  # DBN StatMsg layout (mark/index price, funding, open interest, liquidations)
    INSTRUMENT_DEF = 0xE8  # instrument registration and definition
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


class BarFlag(IntEnum):
    """``BarRecord.flags``: BAR records have their own bits (not ``Flag``'s). Received bars
    (Databento ohlcv, stored ``source = 0``) carry 0."""

    BUILT = 1 << 0  # built by dm from the channel's trades (live bars, dm/_ring.pyx Fanout; dm.bars)
    LATE = 1 << 1   # a correction: a trade arrived after this bar was published; the bar is
    #                 published again, whole. Readers keep the latest BAR per (instrument_id,
    #                 interval_s, ts_event)


class StatType(IntEnum):
    """``StatRecord.stat_type``: DBN's StatType values (1-16), then dm's own from 1000 for what
    DBN has no code for (crypto derivatives)."""

    OPENING_PRICE = 1
    INDICATIVE_OPENING_PRICE = 2
    SETTLEMENT_PRICE = 3
    TRADING_SESSION_LOW_PRICE = 4
    TRADING_SESSION_HIGH_PRICE = 5
    CLEARED_VOLUME = 6
    LOWEST_OFFER = 7
    HIGHEST_BID = 8
    OPEN_INTEREST = 9
    FIXING_PRICE = 10
    CLOSE_PRICE = 11
    NET_CHANGE = 12
    VWAP = 13
    VOLATILITY = 14
    DELTA = 15
    UNCROSSING_PRICE = 16
    MARK_PRICE = 1001  # price
    INDEX_PRICE = 1002  # price
    FUNDING_RATE = 1003  # price field holds the rate at 1e-9 (0.0001 = 100_000); ts_ref = funding time
    PREDICTED_FUNDING_RATE = 1004
    LIQUIDATION = 1005  # price, quantity; stat_flags = side char of the liquidated order
    ESTIMATED_SETTLEMENT_PRICE = 1006
    IMPLIED_VOLATILITY = 1007  # price field, 1e-9
    UNDERLYING_PRICE = 1008


class GapUnits(IntEnum):
    """``GapRecord.units``: what ``first_missing`` / ``last_missing`` count."""

    SEQUENCE = 0  # venue sequence or update ids, inclusive
    NS = 1  # ns since the UNIX epoch, inclusive window


INSTRUMENT_INVERSE = 1 << 0
INSTRUMENT_LINEAR = 1 << 1
# InstrumentDefRecord.instrument_class: DBN's InstrumentClass chars, plus dm's 'W' (perpetual swap)
CLASS_FUTURE, CLASS_CALL, CLASS_PUT, CLASS_STOCK = ord("F"), ord("C"), ord("P"), ord("K")
CLASS_FX_SPOT, CLASS_COMMODITY_SPOT, CLASS_PERPETUAL = ord("X"), ord("Y"), ord("W")

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
        ("size_precision", "<u1"),
        ("_reserved", "V5"),
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
        ("size_precision", "<u1"),
        ("_reserved", "V6"),
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
        ("size_precision", "<u1"),
        ("_reserved", "V4"),
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
        ("size_precision", "<u1"),
        ("_reserved", "V4"),
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
        ("count", "<u4"),
        ("flags", "<u1"),
        ("size_precision", "<u1"),
        ("_reserved", "V6"),
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

# The gap ledger as records: workers send these through the persist queue (the persister is the
# only writer of storage) and to the affected channel, so readers learn of a lost window.
GAP_DTYPE = np.dtype(
    _HEADER
    + [
        ("ts_recv", "<u8"),
        ("first_missing", "<u8"),
        ("last_missing", "<u8"),
        ("units", "<u1"),
        ("flags", "<u1"),
        ("_reserved", "V6"),
        ("kind", "S24"),
        ("detail", "S64"),
    ]
)

# DBN v3 StatMsg layout (80 B) with dm's rtype; stat_type values in ``StatType``.
STAT_DTYPE = np.dtype(
    _HEADER
    + [
        ("ts_recv", "<u8"),
        ("ts_ref", "<u8"),
        ("price", "<i8"),
        ("quantity", "<i8"),
        ("sequence", "<u4"),
        ("ts_in_delta", "<i4"),
        ("stat_type", "<u2"),
        ("channel_id", "<u2"),
        ("update_action", "<u1"),
        ("stat_flags", "<u1"),
        ("size_precision", "<u1"),
        ("_reserved", "V17"),
    ]
)

INSTRUMENT_DEF_DTYPE = np.dtype(
    _HEADER
    + [
        ("ts_recv", "<u8"),
        ("min_price_increment", "<i8"),
        ("display_factor", "<i8"),
        ("lot_size", "<i8"),
        ("contract_multiplier", "<i8"),
        ("strike_price", "<i8"),
        ("expiration", "<u8"),
        ("activation", "<u8"),
        ("size_precision", "<u1"),
        ("price_precision", "<u1"),
        ("instrument_class", "<u1"),
        ("flags", "<u1"),
        ("_reserved", "V4"),
        ("symbol", "S48"),
        ("exchange", "S24"),
        ("raw_symbol", "S48"),
        ("underlying", "S24"),
        ("base", "S12"),
        ("quote", "S12"),
    ]
)

DTYPES: dict[int, np.dtype] = {
    RType.TRADE: TRADE_DTYPE,
    RType.BBO: BBO_DTYPE,
    RType.DEPTH: DEPTH_DTYPE,
    RType.BOOK_DELTA: BOOK_DELTA_DTYPE,
    RType.BAR: BAR_DTYPE,
    RType.MBP_EVENT: MBP_EVENT_DTYPE,
    RType.GAP: GAP_DTYPE,
    RType.STATISTICS: STAT_DTYPE,
    RType.INSTRUMENT_DEF: INSTRUMENT_DEF_DTYPE,
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


def to_decimal(value: int, decimals: int = FIXED_DECIMALS) -> Decimal:
    """Fixed-point integer → exact ``Decimal``: prices at 1e-9 (the default), sizes at their
    record's ``size_precision`` (``to_decimal(rec.size, rec.size_precision)``)."""
    return Decimal(value).scaleb(-decimals)


def to_float(value: int, decimals: int = FIXED_DECIMALS) -> float:
    """Fixed-point integer → nearest ``float`` (for display and analytics, not for storage)."""
    return value / 10**decimals


def from_decimal(value: Decimal | str | int, decimals: int = FIXED_DECIMALS, *, unsigned: bool = False) -> int:
    """Exact decimal → fixed point at ``10**-decimals`` (prices: 9; sizes: the instrument's
    ``size_precision``). Raises ``ValueError`` when the value has more significant fractional
    digits than ``decimals`` or does not fit in i64 (``unsigned``: also when negative) — the
    storable range of both prices and sizes."""
    d = Decimal(value)
    scaled = d.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value!r} has more than {decimals} fractional digits")
    out = int(scaled)
    if not I64_MIN <= out <= I64_MAX:
        raise ValueError(f"{value!r} does not fit in i64 at 1e-{decimals}")
    if unsigned and out < 0:
        raise ValueError(f"{value!r} is negative")
    return out


def size_precision_of(step: str | Decimal) -> int:
    """Decimals of a venue's size step / lot size ("0.00100000" → 3, "1.00" → 0, "1e-5" → 5):
    the ``size_precision`` dm registers for the instrument. Raises ``ValueError`` beyond 18."""
    d = Decimal(str(step)).normalize()
    exp = -d.as_tuple().exponent
    p = max(0, int(exp))
    if p > MAX_SIZE_PRECISION:
        raise ValueError(f"size step {step!r} needs {p} decimals (max {MAX_SIZE_PRECISION})")
    return p


def c_string(raw: bytes) -> str:
    """A NUL-padded fixed-width char field (GapRecord.kind, InstrumentDefRecord.symbol...) as str."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


# -- Python record objects ---------------------------------------------------------------------
# Thin namedtuples over struct.unpack_from (~0.35 µs to build), raw fixed-point ints, with helpers
# for Decimal/float. Field order is the struct's (padding skipped). dm.client's readers hand out
# the extension types of dm/_recobj.pyx instead (same names and fields, ~40 ns to build);
# isinstance against these classes accepts both (_RecordTupleType).
from typing import NamedTuple  # noqa: E402

#: fields that hold a size (scaled by the record's size_precision); every other fixed-point field
#: is a price at 1e-9
SIZE_FIELDS = frozenset({"size", "bid_sz", "ask_sz", "volume", "quantity", "lot_size"})


def _dec(self, name: str) -> Decimal:
    """A fixed-point field as an exact Decimal, e.g. ``t.dec("price")``, ``t.dec("size")`` (sizes
    at the record's ``size_precision``; MBP_EVENT sizes are DBN counts)."""
    return to_decimal(getattr(self, name), getattr(self, "size_precision", 0) if name in SIZE_FIELDS else FIXED_DECIMALS)


def _float(self, name: str) -> float:
    """A fixed-point field as float (display/analytics only), e.g. ``t.f("price")``."""
    return to_float(getattr(self, name), getattr(self, "size_precision", 0) if name in SIZE_FIELDS else FIXED_DECIMALS)


class _Trade(NamedTuple):
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
    size_precision: int


class _Bbo(NamedTuple):
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
    size_precision: int


class _BookDelta(NamedTuple):
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
    size_precision: int


class _Bar(NamedTuple):
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
    count: int
    flags: int
    size_precision: int


class _Depth(NamedTuple):
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
    size_precision: int
    levels: tuple  # ((bid_px, ask_px, bid_sz, ask_sz), ...) x 10


class _MbpEvent(NamedTuple):
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


class _Gap(NamedTuple):
    """A lost window: ``first_missing``..``last_missing`` inclusive, in ``units`` (GapUnits);
    instrument_id 0 means every instrument of the publisher."""

    length: int
    rtype: int
    publisher_id: int
    instrument_id: int
    ts_event: int
    ts_recv: int
    first_missing: int
    last_missing: int
    units: int
    flags: int
    kind: str
    detail: str


class _Statistic(NamedTuple):
    length: int
    rtype: int
    publisher_id: int
    instrument_id: int
    ts_event: int
    ts_recv: int
    ts_ref: int
    price: int
    quantity: int
    sequence: int
    ts_in_delta: int
    stat_type: int
    channel_id: int
    update_action: int
    stat_flags: int
    size_precision: int


class _InstrumentDef(NamedTuple):
    length: int
    rtype: int
    publisher_id: int
    instrument_id: int
    ts_event: int
    ts_recv: int
    min_price_increment: int
    display_factor: int
    lot_size: int
    contract_multiplier: int
    strike_price: int
    expiration: int
    activation: int
    size_precision: int
    price_precision: int
    instrument_class: int
    flags: int
    symbol: str
    exchange: str
    raw_symbol: str
    underlying: str
    base: str
    quote: str




class _RecordTupleType(type):
    """Metaclass of the record namedtuples: ``isinstance(rec, Trade)`` also holds for the record
    objects ``dm.client`` hands out (``dm._recobj.Trade``..., which name their namedtuple in
    ``_tuple_type``), so code written against these classes keeps working with either. A check
    against a namedtuple class of anything that is not exactly that class runs this Python
    method (~30 ns more); ``isinstance(rec, dm.client.Trade)`` is the cheaper check for readers."""

    def __instancecheck__(cls, obj) -> bool:
        return type.__instancecheck__(cls, obj) or getattr(type(obj), "_tuple_type", None) is cls


def _public(base: type, doc: str | None = None) -> type:
    name = base.__name__[1:]
    cls = _RecordTupleType(name, (base,), {"__slots__": (), "__doc__": doc or base.__doc__, "__module__": __name__})
    cls.__qualname__ = name
    return cls


Trade = _public(_Trade)
Bbo = _public(_Bbo)
BookDelta = _public(_BookDelta)
Bar = _public(_Bar)
Depth = _public(_Depth)
MbpEvent = _public(_MbpEvent)
Gap = _public(_Gap)
Statistic = _public(_Statistic)
InstrumentDef = _public(_InstrumentDef)

for _cls in (Trade, Bbo, BookDelta, Bar, Depth, MbpEvent, Gap, Statistic, InstrumentDef):
    _cls.dec = _dec
    _cls.f = _float

_STRUCTS = {
    RType.TRADE: (struct.Struct("<BBHIQQqQQQBBB5x"), Trade),
    RType.BBO: (struct.Struct("<BBHIQQqqQQQIIBB6x"), Bbo),
    RType.BOOK_DELTA: (struct.Struct("<BBHIQQqQQBBBB4x"), BookDelta),
    RType.BAR: (struct.Struct("<BBHIQqqqqQIIBB6x"), Bar),
    RType.STATISTICS: (struct.Struct("<BBHIQQQqqIiHHBBB17x"), Statistic),
}
_DEPTH_HEAD = struct.Struct("<BBHIQQQBBBB4x")
_GAP = struct.Struct("<BBHIQQQQBB6x24s64s")
_INSTRUMENT_DEF = struct.Struct("<BBHIQQqqqqqQQBBBB4x48s24s48s24s12s12s")
_DEPTH_LEVEL = struct.Struct("<qqQQ")
_TUPLE_NEW = tuple.__new__
_MBP_EVENT = struct.Struct("<BBHIQQqQQiBBBB10I10I")


_UNPACK = {int(k): (s.unpack_from, cls) for k, (s, cls) in _STRUCTS.items()}  # plain int keys: no IntEnum on the hot path
_RT_DEPTH, _RT_MBP_EVENT = int(RType.DEPTH), int(RType.MBP_EVENT)
_RT_GAP, _RT_INSTRUMENT_DEF = int(RType.GAP), int(RType.INSTRUMENT_DEF)


def unpack(buf):
    """One record (bytes-like, starting at its header) → Trade | Bbo | BookDelta | Bar | Depth |
    MbpEvent | Gap | Statistic | InstrumentDef.

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
    if rtype == _RT_GAP:
        v = _GAP.unpack_from(buf, 0)
        return _TUPLE_NEW(Gap, v[:10] + (c_string(v[10]), c_string(v[11])))
    if rtype == _RT_INSTRUMENT_DEF:
        v = _INSTRUMENT_DEF.unpack_from(buf, 0)
        return _TUPLE_NEW(InstrumentDef, v[:17] + tuple(c_string(x) for x in v[17:]))
    raise KeyError(rtype)


def _put_str(arr, name: str, value: str) -> None:
    raw = value.encode()
    width = arr.dtype.fields[name][0].itemsize
    if len(raw) > width:
        raw = raw[:width]
        while raw:  # never cut a UTF-8 sequence in half
            try:
                raw.decode()
                break
            except UnicodeDecodeError:
                raw = raw[:-1]
    arr[name] = raw


def gap_record(publisher_id: int, instrument_id: int, kind: str, first_missing: int, last_missing: int,
               units: int, detected_ns: int, detail: str = "") -> bytes:
    """One GAP record (``GAP_DTYPE``): ``first_missing``..``last_missing`` inclusive in ``units``
    (``GapUnits.SEQUENCE`` or ``GapUnits.NS``), detected at ``detected_ns`` (ns since the epoch).
    ``kind`` (<= 24 bytes ASCII, e.g. "restart") names the cause; ``detail`` is truncated to 64
    bytes. Raises ``ValueError`` for a kind that does not fit."""
    if not kind or len(kind.encode()) > 24 or not kind.isascii():
        raise ValueError(f"gap kind {kind!r}: 1-24 ASCII characters")
    a = np.zeros(1, GAP_DTYPE)
    a["length"] = GAP_DTYPE.itemsize // 4
    a["rtype"] = RType.GAP
    a["publisher_id"] = publisher_id
    a["instrument_id"] = instrument_id
    a["ts_event"] = detected_ns
    a["ts_recv"] = detected_ns
    a["first_missing"] = first_missing
    a["last_missing"] = last_missing
    a["units"] = units
    a["kind"] = kind.encode()
    _put_str(a, "detail", detail)
    return a.tobytes()
