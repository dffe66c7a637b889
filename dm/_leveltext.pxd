# cython: language_level=3
"""Rendered text of book levels, cached by (price, size): venue checksums (Kraken "Book
Checksum", OKX "Checksum") are CRC32s of the top levels written as text, and between two updates
nearly all of those levels are the same, so each is rendered once and copied after. One
``LevelText`` per book (its sync owns it); direct-mapped, ``LEVEL_TEXT_SLOTS`` slots::

    cache.use(params)                    # the rendering parameters (decimals): a change empties it
    s = cache.slot(price, size)
    if s.len and s.price == price and s.size == size: p = cache.copy(p, s)
    else: render, then cache.keep(s, price, size, text, n)

``copy`` writes ``LEVEL_TEXT_MAX + 1`` bytes at p whatever the text's length (one fixed-size
copy, no libc call) and returns p + len: the caller's buffer needs that much room past p.
"""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef enum:
    LEVEL_TEXT_SLOTS = 256       # power of two
    LEVEL_TEXT_MAX = 46          # longest text kept (longer ones are rendered every time)

ctypedef struct LevelTextSlot:
    int64_t price                # 1e-9 fixed point
    uint64_t size                # at the book's size precision
    uint8_t len                  # 0: empty
    char text[LEVEL_TEXT_MAX + 1]


cdef class LevelText:
    cdef LevelTextSlot* slots
    cdef uint64_t params
    cdef public uint64_t hits, misses

    cdef inline void use(self, uint64_t params) noexcept nogil:
        cdef Py_ssize_t i
        if params != self.params:
            for i in range(LEVEL_TEXT_SLOTS):
                self.slots[i].len = 0
            self.params = params

    cdef inline LevelTextSlot* slot(self, int64_t price, uint64_t size) noexcept nogil:
        cdef uint64_t h = <uint64_t>price * <uint64_t>0x9E3779B97F4A7C15 + size   # a murmur3-style mix:
        h ^= h >> 31                                                              # nearby prices and
        h *= <uint64_t>0xC2B2AE3D27D4EB4F                                         # sizes spread out
        h ^= h >> 29
        return &self.slots[h & (LEVEL_TEXT_SLOTS - 1)]

    cdef inline void keep(self, LevelTextSlot* s, int64_t price, uint64_t size, const char* text,
                          Py_ssize_t n) noexcept nogil:
        if n <= LEVEL_TEXT_MAX:
            s.price = price
            s.size = size
            s.len = <uint8_t>n
            memcpy(s.text, text, n)

    cdef inline char* copy(self, char* p, const LevelTextSlot* s) noexcept nogil:
        memcpy(p, s.text, LEVEL_TEXT_MAX + 1)
        self.hits += 1
        return p + s.len
