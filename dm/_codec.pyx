# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Venue websocket frames -> dm records (DESIGN.md section 2), one call per frame.

``BinanceCodec``, ``KrakenCodec`` and ``KrakenFuturesCodec`` turn one websocket text frame
(``bytes``, ``str`` or any bytes-like object) into fixed-size records (``dm/_records.pxd``):
TRADE (64 B), BBO (80 B), BOOK_DELTA (56 B). Records of the last ``decode`` are concatenated in
the codec's output buffer (``output()``); each record's size is ``byte0 * 4``.

Units: ``ts_event``/``ts_recv`` u64 ns since the UNIX epoch; prices i64 and sizes u64 in fixed
point 1e-9, parsed straight from the decimal text (never through float).

Decoding is a bounded, non-recursive scan. Rules shared with the pure-Python oracle
``dm/codec_ref.py`` (tests check both give identical records and identical errors):

* The whole frame must be strict JSON (RFC 8259; nesting depth <= 32; bytes >= 0x80 inside
  strings are taken as they are). A syntax error wins over any other error and is reported as
  ``CodecError(venue, "invalid JSON: unexpected byte 0xNN" | "invalid JSON: unexpected end of
  frame" | "invalid JSON: nesting too deep", None, offset)`` where offset is the first byte at
  which the frame stops being a prefix of some valid JSON text.
* Keys are compared by their raw bytes (a key written with escapes matches nothing); a
  duplicated key: the last one wins.
* Then fields are checked in a fixed order per message type (documented on each function);
  a missing field is reported at the offset of the enclosing object, any other problem at the
  offset of the value. ``FixedPointError`` for decimals that are malformed, have more than 9
  significant fractional digits, are negative where a size is expected, or do not fit
  (i64 prices, u64 sizes); ``UnknownInstrumentError`` for a symbol not in the map.
* ``BOOK_DELTA`` frames set ``FLAG_LAST`` on the final record of the frame. Snapshots start with
  a CLEAR record (side 'N', price UNDEF_PRICE, size 0, action 'R') and flag every record
  ``FLAG_SNAPSHOT``. A level with size 0 is action CANCEL, otherwise ADD.
"""
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_Check
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_ND, PyBUF_FORMAT
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset, memcmp
from libc.stdlib cimport malloc, realloc, free

from dm._records cimport *

from dm.errors import CodecError, FixedPointError, UnknownInstrumentError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL

cdef extern from *:
    """
    #include <stdint.h>
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
    """
    bint dm_mul_u64(uint64_t a, uint64_t b, uint64_t* r) noexcept nogil
    bint dm_add_u64(uint64_t a, uint64_t b, uint64_t* r) noexcept nogil
    Py_ssize_t dm_str_run(const uint8_t* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil


cdef enum:
    MAX_DEPTH = 32
    INIT_CAP = 4096

cdef enum:
    ERR_NONE = 0
    ERR_JSON = 1
    ERR_CODEC = 2
    ERR_FIXED = 3
    ERR_UNKNOWN = 4
    ERR_NOMEM = 5

cdef enum:
    V_BINANCE = 1
    V_KRAKEN = 2
    V_KF = 3

# Frame kinds (``last_kind``; names in KIND_NAMES).
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

KIND_NAMES = (
    "none", "aggTrade", "trade", "bookTicker", "depthUpdate", "depthSnapshot", "kline",
    "heartbeat", "status", "subscription", "ticker", "spread", "book", "bookSnapshot",
    "tradeSnapshot", "tickerLite", "info", "pong", "ohlc", "error",
)
KINDS = {name: i for i, name in enumerate(KIND_NAMES)}

cdef const char* FMT_B = b"B"
cdef const char* R_INVALID = b"invalid decimal"
cdef const char* R_FRAC = b"more than 9 fractional digits"
cdef const char* R_NEG = b"negative value"
cdef const char* R_RANGE = b"out of range"

cdef uint8_t STR_PLAIN[256]
cdef uint8_t IS_WS[256]
cdef int _c
for _c in range(256):
    STR_PLAIN[_c] = 1 if (_c >= 0x20 and _c != 0x22 and _c != 0x5C) else 0
    IS_WS[_c] = 1 if (_c == 0x20 or _c == 0x09 or _c == 0x0A or _c == 0x0D) else 0


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


# ---------------------------------------------------------------------------------------------
# bounded JSON scanning (validating; never recursive; never reads past s.n)

cdef inline bint is_digit(uint8_t c) noexcept nogil:
    return c >= 48 and c <= 57


cdef inline bint is_hex(uint8_t c) noexcept nogil:
    return (c >= 48 and c <= 57) or (c >= 65 and c <= 70) or (c >= 97 and c <= 102)


cdef inline Py_ssize_t skip_ws(CState* s, Py_ssize_t i) noexcept nogil:
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t n = s.n
    while i < n and IS_WS[p[i]]:
        i += 1
    return i


cdef Py_ssize_t scan_string(CState* s, Py_ssize_t i) noexcept nogil:
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


cdef Py_ssize_t scan_lit(CState* s, Py_ssize_t i, const char* lit, int ln) noexcept nogil:
    cdef int k
    for k in range(ln):
        if i + k >= s.n:
            return e_end(s)
        if s.p[i + k] != <uint8_t>lit[k]:
            return e_byte(s, i + k)
    return i + ln


cdef Py_ssize_t key_colon(CState* s, Py_ssize_t i) noexcept nogil:
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


cdef Py_ssize_t skip_value(CState* s, Py_ssize_t i, int depth) noexcept nogil:
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


cdef Py_ssize_t validate(CState* s) noexcept nogil:
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


cdef Py_ssize_t obj_first(CState* s, Py_ssize_t i, int depth, Py_ssize_t* ks, Py_ssize_t* ke) noexcept nogil:
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


cdef Py_ssize_t arr_first(CState* s, Py_ssize_t i, int depth, Py_ssize_t* endp) noexcept nogil:
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


cdef Py_ssize_t arr_next(CState* s, Py_ssize_t i, Py_ssize_t* endp) noexcept nogil:
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


cdef Py_ssize_t index_obj(CState* s, Py_ssize_t v, int depth, keyfn_t kf, Py_ssize_t* slots, int nslots) noexcept nogil:
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


cdef int arr_collect(CState* s, Py_ssize_t v, Py_ssize_t* offs, int maxn) noexcept nogil:
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


# ---------------------------------------------------------------------------------------------
# fixed point: decimal text -> integer at 1e-9, exact

cdef uint64_t POW10[20]
POW10[0] = 1
for _c in range(1, 20):
    POW10[_c] = POW10[_c - 1] * 10


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
        acc *= POW10[9 - (i - j)]
    else:
        acc *= POW10[9]
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


cdef const char* parse_fixed_slow(const uint8_t* p, Py_ssize_t n, bint is_signed, int64_t* out) noexcept nogil:
    """Parse ``-?digits[.digits][(e|E)[+-]digits]`` (at least one mantissa digit) to an integer
    at scale 1e-9. Returns NULL on success, else the reason: invalid decimal, more than 9
    fractional digits, negative value (sizes), out of range (i64 / u64), checked in that order."""
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
    if L < -9:
        return R_FRAC
    if neg and not is_signed:
        return R_NEG
    if H + 9 >= 20:
        return R_RANGE
    for j in range(jf, jl + 1):
        dg = p[a + j] if j < nint else p[c + j - nint]
        if dm_mul_u64(acc, 10, &acc) or dm_add_u64(acc, dg - 48, &acc):
            return R_RANGE
    for j in range(L + 9):
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


cdef inline int sym_find(CState* s, const uint8_t* k, Py_ssize_t n, uint32_t* out) noexcept nogil:
    cdef uint64_t mask, idx
    cdef SymEntry* e
    if n <= 0 or n > SYM_MAX or s.sym_cap == 0:
        return 0
    mask = s.sym_cap - 1
    idx = sym_hash(k, n) & mask
    while True:
        e = &s.sym[idx]
        if e.klen == 0:
            return 0
        if sym_eq(e, k, n):
            out[0] = e.id
            return 1
        idx = (idx + 1) & mask


cdef int sym_insert(SymEntry* tab, Py_ssize_t cap, const uint8_t* k, Py_ssize_t n, uint32_t iid) noexcept nogil:
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
            return 1
        if sym_eq(e, k, n):
            e.id = iid
            return 0
        idx = (idx + 1) & mask


cdef int sym_put(CState* s, const uint8_t* k, Py_ssize_t n, uint32_t iid) noexcept nogil:
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
                sym_insert(tab, newcap, <const uint8_t*>s.sym[i].key, s.sym[i].klen, s.sym[i].id)
        free(s.sym)
        s.sym = tab
        s.sym_cap = newcap
    s.sym_count += sym_insert(s.sym, s.sym_cap, k, n, iid)
    return 0


cdef int lookup(CState* s, Py_ssize_t v, const char* field) noexcept nogil:
    """String value at v names the instrument of the frame (sets s.instrument_id)."""
    cdef Py_ssize_t a, b
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    if not sym_find(s, s.p + a, b - a, &s.instrument_id):
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

cdef int grow(CState* s, Py_ssize_t need) noexcept nogil:
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
    r.size_precision = FIXED_DECIMALS
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
    r.size_precision = FIXED_DECIMALS
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
    r.size_precision = FIXED_DECIMALS
    memset(r._reserved, 0, 4)
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
    """Array of [price, quantity] decimal-string pairs (extra elements ignored)."""
    cdef Py_ssize_t endp = 0, w, e
    cdef Py_ssize_t el[2]
    cdef int64_t px, sz
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", field, w)
        if arr_collect(s, w, el, 2) < 2:
            return e_codec(s, ERR_CODEC, b"expected [price, quantity]", field, w)
        if get_fx_str(s, el[0], field, 1, &px) < 0:
            return -1
        if get_fx_str(s, el[1], field, 0, &sz) < 0:
            return -1
        if emit_level(s, ts_event, px, <uint64_t>sz, seq, side, flags) < 0:
            return -1
        e = skip_value(s, w, 0)
        w = arr_next(s, e, &endp)
    return 0


cdef int bn_trade(CState* s, Py_ssize_t* D, Py_ssize_t doff, int kind) noexcept nogil:
    """aggTrade: s, T, a, p, q, m; trade: s, T, t, p, q, m. side 'A' when m (the buyer is the
    maker, so the seller was the aggressor) else 'B'; trade_id = sequence = a (t)."""
    cdef Py_ssize_t v
    cdef uint64_t ts, tid
    cdef int64_t px, sz
    cdef bint m
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
    if v < 0 or get_fx_str(s, v, b"p", 1, &px) < 0:
        return -1
    v = req(s, D, BS_q, b"q", doff)
    if v < 0 or get_fx_str(s, v, b"q", 0, &sz) < 0:
        return -1
    v = req(s, D, BS_m, b"m", doff)
    if v < 0 or get_bool(s, v, b"m", &m) < 0:
        return -1
    return emit_trade(s, ts, px, <uint64_t>sz, tid, tid, SIDE_ASK if m else SIDE_BID, 0)


cdef int bn_bbo(CState* s, Py_ssize_t* D, Py_ssize_t doff) noexcept nogil:
    """bookTicker: s, E (optional), u, b, B, a, A. The spot stream has no event time:
    ts_event = ts_recv and FLAG_TS_EVENT_IS_RECV unless E is present."""
    cdef Py_ssize_t v
    cdef uint64_t ts, u
    cdef int64_t bp, bs, ap, as_
    cdef uint8_t flags = 0
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
    if v < 0 or get_fx_str(s, v, b"b", 1, &bp) < 0:
        return -1
    v = req(s, D, BS_B, b"B", doff)
    if v < 0 or get_fx_str(s, v, b"B", 0, &bs) < 0:
        return -1
    v = req(s, D, BS_a, b"a", doff)
    if v < 0 or get_fx_str(s, v, b"a", 1, &ap) < 0:
        return -1
    v = req(s, D, BS_A, b"A", doff)
    if v < 0 or get_fx_str(s, v, b"A", 0, &as_) < 0:
        return -1
    s.first_seq = u
    s.last_seq = u
    return emit_bbo(s, ts, bp, <uint64_t>bs, ap, <uint64_t>as_, u, flags)


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


# ---------------------------------------------------------------------------------------------
# Kraken spot websocket API v1 (book, trade, ticker, spread; events)

cdef enum:
    KR_AS = 0
    KR_BS
    KR_A
    KR_B
    KR_C
    KR_N


cdef int kr_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if n == 1:
        if k[0] == c'a':
            return KR_A
        if k[0] == c'b':
            return KR_B
        if k[0] == c'c':
            return KR_C
        return -1
    if n == 2 and k[1] == c's':
        if k[0] == c'a':
            return KR_AS
        if k[0] == c'b':
            return KR_BS
    return -1


cdef int kr_event_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    return 0 if raw_eq(k, n, b"event", 5) else -1


cdef int kr_book_levels(CState* s, Py_ssize_t v, const char* field, uint8_t side, uint8_t flags) noexcept nogil:
    """Array of [price, volume, timestamp(, "r")] strings; ts_event = the level's timestamp."""
    cdef Py_ssize_t endp = 0, w, e
    cdef Py_ssize_t el[3]
    cdef int64_t px, sz
    cdef uint64_t ts
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", field, w)
        if arr_collect(s, w, el, 3) < 3:
            return e_codec(s, ERR_CODEC, b"expected [price, volume, timestamp]", field, w)
        if get_fx_str(s, el[0], field, 1, &px) < 0:
            return -1
        if get_fx_str(s, el[1], field, 0, &sz) < 0:
            return -1
        if get_ts_str(s, el[2], field, &ts) < 0:
            return -1
        if emit_level(s, ts, px, <uint64_t>sz, 0, side, flags) < 0:
            return -1
        e = skip_value(s, w, 0)
        w = arr_next(s, e, &endp)
    return 0


cdef int kr_checksum(CState* s, Py_ssize_t v) noexcept nogil:
    cdef Py_ssize_t a, b, i
    cdef uint64_t acc = 0
    if get_str(s, v, b"c", &a, &b) < 0:
        return -1
    if b - a < 1 or b - a > 10:
        return e_codec(s, ERR_CODEC, b"invalid checksum", b"c", v)
    for i in range(a, b):
        if not is_digit(s.p[i]):
            return e_codec(s, ERR_CODEC, b"invalid checksum", b"c", v)
        acc = acc * 10 + (s.p[i] - 48)
    if acc > <uint64_t>0xFFFFFFFF:
        return e_codec(s, ERR_CODEC, b"invalid checksum", b"c", v)
    s.checksum = <int64_t>acc
    return 0


cdef int kr_book(CState* s, Py_ssize_t* pay, int npay) noexcept nogil:
    """book-N: payload objects. Snapshot (first payload has "as"/"bs"): CLEAR, then per payload
    "as" (asks) then "bs" (bids), FLAG_SNAPSHOT. Update: per payload "a" then "b", then "c"
    (CRC32, u32 decimal string) -> checksum. FLAG_LAST on the final record."""
    cdef Py_ssize_t sl[KR_N]
    cdef int k
    cdef bint snap = 0
    for k in range(npay):
        if s.p[pay[k]] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", b"payload", pay[k])
        index_obj(s, pay[k], 0, kr_key, sl, KR_N)
        if k == 0:
            snap = sl[KR_AS] >= 0 or sl[KR_BS] >= 0
            s.kind = K_BOOKSNAPSHOT if snap else K_BOOK
            if snap and emit_clear(s, s.ts_recv, 0, FLAG_SNAPSHOT | FLAG_TS_EVENT_IS_RECV) < 0:
                return -1
        if snap:
            if sl[KR_AS] >= 0 and kr_book_levels(s, sl[KR_AS], b"as", SIDE_ASK, FLAG_SNAPSHOT) < 0:
                return -1
            if sl[KR_BS] >= 0 and kr_book_levels(s, sl[KR_BS], b"bs", SIDE_BID, FLAG_SNAPSHOT) < 0:
                return -1
        else:
            if sl[KR_A] >= 0 and kr_book_levels(s, sl[KR_A], b"a", SIDE_ASK, 0) < 0:
                return -1
            if sl[KR_B] >= 0 and kr_book_levels(s, sl[KR_B], b"b", SIDE_BID, 0) < 0:
                return -1
            if sl[KR_C] >= 0 and kr_checksum(s, sl[KR_C]) < 0:
                return -1
    set_last(s)
    return 0


cdef int kr_trade(CState* s, Py_ssize_t v) noexcept nogil:
    """trade: array of [price, volume, time, side b|s, ordertype, misc] -> TRADE per entry,
    ts_event = time, side 'b' -> 'B', 's' -> 'A', trade_id 0 (v1 has none)."""
    cdef Py_ssize_t endp = 0, w, e, a, b
    cdef Py_ssize_t el[4]
    cdef int64_t px, sz
    cdef uint64_t ts
    cdef uint8_t side
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"trade", v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", b"trade", w)
        if arr_collect(s, w, el, 4) < 4:
            return e_codec(s, ERR_CODEC, b"expected [price, volume, time, side, ...]", b"trade", w)
        if get_fx_str(s, el[0], b"trade", 1, &px) < 0:
            return -1
        if get_fx_str(s, el[1], b"trade", 0, &sz) < 0:
            return -1
        if get_ts_str(s, el[2], b"trade", &ts) < 0:
            return -1
        if get_str(s, el[3], b"trade", &a, &b) < 0:
            return -1
        if raw_eq(s.p + a, b - a, b"b", 1):
            side = SIDE_BID
        elif raw_eq(s.p + a, b - a, b"s", 1):
            side = SIDE_ASK
        else:
            return e_codec(s, ERR_CODEC, b"invalid side", b"trade", el[3])
        if emit_trade(s, ts, px, <uint64_t>sz, 0, 0, side, 0) < 0:
            return -1
        e = skip_value(s, w, 0)
        w = arr_next(s, e, &endp)
    return 0


cdef int kr_ticker_side(CState* s, Py_ssize_t v, const char* field, int64_t* px, int64_t* sz) noexcept nogil:
    cdef Py_ssize_t el[3]
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    if arr_collect(s, v, el, 3) < 3:
        return e_codec(s, ERR_CODEC, b"expected [price, wholeLotVolume, lotVolume]", field, v)
    if get_fx_str(s, el[0], field, 1, px) < 0:
        return -1
    return get_fx_str(s, el[2], field, 0, sz)


cdef int kr_ticker(CState* s, Py_ssize_t v) noexcept nogil:
    """ticker: object with b, a = [price, wholeLotVolume, lotVolume] -> BBO (price, lot
    volume), ts_event = ts_recv + FLAG_TS_EVENT_IS_RECV (the v1 ticker has no time)."""
    cdef Py_ssize_t sl[KR_N]
    cdef Py_ssize_t w
    cdef int64_t bp, bs, ap, as_
    if s.p[v] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"ticker", v)
    index_obj(s, v, 0, kr_key, sl, KR_N)
    w = req(s, sl, KR_B, b"b", v)
    if w < 0 or kr_ticker_side(s, w, b"b", &bp, &bs) < 0:
        return -1
    w = req(s, sl, KR_A, b"a", v)
    if w < 0 or kr_ticker_side(s, w, b"a", &ap, &as_) < 0:
        return -1
    return emit_bbo(s, s.ts_recv, bp, <uint64_t>bs, ap, <uint64_t>as_, 0, FLAG_TS_EVENT_IS_RECV)


