# cython: language_level=3
"""bench only (compiled by bench/bench_client.py with pyximport): the record-object design dm did
NOT pick, for the same-run comparison — a Trade that keeps the record's ``bytes`` and decodes a
field from them on access, instead of copying the struct into itself (dm/_recobj.pyx)."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, int64_t
from dm._records cimport TradeRecord


cdef class TradeB:
    cdef bytes b
    cdef const TradeRecord *p

    @staticmethod
    cdef TradeB _new(bytes b):
        cdef TradeB o = TradeB.__new__(TradeB)
        o.b = b
        o.p = <const TradeRecord *>PyBytes_AS_STRING(b)
        return o

    @property
    def ts_recv(self):
        return self.p.ts_recv

    @property
    def price(self):
        return self.p.price

    @property
    def size(self):
        return self.p.size


def from_ptr_bytes(const uint8_t[::1] buf):
    """As a reader would: the record's bytes are made from the ring copy, then wrapped."""
    return TradeB._new(PyBytes_FromStringAndSize(<const char *>&buf[0], buf.shape[0]))


def from_bytes(bytes b):
    return TradeB._new(b)
