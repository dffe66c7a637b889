# cython: language_level=3
"""Shared JSON scanning, decimal → fixed point, symbol table and record output for the venue
codecs (DESIGN.md §2, §6). Every venue codec (``dm/venues/<venue>/_codec.pyx``) does
``from dm._scan cimport *`` and subclasses ``dm._codec._Codec``.

Everything here is ``cdef inline`` (or static C in the verbatim block below), so each venue
module compiles its own copy and the C compiler can inline it into the venue's decode loop as
it did when all venues lived in one module. Nothing here touches Python objects; every function is ``noexcept nogil`` and reports errors as status codes in
``CState`` (``err``, ``err_off``, ``err_field``, ``err_reason``) that ``_Codec._raise`` turns
into exceptions at one edge.

Rules (shared with the pure-Python oracle ``dm/codec_ref.py``; see the ``dm._codec`` module
docstring): strict RFC 8259 JSON, bounded and non-recursive (nesting depth <= ``MAX_DEPTH``);
keys compared by raw bytes; decimals parsed exactly to 1e-9 fixed point (never through float);
``FixedPointError`` reasons "invalid decimal", "more than 9 fractional digits", "negative
value", "out of range", checked in that order.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset, memcmp
from libc.stdlib cimport malloc, realloc, free

from dm._records cimport *

cdef extern from *:
    """
    #ifndef DM_SCAN_INLINE_C
    #define DM_SCAN_INLINE_C
    #include <stdint.h>
    #include <string.h>
    static inline int dm_mul_u64(uint64_t a, uint64_t b, uint64_t *r) { return __builtin_mul_overflow(a, b, r); }
    static inline int dm_add_u64(uint64_t a, uint64_t b, uint64_t *r) { return __builtin_add_overflow(a, b, r); }
    /* Index of the first byte at or after i (< n) that is '"', '\\' or < 0x20, else n.
       Eight bytes at a time: the lowest flagged byte of each has-byte test is exact. */
    static inline Py_ssize_t dm_str_run(const uint8_t *p, Py_ssize_t i, Py_ssize_t n) {
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        while (i + 8 <= n) {
            uint64_t w, q, b, m;
            memcpy(&w, p + i, 8);
            q = w ^ (ones * 0x22);
            b = w ^ (ones * 0x5C);
            m = (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w)) & highs;
            if (m)
                return i + (__builtin_ctzll(m) >> 3);
            i += 8;
        }
        while (i < n && p[i] >= 0x20 && p[i] != 0x22 && p[i] != 0x5C)
            i++;
        return i;
    }
    /* Index of the first byte at or after i (< n) that is '"', '{', '}', '[' or ']', else n
       (skipping inside validated JSON). OR-ing 0x20 maps '[' and ']' (and only them) onto '{'
       and '}'; eight bytes at a time, the lowest flagged byte of each test is exact. */
    static inline Py_ssize_t dm_struct_run(const uint8_t *p, Py_ssize_t i, Py_ssize_t n) {
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        while (i + 8 <= n) {
            uint64_t w, t, q, o, c, m;
            memcpy(&w, p + i, 8);
            t = w | (ones * 0x20);
            q = w ^ (ones * 0x22);
            o = t ^ (ones * 0x7B);
            c = t ^ (ones * 0x7D);
            m = (((q - ones) & ~q) | ((o - ones) & ~o) | ((c - ones) & ~c)) & highs;
            if (m)
                return i + (__builtin_ctzll(m) >> 3);
            i += 8;
        }
        while (i < n && p[i] != 0x22 && (p[i] | 0x20) != 0x7B && (p[i] | 0x20) != 0x7D)
            i++;
        return i;
    }
    /* JSON whitespace (RFC 8259: space, tab, LF, CR) */
    static const uint8_t dm_is_ws[256] = {[0x09] = 1, [0x0A] = 1, [0x0D] = 1, [0x20] = 1};
    static const uint64_t dm_pow10[20] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
        1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL, 10000000000000ULL,
        100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
        1000000000000000000ULL, 10000000000000000000ULL};
    /* FixedPointError reasons (dm/codec_ref.py raises the same texts) */
    #define DM_R_INVALID "invalid decimal"
    #define DM_R_FRAC "more than 9 fractional digits"
    #define DM_R_FRAC_SIZE "more fractional digits than the instrument's size_precision"
    #define DM_R_NEG "negative value"
    #define DM_R_RANGE "out of range"
    #endif
    """
    bint dm_mul_u64(uint64_t a, uint64_t b, uint64_t* r) noexcept nogil
    bint dm_add_u64(uint64_t a, uint64_t b, uint64_t* r) noexcept nogil
    Py_ssize_t dm_str_run(const uint8_t* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil
    Py_ssize_t dm_struct_run(const uint8_t* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil
    const uint8_t dm_is_ws[256]
    const uint64_t dm_pow10[20]
    const char* R_INVALID "DM_R_INVALID"
    const char* R_FRAC "DM_R_FRAC"
    const char* R_FRAC_SIZE "DM_R_FRAC_SIZE"
    const char* R_NEG "DM_R_NEG"
    const char* R_RANGE "DM_R_RANGE"


cdef enum:
    SYM_MAX = 58          # longest venue symbol (bytes) the symbol table stores
    MAX_VALUE_ERRS = 16   # value errors kept per decode (CState.verr); more are only counted
    N_KINDS = 32          # size of CState.counts: kind codes are < N_KINDS
    MAX_DEPTH = 32
    INIT_CAP = 4096

cdef enum:
    ERR_NONE = 0
    ERR_JSON = 1
    ERR_CODEC = 2
    ERR_FIXED = 3
    ERR_UNKNOWN = 4
    ERR_NOMEM = 5

# Frame kinds (``last_kind``): one vocabulary for every venue, names in dm._codec.KIND_NAMES
# (and dm.codec_ref.KIND_NAMES; a test checks all three agree). A venue whose frames need a
# name not listed here adds it at the end, in all three places.
cdef enum:
    K_NONE = 0
    K_AGGTRADE = 1
    K_TRADE = 2
    K_BOOKTICKER = 3
    K_DEPTHUPDATE = 4
    K_DEPTHSNAPSHOT = 5
    K_KLINE = 6
    K_HEARTBEAT = 7
    K_STATUS = 8
    K_SUBSCRIPTION = 9
    K_TICKER = 10
    K_SPREAD = 11
    K_BOOK = 12
    K_BOOKSNAPSHOT = 13
    K_TRADESNAPSHOT = 14
    K_TICKERLITE = 15
    K_INFO = 16
    K_PONG = 17
    K_OHLC = 18
    K_ERROR = 19
    # 20-27: kept for the other venue kinds being added
    K_LIQUIDATION = 28    # Binance futures forceOrder


cdef struct SymEntry:     # 64 B open-addressing slot; klen == 0 means empty
    uint32_t id
    uint8_t klen
    uint8_t size_precision  # the instrument's size scale (dm/_records.pxd)
    char key[SYM_MAX]


cdef struct ValueErr:     # one value rejected alone (the rest of the frame was decoded)
    const char* field
    const char* reason
    Py_ssize_t off        # byte offset of the value in the frame
    uint32_t instrument_id


cdef struct CState:
    # the frame being decoded (valid only during one decode call)
    const uint8_t* p
    Py_ssize_t n
    uint64_t ts_recv
    uint16_t publisher_id
    # output: concatenated records of the last decode
    char* out
    Py_ssize_t out_len
    Py_ssize_t out_cap
    int nrec
    Py_ssize_t last_rec           # byte offset of the last record written
    int exports                   # live buffer exports of `out` (memoryviews)
    char** retired                # old output buffers kept alive while exported
    int n_retired
    int cap_retired
    # symbol table: venue symbol (ASCII case-insensitive) -> instrument_id
    SymEntry* sym
    Py_ssize_t sym_cap
    Py_ssize_t sym_count
    # results of the last decode
    int kind
    uint32_t instrument_id
    uint8_t size_precision        # of instrument_id (set by lookup; 9 until one is looked up)
    uint64_t first_seq
    uint64_t last_seq
    int64_t checksum
    # the frame's number in its connection's message sequence, for venues that number every
    # message of a connection (dm._feed: "Message sequence"); -1 when the frame carries none.
    # Kept after a decode error when it was read before the error: the frame still arrived
    int64_t msg_seq
    uint64_t counts[N_KINDS]
    # error of the last decode (0 = none); turned into an exception at one edge (_raise)
    int err
    Py_ssize_t err_off
    const char* err_field
    const char* err_reason
    Py_ssize_t sym_off
    Py_ssize_t sym_len
    # values rejected alone in the last decode (out of range, too precise, negative size): the
    # frame, the book and the other values go on; the provider dead-letters each one
    int verr_n                    # how many (only the first MAX_VALUE_ERRS are kept in verr)
    ValueErr verr[MAX_VALUE_ERRS]


# ---------------------------------------------------------------------------------------------
# errors (status codes; _Codec._raise turns them into exceptions)

cdef inline Py_ssize_t e_end(CState* s) noexcept nogil:
    s.err = ERR_JSON
    s.err_off = s.n
    s.err_reason = NULL
    s.err_field = NULL
    return -1


cdef inline Py_ssize_t e_byte(CState* s, Py_ssize_t i) noexcept nogil:
    if i >= s.n:
        return e_end(s)
    s.err = ERR_JSON
    s.err_off = i
    s.err_reason = NULL
    s.err_field = NULL
    return -1


cdef inline Py_ssize_t e_depth(CState* s, Py_ssize_t i) noexcept nogil:
    s.err = ERR_JSON
    s.err_off = i
    s.err_reason = b"invalid JSON: nesting too deep"
    s.err_field = NULL
    return -1


cdef inline int e_codec(CState* s, int kind, const char* reason, const char* field, Py_ssize_t off) noexcept nogil:
    s.err = kind
    s.err_off = off
    s.err_reason = reason
    s.err_field = field
    return -1


cdef inline void begin_frame(CState* s, const uint8_t* p, Py_ssize_t n, uint64_t ts_recv) noexcept nogil:
    """Reset the per-frame state before decoding ``n`` bytes at ``p`` received at ``ts_recv``."""
    s.p = p
    s.n = n
    s.ts_recv = ts_recv
    s.out_len = 0
    s.nrec = 0
    s.kind = K_NONE
    s.instrument_id = 0
    s.size_precision = 9
    s.first_seq = 0
    s.last_seq = 0
    s.checksum = -1
    s.msg_seq = -1
    s.err = ERR_NONE
    s.verr_n = 0


cdef inline int value_reject(CState* s, const char* field, const char* reason, Py_ssize_t off) noexcept nogil:
    """Record a value that cannot be represented (out of range, more digits than its scale, a
    negative size) and return 1: the caller skips that value alone (a trade, a book level, one
    side of a BBO) and decodes the rest of the frame."""
    cdef ValueErr* e
    if s.verr_n < MAX_VALUE_ERRS:
        e = &s.verr[s.verr_n]
        e.field = field
        e.reason = reason
        e.off = off
        e.instrument_id = s.instrument_id
    s.verr_n += 1
    return 1


# ---------------------------------------------------------------------------------------------
# bounded JSON scanning (validating; never recursive; never reads past s.n)

cdef inline bint is_digit(uint8_t c) noexcept nogil:
    return c >= 48 and c <= 57


cdef inline bint is_hex(uint8_t c) noexcept nogil:
    return (c >= 48 and c <= 57) or (c >= 65 and c <= 70) or (c >= 97 and c <= 102)


cdef inline Py_ssize_t skip_ws(CState* s, Py_ssize_t i) noexcept nogil:
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n
    while i < n and dm_is_ws[p[i]]:
        i += 1
    return i


cdef inline Py_ssize_t scan_string(CState* s, Py_ssize_t i) noexcept nogil:
    """i at the opening quote; returns the index after the closing quote, -1 on error."""
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n
    cdef uint8_t c
    cdef int k
    i += 1
    while True:
        i = dm_str_run(p, i, n)
        if i >= n:
            return e_end(s)
        c = p[i]
        if c == 34:
            return i + 1
        if c != 92:
            return e_byte(s, i)          # raw control character
        i += 1
        if i >= n:
            return e_end(s)
        c = p[i]
        if c == 117:                     # \uXXXX
            for k in range(4):
                i += 1
                if i >= n:
                    return e_end(s)
                if not is_hex(p[i]):
                    return e_byte(s, i)
            i += 1
        elif c == 34 or c == 92 or c == 47 or c == 98 or c == 102 or c == 110 or c == 114 or c == 116:
            i += 1
        else:
            return e_byte(s, i)


cdef inline Py_ssize_t scan_number(CState* s, Py_ssize_t i) noexcept nogil:
    """i at '-' or a digit (i < n); returns the index after the number token."""
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n
    if p[i] == 45:
        i += 1
        if i >= n:
            return e_end(s)
    if p[i] == 48:
        i += 1
    elif p[i] >= 49 and p[i] <= 57:
        i += 1
        while i < n and is_digit(p[i]):
            i += 1
    else:
        return e_byte(s, i)
    if i < n and p[i] == 46:
        i += 1
        if i >= n:
            return e_end(s)
        if not is_digit(p[i]):
            return e_byte(s, i)
        while i < n and is_digit(p[i]):
            i += 1
    if i < n and (p[i] == 101 or p[i] == 69):
        i += 1
        if i >= n:
            return e_end(s)
        if p[i] == 43 or p[i] == 45:
            i += 1
            if i >= n:
                return e_end(s)
        if not is_digit(p[i]):
            return e_byte(s, i)
        while i < n and is_digit(p[i]):
            i += 1
    return i


cdef inline Py_ssize_t scan_lit(CState* s, Py_ssize_t i, const char* lit, int ln) noexcept nogil:
    cdef int k
    for k in range(ln):
        if i + k >= s.n:
            return e_end(s)
        if s.p[i + k] != <uint8_t>lit[k]:
            return e_byte(s, i + k)
    return i + ln


cdef inline Py_ssize_t key_colon(CState* s, Py_ssize_t i) noexcept nogil:
    """i at a member's key; returns the index of its value (after ':' and whitespace)."""
    if i >= s.n:
        return e_end(s)
    if s.p[i] != 34:
        return e_byte(s, i)
    i = scan_string(s, i)
    if i < 0:
        return -1
    i = skip_ws(s, i)
    if i >= s.n:
        return e_end(s)
    if s.p[i] != 58:
        return e_byte(s, i)
    return skip_ws(s, i + 1)


