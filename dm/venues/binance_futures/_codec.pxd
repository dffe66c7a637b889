# cython: language_level=3
"""Declaration of BinanceFuturesCodec so other Cython modules (COIN-M) can cimport it."""
from libc.stdint cimport uint64_t

from dm.venues.binance._codec cimport BinanceCodec


cdef class BinanceFuturesCodec(BinanceCodec):
    cdef readonly uint64_t prev_seq   # ``pu`` of the last depthUpdate (0 for other frames)
    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1
