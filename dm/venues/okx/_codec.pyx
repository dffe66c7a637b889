# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OKX websocket API v5 public frames -> dm records (the venue half of ``OkxCodec``; the shared
scanner is ``dm/_scan.pxd``, the base class ``dm._codec._Codec``).

Rules from the OKX API v5 docs (https://www.okx.com/docs-v5/en/), "WebSocket → Public Channel":
"Order book channel" (``books``, ``books-l2-tbt``, ``books50-l2-tbt``), "Trades channel",
"Tickers channel", "Mark price channel", "Open interest channel", "Funding rate channel";
"WebSocket → Overview" (subscribe/error events, ``ping``/``pong`` text). See the class docstring.
Order book frames are decoded in one pass when their members come as OKX sends them (see the
comment above ``ok_one_pass``); any other frame takes the general path (``ok_decode``).
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memmove

from dm._records cimport *
from dm._scan cimport *
from dm._codec cimport _Codec

# dm.records.StatType codes (DBN's, then dm's own >= 1001)
cdef enum:
    ST_OPEN_INTEREST = 9
    ST_MARK_PRICE = 1001
    ST_FUNDING_RATE = 1003
    STAT_NEW = 1                  # DBN StatUpdateAction::New

cdef enum:
    OK_ARG = 0
    OK_ACTION
    OK_DATA
    OK_EVENT
    OK_CHANNEL
    OK_INSTID
    OK_ASKS
    OK_BIDS
    OK_TS
    OK_CHECKSUM
    OK_SEQID
    OK_PREVSEQID
    OK_TRADEID
    OK_PX
    OK_SZ
    OK_SIDE
    OK_ASKPX
    OK_ASKSZ
    OK_BIDPX
    OK_BIDSZ
    OK_MARKPX
    OK_OI
    OK_FUNDINGRATE
    OK_FUNDINGTIME
    OK_N

cdef enum:
    C_BOOK = 1
    C_TRADES = 2
    C_TICKERS = 3
    C_MARK = 4
    C_OI = 5
    C_FUNDING = 6


cdef int ok_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if n == 2:
        if memcmp(k, b"ts", 2) == 0:
            return OK_TS
        if memcmp(k, b"px", 2) == 0:
            return OK_PX
        if memcmp(k, b"sz", 2) == 0:
            return OK_SZ
        if memcmp(k, b"oi", 2) == 0:
            return OK_OI
        return -1
    if n == 3:
        if memcmp(k, b"arg", 3) == 0:
            return OK_ARG
        return -1
    if n == 4:
        if memcmp(k, b"data", 4) == 0:
            return OK_DATA
        if memcmp(k, b"asks", 4) == 0:
            return OK_ASKS
        if memcmp(k, b"bids", 4) == 0:
            return OK_BIDS
        if memcmp(k, b"side", 4) == 0:
            return OK_SIDE
        return -1
    if n == 5:
        if memcmp(k, b"event", 5) == 0:
            return OK_EVENT
        if memcmp(k, b"seqId", 5) == 0:
            return OK_SEQID
        if memcmp(k, b"askPx", 5) == 0:
            return OK_ASKPX
        if memcmp(k, b"askSz", 5) == 0:
            return OK_ASKSZ
        if memcmp(k, b"bidPx", 5) == 0:
            return OK_BIDPX
        if memcmp(k, b"bidSz", 5) == 0:
            return OK_BIDSZ
        return -1
    if n == 6:
        if memcmp(k, b"action", 6) == 0:
            return OK_ACTION
        if memcmp(k, b"instId", 6) == 0:
            return OK_INSTID
        if memcmp(k, b"markPx", 6) == 0:
            return OK_MARKPX
        return -1
    if n == 7:
        if memcmp(k, b"channel", 7) == 0:
            return OK_CHANNEL
        if memcmp(k, b"tradeId", 7) == 0:
            return OK_TRADEID
        return -1
    if n == 8 and memcmp(k, b"checksum", 8) == 0:
        return OK_CHECKSUM
    if n == 9 and memcmp(k, b"prevSeqId", 9) == 0:
        return OK_PREVSEQID
    if n == 11:
        if memcmp(k, b"fundingRate", 11) == 0:
            return OK_FUNDINGRATE
        if memcmp(k, b"fundingTime", 11) == 0:
            return OK_FUNDINGTIME
        return -1
    return -1


# ---------------------------------------------------------------------------------------------
# field helpers

cdef inline bint is_empty_str(CState* s, Py_ssize_t v) noexcept nogil:
    """The value at v is the empty string "" (OKX's "no value")."""
    return v + 1 < s.n and s.p[v] == 34 and s.p[v + 1] == 34


cdef int ok_ms(CState* s, Py_ssize_t v, const char* field, uint64_t* out) noexcept nogil:
    """Milliseconds since the epoch as a string of digits ("1646003667620", OKX's form) or a
    JSON integer -> ns."""
    cdef Py_ssize_t a, b, i
    cdef uint64_t acc = 0
    cdef bint over = 0
    if s.p[v] != 34:
        return get_ms(s, v, field, out)
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    if a == b:
        return e_codec(s, ERR_CODEC, b"expected milliseconds", field, v)
    for i in range(a, b):
        if not is_digit(s.p[i]):
            return e_codec(s, ERR_CODEC, b"expected milliseconds", field, v)
        over |= dm_mul_u64(acc, 10, &acc)
        over |= dm_add_u64(acc, s.p[i] - 48, &acc)
    if over or dm_mul_u64(acc, 1000000, out):
        return e_codec(s, ERR_CODEC, b"timestamp out of range", field, v)
    return 0


cdef int get_i64(CState* s, Py_ssize_t v, const char* field, int64_t lo, int64_t hi, int64_t* out) noexcept nogil:
    """JSON integer (optional '-', no fraction or exponent) within [lo, hi]."""
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n, i = v
    cdef uint64_t acc = 0
    cdef bint neg = 0, over = 0
    if i < n and p[i] == 45:
        neg = 1
        i += 1
    while i < n and is_digit(p[i]):
        over |= dm_mul_u64(acc, 10, &acc)
        over |= dm_add_u64(acc, p[i] - 48, &acc)
        i += 1
    if i == v + neg or (i < n and (p[i] == 46 or p[i] == 101 or p[i] == 69)):
        return e_codec(s, ERR_CODEC, b"expected an integer", field, v)
    if over or acc > <uint64_t>0x7FFFFFFFFFFFFFFF:
        return e_codec(s, ERR_CODEC, b"integer out of range", field, v)
    out[0] = -<int64_t>acc if neg else <int64_t>acc
    if out[0] < lo or out[0] > hi:
        return e_codec(s, ERR_CODEC, b"integer out of range", field, v)
    return 0


cdef uint64_t trade_id(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """tradeId text -> an integer <= i64 max (storage keeps trade ids in BIGINT): its value when
    it is 1..19 decimal digits that fit (OKX sends decimal strings), else FNV-1a 64 of its raw
    bytes with the top bit cleared."""
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


cdef int ok_levels(CState* s, Py_ssize_t v, const char* field, uint8_t side, uint64_t ts, uint64_t seq,
                   uint8_t flags) noexcept nogil:
    """asks / bids: array of [price, size, liquidated orders ("0", deprecated), orders]
    (decimal strings; only price and size are used, at least those two required). Size "0"
    deletes the level. A level whose price or size cannot be represented is dropped alone."""
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
            return e_codec(s, ERR_CODEC, b"expected [price, size, ...]", field, w)
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


cdef Py_ssize_t one_item(CState* s, Py_ssize_t d, Py_ssize_t* D) noexcept nogil:
    """data: an array holding exactly one object (the book channels); index it into D."""
    cdef Py_ssize_t el[2]
    if s.p[d] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"data", d)
    if arr_collect(s, d, el, 2) != 1 or s.p[el[0]] != 123:
        return e_codec(s, ERR_CODEC, b"expected one object", b"data", d)
    index_obj(s, el[0], 0, ok_key, D, OK_N)
    return el[0]


# ---------------------------------------------------------------------------------------------
# channels

cdef int ok_book(CState* s, Py_ssize_t* sl, Py_ssize_t* A, Py_ssize_t argo) noexcept nogil:
    """Order book channel: action ("snapshot"|"update"), data [{asks, bids, ts, checksum,
    seqId?, prevSeqId?}] -> BOOK_DELTA per level (bids then asks; size 0 = CANCEL); a snapshot
    starts with CLEAR and flags every record FLAG_SNAPSHOT. ts_event = ts; sequence = seqId (0
    when absent). Outputs: checksum (CRC32 as u32, the signed 32-bit integer OKX sends masked
    to 32 bits), last_seq = seqId, first_seq = prevSeqId + 1 (0 when absent or -1: a
    snapshot's). Fields checked in this order: arg.instId, action, data, ts, checksum,
    seqId, prevSeqId, bids, asks."""
    cdef Py_ssize_t v, d, a, b, vb, va
    cdef Py_ssize_t D[OK_N]
    cdef uint64_t ts
    cdef int64_t cs = 0, seq = 0, prev = -1
    cdef bint snap
    cdef uint8_t flags = 0
    v = req(s, A, OK_INSTID, b"instId", argo)
    if v < 0 or lookup(s, v, b"instId") < 0:
        return -1
    v = req(s, sl, OK_ACTION, b"action", 0)
    if v < 0 or get_str(s, v, b"action", &a, &b) < 0:
        return -1
    if raw_eq(s.p + a, b - a, b"snapshot", 8):
        snap = 1
    elif raw_eq(s.p + a, b - a, b"update", 6):
        snap = 0
    else:
        return e_codec(s, ERR_CODEC, b"unknown action", b"action", v)
    d = req(s, sl, OK_DATA, b"data", 0)
    if d < 0:
        return -1
    d = one_item(s, d, D)
    if d < 0:
        return -1
    v = req(s, D, OK_TS, b"ts", d)
    if v < 0 or ok_ms(s, v, b"ts", &ts) < 0:
        return -1
    if D[OK_CHECKSUM] >= 0:
        if get_i64(s, D[OK_CHECKSUM], b"checksum", -2147483648, 2147483647, &cs) < 0:
            return -1
    if D[OK_SEQID] >= 0 and get_i64(s, D[OK_SEQID], b"seqId", 0, 0x7FFFFFFFFFFFFFFF, &seq) < 0:
        return -1
    if D[OK_PREVSEQID] >= 0 and get_i64(s, D[OK_PREVSEQID], b"prevSeqId", -1, 0x7FFFFFFFFFFFFFFE, &prev) < 0:
        return -1
    vb = req(s, D, OK_BIDS, b"bids", d)
    if vb < 0:
        return -1
    va = req(s, D, OK_ASKS, b"asks", d)
    if va < 0:
        return -1
    if snap:
        s.kind = K_BOOKSNAPSHOT
        flags = FLAG_SNAPSHOT
        if emit_clear(s, ts, <uint64_t>seq, flags) < 0:
            return -1
    else:
        s.kind = K_BOOK
    if ok_levels(s, vb, b"bids", SIDE_BID, ts, <uint64_t>seq, flags) < 0:
        return -1
    if ok_levels(s, va, b"asks", SIDE_ASK, ts, <uint64_t>seq, flags) < 0:
        return -1
    set_last(s)
    if D[OK_CHECKSUM] >= 0:
        s.checksum = <int64_t>(<uint32_t>cs)
    s.last_seq = <uint64_t>seq
    s.first_seq = <uint64_t>(prev + 1)
    return 0


# ---------------------------------------------------------------------------------------------
# Order book frames in one pass.
#
# The general path (ok_decode -> ok_book) validates the whole frame while indexing its top object,
# indexes the data object (validating every value again, asks and bids included), then walks each
# level array collecting its elements and skips the level once more: every byte of the levels is
# scanned three or four times. OKX API v5 docs, "WebSocket → Public Channel → Order book channel",
# push data: {"arg": {"channel", "instId"}, "action": "snapshot"|"update", "data": [{"asks",
# "bids", "ts", "checksum", "prevSeqId", "seqId"}]}, each level [price, size, "0" (deprecated),
# orders] of strings. OKX sends "arg" and "action" before "data", and in the data object asks,
# bids, ts, checksum, prevSeqId, seqId in that order. The one-pass decoder reads the data object's
# members once, in whatever order they come, each level in one scan (price and size parsed, the
# other elements validated with scalar scanning), writing records with ts_event and sequence 0 that
# are patched once ts and seqId have been read, and moving the bids' block before the asks' when the
# asks came first (with their rejected values). It gives exactly the general path's result or hands
# the frame to it: -1 for any other shape (data before arg or action, a member repeated where "the
# last one wins" would apply, an unexpected type, an "event" member) and for any error (whose
# report, offset included, is the general path's). Every byte it reads or skips is validated.

cdef bint _one_pass = 1           # tests turn it off (_set_one_pass) to compare with the general path
cdef uint64_t _one_pass_frames = 0  # frames the one-pass decoder decoded (tests: _one_pass_count)


def _set_one_pass(bint on):
    """Test hook: whether book frames may take the one-pass decoder (default on). Returns the
    previous setting."""
    global _one_pass
    cdef bint was = _one_pass
    _one_pass = on
    return bool(was)


def _one_pass_count():
    """Test hook: how many frames the one-pass decoder has decoded in this process."""
    return _one_pass_frames


cdef int ok_levels_one_pass(CState* s, Py_ssize_t v, const char* field, uint8_t side, uint8_t flags,
                            Py_ssize_t* end) noexcept nogil:
    """``asks`` / ``bids`` at ``v`` (an array inside the data object: 3 containers around) in one
    scan, as ok_levels decodes it, ts_event and sequence left 0. ``end``: the index after its
    ``]``. 0, or -1 for the general path."""
    cdef Py_ssize_t w, x, e = 0, endp = 0, endl = 0
    cdef int64_t px = 0
    cdef uint64_t sz = 0
    cdef int r1, r2
    w = arr_first(s, v, 3, &endp)
    while w > 0:
        if s.p[w] != 91:
            return -1
        x = arr_first(s, w, 4, &endl)
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
        while x > 0:                                        # liquidated orders, orders, anything more
            e = skip_member(s, x, 5)
            if e < 0:
                return -1
            x = arr_next(s, e, &endl)
        if x < 0:
            return -1
        if r1 == 0 and r2 == 0:
            if emit_level(s, 0, px, sz, 0, side, flags) < 0:
                return -1
        w = arr_next(s, endl, &endp)
    if w < 0:
        return -1
    end[0] = endp
    return 0


cdef int swap_blocks(CState* s, Py_ssize_t a, Py_ssize_t m, Py_ssize_t b) noexcept nogil:
    """Output bytes [a, m) [m, b) -> [m, b) [a, m). 0 or -1 (no memory)."""
    cdef char tmp[1024]
    cdef char* t = tmp
    cdef Py_ssize_t n = m - a
    if n == 0 or b == m:
        return 0
    if n > <Py_ssize_t>sizeof(tmp):
        t = <char*>malloc(n)
        if t == NULL:
            return -1
    memcpy(t, s.out + a, n)
    memmove(s.out + a, s.out + m, b - m)
    memcpy(s.out + a + (b - m), t, n)
    if t != tmp:
        free(t)
    return 0


cdef int ok_data_one_pass(CState* s, Py_ssize_t o, bint snap, Py_ssize_t* end) noexcept nogil:
    """The data object at ``o`` (2 containers around) of an order book frame: ok_book's records
    and results (above). ``end``: the index after its ``}``. 0, or -1 for the general path."""
    cdef Py_ssize_t ks = 0, ke = 0, m, e = 0, i
    cdef Py_ssize_t vts = -1, vcs = -1, vseq = -1, vprev = -1
    cdef Py_ssize_t start = s.out_len, b0 = -1, b1 = 0, a0 = -1, a1 = 0
    cdef int vb0 = 0, vb1 = 0, va0 = 0, va1 = 0, slot
    cdef bint asks_first = 0
    cdef uint8_t flags = FLAG_SNAPSHOT if snap else 0
    cdef uint64_t ts = 0
    cdef int64_t cs = 0, seq = 0, prev = -1
    cdef BookDeltaRecord* r
    cdef ValueErr tmp[MAX_VALUE_ERRS]
    if snap and emit_clear(s, 0, 0, flags) < 0:
        return -1
    m = obj_first(s, o, 2, &ks, &ke)
    while m > 0:
        if m >= s.n:
            return -1
        slot = ok_key(s.p + ks, ke - ks)
        if slot == OK_BIDS or slot == OK_ASKS:
            if s.p[m] != 91:
                return -1
            if slot == OK_BIDS:
                if b0 >= 0:
                    return -1
                b0 = s.out_len
                vb0 = s.verr_n
                if ok_levels_one_pass(s, m, b"bids", SIDE_BID, flags, &e) < 0:
                    return -1
                b1 = s.out_len
                vb1 = s.verr_n
            else:
                if a0 >= 0:
                    return -1
                asks_first = b0 < 0
                a0 = s.out_len
                va0 = s.verr_n
                if ok_levels_one_pass(s, m, b"asks", SIDE_ASK, flags, &e) < 0:
                    return -1
                a1 = s.out_len
                va1 = s.verr_n
        else:
            if ((slot == OK_TS and take_once(&vts, m) < 0) or (slot == OK_CHECKSUM and take_once(&vcs, m) < 0)
                    or (slot == OK_SEQID and take_once(&vseq, m) < 0)
                    or (slot == OK_PREVSEQID and take_once(&vprev, m) < 0)):
                return -1                                   # a repeated member: the general path
            e = skip_member(s, m, 3)
            if e < 0:
                return -1
        m = obj_next(s, e, &ks, &ke)
    if m < 0 or vts < 0 or b0 < 0 or a0 < 0:
        return -1
    # ok_book's fields, all validated above
    if ok_ms(s, vts, b"ts", &ts) < 0:
        return -1
    if vcs >= 0 and get_i64(s, vcs, b"checksum", -2147483648, 2147483647, &cs) < 0:
        return -1
    if vseq >= 0 and get_i64(s, vseq, b"seqId", 0, 0x7FFFFFFFFFFFFFFF, &seq) < 0:
        return -1
    if vprev >= 0 and get_i64(s, vprev, b"prevSeqId", -1, 0x7FFFFFFFFFFFFFFE, &prev) < 0:
        return -1
    if asks_first:                                          # asks came first: bids' block before
        if vb1 > vb0 and va1 > va0:
            if s.verr_n > MAX_VALUE_ERRS:                   # the first ones kept would differ
                return -1
            memcpy(tmp, &s.verr[va0], (va1 - va0) * sizeof(ValueErr))
            memmove(&s.verr[va0], &s.verr[vb0], (vb1 - vb0) * sizeof(ValueErr))
            memcpy(&s.verr[va0 + (vb1 - vb0)], tmp, (va1 - va0) * sizeof(ValueErr))
        if swap_blocks(s, a0, a1, b1) < 0:
            s.err = ERR_NOMEM
            return -1
    i = start
    while i < s.out_len:
        r = <BookDeltaRecord*>(s.out + i)
        r.hd.ts_event = ts
        r.sequence = <uint64_t>seq
        i += sizeof(BookDeltaRecord)
    if s.nrec > 0:
        s.last_rec = s.out_len - sizeof(BookDeltaRecord)
    s.kind = K_BOOKSNAPSHOT if snap else K_BOOK
    set_last(s)
    if vcs >= 0:
        s.checksum = <int64_t>(<uint32_t>cs)
    s.last_seq = <uint64_t>seq
    s.first_seq = <uint64_t>(prev + 1)
    end[0] = ks
    return 0


cdef Py_ssize_t ok_arg_one_pass(CState* s, Py_ssize_t w) noexcept nogil:
    """``arg`` at ``w`` (an object in the top one) of a book channel: looks its instId up and
    returns the index after its ``}``; -1 for the general path, as soon as ``channel`` is another
    one (OKX sends it first: a trades or tickers frame costs the one-pass decoder little)."""
    cdef Py_ssize_t ks = 0, ke = 0, m, e = 0, vch = -1, vid = -1
    cdef int slot
    m = obj_first(s, w, 1, &ks, &ke)
    while m > 0:
        if m >= s.n:
            return -1
        slot = ok_key(s.p + ks, ke - ks)
        if slot == OK_CHANNEL:
            if vch >= 0 or s.p[m] != 34:
                return -1
            e = scan_string(s, m)
            if e < 0 or ok_channel(s.p + m + 1, e - m - 2) != C_BOOK:
                return -1
            vch = m
        else:
            if slot == OK_INSTID:
                if vid >= 0:
                    return -1
                vid = m
            e = skip_member(s, m, 2)
            if e < 0:
                return -1
        m = obj_next(s, e, &ks, &ke)
    if m < 0 or vch < 0 or vid < 0 or lookup(s, vid, b"instId") < 0:
        return -1
    return ks


cdef int ok_one_pass(CState* s, Py_ssize_t top) noexcept nogil:
    """The frame at ``top`` (an object) in one pass (above) when it is an order book frame: 0
    when decoded so, -1 for the general path. ``arg`` and ``action`` must come before ``data``."""
    cdef Py_ssize_t ks = 0, ke = 0, w, e = 0, x, endp = 0
    cdef int slot
    cdef bint snap = 0, arg = 0, act = 0, done = 0
    w = obj_first(s, top, 0, &ks, &ke)
    while w > 0:
        if w >= s.n:
            return -1
        slot = ok_key(s.p + ks, ke - ks)
        if slot == OK_DATA:
            if done or not arg or not act or s.p[w] != 91:
                return -1
            x = arr_first(s, w, 1, &endp)
            if x <= 0 or s.p[x] != 123 or ok_data_one_pass(s, x, snap, &e) < 0:
                return -1
            if arr_next(s, e, &endp) != 0:                  # not exactly one object
                return -1
            e = endp
            done = 1
        elif slot == OK_ARG:
            if arg or done or s.p[w] != 123:
                return -1
            e = ok_arg_one_pass(s, w)                      # any other channel leaves at once
            if e < 0:
                return -1
            arg = 1
        elif slot == OK_ACTION:
            if act or done or s.p[w] != 34:
                return -1
            e = scan_string(s, w)
            if e < 0:
                return -1
            if raw_eq(s.p + w + 1, e - w - 2, b"snapshot", 8):
                snap = 1
            elif not raw_eq(s.p + w + 1, e - w - 2, b"update", 6):
                return -1
            act = 1
        elif slot == OK_EVENT:
            return -1
        else:
            e = skip_member(s, w, 1)
            if e < 0:
                return -1
        w = obj_next(s, e, &ks, &ke)
    if w < 0 or not done or skip_ws(s, ks) < s.n:
        return -1
    return 0


cdef int ok_trades(CState* s, Py_ssize_t d) noexcept nogil:
    """Trades channel: data [{instId, tradeId, px, sz, side, ts}] -> TRADE each (side = taker
    side: "buy" -> SIDE_BID; trade_id from tradeId, see trade_id(); sequence 0).
    first_seq/last_seq = the first/last trade_id. A trade whose price or size cannot be
    represented is dropped alone."""
    cdef Py_ssize_t w, e, v, a, b, endp = 0
    cdef Py_ssize_t D[OK_N]
    cdef uint64_t ts, sz, tid
    cdef int64_t px = 0
    cdef uint8_t side
    cdef bint first = 1
    cdef int r1, r2
    if s.p[d] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"data", d)
    w = arr_first(s, d, 0, &endp)
    while w > 0:
        if s.p[w] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"data", w)
        e = index_obj(s, w, 0, ok_key, D, OK_N)
        v = req(s, D, OK_INSTID, b"instId", w)
        if v < 0 or lookup(s, v, b"instId") < 0:
            return -1
        v = req(s, D, OK_TS, b"ts", w)
        if v < 0 or ok_ms(s, v, b"ts", &ts) < 0:
            return -1
        v = req(s, D, OK_SIDE, b"side", w)
        if v < 0 or get_str(s, v, b"side", &a, &b) < 0:
            return -1
        if raw_eq(s.p + a, b - a, b"buy", 3):
            side = SIDE_BID
        elif raw_eq(s.p + a, b - a, b"sell", 4):
            side = SIDE_ASK
        else:
            return e_codec(s, ERR_CODEC, b"invalid side", b"side", v)
        v = req(s, D, OK_TRADEID, b"tradeId", w)
        if v < 0 or get_str(s, v, b"tradeId", &a, &b) < 0:
            return -1
        tid = trade_id(s.p + a, b - a)
        v = req(s, D, OK_PX, b"px", w)
        if v < 0:
            return -1
        r1 = get_px_str(s, v, b"px", &px)
        if r1 < 0:
            return -1
        v = req(s, D, OK_SZ, b"sz", w)
        if v < 0:
            return -1
        r2 = get_sz_str(s, v, b"sz", &sz)
        if r2 < 0:
            return -1
        if r1 == 0 and r2 == 0:
            if emit_trade(s, ts, px, sz, tid, 0, side, 0) < 0:
                return -1
        if first:
            s.first_seq = tid
            first = 0
        s.last_seq = tid
        w = arr_next(s, e, &endp)
    return 0