cdef inline Py_ssize_t skip_value(CState* s, Py_ssize_t i, int depth) noexcept nogil:
    """Validate and skip one JSON value starting at i; ``depth`` = number of enclosing
    containers. Iterative: a 64-bit stack says whether each open container is an object."""
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n
    cdef uint64_t is_obj = 0
    cdef int d = 0
    cdef uint8_t c
    while True:
        if i >= n:
            return e_end(s)
        c = p[i]
        if c == 123 or c == 91:
            if depth + d >= MAX_DEPTH:
                return e_depth(s, i)
            if c == 123:
                is_obj |= (<uint64_t>1) << d
            else:
                is_obj &= ~((<uint64_t>1) << d)
            d += 1
            i = skip_ws(s, i + 1)
            if i >= n:
                return e_end(s)
            if c == 123:
                if p[i] != 125:
                    i = key_colon(s, i)
                    if i < 0:
                        return -1
                    continue
            elif p[i] != 93:
                continue
            i += 1
            d -= 1
        elif c == 34:
            i = scan_string(s, i)
        elif c == 45 or is_digit(c):
            i = scan_number(s, i)
        elif c == 116:
            i = scan_lit(s, i, b"true", 4)
        elif c == 102:
            i = scan_lit(s, i, b"false", 5)
        elif c == 110:
            i = scan_lit(s, i, b"null", 4)
        else:
            return e_byte(s, i)
        if i < 0:
            return -1
        # after a value: close finished containers, or step to the next element
        while True:
            if d == 0:
                return i
            i = skip_ws(s, i)
            if i >= n:
                return e_end(s)
            c = p[i]
            if c == 44:
                i = skip_ws(s, i + 1)
                if (is_obj >> (d - 1)) & 1:
                    i = key_colon(s, i)
                    if i < 0:
                        return -1
                break
            if (is_obj >> (d - 1)) & 1:
                if c != 125:
                    return e_byte(s, i)
            elif c != 93:
                return e_byte(s, i)
            i += 1
            d -= 1


