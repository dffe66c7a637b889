"""Deribit v2 order-book synchronisation by ``change_id`` / ``prev_change_id``
(``DeribitBookSync``; the generic ``Actions``, ``Gap`` and ``BookSync`` are in ``dm.booksync``)."""
from __future__ import annotations

from dm.booksync import Actions, BookSync, Gap, L2Book
from dm.venues.deribit import VENUE

GAP_DERIBIT = "deribit.change_id"  # gap ledger kind: book changes lost between two change ids


class DeribitBookSync(BookSync):
    """One instrument's ``book.{instrument_name}.{interval}`` book (Deribit API v2 docs,
    "Subscriptions → book.{instrument_name}.{interval}"):

    * the first notification after subscribing is a ``snapshot`` (``change_id``); it replaces
      the book;
    * each later notification is a ``change`` whose ``prev_change_id`` must equal the
      ``change_id`` of the previous notification of that instrument (change ids are not
      consecutive: never test ``+ 1``). Levels ``["new"|"change"|"delete", price, amount]``
      (the codec: ADD / MODIFY / CANCEL).
    * A ``change`` whose ``prev_change_id`` differs from the last ``change_id`` means
      notifications were lost: ONE gap (``deribit.change_id``; first/last = the change id
      range that may be missing: ``last + 1 .. prev_change_id``), the book is invalid and the
      docs' remedy applies: resubscribe the channel for a new snapshot (``needs_snapshot``);
      changes are dropped until it comes. A change with ``change_id`` <= the last one is a
      duplicate and dropped."""

    venue = VENUE.exchange

    def __init__(self, instrument_id: int, publisher_id: int = VENUE.publisher_id, max_depth: int = 0):
        super().__init__(L2Book(instrument_id, publisher_id, max_depth))
        self.change_id: int | None = None

    def on_snapshot(self, change_id: int, records) -> Actions:
        """A snapshot (CLEAR + levels, as the codec decodes it) with ``change_id``."""
        act = Actions()
        self.book.clear()
        self._apply(act, records)
        self.change_id = change_id
        self.synced = True
        self.awaiting_snapshot = False
        self.stats.snapshots += 1
        act.snapshot_applied = True
        return act

    def on_change(self, prev_change_id: int, change_id: int, records) -> Actions:
        """A change notification (its BOOK_DELTA records; may be empty)."""
        act = Actions()
        if not self.synced:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "no snapshot"
            if not self.awaiting_snapshot:
                self._want_snapshot(act, "no snapshot")
            return act
        last = self.change_id
        if change_id <= last:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "duplicate change_id"
            return act
        if prev_change_id != last:
            hi = prev_change_id if prev_change_id > last else change_id - 1
            self._gap(act, Gap(GAP_DERIBIT, last + 1, max(hi, last + 1),
                               f"prev_change_id {prev_change_id} after change_id {last}"))
            self.stats.dropped += 1
            act.dropped = 1
            return act
        if len(records):
            self._apply(act, records)
        self.change_id = change_id
        self.stats.applied += 1
        return act
