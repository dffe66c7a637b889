# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kraken spot websocket v1 book checksum over dm's L2 book (``dm._book.L2Book``), read straight
from the book's level arrays (layout in ``dm/_book.pxd``)."""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint64_t

from dm._book cimport BookSide, L2Book
from dm._records cimport FIXED_DECIMALS

import zlib as _zlib

from dm.errors import BookError

_crc32 = _zlib.crc32


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


def book_checksum(L2Book book, int price_decimals, int size_decimals) -> int:
    """Kraken WebSocket API v1 book checksum (docs: "Book checksum") of ``book``: CRC32
    (unsigned) of the top 10 asks (ascending price) then the top 10 bids (descending), each
    level as the price then the volume written with the pair's fixed decimals, '.' removed and
    leading zeros stripped — i.e. the integers ``price * 10**price_decimals`` and
    ``size * 10**size_decimals`` as text (the decimals of the websocket strings; see
    ``dm.venues.kraken.booksync.decimals_of``); sizes are read at the book's ``size_precision``.
    Raises ``BookError`` when a level has more decimals than that, or a price is negative."""
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
    for side_i in range(2):
        sd = &book.asks if side_i == 0 else &book.bids
        cnt = sd.n if sd.n < 10 else 10
        top = sd.lo + sd.n - 1
        for i in range(cnt):
            px = sd.lv[top - i].key if side_i == 1 else ~sd.lv[top - i].key  # asks: key = ~price
            sz = sd.lv[top - i].size
            q = NULL
            if px >= 0:
                q = _put_scaled(p, <uint64_t>px, pdrop)
            if q != NULL:
                q = _put_scaled(q, sz, sdrop)
            if q == NULL:
                raise BookError(f"level {px}/{sz} does not fit {price_decimals}/"
                                f"{size_decimals} decimals")
            p = q
    return _crc32(PyBytes_FromStringAndSize(buf, p - buf))
