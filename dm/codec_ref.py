"""Pure-Python reference codec: the venue-independent half of the test oracle for the Cython
codecs (production never uses it). Each venue's oracle is ``dm/venues/<venue>/codec_ref.py``
(``RefBinanceCodec``, ``RefKrakenCodec``, ``RefKrakenFuturesCodec``; found through
``dm.venues.venue(kind).codec_ref_class()``), a subclass of :class:`RefCodec` here.

It implements the same contract as the Cython codecs (see the ``dm._codec`` module docstring)
in the most direct way: a recursive-descent JSON parser that keeps every value's byte offset,
``decimal.Decimal`` for fixed point, ``struct`` for the record layouts of ``dm/_records.pxd``.
Tests check that both give byte-identical records and identical errors (class, venue, reason,
field, offset) on recorded, generated and mutated frames.

API (mirrors the Cython classes): ``RefXxxCodec(publisher_id, symbols)``;
``decode(frame, ts_recv) -> int``, ``output() -> bytes``, ``last_kind``, ``instrument_id``,
``first_seq``, ``last_seq``, ``checksum``, ``counts()``; ``RefBinanceCodec.decode_snapshot(body,
venue_symbol, ts_recv)``; ``ref_parse_price`` / ``ref_parse_size``. A venue's oracle implements
``_decode(frame_bytes)`` with the typed accessors of :class:`RefCodec` (``req``, ``s``, ``u64``,
``ms``, ``boolean``, ``fx_str``, ``fx_num``, ``lookup``) and record writers (``trade``,
``bbo``, ``level``, ``clear``, ``set_last``).
"""
from __future__ import annotations

import re
import struct
from decimal import Decimal

from dm.errors import CodecError, FixedPointError, UnknownInstrumentError

MAX_DEPTH = 32
SYM_MAX = 59
U64_MAX = (1 << 64) - 1
I64_MAX = (1 << 63) - 1
UNDEF_PRICE = I64_MAX

KIND_NAMES = (
    "none", "aggTrade", "trade", "bookTicker", "depthUpdate", "depthSnapshot", "kline",
    "heartbeat", "status", "subscription", "ticker", "spread", "book", "bookSnapshot",
    "tradeSnapshot", "tickerLite", "info", "pong", "ohlc", "error",
    # 20-27: kept for the other venue kinds being added; 28-29: Binance futures
    "k20", "k21", "k22", "k23", "k24", "k25", "k26", "k27", "liquidation",
)
K = {name: i for i, name in enumerate(KIND_NAMES)}

RTYPE_TRADE, RTYPE_BBO, RTYPE_BOOK_DELTA = 0xE0, 0xE1, 0xE3
F_TS_IS_RECV, F_SNAPSHOT, F_LAST = 1, 1 << 5, 1 << 7
SIDE_A, SIDE_B, SIDE_N = ord("A"), ord("B"), ord("N")
ACT_ADD, ACT_CANCEL, ACT_CLEAR = ord("A"), ord("C"), ord("R")

TRADE = struct.Struct("<BBHIQQqQQQBBB5x")      # 64 B
BBO = struct.Struct("<BBHIQQqqQQQIIBB6x")      # 80 B
DELTA = struct.Struct("<BBHIQQqQQBBBB4x")      # 56 B
SIZE_PRECISION = 9
MAX_VALUE_ERRS = 16  # dm/_scan.pxd: value errors kept per decode (more are only counted)
assert (TRADE.size, BBO.size, DELTA.size) == (64, 80, 56)


# ---------------------------------------------------------------------------------------------
# JSON with offsets

class _JsonError(Exception):
    def __init__(self, offset: int, reason: str | None = None):
        super().__init__(offset, reason)
        self.offset = offset
        self.reason = reason


