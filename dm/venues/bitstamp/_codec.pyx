# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Bitstamp websocket API v2 frames and REST ``order_book`` snapshots -> dm records (the venue half
of ``BitstampCodec``; the shared scanner is ``dm/_scan.pxd``, the base class
``dm._codec._Codec``).

Rules from the Bitstamp WebSocket API v2 docs (https://www.bitstamp.net/websocket/v2/):
channels ``diff_order_book_{pair}`` and ``live_trades_{pair}``, events
``bts:subscription_succeeded``, ``bts:request_reconnect``, ``bts:heartbeat``, ``bts:error``;
REST API docs (https://www.bitstamp.net/api/), "Order book" (``GET /api/v2/order_book/{pair}``).
See the class docstring.
"""
from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp

from dm._records cimport *
from dm._scan cimport *
from dm._codec cimport _Codec, as_bytes

from dm.errors import UnknownInstrumentError

cdef enum:
    BS_EVENT = 0
    BS_CHANNEL
    BS_DATA
    BS_MTS
    BS_BIDS
    BS_ASKS
    BS_ID
    BS_PRICE_STR
    BS_AMOUNT_STR
    BS_TYPE
    BS_N


cdef int bs_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if n == 2:
        return BS_ID if memcmp(k, b"id", 2) == 0 else -1
    if n == 4:
        if memcmp(k, b"data", 4) == 0:
            return BS_DATA
        if memcmp(k, b"bids", 4) == 0:
            return BS_BIDS
        if memcmp(k, b"asks", 4) == 0:
            return BS_ASKS
        if memcmp(k, b"type", 4) == 0:
            return BS_TYPE
        return -1
    if n == 5:
        return BS_EVENT if memcmp(k, b"event", 5) == 0 else -1
    if n == 7:
        return BS_CHANNEL if memcmp(k, b"channel", 7) == 0 else -1
    if n == 9:
        return BS_PRICE_STR if memcmp(k, b"price_str", 9) == 0 else -1
    if n == 10:
        return BS_AMOUNT_STR if memcmp(k, b"amount_str", 10) == 0 else -1
    if n == 14:
        return BS_MTS if memcmp(k, b"microtimestamp", 14) == 0 else -1
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
    while i < n:
        c = p[i]
        if c == 34:
            i = scan_string(s, i)
            continue
        if c == 123 or c == 91:
            depth += 1
        elif c == 125 or c == 93:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


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


cdef int get_us_str(CState* s, Py_ssize_t v, const char* field, uint64_t* us, uint64_t* ns) noexcept nogil:
    """``microtimestamp``: a string of decimal digits, µs since the epoch -> ``us`` and ``ns``."""
    cdef Py_ssize_t a, b, i
    cdef uint64_t acc = 0
    cdef bint over = 0
    if get_str(s, v, field, &a, &b) < 0:
        return -1
    if a == b:
        return e_codec(s, ERR_CODEC, b"expected microseconds", field, v)
    for i in range(a, b):
        if not is_digit(s.p[i]):
            return e_codec(s, ERR_CODEC, b"expected microseconds", field, v)
        over |= dm_mul_u64(acc, 10, &acc)
        over |= dm_add_u64(acc, s.p[i] - 48, &acc)
    if over or dm_mul_u64(acc, 1000, ns):
        return e_codec(s, ERR_CODEC, b"timestamp out of range", field, v)
    us[0] = acc
    return 0


cdef int lookup_range(CState* s, Py_ssize_t a, Py_ssize_t b, Py_ssize_t v, const char* field) noexcept nogil:
    """The pair ``s.p[a:b]`` (the channel name's suffix at offset v) names the instrument."""
    cdef SymEntry* e = sym_find(s, s.p + a, b - a)
    if e == NULL:
        s.err = ERR_UNKNOWN
        s.err_off = v
        s.err_field = field
        s.err_reason = NULL
        s.sym_off = a
        s.sym_len = b - a
        return -1
    s.instrument_id = e.id
    s.size_precision = e.size_precision
    return 0


cdef int bs_levels(CState* s, Py_ssize_t v, const char* field, uint8_t side, uint64_t ts, uint64_t seq,
                   uint8_t flags) noexcept nogil:
    """``[[price, amount], ...]`` (decimal strings; a third element, when present, is ignored):
    one BOOK_DELTA each, amount 0 = CANCEL. A level whose price or amount cannot be represented
    is dropped alone."""
    cdef Py_ssize_t w, e, endp = 0
    cdef Py_ssize_t L[2]
    cdef int64_t px = 0
    cdef uint64_t sz = 0
    cdef int r1, r2
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", field, w)
        e = pair_collect(s, w, L)
        if e <= 0:
            return e_codec(s, ERR_CODEC, b"expected [price, amount]", field, w)
        r1 = get_px_str(s, L[0], field, &px)
        if r1 < 0:
            return -1
        r2 = get_sz_str(s, L[1], field, &sz)
        if r2 < 0:
            return -1
        if r1 == 0 and r2 == 0:
            if emit_level(s, ts, px, sz, seq, side, flags) < 0:
                return -1
        w = arr_next(s, e, &endp)
    return 0


cdef int bs_book(CState* s, Py_ssize_t d, uint8_t flags) noexcept nogil:
    """An order book object {microtimestamp, bids, asks, ...} (a diff, or with FLAG_SNAPSHOT the
    REST snapshot after a CLEAR) -> BOOK_DELTA records; ts_event = microtimestamp (µs -> ns);
    sequence, first_seq, last_seq = microtimestamp in µs (the only ordering Bitstamp gives)."""
    cdef Py_ssize_t v, vb, va
    cdef Py_ssize_t D[BS_N]
    cdef uint64_t us, ts
    if s.p[d] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"data", d)
    index_valid(s, d, bs_key, D, BS_N)
    v = req(s, D, BS_MTS, b"microtimestamp", d)
    if v < 0 or get_us_str(s, v, b"microtimestamp", &us, &ts) < 0:
        return -1
    vb = req(s, D, BS_BIDS, b"bids", d)
    if vb < 0:
        return -1
    va = req(s, D, BS_ASKS, b"asks", d)
    if va < 0:
        return -1
    if flags & FLAG_SNAPSHOT:
        if emit_clear(s, ts, us, flags) < 0:
            return -1
    if bs_levels(s, vb, b"bids", SIDE_BID, ts, us, flags) < 0:
        return -1
    if bs_levels(s, va, b"asks", SIDE_ASK, ts, us, flags) < 0:
        return -1
    set_last(s)
    s.first_seq = us
    s.last_seq = us
    return 0


cdef int bs_trade(CState* s, Py_ssize_t d) noexcept nogil:
    """live_trades data {id, microtimestamp, price_str, amount_str, type, ...} -> one TRADE: price
    and size from the exact strings (``price``/``amount`` are JSON floats), side = ``type`` (0 =
    buy: the taker bought → bid; 1 = sell → ask), trade_id = ``id``, ts_event = microtimestamp;
    first_seq = last_seq = ``id``. A trade whose price or amount cannot be represented is
    dropped alone."""
    cdef Py_ssize_t v
    cdef Py_ssize_t D[BS_N]
    cdef uint64_t us, ts, tid, typ, sz = 0
    cdef int64_t px = 0
    cdef uint8_t side
    cdef int r1, r2
    if s.p[d] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"data", d)
    index_valid(s, d, bs_key, D, BS_N)
    v = req(s, D, BS_ID, b"id", d)
    if v < 0 or get_u64(s, v, b"id", &tid) < 0:
        return -1
    v = req(s, D, BS_MTS, b"microtimestamp", d)
    if v < 0 or get_us_str(s, v, b"microtimestamp", &us, &ts) < 0:
        return -1
    v = req(s, D, BS_TYPE, b"type", d)
    if v < 0 or get_u64(s, v, b"type", &typ) < 0:
        return -1
    if typ == 0:
        side = SIDE_BID
    elif typ == 1:
        side = SIDE_ASK
    else:
        return e_codec(s, ERR_CODEC, b"invalid type", b"type", v)
    v = req(s, D, BS_PRICE_STR, b"price_str", d)
    if v < 0:
        return -1
    r1 = get_px_str(s, v, b"price_str", &px)
    if r1 < 0:
        return -1
    v = req(s, D, BS_AMOUNT_STR, b"amount_str", d)
    if v < 0:
        return -1
    r2 = get_sz_str(s, v, b"amount_str", &sz)
    if r2 < 0:
        return -1
    s.kind = K_TRADE
    if r1 == 0 and r2 == 0 and emit_trade(s, ts, px, sz, tid, 0, side, 0) < 0:
        return -1
    s.first_seq = tid
    s.last_seq = tid
    return 0


cdef int bs_decode(CState* s) noexcept nogil:
    cdef const uint8_t* p = s.p
    cdef Py_ssize_t sl[BS_N]
    cdef Py_ssize_t top, e, v, vc, d, a, b, ca, cb
    top = skip_ws(s, 0)
    if top >= s.n:
        return e_end(s)
    if p[top] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, top)
    e = index_obj(s, top, 0, bs_key, sl, BS_N)
    if e < 0:
        return -1
    e = skip_ws(s, e)
    if e < s.n:
        return e_byte(s, e)
    v = req(s, sl, BS_EVENT, b"event", top)
    if v < 0 or get_str(s, v, b"event", &a, &b) < 0:
        return -1
    if b - a > 4 and memcmp(p + a, b"bts:", 4) == 0:
        if raw_eq(p + a, b - a, b"bts:subscription_succeeded", 26) or \
                raw_eq(p + a, b - a, b"bts:unsubscription_succeeded", 28):
            s.kind = K_SUBSCRIPTION
        elif raw_eq(p + a, b - a, b"bts:request_reconnect", 21):
            s.kind = K_STATUS
        elif raw_eq(p + a, b - a, b"bts:heartbeat", 13):
            s.kind = K_PONG
        elif raw_eq(p + a, b - a, b"bts:error", 9):
            s.kind = K_ERROR
        else:
            return e_codec(s, ERR_CODEC, b"unknown event", b"event", v)
        return 0
    vc = req(s, sl, BS_CHANNEL, b"channel", top)
    if vc < 0 or get_str(s, vc, b"channel", &ca, &cb) < 0:
        return -1
    d = req(s, sl, BS_DATA, b"data", top)
    if d < 0:
        return -1
    if raw_eq(p + a, b - a, b"data", 4):
        if not (cb - ca > 16 and memcmp(p + ca, b"diff_order_book_", 16) == 0):
            return e_codec(s, ERR_CODEC, b"unknown channel", b"channel", vc)
        if lookup_range(s, ca + 16, cb, vc, b"channel") < 0:
            return -1
        s.kind = K_BOOK
        return bs_book(s, d, 0)
    if raw_eq(p + a, b - a, b"trade", 5):
        if not (cb - ca > 12 and memcmp(p + ca, b"live_trades_", 12) == 0):
            return e_codec(s, ERR_CODEC, b"unknown channel", b"channel", vc)
        if lookup_range(s, ca + 12, cb, vc, b"channel") < 0:
            return -1
        return bs_trade(s, d)
    return e_codec(s, ERR_CODEC, b"unknown event", b"event", v)


