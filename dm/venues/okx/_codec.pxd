# cython: language_level=3
"""Declaration of OkxCodec so other Cython modules can cimport it."""
from dm._codec cimport _Codec


cdef class OkxCodec(_Codec):
    pass