class Node:
    """A JSON value: ``t`` in obj/arr/str/num/true/false/null, ``off`` its first byte,
    ``v``: list of (raw key bytes, Node) / list of Node / raw string content / raw number."""

    __slots__ = ("t", "off", "v")

    def __init__(self, t: str, off: int, v=None):
        self.t, self.off, self.v = t, off, v


_WS = frozenset(b" \t\n\r")
_PLAIN = re.compile(rb'[^"\\\x00-\x1f]*')
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESC = frozenset(b'"\\/bfnrt')
_DIGITS = frozenset(b"0123456789")


class _Parser:
    def __init__(self, b: bytes):
        self.b = b
        self.n = len(b)

    def ws(self, i: int) -> int:
        b, n = self.b, self.n
        while i < n and b[i] in _WS:
            i += 1
        return i

    def need(self, i: int) -> int:
        if i >= self.n:
            raise _JsonError(self.n)
        return self.b[i]

    def value(self, i: int, depth: int):
        c = self.need(i)
        if c == 0x7B:
            return self.obj(i, depth)
        if c == 0x5B:
            return self.arr(i, depth)
        if c == 0x22:
            return self.string(i)
        if c == 0x2D or c in _DIGITS:
            return self.number(i)
        for lit, t in ((b"true", "true"), (b"false", "false"), (b"null", "null")):
            if c == lit[0]:
                for k in range(len(lit)):
                    if self.need(i + k) != lit[k]:
                        raise _JsonError(i + k)
                return Node(t, i), i + len(lit)
        raise _JsonError(i)

    def string(self, i: int):
        b = self.b
        j = i + 1
        while True:
            j = _PLAIN.match(b, j).end()
            c = self.need(j)
            if c == 0x22:
                return Node("str", i, b[i + 1:j]), j + 1
            if c != 0x5C:
                raise _JsonError(j)
            j += 1
            c = self.need(j)
            if c == 0x75:
                for _ in range(4):
                    j += 1
                    if self.need(j) not in _HEX:
                        raise _JsonError(j)
                j += 1
            elif c in _ESC:
                j += 1
            else:
                raise _JsonError(j)

    def number(self, i: int):
        b, n = self.b, self.n
        j = i
        if b[j] == 0x2D:
            j += 1
        c = self.need(j)
        if c == 0x30:
            j += 1
        elif c in _DIGITS:
            while j < n and b[j] in _DIGITS:
                j += 1
        else:
            raise _JsonError(j)
        if j < n and b[j] == 0x2E:
            j += 1
            if self.need(j) not in _DIGITS:
                raise _JsonError(j)
            while j < n and b[j] in _DIGITS:
                j += 1
        if j < n and b[j] in (0x65, 0x45):
            j += 1
            if self.need(j) in (0x2B, 0x2D):
                j += 1
            if self.need(j) not in _DIGITS:
                raise _JsonError(j)
            while j < n and b[j] in _DIGITS:
                j += 1
        return Node("num", i, b[i:j]), j

    def obj(self, i: int, depth: int):
        if depth >= MAX_DEPTH:
            raise _JsonError(i, "invalid JSON: nesting too deep")
        members = []
        j = self.ws(i + 1)
        if self.need(j) == 0x7D:
            return Node("obj", i, members), j + 1
        while True:
            if self.need(j) != 0x22:
                raise _JsonError(j)
            k, j = self.string(j)
            j = self.ws(j)
            if self.need(j) != 0x3A:
                raise _JsonError(j)
            v, j = self.value(self.ws(j + 1), depth + 1)
            members.append((k.v, v))
            j = self.ws(j)
            c = self.need(j)
            if c == 0x2C:
                j = self.ws(j + 1)
            elif c == 0x7D:
                return Node("obj", i, members), j + 1
            else:
                raise _JsonError(j)

    def arr(self, i: int, depth: int):
        if depth >= MAX_DEPTH:
            raise _JsonError(i, "invalid JSON: nesting too deep")
        items = []
        j = self.ws(i + 1)
        if self.need(j) == 0x5D:
            return Node("arr", i, items), j + 1
        while True:
            v, j = self.value(j, depth + 1)
            items.append(v)
            j = self.ws(j)
            c = self.need(j)
            if c == 0x2C:
                j = self.ws(j + 1)
            elif c == 0x5D:
                return Node("arr", i, items), j + 1
            else:
                raise _JsonError(j)


