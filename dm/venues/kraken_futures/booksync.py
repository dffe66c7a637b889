"""Kraken Futures websocket v1 book synchronisation by contiguous ``seq`` (``KrakenFuturesBookSync``;
the generic ``Actions``, ``Gap`` and ``BookSync`` are in ``dm.booksync``)."""
from __future__ import annotations

from dm.booksync import Actions, BookSync, Gap, L2Book
from dm.records import Publisher

GAP_KRAKEN_FUTURES = "kraken_futures.seq"  # gap ledger kind: missing book seqs


class KrakenFuturesBookSync(BookSync):
    """Kraken Futures WebSocket API v1 ``book`` feed (docs: "Book"): ``book_snapshot`` replaces
    the book and sets ``seq``; each ``book`` delta (one level, ``qty`` 0 deletes) must carry
    ``seq == previous seq + 1`` per product. ``seq <= previous`` is dropped (duplicate); a jump
    is a gap (``kraken_futures.seq``, missing ``previous + 1 .. seq - 1``): the book is invalid,
    resubscribe (``needs_snapshot``); deltas are dropped until the new snapshot."""

    venue = "KRAKEN_FUTURES"

    def __init__(self, instrument_id: int, publisher_id: int = Publisher.KRAKEN_FUTURES,
                 max_depth: int = 0):
        super().__init__(L2Book(instrument_id, publisher_id, max_depth))
        self.seq: int | None = None

    def on_snapshot(self, seq: int, records) -> Actions:
        act = Actions()
        self.book.clear()
        self._apply(act, records)
        self.seq = seq
        self.synced = True
        self.awaiting_snapshot = False
        self.stats.snapshots += 1
        act.snapshot_applied = True
        return act

    def on_delta(self, seq: int, records) -> Actions:
        act = Actions()
        if not self.synced:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "no snapshot"
            if not self.awaiting_snapshot:
                self._want_snapshot(act, "no snapshot")
            return act
        if seq <= self.seq:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "duplicate seq"
            return act
        if seq != self.seq + 1:
            self._gap(act, Gap(GAP_KRAKEN_FUTURES, self.seq + 1, seq - 1,
                               f"seq {seq} after {self.seq}"))
            self.stats.dropped += 1
            act.dropped = 1
            return act
        self._apply(act, records)
        self.seq = seq
        self.stats.applied += 1
        return act
