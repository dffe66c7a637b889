# cython: language_level=3
"""Declaration of CoinbaseCodec so other Cython modules can cimport it."""
from libc.stdint cimport int64_t, uint64_t

from dm._codec cimport _Codec


cdef struct CbFrame:              # per-frame results beyond CState (set by the decoder; the
    int mixed                     # sequence_num is CState.msg_seq): a level2 frame whose events
                                  # name more than one product


cdef class CoinbaseCodec(_Codec):
    cdef CbFrame fr
    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1
