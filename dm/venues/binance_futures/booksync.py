"""Binance USD-M / COIN-M futures diff-depth book synchronisation (``FuturesDepthSync``): the
spot procedure (``dm.venues.binance.booksync``) with the futures continuity and snapshot rules."""
from __future__ import annotations

from dm.booksync import Actions, BookError, Gap
from dm.venues.binance.booksync import BinanceDepthSync

GAP_BINANCE_FUTURES = "binance_um.update_id"  # (ledger kinds are <= 24 characters)  # gap ledger kind: diffs missing by `pu`


class FuturesDepthSync(BinanceDepthSync):
    """Binance futures diff-depth synchronisation (Binance USD-M Futures docs, "WebSocket Market
    Streams → How to manage a local order book correctly"; COIN-M docs, same section):

    1. buffer ``depthUpdate`` diffs until a REST snapshot (``GET /fapi/v1/depth``, COIN-M
       ``/dapi/v1/depth``) is applied;
    2. drop diffs with ``u < lastUpdateId``; the first applied diff must satisfy ``U <=
       lastUpdateId AND u >= lastUpdateId`` (a diff with ``u == lastUpdateId`` is applied,
       unlike spot) — when the oldest kept diff has ``U > lastUpdateId`` the snapshot is too
       old: another one is requested;
    3. afterwards each diff's ``pu`` must equal the previous diff's ``u`` (update ids are shared
       by all symbols, so ``U`` never continues ``u + 1``). Otherwise diffs were lost: one gap
       (``first_missing = previous u + 1``, ``last_missing = pu``), the book is invalid, a new
       snapshot is requested and diffs are buffered again. A diff with ``u <= previous u``
       (duplicate or late) is dropped.

    Continuity is checked on the diff stream itself (also while buffering), so a loss is one
    gap where it happened. ``on_diff(first_id=U, last_id=u, records, prev_id=pu)``;
    ``on_snapshot(last_update_id, records)`` as in the spot sync."""

    venue = "BINANCE_FUTURES"
    gap_kind = GAP_BINANCE_FUTURES

    def __init__(self, instrument_id: int, publisher_id: int = 1004,
                 max_depth: int = 0, max_buffer: int = 10_000):
        super().__init__(instrument_id, publisher_id, max_depth, max_buffer)
        self._at_snapshot = False    # the book's last_update_id is the snapshot's (no diff applied yet)

    def on_diff(self, first_id: int, last_id: int, records, prev_id: int | None = None) -> Actions:
        """One ``depthUpdate`` (``U`` = first_id, ``u`` = last_id, ``pu`` = prev_id) as
        BOOK_DELTA records. Raises ``BookError`` when ``U > u`` or ``pu`` is missing."""
        act = Actions()
        if first_id > last_id:
            raise BookError(f"diff U={first_id} > u={last_id}")
        if prev_id is None:
            raise BookError("a futures diff needs pu")
        prev = self.stream_last
        if prev is not None:
            if last_id <= prev:
                self.stats.dropped += 1
                act.dropped = 1
                act.reason = "duplicate or late diff"
                return act
            if prev_id != prev:
                self._buffer.clear()     # diffs before a hole can never be applied
                first = prev + 1 if prev_id > prev else None
                self._gap(act, Gap(self.gap_kind, first, prev_id if first is not None else None,
                                   f"pu={prev_id} after u={prev}"))
        self.stream_last = last_id
        if self.synced:
            self._on_synced_diff(act, first_id, last_id, records)
        else:
            self._buffer_diff(act, first_id, last_id, records)
        return act

    def _on_synced_diff(self, act: Actions, first_id: int, last_id: int, records) -> None:
        last = self.last_update_id
        if self._at_snapshot:
            if last_id < last:
                self.stats.dropped += 1
                act.dropped += 1
                return
            if first_id > last:
                # the snapshot is older than the stream (not data lost on the stream)
                self.synced = False
                self.stats.stale_snapshots += 1
                self._buffer_diff(act, first_id, last_id, records)
                self._want_snapshot(act, "stale snapshot")
                return
            self._at_snapshot = False
        elif last_id <= last:
            self.stats.dropped += 1
            act.dropped += 1
            return
        self._apply(act, records)
        self.last_update_id = last_id
        self.stats.applied += 1

    def on_snapshot(self, last_update_id: int, records) -> Actions:
        """A REST depth snapshot (``lastUpdateId``) as BOOK_DELTA records."""
        act = Actions()
        if self.synced and last_update_id <= self.last_update_id:
            act.reason = "snapshot not newer than the book"
            self.awaiting_snapshot = False
            return act
        buf = self._buffer
        while buf and buf[0][1] < last_update_id:
            buf.popleft()
            self.stats.dropped += 1
            act.dropped += 1
        self.awaiting_snapshot = False
        if buf and buf[0][0] > last_update_id:
            self.synced = False
            self.stats.stale_snapshots += 1
            self._want_snapshot(act, "stale snapshot")
            return act
        self.book.clear()
        self._apply(act, records)
        self.last_update_id = last_update_id
        self._at_snapshot = True
        self.synced = True
        self.stats.snapshots += 1
        act.snapshot_applied = True
        while buf:
            first_id, last_id, recs = buf.popleft()
            self._on_synced_diff(act, first_id, last_id, recs)
            if not self.synced:      # cannot happen after the checks above; stay safe
                break
        return act