cdef int opt_px(CState* s, Py_ssize_t v, const char* field, int64_t* out) noexcept nogil:
    """Optional price: 0 parsed, 1 rejected alone, 2 absent or "" (OKX's "no value"), -1."""
    if v < 0 or is_empty_str(s, v):
        return 2
    return get_px_str(s, v, field, out)


cdef int opt_sz(CState* s, Py_ssize_t v, const char* field, uint64_t* out) noexcept nogil:
    if v < 0 or is_empty_str(s, v):
        return 2
    return get_sz_str(s, v, field, out)


cdef int ok_tickers(CState* s, Py_ssize_t d) noexcept nogil:
    """Tickers channel: data [{instId, ts, bidPx, bidSz, askPx, askSz, ...}] -> one BBO each
    (ts_event = ts; sequence 0). A side whose price or size is absent or "" (an option with no
    bids) is empty (UNDEF_PRICE, size 0); a side with a value rejected alone is empty too."""
    cdef Py_ssize_t w, e, v, endp = 0
    cdef Py_ssize_t D[OK_N]
    cdef uint64_t ts, bsz = 0, asz = 0
    cdef int64_t bpx = 0, apx = 0
    cdef int rbp, rbs, rap, ras
    if s.p[d] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"data", d)
    w = arr_first(s, d, 0, &endp)
    while w > 0:
        if s.p[w] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"data", w)
        e = index_obj(s, w, 0, ok_key, D, OK_N)
        v = req(s, D, OK_INSTID, b"instId", w)
        if v < 0 or lookup(s, v, b"instId") < 0:
            return -1
        v = req(s, D, OK_TS, b"ts", w)
        if v < 0 or ok_ms(s, v, b"ts", &ts) < 0:
            return -1
        rbp = opt_px(s, D[OK_BIDPX], b"bidPx", &bpx)
        if rbp < 0:
            return -1
        rbs = opt_sz(s, D[OK_BIDSZ], b"bidSz", &bsz)
        if rbs < 0:
            return -1
        rap = opt_px(s, D[OK_ASKPX], b"askPx", &apx)
        if rap < 0:
            return -1
        ras = opt_sz(s, D[OK_ASKSZ], b"askSz", &asz)
        if ras < 0:
            return -1
        if rbp != 0 or rbs != 0:
            bpx = DM_UNDEF_PRICE
            bsz = 0
        if rap != 0 or ras != 0:
            apx = DM_UNDEF_PRICE
            asz = 0
        if emit_bbo(s, ts, bpx, bsz, apx, asz, 0, 0) < 0:
            return -1
        w = arr_next(s, e, &endp)
    return 0


