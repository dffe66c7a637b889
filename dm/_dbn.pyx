# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Databento Binary Encoding (DBN v1, v2, v3) → dm records, in one pass over the raw bytes.

Source of the format: Databento's DBN specification and its reference implementation
(databento/dbn, ``rust/dbn/src/record.rs`` for record layouts, ``decode/dbn/fsm.rs`` for the
metadata header per version). All integers are little-endian.

Metadata header: ``b"DBN"`` + version byte, u32 length of the rest, then dataset (16-byte
cstr), schema u16 (0xFFFF mixed), start u64, end u64, limit u64, [v1: record_count u64],
stype_in u8, stype_out u8, ts_out u8, [v2+: symbol_cstr_len u16; v1: 22], reserved (v1 47,
v2+ 53 bytes), schema_definition_length u32 (0), then four lists (symbols, partial, not_found:
u32 count + cstrs; mappings: u32 count + (raw_symbol cstr, u32 interval count, intervals of
(start_date u32 YYYYMMDD, end_date u32, symbol cstr))). Records follow at ``8 + length``.

Conversions (prices are DBN's i64 at 1e-9 unchanged; DBN sizes are u32 counts (contracts,
shares) kept at their native scale: dm u64 with ``size_precision`` 0, so a DBN size is the same
integer in dm; bar volumes likewise (<= i64 max, storable); timestamps ns unchanged;
publisher_id and instrument_id are DBN's):

=================  ===========================================================================
DBN rtype          dm records
=================  ===========================================================================
0x00 trades        TRADE (price, size, aggressor side, flags, ts_recv, sequence; trade_id 0)
                   + MBP_EVENT (action, depth, ts_in_delta, ...)
0x01 mbp-1 / tbbo  BBO (top level px/sz/ct, flags, ts_recv, sequence) + MBP_EVENT
0x0A mbp-10        DEPTH (10 levels px/sz, n_bid/n_ask = leading levels with a price, flags,
                   ts_recv, sequence) + MBP_EVENT (event + order counts of the 10 levels)
0x20-0x23 ohlcv    BAR, interval_s 1 / 60 / 3600 / 86400 (volume * 10**9; CodecError when it
                   exceeds u64); v1's deprecated 0x11 takes the interval from the schema
0x13 definition    INSTRUMENT_DEF (see "Instrument definitions" below) + ``definitions``
0x16 symbol map    updates ``symbols`` (live gateway; no record)
anything else      counted in ``skipped`` (no record)
=================  ===========================================================================

``events=False`` leaves out the MBP_EVENT companions (then trades/mbp-1/mbp-10 lose action,
depth, ts_in_delta, the event's price/size/side and DEPTH's order counts).

Instrument definitions (InstrumentDefMsg: v1 360 B, v2 400 B, v3 520 B; field offsets per version
from DBN's record layouts, databento/dbn ``rust/dbn/src/compat.rs`` / ``record.rs``) become one
INSTRUMENT_DEF record (``dm/_records.pxd``) each, keeping DBN's native values:

========================  ==================================================================
INSTRUMENT_DEF field      from the DBN definition
========================  ==================================================================
header                    DBN's (publisher_id, instrument_id, ts_event: the definition's time)
ts_recv                   ts_recv
min_price_increment       min_price_increment (tick size, 1e-9; UNDEF_PRICE kept)
display_factor            display_factor (1e-9)
lot_size                  min_lot_size_round_lot (size_precision 0; 0 when DBN has none:
                          <= 0 or i32 max)
contract_multiplier       unit_of_measure_qty (1e-9: e.g. 50 for ES); when undefined, DBN's
                          i32 contract_multiplier x 1e9; else UNDEF_PRICE
strike_price              strike_price (UNDEF_PRICE kept)
expiration, activation    expiration, activation (ns; UNDEF_TIMESTAMP kept)
size_precision            0: DBN's sizes are integer counts, kept native
price_precision           decimals of min_price_increment (9 when undefined)
instrument_class          instrument_class (DBN char: F, C, P, K, ...)
symbol, raw_symbol        raw_symbol (Databento symbols are native: ``ESU4``)
exchange                  exchange (the MIC, ``XCME``); the dataset when DBN leaves it empty
underlying                underlying
base, quote               asset (``ES``), currency (``USD``)
========================  ==================================================================

A definition whose raw symbol is longer than the record's 48 bytes produces no record; it is
listed in ``rejected`` (instrument_id, raw_symbol, reason), never truncated.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF
from libc.string cimport memcpy, memset

from dm._records cimport *

import datetime
from collections import namedtuple

