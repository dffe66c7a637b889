"""Pure-Python oracle of ``BinanceFuturesCodec`` (dm/venues/binance_futures/_codec.pyx), for tests
only: the same frames give the same records, kinds, sequences (``prev_seq``), values rejected
alone and errors."""
from __future__ import annotations

import re
import struct

from dm.codec_ref import (BBO, DELTA, F_SNAPSHOT, F_TS_IS_RECV, I64_MAX, RTYPE_BBO, RTYPE_BOOK_DELTA, RTYPE_TRADE,
                          SIDE_A, SIDE_B, TRADE, U64_MAX, UNDEF_PRICE, K, Node, _FixedError, as_bytes, fixed)
from dm.errors import FixedPointError, UnknownInstrumentError
from dm.venues.binance.codec_ref import RefBinanceCodec

RTYPE_STATISTICS = 0xE7
STAT = struct.Struct("<BBHIQQQqqIiHHBBB17x")   # 80 B, dm/_records.pxd StatRecord
BAR = struct.Struct("<BBHIQqqqqQIIBB6x")       # 72 B, dm/_records.pxd BarRecord
RTYPE_BAR = 0xE4
_UNIT = {b"s": 1, b"m": 60, b"h": 3600, b"d": 86400, b"w": 604800, b"M": 0}
UNDEF_TS = U64_MAX
ST_MARK, ST_INDEX, ST_FUNDING, ST_LIQUIDATION, ST_EST_SETTLE = 1001, 1002, 1003, 1005, 1006
MAX_VALUE_ERRS = 16

_STREAMS = {b"aggTrade": K["aggTrade"], b"bookTicker": K["bookTicker"]}
_EVENTS = {b"aggTrade": K["aggTrade"], b"bookTicker": K["bookTicker"], b"depthUpdate": K["depthUpdate"],
           b"kline": K["kline"], b"markPriceUpdate": K["ticker"], b"forceOrder": K["liquidation"]}


