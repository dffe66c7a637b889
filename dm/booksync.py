"""Order-book synchronisation: the venue-independent part. Each venue's rules are a pure state
machine (no I/O) in ``dm/venues/<venue>/booksync.py`` (``BinanceDepthSync``, ``KrakenBookSync``,
``KrakenFuturesBookSync``), a subclass of :class:`BookSync`, that providers call.

Each sync owns an ``L2Book`` (``sync.book``) and turns venue messages that the codec already
decoded into BOOK_DELTA records (``dm/_records.pxd``) into book updates plus an ``Actions``
value telling the provider what to do next:

* ``Actions.applied`` — the record buffers applied to the book by this call, in order (a
  snapshot's records first when one was applied). Buffered diffs come out here when they are
  finally applied, so a worker can publish exactly what the book saw.
* ``Actions.mask`` — OR of the book's change masks (``MASK_BBO`` 1, ``MASK_TOP10`` 2,
  ``MASK_CROSSED`` 4 from ``dm._book``); emit BBO/DEPTH records from ``sync.book`` when non-zero.
* ``Actions.needs_snapshot`` — edge-triggered: issue ONE request for a fresh snapshot now (how
  is the venue's: a REST snapshot, or unsubscribe + subscribe the book channel). It is not
  repeated while that request is outstanding; ``sync.awaiting_snapshot`` is the level-triggered
  view. If a request fails, call ``sync.request_snapshot()`` again.
* ``Actions.gap`` — a ``Gap(kind, first_missing, last_missing, detail)`` when venue data was
  lost (ids are venue update ids/sequences, ``None`` when the venue has none, e.g. a checksum
  mismatch). Persist it / log it; the book is invalid (``sync.synced`` False) until the next
  snapshot.
* ``Actions.dropped`` — messages ignored: older than the book, duplicates, or received while no
  valid snapshot exists.

While ``sync.synced`` is False the book is stale: do not publish BBO/DEPTH from it (or flag
them ``FLAG_MAYBE_BAD_BOOK``). Books are never crossed on the recorded data; a crossed book is
counted in ``stats.crossed`` and reported in the mask, not treated as a gap.

Record buffers passed in may be any contiguous bytes-like; a buffer that has to be kept (diffs
buffered before a snapshot) is copied with ``bytes()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dm._book import MASK_BBO, MASK_CROSSED, MASK_TOP10, BookError, L2Book
from dm._booksync import FastChecksum, SyncCore, SyncStats  # C types: the frame path (dm._feed) reads them in C

__all__ = [
    "Actions",
    "BookError",
    "BookSync",
    "FastChecksum",
    "Gap",
    "L2Book",
    "MASK_BBO",
    "MASK_CROSSED",
    "MASK_TOP10",
    "SyncStats",
]



@dataclass(frozen=True, slots=True)
class Gap:
    """Venue data lost. ``kind``: the venue's ledger kind (``<venue>.<what>``, e.g.
    ``binance.update_id``); ``first_missing``/``last_missing``: inclusive range of missing venue
    update ids or sequence numbers; ``None`` when the venue has no ids (a checksum mismatch)."""

    kind: str
    first_missing: int | None
    last_missing: int | None
    detail: str = ""


@dataclass(slots=True)
class Actions:
    """What one sync call did and what the provider must do next (module docstring)."""

    applied: list = field(default_factory=list)
    mask: int = 0
    needs_snapshot: bool = False
    gap: Gap | None = None
    dropped: int = 0
    snapshot_applied: bool = False
    reason: str = ""

    @property
    def crossed(self) -> bool:
        return bool(self.mask & MASK_CROSSED)


class BookSync(SyncCore):
    """Base of the venue syncs: the book, ``synced`` / ``awaiting_snapshot`` state, stats, and
    the helpers a venue's rules use (``_apply`` records to the book, ``_gap``, ``_want_snapshot``).
    ``venue``: the exchange name the sync was written for (log context).

    ``synced`` and ``fast_checker`` live in the C base ``SyncCore``. ``fast_checker`` is the venue
    checksum the C frame path (``dm._feed``) verifies an update it applied with: a
    ``dm._booksync.FastChecksum`` while the checksum can be computed from the book alone, else
    None (venues that send checksums; their updates then take the Python path)."""

    venue = ""

    def __init__(self, book: L2Book):
        self.book = book
        self.synced = False
        self.fast_checker = None
        self.awaiting_snapshot = False
        self.stats = SyncStats()

    def request_snapshot(self) -> Actions:
        """Force a resync (reconnect, failed request, operator): the book becomes invalid and
        the returned ``Actions.needs_snapshot`` is True."""
        self.synced = False
        self.awaiting_snapshot = False
        act = Actions()
        self._want_snapshot(act, "requested")
        return act

    def _want_snapshot(self, act: Actions, reason: str) -> None:
        if not self.awaiting_snapshot:
            self.awaiting_snapshot = True
            self.stats.snapshot_requests += 1
            act.needs_snapshot = True
        if not act.reason:
            act.reason = reason

    def _apply(self, act: Actions, records) -> None:
        m = self.book.apply(records)
        if m & MASK_CROSSED:
            self.stats.crossed += 1
        act.mask |= m
        act.applied.append(records)

    def _gap(self, act: Actions, gap: Gap) -> None:
        self.stats.gaps += 1
        act.gap = gap
        self.synced = False
        self._want_snapshot(act, "gap")