cdef int bs_snapshot(CState* s) noexcept nogil:
    cdef Py_ssize_t top, e
    top = skip_ws(s, 0)
    if top >= s.n:
        return e_end(s)
    if s.p[top] != 123:
        if validate(s) < 0:
            return -1
        return e_codec(s, ERR_CODEC, b"expected a JSON object", NULL, top)
    e = skip_value(s, top, 0)
    if e < 0:
        return -1
    e = skip_ws(s, e)
    if e < s.n:
        return e_byte(s, e)
    s.kind = K_DEPTHSNAPSHOT
    return bs_book(s, top, FLAG_SNAPSHOT)


cdef class BitstampCodec(_Codec):
    """Bitstamp websocket API v2 frames (``{"event", "channel", "data"}``) and REST order-book
    snapshots.

    * ``"event":"data"`` on ``diff_order_book_{pair}`` → one BOOK_DELTA per level (bids then
      asks; amount 0 = CANCEL), kind ``book``. Bitstamp sends no sequence number: every
      record's sequence and ``first_seq``/``last_seq`` are the ``microtimestamp`` (µs), which
      the book sync compares with the REST snapshot's.
    * ``"event":"trade"`` on ``live_trades_{pair}`` → TRADE (see ``bs_trade``), kind ``trade``.
    * ``bts:subscription_succeeded`` / ``bts:unsubscription_succeeded`` → kind
      ``subscription``; ``bts:request_reconnect`` ("the client should reconnect") → kind
      ``status``; ``bts:heartbeat`` (the answer to ours) → kind ``pong``; ``bts:error`` → kind
      ``error``. Any other event or channel is a CodecError.
    * :meth:`decode_snapshot`: REST ``GET /api/v2/order_book/{pair}`` → CLEAR + levels with
      ``FLAG_SNAPSHOT``, kind ``depthSnapshot``.

    The pair is the channel name's suffix (the venue's ``url_symbol``, ``ethusd``), looked up
    ASCII case-insensitively. Prices and amounts are decimal strings → i64 at 1e-9 and sizes at
    the instrument's size_precision (``add_symbol(pair, iid, size_precision)``: the pair's
    ``base_decimals``); a value that cannot be represented is rejected alone
    (``value_errors``). ts_event = ``microtimestamp`` µs → ns."""

    def __cinit__(self, *args, **kwargs):
        self.decoder = bs_decode
        self.venue = "BITSTAMP"

    def decode_snapshot(self, body, venue_symbol, uint64_t ts_recv):
        """REST ``GET /api/v2/order_book/{pair}`` body ({"timestamp", "microtimestamp", "bids",
        "asks"}) for pair ``venue_symbol`` → CLEAR + one BOOK_DELTA per level (bids then asks),
        all with FLAG_SNAPSHOT, ts_event = microtimestamp, sequence = microtimestamp (µs), FLAG_LAST
        on the final record; first_seq = last_seq = microtimestamp. Returns the record count.
        Raises UnknownInstrumentError (field "symbol", offset -1) before looking at the body,
        then the errors of ``decode``."""
        cdef bytes k = as_bytes(venue_symbol)
        cdef bytes b = as_bytes(body)
        cdef CState* s = &self.st
        cdef SymEntry* e = sym_find(s, <const uint8_t*>PyBytes_AS_STRING(k), len(k))
        begin_frame(s, <const uint8_t*>PyBytes_AS_STRING(b), len(b), ts_recv)
        if e == NULL:
            raise UnknownInstrumentError(self.venue, f"unknown symbol {k.decode('utf-8', 'replace')!r}", "symbol", -1)
        s.instrument_id = e.id
        s.size_precision = e.size_precision
        if bs_snapshot(s) < 0:
            self._raise()
        s.counts[s.kind] += 1
        return s.nrec
