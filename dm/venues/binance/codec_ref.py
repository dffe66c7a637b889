"""Pure-Python oracle of ``BinanceCodec`` (dm/venues/binance/_codec.pyx), for tests only."""
from __future__ import annotations

from dm.codec_ref import F_SNAPSHOT, F_TS_IS_RECV, SIDE_A, SIDE_B, UNDEF_PRICE, K, Node, RefCodec, as_bytes
from dm.errors import UnknownInstrumentError


class RefBinanceCodec(RefCodec):
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
            px = self.px_str(self.req(d, "p", data), "p")
            sz = self.sz_str(self.req(d, "q", data), "q")
            m = self.boolean(self.req(d, "m", data), "m")
            if px is not None and sz is not None:
                self.trade(ts, px, sz, tid, tid, SIDE_A if m else SIDE_B, 0)
        elif kind == K["bookTicker"]:
            self.lookup(self.req(d, "s", data), "s")
            if b"E" in d:
                ts, flags = self.ms(d[b"E"], "E"), 0
            else:
                ts, flags = self.ts_recv, F_TS_IS_RECV
            u = self.u64(self.req(d, "u", data), "u")
            bp = self.px_str(self.req(d, "b", data), "b")
            bs = self.sz_str(self.req(d, "B", data), "B")
            ap = self.px_str(self.req(d, "a", data), "a")
            as_ = self.sz_str(self.req(d, "A", data), "A")
            if bp is None or bs is None:      # a side with a value rejected alone: no side
                bp, bs = UNDEF_PRICE, 0
            if ap is None or as_ is None:
                ap, as_ = UNDEF_PRICE, 0
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
            px = self.px_str(lv.v[0], field)
            sz = self.sz_str(lv.v[1], field)
            if px is not None and sz is not None:
                self.level(ts, px, sz, seq, side, flags)

    def decode_snapshot(self, body, venue_symbol, ts_recv: int) -> int:
        k = as_bytes(venue_symbol)
        self._reset()
        self.ts_recv = ts_recv
        iid = self.syms.get(k.upper())
        if iid is None:
            self.err(f"unknown symbol {k.decode('utf-8', 'replace')!r}", "symbol", -1, UnknownInstrumentError)
        try:
            self.instrument_id = iid
            self.size_precision = self.sps[k.upper()]
            top = self._parse(as_bytes(body))
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
