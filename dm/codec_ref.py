"""Pure-Python reference codec: the test oracle for ``dm._codec`` (production never uses it).

It implements the same contract as the Cython codecs (see the ``dm._codec`` module docstring)
in the most direct way: a recursive-descent JSON parser that keeps every value's byte offset,
``decimal.Decimal`` for fixed point, ``struct`` for the record layouts of ``dm/_records.pxd``.
Tests check that both give byte-identical records and identical errors (class, venue, reason,
field, offset) on recorded, generated and mutated frames.

API (mirrors the Cython classes): ``RefBinanceCodec(publisher_id, symbols)``,
``RefKrakenCodec``, ``RefKrakenFuturesCodec``; ``decode(frame, ts_recv) -> int``,
``output() -> bytes``, ``last_kind``, ``instrument_id``, ``first_seq``, ``last_seq``,
``checksum``, ``counts()``; ``RefBinanceCodec.decode_snapshot(body, venue_symbol, ts_recv)``;
``ref_parse_price`` / ``ref_parse_size``.
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


def fixed(raw: bytes, signed: bool) -> int:
    """Exact decimal text -> integer at 1e-9 (see dm._codec.parse_fixed for the rules)."""
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
    if low < -9:
        raise _FixedError("more than 9 fractional digits")
    if sign and not signed:
        raise _FixedError("negative value")
    if high + 9 >= 20:
        raise _FixedError("out of range")
    mag = int("".join(map(str, digits[:k]))) * 10 ** (low + 9)
    if signed:
        if (sign and mag > 1 << 63) or (not sign and mag > I64_MAX):
            raise _FixedError("out of range")
        return -mag if sign else mag
    if mag > U64_MAX:
        raise _FixedError("out of range")
    return mag


def _as_bytes(x) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    return bytes(x)


def ref_parse_price(text) -> int:
    try:
        return fixed(_as_bytes(text), True)
    except _FixedError as e:
        raise FixedPointError("decimal", str(e), None, 0) from None


def ref_parse_size(text) -> int:
    try:
        return fixed(_as_bytes(text), False)
    except _FixedError as e:
        raise FixedPointError("decimal", str(e), None, 0) from None


# ---------------------------------------------------------------------------------------------
# codecs

class _Ref:
    VENUE = "?"

    def __init__(self, publisher_id: int, symbols: dict | None = None):
        self.publisher_id = publisher_id
        self.syms: dict[bytes, int] = {}
        self._counts = [0] * len(KIND_NAMES)
        for k, v in (symbols or {}).items():
            self.add_symbol(k, v)
        self._reset()

    def add_symbol(self, venue_symbol, instrument_id: int) -> None:
        k = _as_bytes(venue_symbol)
        if not 1 <= len(k) <= SYM_MAX:
            raise ValueError("venue symbol length")
        self.syms[k.upper()] = instrument_id

    def _reset(self):
        self.recs: list = []
        self.last_kind = 0
        self.instrument_id = 0
        self.first_seq = 0
        self.last_seq = 0
        self.checksum = -1

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

    @staticmethod
    def members(node: Node) -> dict:
        return {k: v for k, v in node.v}

    # -- records
    def trade(self, ts_event, px, sz, tid, seq, side, flags):
        self.recs.append(TRADE.pack(16, RTYPE_TRADE, self.publisher_id, self.instrument_id, ts_event,
                                    self.ts_recv, px, sz, tid, seq, side, flags, SIZE_PRECISION))

    def bbo(self, ts_event, bp, bs, ap, as_, seq, flags):
        self.recs.append(BBO.pack(20, RTYPE_BBO, self.publisher_id, self.instrument_id, ts_event,
                                  self.ts_recv, bp, ap, bs, as_, seq, 0, 0, flags, SIZE_PRECISION))

    def delta(self, ts_event, px, sz, seq, side, action, flags):
        self.recs.append(DELTA.pack(14, RTYPE_BOOK_DELTA, self.publisher_id, self.instrument_id, ts_event,
                                    self.ts_recv, px, sz, seq, side, action, flags, SIZE_PRECISION))

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
        b = _as_bytes(frame)
        self._reset()
        self.ts_recv = ts_recv
        try:
            self._decode(b)
        except Exception:
            self._reset()
            raise
        self._counts[self.last_kind] += 1
        return len(self.recs)


class RefBinanceCodec(_Ref):
    VENUE = "BINANCE"

    def _decode(self, b: bytes) -> None:
        top = self._parse(b)
        if top.t != "obj":
            self.err("expected a JSON object", None, top.off)
        t = self.members(top)
        if b"stream" in t:
            name = self.s(t[b"stream"], "stream")
            kind = 0
            if b"@" in name:
                r = name.split(b"@", 1)[1]
                kind = {b"aggTrade": K["aggTrade"], b"trade": K["trade"], b"bookTicker": K["bookTicker"]}.get(r, 0)
                if r.startswith(b"depth") and (len(r) == 5 or r[5:6] == b"@"):
                    kind = K["depthUpdate"]
                elif r.startswith(b"kline_"):
                    kind = K["kline"]
            if not kind:
                self.err("unknown stream", "stream", t[b"stream"].off)
            data = self.req(t, "data", top)
            if data.t != "obj":
                self.err("expected an object", "data", data.off)
        else:
            data = top
            if b"e" in t:
                e = self.s(t[b"e"], "e")
                kind = {b"aggTrade": K["aggTrade"], b"trade": K["trade"], b"depthUpdate": K["depthUpdate"],
                        b"kline": K["kline"]}.get(e, 0)
                if not kind:
                    self.err("unknown event type", "e", t[b"e"].off)
            elif b"id" in t:
                kind = K["subscription"]
            else:
                kind = K["bookTicker"]
        self.last_kind = kind
        d = self.members(data)
        if kind in (K["aggTrade"], K["trade"]):
            self.lookup(self.req(d, "s", data), "s")
            ts = self.ms(self.req(d, "T", data), "T")
            idf = "a" if kind == K["aggTrade"] else "t"
            tid = self.u64(self.req(d, idf, data), idf)
            px = self.fx_str(self.req(d, "p", data), "p", True)
            sz = self.fx_str(self.req(d, "q", data), "q", False)
            m = self.boolean(self.req(d, "m", data), "m")
            self.trade(ts, px, sz, tid, tid, SIDE_A if m else SIDE_B, 0)
        elif kind == K["bookTicker"]:
            self.lookup(self.req(d, "s", data), "s")
            if b"E" in d:
                ts, flags = self.ms(d[b"E"], "E"), 0
            else:
                ts, flags = self.ts_recv, F_TS_IS_RECV
            u = self.u64(self.req(d, "u", data), "u")
            bp = self.fx_str(self.req(d, "b", data), "b", True)
            bs = self.fx_str(self.req(d, "B", data), "B", False)
            ap = self.fx_str(self.req(d, "a", data), "a", True)
            as_ = self.fx_str(self.req(d, "A", data), "A", False)
            self.first_seq = self.last_seq = u
            self.bbo(ts, bp, bs, ap, as_, u, flags)
        elif kind == K["depthUpdate"]:
            self.lookup(self.req(d, "s", data), "s")
            ts = self.ms(self.req(d, "E", data), "E")
            U = self.u64(self.req(d, "U", data), "U")
            u = self.u64(self.req(d, "u", data), "u")
            vb = self.req(d, "b", data)
            va = self.req(d, "a", data)
            self.levels(vb, "b", SIDE_B, ts, u, 0)
            self.levels(va, "a", SIDE_A, ts, u, 0)
            self.set_last()
            self.first_seq, self.last_seq = U, u

    def levels(self, node: Node, field: str, side: int, ts: int, seq: int, flags: int) -> None:
        if node.t != "arr":
            self.err("expected an array", field, node.off)
        for lv in node.v:
            if lv.t != "arr":
                self.err("expected an array", field, lv.off)
            if len(lv.v) < 2:
                self.err("expected [price, quantity]", field, lv.off)
            px = self.fx_str(lv.v[0], field, True)
            sz = self.fx_str(lv.v[1], field, False)
            self.level(ts, px, sz, seq, side, flags)

    def decode_snapshot(self, body, venue_symbol, ts_recv: int) -> int:
        k = _as_bytes(venue_symbol)
        self._reset()
        self.ts_recv = ts_recv
        iid = self.syms.get(k.upper())
        if iid is None:
            self.err(f"unknown symbol {k.decode('utf-8', 'replace')!r}", "symbol", -1, UnknownInstrumentError)
        try:
            self.instrument_id = iid
            top = self._parse(_as_bytes(body))
            if top.t != "obj":
                self.err("expected a JSON object", None, top.off)
            d = self.members(top)
            self.last_kind = K["depthSnapshot"]
            uid = self.u64(self.req(d, "lastUpdateId", top), "lastUpdateId")
            vb = self.req(d, "bids", top)
            va = self.req(d, "asks", top)
            flags = F_SNAPSHOT | F_TS_IS_RECV
            self.clear(ts_recv, uid, flags)
            self.levels(vb, "bids", SIDE_B, ts_recv, uid, flags)
            self.levels(va, "asks", SIDE_A, ts_recv, uid, flags)
            self.set_last()
            self.first_seq = self.last_seq = uid
        except Exception:
            self._reset()
            raise
        self._counts[self.last_kind] += 1
        return len(self.recs)


class RefKrakenCodec(_Ref):
    VENUE = "KRAKEN"
    EVENTS = {b"heartbeat": "heartbeat", b"systemStatus": "status", b"subscriptionStatus": "subscription",
              b"pong": "pong", b"error": "error"}

    def _decode(self, b: bytes) -> None:
        top = self._parse(b)
        if top.t == "obj":
            t = self.members(top)
            ev = self.req(t, "event", top)
            name = self.EVENTS.get(self.s(ev, "event"))
            if name is None:
                self.err("unknown event", "event", ev.off)
            self.last_kind = K[name]
            return
        if top.t != "arr":
            self.err("expected a JSON object or array", None, top.off)
        el = top.v
        if len(el) < 4:
            self.err("expected [channelID, payload..., channelName, pair]", None, top.off)
        chan = self.s(el[-2], "channelName")
        if chan.startswith(b"book"):
            kind = K["book"]
        elif chan in (b"trade", b"ticker", b"spread"):
            kind = K[chan.decode()]
        elif chan.startswith(b"ohlc"):
            self.last_kind = K["ohlc"]
            return
        else:
            self.err("unknown channel", "channelName", el[-2].off)
        self.last_kind = kind
        self.lookup(el[-1], "pair")
        npay = len(el) - 3
        if npay != 1 and not (kind == K["book"] and npay == 2):
            self.err("unexpected number of payloads", None, top.off)
        if kind == K["book"]:
            self.book(el[1:1 + npay])
        elif kind == K["trade"]:
            self.trades(el[1])
        elif kind == K["ticker"]:
            self.ticker(el[1])
        else:
            self.spread(el[1])

    def book_levels(self, node: Node, field: str, side: int, flags: int) -> None:
        if node.t != "arr":
            self.err("expected an array", field, node.off)
        for lv in node.v:
            if lv.t != "arr":
                self.err("expected an array", field, lv.off)
            if len(lv.v) < 3:
                self.err("expected [price, volume, timestamp]", field, lv.off)
            px = self.fx_str(lv.v[0], field, True)
            sz = self.fx_str(lv.v[1], field, False)
            ts = self.fx_str(lv.v[2], field, False)
            self.level(ts, px, sz, 0, side, flags)

    def book(self, pays: list) -> None:
        snap = False
        for k, pay in enumerate(pays):
            if pay.t != "obj":
                self.err("expected an object", "payload", pay.off)
            d = self.members(pay)
            if k == 0:
                snap = b"as" in d or b"bs" in d
                self.last_kind = K["bookSnapshot"] if snap else K["book"]
                if snap:
                    self.clear(self.ts_recv, 0, F_SNAPSHOT | F_TS_IS_RECV)
            if snap:
                if b"as" in d:
                    self.book_levels(d[b"as"], "as", SIDE_A, F_SNAPSHOT)
                if b"bs" in d:
                    self.book_levels(d[b"bs"], "bs", SIDE_B, F_SNAPSHOT)
            else:
                if b"a" in d:
                    self.book_levels(d[b"a"], "a", SIDE_A, 0)
                if b"b" in d:
                    self.book_levels(d[b"b"], "b", SIDE_B, 0)
                if b"c" in d:
                    c = self.s(d[b"c"], "c")
                    if not re.fullmatch(rb"[0-9]{1,10}", c) or int(c) > 0xFFFFFFFF:
                        self.err("invalid checksum", "c", d[b"c"].off)
                    self.checksum = int(c)
        self.set_last()

    def trades(self, node: Node) -> None:
        if node.t != "arr":
            self.err("expected an array", "trade", node.off)
        for tr in node.v:
            if tr.t != "arr":
                self.err("expected an array", "trade", tr.off)
            if len(tr.v) < 4:
                self.err("expected [price, volume, time, side, ...]", "trade", tr.off)
            px = self.fx_str(tr.v[0], "trade", True)
            sz = self.fx_str(tr.v[1], "trade", False)
            ts = self.fx_str(tr.v[2], "trade", False)
            side = {b"b": SIDE_B, b"s": SIDE_A}.get(self.s(tr.v[3], "trade"))
            if side is None:
                self.err("invalid side", "trade", tr.v[3].off)
            self.trade(ts, px, sz, 0, 0, side, 0)

    def ticker_side(self, node: Node, field: str):
        if node.t != "arr":
            self.err("expected an array", field, node.off)
        if len(node.v) < 3:
            self.err("expected [price, wholeLotVolume, lotVolume]", field, node.off)
        return self.fx_str(node.v[0], field, True), self.fx_str(node.v[2], field, False)

    def ticker(self, node: Node) -> None:
        if node.t != "obj":
            self.err("expected an object", "ticker", node.off)
        d = self.members(node)
        bp, bs = self.ticker_side(self.req(d, "b", node), "b")
        ap, as_ = self.ticker_side(self.req(d, "a", node), "a")
        self.bbo(self.ts_recv, bp, bs, ap, as_, 0, F_TS_IS_RECV)

    def spread(self, node: Node) -> None:
        if node.t != "arr":
            self.err("expected an array", "spread", node.off)
        if len(node.v) < 5:
            self.err("expected [bid, ask, timestamp, bidVolume, askVolume]", "spread", node.off)
        el = node.v
        bp = self.fx_str(el[0], "spread", True)
        ap = self.fx_str(el[1], "spread", True)
        ts = self.fx_str(el[2], "spread", False)
        bs = self.fx_str(el[3], "spread", False)
        as_ = self.fx_str(el[4], "spread", False)
        self.bbo(ts, bp, bs, ap, as_, 0, 0)


class RefKrakenFuturesCodec(_Ref):
    VENUE = "KRAKEN_FUTURES"
    EVENTS = {b"info": "info", b"subscribed": "subscription", b"unsubscribed": "subscription",
              b"subscribed_failed": "subscription", b"unsubscribed_failed": "subscription",
              b"error": "error", b"alert": "error", b"pong": "pong"}
    FEEDS = {b"book": "book", b"book_snapshot": "bookSnapshot", b"trade": "trade",
             b"trade_snapshot": "tradeSnapshot", b"ticker_lite": "tickerLite", b"ticker": "ticker",
             b"heartbeat": "heartbeat"}

    def side(self, node: Node) -> int:
        side = {b"buy": SIDE_B, b"sell": SIDE_A}.get(self.s(node, "side"))
        if side is None:
            self.err("invalid side", "side", node.off)
        return side

    def kf_trade(self, d: dict, obj: Node, flags: int) -> int:
        side = self.side(self.req(d, "side", obj))
        seq = self.u64(self.req(d, "seq", obj), "seq")
        ts = self.ms(self.req(d, "time", obj), "time")
        px = self.fx_num(self.req(d, "price", obj), "price", True)
        sz = self.fx_num(self.req(d, "qty", obj), "qty", False)
        self.trade(ts, px, sz, seq, seq, side, flags)
        return seq

    def _decode(self, b: bytes) -> None:
        top = self._parse(b)
        if top.t != "obj":
            self.err("expected a JSON object", None, top.off)
        d = self.members(top)
        if b"event" in d:
            name = self.EVENTS.get(self.s(d[b"event"], "event"))
            if name is None:
                self.err("unknown event", "event", d[b"event"].off)
            self.last_kind = K[name]
            return
        feed = self.req(d, "feed", top)
        name = self.FEEDS.get(self.s(feed, "feed"))
        if name is None:
            self.err("unknown feed", "feed", feed.off)
        kind = self.last_kind = K[name]
        if name == "heartbeat":
            return
        self.lookup(self.req(d, "product_id", top), "product_id")
        if name == "book":
            side = self.side(self.req(d, "side", top))
            seq = self.u64(self.req(d, "seq", top), "seq")
            ts = self.ms(self.req(d, "timestamp", top), "timestamp")
            px = self.fx_num(self.req(d, "price", top), "price", True)
            sz = self.fx_num(self.req(d, "qty", top), "qty", False)
            self.level(ts, px, sz, seq, side, F_LAST)
            self.first_seq = self.last_seq = seq
        elif name == "bookSnapshot":
            seq = self.u64(self.req(d, "seq", top), "seq")
            ts = self.ms(self.req(d, "timestamp", top), "timestamp")
            vb = self.req(d, "bids", top)
            va = self.req(d, "asks", top)
            self.clear(ts, seq, F_SNAPSHOT)
            for node, field, side in ((vb, "bids", SIDE_B), (va, "asks", SIDE_A)):
                if node.t != "arr":
                    self.err("expected an array", field, node.off)
                for lv in node.v:
                    if lv.t != "obj":
                        self.err("expected an object", field, lv.off)
                    ld = self.members(lv)
                    px = self.fx_num(self.req(ld, "price", lv), "price", True)
                    sz = self.fx_num(self.req(ld, "qty", lv), "qty", False)
                    self.level(ts, px, sz, seq, side, F_SNAPSHOT)
            self.set_last()
            self.first_seq = self.last_seq = seq
        elif name == "trade":
            seq = self.kf_trade(d, top, 0)
            self.first_seq = self.last_seq = seq
        elif name == "tradeSnapshot":
            node = self.req(d, "trades", top)
            if node.t != "arr":
                self.err("expected an array", "trades", node.off)
            for k, tr in enumerate(node.v):
                if tr.t != "obj":
                    self.err("expected an object", "trades", tr.off)
                seq = self.kf_trade(self.members(tr), tr, F_SNAPSHOT)
                if k == 0:
                    self.first_seq = seq
                self.last_seq = seq
        else:
            bp = self.fx_num(self.req(d, "bid", top), "bid", True, UNDEF_PRICE)
            ap = self.fx_num(self.req(d, "ask", top), "ask", True, UNDEF_PRICE)
            if kind == K["tickerLite"]:
                self.bbo(self.ts_recv, bp, 0, ap, 0, 0, F_TS_IS_RECV)
                return
            bs = self.fx_num(self.req(d, "bid_size", top), "bid_size", False, 0)
            as_ = self.fx_num(self.req(d, "ask_size", top), "ask_size", False, 0)
            ts = self.ms(self.req(d, "time", top), "time")
            self.bbo(ts, bp, bs, ap, as_, 0, 0)


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