cdef int ok_stats(CState* s, Py_ssize_t d, int ch) noexcept nogil:
    """Mark price channel: data [{instId, markPx, ts}] -> STATISTICS MARK_PRICE. Open interest
    channel: [{instId, oi, ts}] -> OPEN_INTEREST (quantity = oi, contracts, at the instrument's
    size_precision). Funding rate channel: [{instId, fundingRate, fundingTime, ts?}] ->
    FUNDING_RATE (the rate at 1e-9 in price, ts_ref = fundingTime; ts_event = ts, else
    fundingTime). A value "" is no statistic; a value rejected alone is dropped alone."""
    cdef Py_ssize_t w, e, v, endp = 0
    cdef Py_ssize_t D[OK_N]
    cdef uint64_t ts = 0, tref = 0, q = 0
    cdef int64_t px = 0
    cdef int r
    if s.p[d] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"data", d)
    w = arr_first(s, d, 0, &endp)
    while w > 0:
        if s.p[w] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"data", w)
        e = index_obj(s, w, 0, ok_key, D, OK_N)
        v = req(s, D, OK_INSTID, b"instId", w)
        if v < 0 or lookup(s, v, b"instId") < 0:
            return -1
        if ch == C_FUNDING:
            v = req(s, D, OK_FUNDINGTIME, b"fundingTime", w)
            if v < 0 or ok_ms(s, v, b"fundingTime", &tref) < 0:
                return -1
            ts = tref
            if D[OK_TS] >= 0 and ok_ms(s, D[OK_TS], b"ts", &ts) < 0:
                return -1
            v = req(s, D, OK_FUNDINGRATE, b"fundingRate", w)
            if v < 0:
                return -1
            r = opt_px(s, v, b"fundingRate", &px)
            if r < 0:
                return -1
            if r == 0 and emit_stat(s, ts, tref, px, 0x7FFFFFFFFFFFFFFF, 0, ST_FUNDING_RATE, STAT_NEW, 0) < 0:
                return -1
        else:
            v = req(s, D, OK_TS, b"ts", w)
            if v < 0 or ok_ms(s, v, b"ts", &ts) < 0:
                return -1
            if ch == C_MARK:
                v = req(s, D, OK_MARKPX, b"markPx", w)
                if v < 0:
                    return -1
                r = opt_px(s, v, b"markPx", &px)
                if r < 0:
                    return -1
                if r == 0 and emit_stat(s, ts, DM_UNDEF_TIMESTAMP, px, 0x7FFFFFFFFFFFFFFF, 0, ST_MARK_PRICE,
                                        STAT_NEW, 0) < 0:
                    return -1
            else:
                v = req(s, D, OK_OI, b"oi", w)
                if v < 0:
                    return -1
                r = opt_sz(s, v, b"oi", &q)
                if r < 0:
                    return -1
                if r == 0 and emit_stat(s, ts, DM_UNDEF_TIMESTAMP, DM_UNDEF_PRICE, <int64_t>q, 0,
                                        ST_OPEN_INTEREST, STAT_NEW, 0) < 0:
                    return -1
        w = arr_next(s, e, &endp)
    return 0


