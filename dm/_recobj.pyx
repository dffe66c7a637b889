# cython: language_level=3
"""Record objects for readers: one extension type per record kind (``Trade``, ``Bbo``, ``Depth``,
``BookDelta``, ``Bar``, ``MbpEvent``, ``Gap``, ``Statistic``, ``InstrumentDef``), each holding a
copy of its C struct (``dm/_records.pxd``) made by a ``@staticmethod cdef`` factory, with the
fields of the matching ``dm.records`` namedtuple as read-only attributes decoded from that copy
on access. ``dm.client`` hands these out; ``dm.records.unpack`` keeps building namedtuples.

Why: building a 13-field namedtuple with ``struct.unpack_from`` costs ~0.5 µs, more than the
whole cross-process trip through a channel ring; one allocation (from a freelist) and one
``memcpy`` cost ~40 ns, and an attribute converts one field when it is read
(``bench/bench_client.py`` measures both, and the variant that keeps a ``bytes`` object).

Units as everywhere in dm: timestamps u64 ns since the UNIX epoch, prices i64 fixed point at
1e-9, sizes u64 in units of ``10**-size_precision`` (``rec.dec("size")`` / ``rec.f("size")``
apply it; MBP_EVENT sizes are DBN counts).

Every kind behaves like its namedtuple where code depends on it: ``_fields``, equality and
ordering with another record object or any tuple of the same values (hash too), ``len``,
indexing, iteration and unpacking, ``repr``, pickling (by the record bytes), ``bytes(rec)`` (the
record as written), ``to_tuple()`` (the ``dm.records`` namedtuple) and ``_asdict()``.
``isinstance(rec, dm.records.Trade)`` holds too (``dm.records`` gives its namedtuple classes a
metaclass for it); ``isinstance(rec, dm.client.Trade)`` is the cheaper check.

Readers (``read_record``, ``spin_record``, ``spin_raw``) are ``dm.client``'s hot path: they take
the next record from a ``dm._ring.ChannelReader`` straight into a record object, without the
intermediate ``bytes``.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.object cimport PyObject_RichCompare
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint64_t
from libc.string cimport memcpy

cdef extern from "<string.h>" nogil:
    size_t strnlen(const char *s, size_t maxlen)
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE

from dm._records cimport *
from dm._ring cimport ChannelReader, dm_cpu_relax

from dm import records as _R

_TUPLE_NEW = tuple.__new__
_SIZE_FIELDS = _R.SIZE_FIELDS
_to_decimal = _R.to_decimal
_to_float = _R.to_float
cdef enum:
    _READ_BUF = 1024  # larger than every record kind (DepthRecord: 360 B)


cdef inline str _cstr(const char *p, size_t cap):
    """A NUL-padded char field as str (UTF-8, bad bytes replaced), as ``dm.records.c_string``."""
    return PyUnicode_DecodeUTF8(p, strnlen(p, cap), "replace")


cdef class Record:
    """Base of every record kind: the 16-byte header (``length`` in 4-byte words, ``rtype``,
    ``publisher_id``, ``instrument_id``, ``ts_event`` ns since the epoch) and the namedtuple-like
    behaviour. Not created directly: ``from_bytes(buf)`` or a ``dm.client`` read."""

    cdef tuple values(self):
        return ()

    @property
    def length(self):
        return self._p[0]

    @property
    def rtype(self):
        return self._p[1]

    @property
    def publisher_id(self):
        return (<const RecordHeader *>self._p).publisher_id

    @property
    def instrument_id(self):
        return (<const RecordHeader *>self._p).instrument_id

    @property
    def ts_event(self):
        return (<const RecordHeader *>self._p).ts_event

    # -- fixed point -------------------------------------------------------------------------
    def dec(self, str name):
        """A fixed-point field as an exact ``Decimal``: prices at 1e-9, size fields (``size``,
        ``bid_sz``, ``ask_sz``, ``volume``, ``quantity``, ``lot_size``) at the record's
        ``size_precision`` (0 for kinds without one). Raises ``AttributeError`` for no such field."""
        return _to_decimal(getattr(self, name), getattr(self, "size_precision", 0) if name in _SIZE_FIELDS else FIXED_DECIMALS)

    def f(self, str name):
        """A fixed-point field as the nearest ``float`` (display and analytics, not storage);
        scaled as ``dec``."""
        return _to_float(getattr(self, name), getattr(self, "size_precision", 0) if name in _SIZE_FIELDS else FIXED_DECIMALS)

    # -- tuple-like --------------------------------------------------------------------------
    def to_tuple(self):
        """The same record as its ``dm.records`` namedtuple (what ``dm.records.unpack`` gives)."""
        return _TUPLE_NEW(type(self)._tuple_type, self.values())

    def _asdict(self):
        """``{field: value}`` in field order, as a namedtuple's ``_asdict``."""
        return dict(zip(type(self)._fields, self.values()))

    def __richcmp__(self, other, int op):
        if isinstance(other, Record):
            return PyObject_RichCompare(self.values(), (<Record>other).values(), op)
        if isinstance(other, tuple):
            return PyObject_RichCompare(self.values(), other, op)
        return NotImplemented

    def __hash__(self):
        return hash(self.values())

    def __len__(self):
        return len(self.values())

    def __getitem__(self, i):
        return self.values()[i]

    def __iter__(self):
        return iter(self.values())

    def __repr__(self):
        vals = self.values()
        return type(self).__name__ + "(" + ", ".join([f"{n}={v!r}" for n, v in zip(type(self)._fields, vals)]) + ")"

    def __bytes__(self):
        return PyBytes_FromStringAndSize(<const char *>self._p, self._n)

    def __reduce__(self):
        return (from_bytes, (PyBytes_FromStringAndSize(<const char *>self._p, self._n),))


