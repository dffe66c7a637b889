# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Coinbase websocket frames -> dm records, both public feeds in one codec (the venue half of
``CoinbaseCodec``; the shared scanner is ``dm/_scan.pxd``, the base class ``dm._codec._Codec``).
A frame with a ``channel`` member is Advanced Trade, one with only a ``type`` member is the
Exchange feed. See the class docstring for the mapping; rules are cited there.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from dm._records cimport *
from dm._scan cimport *
from dm._codec cimport _Codec

cdef enum:
    CB_TYPE = 0
    CB_PRODUCT
    CB_BIDS
    CB_ASKS
    CB_CHANGES
    CB_TIME
    CB_TRADE_ID
    CB_SEQUENCE
    CB_SIDE
    CB_SIZE
    CB_PRICE
    CB_BEST_BID
    CB_BEST_ASK
    CB_BEST_BID_SIZE
    CB_BEST_ASK_SIZE
    CB_MESSAGE
    CB_CHANNEL
    CB_TIMESTAMP
    CB_SEQNUM
    CB_EVENTS
    CB_UPDATES
    CB_TRADES
    CB_TICKERS
    CB_EVENT_TIME
    CB_PRICE_LEVEL
    CB_NEW_QTY
    CB_BEST_BID_QTY
    CB_BEST_ASK_QTY
    CB_N


cdef int cb_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if n == 4:
        if memcmp(k, b"type", 4) == 0:
            return CB_TYPE
        if memcmp(k, b"time", 4) == 0:
            return CB_TIME
        if memcmp(k, b"side", 4) == 0:
            return CB_SIDE
        if memcmp(k, b"size", 4) == 0:
            return CB_SIZE
        if memcmp(k, b"bids", 4) == 0:
            return CB_BIDS
        if memcmp(k, b"asks", 4) == 0:
            return CB_ASKS
        return -1
    if n == 5:
        if memcmp(k, b"price", 5) == 0:
            return CB_PRICE
        return -1
    if n == 6:
        if memcmp(k, b"events", 6) == 0:
            return CB_EVENTS
        if memcmp(k, b"trades", 6) == 0:
            return CB_TRADES
        return -1
    if n == 7:
        if memcmp(k, b"changes", 7) == 0:
            return CB_CHANGES
        if memcmp(k, b"channel", 7) == 0:
            return CB_CHANNEL
        if memcmp(k, b"updates", 7) == 0:
            return CB_UPDATES
        if memcmp(k, b"tickers", 7) == 0:
            return CB_TICKERS
        if memcmp(k, b"message", 7) == 0:
            return CB_MESSAGE
        return -1
    if n == 8:
        if memcmp(k, b"trade_id", 8) == 0:
            return CB_TRADE_ID
        if memcmp(k, b"sequence", 8) == 0:
            return CB_SEQUENCE
        if memcmp(k, b"best_bid", 8) == 0:
            return CB_BEST_BID
        if memcmp(k, b"best_ask", 8) == 0:
            return CB_BEST_ASK
        return -1
    if n == 9:
        if memcmp(k, b"timestamp", 9) == 0:
            return CB_TIMESTAMP
        return -1
    if n == 10:
        if memcmp(k, b"product_id", 10) == 0:
            return CB_PRODUCT
        if memcmp(k, b"event_time", 10) == 0:
            return CB_EVENT_TIME
        return -1
    if n == 11:
        if memcmp(k, b"price_level", 11) == 0:
            return CB_PRICE_LEVEL
        return -1
    if n == 12:
        if memcmp(k, b"sequence_num", 12) == 0:
            return CB_SEQNUM
        if memcmp(k, b"new_quantity", 12) == 0:
            return CB_NEW_QTY
        return -1
    if n == 13:
        if memcmp(k, b"best_bid_size", 13) == 0:
            return CB_BEST_BID_SIZE
        if memcmp(k, b"best_ask_size", 13) == 0:
            return CB_BEST_ASK_SIZE
        return -1
    if n == 17:
        if memcmp(k, b"best_bid_quantity", 17) == 0:
            return CB_BEST_BID_QTY
        if memcmp(k, b"best_ask_quantity", 17) == 0:
            return CB_BEST_ASK_QTY
        return -1
    return -1


cdef CbFrame* _fr = NULL          # the decoding codec's per-frame results (GIL held during decode)

# the last ISO-8601 text parsed and its value: Advanced Trade repeats one event_time over every
# level of an event, so most levels skip the parse (decode runs with the GIL held: one decoder
# at a time in the process)
cdef uint8_t _iso_last[40]
cdef Py_ssize_t _iso_len = 0
cdef uint64_t _iso_val = 0


# ---------------------------------------------------------------------------------------------
# field helpers

cdef inline int dig2(const uint8_t* p, int* out) noexcept nogil:
    if not (is_digit(p[0]) and is_digit(p[1])):
        return -1
    out[0] = (p[0] - 48) * 10 + (p[1] - 48)
    return 0


cdef int get_iso(CState* s, Py_ssize_t v, const char* field, uint64_t* out) noexcept nogil:
    """ISO-8601 UTC string ``YYYY-MM-DDTHH:MM:SS[.f]Z`` (1 to 9 fraction digits, year >= 1970)
    -> ns since the epoch (u64), exact. Anything else is a frame error ("invalid timestamp"; a
    valid time after 2554-07-21 that does not fit u64 ns: "timestamp out of range")."""
    cdef Py_ssize_t a, b
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    return iso_text(s, a, b, field, v, out)