class RefBinanceFuturesCodec(RefBinanceCodec):
    VENUE = "BINANCE_FUTURES"

    def __init__(self, publisher_id: int, symbols: dict | None = None):
        self.sp: dict[bytes, int] = {}
        self.value_errors: list = []
        self.value_error_count = 0
        self.size_precision = 9
        self.prev_seq = 0
        super().__init__(publisher_id, symbols)

    def add_symbol(self, venue_symbol, instrument_id: int, size_precision: int = 9) -> None:
        super().add_symbol(venue_symbol, instrument_id)
        self.sp[as_bytes(venue_symbol).upper()] = size_precision

    def _reset(self):
        super()._reset()
        self.size_precision = 9
        self.prev_seq = 0
        self.value_errors = []
        self.value_error_count = 0

    def lookup(self, node: Node, field: str) -> None:
        super().lookup(node, field)
        self.size_precision = self.sp[node.v.upper()]

    # -- values: parsed (int), rejected alone (None), or a malformed frame (raises)
    def _reject(self, field, reason, off):
        self.value_error_count += 1
        if len(self.value_errors) < MAX_VALUE_ERRS:
            self.value_errors.append((self.instrument_id, field, reason, off))
        return None

    def px(self, node: Node, field: str):
        raw = self.s(node, field)
        try:
            return fixed(raw, True)
        except _FixedError as e:
            if str(e) == "invalid decimal":
                self.err(str(e), field, node.off, FixedPointError)
            return self._reject(field, str(e), node.off)

    def sz(self, node: Node, field: str):
        raw = self.s(node, field)
        try:
            return fixed(raw, False, self.size_precision, size=True)
        except _FixedError as e:
            if str(e) == "invalid decimal":
                self.err(str(e), field, node.off, FixedPointError)
            return self._reject(field, str(e), node.off)

    # -- records at the frame instrument's size_precision
    def trade(self, ts_event, px, sz, tid, seq, side, flags):
        self.recs.append(TRADE.pack(16, RTYPE_TRADE, self.publisher_id, self.instrument_id, ts_event,
                                    self.ts_recv, px, sz, tid, seq, side, flags, self.size_precision))

    def bbo(self, ts_event, bp, bs, ap, as_, seq, flags):
        self.recs.append(BBO.pack(20, RTYPE_BBO, self.publisher_id, self.instrument_id, ts_event,
                                  self.ts_recv, bp, ap, bs, as_, seq, 0, 0, flags, self.size_precision))

    def delta(self, ts_event, px, sz, seq, side, action, flags):
        self.recs.append(DELTA.pack(14, RTYPE_BOOK_DELTA, self.publisher_id, self.instrument_id, ts_event,
                                    self.ts_recv, px, sz, seq, side, action, flags, self.size_precision))

    def stat(self, ts_event, ts_ref, price, stat_type, quantity=I64_MAX, flags=0):
        self.recs.append(STAT.pack(20, RTYPE_STATISTICS, self.publisher_id, self.instrument_id, ts_event,
                                   self.ts_recv, ts_ref, price, quantity, 0, 0, stat_type, 0, 1, flags,
                                   self.size_precision))

    def levels(self, node: Node, field: str, side: int, ts: int, seq: int, flags: int) -> None:
        if node.t != "arr":
            self.err("expected an array", field, node.off)
        for lv in node.v:
            if lv.t != "arr":
                self.err("expected an array", field, lv.off)
            if len(lv.v) < 2:
                self.err("expected [price, quantity]", field, lv.off)
            px = self.px(lv.v[0], field)
            sz = self.sz(lv.v[1], field)
            if px is not None and sz is not None:
                self.level(ts, px, sz, seq, side, flags)

    def _time(self, d: dict) -> tuple[int, int]:
        if b"T" in d:
            return self.ms(d[b"T"], "T"), 0
        if b"E" in d:
            return self.ms(d[b"E"], "E"), 0
        return self.ts_recv, F_TS_IS_RECV

    # -- frames
    def _decode(self, b: bytes) -> None:
        top = self._parse(b)
        if top.t != "obj":
            self.err("expected a JSON object", None, top.off)
        t = self.members(top)
        if b"stream" in t:
            name = self.s(t[b"stream"], "stream")
            kind = 0
            if name == b"!forceOrder@arr":
                kind = K["liquidation"]
            elif b"@" in name:
                r = name.split(b"@", 1)[1]
                kind = _STREAMS.get(r, 0)
                if r.startswith(b"depth"):
                    kind = K["depthUpdate"]
                elif r.startswith(b"kline_"):
                    kind = K["kline"]
                elif r.startswith(b"markPrice") and (len(r) == 9 or r[9:10] == b"@"):
                    kind = K["ticker"]
                elif r == b"forceOrder":
                    kind = K["liquidation"]
            if not kind:
                self.err("unknown stream", "stream", t[b"stream"].off)
            data = self.req(t, "data", top)
            if data.t != "obj":
                self.err("expected an object", "data", data.off)
        else:
            data = top
            if b"e" in t:
                kind = _EVENTS.get(self.s(t[b"e"], "e"), 0)
                if not kind:
                    self.err("unknown event type", "e", t[b"e"].off)
            elif b"id" in t:
                kind = K["subscription"]
            else:
                self.err("missing field", "e", top.off)
        self.last_kind = kind
        d = self.members(data)
        if kind == K["aggTrade"]:
            self.lookup(self.req(d, "s", data), "s")
            ts = self.ms(self.req(d, "T", data), "T")
            tid = self.u64(self.req(d, "a", data), "a")
            px = self.px(self.req(d, "p", data), "p")
            sz = self.sz(self.req(d, "q", data), "q")
            m = self.boolean(self.req(d, "m", data), "m")
            if px is not None and sz is not None:
                self.trade(ts, px, sz, tid, tid, SIDE_A if m else SIDE_B, 0)
        elif kind == K["bookTicker"]:
            self.lookup(self.req(d, "s", data), "s")
            ts, flags = self._time(d)
            u = self.u64(self.req(d, "u", data), "u")
            bp = self.px(self.req(d, "b", data), "b")
            bs = self.sz(self.req(d, "B", data), "B")
            if bp is None or bs is None:
                bp, bs = UNDEF_PRICE, 0
            ap = self.px(self.req(d, "a", data), "a")
            as_ = self.sz(self.req(d, "A", data), "A")
            if ap is None or as_ is None:
                ap, as_ = UNDEF_PRICE, 0
            self.first_seq = self.last_seq = u
            self.bbo(ts, bp, bs, ap, as_, u, flags)
        elif kind == K["depthUpdate"]:
            self.lookup(self.req(d, "s", data), "s")
            if b"T" not in d and b"E" not in d:
                self.err("missing field", "E", data.off)
            ts, flags = self._time(d)
            U = self.u64(self.req(d, "U", data), "U")
            u = self.u64(self.req(d, "u", data), "u")
            pu = self.u64(self.req(d, "pu", data), "pu")
            vb = self.req(d, "b", data)
            va = self.req(d, "a", data)
            self.levels(vb, "b", SIDE_B, ts, u, 0)
            self.levels(va, "a", SIDE_A, ts, u, 0)
            self.set_last()
            self.first_seq, self.last_seq, self.prev_seq = U, u, pu
        elif kind == K["ticker"]:
            self.lookup(self.req(d, "s", data), "s")
            ts = self.ms(self.req(d, "E", data), "E")
            nft = UNDEF_TS
            if b"T" in d:
                nft = self.ms(d[b"T"], "T") or UNDEF_TS
            self._stat(self.req(d, "p", data), "p", ts, UNDEF_TS, ST_MARK)
            self._stat(d.get(b"i"), "i", ts, UNDEF_TS, ST_INDEX)
            self._stat(d.get(b"P"), "P", ts, UNDEF_TS, ST_EST_SETTLE)
            self._stat(d.get(b"r"), "r", ts, nft, ST_FUNDING)
        elif kind == K["kline"]:
            self._kline(d, data)
        elif kind == K["liquidation"]:
            self._liquidation(d, data)

    def _liquidation(self, d: dict, data: Node) -> None:
        oo = self.req(d, "o", data)
        if oo.t != "obj":
            self.err("expected an object", "o", oo.off)
        o = self.members(oo)
        self.lookup(self.req(o, "s", oo), "s")
        sn = self.req(o, "S", oo)
        side = {b"BUY": SIDE_B, b"SELL": SIDE_A}.get(self.s(sn, "S"))
        if side is None:
            self.err("invalid side", "S", sn.off)
        ts = self.ms(self.req(o, "T", oo), "T")
        px = self.px(self.req(o, "ap", oo), "ap")
        qty = self.sz(self.req(o, "z", oo), "z")
        if px is not None and qty is not None:
            self.stat(ts, UNDEF_TS, px, ST_LIQUIDATION, qty, side)

    def _kline(self, d: dict, data: Node) -> None:
        self.lookup(self.req(d, "s", data), "s")
        ko = self.req(d, "k", data)
        if ko.t != "obj":
            self.err("expected an object", "k", ko.off)
        k = self.members(ko)
        closed = self.boolean(self.req(k, "x", ko), "x")
        ts = self.ms(self.req(k, "t", ko), "t")
        iv = self.req(k, "i", ko)
        m = re.fullmatch(rb"([0-9]{1,3})([smhdwM])", self.s(iv, "i"))
        if not m:
            self.err("unknown interval", "i", iv.off)
        ivl = int(m.group(1)) * _UNIT[m.group(2)]
        pxs = [self.px(self.req(k, f, ko), f) for f in ("o", "h", "l", "c")]
        vol = self.sz(self.req(k, "v", ko), "v")
        n = self.u64(self.req(k, "n", ko), "n")
        if closed and None not in pxs and vol is not None:
            self.recs.append(BAR.pack(18, RTYPE_BAR, self.publisher_id, self.instrument_id, ts, *pxs, vol, ivl,
                                      min(n, 0xFFFFFFFF), 0, self.size_precision))

    def _stat(self, node, field, ts, ts_ref, stat_type) -> None:
        if node is None or (node.t == "str" and node.v == b""):
            return
        px = self.px(node, field)
        if px is not None:
            self.stat(ts, ts_ref, px, stat_type)

    def decode_snapshot(self, body, venue_symbol, ts_recv: int) -> int:
        k = as_bytes(venue_symbol)
        self._reset()
        self.ts_recv = ts_recv
        iid = self.syms.get(k.upper())
        if iid is None:
            self.err(f"unknown symbol {k.decode('utf-8', 'replace')!r}", "symbol", -1, UnknownInstrumentError)
        try:
            self.instrument_id = iid
            self.size_precision = self.sp[k.upper()]
            top = self._parse(as_bytes(body))
            if top.t != "obj":
                self.err("expected a JSON object", None, top.off)
            d = self.members(top)
            self.last_kind = K["depthSnapshot"]
            uid = self.u64(self.req(d, "lastUpdateId", top), "lastUpdateId")
            if b"T" in d:
                ts, flags = self.ms(d[b"T"], "T"), F_SNAPSHOT
            else:
                ts, flags = ts_recv, F_SNAPSHOT | F_TS_IS_RECV
            vb = self.req(d, "bids", top)
            va = self.req(d, "asks", top)
            self.clear(ts, uid, flags)
            self.levels(vb, "bids", SIDE_B, ts, uid, flags)
            self.levels(va, "asks", SIDE_A, ts, uid, flags)
            self.set_last()
            self.first_seq = self.last_seq = uid
        except Exception:
            self._reset()
            raise
        self._counts[self.last_kind] += 1
        return len(self.recs)