cdef int kr_spread(CState* s, Py_ssize_t v) noexcept nogil:
    """spread: [bid, ask, timestamp, bidVolume, askVolume] strings -> BBO, ts_event = timestamp."""
    cdef Py_ssize_t el[5]
    cdef int64_t bp, ap, bs, as_
    cdef uint64_t ts
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"spread", v)
    if arr_collect(s, v, el, 5) < 5:
        return e_codec(s, ERR_CODEC, b"expected [bid, ask, timestamp, bidVolume, askVolume]", b"spread", v)
    if get_fx_str(s, el[0], b"spread", 1, &bp) < 0:
        return -1
    if get_fx_str(s, el[1], b"spread", 1, &ap) < 0:
        return -1
    if get_ts_str(s, el[2], b"spread", &ts) < 0:
        return -1
    if get_fx_str(s, el[3], b"spread", 0, &bs) < 0:
        return -1
    if get_fx_str(s, el[4], b"spread", 0, &as_) < 0:
        return -1
    return emit_bbo(s, ts, bp, <uint64_t>bs, ap, <uint64_t>as_, 0, 0)


cdef int kr_decode(CState* s) noexcept nogil:
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t top, v, w, e, endp = 0, a, b, last = -1, prev = -1
    cdef Py_ssize_t el[8]
    cdef Py_ssize_t sl[1]
    cdef int count = 0, npay
    top = validate(s)
    if top < 0:
        return -1
    if p[top] == 123:
        index_obj(s, top, 0, kr_event_key, sl, 1)
        v = req(s, sl, 0, b"event", top)
        if v < 0 or get_str(s, v, b"event", &a, &b) < 0:
            return -1
        if raw_eq(p + a, b - a, b"heartbeat", 9):
            s.kind = K_HEARTBEAT
        elif raw_eq(p + a, b - a, b"systemStatus", 12):
            s.kind = K_STATUS
        elif raw_eq(p + a, b - a, b"subscriptionStatus", 18):
            s.kind = K_SUBSCRIPTION
        elif raw_eq(p + a, b - a, b"pong", 4):
            s.kind = K_PONG
        elif raw_eq(p + a, b - a, b"error", 5):
            s.kind = K_ERROR
        else:
            return e_codec(s, ERR_CODEC, b"unknown event", b"event", v)
        return 0
    if p[top] != 91:
        return e_codec(s, ERR_CODEC, b"expected a JSON object or array", NULL, top)
    # [channelID, payload..., channelName, pair]
    w = arr_first(s, top, 0, &endp)
    while w > 0:
        if count < 8:
            el[count] = w
        count += 1
        prev = last
        last = w
        e = skip_value(s, w, 1)
        w = arr_next(s, e, &endp)
    if count < 4:
        return e_codec(s, ERR_CODEC, b"expected [channelID, payload..., channelName, pair]", NULL, top)
    if get_str(s, prev, b"channelName", &a, &b) < 0:
        return -1
    if b - a >= 4 and memcmp(p + a, b"book", 4) == 0:
        s.kind = K_BOOK
    elif raw_eq(p + a, b - a, b"trade", 5):
        s.kind = K_TRADE
    elif raw_eq(p + a, b - a, b"ticker", 6):
        s.kind = K_TICKER
    elif raw_eq(p + a, b - a, b"spread", 6):
        s.kind = K_SPREAD
    elif b - a >= 4 and memcmp(p + a, b"ohlc", 4) == 0:
        s.kind = K_OHLC
        return 0
    else:
        return e_codec(s, ERR_CODEC, b"unknown channel", b"channelName", prev)
    if lookup(s, last, b"pair") < 0:
        return -1
    npay = count - 3
    if npay != 1 and not (s.kind == K_BOOK and npay == 2):
        return e_codec(s, ERR_CODEC, b"unexpected number of payloads", NULL, top)
    if s.kind == K_BOOK:
        return kr_book(s, el + 1, npay)
    if s.kind == K_TRADE:
        return kr_trade(s, el[1])
    if s.kind == K_TICKER:
        return kr_ticker(s, el[1])
    return kr_spread(s, el[1])


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
    """book_snapshot bids/asks: array of {"price": number, "qty": number}."""
    cdef Py_ssize_t sl[KF_N]
    cdef Py_ssize_t endp = 0, w, e, x
    cdef int64_t px, sz
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 123:
            return e_codec(s, ERR_CODEC, b"expected an object", field, w)
        e = index_obj(s, w, 0, kf_key, sl, KF_N)
        x = req(s, sl, KF_PRICE, b"price", w)
        if x < 0 or get_fx_num(s, x, b"price", 1, 0, 0, &px) < 0:
            return -1
        x = req(s, sl, KF_QTY, b"qty", w)
        if x < 0 or get_fx_num(s, x, b"qty", 0, 0, 0, &sz) < 0:
            return -1
        if emit_level(s, ts, px, <uint64_t>sz, seq, side, FLAG_SNAPSHOT) < 0:
            return -1
        w = arr_next(s, e, &endp)
    return 0