cdef int iso_text(CState* s, Py_ssize_t a, Py_ssize_t b, const char* field, Py_ssize_t v,
                  uint64_t* out) noexcept nogil:
    """``get_iso`` of the string whose text is ``s.p[a:b]`` (the value at ``v``)."""
    global _iso_len, _iso_val
    cdef Py_ssize_t i, nf
    cdef const uint8_t* p
    cdef int y1 = 0, y2 = 0, mo = 0, d = 0, hh = 0, mi = 0, ss = 0
    cdef int64_t y, era, yoe, doy, doe, days, mm
    cdef uint64_t frac = 0
    p = s.p + a
    if b - a == _iso_len and memcmp(p, _iso_last, b - a) == 0:
        out[0] = _iso_val
        return 0
    if (b - a < 20 or p[4] != 45 or p[7] != 45 or p[10] != 84 or p[13] != 58 or p[16] != 58
            or dig2(p, &y1) < 0 or dig2(p + 2, &y2) < 0 or dig2(p + 5, &mo) < 0 or dig2(p + 8, &d) < 0
            or dig2(p + 11, &hh) < 0 or dig2(p + 14, &mi) < 0 or dig2(p + 17, &ss) < 0):
        return e_codec(s, ERR_CODEC, b"invalid timestamp", field, v)
    i = 19
    nf = 0
    if p[i] == 46:
        i += 1
        while i < b - a and is_digit(p[i]):
            if nf == 9:
                return e_codec(s, ERR_CODEC, b"invalid timestamp", field, v)
            frac = frac * 10 + (p[i] - 48)
            nf += 1
            i += 1
        if nf == 0:
            return e_codec(s, ERR_CODEC, b"invalid timestamp", field, v)
    if i != b - a - 1 or p[i] != 90:
        return e_codec(s, ERR_CODEC, b"invalid timestamp", field, v)
    y = y1 * 100 + y2
    if y < 1970 or mo < 1 or mo > 12 or d < 1 or d > 31 or hh > 23 or mi > 59 or ss > 59:
        return e_codec(s, ERR_CODEC, b"invalid timestamp", field, v)
    if d > 30 and (mo == 4 or mo == 6 or mo == 9 or mo == 11):
        return e_codec(s, ERR_CODEC, b"invalid timestamp", field, v)
    if mo == 2 and d > (29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28):
        return e_codec(s, ERR_CODEC, b"invalid timestamp", field, v)
    # days from civil (proleptic Gregorian)
    if mo <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mm = mo + 9 if mo <= 2 else mo - 3
    doy = (153 * mm + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    while nf < 9:
        frac *= 10
        nf += 1
    if (dm_mul_u64(<uint64_t>(days * 86400 + hh * 3600 + mi * 60 + ss), 1000000000ULL, out)
            or dm_add_u64(out[0], frac, out)):
        return e_codec(s, ERR_CODEC, b"timestamp out of range", field, v)
    if b - a <= 40:
        memcpy(_iso_last, p, b - a)
        _iso_len = b - a
        _iso_val = out[0]
    return 0


cdef uint64_t trade_id_text(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Advanced Trade ``trade_id`` text -> integer <= i64 max (storage keeps trade ids in
    BIGINT): its value when it is 1..19 decimal digits that fit, else FNV-1a 64 of its bytes
    with the top bit cleared."""
    cdef Py_ssize_t i
    cdef uint64_t acc = 0, h = 14695981039346656037ULL
    cdef bint digits = n > 0 and n <= 19
    if digits:
        for i in range(n):
            if not is_digit(p[i]):
                digits = 0
                break
            acc = acc * 10 + (p[i] - 48)
        if digits and acc <= <uint64_t>0x7FFFFFFFFFFFFFFF:
            return acc
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h & <uint64_t>0x7FFFFFFFFFFFFFFF


cdef int side_of(CState* s, Py_ssize_t v, const char* field, uint8_t* out) noexcept nogil:
    """Book side: ``buy``/``bid`` -> SIDE_BID, ``sell``/``offer``/``ask`` -> SIDE_ASK."""
    cdef Py_ssize_t a, b
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    return side_text(s, a, b, field, v, out)


cdef int side_text(CState* s, Py_ssize_t a, Py_ssize_t b, const char* field, Py_ssize_t v,
                   uint8_t* out) noexcept nogil:
    """``side_of`` of the string whose text is ``s.p[a:b]`` (the value at ``v``)."""
    if raw_eq(s.p + a, b - a, b"buy", 3) or raw_eq(s.p + a, b - a, b"bid", 3):
        out[0] = SIDE_BID
    elif (raw_eq(s.p + a, b - a, b"sell", 4) or raw_eq(s.p + a, b - a, b"offer", 5)
          or raw_eq(s.p + a, b - a, b"ask", 3)):
        out[0] = SIDE_ASK
    else:
        return e_codec(s, ERR_CODEC, b"invalid side", field, v)
    return 0


cdef int aggressor_of(CState* s, Py_ssize_t v, const char* field, uint8_t* out) noexcept nogil:
    """Trade ``side`` is the MAKER order's side (Exchange "Matches channel": "The side field
    indicates the maker order side"; Advanced Trade ``market_trades`` the same, checked on the
    recording: a ``SELL`` prints at the best ask). dm's trade side is the aggressor's: the
    opposite. ``buy``/``BUY`` -> SIDE_ASK, ``sell``/``SELL`` -> SIDE_BID."""
    cdef Py_ssize_t a, b
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    if raw_eq(s.p + a, b - a, b"buy", 3) or raw_eq(s.p + a, b - a, b"BUY", 3):
        out[0] = SIDE_ASK
    elif raw_eq(s.p + a, b - a, b"sell", 4) or raw_eq(s.p + a, b - a, b"SELL", 4):
        out[0] = SIDE_BID
    else:
        return e_codec(s, ERR_CODEC, b"invalid side", field, v)
    return 0


cdef int req_level(CState* s, Py_ssize_t* idx, int kp, const char* fp, int ks, const char* fs, Py_ssize_t obj,
                   int64_t* px, uint64_t* sz) noexcept nogil:
    """The required price (member ``kp``, named ``fp``) and size (``ks``/``fs``) strings of the
    object at ``obj`` (indexed in ``idx``): -1 on an error, 1 when either was rejected alone
    (the level or trade is dropped alone), else 0."""
    cdef Py_ssize_t x = req(s, idx, kp, fp, obj)
    cdef int r1, r2
    if x < 0:
        return -1
    r1 = get_px_str(s, x, fp, px)
    if r1 < 0:
        return -1
    x = req(s, idx, ks, fs, obj)
    if x < 0:
        return -1
    r2 = get_sz_str(s, x, fs, sz)
    if r2 < 0:
        return -1
    return 1 if r1 or r2 else 0


cdef int bbo_side(CState* s, Py_ssize_t vp, Py_ssize_t vs, const char* fp, const char* fs,
                  int64_t* px, uint64_t* sz) noexcept nogil:
    """One BBO side: price (required) and size (optional: 0). A value rejected alone empties the
    side (UNDEF_PRICE, 0)."""
    cdef int r1, r2 = 0
    r1 = get_px_str(s, vp, fp, px)
    if r1 < 0:
        return -1
    sz[0] = 0
    if vs >= 0:
        r2 = get_sz_str(s, vs, fs, sz)
        if r2 < 0:
            return -1
    if r1 or r2:
        px[0] = DM_UNDEF_PRICE
        sz[0] = 0
    return 0


cdef int pair_levels(CState* s, Py_ssize_t v, const char* field, uint8_t side, uint64_t ts, uint8_t flags) noexcept nogil:
    """Exchange snapshot ``bids``/``asks``: array of [price, size, ...] strings; a level whose
    price or size cannot be represented is dropped alone."""
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
            return e_codec(s, ERR_CODEC, b"expected [price, size]", field, w)
        r1 = get_px_str(s, el[0], field, &px)
        if r1 < 0:
            return -1
        r2 = get_sz_str(s, el[1], field, &sz)
        if r2 < 0:
            return -1
        if r1 == 0 and r2 == 0:
            if emit_level(s, ts, px, sz, 0, side, flags) < 0:
                return -1
        w = arr_next(s, e, &endp)
    return 0


# ---------------------------------------------------------------------------------------------
# Exchange feed (ws-feed): {"type": ...}

cdef int ex_snapshot(CState* s, Py_ssize_t* sl, Py_ssize_t top) noexcept nogil:
    cdef Py_ssize_t v, vb, va
    cdef uint64_t ts = s.ts_recv
    v = req(s, sl, CB_PRODUCT, b"product_id", top)
    if v < 0 or lookup(s, v, b"product_id") < 0:
        return -1
    if sl[CB_TIME] >= 0 and get_iso(s, sl[CB_TIME], b"time", &ts) < 0:
        return -1
    vb = req(s, sl, CB_BIDS, b"bids", top)
    if vb < 0:
        return -1
    va = req(s, sl, CB_ASKS, b"asks", top)
    if va < 0:
        return -1
    s.kind = K_BOOKSNAPSHOT
    if emit_clear(s, ts, 0, FLAG_SNAPSHOT) < 0:
        return -1
    if pair_levels(s, vb, b"bids", SIDE_BID, ts, FLAG_SNAPSHOT) < 0:
        return -1
    if pair_levels(s, va, b"asks", SIDE_ASK, ts, FLAG_SNAPSHOT) < 0:
        return -1
    set_last(s)
    return 0


cdef int ex_l2update(CState* s, Py_ssize_t* sl, Py_ssize_t top) noexcept nogil:
    cdef Py_ssize_t v, w, e, endp = 0
    cdef Py_ssize_t el[3]
    cdef uint64_t ts, sz = 0
    cdef int64_t px = 0
    cdef uint8_t side
    cdef int r1, r2
    v = req(s, sl, CB_PRODUCT, b"product_id", top)
    if v < 0 or lookup(s, v, b"product_id") < 0:
        return -1
    v = req(s, sl, CB_TIME, b"time", top)
    if v < 0 or get_iso(s, v, b"time", &ts) < 0:
        return -1
    v = req(s, sl, CB_CHANGES, b"changes", top)
    if v < 0:
        return -1
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"changes", v)
    s.kind = K_BOOK
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", b"changes", w)
        if arr_collect(s, w, el, 3) < 3:
            return e_codec(s, ERR_CODEC, b"expected [side, price, size]", b"changes", w)
        if side_of(s, el[0], b"changes", &side) < 0:
            return -1
        r1 = get_px_str(s, el[1], b"changes", &px)
        if r1 < 0:
            return -1
        r2 = get_sz_str(s, el[2], b"changes", &sz)
        if r2 < 0:
            return -1
        if r1 == 0 and r2 == 0:
            if emit_level(s, ts, px, sz, 0, side, 0) < 0:
                return -1
        e = skip_value(s, w, 0)
        w = arr_next(s, e, &endp)
    set_last(s)
    return 0


cdef int ex_match(CState* s, Py_ssize_t* sl, Py_ssize_t top, bint last) noexcept nogil:
    cdef Py_ssize_t v
    cdef uint64_t ts, tid, seq, sz = 0
    cdef int64_t px = 0
    cdef uint8_t side
    cdef int r
    v = req(s, sl, CB_PRODUCT, b"product_id", top)
    if v < 0 or lookup(s, v, b"product_id") < 0:
        return -1
    v = req(s, sl, CB_TIME, b"time", top)
    if v < 0 or get_iso(s, v, b"time", &ts) < 0:
        return -1
    v = req(s, sl, CB_TRADE_ID, b"trade_id", top)
    if v < 0 or get_u64(s, v, b"trade_id", &tid) < 0:
        return -1
    v = req(s, sl, CB_SEQUENCE, b"sequence", top)
    if v < 0 or get_u64(s, v, b"sequence", &seq) < 0:
        return -1
    v = req(s, sl, CB_SIDE, b"side", top)
    if v < 0 or aggressor_of(s, v, b"side", &side) < 0:
        return -1
    r = req_level(s, sl, CB_PRICE, b"price", CB_SIZE, b"size", top, &px, &sz)
    if r < 0:
        return -1
    s.kind = K_TRADESNAPSHOT if last else K_TRADE
    s.first_seq = seq
    s.last_seq = seq
    if r == 0:
        return emit_trade(s, ts, px, sz, tid, seq, side, FLAG_SNAPSHOT if last else 0)
    return 0


cdef int ex_ticker(CState* s, Py_ssize_t* sl, Py_ssize_t top) noexcept nogil:
    cdef Py_ssize_t v, vb, va
    cdef uint64_t ts = s.ts_recv, seq = 0, bsz = 0, asz = 0
    cdef int64_t bpx = 0, apx = 0
    v = req(s, sl, CB_PRODUCT, b"product_id", top)
    if v < 0 or lookup(s, v, b"product_id") < 0:
        return -1
    if sl[CB_TIME] >= 0 and get_iso(s, sl[CB_TIME], b"time", &ts) < 0:
        return -1
    if sl[CB_SEQUENCE] >= 0 and get_u64(s, sl[CB_SEQUENCE], b"sequence", &seq) < 0:
        return -1
    vb = req(s, sl, CB_BEST_BID, b"best_bid", top)
    if vb < 0:
        return -1
    va = req(s, sl, CB_BEST_ASK, b"best_ask", top)
    if va < 0:
        return -1
    if bbo_side(s, vb, sl[CB_BEST_BID_SIZE], b"best_bid", b"best_bid_size", &bpx, &bsz) < 0:
        return -1
    if bbo_side(s, va, sl[CB_BEST_ASK_SIZE], b"best_ask", b"best_ask_size", &apx, &asz) < 0:
        return -1
    s.kind = K_TICKER
    s.first_seq = seq
    s.last_seq = seq
    return emit_bbo(s, ts, bpx, bsz, apx, asz, seq, 0)


cdef int ex_decode(CState* s, Py_ssize_t* sl, Py_ssize_t top) noexcept nogil:
    cdef Py_ssize_t v, a, b
    cdef const uint8_t* t
    cdef Py_ssize_t n
    v = req(s, sl, CB_TYPE, b"type", top)
    if v < 0 or get_str(s, v, b"type", &a, &b) < 0:
        return -1
    t = s.p + a
    n = b - a
    if raw_eq(t, n, b"l2update", 8):
        return ex_l2update(s, sl, top)
    if raw_eq(t, n, b"ticker", 6):
        return ex_ticker(s, sl, top)
    if raw_eq(t, n, b"match", 5):
        return ex_match(s, sl, top, 0)
    if raw_eq(t, n, b"last_match", 10):
        return ex_match(s, sl, top, 1)
    if raw_eq(t, n, b"snapshot", 8):
        return ex_snapshot(s, sl, top)
    if raw_eq(t, n, b"heartbeat", 9):
        s.kind = K_HEARTBEAT
        return 0
    if raw_eq(t, n, b"subscriptions", 13):
        s.kind = K_SUBSCRIPTION
        return 0
    if raw_eq(t, n, b"error", 5):
        s.kind = K_ERROR
        return 0
    if raw_eq(t, n, b"status", 6):
        s.kind = K_STATUS
        return 0
    return e_codec(s, ERR_CODEC, b"unknown type", b"type", v)


# ---------------------------------------------------------------------------------------------
# Advanced Trade (advanced-trade-ws): {"channel", "timestamp", "sequence_num", "events": [...]}

cdef enum:
    AT_L2 = 1            # the data channels the one-pass decoder takes (at_one_pass)
    AT_TRADES = 2
    AT_TICKER = 3


cdef int at_type(CState* s, Py_ssize_t v, bint* snap) noexcept nogil:
    """An event's ``type`` (at ``v``): ``snapshot`` or ``update``."""
    cdef Py_ssize_t a, b
    if get_str(s, v, b"type", &a, &b) < 0:
        return -1
    if raw_eq(s.p + a, b - a, b"snapshot", 8):
        snap[0] = 1
    elif raw_eq(s.p + a, b - a, b"update", 6):
        snap[0] = 0
    else:
        return e_codec(s, ERR_CODEC, b"unknown type", b"type", v)
    return 0


cdef int at_event_type(CState* s, Py_ssize_t* E, Py_ssize_t ev, bint* snap) noexcept nogil:
    cdef Py_ssize_t v = req(s, E, CB_TYPE, b"type", ev)
    if v < 0:
        return -1
    return at_type(s, v, snap)


# A level2 update as Coinbase writes it: {"side":S,"event_time":S,"price_level":S,"new_quantity":S},
# compact, in this order, plain strings. ``update_shape`` recognises exactly that text (keys
# compared as bytes, each value string scanned once) without reporting anything; l2_updates then
# reads the values from their known bounds in the general path's order (side, event_time,
# price_level, new_quantity: the same errors and rejections). Any other text of an update (another
# order, whitespace, an escape, a number) takes the general path (index_obj), which says what is
# wrong with it.
cdef extern from *:
    """
    static const char dm_cb_k_side[] = "{\\"side\\":";
    static const char dm_cb_k_time[] = ",\\"event_time\\":";
    static const char dm_cb_k_px[] = ",\\"price_level\\":";
    static const char dm_cb_k_qty[] = ",\\"new_quantity\\":";
    """
    const char* K_SIDE "dm_cb_k_side"
    const char* K_TIME "dm_cb_k_time"
    const char* K_PX "dm_cb_k_px"
    const char* K_QTY "dm_cb_k_qty"


cdef inline Py_ssize_t plain_string(CState* s, Py_ssize_t i) noexcept nogil:
    """i at a '"': the index after the closing quote when the string has no escape or control
    character, else -1 (nothing reported)."""
    if i >= s.n or s.p[i] != 34:
        return -1
    i = dm_str_run(s.p, i + 1, s.n)
    if i >= s.n or s.p[i] != 34:
        return -1
    return i + 1


cdef inline Py_ssize_t lit_value(CState* s, Py_ssize_t i, const char* key, Py_ssize_t kn, Py_ssize_t* v) noexcept nogil:
    """``key`` (kn bytes) at i, then a plain string: its offset in v, returns the index after
    it; -1 when the text differs (nothing reported)."""
    if i + kn > s.n or memcmp(s.p + i, key, kn) != 0:
        return -1
    v[0] = i + kn
    return plain_string(s, i + kn)


cdef inline Py_ssize_t update_shape(CState* s, Py_ssize_t u, Py_ssize_t* v, Py_ssize_t* e) noexcept nogil:
    """u at '{': the index after the update's '}' when its text is the shape above (v[k]: the
    value offsets, e[k]: the index after each), else -1 (nothing reported)."""
    cdef Py_ssize_t i = lit_value(s, u, K_SIDE, 8, &v[0])
    if i < 0:
        return -1
    e[0] = i
    i = lit_value(s, i, K_TIME, 14, &v[1])
    if i < 0:
        return -1
    e[1] = i
    i = lit_value(s, i, K_PX, 15, &v[2])
    if i < 0:
        return -1
    e[2] = i
    i = lit_value(s, i, K_QTY, 16, &v[3])
    if i < 0 or i >= s.n or s.p[i] != 125:
        return -1
    e[3] = i
    return i + 1


cdef int l2_updates(CState* s, Py_ssize_t v, uint64_t seq, uint8_t flags, int depth, Py_ssize_t* end) noexcept nogil:
    """One level2 event's ``updates`` array (at ``v``, ``depth`` containers around it): one
    BOOK_DELTA per level (see ``at_l2``); ``end``: the index after its ``]``."""
    cdef Py_ssize_t u, ue, x, endu = 0
    cdef Py_ssize_t U[CB_N]
    cdef Py_ssize_t V[4]
    cdef Py_ssize_t E[4]
    cdef uint8_t side = 0
    cdef uint64_t ets = 0, sz = 0
    cdef int64_t px = 0
    cdef int r, r1
    u = arr_first(s, v, depth, &endu)
    while u > 0:
        if s.p[u] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"updates", u)
        if depth + 1 < MAX_DEPTH:
            ue = update_shape(s, u, V, E)
            if ue > 0:                        # the values' bounds are known: no second scan
                if (side_text(s, V[0] + 1, E[0] - 1, b"side", V[0], &side) < 0
                        or iso_text(s, V[1] + 1, E[1] - 1, b"event_time", V[1], &ets) < 0):
                    return -1
                r1 = _fx_result(s, parse_fixed(s.p + V[2] + 1, E[2] - 1 - (V[2] + 1), 1, &px), b"price_level", V[2])
                if r1 < 0:
                    return -1
                r = _fx_result(s, parse_size_dp(s.p + V[3] + 1, E[3] - 1 - (V[3] + 1), s.size_precision,
                                                <int64_t*>&sz), b"new_quantity", V[3])
                if r < 0:
                    return -1
                if r == 0 and r1 == 0:
                    if emit_level(s, ets, px, sz, seq, side, flags) < 0:
                        return -1
                u = arr_next(s, ue, &endu)
                continue
        ue = index_obj(s, u, depth + 1, cb_key, U, CB_N)
        if ue < 0:
            return -1
        x = req(s, U, CB_SIDE, b"side", u)
        if x < 0 or side_of(s, x, b"side", &side) < 0:
            return -1
        x = req(s, U, CB_EVENT_TIME, b"event_time", u)
        if x < 0 or get_iso(s, x, b"event_time", &ets) < 0:
            return -1
        r = req_level(s, U, CB_PRICE_LEVEL, b"price_level", CB_NEW_QTY, b"new_quantity", u, &px, &sz)
        if r < 0:
            return -1
        if r == 0:
            if emit_level(s, ets, px, sz, seq, side, flags) < 0:
                return -1
        u = arr_next(s, ue, &endu)
    if u < 0:
        return -1
    end[0] = endu
    return 0