cdef inline Py_ssize_t validate(CState* s) noexcept nogil:
    """Validate the whole frame; returns the offset of the top-level value or -1."""
    cdef Py_ssize_t top = skip_ws(s, 0)
    cdef Py_ssize_t e = skip_value(s, top, 0)
    if e < 0:
        return -1
    e = skip_ws(s, e)
    if e < s.n:
        return e_byte(s, e)
    return top


cdef inline Py_ssize_t member(CState* s, Py_ssize_t i, Py_ssize_t* ks, Py_ssize_t* ke) noexcept nogil:
    if i >= s.n:
        return e_end(s)
    if s.p[i] != 34:
        return e_byte(s, i)
    ks[0] = i + 1
    i = scan_string(s, i)
    if i < 0:
        return -1
    ke[0] = i - 1
    i = skip_ws(s, i)
    if i >= s.n:
        return e_end(s)
    if s.p[i] != 58:
        return e_byte(s, i)
    return skip_ws(s, i + 1)


cdef inline Py_ssize_t obj_first(CState* s, Py_ssize_t i, int depth, Py_ssize_t* ks, Py_ssize_t* ke) noexcept nogil:
    """i at '{'. Returns the first member's value offset (key in [ks, ke)), 0 when the object
    is empty (then ks = index after '}'), -1 on error."""
    if depth >= MAX_DEPTH:
        return e_depth(s, i)
    i = skip_ws(s, i + 1)
    if i >= s.n:
        return e_end(s)
    if s.p[i] == 125:
        ks[0] = i + 1
        return 0
    return member(s, i, ks, ke)


