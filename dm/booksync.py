"""Per-venue order-book synchronisation: pure state machines (no I/O) that providers call.

Each sync owns an ``L2Book`` (``sync.book``) and turns venue messages that the codec already
decoded into BOOK_DELTA records (``dm/_records.pxd``) into book updates plus an ``Actions``
value telling the provider what to do next:

* ``Actions.applied`` — the record buffers applied to the book by this call, in order (a
  snapshot's records first when one was applied). Buffered diffs come out here when they are
  finally applied, so a worker can publish exactly what the book saw.
* ``Actions.mask`` — OR of the book's change masks (``MASK_BBO`` 1, ``MASK_TOP10`` 2,
  ``MASK_CROSSED`` 4 from ``dm._book``); emit BBO/DEPTH records from ``sync.book`` when non-zero.
* ``Actions.needs_snapshot`` — edge-triggered: issue ONE request for a fresh snapshot now
  (Binance: REST ``GET /api/v3/depth``; Kraken and Kraken Futures: unsubscribe + subscribe the
  book channel). It is not repeated while that request is outstanding; ``sync.awaiting_snapshot``
  is the level-triggered view. If a request fails, call ``sync.request_snapshot()`` again.
* ``Actions.gap`` — a ``Gap(kind, first_missing, last_missing, detail)`` when venue data was
  lost (ids are venue update ids/sequences, ``None`` when the venue has none, e.g. a Kraken
  checksum mismatch). Persist it / log it; the book is invalid (``sync.synced`` False) until the
  next snapshot.
* ``Actions.dropped`` — messages ignored: older than the book (``u <= lastUpdateId``),
  duplicates, or received while no valid snapshot exists (Kraken, Kraken Futures).

While ``sync.synced`` is False the book is stale: do not publish BBO/DEPTH from it (or flag
them ``FLAG_MAYBE_BAD_BOOK``). Books are never crossed on the recorded data; a crossed book is
counted in ``stats.crossed`` and reported in the mask, not treated as a gap.

Record buffers passed in may be any contiguous bytes-like; a buffer that has to be kept
(Binance diffs buffered before a snapshot) is copied with ``bytes()``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dm._book import MASK_BBO, MASK_CROSSED, MASK_TOP10, BookError, L2Book
from dm.records import Publisher

__all__ = [
    "Actions",
    "BinanceDepthSync",
    "BookError",
    "Gap",
    "KrakenBookSync",
    "KrakenFuturesBookSync",
    "L2Book",
    "MASK_BBO",
    "MASK_CROSSED",
    "MASK_TOP10",
    "SyncStats",
    "decimals_of",
]

GAP_BINANCE = "binance.update_id"
GAP_KRAKEN_CHECKSUM = "kraken.checksum"
GAP_KRAKEN_FUTURES = "kraken_futures.seq"


@dataclass(frozen=True, slots=True)
class Gap:
    """Venue data lost. ``first_missing``/``last_missing``: inclusive range of missing venue
    update ids (Binance ``U``/``u`` space) or sequence numbers (Kraken Futures ``seq``);
    ``None`` when the venue has no ids (Kraken v1 checksum mismatch)."""

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


@dataclass(slots=True)
class SyncStats:
    applied: int = 0            # diff/update messages applied (snapshots not counted)
    dropped: int = 0
    gaps: int = 0
    snapshots: int = 0          # snapshots applied
    snapshot_requests: int = 0
    stale_snapshots: int = 0    # Binance snapshots older than the buffered diffs
    crossed: int = 0            # apply calls that left the book crossed
    checksums_ok: int = 0       # Kraken


def decimals_of(text: str) -> int:
    """Digits after the '.' of a venue decimal string ("58729.40000" → 5). Kraken v1 sends each
    pair's prices and volumes with a fixed number of decimals and the checksum is defined on
    those strings; note that REST AssetPairs ``pair_decimals`` can differ from the websocket's
    (XBT/USD: 1 in AssetPairs, 5 on the wire in data/kraken/KRAKEN-c197c0.0)."""
    _, dot, frac = text.partition(".")
    return len(frac) if dot else 0


class _SyncBase:
    venue = ""

    def __init__(self, book: L2Book):
        self.book = book
        self.synced = False
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


class BinanceDepthSync(_SyncBase):
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


class KrakenBookSync(_SyncBase):
    """Kraken spot WebSocket API v1 ``book`` channel (docs: "book" and "Book checksum"):

    * a snapshot (``as``/``bs``) replaces the book; updates (``a``/``b``) set levels, volume 0
      deletes, republished levels (4th element ``"r"``) are ordinary sets;
    * the book is truncated to the subscribed ``depth`` after each message (levels that fall
      out are not deleted by the venue);
    * every update carries ``c``: CRC32 of the top 10 asks and bids rendered with the pair's
      decimals (``L2Book.kraken_checksum``). A mismatch is a gap (``kraken.checksum``, no ids):
      the book is invalid, resubscribe (``needs_snapshot``); updates are dropped until the new
      snapshot.

    ``price_decimals``/``size_decimals`` are the decimals of the websocket strings (see
    ``decimals_of``; REST AssetPairs ``pair_decimals`` is NOT always the same); they can also be
    given (or updated) with each snapshot. When unknown they are detected on the first update
    carrying ``c``: the one (price, size) decimals pair in 0..9 x 0..9 whose checksum equals the
    venue's (a false match has probability ~100 * 2**-32); no pair matching is a gap."""

    venue = "KRAKEN"

    def __init__(self, instrument_id: int, publisher_id: int = Publisher.KRAKEN,
                 depth: int = 1000, price_decimals: int | None = None,
                 size_decimals: int | None = None):
        super().__init__(L2Book(instrument_id, publisher_id, depth))
        self.depth = depth
        self.price_decimals = price_decimals
        self.size_decimals = size_decimals

    def on_snapshot(self, records, price_decimals: int | None = None,
                    size_decimals: int | None = None) -> Actions:
        act = Actions()
        if price_decimals is not None:
            self.price_decimals = price_decimals
        if size_decimals is not None:
            self.size_decimals = size_decimals
        self.book.clear()
        self._apply(act, records)
        self.synced = True
        self.awaiting_snapshot = False
        self.stats.snapshots += 1
        act.snapshot_applied = True
        return act

    def on_update(self, records, checksum: int | None) -> Actions:
        """One update message (asks then bids as sent) and its ``c`` (None when absent: applied
        without verification)."""
        act = Actions()
        if not self.synced:
            self.stats.dropped += 1
            act.dropped = 1
            act.reason = "no snapshot"
            if not self.awaiting_snapshot:
                self._want_snapshot(act, "no snapshot")
            return act
        self._apply(act, records)
        self.stats.applied += 1
        if checksum is not None:
            if self.price_decimals is None or self.size_decimals is None:
                ok = self._detect_decimals(checksum)
            else:
                ok = self.book.kraken_checksum(self.price_decimals, self.size_decimals) == checksum
            if ok:
                self.stats.checksums_ok += 1
            else:
                self._gap(act, Gap(GAP_KRAKEN_CHECKSUM, None, None,
                                   f"book checksum != venue {checksum} (decimals "
                                   f"{self.price_decimals}/{self.size_decimals})"))
        return act


    def _detect_decimals(self, checksum: int) -> bool:
        pds = [self.price_decimals] if self.price_decimals is not None else range(10)
        sds = [self.size_decimals] if self.size_decimals is not None else range(10)
        for pd in pds:
            for sd in sds:
                try:
                    got = self.book.kraken_checksum(pd, sd)
                except BookError:          # a level has more decimals than pd/sd
                    continue
                if got == checksum:
                    self.price_decimals, self.size_decimals = pd, sd
                    return True
        return False


class KrakenFuturesBookSync(_SyncBase):
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
