# cython: language_level=3
"""Declaration of BitstampCodec so other Cython modules can cimport it."""
from dm._codec cimport _Codec


cdef class BitstampCodec(_Codec):
    pass