cdef int trade_items(CState* s, Py_ssize_t v, uint64_t seq, bint snap, int depth, Py_ssize_t* end) noexcept nogil:
    """One market_trades event's ``trades`` array (at ``v``, ``depth`` containers around it):
    one TRADE each (see ``at_trades``); ``end``: the index after its ``]``."""
    cdef Py_ssize_t t, te, x, a, b, endt = 0
    cdef Py_ssize_t T[CB_N]
    cdef uint64_t ts, tid, sz = 0
    cdef int64_t px = 0
    cdef uint8_t side
    cdef int r
    t = arr_first(s, v, depth, &endt)
    while t > 0:
        if s.p[t] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"trades", t)
        te = index_obj(s, t, depth + 1, cb_key, T, CB_N)
        if te < 0:
            return -1
        x = req(s, T, CB_PRODUCT, b"product_id", t)
        if x < 0 or lookup(s, x, b"product_id") < 0:
            return -1
        x = req(s, T, CB_TRADE_ID, b"trade_id", t)
        if x < 0 or get_str(s, x, b"trade_id", &a, &b) < 0:
            return -1
        tid = trade_id_text(s.p + a, b - a)
        x = req(s, T, CB_TIME, b"time", t)
        if x < 0 or get_iso(s, x, b"time", &ts) < 0:
            return -1
        x = req(s, T, CB_SIDE, b"side", t)
        if x < 0 or aggressor_of(s, x, b"side", &side) < 0:
            return -1
        r = req_level(s, T, CB_PRICE, b"price", CB_SIZE, b"size", t, &px, &sz)
        if r < 0:
            return -1
        if r == 0:
            if emit_trade(s, ts, px, sz, tid, seq, side, FLAG_SNAPSHOT if snap else 0) < 0:
                return -1
        t = arr_next(s, te, &endt)
    if t < 0:
        return -1
    end[0] = endt
    return 0


