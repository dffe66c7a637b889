"""Bitstamp v2 order-book synchronisation by ``microtimestamp`` against a REST snapshot
(``BitstampBookSync``; the generic ``Actions``, ``Gap`` and ``BookSync`` are in ``dm.booksync``)."""
from __future__ import annotations

from dm.booksync import Actions, BookSync, L2Book
from dm.venues.bitstamp import VENUE

#: diffs kept while a snapshot is awaited; more means the snapshot is not coming in time: the
#: oldest are dropped and the sync asks for a fresh snapshot (its own diffs are then buffered)
MAX_BUFFERED = 20_000


class BitstampBookSync(BookSync):
    """One pair's book from ``diff_order_book_{pair}`` and REST ``order_book/{pair}`` (Bitstamp
    WebSocket API v2 docs, "diff_order_book" — "use the order book REST endpoint to get the
    initial snapshot, then apply the diffs"; REST docs "Order book": ``microtimestamp``):

    * after the subscription is acknowledged every diff is buffered and the REST snapshot
      fetched; on the snapshot, buffered diffs with ``microtimestamp`` <= the snapshot's are
      already in it and dropped, the rest applied in order; then every diff is applied as it
      comes (amount 0 deletes a level).
    * Bitstamp's diffs carry **no sequence number**: a diff lost inside a connection cannot be
      detected (no gap can be ledgered for it). What can be lost is a connection: a reconnect
      (or ``bts:request_reconnect``) is the gap — the provider ledgers the window (kind
      ``reconnect``) and calls :meth:`reset`, and the book is rebuilt from a new snapshot.
    * A diff whose ``microtimestamp`` is older than the last applied one is dropped and counted
      (``stats.dropped``; never seen in the recordings)."""

    venue = VENUE.exchange

    def __init__(self, instrument_id: int, publisher_id: int = VENUE.publisher_id, max_depth: int = 0):
        super().__init__(L2Book(instrument_id, publisher_id, max_depth))
        self.buffer: list[tuple[int, bytes]] = []
        self.last_us = 0           # microtimestamp of the snapshot / last applied diff

    def reset(self) -> None:
        """A new connection: the book is stale until the next snapshot; nothing is buffered."""
        self.synced = False
        self.awaiting_snapshot = False
        self.buffer.clear()

    def on_snapshot(self, us: int, records) -> Actions:
        """The REST snapshot (CLEAR + levels, as ``BitstampCodec.decode_snapshot`` gives them)
        taken at ``us``; buffered diffs newer than it are applied after it, in the order rule of
        ``on_diff`` (one older than the diff applied before it is dropped)."""
        act = Actions()
        self.book.clear()
        self._apply(act, records)
        self.last_us = us
        self.synced = True
        self.awaiting_snapshot = False
        self.stats.snapshots += 1
        act.snapshot_applied = True
        buf, self.buffer = self.buffer, []
        for d_us, recs in buf:
            if d_us <= us or d_us < self.last_us:
                self.stats.dropped += 1
                act.dropped += 1
                continue
            self._apply(act, recs)
            self.last_us = d_us
            self.stats.applied += 1
        return act

    def on_diff(self, us: int, records) -> Actions:
        """A diff with ``microtimestamp`` ``us`` (its BOOK_DELTA records)."""
        act = Actions()
        if not self.synced:
            self.buffer.append((us, bytes(records)))
            if len(self.buffer) > MAX_BUFFERED:
                del self.buffer[0]
                self.stats.dropped += 1
                act.dropped = 1
            if not self.awaiting_snapshot:
                self._want_snapshot(act, "no snapshot")
            return act
        if us < self.last_us:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "older microtimestamp"
            return act
        if len(records):
            self._apply(act, records)
        self.last_us = us
        self.stats.applied += 1
        return act
