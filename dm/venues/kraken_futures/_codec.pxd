# cython: language_level=3
"""Declaration of KrakenFuturesCodec so other Cython modules can cimport it."""
from dm._codec cimport _Codec


cdef class KrakenFuturesCodec(_Codec):
    pass
