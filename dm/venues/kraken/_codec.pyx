# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kraken spot websocket API v1 frames -> dm records (the venue half of ``KrakenCodec``; the
shared scanner is ``dm/_scan.pxd``, the base class ``dm._codec._Codec``)."""
from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp

from dm._records cimport *
from dm._scan cimport *
from dm._codec cimport _Codec

from dm.errors import UnknownInstrumentError


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
    """Array of [price, volume, timestamp(, "r")] strings; ts_event = the level's timestamp. A
    level whose price or volume cannot be represented is rejected alone (value_reject: the
    provider keeps it for the checksum, ``KrakenBookSync.on_rejected``) and skipped."""
    cdef Py_ssize_t endp = 0, w, e
    cdef Py_ssize_t el[3]
    cdef int64_t px
    cdef uint64_t ts, sz
    cdef int rp, rs
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", field, w)
        if arr_collect(s, w, el, 3) < 3:
            return e_codec(s, ERR_CODEC, b"expected [price, volume, timestamp]", field, w)
        rp = get_px_str(s, el[0], field, &px)
        if rp < 0:
            return -1
        rs = get_sz_str(s, el[1], field, &sz)
        if rs < 0:
            return -1
        if get_ts_str(s, el[2], field, &ts) < 0:
            return -1
        if rp == 0 and rs == 0 and emit_level(s, ts, px, sz, 0, side, flags) < 0:
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
    ts_event = time, side 'b' -> 'B', 's' -> 'A', trade_id 0 (v1 has none), sequence = how many
    fills identical to this one (time, price, volume, side) precede it in the frame's array
    (counted back over the fills of the same time; 0 for almost every fill). Two identical fills
    of one frame stay two rows (the storage dedup key hashes the sequence), a replay of the same
    frames gives the same sequences (a re-ingest deduplicates), and so does the REST gap filler,
    which decodes its pages as frames (dm.venues.kraken.filler). A trade whose price or volume
    cannot be represented is rejected alone (value_reject)."""
    cdef Py_ssize_t endp = 0, w, e, a, b
    cdef Py_ssize_t start = s.out_len, j
    cdef uint64_t dup
    cdef const TradeRecord* prev
    cdef Py_ssize_t el[4]
    cdef int64_t px
    cdef uint64_t ts, sz
    cdef uint8_t side
    cdef int rp, rs
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"trade", v)
    w = arr_first(s, v, 0, &endp)
    while w > 0:
        if s.p[w] != 91:
            return e_codec(s, ERR_CODEC, b"expected an array", b"trade", w)
        if arr_collect(s, w, el, 4) < 4:
            return e_codec(s, ERR_CODEC, b"expected [price, volume, time, side, ...]", b"trade", w)
        rp = get_px_str(s, el[0], b"trade", &px)
        if rp < 0:
            return -1
        rs = get_sz_str(s, el[1], b"trade", &sz)
        if rs < 0:
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
        if rp == 0 and rs == 0:
            dup = 0
            j = (s.out_len - start) // <Py_ssize_t>sizeof(TradeRecord)
            while j > 0:
                j -= 1
                prev = <const TradeRecord*>(s.out + start + j * <Py_ssize_t>sizeof(TradeRecord))
                if prev.hd.ts_event != ts:
                    break
                if prev.price == px and prev.size == sz and prev.side == side:
                    dup += 1
            if emit_trade(s, ts, px, sz, 0, dup, side, 0) < 0:
                return -1
        e = skip_value(s, w, 0)
        w = arr_next(s, e, &endp)
    return 0


cdef int kr_ticker_side(CState* s, Py_ssize_t v, const char* field, int64_t* px, uint64_t* sz) noexcept nogil:
    """One BBO side [price, wholeLotVolume, lotVolume]: 0, or 1 when a value was rejected alone
    (the side becomes UNDEF_PRICE / 0), -1 malformed."""
    cdef Py_ssize_t el[3]
    cdef int rp, rs
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", field, v)
    if arr_collect(s, v, el, 3) < 3:
        return e_codec(s, ERR_CODEC, b"expected [price, wholeLotVolume, lotVolume]", field, v)
    rp = get_px_str(s, el[0], field, px)
    if rp < 0:
        return -1
    rs = get_sz_str(s, el[2], field, sz)
    if rs < 0:
        return -1
    if rp or rs:
        px[0] = DM_UNDEF_PRICE
        sz[0] = 0
        return 1
    return 0