@cython.final
cdef class Trade(Record):
    """A trade (``dm.records.TRADE_DTYPE``). Same fields as ``dm.records.Trade``."""

    _fields = _R.Trade._fields
    _tuple_type = _R.Trade

    def __cinit__(self):
        self._p = <const uint8_t *>&self.r
        self._n = sizeof(TradeRecord)

    @staticmethod
    cdef Trade _new(const uint8_t *p):
        cdef Trade o = Trade.__new__(Trade)
        memcpy(&o.r, p, sizeof(TradeRecord))
        return o

    cdef tuple values(self):
        return (self.r.hd.length, self.r.hd.rtype, self.r.hd.publisher_id, self.r.hd.instrument_id,
                self.r.hd.ts_event, self.r.ts_recv, self.r.price, self.r.size,
                self.r.trade_id, self.r.sequence, self.r.side, self.r.flags,
                self.r.size_precision)

    @property
    def ts_recv(self):
        return self.r.ts_recv

    @property
    def price(self):
        return self.r.price

    @property
    def size(self):
        return self.r.size

    @property
    def trade_id(self):
        return self.r.trade_id

    @property
    def sequence(self):
        return self.r.sequence

    @property
    def side(self):
        return self.r.side

    @property
    def flags(self):
        return self.r.flags

    @property
    def size_precision(self):
        return self.r.size_precision

@cython.final
cdef class Bbo(Record):
    """Best bid and offer (``BBO_DTYPE``). Same fields as ``dm.records.Bbo``."""

    _fields = _R.Bbo._fields
    _tuple_type = _R.Bbo

    def __cinit__(self):
        self._p = <const uint8_t *>&self.r
        self._n = sizeof(BboRecord)

    @staticmethod
    cdef Bbo _new(const uint8_t *p):
        cdef Bbo o = Bbo.__new__(Bbo)
        memcpy(&o.r, p, sizeof(BboRecord))
        return o

    cdef tuple values(self):
        return (self.r.hd.length, self.r.hd.rtype, self.r.hd.publisher_id, self.r.hd.instrument_id,
                self.r.hd.ts_event, self.r.ts_recv, self.r.bid_px, self.r.ask_px,
                self.r.bid_sz, self.r.ask_sz, self.r.sequence, self.r.bid_ct,
                self.r.ask_ct, self.r.flags, self.r.size_precision)

    @property
    def ts_recv(self):
        return self.r.ts_recv

    @property
    def bid_px(self):
        return self.r.bid_px

    @property
    def ask_px(self):
        return self.r.ask_px

    @property
    def bid_sz(self):
        return self.r.bid_sz

    @property
    def ask_sz(self):
        return self.r.ask_sz

    @property
    def sequence(self):
        return self.r.sequence

    @property
    def bid_ct(self):
        return self.r.bid_ct

    @property
    def ask_ct(self):
        return self.r.ask_ct

    @property
    def flags(self):
        return self.r.flags

    @property
    def size_precision(self):
        return self.r.size_precision