cdef int kf_trade(CState* s, Py_ssize_t* sl, Py_ssize_t obj, uint8_t flags, uint64_t* seq) noexcept nogil:
    """trade fields: side, seq, time, price, qty -> TRADE, trade_id = sequence = seq."""
    cdef Py_ssize_t v
    cdef uint8_t side
    cdef uint64_t ts
    cdef int64_t px, sz
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
    if v < 0 or get_fx_num(s, v, b"price", 1, 0, 0, &px) < 0:
        return -1
    v = req(s, sl, KF_QTY, b"qty", obj)
    if v < 0 or get_fx_num(s, v, b"qty", 0, 0, 0, &sz) < 0:
        return -1
    return emit_trade(s, ts, px, <uint64_t>sz, seq[0], seq[0], side, flags)


cdef int kf_decode(CState* s) noexcept nogil:
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t sl[KF_N]
    cdef Py_ssize_t tsl[KF_N]
    cdef Py_ssize_t top, e, v, vb, va, a, b, endp = 0, w
    cdef uint64_t seq, ts
    cdef int64_t px, sz, bp, ap, bs, as_
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
        if v < 0 or get_fx_num(s, v, b"price", 1, 0, 0, &px) < 0:
            return -1
        v = req(s, sl, KF_QTY, b"qty", top)
        if v < 0 or get_fx_num(s, v, b"qty", 0, 0, 0, &sz) < 0:
            return -1
        if emit_level(s, ts, px, <uint64_t>sz, seq, side, FLAG_LAST) < 0:
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
    v = req(s, sl, KF_BID, b"bid", top)
    if v < 0 or get_fx_num(s, v, b"bid", 1, 1, DM_UNDEF_PRICE, &bp) < 0:
        return -1
    v = req(s, sl, KF_ASK, b"ask", top)
    if v < 0 or get_fx_num(s, v, b"ask", 1, 1, DM_UNDEF_PRICE, &ap) < 0:
        return -1
    if s.kind == K_TICKERLITE:
        return emit_bbo(s, s.ts_recv, bp, 0, ap, 0, 0, FLAG_TS_EVENT_IS_RECV)
    v = req(s, sl, KF_BID_SIZE, b"bid_size", top)
    if v < 0 or get_fx_num(s, v, b"bid_size", 0, 1, 0, &bs) < 0:
        return -1
    v = req(s, sl, KF_ASK_SIZE, b"ask_size", top)
    if v < 0 or get_fx_num(s, v, b"ask_size", 0, 1, 0, &as_) < 0:
        return -1
    v = req(s, sl, KF_TIME, b"time", top)
    if v < 0 or get_ms(s, v, b"time", &ts) < 0:
        return -1
    return emit_bbo(s, ts, bp, <uint64_t>bs, ap, <uint64_t>as_, 0, 0)