cdef inline Py_ssize_t obj_next(CState* s, Py_ssize_t i, Py_ssize_t* ks, Py_ssize_t* ke) noexcept nogil:
    """i after the previous member's value; like obj_first."""
    i = skip_ws(s, i)
    if i >= s.n:
        return e_end(s)
    if s.p[i] == 44:
        return member(s, skip_ws(s, i + 1), ks, ke)
    if s.p[i] == 125:
        ks[0] = i + 1
        return 0
    return e_byte(s, i)


cdef inline Py_ssize_t arr_first(CState* s, Py_ssize_t i, int depth, Py_ssize_t* endp) noexcept nogil:
    """i at '['. Returns the first element's offset, 0 when empty (endp = after ']'), -1."""
    if depth >= MAX_DEPTH:
        return e_depth(s, i)
    i = skip_ws(s, i + 1)
    if i >= s.n:
        return e_end(s)
    if s.p[i] == 93:
        endp[0] = i + 1
        return 0
    return i


cdef inline Py_ssize_t arr_next(CState* s, Py_ssize_t i, Py_ssize_t* endp) noexcept nogil:
    i = skip_ws(s, i)
    if i >= s.n:
        return e_end(s)
    if s.p[i] == 44:
        i = skip_ws(s, i + 1)
        if i >= s.n:
            return e_end(s)
        return i
    if s.p[i] == 93:
        endp[0] = i + 1
        return 0
    return e_byte(s, i)


cdef inline Py_ssize_t skip_member(CState* s, Py_ssize_t i, int depth) noexcept nogil:
    """skip_value with the common scalars (string, number) handled inline."""
    cdef uint8_t c
    if i < s.n:
        c = s.p[i]
        if c == 34:
            return scan_string(s, i)
        if is_digit(c) or c == 45:
            return scan_number(s, i)
    return skip_value(s, i, depth)


ctypedef int (*keyfn_t)(const uint8_t* k, Py_ssize_t n) noexcept nogil


cdef inline Py_ssize_t index_obj(CState* s, Py_ssize_t v, int depth, keyfn_t kf, Py_ssize_t* slots, int nslots) noexcept nogil:
    """v at '{': validate the object and record the value offset of each known key (last
    one wins; -1 = absent). Returns the index after '}' or -1."""
    cdef Py_ssize_t ks = 0, ke = 0, w, e
    cdef int j, slot
    for j in range(nslots):
        slots[j] = -1
    w = obj_first(s, v, depth, &ks, &ke)
    while w > 0:
        slot = kf(s.p + ks, ke - ks)
        if slot >= 0:
            slots[slot] = w
        e = skip_member(s, w, depth + 1)
        if e < 0:
            return -1
        w = obj_next(s, e, &ks, &ke)
    if w < 0:
        return -1
    return ks


cdef inline Py_ssize_t index_obj_nested(CState* s, Py_ssize_t v, int depth, keyfn_t kf, Py_ssize_t* slots,
                                         int nslots, int nest, Py_ssize_t* inner) noexcept nogil:
    """``index_obj`` that also indexes the value of key slot ``nest``, when it is an object, into
    ``inner`` (same ``kf`` and ``nslots``) while it validates it, instead of skipping it and
    indexing it again later: the same validation, in the same order, with the same errors.
    ``inner`` holds the last such object's keys: callers use it only once they have checked that
    the last ``nest`` member (``slots[nest]``) is an object. Returns the index after '}' or -1.
    (Bybit's ``data``; Deribit's ``params.data`` one level down. Not recursive on purpose: an
    inline function calling itself is not inlined, which cost Bybit's tickers 3-5 %.)"""
    cdef Py_ssize_t ks = 0, ke = 0, w, e
    cdef int j, slot
    for j in range(nslots):
        slots[j] = -1
    w = obj_first(s, v, depth, &ks, &ke)
    while w > 0:
        slot = kf(s.p + ks, ke - ks)
        if slot >= 0:
            slots[slot] = w
        if slot != nest or w >= s.n or s.p[w] != 123:
            e = skip_member(s, w, depth + 1)
        else:
            e = index_obj(s, w, depth + 1, kf, inner, nslots)
        if e < 0:
            return -1
        w = obj_next(s, e, &ks, &ke)
    if w < 0:
        return -1
    return ks


cdef inline int arr_collect(CState* s, Py_ssize_t v, Py_ssize_t* offs, int maxn) noexcept nogil:
    """v at '[' of a validated array: store the first ``maxn`` element offsets, return the
    element count."""
    cdef Py_ssize_t endp = 0, w, e
    cdef int count = 0
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if count < maxn:
            offs[count] = w
        count += 1
        e = skip_value(s, w, 0)
        if e < 0:
            return -1
        w = arr_next(s, e, &endp)
    return count


# One-pass decoders (OKX, Bybit): a frame validated as it is read, members taken once.

cdef inline int take_once(Py_ssize_t* v, Py_ssize_t m) noexcept nogil:
    """One-pass decoding: a member's value offset ``m`` into ``v``: -1 when the member came before (``v`` set)."""
    if v[0] >= 0:
        return -1
    v[0] = m
    return 0


cdef inline int level_str(CState* s, Py_ssize_t x, Py_ssize_t* e) noexcept nogil:
    """One-pass decoding: the level element at ``x`` must be a string: ``e`` = the index after it. 0 or -1."""
    if s.p[x] != 34:
        return -1
    e[0] = scan_string(s, x)
    return 0 if e[0] > 0 else -1