def parse_json(b: bytes) -> Node:
    """Strict JSON -> Node tree; raises ``_JsonError`` at the first byte that cannot continue
    a valid JSON text (offset len(b) when the text ends early)."""
    p = _Parser(b)
    node, j = p.value(p.ws(0), 0)
    j = p.ws(j)
    if j < p.n:
        raise _JsonError(j)
    return node


# ---------------------------------------------------------------------------------------------
# fixed point

_DEC = re.compile(rb"(-?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(?:[eE]([+-]?[0-9]+))?")


class _FixedError(Exception):
    pass


def fixed(raw: bytes, signed: bool, dp: int = 9, size: bool = False) -> int:
    """Exact decimal text -> integer at 10**-dp (see dm._scan parse_fixed / parse_size_dp for
    the rules). ``size``: a size at the instrument's size_precision ``dp``: non-negative and
    <= i64 max (storable)."""
    m = _DEC.fullmatch(raw)
    if not m:
        raise _FixedError("invalid decimal")
    d = Decimal(m.group(1).decode("ascii"))
    if d.is_zero():
        return 0
    sign, digits, exp = d.as_tuple()
    if m.group(2):
        # an exponent beyond +-10**12 cannot be compensated by a frame's digits: clamp it so
        # huge exponents stay cheap (the result is the same: out of range / too many digits)
        e = m.group(2).lstrip(b"+-").lstrip(b"0") or b"0"
        e = 10**12 if len(e) > 12 else int(e)
        exp += -e if m.group(2).startswith(b"-") else e
    k = len(digits)
    while digits[k - 1] == 0:
        k -= 1
    low = exp + (len(digits) - k)         # power of ten of the last non-zero digit
    high = low + k - 1                    # ... of the first
    if low < -dp:
        raise _FixedError("more than 9 fractional digits" if dp == 9
                          else "more fractional digits than the instrument's size_precision")
    if sign and not signed:
        raise _FixedError("negative value")
    if high + dp >= 20:
        raise _FixedError("out of range")
    mag = int("".join(map(str, digits[:k]))) * 10 ** (low + dp)
    if size:
        if mag > I64_MAX:
            raise _FixedError("out of range")
        return mag
    if signed:
        if (sign and mag > 1 << 63) or (not sign and mag > I64_MAX):
            raise _FixedError("out of range")
        return -mag if sign else mag
    if mag > U64_MAX:
        raise _FixedError("out of range")
    return mag


def as_bytes(x) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    return bytes(x)


def ref_parse_price(text) -> int:
    try:
        return fixed(as_bytes(text), True)
    except _FixedError as e:
        raise FixedPointError("decimal", str(e), None, 0) from None


def ref_parse_size(text, size_precision: int = 9) -> int:
    try:
        return fixed(as_bytes(text), False, size_precision, size=True)
    except _FixedError as e:
        raise FixedPointError("decimal", str(e), None, 0) from None


# ---------------------------------------------------------------------------------------------
# codecs

