# cython: language_level=3
"""Databento DBN (v1, v2, v3) → dm records: the streaming converter, declared for cimport."""
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t


cdef class DbnConverter:
    # metadata (None / 0 until the DBN metadata header was read; set by the constructor for a
    # bare record stream)
    cdef readonly int version            # DBN version 1, 2 or 3
    cdef readonly bint ts_out            # each record carries an 8-byte send timestamp at its end
    cdef readonly bint events            # emit an MBP_EVENT after each TRADE/BBO/DEPTH
    cdef readonly bint keep_messages     # ErrorMsg / SystemMsg → messages instead of skipped
    cdef readonly list messages          # [(rtype, ts_event, code, text)] (live gateway messages)
    cdef readonly object dataset         # e.g. "GLBX.MDP3"
    cdef readonly object schema          # e.g. "mbp-1"; None when mixed/unknown
    cdef readonly object stype_in        # e.g. "raw_symbol"; None when mixed
    cdef readonly object stype_out
    cdef readonly object start           # ns since the epoch
    cdef readonly object end             # ns since the epoch, None when undefined
    cdef readonly object limit           # record limit of the request, None when none
    cdef readonly dict symbols           # instrument_id -> raw symbol
    cdef readonly list mappings          # [(raw_symbol, start_date, end_date, symbol), ...]
    cdef readonly list query_symbols     # metadata "symbols" (the request's symbol list)
    cdef readonly list partial
    cdef readonly list not_found
    cdef readonly list definitions       # DbnDefinition tuples from definition records
    cdef readonly list rejected          # [(instrument_id, raw_symbol, reason)]: definitions that
                                         # do not fit an INSTRUMENT_DEF record (no record emitted)
    cdef readonly uint64_t count         # dm records produced
    cdef readonly uint64_t dbn_count     # DBN records read (converted, skipped or parsed)
    cdef readonly uint64_t offset        # stream bytes consumed so far (metadata included)

    cdef int _state
    cdef int _schema_id
    cdef uint32_t _legacy_interval       # interval_s for the deprecated v1 OHLCV rtype 0x11
    cdef bytes _pending                  # an incomplete record/metadata carried to the next feed
    cdef uint8_t *_out
    cdef Py_ssize_t _out_len
    cdef uint64_t _skipped[256]
    cdef int _err
    cdef uint64_t _err_val

    cdef bytes _feed_ptr(self, const uint8_t *p, Py_ssize_t n)
    cdef int _convert(self, const uint8_t *p, Py_ssize_t n, Py_ssize_t *used) noexcept nogil
    cdef Py_ssize_t _take_metadata(self, const uint8_t *p, Py_ssize_t n) except -2
    cdef int _python_record(self, const uint8_t *q, Py_ssize_t length, uint64_t at) except -1
    cdef int _definition_record(self, const uint8_t *q, bytes rec, uint64_t at, str sym, int64_t tick,
                                int o_recv, int o_disp, int o_exp, int o_act, int o_uom, int o_strike,
                                int o_lot, int o_mult, tuple cur, tuple exch, tuple asset, tuple und,
                                int o_cls) except -1
    cdef int _raise(self, uint64_t base) except -1
