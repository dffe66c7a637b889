# cython: language_level=3
"""Declarations of dm._codec (frame -> fixed-size records) so other Cython modules can cimport
the codec classes and call ``decode_c`` / read the output buffer without Python overhead."""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    SYM_MAX = 59          # longest venue symbol (bytes) the symbol table stores
    N_KINDS = 32


cdef struct SymEntry:     # 64 B open-addressing slot; klen == 0 means empty
    uint32_t id
    uint8_t klen
    char key[SYM_MAX]


cdef struct CState:
    # the frame being decoded (valid only during one decode call)
    const uint8_t* p
    Py_ssize_t n
    uint64_t ts_recv
    uint16_t publisher_id
    int venue
    # output: concatenated records of the last decode
    char* out
    Py_ssize_t out_len
    Py_ssize_t out_cap
    int nrec
    Py_ssize_t last_rec           # byte offset of the last record written
    int exports                   # live buffer exports of `out` (memoryviews)
    char** retired                # old output buffers kept alive while exported
    int n_retired
    int cap_retired
    # symbol table: venue symbol (ASCII case-insensitive) -> instrument_id
    SymEntry* sym
    Py_ssize_t sym_cap
    Py_ssize_t sym_count
    # results of the last decode
    int kind
    uint32_t instrument_id
    uint64_t first_seq
    uint64_t last_seq
    int64_t checksum
    uint64_t counts[N_KINDS]
    # error of the last decode (0 = none); turned into an exception at one edge (_raise)
    int err
    Py_ssize_t err_off
    const char* err_field
    const char* err_reason
    Py_ssize_t sym_off
    Py_ssize_t sym_len


cdef class _Codec:
    cdef CState st
    cdef readonly str venue
    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1
    cdef int _raise(self) except -1


cdef class BinanceCodec(_Codec):
    pass


cdef class KrakenCodec(_Codec):
    pass


cdef class KrakenFuturesCodec(_Codec):
    pass