cdef inline Py_ssize_t pair_collect(CState* s, Py_ssize_t w, Py_ssize_t* el) noexcept nogil:
    """w at '[' of a validated array: its first two element offsets into ``el[0:2]``; returns the
    index after its ']', or 0 when it has fewer than two elements (-1 on error). The venues'
    ``["price", "size", ...]`` level (two strings first) is read in one pass; any other shape is
    walked as ``arr_collect`` + ``skip_value`` do, with the same result."""
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t i, j, e
    i = skip_ws(s, w + 1)
    if i < s.n and p[i] == 34:
        e = scan_string(s, i)
        if e > 0:
            e = skip_ws(s, e)
            if e < s.n and p[e] == 44:
                j = skip_ws(s, e + 1)
                if j < s.n and p[j] == 34:
                    e = scan_string(s, j)
                    if e > 0:
                        e = skip_ws(s, e)
                        while e > 0 and e < s.n and p[e] == 44:     # more elements (OKX: 4)
                            e = skip_member(s, skip_ws(s, e + 1), 1)
                            if e > 0:
                                e = skip_ws(s, e)
                        if e > 0 and e < s.n and p[e] == 93:
                            el[0] = i
                            el[1] = j
                            return e + 1
    if arr_collect(s, w, el, 2) < 2:
        return 0
    return skip_value(s, w, 0)


# ---------------------------------------------------------------------------------------------
# fixed point: decimal text -> integer at 1e-9, exact


cdef inline const char* parse_fixed(const uint8_t* p, Py_ssize_t n, bint is_signed, int64_t* out) noexcept nogil:
    """Fast path for the common plain form ``-?d{1,10}(.d{0,9})?`` (all venues' decimal
    strings); anything else goes to parse_fixed_slow, which defines the semantics."""
    cdef Py_ssize_t i = 0, j
    cdef uint64_t acc = 0
    cdef bint neg = 0
    if n > 0 and p[0] == 45:
        neg = 1
        i = 1
    j = i
    while i < n and is_digit(p[i]):
        acc = acc * 10 + (p[i] - 48)
        i += 1
    if i == j or i - j > 10:
        return parse_fixed_slow(p, n, is_signed, out)
    if i < n:
        if p[i] != 46:
            return parse_fixed_slow(p, n, is_signed, out)
        i += 1
        j = i
        while i < n and is_digit(p[i]):
            acc = acc * 10 + (p[i] - 48)
            i += 1
        if i != n or i - j > 9:
            return parse_fixed_slow(p, n, is_signed, out)
        acc *= dm_pow10[9 - (i - j)]
    else:
        acc *= dm_pow10[9]
    # at most 19 digits: acc < 10**19 < 2**64, no overflow above
    if neg:
        if acc == 0:
            out[0] = 0
            return NULL
        if not is_signed:
            return R_NEG
        if acc > (<uint64_t>1) << 63:
            return R_RANGE
        out[0] = <int64_t>(0 - acc)
        return NULL
    if is_signed and acc > <uint64_t>0x7FFFFFFFFFFFFFFF:
        return R_RANGE
    out[0] = <int64_t>acc
    return NULL


cdef inline const char* parse_fixed_slow(const uint8_t* p, Py_ssize_t n, bint is_signed, int64_t* out) noexcept nogil:
    return parse_fixed_slow_dp(p, n, is_signed, 9, out)


cdef inline const char* parse_fixed_slow_dp(const uint8_t* p, Py_ssize_t n, bint is_signed, int dp,
                                            int64_t* out) noexcept nogil:
    """Parse ``-?digits[.digits][(e|E)[+-]digits]`` (at least one mantissa digit) to an integer
    at scale 10**-dp (dp 0..18). Returns NULL on success, else the reason: invalid decimal, more
    significant fractional digits than dp, negative value (sizes), out of range (i64 / u64),
    checked in that order."""
    cdef Py_ssize_t i = 0, a, b, c, d, nint, nd, j, jf = -1, jl = -1
    cdef bint neg = 0, eneg = 0
    cdef int64_t E = 0, H, L
    cdef uint64_t acc = 0
    cdef uint8_t dg
    if i < n and p[i] == 45:
        neg = 1
        i += 1
    a = i
    while i < n and is_digit(p[i]):
        i += 1
    b = i
    c = i
    d = i
    if i < n and p[i] == 46:
        i += 1
        c = i
        while i < n and is_digit(p[i]):
            i += 1
        d = i
    if b - a + d - c == 0:
        return R_INVALID
    if i < n and (p[i] == 101 or p[i] == 69):
        i += 1
        if i < n and (p[i] == 43 or p[i] == 45):
            eneg = p[i] == 45
            i += 1
        if i >= n or not is_digit(p[i]):
            return R_INVALID
        while i < n and is_digit(p[i]):
            if E < 1000000000:
                E = E * 10 + (p[i] - 48)
            i += 1
        if eneg:
            E = -E
    if i != n:
        return R_INVALID
    nint = b - a
    nd = nint + (d - c)
    for j in range(nd):
        dg = p[a + j] if j < nint else p[c + j - nint]
        if dg != 48:
            jf = j
            break
    if jf < 0:
        out[0] = 0
        return NULL
    j = nd - 1
    while j >= jf:
        dg = p[a + j] if j < nint else p[c + j - nint]
        if dg != 48:
            jl = j
            break
        j -= 1
    H = (nint - 1 - jf) + E
    L = (nint - 1 - jl) + E
    if L < -dp:
        return R_FRAC if dp == 9 else R_FRAC_SIZE
    if neg and not is_signed:
        return R_NEG
    if H + dp >= 20:
        return R_RANGE
    for j in range(jf, jl + 1):
        dg = p[a + j] if j < nint else p[c + j - nint]
        if dm_mul_u64(acc, 10, &acc) or dm_add_u64(acc, dg - 48, &acc):
            return R_RANGE
    for j in range(L + dp):
        if dm_mul_u64(acc, 10, &acc):
            return R_RANGE
    if is_signed:
        if neg:
            if acc > (<uint64_t>1) << 63:
                return R_RANGE
            out[0] = <int64_t>(0 - acc)
        else:
            if acc > ((<uint64_t>1) << 63) - 1:
                return R_RANGE
            out[0] = <int64_t>acc
    else:
        out[0] = <int64_t>acc
    return NULL


