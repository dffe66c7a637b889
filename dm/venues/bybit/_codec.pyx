# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Bybit websocket API v5 public frames -> dm records (the venue half of ``BybitCodec``; the
shared scanner is ``dm/_scan.pxd``, the base class ``dm._codec._Codec``).

Rules from the Bybit API v5 docs, "WebSocket Stream → Public": Orderbook
(``orderbook.{depth}.{symbol}``), Trade (``publicTrade.{symbol}``), Ticker
(``tickers.{symbol}``), Kline; "Connect" (ping/pong, subscribe acks). See the class docstring.
Order book and trade frames are decoded in one pass when their members come as Bybit sends them
(see the comment above ``by_one_pass``); any other frame takes the general path (``by_decode``).
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memmove

from dm._records cimport *
from dm._scan cimport *
from dm._codec cimport _Codec

# dm.records.StatType codes (DBN's, then dm's own >= 1001)
cdef enum:
    ST_OPEN_INTEREST = 9
    ST_MARK_PRICE = 1001
    ST_INDEX_PRICE = 1002
    ST_FUNDING_RATE = 1003
    ST_ESTIMATED_SETTLEMENT_PRICE = 1006
    STAT_NEW = 1                  # DBN StatUpdateAction::New

cdef enum:
    BY_TOPIC = 0
    BY_TYPE
    BY_TS
    BY_DATA
    BY_CTS
    BY_CS
    BY_SUCCESS
    BY_OP
    BY_s            # symbol (book data, trade)
    BY_b
    BY_a
    BY_u
    BY_T
    BY_S
    BY_v
    BY_p
    BY_i
    BY_BT
    BY_SEQ
    BY_SYMBOL       # ticker data
    BY_BID1PX
    BY_BID1SZ
    BY_ASK1PX
    BY_ASK1SZ
    BY_MARK
    BY_INDEX
    BY_FUNDING
    BY_NEXTFUND
    BY_OI
    BY_PDP
    BY_N

cdef enum:
    T_BOOK = 1
    T_TRADE = 2
    T_TICKER = 3
    T_KLINE = 4


cdef int by_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    cdef uint8_t c
    if n == 1:
        c = k[0]
        if c == c's':
            return BY_s
        if c == c'b':
            return BY_b
        if c == c'a':
            return BY_a
        if c == c'u':
            return BY_u
        if c == c'T':
            return BY_T
        if c == c'S':
            return BY_S
        if c == c'v':
            return BY_v
        if c == c'p':
            return BY_p
        if c == c'i':
            return BY_i
        return -1
    if n == 2:
        if memcmp(k, b"ts", 2) == 0:
            return BY_TS
        if memcmp(k, b"cs", 2) == 0:
            return BY_CS
        if memcmp(k, b"op", 2) == 0:
            return BY_OP
        if memcmp(k, b"BT", 2) == 0:
            return BY_BT
        return -1
    if n == 3:
        if memcmp(k, b"cts", 3) == 0:
            return BY_CTS
        if memcmp(k, b"seq", 3) == 0:
            return BY_SEQ
        return -1
    if n == 4:
        if memcmp(k, b"data", 4) == 0:
            return BY_DATA
        if memcmp(k, b"type", 4) == 0:
            return BY_TYPE
        return -1
    if n == 5:
        if memcmp(k, b"topic", 5) == 0:
            return BY_TOPIC
        return -1
    if n == 6:
        if memcmp(k, b"symbol", 6) == 0:
            return BY_SYMBOL
        return -1
    if n == 7:
        if memcmp(k, b"success", 7) == 0:
            return BY_SUCCESS
        return -1
    if n == 8:
        if memcmp(k, b"bid1Size", 8) == 0:
            return BY_BID1SZ
        if memcmp(k, b"ask1Size", 8) == 0:
            return BY_ASK1SZ
        return -1
    if n == 9:
        if memcmp(k, b"bid1Price", 9) == 0:
            return BY_BID1PX
        if memcmp(k, b"ask1Price", 9) == 0:
            return BY_ASK1PX
        if memcmp(k, b"markPrice", 9) == 0:
            return BY_MARK
        return -1
    if n == 10 and memcmp(k, b"indexPrice", 10) == 0:
        return BY_INDEX
    if n == 11 and memcmp(k, b"fundingRate", 11) == 0:
        return BY_FUNDING
    if n == 12 and memcmp(k, b"openInterest", 12) == 0:
        return BY_OI
    if n == 15 and memcmp(k, b"nextFundingTime", 15) == 0:
        return BY_NEXTFUND
    if n == 22 and memcmp(k, b"predictedDeliveryPrice", 22) == 0:
        return BY_PDP
    return -1


# ---------------------------------------------------------------------------------------------
# per-instrument ticker state (linear/inverse tickers are deltas)

cdef TickerTable* _cur = NULL     # the decoding codec's table (set by BybitCodec.decode_c; GIL held)


