# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kraken Futures websocket API v1 frames -> dm records (the venue half of
``KrakenFuturesCodec``; the shared scanner is ``dm/_scan.pxd``, the base class
``dm._codec._Codec``)."""
from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp

from dm._records cimport *
from dm._scan cimport *
from dm._codec cimport _Codec

from dm.errors import UnknownInstrumentError


# ---------------------------------------------------------------------------------------------
# Kraken Futures websocket API v1 (book, trade, ticker_lite, ticker; events)

cdef enum:
    KF_EVENT = 0
    KF_FEED
    KF_PRODUCT
    KF_SIDE
    KF_SEQ
    KF_PRICE
    KF_QTY
    KF_TIMESTAMP
    KF_TIME
    KF_BIDS
    KF_ASKS
    KF_TRADES
    KF_BID
    KF_ASK
    KF_BID_SIZE
    KF_ASK_SIZE
    KF_N


cdef int kf_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if n == 3:
        if memcmp(k, b"seq", 3) == 0:
            return KF_SEQ
        if memcmp(k, b"qty", 3) == 0:
            return KF_QTY
        if memcmp(k, b"bid", 3) == 0:
            return KF_BID
        if memcmp(k, b"ask", 3) == 0:
            return KF_ASK
    elif n == 4:
        if memcmp(k, b"feed", 4) == 0:
            return KF_FEED
        if memcmp(k, b"side", 4) == 0:
            return KF_SIDE
        if memcmp(k, b"time", 4) == 0:
            return KF_TIME
        if memcmp(k, b"bids", 4) == 0:
            return KF_BIDS
        if memcmp(k, b"asks", 4) == 0:
            return KF_ASKS
    elif n == 5:
        if memcmp(k, b"event", 5) == 0:
            return KF_EVENT
        if memcmp(k, b"price", 5) == 0:
            return KF_PRICE
    elif n == 6:
        if memcmp(k, b"trades", 6) == 0:
            return KF_TRADES
    elif n == 8:
        if memcmp(k, b"bid_size", 8) == 0:
            return KF_BID_SIZE
        if memcmp(k, b"ask_size", 8) == 0:
            return KF_ASK_SIZE
    elif n == 9:
        if memcmp(k, b"timestamp", 9) == 0:
            return KF_TIMESTAMP
    elif n == 10:
        if memcmp(k, b"product_id", 10) == 0:
            return KF_PRODUCT
    return -1


cdef int kf_side(CState* s, Py_ssize_t v, uint8_t* side) noexcept nogil:
    """buy -> 'B', sell -> 'A'. In the trade feed this is the taker side (Kraken Futures
    WebSocket v1 "Trade": "buy if the taker is a buyer, sell if the taker is a seller")."""
    cdef Py_ssize_t a, b
    if get_str(s, v, b"side", &a, &b) < 0:
        return -1
    if raw_eq(s.p + a, b - a, b"buy", 3):
        side[0] = SIDE_BID
    elif raw_eq(s.p + a, b - a, b"sell", 4):
        side[0] = SIDE_ASK
    else:
        return e_codec(s, ERR_CODEC, b"invalid side", b"side", v)
    return 0


cdef int kf_levels(CState* s, Py_ssize_t v, const char* field, uint8_t side, uint64_t ts,
                   uint64_t seq) noexcept nogil:
    """book_snapshot bids/asks: array of {"price": number, "qty": number}. A level whose price
    or qty cannot be represented is rejected alone (value_reject) and skipped."""
    cdef Py_ssize_t sl[KF_N]
    cdef Py_ssize_t endp = 0, w, e, x
    cdef int64_t px
    cdef uint64_t sz
    cdef int rp, rs
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", field, w)
        e = index_obj(s, w, 0, kf_key, sl, KF_N)
        x = req(s, sl, KF_PRICE, b"price", w)
        if x < 0:
            return -1
        rp = get_px_num(s, x, b"price", 0, 0, &px)
        if rp < 0:
            return -1
        x = req(s, sl, KF_QTY, b"qty", w)
        if x < 0:
            return -1
        rs = get_sz_num(s, x, b"qty", 0, &sz)
        if rs < 0:
            return -1
        if rp == 0 and rs == 0 and emit_level(s, ts, px, sz, seq, side, FLAG_SNAPSHOT) < 0:
            return -1
        w = arr_next(s, e, &endp)
    return 0


cdef int kf_trade(CState* s, Py_ssize_t* sl, Py_ssize_t obj, uint8_t flags, uint64_t* seq) noexcept nogil:
    """trade fields: side, seq, time, price, qty -> TRADE, trade_id = sequence = seq (none when
    the price or qty is rejected alone)."""
    cdef Py_ssize_t v
    cdef uint8_t side
    cdef uint64_t ts, sz
    cdef int64_t px
    cdef int rp, rs
    v = req(s, sl, KF_SIDE, b"side", obj)
    if v < 0 or kf_side(s, v, &side) < 0:
        return -1
    v = req(s, sl, KF_SEQ, b"seq", obj)
    if v < 0 or get_u64(s, v, b"seq", seq) < 0:
        return -1
    v = req(s, sl, KF_TIME, b"time", obj)
    if v < 0 or get_ms(s, v, b"time", &ts) < 0:
        return -1
    v = req(s, sl, KF_PRICE, b"price", obj)
    if v < 0:
        return -1
    rp = get_px_num(s, v, b"price", 0, 0, &px)
    if rp < 0:
        return -1
    v = req(s, sl, KF_QTY, b"qty", obj)
    if v < 0:
        return -1
    rs = get_sz_num(s, v, b"qty", 0, &sz)
    if rs < 0:
        return -1
    if rp or rs:
        return 0
    return emit_trade(s, ts, px, sz, seq[0], seq[0], side, flags)


cdef int kf_decode(CState* s) noexcept nogil:
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t sl[KF_N]
    cdef Py_ssize_t tsl[KF_N]
    cdef Py_ssize_t top, e, v, vb, va, a, b, endp = 0, w
    cdef uint64_t seq, ts, sz, bs, as_
    cdef int64_t px, bp, ap
    cdef int rp, rs, rbp, rap, rbs, ras
    cdef uint8_t side
    cdef bint first = 1
    top = skip_ws(s, 0)
    if top >= s.n:
        return e_end(s)
    if p[top] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, top)
    e = index_obj(s, top, 0, kf_key, sl, KF_N)
    if e < 0:
        return -1
    e = skip_ws(s, e)
    if e < s.n:
        return e_byte(s, e)
    if sl[KF_EVENT] >= 0:
        v = sl[KF_EVENT]
        if get_str(s, v, b"event", &a, &b) < 0:
            return -1
        if raw_eq(p + a, b - a, b"info", 4):
            s.kind = K_INFO
        elif (raw_eq(p + a, b - a, b"subscribed", 10) or raw_eq(p + a, b - a, b"unsubscribed", 12)
              or raw_eq(p + a, b - a, b"subscribed_failed", 17) or raw_eq(p + a, b - a, b"unsubscribed_failed", 19)):
            s.kind = K_SUBSCRIPTION
        elif raw_eq(p + a, b - a, b"error", 5) or raw_eq(p + a, b - a, b"alert", 5):
            s.kind = K_ERROR
        elif raw_eq(p + a, b - a, b"pong", 4):
            s.kind = K_PONG
        else:
            return e_codec(s, ERR_CODEC, b"unknown event", b"event", v)
        return 0
    v = req(s, sl, KF_FEED, b"feed", top)
    if v < 0 or get_str(s, v, b"feed", &a, &b) < 0:
        return -1
    if raw_eq(p + a, b - a, b"book", 4):
        s.kind = K_BOOK
    elif raw_eq(p + a, b - a, b"book_snapshot", 13):
        s.kind = K_BOOKSNAPSHOT
    elif raw_eq(p + a, b - a, b"trade", 5):
        s.kind = K_TRADE
    elif raw_eq(p + a, b - a, b"trade_snapshot", 14):
        s.kind = K_TRADESNAPSHOT
    elif raw_eq(p + a, b - a, b"ticker_lite", 11):
        s.kind = K_TICKERLITE
    elif raw_eq(p + a, b - a, b"ticker", 6):
        s.kind = K_TICKER
    elif raw_eq(p + a, b - a, b"heartbeat", 9):
        s.kind = K_HEARTBEAT
        return 0
    else:
        return e_codec(s, ERR_CODEC, b"unknown feed", b"feed", v)
    v = req(s, sl, KF_PRODUCT, b"product_id", top)
    if v < 0 or lookup(s, v, b"product_id") < 0:
        return -1

    if s.kind == K_BOOK:
        # side, seq, timestamp, price, qty -> one BOOK_DELTA
        v = req(s, sl, KF_SIDE, b"side", top)
        if v < 0 or kf_side(s, v, &side) < 0:
            return -1
        v = req(s, sl, KF_SEQ, b"seq", top)
        if v < 0 or get_u64(s, v, b"seq", &seq) < 0:
            return -1
        v = req(s, sl, KF_TIMESTAMP, b"timestamp", top)
        if v < 0 or get_ms(s, v, b"timestamp", &ts) < 0:
            return -1
        v = req(s, sl, KF_PRICE, b"price", top)
        if v < 0:
            return -1
        rp = get_px_num(s, v, b"price", 0, 0, &px)
        if rp < 0:
            return -1
        v = req(s, sl, KF_QTY, b"qty", top)
        if v < 0:
            return -1
        rs = get_sz_num(s, v, b"qty", 0, &sz)
        if rs < 0:
            return -1
        # a value rejected alone: no record, but seq still counts (the sync sees no hole)
        if rp == 0 and rs == 0 and emit_level(s, ts, px, sz, seq, side, FLAG_LAST) < 0:
            return -1
        s.first_seq = seq
        s.last_seq = seq
        return 0

    if s.kind == K_BOOKSNAPSHOT:
        # seq, timestamp, bids, asks -> CLEAR + bids + asks (FLAG_SNAPSHOT)
        v = req(s, sl, KF_SEQ, b"seq", top)
        if v < 0 or get_u64(s, v, b"seq", &seq) < 0:
            return -1
        v = req(s, sl, KF_TIMESTAMP, b"timestamp", top)
        if v < 0 or get_ms(s, v, b"timestamp", &ts) < 0:
            return -1
        vb = req(s, sl, KF_BIDS, b"bids", top)
        if vb < 0:
            return -1
        va = req(s, sl, KF_ASKS, b"asks", top)
        if va < 0:
            return -1
        if emit_clear(s, ts, seq, FLAG_SNAPSHOT) < 0:
            return -1
        if kf_levels(s, vb, b"bids", SIDE_BID, ts, seq) < 0:
            return -1
        if kf_levels(s, va, b"asks", SIDE_ASK, ts, seq) < 0:
            return -1
        set_last(s)
        s.first_seq = seq
        s.last_seq = seq
        return 0

    if s.kind == K_TRADE:
        if kf_trade(s, sl, top, 0, &seq) < 0:
            return -1
        s.first_seq = seq
        s.last_seq = seq
        return 0

    if s.kind == K_TRADESNAPSHOT:
        # trades: array of trade objects -> TRADE each with FLAG_SNAPSHOT
        v = req(s, sl, KF_TRADES, b"trades", top)
        if v < 0:
            return -1
        if p[v] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", b"trades", v)
        w = arr_first(s, v, 0, &endp)
        while w > 0:
            if p[w] != 123:
                return e_codec(s, ERR_CODEC, b"expected an object", b"trades", w)
            e = index_obj(s, w, 0, kf_key, tsl, KF_N)
            if kf_trade(s, tsl, w, FLAG_SNAPSHOT, &seq) < 0:
                return -1
            if first:
                s.first_seq = seq
                first = 0
            s.last_seq = seq
            w = arr_next(s, e, &endp)
        return 0

    # ticker_lite: bid, ask (sizes 0, ts_event = ts_recv); ticker: bid, ask, bid_size, ask_size, time
    # a side with a value rejected alone: no side (UNDEF_PRICE, 0)
    v = req(s, sl, KF_BID, b"bid", top)
    if v < 0:
        return -1
    rbp = get_px_num(s, v, b"bid", 1, DM_UNDEF_PRICE, &bp)
    if rbp < 0:
        return -1
    v = req(s, sl, KF_ASK, b"ask", top)
    if v < 0:
        return -1
    rap = get_px_num(s, v, b"ask", 1, DM_UNDEF_PRICE, &ap)
    if rap < 0:
        return -1
    if rbp:
        bp = DM_UNDEF_PRICE
    if rap:
        ap = DM_UNDEF_PRICE
    if s.kind == K_TICKERLITE:
        return emit_bbo(s, s.ts_recv, bp, 0, ap, 0, 0, FLAG_TS_EVENT_IS_RECV)
    v = req(s, sl, KF_BID_SIZE, b"bid_size", top)
    if v < 0:
        return -1
    rbs = get_sz_num(s, v, b"bid_size", 1, &bs)
    if rbs < 0:
        return -1
    v = req(s, sl, KF_ASK_SIZE, b"ask_size", top)
    if v < 0:
        return -1
    ras = get_sz_num(s, v, b"ask_size", 1, &as_)
    if ras < 0:
        return -1
    v = req(s, sl, KF_TIME, b"time", top)
    if v < 0 or get_ms(s, v, b"time", &ts) < 0:
        return -1
    if rbp or rbs:
        bp = DM_UNDEF_PRICE
        bs = 0
    if rap or ras:
        ap = DM_UNDEF_PRICE
        as_ = 0
    return emit_bbo(s, ts, bp, bs, ap, as_, 0, 0)


cdef class KrakenFuturesCodec(_Codec):
    """Kraken Futures websocket API v1 frames. Events (info, subscribed..., error/alert,
    pong) and the heartbeat feed -> 0 records; book_snapshot -> CLEAR + BOOK_DELTA
    (FLAG_SNAPSHOT), book -> one BOOK_DELTA, trade -> TRADE (side = taker side),
    trade_snapshot -> TRADE per entry (FLAG_SNAPSHOT), ticker_lite -> BBO (sizes 0,
    ts_event = ts_recv), ticker -> BBO (bid_size/ask_size, time). Prices and quantities are
    JSON numbers parsed exactly (exponents allowed); a null bid/ask is UNDEF_PRICE. Product ids
    are case-insensitive. ``first_seq``/``last_seq``: book/book_snapshot/trade ``seq``;
    trade_snapshot: its first/last entry's ``seq``. Venue doc: Kraken Futures WebSocket v1,
    Book, Trade, Ticker Lite, Ticker. Quantities are at the contract's size_precision
    (``add_symbol``); a value that cannot be represented is rejected alone (``value_errors``):
    that level / trade / BBO side is skipped, a book delta's ``seq`` still counts."""

    def __cinit__(self, *args, **kwargs):
        self.decoder = kf_decode
        self.venue = "KRAKEN_FUTURES"
