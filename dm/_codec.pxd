# cython: language_level=3
"""Declarations of dm._codec (the venue-independent codec base) so venue codecs subclass it and
other Cython modules can call ``decode_c`` / read the output buffer without Python overhead."""
from libc.stdint cimport uint64_t

from dm._scan cimport CState

# bytes / str (its UTF-8 bytes) / any bytes-like -> bytes (cold paths: symbols, REST bodies)
cdef bytes as_bytes(obj)

# A venue's frame decoder: fills CState (records, kind, seqs) or sets its error; 0 or -1.
ctypedef int (*decode_fn)(CState* s) noexcept nogil


cdef class _Codec:
    cdef CState st
    cdef decode_fn decoder        # set by the venue subclass's __cinit__
    cdef readonly str venue
    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1
    cdef int _raise(self) except -1