cdef TickerState* tk_find(TickerTable* t, uint32_t iid, bint create) noexcept nogil:
    """The state of ``iid`` (a fresh one when ``create``: sides UNDEF_PRICE/0, no funding
    time); NULL when absent (or out of memory)."""
    cdef Py_ssize_t i, mask, newcap
    cdef TickerState* old
    cdef TickerState* e
    if t.cap == 0 or (create and (t.count + 1) * 2 > t.cap):
        if not create:
            return NULL
        newcap = t.cap * 2 if t.cap else 16
        old = t.slot
        t.slot = <TickerState*>calloc(newcap, sizeof(TickerState))
        if t.slot == NULL:
            t.slot = old
            return NULL
        mask = newcap - 1
        for i in range(t.cap):
            if old[i].used:
                e = &t.slot[(old[i].iid * 2654435761u) & mask]
                while e.used:
                    e = &t.slot[((e - t.slot) + 1) & mask]
                e[0] = old[i]
        free(old)
        t.cap = newcap
    mask = t.cap - 1
    i = (iid * 2654435761u) & mask
    while t.slot[i].used:
        if t.slot[i].iid == iid:
            return &t.slot[i]
        i = (i + 1) & mask
    if not create:
        return NULL
    e = &t.slot[i]
    e.used = 1
    e.iid = iid
    e.bid_px = DM_UNDEF_PRICE
    e.ask_px = DM_UNDEF_PRICE
    e.bid_sz = 0
    e.ask_sz = 0
    e.next_funding = DM_UNDEF_TIMESTAMP
    t.count += 1
    return e


# ---------------------------------------------------------------------------------------------
# field helpers

cdef inline bint is_empty_str(CState* s, Py_ssize_t v) noexcept nogil:
    """The value at v is the empty string "" (Bybit's "no value")."""
    return v + 1 < s.n and s.p[v] == 34 and s.p[v + 1] == 34


cdef int by_px(CState* s, Py_ssize_t v, const char* field, int64_t* out) noexcept nogil:
    """Optional price (decimal string): 0 parsed, 1 rejected alone (value_reject), 2 absent
    (v < 0) or "" (Bybit's "no value"), -1 malformed frame."""
    if v < 0 or is_empty_str(s, v):
        return 2
    return get_px_str(s, v, field, out)


cdef int by_sz(CState* s, Py_ssize_t v, const char* field, uint64_t* out) noexcept nogil:
    """Optional size at the instrument's size_precision; results as by_px."""
    if v < 0 or is_empty_str(s, v):
        return 2
    return get_sz_str(s, v, field, out)


cdef int by_ms_any(CState* s, Py_ssize_t v, const char* field, uint64_t* out) noexcept nogil:
    """Milliseconds as a JSON integer or a string of digits ("1673280000000") -> ns; "" -> 2
    (no value)."""
    cdef Py_ssize_t a, b, i
    cdef uint64_t acc = 0
    cdef bint over = 0
    if s.p[v] != 34:
        return get_ms(s, v, field, out)
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    if a == b:
        return 2
    for i in range(a, b):
        if not is_digit(s.p[i]):
            return e_codec(s, ERR_CODEC, b"expected milliseconds", field, v)
        over |= dm_mul_u64(acc, 10, &acc)
        over |= dm_add_u64(acc, s.p[i] - 48, &acc)
    if over or dm_mul_u64(acc, 1000000, out):
        return e_codec(s, ERR_CODEC, b"timestamp out of range", field, v)
    return 0