cdef int ok_channel(const uint8_t* t, Py_ssize_t n) noexcept nogil:
    if raw_eq(t, n, b"books-l2-tbt", 12) or raw_eq(t, n, b"books", 5) or raw_eq(t, n, b"books50-l2-tbt", 14):
        return C_BOOK
    if raw_eq(t, n, b"trades", 6):
        return C_TRADES
    if raw_eq(t, n, b"tickers", 7):
        return C_TICKERS
    if raw_eq(t, n, b"mark-price", 10):
        return C_MARK
    if raw_eq(t, n, b"open-interest", 13):
        return C_OI
    if raw_eq(t, n, b"funding-rate", 12):
        return C_FUNDING
    return 0


cdef inline bint other_channel(CState* s, Py_ssize_t top) noexcept nogil:
    """The frame starts as OKX writes a trades, tickers, ... frame (``{"arg":{"channel":"`` and
    not ``books``): not worth a one-pass attempt (speed only: any frame may take either path)."""
    return (top + 24 <= s.n and memcmp(s.p + top, b'{"arg":{"channel":"', 19) == 0
            and memcmp(s.p + top + 19, b"books", 5) != 0)


cdef int ok_decode(CState* s) noexcept nogil:
    global _one_pass_frames
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t sl[OK_N]
    cdef Py_ssize_t A[OK_N]
    cdef Py_ssize_t top, e, v, a, b, argo, d
    cdef int ch
    if raw_eq(p, s.n, b"pong", 4):          # "Overview": the answer to the text 'ping'
        s.kind = K_PONG
        return 0
    top = skip_ws(s, 0)
    if top >= s.n:
        return e_end(s)
    if p[top] == 123 and _one_pass and not other_channel(s, top):
        if ok_one_pass(s, top) == 0:
            _one_pass_frames += 1
            return 0
        begin_frame(s, s.p, s.n, s.ts_recv)                # the general path, from scratch
    if p[top] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, top)
    e = index_obj(s, top, 0, ok_key, sl, OK_N)
    if e < 0:
        return -1
    e = skip_ws(s, e)
    if e < s.n:
        return e_byte(s, e)
    if sl[OK_EVENT] >= 0:
        v = sl[OK_EVENT]
        if get_str(s, v, b"event", &a, &b) < 0:
            return -1
        if raw_eq(p + a, b - a, b"subscribe", 9) or raw_eq(p + a, b - a, b"unsubscribe", 11):
            s.kind = K_SUBSCRIPTION
        elif raw_eq(p + a, b - a, b"error", 5) or raw_eq(p + a, b - a, b"channel-conn-count-error", 24):
            s.kind = K_ERROR
        elif (raw_eq(p + a, b - a, b"notice", 6) or raw_eq(p + a, b - a, b"channel-conn-count", 18)
              or raw_eq(p + a, b - a, b"login", 5)):
            s.kind = K_INFO
        else:
            return e_codec(s, ERR_CODEC, b"unknown event", b"event", v)
        return 0
    argo = req(s, sl, OK_ARG, b"arg", top)
    if argo < 0:
        return -1
    if p[argo] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"arg", argo)
    index_obj(s, argo, 0, ok_key, A, OK_N)
    v = req(s, A, OK_CHANNEL, b"channel", argo)
    if v < 0 or get_str(s, v, b"channel", &a, &b) < 0:
        return -1
    ch = ok_channel(p + a, b - a)
    if ch == 0:
        return e_codec(s, ERR_CODEC, b"unknown channel", b"channel", v)
    if ch == C_BOOK:
        return ok_book(s, sl, A, argo)
    d = req(s, sl, OK_DATA, b"data", top)
    if d < 0:
        return -1
    if ch == C_TRADES:
        s.kind = K_TRADE
        return ok_trades(s, d)
    s.kind = K_TICKER
    if ch == C_TICKERS:
        return ok_tickers(s, d)
    return ok_stats(s, d, ch)


