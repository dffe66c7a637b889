# cython: language_level=3
"""The C halves of the book syncs (``dm.booksync``) that the worker's frame path (``dm._feed``)
reads and writes per update without Python attribute look-ups: the sync's state flags
(``SyncCore``, the base of ``dm.booksync.BookSync``), its counters (``SyncStats``) and its book
checksum (``FastChecksum``)."""
from libc.stdint cimport int64_t, uint64_t

from dm._book cimport L2Book


cdef class SyncStats:
    cdef public uint64_t applied             # diff/update messages applied (snapshots not counted)
    cdef public uint64_t dropped
    cdef public uint64_t gaps
    cdef public uint64_t snapshots           # snapshots applied
    cdef public uint64_t snapshot_requests
    cdef public uint64_t stale_snapshots     # snapshots older than the buffered diffs (REST-snapshot venues)
    cdef public uint64_t crossed             # apply calls that left the book crossed
    cdef public uint64_t checksums_ok        # book checksums verified (venues that send one)


cdef class FastChecksum:
    cdef int matches(self, L2Book book, int64_t checksum) except -1


cdef class SyncCore:
    cdef public bint synced                  # the book is valid (a snapshot applied, no gap since)
    cdef public FastChecksum fast_checker    # the C path's checksum for the book, else None