cdef uint64_t trade_id(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Trade id text -> an integer <= i64 max (storage keeps trade ids in BIGINT): its value
    when it is 1..19 decimal digits that fit (spot ids, "2290000001189048101"); otherwise the
    FNV-1a 64 hash of its raw bytes with the top bit cleared (linear/inverse send UUIDs)."""
    cdef Py_ssize_t i
    cdef uint64_t acc = 0, h = 14695981039346656037ULL
    cdef bint digits = n > 0 and n <= 19
    if digits:
        for i in range(n):
            if not is_digit(p[i]):
                digits = 0
                break
            acc = acc * 10 + (p[i] - 48)      # at most 19 digits: < 10**19, no overflow
        if digits and acc <= <uint64_t>0x7FFFFFFFFFFFFFFF:
            return acc
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h & <uint64_t>0x7FFFFFFFFFFFFFFF


cdef int by_levels(CState* s, Py_ssize_t v, const char* field, uint8_t side, uint64_t ts, uint64_t u,
                   uint8_t flags) noexcept nogil:
    """b / a: array of [price, size] decimal strings (extra elements ignored). A level whose
    price or size cannot be represented is dropped alone (value_reject)."""
    cdef Py_ssize_t endp = 0, w, e
    cdef Py_ssize_t el[2]
    cdef int64_t px = 0
    cdef uint64_t sz
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
            if emit_level(s, ts, px, sz, u, side, flags) < 0:
                return -1
        w = arr_next(s, e, &endp)
    return 0


# ---------------------------------------------------------------------------------------------
# topics

cdef int by_book(CState* s, Py_ssize_t* sl, Py_ssize_t top, Py_ssize_t* D) noexcept nogil:
    """orderbook.{depth}.{symbol}: type, ts, cts (optional), data {s, u, b, a} (its keys in ``D``,
    from index_obj_nested) -> BOOK_DELTA per level (bids then asks; size 0 = CANCEL); a snapshot (or a
    delta with u == 1: the service restarted) starts with CLEAR and flags every record
    FLAG_SNAPSHOT. ts_event = cts (matching engine time) when present, else ts; sequence = u."""
    cdef Py_ssize_t v, d, vb, va
    cdef Py_ssize_t a, b
    cdef uint64_t ts, u
    cdef bint snap
    cdef uint8_t flags = 0
    v = req(s, sl, BY_TYPE, b"type", top)
    if v < 0 or get_str(s, v, b"type", &a, &b) < 0:
        return -1
    if raw_eq(s.p + a, b - a, b"snapshot", 8):
        snap = 1
    elif raw_eq(s.p + a, b - a, b"delta", 5):
        snap = 0
    else:
        return e_codec(s, ERR_CODEC, b"unknown type", b"type", v)
    v = req(s, sl, BY_TS, b"ts", top)
    if v < 0 or get_ms(s, v, b"ts", &ts) < 0:
        return -1
    if sl[BY_CTS] >= 0 and get_ms(s, sl[BY_CTS], b"cts", &ts) < 0:
        return -1
    d = req(s, sl, BY_DATA, b"data", top)
    if d < 0:
        return -1
    if s.p[d] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"data", d)
    v = req(s, D, BY_s, b"s", d)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    v = req(s, D, BY_u, b"u", d)
    if v < 0 or get_u64(s, v, b"u", &u) < 0:
        return -1
    vb = req(s, D, BY_b, b"b", d)
    if vb < 0:
        return -1
    va = req(s, D, BY_a, b"a", d)
    if va < 0:
        return -1
    if snap or u == 1:
        s.kind = K_BOOKSNAPSHOT
        flags = FLAG_SNAPSHOT
        if emit_clear(s, ts, u, flags) < 0:
            return -1
    else:
        s.kind = K_BOOK
    if by_levels(s, vb, b"b", SIDE_BID, ts, u, flags) < 0:
        return -1
    if by_levels(s, va, b"a", SIDE_ASK, ts, u, flags) < 0:
        return -1
    set_last(s)
    s.first_seq = u
    s.last_seq = u
    return 0


cdef int by_trade(CState* s, Py_ssize_t w, Py_ssize_t* D, bint first) noexcept nogil:
    """One trade object at ``w`` (its keys indexed into ``D``) -> TRADE (see by_trades); sets
    first_seq when ``first``, and last_seq. 0 or -1."""
    cdef Py_ssize_t v, a, b
    cdef uint64_t ts, sz, seq, tid
    cdef int64_t px = 0
    cdef uint8_t side, flags
    cdef bint bt
    cdef int r1, r2
    v = req(s, D, BY_s, b"s", w)
    if v < 0 or lookup(s, v, b"s") < 0:
        return -1
    v = req(s, D, BY_T, b"T", w)
    if v < 0 or get_ms(s, v, b"T", &ts) < 0:
        return -1
    v = req(s, D, BY_S, b"S", w)
    if v < 0 or get_str(s, v, b"S", &a, &b) < 0:
        return -1
    if raw_eq(s.p + a, b - a, b"Buy", 3):
        side = SIDE_BID
    elif raw_eq(s.p + a, b - a, b"Sell", 4):
        side = SIDE_ASK
    else:
        return e_codec(s, ERR_CODEC, b"invalid side", b"S", v)
    v = req(s, D, BY_i, b"i", w)
    if v < 0 or get_str(s, v, b"i", &a, &b) < 0:
        return -1
    tid = trade_id(s.p + a, b - a)
    seq = 0
    if D[BY_SEQ] >= 0 and get_u64(s, D[BY_SEQ], b"seq", &seq) < 0:
        return -1
    bt = 0
    if D[BY_BT] >= 0 and get_bool(s, D[BY_BT], b"BT", &bt) < 0:
        return -1
    v = req(s, D, BY_p, b"p", w)
    if v < 0:
        return -1
    r1 = get_px_str(s, v, b"p", &px)
    if r1 < 0:
        return -1
    v = req(s, D, BY_v, b"v", w)
    if v < 0:
        return -1
    r2 = get_sz_str(s, v, b"v", &sz)
    if r2 < 0:
        return -1
    flags = FLAG_PUBLISHER_SPECIFIC if bt else 0
    if r1 == 0 and r2 == 0:
        if emit_trade(s, ts, px, sz, tid, seq, side, flags) < 0:
            return -1
    if first:
        s.first_seq = seq
    s.last_seq = seq
    return 0


cdef int by_trades(CState* s, Py_ssize_t* sl, Py_ssize_t top) noexcept nogil:
    """publicTrade.{symbol}: data = array of {s, T, S, p, v, i, seq?, BT?} -> TRADE each (side =
    taker side S; trade_id from i, see trade_id(); sequence = seq, 0 when absent;
    FLAG_PUBLISHER_SPECIFIC when BT (block trade)). A trade whose price or size cannot be
    represented is dropped alone. first_seq / last_seq: the first / last trade's seq."""
    cdef Py_ssize_t d, w, e, endp = 0
    cdef Py_ssize_t D[BY_N]
    cdef bint first = 1
    d = req(s, sl, BY_DATA, b"data", top)
    if d < 0:
        return -1
    if s.p[d] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"data", d)
    w = arr_first(s, d, 0, &endp)
    while w > 0:
        if s.p[w] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"data", w)
        e = index_obj(s, w, 0, by_key, D, BY_N)
        if by_trade(s, w, D, first) < 0:
            return -1
        first = 0
        w = arr_next(s, e, &endp)
    return 0