@cython.final
cdef class Depth(Record):
    """A top-10 L2 snapshot (``DEPTH_DTYPE``); ``levels``: 10 ``(bid_px, ask_px, bid_sz, ask_sz)`` tuples, ``level(i)`` one of them. Same fields as ``dm.records.Depth``."""

    _fields = _R.Depth._fields
    _tuple_type = _R.Depth

    def __cinit__(self):
        self._p = <const uint8_t *>&self.r
        self._n = sizeof(DepthRecord)

    @staticmethod
    cdef Depth _new(const uint8_t *p):
        cdef Depth o = Depth.__new__(Depth)
        memcpy(&o.r, p, sizeof(DepthRecord))
        return o

    cdef tuple values(self):
        return (self.r.hd.length, self.r.hd.rtype, self.r.hd.publisher_id, self.r.hd.instrument_id,
                self.r.hd.ts_event, self.r.ts_recv, self.r.sequence, self.r.flags,
                self.r.n_bid, self.r.n_ask, self.r.size_precision, self.levels)

    @property
    def ts_recv(self):
        return self.r.ts_recv

    @property
    def sequence(self):
        return self.r.sequence

    @property
    def flags(self):
        return self.r.flags

    @property
    def n_bid(self):
        return self.r.n_bid

    @property
    def n_ask(self):
        return self.r.n_ask

    @property
    def size_precision(self):
        return self.r.size_precision

    @property
    def levels(self):
        """10 ``(bid_px, ask_px, bid_sz, ask_sz)`` tuples (all of them, ``n_bid``/``n_ask`` say how many are set)."""
        cdef int i
        return tuple([(self.r.levels[i].bid_px, self.r.levels[i].ask_px, self.r.levels[i].bid_sz, self.r.levels[i].ask_sz)
                      for i in range(DEPTH_LEVELS)])

    def level(self, int i):
        """Level ``i`` (0 = best) as ``(bid_px, ask_px, bid_sz, ask_sz)``. Raises ``IndexError``."""
        if not 0 <= i < DEPTH_LEVELS:
            raise IndexError(f"depth level {i} (0..{DEPTH_LEVELS - 1})")
        return (self.r.levels[i].bid_px, self.r.levels[i].ask_px, self.r.levels[i].bid_sz, self.r.levels[i].ask_sz)

@cython.final
cdef class BookDelta(Record):
    """One L2 level change (``BOOK_DELTA_DTYPE``). Same fields as ``dm.records.BookDelta``."""

    _fields = _R.BookDelta._fields
    _tuple_type = _R.BookDelta

    def __cinit__(self):
        self._p = <const uint8_t *>&self.r
        self._n = sizeof(BookDeltaRecord)

    @staticmethod
    cdef BookDelta _new(const uint8_t *p):
        cdef BookDelta o = BookDelta.__new__(BookDelta)
        memcpy(&o.r, p, sizeof(BookDeltaRecord))
        return o

    cdef tuple values(self):
        return (self.r.hd.length, self.r.hd.rtype, self.r.hd.publisher_id, self.r.hd.instrument_id,
                self.r.hd.ts_event, self.r.ts_recv, self.r.price, self.r.size,
                self.r.sequence, self.r.side, self.r.action, self.r.flags,
                self.r.size_precision)

    @property
    def ts_recv(self):
        return self.r.ts_recv

    @property
    def price(self):
        return self.r.price

    @property
    def size(self):
        return self.r.size

    @property
    def sequence(self):
        return self.r.sequence

    @property
    def side(self):
        return self.r.side

    @property
    def action(self):
        return self.r.action

    @property
    def flags(self):
        return self.r.flags

    @property
    def size_precision(self):
        return self.r.size_precision