# ---------------------------------------------------------------------------------------------
# Python API

cdef inline bytes _as_bytes(obj):
    if isinstance(obj, bytes):
        return <bytes>obj
    if isinstance(obj, str):
        return (<str>obj).encode()
    return bytes(obj)


def parse_price(text) -> int:
    """Decimal text (bytes/str, e.g. b"-0.21448000", b"2.5E+3") -> i64 price at 1e-9, exact.

    Raises ``FixedPointError`` (venue "decimal", offset 0) when the text is not a decimal, has
    more than 9 significant fractional digits or does not fit in i64."""
    cdef bytes b = _as_bytes(text)
    cdef int64_t out = 0
    cdef const char* r = parse_fixed(<const uint8_t*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), 1, &out)
    if r != NULL:
        raise FixedPointError("decimal", r.decode(), None, 0)
    return out


def parse_size(text) -> int:
    """Decimal text -> u64 size at 1e-9, exact. Raises ``FixedPointError`` like
    ``parse_price``, and for a negative non-zero value."""
    cdef bytes b = _as_bytes(text)
    cdef int64_t out = 0
    cdef const char* r = parse_fixed(<const uint8_t*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), 0, &out)
    if r != NULL:
        raise FixedPointError("decimal", r.decode(), None, 0)
    return <uint64_t>out