cdef int kr_ticker(CState* s, Py_ssize_t v) noexcept nogil:
    """ticker: object with b, a = [price, wholeLotVolume, lotVolume] -> BBO (price, lot
    volume), ts_event = ts_recv + FLAG_TS_EVENT_IS_RECV (the v1 ticker has no time)."""
    cdef Py_ssize_t sl[KR_N]
    cdef Py_ssize_t w
    cdef int64_t bp, ap
    cdef uint64_t bs, as_
    if s.p[v] != 123:
        return e_codec(s, ERR_CODEC, b"expected an object", b"ticker", v)
    index_obj(s, v, 0, kr_key, sl, KR_N)
    w = req(s, sl, KR_B, b"b", v)
    if w < 0 or kr_ticker_side(s, w, b"b", &bp, &bs) < 0:
        return -1
    w = req(s, sl, KR_A, b"a", v)
    if w < 0 or kr_ticker_side(s, w, b"a", &ap, &as_) < 0:
        return -1
    return emit_bbo(s, s.ts_recv, bp, bs, ap, as_, 0, FLAG_TS_EVENT_IS_RECV)


cdef int kr_spread(CState* s, Py_ssize_t v) noexcept nogil:
    """spread: [bid, ask, timestamp, bidVolume, askVolume] strings -> BBO, ts_event = timestamp."""
    cdef Py_ssize_t el[5]
    cdef int64_t bp, ap
    cdef uint64_t ts, bs, as_
    cdef int rbp, rap, rbs, ras
    if s.p[v] != 91:
        return e_codec(s, ERR_CODEC, b"expected an array", b"spread", v)
    if arr_collect(s, v, el, 5) < 5:
        return e_codec(s, ERR_CODEC, b"expected [bid, ask, timestamp, bidVolume, askVolume]", b"spread", v)
    rbp = get_px_str(s, el[0], b"spread", &bp)
    if rbp < 0:
        return -1
    rap = get_px_str(s, el[1], b"spread", &ap)
    if rap < 0:
        return -1
    if get_ts_str(s, el[2], b"spread", &ts) < 0:
        return -1
    rbs = get_sz_str(s, el[3], b"spread", &bs)
    if rbs < 0:
        return -1
    ras = get_sz_str(s, el[4], b"spread", &as_)
    if ras < 0:
        return -1
    if rbp or rbs:                  # a side with a value rejected alone: no side
        bp = DM_UNDEF_PRICE
        bs = 0
    if rap or ras:
        ap = DM_UNDEF_PRICE
        as_ = 0
    return emit_bbo(s, ts, bp, bs, ap, as_, 0, 0)


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


cdef class KrakenCodec(_Codec):
    """Kraken spot websocket API v1 frames. Events ({"event": heartbeat | systemStatus |
    subscriptionStatus | pong | error}) -> 0 records; data arrays [channelID, payload...,
    channelName, pair]: book-N snapshot/update -> BOOK_DELTA (checksum = int(c)), trade ->
    TRADE, ticker / spread -> BBO, ohlc-N -> 0 records. Symbols are wsnames ("XBT/USD").
    ``checksum``: a book update's CRC32 ``c``; ``first_seq``/``last_seq`` stay 0 (v1 has no
    sequence). Prices are i64 at 1e-9, volumes at the pair's size_precision (``add_symbol``;
    the worker registers AssetPairs ``lot_decimals``); a value that cannot be represented is
    rejected alone (``value_errors``): that level / trade / BBO side is skipped. Venue doc:
    Kraken WebSocket API v1, sections Book, Trade, Ticker, Spread."""

    def __cinit__(self, *args, **kwargs):
        self.decoder = kr_decode
        self.venue = "KRAKEN"
