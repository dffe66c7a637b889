# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Venue websocket frames -> dm records (DESIGN.md section 2), one call per frame: the
venue-independent half of every codec.

``_Codec`` is the base of the venue codecs (``dm/venues/<venue>/_codec.pyx``: ``BinanceCodec``,
``KrakenCodec``, ``KrakenFuturesCodec``, found through ``dm.venues.venue(kind).codec_class()``).
A venue codec turns one websocket text frame (``bytes``, ``str`` or any bytes-like object) into
fixed-size records (``dm/_records.pxd``): TRADE (64 B), BBO (80 B), BOOK_DELTA (56 B). Records of
the last ``decode`` are concatenated in the codec's output buffer (``output()``); each record's
size is ``byte0 * 4``. This module holds what they share: the decode entry, the output buffer and
its buffer protocol, the one edge where status codes become exceptions, per-kind counts, the
symbol table API, ``KIND_NAMES``/``KINDS`` and ``parse_price``/``parse_size``. The JSON scanner,
fixed point and record writers are ``cdef inline`` in ``dm/_scan.pxd``, compiled into each
venue module.

Units: ``ts_event``/``ts_recv`` u64 ns since the UNIX epoch; prices i64 and sizes u64 in fixed
point 1e-9, parsed straight from the decimal text (never through float).

Decoding is a bounded, non-recursive scan. Rules shared with the pure-Python oracle
``dm/codec_ref.py`` (tests check both give identical records and identical errors):

