"""Bybit v5 order-book synchronisation by update id ``u`` (``BybitBookSync``; the generic
``Actions``, ``Gap`` and ``BookSync`` are in ``dm.booksync``)."""
from __future__ import annotations

from dm.booksync import Actions, BookSync, Gap, L2Book
from dm.venues.bybit import VENUE

GAP_BYBIT = "bybit.update_id"  # gap ledger kind: missing orderbook update ids (u)
_ACTION_CLEAR = ord("R")       # BookDeltaRecord.action at byte 49


class BybitBookSync(BookSync):
    """One instrument's ``orderbook.{depth}.{symbol}`` book (Bybit API v5 docs, "WebSocket Stream
    → Public → Orderbook", "Process snapshot/delta"):

    * a ``snapshot`` replaces the book whenever it comes ("If you receive a new snapshot
      message, you will have to reset your local orderbook"; Bybit re-sends one after a problem
      on its side, and level 1 re-sends the last snapshot with the same ``u`` when nothing
      changed for 3 s); ``u`` = 1 means the service restarted ("overwrite your local
      orderbook"): the codec turns such a delta into a snapshot too (kind ``bookSnapshot``);
    * each ``delta`` carries ``u == previous u + 1`` (the update id "is always in sequence");
      size 0 deletes a level. ``u <= previous`` is dropped (duplicate); a jump is ONE gap
      (``bybit.update_id``, missing ``previous + 1 .. u - 1``): the book is invalid until the
      next snapshot, which the provider gets by resubscribing the topic (``needs_snapshot``);
      deltas are dropped until then.

    ``seq`` (the cross sequence) is not a per-symbol continuity counter and is not used."""

    venue = VENUE.exchange

    def __init__(self, instrument_id: int, publisher_id: int = VENUE.publisher_id, max_depth: int = 0):
        super().__init__(L2Book(instrument_id, publisher_id, max_depth))
        self.u: int | None = None

    def on_snapshot(self, u: int, records) -> Actions:
        """A snapshot (CLEAR + levels, as the codec decodes it) with update id ``u``. The CLEAR
        empties the book inside the same apply, so the change mask compares with the book before
        the snapshot: level 1's unchanged re-sends move no top (no BBO)."""
        act = Actions()
        if len(records) < 56 or records[49] != _ACTION_CLEAR:
            self.book.clear()
        self._apply(act, records)
        self.u = u
        self.synced = True
        self.awaiting_snapshot = False
        self.stats.snapshots += 1
        act.snapshot_applied = True
        return act

    def on_delta(self, u: int, records) -> Actions:
        """A delta with update id ``u`` (its BOOK_DELTA records; may be empty)."""
        act = Actions()
        if not self.synced:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "no snapshot"
            if not self.awaiting_snapshot:
                self._want_snapshot(act, "no snapshot")
            return act
        if u <= self.u:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "duplicate u"
            return act
        if u != self.u + 1:
            self._gap(act, Gap(GAP_BYBIT, self.u + 1, u - 1, f"u {u} after {self.u}"))
            self.stats.dropped += 1
            act.dropped = 1
            return act
        if len(records):
            self._apply(act, records)
        self.u = u
        self.stats.applied += 1
        return act