cdef int ticker_items(CState* s, Py_ssize_t v, uint64_t ts, uint64_t seq, int depth, Py_ssize_t* end) noexcept nogil:
    """One ticker event's ``tickers`` array (at ``v``, ``depth`` containers around it): one
    BBO each (see ``at_ticker``); ``end``: the index after its ``]``."""
    cdef Py_ssize_t t, te, x, vb, va, endt = 0
    cdef Py_ssize_t T[CB_N]
    cdef uint64_t bsz = 0, asz = 0
    cdef int64_t bpx = 0, apx = 0
    t = arr_first(s, v, depth, &endt)
    while t > 0:
        if s.p[t] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"tickers", t)
        te = index_obj(s, t, depth + 1, cb_key, T, CB_N)
        if te < 0:
            return -1
        x = req(s, T, CB_PRODUCT, b"product_id", t)
        if x < 0 or lookup(s, x, b"product_id") < 0:
            return -1
        vb = req(s, T, CB_BEST_BID, b"best_bid", t)
        if vb < 0:
            return -1
        va = req(s, T, CB_BEST_ASK, b"best_ask", t)
        if va < 0:
            return -1
        if bbo_side(s, vb, T[CB_BEST_BID_QTY], b"best_bid", b"best_bid_quantity", &bpx, &bsz) < 0:
            return -1
        if bbo_side(s, va, T[CB_BEST_ASK_QTY], b"best_ask", b"best_ask_quantity", &apx, &asz) < 0:
            return -1
        if emit_bbo(s, ts, bpx, bsz, apx, asz, seq, 0) < 0:
            return -1
        t = arr_next(s, te, &endt)
    if t < 0:
        return -1
    end[0] = endt
    return 0