cdef int by_ticker(CState* s, Py_ssize_t* sl, Py_ssize_t top, Py_ssize_t* D) noexcept nogil:
    """tickers.{symbol}: type, ts, cs (optional), data {symbol, ...} (its keys in ``D``, from
    index_obj_nested). Fields absent from a delta
    have not changed (Bybit v5 "Ticker"): the codec keeps each instrument's last bid1/ask1 and
    nextFundingTime and applies deltas (a snapshot resets them). Output: a BBO when the frame
    carries any of bid1Price/bid1Size/ask1Price/ask1Size (the merged top; sequence = cs), then
    STATISTICS for markPrice (MARK_PRICE), indexPrice (INDEX_PRICE), fundingRate (FUNDING_RATE,
    the rate at 1e-9 in price, ts_ref = nextFundingTime), openInterest (OPEN_INTEREST, quantity
    at the instrument's size_precision), predictedDeliveryPrice (ESTIMATED_SETTLEMENT_PRICE),
    each when present and not "". ts_event = ts. Every field is parsed before the state
    changes: a malformed frame leaves the state as it was."""
    cdef Py_ssize_t v, d, a, b
    cdef uint64_t ts, cs = 0, nf = 0, bsz = 0, asz = 0, oi = 0
    cdef int64_t bpx = 0, apx = 0, mark = 0, index = 0, fund = 0, pdp = 0
    cdef int rbp, rbs, rap, ras, rmark, rindex, rfund, rnf = 2, roi, rpdp
    cdef bint snap
    cdef TickerState* st
    v = req(s, sl, BY_TYPE, b"type", top)
    if v < 0 or get_str(s, v, b"type", &a, &b) < 0:
        return -1
    if raw_eq(s.p + a, b - a, b"snapshot", 8):
        snap = 1
    elif raw_eq(s.p + a, b - a, b"delta", 5):
        snap = 0
    else:
        return e_codec(s, ERR_CODEC, b"unknown type", b"type", v)
    v = req(s, sl, BY_TS, b"ts", top)
    if v < 0 or get_ms(s, v, b"ts", &ts) < 0:
        return -1
    if sl[BY_CS] >= 0 and get_u64(s, sl[BY_CS], b"cs", &cs) < 0:
        return -1
    d = req(s, sl, BY_DATA, b"data", top)
    if d < 0:
        return -1
    if s.p[d] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"data", d)
    v = req(s, D, BY_SYMBOL, b"symbol", d)
    if v < 0 or lookup(s, v, b"symbol") < 0:
        return -1
    rbp = by_px(s, D[BY_BID1PX], b"bid1Price", &bpx)
    if rbp < 0:
        return -1
    rbs = by_sz(s, D[BY_BID1SZ], b"bid1Size", &bsz)
    if rbs < 0:
        return -1
    rap = by_px(s, D[BY_ASK1PX], b"ask1Price", &apx)
    if rap < 0:
        return -1
    ras = by_sz(s, D[BY_ASK1SZ], b"ask1Size", &asz)
    if ras < 0:
        return -1
    rmark = by_px(s, D[BY_MARK], b"markPrice", &mark)
    if rmark < 0:
        return -1
    rindex = by_px(s, D[BY_INDEX], b"indexPrice", &index)
    if rindex < 0:
        return -1
    rfund = by_px(s, D[BY_FUNDING], b"fundingRate", &fund)
    if rfund < 0:
        return -1
    if D[BY_NEXTFUND] >= 0:
        rnf = by_ms_any(s, D[BY_NEXTFUND], b"nextFundingTime", &nf)
        if rnf < 0:
            return -1
    roi = by_sz(s, D[BY_OI], b"openInterest", &oi)
    if roi < 0:
        return -1
    rpdp = by_px(s, D[BY_PDP], b"predictedDeliveryPrice", &pdp)
    if rpdp < 0:
        return -1
    # every field parsed: update the state, then emit
    st = tk_find(_cur, s.instrument_id, 1) if _cur != NULL else NULL
    if st == NULL:
        s.err = ERR_NOMEM
        return -1
    if snap:
        st.bid_px = DM_UNDEF_PRICE
        st.bid_sz = 0
        st.ask_px = DM_UNDEF_PRICE
        st.ask_sz = 0
        st.next_funding = DM_UNDEF_TIMESTAMP
    if D[BY_NEXTFUND] >= 0:
        st.next_funding = nf if rnf == 0 else DM_UNDEF_TIMESTAMP
    s.kind = K_TICKER
    s.first_seq = cs
    s.last_seq = cs
    if (D[BY_BID1PX] >= 0 or D[BY_BID1SZ] >= 0 or D[BY_ASK1PX] >= 0 or D[BY_ASK1SZ] >= 0):
        if D[BY_BID1PX] >= 0:
            st.bid_px = bpx if rbp == 0 else DM_UNDEF_PRICE
        if D[BY_BID1SZ] >= 0:
            st.bid_sz = bsz if rbs == 0 else 0
        if rbp == 1 or rbs == 1:            # a side with a value rejected alone: no side
            st.bid_px = DM_UNDEF_PRICE
            st.bid_sz = 0
        if D[BY_ASK1PX] >= 0:
            st.ask_px = apx if rap == 0 else DM_UNDEF_PRICE
        if D[BY_ASK1SZ] >= 0:
            st.ask_sz = asz if ras == 0 else 0
        if rap == 1 or ras == 1:
            st.ask_px = DM_UNDEF_PRICE
            st.ask_sz = 0
        if emit_bbo(s, ts, st.bid_px, st.bid_sz, st.ask_px, st.ask_sz, cs, 0) < 0:
            return -1
    if rmark == 0 and emit_stat(s, ts, DM_UNDEF_TIMESTAMP, mark, 0x7FFFFFFFFFFFFFFF, 0, ST_MARK_PRICE,
                                STAT_NEW, 0) < 0:
        return -1
    if rindex == 0 and emit_stat(s, ts, DM_UNDEF_TIMESTAMP, index, 0x7FFFFFFFFFFFFFFF, 0, ST_INDEX_PRICE,
                                 STAT_NEW, 0) < 0:
        return -1
    if rfund == 0 and emit_stat(s, ts, st.next_funding, fund, 0x7FFFFFFFFFFFFFFF, 0, ST_FUNDING_RATE,
                                STAT_NEW, 0) < 0:
        return -1
    if roi == 0 and emit_stat(s, ts, DM_UNDEF_TIMESTAMP, DM_UNDEF_PRICE, <int64_t>oi, 0, ST_OPEN_INTEREST,
                              STAT_NEW, 0) < 0:
        return -1
    if rpdp == 0 and emit_stat(s, ts, DM_UNDEF_TIMESTAMP, pdp, 0x7FFFFFFFFFFFFFFF, 0,
                               ST_ESTIMATED_SETTLEMENT_PRICE, STAT_NEW, 0) < 0:
        return -1
    return 0


