# cython: language_level=3
"""Declaration of DeribitCodec so other Cython modules can cimport it."""
from dm._codec cimport _Codec


cdef class DeribitCodec(_Codec):
    pass