@cython.final
cdef class Bar(Record):
    """An OHLCV bar (``BAR_DTYPE``): ``ts_event`` is the start of its interval. Same fields as ``dm.records.Bar``."""

    _fields = _R.Bar._fields
    _tuple_type = _R.Bar

    def __cinit__(self):
        self._p = <const uint8_t *>&self.r
        self._n = sizeof(BarRecord)

    @staticmethod
    cdef Bar _new(const uint8_t *p):
        cdef Bar o = Bar.__new__(Bar)
        memcpy(&o.r, p, sizeof(BarRecord))
        return o

    cdef tuple values(self):
        return (self.r.hd.length, self.r.hd.rtype, self.r.hd.publisher_id, self.r.hd.instrument_id,
                self.r.hd.ts_event, self.r.open, self.r.high, self.r.low,
                self.r.close, self.r.volume, self.r.interval_s, self.r.count,
                self.r.flags, self.r.size_precision)

    @property
    def open(self):
        return self.r.open

    @property
    def high(self):
        return self.r.high

    @property
    def low(self):
        return self.r.low

    @property
    def close(self):
        return self.r.close

    @property
    def volume(self):
        return self.r.volume

    @property
    def interval_s(self):
        return self.r.interval_s

    @property
    def count(self):
        return self.r.count

    @property
    def flags(self):
        return self.r.flags

    @property
    def size_precision(self):
        return self.r.size_precision

@cython.final
cdef class MbpEvent(Record):
    """The Databento event behind a trades/mbp-1/mbp-10 record (``MBP_EVENT_DTYPE``); sizes are DBN counts; ``bid_ct``/``ask_ct``: 10-tuples. Same fields as ``dm.records.MbpEvent``."""

    _fields = _R.MbpEvent._fields
    _tuple_type = _R.MbpEvent

    def __cinit__(self):
        self._p = <const uint8_t *>&self.r
        self._n = sizeof(MbpEventRecord)

    @staticmethod
    cdef MbpEvent _new(const uint8_t *p):
        cdef MbpEvent o = MbpEvent.__new__(MbpEvent)
        memcpy(&o.r, p, sizeof(MbpEventRecord))
        return o

    cdef tuple values(self):
        return (self.r.hd.length, self.r.hd.rtype, self.r.hd.publisher_id, self.r.hd.instrument_id,
                self.r.hd.ts_event, self.r.ts_recv, self.r.price, self.r.size,
                self.r.sequence, self.r.ts_in_delta, self.r.action, self.r.side,
                self.r.flags, self.r.depth, self.bid_ct, self.ask_ct)

    @property
    def ts_recv(self):
        return self.r.ts_recv

    @property
    def price(self):
        return self.r.price

    @property
    def size(self):
        return self.r.size

    @property
    def sequence(self):
        return self.r.sequence

    @property
    def ts_in_delta(self):
        return self.r.ts_in_delta

    @property
    def action(self):
        return self.r.action

    @property
    def side(self):
        return self.r.side

    @property
    def flags(self):
        return self.r.flags

    @property
    def depth(self):
        return self.r.depth

    @property
    def bid_ct(self):
        cdef int i
        return tuple([self.r.bid_ct[i] for i in range(DEPTH_LEVELS)])

    @property
    def ask_ct(self):
        cdef int i
        return tuple([self.r.ask_ct[i] for i in range(DEPTH_LEVELS)])

