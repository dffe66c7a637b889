"""Pure-Python oracle of ``DeribitCodec`` (dm/venues/deribit/_codec.pyx), for tests only: the same
frames give the same records, kinds, sequences, values rejected alone and errors."""
from __future__ import annotations

import struct

from dm.codec_ref import (BBO, DELTA, F_SNAPSHOT, I64_MAX, RTYPE_BBO, RTYPE_BOOK_DELTA, RTYPE_TRADE, SIDE_A, SIDE_B,
                          TRADE, U64_MAX, UNDEF_PRICE, K, Node, RefCodec, _FixedError, as_bytes, fixed)
from dm.errors import FixedPointError

RTYPE_STATISTICS = 0xE7
STAT = struct.Struct("<BBHIQQQqqIiHHBBB17x")   # 80 B, dm/_records.pxd StatRecord
assert STAT.size == 80
UNDEF_TS = U64_MAX
ACT_ADD, ACT_MODIFY, ACT_CANCEL = ord("A"), ord("M"), ord("C")
ST_OPEN_INTEREST, ST_MARK, ST_INDEX, ST_FUNDING, ST_EST_SETTLE, ST_IV, ST_UNDERLYING = 9, 1001, 1002, 1003, 1006, 1007, 1008
MAX_VALUE_ERRS = 16
_ABSENT, _REJECTED = "absent", "rejected"
_ACTIONS = {b"new": ACT_ADD, b"change": ACT_MODIFY, b"delete": ACT_CANCEL}


def trade_id(raw: bytes) -> int:
    """``trade_id`` text → u64 (see ``DeribitCodec``): its value when 1..18 digits, else FNV-1a
    64 of the text with the top bit cleared."""
    if 1 <= len(raw) <= 18 and raw.isdigit():
        return int(raw)
    h = 14695981039346656037
    for c in raw:
        h = ((h ^ c) * 1099511628211) & U64_MAX
    return h & I64_MAX


