# cython: language_level=3
"""Declaration of BinanceCodec so other Cython modules can cimport it."""
from dm._codec cimport _Codec


cdef class BinanceCodec(_Codec):
    pass