@cython.final
cdef class Gap(Record):
    """A lost window (``GAP_DTYPE``): ``first_missing``..``last_missing`` inclusive in ``units`` (``GapUnits``); ``kind``/``detail`` as str. Same fields as ``dm.records.Gap``."""

    _fields = _R.Gap._fields
    _tuple_type = _R.Gap

    def __cinit__(self):
        self._p = <const uint8_t *>&self.r
        self._n = sizeof(GapRecord)

    @staticmethod
    cdef Gap _new(const uint8_t *p):
        cdef Gap o = Gap.__new__(Gap)
        memcpy(&o.r, p, sizeof(GapRecord))
        return o

    cdef tuple values(self):
        return (self.r.hd.length, self.r.hd.rtype, self.r.hd.publisher_id, self.r.hd.instrument_id,
                self.r.hd.ts_event, self.r.ts_recv, self.r.first_missing, self.r.last_missing,
                self.r.units, self.r.flags, self.kind, self.detail)

    @property
    def ts_recv(self):
        return self.r.ts_recv

    @property
    def first_missing(self):
        return self.r.first_missing

    @property
    def last_missing(self):
        return self.r.last_missing

    @property
    def units(self):
        return self.r.units

    @property
    def flags(self):
        return self.r.flags

    @property
    def kind(self):
        return _cstr(self.r.kind, sizeof(self.r.kind))

    @property
    def detail(self):
        return _cstr(self.r.detail, sizeof(self.r.detail))

@cython.final
cdef class Statistic(Record):
    """A statistic (``STAT_DTYPE``, DBN StatMsg layout; ``stat_type`` from ``StatType``). Same fields as ``dm.records.Statistic``."""

    _fields = _R.Statistic._fields
    _tuple_type = _R.Statistic

    def __cinit__(self):
        self._p = <const uint8_t *>&self.r
        self._n = sizeof(StatRecord)

    @staticmethod
    cdef Statistic _new(const uint8_t *p):
        cdef Statistic o = Statistic.__new__(Statistic)
        memcpy(&o.r, p, sizeof(StatRecord))
        return o

    cdef tuple values(self):
        return (self.r.hd.length, self.r.hd.rtype, self.r.hd.publisher_id, self.r.hd.instrument_id,
                self.r.hd.ts_event, self.r.ts_recv, self.r.ts_ref, self.r.price,
                self.r.quantity, self.r.sequence, self.r.ts_in_delta, self.r.stat_type,
                self.r.channel_id, self.r.update_action, self.r.stat_flags, self.r.size_precision)

    @property
    def ts_recv(self):
        return self.r.ts_recv

    @property
    def ts_ref(self):
        return self.r.ts_ref

    @property
    def price(self):
        return self.r.price

    @property
    def quantity(self):
        return self.r.quantity

    @property
    def sequence(self):
        return self.r.sequence

    @property
    def ts_in_delta(self):
        return self.r.ts_in_delta

    @property
    def stat_type(self):
        return self.r.stat_type

    @property
    def channel_id(self):
        return self.r.channel_id

    @property
    def update_action(self):
        return self.r.update_action

    @property
    def stat_flags(self):
        return self.r.stat_flags

    @property
    def size_precision(self):
        return self.r.size_precision

