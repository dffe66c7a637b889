# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: libraries = z
"""Kraken spot websocket v1 book checksum over dm's L2 book (``dm._book.L2Book``), read straight
from the book's level arrays (layout in ``dm/_book.pxd``)."""
from libc.stdint cimport int64_t, uint32_t, uint64_t

from dm._book cimport BookSide, L2Book
from dm._booksync cimport FastChecksum
from dm._leveltext cimport LevelText, LevelTextSlot
from dm._records cimport FIXED_DECIMALS

from dm.errors import BookError

cdef extern from "dm_crc32.h" nogil:
    # zlib's CRC-32, folded with PCLMULQDQ where the CPU has it (dm/dm_crc32.h)
    uint32_t dm_crc32(uint32_t crc, const unsigned char* buf, size_t len)

cdef enum:
    DEPTH = 10                   # "Book Checksum": the top 10 asks and bids

#: levels per side the checksum covers (``dm._feed``: updates below them leave it unchanged)
CHECKSUM_DEPTH = DEPTH


cdef char* _put_scaled(char* p, uint64_t v, int drop) noexcept nogil:
    """Decimal text of ``v // 10**drop`` without leading zeros (0 gives nothing: Kraken strips
    all leading zeros). Returns NULL when one of the ``drop`` dropped digits is not 0. A
    negative ``drop`` appends that many zeros (a size held at fewer decimals than the wire's).
    Only divisions by the constant 10 (no runtime divisor)."""
    cdef char tmp[48]
    cdef int k = 0
    if v == 0:
        return p
    while drop < 0:
        tmp[k] = 48
        k += 1
        drop += 1
    while drop > 0:
        if v % 10:
            return NULL
        v //= 10
        drop -= 1
    while v:
        tmp[k] = <char>(48 + v % 10)
        v //= 10
        k += 1
    while k:
        k -= 1
        p[0] = tmp[k]
        p += 1
    return p


def book_checksum(L2Book book, int price_decimals, int size_decimals, LevelText text=None) -> int:
    """Kraken WebSocket API v1 book checksum (docs: "Book checksum") of ``book``: CRC32
    (unsigned) of the top 10 asks (ascending price) then the top 10 bids (descending), each
    level as the price then the volume written with the pair's fixed decimals, '.' removed and
    leading zeros stripped — i.e. the integers ``price * 10**price_decimals`` and
    ``size * 10**size_decimals`` as text (the decimals of the websocket strings; see
    ``dm.venues.kraken.booksync.decimals_of``); sizes are read at the book's ``size_precision``.
    ``text``: the book's ``dm._leveltext.LevelText``, levels rendered before are copied from it.
    Raises ``BookError`` when a level has more decimals than that, or a price is negative."""
    return _crc(book, price_decimals, size_decimals, text)


cdef int64_t _crc(L2Book book, int price_decimals, int size_decimals, LevelText text) except -1:
    """``book_checksum``'s CRC (u32), or -1 with ``BookError`` raised."""
    if not (0 <= price_decimals <= FIXED_DECIMALS and 0 <= size_decimals <= 18):
        raise BookError("decimals must be within 0..9 (prices) / 0..18 (sizes)")
    cdef int pdrop = FIXED_DECIMALS - price_decimals
    cdef int sdrop = book.size_precision - size_decimals
    cdef char buf[1536]
    cdef char* p = buf
    cdef char* q
    cdef BookSide* sd
    cdef Py_ssize_t i, top, cnt
    cdef int64_t px
    cdef uint64_t sz
    cdef int side_i
    cdef LevelTextSlot* s = NULL
    if text is not None:
        text.use(<uint64_t>(pdrop + 64) << 8 | <uint64_t>(sdrop + 64))   # never 0
    for side_i in range(2):
        sd = &book.asks if side_i == 0 else &book.bids
        cnt = sd.n if sd.n < DEPTH else DEPTH
        top = sd.lo + sd.n - 1
        for i in range(cnt):
            px = sd.lv[top - i].key if side_i == 1 else ~sd.lv[top - i].key  # asks: key = ~price
            sz = sd.lv[top - i].size
            if text is not None:
                s = text.slot(px, sz)
                if s.len and s.price == px and s.size == sz:
                    p = text.copy(p, s)           # buf has room: 20 levels of <= 40 bytes
                    continue
            q = NULL
            if px >= 0:
                q = _put_scaled(p, <uint64_t>px, pdrop)
            if q != NULL:
                q = _put_scaled(q, sz, sdrop)
            if q == NULL:
                raise BookError(f"level {px}/{sz} does not fit {price_decimals}/"
                                f"{size_decimals} decimals")
            if text is not None:
                text.keep(s, px, sz, p, q - p)
                text.misses += 1
            p = q
    return dm_crc32(0, <const unsigned char*>buf, <size_t>(p - buf))


cdef class KrakenChecksum(FastChecksum):
    """``KrakenChecksum(price_decimals, size_decimals, text)``: :func:`book_checksum` with the
    pair's decimals and the book's ``LevelText``, called by the C frame path (``dm._feed``)
    through ``FastChecksum.matches`` (the venue's ``c`` as u32). Raises ``BookError`` as
    :func:`book_checksum`."""
    cdef int price_decimals, size_decimals
    cdef LevelText text

    def __init__(self, int price_decimals, int size_decimals, LevelText text=None):
        if not (0 <= price_decimals <= FIXED_DECIMALS and 0 <= size_decimals <= 18):
            raise BookError("decimals must be within 0..9 (prices) / 0..18 (sizes)")
        self.price_decimals = price_decimals
        self.size_decimals = size_decimals
        self.text = text

    cdef int matches(self, L2Book book, int64_t checksum) except -1:
        return _crc(book, self.price_decimals, self.size_decimals, self.text) == checksum