cdef int by_topic(const uint8_t* t, Py_ssize_t n) noexcept nogil:
    if n > 10 and memcmp(t, b"orderbook.", 10) == 0:
        return T_BOOK
    if n > 12 and memcmp(t, b"publicTrade.", 12) == 0:
        return T_TRADE
    if n > 8 and memcmp(t, b"tickers.", 8) == 0:
        return T_TICKER
    if n > 6 and memcmp(t, b"kline.", 6) == 0:
        return T_KLINE
    return 0


# ---------------------------------------------------------------------------------------------
# Order book and trade frames in one pass.
#
# The general path (by_decode -> by_book / by_trades) validates the whole frame while indexing its
# top object and a book's data object (index_obj_nested), then walks each level array collecting its two
# strings and scans each string once more to parse it: every byte of the levels is read three
# times (four before index_obj_nested), each trade object's twice. Bybit API v5 docs, "WebSocket Stream →
# Public → Orderbook", push data: {"topic": "orderbook.{depth}.{symbol}", "type": "snapshot" |
# "delta", "ts", "data": {"s", "b", "a", "u", "seq"}, "cts"}, each level [price, size] of strings;
# "Trade": {"topic": "publicTrade.{symbol}", "type": "snapshot", "ts", "data": [{"T", "s", "S",
# "v", "p", "L", "i", "BT", "RPI", "seq"}, ...]} (spot: "i", "T", "p", "v", "S", "seq", "s", ...).
# Bybit sends "topic" first, "type" and "ts" before "data", "cts" after it, and in a book's data
# object "s" first, "b" before "a", "u" after them.
#
# The one-pass decoder reads the top object's members once, in whatever order they come, with
# "topic" before "data"; a book's data object in any order with "s" before "b" and "b" before "a"
# (the symbol gives the instrument and its size precision; bids' records and rejected values come
# first), each level in one scan (written as Bybit writes it, ["65114.20","6.054"], its digits are
# accumulated as they are read: plain_level; any other level element by element, each string
# scanned once and parsed), writing records with ts_event, sequence and flags left 0 that are
# patched once ts, cts, type and u have been read (a snapshot's CLEAR, or a delta's with u == 1, is
# written last and moved to the front). A trade object is indexed while it is validated
# (index_obj), once, and decoded as the general path decodes it (by_trade). It gives exactly the
# general path's result or hands the frame to it: -1 for any other shape (another topic, "data"
# before "topic", a book member repeated where "the last one wins" would apply, an unexpected type)
# and for any error (whose report, offset included, is the general path's). Every byte it reads or
# skips is validated at the general path's nesting depths.

cdef bint _one_pass = 1           # tests turn it off (_set_one_pass) to compare with the general path
cdef uint64_t _one_pass_frames = 0  # frames the one-pass decoder decoded (tests: _one_pass_count)


def _set_one_pass(bint on):
    """Test hook: whether book and trade frames may take the one-pass decoder (default on).
    Returns the previous setting."""
    global _one_pass
    cdef bint was = _one_pass
    _one_pass = on
    return bool(was)


def _one_pass_count():
    """Test hook: how many frames the one-pass decoder has decoded in this process."""
    return _one_pass_frames


cdef inline Py_ssize_t plain_dec(const uint8_t* p, Py_ssize_t i, Py_ssize_t n, uint64_t* acc, Py_ssize_t* ni,
                                 Py_ssize_t* nf) noexcept nogil:
    """Digits, then optionally '.' and digits, from ``i``: ``acc`` = all the digits as one integer
    (meaningful only when there are at most 19), ``ni`` / ``nf`` = integer / fractional digit
    counts. Returns the index after them."""
    cdef Py_ssize_t j = i
    cdef uint64_t a = 0
    while i < n and is_digit(p[i]):
        a = a * 10 + (p[i] - 48)
        i += 1
    ni[0] = i - j
    nf[0] = 0
    if i < n and p[i] == 46:
        i += 1
        j = i
        while i < n and is_digit(p[i]):
            a = a * 10 + (p[i] - 48)
            i += 1
        nf[0] = i - j
    acc[0] = a
    return i