class RefDeribitCodec(RefCodec):
    VENUE = "DERIBIT"

    def __init__(self, publisher_id: int, symbols: dict | None = None):
        self.sp: dict[bytes, int] = {}
        self.value_errors: list = []
        self.value_error_count = 0
        self.size_precision = 9
        super().__init__(publisher_id, symbols)

    def add_symbol(self, venue_symbol, instrument_id: int, size_precision: int = 9) -> None:
        super().add_symbol(venue_symbol, instrument_id)
        self.sp[as_bytes(venue_symbol).upper()] = size_precision

    def _reset(self):
        super()._reset()
        self.size_precision = 9
        self.value_errors = []
        self.value_error_count = 0

    def lookup(self, node: Node, field: str) -> None:
        super().lookup(node, field)
        self.size_precision = self.sp[node.v.upper()]

    # -- values: parsed, rejected alone, or a malformed frame
    def _reject(self, field, reason, off):
        self.value_error_count += 1
        if len(self.value_errors) < MAX_VALUE_ERRS:
            self.value_errors.append((self.instrument_id, field, reason, off))
        return _REJECTED

    def _num(self, node: Node, field: str, signed: bool, dp: int, size: bool):
        if node.t != "num":
            self.err("expected a number", field, node.off)
        try:
            return fixed(node.v, signed, dp, size=size)
        except _FixedError as e:
            if str(e) == "invalid decimal":
                self.err(str(e), field, node.off, FixedPointError)
            return self._reject(field, str(e), node.off)

    def px(self, node: Node, field: str):
        return self._num(node, field, True, 9, False)

    def sz(self, node: Node, field: str):
        return self._num(node, field, False, self.size_precision, True)

    def opt(self, d: dict, key: str, fn):
        node = d.get(key.encode())
        if node is None or node.t == "null":
            return _ABSENT
        return fn(node, key)

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

    def stat(self, ts_event, price, quantity, stat_type):
        self.recs.append(STAT.pack(20, RTYPE_STATISTICS, self.publisher_id, self.instrument_id, ts_event,
                                   self.ts_recv, UNDEF_TS, price, quantity, 0, 0, stat_type, 0, 1, 0,
                                   self.size_precision))

    # -- channels
    def _levels(self, node: Node, field: str, side: int, ts: int, seq: int, flags: int) -> None:
        if node.t != "arr":
            self.err("expected an array", field, node.off)
        for lv in node.v:
            if lv.t != "arr":
                self.err("expected an array", field, lv.off)
            if len(lv.v) != 3:
                self.err("expected [action, price, amount]", field, lv.off)
            action = _ACTIONS.get(self.s(lv.v[0], field))
            if action is None:
                self.err("unknown level action", field, lv.v[0].off)
            px = self.px(lv.v[1], field)
            sz = self.sz(lv.v[2], field)
            if px is not _REJECTED and sz is not _REJECTED:
                if action == ACT_CANCEL:
                    sz = 0
                elif sz == 0:
                    action = ACT_CANCEL
                self.delta(ts, px, sz, seq, side, action, flags)

    def _book(self, dn: Node) -> None:
        d = self.members(dn)
        tn = self.req(d, "type", dn)
        t = self.s(tn, "type")
        if t not in (b"snapshot", b"change"):
            self.err("unknown type", "type", tn.off)
        snap = t == b"snapshot"
        self.lookup(self.req(d, "instrument_name", dn), "instrument_name")
        ts = self.ms(self.req(d, "timestamp", dn), "timestamp")
        cid = self.u64(self.req(d, "change_id", dn), "change_id")
        prev = 0
        if not snap:
            prev = self.u64(self.req(d, "prev_change_id", dn), "prev_change_id")
        vb = self.req(d, "bids", dn)
        va = self.req(d, "asks", dn)
        flags = 0
        if snap:
            self.last_kind = K["bookSnapshot"]
            flags = F_SNAPSHOT
            self.clear(ts, cid, flags)
        else:
            self.last_kind = K["book"]
        self._levels(vb, "bids", SIDE_B, ts, cid, flags)
        self._levels(va, "asks", SIDE_A, ts, cid, flags)
        self.set_last()
        self.first_seq = cid if snap else prev
        self.last_seq = cid

    def _ticker(self, dn: Node) -> None:
        d = self.members(dn)
        self.lookup(self.req(d, "instrument_name", dn), "instrument_name")
        ts = self.ms(self.req(d, "timestamp", dn), "timestamp")
        bp = self.opt(d, "best_bid_price", self.px)
        bs = self.opt(d, "best_bid_amount", self.sz)
        ap = self.opt(d, "best_ask_price", self.px)
        as_ = self.opt(d, "best_ask_amount", self.sz)
        self.last_kind = K["ticker"]
        if not (isinstance(bp, int) and isinstance(bs, int) and bs):
            bp, bs = UNDEF_PRICE, 0
        if not (isinstance(ap, int) and isinstance(as_, int) and as_):
            ap, as_ = UNDEF_PRICE, 0
        if b"best_bid_price" in d or b"best_ask_price" in d:
            self.bbo(ts, bp, bs, ap, as_, 0, 0)
        for key, stype in (("mark_price", ST_MARK), ("index_price", ST_INDEX), ("underlying_price", ST_UNDERLYING),
                           ("mark_iv", ST_IV)):
            v = self.opt(d, key, self.px)
            if isinstance(v, int):
                self.stat(ts, v, I64_MAX, stype)
        oi = self.opt(d, "open_interest", self.sz)
        if isinstance(oi, int):
            self.stat(ts, UNDEF_PRICE, oi, ST_OPEN_INTEREST)
        for key, stype in (("estimated_delivery_price", ST_EST_SETTLE), ("current_funding", ST_FUNDING)):
            v = self.opt(d, key, self.px)
            if isinstance(v, int):
                self.stat(ts, v, I64_MAX, stype)

    def _trades(self, node: Node) -> None:
        if node.t != "arr":
            self.err("expected an array", "data", node.off)
        self.last_kind = K["trade"]
        for k, tr in enumerate(node.v):
            if tr.t != "obj":
                self.err("expected an object", "data", tr.off)
            t = self.members(tr)
            self.lookup(self.req(t, "instrument_name", tr), "instrument_name")
            ts = self.ms(self.req(t, "timestamp", tr), "timestamp")
            seq = self.u64(self.req(t, "trade_seq", tr), "trade_seq")
            tid = trade_id(self.s(self.req(t, "trade_id", tr), "trade_id"))
            dn = self.req(t, "direction", tr)
            side = {b"buy": SIDE_B, b"sell": SIDE_A}.get(self.s(dn, "direction"))
            if side is None:
                self.err("invalid direction", "direction", dn.off)
            px = self.px(self.req(t, "price", tr), "price")
            sz = self.sz(self.req(t, "amount", tr), "amount")
            if px is not _REJECTED and sz is not _REJECTED:
                self.trade(ts, px, sz, tid, seq, side, 0)
            if k == 0:
                self.first_seq = seq
            self.last_seq = seq

    def _decode(self, b: bytes) -> None:
        top = self._parse(b)
        if top.t != "obj":
            self.err("expected a JSON object", None, top.off)
        d = self.members(top)
        if b"method" not in d:
            rid = 0
            idn = d.get(b"id")
            if idn is not None and idn.t == "num" and idn.v[:1].isdigit():
                rid = self.u64(idn, "id")
            self.first_seq = self.last_seq = rid
            if b"error" in d:
                self.last_kind = K["error"]
                return
            res = self.req(d, "result", top)
            self.last_kind = K["subscription"] if res.t == "arr" else K["pong"]
            return
        mn = d[b"method"]
        method = self.s(mn, "method")
        pn = self.req(d, "params", top)
        if pn.t != "obj":
            self.err("expected an object", "params", pn.off)
        p = self.members(pn)
        if method == b"heartbeat":
            tn = self.req(p, "type", pn)
            t = self.s(tn, "type")
            if t == b"heartbeat":
                self.last_kind = K["heartbeat"]
            elif t == b"test_request":
                self.last_kind = K["heartbeat"]
                self.first_seq = self.last_seq = 1
            else:
                self.err("unknown heartbeat type", "type", tn.off)
            return
        if method != b"subscription":
            self.err("unknown method", "method", mn.off)
        cn = self.req(p, "channel", pn)
        ch = self.s(cn, "channel")
        if ch.startswith(b"book.") and len(ch) > 5:
            c = "book"
        elif ch.startswith(b"ticker.") and len(ch) > 7:
            c = "ticker"
        elif ch.startswith(b"trades.") and len(ch) > 7:
            c = "trades"
        else:
            self.err("unknown channel", "channel", cn.off)
        dn = self.req(p, "data", pn)
        if c == "trades":
            return self._trades(dn)
        if dn.t != "obj":
            self.err("expected an object", "data", dn.off)
        if c == "book":
            self._book(dn)
        else:
            self._ticker(dn)
