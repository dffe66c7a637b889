# cython: language_level=3
"""Declaration of KrakenCodec so other Cython modules can cimport it."""
from dm._codec cimport _Codec


cdef class KrakenCodec(_Codec):
    pass