cdef class OkxCodec(_Codec):
    """OKX websocket API v5 public frames (one codec per connection; instIds are unique across
    instrument types, so one symbol table serves spot, swaps, futures and options).

    * Order book channel (``books-l2-tbt``, ``books50-l2-tbt``, ``books``): ``snapshot`` →
      CLEAR + one BOOK_DELTA per level (``FLAG_SNAPSHOT``), ``update`` → one BOOK_DELTA per
      level, size ``"0"`` = CANCEL; bids then asks. ``ts_event`` = ``ts``, sequence =
      ``seqId`` (0 when absent, as in 2022 frames). ``checksum``: the CRC32 the frame carries
      as u32 (-1 when none); ``last_seq`` = ``seqId``, ``first_seq`` = ``prevSeqId`` + 1 (0 for
      a snapshot's -1 or when absent). Kind ``bookSnapshot`` / ``book``.
    * Trades channel → TRADE per entry: side = taker ``side``, ``trade_id`` = ``tradeId``
      (decimal; FNV-1a 64 of the text when not), ``first_seq``/``last_seq`` = first/last
      trade id. Kind ``trade``.
    * Tickers channel → BBO (``bidPx``/``bidSz``/``askPx``/``askSz``; ``""`` = empty side).
      Mark price / Open interest / Funding rate channels → STATISTICS (MARK_PRICE,
      OPEN_INTEREST, FUNDING_RATE). Kind ``ticker``.
    * ``{"event":"subscribe"|"unsubscribe"}`` → kind ``subscription``; ``"event":"error"`` →
      ``error`` (so is ``channel-conn-count-error``); ``notice`` (e.g. the disconnect warning
      before maintenance), ``channel-conn-count``, ``login`` → ``info``; the text ``pong`` →
      ``pong``. Any other event or channel is a CodecError.

    Order book frames with ``arg`` and ``action`` before ``data`` (as OKX sends them; the data
    object's members in any order: OKX's is asks, bids, ts, checksum, prevSeqId, seqId) are
    decoded in one pass (``ok_one_pass``: each level scanned once); any other frame takes the
    general path, which gives the same result for them, errors included.

    Prices are decimal strings → i64 at 1e-9, sizes at the instrument's size_precision
    (``add_symbol(instId, iid, size_precision)``); a value that cannot be represented is
    rejected alone (``value_errors``): that level / trade / BBO side / statistic is dropped.
    """

    def __cinit__(self, *args, **kwargs):
        self.decoder = ok_decode
        self.venue = "OKX"