cdef inline const char* parse_size_dp(const uint8_t* p, Py_ssize_t n, int dp, int64_t* out) noexcept nogil:
    """A size: decimal text -> integer at 10**-dp (the instrument's size_precision), exact,
    non-negative and <= i64 max (storable). Fast path for ``d{1,}(.d{0,dp}0*)?`` with at most 18
    significant digits kept (venues pad to a fixed number of decimals: Binance "12.00000000" at
    size_precision 0); anything else (exponents, a sign, a non-zero digit past dp) goes to
    parse_fixed_slow_dp, which defines the semantics."""
    cdef Py_ssize_t i = 0, j, k
    cdef uint64_t acc = 0
    cdef const char* r
    while i < n and is_digit(p[i]):
        acc = acc * 10 + (p[i] - 48)
        i += 1
    if i == 0 or i + dp > 18:
        r = parse_fixed_slow_dp(p, n, 0, dp, out)
    elif i == n:
        out[0] = <int64_t>(acc * dm_pow10[dp])
        return NULL
    elif p[i] != 46:
        r = parse_fixed_slow_dp(p, n, 0, dp, out)
    else:
        i += 1
        j = i
        k = i + dp
        while i < n and i < k and is_digit(p[i]):
            acc = acc * 10 + (p[i] - 48)
            i += 1
        k = i - j                       # fractional digits kept (<= dp)
        while i < n and p[i] == 48:     # zeros past dp
            i += 1
        if i != n:
            r = parse_fixed_slow_dp(p, n, 0, dp, out)
        else:
            out[0] = <int64_t>(acc * dm_pow10[dp - k])  # < 10**18: fits
            return NULL
    if r == NULL and <uint64_t>out[0] > <uint64_t>0x7FFFFFFFFFFFFFFF:
        return R_RANGE
    return r


# ---------------------------------------------------------------------------------------------
# typed field access on validated JSON (offsets from index_obj / arr_collect)