from dm.errors import CodecError, DbnError  # DbnError re-exported
import struct as _struct

# INSTRUMENT_DEF record (dm/_records.pxd InstrumentDefRecord, 256 B)
_DEF_OUT = _struct.Struct("<BBHIQQqqqqqQQBBBB4x48s24s48s24s12s12s")
# DBN InstrumentDefMsg per version: (size, ts_recv, min_price_increment, display_factor,
# expiration, activation, unit_of_measure_qty, strike_price, min_lot_size_round_lot (i32),
# contract_multiplier (i32), (currency, len), (raw_symbol, len), (exchange, len), (asset, len),
# (underlying, len), instrument_class)
_DEF_LAYOUT = {
    1: (360, 16, 24, 32, 40, 48, 88, 328, 148, 160, (186, 4), (200, 22), (243, 5), (248, 7), (300, 21), 325),
    2: (400, 16, 24, 32, 40, 48, 88, 112, 156, 164, (186, 4), (200, 71), (292, 5), (297, 7), (349, 21), 374),
    3: (520, 16, 24, 32, 40, 48, 80, 104, 168, 176, (224, 4), (238, 71), (330, 5), (335, 11), (391, 21), 487),
}
_I32_MAX = 2147483647
_UNDEF_PRICE = 9223372036854775807

cdef extern from "Python.h":
    # new reference / resize in place: the output is written straight into the bytes object
    PyObject *_new_bytes "PyBytes_FromStringAndSize"(const char *, Py_ssize_t) except NULL
    int _PyBytes_Resize(PyObject **, Py_ssize_t) except -1

cdef extern from *:
    """
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    #error "dm._dbn reads DBN's little-endian fields with native loads"
    #endif
    """

VENUE = "DATABENTO"


DbnDefinition = namedtuple(
    "DbnDefinition",
    "instrument_id publisher_id ts_event ts_recv raw_symbol min_price_increment display_factor",
)
DbnDefinition.__doc__ = """From a DBN instrument definition record (rtype 0x13): ids, ns
timestamps, raw symbol, ``min_price_increment`` (tick, i64 at 1e-9, UNDEF_PRICE when none) and
``display_factor`` (i64 at 1e-9)."""

# DBN Schema (u16) and SType (u8) ids, as in dbn's enums.rs
SCHEMA_NAMES = (
    "mbo", "mbp-1", "mbp-10", "tbbo", "trades", "ohlcv-1s", "ohlcv-1m", "ohlcv-1h", "ohlcv-1d",
    "definition", "statistics", "status", "imbalance", "ohlcv-eod", "cmbp-1", "cbbo-1s",
    "cbbo-1m", "tcbbo", "bbo-1s", "bbo-1m",
)
STYPE_NAMES = (
    "instrument_id", "raw_symbol", "smart", "continuous", "parent", "nasdaq_symbol",
    "cms_symbol", "isin", "us_code", "bbg_comp_id", "bbg_comp_ticker", "figi", "figi_ticker",
)
cdef dict _LEGACY_OHLCV_INTERVAL = {5: 1, 6: 60, 7: 3600, 8: 86400}

# DBN rtypes
cdef enum:
    DBN_MBP_0 = 0x00
    DBN_MBP_1 = 0x01
    DBN_MBP_10 = 0x0A
    DBN_OHLCV_DEPRECATED = 0x11
    DBN_INSTRUMENT_DEF = 0x13
    DBN_SYMBOL_MAPPING = 0x16
    DBN_ERROR = 0x15
    DBN_SYSTEM = 0x17
    DBN_OHLCV_1S = 0x20
    DBN_OHLCV_1M = 0x21
    DBN_OHLCV_1H = 0x22
    DBN_OHLCV_1D = 0x23

# DBN record sizes (identical in v1, v2 and v3 for these)
cdef enum:
    DBN_HEADER_LEN = 16
    DBN_TRADE_LEN = 48
    DBN_MBP1_LEN = 80
    DBN_MBP10_LEN = 368
    DBN_OHLCV_LEN = 56
    PRELUDE_LEN = 8
    METADATA_FIXED_LEN = 100     # after the prelude, up to schema_definition_length

# worst case output bytes per input byte: a 48 B trade → 64 B TRADE + 136 B MBP_EVENT
cdef enum:
    MAX_OUT_PER_RECORD = 200
    MIN_CONVERTED_LEN = 48

cdef enum:
    ST_METADATA = 0
    ST_RECORDS = 1

# _convert status codes (> 0: stopped at a record Python must handle; < 0: error)
cdef enum:
    S_DONE = 0
    S_PYTHON = 1
    E_SHORT = -1          # record length < 16
    E_LENGTH = -2         # length does not match the rtype's layout
    E_SIDE = -3
    E_ACTION = -4
    E_VOLUME = -5
    E_INTERVAL = -6