@cython.final
cdef class InstrumentDef(Record):
    """An instrument registration and definition (``INSTRUMENT_DEF_DTYPE``); the char fields as str. Same fields as ``dm.records.InstrumentDef``."""

    _fields = _R.InstrumentDef._fields
    _tuple_type = _R.InstrumentDef

    def __cinit__(self):
        self._p = <const uint8_t *>&self.r
        self._n = sizeof(InstrumentDefRecord)

    @staticmethod
    cdef InstrumentDef _new(const uint8_t *p):
        cdef InstrumentDef o = InstrumentDef.__new__(InstrumentDef)
        memcpy(&o.r, p, sizeof(InstrumentDefRecord))
        return o

    cdef tuple values(self):
        return (self.r.hd.length, self.r.hd.rtype, self.r.hd.publisher_id, self.r.hd.instrument_id,
                self.r.hd.ts_event, self.r.ts_recv, self.r.min_price_increment, self.r.display_factor,
                self.r.lot_size, self.r.contract_multiplier, self.r.strike_price, self.r.expiration,
                self.r.activation, self.r.size_precision, self.r.price_precision, self.r.instrument_class,
                self.r.flags, self.symbol, self.exchange, self.raw_symbol,
                self.underlying, self.base, self.quote)

    @property
    def ts_recv(self):
        return self.r.ts_recv

    @property
    def min_price_increment(self):
        return self.r.min_price_increment

    @property
    def display_factor(self):
        return self.r.display_factor

    @property
    def lot_size(self):
        return self.r.lot_size

    @property
    def contract_multiplier(self):
        return self.r.contract_multiplier

    @property
    def strike_price(self):
        return self.r.strike_price

    @property
    def expiration(self):
        return self.r.expiration

    @property
    def activation(self):
        return self.r.activation

    @property
    def size_precision(self):
        return self.r.size_precision

    @property
    def price_precision(self):
        return self.r.price_precision

    @property
    def instrument_class(self):
        return self.r.instrument_class

    @property
    def flags(self):
        return self.r.flags

    @property
    def symbol(self):
        return _cstr(self.r.symbol, sizeof(self.r.symbol))

    @property
    def exchange(self):
        return _cstr(self.r.exchange, sizeof(self.r.exchange))

    @property
    def raw_symbol(self):
        return _cstr(self.r.raw_symbol, sizeof(self.r.raw_symbol))

    @property
    def underlying(self):
        return _cstr(self.r.underlying, sizeof(self.r.underlying))

    @property
    def base(self):
        return _cstr(self.r.base, sizeof(self.r.base))

    @property
    def quote(self):
        return _cstr(self.r.quote, sizeof(self.r.quote))


# ------------------------------------------------------------------------------ building

cdef object record_from_ptr(const uint8_t *p, Py_ssize_t n):
    """The record object of the ``n`` bytes at ``p`` (a record starting at its header). Raises
    ``KeyError(rtype)`` for a kind without a record object (as ``dm.records.unpack``) and
    ``ValueError`` when ``n`` is shorter than the kind's struct."""
    cdef uint8_t rt
    if n < <Py_ssize_t>sizeof(RecordHeader):
        raise ValueError(f"record of {n} bytes is shorter than its header")
    rt = p[1]
    if rt == RTYPE_TRADE:
        if n >= <Py_ssize_t>sizeof(TradeRecord):
            return Trade._new(p)
    elif rt == RTYPE_BBO:
        if n >= <Py_ssize_t>sizeof(BboRecord):
            return Bbo._new(p)
    elif rt == RTYPE_DEPTH:
        if n >= <Py_ssize_t>sizeof(DepthRecord):
            return Depth._new(p)
    elif rt == RTYPE_BOOK_DELTA:
        if n >= <Py_ssize_t>sizeof(BookDeltaRecord):
            return BookDelta._new(p)
    elif rt == RTYPE_BAR:
        if n >= <Py_ssize_t>sizeof(BarRecord):
            return Bar._new(p)
    elif rt == RTYPE_MBP_EVENT:
        if n >= <Py_ssize_t>sizeof(MbpEventRecord):
            return MbpEvent._new(p)
    elif rt == RTYPE_GAP:
        if n >= <Py_ssize_t>sizeof(GapRecord):
            return Gap._new(p)
    elif rt == RTYPE_STATISTICS:
        if n >= <Py_ssize_t>sizeof(StatRecord):
            return Statistic._new(p)
    elif rt == RTYPE_INSTRUMENT_DEF:
        if n >= <Py_ssize_t>sizeof(InstrumentDefRecord):
            return InstrumentDef._new(p)
    else:
        raise KeyError(rt)
    raise ValueError(f"record of rtype {rt:#x} has {n} bytes, shorter than its struct")


