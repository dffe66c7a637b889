"""Kraken spot websocket v1 book synchronisation with CRC32 checksums (``KrakenBookSync``; the
generic ``Actions``, ``Gap`` and ``BookSync`` are in ``dm.booksync``)."""
from __future__ import annotations

from dm.booksync import Actions, BookError, BookSync, Gap, L2Book
from dm.records import Publisher
from dm.venues.kraken._checksum import book_checksum

GAP_KRAKEN_CHECKSUM = "kraken.checksum"  # gap ledger kind: book checksum mismatch (no ids)


def decimals_of(text: str) -> int:
    """Digits after the '.' of a venue decimal string ("58729.40000" → 5). Kraken v1 sends each
    pair's prices and volumes with a fixed number of decimals and the checksum is defined on
    those strings; note that REST AssetPairs ``pair_decimals`` can differ from the websocket's
    (XBT/USD: 1 in AssetPairs, 5 on the wire in data/kraken/KRAKEN-c197c0.0)."""
    _, dot, frac = text.partition(".")
    return len(frac) if dot else 0


class KrakenBookSync(BookSync):
    """Kraken spot WebSocket API v1 ``book`` channel (docs: "book" and "Book checksum"):

    * a snapshot (``as``/``bs``) replaces the book; updates (``a``/``b``) set levels, volume 0
      deletes, republished levels (4th element ``"r"``) are ordinary sets;
    * the book is truncated to the subscribed ``depth`` after each message (levels that fall
      out are not deleted by the venue);
    * every update carries ``c``: CRC32 of the top 10 asks and bids rendered with the pair's
      decimals (``dm.venues.kraken._checksum.book_checksum``). A mismatch is a gap (``kraken.checksum``, no ids):
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
                ok = book_checksum(self.book, self.price_decimals, self.size_decimals) == checksum
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
                    got = book_checksum(self.book, pd, sd)
                except BookError:          # a level has more decimals than pd/sd
                    continue
                if got == checksum:
                    self.price_decimals, self.size_decimals = pd, sd
                    return True
        return False