cdef int64_t SCALE = 1000000000
cdef uint64_t MAX_VOLUME = 9223372036854775807ULL   # i64 max: storable (BIGINT)
cdef uint64_t SZ = 1                               # DBN sizes are kept native (size_precision 0)

cdef inline uint16_t ld16(const uint8_t *p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v

cdef inline uint32_t ld32(const uint8_t *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v

cdef inline uint64_t ld64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v

cdef inline bint side_ok(uint8_t s) noexcept nogil:
    return s == SIDE_ASK or s == SIDE_BID or s == SIDE_NONE

cdef inline bint action_ok(uint8_t a) noexcept nogil:
    return (a == ACTION_ADD or a == ACTION_MODIFY or a == ACTION_CANCEL or a == ACTION_CLEAR
            or a == ACTION_TRADE or a == ACTION_FILL or a == ACTION_NONE)

cdef inline void put_header(RecordHeader *hd, uint8_t rtype, uint32_t size,
                            const uint8_t *q) noexcept nogil:
    hd.length = <uint8_t>(size // 4)
    hd.rtype = rtype
    hd.publisher_id = ld16(q + 2)
    hd.instrument_id = ld32(q + 4)
    hd.ts_event = ld64(q + 8)

cdef inline uint8_t *put_event(uint8_t *o, const uint8_t *q, int nlevels) noexcept nogil:
    """MBP_EVENT from the common MBP prefix (q+16..q+47) and ``nlevels`` BidAskPairs at q+48."""
    cdef MbpEventRecord *e = <MbpEventRecord *>o
    cdef int i
    put_header(&e.hd, RTYPE_MBP_EVENT, sizeof(MbpEventRecord), q)
    e.ts_recv = ld64(q + 32)
    e.price = <int64_t>ld64(q + 16)
    e.size = <uint64_t>ld32(q + 24) * SZ
    e.sequence = ld32(q + 44)
    e.ts_in_delta = <int32_t>ld32(q + 40)
    e.action = q[28]
    e.side = q[29]
    e.flags = q[30]
    e.depth = q[31]
    for i in range(nlevels):
        e.bid_ct[i] = ld32(q + 48 + 32 * i + 24)
        e.ask_ct[i] = ld32(q + 48 + 32 * i + 28)
    for i in range(nlevels, DEPTH_LEVELS):
        e.bid_ct[i] = 0
        e.ask_ct[i] = 0
    return o + sizeof(MbpEventRecord)


cdef class DbnConverter:
    """Streaming DBN → dm records converter (files, and the live gateway's byte stream).

    ``DbnConverter(metadata=True, version=0, ts_out=False, events=True)``

    * ``metadata=True``: the stream starts with DBN's metadata header (files, live sessions);
      ``version``/``ts_out`` then come from it.
    * ``metadata=False``: bare records of DBN ``version`` (1, 2 or 3) with/without ``ts_out``.
    * ``events``: emit an MBP_EVENT record after each TRADE/BBO/DEPTH (lossless); False keeps
      only the TRADE/BBO/DEPTH/BAR records.
    * ``messages``: the live gateway's ErrorMsg (rtype 0x15) and SystemMsg (0x17: heartbeats,
      subscription acks, slow-reader warnings) are appended to ``messages`` as
      ``(rtype, ts_event, code, text)`` instead of being counted in ``skipped`` (the consumer
      empties the list); ``code`` is v2+'s u8 code (-1 in DBN v1, which has none). Layouts: v1
      80 B (text 64 B), v2/v3 320 B (text 302 B for errors + code + is_last, 303 B for system
      messages + code), databento/dbn ``rust/dbn/src/record.rs``.

    ``feed(data) -> bytes``: dm records (concatenated, in DBN order) for every complete DBN record
    in the bytes fed so far; an incomplete tail is kept for the next call. ``finish()`` raises
    ``DbnError`` when bytes of an incomplete header or record remain. Any corrupt or
    non-convertible input raises ``DbnError`` (a ``dm.errors.CodecError``; venue "DATABENTO",
    field, stream byte offset); the converter must not be fed again after an error.
    """

    def __cinit__(self):
        self._out = NULL
        memset(self._skipped, 0, sizeof(self._skipped))

    def __init__(self, bint metadata=True, int version=0, bint ts_out=False, bint events=True,
                 bint messages=False):
        self.events = events
        self.keep_messages = messages
        self.messages = []
        self.symbols = {}
        self.mappings = []
        self.query_symbols = []
        self.partial = []
        self.not_found = []
        self.definitions = []
        self.rejected = []
        self._pending = b""
        self._schema_id = -1
        self._legacy_interval = 0
        if metadata:
            self._state = ST_METADATA
            self.version = 0
        else:
            if version not in (1, 2, 3):
                raise ValueError(f"a bare DBN record stream needs version 1, 2 or 3, got {version}")
            self._state = ST_RECORDS
            self.version = version
            self.ts_out = ts_out

    @property
    def skipped(self) -> dict:
        """``{dbn_rtype: count}`` of DBN records that produced no dm record and were not parsed
        (status, statistics, imbalance, mbo, system/heartbeat, error, ...)."""
        return {i: self._skipped[i] for i in range(256) if self._skipped[i]}

    @property
    def pending(self) -> int:
        """Bytes of an incomplete header or record held for the next ``feed``."""
        return len(self._pending)

    def feed(self, data) -> bytes:
        """Convert the complete DBN records in ``data`` (bytes-like; may end mid-record) →
        concatenated dm records. Raises ``DbnError``."""
        cdef Py_buffer view
        cdef bytes joined
        if self._pending:
            joined = self._pending + bytes(data)
            self._pending = b""
            return self._feed_ptr(<const uint8_t *>PyBytes_AS_STRING(joined), len(joined))
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._feed_ptr(<const uint8_t *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef bytes _feed_ptr(self, const uint8_t *p, Py_ssize_t n):
        cdef Py_ssize_t pos = 0, used, m, L
        cdef int st
        cdef PyObject *out
        if self._state == ST_METADATA:
            m = self._take_metadata(p, n)
            if m < 0:     # incomplete: keep everything
                self._pending = bytes(p[:n])
                return b""
            pos = m
            self.offset += m
        # worst case size; pages past what is written are never touched, the resize gives
        # them back
        out = _new_bytes(NULL, ((n - pos) // MIN_CONVERTED_LEN + 1) * MAX_OUT_PER_RECORD)
        self._out = <uint8_t *>PyBytes_AS_STRING(<object>out)
        self._out_len = 0
        try:
            while True:
                with nogil:
                    st = self._convert(p + pos, n - pos, &used)
                pos += used
                self.offset += used
                if st == S_DONE:
                    break
                if st == S_PYTHON:
                    L = p[pos] * 4
                    self._python_record(p + pos, L, self.offset)
                    pos += L
                    self.offset += L
                    continue
                self._err = st
                self._raise(self.offset)
            if pos < n:
                self._pending = bytes(p[pos:n])
        except BaseException:
            Py_DECREF(<object>out)
            self._out = NULL
            raise
        self._out = NULL
        _PyBytes_Resize(&out, self._out_len)     # on failure it freed out and set MemoryError
        res = <bytes>out
        Py_DECREF(res)
        return res

    def finish(self) -> None:
        """End of stream: raises ``DbnError`` when an incomplete header or record is pending
        (a truncated file)."""
        cdef Py_ssize_t n = len(self._pending)
        if self._state == ST_METADATA:
            raise DbnError(VENUE, f"truncated metadata header: {self.offset + n} bytes",
                           "metadata", <Py_ssize_t>self.offset)
        if n:
            need = self._pending[0] * 4 if n else 0
            if n < DBN_HEADER_LEN:
                why = f"truncated record header: {n} of {DBN_HEADER_LEN} bytes"
            else:
                why = f"truncated record: {n} of {need} bytes (rtype {self._pending[1]:#04x})"
            raise DbnError(VENUE, why, "length", <Py_ssize_t>self.offset)

    cdef int _convert(self, const uint8_t *p, Py_ssize_t n, Py_ssize_t *used) noexcept nogil:
        """Convert complete records from p[0:n] into self._out. Sets *used to the bytes consumed
        (whole records) and returns S_DONE, S_PYTHON (p[*used] needs Python) or an E_* code with
        self._err_val set and *used at the bad record."""
        cdef Py_ssize_t off = 0, L, extra = 8 if self.ts_out else 0
        cdef const uint8_t *q
        cdef uint8_t *o = self._out + self._out_len
        cdef uint8_t rt
        cdef int i, nb, na
        cdef bint ev = self.events
        cdef uint64_t vol
        cdef TradeRecord *t
        cdef BboRecord *b
        cdef DepthRecord *d
        cdef BarRecord *r
        cdef uint32_t interval
        cdef int status = S_DONE
        while off + DBN_HEADER_LEN <= n:
            q = p + off
            L = <Py_ssize_t>q[0] * 4
            if L < DBN_HEADER_LEN:
                self._err_val = L
                status = E_SHORT
                break
            if off + L > n:
                break
            rt = q[1]
            if rt == DBN_MBP_0 or rt == DBN_MBP_1 or rt == DBN_MBP_10:
                if rt == DBN_MBP_0:
                    i = DBN_TRADE_LEN
                elif rt == DBN_MBP_1:
                    i = DBN_MBP1_LEN
                else:
                    i = DBN_MBP10_LEN
                if L != i + extra:
                    self._err_val = L
                    status = E_LENGTH
                    break
                if not side_ok(q[29]):
                    self._err_val = q[29]
                    status = E_SIDE
                    break
                if not action_ok(q[28]):
                    self._err_val = q[28]
                    status = E_ACTION
                    break
                if rt == DBN_MBP_0:
                    t = <TradeRecord *>o
                    put_header(&t.hd, RTYPE_TRADE, sizeof(TradeRecord), q)
                    t.ts_recv = ld64(q + 32)
                    t.price = <int64_t>ld64(q + 16)
                    t.size = <uint64_t>ld32(q + 24) * SZ
                    t.trade_id = 0
                    t.sequence = ld32(q + 44)
                    t.side = q[29]
                    t.flags = q[30]
                    t.size_precision = 0
                    memset(t._reserved, 0, 5)
                    o += sizeof(TradeRecord)
                    if ev:
                        o = put_event(o, q, 0)
                elif rt == DBN_MBP_1:
                    b = <BboRecord *>o
                    put_header(&b.hd, RTYPE_BBO, sizeof(BboRecord), q)
                    b.ts_recv = ld64(q + 32)
                    b.bid_px = <int64_t>ld64(q + 48)
                    b.ask_px = <int64_t>ld64(q + 56)
                    b.bid_sz = <uint64_t>ld32(q + 64) * SZ
                    b.ask_sz = <uint64_t>ld32(q + 68) * SZ
                    b.sequence = ld32(q + 44)
                    b.bid_ct = ld32(q + 72)
                    b.ask_ct = ld32(q + 76)
                    b.flags = q[30]
                    b.size_precision = 0
                    memset(b._reserved, 0, 6)
                    o += sizeof(BboRecord)
                    if ev:
                        o = put_event(o, q, 1)
                else:
                    d = <DepthRecord *>o
                    put_header(&d.hd, RTYPE_DEPTH, sizeof(DepthRecord), q)
                    d.ts_recv = ld64(q + 32)
                    d.sequence = ld32(q + 44)
                    d.flags = q[30]
                    d.size_precision = 0
                    memset(d._reserved, 0, 4)
                    nb = -1
                    na = -1
                    for i in range(DEPTH_LEVELS):
                        d.levels[i].bid_px = <int64_t>ld64(q + 48 + 32 * i)
                        d.levels[i].ask_px = <int64_t>ld64(q + 56 + 32 * i)
                        d.levels[i].bid_sz = <uint64_t>ld32(q + 64 + 32 * i) * SZ
                        d.levels[i].ask_sz = <uint64_t>ld32(q + 68 + 32 * i) * SZ
                        if nb < 0 and d.levels[i].bid_px == DM_UNDEF_PRICE:
                            nb = i
                        if na < 0 and d.levels[i].ask_px == DM_UNDEF_PRICE:
                            na = i
                    d.n_bid = <uint8_t>(DEPTH_LEVELS if nb < 0 else nb)
                    d.n_ask = <uint8_t>(DEPTH_LEVELS if na < 0 else na)
                    o += sizeof(DepthRecord)
                    if ev:
                        o = put_event(o, q, DEPTH_LEVELS)
                self.count += 2 if ev else 1
            elif (rt >= DBN_OHLCV_1S and rt <= DBN_OHLCV_1D) or rt == DBN_OHLCV_DEPRECATED:
                if L != DBN_OHLCV_LEN + extra:
                    self._err_val = L
                    status = E_LENGTH
                    break
                if rt == DBN_OHLCV_1S:
                    interval = 1
                elif rt == DBN_OHLCV_1M:
                    interval = 60
                elif rt == DBN_OHLCV_1H:
                    interval = 3600
                elif rt == DBN_OHLCV_1D:
                    interval = 86400
                else:
                    interval = self._legacy_interval
                    if interval == 0:
                        self._err_val = rt
                        status = E_INTERVAL
                        break
                vol = ld64(q + 48)
                if vol > MAX_VOLUME:
                    self._err_val = vol
                    status = E_VOLUME
                    break
                r = <BarRecord *>o
                put_header(&r.hd, RTYPE_BAR, sizeof(BarRecord), q)
                r.open = <int64_t>ld64(q + 16)
                r.high = <int64_t>ld64(q + 24)
                r.low = <int64_t>ld64(q + 32)
                r.close = <int64_t>ld64(q + 40)
                r.volume = vol * SZ
                r.interval_s = interval
                r.count = 0
                r.flags = 0
                r.size_precision = 0
                memset(r._reserved, 0, 6)
                o += sizeof(BarRecord)
                self.count += 1
            elif (rt == DBN_INSTRUMENT_DEF or rt == DBN_SYMBOL_MAPPING
                  or (self.keep_messages and (rt == DBN_ERROR or rt == DBN_SYSTEM))):
                status = S_PYTHON
                self.dbn_count += 1
                break
            else:
                self._skipped[rt] += 1
            self.dbn_count += 1
            off += L
        used[0] = off
        self._out_len = o - self._out
        return status

    cdef int _raise(self, uint64_t base) except -1:
        field, why = _REASONS[self._err]
        raise DbnError(VENUE, why.format(v=self._err_val), field, <Py_ssize_t>base)

    cdef Py_ssize_t _take_metadata(self, const uint8_t *p, Py_ssize_t n) except -2:
        """Parse the metadata header at p (stream offset 0). Returns its total length
        (prelude included) or -1 when more bytes are needed."""
        cdef uint32_t mlen
        cdef Py_ssize_t i
        for i in range(min(n, 3)):
            if p[i] != b"DBN"[i]:
                raise DbnError(VENUE, f"not DBN: starts with {bytes(p[:min(n, 4)])!r}", "magic", 0)
        if n < PRELUDE_LEN:
            return -1
        version = p[3]
        if version < 1 or version > 3:
            raise DbnError(VENUE, f"unsupported DBN version {version} (1, 2, 3 known)", "version", 3)
        mlen = ld32(p + 4)
        if mlen < METADATA_FIXED_LEN + 4:
            raise DbnError(VENUE, f"metadata length {mlen} < {METADATA_FIXED_LEN + 4}", "length", 4)
        if n < PRELUDE_LEN + <Py_ssize_t>mlen:
            return -1
        _parse_metadata(self, bytes(p[:PRELUDE_LEN + mlen]))
        self._state = ST_RECORDS
        return PRELUDE_LEN + mlen

    cdef int _python_record(self, const uint8_t *q, Py_ssize_t length, uint64_t at) except -1:
        cdef uint8_t rt = q[1]
        cdef bytes rec = bytes(q[:length])
        cdef uint32_t iid = ld32(q + 4)
        cdef Py_ssize_t extra = 8 if self.ts_out else 0
        body = length - extra
        if rt == DBN_INSTRUMENT_DEF:
            (want, o_recv, o_tick, o_disp, o_exp, o_act, o_uom, o_strike, o_lot, o_mult, cur, rsym, exch,
             asset, und, o_cls) = _DEF_LAYOUT[self.version]
            if body != want:
                raise DbnError(VENUE, f"definition record of {body} bytes, DBN v{self.version} has {want}",
                               "length", <Py_ssize_t>at)
            sym = _cstr(rec[rsym[0]:rsym[0] + rsym[1]], "raw_symbol", at + rsym[0])
            tick = <int64_t>ld64(q + <Py_ssize_t>o_tick)
            self.definitions.append(DbnDefinition(
                iid, ld16(q + 2), ld64(q + 8), ld64(q + <Py_ssize_t>o_recv), sym, tick,
                <int64_t>ld64(q + <Py_ssize_t>o_disp)))
            if sym:
                self.symbols.setdefault(iid, sym)
            self._definition_record(q, rec, at, sym, tick, o_recv, o_disp, o_exp, o_act, o_uom, o_strike, o_lot,
                                    o_mult, cur, exch, asset, und, o_cls)
        elif rt == DBN_ERROR or rt == DBN_SYSTEM:
            if self.version == 1:
                want, tlen, coff = 80, 64, -1
            else:
                want, tlen, coff = 320, (302 if rt == DBN_ERROR else 303), (318 if rt == DBN_ERROR else 319)
            if body != want:
                raise DbnError(VENUE, f"{'error' if rt == DBN_ERROR else 'system'} record of {body} bytes, "
                               f"DBN v{self.version} has {want}", "length", <Py_ssize_t>at)
            text = rec[16:16 + tlen].split(b"\0", 1)[0].decode("utf-8", "replace")
            self.messages.append((rt, ld64(q + 8), q[coff] if coff >= 0 else -1, text))
        else:   # symbol mapping (live): v1 80 B: in 16[22], out 38[22]; v2+ 176 B: out 89[71]
            if self.version == 1:
                want, soff, slen = 80, 38, 22
            else:
                want, soff, slen = 176, 89, 71
            if body != want:
                raise DbnError(VENUE, f"symbol mapping record of {body} bytes, DBN v{self.version} has {want}",
                               "length", <Py_ssize_t>at)
            sym = _cstr(rec[soff:soff + slen], "stype_out_symbol", at + soff)
            if sym:
                self.symbols[iid] = sym
        return 0


    cdef int _definition_record(self, const uint8_t *q, bytes rec, uint64_t at, str sym, int64_t tick,
                                int o_recv, int o_disp, int o_exp, int o_act, int o_uom, int o_strike,
                                int o_lot, int o_mult, tuple cur, tuple exch, tuple asset, tuple und,
                                int o_cls) except -1:
        """Append the INSTRUMENT_DEF record of a DBN definition to the output (mapping: module
        docstring)."""
        cdef int32_t lot = <int32_t>ld32(q + o_lot)
        cdef int32_t mult32 = <int32_t>ld32(q + o_mult)
        cdef int64_t mult = <int64_t>ld64(q + o_uom)
        cdef int64_t t
        cdef int pp
        exchange = _cstr(rec[exch[0]:exch[0] + exch[1]], "exchange", at + exch[0]) or (self.dataset or "")
        if len(sym) > 48 or len(exchange) > 24:
            self.rejected.append((ld32(q + 4), sym, "raw symbol longer than 48 bytes" if len(sym) > 48
                                  else "exchange longer than 24 bytes"))
            return 0
        if mult == DM_UNDEF_PRICE:
            mult = <int64_t>mult32 * SCALE if 0 < mult32 < _I32_MAX else DM_UNDEF_PRICE
        pp = FIXED_DECIMALS
        if tick != DM_UNDEF_PRICE and tick > 0:
            t = tick
            while pp > 0 and t % 10 == 0:
                t //= 10
                pp -= 1
        out = _DEF_OUT.pack(
            _DEF_OUT.size // 4, RTYPE_INSTRUMENT_DEF, ld16(q + 2), ld32(q + 4), ld64(q + 8), ld64(q + o_recv),
            tick, <int64_t>ld64(q + o_disp), <int64_t>lot if 0 < lot < _I32_MAX else 0, mult,
            <int64_t>ld64(q + o_strike), ld64(q + o_exp), ld64(q + o_act), 0, pp, q[o_cls], 0,
            sym.encode(), exchange.encode(), sym.encode(),
            _cstr(rec[und[0]:und[0] + und[1]], "underlying", at + und[0]).encode(),
            _cstr(rec[asset[0]:asset[0] + asset[1]], "asset", at + asset[0]).encode(),
            _cstr(rec[cur[0]:cur[0] + cur[1]], "currency", at + cur[0]).encode())
        memcpy(self._out + self._out_len, <const char *>out, _DEF_OUT.size)
        self._out_len += _DEF_OUT.size
        self.count += 1
        return 0


# --- error reporting (outside nogil) -----------------------------------------------------------

cdef dict _REASONS = {
    E_SHORT: ("length", "record length {v} bytes is shorter than the 16-byte header"),
    E_LENGTH: ("length", "record length {v} bytes does not match the rtype's layout"),
    E_SIDE: ("side", "side byte {v} is not 'A', 'B' or 'N'"),
    E_ACTION: ("action", "action byte {v} is not one of A M C R T F N"),
    E_VOLUME: ("volume", "volume {v} does not fit i64 (storage BIGINT)"),
    E_INTERVAL: ("rtype", "deprecated OHLCV rtype {v:#04x} in a stream whose schema is not ohlcv-1s/1m/1h/1d"),
}


def _cstr(b, field, at):
    try:
        return bytes(b).split(b"\0", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        raise DbnError(VENUE, f"non-ASCII symbol {bytes(b)!r}", field, <Py_ssize_t>at) from None


def _date(raw, field, at):
    try:
        return datetime.date(raw // 10000, raw // 100 % 100, raw % 100)
    except ValueError:
        raise DbnError(VENUE, f"bad date {raw} (YYYYMMDD)", field, at) from None


def _parse_metadata(DbnConverter c, bytes m):
    """Fill the converter's metadata fields from the complete header ``m`` (prelude included)."""
    import struct
    version = m[3]
    n = len(m)

    def need(pos, k, field):
        if pos + k > n:
            raise DbnError(VENUE, f"metadata ends inside {field} (needs {pos + k} of {n} bytes)",
                           field, pos)

    pos = PRELUDE_LEN
    c.version = version
    c.dataset = _cstr(m[pos:pos + 16], "dataset", pos)
    pos += 16
    schema, start, end, limit = struct.unpack_from("<HQQQ", m, pos)
    pos += 26
    if version == 1:
        pos += 8   # deprecated record_count
    c._schema_id = -1 if schema == 0xFFFF else schema
    if schema == 0xFFFF:
        c.schema = None
    elif schema < len(SCHEMA_NAMES):
        c.schema = SCHEMA_NAMES[schema]
    else:
        raise DbnError(VENUE, f"unknown schema id {schema}", "schema", PRELUDE_LEN + 16)
    c._legacy_interval = _LEGACY_OHLCV_INTERVAL.get(schema, 0)
    c.start = start
    c.end = None if end == 0xFFFFFFFFFFFFFFFF else end
    c.limit = limit or None
    stype_in, stype_out, ts_out = m[pos], m[pos + 1], m[pos + 2]
    c.stype_in = None if stype_in == 0xFF else (
        STYPE_NAMES[stype_in] if stype_in < len(STYPE_NAMES) else str(stype_in))
    c.stype_out = STYPE_NAMES[stype_out] if stype_out < len(STYPE_NAMES) else str(stype_out)
    c.ts_out = ts_out != 0
    pos += 3
    if version == 1:
        cstr = 22
        pos += 47
    else:
        (cstr,) = struct.unpack_from("<H", m, pos)
        if cstr == 0:
            raise DbnError(VENUE, "symbol_cstr_len is 0", "symbol_cstr_len", pos)
        pos += 2 + 53
    (sdl,) = struct.unpack_from("<I", m, pos)
    if sdl != 0:
        raise DbnError(VENUE, f"schema_definition_length {sdl} (DBN defines none)",
                       "schema_definition_length", pos)
    pos += 4
    lists = []
    for field in ("symbols", "partial", "not_found"):
        need(pos, 4, field)
        (k,) = struct.unpack_from("<I", m, pos)
        pos += 4
        need(pos, k * cstr, field)
        lists.append([_cstr(m[pos + i * cstr:pos + (i + 1) * cstr], field, pos + i * cstr)
                      for i in range(k)])
        pos += k * cstr
    c.query_symbols, c.partial, c.not_found = lists
    need(pos, 4, "mappings")
    (k,) = struct.unpack_from("<I", m, pos)
    pos += 4
    by_id_out = stype_out == 0     # raw_symbol -> instrument id
    by_id_in = stype_in == 0       # instrument id -> symbol
    for _ in range(k):
        need(pos, cstr + 4, "mappings")
        raw = _cstr(m[pos:pos + cstr], "mappings", pos)
        (ni,) = struct.unpack_from("<I", m, pos + cstr)
        pos += cstr + 4
        need(pos, ni * (8 + cstr), "mappings")
        for _ in range(ni):
            d0, d1 = struct.unpack_from("<II", m, pos)
            sym = _cstr(m[pos + 8:pos + 8 + cstr], "mappings", pos + 8)
            c.mappings.append((raw, _date(d0, "mappings", pos), _date(d1, "mappings", pos + 4), sym))
            try:
                if by_id_out and sym:
                    c.symbols[int(sym)] = raw
                elif by_id_in and raw:
                    c.symbols[int(raw)] = sym
            except ValueError:
                raise DbnError(VENUE, f"mapping of {raw!r} names instrument id {sym!r}, not a number",
                               "mappings", pos + 8) from None
            pos += 8 + cstr


def _struct_layout() -> dict:
    """``sizeof``/field offsets of the C structs this module writes that are new in dm
    (``MbpEventRecord``): tests compare them with ``dm.records.MBP_EVENT_DTYPE``."""
    cdef MbpEventRecord e
    cdef size_t base = <size_t>&e
    return {
        "itemsize": sizeof(MbpEventRecord),
        "ts_event": <size_t>&e.hd.ts_event - base,
        "ts_recv": <size_t>&e.ts_recv - base,
        "price": <size_t>&e.price - base,
        "size": <size_t>&e.size - base,
        "sequence": <size_t>&e.sequence - base,
        "ts_in_delta": <size_t>&e.ts_in_delta - base,
        "action": <size_t>&e.action - base,
        "side": <size_t>&e.side - base,
        "flags": <size_t>&e.flags - base,
        "depth": <size_t>&e.depth - base,
        "bid_ct": <size_t>&e.bid_ct[0] - base,
        "ask_ct": <size_t>&e.ask_ct[0] - base,
    }
