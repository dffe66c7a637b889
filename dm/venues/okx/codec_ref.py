"""Pure-Python oracle of ``OkxCodec`` (dm/venues/okx/_codec.pyx), for tests only: the same frames
give the same records, kinds, sequences, checksums, values rejected alone and errors."""
from __future__ import annotations

import re
import struct

from dm.codec_ref import (BBO, DELTA, F_SNAPSHOT, I64_MAX, RTYPE_BBO, RTYPE_BOOK_DELTA, RTYPE_TRADE, SIDE_A, SIDE_B,
                          TRADE, U64_MAX, UNDEF_PRICE, K, Node, RefCodec, _FixedError, as_bytes, fixed)
from dm.errors import FixedPointError

RTYPE_STATISTICS = 0xE7
STAT = struct.Struct("<BBHIQQQqqIiHHBBB17x")   # 80 B, dm/_records.pxd StatRecord
UNDEF_TS = U64_MAX
ST_OPEN_INTEREST, ST_MARK, ST_FUNDING = 9, 1001, 1003
MAX_VALUE_ERRS = 16
_ABSENT, _REJECTED = "absent", "rejected"
_INT = re.compile(rb"-?[0-9]+")
BOOK_CHANNELS = (b"books-l2-tbt", b"books", b"books50-l2-tbt")


def trade_id(raw: bytes) -> int:
    """tradeId text → trade id (see ``OkxCodec``)."""
    if 1 <= len(raw) <= 19 and raw.isdigit() and int(raw) <= I64_MAX:
        return int(raw)
    h = 14695981039346656037
    for c in raw:
        h = ((h ^ c) * 1099511628211) & U64_MAX
    return h & I64_MAX


