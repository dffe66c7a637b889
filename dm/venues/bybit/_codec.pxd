# cython: language_level=3
"""Declaration of BybitCodec so other Cython modules can cimport it."""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from dm._codec cimport _Codec


cdef struct TickerState:          # the last full ticker of one instrument (linear/inverse deltas)
    uint32_t iid
    uint8_t used
    int64_t bid_px
    int64_t ask_px
    uint64_t bid_sz
    uint64_t ask_sz
    uint64_t next_funding         # ns since the epoch, DM_UNDEF_TIMESTAMP when unknown


cdef struct TickerTable:          # open addressing on iid; cap is a power of two
    TickerState* slot
    Py_ssize_t cap
    Py_ssize_t count


cdef class BybitCodec(_Codec):
    cdef TickerTable tickers
    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1
