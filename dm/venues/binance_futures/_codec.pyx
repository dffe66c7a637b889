# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Binance USD-M (and COIN-M, ``dm.venues.binance_delivery``) futures websocket frames and REST
depth snapshots -> dm records. A subclass of the spot ``BinanceCodec`` (same combined-stream
envelope and stream names); what differs from spot (Binance USD-M Futures docs, "WebSocket
Market Streams"): ``depthUpdate`` carries ``pu`` (exposed as ``prev_seq``) and ``T``
(transaction time), ``bookTicker`` carries ``T``/``E``, the ``markPrice`` stream gives mark,
index, estimated settlement price and funding rate, and sizes are stored at each instrument's
``size_precision`` (a value that does not fit is rejected alone)."""
from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memset

from dm._records cimport *
from dm._scan cimport *
from dm._codec cimport _Codec, as_bytes
from dm.venues.binance._codec cimport BinanceCodec

from dm.errors import UnknownInstrumentError

# dm.records.StatType codes (dm's own, >= 1000)
cdef enum:
    ST_MARK = 1001
    ST_INDEX = 1002
    ST_FUNDING = 1003
    ST_LIQUIDATION = 1005
    ST_EST_SETTLE = 1006

cdef enum:
    FS_STREAM = 0
    FS_DATA
    FS_ID
    FS_e
    FS_E
    FS_T
    FS_s
    FS_a
    FS_p
    FS_q
    FS_m
    FS_u
    FS_U
    FS_pu
    FS_b
    FS_B
    FS_A
    FS_i
    FS_P
    FS_r
    FS_k
    FS_o
    FS_N


cdef int fs_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    cdef uint8_t c
    if n == 1:
        c = k[0]
        if c == c'e':
            return FS_e
        if c == c'E':
            return FS_E
        if c == c'T':
            return FS_T
        if c == c's':
            return FS_s
        if c == c'a':
            return FS_a
        if c == c'p':
            return FS_p
        if c == c'q':
            return FS_q
        if c == c'm':
            return FS_m
        if c == c'u':
            return FS_u
        if c == c'U':
            return FS_U
        if c == c'b':
            return FS_b
        if c == c'B':
            return FS_B
        if c == c'A':
            return FS_A
        if c == c'i':
            return FS_i
        if c == c'P':
            return FS_P
        if c == c'r':
            return FS_r
        if c == c'k':
            return FS_k
        if c == c'o':
            return FS_o
        return -1
    if n == 2:
        if k[0] == c'p' and k[1] == c'u':
            return FS_pu
        if k[0] == c'i' and k[1] == c'd':
            return FS_ID
        return -1
    if n == 4 and memcmp(k, b"data", 4) == 0:
        return FS_DATA
    if n == 6 and memcmp(k, b"stream", 6) == 0:
        return FS_STREAM
    return -1


cdef int fs_stream_kind(const uint8_t* t, Py_ssize_t n) noexcept nogil:
    """Stream name "<symbol>@<type>[@<speed>]" -> kind (0 = unknown)."""
    cdef Py_ssize_t j = 0, m
    cdef const uint8_t* r
    if raw_eq(t, n, b"!forceOrder@arr", 15):     # every symbol's liquidations
        return K_LIQUIDATION
    while j < n and t[j] != 64:
        j += 1
    if j >= n:
        return 0
    r = t + j + 1
    m = n - j - 1
    if raw_eq(r, m, b"aggTrade", 8):
        return K_AGGTRADE
    if raw_eq(r, m, b"bookTicker", 10):
        return K_BOOKTICKER
    if m >= 5 and memcmp(r, b"depth", 5) == 0:
        return K_DEPTHUPDATE
    if m >= 6 and memcmp(r, b"kline_", 6) == 0:
        return K_KLINE
    if m >= 9 and memcmp(r, b"markPrice", 9) == 0 and (m == 9 or r[9] == 64):
        return K_TICKER
    if raw_eq(r, m, b"forceOrder", 10):
        return K_LIQUIDATION
    return 0


cdef int fs_event_kind(const uint8_t* t, Py_ssize_t n) noexcept nogil:
    if raw_eq(t, n, b"aggTrade", 8):
        return K_AGGTRADE
    if raw_eq(t, n, b"bookTicker", 10):
        return K_BOOKTICKER
    if raw_eq(t, n, b"depthUpdate", 11):
        return K_DEPTHUPDATE
    if raw_eq(t, n, b"kline", 5):
        return K_KLINE
    if raw_eq(t, n, b"markPriceUpdate", 15):
        return K_TICKER
    if raw_eq(t, n, b"forceOrder", 10):
        return K_LIQUIDATION
    return 0


cdef uint64_t g_pu = 0     # pu of the frame being decoded (read by decode_c; GIL held)


cdef int fs_levels(CState* s, Py_ssize_t v, const char* field, uint8_t side, uint64_t ts, uint64_t seq,
                   uint8_t flags) noexcept nogil:
    """Array of [price, quantity] decimal-string pairs (extra elements ignored); a level whose
    price or quantity cannot be represented is dropped alone (value_reject)."""
    cdef Py_ssize_t endp = 0, w, e
    cdef Py_ssize_t el[2]
    cdef int64_t px = 0
    cdef uint64_t sz = 0
    cdef int r1, r2
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", field, w)
        e = pair_collect(s, w, el)
        if e <= 0:
            return e_codec(s, ERR_CODEC, b"expected [price, quantity]", field, w)
        r1 = get_px_str(s, el[0], field, &px)
        if r1 < 0:
            return -1
        r2 = get_sz_str(s, el[1], field, &sz)
        if r2 < 0:
            return -1
        if r1 == 0 and r2 == 0:
            if emit_level(s, ts, px, sz, seq, side, flags) < 0:
                return -1
        w = arr_next(s, e, &endp)
    return 0


cdef int fs_time(CState* s, Py_ssize_t* D, uint64_t* ts, uint8_t* flags) noexcept nogil:
    """ts_event: T (transaction time) when present, else E (event time), else ts_recv with
    FLAG_TS_EVENT_IS_RECV."""
    if D[FS_T] >= 0:
        return get_ms(s, D[FS_T], b"T", ts)
    if D[FS_E] >= 0:
        return get_ms(s, D[FS_E], b"E", ts)
    ts[0] = s.ts_recv
    flags[0] = FLAG_TS_EVENT_IS_RECV
    return 0


cdef int fs_trade(CState* s, Py_ssize_t* D, Py_ssize_t doff) noexcept nogil:
    """aggTrade: s, T, a, p, q, m. side 'A' when m (the buyer is the maker: the seller was the
    aggressor) else 'B'; trade_id = sequence = a. A trade whose price or quantity cannot be
    represented is dropped alone."""
    cdef Py_ssize_t v
    cdef uint64_t ts, tid, sz = 0
    cdef int64_t px = 0
    cdef bint m
    cdef int r1, r2
    v = req(s, D, FS_s, b"s", doff)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    v = req(s, D, FS_T, b"T", doff)
    if v < 0 or get_ms(s, v, b"T", &ts) < 0:
        return -1
    v = req(s, D, FS_a, b"a", doff)
    if v < 0 or get_u64(s, v, b"a", &tid) < 0:
        return -1
    v = req(s, D, FS_p, b"p", doff)
    if v < 0:
        return -1
    r1 = get_px_str(s, v, b"p", &px)
    if r1 < 0:
        return -1
    v = req(s, D, FS_q, b"q", doff)
    if v < 0:
        return -1
    r2 = get_sz_str(s, v, b"q", &sz)
    if r2 < 0:
        return -1
    v = req(s, D, FS_m, b"m", doff)
    if v < 0 or get_bool(s, v, b"m", &m) < 0:
        return -1
    if r1 != 0 or r2 != 0:
        return 0
    return emit_trade(s, ts, px, sz, tid, tid, SIDE_ASK if m else SIDE_BID, 0)


cdef int fs_bbo(CState* s, Py_ssize_t* D, Py_ssize_t doff) noexcept nogil:
    """bookTicker: s, T/E, u, b, B, a, A -> BBO, sequence = u. A side whose price or quantity
    cannot be represented is published empty (UNDEF_PRICE, 0)."""
    cdef Py_ssize_t v
    cdef uint64_t ts, u, bs = 0, as_ = 0
    cdef int64_t bp = 0, ap = 0
    cdef uint8_t flags = 0
    cdef int r1, r2
    v = req(s, D, FS_s, b"s", doff)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    if fs_time(s, D, &ts, &flags) < 0:
        return -1
    v = req(s, D, FS_u, b"u", doff)
    if v < 0 or get_u64(s, v, b"u", &u) < 0:
        return -1
    v = req(s, D, FS_b, b"b", doff)
    if v < 0:
        return -1
    r1 = get_px_str(s, v, b"b", &bp)
    if r1 < 0:
        return -1
    v = req(s, D, FS_B, b"B", doff)
    if v < 0:
        return -1
    r2 = get_sz_str(s, v, b"B", &bs)
    if r2 < 0:
        return -1
    if r1 != 0 or r2 != 0:
        bp = DM_UNDEF_PRICE
        bs = 0
    v = req(s, D, FS_a, b"a", doff)
    if v < 0:
        return -1
    r1 = get_px_str(s, v, b"a", &ap)
    if r1 < 0:
        return -1
    v = req(s, D, FS_A, b"A", doff)
    if v < 0:
        return -1
    r2 = get_sz_str(s, v, b"A", &as_)
    if r2 < 0:
        return -1
    if r1 != 0 or r2 != 0:
        ap = DM_UNDEF_PRICE
        as_ = 0
    s.first_seq = u
    s.last_seq = u
    return emit_bbo(s, ts, bp, bs, ap, as_, u, flags)


cdef int fs_depth(CState* s, Py_ssize_t* D, Py_ssize_t doff) noexcept nogil:
    """depthUpdate: s, T/E, U, u, pu, b, a -> one BOOK_DELTA per level, bids then asks,
    sequence = u, FLAG_LAST on the final record; first_seq/last_seq = U/u, pu -> prev_seq."""
    global g_pu
    cdef Py_ssize_t v, vb, va
    cdef uint64_t ts, U, u, pu
    cdef uint8_t flags = 0
    v = req(s, D, FS_s, b"s", doff)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    if D[FS_T] < 0 and D[FS_E] < 0:
        return e_codec(s, ERR_CODEC, b"missing field", b"E", doff)
    if fs_time(s, D, &ts, &flags) < 0:
        return -1
    v = req(s, D, FS_U, b"U", doff)
    if v < 0 or get_u64(s, v, b"U", &U) < 0:
        return -1
    v = req(s, D, FS_u, b"u", doff)
    if v < 0 or get_u64(s, v, b"u", &u) < 0:
        return -1
    v = req(s, D, FS_pu, b"pu", doff)
    if v < 0 or get_u64(s, v, b"pu", &pu) < 0:
        return -1
    vb = req(s, D, FS_b, b"b", doff)
    if vb < 0:
        return -1
    va = req(s, D, FS_a, b"a", doff)
    if va < 0:
        return -1
    if fs_levels(s, vb, b"b", SIDE_BID, ts, u, 0) < 0:
        return -1
    if fs_levels(s, va, b"a", SIDE_ASK, ts, u, 0) < 0:
        return -1
    set_last(s)
    s.first_seq = U
    s.last_seq = u
    g_pu = pu
    return 0


cdef int fs_stat_px(CState* s, Py_ssize_t v, const char* field, uint64_t ts, uint64_t ts_ref,
                    uint16_t stat_type) noexcept nogil:
    """One price-valued STATISTICS record from a decimal string; "" (no value, e.g. the
    funding rate of a dated future) or a value that cannot be represented -> none."""
    cdef int64_t px = 0
    cdef int r
    if v < 0:
        return 0
    if v + 1 < s.n and s.p[v] == 34 and s.p[v + 1] == 34:
        return 0
    r = get_px_str(s, v, field, &px)
    if r != 0:
        return r if r < 0 else 0
    return emit_stat(s, ts, ts_ref, px, 0x7FFFFFFFFFFFFFFF, 0, stat_type, 1, 0)


cdef int fs_mark(CState* s, Py_ssize_t* D, Py_ssize_t doff) noexcept nogil:
    """markPriceUpdate: s, E, p (mark), i (index), P (estimated settle), r (funding rate), T
    (next funding time, 0 for dated futures) -> STATISTICS MARK_PRICE, INDEX_PRICE,
    ESTIMATED_SETTLEMENT_PRICE, FUNDING_RATE (ts_ref = T; UNDEF when 0), in that order; each
    optional but p; ts_event = E."""
    cdef Py_ssize_t v
    cdef uint64_t ts, nft = DM_UNDEF_TIMESTAMP
    v = req(s, D, FS_s, b"s", doff)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    v = req(s, D, FS_E, b"E", doff)
    if v < 0 or get_ms(s, v, b"E", &ts) < 0:
        return -1
    if D[FS_T] >= 0:
        if get_ms(s, D[FS_T], b"T", &nft) < 0:
            return -1
        if nft == 0:
            nft = DM_UNDEF_TIMESTAMP
    v = req(s, D, FS_p, b"p", doff)
    if v < 0:
        return -1
    if fs_stat_px(s, v, b"p", ts, DM_UNDEF_TIMESTAMP, ST_MARK) < 0:
        return -1
    if fs_stat_px(s, D[FS_i], b"i", ts, DM_UNDEF_TIMESTAMP, ST_INDEX) < 0:
        return -1
    if fs_stat_px(s, D[FS_P], b"P", ts, DM_UNDEF_TIMESTAMP, ST_EST_SETTLE) < 0:
        return -1
    return fs_stat_px(s, D[FS_r], b"r", ts, nft, ST_FUNDING)


cdef enum:
    KL_t = 0
    KL_i
    KL_o
    KL_h
    KL_l
    KL_c
    KL_v
    KL_n
    KL_x
    KL_N


cdef int kl_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if n != 1:
        return -1
    if k[0] == c't':
        return KL_t
    if k[0] == c'i':
        return KL_i
    if k[0] == c'o':
        return KL_o
    if k[0] == c'h':
        return KL_h
    if k[0] == c'l':
        return KL_l
    if k[0] == c'c':
        return KL_c
    if k[0] == c'v':
        return KL_v
    if k[0] == c'n':
        return KL_n
    if k[0] == c'x':
        return KL_x
    return -1


cdef int kl_interval(const uint8_t* t, Py_ssize_t n, uint32_t* out) noexcept nogil:
    """"1m", "4h", "1d", "1w" -> seconds; "1M" (a calendar month) -> 0. -1: not an interval."""
    cdef Py_ssize_t j
    cdef uint64_t v = 0, unit
    if n < 2 or n > 4:
        return -1
    for j in range(n - 1):
        if not is_digit(t[j]):
            return -1
        v = v * 10 + (t[j] - 48)
    if t[n - 1] == c's':
        unit = 1
    elif t[n - 1] == c'm':
        unit = 60
    elif t[n - 1] == c'h':
        unit = 3600
    elif t[n - 1] == c'd':
        unit = 86400
    elif t[n - 1] == c'w':
        unit = 604800
    elif t[n - 1] == c'M':
        unit = 0
    else:
        return -1
    out[0] = <uint32_t>(v * unit)
    return 0


cdef int fs_kline(CState* s, Py_ssize_t* D, Py_ssize_t doff) noexcept nogil:
    """kline: s, k {t, i, o, h, l, c, v, n, x} -> one BAR when the bar is closed (x true; an
    open bar's updates -> 0 records): ts_event = t (the bar's start), prices 1e-9, volume = v
    (USD-M: base asset; COIN-M: contracts) at the instrument's size_precision, count = n,
    interval_s from i (0 for "1M", a calendar month). A bar with a value that cannot be
    represented is dropped alone."""
    cdef Py_ssize_t v, ko, a, b
    cdef Py_ssize_t K[KL_N]
    cdef uint64_t ts, n, vol = 0
    cdef int64_t px[4]
    cdef uint32_t ivl
    cdef bint closed
    cdef int j, r, bad = 0
    cdef BarRecord* rec
    cdef const char* names[4]
    names[0] = b"o"
    names[1] = b"h"
    names[2] = b"l"
    names[3] = b"c"
    v = req(s, D, FS_s, b"s", doff)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    ko = req(s, D, FS_k, b"k", doff)
    if ko < 0:
        return -1
    if s.p[ko] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"k", ko)
    if index_obj(s, ko, 2, kl_key, K, KL_N) < 0:
        return -1
    v = req(s, K, KL_x, b"x", ko)
    if v < 0 or get_bool(s, v, b"x", &closed) < 0:
        return -1
    v = req(s, K, KL_t, b"t", ko)
    if v < 0 or get_ms(s, v, b"t", &ts) < 0:
        return -1
    v = req(s, K, KL_i, b"i", ko)
    if v < 0 or get_str(s, v, b"i", &a, &b) < 0:
        return -1
    if kl_interval(s.p + a, b - a, &ivl) < 0:
        return e_codec(s, ERR_CODEC, b"unknown interval", b"i", v)
    for j in range(4):
        v = req(s, K, KL_o + j, names[j], ko)
        if v < 0:
            return -1
        r = get_px_str(s, v, names[j], &px[j])
        if r < 0:
            return -1
        bad |= r
    v = req(s, K, KL_v, b"v", ko)
    if v < 0:
        return -1
    r = get_sz_str(s, v, b"v", &vol)
    if r < 0:
        return -1
    bad |= r
    v = req(s, K, KL_n, b"n", ko)
    if v < 0 or get_u64(s, v, b"n", &n) < 0:
        return -1
    if bad or not closed:
        return 0
    rec = <BarRecord*>reserve(s, sizeof(BarRecord))
    if rec == NULL:
        return -1
    rec.hd.length = sizeof(BarRecord) // 4
    rec.hd.rtype = RTYPE_BAR
    rec.hd.publisher_id = s.publisher_id
    rec.hd.instrument_id = s.instrument_id
    rec.hd.ts_event = ts
    rec.open = px[0]
    rec.high = px[1]
    rec.low = px[2]
    rec.close = px[3]
    rec.volume = vol
    rec.interval_s = ivl
    if n > <uint64_t>0xFFFFFFFF:
        n = <uint64_t>0xFFFFFFFF
    rec.count = <uint32_t>n
    rec.flags = 0
    rec.size_precision = s.size_precision
    memset(rec._reserved, 0, 6)
    return 0


cdef enum:
    FO_s = 0
    FO_S
    FO_ap
    FO_z
    FO_T
    FO_N


cdef int fo_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if n == 1:
        if k[0] == c's':
            return FO_s
        if k[0] == c'S':
            return FO_S
        if k[0] == c'z':
            return FO_z
        if k[0] == c'T':
            return FO_T
        return -1
    if n == 2 and k[0] == c'a' and k[1] == c'p':
        return FO_ap
    return -1


cdef int fs_liquidation(CState* s, Py_ssize_t* D, Py_ssize_t doff) noexcept nogil:
    """forceOrder: o {s, S, ap, z, T} -> one STATISTICS LIQUIDATION: price = ap (average fill
    price), quantity = z (filled quantity, at the instrument's size_precision), ts_event = T,
    stat_flags = side of the liquidated order ('B' BUY, 'A' SELL). A value that cannot be
    represented drops the record alone."""
    cdef Py_ssize_t v, oo, a, b
    cdef Py_ssize_t O[FO_N]
    cdef uint64_t ts, qty = 0
    cdef int64_t px = 0
    cdef uint8_t side
    cdef int r1, r2
    oo = req(s, D, FS_o, b"o", doff)
    if oo < 0:
        return -1
    if s.p[oo] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"o", oo)
    if index_obj(s, oo, 2, fo_key, O, FO_N) < 0:
        return -1
    v = req(s, O, FO_s, b"s", oo)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    v = req(s, O, FO_S, b"S", oo)
    if v < 0 or get_str(s, v, b"S", &a, &b) < 0:
        return -1
    if raw_eq(s.p + a, b - a, b"BUY", 3):
        side = SIDE_BID
    elif raw_eq(s.p + a, b - a, b"SELL", 4):
        side = SIDE_ASK
    else:
        return e_codec(s, ERR_CODEC, b"invalid side", b"S", v)
    v = req(s, O, FO_T, b"T", oo)
    if v < 0 or get_ms(s, v, b"T", &ts) < 0:
        return -1
    v = req(s, O, FO_ap, b"ap", oo)
    if v < 0:
        return -1
    r1 = get_px_str(s, v, b"ap", &px)
    if r1 < 0:
        return -1
    v = req(s, O, FO_z, b"z", oo)
    if v < 0:
        return -1
    r2 = get_sz_str(s, v, b"z", &qty)
    if r2 < 0:
        return -1
    if r1 != 0 or r2 != 0:
        return 0
    return emit_stat(s, ts, DM_UNDEF_TIMESTAMP, px, <int64_t>qty, 0, ST_LIQUIDATION, 1, side)


cdef int fs_decode(CState* s) noexcept nogil:
    global g_pu
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n
    cdef Py_ssize_t top[FS_N]
    cdef Py_ssize_t dat[FS_N]
    cdef Py_ssize_t* D
    cdef Py_ssize_t i, v, e, ks = 0, ke = 0, a, b, doff
    cdef int j, slot, kind
    g_pu = 0
    for j in range(FS_N):
        top[j] = -1
        dat[j] = -1
    i = skip_ws(s, 0)
    if i >= n:
        return e_end(s)
    if p[i] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, i)
    v = obj_first(s, i, 0, &ks, &ke)
    while v > 0:
        slot = fs_key(p + ks, ke - ks)
        if slot == FS_DATA and v < n and p[v] == 123:
            top[FS_DATA] = v
            e = index_obj(s, v, 1, fs_key, dat, FS_N)
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
    if top[FS_STREAM] >= 0:
        v = top[FS_STREAM]
        if get_str(s, v, b"stream", &a, &b) < 0:
            return -1
        kind = fs_stream_kind(p + a, b - a)
        if kind == K_NONE:
            return e_codec(s, ERR_CODEC, b"unknown stream", b"stream", v)
        v = req(s, top, FS_DATA, b"data", i)
        if v < 0:
            return -1
        if p[v] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"data", v)
        D = dat
        doff = v
    else:
        D = top
        doff = i
        if top[FS_e] >= 0:
            v = top[FS_e]
            if get_str(s, v, b"e", &a, &b) < 0:
                return -1
            kind = fs_event_kind(p + a, b - a)
            if kind == K_NONE:
                return e_codec(s, ERR_CODEC, b"unknown event type", b"e", v)
        elif top[FS_ID] >= 0:
            kind = K_SUBSCRIPTION
        else:
            return e_codec(s, ERR_CODEC, b"missing field", b"e", i)
    s.kind = kind
    if kind == K_AGGTRADE:
        return fs_trade(s, D, doff)
    if kind == K_BOOKTICKER:
        return fs_bbo(s, D, doff)
    if kind == K_DEPTHUPDATE:
        return fs_depth(s, D, doff)
    if kind == K_TICKER:
        return fs_mark(s, D, doff)
    if kind == K_KLINE:
        return fs_kline(s, D, doff)
    if kind == K_LIQUIDATION:
        return fs_liquidation(s, D, doff)
    return 0      # subscription reply: no records


cdef enum:
    FR_ID = 0
    FR_T
    FR_BIDS
    FR_ASKS
    FR_N


cdef int fs_rest_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if raw_eq(k, n, b"lastUpdateId", 12):
        return FR_ID
    if n == 1 and k[0] == c'T':
        return FR_T
    if raw_eq(k, n, b"bids", 4):
        return FR_BIDS
    if raw_eq(k, n, b"asks", 4):
        return FR_ASKS
    return -1


cdef int fs_snapshot(CState* s) noexcept nogil:
    """REST order book: lastUpdateId, T (transaction time), bids, asks -> CLEAR + bids + asks,
    all FLAG_SNAPSHOT, ts_event = T (ts_recv and FLAG_TS_EVENT_IS_RECV when T is absent),
    sequence = lastUpdateId."""
    cdef Py_ssize_t sl[FR_N]
    cdef Py_ssize_t i, e, v, vb, va
    cdef uint64_t uid, ts
    cdef uint8_t flags = FLAG_SNAPSHOT
    i = skip_ws(s, 0)
    if i >= s.n:
        return e_end(s)
    if s.p[i] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, i)
    e = index_obj(s, i, 0, fs_rest_key, sl, FR_N)
    if e < 0:
        return -1
    e = skip_ws(s, e)
    if e < s.n:
        return e_byte(s, e)
    s.kind = K_DEPTHSNAPSHOT
    v = req(s, sl, FR_ID, b"lastUpdateId", i)
    if v < 0 or get_u64(s, v, b"lastUpdateId", &uid) < 0:
        return -1
    if sl[FR_T] >= 0:
        if get_ms(s, sl[FR_T], b"T", &ts) < 0:
            return -1
    else:
        ts = s.ts_recv
        flags = flags | FLAG_TS_EVENT_IS_RECV
    vb = req(s, sl, FR_BIDS, b"bids", i)
    if vb < 0:
        return -1
    va = req(s, sl, FR_ASKS, b"asks", i)
    if va < 0:
        return -1
    if emit_clear(s, ts, uid, flags) < 0:
        return -1
    if fs_levels(s, vb, b"bids", SIDE_BID, ts, uid, flags) < 0:
        return -1
    if fs_levels(s, va, b"asks", SIDE_ASK, ts, uid, flags) < 0:
        return -1
    set_last(s)
    s.first_seq = uid
    s.last_seq = uid
    return 0


cdef class BinanceFuturesCodec(BinanceCodec):
    """Binance USD-M futures websocket frames (combined-stream envelope {"stream": ..., "data":
    {...}} or the raw stream object with "e") and REST depth snapshots (Binance USD-M Futures
    docs, "WebSocket Market Streams": Aggregate Trade, Individual Symbol Book Ticker, Diff.
    Book Depth, Mark Price; REST "Order Book" GET /fapi/v1/depth).

    Kinds: aggTrade -> TRADE; bookTicker -> BBO; depthUpdate -> BOOK_DELTA per level;
    markPriceUpdate -> "ticker": STATISTICS (MARK_PRICE, INDEX_PRICE,
    ESTIMATED_SETTLEMENT_PRICE, FUNDING_RATE with ts_ref = next funding time); kline -> BAR
    once closed (``x`` true; updates of the open bar -> 0 records); forceOrder ->
    "liquidation": STATISTICS LIQUIDATION (average price, filled quantity, stat_flags = side of
    the liquidated order; Binance "Liquidation Order Streams"); subscription replies
    ({"result": ..., "id": ...}) -> 0 records. ts_event: T (transaction
    time) when the frame has it, else E. Sizes at the instrument's size_precision
    (``add_symbol``); prices 1e-9; a value that does not fit is rejected alone
    (``value_errors``): a level or trade is dropped, a BBO side published empty, a statistic
    left out. ``first_seq``/``last_seq``: depthUpdate U/u (``prev_seq`` = pu), bookTicker u/u,
    REST snapshot lastUpdateId; 0 for the rest."""

    def __cinit__(self, *args, **kwargs):
        self.decoder = fs_decode
        self.venue = "BINANCE_FUTURES"
        self.prev_seq = 0

    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1:
        cdef int rc
        self.prev_seq = 0
        rc = _Codec.decode_c(self, p, n, ts_recv)
        self.prev_seq = g_pu
        return rc

    def decode_snapshot(self, body, venue_symbol, uint64_t ts_recv):
        """REST ``GET /fapi/v1/depth`` (``/dapi/v1/depth``) body ({"lastUpdateId", "E", "T",
        "bids", "asks"}) for ``venue_symbol`` -> CLEAR + one BOOK_DELTA per level (bids then
        asks), all FLAG_SNAPSHOT, ts_event = T, sequence = lastUpdateId, FLAG_LAST on the final
        record; first_seq = last_seq = lastUpdateId. Returns the record count. Raises
        UnknownInstrumentError (field "symbol", offset -1) before looking at the body, then the
        errors of ``decode``."""
        cdef bytes k = as_bytes(venue_symbol)
        cdef bytes b = as_bytes(body)
        cdef CState* s = &self.st
        cdef SymEntry* e = sym_find(s, <const uint8_t*>PyBytes_AS_STRING(k), len(k))
        begin_frame(s, <const uint8_t*>PyBytes_AS_STRING(b), len(b), ts_recv)
        self.prev_seq = 0
        if e == NULL:
            raise UnknownInstrumentError(self.venue, f"unknown symbol {k.decode('utf-8', 'replace')!r}", "symbol", -1)
        s.instrument_id = e.id
        s.size_precision = e.size_precision
        if fs_snapshot(s) < 0:
            self._raise()
        s.counts[s.kind] += 1
        return s.nrec