def from_bytes(buf):
    """One record (any bytes-like object, starting at its header) → its record object
    (``Trade`` | ``Bbo`` | ``Depth`` | ``BookDelta`` | ``Bar`` | ``MbpEvent`` | ``Gap`` |
    ``Statistic`` | ``InstrumentDef``), a copy independent of ``buf``. Raises ``KeyError`` for
    an unknown rtype, ``ValueError`` for a buffer shorter than the kind's struct."""
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        return record_from_ptr(<const uint8_t *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


# ------------------------------------------------------------------------------ reading

cdef inline uint64_t _mono_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000 + <uint64_t>ts.tv_nsec


cdef inline object _item(ChannelReader r, const uint8_t *buf, int64_t n, on_overrun, ctx):
    """After ``next_into``: the record object, None, or (records were lost first)
    ``on_overrun(ctx, lost, raw)``; raises as ``ChannelReader.read``."""
    cdef uint64_t lost
    if n > 0:
        if r.pending_lost == 0:
            return record_from_ptr(buf, n)
        lost = r.pending_lost
        r.pending_lost = 0
        return on_overrun(ctx, lost, PyBytes_FromStringAndSize(<const char *>buf, n))
    if n == 0:
        if r.pending_lost == 0:
            return None
        lost = r.pending_lost
        r.pending_lost = 0
        return on_overrun(ctx, lost, None)
    r._raise_status(n)


def read_record(ChannelReader r, on_overrun, ctx):
    """The next record of ``r`` as a record object, or None when nothing is new. When records
    were lost before it (the reader was lapped), returns ``on_overrun(ctx, lost_records, raw)``
    instead, ``raw`` being the next record's bytes (None if there is none yet) for the caller to
    hand out after its overrun marker. Never torn. Raises ``ClosedError`` when ``r`` is closed,
    ``RingError`` on a corrupt ring, as ``ChannelReader.read``."""
    cdef uint8_t buf[_READ_BUF]
    if r.base == NULL:
        r._raise_status(0)
    return _item(r, buf, r.next_into(buf, _READ_BUF), on_overrun, ctx)


def spin_record(ChannelReader r, on_overrun, ctx, double spin_s):
    """``read_record`` polled in C (holding the GIL, as a Python spin loop would) for up to
    ``spin_s`` seconds: returns as soon as something is there, None when nothing came."""
    cdef uint8_t buf[_READ_BUF]
    cdef int64_t n
    cdef uint64_t deadline
    cdef unsigned k = 0
    if r.base == NULL:
        r._raise_status(0)
    deadline = _mono_ns() + <uint64_t>(spin_s * 1e9)
    while True:
        n = r.next_into(buf, _READ_BUF)
        if n != 0 or r.pending_lost:
            return _item(r, buf, n, on_overrun, ctx)
        k += 1
        if (k & 63) == 0 and _mono_ns() >= deadline:
            return None
        dm_cpu_relax()


def spin_raw(ChannelReader r, double spin_s):
    """``ChannelReader.read`` polled in C for up to ``spin_s`` seconds: the next record's bytes
    or None. Overruns stay pending in the reader (``take_overrun``), as with ``read``."""
    cdef uint8_t buf[_READ_BUF]
    cdef int64_t n
    cdef uint64_t deadline
    cdef unsigned k = 0
    if r.base == NULL:
        r._raise_status(0)
    deadline = _mono_ns() + <uint64_t>(spin_s * 1e9)
    while True:
        n = r.next_into(buf, _READ_BUF)
        if n > 0:
            return PyBytes_FromStringAndSize(<const char *>buf, n)
        if n < 0:
            r._raise_status(n)
        k += 1
        if (k & 63) == 0 and _mono_ns() >= deadline:
            return None
        dm_cpu_relax()


#: rtype → record object type
TYPES = {RTYPE_TRADE: Trade, RTYPE_BBO: Bbo, RTYPE_DEPTH: Depth, RTYPE_BOOK_DELTA: BookDelta, RTYPE_BAR: Bar,
         RTYPE_MBP_EVENT: MbpEvent, RTYPE_GAP: Gap, RTYPE_STATISTICS: Statistic, RTYPE_INSTRUMENT_DEF: InstrumentDef}
