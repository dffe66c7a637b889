# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Databento live worker's hot path: one pass over the dm records ``dm._dbn.DbnConverter``
made from a chunk of the live gateway's DBN stream, in place.

``LiveTracker`` does three things per record (records are dm's, ``dm/_records.pxd``: length byte
in 4-byte words, instrument_id u32 at byte 4, ts_event u64 at 8, ts_recv u64 at 16 for every kind
but BAR):

1. **instrument ids**: Databento's instrument id → dm's (``idmap``, filled by the worker from the
   session's SymbolMappingMsg records; Databento's ids are the venue's and may differ per
   session). A record whose id has no mapping is dropped and counted in ``unmapped`` (per id in
   ``unmapped_ids``): it belongs to no configured symbol.
2. **replay without duplicates**: after a reconnect the worker subscribes again with
   ``start`` = the index time of the last record it passed (Databento Live API, "Intraday
   replay": records from ``start`` inclusive). ``resume()`` arms the filter: records with an
   index time before that are dropped, and of those at exactly that time the first ``at_last``
   (the ones already passed) are dropped too; the gateway replays in the same order, so nothing
   is passed twice and nothing is lost. Counted in ``replayed``.
3. **position**: ``last_ts`` (index time of the last record passed: ts_recv, or ts_event for a
   BAR, which has no ts_recv) and ``at_last`` (records passed at that time), what ``resume()``
   needs.
"""
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

cdef enum:
    RTYPE_BAR = 0xE4
    MIN_RECORD = 24


cdef class LiveTracker:
    """``LiveTracker()``; ``idmap`` (dict Databento id → dm id, the worker fills it, then calls
    ``invalidate()``); ``process(bytearray) -> int`` (new length: the caller truncates);
    ``resume()``; counters ``unmapped``, ``replayed``, ``passed``; ``last_ts``, ``at_last``."""

    cdef readonly dict idmap
    cdef readonly dict unmapped_ids
    cdef readonly uint64_t last_ts
    cdef readonly uint64_t at_last
    cdef readonly uint64_t resume_ts
    cdef readonly uint64_t skip_left
    cdef readonly bint resuming
    cdef readonly uint64_t unmapped
    cdef readonly uint64_t replayed
    cdef readonly uint64_t passed
    cdef uint32_t _src
    cdef uint32_t _dst
    cdef int _state          # 0: no cached id, 1: _src maps to _dst, 2: _src has no mapping

    def __cinit__(self):
        self.idmap = {}
        self.unmapped_ids = {}
        self._state = 0

    def invalidate(self):
        """The id map changed (new symbol mappings, a new session): forget the cached lookup."""
        self._state = 0

    def reset_ids(self):
        """A new session: its symbol mappings decide the ids again."""
        self.idmap.clear()
        self._state = 0

    def resume(self):
        """Arm the replay filter at the current position (call before the resubscription)."""
        if self.passed:
            self.resume_ts = self.last_ts
            self.skip_left = self.at_last
            self.resuming = True

    def cancel_resume(self):
        """The session was not a replay (no ``start``): nothing to drop."""
        self.resuming = False
        self.skip_left = 0

    def process(self, bytearray buf not None) -> int:
        """Map ids, drop replayed and unmapped records, in place; returns the length of what is
        left at the front of ``buf``. Raises ``ValueError`` on a record length that does not fit
        the buffer (the converter never makes one)."""
        cdef uint8_t *p = <uint8_t *>PyByteArray_AS_STRING(buf)
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(buf)
        cdef Py_ssize_t off = 0, out = 0, rl
        cdef uint32_t iid, dst = 0
        cdef uint64_t ts
        cdef bint keep
        while off < n:
            rl = <Py_ssize_t>p[off] * 4
            if rl < MIN_RECORD or off + rl > n:
                raise ValueError(f"bad dm record length {rl} at byte {off}")
            memcpy(&iid, p + off + 4, 4)
            if p[off + 1] == RTYPE_BAR:
                memcpy(&ts, p + off + 8, 8)
            else:
                memcpy(&ts, p + off + 16, 8)
            keep = True
            if self.resuming:
                if ts < self.resume_ts:
                    keep = False
                elif ts == self.resume_ts and self.skip_left:
                    self.skip_left -= 1
                    keep = False
                else:
                    self.resuming = False
                if not keep:
                    self.replayed += 1
            if keep:
                if self._state != 0 and iid == self._src:
                    keep = self._state == 1
                    dst = self._dst
                else:
                    d = self.idmap.get(iid)
                    self._src = iid
                    if d is None:
                        self._state = 2
                        keep = False
                    else:
                        dst = <uint32_t>d
                        self._dst = dst
                        self._state = 1
                if not keep:
                    self.unmapped += 1
                    self.unmapped_ids[iid] = self.unmapped_ids.get(iid, 0) + 1
            if keep:
                if out != off:
                    memmove(p + out, p + off, rl)
                memcpy(p + out + 4, &dst, 4)
                if ts == self.last_ts:
                    self.at_last += 1
                else:
                    self.last_ts = ts
                    self.at_last = 1
                self.passed += 1
                out += rl
            off += rl
        return out
