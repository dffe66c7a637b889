# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Deribit JSON-RPC websocket API v2 frames -> dm records (the venue half of ``DeribitCodec``; the
shared scanner is ``dm/_scan.pxd``, the base class ``dm._codec._Codec``).

Rules from the Deribit API v2 docs (https://docs.deribit.com/), "Subscriptions":
``book.{instrument_name}.{interval}``, ``ticker.{instrument_name}.{interval}``,
``trades.{instrument_name}.{interval}``; "Session management": ``public/set_heartbeat``,
``public/test``; JSON-RPC 2.0 responses and errors. See the class docstring.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp

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
    ST_IMPLIED_VOLATILITY = 1007
    ST_UNDERLYING_PRICE = 1008
    STAT_NEW = 1                  # DBN StatUpdateAction::New

cdef enum:
    DB_ID = 0
    DB_METHOD
    DB_PARAMS
    DB_RESULT
    DB_ERROR
    DB_CHANNEL
    DB_DATA
    DB_TYPE
    DB_TIMESTAMP
    DB_INSTRUMENT
    DB_CHANGE_ID
    DB_PREV_CHANGE_ID
    DB_BIDS
    DB_ASKS
    DB_BB_PX
    DB_BB_AMT
    DB_BA_PX
    DB_BA_AMT
    DB_MARK
    DB_INDEX
    DB_UNDERLYING
    DB_MARK_IV
    DB_OI
    DB_EDP
    DB_FUNDING
    DB_TRADE_SEQ
    DB_TRADE_ID
    DB_PRICE
    DB_AMOUNT
    DB_DIRECTION
    DB_N

cdef enum:
    C_BOOK = 1
    C_TICKER = 2
    C_TRADES = 3


cdef int db_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if n == 2:
        return DB_ID if memcmp(k, b"id", 2) == 0 else -1
    if n == 4:
        if memcmp(k, b"data", 4) == 0:
            return DB_DATA
        if memcmp(k, b"type", 4) == 0:
            return DB_TYPE
        if memcmp(k, b"bids", 4) == 0:
            return DB_BIDS
        if memcmp(k, b"asks", 4) == 0:
            return DB_ASKS
        return -1
    if n == 5:
        if memcmp(k, b"error", 5) == 0:
            return DB_ERROR
        if memcmp(k, b"price", 5) == 0:
            return DB_PRICE
        return -1
    if n == 6:
        if memcmp(k, b"method", 6) == 0:
            return DB_METHOD
        if memcmp(k, b"params", 6) == 0:
            return DB_PARAMS
        if memcmp(k, b"result", 6) == 0:
            return DB_RESULT
        if memcmp(k, b"amount", 6) == 0:
            return DB_AMOUNT
        return -1
    if n == 7:
        if memcmp(k, b"channel", 7) == 0:
            return DB_CHANNEL
        if memcmp(k, b"mark_iv", 7) == 0:
            return DB_MARK_IV
        return -1
    if n == 8:
        return DB_TRADE_ID if memcmp(k, b"trade_id", 8) == 0 else -1
    if n == 9:
        if memcmp(k, b"timestamp", 9) == 0:
            return DB_TIMESTAMP
        if memcmp(k, b"change_id", 9) == 0:
            return DB_CHANGE_ID
        if memcmp(k, b"trade_seq", 9) == 0:
            return DB_TRADE_SEQ
        if memcmp(k, b"direction", 9) == 0:
            return DB_DIRECTION
        return -1
    if n == 10:
        if memcmp(k, b"mark_price", 10) == 0:
            return DB_MARK
        return -1
    if n == 11:
        if memcmp(k, b"index_price", 11) == 0:
            return DB_INDEX
        return -1
    if n == 13:
        if memcmp(k, b"open_interest", 13) == 0:
            return DB_OI
        return -1
    if n == 14:
        if memcmp(k, b"prev_change_id", 14) == 0:
            return DB_PREV_CHANGE_ID
        if memcmp(k, b"best_bid_price", 14) == 0:
            return DB_BB_PX
        if memcmp(k, b"best_ask_price", 14) == 0:
            return DB_BA_PX
        return -1
    if n == 15:
        if memcmp(k, b"instrument_name", 15) == 0:
            return DB_INSTRUMENT
        if memcmp(k, b"best_bid_amount", 15) == 0:
            return DB_BB_AMT
        if memcmp(k, b"best_ask_amount", 15) == 0:
            return DB_BA_AMT
        if memcmp(k, b"current_funding", 15) == 0:
            return DB_FUNDING
        return -1
    if n == 16 and memcmp(k, b"underlying_price", 16) == 0:
        return DB_UNDERLYING
    if n == 24 and memcmp(k, b"estimated_delivery_price", 24) == 0:
        return DB_EDP
    return -1


# ---------------------------------------------------------------------------------------------
# nested objects of a frame the top-level index_obj has already validated: indexed without
# validating them again (one pass fewer over the book levels)

cdef inline Py_ssize_t skip_valid(CState* s, Py_ssize_t i) noexcept nogil:
    """i at a value of validated JSON: the index after it."""
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n
    cdef int depth = 0
    cdef uint8_t c = p[i]
    if c == 34:
        return scan_string(s, i)
    if c != 123 and c != 91:
        while i < n:
            c = p[i]
            if c == 44 or c == 125 or c == 93 or dm_is_ws[c]:
                break
            i += 1
        return i
    while True:
        i = dm_struct_run(p, i, n)      # to the next quote or bracket, eight bytes at a time
        if i >= n:
            return i
        c = p[i]
        if c == 34:
            i = scan_string(s, i)
            continue
        if c == 123 or c == 91:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1


cdef inline Py_ssize_t index_valid(CState* s, Py_ssize_t v, keyfn_t kf, Py_ssize_t* slots, int nslots) noexcept nogil:
    """index_obj for an object inside a validated frame (same slots, last key wins)."""
    cdef Py_ssize_t ks = 0, ke = 0, w
    cdef int j, slot
    for j in range(nslots):
        slots[j] = -1
    w = obj_first(s, v, 0, &ks, &ke)
    while w > 0:
        slot = kf(s.p + ks, ke - ks)
        if slot >= 0:
            slots[slot] = w
        w = obj_next(s, skip_valid(s, w), &ks, &ke)
    return ks


cdef Py_ssize_t index_params(CState* s, Py_ssize_t top, Py_ssize_t* sl, Py_ssize_t* P, Py_ssize_t* D) noexcept nogil:
    """``index_obj(s, top, 0, db_key, sl, DB_N)`` that indexes the value of ``params``, when it is
    an object, into ``P`` and its own ``data`` object into ``D`` (``index_obj_nested``) while
    validating them: the same validation, in the same order, with the same errors. ``P``/``D``
    hold the last such objects' keys: callers use them only once they have checked that the last
    ``params`` (``data``) member is an object. Returns the index after the top ``}`` or -1."""
    cdef Py_ssize_t ks = 0, ke = 0, w, e
    cdef int j, slot
    for j in range(DB_N):
        sl[j] = -1
    w = obj_first(s, top, 0, &ks, &ke)
    while w > 0:
        slot = db_key(s.p + ks, ke - ks)
        if slot >= 0:
            sl[slot] = w
        if slot == DB_PARAMS and s.p[w] == 123:
            e = index_obj_nested(s, w, 1, db_key, P, DB_N, DB_DATA, D)
        else:
            e = skip_member(s, w, 1)
        if e < 0:
            return -1
        w = obj_next(s, e, &ks, &ke)
    if w < 0:
        return -1
    return ks


# ---------------------------------------------------------------------------------------------
# field helpers

cdef inline uint64_t trade_id(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """``trade_id`` text -> u64: its value when it is 1..18 decimal digits (BTC/ETH ids are
    numbers as strings), else FNV-1a 64 of the text with the top bit cleared (``"ETH-123"``,
    ``"SOL_USDC-45"``: a stable id per trade; storage keys trades by id)."""
    cdef Py_ssize_t i
    cdef uint64_t acc = 0, h = 14695981039346656037ULL
    cdef bint digits = n >= 1 and n <= 18
    for i in range(n):
        if not is_digit(p[i]):
            digits = 0
            break
        acc = acc * 10 + (p[i] - 48)
    if digits:
        return acc
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h & 0x7FFFFFFFFFFFFFFFULL


cdef int opt_px(CState* s, Py_ssize_t v, const char* field, int64_t* out) noexcept nogil:
    """Optional price (JSON number): 0 parsed, 1 rejected alone, 2 absent or null, -1 malformed."""
    if v < 0 or s.p[v] == 110:
        return 2
    return get_px_num(s, v, field, 0, 0, out)


cdef int opt_sz(CState* s, Py_ssize_t v, const char* field, uint64_t* out) noexcept nogil:
    """Optional size (JSON number) at the instrument's size_precision; results as opt_px."""
    if v < 0 or s.p[v] == 110:
        return 2
    return get_sz_num(s, v, field, 0, out)


cdef inline Py_ssize_t level3(CState* s, Py_ssize_t w, Py_ssize_t* L) noexcept nogil:
    """w at '[' of a validated array that is exactly ``[string, number, number]``: the three
    element offsets in L and the index after ']'; 0 for any other shape (the caller takes the
    generic path, which gives the oracle's errors)."""
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t i = skip_ws(s, w + 1)
    cdef int k
    if p[i] != 34:
        return 0
    L[0] = i
    i = skip_ws(s, scan_string(s, i))
    for k in range(1, 3):
        if p[i] != 44:
            return 0
        i = skip_ws(s, i + 1)
        if not (p[i] == 45 or is_digit(p[i])):
            return 0
        L[k] = i
        i = skip_ws(s, scan_number(s, i))
    if p[i] != 93:
        return 0
    return i + 1


cdef int db_levels(CState* s, Py_ssize_t v, const char* field, uint8_t side, uint64_t ts, uint64_t seq,
                   uint8_t flags) noexcept nogil:
    """``[[action, price, amount], ...]``: ``new`` → ACTION_ADD, ``change`` → ACTION_MODIFY,
    ``delete`` → ACTION_CANCEL (size 0 whatever the amount). A level whose price or amount
    cannot be represented is dropped alone."""
    cdef Py_ssize_t w, e, a, b, endp = 0
    cdef Py_ssize_t L[3]
    cdef int64_t px = 0
    cdef uint64_t sz = 0
    cdef uint8_t action
    cdef int r1, r2
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", field, w)
        e = level3(s, w, L)          # the common [string, number, number]: one pass
        if e == 0:
            if arr_collect(s, w, L, 3) != 3:
                return e_codec(s, ERR_CODEC, b"expected [action, price, amount]", field, w)
            e = skip_value(s, w, 0)
        if get_str(s, L[0], field, &a, &b) < 0:
            return -1
        if raw_eq(s.p + a, b - a, b"new", 3):
            action = ACTION_ADD
        elif raw_eq(s.p + a, b - a, b"change", 6):
            action = ACTION_MODIFY
        elif raw_eq(s.p + a, b - a, b"delete", 6):
            action = ACTION_CANCEL
        else:
            return e_codec(s, ERR_CODEC, b"unknown level action", field, L[0])
        r1 = get_px_num(s, L[1], field, 0, 0, &px)
        if r1 < 0:
            return -1
        r2 = get_sz_num(s, L[2], field, 0, &sz)
        if r2 < 0:
            return -1
        if r1 == 0 and r2 == 0:
            if action == ACTION_CANCEL:
                sz = 0
            elif sz == 0:
                action = ACTION_CANCEL
            if emit_delta(s, ts, px, sz, seq, side, action, flags) < 0:
                return -1
        w = arr_next(s, e, &endp)
    return 0


# ---------------------------------------------------------------------------------------------
# channels

cdef int db_book(CState* s, Py_ssize_t d, Py_ssize_t* D) noexcept nogil:
    """book.{instrument_name}.{interval} data (at ``d``, its keys in ``D`` from index_params): type
    (snapshot | change), timestamp, instrument_name, change_id, prev_change_id (changes), bids,
    asks."""
    cdef Py_ssize_t v, vb, va, a, b
    cdef uint64_t ts, cid, prev = 0
    cdef bint snap
    cdef uint8_t flags = 0
    v = req(s, D, DB_TYPE, b"type", d)
    if v < 0 or get_str(s, v, b"type", &a, &b) < 0:
        return -1
    if raw_eq(s.p + a, b - a, b"snapshot", 8):
        snap = 1
    elif raw_eq(s.p + a, b - a, b"change", 6):
        snap = 0
    else:
        return e_codec(s, ERR_CODEC, b"unknown type", b"type", v)
    v = req(s, D, DB_INSTRUMENT, b"instrument_name", d)
    if v < 0 or lookup(s, v, b"instrument_name") < 0:
        return -1
    v = req(s, D, DB_TIMESTAMP, b"timestamp", d)
    if v < 0 or get_ms(s, v, b"timestamp", &ts) < 0:
        return -1
    v = req(s, D, DB_CHANGE_ID, b"change_id", d)
    if v < 0 or get_u64(s, v, b"change_id", &cid) < 0:
        return -1
    if not snap:
        v = req(s, D, DB_PREV_CHANGE_ID, b"prev_change_id", d)
        if v < 0 or get_u64(s, v, b"prev_change_id", &prev) < 0:
            return -1
    vb = req(s, D, DB_BIDS, b"bids", d)
    if vb < 0:
        return -1
    va = req(s, D, DB_ASKS, b"asks", d)
    if va < 0:
        return -1
    if snap:
        s.kind = K_BOOKSNAPSHOT
        flags = FLAG_SNAPSHOT
        if emit_clear(s, ts, cid, flags) < 0:
            return -1
    else:
        s.kind = K_BOOK
    if db_levels(s, vb, b"bids", SIDE_BID, ts, cid, flags) < 0:
        return -1
    if db_levels(s, va, b"asks", SIDE_ASK, ts, cid, flags) < 0:
        return -1
    set_last(s)
    s.first_seq = cid if snap else prev
    s.last_seq = cid
    return 0


cdef int db_stat_px(CState* s, Py_ssize_t* D, int slot, const char* field, uint64_t ts, uint16_t stype) noexcept nogil:
    cdef int64_t px = 0
    cdef int r = opt_px(s, D[slot], field, &px)
    if r < 0:
        return -1
    if r == 0:
        return emit_stat(s, ts, DM_UNDEF_TIMESTAMP, px, 0x7FFFFFFFFFFFFFFF, 0, stype, STAT_NEW, 0)
    return 0


cdef int db_ticker(CState* s, Py_ssize_t d, Py_ssize_t* D) noexcept nogil:
    """ticker.{instrument_name}.{interval} data (at ``d``, its keys in ``D``) -> a BBO (best_bid_price/amount,
    best_ask_price/amount; a side whose amount is 0 or null is empty: Deribit shows an empty side
    as price 0.0 amount 0.0) then STATISTICS, each when present and not null: mark_price
    (MARK_PRICE), index_price (INDEX_PRICE), underlying_price (UNDERLYING_PRICE), mark_iv
    (IMPLIED_VOLATILITY, percent at 1e-9), open_interest (OPEN_INTEREST, quantity at the
    instrument's size_precision), estimated_delivery_price (ESTIMATED_SETTLEMENT_PRICE),
    current_funding (FUNDING_RATE, perpetuals). ts_event = timestamp. Every BBO field is parsed
    before anything is emitted."""
    cdef Py_ssize_t v
    cdef uint64_t ts, bsz = 0, asz = 0, oi = 0
    cdef int64_t bpx = 0, apx = 0
    cdef int rbp, rbs, rap, ras, roi
    v = req(s, D, DB_INSTRUMENT, b"instrument_name", d)
    if v < 0 or lookup(s, v, b"instrument_name") < 0:
        return -1
    v = req(s, D, DB_TIMESTAMP, b"timestamp", d)
    if v < 0 or get_ms(s, v, b"timestamp", &ts) < 0:
        return -1
    rbp = opt_px(s, D[DB_BB_PX], b"best_bid_price", &bpx)
    if rbp < 0:
        return -1
    rbs = opt_sz(s, D[DB_BB_AMT], b"best_bid_amount", &bsz)
    if rbs < 0:
        return -1
    rap = opt_px(s, D[DB_BA_PX], b"best_ask_price", &apx)
    if rap < 0:
        return -1
    ras = opt_sz(s, D[DB_BA_AMT], b"best_ask_amount", &asz)
    if ras < 0:
        return -1
    s.kind = K_TICKER
    if rbp != 0 or rbs != 0 or bsz == 0:
        bpx = DM_UNDEF_PRICE
        bsz = 0
    if rap != 0 or ras != 0 or asz == 0:
        apx = DM_UNDEF_PRICE
        asz = 0
    if (D[DB_BB_PX] >= 0 or D[DB_BA_PX] >= 0) and emit_bbo(s, ts, bpx, bsz, apx, asz, 0, 0) < 0:
        return -1
    if db_stat_px(s, D, DB_MARK, b"mark_price", ts, ST_MARK_PRICE) < 0:
        return -1
    if db_stat_px(s, D, DB_INDEX, b"index_price", ts, ST_INDEX_PRICE) < 0:
        return -1
    if db_stat_px(s, D, DB_UNDERLYING, b"underlying_price", ts, ST_UNDERLYING_PRICE) < 0:
        return -1
    if db_stat_px(s, D, DB_MARK_IV, b"mark_iv", ts, ST_IMPLIED_VOLATILITY) < 0:
        return -1
    roi = opt_sz(s, D[DB_OI], b"open_interest", &oi)
    if roi < 0:
        return -1
    if roi == 0 and emit_stat(s, ts, DM_UNDEF_TIMESTAMP, DM_UNDEF_PRICE, <int64_t>oi, 0, ST_OPEN_INTEREST,
                              STAT_NEW, 0) < 0:
        return -1
    if db_stat_px(s, D, DB_EDP, b"estimated_delivery_price", ts, ST_ESTIMATED_SETTLEMENT_PRICE) < 0:
        return -1
    if db_stat_px(s, D, DB_FUNDING, b"current_funding", ts, ST_FUNDING_RATE) < 0:
        return -1
    return 0


cdef int db_trades(CState* s, Py_ssize_t d) noexcept nogil:
    """trades.{instrument_name}.{interval} data = array of {trade_seq, trade_id, timestamp,
    price, amount, direction, instrument_name, ...} -> TRADE each (side = taker ``direction``:
    buy → bid, sell → ask; sequence = trade_seq; trade_id see trade_id()). A trade whose price or
    amount cannot be represented is dropped alone."""
    cdef Py_ssize_t w, e, v, a, b, endp = 0
    cdef Py_ssize_t D[DB_N]
    cdef uint64_t ts, sz = 0, seq, tid
    cdef int64_t px = 0
    cdef uint8_t side
    cdef bint first = 1
    cdef int r1, r2
    if s.p[d] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"data", d)
    s.kind = K_TRADE
    w = arr_first(s, d, 1, &endp)
    while w > 0:
        if s.p[w] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"data", w)
        e = index_valid(s, w, db_key, D, DB_N)
        v = req(s, D, DB_INSTRUMENT, b"instrument_name", w)
        if v < 0 or lookup(s, v, b"instrument_name") < 0:
            return -1
        v = req(s, D, DB_TIMESTAMP, b"timestamp", w)
        if v < 0 or get_ms(s, v, b"timestamp", &ts) < 0:
            return -1
        v = req(s, D, DB_TRADE_SEQ, b"trade_seq", w)
        if v < 0 or get_u64(s, v, b"trade_seq", &seq) < 0:
            return -1
        v = req(s, D, DB_TRADE_ID, b"trade_id", w)
        if v < 0 or get_str(s, v, b"trade_id", &a, &b) < 0:
            return -1
        tid = trade_id(s.p + a, b - a)
        v = req(s, D, DB_DIRECTION, b"direction", w)
        if v < 0 or get_str(s, v, b"direction", &a, &b) < 0:
            return -1
        if raw_eq(s.p + a, b - a, b"buy", 3):
            side = SIDE_BID
        elif raw_eq(s.p + a, b - a, b"sell", 4):
            side = SIDE_ASK
        else:
            return e_codec(s, ERR_CODEC, b"invalid direction", b"direction", v)
        v = req(s, D, DB_PRICE, b"price", w)
        if v < 0:
            return -1
        r1 = get_px_num(s, v, b"price", 0, 0, &px)
        if r1 < 0:
            return -1
        v = req(s, D, DB_AMOUNT, b"amount", w)
        if v < 0:
            return -1
        r2 = get_sz_num(s, v, b"amount", 0, &sz)
        if r2 < 0:
            return -1
        if r1 == 0 and r2 == 0:
            if emit_trade(s, ts, px, sz, tid, seq, side, 0) < 0:
                return -1
        if first:
            s.first_seq = seq
            first = 0
        s.last_seq = seq
        w = arr_next(s, e, &endp)
    return 0


