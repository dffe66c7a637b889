"""Pure-Python oracle of ``KrakenCodec`` (dm/venues/kraken/_codec.pyx), for tests only."""
from __future__ import annotations

import re

from dm.codec_ref import F_SNAPSHOT, F_TS_IS_RECV, SIDE_A, SIDE_B, UNDEF_PRICE, K, Node, RefCodec


class RefKrakenCodec(RefCodec):
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
            px = self.px_str(lv.v[0], field)
            sz = self.sz_str(lv.v[1], field)
            ts = self.fx_str(lv.v[2], field, False)
            if px is not None and sz is not None:
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
        seen: list[tuple] = []  # (ts, px, sz, side) of this frame's fills: sequence = identical ones before (_codec.kr_trade)
        for tr in node.v:
            if tr.t != "arr":
                self.err("expected an array", "trade", tr.off)
            if len(tr.v) < 4:
                self.err("expected [price, volume, time, side, ...]", "trade", tr.off)
            px = self.px_str(tr.v[0], "trade")
            sz = self.sz_str(tr.v[1], "trade")
            ts = self.fx_str(tr.v[2], "trade", False)
            side = {b"b": SIDE_B, b"s": SIDE_A}.get(self.s(tr.v[3], "trade"))
            if side is None:
                self.err("invalid side", "trade", tr.v[3].off)
            if px is not None and sz is not None:
                dup = 0
                for k in range(len(seen) - 1, -1, -1):
                    if seen[k][0] != ts:
                        break
                    dup += seen[k] == (ts, px, sz, side)
                seen.append((ts, px, sz, side))
                self.trade(ts, px, sz, 0, dup, side, 0)

    def ticker_side(self, node: Node, field: str):
        if node.t != "arr":
            self.err("expected an array", field, node.off)
        if len(node.v) < 3:
            self.err("expected [price, wholeLotVolume, lotVolume]", field, node.off)
        px, sz = self.px_str(node.v[0], field), self.sz_str(node.v[2], field)
        return (UNDEF_PRICE, 0) if px is None or sz is None else (px, sz)

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
        bp = self.px_str(el[0], "spread")
        ap = self.px_str(el[1], "spread")
        ts = self.fx_str(el[2], "spread", False)
        bs = self.sz_str(el[3], "spread")
        as_ = self.sz_str(el[4], "spread")
        if bp is None or bs is None:      # a side with a value rejected alone: no side
            bp, bs = UNDEF_PRICE, 0
        if ap is None or as_ is None:
            ap, as_ = UNDEF_PRICE, 0
        self.bbo(ts, bp, bs, ap, as_, 0, 0)
