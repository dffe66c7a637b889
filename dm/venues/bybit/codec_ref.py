"""Pure-Python oracle of ``BybitCodec`` (dm/venues/bybit/_codec.pyx), for tests only: the same
frames give the same records, kinds, sequences, ticker state, values rejected alone and errors."""
from __future__ import annotations

import struct

from dm.codec_ref import (BBO, DELTA, F_SNAPSHOT, I64_MAX, RTYPE_BBO, RTYPE_BOOK_DELTA, RTYPE_TRADE, SIDE_A, SIDE_B,
                          TRADE, U64_MAX, UNDEF_PRICE, K, Node, RefCodec, _FixedError, as_bytes, fixed)
from dm.errors import FixedPointError

RTYPE_STATISTICS = 0xE7
STAT = struct.Struct("<BBHIQQQqqIiHHBBB17x")   # 80 B, dm/_records.pxd StatRecord
assert STAT.size == 80
UNDEF_TS = U64_MAX
F_PUBLISHER_SPECIFIC = 1 << 1
ST_OPEN_INTEREST, ST_MARK, ST_INDEX, ST_FUNDING, ST_EST_SETTLE = 9, 1001, 1002, 1003, 1006
MAX_VALUE_ERRS = 16
_ABSENT, _REJECTED = "absent", "rejected"


def trade_id(raw: bytes) -> int:
    """``i`` text → trade id (see ``BybitCodec``): its value when 1..19 digits <= i64 max, else
    FNV-1a 64 of the text with the top bit cleared."""
    if 1 <= len(raw) <= 19 and raw.isdigit() and int(raw) <= I64_MAX:
        return int(raw)
    h = 14695981039346656037
    for c in raw:
        h = ((h ^ c) * 1099511628211) & U64_MAX
    return h & I64_MAX