* The whole frame must be strict JSON (RFC 8259; nesting depth <= 32; bytes >= 0x80 inside
  strings are taken as they are). A syntax error wins over any other error and is reported as
  ``CodecError(venue, "invalid JSON: unexpected byte 0xNN" | "invalid JSON: unexpected end of
  frame" | "invalid JSON: nesting too deep", None, offset)`` where offset is the first byte at
  which the frame stops being a prefix of some valid JSON text.
* Keys are compared by their raw bytes (a key written with escapes matches nothing); a
  duplicated key: the last one wins.
* Then fields are checked in a fixed order per message type (documented on each function);
  a missing field is reported at the offset of the enclosing object, any other problem at the
  offset of the value. ``FixedPointError`` for decimals that are malformed, have more than 9
  significant fractional digits, are negative where a size is expected, or do not fit
  (i64 prices, u64 sizes); ``UnknownInstrumentError`` for a symbol not in the map.
* ``BOOK_DELTA`` frames set ``FLAG_LAST`` on the final record of the frame. Snapshots start with
  a CLEAR record (side 'N', price UNDEF_PRICE, size 0, action 'R') and flag every record
  ``FLAG_SNAPSHOT``. A level with size 0 is action CANCEL, otherwise ADD.
"""
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_Check
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_ND, PyBUF_FORMAT
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset
from libc.stdlib cimport malloc, free

from dm._scan cimport *

from dm.errors import CodecError, FixedPointError, UnknownInstrumentError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL

KIND_NAMES = (
    "none", "aggTrade", "trade", "bookTicker", "depthUpdate", "depthSnapshot", "kline",
    "heartbeat", "status", "subscription", "ticker", "spread", "book", "bookSnapshot",
    "tradeSnapshot", "tickerLite", "info", "pong", "ohlc", "error",
    # 20-27: kept for the other venue kinds being added; 28-29: Binance futures
    "k20", "k21", "k22", "k23", "k24", "k25", "k26", "k27", "liquidation",
)
KINDS = {name: i for i, name in enumerate(KIND_NAMES)}

cdef const char* FMT_B = b"B"


# ---------------------------------------------------------------------------------------------
# Python API


cdef bytes as_bytes(obj):
    if isinstance(obj, bytes):
        return <bytes>obj
    if isinstance(obj, str):
        return (<str>obj).encode()
    return bytes(obj)


def parse_price(text) -> int:
    """Decimal text (bytes/str, e.g. b"-0.21448000", b"2.5E+3") -> i64 price at 1e-9, exact.

    Raises ``FixedPointError`` (venue "decimal", offset 0) when the text is not a decimal, has
    more than 9 significant fractional digits or does not fit in i64."""
    cdef bytes b = as_bytes(text)
    cdef int64_t out = 0
    cdef const char* r = parse_fixed(<const uint8_t*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), 1, &out)
    if r != NULL:
        raise FixedPointError("decimal", r.decode(), None, 0)
    return out


def parse_size(text, int size_precision=9) -> int:
    """Decimal text -> size at 10**-size_precision (0..18), exact. Raises ``FixedPointError``
    like ``parse_price``, for more significant fractional digits than ``size_precision``, for a
    negative non-zero value, and above i64 max (sizes are stored in BIGINT)."""
    cdef bytes b = as_bytes(text)
    cdef int64_t out = 0
    if not 0 <= size_precision <= 18:
        raise ValueError(f"size_precision {size_precision} must be 0..18")
    cdef const char* r = parse_size_dp(<const uint8_t*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), size_precision, &out)
    if r != NULL:
        raise FixedPointError("decimal", r.decode(), None, 0)
    return <uint64_t>out


def value_text(frame, Py_ssize_t offset) -> str:
    """The JSON value starting at byte ``offset`` of ``frame`` (bytes or str), as text (at most
    64 bytes): what a dead letter keeps of a value rejected alone."""
    cdef bytes b = as_bytes(frame)
    cdef Py_ssize_t e = offset
    while e < len(b) and b[e] not in b",]}" and e - offset < 64:
        e += 1
    return b[offset:e].decode("utf-8", "replace")


def _scan_runs(bytes data, Py_ssize_t i) -> tuple:
    """Tests: ``(dm_str_run, dm_struct_run)`` of ``data`` from ``i`` (``dm/_scan.pxd``): the index
    of the first string-ending byte ('"', '\\', < 0x20) and of the first quote or bracket."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if not 0 <= i <= n:
        raise ValueError(f"offset {i} outside 0..{n}")
    return dm_str_run(p, i, n), dm_struct_run(p, i, n)


cdef int _no_venue(CState* s) noexcept nogil:
    return e_codec(s, ERR_CODEC, b"no venue decoder (instantiate a venue codec, not _Codec)", NULL, 0)


cdef class _Codec:
    """Base of the venue codecs: symbol map, output buffer, per-frame results, error edge.

    ``decode(frame, ts_recv) -> int`` decodes one websocket text frame (bytes, str (its UTF-8
    bytes; offsets are byte offsets), or any bytes-like) received at ``ts_recv`` (ns since the
    epoch) and returns the number of records written to the output buffer, which is reset at
    each call (0 records for heartbeats and other control frames). Raises ``CodecError``,
    ``FixedPointError``, ``UnknownInstrumentError`` (from ``dm.errors``; venue, field and byte
    offset set); after an error the output is empty and ``last_kind`` is 0 ("none").

    ``output()`` is a read-only memoryview of the records of the last decode; it stays memory
    safe forever but its bytes are only meaningful until the next ``decode``."""

    def __cinit__(self, *args, **kwargs):
        memset(&self.st, 0, sizeof(CState))
        self.st.out = <char*>malloc(INIT_CAP)
        if self.st.out == NULL:
            raise MemoryError()
        self.st.out_cap = INIT_CAP
        self.st.checksum = -1
        self.st.msg_seq = -1
        self.venue = "?"
        self.decoder = _no_venue

    def __init__(self, int publisher_id, symbols=None):
        if not 0 <= publisher_id <= 0xFFFF:
            raise ValueError(f"publisher_id {publisher_id} does not fit u16")
        self.st.publisher_id = <uint16_t>publisher_id
        if symbols:
            for k, v in symbols.items():
                self.add_symbol(k, v)

    def __dealloc__(self):
        cdef int k
        free(self.st.out)
        for k in range(self.st.n_retired):
            free(self.st.retired[k])
        free(self.st.retired)
        free(self.st.sym)

    def add_symbol(self, venue_symbol, instrument_id, size_precision=9):
        """Map a venue symbol ("ZILUSDT", "XBT/USD", "PI_ETHUSD"; ASCII case-insensitive, at
        most 58 bytes) to a u32 instrument_id whose sizes are integers at 10**-size_precision
        (0..18, the instrument's registered scale); replaces an existing mapping."""
        cdef bytes k = as_bytes(venue_symbol)
        cdef uint64_t iid = instrument_id
        if len(k) == 0 or len(k) > SYM_MAX:
            raise ValueError(f"venue symbol {venue_symbol!r} must be 1..{SYM_MAX} bytes")
        if iid > 0xFFFFFFFF:
            raise ValueError(f"instrument_id {instrument_id} does not fit u32")
        if not 0 <= size_precision <= 18:
            raise ValueError(f"size_precision {size_precision} must be 0..18")
        if sym_put(&self.st, <const uint8_t*>PyBytes_AS_STRING(k), len(k), <uint32_t>iid, <uint8_t>size_precision) < 0:
            raise MemoryError()

    def decode(self, frame, uint64_t ts_recv):
        cdef Py_buffer view
        cdef const char* p
        cdef Py_ssize_t n
        if PyBytes_CheckExact(frame):
            return self.decode_c(PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), ts_recv)
        if PyUnicode_Check(frame):
            p = PyUnicode_AsUTF8AndSize(frame, &n)
            return self.decode_c(p, n, ts_recv)
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            return self.decode_c(<const char*>view.buf, view.len, ts_recv)
        finally:
            PyBuffer_Release(&view)

    cdef int decode_c(self, const char* p, Py_ssize_t n, uint64_t ts_recv) except -1:
        """Decode ``n`` bytes at ``p``; returns the record count (Cython callers)."""
        cdef CState* s = &self.st
        cdef int rc
        begin_frame(s, <const uint8_t*>p, n, ts_recv)
        rc = self.decoder(s)
        if rc < 0:
            return self._raise()
        s.counts[s.kind] += 1
        return s.nrec

    cdef int _raise(self) except -1:
        """The one edge where status codes become exceptions."""
        cdef CState* s = &self.st
        cdef int err = s.err
        cdef str field = s.err_field.decode() if s.err_field != NULL else None
        cdef str reason
        cdef Py_ssize_t off = s.err_off
        s.out_len = 0
        s.nrec = 0
        s.kind = K_NONE
        s.instrument_id = 0
        s.first_seq = 0
        s.last_seq = 0
        s.checksum = -1
        if err == ERR_NOMEM:
            raise MemoryError()
        if err == ERR_JSON:
            if s.err_reason != NULL:
                reason = s.err_reason.decode()
            elif off >= s.n:
                reason = "invalid JSON: unexpected end of frame"
            else:
                reason = "invalid JSON: unexpected byte 0x%02x" % s.p[off]
            raise CodecError(self.venue, reason, None, off)
        if err == ERR_FIXED:
            raise FixedPointError(self.venue, s.err_reason.decode(), field, off)
        if err == ERR_UNKNOWN:
            sym = (<const char*>s.p)[s.sym_off:s.sym_off + s.sym_len].decode("utf-8", "replace")
            raise UnknownInstrumentError(self.venue, f"unknown symbol {sym!r}", field, off)
        raise CodecError(self.venue, s.err_reason.decode(), field, off)

    def output(self):
        """Read-only memoryview of the records of the last decode (concatenated; each record's
        size in bytes is its first byte * 4)."""
        return memoryview(self)

    def __getbuffer__(self, Py_buffer* buf, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("codec output is read-only")
        cdef Py_ssize_t* shape = <Py_ssize_t*>malloc(sizeof(Py_ssize_t))
        if shape == NULL:
            raise MemoryError()
        shape[0] = self.st.out_len
        buf.buf = self.st.out
        buf.obj = self
        buf.len = self.st.out_len
        buf.readonly = 1
        buf.itemsize = 1
        buf.format = <char*>FMT_B if (flags & PyBUF_FORMAT) else NULL
        buf.ndim = 1
        buf.shape = shape if (flags & PyBUF_ND) else NULL
        buf.strides = NULL
        buf.suboffsets = NULL
        buf.internal = shape
        self.st.exports += 1

    def __releasebuffer__(self, Py_buffer* buf):
        cdef int k
        free(buf.internal)
        self.st.exports -= 1
        if self.st.exports == 0:
            for k in range(self.st.n_retired):
                free(self.st.retired[k])
            self.st.n_retired = 0

    @property
    def publisher_id(self) -> int:
        return self.st.publisher_id

    @property
    def last_kind(self) -> int:
        """Kind of the last decoded frame (index into KIND_NAMES; 0 after an error)."""
        return self.st.kind

    @property
    def instrument_id(self) -> int:
        """instrument_id of the last frame (0 when the frame names none)."""
        return self.st.instrument_id

    @property
    def first_seq(self) -> int:
        """Venue sequence of the last frame (the first one when the frame spans several; which
        field is the venue codec's: see its class docstring); 0 when the frame has none."""
        return self.st.first_seq

    @property
    def last_seq(self) -> int:
        """Venue sequence of the last frame (the last one when the frame spans several); 0 when
        the frame has none."""
        return self.st.last_seq

    @property
    def checksum(self) -> int:
        """Book checksum the last frame carried (u32, the venue's definition), -1 when none."""
        return self.st.checksum

    @property
    def msg_seq(self) -> int:
        """The last frame's number in its connection's message sequence (venues that number every
        message of a connection; which field is the venue codec's), -1 when it carried none. Also
        set after a decode error when the number was read before it."""
        return self.st.msg_seq

    @property
    def size_precision(self) -> int:
        """size_precision of the last frame's instrument (9 when the frame names none)."""
        return self.st.size_precision

    @property
    def value_errors(self) -> list:
        """Values of the last decode rejected alone, the rest of the frame decoded:
        ``[(instrument_id, field, reason, byte_offset)]`` (at most 16 kept; see
        ``value_error_count``); ``value_text(frame, byte_offset)`` cuts the value out of the
        frame the caller still holds."""
        cdef CState* s = &self.st
        cdef int k
        return [(s.verr[k].instrument_id, s.verr[k].field.decode() if s.verr[k].field != NULL else None,
                 s.verr[k].reason.decode(), s.verr[k].off) for k in range(min(s.verr_n, MAX_VALUE_ERRS))]

    @property
    def value_error_count(self) -> int:
        """How many values the last decode rejected alone (may exceed len(value_errors))."""
        return self.st.verr_n

    def counts(self) -> dict:
        """Frames decoded without error per kind name since creation (kinds never seen omitted)."""
        cdef int k
        return {KIND_NAMES[k]: self.st.counts[k] for k in range(len(KIND_NAMES)) if self.st.counts[k]}