class RefCodec:
    """Base of the venue oracles (module docstring)."""

    VENUE = "?"

    def __init__(self, publisher_id: int, symbols: dict | None = None):
        self.publisher_id = publisher_id
        self.syms: dict[bytes, int] = {}
        self.sps: dict[bytes, int] = {}   # venue symbol -> size_precision
        self._counts = [0] * len(KIND_NAMES)
        for k, v in (symbols or {}).items():
            self.add_symbol(k, v)
        self._reset()

    def add_symbol(self, venue_symbol, instrument_id: int, size_precision: int = SIZE_PRECISION) -> None:
        k = as_bytes(venue_symbol)
        if not 1 <= len(k) <= SYM_MAX:
            raise ValueError("venue symbol length")
        if not 0 <= size_precision <= 18:
            raise ValueError(f"size_precision {size_precision} must be 0..18")
        self.syms[k.upper()] = instrument_id
        self.sps[k.upper()] = size_precision

    def _reset(self):
        self.recs: list = []
        self.last_kind = 0
        self.instrument_id = 0
        self.size_precision = SIZE_PRECISION
        self.first_seq = 0
        self.last_seq = 0
        self.checksum = -1
        self.value_errors: list = []
        self.value_error_count = 0

    # -- values rejected alone (dm._scan value_reject): None = skip that value
    def _reject(self, field, reason, off):
        self.value_error_count += 1
        if len(self.value_errors) < MAX_VALUE_ERRS:
            self.value_errors.append((self.instrument_id, field, reason, off))
        return None

    def _value(self, raw: bytes, node: "Node", field: str, signed: bool, dp: int, size: bool):
        try:
            return fixed(raw, signed, dp, size=size)
        except _FixedError as e:
            if str(e) == "invalid decimal":
                self.err(str(e), field, node.off, FixedPointError)
            return self._reject(field, str(e), node.off)

    def px_str(self, node: "Node", field: str):
        """Price string -> i64 at 1e-9, or None (rejected alone)."""
        return self._value(self.s(node, field), node, field, True, 9, False)

    def sz_str(self, node: "Node", field: str):
        """Size string -> at the instrument's size_precision, or None (rejected alone)."""
        return self._value(self.s(node, field), node, field, False, self.size_precision, True)

    def _num(self, node: "Node", field: str) -> bytes:
        if node.t != "num":
            self.err("expected a number", field, node.off)
        return node.v

    def px_num(self, node: "Node", field: str, null=None):
        if null is not None and node.t == "null":
            return null
        return self._value(self._num(node, field), node, field, True, 9, False)

    def sz_num(self, node: "Node", field: str, null=None):
        if null is not None and node.t == "null":
            return null
        return self._value(self._num(node, field), node, field, False, self.size_precision, True)

    def counts(self) -> dict:
        return {KIND_NAMES[k]: c for k, c in enumerate(self._counts) if c}

    def output(self) -> bytes:
        return b"".join(self.recs)

    # -- errors / typed access
    def err(self, reason, field, off, cls=CodecError):
        raise cls(self.VENUE, reason, field, off)

    def req(self, d: dict, key: str, obj: Node) -> Node:
        if key.encode() not in d:
            self.err("missing field", key, obj.off)
        return d[key.encode()]

    def s(self, node: Node, field: str) -> bytes:
        if node.t != "str":
            self.err("expected a string", field, node.off)
        return node.v

    def u64(self, node: Node, field: str) -> int:
        if node.t != "num" or not re.fullmatch(rb"[0-9]+", node.v):
            self.err("expected a non-negative integer", field, node.off)
        if len(node.v) > 20 or int(node.v) > U64_MAX:
            self.err("integer out of range", field, node.off)
        return int(node.v)

    def ms(self, node: Node, field: str) -> int:
        ns = self.u64(node, field) * 1_000_000
        if ns > U64_MAX:
            self.err("timestamp out of range", field, node.off)
        return ns

    def boolean(self, node: Node, field: str) -> bool:
        if node.t not in ("true", "false"):
            self.err("expected a boolean", field, node.off)
        return node.t == "true"

    def fx(self, raw: bytes, node: Node, field: str, signed: bool) -> int:
        try:
            return fixed(raw, signed)
        except _FixedError as e:
            self.err(str(e), field, node.off, FixedPointError)

    def fx_str(self, node: Node, field: str, signed: bool) -> int:
        return self.fx(self.s(node, field), node, field, signed)

    def fx_num(self, node: Node, field: str, signed: bool, null=None) -> int:
        if null is not None and node.t == "null":
            return null
        if node.t != "num":
            self.err("expected a number", field, node.off)
        return self.fx(node.v, node, field, signed)

    def lookup(self, node: Node, field: str) -> None:
        raw = self.s(node, field)
        iid = self.syms.get(raw.upper()) if len(raw) <= SYM_MAX else None
        if iid is None:
            self.err(f"unknown symbol {raw.decode('utf-8', 'replace')!r}", field, node.off, UnknownInstrumentError)
        self.instrument_id = iid
        self.size_precision = self.sps[raw.upper()]

    @staticmethod
    def members(node: Node) -> dict:
        return {k: v for k, v in node.v}

    # -- records
    def trade(self, ts_event, px, sz, tid, seq, side, flags):
        self.recs.append(TRADE.pack(16, RTYPE_TRADE, self.publisher_id, self.instrument_id, ts_event,
                                    self.ts_recv, px, sz, tid, seq, side, flags, self.size_precision))

    def bbo(self, ts_event, bp, bs, ap, as_, seq, flags):
        self.recs.append(BBO.pack(20, RTYPE_BBO, self.publisher_id, self.instrument_id, ts_event,
                                  self.ts_recv, bp, ap, bs, as_, seq, 0, 0, flags, self.size_precision))

    def delta(self, ts_event, px, sz, seq, side, action, flags):
        self.recs.append(DELTA.pack(14, RTYPE_BOOK_DELTA, self.publisher_id, self.instrument_id, ts_event,
                                    self.ts_recv, px, sz, seq, side, action, flags, self.size_precision))

    def level(self, ts_event, px, sz, seq, side, flags):
        self.delta(ts_event, px, sz, seq, side, ACT_ADD if sz else ACT_CANCEL, flags)

    def clear(self, ts_event, seq, flags):
        self.delta(ts_event, UNDEF_PRICE, 0, seq, SIDE_N, ACT_CLEAR, flags)

    def set_last(self):
        if self.recs and self.recs[-1][1] == RTYPE_BOOK_DELTA:
            r = bytearray(self.recs[-1])
            r[50] |= F_LAST
            self.recs[-1] = bytes(r)

    # -- entry points
    def _parse(self, b: bytes) -> Node:
        try:
            return parse_json(b)
        except _JsonError as e:
            if e.reason:
                reason = e.reason
            elif e.offset >= len(b):
                reason = "invalid JSON: unexpected end of frame"
            else:
                reason = "invalid JSON: unexpected byte 0x%02x" % b[e.offset]
            raise CodecError(self.VENUE, reason, None, e.offset) from None

    def decode(self, frame, ts_recv: int) -> int:
        b = as_bytes(frame)
        self._reset()
        self.ts_recv = ts_recv
        try:
            self._decode(b)
        except Exception:
            self._reset()
            raise
        self._counts[self.last_kind] += 1
        return len(self.recs)


# ---------------------------------------------------------------------------------------------
# recordings (cryptofeed raw-data format, data/README.md section 1) for tests and benches

def iter_recording(path):
    """Yield ``(kind, url, ts_recv_ns, text)`` per line of a cryptofeed recording: kind "ws" for
    a received websocket frame (url None), "rest" for a REST body; config/connect/sent lines are
    skipped. ``ts_recv_ns`` is the recorder's TS converted exactly to ns."""
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            if not line or line.startswith(b"configuration: ") or line.startswith(b"wss://"):
                continue
            if line.startswith(b"http"):
                url, _, rest = line.partition(b" -> ")
                ts, _, body = rest.partition(b": ")
                yield "rest", url.decode(), int(Decimal(ts.decode()).scaleb(9)), body
            else:
                ts, _, text = line.partition(b": ")
                yield "ws", None, int(Decimal(ts.decode()).scaleb(9)), text
