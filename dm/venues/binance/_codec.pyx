# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Binance spot websocket frames and REST depth snapshots -> dm records (the venue half of
``BinanceCodec``; the shared scanner is ``dm/_scan.pxd``, the base class ``dm._codec._Codec``)."""
from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp

from dm._records cimport *
from dm._scan cimport *
from dm._codec cimport _Codec, as_bytes

from dm.errors import UnknownInstrumentError


# ---------------------------------------------------------------------------------------------
# Binance spot ("WebSocket Streams": Aggregate Trade, Trade, Individual Symbol Book Ticker,
# Diff. Depth; REST "Order book" GET /api/v3/depth)

cdef enum:
    BS_STREAM = 0
    BS_DATA
    BS_ID
    BS_e
    BS_E
    BS_s
    BS_a
    BS_p
    BS_q
    BS_T
    BS_m
    BS_t
    BS_u
    BS_U
    BS_b
    BS_B
    BS_A
    BS_N


cdef int bn_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    cdef uint8_t c
    if n == 1:
        c = k[0]
        if c == c'e':
            return BS_e
        if c == c'E':
            return BS_E
        if c == c's':
            return BS_s
        if c == c'a':
            return BS_a
        if c == c'p':
            return BS_p
        if c == c'q':
            return BS_q
        if c == c'T':
            return BS_T
        if c == c'm':
            return BS_m
        if c == c't':
            return BS_t
        if c == c'u':
            return BS_u
        if c == c'U':
            return BS_U
        if c == c'b':
            return BS_b
        if c == c'B':
            return BS_B
        if c == c'A':
            return BS_A
        return -1
    if n == 4 and memcmp(k, b"data", 4) == 0:
        return BS_DATA
    if n == 6 and memcmp(k, b"stream", 6) == 0:
        return BS_STREAM
    if n == 2 and k[0] == c'i' and k[1] == c'd':
        return BS_ID
    return -1


cdef int bn_stream_kind(const uint8_t* t, Py_ssize_t n) noexcept nogil:
    """Stream name "<symbol>@<type>" -> kind (0 = unknown)."""
    cdef Py_ssize_t j = 0, m
    cdef const uint8_t* r
    while j < n and t[j] != 64:
        j += 1
    if j >= n:
        return 0
    r = t + j + 1
    m = n - j - 1
    if raw_eq(r, m, b"aggTrade", 8):
        return K_AGGTRADE
    if raw_eq(r, m, b"trade", 5):
        return K_TRADE
    if raw_eq(r, m, b"bookTicker", 10):
        return K_BOOKTICKER
    if m >= 5 and memcmp(r, b"depth", 5) == 0 and (m == 5 or r[5] == 64):
        return K_DEPTHUPDATE
    if m >= 6 and memcmp(r, b"kline_", 6) == 0:
        return K_KLINE
    return 0


cdef int bn_event_kind(const uint8_t* t, Py_ssize_t n) noexcept nogil:
    if raw_eq(t, n, b"aggTrade", 8):
        return K_AGGTRADE
    if raw_eq(t, n, b"trade", 5):
        return K_TRADE
    if raw_eq(t, n, b"depthUpdate", 11):
        return K_DEPTHUPDATE
    if raw_eq(t, n, b"kline", 5):
        return K_KLINE
    return 0


cdef int bn_levels(CState* s, Py_ssize_t v, const char* field, uint8_t side, uint64_t ts_event,
                   uint64_t seq, uint8_t flags) noexcept nogil:
    """Array of [price, quantity] decimal-string pairs (extra elements ignored). A level whose
    price or quantity cannot be represented is rejected alone (value_reject) and skipped."""
    cdef Py_ssize_t endp = 0, w, e
    cdef Py_ssize_t el[2]
    cdef int64_t px
    cdef uint64_t sz
    cdef int rp, rs
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", field, w)
        e = pair_collect(s, w, el)
        if e <= 0:
            return e_codec(s, ERR_CODEC, b"expected [price, quantity]", field, w)
        rp = get_px_str(s, el[0], field, &px)
        if rp < 0:
            return -1
        rs = get_sz_str(s, el[1], field, &sz)
        if rs < 0:
            return -1
        if rp == 0 and rs == 0 and emit_level(s, ts_event, px, sz, seq, side, flags) < 0:
            return -1
        w = arr_next(s, e, &endp)
    return 0


cdef int bn_trade(CState* s, Py_ssize_t* D, Py_ssize_t doff, int kind) noexcept nogil:
    """aggTrade: s, T, a, p, q, m; trade: s, T, t, p, q, m. side 'A' when m (the buyer is the
    maker, so the seller was the aggressor) else 'B'; trade_id = sequence = a (t). A price or
    quantity that cannot be represented drops the trade alone (value_reject)."""
    cdef Py_ssize_t v
    cdef uint64_t ts, tid, sz
    cdef int64_t px
    cdef bint m
    cdef int rp, rs
    v = req(s, D, BS_s, b"s", doff)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    v = req(s, D, BS_T, b"T", doff)
    if v < 0 or get_ms(s, v, b"T", &ts) < 0:
        return -1
    if kind == K_AGGTRADE:
        v = req(s, D, BS_a, b"a", doff)
        if v < 0 or get_u64(s, v, b"a", &tid) < 0:
            return -1
    else:
        v = req(s, D, BS_t, b"t", doff)
        if v < 0 or get_u64(s, v, b"t", &tid) < 0:
            return -1
    v = req(s, D, BS_p, b"p", doff)
    if v < 0:
        return -1
    rp = get_px_str(s, v, b"p", &px)
    if rp < 0:
        return -1
    v = req(s, D, BS_q, b"q", doff)
    if v < 0:
        return -1
    rs = get_sz_str(s, v, b"q", &sz)
    if rs < 0:
        return -1
    v = req(s, D, BS_m, b"m", doff)
    if v < 0 or get_bool(s, v, b"m", &m) < 0:
        return -1
    if rp or rs:
        return 0
    return emit_trade(s, ts, px, sz, tid, tid, SIDE_ASK if m else SIDE_BID, 0)


cdef int bn_bbo(CState* s, Py_ssize_t* D, Py_ssize_t doff) noexcept nogil:
    """bookTicker: s, E (optional), u, b, B, a, A. The spot stream has no event time:
    ts_event = ts_recv and FLAG_TS_EVENT_IS_RECV unless E is present."""
    cdef Py_ssize_t v
    cdef uint64_t ts, u, bs, as_
    cdef int64_t bp, ap
    cdef uint8_t flags = 0
    cdef int rbp, rbs, rap, ras
    v = req(s, D, BS_s, b"s", doff)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    if D[BS_E] >= 0:
        if get_ms(s, D[BS_E], b"E", &ts) < 0:
            return -1
    else:
        ts = s.ts_recv
        flags = FLAG_TS_EVENT_IS_RECV
    v = req(s, D, BS_u, b"u", doff)
    if v < 0 or get_u64(s, v, b"u", &u) < 0:
        return -1
    v = req(s, D, BS_b, b"b", doff)
    if v < 0:
        return -1
    rbp = get_px_str(s, v, b"b", &bp)
    if rbp < 0:
        return -1
    v = req(s, D, BS_B, b"B", doff)
    if v < 0:
        return -1
    rbs = get_sz_str(s, v, b"B", &bs)
    if rbs < 0:
        return -1
    v = req(s, D, BS_a, b"a", doff)
    if v < 0:
        return -1
    rap = get_px_str(s, v, b"a", &ap)
    if rap < 0:
        return -1
    v = req(s, D, BS_A, b"A", doff)
    if v < 0:
        return -1
    ras = get_sz_str(s, v, b"A", &as_)
    if ras < 0:
        return -1
    if rbp or rbs:                  # a side with a value rejected alone: no side
        bp = DM_UNDEF_PRICE
        bs = 0
    if rap or ras:
        ap = DM_UNDEF_PRICE
        as_ = 0
    s.first_seq = u
    s.last_seq = u
    return emit_bbo(s, ts, bp, bs, ap, as_, u, flags)


cdef int bn_depth(CState* s, Py_ssize_t* D, Py_ssize_t doff) noexcept nogil:
    """depthUpdate: s, E, U, u, b, a -> one BOOK_DELTA per level, bids then asks,
    sequence = u, FLAG_LAST on the final record; first_seq/last_seq = U/u."""
    cdef Py_ssize_t v, vb, va
    cdef uint64_t ts, U, u
    v = req(s, D, BS_s, b"s", doff)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    v = req(s, D, BS_E, b"E", doff)
    if v < 0 or get_ms(s, v, b"E", &ts) < 0:
        return -1
    v = req(s, D, BS_U, b"U", doff)
    if v < 0 or get_u64(s, v, b"U", &U) < 0:
        return -1
    v = req(s, D, BS_u, b"u", doff)
    if v < 0 or get_u64(s, v, b"u", &u) < 0:
        return -1
    vb = req(s, D, BS_b, b"b", doff)
    if vb < 0:
        return -1
    va = req(s, D, BS_a, b"a", doff)
    if va < 0:
        return -1
    if bn_levels(s, vb, b"b", SIDE_BID, ts, u, 0) < 0:
        return -1
    if bn_levels(s, va, b"a", SIDE_ASK, ts, u, 0) < 0:
        return -1
    set_last(s)
    s.first_seq = U
    s.last_seq = u
    return 0


cdef int bn_decode(CState* s) noexcept nogil:
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n
    cdef Py_ssize_t top[BS_N]
    cdef Py_ssize_t dat[BS_N]
    cdef Py_ssize_t* D
    cdef Py_ssize_t i, v, w, e, ks = 0, ke = 0, a, b, doff
    cdef int j, slot, kind
    for j in range(BS_N):
        top[j] = -1
        dat[j] = -1
    i = skip_ws(s, 0)
    if i >= n:
        return e_end(s)
    if p[i] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, i)
    # one validating pass over the frame; the "data" object is indexed on the way
    v = obj_first(s, i, 0, &ks, &ke)
    while v > 0:
        slot = bn_key(p + ks, ke - ks)
        if slot == BS_DATA and v < n and p[v] == 123:
            top[BS_DATA] = v
            e = index_obj(s, v, 1, bn_key, dat, BS_N)
        else:
            if slot >= 0:
                top[slot] = v
            e = skip_member(s, v, 1)
        if e < 0:
            return -1
        v = obj_next(s, e, &ks, &ke)
    if v < 0:
        return -1
    e = skip_ws(s, ks)
    if e < n:
        return e_byte(s, e)
    # which stream
    if top[BS_STREAM] >= 0:
        v = top[BS_STREAM]
        if get_str(s, v, b"stream", &a, &b) < 0:
            return -1
        kind = bn_stream_kind(p + a, b - a)
        if kind == K_NONE:
            return e_codec(s, ERR_CODEC, b"unknown stream", b"stream", v)
        v = req(s, top, BS_DATA, b"data", i)
        if v < 0:
            return -1
        if p[v] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"data", v)
        D = dat
        doff = v
    else:
        D = top
        doff = i
        if top[BS_e] >= 0:
            v = top[BS_e]
            if get_str(s, v, b"e", &a, &b) < 0:
                return -1
            kind = bn_event_kind(p + a, b - a)
            if kind == K_NONE:
                return e_codec(s, ERR_CODEC, b"unknown event type", b"e", v)
        elif top[BS_ID] >= 0:
            kind = K_SUBSCRIPTION
        else:
            kind = K_BOOKTICKER
    s.kind = kind
    if kind == K_AGGTRADE or kind == K_TRADE:
        return bn_trade(s, D, doff, kind)
    if kind == K_BOOKTICKER:
        return bn_bbo(s, D, doff)
    if kind == K_DEPTHUPDATE:
        return bn_depth(s, D, doff)
    return 0      # kline, subscription: no records


cdef enum:
    BR_ID = 0
    BR_BIDS
    BR_ASKS
    BR_N


cdef int bn_rest_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if raw_eq(k, n, b"lastUpdateId", 12):
        return BR_ID
    if raw_eq(k, n, b"bids", 4):
        return BR_BIDS
    if raw_eq(k, n, b"asks", 4):
        return BR_ASKS
    return -1


cdef int bn_snapshot(CState* s) noexcept nogil:
    """REST order book: lastUpdateId, bids, asks -> CLEAR + bids + asks, all FLAG_SNAPSHOT |
    FLAG_TS_EVENT_IS_RECV (the body has no event time), sequence = lastUpdateId."""
    cdef Py_ssize_t sl[BR_N]
    cdef Py_ssize_t i, e, v, vb, va
    cdef uint64_t uid
    cdef uint8_t flags = FLAG_SNAPSHOT | FLAG_TS_EVENT_IS_RECV
    i = skip_ws(s, 0)
    if i >= s.n:
        return e_end(s)
    if s.p[i] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, i)
    e = index_obj(s, i, 0, bn_rest_key, sl, BR_N)
    if e < 0:
        return -1
    e = skip_ws(s, e)
    if e < s.n:
        return e_byte(s, e)
    s.kind = K_DEPTHSNAPSHOT
    v = req(s, sl, BR_ID, b"lastUpdateId", i)
    if v < 0 or get_u64(s, v, b"lastUpdateId", &uid) < 0:
        return -1
    vb = req(s, sl, BR_BIDS, b"bids", i)
    if vb < 0:
        return -1
    va = req(s, sl, BR_ASKS, b"asks", i)
    if va < 0:
        return -1
    if emit_clear(s, s.ts_recv, uid, flags) < 0:
        return -1
    if bn_levels(s, vb, b"bids", SIDE_BID, s.ts_recv, uid, flags) < 0:
        return -1
    if bn_levels(s, va, b"asks", SIDE_ASK, s.ts_recv, uid, flags) < 0:
        return -1
    set_last(s)
    s.first_seq = uid
    s.last_seq = uid
    return 0


cdef class BinanceCodec(_Codec):
    """Binance spot websocket frames (combined-stream envelope {"stream": ..., "data": {...}}
    or the raw stream object) and REST depth snapshots.

    Kinds: aggTrade / trade -> TRADE; bookTicker -> BBO; depthUpdate -> BOOK_DELTA per level;
    kline and subscription replies ({"result": ..., "id": ...}) -> 0 records. Envelope: the
    kind comes from the stream name after '@'; raw form: from "e" (none: bookTicker, or a
    subscription reply when "id" is present). Prices are i64 at 1e-9, quantities at the
    symbol's size_precision (``add_symbol``; the worker registers max(baseAssetPrecision,
    LOT_SIZE stepSize decimals)); a value that cannot be represented is rejected alone
    (``value_errors``): that trade / level / BBO side is skipped. Venue doc: Binance Spot
    "WebSocket Streams".
    Field check order: aggTrade s,T,a,p,q,m; trade s,T,t,p,q,m; bookTicker s,E?,u,b,B,a,A;
    depthUpdate s,E,U,u,b,a. ``first_seq``/``last_seq``: depthUpdate U/u, bookTicker u/u,
    REST snapshot lastUpdateId; 0 for trades."""

    def __cinit__(self, *args, **kwargs):
        self.decoder = bn_decode
        self.venue = "BINANCE"

    def decode_snapshot(self, body, venue_symbol, uint64_t ts_recv):
        """REST ``GET /api/v3/depth`` body ({"lastUpdateId", "bids", "asks"}) for
        ``venue_symbol`` -> CLEAR + one BOOK_DELTA per level (bids then asks), all with
        FLAG_SNAPSHOT and FLAG_TS_EVENT_IS_RECV (ts_event = ts_recv), sequence = lastUpdateId,
        FLAG_LAST on the final record; first_seq = last_seq = lastUpdateId. Returns the record
        count. Raises UnknownInstrumentError (field "symbol", offset -1) before looking at the
        body, then the errors of ``decode``."""
        cdef bytes k = as_bytes(venue_symbol)
        cdef bytes b = as_bytes(body)
        cdef CState* s = &self.st
        cdef SymEntry* e = sym_find(s, <const uint8_t*>PyBytes_AS_STRING(k), len(k))
        begin_frame(s, <const uint8_t*>PyBytes_AS_STRING(b), len(b), ts_recv)
        if e == NULL:
            raise UnknownInstrumentError(self.venue, f"unknown symbol {k.decode('utf-8', 'replace')!r}", "symbol", -1)
        s.instrument_id = e.id
        s.size_precision = e.size_precision
        if bn_snapshot(s) < 0:
            self._raise()
        s.counts[s.kind] += 1
        return s.nrec