cdef inline int get_str(CState* s, Py_ssize_t v, const char* field, Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    if s.p[v] != 34:
        return e_codec(s, ERR_CODEC, b"expected a string", field, v)
    a[0] = v + 1
    b[0] = scan_string(s, v) - 1
    return 0


cdef inline int get_u64(CState* s, Py_ssize_t v, const char* field, uint64_t* out) noexcept nogil:
    """JSON number that is a non-negative integer (no sign, fraction or exponent) <= 2**64-1."""
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n, i = v
    cdef uint64_t acc = 0
    cdef bint over = 0
    while i < n and is_digit(p[i]):
        over |= dm_mul_u64(acc, 10, &acc)
        over |= dm_add_u64(acc, p[i] - 48, &acc)
        i += 1
    if i == v or (i < n and (p[i] == 46 or p[i] == 101 or p[i] == 69)):
        return e_codec(s, ERR_CODEC, b"expected a non-negative integer", field, v)
    if over:
        return e_codec(s, ERR_CODEC, b"integer out of range", field, v)
    out[0] = acc
    return 0


cdef inline int get_ms(CState* s, Py_ssize_t v, const char* field, uint64_t* out) noexcept nogil:
    """Integer milliseconds since the epoch -> ns."""
    cdef uint64_t ms
    if get_u64(s, v, field, &ms) < 0:
        return -1
    if dm_mul_u64(ms, 1000000, out):
        return e_codec(s, ERR_CODEC, b"timestamp out of range", field, v)
    return 0


cdef inline int get_bool(CState* s, Py_ssize_t v, const char* field, bint* out) noexcept nogil:
    if s.p[v] == 116:
        out[0] = 1
    elif s.p[v] == 102:
        out[0] = 0
    else:
        return e_codec(s, ERR_CODEC, b"expected a boolean", field, v)
    return 0


cdef inline int get_fx_str(CState* s, Py_ssize_t v, const char* field, bint is_signed, int64_t* out) noexcept nogil:
    """Decimal string -> fixed point 1e-9."""
    cdef Py_ssize_t a, b
    cdef const char* r
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    r = parse_fixed(s.p + a, b - a, is_signed, out)
    if r != NULL:
        return e_codec(s, ERR_FIXED, r, field, v)
    return 0


cdef inline int get_fx_num(CState* s, Py_ssize_t v, const char* field, bint is_signed, bint allow_null,
                           int64_t null_value, int64_t* out) noexcept nogil:
    """JSON number (exact, exponents included) -> fixed point 1e-9; ``null`` -> null_value
    when allowed."""
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t e
    cdef const char* r
    if allow_null and p[v] == 110:
        out[0] = null_value
        return 0
    if not (p[v] == 45 or is_digit(p[v])):
        return e_codec(s, ERR_CODEC, b"expected a number", field, v)
    e = scan_number(s, v)
    r = parse_fixed(p + v, e - v, is_signed, out)
    if r != NULL:
        return e_codec(s, ERR_FIXED, r, field, v)
    return 0


cdef inline int get_ts_str(CState* s, Py_ssize_t v, const char* field, uint64_t* out) noexcept nogil:
    """Decimal seconds string ("1617666423.606671") -> ns, exact (FixedPointError otherwise)."""
    return get_fx_str(s, v, field, 0, <int64_t*>out)


# Prices and sizes of venue frames. Each returns 0 (parsed), 1 (the value cannot be represented:
# out of range, more digits than its scale, a negative size — recorded with value_reject; skip
# that value alone) or -1 (the frame is malformed: s.err is set). Callers must test ``r > 0``.

cdef inline int _fx_result(CState* s, const char* r, const char* field, Py_ssize_t v) noexcept nogil:
    if r == NULL:
        return 0
    if r == R_INVALID:
        return e_codec(s, ERR_FIXED, r, field, v)
    return value_reject(s, field, r, v)


cdef inline int get_px_str(CState* s, Py_ssize_t v, const char* field, int64_t* out) noexcept nogil:
    """Price as a decimal string -> i64 at 1e-9."""
    cdef Py_ssize_t a, b
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    return _fx_result(s, parse_fixed(s.p + a, b - a, 1, out), field, v)


cdef inline int get_px_num(CState* s, Py_ssize_t v, const char* field, bint allow_null, int64_t null_value,
                           int64_t* out) noexcept nogil:
    """Price as a JSON number (exact, exponents included) -> i64 at 1e-9; ``null`` ->
    null_value when allowed."""
    cdef const uint8_t* p = s.p
    if allow_null and p[v] == 110:
        out[0] = null_value
        return 0
    if not (p[v] == 45 or is_digit(p[v])):
        return e_codec(s, ERR_CODEC, b"expected a number", field, v)
    return _fx_result(s, parse_fixed(p + v, scan_number(s, v) - v, 1, out), field, v)


cdef inline int get_sz_str(CState* s, Py_ssize_t v, const char* field, uint64_t* out) noexcept nogil:
    """Size as a decimal string -> u64 at the instrument's size_precision (<= i64 max)."""
    cdef Py_ssize_t a, b
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    return _fx_result(s, parse_size_dp(s.p + a, b - a, s.size_precision, <int64_t*>out), field, v)


cdef inline int get_sz_num(CState* s, Py_ssize_t v, const char* field, bint allow_null, uint64_t* out) noexcept nogil:
    """Size as a JSON number -> u64 at the instrument's size_precision (<= i64 max); ``null``
    -> 0 when allowed."""
    cdef const uint8_t* p = s.p
    if allow_null and p[v] == 110:
        out[0] = 0
        return 0
    if not (p[v] == 45 or is_digit(p[v])):
        return e_codec(s, ERR_CODEC, b"expected a number", field, v)
    return _fx_result(s, parse_size_dp(p + v, scan_number(s, v) - v, s.size_precision, <int64_t*>out), field, v)


cdef inline Py_ssize_t req(CState* s, Py_ssize_t* slots, int slot, const char* field, Py_ssize_t obj) noexcept nogil:
    if slots[slot] < 0:
        return e_codec(s, ERR_CODEC, b"missing field", field, obj)
    return slots[slot]


cdef inline bint raw_eq(const uint8_t* p, Py_ssize_t n, const char* lit, Py_ssize_t ln) noexcept nogil:
    return n == ln and memcmp(p, lit, ln) == 0


# ---------------------------------------------------------------------------------------------
# symbol table (open addressing, ASCII case-insensitive)

cdef inline uint8_t upper(uint8_t c) noexcept nogil:
    return c - 32 if (c >= 97 and c <= 122) else c


cdef inline uint64_t sym_hash(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 1469598103934665603ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ upper(k[i])) * 1099511628211ULL
    return h


cdef inline bint sym_eq(SymEntry* e, const uint8_t* k, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if e.klen != n:
        return 0
    for i in range(n):
        if <uint8_t>e.key[i] != upper(k[i]):
            return 0
    return 1


cdef inline SymEntry* sym_find(CState* s, const uint8_t* k, Py_ssize_t n) noexcept nogil:
    """The entry of venue symbol k, NULL when unknown."""
    cdef uint64_t mask, idx
    cdef SymEntry* e
    if n <= 0 or n > SYM_MAX or s.sym_cap == 0:
        return NULL
    mask = s.sym_cap - 1
    idx = sym_hash(k, n) & mask
    while True:
        e = &s.sym[idx]
        if e.klen == 0:
            return NULL
        if sym_eq(e, k, n):
            return e
        idx = (idx + 1) & mask


cdef inline int sym_insert(SymEntry* tab, Py_ssize_t cap, const uint8_t* k, Py_ssize_t n, uint32_t iid,
                           uint8_t size_precision) noexcept nogil:
    """Returns 1 when a new key was added, 0 when an existing one was replaced."""
    cdef uint64_t mask = cap - 1
    cdef uint64_t idx = sym_hash(k, n) & mask
    cdef SymEntry* e
    cdef Py_ssize_t i
    while True:
        e = &tab[idx]
        if e.klen == 0:
            e.klen = <uint8_t>n
            for i in range(n):
                e.key[i] = <char>upper(k[i])
            e.id = iid
            e.size_precision = size_precision
            return 1
        if sym_eq(e, k, n):
            e.id = iid
            e.size_precision = size_precision
            return 0
        idx = (idx + 1) & mask


cdef inline int sym_put(CState* s, const uint8_t* k, Py_ssize_t n, uint32_t iid, uint8_t size_precision) noexcept nogil:
    cdef Py_ssize_t newcap, i
    cdef SymEntry* tab
    if (s.sym_count + 1) * 2 > s.sym_cap:
        newcap = s.sym_cap * 2 if s.sym_cap else 64
        tab = <SymEntry*>malloc(newcap * sizeof(SymEntry))
        if tab == NULL:
            return -1
        memset(tab, 0, newcap * sizeof(SymEntry))
        for i in range(s.sym_cap):
            if s.sym[i].klen:
                sym_insert(tab, newcap, <const uint8_t*>s.sym[i].key, s.sym[i].klen, s.sym[i].id,
                           s.sym[i].size_precision)
        free(s.sym)
        s.sym = tab
        s.sym_cap = newcap
    s.sym_count += sym_insert(s.sym, s.sym_cap, k, n, iid, size_precision)
    return 0


cdef inline int lookup(CState* s, Py_ssize_t v, const char* field) noexcept nogil:
    """String value at v names the instrument of the frame (sets s.instrument_id and
    s.size_precision)."""
    cdef Py_ssize_t a, b
    cdef SymEntry* e
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    e = sym_find(s, s.p + a, b - a)
    if e != NULL:
        s.instrument_id = e.id
        s.size_precision = e.size_precision
    else:
        s.err = ERR_UNKNOWN
        s.err_off = v
        s.err_field = field
        s.err_reason = NULL
        s.sym_off = a
        s.sym_len = b - a
        return -1
    return 0


# ---------------------------------------------------------------------------------------------
# output buffer and record writers

cdef inline int grow(CState* s, Py_ssize_t need) noexcept nogil:
    cdef Py_ssize_t cap = s.out_cap * 2
    cdef char* nb
    cdef char** rl
    if cap < s.out_len + need:
        cap = s.out_len + need
    if s.exports == 0:
        nb = <char*>realloc(s.out, cap)
        if nb == NULL:
            return -1
    else:
        # a memoryview still points at the old buffer: keep it alive until released
        nb = <char*>malloc(cap)
        if nb == NULL:
            return -1
        if s.n_retired == s.cap_retired:
            rl = <char**>realloc(s.retired, (s.cap_retired * 2 + 4) * sizeof(char*))
            if rl == NULL:
                free(nb)
                return -1
            s.retired = rl
            s.cap_retired = s.cap_retired * 2 + 4
        memcpy(nb, s.out, s.out_len)
        s.retired[s.n_retired] = s.out
        s.n_retired += 1
    s.out = nb
    s.out_cap = cap
    return 0


cdef inline char* reserve(CState* s, Py_ssize_t sz) noexcept nogil:
    cdef char* r
    if s.out_len + sz > s.out_cap:
        if grow(s, sz) < 0:
            s.err = ERR_NOMEM
            return NULL
    r = s.out + s.out_len
    s.last_rec = s.out_len
    s.out_len += sz
    s.nrec += 1
    return r


cdef inline int emit_trade(CState* s, uint64_t ts_event, int64_t px, uint64_t sz, uint64_t tid,
                           uint64_t seq, uint8_t side, uint8_t flags) noexcept nogil:
    cdef TradeRecord* r = <TradeRecord*>reserve(s, sizeof(TradeRecord))
    if r == NULL:
        return -1
    r.hd.length = sizeof(TradeRecord) // 4
    r.hd.rtype = RTYPE_TRADE
    r.hd.publisher_id = s.publisher_id
    r.hd.instrument_id = s.instrument_id
    r.hd.ts_event = ts_event
    r.ts_recv = s.ts_recv
    r.price = px
    r.size = sz
    r.trade_id = tid
    r.sequence = seq
    r.side = side
    r.flags = flags
    r.size_precision = s.size_precision
    memset(r._reserved, 0, 5)
    return 0


cdef inline int emit_bbo(CState* s, uint64_t ts_event, int64_t bid_px, uint64_t bid_sz, int64_t ask_px,
                         uint64_t ask_sz, uint64_t seq, uint8_t flags) noexcept nogil:
    cdef BboRecord* r = <BboRecord*>reserve(s, sizeof(BboRecord))
    if r == NULL:
        return -1
    r.hd.length = sizeof(BboRecord) // 4
    r.hd.rtype = RTYPE_BBO
    r.hd.publisher_id = s.publisher_id
    r.hd.instrument_id = s.instrument_id
    r.hd.ts_event = ts_event
    r.ts_recv = s.ts_recv
    r.bid_px = bid_px
    r.ask_px = ask_px
    r.bid_sz = bid_sz
    r.ask_sz = ask_sz
    r.sequence = seq
    r.bid_ct = 0
    r.ask_ct = 0
    r.flags = flags
    r.size_precision = s.size_precision
    memset(r._reserved, 0, 6)
    return 0


cdef inline int emit_delta(CState* s, uint64_t ts_event, int64_t px, uint64_t sz, uint64_t seq,
                           uint8_t side, uint8_t action, uint8_t flags) noexcept nogil:
    cdef BookDeltaRecord* r = <BookDeltaRecord*>reserve(s, sizeof(BookDeltaRecord))
    if r == NULL:
        return -1
    r.hd.length = sizeof(BookDeltaRecord) // 4
    r.hd.rtype = RTYPE_BOOK_DELTA
    r.hd.publisher_id = s.publisher_id
    r.hd.instrument_id = s.instrument_id
    r.hd.ts_event = ts_event
    r.ts_recv = s.ts_recv
    r.price = px
    r.size = sz
    r.sequence = seq
    r.side = side
    r.action = action
    r.flags = flags
    r.size_precision = s.size_precision
    memset(r._reserved, 0, 4)
    return 0


cdef inline int emit_stat(CState* s, uint64_t ts_event, uint64_t ts_ref, int64_t price, int64_t quantity,
                          uint32_t sequence, uint16_t stat_type, uint8_t update_action, uint8_t stat_flags) noexcept nogil:
    """One STATISTICS record (DBN v3 StatMsg layout, ``dm.records.StatType`` codes): ``price`` at
    1e-9 (DM_UNDEF_PRICE when the stat has none), ``quantity`` at the instrument's
    size_precision (INT64_MAX when none), ``ts_ref`` ns (DM_UNDEF_TIMESTAMP when none)."""
    cdef StatRecord* r = <StatRecord*>reserve(s, sizeof(StatRecord))
    if r == NULL:
        return -1
    r.hd.length = sizeof(StatRecord) // 4
    r.hd.rtype = RTYPE_STATISTICS
    r.hd.publisher_id = s.publisher_id
    r.hd.instrument_id = s.instrument_id
    r.hd.ts_event = ts_event
    r.ts_recv = s.ts_recv
    r.ts_ref = ts_ref
    r.price = price
    r.quantity = quantity
    r.sequence = sequence
    r.ts_in_delta = 0
    r.stat_type = stat_type
    r.channel_id = 0
    r.update_action = update_action
    r.stat_flags = stat_flags
    r.size_precision = s.size_precision
    memset(r._reserved, 0, 17)
    return 0


cdef inline int emit_level(CState* s, uint64_t ts_event, int64_t px, uint64_t sz, uint64_t seq,
                           uint8_t side, uint8_t flags) noexcept nogil:
    return emit_delta(s, ts_event, px, sz, seq, side, ACTION_ADD if sz != 0 else ACTION_CANCEL, flags)


cdef inline int emit_clear(CState* s, uint64_t ts_event, uint64_t seq, uint8_t flags) noexcept nogil:
    return emit_delta(s, ts_event, DM_UNDEF_PRICE, 0, seq, SIDE_NONE, ACTION_CLEAR, flags)


cdef inline void set_last(CState* s) noexcept nogil:
    """FLAG_LAST on the final record of the frame when it is a BOOK_DELTA."""
    cdef BookDeltaRecord* r
    if s.nrec > 0:
        r = <BookDeltaRecord*>(s.out + s.last_rec)
        if r.hd.rtype == RTYPE_BOOK_DELTA:
            r.flags |= FLAG_LAST

