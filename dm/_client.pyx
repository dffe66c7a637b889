# cython: language_level=3
"""The hot read path of ``dm.client.Subscription`` in C: ``SubscriptionCore`` is its base class.

``read_raw(timeout)`` and ``read(timeout)`` are C methods: the common case — a record is there,
or (``busy_poll``, blocking read) it arrives within ``spin_s`` while the method spins on the ring
holding the GIL — is one call from the reader's Python code to the record in its hands, with no
Python frame in between. Everything else goes to the subclass's Python slow path
(``_read_raw_slow`` / ``_read_slow``, with ``spun`` saying whether the spin already ran): queued
items (restart ``Gap`` markers, the record after an ``Overrun``), waiting without the GIL,
producer restarts and switches, ``ProducerGoneError``, timeouts. Why: with the wait path in
Python (read → None → ``_slow`` → spin → back up through two frames) a record's bytes reached
the reader no faster than a record object (bench/bench_client.py: ``client.read_raw``).

The subclass owns the attributes (declared here so C reads them without a dict lookup):
``reader`` (the ``ChannelReader``), ``_queued`` (deque handed out first), ``busy_poll``,
``follow``, ``_gone`` (None while the producer is there), ``_next_check`` (``time.monotonic``
seconds: the next liveness look of a non-blocking read), ``_on_overrun`` (``callable(sub,
lost_records, raw_or_None)`` returning the ``Overrun`` item, as ``dm._recobj.read_record``'s
callback) and ``spin_s`` (how long a busy-polling blocking read spins before waiting).
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from dm._recobj cimport record_from_ptr
from dm._ring cimport ChannelReader, dm_cpu_relax

cdef enum:
    _READ_BUF = 1024  # larger than every record kind (DepthRecord: 360 B), as dm/_recobj.pyx

cdef enum:  # what SubscriptionCore._take found
    _GOT = 0        # a record (or, lost_too, an overrun) or a negative ChannelReader status
    _NONE = 1       # a non-blocking read with nothing to hand out: return None
    _SLOW = 2       # to the Python slow path, the spin not run
    _SLOW_SPUN = 3  # to the Python slow path after spinning spin_s


cdef inline uint64_t _mono_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000 + <uint64_t>ts.tv_nsec


cdef inline int64_t _spin(ChannelReader r, uint8_t *buf, double spin_s, bint lost_too) noexcept:
    """Poll ``r`` (holding the GIL, as a Python spin loop would) for up to ``spin_s`` s: the
    ``next_into`` status as soon as it is non-zero (or, ``lost_too``, records were lost), 0 when
    nothing came. The GIL is held throughout, so ``close()`` from another thread cannot unmap
    the ring under it."""
    cdef uint64_t deadline = _mono_ns() + <uint64_t>(spin_s * 1e9)
    cdef unsigned k = 0
    cdef int64_t n
    while True:
        n = r.next_into(buf, _READ_BUF)
        if n != 0 or (lost_too and r.pending_lost):
            return n
        k += 1
        if (k & 63) == 0 and _mono_ns() >= deadline:
            return 0
        dm_cpu_relax()


cdef class SubscriptionCore:
    """Base class of ``dm.client.Subscription`` (see there for the API): the C fast path of
    ``read_raw`` and ``read``."""

    cdef public ChannelReader reader
    cdef public object _queued
    cdef public bint busy_poll
    cdef public bint follow
    cdef public object _gone
    cdef public double _next_check
    cdef public object _on_overrun
    cdef public double spin_s

    cdef inline int _nonblocking_idle(self, timeout) except -1:
        """After an empty look: 1 when a read with ``timeout`` returns None at once (``timeout``
        0 and no liveness look due), 0 when it goes to the slow path."""
        if timeout is None or timeout != 0:
            return 0
        if not self.follow:
            return 1
        return 1 if <double>_mono_ns() * 1e-9 < self._next_check else 0

    cdef inline int _take(self, ChannelReader r, uint8_t *buf, timeout, bint lost_too,
                          int64_t *n) except -1:
        """The look both reads share: the next record into ``buf`` (``n``: its length, 0, or a
        negative ChannelReader status), spinning for it when the read blocks and busy-polls.
        Returns _GOT (``n`` set; or, ``lost_too``, records were lost), _NONE, _SLOW or
        _SLOW_SPUN. Raises ``ClosedError`` when the reader is closed."""
        if r.base == NULL:
            r._raise_status(0)  # ClosedError
        n[0] = r.next_into(buf, _READ_BUF)
        if n[0] != 0 or (lost_too and r.pending_lost):
            return _GOT
        if self._nonblocking_idle(timeout):
            return _NONE
        if timeout is None or timeout != 0:
            if not (self.busy_poll and self._gone is None):
                return _SLOW
            n[0] = _spin(r, buf, self.spin_s, lost_too)
            if n[0] != 0 or (lost_too and r.pending_lost):
                return _GOT
            return _SLOW_SPUN
        return _SLOW

    def read_raw(self, timeout=0.0):
        """Next record's bytes, waiting up to ``timeout`` s (None: forever, 0: do not wait),
        or None on timeout. The wait runs in C: spin (``busy_poll``, holding the GIL for at most
        ``spin_s`` = ``dm.client.SPIN_S``), then without the GIL sched_yield and sleeps from
        20 µs doubling to 1 ms. Overruns are not reported here (see ``read``). Raises
        ``ProducerGoneError`` (``follow=False``, blocking read) when nothing is left and the
        producer closed the channel or died, ``ClosedError`` when the subscription is closed."""
        cdef uint8_t buf[_READ_BUF]
        cdef int64_t n = 0
        cdef int k
        cdef ChannelReader r
        if self._queued:
            return self._read_raw_slow(timeout, False)
        r = self.reader
        k = self._take(r, buf, timeout, False, &n)
        if k == _NONE:
            return None
        if k != _GOT:
            return self._read_raw_slow(timeout, k == _SLOW_SPUN)
        if n > 0:
            return PyBytes_FromStringAndSize(<const char *>buf, n)
        r._raise_status(n)

    def read(self, timeout=0.0):
        """Next item: a record object (``Trade``, ``Bbo``, ``Depth``, ``BookDelta``, ``Bar``,
        ``MbpEvent``, ``Gap`` — also after a producer restart —, ``Statistic``,
        ``InstrumentDef`` from ``dm._recobj``: the fields of the ``dm.records`` namedtuple of the
        same name, which ``rec.to_tuple()`` gives), an ``Overrun`` if records were lost just
        before the next one, or None on timeout. ``timeout`` as ``read_raw``. Raises
        ``ProducerGoneError`` (``follow=False``, blocking read) and ``ClosedError`` as
        ``read_raw``; ``KeyError`` for a record of an rtype dm does not know (a newer writer)."""
        cdef uint8_t buf[_READ_BUF]
        cdef int64_t n = 0
        cdef int k
        cdef uint64_t lost
        cdef ChannelReader r
        if self._queued:
            return self._read_slow(timeout, False)
        r = self.reader
        k = self._take(r, buf, timeout, True, &n)
        if k == _NONE:
            return None
        if k != _GOT:
            return self._read_slow(timeout, k == _SLOW_SPUN)
        if n < 0:
            r._raise_status(n)
        lost = r.pending_lost
        if lost == 0:
            return record_from_ptr(buf, n)
        r.pending_lost = 0  # records were lost before this one: the marker first, it queued after
        return self._on_overrun(self, lost, PyBytes_FromStringAndSize(<const char *>buf, n) if n > 0 else None)