cdef inline Py_ssize_t plain_level(CState* s, Py_ssize_t w, int64_t* px, uint64_t* sz) noexcept nogil:
    """The level at ``w`` when it is written exactly ``["<price>","<size>"]`` with plain decimals
    that parse_fixed and parse_size_dp read on their fast paths and that fit (Bybit's form:
    ``["65114.20","6.054"]``): the index after its ``]``, the values in ``px`` / ``sz`` (what
    those functions give for the same text). 0 for any other text (then read it the general
    way)."""
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n, i, ni = 0, nf = 0
    cdef uint64_t acc = 0
    cdef int dp = s.size_precision
    if w + 2 >= n or p[w + 1] != 34:
        return 0
    i = plain_dec(p, w + 2, n, &acc, &ni, &nf)
    # parse_fixed's fast path: 1..10 integer digits, at most 9 fractional ones; it fits i64
    if ni < 1 or ni > 10 or nf > 9 or i + 3 >= n or p[i] != 34 or p[i + 1] != 44 or p[i + 2] != 34:
        return 0
    acc *= dm_pow10[9 - nf]
    if acc > <uint64_t>0x7FFFFFFFFFFFFFFF:
        return 0
    px[0] = <int64_t>acc
    i = plain_dec(p, i + 3, n, &acc, &ni, &nf)
    # parse_size_dp's fast path without its zeros past dp: < 10**18, fits
    if ni < 1 or ni + dp > 18 or nf > dp or i + 1 >= n or p[i] != 34 or p[i + 1] != 93:
        return 0
    sz[0] = acc * dm_pow10[dp - nf]
    return i + 2


cdef int by_levels_one_pass(CState* s, Py_ssize_t v, const char* field, uint8_t side,
                            Py_ssize_t* end) noexcept nogil:
    """``b`` / ``a`` at ``v`` (an array in the data object: 2 containers around) in one scan, as
    by_levels decodes it, ts_event, sequence and flags left 0. A level written as Bybit writes it
    is read by plain_level; any other is read element by element. ``end``: the index after its
    ``]``. 0, or -1 for the general path."""
    cdef Py_ssize_t w, x, e = 0, endp = 0, endl = 0
    cdef int64_t px = 0
    cdef uint64_t sz = 0
    cdef int r1, r2
    w = arr_first(s, v, 2, &endp)
    while w > 0:
        if s.p[w] != 91:
            return -1
        endl = plain_level(s, w, &px, &sz)
        if endl > 0:
            if emit_level(s, 0, px, sz, 0, side, 0) < 0:
                return -1
            w = arr_next(s, endl, &endp)
            continue
        x = arr_first(s, w, 3, &endl)
        if x <= 0 or level_str(s, x, &e) < 0:
            return -1
        r1 = _fx_result(s, parse_fixed(s.p + x + 1, e - x - 2, 1, &px), field, x)
        if r1 < 0:
            return -1
        x = arr_next(s, e, &endl)
        if x <= 0 or level_str(s, x, &e) < 0:
            return -1
        r2 = _fx_result(s, parse_size_dp(s.p + x + 1, e - x - 2, s.size_precision, <int64_t*>&sz), field, x)
        if r2 < 0:
            return -1
        x = arr_next(s, e, &endl)
        while x > 0:                                        # anything after [price, size]
            e = skip_member(s, x, 4)
            if e < 0:
                return -1
            x = arr_next(s, e, &endl)
        if x < 0:
            return -1
        if r1 == 0 and r2 == 0:
            if emit_level(s, 0, px, sz, 0, side, 0) < 0:
                return -1
        w = arr_next(s, endl, &endp)
    if w < 0:
        return -1
    end[0] = endp
    return 0


cdef Py_ssize_t by_book_data_one_pass(CState* s, Py_ssize_t o, Py_ssize_t* vu) noexcept nogil:
    """A book's data object at ``o`` (1 container around): looks ``s`` up and writes the levels'
    records (bids then asks, patched later); ``vu``: the offset of ``u``'s value. Returns the
    index after its ``}``, or -1 for the general path."""
    cdef Py_ssize_t ks = 0, ke = 0, m, e = 0, vs = -1, vb = -1, va = -1
    cdef int slot
    m = obj_first(s, o, 1, &ks, &ke)
    while m > 0:
        if m >= s.n:
            return -1
        slot = by_key(s.p + ks, ke - ks)
        if slot == BY_b or slot == BY_a:
            # after the symbol (its size precision), bids before asks (the general path's order)
            if vs < 0 or s.p[m] != 91 or (slot == BY_a and vb < 0):
                return -1
            if slot == BY_b:
                if take_once(&vb, m) < 0 or by_levels_one_pass(s, m, b"b", SIDE_BID, &e) < 0:
                    return -1
            elif take_once(&va, m) < 0 or by_levels_one_pass(s, m, b"a", SIDE_ASK, &e) < 0:
                return -1
        elif slot == BY_s:
            if take_once(&vs, m) < 0 or s.p[m] != 34:
                return -1
            e = scan_string(s, m)
            if e < 0 or lookup(s, m, b"s") < 0:
                return -1
        else:
            if slot == BY_u and take_once(vu, m) < 0:
                return -1
            e = skip_member(s, m, 2)
            if e < 0:
                return -1
        m = obj_next(s, e, &ks, &ke)
    if m < 0 or va < 0 or vu[0] < 0:
        return -1
    return ks