cdef int at_l2(CState* s, Py_ssize_t evs, uint64_t ts, uint64_t seq) noexcept nogil:
    """``l2_data`` (channel ``level2``): each event {type snapshot|update, product_id, updates:
    [{side bid|offer, event_time, price_level, new_quantity}]}. A snapshot event -> CLEAR (at
    the message ``timestamp``) + its levels, FLAG_SNAPSHOT; an update -> its levels
    (new_quantity "0" = CANCEL). ts_event of a level = its event_time; sequence =
    sequence_num. Kind ``bookSnapshot`` when any event is a snapshot, else ``book``;
    ``instrument_id`` = the last event's product (``CbFrame.mixed`` when events name several)."""
    cdef Py_ssize_t w, e, v, endp = 0, endu = 0
    cdef Py_ssize_t E[CB_N]
    cdef bint snap, any_snap = 0, first = 1
    cdef uint32_t iid0 = 0
    cdef uint8_t flags
    w = arr_first(s, evs, 0, &endp)
    while w > 0:
        if s.p[w] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"events", w)
        e = index_obj(s, w, 0, cb_key, E, CB_N)
        if at_event_type(s, E, w, &snap) < 0:
            return -1
        v = req(s, E, CB_PRODUCT, b"product_id", w)
        if v < 0 or lookup(s, v, b"product_id") < 0:
            return -1
        if first:
            iid0 = s.instrument_id
            first = 0
        elif s.instrument_id != iid0 and _fr != NULL:
            _fr.mixed = 1
        v = req(s, E, CB_UPDATES, b"updates", w)
        if v < 0:
            return -1
        if s.p[v] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", b"updates", v)
        flags = 0
        if snap:
            any_snap = 1
            flags = FLAG_SNAPSHOT
            if emit_clear(s, ts, seq, flags) < 0:
                return -1
        if l2_updates(s, v, seq, flags, 0, &endu) < 0:
            return -1
        w = arr_next(s, e, &endp)
    if first:
        return e_codec(s, ERR_CODEC, b"no events", b"events", evs)
    s.kind = K_BOOKSNAPSHOT if any_snap else K_BOOK
    set_last(s)
    return 0