cdef class _Codec:
    """Base of the venue codecs: symbol map, output buffer, per-frame results, error edge.

    ``decode(frame, ts_recv) -> int`` decodes one websocket text frame (bytes, str (its UTF-8
    bytes; offsets are byte offsets), or any bytes-like) received at ``ts_recv`` (ns since the
    epoch) and returns the number of records written to the output buffer, which is reset at
    each call (0 records for heartbeats and other control frames). Raises ``CodecError``,
    ``FixedPointError``, ``UnknownInstrumentError`` (from ``dm.errors``; venue, field and byte
    offset set); after an error the output is empty and ``last_kind`` is 0 ("none").

    ``output()`` is a read-only memoryview of the records of the last decode; it stays memory
    safe forever but its bytes are only meaningful until the next ``decode``."""

    def __cinit__(self, *args, **kwargs):
        memset(&self.st, 0, sizeof(CState))
        self.st.out = <char*>malloc(INIT_CAP)
        if self.st.out == NULL:
            raise MemoryError()
        self.st.out_cap = INIT_CAP
        self.st.checksum = -1
        self.venue = "?"

    def __init__(self, int publisher_id, symbols=None):
        if not 0 <= publisher_id <= 0xFFFF:
            raise ValueError(f"publisher_id {publisher_id} does not fit u16")
        self.st.publisher_id = <uint16_t>publisher_id
        if symbols:
            for k, v in symbols.items():
                self.add_symbol(k, v)

    def __dealloc__(self):
        cdef int k
        free(self.st.out)
        for k in range(self.st.n_retired):
            free(self.st.retired[k])
        free(self.st.retired)
        free(self.st.sym)

    def add_symbol(self, venue_symbol, instrument_id):
        """Map a venue symbol ("ZILUSDT", "XBT/USD", "PI_ETHUSD"; ASCII case-insensitive, at
        most 59 bytes) to a u32 instrument_id; replaces an existing mapping."""
        cdef bytes k = _as_bytes(venue_symbol)
        cdef uint64_t iid = instrument_id
        if len(k) == 0 or len(k) > SYM_MAX:
            raise ValueError(f"venue symbol {venue_symbol!r} must be 1..{SYM_MAX} bytes")
        if iid > 0xFFFFFFFF:
            raise ValueError(f"instrument_id {instrument_id} does not fit u32")
        if sym_put(&self.st, <const uint8_t*>PyBytes_AS_STRING(k), len(k), <uint32_t>iid) < 0:
            raise MemoryError()

    def decode(self, frame, uint64_t ts_recv):
        cdef Py_buffer view
        cdef const char* p
        cdef Py_ssize_t n
        if PyBytes_CheckExact(frame):
            return self.decode_c(PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), ts_recv)
        if PyUnicode_Check(frame):
            p = PyUnicode_AsUTF8AndSize(frame, &n)
            return self.decode_c(p, n, ts_recv)
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            return self.decode_c(<const char*>view.buf, view.len, ts_recv)
        finally:
            PyBuffer_Release(&view)

    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1:
        """Decode ``n`` bytes at ``p``; returns the record count (Cython callers)."""
        cdef CState* s = &self.st
        cdef int rc
        s.p = <const uint8_t*>p
        s.n = n
        s.ts_recv = ts_recv
        s.out_len = 0
        s.nrec = 0
        s.kind = K_NONE
        s.instrument_id = 0
        s.first_seq = 0
        s.last_seq = 0
        s.checksum = -1
        s.err = ERR_NONE
        if s.venue == V_BINANCE:
            rc = bn_decode(s)
        elif s.venue == V_KRAKEN:
            rc = kr_decode(s)
        else:
            rc = kf_decode(s)
        if rc < 0:
            return self._raise()
        s.counts[s.kind] += 1
        return s.nrec

    cdef int _raise(self) except -1:
        """The one edge where status codes become exceptions."""
        cdef CState* s = &self.st
        cdef int err = s.err
        cdef str field = s.err_field.decode() if s.err_field != NULL else None
        cdef str reason
        cdef Py_ssize_t off = s.err_off
        s.out_len = 0
        s.nrec = 0
        s.kind = K_NONE
        s.instrument_id = 0
        s.first_seq = 0
        s.last_seq = 0
        s.checksum = -1
        if err == ERR_NOMEM:
            raise MemoryError()
        if err == ERR_JSON:
            if s.err_reason != NULL:
                reason = s.err_reason.decode()
            elif off >= s.n:
                reason = "invalid JSON: unexpected end of frame"
            else:
                reason = "invalid JSON: unexpected byte 0x%02x" % s.p[off]
            raise CodecError(self.venue, reason, None, off)
        if err == ERR_FIXED:
            raise FixedPointError(self.venue, s.err_reason.decode(), field, off)
        if err == ERR_UNKNOWN:
            sym = (<const char*>s.p)[s.sym_off:s.sym_off + s.sym_len].decode("utf-8", "replace")
            raise UnknownInstrumentError(self.venue, f"unknown symbol {sym!r}", field, off)
        raise CodecError(self.venue, s.err_reason.decode(), field, off)

    def output(self):
        """Read-only memoryview of the records of the last decode (concatenated; each record's
        size in bytes is its first byte * 4)."""
        return memoryview(self)

    def __getbuffer__(self, Py_buffer* buf, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("codec output is read-only")
        cdef Py_ssize_t* shape = <Py_ssize_t*>malloc(sizeof(Py_ssize_t))
        if shape == NULL:
            raise MemoryError()
        shape[0] = self.st.out_len
        buf.buf = self.st.out
        buf.obj = self
        buf.len = self.st.out_len
        buf.readonly = 1
        buf.itemsize = 1
        buf.format = <char*>FMT_B if (flags & PyBUF_FORMAT) else NULL
        buf.ndim = 1
        buf.shape = shape if (flags & PyBUF_ND) else NULL
        buf.strides = NULL
        buf.suboffsets = NULL
        buf.internal = shape
        self.st.exports += 1

    def __releasebuffer__(self, Py_buffer* buf):
        cdef int k
        free(buf.internal)
        self.st.exports -= 1
        if self.st.exports == 0:
            for k in range(self.st.n_retired):
                free(self.st.retired[k])
            self.st.n_retired = 0

    @property
    def publisher_id(self) -> int:
        return self.st.publisher_id

    @property
    def last_kind(self) -> int:
        """Kind of the last decoded frame (index into KIND_NAMES; 0 after an error)."""
        return self.st.kind

    @property
    def instrument_id(self) -> int:
        """instrument_id of the last frame (0 when the frame names none)."""
        return self.st.instrument_id

    @property
    def first_seq(self) -> int:
        """Venue sequence of the last frame: Binance depthUpdate U, REST lastUpdateId,
        bookTicker u; Kraken Futures book/book_snapshot/trade seq, trade_snapshot first entry's
        seq; else 0."""
        return self.st.first_seq

    @property
    def last_seq(self) -> int:
        """Like first_seq: Binance depthUpdate u; Kraken Futures trade_snapshot last entry."""
        return self.st.last_seq

    @property
    def checksum(self) -> int:
        """Kraken book update CRC32 ``c`` (u32) of the last frame, -1 when it had none."""
        return self.st.checksum

    def counts(self) -> dict:
        """Frames decoded without error per kind name since creation (kinds never seen omitted)."""
        cdef int k
        return {KIND_NAMES[k]: self.st.counts[k] for k in range(len(KIND_NAMES)) if self.st.counts[k]}


cdef class BinanceCodec(_Codec):
    """Binance spot websocket frames (combined-stream envelope {"stream": ..., "data": {...}}
    or the raw stream object) and REST depth snapshots.

    Kinds: aggTrade / trade -> TRADE; bookTicker -> BBO; depthUpdate -> BOOK_DELTA per level;
    kline and subscription replies ({"result": ..., "id": ...}) -> 0 records. Envelope: the
    kind comes from the stream name after '@'; raw form: from "e" (none: bookTicker, or a
    subscription reply when "id" is present). Venue doc: Binance Spot "WebSocket Streams".
    Field check order: aggTrade s,T,a,p,q,m; trade s,T,t,p,q,m; bookTicker s,E?,u,b,B,a,A;
    depthUpdate s,E,U,u,b,a."""

    def __cinit__(self, *args, **kwargs):
        self.st.venue = V_BINANCE
        self.venue = "BINANCE"

    def decode_snapshot(self, body, venue_symbol, uint64_t ts_recv):
        """REST ``GET /api/v3/depth`` body ({"lastUpdateId", "bids", "asks"}) for
        ``venue_symbol`` -> CLEAR + one BOOK_DELTA per level (bids then asks), all with
        FLAG_SNAPSHOT and FLAG_TS_EVENT_IS_RECV (ts_event = ts_recv), sequence = lastUpdateId,
        FLAG_LAST on the final record; first_seq = last_seq = lastUpdateId. Returns the record
        count. Raises UnknownInstrumentError (field "symbol", offset -1) before looking at the
        body, then the errors of ``decode``."""
        cdef bytes k = _as_bytes(venue_symbol)
        cdef bytes b = _as_bytes(body)
        cdef CState* s = &self.st
        cdef uint32_t iid = 0
        if not sym_find(s, <const uint8_t*>PyBytes_AS_STRING(k), len(k), &iid):
            s.out_len = 0
            s.nrec = 0
            s.kind = K_NONE
            raise UnknownInstrumentError(self.venue, f"unknown symbol {k.decode('utf-8', 'replace')!r}", "symbol", -1)
        s.p = <const uint8_t*>PyBytes_AS_STRING(b)
        s.n = len(b)
        s.ts_recv = ts_recv
        s.out_len = 0
        s.nrec = 0
        s.kind = K_NONE
        s.instrument_id = iid
        s.first_seq = 0
        s.last_seq = 0
        s.checksum = -1
        s.err = ERR_NONE
        if bn_snapshot(s) < 0:
            self._raise()
        s.counts[s.kind] += 1
        return s.nrec


cdef class KrakenCodec(_Codec):
    """Kraken spot websocket API v1 frames. Events ({"event": heartbeat | systemStatus |
    subscriptionStatus | pong | error}) -> 0 records; data arrays [channelID, payload...,
    channelName, pair]: book-N snapshot/update -> BOOK_DELTA (checksum = int(c)), trade ->
    TRADE, ticker / spread -> BBO, ohlc-N -> 0 records. Symbols are wsnames ("XBT/USD").
    Venue doc: Kraken WebSocket API v1, sections Book, Trade, Ticker, Spread."""

    def __cinit__(self, *args, **kwargs):
        self.st.venue = V_KRAKEN
        self.venue = "KRAKEN"


cdef class KrakenFuturesCodec(_Codec):
    """Kraken Futures websocket API v1 frames. Events (info, subscribed..., error/alert,
    pong) and the heartbeat feed -> 0 records; book_snapshot -> CLEAR + BOOK_DELTA
    (FLAG_SNAPSHOT), book -> one BOOK_DELTA, trade -> TRADE (side = taker side),
    trade_snapshot -> TRADE per entry (FLAG_SNAPSHOT), ticker_lite -> BBO (sizes 0,
    ts_event = ts_recv), ticker -> BBO (bid_size/ask_size, time). Prices and quantities are
    JSON numbers parsed exactly (exponents allowed); a null bid/ask is UNDEF_PRICE. Product ids
    are case-insensitive. Venue doc: Kraken Futures WebSocket v1, Book, Trade, Ticker Lite,
    Ticker."""

    def __cinit__(self, *args, **kwargs):
        self.st.venue = V_KF
        self.venue = "KRAKEN_FUTURES"