cdef Py_ssize_t by_trades_one_pass(CState* s, Py_ssize_t d) noexcept nogil:
    """A trade frame's data array at ``d`` (1 container around): each object indexed while it is
    validated, then decoded by by_trade. Returns the index after its ``]``, or -1 for the
    general path."""
    cdef Py_ssize_t w, e, endp = 0
    cdef Py_ssize_t D[BY_N]
    cdef bint first = 1
    w = arr_first(s, d, 1, &endp)
    while w > 0:
        if s.p[w] != 123:
            return -1
        e = index_obj(s, w, 2, by_key, D, BY_N)
        if e < 0 or by_trade(s, w, D, first) < 0:
            return -1
        first = 0
        w = arr_next(s, e, &endp)
    if w < 0:
        return -1
    return endp


cdef int by_book_finish(CState* s, Py_ssize_t vtype, Py_ssize_t vts, Py_ssize_t vcts, Py_ssize_t vu) noexcept nogil:
    """A book frame's levels written by by_book_data_one_pass: its fields read (as by_book reads
    them) and its records patched. 0, or -1 for the general path."""
    cdef Py_ssize_t e, i, rl = sizeof(BookDeltaRecord)
    cdef uint64_t ts, u
    cdef bint snap
    cdef uint8_t flags
    cdef BookDeltaRecord* r
    cdef BookDeltaRecord clear
    if vtype < 0 or vts < 0 or s.p[vtype] != 34:
        return -1
    e = scan_string(s, vtype)                          # validated: e > 0
    if raw_eq(s.p + vtype + 1, e - vtype - 2, b"snapshot", 8):
        snap = 1
    elif raw_eq(s.p + vtype + 1, e - vtype - 2, b"delta", 5):
        snap = 0
    else:
        return -1
    if get_ms(s, vts, b"ts", &ts) < 0:
        return -1
    if vcts >= 0 and get_ms(s, vcts, b"cts", &ts) < 0:
        return -1
    if get_u64(s, vu, b"u", &u) < 0:
        return -1
    snap = snap or u == 1
    flags = FLAG_SNAPSHOT if snap else 0
    i = 0
    while i < s.out_len:
        r = <BookDeltaRecord*>(s.out + i)
        r.hd.ts_event = ts
        r.sequence = u
        r.flags = flags
        i += rl
    if snap:                                           # the CLEAR first: written last, moved
        if emit_clear(s, ts, u, flags) < 0:
            return -1
        memcpy(&clear, s.out + s.out_len - rl, rl)
        memmove(s.out + rl, s.out, s.out_len - rl)
        memcpy(s.out, &clear, rl)
        s.kind = K_BOOKSNAPSHOT
    else:
        s.kind = K_BOOK
    if s.nrec > 0:
        s.last_rec = s.out_len - rl
    set_last(s)
    s.first_seq = u
    s.last_seq = u
    return 0


cdef int by_one_pass(CState* s, Py_ssize_t top) noexcept nogil:
    """The frame at ``top`` (an object) in one pass (above) when it is an order book or trade
    frame: 0 when decoded so, -1 for the general path. ``topic`` must come before ``data``."""
    cdef Py_ssize_t ks = 0, ke = 0, w, e = 0
    cdef Py_ssize_t vtype = -1, vts = -1, vcts = -1, vu = -1
    cdef int slot, t = 0
    cdef bint done = 0
    w = obj_first(s, top, 0, &ks, &ke)
    while w > 0:
        if w >= s.n:
            return -1
        slot = by_key(s.p + ks, ke - ks)
        if slot == BY_DATA:
            if done or t == 0:
                return -1
            if t == T_BOOK:
                e = by_book_data_one_pass(s, w, &vu) if s.p[w] == 123 else -1
            else:
                e = by_trades_one_pass(s, w) if s.p[w] == 91 else -1
            if e < 0:
                return -1
            done = 1
        elif slot == BY_TOPIC:
            if t != 0 or s.p[w] != 34:
                return -1
            e = scan_string(s, w)
            if e < 0:
                return -1
            t = by_topic(s.p + w + 1, e - w - 2)
            if t != T_BOOK and t != T_TRADE:               # tickers, kline: the general path
                return -1
        else:
            if ((slot == BY_TYPE and take_once(&vtype, w) < 0) or (slot == BY_TS and take_once(&vts, w) < 0)
                    or (slot == BY_CTS and take_once(&vcts, w) < 0)):
                return -1                                   # a repeated member: the general path
            e = skip_member(s, w, 1)
            if e < 0:
                return -1
        w = obj_next(s, e, &ks, &ke)
    if w < 0 or not done or skip_ws(s, ks) < s.n:
        return -1
    if t == T_TRADE:
        s.kind = K_TRADE
        return 0
    return by_book_finish(s, vtype, vts, vcts, vu)


cdef inline bint other_topic(CState* s, Py_ssize_t top) noexcept nogil:
    """The frame starts as Bybit writes a ticker or kline frame (``{"topic":"`` and neither
    ``orderbook.`` nor ``publicTrade.``): not worth a one-pass attempt (speed only: any frame may
    take either path)."""
    return (top + 22 <= s.n and memcmp(s.p + top, b'{"topic":"', 10) == 0
            and memcmp(s.p + top + 10, b"orderbook.", 10) != 0 and memcmp(s.p + top + 10, b"publicTrade.", 12) != 0)


