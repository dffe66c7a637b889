# cython: language_level=3
"""The C halves of the book syncs (``dm.booksync``): ``SyncCore``, ``SyncStats`` and
``FastChecksum`` (see ``dm/_booksync.pxd``)."""
from dm.errors import BookError

_STAT_FIELDS = ("applied", "dropped", "gaps", "snapshots", "snapshot_requests", "stale_snapshots",
                "crossed", "checksums_ok")


cdef class SyncStats:
    """A book sync's counters (unsigned 64-bit, all 0 at first): ``applied`` (diff/update
    messages applied; snapshots not counted), ``dropped``, ``gaps``, ``snapshots`` (applied),
    ``snapshot_requests``, ``stale_snapshots`` (snapshots older than the buffered diffs),
    ``crossed`` (apply calls that left the book crossed), ``checksums_ok`` (venue book checksums
    verified). A C type so that the frame path counts without a Python attribute look-up."""

    def __repr__(self):
        return "SyncStats(" + ", ".join(f"{k}={getattr(self, k)}" for k in _STAT_FIELDS) + ")"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in _STAT_FIELDS}


cdef class FastChecksum:
    """A book sync's venue checksum, as the C frame path (``dm._feed``) calls it after applying
    an update in C: ``matches(book, checksum)`` is 1 when the book's checksum equals the venue's
    ``checksum`` (as the codec hands it: u32), else 0; raises ``BookError`` when the book cannot
    be rendered under the venue's rule. A sync whose checksum can be computed from the book alone
    holds one as ``fast_checker`` (None otherwise: updates go to Python). Venue subclasses:
    ``dm.venues.kraken._checksum.KrakenChecksum``, ``dm.venues.okx._checksum.OkxChecksum``."""

    cdef int matches(self, L2Book book, int64_t checksum) except -1:
        raise BookError("FastChecksum is abstract: a venue subclass computes the checksum")

    def check(self, L2Book book, int64_t checksum) -> bool:
        """``matches`` from Python (tests): True when ``book``'s checksum is ``checksum``."""
        return bool(self.matches(book, checksum))


cdef class SyncCore:
    """The C base of ``dm.booksync.BookSync``: the two flags the C frame path (``dm._feed``)
    reads on every update, as C fields instead of instance-dict entries. ``synced`` (bool, False
    at first): the book is valid, a snapshot applied and no gap since. ``fast_checker``
    (``FastChecksum`` or None, None at first): the venue checksum the C path verifies an update
    with; assigning anything else raises ``TypeError``. Venue syncs subclass ``BookSync`` and keep
    their other state (sequence ids, buffers) as ordinary attributes."""
