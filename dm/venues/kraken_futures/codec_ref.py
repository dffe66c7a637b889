"""Pure-Python oracle of ``KrakenFuturesCodec`` (dm/venues/kraken_futures/_codec.pyx), for tests
only."""
from __future__ import annotations

from dm.codec_ref import F_LAST, F_SNAPSHOT, F_TS_IS_RECV, SIDE_A, SIDE_B, UNDEF_PRICE, K, Node, RefCodec


class RefKrakenFuturesCodec(RefCodec):
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
        px = self.px_num(self.req(d, "price", obj), "price")
        sz = self.sz_num(self.req(d, "qty", obj), "qty")
        if px is not None and sz is not None:
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
            px = self.px_num(self.req(d, "price", top), "price")
            sz = self.sz_num(self.req(d, "qty", top), "qty")
            if px is not None and sz is not None:
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
                    px = self.px_num(self.req(ld, "price", lv), "price")
                    sz = self.sz_num(self.req(ld, "qty", lv), "qty")
                    if px is not None and sz is not None:
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
            # a side with a value rejected alone: no side (UNDEF_PRICE, 0)
            bp = self.px_num(self.req(d, "bid", top), "bid", UNDEF_PRICE)
            ap = self.px_num(self.req(d, "ask", top), "ask", UNDEF_PRICE)
            if kind == K["tickerLite"]:
                self.bbo(self.ts_recv, UNDEF_PRICE if bp is None else bp, 0,
                         UNDEF_PRICE if ap is None else ap, 0, 0, F_TS_IS_RECV)
                return
            bs = self.sz_num(self.req(d, "bid_size", top), "bid_size", 0)
            as_ = self.sz_num(self.req(d, "ask_size", top), "ask_size", 0)
            ts = self.ms(self.req(d, "time", top), "time")
            if bp is None or bs is None:
                bp, bs = UNDEF_PRICE, 0
            if ap is None or as_ is None:
                ap, as_ = UNDEF_PRICE, 0
            self.bbo(ts, bp, bs, ap, as_, 0, 0)
