# cython: language_level=3
"""``LevelText``: rendered text of book levels cached by (price, size) (see ``dm/_leveltext.pxd``)."""
from libc.stdlib cimport calloc, free


cdef class LevelText:
    """``LevelText()``: an empty cache of ``LEVEL_TEXT_SLOTS`` level texts (about 14 KiB), for
    one book's checksum rendering (``dm.venues.kraken._checksum``, ``dm.venues.okx._checksum``).
    ``hits``/``misses`` count lookups that found / rendered the text."""

    def __cinit__(self):
        self.slots = <LevelTextSlot*>calloc(LEVEL_TEXT_SLOTS, sizeof(LevelTextSlot))
        if self.slots == NULL:
            raise MemoryError()
        self.params = 0
        self.hits = self.misses = 0

    def __dealloc__(self):
        free(self.slots)
        self.slots = NULL