class RefOkxCodec(RefCodec):
    VENUE = "OKX"

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

    # -- values
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

    def opt(self, node: Node | None, field: str, fn):
        if node is None or (node.t == "str" and node.v == b""):
            return _ABSENT
        return fn(node, field)

    def okms(self, node: Node, field: str) -> int:
        if node.t != "str":
            return self.ms(node, field)
        if node.v == b"" or not node.v.isdigit() or not node.v.isascii():
            self.err("expected milliseconds", field, node.off)
        ns = int(node.v) * 1_000_000
        if ns > U64_MAX:
            self.err("timestamp out of range", field, node.off)
        return ns

    def i64(self, node: Node, field: str, lo: int, hi: int) -> int:
        if node.t != "num" or not _INT.fullmatch(node.v):
            self.err("expected an integer", field, node.off)
        v = int(node.v)
        if abs(v) > I64_MAX or not lo <= v <= hi:
            self.err("integer out of range", field, node.off)
        return v

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

    # -- channels
    def _levels(self, node: Node, field: str, side: int, ts: int, seq: int, flags: int) -> None:
        if node.t != "arr":
            self.err("expected an array", field, node.off)
        for lv in node.v:
            if lv.t != "arr":
                self.err("expected an array", field, lv.off)
            if len(lv.v) < 2:
                self.err("expected [price, size, ...]", field, lv.off)
            px = self.px(lv.v[0], field)
            sz = self.sz(lv.v[1], field)
            if px is not _REJECTED and sz is not _REJECTED:
                self.level(ts, px, sz, seq, side, flags)

    def _book(self, d: dict, a: dict, argo: Node, top: Node) -> None:
        self.lookup(self.req(a, "instId", argo), "instId")
        an = self.req(d, "action", top)
        act = self.s(an, "action")
        if act not in (b"snapshot", b"update"):
            self.err("unknown action", "action", an.off)
        snap = act == b"snapshot"
        dn = self.req(d, "data", top)
        if dn.t != "arr":
            self.err("expected an array", "data", dn.off)
        if len(dn.v) != 1 or dn.v[0].t != "obj":
            self.err("expected one object", "data", dn.off)
        item = dn.v[0]
        b = self.members(item)
        ts = self.okms(self.req(b, "ts", item), "ts")
        cs = self.i64(b[b"checksum"], "checksum", -(1 << 31), (1 << 31) - 1) if b"checksum" in b else None
        seq = self.i64(b[b"seqId"], "seqId", 0, I64_MAX) if b"seqId" in b else 0
        prev = self.i64(b[b"prevSeqId"], "prevSeqId", -1, I64_MAX - 1) if b"prevSeqId" in b else -1
        vb = self.req(b, "bids", item)
        va = self.req(b, "asks", item)
        flags = 0
        if snap:
            self.last_kind = K["bookSnapshot"]
            flags = F_SNAPSHOT
            self.clear(ts, seq, flags)
        else:
            self.last_kind = K["book"]
        self._levels(vb, "bids", SIDE_B, ts, seq, flags)
        self._levels(va, "asks", SIDE_A, ts, seq, flags)
        self.set_last()
        if cs is not None:
            self.checksum = cs & 0xFFFFFFFF
        self.last_seq = seq
        self.first_seq = prev + 1

    def _items(self, dn: Node):
        if dn.t != "arr":
            self.err("expected an array", "data", dn.off)
        for it in dn.v:
            if it.t != "obj":
                self.err("expected an object", "data", it.off)
            t = self.members(it)
            self.lookup(self.req(t, "instId", it), "instId")
            yield it, t

    def _trades(self, dn: Node) -> None:
        first = True
        for it, t in self._items(dn):
            ts = self.okms(self.req(t, "ts", it), "ts")
            sn = self.req(t, "side", it)
            side = {b"buy": SIDE_B, b"sell": SIDE_A}.get(self.s(sn, "side"))
            if side is None:
                self.err("invalid side", "side", sn.off)
            tid = trade_id(self.s(self.req(t, "tradeId", it), "tradeId"))
            px = self.px(self.req(t, "px", it), "px")
            sz = self.sz(self.req(t, "sz", it), "sz")
            if px is not _REJECTED and sz is not _REJECTED:
                self.trade(ts, px, sz, tid, 0, side, 0)
            if first:
                self.first_seq = tid
                first = False
            self.last_seq = tid

    def _tickers(self, dn: Node) -> None:
        for it, t in self._items(dn):
            ts = self.okms(self.req(t, "ts", it), "ts")
            bp = self.opt(t.get(b"bidPx"), "bidPx", self.px)
            bs = self.opt(t.get(b"bidSz"), "bidSz", self.sz)
            ap = self.opt(t.get(b"askPx"), "askPx", self.px)
            as_ = self.opt(t.get(b"askSz"), "askSz", self.sz)
            if not (isinstance(bp, int) and isinstance(bs, int)):
                bp, bs = UNDEF_PRICE, 0
            if not (isinstance(ap, int) and isinstance(as_, int)):
                ap, as_ = UNDEF_PRICE, 0
            self.bbo(ts, bp, bs, ap, as_, 0, 0)

    def _stats(self, dn: Node, ch: bytes) -> None:
        for it, t in self._items(dn):
            if ch == b"funding-rate":
                tref = self.okms(self.req(t, "fundingTime", it), "fundingTime")
                ts = self.okms(t[b"ts"], "ts") if b"ts" in t else tref
                v = self.opt(self.req(t, "fundingRate", it), "fundingRate", self.px)
                if isinstance(v, int):
                    self.stat(ts, tref, v, I64_MAX, ST_FUNDING)
                continue
            ts = self.okms(self.req(t, "ts", it), "ts")
            if ch == b"mark-price":
                v = self.opt(self.req(t, "markPx", it), "markPx", self.px)
                if isinstance(v, int):
                    self.stat(ts, UNDEF_TS, v, I64_MAX, ST_MARK)
            else:
                v = self.opt(self.req(t, "oi", it), "oi", self.sz)
                if isinstance(v, int):
                    self.stat(ts, UNDEF_TS, UNDEF_PRICE, v, ST_OPEN_INTEREST)

    def _decode(self, b: bytes) -> None:
        if b == b"pong":
            self.last_kind = K["pong"]
            return
        top = self._parse(b)
        if top.t != "obj":
            self.err("expected a JSON object", None, top.off)
        d = self.members(top)
        if b"event" in d:
            en = d[b"event"]
            ev = self.s(en, "event")
            if ev in (b"subscribe", b"unsubscribe"):
                self.last_kind = K["subscription"]
            elif ev in (b"error", b"channel-conn-count-error"):
                self.last_kind = K["error"]
            elif ev in (b"notice", b"channel-conn-count", b"login"):
                self.last_kind = K["info"]
            else:
                self.err("unknown event", "event", en.off)
            return
        argo = self.req(d, "arg", top)
        if argo.t != "obj":
            self.err("expected an object", "arg", argo.off)
        a = self.members(argo)
        cn = self.req(a, "channel", argo)
        ch = self.s(cn, "channel")
        if ch in BOOK_CHANNELS:
            self._book(d, a, argo, top)
            return
        if ch not in (b"trades", b"tickers", b"mark-price", b"open-interest", b"funding-rate"):
            self.err("unknown channel", "channel", cn.off)
        dn = self.req(d, "data", top)
        if ch == b"trades":
            self.last_kind = K["trade"]
            self._trades(dn)
            return
        self.last_kind = K["ticker"]
        if ch == b"tickers":
            self._tickers(dn)
        else:
            self._stats(dn, ch)