cdef int db_channel(const uint8_t* t, Py_ssize_t n) noexcept nogil:
    if n > 5 and memcmp(t, b"book.", 5) == 0:
        return C_BOOK
    if n > 7 and memcmp(t, b"ticker.", 7) == 0:
        return C_TICKER
    if n > 7 and memcmp(t, b"trades.", 7) == 0:
        return C_TRADES
    return 0


cdef int db_decode(CState* s) noexcept nogil:
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t sl[DB_N]
    cdef Py_ssize_t P[DB_N]
    cdef Py_ssize_t D[DB_N]
    cdef Py_ssize_t top, e, v, pv, a, b
    cdef uint64_t rid = 0
    cdef int c
    top = skip_ws(s, 0)
    if top >= s.n:
        return e_end(s)
    if p[top] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, top)
    e = index_params(s, top, sl, P, D)      # params and params.data indexed on the way
    if e < 0:
        return -1
    e = skip_ws(s, e)
    if e < s.n:
        return e_byte(s, e)
    if sl[DB_METHOD] < 0:
        # a JSON-RPC response to one of our requests: error, or result (subscribe: the list of
        # channels; set_heartbeat: "ok"; public/test: {"version": ..})
        if sl[DB_ID] >= 0 and is_digit(p[sl[DB_ID]]) and get_u64(s, sl[DB_ID], b"id", &rid) < 0:
            return -1
        s.first_seq = rid
        s.last_seq = rid
        if sl[DB_ERROR] >= 0:
            s.kind = K_ERROR
            return 0
        v = req(s, sl, DB_RESULT, b"result", top)
        if v < 0:
            return -1
        s.kind = K_SUBSCRIPTION if p[v] == 91 else K_PONG
        return 0
    v = sl[DB_METHOD]
    if get_str(s, v, b"method", &a, &b) < 0:
        return -1
    pv = req(s, sl, DB_PARAMS, b"params", top)
    if pv < 0:
        return -1
    if p[pv] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"params", pv)
    if raw_eq(p + a, b - a, b"heartbeat", 9):
        # public/set_heartbeat: params.type "heartbeat" or "test_request" (answer public/test)
        v = req(s, P, DB_TYPE, b"type", pv)
        if v < 0 or get_str(s, v, b"type", &a, &b) < 0:
            return -1
        if raw_eq(p + a, b - a, b"heartbeat", 9):
            s.kind = K_HEARTBEAT
        elif raw_eq(p + a, b - a, b"test_request", 12):
            s.kind = K_HEARTBEAT
            s.first_seq = 1                 # the venue asks for public/test
            s.last_seq = 1
        else:
            return e_codec(s, ERR_CODEC, b"unknown heartbeat type", b"type", v)
        return 0
    if not raw_eq(p + a, b - a, b"subscription", 12):
        return e_codec(s, ERR_CODEC, b"unknown method", b"method", v)
    v = req(s, P, DB_CHANNEL, b"channel", pv)
    if v < 0 or get_str(s, v, b"channel", &a, &b) < 0:
        return -1
    c = db_channel(p + a, b - a)
    if c == 0:
        return e_codec(s, ERR_CODEC, b"unknown channel", b"channel", v)
    e = req(s, P, DB_DATA, b"data", pv)
    if e < 0:
        return -1
    if c == C_TRADES:
        return db_trades(s, e)
    if p[e] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"data", e)
    if c == C_BOOK:
        return db_book(s, e, D)
    return db_ticker(s, e, D)


