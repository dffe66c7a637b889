"""Pure-Python oracle of ``CoinbaseCodec`` (dm/venues/coinbase/_codec.pyx), for tests only: the
same frames give the same records, kinds, sequences, ``sequence_num``, values rejected alone
and errors."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from dm.codec_ref import (BBO, DELTA, F_SNAPSHOT, I64_MAX, RTYPE_BBO, RTYPE_BOOK_DELTA, RTYPE_TRADE, SIDE_A, SIDE_B,
                          TRADE, U64_MAX, UNDEF_PRICE, K, Node, RefCodec, _FixedError, as_bytes, fixed)
from dm.errors import FixedPointError

MAX_VALUE_ERRS = 16
_REJECTED = "rejected"
_ISO = re.compile(rb"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_S = timedelta(seconds=1)
_BOOK_SIDES = {b"buy": SIDE_B, b"bid": SIDE_B, b"sell": SIDE_A, b"offer": SIDE_A, b"ask": SIDE_A}
_AGGRESSOR = {b"buy": SIDE_A, b"BUY": SIDE_A, b"sell": SIDE_B, b"SELL": SIDE_B}   # side = maker side


def trade_id_text(raw: bytes) -> int:
    if 1 <= len(raw) <= 19 and raw.isdigit() and int(raw) <= I64_MAX:
        return int(raw)
    h = 14695981039346656037
    for c in raw:
        h = ((h ^ c) * 1099511628211) & U64_MAX
    return h & I64_MAX


class RefCoinbaseCodec(RefCodec):
    VENUE = "COINBASE"

    def __init__(self, publisher_id: int, symbols: dict | None = None):
        self.sp: dict[bytes, int] = {}
        self.value_errors: list = []
        self.value_error_count = 0
        self.size_precision = 9
        self.sequence_num = -1
        self.mixed = False
        super().__init__(publisher_id, symbols)

    def add_symbol(self, venue_symbol, instrument_id: int, size_precision: int = 9) -> None:
        super().add_symbol(venue_symbol, instrument_id)
        self.sp[as_bytes(venue_symbol).upper()] = size_precision

    def _reset(self):
        super()._reset()
        self.size_precision = 9
        self.value_errors = []
        self.value_error_count = 0

    def decode(self, frame, ts_recv: int) -> int:
        self.sequence_num = -1
        self.mixed = False
        return super().decode(frame, ts_recv)

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

    def iso(self, node: Node, field: str) -> int:
        raw = self.s(node, field)
        m = _ISO.fullmatch(raw)
        if m is None:
            self.err("invalid timestamp", field, node.off)
        y, mo, d, hh, mi, ss = (int(g) for g in m.groups()[:6])
        frac = m.group(7) or b""
        if y < 1970 or not 1 <= mo <= 12 or not 1 <= d <= 31 or hh > 23 or mi > 59 or ss > 59:
            self.err("invalid timestamp", field, node.off)
        try:
            dt = datetime(y, mo, d, hh, mi, ss, tzinfo=timezone.utc)
        except ValueError:
            self.err("invalid timestamp", field, node.off)
        secs = (dt - _EPOCH) // _ONE_S
        ns = secs * 1_000_000_000 + int((frac + b"000000000")[:9])
        if ns > U64_MAX:
            self.err("timestamp out of range", field, node.off)
        return ns

    def book_side(self, node: Node, field: str) -> int:
        side = _BOOK_SIDES.get(self.s(node, field))
        if side is None:
            self.err("invalid side", field, node.off)
        return side

    def aggressor(self, node: Node, field: str) -> int:
        side = _AGGRESSOR.get(self.s(node, field))
        if side is None:
            self.err("invalid side", field, node.off)
        return side

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

    def bbo_side(self, vp: Node, vs: Node | None, fp: str, fs: str):
        px = self.px(vp, fp)
        sz = 0
        if vs is not None:
            sz = self.sz(vs, fs)
        if px is _REJECTED or sz is _REJECTED:
            return UNDEF_PRICE, 0
        return px, sz

    def arr(self, node: Node, field: str) -> list:
        if node.t != "arr":
            self.err("expected an array", field, node.off)
        return node.v

    def obj(self, node: Node, field: str) -> dict:
        if node.t != "obj":
            self.err("expected an object", field, node.off)
        return self.members(node)

    # -- Exchange feed
    def _pair_levels(self, node, field, side, ts, flags):
        for lv in self.arr(node, field):
            if lv.t != "arr":
                self.err("expected an array", field, lv.off)
            if len(lv.v) < 2:
                self.err("expected [price, size]", field, lv.off)
            px = self.px(lv.v[0], field)
            sz = self.sz(lv.v[1], field)
            if px is not _REJECTED and sz is not _REJECTED:
                self.level(ts, px, sz, 0, side, flags)

    def _ex(self, d: dict, top: Node) -> None:
        tn = self.req(d, "type", top)
        t = self.s(tn, "type")
        if t == b"l2update":
            self.lookup(self.req(d, "product_id", top), "product_id")
            ts = self.iso(self.req(d, "time", top), "time")
            ch = self.req(d, "changes", top)
            if ch.t != "arr":
                self.err("expected an array", "changes", ch.off)
            self.last_kind = K["book"]
            for c in ch.v:
                if c.t != "arr":
                    self.err("expected an array", "changes", c.off)
                if len(c.v) < 3:
                    self.err("expected [side, price, size]", "changes", c.off)
                side = self.book_side(c.v[0], "changes")
                px = self.px(c.v[1], "changes")
                sz = self.sz(c.v[2], "changes")
                if px is not _REJECTED and sz is not _REJECTED:
                    self.level(ts, px, sz, 0, side, 0)
            self.set_last()
        elif t == b"ticker":
            self.lookup(self.req(d, "product_id", top), "product_id")
            ts = self.iso(d[b"time"], "time") if b"time" in d else self.ts_recv
            seq = self.u64(d[b"sequence"], "sequence") if b"sequence" in d else 0
            vb = self.req(d, "best_bid", top)
            va = self.req(d, "best_ask", top)
            bp, bs = self.bbo_side(vb, d.get(b"best_bid_size"), "best_bid", "best_bid_size")
            ap, as_ = self.bbo_side(va, d.get(b"best_ask_size"), "best_ask", "best_ask_size")
            self.last_kind = K["ticker"]
            self.first_seq = self.last_seq = seq
            self.bbo(ts, bp, bs, ap, as_, seq, 0)
        elif t in (b"match", b"last_match"):
            last = t == b"last_match"
            self.lookup(self.req(d, "product_id", top), "product_id")
            ts = self.iso(self.req(d, "time", top), "time")
            tid = self.u64(self.req(d, "trade_id", top), "trade_id")
            seq = self.u64(self.req(d, "sequence", top), "sequence")
            side = self.aggressor(self.req(d, "side", top), "side")
            px = self.px(self.req(d, "price", top), "price")
            sz = self.sz(self.req(d, "size", top), "size")
            self.last_kind = K["tradeSnapshot"] if last else K["trade"]
            self.first_seq = self.last_seq = seq
            if px is not _REJECTED and sz is not _REJECTED:
                self.trade(ts, px, sz, tid, seq, side, F_SNAPSHOT if last else 0)
        elif t == b"snapshot":
            self.lookup(self.req(d, "product_id", top), "product_id")
            ts = self.iso(d[b"time"], "time") if b"time" in d else self.ts_recv
            vb = self.req(d, "bids", top)
            va = self.req(d, "asks", top)
            self.last_kind = K["bookSnapshot"]
            self.clear(ts, 0, F_SNAPSHOT)
            self._pair_levels(vb, "bids", SIDE_B, ts, F_SNAPSHOT)
            self._pair_levels(va, "asks", SIDE_A, ts, F_SNAPSHOT)
            self.set_last()
        elif t == b"heartbeat":
            self.last_kind = K["heartbeat"]
        elif t == b"subscriptions":
            self.last_kind = K["subscription"]
        elif t == b"error":
            self.last_kind = K["error"]
        elif t == b"status":
            self.last_kind = K["status"]
        else:
            self.err("unknown type", "type", tn.off)

    # -- Advanced Trade
    def _event_type(self, e: dict, ev: Node) -> bool:
        tn = self.req(e, "type", ev)
        t = self.s(tn, "type")
        if t == b"snapshot":
            return True
        if t == b"update":
            return False
        self.err("unknown type", "type", tn.off)

    def _l2(self, evs: list, evnode: Node, ts: int, seq: int) -> None:
        any_snap = False
        iid0 = None
        for ev in evs:
            e = self.obj(ev, "events")
            snap = self._event_type(e, ev)
            self.lookup(self.req(e, "product_id", ev), "product_id")
            if iid0 is None:
                iid0 = self.instrument_id
            elif self.instrument_id != iid0:
                self.mixed = True
            ups = self.req(e, "updates", ev)
            if ups.t != "arr":
                self.err("expected an array", "updates", ups.off)
            flags = 0
            if snap:
                any_snap = True
                flags = F_SNAPSHOT
                self.clear(ts, seq, flags)
            for un in ups.v:
                u = self.obj(un, "updates")
                side = self.book_side(self.req(u, "side", un), "side")
                ets = self.iso(self.req(u, "event_time", un), "event_time")
                px = self.px(self.req(u, "price_level", un), "price_level")
                sz = self.sz(self.req(u, "new_quantity", un), "new_quantity")
                if px is not _REJECTED and sz is not _REJECTED:
                    self.level(ets, px, sz, seq, side, flags)
        if iid0 is None:
            self.err("no events", "events", evnode.off)
        self.last_kind = K["bookSnapshot"] if any_snap else K["book"]
        self.set_last()

    def _trades(self, evs: list, seq: int) -> None:
        any_snap = False
        for ev in evs:
            e = self.obj(ev, "events")
            snap = self._event_type(e, ev)
            any_snap |= snap
            trs = self.req(e, "trades", ev)
            if trs.t != "arr":
                self.err("expected an array", "trades", trs.off)
            for tn in trs.v:
                t = self.obj(tn, "trades")
                self.lookup(self.req(t, "product_id", tn), "product_id")
                tid = trade_id_text(self.s(self.req(t, "trade_id", tn), "trade_id"))
                ts = self.iso(self.req(t, "time", tn), "time")
                side = self.aggressor(self.req(t, "side", tn), "side")
                px = self.px(self.req(t, "price", tn), "price")
                sz = self.sz(self.req(t, "size", tn), "size")
                if px is not _REJECTED and sz is not _REJECTED:
                    self.trade(ts, px, sz, tid, seq, side, F_SNAPSHOT if snap else 0)
        self.last_kind = K["tradeSnapshot"] if any_snap else K["trade"]

    def _tickers(self, evs: list, ts: int, seq: int) -> None:
        for ev in evs:
            e = self.obj(ev, "events")
            self._event_type(e, ev)
            tks = self.req(e, "tickers", ev)
            if tks.t != "arr":
                self.err("expected an array", "tickers", tks.off)
            for tn in tks.v:
                t = self.obj(tn, "tickers")
                self.lookup(self.req(t, "product_id", tn), "product_id")
                vb = self.req(t, "best_bid", tn)
                va = self.req(t, "best_ask", tn)
                bp, bs = self.bbo_side(vb, t.get(b"best_bid_quantity"), "best_bid", "best_bid_quantity")
                ap, as_ = self.bbo_side(va, t.get(b"best_ask_quantity"), "best_ask", "best_ask_quantity")
                self.bbo(ts, bp, bs, ap, as_, seq, 0)
        self.last_kind = K["ticker"]

    def _at(self, d: dict, top: Node) -> None:
        cn = d[b"channel"]
        c = self.s(cn, "channel")
        seq = 0
        if b"sequence_num" in d:
            seq = self.u64(d[b"sequence_num"], "sequence_num")
            if seq > I64_MAX:
                self.err("integer out of range", "sequence_num", d[b"sequence_num"].off)
            self.sequence_num = seq
            self.first_seq = self.last_seq = seq
        ts = self.iso(d[b"timestamp"], "timestamp") if b"timestamp" in d else self.ts_recv
        simple = {b"heartbeats": "heartbeat", b"subscriptions": "subscription", b"candles": "kline",
                  b"status": "status"}
        if c in simple:
            self.last_kind = K[simple[c]]
            return
        evn = self.req(d, "events", top)
        if evn.t != "arr":
            self.err("expected an array", "events", evn.off)
        if c == b"l2_data":
            self._l2(evn.v, evn, ts, seq)
        elif c == b"market_trades":
            self._trades(evn.v, seq)
        elif c in (b"ticker", b"ticker_batch"):
            self._tickers(evn.v, ts, seq)
        else:
            self.err("unknown channel", "channel", cn.off)

    def _decode(self, b: bytes) -> None:
        top = self._parse(b)
        if top.t != "obj":
            self.err("expected a JSON object", None, top.off)
        d = self.members(top)
        if b"channel" in d:
            self._at(d, top)
        else:
            self._ex(d, top)

