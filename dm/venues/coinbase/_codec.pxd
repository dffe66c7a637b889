# cython: language_level=3
"""Declaration of CoinbaseCodec so other Cython modules can cimport it."""
from libc.stdint cimport int64_t, uint64_t

from dm._codec cimport _Codec


cdef struct CbFrame:              # per-frame results beyond CState (set by the decoder)
    int64_t seq_num               # Advanced Trade sequence_num, -1 when the frame has none
    int mixed                     # a level2 frame whose events name more than one product


cdef class CoinbaseCodec(_Codec):
    cdef CbFrame fr
    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1
