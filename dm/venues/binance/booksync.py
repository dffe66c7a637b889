"""Binance spot diff-depth book synchronisation (``BinanceDepthSync``; the generic ``Actions``,
``Gap`` and ``BookSync`` are in ``dm.booksync``)."""
from __future__ import annotations

from collections import deque

from dm.booksync import Actions, BookError, BookSync, Gap, L2Book
from dm.records import Publisher

GAP_BINANCE = "binance.update_id"  # gap ledger kind: missing diff update ids


class BinanceDepthSync(BookSync):
    """Binance spot diff-depth synchronisation (Binance Spot API docs, WebSocket Streams, "How
    to manage a local order book correctly"):

    1. buffer ``depthUpdate`` diffs until a REST snapshot (``GET /api/v3/depth``) is applied;
    2. drop diffs with ``u <= lastUpdateId``; the first applied diff must satisfy
       ``U <= lastUpdateId + 1 <= u`` — if the oldest buffered diff has ``U > lastUpdateId + 1``
       the snapshot is too old: ask for another one (doc: "go back to step 3");
    3. afterwards each diff must continue the previous one: ``U == previous u + 1``. A diff
       with ``U > previous u + 1`` is a gap (missing ids ``previous u + 1 .. U - 1``): the book
       is invalid, a new snapshot is requested and diffs are buffered again. A diff with
       ``u <= previous u`` (duplicate, or late after reordering) is dropped.

    Continuity is checked on the diff stream itself (also while buffering), so a gap is
    reported once, where it happened. ``max_buffer`` bounds the diffs kept while waiting (the
    oldest are dropped: a later snapshot makes them useless anyway).

    ``on_diff(first_id=U, last_id=u, records)``, ``on_snapshot(last_update_id, records)``;
    ``records`` are BOOK_DELTA records (snapshot: CLEAR + levels, or just levels — the book is
    cleared first either way)."""

    venue = "BINANCE"
    #: the C frame path (dm._feed, "Buffering") may buffer a diff that continues the stream while
    #: the book awaits its snapshot: what ``on_diff`` does then is only ``stream_last = u`` and
    #: ``_buffer.append((U, u, bytes(records)))`` below ``max_buffer``. A subclass that buffers
    #: otherwise sets it False.
    fast_buffering = True

    def __init__(self, instrument_id: int, publisher_id: int = Publisher.BINANCE,
                 max_depth: int = 0, max_buffer: int = 10_000):
        super().__init__(L2Book(instrument_id, publisher_id, max_depth))
        self.last_update_id: int | None = None     # the book's update id (valid when synced)
        self.stream_last: int | None = None        # last u seen on the diff stream
        self.max_buffer = max_buffer
        self._buffer: deque[tuple[int, int, bytes]] = deque()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def on_diff(self, first_id: int, last_id: int, records) -> Actions:
        """One ``depthUpdate`` (``U`` = first_id, ``u`` = last_id) as BOOK_DELTA records."""
        act = Actions()
        if first_id > last_id:
            raise BookError(f"diff U={first_id} > u={last_id}")
        prev = self.stream_last
        if prev is not None:
            if last_id <= prev:
                self.stats.dropped += 1
                act.dropped = 1
                act.reason = "duplicate or late diff"
                return act
            if first_id > prev + 1:
                self._buffer.clear()     # diffs before a hole can never be applied
                self._gap(act, Gap(GAP_BINANCE, prev + 1, first_id - 1,
                                   f"U={first_id} after u={prev}"))
        self.stream_last = last_id
        if self.synced:
            self._on_synced_diff(act, first_id, last_id, records)
        else:
            self._buffer_diff(act, first_id, last_id, records)
        return act

    def _on_synced_diff(self, act: Actions, first_id: int, last_id: int, records) -> None:
        last = self.last_update_id
        if last_id <= last:
            self.stats.dropped += 1
            act.dropped += 1
            return
        if first_id > last + 1:
            # only possible for the first diff after a snapshot taken before any diff was
            # seen: the snapshot is older than the stream, not data lost on the stream
            self.synced = False
            self.stats.stale_snapshots += 1
            self._buffer_diff(act, first_id, last_id, records)
            self._want_snapshot(act, "stale snapshot")
            return
        self._apply(act, records)
        self.last_update_id = last_id
        self.stats.applied += 1

    def _buffer_diff(self, act: Actions, first_id: int, last_id: int, records) -> None:
        if len(self._buffer) >= self.max_buffer:
            self._buffer.popleft()
            self.stats.dropped += 1
            act.dropped += 1
        self._buffer.append((first_id, last_id, bytes(records)))
        self._want_snapshot(act, "no snapshot")

    def on_snapshot(self, last_update_id: int, records) -> Actions:
        """A REST depth snapshot (``lastUpdateId``) as BOOK_DELTA records."""
        act = Actions()
        if self.synced and last_update_id <= self.last_update_id:
            act.reason = "snapshot not newer than the book"
            self.awaiting_snapshot = False
            return act
        buf = self._buffer
        while buf and buf[0][1] <= last_update_id:
            buf.popleft()
            self.stats.dropped += 1
            act.dropped += 1
        self.awaiting_snapshot = False
        if buf and buf[0][0] > last_update_id + 1:
            self.synced = False
            self.stats.stale_snapshots += 1
            self._want_snapshot(act, "stale snapshot")
            return act
        self.book.clear()
        self._apply(act, records)
        self.last_update_id = last_update_id
        self.synced = True
        self.stats.snapshots += 1
        act.snapshot_applied = True
        while buf:
            first_id, last_id, recs = buf.popleft()
            self._on_synced_diff(act, first_id, last_id, recs)
            if not self.synced:      # cannot happen after the checks above; stay safe
                break
        return act