cdef class DeribitCodec(_Codec):
    """Deribit JSON-RPC websocket API v2 frames (Deribit API v2 docs, "Subscriptions").

    * ``book.{instrument}.{interval}`` (``raw`` or ``100ms``): ``type`` ``snapshot`` → CLEAR +
      one BOOK_DELTA per level (``FLAG_SNAPSHOT``), kind ``bookSnapshot``; ``change`` → one
      BOOK_DELTA per level, kind ``book``. Levels ``[action, price, amount]``: ``new`` → ADD,
      ``change`` → MODIFY, ``delete`` → CANCEL. ``ts_event`` = ``timestamp``; every record's
      sequence and ``last_seq`` = ``change_id``; ``first_seq`` = ``prev_change_id`` (a change)
      or ``change_id`` (a snapshot): the book sync checks ``prev_change_id`` == the previous
      ``change_id``.
    * ``ticker.{instrument}.{interval}`` → BBO + STATISTICS (see ``db_ticker``), kind ``ticker``.
    * ``trades.{instrument}.{interval}`` → TRADE per entry, kind ``trade``; ``first_seq``/
      ``last_seq`` = the first/last ``trade_seq``.
    * ``{"method":"heartbeat","params":{"type":"heartbeat"}}`` → kind ``heartbeat``;
      ``"type":"test_request"`` → kind ``heartbeat`` with ``first_seq`` 1 (the client must
      answer ``public/test``, "public/set_heartbeat").
    * A JSON-RPC response (no ``method``): ``error`` → kind ``error``; ``result`` an array (the
      subscribed channels) → kind ``subscription``; any other result (``"ok"``, ``{"version":..}``)
      → kind ``pong``. ``first_seq`` = the request ``id`` (0 when absent or not a number).
      Any other method or channel is a CodecError.

    Prices and amounts are JSON numbers, parsed exactly from their text (never through float):
    prices i64 at 1e-9, amounts at the instrument's size_precision (``add_symbol(name, iid,
    size_precision)``; options: contracts at ``min_trade_amount``'s decimals). A value that
    cannot be represented is rejected alone (``value_errors``)."""

    def __cinit__(self, *args, **kwargs):
        self.decoder = db_decode
        self.venue = "DERIBIT"
