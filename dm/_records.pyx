# cython: language_level=3
"""The record structs of ``dm/_records.pxd`` as the C compiler lays them out, so that
``tests/test_records.py`` can hold the numpy dtypes of ``dm/records.py`` to them."""
from dm._records cimport *


cdef inline size_t _off(void* base, void* field) noexcept:
    return <size_t>(<char*>field - <char*>base)


def record_layout() -> dict:
    """sizeof and field offsets of every record struct: ``{rtype: (size, {field: offset})}``."""
    cdef TradeRecord t
    cdef BboRecord b
    cdef DepthRecord d
    cdef BookDeltaRecord x
    cdef BarRecord r
    cdef MbpEventRecord m
    cdef GapRecord g
    cdef StatRecord s
    cdef InstrumentDefRecord i
    cdef RecordHeader h
    hdr = {"length": _off(&h, &h.length), "rtype": _off(&h, &h.rtype), "publisher_id": _off(&h, &h.publisher_id),
           "instrument_id": _off(&h, &h.instrument_id), "ts_event": _off(&h, &h.ts_event)}
    assert _off(&t, &t.hd) == _off(&b, &b.hd) == _off(&d, &d.hd) == _off(&x, &x.hd) == _off(&r, &r.hd) == 0
    assert _off(&m, &m.hd) == _off(&g, &g.hd) == _off(&s, &s.hd) == _off(&i, &i.hd) == 0
    return {
        RTYPE_TRADE: (sizeof(TradeRecord), {**hdr, "ts_recv": _off(&t, &t.ts_recv), "price": _off(&t, &t.price),
                      "size": _off(&t, &t.size), "trade_id": _off(&t, &t.trade_id), "sequence": _off(&t, &t.sequence),
                      "side": _off(&t, &t.side), "flags": _off(&t, &t.flags), "size_precision": _off(&t, &t.size_precision)}),
        RTYPE_BBO: (sizeof(BboRecord), {**hdr, "ts_recv": _off(&b, &b.ts_recv), "bid_px": _off(&b, &b.bid_px),
                    "ask_px": _off(&b, &b.ask_px), "bid_sz": _off(&b, &b.bid_sz), "ask_sz": _off(&b, &b.ask_sz),
                    "sequence": _off(&b, &b.sequence), "bid_ct": _off(&b, &b.bid_ct), "ask_ct": _off(&b, &b.ask_ct),
                    "flags": _off(&b, &b.flags), "size_precision": _off(&b, &b.size_precision)}),
        RTYPE_DEPTH: (sizeof(DepthRecord), {**hdr, "ts_recv": _off(&d, &d.ts_recv), "sequence": _off(&d, &d.sequence),
                      "flags": _off(&d, &d.flags), "n_bid": _off(&d, &d.n_bid), "n_ask": _off(&d, &d.n_ask),
                      "size_precision": _off(&d, &d.size_precision), "levels": _off(&d, &d.levels[0])}),
        RTYPE_BOOK_DELTA: (sizeof(BookDeltaRecord), {**hdr, "ts_recv": _off(&x, &x.ts_recv), "price": _off(&x, &x.price),
                           "size": _off(&x, &x.size), "sequence": _off(&x, &x.sequence), "side": _off(&x, &x.side),
                           "action": _off(&x, &x.action), "flags": _off(&x, &x.flags),
                           "size_precision": _off(&x, &x.size_precision)}),
        RTYPE_BAR: (sizeof(BarRecord), {**hdr, "open": _off(&r, &r.open), "high": _off(&r, &r.high), "low": _off(&r, &r.low),
                    "close": _off(&r, &r.close), "volume": _off(&r, &r.volume), "interval_s": _off(&r, &r.interval_s),
                    "count": _off(&r, &r.count), "flags": _off(&r, &r.flags), "size_precision": _off(&r, &r.size_precision)}),
        RTYPE_MBP_EVENT: (sizeof(MbpEventRecord), {**hdr, "ts_recv": _off(&m, &m.ts_recv), "price": _off(&m, &m.price),
                          "size": _off(&m, &m.size), "sequence": _off(&m, &m.sequence), "ts_in_delta": _off(&m, &m.ts_in_delta),
                          "action": _off(&m, &m.action), "side": _off(&m, &m.side), "flags": _off(&m, &m.flags),
                          "depth": _off(&m, &m.depth), "bid_ct": _off(&m, &m.bid_ct[0]), "ask_ct": _off(&m, &m.ask_ct[0])}),
        RTYPE_GAP: (sizeof(GapRecord), {**hdr, "ts_recv": _off(&g, &g.ts_recv), "first_missing": _off(&g, &g.first_missing),
                    "last_missing": _off(&g, &g.last_missing), "units": _off(&g, &g.units), "flags": _off(&g, &g.flags),
                    "kind": _off(&g, &g.kind[0]), "detail": _off(&g, &g.detail[0])}),
        RTYPE_STATISTICS: (sizeof(StatRecord), {**hdr, "ts_recv": _off(&s, &s.ts_recv), "ts_ref": _off(&s, &s.ts_ref),
                           "price": _off(&s, &s.price), "quantity": _off(&s, &s.quantity), "sequence": _off(&s, &s.sequence),
                           "ts_in_delta": _off(&s, &s.ts_in_delta), "stat_type": _off(&s, &s.stat_type),
                           "channel_id": _off(&s, &s.channel_id), "update_action": _off(&s, &s.update_action),
                           "stat_flags": _off(&s, &s.stat_flags), "size_precision": _off(&s, &s.size_precision)}),
        RTYPE_INSTRUMENT_DEF: (sizeof(InstrumentDefRecord), {**hdr, "ts_recv": _off(&i, &i.ts_recv),
                               "min_price_increment": _off(&i, &i.min_price_increment),
                               "display_factor": _off(&i, &i.display_factor), "lot_size": _off(&i, &i.lot_size),
                               "contract_multiplier": _off(&i, &i.contract_multiplier),
                               "strike_price": _off(&i, &i.strike_price), "expiration": _off(&i, &i.expiration),
                               "activation": _off(&i, &i.activation), "size_precision": _off(&i, &i.size_precision),
                               "price_precision": _off(&i, &i.price_precision),
                               "instrument_class": _off(&i, &i.instrument_class), "flags": _off(&i, &i.flags),
                               "symbol": _off(&i, &i.symbol[0]), "exchange": _off(&i, &i.exchange[0]),
                               "raw_symbol": _off(&i, &i.raw_symbol[0]), "underlying": _off(&i, &i.underlying[0]),
                               "base": _off(&i, &i.base[0]), "quote": _off(&i, &i.quote[0])}),
    }