cdef int at_trades(CState* s, Py_ssize_t evs, uint64_t seq) noexcept nogil:
    """``market_trades``: each event {type snapshot|update, trades: [{product_id, trade_id,
    price, size, time, side}]} -> TRADE each (side: aggressor_of; trade_id: trade_id_text;
    sequence = sequence_num; snapshot trades FLAG_SNAPSHOT). Kind ``tradeSnapshot`` when any
    event is a snapshot, else ``trade``."""
    cdef Py_ssize_t w, e, v, endp = 0, endt = 0
    cdef Py_ssize_t E[CB_N]
    cdef bint snap, any_snap = 0
    w = arr_first(s, evs, 0, &endp)
    while w > 0:
        if s.p[w] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"events", w)
        e = index_obj(s, w, 0, cb_key, E, CB_N)
        if at_event_type(s, E, w, &snap) < 0:
            return -1
        if snap:
            any_snap = 1
        v = req(s, E, CB_TRADES, b"trades", w)
        if v < 0:
            return -1
        if s.p[v] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", b"trades", v)
        if trade_items(s, v, seq, snap, 0, &endt) < 0:
            return -1
        w = arr_next(s, e, &endp)
    s.kind = K_TRADESNAPSHOT if any_snap else K_TRADE
    return 0


cdef int at_ticker(CState* s, Py_ssize_t evs, uint64_t ts, uint64_t seq) noexcept nogil:
    """``ticker`` / ``ticker_batch``: each event {type, tickers: [{product_id, best_bid,
    best_bid_quantity, best_ask, best_ask_quantity, ...}]} -> BBO each (ts_event = the message
    ``timestamp``, sequence = sequence_num). Kind ``ticker``."""
    cdef Py_ssize_t w, e, v, endp = 0, endt = 0
    cdef Py_ssize_t E[CB_N]
    cdef bint snap
    w = arr_first(s, evs, 0, &endp)
    while w > 0:
        if s.p[w] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"events", w)
        e = index_obj(s, w, 0, cb_key, E, CB_N)
        if at_event_type(s, E, w, &snap) < 0:
            return -1
        v = req(s, E, CB_TICKERS, b"tickers", w)
        if v < 0:
            return -1
        if s.p[v] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", b"tickers", v)
        if ticker_items(s, v, ts, seq, 0, &endt) < 0:
            return -1
        w = arr_next(s, e, &endp)
    s.kind = K_TICKER
    return 0