class RefBybitCodec(RefCodec):
    VENUE = "BYBIT"

    def __init__(self, publisher_id: int, symbols: dict | None = None):
        self.sp: dict[bytes, int] = {}
        self.tickers: dict[int, list] = {}
        self.value_errors: list = []
        self.value_error_count = 0
        self.size_precision = 9
        super().__init__(publisher_id, symbols)

    def add_symbol(self, venue_symbol, instrument_id: int, size_precision: int = 9) -> None:
        super().add_symbol(venue_symbol, instrument_id)
        self.sp[as_bytes(venue_symbol).upper()] = size_precision

    def ticker_state(self, instrument_id: int):
        st = self.tickers.get(instrument_id)
        return None if st is None else tuple(st)

    def _reset(self):
        super()._reset()
        self.size_precision = 9
        self.value_errors = []
        self.value_error_count = 0

    def lookup(self, node: Node, field: str) -> None:
        super().lookup(node, field)
        raw = node.v
        self.size_precision = self.sp[raw.upper()]

    # -- values: parsed, rejected alone, or a malformed frame
    def _reject(self, field, reason, off):
        self.value_error_count += 1
        if len(self.value_errors) < MAX_VALUE_ERRS:
            self.value_errors.append((self.instrument_id, field, reason, off))
        return _REJECTED

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

    def opt(self, d: dict, key: str, fn):
        node = d.get(key.encode())
        if node is None or (node.t == "str" and node.v == b""):
            return _ABSENT
        return fn(node, key)

    def ms_any(self, node: Node, field: str):
        if node.t != "str":
            return self.ms(node, field)
        if node.v == b"":
            return _ABSENT
        if not node.v.isdigit():
            self.err("expected milliseconds", field, node.off)
        ns = int(node.v) * 1_000_000
        if ns > U64_MAX:
            self.err("timestamp out of range", field, node.off)
        return ns

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

    def stat(self, ts_event, ts_ref, price, quantity, stat_type):
        self.recs.append(STAT.pack(20, RTYPE_STATISTICS, self.publisher_id, self.instrument_id, ts_event,
                                   self.ts_recv, ts_ref, price, quantity, 0, 0, stat_type, 0, 1, 0,
                                   self.size_precision))

    # -- frames
    def _type(self, d, top) -> bool:
        node = self.req(d, "type", top)
        t = self.s(node, "type")
        if t == b"snapshot":
            return True
        if t == b"delta":
            return False
        self.err("unknown type", "type", node.off)

    def _data_obj(self, d, top) -> tuple[Node, dict]:
        node = self.req(d, "data", top)
        if node.t != "obj":
            self.err("expected an object", "data", node.off)
        return node, self.members(node)

    def _levels(self, node: Node, field: str, side: int, ts: int, u: int, flags: int) -> None:
        if node.t != "arr":
            self.err("expected an array", field, node.off)
        for lv in node.v:
            if lv.t != "arr":
                self.err("expected an array", field, lv.off)
            if len(lv.v) < 2:
                self.err("expected [price, size]", field, lv.off)
            px = self.px(lv.v[0], field)
            sz = self.sz(lv.v[1], field)
            if px is not _REJECTED and sz is not _REJECTED:
                self.level(ts, px, sz, u, side, flags)

    def _book(self, d, top) -> None:
        snap = self._type(d, top)
        ts = self.ms(self.req(d, "ts", top), "ts")
        if b"cts" in d:
            ts = self.ms(d[b"cts"], "cts")
        node, dd = self._data_obj(d, top)
        self.lookup(self.req(dd, "s", node), "s")
        u = self.u64(self.req(dd, "u", node), "u")
        vb = self.req(dd, "b", node)
        va = self.req(dd, "a", node)
        flags = 0
        if snap or u == 1:
            self.last_kind = K["bookSnapshot"]
            flags = F_SNAPSHOT
            self.clear(ts, u, flags)
        else:
            self.last_kind = K["book"]
        self._levels(vb, "b", SIDE_B, ts, u, flags)
        self._levels(va, "a", SIDE_A, ts, u, flags)
        self.set_last()
        self.first_seq = self.last_seq = u

    def _trades(self, d, top) -> None:
        node = self.req(d, "data", top)
        if node.t != "arr":
            self.err("expected an array", "data", node.off)
        for k, tr in enumerate(node.v):
            if tr.t != "obj":
                self.err("expected an object", "data", tr.off)
            t = self.members(tr)
            self.lookup(self.req(t, "s", tr), "s")
            ts = self.ms(self.req(t, "T", tr), "T")
            sn = self.req(t, "S", tr)
            side = {b"Buy": SIDE_B, b"Sell": SIDE_A}.get(self.s(sn, "S"))
            if side is None:
                self.err("invalid side", "S", sn.off)
            tid = trade_id(self.s(self.req(t, "i", tr), "i"))
            seq = self.u64(t[b"seq"], "seq") if b"seq" in t else 0
            bt = self.boolean(t[b"BT"], "BT") if b"BT" in t else False
            px = self.px(self.req(t, "p", tr), "p")
            sz = self.sz(self.req(t, "v", tr), "v")
            if px is not _REJECTED and sz is not _REJECTED:
                self.trade(ts, px, sz, tid, seq, side, F_PUBLISHER_SPECIFIC if bt else 0)
            if k == 0:
                self.first_seq = seq
            self.last_seq = seq

    def _ticker(self, d, top) -> None:
        snap = self._type(d, top)
        ts = self.ms(self.req(d, "ts", top), "ts")
        cs = self.u64(d[b"cs"], "cs") if b"cs" in d else 0
        node, dd = self._data_obj(d, top)
        self.lookup(self.req(dd, "symbol", node), "symbol")
        bp = self.opt(dd, "bid1Price", self.px)
        bs = self.opt(dd, "bid1Size", self.sz)
        ap = self.opt(dd, "ask1Price", self.px)
        as_ = self.opt(dd, "ask1Size", self.sz)
        mark = self.opt(dd, "markPrice", self.px)
        index = self.opt(dd, "indexPrice", self.px)
        fund = self.opt(dd, "fundingRate", self.px)
        nf = self.ms_any(dd[b"nextFundingTime"], "nextFundingTime") if b"nextFundingTime" in dd else None
        oi = self.opt(dd, "openInterest", self.sz)
        pdp = self.opt(dd, "predictedDeliveryPrice", self.px)
        # every field parsed: update the state, then emit
        st = self.tickers.setdefault(self.instrument_id, [UNDEF_PRICE, 0, UNDEF_PRICE, 0, UNDEF_TS])
        if snap:
            st[:] = [UNDEF_PRICE, 0, UNDEF_PRICE, 0, UNDEF_TS]
        if nf is not None:
            st[4] = UNDEF_TS if nf is _ABSENT else nf
        self.last_kind = K["ticker"]
        self.first_seq = self.last_seq = cs
        present = [k.encode() in dd for k in ("bid1Price", "bid1Size", "ask1Price", "ask1Size")]
        if any(present):
            for (pv, sv, pres_p, pres_s, ip, is_) in ((bp, bs, present[0], present[1], 0, 1),
                                                        (ap, as_, present[2], present[3], 2, 3)):
                if pres_p:
                    st[ip] = pv if isinstance(pv, int) else UNDEF_PRICE
                if pres_s:
                    st[is_] = sv if isinstance(sv, int) else 0
                if pv is _REJECTED or sv is _REJECTED:
                    st[ip], st[is_] = UNDEF_PRICE, 0
            self.bbo(ts, st[0], st[1], st[2], st[3], cs, 0)
        for v, stype, ref in ((mark, ST_MARK, UNDEF_TS), (index, ST_INDEX, UNDEF_TS), (fund, ST_FUNDING, st[4])):
            if isinstance(v, int):
                self.stat(ts, ref, v, I64_MAX, stype)
        if isinstance(oi, int):
            self.stat(ts, UNDEF_TS, UNDEF_PRICE, oi, ST_OPEN_INTEREST)
        if isinstance(pdp, int):
            self.stat(ts, UNDEF_TS, pdp, I64_MAX, ST_EST_SETTLE)

    def _decode(self, b: bytes) -> None:
        top = self._parse(b)
        if top.t != "obj":
            self.err("expected a JSON object", None, top.off)
        d = self.members(top)
        if b"topic" not in d:
            opn = self.req(d, "op", top)
            op = self.s(opn, "op")
            if op in (b"ping", b"pong"):
                self.last_kind = K["pong"]
                return
            if op not in (b"subscribe", b"unsubscribe"):
                self.err("unknown op", "op", opn.off)
            ok = self.boolean(self.req(d, "success", top), "success")
            self.last_kind = K["subscription"] if ok else K["error"]
            return
        tn = d[b"topic"]
        t = self.s(tn, "topic")
        if t.startswith(b"orderbook.") and len(t) > 10:
            self._book(d, top)
        elif t.startswith(b"publicTrade.") and len(t) > 12:
            self.last_kind = K["trade"]
            self._trades(d, top)
        elif t.startswith(b"tickers.") and len(t) > 8:
            self._ticker(d, top)
        elif t.startswith(b"kline.") and len(t) > 6:
            self.last_kind = K["kline"]
        else:
            self.err("unknown topic", "topic", tn.off)
