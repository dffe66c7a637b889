# cython: language_level=3
"""Declarations of dm/_recobj.pyx: record objects over a copy of the record struct, so other
Cython modules can build them straight from a record in memory (``record_from_ptr``)."""
from libc.stdint cimport uint8_t, uint16_t
from dm._records cimport *


cdef class Record:
    cdef const uint8_t *_p   # the struct copied into the object (set by each kind's __cinit__)
    cdef uint16_t _n         # its size in bytes
    cdef tuple values(self)


cdef class Trade(Record):
    cdef TradeRecord r
    @staticmethod
    cdef Trade _new(const uint8_t *p)


cdef class Bbo(Record):
    cdef BboRecord r
    @staticmethod
    cdef Bbo _new(const uint8_t *p)


cdef class Depth(Record):
    cdef DepthRecord r
    @staticmethod
    cdef Depth _new(const uint8_t *p)


cdef class BookDelta(Record):
    cdef BookDeltaRecord r
    @staticmethod
    cdef BookDelta _new(const uint8_t *p)


cdef class Bar(Record):
    cdef BarRecord r
    @staticmethod
    cdef Bar _new(const uint8_t *p)


cdef class MbpEvent(Record):
    cdef MbpEventRecord r
    @staticmethod
    cdef MbpEvent _new(const uint8_t *p)


cdef class Gap(Record):
    cdef GapRecord r
    @staticmethod
    cdef Gap _new(const uint8_t *p)


cdef class Statistic(Record):
    cdef StatRecord r
    @staticmethod
    cdef Statistic _new(const uint8_t *p)


cdef class InstrumentDef(Record):
    cdef InstrumentDefRecord r
    @staticmethod
    cdef InstrumentDef _new(const uint8_t *p)


cdef object record_from_ptr(const uint8_t *p, Py_ssize_t n)