cdef int at_decode(CState* s, Py_ssize_t* sl, Py_ssize_t top) noexcept nogil:
    cdef Py_ssize_t v, a, b, evs
    cdef const uint8_t* c
    cdef Py_ssize_t n
    cdef uint64_t seq = 0, ts = s.ts_recv
    v = sl[CB_CHANNEL]
    if get_str(s, v, b"channel", &a, &b) < 0:
        return -1
    c = s.p + a
    n = b - a
    if sl[CB_SEQNUM] >= 0:
        if get_u64(s, sl[CB_SEQNUM], b"sequence_num", &seq) < 0:
            return -1
        if seq > <uint64_t>0x7FFFFFFFFFFFFFFF:
            return e_codec(s, ERR_CODEC, b"integer out of range", b"sequence_num", sl[CB_SEQNUM])
        s.msg_seq = <int64_t>seq    # connection-wide ("Sequence Numbers"): dm._feed checks it
        s.first_seq = seq
        s.last_seq = seq
    if sl[CB_TIMESTAMP] >= 0 and get_iso(s, sl[CB_TIMESTAMP], b"timestamp", &ts) < 0:
        return -1
    if raw_eq(c, n, b"heartbeats", 10):
        s.kind = K_HEARTBEAT
        return 0
    if raw_eq(c, n, b"subscriptions", 13):
        s.kind = K_SUBSCRIPTION
        return 0
    if raw_eq(c, n, b"candles", 7):
        s.kind = K_KLINE
        return 0
    if raw_eq(c, n, b"status", 6):
        s.kind = K_STATUS
        return 0
    evs = req(s, sl, CB_EVENTS, b"events", top)
    if evs < 0:
        return -1
    if s.p[evs] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"events", evs)
    if raw_eq(c, n, b"l2_data", 7):
        return at_l2(s, evs, ts, seq)
    if raw_eq(c, n, b"market_trades", 13):
        return at_trades(s, evs, seq)
    if raw_eq(c, n, b"ticker", 6) or raw_eq(c, n, b"ticker_batch", 12):
        return at_ticker(s, evs, ts, seq)
    return e_codec(s, ERR_CODEC, b"unknown channel", b"channel", v)


# One pass over an Advanced Trade data message. The general path (cb_decode -> at_decode)
# validates the whole frame, then indexes each event (validating it again), then each item: three
# passes over every level of a level2 update, whatever the member order. Coinbase sends
# "channel" first, "timestamp" and "sequence_num" before "events", and each event's "type" (and
# level2 "product_id") before its items, so the one-pass decoder reads the items where it meets
# them. It gives exactly the general path's result or hands the frame to it: -1 for any other
# order, a member repeated where "the last one wins" would differ, and any error (whose report,
# offset included, is the general path's).

cdef int at_events_one_pass(CState* s, Py_ssize_t evs, int ch, uint64_t ts, uint64_t seq,
                            Py_ssize_t* end) noexcept nogil:
    """``events`` (at ``evs``, inside the top object) of data channel ``ch``; ``end``: the index
    after its ``]``. 0, or -1 for the general path."""
    cdef Py_ssize_t w, m, e = 0, ks = 0, ke = 0, endp = 0, vt, vp
    cdef int slot, items = CB_UPDATES if ch == AT_L2 else (CB_TRADES if ch == AT_TRADES else CB_TICKERS)
    cdef bint snap = 0, any_snap = 0, first = 1, done
    cdef uint32_t iid0 = 0
    w = arr_first(s, evs, 1, &endp)
    while w > 0:
        if s.p[w] != 123:
            return -1
        vt = vp = -1
        done = 0
        m = obj_first(s, w, 2, &ks, &ke)
        while m > 0:
            slot = cb_key(s.p + ks, ke - ks)
            if slot == items:
                if (done or vt < 0 or (ch == AT_L2 and vp < 0) or m >= s.n or s.p[m] != 91
                        or at_type(s, vt, &snap) < 0):
                    return -1
                if snap:
                    any_snap = 1
                if ch == AT_L2:
                    if lookup(s, vp, b"product_id") < 0:
                        return -1
                    if first:
                        iid0 = s.instrument_id
                    elif s.instrument_id != iid0 and _fr != NULL:
                        _fr.mixed = 1
                    if snap and emit_clear(s, ts, seq, FLAG_SNAPSHOT) < 0:
                        return -1
                    if l2_updates(s, m, seq, FLAG_SNAPSHOT if snap else 0, 3, &e) < 0:
                        return -1
                elif ch == AT_TRADES:
                    if trade_items(s, m, seq, snap, 3, &e) < 0:
                        return -1
                elif ticker_items(s, m, ts, seq, 3, &e) < 0:
                    return -1
                first = 0
                done = 1
            else:
                if slot == CB_TYPE or (slot == CB_PRODUCT and ch == AT_L2):
                    if done:
                        return -1
                    if slot == CB_TYPE:
                        vt = m
                    else:
                        vp = m
                e = skip_member(s, m, 3)
                if e < 0:
                    return -1
            m = obj_next(s, e, &ks, &ke)
        if m < 0 or not done:
            return -1
        w = arr_next(s, ks, &endp)
    if w < 0:
        return -1
    if ch == AT_L2:
        if first:
            return -1                                       # "no events": the general path says so
        s.kind = K_BOOKSNAPSHOT if any_snap else K_BOOK
        set_last(s)
    elif ch == AT_TRADES:
        s.kind = K_TRADESNAPSHOT if any_snap else K_TRADE
    else:
        s.kind = K_TICKER
    end[0] = endp
    return 0


