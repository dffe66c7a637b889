"""Pure-Python oracle of ``BitstampCodec`` (dm/venues/bitstamp/_codec.pyx), for tests only: the same
frames and REST snapshots give the same records, kinds, sequences, values rejected alone and
errors."""
from __future__ import annotations

from dm.codec_ref import (DELTA, F_SNAPSHOT, RTYPE_BOOK_DELTA, RTYPE_TRADE, SIDE_A, SIDE_B, SYM_MAX, TRADE, U64_MAX,
                          K, Node, RefCodec, _FixedError, as_bytes, fixed)
from dm.errors import FixedPointError, UnknownInstrumentError

MAX_VALUE_ERRS = 16
_REJECTED = "rejected"
_EVENTS = {b"bts:subscription_succeeded": "subscription", b"bts:unsubscription_succeeded": "subscription",
           b"bts:request_reconnect": "status", b"bts:heartbeat": "pong", b"bts:error": "error"}


class RefBitstampCodec(RefCodec):
    VENUE = "BITSTAMP"

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

    def _lookup_raw(self, raw: bytes, node: Node, field: str) -> None:
        iid = self.syms.get(raw.upper()) if 1 <= len(raw) <= SYM_MAX else None
        if iid is None:
            self.err(f"unknown symbol {raw.decode('utf-8', 'replace')!r}", field, node.off, UnknownInstrumentError)
        self.instrument_id = iid
        self.size_precision = self.sp[raw.upper()]

    def _reject(self, field, reason, off):
        self.value_error_count += 1
        if len(self.value_errors) < MAX_VALUE_ERRS:
            self.value_errors.append((self.instrument_id, field, reason, off))
        return _REJECTED

    def _str_fx(self, node: Node, field: str, signed: bool, dp: int, size: bool):
        raw = self.s(node, field)
        try:
            return fixed(raw, signed, dp, size=size)
        except _FixedError as e:
            if str(e) == "invalid decimal":
                self.err(str(e), field, node.off, FixedPointError)
            return self._reject(field, str(e), node.off)

    def us(self, node: Node, field: str) -> tuple[int, int]:
        raw = self.s(node, field)
        if not raw or not raw.isdigit() or not raw.isascii():
            self.err("expected microseconds", field, node.off)
        v = int(raw)
        if v > U64_MAX or v * 1000 > U64_MAX:
            self.err("timestamp out of range", field, node.off)
        return v, v * 1000

    # -- records at the frame instrument's size_precision
    def trade(self, ts_event, px, sz, tid, seq, side, flags):
        self.recs.append(TRADE.pack(16, RTYPE_TRADE, self.publisher_id, self.instrument_id, ts_event,
                                    self.ts_recv, px, sz, tid, seq, side, flags, self.size_precision))

    def delta(self, ts_event, px, sz, seq, side, action, flags):
        self.recs.append(DELTA.pack(14, RTYPE_BOOK_DELTA, self.publisher_id, self.instrument_id, ts_event,
                                    self.ts_recv, px, sz, seq, side, action, flags, self.size_precision))

    # -- frames
    def _levels(self, node: Node, field: str, side: int, ts: int, seq: int, flags: int) -> None:
        if node.t != "arr":
            self.err("expected an array", field, node.off)
        for lv in node.v:
            if lv.t != "arr":
                self.err("expected an array", field, lv.off)
            if len(lv.v) < 2:
                self.err("expected [price, amount]", field, lv.off)
            px = self._str_fx(lv.v[0], field, True, 9, False)
            sz = self._str_fx(lv.v[1], field, False, self.size_precision, True)
            if px is not _REJECTED and sz is not _REJECTED:
                self.level(ts, px, sz, seq, side, flags)

    def _book(self, dn: Node, flags: int) -> None:
        if dn.t != "obj":
            self.err("expected an object", "data", dn.off)
        d = self.members(dn)
        us, ts = self.us(self.req(d, "microtimestamp", dn), "microtimestamp")
        vb = self.req(d, "bids", dn)
        va = self.req(d, "asks", dn)
        if flags & F_SNAPSHOT:
            self.clear(ts, us, flags)
        self._levels(vb, "bids", SIDE_B, ts, us, flags)
        self._levels(va, "asks", SIDE_A, ts, us, flags)
        self.set_last()
        self.first_seq = self.last_seq = us

    def _trade(self, dn: Node) -> None:
        if dn.t != "obj":
            self.err("expected an object", "data", dn.off)
        d = self.members(dn)
        tid = self.u64(self.req(d, "id", dn), "id")
        us, ts = self.us(self.req(d, "microtimestamp", dn), "microtimestamp")
        tn = self.req(d, "type", dn)
        typ = self.u64(tn, "type")
        if typ not in (0, 1):
            self.err("invalid type", "type", tn.off)
        px = self._str_fx(self.req(d, "price_str", dn), "price_str", True, 9, False)
        sz = self._str_fx(self.req(d, "amount_str", dn), "amount_str", False, self.size_precision, True)
        self.last_kind = K["trade"]
        if px is not _REJECTED and sz is not _REJECTED:
            self.trade(ts, px, sz, tid, 0, SIDE_B if typ == 0 else SIDE_A, 0)
        self.first_seq = self.last_seq = tid

    def _decode(self, b: bytes) -> None:
        top = self._parse(b)
        if top.t != "obj":
            self.err("expected a JSON object", None, top.off)
        d = self.members(top)
        en = self.req(d, "event", top)
        ev = self.s(en, "event")
        if ev.startswith(b"bts:") and len(ev) > 4:
            kind = _EVENTS.get(ev)
            if kind is None:
                self.err("unknown event", "event", en.off)
            self.last_kind = K[kind]
            return
        cn = self.req(d, "channel", top)
        ch = self.s(cn, "channel")
        dn = self.req(d, "data", top)
        if ev == b"data":
            if not (ch.startswith(b"diff_order_book_") and len(ch) > 16):
                self.err("unknown channel", "channel", cn.off)
            self._lookup_raw(ch[16:], cn, "channel")
            self.last_kind = K["book"]
            return self._book(dn, 0)
        if ev == b"trade":
            if not (ch.startswith(b"live_trades_") and len(ch) > 12):
                self.err("unknown channel", "channel", cn.off)
            self._lookup_raw(ch[12:], cn, "channel")
            return self._trade(dn)
        self.err("unknown event", "event", en.off)

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
            self.last_kind = K["depthSnapshot"]
            self._book(top, F_SNAPSHOT)
        except Exception:
            self._reset()
            raise
        self._counts[self.last_kind] += 1
        return len(self.recs)