cdef int by_decode(CState* s) noexcept nogil:
    global _one_pass_frames
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t sl[BY_N]
    cdef Py_ssize_t D[BY_N]
    cdef Py_ssize_t top, e, v, a, b
    cdef int t
    cdef bint ok
    top = skip_ws(s, 0)
    if top >= s.n:
        return e_end(s)
    if p[top] == 123 and _one_pass and not other_topic(s, top):
        if by_one_pass(s, top) == 0:
            _one_pass_frames += 1
            return 0
        begin_frame(s, s.p, s.n, s.ts_recv)                # the general path, from scratch
    if p[top] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, top)
    e = index_obj_nested(s, top, 0, by_key, sl, BY_N, BY_DATA, D)   # data (books, tickers) indexed on the way
    if e < 0:
        return -1
    e = skip_ws(s, e)
    if e < s.n:
        return e_byte(s, e)
    if sl[BY_TOPIC] < 0:
        # control frames ("Connect": subscribe/unsubscribe acks, pong)
        v = req(s, sl, BY_OP, b"op", top)
        if v < 0 or get_str(s, v, b"op", &a, &b) < 0:
            return -1
        if raw_eq(p + a, b - a, b"ping", 4) or raw_eq(p + a, b - a, b"pong", 4):
            s.kind = K_PONG
            return 0
        if not (raw_eq(p + a, b - a, b"subscribe", 9) or raw_eq(p + a, b - a, b"unsubscribe", 11)):
            return e_codec(s, ERR_CODEC, b"unknown op", b"op", v)
        v = req(s, sl, BY_SUCCESS, b"success", top)
        if v < 0 or get_bool(s, v, b"success", &ok) < 0:
            return -1
        s.kind = K_SUBSCRIPTION if ok else K_ERROR
        return 0
    v = sl[BY_TOPIC]
    if get_str(s, v, b"topic", &a, &b) < 0:
        return -1
    t = by_topic(p + a, b - a)
    if t == T_BOOK:
        return by_book(s, sl, top, D)
    if t == T_TRADE:
        s.kind = K_TRADE
        return by_trades(s, sl, top)
    if t == T_TICKER:
        return by_ticker(s, sl, top, D)
    if t == T_KLINE:
        s.kind = K_KLINE
        return 0
    return e_codec(s, ERR_CODEC, b"unknown topic", b"topic", v)


cdef class BybitCodec(_Codec):
    """Bybit websocket API v5 public frames (spot, linear, inverse: one codec per connection,
    since a symbol name such as ``BTCUSDT`` means another instrument in another category).

    * ``orderbook.{depth}.{symbol}`` ("Orderbook"): ``snapshot`` → CLEAR + one BOOK_DELTA per
      level (``FLAG_SNAPSHOT``); ``delta`` → one BOOK_DELTA per level, size ``"0"`` = CANCEL;
      a delta with ``u`` == 1 is decoded as a snapshot (the doc: ``u`` = 1 is the service's
      restart, "overwrite your local orderbook"). ``ts_event`` = ``cts`` (else ``ts``);
      sequence, ``first_seq``/``last_seq`` = ``u``. Kind ``bookSnapshot`` / ``book``.
    * ``publicTrade.{symbol}`` ("Trade") → TRADE per entry: side = ``S`` (taker), ``ts_event``
      = ``T``, ``trade_id`` = ``i`` when ``i`` is a decimal u64 (spot), else FNV-1a 64 of the
      ``i`` text (linear/inverse send UUIDs: a stable u64 per id; storage keys trades by
      (instrument, ts_event, trade_id)), ``sequence`` = ``seq`` (cross sequence, 0 when
      absent), ``FLAG_PUBLISHER_SPECIFIC`` = block trade (``BT``). Kind ``trade``.
    * ``tickers.{symbol}`` ("Ticker") → BBO (merged bid1/ask1, the codec keeps the last full
      ticker per instrument: linear/inverse tickers are deltas "if a response param is not
      found in the message, then its value has not changed") and STATISTICS (mark, index,
      funding rate with ``ts_ref`` = next funding time, open interest, predicted delivery
      price); see ``by_ticker``. Kind ``ticker``.
    * ``kline.*`` → no records (kind ``kline``); ``{"op":"subscribe"|"unsubscribe",
      "success":true}`` → kind ``subscription``, ``"success":false`` → kind ``error``;
      ``{"op":"ping"|"pong"}`` (pong) → kind ``pong``. Any other topic or op is a CodecError.

    Order book and trade frames with ``topic`` before ``data`` (as Bybit sends them; a book's
    data object with ``s`` before ``b`` before ``a``, the other members in any order) are decoded
    in one pass (``by_one_pass``: each level scanned once, each trade object once); any other
    frame takes the general path, which gives the same result for them, errors included.

    Prices are decimal strings → i64 at 1e-9, sizes at the instrument's size_precision
    (``add_symbol(symbol, iid, size_precision)``); a value that cannot be represented is
    rejected alone (``value_errors``): that level / trade / BBO side / statistic is dropped.
    """

    def __cinit__(self, *args, **kwargs):
        self.decoder = by_decode
        self.venue = "BYBIT"
        self.tickers.slot = NULL
        self.tickers.cap = 0
        self.tickers.count = 0

    def __dealloc__(self):
        free(self.tickers.slot)

    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1:
        global _cur
        _cur = &self.tickers
        try:
            return _Codec.decode_c(self, p, n, ts_recv)
        finally:
            _cur = NULL

    def ticker_state(self, uint32_t instrument_id):
        """``(bid_px, bid_sz, ask_px, ask_sz, next_funding_ns)`` kept for an instrument (tests),
        ``None`` before its first ticker."""
        cdef TickerState* st = tk_find(&self.tickers, instrument_id, 0)
        if st == NULL:
            return None
        return (st.bid_px, st.bid_sz, st.ask_px, st.ask_sz, st.next_funding)