cdef int at_one_pass(CState* s, Py_ssize_t top) noexcept nogil:
    """The frame at ``top`` (an object) in one pass (above): 0 when decoded so, -1 for the
    general path. ``channel`` must be the first member and a data channel."""
    cdef Py_ssize_t ks = 0, ke = 0, w, e = 0, a, b, vts = -1, vsq = -1
    cdef int slot, ch
    cdef bint done = 0
    cdef uint64_t seq = 0, ts = s.ts_recv
    w = obj_first(s, top, 0, &ks, &ke)
    if w <= 0 or w >= s.n or cb_key(s.p + ks, ke - ks) != CB_CHANNEL or s.p[w] != 34:
        return -1
    get_str(s, w, b"channel", &a, &b)                       # b < a when the string is malformed
    if raw_eq(s.p + a, b - a, b"l2_data", 7):
        ch = AT_L2
    elif raw_eq(s.p + a, b - a, b"market_trades", 13):
        ch = AT_TRADES
    elif raw_eq(s.p + a, b - a, b"ticker", 6) or raw_eq(s.p + a, b - a, b"ticker_batch", 12):
        ch = AT_TICKER
    else:
        return -1
    w = obj_next(s, b + 1, &ks, &ke)                       # b + 1: after the channel's closing quote
    while w > 0:
        slot = cb_key(s.p + ks, ke - ks)
        if slot == CB_CHANNEL or (slot == CB_EVENTS and done):
            return -1
        if slot == CB_EVENTS:
            if w >= s.n or s.p[w] != 91:
                return -1
            if vsq >= 0:                                    # at_decode's steps, in its order
                if get_u64(s, vsq, b"sequence_num", &seq) < 0 or seq > <uint64_t>0x7FFFFFFFFFFFFFFF:
                    return -1
                s.msg_seq = <int64_t>seq
                s.first_seq = seq
                s.last_seq = seq
            if vts >= 0 and get_iso(s, vts, b"timestamp", &ts) < 0:
                return -1
            if at_events_one_pass(s, w, ch, ts, seq, &e) < 0:
                return -1
            done = 1
        else:
            if slot == CB_TIMESTAMP or slot == CB_SEQNUM:
                if done:
                    return -1
                if slot == CB_TIMESTAMP:
                    vts = w
                else:
                    vsq = w
            e = skip_member(s, w, 1)
            if e < 0:
                return -1
        w = obj_next(s, e, &ks, &ke)
    if w < 0 or not done or skip_ws(s, ks) < s.n:
        return -1
    return 0


cdef int cb_decode(CState* s) noexcept nogil:
    cdef Py_ssize_t sl[CB_N]
    cdef Py_ssize_t top, e
    if _fr != NULL:
        _fr.mixed = 0
    top = skip_ws(s, 0)
    if top >= s.n:
        return e_end(s)
    if s.p[top] == 123 and at_one_pass(s, top) == 0:
        return 0
    begin_frame(s, s.p, s.n, s.ts_recv)                    # the general path, from scratch
    if _fr != NULL:
        _fr.mixed = 0
    if s.p[top] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, top)
    e = index_obj(s, top, 0, cb_key, sl, CB_N)
    if e < 0:
        return -1
    e = skip_ws(s, e)
    if e < s.n:
        return e_byte(s, e)
    if sl[CB_CHANNEL] >= 0:
        return at_decode(s, sl, top)
    return ex_decode(s, sl, top)


cdef class CoinbaseCodec(_Codec):
    """Coinbase websocket frames, both public feeds (one codec per connection).

    Exchange feed (Coinbase Exchange docs, "WebSocket Feed → Channels"), frames keyed by
    ``type``:

    * ``snapshot`` (Level2 channel) → CLEAR + one BOOK_DELTA per ``bids``/``asks`` level, all
      ``FLAG_SNAPSHOT``; ``ts_event`` = ``time`` when present, else ts_recv; kind
      ``bookSnapshot``. ``l2update`` → one BOOK_DELTA per ``changes`` entry ``[side, price,
      size]`` (size ``"0"`` = CANCEL), ``ts_event`` = ``time``; kind ``book``. The Level2
      channel has no sequence number: sequence 0.
    * ``match`` (Matches channel) → TRADE (``trade_id``, ``sequence``; side = the aggressor,
      the opposite of the maker ``side``); ``last_match`` → the same with ``FLAG_SNAPSHOT``,
      kind ``tradeSnapshot``. ``first_seq``/``last_seq`` = ``sequence``.
    * ``ticker`` (Ticker channel) → BBO from ``best_bid``/``best_ask`` (sizes
      ``best_bid_size``/``best_ask_size`` when present, else 0), sequence = ``sequence``.
    * ``heartbeat`` → kind ``heartbeat``; ``subscriptions`` → ``subscription``; ``error`` →
      ``error``; ``status`` → ``status``. Any other ``type`` is a CodecError.

    Advanced Trade (Advanced Trade docs, "WebSocket Channels"), frames keyed by ``channel``,
    every one carrying the connection-wide ``sequence_num`` (``sequence_num`` property, the
    codec's ``msg_seq``: the worker's frame path checks it, see ``dm._feed``; records carry it
    as their sequence, and ``first_seq``/``last_seq`` hold it):

    * ``l2_data`` (level2) → see ``at_l2``; ``market_trades`` → see ``at_trades``; ``ticker``
      / ``ticker_batch`` → see ``at_ticker``; ``heartbeats`` → ``heartbeat``;
      ``subscriptions`` → ``subscription``; ``candles`` → ``kline`` (no records); ``status``
      → ``status``. Any other channel is a CodecError. A frame without ``channel`` whose
      ``type`` is ``error`` → ``error``.

    Data messages (``l2_data``, ``market_trades``, ``ticker``) whose members come in the order
    Coinbase sends them are decoded in one pass (``at_one_pass``); any other frame takes the
    general path, which gives the same result for them, errors included.

    Times are ISO-8601 UTC strings (µs on the Exchange feed, up to ns on Advanced Trade) → ns,
    exact. Prices are decimal strings → i64 at 1e-9, sizes at the product's size_precision
    (``add_symbol(product_id, iid, size_precision)``, the decimals of ``base_increment``); a
    value that cannot be represented is rejected alone (``value_errors``): that level / trade /
    BBO side is dropped.
    """

    def __cinit__(self, *args, **kwargs):
        self.decoder = cb_decode
        self.venue = "COINBASE"
        self.fr.mixed = 0

    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1:
        global _fr
        _fr = &self.fr
        try:
            return _Codec.decode_c(self, p, n, ts_recv)
        finally:
            _fr = NULL

    @property
    def sequence_num(self) -> int:
        """Advanced Trade ``sequence_num`` of the last decoded frame; -1 when it had none
        (Exchange feed frames, Advanced Trade error frames). The codec's ``msg_seq`` (the
        connection's message sequence, ``dm._codec._Codec.msg_seq``): kept after a decode error
        when it was read before it."""
        return self.st.msg_seq

    @property
    def mixed(self) -> bool:
        """Whether the last decoded level2 frame held events of more than one product (its
        records then carry several instrument ids; ``instrument_id`` is the last one's)."""
        return self.fr.mixed != 0
